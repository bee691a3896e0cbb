//! What the integration tests (`tracer/tests/it`), the bench (`bench/`)
//! and xtask share: the ways they look at tracer from the outside, as an
//! operator would.
//!
//! * [`http`]: an HTTP/1.1 client (keep-alive, or one request per
//!   connection), and [`prom`]: samples of the Prometheus text format;
//! * [`ss`]: the kernel's own socket counts, per state, over every network
//!   namespace; [`netns`]: `ip netns` namespaces behind RAII guards;
//!   [`net`]: sockets in chosen states;
//! * [`process`]: a child process stopped when its guard drops, and waits;
//!   [`daemon`]: `tracer daemon` under test, its gauges against `ss`;
//! * [`require`]: whether a root test can run here, and the one loud way it
//!   skips; [`leaky`], [`pki`], [`flood`]: peers for the tests;
//! * [`tools`]: every external program the tests, the bench and xtask
//!   start, where each comes from, and the installer for them.
//!
//! Nothing here depends on the `tracer` crate: the bench and xtask use this
//! library without building tracer.

pub mod daemon;
pub mod flood;
pub mod http;
pub mod leaky;
pub mod net;
pub mod netns;
pub mod packet;
pub mod pki;
pub mod process;
pub mod prom;
pub mod require;
pub mod ss;
pub mod tools;

use std::{
    thread,
    time::{Duration, Instant},
};

/// Polls `done` every 100 ms; panics naming `what` after `within`.
pub fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(100));
    }
}
