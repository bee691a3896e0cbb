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
    let (passed, failed) = run_tests(cargo().arg("test").args(extra))?;
    package::check_install()?;
    package::check_deb()?;
    // One closing line for every test binary together.
    println!("tests: {passed} passed, {failed} failed");
    Ok(())
}

/// Runs `cargo test`, passing its output through, and adds up the
/// `test result:` lines of every test binary.
fn run_tests(command: &mut Command) -> anyhow::Result<(u64, u64)> {
    use std::io::{BufRead as _, BufReader};
    eprintln!("xtask: $ {}", cmd::describe(command));
    let mut child = command.stdout(std::process::Stdio::piped()).spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
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
    if !status.success() {
        println!("tests: {passed} passed, {failed} failed");
        anyhow::bail!("`cargo test` failed ({status})");
    }
    Ok((passed, failed))
}
