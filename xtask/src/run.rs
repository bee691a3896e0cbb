//! `cargo xtask run`: build in release mode and run tracer as root.

use std::process::Command;

use anyhow::Context as _;

use crate::{
    cmd::{self, cargo, is_root, which},
    setup,
};

pub fn run(args: &[String]) -> anyhow::Result<()> {
    setup::toolchain()?;
    cmd::run(cargo().args(["build", "--release", "--package", "tracer"]))?;
    let binary = cmd::workspace_root().join("target/release/tracer");
    let args: Vec<String> = if args.is_empty() {
        vec!["daemon".to_owned()]
    } else {
        args.to_vec()
    };
    // Loading eBPF needs root; sudo keeps the terminal for Ctrl-C.
    let mut command = if is_root() || which("sudo").is_none() {
        Command::new(&binary)
    } else {
        let mut c = Command::new("sudo");
        c.arg("-E").arg(&binary);
        c
    };
    command.args(&args);
    eprintln!("xtask: $ {}", cmd::describe(&command));
    let status = command
        .status()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    std::process::exit(status.code().unwrap_or(1));
}
