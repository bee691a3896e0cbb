//! Seeding the table from the start-up dump, in parts while it streams,
//! then matched against the events buffered meanwhile.

use super::*;

impl Engine {
    /// Loads a whole dump that ended at `end_ns`, at once:
    /// [`Engine::seed_part`] then [`Engine::seed_complete`].
    pub fn seed(&mut self, sockets: impl IntoIterator<Item = DumpedSocket>, end_ns: u64) {
        self.seed_part(sockets, end_ns);
        self.seed_complete(end_ns);
    }

    /// Makes room for the start-up dump before it arrives in parts, from
    /// the kernel's count of sockets: growing by doubling would hold two
    /// tables at a time. Parts beyond the estimate grow the tables.
    pub fn reserve_seeds(&mut self, full: usize, timewait: usize) {
        let full = full.min(self.cfg.max_sockets);
        self.socks.reserve(full);
        self.seeds.reserve(full);
        self.timewait
            .reserve(timewait.min(self.cfg.max_sockets - full));
    }

    /// Loads part of a dump, read by `read_ns`: at start-up the daemon
    /// builds the table while the rest of the dump is still being read.
    /// At start-up, call it before applying any event, and
    /// [`Engine::seed_complete`] once every part is in.
    pub fn seed_part(&mut self, sockets: impl IntoIterator<Item = DumpedSocket>, read_ns: u64) {
        let sockets = sockets.into_iter();
        let expected = sockets.size_hint().0.min(self.cfg.max_sockets);
        self.socks.reserve(expected);
        self.seeds.reserve(expected);
        for d in sockets {
            if d.timewait {
                self.seed_timewait(&d, read_ns);
                continue;
            }
            // Request sockets (half-open connections) show as SYN_RECV in a
            // dump but never pass through the tracepoint: they would never
            // leave. They are not tracked (README: SYN_RECV).
            if d.state == TcpState::SynRecv || d.state == TcpState::Close {
                continue;
            }
            // A connection is one socket, but a dump may list it twice:
            // /proc/net/tcp is read in pieces while the kernel's table
            // changes. (Listeners may share a tuple: SO_REUSEPORT.)
            if d.tuple.is_connection() && self.seeds.contains(&d.tuple, &self.socks) {
                self.stats.corrections += 1;
                continue;
            }
            if !self.room_for_dumped() {
                continue;
            }
            let owner = match d.owner {
                Some((pid, comm)) => self.owners.retain(pid, comm),
                None => 0,
            };
            if d.state == TcpState::Listen && owner != 0 {
                self.owners.set_listener(d.tuple, owner);
            }
            self.counts.up(d.tuple.netns, d.state);
            let sock = Sock {
                tuple: d.tuple,
                since_ns: read_ns,
                owner,
                state: d.state,
                since_exact: false,
                leak_logged: false,
                owner_checked: false,
                from_dump: true,
                inode: if owner == 0 { d.inode } else { 0 },
            };
            let id = self.reseed(sock);
            if d.state == TcpState::SynSent {
                self.seeds.insert_connecting(&d.tuple, id);
            }
        }
    }

    /// The start-up dump is all in; it ended at `end_ns`. Events from
    /// before then are matched against what it saw, so nothing is lost or
    /// counted twice.
    pub fn seed_complete(&mut self, end_ns: u64) {
        self.seeds.set_end_ns(end_ns);
    }
}
