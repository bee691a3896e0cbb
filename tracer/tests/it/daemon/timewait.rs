//! TIME_WAIT as the kernel ends it: a real expiry (about 60 s) lands in the
//! duration histogram, and the gauge stops at a namespace's cap on
//! timewait sockets.

use std::{
    net::TcpListener,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use testkit::{
    daemon::{Daemon, gauges_in},
    http::Http,
    net::{connect_pair, read_to_eof},
    netns::{NetNs, ns_inode},
    process::run,
    prom, require_ebpf, ss, wait_until,
};

use crate::tracer;

#[test]
fn time_wait_expiry_lands_in_the_duration_histogram() {
    require_ebpf!();
    // Its own namespace: other tests' TIME_WAIT sockets cannot blur it.
    let ns = NetNs::new("tw");
    let inode = ns_inode(&ns.path());
    let daemon = Daemon::start(
        tracer(),
        &["--reconcile-interval", "500ms", "--netns-label", "true"],
    );
    let mut http = daemon.client();
    // Observations between 30 s and 120 s (other tests' stays add to it
    // but cannot take from it).
    let around_a_minute = |http: &mut Http| {
        let m = http.get("/metrics").body;
        let bucket = |le: &str| {
            prom::samples(&m, "tcpstate_state_duration_seconds_bucket")
                .get(&format!("state=TIME_WAIT,le={le}"))
                .copied()
                .unwrap_or(0.0)
        };
        bucket("120") - bucket("30")
    };
    let time_wait_here = |http: &mut Http| {
        gauges_in(&http.get("/metrics").body, inode)
            .get("TIME_WAIT")
            .copied()
            .unwrap_or(0)
    };
    let before = around_a_minute(&mut http);
    // One TIME_WAIT socket, client side, inside the namespace.
    ns.run_inside(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let (client, mut server) = connect_pair(&listener);
        drop(client);
        read_to_eof(&mut server);
    });
    wait_until(
        "the TIME_WAIT socket to be counted",
        Duration::from_secs(5),
        || time_wait_here(&mut http) == 1,
    );
    // The kernel destroys it after 60 s; the next reconciliation notices.
    let start = Instant::now();
    wait_until(
        "the TIME_WAIT socket to end",
        Duration::from_secs(75),
        || time_wait_here(&mut http) == 0,
    );
    let waited = start.elapsed();
    let ss = Command::new("ss")
        .args(["-N", &ns.name, "-Htan", "state", "time-wait"])
        .output()
        .expect("ss");
    assert!(
        String::from_utf8_lossy(&ss.stdout).trim().is_empty(),
        "ss still shows it"
    );
    assert!(
        waited > Duration::from_secs(50),
        "ended after only {waited:?}"
    );
    // Its stay, from entering TIME_WAIT to the end, landed near 60 s.
    assert!(
        around_a_minute(&mut http) > before,
        "no TIME_WAIT stay of about a minute observed"
    );
    assert!(daemon.stop().success());
}

#[test]
fn time_wait_gauge_stops_at_the_namespace_cap() {
    require_ebpf!();
    // A namespace that allows 5 timewait sockets: the kernel closes the
    // rest without one, and the daemon, which predicts them from events,
    // must know (no dump comes for 60 s to correct it).
    let ns = NetNs::new("twcap");
    run(Command::new("ip").args([
        "netns",
        "exec",
        &ns.name,
        "sysctl",
        "-qw",
        "net.ipv4.tcp_max_tw_buckets=5",
    ]));
    let inode = ns_inode(&ns.path());
    let daemon = Daemon::start(
        tracer(),
        &["--reconcile-interval", "60s", "--netns-label", "true"],
    );
    let mut http = daemon.client();
    ns.run_inside(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        for _ in 0..12 {
            let (client, mut server) = connect_pair(&listener);
            drop(client); // the client closes first: its side keeps the timewait
            read_to_eof(&mut server);
        }
    });
    let truth = || {
        ss::counts_in(&ns.name)
            .get("TIME_WAIT")
            .copied()
            .unwrap_or(0)
    };
    let ours = |http: &mut Http| {
        gauges_in(&http.get("/metrics").body, inode)
            .get("TIME_WAIT")
            .copied()
            .unwrap_or(0)
    };
    wait_until(
        "the 12 connections to close",
        Duration::from_secs(5),
        || !ss::counts_in(&ns.name).contains_key("FIN_WAIT2") && truth() == 5,
    );
    wait_until("the gauge to reach 5", Duration::from_secs(5), || {
        ours(&mut http) == 5
    });
    // And it stays there: no late prediction pushes it past the kernel.
    thread::sleep(Duration::from_millis(500));
    assert_eq!((ours(&mut http), truth()), (5, 5));
    assert!(daemon.stop().success());
}

/// Whether the daemon follows timewait sockets with the kernel's timewait
/// programs, and if not, why (from its log).
fn followed_in_the_kernel(daemon: &Daemon, http: &mut Http) -> bool {
    let metrics = http.get("/metrics").body;
    let kernel = prom::labelled(&metrics, "tcpstate_timewait_tracking", "method", "kernel");
    let why = daemon
        .stderr()
        .lines()
        .find(|l| l.contains("timewait sockets: "))
        .unwrap_or("no line about timewait sockets in the log")
        .to_owned();
    testkit::require::tracing_programs(kernel == Some(1.0), &why)
}

#[test]
fn a_remote_peers_fin_turns_fin_wait2_into_time_wait_without_a_dump() {
    require_ebpf!();
    // The client's namespace and the server's, joined by a veth pair.
    let (client_ns, server_ns) = (NetNs::new("fw2c"), NetNs::new("fw2s"));
    client_ns.link_to(&server_ns, "fw2", "10.97.0.1", "10.97.0.2");
    let inode = ns_inode(&client_ns.path());
    let daemon = Daemon::start(
        tracer(),
        &["--reconcile-interval", "1h", "--netns-label", "true"],
    );
    let mut http = daemon.client();
    if !followed_in_the_kernel(&daemon, &mut http) {
        assert!(daemon.stop().success());
        return;
    }
    // FIN_WAIT2 stays of half a second or more (every connection's stay
    // counts, the daemon's own HTTP ones included, but those are short),
    // and the total seconds of all of them.
    let fin_wait2_stays = |http: &mut Http| {
        let m = http.get("/metrics").body;
        let bucket = |le: &str| {
            prom::samples(&m, "tcpstate_state_duration_seconds_bucket")
                .get(&format!("state=FIN_WAIT2,le={le}"))
                .copied()
                .unwrap_or(0.0)
        };
        let sum = prom::samples(&m, "tcpstate_state_duration_seconds_sum")
            .get("state=FIN_WAIT2")
            .copied()
            .unwrap_or(0.0);
        (bucket("+Inf") - bucket("0.5"), sum)
    };
    let before = fin_wait2_stays(&mut http);
    let listener = server_ns.run_inside(|| TcpListener::bind("10.97.0.2:0").expect("bind"));
    let to = listener.local_addr().expect("address");
    let client = client_ns.run_inside(move || std::net::TcpStream::connect(to).expect("connect"));
    let (server, _) = listener.accept().expect("accept");
    // The client closes first and the server does not answer yet: an
    // orphaned FIN_WAIT2, which the kernel keeps as a timewait socket.
    drop(client);
    let client_side = |state: &str| ss::counts_in(&client_ns.name).get(state).copied();
    wait_until("the orphaned FIN_WAIT2", Duration::from_secs(5), || {
        client_side("FIN_WAIT2") == Some(1)
    });
    thread::sleep(Duration::from_secs(1));
    // The client's ACK of the server's FIN goes nowhere, so the server
    // stays in LAST_ACK: nothing on this host but the timewait socket
    // itself shows that the FIN arrived.
    client_ns.exec(&["ip", "route", "add", "blackhole", "10.97.0.2/32"]);
    drop(server);
    wait_until("the client's TIME_WAIT", Duration::from_secs(5), || {
        client_side("TIME_WAIT") == Some(1) && client_side("FIN_WAIT2").is_none()
    });
    assert_eq!(
        ss::counts_in(&server_ns.name).get("LAST_ACK"),
        Some(&1),
        "the server saw its FIN acknowledged"
    );
    wait_until("the gauges to follow", Duration::from_secs(3), || {
        let ours = gauges_in(&http.get("/metrics").body, inode);
        let state = |s| ours.get(s).copied().unwrap_or(0);
        (state("TIME_WAIT"), state("FIN_WAIT2")) == (1, 0)
    });
    // The FIN_WAIT2 stay ended when the FIN came, a second or more after
    // it began (with predictions it would end at the next dump, in an hour).
    let after = fin_wait2_stays(&mut http);
    assert_eq!(after.0, before.0 + 1.0, "long FIN_WAIT2 stays observed");
    assert!(
        after.1 - before.1 >= 0.9,
        "a FIN_WAIT2 stay of {} s",
        after.1 - before.1
    );
    assert!(daemon.stop().success());
}
