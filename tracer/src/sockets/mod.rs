//! The kernel's socket tables, read directly: [`sockdiag`] dumps (netlink
//! sock_diag), [`procnet`] (`/proc/net/tcp`, where sock_diag is missing,
//! and [`nodiag`] says why), [`netns`] finds the network namespaces,
//! [`procfs`] finds sockets' owners and [`owners`] checks them as `ss -p`
//! does, [`hidden`] finds the namespaces no process has as its own,
//! [`listeners`] reads each listener's accept queue; [`dump`] runs them
//! over every namespace and [`sources`] remembers which table each
//! namespace was read from.

pub mod dump;
pub mod hidden;
pub mod listeners;
pub mod netns;
pub mod nodiag;
pub mod owners;
pub mod procfs;
pub mod procnet;
pub mod sockdiag;
pub mod sources;
