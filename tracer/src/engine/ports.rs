//! Ephemeral-port headroom toward each destination. `connect()` may take a
//! local port of `net.ipv4.ip_local_port_range` already in use toward
//! another destination (the four-tuple must be unique, not the port), so
//! what runs out is, per source address, the ports toward one destination:
//! every socket there holds one, TIME_WAIT included, until it ends. A
//! TIME_WAIT socket that `net.ipv4.tcp_tw_reuse` lets a new connect take
//! (1: any; 2, the default: a loopback source or destination) is counted
//! as free. Counted when asked, as [`Engine::timewait_by_destination`] is.

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

impl Engine {
    /// Each namespace's port settings, as read in the last dump;
    /// namespaces not listed keep theirs.
    pub fn set_port_settings(&mut self, settings: impl IntoIterator<Item = (u32, PortSettings)>) {
        self.port_settings.extend(settings);
    }

    /// The `limit` destinations with the fewest ports left, fewest first.
    /// Namespaces whose settings are unknown are left out.
    pub fn ephemeral_ports(&self, limit: usize) -> Vec<PortUse> {
        // A listener's port is not ephemeral, nor are its children's.
        let listening: HashSet<(u32, u16)> = self
            .socks
            .values()
            .filter(|s| s.state == TcpState::Listen)
            .map(|s| (s.tuple.netns, s.tuple.lport))
            .collect();
        let mut taken: Taken = HashMap::default();
        let mut count = |t: &Tuple, reusable: bool| {
            let Some(settings) = self.port_settings.get(&t.netns) else {
                return;
            };
            if !t.is_connection()
                || !settings.contains(t.lport)
                || listening.contains(&(t.netns, t.lport))
            {
                return;
            }
            let slot = taken
                .entry((t.netns, t.remote(), t.local().ip()))
                .or_default();
            slot.0 += 1;
            if reusable && settings.reusable(t) {
                slot.1 += 1;
            }
        };
        for s in self.socks.values() {
            count(&s.tuple, false);
        }
        for (t, tw) in self.timewait.iter() {
            count(t, tw.is_time_wait());
        }
        let mut scarcest: HashMap<(u32, SocketAddr), PortUse> = HashMap::default();
        for ((netns, destination, source), (in_use, reusable)) in taken {
            let Some(settings) = self.port_settings.get(&netns) else {
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
