//! What the daemon serves: [`shared`] holds the state the front ends read
//! (a leaf: it imports nothing above it), [`metrics`] turns it into
//! Prometheus families, [`snapshot`] into the JSON `tracer top` reads
//! ([`failing`] builds its section on how connections fail), and [`http`]
//! serves both; [`placed`] bounds the label values of kernel counters.

pub mod failing;
pub mod http;
pub mod metrics;
pub mod placed;
pub mod shared;
pub mod snapshot;
