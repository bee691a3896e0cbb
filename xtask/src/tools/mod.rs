//! Every external program that the tests, the bench, xtask itself and the
//! kernel-matrix VM runner start, where each comes from, and the one
//! installer for them. `cargo xtask test` installs them all, `cargo xtask
//! bench` those marked `bench`. A unit test (`spawns`) scans the sources
//! and fails when something is started that this list does not name.

use std::{collections::BTreeSet, path::Path, process::Command};

use anyhow::bail;

use crate::cmd::{self, is_root, output, which};

/// Where a program comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A Debian package, installed with apt-get when the program is missing.
    Apt(&'static str),
    /// A Debian package every Debian system has (Essential, or Priority
    /// required). Listed so the list is complete; installed like `Apt` if
    /// a stripped-down image lacks it.
    Base(&'static str),
    /// A PyPI package, installed with pip when the program is missing.
    Pypi(&'static str),
    /// Part of the rustup-managed toolchain. rustup itself must be there
    /// (<https://rustup.rs>); `cargo xtask setup` checks it.
    Rustup,
    /// A crate xtask builds or installs where it needs it: bpf-linker in
    /// `cargo xtask setup`, cargo-deb in `cargo xtask deb`.
    Crate(&'static str),
    /// Used only when present, never installed: sudo, which `cargo xtask
    /// run` needs only when not root (and then cannot install).
    IfPresent(&'static str),
}

use Source::{Apt, Base, Crate, IfPresent, Pypi, Rustup};

/// An external program and why it is needed.
pub struct Tool {
    pub command: &'static str,
    pub source: Source,
    /// Installed by `cargo xtask bench` too.
    pub bench: bool,
    pub why: &'static str,
}

const fn tool(command: &'static str, source: Source, why: &'static str) -> Tool {
    Tool {
        command,
        source,
        bench: false,
        why,
    }
}

const fn bench(command: &'static str, source: Source, why: &'static str) -> Tool {
    Tool {
        command,
        source,
        bench: true,
        why,
    }
}

/// The list. Order: ground truths, namespaces and privileges, shells,
/// test peers, xtask's own, the VM runner's.
pub const TOOLS: &[Tool] = &[
    bench(
        "tcpstates",
        Apt("libbpf-tools"),
        "ground truth for transitions; the reference the bench compares with",
    ),
    bench(
        "bpftool",
        Apt("bpftool"),
        "the daemon's attached programs (tests); BPF run time (bench)",
    ),
    bench(
        "ss",
        Apt("iproute2"),
        "the kernel's own socket states (tests); held connections (bench)",
    ),
    tool("ip", Apt("iproute2"), "network namespaces for the tests"),
    tool("nsenter", Base("util-linux"), "ss inside every namespace"),
    tool(
        "unshare",
        Base("util-linux"),
        "a private mount namespace for the tracefs tests",
    ),
    tool(
        "setpriv",
        Base("util-linux"),
        "the daemon with the unit's capabilities only",
    ),
    tool(
        "mount",
        Base("mount"),
        "a fake tracefs in the private mount namespace",
    ),
    tool(
        "umount",
        Base("mount"),
        "no tracefs in the private mount namespace",
    ),
    tool("sh", Base("dash"), "the tracefs tests' scripts"),
    tool(
        "bash",
        Base("bash"),
        "a connect from a known pid and comm (/dev/tcp)",
    ),
    tool(
        "stdbuf",
        Base("coreutils"),
        "line-buffered tcpstates output",
    ),
    tool("mkdir", Base("coreutils"), "the tracefs tests' scripts"),
    tool("sleep", Base("coreutils"), "the tracefs tests' scripts"),
    tool(
        "python3",
        Apt("python3"),
        "socket holders and a leaking server (as /usr/bin/python3); pip",
    ),
    tool("openssl", Apt("openssl"), "certificates for the TLS tests"),
    tool(
        "curl",
        Apt("curl"),
        "an independent HTTPS and basic-auth client",
    ),
    tool(
        "htpasswd",
        Apt("apache2-utils"),
        "bcrypt hashes for the basic-auth tests",
    ),
    tool(
        "prometheus",
        Apt("prometheus"),
        "a real server scraping the daemon",
    ),
    tool(
        "promtool",
        Apt("prometheus"),
        "checks the rules, config and dashboard queries",
    ),
    tool("tmux", Apt("tmux"), "a real terminal for `tracer top`"),
    tool(
        "systemd-analyze",
        Apt("systemd"),
        "verifies the unit and scores its hardening offline",
    ),
    tool(
        "kubernetes-validate",
        Pypi("kubernetes-validate"),
        "checks the manifests offline",
    ),
    bench("git", Apt("git"), "the commit a bench result belongs to"),
    bench(
        "rustup",
        Rustup,
        "the nightly toolchain for the kernel programs",
    ),
    bench("cargo", Rustup, "builds, lints and tests"),
    bench("rustc", Rustup, "asked for the nightly's sysroot and LLVM"),
    bench(
        "bpf-linker",
        Crate("bpf-linker"),
        "links the kernel programs",
    ),
    tool("cargo-deb", Crate("cargo-deb"), "builds the Debian package"),
    tool(
        "dpkg-deb",
        Base("dpkg"),
        "checks the Debian package; unpacks kernel packages for the VMs",
    ),
    tool(
        "apt-get",
        Base("apt"),
        "installs these tools; downloads kernel packages for the VMs",
    ),
    tool(
        "apt-cache",
        Base("apt"),
        "finds the newest kernel package of each matrix line",
    ),
    tool(
        "timeout",
        Base("coreutils"),
        "stops a kernel-matrix guest that hangs",
    ),
    tool("sudo", IfPresent("sudo"), "`cargo xtask run` as a user"),
    tool(
        "qemu-system-x86_64",
        Apt("qemu-system-x86"),
        "boots other kernels (VM runner)",
    ),
    tool(
        "busybox",
        Apt("busybox-static"),
        "the VM guests' init (virtme-ng)",
    ),
    tool(
        "depmod",
        Apt("kmod"),
        "module maps of the downloaded kernels",
    ),
    tool(
        "modprobe",
        Apt("kmod"),
        "checks in each guest that tcp_diag loads (or must not)",
    ),
    tool(
        "vng",
        Pypi("virtme-ng"),
        "runs the tests inside a kernel (VM runner)",
    ),
    tool("file", Apt("file"), "tells kernel images apart (VM runner)"),
    tool(
        "strings",
        Apt("binutils"),
        "a kernel image's version (VM runner)",
    ),
];

/// Which tools to install.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything: `cargo xtask test`.
    All,
    /// What `cargo xtask bench` runs.
    Bench,
}

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
    output(Command::new("python3").args(["-m", "pip", "--version"])).is_some()
}

/// Installs the missing Debian and PyPI tools of `scope`: one `apt-get
/// update`, one `apt-get install`, one `pip install`. Without root (or
/// apt-get) a missing Debian tool is reported and not installed; the tests
/// that need it then fail or skip loudly. The toolchain (`Rustup`,
/// `Crate`) is `setup::toolchain`'s and `package::check_deb`'s to install.
pub fn install(scope: Scope) -> anyhow::Result<()> {
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
                    "xtask: WARNING: `{}` is missing ({}); install Debian package {}",
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
                    "xtask: WARNING: `{}` is missing ({}) and pip is not there to install PyPI {}",
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
            bail!(
                "still missing after installing: {}; fix xtask/src/tools",
                still.join(", ")
            );
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

fn apt_install(packages: &BTreeSet<&str>) -> anyhow::Result<()> {
    cmd::run(Command::new("apt-get").args(["update", "-q"]))?;
    // No recommends: prometheus would pull in node-exporter, a second
    // server. Installing prometheus does not start its server on a machine
    // without a running init: the package's postinst starts it through
    // invoke-rc.d, which finds no runlevel (or policy-rc.d forbids it) and
    // starts nothing, and through deb-systemd-invoke only when
    // /run/systemd/system exists. The tests start their own on a free port.
    cmd::run(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn pip_install(tools: &[&Tool]) -> anyhow::Result<()> {
    let packages: BTreeSet<&str> = tools.iter().map(|t| package_of(t)).collect();
    cmd::run(
        Command::new("python3")
            .args(["-m", "pip", "install", "--quiet"])
            .args(&packages)
            // Debian 12's python3 refuses pip installs (PEP 668) unless
            // told; as root they go to /usr/local, which Debian leaves
            // alone. Older pips ignore the variable.
            .env("PIP_BREAK_SYSTEM_PACKAGES", "1")
            .env("PIP_ROOT_USER_ACTION", "ignore"),
    )
}

#[cfg(test)]
mod spawns;
