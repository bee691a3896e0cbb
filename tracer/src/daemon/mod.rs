//! `tracer daemon`: attach, seed the socket table from sock_diag, follow
//! every transition, reconcile with the kernel's tables on a schedule, and
//! serve the state over HTTP (metrics and a JSON snapshot).
//!
//! * [`startup`]: load, attach, drop privileges, seed;
//! * [`follow`]: the event loop after start-up, over
//!   [`schedule`] (when to dump) and [`reload`] (SIGHUP);
//! * [`systemd`]: readiness and the watchdog.

mod allocator;
mod follow;
pub mod reload;
mod schedule;
pub mod startup;
pub mod systemd;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::{
    signal::unix::{SignalKind, signal},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

use crate::{
    cli::Effective,
    engine::{Engine, EngineConfig},
    kernel::{
        clock::monotonic_ns,
        event::Record,
        probe::{Probe, ProbeOptions},
        ringbuf::EventReader,
    },
    serve::{
        http::{
            self,
            listener::{LimitedListener, StreamLimits},
            web_config::WebSecurity,
        },
        shared::{RateTracker, Shared},
    },
    shutdown::Shutdown,
    sockets::{dump, sources},
};
use follow::Follow;
use schedule::DumpSchedule;
use systemd::Notifier;

#[derive(Debug, Clone)]
pub struct DaemonOptions {
    pub listen: SocketAddr,
    pub probe: ProbeOptions,
    pub engine: EngineConfig,
    /// Between timewait reconciliations, leak sweeps and rate updates.
    pub interval: Duration,
    /// HTTP connections served at once; more are closed on arrival.
    pub http_max_connections: usize,
    /// An HTTP connection idle this long is closed.
    pub http_idle_timeout: Duration,
    /// A request must arrive, and its answer start, within this.
    pub http_request_timeout: Duration,
    /// The exporter-style web config file (TLS, basic auth), if any.
    pub web_config: Option<PathBuf>,
    /// Split the socket gauges by network namespace.
    pub netns_label: bool,
    /// Every setting as given, to tell what a reload changed.
    pub settings: Effective,
}

/// Runs the daemon until SIGINT or SIGTERM.
pub async fn run(
    options: DaemonOptions,
    attached: startup::Attached,
    web: WebSecurity,
    mut shutdown: Shutdown,
    reload: Option<reload::Reload>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let startup::Attached { probe, timer_wheel } = attached;
    let mut engine = Engine::new(options.engine.clone());
    engine.set_timer_wheel(timer_wheel);
    engine.set_timewait_followed(probe.timewait_tracking().is_hooks());
    let shared = Arc::new(Shared::new(engine, options.interval, options.netns_label));
    let cancel = CancellationToken::new();

    // Serve first: /healthz answers during start-up and /readyz says 503.
    let listener = http::listener::bind(options.listen)
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    let local = listener.local_addr().context("listening socket")?;
    let listener = LimitedListener::new(
        listener,
        options.http_max_connections,
        StreamLimits {
            idle: options.http_idle_timeout,
            request: options.http_request_timeout,
        },
        shared.http_stats(),
    );
    let scheme = if web.tls.is_some() { "https" } else { "http" };
    log::info!("serving {scheme}://{local}/metrics ({})", web.describe());
    shared.web_security().set(web);
    let app = http::router(shared.clone()).context("setting up the metrics")?;
    let server = tokio::spawn(http::server::serve(
        listener,
        app,
        shared.web_security().clone(),
        // Requests in flight get a moment; the whole stop stays under 2 s.
        Duration::from_secs(1),
        cancel.clone(),
    ));

    let notifier = Notifier::from_env();
    let result = follow(
        options,
        probe,
        &shared,
        &mut shutdown,
        started,
        &notifier,
        reload,
    )
    .await;
    notifier.stopping();
    cancel.cancel();
    if let Err(e) = server.await {
        log::warn!("http server task: {e}");
    }
    if let Some(mut probe) = shared.take_probe() {
        probe.detach()?;
    }
    result
}

/// Seed, then apply events until a signal.
async fn follow(
    options: DaemonOptions,
    mut probe: Probe,
    shared: &Arc<Shared>,
    shutdown: &mut Shutdown,
    started: Instant,
    notifier: &Notifier,
    reload: Option<reload::Reload>,
) -> anyhow::Result<()> {
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let _kernel_log = crate::kernel::logs::forward(&mut probe);
    let mut reader = EventReader::new(probe.take_events()?).context("watching the ring buffer")?;
    shared.set_probe(probe);
    let mut batch: Vec<Record> = Vec::with_capacity(4096);
    let Some(seeded) = startup::seed(shared, &mut reader, &mut batch, shutdown).await? else {
        return Ok(());
    };
    let seed_cost = startup::announce_ready(shared, notifier, seeded, started);
    // Who owns the sockets found at start-up: a scan of /proc that takes
    // seconds with a million sockets, so it runs after ready.
    let owners_started = Instant::now();
    let mut owner_scan = Some(tokio::task::spawn_blocking(dump::socket_owners));
    let mut dumping: Option<JoinHandle<dump::Dump>> = None;
    // Without a watchdog, an hour-long interval that never fires.
    let watchdog_every = Notifier::watchdog_interval();
    let mut watchdog = ticker(watchdog_every.unwrap_or(Duration::from_secs(3600)));
    let mut run = Follow {
        shared,
        tick: ticker(options.interval),
        options,
        reader,
        batch,
        // The seed was a dump too: the first timewait dump is paced by its cost.
        schedule: DumpSchedule::new(Instant::now(), seed_cost),
        rates: RateTracker::default(),
        hidden: Default::default(),
        owner_check: None,
        last_owner_scan: None,
        pending_leaks: Vec::new(),
    };
    loop {
        tokio::select! {
            signal = shutdown.wait() => {
                log::info!("{signal}: stopping");
                return Ok(());
            }
            read = run.reader.read(|bytes| decode_into(shared, bytes, &mut run.batch)) => {
                read.context("reading the ring buffer")?;
                run.apply_events();
            }
            _ = watchdog.tick(), if watchdog_every.is_some() => notifier.watchdog(),
            owners = async { owner_scan.as_mut().expect("guarded by the precondition").await },
                if owner_scan.is_some() =>
            {
                owner_scan = None;
                run.on_owners(&owners.context("owner scan panicked")?, owners_started);
                release_free_memory();
            }
            _ = hangup.recv(), if reload.is_some() => {
                if let Some(reload) = &reload {
                    run.on_hangup(reload);
                }
            }
            _ = run.tick.tick() => {
                if let Some(started) = run.on_tick() {
                    dumping = Some(started);
                }
            }
            answers = async { run.owner_check.as_mut().expect("guarded by the precondition").await },
                if run.owner_check.is_some() =>
            {
                run.on_owner_check(&answers.context("owner check panicked")?);
            }
            dump = async { dumping.as_mut().expect("guarded by the precondition").await },
                if dumping.is_some() =>
            {
                dumping = None;
                run.on_dump(dump.context("timewait dump panicked")?);
            }
        }
    }
}

/// Notes where a dump read each namespace from, and logs what changed (a
/// fall-back to /proc/net/tcp is a warning, once per namespace).
fn record_sources(shared: &Shared, read: Vec<(u32, sources::ReadFrom)>, unread: &[u32]) {
    let notices = shared.sources().record(read, unread, monotonic_ns());
    for notice in notices {
        match notice {
            sources::Notice::Warn(text) => log::warn!("{text}"),
            sources::Notice::Info(text) => log::info!("{text}"),
        }
    }
}

fn ticker(period: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

fn decode_into(shared: &Shared, bytes: &[u8], batch: &mut Vec<Record>) {
    let decoded = Record::decode(bytes);
    // Transition events, as the kernel's transition counters count them;
    // timewait records are the engine's (`tcpstate_timewait_records_lost_total`).
    if !matches!(decoded, Ok(Record::Timewait(_))) {
        shared.count_event();
    }
    match decoded {
        Ok(t) => batch.push(t),
        Err(e) => {
            shared.count_invalid();
            log::warn!("skipping an event: {e}");
        }
    }
}

use allocator::release_free_memory;
