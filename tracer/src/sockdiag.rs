//! A netlink `sock_diag` dump of TCP sockets: the kernel's own view of every
//! socket and its state, as `ss -tan` gets it.
//!
//! Hand-written on libc because the crates.io parser
//! (`netlink-packet-sock-diag`) drops `idiag_expires`, the remaining time of
//! a TIME_WAIT socket, which we need. The protocol is small: one request
//! (`nlmsghdr` + `inet_diag_req_v2`) per address family, then datagrams of
//! `inet_diag_msg` replies until `NLMSG_DONE`.
//!
//! Parsing ([`parse_messages`]) is a pure function over bytes so it can be
//! tested with made-up replies; it reads fields by offset instead of casting
//! to `#[repr(C)]` structs, so no alignment or `unsafe` is involved.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use tracer_common::TcpState;

use crate::event::Family;

/// One socket as sock_diag reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiagSocket {
    pub family: Family,
    /// Kernel state number as reported; for timewait sockets this is their
    /// substate (TIME_WAIT=6 or FIN_WAIT2=5), request sockets report
    /// SYN_RECV (3).
    pub state: u8,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Socket inode (as in `/proc/PID/fd` links); 0 for timewait and request
    /// sockets, which have no file.
    pub inode: u32,
    /// idiag_timer: 0 none, 1 retransmit, 2 keepalive, 3 TIME_WAIT, 4
    /// zero-window probe.
    pub timer: u8,
    /// idiag_expires: milliseconds until the timer fires.
    pub expires_ms: u32,
    pub uid: u32,
}

/// `idiag_timer` values (`net/ipv4/inet_diag.c`).
pub mod timer {
    pub const NONE: u8 = 0;
    pub const RETRANSMIT: u8 = 1;
    pub const KEEPALIVE: u8 = 2;
    pub const TIME_WAIT: u8 = 3;
    pub const ZERO_WINDOW_PROBE: u8 = 4;
}

/// A bitmask for inet_diag_req_v2.states selecting these states.
pub fn state_mask(states: &[TcpState]) -> u32 {
    states.iter().fold(0, |m, s| m | 1 << s.number())
}

/// Every state (what `ss -a` asks for): bits 1..=12. Bit 13, the kernel's
/// TCP_BOUND_INACTIVE pseudo-state (bound but neither listening nor
/// connected, 6.6+), is left out as `ss` leaves it out.
pub const ALL_STATES: u32 = {
    let mut mask = 0;
    let mut i = 0;
    while i < TcpState::ALL.len() {
        mask |= 1 << TcpState::ALL[i].number();
        i += 1;
    }
    mask
};

/// The kernel's TCP_BOUND_INACTIVE pseudo-state (13, Linux 6.6+): asking
/// for it dumps sockets that are bound but neither listening nor
/// connected; they are reported with state CLOSE (7).
pub const BOUND_INACTIVE: u32 = 1 << 13;

#[derive(Debug, thiserror::Error)]
pub enum SockDiagError {
    #[error("cannot open a NETLINK_SOCK_DIAG socket: {0}")]
    Socket(io::Error),
    #[error("cannot send the sock_diag request for {family:?}: {error}")]
    Send { family: Family, error: io::Error },
    #[error("cannot receive the sock_diag reply for {family:?}: {error}")]
    Recv { family: Family, error: io::Error },
    #[error("the kernel answered the sock_diag request with an error: {}", io::Error::from_raw_os_error(*.errno))]
    Kernel { errno: i32 },
    #[error("malformed sock_diag reply at byte {offset}: {what}")]
    Malformed { what: &'static str, offset: usize },
}

/// Dumps TCP sockets of both families in the calling thread's network
/// namespace, calling `f` for each; returns how many.
pub fn dump(states: u32, mut f: impl FnMut(DiagSocket)) -> Result<usize, SockDiagError> {
    let sock = NetlinkSocket::open()?;
    // The kernel sizes dump datagrams after the largest buffer we offer, up
    // to 32 KiB; 64 KiB is never too small.
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    for (seq, family) in [(1, Family::V4), (2, Family::V6)] {
        total += sock.dump_family(family, states, seq, &mut buf, &mut f)?;
    }
    Ok(total)
}

/// Convenience: collect into a Vec.
pub fn dump_all(states: u32) -> Result<Vec<DiagSocket>, SockDiagError> {
    let mut all = Vec::new();
    dump(states, |s| all.push(s))?;
    Ok(all)
}

/// What one buffer of netlink messages held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    /// Sockets passed to the callback.
    pub sockets: usize,
    /// `NLMSG_DONE` was seen: the dump is complete.
    pub done: bool,
}

// linux/netlink.h, linux/sock_diag.h, linux/inet_diag.h.
const NLMSG_HDRLEN: usize = 16;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
/// `struct inet_diag_req_v2`.
const REQ_LEN: usize = 56;
/// `struct inet_diag_msg`, without the attributes that follow it.
const MSG_LEN: usize = 72;

const fn nlmsg_align(len: usize) -> usize {
    (len + 3) & !3
}

/// Parses a buffer of netlink messages (one or more datagrams' worth),
/// calling `f` for each socket. Messages with another sequence number than
/// `seq` are skipped (a fresh socket gets none, but they are not ours).
pub fn parse_messages(
    buf: &[u8],
    seq: u32,
    f: &mut impl FnMut(DiagSocket),
) -> Result<Parsed, SockDiagError> {
    let mut parsed = Parsed {
        sockets: 0,
        done: false,
    };
    let mut offset = 0;
    while offset < buf.len() {
        let start = offset;
        let malformed = move |what| SockDiagError::Malformed {
            what,
            offset: start,
        };
        let rest = &buf[offset..];
        let Some(hdr) = rest.first_chunk::<NLMSG_HDRLEN>() else {
            return Err(malformed("truncated netlink header"));
        };
        let len = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
        let kind = u16::from_ne_bytes([hdr[4], hdr[5]]);
        let msg_seq = u32::from_ne_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]);
        if len < NLMSG_HDRLEN {
            return Err(malformed("netlink message length shorter than its header"));
        }
        let Some(payload) = rest.get(NLMSG_HDRLEN..len) else {
            return Err(malformed("netlink message longer than the buffer"));
        };
        offset += nlmsg_align(len);
        if msg_seq != seq {
            continue;
        }
        match kind {
            NLMSG_NOOP => {}
            NLMSG_ERROR => {
                let Some(&errno) = payload.first_chunk::<4>() else {
                    return Err(malformed("truncated NLMSG_ERROR"));
                };
                // 0 is an acknowledgement, which a dump does not ask for.
                let errno = i32::from_ne_bytes(errno);
                if errno != 0 {
                    return Err(SockDiagError::Kernel {
                        errno: errno.saturating_neg(),
                    });
                }
            }
            NLMSG_DONE => {
                // The payload is the dump's final status; a negative one means
                // the kernel gave up part way through.
                if let Some(&status) = payload.first_chunk::<4>() {
                    let status = i32::from_ne_bytes(status);
                    if status < 0 {
                        return Err(SockDiagError::Kernel {
                            errno: status.saturating_neg(),
                        });
                    }
                }
                parsed.done = true;
                return Ok(parsed);
            }
            NLMSG_OVERRUN => return Err(malformed("NLMSG_OVERRUN: the kernel lost data")),
            SOCK_DIAG_BY_FAMILY => {
                let Some(msg) = payload.first_chunk::<MSG_LEN>() else {
                    return Err(malformed("inet_diag_msg shorter than 72 bytes"));
                };
                let Some(socket) = decode(msg) else {
                    return Err(malformed("inet_diag_msg with an unknown address family"));
                };
                f(socket);
                parsed.sockets += 1;
            }
            _ => return Err(malformed("unexpected netlink message type")),
        }
    }
    Ok(parsed)
}

/// Decodes a `struct inet_diag_msg`; None for a family other than
/// AF_INET/AF_INET6.
fn decode(m: &[u8; MSG_LEN]) -> Option<DiagSocket> {
    let u32_at = |o: usize| u32::from_ne_bytes([m[o], m[o + 1], m[o + 2], m[o + 3]]);
    // Offsets in inet_diag_msg: id (inet_diag_sockid) starts at 4.
    let sport = u16::from_be_bytes([m[4], m[5]]);
    let dport = u16::from_be_bytes([m[6], m[7]]);
    let mut src = [0u8; 16];
    src.copy_from_slice(&m[8..24]);
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&m[24..40]);
    let (family, src, dst) = match i32::from(m[0]) {
        libc::AF_INET => {
            let v4 = |a: [u8; 16]| IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]));
            (Family::V4, v4(src), v4(dst))
        }
        libc::AF_INET6 => (
            Family::V6,
            IpAddr::V6(Ipv6Addr::from(src)),
            IpAddr::V6(Ipv6Addr::from(dst)),
        ),
        _ => return None,
    };
    Some(DiagSocket {
        family,
        state: m[1],
        local: SocketAddr::new(src, sport),
        remote: SocketAddr::new(dst, dport),
        timer: m[2],
        // 40: if, 44: cookie[2], 52: expires, 56: rqueue, 60: wqueue.
        expires_ms: u32_at(52),
        uid: u32_at(64),
        inode: u32_at(68),
    })
}

/// The request: `nlmsghdr` + `inet_diag_req_v2` asking for every TCP socket
/// of `family` in `states`.
fn request(family: Family, states: u32, seq: u32) -> [u8; NLMSG_HDRLEN + REQ_LEN] {
    let mut r = [0u8; NLMSG_HDRLEN + REQ_LEN];
    r[0..4].copy_from_slice(&((NLMSG_HDRLEN + REQ_LEN) as u32).to_ne_bytes());
    r[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    r[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    r[8..12].copy_from_slice(&seq.to_ne_bytes());
    // 12..16: port id 0, the kernel fills it in.
    r[16] = match family {
        Family::V4 => libc::AF_INET as u8,
        Family::V6 => libc::AF_INET6 as u8,
    };
    r[17] = libc::IPPROTO_TCP as u8;
    // 18: ext (no extra attributes), 19: pad.
    r[20..24].copy_from_slice(&states.to_ne_bytes());
    // 24..72: inet_diag_sockid, zero: no filter.
    r
}

struct NetlinkSocket(OwnedFd);

impl NetlinkSocket {
    /// Opens the socket in the calling thread's network namespace: the
    /// kernel ties it to the namespace of the thread that creates it.
    fn open() -> Result<NetlinkSocket, SockDiagError> {
        // SAFETY: plain syscall with constant arguments.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return Err(SockDiagError::Socket(io::Error::last_os_error()));
        }
        // SAFETY: fd is a new descriptor that nothing else owns.
        Ok(NetlinkSocket(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn dump_family(
        &self,
        family: Family,
        states: u32,
        seq: u32,
        buf: &mut [u8],
        f: &mut impl FnMut(DiagSocket),
    ) -> Result<usize, SockDiagError> {
        let req = request(family, states, seq);
        loop {
            // SAFETY: req is a valid buffer of req.len() bytes.
            let n = unsafe { libc::send(self.0.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
            if n >= 0 {
                break;
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(SockDiagError::Send { family, error });
            }
        }
        let mut total = 0;
        loop {
            // MSG_TRUNC makes recv return the datagram's real length, so a
            // datagram larger than buf is an error rather than silent loss.
            // SAFETY: buf is valid for writes of buf.len() bytes.
            let n = unsafe {
                libc::recv(
                    self.0.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_TRUNC,
                )
            };
            let Ok(n) = usize::try_from(n) else {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(SockDiagError::Recv { family, error });
            };
            if n > buf.len() {
                return Err(SockDiagError::Malformed {
                    what: "datagram larger than the receive buffer",
                    offset: buf.len(),
                });
            }
            if n == 0 {
                return Err(SockDiagError::Malformed {
                    what: "empty datagram before NLMSG_DONE",
                    offset: 0,
                });
            }
            let parsed = parse_messages(&buf[..n], seq, f)?;
            total += parsed.sockets;
            if parsed.done {
                return Ok(total);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends one netlink message (header, payload, alignment padding).
    fn push_msg(buf: &mut Vec<u8>, kind: u16, seq: u32, payload: &[u8]) {
        let len = (NLMSG_HDRLEN + payload.len()) as u32;
        buf.extend_from_slice(&len.to_ne_bytes());
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&0x2u16.to_ne_bytes()); // NLM_F_MULTI
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&4242u32.to_ne_bytes());
        buf.extend_from_slice(payload);
        buf.resize(nlmsg_align(buf.len()), 0);
    }

    /// An inet_diag_msg followed by an attribute (as the kernel sends
    /// INET_DIAG_SHUTDOWN), 5 bytes to exercise the alignment padding.
    fn diag_msg(s: &DiagSocket) -> Vec<u8> {
        let mut m = vec![0u8; MSG_LEN];
        m[0] = match s.family {
            Family::V4 => libc::AF_INET as u8,
            Family::V6 => libc::AF_INET6 as u8,
        };
        m[1] = s.state;
        m[2] = s.timer;
        m[3] = 0;
        m[4..6].copy_from_slice(&s.local.port().to_be_bytes());
        m[6..8].copy_from_slice(&s.remote.port().to_be_bytes());
        let octets = |a: IpAddr| match a {
            IpAddr::V4(a) => {
                let mut o = [0u8; 16];
                o[..4].copy_from_slice(&a.octets());
                o
            }
            IpAddr::V6(a) => a.octets(),
        };
        m[8..24].copy_from_slice(&octets(s.local.ip()));
        m[24..40].copy_from_slice(&octets(s.remote.ip()));
        m[40..44].copy_from_slice(&1u32.to_ne_bytes());
        m[44..52].copy_from_slice(&[0xab; 8]);
        m[52..56].copy_from_slice(&s.expires_ms.to_ne_bytes());
        m[56..60].copy_from_slice(&7u32.to_ne_bytes());
        m[60..64].copy_from_slice(&9u32.to_ne_bytes());
        m[64..68].copy_from_slice(&s.uid.to_ne_bytes());
        m[68..72].copy_from_slice(&s.inode.to_ne_bytes());
        // nlattr { len 5, type INET_DIAG_SHUTDOWN (8) } + one byte.
        m.extend_from_slice(&5u16.to_ne_bytes());
        m.extend_from_slice(&8u16.to_ne_bytes());
        m.push(0);
        m
    }

    fn v4_established() -> DiagSocket {
        DiagSocket {
            family: Family::V4,
            state: TcpState::Established.number(),
            local: "127.0.0.1:8080".parse().unwrap(),
            remote: "10.1.2.3:40000".parse().unwrap(),
            inode: 123456,
            timer: timer::KEEPALIVE,
            expires_ms: 7200000,
            uid: 1000,
        }
    }

    fn v6_listen() -> DiagSocket {
        DiagSocket {
            family: Family::V6,
            state: TcpState::Listen.number(),
            local: "[2001:db8::1]:443".parse().unwrap(),
            remote: "[::]:0".parse().unwrap(),
            inode: 99,
            timer: timer::NONE,
            expires_ms: 0,
            uid: 0,
        }
    }

    fn v4_time_wait() -> DiagSocket {
        DiagSocket {
            family: Family::V4,
            state: TcpState::TimeWait.number(),
            local: "192.168.0.2:51000".parse().unwrap(),
            remote: "192.168.0.1:80".parse().unwrap(),
            inode: 0,
            timer: timer::TIME_WAIT,
            expires_ms: 59_876,
            uid: 0,
        }
    }

    fn collect(buf: &[u8], seq: u32) -> Result<(Parsed, Vec<DiagSocket>), SockDiagError> {
        let mut got = Vec::new();
        let parsed = parse_messages(buf, seq, &mut |s| got.push(s))?;
        Ok((parsed, got))
    }

    #[test]
    fn masks() {
        assert_eq!(ALL_STATES, 0x1ffe);
        assert_eq!(state_mask(&TcpState::ALL), ALL_STATES);
        assert_eq!(
            state_mask(&[TcpState::Listen, TcpState::TimeWait]),
            (1 << 10) | (1 << 6)
        );
        assert_eq!(state_mask(&[]), 0);
    }

    #[test]
    fn request_layout() {
        let r = request(Family::V6, 1 << 10, 7);
        assert_eq!(r.len(), 72);
        assert_eq!(u32::from_ne_bytes([r[0], r[1], r[2], r[3]]), 72);
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), 20);
        assert_eq!(u16::from_ne_bytes([r[6], r[7]]), 0x301);
        assert_eq!(u32::from_ne_bytes([r[8], r[9], r[10], r[11]]), 7);
        assert_eq!((r[16], r[17]), (10, 6));
        assert_eq!(u32::from_ne_bytes([r[20], r[21], r[22], r[23]]), 1 << 10);
        assert!(r[24..].iter().all(|&b| b == 0));
    }

    #[test]
    fn ipv4_socket() {
        let mut buf = Vec::new();
        push_msg(
            &mut buf,
            SOCK_DIAG_BY_FAMILY,
            1,
            &diag_msg(&v4_established()),
        );
        let (parsed, got) = collect(&buf, 1).unwrap();
        assert_eq!(
            parsed,
            Parsed {
                sockets: 1,
                done: false
            }
        );
        assert_eq!(got, [v4_established()]);
    }

    #[test]
    fn ipv6_socket() {
        let mut buf = Vec::new();
        push_msg(&mut buf, SOCK_DIAG_BY_FAMILY, 1, &diag_msg(&v6_listen()));
        let (_, got) = collect(&buf, 1).unwrap();
        assert_eq!(got, [v6_listen()]);
    }

    #[test]
    fn time_wait_with_expires() {
        let mut buf = Vec::new();
        push_msg(&mut buf, SOCK_DIAG_BY_FAMILY, 1, &diag_msg(&v4_time_wait()));
        let (_, got) = collect(&buf, 1).unwrap();
        assert_eq!(got[0].timer, timer::TIME_WAIT);
        assert_eq!(got[0].expires_ms, 59_876);
        assert_eq!(got[0].state, 6);
    }

    #[test]
    fn several_messages_then_done() {
        let mut buf = Vec::new();
        push_msg(
            &mut buf,
            SOCK_DIAG_BY_FAMILY,
            3,
            &diag_msg(&v4_established()),
        );
        push_msg(&mut buf, SOCK_DIAG_BY_FAMILY, 3, &diag_msg(&v4_time_wait()));
        push_msg(&mut buf, NLMSG_DONE, 3, &0i32.to_ne_bytes());
        // Anything after DONE is not looked at.
        push_msg(&mut buf, SOCK_DIAG_BY_FAMILY, 3, &diag_msg(&v6_listen()));
        let (parsed, got) = collect(&buf, 3).unwrap();
        assert_eq!(
            parsed,
            Parsed {
                sockets: 2,
                done: true
            }
        );
        assert_eq!(got, [v4_established(), v4_time_wait()]);
    }

    #[test]
    fn done_alone_and_without_payload() {
        let mut buf = Vec::new();
        push_msg(&mut buf, NLMSG_DONE, 1, &0i32.to_ne_bytes());
        assert_eq!(
            collect(&buf, 1).unwrap().0,
            Parsed {
                sockets: 0,
                done: true
            }
        );
        let mut buf = Vec::new();
        push_msg(&mut buf, NLMSG_DONE, 1, &[]);
        assert!(collect(&buf, 1).unwrap().0.done);
    }

    #[test]
    fn other_sequence_numbers_are_skipped() {
        let mut buf = Vec::new();
        push_msg(
            &mut buf,
            SOCK_DIAG_BY_FAMILY,
            9,
            &diag_msg(&v4_established()),
        );
        push_msg(&mut buf, SOCK_DIAG_BY_FAMILY, 1, &diag_msg(&v6_listen()));
        let (_, got) = collect(&buf, 1).unwrap();
        assert_eq!(got, [v6_listen()]);
    }

    #[test]
    fn kernel_errors() {
        // nlmsgerr: error, then the offending request's header.
        let mut payload = (-libc::EINVAL).to_ne_bytes().to_vec();
        payload.extend_from_slice(&[0u8; 16]);
        let mut buf = Vec::new();
        push_msg(&mut buf, NLMSG_ERROR, 1, &payload);
        match collect(&buf, 1) {
            Err(SockDiagError::Kernel { errno }) => assert_eq!(errno, libc::EINVAL),
            other => panic!("expected a kernel error, got {other:?}"),
        }
        // A failed dump ends with a negative status in NLMSG_DONE.
        let mut buf = Vec::new();
        push_msg(&mut buf, NLMSG_DONE, 1, &(-libc::ENOBUFS).to_ne_bytes());
        assert!(matches!(
            collect(&buf, 1),
            Err(SockDiagError::Kernel { errno }) if errno == libc::ENOBUFS
        ));
        // An acknowledgement (error 0) is not an error.
        let mut buf = Vec::new();
        push_msg(&mut buf, NLMSG_ERROR, 1, &[0u8; 20]);
        assert_eq!(
            collect(&buf, 1).unwrap().0,
            Parsed {
                sockets: 0,
                done: false
            }
        );
    }

    #[test]
    fn malformed_input_is_an_error() {
        let mut good = Vec::new();
        push_msg(
            &mut good,
            SOCK_DIAG_BY_FAMILY,
            1,
            &diag_msg(&v4_established()),
        );
        // Every truncation of a valid message fails cleanly (cutting only
        // the trailing alignment padding leaves a whole message).
        let unpadded = NLMSG_HDRLEN + MSG_LEN + 5;
        assert_eq!(collect(&good[..unpadded], 1).unwrap().0.sockets, 1);
        for cut in 1..unpadded {
            assert!(
                matches!(
                    collect(&good[..cut], 1),
                    Err(SockDiagError::Malformed { .. })
                ),
                "cut at {cut}"
            );
        }
        // Length field smaller than the header.
        let mut bad = good.clone();
        bad[0..4].copy_from_slice(&8u32.to_ne_bytes());
        assert!(matches!(
            collect(&bad, 1),
            Err(SockDiagError::Malformed { .. })
        ));
        // Length field pointing past the end.
        let mut bad = good.clone();
        bad[0..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(matches!(
            collect(&bad, 1),
            Err(SockDiagError::Malformed { .. })
        ));
        // A socket message too short for inet_diag_msg.
        let mut bad = Vec::new();
        push_msg(&mut bad, SOCK_DIAG_BY_FAMILY, 1, &[0u8; 40]);
        assert!(matches!(
            collect(&bad, 1),
            Err(SockDiagError::Malformed { .. })
        ));
        // Unknown family.
        let mut msg = diag_msg(&v4_established());
        msg[0] = 1;
        let mut bad = Vec::new();
        push_msg(&mut bad, SOCK_DIAG_BY_FAMILY, 1, &msg);
        assert!(matches!(
            collect(&bad, 1),
            Err(SockDiagError::Malformed { .. })
        ));
        // Unexpected type, overrun, truncated error.
        for kind in [NLMSG_OVERRUN, 99] {
            let mut bad = Vec::new();
            push_msg(&mut bad, kind, 1, &[0u8; 4]);
            assert!(matches!(
                collect(&bad, 1),
                Err(SockDiagError::Malformed { .. })
            ));
        }
        let mut bad = Vec::new();
        push_msg(&mut bad, NLMSG_ERROR, 1, &[0u8; 2]);
        assert!(matches!(
            collect(&bad, 1),
            Err(SockDiagError::Malformed { .. })
        ));
        // Arbitrary bytes never panic.
        let mut x: u32 = 0x1234_5678;
        for _ in 0..2000 {
            let len = (x % 200) as usize;
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = collect(&junk, 1);
        }
    }

    #[test]
    fn parses_many_sockets_quickly() {
        let one = diag_msg(&v4_established());
        let mut buf = Vec::new();
        for _ in 0..100_000 {
            push_msg(&mut buf, SOCK_DIAG_BY_FAMILY, 1, &one);
        }
        let start = std::time::Instant::now();
        let mut n = 0usize;
        let parsed = parse_messages(&buf, 1, &mut |s| n += s.inode as usize & 1).unwrap();
        assert_eq!(parsed.sockets, 100_000);
        assert!(start.elapsed() < std::time::Duration::from_millis(500));
    }
}
