//! TIME_WAIT as the daemon counts it against the kernel's, under steady
//! churn with a full timewait table. Where the kernel's timewait programs
//! run, the daemon follows each timewait socket's own records; elsewhere it
//! predicts each from its close and ends it at its timer, and the gauge
//! drifts by what those predictions miss between dumps. Measured as the
//! largest |gauge - ss| / ss over scrapes taken once a second while the
//! churn runs, with the path the daemon took and how many scrapes found
//! the table full (`--timewait-cap` lowers the cap so that a slow machine
//! fills it).

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

/// How the daemon knows timewait sockets (`kernel` or `predicted`).
fn method(daemon: &Daemon) -> anyhow::Result<String> {
    let text = daemon.metrics()?;
    let found = prom::samples(&text, "tcpstate_timewait_tracking");
    Ok(found
        .keys()
        .find_map(|labels| labels.strip_prefix("method="))
        .unwrap_or("unknown")
        .to_owned())
}

fn timewait_cap() -> anyhow::Result<u64> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_max_tw_buckets")
        .context("reading net.ipv4.tcp_max_tw_buckets")?;
    text.trim().parse().context("net.ipv4.tcp_max_tw_buckets")
}

/// Runs the churn with the daemon attached, sampling meanwhile.
pub fn measure(plan: &Plan, server: &Server) -> anyhow::Result<Drift> {
    let daemon = Daemon::start(&plan.tracer, &[], &plan.log("daemon"))?;
    stop::sleep(Duration::from_secs(2))?;
    let mut drift = Drift {
        method: method(&daemon)?,
        cap: timewait_cap()?,
        ..Drift::default()
    };
    thread::scope(|s| -> anyhow::Result<()> {
        let churn = s.spawn(|| server.churn(plan.clients, plan.duration));
        while !churn.is_finished() {
            thread::sleep(EVERY);
            let ours = gauge(&daemon)?;
            let theirs = ss_time_wait()?;
            if theirs >= MIN_TIMEWAIT.min(drift.cap / 2) {
                drift.add(ours, theirs);
                if theirs * 100 >= drift.cap * 99 {
                    drift.full += 1;
                }
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
