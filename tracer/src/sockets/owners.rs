//! Who holds a socket, checked the way `ss -p` finds out: the socket's
//! inode from a dump, then the `socket:[INODE]` links under /proc/PID/fd.
//!
//! The engine names an owner from the events (the task that called
//! connect() or listen(); an accepted socket takes its listener's). That
//! is wrong for prefork servers, whose children accept, for systemd
//! socket activation, for SO_REUSEPORT groups and after a pid is reused;
//! so when it matters (a CLOSE_WAIT socket crossing the leak threshold)
//! the daemon asks here.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use tracer_common::TcpState;

use super::{dump, hidden::HiddenNamespaces, procfs, sockdiag};
use crate::{
    engine::{OwnerAnswer, OwnerQuery, Tuple},
    kernel::event::Comm,
};

/// Checks `queries`; a socket held by none of the claimed pids and their
/// children is looked for in every process only when `scan_all` (a scan
/// costs about 10 us per open descriptor on the host). Queries left
/// unsettled (not found without a full scan, or in a namespace the dump
/// could not read) are not answered: ask again later.
pub fn check(
    queries: &[OwnerQuery],
    scan_all: bool,
    skip_sock_diag: HashSet<u32>,
    hidden: Arc<Mutex<HiddenNamespaces>>,
) -> Vec<OwnerAnswer> {
    let wanted: HashSet<u32> = queries.iter().map(|q| q.tuple.netns).collect();
    let mask = sockdiag::state_mask(&[TcpState::CloseWait]);
    let listed = dump::dump_namespaces(mask, skip_sock_diag, wanted, hidden);
    let inodes: HashMap<Tuple, u32> = listed
        .sockets
        .iter()
        .filter(|d| !d.timewait && d.state == TcpState::CloseWait && d.inode != 0)
        .map(|d| (d.tuple, d.inode))
        .collect();
    let wanted_inodes: HashSet<u32> = queries
        .iter()
        .filter_map(|q| inodes.get(&q.tuple).copied())
        .collect();
    let claimed: Vec<u32> = queries.iter().map(|q| q.claimed).collect();
    let holders = procfs::holders(&wanted_inodes, &claimed, scan_all);
    let mut comms: HashMap<u32, Option<Comm>> = HashMap::new();
    let mut comm_of = |pid: u32| {
        *comms
            .entry(pid)
            .or_insert_with(|| procfs::comm(pid).map(|c| Comm::from_name(&c)))
    };
    queries
        .iter()
        .filter_map(|q| {
            if listed.unread.contains(&q.tuple.netns) {
                return None;
            }
            let inode = inodes.get(&q.tuple);
            let holder = match inode {
                None => None,
                Some(inode) => match holders.get(inode) {
                    Some(&pid) => comm_of(pid).map(|comm| (pid, comm)),
                    None if scan_all => None,
                    None => return None,
                },
            };
            Some(OwnerAnswer {
                id: q.id,
                tuple: q.tuple,
                listed: inode.is_some(),
                holder,
            })
        })
        .collect()
}
