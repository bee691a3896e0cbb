//! `tracer trace` against the real kernel: real sockets on loopback, real
//! network namespaces, and libbpf-tools `tcpstates` as ground truth.
//! Needs root; in CI (CI=true) these tests must run.

use std::{
    io::Write as _,
    net::{Shutdown, TcpListener, TcpStream},
    path::Path,
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use testkit::{
    net::{bound_listener, connect_pair, read_to_eof},
    netns::{NetNs, ns_inode},
    process::wait_timeout,
    require_ebpf,
};
use traced::{
    Trace, by_socket, path, render, skaddr_of, traced_listener, traced_listener_with_env,
};
use tracer::trace::format::JsonTransition;

mod kernel_log;
mod traced;

/// The program loaded on this kernel (Linux 5.6+ record layout).
const IN_PLACE_PROGRAM: &str = "inet_sock_set_state";
/// The program for other record layouts, and how to force it here.
const COPYING_PROGRAM: &str = "inet_sock_set_state_copy";
const FORCE_COPYING: &[(&str, &str)] = &[("TRACER_PROBE_PROGRAM", "copy")];

/// Listener: CLOSE->LISTEN->CLOSE. Client (closes first): CLOSE->SYN_SENT->
/// ESTABLISHED->FIN_WAIT1->(FIN_WAIT2->)CLOSE. Server child: LISTEN->SYN_RECV
/// ->ESTABLISHED->CLOSE_WAIT->LAST_ACK->CLOSE.
///
/// `program` is the kernel program expected to be loaded; `env` picks it.
fn full_lifecycle(ip: &str, program: &str, env: &[(&str, &str)]) {
    let (trace, listener, port) = traced_listener_with_env(ip, &[], env);
    let (client, mut server) = connect_pair(&listener);
    let client_addr = client.local_addr().expect("client addr");
    drop(client);
    read_to_eof(&mut server);
    drop(server);
    trace.wait_for("client and server child to reach CLOSE", |ev| {
        ev.iter().filter(|e| e.newstate == "CLOSE").count() >= 2
    });
    drop(listener);
    let events = trace.wait_for("listener to close", |ev| {
        ev.iter()
            .any(|e| e.oldstate == "LISTEN" && e.newstate == "CLOSE")
    });
    let (status, _, stderr) = trace.stop();
    assert!(
        status.success(),
        "tracer exited with {status}; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("attached {program} to")),
        "expected program {program}; stderr:\n{stderr}"
    );

    let sockets = by_socket(&events);
    let listener_sk = skaddr_of(&events, "listen()", |e| e.newstate == "LISTEN");
    let client_sk = skaddr_of(&events, "connect()", |e| e.newstate == "SYN_SENT");
    let child_sk = skaddr_of(&events, "the accepted child", |e| e.newstate == "SYN_RECV");
    assert_eq!(sockets.len(), 3, "sockets:\n{}", render(&events));
    assert_eq!(
        sockets[&listener_sk],
        path(&[("CLOSE", "LISTEN"), ("LISTEN", "CLOSE")])
    );
    assert_eq!(
        sockets[&child_sk],
        path(&[
            ("LISTEN", "SYN_RECV"),
            ("SYN_RECV", "ESTABLISHED"),
            ("ESTABLISHED", "CLOSE_WAIT"),
            ("CLOSE_WAIT", "LAST_ACK"),
            ("LAST_ACK", "CLOSE"),
        ])
    );
    let client_path = &sockets[&client_sk];
    let head = path(&[
        ("CLOSE", "SYN_SENT"),
        ("SYN_SENT", "ESTABLISHED"),
        ("ESTABLISHED", "FIN_WAIT1"),
    ]);
    // FIN and ACK may arrive together: FIN_WAIT1 -> CLOSE, skipping FIN_WAIT2.
    let tails = [
        path(&[("FIN_WAIT1", "FIN_WAIT2"), ("FIN_WAIT2", "CLOSE")]),
        path(&[("FIN_WAIT1", "CLOSE")]),
    ];
    assert_eq!(client_path[..3], head[..], "client: {client_path:?}");
    assert!(
        tails.iter().any(|t| client_path[3..] == t[..]),
        "client: {client_path:?}"
    );

    // Addresses: the client's events after connect carry its four-tuple.
    let family = if ip.contains(':') { 6 } else { 4 };
    for e in events
        .iter()
        .filter(|e| e.skaddr == client_sk && e.oldstate != "CLOSE")
    {
        assert_eq!(
            (e.laddr.as_str(), e.lport),
            (client_addr.ip().to_string().as_str(), client_addr.port())
        );
        assert_eq!((e.raddr.as_str(), e.rport), (ip, port));
        assert_eq!(e.family, family);
    }
    for e in events.iter().filter(|e| e.skaddr == child_sk) {
        assert_eq!((e.lport, e.rport), (port, client_addr.port()));
    }
    // Time in state is known for every transition of a socket born while traced.
    for e in events
        .iter()
        .filter(|e| e.skaddr == client_sk && e.oldstate != "CLOSE")
    {
        assert!(e.old_state_ms.is_some(), "no time in state: {e:?}");
    }
}

#[test]
fn ipv4_connection_lifecycle() {
    require_ebpf!();
    full_lifecycle("127.0.0.1", IN_PLACE_PROGRAM, &[]);
}

/// The program for other record layouts (older kernels), forced here: it
/// must see the same lifecycle as the one that reads the record in place.
#[test]
fn ipv4_connection_lifecycle_with_the_copying_program() {
    require_ebpf!();
    full_lifecycle("127.0.0.1", COPYING_PROGRAM, FORCE_COPYING);
}

#[test]
fn ipv6_connection_lifecycle_with_the_copying_program() {
    require_ebpf!();
    full_lifecycle("::1", COPYING_PROGRAM, FORCE_COPYING);
}

#[test]
fn ipv6_connection_lifecycle() {
    require_ebpf!();
    full_lifecycle("::1", IN_PLACE_PROGRAM, &[]);
}

#[test]
fn server_that_never_closes_stays_in_close_wait() {
    require_ebpf!();
    let (trace, listener, port) = traced_listener("127.0.0.1", &[]);
    let (client, mut server) = connect_pair(&listener);
    drop(client);
    read_to_eof(&mut server); // the FIN is in: the server socket is in CLOSE_WAIT
    let events = trace.wait_for("CLOSE_WAIT", |ev| {
        ev.iter().any(|e| e.newstate == "CLOSE_WAIT")
    });
    thread::sleep(Duration::from_millis(500));
    let child = skaddr_of(&events, "child", |e| e.newstate == "SYN_RECV");

    // Ground truth: the kernel's socket table says CLOSE-WAIT too.
    let ss = Command::new("ss")
        .args([
            "-Htn",
            "state",
            "close-wait",
            "sport",
            "=",
            &format!(":{port}"),
        ])
        .output()
        .expect("ss");
    let ss = String::from_utf8_lossy(&ss.stdout);
    assert_eq!(ss.lines().count(), 1, "ss close-wait:\n{ss}");

    let (status, events, stderr) = trace.stop();
    assert!(status.success(), "{stderr}");
    let child_path = &by_socket(&events)[&child];
    assert_eq!(
        child_path.last(),
        Some(&("ESTABLISHED".to_owned(), "CLOSE_WAIT".to_owned()))
    );
    assert!(
        !events.iter().any(|e| e.oldstate == "CLOSE_WAIT"),
        "a transition out of CLOSE_WAIT while the owner kept the socket:\n{}",
        render(&events)
    );
    drop(server);
}

#[test]
fn closes_say_whether_the_peers_fin_had_arrived() {
    require_ebpf!();
    let (trace, listener, port) = traced_listener("127.0.0.1", &[]);
    // Clients that close while their server keeps its end: orphaned
    // FIN_WAIT2 sockets, closed before any FIN from the peer.
    let mut servers = Vec::new();
    let mut orphans = Vec::new();
    for _ in 0..5 {
        let (client, mut server) = connect_pair(&listener);
        orphans.push(client.local_addr().expect("addr").port());
        drop(client);
        read_to_eof(&mut server);
        servers.push(server);
    }
    // A client that half-closes and closes after the server's FIN.
    let (mut client, mut server) = connect_pair(&listener);
    let half_closed = client.local_addr().expect("addr").port();
    client.shutdown(Shutdown::Write).expect("shutdown");
    read_to_eof(&mut server);
    drop(server);
    read_to_eof(&mut client);
    drop(client);
    let is_close = |e: &JsonTransition| {
        e.newstate == "CLOSE"
            && ["FIN_WAIT1", "FIN_WAIT2", "CLOSING"].contains(&e.oldstate.as_str())
    };
    let events = trace.wait_for("the half-closed client to close", |ev| {
        ev.iter().any(|e| is_close(e) && e.lport == half_closed)
    });
    let closes: Vec<&JsonTransition> = events.iter().filter(|e| is_close(e)).collect();
    // The kernel program could read the flag on this kernel (BTF).
    assert!(
        closes.iter().all(|e| e.fin_received.is_some()),
        "closes without the FIN flag:\n{}",
        render(&events)
    );
    for e in &closes {
        let expected = e.lport == half_closed;
        assert!(
            e.lport == half_closed || orphans.contains(&e.lport),
            "a close of a socket this test did not make: {e:?}"
        );
        assert_eq!(e.fin_received, Some(expected), "{e:?}");
    }
    // Ground truth: the orphans are FIN-WAIT-2 for ss, whether the kernel
    // kept the full socket or made a timewait socket of it.
    let ss = Command::new("ss")
        .args([
            "-Htn",
            "state",
            "fin-wait-2",
            "dport",
            "=",
            &format!(":{port}"),
        ])
        .output()
        .expect("ss");
    let ss = String::from_utf8_lossy(&ss.stdout);
    assert_eq!(ss.lines().count(), orphans.len(), "ss fin-wait-2:\n{ss}");
    drop(servers);
    let (status, _, stderr) = trace.stop();
    assert!(status.success(), "{stderr}");
}

#[test]
fn reset_connection_takes_the_reset_path() {
    require_ebpf!();
    let (trace, listener, _) = traced_listener("127.0.0.1", &[]);
    let (client, mut server) = connect_pair(&listener);
    // SO_LINGER with a zero timeout: close() sends RST instead of FIN.
    let client = socket2::Socket::from(client);
    client.set_linger(Some(Duration::ZERO)).expect("linger");
    drop(client);
    let events = trace.wait_for("both sides to close", |ev| {
        ev.iter().filter(|e| e.newstate == "CLOSE").count() >= 2
    });
    let _ = server.write_all(b"x"); // the socket is already dead
    let (status, _, stderr) = trace.stop();
    assert!(status.success(), "{stderr}");
    let sockets = by_socket(&events);
    let client_sk = skaddr_of(&events, "connect()", |e| e.newstate == "SYN_SENT");
    let child_sk = skaddr_of(&events, "child", |e| e.newstate == "SYN_RECV");
    assert_eq!(
        sockets[&client_sk],
        path(&[
            ("CLOSE", "SYN_SENT"),
            ("SYN_SENT", "ESTABLISHED"),
            ("ESTABLISHED", "CLOSE")
        ])
    );
    assert_eq!(
        sockets[&child_sk],
        path(&[
            ("LISTEN", "SYN_RECV"),
            ("SYN_RECV", "ESTABLISHED"),
            ("ESTABLISHED", "CLOSE")
        ])
    );
    drop(server);
}

#[test]
fn connections_in_a_network_namespace_carry_its_inode() {
    require_ebpf!();
    let ns = NetNs::new("trace");
    let inside = ns_inode(&ns.path());
    let host_inode = ns_inode(Path::new("/proc/self/ns/net"));
    assert_ne!(inside, host_inode);
    // The filter takes the namespace by path; the inode is checked below.
    let ns_path = ns.path().display().to_string();
    let trace = Trace::start(&["--netns", &ns_path]);
    let port = ns.run_inside(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind in netns");
        let port = listener.local_addr().expect("addr").port();
        let client = TcpStream::connect(("127.0.0.1", port)).expect("connect in netns");
        let (mut server, _) = listener.accept().expect("accept");
        drop(client);
        read_to_eof(&mut server);
        port
    });
    let events = trace.wait_for("the namespace's connection to close", |ev| {
        ev.iter()
            .filter(|e| e.newstate == "CLOSE" && (e.lport == port || e.rport == port))
            .count()
            >= 3
    });
    let (status, _, stderr) = trace.stop();
    assert!(status.success(), "{stderr}");
    assert!(events.len() >= 9, "too few events:\n{}", render(&events));
    for e in &events {
        assert_eq!(
            e.netns,
            inside,
            "event outside the namespace:\n{}",
            render(&events)
        );
    }
}

#[test]
fn pid_and_comm_are_those_of_the_connecting_process() {
    require_ebpf!();
    let (trace, listener, port) = traced_listener("127.0.0.1", &[]);
    // bash's /dev/tcp: connect() runs in a process whose pid and comm we know.
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(format!("exec 3<>/dev/tcp/127.0.0.1/{port}; exec 3>&-"))
        .stdout(Stdio::null())
        .spawn()
        .expect("bash");
    let (server, _) = listener.accept().expect("accept");
    let status = wait_timeout(&mut child, Duration::from_secs(10));
    assert!(status.success(), "bash /dev/tcp failed: {status}");
    let events = trace.wait_for("connect and close", |ev| {
        ev.iter().any(|e| e.newstate == "SYN_SENT") && ev.iter().any(|e| e.newstate == "FIN_WAIT1")
    });
    drop(trace);
    drop(server);
    for state in ["SYN_SENT", "FIN_WAIT1"] {
        let e = events.iter().find(|e| e.newstate == state).expect("event");
        assert_eq!(
            (e.pid, e.comm.as_str()),
            (child.id(), "bash"),
            "{state}: {e:?}"
        );
    }
}

/// One line of libbpf-tools `tcpstates -w` output, reduced to what both
/// tools report: four-tuple and transition.
type Key = (String, u16, String, u16, String, String);

fn key(e: &JsonTransition) -> Key {
    (
        e.laddr.clone(),
        e.lport,
        e.raddr.clone(),
        e.rport,
        e.oldstate.clone(),
        e.newstate.clone(),
    )
}

/// Parses `SKADDR PID COMM IP LADDR LPORT RADDR RPORT OLD -> NEW MS`.
fn parse_tcpstates(line: &str) -> Option<Key> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() != 12 || f[9] != "->" || f[0] == "SKADDR" {
        return None;
    }
    Some((
        f[4].to_owned(),
        f[5].parse().ok()?,
        f[6].to_owned(),
        f[7].parse().ok()?,
        f[8].to_owned(),
        f[10].to_owned(),
    ))
}

#[test]
fn transitions_match_libbpf_tools_tcpstates() {
    require_ebpf!();
    let tcpstates = ["/usr/sbin/tcpstates", "/sbin/tcpstates", "/usr/bin/tcpstates"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("libbpf-tools tcpstates is not installed (Debian package libbpf-tools; `cargo xtask test` installs it)");
    let (l4, p4) = bound_listener("127.0.0.1");
    let (l6, p6) = bound_listener("::1");
    let ports = [p4, p6];

    let mut peer = Command::new("stdbuf")
        .args(["-oL", tcpstates, "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tcpstates");
    let peer_out = peer.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(peer_out).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    // tcpstates prints its header once attached.
    let header = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("tcpstates did not start");
    assert!(
        header.contains("OLDSTATE"),
        "unexpected tcpstates output: {header}"
    );
    let trace = Trace::start(&["--port", &format!("{p4},{p6}")]);

    // A mixed workload: client-first close, server-first close, reset,
    // over both families.
    let mut expected_closes = 0;
    for (listener, ip) in [(l4, "127.0.0.1"), (l6, "::1")] {
        listener.listen(64).expect("listen");
        let listener: TcpListener = listener.into();
        let addr = listener.local_addr().expect("addr");
        for round in 0..6 {
            let client = TcpStream::connect(addr).expect("connect");
            let (mut server, _) = listener.accept().expect("accept");
            match round % 3 {
                0 => {
                    drop(client);
                    read_to_eof(&mut server);
                    drop(server);
                }
                1 => {
                    server.shutdown(Shutdown::Write).expect("shutdown");
                    let mut client = client;
                    read_to_eof(&mut client);
                    drop(client);
                    drop(server);
                }
                _ => {
                    let client = socket2::Socket::from(client);
                    client.set_linger(Some(Duration::ZERO)).expect("linger");
                    drop(client);
                    drop(server);
                }
            }
            expected_closes += 2;
        }
        drop(listener);
        expected_closes += 1;
        let _ = ip;
    }
    let ours = trace.wait_for("every socket to close", |ev| {
        ev.iter().filter(|e| e.newstate == "CLOSE").count() >= expected_closes
    });
    // Let tcpstates catch up (it wakes its reader per event), then stop it.
    thread::sleep(Duration::from_millis(500));
    let (status, _, stderr) = trace.stop();
    assert!(status.success(), "{stderr}");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(peer.id() as i32, libc::SIGINT) };
    wait_timeout(&mut peer, Duration::from_secs(10));
    let _ = reader.join();
    let mut theirs: Vec<Key> = rx
        .try_iter()
        .filter_map(|l| parse_tcpstates(&l))
        .filter(|k| ports.contains(&k.1) || ports.contains(&k.3))
        .collect();
    let mut ours: Vec<Key> = ours.iter().map(key).collect();
    // Before Linux 6.15 the kernel reports an accepted child's
    // LISTEN -> SYN_RECV with the listener's tuple (remote *:0), and
    // tcpstates prints what the kernel reports; tracer prints the child's
    // own four-tuple, taken from its next event. Compare those rows by
    // what the kernel gave.
    let listener_tuple = |k: &Key| k.4 == "LISTEN" && k.5 == "SYN_RECV" && k.3 == 0;
    if theirs.iter().any(listener_tuple) {
        for k in ours
            .iter_mut()
            .filter(|k| k.4 == "LISTEN" && k.5 == "SYN_RECV")
        {
            k.2 = if k.2.contains(':') { "::" } else { "0.0.0.0" }.to_owned();
            k.3 = 0;
        }
    }
    theirs.sort();
    ours.sort();
    assert!(ours.len() >= 12 * 7, "too few transitions: {}", ours.len());
    assert_eq!(ours, theirs, "tracer and tcpstates disagree");
}

/// Pulls `N` out of "... N label ..." in the closing summary.
fn number_before(text: &str, label: &str) -> u64 {
    let at = text
        .find(label)
        .unwrap_or_else(|| panic!("no `{label}` in:\n{text}"));
    text[..at]
        .split(|c: char| !c.is_ascii_digit())
        .rfind(|s| !s.is_empty())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number before `{label}` in:\n{text}"))
}

#[test]
fn overflow_is_counted_and_counters_stay_exact() {
    require_ebpf!();
    // The smallest ring buffer holds about 39 events.
    let (trace, listener, _) = traced_listener("127.0.0.1", &["--ring-buffer-size", "4KiB"]);
    // A stopped reader drains nothing: the burst below must overflow.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(trace.pid() as i32, libc::SIGSTOP) };
    let connections = 50;
    for _ in 0..connections {
        let (client, mut server) = connect_pair(&listener);
        drop(client);
        read_to_eof(&mut server);
    }
    // SAFETY: as above.
    unsafe { libc::kill(trace.pid() as i32, libc::SIGCONT) };
    thread::sleep(Duration::from_millis(200));
    let (status, events, stderr) = trace.stop();
    assert!(status.success(), "{stderr}");
    let counted = number_before(&stderr, "transitions counted in the kernel");
    let received = number_before(&stderr, "events received");
    let full = number_before(&stderr, ", program not run");
    assert!(full > 0, "no loss reported:\n{stderr}");
    assert!(stderr.contains("events lost in the kernel"), "{stderr}");
    assert_eq!(
        counted,
        received + full,
        "kernel counters and events disagree:\n{stderr}"
    );
    assert!(
        events.len() < connections * 11,
        "{} events printed",
        events.len()
    );
}
