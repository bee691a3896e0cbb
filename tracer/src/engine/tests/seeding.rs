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
