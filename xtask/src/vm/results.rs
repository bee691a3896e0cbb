//! What a guest runs (a shell script written for it) and what it left in
//! the shared folder: the output and exit status of each run of the test
//! binary.

use std::{
    ops::AddAssign,
    path::{Path, PathBuf},
};

use crate::libtest;

/// Tests passed and failed, added up over runs and kernels.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    pub passed: u64,
    pub failed: u64,
    /// One line per guest: what ran where, and how it went.
    pub summaries: Vec<String>,
}

impl Tally {
    /// One failure that is not a test's: a kernel that could not be
    /// fetched, a guest that could not be started.
    pub fn failure(summary: String) -> Tally {
        Tally {
            passed: 0,
            failed: 1,
            summaries: vec![summary],
        }
    }
}

impl AddAssign for Tally {
    fn add_assign(&mut self, other: Tally) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.summaries.extend(other.summaries);
    }
}

fn quoted(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// The guest's script: the set-up a root test expects of a booted system
/// (tracefs, loopback up, a place for `ip netns`), then each run with
/// its output and status written to `out`.
/// The randomized differential test reads its seed from here.
pub const SEED_ENV: &str = "TRACER_TEST_SEED";

pub fn guest_script(out: &Path, runs: &[(String, Vec<String>)]) -> String {
    let ci = std::env::var("CI").unwrap_or_default();
    // The randomized test's seed (`cargo xtask test --seed N`), if chosen.
    let seed = std::env::var(SEED_ENV)
        .ok()
        .filter(|s| s.chars().all(|c| c.is_ascii_digit()))
        .map(|s| format!(" {SEED_ENV}={s}"))
        .unwrap_or_default();
    let out = quoted(&out.display().to_string());
    let mut s = format!(
        "# Written by `cargo xtask test` for one guest of the kernel matrix.\n\
         mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null\n\
         ip link set lo up\n\
         mkdir -p /run/netns\n\
         # The host's limit on open files (the guest's default is 1024).\n\
         ulimit -n 20000\n\
         # Debian's kernels load tracing programs: their tests must run.\n\
         export CI={ci} RUST_BACKTRACE=1 TRACER_TEST_TRACING=1{seed}\n\
         uname -r > {out}/uname\n\
         # Whether sock_diag for TCP can load here, as the tests will need.\n\
         modprobe tcp_diag > {out}/modprobe.log 2>&1; echo $? > {out}/modprobe.rc\n"
    );
    for (name, argv) in runs {
        let argv: Vec<String> = argv.iter().map(|a| quoted(a)).collect();
        s.push_str(&format!(
            "{} > {out}/{name}.log 2>&1; echo $? > {out}/{name}.rc\n",
            argv.join(" ")
        ));
    }
    s
}

/// What a guest was meant to be: its label in the report, the kernel
/// release it must run, and whether tcp_diag had to load there (a guest
/// that silently lacks it, or has it against the plan, tests the wrong
/// thing).
pub struct Guest<'a> {
    pub label: &'a str,
    pub release: &'a str,
    pub sock_diag: bool,
}

/// Reads what the guest left in `out`, prints each run's output, and
/// counts a run that crashed, or never ran, as one failure.
pub fn collect(out: &Path, runs: &[(String, Vec<String>)], guest: &Guest) -> anyhow::Result<Tally> {
    let (label, sock_diag) = (guest.label, guest.sock_diag);
    let read = |name: &str| std::fs::read_to_string(out.join(name)).ok();
    let mut tally = Tally::default();
    let mut problems = Vec::new();
    let release = read("uname").map(|r| r.trim().to_owned());
    match &release {
        Some(r) if r == guest.release => {}
        Some(r) => problems.push(format!("the guest ran kernel {r}")),
        None => problems.push("the guest ran nothing (see console.log)".to_owned()),
    }
    let loaded = read("modprobe.rc").map(|rc| rc.trim() == "0");
    match (loaded, sock_diag) {
        (Some(false), true) => problems.push(format!(
            "tcp_diag did not load in the guest: {}",
            read("modprobe.log").unwrap_or_default().trim()
        )),
        (Some(true), false) => problems.push("tcp_diag loaded, though it must not".to_owned()),
        _ => {}
    }
    for (name, _) in runs {
        let log = read(&format!("{name}.log")).unwrap_or_default();
        println!("==== {label}: {name} ====");
        print!("{log}");
        let (passed, failed) = libtest::count_results(&log);
        tally.passed += passed;
        tally.failed += failed;
        let status = read(&format!("{name}.rc")).map(|s| s.trim().to_owned());
        match status.as_deref() {
            Some("0") if passed + failed > 0 => {}
            Some("0") => problems.push(format!("{name} ran no test")),
            Some(code) if failed == 0 => {
                tally.failed += 1;
                problems.push(format!("{name} exited {code} with no failed test"));
            }
            Some(_) => {}
            None => {
                tally.failed += 1;
                problems.push(format!("{name} did not finish"));
            }
        }
    }
    if !problems.is_empty() && tally.failed == 0 {
        tally.failed += 1;
    }
    let console = PathBuf::from(out).join("console.log");
    let mut summary = format!("{label}: {} passed, {} failed", tally.passed, tally.failed);
    if !problems.is_empty() {
        summary.push_str(&format!(
            " ({}; console: {})",
            problems.join("; "),
            console.display()
        ));
    }
    tally.summaries.push(summary);
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_quotes_arguments_and_records_each_status() {
        let runs = vec![(
            "daemon".to_owned(),
            vec!["/t/daemon-1".to_owned(), "it's".to_owned()],
        )];
        let s = guest_script(Path::new("/o"), &runs);
        assert!(
            s.contains("'/t/daemon-1' 'it'\\''s' > '/o'/daemon.log 2>&1; echo $? > '/o'/daemon.rc")
        );
        assert!(s.contains("mount -t tracefs"));
    }

    #[test]
    fn a_guest_that_left_nothing_is_a_failure() {
        let dir = std::env::temp_dir().join(format!("xtask-vm-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let runs = vec![("trace".to_owned(), vec!["/t/trace".to_owned()])];
        let guest = |sock_diag| Guest {
            label: "Linux 6.1 (6.1.0-50-amd64)",
            release: "6.1.0-50-amd64",
            sock_diag,
        };
        let t = collect(&dir, &runs, &guest(true)).expect("collect");
        assert_eq!((t.passed, t.failed), (0, 1));
        assert!(
            t.summaries[0].contains("did not finish"),
            "{:?}",
            t.summaries
        );
        std::fs::write(dir.join("uname"), "6.1.0-50-amd64\n").expect("write");
        std::fs::write(dir.join("trace.rc"), "0\n").expect("write");
        std::fs::write(
            dir.join("trace.log"),
            "test result: ok. 10 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n",
        )
        .expect("write");
        std::fs::write(dir.join("modprobe.rc"), "0\n").expect("write");
        let t = collect(&dir, &runs, &guest(true)).expect("collect");
        assert_eq!((t.passed, t.failed), (10, 0));
        // The same guest was meant to lack tcp_diag: a failure, named.
        let t = collect(&dir, &runs, &guest(false)).expect("collect");
        assert_eq!((t.passed, t.failed), (10, 1));
        assert!(
            t.summaries[0].contains("tcp_diag loaded"),
            "{:?}",
            t.summaries
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
