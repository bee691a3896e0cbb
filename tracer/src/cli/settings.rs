//! The daemon's settings, declared once: as the flags of
//! [`super::DaemonArgs`] (name, help, default, environment variable,
//! parser) plus the global `--log-level`. Everything else is derived from
//! clap's view of those flags, so a new flag cannot miss one of them:
//!
//! * the config file's keys ([`keys`]) are the flags' long names;
//! * `--check-config` prints [`Effective::describe`]: every setting's
//!   effective value, as clap resolved it from flag, environment, file or
//!   default;
//! * the SIGHUP reload compares two [`Effective`]s ([`Effective::changed`]),
//!   so a changed setting is reported even when nothing applies it live.

use clap::{ArgMatches, Command, parser::ValueSource};

/// Flags of `tracer daemon` that are not settings: they say where the
/// settings are, or what to do with them.
const NOT_SETTINGS: &[&str] = &["config", "check-config", "help", "version"];

/// The global flag that is a daemon setting too.
const GLOBAL_SETTINGS: &[&str] = &["log-level"];

/// One setting as clap declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The flag's long name, which is also the config file's key.
    pub key: String,
    /// clap's id for it (`max_sockets` for `--max-sockets`).
    pub id: String,
    /// The built-in default, as written in the flag's declaration.
    pub default: Option<String>,
    /// A global flag (`--log-level`), read from the top-level matches.
    pub global: bool,
}

/// The daemon's settings, in declaration order: the global ones, then the
/// daemon's own flags.
pub fn settings(cli: &Command) -> Vec<Setting> {
    let global = cli
        .get_arguments()
        .filter(|a| a.get_long().is_some_and(|l| GLOBAL_SETTINGS.contains(&l)));
    let daemon = cli
        .find_subcommand("daemon")
        .into_iter()
        .flat_map(Command::get_arguments)
        .filter(|a| a.get_long().is_some_and(|l| !NOT_SETTINGS.contains(&l)));
    global
        .map(|a| (a, true))
        .chain(daemon.map(|a| (a, false)))
        .filter_map(|(arg, global)| {
            Some(Setting {
                key: arg.get_long()?.to_owned(),
                id: arg.get_id().as_str().to_owned(),
                default: arg
                    .get_default_values()
                    .first()
                    .map(|v| v.to_string_lossy().into_owned()),
                global,
            })
        })
        .collect()
}

/// The config file's keys.
pub fn keys(cli: &Command) -> Vec<String> {
    settings(cli).into_iter().map(|s| s.key).collect()
}

/// Whether the user gave `id` (flag, environment or config file), rather
/// than clap filling in its default.
pub fn given(matches: &ArgMatches, id: &str) -> bool {
    !matches!(
        matches.value_source(id),
        None | Some(ValueSource::DefaultValue)
    )
}

/// Every setting's effective value, as written (`4MiB` stays `4MiB`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effective {
    /// `(key, value)` in declaration order; `None` for an unset optional.
    values: Vec<(String, Option<String>)>,
}

impl Effective {
    /// Reads the values clap resolved for `cli`'s settings; `daemon` is the
    /// subcommand's matches, `top` the whole command line's.
    pub fn from_matches(cli: &Command, top: &ArgMatches, daemon: &ArgMatches) -> Effective {
        let values = settings(cli)
            .into_iter()
            .map(|s| {
                let from = if s.global { top } else { daemon };
                let raw = from
                    .get_raw(&s.id)
                    .and_then(|mut v| v.next())
                    .map(|v| v.to_string_lossy().into_owned());
                (s.key, raw)
            })
            .collect();
        Effective { values }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref())
    }

    /// The keys whose value differs from `other`'s.
    pub fn changed<'a>(&'a self, other: &Effective) -> Vec<&'a str> {
        self.values
            .iter()
            .filter(|(key, value)| {
                other.values.iter().find(|(k, _)| k == key).map(|(_, v)| v) != Some(value)
            })
            .map(|(key, _)| key.as_str())
            .collect()
    }

    /// The settings in config-file syntax, for `--check-config`: a file
    /// with exactly these lines configures the same daemon.
    pub fn describe(&self, config: &std::path::Path) -> String {
        let mut out = format!(
            "# configuration is valid (config file: {})\n",
            config.display()
        );
        for (key, value) in &self.values {
            match value {
                Some(value) => out.push_str(&format!("{key} = {}\n", toml_value(value))),
                None => out.push_str(&format!("# {key}: not set\n")),
            }
        }
        out
    }
}

/// A whole number or a boolean stays bare; anything else is a TOML string
/// (the config file reads either form the same way).
fn toml_value(raw: &str) -> String {
    if raw.parse::<i64>().is_ok() || raw == "true" || raw == "false" {
        raw.to_owned()
    } else {
        let mut quoted = String::with_capacity(raw.len() + 2);
        quoted.push('"');
        for c in raw.chars() {
            match c {
                '"' => quoted.push_str("\\\""),
                '\\' => quoted.push_str("\\\\"),
                c if c.is_control() => quoted.push_str(&format!("\\u{:04X}", c as u32)),
                c => quoted.push(c),
            }
        }
        quoted.push('"');
        quoted
    }
}

#[cfg(test)]
mod tests;
