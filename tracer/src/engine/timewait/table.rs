//! The timewait table: the timewait sockets the engine knows, with the
//! counts and dump bookkeeping that must move with them. Every change goes
//! through this type, so the per-namespace counts and the FIN_WAIT2 count
//! cannot drift from the entries (the engine's state counts are its own).

use tracer_common::TcpState;

use super::TimeWait;
use crate::engine::{HashMap, Tuple};

#[derive(Debug, Default)]
pub(in crate::engine) struct TimewaitTable {
    entries: HashMap<Tuple, TimeWait>,
    /// Entries per namespace (both substates).
    by_netns: HashMap<u32, u32>,
    /// Each namespace's `tcp_max_tw_buckets`, where known.
    caps: HashMap<u32, u32>,
    /// Entries in substate FIN_WAIT2 (orphans waiting for the peer's FIN):
    /// while there are none, a close looks nothing up.
    fin_wait2: usize,
    /// Four-tuples whose entry events ended while a dump is under way.
    departed: HashMap<Tuple, u64>,
    dump_under_way: bool,
    /// Counts reconciliations (marks entries a dump showed).
    generation: u32,
}

impl TimewaitTable {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn reserve(&mut self, n: usize) {
        self.entries.reserve(n);
    }

    pub fn contains(&self, tuple: &Tuple) -> bool {
        self.entries.contains_key(tuple)
    }

    pub fn get(&self, tuple: &Tuple) -> Option<&TimeWait> {
        self.entries.get(tuple)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Tuple, &TimeWait)> {
        self.entries.iter()
    }

    /// Any entry, for eviction.
    pub fn any(&self) -> Option<Tuple> {
        self.entries.keys().next().copied()
    }

    /// Adds an entry for a tuple that has none.
    pub fn insert(&mut self, tuple: Tuple, tw: TimeWait) {
        debug_assert!(!self.entries.contains_key(&tuple));
        if tw.substate == TcpState::FinWait2 {
            self.fin_wait2 += 1;
        }
        *self.by_netns.entry(tuple.netns).or_insert(0) += 1;
        self.entries.insert(tuple, tw);
    }

    pub fn remove(&mut self, tuple: &Tuple) -> Option<TimeWait> {
        let tw = self.entries.remove(tuple)?;
        if let Some(n) = self.by_netns.get_mut(&tuple.netns) {
            *n -= 1;
            if *n == 0 {
                self.by_netns.remove(&tuple.netns);
            }
        }
        if tw.substate == TcpState::FinWait2 {
            self.fin_wait2 -= 1;
        }
        Some(tw)
    }

    /// Changes an entry's fields through `f`, keeping the FIN_WAIT2 count;
    /// returns the substate before and after, or None without an entry.
    pub fn update(
        &mut self,
        tuple: &Tuple,
        f: impl FnOnce(&mut TimeWait),
    ) -> Option<(TcpState, TcpState)> {
        let tw = self.entries.get_mut(tuple)?;
        let before = tw.substate;
        f(tw);
        let after = tw.substate;
        match (before == TcpState::FinWait2, after == TcpState::FinWait2) {
            (true, false) => self.fin_wait2 -= 1,
            (false, true) => self.fin_wait2 += 1,
            _ => {}
        }
        Some((before, after))
    }

    /// True while no entry is an orphaned FIN_WAIT2.
    pub fn no_fin_wait2(&self) -> bool {
        self.fin_wait2 == 0
    }

    /// The namespace holds as many timewait sockets as the kernel allows
    /// (`tcp_max_tw_buckets`), as far as we know.
    pub fn at_cap(&self, netns: u32) -> bool {
        self.caps
            .get(&netns)
            .is_some_and(|&cap| self.by_netns.get(&netns).copied().unwrap_or(0) >= cap)
    }

    pub fn set_caps(&mut self, caps: impl IntoIterator<Item = (u32, u32)>) {
        self.caps.clear();
        self.caps.extend(caps);
    }

    /// A dump is about to start: remember entries that events end until
    /// [`TimewaitTable::dump_done`].
    pub fn dump_starting(&mut self) {
        self.dump_under_way = true;
    }

    /// An event ended this entry at `ts_ns`. Only a dump under way can have
    /// seen it: with none, a table as large as the timewait one would fill
    /// for nothing.
    pub fn departed(&mut self, tuple: Tuple, ts_ns: u64) {
        if self.dump_under_way {
            self.departed.insert(tuple, ts_ns);
        }
    }

    /// An event ended this tuple's entry after `start_ns`: a dump that
    /// started then must not bring it back.
    pub fn departed_since(&self, tuple: &Tuple, start_ns: u64) -> bool {
        self.departed.get(tuple).is_some_and(|&at| at > start_ns)
    }

    /// A reconciliation starts: the generation its dump's entries are
    /// marked with.
    pub fn next_generation(&mut self) -> u32 {
        self.generation = self.generation.wrapping_add(1);
        self.generation
    }

    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The reconciliation is over: the next dump starts after it, so none
    /// of the departures can matter to it.
    pub fn dump_done(&mut self) {
        self.departed.clear();
        self.dump_under_way = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(netns: u32, port: u16) -> Tuple {
        let remote = format!("10.0.0.2:{port}").parse().unwrap();
        Tuple::new(netns, "10.0.0.1:80".parse().unwrap(), remote)
    }

    fn tw(substate: TcpState) -> TimeWait {
        TimeWait {
            substate,
            entered_ns: 0,
            entered_exact: true,
            expires_ns: 0,
            learned_ns: 0,
            confirmed: false,
            seen: 0,
        }
    }

    #[test]
    fn counts_follow_the_entries() {
        let mut t = TimewaitTable::default();
        t.set_caps([(1, 2)]);
        t.insert(tuple(1, 1000), tw(TcpState::FinWait2));
        assert!(!t.no_fin_wait2());
        assert!(!t.at_cap(1));
        t.insert(tuple(1, 1001), tw(TcpState::TimeWait));
        assert!(t.at_cap(1));
        assert!(!t.at_cap(2), "no cap known");
        let moved = t.update(&tuple(1, 1000), |e| e.substate = TcpState::TimeWait);
        assert_eq!(moved, Some((TcpState::FinWait2, TcpState::TimeWait)));
        assert!(t.no_fin_wait2());
        t.remove(&tuple(1, 1001));
        assert!(!t.at_cap(1));
        assert_eq!(t.len(), 1);
        assert!(t.remove(&tuple(1, 1001)).is_none());
    }

    #[test]
    fn departures_are_kept_only_during_a_dump() {
        let mut t = TimewaitTable::default();
        t.departed(tuple(1, 1), 10);
        assert!(!t.departed_since(&tuple(1, 1), 0));
        t.dump_starting();
        t.departed(tuple(1, 1), 10);
        assert!(t.departed_since(&tuple(1, 1), 5));
        assert!(!t.departed_since(&tuple(1, 1), 10));
        t.dump_done();
        assert!(!t.departed_since(&tuple(1, 1), 5));
    }
}
