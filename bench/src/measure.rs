//! Readings of a running process and of the kernel: CPU time and memory
//! from /proc, BPF program run statistics, and percentiles.

use std::{collections::BTreeSet, process::Command};

use anyhow::{Context as _, bail};
use testkit::process::status_kib;

/// User plus system CPU seconds of a whole process (every thread), from
/// /proc/PID/stat.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name may hold spaces and parentheses: fields start after
    // the last ')'. utime and stime are fields 14 and 15, i.e. the 12th and
    // 13th after it.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .map(|v| v as f64)
            .with_context(|| format!("/proc/{pid}/stat has no CPU time field"))
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz <= 0 {
        bail!("sysconf(_SC_CLK_TCK) failed");
    }
    Ok((ticks(11)? + ticks(12)?) / hz as f64)
}

/// Resident and peak resident memory in bytes (VmRSS, VmHWM).
pub fn memory(pid: u32) -> anyhow::Result<(u64, u64)> {
    let field = |name: &str| {
        status_kib(pid, name)
            .map(|kib| kib * 1024)
            .with_context(|| format!("reading {name} of process {pid}"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// Bytes the kernel says are available for new allocations.
pub fn mem_available() -> anyhow::Result<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .context("/proc/meminfo has no MemAvailable")
}

/// The ids of the BPF programs a process holds open. bpftool's own `pids`
/// field needs a BPF iterator, which kernels that refuse tracing programs
/// (like ours) do not allow; /proc/PID/fdinfo has the same facts.
pub fn bpf_program_ids(pid: u32) -> BTreeSet<u32> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return BTreeSet::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("prog_id:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .collect()
}

/// True once a process holds a BPF link, i.e. has attached a program.
pub fn has_bpf_link(pid: u32) -> bool {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return false;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .any(|info| info.lines().any(|l| l.starts_with("link_id:")))
}

/// One BPF program's cumulative run statistics (kernel.bpf_stats_enabled).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProgStats {
    pub id: u32,
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

/// The statistics of the program held by `pid` whose name starts with
/// `prefix` (the kernel keeps 15 characters of a name), from
/// `bpftool -j prog show`.
pub fn prog_stats(pid: u32, prefix: &str) -> anyhow::Result<ProgStats> {
    programs(pid, prefix)?
        .into_iter()
        .next()
        .with_context(|| format!("process {pid} holds no BPF program named {prefix}*"))
}

/// The statistics of every program held by `pid` whose name starts with
/// `prefix`, added up (`id` is the first one's).
pub fn prog_stats_all(pid: u32, prefix: &str) -> anyhow::Result<ProgStats> {
    let found = programs(pid, prefix)?;
    let first = found
        .first()
        .with_context(|| format!("process {pid} holds no BPF program named {prefix}*"))?;
    Ok(found.iter().fold(
        ProgStats {
            id: first.id,
            ..ProgStats::default()
        },
        |sum, p| ProgStats {
            id: sum.id,
            run_time_ns: sum.run_time_ns + p.run_time_ns,
            run_cnt: sum.run_cnt + p.run_cnt,
        },
    ))
}

fn programs(pid: u32, prefix: &str) -> anyhow::Result<Vec<ProgStats>> {
    let ids = bpf_program_ids(pid);
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .context("cannot run bpftool (Debian package bpftool)")?;
    if !out.status.success() {
        bail!(
            "`bpftool -j prog show` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let progs: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("bpftool printed no JSON")?;
    let progs = progs.as_array().context("bpftool printed no list")?;
    let field = |p: &serde_json::Value, name: &str| p.get(name).and_then(|v| v.as_u64());
    Ok(progs
        .iter()
        .filter(|p| {
            field(p, "id").is_some_and(|id| u32::try_from(id).is_ok_and(|id| ids.contains(&id)))
        })
        .filter(|p| {
            p.get("name")
                .and_then(|n| n.as_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .map(|p| ProgStats {
            id: field(p, "id")
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(0),
            // bpftool leaves both out while they are zero.
            run_time_ns: field(p, "run_time_ns").unwrap_or(0),
            run_cnt: field(p, "run_cnt").unwrap_or(0),
        })
        .collect())
}

/// Nearest-rank percentile of sorted values (`p` in 0..=100).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median (mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_medians() {
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 100.0);
        assert_eq!(percentile(&v, 99.0), 198.0);
        assert_eq!(percentile(&v, 100.0), 200.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn own_cpu_and_memory() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).expect("reads /proc/self/stat") >= 0.0);
        let (rss, hwm) = memory(pid).expect("reads /proc/self/status");
        assert!(rss > 0 && hwm >= rss);
    }
}
