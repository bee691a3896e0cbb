//! When the daemon dumps the kernel's socket tables to check its own.
//!
//! Timewait sockets come and go without every change showing as an event,
//! so a dump of the timewait ones runs often, paced by its own cost and
//! backing off while it finds nothing to fix. A full dump (every state)
//! replaces it after the kernel lost events, and now and then regardless.

use std::time::{Duration, Instant};

/// A full reconciliation at least this often, lost events or not.
pub const FULL_RECONCILE_EVERY: Duration = Duration::from_secs(300);

/// Timewait dumps may take at most 1/this of one core: after a dump that
/// took `d`, the next waits at least `d` times this. A dump is cheap for a
/// few thousand timewait sockets (every tick) and costs tens of
/// milliseconds for the 131,072 a busy server keeps (then every few
/// seconds); in between, entries leave at their timer.
const TIMEWAIT_DUMP_DUTY: u32 = 100;

/// Dumps that find the table right come less often: each one that fixes
/// nothing doubles the wait, up to this many times the paced one, and the
/// first that fixes something brings it back. Under steady churn the
/// events get every timewait socket right, and the dumps are insurance.
const TIMEWAIT_DUMP_BACKOFF: u32 = 8;

/// The backoff stretches the wait to at most this (a slow dump's own pace
/// may be longer): a timewait socket the events could not show, and a new
/// namespace's cap, are found within it.
const TIMEWAIT_DUMP_QUIET_MOST: Duration = Duration::from_secs(10);

/// Which dump to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpKind {
    /// Timewait sockets only (and orphaned FIN_WAIT2 ones).
    Timewait,
    /// Every state: the whole table is checked.
    Full,
}

/// The dump schedule's state; time is passed in, so tests choose it.
#[derive(Debug)]
pub struct DumpSchedule {
    /// The kernel's lost-event count when the last full dump started.
    lost_at_last_full: u64,
    last_full: Instant,
    /// When the last dump started, and what it cost with its reconciliation.
    last_dump: Instant,
    last_dump_cost: Duration,
    backoff: u32,
    /// The dump under way, if any.
    running: Option<DumpKind>,
    /// The next dump is a full one, whatever the pace.
    full_requested: bool,
}

impl DumpSchedule {
    /// After the start-up dump, which took `seed_cost`: it paces the first
    /// timewait dump, and counts as the first full one.
    pub fn new(now: Instant, seed_cost: Duration) -> DumpSchedule {
        DumpSchedule {
            lost_at_last_full: 0,
            last_full: now,
            last_dump: now,
            last_dump_cost: seed_cost,
            backoff: 1,
            running: None,
            full_requested: false,
        }
    }

    /// At a tick: the dump to start now, if any (none while one runs).
    /// `lost` is the kernel's count of events lost so far.
    pub fn due(&mut self, now: Instant, lost: u64) -> Option<DumpKind> {
        if self.running.is_some() {
            return None;
        }
        let needs_full = lost > self.lost_at_last_full
            || self.full_requested
            || now.duration_since(self.last_full) >= FULL_RECONCILE_EVERY;
        let paced = now.duration_since(self.last_dump) >= self.timewait_wait();
        let kind = if needs_full {
            self.full_requested = false;
            self.lost_at_last_full = lost;
            self.last_full = now;
            DumpKind::Full
        } else if paced {
            DumpKind::Timewait
        } else {
            return None;
        };
        self.last_dump = now;
        self.running = Some(kind);
        Some(kind)
    }

    /// Asks for a full dump at the next tick (one that found sockets the
    /// table cannot have: a namespace seen for the first time).
    pub fn request_full(&mut self) {
        self.full_requested = true;
    }

    /// The dump under way, if any.
    pub fn running(&self) -> Option<DumpKind> {
        self.running
    }

    /// The dump ended at `now`; `refused` is time it spent waiting for
    /// sock_diag refusals rather than working, `fixed` whether its
    /// reconciliation changed the table.
    pub fn finished(&mut self, now: Instant, refused: Duration, fixed: bool) {
        self.running = None;
        self.last_dump_cost = now.duration_since(self.last_dump).saturating_sub(refused);
        self.backoff = if fixed {
            1
        } else {
            (self.backoff * 2).min(TIMEWAIT_DUMP_BACKOFF)
        };
    }

    /// How long after the last dump the next timewait dump may start.
    fn timewait_wait(&self) -> Duration {
        let paced = self.last_dump_cost * TIMEWAIT_DUMP_DUTY;
        paced.max((paced * self.backoff).min(TIMEWAIT_DUMP_QUIET_MOST))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A schedule whose last dump cost `cost` and found nothing `quiet`
    /// times in a row.
    fn after(cost: Duration, quiet: u32) -> (DumpSchedule, Instant) {
        let t0 = Instant::now();
        let mut s = DumpSchedule::new(t0, cost);
        let mut now = t0;
        for _ in 0..quiet {
            now += Duration::from_secs(25);
            assert_eq!(s.due(now, 0), Some(DumpKind::Timewait));
            s.finished(now + cost, Duration::ZERO, false);
        }
        (s, now + cost)
    }

    #[test]
    fn timewait_dumps_back_off_within_bounds() {
        // 1 % of a core, then up to 8 times less, but not past 10 s...
        assert_eq!(after(ms(5), 0).0.timewait_wait(), ms(500));
        assert_eq!(after(ms(5), 3).0.timewait_wait(), ms(4_000));
        assert_eq!(after(ms(5), 10).0.timewait_wait(), ms(4_000));
        assert_eq!(after(ms(25), 3).0.timewait_wait(), ms(10_000));
        // ...unless the dump alone asks for more.
        assert_eq!(after(ms(200), 3).0.timewait_wait(), ms(20_000));
    }

    #[test]
    fn a_dump_that_fixes_something_ends_the_backoff() {
        let (mut s, now) = after(ms(5), 3);
        let later = now + Duration::from_secs(5);
        assert_eq!(s.due(later, 0), Some(DumpKind::Timewait));
        s.finished(later + ms(5), Duration::ZERO, true);
        assert_eq!(s.timewait_wait(), ms(500));
    }

    #[test]
    fn ticks_before_the_wait_start_nothing() {
        let t0 = Instant::now();
        let mut s = DumpSchedule::new(t0, ms(5));
        assert_eq!(s.due(t0 + ms(499), 0), None);
        assert_eq!(s.due(t0 + ms(500), 0), Some(DumpKind::Timewait));
        // One at a time.
        assert_eq!(s.due(t0 + ms(5_000), 0), None);
        assert_eq!(s.running(), Some(DumpKind::Timewait));
        s.finished(t0 + ms(505), Duration::ZERO, false);
        assert_eq!(s.running(), None);
    }

    #[test]
    fn lost_events_and_time_bring_a_full_dump() {
        let t0 = Instant::now();
        let mut s = DumpSchedule::new(t0, ms(5));
        assert_eq!(s.due(t0 + ms(600), 3), Some(DumpKind::Full));
        s.finished(t0 + ms(605), Duration::ZERO, true);
        // The same loss count does not ask again.
        assert_eq!(s.due(t0 + ms(2_000), 3), Some(DumpKind::Timewait));
        s.finished(t0 + ms(2_005), Duration::ZERO, false);
        let much_later = t0 + ms(600) + FULL_RECONCILE_EVERY;
        assert_eq!(s.due(much_later, 3), Some(DumpKind::Full));
    }

    #[test]
    fn a_requested_full_dump_comes_at_the_next_tick() {
        let t0 = Instant::now();
        let mut s = DumpSchedule::new(t0, ms(5));
        s.request_full();
        assert_eq!(s.due(t0 + ms(1), 0), Some(DumpKind::Full));
        s.finished(t0 + ms(10), Duration::ZERO, false);
        assert_eq!(s.due(t0 + ms(11), 0), None, "once");
    }

    #[test]
    fn time_spent_on_refusals_is_not_cost() {
        let t0 = Instant::now();
        let mut s = DumpSchedule::new(t0, ms(5));
        assert_eq!(s.due(t0 + ms(500), 0), Some(DumpKind::Timewait));
        s.finished(t0 + ms(600), ms(95), true);
        assert_eq!(s.timewait_wait(), ms(500));
    }
}
