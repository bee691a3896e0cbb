//! Sockets per state, in all and per network namespace: the gauges.

use tracer_common::{STATE_SLOTS, TcpState};

use super::{HashMap, slot};

/// Counts by kernel state number (slot 0 unused), kept in step for the
/// whole host and for each namespace that holds a socket.
#[derive(Debug, Default)]
pub(super) struct StateCounts {
    total: [u64; STATE_SLOTS],
    /// Namespaces drop out when they hold no socket.
    by_netns: HashMap<u32, [u64; STATE_SLOTS]>,
}

impl StateCounts {
    pub(super) fn total(&self) -> &[u64; STATE_SLOTS] {
        &self.total
    }

    pub(super) fn by_netns(&self) -> &HashMap<u32, [u64; STATE_SLOTS]> {
        &self.by_netns
    }

    /// One more socket in `state` in namespace `netns`.
    pub(super) fn up(&mut self, netns: u32, state: TcpState) {
        self.total[slot(state)] += 1;
        self.by_netns.entry(netns).or_insert([0; STATE_SLOTS])[slot(state)] += 1;
    }

    /// One socket fewer in `state` in namespace `netns`.
    /// Saturating: a gauge that wrapped to 2^64 would be worse than one
    /// that is briefly low (a full reconciliation corrects it).
    pub(super) fn down(&mut self, netns: u32, state: TcpState) {
        let total = &mut self.total[slot(state)];
        debug_assert!(*total > 0, "count of {state:?} below zero");
        *total = total.saturating_sub(1);
        if let Some(ns) = self.by_netns.get_mut(&netns) {
            debug_assert!(
                ns[slot(state)] > 0,
                "count of {state:?} in {netns} below zero"
            );
            ns[slot(state)] = ns[slot(state)].saturating_sub(1);
            if ns.iter().all(|&n| n == 0) {
                self.by_netns.remove(&netns);
            }
        }
    }

    /// A socket in namespace `netns` moves from `from` to `to`: one
    /// namespace lookup where a count down and up would take two.
    pub(super) fn moved(&mut self, netns: u32, from: TcpState, to: TcpState) {
        debug_assert!(self.total[slot(from)] > 0, "count of {from:?} below zero");
        self.total[slot(from)] = self.total[slot(from)].saturating_sub(1);
        self.total[slot(to)] += 1;
        let ns = self.by_netns.entry(netns).or_insert([0; STATE_SLOTS]);
        debug_assert!(
            ns[slot(from)] > 0,
            "count of {from:?} in {netns} below zero"
        );
        ns[slot(from)] = ns[slot(from)].saturating_sub(1);
        ns[slot(to)] += 1;
    }
}
