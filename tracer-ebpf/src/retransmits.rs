//! The programs on `tcp:tcp_retransmit_skb` and
//! `tcp:tcp_retransmit_synack`: retransmissions counted in the kernel by
//! namespace and remote end (data on a connection this host opened),
//! local end (data on one a listener accepted: its local port is in
//! [`crate::maps::LISTENING`]) or listener (SYN-ACK), in
//! [`crate::maps::RETRANSMITS`].
//!
//! match-proto: tracepoint tcp/tcp_retransmit_skb (4.15+): skaddr, family,
//! sport, dport (host order), saddr, daddr, saddr_v6, daddr_v6, and from
//! 6.12 `err` (the retransmission failed unless 0; before, only those sent
//! were traced).
//! tracepoint tcp/tcp_retransmit_synack (4.16+): skaddr (the listener),
//! family, sport, saddr, saddr_v6. Offsets from the format files.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::{
    AF_INET, AF_INET6, FLAG_NETNS, NO_FIELD, RETRANSMIT_DATA, RETRANSMIT_SERVED, RETRANSMIT_SYNACK,
    RetransmitKey,
};

use crate::{
    maps::{RETRANSMITS, is_listening, retransmit_config},
    resets::record,
    set_state::read_netns,
};

#[tracepoint(category = "tcp", name = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    let cfg = retransmit_config();
    if cfg.skb_err != NO_FIELD && record::<i32>(&ctx, cfg.skb_err).unwrap_or(0) != 0 {
        return 0;
    }
    let netns = netns_of(&ctx, cfg.skb_skaddr);
    let sport = record::<u16>(&ctx, cfg.skb_sport).unwrap_or(0);
    // A connection a listener accepted is counted by its local end: the
    // remote one is a client's ephemeral port.
    let (kind, where_) = if is_listening(netns, sport) {
        let local = Where {
            family: cfg.skb_family,
            port: cfg.skb_sport,
            addr: cfg.skb_saddr,
            addr_v6: cfg.skb_saddr_v6,
        };
        (RETRANSMIT_SERVED, local)
    } else {
        let remote = Where {
            family: cfg.skb_family,
            port: cfg.skb_dport,
            addr: cfg.skb_daddr,
            addr_v6: cfg.skb_daddr_v6,
        };
        (RETRANSMIT_DATA, remote)
    };
    count(&ctx, netns, kind, &where_);
    0
}

#[tracepoint(category = "tcp", name = "tcp_retransmit_synack")]
pub fn tcp_retransmit_synack(ctx: TracePointContext) -> u32 {
    let cfg = retransmit_config();
    let where_ = Where {
        family: cfg.synack_family,
        port: cfg.synack_sport,
        addr: cfg.synack_saddr,
        addr_v6: cfg.synack_saddr_v6,
    };
    count(
        &ctx,
        netns_of(&ctx, cfg.synack_skaddr),
        RETRANSMIT_SYNACK,
        &where_,
    );
    0
}

/// Record offsets of the end a key names.
struct Where {
    family: u32,
    port: u32,
    addr: u32,
    addr_v6: u32,
}

/// The namespace of the socket at record offset `skaddr`, or 0 when
/// namespaces are not told apart.
#[inline(always)]
fn netns_of(ctx: &TracePointContext, skaddr: u32) -> u32 {
    let cfg = retransmit_config();
    if cfg.flags & FLAG_NETNS == 0 {
        return 0;
    }
    match record::<u64>(ctx, skaddr).filter(|&sk| sk != 0) {
        Some(sk) => read_netns(ctx, sk, cfg.off_sock_net, cfg.off_net_inum),
        None => 0,
    }
}

#[inline(always)]
fn count(ctx: &TracePointContext, netns: u32, kind: u8, at: &Where) {
    let Some(family) = record::<u16>(ctx, at.family) else {
        return;
    };
    let mut key = RetransmitKey {
        netns,
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
    if let Some(n) = RETRANSMITS.get_ptr_mut(key) {
        // SAFETY: this CPU's value of a successful lookup; programs on one
        // CPU do not nest.
        unsafe { *n += 1 };
    } else {
        let _ = RETRANSMITS.insert(key, 1, 0);
    }
}
