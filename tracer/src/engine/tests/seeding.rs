//! What a start-up dump may hand the engine beyond the plain case.

use super::*;

#[test]
fn a_connection_listed_twice_by_the_dump_is_one_socket() {
    let mut e = engine();
    // /proc/net/tcp, read in pieces while the table changes, can list a
    // socket twice; SO_REUSEPORT listeners really share a tuple.
    let dump = vec![
        seed((SRV, ANY), Listen, None),
        seed((SRV, ANY), Listen, None),
        seed((SRV, CLI), Established, None),
        seed((SRV, CLI), Established, None),
    ];
    e.seed(dump, SEC);
    assert_eq!(counts(&e), vec![(Established, 1), (Listen, 2)]);
    e.apply(&ev(2 * SEC, CHILD, Established, CloseWait, SRV, CLI));
    e.apply(&ev(2 * SEC, CHILD, CloseWait, LastAck, SRV, CLI));
    e.apply(&ev(2 * SEC, CHILD, LastAck, Close, SRV, CLI));
    assert_eq!(counts(&e), vec![(Listen, 2)]);
}

#[test]
fn a_full_reconciliation_does_not_add_a_connection_listed_twice() {
    let mut e = engine();
    established(&mut e);
    let dump = vec![
        seed((SRV, ANY), Listen, None),
        seed((CLI, SRV), Established, None),
        seed((SRV, CLI), Established, None),
        seed((SRV, CLI), Established, None),
    ];
    let r = e.reconcile_full(&dump, &[], SEC, SEC + MS);
    assert_eq!(r, FullReconcile::default());
    assert_eq!(counts(&e), vec![(Established, 2), (Listen, 1)]);
}

#[test]
fn a_full_reconciliation_does_not_bring_back_a_socket_closed_during_its_dump() {
    let mut e = engine();
    established(&mut e);
    e.dump_starting();
    // The dump (1 s to 1.1 s) read the child before it closed at 1.05 s.
    e.apply(&ev(SEC + 50 * MS, CHILD, Established, CloseWait, SRV, CLI));
    e.apply(&ev(SEC + 50 * MS, CHILD, CloseWait, LastAck, SRV, CLI));
    e.apply(&ev(SEC + 60 * MS, CHILD, LastAck, Close, SRV, CLI));
    let dump = vec![
        seed((SRV, ANY), Listen, None),
        seed((CLI, SRV), Established, None),
        seed((SRV, CLI), Established, None),
    ];
    let r = e.reconcile_full(&dump, &[], SEC, SEC + 100 * MS);
    assert_eq!(r, FullReconcile::default());
    assert_eq!(counts(&e), vec![(Established, 1), (Listen, 1)]);
}

#[test]
fn a_full_reconciliation_keeps_a_fast_open_child_in_syn_recv() {
    let mut e = engine();
    listener_and_client(&mut e);
    // A TCP Fast Open child is a full socket in SYN_RECV until the
    // client's ACK; the dump lists it like a request socket.
    e.apply(&ev(3 * MS, CHILD, Listen, SynRecv, SRV, CLI));
    let dump = vec![
        seed((SRV, ANY), Listen, None),
        seed((CLI, SRV), Established, None),
        seed((SRV, CLI), SynRecv, None),
        // A plain request socket: not tracked, not added.
        seed((SRV, "10.0.0.3:5"), SynRecv, None),
    ];
    let r = e.reconcile_full(&dump, &[], SEC, SEC + MS);
    assert_eq!(r, FullReconcile::default());
    assert_eq!(
        counts(&e),
        vec![(Established, 1), (SynRecv, 1), (Listen, 1)]
    );
}

#[test]
fn at_the_cap_dumps_do_not_evict_to_bring_entries_back() {
    let mut e = Engine::new(EngineConfig {
        max_sockets: 3,
        ..EngineConfig::default()
    });
    let remotes: Vec<String> = (0..5).map(|i| format!("10.0.0.9:{}", 5000 + i)).collect();
    let dump: Vec<DumpedSocket> = remotes
        .iter()
        .map(|r| timewait_dump((SRV, r), TimeWait, 30_000))
        .collect();
    e.reconcile_timewait(dump.clone(), &[], SEC, SEC + MS);
    assert_eq!(e.tracked(), 3);
    let evicted = e.stats().evictions;
    for round in 2..5 {
        let r = e.reconcile_timewait(dump.clone(), &[], round * SEC, round * SEC + MS);
        assert_eq!(r.added, 0, "round {round}: {r:?}");
        assert_eq!(e.stats().evictions, evicted, "round {round}");
        assert_eq!(e.tracked(), 3);
    }
}
