//! Rebuild the kernel object when the bpf-linker binary changes: cargo cannot
//! express a dependency on a linker, so watch the file `which` finds.
fn main() {
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(err) => {
            println!("cargo:warning=bpf-linker not found on PATH ({err}); run `cargo xtask setup`")
        }
    }
}
