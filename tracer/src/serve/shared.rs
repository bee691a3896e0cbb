//! State shared by the event loop and the HTTP handlers: the engine behind
//! a mutex (locked once per batch of events, and briefly per request), the
//! loaded probe for its kernel counters, and a few atomics.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tracer_common::TransitionMatrix;

use crate::sockets::sources::Sources;
use crate::{
    engine::Engine,
    kernel::clock::monotonic_ns,
    kernel::event::Record,
    kernel::probe::{KernelStats, Probe},
    kernel::resets::ResetCounts,
    serve::failing,
    serve::http::{listener::HttpStats, server::WebSecurityHandle},
    serve::metrics::GAUGED_STATES,
    serve::placed::{Exported, Placed},
    serve::snapshot::{
        DestinationEntry, EventCounts, LeakEntry, Snapshot, StateCount, TransitionRate,
    },
    sockets::listeners::ListenerQueue,
};

/// At most this many leaks and destinations in a snapshot.
const SNAPSHOT_LEAKS: usize = 1000;
const SNAPSHOT_DESTINATIONS: usize = 100;

pub struct Shared {
    engine: Mutex<Engine>,
    probe: Mutex<Option<Probe>>,
    started: Instant,
    interval: Duration,
    ready: AtomicBool,
    events: AtomicU64,
    invalid: AtomicU64,
    rates: Mutex<Rates>,
    hostname: String,
    http: Arc<HttpStats>,
    /// TLS and basic auth in force (SIGHUP replaces them).
    web_security: WebSecurityHandle,
    /// Socket gauges carry a `netns` label.
    netns_label: bool,
    /// Where each namespace's sockets are read from.
    sources: Mutex<Sources>,
    /// Each namespace's listeners and their accept queues, as the last
    /// dump that read the namespace saw them.
    listeners: Mutex<BTreeMap<u32, Vec<ListenerQueue>>>,
    /// Which remote ends and listeners have retransmission series.
    /// Data by remote end, data by listener, SYN-ACKs by listener.
    retransmit_places: Mutex<[Placed<(u32, SocketAddr)>; 3]>,
}

/// Per-second rates over the last interval.
#[derive(Debug, Clone, Default)]
struct Rates {
    transitions: Vec<TransitionRate>,
    events_per_second: f64,
}

/// Locks a mutex even if a panicking thread poisoned it: the data is
/// counters and a table that stay usable, and serving them beats dying.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".to_owned();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

impl Shared {
    pub fn new(engine: Engine, interval: Duration, netns_label: bool) -> Shared {
        Shared {
            netns_label,
            engine: Mutex::new(engine),
            probe: Mutex::new(None),
            started: Instant::now(),
            interval,
            ready: AtomicBool::new(false),
            events: AtomicU64::new(0),
            invalid: AtomicU64::new(0),
            rates: Mutex::new(Rates::default()),
            hostname: hostname(),
            http: Arc::new(HttpStats::default()),
            web_security: WebSecurityHandle::default(),
            sources: Mutex::new(Sources::default()),
            listeners: Mutex::new(BTreeMap::new()),
            retransmit_places: Mutex::new(Default::default()),
        }
    }

    pub fn engine(&self) -> MutexGuard<'_, Engine> {
        lock(&self.engine)
    }

    pub fn sources(&self) -> MutexGuard<'_, Sources> {
        lock(&self.sources)
    }

    pub fn netns_label(&self) -> bool {
        self.netns_label
    }

    pub fn http_stats(&self) -> Arc<HttpStats> {
        self.http.clone()
    }

    pub fn web_security(&self) -> &WebSecurityHandle {
        &self.web_security
    }

    /// Connections closed at the HTTP cap: (newcomers turned away, older
    /// connections evicted to let newcomers in).
    pub fn http_rejected(&self) -> (u64, u64) {
        (
            self.http.rejected.load(Ordering::Relaxed),
            self.http.evicted.load(Ordering::Relaxed),
        )
    }

    pub fn set_probe(&self, probe: Probe) {
        *lock(&self.probe) = Some(probe);
    }

    pub fn take_probe(&self) -> Option<Probe> {
        lock(&self.probe).take()
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn count_event(&self) {
        self.events.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_invalid(&self) {
        self.invalid.fetch_add(1, Ordering::Relaxed);
    }

    pub fn events_received(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    pub fn events_invalid(&self) -> u64 {
        self.invalid.load(Ordering::Relaxed)
    }

    /// Applies and empties a batch under one lock.
    pub fn apply_batch(&self, batch: &mut Vec<Record>) {
        if batch.is_empty() {
            return;
        }
        let mut engine = self.engine();
        for t in batch.drain(..) {
            engine.apply_record(&t);
        }
    }

    /// A dump's listeners: those of each namespace it read replace the
    /// earlier ones; namespaces it did not read keep theirs.
    pub fn set_listeners(&self, read: &[u32], found: Vec<ListenerQueue>) {
        let mut listeners = lock(&self.listeners);
        for netns in read {
            listeners.insert(*netns, Vec::new());
        }
        for l in found {
            listeners.entry(l.netns).or_default().push(l);
        }
        listeners.retain(|_, v| !v.is_empty());
        if let Some(probe) = lock(&self.probe).as_mut() {
            let ports = listeners
                .values()
                .flatten()
                .map(|l| (l.netns, l.local.port()));
            probe.mark_listening(ports);
        }
    }

    /// Every listener known, namespace by namespace.
    pub fn listeners(&self) -> Vec<ListenerQueue> {
        lock(&self.listeners).values().flatten().copied().collect()
    }

    /// Retransmissions counted in the kernel: data by remote end, data by
    /// listener and SYN-ACKs by listener, under at most `limit` labels each
    /// (see [`Placed`]).
    pub fn retransmits(&self, limit: usize) -> [Exported; 3] {
        let counts = lock(&self.probe)
            .as_ref()
            .map(|p| p.retransmit_counts())
            .unwrap_or_default();
        let now = Instant::now();
        let mut places = lock(&self.retransmit_places);
        let [data, served, synack] = &mut *places;
        [
            counts.data.map(|v| data.export(now, limit, &v)),
            counts.served.map(|v| served.export(now, limit, &v)),
            counts.synack.map(|v| synack.export(now, limit, &v)),
        ]
    }

    /// Resets counted in the kernel (none before attaching).
    pub fn reset_counts(&self) -> ResetCounts {
        lock(&self.probe)
            .as_ref()
            .map(|p| p.reset_counts())
            .unwrap_or_default()
    }

    /// How timewait sockets are known (a metric label), once attached.
    pub fn timewait_tracking(&self) -> Option<&'static str> {
        lock(&self.probe)
            .as_ref()
            .map(|p| p.timewait_tracking().name())
    }

    /// The kernel's transition counters and the program's own counters.
    pub fn kernel_counters(&self) -> (TransitionMatrix, KernelStats) {
        let probe = lock(&self.probe);
        let Some(probe) = probe.as_ref() else {
            return (TransitionMatrix::ZERO, KernelStats::default());
        };
        let transitions = probe.transition_counts().unwrap_or_else(|e| {
            log::warn!("reading kernel transition counters: {e}");
            TransitionMatrix::ZERO
        });
        let stats = probe.stats().unwrap_or_else(|e| {
            log::warn!("reading kernel statistics: {e}");
            KernelStats::default()
        });
        (transitions, stats)
    }

    /// The JSON snapshot.
    pub fn snapshot(&self) -> Snapshot {
        let now = monotonic_ns();
        let (
            sockets,
            leaks,
            leaked_total,
            destinations,
            stats,
            tracked,
            threshold_ns,
            endings,
            ports,
        ) = {
            let mut e = self.engine();
            let top = e.config().top_destinations;
            let ports = e.ephemeral_ports(top);
            let sockets = GAUGED_STATES
                .iter()
                .map(|s| StateCount {
                    state: s.name().to_owned(),
                    count: e.count(*s),
                })
                .collect::<Vec<_>>();
            let leaks = e
                .leaks(now, SNAPSHOT_LEAKS)
                .into_iter()
                .map(|l| LeakEntry {
                    pid: l.pid,
                    comm: l.comm.map(|c| c.to_string()).unwrap_or_default(),
                    netns: l.netns,
                    local: l.local.to_string(),
                    remote: l.remote.to_string(),
                    age_seconds: l.age_ns as f64 / 1e9,
                })
                .collect::<Vec<_>>();
            let destinations = e
                .timewait_by_destination(SNAPSHOT_DESTINATIONS)
                .into_iter()
                .map(|d| DestinationEntry {
                    remote: d.remote.to_string(),
                    netns: d.netns,
                    count: d.count,
                })
                .collect::<Vec<_>>();
            (
                sockets,
                leaks,
                e.leak_summary().total,
                destinations,
                e.stats(),
                e.tracked(),
                e.config().close_wait_threshold_ns,
                e.endings().clone(),
                ports,
            )
        };
        let failing = failing::failing(&endings, self.reset_counts(), self.listeners(), ports);
        let rates = lock(&self.rates).clone();
        let lost = self.kernel_counters().1.lost_events();
        Snapshot {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            hostname: self.hostname.clone(),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            ready: self.is_ready(),
            interval_seconds: self.interval.as_secs_f64(),
            sockets,
            transitions: rates.transitions,
            events: EventCounts {
                received: self.events_received(),
                lost,
                per_second: rates.events_per_second,
                corrections: stats.corrections,
                evictions: stats.evictions,
                tracked_sockets: tracked as u64,
            },
            close_wait_threshold_seconds: threshold_ns as f64 / 1e9,
            close_wait_leaks: leaks,
            close_wait_leaked_total: leaked_total,
            time_wait_by_destination: destinations,
            failing,
        }
    }
}

/// Turns counter samples into per-second rates, once per interval.
#[derive(Debug, Default)]
pub struct RateTracker {
    last: Option<(Instant, u64, TransitionMatrix)>,
}

impl RateTracker {
    /// `transitions` as [`Shared::kernel_counters`] gives them.
    pub fn update(&mut self, shared: &Shared, transitions: &TransitionMatrix) {
        let now = Instant::now();
        let events = shared.events_received();
        if let Some((then, then_events, then_totals)) = &self.last {
            let secs = now.duration_since(*then).as_secs_f64().max(1e-3);
            let mut list: Vec<TransitionRate> = transitions
                .nonzero()
                .map(|(from, to, n)| TransitionRate {
                    from: from.name().to_owned(),
                    to: to.name().to_owned(),
                    total: n,
                    per_second: n.saturating_sub(then_totals.get(from, to)) as f64 / secs,
                })
                .collect();
            list.sort_by(|a, b| {
                b.per_second
                    .total_cmp(&a.per_second)
                    .then(b.total.cmp(&a.total))
            });
            *lock(&shared.rates) = Rates {
                transitions: list,
                events_per_second: events.saturating_sub(*then_events) as f64 / secs,
            };
        }
        self.last = Some((now, events, *transitions));
    }
}
