//! The daemon's HTTP side: its endpoints (404, 405, HEAD) and
//! `promtool check metrics`; the connection cap, idle and half-sent
//! requests, garbage and huge headers, and memory over a flood of scrapes.

use std::{
    io::Write as _,
    net::TcpStream,
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use testkit::{
    daemon::Daemon,
    http::{get, request},
    net::closed_by_server,
    process::rss_kib,
    prom, require_ebpf,
};
use tracer::serve::snapshot::Snapshot;

use crate::tracer;

#[test]
fn http_limits_hold_against_floods_and_slow_clients() {
    require_ebpf!();
    let daemon = Daemon::start(
        tracer(),
        &["--http-max-connections", "8", "--http-idle-timeout", "2s"],
    );
    let addr = daemon.addr;
    let pid = daemon.pid();
    // Let the harness's own readiness probes finish and free their slots.
    thread::sleep(Duration::from_millis(300));
    // 20 silent connections: 8 get a slot, the rest are closed on arrival.
    let silent: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    thread::sleep(Duration::from_millis(300));
    // A short look at each (refused ones read EOF at once), well inside the
    // 2 s idle timeout of the others.
    let (refused, held): (Vec<TcpStream>, Vec<TcpStream>) = silent
        .into_iter()
        .partition(|s| closed_by_server(s, Duration::from_millis(20)));
    assert_eq!(
        refused.len(),
        12,
        "connections beyond the limit must be closed at once"
    );
    // The 8 idle ones are closed after the idle timeout, freeing the slots.
    let freed = held
        .iter()
        .filter(|s| closed_by_server(s, Duration::from_secs(4)))
        .count();
    assert_eq!(freed, 8);
    drop((refused, held));
    // A slow client that never finishes its request is closed too.
    let mut slow = TcpStream::connect(addr).expect("connect");
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost")
        .expect("write");
    assert!(
        closed_by_server(&slow, Duration::from_secs(3)),
        "slow client kept open"
    );
    // Garbage and huge headers get an error, not a dead daemon.
    let mut junk = TcpStream::connect(addr).expect("connect");
    junk.write_all(b"\x00\x01 not http at all\r\n\r\n")
        .expect("write");
    assert!(closed_by_server(&junk, Duration::from_secs(4)));
    let mut huge = TcpStream::connect(addr).expect("connect");
    let header = format!(
        "GET /metrics HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let _ = huge.write_all(header.as_bytes()); // the server may close mid-way
    assert!(closed_by_server(&huge, Duration::from_secs(4)));
    // A flood of scrapes, each on a new connection: served, memory flat.
    let baseline = rss_kib(pid);
    for _ in 0..300 {
        assert_eq!(get(addr, "/metrics").expect("scrape").status, 200);
    }
    let after = rss_kib(pid);
    assert!(
        after < baseline + 20 * 1024,
        "RSS grew from {baseline} KiB to {after} KiB"
    );
    let metrics = get(addr, "/metrics").expect("scrape").body;
    assert!(prom::sum_where(&metrics, "tcpstate_http_rejected_connections_total", "") >= 12.0);
    assert!(daemon.stop().success());
}

#[test]
fn http_endpoints_and_promtool() {
    require_ebpf!();
    let daemon = Daemon::start(tracer(), &[]);
    let addr = daemon.addr;
    let r = get(addr, "/healthz").expect("healthz");
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    assert_eq!(get(addr, "/readyz").expect("readyz").status, 200);
    assert_eq!(get(addr, "/nope").expect("404").status, 404);
    assert_eq!(get(addr, "/metrics/extra").expect("404").status, 404);
    assert_eq!(request(addr, "POST", "/metrics").expect("405").status, 405);
    assert_eq!(
        request(addr, "DELETE", "/api/v1/snapshot")
            .expect("405")
            .status,
        405
    );
    let head = request(addr, "HEAD", "/metrics").expect("HEAD");
    assert_eq!(head.status, 200);

    let metrics = get(addr, "/metrics").expect("metrics");
    assert_eq!(metrics.status, 200);
    let content_type = metrics.headers.iter().find(|(k, _)| k == "content-type");
    assert!(content_type.is_some_and(|(_, v)| v.starts_with("text/plain; version=0.0.4")));
    for family in [
        "tcpstate_sockets",
        "tcpstate_state_duration_seconds",
        "tcpstate_events_total",
        "tcpstate_events_lost_total",
        "tcpstate_build_info",
        "tcpstate_transitions_total",
        "tcpstate_socket_table_source",
    ] {
        assert!(
            metrics.body.contains(&format!("# HELP {family} ")),
            "no HELP for {family}"
        );
    }
    let promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut promtool =
        promtool.expect("promtool (Debian package prometheus; `cargo xtask test` installs it)");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(metrics.body.as_bytes())
        .expect("write metrics");
    let out = promtool.wait_with_output().expect("promtool");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let snap = get(addr, "/api/v1/snapshot").expect("snapshot");
    assert_eq!(snap.status, 200);
    let s: Snapshot = serde_json::from_str(&snap.body).expect("snapshot JSON");
    assert!(s.ready);
    assert_eq!(s.sockets.len(), 10);
    assert!(
        s.sockets
            .iter()
            .any(|c| c.state == "LISTEN" && c.count >= 1)
    );
    assert_eq!(s.close_wait_threshold_seconds, 60.0);
    assert!(daemon.stop().success());
}
