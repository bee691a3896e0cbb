//! Prometheus metrics: one collector that defines every family and reads
//! its values at scrape time, from the engine and from the kernel's
//! per-CPU counters. Nothing is copied on the event path; a scrape costs
//! the same with ten sockets or a million.

use std::{collections::HashMap, sync::Arc};

use prometheus::{
    Encoder as _, Registry, TextEncoder,
    core::{Collector, Desc},
    proto::{self, LabelPair, MetricFamily, MetricType},
};
use tracer_common::{STATE_SLOTS, TcpState, TransitionMatrix};

use crate::{
    engine::{EngineStats, Histogram},
    kernel::probe::KernelStats,
    serve::shared::Shared,
    sockets::sources::Source,
};

/// States with a socket gauge: every state a socket can be counted in
/// (CLOSE means gone; NEW_SYN_RECV never reaches the tracepoint).
pub const GAUGED_STATES: [TcpState; 10] = [
    TcpState::Established,
    TcpState::SynSent,
    TcpState::SynRecv,
    TcpState::FinWait1,
    TcpState::FinWait2,
    TcpState::TimeWait,
    TcpState::CloseWait,
    TcpState::LastAck,
    TcpState::Listen,
    TcpState::Closing,
];

/// Families that carry a `netns` label with `--netns-label true`.
const PER_NETNS: [&str; 2] = ["tcpstate_sockets", "tcpstate_socket_table_source"];

/// name, help, type, label names.
const FAMILIES: &[(&str, &str, MetricType, &[&str])] = &[
    (
        "tcpstate_sockets",
        "TCP sockets per state, all network namespaces (SYN_RECV: accepted sockets not yet established; half-open request sockets are not included).",
        MetricType::GAUGE,
        &["state"],
    ),
    (
        "tcpstate_transitions_total",
        "TCP state transitions since the daemon started, counted in the kernel (exact even when events are lost).",
        MetricType::COUNTER,
        &["from", "to"],
    ),
    (
        "tcpstate_state_duration_seconds",
        "Time sockets spent in a state, observed when they leave it (TIME_WAIT: until the timewait socket is destroyed).",
        MetricType::HISTOGRAM,
        &["state"],
    ),
    (
        "tcpstate_close_wait_leaked_sockets",
        "Sockets in CLOSE_WAIT for longer than the threshold, by owning process name (top N; the rest under [other]).",
        MetricType::GAUGE,
        &["comm"],
    ),
    (
        "tcpstate_events_total",
        "Transition events received from the kernel ring buffer.",
        MetricType::COUNTER,
        &[],
    ),
    (
        "tcpstate_events_lost_total",
        "Transition events the kernel could not deliver, by reason: ring_buffer_full (still counted in transitions), not_run (the program was busy on that CPU), read_failed.",
        MetricType::COUNTER,
        &["reason"],
    ),
    (
        "tcpstate_events_invalid_total",
        "Events received that could not be decoded.",
        MetricType::COUNTER,
        &[],
    ),
    (
        "tcpstate_reconcile_corrections_total",
        "Socket table entries fixed because an event or a sock_diag dump disagreed with it.",
        MetricType::COUNTER,
        &[],
    ),
    (
        "tcpstate_table_evictions_total",
        "Socket table entries evicted to stay under --max-sockets.",
        MetricType::COUNTER,
        &[],
    ),
    (
        "tcpstate_tracked_sockets",
        "Entries in the daemon's socket table (full and timewait sockets).",
        MetricType::GAUGE,
        &[],
    ),
    (
        "tcpstate_timewait_ended_total",
        "Timewait sockets that ended, by how: expired (timer), reused (a new connection took the four-tuple), early (vanished before the timer).",
        MetricType::COUNTER,
        &["reason"],
    ),
    (
        "tcpstate_http_rejected_connections_total",
        "HTTP connections closed because --http-max-connections were open, by reason: evicted (the one that had waited longest for a complete request, closed to let a newcomer in), busy (the newcomer, when every connection was being answered).",
        MetricType::COUNTER,
        &["reason"],
    ),
    (
        "tcpstate_socket_table_source",
        "Where the socket table of each network namespace was last read from (start-up and reconciliations): sock_diag (netlink, as ss), or proc (/proc/net/tcp: the kernel has no sock_diag for TCP, or the namespace cannot be entered). 1 per namespace; without the netns label, the number of namespaces.",
        MetricType::GAUGE,
        &["source"],
    ),
    (
        "tcpstate_build_info",
        "Build information; the value is always 1.",
        MetricType::GAUGE,
        &["version"],
    ),
];

/// Every metric family's name (histograms add `_bucket`, `_sum`, `_count`).
pub fn family_names() -> impl Iterator<Item = &'static str> {
    FAMILIES.iter().map(|(name, ..)| *name)
}

/// The registry served at /metrics.
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    pub fn new(shared: Arc<Shared>) -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        registry.register(Box::new(StateCollector::new(shared)?))?;
        Ok(Metrics { registry })
    }

    /// The text exposition format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut out = Vec::with_capacity(16 * 1024);
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

struct StateCollector {
    shared: Arc<Shared>,
    descs: Vec<Desc>,
}

impl StateCollector {
    fn new(shared: Arc<Shared>) -> Result<StateCollector, prometheus::Error> {
        let descs = FAMILIES
            .iter()
            .map(|(name, help, _, labels)| {
                let mut labels: Vec<String> = labels.iter().map(|l| (*l).to_owned()).collect();
                if PER_NETNS.contains(name) && shared.netns_label() {
                    labels.push("netns".to_owned());
                }
                Desc::new(
                    (*name).to_owned(),
                    (*help).to_owned(),
                    labels,
                    HashMap::new(),
                )
            })
            .collect::<Result<_, _>>()?;
        Ok(StateCollector { shared, descs })
    }
}

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(k, v)| {
            let mut l = LabelPair::default();
            l.set_name((*k).to_owned());
            l.set_value((*v).to_owned());
            l
        })
        .collect()
}

fn gauge(value: f64, pairs: &[(&str, &str)]) -> proto::Metric {
    let mut g = proto::Gauge::default();
    g.set_value(value);
    let mut m = proto::Metric::from_gauge(g);
    m.set_label(labels(pairs));
    m
}

fn counter(value: u64, pairs: &[(&str, &str)]) -> proto::Metric {
    let mut c = proto::Counter::default();
    c.set_value(value as f64);
    let mut m = proto::Metric::default();
    m.set_counter(c);
    m.set_label(labels(pairs));
    m
}

fn histogram(h: &Histogram, pairs: &[(&str, &str)]) -> proto::Metric {
    let mut p = proto::Histogram::default();
    p.set_sample_count(h.count());
    p.set_sample_sum(h.sum_seconds());
    p.set_bucket(
        h.cumulative()
            .map(|(le, n)| {
                let mut b = proto::Bucket::default();
                b.set_upper_bound(le);
                b.set_cumulative_count(n);
                b
            })
            .collect(),
    );
    let mut m = proto::Metric::default();
    m.set_histogram(p);
    m.set_label(labels(pairs));
    m
}

/// What one scrape reads, taken under the locks and released before the
/// families are built.
struct Reading {
    counts: [u64; STATE_SLOTS],
    /// Per namespace, when the netns label is on.
    by_netns: Vec<(u32, [u64; STATE_SLOTS])>,
    durations: Vec<Histogram>,
    leaks: Vec<(String, u64)>,
    stats: EngineStats,
    tracked: usize,
    transitions: TransitionMatrix,
    kernel: KernelStats,
    /// Each namespace's source, by inode.
    sources: Vec<(u32, Source)>,
}

impl StateCollector {
    fn read(&self) -> Reading {
        let (counts, by_netns, durations, leaks, stats, tracked) = {
            let engine = self.shared.engine();
            let by_netns = if self.shared.netns_label() {
                let mut v: Vec<(u32, [u64; STATE_SLOTS])> = engine
                    .counts_by_netns()
                    .iter()
                    .map(|(k, v)| (*k, *v))
                    .collect();
                v.sort_by_key(|(k, _)| *k);
                v
            } else {
                Vec::new()
            };
            (
                *engine.counts(),
                by_netns,
                engine.durations().to_vec(),
                engine.leak_summary().by_comm.clone(),
                engine.stats(),
                engine.tracked(),
            )
        };
        let (transitions, kernel) = self.shared.kernel_counters();
        let sources = self.shared.sources().series();
        Reading {
            counts,
            by_netns,
            durations,
            leaks,
            stats,
            tracked,
            transitions,
            kernel,
            sources,
        }
    }
}

/// `tcpstate_socket_table_source`: 1 per namespace with the netns label;
/// without it one series per source in use, counting its namespaces, so
/// the series stay as few as the socket gauges' are.
fn source_series(sources: &[(u32, Source)], netns_label: bool) -> Vec<proto::Metric> {
    if netns_label {
        return sources
            .iter()
            .map(|(ns, source)| {
                gauge(
                    1.0,
                    &[("source", source.name()), ("netns", &ns.to_string())],
                )
            })
            .collect();
    }
    [Source::SockDiag, Source::Proc]
        .into_iter()
        .filter_map(|source| {
            let n = sources.iter().filter(|(_, s)| *s == source).count();
            (n > 0).then(|| gauge(n as f64, &[("source", source.name())]))
        })
        .collect()
}

impl Collector for StateCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let r = self.read();
        let mut values: Vec<Vec<proto::Metric>> = vec![
            if self.shared.netns_label() {
                r.by_netns
                    .iter()
                    .flat_map(|(ns, counts)| {
                        let ns = ns.to_string();
                        GAUGED_STATES.iter().map(move |s| {
                            gauge(
                                counts[usize::from(s.number())] as f64,
                                &[("state", s.name()), ("netns", &ns)],
                            )
                        })
                    })
                    .collect()
            } else {
                GAUGED_STATES
                    .iter()
                    .map(|s| {
                        gauge(
                            r.counts[usize::from(s.number())] as f64,
                            &[("state", s.name())],
                        )
                    })
                    .collect()
            },
            r.transitions
                .nonzero()
                .map(|(from, to, n)| counter(n, &[("from", from.name()), ("to", to.name())]))
                .collect(),
            GAUGED_STATES
                .iter()
                .map(|s| {
                    histogram(
                        &r.durations[usize::from(s.number())],
                        &[("state", s.name())],
                    )
                })
                .collect(),
            r.leaks
                .iter()
                .map(|(comm, n)| gauge(*n as f64, &[("comm", comm)]))
                .collect(),
            vec![counter(self.shared.events_received(), &[])],
            vec![
                counter(r.kernel.ringbuf_full, &[("reason", "ring_buffer_full")]),
                counter(r.kernel.recursion_misses, &[("reason", "not_run")]),
                counter(
                    r.kernel.record_read_failed + r.kernel.bad_config,
                    &[("reason", "read_failed")],
                ),
            ],
            vec![counter(self.shared.events_invalid(), &[])],
            vec![counter(r.stats.corrections, &[])],
            vec![counter(r.stats.evictions, &[])],
            vec![gauge(r.tracked as f64, &[])],
            vec![
                counter(r.stats.timewait_expired, &[("reason", "expired")]),
                counter(r.stats.timewait_reused, &[("reason", "reused")]),
                counter(r.stats.timewait_ended_early, &[("reason", "early")]),
            ],
            {
                let (busy, evicted) = self.shared.http_rejected();
                vec![
                    counter(evicted, &[("reason", "evicted")]),
                    counter(busy, &[("reason", "busy")]),
                ]
            },
            source_series(&r.sources, self.shared.netns_label()),
            vec![gauge(1.0, &[("version", env!("CARGO_PKG_VERSION"))])],
        ];
        debug_assert_eq!(values.len(), FAMILIES.len(), "one value list per family");
        FAMILIES
            .iter()
            .zip(values.iter_mut())
            .filter(|(_, metrics)| !metrics.is_empty())
            .map(|((name, help, kind, _), metrics)| {
                let mut f = MetricFamily::default();
                f.set_name((*name).to_owned());
                f.set_help((*help).to_owned());
                f.set_field_type(*kind);
                f.set_metric(std::mem::take(metrics));
                f
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(metrics: &[proto::Metric]) -> Vec<(Vec<(String, String)>, f64)> {
        metrics
            .iter()
            .map(|m| {
                let labels = m
                    .get_label()
                    .iter()
                    .map(|l| (l.name().to_owned(), l.value().to_owned()))
                    .collect();
                (labels, m.get_gauge().get_value())
            })
            .collect()
    }

    #[test]
    fn socket_table_source_is_one_per_namespace_or_a_count_per_source() {
        let sources = [
            (4026531840, Source::Proc),
            (4026532300, Source::Proc),
            (4026532400, Source::SockDiag),
        ];
        let l = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert_eq!(
            rendered(&source_series(&sources, true)),
            [
                (l(&[("source", "proc"), ("netns", "4026531840")]), 1.0),
                (l(&[("source", "proc"), ("netns", "4026532300")]), 1.0),
                (l(&[("source", "sock_diag"), ("netns", "4026532400")]), 1.0),
            ]
        );
        assert_eq!(
            rendered(&source_series(&sources, false)),
            [
                (l(&[("source", "sock_diag")]), 1.0),
                (l(&[("source", "proc")]), 2.0),
            ]
        );
        // A source no namespace uses has no series.
        assert_eq!(
            rendered(&source_series(&sources[..2], false)),
            [(l(&[("source", "proc")]), 2.0)]
        );
        assert!(source_series(&[], false).is_empty());
    }
}
