//! Start-up: load and attach the kernel side, give up privileges, then
//! seed the socket table from a dump of every namespace while events are
//! buffered.
//!
//! Order matters for exactness: the program is attached first, so no
//! transition is missed; the dump runs while events are buffered; the
//! buffered events are then replayed over the dump by the engine, which
//! knows which of them the dump already saw.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::task::JoinHandle;

use crate::{
    engine::TimerWheel,
    kernel::{clock::Jiffies, event::Record, privileges, probe::Probe, ringbuf::EventReader},
    serve::shared::Shared,
    shutdown::Shutdown,
    sockets::{dump, sockdiag},
};

use super::{DaemonOptions, allocator, decode_into, record_sources, systemd::Notifier};

/// The longest the kernel's timer wheel runs a 60 s timer late: one
/// bucket of 512 ticks at HZ 100.
const WORST_WHEEL_DELAY: Duration = Duration::from_millis(5_120);

/// Start-up dump chunks waiting for the table: a bound on what the dump
/// holds when it reads faster than the table is built.
const SEED_CHUNKS_QUEUED: usize = 4;

/// Loads and attaches the kernel side, then gives up every capability the
/// daemon no longer needs. Call it before the async runtime starts:
/// capabilities belong to threads, and later threads inherit the rest.
///
/// Kept, when present: CAP_SYS_PTRACE (the TIME_WAIT reconciliation reads
/// other namespaces' /proc/PID/net/tcp; the seed reads /proc/PID/fd) and
/// CAP_SYS_ADMIN (it enters other namespaces instead, where allowed).
/// Also sets how the allocator returns memory, before any thread exists.
pub fn load_and_drop_privileges(options: &DaemonOptions) -> anyhow::Result<Attached> {
    allocator::bound_retention();
    let probe = Probe::load(&options.probe)?;
    // /proc/timer_list is root's: read while the capabilities last.
    let timer_wheel = timer_wheel();
    if let Some(id) = probe.program_id() {
        log::info!(
            "attached program {} (id {id}) to sock:inet_sock_set_state",
            probe.program_name()
        );
    }
    log::info!("timewait sockets: {}", probe.timewait_tracking());
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
    allocator::release_free_memory();
    Ok(Attached { probe, timer_wheel })
}

/// What start-up takes from the kernel while it has the privileges.
pub struct Attached {
    pub probe: Probe,
    /// How timewait sockets' ends are dated.
    pub timer_wheel: TimerWheel,
}

/// What the start-up dump did.
pub struct Seeded {
    /// Sockets it found.
    sockets: usize,
    dump: dump::Dump,
    /// When the dump returned; the table was finished after it.
    finishing: Instant,
}

/// Seeds the table from a dump of every namespace, building it from the
/// dump's chunks as they come (on the other core) while the ring buffer's
/// events are buffered in `batch`, then applies those. None when a signal
/// came first.
pub async fn seed(
    shared: &Shared,
    reader: &mut EventReader,
    batch: &mut Vec<Record>,
    shutdown: &mut Shutdown,
) -> anyhow::Result<Option<Seeded>> {
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
                return Ok(None);
            }
            dump = &mut seeding => break dump.context("start-up dump panicked")?,
            Some(chunk) = chunks.recv() => seed_chunk(chunk),
            read = reader.read(|bytes| decode_into(shared, bytes, batch)) => {
                read.context("reading the ring buffer")?;
            }
        }
    };
    let finishing = Instant::now();
    // The dump has returned: every chunk it made is queued.
    while let Ok(chunk) = chunks.try_recv() {
        seed_chunk(chunk);
    }
    reader.drain_now(|bytes| decode_into(shared, bytes, batch));
    for failure in &seed.failures {
        log::warn!("start-up dump skipped a namespace: {failure}");
    }
    record_sources(shared, std::mem::take(&mut seed.read_from), &seed.unread);
    shared.set_listeners(&seed.listeners_read, std::mem::take(&mut seed.listeners));
    let mut engine = shared.engine();
    engine.set_timewait_caps(seed.timewait_caps.iter().copied());
    engine.set_port_settings(seed.port_settings.iter().copied());
    engine.seed_complete(seed.end_ns);
    for t in batch.drain(..) {
        engine.apply_record(&t);
    }
    drop(engine);
    Ok(Some(Seeded {
        sockets: seeded,
        dump: seed,
        finishing,
    }))
}

/// Marks the daemon ready and says so (log and systemd); returns what the
/// seed dump cost, to pace the first timewait dump.
pub fn announce_ready(
    shared: &Shared,
    notifier: &Notifier,
    seeded: Seeded,
    started: Instant,
) -> Duration {
    let Seeded {
        sockets: seeded,
        dump: seed,
        finishing,
    } = seeded;
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
    let cost = Duration::from_millis(seed.diag_ms).saturating_sub(seed.refused);
    drop(seed);
    allocator::release_free_memory();
    cost
}

/// How the engine dates timewait sockets' ends: from the kernel's jiffies
/// when `/proc/timer_list` can be read (root), else allowing the timer
/// wheel's worst delay. The log says which.
fn timer_wheel() -> TimerWheel {
    match Jiffies::read() {
        Ok(jiffies) => {
            log::info!(
                "timewait sockets end on the kernel's tick (HZ {}, jiffies from /proc/timer_list)",
                jiffies.hz
            );
            TimerWheel::Known(jiffies)
        }
        Err(e) => {
            log::info!(
                "timewait sockets end up to {} s after their timer between dumps: {e}",
                WORST_WHEEL_DELAY.as_secs_f64()
            );
            TimerWheel::Slack(WORST_WHEEL_DELAY.as_nanos() as u64)
        }
    }
}
