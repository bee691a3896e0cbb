//! `/proc/PID/net/tcp` and `tcp6`: the same socket table as sock_diag, as
//! text, for the network namespace of process PID. Reading it needs no
//! setns (only ptrace-read access to PID), so a daemon without
//! CAP_SYS_ADMIN can still seed other namespaces' sockets this way. It is
//! also what is left when the kernel has no sock_diag for TCP (`ss` falls
//! back to it too): `/proc/thread-self/net` shows the namespace the calling
//! thread is in, after a setns as well.
//!
//! Every field the daemon takes from sock_diag is there: addresses, state
//! (a timewait socket's substate), timer and its remaining time (in
//! USER_HZ ticks, so 10 ms steps instead of 1 ms), uid and inode (0 for
//! timewait and request sockets, as in sock_diag).

use std::{
    io::{self, BufRead as _, BufReader},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
};

use crate::{kernel::event::Family, sockets::sockdiag::DiagSocket};

/// Sockets of PID's network namespace whose state is in `states` (a
/// sock_diag bit mask), both families, passed to `f`; returns how many.
pub fn dump(pid: u32, states: u32, f: impl FnMut(DiagSocket)) -> io::Result<usize> {
    dump_dir(
        &Path::new("/proc").join(pid.to_string()).join("net"),
        states,
        f,
    )
}

/// The same for the calling thread's own network namespace.
pub fn dump_own(states: u32, f: impl FnMut(DiagSocket)) -> io::Result<usize> {
    dump_dir(Path::new("/proc/thread-self/net"), states, f)
}

/// Reads `tcp` and `tcp6` in `net_dir` line by line: with a million
/// sockets the text is some 150 MB, never held whole.
fn dump_dir(net_dir: &Path, states: u32, mut f: impl FnMut(DiagSocket)) -> io::Result<usize> {
    // SAFETY: sysconf has no preconditions.
    let ticks = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .unwrap_or(100)
        .max(1);
    let mut total = 0;
    for (file, family) in [("tcp", Family::V4), ("tcp6", Family::V6)] {
        let file = match std::fs::File::open(net_dir.join(file)) {
            Ok(file) => file,
            // A kernel without IPv6 has no tcp6.
            Err(e) if e.kind() == io::ErrorKind::NotFound && family == Family::V6 => continue,
            Err(e) => return Err(e),
        };
        let mut lines = BufReader::with_capacity(64 * 1024, file).lines();
        // The first line is the column header.
        lines.next().transpose()?;
        for line in lines {
            if let Some(s) = parse_line(&line?, family, ticks)
                && states & (1 << s.state) != 0
            {
                f(s);
                total += 1;
            }
        }
    }
    Ok(total)
}

/// `ADDR:PORT` as the kernel prints it: the address as 32-bit words in host
/// byte order, hex; the port in hex.
fn parse_endpoint(s: &str, family: Family) -> Option<SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = (0..addr.len() / 8)
        .map(|i| u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<_>>()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let ip = match (family, bytes.len()) {
        (Family::V4, 4) => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        (Family::V6, 16) => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// One line: `sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...`.
fn parse_line(line: &str, family: Family, ticks_per_second: u64) -> Option<DiagSocket> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 10 {
        return None;
    }
    let (timer, when) = f[5].split_once(':')?;
    let when_ticks = u64::from_str_radix(when, 16).ok()?;
    Some(DiagSocket {
        family,
        local: parse_endpoint(f[1], family)?,
        remote: parse_endpoint(f[2], family)?,
        state: u8::from_str_radix(f[3], 16).ok()?,
        timer: u8::from_str_radix(timer, 16).ok()?,
        expires_ms: u32::try_from(when_ticks * 1000 / ticks_per_second).unwrap_or(u32::MAX),
        uid: f[7].parse().ok()?,
        inode: f[9].parse().ok()?,
        // tx_queue:rx_queue; for a listener the accept queue is rx_queue,
        // and /proc/net/tcp has neither its limit nor its drops.
        rqueue: f[4]
            .split_once(':')
            .and_then(|(_, rx)| u32::from_str_radix(rx, 16).ok())
            .unwrap_or(0),
        wqueue: 0,
        drops: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ipv4_lines() {
        let l = "   1: 0100007F:E426 0100007F:4D8A 06 00000000:00000000 03:00000A3A 00000000     0        0 0 3 000000001ea22a1e";
        let s = parse_line(l, Family::V4, 100).unwrap();
        assert_eq!(s.local, "127.0.0.1:58406".parse().unwrap());
        assert_eq!(s.remote, "127.0.0.1:19850".parse().unwrap());
        assert_eq!((s.state, s.timer, s.inode), (6, 3, 0));
        assert_eq!(s.expires_ms, 0xA3A * 10);
        let l = "   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1065 1 00000000a7187c3e 100 0 0 10 0";
        let s = parse_line(l, Family::V4, 100).unwrap();
        assert_eq!((s.local.port(), s.state, s.inode), (2024, 10, 1065));
    }

    #[test]
    fn parses_ipv6_lines() {
        let l = "   0: 00000000000000000000000001000000:1F90 0000000000000000FFFF00000100007F:C350 01 00000000:00000000 02:000AFC80 00000000  1000        0 4242 1 0000000000000000 20 4 30 10 -1";
        let s = parse_line(l, Family::V6, 100).unwrap();
        assert_eq!(s.local, "[::1]:8080".parse().unwrap());
        assert_eq!(s.remote, "[::ffff:127.0.0.1]:50000".parse().unwrap());
        assert_eq!((s.state, s.uid, s.inode), (1, 1000, 4242));
    }

    #[test]
    fn garbage_is_skipped() {
        for l in [
            "",
            "sl local_address",
            "0: zz:1 00:0 0A 0:0 00:0 0 0 0 1",
            "0: 0100007F 0100007F:1 0A 0:0 00:0 0 0 0 1",
        ] {
            assert!(parse_line(l, Family::V4, 100).is_none(), "{l}");
        }
    }

    #[test]
    fn matches_sock_diag_for_this_namespace() {
        // A listener of our own must be there with its inode, as sock_diag says.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut mine = Vec::new();
        dump(
            std::process::id(),
            crate::sockets::sockdiag::ALL_STATES,
            |s| mine.push(s),
        )
        .unwrap();
        let mut own = Vec::new();
        let n = dump_own(crate::sockets::sockdiag::ALL_STATES, |s| own.push(s)).unwrap();
        assert_eq!(n, own.len());
        for found in [&mine, &own] {
            let found = found
                .iter()
                .find(|s| s.local.port() == port)
                .expect("own listener");
            assert_eq!(found.state, 10);
            assert!(found.inode > 0);
        }
    }

    #[test]
    fn filters_by_state_mask() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut seen = Vec::new();
        // Only ESTABLISHED: the listener is filtered out.
        dump_own(1 << 1, |s| seen.push(s)).unwrap();
        assert!(seen.iter().all(|s| s.state == 1));
        assert!(!seen.iter().any(|s| s.local.port() == port));
    }
}
