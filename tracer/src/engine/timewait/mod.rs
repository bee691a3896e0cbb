//! Timewait sockets: where the kernel's timewait programs run, followed
//! from their records (`followed`); elsewhere predicted from the full
//! socket's last transition and ended by a new connection on the same
//! four-tuple. Either way reconciled with sock_diag dumps for everything
//! the events cannot show (timer expiry, resets, lost records).

use std::net::SocketAddr;

use tracer_common::TcpState;

use super::{DumpedSocket, Engine, HashMap, TIME_WAIT_LEN_NS, Tuple, slot};
use crate::kernel::event::Transition;

mod followed;
mod table;
mod wheel;

pub(super) use table::TimewaitTable;
pub use wheel::TimerWheel;

#[derive(Debug, Clone)]
pub(super) struct TimeWait {
    /// TIME_WAIT, or FIN_WAIT2 for an orphaned FIN_WAIT2 (what `ss` shows).
    substate: TcpState,
    entered_ns: u64,
    /// False for timewait sockets found in a dump (their start is estimated).
    entered_exact: bool,
    /// When its timer fires, as last predicted or reported; 0 if unknown.
    expires_ns: u64,
    /// When we learned of it: the event's time, or when a dump had read it.
    learned_ns: u64,
    /// A dump has shown it (a prediction may be wrong: a reset closes the
    /// socket without a timewait).
    confirmed: bool,
    /// Generation of the last dump that showed it.
    seen: u32,
}

impl TimeWait {
    pub(in crate::engine) fn substate(&self) -> TcpState {
        self.substate
    }
}

/// What one reconciliation changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimewaitReconcile {
    /// In the dump, not in the table.
    pub added: u64,
    /// In the table, gone from the dump.
    pub removed: u64,
    /// Of those, gone before their timer ran out: a reset, a reuse the
    /// events did not show, or a prediction the kernel did not make.
    pub removed_early: u64,
    /// In both, with another substate.
    pub changed: u64,
}

impl TimewaitReconcile {
    /// Entries the events had got wrong. Timer expiries are not drift:
    /// between dumps entries leave at their timer, a few seconds late.
    pub fn drift(&self) -> u64 {
        self.added + self.removed_early + self.changed
    }
}

/// Timewait sockets toward one remote endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationCount {
    pub netns: u32,
    pub remote: SocketAddr,
    pub count: u32,
}

fn dest_key(t: &Tuple) -> (u32, u8, [u8; 16], u16) {
    (t.netns, t.family, t.raddr, t.rport)
}

impl Engine {
    /// `FIN_WAIT1|FIN_WAIT2|CLOSING -> CLOSE` is how the kernel retires a
    /// full socket after handing the connection to a timewait socket.
    pub(super) fn predict_timewait(&mut self, t: &Transition, tuple: Tuple) {
        if !t.old.may_leave_timewait(t.new) || !tuple.is_connection() {
            return;
        }
        // The kernel's own record made (or did not make) the entry.
        if self.timewait_followed {
            return;
        }
        // The kernel program saw whether tcp_time_wait() closed it.
        if t.timewait_made == Some(false) {
            self.stats.timewait_not_made += 1;
            return;
        }
        if !self.timewait_likely(t, &tuple) {
            return;
        }
        // Closed from FIN_WAIT2 before the peer's FIN (an orphaned
        // FIN_WAIT2: the application closed without waiting), the kernel
        // keeps a timewait socket in substate FIN_WAIT2, which ss counts
        // as FIN-WAIT-2. Which path the kernel takes depends on timing
        // (whether the ACK of our FIN arrived while close() held the
        // socket), so only the socket's own flag tells.
        let substate = if t.old == TcpState::FinWait2 && t.fin_received == Some(false) {
            TcpState::FinWait2
        } else {
            TcpState::TimeWait
        };
        let tw = TimeWait {
            substate,
            entered_ns: t.ts_ns,
            entered_exact: true,
            expires_ns: t.ts_ns + TIME_WAIT_LEN_NS,
            learned_ns: t.ts_ns,
            confirmed: false,
            seen: 0,
        };
        self.insert_timewait(tuple, tw);
    }

    /// Whether the kernel is likely to have made a timewait socket of this
    /// close, which the program did not see refused.
    fn timewait_likely(&mut self, t: &Transition, tuple: &Tuple) -> bool {
        // `tcp_time_wait()` always runs after FIN_WAIT1 became FIN_WAIT2
        // or CLOSING; FIN_WAIT1 -> CLOSE is a reset or an abort.
        if t.old == TcpState::FinWait1 && t.timewait_made.is_none() {
            return false;
        }
        // At the cap the kernel closes the connection without a timewait
        // socket. A busy server sits there, and predicting one per close
        // would overstate TIME_WAIT until the next dump.
        if self.timewait.at_cap(tuple.netns) && !self.timewait.contains(tuple) {
            self.stats.timewait_over_cap += 1;
            return false;
        }
        true
    }

    pub(super) fn seed_timewait(&mut self, d: &DumpedSocket, read_ns: u64) {
        let tw = self.dumped_timewait(d, read_ns);
        self.insert_timewait(d.tuple, tw);
    }

    /// A timewait socket a dump had read by `read_ns`.
    fn dumped_timewait(&self, d: &DumpedSocket, read_ns: u64) -> TimeWait {
        let left = u64::from(d.expires_ms) * 1_000_000;
        TimeWait {
            substate: d.state,
            // A TIME_WAIT timer starts at 60 s; FIN_WAIT2 ones vary.
            entered_ns: (read_ns + left).saturating_sub(TIME_WAIT_LEN_NS),
            entered_exact: false,
            expires_ns: read_ns + left,
            learned_ns: read_ns,
            confirmed: true,
            seen: self.timewait.generation(),
        }
    }

    /// Adds an entry; one a dump found (`!tw.entered_exact`) is left out
    /// at the cap rather than evicting another the next dump brings back.
    fn insert_timewait(&mut self, tuple: Tuple, tw: TimeWait) -> bool {
        if self.timewait.contains(&tuple) {
            self.remove_timewait(&tuple);
        } else {
            let room = if tw.entered_exact {
                self.make_room()
            } else {
                self.room_for_dumped()
            };
            if !room {
                return false;
            }
        }
        self.counts.up(tuple.netns, tw.substate);
        self.ports.add(&tuple, Some(tw.substate));
        self.timewait.insert(tuple, tw);
        true
    }

    pub(super) fn remove_timewait(&mut self, tuple: &Tuple) -> Option<TimeWait> {
        let tw = self.timewait.remove(tuple)?;
        self.counts.down(tuple.netns, tw.substate);
        self.ports.remove(tuple, Some(tw.substate));
        Some(tw)
    }

    /// Changes an entry through `f` (see [`TimewaitTable::update`]),
    /// keeping the port index in step with its substate.
    pub(super) fn update_timewait(
        &mut self,
        tuple: &Tuple,
        f: impl FnOnce(&mut TimeWait),
    ) -> Option<(TcpState, TcpState)> {
        let changed = self.timewait.update(tuple, f)?;
        if changed.0 != changed.1 {
            self.ports.remove(tuple, Some(changed.0));
            self.ports.add(tuple, Some(changed.1));
        }
        Some(changed)
    }

    /// The peer of a connection closed (`LAST_ACK -> CLOSE`): its FIN was
    /// acknowledged. If that peer is on this host and our end is an
    /// orphaned FIN_WAIT2 timewait socket, the FIN turned it into a
    /// TIME_WAIT one with a new 60 s timer; the kernel reports no event for
    /// that. (A remote peer's FIN is only seen by the next timewait dump.)
    pub(super) fn timewait_peer_closed(&mut self, peer: &Tuple, ts_ns: u64) {
        if self.timewait.no_fin_wait2() || self.timewait_followed {
            return; // the common case costs no lookup
        }
        let ours = peer.reversed();
        let Some(tw) = self.timewait.get(&ours) else {
            return;
        };
        if tw.substate != TcpState::FinWait2 || tw.learned_ns > ts_ns {
            return;
        }
        let stay = tw
            .entered_exact
            .then(|| ts_ns.saturating_sub(tw.entered_ns));
        self.update_timewait(&ours, |tw| {
            tw.substate = TcpState::TimeWait;
            tw.entered_ns = ts_ns;
            tw.entered_exact = true;
            tw.expires_ns = ts_ns + TIME_WAIT_LEN_NS;
        });
        self.counts
            .moved(ours.netns, TcpState::FinWait2, TcpState::TimeWait);
        if let Some(stay) = stay {
            self.durations[slot(TcpState::FinWait2)].observe_ns(stay);
        }
    }

    fn observe_timewait_end(&mut self, tw: &TimeWait, end_ns: u64) {
        if tw.entered_exact {
            self.durations[slot(tw.substate)].observe_ns(end_ns.saturating_sub(tw.entered_ns));
        }
    }

    /// A new connection took this four-tuple: the kernel destroyed the
    /// timewait socket that held it (only one made before this event).
    pub(super) fn timewait_reused(&mut self, tuple: &Tuple, ts_ns: u64) {
        if self.timewait_followed && self.reuse_of_ended(tuple, ts_ns) {
            return;
        }
        match self.timewait.get(tuple) {
            Some(tw) if tw.learned_ns < ts_ns => {}
            _ => return,
        }
        if let Some(tw) = self.remove_timewait(tuple) {
            self.observe_timewait_end(&tw, ts_ns);
            self.stats.timewait_reused += 1;
            self.timewait.departed(*tuple, ts_ns);
        }
    }

    /// Says that a dump is about to start: until its reconciliation,
    /// sockets that events end are remembered, so the dump cannot bring
    /// them back.
    pub fn dump_starting(&mut self) {
        self.timewait.dump_starting();
        self.closed_during_dump.dump_starting();
    }

    /// Sets each namespace's `net.ipv4.tcp_max_tw_buckets`, as read in the
    /// last dump; namespaces not listed have no known cap.
    pub fn set_timewait_caps(&mut self, caps: impl IntoIterator<Item = (u32, u32)>) {
        self.timewait.set_caps(caps);
    }

    /// Ends the timewait sockets whose timer has run by `now_ns` (see
    /// [`TimerWheel`]), between dumps. Returns how many ended.
    pub fn expire_timewait(&mut self, now_ns: u64) -> usize {
        self.forget_early_ends(now_ns);
        let wheel = self.timer_wheel;
        let Some(cutoff) = wheel.fired_cutoff(now_ns) else {
            return 0;
        };
        let expired: Vec<Tuple> = self
            .timewait
            .iter()
            .filter(|(_, tw)| tw.expires_ns != 0 && tw.expires_ns <= cutoff)
            .map(|(t, _)| *t)
            .collect();
        for tuple in &expired {
            let Some(tw) = self.remove_timewait(tuple) else {
                continue;
            };
            if tw.confirmed {
                self.observe_timewait_end(&tw, wheel.fires_ns(tw.expires_ns));
                self.stats.timewait_expired += 1;
            }
        }
        expired.len()
    }

    /// How the engine dates the end of a timewait socket's timer.
    pub fn set_timer_wheel(&mut self, wheel: TimerWheel) {
        self.timer_wheel = wheel;
    }

    /// Says that the kernel's timewait programs run: their records make,
    /// change and end timewait sockets, and closes predict none.
    pub fn set_timewait_followed(&mut self, followed: bool) {
        self.timewait_followed = followed;
    }

    /// Brings the timewait table in line with a dump of every timewait
    /// socket taken between `start_ns` and `end_ns`. Call it after applying
    /// every event up to `end_ns`: entries learned during the dump are kept
    /// if it missed them, entries that events ended during the dump are
    /// not brought back, and entries of the `unread` namespaces (which the
    /// dump could not read whole) are left as they are.
    pub fn reconcile_timewait(
        &mut self,
        dump: impl IntoIterator<Item = DumpedSocket>,
        unread: &[u32],
        start_ns: u64,
        end_ns: u64,
    ) -> TimewaitReconcile {
        let generation = self.timewait.next_generation();
        let mut result = TimewaitReconcile::default();
        for d in dump {
            if !d.timewait {
                continue;
            }
            let expires_ns = end_ns + u64::from(d.expires_ms) * 1_000_000;
            let seen = self.update_timewait(&d.tuple, |tw| {
                tw.seen = generation;
                tw.confirmed = true;
                tw.expires_ns = expires_ns;
                tw.substate = d.state;
            });
            if let Some((old, new)) = seen {
                if old != new {
                    self.counts.moved(d.tuple.netns, old, new);
                    result.changed += 1;
                }
                continue;
            }
            if self.timewait.departed_since(&d.tuple, start_ns) {
                continue; // a new connection ended it after the dump saw it
            }
            let tw = self.dumped_timewait(&d, end_ns);
            if self.insert_timewait(d.tuple, tw) {
                result.added += 1;
            }
        }

        let gone: Vec<Tuple> = self
            .timewait
            .iter()
            .filter(|(tuple, tw)| {
                tw.seen != generation && tw.learned_ns <= start_ns && !unread.contains(&tuple.netns)
            })
            .map(|(t, _)| *t)
            .collect();
        for tuple in gone {
            let Some(tw) = self.remove_timewait(&tuple) else {
                continue;
            };
            result.removed += 1;
            if !tw.confirmed {
                // Predicted, never seen: the connection closed by reset, or the
                // kernel could not allocate a timewait socket.
                result.removed_early += 1;
                continue;
            }
            let fires = self.timer_wheel.fires_ns(tw.expires_ns);
            if tw.expires_ns != 0 && fires <= end_ns {
                self.observe_timewait_end(&tw, fires);
                self.stats.timewait_expired += 1;
            } else {
                self.observe_timewait_end(&tw, end_ns);
                self.stats.timewait_ended_early += 1;
                result.removed_early += 1;
            }
        }
        // The next dump starts after this call: none of these can matter to it.
        self.timewait.dump_done();
        self.closed_during_dump.dump_done();
        self.stats.corrections += result.added + result.changed;
        result
    }

    /// TIME_WAIT sockets by remote endpoint, most first, at most `limit`.
    /// Counted here, when asked, rather than kept up to date: on a server
    /// every timewait socket has a remote endpoint of its own (the client's
    /// port), so a running count was a second table as large as the
    /// timewait one, touched on every close.
    pub fn timewait_by_destination(&self, limit: usize) -> Vec<DestinationCount> {
        let mut counts: HashMap<(u32, u8, [u8; 16], u16), u32> = HashMap::default();
        for (tuple, tw) in self.timewait.iter() {
            if tw.substate == TcpState::TimeWait {
                *counts.entry(dest_key(tuple)).or_insert(0) += 1;
            }
        }
        let mut all: Vec<DestinationCount> = counts
            .into_iter()
            .map(|((netns, family, raddr, rport), count)| {
                let probe = Tuple {
                    netns,
                    lport: 0,
                    rport,
                    laddr: [0; 16],
                    raddr,
                    family,
                };
                DestinationCount {
                    netns,
                    remote: probe.remote(),
                    count,
                }
            })
            .collect();
        all.sort_by(|a, b| b.count.cmp(&a.count).then(a.remote.cmp(&b.remote)));
        all.truncate(limit);
        all
    }
}
