//! A server that accepts and never closes, running as its own process
//! under a name of its own: the CLOSE_WAIT leak the daemon and `top` must
//! report by name.

use std::{
    io::BufRead as _,
    io::BufReader,
    net::SocketAddr,
    process::{Command, Stdio},
    time::Duration,
};

/// A server that accepts and never closes, running as its own process
/// under a name of its own (a symlink to python3, so its comm is that name).
pub struct LeakyServer {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub const LEAKY: &str = "leaky-server";

impl LeakyServer {
    pub fn start() -> LeakyServer {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("tracer-leaky-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        // The distribution's interpreter, not a version-manager shim (a shim
        // would exec another binary and change the process name).
        let python = "/usr/bin/python3";
        assert!(
            std::path::Path::new(python).exists(),
            "{python} is missing (Debian package python3; `cargo xtask test` installs it)"
        );
        let exe = dir.join(LEAKY);
        std::os::unix::fs::symlink(python, &exe).expect("symlink");
        // Accepts forever on a thread; exits when stdin closes.
        let script = "import socket, sys, threading\n\
            s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(64)\n\
            print(s.getsockname()[1], flush=True)\n\
            held = []\n\
            def accept():\n    while True: held.append(s.accept()[0])\n\
            threading.Thread(target=accept, daemon=True).start()\n\
            sys.stdin.read()\n";
        let mut child = Command::new(&exe)
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start leaky server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("port");
        let port: u16 = line.trim().parse().expect("port number");
        LeakyServer {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _dir: TempDir(dir),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Closing stdin makes it exit, which closes its sockets.
    pub fn stop(mut self) {
        drop(self.child.stdin.take());
        crate::process::wait_timeout(&mut self.child, Duration::from_secs(10));
    }
}
