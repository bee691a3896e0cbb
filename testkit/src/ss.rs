//! `ss` (iproute2, over sock_diag or /proc/net/tcp): the kernel's own view
//! of every TCP socket, the ground truth the daemon's gauges are held to.

use std::{collections::BTreeMap, process::Command};

use crate::netns::all_namespaces;

/// The states the daemon must count exactly as ss does (SYN_RECV is
/// different by design: ss shows half-open request sockets).
pub const COMPARED: [&str; 9] = [
    "ESTABLISHED",
    "SYN_SENT",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE_WAIT",
    "LAST_ACK",
    "CLOSING",
    "LISTEN",
];

/// ss's state names, as tracer names them.
pub fn state_name(ss: &str) -> Option<&'static str> {
    Some(match ss {
        "ESTAB" => "ESTABLISHED",
        "SYN-SENT" => "SYN_SENT",
        "SYN-RECV" => "SYN_RECV",
        "FIN-WAIT-1" => "FIN_WAIT1",
        "FIN-WAIT-2" => "FIN_WAIT2",
        "TIME-WAIT" => "TIME_WAIT",
        "CLOSE-WAIT" => "CLOSE_WAIT",
        "LAST-ACK" => "LAST_ACK",
        "LISTEN" => "LISTEN",
        "CLOSING" => "CLOSING",
        _ => return None,
    })
}

/// Adds the lines of `ss -Htan` output to `counts` by state; a command that
/// could not run adds nothing.
fn count(cmd: &mut Command, counts: &mut BTreeMap<String, u64>) {
    let Ok(out) = cmd.output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(state) = line.split_whitespace().next().and_then(state_name) {
            *counts.entry(state.to_owned()).or_insert(0) += 1;
        }
    }
}

/// What `ss -tan` counts per state, summed over every network namespace.
pub fn counts() -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for ns in all_namespaces() {
        count(
            Command::new("nsenter").args([&format!("--net={ns}"), "ss", "-Htan"]),
            &mut counts,
        );
    }
    counts
}

/// What `ss -N NAME -tan` counts per state in one named namespace.
pub fn counts_in(name: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    count(Command::new("ss").args(["-N", name, "-Htan"]), &mut counts);
    counts
}

/// `ss -tanp` lines of every namespace whose state is one of `states`: the
/// sockets behind a mismatch, with their owners.
pub fn lines_in(states: &[&str]) -> String {
    let mut lines = String::new();
    for ns in all_namespaces() {
        let Ok(out) = Command::new("nsenter")
            .args([&format!("--net={ns}"), "ss", "-Htanp"])
            .output()
        else {
            continue;
        };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let state = line.split_whitespace().next().and_then(state_name);
            if state.is_some_and(|s| states.contains(&s)) {
                lines.push_str(&format!("    {ns}: {line}\n"));
            }
        }
    }
    lines
}

/// Established TCP connections the kernel counts (`ss -s`, from
/// /proc/net/snmp: cheap even with millions of sockets).
pub fn established_total() -> Option<u64> {
    let out = Command::new("ss").arg("-s").output().ok()?;
    summary_established(&String::from_utf8_lossy(&out.stdout))
}

/// The `estab` count of `ss -s` output.
fn summary_established(summary: &str) -> Option<u64> {
    let line = summary.lines().find(|l| l.starts_with("TCP:"))?;
    let after = line.split("estab ").nth(1)?;
    after
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_line_gives_established() {
        let summary = "Total: 193\n\
            TCP:   1015 (estab 1002, closed 3, orphaned 0, timewait 3)\n";
        assert_eq!(summary_established(summary), Some(1002));
        assert_eq!(summary_established("Total: 0\n"), None);
        assert_eq!(state_name("ESTAB"), Some("ESTABLISHED"));
        assert_eq!(state_name("UNCONN"), None);
    }
}
