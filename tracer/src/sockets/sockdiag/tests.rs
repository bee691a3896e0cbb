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
        rqueue: 7,
        wqueue: 9,
        drops: None,
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
        rqueue: 7,
        wqueue: 9,
        drops: None,
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
        rqueue: 7,
        wqueue: 9,
        drops: None,
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
    let r = request(Family::V6, 1 << 10, EXT_MEMINFO, 7);
    assert_eq!(r.len(), 72);
    assert_eq!(u32::from_ne_bytes([r[0], r[1], r[2], r[3]]), 72);
    assert_eq!(u16::from_ne_bytes([r[4], r[5]]), 20);
    assert_eq!(u16::from_ne_bytes([r[6], r[7]]), 0x301);
    assert_eq!(u32::from_ne_bytes([r[8], r[9], r[10], r[11]]), 7);
    assert_eq!((r[16], r[17], r[18]), (10, 6, 64));
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

#[test]
fn a_listeners_drops_come_from_its_memory_info() {
    let mut msg = diag_msg(&v6_listen());
    // After the 5-byte attribute (padded to 8): INET_DIAG_SKMEMINFO, nine
    // u32, drops last.
    msg.resize(MSG_LEN + 8, 0);
    msg.extend_from_slice(&40u16.to_ne_bytes());
    msg.extend_from_slice(&ATTR_SKMEMINFO.to_ne_bytes());
    for i in 0..9u32 {
        msg.extend_from_slice(&(if i == 8 { 17 } else { i }).to_ne_bytes());
    }
    let mut buf = Vec::new();
    push_msg(&mut buf, SOCK_DIAG_BY_FAMILY, 1, &msg);
    let (_, got) = collect(&buf, 1).unwrap();
    assert_eq!(got[0].drops, Some(17));
    assert_eq!((got[0].rqueue, got[0].wqueue), (7, 9));
    // Without the attribute, none.
    assert_eq!(meminfo_drops(&[5, 0, 8, 0, 0, 0, 0, 0]), None);
    // A truncated attribute is not read past.
    assert_eq!(meminfo_drops(&[40, 0, 7, 0, 1, 2]), None);
}
