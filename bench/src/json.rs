//! The bench's figures as JSON: results/bench-<UTC time>.json, with the
//! table's rows as its summary and every run's raw numbers.

use std::path::PathBuf;

use anyhow::Context as _;
use serde_json::{Value, json};

use super::{
    churn::Outcome,
    measure,
    results::{Condition, Drift, Level, Results},
    storm::Storm,
};

impl Results {
    pub fn to_json(&self, error: Option<&str>) -> Value {
        let outcome = |o: &Outcome| {
            json!({
                "connections": o.connections,
                "errors": o.errors,
                "seconds": o.elapsed.as_secs_f64(),
                "connections_per_second": o.per_second(),
            })
        };
        let level = |l: &Level| {
            json!({
                "connections": l.conns,
                "max_sockets_flag": l.max_sockets,
                "ready_seconds": l.ready.as_secs_f64(),
                "rss_bytes": l.rss,
                "peak_rss_bytes": l.hwm,
                "tracked_sockets": l.tracked,
                "established_gauge": l.established,
                "kernel_established": l.kernel_established,
                "kernel_memory_bytes": l.kernel_memory,
                "bytes_per_tracked_socket": self.bytes_per_socket(l),
            })
        };
        let bare = self.median_rate(Condition::Bare);
        let summary: Vec<Value> = self
            .rows()
            .into_iter()
            .map(
                |r| json!({"metric": r.metric, "value": r.value, "target": r.target, "met": r.met}),
            )
            .collect();
        json!({
            "meta": self.meta,
            "error": error,
            "summary": summary,
            "churn": {
                "medians": Condition::ALL.iter().map(|c| json!({
                    "condition": c.name(),
                    "connections_per_second": self.median_rate(*c),
                    "ratio_to_bare": self.median_rate(*c) / bare,
                    "ratio_to_bare_per_round": self.round_ratios(*c),
                })).collect::<Vec<_>>(),
                "runs": self.churn.iter().map(|r| json!({
                    "round": r.round,
                    "condition": r.condition.name(),
                    "outcome": outcome(&r.outcome),
                    "daemon": r.daemon.as_ref().map(|d| json!({
                        "transitions": d.transitions,
                        "events_received": d.events,
                        "events_lost": d.lost,
                        "cpu_seconds": d.cpu_seconds,
                        "cpu_seconds_per_million_transitions": d.cpu_per_million(),
                    })),
                })).collect::<Vec<_>>(),
            },
            "kernel": self.kernel.iter().map(|k| json!({
                "tool": k.tool.name(),
                "program": k.program,
                "id": k.id,
                "run_cnt": k.runs,
                "run_time_ns": k.run_time_ns,
                "ns_per_run": k.ns_per_run(),
                "outcome": outcome(&k.outcome),
            })).collect::<Vec<_>>(),
            "memory": {
                "idle": self.idle.as_ref().map(level),
                "levels": self.levels.iter().map(level).collect::<Vec<_>>(),
            },
            "timewait_drift": self.timewait_drift.as_ref().map(drift),
            "storm": self.storm.as_ref().map(storm),
            "latency": self.latency.iter().map(|l| json!({
                "path": l.path,
                "connections_held": l.conns,
                "requests": l.samples.len(),
                "p50_ms": measure::percentile(&l.samples, 50.0),
                "p99_ms": measure::percentile(&l.samples, 99.0),
                "max_ms": l.samples.last(),
            })).collect::<Vec<_>>(),
        })
    }

    /// Writes results/bench-<UTC time>.json and, for a complete run,
    /// results/bench-latest.json (a partial one is only kept by its time).
    pub fn write(&self, error: Option<&str>) -> anyhow::Result<PathBuf> {
        let dir = crate::workspace_root().join("results");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let text = serde_json::to_string_pretty(&self.to_json(error))? + "\n";
        let stamp = self
            .meta
            .get("started_utc")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .replace([':', '-'], "");
        let path = dir.join(format!("bench-{stamp}.json"));
        std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
        if error.is_none() {
            let latest = dir.join("bench-latest.json");
            std::fs::write(&latest, &text)
                .with_context(|| format!("writing {}", latest.display()))?;
        }
        Ok(path)
    }
}

fn storm(s: &Storm) -> Value {
    json!({
        "seconds": s.seconds,
        "retransmissions": s.kernel,
        "synack_retransmissions": s.synacks,
        "exported": s.exported,
        "kernel_after_scrape": s.kernel_after_scrape,
        "exact": s.exact(),
        "ring_buffer_events": s.events,
        "program_runs": s.runs,
        "program_run_time_ns": s.run_time_ns,
        "daemon_cpu_s": s.daemon_cpu_s,
    })
}

fn drift(d: &Drift) -> Value {
    json!({
        "method": d.method,
        "cap": d.cap,
        "samples_at_cap": d.full,
        "samples": d.samples,
        "worst": d.worst,
        "mean": d.mean,
        "timewait_at_worst": d.timewait_at_worst,
    })
}
