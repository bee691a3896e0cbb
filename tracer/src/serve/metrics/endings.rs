//! The families of how connections end: connect failures by destination
//! and reason, closes by cause (see [`crate::engine::endings`]).

use std::{collections::BTreeMap, net::SocketAddr};

use prometheus::proto::MetricType;

use super::{Family, Reading, Samples};
use crate::engine::endings::{CloseCause, ConnectFailure};

/// The label value of every destination without a place of its own.
pub const OTHER: &str = "[other]";

/// Connect failures: ((netns, destination), counts by reason) for the
/// destinations with a place, then every other destination's.
pub type ByDestination = (
    Vec<((u32, SocketAddr), [u64; ConnectFailure::ALL.len()])>,
    [u64; ConnectFailure::ALL.len()],
);

pub(super) const FAMILIES: &[Family] = &[
    Family {
        name: "tcpstate_connect_failures_total",
        help: "Connects that never reached ESTABLISHED (SYN_SENT -> CLOSE), by destination (IP:port; the --top-destinations most active lately, the rest [other]) and reason: refused (a reset answered the SYN), timeout (SYN retries ran out), unreachable (an ICMP error: host or network unreachable), aborted (the application closed it first), other.",
        kind: MetricType::COUNTER,
        labels: &["destination", "reason"],
        per_netns: true,
        samples: connect_failure_samples,
    },
    Family {
        name: "tcpstate_connections_closed_total",
        help: "Connections closed (-> CLOSE from SYN_RECV, ESTABLISHED or a closing state), by cause: fin (orderly), reset_received (the peer reset it), reset_sent (this side reset it: close() with unread data, SO_LINGER 0, an orphan's FIN_WAIT2 timeout), timeout (retransmissions or keepalives ran out), aborted (killed, as by ss -K).",
        kind: MetricType::COUNTER,
        labels: &["cause"],
        per_netns: true,
        samples: closed_samples,
    },
    Family {
        name: "tcpstate_resets_sent_total",
        help: "TCP resets this host sent (tcp:tcp_send_reset), by the kernel's reason (enum sk_rst_reason, lower case: no_socket, tcp_invalid_ack_sequence, ...; Linux 6.10+, unknown before, where only resets sent from a socket are reported). Counted in the kernel.",
        kind: MetricType::COUNTER,
        labels: &["reason"],
        per_netns: true,
        samples: |r, out| {
            if let Some(sent) = &r.resets.sent {
                let rows = sent
                    .iter()
                    .map(|(ns, reason, n)| (*ns, reason.as_str(), *n));
                add_by_netns(r, out, rows);
            }
        },
    },
    Family {
        name: "tcpstate_resets_received_total",
        help: "TCP resets this host's sockets received (tcp:tcp_receive_reset), by the state the socket was in: SYN_SENT means a connect refused, ESTABLISHED a connection reset by its peer. Counted in the kernel.",
        kind: MetricType::COUNTER,
        labels: &["state"],
        per_netns: true,
        samples: |r, out| {
            if let Some(received) = &r.resets.received {
                let rows = received
                    .iter()
                    .map(|(ns, state, n)| (*ns, state.name(), *n));
                add_by_netns(r, out, rows);
            }
        },
    },
];

/// One sample per (namespace, label value) with the netns label, one per
/// label value summed over namespaces without.
fn add_by_netns<'a>(
    r: &Reading,
    out: &mut Samples,
    rows: impl Iterator<Item = (u32, &'a str, u64)>,
) {
    let mut summed: BTreeMap<(String, &str), u64> = BTreeMap::new();
    for (netns, value, n) in rows {
        *summed.entry((r.netns_value(netns), value)).or_default() += n;
    }
    for ((ns, value), n) in summed {
        out.add(n as f64, &[value, &ns]);
    }
}

/// Every cause, per namespace with the netns label, summed without.
fn closed_samples(r: &Reading, out: &mut Samples) {
    // Without the label, the series exist from the start (so `rate()`
    // sees the first close); with it, each namespace's from its first.
    if r.closed.is_empty() && !r.netns_label {
        for cause in CloseCause::ALL {
            out.add(0.0, &[cause.name(), ""]);
        }
        return;
    }
    let rows = r.closed.iter().flat_map(|(netns, counts)| {
        CloseCause::ALL
            .into_iter()
            .map(move |c| (*netns, c.name(), counts[c.index()]))
    });
    add_by_netns(r, out, rows);
}

fn add_reasons(out: &mut Samples, counts: &[u64; ConnectFailure::ALL.len()], labels: &[&str]) {
    for reason in ConnectFailure::ALL {
        let mut values = vec![labels[0], reason.name()];
        values.extend(&labels[1..]);
        out.add(counts[reason.index()] as f64, &values);
    }
}

/// Every reason of every placed destination (a series exists before its
/// first failure, so `rate()` sees that one too), then `[other]` once it
/// has counted something. Without the netns label, one destination's
/// namespaces add up.
fn connect_failure_samples(r: &Reading, out: &mut Samples) {
    let (placed, other) = &r.connect_failures;
    let mut rows: BTreeMap<(String, String), [u64; ConnectFailure::ALL.len()]> = BTreeMap::new();
    for ((netns, destination), counts) in placed {
        let netns = r.netns_value(*netns);
        let row = rows.entry((destination.to_string(), netns)).or_default();
        for (sum, n) in row.iter_mut().zip(counts) {
            *sum += n;
        }
    }
    for ((destination, netns), counts) in &rows {
        add_reasons(out, counts, &[destination, netns]);
    }
    if other.iter().any(|&n| n > 0) {
        add_reasons(out, other, &[OTHER, ""]);
    }
}
