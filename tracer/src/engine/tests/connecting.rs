//! `CLOSE -> SYN_SENT` comes before connect() picks the local port, so
//! the event says port 0; a dump meanwhile lists the same socket with its
//! port. It is one socket.

use super::*;

const CONNECTING: &str = "10.0.0.2:0";

#[test]
fn a_connect_during_the_start_up_dump_is_counted_once() {
    let mut e = engine();
    // The dump read the socket (with its port) at 2 s; its creation event,
    // buffered meanwhile, came at 1 s.
    e.seed(vec![seed((CLI, SRV), SynSent, None)], 2 * SEC);
    e.apply(&ev(SEC, CLIENT, Close, SynSent, CONNECTING, SRV));
    assert_eq!(counts(&e), vec![(SynSent, 1)]);
    e.apply(&ev(3 * SEC, CLIENT, SynSent, Established, CLI, SRV));
    assert_eq!(counts(&e), vec![(Established, 1)]);
    assert_eq!(e.tracked(), 1);
}

#[test]
fn a_connect_after_the_dump_read_its_table_is_another_socket() {
    let mut e = engine();
    // The dump read an older SYN_SENT socket at 1 s; a new connect to the
    // same server came at 1.5 s, before the dump ended.
    e.seed_part(vec![seed((CLI, SRV), SynSent, None)], SEC);
    e.seed_complete(2 * SEC);
    e.apply(&ev(SEC + 500 * MS, CLIENT, Close, SynSent, CONNECTING, SRV));
    assert_eq!(counts(&e), vec![(SynSent, 2)]);
}

#[test]
fn a_full_reconciliation_does_not_add_a_connect_whose_port_it_just_learned() {
    let mut e = engine();
    e.apply(&ev(SEC, CLIENT, Close, SynSent, CONNECTING, SRV));
    let dump = vec![seed((CLI, SRV), SynSent, None)];
    let r = e.reconcile_full(&dump, &[], 2 * SEC, 2 * SEC + MS);
    assert_eq!(r, FullReconcile::default());
    assert_eq!(counts(&e), vec![(SynSent, 1)]);
    e.apply(&ev(3 * SEC, CLIENT, SynSent, Established, CLI, SRV));
    assert_eq!(counts(&e), vec![(Established, 1)]);
    // The next reconciliation finds the table right.
    let dump = vec![seed((CLI, SRV), Established, None)];
    let r = e.reconcile_full(&dump, &[], 4 * SEC, 4 * SEC + MS);
    assert_eq!(r, FullReconcile::default());
}

#[test]
fn a_full_reconciliation_adds_a_connect_to_another_server() {
    let mut e = engine();
    e.apply(&ev(SEC, CLIENT, Close, SynSent, CONNECTING, SRV));
    let dump = vec![
        seed((CLI, SRV), SynSent, None),
        seed(("10.0.0.2:40001", "10.0.0.9:443"), SynSent, None),
    ];
    let r = e.reconcile_full(&dump, &[], 2 * SEC, 2 * SEC + MS);
    assert_eq!(r.added, 1);
    assert_eq!(counts(&e), vec![(SynSent, 2)]);
}
