//! The `tracer` binary's failure modes, each one clear line and a non-zero
//! exit, and its clean stop on SIGINT. Run as a user would run it.

use std::{
    process::{Command, Output, Stdio},
    thread,
    time::Duration,
};

use testkit::{process::wait_timeout, require_ebpf};

use crate::{tracer, tracer_bin};

/// `tracer ARGS` to the end.
fn tracer_output(args: &[&str]) -> Output {
    tracer().args(args).output().expect("run tracer")
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
    let out = tracer_output(&["trace", "--ring-buffer-size", "3MiB"]);
    assert_one_line_error(&out, 2, "power of two");
}

#[test]
fn unknown_state_is_a_usage_error() {
    let out = tracer_output(&["trace", "--state", "HALF_CLOSED"]);
    assert_one_line_error(&out, 2, "unknown TCP state");
}

#[test]
fn without_privileges_says_what_is_needed() {
    let mut cmd = tracer();
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
    require_ebpf!();
    let out = tracer_output(&["trace", "--btf", "/nonexistent/vmlinux"]);
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
    require_ebpf!();
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
    require_ebpf!();
    // Keep CAP_BPF and CAP_PERFMON, drop CAP_SYS_ADMIN: mounting fails.
    let script = format!(
        "{UNMOUNT_TRACEFS}; exec setpriv --bounding-set -sys_admin --inh-caps -sys_admin \"$1\" trace"
    );
    let out = in_private_mounts(&script);
    assert_one_line_error(&out, 1, "tracefs is not mounted and mounting it");
}

#[test]
fn missing_tracepoint_names_the_kernel_requirement() {
    require_ebpf!();
    // A fake tracefs with an empty events directory: no such tracepoint.
    let script = format!(
        "{UNMOUNT_TRACEFS}; mount -t tmpfs none /sys/kernel/tracing && \
         mkdir /sys/kernel/tracing/events && exec \"$1\" trace"
    );
    let out = in_private_mounts(&script);
    assert_one_line_error(&out, 1, "tracepoint sock:inet_sock_set_state not found");
}

#[test]
fn unknown_program_choice_is_refused_by_name() {
    require_ebpf!();
    let out = tracer()
        .arg("trace")
        .env("TRACER_PROBE_PROGRAM", "fast")
        .output()
        .expect("run tracer");
    assert_one_line_error(&out, 1, "TRACER_PROBE_PROGRAM=\"fast\" is not a choice");
}

#[test]
fn sigint_stops_cleanly_with_a_summary() {
    require_ebpf!();
    let mut child = tracer()
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

/// Arguments, environment, expected exit code, a part of the message.
type BadInput<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, i32, &'a str);

/// Every kind of bad input, for every subcommand: out of range, wrong type,
/// unknown key, missing file, unreadable file. Each is one clear message and
/// exit code 2 (usage) or 1 (runtime), never a panic.
#[test]
fn bad_input_table() {
    // No root needed, but `top --once` opens a socket.
    let _area = testkit::area!();
    let dir = std::env::temp_dir().join(format!("tracer-bad-input-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let file = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p.display().to_string()
    };
    let unknown_key = file("unknown.toml", "max-socket = 10\n");
    let wrong_type = file("type.toml", "leak-top-n = 1.5\n");
    let out_of_range = file("range.toml", "\nreconcile-interval = \"1ms\"\n");
    let bad_toml = file("syntax.toml", "listen = [\n");
    let a_directory = dir.display().to_string();
    let cases: Vec<BadInput> = vec![
        (vec![], vec![], 2, "Usage"),
        (
            vec!["--log-level", "loud"],
            vec![],
            2,
            "invalid value 'loud'",
        ),
        (vec!["frobnicate"], vec![], 2, "unrecognized subcommand"),
        (
            vec!["trace", "--port", "70000"],
            vec![],
            2,
            "70000 is not in 0..=65535",
        ),
        (vec!["trace", "--port", "http"], vec![], 2, "invalid digit"),
        (
            vec!["trace", "--state", "OPEN"],
            vec![],
            2,
            "unknown TCP state `OPEN`",
        ),
        (vec!["trace", "--family", "5"], vec![], 2, "use 4 or 6"),
        (
            vec!["trace", "--pid", "-1"],
            vec![],
            2,
            "unexpected argument",
        ),
        (
            vec!["trace", "--netns", "/nonexistent/ns"],
            vec![],
            2,
            "neither a namespace inode number nor a readable path",
        ),
        (
            vec!["trace", "--ring-buffer-size", "3MiB"],
            vec![],
            2,
            "power of two",
        ),
        (
            vec!["trace", "--ring-buffer-size", "2GiB"],
            vec![],
            2,
            "power of two",
        ),
        (
            vec!["trace", "--ring-buffer-size", "big"],
            vec![],
            2,
            "is not a size",
        ),
        (
            vec!["trace", "--state-time-entries", "0"],
            vec![],
            2,
            "not in 1..=16777216",
        ),
        (
            vec!["trace", "--bogus"],
            vec![],
            2,
            "unexpected argument '--bogus'",
        ),
        (
            vec!["trace"],
            vec![("TRACER_RING_BUFFER_SIZE", "5")],
            2,
            "power of two",
        ),
        (
            vec!["daemon", "--listen", "localhost"],
            vec![],
            2,
            "invalid socket address",
        ),
        (
            vec!["daemon", "--listen", "127.0.0.1:99999"],
            vec![],
            2,
            "invalid socket address",
        ),
        (
            vec!["daemon", "--reconcile-interval", "10ms"],
            vec![],
            2,
            "out of range: use 100ms to 1h",
        ),
        (
            vec!["daemon", "--reconcile-interval", "soon"],
            vec![],
            2,
            "is not a duration",
        ),
        (
            vec!["daemon", "--close-wait-threshold", "0s"],
            vec![],
            2,
            "out of range: use 1s to 30days",
        ),
        (
            vec!["daemon", "--close-wait-threshold", "31d"],
            vec![],
            2,
            "out of range",
        ),
        (
            vec!["daemon", "--max-sockets", "5"],
            vec![],
            2,
            "5 is not in 1000..=100000000",
        ),
        (
            vec!["daemon", "--max-sockets", "lots"],
            vec![],
            2,
            "invalid digit",
        ),
        (
            vec!["daemon", "--leak-top-n", "0"],
            vec![],
            2,
            "0 is not in 1..=1000",
        ),
        (
            vec!["daemon", "--leak-top-n", "1001"],
            vec![],
            2,
            "1001 is not in 1..=1000",
        ),
        (
            vec!["daemon"],
            vec![("TRACER_MAX_SOCKETS", "many")],
            2,
            "invalid digit",
        ),
        (
            vec!["daemon", "--config", "/nonexistent/tracer.toml"],
            vec![],
            2,
            "cannot read config file /nonexistent/tracer.toml",
        ),
        (
            vec!["daemon", "--config", &a_directory],
            vec![],
            2,
            "cannot read config file",
        ),
        (
            vec!["daemon", "--config", &unknown_key],
            vec![],
            2,
            "unknown.toml:1: unknown setting `max-socket`",
        ),
        (
            vec!["daemon", "--config", &wrong_type],
            vec![],
            2,
            "type.toml:1: `leak-top-n` must be a string, a whole number or a boolean",
        ),
        (
            vec!["daemon", "--config", &out_of_range],
            vec![],
            2,
            "range.toml:2: reconcile-interval",
        ),
        (
            vec!["daemon", "--config", &bad_toml],
            vec![],
            2,
            "syntax.toml: line 1",
        ),
        (
            vec!["top", "--endpoint", "localhost:9840"],
            vec![],
            2,
            "is not an http:// or https:// URL",
        ),
        (
            vec!["top", "-d", "0"],
            vec![],
            2,
            "out of range: use 0.2 to 3600",
        ),
        (
            vec!["top", "-d", "fast"],
            vec![],
            2,
            "is not a number of seconds",
        ),
        (
            vec!["top", "--once", "--endpoint", "http://127.0.0.1:9"],
            vec![],
            1,
            "cannot reach the daemon",
        ),
    ];
    for (args, env, code, needle) in &cases {
        let mut cmd = tracer();
        cmd.args(args);
        for var in [
            "TRACER_RING_BUFFER_SIZE",
            "TRACER_MAX_SOCKETS",
            "TRACER_LOG",
            "TRACER_CONFIG",
        ] {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().copied());
        let out = cmd.output().expect("run tracer");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(*code),
            "{args:?} {env:?}:\n{stderr}"
        );
        assert!(
            stderr.contains(needle),
            "{args:?} {env:?}: want {needle:?} in:\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
