//! The retransmission counters: the programs on `tcp:tcp_retransmit_skb`
//! and `tcp:tcp_retransmit_synack` (`tracer-ebpf/src/retransmits.rs`)
//! count in a per-CPU map by namespace and remote end (data on a
//! connection this host opened), local end (data on one a listener
//! accepted) or listener (SYN-ACK), read at scrape time. Which ports are
//! listened on the kernel learns from accepted connections, and from the
//! listeners of every dump ([`Retransmits::mark_listening`]), so
//! connections older than the daemon are told apart too. A kernel
//! without a tracepoint gets one log line and no metric for it.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{HashMap as KernelHashMap, MapData, PerCpuHashMap},
};
use tracer_common::{
    AF_INET, AF_INET6, FLAG_NETNS, ListeningKey, NO_FIELD, ProbeConfig, RETRANSMIT_DATA,
    RETRANSMIT_SERVED, RETRANSMIT_SYNACK, RetransmitConfig, RetransmitKey,
};

use crate::kernel::{
    resets::{attach_tracepoint, field, read_format},
    tracefs::Format,
};

const CATEGORY: &str = "tcp";
const DATA: &str = "tcp_retransmit_skb";
const SYNACK: &str = "tcp_retransmit_synack";
/// How often every listened port is told to the kernel again.
const REMARK_EVERY: Duration = Duration::from_secs(60);

/// Retransmissions counted since load, summed over CPUs: ((netns, end),
/// count), by key; None where the kernel lacks the tracepoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetransmitCounts {
    /// Data (and SYN) retransmissions by remote end, on connections this
    /// host opened.
    pub data: Option<Vec<((u32, SocketAddr), u64)>>,
    /// Data retransmissions by local end (the listener's port), on
    /// connections a listener accepted.
    pub served: Option<Vec<((u32, SocketAddr), u64)>>,
    /// SYN-ACK retransmissions by listener (its local end).
    pub synack: Option<Vec<((u32, SocketAddr), u64)>>,
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
        let data = format(DATA).and_then(|f| {
            let [sk, family, port, addr, addr_v6, sport, saddr, saddr_v6] = offsets(
                &f,
                [
                    ("skaddr", 8),
                    ("family", 2),
                    ("dport", 2),
                    ("daddr", 4),
                    ("daddr_v6", 16),
                    ("sport", 2),
                    ("saddr", 4),
                    ("saddr_v6", 16),
                ],
            )?;
            (c.skb_skaddr, c.skb_family, c.skb_dport) = (sk, family, port);
            (c.skb_daddr, c.skb_daddr_v6) = (addr, addr_v6);
            (c.skb_sport, c.skb_saddr, c.skb_saddr_v6) = (sport, saddr, saddr_v6);
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

/// The offsets of the fields `names` (each with its size), or None when
/// one is missing.
fn offsets<const N: usize>(f: &Format, names: [(&str, u32); N]) -> Option<[u32; N]> {
    let mut out = [0; N];
    for (slot, (name, size)) in out.iter_mut().zip(names) {
        *slot = field(f, name, size)?;
    }
    Some(out)
}

/// The attached programs and their maps.
pub struct Retransmits {
    map: Option<PerCpuHashMap<MapData, RetransmitKey, u64>>,
    /// The ports listened on, by namespace; None without the data program.
    listening: Option<KernelHashMap<MapData, ListeningKey, u8>>,
    /// Whether the programs tell namespaces apart (else every key's is 0).
    netns: bool,
    /// Ports told to the kernel lately: each dump's listeners cost no
    /// system call for those. Forgotten once a minute, in case the kernel's
    /// map (an LRU) let some go.
    marked: HashSet<ListeningKey>,
    marked_since: Instant,
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
        let listening = data
            .then(|| ebpf.take_map("LISTENING"))
            .flatten()
            .and_then(|m| KernelHashMap::try_from(m).ok());
        Retransmits {
            map,
            listening,
            netns: setup.config.flags & FLAG_NETNS != 0,
            marked: HashSet::new(),
            marked_since: Instant::now(),
            data,
            synack,
        }
    }

    /// Tells the kernel the ports listened on (a dump's listeners, by
    /// namespace), so that retransmissions on connections accepted before
    /// the daemon started are counted by listener too. Only adds: a port
    /// whose listener closed still has connections it accepted, and the
    /// map forgets the least recently used ports by itself.
    pub fn mark_listening(&mut self, ports: impl IntoIterator<Item = (u32, u16)>) {
        let Some(map) = &mut self.listening else {
            return;
        };
        if self.marked_since.elapsed() >= REMARK_EVERY {
            self.marked.clear();
            self.marked_since = Instant::now();
        }
        for (netns, port) in ports {
            let key = ListeningKey {
                netns: if self.netns { netns } else { 0 },
                port,
                _pad: 0,
            };
            if !self.marked.insert(key) {
                continue;
            }
            if map.get(&key, 0).is_err()
                && let Err(e) = map.insert(key, 1, 0)
            {
                log::debug!("marking port {port} of netns {netns} as listened on: {e}");
            }
        }
    }

    pub fn counts(&self) -> RetransmitCounts {
        let mut by: [HashMap<(u32, SocketAddr), u64>; 3] = Default::default();
        if let Some(map) = &self.map {
            for entry in map.iter() {
                let Ok((key, per_cpu)) = entry else { continue };
                let Some(end) = end_of(&key) else { continue };
                let slot = match key.kind {
                    RETRANSMIT_DATA => 0,
                    RETRANSMIT_SYNACK => 1,
                    RETRANSMIT_SERVED => 2,
                    _ => continue,
                };
                let n: u64 = per_cpu.iter().copied().fold(0, u64::wrapping_add);
                *by[slot].entry((key.netns, end)).or_default() += n;
            }
        }
        let [data, synack, served] = by.map(|m| {
            let mut v: Vec<_> = m.into_iter().collect();
            v.sort();
            v
        });
        RetransmitCounts {
            data: self.data.then_some(data),
            served: self.data.then_some(served),
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
