//! The kernel's TCP state numbers (`include/net/tcp_states.h`) and their
//! names: the one place they are spelled.

/// A TCP state as the kernel numbers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum TcpState {
    Established = 1,
    SynSent = 2,
    SynRecv = 3,
    FinWait1 = 4,
    FinWait2 = 5,
    TimeWait = 6,
    Close = 7,
    CloseWait = 8,
    LastAck = 9,
    Listen = 10,
    Closing = 11,
    NewSynRecv = 12,
}

impl TcpState {
    /// Every state, in kernel order.
    pub const ALL: [TcpState; 12] = [
        TcpState::Established,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::FinWait1,
        TcpState::FinWait2,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::Listen,
        TcpState::Closing,
        TcpState::NewSynRecv,
    ];

    /// The name used in output, flags and metric labels: the kernel's name
    /// without `TCP_` (as `tcpstates` prints it).
    pub const fn name(self) -> &'static str {
        match self {
            TcpState::Established => "ESTABLISHED",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::FinWait1 => "FIN_WAIT1",
            TcpState::FinWait2 => "FIN_WAIT2",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::Listen => "LISTEN",
            TcpState::Closing => "CLOSING",
            TcpState::NewSynRecv => "NEW_SYN_RECV",
        }
    }

    /// `self -> new` is `FIN_WAIT1|FIN_WAIT2|CLOSING -> CLOSE`: how the
    /// kernel retires a full socket whose connection may live on as a
    /// timewait socket (see [`may_leave_timewait`]).
    pub const fn may_leave_timewait(self, new: TcpState) -> bool {
        may_leave_timewait(self as u32, new as u32)
    }

    /// The kernel's number for this state.
    pub const fn number(self) -> u8 {
        self as u8
    }

    /// Parses a state name, case-insensitively, with or without `TCP_`, with
    /// `-` or `_` (so `close-wait`, `CLOSE_WAIT` and `TCP_CLOSE_WAIT` all work).
    pub fn from_name(name: &str) -> Option<TcpState> {
        let name = name.trim();
        let name = match name.get(..4) {
            Some(p) if p.eq_ignore_ascii_case("tcp_") => &name[4..],
            _ => name,
        };
        TcpState::ALL.into_iter().find(|s| {
            let want = s.name().as_bytes();
            name.len() == want.len()
                && name.bytes().zip(want).all(|(a, &b)| {
                    let a = if a == b'-' { b'_' } else { a };
                    a.eq_ignore_ascii_case(&b)
                })
        })
    }
}

/// A state number the kernel sent that this build does not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownState(pub u8);

impl TryFrom<u8> for TcpState {
    type Error = UnknownState;

    fn try_from(n: u8) -> Result<Self, Self::Error> {
        match n {
            1..=12 => Ok(TcpState::ALL[usize::from(n) - 1]),
            _ => Err(UnknownState(n)),
        }
    }
}

/// On kernel state numbers, for the kernel program: `old -> new` is
/// `FIN_WAIT1|FIN_WAIT2|CLOSING -> CLOSE`, the states `tcp_time_wait()`
/// closes a full socket from after handing its connection to a timewait
/// socket (no event ever shows TIME_WAIT itself).
#[inline(always)]
pub const fn may_leave_timewait(old: u32, new: u32) -> bool {
    new == TcpState::Close as u32
        && (old == TcpState::FinWait1 as u32
            || old == TcpState::FinWait2 as u32
            || old == TcpState::Closing as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip() {
        for s in TcpState::ALL {
            assert_eq!(TcpState::try_from(s.number()), Ok(s));
        }
        assert_eq!(TcpState::try_from(0), Err(UnknownState(0)));
        assert_eq!(TcpState::try_from(13), Err(UnknownState(13)));
    }

    #[test]
    fn only_closes_from_the_closing_states_may_leave_a_timewait_socket() {
        use TcpState::*;
        for s in TcpState::ALL {
            let expected = matches!(s, FinWait1 | FinWait2 | Closing);
            assert_eq!(s.may_leave_timewait(Close), expected, "{s:?}");
        }
        assert!(!FinWait1.may_leave_timewait(FinWait2));
        assert!(!LastAck.may_leave_timewait(Close));
    }

    #[test]
    fn names_parse_loosely() {
        assert_eq!(TcpState::from_name("close-wait"), Some(TcpState::CloseWait));
        assert_eq!(TcpState::from_name("TCP_LISTEN"), Some(TcpState::Listen));
        assert_eq!(TcpState::from_name("fin_wait1"), Some(TcpState::FinWait1));
        assert_eq!(TcpState::from_name("CLOSE"), Some(TcpState::Close));
        assert_eq!(TcpState::from_name("CLOSED"), None);
        assert_eq!(TcpState::from_name(""), None);
    }
}
