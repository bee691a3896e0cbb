//! tracer's user space, in layers that import only downward:
//!
//! * front ends: [`cli`] (every flag, the settings, the config file),
//!   [`daemon`] (`tracer daemon`: start-up, event loop, reload, systemd),
//!   [`trace`] (`tracer trace`), [`top`] (`tracer top`);
//! * [`serve`]: the daemon's shared state, metrics, snapshot, HTTP;
//! * domain: [`engine`] (events and dumps in, counts out, pure) and
//!   [`sockets`] (the kernel's socket tables: sock_diag, `/proc`,
//!   namespaces, owners);
//! * [`kernel`]: loading the program, BTF, tracefs, the ring buffer,
//!   events, clock, privileges.
//!
//! [`shutdown`] (SIGINT and SIGTERM) is shared by every front end.

pub mod cli;
pub mod daemon;
pub mod engine;
pub mod kernel;
pub mod serve;
pub mod shutdown;
pub mod sockets;
pub mod top;
pub mod trace;
