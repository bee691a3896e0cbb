//! Engine tests with made-up events: every path a socket takes, seeds
//! racing events, timewait prediction and reconciliation, leaks, eviction.

use std::net::SocketAddr;

use tracer_common::{TASK_COMM_LEN, TcpState};

use super::*;
use crate::kernel::event::{Comm, Family, Transition};
use TcpState::*;

const NS: u32 = 4026531840;
const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;

fn comm(name: &str) -> Comm {
    let mut raw = [0u8; TASK_COMM_LEN];
    raw[..name.len()].copy_from_slice(name.as_bytes());
    Comm::new(raw)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

/// A transition of socket `sk` from `local` to `remote`.
fn ev(ts_ns: u64, sk: u64, old: TcpState, new: TcpState, local: &str, remote: &str) -> Transition {
    let local = addr(local);
    Transition {
        ts_ns,
        skaddr: sk,
        old,
        new,
        family: if local.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        },
        local,
        remote: addr(remote),
        pid: 0,
        tid: 0,
        comm: comm("swapper/0"),
        netns: NS,
        old_state: None,
        fin_received: None,
        timewait_made: None,
        sk_err: None,
        reset_received: None,
    }
}

/// The same, in process context.
fn ev_by(pid: u32, name: &str, mut t: Transition) -> Transition {
    t.pid = pid;
    t.tid = pid;
    t.comm = comm(name);
    t
}

const SRV: &str = "10.0.0.1:80";
const CLI: &str = "10.0.0.2:40000";
const ANY: &str = "0.0.0.0:0";
const LISTENER: u64 = 0xffff_0000_0000_1000;
const CLIENT: u64 = 0xffff_0000_0000_2000;
const CHILD: u64 = 0xffff_0000_0000_3000;

fn engine() -> Engine {
    Engine::new(EngineConfig::default())
}

/// Counts of every state, for whole-table assertions.
fn counts(e: &Engine) -> Vec<(TcpState, u64)> {
    TcpState::ALL
        .into_iter()
        .map(|s| (s, e.count(s)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// A listener (nginx) and a client (curl) connected to it at t = 3 ms;
/// the accepted child is up to the caller.
fn listener_and_client(e: &mut Engine) {
    e.apply(&ev_by(
        100,
        "nginx",
        ev(MS, LISTENER, Close, Listen, SRV, ANY),
    ));
    e.apply(&ev_by(
        200,
        "curl",
        ev(2 * MS, CLIENT, Close, SynSent, "10.0.0.2:0", SRV),
    ));
    e.apply(&ev(3 * MS, CLIENT, SynSent, Established, CLI, SRV));
}

/// A listener, a client connection to it, and the accepted child, all
/// established at t = 3 ms.
fn established(e: &mut Engine) {
    listener_and_client(e);
    e.apply(&ev(3 * MS, CHILD, Listen, SynRecv, SRV, CLI));
    e.apply(&ev(3 * MS, CHILD, SynRecv, Established, SRV, CLI));
}

/// The connection of [`established`], closed by the client at 12 ms: its
/// FIN acknowledged (FIN_WAIT2), then the server's FIN; the client's side
/// lives on as a timewait socket.
fn client_closed_into_timewait(e: &mut Engine) {
    established(e);
    e.apply(&ev(10 * MS, CLIENT, Established, FinWait1, CLI, SRV));
    e.apply(&ev(11 * MS, CLIENT, FinWait1, FinWait2, CLI, SRV));
    e.apply(&ev(12 * MS, CLIENT, FinWait2, Close, CLI, SRV));
}

#[test]
fn handshake_counts_listener_client_and_child() {
    let mut e = engine();
    established(&mut e);
    assert_eq!(counts(&e), vec![(Established, 2), (Listen, 1)]);
    assert_eq!(e.durations()[SynSent as usize].count(), 1);
    // The child's SYN_RECV stay is exact; LISTEN is not left by the child.
    assert_eq!(e.durations()[SynRecv as usize].count(), 1);
    assert_eq!(e.durations()[Listen as usize].count(), 0);
    assert_eq!(e.stats().corrections, 0);
}

/// A timewait socket as a dump shows it, with its timer's time left.
fn timewait_dump(tuple: (&str, &str), substate: TcpState, expires_ms: u32) -> DumpedSocket {
    DumpedSocket {
        timewait: true,
        expires_ms,
        ..seed(tuple, substate, None)
    }
}

fn seed(tuple: (&str, &str), state: TcpState, owner: Option<(u32, &str)>) -> DumpedSocket {
    DumpedSocket {
        tuple: Tuple::new(NS, addr(tuple.0), addr(tuple.1)),
        state,
        timewait: false,
        expires_ms: 0,
        owner: owner.map(|(pid, name)| (pid, comm(name))),
        inode: 0,
    }
}

#[test]
fn seeded_sockets_are_adopted_by_their_first_event() {
    let mut e = engine();
    let dump = vec![
        seed((SRV, ANY), Listen, Some((100, "nginx"))),
        seed((SRV, CLI), Established, Some((100, "nginx"))),
        seed((CLI, SRV), Established, Some((200, "curl"))),
        // Half-open request sockets never pass the tracepoint: not tracked.
        seed((SRV, "10.0.0.3:5"), SynRecv, None),
    ];
    e.seed(dump, 10 * SEC + MS);
    assert_eq!(counts(&e), vec![(Established, 2), (Listen, 1)]);
    e.apply(&ev(11 * SEC, CLIENT, Established, FinWait1, CLI, SRV));
    e.apply(&ev(11 * SEC, CHILD, Established, CloseWait, SRV, CLI));
    assert_eq!(counts(&e), vec![(FinWait1, 1), (CloseWait, 1), (Listen, 1)]);
    // Stays that began before the daemon are not observed.
    assert_eq!(e.durations()[Established as usize].count(), 0);
    e.apply(&ev(12 * SEC, CHILD, CloseWait, LastAck, SRV, CLI));
    assert_eq!(e.durations()[CloseWait as usize].count(), 1);
    assert_eq!(e.stats().unknown_sockets, 0);
    assert_eq!(e.stats().corrections, 0);
    // The accepted socket of a seeded listener inherits its owner.
    e.apply(&ev(
        13 * SEC,
        0xffff_0000_0000_6000,
        Listen,
        SynRecv,
        SRV,
        "10.0.0.4:1",
    ));
    e.apply(&ev(
        13 * SEC,
        0xffff_0000_0000_6000,
        SynRecv,
        Established,
        SRV,
        "10.0.0.4:1",
    ));
    e.apply(&ev(
        14 * SEC,
        0xffff_0000_0000_6000,
        Established,
        CloseWait,
        SRV,
        "10.0.0.4:1",
    ));
    let leaks = e.leaks(100 * SEC, 10);
    assert_eq!(leaks.len(), 1);
    assert_eq!((leaks[0].pid, leaks[0].comm), (100, Some(comm("nginx"))));
}

#[test]
fn events_before_the_dump_ended_are_not_counted_twice() {
    let mut e = engine();
    // The dump (1.000 s .. 1.010 s) saw the connection already established
    // and the listener; the events that made them are replayed afterwards.
    let dump = vec![
        seed((SRV, ANY), Listen, None),
        seed((CLI, SRV), Established, None),
        seed((SRV, CLI), Established, None),
    ];
    e.seed(dump, SEC + 10 * MS);
    e.apply(&ev(SEC, LISTENER, Close, Listen, SRV, ANY));
    e.apply(&ev(SEC + MS, CLIENT, Close, SynSent, "10.0.0.2:0", SRV));
    e.apply(&ev(SEC + 2 * MS, CLIENT, SynSent, Established, CLI, SRV));
    e.apply(&ev(SEC + 2 * MS, CHILD, Listen, SynRecv, SRV, CLI));
    e.apply(&ev(SEC + 2 * MS, CHILD, SynRecv, Established, SRV, CLI));
    assert_eq!(counts(&e), vec![(Established, 2), (Listen, 1)]);
    assert_eq!(e.tracked(), 3);
    // After the dump, a second listener on the same port (SO_REUSEPORT) is
    // a new socket, not the seeded one.
    e.apply(&ev(2 * SEC, LISTENER + 8, Close, Listen, SRV, ANY));
    assert_eq!(e.count(Listen), 2);
}

#[test]
fn a_dump_seeded_in_parts_ends_timewait_reused_after_its_part_was_read() {
    let mut e = engine();
    // The daemon builds the table while the dump (1.000 s .. 1.010 s) is
    // still being read: a server-side timewait socket in the part read by
    // 1.002 s, the listener in the part read by 1.008 s.
    e.seed_part([timewait_dump((SRV, CLI), TimeWait, 50_000)], SEC + 2 * MS);
    e.seed_part([seed((SRV, ANY), Listen, None)], SEC + 8 * MS);
    e.seed_complete(SEC + 10 * MS);
    assert_eq!(counts(&e), vec![(TimeWait, 1), (Listen, 1)]);
    // The client came back from the same port at 1.005 s, after the dump
    // had read the timewait socket: its SYN ended it.
    e.apply(&ev(SEC + 5 * MS, CHILD, Listen, SynRecv, SRV, CLI));
    assert_eq!(counts(&e), vec![(SynRecv, 1), (Listen, 1)]);
    assert_eq!(e.stats().timewait_reused, 1);
    // The listener was seeded, not made anew.
    e.apply(&ev(2 * SEC, LISTENER, Listen, Close, SRV, ANY));
    assert_eq!(counts(&e), vec![(SynRecv, 1)]);
    assert_eq!(e.stats().unknown_sockets, 0);
}

#[test]
fn dump_that_saw_a_later_state_wins_over_older_events() {
    let mut e = engine();
    // The dump saw the connection in FIN_WAIT2; the buffered events from
    // before it then arrive. Nothing moves backwards, nothing is corrected.
    e.seed(vec![seed((CLI, SRV), FinWait2, None)], 2 * SEC);
    e.apply(&ev(SEC + MS, CLIENT, Established, FinWait1, CLI, SRV));
    assert_eq!(counts(&e), vec![(FinWait2, 1)]);
    e.apply(&ev(SEC + 2 * MS, CLIENT, FinWait1, FinWait2, CLI, SRV));
    assert_eq!(counts(&e), vec![(FinWait2, 1)]);
    e.apply(&ev(3 * SEC, CLIENT, FinWait2, Close, CLI, SRV));
    assert_eq!(counts(&e), vec![(TimeWait, 1)]);
}

#[test]
fn lost_events_are_corrected_by_the_next_one() {
    let mut e = engine();
    established(&mut e);
    // ESTABLISHED -> FIN_WAIT1 was lost (ring buffer full).
    e.apply(&ev(10 * MS, CLIENT, FinWait1, FinWait2, CLI, SRV));
    assert_eq!(e.count(FinWait2), 1);
    assert_eq!(e.count(Established), 1);
    assert_eq!(e.stats().corrections, 1);
    // A socket we never saw at all.
    e.apply(&ev(
        11 * MS,
        0xffff_0000_0000_7000,
        Established,
        CloseWait,
        "10.0.0.5:1",
        "10.0.0.6:2",
    ));
    assert_eq!(e.count(CloseWait), 1);
    assert_eq!(e.stats().unknown_sockets, 1);
}

#[test]
fn close_wait_leaks_by_owner_are_reported_once() {
    let mut e = Engine::new(EngineConfig {
        close_wait_threshold_ns: 5 * SEC,
        leak_top_n: 1,
        ..EngineConfig::default()
    });
    e.apply(&ev_by(
        100,
        "leaky",
        ev(MS, LISTENER, Close, Listen, SRV, ANY),
    ));
    e.apply(&ev_by(
        300,
        "other",
        ev(MS, LISTENER + 8, Close, Listen, "10.0.0.1:81", ANY),
    ));
    for i in 0..3u64 {
        let sk = CHILD + i * 8;
        let cli = format!("10.0.0.2:{}", 50_000 + i);
        e.apply(&ev(2 * MS, sk, Listen, SynRecv, SRV, &cli));
        e.apply(&ev(2 * MS, sk, SynRecv, Established, SRV, &cli));
        e.apply(&ev(SEC + i * SEC, sk, Established, CloseWait, SRV, &cli));
    }
    e.apply(&ev(2 * MS, CHILD + 64, Listen, SynRecv, "10.0.0.1:81", CLI));
    e.apply(&ev(SEC, CHILD + 64, SynRecv, CloseWait, "10.0.0.1:81", CLI));

    assert!(e.sweep_leaks(5 * SEC).is_empty()); // oldest is 4 s old
    let fresh = e.sweep_leaks(7 * SEC); // 6, 6, 5 and 4 s old
    assert_eq!(fresh.len(), 3);
    assert_eq!(fresh[0].comm, Some(comm("leaky")));
    assert_eq!(fresh[0].age_ns, 6 * SEC);
    assert_eq!(
        e.leak_summary(),
        &LeakSummary {
            total: 3,
            by_comm: vec![("leaky".into(), 2), (LeakSummary::OTHER.into(), 1)]
        }
    );
    // Logged once: a later sweep reports only the newly crossed one, and the
    // top-N cut folds the rest.
    let fresh = e.sweep_leaks(8 * SEC);
    assert_eq!(fresh.len(), 1);
    assert_eq!(
        e.leak_summary().by_comm,
        vec![("leaky".to_owned(), 3), (LeakSummary::OTHER.to_owned(), 1)]
    );
    // The owner closes them: gone.
    for i in 0..3u64 {
        let cli = format!("10.0.0.2:{}", 50_000 + i);
        e.apply(&ev(9 * SEC, CHILD + i * 8, CloseWait, LastAck, SRV, &cli));
    }
    e.sweep_leaks(10 * SEC);
    assert_eq!(e.leak_summary().total, 1);
    assert_eq!(e.leaks(10 * SEC, 10).len(), 1);
}

#[test]
fn eviction_keeps_the_table_bounded() {
    let mut e = Engine::new(EngineConfig {
        max_sockets: 10,
        ..EngineConfig::default()
    });
    for i in 0..100u64 {
        let local = format!("10.0.1.1:{}", 1000 + i);
        let sk = 0xffff_0000_1000_0000 + i * 64;
        e.apply(&ev(i * MS, sk, Close, SynSent, "10.0.1.1:0", SRV));
        e.apply(&ev(i * MS, sk, SynSent, Established, &local, SRV));
        if i % 2 == 0 {
            e.apply(&ev(i * MS, sk, Established, FinWait1, &local, SRV));
            e.apply(&ev(i * MS, sk, FinWait2, Close, &local, SRV));
        }
        assert!(e.tracked() <= 10);
        let total: u64 = e.counts().iter().sum();
        assert_eq!(total as usize, e.tracked(), "gauges follow the table");
        let per_ns: u64 = e.counts_by_netns().values().flatten().sum();
        assert_eq!(per_ns, total, "per-namespace gauges add up");
    }
    assert!(e.stats().evictions > 0);
}

#[test]
fn address_reuse_without_close_is_a_correction() {
    let mut e = engine();
    established(&mut e);
    // CLIENT's CLOSE was lost and the kernel reused the address.
    e.apply(&ev(SEC, CLIENT, Close, SynSent, "10.0.0.2:0", "10.0.0.7:1"));
    assert_eq!(e.count(SynSent), 1);
    assert_eq!(e.count(Established), 1);
    assert_eq!(e.stats().corrections, 1);
}

#[test]
fn address_reused_in_another_namespace_moves_its_count() {
    let mut e = engine();
    established(&mut e);
    // CLIENT's CLOSE was lost; the address now holds a socket in another
    // namespace, first seen mid-life.
    let mut reused = ev(
        SEC,
        CLIENT,
        Established,
        FinWait1,
        "10.0.0.9:5",
        "10.0.0.7:1",
    );
    reused.netns = NS + 1;
    e.apply(&reused);
    let by_ns = e.counts_by_netns();
    assert_eq!(
        by_ns[&NS][Established as usize], 1,
        "only the server side stays"
    );
    assert_eq!(by_ns[&(NS + 1)][FinWait1 as usize], 1, "{by_ns:?}");
    assert_eq!(by_ns[&(NS + 1)].iter().sum::<u64>(), 1, "{by_ns:?}");
    assert_eq!(e.count(Established), 1);
    let per_ns: u64 = by_ns.values().flatten().sum();
    assert_eq!(per_ns, e.counts().iter().sum::<u64>());
}

#[test]
fn ipv6_and_namespaces_are_separate_sockets() {
    let mut e = engine();
    e.apply(&ev(MS, LISTENER, Close, Listen, "[::1]:80", "[::]:0"));
    let mut other_ns = ev(MS, LISTENER + 8, Close, Listen, "[::1]:80", "[::]:0");
    other_ns.netns = NS + 1;
    e.apply(&other_ns);
    assert_eq!(e.count(Listen), 2);
    let by_ns = e.counts_by_netns();
    assert_eq!(by_ns[&NS][Listen as usize], 1);
    assert_eq!(by_ns[&(NS + 1)][Listen as usize], 1);
    // A namespace with no socket left drops out.
    let mut close = ev(2 * MS, LISTENER + 8, Listen, Close, "[::1]:80", "[::]:0");
    close.netns = NS + 1;
    e.apply(&close);
    assert!(!e.counts_by_netns().contains_key(&(NS + 1)));
    assert_eq!(e.counts_by_netns().len(), 1);
}

#[test]
fn a_connection_closed_before_the_dump_does_not_take_its_successor() {
    let mut e = engine();
    // The dump saw a new connection on the four-tuple of one that closed
    // just before (its timewait reused): the old close must leave it be.
    e.seed(vec![seed((CLI, SRV), Established, None)], 2 * SEC);
    e.apply(&ev(SEC - 5 * MS, CLIENT, FinWait2, Close, CLI, SRV));
    assert_eq!(counts(&e), vec![(Established, 1)]);
    let next = CLIENT + 8;
    e.apply(&ev(3 * SEC, next, Established, FinWait1, CLI, SRV));
    assert_eq!(counts(&e), vec![(FinWait1, 1)]);
    assert_eq!(e.stats().corrections, 0);
    assert_eq!(e.tracked(), 1);
}

#[test]
fn full_reconcile_heals_what_lost_events_broke() {
    let mut e = engine();
    established(&mut e); // listener, client and child, all at 3 ms
    // Lost: the child's ESTABLISHED -> CLOSE_WAIT, the client's whole close,
    // and a second connection that opened while events were dropped.
    let dump = vec![
        seed((SRV, ANY), Listen, None),
        seed((SRV, CLI), CloseWait, None),
        seed((SRV, "10.0.0.3:1"), Established, None),
        seed(("10.0.0.3:1", SRV), Established, None),
        // Half-open request sockets are never counted.
        seed((SRV, "10.0.0.4:1"), SynRecv, None),
    ];
    let r = e.reconcile_full(&dump, &[], SEC, SEC + MS);
    assert_eq!(
        r,
        FullReconcile {
            added: 2,
            removed: 1,
            changed: 1
        }
    );
    assert_eq!(
        counts(&e),
        vec![(Established, 2), (CloseWait, 1), (Listen, 1)]
    );
    assert_eq!(e.stats().corrections, 4);
    // The healed sockets follow their next events.
    e.apply(&ev(2 * SEC, CHILD, CloseWait, LastAck, SRV, CLI));
    e.apply(&ev(
        2 * SEC,
        0xffff_0000_0000_9000,
        Established,
        FinWait1,
        "10.0.0.3:1",
        SRV,
    ));
    assert_eq!(
        counts(&e),
        vec![(Established, 1), (FinWait1, 1), (LastAck, 1), (Listen, 1)]
    );
    // Nothing to fix the second time.
    let again = e.reconcile_full(
        &[
            seed((SRV, ANY), Listen, None),
            seed((SRV, "10.0.0.3:1"), Established, None),
            seed(("10.0.0.3:1", SRV), FinWait1, None),
            seed((SRV, CLI), LastAck, None),
        ],
        &[],
        3 * SEC,
        3 * SEC + MS,
    );
    assert_eq!(again, FullReconcile::default());
}

#[test]
fn full_reconcile_leaves_sockets_that_moved_during_the_dump() {
    let mut e = engine();
    established(&mut e);
    // The dump (1 s .. 1.01 s) saw the client established; an event during
    // it moved the client on. The event wins; nothing is "missing".
    e.apply(&ev(SEC + 5 * MS, CLIENT, Established, FinWait1, CLI, SRV));
    let dump = vec![
        seed((SRV, ANY), Listen, None),
        seed((SRV, CLI), Established, None),
        seed((CLI, SRV), Established, None),
    ];
    let r = e.reconcile_full(&dump, &[], SEC, SEC + 10 * MS);
    assert_eq!(r, FullReconcile::default());
    assert_eq!(
        counts(&e),
        vec![(Established, 1), (FinWait1, 1), (Listen, 1)]
    );
}

#[test]
fn full_reconcile_counts_shared_listeners() {
    let mut e = engine();
    e.apply(&ev(MS, LISTENER, Close, Listen, SRV, ANY));
    // The kernel has two listeners on the port (SO_REUSEPORT); we saw one.
    let dump = vec![
        seed((SRV, ANY), Listen, None),
        seed((SRV, ANY), Listen, None),
    ];
    let r = e.reconcile_full(&dump, &[], SEC, SEC + MS);
    assert_eq!(r.added, 1);
    assert_eq!(e.count(Listen), 2);
}

#[test]
fn owners_found_after_start_up_are_assigned_to_seeded_sockets() {
    let mut e = engine();
    let mut listener = seed(("10.0.0.1:80", "0.0.0.0:0"), Listen, None);
    listener.inode = 1001;
    let mut conn = seed(("10.0.0.1:80", "10.0.0.9:5000"), CloseWait, None);
    conn.inode = 1002;
    let mut other = seed(("10.0.0.1:81", "10.0.0.9:5001"), Established, None);
    other.inode = 1003;
    e.seed([listener, conn, other], MS);
    let owners = std::collections::HashMap::from([
        (1001, (42, comm("server"))),
        (1002, (42, comm("server"))),
    ]);
    assert_eq!(e.assign_owners(&owners), 2);
    // A second scan finds nothing new: inodes are dropped once looked at.
    assert_eq!(e.assign_owners(&owners), 0);
    // The listener's owner now owns what it accepts.
    e.apply(&ev(
        2 * MS,
        77,
        Listen,
        SynRecv,
        "10.0.0.1:80",
        "10.0.0.9:6000",
    ));
    e.apply(&ev(
        3 * MS,
        77,
        SynRecv,
        Established,
        "10.0.0.1:80",
        "10.0.0.9:6000",
    ));
    e.apply(&ev(
        4 * MS,
        77,
        Established,
        CloseWait,
        "10.0.0.1:80",
        "10.0.0.9:6000",
    ));
    let leaks = e.sweep_leaks(10 * 60 * SEC);
    let server_leaks = leaks.iter().filter(|l| l.pid == 42).count();
    assert_eq!(server_leaks, 2, "{leaks:?}");
}

mod connecting;
mod listener_tuple;
mod orphans;
mod owners;
mod ports;
mod seeding;
mod timewait;
mod timewait_followed;
