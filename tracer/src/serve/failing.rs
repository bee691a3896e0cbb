//! The snapshot's `failing` section, from the engine's endings and port
//! counts, the kernel's reset counters and the listeners of the last
//! dumps.

use std::collections::BTreeMap;

use crate::{
    engine::{
        endings::{CloseCause, ConnectFailure, EndingCounts},
        ports::PortUse,
    },
    kernel::resets::ResetCounts,
    serve::snapshot::{CauseCount, ConnectFailureEntry, Failing, ListenerEntry, PortsEntry},
    sockets::listeners::ListenerQueue,
};

/// Listeners in a snapshot at most.
const LISTENERS: usize = 100;

/// The section, totals since the daemon started.
pub fn failing(
    endings: &EndingCounts,
    resets: ResetCounts,
    listeners: Vec<ListenerQueue>,
    ports: Vec<PortUse>,
) -> Failing {
    Failing {
        connect_failures: connect_failures(endings),
        closed: closed(endings),
        resets_sent: resets
            .sent
            .map(|v| summed(v.into_iter().map(|(_, r, n)| (r, n)))),
        resets_received: resets
            .received
            .map(|v| summed(v.into_iter().map(|(_, s, n)| (s.name().to_owned(), n)))),
        listeners: listener_entries(listeners),
        ephemeral_ports: ports
            .into_iter()
            .map(|p| PortsEntry {
                destination: p.destination.to_string(),
                netns: p.netns,
                source: p.source.to_string(),
                in_use: p.in_use,
                free: p.free,
            })
            .collect(),
    }
}

fn connect_failures(endings: &EndingCounts) -> Vec<ConnectFailureEntry> {
    let (placed, other) = endings.connect_failures.values();
    let rows = placed
        .into_iter()
        .map(|((netns, dest), counts)| (dest.to_string(), netns, counts))
        .chain([("[other]".to_owned(), 0, other)]);
    let mut entries: Vec<ConnectFailureEntry> = rows
        .flat_map(|(destination, netns, counts)| {
            ConnectFailure::ALL.into_iter().filter_map(move |reason| {
                let total = counts[reason.index()];
                (total > 0).then(|| ConnectFailureEntry {
                    destination: destination.clone(),
                    netns,
                    reason: reason.name().to_owned(),
                    total,
                })
            })
        })
        .collect();
    entries.sort_by(|a, b| {
        b.total
            .cmp(&a.total)
            .then(a.destination.cmp(&b.destination))
    });
    entries
}

fn closed(endings: &EndingCounts) -> Vec<CauseCount> {
    CloseCause::ALL
        .into_iter()
        .map(|cause| CauseCount {
            name: cause.name().to_owned(),
            total: endings.closed.values().map(|c| c[cause.index()]).sum(),
        })
        .collect()
}

fn summed(rows: impl Iterator<Item = (String, u64)>) -> Vec<CauseCount> {
    let mut by_name: BTreeMap<String, u64> = BTreeMap::new();
    for (name, n) in rows {
        *by_name.entry(name).or_default() += n;
    }
    by_name
        .into_iter()
        .map(|(name, total)| CauseCount { name, total })
        .collect()
}

fn listener_entries(mut listeners: Vec<ListenerQueue>) -> Vec<ListenerEntry> {
    // Fullest first: the share of the queue taken, then drops.
    listeners.sort_by(|a, b| {
        let full = |l: &ListenerQueue| u64::from(l.queued) * 1000 / u64::from(l.limit.max(1));
        full(b)
            .cmp(&full(a))
            .then(b.drops.cmp(&a.drops))
            .then(a.local.cmp(&b.local))
    });
    listeners.truncate(LISTENERS);
    listeners
        .into_iter()
        .map(|l| ListenerEntry {
            listener: l.local.to_string(),
            netns: l.netns,
            queued: l.queued,
            limit: l.limit,
            drops: l.drops,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::endings::Ending;
    use crate::kernel::event::{Transition, tests::sample_event};
    use tracer_common::TcpState;

    #[test]
    fn the_section_sums_and_orders_what_the_metrics_export() {
        let mut endings = EndingCounts::new(20);
        let mut t = Transition::try_from(&sample_event()).expect("sample");
        (t.old, t.new, t.sk_err) = (
            TcpState::SynSent,
            TcpState::Close,
            Some(libc::ECONNREFUSED as u8),
        );
        assert!(matches!(Ending::of(&t), Some(Ending::ConnectFailed(_))));
        endings.count(&t);
        endings.count(&t);
        let resets = ResetCounts {
            sent: Some(vec![(1, "no_socket".into(), 2), (2, "no_socket".into(), 3)]),
            received: None,
        };
        let queue = |local: &str, queued, limit| ListenerQueue {
            netns: 1,
            local: local.parse().expect("address"),
            queued,
            limit,
            drops: Some(0),
        };
        let ports = PortUse {
            netns: 1,
            destination: "10.0.0.5:443".parse().expect("address"),
            source: "10.0.0.1".parse().expect("address"),
            in_use: 90,
            free: 10,
        };
        let f = failing(
            &endings,
            resets,
            vec![queue("0.0.0.0:80", 1, 128), queue("0.0.0.0:81", 2, 2)],
            vec![ports],
        );
        assert_eq!(
            f.connect_failures,
            [ConnectFailureEntry {
                destination: "127.0.0.1:8080".into(),
                netns: 4026531840,
                reason: "refused".into(),
                total: 2,
            }]
        );
        assert_eq!(f.closed.len(), 5);
        assert_eq!(
            f.resets_sent,
            Some(vec![CauseCount {
                name: "no_socket".into(),
                total: 5
            }])
        );
        assert_eq!(f.resets_received, None);
        assert_eq!(f.listeners[0].listener, "0.0.0.0:81", "the full one first");
        assert_eq!(
            f.ephemeral_ports,
            [PortsEntry {
                destination: "10.0.0.5:443".into(),
                netns: 1,
                source: "10.0.0.1".into(),
                in_use: 90,
                free: 10,
            }]
        );
    }
}
