//! The daemon's event loop after start-up: apply every transition, tick
//! (leak sweep, rates, the dump schedule), reconcile with each dump, name
//! the start-up sockets' owners, reload on SIGHUP, feed the watchdog.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::task::JoinHandle;
use tracer_common::TcpState;

use crate::{
    engine::{FullReconcile, Leak, OwnerAnswer},
    kernel::{
        clock::monotonic_ns,
        event::{Comm, Record},
        ringbuf::EventReader,
    },
    serve::shared::{RateTracker, Shared},
    sockets::{dump, hidden::HiddenNamespaces, owners, sockdiag},
};

use super::{
    DaemonOptions,
    allocator::release_free_memory,
    decode_into, record_sources, reload,
    schedule::{DumpKind, DumpSchedule},
};

/// A check of owners may read every process's descriptors (as `ss -p`
/// does) at most this often; between, it reads the named owners and their
/// children.
const OWNER_SCAN_EVERY: Duration = Duration::from_secs(10);

/// A leak's log line waits at most this for its owner's check.
const LEAK_LOG_WAIT_MOST: Duration = Duration::from_secs(15);

/// The loop's state between its wake-ups.
pub struct Follow<'a> {
    pub shared: &'a Arc<Shared>,
    pub options: DaemonOptions,
    pub reader: EventReader,
    /// Events decoded from the ring buffer, not yet applied.
    pub batch: Vec<Record>,
    pub schedule: DumpSchedule,
    pub rates: RateTracker,
    pub tick: tokio::time::Interval,
    /// Namespaces no process has as its own, found by earlier dumps.
    pub hidden: Arc<Mutex<HiddenNamespaces>>,
    /// The check of leaked sockets' owners under way.
    pub owner_check: Option<JoinHandle<Vec<OwnerAnswer>>>,
    /// When the last check that could scan every process started.
    pub last_owner_scan: Option<Instant>,
    /// Leaks that crossed the threshold, waiting for their owner's check
    /// before their log line; when each crossed.
    pub pending_leaks: Vec<(Leak, Instant)>,
}

impl Follow<'_> {
    /// Events read: apply them.
    pub fn apply_events(&mut self) {
        self.shared.apply_batch(&mut self.batch);
    }

    /// A tick: maybe start a dump, expire timewait sockets between dumps,
    /// sweep leaks, update rates.
    pub fn on_tick(&mut self) -> Option<JoinHandle<dump::Dump>> {
        let shared = self.shared;
        // One read of the kernel's counters serves both the loss check and
        // the rates.
        let (transitions, kernel) = shared.kernel_counters();
        let started = self
            .schedule
            .due(
                Instant::now(),
                kernel.lost_events() + kernel.timewait_records_lost,
            )
            .map(|kind| {
                let mask = match kind {
                    DumpKind::Full => sockdiag::ALL_STATES,
                    // sock_diag filters timewait sockets by their substate:
                    // orphaned FIN_WAIT2 ones only come with the FIN_WAIT2 bit.
                    DumpKind::Timewait => {
                        sockdiag::state_mask(&[TcpState::TimeWait, TcpState::FinWait2])
                    }
                };
                let wanted = {
                    let mut engine = shared.engine();
                    engine.dump_starting();
                    // Namespaces with sockets: one left empty is not looked for.
                    let counts = engine.counts_by_netns();
                    let held = counts.iter().filter(|(_, c)| c.iter().any(|&n| n > 0));
                    held.map(|(&netns, _)| netns).collect()
                };
                let skip = shared.sources().skip_sock_diag(monotonic_ns());
                let hidden = self.hidden.clone();
                tokio::task::spawn_blocking(move || {
                    dump::dump_namespaces(mask, skip, wanted, hidden)
                })
            });
        let now = monotonic_ns();
        if self.schedule.running().is_none() {
            // Between dumps, timewait sockets leave when their timer runs.
            shared.engine().expire_timewait(now);
        }
        // A leak's line waits for its owner's check (a tick, or up to a
        // full /proc scan's pace).
        let fresh = shared.engine().sweep_leaks(now);
        self.pending_leaks
            .extend(fresh.into_iter().map(|leak| (leak, Instant::now())));
        self.log_settled_leaks(&HashSet::new());
        if self.owner_check.is_none() {
            self.start_owner_check(now);
        }
        self.rates.update(shared, &transitions);
        started
    }

    /// Asks /proc who holds the leaked sockets not checked yet.
    fn start_owner_check(&mut self, now_ns: u64) {
        let queries = self.shared.engine().owners_to_check(now_ns);
        if queries.is_empty() {
            return;
        }
        let scan_all = self
            .last_owner_scan
            .is_none_or(|at| at.elapsed() >= OWNER_SCAN_EVERY);
        if scan_all {
            self.last_owner_scan = Some(Instant::now());
        }
        let skip = self.shared.sources().skip_sock_diag(now_ns);
        let hidden = self.hidden.clone();
        self.owner_check = Some(tokio::task::spawn_blocking(move || {
            owners::check(&queries, scan_all, skip, hidden)
        }));
    }

    /// A check of owners returned.
    pub fn on_owner_check(&mut self, answers: &[OwnerAnswer]) {
        self.owner_check = None;
        self.shared.engine().check_owners(answers);
        let answered: HashSet<u64> = answers.iter().map(|a| a.id).collect();
        self.log_settled_leaks(&answered);
    }

    /// Logs the pending leaks whose owner is now checked, and those that
    /// waited long enough, with the owner the table now has.
    fn log_settled_leaks(&mut self, answered: &HashSet<u64>) {
        if self.pending_leaks.is_empty() {
            return; // every tick: no engine lock for nothing
        }
        let now = monotonic_ns();
        let engine = self.shared.engine();
        self.pending_leaks.retain(|(leak, since)| {
            let settled = answered.contains(&leak.id) || since.elapsed() >= LEAK_LOG_WAIT_MOST;
            if settled {
                let current = engine.leak_of(leak.id, now);
                log_leak(current.as_ref().unwrap_or(leak));
            }
            !settled
        });
    }

    /// A dump returned: reconcile the table with it, after every event up
    /// to its end.
    pub fn on_dump(&mut self, mut dump: dump::Dump) {
        let shared = self.shared;
        let full = self.schedule.running() == Some(DumpKind::Full);
        record_sources(shared, std::mem::take(&mut dump.read_from), &dump.unread);
        shared.set_listeners(&dump.listeners_read, std::mem::take(&mut dump.listeners));
        self.reader
            .drain_now(|bytes| decode_into(shared, bytes, &mut self.batch));
        shared.apply_batch(&mut self.batch);
        let mut engine = shared.engine();
        let mut fixed = false;
        if full {
            let result =
                engine.reconcile_full(&dump.sockets, &dump.unread, dump.start_ns, dump.end_ns);
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
        engine.set_port_settings(dump.port_settings.iter().copied());
        drop(engine);
        if full {
            drop(std::mem::take(&mut dump.sockets));
            release_free_memory();
        }
        if result.drift() > 0 {
            fixed = true;
            log::debug!("timewait reconciliation: {result:?}");
        }
        self.schedule.finished(Instant::now(), dump.refused, fixed);
        if dump.hidden_found > 0 {
            log::info!(
                "found {} network namespaces held only by a thread or a descriptor",
                dump.hidden_found
            );
        }
        // Only a full dump adds a found namespace's full sockets, and
        // removes those of one that is gone.
        if (dump.hidden_found > 0 || dump.namespaces_gone > 0) && !full {
            self.schedule.request_full();
        }
        for failure in &dump.failures {
            log::debug!("timewait dump skipped a namespace: {failure}");
        }
    }

    /// The start-up sockets' owners, from a scan of /proc.
    pub fn on_owners(&mut self, owners: &HashMap<u32, (u32, Comm)>, started: Instant) {
        let named = self.shared.engine().assign_owners(owners);
        log::info!(
            "owners of {named} sockets found at start-up named from /proc, in {} ms",
            started.elapsed().as_millis()
        );
    }

    /// SIGHUP: read the configuration again and apply what changes live.
    pub fn on_hangup(&mut self, reload: &reload::Reload) {
        match reload() {
            Ok((new, level)) => {
                if new.interval != self.options.interval {
                    self.tick = super::ticker(new.interval);
                }
                reload::apply(&self.options, &new, level, self.shared);
                self.options = new;
            }
            Err(e) => log::error!("SIGHUP: configuration not reloaded: {e}"),
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
