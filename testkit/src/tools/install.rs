//! The installer: one `apt-get update`, one `apt-get install`, one `pip
//! install` for what is missing, and a check afterwards that the list named
//! the right packages.

use std::{
    collections::BTreeSet,
    io,
    path::Path,
    process::{Command, Stdio},
};

use super::{
    Scope,
    Source::{Apt, Base, Crate, IfPresent, Pypi, Rustup},
    TOOLS, Tool,
};
use crate::process::{describe, is_root, which};

/// Where Debian packages put programs. Looked at instead of PATH because
/// a program of the same name elsewhere (pyenv's python3, a hand-built
/// git) is not what the tests mean: they run /usr/bin/python3.
const DEBIAN_DIRS: [&str; 4] = ["/usr/bin", "/usr/sbin", "/bin", "/sbin"];

fn debian_has(command: &str) -> bool {
    DEBIAN_DIRS
        .iter()
        .any(|d| Path::new(d).join(command).is_file())
}

fn pip_works() -> bool {
    Command::new("python3")
        .args(["-m", "pip", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs a command with inherited stdio; fails unless it exits 0.
fn run(cmd: &mut Command) -> io::Result<()> {
    eprintln!("tools: $ {}", describe(cmd));
    let status = cmd
        .status()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot start `{}`: {e}", describe(cmd))))?;
    if !status.success() {
        return Err(io::Error::other(format!(
            "`{}` failed ({status})",
            describe(cmd)
        )));
    }
    Ok(())
}

/// Installs the missing Debian and PyPI tools of `scope`: one `apt-get
/// update`, one `apt-get install`, one `pip install`. Without root (or
/// apt-get) a missing Debian tool is reported and not installed; the tests
/// that need it then fail or skip loudly. The toolchain (`Rustup`,
/// `Crate`) is xtask's to install (`cargo xtask setup`, the package check).
pub fn install(scope: Scope) -> io::Result<()> {
    let wanted = || TOOLS.iter().filter(move |t| scope == Scope::All || t.bench);
    let missing_deb = |t: &&Tool| matches!(t.source, Apt(_) | Base(_)) && !debian_has(t.command);
    let missing_pypi = |t: &&Tool| matches!(t.source, Pypi(_)) && which(t.command).is_none();

    let debs: Vec<&Tool> = wanted().filter(missing_deb).collect();
    let pypi: Vec<&Tool> = wanted().filter(missing_pypi).collect();
    let mut packages: BTreeSet<&str> = debs
        .iter()
        .filter_map(|t| match t.source {
            Apt(p) | Base(p) => Some(p),
            _ => None,
        })
        .collect();
    // Debian's python3 comes without pip.
    let need_pip = !pypi.is_empty() && !pip_works();
    if need_pip {
        packages.insert("python3-pip");
    }
    let can_apt = is_root() && which("apt-get").is_some();
    if !packages.is_empty() {
        if can_apt {
            apt_install(&packages)?;
        } else {
            for t in &debs {
                eprintln!(
                    "tools: WARNING: `{}` is missing ({}); install Debian package {}",
                    t.command,
                    t.why,
                    package_of(t)
                );
            }
        }
    }
    if !pypi.is_empty() {
        if pip_works() {
            pip_install(&pypi)?;
        } else {
            for t in &pypi {
                eprintln!(
                    "tools: WARNING: `{}` is missing ({}) and pip is not there to install PyPI {}",
                    t.command,
                    t.why,
                    package_of(t)
                );
            }
        }
    }
    // An install that succeeded but left a program missing means the list
    // names the wrong package for it: say so instead of failing a test later.
    if can_apt {
        let still: Vec<String> = wanted()
            .filter(|t| missing_deb(t) || missing_pypi(t))
            .map(|t| format!("`{}` (from {})", t.command, package_of(t)))
            .collect();
        if !still.is_empty() {
            return Err(io::Error::other(format!(
                "still missing after installing: {}; fix testkit/src/tools",
                still.join(", ")
            )));
        }
    }
    Ok(())
}

fn package_of(t: &Tool) -> &'static str {
    match t.source {
        Apt(p) | Base(p) | Pypi(p) | Crate(p) | IfPresent(p) => p,
        Rustup => "rustup",
    }
}

fn apt_install(packages: &BTreeSet<&str>) -> io::Result<()> {
    run(Command::new("apt-get").args(["update", "-q"]))?;
    // No recommends: prometheus would pull in node-exporter, a second
    // server. Installing prometheus does not start its server on a machine
    // without a running init: the package's postinst starts it through
    // invoke-rc.d, which finds no runlevel (or policy-rc.d forbids it) and
    // starts nothing, and through deb-systemd-invoke only when
    // /run/systemd/system exists. The tests start their own on a free port.
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn pip_install(tools: &[&Tool]) -> io::Result<()> {
    let packages: BTreeSet<&str> = tools.iter().map(|t| package_of(t)).collect();
    run(Command::new("python3")
        .args(["-m", "pip", "install", "--quiet"])
        .args(&packages)
        // Debian 12's python3 refuses pip installs (PEP 668) unless
        // told; as root they go to /usr/local, which Debian leaves
        // alone. Older pips ignore the variable.
        .env("PIP_BREAK_SYSTEM_PACKAGES", "1")
        .env("PIP_ROOT_USER_ACTION", "ignore"))
}
