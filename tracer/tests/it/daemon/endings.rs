//! How connections end, against what the kernel told the sockets
//! themselves (each connect's own error) and what it counted in each
//! namespace (`Tcp:` in /proc/net/snmp: `AttemptFails`, `EstabResets`,
//! `OutRsts`). Each case runs in namespaces of its own, so other tests'
//! connections cannot blur the counts.

use std::{
    collections::BTreeMap,
    io::{ErrorKind, Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use socket2::{Domain, Protocol, Socket, Type};
use testkit::{
    daemon::Daemon,
    http::Http,
    net::{self, connect_pair, read_to_eof},
    netns::{NetNs, ns_inode},
    packet, prom, require_ebpf, wait_until,
};

use crate::tracer;
use tracer::serve::snapshot::Snapshot;

/// The samples of `family` in namespace `inode`, by their other labels
/// (`destination=...,reason=...`), zeroes left out.
fn in_namespace(http: &mut Http, family: &str, inode: u32) -> BTreeMap<String, u64> {
    let netns = format!("netns={inode}");
    prom::samples(&http.get("/metrics").body, family)
        .into_iter()
        .filter(|(labels, v)| *v > 0.0 && labels.split(',').any(|l| l == netns))
        .map(|(labels, v)| {
            let rest: Vec<&str> = labels.split(',').filter(|l| *l != netns).collect();
            (rest.join(","), v as u64)
        })
        .collect()
}

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

/// The error a blocking connect to `to` ended with.
fn connect_error(to: &str) -> Option<i32> {
    let to: SocketAddr = to.parse().expect("address");
    TcpStream::connect(to).err().and_then(|e| e.raw_os_error())
}

/// Whether this kernel's `tcp:tcp_send_reset` reports resets sent for no
/// socket (Linux 6.10+, which gives reasons; before, only a socket's own).
fn resets_for_no_socket_are_reported() -> bool {
    std::fs::read_to_string("/sys/kernel/tracing/events/tcp/tcp_send_reset/format")
        .is_ok_and(|f| f.contains("field:enum sk_rst_reason reason"))
}

/// A thread that answers each SYN to one port of a namespace with an ICMP
/// port unreachable (raw sockets of that namespace: one sees every TCP
/// packet it receives, the other sends the error).
struct PortUnreachable {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<usize>,
}

impl PortUnreachable {
    fn answer(ns: &NetNs, at: &str) -> PortUnreachable {
        let SocketAddr::V4(at) = at.parse().expect("address") else {
            panic!("IPv4 only");
        };
        let (tcp, out) = ns.run_inside(|| {
            let raw = |p| Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(p)));
            (
                raw(libc::IPPROTO_TCP).expect("raw TCP socket"),
                raw(libc::IPPROTO_RAW).expect("raw socket"),
            )
        });
        tcp.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut sent = 0;
            let mut buf = [0u8; 1500];
            while !stopped.load(Ordering::Relaxed) {
                let Ok(n) = (&tcp).read(&mut buf) else {
                    continue;
                };
                let ip = &buf[..n];
                let tcp_at = usize::from(ip[0] & 0x0f) * 4;
                let Some(segment) = ip.get(tcp_at..tcp_at + 14) else {
                    continue;
                };
                let port = u16::from_be_bytes([segment[2], segment[3]]);
                let syn_only = segment[13] == 0x02;
                if ip[16..20] != at.ip().octets() || port != at.port() || !syn_only {
                    continue;
                }
                let error = packet::icmp_port_unreachable(*at.ip(), ip);
                let to = SocketAddr::new(IpAddr::from([ip[12], ip[13], ip[14], ip[15]]), 0);
                out.send_to(&error, &to.into())
                    .expect("send the ICMP error");
                sent += 1;
            }
            sent
        });
        PortUnreachable { stop, thread }
    }

    /// Stops answering; how many errors were sent.
    fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the answering thread")
    }
}

#[test]
fn connect_failures_are_counted_by_destination_and_reason() {
    require_ebpf!();
    let (client, server) = (NetNs::new("cfc"), NetNs::new("cfs"));
    client.link_to(&server, "cf", "10.96.0.1", "10.96.0.2");
    // One hop away, the server's namespace routes one network to
    // `unreachable` (it answers ICMP host unreachable) and one into a
    // blackhole (nothing answers; SYNs are retried once).
    server.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    server.exec(&["ip", "route", "add", "unreachable", "10.96.5.0/24"]);
    server.exec(&["ip", "route", "add", "blackhole", "10.96.6.0/24"]);
    for net in ["10.96.5.0/24", "10.96.6.0/24"] {
        client.exec(&["ip", "route", "add", net, "via", "10.96.0.2"]);
    }
    client.exec(&["sysctl", "-qw", "net.ipv4.tcp_syn_retries=1"]);
    // Port 10 answers with an ICMP port unreachable, as a firewall's
    // REJECT does: the server's own resets from it go nowhere.
    server.exec(&[
        "ip",
        "rule",
        "add",
        "to",
        "10.96.0.1",
        "ipproto",
        "tcp",
        "sport",
        "10",
        "table",
        "100",
    ]);
    server.exec(&["ip", "route", "add", "blackhole", "default", "table", "100"]);
    let rejecting = PortUnreachable::answer(&server, "10.96.0.2:10");
    let (inode, server_inode) = (ns_inode(&client.path()), ns_inode(&server.path()));
    let daemon = Daemon::start(tracer(), &["--netns-label", "true"]);
    let mut http = daemon.client();
    let errors = client.run_inside(|| {
        let errors = [
            connect_error("10.96.0.2:9"),
            connect_error("10.96.5.1:80"),
            connect_error("10.96.6.1:80"),
        ];
        // Given up in SYN_SENT by the application.
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        socket.set_nonblocking(true).expect("nonblocking");
        let to: SocketAddr = "10.96.6.2:80".parse().expect("address");
        let _ = socket.connect(&to.into());
        thread::sleep(Duration::from_millis(200));
        drop(socket);
        errors
    });
    assert_eq!(
        errors,
        [
            Some(libc::ECONNREFUSED),
            Some(libc::EHOSTUNREACH),
            Some(libc::ETIMEDOUT),
        ],
        "what connect() returned"
    );
    let icmp_before = client.icmp_counters()["InDestUnreachs"];
    let rejected = client.run_inside(|| connect_error("10.96.0.2:10"));
    assert_eq!(rejected, Some(libc::ECONNREFUSED), "a port unreachable");
    assert_eq!(rejecting.stop(), 1, "ICMP port unreachables sent");
    assert_eq!(
        client.icmp_counters()["InDestUnreachs"] - icmp_before,
        1,
        "the client took the ICMP error"
    );
    let expected = counts(&[
        ("destination=10.96.0.2:9,reason=refused", 1),
        // ECONNREFUSED too, but no reset came: an ICMP port unreachable.
        ("destination=10.96.0.2:10,reason=unreachable", 1),
        ("destination=10.96.5.1:80,reason=unreachable", 1),
        ("destination=10.96.6.1:80,reason=timeout", 1),
        ("destination=10.96.6.2:80,reason=aborted", 1),
    ]);
    wait_until("the connect failures", Duration::from_secs(5), || {
        in_namespace(&mut http, "tcpstate_connect_failures_total", inode) == expected
    });
    // The kernel's own count of failed attempts (an application's close
    // in SYN_SENT is not one).
    assert_eq!(client.tcp_counters()["AttemptFails"], 4);
    // The refused connect received the one reset, in SYN_SENT.
    assert_eq!(
        in_namespace(&mut http, "tcpstate_resets_received_total", inode),
        counts(&[("state=SYN_SENT", 1)])
    );
    // The server's namespace sent it, for no socket, and one from port 10
    // that went nowhere.
    let sent = in_namespace(&mut http, "tcpstate_resets_sent_total", server_inode);
    if resets_for_no_socket_are_reported() {
        assert_eq!(sent, counts(&[("reason=no_socket", 2)]));
        assert_eq!(server.tcp_counters()["OutRsts"], 2);
    } else {
        assert!(sent.is_empty(), "{sent:?}");
    }
    assert!(daemon.stop().success());
}

#[test]
fn connections_closed_by_cause_agree_with_the_kernels_counters() {
    require_ebpf!();
    let ns = NetNs::new("closes");
    let inode = ns_inode(&ns.path());
    let daemon = Daemon::start(tracer(), &["--netns-label", "true"]);
    let mut http = daemon.client();
    let resets_seen = ns.run_inside(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        // Orderly, the client first: a fin on each side.
        let (client, mut server) = connect_pair(&listener);
        drop(client);
        read_to_eof(&mut server);
        drop(server);
        // SO_LINGER 0: the client resets, the server is reset.
        let (client, mut server) = connect_pair(&listener);
        socket2::SockRef::from(&client)
            .set_linger(Some(Duration::ZERO))
            .expect("SO_LINGER 0");
        drop(client);
        let first = server.read(&mut [0u8; 8]).map_err(|e| e.kind());
        drop(server);
        // Closed with data unread: the same.
        let (client, mut server) = connect_pair(&listener);
        server.write_all(b"unread").expect("write");
        thread::sleep(Duration::from_millis(50));
        drop(client);
        thread::sleep(Duration::from_millis(50));
        let second = server.read(&mut [0u8; 8]).map_err(|e| e.kind());
        [first, second]
    });
    assert_eq!(
        resets_seen,
        [
            Err(ErrorKind::ConnectionReset),
            Err(ErrorKind::ConnectionReset)
        ],
        "what the servers' reads returned"
    );
    let expected = counts(&[
        ("cause=fin", 2),
        ("cause=reset_received", 2),
        ("cause=reset_sent", 2),
    ]);
    wait_until("the closes", Duration::from_secs(5), || {
        in_namespace(&mut http, "tcpstate_connections_closed_total", inode) == expected
    });
    let kernel = ns.tcp_counters();
    // Every close from ESTABLISHED or CLOSE_WAIT straight to CLOSE: the
    // four resets, sent or received.
    assert_eq!(kernel["EstabResets"], 4, "{kernel:?}");
    let sent: u64 = in_namespace(&mut http, "tcpstate_resets_sent_total", inode)
        .values()
        .sum();
    assert_eq!(sent, kernel["OutRsts"]);
    assert_eq!(sent, 2);
    assert_eq!(
        in_namespace(&mut http, "tcpstate_resets_received_total", inode),
        counts(&[("state=ESTABLISHED", 2)])
    );
    assert!(daemon.stop().success());
}

/// `ss -N NAME -lnt`'s Recv-Q and Send-Q of the listener on `port`.
fn ss_listen_queue(ns: &NetNs, port: u16) -> Option<(u64, u64)> {
    let out = std::process::Command::new("ss")
        .args(["-N", &ns.name, "-Hlnt"])
        .output()
        .expect("ss");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() >= 4 && f[3].ends_with(&format!(":{port}")))
                .then(|| Some((f[1].parse().ok()?, f[2].parse().ok()?)))
                .flatten()
        })
}

#[test]
fn a_listener_that_never_accepts_shows_its_full_queue_and_drops() {
    require_ebpf!();
    let ns = NetNs::new("backlog");
    let inode = ns_inode(&ns.path());
    let daemon = Daemon::start(tracer(), &["--netns-label", "true"]);
    let mut http = daemon.client();
    // A backlog of 1 and nobody accepting; six connects: the queue fills,
    // the kernel drops the other handshakes' SYNs (and their retries).
    let (listener, at) = net::full_listener(&ns, "127.0.0.1", &ns);
    let port = at.port();
    let label = format!("listener=127.0.0.1:{port}");
    let ours = |http: &mut Http, family: &str| {
        in_namespace(http, family, inode)
            .get(&label)
            .copied()
            .unwrap_or(0)
    };
    let (queued, limit) = ss_listen_queue(&ns, port).expect("ss shows the listener");
    assert!(queued > 0, "the queue filled: {queued}");
    wait_until("the queue as ss shows it", Duration::from_secs(15), || {
        let drops = ns.tcp_ext_counters()["ListenDrops"];
        ours(&mut http, "tcpstate_listen_queue_length") == queued
            && ours(&mut http, "tcpstate_listen_queue_limit") == limit
            && ours(&mut http, "tcpstate_listen_overflows_total") == drops
            && drops > 0
    });
    assert_eq!(
        ns.tcp_ext_counters()["ListenOverflows"],
        ns.tcp_ext_counters()["ListenDrops"]
    );
    drop(listener);
    assert!(daemon.stop().success());
}

#[test]
fn ephemeral_ports_left_toward_a_destination_are_what_ss_implies() {
    require_ebpf!();
    let (client, server) = (NetNs::new("epc"), NetNs::new("eps"));
    client.link_to(&server, "ep", "10.95.0.1", "10.95.0.2");
    // 100 ephemeral ports; not loopback, so tcp_tw_reuse=2 reuses none.
    client.exec(&["sysctl", "-qw", "net.ipv4.ip_local_port_range=40000 40099"]);
    client.exec(&["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=2"]);
    let inode = ns_inode(&client.path());
    let daemon = Daemon::start(tracer(), &["--netns-label", "true"]);
    let mut http = daemon.client();
    let listener = server.run_inside(|| TcpListener::bind("10.95.0.2:0").expect("bind"));
    let to = listener.local_addr().expect("address");
    // 30 connections closed by the client first (its side keeps
    // TIME_WAIT), 5 open.
    let open = client.run_inside(move || {
        let mut open = Vec::new();
        for i in 0..35 {
            let c = TcpStream::connect(to).expect("connect");
            if i < 30 {
                drop(c);
            } else {
                open.push(c);
            }
        }
        open
    });
    // The server closes its ends of the closed ones (the client's become
    // TIME_WAIT) and keeps the open ones.
    let mut accepted = Vec::new();
    listener.set_nonblocking(true).expect("nonblocking");
    thread::sleep(Duration::from_millis(300));
    while let Ok((mut s, _)) = listener.accept() {
        s.set_nonblocking(true).expect("nonblocking");
        if !matches!(s.read(&mut [0u8; 1]), Ok(0)) {
            accepted.push(s);
        }
    }
    assert_eq!(accepted.len(), 5, "open connections");
    // Whatever the kernel holds toward `to` from the range, as ss lists it.
    let taken_by_ss = || {
        let out = std::process::Command::new("ss")
            .args(["-N", &client.name, "-Htan", "dst", &to.to_string()])
            .output()
            .expect("ss");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .nth(3)
                    .and_then(|a| a.rsplit_once(':'))
                    .and_then(|(_, p)| p.parse::<u16>().ok())
                    .is_some_and(|p| (40000..=40099).contains(&p))
            })
            .count() as u64
    };
    let label = format!("destination={to}");
    let ours =
        |http: &mut Http, family: &str| in_namespace(http, family, inode).get(&label).copied();
    wait_until("the ports as ss implies", Duration::from_secs(15), || {
        let taken = taken_by_ss();
        taken == 35
            && ours(&mut http, "tcpstate_ephemeral_ports_in_use") == Some(taken)
            && ours(&mut http, "tcpstate_ephemeral_ports_free") == Some(100 - taken)
    });
    // The snapshot (what `tracer top` shows) says the same.
    let snapshot: Snapshot =
        serde_json::from_str(&http.get("/api/v1/snapshot").body).expect("snapshot");
    let entry = snapshot
        .failing
        .ephemeral_ports
        .iter()
        .find(|p| p.destination == to.to_string() && p.netns == inode)
        .map(|p| (p.source.as_str(), p.in_use, p.free));
    assert_eq!(entry, Some(("10.95.0.1", 35, 65)), "{snapshot:?}");
    // With tcp_tw_reuse=1 a connect may take the TIME_WAIT ones: free
    // again once a dump reads the new setting.
    client.exec(&["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"]);
    wait_until("TIME_WAIT counted free", Duration::from_secs(25), || {
        ours(&mut http, "tcpstate_ephemeral_ports_free") == Some(95)
    });
    drop((open, accepted));
    assert!(daemon.stop().success());
}
