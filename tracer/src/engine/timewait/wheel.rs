//! When the kernel really ends a timewait socket. Its timer asks for 60 s,
//! but the kernel's timer wheel files a timer of that length in a bucket
//! of 512 ticks (HZ 100 to 300) or 4,096 (HZ 1000) and runs it at the
//! bucket's end, up to that much later (`calc_index()` in
//! `kernel/time/timer.c`, the same since Linux 4.8). With the kernel's
//! jiffies known, the engine knows the tick; without, it allows the worst
//! case.

use crate::kernel::clock::Jiffies;

use super::super::TIME_WAIT_LEN_NS;

/// Ticks per wheel level step (`LVL_CLK_SHIFT`) and slots per level
/// (`LVL_BITS`).
const LVL_CLK_SHIFT: u32 = 3;
const LVL_BITS: u32 = 6;

/// How the engine dates a timewait socket's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerWheel {
    /// The kernel's jiffies are known: the bucket's end, exactly.
    Known(Jiffies),
    /// They are not: this long after the requested expiry, the worst case
    /// (a few seconds; 0 in the engine's tests).
    Slack(u64),
}

impl Default for TimerWheel {
    fn default() -> Self {
        TimerWheel::Slack(0)
    }
}

/// The wheel level of a timer `delta` ticks out (`calc_wheel_index()`).
fn level(delta: u64) -> u32 {
    let start = |n: u32| ((1u64 << LVL_BITS) - 1) << ((n - 1) * LVL_CLK_SHIFT);
    (1..8).find(|&n| delta < start(n)).map_or(8, |n| n - 1)
}

impl TimerWheel {
    /// `jiffies` ticks in nanoseconds, when the kernel's HZ is known.
    pub fn jiffies_ns(&self, jiffies: u64) -> Option<u64> {
        match *self {
            TimerWheel::Known(j) => Some(jiffies.saturating_mul(1_000_000_000) / j.hz.max(1)),
            TimerWheel::Slack(_) => None,
        }
    }

    /// When a timewait timer that asked for `expires_ns` (CLOCK_MONOTONIC)
    /// runs.
    pub fn fires_ns(&self, expires_ns: u64) -> u64 {
        match *self {
            TimerWheel::Slack(slack) => expires_ns.saturating_add(slack),
            TimerWheel::Known(j) => {
                let delta = TIME_WAIT_LEN_NS * j.hz / 1_000_000_000;
                let shift = level(delta) * LVL_CLK_SHIFT;
                let expires = j.at(expires_ns);
                let bucket = ((expires >> shift) + 1) << shift;
                j.ns(bucket)
            }
        }
    }
}

impl TimerWheel {
    /// The latest requested expiry whose timer has run before `now_ns`:
    /// `fires_ns(e) < now_ns` exactly for `e <= cutoff`. A timer runs
    /// after it asked to (never before), so every such `e` is below
    /// `now_ns`, and `fires_ns` never decreases: a search over the last
    /// seconds finds the bound, once per sweep instead of once per entry.
    pub fn fired_cutoff(&self, now_ns: u64) -> Option<u64> {
        let (mut lo, mut hi) = match *self {
            TimerWheel::Slack(slack) => return (now_ns.checked_sub(slack)?).checked_sub(1),
            // The worst delay (a bucket, plus a tick) is under 10 s.
            TimerWheel::Known(_) => (now_ns.saturating_sub(20_000_000_000), now_ns),
        };
        if self.fires_ns(lo) >= now_ns {
            return None;
        }
        // Invariant: fires_ns(lo) < now_ns <= fires_ns(hi).
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.fires_ns(mid) < now_ns {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Some(lo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_match_the_kernels() {
        assert_eq!(level(62), 0);
        assert_eq!(level(63), 1);
        assert_eq!(level(15_000), 3); // 60 s at HZ 250
        assert_eq!(level(6_000), 3); // 60 s at HZ 100
        assert_eq!(level(60_000), 4); // 60 s at HZ 1000
    }

    #[test]
    fn a_timer_runs_at_its_buckets_end() {
        let j = Jiffies {
            hz: 250,
            jiffies: 1 << 20,
            at_ns: 1_000_000_000_000,
        };
        let wheel = TimerWheel::Known(j);
        // 512-tick buckets (2.048 s) at HZ 250: never early, at most one
        // bucket late.
        for offset_ms in [0u64, 1, 700, 2_047, 2_048, 5_000] {
            let expires = j.at_ns + TIME_WAIT_LEN_NS + offset_ms * 1_000_000;
            let fires = wheel.fires_ns(expires);
            assert!(fires > expires, "{offset_ms}");
            assert!(
                fires - expires <= 2_048_000_000,
                "{offset_ms}: {}",
                fires - expires
            );
            assert_eq!(j.at(fires) % 512, 0, "on a bucket's end");
        }
        assert_eq!(TimerWheel::Slack(5).fires_ns(10), 15);
    }

    #[test]
    fn the_cutoff_separates_fired_timers_from_the_rest() {
        let j = Jiffies {
            hz: 1000,
            jiffies: 1 << 30,
            at_ns: 5_000_000_000_000,
        };
        for wheel in [TimerWheel::Known(j), TimerWheel::Slack(5_000_000_000)] {
            for now in [j.at_ns + 61_000_000_000, j.at_ns + 63_333_333_333] {
                let cutoff = wheel.fired_cutoff(now).expect("some have fired");
                assert!(wheel.fires_ns(cutoff) < now);
                assert!(wheel.fires_ns(cutoff + 1) >= now);
            }
        }
        assert_eq!(TimerWheel::Slack(0).fired_cutoff(0), None);
        assert_eq!(TimerWheel::Slack(0).fired_cutoff(10), Some(9));
    }
}
