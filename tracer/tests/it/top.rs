//! `tracer top` in a real terminal (tmux) against a real daemon, and
//! `tracer top --once` as a script would use it.

use std::{
    collections::BTreeMap,
    net::TcpStream,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use testkit::{
    daemon::{Daemon, compared},
    leaky::{LEAKY, LeakyServer},
    pki::{TestPki, htpasswd_hash},
    process::run,
    require::skipped,
    require_ebpf,
    ss::{self, COMPARED},
    wait_until,
};

use crate::{leak_watching_daemon, tracer, tracer_bin};

/// A tmux session running one command, killed on drop. The command's exit
/// status goes to a file (tmux does not always know it).
struct Tmux {
    name: String,
    status_file: std::path::PathBuf,
}

impl Tmux {
    fn start(tag: &str, width: u16, height: u16, command: &str) -> Tmux {
        let name = format!("tracer-{tag}-{}", std::process::id());
        let status_file = std::env::temp_dir().join(format!("{name}.status"));
        let _ = std::fs::remove_file(&status_file);
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &name])
            .output();
        let wrapped = format!("{command}; echo $? > {}", status_file.display());
        run(Command::new("tmux").args([
            "new-session",
            "-d",
            "-s",
            &name,
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            &wrapped,
        ]));
        // Keep the pane after the command exits, to read the screen it left.
        run(Command::new("tmux").args(["set-option", "-t", &name, "remain-on-exit", "on"]));
        Tmux { name, status_file }
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.name])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        run(Command::new("tmux").args(["send-keys", "-t", &self.name, keys]));
    }

    /// The exit status of the command, once it ended.
    fn exit_status(&self) -> Option<i32> {
        std::fs::read_to_string(&self.status_file)
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Waits for the command to exit and returns its status.
    fn wait_exit(&self) -> Option<i32> {
        wait_until("the command to exit", Duration::from_secs(5), || {
            self.exit_status().is_some()
        });
        self.exit_status()
    }

    fn wait_for(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let screen = self.screen();
            if done(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; screen:\n{screen}"
            );
            thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .output();
        let _ = std::fs::remove_file(&self.status_file);
    }
}

/// State counts as the screen shows them (`│ESTABLISHED 12 ...`).
fn screen_counts(screen: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for line in screen.lines() {
        let mut words = line.trim_start_matches('│').split_whitespace();
        if let (Some(state), Some(count)) = (words.next(), words.next())
            && COMPARED.contains(&state)
            && let Ok(n) = count.parse()
        {
            counts.insert(state.to_owned(), n);
        }
    }
    counts
}

#[test]
fn top_in_a_terminal_shows_ss_counts_and_the_leaking_process() {
    require_ebpf!();
    let daemon = leak_watching_daemon();
    let server = LeakyServer::start();
    for _ in 0..3 {
        drop(TcpStream::connect(server.addr).expect("connect"));
    }
    let command = format!(
        "{} top --endpoint http://{} -d 0.3",
        tracer_bin(),
        daemon.addr
    );
    let tmux = Tmux::start("top", 80, 24, &command);
    // By its pid: another test's leaky server may show up first (the
    // daemon sees every process on the machine).
    let pid = server.pid().to_string();
    let screen = tmux.wait_for("the leaking process", |s| {
        s.contains(LEAKY) && s.contains(&pid)
    });
    assert!(screen.contains("CLOSE_WAIT leaks"), "{screen}");
    assert!(
        screen.contains(&server.pid().to_string()),
        "pid missing:\n{screen}"
    );
    assert!(
        screen.contains(&server.addr.to_string()),
        "local address missing:\n{screen}"
    );

    // The counts on screen equal ss's (top's own keep-alive connection to
    // the daemon is counted by both).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let before = compared(&screen_counts(&tmux.screen()));
        let truth = compared(&ss::counts());
        thread::sleep(Duration::from_millis(700));
        let after = compared(&screen_counts(&tmux.screen()));
        if before == truth && truth == after {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "screen and ss -tan disagree:\n  screen: {after:?}\n  ss:     {truth:?}\n{}",
            tmux.screen()
        );
    }

    // Keys: help, pause, filter.
    tmux.keys("?");
    tmux.wait_for("help", |s| s.contains("tracer top: keys"));
    tmux.keys("x");
    tmux.keys("p");
    tmux.wait_for("pause", |s| s.contains("[PAUSED]"));
    tmux.keys("/");
    tmux.keys("nomatch");
    tmux.keys("Enter");
    tmux.wait_for("the filter to hide the leaks", |s| !s.contains(LEAKY));

    // q quits with status 0 and gives the terminal back.
    tmux.keys("q");
    assert_eq!(tmux.wait_exit(), Some(0));
    assert!(
        !tmux.screen().contains("Sockets by state"),
        "alternate screen not left"
    );
    server.stop();
    assert!(daemon.stop().success());
}

#[test]
fn the_failing_view_shows_a_refused_connect_in_a_terminal() {
    require_ebpf!();
    let daemon = leak_watching_daemon();
    // A port nothing listens on: the connect is refused.
    let closed = testkit::net::free_port().expect("a free port");
    assert!(TcpStream::connect(closed).is_err(), "{closed} answered");
    let command = format!(
        "{} top --endpoint http://{} -d 0.3",
        tracer_bin(),
        daemon.addr
    );
    let tmux = Tmux::start("failing", 80, 24, &command);
    tmux.wait_for("the sockets view", |s| s.contains("Sockets by state"));
    tmux.keys("f");
    let refused = format!("{closed} refused");
    let screen = tmux.wait_for("the refused connect", |s| s.contains(&refused));
    assert!(screen.contains("Connect failures"), "{screen}");
    assert!(
        screen.contains("Listeners") && screen.contains("QUEUE"),
        "{screen}"
    );
    tmux.keys("f");
    tmux.wait_for("the sockets view again", |s| s.contains("CLOSE_WAIT leaks"));
    tmux.keys("q");
    assert_eq!(tmux.wait_exit(), Some(0));
    assert!(daemon.stop().success());
}

#[test]
fn top_once_prints_text_and_exits() {
    require_ebpf!();
    let daemon = leak_watching_daemon();
    let server = LeakyServer::start();
    drop(TcpStream::connect(server.addr).expect("connect"));
    let endpoint = format!("http://{}", daemon.addr);
    let deadline = Instant::now() + Duration::from_secs(15);
    let text = loop {
        let out = tracer()
            .args(["top", "--once", "--endpoint", &endpoint])
            .output()
            .expect("top --once");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains(LEAKY) || Instant::now() > deadline {
            break text;
        }
        thread::sleep(Duration::from_millis(300));
    };
    for needle in [
        "STATE        SOCKETS",
        "LISTEN",
        "CLOSE_WAIT LEAKS",
        LEAKY,
        "TIME_WAIT BY DESTINATION",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    assert!(!text.contains('\u{1b}'), "escape codes in plain text");
    server.stop();
    drop(daemon);
}

#[test]
fn unreachable_daemon_is_a_clear_message_not_a_crash() {
    // No root needed, but its retries open sockets.
    let _area = testkit::area!();
    // Nothing listens on port 9 of loopback (discard is not running here).
    let out = tracer()
        .args(["top", "--once", "--endpoint", "http://127.0.0.1:9"])
        .output()
        .expect("top --once");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot reach the daemon at http://127.0.0.1:9"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    if Command::new("tmux").arg("-V").output().is_err() {
        assert!(
            std::env::var("CI").is_err(),
            "tmux is missing (Debian package tmux; `cargo xtask test` installs it)"
        );
        skipped("the terminal half", "tmux is not installed");
        return;
    }
    let tmux = Tmux::start(
        "down",
        80,
        24,
        &format!("{} top --endpoint http://127.0.0.1:9", tracer_bin()),
    );
    tmux.wait_for("the message", |s| {
        s.contains("daemon not reachable; retrying")
    });
    // It keeps retrying without dying; q still quits cleanly.
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(tmux.exit_status(), None, "top died:\n{}", tmux.screen());
    tmux.keys("q");
    assert_eq!(tmux.wait_exit(), Some(0));
}

/// `tracer top --once ARGS`: exit code, stdout, stderr.
fn top_once(args: &[&str]) -> (Option<i32>, String, String) {
    let out = tracer()
        .args(["top", "--once"])
        .args(args)
        .output()
        .expect("top --once");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Exit 1 with one line on stderr that contains `expected`.
fn fails_with(args: &[&str], expected: &str) {
    let (code, stdout, stderr) = top_once(args);
    assert_eq!(code, Some(1), "{args:?}: {stderr}");
    assert!(stdout.is_empty(), "{args:?}: {stdout}");
    assert!(
        stderr.starts_with("tracer: error: ") && stderr.contains(expected),
        "{args:?}: expected {expected:?} in\n{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{args:?}: one line:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn top_reads_a_daemon_behind_tls_and_basic_auth() {
    require_ebpf!();
    let pki = TestPki::new("top");
    let other = TestPki::new("top-other");
    let file = pki.dir.join("web.yml");
    std::fs::write(
        &file,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  prom: '{}'\n",
            pki.cert.display(),
            pki.key.display(),
            htpasswd_hash("s3cret pass")
        ),
    )
    .expect("web config");
    let password = pki.dir.join("password");
    std::fs::write(&password, "s3cret pass\n").expect("password file");
    let wrong = pki.dir.join("wrong");
    std::fs::write(&wrong, "not it\n").expect("password file");
    let daemon = Daemon::start(
        tracer(),
        &["--web-config-file", file.to_str().expect("path")],
    );
    assert!(daemon.tls);
    let endpoint = format!("https://{}", daemon.addr);
    let ca = pki.ca.to_str().expect("path");
    let (pw, wrong) = (
        password.to_str().expect("path"),
        wrong.to_str().expect("path"),
    );

    // The CA and a password file; or the credentials in the URL.
    let good = [
        "--endpoint",
        &endpoint,
        "--ca-file",
        ca,
        "--basic-auth-user",
        "prom",
        "--basic-auth-password-file",
        pw,
    ];
    let (code, stdout, stderr) = top_once(&good);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("STATE        SOCKETS"), "{stdout}");
    let in_url = format!("https://prom:s3cret%20pass@{}", daemon.addr);
    let (code, stdout, stderr) = top_once(&["--endpoint", &in_url, "--ca-file", ca]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("LISTEN"), "{stdout}");

    // A wrong password, none at all: 401, said as such.
    let mut wrong_args = good;
    wrong_args[7] = wrong;
    fails_with(&wrong_args, "refused the credentials (401 Unauthorized)");
    fails_with(
        &["--endpoint", &endpoint, "--ca-file", ca],
        "asks for credentials (401 Unauthorized)",
    );
    // An unknown CA: the system's roots, or another private CA.
    let mut system_roots = good.to_vec();
    system_roots.drain(2..4);
    fails_with(&system_roots, "TLS with the daemon at");
    fails_with(&system_roots, "--ca-file");
    let mut other_ca = good;
    other_ca[3] = other.ca.to_str().expect("path");
    fails_with(&other_ca, "invalid peer certificate");
    // Plain HTTP to the TLS port, and https to nothing: not reachable.
    let plain = format!("http://{}", daemon.addr);
    fails_with(&["--endpoint", &plain], "cannot reach the daemon at");
    // The password never shows, whatever fails.
    let (_, _, stderr) = top_once(&["--endpoint", &in_url]);
    assert!(!stderr.contains("s3cret"), "{stderr}");

    // On screen: the refusal is one line, and top keeps retrying.
    if Command::new("tmux").arg("-V").output().is_ok() {
        let command = format!(
            "{} top --endpoint {endpoint} --ca-file {ca} --basic-auth-user prom \
             --basic-auth-password-file {wrong} -d 0.5",
            tracer_bin()
        );
        let tmux = Tmux::start("top-401", 100, 24, &command);
        let screen = tmux.wait_for("the refusal", |s| {
            s.contains("the daemon refused the credentials; retrying")
        });
        assert!(screen.contains("401 Unauthorized"), "{screen}");
        assert!(!screen.contains("not reachable"), "{screen}");
        tmux.keys("q");
        assert_eq!(tmux.wait_exit(), Some(0));
    }
    assert!(daemon.stop().success());
}
