//! The churn comparisons: the same load with nothing attached, with the
//! daemon and with tcpstates, alternated round by round so that drift on a
//! shared machine (other builds, thermal state) spreads over all three;
//! then one more daemon run and tcpstates run with BPF run statistics on,
//! for the kernel-side cost. Those statistics add their own overhead, so
//! they stay off during the comparisons.

use std::{collections::BTreeMap, time::Duration};

use testkit::prom;

use super::{
    Plan,
    churn::Server,
    drift, measure,
    procs::{Daemon, TCPSTATES_PROG, Tcpstates},
    results::{ChurnRun, Condition, DaemonCost, KernelCost, Results},
    stop,
    sysctl::Sysctls,
};

/// The daemon's program name as the kernel keeps it (15 characters).
const DAEMON_PROG: &str = "inet_sock_set_s";
/// A freshly started daemon or tool settles (first reconciliation) before
/// the window opens.
const SETTLE: Duration = Duration::from_millis(500);

/// The drift row alone, after the same warm-up.
pub fn drift_alone(plan: &Plan, results: &mut Results) -> anyhow::Result<()> {
    let server = Server::start(plan.servers)?;
    let warmup = plan.duration.min(Duration::from_secs(10));
    eprintln!("bench: churn warm-up, {:.0} s", warmup.as_secs_f64());
    server.churn(plan.clients, warmup)?;
    measure_drift(plan, &server, results)
}

fn measure_drift(plan: &Plan, server: &Server, results: &mut Results) -> anyhow::Result<()> {
    eprintln!("bench: TIME_WAIT gauge against ss under churn");
    let drift = drift::measure(plan, server)?;
    eprintln!(
        "bench:   {} path: worst {:.2} %, mean {:.2} % over {} scrapes ({} at the cap of {})",
        drift.method,
        drift.worst * 100.0,
        drift.mean * 100.0,
        drift.samples,
        drift.full,
        drift.cap
    );
    results.timewait_drift = Some(drift);
    Ok(())
}

pub fn run(plan: &Plan, sysctls: &mut Sysctls, results: &mut Results) -> anyhow::Result<()> {
    let server = Server::start(plan.servers)?;
    // The first run on a quiet machine would find an empty TIME_WAIT table
    // (up to tcp_max_tw_buckets fill within seconds and then stay full), so
    // a discarded warm-up puts every counted run in the same steady state.
    let warmup = plan.duration.min(Duration::from_secs(10));
    eprintln!("bench: churn warm-up, {:.0} s", warmup.as_secs_f64());
    let w = server.churn(plan.clients, warmup)?;
    eprintln!("bench:   {:.0} conn/s", w.per_second());

    for round in 1..=plan.rounds {
        for condition in Condition::ALL {
            stop::check()?;
            let run = match condition {
                Condition::Bare => ChurnRun {
                    round,
                    condition,
                    outcome: server.churn(plan.clients, plan.duration)?,
                    daemon: None,
                },
                Condition::Daemon => with_daemon(plan, &server, round)?,
                Condition::Tcpstates => {
                    let tool = Tcpstates::start(&plan.log("tcpstates"))?;
                    stop::sleep(SETTLE)?;
                    let outcome = server.churn(plan.clients, plan.duration)?;
                    tool.stop()?;
                    ChurnRun {
                        round,
                        condition,
                        outcome,
                        daemon: None,
                    }
                }
            };
            report_run(&run, plan.rounds);
            results.churn.push(run);
        }
    }

    measure_drift(plan, &server, results)?;

    sysctls.set("kernel.bpf_stats_enabled", "1")?;
    eprintln!("bench: kernel time per transition (bpf_stats_enabled=1)");
    {
        let daemon = Daemon::start(&plan.tracer, &[], &plan.log("daemon"))?;
        stop::sleep(SETTLE)?;
        let cost = kernel_cost(plan, &server, Condition::Daemon, daemon.pid(), DAEMON_PROG)?;
        daemon.stop()?;
        results.kernel.push(cost);
    }
    {
        let tool = Tcpstates::start(&plan.log("tcpstates"))?;
        stop::sleep(SETTLE)?;
        let cost = kernel_cost(
            plan,
            &server,
            Condition::Tcpstates,
            tool.pid(),
            TCPSTATES_PROG,
        )?;
        tool.stop()?;
        results.kernel.push(cost);
    }
    for k in &results.kernel {
        eprintln!(
            "bench:   {}: {:.0} ns per run over {} runs",
            k.tool.name(),
            k.ns_per_run(),
            k.runs
        );
    }
    Ok(())
}

fn report_run(run: &ChurnRun, rounds: usize) {
    let extra = run
        .daemon
        .as_ref()
        .map(|d| {
            format!(
                ", {:.0} transitions, {:.0} lost, {:.3} s CPU per 1M",
                d.transitions,
                d.lost_total(),
                d.cpu_per_million()
            )
        })
        .unwrap_or_default();
    eprintln!(
        "bench: round {}/{rounds}, {}: {:.0} conn/s ({} errors){extra}",
        run.round,
        run.condition.name(),
        run.outcome.per_second(),
        run.outcome.errors
    );
}

/// The daemon's counters at one moment, and its CPU time.
struct Reading {
    transitions: f64,
    events: f64,
    lost: BTreeMap<String, f64>,
    cpu: f64,
}

fn read(daemon: &Daemon) -> anyhow::Result<Reading> {
    let text = daemon.metrics()?;
    let lost = prom::samples(&text, "tcpstate_events_lost_total")
        .into_iter()
        .map(|(labels, v)| (labels.trim_start_matches("reason=").to_owned(), v))
        .collect();
    Ok(Reading {
        transitions: Daemon::total(&text, "tcpstate_transitions_total")?,
        events: Daemon::total(&text, "tcpstate_events_total")?,
        lost,
        cpu: measure::cpu_seconds(daemon.pid())?,
    })
}

fn with_daemon(plan: &Plan, server: &Server, round: usize) -> anyhow::Result<ChurnRun> {
    let daemon = Daemon::start(&plan.tracer, &[], &plan.log("daemon"))?;
    stop::sleep(SETTLE)?;
    let before = read(&daemon)?;
    let outcome = server.churn(plan.clients, plan.duration)?;
    // The window closes when the daemon has caught up with the ring buffer
    // (its event count stops moving), so that its CPU time covers every
    // event of the run and nothing much after.
    let mut after = read(&daemon)?;
    for _ in 0..50 {
        stop::sleep(Duration::from_millis(100))?;
        let next = read(&daemon)?;
        let settled = next.events == after.events;
        after = next;
        if settled {
            break;
        }
    }
    daemon.stop()?;
    let lost = after
        .lost
        .iter()
        .map(|(reason, v)| (reason.clone(), v - before.lost.get(reason).unwrap_or(&0.0)))
        .collect();
    Ok(ChurnRun {
        round,
        condition: Condition::Daemon,
        outcome,
        daemon: Some(DaemonCost {
            transitions: after.transitions - before.transitions,
            events: after.events - before.events,
            lost,
            cpu_seconds: after.cpu - before.cpu,
        }),
    })
}

/// run_time_ns and run_cnt of the tool's program, read just before and
/// just after one churn run.
fn kernel_cost(
    plan: &Plan,
    server: &Server,
    tool: Condition,
    pid: u32,
    program: &str,
) -> anyhow::Result<KernelCost> {
    let before = measure::prog_stats(pid, program)?;
    let outcome = server.churn(plan.clients, plan.duration)?;
    let after = measure::prog_stats(pid, program)?;
    Ok(KernelCost {
        tool,
        program: program.to_owned(),
        id: after.id,
        runs: after.run_cnt.saturating_sub(before.run_cnt),
        run_time_ns: after.run_time_ns.saturating_sub(before.run_time_ns),
        outcome,
    })
}
