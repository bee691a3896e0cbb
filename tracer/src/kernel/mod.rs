//! The kernel side, as user space sees it: [`probe`] loads and attaches the
//! program, with offsets from [`tracefs`] and [`btf`], and reads its
//! counters; [`ringbuf`] reads its ring buffer, [`event`] decodes the
//! records, [`clock`] turns kernel time into wall time; [`logs`] forwards
//! the program's own debug lines into our log; [`privileges`] explains what
//! is missing when loading is refused.

pub mod btf;
pub mod clock;
pub mod event;
pub mod kallsyms;
pub mod logs;
pub mod privileges;
pub mod probe;
pub mod ringbuf;
pub mod tracefs;
