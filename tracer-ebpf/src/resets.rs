//! The programs on `tcp:tcp_send_reset` and `tcp:tcp_receive_reset`:
//! resets counted in the kernel by namespace and reason (sent) or state
//! (received), in [`crate::maps::RESETS`].
//!
//! match-proto: tracepoint tcp/tcp_send_reset (Linux 4.15+): skbaddr,
//! skaddr, and from 6.10 `reason` (`enum sk_rst_reason`); before 6.10 it
//! fires only for resets sent from a socket. tracepoint
//! tcp/tcp_receive_reset (4.15+): skaddr, fired in `tcp_reset()` before the
//! socket leaves its state; the state is read from `skc_state`. Offsets
//! come from the format files and BTF, read by user space at load time.

use aya_ebpf::{
    EbpfContext, helpers::bpf_probe_read_kernel, macros::tracepoint, programs::TracePointContext,
};
use tracer_common::{
    FLAG_NETNS, MAX_RECORD_SIZE, MAX_STRUCT_OFFSET, NO_FIELD, RESET_REASON_UNKNOWN, RESET_RECEIVED,
    RESET_SENT, ResetKey, TcpState,
};

use crate::{
    maps::{RESETS, SYN_SENT_RESETS, reset_config},
    set_state::read_netns,
};

#[tracepoint(category = "tcp", name = "tcp_send_reset")]
pub fn tcp_send_reset(ctx: TracePointContext) -> u32 {
    let cfg = reset_config();
    let reason = if cfg.send_reason == NO_FIELD {
        RESET_REASON_UNKNOWN
    } else {
        match record::<u32>(&ctx, cfg.send_reason) {
            Some(r) if r < u32::from(RESET_REASON_UNKNOWN) => r as u8,
            _ => RESET_REASON_UNKNOWN,
        }
    };
    let sk = record::<u64>(&ctx, cfg.send_skaddr).unwrap_or(0);
    let netns = if cfg.flags & FLAG_NETNS == 0 {
        0
    } else if sk != 0 {
        read_netns(&ctx, sk, cfg.off_sock_net, cfg.off_net_inum)
    } else {
        packet_netns(&ctx)
    };
    count(netns, RESET_SENT, reason);
    0
}

#[tracepoint(category = "tcp", name = "tcp_receive_reset")]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    let cfg = reset_config();
    let Some(sk) = record::<u64>(&ctx, cfg.recv_skaddr).filter(|&sk| sk != 0) else {
        return 0;
    };
    let state = kernel::<u8>(sk, cfg.off_sock_state).unwrap_or(0);
    let netns = if cfg.flags & FLAG_NETNS != 0 {
        read_netns(&ctx, sk, cfg.off_sock_net, cfg.off_net_inum)
    } else {
        0
    };
    count(netns, RESET_RECEIVED, state);
    if state == TcpState::SynSent as u8 {
        let _ = SYN_SENT_RESETS.insert(sk, 1, 0);
    }
    0
}

/// The namespace of the device a socketless reset answers a packet from.
#[inline(always)]
fn packet_netns(ctx: &TracePointContext) -> u32 {
    let cfg = reset_config();
    let Some(skb) = record::<u64>(ctx, cfg.send_skbaddr).filter(|&p| p != 0) else {
        return 0;
    };
    let Some(dev) = kernel::<u64>(skb, cfg.off_skb_dev).filter(|&p| p != 0) else {
        return 0;
    };
    // `read_netns` reads a `struct net *` at an offset in its object: here
    // the device's `nd_net.net`.
    read_netns(ctx, dev, cfg.off_dev_net, cfg.off_net_inum)
}

/// A field of a tracepoint's record at a configured offset (the reset
/// and retransmission programs read their records this way).
#[inline(always)]
pub(crate) fn record<T>(ctx: &TracePointContext, offset: u32) -> Option<T> {
    if offset as usize + core::mem::size_of::<T>() > MAX_RECORD_SIZE as usize {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel checks the address; the record is at
    // least this long (user space checked the offset against its format).
    unsafe { bpf_probe_read_kernel((ctx.as_ptr() as *const u8).add(offset as usize) as *const T) }
        .ok()
}

/// A field of a kernel structure at a BTF offset.
#[inline(always)]
fn kernel<T>(base: u64, offset: u32) -> Option<T> {
    if offset > MAX_STRUCT_OFFSET {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel checks the address.
    unsafe { bpf_probe_read_kernel((base + u64::from(offset)) as *const T) }.ok()
}

#[inline(always)]
fn count(netns: u32, direction: u8, value: u8) {
    let key = ResetKey {
        netns,
        direction,
        value,
        _pad: 0,
    };
    if let Some(n) = RESETS.get_ptr_mut(key) {
        // SAFETY: this CPU's value of a successful lookup; programs on one
        // CPU do not nest.
        unsafe { *n += 1 };
    } else {
        // A new key (or one the LRU evicted): this CPU's value is 1.
        let _ = RESETS.insert(key, 1, 0);
    }
}
