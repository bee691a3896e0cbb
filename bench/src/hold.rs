//! Many concurrent ESTABLISHED connections, for the memory, start-up and
//! latency measurements. A process may hold only 20,000 files here, so the
//! connections live in child processes (`tracer-bench hold`, a hidden
//! subcommand of this same binary), each holding both ends of up to
//! [`PER_CHILD`] connections. Each child listens on its own loopback address
//! (127.77.x.y), so each has the whole ephemeral port range to itself: a
//! connect() without bind() may reuse a local port toward another
//! destination. A child says `ready N` on stdout once its connections are
//! up, and exits when its stdin closes, that is when the bench drops it or
//! dies.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{Ipv4Addr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    path::PathBuf,
    process::{ChildStdin, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use testkit::process::Guarded;

use super::stop;

/// Connections per child: two files each, under the 20,000-file limit.
pub const PER_CHILD: usize = 9_000;

/// The child's side: open `conns` connections to a listener of its own on
/// `ip`, report, hold them until stdin closes.
pub fn child(ip: Ipv4Addr, conns: usize) -> anyhow::Result<()> {
    let listener = TcpListener::bind((ip, 0)).with_context(|| format!("listening on {ip}"))?;
    let addr = listener.local_addr()?;
    let mut held = Vec::with_capacity(2 * conns);
    for n in 0..conns {
        let client = TcpStream::connect(addr)
            .with_context(|| format!("connection {n} of {conns} to {addr}"))?;
        let (server, _) = listener.accept().context("accepting")?;
        reset_on_close(&client)?;
        reset_on_close(&server)?;
        held.push(client);
        held.push(server);
    }
    // Only the connections should count.
    drop(listener);
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready {conns}")?;
    out.flush()?;
    // Hold until the bench closes our stdin (or exits).
    std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink())?;
    drop(held);
    Ok(())
}

/// SO_LINGER with a zero timeout: closing sends a reset, so a million
/// connections go away at once at the end, without a million TIME_WAIT
/// sockets that would linger into the next measurement.
fn reset_on_close(stream: &TcpStream) -> anyhow::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a correctly sized option value.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("setsockopt(SO_LINGER)");
    }
    Ok(())
}

struct Holder {
    proc: Guarded,
    stdin: Option<ChildStdin>,
}

/// The bench's side: the children, grown level by level.
pub struct Holders {
    exe: PathBuf,
    children: Vec<Holder>,
    held: usize,
}

impl Holders {
    pub fn new() -> anyhow::Result<Holders> {
        Ok(Holders {
            exe: std::env::current_exe().context("finding the tracer-bench binary")?,
            children: Vec::new(),
            held: 0,
        })
    }

    /// Connections held now.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Starts children until `total` connections are held. They connect in
    /// parallel; then each one's `ready` line is read in turn.
    pub fn grow_to(&mut self, total: usize) -> anyhow::Result<()> {
        let mut pending: Vec<(usize, ChildStdout, usize)> = Vec::new();
        let mut planned = self.held;
        while planned < total {
            stop::check()?;
            let conns = PER_CHILD.min(total - planned);
            let index = self.children.len() + 1;
            let ip = Ipv4Addr::new(127, 77, (index >> 8) as u8, (index & 0xff) as u8);
            let mut cmd = Command::new(&self.exe);
            cmd.args(["hold", "--ip", &ip.to_string()])
                .args(["--conns", &conns.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped());
            let mut proc = Guarded::spawn(&mut cmd, "a connection holder", libc::SIGKILL)?;
            let stdin = proc.child_mut().stdin.take();
            let stdout = proc
                .child_mut()
                .stdout
                .take()
                .context("a connection holder has no stdout")?;
            self.children.push(Holder { proc, stdin });
            pending.push((self.children.len() - 1, stdout, conns));
            planned += conns;
        }
        for (i, stdout, conns) in pending {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line)?;
            if line.trim() != format!("ready {conns}") {
                let status = self.children[i].proc.child_mut().wait()?;
                bail!(
                    "a connection holder failed ({status}) after {} connections; its error is above",
                    self.held
                );
            }
            self.held += conns;
            stop::check()?;
        }
        eprintln!(
            "bench: holding {} connections in {} processes",
            self.held,
            self.children.len()
        );
        Ok(())
    }
}

impl Drop for Holders {
    fn drop(&mut self) {
        // Close every stdin first, so that all children exit together;
        // dropping the guards then reaps them (or kills a straggler).
        for child in &mut self.children {
            child.stdin.take();
        }
        for mut child in self.children.drain(..) {
            // Give the exit of up to 18,000 sockets a moment before SIGTERM.
            let until = Instant::now() + Duration::from_secs(10);
            while child.proc.exited().is_none() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
            drop(child);
        }
    }
}
