//! Leaked sockets are owned by the process that holds them, as `ss -p`
//! names it: a prefork server whose parent listens and whose children
//! accept, and SO_REUSEPORT listeners of two processes on one port, one of
//! which stops listening.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Write as _},
    net::TcpStream,
    process::{Child, Command, Stdio},
    time::Duration,
};

use testkit::{http::Http, prom, require_ebpf, wait_until};
use tracer::serve::snapshot::Snapshot;

use crate::leak_watching_daemon;

/// Python servers that accept and never close. Each process names itself
/// (writes /proc/self/comm), so owners can be told apart by name.
pub(super) const PREFORK: &str = "\
import os, socket, sys
def name(n): open('/proc/self/comm', 'w').write(n)
name('prefork-parent')
s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(64)
print(s.getsockname()[1], flush=True)
kids = []
for i in range(2):
    pid = os.fork()
    if pid == 0:
        name('prefork-worker')
        held = []
        while True: held.append(s.accept()[0])
    kids.append(pid)
sys.stdin.read()
for k in kids: os.kill(k, 9)
";

/// ARGV: NAME PORT. Listens with SO_REUSEPORT on PORT (0: any), prints the
/// port, accepts on a thread; a line on stdin closes the listener (the
/// accepted sockets stay), the end of stdin exits.
const REUSEPORT: &str = "\
import socket, sys, threading
open('/proc/self/comm', 'w').write(sys.argv[1])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(('127.0.0.1', int(sys.argv[2]))); s.listen(64)
print(s.getsockname()[1], flush=True)
held = []
def accept():
    try:
        while True: held.append(s.accept()[0])
    except OSError: pass
threading.Thread(target=accept, daemon=True).start()
sys.stdin.readline(); s.shutdown(socket.SHUT_RDWR); s.close()
print('closed', flush=True)
sys.stdin.read()
";

pub(super) struct Server {
    child: Child,
    lines: BufReader<std::process::ChildStdout>,
}

impl Server {
    pub(super) fn start(script: &str, args: &[&str]) -> Server {
        Server::start_in(None, script, args)
    }

    /// In network namespace `ns` (an `ip netns` name), if given.
    pub(super) fn start_in(ns: Option<&str>, script: &str, args: &[&str]) -> Server {
        let mut command = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "/usr/bin/python3"]);
                c
            }
            None => Command::new("/usr/bin/python3"),
        };
        let mut child = command
            .arg("-c")
            .arg(script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let lines = BufReader::new(child.stdout.take().expect("stdout"));
        Server { child, lines }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.lines.read_line(&mut line).expect("read");
        line.trim().to_owned()
    }

    pub(super) fn port(&mut self) -> u16 {
        self.line().parse().expect("a port")
    }

    fn say(&mut self, text: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(text.as_bytes()).expect("write");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Connects `n` clients to `port` and closes them: the server's ends go
/// to CLOSE_WAIT and stay, held by whoever accepted them.
fn leak(port: u16, n: usize) {
    for _ in 0..n {
        drop(TcpStream::connect(("127.0.0.1", port)).expect("connect"));
    }
}

/// `ss -tanp`'s first holder of every CLOSE-WAIT socket on local `port`:
/// (remote address, (pid, name)).
fn ss_owners(port: u16) -> BTreeMap<String, (u32, String)> {
    ss_owners_in(None, port)
}

/// The same in network namespace `ns` (an `ip netns` name), if given.
pub(super) fn ss_owners_in(ns: Option<&str>, port: u16) -> BTreeMap<String, (u32, String)> {
    let mut ss = Command::new("ss");
    if let Some(ns) = ns {
        ss.args(["-N", ns]);
    }
    let out = ss
        .args(["-Htanp", "state", "close-wait", &format!("sport = :{port}")])
        .output()
        .expect("ss");
    let mut owners = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // Recv-Q Send-Q Local Peer Process (the state is filtered out).
        let (Some(peer), Some(users)) = (fields.get(3), fields.get(4)) else {
            continue;
        };
        let first = users.trim_start_matches("users:((");
        let name = first.split('"').nth(1).unwrap_or_default().to_owned();
        let pid = first
            .split("pid=")
            .nth(1)
            .and_then(|p| p.split(',').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        owners.insert((*peer).to_owned(), (pid, name));
    }
    owners
}

/// The daemon's leaks on local `port`: (remote address, (pid, name)).
fn daemon_owners(http: &mut Http, port: u16) -> BTreeMap<String, (u32, String)> {
    daemon_owners_in(http, None, port)
}

/// The same in the namespace with inode `netns`, if given.
pub(super) fn daemon_owners_in(
    http: &mut Http,
    netns: Option<u32>,
    port: u16,
) -> BTreeMap<String, (u32, String)> {
    let snapshot: Snapshot =
        serde_json::from_str(&http.get("/api/v1/snapshot").body).expect("snapshot");
    snapshot
        .close_wait_leaks
        .into_iter()
        .filter(|l| l.local.ends_with(&format!(":{port}")))
        .filter(|l| netns.is_none_or(|n| l.netns == n))
        .map(|l| (l.remote, (l.pid, l.comm)))
        .collect()
}

fn leaked(http: &mut Http, comm: &str) -> f64 {
    prom::samples(
        &http.get("/metrics").body,
        "tcpstate_close_wait_leaked_sockets",
    )
    .get(&format!("comm={comm}"))
    .copied()
    .unwrap_or(0.0)
}

/// Waits until the daemon names `n` leaks on `port` exactly as `ss -p` does.
fn wait_for_owners_as_ss(http: &mut Http, port: u16, n: usize) {
    wait_until(
        &format!("{n} leaks on port {port} owned as ss -p says"),
        Duration::from_secs(30),
        || {
            let truth = ss_owners(port);
            truth.len() == n && daemon_owners(http, port) == truth
        },
    );
}

#[test]
fn a_prefork_servers_leaks_belong_to_the_workers_that_accepted_them() {
    require_ebpf!();
    let daemon = leak_watching_daemon();
    let mut http = daemon.client();
    let mut server = Server::start(PREFORK, &[]);
    let port = server.port();
    leak(port, 4);
    wait_for_owners_as_ss(&mut http, port, 4);
    // The gauge follows at the next sweep.
    wait_until(
        "the workers' name in the gauge",
        Duration::from_secs(5),
        || leaked(&mut http, "prefork-worker") == 4.0,
    );
    assert_eq!(leaked(&mut http, "prefork-parent"), 0.0);
    let log = daemon.stderr();
    assert!(
        log.matches("close_wait_leak pid=").count() >= 4
            && log.contains("comm=prefork-worker")
            && !log.contains("comm=prefork-parent"),
        "{log}"
    );
    server.say("");
    drop(server);
    assert!(daemon.stop().success());
}

#[test]
fn reuseport_listeners_keep_their_own_leaks() {
    require_ebpf!();
    let daemon = leak_watching_daemon();
    let mut http = daemon.client();
    let mut alpha = Server::start(REUSEPORT, &["reuse-alpha", "0"]);
    let port = alpha.port();
    let port_arg = port.to_string();
    let mut beta = Server::start(REUSEPORT, &["reuse-beta", &port_arg]);
    assert_eq!(beta.port(), port);
    // Connections spread over both by their hash.
    leak(port, 8);
    wait_for_owners_as_ss(&mut http, port, 8);
    // alpha stops listening; its accepted sockets stay, and what comes
    // now goes to beta.
    alpha.say("close\n");
    assert_eq!(alpha.line(), "closed");
    leak(port, 4);
    wait_for_owners_as_ss(&mut http, port, 12);
    let alpha_holds = ss_owners(port)
        .values()
        .filter(|(_, name)| name == "reuse-alpha")
        .count() as f64;
    wait_until("both names in the gauge", Duration::from_secs(5), || {
        leaked(&mut http, "reuse-alpha") == alpha_holds
            && leaked(&mut http, "reuse-beta") == 12.0 - alpha_holds
    });
    drop((alpha, beta));
    assert!(daemon.stop().success());
}
