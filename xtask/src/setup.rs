//! Installing what the build needs (the programs the tests run are in
//! `tools`). Every step checks first and skips what is already there, so
//! running it again costs a second.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

use crate::cmd::{self, cargo, output, which};

/// The nightly toolchain the kernel programs are built with (aya-build
/// uses `rustup run nightly`).
const NIGHTLY: &str = "nightly";
/// bpf-linker release known to work with aya-ebpf 0.2 and LLVM 22.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Everything building tracer needs.
pub fn toolchain() -> anyhow::Result<()> {
    if which("rustup").is_none() {
        bail!(
            "rustup is not on PATH: tracer's kernel programs need a rustup-managed nightly toolchain"
        );
    }
    nightly_components()?;
    bpf_linker()?;
    eprintln!("xtask: toolchain ready (nightly with rust-src, bpf-linker)");
    Ok(())
}

fn nightly_components() -> anyhow::Result<()> {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"])).unwrap_or_default();
    if !toolchains.lines().any(|l| l.starts_with(NIGHTLY)) {
        cmd::run(Command::new("rustup").args([
            "toolchain",
            "install",
            NIGHTLY,
            "--profile",
            "minimal",
            "--component",
            "rust-src,clippy",
        ]))
        .context("no nightly toolchain is installed and installing one failed")?;
        return Ok(());
    }
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        NIGHTLY,
    ]))
    .unwrap_or_default();
    // rust-src: -Z build-std=core for bpfel-unknown-none. clippy: linting the
    // kernel crate on its own target.
    for component in ["rust-src", "clippy"] {
        if !installed.lines().any(|l| l.starts_with(component)) {
            cmd::run(Command::new("rustup").args([
                "component",
                "add",
                component,
                "--toolchain",
                NIGHTLY,
            ]))?;
        }
    }
    Ok(())
}

/// True when a bpf-linker on PATH runs (a nightly update removes the LLVM
/// library it was linked against, and then it no longer starts).
fn bpf_linker_works() -> bool {
    output(Command::new("bpf-linker").arg("--version")).is_some()
}

/// Builds bpf-linker against the LLVM shared library that the nightly rustc
/// ships: `cargo install bpf-linker` alone wants a system LLVM of the same
/// major version, which distributions rarely have.
fn bpf_linker() -> anyhow::Result<()> {
    if bpf_linker_works() {
        return Ok(());
    }
    let sysroot =
        output(Command::new("rustc").args([&format!("+{NIGHTLY}"), "--print", "sysroot"]))
            .context("cannot ask the nightly rustc for its sysroot")?;
    let sysroot = PathBuf::from(sysroot.trim());
    let verbose = output(Command::new("rustc").args([&format!("+{NIGHTLY}"), "-vV"]))
        .context("cannot ask the nightly rustc for its version")?;
    let llvm_major = verbose
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("the nightly rustc does not say which LLVM it uses")?
        .to_owned();
    let lib_dir = sysroot.join("lib");
    let libllvm = std::fs::read_dir(&lib_dir)
        .with_context(|| format!("cannot list {}", lib_dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so") || n.starts_with("libLLVM-"))
        })
        .with_context(|| format!("no libLLVM shared library in {}", lib_dir.display()))?;

    // bpf-linker's build finds LLVM through LLVM_PREFIX/lib/libLLVM.so.
    let prefix = cmd::workspace_root().join("target/xtask/llvm");
    let link = prefix.join("lib/libLLVM.so");
    std::fs::create_dir_all(prefix.join("lib"))?;
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&libllvm, &link)
        .with_context(|| format!("cannot link {} to {}", link.display(), libllvm.display()))?;

    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against {} (LLVM {llvm_major}); about a minute",
        libllvm.display()
    );
    cmd::run(
        cargo()
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--version",
                BPF_LINKER_VERSION,
            ])
            .args([
                "--no-default-features",
                "--features",
                &format!("llvm-{llvm_major}"),
            ])
            .arg("--force")
            .env("LLVM_PREFIX", &prefix)
            // At run time, find libLLVM where the nightly keeps it.
            .env(
                "RUSTFLAGS",
                format!("-C link-arg=-Wl,-rpath,{}", lib_dir.display()),
            ),
    )?;
    if !bpf_linker_works() {
        bail!("bpf-linker was installed but does not run; is ~/.cargo/bin on PATH?");
    }
    Ok(())
}
