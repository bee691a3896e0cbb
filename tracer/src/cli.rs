//! Command-line interface: every subcommand and flag, with its parser.

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use tracer_common::TcpState;

use crate::{
    btf::VMLINUX_BTF,
    event::Family,
    probe::{self, DEFAULT_STATE_TIME_ENTRIES, ProbeOptions},
    trace::{Filter, OutputFormat, TraceOptions},
};

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
                btf_path: self.btf.clone(),
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
    use clap::CommandFactory as _;

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
        let Command::Trace(t) = cli.command;
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
        let Command::Trace(t) = parse(&["trace"]).unwrap().command;
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
            &["frobnicate"],
        ] {
            let err = parse(args).expect_err(&format!("{args:?} accepted"));
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        }
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
