//! tracer's kernel side: the tracepoint program, the timewait programs
//! and the maps they fill.
//!
//! * `set_state`: the program on `sock:inet_sock_set_state`.
//! * `timewait`: the programs on the kernel's timewait functions (fentry),
//!   where the kernel allows them.
//! * `resets`: the programs on `tcp:tcp_send_reset` and
//!   `tcp:tcp_receive_reset`, counting in the kernel.
//! * `retransmits`: the programs on `tcp:tcp_retransmit_skb` and
//!   `tcp:tcp_retransmit_synack`, counting in the kernel.
//! * `maps`: the ring buffer, the per-CPU counters and the load-time config.
//! * `failure`: every error path's count and debug log line (aya-log).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod failure;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod resets;
#[cfg(target_arch = "bpf")]
mod retransmits;
#[cfg(target_arch = "bpf")]
mod set_state;
#[cfg(target_arch = "bpf")]
mod timewait;

/// bpf_probe_read_kernel is a GPL-only helper.
#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach this.
    loop {}
}

/// Lets `cargo clippy --workspace` build this crate for the host.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
