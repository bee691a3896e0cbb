//! The kernel matrix: the root tests of the integration-test binary (`it`),
//! built on the host, run again inside each kernel of [`kernels::MATRIX`]
//! booted in a VM, one area (test module) at a time.
//!
//! virtme-ng (`vng`) boots the kernel with the host's root file system
//! shared read-only, as root, so the very binaries the host tested run in
//! the guest with no image to build; it maps the unpacked package's modules
//! (`tcp_diag` among them) into the guest. Guests run one at a time (two
//! cores here); each writes its logs into a shared folder, because without
//! KVM the guest's console is the only other channel back.

pub mod kernels;
mod results;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::Context as _;

use crate::cmd::{self, cargo};
pub use kernels::MATRIX;
use kernels::{Kernel, KernelLine};
pub use results::{SEED_ENV, Tally};

/// The integration-test binary (`tracer/tests/it`).
const TEST_BINARY: &str = "it";

/// The areas (modules of [`TEST_BINARY`]) whose tests need a real kernel,
/// run in every guest, each as its own run of the binary with its own log,
/// one test at a time: an emulated CPU is many times slower, and a test
/// that compares every namespace with `ss` would otherwise wait out another
/// test's minute of churn.
pub const ROOT_TEST_AREAS: &[&str] = &["trace", "daemon", "sockdiag"];

/// What one guest runs besides [`ROOT_TEST_AREAS`]: a kernel that cannot
/// load sock_diag for TCP, and the tests that expect exactly that.
struct WithoutSockDiag {
    /// On the kernel's command line: the kernel refuses to load these.
    append: &'static str,
    /// The area; its tests are ignored in an ordinary run.
    area: &'static str,
}

/// Booted once, on the first kernel of the run, with tcp_diag and
/// inet_diag refused by the kernel (`module_blacklist=`), as on a host whose
/// module loading is disabled.
const WITHOUT_SOCK_DIAG: WithoutSockDiag = WithoutSockDiag {
    append: "module_blacklist=tcp_diag,inet_diag",
    area: "nodiag",
};

/// A guest that did not finish by then is stopped and counted as failed.
const GUEST_TIMEOUT_SECS: u64 = 900;

/// Runs the matrix (or the one line `only` names) and returns what passed.
pub fn run_matrix(only: Option<&str>) -> anyhow::Result<Tally> {
    let lines: Vec<KernelLine> = match only {
        Some(name) => vec![kernels::line(name)?],
        None => MATRIX.to_vec(),
    };
    let binary = build_test_binary()?;
    let mut tally = Tally::default();
    for (i, line) in lines.iter().enumerate() {
        // One kernel that cannot be had or booted fails as one test, and
        // the others still run.
        let kernel = match line.fetch() {
            Ok(k) => k,
            Err(e) => {
                tally += Tally::failure(format!("Linux {}: {e:#}", line.name));
                continue;
            }
        };
        let runs: Vec<(String, Vec<String>)> = ROOT_TEST_AREAS
            .iter()
            .map(|area| run_of(&binary, area, &["--test-threads=1"]))
            .collect();
        tally += boot(&kernel, "", &runs)
            .unwrap_or_else(|e| Tally::failure(format!("Linux {}: {e:#}", line.name)));
        if i == 0 {
            let w = &WITHOUT_SOCK_DIAG;
            let run = run_of(&binary, w.area, &["--ignored"]);
            tally += boot(&kernel, w.append, &[run]).unwrap_or_else(|e| {
                Tally::failure(format!("Linux {} ({}): {e:#}", line.name, w.append))
            });
        }
    }
    Ok(tally)
}

/// The path of [`TEST_BINARY`], built as `cargo test` builds it.
fn build_test_binary() -> anyhow::Result<PathBuf> {
    let mut build = cargo();
    build.args([
        "test",
        "--no-run",
        "--message-format=json",
        "--package",
        "tracer",
        "--test",
        TEST_BINARY,
    ]);
    eprintln!("xtask: $ {}", cmd::describe(&build));
    let out = build
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run cargo to build the test binary")?;
    anyhow::ensure!(out.status.success(), "building the test binary failed");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_test = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "test"));
        if is_test
            && msg["target"]["name"] == TEST_BINARY
            && let Some(exe) = msg["executable"].as_str()
        {
            return Ok(PathBuf::from(exe));
        }
    }
    anyhow::bail!("cargo built no test binary {TEST_BINARY}")
}

/// One run of the test binary in a guest, `BINARY ARGS AREA::` (libtest's
/// filter `daemon::` selects `daemon::leaks::…` and nothing outside the
/// module): its name (that of its log and status files, and in the
/// report) and its command line.
fn run_of(binary: &Path, area: &str, args: &[&str]) -> (String, Vec<String>) {
    let mut argv = vec![binary.display().to_string()];
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    argv.push(format!("{area}::"));
    (area.to_owned(), argv)
}

/// True when qemu can use KVM here: a CPU with virtualisation and a
/// /dev/kvm we may open. Without it qemu emulates the CPU (TCG): slower,
/// but every test still runs.
fn kvm_usable() -> bool {
    let cpu_has_it = std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| {
        c.lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
    });
    cpu_has_it
        && std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok()
}

/// Boots `kernel` with `append` on its command line and runs each run of
/// the test binary (name, argv) inside; returns their tally and prints
/// their output.
fn boot(kernel: &Kernel, append: &str, runs: &[(String, Vec<String>)]) -> anyhow::Result<Tally> {
    let label = if append.is_empty() {
        format!("Linux {} ({})", kernel.line.name, kernel.release)
    } else {
        format!("Linux {} ({}, {append})", kernel.line.name, kernel.release)
    };
    let out = cmd::workspace_root().join("target/xtask/vm").join(format!(
        "{}{}",
        kernel.release,
        if append.is_empty() { "" } else { "-nodiag" }
    ));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let script = out.join("guest.sh");
    std::fs::write(&script, results::guest_script(&out, runs))?;
    let mut vng = Command::new("timeout");
    vng.args(["--kill-after=30", &GUEST_TIMEOUT_SECS.to_string(), "vng"])
        .arg("--run")
        .arg(&kernel.image)
        .args(["--cpus", "2", "--memory", "4G"])
        .arg("--rwdir")
        .arg(&out)
        .arg("--cwd")
        .arg(cmd::workspace_root().join("tracer"));
    if !kvm_usable() {
        vng.arg("--disable-kvm");
    }
    if !append.is_empty() {
        vng.args(["--append", append]);
    }
    vng.arg("--exec").arg(format!("sh {}", script.display()));
    eprintln!("xtask: booting {label}");
    let started = Instant::now();
    let console = std::fs::File::create(out.join("console.log"))?;
    let status = vng
        .stdout(console.try_clone()?)
        .stderr(console)
        .status()
        .context("cannot start vng (virtme-ng)")?;
    let guest = results::Guest {
        label: &label,
        release: &kernel.release,
        sock_diag: append.is_empty(),
    };
    let tally = results::collect(&out, runs, &guest)?;
    // vng's own status says little (it exits 255 when the guest powers off
    // after the script); the guest's files say how the tests went.
    eprintln!(
        "xtask: {label}: {} passed, {} failed, in {:.0} s (vng {status})",
        tally.passed,
        tally.failed,
        started.elapsed().as_secs_f64()
    );
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_run_filters_one_module_of_the_test_binary() {
        let (name, argv) = run_of(Path::new("/t/it-1"), "trace", &["--test-threads=1"]);
        assert_eq!(name, "trace");
        assert_eq!(argv, ["/t/it-1", "--test-threads=1", "trace::"]);
        // Every area is a module of the binary, or its filter selects
        // nothing (the guest would report "ran no test").
        let main = std::fs::read_to_string(cmd::workspace_root().join("tracer/tests/it/main.rs"))
            .expect("tracer/tests/it/main.rs");
        for area in ROOT_TEST_AREAS.iter().chain([&WITHOUT_SOCK_DIAG.area]) {
            assert!(
                main.contains(&format!("\nmod {area};\n")),
                "no module {area}"
            );
        }
    }
}
