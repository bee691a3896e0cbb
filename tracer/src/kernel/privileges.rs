//! What the process may do: the capability check that turns the kernel's
//! bare EPERM into a sentence, and the MEMLOCK limit older kernels need.

/// Capability numbers (linux/capability.h).
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;
/// The highest capability number the kernel may know (CAP_LAST_CAP is
/// 40 today; unknown numbers are skipped).
const CAP_MAX: u32 = 63;

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

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Drops every capability but those in `keep` that the process has, from
/// the effective, permitted, inheritable, ambient and (where allowed)
/// bounding sets. Capabilities are per thread: call it before any other
/// thread starts, and threads started later inherit the reduced sets.
/// Returns the capabilities kept.
pub fn keep_only(keep: &[u32]) -> std::io::Result<Vec<u32>> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget fills two CapData for version 3; both structs are ours.
    if unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error());
    }
    let had = |cap: u32| data[(cap / 32) as usize].permitted & (1 << (cap % 32)) != 0;
    let kept: Vec<u32> = keep.iter().copied().filter(|c| had(*c)).collect();
    // The bounding set first: dropping from it needs CAP_SETPCAP, which is
    // about to go. Failures (no CAP_SETPCAP, unknown numbers) are harmless.
    for cap in 0..=CAP_MAX {
        if !kept.contains(&cap) {
            // SAFETY: prctl with integer arguments.
            unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
        }
    }
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    let mut next = [CapData::default(); 2];
    for &cap in &kept {
        let d = &mut next[(cap / 32) as usize];
        d.effective |= 1 << (cap % 32);
        d.permitted |= 1 << (cap % 32);
    }
    // SAFETY: capset reads the header and two CapData we own.
    if unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            next.as_ptr(),
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error());
    }
    Ok(kept)
}

/// A capability's name, for logs.
pub fn cap_name(cap: u32) -> String {
    match cap {
        CAP_SYS_PTRACE => "CAP_SYS_PTRACE".to_owned(),
        CAP_SYS_ADMIN => "CAP_SYS_ADMIN".to_owned(),
        CAP_PERFMON => "CAP_PERFMON".to_owned(),
        CAP_BPF => "CAP_BPF".to_owned(),
        n => format!("capability {n}"),
    }
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
