//! SIGINT and SIGTERM as one future: every long-running command stops on
//! either, cleanly (programs detached, summaries printed).

use std::io;

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Installed signal handlers; installing early means a signal that arrives
/// during start-up is not lost and does not kill the process half-way.
pub struct Shutdown {
    interrupt: Signal,
    terminate: Signal,
}

impl Shutdown {
    pub fn install() -> io::Result<Shutdown> {
        Ok(Shutdown {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Resolves on the first SIGINT or SIGTERM, naming it.
    pub async fn wait(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}
