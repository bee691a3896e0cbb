//! Loading the kernel side: checks that turn kernel errors into advice, the
//! load-time configuration from tracefs and BTF, attaching the tracepoint,
//! and reading the kernel's counters.
//!
//! Dropping a [`Probe`] detaches the program and frees its maps.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    path::PathBuf,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{TracePoint, trace_point::TracePointLinkId},
};
use tracer_common::{ProbeConfig, RecordLayout, Stat, TransitionMatrix};

use crate::{
    kernel::btf::{Btf, BtfError, VMLINUX_BTF},
    kernel::config::{probe_config, timewait_config},
    kernel::logs,
    kernel::privileges::{self, MissingCapabilities},
    kernel::resets::{ResetCounts, ResetSetup, Resets},
    kernel::retransmits::{RetransmitCounts, RetransmitSetup, Retransmits},
    kernel::timewait_hooks::{self, Hooks, TimewaitTracking},
    kernel::tracefs::{self, Format, TracefsError},
};

/// The kernel object built by build.rs from `tracer-ebpf`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));

const TP_CATEGORY: &str = "sock";
const TP_NAME: &str = "inet_sock_set_state";
/// The program for the record layout of Linux 5.6+ ([`RecordLayout::LINUX_5_6`]),
/// which reads the fields in place.
const PROGRAM_IN_PLACE: &str = "inet_sock_set_state";
/// The program for any other layout: it copies the record first.
const PROGRAM_COPY: &str = "inet_sock_set_state_copy";
/// `TRACER_PROBE_PROGRAM=copy` loads the copying program whatever the
/// layout: the tests use it to run that program on a current kernel.
pub const PROGRAM_ENV: &str = "TRACER_PROBE_PROGRAM";
/// `TRACER_TEST_SOCK_FLAGS_OFFSET=N` loads the program with `sk_flags` at
/// offset N instead of where BTF says: the tests give a bad one on purpose
/// to see the kernel program's error path counted and logged. Not for users.
pub const SOCK_FLAGS_OFFSET_ENV: &str = "TRACER_TEST_SOCK_FLAGS_OFFSET";

/// Default ring buffer size: 4 MiB holds ~43,000 events, a few hundred
/// milliseconds of the heaviest loopback churn a 2-core machine produces.
pub const DEFAULT_RING_BUFFER_BYTES: u32 = 4 << 20;
/// The kernel wants a power of two, at least one page.
pub const MIN_RING_BUFFER_BYTES: u32 = 4096;
pub const MAX_RING_BUFFER_BYTES: u32 = 1 << 30;

/// The oldest kernel with everything the program uses (the BPF ring buffer
/// arrived in 5.8; the tracepoint in 4.16).
pub const MIN_KERNEL: (u32, u32) = (5, 8);

/// Default capacity of the kernel's per-socket timestamp map (LRU).
pub const DEFAULT_STATE_TIME_ENTRIES: u32 = 1 << 16;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Privileges(#[from] MissingCapabilities),
    #[error(
        "kernel {found} is too old: tracer needs Linux {}.{} or newer (BPF ring buffer)",
        MIN_KERNEL.0, MIN_KERNEL.1
    )]
    KernelTooOld { found: String },
    #[error(
        "kernel BTF is unavailable: {0}; tracer reads kernel structure layouts from BTF: use a \
         kernel built with CONFIG_DEBUG_INFO_BTF=y, or point --btf at a BTF file for this kernel"
    )]
    Btf(BtfError),
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    #[error(
        "ring buffer size {0} bytes is invalid: it must be a power of two between 4 KiB and 1 GiB"
    )]
    RingBufferSize(u64),
    #[error("tracepoint {TP_CATEGORY}:{TP_NAME} has an unexpected layout: {0}")]
    Layout(String),
    #[error("{PROGRAM_ENV}={0:?} is not a choice: use `auto` (the default) or `copy`")]
    ProgramChoice(String),
    #[error("{SOCK_FLAGS_OFFSET_ENV}={0:?} is not an offset")]
    TestOffset(String),
    #[error("{0}")]
    HooksChoice(String),
    #[error("loading the eBPF object failed: {0}")]
    Load(aya::EbpfError),
    #[error("the kernel rejected the tracepoint program: {0}")]
    Program(aya::programs::ProgramError),
    #[error("eBPF map `{0}` is missing or has the wrong type")]
    Map(&'static str),
    #[error("eBPF program `{0}` is missing from the object")]
    NoProgram(&'static str),
    #[error("reading eBPF map `{name}` failed: {error}")]
    MapRead {
        name: &'static str,
        error: aya::maps::MapError,
    },
}

/// Settings for loading the kernel side.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// Ring buffer size in bytes (power of two, 4 KiB..=1 GiB).
    pub ring_buffer_bytes: u32,
    /// Keep per-socket timestamps in the kernel so events carry the time
    /// spent in the old state.
    pub state_time: bool,
    /// Capacity of that timestamp map.
    pub state_time_entries: u32,
    /// The current task's name on every event. Without it, only events that
    /// leave CLOSE carry it (connect and listen run in the owner's context;
    /// other transitions mostly run in softirq, where the name is noise).
    pub comm_always: bool,
    /// Kernel BTF to read structure layouts from.
    pub btf_path: PathBuf,
    /// Load the timewait programs where the kernel allows them (see
    /// [`crate::kernel::timewait_hooks`]).
    pub timewait_hooks: bool,
    /// Count retransmissions in the kernel (see
    /// [`crate::kernel::retransmits`]). The reset programs always load
    /// ([`crate::kernel::resets`]).
    pub retransmit_counters: bool,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            ring_buffer_bytes: DEFAULT_RING_BUFFER_BYTES,
            state_time: true,
            state_time_entries: DEFAULT_STATE_TIME_ENTRIES,
            comm_always: true,
            btf_path: PathBuf::from(VMLINUX_BTF),
            timewait_hooks: true,
            retransmit_counters: true,
        }
    }
}

/// Checks a ring buffer size the way the kernel will, so a bad flag gets a
/// sentence instead of EINVAL.
pub fn validate_ring_buffer_size(bytes: u64) -> Result<u32, ProbeError> {
    if bytes.is_power_of_two()
        && (u64::from(MIN_RING_BUFFER_BYTES)..=u64::from(MAX_RING_BUFFER_BYTES)).contains(&bytes)
    {
        Ok(bytes as u32)
    } else {
        Err(ProbeError::RingBufferSize(bytes))
    }
}

/// Counters the kernel program keeps about itself, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Events dropped because the ring buffer was full.
    pub ringbuf_full: u64,
    /// Tracepoint hits the kernel did not run the program for (it was already
    /// running on that CPU): neither counted nor sent.
    pub recursion_misses: u64,
    pub record_read_failed: u64,
    pub netns_read_failed: u64,
    pub state_time_update_failed: u64,
    pub bad_config: u64,
    /// Closing sockets whose FIN could not be read (their predicted
    /// timewait socket may have the wrong substate until a dump).
    pub sock_field_read_failed: u64,
    /// Records of timewait sockets' lives lost (ring buffer full, or the
    /// socket unreadable); the next dump corrects what they would have said.
    pub timewait_records_lost: u64,
}

impl KernelStats {
    /// Transitions user space will never see as events.
    pub fn lost_events(&self) -> u64 {
        self.ringbuf_full + self.recursion_misses + self.record_read_failed + self.bad_config
    }
}

/// The loaded and attached kernel side.
pub struct Probe {
    ebpf: Ebpf,
    /// The attachment; None once [`Probe::detach`] ran.
    link: Option<TracePointLinkId>,
    transitions: PerCpuArray<MapData, TransitionMatrix>,
    stats: PerCpuArray<MapData, u64>,
    /// Offset of `recursion_misses` in `struct bpf_prog_info`, when BTF has it.
    recursion_misses_offset: Option<u32>,
    config: ProbeConfig,
    program_name: &'static str,
    /// The timewait programs, where the kernel took them.
    hooks: Option<Hooks>,
    timewait: TimewaitTracking,
    resets: Resets,
    retransmits: Option<Retransmits>,
}

impl Probe {
    /// Runs every check, loads the program with this kernel's offsets and
    /// attaches it to `sock:inet_sock_set_state`.
    pub fn load(options: &ProbeOptions) -> Result<Probe, ProbeError> {
        validate_ring_buffer_size(u64::from(options.ring_buffer_bytes))?;
        check_kernel_version()?;
        privileges::check()?;
        let btf = Btf::from_file(&options.btf_path).map_err(ProbeError::Btf)?;
        let root = tracefs::ensure_mounted()?;
        let format = Format::read(&root, TP_CATEGORY, TP_NAME)?;
        let mut config = probe_config(&format, &btf, options)?;
        if let Some(offset) = test_sock_flags_offset()? {
            config.off_sock_flags = offset;
        }
        let program_name = choose_program(&config.record)?;
        let hooks_wanted = timewait_hooks::wanted().map_err(ProbeError::HooksChoice)?;
        let tw_config = timewait_config(&btf, &config);
        let reset_setup = ResetSetup::read(&root, &btf, &config);
        let retransmit_setup = RetransmitSetup::read(&root, &config);
        privileges::raise_memlock_limit();

        let log_level = logs::program_level();
        let mut ebpf = EbpfLoader::new()
            .override_global("CONFIG", &config, true)
            .override_global(
                "TW_CONFIG",
                tw_config.as_ref().unwrap_or(&Default::default()),
                true,
            )
            .override_global("RESET_CONFIG", &reset_setup.config, true)
            .override_global("RETRANSMIT_CONFIG", &retransmit_setup.config, true)
            .override_global(aya_log::LEVEL, &log_level, true)
            .map_max_entries("EVENTS", options.ring_buffer_bytes)
            .map_max_entries("STATE_SINCE", options.state_time_entries.max(1))
            .load(EBPF_OBJECT)
            .map_err(ProbeError::Load)?;
        let program: &mut TracePoint = ebpf
            .program_mut(program_name)
            .ok_or(ProbeError::NoProgram(program_name))?
            .try_into()
            .map_err(ProbeError::Program)?;
        program.load().map_err(ProbeError::Program)?;
        let link = program
            .attach(TP_CATEGORY, TP_NAME)
            .map_err(ProbeError::Program)?;

        let (hooks, timewait) = match (hooks_wanted && options.timewait_hooks, tw_config) {
            (false, _) if !options.timewait_hooks => (
                None,
                TimewaitTracking::Predicted("not wanted by this command".into()),
            ),
            (false, _) => (
                None,
                TimewaitTracking::Predicted(format!("{}=off", timewait_hooks::HOOKS_ENV)),
            ),
            (true, Err(e)) => (None, TimewaitTracking::Predicted(e.to_string())),
            (true, Ok(_)) => match timewait_hooks::attach(&mut ebpf, &options.btf_path) {
                Ok(hooks) => (Some(hooks), TimewaitTracking::Hooks),
                Err(e) => (None, TimewaitTracking::Predicted(e)),
            },
        };
        // Always: the program on tcp_receive_reset also tells a refused
        // connect from one an ICMP port unreachable ended.
        let resets = Resets::attach(&mut ebpf, reset_setup);
        let retransmits = options
            .retransmit_counters
            .then(|| Retransmits::attach(&mut ebpf, retransmit_setup));
        let transitions = take_per_cpu(&mut ebpf, "TRANSITIONS")?;
        let stats = take_per_cpu(&mut ebpf, "STATS")?;
        let recursion_misses_offset = btf
            .member_offset("bpf_prog_info", &["recursion_misses"])
            .ok();
        Ok(Probe {
            ebpf,
            link: Some(link),
            transitions,
            stats,
            recursion_misses_offset,
            config,
            program_name,
            hooks,
            timewait,
            resets,
            retransmits,
        })
    }

    /// Retransmissions counted in the kernel since load.
    pub fn retransmit_counts(&self) -> RetransmitCounts {
        self.retransmits
            .as_ref()
            .map(Retransmits::counts)
            .unwrap_or_default()
    }

    /// Tells the retransmission program which ports are listened on (see
    /// [`Retransmits::mark_listening`]).
    pub fn mark_listening(&mut self, ports: impl IntoIterator<Item = (u32, u16)>) {
        if let Some(r) = &mut self.retransmits {
            r.mark_listening(ports);
        }
    }

    /// Resets counted in the kernel since load.
    pub fn reset_counts(&self) -> ResetCounts {
        self.resets.counts()
    }

    /// How timewait sockets are followed on this kernel.
    pub fn timewait_tracking(&self) -> &TimewaitTracking {
        &self.timewait
    }

    /// Detaches the program but keeps its maps: after this, the counters
    /// and the ring buffer stop changing, so a final drain and a final read
    /// of the counters agree exactly.
    pub fn detach(&mut self) -> Result<(), ProbeError> {
        if let Some(mut hooks) = self.hooks.take() {
            hooks.detach(&mut self.ebpf);
        }
        let Some(link) = self.link.take() else {
            return Ok(());
        };
        let program: &mut TracePoint = self
            .ebpf
            .program_mut(self.program_name)
            .ok_or(ProbeError::NoProgram(self.program_name))?
            .try_into()
            .map_err(ProbeError::Program)?;
        program.detach(link).map_err(ProbeError::Program)
    }

    /// The kernel's id of the loaded program (as `bpftool prog show` lists it).
    pub fn program_id(&self) -> Option<u32> {
        let program: &TracePoint = self.ebpf.program(self.program_name)?.try_into().ok()?;
        program.info().ok().map(|info| info.id())
    }

    /// Sum of all transition counters.
    pub fn transitions_total(&self) -> Result<u64, ProbeError> {
        Ok(self.transition_counts()?.total())
    }

    /// Which of the two programs is loaded.
    pub fn program_name(&self) -> &'static str {
        self.program_name
    }

    /// The configuration the program was loaded with.
    pub fn config(&self) -> &ProbeConfig {
        &self.config
    }

    /// The ring buffer of [`tracer_common::Event`]s. Can be taken once.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, ProbeError> {
        let map = self
            .ebpf
            .take_map("EVENTS")
            .ok_or(ProbeError::Map("EVENTS"))?;
        RingBuf::try_from(map).map_err(|_| ProbeError::Map("EVENTS"))
    }

    /// The program's log ring buffer, read through `logger` (see
    /// [`crate::kernel::logs`]). Can be taken once.
    pub fn take_logger<T: log::Log>(
        &mut self,
        logger: T,
    ) -> Result<aya_log::EbpfLogger<T>, aya_log::Error> {
        aya_log::EbpfLogger::init_with_logger(&mut self.ebpf, logger)
    }

    /// Transition counts since the program was loaded, summed over CPUs.
    pub fn transition_counts(&self) -> Result<TransitionMatrix, ProbeError> {
        let per_cpu = self
            .transitions
            .get(&0, 0)
            .map_err(|error| ProbeError::MapRead {
                name: "TRANSITIONS",
                error,
            })?;
        let mut sum = TransitionMatrix::ZERO;
        for matrix in per_cpu.iter() {
            sum.add(matrix);
        }
        Ok(sum)
    }

    /// The program's own counters.
    pub fn stats(&self) -> Result<KernelStats, ProbeError> {
        let mut stats = KernelStats {
            recursion_misses: self.recursion_misses().unwrap_or(0),
            ..KernelStats::default()
        };
        for stat in Stat::ALL {
            let value = sum_slot(&self.stats, "STATS", stat.slot())?;
            // Exhaustive: a new statistic cannot be left unread.
            let field = match stat {
                Stat::RingbufFull => &mut stats.ringbuf_full,
                Stat::RecordReadFailed => &mut stats.record_read_failed,
                Stat::NetnsReadFailed => &mut stats.netns_read_failed,
                Stat::StateTimeUpdateFailed => &mut stats.state_time_update_failed,
                Stat::BadConfig => &mut stats.bad_config,
                Stat::SockFieldReadFailed => &mut stats.sock_field_read_failed,
                Stat::TimewaitRecordLost => &mut stats.timewait_records_lost,
            };
            *field = value;
        }
        Ok(stats)
    }

    /// `recursion_misses` of the program (Linux 5.12+), read with
    /// BPF_OBJ_GET_INFO_BY_FD since aya does not expose it.
    fn recursion_misses(&self) -> Option<u64> {
        let offset = self.recursion_misses_offset? as usize;
        let program: &TracePoint = self.ebpf.program(self.program_name)?.try_into().ok()?;
        let fd = program.fd().ok()?.as_fd().as_raw_fd();
        let mut info = [0u8; 256];
        if offset + 8 > info.len() {
            return None;
        }
        #[repr(C)]
        struct InfoAttr {
            bpf_fd: u32,
            info_len: u32,
            info: u64,
        }
        let attr = InfoAttr {
            bpf_fd: fd as u32,
            info_len: info.len() as u32,
            info: info.as_mut_ptr() as u64,
        };
        const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
        // SAFETY: attr points at a buffer of info_len bytes that outlives the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_OBJ_GET_INFO_BY_FD,
                &attr as *const InfoAttr,
                std::mem::size_of::<InfoAttr>(),
            )
        };
        if rc != 0 {
            return None;
        }
        let bytes: [u8; 8] = info[offset..offset + 8].try_into().ok()?;
        Some(u64::from_ne_bytes(bytes))
    }
}

/// The program that reads this record layout, or the one [`PROGRAM_ENV`] asks for.
fn choose_program(layout: &RecordLayout) -> Result<&'static str, ProbeError> {
    match std::env::var(PROGRAM_ENV).as_deref() {
        Err(std::env::VarError::NotPresent) | Ok("" | "auto") => {}
        Ok("copy") => return Ok(PROGRAM_COPY),
        Ok(other) => return Err(ProbeError::ProgramChoice(other.to_string())),
        Err(std::env::VarError::NotUnicode(v)) => {
            return Err(ProbeError::ProgramChoice(v.to_string_lossy().into_owned()));
        }
    }
    Ok(if *layout == RecordLayout::LINUX_5_6 {
        PROGRAM_IN_PLACE
    } else {
        PROGRAM_COPY
    })
}

/// The `sk_flags` offset [`SOCK_FLAGS_OFFSET_ENV`] asks for, if any.
fn test_sock_flags_offset() -> Result<Option<u32>, ProbeError> {
    match std::env::var(SOCK_FLAGS_OFFSET_ENV) {
        Err(std::env::VarError::NotPresent) => Ok(None),
        Ok(v) => v.parse().map(Some).map_err(|_| ProbeError::TestOffset(v)),
        Err(std::env::VarError::NotUnicode(v)) => {
            Err(ProbeError::TestOffset(v.to_string_lossy().into_owned()))
        }
    }
}

/// `major.minor` of a kernel release string such as `6.18.44-fc-v782`.
fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn check_kernel_version() -> Result<(), ProbeError> {
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return Ok(()); // cannot tell: let loading report what fails
    };
    let release = release.trim();
    match parse_release(release) {
        Some(v) if v < MIN_KERNEL => Err(ProbeError::KernelTooOld {
            found: release.to_owned(),
        }),
        _ => Ok(()),
    }
}

fn take_per_cpu<V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<PerCpuArray<MapData, V>, ProbeError> {
    let map = ebpf.take_map(name).ok_or(ProbeError::Map(name))?;
    PerCpuArray::try_from(map).map_err(|_| ProbeError::Map(name))
}

fn sum_slot(
    map: &PerCpuArray<MapData, u64>,
    name: &'static str,
    slot: u32,
) -> Result<u64, ProbeError> {
    let values = map
        .get(&slot, 0)
        .map_err(|error| ProbeError::MapRead { name, error })?;
    Ok(values.iter().copied().fold(0u64, u64::wrapping_add))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_releases() {
        assert_eq!(parse_release("6.18.44-fc-v782"), Some((6, 18)));
        assert_eq!(parse_release("5.4.0-150-generic"), Some((5, 4)));
        assert_eq!(parse_release("4.19"), Some((4, 19)));
        assert_eq!(parse_release("garbage"), None);
        assert!(parse_release("5.4.0").unwrap() < MIN_KERNEL);
        assert!(parse_release("5.8.0").unwrap() >= MIN_KERNEL);
    }

    #[test]
    fn ring_buffer_sizes() {
        assert_eq!(validate_ring_buffer_size(4096).unwrap(), 4096);
        assert_eq!(validate_ring_buffer_size(1 << 30).unwrap(), 1 << 30);
        for bad in [0, 1, 4095, 4097, 3 << 20, 1 << 31, u64::MAX] {
            assert!(validate_ring_buffer_size(bad).is_err(), "{bad} accepted");
        }
    }
}
