//! Ephemeral ports toward each destination, from made-up connections.

use super::*;
use crate::engine::ports::PortSettings;

fn settings(tw_reuse: u8) -> PortSettings {
    PortSettings {
        low: 40000,
        high: 40099,
        tw_reuse,
    }
}

/// `n` client connections from 10.0.0.2 toward `remote`, ports from
/// 40000; the first `closed` of them closed by the client into TIME_WAIT.
fn clients(e: &mut Engine, remote: &str, n: u16, closed: u16) {
    for i in 0..n {
        let sk = 0x7000 + u64::from(i) + (remote.len() as u64) * 0x1000;
        let local = format!("10.0.0.2:{}", 40000 + i);
        e.apply(&ev(MS, sk, Close, SynSent, "10.0.0.2:0", remote));
        e.apply(&ev(2 * MS, sk, SynSent, Established, &local, remote));
        if i < closed {
            e.apply(&ev(3 * MS, sk, Established, FinWait1, &local, remote));
            e.apply(&ev(4 * MS, sk, FinWait1, FinWait2, &local, remote));
            e.apply(&ev(5 * MS, sk, FinWait2, Close, &local, remote));
        }
    }
}

#[test]
fn ports_toward_a_destination_count_every_state_and_timewait() {
    let mut e = engine();
    e.set_port_settings([(NS, settings(2))]);
    clients(&mut e, SRV, 30, 10);
    clients(&mut e, "10.0.0.9:5432", 5, 0);
    let ports = e.ephemeral_ports(10);
    assert_eq!(ports.len(), 2);
    assert_eq!(ports[0].destination, addr(SRV), "the scarcest first");
    // 20 established and 10 TIME_WAIT; not loopback, so none reusable.
    assert_eq!((ports[0].in_use, ports[0].free), (30, 70));
    assert_eq!((ports[1].in_use, ports[1].free), (5, 95));
    assert_eq!(e.ephemeral_ports(1).len(), 1);
}

#[test]
fn tw_reuse_frees_what_a_connect_may_take() {
    let mut e = engine();
    e.set_port_settings([(NS, settings(1))]);
    clients(&mut e, SRV, 30, 10);
    assert_eq!(e.ephemeral_ports(1)[0].free, 80);
    // Without settings for the namespace: nothing said.
    let mut e = engine();
    clients(&mut e, SRV, 3, 0);
    assert!(e.ephemeral_ports(10).is_empty());
}

#[test]
fn a_listeners_own_port_in_the_range_is_not_ephemeral() {
    let mut e = engine();
    e.set_port_settings([(NS, settings(0))]);
    e.apply(&ev(MS, LISTENER, Close, Listen, "10.0.0.2:40050", ANY));
    e.apply(&ev(
        2 * MS,
        CHILD,
        Listen,
        SynRecv,
        "10.0.0.2:40050",
        "10.0.0.7:1234",
    ));
    e.apply(&ev(
        3 * MS,
        CHILD,
        SynRecv,
        Established,
        "10.0.0.2:40050",
        "10.0.0.7:1234",
    ));
    assert!(e.ephemeral_ports(10).is_empty());
}
