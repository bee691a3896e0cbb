//! Fetching the daemon's snapshot over HTTP.

use std::time::Duration;

use crate::snapshot::Snapshot;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot reach the daemon at {url}: {error}")]
    Http { url: String, error: String },
    #[error("the daemon at {url} sent a snapshot tracer cannot read: {error}")]
    Decode { url: String, error: String },
}

/// A reusable client (keeps its connection alive between refreshes).
pub struct Client {
    agent: ureq::Agent,
    url: String,
}

/// Largest snapshot accepted: it holds at most 1,000 leaks and 100
/// destinations, far below this.
const MAX_BODY: u64 = 16 << 20;

impl Client {
    /// `endpoint` is the daemon's base URL, e.g. `http://127.0.0.1:9840`.
    pub fn new(endpoint: &str, timeout: Duration) -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .build()
            .into();
        Client {
            agent,
            url: format!("{}/api/v1/snapshot", endpoint.trim_end_matches('/')),
        }
    }

    pub fn fetch(&self) -> Result<Snapshot, FetchError> {
        let http = |error: ureq::Error| FetchError::Http {
            url: self.url.clone(),
            error: error.to_string(),
        };
        let mut response = self.agent.get(&self.url).call().map_err(http)?;
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .map_err(http)?;
        serde_json::from_str(&body).map_err(|e| FetchError::Decode {
            url: self.url.clone(),
            error: e.to_string(),
        })
    }
}
