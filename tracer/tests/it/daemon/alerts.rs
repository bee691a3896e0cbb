//! The alerting rules fed with the metrics of a real run: refused connects,
//! a listener that never accepts, and a client that leaves TIME_WAIT
//! sockets in a 100-port range, in namespaces joined by a veth pair. Two
//! scrapes of the daemon, before and after, become the input series of a
//! `promtool test rules` file (the run's increase repeated every minute,
//! its gauges held), which says the alerts fire, for those labels only.
//!
//! The rules under test are `deploy/prometheus/tracer-rules.yml` without
//! their annotations: those are templates of `$value`, whose rendering
//! the rules' own tests (with made-up series) pin; this test is about the
//! expressions, their labels and their `for`.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::Read as _,
    net::{TcpListener, TcpStream},
    thread,
    time::Duration,
};

use testkit::{daemon::Daemon, http::Http, net, netns::NetNs, prom, require_ebpf, wait_until};

use crate::{
    prometheus::{deploy, promtool},
    tracer,
};

/// Every address of the run is in this network: the input series are those
/// whose labels name it, so other tests' sockets cannot add alerts.
const NET: &str = "10.92.0.";
const SERVER: &str = "10.92.0.2";
/// The instance label the input series carry.
const INSTANCE: &str = "web-1:9840";

/// The families the rules of this run read, and whether each is a counter.
const FAMILIES: [(&str, bool); 4] = [
    ("tcpstate_connect_failures_total", true),
    ("tcpstate_listen_overflows_total", true),
    ("tcpstate_ephemeral_ports_free", false),
    ("tcpstate_ephemeral_ports_in_use", false),
];

/// The samples of `family` that belong to the run, by label set.
fn ours(metrics: &str, family: &str) -> BTreeMap<String, f64> {
    prom::samples(metrics, family)
        .into_iter()
        .filter(|(labels, _)| labels.contains(NET))
        .collect()
}

/// `k=v,k=v` as a PromQL selector's labels, with the instance and job.
fn selector(family: &str, labels: &str) -> String {
    let mut s = format!("{family}{{instance=\"{INSTANCE}\", job=\"tracer\"");
    for pair in labels.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').expect("k=v");
        let _ = write!(s, ", {k}=\"{v}\"");
    }
    s + "}"
}

/// The input series: from `before` to `after` once a minute for 20 minutes
/// (counters; with `repeat` false they stay at `after`), gauges at `after`.
fn input_series(before: &str, after: &str, repeat: bool) -> String {
    let mut out = String::new();
    for (family, counter) in FAMILIES {
        let was = ours(before, family);
        for (labels, now) in ours(after, family) {
            let values = if counter && repeat {
                let from = was.get(&labels).copied().unwrap_or(0.0);
                format!("{from}+{}x20", now - from)
            } else {
                format!("{now}x20")
            };
            let series = selector(family, &labels);
            let _ = writeln!(
                out,
                "      - series: '{series}'\n        values: '{values}'"
            );
        }
    }
    out
}

/// The rules file without its annotations (see the module's comment).
fn rules_without_annotations() -> String {
    let text = std::fs::read_to_string(deploy("prometheus/tracer-rules.yml")).expect("rules");
    let mut out = String::new();
    let mut skipping: Option<usize> = None;
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(at) = skipping {
            if line.trim().is_empty() || indent > at {
                continue;
            }
            skipping = None;
        }
        if line.trim_start() == "annotations:" {
            skipping = Some(indent);
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    assert!(!out.contains("annotations:") && out.contains("alert: TcpConnectFailures"));
    out
}

/// One expected alert, its labels as YAML.
fn alert(name: &str, eval: &str, labels: &[(&str, &str)]) -> String {
    let mut out = format!(
        "      - eval_time: {eval}\n        alertname: {name}\n        exp_alerts:\n          - exp_labels:\n              severity: warning\n              instance: \"{INSTANCE}\"\n"
    );
    for (k, v) in labels {
        let _ = writeln!(out, "              {k}: \"{v}\"");
    }
    out
}

fn no_alert(name: &str, eval: &str) -> String {
    format!("      - eval_time: {eval}\n        alertname: {name}\n        exp_alerts: []\n")
}

/// `n` connections to `listener` that the client closes first: its ends
/// stay in TIME_WAIT, each holding a port of the range toward `listener`.
fn time_waits(client: &NetNs, listener: &TcpListener, n: usize) {
    let to = listener.local_addr().expect("address");
    client.run_inside(move || {
        for _ in 0..n {
            drop(TcpStream::connect(to).expect("connect"));
        }
    });
    // The server closes its ends once it has read the client's FIN.
    listener.set_nonblocking(true).expect("nonblocking");
    thread::sleep(Duration::from_millis(300));
    while let Ok((mut s, _)) = listener.accept() {
        let _ = s.read(&mut [0u8; 1]);
    }
}

#[test]
fn alerts_fire_on_the_metrics_of_a_real_run() {
    require_ebpf!();
    let (client, server) = (NetNs::new("alc"), NetNs::new("als"));
    client.link_to(&server, "al", "10.92.0.1", SERVER);
    // 100 ephemeral ports; not loopback, so tcp_tw_reuse=2 reuses none.
    client.exec(&["sysctl", "-qw", "net.ipv4.ip_local_port_range=40000 40099"]);
    client.exec(&["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=2"]);
    let daemon = Daemon::start(tracer(), &[]);
    let mut http = daemon.client();
    let before = http.get("/metrics").body;

    let refused = format!("{SERVER}:9");
    let to = refused.clone();
    client.run_inside(move || {
        for _ in 0..30 {
            TcpStream::connect(to.as_str()).expect_err("nothing listens on port 9");
        }
    });
    let (_never_accepts, full) = net::full_listener(&server, SERVER, &client);
    let listener = server.run_inside(|| TcpListener::bind(format!("{SERVER}:0")).expect("bind"));
    let busy = listener.local_addr().expect("address");
    time_waits(&client, &listener, 95);

    let value = |http: &mut Http, family: &str, labels: &str| -> f64 {
        ours(&http.get("/metrics").body, family)
            .get(labels)
            .copied()
            .unwrap_or(0.0)
    };
    wait_until("the run's metrics", Duration::from_secs(15), || {
        let failures = "tcpstate_connect_failures_total";
        value(
            &mut http,
            failures,
            &format!("destination={refused},reason=refused"),
        ) == 30.0
            && value(
                &mut http,
                "tcpstate_listen_overflows_total",
                &format!("listener={full}"),
            ) > 0.0
            && value(
                &mut http,
                "tcpstate_ephemeral_ports_in_use",
                &format!("destination={busy}"),
            ) == 95.0
    });
    let after = http.get("/metrics").body;
    assert!(daemon.stop().success());

    let fired = [
        alert(
            "TcpConnectFailures",
            "10m",
            &[("destination", &refused), ("reason", "refused")],
        ),
        alert(
            "TcpListenOverflows",
            "10m",
            &[("listener", &full.to_string())],
        ),
        alert(
            "TcpEphemeralPortsLow",
            "10m",
            &[("destination", &busy.to_string())],
        ),
    ]
    .concat();
    // The same counters standing still: no failure, no drop, nothing fires.
    let calm = [
        no_alert("TcpConnectFailures", "10m"),
        no_alert("TcpListenOverflows", "10m"),
    ]
    .concat();
    let dir = std::env::temp_dir().join(format!("tracer-alerts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    std::fs::write(dir.join("rules.yml"), rules_without_annotations()).expect("rules");
    let tests = format!(
        "rule_files:\n  - rules.yml\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n{}    alert_rule_test:\n{fired}  - interval: 1m\n    input_series:\n{}    alert_rule_test:\n{calm}",
        input_series(&before, &after, true),
        input_series(&before, &after, false),
    );
    let file = dir.join("run.test.yml");
    std::fs::write(&file, &tests).expect("tests");
    let out = promtool(&["test", "rules", file.to_str().expect("path")]);
    assert!(out.contains("SUCCESS"), "{out}\n{tests}");
    let _ = std::fs::remove_dir_all(&dir);
}
