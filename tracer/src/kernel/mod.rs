//! The kernel side, as user space sees it: [`probe`] loads and attaches the
//! programs, with the [`config`] made from [`tracefs`], [`btf`] and
//! [`kallsyms`], and reads their counters; [`timewait_hooks`] are the
//! optional programs on the kernel's timewait functions; [`resets`] and
//! [`retransmits`] count in the kernel; [`ringbuf`] reads its ring buffer,
//! [`event`] decodes the records, [`clock`] turns kernel time into wall
//! time; [`logs`] forwards the program's own debug lines into our log;
//! [`privileges`] explains what is missing when loading is refused.

pub mod btf;
pub mod clock;
pub mod config;
pub mod event;
pub mod kallsyms;
pub mod logs;
pub mod privileges;
pub mod probe;
pub mod resets;
pub mod retransmits;
pub mod ringbuf;
pub mod timewait_hooks;
pub mod tracefs;
