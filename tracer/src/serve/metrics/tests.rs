//! The families built from made-up readings: every sample carries its own
//! family's labels and values.

use super::*;
use TcpState::*;

const NS_A: u32 = 4026531840;
const NS_B: u32 = 4026532300;

/// A scrape's reading with made-up numbers, each one distinct, so a
/// value in the wrong series shows.
fn reading(netns_label: bool) -> Reading {
    let mut counts = [0; STATE_SLOTS];
    counts[Established as usize] = 5;
    counts[CloseWait as usize] = 2;
    let mut other_ns = [0; STATE_SLOTS];
    other_ns[Listen as usize] = 1;
    let mut transitions = TransitionMatrix::ZERO;
    for _ in 0..3 {
        transitions.record(Close as u32, SynSent as u32);
    }
    transitions.record(SynSent as u32, Established as u32);
    let mut durations = vec![Histogram::default(); STATE_SLOTS];
    durations[SynSent as usize].observe_ns(2_000_000);
    Reading {
        netns_label,
        counts,
        by_netns: vec![(NS_A, counts), (NS_B, other_ns)],
        durations,
        leaks: vec![("nginx".to_owned(), 3)],
        stats: EngineStats {
            corrections: 4,
            evictions: 6,
            timewait_expired: 7,
            timewait_reused: 8,
            timewait_ended_early: 9,
            ..EngineStats::default()
        },
        tracked: 10,
        transitions,
        kernel: KernelStats {
            ringbuf_full: 11,
            recursion_misses: 12,
            record_read_failed: 13,
            bad_config: 1,
            timewait_records_lost: 14,
            ..KernelStats::default()
        },
        sources: vec![(NS_A, Source::Proc), (NS_B, Source::Proc)],
        timewait_tracking: Some("kernel"),
        // 10.0.0.9:443 failed in both namespaces: 4 refused, 1 timed out.
        connect_failures: (
            vec![
                ((NS_A, "10.0.0.9:443".parse().unwrap()), [3, 1, 0, 0, 0]),
                ((NS_B, "10.0.0.9:443".parse().unwrap()), [1, 0, 0, 0, 0]),
            ],
            [0, 0, 2, 0, 0],
        ),
        closed: vec![(NS_A, [20, 21, 22, 23, 24]), (NS_B, [10, 10, 10, 10, 10])],
        resets: ResetCounts {
            sent: Some(vec![
                (NS_A, "no_socket".to_owned(), 40),
                (NS_B, "no_socket".to_owned(), 1),
                (NS_B, "unknown".to_owned(), 2),
            ]),
            received: Some(vec![(NS_A, SynSent, 50), (NS_B, Established, 51)]),
        },
        listeners: vec![
            listener(NS_A, "0.0.0.0:80", 3, 128, 60),
            listener(NS_B, "0.0.0.0:80", 1, 128, 1),
            listener(NS_A, "[::]:8080", 0, 4096, 0),
        ],
        top_listeners: 1,
        retransmits: Some((
            vec![
                ((NS_A, "10.0.0.5:443".parse().unwrap()), 70),
                ((NS_B, "10.0.0.5:443".parse().unwrap()), 1),
            ],
            5,
        )),
        listener_retransmits: Some((vec![((NS_B, "10.0.0.1:80".parse().unwrap()), 8)], 2)),
        synack_retransmits: Some((vec![((NS_A, "0.0.0.0:80".parse().unwrap()), 3)], 0)),
        ephemeral_ports: vec![
            ports(NS_A, "10.0.0.5:443", 90, 10),
            ports(NS_B, "10.0.0.5:443", 20, 80),
        ],
        events_received: 20,
        events_invalid: 21,
        http_busy: 22,
        http_evicted: 23,
    }
}

fn ports(netns: u32, destination: &str, in_use: u32, free: u32) -> PortUse {
    PortUse {
        netns,
        destination: destination.parse().unwrap(),
        source: "10.0.0.1".parse().unwrap(),
        in_use,
        free,
    }
}

#[test]
fn retransmits_by_destination_and_other_and_absent_without_the_tracepoint() {
    assert_eq!(
        samples("tcpstate_retransmits_total", &reading(false)),
        [
            (l(&[("destination", "10.0.0.5:443")]), 71.0),
            (l(&[("destination", "[other]")]), 5.0),
        ]
    );
    assert_eq!(
        samples("tcpstate_listener_retransmits_total", &reading(true)),
        [
            (
                l(&[("listener", "10.0.0.1:80"), ("netns", "4026532300")]),
                8.0
            ),
            (l(&[("listener", "[other]"), ("netns", "")]), 2.0),
        ]
    );
    let mut r = reading(false);
    r.synack_retransmits = None;
    assert!(
        family("tcpstate_synack_retransmits_total")
            .collect(&r)
            .is_none()
    );
}

#[test]
fn ephemeral_ports_speak_for_the_scarcest_namespace_without_the_label() {
    let r = reading(false);
    assert_eq!(
        samples("tcpstate_ephemeral_ports_free", &r),
        [(l(&[("destination", "10.0.0.5:443")]), 10.0)]
    );
    assert_eq!(
        samples("tcpstate_ephemeral_ports_in_use", &r),
        [(l(&[("destination", "10.0.0.5:443")]), 90.0)]
    );
    assert_eq!(
        samples("tcpstate_ephemeral_ports_free", &reading(true)).len(),
        2
    );
}

fn listener(netns: u32, local: &str, queued: u32, limit: u32, drops: u32) -> ListenerQueue {
    ListenerQueue {
        netns,
        local: local.parse().unwrap(),
        queued,
        limit,
        drops: Some(drops),
    }
}

#[test]
fn listeners_past_the_top_share_other() {
    // One place: 0.0.0.0:80 (both namespaces summed without the label)
    // dropped most.
    let r = reading(false);
    assert_eq!(
        samples("tcpstate_listen_overflows_total", &r),
        [
            (l(&[("listener", "0.0.0.0:80")]), 61.0),
            (l(&[("listener", "[other]")]), 0.0),
        ]
    );
    assert_eq!(
        samples("tcpstate_listen_queue_limit", &r),
        [
            (l(&[("listener", "0.0.0.0:80")]), 256.0),
            (l(&[("listener", "[other]")]), 4096.0),
        ]
    );
    // With the label, the place goes to NS_A's, the rest to [other].
    let r = reading(true);
    let a = NS_A.to_string();
    assert_eq!(
        samples("tcpstate_listen_queue_length", &r),
        [
            (l(&[("listener", "0.0.0.0:80"), ("netns", &a)]), 3.0),
            (l(&[("listener", "[other]"), ("netns", "")]), 1.0),
        ]
    );
}

fn family(name: &str) -> &'static Family {
    families()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no family {name}"))
}

/// A family's samples as (label pairs, value); histograms give their count.
fn samples(name: &str, r: &Reading) -> Vec<(Vec<(String, String)>, f64)> {
    let Some(f) = family(name).collect(r) else {
        return Vec::new();
    };
    f.get_metric()
        .iter()
        .map(|m| {
            let labels = m
                .get_label()
                .iter()
                .map(|l| (l.name().to_owned(), l.value().to_owned()))
                .collect();
            let value = match f.get_field_type() {
                MetricType::COUNTER => m.get_counter().get_value(),
                MetricType::HISTOGRAM => m.get_histogram().get_sample_count() as f64,
                _ => m.get_gauge().get_value(),
            };
            (labels, value)
        })
        .collect()
}

fn l(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn connect_failures_by_destination_add_up_without_the_netns_label() {
    let r = reading(false);
    let got = samples("tcpstate_connect_failures_total", &r);
    let value = |dest: &str, reason: &str| {
        got.iter()
            .find(|(labels, _)| *labels == l(&[("destination", dest), ("reason", reason)]))
            .map(|(_, v)| *v)
    };
    assert_eq!(value("10.0.0.9:443", "refused"), Some(4.0));
    assert_eq!(value("10.0.0.9:443", "timeout"), Some(1.0));
    assert_eq!(
        value("10.0.0.9:443", "aborted"),
        Some(0.0),
        "every reason has a series"
    );
    assert_eq!(value("[other]", "unreachable"), Some(2.0));
    assert_eq!(got.len(), 10);
    // With the label, one series set per namespace.
    let r = reading(true);
    let got = samples("tcpstate_connect_failures_total", &r);
    let refused_a = l(&[
        ("destination", "10.0.0.9:443"),
        ("reason", "refused"),
        ("netns", &NS_A.to_string()),
    ]);
    assert!(got.contains(&(refused_a, 3.0)), "{got:?}");
    assert_eq!(got.len(), 15);
}

#[test]
fn closes_by_cause() {
    assert_eq!(
        samples("tcpstate_connections_closed_total", &reading(false)),
        [
            (l(&[("cause", "aborted")]), 34.0),
            (l(&[("cause", "fin")]), 30.0),
            (l(&[("cause", "reset_received")]), 31.0),
            (l(&[("cause", "reset_sent")]), 32.0),
            (l(&[("cause", "timeout")]), 33.0),
        ]
    );
    let by_ns = samples("tcpstate_connections_closed_total", &reading(true));
    let a = NS_A.to_string();
    assert!(by_ns.contains(&(l(&[("cause", "timeout"), ("netns", &a)]), 23.0)));
    assert_eq!(by_ns.len(), 10);
}

#[test]
fn resets_by_reason_and_state() {
    assert_eq!(
        samples("tcpstate_resets_sent_total", &reading(false)),
        [
            (l(&[("reason", "no_socket")]), 41.0),
            (l(&[("reason", "unknown")]), 2.0),
        ]
    );
    assert_eq!(
        samples("tcpstate_resets_received_total", &reading(false)),
        [
            (l(&[("state", "ESTABLISHED")]), 51.0),
            (l(&[("state", "SYN_SENT")]), 50.0),
        ]
    );
    // A kernel without the tracepoint: no family at all.
    let mut r = reading(false);
    r.resets.sent = None;
    assert!(family("tcpstate_resets_sent_total").collect(&r).is_none());
}

#[test]
fn every_sample_carries_its_familys_label_names() {
    for netns_label in [false, true] {
        let r = reading(netns_label);
        for f in families() {
            let want = f.label_names(netns_label);
            let got = samples(f.name, &r);
            assert!(!got.is_empty(), "{} has no samples", f.name);
            for (labels, _) in got {
                let names: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
                assert_eq!(names, want, "{} (netns label {netns_label})", f.name);
            }
        }
    }
}

#[test]
fn values_land_in_their_own_series() {
    let r = reading(false);
    let one = |name: &str| samples(name, &r);
    assert_eq!(
        one("tcpstate_transitions_total"),
        [
            (l(&[("from", "SYN_SENT"), ("to", "ESTABLISHED")]), 1.0),
            (l(&[("from", "CLOSE"), ("to", "SYN_SENT")]), 3.0),
        ]
    );
    assert_eq!(
        one("tcpstate_events_lost_total"),
        [
            (l(&[("reason", "ring_buffer_full")]), 11.0),
            (l(&[("reason", "not_run")]), 12.0),
            (l(&[("reason", "read_failed")]), 14.0),
        ]
    );
    assert_eq!(
        one("tcpstate_timewait_records_lost_total"),
        [(l(&[]), 14.0)]
    );
    assert_eq!(
        one("tcpstate_timewait_tracking"),
        [(l(&[("method", "kernel")]), 1.0)]
    );
    assert_eq!(
        one("tcpstate_http_rejected_connections_total"),
        [
            (l(&[("reason", "evicted")]), 23.0),
            (l(&[("reason", "busy")]), 22.0),
        ]
    );
    assert_eq!(
        one("tcpstate_timewait_ended_total"),
        [
            (l(&[("reason", "expired")]), 7.0),
            (l(&[("reason", "reused")]), 8.0),
            (l(&[("reason", "early")]), 9.0),
        ]
    );
    for (name, value) in [
        ("tcpstate_events_total", 20.0),
        ("tcpstate_events_invalid_total", 21.0),
        ("tcpstate_reconcile_corrections_total", 4.0),
        ("tcpstate_table_evictions_total", 6.0),
        ("tcpstate_tracked_sockets", 10.0),
    ] {
        assert_eq!(one(name), [(Vec::new(), value)], "{name}");
    }
    assert_eq!(
        one("tcpstate_close_wait_leaked_sockets"),
        [(l(&[("comm", "nginx")]), 3.0)]
    );
    let sockets = one("tcpstate_sockets");
    assert_eq!(sockets.len(), GAUGED_STATES.len());
    assert!(sockets.contains(&(l(&[("state", "ESTABLISHED")]), 5.0)));
    assert!(sockets.contains(&(l(&[("state", "CLOSE_WAIT")]), 2.0)));
    assert!(sockets.contains(&(l(&[("state", "LISTEN")]), 0.0)));
    let durations = one("tcpstate_state_duration_seconds");
    assert!(durations.contains(&(l(&[("state", "SYN_SENT")]), 1.0)));
    assert!(durations.contains(&(l(&[("state", "ESTABLISHED")]), 0.0)));
}

#[test]
fn socket_gauges_split_by_namespace_with_the_label() {
    let sockets = samples("tcpstate_sockets", &reading(true));
    assert_eq!(sockets.len(), 2 * GAUGED_STATES.len());
    let b = NS_B.to_string();
    assert!(sockets.contains(&(l(&[("state", "LISTEN"), ("netns", &b)]), 1.0)));
    assert!(sockets.contains(&(l(&[("state", "ESTABLISHED"), ("netns", &b)]), 0.0)));
}

#[test]
fn socket_table_source_is_one_per_namespace_or_a_count_per_source() {
    let name = "tcpstate_socket_table_source";
    let mut r = reading(true);
    r.sources = vec![
        (4026531840, Source::Proc),
        (4026532300, Source::Proc),
        (4026532400, Source::SockDiag),
    ];
    assert_eq!(
        samples(name, &r),
        [
            (l(&[("source", "proc"), ("netns", "4026531840")]), 1.0),
            (l(&[("source", "proc"), ("netns", "4026532300")]), 1.0),
            (l(&[("source", "sock_diag"), ("netns", "4026532400")]), 1.0),
        ]
    );
    r.netns_label = false;
    assert_eq!(
        samples(name, &r),
        [
            (l(&[("source", "sock_diag")]), 1.0),
            (l(&[("source", "proc")]), 2.0),
        ]
    );
    // A source no namespace uses has no series.
    r.sources.truncate(2);
    assert_eq!(samples(name, &r), [(l(&[("source", "proc")]), 2.0)]);
    // Without any, the family is left out.
    r.sources.clear();
    assert!(family(name).collect(&r).is_none());
}
