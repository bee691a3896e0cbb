//! `tracer daemon` as a child process, a keep-alive HTTP client for it (so
//! scraping does not itself open and close connections that would change
//! the counts being checked), and `ss` as ground truth across namespaces.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

use super::{connect_pair, read_to_eof, tracer_bin, wait_until};

pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
    /// Serving HTTPS (a web config with TLS).
    pub tls: bool,
    stderr: Arc<Mutex<String>>,
}

impl Daemon {
    /// Starts `tracer daemon --listen 127.0.0.1:0 ARGS` and waits until it
    /// is ready (its /readyz says so).
    pub fn start(args: &[&str]) -> Daemon {
        Daemon::start_with(Command::new(tracer_bin()), args)
    }

    /// The same with `command` (the tracer binary, or a wrapper such as
    /// setpriv with the binary as its last argument, and any environment).
    pub fn start_with(mut command: Command, args: &[&str]) -> Daemon {
        let mut child = command
            .args(["daemon", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tracer daemon");
        let stderr = child.stderr.take().expect("stderr");
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
        let (addr, tls) = match addr_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "daemon did not start serving; stderr:\n{}",
                    text.lock().expect("lock")
                );
            }
        };
        let mut daemon = Daemon {
            child,
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
            if Instant::now() > deadline {
                let _ = daemon.child.kill();
                panic!("daemon not ready in 30 s; stderr:\n{}", daemon.stderr());
            }
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!("daemon exited with {status}; stderr:\n{}", daemon.stderr());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("lock").clone()
    }

    pub fn client(&self) -> Http {
        Http::connect(self.addr)
    }

    /// SIGHUP: re-read the configuration.
    pub fn hangup(&self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGHUP) };
    }

    /// SIGTERM and the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        super::wait_timeout(&mut self.child, Duration::from_secs(10))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A failing test shows what the daemon said, and whether it was alive.
        if thread::panicking() {
            let state = match self.child.try_wait() {
                Ok(Some(status)) => format!("exited with {status}"),
                _ => "still running".to_owned(),
            };
            eprintln!("--- daemon ({state}) stderr:\n{}---", self.stderr());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// One HTTP/1.1 request on a fresh connection.
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<Response> {
    request(addr, "GET", path)
}

pub fn request(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<Response> {
    let mut http = Http::try_connect(addr)?;
    http.send(method, path)
}

/// A keep-alive HTTP/1.1 connection: one socket for every scrape.
pub struct Http {
    stream: BufReader<TcpStream>,
}

impl Http {
    pub fn connect(addr: SocketAddr) -> Http {
        Http::try_connect(addr).expect("connect to daemon")
    }

    fn try_connect(addr: SocketAddr) -> std::io::Result<Http> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Http {
            stream: BufReader::new(stream),
        })
    }

    pub fn get(&mut self, path: &str) -> Response {
        self.send("GET", path).expect("HTTP request")
    }

    fn send(&mut self, method: &str, path: &str) -> std::io::Result<Response> {
        write!(
            self.stream.get_mut(),
            "{method} {path} HTTP/1.1\r\nHost: tracer\r\n\r\n"
        )?;
        let mut status_line = String::new();
        self.stream.read_line(&mut status_line)?;
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.stream.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; if method == "HEAD" { 0 } else { len }];
        self.stream.read_exact(&mut body)?;
        Ok(Response {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// Samples of one metric family: label set (as `k=v,...`) -> value.
pub fn samples(metrics: &str, name: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in metrics.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, labels) = match series.split_once('{') {
            Some((m, l)) => (m, l.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        let labels = labels.replace('"', "");
        if let Ok(v) = value.parse() {
            out.insert(labels, v);
        }
    }
    out
}

/// `tcpstate_sockets` as state name -> count.
pub fn socket_gauges(metrics: &str) -> BTreeMap<String, u64> {
    samples(metrics, "tcpstate_sockets")
        .into_iter()
        .map(|(labels, v)| (labels.trim_start_matches("state=").to_owned(), v as u64))
        .collect()
}

/// ss's state names, as tracer names them.
fn state_name(ss: &str) -> Option<&'static str> {
    Some(match ss {
        "ESTAB" => "ESTABLISHED",
        "SYN-SENT" => "SYN_SENT",
        "SYN-RECV" => "SYN_RECV",
        "FIN-WAIT-1" => "FIN_WAIT1",
        "FIN-WAIT-2" => "FIN_WAIT2",
        "TIME-WAIT" => "TIME_WAIT",
        "CLOSE-WAIT" => "CLOSE_WAIT",
        "LAST-ACK" => "LAST_ACK",
        "LISTEN" => "LISTEN",
        "CLOSING" => "CLOSING",
        _ => return None,
    })
}

/// Every network namespace (by a path that opens it), found independently
/// of tracer: /proc/*/ns/net and /run/netns/*, unique by inode.
pub fn all_namespaces() -> Vec<String> {
    use std::os::unix::fs::MetadataExt as _;
    let mut seen = std::collections::HashSet::new();
    let mut paths = Vec::new();
    let mut candidates = vec!["/proc/self/ns/net".to_owned()];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            if e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
            {
                candidates.push(format!("/proc/{}/ns/net", e.file_name().to_string_lossy()));
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir("/run/netns") {
        for e in dir.flatten() {
            candidates.push(e.path().display().to_string());
        }
    }
    for c in candidates {
        if let Ok(m) = std::fs::metadata(&c)
            && seen.insert(m.ino())
        {
            paths.push(c);
        }
    }
    paths
}

/// Adds `ss -Htan`'s lines (run with `args` first) to `counts` by state.
fn count_ss(args: &[&str], counts: &mut BTreeMap<String, u64>) {
    let Ok(out) = Command::new(args[0]).args(&args[1..]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(state) = line.split_whitespace().next().and_then(state_name) {
            *counts.entry(state.to_owned()).or_insert(0) += 1;
        }
    }
}

/// `ss -tanp` lines of every namespace whose state is one of `states`: the
/// sockets behind a mismatch, with their owners.
fn ss_lines_in(states: &[&str]) -> String {
    let mut lines = String::new();
    for ns in all_namespaces() {
        let Ok(out) = Command::new("nsenter")
            .args([&format!("--net={ns}"), "ss", "-Htanp"])
            .output()
        else {
            continue;
        };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let state = line.split_whitespace().next().and_then(state_name);
            if state.is_some_and(|s| states.contains(&s)) {
                lines.push_str(&format!("    {ns}: {line}\n"));
            }
        }
    }
    lines
}

/// What `ss -tan` counts per state, summed over every network namespace.
pub fn ss_counts() -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for ns in all_namespaces() {
        count_ss(
            &["nsenter", &format!("--net={ns}"), "ss", "-Htan"],
            &mut counts,
        );
    }
    counts
}

/// What `ss -N NAME -tan` counts per state in one named namespace.
pub fn ss_counts_in(name: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    count_ss(&["ss", "-N", name, "-Htan"], &mut counts);
    counts
}

/// The states the daemon must count exactly as ss does (SYN_RECV is
/// different by design: ss shows half-open request sockets).
pub const COMPARED: [&str; 9] = [
    "ESTABLISHED",
    "SYN_SENT",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE_WAIT",
    "LAST_ACK",
    "CLOSING",
    "LISTEN",
];

/// Waits until the daemon's gauges for namespace `inode` (with
/// `--netns-label true`) equal `ss -N NAME` state by state.
pub fn wait_for_namespace_gauges(http: &mut Http, name: &str, inode: u32, within: Duration) {
    wait_until(&format!("{name}'s gauges to equal ss -N"), within, || {
        let ours = gauges_in(&http.get("/metrics").body, inode);
        let truth = ss_counts_in(name);
        COMPARED
            .iter()
            .all(|s| ours.get(*s).copied().unwrap_or(0) == truth.get(*s).copied().unwrap_or(0))
    });
}

/// Waits until, between two scrapes that agree with each other, ss agrees
/// with them state by state; panics with both sides otherwise.
pub fn assert_gauges_match_ss(http: &mut Http, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let before = socket_gauges(&http.get("/metrics").body);
        let truth = ss_counts();
        let after = socket_gauges(&http.get("/metrics").body);
        let pick = |m: &BTreeMap<String, u64>| -> Vec<(String, u64)> {
            COMPARED
                .iter()
                .map(|s| ((*s).to_owned(), m.get(*s).copied().unwrap_or(0)))
                .collect()
        };
        let (b, t, a) = (pick(&before), pick(&truth), pick(&after));
        if b == t && t == a {
            return;
        }
        if Instant::now() > deadline {
            let differing: Vec<&str> = COMPARED
                .iter()
                .zip(a.iter().zip(&t))
                .filter(|(_, (ours, truth))| ours != truth)
                .map(|(s, _)| *s)
                .collect();
            panic!(
                "gauges do not match ss -tan:\n  tracer: {a:?}\n  ss:     {t:?}\n\
                 ss -tanp, the states that differ:\n{}",
                ss_lines_in(&differing)
            );
        }
        thread::sleep(Duration::from_millis(300));
    }
}

/// True once the server has closed `stream` (EOF or reset).
pub fn closed_by_server(mut stream: &TcpStream, within: Duration) -> bool {
    use std::io::Read as _;
    stream.set_read_timeout(Some(within)).expect("timeout");
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// Sockets a test keeps open so their states persist.
#[derive(Default)]
pub struct Held {
    pub listeners: Vec<TcpListener>,
    pub streams: Vec<TcpStream>,
}

/// On `ip`: a listener, two established pairs, a server socket in
/// CLOSE_WAIT whose client closed (an orphaned FIN_WAIT2), a client
/// half-closed in FIN_WAIT2 with its server in CLOSE_WAIT, and a client
/// socket in TIME_WAIT.
pub fn make_states(ip: &str, held: &mut Held) {
    let listener = TcpListener::bind((ip, 0)).expect("bind");
    let pair = connect_pair;
    for _ in 0..2 {
        let (c, s) = pair(&listener);
        held.streams.extend([c, s]);
    }
    let (c, mut s) = pair(&listener);
    drop(c);
    read_to_eof(&mut s);
    held.streams.push(s);

    let (c, mut s) = pair(&listener);
    c.shutdown(Shutdown::Write).expect("shutdown");
    read_to_eof(&mut s);
    held.streams.extend([c, s]);

    let (c, mut s) = pair(&listener);
    drop(c);
    read_to_eof(&mut s);
    drop(s);
    held.listeners.push(listener);
}

/// One number from the metrics: the sum over a family's series whose
/// labels contain `filter`.
pub fn metric_sum(metrics: &str, name: &str, filter: &str) -> f64 {
    samples(metrics, name)
        .iter()
        .filter(|(labels, _)| labels.contains(filter))
        .map(|(_, v)| v)
        .sum()
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
