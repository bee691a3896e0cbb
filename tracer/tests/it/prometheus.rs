//! The Prometheus side of a deployment: a real Prometheus server scraping a
//! real daemon agrees with `ss`; the example config, the alerting rules
//! (with their unit tests) and the Grafana dashboard check out.

use std::{
    collections::BTreeMap,
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use testkit::{
    daemon::{Daemon, compared},
    http::{Http, get},
    net::connect_pair,
    pki::{TestPki, htpasswd_hash},
    process::tool_output,
    require_ebpf, ss, wait_until,
};

use crate::tracer;

pub(crate) fn deploy(path: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy")).join(path)
}

pub(crate) fn promtool(args: &[&str]) -> String {
    let (status, text) = tool_output(
        Command::new("promtool").args(args),
        "promtool (Debian package prometheus; `cargo xtask test` installs it)",
    );
    assert!(status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn rules_config_and_rule_tests_pass_promtool() {
    let rules = deploy("prometheus/tracer-rules.yml");
    let text = promtool(&["check", "rules", rules.to_str().expect("path")]);
    assert!(text.contains("SUCCESS: 7 rules found"), "{text}");
    let tests = deploy("prometheus/tracer-rules.test.yml");
    let text = promtool(&["test", "rules", tests.to_str().expect("path")]);
    assert!(text.contains("SUCCESS"), "{text}");
    let config = deploy("prometheus/prometheus.yml");
    promtool(&["check", "config", config.to_str().expect("path")]);
    // Each alert the issue asks for is there.
    let rules = std::fs::read_to_string(&rules).expect("rules");
    for alert in [
        "TcpCloseWaitLeak",
        "TcpTimeWaitPressure",
        "TcpConnectFailures",
        "TcpListenOverflows",
        "TcpEphemeralPortsLow",
        "TracerEventsLost",
        "TracerDown",
    ] {
        assert!(rules.contains(&format!("alert: {alert}")), "{alert}");
    }
}

/// Every `tcpstate_*` name in `expr` is one the daemon exports.
fn unknown_metrics(expr: &str) -> Vec<String> {
    let known: Vec<String> = tracer::serve::metrics::family_names()
        .flat_map(|n| {
            [
                n.to_owned(),
                format!("{n}_bucket"),
                format!("{n}_sum"),
                format!("{n}_count"),
            ]
        })
        .collect();
    let mut unknown = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("tcpstate_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !known.contains(&name) {
            unknown.push(name.clone());
        }
        rest = &rest[at + name.len()..];
    }
    unknown
}

#[test]
fn dashboard_queries_are_valid_promql_over_real_metrics() {
    let text = std::fs::read_to_string(deploy("grafana/tracer-dashboard.json")).expect("dashboard");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let panels = dash["panels"].as_array().expect("panels");
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for wanted in [
        "Sockets by state",
        "Transitions per second",
        "CLOSE_WAIT leaks by process",
        "Time in $state",
    ] {
        assert!(
            titles.contains(&wanted),
            "no panel {wanted:?} in {titles:?}"
        );
    }
    assert!(
        panels.iter().any(|p| p["type"] == "heatmap"),
        "no duration heatmap"
    );
    // promtool checks PromQL syntax: one recording rule per query, with
    // Grafana's variables replaced by what they expand to.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut n = 0;
    for p in panels {
        for t in p["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("expr");
            assert!(
                unknown_metrics(expr).is_empty(),
                "{expr}: unknown {:?}",
                unknown_metrics(expr)
            );
            let expr = expr
                .replace("$__rate_interval", "1m")
                .replace("$instance", ".*")
                .replace("$state", "TIME_WAIT");
            rules.push_str(&format!(
                "      - record: dashboard_query_{n}\n        expr: '{}'\n",
                expr.replace('\'', "''")
            ));
            n += 1;
        }
    }
    assert!(n >= 8, "only {n} queries");
    let dir = std::env::temp_dir().join(format!("tracer-dash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("rules.yml");
    std::fs::write(&file, rules).expect("write");
    let out = promtool(&["check", "rules", file.to_str().expect("path")]);
    assert!(out.contains(&format!("SUCCESS: {n} rules found")), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A Prometheus server on loopback, stopped on drop.
struct Prometheus {
    child: Child,
    addr: String,
    dir: PathBuf,
}

impl Prometheus {
    /// Scrapes `target` every second; `job_extra` is added to the scrape
    /// job's YAML (indented four spaces), e.g. a scheme and credentials.
    fn start(target: &str, job_extra: &str) -> Prometheus {
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        let dir = std::env::temp_dir().join(format!("tracer-prom-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let config = format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: tracer\n    static_configs:\n      - targets: ['{target}']\n{job_extra}"
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("config");
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package prometheus)");
        Prometheus {
            child,
            addr: format!("127.0.0.1:{port}"),
            dir,
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `tcpstate_sockets` by state, as Prometheus last scraped it.
fn query_sockets(http: &mut Http) -> Option<BTreeMap<String, u64>> {
    let r = http.get("/api/v1/query?query=tcpstate_sockets");
    let v: serde_json::Value = serde_json::from_str(&r.body).ok()?;
    let result = v["data"]["result"].as_array()?;
    if result.is_empty() {
        return None;
    }
    Some(
        result
            .iter()
            .filter_map(|s| {
                let state = s["metric"]["state"].as_str()?.to_owned();
                let value = s["value"][1].as_str()?.parse().ok()?;
                Some((state, value))
            })
            .collect(),
    )
}

#[test]
fn a_real_prometheus_scrapes_the_daemon_and_agrees_with_ss() {
    require_ebpf!();
    let daemon = Daemon::start(tracer(), &["--reconcile-interval", "200ms"]);
    let mut held = Vec::new();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    for _ in 0..3 {
        held.push(connect_pair(&listener));
    }
    let prometheus = Prometheus::start(&daemon.addr.to_string(), "");
    let addr: std::net::SocketAddr = prometheus.addr.parse().expect("addr");
    wait_until("Prometheus to serve", Duration::from_secs(30), || {
        get(addr, "/-/ready").is_ok_and(|r| r.status == 200)
    });
    let mut http = Http::connect(addr);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Two queries 1.5 s apart (past a scrape) around one ss.
        let before = query_sockets(&mut http);
        let truth = compared(&ss::counts());
        thread::sleep(Duration::from_millis(1500));
        let after = query_sockets(&mut http);
        if let (Some(b), Some(a)) = (&before, &after)
            && compared(b) == truth
            && compared(a) == truth
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus and ss -tan disagree:\n  prometheus: {:?}\n  ss:         {truth:?}",
            after.as_ref().map(compared)
        );
    }
    drop(held);
    assert!(daemon.stop().success());
}

/// `up` of the tracer job and the scrape error, as Prometheus reports them.
fn scrape_health(http: &mut Http) -> Option<(String, String)> {
    let r = http.get("/api/v1/targets");
    let v: serde_json::Value = serde_json::from_str(&r.body).ok()?;
    let target = v["data"]["activeTargets"].as_array()?.first()?.clone();
    Some((
        target["health"].as_str()?.to_owned(),
        target["lastError"].as_str().unwrap_or("").to_owned(),
    ))
}

#[test]
fn prometheus_scrapes_over_tls_with_basic_auth() {
    require_ebpf!();
    let pki = TestPki::new("prom");
    let web = pki.dir.join("web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  prometheus: '{}'\n",
            pki.cert.display(),
            pki.key.display(),
            htpasswd_hash("scrape-secret")
        ),
    )
    .expect("web config");
    let daemon = Daemon::start(
        tracer(),
        &["--web-config-file", web.to_str().expect("path")],
    );
    let job = |password: &str| {
        format!(
            "    scheme: https\n    tls_config:\n      ca_file: {}\n    basic_auth:\n      username: prometheus\n      password: {password}\n",
            pki.ca.display()
        )
    };
    // The right password: the target is up. A wrong one: down, with 401.
    for (password, health, error) in [("scrape-secret", "up", ""), ("wrong", "down", "401")] {
        let prometheus = Prometheus::start(&daemon.addr.to_string(), &job(password));
        let addr: std::net::SocketAddr = prometheus.addr.parse().expect("addr");
        wait_until("Prometheus to serve", Duration::from_secs(30), || {
            get(addr, "/-/ready").is_ok_and(|r| r.status == 200)
        });
        let mut http = Http::connect(addr);
        let mut last = None;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            last = scrape_health(&mut http);
            if last.as_ref().is_some_and(|(h, _)| h != "unknown") {
                break;
            }
            thread::sleep(Duration::from_millis(300));
        }
        let (got, last_error) = last.expect("a scrape result");
        assert_eq!(got, health, "password {password}: {last_error}");
        assert!(last_error.contains(error), "{last_error}");
    }
    assert!(daemon.stop().success());
}
