//! Who gives way at the connection cap.
//!
//! Refusing the newcomer lets whoever holds the slots keep them: a few
//! hundred clients that each send half a request hold every slot for the
//! whole request timeout, and the scrape that arrives then is refused. So at
//! the cap the newcomer is let in and the connection that has gone longest
//! without completing a request is closed instead: an idle keep-alive
//! connection, a half-sent request, a stalled TLS handshake. A connection
//! whose request is being answered is never closed to make room; only when
//! every one is being answered is the newcomer turned away (answers take
//! milliseconds, so that is a flood of real requests).
//!
//! A connection is not closed to make room within [`GRACE`] of its accept
//! (or of its last answer): when every one is younger, the newcomer waits
//! until the oldest is not (in the kernel's accept queue, the others in
//! turn behind it). However fast a flood opens connections, each new one
//! then has that long to send its request head, a TLS handshake included,
//! and the flood's churn is held to `cap / GRACE` connections a second
//! instead of all the CPU the daemon and the flood can take. A flood cannot
//! keep its connections young by sending a byte now and then: only a
//! complete request counts.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;

/// How long a connection is safe from eviction after its accept or its
/// last answer: a few round trips on a LAN, and a TLS handshake on a busy
/// machine. Longer helps distant clients; it also makes a newcomer wait
/// longer behind a flood, up to `flood / cap` times it.
pub const GRACE: Duration = Duration::from_millis(100);

/// What [`Slots::evict_longest_waiting`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// A connection was told to close.
    Evicted,
    /// Every waiting connection is within its grace; the oldest leaves it
    /// after this long.
    NotBefore(Duration),
    /// Every connection is answering a request.
    AllAnswering,
}

/// `waiting_since` while a request is being answered.
const ANSWERING: u64 = u64::MAX;
/// `waiting_since` once chosen to make room.
const EVICTED: u64 = u64::MAX - 1;

/// The open connections, for choosing one to close at the cap.
pub struct Slots {
    epoch: Instant,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    next_id: u64,
    by_id: HashMap<u64, Arc<Slot>>,
}

/// One open connection's progress.
pub struct Slot {
    id: u64,
    /// Nanoseconds after the epoch since which the connection has been
    /// waiting for a complete request (its accept, or the end of its last
    /// answer); or [`ANSWERING`], or [`EVICTED`].
    waiting_since: AtomicU64,
    epoch: Instant,
    evict: CancellationToken,
}

impl Slots {
    pub fn new() -> Arc<Slots> {
        Arc::new(Slots {
            epoch: Instant::now(),
            open: Mutex::new(Open::default()),
        })
    }

    /// Registers a new connection, waiting for its first request from now.
    pub fn open(self: &Arc<Self>) -> SlotGuard {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let id = open.next_id;
        open.next_id += 1;
        let slot = Arc::new(Slot {
            id,
            waiting_since: AtomicU64::new(nanos_since(self.epoch)),
            epoch: self.epoch,
            evict: CancellationToken::new(),
        });
        open.by_id.insert(id, slot.clone());
        SlotGuard {
            slots: self.clone(),
            slot,
        }
    }

    /// Marks the connection that has waited longest for a complete request
    /// as evicted and tells it to close, if it has waited at least `grace`.
    pub fn evict_longest_waiting(&self, grace: Duration) -> Eviction {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let now = nanos_since(self.epoch);
        let grace = grace.as_nanos() as u64;
        // A connection may start answering between the scan and the swap;
        // then the next one is tried. Each try removes one candidate.
        let mut passed = Vec::new();
        loop {
            let oldest = open
                .by_id
                .values()
                .filter(|s| !passed.contains(&s.id))
                .map(|s| (s.waiting_since.load(Ordering::Acquire), s))
                .filter(|(since, _)| *since < EVICTED)
                .min_by_key(|(since, _)| *since);
            let Some((since, slot)) = oldest else {
                return Eviction::AllAnswering;
            };
            let age = now.saturating_sub(since);
            if age < grace {
                return Eviction::NotBefore(Duration::from_nanos(grace - age));
            }
            if slot
                .waiting_since
                .compare_exchange(since, EVICTED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                slot.evict.cancel();
                return Eviction::Evicted;
            }
            passed.push(slot.id);
        }
    }

    /// Open connections (evicted ones included until they are closed).
    pub fn len(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_id
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Slot {
    /// A complete request head arrived: the connection is not to be closed
    /// to make room until it is answered. False if it was evicted already.
    pub fn answering(&self) -> bool {
        let mut current = self.waiting_since.load(Ordering::Acquire);
        loop {
            if current == EVICTED {
                return false;
            }
            match self.waiting_since.compare_exchange(
                current,
                ANSWERING,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => current = now,
            }
        }
    }

    /// The answer is written: waiting for the next request from now.
    pub fn answered(&self) {
        let now = nanos_since(self.epoch);
        let _ = self
            .waiting_since
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                (v != EVICTED).then_some(now)
            });
    }

    pub fn is_evicted(&self) -> bool {
        self.waiting_since.load(Ordering::Acquire) == EVICTED
    }

    /// Completes when the connection is chosen to make room.
    pub async fn evicted(&self) {
        self.evict.cancelled().await;
    }
}

/// A connection's place in [`Slots`], given up on drop.
pub struct SlotGuard {
    slots: Arc<Slots>,
    slot: Arc<Slot>,
}

impl SlotGuard {
    pub fn slot(&self) -> &Arc<Slot> {
        &self.slot
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.slots
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_id
            .remove(&self.slot.id);
    }
}

fn nanos_since(epoch: Instant) -> u64 {
    // 584 years of nanoseconds fit; the two top values are markers.
    (epoch.elapsed().as_nanos() as u64).min(EVICTED - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Duration = Duration::ZERO;

    #[test]
    fn the_longest_waiting_connection_is_evicted_and_answering_ones_are_not() {
        let slots = Slots::new();
        let first = slots.open();
        std::thread::sleep(Duration::from_millis(2));
        let second = slots.open();
        std::thread::sleep(Duration::from_millis(2));
        let third = slots.open();
        // The oldest is being answered: the next oldest goes.
        assert!(first.slot().answering());
        assert_eq!(slots.evict_longest_waiting(NOW), Eviction::Evicted);
        assert!(!first.slot().is_evicted());
        assert!(second.slot().is_evicted());
        assert!(!second.slot().answering(), "an evicted one stays evicted");
        // Once answered, the first waits from now: younger than the third.
        first.slot().answered();
        assert_eq!(slots.evict_longest_waiting(NOW), Eviction::Evicted);
        assert!(third.slot().is_evicted());
        assert_eq!(slots.evict_longest_waiting(NOW), Eviction::Evicted);
        assert!(first.slot().is_evicted());
        // Nothing left to evict; an evicted slot leaves when dropped.
        assert_eq!(slots.evict_longest_waiting(NOW), Eviction::AllAnswering);
        assert_eq!(slots.len(), 3);
        drop((first, second, third));
        assert!(slots.is_empty());
    }

    #[test]
    fn nothing_is_evicted_while_everyone_is_answering() {
        let slots = Slots::new();
        let a = slots.open();
        let b = slots.open();
        assert!(a.slot().answering() && b.slot().answering());
        assert_eq!(slots.evict_longest_waiting(NOW), Eviction::AllAnswering);
        b.slot().answered();
        assert_eq!(slots.evict_longest_waiting(NOW), Eviction::Evicted);
        assert!(b.slot().is_evicted() && !a.slot().is_evicted());
    }

    #[test]
    fn a_young_connection_is_left_alone_until_its_grace_is_over() {
        let slots = Slots::new();
        let a = slots.open();
        let grace = Duration::from_secs(60);
        let Eviction::NotBefore(wait) = slots.evict_longest_waiting(grace) else {
            panic!("evicted within the grace");
        };
        assert!(wait <= grace && wait > Duration::from_secs(59), "{wait:?}");
        assert!(!a.slot().is_evicted());
        // Answering and answered: the grace starts again.
        std::thread::sleep(Duration::from_millis(20));
        assert!(a.slot().answering());
        a.slot().answered();
        let Eviction::NotBefore(wait) = slots.evict_longest_waiting(grace) else {
            panic!("evicted within the grace");
        };
        assert!(
            wait > Duration::from_secs(59),
            "the grace did not start again: {wait:?}"
        );
    }

    #[tokio::test]
    async fn eviction_wakes_the_connection() {
        let slots = Slots::new();
        let a = slots.open();
        let slot = a.slot().clone();
        let waiter = tokio::spawn(async move { slot.evicted().await });
        assert_eq!(slots.evict_longest_waiting(NOW), Eviction::Evicted);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("task");
    }
}
