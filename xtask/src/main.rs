//! `cargo xtask`: what cargo cannot do alone.
//!
//! * `setup`: the nightly's rust-src and a bpf-linker built against the
//!   nightly's own LLVM (needed to build the kernel programs). Idempotent.
//! * `run`: set-up, a release build, then `tracer daemon` (or the given
//!   arguments) as root.
//! * `test`: set-up plus the test tools, then format, lint and every test.

mod cmd;
mod run;
mod setup;
mod test;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Set-up, run and test tracer")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building the kernel programs needs (skips what is there).
    Setup,
    /// Build in release mode and run tracer as root. Arguments after `--` go
    /// to tracer (default: `daemon`).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, check formatting and lints, and run every test (the eBPF tests
    /// need root; with CI=true they must run). Arguments after `--` go to
    /// `cargo test`.
    Test {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Task::Setup => setup::toolchain(),
        Task::Run { args } => run::run(&args),
        Task::Test { args } => test::test(&args),
    }
}
