//! Maps shared with user space, and the load-time configuration.
//!
//! Map names are part of the interface with `tracer/src/kernel/probe.rs`.

use aya_ebpf::{
    macros::map,
    maps::{Array, LruHashMap, LruPerCpuHashMap, PerCpuArray, RingBuf},
};
use tracer_common::{
    LISTENING_KEYS, ListeningKey, ProbeConfig, RESET_KEYS, RETRANSMIT_KEYS, RecordLayout,
    ResetConfig, ResetKey, RetransmitConfig, RetransmitKey, SYN_SENT_RESET_KEYS, Stat,
    TIME_WAIT_STACK_DEPTH, TimewaitConfig, TransitionMatrix,
};

/// Written by user space at load time (`EbpfLoader::override_global`). It
/// lives in `.rodata`, which the kernel freezes, so the verifier treats its
/// fields as constants.
#[unsafe(no_mangle)]
static CONFIG: ProbeConfig = ProbeConfig {
    record_size: 0,
    record: RecordLayout {
        skaddr: 0,
        oldstate: 0,
        newstate: 0,
        sport: 0,
        dport: 0,
        family: 0,
        protocol: 0,
        protocol_size: 0,
        saddr: 0,
        daddr: 0,
        saddr_v6: 0,
        daddr_v6: 0,
    },
    off_sock_net: 0,
    off_net_inum: 0,
    off_sock_flags: 0,
    off_sock_err: 0,
    _pad: 0,
    tcp_time_wait: [0, 0],
    flags: 0,
    wakeup_bytes: 0,
};

/// A load-time global, through a pointer the compiler cannot see through,
/// so it does not fold the zeroes it was compiled with into the program.
/// Fields are then loaded where they are used (copying the whole struct
/// first cost a spill per field).
#[inline(always)]
fn frozen<T>(global: &'static T) -> &'static T {
    let ptr: *const T = global;
    // SAFETY: reading a local pointer; it points at a plain static.
    unsafe { &*core::ptr::read_volatile(&ptr) }
}

/// [`CONFIG`], as user space wrote it.
#[inline(always)]
pub fn config() -> &'static ProbeConfig {
    frozen(&CONFIG)
}

/// Where the timewait programs read a timewait socket, written by user
/// space at load time like [`CONFIG`]; zeroes when they are not loaded.
#[unsafe(no_mangle)]
static TW_CONFIG: TimewaitConfig = TimewaitConfig {
    off_family: 0,
    off_num: 0,
    off_dport: 0,
    off_rcv_saddr: 0,
    off_daddr: 0,
    off_v6_rcv_saddr: 0,
    off_v6_daddr: 0,
    off_substate: 0,
    off_net: 0,
    off_net_inum: 0,
    flags: 0,
    wakeup_bytes: 0,
};

/// [`TW_CONFIG`], as user space wrote it.
#[inline(always)]
pub fn timewait_config() -> &'static TimewaitConfig {
    frozen(&TW_CONFIG)
}

/// Where the reset programs read, written by user space at load time.
#[unsafe(no_mangle)]
static RESET_CONFIG: ResetConfig = ResetConfig {
    send_skaddr: 0,
    send_skbaddr: 0,
    send_reason: 0,
    recv_skaddr: 0,
    off_sock_state: 0,
    off_skb_dev: 0,
    off_dev_net: 0,
    off_sock_net: 0,
    off_net_inum: 0,
    flags: 0,
};

/// [`RESET_CONFIG`], as user space wrote it.
#[inline(always)]
pub fn reset_config() -> &'static ResetConfig {
    frozen(&RESET_CONFIG)
}

/// Resets sent and received, by namespace and reason or state, per CPU:
/// counted in the kernel, read at scrape time, never sent as events (a
/// flood of resets costs a map update each).
#[map]
pub static RESETS: LruPerCpuHashMap<ResetKey, u64> =
    LruPerCpuHashMap::with_max_entries(RESET_KEYS, 0);

/// Sockets a reset reached in SYN_SENT, keyed by skaddr: marked by the
/// program on `tcp:tcp_receive_reset`, taken by the close that follows
/// (`SYN_SENT -> CLOSE`), which tells a refused connect from one an ICMP
/// port unreachable ended (both leave ECONNREFUSED).
#[map]
pub static SYN_SENT_RESETS: LruHashMap<u64, u8> =
    LruHashMap::with_max_entries(SYN_SENT_RESET_KEYS, 0);

/// 1 once user space attached the program on `tcp:tcp_receive_reset`:
/// only then does a connect without a mark in [`SYN_SENT_RESETS`] mean
/// that no reset came.
#[map]
pub static RESETS_WATCHED: Array<u32> = Array::with_max_entries(1, 0);

/// Whether the close of `skaddr` from SYN_SENT followed a reset: None when
/// resets are not watched. Takes the mark.
#[inline(always)]
pub fn take_syn_sent_reset(skaddr: u64) -> Option<bool> {
    if RESETS_WATCHED.get(0).copied() != Some(1) {
        return None;
    }
    // SAFETY: the value is a plain u8 and only its presence is used.
    let marked = unsafe { SYN_SENT_RESETS.get(skaddr) }.is_some();
    if marked {
        let _ = SYN_SENT_RESETS.remove(skaddr);
    }
    Some(marked)
}

/// Where the retransmission programs read, written by user space.
#[unsafe(no_mangle)]
static RETRANSMIT_CONFIG: RetransmitConfig = RetransmitConfig {
    skb_skaddr: 0,
    skb_family: 0,
    skb_dport: 0,
    skb_daddr: 0,
    skb_daddr_v6: 0,
    skb_err: 0,
    skb_sport: 0,
    skb_saddr: 0,
    skb_saddr_v6: 0,
    synack_skaddr: 0,
    synack_family: 0,
    synack_sport: 0,
    synack_saddr: 0,
    synack_saddr_v6: 0,
    off_sock_net: 0,
    off_net_inum: 0,
    flags: 0,
};

/// [`RETRANSMIT_CONFIG`], as user space wrote it.
#[inline(always)]
pub fn retransmit_config() -> &'static RetransmitConfig {
    frozen(&RETRANSMIT_CONFIG)
}

/// Retransmissions by namespace and remote end or listener, per CPU: a
/// retransmission storm costs a map update each, never an event.
#[map]
pub static RETRANSMITS: LruPerCpuHashMap<RetransmitKey, u64> =
    LruPerCpuHashMap::with_max_entries(RETRANSMIT_KEYS, 0);

/// The ports sockets listen on, by namespace: learnt from every accepted
/// connection (`SYN_RECV -> ESTABLISHED`: a listener's going LISTEN never
/// passes the tracepoint) and from user space's dumps of listeners. The
/// retransmission program counts a connection whose local port is one of
/// these by that port, never by the client's.
#[map]
pub static LISTENING: LruHashMap<ListeningKey, u8> =
    LruHashMap::with_max_entries(LISTENING_KEYS, 0);

/// Marks `port` as listened on in `netns`. A lookup first: a busy server
/// accepts often, and a lookup costs less than an update.
#[inline(always)]
pub fn mark_listening(netns: u32, port: u16) {
    let key = ListeningKey {
        netns,
        port,
        _pad: 0,
    };
    // SAFETY: the value is a plain u8 and only its presence is used.
    if unsafe { LISTENING.get(key) }.is_none() {
        let _ = LISTENING.insert(key, 1, 0);
    }
}

/// Whether `port` is listened on in `netns`, as far as [`LISTENING`] knows.
#[inline(always)]
pub fn is_listening(netns: u32, port: u16) -> bool {
    let key = ListeningKey {
        netns,
        port,
        _pad: 0,
    };
    // SAFETY: as in `mark_listening`.
    unsafe { LISTENING.get(key) }.is_some()
}

/// One [`tracer_common::Event`] per transition. User space sets the size
/// (`--ring-buffer-size`); this is only the default.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Transition counts, one matrix per CPU in its single entry: exact even
/// when the ring buffer overflows. One entry rather than one per pair, so
/// user space reads every count with one lookup.
#[map]
pub static TRANSITIONS: PerCpuArray<TransitionMatrix> = PerCpuArray::with_max_entries(1, 0);

/// Room for a kernel stack, per CPU: too large for the program's own
/// stack next to the record it copies.
#[map]
pub static STACK: PerCpuArray<[u64; TIME_WAIT_STACK_DEPTH]> = PerCpuArray::with_max_entries(1, 0);

/// Error and loss counters, per CPU, indexed by `tracer_common::stat`.
#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Stat::COUNT, 0);

/// When each socket entered its current state (ktime ns), keyed by skaddr.
/// LRU, so sockets whose CLOSE we never see cannot fill it.
#[map]
pub static STATE_SINCE: LruHashMap<u64, u64> = LruHashMap::with_max_entries(1 << 16, 0);

/// Adds one to a per-CPU counter. Programs on one CPU do not nest (the kernel
/// skips a tracepoint program re-entered on the same CPU), so a plain add is safe.
#[inline(always)]
fn bump(map: &PerCpuArray<u64>, index: u32) {
    if let Some(slot) = map.get_ptr_mut(index) {
        // SAFETY: the pointer comes from a successful lookup in a per-CPU array.
        unsafe { *slot += 1 };
    }
}

/// Counts one `old -> new` transition (kernel state numbers).
#[inline(always)]
pub fn count_transition(old: u32, new: u32) {
    if let Some(matrix) = TRANSITIONS.get_ptr_mut(0) {
        // SAFETY: the pointer comes from a successful lookup in a per-CPU
        // array, and nothing else on this CPU uses it meanwhile (see `bump`).
        unsafe { (*matrix).record(old, new) };
    }
}

/// Counts one occurrence of a statistic.
#[inline(always)]
pub fn count(stat: Stat) {
    bump(&STATS, stat.slot());
}
