//! What `tracer top` shows, as data: the latest snapshot, short histories,
//! derived rates, sorting and filtering. Rendering is a pure function of
//! this model (view.rs), so both are tested without a terminal.

use std::collections::{HashMap, VecDeque};

use crate::serve::snapshot::{DestinationEntry, LeakEntry, Snapshot, TransitionRate};

mod failing;
pub use failing::{ListenerRow, RateRow};

/// Samples kept per state for the sparkline.
pub const HISTORY: usize = 60;

/// Orders of the CLOSE_WAIT leak table; `s` cycles through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeakSort {
    Age,
    Process,
    Pid,
    Local,
}

impl LeakSort {
    pub fn next(self) -> LeakSort {
        match self {
            LeakSort::Age => LeakSort::Process,
            LeakSort::Process => LeakSort::Pid,
            LeakSort::Pid => LeakSort::Local,
            LeakSort::Local => LeakSort::Age,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            LeakSort::Age => "age",
            LeakSort::Process => "process",
            LeakSort::Pid => "pid",
            LeakSort::Local => "local address",
        }
    }
}

/// One row of the state table.
#[derive(Debug, Clone, PartialEq)]
pub struct StateRow {
    pub state: String,
    pub count: u64,
    /// Change per second since the previous snapshot.
    pub per_second: f64,
    pub history: Vec<u64>,
}

/// Why the last fetch failed, as the screen tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchFailure {
    /// A few words: "daemon not reachable".
    pub summary: &'static str,
    /// One line: what failed and what to do about it.
    pub message: String,
    /// What to try, when there is a usual answer.
    pub hint: Option<&'static str>,
}

impl FetchFailure {
    /// The daemon did not answer at all.
    pub fn unreachable(message: String) -> FetchFailure {
        FetchFailure {
            summary: "daemon not reachable",
            message,
            hint: Some("start it with `tracer daemon` or point --endpoint at it"),
        }
    }
}

#[derive(Debug, Default)]
pub struct Model {
    pub endpoint: String,
    pub interval_seconds: f64,
    pub snapshot: Option<Snapshot>,
    /// The last fetch failed: why (the screen says so and keeps retrying).
    pub error: Option<FetchFailure>,
    previous: Option<Snapshot>,
    history: HashMap<String, VecDeque<u64>>,
    pub paused: bool,
    pub sort: Option<LeakSort>,
    pub filter: String,
    /// Typing a filter (after `/`).
    pub editing: bool,
    pub help: bool,
    /// The "Failing" view (key `f`) instead of the sockets view.
    pub failing: bool,
}

/// What a key asks of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    None,
    Redraw,
    Quit,
}

/// A key, as far as the model cares (kept free of terminal types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Esc,
    Enter,
    Backspace,
    CtrlC,
}

impl Model {
    pub fn new(endpoint: &str, interval_seconds: f64) -> Model {
        Model {
            endpoint: endpoint.to_owned(),
            interval_seconds,
            ..Model::default()
        }
    }

    pub fn sort(&self) -> LeakSort {
        self.sort.unwrap_or(LeakSort::Age)
    }

    /// A new snapshot arrived (ignored while paused).
    pub fn update(&mut self, snap: Snapshot) {
        self.error = None;
        if self.paused {
            return;
        }
        for s in &snap.sockets {
            let h = self.history.entry(s.state.clone()).or_default();
            if h.len() == HISTORY {
                h.pop_front();
            }
            h.push_back(s.count);
        }
        self.previous = self.snapshot.replace(snap);
    }

    pub fn fetch_failed(&mut self, error: FetchFailure) {
        self.error = Some(error);
    }

    /// Sockets per state with their change per second and history.
    pub fn states(&self) -> Vec<StateRow> {
        let Some(snap) = &self.snapshot else {
            return Vec::new();
        };
        let elapsed = self
            .previous
            .as_ref()
            .map(|p| snap.uptime_seconds - p.uptime_seconds)
            .filter(|dt| *dt > 0.0);
        snap.sockets
            .iter()
            .map(|s| {
                let before = self
                    .previous
                    .as_ref()
                    .and_then(|p| p.sockets.iter().find(|b| b.state == s.state))
                    .map(|b| b.count);
                let per_second = match (before, elapsed) {
                    (Some(b), Some(dt)) => (s.count as f64 - b as f64) / dt,
                    _ => 0.0,
                };
                StateRow {
                    state: s.state.clone(),
                    count: s.count,
                    per_second,
                    history: self
                        .history
                        .get(&s.state)
                        .map(|h| h.iter().copied().collect())
                        .unwrap_or_default(),
                }
            })
            .collect()
    }

    /// The busiest transitions (by rate, then total).
    pub fn transitions(&self, limit: usize) -> Vec<&TransitionRate> {
        let Some(snap) = &self.snapshot else {
            return Vec::new();
        };
        let mut t: Vec<&TransitionRate> = snap.transitions.iter().collect();
        t.sort_by(|a, b| {
            b.per_second
                .total_cmp(&a.per_second)
                .then(b.total.cmp(&a.total))
        });
        t.truncate(limit);
        t
    }

    fn filter_matches(&self, fields: &[&str], ports: &[&str]) -> bool {
        let f = self.filter.trim();
        if f.is_empty() {
            return true;
        }
        if f.chars().all(|c| c.is_ascii_digit()) {
            return ports.iter().any(|p| port_of(p) == Some(f)) || fields.contains(&f);
        }
        let f = f.to_ascii_lowercase();
        fields.iter().any(|v| v.to_ascii_lowercase().contains(&f))
    }

    /// Leaks that pass the filter (port, pid or process name), sorted.
    pub fn leaks(&self) -> Vec<&LeakEntry> {
        let Some(snap) = &self.snapshot else {
            return Vec::new();
        };
        let mut leaks: Vec<&LeakEntry> = snap
            .close_wait_leaks
            .iter()
            .filter(|l| {
                let pid = l.pid.to_string();
                self.filter_matches(&[&l.comm, &pid], &[&l.local, &l.remote])
            })
            .collect();
        match self.sort() {
            LeakSort::Age => leaks.sort_by(|a, b| b.age_seconds.total_cmp(&a.age_seconds)),
            LeakSort::Process => leaks.sort_by(|a, b| {
                a.comm
                    .cmp(&b.comm)
                    .then(b.age_seconds.total_cmp(&a.age_seconds))
            }),
            LeakSort::Pid => leaks.sort_by(|a, b| {
                a.pid
                    .cmp(&b.pid)
                    .then(b.age_seconds.total_cmp(&a.age_seconds))
            }),
            LeakSort::Local => leaks.sort_by(|a, b| a.local.cmp(&b.local)),
        }
        leaks
    }

    /// TIME_WAIT destinations that pass the filter (port or address).
    pub fn destinations(&self) -> Vec<&DestinationEntry> {
        let Some(snap) = &self.snapshot else {
            return Vec::new();
        };
        snap.time_wait_by_destination
            .iter()
            .filter(|d| self.filter_matches(&[&d.remote], &[&d.remote]))
            .collect()
    }

    pub fn handle_key(&mut self, key: Key) -> Action {
        if self.editing {
            match key {
                Key::Enter | Key::Esc => self.editing = false,
                Key::Backspace => {
                    self.filter.pop();
                }
                Key::Char(c) if !c.is_control() && self.filter.len() < 64 => self.filter.push(c),
                Key::CtrlC => return Action::Quit,
                _ => return Action::None,
            }
            return Action::Redraw;
        }
        if self.help {
            // Any key closes the help; q still quits.
            self.help = false;
            return match key {
                Key::Char('q') | Key::CtrlC => Action::Quit,
                _ => Action::Redraw,
            };
        }
        match key {
            Key::Char('q') | Key::Esc | Key::CtrlC => Action::Quit,
            Key::Char('p') => {
                self.paused = !self.paused;
                Action::Redraw
            }
            Key::Char('s') => {
                self.sort = Some(self.sort().next());
                Action::Redraw
            }
            Key::Char('f') => {
                self.failing = !self.failing;
                Action::Redraw
            }
            Key::Char('/') => {
                self.editing = true;
                self.filter.clear();
                Action::Redraw
            }
            Key::Char('?') | Key::Char('h') => {
                self.help = true;
                Action::Redraw
            }
            _ => Action::None,
        }
    }
}

/// The port of `addr:port` or `[v6]:port`.
fn port_of(addr: &str) -> Option<&str> {
    addr.rsplit_once(':').map(|(_, p)| p)
}

/// A sparkline of `values` in at most `width` cells, scaled to their range.
pub fn sparkline(values: &[u64], width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let values = &values[values.len().saturating_sub(width)..];
    let (Some(&min), Some(&max)) = (values.iter().min(), values.iter().max()) else {
        return String::new();
    };
    values
        .iter()
        .map(|&v| {
            if max == min {
                BARS[0]
            } else {
                BARS[((v - min) * 7 / (max - min)) as usize]
            }
        })
        .collect()
}

/// `1h02m`, `5m07s`, `42s`, `1.5s`.
pub fn human_age(seconds: f64) -> String {
    if seconds < 10.0 {
        return format!("{seconds:.1}s");
    }
    let s = seconds as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::serve::snapshot::{EventCounts, StateCount};

    pub(crate) fn snapshot(uptime: f64, established: u64) -> Snapshot {
        let states = [
            "ESTABLISHED",
            "SYN_SENT",
            "SYN_RECV",
            "FIN_WAIT1",
            "FIN_WAIT2",
            "TIME_WAIT",
            "CLOSE_WAIT",
            "LAST_ACK",
            "LISTEN",
            "CLOSING",
        ];
        Snapshot {
            version: "0.1.0".into(),
            hostname: "web-1".into(),
            uptime_seconds: uptime,
            ready: true,
            interval_seconds: 1.0,
            sockets: states
                .iter()
                .map(|s| StateCount {
                    state: (*s).into(),
                    count: match *s {
                        "ESTABLISHED" => established,
                        "LISTEN" => 4,
                        "CLOSE_WAIT" => 3,
                        "TIME_WAIT" => 120,
                        _ => 0,
                    },
                })
                .collect(),
            transitions: vec![
                TransitionRate {
                    from: "ESTABLISHED".into(),
                    to: "FIN_WAIT1".into(),
                    total: 900,
                    per_second: 12.5,
                },
                TransitionRate {
                    from: "CLOSE".into(),
                    to: "SYN_SENT".into(),
                    total: 1000,
                    per_second: 40.0,
                },
                TransitionRate {
                    from: "LISTEN".into(),
                    to: "SYN_RECV".into(),
                    total: 10,
                    per_second: 0.0,
                },
            ],
            events: EventCounts {
                received: 123_456,
                lost: 7,
                per_second: 410.0,
                ..EventCounts::default()
            },
            close_wait_threshold_seconds: 60.0,
            close_wait_leaks: vec![
                LeakEntry {
                    pid: 4242,
                    comm: "leaky-server".into(),
                    netns: 1,
                    local: "10.0.0.1:8080".into(),
                    remote: "10.0.0.9:51000".into(),
                    age_seconds: 3725.0,
                },
                LeakEntry {
                    pid: 77,
                    comm: "java".into(),
                    netns: 1,
                    local: "10.0.0.1:9000".into(),
                    remote: "10.0.0.8:40000".into(),
                    age_seconds: 65.0,
                },
                LeakEntry {
                    pid: 4242,
                    comm: "leaky-server".into(),
                    netns: 1,
                    local: "10.0.0.1:8080".into(),
                    remote: "10.0.0.9:51001".into(),
                    age_seconds: 300.0,
                },
            ],
            close_wait_leaked_total: 3,
            time_wait_by_destination: vec![
                DestinationEntry {
                    remote: "10.0.0.5:443".into(),
                    netns: 1,
                    count: 100,
                },
                DestinationEntry {
                    remote: "[2001:db8::1]:80".into(),
                    netns: 1,
                    count: 20,
                },
            ],
            failing: super::failing::tests::sample(uptime),
        }
    }

    #[test]
    fn change_per_second_and_history() {
        let mut m = Model::new("http://x", 1.0);
        m.update(snapshot(10.0, 100));
        assert_eq!(m.states()[0].per_second, 0.0, "no previous sample yet");
        m.update(snapshot(12.0, 150));
        let est = &m.states()[0];
        assert_eq!((est.state.as_str(), est.count), ("ESTABLISHED", 150));
        assert_eq!(est.per_second, 25.0);
        assert_eq!(est.history, vec![100, 150]);
        for i in 0..100u32 {
            m.update(snapshot(13.0 + f64::from(i), 150 + u64::from(i)));
        }
        assert_eq!(m.states()[0].history.len(), HISTORY);
    }

    #[test]
    fn pause_freezes_the_view() {
        let mut m = Model::new("http://x", 1.0);
        m.update(snapshot(10.0, 100));
        assert_eq!(m.handle_key(Key::Char('p')), Action::Redraw);
        m.update(snapshot(11.0, 999));
        assert_eq!(m.states()[0].count, 100);
        m.handle_key(Key::Char('p'));
        m.update(snapshot(12.0, 999));
        assert_eq!(m.states()[0].count, 999);
    }

    #[test]
    fn leaks_sort_and_filter() {
        let mut m = Model::new("http://x", 1.0);
        m.update(snapshot(10.0, 1));
        let ages: Vec<f64> = m.leaks().iter().map(|l| l.age_seconds).collect();
        assert_eq!(ages, vec![3725.0, 300.0, 65.0], "oldest first by default");
        m.handle_key(Key::Char('s'));
        assert_eq!(m.sort(), LeakSort::Process);
        let comms: Vec<&str> = m.leaks().iter().map(|l| l.comm.as_str()).collect();
        assert_eq!(comms, vec!["java", "leaky-server", "leaky-server"]);
        m.handle_key(Key::Char('s'));
        assert_eq!(m.leaks()[0].pid, 77);
        // Filter by port, then by process name, typed after '/'.
        m.handle_key(Key::Char('/'));
        for c in "9000".chars() {
            m.handle_key(Key::Char(c));
        }
        m.handle_key(Key::Enter);
        assert!(!m.editing);
        assert_eq!(m.leaks().len(), 1);
        assert_eq!(m.destinations().len(), 0);
        m.handle_key(Key::Char('/'));
        for c in "LEAKY".chars() {
            m.handle_key(Key::Char(c));
        }
        assert_eq!(m.leaks().len(), 2);
        m.handle_key(Key::Backspace);
        assert_eq!(m.filter, "LEAK");
        m.handle_key(Key::Esc);
        // Ports match whole ports only; 443 finds the destination.
        m.filter = "44".into();
        assert_eq!(m.destinations().len(), 0);
        m.filter = "443".into();
        assert_eq!(m.destinations().len(), 1);
        m.filter = "4242".into();
        assert_eq!(m.leaks().len(), 2, "pid");
    }

    #[test]
    fn keys() {
        let mut m = Model::new("http://x", 1.0);
        assert_eq!(m.handle_key(Key::Char('?')), Action::Redraw);
        assert!(m.help);
        assert_eq!(m.handle_key(Key::Char('x')), Action::Redraw);
        assert!(!m.help);
        assert_eq!(m.handle_key(Key::Char('z')), Action::None);
        assert_eq!(m.handle_key(Key::Esc), Action::Quit);
        assert_eq!(m.handle_key(Key::Char('q')), Action::Quit);
        assert_eq!(m.handle_key(Key::CtrlC), Action::Quit);
        m.handle_key(Key::Char('/'));
        assert_eq!(
            m.handle_key(Key::Char('q')),
            Action::Redraw,
            "typing q in the filter"
        );
        assert_eq!(m.filter, "q");
    }

    #[test]
    fn transitions_busiest_first() {
        let mut m = Model::new("http://x", 1.0);
        m.update(snapshot(10.0, 1));
        let t = m.transitions(2);
        assert_eq!(t.len(), 2);
        assert_eq!(
            (t[0].from.as_str(), t[0].to.as_str()),
            ("CLOSE", "SYN_SENT")
        );
    }

    #[test]
    fn sparkline_and_ages() {
        assert_eq!(sparkline(&[0, 7, 14], 10), "▁▄█");
        assert_eq!(sparkline(&[5, 5], 10), "▁▁");
        assert_eq!(sparkline(&[1, 2, 3, 4], 2), "▁█");
        assert_eq!(sparkline(&[], 5), "");
        assert_eq!(human_age(1.25), "1.2s");
        assert_eq!(human_age(42.0), "42s");
        assert_eq!(human_age(307.0), "5m07s");
        assert_eq!(human_age(3725.0), "1h02m");
        assert_eq!(human_age(90_000.0), "1d01h");
    }

    #[test]
    fn fetch_errors_are_kept_until_the_next_snapshot() {
        let mut m = Model::new("http://x", 1.0);
        m.fetch_failed(FetchFailure::unreachable("connection refused".into()));
        assert!(m.error.is_some());
        m.update(snapshot(1.0, 1));
        assert!(m.error.is_none());
    }
}
