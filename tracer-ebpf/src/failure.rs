//! Every error path of the program ends here: a count in `STATS`, the
//! signal user space exports, and an aya-log line with the value that
//! failed (the offset, the helper's return code), for `--log-level debug`.
//!
//! The lines are at debug level. User space loads the program with
//! aya-log's level (`AYA_LOG_LEVEL`, in `.rodata` like `CONFIG`) set from
//! its own: below debug the verifier sees every line's branch as never
//! taken and drops it, so the program does not even format them. They only
//! ever run after something failed, never on the path of a good event.

use aya_ebpf::EbpfContext;
use aya_log_ebpf::debug;
use tracer_common::Stat;

use crate::maps::count;

/// What failed, with the value that says why. Negative return codes are
/// the helpers' `-errno`.
#[derive(Clone, Copy)]
pub enum Failure {
    /// Event lost: a record field's offset in the load-time config lies
    /// past the record.
    FieldOffset(u32),
    /// Event lost: the load-time config's record size is 0 or too large.
    RecordSize(u32),
    /// Event lost: copying the tracepoint record failed.
    RecordRead(i32),
    /// Event lost: no room in the ring buffer.
    RingbufFull,
    /// No namespace: a BTF offset in the load-time config (`skc_net` in
    /// `struct sock`, or `ns.inum` in `struct net`) is past any structure.
    NetnsOffset(u32),
    /// No namespace: reading at this offset failed.
    NetnsRead { offset: u32, ret: i32 },
    /// No namespace: the socket's `struct net *` (at this offset) is NULL.
    NetnsNull(u32),
    /// A closing socket's field unknown: its BTF offset is past any
    /// `struct sock`.
    SockFieldOffset { field: SockField, offset: u32 },
    /// A closing socket's field unknown: reading it at this offset failed.
    SockFieldRead {
        field: SockField,
        offset: u32,
        ret: i32,
    },
    /// No time in state next time: the timestamp map refused an insert.
    StateTimeUpdate(i32),
    /// Whether a timewait socket was made unknown: reading the kernel
    /// stack failed.
    StackRead(i32),
    /// A timewait socket's record lost: reading its field at this offset
    /// failed (or the offset is past any structure: `ret` 0).
    TimewaitRead { offset: u32, ret: i32 },
    /// A timewait socket's record lost: no room in the ring buffer.
    TimewaitRingbufFull,
}

/// The fields the program reads from a socket reaching CLOSE.
#[derive(Clone, Copy)]
pub enum SockField {
    /// `sk_flags` (whether the peer's FIN had arrived).
    Flags,

    /// `sk_err` (why it closed).
    Err,
}

impl SockField {
    /// The field's name in the kernel, for the log.
    #[inline(always)]
    fn name(self) -> &'static str {
        match self {
            SockField::Flags => "sk_flags",
            SockField::Err => "sk_err",
        }
    }
}

impl Failure {
    /// The statistic this failure counts in.
    #[inline(always)]
    fn stat(self) -> Stat {
        match self {
            Failure::FieldOffset(_) | Failure::RecordSize(_) => Stat::BadConfig,
            Failure::RecordRead(_) => Stat::RecordReadFailed,
            Failure::RingbufFull => Stat::RingbufFull,
            Failure::NetnsOffset(_) | Failure::NetnsRead { .. } | Failure::NetnsNull(_) => {
                Stat::NetnsReadFailed
            }
            Failure::SockFieldOffset { .. } | Failure::SockFieldRead { .. } => {
                Stat::SockFieldReadFailed
            }
            Failure::StateTimeUpdate(_) => Stat::StateTimeUpdateFailed,
            Failure::StackRead(_) => Stat::SockFieldReadFailed,
            Failure::TimewaitRead { .. } | Failure::TimewaitRingbufFull => Stat::TimewaitRecordLost,
        }
    }

    /// Counts the failure and logs it. Inlined where it happens, so each
    /// site keeps only its own line.
    #[inline(always)]
    pub fn report<C: EbpfContext>(self, ctx: &C) {
        count(self.stat());
        match self {
            Failure::FieldOffset(offset) => debug!(
                ctx,
                "event lost: record field offset {} is out of bounds (load-time config)", offset
            ),
            Failure::RecordSize(size) => debug!(
                ctx,
                "event lost: record size {} is out of bounds (load-time config)", size
            ),
            Failure::RecordRead(ret) => {
                debug!(
                    ctx,
                    "event lost: copying the tracepoint record failed: {}", ret
                )
            }
            Failure::RingbufFull => debug!(ctx, "event lost: the ring buffer is full"),
            Failure::NetnsOffset(offset) => debug!(
                ctx,
                "netns not read: offset {} is out of bounds (load-time config)", offset
            ),
            Failure::NetnsRead { offset, ret } => debug!(
                ctx,
                "netns not read: reading at offset {} failed: {}", offset, ret
            ),
            Failure::NetnsNull(offset) => {
                debug!(
                    ctx,
                    "netns not read: the pointer at offset {} is NULL", offset
                )
            }
            Failure::SockFieldOffset { field, offset } => debug!(
                ctx,
                "{} not read: offset {} is out of bounds (load-time config)",
                field.name(),
                offset
            ),
            Failure::SockFieldRead { field, offset, ret } => debug!(
                ctx,
                "{} not read: reading at offset {} failed: {}",
                field.name(),
                offset,
                ret
            ),
            Failure::StackRead(ret) => debug!(
                ctx,
                "timewait socket unknown: reading the kernel stack failed: {}", ret
            ),
            Failure::TimewaitRead { offset, ret } => debug!(
                ctx,
                "timewait record lost: reading at offset {} failed: {}", offset, ret
            ),
            Failure::TimewaitRingbufFull => {
                debug!(ctx, "timewait record lost: the ring buffer is full")
            }
            Failure::StateTimeUpdate(ret) => debug!(
                ctx,
                "time in state lost: the timestamp map refused an insert: {}", ret
            ),
        }
    }
}
