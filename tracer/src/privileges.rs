//! What the process may do: the capability check that turns the kernel's
//! bare EPERM into a sentence, and the MEMLOCK limit older kernels need.

/// CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF (linux/capability.h).
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[derive(Debug, thiserror::Error)]
#[error(
    "insufficient privileges: loading eBPF programs needs root, or the capabilities \
     CAP_BPF and CAP_PERFMON (missing: {missing}); run tracer with sudo or grant them"
)]
pub struct MissingCapabilities {
    pub missing: String,
}

/// The effective capability set from `/proc/self/status` (`CapEff:` line).
fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_cap_eff(&status)
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Checks for the capabilities that loading and attaching need: CAP_BPF and
/// CAP_PERFMON, or CAP_SYS_ADMIN, which implies both on older kernels.
pub fn check() -> Result<(), MissingCapabilities> {
    // If /proc cannot tell, let the kernel decide and report its own error.
    let Some(caps) = effective_caps() else {
        return Ok(());
    };
    check_caps(caps)
}

fn check_caps(caps: u64) -> Result<(), MissingCapabilities> {
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|(cap, _)| !has(*cap))
        .map(|(_, name)| name)
        .collect();
    Err(MissingCapabilities {
        missing: missing.join(", "),
    })
}

/// Lifts RLIMIT_MEMLOCK for kernels that still charge BPF maps to it
/// (before 5.11). Failure is only logged: newer kernels account BPF memory
/// to the cgroup and do not need it, and some sandboxes forbid raising it.
pub fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        log::debug!(
            "setrlimit(RLIMIT_MEMLOCK) failed: {}; fine on kernels >= 5.11",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_split_capabilities_pass() {
        assert!(check_caps(u64::MAX).is_ok());
        assert!(check_caps(1 << CAP_SYS_ADMIN).is_ok());
        assert!(check_caps((1 << CAP_BPF) | (1 << CAP_PERFMON)).is_ok());
    }

    #[test]
    fn names_what_is_missing() {
        let err = check_caps(1 << CAP_BPF).unwrap_err();
        assert_eq!(err.missing, "CAP_PERFMON");
        let err = check_caps(0).unwrap_err();
        assert_eq!(err.missing, "CAP_BPF, CAP_PERFMON");
        assert!(err.to_string().contains("needs root"));
    }

    #[test]
    fn reads_cap_eff() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(status), Some(0x1ff_ffff_ffff));
        assert_eq!(parse_cap_eff("nothing"), None);
    }
}
