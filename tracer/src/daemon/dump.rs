//! sock_diag dumps across every network namespace, turned into the
//! engine's [`DumpedSocket`]s: the start-up seed (all states, with owners
//! from /proc) and the periodic timewait reconciliation.

use std::collections::HashMap;

use tracer_common::TcpState;

use crate::{
    clock::monotonic_ns,
    engine::{DumpedSocket, Tuple},
    event::Comm,
    netns, procfs, procnet,
    sockdiag::{self, DiagSocket},
};

/// sock_diag's timer code for a timewait socket.
const TIMER_TIME_WAIT: u8 = 3;

/// One dump of every namespace.
#[derive(Debug, Default)]
pub struct Dump {
    pub sockets: Vec<DumpedSocket>,
    /// CLOCK_MONOTONIC before the first and after the last namespace.
    pub start_ns: u64,
    pub end_ns: u64,
    pub namespaces: usize,
    /// Time spent in sock_diag (for the log).
    pub diag_ms: u64,
    /// Namespaces that could not be dumped, with the reason.
    pub failures: Vec<String>,
    /// `net.ipv4.tcp_max_tw_buckets` of each namespace entered (or the
    /// daemon's own), by inode.
    pub timewait_caps: Vec<(u32, u32)>,
}

/// The current namespace's cap on timewait sockets; None if unreadable.
fn timewait_cap() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_max_tw_buckets")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Owners of sockets by inode: pid and name, from a scan of every
/// /proc/PID/fd. Slow with many sockets (the kernel spends about 10 us on
/// each descriptor), so the daemon runs it after start-up.
pub fn socket_owners() -> HashMap<u32, (u32, Comm)> {
    let mut comms: HashMap<u32, Option<Comm>> = HashMap::new();
    procfs::socket_owners()
        .into_iter()
        .filter_map(|(inode, pid)| {
            let comm = *comms
                .entry(pid)
                .or_insert_with(|| procfs::comm(pid).map(|c| Comm::from_name(&c)));
            Some((inode, (pid, comm?)))
        })
        .collect()
}

/// Dumps TCP sockets in `states` (a sock_diag bit mask) in every network
/// namespace. Owners are not looked up here (see [`socket_owners`]).
pub fn dump_namespaces(states: u32) -> Dump {
    let start_ns = monotonic_ns();
    let current = netns::current_inode().ok();
    let mut dump = Dump {
        start_ns,
        ..Dump::default()
    };
    for ns in netns::list() {
        // Inside the namespace: its sockets and its cap on timewait sockets
        // (the sysctl file answers for the namespace of whoever opens it).
        let here = move || {
            (
                sockdiag::dump_all(states).map_err(|e| e.to_string()),
                timewait_cap(),
            )
        };
        let (result, cap) = if Some(ns.inode) == current {
            here()
        } else {
            match netns::run_in(&ns, here) {
                Ok(both) => both,
                // Without CAP_SYS_ADMIN (the systemd unit drops it), read the
                // namespace's table through one of its processes instead.
                Err(enter) => match pid_in(&ns) {
                    Some(pid) => (
                        procnet::dump(pid, states)
                            .map_err(|e| format!("{enter}; /proc/{pid}/net/tcp: {e}")),
                        None,
                    ),
                    None => (
                        Err(format!(
                            "{enter}; no process in it to read /proc/PID/net/tcp from"
                        )),
                        None,
                    ),
                },
            }
        };
        if let Some(cap) = cap {
            dump.timewait_caps.push((ns.inode, cap));
        }
        let found = match result {
            Ok(found) => found,
            Err(e) => {
                dump.failures.push(format!("{}: {e}", ns.path.display()));
                continue;
            }
        };
        dump.namespaces += 1;
        dump.sockets.reserve(found.len());
        for d in found {
            if let Some(s) = dumped(ns.inode, &d) {
                dump.sockets.push(s);
            }
        }
    }
    dump.end_ns = monotonic_ns();
    dump.diag_ms = (dump.end_ns - start_ns) / 1_000_000;
    dump
}

/// A process in namespace `ns`, if any (from its path, or a scan of /proc).
fn pid_in(ns: &netns::NetNs) -> Option<u32> {
    use std::os::unix::fs::MetadataExt as _;
    let from_path = ns
        .path
        .strip_prefix("/proc")
        .ok()
        .and_then(|rest| rest.iter().next())
        .and_then(|pid| pid.to_str()?.parse().ok());
    if from_path.is_some() {
        return from_path;
    }
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let ino = std::fs::metadata(e.path().join("ns/net")).ok()?.ino();
        (ino == u64::from(ns.inode)).then_some(pid)
    })
}

/// Converts one sock_diag record; None for states the engine does not know.
fn dumped(netns: u32, d: &DiagSocket) -> Option<DumpedSocket> {
    Some(DumpedSocket {
        tuple: Tuple::new(netns, d.local, d.remote),
        state: TcpState::try_from(d.state).ok()?,
        timewait: d.timer == TIMER_TIME_WAIT && d.inode == 0,
        expires_ms: d.expires_ms,
        owner: None,
        inode: d.inode,
    })
}
