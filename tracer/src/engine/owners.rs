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
    /// Owners of the listeners on each port, by (namespace, port): with
    /// SO_REUSEPORT several, each with its local address.
    listeners: HashMap<(u32, u16), Vec<ListenerOwner>>,
}

/// A listener's local address and its owner's pid.
type ListenerOwner = ([u8; 16], u32);

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
        if pid == 0 {
            return;
        }
        let entries = self
            .listeners
            .entry((tuple.netns, tuple.lport))
            .or_default();
        entries.push((tuple.laddr, pid));
    }

    /// The listener `tuple`, owned by `owner`, closed: its entry goes, the
    /// other members of a SO_REUSEPORT group stay.
    pub(super) fn forget_listener(&mut self, tuple: &Tuple, owner: u32) {
        let key = (tuple.netns, tuple.lport);
        let Some(entries) = self.listeners.get_mut(&key) else {
            return;
        };
        let mine = |&(laddr, pid): &ListenerOwner| laddr == tuple.laddr && pid == owner;
        let at = entries
            .iter()
            .position(mine)
            .or_else(|| entries.iter().position(|&(laddr, _)| laddr == tuple.laddr));
        if let Some(at) = at {
            let (_, pid) = entries.swap_remove(at);
            if entries.is_empty() {
                self.listeners.remove(&key);
            }
            self.release(pid);
        }
    }

    /// A reference to the owner of the listener an accepted socket (local
    /// end `tuple`) came from: the one bound to its address, else a
    /// wildcard one; the newest when several qualify (the check against
    /// /proc corrects it when it matters). 0 when unknown.
    pub(super) fn retain_listener_owner(&mut self, tuple: &Tuple) -> u32 {
        let Some(entries) = self.listeners.get(&(tuple.netns, tuple.lport)) else {
            return 0;
        };
        let exact = entries
            .iter()
            .rev()
            .find(|(laddr, _)| *laddr == tuple.laddr);
        let any = entries.iter().rev().find(|(laddr, _)| *laddr == [0; 16]);
        match exact.or(any).or(entries.last()) {
            Some(&(_, pid)) => self.retain_pid(pid),
            None => 0,
        }
    }
}
