//! The HTTP listener's limits: at most N connections at once (at the cap
//! the one that has waited longest for a complete request is closed to let
//! the newcomer in, see [`super::slots`]); a connection idle for too long
//! is closed (so stuck clients free their slot); and a request must arrive
//! whole within a time limit (so a client trickling a byte now and then
//! cannot hold a slot either). Request heads are small and answers fast, so
//! this bounds the daemon's memory whatever its clients do.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpSocket, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};

use super::slots::{Eviction, GRACE, Slot, SlotGuard, Slots};

/// Connections the kernel holds for the daemon to accept. tokio's default
/// (128) is less than a flood of a few hundred: the handshakes beyond it are
/// dropped and a scrape among them waits for its SYN to be sent again, a
/// second or more later. The kernel lowers it to `net.core.somaxconn`
/// (4096 by default). Waiting connections cost the kernel, not the daemon.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds the HTTP listener, with room in its accept queue for a flood:
/// the connections wait there in order until they are accepted.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As tokio's own bind: a restarted daemon can bind at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Connections closed because the limit was reached.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Newcomers closed on arrival: every connection was being answered.
    pub rejected: AtomicU64,
    /// Connections closed to let a newcomer in.
    pub evicted: AtomicU64,
}

/// How long a newcomer waits for an evicted connection to let go of its
/// slot. Its task only has to run once; this bounds a task that cannot.
const EVICTION_WAIT: Duration = Duration::from_secs(1);

pub struct LimitedListener {
    inner: TcpListener,
    /// The cap itself: a slot is given back when its connection is dropped,
    /// so evicted connections still count until they are gone.
    permits: Arc<Semaphore>,
    slots: Arc<Slots>,
    limits: StreamLimits,
    stats: Arc<HttpStats>,
}

/// Time limits of one connection.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    /// Nothing sent or received for this long closes the connection.
    pub idle: Duration,
    /// From a request's first byte to the response's first byte.
    pub request: Duration,
}

impl LimitedListener {
    pub fn new(
        inner: TcpListener,
        max_connections: usize,
        limits: StreamLimits,
        stats: Arc<HttpStats>,
    ) -> Self {
        LimitedListener {
            inner,
            permits: Arc::new(Semaphore::new(max_connections)),
            slots: Slots::new(),
            limits,
            stats,
        }
    }
}

impl LimitedListener {
    pub fn limits(&self) -> StreamLimits {
        self.limits
    }
}

impl LimitedListener {
    /// A free slot, or one made free by evicting the connection that has
    /// waited longest for a request (once it is past its grace); `None`
    /// when every one is answering.
    async fn permit(&self) -> Option<OwnedSemaphorePermit> {
        loop {
            if let Ok(permit) = self.permits.clone().try_acquire_owned() {
                return Some(permit);
            }
            match self.slots.evict_longest_waiting(GRACE) {
                Eviction::Evicted => {
                    self.stats.evicted.fetch_add(1, Ordering::Relaxed);
                    // Waiting here (rather than letting connections exceed
                    // the cap) keeps memory bounded.
                    return tokio::time::timeout(
                        EVICTION_WAIT,
                        self.permits.clone().acquire_owned(),
                    )
                    .await
                    .ok()
                    .and_then(Result::ok);
                }
                // The newcomer waits; the connections behind it wait in
                // the kernel's accept queue, in order.
                Eviction::NotBefore(wait) => {
                    tokio::select! {
                        permit = self.permits.clone().acquire_owned() => return permit.ok(),
                        () = tokio::time::sleep(wait) => {}
                    }
                }
                Eviction::AllAnswering => return None,
            }
        }
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = LimitedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = match self.inner.accept().await {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    log::warn!("accepting an HTTP connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if let Some(permit) = self.permit().await {
                let _ = stream.set_nodelay(true);
                let slot = self.slots.open();
                return (LimitedStream::new(stream, permit, slot, self.limits), addr);
            }
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            log::debug!("every HTTP connection is being answered; closing the one from {addr}");
            drop(stream);
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection holding one of the listener's slots, closed when idle or
/// when a request takes too long to arrive.
pub struct LimitedStream {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    slot: SlotGuard,
    limits: StreamLimits,
    idle: Pin<Box<Sleep>>,
    /// Armed by the first byte of a request, disarmed by the first byte of
    /// its response.
    request: Pin<Box<Sleep>>,
    in_request: bool,
}

impl LimitedStream {
    fn new(
        stream: TcpStream,
        permit: OwnedSemaphorePermit,
        slot: SlotGuard,
        limits: StreamLimits,
    ) -> Self {
        LimitedStream {
            stream,
            _permit: permit,
            slot,
            limits,
            idle: Box::pin(tokio::time::sleep(limits.idle)),
            request: Box::pin(tokio::time::sleep(limits.request)),
            in_request: false,
        }
    }

    /// The connection's progress, which the server updates per request.
    pub fn slot(&self) -> Arc<Slot> {
        self.slot.slot().clone()
    }

    fn touch(&mut self) {
        let deadline = Instant::now() + self.limits.idle;
        self.idle.as_mut().reset(deadline);
    }

    fn received(&mut self) {
        self.touch();
        if !self.in_request {
            self.in_request = true;
            let deadline = Instant::now() + self.limits.request;
            self.request.as_mut().reset(deadline);
        }
    }

    fn sent(&mut self) {
        self.touch();
        self.in_request = false;
    }

    /// An error once the connection has been idle, or its request under
    /// way, for too long.
    fn check_deadlines(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.idle.as_mut().poll(cx).is_ready() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "idle HTTP connection",
            ));
        }
        if self.in_request && self.request.as_mut().poll(cx).is_ready() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "HTTP request took too long to arrive",
            ));
        }
        Ok(())
    }
}

impl Drop for LimitedStream {
    fn drop(&mut self) {
        // An evicted connection is reset rather than closed: under a flood
        // that is opened again at once, and a FIN would leave a TIME_WAIT
        // socket on the daemon's side for each.
        if self.slot.slot().is_evicted() {
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.received();
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                self.check_deadlines(cx)?;
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.stream).poll_write(cx, data))?;
        self.sent();
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
