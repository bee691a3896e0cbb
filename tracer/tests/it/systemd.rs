//! Running under systemd: the unit file (verify, security exposure), the
//! daemon with exactly the unit's capabilities as a non-root user, the
//! notify protocol (READY, WATCHDOG, STOPPING), the config file with
//! --check-config, SIGHUP reload, and a SIGTERM stop within 2 seconds.

use std::{
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use testkit::{
    daemon::{Daemon, assert_gauges_match_ss},
    http::Http,
    netns::NetNs,
    process::tool_output,
    prom, require_ebpf, wait_until,
};

use crate::{tracer, tracer_bin};

const UNIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/systemd/tracer.service"
);

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("tracer-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn unit_text() -> String {
    std::fs::read_to_string(UNIT).expect("read the unit file")
}

/// The unit's `Key=` value.
fn unit_value(key: &str) -> String {
    unit_text()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in the unit"))
        .to_owned()
}

#[test]
fn unit_file_verifies_and_is_hardened() {
    let scratch = Scratch::new("unit");
    // verify wants ExecStart to exist: point it at the binary under test.
    let unit = unit_text().replace("/usr/bin/tracer", tracer_bin());
    let path = scratch.0.join("tracer.service");
    std::fs::write(&path, unit).expect("write unit");
    let (status, text) = tool_output(
        Command::new("systemd-analyze").args(["verify", path.to_str().expect("utf-8 path")]),
        "systemd-analyze (Debian package systemd)",
    );
    assert!(
        status.success() && text.trim().is_empty(),
        "systemd-analyze verify:\n{text}"
    );

    let out = Command::new("systemd-analyze")
        .args([
            "security",
            "--offline=yes",
            path.to_str().expect("utf-8 path"),
        ])
        .output()
        .expect("systemd-analyze security");
    let text = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for tracer.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(exposure <= 2.0, "exposure {exposure} > 2.0:\n{text}");
    assert_eq!(unit_value("Type"), "notify");
    assert!(unit_value("WatchdogSec").ends_with('s'));
    assert_eq!(unit_value("Restart"), "on-failure");
}

#[test]
fn daemon_works_with_only_the_units_capabilities_as_a_non_root_user() {
    require_ebpf!();
    // CAP_BPF CAP_PERFMON ... -> +bpf,+perfmon,... for setpriv.
    let caps: Vec<String> = unit_value("AmbientCapabilities")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    assert!(
        !caps.contains(&"+sys_admin".to_owned()),
        "the unit grants CAP_SYS_ADMIN"
    );
    let caps = caps.join(",");
    // A namespace with a process holding a listener: without CAP_SYS_ADMIN
    // the daemon must still count it from the start (through /proc).
    let ns = NetNs::new("caps");
    let mut holder = Command::new("ip")
        .args(["netns", "exec", &ns.name, "python3", "-c"])
        .arg("import socket, time\ns = socket.socket(); s.bind(('127.0.0.1', 4567)); s.listen(); time.sleep(60)")
        .spawn()
        .expect("listener in the namespace");
    wait_until("the namespace's listener", Duration::from_secs(5), || {
        Command::new("ip")
            .args(["netns", "exec", &ns.name, "ss", "-Htln"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(":4567"))
    });
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(format!("--inh-caps=-all,{caps}"))
        .arg(format!("--ambient-caps=-all,{caps}"))
        .arg(format!("--bounding-set=-all,{caps}"))
        .arg(tracer_bin());
    let daemon = Daemon::start(command, &["--reconcile-interval", "200ms"]);
    let mut http = daemon.client();
    // The unit's capabilities reach the kernel's addresses and its tick.
    let log = daemon.stderr();
    assert!(
        !log.contains("will count one until a dump") && log.contains("end on the kernel's tick"),
        "{log}"
    );
    assert_gauges_match_ss(&mut http, Duration::from_secs(15));
    // Its own namespace through sock_diag, the one it cannot enter (and
    // any other) through /proc, and the metric says so.
    let sources = prom::samples(&http.get("/metrics").body, "tcpstate_socket_table_source");
    assert_eq!(sources.get("source=sock_diag"), Some(&1.0), "{sources:?}");
    assert!(
        sources.get("source=proc").is_some_and(|n| *n >= 1.0),
        "{sources:?}"
    );
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(daemon.stop().success());
}

/// A bound datagram socket standing in for systemd's notify socket.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    fn new(dir: &Path) -> NotifySocket {
        let path = dir.join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        NotifySocket { socket, path }
    }

    /// Every message received until `until` holds for one, or `within`.
    fn wait_for(&self, within: Duration, until: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            let mut buf = [0u8; 512];
            if let Ok(n) = self.socket.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let done = until(&msg);
                seen.push(msg);
                if done {
                    return seen;
                }
            }
        }
        panic!("no matching notification within {within:?}; got {seen:?}");
    }
}

#[test]
fn notifies_ready_pings_the_watchdog_and_stops_within_two_seconds() {
    require_ebpf!();
    let scratch = Scratch::new("notify");
    let notify = NotifySocket::new(&scratch.0);
    let mut command = tracer();
    command
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "1000000");
    let daemon = Daemon::start(command, &[]);
    let ready = notify.wait_for(Duration::from_secs(5), |m| m.starts_with("READY=1"));
    assert!(
        ready
            .last()
            .is_some_and(|m| m.contains("STATUS=") && m.contains("seeded")),
        "{ready:?}"
    );
    notify.wait_for(Duration::from_secs(3), |m| m == "WATCHDOG=1");
    notify.wait_for(Duration::from_secs(3), |m| m == "WATCHDOG=1");

    // A scrape connection held open must not delay the stop.
    let mut http = daemon.client();
    assert_eq!(http.get("/healthz").status, 200);
    let started = Instant::now();
    let status = daemon.stop();
    let took = started.elapsed();
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(2), "stopping took {took:?}");
    notify.wait_for(Duration::from_secs(1), |m| m == "STOPPING=1");
}

#[test]
fn config_file_is_checked_with_line_and_reason() {
    let scratch = Scratch::new("config");
    let good = scratch.0.join("good.toml");
    std::fs::write(
        &good,
        "# tracer\nlisten = \"127.0.0.1:9999\"\nleak-top-n = 5\nreconcile-interval = \"2s\"\n",
    )
    .expect("write");
    let check = |args: &[&str]| {
        tracer()
            .args(["daemon", "--check-config"])
            .args(args)
            .env_remove("TRACER_LEAK_TOP_N")
            .output()
            .expect("tracer")
    };
    let out = check(&["--config", good.to_str().expect("path")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("listen = \"127.0.0.1:9999\"") && text.contains("leak-top-n = 5"),
        "{text}"
    );
    assert!(text.contains("reconcile-interval = \"2s\""), "{text}");
    // Flags win over the file.
    let out = check(&[
        "--config",
        good.to_str().expect("path"),
        "--leak-top-n",
        "7",
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("leak-top-n = 7"));

    for (text, expect) in [
        ("listen = \"x\"\n", "good.toml:1: listen: invalid value 'x'"),
        (
            "\n\nmax-sockets = 5\n",
            "bad.toml:3: max-sockets: invalid value '5'",
        ),
        (
            "close-wait-threshold = \"soon\"\n",
            "bad.toml:1: close-wait-threshold: invalid value 'soon'",
        ),
        (
            "listn = \"127.0.0.1:1\"\n",
            "bad.toml:1: unknown setting `listn`",
        ),
        (
            "leak-top-n = [5]\n",
            "bad.toml:1: `leak-top-n` must be a string, a whole number or a boolean",
        ),
        (
            "leak-top-n = true\n",
            "bad.toml:1: leak-top-n: invalid value 'true'",
        ),
        ("listen = \n", "bad.toml: line 1, column 10: "),
    ] {
        let bad = scratch.0.join("bad.toml");
        std::fs::write(&bad, text).expect("write");
        let out = check(&["--config", bad.to_str().expect("path")]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text:?}: {stderr}");
        let expect = expect.replace("good.toml", "bad.toml");
        assert!(
            stderr.contains(&expect),
            "{text:?}: want {expect:?} in {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    let out = check(&["--config", "/nonexistent/tracer.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cannot read config file /nonexistent/tracer.toml")
    );
}

#[test]
fn sighup_reloads_what_can_change_live() {
    require_ebpf!();
    let scratch = Scratch::new("reload");
    let config = scratch.0.join("tracer.toml");
    std::fs::write(&config, "close-wait-threshold = \"60s\"\n").expect("write");
    let daemon = Daemon::start(tracer(), &["--config", config.to_str().expect("path")]);
    let mut http = daemon.client();
    let threshold = |http: &mut Http| {
        let s: tracer::serve::snapshot::Snapshot =
            serde_json::from_str(&http.get("/api/v1/snapshot").body).expect("snapshot");
        s.close_wait_threshold_seconds
    };
    assert_eq!(threshold(&mut http), 60.0);
    std::fs::write(
        &config,
        "close-wait-threshold = \"5s\"\nring-buffer-size = \"8MiB\"\n",
    )
    .expect("write");
    daemon.hangup();
    wait_until("the new threshold", Duration::from_secs(5), || {
        threshold(&mut http) == 5.0
    });
    let log = daemon.stderr();
    assert!(
        log.contains("configuration reloaded; changed: close-wait-threshold"),
        "{log}"
    );
    assert!(
        log.contains("ring-buffer-size changed but only take effect after a restart"),
        "{log}"
    );
    // A broken file is refused; the daemon keeps its settings and runs on.
    std::fs::write(&config, "close-wait-threshold = \"never\"\n").expect("write");
    daemon.hangup();
    wait_until("the refusal", Duration::from_secs(5), || {
        daemon.stderr().contains("configuration not reloaded")
    });
    thread::sleep(Duration::from_millis(200));
    assert_eq!(threshold(&mut http), 5.0);
    assert!(daemon.stop().success());
}
