//! Each listener's accept queue, as sock_diag reports it for LISTEN
//! sockets (what `ss -lnt` shows as Recv-Q and Send-Q): the connections
//! waiting for `accept()`, the queue's limit (the backlog, capped by
//! `net.core.somaxconn`), and the connections the listener dropped
//! (`sk_drops`, from its memory info: `tcp_listendrop()` counts a full
//! accept queue there, as the namespace's `ListenDrops` does).

use std::net::SocketAddr;

use tracer_common::TcpState;

use crate::sockets::sockdiag::{self, EXT_MEMINFO, SockDiagError};

/// One listening socket's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerQueue {
    pub netns: u32,
    pub local: SocketAddr,
    /// Connections in its accept queue.
    pub queued: u32,
    /// The queue's limit.
    pub limit: u32,
    /// Connections it dropped since it began listening; None when the
    /// kernel did not report memory info.
    pub drops: Option<u32>,
}

/// The listeners of the calling thread's namespace (`netns`).
pub fn read_here(netns: u32) -> Result<Vec<ListenerQueue>, SockDiagError> {
    let mut found = Vec::new();
    let mask = sockdiag::state_mask(&[TcpState::Listen]);
    sockdiag::dump_with(mask, EXT_MEMINFO, |d| {
        if d.state == TcpState::Listen.number() {
            found.push(ListenerQueue {
                netns,
                local: d.local,
                queued: d.rqueue,
                limit: d.wqueue,
                drops: d.drops,
            });
        }
    })?;
    Ok(found)
}
