//! The identity the kernel gives a connection: network namespace, family and
//! four-tuple, in a compact, hashable form.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::kernel::event::Family;

/// Namespace, family, local and remote address and port (40 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub netns: u32,
    pub lport: u16,
    pub rport: u16,
    /// IPv4 addresses use the first four bytes.
    pub laddr: [u8; 16],
    pub raddr: [u8; 16],
    /// 4 or 6.
    pub family: u8,
}

fn octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => {
            let mut a = [0u8; 16];
            a[..4].copy_from_slice(&v4.octets());
            a
        }
        IpAddr::V6(v6) => v6.octets(),
    }
}

impl Tuple {
    pub fn new(netns: u32, local: SocketAddr, remote: SocketAddr) -> Tuple {
        Tuple {
            netns,
            lport: local.port(),
            rport: remote.port(),
            laddr: octets(local.ip()),
            raddr: octets(remote.ip()),
            family: if local.is_ipv4() { 4 } else { 6 },
        }
    }

    /// The same connection seen from the other end (in the same namespace:
    /// a peer on this host).
    pub fn reversed(&self) -> Tuple {
        Tuple {
            lport: self.rport,
            rport: self.lport,
            laddr: self.raddr,
            raddr: self.laddr,
            ..*self
        }
    }

    pub fn family(&self) -> Family {
        if self.family == 4 {
            Family::V4
        } else {
            Family::V6
        }
    }

    fn ip(&self, a: &[u8; 16]) -> IpAddr {
        if self.family == 4 {
            IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
        } else {
            IpAddr::V6(Ipv6Addr::from(*a))
        }
    }

    pub fn local(&self) -> SocketAddr {
        SocketAddr::new(self.ip(&self.laddr), self.lport)
    }

    pub fn remote(&self) -> SocketAddr {
        SocketAddr::new(self.ip(&self.raddr), self.rport)
    }

    /// A connected socket's tuple names it uniquely in its namespace. Not so
    /// a socket before its port is chosen (`CLOSE -> SYN_SENT` reports local
    /// port 0) or a listener (remote `*:0`, shared under SO_REUSEPORT).
    pub fn is_connection(&self) -> bool {
        self.lport != 0 && self.rport != 0
    }

    /// The tuple as `CLOSE -> SYN_SENT` reports it: connect() picks the
    /// local port after that event.
    pub fn before_its_port(&self) -> Tuple {
        Tuple { lport: 0, ..*self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_addresses() {
        let l: SocketAddr = "10.1.2.3:80".parse().unwrap();
        let r: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        let t = Tuple::new(7, l, l);
        assert_eq!((t.local(), t.remote(), t.family()), (l, l, Family::V4));
        let t = Tuple::new(7, r, r);
        assert_eq!((t.local(), t.remote(), t.family()), (r, r, Family::V6));
        assert!(t.is_connection());
        assert!(!Tuple::new(7, l, "0.0.0.0:0".parse().unwrap()).is_connection());
        assert_eq!(std::mem::size_of::<Tuple>(), 44);
    }

    #[test]
    fn ipv4_and_mapped_ipv6_differ() {
        let v4 = Tuple::new(
            1,
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        );
        let v6 = Tuple::new(
            1,
            "[::ffff:127.0.0.1]:1".parse().unwrap(),
            "[::ffff:127.0.0.1]:2".parse().unwrap(),
        );
        assert_ne!(v4, v6);
    }
}
