//! What the daemon may use, and what happens at each limit: a ring buffer
//! that overflows (counted, and the gauges heal), a socket table at its cap
//! over a long churn (evictions, flat memory), and the capabilities it
//! keeps after start-up.

use std::{net::TcpListener, time::Duration};

use testkit::{
    daemon::{Daemon, SMALL_RING, assert_gauges_match_ss, wait_for_namespace_gauges},
    net::{connect_pair, read_to_eof},
    netns::{NetNs, ns_inode},
    process::rss_kib,
    prom, require_ebpf, ss, wait_until,
};

use crate::tracer;

#[test]
fn ring_buffer_overflow_is_counted_and_the_gauges_heal() {
    require_ebpf!();
    // The burst runs in a namespace of its own, and that namespace is what
    // is compared with `ss -N`: other tests' connections, whose events this
    // tiny ring buffer also drops, cannot blur the check.
    let ns = NetNs::new("overflow");
    // The smallest ring buffer holds about 39 events.
    let daemon = Daemon::start(tracer(), SMALL_RING);
    let mut http = daemon.client();
    // This burst must overflow.
    let _kept = daemon.burst_while_stopped(&ns, 60);
    let m = http.get("/metrics").body;
    assert!(
        prom::sum_where(&m, "tcpstate_events_lost_total", "ring_buffer_full") > 0.0,
        "no loss counted"
    );
    // Transition counters stay exact: the kernel counted every transition,
    // delivered or lost (read when nothing is in flight).
    wait_until(
        "transitions = received + lost",
        Duration::from_secs(15),
        || {
            let m = http.get("/metrics").body;
            let counted = prom::sum_where(&m, "tcpstate_transitions_total", "");
            let received = prom::sum_where(&m, "tcpstate_events_total", "");
            let lost = prom::sum_where(&m, "tcpstate_events_lost_total", "ring_buffer_full");
            counted == received + lost
        },
    );
    // The gauges heal: the loss triggers a full reconciliation.
    let inode = ns_inode(&ns.path());
    wait_for_namespace_gauges(&mut http, &ns.name, inode, Duration::from_secs(15));
    let truth = ss::counts_in(&ns.name);
    assert_eq!(truth.get("ESTABLISHED"), Some(&60), "{truth:?}");
    assert_eq!(truth.get("TIME_WAIT"), Some(&30), "{truth:?}");
    let m = http.get("/metrics").body;
    assert!(prom::sum_where(&m, "tcpstate_reconcile_corrections_total", "") > 0.0);
    assert!(
        daemon.stderr().contains("full reconciliation fixed"),
        "{}",
        daemon.stderr()
    );
    assert!(daemon.stop().success());
}

#[test]
fn memory_stays_bounded_over_a_long_churn() {
    require_ebpf!();
    let daemon = Daemon::start(
        tracer(),
        &["--max-sockets", "1000", "--reconcile-interval", "200ms"],
    );
    let pid = daemon.pid();
    let mut http = daemon.client();
    let baseline = rss_kib(pid);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    for _ in 0..5 {
        for _ in 0..1000 {
            // The server closes first: each connection leaves a TIME_WAIT
            // socket, so the table fills past its cap.
            let (mut client, server) = connect_pair(&listener);
            drop(server);
            read_to_eof(&mut client);
        }
        let m = http.get("/metrics").body;
        let tracked = prom::sum_where(&m, "tcpstate_tracked_sockets", "");
        assert!(
            tracked <= 1000.0,
            "{tracked} entries with --max-sockets 1000"
        );
    }
    let m = http.get("/metrics").body;
    assert!(
        prom::sum_where(&m, "tcpstate_table_evictions_total", "") > 0.0,
        "no eviction counted"
    );
    let after = rss_kib(pid);
    assert!(
        after < baseline + 30 * 1024,
        "RSS grew from {baseline} KiB to {after} KiB over 5,000 connections"
    );
    assert!(daemon.stop().success());
}

#[test]
fn keeps_only_the_capabilities_it_still_needs_in_every_thread() {
    require_ebpf!();
    let daemon = Daemon::start(tracer(), &[]);
    let pid = daemon.pid();
    // CAP_SYS_PTRACE (19) and CAP_SYS_ADMIN (21): nothing else, anywhere.
    let wanted = format!("{:016x}", (1u64 << 19) | (1 << 21));
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks");
    let mut threads = 0;
    for task in tasks.flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).expect("status");
        for field in ["CapEff:", "CapPrm:", "CapBnd:"] {
            let value = status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .expect("capability line")
                .trim();
            assert_eq!(value, wanted, "{field} of thread {:?}", task.file_name());
        }
        threads += 1;
    }
    assert!(threads >= 3, "only {threads} threads");
    assert!(
        daemon
            .stderr()
            .contains("keeping: CAP_SYS_PTRACE, CAP_SYS_ADMIN")
    );
    // And it still works: events are applied, scrapes answer.
    let mut http = daemon.client();
    assert_gauges_match_ss(&mut http, Duration::from_secs(15));
    assert!(daemon.stop().success());
}
