//! The reset counters: the programs on `tcp:tcp_send_reset` and
//! `tcp:tcp_receive_reset` (`tracer-ebpf/src/resets.rs`) count in a
//! per-CPU map by namespace and reason or state, read at scrape time. A
//! kernel without one of the tracepoints gets one log line and no metric
//! for it (absent, not zero).

use std::{collections::HashMap, path::Path};

use aya::{
    Ebpf,
    maps::{Array, MapData, PerCpuHashMap},
    programs::TracePoint,
};
use tracer_common::{
    FLAG_NETNS, MAX_RECORD_SIZE, NO_FIELD, ProbeConfig, RESET_REASON_UNKNOWN, RESET_RECEIVED,
    RESET_SENT, ResetConfig, ResetKey, TcpState,
};

use crate::kernel::{btf::Btf, tracefs::Format};

const CATEGORY: &str = "tcp";
const SENT: &str = "tcp_send_reset";
const RECEIVED: &str = "tcp_receive_reset";

/// Resets counted since load, summed over CPUs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResetCounts {
    /// (netns, reason name, count); None when the kernel cannot say
    /// (`tcp:tcp_send_reset` is missing).
    pub sent: Option<Vec<(u32, String, u64)>>,
    /// (netns, state the socket was in, count); None without
    /// `tcp:tcp_receive_reset`.
    pub received: Option<Vec<(u32, TcpState, u64)>>,
}

/// The record offsets and the reason names of this kernel's tracepoints.
pub struct ResetSetup {
    pub config: ResetConfig,
    sent_format: Option<Format>,
    received_format: Option<Format>,
}

impl ResetSetup {
    /// Reads the formats (a missing tracepoint is logged once) and BTF.
    pub fn read(tracefs: &Path, btf: &Btf, probe: &ProbeConfig) -> ResetSetup {
        let format = |name| read_format(tracefs, CATEGORY, name);
        let (sent_format, received_format) = (format(SENT), format(RECEIVED));
        let offset = |s: &str, path: &[&str]| btf.member_offset(s, path).ok();
        let state = offset("sock_common", &["skc_state"]);
        let skb_dev = offset("sk_buff", &["dev"]);
        let dev_net = offset("net_device", &["nd_net", "net"]);
        let mut config = ResetConfig {
            send_skaddr: NO_FIELD,
            send_skbaddr: NO_FIELD,
            send_reason: NO_FIELD,
            recv_skaddr: NO_FIELD,
            off_sock_state: state.unwrap_or(0),
            off_skb_dev: skb_dev.unwrap_or(0),
            off_dev_net: dev_net.unwrap_or(0),
            off_sock_net: probe.off_sock_net,
            off_net_inum: probe.off_net_inum,
            flags: probe.flags & FLAG_NETNS,
        };
        let sent_format = sent_format.filter(|f| {
            config.send_skaddr = field(f, "skaddr", 8).unwrap_or(NO_FIELD);
            config.send_skbaddr = field(f, "skbaddr", 8).unwrap_or(NO_FIELD);
            config.send_reason = field(f, "reason", 4).unwrap_or(NO_FIELD);
            config.send_skaddr != NO_FIELD
        });
        if skb_dev.is_none() || dev_net.is_none() {
            log::debug!(
                "resets sent for no socket will count in namespace 0 (no BTF for sk_buff.dev)"
            );
        }
        let received_format = received_format.filter(|f| {
            config.recv_skaddr = field(f, "skaddr", 8).unwrap_or(NO_FIELD);
            config.recv_skaddr != NO_FIELD && state.is_some()
        });
        if sent_format
            .as_ref()
            .is_some_and(|_| config.send_reason == NO_FIELD)
        {
            log::info!(
                "{CATEGORY}:{SENT} gives no reason on this kernel (before Linux 6.10): resets sent count as reason=\"unknown\""
            );
        }
        log::debug!("reset programs' config: {config:?}");
        ResetSetup {
            config,
            sent_format,
            received_format,
        }
    }
}

/// Loads the program named after tracepoint `category:name` and attaches
/// it; a failure is logged (its metric is then not exported).
pub(crate) fn attach_tracepoint(ebpf: &mut Ebpf, category: &str, name: &str) -> bool {
    let result = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program `{name}` is missing from the object"))
        .and_then(|p| <&mut TracePoint>::try_from(p).map_err(|e| e.to_string()))
        .and_then(|tp| {
            tp.load().map_err(|e| e.to_string())?;
            tp.attach(category, name).map_err(|e| e.to_string())
        });
    match result {
        Ok(_) => true,
        Err(e) => {
            log::warn!("{category}:{name}: {e}; its metric is not exported");
            false
        }
    }
}

/// The format of tracepoint `category:name`; None, logged once, when this
/// kernel lacks it (its metric is then not exported).
pub(crate) fn read_format(tracefs: &Path, category: &str, name: &str) -> Option<Format> {
    match Format::read(tracefs, category, name) {
        Ok(f) => Some(f),
        Err(e) => {
            log::info!("{category}:{name} unavailable ({e}): its metric is not exported");
            None
        }
    }
}

/// A record field's offset, if the record has it with this size and it
/// lies where the program may read it.
pub(crate) fn field(format: &Format, name: &str, size: u32) -> Option<u32> {
    let f = format.fields.get(name)?;
    (f.size == size && f.offset + size <= MAX_RECORD_SIZE).then_some(f.offset)
}

/// The attached reset programs and their map.
pub struct Resets {
    map: Option<PerCpuHashMap<MapData, ResetKey, u64>>,
    sent: bool,
    received: bool,
    /// `enum sk_rst_reason` names by number, lower case.
    reasons: HashMap<u8, String>,
}

impl Resets {
    /// Attaches the programs whose tracepoints this kernel has; a failure
    /// is logged and leaves that metric out.
    pub fn attach(ebpf: &mut Ebpf, setup: ResetSetup) -> Resets {
        let mut attach = |name: &str| attach_tracepoint(ebpf, CATEGORY, name);
        let sent = setup.sent_format.is_some() && attach(SENT);
        let received = setup.received_format.is_some() && attach(RECEIVED);
        if received {
            watch_syn_sent_resets(ebpf);
        }
        let reasons = setup
            .sent_format
            .map(|f| f.symbols("reason"))
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(n, name)| Some((u8::try_from(n).ok()?, name.to_lowercase())))
            .collect();
        let map = (sent || received)
            .then(|| ebpf.take_map("RESETS"))
            .flatten()
            .and_then(|m| PerCpuHashMap::try_from(m).ok());
        Resets {
            map,
            sent,
            received,
            reasons,
        }
    }

    /// The counts, summed over CPUs.
    pub fn counts(&self) -> ResetCounts {
        let mut sent: HashMap<(u32, String), u64> = HashMap::new();
        let mut received: HashMap<(u32, TcpState), u64> = HashMap::new();
        if let Some(map) = &self.map {
            for entry in map.iter() {
                let Ok((key, per_cpu)) = entry else { continue };
                let n: u64 = per_cpu.iter().copied().fold(0, u64::wrapping_add);
                match key.direction {
                    RESET_SENT => {
                        *sent.entry((key.netns, self.reason(key.value))).or_default() += n
                    }
                    RESET_RECEIVED => {
                        if let Ok(state) = TcpState::try_from(key.value) {
                            *received.entry((key.netns, state)).or_default() += n;
                        }
                    }
                    _ => {}
                }
            }
        }
        let flat = |m: HashMap<(u32, String), u64>| {
            let mut v: Vec<_> = m.into_iter().map(|((ns, r), n)| (ns, r, n)).collect();
            v.sort();
            v
        };
        let mut received: Vec<_> = received
            .into_iter()
            .map(|((ns, s), n)| (ns, s, n))
            .collect();
        received.sort_by_key(|(ns, s, _)| (*ns, s.number()));
        ResetCounts {
            sent: self.sent.then(|| flat(sent)),
            received: self.received.then_some(received),
        }
    }

    fn reason(&self, value: u8) -> String {
        match self.reasons.get(&value) {
            Some(name) => name.clone(),
            None if value == RESET_REASON_UNKNOWN => "unknown".to_owned(),
            None => format!("reason_{value}"),
        }
    }
}

/// Tells the transition program that resets are watched: from now on a
/// connect closed with ECONNREFUSED and no reset seen was ended by an ICMP
/// port unreachable (see `tracer_common::DETAIL_RESET_KNOWN`).
fn watch_syn_sent_resets(ebpf: &mut Ebpf) {
    let set = ebpf
        .map_mut("RESETS_WATCHED")
        .ok_or_else(|| "no map RESETS_WATCHED".to_owned())
        .and_then(|m| Array::<_, u32>::try_from(m).map_err(|e| e.to_string()))
        .and_then(|mut a| a.set(0, 1, 0).map_err(|e| e.to_string()));
    if let Err(e) = set {
        log::warn!("connects ended by an ICMP port unreachable will count as refused: {e}");
    }
}
