//! The families of listeners' accept queues (see
//! [`crate::sockets::listeners`]), as the last dump of each namespace saw
//! them. Listeners are few on most hosts; past `--top-destinations` the
//! ones that dropped least (then queue least) share `[other]`.

use std::collections::BTreeMap;

use prometheus::proto::MetricType;

use super::{Family, Reading, Samples, endings::OTHER};
use crate::sockets::listeners::ListenerQueue;

pub(super) const FAMILIES: &[Family] = &[
    Family {
        name: "tcpstate_listen_queue_length",
        help: "Connections waiting in each listener's accept queue (ss -lnt's Recv-Q), at the last dump (every --reconcile-interval or a few seconds). listener is its local IP:port.",
        kind: MetricType::GAUGE,
        labels: &["listener"],
        per_netns: true,
        samples: |r, out| add(r, out, |l| u64::from(l.queued)),
    },
    Family {
        name: "tcpstate_listen_queue_limit",
        help: "Each listener's accept queue limit: its backlog, capped by net.core.somaxconn (ss -lnt's Send-Q).",
        kind: MetricType::GAUGE,
        labels: &["listener"],
        per_netns: true,
        samples: |r, out| add(r, out, |l| u64::from(l.limit)),
    },
    Family {
        name: "tcpstate_listen_overflows_total",
        help: "Connections each listener dropped since it began listening (its sk_drops: a full accept queue, counted by the kernel as ListenOverflows and ListenDrops).",
        kind: MetricType::COUNTER,
        labels: &["listener"],
        per_netns: true,
        samples: |r, out| {
            if r.listeners.iter().any(|l| l.drops.is_some()) {
                add(r, out, |l| u64::from(l.drops.unwrap_or(0)));
            }
        },
    },
];

/// The listeners with a label of their own: the `top` that dropped most,
/// then queued most; (netns label value, listener) keys.
fn placed(r: &Reading) -> Vec<(String, String)> {
    let mut ranked: Vec<&ListenerQueue> = r.listeners.iter().collect();
    ranked.sort_by_key(|l| {
        (
            std::cmp::Reverse(l.drops.unwrap_or(0)),
            std::cmp::Reverse(l.queued),
            l.netns,
            l.local,
        )
    });
    ranked
        .into_iter()
        .map(|l| key(r, l))
        .fold(Vec::new(), |mut placed, k| {
            if placed.len() < r.top_listeners && !placed.contains(&k) {
                placed.push(k);
            }
            placed
        })
}

fn key(r: &Reading, l: &ListenerQueue) -> (String, String) {
    let netns = r.netns_value(l.netns);
    (netns, l.local.to_string())
}

/// One sample per placed listener (one address's namespaces summed
/// without the netns label), the rest in `[other]`.
fn add(r: &Reading, out: &mut Samples, value: impl Fn(&ListenerQueue) -> u64) {
    let placed = placed(r);
    let mut rows: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut other: Option<u64> = None;
    for l in &r.listeners {
        let k = key(r, l);
        if placed.contains(&k) {
            *rows.entry(k).or_default() += value(l);
        } else {
            *other.get_or_insert(0) += value(l);
        }
    }
    for ((netns, listener), n) in rows {
        out.add(n as f64, &[&listener, &netns]);
    }
    if let Some(n) = other {
        out.add(n as f64, &[OTHER, ""]);
    }
}
