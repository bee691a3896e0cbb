//! Prometheus metrics: one collector that defines every family and reads
//! its values at scrape time, from the engine and from the kernel's
//! per-CPU counters. Nothing is copied on the event path; a scrape costs
//! the same with ten sockets or a million.
//!
//! Each family is declared once, in [`FAMILIES`] (or, for how connections
//! end, in `endings`): its name, help, type and
//! label names beside the function that makes its samples, which give label
//! values in the order of those names (node_exporter's `typedDesc`). No
//! second list has to stay in step, so a reordering cannot mislabel a series.

use std::{collections::HashMap, sync::Arc};

use prometheus::{
    Encoder as _, Registry, TextEncoder,
    core::{Collector, Desc},
    proto::{self, LabelPair, MetricFamily, MetricType},
};
use tracer_common::{STATE_SLOTS, TcpState, TransitionMatrix};

use crate::{
    engine::{EngineStats, Histogram, endings::CloseCause, ports::PortUse},
    kernel::{probe::KernelStats, resets::ResetCounts},
    serve::{placed::Exported, shared::Shared},
    sockets::listeners::ListenerQueue,
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

/// One metric family, whole.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    /// Label names; each sample gives its values in this order.
    labels: &'static [&'static str],
    /// With `--netns-label true`, a `netns` label follows `labels`.
    per_netns: bool,
    /// The family's samples, from one scrape's reading. A family left
    /// without samples is not exported.
    samples: fn(&Reading, &mut Samples),
}

const FAMILIES: &[Family] = &[
    Family {
        name: "tcpstate_sockets",
        help: "TCP sockets per state, all network namespaces (SYN_RECV: accepted sockets not yet established; half-open request sockets are not included).",
        kind: MetricType::GAUGE,
        labels: &["state"],
        per_netns: true,
        samples: |r, out| {
            if r.netns_label {
                for (ns, counts) in &r.by_netns {
                    let ns = ns.to_string();
                    for s in GAUGED_STATES {
                        out.add(counts[usize::from(s.number())] as f64, &[s.name(), &ns]);
                    }
                }
            } else {
                for s in GAUGED_STATES {
                    out.add(r.counts[usize::from(s.number())] as f64, &[s.name()]);
                }
            }
        },
    },
    Family {
        name: "tcpstate_transitions_total",
        help: "TCP state transitions since the daemon started, counted in the kernel (exact even when events are lost).",
        kind: MetricType::COUNTER,
        labels: &["from", "to"],
        per_netns: false,
        samples: |r, out| {
            for (from, to, n) in r.transitions.nonzero() {
                out.add(n as f64, &[from.name(), to.name()]);
            }
        },
    },
    Family {
        name: "tcpstate_state_duration_seconds",
        help: "Time sockets spent in a state, observed when they leave it (TIME_WAIT: until the timewait socket is destroyed).",
        kind: MetricType::HISTOGRAM,
        labels: &["state"],
        per_netns: false,
        samples: |r, out| {
            for s in GAUGED_STATES {
                if let Some(h) = r.durations.get(usize::from(s.number())) {
                    out.histogram(h, &[s.name()]);
                }
            }
        },
    },
    Family {
        name: "tcpstate_close_wait_leaked_sockets",
        help: "Sockets in CLOSE_WAIT for longer than the threshold, by owning process name (top N; the rest under [other]).",
        kind: MetricType::GAUGE,
        labels: &["comm"],
        per_netns: false,
        samples: |r, out| {
            for (comm, n) in &r.leaks {
                out.add(*n as f64, &[comm]);
            }
        },
    },
    Family {
        name: "tcpstate_events_total",
        help: "Transition events received from the kernel ring buffer.",
        kind: MetricType::COUNTER,
        labels: &[],
        per_netns: false,
        samples: |r, out| out.add(r.events_received as f64, &[]),
    },
    Family {
        name: "tcpstate_events_lost_total",
        help: "Transition events the kernel could not deliver, by reason: ring_buffer_full (still counted in transitions), not_run (the program was busy on that CPU), read_failed.",
        kind: MetricType::COUNTER,
        labels: &["reason"],
        per_netns: false,
        samples: |r, out| {
            let k = &r.kernel;
            out.add(k.ringbuf_full as f64, &["ring_buffer_full"]);
            out.add(k.recursion_misses as f64, &["not_run"]);
            out.add(
                (k.record_read_failed + k.bad_config) as f64,
                &["read_failed"],
            );
        },
    },
    Family {
        name: "tcpstate_timewait_records_lost_total",
        help: "Records of timewait sockets' lives (made, substate changed, gone) the kernel's timewait programs could not deliver (ring buffer full, socket unreadable); the next dump corrects what they would have said. Always 0 where timewait sockets are predicted (tcpstate_timewait_tracking).",
        kind: MetricType::COUNTER,
        labels: &[],
        per_netns: false,
        samples: |r, out| out.add(r.kernel.timewait_records_lost as f64, &[]),
    },
    Family {
        name: "tcpstate_timewait_tracking",
        help: "How timewait sockets are known, value 1: method kernel (the kernel's timewait programs report each one's start, substate change and end: exact without dumps), or predicted (from each close, where the kernel refuses tracing programs; dumps correct them every few seconds).",
        kind: MetricType::GAUGE,
        labels: &["method"],
        per_netns: false,
        samples: |r, out| {
            if let Some(method) = r.timewait_tracking {
                out.add(1.0, &[method]);
            }
        },
    },
    Family {
        name: "tcpstate_events_invalid_total",
        help: "Events received that could not be decoded.",
        kind: MetricType::COUNTER,
        labels: &[],
        per_netns: false,
        samples: |r, out| out.add(r.events_invalid as f64, &[]),
    },
    Family {
        name: "tcpstate_reconcile_corrections_total",
        help: "Socket table entries fixed because an event or a sock_diag dump disagreed with it.",
        kind: MetricType::COUNTER,
        labels: &[],
        per_netns: false,
        samples: |r, out| out.add(r.stats.corrections as f64, &[]),
    },
    Family {
        name: "tcpstate_table_evictions_total",
        help: "Socket table entries evicted to stay under --max-sockets.",
        kind: MetricType::COUNTER,
        labels: &[],
        per_netns: false,
        samples: |r, out| out.add(r.stats.evictions as f64, &[]),
    },
    Family {
        name: "tcpstate_tracked_sockets",
        help: "Entries in the daemon's socket table (full and timewait sockets).",
        kind: MetricType::GAUGE,
        labels: &[],
        per_netns: false,
        samples: |r, out| out.add(r.tracked as f64, &[]),
    },
    Family {
        name: "tcpstate_timewait_ended_total",
        help: "Timewait sockets that ended, by how: expired (timer), reused (a new connection took the four-tuple), early (vanished before the timer).",
        kind: MetricType::COUNTER,
        labels: &["reason"],
        per_netns: false,
        samples: |r, out| {
            out.add(r.stats.timewait_expired as f64, &["expired"]);
            out.add(r.stats.timewait_reused as f64, &["reused"]);
            out.add(r.stats.timewait_ended_early as f64, &["early"]);
        },
    },
    Family {
        name: "tcpstate_http_rejected_connections_total",
        help: "HTTP connections closed because --http-max-connections were open, by reason: evicted (the one that had waited longest for a complete request, closed to let a newcomer in), busy (the newcomer, when every connection was being answered).",
        kind: MetricType::COUNTER,
        labels: &["reason"],
        per_netns: false,
        samples: |r, out| {
            out.add(r.http_evicted as f64, &["evicted"]);
            out.add(r.http_busy as f64, &["busy"]);
        },
    },
    Family {
        name: "tcpstate_socket_table_source",
        help: "Where the socket table of each network namespace was last read from (start-up and reconciliations): sock_diag (netlink, as ss), or proc (/proc/net/tcp: the kernel has no sock_diag for TCP, or the namespace cannot be entered). 1 per namespace; without the netns label, the number of namespaces.",
        kind: MetricType::GAUGE,
        labels: &["source"],
        per_netns: true,
        samples: source_samples,
    },
    Family {
        name: "tcpstate_build_info",
        help: "Build information; the value is always 1.",
        kind: MetricType::GAUGE,
        labels: &["version"],
        per_netns: false,
        samples: |_, out| out.add(1.0, &[env!("CARGO_PKG_VERSION")]),
    },
];

/// `tcpstate_socket_table_source`: 1 per namespace with the netns label;
/// without it one series per source in use, counting its namespaces, so
/// the series stay as few as the socket gauges' are.
fn source_samples(r: &Reading, out: &mut Samples) {
    if r.netns_label {
        for (ns, source) in &r.sources {
            out.add(1.0, &[source.name(), &ns.to_string()]);
        }
        return;
    }
    for source in [Source::SockDiag, Source::Proc] {
        let n = r.sources.iter().filter(|(_, s)| *s == source).count();
        if n > 0 {
            out.add(n as f64, &[source.name()]);
        }
    }
}

/// Every metric family, in the order /metrics lists them.
fn families() -> impl Iterator<Item = &'static Family> {
    FAMILIES
        .iter()
        .chain(endings::FAMILIES)
        .chain(listeners::FAMILIES)
        .chain(ports::FAMILIES)
        .chain(retransmits::FAMILIES)
}

/// Every metric family's name (histograms add `_bucket`, `_sum`, `_count`).
pub fn family_names() -> impl Iterator<Item = &'static str> {
    families().map(|f| f.name)
}

impl Family {
    /// Label names in the order samples give their values.
    fn label_names(&self, netns_label: bool) -> Vec<&'static str> {
        let mut names = self.labels.to_vec();
        if self.per_netns && netns_label {
            names.push("netns");
        }
        names
    }

    fn desc(&self, netns_label: bool) -> Result<Desc, prometheus::Error> {
        let labels = self.label_names(netns_label);
        Desc::new(
            self.name.to_owned(),
            self.help.to_owned(),
            labels.into_iter().map(str::to_owned).collect(),
            HashMap::new(),
        )
    }

    /// The family with its samples from `reading`; None when it has none.
    fn collect(&self, reading: &Reading) -> Option<MetricFamily> {
        let mut samples = Samples {
            kind: self.kind,
            names: self.label_names(reading.netns_label),
            metrics: Vec::new(),
        };
        (self.samples)(reading, &mut samples);
        if samples.metrics.is_empty() {
            return None;
        }
        let mut f = MetricFamily::default();
        f.set_name(self.name.to_owned());
        f.set_help(self.help.to_owned());
        f.set_field_type(self.kind);
        f.set_metric(samples.metrics);
        Some(f)
    }
}

/// One family's samples as its function makes them: each is typed and
/// labelled by the family it belongs to.
struct Samples {
    kind: MetricType,
    names: Vec<&'static str>,
    metrics: Vec<proto::Metric>,
}

impl Samples {
    /// A counter or gauge sample, as the family's type says, with label
    /// values in the order of its label names.
    fn add(&mut self, value: f64, values: &[&str]) {
        let mut m = proto::Metric::default();
        if self.kind == MetricType::COUNTER {
            let mut c = proto::Counter::default();
            c.set_value(value);
            m.set_counter(c);
        } else {
            let mut g = proto::Gauge::default();
            g.set_value(value);
            m.set_gauge(g);
        }
        m.set_label(self.labels(values));
        self.metrics.push(m);
    }

    fn histogram(&mut self, h: &Histogram, values: &[&str]) {
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
        m.set_label(self.labels(values));
        self.metrics.push(m);
    }

    fn labels(&self, values: &[&str]) -> Vec<LabelPair> {
        self.names
            .iter()
            .zip(values)
            .map(|(name, value)| {
                let mut l = LabelPair::default();
                l.set_name((*name).to_owned());
                l.set_value((*value).to_owned());
                l
            })
            .collect()
    }
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
        let descs = families()
            .map(|f| f.desc(shared.netns_label()))
            .collect::<Result<_, _>>()?;
        Ok(StateCollector { shared, descs })
    }
}

/// What one scrape reads, taken under the locks and released before the
/// families are built.
struct Reading {
    netns_label: bool,
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
    /// How timewait sockets are known (the probe's), once attached.
    timewait_tracking: Option<&'static str>,
    /// Connect failures by destination (the placed ones) and reason, and
    /// those of every other destination.
    connect_failures: endings::ByDestination,
    /// Connections closed, by namespace and cause
    /// ([`crate::engine::endings::CloseCause`]).
    closed: Vec<(u32, [u64; CloseCause::ALL.len()])>,
    /// Resets counted in the kernel.
    resets: ResetCounts,
    /// Listeners' accept queues, and how many have a label of their own.
    listeners: Vec<ListenerQueue>,
    top_listeners: usize,
    /// The destinations with the fewest ephemeral ports left.
    ephemeral_ports: Vec<PortUse>,
    /// Retransmissions by remote end (connections opened here), by
    /// listener (connections accepted here), and SYN-ACK retransmissions
    /// by listener, as exported.
    retransmits: Exported,
    listener_retransmits: Exported,
    synack_retransmits: Exported,
    events_received: u64,
    events_invalid: u64,
    /// Connections closed at the HTTP cap: newcomers turned away, and older
    /// connections evicted to let newcomers in.
    http_busy: u64,
    http_evicted: u64,
}

impl Reading {
    /// The `netns` label value a sample of namespace `netns` carries:
    /// its inode with `--netns-label true`, empty (namespaces add up, and
    /// the label is not exported) without.
    fn netns_value(&self, netns: u32) -> String {
        if self.netns_label {
            netns.to_string()
        } else {
            String::new()
        }
    }
}

impl StateCollector {
    fn read(&self) -> Reading {
        let netns_label = self.shared.netns_label();
        let (counts, by_netns, durations, leaks, stats, tracked, endings, top_listeners, ports) = {
            let mut engine = self.shared.engine();
            let top = engine.config().top_destinations;
            let ports = engine.ephemeral_ports(top);
            let by_netns = if netns_label {
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
                engine.endings().clone(),
                top,
                ports,
            )
        };
        let (transitions, kernel) = self.shared.kernel_counters();
        let [retransmits, listener_retransmits, synack_retransmits] =
            self.shared.retransmits(top_listeners);
        let sources = self.shared.sources().series();
        let (http_busy, http_evicted) = self.shared.http_rejected();
        Reading {
            netns_label,
            counts,
            by_netns,
            durations,
            leaks,
            stats,
            tracked,
            transitions,
            kernel,
            sources,
            timewait_tracking: self.shared.timewait_tracking(),
            connect_failures: endings.connect_failures.values(),
            closed: endings.closed.into_iter().collect(),
            resets: self.shared.reset_counts(),
            listeners: self.shared.listeners(),
            top_listeners,
            ephemeral_ports: ports,
            retransmits,
            listener_retransmits,
            synack_retransmits,
            events_received: self.shared.events_received(),
            events_invalid: self.shared.events_invalid(),
            http_busy,
            http_evicted,
        }
    }
}

impl Collector for StateCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let reading = self.read();
        families().filter_map(|f| f.collect(&reading)).collect()
    }
}

mod endings;
mod listeners;
mod ports;
mod retransmits;
#[cfg(test)]
mod tests;
