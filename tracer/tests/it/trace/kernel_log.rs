//! The kernel program's debug lines (aya-log) reach the log at
//! `--log-level debug`, and not at info. The trigger: a bad `sk_flags`
//! offset, given on purpose through the test-only environment variable,
//! sends every closing socket down the program's error path, which counts
//! the failure (the primary signal) and logs the offset.

use std::time::Duration;

use testkit::{
    daemon::Daemon,
    net::{bound_listener, connect_pair, read_to_eof},
    require_ebpf, wait_until,
};
use tracer::trace::format::JsonTransition;

use super::traced::{render, traced_listener_with_env};
use crate::tracer;

/// Past any structure (`MAX_STRUCT_OFFSET`): the program refuses to read there.
const BAD_OFFSET: &str = "4294967295";
const BAD_OFFSET_ENV: (&str, &str) = ("TRACER_TEST_SOCK_FLAGS_OFFSET", BAD_OFFSET);
/// The line the program logs for it, as our log prints it.
const KERNEL_LINE: &str =
    "tracer: debug: kernel: sk_flags not read: offset 4294967295 is out of bounds";
/// What `tracer trace` says at the end from the counter, at any level.
const COUNTED: &str = "closing sockets' details (flags, error, kernel stack) could not be read";

/// A client that closes first (FIN_WAIT1 -> FIN_WAIT2 -> CLOSE, where the
/// program reads `sk_flags`), traced at `level`; the tracer's stderr.
fn close_with_a_bad_offset(level: &str, env: &[(&str, &str)]) -> String {
    let mut env = env.to_vec();
    env.push(BAD_OFFSET_ENV);
    let (trace, listener, _) = traced_listener_with_env("127.0.0.1", &["--log-level", level], &env);
    let (client, mut server) = connect_pair(&listener);
    let client_port = client.local_addr().expect("client addr").port();
    drop(client);
    read_to_eof(&mut server);
    drop(server);
    let closed = |e: &JsonTransition| {
        e.lport == client_port
            && e.newstate == "CLOSE"
            && ["FIN_WAIT1", "FIN_WAIT2", "CLOSING"].contains(&e.oldstate.as_str())
    };
    trace.wait_for("the client's close", |ev| ev.iter().any(closed));
    let (status, events, stderr) = trace.stop();
    assert!(
        status.success(),
        "tracer exited with {status}; stderr:\n{stderr}"
    );
    // The event still arrives, without the FIN it could not read.
    let close = events.iter().find(|e| closed(e)).expect("the close event");
    assert_eq!(close.fin_received, None, "{}", render(&events));
    assert!(stderr.contains(COUNTED), "not counted; stderr:\n{stderr}");
    stderr
}

#[test]
fn kernel_debug_lines_reach_the_log_at_debug() {
    require_ebpf!();
    let stderr = close_with_a_bad_offset("debug", &[]);
    assert!(
        stderr.contains(KERNEL_LINE),
        "no kernel line; stderr:\n{stderr}"
    );
}

#[test]
fn kernel_debug_lines_reach_the_log_from_the_copying_program() {
    require_ebpf!();
    let stderr = close_with_a_bad_offset("debug", &[("TRACER_PROBE_PROGRAM", "copy")]);
    assert!(
        stderr.contains("attached inet_sock_set_state_copy"),
        "{stderr}"
    );
    assert!(
        stderr.contains(KERNEL_LINE),
        "no kernel line; stderr:\n{stderr}"
    );
}

#[test]
fn kernel_debug_lines_stay_off_at_info() {
    require_ebpf!();
    let stderr = close_with_a_bad_offset("info", &[]);
    assert!(
        !stderr.contains("kernel:"),
        "a kernel line at info:\n{stderr}"
    );
}

/// The daemon forwards them too, as they happen (not only when it stops).
#[test]
fn the_daemon_forwards_kernel_debug_lines() {
    require_ebpf!();
    let mut command = tracer();
    command.envs([BAD_OFFSET_ENV]);
    let daemon = Daemon::start(command, &["--log-level", "debug"]);
    let (socket, _) = bound_listener("127.0.0.1");
    socket.listen(16).expect("listen");
    let listener: std::net::TcpListener = socket.into();
    let (client, mut server) = connect_pair(&listener);
    drop(client);
    read_to_eof(&mut server);
    drop(server);
    wait_until(
        "the kernel line in the daemon's log",
        Duration::from_secs(10),
        || daemon.stderr().contains(KERNEL_LINE),
    );
    let status = daemon.stop();
    assert!(status.success(), "daemon exited with {status}");
}
