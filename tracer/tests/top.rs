//! `tracer top` in a real terminal (tmux) against a real daemon, and
//! `tracer top --once` as a script would use it.

mod common;

use std::{
    collections::BTreeMap,
    net::TcpStream,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use common::{daemon::*, leaky::*, *};

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

fn pick(m: &BTreeMap<String, u64>) -> Vec<(String, u64)> {
    COMPARED
        .iter()
        .map(|s| ((*s).to_owned(), m.get(*s).copied().unwrap_or(0)))
        .collect()
}

/// A daemon that calls a CLOSE_WAIT socket leaked after 1 s.
fn leak_watching_daemon() -> Daemon {
    Daemon::start(&[
        "--close-wait-threshold",
        "1s",
        "--reconcile-interval",
        "200ms",
    ])
}

#[test]
fn top_in_a_terminal_shows_ss_counts_and_the_leaking_process() {
    if !can_load_ebpf("top_in_a_terminal_shows_ss_counts_and_the_leaking_process") {
        return;
    }
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
    let pid = server.child.id().to_string();
    let screen = tmux.wait_for("the leaking process", |s| {
        s.contains(LEAKY) && s.contains(&pid)
    });
    assert!(screen.contains("CLOSE_WAIT leaks"), "{screen}");
    assert!(
        screen.contains(&server.child.id().to_string()),
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
        let before = pick(&screen_counts(&tmux.screen()));
        let truth = pick(&ss_counts());
        thread::sleep(Duration::from_millis(700));
        let after = pick(&screen_counts(&tmux.screen()));
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
fn top_once_prints_text_and_exits() {
    if !can_load_ebpf("top_once_prints_text_and_exits") {
        return;
    }
    let daemon = leak_watching_daemon();
    let server = LeakyServer::start();
    drop(TcpStream::connect(server.addr).expect("connect"));
    let endpoint = format!("http://{}", daemon.addr);
    let deadline = Instant::now() + Duration::from_secs(15);
    let text = loop {
        let out = Command::new(tracer_bin())
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
    // Nothing listens on port 9 of loopback (discard is not running here).
    let out = Command::new(tracer_bin())
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
        eprintln!("SKIPPED the terminal half: tmux is not installed");
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
