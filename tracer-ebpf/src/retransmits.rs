//! The programs on `tcp:tcp_retransmit_skb` and
//! `tcp:tcp_retransmit_synack`: retransmissions counted in the kernel by
//! namespace and remote end (data) or listener (SYN-ACK), in
//! [`crate::maps::RETRANSMITS`].
//!
//! match-proto: tracepoint tcp/tcp_retransmit_skb (4.15+): skaddr, family,
//! dport (host order), daddr, daddr_v6, and from 6.12 `err` (the
//! retransmission failed unless 0; before, only those sent were traced).
//! tracepoint tcp/tcp_retransmit_synack (4.16+): skaddr (the listener),
//! family, sport, saddr, saddr_v6. Offsets from the format files.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::{
    AF_INET, AF_INET6, FLAG_NETNS, NO_FIELD, RETRANSMIT_DATA, RETRANSMIT_SYNACK, RetransmitKey,
};

use crate::{
    maps::{RETRANSMITS, retransmit_config},
    resets::record,
    set_state::read_netns,
};

#[tracepoint(category = "tcp", name = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    let cfg = retransmit_config();
    if cfg.skb_err != NO_FIELD && record::<i32>(&ctx, cfg.skb_err).unwrap_or(0) != 0 {
        return 0;
    }
    let where_ = Where {
        skaddr: cfg.skb_skaddr,
        family: cfg.skb_family,
        port: cfg.skb_dport,
        addr: cfg.skb_daddr,
        addr_v6: cfg.skb_daddr_v6,
    };
    count(&ctx, RETRANSMIT_DATA, &where_);
    0
}

#[tracepoint(category = "tcp", name = "tcp_retransmit_synack")]
pub fn tcp_retransmit_synack(ctx: TracePointContext) -> u32 {
    let cfg = retransmit_config();
    let where_ = Where {
        skaddr: cfg.synack_skaddr,
        family: cfg.synack_family,
        port: cfg.synack_sport,
        addr: cfg.synack_saddr,
        addr_v6: cfg.synack_saddr_v6,
    };
    count(&ctx, RETRANSMIT_SYNACK, &where_);
    0
}

/// Record offsets of the socket and of the end a key names.
struct Where {
    skaddr: u32,
    family: u32,
    port: u32,
    addr: u32,
    addr_v6: u32,
}

#[inline(always)]
fn count(ctx: &TracePointContext, kind: u8, at: &Where) {
    let cfg = retransmit_config();
    let Some(family) = record::<u16>(ctx, at.family) else {
        return;
    };
    let mut key = RetransmitKey {
        netns: 0,
        kind,
        family: family as u8,
        port: record::<u16>(ctx, at.port).unwrap_or(0),
        addr: [0; 16],
    };
    if family == AF_INET6 {
        key.addr = record::<[u8; 16]>(ctx, at.addr_v6).unwrap_or([0; 16]);
    } else if family == AF_INET {
        let v4 = record::<[u8; 4]>(ctx, at.addr).unwrap_or([0; 4]);
        key.addr[..4].copy_from_slice(&v4);
    } else {
        return;
    }
    if cfg.flags & FLAG_NETNS != 0
        && let Some(sk) = record::<u64>(ctx, at.skaddr).filter(|&sk| sk != 0)
    {
        key.netns = read_netns(ctx, sk, cfg.off_sock_net, cfg.off_net_inum);
    }
    if let Some(n) = RETRANSMITS.get_ptr_mut(key) {
        // SAFETY: this CPU's value of a successful lookup; programs on one
        // CPU do not nest.
        unsafe { *n += 1 };
    } else {
        let _ = RETRANSMITS.insert(key, 1, 0);
    }
}
