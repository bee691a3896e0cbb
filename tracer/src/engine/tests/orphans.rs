//! What a socket closing from FIN_WAIT2 leaves behind, by whether the
//! peer's FIN had arrived (the kernel program reads `SOCK_DONE`).

use super::*;

/// The client of [`established`] closes; the server's ACK arrives, then
/// the client's socket closes at 12 ms with the FIN known or not.
fn client_closes_from_fin_wait2(e: &mut Engine, fin_received: Option<bool>) {
    established(e);
    e.apply(&ev(10 * MS, CLIENT, Established, FinWait1, CLI, SRV));
    e.apply(&ev(11 * MS, CLIENT, FinWait1, FinWait2, CLI, SRV));
    e.apply(&Transition {
        fin_received,
        ..ev(12 * MS, CLIENT, FinWait2, Close, CLI, SRV)
    });
}

#[test]
fn an_orphan_closed_before_the_peers_fin_stays_in_fin_wait2() {
    let mut e = engine();
    client_closes_from_fin_wait2(&mut e, Some(false));
    assert_eq!(
        counts(&e),
        vec![(Established, 1), (FinWait2, 1), (Listen, 1)]
    );
    // The dump agrees: nothing to fix.
    let tw = timewait_dump((CLI, SRV), FinWait2, 59_000);
    assert_eq!(e.reconcile_timewait([tw], &[], SEC, SEC + MS).drift(), 0);
}

#[test]
fn after_the_peers_fin_it_is_time_wait() {
    let mut e = engine();
    client_closes_from_fin_wait2(&mut e, Some(true));
    assert_eq!(
        counts(&e),
        vec![(Established, 1), (TimeWait, 1), (Listen, 1)]
    );
}

#[test]
fn without_the_flag_time_wait_is_predicted_and_a_dump_corrects_it() {
    let mut e = engine();
    client_closes_from_fin_wait2(&mut e, None);
    assert_eq!(e.count(TimeWait), 1);
    let tw = timewait_dump((CLI, SRV), FinWait2, 59_000);
    let r = e.reconcile_timewait([tw], &[], SEC, SEC + MS);
    assert_eq!(r.drift(), 1);
    assert_eq!(
        counts(&e),
        vec![(Established, 1), (FinWait2, 1), (Listen, 1)]
    );
}

#[test]
fn the_local_peers_close_turns_the_orphan_into_time_wait() {
    let mut e = engine();
    client_closes_from_fin_wait2(&mut e, Some(false));
    e.apply(&ev(10 * MS, CHILD, Established, CloseWait, SRV, CLI));
    e.apply(&ev(20 * MS, CHILD, CloseWait, LastAck, SRV, CLI));
    assert_eq!(e.count(FinWait2), 1);
    // The server's FIN reached the timewait socket, which acknowledged it.
    e.apply(&ev(21 * MS, CHILD, LastAck, Close, SRV, CLI));
    assert_eq!(counts(&e), vec![(TimeWait, 1), (Listen, 1)]);
    // It stayed in FIN_WAIT2 from 12 ms to 21 ms, and its minute restarted.
    assert_eq!(e.durations()[FinWait2 as usize].count(), 2);
    assert_eq!(e.expire_timewait(21 * MS + TIME_WAIT_LEN_NS - 1), 0);
    let tw = timewait_dump((CLI, SRV), TimeWait, 59_000);
    assert_eq!(e.reconcile_timewait([tw], &[], SEC, SEC + MS).drift(), 0);
}

#[test]
fn another_connections_close_leaves_the_orphan_alone() {
    let mut e = engine();
    client_closes_from_fin_wait2(&mut e, Some(false));
    let other = 0xffff_0000_0000_9000;
    e.apply(&ev(20 * MS, other, LastAck, Close, SRV, "10.0.0.9:1"));
    assert_eq!(e.count(FinWait2), 1);
    assert_eq!(e.count(TimeWait), 0);
}
