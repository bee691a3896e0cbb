//! The processes the bench starts and measures: `tracer daemon` and
//! libbpf-tools' `tcpstates`. Each is a guard that stops its process when
//! dropped, so no exit path leaves one running. They run in their own
//! process group, so a Ctrl-C reaches only the bench, which then stops them
//! in order; and with a parent-death signal, so that even a killed bench
//! does not leave them behind.

use std::{
    fs::File,
    net::{Ipv4Addr, SocketAddr, TcpListener},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{http, measure, stop};

/// How long a stopped process gets before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A child process, stopped (SIGTERM, then SIGKILL) on drop.
pub struct Guarded {
    child: Child,
    what: String,
    stopped: bool,
}

impl Guarded {
    /// Starts `cmd`; `death_signal` is what the child gets if the bench dies.
    pub fn spawn(
        cmd: &mut Command,
        what: &str,
        death_signal: libc::c_int,
    ) -> anyhow::Result<Guarded> {
        cmd.process_group(0);
        // SAFETY: prctl is async-signal-safe; nothing else runs here.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, death_signal) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {what} (`{}`)", crate::cmd::describe(cmd)))?;
        Ok(Guarded {
            child,
            what: what.to_owned(),
            stopped: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// The exit status if the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, up to [`STOP_GRACE`] to exit, then SIGKILL.
    pub fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.exited() {
            self.stopped = true;
            return Ok(status);
        }
        let pid = libc::pid_t::try_from(self.child.id()).context("pid out of range")?;
        // SAFETY: kill has no memory preconditions; the pid is our unreaped
        // child, so it cannot have been reused.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let until = Instant::now() + STOP_GRACE;
        while Instant::now() < until {
            if let Some(status) = self.exited() {
                self.stopped = true;
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!(
            "xtask: bench: {} did not stop within {STOP_GRACE:?}; killing it",
            self.what
        );
        let _ = self.child.kill();
        let status = self.child.wait()?;
        self.stopped = true;
        Ok(status)
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if !self.stopped
            && let Err(e) = self.stop()
        {
            eprintln!("xtask: bench: stopping {}: {e:#}", self.what);
        }
    }
}

/// A log file that a child's output is appended to, with a header line.
fn log_to(path: &Path, header: &str) -> anyhow::Result<File> {
    use std::io::Write as _;
    let mut file = File::options()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(file, "==== {header}")?;
    Ok(file)
}

/// A free loopback port for the daemon's HTTP server.
fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
    Ok(listener.local_addr()?)
}

pub struct Daemon {
    proc: Guarded,
    pub addr: SocketAddr,
    /// From spawning the process until /readyz answered 200.
    pub ready_after: Duration,
    log: PathBuf,
}

impl Daemon {
    /// Starts `tracer daemon` with its defaults (no config file, no
    /// TRACER_* variables) plus `extra`, and waits until it is ready.
    pub fn start(binary: &Path, extra: &[String], log: &Path) -> anyhow::Result<Daemon> {
        let addr = free_port()?;
        let out = log_to(
            log,
            &format!("tracer daemon --listen {addr} {}", extra.join(" ")),
        )?;
        let mut cmd = Command::new(binary);
        cmd.args([
            "daemon",
            "--listen",
            &addr.to_string(),
            "--config",
            "/dev/null",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TRACER_") {
                cmd.env_remove(key);
            }
        }
        let spawned = Instant::now();
        let mut proc = Guarded::spawn(&mut cmd, "tracer daemon", libc::SIGTERM)?;
        let ready_after = loop {
            stop::check()?;
            if let Some(status) = proc.exited() {
                bail!(
                    "tracer daemon exited during start-up ({status}); see {}",
                    log.display()
                );
            }
            if let Ok(r) = http::get(addr, "/readyz", Duration::from_secs(2))
                && r.status == 200
            {
                break spawned.elapsed();
            }
            if spawned.elapsed() > Duration::from_secs(300) {
                bail!("tracer daemon not ready after 300 s; see {}", log.display());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Ok(Daemon {
            proc,
            addr,
            ready_after,
            log: log.to_owned(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The /metrics text.
    pub fn metrics(&self) -> anyhow::Result<String> {
        let r = http::get(self.addr, "/metrics", Duration::from_secs(30))?;
        if r.status != 200 {
            bail!("GET /metrics answered {}", r.status);
        }
        Ok(r.body)
    }

    /// Stops it (SIGTERM) and fails unless it exited cleanly.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let status = self.proc.stop()?;
        if !status.success() {
            bail!(
                "tracer daemon exited with {status}; see {}",
                self.log.display()
            );
        }
        Ok(())
    }
}

/// The libbpf-tools program named in the issue as the reference.
pub const TCPSTATES: &str = "/usr/sbin/tcpstates";
/// Its tracepoint program's name.
pub const TCPSTATES_PROG: &str = "handle_set_state";

pub struct Tcpstates {
    proc: Guarded,
}

impl Tcpstates {
    /// Starts `tcpstates > /dev/null` and waits until its program is
    /// attached (it prints nothing to say so when its output goes to
    /// /dev/null, but the attachment is a BPF link file it holds).
    pub fn start(log: &Path) -> anyhow::Result<Tcpstates> {
        let err = log_to(log, "tcpstates > /dev/null")?;
        let mut cmd = Command::new(TCPSTATES);
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(err);
        let mut proc = Guarded::spawn(&mut cmd, "tcpstates", libc::SIGTERM)?;
        let started = Instant::now();
        loop {
            stop::check()?;
            if let Some(status) = proc.exited() {
                bail!(
                    "tcpstates exited at start ({status}); see {}",
                    log.display()
                );
            }
            if measure::has_bpf_link(proc.pid()) {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!(
                    "tcpstates attached no program within 30 s; see {}",
                    log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Tcpstates { proc })
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn stop(mut self) -> anyhow::Result<()> {
        self.proc.stop()?;
        Ok(())
    }
}
