//! Ctrl-C and SIGTERM during a bench: the default action would end the
//! process at once, leaving raised sysctls behind. Instead the signal sets a
//! flag that every wait in the bench polls; the bench then returns an error
//! and the guards (processes, sysctls) undo everything on the way out.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::bail;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    INTERRUPTED.store(true, Ordering::SeqCst);
}

pub fn install() -> anyhow::Result<()> {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        let previous = unsafe {
            libc::signal(
                signal,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            )
        };
        if previous == libc::SIG_ERR {
            bail!("cannot install a handler for signal {signal}");
        }
    }
    Ok(())
}

/// An error once a stop signal arrived.
pub fn check() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted: cleaning up");
    }
    Ok(())
}

/// Sleeps, waking every 50 ms to notice a stop signal.
pub fn sleep(duration: Duration) -> anyhow::Result<()> {
    let until = Instant::now() + duration;
    loop {
        check()?;
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}
