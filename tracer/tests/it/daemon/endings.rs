//! How connections end, against what the kernel told the sockets
//! themselves (each connect's own error) and what it counted in each
//! namespace (`Tcp:` in /proc/net/snmp: `AttemptFails`, `EstabResets`,
//! `OutRsts`). Each case runs in namespaces of its own, so other tests'
//! connections cannot blur the counts.

use std::{
    collections::BTreeMap,
    io::{ErrorKind, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    thread,
    time::Duration,
};

use socket2::{Domain, Socket, Type};
use testkit::{
    daemon::Daemon,
    http::Http,
    net::{connect_pair, read_to_eof},
    netns::{NetNs, ns_inode},
    prom, require_ebpf, wait_until,
};

use crate::tracer;

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
            Some(libc::ETIMEDOUT)
        ],
        "what connect() returned"
    );
    let expected = counts(&[
        ("destination=10.96.0.2:9,reason=refused", 1),
        ("destination=10.96.5.1:80,reason=unreachable", 1),
        ("destination=10.96.6.1:80,reason=timeout", 1),
        ("destination=10.96.6.2:80,reason=aborted", 1),
    ]);
    wait_until("the connect failures", Duration::from_secs(5), || {
        in_namespace(&mut http, "tcpstate_connect_failures_total", inode) == expected
    });
    // The kernel's own count of failed attempts (an application's close
    // in SYN_SENT is not one).
    assert_eq!(client.tcp_counters()["AttemptFails"], 3);
    // The refused connect received the one reset, in SYN_SENT.
    assert_eq!(
        in_namespace(&mut http, "tcpstate_resets_received_total", inode),
        counts(&[("state=SYN_SENT", 1)])
    );
    // The server's namespace sent it, for no socket.
    let sent = in_namespace(&mut http, "tcpstate_resets_sent_total", server_inode);
    if resets_for_no_socket_are_reported() {
        assert_eq!(sent, counts(&[("reason=no_socket", 1)]));
        assert_eq!(server.tcp_counters()["OutRsts"], 1);
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
