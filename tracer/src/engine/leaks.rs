//! CLOSE_WAIT leaks: sockets whose peer closed long ago while their owner
//! never did. The index is ordered by age, so a sweep costs only the leaks.

use std::net::SocketAddr;

use super::Engine;
use crate::kernel::event::Comm;

/// One leaked socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leak {
    /// 0 when the owner is unknown.
    pub pid: u32,
    pub comm: Option<Comm>,
    pub netns: u32,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Time in CLOSE_WAIT (a lower bound for sockets older than the daemon).
    pub age_ns: u64,
}

/// Leaked sockets by process name, for the gauge: the `top_n` names with
/// most leaks, the rest summed under [`LeakSummary::OTHER`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeakSummary {
    pub total: u64,
    pub by_comm: Vec<(String, u64)>,
}

impl LeakSummary {
    /// Label for names beyond the top N.
    pub const OTHER: &'static str = "[other]";
    /// Label for sockets whose owner is unknown.
    pub const UNKNOWN: &'static str = "[unknown]";
}

impl Engine {
    fn leak(&self, id: u64, now_ns: u64) -> Option<Leak> {
        let s = self.socks.get(&id)?;
        Some(Leak {
            pid: s.owner,
            comm: self.owner_comm(s.owner),
            netns: s.tuple.netns,
            local: s.tuple.local(),
            remote: s.tuple.remote(),
            age_ns: now_ns.saturating_sub(s.since_ns),
        })
    }

    /// Ids of sockets in CLOSE_WAIT for at least the threshold, oldest first.
    fn leaked_ids(&self, now_ns: u64) -> impl Iterator<Item = u64> + '_ {
        let cutoff = now_ns.saturating_sub(self.cfg.close_wait_threshold_ns);
        self.close_wait
            .iter()
            .take_while(move |(since, _)| *since <= cutoff)
            .map(|&(_, id)| id)
    }

    /// Recomputes the leak summary and returns the sockets that crossed the
    /// threshold since the last sweep (each is returned once, for logging).
    pub fn sweep_leaks(&mut self, now_ns: u64) -> Vec<Leak> {
        if now_ns < self.cfg.close_wait_threshold_ns {
            self.leak_summary = LeakSummary::default();
            return Vec::new();
        }
        let ids: Vec<u64> = self.leaked_ids(now_ns).collect();
        let mut by_comm: std::collections::HashMap<String, u64> = Default::default();
        let mut fresh = Vec::new();
        for id in &ids {
            let Some(leak) = self.leak(*id, now_ns) else {
                continue;
            };
            let name = leak
                .comm
                .map(|c| c.to_string())
                .unwrap_or_else(|| LeakSummary::UNKNOWN.to_owned());
            *by_comm.entry(name).or_insert(0) += 1;
            if let Some(s) = self.socks.get_mut(id)
                && !s.leak_logged
            {
                s.leak_logged = true;
                fresh.push(leak);
            }
        }
        let mut ranked: Vec<(String, u64)> = by_comm.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        if ranked.len() > self.cfg.leak_top_n {
            let rest: u64 = ranked.drain(self.cfg.leak_top_n..).map(|(_, n)| n).sum();
            ranked.push((LeakSummary::OTHER.to_owned(), rest));
        }
        self.leak_summary = LeakSummary {
            total: ids.len() as u64,
            by_comm: ranked,
        };
        fresh
    }

    /// The summary of the last sweep.
    pub fn leak_summary(&self) -> &LeakSummary {
        &self.leak_summary
    }

    /// Leaked sockets now, oldest first, at most `limit`.
    pub fn leaks(&self, now_ns: u64, limit: usize) -> Vec<Leak> {
        self.leaked_ids(now_ns)
            .take(limit)
            .filter_map(|id| self.leak(id, now_ns))
            .collect()
    }
}
