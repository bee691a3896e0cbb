//! The "Failing" view's rows: connect failures, closes, resets,
//! listeners and ephemeral ports from the snapshot's `failing` section,
//! with rates from the snapshot before (per second over the time between
//! them).

use std::collections::HashMap;

use super::Model;
use crate::serve::snapshot::{CauseCount, Failing, ListenerEntry, PortsEntry};

/// One rate row.
#[derive(Debug, Clone, PartialEq)]
pub struct RateRow {
    pub name: String,
    pub per_second: f64,
    pub total: u64,
}

/// One listener, with its drops per second.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerRow<'a> {
    pub entry: &'a ListenerEntry,
    pub drops_per_second: f64,
}

impl Model {
    fn failing_pair(&self) -> Option<(&Failing, Option<&Failing>, f64)> {
        let now = self.snapshot.as_ref()?;
        let before = self.previous.as_ref();
        let dt = before
            .map(|b| now.uptime_seconds - b.uptime_seconds)
            .filter(|dt| *dt > 0.0)
            .unwrap_or(0.0);
        Some((&now.failing, before.map(|b| &b.failing), dt))
    }

    /// Connect failures by destination and reason that pass the filter,
    /// fastest first, then most.
    pub fn connect_failures(&self) -> Vec<RateRow> {
        self.connect_failure_rows(true)
    }

    fn connect_failure_rows(&self, filtered: bool) -> Vec<RateRow> {
        let Some((now, before, dt)) = self.failing_pair() else {
            return Vec::new();
        };
        let key = |e: &crate::serve::snapshot::ConnectFailureEntry| {
            (e.destination.clone(), e.netns, e.reason.clone())
        };
        let old: HashMap<_, u64> = before
            .map(|b| {
                b.connect_failures
                    .iter()
                    .map(|e| (key(e), e.total))
                    .collect()
            })
            .unwrap_or_default();
        let mut rows: Vec<RateRow> = now
            .connect_failures
            .iter()
            .filter(|e| {
                !filtered || self.filter_matches(&[&e.destination, &e.reason], &[&e.destination])
            })
            .map(|e| RateRow {
                name: format!("{} {}", e.destination, e.reason),
                per_second: rate(old.get(&key(e)).copied(), e.total, dt),
                total: e.total,
            })
            .collect();
        rows.sort_by(|a, b| {
            b.per_second
                .total_cmp(&a.per_second)
                .then(b.total.cmp(&a.total))
        });
        rows
    }

    /// Closes by cause, then resets sent by reason and received by state.
    pub fn closes_and_resets(&self) -> Vec<RateRow> {
        let Some((now, before, dt)) = self.failing_pair() else {
            return Vec::new();
        };
        let mut rows = Vec::new();
        let mut add = |prefix: &str, now: &[CauseCount], before: Option<&[CauseCount]>| {
            for c in now {
                let old = before.and_then(|b| b.iter().find(|o| o.name == c.name));
                rows.push(RateRow {
                    name: format!("{prefix}{}", c.name),
                    per_second: rate(old.map(|o| o.total), c.total, dt),
                    total: c.total,
                });
            }
        };
        add("closed ", &now.closed, before.map(|b| b.closed.as_slice()));
        if let Some(sent) = &now.resets_sent {
            add(
                "rst sent ",
                sent,
                before.and_then(|b| b.resets_sent.as_deref()),
            );
        }
        if let Some(received) = &now.resets_received {
            let old = before.and_then(|b| b.resets_received.as_deref());
            add("rst in ", received, old);
        }
        rows
    }

    /// Listeners that pass the filter, fullest first (as the daemon
    /// orders them), with their drops per second.
    pub fn listeners(&self) -> Vec<ListenerRow<'_>> {
        self.listener_rows(true)
    }

    fn listener_rows(&self, filtered: bool) -> Vec<ListenerRow<'_>> {
        let Some((now, before, dt)) = self.failing_pair() else {
            return Vec::new();
        };
        now.listeners
            .iter()
            .filter(|l| !filtered || self.filter_matches(&[&l.listener], &[&l.listener]))
            .map(|l| {
                let old = before
                    .and_then(|b| {
                        b.listeners
                            .iter()
                            .find(|o| o.listener == l.listener && o.netns == l.netns)
                    })
                    .and_then(|o| o.drops);
                ListenerRow {
                    entry: l,
                    drops_per_second: l
                        .drops
                        .map_or(0.0, |d| rate(old.map(u64::from), u64::from(d), dt)),
                }
            })
            .collect()
    }

    /// Destinations with the fewest ephemeral ports left that pass the
    /// filter, fewest first (as the daemon orders them).
    pub fn ephemeral_ports(&self) -> Vec<&PortsEntry> {
        let Some((now, _, _)) = self.failing_pair() else {
            return Vec::new();
        };
        now.ephemeral_ports
            .iter()
            .filter(|p| self.filter_matches(&[&p.destination], &[&p.destination]))
            .collect()
    }

    /// Connect failures and listener drops per second, for the header: all
    /// of them, whatever the view's filter (as the header's other figures).
    pub fn failing_per_second(&self) -> f64 {
        let failures: f64 = self
            .connect_failure_rows(false)
            .iter()
            .map(|r| r.per_second)
            .sum();
        let drops: f64 = self
            .listener_rows(false)
            .iter()
            .map(|l| l.drops_per_second)
            .sum();
        failures + drops
    }
}

/// Per second from `before` to `now` over `dt` seconds; 0 without both.
fn rate(before: Option<u64>, now: u64, dt: f64) -> f64 {
    match before {
        Some(b) if dt > 0.0 => now.saturating_sub(b) as f64 / dt,
        // New since the last snapshot: all of it happened in between.
        None if dt > 0.0 => now as f64 / dt,
        _ => 0.0,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::serve::snapshot::ConnectFailureEntry;
    use crate::top::model::tests::snapshot;

    /// A `failing` section whose counts grow with `uptime`: 2 refused
    /// connects a second to the database, a listener that drops 5 a second.
    pub(crate) fn sample(uptime: f64) -> crate::serve::snapshot::Failing {
        let n = (uptime * 2.0) as u64;
        Failing {
            connect_failures: vec![ConnectFailureEntry {
                destination: "10.0.0.9:5432".into(),
                netns: 1,
                reason: "refused".into(),
                total: n,
            }],
            closed: vec![CauseCount {
                name: "fin".into(),
                total: 7,
            }],
            resets_sent: None,
            resets_received: Some(vec![CauseCount {
                name: "SYN_SENT".into(),
                total: n,
            }]),
            listeners: vec![ListenerEntry {
                listener: "0.0.0.0:8080".into(),
                netns: 1,
                queued: 128,
                limit: 128,
                drops: Some((uptime * 5.0) as u32),
            }],
            ephemeral_ports: vec![PortsEntry {
                destination: "10.0.0.8:6379".into(),
                netns: 1,
                source: "10.0.0.1".into(),
                in_use: 27000,
                free: 1232,
            }],
        }
    }

    #[test]
    fn failing_rates_come_from_the_snapshot_before() {
        let mut m = Model::new("http://x", 1.0);
        m.update(snapshot(10.0, 1));
        assert_eq!(
            m.connect_failures()[0].per_second,
            0.0,
            "one snapshot: no rate"
        );
        m.update(snapshot(12.0, 1));
        let failures = m.connect_failures();
        assert_eq!(failures[0].name, "10.0.0.9:5432 refused");
        assert_eq!((failures[0].per_second, failures[0].total), (2.0, 24));
        assert_eq!(m.listeners()[0].drops_per_second, 5.0);
        assert_eq!(m.failing_per_second(), 7.0);
        let ends = m.closes_and_resets();
        assert_eq!(ends[0].name, "closed fin");
        assert_eq!(ends[0].per_second, 0.0);
        assert_eq!(
            (ends[1].name.as_str(), ends[1].per_second),
            ("rst in SYN_SENT", 2.0)
        );
        // The filter applies: a port that matches nothing hides them.
        assert_eq!(m.ephemeral_ports()[0].free, 1232);
        m.filter = "9999".into();
        assert!(m.connect_failures().is_empty() && m.listeners().is_empty());
        assert!(m.ephemeral_ports().is_empty());
        // The header's rate is the host's, as its other figures are.
        assert_eq!(m.failing_per_second(), 7.0);
    }
}
