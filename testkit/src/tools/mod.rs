//! Every external program that the tests, the bench, xtask itself and the
//! kernel-matrix VM runner start, where each comes from, and the one
//! installer for them ([`install`]). `cargo xtask test` installs them all,
//! the bench those marked `bench`. A unit test (`spawns`) scans the
//! workspace's sources and fails when something is started that this list
//! does not name.
//!
//! The list lives here, below the tests, the bench and xtask, because all
//! three start these programs and two of them install them: one place for
//! the fact.

mod install;

pub use install::install;

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
    /// Installed by the bench too.
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
    tool(
        "sysctl",
        Apt("procps"),
        "a namespace's tcp_max_tw_buckets and tcp_tw_reuse (under ip netns exec)",
    ),
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
    /// What the bench runs.
    Bench,
}

#[cfg(test)]
mod spawns;
