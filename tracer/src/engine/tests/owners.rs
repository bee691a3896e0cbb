//! Owners as `ss -p` names them: the process that holds the socket.

use super::*;

const LISTENER2: u64 = 0xffff_0000_0000_1100;

fn leak_names(e: &Engine) -> Vec<(String, u64)> {
    e.leak_summary().by_comm.clone()
}

/// The child of [`established`] leaks: the peer closed at 1 s, and the
/// sweep at 100 s finds it past the 60 s threshold.
fn child_leaks(e: &mut Engine) -> Vec<Leak> {
    established(e);
    e.apply(&ev(SEC, CHILD, Established, CloseWait, SRV, CLI));
    e.sweep_leaks(100 * SEC)
}

#[test]
fn a_checked_owner_replaces_the_listeners() {
    let mut e = engine();
    let fresh = child_leaks(&mut e);
    assert_eq!(fresh.len(), 1);
    assert_eq!(leak_names(&e), vec![("nginx".to_owned(), 1)]);
    let queries = e.owners_to_check(100 * SEC);
    assert_eq!(queries.len(), 1);
    assert_eq!(queries[0].claimed, 100);
    // A prefork worker accepted it.
    e.check_owners(&[OwnerAnswer {
        id: queries[0].id,
        tuple: queries[0].tuple,
        listed: true,
        holder: Some((4242, comm("worker"))),
    }]);
    e.sweep_leaks(101 * SEC);
    assert_eq!(leak_names(&e), vec![("worker".to_owned(), 1)]);
    assert!(e.owners_to_check(101 * SEC).is_empty(), "checked once");
    assert_eq!(e.leaks(101 * SEC, 10)[0].pid, 4242);
}

#[test]
fn a_socket_no_process_holds_has_no_owner() {
    let mut e = engine();
    child_leaks(&mut e);
    let q = e.owners_to_check(100 * SEC)[0];
    e.check_owners(&[OwnerAnswer {
        id: q.id,
        tuple: q.tuple,
        listed: true,
        holder: None,
    }]);
    e.sweep_leaks(101 * SEC);
    assert_eq!(leak_names(&e), vec![(LeakSummary::UNKNOWN.to_owned(), 1)]);
}

#[test]
fn an_answer_for_a_socket_that_moved_on_changes_nothing() {
    let mut e = engine();
    child_leaks(&mut e);
    let q = e.owners_to_check(100 * SEC)[0];
    e.apply(&ev(100 * SEC, CHILD, CloseWait, LastAck, SRV, CLI));
    e.check_owners(&[OwnerAnswer {
        id: q.id,
        tuple: q.tuple,
        listed: true,
        holder: Some((4242, comm("worker"))),
    }]);
    assert_eq!(e.owner_comm(4242), None, "no reference taken");
}

#[test]
fn reuseport_listeners_keep_their_own_owners() {
    let mut e = engine();
    e.apply(&ev_by(
        100,
        "nginx",
        ev(MS, LISTENER, Close, Listen, SRV, ANY),
    ));
    e.apply(&ev_by(
        300,
        "envoy",
        ev(MS, LISTENER2, Close, Listen, SRV, ANY),
    ));
    // envoy's listener closes; nginx's still listens on the port.
    e.apply(&ev_by(
        300,
        "envoy",
        ev(2 * MS, LISTENER2, Listen, Close, SRV, ANY),
    ));
    e.apply(&ev(3 * MS, CHILD, Listen, SynRecv, SRV, CLI));
    e.apply(&ev(3 * MS, CHILD, SynRecv, Established, SRV, CLI));
    e.apply(&ev(SEC, CHILD, Established, CloseWait, SRV, CLI));
    e.sweep_leaks(100 * SEC);
    assert_eq!(leak_names(&e), vec![("nginx".to_owned(), 1)]);
    assert_eq!(
        e.owner_comm(300),
        None,
        "envoy's reference went with its listener"
    );
}
