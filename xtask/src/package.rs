//! `cargo xtask install` and the Debian package: the same files in the same
//! places, and the checks `cargo xtask test` runs on both.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail, ensure};

use crate::cmd::{self, cargo, output, workspace_root};

/// What goes where, relative to the root: (source in the repo, destination).
fn files(prefix: &Path) -> Vec<(PathBuf, PathBuf, u32)> {
    let root = workspace_root();
    let rel = prefix.strip_prefix("/").unwrap_or(prefix);
    vec![
        (
            root.join("target/release/tracer"),
            rel.join("bin/tracer"),
            0o755,
        ),
        (
            root.join("deploy/systemd/tracer.service"),
            PathBuf::from("etc/systemd/system/tracer.service"),
            0o644,
        ),
        (
            root.join("README.md"),
            rel.join("share/doc/tracer/README.md"),
            0o644,
        ),
    ]
}

/// Builds in release mode and installs binary, unit, default config and
/// documentation under `destdir` (empty: the real root).
pub fn install(destdir: &Path, prefix: &Path) -> anyhow::Result<()> {
    crate::setup::toolchain()?;
    cmd::run(cargo().args(["build", "--release", "--package", "tracer"]))?;
    for (from, to, mode) in files(prefix) {
        let dest = destdir.join(&to);
        copy(&from, &dest, mode)?;
        // The unit names the binary: keep it right for other prefixes.
        if to.ends_with("tracer.service") {
            let unit = std::fs::read_to_string(&dest)?;
            let binary = prefix.join("bin/tracer");
            std::fs::write(
                &dest,
                unit.replace("/usr/bin/tracer", &binary.display().to_string()),
            )?;
        }
        eprintln!("xtask: installed {}", dest.display());
    }
    // Never overwrite an operator's configuration.
    let config = destdir.join("etc/tracer/tracer.toml");
    if config.exists() {
        eprintln!("xtask: kept the existing {}", config.display());
    } else {
        copy(&workspace_root().join("deploy/tracer.toml"), &config, 0o644)?;
        eprintln!("xtask: installed {}", config.display());
    }
    if destdir.as_os_str().is_empty() || destdir == Path::new("/") {
        eprintln!("xtask: now run: systemctl daemon-reload && systemctl enable --now tracer");
    }
    Ok(())
}

fn copy(from: &Path, to: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Checks an installed tree: every file there, the binary runs, the unit
/// points at it, and the default config passes --check-config.
fn check_tree(binary: &Path, unit: &Path, config: &Path) -> anyhow::Result<()> {
    for f in [binary, unit, config] {
        ensure!(f.exists(), "{} is missing", f.display());
    }
    let version = output(Command::new(binary).arg("--version"))
        .context("the installed binary does not run")?;
    ensure!(
        version.starts_with("tracer "),
        "unexpected --version: {version}"
    );
    let check = output(
        Command::new(binary)
            .args(["daemon", "--check-config", "--config"])
            .arg(config),
    )
    .context("the installed config fails --check-config")?;
    ensure!(check.contains("configuration is valid"), "{check}");
    let unit_text = std::fs::read_to_string(unit)?;
    ensure!(
        unit_text.contains("ExecStart="),
        "no ExecStart in {}",
        unit.display()
    );
    Ok(())
}

/// `install` into a scratch DESTDIR, then [`check_tree`].
pub fn check_install() -> anyhow::Result<()> {
    let destdir = workspace_root().join("target/xtask/install-check");
    let _ = std::fs::remove_dir_all(&destdir);
    install(&destdir, Path::new("/usr"))?;
    let unit = destdir.join("etc/systemd/system/tracer.service");
    check_tree(
        &destdir.join("usr/bin/tracer"),
        &unit,
        &destdir.join("etc/tracer/tracer.toml"),
    )?;
    // A second install keeps a changed config.
    std::fs::write(destdir.join("etc/tracer/tracer.toml"), "leak-top-n = 3\n")?;
    install(&destdir, Path::new("/usr"))?;
    ensure!(
        std::fs::read_to_string(destdir.join("etc/tracer/tracer.toml"))? == "leak-top-n = 3\n",
        "install overwrote the operator's config"
    );
    eprintln!("xtask: install check passed");
    Ok(())
}

/// Builds the Debian package and checks its contents.
pub fn check_deb() -> anyhow::Result<()> {
    if output(Command::new("cargo").args(["deb", "--version"])).is_none() {
        cmd::run(cargo().args(["install", "cargo-deb", "--locked"]))?;
    }
    cmd::run(cargo().args(["deb", "--package", "tracer"]))?;
    let dir = workspace_root().join("target/debian");
    let deb = std::fs::read_dir(&dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .with_context(|| format!("no .deb in {}", dir.display()))?;
    let listing = output(Command::new("dpkg-deb").arg("--contents").arg(&deb))
        .context("dpkg-deb --contents")?;
    for path in [
        "./usr/bin/tracer",
        "./lib/systemd/system/tracer.service",
        "./etc/tracer/tracer.toml",
        "./usr/share/doc/tracer/README.md",
        "./usr/share/doc/tracer/prometheus/tracer-rules.yml",
        "./usr/share/doc/tracer/grafana/tracer-dashboard.json",
    ] {
        ensure!(
            listing.contains(path),
            "{} lacks {path}:\n{listing}",
            deb.display()
        );
    }
    let conffiles = output(
        Command::new("dpkg-deb")
            .arg("--info")
            .arg(&deb)
            .arg("conffiles"),
    )
    .unwrap_or_default();
    ensure!(
        conffiles.contains("/etc/tracer/tracer.toml"),
        "the config is not a conffile: {conffiles}"
    );
    let unpacked = workspace_root().join("target/xtask/deb-check");
    let _ = std::fs::remove_dir_all(&unpacked);
    cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    check_tree(
        &unpacked.join("usr/bin/tracer"),
        &unpacked.join("lib/systemd/system/tracer.service"),
        &unpacked.join("etc/tracer/tracer.toml"),
    )?;
    if !deb.exists() {
        bail!("{} vanished", deb.display());
    }
    eprintln!("xtask: Debian package check passed: {}", deb.display());
    Ok(())
}
