//! The load: loopback connections opened, used for one byte each way and
//! closed, as fast as the threads go. This loop is the thing measured, so it
//! does nothing else: blocking std sockets, no allocation per connection,
//! counters kept per thread and added up once at the end.
//!
//! Who closes first: the SERVER. The client writes a byte, the server answers
//! it and closes, the client reads the answer and the end of stream, then
//! closes. Every connection takes the same path (client: SYN_SENT,
//! ESTABLISHED, CLOSE_WAIT, LAST_ACK, CLOSE; server: SYN_RECV, ESTABLISHED,
//! FIN_WAIT1, FIN_WAIT2, then TIME_WAIT), like an HTTP/1.0 server. Because
//! TIME_WAIT stays on the server's side, the client's ephemeral port is free
//! again as soon as its socket closes: the port range never runs out, whatever
//! the rate, and no sysctl (tcp_tw_reuse) has to change. A SYN that meets the
//! server's TIME_WAIT socket for a reused four-tuple is accepted by the kernel
//! (timestamps increase). Destinations are spread over one listening port per
//! server thread anyway, so four-tuples repeat less often.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::stop;

/// What one churn run did.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// Connections that completed the whole exchange.
    pub connections: u64,
    /// connect/read/write failures (each followed by a 1 ms pause).
    pub errors: u64,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn per_second(&self) -> f64 {
        self.connections as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Listening sockets with one accepting thread each, kept across runs so
/// every run sees the same server.
pub struct Server {
    addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Server {
    pub fn start(threads: usize) -> anyhow::Result<Server> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut server = Server {
            addrs: Vec::new(),
            stop: stop.clone(),
            threads: Vec::new(),
        };
        for i in 0..threads.max(1) {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .context("churn server: cannot listen on 127.0.0.1")?;
            server.addrs.push(listener.local_addr()?);
            let stop = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("churn-server-{i}"))
                .spawn(move || serve(&listener, &stop))
                .context("churn server: cannot start a thread")?;
            server.threads.push(thread);
        }
        Ok(server)
    }

    /// Runs `clients` client threads for `duration`; the clock starts when
    /// every thread is ready and stops when the last one has finished its
    /// connection in flight.
    pub fn churn(&self, clients: usize, duration: Duration) -> anyhow::Result<Outcome> {
        let clients = clients.max(1);
        let done = Arc::new(AtomicBool::new(false));
        // Threads park until `go`, so that the clock starts with all of them.
        let go = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::with_capacity(clients);
        for i in 0..clients {
            let (stop_flag, go_flag, addrs) = (done.clone(), go.clone(), self.addrs.clone());
            let thread = std::thread::Builder::new()
                .name(format!("churn-client-{i}"))
                .spawn(move || {
                    while !go_flag.load(Ordering::Acquire) {
                        std::thread::park();
                    }
                    client(&addrs, i, &stop_flag)
                });
            match thread {
                Ok(t) => threads.push(t),
                Err(e) => {
                    done.store(true, Ordering::Relaxed);
                    go.store(true, Ordering::Release);
                    for t in &threads {
                        t.thread().unpark();
                    }
                    return Err(e).context("churn client: cannot start a thread");
                }
            }
        }
        go.store(true, Ordering::Release);
        for t in &threads {
            t.thread().unpark();
        }
        let began = Instant::now();
        let interrupted = stop::sleep(duration);
        done.store(true, Ordering::Relaxed);
        let (mut connections, mut errors) = (0, 0);
        for t in threads {
            let (c, e) = t
                .join()
                .map_err(|_| anyhow::anyhow!("a churn client thread panicked"))?;
            connections += c;
            errors += e;
        }
        let elapsed = began.elapsed();
        interrupted?;
        if connections == 0 {
            bail!("the churn completed no connection ({errors} errors)");
        }
        Ok(Outcome {
            connections,
            errors,
            elapsed,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Each accept() returns for one more connection and sees the flag.
        for addr in &self.addrs {
            let _ = TcpStream::connect_timeout(addr, Duration::from_secs(1));
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Accept, read one byte, answer it, close (the server closes first).
fn serve(listener: &TcpListener, stop: &AtomicBool) {
    let mut byte = [0u8; 1];
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok((mut stream, _)) = accepted else {
            // EMFILE and the like: let the client side count the failure.
            std::thread::sleep(Duration::from_millis(1));
            continue;
        };
        if stream.read_exact(&mut byte).is_ok() {
            let _ = stream.write_all(&byte);
        }
    }
}

/// Connect, write a byte, read the answer and the end of stream, close;
/// until `done`. Returns (connections, errors).
fn client(addrs: &[SocketAddr], first: usize, done: &AtomicBool) -> (u64, u64) {
    let (mut connections, mut errors) = (0u64, 0u64);
    let mut next = first;
    while !done.load(Ordering::Relaxed) {
        let addr = &addrs[next % addrs.len()];
        next = next.wrapping_add(1);
        if exchange(addr).is_ok() {
            connections += 1;
        } else {
            errors += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    (connections, errors)
}

fn exchange(addr: &SocketAddr) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(addr)?;
    let mut byte = [1u8; 1];
    stream.write_all(&byte)?;
    stream.read_exact(&mut byte)?;
    // Wait for the server's FIN so that the server always closes first.
    match stream.read(&mut byte)? {
        0 => Ok(()),
        _ => Err(std::io::Error::other("unexpected data after the answer")),
    }
}
