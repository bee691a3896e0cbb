//! The `tracer` binary's failure modes, each one clear line and a non-zero
//! exit, and its clean stop on SIGINT. Run as a user would run it.

mod common;

use std::{
    process::{Command, Output, Stdio},
    thread,
    time::Duration,
};

use common::*;

fn tracer(args: &[&str]) -> Output {
    Command::new(tracer_bin())
        .args(args)
        .output()
        .expect("run tracer")
}

/// The error is one line on stderr, naming the problem.
fn assert_one_line_error(out: &Output, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr:\n{stderr}");
    assert!(stderr.contains(needle), "expected `{needle}` in:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "want one error line:\n{stderr}");
}

#[test]
fn invalid_ring_buffer_size_is_a_usage_error() {
    let out = tracer(&["trace", "--ring-buffer-size", "3MiB"]);
    assert_one_line_error(&out, 2, "power of two");
}

#[test]
fn unknown_state_is_a_usage_error() {
    let out = tracer(&["trace", "--state", "HALF_CLOSED"]);
    assert_one_line_error(&out, 2, "unknown TCP state");
}

#[test]
fn without_privileges_says_what_is_needed() {
    let mut cmd = Command::new(tracer_bin());
    cmd.arg("trace");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        use std::os::unix::process::CommandExt as _;
        cmd.uid(65534).gid(65534); // nobody
    }
    let out = cmd.output().expect("run tracer");
    assert_one_line_error(&out, 1, "insufficient privileges");
    assert_one_line_error(&out, 1, "CAP_BPF");
}

#[test]
fn missing_btf_names_the_requirement() {
    if !can_load_ebpf("missing_btf_names_the_requirement") {
        return;
    }
    let out = tracer(&["trace", "--btf", "/nonexistent/vmlinux"]);
    assert_one_line_error(&out, 1, "kernel BTF is unavailable");
    assert_one_line_error(&out, 1, "CONFIG_DEBUG_INFO_BTF");
}

/// Runs `script` with tracer's path as $1 in a private mount namespace, so
/// the test can unmount or fake tracefs without touching the host.
fn in_private_mounts(script: &str) -> Output {
    Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            tracer_bin(),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("unshare")
}

const UNMOUNT_TRACEFS: &str = "umount /sys/kernel/debug/tracing 2>/dev/null; \
     umount /sys/kernel/tracing 2>/dev/null; \
     umount /sys/kernel/debug 2>/dev/null; \
     test -d /sys/kernel/tracing/events && { echo tracefs still mounted >&2; exit 99; }";

#[test]
fn mounts_tracefs_when_it_is_missing() {
    if !can_load_ebpf("mounts_tracefs_when_it_is_missing") {
        return;
    }
    // tracer must mount tracefs itself, attach, and stream events.
    let script = format!(
        "{UNMOUNT_TRACEFS}; \"$1\" trace --json --port 1 & pid=$!; sleep 2; \
         kill -INT $pid; wait $pid; echo exit=$?"
    );
    let out = in_private_mounts(&script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("mounted tracefs on /sys/kernel/tracing"),
        "{stderr}"
    );
    assert!(stderr.contains("attached"), "{stderr}");
    assert!(
        stdout.contains("exit=0"),
        "stdout: {stdout}\nstderr: {stderr}"
    );
}

#[test]
fn tracefs_that_cannot_be_mounted_is_a_clear_error() {
    if !can_load_ebpf("tracefs_that_cannot_be_mounted_is_a_clear_error") {
        return;
    }
    // Keep CAP_BPF and CAP_PERFMON, drop CAP_SYS_ADMIN: mounting fails.
    let script = format!(
        "{UNMOUNT_TRACEFS}; exec setpriv --bounding-set -sys_admin --inh-caps -sys_admin \"$1\" trace"
    );
    let out = in_private_mounts(&script);
    assert_one_line_error(&out, 1, "tracefs is not mounted and mounting it");
}

#[test]
fn missing_tracepoint_names_the_kernel_requirement() {
    if !can_load_ebpf("missing_tracepoint_names_the_kernel_requirement") {
        return;
    }
    // A fake tracefs with an empty events directory: no such tracepoint.
    let script = format!(
        "{UNMOUNT_TRACEFS}; mount -t tmpfs none /sys/kernel/tracing && \
         mkdir /sys/kernel/tracing/events && exec \"$1\" trace"
    );
    let out = in_private_mounts(&script);
    assert_one_line_error(&out, 1, "tracepoint sock:inet_sock_set_state not found");
}

#[test]
fn sigint_stops_cleanly_with_a_summary() {
    if !can_load_ebpf("sigint_stops_cleanly_with_a_summary") {
        return;
    }
    let mut child = Command::new(tracer_bin())
        .args(["trace", "--port", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    thread::sleep(Duration::from_secs(2));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = wait_timeout(&mut child, Duration::from_secs(5));
    let out = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("stopped (SIGINT)"), "{stderr}");
    assert!(
        stderr.contains("transitions counted in the kernel"),
        "{stderr}"
    );
    // The table header was printed before any event.
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("TIME "));
}
