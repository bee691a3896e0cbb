//! How `tracer trace` prints a transition: a table for people, JSON lines
//! for programs. The JSON field names are a stable interface (README).

use std::{io, net::SocketAddr};

use serde::Serialize;

use super::lifetimes::End;
use crate::{
    kernel::clock::{WallClock, local_time_of_day},
    kernel::event::Transition,
};

/// The table's column layout, shared by the header and the rows so they
/// cannot drift apart. Address columns fit any IPv4 address and port; longer
/// IPv6 ones push the rest of their row right rather than being cut.
macro_rules! table_line {
    ($time:expr, $pid:expr, $comm:expr, $local:expr, $remote:expr, $old:expr, $new:expr, $ms:expr, $end:expr) => {
        format!(
            "{:<12} {:<7} {:<15} {:<21} {:<21} {:<12} -> {:<12} {:>9}  {}",
            $time, $pid, $comm, $local, $remote, $old, $new, $ms, $end
        )
        .trim_end()
        .to_owned()
    };
}

/// The table's column header.
pub fn table_header() -> String {
    table_line!(
        "TIME",
        "PID",
        "COMM",
        "LADDR:LPORT",
        "RADDR:RPORT",
        "OLDSTATE",
        "NEWSTATE",
        "MS",
        "END"
    )
}

fn addr(a: &SocketAddr) -> String {
    // SocketAddr's Display already brackets IPv6: [::1]:8080.
    a.to_string()
}

/// The END column of a connection's final row: how it ended, the error
/// it carried, and how long it lived (`refused ECONNREFUSED 3.002s`).
fn end_column(t: &Transition, end: Option<End>) -> String {
    let Some(end) = end else {
        return String::new();
    };
    let mut s = end.ending.name().to_owned();
    if let Some(err) = t.sk_err.filter(|&e| e != 0) {
        s.push(' ');
        s.push_str(&errno_name(err));
    }
    if let Some(life) = end.lifetime {
        s.push_str(&format!(" {:.3}s", life.as_secs_f64()));
    }
    s
}

/// One table row, without the newline.
pub fn table_row(t: &Transition, end: Option<End>, clock: &WallClock) -> String {
    let ms = t
        .old_state
        .map(|d| format!("{:.3}", d.as_secs_f64() * 1e3))
        .unwrap_or_else(|| "-".to_owned());
    table_line!(
        local_time_of_day(clock.wall(t.ts_ns)),
        t.pid,
        t.comm,
        addr(&t.local),
        addr(&t.remote),
        t.old.name(),
        t.new.name(),
        ms,
        end_column(t, end)
    )
}

/// The JSON form of a transition (one object per line).
#[derive(Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct JsonTransition {
    /// Wall-clock time, RFC 3339, UTC, nanoseconds.
    pub time: String,
    /// Kernel CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    /// Kernel socket address, hex: identifies the socket while it lives.
    pub skaddr: String,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub netns: u32,
    pub family: u8,
    pub laddr: String,
    pub lport: u16,
    pub raddr: String,
    pub rport: u16,
    pub oldstate: String,
    pub newstate: String,
    /// Milliseconds spent in `oldstate`; null when unknown.
    pub old_state_ms: Option<f64>,
    /// On `FIN_WAIT1|FIN_WAIT2|CLOSING -> CLOSE` only: whether the peer's
    /// FIN had arrived. `false` from FIN_WAIT2 means an orphaned FIN_WAIT2
    /// (the application closed without waiting for the peer), which lives
    /// on as a timewait socket that `ss` shows as FIN-WAIT-2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fin_received: Option<bool>,
    /// On the same closes: whether the kernel made a timewait socket of
    /// the connection (false after a reset, `SO_LINGER` 0, a close with
    /// unread data, or with the timewait table full).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timewait: Option<bool>,
    /// On `-> CLOSE`, when the socket carried an error: its name
    /// (`ECONNREFUSED`, `ECONNRESET`, `ETIMEDOUT`, `EHOSTUNREACH`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// On a connection's final `-> CLOSE`: how it ended, a connect
    /// failure's reason (`refused`, `timeout`, `unreachable`, `aborted`,
    /// `other`) or a close's cause (`fin`, `reset_received`, `reset_sent`,
    /// `timeout`, `aborted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// On the same rows: milliseconds from the connection's first event;
    /// absent when the stream began after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime_ms: Option<f64>,
}

impl JsonTransition {
    pub fn new(t: &Transition, end: Option<End>, clock: &WallClock) -> JsonTransition {
        JsonTransition {
            time: humantime::format_rfc3339_nanos(clock.wall(t.ts_ns)).to_string(),
            ts_ns: t.ts_ns,
            skaddr: format!("{:#x}", t.skaddr),
            pid: t.pid,
            tid: t.tid,
            comm: t.comm.to_string(),
            netns: t.netns,
            family: t.family.number(),
            laddr: t.local.ip().to_string(),
            lport: t.local.port(),
            raddr: t.remote.ip().to_string(),
            rport: t.remote.port(),
            oldstate: t.old.name().to_owned(),
            newstate: t.new.name().to_owned(),
            old_state_ms: t.old_state.map(|d| d.as_nanos() as f64 / 1e6),
            fin_received: t.fin_received,
            timewait: t.timewait_made,
            error: t.sk_err.filter(|&e| e != 0).map(errno_name),
            cause: end.map(|e| e.ending.name().to_owned()),
            lifetime_ms: end
                .and_then(|e| e.lifetime)
                .map(|d| d.as_nanos() as f64 / 1e6),
        }
    }
}

/// The name of an errno a socket closes with, or `errno N`.
pub fn errno_name(errno: u8) -> String {
    let name = match i32::from(errno) {
        libc::EPIPE => "EPIPE",
        libc::EPROTO => "EPROTO",
        libc::ENETDOWN => "ENETDOWN",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::ECONNRESET => "ECONNRESET",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EHOSTDOWN => "EHOSTDOWN",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::ENOPROTOOPT => "ENOPROTOOPT",
        libc::EMSGSIZE => "EMSGSIZE",
        libc::ENONET => "ENONET",
        n => return format!("errno {n}"),
    };
    name.to_owned()
}

/// Writes one JSON line.
pub fn write_json(
    out: &mut impl io::Write,
    t: &Transition,
    end: Option<End>,
    clock: &WallClock,
) -> io::Result<()> {
    serde_json::to_writer(&mut *out, &JsonTransition::new(t, end, clock))?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::event::tests::sample_event;

    fn sample() -> Transition {
        Transition::try_from(&sample_event()).unwrap()
    }

    #[test]
    fn table_row_columns_line_up_with_header() {
        let clock = WallClock::with_epoch_ns(1_700_000_000_000_000_000);
        let row = table_row(&sample(), None, &clock);
        let header = table_header();
        let col = |s: &str, name: &str| s.find(name).unwrap_or_else(|| panic!("{name} in {s}"));
        assert_eq!(col(&row, "4242"), col(&header, "PID"));
        assert_eq!(col(&row, "curl"), col(&header, "COMM"));
        assert_eq!(col(&row, "127.0.0.1:40000"), col(&header, "LADDR"));
        assert_eq!(col(&row, "127.0.0.1:8080"), col(&header, "RADDR"));
        assert_eq!(col(&row, "ESTABLISHED"), col(&header, "OLDSTATE"));
        assert_eq!(col(&row, "FIN_WAIT1"), col(&header, "NEWSTATE"));
        assert!(row.ends_with("    1.500"), "{row}");
        assert_eq!(row.len() + "  END".len(), header.len());
    }

    #[test]
    fn unknown_time_in_state_is_a_dash() {
        let mut t = sample();
        t.old_state = None;
        assert!(table_row(&t, None, &WallClock::with_epoch_ns(0)).ends_with(" -"));
        let j = JsonTransition::new(&t, None, &WallClock::with_epoch_ns(0));
        assert_eq!(j.old_state_ms, None);
    }

    #[test]
    fn json_fields_are_stable() {
        let clock = WallClock::with_epoch_ns(1_700_000_000_000_000_000);
        let mut out = Vec::new();
        write_json(&mut out, &sample(), None, &clock).unwrap();
        let line = String::from_utf8(out).unwrap();
        assert!(line.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "time": "2023-11-14T22:13:25.000000000Z",
                "ts_ns": 5_000_000_000u64,
                "skaddr": "0xffff888012345678",
                "pid": 4242, "tid": 4243, "comm": "curl", "netns": 4026531840u32,
                "family": 4,
                "laddr": "127.0.0.1", "lport": 40000,
                "raddr": "127.0.0.1", "rport": 8080,
                "oldstate": "ESTABLISHED", "newstate": "FIN_WAIT1",
                "old_state_ms": 1.5
            })
        );
    }

    #[test]
    fn ipv6_addresses_are_bracketed_in_the_table() {
        let mut t = sample();
        t.local = "[::1]:40000".parse().unwrap();
        assert!(table_row(&t, None, &WallClock::with_epoch_ns(0)).contains("[::1]:40000"));
    }

    #[test]
    fn a_connections_last_row_says_how_it_ended() {
        use crate::engine::endings::{ConnectFailure, Ending};
        let mut t = sample();
        (t.old, t.new, t.sk_err) = (
            tracer_common::TcpState::SynSent,
            tracer_common::TcpState::Close,
            Some(libc::ECONNREFUSED as u8),
        );
        let end = Some(End {
            ending: Ending::ConnectFailed(ConnectFailure::Refused),
            lifetime: Some(std::time::Duration::from_micros(1500)),
        });
        let clock = WallClock::with_epoch_ns(0);
        let row = table_row(&t, end, &clock);
        assert!(row.ends_with("  refused ECONNREFUSED 0.002s"), "{row}");
        let j = JsonTransition::new(&t, end, &clock);
        assert_eq!(j.cause.as_deref(), Some("refused"));
        assert_eq!(j.error.as_deref(), Some("ECONNREFUSED"));
        assert_eq!(j.lifetime_ms, Some(1.5));
    }
}
