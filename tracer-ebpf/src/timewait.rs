//! The programs on the kernel's timewait functions: a timewait socket's
//! life, which no tracepoint shows. Loaded only where the kernel allows
//! tracing programs (fentry, Linux 5.5+); elsewhere user space predicts
//! timewait sockets from the full socket's last transition.
//!
//! match-proto: fentry `__inet_twsk_schedule(struct inet_timewait_sock *tw,
//! int timeo, bool rearm)` and `inet_twsk_kill(struct inet_timewait_sock
//! *tw)`, the same in Linux 4.6 to 6.18 (`net/ipv4/inet_timewait_sock.c`).
//! `tcp_time_wait()` schedules a timewait socket once it is made
//! (`rearm` false), after its substate and four-tuple are set;
//! `tcp_timewait_state_process()` schedules it again (`rearm` true) when
//! the peer's FIN turns FIN_WAIT2 into TIME_WAIT and when a segment
//! restarts the TIME_WAIT timer, with the substate already TIME_WAIT.
//! `inet_twsk_kill()` takes it out of the kernel's tables: from its timer,
//! and from `inet_twsk_deschedule_put()` (a reuse of its four-tuple, a
//! reset, a namespace's end). Fields are read at BTF offsets.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::fentry,
    programs::FEntryContext,
};
use tracer_common::{
    AF_INET, AF_INET6, DETAIL_TIMEWAIT_SOCK, Event, FLAG_NETNS, MAX_STRUCT_OFFSET, TcpState,
    TimewaitConfig,
};

use crate::{
    failure::Failure,
    maps::{EVENTS, timewait_config},
    set_state::{read_netns, wakeup_flag},
};

#[fentry(function = "__inet_twsk_schedule")]
pub fn inet_twsk_schedule(ctx: FEntryContext) -> u32 {
    let tw: u64 = ctx.arg(0);
    // An int and a bool: only the low bits of their registers are defined.
    let timeo = ctx.arg::<u64>(1) as u32 as i32;
    let rearm = ctx.arg::<u64>(2) & 0xff != 0;
    let result = record(&ctx, tw, |substate| {
        let old = if rearm {
            substate
        } else {
            TcpState::Close as u8
        };
        (old, substate, timeo.max(0) as u64)
    });
    finish(&ctx, result)
}

#[fentry(function = "inet_twsk_kill")]
pub fn inet_twsk_kill(ctx: FEntryContext) -> u32 {
    let tw: u64 = ctx.arg(0);
    let result = record(&ctx, tw, |substate| (substate, TcpState::Close as u8, 0));
    finish(&ctx, result)
}

#[inline(always)]
fn finish(ctx: &FEntryContext, result: Result<(), Failure>) -> u32 {
    if let Err(failure) = result {
        failure.report(ctx);
    }
    0
}

/// A field of the timewait socket at a BTF offset.
#[inline(always)]
fn field<T>(tw: u64, offset: u32) -> Result<T, Failure> {
    if offset > MAX_STRUCT_OFFSET {
        return Err(Failure::TimewaitRead { offset, ret: 0 });
    }
    // SAFETY: bpf_probe_read_kernel checks the address; failures are counted.
    unsafe { bpf_probe_read_kernel((tw + u64::from(offset)) as *const T) }
        .map_err(|ret| Failure::TimewaitRead { offset, ret })
}

/// Writes one record of `tw`; `states` gives the old state, the new one
/// and the timer's jiffies from its substate.
#[inline(always)]
fn record(
    ctx: &FEntryContext,
    tw: u64,
    states: impl FnOnce(u8) -> (u8, u8, u64),
) -> Result<(), Failure> {
    let cfg = timewait_config();
    let family = field::<u16>(tw, cfg.off_family)?;
    let (saddr, daddr) = addresses(tw, cfg, family)?;
    let sport = field::<u16>(tw, cfg.off_num)?;
    let dport = u16::from_be(field::<u16>(tw, cfg.off_dport)?);
    let substate = field::<u8>(tw, cfg.off_substate)?;
    let netns = if cfg.flags & FLAG_NETNS != 0 {
        read_netns(ctx, tw, cfg.off_net, cfg.off_net_inum)
    } else {
        0
    };
    let (oldstate, newstate, timer) = states(substate);
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };

    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        return Err(Failure::TimewaitRingbufFull);
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points at the reserved, exclusively ours, 8-aligned
    // record; every field is written before it is submitted.
    unsafe {
        (*event).ts_ns = now;
        (*event).skaddr = tw;
        (*event).old_state_ns = timer;
        (*event).netns = netns;
        (*event).pid = 0;
        (*event).tid = 0;
        (*event).oldstate = oldstate;
        (*event).newstate = newstate;
        (*event).family = family;
        (*event).sport = sport;
        (*event).dport = dport;
        (*event).detail = DETAIL_TIMEWAIT_SOCK;
        *((*event).saddr.as_mut_ptr() as *mut [u32; 4]) = saddr;
        *((*event).daddr.as_mut_ptr() as *mut [u32; 4]) = daddr;
        // Two volatile stores, as in set_state: no memset call.
        let comm = (*event).comm.as_mut_ptr() as *mut u64;
        core::ptr::write_volatile(comm, 0);
        core::ptr::write_volatile(comm.add(1), 0);
    }
    entry.submit(wakeup_flag(cfg.wakeup_bytes));
    Ok(())
}

/// The local and remote address, as 32-bit words (IPv4 in the first).
#[inline(always)]
fn addresses(tw: u64, cfg: &TimewaitConfig, family: u16) -> Result<([u32; 4], [u32; 4]), Failure> {
    Ok(if family == AF_INET6 {
        (
            field::<[u32; 4]>(tw, cfg.off_v6_rcv_saddr)?,
            field::<[u32; 4]>(tw, cfg.off_v6_daddr)?,
        )
    } else if family == AF_INET {
        (
            [field::<u32>(tw, cfg.off_rcv_saddr)?, 0, 0, 0],
            [field::<u32>(tw, cfg.off_daddr)?, 0, 0, 0],
        )
    } else {
        ([0; 4], [0; 4])
    })
}
