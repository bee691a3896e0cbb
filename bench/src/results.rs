//! What the bench measured, as plain data, and the figures derived from
//! it (medians, bytes per socket). `report` turns it into a table and JSON.

use std::{collections::BTreeMap, time::Duration};

use serde_json::Value;

use super::{churn::Outcome, measure};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Bare,
    Daemon,
    Tcpstates,
}

impl Condition {
    pub const ALL: [Condition; 3] = [Condition::Bare, Condition::Daemon, Condition::Tcpstates];

    pub fn name(self) -> &'static str {
        match self {
            Condition::Bare => "bare",
            Condition::Daemon => "tracer daemon",
            Condition::Tcpstates => "tcpstates > /dev/null",
        }
    }
}

/// What the daemon did during one churn run (deltas over the run).
#[derive(Debug, Clone, Default)]
pub struct DaemonCost {
    /// tcpstate_transitions_total, counted in the kernel.
    pub transitions: f64,
    /// tcpstate_events_total: events user space received.
    pub events: f64,
    /// tcpstate_events_lost_total by reason.
    pub lost: BTreeMap<String, f64>,
    /// User plus system CPU seconds of the daemon.
    pub cpu_seconds: f64,
}

impl DaemonCost {
    pub fn lost_total(&self) -> f64 {
        self.lost.values().sum()
    }

    pub fn cpu_per_million(&self) -> f64 {
        self.cpu_seconds / (self.transitions / 1e6)
    }
}

pub struct ChurnRun {
    pub round: usize,
    pub condition: Condition,
    pub outcome: Outcome,
    pub daemon: Option<DaemonCost>,
}

/// A BPF program's run statistics over one churn run.
pub struct KernelCost {
    pub tool: Condition,
    pub program: String,
    pub id: u32,
    pub runs: u64,
    pub run_time_ns: u64,
    pub outcome: Outcome,
}

impl KernelCost {
    pub fn ns_per_run(&self) -> f64 {
        self.run_time_ns as f64 / self.runs as f64
    }
}

/// A daemon started with `conns` connections held.
pub struct Level {
    pub conns: usize,
    pub max_sockets: Option<u64>,
    pub ready: Duration,
    pub rss: u64,
    pub hwm: u64,
    /// tcpstate_tracked_sockets.
    pub tracked: f64,
    /// tcpstate_sockets{state="ESTABLISHED"}.
    pub established: f64,
    /// The kernel's count of established connections (`ss -s`), both ends.
    pub kernel_established: Option<u64>,
    /// MemAvailable lost since before the connections were opened.
    pub kernel_memory: Option<u64>,
}

pub struct Latency {
    pub path: &'static str,
    pub conns: usize,
    /// Milliseconds, sorted.
    pub samples: Vec<f64>,
}

/// The TIME_WAIT gauge against `ss` under churn (see `drift`).
#[derive(Debug, Default, Clone)]
pub struct Drift {
    /// How the daemon knew timewait sockets (`tcpstate_timewait_tracking`):
    /// `kernel` or `predicted`.
    pub method: String,
    /// `net.ipv4.tcp_max_tw_buckets` during the run.
    pub cap: u64,
    /// Samples taken with the timewait table full (ss at 99 % of the cap).
    pub full: usize,
    pub samples: usize,
    /// The largest |gauge - ss| / ss seen.
    pub worst: f64,
    /// The mean of |gauge - ss| / ss.
    pub mean: f64,
    /// `ss`'s count at the worst sample.
    pub timewait_at_worst: u64,
}

impl Drift {
    pub fn add(&mut self, ours: u64, theirs: u64) {
        let off = ours.abs_diff(theirs) as f64 / theirs as f64;
        self.mean = (self.mean * self.samples as f64 + off) / (self.samples + 1) as f64;
        self.samples += 1;
        if off >= self.worst {
            self.worst = off;
            self.timewait_at_worst = theirs;
        }
    }
}

#[derive(Default)]
pub struct Results {
    pub meta: BTreeMap<&'static str, Value>,
    pub churn: Vec<ChurnRun>,
    pub kernel: Vec<KernelCost>,
    /// The daemon with no connections held (level 0).
    pub idle: Option<Level>,
    pub levels: Vec<Level>,
    pub latency: Vec<Latency>,
    pub timewait_drift: Option<Drift>,
    pub storm: Option<crate::storm::Storm>,
}

impl Results {
    pub fn runs(&self, c: Condition) -> impl Iterator<Item = &ChurnRun> {
        self.churn.iter().filter(move |r| r.condition == c)
    }

    /// Median connections per second of a condition.
    pub fn median_rate(&self, c: Condition) -> f64 {
        let rates: Vec<f64> = self.runs(c).map(|r| r.outcome.per_second()).collect();
        measure::median(&rates)
    }

    /// Each round's rate of `c` over that round's bare rate: the runs of a
    /// round are back to back, so these pairs see the same machine state,
    /// which the medians across rounds do not.
    pub fn round_ratios(&self, c: Condition) -> Vec<f64> {
        self.runs(c)
            .filter_map(|r| {
                let bare = self
                    .runs(Condition::Bare)
                    .find(|b| b.round == r.round)?
                    .outcome
                    .per_second();
                (bare > 0.0).then(|| r.outcome.per_second() / bare)
            })
            .collect()
    }

    pub fn daemon_costs(&self) -> impl Iterator<Item = &DaemonCost> {
        self.runs(Condition::Daemon)
            .filter_map(|r| r.daemon.as_ref())
    }

    pub fn bytes_per_socket(&self, level: &Level) -> Option<f64> {
        let idle = self.idle.as_ref()?;
        let sockets = level.tracked - idle.tracked;
        (sockets > 0.0).then(|| (level.rss as f64 - idle.rss as f64) / sockets)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn run(round: usize, condition: Condition, connections: u64) -> ChurnRun {
        ChurnRun {
            round,
            condition,
            outcome: Outcome {
                connections,
                errors: 0,
                elapsed: Duration::from_secs(1),
            },
            daemon: None,
        }
    }

    #[test]
    fn ratios_pair_each_round_with_its_own_bare_run() {
        let results = Results {
            churn: vec![
                run(1, Condition::Bare, 100),
                run(1, Condition::Daemon, 90),
                run(2, Condition::Bare, 200),
                run(2, Condition::Daemon, 100),
                // A round without a bare run pairs with nothing.
                run(3, Condition::Daemon, 50),
            ],
            ..Results::default()
        };
        assert_eq!(results.round_ratios(Condition::Daemon), vec![0.9, 0.5]);
        assert!(results.round_ratios(Condition::Tcpstates).is_empty());
    }
}
