//! Helpers for the tests that run against the real kernel: privilege gates,
//! the `tracer` binary as a child process, sockets and network namespaces.
#![allow(dead_code, reason = "each test binary uses a different subset")]

pub mod daemon;
pub mod flood;
pub mod leaky;
pub mod tls;

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read as _},
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

use socket2::{Domain, Socket, Type};
use tracer::trace::format::JsonTransition;

/// True when the eBPF tests can run here. In CI (`CI=true`) they must: a
/// missing privilege there is a failure, not a skip.
pub fn can_load_ebpf(test: &str) -> bool {
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    let why = match (root, btf) {
        (true, true) => return true,
        (false, _) => "not root (run `sudo -E cargo xtask test`)",
        (_, false) => "no kernel BTF at /sys/kernel/btf/vmlinux",
    };
    if in_ci {
        panic!("CI=true but {test} cannot load eBPF: {why}");
    }
    eprintln!("\n!!!!!!!! SKIPPED {test}: {why} !!!!!!!!\n");
    false
}

pub fn tracer_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tracer")
}

/// `tracer trace --json ARGS...` running in the background.
pub struct Trace {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    stdout_thread: Option<thread::JoinHandle<()>>,
    stderr: Arc<Mutex<String>>,
}

impl Trace {
    /// Starts the binary and waits until it says it is attached.
    pub fn start(args: &[&str]) -> Trace {
        Trace::start_with_env(args, &[])
    }

    /// [`Trace::start`] with extra environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Trace {
        let mut child = Command::new(tracer_bin())
            .arg("trace")
            .arg("--json")
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tracer");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("stdout");
        let sink = lines.clone();
        let stdout_thread = thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().expect("lock").push(line);
            }
        });
        let stderr_text = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        let sink = stderr_text.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("attached") {
                    let _ = ready_tx.send(());
                }
                let mut s = sink.lock().expect("lock");
                s.push_str(&line);
                s.push('\n');
            }
        });
        let mut trace = Trace {
            child,
            lines,
            stdout_thread: Some(stdout_thread),
            stderr: stderr_text,
        };
        if ready_rx.recv_timeout(Duration::from_secs(20)).is_err() {
            let _ = trace.child.kill();
            let _ = trace.child.wait();
            panic!(
                "tracer did not attach within 20 s; stderr:\n{}",
                trace.stderr()
            );
        }
        trace
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("lock").clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Parsed events so far.
    pub fn events(&self) -> Vec<JsonTransition> {
        self.lines
            .lock()
            .expect("lock")
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
            .collect()
    }

    /// Waits until `done(events)` holds, or panics with what was seen.
    pub fn wait_for(
        &self,
        what: &str,
        done: impl Fn(&[JsonTransition]) -> bool,
    ) -> Vec<JsonTransition> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let events = self.events();
            if done(&events) {
                return events;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; events:\n{}", render(&events));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then the exit status, all events and stderr.
    pub fn stop(mut self) -> (std::process::ExitStatus, Vec<JsonTransition>, String) {
        // SAFETY: kill with a pid we own.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = wait_timeout(&mut self.child, Duration::from_secs(10));
        if let Some(t) = self.stdout_thread.take() {
            let _ = t.join();
        }
        // The stderr thread ends with the pipe; give it a moment to finish.
        thread::sleep(Duration::from_millis(50));
        (status, self.events(), self.stderr())
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_timeout(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process {} did not exit within {limit:?}", child.id());
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Events as text, for failure messages.
pub fn render(events: &[JsonTransition]) -> String {
    events
        .iter()
        .map(|e| {
            format!(
                "  {} pid={} comm={} netns={} {}:{} -> {}:{} {} -> {}\n",
                e.skaddr,
                e.pid,
                e.comm,
                e.netns,
                e.laddr,
                e.lport,
                e.raddr,
                e.rport,
                e.oldstate,
                e.newstate
            )
        })
        .collect()
}

/// `(old, new)` pairs of each socket, in kernel time order, keyed by skaddr.
pub fn by_socket(events: &[JsonTransition]) -> BTreeMap<String, Vec<(String, String)>> {
    let mut sorted: Vec<&JsonTransition> = events.iter().collect();
    sorted.sort_by_key(|e| e.ts_ns);
    let mut map: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for e in sorted {
        map.entry(e.skaddr.clone())
            .or_default()
            .push((e.oldstate.clone(), e.newstate.clone()));
    }
    map
}

/// Converts `[("CLOSE", "LISTEN"), ...]` for comparisons.
pub fn path(steps: &[(&str, &str)]) -> Vec<(String, String)> {
    steps
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// The skaddr of the first event matching `pred`.
pub fn skaddr_of(
    events: &[JsonTransition],
    what: &str,
    pred: impl Fn(&JsonTransition) -> bool,
) -> String {
    events
        .iter()
        .find(|e| pred(e))
        .map(|e| e.skaddr.clone())
        .unwrap_or_else(|| panic!("no event for {what}; events:\n{}", render(events)))
}

/// A socket bound to an ephemeral port but not yet listening: the test learns
/// its port (to filter on) before any transition happens.
pub fn bound_listener(ip: &str) -> (Socket, u16) {
    let addr = SocketAddr::new(ip.parse().expect("ip"), 0);
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let s = Socket::new(domain, Type::STREAM, None).expect("socket");
    s.bind(&addr.into()).expect("bind");
    let port = s
        .local_addr()
        .expect("local addr")
        .as_socket()
        .expect("inet")
        .port();
    (s, port)
}

/// A listener on an ephemeral port of `ip`, with `tracer trace --json
/// --port PORT EXTRA...` attached before it starts listening, so the trace
/// sees its whole life.
pub fn traced_listener(ip: &str, extra: &[&str]) -> (Trace, TcpListener, u16) {
    traced_listener_with_env(ip, extra, &[])
}

/// [`traced_listener`] with extra environment variables for the tracer.
pub fn traced_listener_with_env(
    ip: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Trace, TcpListener, u16) {
    let (socket, port) = bound_listener(ip);
    let port_arg = port.to_string();
    let mut args = vec!["--port", port_arg.as_str()];
    args.extend_from_slice(extra);
    let trace = Trace::start_with_env(&args, env);
    socket.listen(128).expect("listen");
    (trace, socket.into(), port)
}

/// A connection to `listener`: (client, accepted server side).
pub fn connect_pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
    let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    (client, server)
}

/// Polls `done` every 100 ms; panics naming `what` after `within`.
pub fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// Reads until the peer's FIN (EOF) arrives.
pub fn read_to_eof(stream: &mut TcpStream) {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) => panic!("waiting for EOF: {e}"),
        }
    }
}

/// Inode of a namespace file (`/proc/self/ns/net`, `/run/netns/NAME`).
pub fn ns_inode(path: &Path) -> u32 {
    let ino = std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .ino();
    u32::try_from(ino).expect("namespace inode fits u32")
}

/// A network namespace made with `ip netns add`, deleted on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new(tag: &str) -> NetNs {
        let name = format!("tracer-test-{tag}-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "delete", &name])
            .stderr(Stdio::null())
            .status();
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = NetNs { name };
        run(Command::new("ip").args(["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"]));
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs `f` on a thread that has entered this namespace: sockets it
    /// creates belong to the namespace.
    pub fn run_inside<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = self.path();
        thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns");
            use std::os::fd::AsRawFd as _;
            // SAFETY: setns on a valid namespace fd; affects only this thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("thread in namespace panicked")
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

/// Runs a tool the tests compare against: its exit status and its stdout
/// and stderr together. `what` says where the tool comes from when missing.
pub fn tool_output(cmd: &mut Command, what: &str) -> (std::process::ExitStatus, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

/// Runs a command that must succeed.
pub fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The resident memory of a process.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}
