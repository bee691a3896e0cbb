//! TIME_WAIT as the daemon counts it against the kernel's, under steady
//! churn with a full timewait table: between dumps the daemon predicts
//! each timewait socket from its close and ends it at its timer, so the
//! gauge drifts by what those predictions miss. Measured as the largest
//! |gauge - ss| / ss over scrapes taken once a second while the churn runs.

use std::{process::Command, thread, time::Duration};

use anyhow::Context as _;
use testkit::prom;

use super::{Plan, churn::Server, procs::Daemon, results::Drift, stop};

/// Scrapes this far apart; each costs one `ss` dump of the timewait table.
const EVERY: Duration = Duration::from_secs(1);
/// Samples with fewer timewait sockets than this say nothing about drift.
const MIN_TIMEWAIT: u64 = 1_000;

/// Timewait sockets in substate TIME_WAIT that `ss` sees in this namespace.
fn ss_time_wait() -> anyhow::Result<u64> {
    let out = Command::new("ss")
        .args(["-Htan", "state", "time-wait"])
        .output()
        .context("running ss")?;
    Ok(out.stdout.iter().filter(|&&b| b == b'\n').count() as u64)
}

fn gauge(daemon: &Daemon) -> anyhow::Result<u64> {
    let text = daemon.metrics()?;
    let tw = prom::samples(&text, "tcpstate_sockets")
        .get("state=TIME_WAIT")
        .copied()
        .unwrap_or(0.0);
    Ok(tw as u64)
}

/// Runs the churn with the daemon attached, sampling meanwhile.
pub fn measure(plan: &Plan, server: &Server) -> anyhow::Result<Drift> {
    let daemon = Daemon::start(&plan.tracer, &[], &plan.log("daemon"))?;
    stop::sleep(Duration::from_secs(2))?;
    let mut drift = Drift::default();
    thread::scope(|s| -> anyhow::Result<()> {
        let churn = s.spawn(|| server.churn(plan.clients, plan.duration));
        while !churn.is_finished() {
            thread::sleep(EVERY);
            let ours = gauge(&daemon)?;
            let theirs = ss_time_wait()?;
            if theirs >= MIN_TIMEWAIT {
                drift.add(ours, theirs);
            }
        }
        churn
            .join()
            .map_err(|_| anyhow::anyhow!("the churn panicked"))??;
        Ok(())
    })?;
    daemon.stop()?;
    Ok(drift)
}
