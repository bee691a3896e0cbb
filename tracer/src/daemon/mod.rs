//! `tracer daemon`: attach, seed the socket table from sock_diag, follow
//! every transition, reconcile timewait sockets on an interval, and serve
//! the state over HTTP (metrics and a JSON snapshot).
//!
//! Start-up order matters for exactness: the program is attached first, so
//! no transition is missed; the dump runs while events are buffered; the
//! buffered events are then replayed over the dump by the engine, which
//! knows which of them the dump already saw.

mod allocator;
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
use tracer_common::TcpState;

use allocator::release_free_memory;

use crate::{
    engine::{Engine, EngineConfig, FullReconcile, Leak},
    kernel::clock::monotonic_ns,
    kernel::event::Transition,
    kernel::privileges,
    kernel::probe::{Probe, ProbeOptions},
    kernel::ringbuf::EventReader,
    serve::http::{
        self,
        listener::{LimitedListener, StreamLimits},
        web_config::WebSecurity,
    },
    serve::shared::{self, Shared},
    shutdown::Shutdown,
    sockets::sockdiag,
    sockets::{dump, sources},
};
use systemd::Notifier;

/// A full reconciliation at least this often, lost events or not.
const FULL_RECONCILE_EVERY: Duration = Duration::from_secs(300);

/// Timewait dumps may take at most 1/this of one core: after a dump that
/// took `d`, the next waits at least `d` times this. A dump is cheap for a
/// few thousand timewait sockets (every tick) and costs tens of
/// milliseconds for the 131,072 a busy server keeps (then every few
/// seconds); in between, entries leave at their timer.
const TIMEWAIT_DUMP_DUTY: u32 = 100;

/// Dumps that find the table right come less often: each one that fixes
/// nothing doubles the wait, up to this many times the paced one, and the
/// first that fixes something brings it back. Under steady churn the
/// events get every timewait socket right, and the dumps are insurance.
const TIMEWAIT_DUMP_BACKOFF: u32 = 8;

/// The backoff stretches the wait to at most this (a slow dump's own pace
/// may be longer): a timewait socket the events could not show, and a new
/// namespace's cap, are found within it.
const TIMEWAIT_DUMP_QUIET_MOST: Duration = Duration::from_secs(10);

/// Start-up dump chunks waiting for the table: a bound on what the dump
/// holds when it reads faster than the table is built.
const SEED_CHUNKS_QUEUED: usize = 4;

/// How late the kernel may reap a timewait socket after its 60 s timer:
/// the timer wheel rounds a 60 s timeout up by up to 4 s at HZ=1000.
const TIMEWAIT_TIMER_SLACK: Duration = Duration::from_secs(5);

/// Default address of the HTTP endpoint: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9840";

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
}

/// Re-reads the configuration (on SIGHUP): new options and log level.
pub type Reload = Arc<dyn Fn() -> Result<(DaemonOptions, log::LevelFilter), String> + Send + Sync>;

/// Loads and attaches the kernel side, then gives up every capability the
/// daemon no longer needs. Call it before the async runtime starts:
/// capabilities belong to threads, and later threads inherit the rest.
///
/// Kept, when present: CAP_SYS_PTRACE (the TIME_WAIT reconciliation reads
/// other namespaces' /proc/PID/net/tcp; the seed reads /proc/PID/fd) and
/// CAP_SYS_ADMIN (it enters other namespaces instead, where allowed).
/// Also sets how the allocator returns memory, before any thread exists.
pub fn load_and_drop_privileges(options: &DaemonOptions) -> anyhow::Result<Probe> {
    allocator::bound_retention();
    let probe = Probe::load(&options.probe)?;
    if let Some(id) = probe.program_id() {
        log::info!(
            "attached program {} (id {id}) to sock:inet_sock_set_state",
            probe.program_name()
        );
    }
    let keep = [privileges::CAP_SYS_PTRACE, privileges::CAP_SYS_ADMIN];
    match privileges::keep_only(&keep) {
        Ok(kept) => {
            let names: Vec<String> = kept.into_iter().map(privileges::cap_name).collect();
            log::info!(
                "attached; dropped every other capability, keeping: {}",
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            );
        }
        Err(e) => log::warn!("could not drop capabilities: {e}"),
    }
    // Parsing the kernel's BTF left megabytes freed but resident.
    release_free_memory();
    Ok(probe)
}

/// Runs the daemon until SIGINT or SIGTERM.
pub async fn run(
    options: DaemonOptions,
    probe: Probe,
    web: WebSecurity,
    mut shutdown: Shutdown,
    reload: Option<Reload>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let shared = Arc::new(Shared::new(
        Engine::new(options.engine.clone()),
        options.interval,
        options.netns_label,
    ));
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

/// Attach, seed, then apply events until a signal.
async fn follow(
    mut options: DaemonOptions,
    mut probe: Probe,
    shared: &Arc<Shared>,
    shutdown: &mut Shutdown,
    started: Instant,
    notifier: &Notifier,
    reload: Option<Reload>,
) -> anyhow::Result<()> {
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let _kernel_log = crate::kernel::logs::forward(&mut probe);
    let mut reader = EventReader::new(probe.take_events()?).context("watching the ring buffer")?;
    shared.set_probe(probe);
    let mut batch: Vec<Transition> = Vec::with_capacity(4096);

    // The seed dump, with events buffered meanwhile. The table is built
    // from its chunks as they come, on the other core.
    if let Some((full, timewait)) = dump::expected_sockets() {
        shared.engine().reserve_seeds(full, timewait);
    }
    let (chunk_sender, mut chunks) = tokio::sync::mpsc::channel::<dump::Chunk>(SEED_CHUNKS_QUEUED);
    let mut seeding: JoinHandle<dump::Dump> =
        tokio::task::spawn_blocking(|| dump::stream_namespaces(sockdiag::ALL_STATES, chunk_sender));
    let mut seeded = 0;
    let mut seed_chunk = |chunk: dump::Chunk| {
        seeded += chunk.sockets.len();
        shared.engine().seed_part(chunk.sockets, chunk.read_ns);
    };
    let mut seed = loop {
        tokio::select! {
            signal = shutdown.wait() => {
                log::info!("{signal} during start-up; stopping");
                return Ok(());
            }
            dump = &mut seeding => break dump.context("start-up dump panicked")?,
            Some(chunk) = chunks.recv() => seed_chunk(chunk),
            read = reader.read(|bytes| decode_into(shared, bytes, &mut batch)) => {
                read.context("reading the ring buffer")?;
            }
        }
    };
    let finishing = Instant::now();
    // The dump has returned: every chunk it made is queued.
    while let Ok(chunk) = chunks.try_recv() {
        seed_chunk(chunk);
    }
    reader.drain_now(|bytes| decode_into(shared, bytes, &mut batch));
    for failure in &seed.failures {
        log::warn!("start-up dump skipped a namespace: {failure}");
    }
    record_sources(shared, std::mem::take(&mut seed.read_from), &seed.unread);
    {
        let mut engine = shared.engine();
        engine.set_timewait_caps(seed.timewait_caps.iter().copied());
        engine.seed_complete(seed.end_ns);
        for t in batch.drain(..) {
            engine.apply(&t);
        }
    }
    shared.set_ready();
    let status = format!(
        "{seeded} sockets in {} network namespaces seeded, in {} ms \
         (the dump {} ms, the table built alongside; then {} ms to finish \
         it and apply the events buffered meanwhile)",
        seed.namespaces,
        started.elapsed().as_millis(),
        seed.diag_ms,
        finishing.elapsed().as_millis()
    );
    log::info!("ready: {status}");
    notifier.ready(&status);
    // The seed was a dump too: the first timewait dump is paced by its cost.
    let seed_dump_cost = Duration::from_millis(seed.diag_ms).saturating_sub(seed.refused);
    drop(seed);
    release_free_memory();
    // Who owns the sockets found at start-up: a scan of /proc that takes
    // seconds with a million sockets, so it runs after ready.
    let owners_started = Instant::now();
    let mut owner_scan: Option<JoinHandle<_>> =
        Some(tokio::task::spawn_blocking(dump::socket_owners));

    let mut tick = ticker(options.interval);
    // Without a watchdog, an hour-long interval that never fires.
    let mut watchdog = ticker(Notifier::watchdog_interval().unwrap_or(Duration::from_secs(3600)));
    let watchdog_on = Notifier::watchdog_interval().is_some();
    let mut reconciling: Option<JoinHandle<dump::Dump>> = None;
    let mut rates = shared::RateTracker::default();
    // A full dump (every state) replaces the timewait one after lost events,
    // and now and then regardless.
    let mut full = false;
    let mut lost_at_last_full = 0;
    let mut last_full = Instant::now();
    // When the last dump started, and how long it took with its reconciliation.
    let mut last_dump = Instant::now();
    let mut last_dump_cost = seed_dump_cost;
    let mut dump_backoff = 1;
    loop {
        tokio::select! {
            signal = shutdown.wait() => {
                log::info!("{signal}: stopping");
                return Ok(());
            }
            read = reader.read(|bytes| decode_into(shared, bytes, &mut batch)) => {
                read.context("reading the ring buffer")?;
                shared.apply_batch(&mut batch);
            }
            _ = watchdog.tick(), if watchdog_on => notifier.watchdog(),
            owners = async { owner_scan.as_mut().expect("guarded by the precondition").await },
                if owner_scan.is_some() =>
            {
                owner_scan = None;
                let owners = owners.context("owner scan panicked")?;
                let named = shared.engine().assign_owners(&owners);
                drop(owners);
                release_free_memory();
                log::info!(
                    "owners of {named} sockets found at start-up named from /proc, in {} ms",
                    owners_started.elapsed().as_millis()
                );
            }
            _ = hangup.recv() => {
                let Some(reload) = &reload else { continue };
                match reload() {
                    Ok((new, level)) => {
                        if new.interval != options.interval {
                            tick = ticker(new.interval);
                        }
                        apply_reload(&options, &new, level, shared);
                        reload_web_security(&new, shared);
                        options = new;
                    }
                    Err(e) => log::error!("SIGHUP: configuration not reloaded: {e}"),
                }
            }
            _ = tick.tick() => {
                // One read of the kernel's counters serves both the loss
                // check and the rates.
                let (transitions, kernel) = shared.kernel_counters();
                let lost = kernel.lost_events();
                let needs_full = lost > lost_at_last_full || last_full.elapsed() >= FULL_RECONCILE_EVERY;
                let paced = last_dump.elapsed() >= timewait_dump_wait(last_dump_cost, dump_backoff);
                if reconciling.is_none() && (needs_full || paced) {
                    full = needs_full;
                    let mask = if full {
                        sockdiag::ALL_STATES
                    } else {
                        // sock_diag filters timewait sockets by their substate:
                        // orphaned FIN_WAIT2 ones only come with the FIN_WAIT2 bit.
                        sockdiag::state_mask(&[TcpState::TimeWait, TcpState::FinWait2])
                    };
                    if full {
                        lost_at_last_full = lost;
                        last_full = Instant::now();
                    }
                    last_dump = Instant::now();
                    shared.engine().timewait_dump_starting();
                    let skip = shared.sources().skip_sock_diag(monotonic_ns());
                    reconciling = Some(tokio::task::spawn_blocking(move || dump::dump_namespaces(mask, skip)));
                }
                let now = monotonic_ns();
                if reconciling.is_none() {
                    // Between dumps, timewait sockets leave when their timer
                    // (plus the kernel's slack) has run out.
                    let slack = TIMEWAIT_TIMER_SLACK.as_nanos() as u64;
                    shared.engine().expire_timewait(now.saturating_sub(slack));
                }
                for leak in shared.engine().sweep_leaks(now) {
                    log_leak(&leak);
                }
                rates.update(shared, &transitions);
            }
            dump = async { reconciling.as_mut().expect("guarded by the precondition").await },
                if reconciling.is_some() =>
            {
                reconciling = None;
                let mut dump = dump.context("timewait dump panicked")?;
                record_sources(shared, std::mem::take(&mut dump.read_from), &dump.unread);
                // Every event up to the end of the dump first.
                reader.drain_now(|bytes| decode_into(shared, bytes, &mut batch));
                shared.apply_batch(&mut batch);
                let mut engine = shared.engine();
                let mut fixed = false;
                if full {
                    let result = engine.reconcile_full(&dump.sockets, &dump.unread, dump.start_ns, dump.end_ns);
                    if result != FullReconcile::default() {
                        log::info!("full reconciliation fixed {result:?}");
                        fixed = true;
                    }
                }
                let result = engine.reconcile_timewait(
                    dump.sockets.iter().copied(),
                    &dump.unread,
                    dump.start_ns,
                    dump.end_ns,
                );
                engine.set_timewait_caps(dump.timewait_caps.iter().copied());
                drop(engine);
                if full {
                    drop(dump.sockets);
                    release_free_memory();
                }
                last_dump_cost = last_dump.elapsed().saturating_sub(dump.refused);
                if result.drift() > 0 {
                    fixed = true;
                    log::debug!("timewait reconciliation: {result:?}");
                }
                dump_backoff = if fixed {
                    1
                } else {
                    (dump_backoff * 2).min(TIMEWAIT_DUMP_BACKOFF)
                };
                for failure in &dump.failures {
                    log::debug!("timewait dump skipped a namespace: {failure}");
                }
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

/// How long after a timewait dump that took `cost` the next may start.
fn timewait_dump_wait(cost: Duration, backoff: u32) -> Duration {
    let paced = cost * TIMEWAIT_DUMP_DUTY;
    paced.max((paced * backoff).min(TIMEWAIT_DUMP_QUIET_MOST))
}

fn ticker(period: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// Reads the web config file (if any) at start-up: before capabilities
/// are dropped, so a key file only root may read is fine.
pub fn load_web_security(options: &DaemonOptions) -> anyhow::Result<WebSecurity> {
    match &options.web_config {
        None => Ok(WebSecurity::default()),
        Some(path) => WebSecurity::load(path).map_err(anyhow::Error::msg),
    }
}

/// Re-reads the web config file on SIGHUP (new certificates, new users);
/// on any error the one in force stays.
fn reload_web_security(options: &DaemonOptions, shared: &Shared) {
    match load_web_security(options) {
        Ok(web) => {
            log::info!("SIGHUP: web config: {}", web.describe());
            shared.web_security().set(web);
        }
        Err(e) => log::error!("SIGHUP: web config not reloaded, the old one stays: {e:#}"),
    }
}

/// Applies what can change live and says what needs a restart.
fn apply_reload(
    old: &DaemonOptions,
    new: &DaemonOptions,
    level: log::LevelFilter,
    shared: &Shared,
) {
    let live = [
        ("reconcile-interval", new.interval != old.interval),
        (
            "close-wait-threshold",
            new.engine.close_wait_threshold_ns != old.engine.close_wait_threshold_ns,
        ),
        (
            "max-sockets",
            new.engine.max_sockets != old.engine.max_sockets,
        ),
        ("leak-top-n", new.engine.leak_top_n != old.engine.leak_top_n),
        ("log-level", level != log::max_level()),
    ];
    let needs_restart = [
        ("listen", new.listen != old.listen),
        (
            "ring-buffer-size",
            new.probe.ring_buffer_bytes != old.probe.ring_buffer_bytes,
        ),
        ("btf", new.probe.btf_path != old.probe.btf_path),
        (
            "http-max-connections",
            new.http_max_connections != old.http_max_connections,
        ),
        (
            "http-idle-timeout",
            new.http_idle_timeout != old.http_idle_timeout,
        ),
        (
            "http-request-timeout",
            new.http_request_timeout != old.http_request_timeout,
        ),
        ("netns-label", new.netns_label != old.netns_label),
    ];
    let names = |list: &[(&'static str, bool)]| -> Vec<&'static str> {
        list.iter()
            .filter(|(_, differs)| *differs)
            .map(|(name, _)| *name)
            .collect()
    };
    let (changed, restart) = (names(&live), names(&needs_restart));
    log::set_max_level(level);
    shared.engine().set_config(new.engine.clone());
    log::info!(
        "SIGHUP: configuration reloaded; changed: {}",
        if changed.is_empty() {
            "nothing".to_owned()
        } else {
            changed.join(", ")
        }
    );
    if !restart.is_empty() {
        log::warn!(
            "SIGHUP: {} changed but only take effect after a restart",
            restart.join(", ")
        );
    }
}

fn decode_into(shared: &Shared, bytes: &[u8], batch: &mut Vec<Transition>) {
    shared.count_event();
    match Transition::decode(bytes) {
        Ok(t) => batch.push(t),
        Err(e) => {
            shared.count_invalid();
            log::warn!("skipping an event: {e}");
        }
    }
}

/// One structured line per socket that crosses the CLOSE_WAIT threshold.
fn log_leak(leak: &Leak) {
    log::warn!(
        "close_wait_leak pid={} comm={} netns={} local={} remote={} age_seconds={:.1}",
        leak.pid,
        leak.comm
            .map(|c| c.to_string())
            .unwrap_or_else(|| "?".to_owned()),
        leak.netns,
        leak.local,
        leak.remote,
        leak.age_ns as f64 / 1e9
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timewait_dumps_back_off_within_bounds() {
        let ms = Duration::from_millis;
        // 1 % of a core, then up to 8 times less, but not past 10 s...
        assert_eq!(timewait_dump_wait(ms(5), 1), ms(500));
        assert_eq!(timewait_dump_wait(ms(5), 8), ms(4_000));
        assert_eq!(timewait_dump_wait(ms(25), 8), ms(10_000));
        // ...unless the dump alone asks for more.
        assert_eq!(timewait_dump_wait(ms(200), 8), ms(20_000));
    }
}
