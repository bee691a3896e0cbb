//! The programs on the tracepoint `sock:inet_sock_set_state`.
//!
//! match-proto: tracepoint sock/inet_sock_set_state (Linux 4.16+); record
//! fields skaddr, oldstate, newstate, sport, dport, family, protocol (u8
//! before 5.6, u16 since), saddr, daddr, saddr_v6, daddr_v6. Offsets come
//! from the tracefs format file, read by user space at load time.
//! Also reads `struct sock` -> `struct net` -> `ns.inum`; `sk_err` of a
//! socket reaching CLOSE; and `sk_flags` (bit `SOCK_DONE`) of one closing
//! from FIN_WAIT1, FIN_WAIT2 or CLOSING, all at offsets from the running
//! kernel's BTF; and for the latter the kernel stack (`bpf_get_stack`,
//! Linux 4.18+), to see whether `tcp_time_wait()` (address from
//! `/proc/kallsyms`) closed it.
//!
//! Two programs share one body. `inet_sock_set_state` is for the layout of
//! Linux 5.6+ and reads the record in place at offsets compiled in (the
//! verifier accepts a context load only at an offset fixed in the
//! instruction, so offsets from the load-time config cannot be used).
//! `inet_sock_set_state_copy` is for any other layout: it copies the record
//! to the stack and reads it at the configured offsets. User space loads one.

use core::mem::MaybeUninit;

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel, generated},
    macros::tracepoint,
    programs::TracePointContext,
};
use tracer_common::{
    AF_INET, AF_INET6, DETAIL_BY_TIME_WAIT, DETAIL_CLOSER_KNOWN, DETAIL_ERR_KNOWN,
    DETAIL_ERR_SHIFT, DETAIL_FIN_KNOWN, DETAIL_FIN_RECEIVED, DETAIL_RESET_KNOWN,
    DETAIL_RESET_RECEIVED, Event, FLAG_COMM_ALWAYS, FLAG_NETNS, FLAG_SOCK_ERR, FLAG_SOCK_FLAGS,
    FLAG_STATE_TIME, FLAG_TIME_WAIT_STACK, IPPROTO_TCP, MAX_RECORD_SIZE, MAX_STRUCT_OFFSET,
    ProbeConfig, RecordLayout, SOCK_DONE_BIT, TASK_COMM_LEN, TIME_WAIT_STACK_DEPTH, TcpState,
    state::may_leave_timewait,
};

use crate::{
    failure::{Failure, SockField},
    maps::{
        EVENTS, STACK, STATE_SINCE, config, count_transition, mark_listening, take_syn_sent_reset,
    },
};

const RECORD_WORDS: usize = MAX_RECORD_SIZE as usize / 8;
/// An event as it sits in the ring buffer: 8 bytes of header, then the event.
const RECORD_BYTES: u64 = 8 + core::mem::size_of::<Event>() as u64;

#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let record = InPlace(ctx.as_ptr().cast_const().cast());
    finish(
        &ctx,
        on_transition(&ctx, config(), &record, &RecordLayout::LINUX_5_6),
    )
}

#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn inet_sock_set_state_copy(ctx: TracePointContext) -> u32 {
    let cfg = config();
    let mut record = Copied {
        words: MaybeUninit::uninit(),
    };
    let result = match record.read(&ctx, cfg) {
        Ok(()) => on_transition(&ctx, cfg, &record, &cfg.record),
        Err(failure) => Err(failure),
    };
    finish(&ctx, result)
}

/// Counts (and logs) why an event was lost, if it was.
#[inline(always)]
fn finish(ctx: &TracePointContext, result: Result<(), Failure>) -> u32 {
    if let Err(failure) = result {
        failure.report(ctx);
    }
    0
}

/// The tracepoint record, wherever it is read from.
trait Record {
    /// Where the record's bytes start.
    fn base(&self) -> *const u8;

    /// A field of type `T` at `offset`; out-of-bounds offsets are a config error.
    #[inline(always)]
    fn field<T: Copy>(&self, offset: u32) -> Result<T, Failure> {
        if offset as usize + core::mem::size_of::<T>() > MAX_RECORD_SIZE as usize {
            return Err(Failure::FieldOffset(offset));
        }
        // SAFETY: within MAX_RECORD_SIZE (checked above) of a record user
        // space checked the alignment of. In place, the verifier checks
        // every context load against the tracepoint's bounds; copied, the
        // bytes up to record_size were written by the copy, and the
        // verifier rejects the program if a read could go past them.
        Ok(unsafe { core::ptr::read(self.base().add(offset as usize) as *const T) })
    }
}

/// The record where the tracepoint put it: the program's context. Only
/// constant offsets pass the verifier, so only [`RecordLayout::LINUX_5_6`].
struct InPlace(*const u8);

impl Record for InPlace {
    #[inline(always)]
    fn base(&self) -> *const u8 {
        self.0
    }
}

/// The record copied to the stack in one helper call. Left uninitialised
/// before the copy: zeroing 128 bytes compiles to a call to a byte-by-byte
/// memset, which cost more than the rest of the program.
struct Copied {
    words: MaybeUninit<[u64; RECORD_WORDS]>,
}

impl Copied {
    /// Copies the record into `self` (returning it by value cost a 128-byte copy).
    #[inline(always)]
    fn read(&mut self, ctx: &TracePointContext, cfg: &ProbeConfig) -> Result<(), Failure> {
        let size = cfg.record_size;
        if size == 0 || size > MAX_RECORD_SIZE {
            return Err(Failure::RecordSize(size));
        }
        // SAFETY: the destination holds MAX_RECORD_SIZE bytes and size is at most that.
        let ret = unsafe {
            generated::bpf_probe_read_kernel(
                self.words.as_mut_ptr().cast(),
                size,
                ctx.as_ptr().cast_const(),
            )
        };
        if ret < 0 {
            return Err(Failure::RecordRead(ret as i32));
        }
        Ok(())
    }
}

impl Record for Copied {
    #[inline(always)]
    fn base(&self) -> *const u8 {
        self.words.as_ptr().cast()
    }
}

#[inline(always)]
fn on_transition(
    ctx: &TracePointContext,
    cfg: &ProbeConfig,
    record: &impl Record,
    layout: &RecordLayout,
) -> Result<(), Failure> {
    let protocol = if layout.protocol_size == 1 {
        u16::from(record.field::<u8>(layout.protocol)?)
    } else {
        record.field::<u16>(layout.protocol)?
    };
    if protocol != IPPROTO_TCP {
        return Ok(());
    }

    let oldstate = record.field::<i32>(layout.oldstate)? as u32;
    let newstate = record.field::<i32>(layout.newstate)? as u32;
    // Counted before anything can fail, so the counters stay exact.
    count_transition(oldstate, newstate);

    let skaddr = record.field::<u64>(layout.skaddr)?;
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let old_state_ns = if cfg.flags & FLAG_STATE_TIME != 0 {
        state_time(ctx, skaddr, newstate, now)
    } else {
        0
    };
    let netns = if cfg.flags & FLAG_NETNS != 0 {
        read_netns(ctx, skaddr, cfg.off_sock_net, cfg.off_net_inum)
    } else {
        0
    };
    let sport = record.field::<u16>(layout.sport)?;
    // Only an accepted connection (or a simultaneous open, rare) leaves
    // SYN_RECV, and its local port is its listener's.
    if oldstate == TcpState::SynRecv as u32 && newstate == TcpState::Established as u32 {
        mark_listening(netns, sport);
    }
    let detail = if newstate == TcpState::Close as u32 {
        close_detail(ctx, skaddr, cfg, oldstate)
    } else {
        0
    };

    // Everything that can fail is read before the reservation, so no path
    // leaves one open. Addresses move as 32-bit words: byte arrays built on
    // the stack compile to calls to a byte-by-byte memset.
    let family = record.field::<u16>(layout.family)?;
    let dport = record.field::<u16>(layout.dport)?;
    let (saddr, daddr) = addresses(record, layout, family)?;
    let pid_tgid = bpf_get_current_pid_tgid();

    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        return Err(Failure::RingbufFull);
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points at the reserved, exclusively ours, 8-aligned
    // record; every field is written before it is submitted.
    unsafe {
        (*event).ts_ns = now;
        (*event).skaddr = skaddr;
        (*event).old_state_ns = old_state_ns;
        (*event).netns = netns;
        (*event).pid = (pid_tgid >> 32) as u32;
        (*event).tid = pid_tgid as u32;
        (*event).oldstate = oldstate as u8;
        (*event).newstate = newstate as u8;
        (*event).family = family;
        (*event).sport = sport;
        (*event).dport = dport;
        (*event).detail = detail;
        *((*event).saddr.as_mut_ptr() as *mut [u32; 4]) = saddr;
        *((*event).daddr.as_mut_ptr() as *mut [u32; 4]) = daddr;
        fill_comm(
            &mut (*event).comm,
            cfg.flags & FLAG_COMM_ALWAYS != 0 || oldstate == TcpState::Close as u32,
        );
    }
    entry.submit(wakeup_flag(cfg.wakeup_bytes));
    Ok(())
}

/// The current task's name, or zeroes when `wanted` is false.
#[inline(always)]
fn fill_comm(comm: &mut [u8; TASK_COMM_LEN], wanted: bool) {
    if wanted {
        // SAFETY: the helper writes at most `len` bytes into `comm` (all
        // 16, zeroes on failure).
        unsafe { generated::bpf_get_current_comm(comm.as_mut_ptr().cast(), comm.len() as u32) };
    } else {
        // Two volatile stores: a plain `[0; 2]` store compiled to a call
        // to a byte-by-byte memset.
        let words = comm.as_mut_ptr() as *mut u64;
        // SAFETY: `comm` is 16 bytes, 8-aligned inside the event.
        unsafe {
            core::ptr::write_volatile(words, 0);
            core::ptr::write_volatile(words.add(1), 0);
        }
    }
}

/// The local and remote address, as 32-bit words (IPv4 in the first).
#[inline(always)]
fn addresses(
    record: &impl Record,
    layout: &RecordLayout,
    family: u16,
) -> Result<([u32; 4], [u32; 4]), Failure> {
    Ok(if family == AF_INET6 {
        (
            record.field::<[u32; 4]>(layout.saddr_v6)?,
            record.field::<[u32; 4]>(layout.daddr_v6)?,
        )
    } else if family == AF_INET {
        (
            [record.field::<u32>(layout.saddr)?, 0, 0, 0],
            [record.field::<u32>(layout.daddr)?, 0, 0, 0],
        )
    } else {
        ([0; 4], [0; 4])
    })
}

/// Wakes the reader only for a record that takes the waiting data past a
/// multiple of `wakeup_bytes`: once when a batch is ready, and again for
/// each further batch while the reader lags (at most eight times per ring
/// buffer's worth), never per event. The reader's timer collects the rest.
#[inline(always)]
pub(crate) fn wakeup_flag(wakeup_bytes: u32) -> u64 {
    let waiting = EVENTS.query(u64::from(BPF_RB_AVAIL_DATA));
    // A power of two (user space makes it one): masks, not divisions.
    let batch = !(u64::from(wakeup_bytes).wrapping_sub(1));
    if waiting & batch != waiting.saturating_sub(RECORD_BYTES) & batch {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}

/// Time spent in the old state, and the socket's new timestamp. The entry is
/// removed when the socket reaches CLOSE (as libbpf-tools' tcpstates does).
#[inline(always)]
fn state_time(ctx: &TracePointContext, skaddr: u64, newstate: u32, now: u64) -> u64 {
    let since = STATE_SINCE
        .get_ptr(skaddr)
        // SAFETY: a pointer returned by a map lookup is valid for reading.
        .map(|p| unsafe { *p })
        .unwrap_or(now);
    if newstate == TcpState::Close as u32 {
        // A missing entry (socket older than the program) is not an error.
        let _ = STATE_SINCE.remove(skaddr);
    } else if let Err(ret) = STATE_SINCE.insert(skaddr, now, 0) {
        Failure::StateTimeUpdate(ret).report(ctx);
    }
    now.saturating_sub(since)
}

/// What a socket reaching CLOSE says about how it ended: its `sk_err`
/// (a reset, a timeout, an ICMP error), and, closing from FIN_WAIT1,
/// FIN_WAIT2 or CLOSING, whether the peer's FIN had arrived (the substate
/// of the timewait socket the kernel makes: TIME_WAIT after the FIN,
/// FIN_WAIT2 before) and whether it made one at all (`tcp_time_wait()`
/// closed it: the socket itself looks the same either way, and the
/// tracepoint fires after it left every hash).
/// Unreadable fields are left out of the bit set (counted).
#[inline(always)]
fn close_detail(ctx: &TracePointContext, skaddr: u64, cfg: &ProbeConfig, oldstate: u32) -> u32 {
    let mut detail = 0;
    if cfg.flags & FLAG_SOCK_ERR != 0
        && let Some(err) = sock_field::<i32>(ctx, skaddr, cfg.off_sock_err, SockField::Err)
    {
        let err = if err < 0 {
            0
        } else if err > 255 {
            255
        } else {
            err as u32
        };
        detail |= DETAIL_ERR_KNOWN | (err << DETAIL_ERR_SHIFT);
    }
    if oldstate == TcpState::SynSent as u32
        && let Some(reset) = take_syn_sent_reset(skaddr)
    {
        detail |= DETAIL_RESET_KNOWN;
        if reset {
            detail |= DETAIL_RESET_RECEIVED;
        }
    }
    if !may_leave_timewait(oldstate, TcpState::Close as u32) {
        return detail;
    }
    if cfg.flags & FLAG_SOCK_FLAGS != 0
        && let Some(flags) = sock_field::<u64>(ctx, skaddr, cfg.off_sock_flags, SockField::Flags)
    {
        detail |= DETAIL_FIN_KNOWN;
        if flags & (1 << SOCK_DONE_BIT) != 0 {
            detail |= DETAIL_FIN_RECEIVED;
        }
    }
    if cfg.flags & FLAG_TIME_WAIT_STACK != 0
        && let Some(by_time_wait) = closed_by_time_wait(ctx, cfg)
    {
        detail |= DETAIL_CLOSER_KNOWN;
        if by_time_wait {
            detail |= DETAIL_BY_TIME_WAIT;
        }
    }
    detail
}

/// Whether `tcp_time_wait()` closed the socket: it puts a timewait socket
/// in its place first. Its frame is usually gone from the stack (it ends
/// by tail-jumping to `tcp_done()`), so each return address is checked
/// both ways: inside the function, or right after a `call` to it (x86's
/// `call rel32`: 0xe8 and the target's offset from the return address).
/// None when the stack could not be read (counted and logged).
#[inline(always)]
fn closed_by_time_wait(ctx: &TracePointContext, cfg: &ProbeConfig) -> Option<bool> {
    let frames = STACK.get_ptr_mut(0)?;
    let size = (TIME_WAIT_STACK_DEPTH * 8) as u32;
    // SAFETY: `frames` is this CPU's map value of `size` bytes.
    let ret = unsafe { generated::bpf_get_stack(ctx.as_ptr(), frames.cast(), size, 0) };
    if ret < 0 {
        Failure::StackRead(ret as i32).report(ctx);
        return None;
    }
    let [start, end] = cfg.tcp_time_wait;
    let depth = ret as usize / 8;
    for i in 0..TIME_WAIT_STACK_DEPTH {
        if i >= depth {
            break;
        }
        // SAFETY: within the map value, and written by the helper.
        let ip = unsafe { (*frames)[i] };
        if ip >= start && ip < end {
            return Some(true);
        }
        // The 8 bytes before the return address end with the call.
        // SAFETY: bpf_probe_read_kernel checks the address.
        let Ok(before) = (unsafe { bpf_probe_read_kernel((ip - 8) as *const u64) }) else {
            continue;
        };
        let target = ip.wrapping_add((before >> 32) as i32 as i64 as u64);
        if (before >> 24) & 0xff == 0xe8 && target >= start && target < end {
            return Some(true);
        }
    }
    Some(false)
}

/// A field of `struct sock` at a BTF offset, or None (counted and logged).
#[inline(always)]
fn sock_field<T>(ctx: &TracePointContext, skaddr: u64, offset: u32, field: SockField) -> Option<T> {
    if offset > MAX_STRUCT_OFFSET {
        Failure::SockFieldOffset { field, offset }.report(ctx);
        return None;
    }
    let ptr = (skaddr + u64::from(offset)) as *const T;
    // SAFETY: bpf_probe_read_kernel checks the address; failures are counted.
    match unsafe { bpf_probe_read_kernel(ptr) } {
        Ok(value) => Some(value),
        Err(ret) => {
            Failure::SockFieldRead { field, offset, ret }.report(ctx);
            None
        }
    }
}

/// The inode number of the socket's network namespace (`struct net *` at
/// `off_net` in the socket, `ns.inum` at `off_inum` in it), or 0 (counted).
#[inline(always)]
pub(crate) fn read_netns(ctx: &impl EbpfContext, skaddr: u64, off_net: u32, off_inum: u32) -> u32 {
    if off_net > MAX_STRUCT_OFFSET || off_inum > MAX_STRUCT_OFFSET {
        Failure::NetnsOffset(off_net.max(off_inum)).report(ctx);
        return 0;
    }
    let net_ptr = (skaddr + u64::from(off_net)) as *const u64;
    // SAFETY: bpf_probe_read_kernel checks the address; failures are counted.
    let net = match unsafe { bpf_probe_read_kernel(net_ptr) } {
        Ok(0) => {
            Failure::NetnsNull(off_net).report(ctx);
            return 0;
        }
        Ok(net) => net,
        Err(ret) => {
            Failure::NetnsRead {
                offset: off_net,
                ret,
            }
            .report(ctx);
            return 0;
        }
    };
    let inum_ptr = (net + u64::from(off_inum)) as *const u32;
    // SAFETY: as above.
    match unsafe { bpf_probe_read_kernel(inum_ptr) } {
        Ok(inum) => inum,
        Err(ret) => {
            Failure::NetnsRead {
                offset: off_inum,
                ret,
            }
            .report(ctx);
            0
        }
    }
}
