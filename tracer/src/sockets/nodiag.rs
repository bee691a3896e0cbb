//! When the kernel has no sock_diag for TCP: recognising the error, and
//! saying why, so the fallback to `/proc/net/tcp` is not a mystery.
//!
//! On Debian's kernels `inet_diag` and `tcp_diag` are modules, which the
//! kernel loads on the first request (`request_module`). When they cannot
//! be loaded, the kernel answers with ENOENT: `net/core/sock_diag.c`
//! returns it when no handler for the address family registered (that is
//! `inet_diag`), as an NLMSG_ERROR; `net/ipv4/inet_diag.c` returns it when
//! no handler for the protocol registered (`tcp_diag`), as the dump's
//! status. `socket(AF_NETLINK, .., NETLINK_SOCK_DIAG)` itself fails with
//! EPROTONOSUPPORT when the `sock_diag` core is a module that is missing.
//! Any other error is a real failure of the dump, not an absent feature.

use std::{fs, io, path::Path};

use crate::sockets::sockdiag::SockDiagError;

/// True when `e` means the kernel offers no sock_diag for TCP at all (as
/// opposed to a dump that failed): the caller should read `/proc/net/tcp`.
pub fn unavailable(e: &SockDiagError) -> bool {
    match e {
        SockDiagError::Kernel { errno } => *errno == libc::ENOENT,
        SockDiagError::Socket(error) => error.raw_os_error() == Some(libc::EPROTONOSUPPORT),
        _ => false,
    }
}

/// What the system says about the modules sock_diag for TCP needs, read
/// once per dump that finds it missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleFacts {
    /// `uname -r`.
    pub release: String,
    /// Names in /proc/modules; None when the kernel has no module support
    /// (the file is missing).
    pub loaded: Option<Vec<String>>,
    /// Names built into the kernel (modules.builtin), when readable.
    pub builtin: Vec<String>,
    /// Names installed under /lib/modules/RELEASE (modules.dep), or why
    /// that could not be read.
    pub installed: Result<Vec<String>, String>,
    /// `kernel.modules_disabled` is 1: no module loads until reboot.
    pub modules_disabled: bool,
    /// Names in `module_blacklist=` and `modprobe.blacklist=` on the kernel
    /// command line.
    pub cmdline_blacklist: Vec<String>,
    /// modprobe.d lines that stop a name loading (`blacklist NAME`,
    /// `install NAME ...`), as (name, where).
    pub modprobe_d: Vec<(String, String)>,
}

/// The modules a TCP dump needs, in load order, given the error.
fn needed(e: &SockDiagError) -> &'static [&'static str] {
    match e {
        SockDiagError::Socket(_) => &["sock_diag"],
        _ => &["inet_diag", "tcp_diag"],
    }
}

/// Module names compare with `-` and `_` as one (as modprobe does).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .all(|(x, y)| x == y || (x == b'-' || x == b'_') && (y == b'-' || y == b'_'))
}

fn listed(list: &[String], name: &str) -> bool {
    list.iter().any(|n| same(n, name))
}

/// `a`, `a and b`, with the verb that goes with them.
fn names(list: &[&str]) -> String {
    match list {
        [one] => format!("{one} is"),
        many => format!("{} are", many.join(" and ")),
    }
}

/// Why sock_diag for TCP is not available, for the log: which modules are
/// missing and what stopped them loading, as far as the system says.
pub fn explain(e: &SockDiagError, facts: &ModuleFacts) -> String {
    let answer = match e {
        SockDiagError::Socket(error) => format!("socket(NETLINK_SOCK_DIAG) failed: {error}"),
        SockDiagError::Kernel { errno } => {
            format!(
                "sock_diag answered {}",
                io::Error::from_raw_os_error(*errno)
            )
        }
        other => other.to_string(),
    };
    let Some(loaded) = &facts.loaded else {
        return format!(
            "{answer}; the kernel has no module support (no /proc/modules) and does not have \
             sock_diag for TCP built in"
        );
    };
    let missing: Vec<&str> = needed(e)
        .iter()
        .copied()
        .filter(|m| !listed(loaded, m) && !listed(&facts.builtin, m))
        .collect();
    if missing.is_empty() {
        return format!("{answer}, although {} loaded", names(needed(e)));
    }
    let among = |list: &[String]| -> Vec<&str> {
        missing
            .iter()
            .copied()
            .filter(|m| listed(list, m))
            .collect()
    };
    let mut why: Vec<String> = Vec::new();
    let blacklisted = among(&facts.cmdline_blacklist);
    if !blacklisted.is_empty() {
        why.push(format!(
            "{} blacklisted on the kernel command line",
            names(&blacklisted)
        ));
    }
    if facts.modules_disabled {
        why.push("module loading is disabled (kernel.modules_disabled = 1)".to_owned());
    }
    for (name, place) in &facts.modprobe_d {
        if missing.iter().any(|m| same(m, name)) {
            why.push(format!("{place} stops {name} loading"));
        }
    }
    match &facts.installed {
        Ok(installed) => {
            let absent: Vec<&str> = missing
                .iter()
                .copied()
                .filter(|m| !listed(installed, m))
                .collect();
            if !absent.is_empty() {
                why.push(format!(
                    "{} not installed in /lib/modules/{}",
                    names(&absent),
                    facts.release
                ));
            }
        }
        Err(reason) => why.push(reason.clone()),
    }
    if why.is_empty() {
        why.push("modprobe failed; the kernel log may say why".to_owned());
    }
    let modules = if missing.len() == 1 {
        "module"
    } else {
        "modules"
    };
    format!(
        "{answer}: the kernel {modules} {} not loaded and could not be loaded: {}",
        names(&missing),
        why.join("; ")
    )
}

/// [`explain`] with the facts of this system.
pub fn cause(e: &SockDiagError) -> String {
    explain(e, &ModuleFacts::read())
}

impl ModuleFacts {
    /// Reads the facts; what cannot be read counts as absent.
    pub fn read() -> ModuleFacts {
        let release = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|r| r.trim().to_owned())
            .unwrap_or_default();
        let dir = Path::new("/lib/modules").join(&release);
        let names_in = |file: &str| -> io::Result<Vec<String>> {
            Ok(module_paths(&fs::read_to_string(dir.join(file))?))
        };
        ModuleFacts {
            loaded: fs::read_to_string("/proc/modules").ok().map(|text| {
                text.lines()
                    .filter_map(|l| l.split_whitespace().next())
                    .map(str::to_owned)
                    .collect()
            }),
            builtin: names_in("modules.builtin").unwrap_or_default(),
            installed: names_in("modules.dep")
                .map_err(|e| format!("cannot read {}: {e}", dir.join("modules.dep").display())),
            modules_disabled: fs::read_to_string("/proc/sys/kernel/modules_disabled")
                .is_ok_and(|v| v.trim() == "1"),
            cmdline_blacklist: cmdline_blacklist(
                &fs::read_to_string("/proc/cmdline").unwrap_or_default(),
            ),
            modprobe_d: modprobe_d(),
            release,
        }
    }
}

/// Module names from modules.dep or modules.builtin: the first path of each
/// line, `kernel/net/ipv4/tcp_diag.ko[.xz|.zst|.gz]:` -> `tcp_diag`.
fn module_paths(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let path = l.split(':').next()?.trim();
            let file = path.rsplit('/').next()?;
            let name = file.split(".ko").next()?;
            (!name.is_empty() && name.len() < file.len()).then(|| name.to_owned())
        })
        .collect()
}

/// Names blacklisted on the kernel command line: the kernel's own
/// `module_blacklist=` and modprobe's `modprobe.blacklist=`.
fn cmdline_blacklist(cmdline: &str) -> Vec<String> {
    cmdline
        .split_whitespace()
        .filter_map(|w| {
            w.strip_prefix("module_blacklist=")
                .or_else(|| w.strip_prefix("modprobe.blacklist="))
        })
        .flat_map(|list| list.split(','))
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect()
}

/// modprobe.d lines that stop a module loading by its alias (which is how
/// the kernel asks): `blacklist NAME` and `install NAME CMD`.
fn modprobe_d() -> Vec<(String, String)> {
    let mut found = Vec::new();
    for dir in [
        "/etc/modprobe.d",
        "/run/modprobe.d",
        "/usr/lib/modprobe.d",
        "/lib/modprobe.d",
    ] {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        {
            if let Ok(text) = fs::read_to_string(path) {
                found.extend(
                    modprobe_lines(&text)
                        .into_iter()
                        .map(|(name, line)| (name, format!("{}: `{line}`", path.display()))),
                );
            }
        }
    }
    found
}

/// The stopping lines of one modprobe.d file, as (name, line).
fn modprobe_lines(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let mut words = line.split_whitespace();
            match (words.next()?, words.next()?) {
                ("blacklist" | "install", name) => Some((name.to_owned(), line.to_owned())),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel(errno: i32) -> SockDiagError {
        SockDiagError::Kernel { errno }
    }

    fn no_diag_facts() -> ModuleFacts {
        ModuleFacts {
            release: "6.1.0-50-amd64".to_owned(),
            loaded: Some(vec!["virtio_net".to_owned(), "9p".to_owned()]),
            builtin: vec!["unix".to_owned()],
            installed: Ok(vec!["inet_diag".to_owned(), "tcp_diag".to_owned()]),
            modules_disabled: false,
            cmdline_blacklist: Vec::new(),
            modprobe_d: Vec::new(),
        }
    }

    #[test]
    fn only_a_missing_handler_means_unavailable() {
        assert!(unavailable(&kernel(libc::ENOENT)));
        assert!(unavailable(&SockDiagError::Socket(
            io::Error::from_raw_os_error(libc::EPROTONOSUPPORT)
        )));
        // Real failures of a dump that exists are not a reason to switch.
        for errno in [libc::EINVAL, libc::ENOBUFS, libc::EPERM, libc::EOPNOTSUPP] {
            assert!(!unavailable(&kernel(errno)), "errno {errno}");
        }
        assert!(!unavailable(&SockDiagError::Socket(
            io::Error::from_raw_os_error(libc::EMFILE)
        )));
        assert!(!unavailable(&SockDiagError::Malformed {
            what: "x",
            offset: 0
        }));
        assert!(!unavailable(&SockDiagError::Recv {
            family: crate::kernel::event::Family::V4,
            error: io::Error::from_raw_os_error(libc::ENOENT),
        }));
    }

    #[test]
    fn blacklisted_modules_are_named_with_the_reason() {
        let facts = ModuleFacts {
            cmdline_blacklist: vec!["tcp_diag".to_owned(), "inet-diag".to_owned()],
            ..no_diag_facts()
        };
        let text = explain(&kernel(libc::ENOENT), &facts);
        assert!(
            text.contains(
                "sock_diag answered No such file or directory (os error 2): the kernel modules \
                 inet_diag and tcp_diag are not loaded and could not be loaded: inet_diag and \
                 tcp_diag are blacklisted on the kernel command line"
            ),
            "{text}"
        );
        assert!(!text.contains("not installed"), "{text}");
    }

    #[test]
    fn only_the_missing_module_is_named() {
        // inet_diag loaded, tcp_diag not installed.
        let facts = ModuleFacts {
            loaded: Some(vec!["inet_diag".to_owned()]),
            installed: Ok(vec!["inet_diag".to_owned()]),
            ..no_diag_facts()
        };
        let text = explain(&kernel(libc::ENOENT), &facts);
        assert!(
            text.contains(
                "module tcp_diag is not loaded and could not be loaded: tcp_diag is not \
                 installed in /lib/modules/6.1.0-50-amd64"
            ),
            "{text}"
        );
        assert!(!text.contains("inet_diag"), "{text}");
    }

    #[test]
    fn other_causes() {
        let disabled = ModuleFacts {
            modules_disabled: true,
            installed: Err("cannot read /lib/modules/x/modules.dep: denied".to_owned()),
            modprobe_d: vec![(
                "tcp_diag".to_owned(),
                "/etc/modprobe.d/x.conf: `install tcp_diag /bin/false`".to_owned(),
            )],
            ..no_diag_facts()
        };
        let text = explain(&kernel(libc::ENOENT), &disabled);
        for part in [
            "kernel.modules_disabled = 1",
            "/etc/modprobe.d/x.conf: `install tcp_diag /bin/false` stops tcp_diag loading",
            "cannot read /lib/modules/x/modules.dep: denied",
        ] {
            assert!(text.contains(part), "{part} in {text}");
        }
        let none = explain(&kernel(libc::ENOENT), &no_diag_facts());
        assert!(
            none.ends_with("modprobe failed; the kernel log may say why"),
            "{none}"
        );
        let no_modules = ModuleFacts {
            loaded: None,
            ..no_diag_facts()
        };
        assert!(explain(&kernel(libc::ENOENT), &no_modules).contains("no module support"));
        // Built in counts as present.
        let built_in = ModuleFacts {
            builtin: vec!["inet_diag".to_owned(), "tcp_diag".to_owned()],
            ..no_diag_facts()
        };
        assert!(
            explain(&kernel(libc::ENOENT), &built_in)
                .contains("although inet_diag and tcp_diag are loaded")
        );
        let socket = SockDiagError::Socket(io::Error::from_raw_os_error(libc::EPROTONOSUPPORT));
        assert!(explain(&socket, &no_diag_facts()).contains("module sock_diag is not loaded"));
    }

    #[test]
    fn parses_the_system_files() {
        assert_eq!(
            module_paths(
                "kernel/net/ipv4/tcp_diag.ko.xz: kernel/net/ipv4/inet_diag.ko.xz\n\
                 kernel/net/ipv4/inet_diag.ko:\nkernel/fs/9p/9p.ko.zst: x\n\ngarbage\n"
            ),
            ["tcp_diag", "inet_diag", "9p"]
        );
        assert_eq!(
            cmdline_blacklist(
                "BOOT_IMAGE=/vmlinuz root=/dev/vda module_blacklist=tcp_diag,inet_diag \
                 quiet modprobe.blacklist=sctp, module_blacklist="
            ),
            ["tcp_diag", "inet_diag", "sctp"]
        );
        assert_eq!(
            modprobe_lines(
                "# comment\nblacklist tcp_diag\n  install inet_diag /bin/true\n\
                 options foo bar=1\nblacklist\nalias x y\n"
            ),
            [
                ("tcp_diag".to_owned(), "blacklist tcp_diag".to_owned()),
                (
                    "inet_diag".to_owned(),
                    "install inet_diag /bin/true".to_owned()
                ),
            ]
        );
        assert!(same("inet-diag", "inet_diag") && !same("inet_diag", "inet_diagx"));
    }

    #[test]
    fn reading_this_system_does_not_fail() {
        // Whatever the machine, the facts read and the text is one line.
        let text = cause(&kernel(libc::ENOENT));
        eprintln!("{text}");
        assert!(!text.is_empty() && !text.contains('\n'), "{text}");
    }
}
