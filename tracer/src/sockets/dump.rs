//! sock_diag dumps across every network namespace, turned into the
//! engine's [`DumpedSocket`]s: the start-up seed (all states, with owners
//! from /proc) and the periodic timewait reconciliation. A namespace whose
//! kernel has no sock_diag for TCP, or that cannot be entered, is read from
//! `/proc/net/tcp` instead (see [`ReadFrom`]).

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use tokio::sync::mpsc::Sender;

use tracer_common::TcpState;

use crate::{
    engine::{DumpedSocket, Tuple, ports::PortSettings},
    kernel::clock::monotonic_ns,
    kernel::event::Comm,
    sockets::netns::{self, NetNsError},
    sockets::nodiag,
    sockets::procfs,
    sockets::procnet,
    sockets::sockdiag::{self, DiagSocket, SockDiagError},
};

use super::{
    hidden::{HiddenNamespaces, Resolved},
    listeners::{self, ListenerQueue},
    sources::ReadFrom,
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
    /// Time spent dumping (for the log), including any wait for the table
    /// to take a chunk.
    pub diag_ms: u64,
    /// Namespaces that could not be dumped, or only in part, with the reason.
    pub failures: Vec<String>,
    /// Their inodes: a reconciliation must leave their entries alone.
    pub unread: Vec<u32>,
    /// `net.ipv4.tcp_max_tw_buckets` of each namespace entered (or the
    /// daemon's own), by inode.
    pub timewait_caps: Vec<(u32, u32)>,
    /// How each namespace that was read was read, by inode.
    pub read_from: Vec<(u32, ReadFrom)>,
    /// Time spent on sock_diag requests refused for want of TCP (the kernel
    /// runs modprobe for each) and on finding out why. Not what reading
    /// costs, so the pacing of later dumps leaves it out: one slow refusal
    /// would otherwise hold off the next dump for a hundred times as long.
    pub refused: Duration,
    /// Namespaces held only by a thread or a descriptor that this dump
    /// found for the first time.
    pub hidden_found: usize,
    /// Namespaces the engine held sockets in that no search found.
    pub namespaces_gone: usize,
    /// `ip_local_port_range` and `tcp_tw_reuse` of each namespace entered.
    pub port_settings: Vec<(u32, PortSettings)>,
    /// The listeners' accept queues of every namespace read with sock_diag.
    pub listeners: Vec<ListenerQueue>,
    /// Those namespaces, by inode.
    pub listeners_read: Vec<u32>,
}

/// The current namespace's ephemeral port settings; None if unreadable.
fn port_settings() -> Option<PortSettings> {
    let read = |name| std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}")).ok();
    PortSettings::parse(&read("ip_local_port_range")?, &read("tcp_tw_reuse")?)
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

/// Sockets of a dump in progress, and when the last of them was read.
#[derive(Debug)]
pub struct Chunk {
    pub sockets: Vec<DumpedSocket>,
    pub read_ns: u64,
}

/// Sockets per [`Chunk`]: about 1.3 MiB, some 12 ms of table work.
const CHUNK_SOCKETS: usize = 16_384;

/// Dumps TCP sockets in `states` (a sock_diag bit mask) in every network
/// namespace; those in `skip_sock_diag` (known to lack it) are read from
/// `/proc/net/tcp` straight away. Owners are not looked up here (see
/// [`socket_owners`]).
/// `wanted` are the namespaces the engine holds sockets in: one that no
/// process has as its own is looked for through `hidden`.
pub fn dump_namespaces(
    states: u32,
    skip_sock_diag: HashSet<u32>,
    wanted: HashSet<u32>,
    hidden: Arc<Mutex<HiddenNamespaces>>,
) -> Dump {
    let mut hidden = hidden.lock().unwrap_or_else(PoisonError::into_inner);
    let resolved = hidden.resolve(netns::list(), &wanted, Instant::now(), netns::search);
    drop(hidden);
    dump_to(states, &skip_sock_diag, resolved, None)
}

/// As [`dump_namespaces`], but passes the sockets on in chunks as they are
/// read, so that the table is built while the kernel is still dumping; the
/// returned [`Dump`] holds no sockets. With a million sockets this takes
/// the table's build off the time to ready, and the whole dump is never
/// held at once.
pub fn stream_namespaces(states: u32, chunks: Sender<Chunk>) -> Dump {
    let resolved = Resolved {
        namespaces: netns::list(),
        ..Resolved::default()
    };
    dump_to(states, &HashSet::new(), resolved, Some(chunks))
}

/// Converts one namespace's sockets, and keeps them or passes them on.
struct Collector {
    netns: u32,
    kept: Vec<DumpedSocket>,
    stream: Option<Sender<Chunk>>,
    /// Sockets already passed on.
    sent: usize,
}

impl Collector {
    fn new(netns: u32, stream: Option<Sender<Chunk>>) -> Collector {
        Collector {
            netns,
            kept: Vec::new(),
            stream,
            sent: 0,
        }
    }

    fn push(&mut self, d: &DiagSocket) {
        if let Some(s) = dumped(self.netns, d) {
            self.kept.push(s);
        }
        if self.stream.is_some() && self.kept.len() >= CHUNK_SOCKETS {
            self.send();
        }
    }

    fn send(&mut self) {
        let Some(stream) = &self.stream else { return };
        if self.kept.is_empty() {
            return;
        }
        let sockets = std::mem::replace(&mut self.kept, Vec::with_capacity(CHUNK_SOCKETS));
        self.sent += sockets.len();
        // The receiver is gone only when the daemon is stopping.
        let _ = stream.blocking_send(Chunk {
            sockets,
            read_ns: monotonic_ns(),
        });
    }

    /// What was kept: everything when not streaming, nothing otherwise.
    fn finish(mut self) -> Vec<DumpedSocket> {
        self.send();
        std::mem::take(&mut self.kept)
    }

    /// Drops what was read but not passed on: before reading the same
    /// namespace again from another source.
    fn discard(&mut self) {
        self.kept.clear();
    }

    /// The reason a read failed, saying what was passed on before it.
    fn failed(&self, reason: impl std::fmt::Display) -> String {
        if self.sent == 0 {
            reason.to_string()
        } else {
            format!("{reason} (after {} of its sockets were seeded)", self.sent)
        }
    }
}

/// How the calling thread read its namespace.
enum ReadHere {
    SockDiag,
    /// `/proc/thread-self/net/tcp`, after sock_diag failed with this,
    /// having taken that long.
    ProcAfter(SockDiagError, Duration),
    /// `/proc/thread-self/net/tcp`, sock_diag not asked.
    ProcOnly,
    /// `/proc/PID/net/tcp`: the namespace could not be entered.
    ProcOfProcess,
}

/// Reads the calling thread's namespace into `collector`: with sock_diag,
/// unless told to skip it or it turns out to have no TCP; then from
/// `/proc/thread-self/net/tcp`, which shows the same namespace.
fn read_here(
    states: u32,
    skip_sock_diag: bool,
    mut collector: Collector,
) -> Result<(Vec<DumpedSocket>, ReadHere), String> {
    let mut missing = None;
    if !skip_sock_diag {
        let asked = Instant::now();
        match sockdiag::dump(states, |d| collector.push(&d)) {
            Ok(_) => return Ok((collector.finish(), ReadHere::SockDiag)),
            // The kernel refused before any chunk reached the table (a
            // missing handler answers the first request): reading the
            // namespace again cannot count a socket twice.
            Err(e) if nodiag::unavailable(&e) && collector.sent == 0 => {
                collector.discard();
                missing = Some((e, asked.elapsed()));
            }
            Err(e) => return Err(collector.failed(e)),
        }
    }
    match procnet::dump_own(states, |d| collector.push(&d)) {
        Ok(_) => {
            let how = match missing {
                Some((e, took)) => ReadHere::ProcAfter(e, took),
                None => ReadHere::ProcOnly,
            };
            Ok((collector.finish(), how))
        }
        Err(e) => {
            let after = missing.map(|(m, _)| format!("{m}; ")).unwrap_or_default();
            Err(collector.failed(format!("{after}/proc/thread-self/net/tcp: {e}")))
        }
    }
}

/// What one namespace gave.
struct Visit {
    result: Result<(Vec<DumpedSocket>, ReadHere), String>,
    timewait_cap: Option<u32>,
    ports: Option<PortSettings>,
    /// None when its listeners could not be read with sock_diag.
    listeners: Option<Vec<ListenerQueue>>,
}

/// Reads namespace `ns` from inside it (entered unless it is `current`):
/// its sockets, its listeners' queues, and its settings (the sysctl files
/// answer for the namespace of whoever opens them).
fn visit(
    ns: &netns::NetNs,
    current: Option<u32>,
    states: u32,
    skip: bool,
    collector: Collector,
    stream: &Option<Sender<Chunk>>,
) -> Visit {
    let inode = ns.inode;
    let here = move || Visit {
        listeners: (!skip).then(|| listeners::read_here(inode).ok()).flatten(),
        timewait_cap: timewait_cap(),
        ports: port_settings(),
        result: read_here(states, skip, collector),
    };
    if Some(ns.inode) == current {
        return here();
    }
    let failed = |result| Visit {
        result,
        timewait_cap: None,
        ports: None,
        listeners: None,
    };
    match netns::run_in(ns, here) {
        Ok(visit) => visit,
        // It may have passed sockets on before it failed: reading the
        // namespace again could seed them twice.
        Err(e @ NetNsError::Panicked { .. }) => failed(Err(e.to_string())),
        // Without CAP_SYS_ADMIN (the systemd unit drops it), read the
        // namespace's table through one of its processes instead.
        Err(enter) => failed(read_through_a_process(ns, states, stream, enter)),
    }
}

fn dump_to(
    states: u32,
    skip_sock_diag: &HashSet<u32>,
    resolved: Resolved,
    stream: Option<Sender<Chunk>>,
) -> Dump {
    let start_ns = monotonic_ns();
    let current = netns::current_inode().ok();
    let mut dump = Dump {
        start_ns,
        unread: resolved.unread,
        hidden_found: resolved.newly_found,
        namespaces_gone: resolved.gone,
        ..Dump::default()
    };
    // Why sock_diag is missing: the kernel's modules, the same for every
    // namespace, so read once per dump that needs it.
    let mut cause: Option<String> = None;
    for ns in resolved.namespaces {
        if stream.as_ref().is_some_and(Sender::is_closed) {
            break; // the daemon is stopping
        }
        let collector = Collector::new(ns.inode, stream.clone());
        let skip = skip_sock_diag.contains(&ns.inode);
        let Visit {
            result,
            timewait_cap: cap,
            ports,
            listeners,
        } = visit(&ns, current, states, skip, collector, &stream);
        if let Some(cap) = cap {
            dump.timewait_caps.push((ns.inode, cap));
        }
        if let Some(ports) = ports {
            dump.port_settings.push((ns.inode, ports));
        }
        if let Some(listeners) = listeners {
            dump.listeners.extend(listeners);
            dump.listeners_read.push(ns.inode);
        }
        let (found, how) = match result {
            Ok(found) => found,
            Err(e) => {
                dump.failures.push(format!("{}: {e}", ns.path.display()));
                dump.unread.push(ns.inode);
                continue;
            }
        };
        let from = match how {
            ReadHere::SockDiag => ReadFrom::SockDiag,
            ReadHere::ProcAfter(e, took) => {
                let explaining = Instant::now();
                let why = cause.get_or_insert_with(|| nodiag::cause(&e)).clone();
                dump.refused += took + explaining.elapsed();
                ReadFrom::ProcNoSockDiag(why)
            }
            ReadHere::ProcOnly => ReadFrom::ProcKnownNoSockDiag,
            ReadHere::ProcOfProcess => ReadFrom::ProcNotEntered,
        };
        dump.read_from.push((ns.inode, from));
        dump.namespaces += 1;
        if dump.sockets.is_empty() {
            dump.sockets = found;
        } else {
            dump.sockets.extend(found);
        }
    }
    dump.end_ns = monotonic_ns();
    dump.diag_ms = (dump.end_ns - start_ns) / 1_000_000;
    dump
}

/// Without the right to enter namespace `ns` (`enter` says why; the
/// systemd unit drops CAP_SYS_ADMIN), reads its table through one of its
/// processes instead.
fn read_through_a_process(
    ns: &netns::NetNs,
    states: u32,
    stream: &Option<Sender<Chunk>>,
    enter: NetNsError,
) -> Result<(Vec<DumpedSocket>, ReadHere), String> {
    let Some(pid) = pid_in(ns) else {
        return Err(format!(
            "{enter}; no process in it to read /proc/PID/net/tcp from"
        ));
    };
    let mut collector = Collector::new(ns.inode, stream.clone());
    match procnet::dump(pid, states, |d| collector.push(&d)) {
        Ok(_) => Ok((collector.finish(), ReadHere::ProcOfProcess)),
        Err(e) => Err(collector.failed(format!("{enter}; /proc/{pid}/net/tcp: {e}"))),
    }
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

/// How many TCP sockets the daemon's own namespace holds, full and
/// timewait, from /proc/net/sockstat and sockstat6: what the start-up dump
/// will find there, to size the table before it arrives.
pub fn expected_sockets() -> Option<(usize, usize)> {
    let v4 = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let v6 = std::fs::read_to_string("/proc/net/sockstat6").unwrap_or_default();
    Some(parse_sockstat(&v4, &v6))
}

/// (TCP `inuse` of both families, TCP `tw`); missing fields count as 0.
fn parse_sockstat(v4: &str, v6: &str) -> (usize, usize) {
    let field = |text: &str, line: &str, name: &str| -> usize {
        text.lines()
            .find_map(|l| l.strip_prefix(line))
            .and_then(|rest| {
                let mut words = rest.split_whitespace();
                words.find(|&w| w == name)?;
                words.next()?.parse().ok()
            })
            .unwrap_or(0)
    };
    (
        field(v4, "TCP:", "inuse") + field(v6, "TCP6:", "inuse"),
        field(v4, "TCP:", "tw"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockstat_counts_both_families_and_timewait() {
        let v4 = "sockets: used 108007\nTCP: inuse 108001 orphan 0 tw 6 alloc 108001 mem 222\n\
                  UDP: inuse 3 mem 0\n";
        let v6 = "TCP6: inuse 12\nUDP6: inuse 0\n";
        assert_eq!(parse_sockstat(v4, v6), (108_013, 6));
        assert_eq!(parse_sockstat("TCP: inuse x\n", ""), (0, 0));
        assert_eq!(parse_sockstat("", ""), (0, 0));
    }
}
