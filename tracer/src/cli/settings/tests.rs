use std::{ffi::OsString, path::PathBuf};

use clap::{Arg, CommandFactory as _};

use super::*;
use crate::{
    cli::{Cli, Command as Sub, parse_with},
    daemon::reload,
};

fn cli() -> Command {
    Cli::command()
}

fn argv(args: &[&str]) -> Vec<OsString> {
    std::iter::once("tracer")
        .chain(args.iter().copied())
        .map(OsString::from)
        .collect()
}

/// A config file with `text`, removed on drop.
struct ConfigFile(PathBuf);

impl ConfigFile {
    fn new(name: &str, text: &str) -> ConfigFile {
        let path = std::env::temp_dir().join(format!("tracer-{name}-{}.toml", std::process::id()));
        std::fs::write(&path, text).expect("write config");
        ConfigFile(path)
    }

    fn arg(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn daemon_settings(command: &Command, args: &[&str]) -> Effective {
    match parse_with(command, &argv(args)).expect("parses").command {
        Sub::Daemon(d) => d.effective,
        _ => panic!("not daemon"),
    }
}

#[test]
fn the_settings_are_the_daemon_flags_and_the_log_level() {
    let keys = keys(&cli());
    assert_eq!(keys.first().map(String::as_str), Some("log-level"));
    for key in ["listen", "max-sockets", "web-config-file", "netns-label"] {
        assert!(keys.iter().any(|k| k == key), "{key} missing from {keys:?}");
    }
    for not in NOT_SETTINGS {
        assert!(!keys.iter().any(|k| k == not), "{not} is not a setting");
    }
}

/// `deploy/tracer.toml` shows every key, commented out, with its default;
/// a setting without a default shows an example value.
#[test]
fn the_shipped_config_lists_every_setting_with_its_default() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/tracer.toml");
    let text = std::fs::read_to_string(path).expect("read deploy/tracer.toml");
    let mut shipped: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let Some(setting) = line.strip_prefix('#') else {
            continue;
        };
        let Ok(table) = toml::from_str::<toml::Table>(setting) else {
            continue; // prose
        };
        for (key, value) in table {
            let value = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => panic!("{key} = {other:?}: not a flag's value"),
            };
            shipped.push((key, value));
        }
    }
    let declared = settings(&cli());
    let shipped_keys: Vec<&str> = shipped.iter().map(|(k, _)| k.as_str()).collect();
    let declared_keys: Vec<&str> = declared.iter().map(|s| s.key.as_str()).collect();
    let mut a = shipped_keys.clone();
    let mut b = declared_keys.clone();
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(a, b, "deploy/tracer.toml's keys vs the daemon's settings");
    for setting in declared {
        let (_, value) = shipped
            .iter()
            .find(|(k, _)| *k == setting.key)
            .expect("listed");
        if let Some(default) = &setting.default {
            assert_eq!(
                value, default,
                "{}: deploy/tracer.toml vs the flag",
                setting.key
            );
        }
    }
}

#[test]
fn describe_prints_a_config_file_that_configures_the_same_daemon() {
    let given = ConfigFile::new("given", "leak-top-n = 7\nlisten = \"127.0.0.1:9999\"\n");
    let effective = daemon_settings(
        &cli(),
        &["daemon", "--config", given.arg(), "--max-sockets", "5000"],
    );
    assert_eq!(effective.get("leak-top-n"), Some("7"));
    assert_eq!(effective.get("max-sockets"), Some("5000"));
    let described = effective.describe(&given.0);
    assert!(
        described.contains("\nlisten = \"127.0.0.1:9999\"\n"),
        "{described}"
    );
    assert!(
        described.contains("\n# web-config-file: not set\n"),
        "{described}"
    );
    let again = ConfigFile::new("described", &described);
    let reread = daemon_settings(&cli(), &["daemon", "--config", again.arg()]);
    assert_eq!(reread, effective);
}

#[test]
fn strings_are_quoted_for_toml() {
    assert_eq!(toml_value("20"), "20");
    assert_eq!(toml_value("false"), "false");
    assert_eq!(toml_value("4MiB"), "\"4MiB\"");
    assert_eq!(toml_value("a\"b\\c"), "\"a\\\"b\\\\c\"");
    let parsed: toml::Table =
        toml::from_str(&format!("k = {}", toml_value("a\"b\\c\u{1}"))).unwrap();
    assert_eq!(parsed["k"].as_str(), Some("a\"b\\c\u{1}"));
}

#[test]
fn every_live_setting_exists() {
    let keys = keys(&cli());
    for live in reload::LIVE {
        assert!(keys.iter().any(|k| k == live), "{live} is not a setting");
    }
}

/// What the settings table promises: a flag added to `tracer daemon`
/// appears in `--help`, the config file, `--check-config` and the reload,
/// with nothing else touched.
#[test]
fn a_new_flag_appears_everywhere_without_touching_anything_else() {
    let with_new = cli().mut_subcommand("daemon", |d| {
        d.arg(
            Arg::new("new_knob")
                .long("new-knob")
                .value_name("N")
                .default_value("7")
                .value_parser(clap::value_parser!(u32).range(1..=10))
                .help("A knob added by the test"),
        )
    });
    let help = with_new
        .clone()
        .find_subcommand_mut("daemon")
        .expect("daemon")
        .render_long_help()
        .to_string();
    assert!(
        help.contains("--new-knob") && help.contains("A knob added by the test"),
        "{help}"
    );
    assert!(keys(&with_new).iter().any(|k| k == "new-knob"));

    let defaults = daemon_settings(&with_new, &["daemon"]);
    assert!(
        defaults
            .describe(std::path::Path::new("x"))
            .contains("\nnew-knob = 7\n")
    );

    // The config file sets it, through the flag's own parser.
    let file = ConfigFile::new("knob", "new-knob = 9\n");
    let from_file = daemon_settings(&with_new, &["daemon", "--config", file.arg()]);
    assert_eq!(from_file.get("new-knob"), Some("9"));
    assert!(from_file.describe(&file.0).contains("\nnew-knob = 9\n"));
    let bad = ConfigFile::new("knob-bad", "new-knob = 11\n");
    let err = parse_with(&with_new, &argv(&["daemon", "--config", bad.arg()]))
        .expect_err("11 is out of range")
        .to_string();
    assert!(err.contains(":1: new-knob: "), "{err}");

    // The reload sees it change, and says it needs a restart.
    let options = |effective: Effective| {
        let Sub::Daemon(mut d) = parse_with(&with_new, &argv(&["daemon"]))
            .expect("parses")
            .command
        else {
            panic!("not daemon")
        };
        d.effective = effective;
        d.options()
    };
    let (old, new) = (options(defaults), options(from_file));
    let (live, restart) = reload::changes(&old, &new);
    assert!(live.is_empty(), "{live:?}");
    assert_eq!(restart, ["new-knob"]);
}

#[test]
fn the_reload_tells_live_settings_from_the_others() {
    let options = |args: &[&str]| {
        let Sub::Daemon(d) = parse_with(&cli(), &argv(args)).expect("parses").command else {
            panic!("not daemon")
        };
        d.options()
    };
    let old = options(&["daemon"]);
    let new = options(&[
        "--log-level",
        "debug",
        "daemon",
        "--leak-top-n",
        "3",
        "--listen",
        "127.0.0.1:1",
    ]);
    let (live, restart) = reload::changes(&old, &new);
    assert_eq!(live, ["log-level", "leak-top-n"]);
    assert_eq!(restart, ["listen"]);
    assert_eq!(reload::changes(&old, &old), (vec![], vec![]));
}
