//! Ephemeral-port headroom toward each destination. `connect()` may take a
//! local port of `net.ipv4.ip_local_port_range` already in use toward
//! another destination (the four-tuple must be unique, not the port), so
//! what runs out is, per source address, the ports toward one destination:
//! every socket there holds one, TIME_WAIT included, until it ends. A
//! TIME_WAIT socket that `net.ipv4.tcp_tw_reuse` lets a new connect take
//! (1: any; 2, the default: a loopback source or destination) is counted
//! as free. Counted as entries come and go ([`PortIndex`]).

use std::net::{IpAddr, SocketAddr};

use tracer_common::TcpState;

use super::{Engine, HashMap, HashSet, Tuple};

/// A namespace's settings, read with every dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortSettings {
    /// `ip_local_port_range`, inclusive.
    pub low: u16,
    pub high: u16,
    /// `tcp_tw_reuse`: 0, 1 or 2.
    pub tw_reuse: u8,
}

impl PortSettings {
    /// Parses `ip_local_port_range` ("32768\t60999") and `tcp_tw_reuse`.
    pub fn parse(range: &str, tw_reuse: &str) -> Option<PortSettings> {
        let mut parts = range.split_whitespace().map(str::parse::<u16>);
        let (Some(Ok(low)), Some(Ok(high))) = (parts.next(), parts.next()) else {
            return None;
        };
        let tw_reuse = tw_reuse.trim().parse().ok()?;
        (low <= high).then_some(PortSettings {
            low,
            high,
            tw_reuse,
        })
    }

    pub fn size(&self) -> u32 {
        u32::from(self.high - self.low) + 1
    }

    fn contains(&self, port: u16) -> bool {
        (self.low..=self.high).contains(&port)
    }

    /// Whether a new connect may take this TIME_WAIT socket's four-tuple.
    fn reusable(&self, t: &Tuple) -> bool {
        match self.tw_reuse {
            1 => true,
            2 => is_loopback(t.local().ip()) || is_loopback(t.remote().ip()),
            _ => false,
        }
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        v4 => v4.is_loopback(),
    }
}

/// The ports toward one destination, from its scarcest source address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortUse {
    pub netns: u32,
    pub destination: SocketAddr,
    /// The source address with the fewest ports left.
    pub source: IpAddr,
    /// Ports of the range taken toward the destination from that source,
    /// every state, TIME_WAIT included.
    pub in_use: u32,
    /// Ports left: the range less those taken, plus the TIME_WAIT ones a
    /// connect may reuse.
    pub free: u32,
}

/// (netns, destination, source) -> (taken, reusable).
type Taken = HashMap<(u32, SocketAddr, IpAddr), (u32, u32)>;

/// The ports taken toward each destination, kept as entries come and go
/// (a scan of the whole table at every scrape cost 14 ms at 100k sockets).
/// What counts depends on each namespace's settings and on which ports are
/// listened on; when either has changed for a port of the range by the
/// next reading, the counts are made again from the table then. (A
/// listener's record leaves the table and comes back with each of its
/// events: only a port listened on before and not after, or the reverse,
/// is a change.)
#[derive(Debug, Default)]
pub(super) struct PortIndex {
    settings: HashMap<u32, PortSettings>,
    /// LISTEN records by (netns, port): a listener's children hold its
    /// port, which is not ephemeral.
    listeners: HashMap<(u32, u16), u32>,
    /// Ports whose listeners came or went since the last reading, and
    /// whether they were listened on then.
    crossed: HashMap<(u32, u16), bool>,
    taken: Taken,
    /// The slots of `taken` with two ports or more: busy destinations. A
    /// destination toward which one socket holds a port is not running out
    /// (a listener's children, whose listener has closed, look like that,
    /// one for each client port), and reading them all at every scrape
    /// would cost what the index saves.
    busy: HashSet<(u32, SocketAddr, IpAddr)>,
    /// The counts must be made again from the table.
    stale: bool,
}

impl PortIndex {
    /// The slot `t` counts in and whether it is reusable, if it counts.
    /// `timewait`: the substate of a timewait entry, None for a full one.
    fn slot(
        &self,
        t: &Tuple,
        timewait: Option<TcpState>,
    ) -> Option<((u32, SocketAddr, IpAddr), bool)> {
        let settings = self.settings.get(&t.netns)?;
        if !settings.contains(t.lport)
            || !t.is_connection()
            || self.listeners.contains_key(&(t.netns, t.lport))
        {
            return None;
        }
        let reusable = timewait == Some(TcpState::TimeWait) && settings.reusable(t);
        Some(((t.netns, t.remote(), t.local().ip()), reusable))
    }

    /// An entry came into the table.
    pub fn add(&mut self, t: &Tuple, timewait: Option<TcpState>) {
        if let Some((key, reusable)) = self.slot(t, timewait) {
            let slot = self.taken.entry(key).or_default();
            slot.0 += 1;
            slot.1 += u32::from(reusable);
            if slot.0 == 2 {
                self.busy.insert(key);
            }
        }
    }

    /// An entry left the table.
    pub fn remove(&mut self, t: &Tuple, timewait: Option<TcpState>) {
        let Some((key, reusable)) = self.slot(t, timewait) else {
            return;
        };
        if let Some(slot) = self.taken.get_mut(&key) {
            slot.0 = slot.0.saturating_sub(1);
            slot.1 = slot.1.saturating_sub(u32::from(reusable));
            if slot.0 < 2 {
                self.busy.remove(&key);
            }
            if slot.0 == 0 {
                self.taken.remove(&key);
            }
        }
    }

    /// A LISTEN record came (`added`) or left.
    pub fn listener(&mut self, t: &Tuple, added: bool) {
        let key = (t.netns, t.lport);
        let n = self.listeners.entry(key).or_insert(0);
        let before = *n;
        *n = if added { *n + 1 } else { n.saturating_sub(1) };
        let now = *n;
        if now == 0 {
            self.listeners.remove(&key);
        }
        if (before == 0) != (now == 0) {
            self.crossed.entry(key).or_insert(before != 0);
        }
    }

    /// Whether the counts must be made again: settings changed, or a port
    /// of the range is listened on now and was not at the last reading,
    /// or the reverse.
    fn must_recount(&mut self) -> bool {
        for ((netns, port), was) in std::mem::take(&mut self.crossed) {
            let in_range = self.settings.get(&netns).is_some_and(|s| s.contains(port));
            if in_range && was != self.listeners.contains_key(&(netns, port)) {
                self.stale = true;
            }
        }
        self.stale
    }

    /// Whether the next reading recounts.
    #[cfg(test)]
    pub fn is_stale(&mut self) -> bool {
        self.must_recount()
    }

    /// The counts, and the busy slots.
    #[cfg(test)]
    pub fn taken(&self) -> (&Taken, &HashSet<(u32, SocketAddr, IpAddr)>) {
        (&self.taken, &self.busy)
    }

    /// The same settings and listeners, no counts.
    #[cfg(test)]
    pub fn clone_rules_from(&mut self, other: &PortIndex) {
        self.settings = other.settings.clone();
        self.listeners = other.listeners.clone();
    }

    fn set(&mut self, netns: u32, settings: PortSettings) {
        if self.settings.insert(netns, settings) != Some(settings) {
            self.stale = true;
        }
    }
}

impl Engine {
    /// Each namespace's port settings, as read in the last dump;
    /// namespaces not listed keep theirs.
    pub fn set_port_settings(&mut self, settings: impl IntoIterator<Item = (u32, PortSettings)>) {
        for (netns, s) in settings {
            self.ports.set(netns, s);
        }
    }

    /// The `limit` busy destinations (two ports taken or more from one
    /// source address) with the fewest ports left, fewest first.
    /// Namespaces whose settings are unknown are left out.
    pub fn ephemeral_ports(&mut self, limit: usize) -> Vec<PortUse> {
        if self.ports.must_recount() {
            self.recount_ports();
        }
        let mut scarcest: HashMap<(u32, SocketAddr), PortUse> = HashMap::default();
        for key @ &(netns, destination, source) in &self.ports.busy {
            let (Some(settings), Some(&(in_use, reusable))) =
                (self.ports.settings.get(&netns), self.ports.taken.get(key))
            else {
                continue;
            };
            let free = (settings.size() + reusable).saturating_sub(in_use);
            let entry = PortUse {
                netns,
                destination,
                source,
                in_use,
                free,
            };
            scarcest
                .entry((netns, destination))
                .and_modify(|e| {
                    if (entry.free, entry.source) < (e.free, e.source) {
                        *e = entry.clone();
                    }
                })
                .or_insert(entry);
        }
        let mut all: Vec<PortUse> = scarcest.into_values().collect();
        all.sort_by_key(|p| (p.free, p.netns, p.destination));
        all.truncate(limit);
        all
    }

    /// Counts the ports again from the whole table.
    fn recount_ports(&mut self) {
        self.ports.taken.clear();
        self.ports.busy.clear();
        self.ports.stale = false;
        for s in self.socks.values() {
            self.ports.add(&s.tuple, None);
        }
        for (t, tw) in self.timewait.iter() {
            self.ports.add(t, Some(tw.substate()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_as_the_kernel_writes_them() {
        let s = PortSettings::parse("32768\t60999\n", "2\n").expect("parses");
        assert_eq!(
            (s.low, s.high, s.tw_reuse, s.size()),
            (32768, 60999, 2, 28232)
        );
        assert_eq!(
            PortSettings::parse("40000 40099", "0").map(|s| s.size()),
            Some(100)
        );
        assert_eq!(PortSettings::parse("5 4", "0"), None);
        assert_eq!(PortSettings::parse("junk", "0"), None);
    }
}
