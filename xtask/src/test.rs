//! `cargo xtask test`: the one command that checks everything, locally and
//! in CI: set-up, formatting, lints (host and BPF target), every test.

use std::process::Command;

use crate::{
    cmd::{self, cargo, is_root},
    package, setup,
    tools::{self, Scope},
};

pub fn test(extra: &[String]) -> anyhow::Result<()> {
    setup::toolchain()?;
    tools::install(Scope::All)?;
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if !is_root() {
        if in_ci {
            anyhow::bail!("CI=true but not root: the eBPF tests must run in CI");
        }
        eprintln!(
            "xtask: WARNING: not root: the eBPF integration tests will be SKIPPED; \
             run `sudo -E cargo xtask test` to run them"
        );
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
    let (passed, failed) = run_tests(extra)?;
    package::check_install()?;
    package::check_deb()?;
    // One closing line for every test binary together.
    println!("tests: {passed} passed, {failed} failed");
    Ok(())
}

/// Runs `cargo test --no-fail-fast`, passing its output through, and adds
/// up the `test result:` lines of every test binary. Without
/// --no-fail-fast the first failing binary would stop the run and hide
/// whether the others pass. Fails (after printing the closing line) when
/// any binary failed, naming each.
fn run_tests(extra: &[String]) -> anyhow::Result<(u64, u64)> {
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
        if let Some(rest) = line.strip_prefix("test result: ") {
            let count = |label: &str| -> u64 {
                rest.split(';')
                    .find_map(|part| part.trim().strip_suffix(label))
                    .and_then(|n| n.trim().rsplit(' ').next()?.parse().ok())
                    .unwrap_or(0)
            };
            passed += count(" passed");
            failed += count(" failed");
        }
    }
    let status = child.wait()?;
    let targets = failed_targets.join().unwrap_or_default();
    if !status.success() {
        println!("tests: {passed} passed, {failed} failed");
        if targets.is_empty() {
            anyhow::bail!("`cargo test` failed ({status})");
        }
        anyhow::bail!("`cargo test` failed ({status}) in: {}", targets.join(", "));
    }
    Ok((passed, failed))
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
