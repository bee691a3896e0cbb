//! `cargo xtask`: what cargo cannot do alone.
//!
//! * `setup`: the nightly's rust-src and a bpf-linker built against the
//!   nightly's own LLVM (needed to build the kernel programs). Idempotent.
//! * `run`: set-up, a release build, then `tracer daemon` (or the given
//!   arguments) as root.
//! * `test`: set-up plus the test tools, then format, lint, every test, the
//!   root tests again in each kernel of the matrix (VMs), and checks of
//!   `install` and of the Debian package.
//! * `install`: release build, then binary, unit, config and docs in place.
//! * `deb`: the Debian package (cargo-deb), checked.
//! * `bench`: release builds of tracer and of the bench (`bench/`, binary
//!   `tracer-bench`), then the bench: what tracer costs (churn rate, lost
//!   events, CPU, kernel time, memory, HTTP latency, start-up) against the
//!   issue's targets; as root.

mod bench;
mod cmd;
mod libtest;
mod package;
mod run;
mod setup;
mod test;
mod vm;

use std::path::PathBuf;

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
    /// Set up, check formatting and lints, run every test (the eBPF tests
    /// need root; with CI=true they must run), run the root tests again in
    /// each kernel of the matrix booted in a VM, then check `install` and
    /// the Debian package. Arguments after `--` go to `cargo test`.
    Test(test::TestArgs),
    /// Build in release mode and install the binary, the systemd unit, the
    /// default config (kept if present) and the docs.
    Install {
        /// Stage under this directory instead of the real root (packaging).
        #[arg(long, default_value = "")]
        destdir: PathBuf,
        /// Where the binary and docs go (bin/, share/doc/).
        #[arg(long, default_value = "/usr")]
        prefix: PathBuf,
    },
    /// Build the Debian package (target/debian/) and check its contents.
    Deb,
    /// Measure tracer against its performance targets (root; about 5
    /// minutes; --quick about 2): prints a table and writes
    /// results/bench-<UTC time>.json. Its flags (`cargo xtask bench
    /// --help`) are the bench's own.
    #[command(disable_help_flag = true)]
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Task::Setup => setup::toolchain(),
        Task::Run { args } => run::run(&args),
        Task::Test(args) => test::test(&args),
        Task::Install { destdir, prefix } => package::install(&destdir, &prefix),
        Task::Deb => package::check_deb(),
        Task::Bench { args } => bench::bench(&args),
    }
}
