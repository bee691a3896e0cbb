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

/// The index as a scan of the whole table makes it: what the counts must
/// equal whenever they are not stale.
fn scanned(e: &Engine) -> crate::engine::ports::PortIndex {
    let mut index = crate::engine::ports::PortIndex::default();
    index.clone_rules_from(&e.ports);
    for s in e.socks.values() {
        index.add(&s.tuple, None);
    }
    for (t, tw) in e.timewait.iter() {
        index.add(t, Some(tw.substate()));
    }
    index
}

fn assert_in_step(e: &mut Engine, step: &str) {
    assert!(!e.ports.is_stale(), "{step}: kept in step, not recounted");
    let scan = scanned(e);
    assert_eq!(e.ports.taken(), scan.taken(), "{step}");
}

#[test]
fn the_counts_kept_as_entries_come_and_go_equal_a_scan_of_the_table() {
    let mut e = engine();
    e.set_port_settings([(NS, settings(1))]);
    e.ephemeral_ports(10);
    clients(&mut e, SRV, 30, 10);
    assert_in_step(&mut e, "connects and closes into TIME_WAIT");
    // A child on a port of the range, before its listener is known (the
    // kernel does not report going LISTEN; a dump finds it).
    let child = |ts, old, new| ev(ts, CHILD, old, new, "10.0.0.2:40050", "10.0.0.7:1234");
    e.apply(&child(10 * MS, SynRecv, Established));
    assert_in_step(&mut e, "a child of a listener not known yet");
    e.apply(&ev(11 * MS, LISTENER, Close, Listen, "10.0.0.2:40050", ANY));
    assert!(e.ports.is_stale(), "a port of the range is listened on now");
    let found = e.ephemeral_ports(10);
    assert_eq!(found.len(), 1, "the child is no destination: {found:?}");
    assert_in_step(&mut e, "recounted");
    // A connection reset: out of the counts.
    let local = "10.0.0.2:40020";
    e.apply(&ev(
        12 * MS,
        0x7014 + 0x1000 * 11,
        Established,
        Close,
        local,
        SRV,
    ));
    assert_in_step(&mut e, "a reset");
    // Settings that change make the counts again.
    e.set_port_settings([(NS, settings(0))]);
    assert!(e.ports.is_stale());
    e.ephemeral_ports(10);
    assert_in_step(&mut e, "new settings");
    e.apply(&child(13 * MS, Established, Close));
    e.apply(&ev(14 * MS, LISTENER, Listen, Close, "10.0.0.2:40050", ANY));
    e.ephemeral_ports(10);
    assert_in_step(&mut e, "the listener gone");
}

#[test]
fn an_orphan_becoming_time_wait_becomes_reusable_in_step() {
    let mut e = engine();
    e.set_port_settings([(NS, settings(1))]);
    e.ephemeral_ports(10);
    established(&mut e);
    // A second connection from the same address: the destination is busy.
    e.apply(&ev(MS, 0x9999, Close, SynSent, "10.0.0.2:0", SRV));
    e.apply(&ev(
        2 * MS,
        0x9999,
        SynSent,
        Established,
        "10.0.0.2:40001",
        SRV,
    ));
    e.apply(&ev(10 * MS, CLIENT, Established, FinWait1, CLI, SRV));
    e.apply(&ev(11 * MS, CLIENT, FinWait1, FinWait2, CLI, SRV));
    e.apply(&Transition {
        fin_received: Some(false),
        ..ev(12 * MS, CLIENT, FinWait2, Close, CLI, SRV)
    });
    assert_in_step(&mut e, "an orphaned FIN_WAIT2");
    let toward = |e: &mut Engine| {
        let p = e.ephemeral_ports(10);
        (p[0].in_use, p[0].free)
    };
    assert_eq!(toward(&mut e), (2, 98), "not reusable in FIN_WAIT2");
    // A dump finds it in TIME_WAIT: a connect may take it (tcp_tw_reuse=1).
    let tw = timewait_dump((CLI, SRV), TimeWait, 59_000);
    e.reconcile_timewait([tw], &[], SEC, SEC + MS);
    assert_in_step(&mut e, "its substate changed");
    assert_eq!(toward(&mut e), (2, 99));
}
