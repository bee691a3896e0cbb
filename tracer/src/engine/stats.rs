//! Counters about the engine's own work, for the daemon's metrics.

/// Counters about the engine's own work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Transitions applied.
    pub events: u64,
    /// Records of timewait sockets' lives applied (from the kernel's
    /// timewait programs, where they run).
    pub timewait_records: u64,
    /// Times the table disagreed with what the kernel said (an event whose
    /// old state was not the one we had, a dump that differed) and was fixed.
    pub corrections: u64,
    /// Entries dropped to stay under `max_sockets`.
    pub evictions: u64,
    /// Sockets a dump found that the table had no room for (left out
    /// rather than evicting entries).
    pub dumped_left_out: u64,
    /// Sockets first seen mid-life (born before tracing, missed by the dump).
    pub unknown_sockets: u64,
    /// Timewait sockets ended by a new connection on their four-tuple.
    pub timewait_reused: u64,
    /// Timewait sockets that reached their timer.
    pub timewait_expired: u64,
    /// Timewait sockets that vanished before their timer (reset, or reuse we
    /// could not see).
    pub timewait_ended_early: u64,
    /// Timewait sockets not predicted because their namespace held as many
    /// as `net.ipv4.tcp_max_tw_buckets` allows: the kernel makes none then.
    pub timewait_over_cap: u64,
    /// Closes from FIN_WAIT1, FIN_WAIT2 or CLOSING that the kernel program
    /// saw end without a timewait socket (a reset, `SO_LINGER` 0, unread
    /// data, a full timewait table).
    pub timewait_not_made: u64,
}
