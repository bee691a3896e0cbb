//! When each connection began, so that its final `-> CLOSE` says how long
//! it lived: from its first event (`CLOSE -> SYN_SENT` or `LISTEN` for a
//! socket of this host, `LISTEN -> SYN_RECV` for an accepted child), as
//! the stream saw it. Sockets born before the stream began have none.

use std::{collections::HashMap, time::Duration};

use tracer_common::TcpState;

use crate::{engine::endings::Ending, kernel::event::Transition};

/// Births remembered at most: a socket whose close the stream never sees
/// (lost events) must not grow the map without end.
const MAX_SOCKETS: usize = 1 << 20;

/// How a connection ended, for its final row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct End {
    pub ending: Ending,
    /// From its first event; None when the stream did not see it.
    pub lifetime: Option<Duration>,
}

#[derive(Debug, Default)]
pub struct Lifetimes {
    born: HashMap<u64, u64>,
}

impl Lifetimes {
    /// Notes `t` (every transition, printed or not); for a connection's
    /// end, says how it ended.
    pub fn see(&mut self, t: &Transition) -> Option<End> {
        let born =
            t.old == TcpState::Close || (t.old == TcpState::Listen && t.new == TcpState::SynRecv);
        if born {
            if self.born.len() < MAX_SOCKETS || self.born.contains_key(&t.skaddr) {
                self.born.insert(t.skaddr, t.ts_ns);
            }
            return None;
        }
        if t.new != TcpState::Close {
            return None;
        }
        let since = self.born.remove(&t.skaddr);
        let ending = Ending::of(t)?;
        Some(End {
            ending,
            lifetime: since.map(|b| Duration::from_nanos(t.ts_ns.saturating_sub(b))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::endings::ConnectFailure;
    use crate::kernel::event::tests::sample_event;

    fn ev(ts_ns: u64, old: TcpState, new: TcpState, sk_err: Option<u8>) -> Transition {
        let mut t = Transition::try_from(&sample_event()).expect("sample");
        (t.ts_ns, t.old, t.new, t.sk_err) = (ts_ns, old, new, sk_err);
        t
    }

    #[test]
    fn a_connect_that_fails_says_why_and_how_long_it_tried() {
        let mut l = Lifetimes::default();
        assert_eq!(
            l.see(&ev(1_000, TcpState::Close, TcpState::SynSent, None)),
            None
        );
        let end = l.see(&ev(
            3_001_000,
            TcpState::SynSent,
            TcpState::Close,
            Some(libc::ETIMEDOUT as u8),
        ));
        assert_eq!(
            end,
            Some(End {
                ending: Ending::ConnectFailed(ConnectFailure::Timeout),
                lifetime: Some(Duration::from_millis(3)),
            })
        );
        // A socket born before the stream: how it ended, not how long.
        let end = l.see(&ev(9, TcpState::SynSent, TcpState::Close, Some(0)));
        assert_eq!(end.map(|e| e.lifetime), Some(None));
    }

    #[test]
    fn a_listener_closing_ends_no_connection() {
        let mut l = Lifetimes::default();
        l.see(&ev(1, TcpState::Close, TcpState::Listen, None));
        assert_eq!(
            l.see(&ev(2, TcpState::Listen, TcpState::Close, Some(0))),
            None
        );
        assert!(l.born.is_empty());
    }
}
