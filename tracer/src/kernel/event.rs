//! Decoding ring-buffer records into [`Record`]s: the checked, typed form
//! of a [`tracer_common::Event`], a [`Transition`] of a full socket or a
//! [`TimewaitChange`] from the timewait programs.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use tracer_common::{
    AF_INET, AF_INET6, DETAIL_BY_TIME_WAIT, DETAIL_CLOSER_KNOWN, DETAIL_ERR_KNOWN,
    DETAIL_ERR_SHIFT, DETAIL_FIN_KNOWN, DETAIL_FIN_RECEIVED, DETAIL_RESET_KNOWN,
    DETAIL_RESET_RECEIVED, DETAIL_TIMEWAIT_SOCK, Event, TASK_COMM_LEN, TcpState,
    state::UnknownState,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("ring buffer record of {0} bytes, expected {expected}", expected = std::mem::size_of::<Event>())]
    Size(usize),
    #[error("unknown TCP state number {0}")]
    State(u8),
    #[error("unknown address family {0}")]
    Family(u16),
    #[error("timewait record with states {0} -> {1}")]
    TimewaitStates(u8, u8),
}

impl From<UnknownState> for DecodeError {
    fn from(e: UnknownState) -> Self {
        DecodeError::State(e.0)
    }
}

/// IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// 4 or 6, as flags and JSON spell it.
    pub fn number(self) -> u8 {
        match self {
            Family::V4 => 4,
            Family::V6 => 6,
        }
    }
}

/// A task's `comm`: up to 15 bytes, not necessarily UTF-8.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Comm([u8; TASK_COMM_LEN]);

impl Comm {
    pub fn new(raw: [u8; TASK_COMM_LEN]) -> Comm {
        Comm(raw)
    }

    /// From a process name as /proc shows it (cut to 15 bytes, like the kernel).
    pub fn from_name(name: &str) -> Comm {
        let mut raw = [0u8; TASK_COMM_LEN];
        let n = name.len().min(TASK_COMM_LEN - 1);
        raw[..n].copy_from_slice(&name.as_bytes()[..n]);
        Comm(raw)
    }

    pub fn bytes(&self) -> &[u8] {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(TASK_COMM_LEN);
        &self.0[..end]
    }
}

impl fmt::Display for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&String::from_utf8_lossy(self.bytes()))
    }
}

impl fmt::Debug for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.bytes()))
    }
}

/// One record of the ring buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    Transition(Transition),
    Timewait(TimewaitChange),
}

impl Record {
    /// Decodes a ring-buffer record.
    pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
        if bytes.len() != std::mem::size_of::<Event>() {
            return Err(DecodeError::Size(bytes.len()));
        }
        // SAFETY: the length matches and Event is plain integers; the ring
        // buffer gives 8-byte alignment but read_unaligned does not rely on it.
        let event: Event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        if event.detail & DETAIL_TIMEWAIT_SOCK != 0 {
            TimewaitChange::try_from(&event).map(Record::Timewait)
        } else {
            Transition::try_from(&event).map(Record::Transition)
        }
    }
}

/// A change in a timewait socket's life (see
/// [`tracer_common::DETAIL_TIMEWAIT_SOCK`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimewaitChange {
    /// Kernel CLOCK_MONOTONIC time, nanoseconds.
    pub ts_ns: u64,
    /// Kernel address of the timewait socket.
    pub twaddr: u64,
    pub netns: u32,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub kind: TimewaitKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimewaitKind {
    /// Made in this substate (TIME_WAIT, or FIN_WAIT2 for an orphaned
    /// FIN_WAIT2), its timer set to this many jiffies.
    Made {
        substate: TcpState,
        timer_jiffies: u64,
    },
    /// Its timer set again, in this substate (the peer's FIN turned
    /// FIN_WAIT2 into TIME_WAIT, or a segment restarted the timer).
    Rearmed {
        substate: TcpState,
        timer_jiffies: u64,
    },
    /// Gone from the kernel's tables, from this substate.
    Gone { substate: TcpState },
}

impl TryFrom<&Event> for TimewaitChange {
    type Error = DecodeError;

    fn try_from(e: &Event) -> Result<Self, Self::Error> {
        let (_, local, remote) = addresses(e)?;
        let (old, new) = (
            TcpState::try_from(e.oldstate)?,
            TcpState::try_from(e.newstate)?,
        );
        let substate = |s: TcpState| match s {
            TcpState::TimeWait | TcpState::FinWait2 => Ok(s),
            _ => Err(DecodeError::TimewaitStates(e.oldstate, e.newstate)),
        };
        let timer_jiffies = e.old_state_ns;
        let kind = match (old, new) {
            (TcpState::Close, s) => TimewaitKind::Made {
                substate: substate(s)?,
                timer_jiffies,
            },
            (s, TcpState::Close) => TimewaitKind::Gone {
                substate: substate(s)?,
            },
            (a, b) if a == b => TimewaitKind::Rearmed {
                substate: substate(a)?,
                timer_jiffies,
            },
            _ => return Err(DecodeError::TimewaitStates(e.oldstate, e.newstate)),
        };
        Ok(TimewaitChange {
            ts_ns: e.ts_ns,
            twaddr: e.skaddr,
            netns: e.netns,
            local: SocketAddr::new(local, e.sport),
            remote: SocketAddr::new(remote, e.dport),
            kind,
        })
    }
}

/// The family and the local and remote address of a record.
fn addresses(e: &Event) -> Result<(Family, IpAddr, IpAddr), DecodeError> {
    Ok(match e.family {
        AF_INET => {
            let v4 = |a: &[u8; 16]| IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]));
            (Family::V4, v4(&e.saddr), v4(&e.daddr))
        }
        AF_INET6 => (
            Family::V6,
            IpAddr::V6(Ipv6Addr::from(e.saddr)),
            IpAddr::V6(Ipv6Addr::from(e.daddr)),
        ),
        other => return Err(DecodeError::Family(other)),
    })
}

/// One TCP state transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// Kernel CLOCK_MONOTONIC time, nanoseconds.
    pub ts_ns: u64,
    pub skaddr: u64,
    pub old: TcpState,
    pub new: TcpState,
    pub family: Family,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The task that was current in the kernel. For transitions driven by
    /// packets (softirq) this is whatever ran on that CPU, often pid 0.
    pub pid: u32,
    pub tid: u32,
    pub comm: Comm,
    pub netns: u32,
    /// Time spent in `old`; `None` when the kernel did not know when the
    /// socket entered it.
    pub old_state: Option<Duration>,
    /// For `FIN_WAIT1|FIN_WAIT2|CLOSING -> CLOSE`: whether the peer's FIN
    /// had arrived (see [`tracer_common::DETAIL_FIN_KNOWN`]); `None` for
    /// other transitions or when the kernel program could not read it.
    pub fin_received: Option<bool>,
    /// For such a close, whether `tcp_time_wait()` closed it, which makes a
    /// timewait socket unless the table is full (see
    /// [`tracer_common::DETAIL_BY_TIME_WAIT`]); `None` when not read.
    pub timewait_made: Option<bool>,
    /// For a `-> CLOSE`, the socket's `sk_err` (0: none; ECONNREFUSED,
    /// ECONNRESET, ETIMEDOUT, ... say why it closed); `None` when not read.
    pub sk_err: Option<u8>,
    /// For a `SYN_SENT -> CLOSE`, whether a reset had answered the connect
    /// (see [`tracer_common::DETAIL_RESET_KNOWN`]); `None` when resets were
    /// not watched.
    pub reset_received: Option<bool>,
}

impl Transition {
    /// An accepted child's `LISTEN -> SYN_RECV` that carries the listener's
    /// tuple (local address and port, remote `*:0`) instead of its own:
    /// before Linux 6.15 the kernel fires it in `inet_csk_clone_lock()`,
    /// before the child's addresses are set. Its next event
    /// (`SYN_RECV -> ESTABLISHED`) carries the four-tuple; only the
    /// listening port can be relied on here.
    pub fn is_child_before_its_tuple(&self) -> bool {
        self.old == TcpState::Listen && self.new == TcpState::SynRecv && self.remote.port() == 0
    }
}

impl TryFrom<&Event> for Transition {
    type Error = DecodeError;

    fn try_from(e: &Event) -> Result<Self, Self::Error> {
        let (family, local, remote) = addresses(e)?;
        Ok(Transition {
            ts_ns: e.ts_ns,
            skaddr: e.skaddr,
            old: TcpState::try_from(e.oldstate)?,
            new: TcpState::try_from(e.newstate)?,
            family,
            local: SocketAddr::new(local, e.sport),
            remote: SocketAddr::new(remote, e.dport),
            pid: e.pid,
            tid: e.tid,
            comm: Comm(e.comm),
            netns: e.netns,
            old_state: (e.old_state_ns != 0).then(|| Duration::from_nanos(e.old_state_ns)),
            fin_received: (e.detail & DETAIL_FIN_KNOWN != 0)
                .then_some(e.detail & DETAIL_FIN_RECEIVED != 0),
            timewait_made: (e.detail & DETAIL_CLOSER_KNOWN != 0)
                .then_some(e.detail & DETAIL_BY_TIME_WAIT != 0),
            sk_err: (e.detail & DETAIL_ERR_KNOWN != 0)
                .then_some((e.detail >> DETAIL_ERR_SHIFT) as u8),
            reset_received: (e.detail & DETAIL_RESET_KNOWN != 0)
                .then_some(e.detail & DETAIL_RESET_RECEIVED != 0),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A made-up event: 127.0.0.1:40000 -> 127.0.0.1:8080, ESTABLISHED -> FIN_WAIT1.
    pub(crate) fn sample_event() -> Event {
        let mut comm = [0u8; TASK_COMM_LEN];
        comm[..4].copy_from_slice(b"curl");
        let mut saddr = [0u8; 16];
        saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        Event {
            ts_ns: 5_000_000_000,
            skaddr: 0xffff_8880_1234_5678,
            old_state_ns: 1_500_000,
            netns: 4026531840,
            pid: 4242,
            tid: 4243,
            oldstate: 1,
            newstate: 4,
            family: AF_INET,
            sport: 40000,
            dport: 8080,
            detail: 0,
            saddr,
            daddr: saddr,
            comm,
        }
    }

    fn as_bytes(e: &Event) -> Vec<u8> {
        // SAFETY: Event is repr(C) plain data without uninitialised padding.
        unsafe { std::slice::from_raw_parts((e as *const Event).cast::<u8>(), size_of::<Event>()) }
            .to_vec()
    }

    fn transition(bytes: &[u8]) -> Transition {
        match Record::decode(bytes) {
            Ok(Record::Transition(t)) => t,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn decodes_ipv4() {
        let t = transition(&as_bytes(&sample_event()));
        assert_eq!(t.old, TcpState::Established);
        assert_eq!(t.new, TcpState::FinWait1);
        assert_eq!(t.local, "127.0.0.1:40000".parse().unwrap());
        assert_eq!(t.remote, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.comm.to_string(), "curl");
        assert_eq!((t.pid, t.tid), (4242, 4243));
        assert_eq!(t.old_state, Some(Duration::from_micros(1500)));
        assert_eq!(t.family, Family::V4);
    }

    #[test]
    fn decodes_a_failed_connects_error_and_whether_a_reset_came() {
        let mut e = sample_event();
        (e.oldstate, e.newstate) = (TcpState::SynSent as u8, TcpState::Close as u8);
        let err = (libc::ECONNREFUSED as u32) << DETAIL_ERR_SHIFT;
        let decode = |e: &Event| {
            let t = transition(&as_bytes(e));
            (t.sk_err, t.reset_received)
        };
        e.detail = DETAIL_ERR_KNOWN | err;
        assert_eq!(decode(&e), (Some(libc::ECONNREFUSED as u8), None));
        e.detail = DETAIL_ERR_KNOWN | err | DETAIL_RESET_KNOWN;
        assert_eq!(decode(&e).1, Some(false), "an ICMP port unreachable");
        e.detail |= DETAIL_RESET_RECEIVED;
        assert_eq!(decode(&e).1, Some(true), "refused by a reset");
    }

    #[test]
    fn decodes_ipv6_and_unknown_time() {
        let mut e = sample_event();
        e.family = AF_INET6;
        e.saddr = Ipv6Addr::LOCALHOST.octets();
        e.daddr = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets();
        e.old_state_ns = 0;
        let t = Transition::try_from(&e).unwrap();
        assert_eq!(t.local, "[::1]:40000".parse().unwrap());
        assert_eq!(t.remote, "[2001:db8::1]:8080".parse().unwrap());
        assert_eq!(t.old_state, None);
        assert_eq!(t.family, Family::V6);
    }

    #[test]
    fn rejects_bad_records() {
        assert_eq!(Record::decode(&[0u8; 10]), Err(DecodeError::Size(10)));
        let mut e = sample_event();
        e.newstate = 13;
        assert_eq!(Transition::try_from(&e), Err(DecodeError::State(13)));
        let mut e = sample_event();
        e.family = 1;
        assert_eq!(Transition::try_from(&e), Err(DecodeError::Family(1)));
    }

    /// A timewait record of `sample_event`'s four-tuple.
    fn timewait_record(old: u8, new: u8, jiffies: u64) -> Record {
        let mut e = sample_event();
        e.detail = DETAIL_TIMEWAIT_SOCK;
        (e.oldstate, e.newstate, e.old_state_ns) = (old, new, jiffies);
        Record::decode(&as_bytes(&e)).unwrap()
    }

    #[test]
    fn decodes_a_timewait_sockets_life() {
        let Record::Timewait(made) = timewait_record(7, 6, 15_000) else {
            panic!("not a timewait record");
        };
        assert_eq!(made.local, "127.0.0.1:40000".parse().unwrap());
        assert_eq!(
            (made.twaddr, made.netns),
            (0xffff_8880_1234_5678, 4026531840)
        );
        let made_in = |substate| TimewaitKind::Made {
            substate,
            timer_jiffies: 15_000,
        };
        assert_eq!(made.kind, made_in(TcpState::TimeWait));
        let kind = |r: Record| match r {
            Record::Timewait(c) => c.kind,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            kind(timewait_record(7, 5, 15_000)),
            made_in(TcpState::FinWait2)
        );
        assert_eq!(
            kind(timewait_record(6, 6, 9)),
            TimewaitKind::Rearmed {
                substate: TcpState::TimeWait,
                timer_jiffies: 9
            }
        );
        assert_eq!(
            kind(timewait_record(5, 7, 0)),
            TimewaitKind::Gone {
                substate: TcpState::FinWait2
            }
        );
    }

    #[test]
    fn rejects_timewait_records_that_no_kernel_writes() {
        for (old, new) in [(1, 7), (7, 1), (5, 6), (7, 7)] {
            let mut e = sample_event();
            e.detail = DETAIL_TIMEWAIT_SOCK;
            (e.oldstate, e.newstate) = (old, new);
            assert_eq!(
                Record::decode(&as_bytes(&e)),
                Err(DecodeError::TimewaitStates(old, new)),
                "{old} -> {new}"
            );
        }
    }

    #[test]
    fn comm_stops_at_nul_and_survives_bad_utf8() {
        let mut raw = [0u8; TASK_COMM_LEN];
        raw[..3].copy_from_slice(&[b'a', 0xff, b'b']);
        assert_eq!(Comm::new(raw).to_string(), "a\u{fffd}b");
        assert_eq!(
            Comm::new([b'x'; TASK_COMM_LEN]).bytes().len(),
            TASK_COMM_LEN
        );
    }
}
