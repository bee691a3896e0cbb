//! `tracer trace --json` as a child process whose events the tests read,
//! and ways to look at those events.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader},
    net::TcpListener,
    process::{Child, Stdio},
    sync::{Arc, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

use testkit::{net::bound_listener, process::wait_timeout};
use tracer::trace::format::JsonTransition;

use crate::tracer;

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
        let mut child = tracer()
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
