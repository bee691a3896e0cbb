//! The kernels of the matrix: Debian's packaged kernels, fetched with
//! `apt-get download` and unpacked with `dpkg-deb -x` into a cache, never
//! installed into the host's boot path.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::cmd::{self, output};

/// One kernel line of the matrix.
#[derive(Debug, Clone, Copy)]
pub struct KernelLine {
    /// What `--kernel` takes and the report prints: "6.1".
    pub name: &'static str,
    /// The Debian package names of this line are `{prefix}{ABI}{suffix}`.
    prefix: &'static str,
    suffix: &'static str,
}

/// The matrix: the kernels operators run most (6.1: Debian 12, Amazon
/// Linux 2023; 6.12: the current LTS, Debian 13 and Debian 12's
/// backports), as Debian builds them (BTF, kprobes, and sock_diag for TCP
/// as modules).
pub const MATRIX: &[KernelLine] = &[
    KernelLine {
        name: "6.1",
        prefix: "linux-image-6.1.0-",
        suffix: "-amd64",
    },
    KernelLine {
        name: "6.12",
        prefix: "linux-image-6.12.",
        suffix: "+deb12-amd64",
    },
];

/// A kernel unpacked in the cache.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub line: KernelLine,
    /// The kernel's release, as `uname -r` will print it.
    pub release: String,
    /// `boot/vmlinuz-RELEASE` under the unpacked package; its modules are
    /// in `lib/modules/RELEASE` beside it, where virtme-ng looks.
    pub image: PathBuf,
}

/// Where unpacked kernels are kept between runs: outside the work tree, so
/// a fresh clone on the same machine reuses them. Not under /var/cache or
/// /tmp-like places: virtme-ng mounts a tmpfs over /var/cache in the guest,
/// which would hide the modules it links to there.
fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TRACER_KERNEL_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/root/.cache"));
    base.join("tracer-xtask/kernels")
}

impl KernelLine {
    /// The package's ABI part (between prefix and suffix), if `name` is a
    /// kernel image of this line and not a meta-package or a variant.
    fn abi<'a>(&self, name: &'a str) -> Option<&'a str> {
        let abi = name.strip_prefix(self.prefix)?.strip_suffix(self.suffix)?;
        let plain = !abi.is_empty() && abi.chars().all(|c| c.is_ascii_digit() || c == '.');
        plain.then_some(abi)
    }

    /// The newest package of this line in apt's lists.
    fn newest_package(&self) -> Option<String> {
        let pattern = format!("^{}", self.prefix.replace('.', "\\."));
        let found = output(Command::new("apt-cache").args(["search", "--names-only", &pattern]))?;
        self.newest(found.lines().filter_map(|l| l.split_whitespace().next()))
            .map(str::to_owned)
    }

    /// Of `names`, the image package of this line with the highest ABI,
    /// compared as numbers (6.12.100 after 6.12.99).
    fn newest<'a>(&self, names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
        names
            .filter_map(|name| {
                let abi: Vec<u64> = self
                    .abi(name)?
                    .split('.')
                    .map(|part| part.parse().unwrap_or(0))
                    .collect();
                Some((abi, name))
            })
            .max()
            .map(|(_, name)| name)
    }

    /// This line's newest kernel, fetched and unpacked unless the cache has
    /// it; the newest cached one when apt cannot name or fetch one.
    pub fn fetch(&self) -> anyhow::Result<Kernel> {
        let cache = cache_dir();
        let package = match self.newest_package() {
            Some(p) => Some(p),
            None => {
                // apt's lists may be missing on a fresh machine.
                let _ = cmd::run(Command::new("apt-get").args(["update", "-q"]));
                self.newest_package()
            }
        };
        if let Some(package) = &package {
            match self.unpacked(&cache, package) {
                Ok(k) => return Ok(k),
                Err(e) => eprintln!("xtask: WARNING: cannot fetch {package}: {e:#}"),
            }
        }
        self.newest_cached(&cache).with_context(|| {
            format!(
                "no Linux {} kernel: apt found no package {}N{} and none is cached in {}",
                self.name,
                self.prefix,
                self.suffix,
                cache.display()
            )
        })
    }

    fn unpacked(&self, cache: &Path, package: &str) -> anyhow::Result<Kernel> {
        let dir = cache.join(package);
        if let Some(k) = self.kernel_in(&dir) {
            return Ok(k);
        }
        let download = cache.join(format!(".download-{package}"));
        let _ = std::fs::remove_dir_all(&download);
        std::fs::create_dir_all(&download)
            .with_context(|| format!("cannot create {}", download.display()))?;
        cmd::run(
            Command::new("apt-get")
                // As root into a folder _apt cannot write: say so, rather
                // than have apt warn that it downloads unsandboxed.
                .args(["download", "-q", "-o", "APT::Sandbox::User=root", package])
                .current_dir(&download),
        )?;
        let deb = std::fs::read_dir(&download)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .with_context(|| format!("apt-get download left no .deb in {}", download.display()))?;
        // Unpack beside the final place, then move it in whole: an
        // interrupted run leaves no half-unpacked kernel in the cache.
        let staging = cache.join(format!(".unpack-{package}"));
        let _ = std::fs::remove_dir_all(&staging);
        cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&staging))?;
        std::fs::rename(&staging, &dir)
            .with_context(|| format!("cannot move the kernel into {}", dir.display()))?;
        let _ = std::fs::remove_dir_all(&download);
        self.kernel_in(&dir)
            .with_context(|| format!("{package} holds no boot/vmlinuz-* with its modules"))
    }

    fn newest_cached(&self, cache: &Path) -> Option<Kernel> {
        let names: Vec<String> = std::fs::read_dir(cache)
            .ok()?
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        let name = self.newest(names.iter().map(String::as_str))?;
        self.kernel_in(&cache.join(name))
    }

    /// The kernel unpacked in `dir`, if it is complete.
    fn kernel_in(&self, dir: &Path) -> Option<Kernel> {
        let boot = dir.join("boot");
        let image = std::fs::read_dir(&boot)
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("vmlinuz-"))
            })?;
        let release = image
            .file_name()?
            .to_str()?
            .strip_prefix("vmlinuz-")?
            .to_owned();
        let modules = dir.join("lib/modules").join(&release);
        modules.is_dir().then_some(Kernel {
            line: *self,
            release,
            image,
        })
    }
}

/// The matrix entry `--kernel NAME` names.
pub fn line(name: &str) -> anyhow::Result<KernelLine> {
    match MATRIX.iter().find(|k| k.name == name) {
        Some(k) => Ok(*k),
        None => bail!(
            "no kernel {name:?} in the matrix; it has {}",
            MATRIX.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names_of_each_line() {
        let v61 = line("6.1").expect("6.1");
        assert_eq!(v61.abi("linux-image-6.1.0-50-amd64"), Some("50"));
        assert_eq!(v61.abi("linux-image-6.1.0-50-cloud-amd64"), None);
        assert_eq!(v61.abi("linux-image-6.1.0-50-amd64-unsigned"), None);
        let v612 = line("6.12").expect("6.12");
        assert_eq!(v612.abi("linux-image-6.12.100+deb12-amd64"), Some("100"));
        assert_eq!(v612.abi("linux-image-6.12-amd64"), None);
        assert_eq!(v612.abi("linux-image-6.12.100+deb12-rt-amd64"), None);
        assert!(line("5.4").is_err());
    }

    #[test]
    fn the_newest_version_is_compared_by_number() {
        let v612 = line("6.12").expect("6.12");
        let names = [
            "linux-image-6.12.99+deb12-amd64",
            "linux-image-6.12.100+deb12-amd64",
            "linux-image-6.12.9+deb12-amd64",
        ];
        assert_eq!(
            v612.newest(names.into_iter()),
            Some("linux-image-6.12.100+deb12-amd64")
        );
        // Other lines and variants are not candidates.
        let v61 = line("6.1").expect("6.1");
        assert_eq!(v61.newest(names.into_iter()), None);
    }
}
