//! `cargo xtask bench`: release builds of tracer and of the bench crate
//! (`bench/`, binary `tracer-bench`), then the bench with the tracer just
//! built. Its flags are the bench's own, passed through; `--help` prints
//! them without building tracer.

use std::process::Command;

use anyhow::bail;

use crate::{
    cmd::{self, cargo, is_root, workspace_root},
    setup,
};

pub fn bench(args: &[String]) -> anyhow::Result<()> {
    let help = args.iter().any(|a| a == "-h" || a == "--help");
    if !help && !is_root() {
        bail!(
            "cargo xtask bench needs root: it loads BPF programs, changes sysctls and holds \
             up to two million sockets; run `sudo -E cargo xtask bench`"
        );
    }
    // --tracer names a binary to bench instead of the one built here.
    let own_tracer = !help
        && !args
            .iter()
            .any(|a| a == "--tracer" || a.starts_with("--tracer="));
    let mut build = cargo();
    build.args(["build", "--release", "--package", "tracer-bench"]);
    let mut bench_args = Vec::new();
    if own_tracer {
        setup::toolchain()?;
        build.args(["--package", "tracer"]);
        let tracer = workspace_root().join("target/release/tracer");
        bench_args.extend(["--tracer".to_owned(), tracer.display().to_string()]);
    }
    cmd::run(&mut build)?;
    let bench = workspace_root().join("target/release/tracer-bench");
    bench_args.extend(args.iter().cloned());
    cmd::run(Command::new(&bench).args(&bench_args))
}
