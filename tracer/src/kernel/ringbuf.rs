//! Reading the kernel's event ring buffer from async code.
//!
//! The program wakes the reader only when enough data waits (see
//! [`crate::kernel::config::wakeup_bytes`]): a wake-up per event would cost more than
//! everything else together. What waits below that is collected every
//! [`DRAIN_INTERVAL`].

use std::{io, time::Duration};

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{Interest, unix::AsyncFd},
    time::{Interval, MissedTickBehavior},
};

/// Longest an event waits in the ring buffer when few arrive.
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(100);

/// The ring buffer, registered with tokio so waiting for events costs no
/// thread and no polling beyond the drain timer.
pub struct EventReader {
    ring: AsyncFd<RingBuf<MapData>>,
    drain: Interval,
}

impl EventReader {
    pub fn new(ring: RingBuf<MapData>) -> io::Result<EventReader> {
        // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged,
        // for as long as the AsyncFd owns the RingBuf.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        let mut drain = tokio::time::interval(DRAIN_INTERVAL);
        drain.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ok(EventReader { ring, drain })
    }

    /// Waits until the kernel signals data or the drain timer fires, then
    /// hands every waiting record to `f`. Returns how many records were
    /// read (at least one).
    pub async fn read(&mut self, mut f: impl FnMut(&[u8])) -> io::Result<usize> {
        loop {
            let n = tokio::select! {
                guard = self.ring.readable_mut() => {
                    let mut guard = guard?;
                    let n = drain(guard.get_inner_mut(), &mut f);
                    guard.clear_ready();
                    n
                }
                _ = self.drain.tick() => drain(self.ring.get_mut(), &mut f),
            };
            if n > 0 {
                return Ok(n);
            }
        }
    }

    /// Hands every record that is waiting now to `f`, without waiting.
    pub fn drain_now(&mut self, mut f: impl FnMut(&[u8])) -> usize {
        drain(self.ring.get_mut(), &mut f)
    }
}

fn drain(ring: &mut RingBuf<MapData>, f: &mut impl FnMut(&[u8])) -> usize {
    let mut n = 0;
    while let Some(item) = ring.next() {
        f(&item);
        n += 1;
    }
    n
}
