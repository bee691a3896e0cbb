//! Child processes: a guard that stops its process when dropped, so that no
//! exit path of a test or of the bench leaves one running; waits with a
//! limit; commands that must succeed; and facts about a process from /proc.

use std::{
    io,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus},
    thread,
    time::{Duration, Instant},
};

/// How long [`Guarded::stop`] gives a process after SIGTERM.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// A child process in a process group of its own (a Ctrl-C reaches only its
/// parent, which then stops it in order), with a parent-death signal (even
/// a killed parent does not leave it behind), stopped on drop.
pub struct Guarded {
    child: Child,
    what: String,
    reaped: bool,
}

impl Guarded {
    /// Starts `cmd`; `death_signal` is what the child gets if the thread
    /// that started it dies.
    pub fn spawn(cmd: &mut Command, what: &str, death_signal: libc::c_int) -> io::Result<Guarded> {
        cmd.process_group(0);
        // SAFETY: prctl is async-signal-safe; nothing else runs here.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, death_signal) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot start {what} (`{}`): {e}", describe(cmd)),
            )
        })?;
        Ok(Guarded {
            child,
            what: what.to_owned(),
            reaped: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// The exit status if the process has ended (and reaps it).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.try_wait().ok().flatten();
        self.reaped |= status.is_some();
        status
    }

    /// Sends `signal`, unless the process has been reaped (its pid may
    /// then belong to another).
    pub fn signal(&self, signal: libc::c_int) {
        if !self.reaped {
            let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
            // SAFETY: kill has no memory preconditions; the pid is our
            // unreaped child, so it cannot have been reused.
            unsafe { libc::kill(pid, signal) };
        }
    }

    /// Its exit status once it exits, or None if it still runs after
    /// `limit`.
    pub fn wait_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + limit;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= until {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL, and the exit status.
    pub fn kill(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.exited() {
            return Ok(status);
        }
        let _ = self.child.kill();
        let status = self.child.wait()?;
        self.reaped = true;
        Ok(status)
    }

    /// SIGTERM, up to [`STOP_GRACE`] to exit, then SIGKILL.
    pub fn stop(&mut self) -> io::Result<ExitStatus> {
        self.signal(libc::SIGTERM);
        if let Some(status) = self.wait_within(STOP_GRACE) {
            return Ok(status);
        }
        eprintln!(
            "{} did not stop within {STOP_GRACE:?}; killing it",
            self.what
        );
        self.kill()
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if !self.reaped
            && let Err(e) = self.stop()
        {
            eprintln!("stopping {}: {e}", self.what);
        }
    }
}

/// Waits for `child` to exit; kills it and panics after `limit`.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> ExitStatus {
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

/// Runs a command that must succeed.
pub fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a tool the tests compare against: its exit status and its stdout
/// and stderr together. `what` says where the tool comes from when missing.
pub fn tool_output(cmd: &mut Command, what: &str) -> (ExitStatus, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

/// A command as a shell would show it.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// The resident memory of a process, in KiB (VmRSS).
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:").expect("VmRSS")
}

/// A `... kB` field of /proc/PID/status, such as `VmRSS:` or `VmHWM:`.
pub fn status_kib(pid: u32, field: &str) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| io::Error::other(format!("/proc/{pid}/status has no {field}")))
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The first executable named `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guarded_child_is_stopped_and_reaped() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let mut sleeper = Guarded::spawn(&mut cmd, "sleep", libc::SIGKILL).expect("sleep");
        assert_eq!(sleeper.wait_within(Duration::from_millis(50)), None);
        let status = sleeper.stop().expect("stops");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGTERM)
        );
        // Reaped: a second signal goes nowhere.
        sleeper.signal(libc::SIGKILL);
        assert!(status_kib(std::process::id(), "VmRSS:").expect("own RSS") > 0);
    }
}
