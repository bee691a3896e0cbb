//! How each connection ended, from its `-> CLOSE`: a connect that never
//! reached ESTABLISHED failed for a reason, any other connection closed by
//! a cause. Both come from the state it closed from and its `sk_err`,
//! which the kernel sets before it moves the socket to CLOSE (`tcp_reset`:
//! ECONNREFUSED in SYN_SENT, EPIPE in CLOSE_WAIT, ECONNRESET elsewhere;
//! `tcp_write_err`: ETIMEDOUT, or the soft ICMP error that preceded the
//! timeout; `tcp_v4_err`/`tcp_v6_err`: an ICMP error in SYN_SENT, port
//! unreachable giving ECONNREFUSED like a reset, which the kernel program
//! tells apart by whether a reset arrived; `tcp_abort`: ECONNABORTED).

use std::net::SocketAddr;

use tracer_common::TcpState;

use super::{HashMap, ranked::Ranked};
use crate::kernel::event::Transition;

/// A connect's destination: its namespace and remote address.
pub type Destination = (u32, SocketAddr);

/// Endings counted: connect failures by destination (the most active
/// ones, see [`Ranked`]) and reason, closes by cause.
#[derive(Debug, Clone)]
pub struct EndingCounts {
    pub connect_failures: Ranked<Destination, [u64; ConnectFailure::ALL.len()]>,
    /// By network namespace (a handful per host).
    pub closed: HashMap<u32, [u64; CloseCause::ALL.len()]>,
}

impl EndingCounts {
    pub fn new(destinations: usize) -> EndingCounts {
        EndingCounts {
            connect_failures: Ranked::new(destinations),
            closed: HashMap::default(),
        }
    }

    /// Counts the ending `t` says, if any.
    pub fn count(&mut self, t: &Transition) {
        match Ending::of(t) {
            Some(Ending::ConnectFailed(reason)) => {
                self.connect_failures
                    .record(&(t.netns, t.remote), t.ts_ns, |v| v[reason.index()] += 1)
            }
            Some(Ending::Closed(cause)) => {
                self.closed.entry(t.netns).or_default()[cause.index()] += 1
            }
            None => {}
        }
    }
}

/// Why a connect failed (`SYN_SENT -> CLOSE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectFailure {
    /// A reset answered the SYN (ECONNREFUSED after a reset; where resets
    /// are not watched, also after an ICMP port unreachable).
    Refused,
    /// The SYN retries ran out (ETIMEDOUT).
    Timeout,
    /// An ICMP error: host, network or port unreachable, host down.
    Unreachable,
    /// The application closed it first (no error), or `ss -K` killed it.
    Aborted,
    /// Any other error.
    Other,
}

impl ConnectFailure {
    pub const ALL: [ConnectFailure; 5] = [
        ConnectFailure::Refused,
        ConnectFailure::Timeout,
        ConnectFailure::Unreachable,
        ConnectFailure::Aborted,
        ConnectFailure::Other,
    ];

    /// The `reason` label.
    pub fn name(self) -> &'static str {
        match self {
            ConnectFailure::Refused => "refused",
            ConnectFailure::Timeout => "timeout",
            ConnectFailure::Unreachable => "unreachable",
            ConnectFailure::Aborted => "aborted",
            ConnectFailure::Other => "other",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// How a connection that was not a failed connect ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCause {
    /// Orderly: both FINs.
    Fin,
    /// The peer reset it (ECONNRESET, EPIPE).
    ResetReceived,
    /// This side reset it: `close()` with unread data, `SO_LINGER` 0, an
    /// orphan's FIN_WAIT2 timeout.
    ResetSent,
    /// Retransmissions or keepalives ran out (ETIMEDOUT, or the ICMP error
    /// that preceded the timeout).
    Timeout,
    /// Killed by `tcp_abort` (ECONNABORTED: `ss -K`, SOCK_DESTROY).
    Aborted,
}

impl CloseCause {
    pub const ALL: [CloseCause; 5] = [
        CloseCause::Fin,
        CloseCause::ResetReceived,
        CloseCause::ResetSent,
        CloseCause::Timeout,
        CloseCause::Aborted,
    ];

    /// The `cause` label.
    pub fn name(self) -> &'static str {
        match self {
            CloseCause::Fin => "fin",
            CloseCause::ResetReceived => "reset_received",
            CloseCause::ResetSent => "reset_sent",
            CloseCause::Timeout => "timeout",
            CloseCause::Aborted => "aborted",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// How one connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    ConnectFailed(ConnectFailure),
    Closed(CloseCause),
}

impl Ending {
    /// The ending a `-> CLOSE` says, if it ends a connection (a listener
    /// closing ends none).
    pub fn of(t: &Transition) -> Option<Ending> {
        if t.new != TcpState::Close {
            return None;
        }
        let err = t.sk_err.map(i32::from);
        match t.old {
            TcpState::SynSent => Some(Ending::ConnectFailed(connect_failure(
                err,
                t.reset_received,
            ))),
            TcpState::SynRecv
            | TcpState::Established
            | TcpState::FinWait1
            | TcpState::FinWait2
            | TcpState::Closing
            | TcpState::CloseWait
            | TcpState::LastAck => Some(Ending::Closed(close_cause(t, err))),
            _ => None,
        }
    }

    /// `reason` or `cause`, as the metrics and `tracer trace` name it.
    pub fn name(self) -> &'static str {
        match self {
            Ending::ConnectFailed(f) => f.name(),
            Ending::Closed(c) => c.name(),
        }
    }
}

/// `reset`: whether a reset answered the connect, None when not watched.
fn connect_failure(err: Option<i32>, reset: Option<bool>) -> ConnectFailure {
    match err {
        // No reset came: an ICMP port unreachable (`icmp_err_convert`).
        Some(libc::ECONNREFUSED) if reset == Some(false) => ConnectFailure::Unreachable,
        Some(libc::ECONNREFUSED) => ConnectFailure::Refused,
        Some(libc::ETIMEDOUT) => ConnectFailure::Timeout,
        Some(
            libc::EHOSTUNREACH
            | libc::ENETUNREACH
            | libc::EHOSTDOWN
            | libc::ENETDOWN
            | libc::ENONET,
        ) => ConnectFailure::Unreachable,
        Some(0 | libc::ECONNABORTED) => ConnectFailure::Aborted,
        _ => ConnectFailure::Other,
    }
}

fn close_cause(t: &Transition, err: Option<i32>) -> CloseCause {
    match err {
        Some(libc::ECONNRESET | libc::EPIPE) => CloseCause::ResetReceived,
        Some(libc::ECONNABORTED) => CloseCause::Aborted,
        // A retransmission timeout reports the soft ICMP error it saw, if any.
        Some(e) if e != 0 => CloseCause::Timeout,
        _ => match t.old {
            TcpState::LastAck => CloseCause::Fin,
            // Orderly unless the kernel program saw no timewait socket made.
            TcpState::FinWait1 | TcpState::FinWait2 | TcpState::Closing => {
                if t.timewait_made == Some(false) {
                    CloseCause::ResetSent
                } else {
                    CloseCause::Fin
                }
            }
            // Straight to CLOSE without an error: the application's close
            // sent a reset (unread data, SO_LINGER 0).
            _ => CloseCause::ResetSent,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::event::tests::sample_event;
    use TcpState::*;

    fn close(old: TcpState, sk_err: Option<u8>, timewait_made: Option<bool>) -> Option<Ending> {
        let mut t = Transition::try_from(&sample_event()).expect("sample");
        (t.old, t.new, t.sk_err, t.timewait_made) = (old, Close, sk_err, timewait_made);
        Ending::of(&t)
    }

    fn err(e: i32) -> Option<u8> {
        Some(e as u8)
    }

    #[test]
    fn connects_fail_by_the_error_the_kernel_set() {
        let failed = |e| close(SynSent, e, None);
        use ConnectFailure::*;
        assert_eq!(
            failed(err(libc::ECONNREFUSED)),
            Some(Ending::ConnectFailed(Refused))
        );
        assert_eq!(
            failed(err(libc::ETIMEDOUT)),
            Some(Ending::ConnectFailed(Timeout))
        );
        for e in [libc::EHOSTUNREACH, libc::ENETUNREACH, libc::EHOSTDOWN] {
            assert_eq!(failed(err(e)), Some(Ending::ConnectFailed(Unreachable)));
        }
        assert_eq!(failed(err(0)), Some(Ending::ConnectFailed(Aborted)));
        assert_eq!(
            failed(err(libc::EPROTO)),
            Some(Ending::ConnectFailed(Other))
        );
        assert_eq!(failed(None), Some(Ending::ConnectFailed(Other)));
    }

    #[test]
    fn econnrefused_without_a_reset_is_an_icmp_port_unreachable() {
        let failed = |reset| {
            let mut t = Transition::try_from(&sample_event()).expect("sample");
            (t.old, t.new, t.sk_err) = (SynSent, Close, err(libc::ECONNREFUSED));
            t.reset_received = reset;
            Ending::of(&t)
        };
        use ConnectFailure::*;
        assert_eq!(failed(Some(true)), Some(Ending::ConnectFailed(Refused)));
        assert_eq!(
            failed(Some(false)),
            Some(Ending::ConnectFailed(Unreachable))
        );
        // Resets not watched: a reset is the likelier cause.
        assert_eq!(failed(None), Some(Ending::ConnectFailed(Refused)));
    }

    #[test]
    fn connections_close_by_cause() {
        use CloseCause::*;
        let closed = |c| Some(Ending::Closed(c));
        assert_eq!(close(LastAck, err(0), None), closed(Fin));
        assert_eq!(close(FinWait2, err(0), Some(true)), closed(Fin));
        assert_eq!(close(FinWait2, err(0), None), closed(Fin));
        assert_eq!(close(FinWait2, err(0), Some(false)), closed(ResetSent));
        assert_eq!(close(Established, err(0), None), closed(ResetSent));
        assert_eq!(close(CloseWait, err(0), None), closed(ResetSent));
        assert_eq!(
            close(Established, err(libc::ECONNRESET), None),
            closed(ResetReceived)
        );
        assert_eq!(
            close(CloseWait, err(libc::EPIPE), None),
            closed(ResetReceived)
        );
        assert_eq!(
            close(Established, err(libc::ETIMEDOUT), None),
            closed(Timeout)
        );
        assert_eq!(
            close(Established, err(libc::EHOSTUNREACH), None),
            closed(Timeout)
        );
        assert_eq!(
            close(Established, err(libc::ECONNABORTED), None),
            closed(Aborted)
        );
    }

    #[test]
    fn listeners_and_other_transitions_end_no_connection() {
        assert_eq!(close(Listen, err(0), None), None);
        let mut t = Transition::try_from(&sample_event()).expect("sample");
        t.new = FinWait1;
        assert_eq!(Ending::of(&t), None);
    }
}
