//! Turning the kernel's CLOCK_MONOTONIC timestamps into wall-clock time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_ns(clock: libc::clockid_t) -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the struct we pass; both clocks always exist.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

/// CLOCK_MONOTONIC now, in nanoseconds: the clock of the kernel's event
/// timestamps (`bpf_ktime_get_ns`).
pub fn monotonic_ns() -> u64 {
    now_ns(libc::CLOCK_MONOTONIC) as u64
}

/// Offset between CLOCK_REALTIME and CLOCK_MONOTONIC (what
/// `bpf_ktime_get_ns` reads), taken once. A later wall-clock step is not
/// followed, which keeps event times monotonic within a run.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    boot_epoch_ns: u128,
}

impl WallClock {
    pub fn new() -> WallClock {
        let real = now_ns(libc::CLOCK_REALTIME);
        let mono = now_ns(libc::CLOCK_MONOTONIC);
        WallClock {
            boot_epoch_ns: real.saturating_sub(mono),
        }
    }

    /// A clock whose monotonic zero is at `epoch_ns` after the Unix epoch (tests).
    pub fn with_epoch_ns(epoch_ns: u128) -> WallClock {
        WallClock {
            boot_epoch_ns: epoch_ns,
        }
    }

    /// The wall-clock time of a kernel monotonic timestamp.
    pub fn wall(&self, ts_ns: u64) -> SystemTime {
        let ns = self.boot_epoch_ns + u128::from(ts_ns);
        UNIX_EPOCH + Duration::new((ns / 1_000_000_000) as u64, (ns % 1_000_000_000) as u32)
    }
}

impl Default for WallClock {
    fn default() -> Self {
        WallClock::new()
    }
}

/// Local time of day, `HH:MM:SS.mmm`, the way a terminal user reads it.
pub fn local_time_of_day(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as libc::time_t;
    // SAFETY: localtime_r fills the zeroed tm we own.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&secs, &mut tm) }.is_null() {
        return format!("{}.{:03}", since.as_secs(), since.subsec_millis());
    }
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_monotonic_to_wall() {
        let clock = WallClock::with_epoch_ns(1_700_000_000_000_000_000);
        let t = clock.wall(1_500_000_000);
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap(),
            Duration::new(1_700_000_001, 500_000_000)
        );
    }

    #[test]
    fn real_clock_is_near_now() {
        let clock = WallClock::new();
        let mono = now_ns(libc::CLOCK_MONOTONIC) as u64;
        let diff = clock
            .wall(mono)
            .duration_since(SystemTime::now())
            .unwrap_or_else(|e| e.duration());
        assert!(diff < Duration::from_secs(1), "{diff:?}");
    }

    #[test]
    fn time_of_day_shape() {
        let s = local_time_of_day(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123));
        assert_eq!(s.len(), 12, "{s}");
        assert!(s.ends_with(".123"), "{s}");
    }
}
