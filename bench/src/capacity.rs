//! The daemon with many connections already open: memory per tracked
//! socket, time to ready, and HTTP latency. Connections are held by child
//! processes (see `hold`) and grow level by level; a fresh daemon starts at
//! each level, after the sockets exist, so that its start-up (the seeding
//! sock_diag dump) is measured too.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use testkit::{http, prom, ss};

use super::{
    Plan,
    hold::{self, Holders},
    measure,
    procs::Daemon,
    results::{Latency, Level, Results},
    stop, sysctl,
};

/// After ready, a few reconciliation ticks pass before memory is read.
const SETTLE: Duration = Duration::from_secs(3);
/// Requests per path for the latency percentiles.
const REQUESTS: usize = 200;
/// Kernel memory per held connection (two sockets with their files; about
/// 5.5 KiB measured here), rounded up, to refuse a level the machine
/// cannot hold before trying.
const KERNEL_BYTES_PER_CONN: u64 = 8 * 1024;
/// The daemon's default --max-sockets: a level that needs more gets more,
/// else entries would be evicted and not counted.
const DEFAULT_MAX_SOCKETS: u64 = 2_000_000;

/// Checks that the largest level fits this machine and raises the limits
/// that would stop it (each restored afterwards).
pub fn prepare(plan: &Plan, sysctls: &mut sysctl::Sysctls) -> anyhow::Result<()> {
    let most = plan.levels.iter().copied().max().unwrap_or(0) as u64;
    let needed = most * KERNEL_BYTES_PER_CONN + (1 << 30);
    let available = measure::mem_available()?;
    if available < needed {
        bail!(
            "{most} connections need about {} MiB of memory and {} MiB are available: \
             use a smaller --max-conns",
            needed >> 20,
            available >> 20
        );
    }
    let range = sysctl::read("net.ipv4.ip_local_port_range")?;
    let ports: Vec<usize> = range.split(' ').filter_map(|p| p.parse().ok()).collect();
    if let [low, high] = ports[..]
        && high.saturating_sub(low) < hold::PER_CHILD + 1_000
    {
        bail!("net.ipv4.ip_local_port_range ({range}) is too small for the connection holders");
    }
    // Two files per connection on top of what is open now.
    let open: u64 = sysctl::read("fs.file-nr")?
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    sysctls.raise("fs.file-max", open + 2 * most + 200_000)?;
    // Holders connect and accept one at a time, but leave room anyway.
    sysctls.raise("net.core.somaxconn", 4096)?;
    sysctls.raise("net.ipv4.tcp_max_syn_backlog", 4096)?;
    // Only when connection tracking is active does loopback traffic use it.
    if Path::new("/proc/sys/net/netfilter/nf_conntrack_count").exists()
        && sysctl::read_u64("net.netfilter.nf_conntrack_count")? > 0
    {
        sysctls.raise("net.netfilter.nf_conntrack_max", 2 * most + 200_000)?;
    }
    Ok(())
}

pub fn run(plan: &Plan, results: &mut Results) -> anyhow::Result<()> {
    wait_for_timewait_expiry()?;
    eprintln!("bench: daemon memory, idle");
    results.idle = Some(level(plan, 0, false, results)?);
    let available_before = measure::mem_available()?;
    let mut holders = Holders::new()?;
    for &conns in &plan.levels {
        stop::check()?;
        eprintln!("bench: opening {conns} connections");
        let opened = Instant::now();
        holders.grow_to(conns)?;
        eprintln!(
            "bench:   {} held after {:.1} s",
            holders.held(),
            opened.elapsed().as_secs_f64()
        );
        // What the sockets cost the kernel, for scale (and to check the
        // memory estimate the bench refuses oversized levels with).
        let kernel = available_before.saturating_sub(measure::mem_available()?);
        eprintln!(
            "bench:   kernel memory for them: about {} MiB",
            kernel >> 20
        );
        let with_latency = conns == plan.latency_level;
        let mut l = level(plan, conns, with_latency, results)?;
        l.kernel_memory = Some(kernel);
        results.levels.push(l);
    }
    eprintln!("bench: closing the held connections");
    drop(holders);
    Ok(())
}

/// TIME_WAIT sockets left by an earlier churn (up to tcp_max_tw_buckets,
/// for 60 s) would be tracked by the idle daemon and hide what one socket
/// costs: wait until they have expired.
fn wait_for_timewait_expiry() -> anyhow::Result<()> {
    const QUIET: u64 = 1_000;
    let started = Instant::now();
    let mut said = false;
    while let Some(tw) = timewait_sockets()
        && tw >= QUIET
        && started.elapsed() < Duration::from_secs(70)
    {
        if !said {
            eprintln!("bench: waiting for {tw} TIME_WAIT sockets to expire (up to 60 s)");
            said = true;
        }
        stop::sleep(Duration::from_secs(1))?;
    }
    Ok(())
}

/// The `tw` count of /proc/net/sockstat.
fn timewait_sockets() -> Option<u64> {
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let tcp = sockstat.lines().find(|l| l.starts_with("TCP:"))?;
    let mut fields = tcp.split_whitespace();
    fields.find(|&f| f == "tw")?;
    fields.next()?.parse().ok()
}

/// Starts a daemon with `conns` held, measures, stops it.
fn level(
    plan: &Plan,
    conns: usize,
    with_latency: bool,
    results: &mut Results,
) -> anyhow::Result<Level> {
    // Both ends of every connection, plus what else the machine has.
    let needed = 2 * conns as u64 + 200_000;
    let max_sockets = (needed > DEFAULT_MAX_SOCKETS).then_some(needed);
    let extra: Vec<String> = max_sockets
        .map(|n| vec!["--max-sockets".to_owned(), n.to_string()])
        .unwrap_or_default();
    let daemon = Daemon::start(&plan.tracer, &extra, &plan.log("daemon"))?;
    eprintln!(
        "bench:   daemon ready after {:.2} s",
        daemon.ready_after.as_secs_f64()
    );
    stop::sleep(SETTLE)?;
    let text = daemon.metrics()?;
    let (rss, _) = measure::memory(daemon.pid())?;
    let tracked = Daemon::total(&text, "tcpstate_tracked_sockets")?;
    let established =
        prom::labelled(&text, "tcpstate_sockets", "state", "ESTABLISHED").unwrap_or(0.0);
    if with_latency {
        for path in ["/metrics", "/api/v1/snapshot"] {
            results.latency.push(latency(&daemon, path, conns)?);
        }
    }
    // Serving may have grown it: keep the larger reading.
    let (rss_after, hwm) = measure::memory(daemon.pid())?;
    let ready = daemon.ready_after;
    daemon.stop()?;
    eprintln!(
        "bench:   RSS {:.1} MiB, {tracked} sockets tracked, {established} ESTABLISHED",
        rss.max(rss_after) as f64 / 1024.0 / 1024.0
    );
    Ok(Level {
        conns,
        max_sockets,
        ready,
        rss: rss.max(rss_after),
        hwm,
        tracked,
        established,
        kernel_established: ss::established_total(),
        kernel_memory: None,
    })
}

/// Sequential GETs on new connections (`Connection: close`, as Prometheus
/// without keep-alive would), each timed from connect to the last byte.
fn latency(daemon: &Daemon, path: &'static str, conns: usize) -> anyhow::Result<Latency> {
    let mut samples = Vec::with_capacity(REQUESTS);
    let get = || {
        http::get_within(daemon.addr, path, Duration::from_secs(30))
            .with_context(|| format!("GET http://{}{path}", daemon.addr))
    };
    // One unmeasured request: the first render may allocate buffers.
    get()?;
    for _ in 0..REQUESTS {
        stop::check()?;
        let t = Instant::now();
        let r = get()?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        if r.status != 200 || r.body.is_empty() {
            bail!(
                "GET {path} answered {} with {} bytes",
                r.status,
                r.body.len()
            );
        }
        samples.push(ms);
    }
    samples.sort_by(f64::total_cmp);
    eprintln!(
        "bench:   GET {path}: p50 {:.2} ms, p99 {:.2} ms",
        measure::percentile(&samples, 50.0),
        measure::percentile(&samples, 99.0)
    );
    Ok(Latency {
        path,
        conns,
        samples,
    })
}
