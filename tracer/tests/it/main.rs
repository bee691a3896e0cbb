//! The integration tests: one binary, a module per area, over the helpers
//! in `testkit`. Most need root and a kernel that loads eBPF; outside CI
//! they skip with a `SKIP` line on stderr, with `CI=true` they fail. Tests
//! of one area run in parallel, never beside another area's (see
//! `testkit::require`). `cargo xtask test` runs `trace::`, `daemon::` and
//! `sockdiag::` again in each kernel of the matrix, and `nodiag::` (ignored
//! here) in a guest without sock_diag.

mod cli;
mod daemon;
mod kubernetes;
mod layout;
mod nodiag;
mod prometheus;
mod sockdiag;
mod systemd;
mod top;
mod trace;
mod web;

use std::process::Command;

/// The `tracer` binary under test.
fn tracer_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tracer")
}

/// A command that runs [`tracer_bin`].
fn tracer() -> Command {
    Command::new(tracer_bin())
}

/// A daemon that calls a CLOSE_WAIT socket leaked after 1 s.
fn leak_watching_daemon() -> testkit::daemon::Daemon {
    testkit::daemon::Daemon::start(
        tracer(),
        &[
            "--close-wait-threshold",
            "1s",
            "--reconcile-interval",
            "200ms",
        ],
    )
}
