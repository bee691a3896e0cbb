//! `cargo xtask test`: the one command that checks everything, locally and
//! in CI: set-up, formatting, lints (host and BPF target), every test.

use std::process::Command;

use crate::{
    cmd::{self, cargo, is_root},
    setup::{self, Tool},
};

/// Tools the root integration tests compare against or drive.
const TEST_TOOLS: &[Tool] = &[
    Tool {
        command: "tcpstates",
        package: "libbpf-tools",
        why: "ground truth for transitions",
    },
    Tool {
        command: "ip",
        package: "iproute2",
        why: "network namespaces",
    },
    Tool {
        command: "ss",
        package: "iproute2",
        why: "ground truth for socket states",
    },
];

pub fn test(extra: &[String]) -> anyhow::Result<()> {
    setup::toolchain()?;
    setup::debian_tools(TEST_TOOLS)?;
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
        Command::new("rustup")
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
    cmd::run(cargo().arg("test").args(extra))
}
