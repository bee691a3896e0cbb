//! `tracer-bench` (run by `cargo xtask bench`, which builds both release
//! binaries first): what tracer costs, measured against the targets in the
//! issue, on this machine, as root, with the release build:
//!
//! 1. loopback connection churn with nothing attached, with `tracer daemon`
//!    and with libbpf-tools' `tcpstates > /dev/null` (`rounds`);
//! 2. events the daemon lost, and 3. its CPU time per transition, during
//!    that churn; 7. the kernel program's time per transition (`rounds`);
//! 4. the daemon's memory with 10k, 100k and 1M connections held, 5. its
//!    HTTP latency at 100k and 6. its time to ready at each level
//!    (`capacity`); 8. a retransmission storm and a SYN flood against the
//!    ring buffer and the kernel's counts (`storm`, last: it turns BPF
//!    statistics on).
//!
//! Held connections come first: the churn leaves up to tcp_max_tw_buckets
//! TIME_WAIT sockets for a minute, which would blur the idle memory reading.
//! Prints a table and writes results/bench-<UTC time>.json (and
//! results/bench-latest.json). The HTTP client, the Prometheus parser, `ss`
//! and the process guard come from `testkit`, as the tests use them.

mod capacity;
mod churn;
mod drift;
mod hold;
mod json;
mod measure;
mod procs;
mod report;
mod results;
mod rounds;
mod stop;
mod storm;
mod sysctl;

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use serde_json::json;
use testkit::{
    process::is_root,
    tools::{self, Scope},
};

/// Connection counts held for the memory and start-up measurements: 10k,
/// 100k and 1M sockets, the levels (each loopback connection is two
/// established sockets, both tracked).
const LEVELS: [usize; 3] = [5_000, 50_000, 500_000];
/// The level the HTTP latency is measured at (or the largest below it):
/// 100k sockets.
const LATENCY_LEVEL: usize = 50_000;
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    /// Connection churn: rate, lost events, CPU, kernel time.
    Churn,
    /// Held connections: memory, start-up time, HTTP latency.
    Hold,
    /// The TIME_WAIT gauge against `ss` under churn, alone (a warm-up,
    /// then the scrapes): for a guest kernel where tracing programs load.
    Drift,
    /// A retransmission storm and a SYN flood: ring-buffer events, exact
    /// counts, the programs' kernel time.
    Storm,
}

#[derive(Parser)]
#[command(
    name = "tracer-bench",
    about = "Measure tracer against its performance targets (root; about 5 minutes; \
             --quick about 2): prints a table and writes results/bench-<UTC time>.json",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    child: Option<Child>,
    #[command(flatten)]
    args: BenchArgs,
}

#[derive(Subcommand)]
enum Child {
    /// Hold loopback connections for the bench (a child process of it).
    #[command(hide = true)]
    Hold(HoldArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.child {
        Some(Child::Hold(args)) => hold::child(args.ip, args.conns),
        None => bench(&cli.args),
    }
}

/// The workspace root (this crate lives one level below it): results/ and
/// the default tracer binary are there.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The stdout of a command that succeeded.
fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(std::process::Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// Seconds of churn per run [default: 10; 3 with --quick].
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
    /// Rounds of (bare, daemon, tcpstates) churn runs; medians are reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=100))]
    rounds: u64,
    /// Most connections held (each is two sockets): the levels are 5k, 50k
    /// and 500k connections up to this, and this [default: 500000; 50000
    /// with --quick].
    #[arg(long, value_name = "N")]
    max_conns: Option<usize>,
    /// Short churn runs and at most 50k connections (100k sockets) held.
    #[arg(long)]
    quick: bool,
    /// Only this part of the bench.
    #[arg(long, value_enum)]
    only: Option<Part>,
    /// Sets net.ipv4.tcp_max_tw_buckets for the run (restored after), so
    /// that a slow machine fills its timewait table.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1000..=4_000_000))]
    timewait_cap: Option<u64>,
    /// Churn client threads [default: 2 per CPU].
    #[arg(long, value_name = "N")]
    clients: Option<usize>,
    /// Churn server threads, one listening port each [default: 1 per CPU].
    #[arg(long, value_name = "N")]
    servers: Option<usize>,
    /// The tracer binary to bench [default: target/release/tracer, which
    /// `cargo xtask bench` builds].
    #[arg(long, value_name = "PATH")]
    tracer: Option<PathBuf>,
}

/// The resolved settings every part reads.
struct Plan {
    tracer: PathBuf,
    duration: Duration,
    rounds: usize,
    clients: usize,
    servers: usize,
    levels: Vec<usize>,
    latency_level: usize,
    logs: PathBuf,
}

impl Plan {
    /// The log file of one kind of child process (appended to by each run).
    fn log(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }
}

fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    if !is_root() {
        bail!(
            "the bench needs root: it loads BPF programs, changes sysctls and holds \
             up to two million sockets; run `sudo -E cargo xtask bench`"
        );
    }
    let started = Instant::now();
    stop::install()?;
    let tracer = args
        .tracer
        .clone()
        .unwrap_or_else(|| workspace_root().join("target/release/tracer"));
    if !tracer.is_file() {
        bail!(
            "no tracer binary at {}: `cargo xtask bench` builds it",
            tracer.display()
        );
    }
    tools::install(Scope::Bench).context("installing the bench's tools")?;
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let plan = plan(args, tracer, cpus)?;
    warn_about_others();

    let mut results = results::Results {
        meta: meta(args, &plan, cpus),
        ..Default::default()
    };
    let outcome = run_parts(args, &plan, &mut results);
    results.meta.insert(
        "total_seconds",
        json!(started.elapsed().as_secs_f64().round()),
    );
    // Whatever was measured before an error is still worth keeping.
    let error = outcome.as_ref().err().map(|e| format!("{e:#}"));
    println!();
    results.print();
    let path = results.write(error.as_deref())?;
    println!(
        "\nwritten to {}{} in {:.0} s",
        path.display(),
        if error.is_none() {
            " and results/bench-latest.json"
        } else {
            " (partial: results/bench-latest.json is left as it was)"
        },
        started.elapsed().as_secs_f64()
    );
    outcome
}

fn plan(args: &BenchArgs, tracer: PathBuf, cpus: usize) -> anyhow::Result<Plan> {
    let seconds = args.duration.unwrap_or(if args.quick { 3.0 } else { 10.0 });
    if !(0.5..=3600.0).contains(&seconds) {
        bail!("--duration {seconds}: use 0.5 to 3600 seconds");
    }
    let max_conns = args
        .max_conns
        .unwrap_or(if args.quick { 50_000 } else { 500_000 });
    let mut levels: Vec<usize> = LEVELS.into_iter().filter(|&l| l < max_conns).collect();
    if max_conns > 0 {
        levels.push(max_conns);
    }
    let latency_level = levels
        .iter()
        .copied()
        .filter(|&l| l <= LATENCY_LEVEL)
        .max()
        .or_else(|| levels.first().copied())
        .unwrap_or(0);
    let logs = workspace_root().join("target/tracer-bench");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    for name in ["daemon", "tcpstates"] {
        let _ = std::fs::remove_file(logs.join(format!("{name}.log")));
    }
    Ok(Plan {
        tracer,
        duration: Duration::from_secs_f64(seconds),
        rounds: usize::try_from(args.rounds)?,
        clients: args.clients.unwrap_or(2 * cpus).max(1),
        servers: args.servers.unwrap_or(cpus).max(1),
        levels,
        latency_level,
        logs,
    })
}

fn run_parts(args: &BenchArgs, plan: &Plan, results: &mut results::Results) -> anyhow::Result<()> {
    // Dropped last: restores every setting, also after an error.
    let mut sysctls = sysctl::Sysctls::default();
    if let Some(cap) = args.timewait_cap {
        sysctls.set("net.ipv4.tcp_max_tw_buckets", &cap.to_string())?;
    }
    if args.only == Some(Part::Drift) {
        return rounds::drift_alone(plan, results);
    }

    if args.only == Some(Part::Storm) {
        return storm::run(plan, &mut sysctls, results);
    }
    if args.only != Some(Part::Churn) && !plan.levels.is_empty() {
        capacity::prepare(plan, &mut sysctls)?;
        capacity::run(plan, results)?;
    }
    if args.only != Some(Part::Hold) {
        rounds::run(plan, &mut sysctls, results)?;
    }
    // Last: it turns BPF run statistics on, which the churn comparisons
    // must run without.
    if args.only.is_none() {
        storm::run(plan, &mut sysctls, results)?;
    }
    Ok(())
}

/// Other tracers running now would skew every figure: say so.
fn warn_about_others() {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    let others: Vec<String> = dir
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| {
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            let comm = comm.trim();
            ["tracer", "tcpstates", "tcplife", "tcptop"]
                .contains(&comm)
                .then(|| format!("{comm} (pid {})", e.file_name().to_string_lossy()))
        })
        .collect();
    if !others.is_empty() {
        eprintln!(
            "bench: WARNING: already running, and tracing every transition too: {}",
            others.join(", ")
        );
    }
}

fn meta(
    args: &BenchArgs,
    plan: &Plan,
    cpus: usize,
) -> std::collections::BTreeMap<&'static str, serde_json::Value> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let git = |a: &[&str]| output(Command::new("git").current_dir(workspace_root()).args(a));
    let commit = git(&["rev-parse", "--short", "HEAD"]).map(|c| {
        let dirty = git(&["status", "--porcelain"]).is_some_and(|s| !s.trim().is_empty());
        format!("{}{}", c.trim(), if dirty { " (dirty)" } else { "" })
    });
    let version = output(Command::new(&plan.tracer).arg("--version")).map(|v| v.trim().to_owned());
    [
        ("started_utc", json!(report::utc(now))),
        ("tracer", json!(plan.tracer.display().to_string())),
        ("tracer_version", json!(version)),
        ("git_commit", json!(commit)),
        (
            "kernel",
            json!(sysctl::read("kernel.osrelease").unwrap_or_default()),
        ),
        ("cpus", json!(cpus)),
        ("churn_seconds", json!(plan.duration.as_secs_f64())),
        ("rounds", json!(plan.rounds)),
        ("churn_clients", json!(plan.clients)),
        ("churn_servers", json!(plan.servers)),
        ("churn_closes_first", json!("server")),
        ("levels", json!(plan.levels)),
        ("quick", json!(args.quick)),
        (
            "only",
            json!(args.only.map(|p| format!("{p:?}").to_lowercase())),
        ),
        (
            "tcp_max_tw_buckets",
            json!(sysctl::read_u64("net.ipv4.tcp_max_tw_buckets").ok()),
        ),
    ]
    .into_iter()
    .collect()
}

/// `tracer-bench hold`: arguments of a connection holder child.
#[derive(Debug, clap::Args)]
struct HoldArgs {
    /// Loopback address of this holder's listener.
    #[arg(long)]
    ip: Ipv4Addr,
    /// Connections to open and hold.
    #[arg(long)]
    conns: usize,
}
