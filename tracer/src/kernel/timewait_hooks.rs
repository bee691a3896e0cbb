//! The timewait programs (fentry on the kernel's timewait functions, see
//! `tracer-ebpf/src/timewait.rs`): loaded where the kernel allows tracing
//! programs, so that a timewait socket's substate change and end reach
//! user space as records. Where it does not (no BTF for the functions,
//! tracing programs refused, as on kernels without trampolines or under
//! some lockdowns), timewait sockets are predicted from the full socket's
//! last transition and corrected by dumps. Either way the tracepoint
//! program runs; this only decides how timewait sockets are followed.

use std::{fmt, path::Path};

use aya::{
    Ebpf,
    programs::{FEntry, fentry::FEntryLinkId},
};

/// The programs and the kernel functions they attach to.
const HOOKS: [(&str, &str); 2] = [
    ("inet_twsk_schedule", "__inet_twsk_schedule"),
    ("inet_twsk_kill", "inet_twsk_kill"),
];

/// `TRACER_TIMEWAIT_HOOKS=off` does not load them: timewait sockets are
/// then predicted, as on kernels that refuse tracing programs. For
/// operators who distrust trampolines, and for the tests of that path on
/// kernels that have them.
pub const HOOKS_ENV: &str = "TRACER_TIMEWAIT_HOOKS";

/// How the daemon knows each timewait socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimewaitTracking {
    /// The kernel reports each timewait socket's start, substate change and
    /// end.
    Hooks,
    /// Predicted from the full socket's last transition; the reason the
    /// hooks are not loaded.
    Predicted(String),
}

impl TimewaitTracking {
    /// The value of the metric's `method` label.
    pub fn name(&self) -> &'static str {
        match self {
            TimewaitTracking::Hooks => "kernel",
            TimewaitTracking::Predicted(_) => "predicted",
        }
    }

    pub fn is_hooks(&self) -> bool {
        *self == TimewaitTracking::Hooks
    }
}

impl fmt::Display for TimewaitTracking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimewaitTracking::Hooks => {
                let names: Vec<&str> = HOOKS.iter().map(|(_, function)| *function).collect();
                write!(
                    f,
                    "followed in the kernel (fentry on {}); dumps check them",
                    names.join(", ")
                )
            }
            TimewaitTracking::Predicted(why) => write!(
                f,
                "predicted from each close and corrected by dumps (the timewait hooks are not \
                 loaded: {why})"
            ),
        }
    }
}

/// The attached hooks.
pub struct Hooks {
    links: Vec<(&'static str, FEntryLinkId)>,
}

/// Whether [`HOOKS_ENV`] turns the hooks off; an unknown value is an error.
pub fn wanted() -> Result<bool, String> {
    match std::env::var(HOOKS_ENV).as_deref() {
        Err(std::env::VarError::NotPresent) | Ok("" | "auto") => Ok(true),
        Ok("off") => Ok(false),
        Ok(other) => Err(format!(
            "{HOOKS_ENV}={other:?} is not a choice: use `auto` (the default) or `off`"
        )),
        Err(std::env::VarError::NotUnicode(v)) => Err(format!(
            "{HOOKS_ENV}={:?} is not a choice: use `auto` or `off`",
            v.to_string_lossy()
        )),
    }
}

/// Loads and attaches every hook, or none: on the first failure the ones
/// attached are detached again, and the error says which function failed.
pub fn attach(ebpf: &mut Ebpf, btf_path: &Path) -> Result<Hooks, String> {
    let btf = aya::Btf::parse_file(btf_path, aya::Endianness::default())
        .map_err(|e| format!("reading {}: {e}", btf_path.display()))?;
    let mut hooks = Hooks { links: Vec::new() };
    for (program, function) in HOOKS {
        if let Err(e) = attach_one(ebpf, &btf, program, function, &mut hooks) {
            hooks.detach(ebpf);
            return Err(format!("fentry on {function}: {e}"));
        }
    }
    Ok(hooks)
}

fn attach_one(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    program: &'static str,
    function: &str,
    hooks: &mut Hooks,
) -> Result<(), String> {
    let found = ebpf
        .program_mut(program)
        .ok_or_else(|| format!("program `{program}` is missing from the object"))?;
    let fentry: &mut FEntry = found.try_into().map_err(|e| format!("{e}"))?;
    fentry.load(function, btf).map_err(explain)?;
    let link = fentry.attach().map_err(explain)?;
    hooks.links.push((program, link));
    Ok(())
}

/// The kernel's refusal in a sentence: the verifier's log only when it
/// has one (aya appends it, empty, to every load error).
fn explain(e: aya::programs::ProgramError) -> String {
    match e {
        aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            match log.trim() {
                "" if io_error.raw_os_error() == Some(libc::EPERM) => {
                    format!("this kernel refuses tracing programs ({io_error})")
                }
                "" => io_error.to_string(),
                log => format!("{io_error}: {log}"),
            }
        }
        other => other.to_string(),
    }
}

impl Hooks {
    /// Detaches every hook (their records stop).
    pub fn detach(&mut self, ebpf: &mut Ebpf) {
        for (program, link) in self.links.drain(..) {
            let detached = ebpf
                .program_mut(program)
                .and_then(|p| <&mut FEntry>::try_from(p).ok())
                .map(|p| p.detach(link));
            if let Some(Err(e)) = detached {
                log::warn!("detaching the timewait hook {program}: {e}");
            }
        }
    }
}
