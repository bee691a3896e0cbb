//! Turning the kernel's CLOCK_MONOTONIC timestamps into wall-clock time,
//! and into the kernel's jiffies (the tick its timers run on).

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

/// The kernel's jiffies at one CLOCK_MONOTONIC time, and its tick rate:
/// enough to say on which tick a kernel timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Jiffies {
    /// Ticks per second (CONFIG_HZ).
    pub hz: u64,
    pub jiffies: u64,
    pub at_ns: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum JiffiesError {
    #[error("cannot read /proc/timer_list: {0}")]
    Read(std::io::Error),
    #[error("/proc/timer_list has no `{0}` line")]
    Missing(&'static str),
    #[error("the kernel's tick is {0} ns, not a known HZ")]
    Tick(u64),
}

impl Jiffies {
    /// From `/proc/timer_list` (root only): its `now at N nsecs` and the
    /// first `jiffies: J`, printed microseconds apart; the tick from the
    /// resolution of CLOCK_MONOTONIC_COARSE, which advances once per tick.
    pub fn read() -> Result<Jiffies, JiffiesError> {
        let text = std::fs::read_to_string("/proc/timer_list").map_err(JiffiesError::Read)?;
        let mut res = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_getres writes the struct we pass.
        unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut res) };
        let tick_ns = res.tv_sec as u64 * 1_000_000_000 + res.tv_nsec as u64;
        Jiffies::parse(&text, tick_ns)
    }

    fn parse(timer_list: &str, tick_ns: u64) -> Result<Jiffies, JiffiesError> {
        let value = |prefix: &'static str| {
            timer_list
                .lines()
                .find_map(|l| l.trim_start().strip_prefix(prefix))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
                .ok_or(JiffiesError::Missing(prefix))
        };
        let at_ns = value("now at ")?;
        let jiffies = value("jiffies: ")?;
        let hz = match tick_ns {
            0 => return Err(JiffiesError::Tick(0)),
            t => (1_000_000_000 + t / 2) / t,
        };
        if ![100, 250, 300, 1000].contains(&hz) {
            return Err(JiffiesError::Tick(tick_ns));
        }
        Ok(Jiffies { hz, jiffies, at_ns })
    }

    /// The jiffies value at CLOCK_MONOTONIC `ns` (rounded up).
    pub fn at(&self, ns: u64) -> u64 {
        let delta = i128::from(ns) - i128::from(self.at_ns);
        let ticks = (delta * i128::from(self.hz)).div_euclid(1_000_000_000)
            + i128::from((delta * i128::from(self.hz)).rem_euclid(1_000_000_000) != 0);
        (i128::from(self.jiffies) + ticks).max(0) as u64
    }

    /// CLOCK_MONOTONIC when jiffies reach `jiffies`.
    pub fn ns(&self, jiffies: u64) -> u64 {
        let ticks = i128::from(jiffies) - i128::from(self.jiffies);
        (i128::from(self.at_ns) + ticks * 1_000_000_000 / i128::from(self.hz)).max(0) as u64
    }
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

#[cfg(test)]
mod jiffies_tests {
    use super::*;

    const TIMER_LIST: &str = "Timer List Version: v0.10\nHRTIMER_MAX_CLOCK_BASES: 8\nnow at 14062634728937 nsecs\n\ncpu: 0\n  .idle_jiffies   : 4298407881\njiffies: 4298407891\n";

    #[test]
    fn reads_timer_list() {
        let j = Jiffies::parse(TIMER_LIST, 4_000_000).unwrap();
        assert_eq!(
            j,
            Jiffies {
                hz: 250,
                jiffies: 4298407891,
                at_ns: 14062634728937
            }
        );
        assert_eq!(j.at(j.at_ns), j.jiffies);
        assert_eq!(j.at(j.at_ns + 1), j.jiffies + 1, "rounded up");
        assert_eq!(j.at(j.at_ns + 4_000_000), j.jiffies + 1);
        assert_eq!(j.ns(j.jiffies + 250), j.at_ns + 1_000_000_000);
        assert!(Jiffies::parse(TIMER_LIST, 3_000_000).is_err(), "333 Hz");
        assert!(Jiffies::parse("now at 5 nsecs\n", 4_000_000).is_err());
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
