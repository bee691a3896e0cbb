//! What the caller sets: the engine's limits.

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Most sockets (full and timewait) kept; beyond it, entries are evicted.
    pub max_sockets: usize,
    /// A CLOSE_WAIT socket older than this is a leak.
    pub close_wait_threshold_ns: u64,
    /// Distinct process names in the leak gauge; the rest share one label.
    pub leak_top_n: usize,
    /// Destinations (and listeners) with series of their own; the rest
    /// share `[other]`.
    pub top_destinations: usize,
}

/// For the engine's tests only: the daemon's defaults are its flags'
/// (`cli`), which build its config.
#[cfg(test)]
impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_sockets: 2_000_000,
            close_wait_threshold_ns: 60_000_000_000,
            leak_top_n: 20,
            top_destinations: 20,
        }
    }
}
