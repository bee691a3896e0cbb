//! `cargo xtask test`: the one command that checks everything, locally and
//! in CI: set-up, formatting, lints (host and BPF target), every test.

use std::process::Command;

use testkit::tools::{self, Scope};

use crate::{
    cmd::{self, cargo, is_root},
    libtest, package, setup, vm,
};

/// `cargo xtask test`'s own flags.
#[derive(clap::Args)]
pub struct TestArgs {
    /// Only boot this kernel of the matrix (6.1 or 6.12) and run the root
    /// tests inside it: no lint, no host tests.
    #[arg(long, value_name = "VERSION", conflicts_with = "no_vm")]
    pub kernel: Option<String>,
    /// Skip the kernel matrix, for quick local runs (refused with CI=true).
    #[arg(long)]
    pub no_vm: bool,
    /// Seed of the randomized differential test (default: the fixed one
    /// CI runs), on the host and in every guest.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Arguments for `cargo test` on the host.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

pub fn test(args: &TestArgs) -> anyhow::Result<()> {
    setup::toolchain()?;
    tools::install(Scope::All)?;
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if let Some(seed) = args.seed {
        // SAFETY: before any thread is started; children inherit it.
        unsafe { std::env::set_var(vm::SEED_ENV, seed.to_string()) };
    }
    if args.no_vm && in_ci {
        anyhow::bail!("CI=true: the kernel matrix must run; --no-vm is for local runs");
    }
    if !is_root() {
        if in_ci {
            anyhow::bail!("CI=true but not root: the eBPF tests must run in CI");
        }
        eprintln!(
            "xtask: WARNING: not root: the eBPF integration tests and the kernel matrix \
             will be SKIPPED; run `sudo -E cargo xtask test` to run them"
        );
    }
    if let Some(kernel) = &args.kernel {
        anyhow::ensure!(
            is_root(),
            "--kernel runs root tests in a VM: run it as root"
        );
        let matrix = vm::run_matrix(Some(kernel))?;
        return report(None, &matrix);
    }

    cmd::run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    cmd::run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The kernel crate as the verifier will see it: BPF target, nightly.
    cmd::run(
        cmd::without_run_variables(&mut Command::new("rustup"))
            .current_dir(cmd::workspace_root().join("tracer-ebpf"))
            .args([
                "run",
                "nightly",
                "cargo",
                "clippy",
                "--release",
                "--target",
                "bpfel-unknown-none",
            ])
            .args(["-Z", "build-std=core", "--", "-D", "warnings"])
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("RUSTC")
            .env_remove("CARGO"),
    )?;
    // Default members: the kernel crate has nothing to test on the host.
    let host = run_tests(&args.args)?;
    // The matrix runs even when the host failed: one does not hide the other.
    let matrix = if args.no_vm || !is_root() {
        eprintln!(
            "xtask: WARNING: the kernel matrix is SKIPPED; only the host's kernel was tested"
        );
        vm::Tally::default()
    } else {
        vm::run_matrix(None)?
    };
    if host.failed_targets.is_empty() && matrix.failed == 0 {
        package::check_install()?;
        package::check_deb()?;
    }
    report(Some(&host), &matrix)
}

/// What `cargo test` on the host gave.
struct HostRun {
    passed: u64,
    failed: u64,
    /// Test targets that failed, as cargo names them; empty when all passed.
    failed_targets: Vec<String>,
}

/// Prints a line per kernel and the one closing line over all of them;
/// fails when anything failed.
fn report(host: Option<&HostRun>, matrix: &vm::Tally) -> anyhow::Result<()> {
    let (mut passed, mut failed) = (matrix.passed, matrix.failed);
    if let Some(h) = host {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        println!(
            "xtask: host kernel ({}): {} passed, {} failed",
            release.trim(),
            h.passed,
            h.failed
        );
        passed += h.passed;
        failed += h.failed;
    }
    for line in &matrix.summaries {
        println!("xtask: {line}");
    }
    // One closing line for every test binary on every kernel together.
    println!("tests: {passed} passed, {failed} failed");
    if let Some(h) = host
        && !h.failed_targets.is_empty()
    {
        anyhow::bail!("`cargo test` failed in: {}", h.failed_targets.join(", "));
    }
    anyhow::ensure!(
        matrix.failed == 0,
        "the kernel matrix has failures (lines above)"
    );
    Ok(())
}

/// Runs `cargo test --no-fail-fast`, passing its output through, and adds
/// up the `test result:` lines of every test binary. Without
/// --no-fail-fast the first failing binary would stop the run and hide
/// whether the others pass. Names each binary that failed.
fn run_tests(extra: &[String]) -> anyhow::Result<HostRun> {
    use std::io::{BufRead as _, BufReader};
    let mut command = cargo();
    // Before `extra`: after a `--` in it, the flag would go to the binaries.
    command
        .args(["test", "--no-fail-fast"])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    eprintln!("xtask: $ {}", cmd::describe(&command));
    let mut child = command.spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stderr"))?;
    // stderr on a thread, so neither pipe fills while the other is read.
    // It names each failed binary, also one that crashed before printing
    // a `test result:` line.
    let failed_targets = std::thread::spawn(move || {
        let mut targets = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            if let Some(target) = failed_target(&line) {
                targets.push(target.to_owned());
            }
        }
        targets
    });
    let (mut passed, mut failed) = (0, 0);
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some((p, f)) = libtest::result_line(&line) {
            passed += p;
            failed += f;
        }
    }
    let status = child.wait()?;
    let mut failed_targets = failed_targets.join().unwrap_or_default();
    if !status.success() && failed_targets.is_empty() {
        failed_targets.push(format!("cargo test ({status})"));
    }
    Ok(HostRun {
        passed,
        failed,
        failed_targets,
    })
}

/// The target in cargo's `error: test failed, to rerun pass `--test daemon``.
fn failed_target(line: &str) -> Option<&str> {
    line.strip_prefix("error: test failed, to rerun pass `")?
        .strip_suffix('`')
}

#[cfg(test)]
mod tests {
    use super::failed_target;

    #[test]
    fn failed_targets_are_read_from_cargo() {
        assert_eq!(
            failed_target("error: test failed, to rerun pass `--test daemon`"),
            Some("--test daemon")
        );
        assert_eq!(
            failed_target("error: test failed, to rerun pass `-p tracer --lib`"),
            Some("-p tracer --lib")
        );
        assert_eq!(failed_target("error: 2 targets failed:"), None);
    }
}
