//! CLOSE_WAIT leaks: sockets whose peer closed long ago while their owner
//! never did. The index is ordered by age, so a sweep costs only the leaks.

use std::net::SocketAddr;

use tracer_common::TcpState;

use super::Engine;
use super::Tuple;
use crate::kernel::event::Comm;

/// One leaked socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leak {
    /// The engine's id for the socket (see [`Engine::check_owners`]).
    pub id: u64,
    /// 0 when the owner is unknown.
    pub pid: u32,
    pub comm: Option<Comm>,
    pub netns: u32,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Time in CLOSE_WAIT (a lower bound for sockets older than the daemon).
    pub age_ns: u64,
}

/// A leaked socket whose owner is to be checked (the daemon asks
/// `sockets::owners`): the engine's id for it, its tuple, and the pid
/// the events named (0 if none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnerQuery {
    pub id: u64,
    pub tuple: Tuple,
    pub claimed: u32,
}

/// What the check found for one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnerAnswer {
    pub id: u64,
    pub tuple: Tuple,
    /// The kernel lists it in CLOSE_WAIT; if not, it moved on and the
    /// engine hears of that from its events.
    pub listed: bool,
    /// The holder `ss -p` lists first; None when no process holds it (a
    /// socket still in the accept queue).
    pub holder: Option<(u32, Comm)>,
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
            id,
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

    /// The leaked sockets whose owner has not been checked since they
    /// entered CLOSE_WAIT: what the daemon asks /proc about.
    pub fn owners_to_check(&self, now_ns: u64) -> Vec<OwnerQuery> {
        self.leaked_ids(now_ns)
            .filter_map(|id| {
                let s = self.socks.get(&id)?;
                (!s.owner_checked).then_some(OwnerQuery {
                    id,
                    tuple: s.tuple,
                    claimed: s.owner,
                })
            })
            .collect()
    }

    /// Takes the owners a check found: a socket still in CLOSE_WAIT on the
    /// same tuple is now owned by the holder (or by nobody known).
    pub fn check_owners(&mut self, answers: &[OwnerAnswer]) {
        for answer in answers {
            let Some(s) = self.socks.get_mut(&answer.id) else {
                continue;
            };
            if s.tuple != answer.tuple || s.state != TcpState::CloseWait {
                continue;
            }
            s.owner_checked = true;
            if !answer.listed {
                continue;
            }
            let old = s.owner;
            let new = match answer.holder {
                Some((pid, comm)) => self.owners.retain(pid, comm),
                None => 0,
            };
            if let Some(s) = self.socks.get_mut(&answer.id) {
                s.owner = new;
            }
            self.owners.release(old);
        }
    }

    /// The leak of socket `id`, now.
    pub fn leak_of(&self, id: u64, now_ns: u64) -> Option<Leak> {
        self.leak(id, now_ns)
    }
}
