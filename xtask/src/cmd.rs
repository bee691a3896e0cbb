//! Running commands and finding things, with errors that name the command.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};
pub use testkit::process::{describe, is_root, which};

/// Runs a command with inherited stdio; fails unless it exits 0.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("xtask: $ {}", describe(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{}`", describe(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", describe(cmd));
    }
    Ok(())
}

/// Runs a command quietly and returns its stdout, or None if it failed.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `cargo`, as the one that runs xtask, without the variables `cargo run`
/// set for xtask itself (see [`without_run_variables`]).
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    without_run_variables(&mut cmd);
    cmd
}

/// Keeps the variables `cargo run` set for xtask itself from a cargo that
/// xtask starts. Build scripts (ring's among them) ask to rerun when
/// `CARGO_MANIFEST_DIR` or `CARGO_PKG_NAME` change in cargo's own
/// environment; inherited from `cargo xtask`, they differ from a shell's,
/// so every xtask build rebuilt what a plain `cargo build` had built.
pub fn without_run_variables(cmd: &mut Command) -> &mut Command {
    for (name, _) in std::env::vars_os() {
        if is_run_variable(&name.to_string_lossy()) {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// Variables `cargo run` sets for the program it runs (and only for it).
fn is_run_variable(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || matches!(
            name,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_MANIFEST_LINKS"
                | "CARGO_BIN_NAME"
                | "CARGO_CRATE_NAME"
                | "CARGO_PRIMARY_PACKAGE"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_cargo_run_variables_are_dropped() {
        for name in [
            "CARGO_PKG_NAME",
            "CARGO_PKG_VERSION_MAJOR",
            "CARGO_MANIFEST_DIR",
        ] {
            assert!(is_run_variable(name), "{name}");
        }
        for name in [
            "CARGO",
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "RUSTUP_TOOLCHAIN",
            "PATH",
        ] {
            assert!(!is_run_variable(name), "{name}");
        }
    }
}
