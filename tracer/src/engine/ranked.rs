//! Counters by a key with unbounded values (a destination, a listener),
//! kept to a bounded set of label values: the `limit` keys most active
//! lately have series of their own, every other key counts in `[other]`.
//! Counters never go down: a key that loses its place leaves its counts to
//! `[other]`, and one that takes a place starts from zero (what it did
//! before is already in `[other]`). Places change at most once a minute,
//! so series do not flap.

use std::hash::Hash;

use super::HashMap;

/// How often the places are given again.
const RERANK_EVERY_NS: u64 = 60_000_000_000;
/// Keys without a place whose activity is tracked, per place.
const WAITING_PER_PLACE: usize = 4;

/// Values that add up: what `[other]` takes from a key leaving its place.
pub trait Merge: Default + Clone {
    fn merge(&mut self, other: &Self);
}

/// Counter arrays of the sizes in use (`Default` exists for arrays of up
/// to 32 elements only, so not generically).
macro_rules! merge_arrays {
    ($($n:literal),*) => {$(
        impl Merge for [u64; $n] {
            fn merge(&mut self, other: &Self) {
                for (a, b) in self.iter_mut().zip(other) {
                    *a += b;
                }
            }
        }
    )*};
}
merge_arrays!(1, 5);

#[derive(Debug, Clone)]
struct Place<V> {
    value: V,
    /// Events since the last ranking.
    recent: u64,
}

#[derive(Debug, Clone)]
pub struct Ranked<K, V> {
    limit: usize,
    places: HashMap<K, Place<V>>,
    other: V,
    /// Keys without a place: their events since the last ranking.
    waiting: HashMap<K, u64>,
    ranked_ns: u64,
}

impl<K: Hash + Eq + Clone, V: Merge> Ranked<K, V> {
    pub fn new(limit: usize) -> Ranked<K, V> {
        Ranked {
            limit,
            places: HashMap::default(),
            other: V::default(),
            waiting: HashMap::default(),
            ranked_ns: 0,
        }
    }

    /// Counts one event of `key` at `now_ns` through `count`.
    pub fn record(&mut self, key: &K, now_ns: u64, count: impl FnOnce(&mut V)) {
        if now_ns >= self.ranked_ns.saturating_add(RERANK_EVERY_NS) {
            self.rank(now_ns);
        }
        if let Some(place) = self.places.get_mut(key) {
            count(&mut place.value);
            place.recent += 1;
        } else if self.places.len() < self.limit {
            let mut value = V::default();
            count(&mut value);
            self.places.insert(key.clone(), Place { value, recent: 1 });
        } else {
            count(&mut self.other);
            let room = self.waiting.len() < self.limit * WAITING_PER_PLACE;
            if let Some(n) = self.waiting.get_mut(key) {
                *n += 1;
            } else if room {
                self.waiting.insert(key.clone(), 1);
            }
        }
    }

    /// Gives the places again: a waiting key busier than a placed one
    /// since the last ranking takes its place.
    fn rank(&mut self, now_ns: u64) {
        self.ranked_ns = now_ns;
        let mut waiting: Vec<(K, u64)> = self.waiting.drain().collect();
        waiting.sort_by_key(|w| std::cmp::Reverse(w.1));
        let mut placed: Vec<(K, u64)> = self
            .places
            .iter()
            .map(|(k, p)| (k.clone(), p.recent))
            .collect();
        // Least active last, so `pop` gives the weakest.
        placed.sort_by_key(|p| std::cmp::Reverse(p.1));
        for (key, busy) in waiting {
            match placed.last() {
                Some((_, weakest)) if busy > *weakest => {}
                _ => break,
            }
            if let Some((leaving, _)) = placed.pop()
                && let Some(place) = self.places.remove(&leaving)
            {
                self.other.merge(&place.value);
            }
            self.places.insert(
                key,
                Place {
                    value: V::default(),
                    recent: 0,
                },
            );
        }
        for place in self.places.values_mut() {
            place.recent = 0;
        }
    }

    /// The placed keys and their values, then `[other]`'s.
    pub fn values(&self) -> (Vec<(K, V)>, V) {
        let placed = self
            .places
            .iter()
            .map(|(k, p)| (k.clone(), p.value.clone()))
            .collect();
        (placed, self.other.clone())
    }

    /// Changes how many keys have a place; the next ranking applies it.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
        while self.places.len() > self.limit {
            let Some(weakest) = self
                .places
                .iter()
                .min_by_key(|(_, p)| p.recent)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(place) = self.places.remove(&weakest) {
                self.other.merge(&place.value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000_000_000;

    fn total(r: &Ranked<u32, [u64; 1]>) -> u64 {
        let (placed, other) = r.values();
        placed.iter().map(|(_, v)| v[0]).sum::<u64>() + other[0]
    }

    #[test]
    fn the_first_keys_take_the_places_and_the_rest_count_in_other() {
        let mut r: Ranked<u32, [u64; 1]> = Ranked::new(2);
        for key in [1, 2, 3, 3, 1] {
            r.record(&key, 1, |v| v[0] += 1);
        }
        let (mut placed, other) = r.values();
        placed.sort();
        assert_eq!(placed, [(1, [2]), (2, [1])]);
        assert_eq!(other, [2]);
    }

    #[test]
    fn a_busier_key_takes_a_place_a_minute_later_and_nothing_is_lost() {
        let mut r: Ranked<u32, [u64; 1]> = Ranked::new(2);
        r.record(&1, 1, |v| v[0] += 1);
        r.record(&2, 1, |v| v[0] += 1);
        for _ in 0..5 {
            r.record(&3, 2, |v| v[0] += 1);
        }
        r.record(&1, 3, |v| v[0] += 1);
        assert_eq!(total(&r), 8);
        // The ranking: 3 (5 events) is busier than 2 (1 event).
        r.record(&3, MIN + 10, |v| v[0] += 1);
        let (mut placed, other) = r.values();
        placed.sort();
        assert_eq!(placed, [(1, [2]), (3, [1])]);
        assert_eq!(other, [6], "2's count and 3's count before its place");
        assert_eq!(total(&r), 9);
    }

    #[test]
    fn a_smaller_limit_moves_the_weakest_into_other() {
        let mut r: Ranked<u32, [u64; 1]> = Ranked::new(3);
        for key in [1, 1, 2, 3, 3, 3] {
            r.record(&key, 1, |v| v[0] += 1);
        }
        r.set_limit(2);
        let (placed, other) = r.values();
        assert_eq!(placed.len(), 2);
        assert_eq!(other, [1]);
        assert_eq!(total(&r), 6);
    }
}
