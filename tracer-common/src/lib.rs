//! Types that cross the kernel/user boundary: the ring-buffer [`Event`], the
//! load-time [`ProbeConfig`], map layouts ([`TransitionMatrix`], [`Stat`])
//! and the TCP state numbers.
//!
//! Everything here is `#[repr(C)]`, holds only integers, and has its size
//! asserted at compile time, so the kernel and user-space views cannot drift.
#![no_std]

pub mod state;
pub mod transitions;

pub use state::TcpState;
pub use transitions::{STATE_SLOTS, TransitionMatrix};

/// Length of `task_struct::comm`, as `bpf_get_current_comm` fills it.
pub const TASK_COMM_LEN: usize = 16;

/// `AF_INET` and `AF_INET6`, as the tracepoint's `family` field holds them.
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// `IPPROTO_TCP`: the tracepoint also fires for SCTP and MPTCP sockets.
pub const IPPROTO_TCP: u16 = 6;

/// One TCP state transition, as the kernel program writes it into the ring
/// buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the transition happened.
    pub ts_ns: u64,
    /// Kernel address of the socket: stable for the socket's life, reused after.
    pub skaddr: u64,
    /// Nanoseconds the socket spent in `oldstate`; 0 when unknown (the socket
    /// was born before the program attached, or its entry was evicted).
    /// In a timewait socket's record ([`DETAIL_TIMEWAIT_SOCK`]): the length
    /// of the timer it set, in jiffies.
    pub old_state_ns: u64,
    /// Inode number of the socket's network namespace (as in `/proc/PID/ns/net`).
    pub netns: u32,
    /// Thread-group id (what user space calls the pid) of the current task.
    pub pid: u32,
    /// Thread id of the current task.
    pub tid: u32,
    /// Kernel TCP state numbers (see [`TcpState`]).
    pub oldstate: u8,
    pub newstate: u8,
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u16,
    /// Local and remote port, host byte order.
    pub sport: u16,
    pub dport: u16,
    /// Bit set of `DETAIL_*`: what the program read from the socket itself.
    pub detail: u32,
    /// Local and remote address; IPv4 uses the first four bytes.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// `comm` of the current task, NUL-padded.
    pub comm: [u8; TASK_COMM_LEN],
}

const _: () = assert!(core::mem::size_of::<Event>() == 96);

/// Where the tracepoint record's fields lie, from its tracefs format file.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordLayout {
    pub skaddr: u32,
    pub oldstate: u32,
    pub newstate: u32,
    pub sport: u32,
    pub dport: u32,
    pub family: u32,
    pub protocol: u32,
    /// 1 before Linux 5.6 (u8), 2 after (u16, for MPTCP).
    pub protocol_size: u32,
    pub saddr: u32,
    pub daddr: u32,
    pub saddr_v6: u32,
    pub daddr_v6: u32,
}

impl RecordLayout {
    /// The layout of Linux 5.6 and later. The program built for it reads
    /// the fields straight from its context at these constant offsets (the
    /// verifier allows context loads only at constant offsets); any other
    /// layout gets the program that copies the record first, about 60 ns
    /// more per transition.
    pub const LINUX_5_6: RecordLayout = RecordLayout {
        skaddr: 8,
        oldstate: 16,
        newstate: 20,
        sport: 24,
        dport: 26,
        family: 28,
        protocol: 30,
        protocol_size: 2,
        saddr: 32,
        daddr: 36,
        saddr_v6: 40,
        daddr_v6: 56,
    };
}

/// Where to find things, computed in user space for the running kernel (from
/// the tracepoint's format file and from BTF) and handed to the kernel
/// program as a load-time global (`.rodata`, so the verifier sees constants).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Bytes of the tracepoint record to copy (up to [`MAX_RECORD_SIZE`]).
    pub record_size: u32,
    /// Offsets of the tracepoint record's fields.
    pub record: RecordLayout,
    /// Offset of `struct net *` inside `struct sock` (`__sk_common.skc_net.net`).
    pub off_sock_net: u32,
    /// Offset of the namespace inode inside `struct net` (`ns.inum`).
    pub off_net_inum: u32,
    /// Offset of `sk_flags` inside `struct sock`.
    pub off_sock_flags: u32,
    /// Offset of `sk_err` inside `struct sock`.
    pub off_sock_err: u32,
    /// Explicit padding (zero).
    pub _pad: u32,
    /// Where the kernel's `tcp_time_wait()` lies, `[start, end)`, from
    /// `/proc/kallsyms` (see [`FLAG_TIME_WAIT_STACK`]).
    pub tcp_time_wait: [u64; 2],
    /// Bit set of `FLAG_*`.
    pub flags: u32,
    /// The program wakes the reader only when this many bytes wait in the
    /// ring buffer (the reader also drains on a timer). A wake-up costs far
    /// more than the event itself, so one per event would dominate.
    pub wakeup_bytes: u32,
}

const _: () = assert!(core::mem::size_of::<ProbeConfig>() == 96);

/// The tracepoint record is copied into a stack buffer of this size.
pub const MAX_RECORD_SIZE: u32 = 128;

/// The kernel program treats a structure offset in [`ProbeConfig`]
/// (`off_sock_net`, `off_net_inum`, `off_sock_flags`) past this as a bad
/// config (counted and logged) and does not read there: no structure it
/// reads comes near 64 KiB, so such an offset could only come from a bug.
pub const MAX_STRUCT_OFFSET: u32 = 1 << 16;

/// [`ProbeConfig::flags`]: resolve the network namespace of each socket.
/// Off when BTF could not say where it lives (the events then carry netns 0).
pub const FLAG_NETNS: u32 = 1;
/// [`ProbeConfig::flags`]: keep a per-socket timestamp so events carry the
/// time spent in the old state.
pub const FLAG_STATE_TIME: u32 = 1 << 1;
/// [`ProbeConfig::flags`]: fill [`Event::comm`] on every event; without it,
/// only on transitions out of CLOSE (the rest carry zeroes).
pub const FLAG_COMM_ALWAYS: u32 = 1 << 2;

/// [`ProbeConfig::flags`]: read `sk_flags` when a closing socket may leave a
/// timewait socket behind (see [`DETAIL_FIN_KNOWN`]). Off when BTF could not
/// say where `sk_flags` lives.
pub const FLAG_SOCK_FLAGS: u32 = 1 << 3;
/// [`ProbeConfig::flags`]: look in the kernel stack of a close from
/// FIN_WAIT1, FIN_WAIT2 or CLOSING for `tcp_time_wait()` (see
/// [`DETAIL_BY_TIME_WAIT`]). Off when `/proc/kallsyms` did not say where
/// it lies.
pub const FLAG_TIME_WAIT_STACK: u32 = 1 << 4;
/// [`ProbeConfig::flags`]: read `sk_err` of every socket reaching CLOSE
/// (see [`DETAIL_ERR_KNOWN`]). Off when BTF could not say where it lives.
pub const FLAG_SOCK_ERR: u32 = 1 << 5;

/// `SOCK_DONE` in the kernel's `enum sock_flags` (after `SOCK_DEAD`; the
/// same number since Linux 2.6). `tcp_fin()` sets it when the peer's FIN
/// arrives.
pub const SOCK_DONE_BIT: u32 = 1;

/// [`Event::detail`]: the event is a `FIN_WAIT1|FIN_WAIT2|CLOSING -> CLOSE`
/// and the program read whether the peer's FIN had arrived
/// ([`DETAIL_FIN_RECEIVED`]). A socket that closes into a timewait socket
/// before the FIN arrived (an orphaned FIN_WAIT2: `close()` without waiting
/// for the peer) leaves one in substate FIN_WAIT2, which `ss` counts as
/// FIN-WAIT-2; after the FIN, one in TIME_WAIT.
pub const DETAIL_FIN_KNOWN: u32 = 1;
/// [`Event::detail`]: the peer's FIN had arrived (`SOCK_DONE` was set).
pub const DETAIL_FIN_RECEIVED: u32 = 1 << 1;
/// [`Event::detail`]: the event is a `FIN_WAIT1|FIN_WAIT2|CLOSING -> CLOSE`
/// and the program looked for `tcp_time_wait()` in the kernel stack
/// ([`DETAIL_BY_TIME_WAIT`]).
pub const DETAIL_CLOSER_KNOWN: u32 = 1 << 2;
/// [`Event::detail`]: the close came from `tcp_time_wait()`, which puts a
/// timewait socket in the full socket's place first (unless the
/// namespace's timewait table is full). Every other close from these
/// states (a reset, `SO_LINGER` 0, a close with unread data, a timeout)
/// leaves none.
pub const DETAIL_BY_TIME_WAIT: u32 = 1 << 3;
/// Kernel stack frames the program looks through for `tcp_time_wait()`:
/// the tracepoint fires in `inet_sk_state_store()`, called by
/// `tcp_set_state()`, called by `tcp_done()`, called by `tcp_time_wait()`.
pub const TIME_WAIT_STACK_DEPTH: usize = 8;
/// [`Event::detail`]: the event is a `-> CLOSE` and the program read the
/// socket's `sk_err` (0 for none), stored from bit [`DETAIL_ERR_SHIFT`]:
/// the kernel sets it before closing a socket on a reset (ECONNREFUSED,
/// ECONNRESET, EPIPE), a timeout (ETIMEDOUT) or an ICMP error.
pub const DETAIL_ERR_KNOWN: u32 = 1 << 4;
/// [`Event::detail`]: the event is a `SYN_SENT -> CLOSE` and the program
/// on `tcp:tcp_receive_reset` was watching, so [`DETAIL_RESET_RECEIVED`]
/// says whether a reset answered the connect. ECONNREFUSED comes from a
/// reset or from an ICMP port unreachable; this tells them apart.
pub const DETAIL_RESET_KNOWN: u32 = 1 << 6;
/// [`Event::detail`]: a reset arrived while the socket was in SYN_SENT.
pub const DETAIL_RESET_RECEIVED: u32 = 1 << 7;
/// Entries of the map of connects answered by a reset (each lives from the
/// reset to the close right after it; LRU beyond).
pub const SYN_SENT_RESET_KEYS: u32 = 4096;
/// [`Event::detail`]: where `sk_err` (clamped to 0..=255) starts.
pub const DETAIL_ERR_SHIFT: u32 = 8;
/// [`Event::detail`]: the record is not a transition of a full socket but
/// a change in a timewait socket's life, from the programs on the kernel's
/// timewait functions (see [`TimewaitConfig`]). `skaddr` is the timewait
/// socket, the addresses and ports are its own, and the states say what
/// happened:
/// * `CLOSE -> S`: made in substate S (TIME_WAIT, or FIN_WAIT2 for an
///   orphaned FIN_WAIT2), its timer set to `old_state_ns` jiffies;
/// * `S -> S`: its timer set again to `old_state_ns` jiffies, in substate
///   S (the peer's FIN turns FIN_WAIT2 into TIME_WAIT this way);
/// * `S -> CLOSE`: gone from the kernel's tables (timer, reuse, reset).
pub const DETAIL_TIMEWAIT_SOCK: u32 = 1 << 5;

/// Where the programs on the timewait functions find what they read in a
/// `struct inet_timewait_sock`, from BTF. It begins with a `struct
/// sock_common`, as `struct sock` does, so the addresses, ports, family and
/// namespace lie where they lie in a full socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimewaitConfig {
    /// `skc_family` (u16).
    pub off_family: u32,
    /// `skc_num`: the local port, host byte order (u16).
    pub off_num: u32,
    /// `skc_dport`: the remote port, network byte order (u16).
    pub off_dport: u32,
    /// `skc_rcv_saddr` and `skc_daddr` (IPv4, network byte order).
    pub off_rcv_saddr: u32,
    pub off_daddr: u32,
    /// `skc_v6_rcv_saddr` and `skc_v6_daddr` (16 bytes each).
    pub off_v6_rcv_saddr: u32,
    pub off_v6_daddr: u32,
    /// `tw_substate` (u8).
    pub off_substate: u32,
    /// `skc_net.net` and, in `struct net`, `ns.inum`; both 0 when the
    /// kernel has no namespaces in BTF (the records then carry netns 0).
    pub off_net: u32,
    pub off_net_inum: u32,
    /// Bit set of `FLAG_*` ([`FLAG_NETNS`]).
    pub flags: u32,
    /// [`ProbeConfig::wakeup_bytes`], for the same ring buffer.
    pub wakeup_bytes: u32,
}

const _: () = assert!(core::mem::size_of::<TimewaitConfig>() == 48);

/// A record field the running kernel's tracepoint lacks.
pub const NO_FIELD: u32 = u32::MAX;

/// Where the programs on `tcp:tcp_send_reset` and `tcp:tcp_receive_reset`
/// read: record offsets from their tracefs format files, structure
/// offsets from BTF. Written by user space at load time (`RESET_CONFIG`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResetConfig {
    /// `tcp_send_reset`: the socket (NULL for a reset sent for no socket,
    /// Linux 6.10+), the packet answered, and `reason` (`enum
    /// sk_rst_reason`, Linux 6.10+; [`NO_FIELD`] before).
    pub send_skaddr: u32,
    pub send_skbaddr: u32,
    pub send_reason: u32,
    /// `tcp_receive_reset`: the socket.
    pub recv_skaddr: u32,
    /// `skc_state` in `struct sock` (u8): the state the reset found.
    pub off_sock_state: u32,
    /// `dev` in `struct sk_buff` and `nd_net.net` in `struct net_device`:
    /// the namespace of a reset sent for no socket.
    pub off_skb_dev: u32,
    pub off_dev_net: u32,
    /// As in [`ProbeConfig`]: `struct sock` -> `struct net` -> `ns.inum`.
    pub off_sock_net: u32,
    pub off_net_inum: u32,
    /// Bit set of `FLAG_*` ([`FLAG_NETNS`]).
    pub flags: u32,
}

const _: () = assert!(core::mem::size_of::<ResetConfig>() == 40);

/// The key of the per-CPU map of resets: which namespace, which way, and
/// the reason (sent) or the state (received).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ResetKey {
    pub netns: u32,
    /// [`RESET_SENT`] or [`RESET_RECEIVED`].
    pub direction: u8,
    /// Sent: the `enum sk_rst_reason` number, or [`RESET_REASON_UNKNOWN`].
    /// Received: the TCP state number the socket was in.
    pub value: u8,
    pub _pad: u16,
}

const _: () = assert!(core::mem::size_of::<ResetKey>() == 8);

pub const RESET_SENT: u8 = 0;
pub const RESET_RECEIVED: u8 = 1;
/// A reset sent on a kernel that gives no reason, or a reason past 254.
pub const RESET_REASON_UNKNOWN: u8 = 255;
/// Entries of the map of resets (keys, not resets: LRU beyond).
pub const RESET_KEYS: u32 = 4096;

/// Where the programs on `tcp:tcp_retransmit_skb` and
/// `tcp:tcp_retransmit_synack` read: record offsets from their format
/// files (`RETRANSMIT_CONFIG`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetransmitConfig {
    /// `tcp_retransmit_skb`: the socket, the remote end, and `err`
    /// (Linux 6.12+: the retransmission failed unless 0; [`NO_FIELD`]
    /// before, when only those that went out were reported).
    pub skb_skaddr: u32,
    pub skb_family: u32,
    pub skb_dport: u32,
    pub skb_daddr: u32,
    pub skb_daddr_v6: u32,
    pub skb_err: u32,
    /// `tcp_retransmit_skb`'s local end: a connection a listener accepted
    /// is counted by it ([`RETRANSMIT_SERVED`]).
    pub skb_sport: u32,
    pub skb_saddr: u32,
    pub skb_saddr_v6: u32,
    /// `tcp_retransmit_synack`: the listener and its local end.
    pub synack_skaddr: u32,
    pub synack_family: u32,
    pub synack_sport: u32,
    pub synack_saddr: u32,
    pub synack_saddr_v6: u32,
    /// As in [`ProbeConfig`]: `struct sock` -> `struct net` -> `ns.inum`.
    pub off_sock_net: u32,
    pub off_net_inum: u32,
    /// Bit set of `FLAG_*` ([`FLAG_NETNS`]).
    pub flags: u32,
}

const _: () = assert!(core::mem::size_of::<RetransmitConfig>() == 68);

/// The key of the per-CPU map of retransmissions: a data retransmission
/// toward a remote end, or a SYN-ACK retransmission of a listener.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RetransmitKey {
    pub netns: u32,
    /// [`RETRANSMIT_DATA`], [`RETRANSMIT_SERVED`] or [`RETRANSMIT_SYNACK`].
    pub kind: u8,
    /// [`AF_INET`] or [`AF_INET6`] (as u8).
    pub family: u8,
    /// The remote port (data) or the listener's port (served, SYN-ACK),
    /// host order.
    pub port: u16,
    /// IPv4 in the first four bytes.
    pub addr: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<RetransmitKey>() == 24);

/// A retransmission on a connection this host opened: keyed by its
/// remote end.
pub const RETRANSMIT_DATA: u8 = 0;
pub const RETRANSMIT_SYNACK: u8 = 1;
/// A retransmission on a connection a listener accepted: keyed by its
/// local end (the listener's port), so a client's ephemeral port is never
/// a key.
pub const RETRANSMIT_SERVED: u8 = 2;

/// A port some socket listens on, in a namespace: the key of the map of
/// listening ports, which tells a retransmission on an accepted connection
/// from one on a connection this host opened.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ListeningKey {
    pub netns: u32,
    /// Host order.
    pub port: u16,
    pub _pad: u16,
}

const _: () = assert!(core::mem::size_of::<ListeningKey>() == 8);

/// Entries of the map of listening ports (LRU beyond: the ports least
/// recently accepted on or retransmitted from are forgotten first).
pub const LISTENING_KEYS: u32 = 8192;
/// Entries of the map of retransmissions (LRU beyond: the least recent
/// remote ends are forgotten, and their counts with them).
pub const RETRANSMIT_KEYS: u32 = 16384;

/// The kernel program's own statistics, one slot each in its per-CPU
/// statistics map: every path that loses or degrades an event is counted in
/// one of these. Both sides index the map through this type only.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// The ring buffer was full: the event was lost (its transition was still
    /// counted in the transition map).
    RingbufFull = 0,
    /// Copying the tracepoint record failed.
    RecordReadFailed = 1,
    /// Reading the socket's network namespace failed (the event carries netns 0).
    NetnsReadFailed = 2,
    /// The per-socket timestamp map refused an insert (the next event for the
    /// socket carries no time in state).
    StateTimeUpdateFailed = 3,
    /// A field offset in the load-time configuration was out of bounds.
    BadConfig = 4,
    /// Reading a field of a closing socket (`sk_flags`, `sk_err`) or the
    /// kernel stack of its close failed: the event says that detail is not
    /// known.
    SockFieldReadFailed = 5,
    /// A record of a timewait socket's life ([`DETAIL_TIMEWAIT_SOCK`]) was
    /// lost: the ring buffer was full, or reading the socket failed. The
    /// next dump corrects what it would have said.
    TimewaitRecordLost = 6,
}

impl Stat {
    /// Every statistic, in slot order.
    pub const ALL: [Stat; 7] = [
        Stat::RingbufFull,
        Stat::RecordReadFailed,
        Stat::NetnsReadFailed,
        Stat::StateTimeUpdateFailed,
        Stat::BadConfig,
        Stat::SockFieldReadFailed,
        Stat::TimewaitRecordLost,
    ];
    /// Slots in the statistics map.
    pub const COUNT: u32 = Stat::ALL.len() as u32;

    /// The statistic's slot in the map.
    #[inline(always)]
    pub const fn slot(self) -> u32 {
        self as u32
    }
}

// Slots are the discriminants, dense from 0: ALL lists them in order.
const _: () = {
    let mut i = 0;
    while i < Stat::ALL.len() {
        assert!(Stat::ALL[i] as usize == i);
        i += 1;
    }
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: both are repr(C), made of integers only, with explicit padding.
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::ProbeConfig {}
    unsafe impl aya::Pod for super::TimewaitConfig {}
    unsafe impl aya::Pod for super::ResetConfig {}
    unsafe impl aya::Pod for super::ResetKey {}
    unsafe impl aya::Pod for super::RetransmitConfig {}
    unsafe impl aya::Pod for super::RetransmitKey {}
    unsafe impl aya::Pod for super::ListeningKey {}
}
