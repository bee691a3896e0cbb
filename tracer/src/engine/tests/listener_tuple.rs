//! Kernels before 6.15: an accepted child's `LISTEN -> SYN_RECV` carries the
//! listener's tuple (remote `*:0`), and only its next event names the
//! connection. Seen on Debian's 6.1 and 6.12; the kernel matrix of
//! `cargo xtask test` runs the same paths for real.

use super::*;

/// The child's two handshake events as an older kernel reports them.
fn accept_before_6_15(e: &mut Engine, ts_ns: u64, child: u64, local: &str, remote: &str) {
    e.apply(&ev(ts_ns, child, Listen, SynRecv, local, ANY));
    e.apply(&ev(ts_ns, child, SynRecv, Established, local, remote));
}

/// [`established`], with the child accepted the older kernels' way.
fn established_before_6_15(e: &mut Engine) {
    listener_and_client(e);
    accept_before_6_15(e, 3 * MS, CHILD, SRV, CLI);
}

#[test]
fn the_child_is_counted_and_owned_through_its_listener() {
    let mut e = engine();
    established_before_6_15(&mut e);
    assert_eq!(counts(&e), vec![(Established, 2), (Listen, 1)]);
    assert_eq!(e.durations()[SynRecv as usize].count(), 1);
    assert_eq!(e.stats().corrections, 0);
    assert_eq!(e.stats().unknown_sockets, 0);
    e.apply(&ev(10 * MS, CHILD, Established, CloseWait, SRV, CLI));
    let leaks = e.leaks(100 * SEC, 10);
    assert_eq!(leaks.len(), 1);
    assert_eq!((leaks[0].pid, leaks[0].comm), (100, Some(comm("nginx"))));
}

#[test]
fn a_child_before_the_dump_ended_does_not_take_the_listeners_seed() {
    let mut e = engine();
    let dump = vec![
        seed((SRV, ANY), Listen, Some((100, "nginx"))),
        seed((CLI, SRV), Established, None),
        seed((SRV, CLI), Established, None),
    ];
    e.seed(dump, SEC + 10 * MS);
    // The listener is older than the daemon: no event names it yet.
    e.apply(&ev(SEC + MS, CLIENT, Close, SynSent, "10.0.0.2:0", SRV));
    e.apply(&ev(SEC + 2 * MS, CLIENT, SynSent, Established, CLI, SRV));
    accept_before_6_15(&mut e, SEC + 2 * MS, CHILD, SRV, CLI);
    assert_eq!(counts(&e), vec![(Established, 2), (Listen, 1)]);
    assert_eq!(e.tracked(), 3);
    // The listener is still the seeded one: closing it empties LISTEN.
    e.apply(&ev(2 * SEC, LISTENER, Listen, Close, SRV, ANY));
    assert_eq!(counts(&e), vec![(Established, 2)]);
}

#[test]
fn a_child_accepted_after_the_dump_adopts_its_own_seed_only() {
    let mut e = engine();
    // The dump ended while the child's handshake events were in flight:
    // its first event is from before the end, its second from after.
    let dump = vec![
        seed((SRV, ANY), Listen, Some((100, "nginx"))),
        seed((SRV, CLI), Established, None),
    ];
    e.seed(dump, SEC);
    e.apply(&ev(SEC - MS, CHILD, Listen, SynRecv, SRV, ANY));
    e.apply(&ev(SEC + MS, CHILD, SynRecv, Established, SRV, CLI));
    assert_eq!(counts(&e), vec![(Established, 1), (Listen, 1)]);
    assert_eq!(e.tracked(), 2);
}

#[test]
fn a_new_child_ends_the_server_side_timewait_at_its_second_event() {
    let mut e = engine();
    established_before_6_15(&mut e);
    e.apply(&ev(10 * MS, CHILD, Established, FinWait1, SRV, CLI));
    e.apply(&ev(11 * MS, CHILD, FinWait1, FinWait2, SRV, CLI));
    e.apply(&ev(12 * MS, CHILD, FinWait2, Close, SRV, CLI));
    assert_eq!(e.count(TimeWait), 1);
    let child = 0xffff_0000_0000_6000;
    e.apply(&ev(700 * MS, child, Listen, SynRecv, SRV, ANY));
    // Nothing is known of its four-tuple yet: no timewait socket may end.
    assert_eq!(e.count(TimeWait), 1);
    e.apply(&ev(700 * MS, child, SynRecv, Established, SRV, CLI));
    assert_eq!(e.count(TimeWait), 0);
    assert_eq!(e.stats().timewait_reused, 1);
    assert_eq!(counts(&e), vec![(Established, 2), (Listen, 1)]);
}

#[test]
fn a_full_reconciliation_leaves_a_child_known_by_its_listeners_tuple() {
    let mut e = engine();
    listener_and_client(&mut e);
    // Before 6.15 the child's first event names the listener's tuple; a
    // Fast Open child stays in SYN_RECV until the client's ACK.
    e.apply(&ev(3 * MS, CHILD, Listen, SynRecv, SRV, ANY));
    let dump = vec![
        seed((SRV, ANY), Listen, None),
        seed((CLI, SRV), Established, None),
        seed((SRV, CLI), SynRecv, None),
    ];
    let r = e.reconcile_full(&dump, &[], SEC, SEC + MS);
    assert_eq!(r, FullReconcile::default());
    assert_eq!(
        counts(&e),
        vec![(Established, 1), (SynRecv, 1), (Listen, 1)]
    );
    e.apply(&ev(2 * SEC, CHILD, SynRecv, Established, SRV, CLI));
    assert_eq!(counts(&e), vec![(Established, 2), (Listen, 1)]);
}
