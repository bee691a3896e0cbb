//! `tracer daemon` under test as a guarded child process, and its gauges
//! held against `ss` across namespaces.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader},
    net::{SocketAddr, TcpListener},
    process::{Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

use crate::{
    http::{Http, get},
    net::{Held, connect_pair, read_to_eof},
    netns::NetNs,
    process::Guarded,
    prom::samples,
    ss::{self, COMPARED},
};

/// Flags for a daemon whose ring buffer a burst overflows (the smallest,
/// about 39 events; see [`Daemon::burst_while_stopped`]), reconciling
/// often, its gauges per namespace.
pub const SMALL_RING: &[&str] = &[
    "--ring-buffer-size",
    "4KiB",
    "--reconcile-interval",
    "200ms",
    "--netns-label",
    "true",
];

pub struct Daemon {
    proc: Guarded,
    pub addr: SocketAddr,
    /// Serving HTTPS (a web config with TLS).
    pub tls: bool,
    stderr: Arc<Mutex<String>>,
}

impl Daemon {
    /// Runs `command` (the tracer binary, or a wrapper such as setpriv with
    /// the binary as its last argument, and any environment) with `daemon
    /// --listen 127.0.0.1:0 ARGS`, and waits until it is ready (its
    /// /readyz, or its log, says so).
    pub fn start(mut command: Command, args: &[&str]) -> Daemon {
        command
            .args(["daemon", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut proc =
            Guarded::spawn(&mut command, "tracer daemon", libc::SIGTERM).expect("spawn tracer");
        let stderr = proc.child_mut().stderr.take().expect("stderr");
        let text = Arc::new(Mutex::new(String::new()));
        let sink = text.clone();
        let (addr_tx, addr_rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some((scheme, rest)) = line
                    .split_once("serving ")
                    .and_then(|(_, rest)| rest.split_once("://"))
                    && let Some(addr) = rest.split('/').next()
                    && let Ok(addr) = addr.parse::<SocketAddr>()
                {
                    let _ = addr_tx.send((addr, scheme == "https"));
                }
                let mut s = sink.lock().expect("lock");
                s.push_str(&line);
                s.push('\n');
            }
        });
        let Ok((addr, tls)) = addr_rx.recv_timeout(Duration::from_secs(20)) else {
            let _ = proc.kill();
            panic!(
                "daemon did not start serving; stderr:\n{}",
                text.lock().expect("lock")
            );
        };
        let mut daemon = Daemon {
            proc,
            addr,
            tls,
            stderr: text,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // Over TLS or behind basic auth this client cannot ask; the log
            // says it too (at the default log level).
            let ready = daemon.stderr().contains(": ready: ")
                || (!tls && get(addr, "/readyz").is_ok_and(|r| r.status == 200));
            if ready {
                return daemon;
            }
            assert!(
                Instant::now() <= deadline,
                "daemon not ready in 30 s; stderr:\n{}",
                daemon.stderr()
            );
            if let Some(status) = daemon.proc.exited() {
                panic!("daemon exited with {status}; stderr:\n{}", daemon.stderr());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("lock").clone()
    }

    pub fn client(&self) -> Http {
        Http::connect(self.addr)
    }

    /// Sends `signal` (SIGSTOP, SIGCONT, SIGKILL...).
    pub fn signal(&self, signal: libc::c_int) {
        self.proc.signal(signal);
    }

    /// SIGHUP: re-read the configuration.
    /// Stops the daemon (SIGSTOP), makes `pairs` loopback connections in
    /// `ns` (every other one held open, the rest closed client first into
    /// TIME_WAIT), then lets it go on: a burst it cannot drain, which
    /// overflows a small ring buffer. Returns what stays open.
    pub fn burst_while_stopped(&self, ns: &NetNs, pairs: usize) -> Held {
        // A stopped daemon drains nothing.
        self.signal(libc::SIGSTOP);
        let held = ns.run_inside(move || {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let mut held = Held::default();
            for i in 0..pairs {
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
        self.signal(libc::SIGCONT);
        held
    }

    pub fn hangup(&self) {
        self.signal(libc::SIGHUP);
    }

    /// Its exit status once it exits; panics after `limit`.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let pid = self.pid();
        self.proc
            .wait_within(limit)
            .unwrap_or_else(|| panic!("process {pid} did not exit within {limit:?}"))
    }

    /// SIGTERM and the exit status (within 10 s, or a panic).
    pub fn stop(mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait(Duration::from_secs(10))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A failing test shows what the daemon said, and whether it was alive.
        if thread::panicking() {
            let state = match self.proc.exited() {
                Some(status) => format!("exited with {status}"),
                None => "still running".to_owned(),
            };
            eprintln!("--- daemon ({state}) stderr:\n{}---", self.stderr());
        }
        let _ = self.proc.kill();
    }
}

/// `tcpstate_sockets` as state name -> count.
pub fn socket_gauges(metrics: &str) -> BTreeMap<String, u64> {
    samples(metrics, "tcpstate_sockets")
        .into_iter()
        .map(|(labels, v)| (labels.trim_start_matches("state=").to_owned(), v as u64))
        .collect()
}

/// `tcpstate_sockets{netns=INODE}` by state.
pub fn gauges_in(metrics: &str, inode: u32) -> BTreeMap<String, u64> {
    samples(metrics, "tcpstate_sockets")
        .into_iter()
        .filter_map(|(labels, v)| {
            let mut state = None;
            let mut ns = None;
            for pair in labels.split(',') {
                match pair.split_once('=') {
                    Some(("state", s)) => state = Some(s.to_owned()),
                    Some(("netns", n)) => ns = n.parse::<u32>().ok(),
                    _ => {}
                }
            }
            (ns == Some(inode)).then(|| (state.unwrap_or_default(), v as u64))
        })
        .collect()
}

/// The [`COMPARED`] states of `counts`, 0 for those it lacks.
pub fn compared(counts: &BTreeMap<String, u64>) -> Vec<(String, u64)> {
    COMPARED
        .iter()
        .map(|s| ((*s).to_owned(), counts.get(*s).copied().unwrap_or(0)))
        .collect()
}

/// Waits until the daemon's gauges for namespace `inode` (with
/// `--netns-label true`) equal `ss -N NAME` state by state.
pub fn wait_for_namespace_gauges(http: &mut Http, name: &str, inode: u32, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let ours = compared(&gauges_in(&http.get("/metrics").body, inode));
        let truth = compared(&ss::counts_in(name));
        if ours == truth {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}'s gauges do not equal ss -N:\n  tracer: {ours:?}\n  ss:     {truth:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until, between two scrapes that agree with each other, ss agrees
/// with them state by state; panics with both sides otherwise.
pub fn assert_gauges_match_ss(http: &mut Http, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let before = compared(&socket_gauges(&http.get("/metrics").body));
        let truth = compared(&ss::counts());
        let after = compared(&socket_gauges(&http.get("/metrics").body));
        if before == truth && truth == after {
            return;
        }
        if Instant::now() > deadline {
            let differing: Vec<&str> = COMPARED
                .iter()
                .zip(after.iter().zip(&truth))
                .filter(|(_, (ours, truth))| ours != truth)
                .map(|(s, _)| *s)
                .collect();
            panic!(
                "gauges do not match ss -tan:\n  tracer: {after:?}\n  ss:     {truth:?}\n\
                 ss -tanp, the states that differ:\n{}",
                ss::lines_in(&differing)
            );
        }
        thread::sleep(Duration::from_millis(300));
    }
}
