//! Full reconciliation: the whole table against a sock_diag dump of every
//! state. Events keep the table exact; this heals what lost events broke
//! (a socket whose every event was dropped, a close never seen).

use std::collections::HashSet;

use tracer_common::TcpState;

use super::{DumpedSocket, Engine, HashMap, Tuple};

/// What one full reconciliation changed in the full-socket table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FullReconcile {
    /// In the dump, not in the table.
    pub added: u64,
    /// In the table, gone from the dump.
    pub removed: u64,
    /// In both, in another state.
    pub changed: u64,
}

/// Full sockets that events closed while a dump was under way: the dump
/// may have listed them before they closed.
#[derive(Debug, Default)]
pub(super) struct ClosedDuringDump {
    under_way: bool,
    closed: HashMap<Tuple, u64>,
}

impl ClosedDuringDump {
    pub(super) fn dump_starting(&mut self) {
        self.under_way = true;
    }

    /// A socket on `tuple` closed at `ts_ns`.
    pub(super) fn closed(&mut self, tuple: Tuple, ts_ns: u64) {
        if self.under_way && tuple.is_connection() {
            self.closed.insert(tuple, ts_ns);
        }
    }

    fn closed_since(&self, tuple: &Tuple, start_ns: u64) -> bool {
        self.closed.get(tuple).is_some_and(|&at| at > start_ns)
    }

    pub(super) fn dump_done(&mut self) {
        self.under_way = false;
        self.closed = HashMap::default();
    }
}

impl Engine {
    /// Brings full sockets in line with a dump of every state taken between
    /// `start_ns` and `end_ns` (apply every event up to `end_ns` first).
    /// Sockets that events moved during the dump are left to the events, and
    /// so are those of the `unread` namespaces, which the dump could not
    /// read whole; timewait sockets in the dump go to
    /// [`Engine::reconcile_timewait`].
    pub fn reconcile_full(
        &mut self,
        dump: &[DumpedSocket],
        unread: &[u32],
        start_ns: u64,
        end_ns: u64,
    ) -> FullReconcile {
        let mut kernel = full_sockets_by_tuple(dump);
        let mut table = self.compare_table(&mut kernel, unread, start_ns);
        let mut result = self.fix_table(&table.differing, end_ns);
        let missing = self.missing_from_table(dump, &mut kernel, &mut table, start_ns);
        result.added = missing.len() as u64;
        // Seeding places them like sockets found at start-up.
        let seed_end = self.seeds.end_ns();
        // Earlier dumps' SYN_SENT seeds are past the time events could claim them.
        self.seeds.forget_connecting();
        self.seed(missing, end_ns);
        self.seeds.set_end_ns(seed_end.max(end_ns));
        self.stats.corrections += result.added + result.removed + result.changed;
        result
    }

    /// Matches the table against the kernel's sockets, taking each match
    /// out of `kernel`.
    fn compare_table(
        &self,
        kernel: &mut HashMap<Tuple, Vec<TcpState>>,
        unread: &[u32],
        start_ns: u64,
    ) -> TableVsDump {
        let mut table = TableVsDump::default();
        for (&id, sock) in &self.socks {
            if sock.since_ns > start_ns {
                table.moved.insert(sock.tuple);
                continue;
            }
            if unread.contains(&sock.tuple.netns) {
                continue;
            }
            if sock.tuple.lport == 0 {
                if sock.state == TcpState::SynSent {
                    table.connecting.entry(sock.tuple).or_default().push(id);
                }
                continue;
            }
            // A child whose events so far carried its listener's tuple
            // (before Linux 6.15): the dump lists it under its own.
            if sock.state == TcpState::SynRecv && !sock.tuple.is_connection() {
                continue;
            }
            match kernel.get_mut(&sock.tuple).and_then(|states| {
                let i = states.iter().position(|s| *s == sock.state).unwrap_or(0);
                (!states.is_empty()).then(|| states.swap_remove(i))
            }) {
                Some(state) if state == sock.state => {}
                Some(state) => table.differing.push((id, Some(state))),
                None => table.differing.push((id, None)),
            }
        }
        table
    }

    /// Moves records to the state the kernel has them in, or removes those
    /// it does not have.
    fn fix_table(&mut self, differing: &[(u64, Option<TcpState>)], end_ns: u64) -> FullReconcile {
        let mut result = FullReconcile::default();
        for &(id, state) in differing {
            let Some(mut sock) = self.take_sock(id) else {
                continue;
            };
            match state {
                Some(state) => {
                    self.counts.moved(sock.tuple.netns, sock.state, state);
                    sock.state = state;
                    sock.since_ns = end_ns;
                    sock.since_exact = false;
                    sock.leak_logged = false;
                    sock.owner_checked = false;
                    self.insert_sock(id, sock);
                    result.changed += 1;
                }
                None => {
                    self.seeds.remove_id(&sock.tuple, id);
                    self.drop_sock(sock);
                    result.removed += 1;
                }
            }
        }
        result
    }

    /// The kernel's sockets the table lacks (what `kernel` still holds),
    /// but for those events moved or closed during the dump, and for
    /// connects whose port the dump shows: those records learn it.
    fn missing_from_table(
        &mut self,
        dump: &[DumpedSocket],
        kernel: &mut HashMap<Tuple, Vec<TcpState>>,
        table: &mut TableVsDump,
        start_ns: u64,
    ) -> Vec<DumpedSocket> {
        let mut ports_learned = Vec::new();
        let missing: Vec<DumpedSocket> = dump
            .iter()
            .filter(|d| {
                !d.timewait
                    && d.state != TcpState::SynRecv
                    && !table.moved.contains(&d.tuple)
                    && !self.closed_during_dump.closed_since(&d.tuple, start_ns)
                    && take_state(kernel, &d.tuple, d.state)
            })
            .filter(|d| {
                let portless = d.tuple.before_its_port();
                let learned = (d.state == TcpState::SynSent)
                    .then(|| table.connecting.get_mut(&portless).and_then(Vec::pop))
                    .flatten();
                learned
                    .map(|id| ports_learned.push((id, d.tuple)))
                    .is_none()
            })
            .copied()
            .collect();
        for (id, tuple) in ports_learned {
            if let Some(mut sock) = self.take_sock(id) {
                sock.tuple = tuple;
                self.insert_sock(id, sock);
            }
        }
        missing
    }
}

/// The table as a full dump found it.
#[derive(Debug, Default)]
struct TableVsDump {
    /// Tuples of records that events moved during the dump.
    moved: HashSet<Tuple>,
    /// Records the kernel has in another state (`Some`) or not at all.
    differing: Vec<(u64, Option<TcpState>)>,
    /// Connects whose port no event has shown yet, by their portless
    /// tuple: the dump's SYN_SENT entries tell their ports.
    connecting: HashMap<Tuple, Vec<u64>>,
}

/// Takes one `state` for `tuple` out of `kernel`, if it has one.
fn take_state(kernel: &mut HashMap<Tuple, Vec<TcpState>>, tuple: &Tuple, state: TcpState) -> bool {
    let Some(states) = kernel.get_mut(tuple) else {
        return false;
    };
    match states.iter().position(|s| *s == state) {
        Some(i) => {
            states.swap_remove(i);
            true
        }
        None => false,
    }
}

/// What the kernel has, by four-tuple (listeners may share one): the full
/// sockets that events can show.
fn full_sockets_by_tuple(dump: &[DumpedSocket]) -> HashMap<Tuple, Vec<TcpState>> {
    let mut kernel: HashMap<Tuple, Vec<TcpState>> = HashMap::default();
    for d in dump {
        // Closed ones are gone. SYN_RECV entries are request sockets,
        // which never reach the tracepoint, or TCP Fast Open children,
        // which do: they are kept to match the table, never added.
        if d.timewait || d.state == TcpState::Close {
            continue;
        }
        let states = kernel.entry(d.tuple).or_default();
        // A connection listed twice (/proc/net/tcp is read in pieces) is
        // still one socket; only listeners share a tuple.
        if states.is_empty() || !d.tuple.is_connection() {
            states.push(d.state);
        }
    }
    kernel
}
