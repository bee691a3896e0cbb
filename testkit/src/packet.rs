//! Hand-made IPv4 packets, for what no socket call makes: a SYN from an
//! address nobody has, an ICMP error as a router would send it. Sent with
//! raw sockets (root); the kernel fills in the IP header's length and
//! checksum.

use std::net::{Ipv4Addr, SocketAddrV4};

/// The ones' complement sum of 16-bit words (RFC 1071).
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 packet of `protocol` carrying `payload`.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, payload: &[u8]) -> Vec<u8> {
    let len = (20 + payload.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&len.to_be_bytes());
    // No id, don't fragment, TTL 64, no checksum (the kernel's).
    ip.extend_from_slice(&[0, 0, 0x40, 0, 64, protocol, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    ip.extend_from_slice(payload);
    ip
}

/// An IPv4 packet carrying a bare TCP SYN from `src` to `dst`.
pub fn tcp_syn(src: SocketAddrV4, dst: SocketAddrV4) -> Vec<u8> {
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&src.port().to_be_bytes());
    tcp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    tcp[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    tcp[12] = 5 << 4; // 20-byte header
    tcp[13] = 0x02; // SYN
    tcp[14..16].copy_from_slice(&65535u16.to_be_bytes());
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.ip().octets());
    pseudo.extend_from_slice(&dst.ip().octets());
    pseudo.extend_from_slice(&[0, libc::IPPROTO_TCP as u8, 0, 20]);
    pseudo.extend_from_slice(&tcp);
    let sum = checksum(&pseudo);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    ipv4(*src.ip(), *dst.ip(), libc::IPPROTO_TCP as u8, &tcp)
}

/// An ICMP destination unreachable, code 3 (port unreachable), from
/// `from` about `offending` (an IPv4 packet it answers): addressed to that
/// packet's source, quoting its header and first 8 bytes as RFC 792 asks.
pub fn icmp_port_unreachable(from: Ipv4Addr, offending: &[u8]) -> Vec<u8> {
    let header_len = usize::from(offending[0] & 0x0f) * 4;
    let quoted = &offending[..(header_len + 8).min(offending.len())];
    let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(quoted);
    let sum = checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let to = Ipv4Addr::new(offending[12], offending[13], offending[14], offending[15]);
    ipv4(from, to, libc::IPPROTO_ICMP as u8, &icmp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checksummed_message_sums_to_zero() {
        let syn = tcp_syn(
            "10.0.0.1:40000".parse().expect("address"),
            "10.0.0.2:80".parse().expect("address"),
        );
        let icmp = icmp_port_unreachable("10.0.0.2".parse().expect("address"), &syn);
        assert_eq!(&icmp[16..20], &[10, 0, 0, 1], "to the SYN's source");
        assert_eq!(checksum(&icmp[20..]), 0);
        assert_eq!(icmp[20 + 8 + 28..].len(), 0, "header and 8 bytes quoted");
    }
}
