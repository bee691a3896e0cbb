//! The retransmission counters: the programs on `tcp:tcp_retransmit_skb`
//! and `tcp:tcp_retransmit_synack` (`tracer-ebpf/src/retransmits.rs`)
//! count in a per-CPU map by namespace and remote end (data) or listener
//! (SYN-ACK), read at scrape time. A kernel without a tracepoint gets one
//! log line and no metric for it.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
};

use aya::{
    Ebpf,
    maps::{MapData, PerCpuHashMap},
};
use tracer_common::{
    AF_INET, AF_INET6, FLAG_NETNS, NO_FIELD, ProbeConfig, RETRANSMIT_DATA, RETRANSMIT_SYNACK,
    RetransmitConfig, RetransmitKey,
};

use crate::kernel::{
    resets::{attach_tracepoint, field, read_format},
    tracefs::Format,
};

const CATEGORY: &str = "tcp";
const DATA: &str = "tcp_retransmit_skb";
const SYNACK: &str = "tcp_retransmit_synack";

/// Retransmissions counted since load, summed over CPUs: (netns, end,
/// count); None where the kernel lacks the tracepoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetransmitCounts {
    /// Data (and SYN) retransmissions by remote end.
    pub data: Option<Vec<(u32, SocketAddr, u64)>>,
    /// SYN-ACK retransmissions by listener (its local end).
    pub synack: Option<Vec<(u32, SocketAddr, u64)>>,
}

/// This kernel's record offsets, and which tracepoints it has.
pub struct RetransmitSetup {
    pub config: RetransmitConfig,
    data: bool,
    synack: bool,
}

impl RetransmitSetup {
    pub fn read(tracefs: &Path, probe: &ProbeConfig) -> RetransmitSetup {
        let format = |name| read_format(tracefs, CATEGORY, name);
        let mut c = RetransmitConfig {
            off_sock_net: probe.off_sock_net,
            off_net_inum: probe.off_net_inum,
            flags: probe.flags & FLAG_NETNS,
            skb_err: NO_FIELD,
            ..RetransmitConfig::default()
        };
        let offsets = |f: &Format, names: [(&str, u32); 5]| -> Option<[u32; 5]> {
            let mut out = [0; 5];
            for (slot, (name, size)) in out.iter_mut().zip(names) {
                *slot = field(f, name, size)?;
            }
            Some(out)
        };
        let data = format(DATA).and_then(|f| {
            let [sk, family, port, addr, addr_v6] = offsets(
                &f,
                [
                    ("skaddr", 8),
                    ("family", 2),
                    ("dport", 2),
                    ("daddr", 4),
                    ("daddr_v6", 16),
                ],
            )?;
            (c.skb_skaddr, c.skb_family, c.skb_dport) = (sk, family, port);
            (c.skb_daddr, c.skb_daddr_v6) = (addr, addr_v6);
            c.skb_err = field(&f, "err", 4).unwrap_or(NO_FIELD);
            Some(())
        });
        let synack = format(SYNACK).and_then(|f| {
            let [sk, family, port, addr, addr_v6] = offsets(
                &f,
                [
                    ("skaddr", 8),
                    ("family", 2),
                    ("sport", 2),
                    ("saddr", 4),
                    ("saddr_v6", 16),
                ],
            )?;
            (c.synack_skaddr, c.synack_family, c.synack_sport) = (sk, family, port);
            (c.synack_saddr, c.synack_saddr_v6) = (addr, addr_v6);
            Some(())
        });
        RetransmitSetup {
            config: c,
            data: data.is_some(),
            synack: synack.is_some(),
        }
    }
}

/// The attached programs and their map.
pub struct Retransmits {
    map: Option<PerCpuHashMap<MapData, RetransmitKey, u64>>,
    data: bool,
    synack: bool,
}

impl Retransmits {
    pub fn attach(ebpf: &mut Ebpf, setup: RetransmitSetup) -> Retransmits {
        let data = setup.data && attach_tracepoint(ebpf, CATEGORY, DATA);
        let synack = setup.synack && attach_tracepoint(ebpf, CATEGORY, SYNACK);
        let map = (data || synack)
            .then(|| ebpf.take_map("RETRANSMITS"))
            .flatten()
            .and_then(|m| PerCpuHashMap::try_from(m).ok());
        Retransmits { map, data, synack }
    }

    pub fn counts(&self) -> RetransmitCounts {
        let mut by: [HashMap<(u32, SocketAddr), u64>; 2] = Default::default();
        if let Some(map) = &self.map {
            for entry in map.iter() {
                let Ok((key, per_cpu)) = entry else { continue };
                let Some(end) = end_of(&key) else { continue };
                let slot = match key.kind {
                    RETRANSMIT_DATA => 0,
                    RETRANSMIT_SYNACK => 1,
                    _ => continue,
                };
                let n: u64 = per_cpu.iter().copied().fold(0, u64::wrapping_add);
                *by[slot].entry((key.netns, end)).or_default() += n;
            }
        }
        let [data, synack] = by.map(|m| {
            let mut v: Vec<_> = m.into_iter().map(|((ns, end), n)| (ns, end, n)).collect();
            v.sort();
            v
        });
        RetransmitCounts {
            data: self.data.then_some(data),
            synack: self.synack.then_some(synack),
        }
    }
}

fn end_of(key: &RetransmitKey) -> Option<SocketAddr> {
    let ip = match u16::from(key.family) {
        AF_INET => IpAddr::V4(Ipv4Addr::new(
            key.addr[0],
            key.addr[1],
            key.addr[2],
            key.addr[3],
        )),
        AF_INET6 => IpAddr::V6(Ipv6Addr::from(key.addr)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, key.port))
}
