//! The families of retransmissions counted in the kernel (see
//! [`crate::kernel::retransmits`]), by remote end and by listener, bounded
//! as [`crate::serve::placed`] says.

use std::collections::BTreeMap;

use prometheus::proto::MetricType;

use super::{Family, Reading, Samples, endings::OTHER};
use crate::serve::placed::Exported;

pub(super) const FAMILIES: &[Family] = &[
    Family {
        name: "tcpstate_retransmits_total",
        help: "Segments retransmitted on connections this host opened (tcp:tcp_retransmit_skb: data, FINs and SYNs), by destination (IP:port; the --top-destinations most active lately, the rest [other]). Counted in the kernel; with tcpstate_listener_retransmits_total it adds up to the namespace's RetransSegs.",
        kind: MetricType::COUNTER,
        labels: &["destination"],
        per_netns: true,
        samples: |r, out| add(r, out, &r.retransmits),
    },
    Family {
        name: "tcpstate_listener_retransmits_total",
        help: "Segments retransmitted on connections a listener accepted (tcp:tcp_retransmit_skb), by listener (the connections' local IP:port; the --top-destinations most active lately, the rest [other]): a client's ephemeral port is never a label. Counted in the kernel; with tcpstate_retransmits_total it adds up to the namespace's RetransSegs.",
        kind: MetricType::COUNTER,
        labels: &["listener"],
        per_netns: true,
        samples: |r, out| add(r, out, &r.listener_retransmits),
    },
    Family {
        name: "tcpstate_synack_retransmits_total",
        help: "SYN-ACKs retransmitted (tcp:tcp_retransmit_synack), by listener (its local IP:port): clients that do not complete the handshake, or a SYN flood. Counted in the kernel; the namespace's TCPSynRetrans counts the same.",
        kind: MetricType::COUNTER,
        labels: &["listener"],
        per_netns: true,
        samples: |r, out| add(r, out, &r.synack_retransmits),
    },
];

fn add(r: &Reading, out: &mut Samples, exported: &Exported) {
    let Some((placed, other)) = exported else {
        return;
    };
    let mut rows: BTreeMap<(String, String), u64> = BTreeMap::new();
    for ((netns, end), n) in placed {
        let netns = r.netns_value(*netns);
        *rows.entry((end.to_string(), netns)).or_default() += n;
    }
    for ((end, netns), n) in rows {
        out.add(n as f64, &[&end, &netns]);
    }
    out.add(*other as f64, &[OTHER, ""]);
}
