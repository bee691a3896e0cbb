//! A slow-client flood, as a new user tried it on the daemon: many
//! connections that each send half a request and open again as soon as
//! they are closed; and a well-behaved scraper that times each scrape.
//! Everything is loopback, bounded in threads, and stops by itself. The TLS
//! clients need the `tls` feature.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use crate::http::get;

/// Half a request head: the blank line that would end it never comes.
pub const HALF_REQUEST: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: x\r\n";

/// What each flooding connection sends before it waits to be closed.
#[derive(Clone)]
pub enum SlowClient {
    /// [`HALF_REQUEST`] in plain text.
    HalfRequest,
    /// The header of a TLS handshake record and a few bytes of its
    /// ClientHello: the handshake stalls.
    HalfHandshake,
    /// A whole TLS handshake, then [`HALF_REQUEST`].
    #[cfg(feature = "tls")]
    TlsHalfRequest(Arc<rustls::ClientConfig>),
}

/// `connections` slow clients against `addr`, until dropped or `limit`.
pub struct Flood {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
    /// Connections opened so far.
    pub opened: Arc<AtomicU64>,
}

impl Flood {
    pub fn start(
        addr: SocketAddr,
        connections: usize,
        kinds: &[SlowClient],
        limit: Duration,
    ) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + limit;
        let threads = (0..connections)
            .map(|i| {
                let kind = kinds[i % kinds.len()].clone();
                let (stop, opened) = (stop.clone(), opened.clone());
                thread::Builder::new()
                    .stack_size(256 << 10)
                    .spawn(move || {
                        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                            opened.fetch_add(1, Ordering::Relaxed);
                            slow_client(addr, &kind, &stop, deadline);
                        }
                    })
                    .expect("flood thread")
            })
            .collect();
        Flood {
            stop,
            threads,
            opened,
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One slow connection: open, send a part, wait until the server closes it
/// (or the flood ends).
fn slow_client(addr: SocketAddr, kind: &SlowClient, stop: &AtomicBool, deadline: Instant) {
    let Ok(tcp) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        // Refused or timed out (a full backlog): try again, a little later.
        thread::sleep(Duration::from_millis(10));
        return;
    };
    let _ = tcp.set_read_timeout(Some(Duration::from_millis(200)));
    let mut stream: Box<dyn ReadWrite> = match kind {
        SlowClient::HalfRequest => {
            let mut tcp = tcp;
            if tcp.write_all(HALF_REQUEST).is_err() {
                return;
            }
            Box::new(tcp)
        }
        SlowClient::HalfHandshake => {
            let mut tcp = tcp;
            // Handshake record, TLS 1.0 framing, 512 bytes announced;
            // ClientHello type and length, then nothing.
            if tcp
                .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc])
                .is_err()
            {
                return;
            }
            Box::new(tcp)
        }
        #[cfg(feature = "tls")]
        SlowClient::TlsHalfRequest(config) => {
            let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
            let Ok(conn) = rustls::ClientConnection::new(config.clone(), name) else {
                return;
            };
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            if tls
                .write_all(HALF_REQUEST)
                .and_then(|()| tls.flush())
                .is_err()
            {
                return;
            }
            Box::new(tls)
        }
    };
    let mut buf = [0u8; 1024];
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

trait ReadWrite: std::io::Read + std::io::Write {}
impl<T: std::io::Read + std::io::Write> ReadWrite for T {}

/// A rustls client config trusting the PEM CA at `ca`.
#[cfg(feature = "tls")]
pub fn tls_client_config(ca: &Path) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::{CertificateDer, pem::PemObject as _};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(cert.expect("CA certificate")).expect("CA added");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// How a scrape went: its HTTP status (0 for none) and how long it took.
pub type Scrape = (u16, Duration);

/// A scrape the way a Prometheus would do it over plain HTTP: a new
/// connection, the whole request at once.
pub fn scrape_plain(addr: SocketAddr) -> Scrape {
    let started = Instant::now();
    let status = get(addr, "/metrics").map_or(0, |r| r.status);
    (status, started.elapsed())
}

/// A scrape with `curl` (over TLS with `ca`, with `user` as basic auth);
/// the time includes starting curl.
pub fn scrape_curl(url: &str, ca: Option<&Path>, user: Option<&str>) -> Scrape {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "10",
    ]);
    if let Some(ca) = ca {
        cmd.arg("--cacert").arg(ca);
    }
    if let Some(user) = user {
        cmd.args(["-u", user]);
    }
    let started = Instant::now();
    let out = cmd
        .arg(url)
        .output()
        .expect("curl (Debian package curl; `cargo xtask test` installs it)");
    let status = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    (status, started.elapsed())
}

/// `count` scrapes, `every` apart.
pub fn scrape_repeatedly(
    count: usize,
    every: Duration,
    mut scrape: impl FnMut() -> Scrape,
) -> Vec<Scrape> {
    let mut results = Vec::with_capacity(count);
    let mut next = Instant::now();
    for _ in 0..count {
        results.push(scrape());
        next += every;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
    }
    results
}

/// Scrapes that got 200 within `within`, and a summary for messages.
pub fn served(results: &[Scrape], within: Duration) -> (usize, String) {
    let ok = results
        .iter()
        .filter(|(status, took)| *status == 200 && *took <= within)
        .count();
    let mut times: Vec<Duration> = results.iter().map(|(_, t)| *t).collect();
    times.sort();
    let pct = |p: usize| times.get((times.len() * p / 100).min(times.len().saturating_sub(1)));
    let failed: Vec<String> = results
        .iter()
        .filter(|(status, took)| *status != 200 || *took > within)
        .map(|(status, took)| format!("{status} in {took:?}"))
        .collect();
    let summary = format!(
        "{ok}/{} served within {within:?}; median {:?}, p99 {:?}, max {:?}; failed: {failed:?}",
        results.len(),
        pct(50).copied().unwrap_or_default(),
        pct(99).copied().unwrap_or_default(),
        times.last().copied().unwrap_or_default(),
    );
    (ok, summary)
}
