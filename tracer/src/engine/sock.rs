//! The records of full sockets: as the start-up dump reports them, and as
//! the table keeps them.

use tracer_common::TcpState;

use super::Tuple;
use crate::kernel::event::Comm;

/// A socket as the start-up dump (sock_diag) reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DumpedSocket {
    pub tuple: Tuple,
    pub state: TcpState,
    /// A timewait socket (sock_diag's TIME_WAIT timer); `state` is then its
    /// substate, TIME_WAIT or FIN_WAIT2.
    pub timewait: bool,
    /// Milliseconds until its timer fires.
    pub expires_ms: u32,
    /// Owning process from /proc (pid, comm), when known.
    pub owner: Option<(u32, Comm)>,
    /// The socket's inode (0 for timewait sockets), so that owners found
    /// later can be matched ([`super::Engine::assign_owners`]).
    pub inode: u32,
}

#[derive(Debug, Clone)]
pub(super) struct Sock {
    pub(super) tuple: Tuple,
    /// When it entered `state`: exact if `since_exact`, else a lower bound
    /// (the time we first saw it).
    pub(super) since_ns: u64,
    /// Owning pid, 0 when unknown.
    pub(super) owner: u32,
    pub(super) state: TcpState,
    pub(super) since_exact: bool,
    pub(super) leak_logged: bool,
    /// Its owner was checked against /proc (as `ss -p` finds it) since
    /// it entered CLOSE_WAIT.
    pub(super) owner_checked: bool,
    /// The state is what the start-up dump saw; no event has moved it yet.
    pub(super) from_dump: bool,
    /// Inode from the dump, 0 otherwise: kept until an owner is assigned
    /// (it fills what would be padding).
    pub(super) inode: u32,
}

impl Sock {
    /// Moves the record into `state` at `ts_ns`; returns how long it stayed
    /// in the one it leaves, when that start was known exactly.
    pub(super) fn enter(&mut self, state: TcpState, ts_ns: u64) -> Option<u64> {
        let stay = self
            .since_exact
            .then(|| ts_ns.saturating_sub(self.since_ns));
        self.state = state;
        self.since_ns = ts_ns;
        self.since_exact = true;
        self.leak_logged = false;
        self.owner_checked = false;
        self.from_dump = false;
        stay
    }
}
