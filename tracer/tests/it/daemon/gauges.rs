//! Every state's gauge against `ss -tan` (summed over all namespaces) or
//! `ss -N NAME` (one namespace, with `--netns-label true`): sockets older
//! and newer than the daemon, a start-up dump of several chunks, and a
//! restart after SIGKILL that leaves nothing attached.

use std::{
    net::TcpListener,
    process::{Command, Stdio},
    time::Duration,
};

use testkit::{
    daemon::{Daemon, assert_gauges_match_ss, wait_for_namespace_gauges},
    http::get,
    net::{Held, connect_pair, make_states, read_to_eof},
    netns::{NetNs, ns_inode},
    process::wait_timeout,
    prom, require_ebpf, ss, wait_until,
};

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
