//! The start-up seeds by four-tuple, for the first event of each seeded
//! socket to find its record.
//!
//! The tuple already lives in the socket's record, so the index keeps only
//! (hash, id): 16 bytes an entry instead of 56 for a map from tuple to id.
//! With a million sockets seeded that is the difference between meeting
//! the memory target and not.

use std::hash::BuildHasher as _;

use hashbrown::HashTable;

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
