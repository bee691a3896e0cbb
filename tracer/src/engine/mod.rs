//! The socket-state engine: transitions and sock_diag dumps in, the table of
//! live sockets and everything derived from it out. Pure: no I/O, no clocks
//! (callers pass kernel CLOCK_MONOTONIC nanoseconds), so every path is unit
//! tested with made-up events.
//!
//! What it keeps:
//! * full sockets, by kernel address (`skaddr`) once an event named them, or
//!   by a synthetic id while they are only known from the start-up dump;
//! * timewait sockets, by four-tuple: the tracepoint never reports them (the
//!   kernel replaces the full socket), so they are predicted from
//!   `FIN_WAIT1|FIN_WAIT2|CLOSING -> CLOSE`, removed when a new connection
//!   takes their four-tuple, and otherwise reconciled with sock_diag dumps
//!   (where the kernel's timewait programs run, their records say it all);
//! * per-state gauges, time-in-state histograms, CLOSE_WAIT ages and owners;
//! * how connections ended (`endings`): connect failures by destination
//!   and reason, closes by cause.

mod config;
mod counts;
pub mod endings;
mod histogram;
mod leaks;
mod owners;
pub mod ports;
mod ranked;
mod reconcile;
mod seeding;
mod seeds;
mod sock;
mod stats;
mod timewait;
mod tuple;

use std::collections::BTreeSet;

/// The engine's hash maps: foldhash, several times faster than the default
/// SipHash on these small keys, and still seeded per process, so that remote
/// peers choosing addresses and ports cannot aim at one bucket.
pub type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// The same for sets.
pub type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

pub use config::EngineConfig;
use counts::StateCounts;
pub use histogram::{BUCKETS, Histogram};
pub use leaks::{Leak, LeakSummary, OwnerAnswer, OwnerQuery};
use owners::Owners;
use reconcile::ClosedDuringDump;
pub use reconcile::FullReconcile;
use seeds::Seeds;
pub use sock::DumpedSocket;
use sock::Sock;
pub use stats::EngineStats;
use timewait::TimewaitTable;
pub use timewait::{DestinationCount, TimerWheel, TimewaitReconcile};
use tracer_common::{STATE_SLOTS, TcpState};
pub use tuple::Tuple;

use crate::kernel::event::{Comm, Record, Transition};
use endings::EndingCounts;

/// How long a timewait socket lives (TCP_TIMEWAIT_LEN, fixed in the kernel).
pub const TIME_WAIT_LEN_NS: u64 = 60_000_000_000;

/// The engine. See the module documentation.
#[derive(Debug)]
pub struct Engine {
    cfg: EngineConfig,
    socks: HashMap<u64, Sock>,
    /// Sockets from the start-up dump that no event has named yet.
    seeds: Seeds,
    timewait: TimewaitTable,
    /// When timewait timers really run.
    timer_wheel: TimerWheel,
    /// The kernel's timewait programs report each timewait socket.
    timewait_followed: bool,
    /// Followed timewait sockets that ended before their timer, lately
    /// (when): a new connection's event on the tuple, which comes after
    /// the kernel's record, says it was a reuse.
    ended_early: HashMap<Tuple, u64>,
    closed_during_dump: ClosedDuringDump,
    /// Sockets in CLOSE_WAIT by (since, id): oldest first.
    close_wait: BTreeSet<(u64, u64)>,
    owners: Owners,
    counts: StateCounts,
    durations: [Histogram; STATE_SLOTS],
    stats: EngineStats,
    leak_summary: LeakSummary,
    endings: EndingCounts,
    /// Ports taken toward each destination, and what decides it (each
    /// namespace's ephemeral range and `tcp_tw_reuse`, the listened ports).
    ports: ports::PortIndex,
}

fn slot(s: TcpState) -> usize {
    usize::from(s.number())
}

/// Transitions that make a socket (the kernel allocates a new one).
fn is_creation(t: &Transition) -> bool {
    t.old == TcpState::Close || (t.old == TcpState::Listen && t.new == TcpState::SynRecv)
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Engine {
        let endings = EndingCounts::new(cfg.top_destinations);
        Engine {
            cfg,
            socks: HashMap::default(),
            seeds: Seeds::default(),
            timewait: TimewaitTable::default(),
            timer_wheel: TimerWheel::default(),
            timewait_followed: false,
            ended_early: HashMap::default(),
            closed_during_dump: ClosedDuringDump::default(),
            close_wait: BTreeSet::new(),
            owners: Owners::default(),
            counts: StateCounts::default(),
            durations: Default::default(),
            stats: EngineStats::default(),
            leak_summary: LeakSummary::default(),
            endings,
            ports: ports::PortIndex::default(),
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// New limits (on SIGHUP). A lower `max_sockets` evicts on the next
    /// insertion; a new threshold applies from the next leak sweep.
    pub fn set_config(&mut self, cfg: EngineConfig) {
        self.endings
            .connect_failures
            .set_limit(cfg.top_destinations);
        self.cfg = cfg;
    }

    /// Sockets per state (index: kernel state number).
    pub fn counts(&self) -> &[u64; STATE_SLOTS] {
        self.counts.total()
    }

    pub fn count(&self, state: TcpState) -> u64 {
        self.counts.total()[slot(state)]
    }

    /// Sockets per state in each network namespace that has any.
    pub fn counts_by_netns(&self) -> &HashMap<u32, [u64; STATE_SLOTS]> {
        self.counts.by_netns()
    }

    /// Time-in-state histograms (index: kernel state number).
    pub fn durations(&self) -> &[Histogram; STATE_SLOTS] {
        &self.durations
    }

    /// How connections ended, counted.
    pub fn endings(&self) -> &EndingCounts {
        &self.endings
    }

    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// Entries in the table (full and timewait sockets).
    pub fn tracked(&self) -> usize {
        self.socks.len() + self.timewait.len()
    }

    /// Names the owners of sockets seeded without one, from a scan of
    /// /proc made after start-up (inode to pid and name): the scan takes
    /// seconds with a million sockets, too long to wait for before ready.
    /// Returns how many sockets got an owner.
    pub fn assign_owners(&mut self, owners: &std::collections::HashMap<u32, (u32, Comm)>) -> usize {
        let mut found: Vec<(u64, u32, Comm)> = Vec::new();
        for (id, sock) in &mut self.socks {
            if sock.inode == 0 {
                continue;
            }
            if sock.owner == 0
                && let Some(&(pid, comm)) = owners.get(&sock.inode)
            {
                found.push((*id, pid, comm));
            }
            sock.inode = 0;
        }
        for &(id, pid, comm) in &found {
            let owner = self.owners.retain(pid, comm);
            let Some(sock) = self.socks.get_mut(&id) else {
                continue;
            };
            sock.owner = owner;
            let (state, tuple) = (sock.state, sock.tuple);
            if state == TcpState::Listen {
                self.owners.set_listener(tuple, owner);
            }
        }
        found.len()
    }

    /// Applies one record of the ring buffer.
    pub fn apply_record(&mut self, record: &Record) {
        match record {
            Record::Transition(t) => self.apply(t),
            Record::Timewait(change) => {
                self.stats.timewait_records += 1;
                self.apply_timewait(change);
            }
        }
    }

    /// Applies one transition.
    pub fn apply(&mut self, t: &Transition) {
        self.stats.events += 1;
        if t.new == TcpState::Close {
            self.endings.count(t);
        }
        let tuple = Tuple::new(t.netns, t.local, t.remote);
        if self.apply_in_place(t, &tuple) {
            return;
        }
        let mut sock = match self.take_record(t, &tuple) {
            Some(s) => s,
            None if t.new == TcpState::Close => {
                // Gone before we knew it: nothing to count, but it may have
                // left a timewait socket behind.
                self.predict_timewait(t, tuple);
                return;
            }
            None => {
                if !is_creation(t) {
                    self.stats.unknown_sockets += 1;
                }
                match self.new_sock(t, tuple) {
                    Some(s) => s,
                    None => return,
                }
            }
        };

        // Before Linux 6.15 an accepted child's first event carries the
        // listener's tuple ([`Transition::is_child_before_its_tuple`]); its next one is
        // the first to name the connection.
        let tuple_learned =
            t.old == TcpState::SynRecv && tuple.is_connection() && !sock.tuple.is_connection();
        if tuple.lport != 0 {
            if sock.tuple.netns != tuple.netns {
                // The kernel reused the address in another namespace and we
                // missed the old socket's CLOSE: its count moves with it.
                self.counts.down(sock.tuple.netns, sock.state);
                self.counts.up(tuple.netns, sock.state);
            }
            sock.tuple = tuple;
        }
        // An event from before the dump ended, for a socket the dump saw in
        // another state than this event leaves: the dump saw a later state.
        if sock.from_dump && t.ts_ns <= self.seeds.end_ns() && sock.state != t.old {
            if t.new == TcpState::Close {
                // This socket closed before the dump; what the dump saw on
                // its four-tuple is a newer connection. Give that one back.
                self.reseed(sock);
            } else {
                self.insert_sock(t.skaddr, sock);
            }
            return;
        }
        self.carry_fin_wait2(t, &tuple, &mut sock);
        self.move_state(&mut sock, t);
        self.transition_side_effects(t, &tuple, sock.owner, tuple_learned);

        if t.new == TcpState::Close {
            self.owners.release(sock.owner);
            self.closed_during_dump.closed(sock.tuple, t.ts_ns);
            self.predict_timewait(t, tuple);
            return;
        }
        self.insert_sock(t.skaddr, sock);
    }

    /// Takes the socket's record out of the table: the one events made, or
    /// the start-up dump's, whichever is the socket's.
    fn take_record(&mut self, t: &Transition, tuple: &Tuple) -> Option<Sock> {
        let sock = self.take_sock(t.skaddr);
        if !self.seeds.should_claim(t.skaddr, t.ts_ns, sock.is_some()) {
            return sock;
        }
        let seed = self.claim_seed(tuple, t, sock.is_some());
        match (sock, seed) {
            (None, seed) => seed,
            (Some(sock), Some(seed)) => {
                // The dump saw this very socket; the events since its
                // creation are the better record.
                self.drop_sock(seed);
                Some(sock)
            }
            (sock, None) => sock,
        }
    }

    /// Moves a record to the event's new state: its time in the old state
    /// observed, the counts moved.
    fn move_state(&mut self, sock: &mut Sock, t: &Transition) {
        if sock.state == t.new {
            return;
        }
        let old = sock.state;
        let stay = sock.enter(t.new, t.ts_ns);
        if old == t.old {
            if let Some(stay) = stay {
                self.durations[slot(old)].observe_ns(stay);
            }
        } else {
            // We had it in another state: an event was lost, or the dump
            // and the events disagree. Follow the kernel.
            self.stats.corrections += 1;
        }
        if t.new == TcpState::Close {
            self.counts.down(sock.tuple.netns, old);
        } else {
            self.counts.moved(sock.tuple.netns, old, t.new);
        }
    }

    /// The common case, updated where the record lies: a known socket
    /// moving on from the state we have for it, long after the seed, not
    /// closing. Everything else takes the general path. Returns false,
    /// having changed nothing, when it does not apply.
    fn apply_in_place(&mut self, t: &Transition, tuple: &Tuple) -> bool {
        if t.new == TcpState::Close || self.seeds.may_overlap(t.skaddr, t.ts_ns) {
            return false;
        }
        let Some(sock) = self.socks.get_mut(&t.skaddr) else {
            return false;
        };
        if sock.tuple != *tuple || sock.state != t.old {
            return false;
        }
        let owner = sock.owner;
        if t.old != t.new {
            // The CLOSE_WAIT index is keyed by the state's start.
            if t.old == TcpState::CloseWait {
                self.close_wait.remove(&(sock.since_ns, t.skaddr));
            }
            if let Some(stay) = sock.enter(t.new, t.ts_ns) {
                self.durations[slot(t.old)].observe_ns(stay);
            }
            if t.new == TcpState::CloseWait {
                self.close_wait.insert((t.ts_ns, t.skaddr));
            }
            self.counts.moved(tuple.netns, t.old, t.new);
        }
        self.transition_side_effects(t, tuple, owner, false);
        true
    }

    /// What a transition means beyond its socket: a listener's owner, and
    /// a new connection ending the timewait socket on its four-tuple.
    ///
    /// The timewait lookup runs once per connection and side, at the first
    /// transition that carries the full four-tuple: `SYN_SENT ->` for a
    /// client (at `CLOSE -> SYN_SENT` the port is not chosen yet), and for
    /// an accepted child (the SYN that creates it is what ended the
    /// timewait socket) `LISTEN -> SYN_RECV`, or before Linux 6.15 its next
    /// event (`tuple_learned`: the first that names the connection). The
    /// table holds every timewait socket, so each lookup is a cache miss
    /// worth saving.
    fn transition_side_effects(
        &mut self,
        t: &Transition,
        tuple: &Tuple,
        owner: u32,
        tuple_learned: bool,
    ) {
        match (t.old, t.new) {
            (_, TcpState::Listen) if owner != 0 => self.owners.set_listener(*tuple, owner),
            (TcpState::Listen, TcpState::Close) => {
                self.owners.forget_listener(tuple, owner);
            }
            (TcpState::SynSent, TcpState::Established | TcpState::SynRecv) => {
                self.timewait_reused(tuple, t.ts_ns)
            }
            (TcpState::Listen, TcpState::SynRecv) if tuple.is_connection() => {
                self.timewait_reused(tuple, t.ts_ns)
            }
            (TcpState::SynRecv, _) if tuple_learned => self.timewait_reused(tuple, t.ts_ns),
            (TcpState::LastAck, TcpState::Close) => self.timewait_peer_closed(tuple, t.ts_ns),
            _ => {}
        }
    }

    /// A record for a socket first seen in this event.
    fn new_sock(&mut self, t: &Transition, tuple: Tuple) -> Option<Sock> {
        if !self.make_room() {
            return None;
        }
        let owner = match (t.old, t.new) {
            // Process context: the current task owns the socket.
            (TcpState::Close, TcpState::SynSent | TcpState::Listen) if t.pid != 0 => {
                self.owners.retain(t.pid, t.comm)
            }
            // An accepted socket belongs to whoever owns the listener.
            (TcpState::Listen, TcpState::SynRecv) => self.owners.retain_listener_owner(&tuple),
            _ => 0,
        };
        // A creation puts the socket in its new state now; a socket seen
        // mid-life was in the old state since a time we do not know.
        let (state, since_exact) = if is_creation(t) {
            (t.new, true)
        } else {
            (t.old, false)
        };
        self.counts.up(tuple.netns, state);
        Some(Sock {
            tuple,
            since_ns: t.ts_ns,
            owner,
            state,
            since_exact,
            leak_logged: false,
            owner_checked: false,
            from_dump: false,
            inode: 0,
        })
    }

    /// Puts a dump record back under a fresh synthetic id; returns it.
    fn reseed(&mut self, sock: Sock) -> u64 {
        let id = self.seeds.new_id();
        let tuple = sock.tuple;
        self.insert_sock(id, sock);
        self.seeds.insert(tuple, id, &self.socks);
        id
    }

    /// Finds the start-up seed for this tuple, if one may be this socket.
    fn claim_seed(&mut self, tuple: &Tuple, t: &Transition, known: bool) -> Option<Sock> {
        // A connect's first event, before the dump ended: the dump may
        // have listed this socket with the port the event lacks.
        if tuple.lport == 0 && t.new == TcpState::SynSent && t.ts_ns <= self.seeds.end_ns() {
            let id = self.seeds.take_connecting(tuple, t.ts_ns, &self.socks)?;
            return self.take_sock(id);
        }
        // A child that carries its listener's tuple must not take the
        // listener's seed; its next event claims its own.
        if tuple.lport == 0 || t.is_child_before_its_tuple() {
            return None;
        }
        let listener = !tuple.is_connection();
        // A new socket after the dump ended cannot be one the dump saw; nor
        // can a second listener that shares a port with a seeded one.
        if is_creation(t) && t.ts_ns > self.seeds.end_ns() {
            return None;
        }
        if known && listener {
            return None;
        }
        let id = self.seeds.take(tuple, &self.socks)?;
        self.take_sock(id)
    }

    /// Removes a socket's record, keeping the CLOSE_WAIT index in step.
    fn take_sock(&mut self, id: u64) -> Option<Sock> {
        let sock = self.socks.remove(&id)?;
        self.unindex(&sock);
        if sock.state == TcpState::CloseWait {
            self.close_wait.remove(&(sock.since_ns, id));
        }
        Some(sock)
    }

    fn insert_sock(&mut self, id: u64, sock: Sock) {
        if sock.state == TcpState::CloseWait {
            self.close_wait.insert((sock.since_ns, id));
        }
        if sock.state == TcpState::Listen {
            self.ports.listener(&sock.tuple, true);
        }
        self.ports.add(&sock.tuple, None);
        if let Some(old) = self.socks.insert(id, sock) {
            self.unindex(&old);
            // The kernel reused an address whose CLOSE we never saw.
            self.stats.corrections += 1;
            self.counts.down(old.tuple.netns, old.state);
            self.owners.release(old.owner);
        }
    }

    /// Takes a record that leaves the table out of the port index.
    fn unindex(&mut self, sock: &Sock) {
        self.ports.remove(&sock.tuple, None);
        if sock.state == TcpState::Listen {
            self.ports.listener(&sock.tuple, false);
        }
    }

    /// Forgets a record that was taken out of the table.
    fn drop_sock(&mut self, sock: Sock) {
        self.counts.down(sock.tuple.netns, sock.state);
        self.owners.release(sock.owner);
    }

    /// Whether a socket a dump found fits. At the cap it is left out
    /// rather than evicting an entry: the next dump would bring that one
    /// back, and evict another, at every dump.
    fn room_for_dumped(&mut self) -> bool {
        if self.tracked() < self.cfg.max_sockets {
            return true;
        }
        self.stats.dumped_left_out += 1;
        false
    }

    /// Makes room for one more entry; false if nothing could be evicted.
    fn make_room(&mut self) -> bool {
        if self.tracked() < self.cfg.max_sockets {
            return true;
        }
        self.stats.evictions += 1;
        // Timewait sockets first: they carry no owner and end on their own.
        if let Some(tuple) = self.timewait.any() {
            self.remove_timewait(&tuple);
            return true;
        }
        if let Some(id) = self.socks.keys().next().copied()
            && let Some(sock) = self.take_sock(id)
        {
            self.seeds.remove_id(&sock.tuple, id);
            self.drop_sock(sock);
            return true;
        }
        false
    }

    /// The comm of a pid that owns something in the table.
    pub fn owner_comm(&self, pid: u32) -> Option<Comm> {
        self.owners.comm(pid)
    }
}

#[cfg(test)]
mod tests;
