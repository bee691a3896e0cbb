//! Network namespaces that [`netns::list`] cannot see: no process has one
//! as its own and no name holds it, but a thread or an open descriptor
//! keeps it alive (container runtimes hold them so). The engine learns of
//! their sockets from events; a dump that skipped such a namespace would
//! have its reconciliation delete them. So every namespace the engine
//! holds sockets in is looked for, found ones are remembered, and one not
//! found is left alone until a search has had its chance.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use super::netns::{self, NetNs};

/// A search reads every thread's namespace and, for what is still
/// missing, every open descriptor: at most this often.
pub const SEARCH_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct HiddenNamespaces {
    /// Found by earlier searches, with a path that opens each.
    known: Vec<NetNs>,
    last_search: Option<Instant>,
}

/// The namespaces one dump is to read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    pub namespaces: Vec<NetNs>,
    /// Wanted but not found, and not searched for this time: a
    /// reconciliation must leave their sockets alone.
    pub unread: Vec<u32>,
    /// Hidden namespaces this dump found that no dump had found before.
    pub newly_found: usize,
    /// Wanted namespaces a search did not find: gone, with their sockets.
    pub gone: usize,
}

impl HiddenNamespaces {
    /// `listed` (from [`netns::list`]) plus the hidden namespaces known
    /// before; `wanted` namespaces (the engine holds sockets there) still
    /// missing are searched for with `search`, unless a search ran less
    /// than [`SEARCH_EVERY`] ago. One a search does not find is gone.
    pub fn resolve(
        &mut self,
        mut listed: Vec<NetNs>,
        wanted: &HashSet<u32>,
        now: Instant,
        search: impl FnOnce(&HashSet<u32>) -> Vec<NetNs>,
    ) -> Resolved {
        let seen: HashSet<u32> = listed.iter().map(|ns| ns.inode).collect();
        self.known
            .retain(|ns| !seen.contains(&ns.inode) && netns::still_there(ns));
        listed.extend(self.known.iter().cloned());
        let have: HashSet<u32> = listed.iter().map(|ns| ns.inode).collect();
        let missing: HashSet<u32> = wanted.difference(&have).copied().collect();
        let mut resolved = Resolved::default();
        if !missing.is_empty() {
            let due = self
                .last_search
                .is_none_or(|at| now.duration_since(at) >= SEARCH_EVERY);
            if due {
                self.last_search = Some(now);
                let found = search(&missing);
                resolved.newly_found = found.len();
                resolved.gone = missing.len() - found.len();
                self.known.extend(found.iter().cloned());
                listed.extend(found);
            } else {
                resolved.unread = missing.into_iter().collect();
                resolved.unread.sort_unstable();
            }
        }
        resolved.namespaces = listed;
        resolved
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn ns(inode: u32) -> NetNs {
        NetNs {
            inode,
            path: PathBuf::from("/proc/self/ns/net"),
        }
    }

    #[test]
    fn a_missing_namespace_is_searched_for_then_left_alone_until_the_next_search() {
        let mut hidden = HiddenNamespaces::default();
        let t0 = Instant::now();
        let wanted = HashSet::from([7]);
        // Not found by the search: gone, so the dump does not protect it.
        let r = hidden.resolve(vec![ns(1)], &wanted, t0, |_| Vec::new());
        assert_eq!(
            (r.namespaces.len(), r.unread.len(), r.newly_found, r.gone),
            (1, 0, 0, 1)
        );
        // Within SEARCH_EVERY no search: left alone.
        let r = hidden.resolve(vec![ns(1)], &wanted, t0 + Duration::from_secs(1), |_| {
            panic!("searched too soon")
        });
        assert_eq!(r.unread, vec![7]);
        let mut searched = false;
        let r = hidden.resolve(vec![ns(1)], &wanted, t0 + SEARCH_EVERY, |missing| {
            searched = true;
            assert_eq!(missing, &HashSet::from([7]));
            Vec::new()
        });
        assert!(searched);
        assert!(r.unread.is_empty());
    }

    #[test]
    fn a_found_namespace_is_read_by_every_dump_while_it_lasts() {
        let mut hidden = HiddenNamespaces::default();
        let own = netns::current_inode().unwrap();
        let t0 = Instant::now();
        let wanted = HashSet::from([own]);
        let r = hidden.resolve(Vec::new(), &wanted, t0, |_| vec![ns(own)]);
        assert_eq!((r.namespaces.len(), r.newly_found), (1, 1));
        let r = hidden.resolve(Vec::new(), &wanted, t0 + Duration::from_secs(1), |_| {
            panic!("it is known")
        });
        assert_eq!((r.namespaces, r.newly_found), (vec![ns(own)], 0));
        // Listed by a process now: not twice.
        let r = hidden.resolve(vec![ns(own)], &wanted, t0 + Duration::from_secs(2), |_| {
            panic!("it is listed")
        });
        assert_eq!(r.namespaces.len(), 1);
    }
}
