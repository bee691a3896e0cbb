//! Builds the kernel programs (`tracer-ebpf`) for the BPF target with the
//! nightly toolchain and bpf-linker, and leaves the object in OUT_DIR, where
//! `src/kernel/probe.rs` embeds it.

use anyhow::{Context as _, bail};

fn main() -> anyhow::Result<()> {
    if which::which("bpf-linker").is_err() {
        bail!(
            "bpf-linker is not on PATH. Run `cargo xtask setup` once: it adds rust-src to the \
             nightly toolchain and builds bpf-linker against the nightly's own LLVM."
        );
    }
    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tracer-ebpf");
    let package = aya_build::Package {
        name: "tracer-ebpf",
        root_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default())
        .context("building the kernel programs (tracer-ebpf) failed; `cargo xtask setup` installs what they need")
}
