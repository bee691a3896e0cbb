//! The JSON document served at `/api/v1/snapshot`: the daemon's current
//! view, for `tracer top` and scripts. Field names are a stable interface
//! (README, "Snapshot API").

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    /// tracer version.
    pub version: String,
    pub hostname: String,
    /// Seconds since the daemon started.
    pub uptime_seconds: f64,
    /// Attached and seeded.
    pub ready: bool,
    /// Seconds between sock_diag reconciliations (and rate updates).
    pub interval_seconds: f64,
    /// Sockets per state name, every state tracer counts.
    pub sockets: Vec<StateCount>,
    /// Transitions since the daemon started, with their rate over the last
    /// interval, busiest first.
    pub transitions: Vec<TransitionRate>,
    pub events: EventCounts,
    pub close_wait_threshold_seconds: f64,
    /// Sockets in CLOSE_WAIT longer than the threshold, oldest first (at
    /// most 1,000).
    pub close_wait_leaks: Vec<LeakEntry>,
    /// Total leaked sockets (may exceed the list).
    pub close_wait_leaked_total: u64,
    /// Timewait sockets by remote endpoint, most first (at most 100).
    pub time_wait_by_destination: Vec<DestinationEntry>,
    /// Why connections fail (absent from daemons before it).
    #[serde(default)]
    pub failing: Failing,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StateCount {
    pub state: String,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TransitionRate {
    pub from: String,
    pub to: String,
    pub total: u64,
    pub per_second: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct EventCounts {
    /// Events read from the ring buffer.
    pub received: u64,
    /// Events the kernel could not deliver (ring buffer full, program not run).
    pub lost: u64,
    /// Received per second over the last interval.
    pub per_second: f64,
    /// Table fixes after lost events or dump differences.
    pub corrections: u64,
    /// Entries evicted to respect --max-sockets.
    pub evictions: u64,
    /// Entries in the socket table.
    pub tracked_sockets: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LeakEntry {
    /// 0 when unknown.
    pub pid: u32,
    /// Empty when unknown.
    pub comm: String,
    pub netns: u32,
    pub local: String,
    pub remote: String,
    pub age_seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DestinationEntry {
    pub remote: String,
    pub netns: u32,
    pub count: u32,
}

/// Why connections fail, since the daemon started: the counters behind
/// the connect-failure, close, reset and listener metrics. `tracer top`
/// turns successive snapshots into rates.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Failing {
    /// Connect failures by destination (`IP:port`, or `[other]`) and
    /// reason, most first; zero counts left out.
    pub connect_failures: Vec<ConnectFailureEntry>,
    /// Connections closed, by cause (every cause).
    pub closed: Vec<CauseCount>,
    /// Resets sent, by reason; absent where the kernel lacks the tracepoint.
    pub resets_sent: Option<Vec<CauseCount>>,
    /// Resets received, by the state the socket was in.
    pub resets_received: Option<Vec<CauseCount>>,
    /// Every listener's accept queue, fullest first (at most 100).
    pub listeners: Vec<ListenerEntry>,
    /// The busy destinations with the fewest ephemeral ports left, fewest
    /// first (the `tcpstate_ephemeral_ports_*` series).
    #[serde(default)]
    pub ephemeral_ports: Vec<PortsEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConnectFailureEntry {
    pub destination: String,
    /// 0 for `[other]`.
    pub netns: u32,
    pub reason: String,
    pub total: u64,
}

/// A count by a cause, reason or state name, summed over namespaces.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CauseCount {
    pub name: String,
    pub total: u64,
}

/// The ports toward one destination, from its scarcest source address.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PortsEntry {
    pub destination: String,
    pub netns: u32,
    pub source: String,
    pub in_use: u32,
    pub free: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ListenerEntry {
    pub listener: String,
    pub netns: u32,
    pub queued: u32,
    pub limit: u32,
    /// Connections it dropped since it began listening; null when unknown.
    pub drops: Option<u32>,
}
