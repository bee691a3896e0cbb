//! The HTTP listener's limits: at most N connections at once (more are
//! accepted and closed at once, so a flood costs nothing); a connection
//! idle for too long is closed (so stuck clients free their slot); and a
//! request must arrive whole within a time limit (so a client trickling a
//! byte now and then cannot hold a slot either). Requests are small and
//! answers fast, so this bounds the daemon's memory whatever its clients do.

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
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};

/// Connections refused because the limit was reached.
#[derive(Debug, Default)]
pub struct HttpStats {
    pub rejected: AtomicU64,
}

pub struct LimitedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
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
            match self.permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    let _ = stream.set_nodelay(true);
                    return (LimitedStream::new(stream, permit, self.limits), addr);
                }
                Err(_) => {
                    self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    log::debug!("too many HTTP connections; closing the one from {addr}");
                    drop(stream);
                }
            }
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
    limits: StreamLimits,
    idle: Pin<Box<Sleep>>,
    /// Armed by the first byte of a request, disarmed by the first byte of
    /// its response.
    request: Pin<Box<Sleep>>,
    in_request: bool,
}

impl LimitedStream {
    fn new(stream: TcpStream, permit: OwnedSemaphorePermit, limits: StreamLimits) -> Self {
        LimitedStream {
            stream,
            _permit: permit,
            limits,
            idle: Box::pin(tokio::time::sleep(limits.idle)),
            request: Box::pin(tokio::time::sleep(limits.request)),
            in_request: false,
        }
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
