//! Timewait sockets predicted from closes: expiry, reuse, the namespace's
//! cap, and what dumps correct.

use super::*;

#[test]
fn client_closes_first_then_timewait_expires() {
    let mut e = engine();
    established(&mut e);
    e.apply(&ev(10 * MS, CLIENT, Established, FinWait1, CLI, SRV));
    e.apply(&ev(10 * MS, CHILD, Established, CloseWait, SRV, CLI));
    e.apply(&ev(11 * MS, CLIENT, FinWait1, FinWait2, CLI, SRV));
    assert_eq!(counts(&e), vec![(FinWait2, 1), (CloseWait, 1), (Listen, 1)]);
    e.apply(&ev(20 * MS, CHILD, CloseWait, LastAck, SRV, CLI));
    e.apply(&ev(21 * MS, CLIENT, FinWait2, Close, CLI, SRV));
    e.apply(&ev(21 * MS, CHILD, LastAck, Close, SRV, CLI));
    // The client's connection now lives on as a timewait socket.
    assert_eq!(counts(&e), vec![(TimeWait, 1), (Listen, 1)]);
    assert_eq!(e.durations()[CloseWait as usize].count(), 1);
    assert_eq!(e.durations()[LastAck as usize].count(), 1);
    assert_eq!(e.timewait_by_destination(10)[0].remote, addr(SRV));

    // A dump during its life confirms it; a dump after its timer does not
    // show it: it expired, and its stay is observed as ~60 s.
    let tw = timewait_dump((CLI, SRV), TimeWait, 59_000);
    let r = e.reconcile_timewait([tw], &[], SEC, SEC + MS);
    assert_eq!(r, TimewaitReconcile::default());
    let r = e.reconcile_timewait([], &[], 62 * SEC, 62 * SEC + MS);
    assert_eq!(r.removed, 1);
    // An expiry is no drift: the events had it right.
    assert_eq!(r.drift(), 0);
    assert_eq!(counts(&e), vec![(Listen, 1)]);
    let h = &e.durations()[TimeWait as usize];
    assert_eq!(h.count(), 1);
    assert!((h.sum_seconds() - 60.0).abs() < 0.1, "{}", h.sum_seconds());
    assert_eq!(e.stats().timewait_expired, 1);
}

#[test]
fn a_timewait_socket_gone_before_its_timer_is_drift() {
    let mut e = engine();
    client_closed_into_timewait(&mut e);
    let tw = timewait_dump((CLI, SRV), TimeWait, 59_000);
    assert_eq!(e.reconcile_timewait([tw], &[], SEC, SEC + MS).drift(), 0);
    // Reset 10 s into its minute (RFC 1337 assassination): only a dump shows it.
    let r = e.reconcile_timewait([], &[], 10 * SEC, 10 * SEC + MS);
    assert_eq!((r.removed, r.removed_early, r.drift()), (1, 1, 1));
    assert_eq!(e.stats().timewait_ended_early, 1);
}

#[test]
fn reconciliations_leave_namespaces_the_dump_could_not_read_alone() {
    let mut e = engine();
    client_closed_into_timewait(&mut e);
    let elsewhere = 0xffff_0000_0000_8000;
    e.apply(&Transition {
        netns: NS + 1,
        ..ev(13 * MS, elsewhere, SynSent, Established, CLI, SRV)
    });
    let before = counts(&e);
    // Neither namespace could be read: nothing is taken for gone.
    let r = e.reconcile_timewait([], &[NS, NS + 1], SEC, SEC + MS);
    assert_eq!((r.removed, r.drift()), (0, 0));
    let r = e.reconcile_full(&[], &[NS, NS + 1], SEC, SEC + MS);
    assert_eq!(r, FullReconcile::default());
    assert_eq!(counts(&e), before);
    // Only the other one could not: this one's sockets were all gone.
    let r = e.reconcile_full(&[], &[NS + 1], 2 * SEC, 2 * SEC + MS);
    assert_eq!(r.removed, 2);
    let r = e.reconcile_timewait([], &[NS + 1], 2 * SEC, 2 * SEC + MS);
    assert_eq!(r.removed, 1);
    assert_eq!(counts(&e), vec![(Established, 1)]);
}

#[test]
fn timewait_leaves_at_its_timer_between_dumps() {
    let mut e = engine();
    established(&mut e);
    e.apply(&ev(10 * MS, CLIENT, Established, FinWait1, CLI, SRV));
    e.apply(&ev(11 * MS, CLIENT, FinWait1, FinWait2, CLI, SRV));
    e.apply(&ev(21 * MS, CLIENT, FinWait2, Close, CLI, SRV));
    assert_eq!(e.count(TimeWait), 1);
    let tw = timewait_dump((CLI, SRV), TimeWait, 59_000);
    e.reconcile_timewait([tw], &[], SEC, SEC + MS);
    // Before its timer (as last reported: 1 s + 59 s): kept.
    assert_eq!(e.expire_timewait(59 * SEC), 0);
    assert_eq!(e.count(TimeWait), 1);
    // After it: gone, its stay observed as ~60 s, and no dump needed.
    assert_eq!(e.expire_timewait(61 * SEC), 1);
    assert_eq!(e.count(TimeWait), 0);
    assert!(e.timewait_by_destination(10).is_empty());
    let h = &e.durations()[TimeWait as usize];
    assert_eq!(h.count(), 1);
    assert!((h.sum_seconds() - 60.0).abs() < 0.1, "{}", h.sum_seconds());
    assert_eq!(e.stats().timewait_expired, 1);
}

#[test]
fn server_closes_first_and_fin_ack_together() {
    let mut e = engine();
    established(&mut e);
    e.apply(&ev(10 * MS, CHILD, Established, FinWait1, SRV, CLI));
    e.apply(&ev(10 * MS, CLIENT, Established, CloseWait, CLI, SRV));
    e.apply(&ev(11 * MS, CLIENT, CloseWait, LastAck, CLI, SRV));
    // FIN and ACK in one segment: the kernel takes the ACK first
    // (FIN_WAIT2), then the FIN, and leaves a timewait socket.
    e.apply(&ev(11 * MS, CHILD, FinWait1, FinWait2, SRV, CLI));
    e.apply(&ev(11 * MS, CHILD, FinWait2, Close, SRV, CLI));
    e.apply(&ev(12 * MS, CLIENT, LastAck, Close, CLI, SRV));
    assert_eq!(counts(&e), vec![(TimeWait, 1), (Listen, 1)]);
    assert_eq!(e.timewait_by_destination(10)[0].remote, addr(CLI));
}

#[test]
fn simultaneous_close_goes_through_closing() {
    let mut e = engine();
    established(&mut e);
    e.apply(&ev(10 * MS, CLIENT, Established, FinWait1, CLI, SRV));
    e.apply(&ev(10 * MS, CLIENT, FinWait1, Closing, CLI, SRV));
    assert_eq!(e.count(Closing), 1);
    e.apply(&ev(11 * MS, CLIENT, Closing, Close, CLI, SRV));
    assert_eq!(e.count(Closing), 0);
    assert_eq!(e.count(TimeWait), 1);
}

#[test]
fn reset_leaves_no_timewait() {
    let mut e = engine();
    established(&mut e);
    e.apply(&ev(10 * MS, CLIENT, Established, Close, CLI, SRV));
    e.apply(&ev(10 * MS, CHILD, Established, Close, SRV, CLI));
    assert_eq!(counts(&e), vec![(Listen, 1)]);
    // A reset in FIN_WAIT1 looks like a timewait hand-over; the next dump
    // shows there is none, and it is dropped without a duration.
    e.apply(&ev(
        11 * MS,
        0xffff_0000_0000_4000,
        Close,
        SynSent,
        "10.0.0.2:0",
        SRV,
    ));
    e.apply(&ev(
        12 * MS,
        0xffff_0000_0000_4000,
        SynSent,
        Established,
        "10.0.0.2:40001",
        SRV,
    ));
    e.apply(&ev(
        13 * MS,
        0xffff_0000_0000_4000,
        Established,
        FinWait1,
        "10.0.0.2:40001",
        SRV,
    ));
    e.apply(&ev(
        14 * MS,
        0xffff_0000_0000_4000,
        FinWait1,
        Close,
        "10.0.0.2:40001",
        SRV,
    ));
    // FIN_WAIT1 -> CLOSE is a reset or an abort: tcp_time_wait() only
    // runs after FIN_WAIT2 or CLOSING.
    assert_eq!(e.count(TimeWait), 0);
    let r = e.reconcile_timewait([], &[], SEC, SEC + MS);
    assert_eq!(r.drift(), 0);
}

/// A close from FIN_WAIT2 with what the kernel program saw of it.
fn fin_wait2_close(e: &mut Engine, timewait_made: Option<bool>) {
    established(e);
    e.apply(&ev(10 * MS, CLIENT, Established, FinWait1, CLI, SRV));
    e.apply(&ev(11 * MS, CLIENT, FinWait1, FinWait2, CLI, SRV));
    let mut close = ev(12 * MS, CLIENT, FinWait2, Close, CLI, SRV);
    close.timewait_made = timewait_made;
    e.apply(&close);
}

#[test]
fn a_close_not_by_tcp_time_wait_leaves_no_timewait() {
    // SO_LINGER 0, a reset, unread data: the program saw another closer.
    let mut e = engine();
    fin_wait2_close(&mut e, Some(false));
    assert_eq!(e.count(TimeWait), 0);
    assert_eq!(e.stats().timewait_not_made, 1);
    // Without the program's word, the kernel's usual path is predicted and
    // the next dump finds it wrong.
    let mut e = engine();
    fin_wait2_close(&mut e, None);
    assert_eq!(e.count(TimeWait), 1);
    let r = e.reconcile_timewait([], &[], SEC, SEC + MS);
    assert_eq!((r.removed, r.removed_early, r.drift()), (1, 1, 1));
    assert_eq!(e.count(TimeWait), 0);
    assert_eq!(e.durations()[TimeWait as usize].count(), 0);
}

#[test]
fn a_close_by_tcp_time_wait_at_the_cap_leaves_none() {
    // tcp_time_wait() closes the socket even when the table is full.
    let mut e = engine();
    e.set_timewait_caps([(NS, 0)]);
    fin_wait2_close(&mut e, Some(true));
    assert_eq!(e.count(TimeWait), 0);
    assert_eq!(e.stats().timewait_over_cap, 1);
    let mut e = engine();
    fin_wait2_close(&mut e, Some(true));
    assert_eq!(e.count(TimeWait), 1);
}

#[test]
fn listener_close_and_syn_sent_failure() {
    let mut e = engine();
    e.apply(&ev(MS, LISTENER, Close, Listen, SRV, ANY));
    e.apply(&ev(
        2 * MS,
        CLIENT,
        Close,
        SynSent,
        "10.0.0.2:0",
        "10.0.0.9:1",
    ));
    assert_eq!(counts(&e), vec![(SynSent, 1), (Listen, 1)]);
    e.apply(&ev(
        3 * MS,
        CLIENT,
        SynSent,
        Close,
        "10.0.0.2:40000",
        "10.0.0.9:1",
    ));
    e.apply(&ev(4 * MS, LISTENER, Listen, Close, SRV, ANY));
    assert_eq!(counts(&e), vec![]);
    assert_eq!(e.tracked(), 0);
    assert_eq!(e.durations()[Listen as usize].count(), 1);
}

#[test]
fn no_timewait_is_predicted_beyond_the_namespace_cap() {
    let mut e = engine();
    e.set_timewait_caps([(NS, 2)]);
    let close = |e: &mut Engine, i: u64, at: u64| {
        let sk = 0xffff_0000_0010_0000 + i * 64;
        let cli = format!("10.0.0.2:{}", 41_000 + i);
        e.apply(&ev(at, sk, Close, SynSent, "10.0.0.2:0", SRV));
        e.apply(&ev(at + 1, sk, SynSent, Established, &cli, SRV));
        e.apply(&ev(at + 2, sk, Established, FinWait1, &cli, SRV));
        e.apply(&ev(at + 2, sk, FinWait1, FinWait2, &cli, SRV));
        e.apply(&ev(at + 3, sk, FinWait2, Close, &cli, SRV));
    };
    for i in 0..5 {
        close(&mut e, i, i * MS);
    }
    // The kernel makes two and refuses the rest.
    assert_eq!(e.count(TimeWait), 2);
    assert_eq!(e.stats().timewait_over_cap, 3);
    // Both leave at their timer: room for two more.
    e.expire_timewait(61 * SEC);
    assert_eq!(e.count(TimeWait), 0);
    close(&mut e, 10, 62 * SEC);
    close(&mut e, 11, 63 * SEC);
    close(&mut e, 12, 64 * SEC);
    assert_eq!(e.count(TimeWait), 2);
    // Another namespace has no known cap.
    let mut other = ev(65 * SEC, 0xffff_0000_0020_0000, FinWait2, Close, CLI, SRV);
    other.netns = NS + 1;
    e.apply(&other);
    assert_eq!(e.count(TimeWait), 3);
}

#[test]
fn new_syn_on_a_server_side_timewait_tuple_ends_it() {
    let mut e = engine();
    established(&mut e);
    // The server closes first: its child keeps the timewait socket.
    e.apply(&ev(10 * MS, CHILD, Established, FinWait1, SRV, CLI));
    e.apply(&ev(11 * MS, CHILD, FinWait1, FinWait2, SRV, CLI));
    e.apply(&ev(12 * MS, CHILD, FinWait2, Close, SRV, CLI));
    assert_eq!(e.count(TimeWait), 1);
    // The client comes back from the same port: its SYN ends the timewait
    // socket and the listener makes a new child.
    let child = 0xffff_0000_0000_6000;
    e.apply(&ev(700 * MS, child, Listen, SynRecv, SRV, CLI));
    assert_eq!(e.count(TimeWait), 0);
    assert_eq!(e.stats().timewait_reused, 1);
    e.apply(&ev(701 * MS, child, SynRecv, Established, SRV, CLI));
    assert_eq!(e.stats().timewait_reused, 1);
    assert_eq!(e.durations()[TimeWait as usize].count(), 1);
}

#[test]
fn simultaneous_open_on_a_timewait_tuple_ends_it() {
    let mut e = engine();
    client_closed_into_timewait(&mut e);
    assert_eq!(e.count(TimeWait), 1);
    // Both ends send a SYN: SYN_SENT -> SYN_RECV -> ESTABLISHED.
    let again = 0xffff_0000_0000_7000;
    e.apply(&ev(500 * MS, again, Close, SynSent, "10.0.0.2:0", SRV));
    e.apply(&ev(501 * MS, again, SynSent, SynRecv, CLI, SRV));
    assert_eq!(e.count(TimeWait), 0);
    e.apply(&ev(502 * MS, again, SynRecv, Established, CLI, SRV));
    assert_eq!(e.stats().timewait_reused, 1);
}

#[test]
fn new_connection_on_a_timewait_tuple_ends_it() {
    let mut e = engine();
    established(&mut e);
    e.apply(&ev(10 * MS, CLIENT, Established, FinWait1, CLI, SRV));
    e.apply(&ev(11 * MS, CLIENT, FinWait1, FinWait2, CLI, SRV));
    e.apply(&ev(12 * MS, CLIENT, FinWait2, Close, CLI, SRV));
    assert_eq!(e.count(TimeWait), 1);
    // A dump starts at 400 ms.
    e.dump_starting();
    // The client reuses its port (tcp_tw_reuse): same four-tuple.
    let again = 0xffff_0000_0000_5000;
    e.apply(&ev(500 * MS, again, Close, SynSent, "10.0.0.2:0", SRV));
    e.apply(&ev(501 * MS, again, SynSent, Established, CLI, SRV));
    assert_eq!(e.count(TimeWait), 0);
    assert_eq!(e.stats().timewait_reused, 1);
    let h = &e.durations()[TimeWait as usize];
    assert_eq!(h.count(), 1);
    assert!(
        (h.sum_seconds() - 0.489).abs() < 1e-6,
        "{}",
        h.sum_seconds()
    );
    // A dump taken just before the reuse still shows the old timewait: it
    // must not come back.
    let tw = timewait_dump((CLI, SRV), TimeWait, 59_000);
    let r = e.reconcile_timewait([tw], &[], 400 * MS, 600 * MS);
    assert_eq!(r.added, 0);
    assert_eq!(e.count(TimeWait), 0);
}

#[test]
fn dump_corrects_timewait_substate_and_adds_missed_ones() {
    let mut e = engine();
    established(&mut e);
    e.apply(&ev(10 * MS, CLIENT, Established, FinWait1, CLI, SRV));
    e.apply(&ev(11 * MS, CLIENT, FinWait2, Close, CLI, SRV));
    // Orphaned FIN_WAIT2: the timewait's substate is FIN_WAIT2 (ss says so).
    let mine = timewait_dump((CLI, SRV), FinWait2, 50_000);
    let missed = timewait_dump(("10.0.0.2:40002", SRV), TimeWait, 30_000);
    let r = e.reconcile_timewait([mine, missed], &[], SEC, SEC + MS);
    assert_eq!(
        r,
        TimewaitReconcile {
            added: 1,
            removed: 0,
            removed_early: 0,
            changed: 1
        }
    );
    assert_eq!(r.drift(), 2);
    assert_eq!(e.count(FinWait2), 1);
    assert_eq!(e.count(TimeWait), 1);
    // Destinations add up to the TIME_WAIT gauge: the FIN_WAIT2 one is out.
    assert_eq!(e.timewait_by_destination(10)[0].count, 1);
}

#[test]
fn timewait_learned_during_a_dump_is_kept() {
    let mut e = engine();
    established(&mut e);
    e.apply(&ev(10 * MS, CLIENT, Established, FinWait1, CLI, SRV));
    // Closed while the dump ran (it started at 1 s): the dump may have
    // missed it, so its absence proves nothing yet.
    e.apply(&ev(SEC + 5 * MS, CLIENT, FinWait2, Close, CLI, SRV));
    let r = e.reconcile_timewait([], &[], SEC, SEC + 10 * MS);
    assert_eq!(r.removed, 0);
    assert_eq!(e.count(TimeWait), 1);
}
