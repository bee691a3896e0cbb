//! Who owns what: process names by pid, counted by the sockets and
//! listener entries that name them, and the owner of each listening port
//! (accepted sockets take their listener's).

use super::{HashMap, Tuple};
use crate::kernel::event::Comm;

#[derive(Debug, Clone)]
struct Owner {
    comm: Comm,
    /// Sockets and listener entries that name this pid.
    refs: u32,
}

/// Pids with a reference count each; a pid leaves when nothing names it.
#[derive(Debug, Default)]
pub(super) struct Owners {
    by_pid: HashMap<u32, Owner>,
    /// Owner of each listening port, by (namespace, port).
    listeners: HashMap<(u32, u16), u32>,
}

impl Owners {
    /// A reference to `pid`, named `comm` (the newest name wins).
    pub(super) fn retain(&mut self, pid: u32, comm: Comm) -> u32 {
        let o = self.by_pid.entry(pid).or_insert(Owner { comm, refs: 0 });
        o.comm = comm;
        o.refs += 1;
        pid
    }

    /// Another reference to a pid already known; 0 if it is not.
    pub(super) fn retain_pid(&mut self, pid: u32) -> u32 {
        match self.by_pid.get_mut(&pid) {
            Some(o) => {
                o.refs += 1;
                pid
            }
            None => 0,
        }
    }

    pub(super) fn release(&mut self, pid: u32) {
        if pid == 0 {
            return;
        }
        if let Some(o) = self.by_pid.get_mut(&pid) {
            o.refs -= 1;
            if o.refs == 0 {
                self.by_pid.remove(&pid);
            }
        }
    }

    /// The comm of a pid that owns something in the table.
    pub(super) fn comm(&self, pid: u32) -> Option<Comm> {
        self.by_pid.get(&pid).map(|o| o.comm)
    }

    /// `owner` listens on the listener `tuple`'s port.
    pub(super) fn set_listener(&mut self, tuple: Tuple, owner: u32) {
        let pid = self.retain_pid(owner);
        if let Some(old) = self.listeners.insert((tuple.netns, tuple.lport), pid) {
            self.release(old);
        }
    }

    /// The listener on `tuple`'s port closed.
    pub(super) fn forget_listener(&mut self, tuple: &Tuple) {
        self.listeners.remove(&(tuple.netns, tuple.lport));
    }

    /// A reference to the owner of the port an accepted socket (local end
    /// `tuple`) was accepted on; 0 when unknown.
    pub(super) fn retain_listener_owner(&mut self, tuple: &Tuple) -> u32 {
        match self.listeners.get(&(tuple.netns, tuple.lport)).copied() {
            Some(pid) => self.retain_pid(pid),
            None => 0,
        }
    }
}
