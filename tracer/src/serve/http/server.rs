//! The connection loop: accept (within the listener's limits), the TLS
//! handshake if the web config asks for one, then HTTP/1.1 with a cap on
//! the time a request may take to arrive and to be answered.
//!
//! Each connection runs in its own task, so a slow handshake or a slow
//! client never holds up the others. The task tells the connection's slot
//! when a request is being answered (then it is not closed to make room for
//! a newcomer) and ends the connection when the slot is evicted.

use std::{
    convert::Infallible,
    pin::Pin,
    sync::{Arc, PoisonError, RwLock},
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    extract::Request,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use hyper::body::{Bytes, Frame, SizeHint};
use hyper_util::rt::TokioIo;
use tokio_rustls::TlsAcceptor;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt as _;

use super::{
    auth::{BasicAuth, SharedAuth},
    listener::{LimitedListener, LimitedStream},
    slots::Slot,
    web_config::WebSecurity,
};

/// Largest request head accepted (hyper answers 431 beyond it). Scrapes
/// send a few hundred bytes; this bounds what a connection that never
/// finishes its head can make the daemon buffer.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// The web config in force; SIGHUP swaps it, connections take a copy when
/// they start.
#[derive(Clone, Default)]
pub struct WebSecurityHandle {
    current: Arc<RwLock<Arc<Active>>>,
}

/// A web config with its per-config state (the acceptor, remembered passwords).
#[derive(Default)]
struct Active {
    tls: Option<TlsAcceptor>,
    auth: Option<SharedAuth>,
}

impl WebSecurityHandle {
    pub fn new(security: WebSecurity) -> Self {
        let handle = WebSecurityHandle::default();
        handle.set(security);
        handle
    }

    /// Replaces the config; connections already open keep the old one.
    pub fn set(&self, security: WebSecurity) {
        let active = Active {
            tls: security.tls.map(TlsAcceptor::from),
            auth: (!security.users.is_empty()).then(|| Arc::new(BasicAuth::new(security.users))),
        };
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(active);
    }

    fn get(&self) -> Arc<Active> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Serves `app` on `listener` until `cancel` fires, then lets requests in
/// flight finish for at most `drain`. The listener's request time limit
/// also bounds the TLS handshake and the time to the response's start.
pub async fn serve(
    mut listener: LimitedListener,
    app: Router,
    security: WebSecurityHandle,
    drain: Duration,
    cancel: CancellationToken,
) {
    use axum::serve::Listener as _;
    let request_timeout = listener.limits().request;
    let app = with_auth(app, security.clone());
    let connections = TaskTracker::new();
    loop {
        let (stream, _addr) = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let app = app.clone();
        let active = security.get();
        let cancel = cancel.clone();
        let slot = stream.slot();
        connections.spawn(async move {
            // Dropping the connection closes it, wherever it was: in the
            // TLS handshake or waiting for a request head.
            tokio::select! {
                () = slot.evicted() => log::debug!("closed an HTTP connection to make room"),
                () = serve_connection(stream, app, active, request_timeout, cancel) => {}
            }
        });
    }
    connections.close();
    if tokio::time::timeout(drain, connections.wait())
        .await
        .is_err()
    {
        log::info!(
            "closing HTTP connections still open after {}",
            humantime::format_duration(drain)
        );
    }
}

async fn serve_connection(
    stream: LimitedStream,
    app: Router,
    active: Arc<Active>,
    request_timeout: Duration,
    cancel: CancellationToken,
) {
    let slot = stream.slot();
    match &active.tls {
        None => serve_http(stream, slot, app, request_timeout, cancel).await,
        Some(acceptor) => {
            match tokio::time::timeout(request_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => serve_http(tls, slot, app, request_timeout, cancel).await,
                Ok(Err(e)) => log::debug!("TLS handshake failed: {e}"),
                Err(_) => log::debug!("TLS handshake timed out"),
            }
        }
    }
}

async fn serve_http<IO>(
    io: IO,
    slot: Arc<Slot>,
    app: Router,
    request_timeout: Duration,
    cancel: CancellationToken,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let app = app.clone();
        // hyper calls the service once the head is complete.
        slot.answering();
        let answering = Answering(slot.clone());
        async move {
            let request = request.map(Body::new);
            let response = match tokio::time::timeout(request_timeout, app.oneshot(request)).await {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "request timed out\n").into_response(),
            };
            Ok::<_, Infallible>(response.map(|body| Answer {
                body,
                _answering: answering,
            }))
        }
    });
    // No hyper timer: its header read timeout also runs while a keep-alive
    // connection waits for the next scrape. The stream times requests instead.
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.max_buf_size(MAX_HEAD_BYTES).keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                log::debug!("HTTP connection: {e}");
            }
        }
        () = cancel.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// Marks the slot answered when dropped: hyper drops the body once it has
/// written the last of it (or if the response is never sent).
struct Answering(Arc<Slot>);

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.answered();
    }
}

/// A response body that keeps its connection's slot marked as answering.
struct Answer {
    body: Body,
    _answering: Answering,
}

impl hyper::body::Body for Answer {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Puts basic auth in front of every path. It asks the handle on each
/// request, so a reloaded user list applies to open connections too.
fn with_auth(app: Router, security: WebSecurityHandle) -> Router {
    app.layer(axum::middleware::from_fn(
        move |request: Request, next: axum::middleware::Next| {
            let auth = security.get().auth.clone();
            async move {
                match auth {
                    Some(auth) if !auth.allows(request.headers()).await => unauthorized(),
                    _ => next.run(request).await,
                }
            }
        },
    ))
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"tracer\"")],
        "unauthorized\n",
    )
        .into_response()
}
