//! Where each network namespace's socket table is read from, across
//! dumps: sock_diag, or `/proc/net/tcp` when the kernel has no sock_diag
//! for TCP (or the namespace cannot be entered). Decides which namespaces
//! skip sock_diag in the next dump, says once per namespace that it fell
//! back and why, and gives the metric its series.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

/// How one namespace was read in one dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadFrom {
    SockDiag,
    /// `/proc/net/tcp` inside the namespace after sock_diag said it has no
    /// TCP; the cause, for the log.
    ProcNoSockDiag(String),
    /// `/proc/net/tcp` inside the namespace, sock_diag not asked: it was
    /// found missing less than [`SOCK_DIAG_RETRY`] ago.
    ProcKnownNoSockDiag,
    /// `/proc/PID/net/tcp` of a process in it: the namespace could not be
    /// entered.
    ProcNotEntered,
}

/// What the metric says a namespace was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    SockDiag,
    Proc,
}

impl Source {
    /// The `source` label's value.
    pub fn name(self) -> &'static str {
        match self {
            Source::SockDiag => "sock_diag",
            Source::Proc => "proc",
        }
    }
}

/// A namespace found without sock_diag asks again this long after: the
/// module may have been loaded by hand since. Not on every dump, because
/// each request makes the kernel run modprobe for the missing module.
pub const SOCK_DIAG_RETRY: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    SockDiag,
    /// sock_diag was last asked (and said no) at this CLOCK_MONOTONIC time.
    NoSockDiag {
        asked_ns: u64,
    },
    NotEntered,
}

/// A line for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Warn(String),
    Info(String),
}

#[derive(Debug, Default)]
pub struct Sources {
    by_netns: HashMap<u32, State>,
}

impl Sources {
    /// Namespaces the next dump should read from `/proc/net/tcp` without
    /// asking sock_diag first.
    pub fn skip_sock_diag(&self, now_ns: u64) -> HashSet<u32> {
        let retry = SOCK_DIAG_RETRY.as_nanos() as u64;
        self.by_netns
            .iter()
            .filter_map(|(&netns, state)| match state {
                State::NoSockDiag { asked_ns } if now_ns.saturating_sub(*asked_ns) < retry => {
                    Some(netns)
                }
                _ => None,
            })
            .collect()
    }

    /// Takes in how a dump read each namespace. Namespaces it could not
    /// read keep what they had; namespaces it did not list are gone.
    /// Returns what to log: a warning the first time a namespace falls
    /// back for want of sock_diag, a note when sock_diag comes back.
    pub fn record(
        &mut self,
        read: Vec<(u32, ReadFrom)>,
        unread: &[u32],
        now_ns: u64,
    ) -> Vec<Notice> {
        let mut notices = Vec::new();
        let mut next: HashMap<u32, State> = unread
            .iter()
            .filter_map(|ns| Some((*ns, *self.by_netns.get(ns)?)))
            .collect();
        for (netns, how) in read {
            let before = self.by_netns.get(&netns).copied();
            let was_missing = matches!(before, Some(State::NoSockDiag { .. }));
            let state = match how {
                ReadFrom::SockDiag => {
                    if was_missing {
                        notices.push(Notice::Info(format!(
                            "sock_diag for TCP is available again in network namespace \
                             {netns}; reading it instead of /proc/net/tcp"
                        )));
                    }
                    State::SockDiag
                }
                ReadFrom::ProcNoSockDiag(cause) => {
                    if !was_missing {
                        notices.push(Notice::Warn(format!(
                            "sock_diag for TCP is not available in network namespace {netns} \
                             ({cause}); reading /proc/net/tcp and tcp6 instead, which is \
                             slower; asking sock_diag again every {} s",
                            SOCK_DIAG_RETRY.as_secs()
                        )));
                    }
                    State::NoSockDiag { asked_ns: now_ns }
                }
                ReadFrom::ProcKnownNoSockDiag => match before {
                    Some(s @ State::NoSockDiag { .. }) => s,
                    _ => State::NoSockDiag { asked_ns: now_ns },
                },
                ReadFrom::ProcNotEntered => State::NotEntered,
            };
            next.insert(netns, state);
        }
        self.by_netns = next;
        notices
    }

    /// Each known namespace's source, by inode.
    pub fn series(&self) -> Vec<(u32, Source)> {
        let mut v: Vec<(u32, Source)> = self
            .by_netns
            .iter()
            .map(|(&netns, state)| {
                let source = match state {
                    State::SockDiag => Source::SockDiag,
                    State::NoSockDiag { .. } | State::NotEntered => Source::Proc,
                };
                (netns, source)
            })
            .collect();
        v.sort_unstable_by_key(|(netns, _)| *netns);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn missing(cause: &str) -> ReadFrom {
        ReadFrom::ProcNoSockDiag(cause.to_owned())
    }

    fn warnings(notices: &[Notice]) -> Vec<&str> {
        notices
            .iter()
            .filter_map(|n| match n {
                Notice::Warn(w) => Some(w.as_str()),
                Notice::Info(_) => None,
            })
            .collect()
    }

    #[test]
    fn one_warning_per_namespace_naming_the_cause() {
        let mut sources = Sources::default();
        let first = sources.record(
            vec![(1, missing("no tcp_diag")), (2, missing("no tcp_diag"))],
            &[],
            10 * S,
        );
        let w = warnings(&first);
        assert_eq!(w.len(), 2, "{first:?}");
        assert!(w[0].starts_with("sock_diag for TCP is not available in network namespace 1"));
        assert!(w[0].contains("(no tcp_diag); reading /proc/net/tcp and tcp6 instead"));
        assert!(w[1].contains("network namespace 2 "));
        // Later dumps, skipping sock_diag or asking again, say nothing more.
        let skip = sources.skip_sock_diag(11 * S);
        assert_eq!(skip, HashSet::from([1, 2]));
        let again = sources.record(
            vec![
                (1, ReadFrom::ProcKnownNoSockDiag),
                (2, missing("no tcp_diag")),
            ],
            &[],
            11 * S,
        );
        assert!(again.is_empty(), "{again:?}");
        assert_eq!(sources.series(), [(1, Source::Proc), (2, Source::Proc)]);
    }

    #[test]
    fn sock_diag_is_asked_again_after_the_retry_interval() {
        let mut sources = Sources::default();
        sources.record(vec![(1, missing("x"))], &[], 100 * S);
        let retry = SOCK_DIAG_RETRY.as_nanos() as u64;
        assert!(sources.skip_sock_diag(100 * S + retry - 1).contains(&1));
        // Skipping does not move the time of the last ask.
        sources.record(vec![(1, ReadFrom::ProcKnownNoSockDiag)], &[], 200 * S);
        assert!(sources.skip_sock_diag(100 * S + retry).is_empty());
        // Asked again and still missing: the wait starts over.
        sources.record(vec![(1, missing("x"))], &[], 100 * S + retry);
        assert!(sources.skip_sock_diag(100 * S + retry + 1).contains(&1));
    }

    #[test]
    fn sock_diag_coming_back_is_noted_and_a_later_loss_warns_again() {
        let mut sources = Sources::default();
        sources.record(vec![(1, missing("x"))], &[], S);
        let back = sources.record(vec![(1, ReadFrom::SockDiag)], &[], 400 * S);
        assert!(
            matches!(&back[..], [Notice::Info(i)] if i.contains("available again in network namespace 1")),
            "{back:?}"
        );
        assert_eq!(sources.series(), [(1, Source::SockDiag)]);
        assert!(sources.skip_sock_diag(401 * S).is_empty());
        let lost = sources.record(vec![(1, missing("y"))], &[], 500 * S);
        assert_eq!(warnings(&lost).len(), 1);
    }

    #[test]
    fn namespaces_read_through_a_process_count_as_proc_without_a_warning() {
        let mut sources = Sources::default();
        let notices = sources.record(
            vec![(1, ReadFrom::SockDiag), (2, ReadFrom::ProcNotEntered)],
            &[],
            S,
        );
        assert!(notices.is_empty());
        assert_eq!(sources.series(), [(1, Source::SockDiag), (2, Source::Proc)]);
        // Not a namespace to skip sock_diag in: it was never asked.
        assert!(sources.skip_sock_diag(2 * S).is_empty());
    }

    #[test]
    fn unread_namespaces_keep_their_source_and_gone_ones_leave() {
        let mut sources = Sources::default();
        sources.record(
            vec![
                (1, missing("x")),
                (2, ReadFrom::SockDiag),
                (3, ReadFrom::SockDiag),
            ],
            &[],
            S,
        );
        // 1 could not be read this time, 3 is gone.
        let notices = sources.record(vec![(2, ReadFrom::SockDiag)], &[1], 2 * S);
        assert!(notices.is_empty());
        assert_eq!(sources.series(), [(1, Source::Proc), (2, Source::SockDiag)]);
        // Its fallback is still remembered: no second warning.
        assert!(sources.skip_sock_diag(3 * S).contains(&1));
        let later = sources.record(vec![(1, missing("x"))], &[], 3 * S);
        assert!(later.is_empty());
        // An unread namespace never seen before gets no series.
        sources.record(vec![], &[9], 4 * S);
        assert!(sources.series().iter().all(|(ns, _)| *ns != 9));
    }
}
