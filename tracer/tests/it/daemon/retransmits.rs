//! Retransmissions counted in the kernel, against the namespace's own
//! counters (`RetransSegs` in /proc/net/snmp, `TCPSynRetrans` in
//! /proc/net/netstat): a connection whose peer's ACKs go nowhere, and a
//! handshake whose SYN came from an address that never answers.

use std::{
    io::Write as _,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    time::Duration,
};

use socket2::{Domain, Protocol, Socket, Type};
use testkit::{
    daemon::Daemon,
    http::Http,
    netns::{NetNs, ns_inode},
    packet, prom, require_ebpf, wait_until,
};

use crate::tracer;

/// `family`'s value for `label` in namespace `inode`, if exported.
fn value(http: &mut Http, family: &str, label: &str, inode: u32) -> Option<u64> {
    let netns = format!("netns={inode}");
    prom::samples(&http.get("/metrics").body, family)
        .into_iter()
        .find(|(labels, _)| {
            let mut parts = labels.split(',');
            parts.clone().any(|l| l == label) && parts.any(|l| l == netns)
        })
        .map(|(_, v)| v as u64)
}

/// Every series of `family` in namespace `inode`.
fn series(http: &mut Http, family: &str, inode: u32) -> Vec<String> {
    let netns = format!("netns={inode}");
    prom::samples(&http.get("/metrics").body, family)
        .into_iter()
        .filter(|(labels, _)| labels.split(',').any(|l| l == netns))
        .map(|(labels, _)| labels)
        .collect()
}

/// A connection from `client` (from address `from`) to a new listener of
/// `server`.
struct Connection {
    stream: TcpStream,
    accepted: TcpStream,
    /// Kept open: a dump finds the port listened on.
    _listener: TcpListener,
    to: SocketAddr,
}

fn connection(client: &NetNs, from: &str, server: &NetNs) -> Connection {
    let listener = server.run_inside(|| TcpListener::bind("10.94.0.2:0").expect("bind"));
    let to = listener.local_addr().expect("address");
    let from: SocketAddr = format!("{from}:0").parse().expect("address");
    let stream = client.run_inside(move || {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        socket.bind(&from.into()).expect("bind");
        socket.connect(&to.into()).expect("connect");
        TcpStream::from(socket)
    });
    let (accepted, _) = listener.accept().expect("accept");
    Connection {
        stream,
        accepted,
        _listener: listener,
        to,
    }
}

#[test]
fn data_retransmissions_by_destination_and_by_listener_equal_retrans_segs() {
    require_ebpf!();
    let (client, server) = (NetNs::new("rtc"), NetNs::new("rts"));
    client.link_to(&server, "rt", "10.94.0.1", "10.94.0.2");
    client.exec(&["ip", "addr", "add", "10.94.0.3/24", "dev", "rt0"]);
    let (client_ns, server_ns) = (ns_inode(&client.path()), ns_inode(&server.path()));
    // Toward the server, one connection older than the daemon (its
    // listener is known from the first dump) and one it sees accepted.
    let older = connection(&client, "10.94.0.3", &server);
    let daemon = Daemon::start(tracer(), &["--netns-label", "true"]);
    let mut http = daemon.client();
    let newer = connection(&client, "10.94.0.3", &server);
    let toward = connection(&client, "10.94.0.1", &server);
    // What the client sends from 10.94.0.3 goes nowhere from now on: the
    // server's data to it is never acknowledged, and the server
    // retransmits. The server's ACKs to 10.94.0.1 go nowhere: the client
    // retransmits what it writes.
    client.exec(&["ip", "rule", "add", "from", "10.94.0.3", "table", "100"]);
    client.exec(&["ip", "route", "add", "blackhole", "default", "table", "100"]);
    server.exec(&["ip", "route", "add", "blackhole", "10.94.0.1/32"]);
    for c in [&older, &newer] {
        (&c.accepted)
            .write_all(b"never acknowledged")
            .expect("write");
    }
    (&toward.stream)
        .write_all(b"never acknowledged")
        .expect("write");
    let destination = format!("destination={}", toward.to);
    let listeners = [older.to, newer.to];
    let served = |http: &mut Http| -> Option<u64> {
        let family = "tcpstate_listener_retransmits_total";
        listeners
            .iter()
            .map(|to| value(http, family, &format!("listener={to}"), server_ns))
            .sum()
    };
    wait_until(
        "retransmissions as each side's RetransSegs counts them",
        Duration::from_secs(10),
        || {
            let client_kernel = client.tcp_counters()["RetransSegs"];
            let server_kernel = server.tcp_counters()["RetransSegs"];
            client_kernel >= 2
                && server_kernel >= 4
                && value(
                    &mut http,
                    "tcpstate_retransmits_total",
                    &destination,
                    client_ns,
                ) == Some(client_kernel)
                && served(&mut http) == Some(server_kernel)
        },
    );
    // The server's side is never labelled by a client's ephemeral port.
    let server_side = series(&mut http, "tcpstate_retransmits_total", server_ns);
    assert!(
        server_side.is_empty(),
        "the server's retransmissions went by destination: {server_side:?}"
    );
    assert!(daemon.stop().success());
}

#[test]
fn synack_retransmissions_of_a_listener_equal_tcp_syn_retrans() {
    require_ebpf!();
    let (client, server) = (NetNs::new("sac"), NetNs::new("sas"));
    client.link_to(&server, "sa", "10.93.0.1", "10.93.0.2");
    let inode = ns_inode(&server.path());
    let daemon = Daemon::start(tracer(), &["--netns-label", "true"]);
    let mut http = daemon.client();
    let listener = server.run_inside(|| TcpListener::bind("10.93.0.2:0").expect("bind"));
    let SocketAddr::V4(to) = listener.local_addr().expect("address") else {
        panic!("not IPv4");
    };
    // A SYN from an address nobody has: the server's SYN-ACKs are never
    // answered, and it retransmits them (after 1 s, 3 s, ...).
    client.run_inside(move || {
        let raw = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(libc::IPPROTO_RAW)),
        )
        .expect("raw socket");
        let from = SocketAddrV4::new(Ipv4Addr::new(10, 93, 0, 77), 40404);
        let dst = SocketAddr::V4(SocketAddrV4::new(*to.ip(), 0));
        raw.send_to(&packet::tcp_syn(from, to), &dst.into())
            .expect("send the SYN");
    });
    let label = format!("listener={to}");
    wait_until(
        "SYN-ACK retransmissions as TCPSynRetrans counts them",
        Duration::from_secs(10),
        || {
            let kernel = server.tcp_ext_counters()["TCPSynRetrans"];
            kernel >= 1
                && value(
                    &mut http,
                    "tcpstate_synack_retransmits_total",
                    &label,
                    inode,
                ) == Some(kernel)
        },
    );
    drop(listener);
    assert!(daemon.stop().success());
}
