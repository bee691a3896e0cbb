//! Command-line interface: every subcommand and flag, with its parser.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use std::ffi::OsString;

use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use tracer_common::TcpState;

pub mod config;
pub mod settings;
mod top;

pub use self::{
    settings::Effective,
    top::{DEFAULT_ENDPOINT, TopArgs},
};

use crate::{
    cli::config::{ConfigError, DEFAULT_CONFIG},
    daemon::DaemonOptions,
    engine::EngineConfig,
    kernel::btf::VMLINUX_BTF,
    kernel::event::Family,
    kernel::probe::{self, DEFAULT_STATE_TIME_ENTRIES, ProbeOptions},
    trace::{Filter, OutputFormat, TraceOptions},
};

/// The daemon's default address (loopback only), and the one `tracer top`
/// asks by default: a macro so that both constants are spelled from it.
macro_rules! default_listen {
    () => {
        "127.0.0.1:9840"
    };
}
pub(crate) use default_listen;

/// Default address of the daemon's HTTP endpoint.
pub const DEFAULT_LISTEN: &str = default_listen!();

#[derive(Debug, Parser)]
#[command(
    name = "tracer",
    version,
    about = "eBPF TCP state-transition tracer",
    long_about = "eBPF TCP state-transition tracer: every TCP state change on this host, \
                  from the kernel tracepoint sock:inet_sock_set_state."
)]
pub struct Cli {
    /// Log level on stderr: error, warn, info, debug or trace.
    #[arg(long, global = true, default_value = "info", env = "TRACER_LOG")]
    pub log_level: log::LevelFilter,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stream TCP state transitions as they happen.
    Trace(TraceArgs),
    /// Count sockets per state, time in state and CLOSE_WAIT leaks, and serve
    /// them as Prometheus metrics and a JSON snapshot over HTTP.
    Daemon(DaemonArgs),
    /// Live terminal view of a running daemon.
    Top(TopArgs),
}

/// Flags of `tracer daemon`. Each can also be set with the environment
/// variable named in its help.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Address to serve HTTP on (/metrics, /api/v1/snapshot, /healthz, /readyz).
    #[arg(long, value_name = "ADDR:PORT", default_value = DEFAULT_LISTEN, env = "TRACER_LISTEN")]
    pub listen: SocketAddr,

    /// How often timewait sockets are reconciled with sock_diag, CLOSE_WAIT
    /// leaks are swept and rates updated (100ms to 1h; e.g. 500ms, 2s, 1m).
    #[arg(long, value_name = "DURATION", default_value = "1s", env = "TRACER_RECONCILE_INTERVAL", value_parser = parse_interval)]
    pub reconcile_interval: Duration,

    /// A socket in CLOSE_WAIT longer than this counts as leaked (1s to 30d).
    #[arg(long, value_name = "DURATION", default_value = "60s", env = "TRACER_CLOSE_WAIT_THRESHOLD", value_parser = parse_threshold)]
    pub close_wait_threshold: Duration,

    /// Most sockets the table holds (full and timewait); beyond it entries
    /// are evicted and counted (1,000 to 100,000,000).
    #[arg(long, value_name = "N", default_value_t = 2_000_000, env = "TRACER_MAX_SOCKETS", value_parser = clap::value_parser!(u64).range(1_000..=100_000_000))]
    pub max_sockets: u64,

    /// Process names in the CLOSE_WAIT leak gauge; the rest share the
    /// label `[other]` (1 to 1,000).
    #[arg(long, value_name = "N", default_value_t = 20, env = "TRACER_LEAK_TOP_N", value_parser = clap::value_parser!(u64).range(1..=1_000))]
    pub leak_top_n: u64,

    /// Destinations with series of their own in the connect-failure
    /// metrics, the most active lately; the rest share the label
    /// `[other]` (1 to 1,000).
    #[arg(long, value_name = "N", default_value_t = 20, env = "TRACER_TOP_DESTINATIONS", value_parser = clap::value_parser!(u64).range(1..=1_000))]
    pub top_destinations: u64,

    /// Size of the kernel ring buffer: a power of two from 4KiB to 1GiB.
    #[arg(long, value_name = "BYTES", default_value = "4MiB", env = "TRACER_RING_BUFFER_SIZE", value_parser = parse_ring_buffer_size)]
    pub ring_buffer_size: u32,

    /// Kernel BTF file to read structure layouts from.
    #[arg(long, value_name = "PATH", default_value = VMLINUX_BTF, env = "TRACER_BTF")]
    pub btf: PathBuf,

    /// HTTP connections open at once; at the cap the one waiting longest
    /// for a request is closed to let a newcomer in (1 to 10,000).
    #[arg(long, value_name = "N", default_value_t = 512, env = "TRACER_HTTP_MAX_CONNECTIONS", value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub http_max_connections: u64,

    /// An HTTP connection that sends and receives nothing for this long is
    /// closed (1s to 1h).
    #[arg(long, value_name = "DURATION", default_value = "60s", env = "TRACER_HTTP_IDLE_TIMEOUT", value_parser = parse_idle_timeout)]
    pub http_idle_timeout: Duration,

    /// A request must arrive whole, and its answer start, within this; a
    /// client that trickles its request is closed (1s to 10m).
    #[arg(long, value_name = "DURATION", default_value = "10s", env = "TRACER_HTTP_REQUEST_TIMEOUT", value_parser = parse_request_timeout)]
    pub http_request_timeout: Duration,

    /// Web config file for TLS and basic auth, in the Prometheus exporters'
    /// format (tls_server_config, basic_auth_users). Off by default: plain
    /// HTTP without authentication. Re-read on SIGHUP.
    #[arg(long, value_name = "PATH", env = "TRACER_WEB_CONFIG_FILE")]
    pub web_config_file: Option<PathBuf>,

    /// Split tcpstate_sockets by network namespace (a `netns` label: the
    /// namespace's inode). Off by default: one series per state.
    #[arg(long, value_name = "BOOL", default_value_t = false, action = clap::ArgAction::Set, env = "TRACER_NETNS_LABEL")]
    pub netns_label: bool,

    /// Config file (TOML; keys are these flags' names). Flags and
    /// environment variables override it. A missing default file is fine.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONFIG, env = "TRACER_CONFIG")]
    pub config: PathBuf,

    /// Check the configuration (file and flags), print it, and exit.
    #[arg(long)]
    pub check_config: bool,

    /// Every setting's effective value, filled in by [`parse_args`].
    #[arg(skip)]
    pub effective: Effective,
}

impl DaemonArgs {
    pub fn options(&self) -> DaemonOptions {
        DaemonOptions {
            listen: self.listen,
            probe: ProbeOptions {
                ring_buffer_bytes: self.ring_buffer_size,
                // The engine times states itself; the kernel map is not needed.
                state_time: false,
                state_time_entries: 1,
                // Owners come from connect() and listen(), which leave CLOSE.
                comm_always: false,
                btf_path: self.btf.clone(),
                timewait_hooks: true,
                retransmit_counters: true,
            },
            engine: EngineConfig {
                max_sockets: self.max_sockets as usize,
                close_wait_threshold_ns: self.close_wait_threshold.as_nanos() as u64,
                leak_top_n: self.leak_top_n as usize,
                top_destinations: self.top_destinations as usize,
            },
            interval: self.reconcile_interval,
            http_max_connections: self.http_max_connections as usize,
            netns_label: self.netns_label,
            http_idle_timeout: self.http_idle_timeout,
            http_request_timeout: self.http_request_timeout,
            web_config: self.web_config_file.clone(),
            settings: self.effective.clone(),
        }
    }
}

/// Parses `500ms`, `2s`, `1m`, `1h 30m` within `min..=max`.
fn parse_duration_in(s: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration ({e}); use e.g. 500ms, 2s, 1m"))?;
    if d < min || d > max {
        return Err(format!(
            "{} is out of range: use {} to {}",
            humantime::format_duration(d),
            humantime::format_duration(min),
            humantime::format_duration(max)
        ));
    }
    Ok(d)
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    parse_duration_in(s, Duration::from_millis(100), Duration::from_secs(3600))
}

fn parse_request_timeout(s: &str) -> Result<Duration, String> {
    parse_duration_in(s, Duration::from_secs(1), Duration::from_secs(600))
}

fn parse_idle_timeout(s: &str) -> Result<Duration, String> {
    parse_duration_in(s, Duration::from_secs(1), Duration::from_secs(3600))
}

fn parse_threshold(s: &str) -> Result<Duration, String> {
    parse_duration_in(s, Duration::from_secs(1), Duration::from_secs(30 * 86400))
}

/// Flags of `tracer trace`. Repeat a filter flag, or separate values with
/// commas, to match any of several values.
#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Omit the table header.
    #[arg(long)]
    pub no_header: bool,

    /// Only transitions with this local or remote port.
    #[arg(long = "port", value_name = "PORT", value_delimiter = ',')]
    pub ports: Vec<u16>,

    /// Only transitions from or to this state (e.g. CLOSE_WAIT, listen, time-wait).
    #[arg(long = "state", value_name = "STATE", value_delimiter = ',', value_parser = parse_state)]
    pub states: Vec<TcpState>,

    /// Only IPv4 (4) or IPv6 (6) sockets.
    #[arg(long, value_name = "4|6", value_parser = parse_family)]
    pub family: Option<Family>,

    /// Only transitions that happened while this process was current in the
    /// kernel (connect, listen, close; packet-driven ones run as pid 0).
    #[arg(long = "pid", value_name = "PID", value_delimiter = ',')]
    pub pids: Vec<u32>,

    /// Only sockets in this network namespace: an inode number, or a path such
    /// as /run/netns/NAME or /proc/PID/ns/net.
    #[arg(long = "netns", value_name = "INODE|PATH", value_delimiter = ',', value_parser = parse_netns)]
    pub netns: Vec<u32>,

    /// Size of the kernel ring buffer: a power of two from 4KiB to 1GiB
    /// (suffixes K, KiB, M, MiB, G, GiB are binary).
    #[arg(long, value_name = "BYTES", default_value = "4MiB", env = "TRACER_RING_BUFFER_SIZE", value_parser = parse_ring_buffer_size)]
    pub ring_buffer_size: u32,

    /// Sockets whose state start time the kernel remembers (LRU), for the
    /// time-in-state column.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_STATE_TIME_ENTRIES, value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    pub state_time_entries: u32,

    /// Kernel BTF file to read structure layouts from (for kernels without
    /// built-in BTF, a file made for this exact kernel).
    #[arg(long, value_name = "PATH", default_value = VMLINUX_BTF, env = "TRACER_BTF")]
    pub btf: PathBuf,
}

impl TraceArgs {
    pub fn options(&self) -> TraceOptions {
        TraceOptions {
            probe: ProbeOptions {
                ring_buffer_bytes: self.ring_buffer_size,
                state_time: true,
                state_time_entries: self.state_time_entries,
                comm_always: true,
                btf_path: self.btf.clone(),
                // The stream shows full sockets' transitions only.
                timewait_hooks: false,
                retransmit_counters: false,
            },
            filter: Filter {
                ports: self.ports.clone(),
                states: self.states.clone(),
                family: self.family,
                pids: self.pids.clone(),
                netns: self.netns.clone(),
            },
            format: if self.json {
                OutputFormat::Json
            } else {
                OutputFormat::Table {
                    header: !self.no_header,
                }
            },
        }
    }
}

/// Why the command line (with its config file) was refused.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Clap(#[from] clap::Error),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Parses the command line; for `daemon`, merges in its config file under
/// the flags and environment variables that were given.
pub fn parse_args(argv: &[OsString]) -> Result<Cli, CliError> {
    parse_with(&Cli::command(), argv)
}

/// [`parse_args`] over `command`, [`Cli`]'s clap command or one built from
/// it (a test adds a flag to show what follows from the settings table).
pub fn parse_with(command: &clap::Command, argv: &[OsString]) -> Result<Cli, CliError> {
    let mut matches = command.clone().try_get_matches_from(argv)?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    let Command::Daemon(daemon) = &cli.command else {
        return Ok(cli);
    };
    let sub = matches
        .subcommand_matches("daemon")
        .cloned()
        .unwrap_or_default();
    if let Some(text) = config::read(&daemon.config, settings::given(&sub, "config"))? {
        let known = settings::keys(command);
        let file = config::settings(&daemon.config, &text, &known, |key, value| {
            validate_setting(command, key, value)
        })?;
        let unset = settings::settings(command)
            .into_iter()
            .filter(|s| !settings::given(if s.global { &matches } else { &sub }, &s.id));
        let unset: Vec<String> = unset.map(|s| s.key).collect();
        let mut extra: Vec<OsString> = Vec::new();
        for (key, value) in file.into_iter().filter(|(k, _)| unset.contains(k)) {
            extra.push(format!("--{key}").into());
            extra.push(value.into());
        }
        let at = argv
            .iter()
            .position(|a| a == "daemon")
            .map_or(argv.len(), |i| i + 1);
        let mut merged = argv.to_vec();
        merged.splice(at..at, extra);
        matches = command.clone().try_get_matches_from(merged)?;
        cli = Cli::from_arg_matches(&matches)?;
    }
    if let (Command::Daemon(daemon), Some(sub)) =
        (&mut cli.command, matches.subcommand_matches("daemon"))
    {
        daemon.effective = Effective::from_matches(command, &matches, sub);
    }
    Ok(cli)
}

/// Checks one config value with the flag's own parser.
fn validate_setting(command: &clap::Command, key: &str, value: &str) -> Result<(), String> {
    let args = ["tracer", "daemon", &format!("--{key}"), value];
    command
        .clone()
        .try_get_matches_from(args)
        .map(drop)
        .map_err(|e| {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            first.trim_start_matches("error: ").to_owned()
        })
}

fn parse_state(s: &str) -> Result<TcpState, String> {
    TcpState::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = TcpState::ALL.iter().map(|s| s.name()).collect();
        format!(
            "unknown TCP state `{s}`; expected one of {}",
            names.join(", ")
        )
    })
}

fn parse_family(s: &str) -> Result<Family, String> {
    match s.trim() {
        "4" | "ipv4" | "inet" => Ok(Family::V4),
        "6" | "ipv6" | "inet6" => Ok(Family::V6),
        _ => Err(format!("`{s}` is not an address family; use 4 or 6")),
    }
}

/// An inode number, `net:[INODE]` (what readlink shows), or a path whose
/// inode is the namespace's.
fn parse_netns(s: &str) -> Result<u32, String> {
    let s = s.trim();
    let inner = s
        .strip_prefix("net:[")
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    if let Ok(inode) = inner.parse::<u32>() {
        return Ok(inode);
    }
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(Path::new(s)).map_err(|e| {
        format!("`{s}` is neither a namespace inode number nor a readable path: {e}")
    })?;
    u32::try_from(meta.ino()).map_err(|_| format!("inode of `{s}` does not fit 32 bits"))
}

/// Parses `65536`, `64K`, `64KiB`, `4M`, `4MiB`, `1G` (binary multiples).
pub fn parse_byte_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a size; use e.g. 4MiB, 256K or 65536"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{s}`; use K, M or G"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))
}

fn parse_ring_buffer_size(s: &str) -> Result<u32, String> {
    let bytes = parse_byte_size(s)?;
    probe::validate_ring_buffer_size(bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("tracer").chain(args.iter().copied()))
    }

    #[test]
    fn trace_flags() {
        let cli = parse(&[
            "trace",
            "--json",
            "--port",
            "80,443",
            "--port",
            "8080",
            "--state",
            "close-wait",
            "--family",
            "6",
            "--pid",
            "1",
            "--netns",
            "net:[4026531840]",
            "--ring-buffer-size",
            "64KiB",
        ])
        .unwrap();
        let Command::Trace(t) = cli.command else {
            panic!("not trace")
        };
        let o = t.options();
        assert_eq!(o.format, OutputFormat::Json);
        assert_eq!(o.filter.ports, vec![80, 443, 8080]);
        assert_eq!(o.filter.states, vec![TcpState::CloseWait]);
        assert_eq!(o.filter.family, Some(Family::V6));
        assert_eq!(o.filter.pids, vec![1]);
        assert_eq!(o.filter.netns, vec![4026531840]);
        assert_eq!(o.probe.ring_buffer_bytes, 65536);
    }

    #[test]
    fn defaults() {
        let Command::Trace(t) = parse(&["trace"]).unwrap().command else {
            panic!("not trace")
        };
        let o = t.options();
        assert_eq!(o.format, OutputFormat::Table { header: true });
        assert_eq!(o.probe.ring_buffer_bytes, 4 << 20);
        assert_eq!(o.filter, Filter::default());
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["trace", "--port", "70000"][..],
            &["trace", "--state", "CLOSED"],
            &["trace", "--family", "5"],
            &["trace", "--ring-buffer-size", "3MiB"],
            &["trace", "--ring-buffer-size", "lots"],
            &["trace", "--ring-buffer-size", "2G"],
            &["trace", "--netns", "/nonexistent/ns"],
            &["trace", "--state-time-entries", "0"],
            &["trace", "--bogus"],
            &["daemon", "--listen", "localhost"],
            &["daemon", "--listen", "127.0.0.1:70000"],
            &["daemon", "--reconcile-interval", "10ms"],
            &["daemon", "--reconcile-interval", "2h"],
            &["daemon", "--reconcile-interval", "soon"],
            &["daemon", "--close-wait-threshold", "0s"],
            &["daemon", "--max-sockets", "5"],
            &["daemon", "--max-sockets", "-1"],
            &["daemon", "--leak-top-n", "0"],
            &["daemon", "--ring-buffer-size", "1000"],
            &["top", "--endpoint", "127.0.0.1:9840"],
            &["top", "--endpoint", "http://"],
            &["top", "-d", "0"],
            &["top", "-d", "fast"],
            &["frobnicate"],
        ] {
            let err = parse(args).expect_err(&format!("{args:?} accepted"));
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        }
    }

    #[test]
    fn daemon_defaults_and_human_durations() {
        let Command::Daemon(d) = parse(&["daemon"]).unwrap().command else {
            panic!("not daemon")
        };
        let o = d.options();
        assert_eq!(o.listen, "127.0.0.1:9840".parse().unwrap());
        assert_eq!(o.interval, Duration::from_secs(1));
        assert_eq!(o.engine.close_wait_threshold_ns, 60_000_000_000);
        assert!(!o.probe.state_time);
        let Command::Daemon(d) = parse(&[
            "daemon",
            "--reconcile-interval",
            "500ms",
            "--close-wait-threshold",
            "1m",
            "--listen",
            "[::]:9999",
        ])
        .unwrap()
        .command
        else {
            panic!("not daemon")
        };
        assert_eq!(d.reconcile_interval, Duration::from_millis(500));
        assert_eq!(d.close_wait_threshold, Duration::from_secs(60));
        assert_eq!(d.listen, "[::]:9999".parse().unwrap());
    }

    #[test]
    fn ring_buffer_size_message_says_what_is_allowed() {
        let err = parse(&["trace", "--ring-buffer-size", "3MiB"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("power of two"), "{err}");
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_byte_size("65536"), Ok(65536));
        assert_eq!(parse_byte_size("64K"), Ok(65536));
        assert_eq!(parse_byte_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_byte_size("1 GiB"), Ok(1 << 30));
        assert!(parse_byte_size("").is_err());
        assert!(parse_byte_size("MiB").is_err());
        assert!(parse_byte_size("4TB").is_err());
        assert!(parse_byte_size("99999999999999999999G").is_err());
    }

    #[test]
    fn netns_forms() {
        assert_eq!(parse_netns("4026531840"), Ok(4026531840));
        assert_eq!(parse_netns("net:[4026531841]"), Ok(4026531841));
        assert!(parse_netns("/proc/self/ns/net").is_ok());
    }
}
