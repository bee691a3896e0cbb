//! Timewait sockets followed by the kernel's timewait programs: the
//! records make, change and end them, and closes predict nothing.

use super::*;
use crate::kernel::event::{Record, TimewaitChange, TimewaitKind};

const TW: u64 = 0xffff_0000_0000_9000;

fn followed() -> Engine {
    let mut e = engine();
    e.set_timewait_followed(true);
    e
}

/// A record of the client's timewait socket (CLI -> SRV).
fn tw(ts_ns: u64, kind: TimewaitKind) -> Record {
    Record::Timewait(TimewaitChange {
        ts_ns,
        twaddr: TW,
        netns: NS,
        local: addr(CLI),
        remote: addr(SRV),
        kind,
    })
}

fn made(ts_ns: u64, substate: TcpState) -> Record {
    // 60 s at the engine's default (HZ unknown: 60 s whatever the jiffies).
    tw(
        ts_ns,
        TimewaitKind::Made {
            substate,
            timer_jiffies: 15_000,
        },
    )
}

fn state(e: &Engine, s: TcpState) -> u64 {
    e.counts()[slot(s)]
}

#[test]
fn a_close_predicts_nothing_the_kernels_record_makes_it() {
    let mut e = followed();
    established(&mut e);
    e.apply(&ev(10 * MS, CLIENT, Established, FinWait1, CLI, SRV));
    e.apply(&ev(11 * MS, CLIENT, FinWait1, FinWait2, CLI, SRV));
    // The kernel makes the timewait socket, then retires the full one.
    e.apply_record(&made(12 * MS, TimeWait));
    e.apply(&Transition {
        timewait_made: Some(true),
        ..ev(12 * MS, CLIENT, FinWait2, Close, CLI, SRV)
    });
    assert_eq!(state(&e, TimeWait), 1);
    // A close the kernel made no timewait socket of (a full table): none.
    let mut e = followed();
    established(&mut e);
    e.apply(&ev(10 * MS, CLIENT, Established, FinWait1, CLI, SRV));
    e.apply(&ev(11 * MS, CLIENT, FinWait1, FinWait2, CLI, SRV));
    e.apply(&Transition {
        timewait_made: Some(true),
        ..ev(12 * MS, CLIENT, FinWait2, Close, CLI, SRV)
    });
    assert_eq!((state(&e, TimeWait), state(&e, FinWait2)), (0, 0));
}

#[test]
fn the_peers_fin_moves_fin_wait2_to_time_wait_and_ends_its_stay() {
    let mut e = followed();
    e.apply_record(&made(SEC, FinWait2));
    assert_eq!((state(&e, FinWait2), state(&e, TimeWait)), (1, 0));
    let rearmed = TimewaitKind::Rearmed {
        substate: TimeWait,
        timer_jiffies: 15_000,
    };
    e.apply_record(&tw(4 * SEC, rearmed));
    assert_eq!((state(&e, FinWait2), state(&e, TimeWait)), (0, 1));
    let fin_wait2 = &e.durations()[slot(FinWait2)];
    assert_eq!(fin_wait2.count(), 1);
    assert!((fin_wait2.sum_seconds() - 3.0).abs() < 1e-9);
    // A segment that restarts the TIME_WAIT timer changes nothing else.
    e.apply_record(&tw(5 * SEC, rearmed));
    assert_eq!(state(&e, TimeWait), 1);
    assert_eq!(e.durations()[slot(FinWait2)].count(), 1);
    // Its end: a TIME_WAIT stay from the FIN on, at its timer.
    e.apply_record(&tw(65 * SEC, TimewaitKind::Gone { substate: TimeWait }));
    assert_eq!(state(&e, TimeWait), 0);
    let time_wait = &e.durations()[slot(TimeWait)];
    assert!((time_wait.sum_seconds() - 61.0).abs() < 1e-9);
    assert_eq!(e.stats().timewait_expired, 1);
}

#[test]
fn an_early_end_is_counted_as_one_and_a_newer_socket_survives_an_old_end() {
    let mut e = followed();
    e.apply_record(&made(SEC, TimeWait));
    let gone = |ts| tw(ts, TimewaitKind::Gone { substate: TimeWait });
    e.apply_record(&gone(2 * SEC)); // a reset, a reuse
    assert_eq!(state(&e, TimeWait), 0);
    assert_eq!(e.stats().timewait_ended_early, 1);
    // A record from before the entry was learned (a dump read it later)
    // is about an older socket on the same four-tuple.
    let dumped = timewait_dump((CLI, SRV), TimeWait, 30_000);
    e.reconcile_timewait([dumped], &[], 10 * SEC, 10 * SEC);
    e.apply_record(&gone(9 * SEC));
    assert_eq!(state(&e, TimeWait), 1);
}

#[test]
fn a_timewait_socket_older_than_the_daemon_is_learned_from_its_rearm() {
    let mut e = followed();
    e.apply_record(&tw(
        SEC,
        TimewaitKind::Rearmed {
            substate: TimeWait,
            timer_jiffies: 15_000,
        },
    ));
    assert_eq!(state(&e, TimeWait), 1);
    // Its start is unknown: its end observes no stay.
    e.apply_record(&tw(61 * SEC, TimewaitKind::Gone { substate: TimeWait }));
    assert_eq!(state(&e, TimeWait), 0);
    assert_eq!(e.durations()[slot(TimeWait)].count(), 0);
}

#[test]
fn an_orphaned_fin_wait2_is_one_stay_from_the_full_socket_to_the_peers_fin() {
    let mut e = followed();
    established(&mut e);
    e.apply(&ev(10 * MS, CLIENT, Established, FinWait1, CLI, SRV));
    e.apply(&ev(SEC, CLIENT, FinWait1, FinWait2, CLI, SRV));
    // Closed without waiting: the kernel keeps it as a FIN_WAIT2 timewait
    // socket, then retires the full socket.
    e.apply_record(&made(2 * SEC, FinWait2));
    e.apply(&ev(2 * SEC, CLIENT, FinWait2, Close, CLI, SRV));
    assert_eq!(state(&e, FinWait2), 1);
    assert_eq!(e.durations()[slot(FinWait2)].count(), 0);
    e.apply_record(&tw(
        5 * SEC,
        TimewaitKind::Rearmed {
            substate: TimeWait,
            timer_jiffies: 15_000,
        },
    ));
    let fin_wait2 = &e.durations()[slot(FinWait2)];
    assert_eq!(fin_wait2.count(), 1);
    assert!(
        (fin_wait2.sum_seconds() - 4.0).abs() < 1e-9,
        "{}",
        fin_wait2.sum_seconds()
    );
}

#[test]
fn an_early_end_followed_by_a_connection_on_its_tuple_is_a_reuse() {
    let mut e = followed();
    e.apply_record(&made(SEC, TimeWait));
    // A connect takes the four-tuple: the kernel kills the timewait
    // socket, then the connection's handshake completes.
    e.apply(&ev(2 * SEC, 0x5000, Close, SynSent, "10.0.0.2:0", SRV));
    e.apply_record(&tw(2 * SEC + 10, TimewaitKind::Gone { substate: TimeWait }));
    e.apply(&ev(2 * SEC + 20, 0x5000, SynSent, Established, CLI, SRV));
    assert_eq!(e.stats().timewait_reused, 1);
    assert_eq!(e.stats().timewait_ended_early, 0);
}
