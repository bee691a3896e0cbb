//! `tracer daemon` against the real kernel: its gauges against `ss -tan`,
//! CLOSE_WAIT leaks of a separate process, a real TIME_WAIT expiry, a
//! SIGKILL and restart, the HTTP endpoints and `promtool check metrics`.
//! Needs root; in CI (CI=true) these tests must run.

use std::{
    io::Write as _,
    net::{TcpListener, TcpStream},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use testkit::{
    daemon::{Daemon, assert_gauges_match_ss, gauges_in, wait_for_namespace_gauges},
    http::{Http, get, request},
    leaky::{LEAKY, LeakyServer},
    net::{Held, closed_by_server, connect_pair, make_states, read_to_eof},
    netns::{NetNs, ns_inode},
    process::{rss_kib, run, wait_timeout},
    prom, require_ebpf, ss, wait_until,
};
use tracer::serve::snapshot::Snapshot;

use crate::tracer;

#[test]
fn gauges_match_ss_for_sockets_older_and_newer_than_the_daemon() {
    require_ebpf!();
    let mut held = Held::default();
    make_states("127.0.0.1", &mut held);
    make_states("::1", &mut held);
    let daemon = Daemon::start(tracer(), &["--reconcile-interval", "200ms"]);
    let mut http = daemon.client();
    assert_gauges_match_ss(&mut http, Duration::from_secs(15));
    make_states("127.0.0.1", &mut held);
    make_states("::1", &mut held);
    assert_gauges_match_ss(&mut http, Duration::from_secs(15));
    // Closing everything brings them down in step.
    drop(held);
    assert_gauges_match_ss(&mut http, Duration::from_secs(15));
    assert!(daemon.stop().success());
}

/// Connections held for the multi-chunk seed test: 18,000 sockets, more
/// than one chunk (16,384) of the start-up dump, and under the 20,000
/// files one process may hold here.
const HELD_CONNECTIONS: usize = 9_000;

#[test]
fn a_start_up_dump_of_several_chunks_matches_ss() {
    require_ebpf!();
    // Held by a separate process, so the files do not count against this
    // one's tests. Closed with a reset: no 18,000 TIME_WAIT sockets after.
    let script = "import socket, struct, sys\n\
        s = socket.socket(); s.bind(('127.0.0.88', 0)); s.listen(4096)\n\
        held = []\n\
        for _ in range(int(sys.argv[1])):\n\
        \x20   c = socket.create_connection(s.getsockname()); a = s.accept()[0]\n\
        \x20   for x in (c, a): x.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))\n\
        \x20   held += [c, a]\n\
        s.close(); print('ready', flush=True); sys.stdin.read()\n";
    let mut holder = Command::new("/usr/bin/python3")
        .args(["-c", script, &HELD_CONNECTIONS.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the holder (python3)");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("holder output");
    assert_eq!(
        line.trim(),
        "ready",
        "the holder did not open its connections"
    );

    let daemon = Daemon::start(tracer(), &["--reconcile-interval", "200ms"]);
    let seeded: usize = daemon
        .stderr()
        .split(": ready: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next()?.parse().ok())
        .expect("the ready line says how many sockets were seeded");
    assert!(
        seeded >= 2 * HELD_CONNECTIONS,
        "seeded {seeded} sockets, fewer than the {} held",
        2 * HELD_CONNECTIONS
    );
    let mut http = daemon.client();
    assert_gauges_match_ss(&mut http, Duration::from_secs(15));
    drop(holder.stdin.take());
    wait_timeout(&mut holder, Duration::from_secs(10));
    assert_gauges_match_ss(&mut http, Duration::from_secs(15));
    assert!(daemon.stop().success());
}

fn leaked(metrics: &str, comm: &str) -> f64 {
    prom::samples(metrics, "tcpstate_close_wait_leaked_sockets")
        .get(&format!("comm={comm}"))
        .copied()
        .unwrap_or(0.0)
}

#[test]
fn owners_of_sockets_older_than_the_daemon_are_named_after_start_up() {
    require_ebpf!();
    // Leaks that exist before the daemon: their owner comes from the /proc
    // scan that runs after ready, not from any event.
    let server = LeakyServer::start();
    for _ in 0..2 {
        drop(TcpStream::connect(server.addr).expect("connect"));
    }
    wait_until(
        "the server's sockets in CLOSE_WAIT",
        Duration::from_secs(5),
        || ss::counts().get("CLOSE_WAIT").copied().unwrap_or(0) >= 2,
    );
    let daemon = Daemon::start(
        tracer(),
        &[
            "--close-wait-threshold",
            "1s",
            "--reconcile-interval",
            "200ms",
        ],
    );
    let mut http = daemon.client();
    wait_until(
        "2 leaked sockets under the server's name",
        Duration::from_secs(15),
        || leaked(&http.get("/metrics").body, LEAKY) == 2.0,
    );
    assert!(
        daemon.stderr().contains("named from /proc"),
        "{}",
        daemon.stderr()
    );
    server.stop();
    assert!(daemon.stop().success());
}

#[test]
fn close_wait_leak_is_reported_under_the_process_name_and_clears() {
    require_ebpf!();
    let daemon = Daemon::start(
        tracer(),
        &[
            "--close-wait-threshold",
            "2s",
            "--reconcile-interval",
            "200ms",
        ],
    );
    let mut http = daemon.client();
    let server = LeakyServer::start();
    let pid = server.pid();
    for _ in 0..3 {
        let c = TcpStream::connect(server.addr).expect("connect");
        drop(c); // the server's socket goes to CLOSE_WAIT and stays there
    }
    // Below the threshold: not yet a leak.
    thread::sleep(Duration::from_millis(500));
    assert_eq!(leaked(&http.get("/metrics").body, LEAKY), 0.0);
    wait_until(
        "3 leaked sockets under its name",
        Duration::from_secs(10),
        || leaked(&http.get("/metrics").body, LEAKY) == 3.0,
    );
    // Logged once per socket, with pid, comm and addresses.
    let log = daemon.stderr();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("close_wait_leak") && l.contains(&format!("comm={LEAKY}")))
        .collect();
    assert_eq!(lines.len(), 3, "{log}");
    for line in &lines {
        assert!(line.contains(&format!("pid={pid}")), "{line}");
        assert!(line.contains(&format!("local={}", server.addr)), "{line}");
    }
    let snapshot: Snapshot =
        serde_json::from_str(&http.get("/api/v1/snapshot").body).expect("snapshot");
    let mine: Vec<_> = snapshot
        .close_wait_leaks
        .iter()
        .filter(|l| l.comm == LEAKY)
        .collect();
    assert_eq!(mine.len(), 3, "{:?}", snapshot.close_wait_leaks);
    assert!(
        mine.iter()
            .all(|l| l.pid == pid && l.age_seconds >= 2.0 && l.local == server.addr.to_string())
    );
    assert!(
        mine.windows(2)
            .all(|w| w[0].age_seconds >= w[1].age_seconds),
        "oldest first"
    );

    server.stop();
    wait_until("the leak to clear", Duration::from_secs(10), || {
        leaked(&http.get("/metrics").body, LEAKY) == 0.0
    });
    assert!(daemon.stop().success());
}

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

#[test]
fn exact_again_after_sigkill_and_restart() {
    require_ebpf!();
    let mut held = Held::default();
    make_states("127.0.0.1", &mut held);
    let mut daemon = Daemon::start(tracer(), &["--reconcile-interval", "200ms"]);
    let id = daemon
        .stderr()
        .lines()
        .find_map(|l| {
            // "attached program NAME (id N) to ..."
            l.split("attached program ")
                .nth(1)?
                .split("(id ")
                .nth(1)?
                .split(')')
                .next()?
                .parse::<u32>()
                .ok()
        })
        .expect("the daemon logs its program id");
    let attached = |id: u32| {
        let prog = Command::new("bpftool")
            .args(["prog", "show", "id", &id.to_string()])
            .output();
        let links = Command::new("bpftool")
            .args(["link", "show"])
            .output()
            .expect("bpftool (Debian package bpftool)");
        let links = String::from_utf8_lossy(&links.stdout).into_owned();
        let id_text = id.to_string();
        let linked = links.lines().any(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words.windows(2).any(|w| w[0] == "prog" && w[1] == id_text)
        });
        (prog.is_ok_and(|o| o.status.success()), linked)
    };
    assert_eq!(
        attached(id),
        (true, true),
        "program {id} not loaded and linked while running"
    );
    daemon.signal(libc::SIGKILL);
    daemon.wait(Duration::from_secs(5));
    drop(daemon);
    // Nothing outlives the process: no program, no link.
    wait_until(
        "the kernel to free the program",
        Duration::from_secs(5),
        || attached(id) == (false, false),
    );
    // The world moves on while no daemon runs.
    make_states("::1", &mut held);
    held.streams.truncate(held.streams.len() / 2);
    let daemon = Daemon::start(tracer(), &["--reconcile-interval", "200ms"]);
    let mut http = daemon.client();
    assert_gauges_match_ss(&mut http, Duration::from_secs(15));
    assert!(daemon.stop().success());
}

#[test]
fn ring_buffer_overflow_is_counted_and_the_gauges_heal() {
    require_ebpf!();
    // The burst runs in a namespace of its own, and that namespace is what
    // is compared with `ss -N`: other tests' connections, whose events this
    // tiny ring buffer also drops, cannot blur the check.
    let ns = NetNs::new("overflow");
    // The smallest ring buffer holds about 39 events.
    let daemon = Daemon::start(
        tracer(),
        &[
            "--ring-buffer-size",
            "4KiB",
            "--reconcile-interval",
            "200ms",
            "--netns-label",
            "true",
        ],
    );
    let mut http = daemon.client();
    // A stopped daemon drains nothing: this burst must overflow.
    daemon.signal(libc::SIGSTOP);
    let _kept = ns.run_inside(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut held = Held::default();
        for i in 0..60 {
            let (client, mut server) = connect_pair(&listener);
            if i % 2 == 0 {
                held.streams.extend([client, server]); // never seen by events
            } else {
                drop(client);
                read_to_eof(&mut server); // TIME_WAIT on the client side
            }
        }
        held.listeners.push(listener);
        held
    });
    daemon.signal(libc::SIGCONT);
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

#[test]
fn http_limits_hold_against_floods_and_slow_clients() {
    require_ebpf!();
    let daemon = Daemon::start(
        tracer(),
        &["--http-max-connections", "8", "--http-idle-timeout", "2s"],
    );
    let addr = daemon.addr;
    let pid = daemon.pid();
    // Let the harness's own readiness probes finish and free their slots.
    thread::sleep(Duration::from_millis(300));
    // 20 silent connections: 8 get a slot, the rest are closed on arrival.
    let silent: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    thread::sleep(Duration::from_millis(300));
    // A short look at each (refused ones read EOF at once), well inside the
    // 2 s idle timeout of the others.
    let (refused, held): (Vec<TcpStream>, Vec<TcpStream>) = silent
        .into_iter()
        .partition(|s| closed_by_server(s, Duration::from_millis(20)));
    assert_eq!(
        refused.len(),
        12,
        "connections beyond the limit must be closed at once"
    );
    // The 8 idle ones are closed after the idle timeout, freeing the slots.
    let freed = held
        .iter()
        .filter(|s| closed_by_server(s, Duration::from_secs(4)))
        .count();
    assert_eq!(freed, 8);
    drop((refused, held));
    // A slow client that never finishes its request is closed too.
    let mut slow = TcpStream::connect(addr).expect("connect");
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost")
        .expect("write");
    assert!(
        closed_by_server(&slow, Duration::from_secs(3)),
        "slow client kept open"
    );
    // Garbage and huge headers get an error, not a dead daemon.
    let mut junk = TcpStream::connect(addr).expect("connect");
    junk.write_all(b"\x00\x01 not http at all\r\n\r\n")
        .expect("write");
    assert!(closed_by_server(&junk, Duration::from_secs(4)));
    let mut huge = TcpStream::connect(addr).expect("connect");
    let header = format!(
        "GET /metrics HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let _ = huge.write_all(header.as_bytes()); // the server may close mid-way
    assert!(closed_by_server(&huge, Duration::from_secs(4)));
    // A flood of scrapes, each on a new connection: served, memory flat.
    let baseline = rss_kib(pid);
    for _ in 0..300 {
        assert_eq!(get(addr, "/metrics").expect("scrape").status, 200);
    }
    let after = rss_kib(pid);
    assert!(
        after < baseline + 20 * 1024,
        "RSS grew from {baseline} KiB to {after} KiB"
    );
    let metrics = get(addr, "/metrics").expect("scrape").body;
    assert!(prom::sum_where(&metrics, "tcpstate_http_rejected_connections_total", "") >= 12.0);
    assert!(daemon.stop().success());
}

#[test]
fn netns_label_splits_the_gauges_as_ss_n_counts_them() {
    require_ebpf!();
    let a = NetNs::new("label-a");
    let b = NetNs::new("label-b");
    // Sockets made inside each namespace, kept by this process.
    let make = |ns: &NetNs, listeners: usize, pairs: usize, close_waits: usize| {
        ns.run_inside(move || {
            let mut held = Held::default();
            for _ in 0..listeners {
                held.listeners
                    .push(TcpListener::bind("127.0.0.1:0").expect("bind"));
            }
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            for i in 0..pairs + close_waits {
                let (c, mut s) = connect_pair(&listener);
                if i < pairs {
                    held.streams.extend([c, s]);
                } else {
                    drop(c);
                    read_to_eof(&mut s);
                    held.streams.push(s);
                }
            }
            held.listeners.push(listener);
            held
        })
    };
    // Before the daemon (seeded) and after it (from events).
    let _a1 = make(&a, 2, 1, 0);
    let _b1 = make(&b, 0, 2, 1);
    let daemon = Daemon::start(
        tracer(),
        &["--netns-label", "true", "--reconcile-interval", "200ms"],
    );
    let _b2 = make(&b, 1, 1, 1);
    let mut http = daemon.client();
    for ns in [&a, &b] {
        let inode = ns_inode(&ns.path());
        wait_for_namespace_gauges(&mut http, &ns.name, inode, Duration::from_secs(15));
    }
    // The comparison was not between empty tables.
    assert_eq!(ss::counts_in(&a.name).get("LISTEN"), Some(&3));
    assert_eq!(ss::counts_in(&b.name).get("LISTEN"), Some(&3));
    assert_eq!(ss::counts_in(&b.name).get("CLOSE_WAIT"), Some(&2));
    // Without the flag, one series per state.
    let plain = Daemon::start(tracer(), &[]);
    let m = get(plain.addr, "/metrics").expect("scrape").body;
    assert!(
        prom::samples(&m, "tcpstate_sockets")
            .keys()
            .all(|k| !k.contains("netns="))
    );
    assert!(plain.stop().success());
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
fn http_endpoints_and_promtool() {
    require_ebpf!();
    let daemon = Daemon::start(tracer(), &[]);
    let addr = daemon.addr;
    let r = get(addr, "/healthz").expect("healthz");
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    assert_eq!(get(addr, "/readyz").expect("readyz").status, 200);
    assert_eq!(get(addr, "/nope").expect("404").status, 404);
    assert_eq!(get(addr, "/metrics/extra").expect("404").status, 404);
    assert_eq!(request(addr, "POST", "/metrics").expect("405").status, 405);
    assert_eq!(
        request(addr, "DELETE", "/api/v1/snapshot")
            .expect("405")
            .status,
        405
    );
    let head = request(addr, "HEAD", "/metrics").expect("HEAD");
    assert_eq!(head.status, 200);

    let metrics = get(addr, "/metrics").expect("metrics");
    assert_eq!(metrics.status, 200);
    let content_type = metrics.headers.iter().find(|(k, _)| k == "content-type");
    assert!(content_type.is_some_and(|(_, v)| v.starts_with("text/plain; version=0.0.4")));
    for family in [
        "tcpstate_sockets",
        "tcpstate_state_duration_seconds",
        "tcpstate_events_total",
        "tcpstate_events_lost_total",
        "tcpstate_build_info",
        "tcpstate_transitions_total",
        "tcpstate_socket_table_source",
    ] {
        assert!(
            metrics.body.contains(&format!("# HELP {family} ")),
            "no HELP for {family}"
        );
    }
    let promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut promtool =
        promtool.expect("promtool (Debian package prometheus; `cargo xtask test` installs it)");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(metrics.body.as_bytes())
        .expect("write metrics");
    let out = promtool.wait_with_output().expect("promtool");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let snap = get(addr, "/api/v1/snapshot").expect("snapshot");
    assert_eq!(snap.status, 200);
    let s: Snapshot = serde_json::from_str(&snap.body).expect("snapshot JSON");
    assert!(s.ready);
    assert_eq!(s.sockets.len(), 10);
    assert!(
        s.sockets
            .iter()
            .any(|c| c.state == "LISTEN" && c.count >= 1)
    );
    assert_eq!(s.close_wait_threshold_seconds, 60.0);
    assert!(daemon.stop().success());
}
