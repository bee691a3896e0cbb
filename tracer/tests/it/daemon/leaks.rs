//! CLOSE_WAIT leaks of a separate process, reported under its name (in the
//! metrics, the log and the snapshot) and cleared when it closes; owners
//! of sockets older than the daemon, named from /proc after start-up.

use std::{net::TcpStream, thread, time::Duration};

use testkit::{
    daemon::Daemon,
    leaky::{LEAKY, LeakyServer},
    prom, require_ebpf, ss, wait_until,
};
use tracer::serve::snapshot::Snapshot;

use crate::{leak_watching_daemon, tracer};

fn leaked(metrics: &str, comm: &str) -> f64 {
    prom::samples(metrics, "tcpstate_close_wait_leaked_sockets")
        .get(&format!("comm={comm}"))
        .copied()
        .unwrap_or(0.0)
}

#[test]
fn owners_of_sockets_older_than_the_daemon_are_named_after_start_up() {
    require_ebpf!();
    // Leaks that exist before the daemon: their owner comes from the /proc
    // scan that runs after ready, not from any event.
    let server = LeakyServer::start();
    for _ in 0..2 {
        drop(TcpStream::connect(server.addr).expect("connect"));
    }
    wait_until(
        "the server's sockets in CLOSE_WAIT",
        Duration::from_secs(5),
        || ss::counts().get("CLOSE_WAIT").copied().unwrap_or(0) >= 2,
    );
    let daemon = leak_watching_daemon();
    let mut http = daemon.client();
    wait_until(
        "2 leaked sockets under the server's name",
        Duration::from_secs(15),
        || leaked(&http.get("/metrics").body, LEAKY) == 2.0,
    );
    assert!(
        daemon.stderr().contains("named from /proc"),
        "{}",
        daemon.stderr()
    );
    server.stop();
    assert!(daemon.stop().success());
}

#[test]
fn close_wait_leak_is_reported_under_the_process_name_and_clears() {
    require_ebpf!();
    let daemon = Daemon::start(
        tracer(),
        &[
            "--close-wait-threshold",
            "2s",
            "--reconcile-interval",
            "200ms",
        ],
    );
    let mut http = daemon.client();
    let server = LeakyServer::start();
    let pid = server.pid();
    for _ in 0..3 {
        let c = TcpStream::connect(server.addr).expect("connect");
        drop(c); // the server's socket goes to CLOSE_WAIT and stays there
    }
    // Below the threshold: not yet a leak.
    thread::sleep(Duration::from_millis(500));
    assert_eq!(leaked(&http.get("/metrics").body, LEAKY), 0.0);
    wait_until(
        "3 leaked sockets under its name",
        Duration::from_secs(10),
        || leaked(&http.get("/metrics").body, LEAKY) == 3.0,
    );
    // Logged once per socket, with pid, comm and addresses, once its
    // owner is checked (the gauge may name it a tick before).
    let logged = |log: &str| {
        log.lines()
            .filter(|l| l.contains("close_wait_leak") && l.contains(&format!("comm={LEAKY}")))
            .count()
    };
    wait_until("3 leak lines", Duration::from_secs(15), || {
        logged(&daemon.stderr()) >= 3
    });
    let log = daemon.stderr();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("close_wait_leak") && l.contains(&format!("comm={LEAKY}")))
        .collect();
    assert_eq!(lines.len(), 3, "{log}");
    for line in &lines {
        assert!(line.contains(&format!("pid={pid}")), "{line}");
        assert!(line.contains(&format!("local={}", server.addr)), "{line}");
    }
    let snapshot: Snapshot =
        serde_json::from_str(&http.get("/api/v1/snapshot").body).expect("snapshot");
    let mine: Vec<_> = snapshot
        .close_wait_leaks
        .iter()
        .filter(|l| l.comm == LEAKY)
        .collect();
    assert_eq!(mine.len(), 3, "{:?}", snapshot.close_wait_leaks);
    assert!(
        mine.iter()
            .all(|l| l.pid == pid && l.age_seconds >= 2.0 && l.local == server.addr.to_string())
    );
    assert!(
        mine.windows(2)
            .all(|w| w[0].age_seconds >= w[1].age_seconds),
        "oldest first"
    );

    server.stop();
    wait_until("the leak to clear", Duration::from_secs(10), || {
        leaked(&http.get("/metrics").body, LEAKY) == 0.0
    });
    assert!(daemon.stop().success());
}
