//! The ephemeral-port families (see [`crate::engine::ports`]): for the
//! `--top-destinations` destinations with the fewest ports left, how many
//! are taken from the scarcest source address and how many are left.
//! Without the netns label, a destination's scarcest namespace speaks for
//! it (ports do not add up across namespaces).

use std::{collections::BTreeMap, net::SocketAddr};

use prometheus::proto::MetricType;

use super::{Family, Reading, Samples};
use crate::engine::ports::PortUse;

pub(super) const FAMILIES: &[Family] = &[
    Family {
        name: "tcpstate_ephemeral_ports_in_use",
        help: "Local ports of net.ipv4.ip_local_port_range taken toward each destination (IP:port), every state and TIME_WAIT included, from the source address with the fewest left; the --top-destinations destinations with the fewest ports left.",
        kind: MetricType::GAUGE,
        labels: &["destination"],
        per_netns: true,
        samples: |r, out| add(r, out, |p| p.in_use),
    },
    Family {
        name: "tcpstate_ephemeral_ports_free",
        help: "Local ports left toward each destination from its scarcest source address: the range less those taken, plus the TIME_WAIT ones net.ipv4.tcp_tw_reuse lets a connect take (1: all; 2, the default: loopback only).",
        kind: MetricType::GAUGE,
        labels: &["destination"],
        per_netns: true,
        samples: |r, out| add(r, out, |p| p.free),
    },
];

fn add(r: &Reading, out: &mut Samples, value: impl Fn(&PortUse) -> u32) {
    let mut rows: BTreeMap<(SocketAddr, String), &PortUse> = BTreeMap::new();
    for p in &r.ephemeral_ports {
        let netns = r.netns_value(p.netns);
        rows.entry((p.destination, netns))
            .and_modify(|e| {
                if p.free < e.free {
                    *e = p;
                }
            })
            .or_insert(p);
    }
    for ((destination, netns), p) in rows {
        out.add(f64::from(value(p)), &[&destination.to_string(), &netns]);
    }
}
