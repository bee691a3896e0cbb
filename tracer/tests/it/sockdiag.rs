//! sock_diag, network namespaces and socket owners against the real kernel:
//! real sockets on loopback, `ss` as ground truth, `ip netns` namespaces.
//! Needs root; in CI (CI=true) these tests must run.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::fs::MetadataExt as _,
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use testkit::{
    net::{bound_listener, read_to_eof},
    netns::{NetNs, ns_inode},
    require_root,
};
use tracer::sockets::{
    netns, procfs,
    sockdiag::{self, ALL_STATES, DiagSocket},
};
use tracer_common::TcpState;

/// A socket's inode, as sock_diag and /proc/PID/fd report it.
fn inode_of(fd: &impl std::os::fd::AsFd) -> u32 {
    let file = std::fs::File::from(fd.as_fd().try_clone_to_owned().expect("dup"));
    u32::try_from(file.metadata().expect("fstat").ino()).expect("inode fits u32")
}

fn render(sockets: &[DiagSocket]) -> String {
    sockets
        .iter()
        .map(|s| {
            format!(
                "  state={} {} -> {} inode={} timer={} expires={}ms\n",
                s.state, s.local, s.remote, s.inode, s.timer, s.expires_ms
            )
        })
        .collect()
}

/// Polls the dump until a socket matching `pred` shows up.
fn wait_for_socket(what: &str, pred: impl Fn(&DiagSocket) -> bool) -> DiagSocket {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let all = sockdiag::dump_all(ALL_STATES).expect("dump");
        if let Some(s) = all.iter().find(|s| pred(s)) {
            return *s;
        }
        if Instant::now() > deadline {
            panic!("no socket for {what}; dump:\n{}", render(&all));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Listener, an established pair, a CLOSE_WAIT and a TIME_WAIT on `ip`: each
/// must appear in the dump with the right state and addresses.
fn states_on(ip: &str) {
    let (listener, _) = bound_listener(ip);
    listener.listen(16).expect("listen");
    let listener: TcpListener = listener.into();
    let laddr = listener.local_addr().expect("addr");
    let unspecified: SocketAddr = if laddr.is_ipv6() {
        "[::]:0".parse().expect("addr")
    } else {
        "0.0.0.0:0".parse().expect("addr")
    };

    // Established pair.
    let client = TcpStream::connect(laddr).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    let caddr = client.local_addr().expect("addr");

    // CLOSE_WAIT: the client closes, the server reads EOF and keeps its end.
    let closer = TcpStream::connect(laddr).expect("connect");
    let (mut close_wait, _) = listener.accept().expect("accept");
    let cw_peer = closer.local_addr().expect("addr");
    drop(closer);
    read_to_eof(&mut close_wait);

    // TIME_WAIT: the client closes first, the server closes after EOF; the
    // client's end waits out 2*MSL.
    let active = TcpStream::connect(laddr).expect("connect");
    let (mut passive, _) = listener.accept().expect("accept");
    let tw_addr = active.local_addr().expect("addr");
    drop(active);
    read_to_eof(&mut passive);
    drop(passive);

    // A request socket (SYN_RECV): with TCP_DEFER_ACCEPT the server drops
    // the client's bare final ACK and keeps the request until data comes,
    // while the client is already ESTABLISHED.
    let (deferred, _) = bound_listener(ip);
    set_defer_accept(&deferred);
    deferred.listen(16).expect("listen");
    let deferred: TcpListener = deferred.into();
    let daddr = deferred.local_addr().expect("addr");
    let waiting = TcpStream::connect(daddr).expect("connect");
    let waddr = waiting.local_addr().expect("addr");

    let l = wait_for_socket("listener", |s| {
        s.local == laddr && s.state == TcpState::Listen.number()
    });
    assert_eq!(l.remote, unspecified);
    assert_eq!(l.inode, inode_of(&listener));

    let c = wait_for_socket("established client", |s| {
        s.local == caddr && s.remote == laddr
    });
    assert_eq!(c.state, TcpState::Established.number());
    assert_eq!(c.remote, laddr);
    assert_eq!(c.inode, inode_of(&client));
    let s = wait_for_socket("established server", |s| {
        s.local == laddr && s.remote == caddr
    });
    assert_eq!(s.state, TcpState::Established.number());
    assert_eq!(s.inode, inode_of(&server));

    let cw = wait_for_socket("close-wait server", |s| {
        s.local == laddr && s.remote == cw_peer
    });
    assert_eq!(cw.state, TcpState::CloseWait.number());
    assert_eq!(cw.inode, inode_of(&close_wait));

    let tw = wait_for_socket("time-wait client", |s| {
        s.local == tw_addr && s.remote == laddr && s.state == TcpState::TimeWait.number()
    });
    assert_eq!(tw.remote, laddr);
    assert_eq!(tw.timer, sockdiag::timer::TIME_WAIT, "{tw:?}");
    assert!(
        tw.expires_ms > 0 && tw.expires_ms <= 60_000,
        "TIME_WAIT expires in {} ms",
        tw.expires_ms
    );
    assert_eq!(tw.inode, 0, "timewait sockets have no file");
    let req = wait_for_socket("request socket", |s| s.local == daddr && s.remote == waddr);
    assert_eq!(req.state, TcpState::SynRecv.number(), "{req:?}");
    assert_eq!(req.inode, 0, "request sockets have no file");
    assert_eq!(req.timer, sockdiag::timer::RETRANSMIT, "SYN-ACK timer");
    // Bit 3 alone selects request sockets too (the kernel adds
    // NEW_SYN_RECV to a SYN_RECV request).
    let syn_recv = sockdiag::dump_all(sockdiag::state_mask(&[TcpState::SynRecv])).expect("dump");
    assert!(
        syn_recv
            .iter()
            .any(|s| s.local == daddr && s.remote == waddr),
        "{}",
        render(&syn_recv)
    );

    for s in [l, c, s, cw, tw, req] {
        let want = if ip.contains(':') {
            tracer::kernel::event::Family::V6
        } else {
            tracer::kernel::event::Family::V4
        };
        assert_eq!(s.family, want, "{s:?}");
    }
}

/// Sets TCP_DEFER_ACCEPT (5 s) on a listener to be.
fn set_defer_accept(socket: &socket2::Socket) {
    use std::os::fd::AsRawFd as _;
    let secs: libc::c_int = 5;
    // SAFETY: setsockopt on an open socket with a c_int option value.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&secs as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "TCP_DEFER_ACCEPT: {}",
        std::io::Error::last_os_error()
    );
}

#[test]
fn dump_sees_each_state_ipv4() {
    require_root!();
    states_on("127.0.0.1");
}

#[test]
fn dump_sees_each_state_ipv6() {
    require_root!();
    states_on("::1");
}

/// An IPv4 connection to a dual-stack IPv6 listener belongs to AF_INET6
/// sockets: the dump reports it as V6 with IPv4-mapped addresses, once.
#[test]
fn ipv4_mapped_connections_dump_as_v6() {
    require_root!();
    let listener = TcpListener::bind("[::]:0").expect("bind dual-stack");
    let port = listener.local_addr().expect("addr").port();
    let client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    let caddr = client.local_addr().expect("addr");
    let mapped = |a: SocketAddr| match a.ip() {
        std::net::IpAddr::V4(v4) => SocketAddr::new(v4.to_ipv6_mapped().into(), a.port()),
        std::net::IpAddr::V6(_) => a,
    };
    let server_inode = inode_of(&server);
    let s = wait_for_socket("accepted dual-stack socket", |s| s.inode == server_inode);
    assert_eq!(s.family, tracer::kernel::event::Family::V6);
    assert_eq!(s.remote, mapped(caddr));
    assert_eq!(s.local, mapped(client.peer_addr().expect("peer")));
    let all = sockdiag::dump_all(ALL_STATES).expect("dump");
    assert_eq!(all.iter().filter(|s| s.inode == server_inode).count(), 1);
    // The client is a plain IPv4 socket.
    let c = wait_for_socket("ipv4 client", |s| {
        s.local == caddr && s.remote == client.peer_addr().expect("peer")
    });
    assert_eq!(c.family, tracer::kernel::event::Family::V4);
}

/// `ss -Htan`'s state column as kernel state numbers.
fn ss_counts() -> BTreeMap<u8, usize> {
    let out = Command::new("ss").arg("-Htan").output().expect("run ss");
    assert!(out.status.success(), "ss failed: {out:?}");
    let mut counts = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let state = match name {
            "ESTAB" => TcpState::Established,
            "SYN-SENT" => TcpState::SynSent,
            "SYN-RECV" => TcpState::SynRecv,
            "FIN-WAIT-1" => TcpState::FinWait1,
            "FIN-WAIT-2" => TcpState::FinWait2,
            "TIME-WAIT" => TcpState::TimeWait,
            "UNCONN" => TcpState::Close,
            "CLOSE-WAIT" => TcpState::CloseWait,
            "LAST-ACK" => TcpState::LastAck,
            "LISTEN" => TcpState::Listen,
            "CLOSING" => TcpState::Closing,
            other => panic!("unknown ss state {other:?} in {line:?}"),
        };
        *counts.entry(state.number()).or_default() += 1;
    }
    counts
}

fn dump_counts() -> BTreeMap<u8, usize> {
    let mut counts = BTreeMap::new();
    sockdiag::dump(ALL_STATES, |s| *counts.entry(s.state).or_default() += 1).expect("dump");
    counts
}

#[test]
fn counts_match_ss() {
    require_root!();
    // Other tests in this binary open and close sockets in parallel; a
    // quiet moment comes soon.
    let mut last = (BTreeMap::new(), BTreeMap::new());
    for _ in 0..50 {
        let ours = dump_counts();
        let ss = ss_counts();
        if ours == ss {
            return;
        }
        last = (ours, ss);
        thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "state counts differ (state number -> count):\n  sock_diag: {:?}\n  ss:        {:?}",
        last.0, last.1
    );
}

#[test]
fn run_in_sees_only_that_namespace() {
    require_root!();
    let ns = NetNs::new("sockdiag-runin");
    let listener = ns.run_inside(|| TcpListener::bind("127.0.0.1:0").expect("bind"));
    let addr = listener.local_addr().expect("addr");
    let inode = inode_of(&listener);
    let target = netns::NetNs {
        inode: ns_inode(&ns.path()),
        path: ns.path(),
    };

    let inside = netns::run_in(&target, || sockdiag::dump_all(ALL_STATES))
        .expect("enter namespace")
        .expect("dump inside");
    assert!(
        inside.iter().any(|s| s.inode == inode && s.local == addr),
        "listener {addr} (inode {inode}) missing inside; dump:\n{}",
        render(&inside)
    );
    let seen_ns = netns::run_in(&target, netns::current_inode)
        .expect("enter namespace")
        .expect("current inode");
    assert_eq!(seen_ns, target.inode);

    let host = sockdiag::dump_all(ALL_STATES).expect("dump host");
    assert!(
        !host.iter().any(|s| s.inode == inode),
        "namespace listener leaked into the host dump:\n{}",
        render(&host)
    );
}

#[test]
fn list_finds_host_and_test_namespaces() {
    require_root!();
    let ns = NetNs::new("sockdiag-list");
    let host = ns_inode(Path::new("/proc/self/ns/net"));
    let test = ns_inode(&ns.path());
    assert_ne!(host, test);
    let all = netns::list();
    assert_eq!(all.first().map(|n| n.inode), Some(host), "{all:?}");
    assert_eq!(netns::current_inode().expect("current"), host);
    let found = all
        .iter()
        .find(|n| n.inode == test)
        .unwrap_or_else(|| panic!("test namespace {test} not in {all:?}"));
    // Whatever path list() chose must open the same namespace.
    assert_eq!(ns_inode(&found.path), test);
}

#[test]
fn socket_owners_maps_listener_to_this_process() {
    require_root!();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let s = wait_for_socket("listener", |s| {
        s.local == addr && s.state == TcpState::Listen.number()
    });
    assert_ne!(s.inode, 0);
    let owners = procfs::socket_owners();
    assert_eq!(owners.get(&s.inode), Some(&std::process::id()));
    let comm = procfs::comm(std::process::id()).expect("own comm");
    assert!(!comm.is_empty());
}
