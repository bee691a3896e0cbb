//! The kernel program's own log lines, forwarded into ours.
//!
//! The program reports its rare error paths (a bad load-time offset, a
//! failed read, a full ring buffer) with aya-log, at debug level, with the
//! value that failed; its counters stay the signal that is exported.
//! [`program_level`] is the level it is loaded with: below debug the
//! verifier drops those lines, so the program does not even format them.
//! [`forward`] reads them from the program's log ring buffer (`AYA_LOGS`)
//! and writes them to the `log` crate as `kernel: ...`.

use std::{
    io,
    os::fd::AsFd as _,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{Arc, Mutex, PoisonError},
};

use aya_log::EbpfLogger;
use log::{Log, Metadata, Record};
use tokio::{
    io::{Interest, unix::AsyncFd},
    task::JoinHandle,
};

use crate::kernel::probe::Probe;

/// aya-log's level for the program, from the level our log lets through
/// now (`--log-level`, or the most verbose `RUST_LOG` filter): the numbers
/// aya-log uses, 0 (off) to 5 (trace). It is fixed at load: raising
/// `--log-level` on SIGHUP does not reach the kernel until a restart.
pub fn program_level() -> u8 {
    level_number(log::max_level())
}

fn level_number(level: log::LevelFilter) -> u8 {
    use aya_log::Level;
    match level.to_level() {
        None => 0,
        Some(log::Level::Error) => Level::Error as u8,
        Some(log::Level::Warn) => Level::Warn as u8,
        Some(log::Level::Info) => Level::Info as u8,
        Some(log::Level::Debug) => Level::Debug as u8,
        Some(log::Level::Trace) => Level::Trace as u8,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KernelLogError {
    #[error("{0}")]
    Map(#[from] aya_log::Error),
    #[error("watching its ring buffer: {0}")]
    Watch(io::Error),
    #[error("no async runtime to watch it from")]
    NoRuntime,
}

/// Forwards the program's log lines while it lives; dropping it forwards
/// what is still waiting, then stops.
#[must_use = "dropping it stops forwarding the kernel program's log lines"]
pub struct KernelLog {
    forwarding: Option<(Arc<Mutex<Logger>>, JoinHandle<()>)>,
}

type Logger = EbpfLogger<Kernel>;

/// Starts forwarding the program's log lines. Call it once, from async
/// code (it watches the log ring buffer on the current runtime). A failure
/// is logged as a warning and is otherwise harmless: the counters still
/// say everything the lines would.
pub fn forward(probe: &mut Probe) -> KernelLog {
    match start(probe) {
        Ok(log) => log,
        Err(e) => {
            log::warn!("the kernel program's debug lines will not be shown: {e}");
            KernelLog { forwarding: None }
        }
    }
}

fn start(probe: &mut Probe) -> Result<KernelLog, KernelLogError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(KernelLogError::NoRuntime);
    }
    let logger = probe.take_logger(Kernel)?;
    // tokio gets its own descriptor of the ring buffer: readiness is the
    // ring buffer's, and the logger stays free to be locked and flushed.
    let fd = logger
        .as_fd()
        .try_clone_to_owned()
        .map_err(KernelLogError::Watch)?;
    // SAFETY: the AsyncFd owns the descriptor and keeps it open, unchanged,
    // for as long as it is registered.
    let ready = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
        .map_err(|e| KernelLogError::Watch(e.into_parts().1))?;
    let logger = Arc::new(Mutex::new(logger));
    let task = tokio::spawn({
        let logger = logger.clone();
        async move {
            while let Ok(mut guard) = ready.readable().await {
                flush(&logger);
                guard.clear_ready();
            }
        }
    });
    Ok(KernelLog {
        forwarding: Some((logger, task)),
    })
}

impl Drop for KernelLog {
    fn drop(&mut self) {
        if let Some((logger, task)) = self.forwarding.take() {
            task.abort();
            flush(&logger);
        }
    }
}

/// Writes every waiting line. aya-log unwraps its parse of each record; a
/// record it could not parse costs that record, not the daemon.
fn flush(logger: &Mutex<Logger>) {
    let mut logger = logger.lock().unwrap_or_else(PoisonError::into_inner);
    if catch_unwind(AssertUnwindSafe(|| logger.flush())).is_err() {
        log::warn!("a kernel log record could not be read; skipped");
    }
}

/// Hands the program's records to our logger, marked as the kernel's.
/// aya-log calls it for every record it reads, without the level check the
/// `log` macros make, so it is made here.
struct Kernel;

impl Log for Kernel {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level() && log::logger().enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        log::logger().log(
            &Record::builder()
                .args(format_args!("kernel: {}", record.args()))
                .level(record.level())
                .target(record.target())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build(),
        );
    }

    fn flush(&self) {
        log::logger().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_aya_logs_numbers() {
        assert_eq!(level_number(log::LevelFilter::Off), 0);
        assert_eq!(level_number(log::LevelFilter::Error), 1);
        assert_eq!(level_number(log::LevelFilter::Info), 3);
        assert_eq!(level_number(log::LevelFilter::Debug), 4);
        assert_eq!(level_number(log::LevelFilter::Trace), 5);
        // aya-log-ebpf logs a line when its level is at most the global one.
        assert!(aya_log::Level::Debug as u8 > level_number(log::LevelFilter::Info));
    }
}
