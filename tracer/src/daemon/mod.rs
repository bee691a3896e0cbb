//! `tracer daemon`: attach, seed the socket table from sock_diag, follow
//! every transition, reconcile timewait sockets on an interval, and serve
//! the state over HTTP (metrics and a JSON snapshot).
//!
//! Start-up order matters for exactness: the program is attached first, so
//! no transition is missed; the dump runs while events are buffered; the
//! buffered events are then replayed over the dump by the engine, which
//! knows which of them the dump already saw.

mod dump;
mod shared;

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tracer_common::TcpState;

pub use shared::Shared;

use crate::{
    clock::monotonic_ns,
    engine::{Engine, EngineConfig, Leak},
    event::Transition,
    http,
    probe::{Probe, ProbeOptions},
    ringbuf::EventReader,
    shutdown::Shutdown,
    sockdiag,
};

/// Default address of the HTTP endpoint: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9840";

#[derive(Debug, Clone)]
pub struct DaemonOptions {
    pub listen: SocketAddr,
    pub probe: ProbeOptions,
    pub engine: EngineConfig,
    /// Between timewait reconciliations, leak sweeps and rate updates.
    pub interval: Duration,
}

/// Runs the daemon until SIGINT or SIGTERM.
pub async fn run(options: DaemonOptions, mut shutdown: Shutdown) -> anyhow::Result<()> {
    let started = Instant::now();
    let shared = Arc::new(Shared::new(
        Engine::new(options.engine.clone()),
        options.interval,
    ));
    let cancel = CancellationToken::new();

    // Serve first: /healthz answers during start-up and /readyz says 503.
    let listener = TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    let local = listener.local_addr().context("listening socket")?;
    let server = tokio::spawn(http::serve(listener, shared.clone(), cancel.clone()));
    log::info!("serving http://{local}/metrics");

    let result = follow(&options, &shared, &mut shutdown, started).await;
    cancel.cancel();
    match tokio::time::timeout(Duration::from_secs(2), server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => log::warn!("http server: {e}"),
        Ok(Err(e)) => log::warn!("http server task: {e}"),
        Err(_) => log::warn!("http server did not stop within 2 s"),
    }
    if let Some(mut probe) = shared.take_probe() {
        probe.detach()?;
    }
    result
}

/// Attach, seed, then apply events until a signal.
async fn follow(
    options: &DaemonOptions,
    shared: &Arc<Shared>,
    shutdown: &mut Shutdown,
    started: Instant,
) -> anyhow::Result<()> {
    let mut probe = Probe::load(&options.probe)?;
    let mut reader = EventReader::new(probe.take_events()?).context("watching the ring buffer")?;
    shared.set_probe(probe);
    let mut batch: Vec<Transition> = Vec::with_capacity(4096);

    // The seed dump, with events buffered meanwhile.
    let mut seeding: JoinHandle<dump::Dump> =
        tokio::task::spawn_blocking(|| dump::dump_namespaces(sockdiag::ALL_STATES, true));
    let seed = loop {
        tokio::select! {
            signal = shutdown.wait() => {
                log::info!("{signal} during start-up; stopping");
                return Ok(());
            }
            dump = &mut seeding => break dump.context("start-up dump panicked")?,
            read = reader.read(|bytes| decode_into(shared, bytes, &mut batch)) => {
                read.context("reading the ring buffer")?;
            }
        }
    };
    reader.drain_now(|bytes| decode_into(shared, bytes, &mut batch));
    for failure in &seed.failures {
        log::warn!("start-up dump skipped a namespace: {failure}");
    }
    {
        let mut engine = shared.engine();
        engine.seed(seed.sockets.iter().copied(), seed.start_ns, seed.end_ns);
        for t in batch.drain(..) {
            engine.apply(&t);
        }
    }
    shared.set_ready();
    log::info!(
        "ready: {} sockets in {} network namespaces seeded, in {} ms",
        seed.sockets.len(),
        seed.namespaces,
        started.elapsed().as_millis()
    );

    let mut tick = tokio::time::interval(options.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reconciling: Option<JoinHandle<dump::Dump>> = None;
    let mut rates = shared::RateTracker::default();
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
            _ = tick.tick() => {
                if reconciling.is_none() {
                    // sock_diag filters timewait sockets by their substate:
                    // orphaned FIN_WAIT2 ones only come with the FIN_WAIT2 bit.
                    let mask = sockdiag::state_mask(&[TcpState::TimeWait, TcpState::FinWait2]);
                    reconciling = Some(tokio::task::spawn_blocking(move || dump::dump_namespaces(mask, false)));
                }
                let now = monotonic_ns();
                for leak in shared.engine().sweep_leaks(now) {
                    log_leak(&leak);
                }
                rates.update(shared);
            }
            dump = async { reconciling.as_mut().expect("guarded by the precondition").await },
                if reconciling.is_some() =>
            {
                reconciling = None;
                let dump = dump.context("timewait dump panicked")?;
                // Every event up to the end of the dump first.
                reader.drain_now(|bytes| decode_into(shared, bytes, &mut batch));
                shared.apply_batch(&mut batch);
                let result = shared
                    .engine()
                    .reconcile_timewait(dump.sockets.iter().copied(), dump.start_ns, dump.end_ns);
                if result.added + result.changed > 0 {
                    log::debug!("timewait reconciliation: {result:?}");
                }
                for failure in &dump.failures {
                    log::debug!("timewait dump skipped a namespace: {failure}");
                }
            }
        }
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
