//! tracer's user space.
//!
//! * Kernel side: [`probe`] loads and attaches it, with offsets from
//!   [`tracefs`] and [`btf`]; [`privileges`] explains what is missing.
//! * Events: [`ringbuf`] reads the ring buffer, [`event`] decodes records,
//!   [`clock`] turns kernel time into wall time.
//! * The kernel's socket tables: [`sockdiag`] dumps them, in every network
//!   namespace ([`netns`]), with owners from [`procfs`].
//! * Front ends: [`trace`] (`tracer trace`).
//! * [`cli`] defines every flag; [`shutdown`] handles SIGINT and SIGTERM.

pub mod btf;
pub mod cli;
pub mod clock;
pub mod event;
pub mod netns;
pub mod privileges;
pub mod probe;
pub mod procfs;
pub mod ringbuf;
pub mod shutdown;
pub mod sockdiag;
pub mod trace;
pub mod tracefs;
