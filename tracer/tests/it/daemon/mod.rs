//! `tracer daemon` against the real kernel, by concern: its gauges against
//! `ss`, CLOSE_WAIT leaks of a separate process, TIME_WAIT as the kernel
//! ends it, its limits (ring buffer, socket table, capabilities), its
//! HTTP side, and the alerting rules fed with its metrics. Needs root; in CI (CI=true) these tests must run.

mod alerts;
mod endings;
mod gauges;
mod http;
mod leaks;
mod limits;
mod owners;
mod random;
mod retransmits;
mod timewait;
mod truth;
