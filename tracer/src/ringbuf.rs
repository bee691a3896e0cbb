//! Reading the kernel's event ring buffer from async code.

use std::io;

use aya::maps::{MapData, RingBuf};
use tokio::io::{Interest, unix::AsyncFd};

/// The ring buffer, registered with tokio so waiting for events costs no
/// thread and no polling.
pub struct EventReader {
    ring: AsyncFd<RingBuf<MapData>>,
}

impl EventReader {
    pub fn new(ring: RingBuf<MapData>) -> io::Result<EventReader> {
        // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged,
        // for as long as the AsyncFd owns the RingBuf.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(EventReader { ring })
    }

    /// Waits until the kernel signals data, then hands every waiting record
    /// to `f`. Returns how many records were read.
    pub async fn read(&mut self, mut f: impl FnMut(&[u8])) -> io::Result<usize> {
        loop {
            let mut guard = self.ring.readable_mut().await?;
            let n = drain(guard.get_inner_mut(), &mut f);
            guard.clear_ready();
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
