//! The daemon agrees with `ss` where the events alone could mislead it:
//! closes that leave no timewait socket, a connect whose port its first
//! event lacks, a namespace that only a thread keeps alive. Each case is
//! compared with `ss` before any dump could have corrected the daemon, or
//! after dumps that, wrong, would have broken it.

use std::{
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    process::Command,
    sync::mpsc,
    thread,
    time::Duration,
};

use socket2::{Domain, Socket, Type};
use testkit::{
    daemon::{Daemon, SMALL_RING, compared, gauges_in, wait_for_namespace_gauges},
    net::{Held, connect_pair, read_to_eof},
    netns::{NetNs, ns_inode},
    process::run,
    require_ebpf, ss, wait_until,
};

use crate::tracer;

/// No dump for an hour: what the gauges say comes from the events alone.
const NO_DUMPS: &[&str] = &["--reconcile-interval", "1h", "--netns-label", "true"];

fn linger_zero(stream: &TcpStream) {
    let socket = socket2::SockRef::from(stream);
    socket
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
}

#[test]
fn closes_that_leave_no_timewait_socket_are_not_counted_as_one() {
    require_ebpf!();
    let ns = NetNs::new("notw");
    let inode = ns_inode(&ns.path());
    let daemon = Daemon::start(tracer(), NO_DUMPS);
    let mut http = daemon.client();
    let _held = ns.run_inside(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut held = Held::default();
        // An orderly close, client first: a timewait socket (control).
        let (client, mut server) = connect_pair(&listener);
        drop(client);
        read_to_eof(&mut server);
        drop(server);
        // FIN_WAIT2 (half-closed), then SO_LINGER 0: a reset, none.
        let (client, mut server) = connect_pair(&listener);
        client.shutdown(Shutdown::Write).expect("shutdown");
        read_to_eof(&mut server);
        linger_zero(&client);
        drop(client);
        held.streams.push(server);
        // FIN_WAIT2, then the peer resets it: none.
        let (client, mut server) = connect_pair(&listener);
        client.shutdown(Shutdown::Write).expect("shutdown");
        read_to_eof(&mut server);
        linger_zero(&server);
        drop(server);
        held.streams.push(client);
        // FIN_WAIT2 with data unread, closed: a reset, none.
        let (client, mut server) = connect_pair(&listener);
        client.shutdown(Shutdown::Write).expect("shutdown");
        read_to_eof(&mut server);
        std::io::Write::write_all(&mut server, b"unread").expect("write");
        thread::sleep(Duration::from_millis(50));
        drop(client);
        held.streams.push(server);
        held.listeners.push(listener);
        held
    });
    wait_for_namespace_gauges(&mut http, &ns.name, inode, Duration::from_secs(10));
    let truth = ss::counts_in(&ns.name);
    let time_wait = truth.get("TIME_WAIT").copied().unwrap_or(0);
    let fin_wait2 = truth.get("FIN_WAIT2").copied().unwrap_or(0);
    assert_eq!(time_wait + fin_wait2, 1, "one timewait socket: {truth:?}");
    assert!(daemon.stop().success());
}

/// A socket that stays in SYN_SENT: its SYNs go out of one end of a veth
/// pair whose other end is down, so nothing ever answers.
fn connect_into_the_void(ns: &NetNs) -> Socket {
    let ip = |args: &[&str]| {
        run(Command::new("ip")
            .args(["netns", "exec", &ns.name, "ip"])
            .args(args));
    };
    ip(&[
        "link", "add", "void0", "type", "veth", "peer", "name", "void1",
    ]);
    ip(&["link", "set", "void0", "up"]);
    ip(&["addr", "add", "10.99.0.2/16", "dev", "void0"]);
    ns.run_inside(|| {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        socket.set_nonblocking(true).expect("nonblocking");
        let to: SocketAddr = "10.99.0.1:80".parse().expect("address");
        let _ = socket.connect(&to.into()); // EINPROGRESS
        socket
    })
}

#[test]
fn a_connect_in_syn_sent_is_counted_once_after_a_full_reconciliation() {
    require_ebpf!();
    // A small ring buffer, so that a burst loses events and the next
    // reconciliation dumps every state.
    let ns = NetNs::new("synsent");
    let inode = ns_inode(&ns.path());
    let daemon = Daemon::start(tracer(), SMALL_RING);
    let mut http = daemon.client();
    let _connecting = connect_into_the_void(&ns);
    wait_for_namespace_gauges(&mut http, &ns.name, inode, Duration::from_secs(10));
    assert_eq!(ss::counts_in(&ns.name).get("SYN_SENT"), Some(&1));
    // A burst the daemon cannot drain, elsewhere.
    let burst = NetNs::new("synsent-burst");
    let _kept = daemon.burst_while_stopped(&burst, 40);
    wait_until("the full reconciliation", Duration::from_secs(20), || {
        daemon.stderr().contains("full reconciliation fixed")
    });
    // Several reconciliations later, still one.
    thread::sleep(Duration::from_secs(1));
    let ours = gauges_in(&http.get("/metrics").body, inode);
    assert_eq!(
        compared(&ours),
        compared(&ss::counts_in(&ns.name)),
        "the connect's namespace after the full reconciliation"
    );
    assert!(daemon.stop().success());
}

/// A thread in a namespace of its own (unshare), which nothing else holds:
/// no process has it as its own and no name points at it.
struct ThreadNamespace {
    stop: mpsc::Sender<()>,
    thread: Option<thread::JoinHandle<()>>,
    /// A path that opens it while the thread lives.
    path: String,
}

impl ThreadNamespace {
    /// The thread makes `timewait` TIME_WAIT sockets and two established
    /// pairs in its namespace, then waits.
    fn start(timewait: usize) -> ThreadNamespace {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop, stop_rx) = mpsc::channel::<()>();
        let thread = thread::spawn(move || {
            // SAFETY: unshare of this thread's network namespace only.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
            // Its loopback up, from a child that inherits the namespace.
            run(Command::new("ip").args(["link", "set", "lo", "up"]));
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            for _ in 0..timewait {
                let (client, mut server) = connect_pair(&listener);
                drop(client);
                read_to_eof(&mut server);
                drop(server);
            }
            let held: Vec<(TcpStream, TcpStream)> =
                (0..2).map(|_| connect_pair(&listener)).collect();
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() };
            let path = format!("/proc/{}/task/{tid}/ns/net", std::process::id());
            ready_tx.send(path).expect("send");
            let _ = stop_rx.recv();
            drop((held, listener));
        });
        let path = ready_rx.recv().expect("the thread's namespace");
        ThreadNamespace {
            stop,
            thread: Some(thread),
            path,
        }
    }

    /// `ss -tan` counts inside it.
    fn ss_counts(&self) -> std::collections::BTreeMap<String, u64> {
        let out = Command::new("nsenter")
            .args([&format!("--net={}", self.path), "ss", "-Htan"])
            .output()
            .expect("nsenter ss");
        let mut counts = std::collections::BTreeMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(state) = line.split_whitespace().next().and_then(ss::state_name) {
                *counts.entry(state.to_owned()).or_insert(0) += 1;
            }
        }
        counts
    }
}

impl Drop for ThreadNamespace {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn sockets_of_a_namespace_only_a_thread_holds_survive_the_dumps() {
    require_ebpf!();
    let daemon = Daemon::start(
        tracer(),
        &["--reconcile-interval", "200ms", "--netns-label", "true"],
    );
    let mut http = daemon.client();
    let hidden = ThreadNamespace::start(3);
    let file = std::fs::File::open(&hidden.path).expect("open the namespace");
    let inode = ns_inode(std::path::Path::new(&format!(
        "/proc/self/fd/{}",
        file.as_raw_fd()
    )));
    let truth = hidden.ss_counts();
    assert_eq!(truth.get("TIME_WAIT"), Some(&3), "{truth:?}");
    // Dumps every 200 ms: a daemon that cannot find the namespace deletes
    // what the events showed there at the first.
    wait_until(
        "the hidden namespace's gauges to equal ss",
        Duration::from_secs(10),
        || compared(&gauges_in(&http.get("/metrics").body, inode)) == compared(&hidden.ss_counts()),
    );
    thread::sleep(Duration::from_secs(2));
    assert_eq!(
        compared(&gauges_in(&http.get("/metrics").body, inode)),
        compared(&hidden.ss_counts()),
        "after ten dumps"
    );
    drop(file);
    drop(hidden);
    assert!(daemon.stop().success());
}
