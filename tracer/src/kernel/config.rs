//! The kernel programs' load-time configuration for the running kernel:
//! the tracepoint record's offsets from its tracefs format file, structure
//! offsets from BTF, and where `tcp_time_wait()` lies from
//! `/proc/kallsyms`. Each structure offset is nice to have: without one
//! the events lack that detail, and the log says what it costs.

use tracer_common::{
    FLAG_COMM_ALWAYS, FLAG_NETNS, FLAG_SOCK_ERR, FLAG_SOCK_FLAGS, FLAG_STATE_TIME,
    FLAG_TIME_WAIT_STACK, MAX_RECORD_SIZE, ProbeConfig, RecordLayout, TimewaitConfig,
};

use crate::kernel::{
    btf::{Btf, BtfError},
    kallsyms,
    probe::{ProbeError, ProbeOptions},
    tracefs::Format,
};

/// The program's configuration for this kernel: record offsets from the
/// tracepoint's format file, structure offsets from BTF.
pub fn probe_config(
    format: &Format,
    btf: &Btf,
    options: &ProbeOptions,
) -> Result<ProbeConfig, ProbeError> {
    let field = |name: &str, sizes: &[u32]| -> Result<(u32, u32), ProbeError> {
        let f = format
            .fields
            .get(name)
            .ok_or_else(|| ProbeError::Layout(format!("no field `{name}`")))?;
        if !sizes.contains(&f.size) {
            return Err(ProbeError::Layout(format!(
                "field `{name}` has size {}",
                f.size
            )));
        }
        // Scalars are read with aligned loads.
        let align = if f.size > 8 { 1 } else { f.size };
        if f.offset % align != 0 || f.offset + f.size > MAX_RECORD_SIZE {
            return Err(ProbeError::Layout(format!(
                "field `{name}` at offset {}",
                f.offset
            )));
        }
        Ok((f.offset, f.size))
    };
    let (off_protocol, size_protocol) = field("protocol", &[1, 2])?;
    let record_size = format.record_size();
    if record_size > MAX_RECORD_SIZE {
        return Err(ProbeError::Layout(format!("record of {record_size} bytes")));
    }
    let mut flags = 0;
    if options.state_time {
        flags |= FLAG_STATE_TIME;
    }
    if options.comm_always {
        flags |= FLAG_COMM_ALWAYS;
    }
    let sock = sock_offsets(btf);
    flags |= sock.flags;
    Ok(ProbeConfig {
        record_size,
        record: RecordLayout {
            skaddr: field("skaddr", &[8])?.0,
            oldstate: field("oldstate", &[4])?.0,
            newstate: field("newstate", &[4])?.0,
            sport: field("sport", &[2])?.0,
            dport: field("dport", &[2])?.0,
            family: field("family", &[2])?.0,
            protocol: off_protocol,
            protocol_size: size_protocol,
            saddr: field("saddr", &[4])?.0,
            daddr: field("daddr", &[4])?.0,
            saddr_v6: field("saddr_v6", &[16])?.0,
            daddr_v6: field("daddr_v6", &[16])?.0,
        },
        off_sock_net: sock.net,
        off_net_inum: sock.net_inum,
        off_sock_flags: sock.flags_field,
        off_sock_err: sock.err,
        _pad: 0,
        tcp_time_wait: sock.tcp_time_wait,
        flags,
        wakeup_bytes: wakeup_bytes(options.ring_buffer_bytes),
    })
}

/// Where the kernel program finds what it reads in `struct sock`, from
/// BTF, and the `FLAG_*` of those found. Each is nice to have: without one
/// the events lack that detail, and the log says what it costs.
#[derive(Debug, Default)]
struct SockOffsets {
    flags: u32,
    net: u32,
    net_inum: u32,
    flags_field: u32,
    err: u32,
    tcp_time_wait: [u64; 2],
}

fn sock_offsets(btf: &Btf) -> SockOffsets {
    let mut found = SockOffsets::default();
    // Without CONFIG_NET_NS the kernel has no `skc_net.net`.
    let net = btf.member_offset("sock", &["__sk_common", "skc_net", "net"]);
    let net_inum = btf.member_offset("net", &["ns", "inum"]);
    match (net, net_inum) {
        (Ok(a), Ok(b)) => (found.flags, found.net, found.net_inum) = (FLAG_NETNS, a, b),
        (Err(e), _) | (_, Err(e)) => log::warn!("network namespaces will read as 0: {e}"),
    }
    // `sk_flags` is `__sk_common.skc_flags` in the kernels we test; older
    // ones had it in `struct sock` itself.
    let flags_field = btf
        .member_offset("sock", &["__sk_common", "skc_flags"])
        .or_else(|_| btf.member_offset("sock", &["sk_flags"]));
    match flags_field {
        Ok(off) => (found.flags, found.flags_field) = (found.flags | FLAG_SOCK_FLAGS, off),
        Err(e) => {
            log::warn!("orphaned FIN_WAIT2 sockets will show as TIME_WAIT until a dump: {e}")
        }
    }
    // The kernel program tells closes that leave a timewait socket from
    // those that do not by looking for tcp_time_wait() in the stack.
    match kallsyms::function_range("tcp_time_wait") {
        Ok(range) => {
            (found.flags, found.tcp_time_wait) = (found.flags | FLAG_TIME_WAIT_STACK, range)
        }
        Err(e) => log::warn!(
            "closes without a timewait socket (resets, SO_LINGER 0) will count one until a dump: {e}"
        ),
    }
    match btf.member_offset("sock", &["sk_err"]) {
        Ok(off) => (found.flags, found.err) = (found.flags | FLAG_SOCK_ERR, off),
        Err(e) => log::warn!("closes will not say their error: {e}"),
    }
    found
}

/// When the program wakes the reader: each time another quarter of the
/// ring buffer waits (1 MiB, about 10,000 events, by default), leaving
/// three quarters for what arrives while the reader wakes. The reader
/// drains on a timer as well ([`crate::kernel::ringbuf::DRAIN_INTERVAL`]), so fewer
/// events wait no longer than that. Each wake-up of the daemon costs tens
/// of microseconds of scheduling; at 64 KiB per wake-up they took about a
/// third of its CPU under churn.
pub fn wakeup_bytes(ring_buffer_bytes: u32) -> u32 {
    // A power of two, as the program expects: the ring buffer's size is one.
    (ring_buffer_bytes / 4).next_power_of_two()
}

/// Where the timewait programs read a timewait socket (see
/// [`TimewaitConfig`]); an error names the member BTF lacks, and the
/// programs are then not loaded.
pub fn timewait_config(btf: &Btf, probe: &ProbeConfig) -> Result<TimewaitConfig, BtfError> {
    let common = |member: &str| btf.member_offset("sock_common", &[member]);
    // The timewait socket begins with its `struct sock_common`, as the
    // full socket does: the programs rely on it.
    let head = btf.member_offset("inet_timewait_sock", &["__tw_common"])?;
    if head != 0 {
        return Err(BtfError::Malformed(
            "inet_timewait_sock does not begin with its sock_common",
        ));
    }
    let netns = probe.flags & FLAG_NETNS;
    Ok(TimewaitConfig {
        off_family: common("skc_family")?,
        off_num: common("skc_num")?,
        off_dport: common("skc_dport")?,
        off_rcv_saddr: common("skc_rcv_saddr")?,
        off_daddr: common("skc_daddr")?,
        off_v6_rcv_saddr: common("skc_v6_rcv_saddr")?,
        off_v6_daddr: common("skc_v6_daddr")?,
        off_substate: btf.member_offset("inet_timewait_sock", &["tw_substate"])?,
        off_net: probe.off_sock_net,
        off_net_inum: probe.off_net_inum,
        flags: netns,
        wakeup_bytes: probe.wakeup_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::probe::{
        DEFAULT_RING_BUFFER_BYTES, MAX_RING_BUFFER_BYTES, MIN_RING_BUFFER_BYTES,
    };

    #[test]
    fn wake_ups_come_every_quarter_of_the_ring_buffer() {
        assert_eq!(wakeup_bytes(DEFAULT_RING_BUFFER_BYTES), 1 << 20);
        assert_eq!(wakeup_bytes(MIN_RING_BUFFER_BYTES), 1024);
        assert_eq!(wakeup_bytes(MAX_RING_BUFFER_BYTES), 1 << 28);
    }

    #[test]
    fn timewait_sockets_are_read_where_this_kernel_keeps_them() {
        let Ok(btf) = Btf::from_file(std::path::Path::new(crate::kernel::btf::VMLINUX_BTF)) else {
            eprintln!("SKIP: no kernel BTF here");
            return;
        };
        let probe = ProbeConfig {
            flags: FLAG_NETNS,
            off_sock_net: 48,
            off_net_inum: 200,
            wakeup_bytes: 1024,
            ..ProbeConfig::default()
        };
        let tw = timewait_config(&btf, &probe).unwrap();
        // sock_common's layout has been the same since Linux 4.x: ports
        // after the addresses, the family right after the ports' hash.
        assert_eq!((tw.off_daddr, tw.off_rcv_saddr), (0, 4));
        assert_eq!((tw.off_dport, tw.off_num), (12, 14));
        assert_eq!(tw.off_family, 16);
        assert!(tw.off_substate > tw.off_v6_rcv_saddr, "{tw:?}");
        assert_eq!(
            (tw.off_net, tw.off_net_inum, tw.flags),
            (48, 200, FLAG_NETNS)
        );
        assert_eq!(tw.wakeup_bytes, 1024);
    }
}
