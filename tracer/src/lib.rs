//! tracer's user space.
//!
//! * Kernel side: [`probe`] loads and attaches it, with offsets from
//!   [`tracefs`] and [`btf`]; [`privileges`] explains what is missing.
//! * Events: [`ringbuf`] reads the ring buffer, [`event`] decodes records,
//!   [`clock`] turns kernel time into wall time.
//! * State: [`engine`] turns events and sock_diag dumps ([`sockdiag`],
//!   [`netns`], [`procfs`], [`procnet`]) into the socket table;
//!   [`nodiag`] recognises a kernel without sock_diag for TCP, and why.
//! * Front ends: [`trace`] (`tracer trace`); [`daemon`] (`tracer daemon`)
//!   with [`http`] (limits, TLS, basic auth), [`metrics`] and
//!   [`snapshot`]; [`top`] (`tracer top`).
//! * [`cli`] defines every flag, [`config`] the daemon's config file;
//!   [`shutdown`] handles SIGINT and SIGTERM; [`systemd`] talks to systemd.

pub mod btf;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod event;
pub mod http;
pub mod metrics;
pub mod netns;
pub mod nodiag;
pub mod privileges;
pub mod probe;
pub mod procfs;
pub mod procnet;
pub mod ringbuf;
pub mod shutdown;
pub mod snapshot;
pub mod sockdiag;
pub mod systemd;
pub mod top;
pub mod trace;
pub mod tracefs;
