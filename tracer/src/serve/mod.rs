//! What the daemon serves: [`shared`] holds the state the front ends read
//! (a leaf: it imports nothing above it), [`metrics`] turns it into
//! Prometheus families, [`snapshot`] into the JSON `tracer top` reads,
//! and [`http`] serves both.

pub mod http;
pub mod metrics;
pub mod shared;
pub mod snapshot;
