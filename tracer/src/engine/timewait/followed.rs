//! Timewait sockets as the kernel's timewait programs report them (see
//! [`crate::kernel::timewait_hooks`]): made, their substate changed, gone.
//! Where these records come, they replace every prediction: the entry is
//! what the kernel made, ends when the kernel ends it, and changes
//! substate when the peer's FIN arrives, with no dump needed. Dumps still
//! run, as insurance for records the ring buffer could not hold.

use tracer_common::TcpState;

use super::{Engine, TimeWait};
use crate::engine::{TIME_WAIT_LEN_NS, Tuple, slot, sock::Sock};
use crate::kernel::event::{TimewaitChange, TimewaitKind, Transition};

/// A timer that ends within this much of its expiry counts as expired,
/// not as ended early: the kernel runs it a bucket later than it asked.
const EXPIRED_WITHIN_NS: u64 = 1_000_000_000;
/// How long an early end waits for the new connection that would make it
/// a reuse: that connection's next event follows within microseconds.
const REUSE_WITHIN_NS: u64 = 2_000_000_000;

impl Engine {
    /// Applies one record of a timewait socket's life.
    pub(in crate::engine) fn apply_timewait(&mut self, c: &TimewaitChange) {
        let tuple = Tuple::new(c.netns, c.local, c.remote);
        match c.kind {
            TimewaitKind::Made {
                substate,
                timer_jiffies,
            } => {
                let tw = TimeWait {
                    substate,
                    entered_ns: c.ts_ns,
                    entered_exact: true,
                    expires_ns: c.ts_ns + self.timer_ns(substate, timer_jiffies),
                    learned_ns: c.ts_ns,
                    confirmed: true,
                    seen: 0,
                };
                self.insert_timewait(tuple, tw);
            }
            TimewaitKind::Rearmed {
                substate,
                timer_jiffies,
            } => self.timewait_rearmed(&tuple, c.ts_ns, substate, timer_jiffies),
            TimewaitKind::Gone { .. } => self.timewait_gone(&tuple, c.ts_ns),
        }
    }

    /// A full socket in FIN_WAIT2 retired into a timewait socket that stays
    /// in FIN_WAIT2 (an orphan; its record came first): to `ss`, one
    /// FIN_WAIT2 that lasts until the peer's FIN. The timewait entry takes
    /// the full socket's start, and the full socket's close observes no
    /// stay of its own.
    pub(in crate::engine) fn carry_fin_wait2(
        &mut self,
        t: &Transition,
        tuple: &Tuple,
        sock: &mut Sock,
    ) {
        if !self.timewait_followed
            || t.old != TcpState::FinWait2
            || t.new != TcpState::Close
            || sock.state != TcpState::FinWait2
        {
            return;
        }
        match self.timewait.get(tuple) {
            Some(tw) if tw.substate == TcpState::FinWait2 && tw.learned_ns <= t.ts_ns => {}
            _ => return,
        }
        let (since_ns, exact) = (sock.since_ns, sock.since_exact);
        self.timewait.update(tuple, |tw| {
            tw.entered_ns = since_ns;
            tw.entered_exact = exact;
        });
        sock.since_exact = false;
    }

    /// The timer's length in nanoseconds: from the kernel's HZ when known;
    /// otherwise the kernel's default for both substates (60 s:
    /// TCP_TIMEWAIT_LEN, and `tcp_fin_timeout`'s default).
    fn timer_ns(&self, _substate: TcpState, jiffies: u64) -> u64 {
        self.timer_wheel
            .jiffies_ns(jiffies)
            .unwrap_or(TIME_WAIT_LEN_NS)
    }

    /// The timer set again: in TIME_WAIT now, perhaps from FIN_WAIT2 (the
    /// peer's FIN arrived: the time in FIN_WAIT2 ends here).
    fn timewait_rearmed(&mut self, tuple: &Tuple, ts_ns: u64, substate: TcpState, jiffies: u64) {
        let expires_ns = ts_ns + self.timer_ns(substate, jiffies);
        let Some(tw) = self.timewait.get(tuple) else {
            // Made before we were attached and not dumped yet, or its
            // record was lost: known from now on, its start unknown.
            let tw = TimeWait {
                substate,
                entered_ns: ts_ns,
                entered_exact: false,
                expires_ns,
                learned_ns: ts_ns,
                confirmed: true,
                seen: 0,
            };
            self.insert_timewait(*tuple, tw);
            return;
        };
        let stay = (tw.substate != substate && tw.entered_exact)
            .then(|| (tw.substate, ts_ns.saturating_sub(tw.entered_ns)));
        let changed = self.update_timewait(tuple, |tw| {
            if tw.substate != substate {
                tw.substate = substate;
                tw.entered_ns = ts_ns;
                tw.entered_exact = true;
            }
            tw.expires_ns = expires_ns;
            tw.confirmed = true;
        });
        if let Some((old, new)) = changed
            && old != new
        {
            self.counts.moved(tuple.netns, old, new);
        }
        if let Some((old, stay)) = stay {
            self.durations[slot(old)].observe_ns(stay);
        }
    }

    /// Gone from the kernel's tables: its timer ran, a new connection took
    /// its four-tuple, or a reset or its namespace's end killed it.
    fn timewait_gone(&mut self, tuple: &Tuple, ts_ns: u64) {
        match self.timewait.get(tuple) {
            // An entry learned later is a newer socket on the same tuple.
            Some(tw) if tw.learned_ns <= ts_ns => {}
            _ => return,
        }
        let Some(tw) = self.remove_timewait(tuple) else {
            return;
        };
        self.observe_timewait_end(&tw, ts_ns);
        if tw.expires_ns != 0 && ts_ns + EXPIRED_WITHIN_NS >= tw.expires_ns {
            self.stats.timewait_expired += 1;
        } else {
            self.stats.timewait_ended_early += 1;
            self.ended_early.insert(*tuple, ts_ns);
        }
        // A dump under way may still list it: it must not come back.
        self.timewait.departed(*tuple, ts_ns);
    }

    /// A new connection on `tuple`: if the kernel's record ended a
    /// timewait socket there just before, that end was this reuse.
    /// Returns whether it was.
    pub(in crate::engine) fn reuse_of_ended(&mut self, tuple: &Tuple, ts_ns: u64) -> bool {
        match self.ended_early.remove(tuple) {
            Some(ended) if ended <= ts_ns => {
                self.stats.timewait_ended_early -= 1;
                self.stats.timewait_reused += 1;
                true
            }
            _ => false,
        }
    }

    /// Forgets early ends too old to be told apart as reuses.
    pub(in crate::engine) fn forget_early_ends(&mut self, now_ns: u64) {
        if !self.ended_early.is_empty() {
            let horizon = now_ns.saturating_sub(REUSE_WITHIN_NS);
            self.ended_early.retain(|_, ended| *ended >= horizon);
        }
    }
}
