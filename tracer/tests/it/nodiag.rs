//! `tracer daemon` on a kernel without sock_diag for TCP (tcp_diag and
//! inet_diag cannot load): it must read `/proc/net/tcp` instead, for the
//! start-up seed and for every reconciliation, say so once per namespace,
//! and still count exactly what `ss` counts (which falls back to /proc
//! too). Needs root and such a kernel: `cargo xtask test` runs it in a VM
//! guest booted with `module_blacklist=tcp_diag,inet_diag`.

use std::{path::Path, time::Duration};

use testkit::{
    daemon::{Daemon, SMALL_RING, assert_gauges_match_ss, wait_for_namespace_gauges},
    net::{Held, make_states},
    netns::{NetNs, ns_inode},
    prom,
    require::ebpf_missing,
    ss,
};
use tracer::sockets::sockdiag::{self, ALL_STATES, SockDiagError};

use crate::tracer;

/// The fall-back warning's start for namespace `inode`.
fn warning_for(inode: u32) -> String {
    format!("sock_diag for TCP is not available in network namespace {inode} ")
}

#[test]
#[ignore = "needs a kernel whose tcp_diag cannot load; cargo xtask test runs it in a VM guest booted with module_blacklist=tcp_diag,inet_diag"]
fn falls_back_to_proc_net_tcp_without_sock_diag() {
    // Run on purpose: a missing privilege, or a working sock_diag, is a
    // failure, never a skip.
    if let Some(why) = ebpf_missing() {
        panic!("this test needs root and kernel BTF: {why}");
    }
    match sockdiag::dump_all(ALL_STATES) {
        Err(SockDiagError::Kernel { errno }) if errno == libc::ENOENT => {}
        other => panic!(
            "sock_diag for TCP must be unavailable for this test (boot with \
             module_blacklist=tcp_diag,inet_diag), but a dump gave {}",
            match other {
                Ok(found) => format!("{} sockets", found.len()),
                Err(e) => e.to_string(),
            }
        ),
    }
    let own = ns_inode(Path::new("/proc/self/ns/net"));
    // A namespace the daemon enters (setns) and reads from /proc there.
    let ns = NetNs::new("nodiag");
    let entered = ns_inode(&ns.path());

    // Sockets older than the daemon: only the start-up seed can know them.
    let mut held = Held::default();
    make_states("127.0.0.1", &mut held);
    make_states("::1", &mut held);
    let held_inside = ns.run_inside(|| {
        let mut held = Held::default();
        make_states("127.0.0.1", &mut held);
        held
    });
    let daemon = Daemon::start(tracer(), &["--reconcile-interval", "200ms"]);
    let mut http = daemon.client();
    assert_gauges_match_ss(&mut http, Duration::from_secs(30));
    let truth = ss::counts();
    assert!(
        truth.get("LISTEN").copied().unwrap_or(0) >= 3 && truth.contains_key("CLOSE_WAIT"),
        "ss counted too little for a real comparison: {truth:?}"
    );
    // Newer ones, from events, and timewait reconciliations from /proc
    // meanwhile.
    make_states("127.0.0.1", &mut held);
    let more_inside = ns.run_inside(|| {
        let mut held = Held::default();
        make_states("127.0.0.1", &mut held);
        held
    });
    assert_gauges_match_ss(&mut http, Duration::from_secs(30));

    let m = http.get("/metrics").body;
    let sources = prom::samples(&m, "tcpstate_socket_table_source");
    assert!(
        !sources.contains_key("source=sock_diag")
            && sources.get("source=proc").is_some_and(|n| *n >= 2.0),
        "every namespace, at least {own} and {entered}, must be read from /proc: {sources:?}"
    );
    // Closing everything brings the gauges down in step.
    drop((held, held_inside, more_inside));
    assert_gauges_match_ss(&mut http, Duration::from_secs(30));

    // One warning per namespace, naming the cause, however many dumps ran.
    let log = daemon.stderr();
    for inode in [own, entered] {
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(&warning_for(inode)))
            .collect();
        assert_eq!(lines.len(), 1, "one warning for namespace {inode}:\n{log}");
        for part in ["tcp_diag", "reading /proc/net/tcp and tcp6 instead"] {
            assert!(lines[0].contains(part), "{part} in {}", lines[0]);
        }
    }
    assert!(
        !log.contains("skipped a namespace"),
        "no namespace may go unread:\n{log}"
    );
    assert!(daemon.stop().success());

    // Lost events: the full reconciliation they trigger must read /proc
    // too, or the gauges would not heal. A fresh namespace, so that the
    // closes above leave no TIME_WAIT in what is counted.
    let burst = NetNs::new("nodiag-burst");
    let burst_inode = ns_inode(&burst.path());
    let daemon = Daemon::start(tracer(), SMALL_RING);
    let mut http = daemon.client();
    let m = http.get("/metrics").body;
    for inode in [own, entered, burst_inode] {
        assert_eq!(
            prom::samples(&m, "tcpstate_socket_table_source")
                .get(&format!("source=proc,netns={inode}")),
            Some(&1.0),
            "namespace {inode} read from /proc:\n{m}"
        );
    }
    // This burst must overflow.
    let _kept = daemon.burst_while_stopped(&burst, 60);
    let m = http.get("/metrics").body;
    assert!(
        prom::sum_where(&m, "tcpstate_events_lost_total", "ring_buffer_full") > 0.0,
        "no loss counted"
    );
    wait_for_namespace_gauges(&mut http, &burst.name, burst_inode, Duration::from_secs(30));
    let truth = ss::counts_in(&burst.name);
    assert_eq!(truth.get("ESTABLISHED"), Some(&60), "{truth:?}");
    assert_eq!(truth.get("TIME_WAIT"), Some(&30), "{truth:?}");
    let log = daemon.stderr();
    assert!(log.contains("full reconciliation fixed"), "{log}");
    for inode in [own, entered, burst_inode] {
        assert_eq!(
            log.matches(&warning_for(inode)).count(),
            1,
            "one warning for namespace {inode}:\n{log}"
        );
    }
    assert!(daemon.stop().success());
}
