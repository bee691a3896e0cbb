//! The daemon's config file (TOML, `/etc/tracer/tracer.toml` by default).
//!
//! Every key is the long name of a daemon flag ([`super::settings`]), with the same values: the
//! file is turned into `--key value` arguments and checked by the very
//! parsers the command line uses, so the two cannot disagree. Precedence:
//! command-line flags, then environment variables, then the file, then the
//! built-in defaults.

use std::{io, path::Path};

/// Where the daemon looks when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/tracer/tracer.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {error}")]
    Read { path: String, error: io::Error },
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    #[error("{path}:{line}: unknown setting `{key}` (known: {known})")]
    UnknownKey {
        path: String,
        line: usize,
        key: String,
        known: String,
    },
    #[error("{path}:{line}: `{key}` must be a string, a whole number or a boolean")]
    Type {
        path: String,
        line: usize,
        key: String,
    },
    #[error("{path}:{line}: {key}: {message}")]
    Value {
        path: String,
        line: usize,
        key: String,
        message: String,
    },
}

/// Reads a config file; `Ok(None)` when `path` is the default and absent
/// (a daemon without a config file runs on flags and defaults).
pub fn read(path: &Path, explicit: bool) -> Result<Option<String>, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound && !explicit => Ok(None),
        Err(error) => Err(ConfigError::Read {
            path: path.display().to_string(),
            error,
        }),
    }
}

/// The line (1-based) where `key` is set, for messages.
fn line_of(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(key)
                .or_else(|| l.strip_prefix(&format!("\"{key}\"")))
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map_or(0, |i| i + 1)
}

/// The file's settings as `(key, value)` pairs: each key one of `known`
/// (the daemon's flags, see [`super::settings`]), each value checked by
/// `validate` (which returns the flag parser's message on error).
pub fn settings(
    path: &Path,
    text: &str,
    known: &[String],
    validate: impl Fn(&str, &str) -> Result<(), String>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let p = path.display().to_string();
    let table: toml::Table = toml::from_str(text).map_err(|e| {
        // toml's message: a position line, a drawing of the spot, a reason.
        let text = e.to_string();
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let position = lines
            .next()
            .unwrap_or_default()
            .trim_start_matches("TOML parse error at ");
        let reason = lines.next_back().unwrap_or_default();
        ConfigError::Syntax {
            path: p.clone(),
            message: format!("{position}: {reason}"),
        }
    })?;
    let mut out = Vec::new();
    for (key, value) in table {
        let line = line_of(text, &key);
        if !known.contains(&key) {
            let known = known.join(", ");
            return Err(ConfigError::UnknownKey {
                path: p,
                line,
                key,
                known,
            });
        }
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => return Err(ConfigError::Type { path: p, line, key }),
        };
        if let Err(message) = validate(&key, &value) {
            return Err(ConfigError::Value {
                path: p,
                line,
                key,
                message,
            });
        }
        out.push((key, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<(String, String)>, ConfigError> {
        let known = ["listen", "max-sockets", "leak-top-n"].map(String::from);
        settings(
            Path::new("/etc/tracer/tracer.toml"),
            text,
            &known,
            |key, value| {
                if key == "max-sockets" && value.parse::<u64>().is_err() {
                    return Err(format!("invalid value '{value}'"));
                }
                Ok(())
            },
        )
    }

    #[test]
    fn reads_strings_and_numbers() {
        let s = parse("# comment\nlisten = \"0.0.0.0:9840\"\nmax-sockets = 5000\n").unwrap();
        assert!(s.contains(&("listen".into(), "0.0.0.0:9840".into())));
        assert!(s.contains(&("max-sockets".into(), "5000".into())));
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_line_and_the_reason() {
        let e = parse("listen = \"x\"\n\nbogus = 1\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("/etc/tracer/tracer.toml:3: unknown setting `bogus`"),
            "{e}"
        );
        let e = parse("max-sockets = \"many\"\n").unwrap_err().to_string();
        assert_eq!(
            e,
            "/etc/tracer/tracer.toml:1: max-sockets: invalid value 'many'"
        );
        let e = parse("\n leak-top-n = [1]\n").unwrap_err().to_string();
        assert_eq!(
            e,
            "/etc/tracer/tracer.toml:2: `leak-top-n` must be a string, a whole number or a boolean"
        );
        let e = parse("listen = \n").unwrap_err().to_string();
        assert!(
            e.starts_with("/etc/tracer/tracer.toml: line 1, column 10: "),
            "{e}"
        );
        assert!(!e.contains('|'), "{e}");
        let e = parse("listen = \"a\"\nlisten = \"b\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn missing_default_file_is_fine_missing_explicit_file_is_not() {
        let missing = Path::new("/nonexistent/tracer.toml");
        assert!(read(missing, false).unwrap().is_none());
        let e = read(missing, true).unwrap_err().to_string();
        assert!(
            e.starts_with("cannot read config file /nonexistent/tracer.toml"),
            "{e}"
        );
    }
}
