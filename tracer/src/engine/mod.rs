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
//!   takes their four-tuple, and otherwise reconciled with sock_diag dumps;
//! * per-state gauges, time-in-state histograms, CLOSE_WAIT ages and owners.

mod histogram;
mod leaks;
mod reconcile;
mod seeds;
mod timewait;
mod tuple;

use std::collections::BTreeSet;

/// The engine's hash maps: foldhash, several times faster than the default
/// SipHash on these small keys, and still seeded per process, so that remote
/// peers choosing addresses and ports cannot aim at one bucket.
pub type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

pub use histogram::{BUCKETS, Histogram};
pub use leaks::{Leak, LeakSummary};
pub use reconcile::FullReconcile;
use seeds::SeedIndex;
use timewait::TimeWait;
pub use timewait::{DestinationCount, TimewaitReconcile};
use tracer_common::TcpState;
pub use tuple::Tuple;

use crate::event::{Comm, Transition};

/// Kernel state numbers index these arrays (slot 0 unused).
pub const STATE_SLOTS: usize = 13;

/// How long a timewait socket lives (TCP_TIMEWAIT_LEN, fixed in the kernel).
pub const TIME_WAIT_LEN_NS: u64 = 60_000_000_000;

/// Synthetic ids for sockets known only from a dump stay below this; kernel
/// addresses on 64-bit Linux are far above it.
const SEED_ID_LIMIT: u64 = 1 << 47;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Most sockets (full and timewait) kept; beyond it, entries are evicted.
    pub max_sockets: usize,
    /// A CLOSE_WAIT socket older than this is a leak.
    pub close_wait_threshold_ns: u64,
    /// Distinct process names in the leak gauge; the rest share one label.
    pub leak_top_n: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_sockets: 2_000_000,
            close_wait_threshold_ns: 60_000_000_000,
            leak_top_n: 20,
        }
    }
}

/// Counters about the engine's own work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Transitions applied.
    pub events: u64,
    /// Times the table disagreed with what the kernel said (an event whose
    /// old state was not the one we had, a dump that differed) and was fixed.
    pub corrections: u64,
    /// Entries dropped to stay under `max_sockets`.
    pub evictions: u64,
    /// Sockets first seen mid-life (born before tracing, missed by the dump).
    pub unknown_sockets: u64,
    /// Timewait sockets ended by a new connection on their four-tuple.
    pub timewait_reused: u64,
    /// Timewait sockets that reached their timer.
    pub timewait_expired: u64,
    /// Timewait sockets that vanished before their timer (reset, or reuse we
    /// could not see).
    pub timewait_ended_early: u64,
    /// Timewait sockets not predicted because their namespace held as many
    /// as `net.ipv4.tcp_max_tw_buckets` allows: the kernel makes none then.
    pub timewait_over_cap: u64,
}

/// A socket as the start-up dump (sock_diag) reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DumpedSocket {
    pub tuple: Tuple,
    pub state: TcpState,
    /// A timewait socket (sock_diag's TIME_WAIT timer); `state` is then its
    /// substate, TIME_WAIT or FIN_WAIT2.
    pub timewait: bool,
    /// Milliseconds until its timer fires.
    pub expires_ms: u32,
    /// Owning process from /proc (pid, comm), when known.
    pub owner: Option<(u32, Comm)>,
    /// The socket's inode (0 for timewait sockets), so that owners found
    /// later can be matched ([`Engine::assign_owners`]).
    pub inode: u32,
}

#[derive(Debug, Clone)]
struct Sock {
    tuple: Tuple,
    /// When it entered `state`: exact if `since_exact`, else a lower bound
    /// (the time we first saw it).
    since_ns: u64,
    /// Owning pid, 0 when unknown.
    owner: u32,
    state: TcpState,
    since_exact: bool,
    leak_logged: bool,
    /// The state is what the start-up dump saw; no event has moved it yet.
    from_dump: bool,
    /// Inode from the dump, 0 otherwise: kept until an owner is assigned
    /// (it fills what would be padding).
    inode: u32,
}

impl Sock {
    /// Moves the record into `state` at `ts_ns`; returns how long it stayed
    /// in the one it leaves, when that start was known exactly.
    fn enter(&mut self, state: TcpState, ts_ns: u64) -> Option<u64> {
        let stay = self
            .since_exact
            .then(|| ts_ns.saturating_sub(self.since_ns));
        self.state = state;
        self.since_ns = ts_ns;
        self.since_exact = true;
        self.leak_logged = false;
        self.from_dump = false;
        stay
    }
}

#[derive(Debug, Clone)]
struct Owner {
    comm: Comm,
    /// Sockets and listener entries that name this pid.
    refs: u32,
}

/// The engine. See the module documentation.
#[derive(Debug)]
pub struct Engine {
    cfg: EngineConfig,
    socks: HashMap<u64, Sock>,
    /// Sockets from the start-up dump that no event has named yet.
    seeds: SeedIndex,
    /// Further seeds sharing a tuple (SO_REUSEPORT listeners).
    seed_dups: HashMap<Tuple, Vec<u64>>,
    next_seed_id: u64,
    /// End of the start-up dump: events before it may describe what the
    /// dump already saw.
    seed_end_ns: u64,
    /// Sockets seen in events from before the seed dump ended: the dump may
    /// hold a record of them too, which their next event must drop. Other
    /// known sockets skip the seed lookup.
    early: std::collections::HashSet<u64, foldhash::fast::RandomState>,
    timewait: HashMap<Tuple, TimeWait>,
    /// Timewait sockets per namespace (both substates), and each
    /// namespace's `tcp_max_tw_buckets` where known.
    tw_by_netns: HashMap<u32, u32>,
    tw_caps: HashMap<u32, u32>,
    /// Timewait sockets in substate FIN_WAIT2 (orphans waiting for the
    /// peer's FIN): while there are none, a close looks nothing up.
    tw_fin_wait2: usize,
    /// Timewait four-tuples ended by events while a dump is under way.
    tw_departed: HashMap<Tuple, u64>,
    tw_dump_under_way: bool,
    /// Counts timewait reconciliations (marks entries a dump showed).
    tw_generation: u32,
    /// Sockets in CLOSE_WAIT by (since, id): oldest first.
    close_wait: BTreeSet<(u64, u64)>,
    /// Owner of each listening port, for accepted sockets.
    listeners: HashMap<(u32, u16), u32>,
    owners: HashMap<u32, Owner>,
    counts: [u64; STATE_SLOTS],
    /// The same, per network namespace (inode); namespaces drop out when
    /// they hold no socket.
    counts_by_netns: HashMap<u32, [u64; STATE_SLOTS]>,
    durations: [Histogram; STATE_SLOTS],
    stats: EngineStats,
    leak_summary: LeakSummary,
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
        Engine {
            cfg,
            socks: HashMap::default(),
            seeds: SeedIndex::default(),
            seed_dups: HashMap::default(),
            next_seed_id: 1,
            seed_end_ns: 0,
            early: Default::default(),
            timewait: HashMap::default(),
            tw_by_netns: HashMap::default(),
            tw_caps: HashMap::default(),
            tw_fin_wait2: 0,
            tw_departed: HashMap::default(),
            tw_dump_under_way: false,
            tw_generation: 0,
            close_wait: BTreeSet::new(),
            listeners: HashMap::default(),
            owners: HashMap::default(),
            counts: [0; STATE_SLOTS],
            counts_by_netns: HashMap::default(),
            durations: Default::default(),
            stats: EngineStats::default(),
            leak_summary: LeakSummary::default(),
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// New limits (on SIGHUP). A lower `max_sockets` evicts on the next
    /// insertion; a new threshold applies from the next leak sweep.
    pub fn set_config(&mut self, cfg: EngineConfig) {
        self.cfg = cfg;
    }

    /// Sockets per state (index: kernel state number).
    pub fn counts(&self) -> &[u64; STATE_SLOTS] {
        &self.counts
    }

    pub fn count(&self, state: TcpState) -> u64 {
        self.counts[slot(state)]
    }

    /// Sockets per state in each network namespace that has any.
    pub fn counts_by_netns(&self) -> &HashMap<u32, [u64; STATE_SLOTS]> {
        &self.counts_by_netns
    }

    /// One more socket in `state` in namespace `netns`.
    fn count_up(&mut self, netns: u32, state: TcpState) {
        self.counts[slot(state)] += 1;
        self.counts_by_netns
            .entry(netns)
            .or_insert([0; STATE_SLOTS])[slot(state)] += 1;
    }

    /// One socket fewer in `state` in namespace `netns`.
    /// Saturating: a gauge that wrapped to 2^64 would be worse than one
    /// that is briefly low (a full reconciliation corrects it).
    fn count_down(&mut self, netns: u32, state: TcpState) {
        let total = &mut self.counts[slot(state)];
        debug_assert!(*total > 0, "count of {state:?} below zero");
        *total = total.saturating_sub(1);
        if let Some(ns) = self.counts_by_netns.get_mut(&netns) {
            debug_assert!(
                ns[slot(state)] > 0,
                "count of {state:?} in {netns} below zero"
            );
            ns[slot(state)] = ns[slot(state)].saturating_sub(1);
            if ns.iter().all(|&n| n == 0) {
                self.counts_by_netns.remove(&netns);
            }
        }
    }

    /// A socket in namespace `netns` moves from `from` to `to`: one
    /// namespace lookup where a count down and up would take two.
    fn count_move(&mut self, netns: u32, from: TcpState, to: TcpState) {
        debug_assert!(self.counts[slot(from)] > 0, "count of {from:?} below zero");
        self.counts[slot(from)] = self.counts[slot(from)].saturating_sub(1);
        self.counts[slot(to)] += 1;
        let ns = self
            .counts_by_netns
            .entry(netns)
            .or_insert([0; STATE_SLOTS]);
        debug_assert!(
            ns[slot(from)] > 0,
            "count of {from:?} in {netns} below zero"
        );
        ns[slot(from)] = ns[slot(from)].saturating_sub(1);
        ns[slot(to)] += 1;
    }

    /// Time-in-state histograms (index: kernel state number).
    pub fn durations(&self) -> &[Histogram; STATE_SLOTS] {
        &self.durations
    }

    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// Entries in the table (full and timewait sockets).
    pub fn tracked(&self) -> usize {
        self.socks.len() + self.timewait.len()
    }

    /// Loads a whole dump that ended at `end_ns`, at once:
    /// [`Engine::seed_part`] then [`Engine::seed_complete`].
    pub fn seed(&mut self, sockets: impl IntoIterator<Item = DumpedSocket>, end_ns: u64) {
        self.seed_part(sockets, end_ns);
        self.seed_complete(end_ns);
    }

    /// Makes room for the start-up dump before it arrives in parts, from
    /// the kernel's count of sockets: growing by doubling would hold two
    /// tables at a time. Parts beyond the estimate grow the tables.
    pub fn reserve_seeds(&mut self, full: usize, timewait: usize) {
        let full = full.min(self.cfg.max_sockets);
        self.socks.reserve(full);
        self.seeds.reserve(full);
        self.timewait
            .reserve(timewait.min(self.cfg.max_sockets - full));
    }

    /// Loads part of a dump, read by `read_ns`: at start-up the daemon
    /// builds the table while the rest of the dump is still being read.
    /// At start-up, call it before applying any event, and
    /// [`Engine::seed_complete`] once every part is in.
    pub fn seed_part(&mut self, sockets: impl IntoIterator<Item = DumpedSocket>, read_ns: u64) {
        let sockets = sockets.into_iter();
        let expected = sockets.size_hint().0.min(self.cfg.max_sockets);
        self.socks.reserve(expected);
        self.seeds.reserve(expected);
        for d in sockets {
            if d.timewait {
                self.seed_timewait(&d, read_ns);
                continue;
            }
            // Request sockets (half-open connections) show as SYN_RECV in a
            // dump but never pass through the tracepoint: they would never
            // leave. They are not tracked (README: SYN_RECV).
            if d.state == TcpState::SynRecv || d.state == TcpState::Close {
                continue;
            }
            if !self.make_room() {
                continue;
            }
            let owner = match d.owner {
                Some((pid, comm)) => self.retain_owner(pid, comm),
                None => 0,
            };
            if d.state == TcpState::Listen && owner != 0 {
                self.set_listener(d.tuple, owner);
            }
            self.count_up(d.tuple.netns, d.state);
            let sock = Sock {
                tuple: d.tuple,
                since_ns: read_ns,
                owner,
                state: d.state,
                since_exact: false,
                leak_logged: false,
                from_dump: true,
                inode: if owner == 0 { d.inode } else { 0 },
            };
            self.reseed(sock);
        }
    }

    /// The start-up dump is all in; it ended at `end_ns`. Events from
    /// before then are matched against what it saw, so nothing is lost or
    /// counted twice.
    pub fn seed_complete(&mut self, end_ns: u64) {
        self.seed_end_ns = end_ns;
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
            let owner = self.retain_owner(pid, comm);
            let Some(sock) = self.socks.get_mut(&id) else {
                continue;
            };
            sock.owner = owner;
            let (state, tuple) = (sock.state, sock.tuple);
            if state == TcpState::Listen {
                self.set_listener(tuple, owner);
            }
        }
        found.len()
    }

    /// Applies one transition.
    pub fn apply(&mut self, t: &Transition) {
        self.stats.events += 1;
        let tuple = Tuple::new(t.netns, t.local, t.remote);
        if self.apply_in_place(t, &tuple) {
            return;
        }
        let mut sock = self.take_sock(t.skaddr);
        let before_seed_end = t.ts_ns <= self.seed_end_ns;
        let claim = if self.seeds.is_empty() {
            false
        } else if sock.is_none() {
            true
        } else if self.early.is_empty() {
            false
        } else if before_seed_end {
            self.early.contains(&t.skaddr)
        } else {
            // Its first event since the dump: the last chance for a duplicate.
            self.early.remove(&t.skaddr)
        };
        if before_seed_end {
            self.early.insert(t.skaddr);
        }
        if claim {
            let seed = self.claim_seed(&tuple, t, sock.is_some());
            if sock.is_none() {
                sock = seed;
            } else if let Some(seed) = seed {
                // The dump saw this very socket; the events since its
                // creation are the better record.
                self.drop_sock(seed);
            }
        }

        let mut sock = match sock {
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
                self.count_down(sock.tuple.netns, sock.state);
                self.count_up(tuple.netns, sock.state);
            }
            sock.tuple = tuple;
        }
        // An event from before the dump ended, for a socket the dump saw in
        // another state than this event leaves: the dump saw a later state.
        if sock.from_dump && t.ts_ns <= self.seed_end_ns && sock.state != t.old {
            if t.new == TcpState::Close {
                // This socket closed before the dump; what the dump saw on
                // its four-tuple is a newer connection. Give that one back.
                self.reseed(sock);
            } else {
                self.insert_sock(t.skaddr, sock);
            }
            return;
        }
        if sock.state != t.new {
            let old = sock.state;
            let stay = sock.enter(t.new, t.ts_ns);
            if old == t.old {
                if let Some(stay) = stay {
                    self.durations[slot(old)].observe_ns(stay);
                }
            } else {
                // We had it in another state: an event was lost, or the
                // dump and the events disagree. Follow the kernel.
                self.stats.corrections += 1;
            }
            if t.new == TcpState::Close {
                self.count_down(sock.tuple.netns, old);
            } else {
                self.count_move(sock.tuple.netns, old, t.new);
            }
        }
        self.transition_side_effects(t, &tuple, sock.owner);
        if tuple_learned {
            // What `LISTEN -> SYN_RECV` could not do with the listener's
            // tuple: the SYN that made this child ended any timewait
            // socket on its four-tuple.
            self.timewait_reused(&tuple, t.ts_ns);
        }

        if t.new == TcpState::Close {
            self.release_owner(sock.owner);
            self.predict_timewait(t, tuple);
            return;
        }
        self.insert_sock(t.skaddr, sock);
    }

    /// The common case, updated where the record lies: a known socket
    /// moving on from the state we have for it, long after the seed, not
    /// closing. Everything else takes the general path. Returns false,
    /// having changed nothing, when it does not apply.
    fn apply_in_place(&mut self, t: &Transition, tuple: &Tuple) -> bool {
        if t.ts_ns <= self.seed_end_ns
            || t.new == TcpState::Close
            || (!self.early.is_empty() && self.early.contains(&t.skaddr))
        {
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
            self.count_move(tuple.netns, t.old, t.new);
        }
        self.transition_side_effects(t, tuple, owner);
        true
    }

    /// What a transition means beyond its socket: a listener's owner, and
    /// a new connection ending the timewait socket on its four-tuple.
    ///
    /// The timewait lookup runs once per connection and side, at the first
    /// transition that carries the full four-tuple: `SYN_SENT ->` for a
    /// client (at `CLOSE -> SYN_SENT` the port is not chosen yet), and
    /// `LISTEN -> SYN_RECV` for an accepted child (the SYN that creates it
    /// is what ended the timewait socket). The table holds every timewait
    /// socket, so each lookup is a cache miss worth saving.
    fn transition_side_effects(&mut self, t: &Transition, tuple: &Tuple, owner: u32) {
        match (t.old, t.new) {
            (_, TcpState::Listen) if owner != 0 => self.set_listener(*tuple, owner),
            (TcpState::Listen, TcpState::Close) => {
                self.listeners.remove(&(tuple.netns, tuple.lport));
            }
            (TcpState::SynSent, TcpState::Established | TcpState::SynRecv) => {
                self.timewait_reused(tuple, t.ts_ns)
            }
            (TcpState::Listen, TcpState::SynRecv) if tuple.is_connection() => {
                self.timewait_reused(tuple, t.ts_ns)
            }
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
                self.retain_owner(t.pid, t.comm)
            }
            // An accepted socket belongs to whoever owns the listener.
            (TcpState::Listen, TcpState::SynRecv) => {
                match self.listeners.get(&(tuple.netns, tuple.lport)).copied() {
                    Some(pid) => self.retain_pid(pid),
                    None => 0,
                }
            }
            _ => 0,
        };
        // A creation puts the socket in its new state now; a socket seen
        // mid-life was in the old state since a time we do not know.
        let (state, since_exact) = if is_creation(t) {
            (t.new, true)
        } else {
            (t.old, false)
        };
        self.count_up(tuple.netns, state);
        Some(Sock {
            tuple,
            since_ns: t.ts_ns,
            owner,
            state,
            since_exact,
            leak_logged: false,
            from_dump: false,
            inode: 0,
        })
    }

    /// Puts a dump record back under a fresh synthetic id.
    fn reseed(&mut self, sock: Sock) {
        let id = self.next_seed_id;
        self.next_seed_id = (self.next_seed_id + 1) % SEED_ID_LIMIT;
        let tuple = sock.tuple;
        self.insert_sock(id, sock);
        if let Some(first) = self.seeds.insert(&tuple, id, &self.socks) {
            self.seed_dups.entry(tuple).or_default().push(first);
        }
    }

    /// Finds the start-up seed for this tuple, if one may be this socket.
    fn claim_seed(&mut self, tuple: &Tuple, t: &Transition, known: bool) -> Option<Sock> {
        // A child that carries its listener's tuple must not take the
        // listener's seed; its next event claims its own.
        if tuple.lport == 0 || t.is_child_before_its_tuple() {
            return None;
        }
        let listener = !tuple.is_connection();
        // A new socket after the dump ended cannot be one the dump saw; nor
        // can a second listener that shares a port with a seeded one.
        if is_creation(t) && t.ts_ns > self.seed_end_ns {
            return None;
        }
        if known && listener {
            return None;
        }
        let id = match self.seed_dups.get_mut(tuple).and_then(Vec::pop) {
            Some(id) => id,
            None => self.seeds.remove(tuple, &self.socks)?,
        };
        if self.seed_dups.get(tuple).is_some_and(Vec::is_empty) {
            self.seed_dups.remove(tuple);
        }
        self.take_sock(id)
    }

    /// Removes a socket's record, keeping the CLOSE_WAIT index in step.
    fn take_sock(&mut self, id: u64) -> Option<Sock> {
        let sock = self.socks.remove(&id)?;
        if sock.state == TcpState::CloseWait {
            self.close_wait.remove(&(sock.since_ns, id));
        }
        Some(sock)
    }

    fn insert_sock(&mut self, id: u64, sock: Sock) {
        if sock.state == TcpState::CloseWait {
            self.close_wait.insert((sock.since_ns, id));
        }
        if let Some(old) = self.socks.insert(id, sock) {
            // The kernel reused an address whose CLOSE we never saw.
            self.stats.corrections += 1;
            self.count_down(old.tuple.netns, old.state);
            self.release_owner(old.owner);
        }
    }

    /// Forgets a record that was taken out of the table.
    fn drop_sock(&mut self, sock: Sock) {
        self.count_down(sock.tuple.netns, sock.state);
        self.release_owner(sock.owner);
    }

    /// Makes room for one more entry; false if nothing could be evicted.
    fn make_room(&mut self) -> bool {
        if self.tracked() < self.cfg.max_sockets {
            return true;
        }
        self.stats.evictions += 1;
        // Timewait sockets first: they carry no owner and end on their own.
        if let Some(tuple) = self.timewait.keys().next().copied() {
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

    fn set_listener(&mut self, tuple: Tuple, owner: u32) {
        let pid = self.retain_pid(owner);
        if let Some(old) = self.listeners.insert((tuple.netns, tuple.lport), pid) {
            self.release_owner(old);
        }
    }

    fn retain_owner(&mut self, pid: u32, comm: Comm) -> u32 {
        let o = self.owners.entry(pid).or_insert(Owner { comm, refs: 0 });
        o.comm = comm;
        o.refs += 1;
        pid
    }

    /// Another reference to a pid already known; 0 if it is not.
    fn retain_pid(&mut self, pid: u32) -> u32 {
        match self.owners.get_mut(&pid) {
            Some(o) => {
                o.refs += 1;
                pid
            }
            None => 0,
        }
    }

    fn release_owner(&mut self, pid: u32) {
        if pid == 0 {
            return;
        }
        if let Some(o) = self.owners.get_mut(&pid) {
            o.refs -= 1;
            if o.refs == 0 {
                self.owners.remove(&pid);
            }
        }
    }

    /// The comm of a pid that owns something in the table.
    pub fn owner_comm(&self, pid: u32) -> Option<Comm> {
        self.owners.get(&pid).map(|o| o.comm)
    }
}

#[cfg(test)]
mod tests;
