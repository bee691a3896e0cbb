//! The processes the bench starts and measures: `tracer daemon` and
//! libbpf-tools' `tcpstates`. Each holds a `testkit` process guard, which
//! stops its process when dropped, so no exit path leaves one running. They
//! run in their own process group, so a Ctrl-C reaches only the bench,
//! which then stops them in order; and with a parent-death signal, so that
//! even a killed bench does not leave them behind.

use std::{
    fs::File,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use testkit::{http, net::free_port, process::Guarded, prom};

use super::{measure, stop};

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
        let addr = free_port().context("finding a free port")?;
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
            if let Ok(r) = http::get_within(addr, "/readyz", Duration::from_secs(2))
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
        let r = http::get_within(self.addr, "/metrics", Duration::from_secs(30))
            .with_context(|| format!("GET http://{}/metrics", self.addr))?;
        if r.status != 200 {
            bail!("GET /metrics answered {}", r.status);
        }
        Ok(r.body)
    }

    /// The sum of a family of its metrics, from `text` (a /metrics read);
    /// an error if the family is absent (a renamed metric must fail the
    /// bench, not read as zero).
    pub fn total(text: &str, name: &str) -> anyhow::Result<f64> {
        prom::total(text, name).with_context(|| format!("the daemon's /metrics has no `{name}`"))
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

/// The tracepoint program's name of libbpf-tools' `tcpstates`, the
/// reference the issue names.
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
        let mut cmd = Command::new("/usr/sbin/tcpstates");
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
