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

use crate::kernel::event::Family;

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
    /// idiag_rqueue and idiag_wqueue: for a listener, its accept queue
    /// and the queue's limit (the backlog); for others, bytes queued.
    pub rqueue: u32,
    pub wqueue: u32,
    /// The socket's `sk_drops`, when the dump asked for memory info
    /// ([`EXT_MEMINFO`]): for a listener, the connections it dropped
    /// (`tcp_listendrop`: a full accept queue, and other drops before
    /// accept).
    pub drops: Option<u32>,
}

/// `idiag_ext` bit asking for `INET_DIAG_SKMEMINFO` (`1 << (7 - 1)`).
pub const EXT_MEMINFO: u8 = 1 << 6;
/// `INET_DIAG_SKMEMINFO` (`linux/inet_diag.h`), and `SK_MEMINFO_DROPS` in
/// its array of u32 (`linux/sock_diag.h`).
const ATTR_SKMEMINFO: u16 = 7;
const MEMINFO_DROPS: usize = 8;

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
pub fn dump(states: u32, f: impl FnMut(DiagSocket)) -> Result<usize, SockDiagError> {
    dump_with(states, 0, f)
}

/// [`dump`], asking for the attributes in `ext` ([`EXT_MEMINFO`]).
pub fn dump_with(
    states: u32,
    ext: u8,
    mut f: impl FnMut(DiagSocket),
) -> Result<usize, SockDiagError> {
    let sock = NetlinkSocket::open()?;
    // The kernel sizes dump datagrams after the largest buffer we offer, up
    // to 32 KiB; 64 KiB is never too small.
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    for (seq, family) in [(1, Family::V4), (2, Family::V6)] {
        total += sock.dump_family(family, states, ext, seq, &mut buf, &mut f)?;
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
                let Some(mut socket) = decode(msg) else {
                    return Err(malformed("inet_diag_msg with an unknown address family"));
                };
                socket.drops = meminfo_drops(&payload[MSG_LEN..]);
                f(socket);
                parsed.sockets += 1;
            }
            _ => return Err(malformed("unexpected netlink message type")),
        }
    }
    Ok(parsed)
}

/// `SK_MEMINFO_DROPS` from the attributes after an `inet_diag_msg`, if
/// they hold `INET_DIAG_SKMEMINFO` (netlink attributes: u16 length with
/// the header, u16 type, payload, padded to 4 bytes).
fn meminfo_drops(mut attrs: &[u8]) -> Option<u32> {
    while let Some(hdr) = attrs.first_chunk::<4>() {
        let len = usize::from(u16::from_ne_bytes([hdr[0], hdr[1]]));
        let kind = u16::from_ne_bytes([hdr[2], hdr[3]]);
        if len < 4 || len > attrs.len() {
            return None;
        }
        if kind == ATTR_SKMEMINFO {
            let at = 4 + MEMINFO_DROPS * 4;
            let b = attrs.get(at..at + 4)?;
            return (at + 4 <= len).then(|| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
        }
        attrs = attrs.get(nlmsg_align(len)..)?;
    }
    None
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
        rqueue: u32_at(56),
        wqueue: u32_at(60),
        uid: u32_at(64),
        inode: u32_at(68),
        drops: None,
    })
}

/// The request: `nlmsghdr` + `inet_diag_req_v2` asking for every TCP socket
/// of `family` in `states`, with the attributes in `ext`.
fn request(family: Family, states: u32, ext: u8, seq: u32) -> [u8; NLMSG_HDRLEN + REQ_LEN] {
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
    r[18] = ext;
    // 19: pad.
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
        ext: u8,
        seq: u32,
        buf: &mut [u8],
        f: &mut impl FnMut(DiagSocket),
    ) -> Result<usize, SockDiagError> {
        let req = request(family, states, ext, seq);
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
mod tests;
