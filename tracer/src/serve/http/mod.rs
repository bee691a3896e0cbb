//! The HTTP front end: `/metrics` (Prometheus text format),
//! `/api/v1/snapshot` (JSON), `/healthz` and `/readyz`. Anything else is
//! 404; other methods than GET and HEAD on these paths are 405.
//!
//! * [`listener`]: how many connections, and for how long idle;
//! * [`slots`]: which connection gives way at the cap;
//! * [`server`]: the connection loop, TLS, request time limits;
//! * [`web_config`]: the exporter-style web config file (TLS, basic auth);
//! * [`auth`]: checking basic auth against bcrypt hashes.

pub mod auth;
pub mod listener;
pub mod server;
pub mod slots;
pub mod web_config;

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

use crate::{serve::metrics::Metrics, serve::shared::Shared};

/// Prometheus' text exposition format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone)]
struct AppState {
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
}

pub fn router(shared: Arc<Shared>) -> Result<Router, prometheus::Error> {
    let metrics = Arc::new(Metrics::new(shared.clone())?);
    Ok(Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/api/v1/snapshot", get(snapshot_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready_handler))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(AppState { shared, metrics }))
}

async fn metrics_handler(State(app): State<AppState>) -> Response {
    match app.metrics.render() {
        Ok(text) => ([(header::CONTENT_TYPE, TEXT_FORMAT)], text).into_response(),
        Err(e) => {
            log::error!("rendering metrics: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot render metrics\n").into_response()
        }
    }
}

async fn snapshot_handler(State(app): State<AppState>) -> Response {
    Json(app.shared.snapshot()).into_response()
}

async fn ready_handler(State(app): State<AppState>) -> Response {
    if app.shared.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: attaching and seeding\n",
        )
            .into_response()
    }
}
