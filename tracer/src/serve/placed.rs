//! Counters read from the kernel by a key with unbounded values (a remote
//! end, a listener), exported under a bounded set of label values: the
//! `limit` keys most active since the last ranking (once a minute) have
//! series of their own, the rest add up in `[other]`. No counter goes
//! down: a key that takes a place from `[other]` counts from what it had
//! there (that stays in `[other]`, as a baseline), a key first seen takes
//! a free place with all it has, and one that leaves gives its count to
//! `[other]`. (The kernel's map is an LRU: a key it forgets takes its count
//! along.)

use std::{collections::HashMap, hash::Hash, net::SocketAddr, time::Instant};

/// One family's exported counts by (netns, end): those placed, then
/// `[other]`'s; None where the kernel lacks the tracepoint.
pub type Exported = Option<(Vec<((u32, SocketAddr), u64)>, u64)>;

/// How often the places are given again.
const RANK_EVERY_SECS: u64 = 60;

#[derive(Debug)]
pub struct Placed<K> {
    /// Placed keys and their count when they took the place.
    places: HashMap<K, u64>,
    /// Every key's count at the last ranking.
    at_rank: HashMap<K, u64>,
    /// Every key's count at the last export: what `[other]` showed of it.
    exported: HashMap<K, u64>,
    ranked: Option<Instant>,
}

impl<K> Default for Placed<K> {
    fn default() -> Self {
        Placed {
            places: HashMap::new(),
            at_rank: HashMap::new(),
            exported: HashMap::new(),
            ranked: None,
        }
    }
}

impl<K: Hash + Eq + Clone + Ord> Placed<K> {
    /// The placed keys with their counts since they took the place, and
    /// `[other]`'s count, from the kernel's `totals` now.
    pub fn export(
        &mut self,
        now: Instant,
        limit: usize,
        totals: &[(K, u64)],
    ) -> (Vec<(K, u64)>, u64) {
        let due = self
            .ranked
            .is_none_or(|t| now.duration_since(t).as_secs() >= RANK_EVERY_SECS);
        if due || self.places.len() > limit {
            self.rank(now, limit, totals);
        }
        // Keys first seen take the places left, with all they have.
        for (key, _) in totals {
            if self.places.len() >= limit {
                break;
            }
            if !self.places.contains_key(key) && !self.exported.contains_key(key) {
                self.places.insert(key.clone(), 0);
            }
        }
        let mut placed = Vec::new();
        let mut other = 0u64;
        for (key, total) in totals {
            match self.places.get(key) {
                Some(&base) => {
                    placed.push((key.clone(), total.saturating_sub(base)));
                    other += base.min(*total);
                }
                None => other += total,
            }
        }
        placed.sort();
        self.exported = totals.iter().cloned().collect();
        (placed, other)
    }

    fn rank(&mut self, now: Instant, limit: usize, totals: &[(K, u64)]) {
        let mut active: Vec<(u64, &K, u64)> = totals
            .iter()
            .map(|(k, n)| {
                (
                    n.saturating_sub(self.at_rank.get(k).copied().unwrap_or(0)),
                    k,
                    *n,
                )
            })
            .collect();
        // Busiest first; ties keep the places they have, then by key.
        active.sort_by(|a, b| {
            b.0.cmp(&a.0)
                .then(
                    self.places
                        .contains_key(b.1)
                        .cmp(&self.places.contains_key(a.1)),
                )
                .then(a.1.cmp(b.1))
        });
        let chosen: Vec<(K, u64)> = active
            .into_iter()
            .filter(|(busy, _, _)| *busy > 0)
            .take(limit)
            .map(|(_, k, n)| (k.clone(), n))
            .collect();
        let mut places = HashMap::new();
        for (key, total) in chosen {
            // Placed, it keeps its baseline; from `[other]`, what it had
            // there; first seen, nothing.
            let base = match self.places.get(&key) {
                Some(&base) => base,
                None => self.exported.get(&key).copied().unwrap_or(0).min(total),
            };
            places.insert(key, base);
        }
        self.places = places;
        self.at_rank = totals.iter().cloned().collect();
        self.ranked = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn keys_take_places_with_what_they_have_and_nothing_goes_down() {
        let start = Instant::now();
        let mut p: Placed<u32> = Placed::default();
        // First seen: 1 and 2 take the two places with all they have.
        let (placed, other) = p.export(start, 2, &[(1, 5), (2, 9), (3, 1)]);
        assert_eq!((placed, other), (vec![(1, 5), (2, 9)], 1));
        let (placed, other) = p.export(start, 2, &[(1, 6), (2, 12), (3, 50), (4, 2)]);
        assert_eq!((placed, other), (vec![(1, 6), (2, 12)], 52));
        // A minute on, 3 was busier than 1: it takes 1's place, counting
        // from the 50 [other] showed of it.
        let later = start + Duration::from_secs(61);
        let (placed, other) = p.export(later, 2, &[(1, 6), (2, 20), (3, 80), (4, 2)]);
        assert_eq!(placed, [(2, 20), (3, 30)]);
        assert_eq!(other, 6 + 50 + 2, "1 whole, 3's baseline, 4");
    }
}
