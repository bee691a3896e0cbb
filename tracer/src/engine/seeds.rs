//! The start-up seeds by four-tuple, for the first event of each seeded
//! socket to find its record.
//!
//! The tuple already lives in the socket's record, so the index keeps only
//! (hash, id): 16 bytes an entry instead of 56 for a map from tuple to id.
//! With a million sockets seeded that is the difference between meeting
//! the memory target and not.

use std::{collections::HashSet, hash::BuildHasher as _};

use hashbrown::HashTable;
use tracer_common::TcpState;

use super::{HashMap, Sock, Tuple};

#[derive(Debug, Default)]
pub struct SeedIndex {
    table: HashTable<(u64, u64)>,
    hasher: foldhash::fast::RandomState,
}

impl SeedIndex {
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    pub fn reserve(&mut self, additional: usize) {
        self.table.reserve(additional, |&(hash, _)| hash);
    }

    /// Whether entry `id` (with `hash`) is the seed for `tuple`. An entry
    /// whose socket is gone matches on the hash alone, so that looking its
    /// tuple up removes it, as a map keyed by tuple would.
    fn matches(
        socks: &HashMap<u64, Sock>,
        tuple: &Tuple,
        hash: u64,
    ) -> impl Fn(&(u64, u64)) -> bool {
        move |&(h, id)| h == hash && socks.get(&id).is_none_or(|s| s.tuple == *tuple)
    }

    /// Records `id` as the seed for `tuple`; returns the id it replaces.
    pub fn insert(&mut self, tuple: &Tuple, id: u64, socks: &HashMap<u64, Sock>) -> Option<u64> {
        let hash = self.hasher.hash_one(tuple);
        match self.table.find_mut(hash, Self::matches(socks, tuple, hash)) {
            Some(entry) => Some(std::mem::replace(&mut entry.1, id)),
            None => {
                self.table.insert_unique(hash, (hash, id), |&(h, _)| h);
                None
            }
        }
    }

    /// Whether a seed for `tuple` is in the index.
    pub fn contains(&self, tuple: &Tuple, socks: &HashMap<u64, Sock>) -> bool {
        let hash = self.hasher.hash_one(tuple);
        self.table
            .find(hash, Self::matches(socks, tuple, hash))
            .is_some()
    }

    /// Takes the seed for `tuple` out of the index.
    pub fn remove(&mut self, tuple: &Tuple, socks: &HashMap<u64, Sock>) -> Option<u64> {
        let hash = self.hasher.hash_one(tuple);
        let entry = self
            .table
            .find_entry(hash, Self::matches(socks, tuple, hash))
            .ok()?;
        Some(entry.remove().0.1)
    }

    /// Removes the entry for `tuple` if it names `id` (a seed whose record
    /// is being dropped).
    pub fn remove_id(&mut self, tuple: &Tuple, id: u64) {
        let hash = self.hasher.hash_one(tuple);
        if let Ok(entry) = self
            .table
            .find_entry(hash, |&(h, entry_id)| h == hash && entry_id == id)
        {
            entry.remove();
        }
    }
}

/// Synthetic ids for sockets known only from a dump stay below this; kernel
/// addresses on 64-bit Linux are far above it.
const SEED_ID_LIMIT: u64 = 1 << 47;

/// What the engine keeps of the start-up dump (and of reconciliations,
/// which seed what they find): the records no event has named yet, by
/// tuple, and which sockets had events before the dump ended.
#[derive(Debug)]
pub struct Seeds {
    index: SeedIndex,
    /// Further seeds sharing a tuple (SO_REUSEPORT listeners).
    dups: HashMap<Tuple, Vec<u64>>,
    next_id: u64,
    /// End of the start-up dump: events before it may describe what the
    /// dump already saw.
    end_ns: u64,
    /// Sockets seen in events from before the seed dump ended: the dump may
    /// hold a record of them too, which their next event must drop. Other
    /// known sockets skip the seed lookup.
    early: HashSet<u64, foldhash::fast::RandomState>,
    /// SYN_SENT seeds by [`Tuple::before_its_port`]: a connect's first
    /// event does not carry the port the dump shows. Entries whose seed
    /// was claimed otherwise are dropped when met.
    connecting: HashMap<Tuple, Vec<u64>>,
}

impl Default for Seeds {
    fn default() -> Seeds {
        Seeds {
            index: SeedIndex::default(),
            dups: HashMap::default(),
            next_id: 1,
            end_ns: 0,
            early: HashSet::default(),
            connecting: HashMap::default(),
        }
    }
}

impl Seeds {
    pub fn reserve(&mut self, additional: usize) {
        self.index.reserve(additional);
    }

    /// When the dump the seeds came from ended.
    pub fn end_ns(&self) -> u64 {
        self.end_ns
    }

    pub fn set_end_ns(&mut self, end_ns: u64) {
        self.end_ns = end_ns;
    }

    /// Forgets the SYN_SENT index: past the dump's end no event can be
    /// a seed's creation.
    pub fn forget_connecting(&mut self) {
        self.connecting = HashMap::default();
    }

    /// A fresh synthetic id for a record known only from a dump.
    pub fn new_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id = (self.next_id + 1) % SEED_ID_LIMIT;
        id
    }

    /// Records `id` (already in `socks`) as a seed for `tuple`.
    pub fn insert(&mut self, tuple: Tuple, id: u64, socks: &HashMap<u64, Sock>) {
        if let Some(first) = self.index.insert(&tuple, id, socks) {
            self.dups.entry(tuple).or_default().push(first);
        }
    }

    /// Notes seed `id` (of `tuple`) as a socket in SYN_SENT.
    pub fn insert_connecting(&mut self, tuple: &Tuple, id: u64) {
        self.connecting
            .entry(tuple.before_its_port())
            .or_default()
            .push(id);
    }

    /// Takes out a SYN_SENT seed that may be the socket whose
    /// `CLOSE -> SYN_SENT` at `ts_ns` said `portless`: same addresses and
    /// remote port, read by the dump after that event.
    pub fn take_connecting(
        &mut self,
        portless: &Tuple,
        ts_ns: u64,
        socks: &HashMap<u64, Sock>,
    ) -> Option<u64> {
        let ids = self.connecting.get_mut(portless)?;
        let still_a_seed = |id: &u64| {
            socks.get(id).is_some_and(|s| {
                s.from_dump
                    && s.state == TcpState::SynSent
                    && s.tuple.before_its_port() == *portless
            })
        };
        ids.retain(still_a_seed);
        let at = ids
            .iter()
            .position(|id| socks.get(id).is_some_and(|s| s.since_ns >= ts_ns));
        let id = at.map(|i| ids.swap_remove(i));
        if ids.is_empty() {
            self.connecting.remove(portless);
        }
        let id = id?;
        let tuple = socks.get(&id)?.tuple;
        self.index.remove_id(&tuple, id);
        Some(id)
    }

    /// Takes a seed for `tuple` out: the id of its record.
    pub fn take(&mut self, tuple: &Tuple, socks: &HashMap<u64, Sock>) -> Option<u64> {
        let id = match self.dups.get_mut(tuple).and_then(Vec::pop) {
            Some(id) => id,
            None => self.index.remove(tuple, socks)?,
        };
        if self.dups.get(tuple).is_some_and(Vec::is_empty) {
            self.dups.remove(tuple);
        }
        Some(id)
    }

    pub fn contains(&self, tuple: &Tuple, socks: &HashMap<u64, Sock>) -> bool {
        self.index.contains(tuple, socks)
    }

    /// Forgets seed `id` of `tuple` (its record is being dropped).
    pub fn remove_id(&mut self, tuple: &Tuple, id: u64) {
        self.index.remove_id(tuple, id);
    }

    /// Whether an event of socket `skaddr` at `ts_ns` should look for the
    /// socket's seed; `known` says whether the socket has a record from
    /// events. Remembers the sockets whose events came before the dump
    /// ended.
    pub fn should_claim(&mut self, skaddr: u64, ts_ns: u64, known: bool) -> bool {
        let before_end = ts_ns <= self.end_ns;
        let claim = if self.index.is_empty() {
            false
        } else if !known {
            true
        } else if self.early.is_empty() {
            false
        } else if before_end {
            self.early.contains(&skaddr)
        } else {
            // Its first event since the dump: the last chance for a duplicate.
            self.early.remove(&skaddr)
        };
        if before_end {
            self.early.insert(skaddr);
        }
        claim
    }

    /// The event may concern what the dump saw: it came before the dump
    /// ended, or its socket had events then and has not been matched since.
    pub fn may_overlap(&self, skaddr: u64, ts_ns: u64) -> bool {
        ts_ns <= self.end_ns || (!self.early.is_empty() && self.early.contains(&skaddr))
    }
}
