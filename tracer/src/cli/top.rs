//! Flags of `tracer top`: where the daemon is, and how to get past its TLS
//! and basic auth.

use std::{ffi::OsStr, path::PathBuf, time::Duration};

use clap::{Args, error::ErrorKind};

use crate::top::{
    TopOptions,
    client::{ClientOptions, Endpoint},
};

/// The daemon's default address, as a URL.
pub const DEFAULT_ENDPOINT: &str = concat!("http://", super::default_listen!());

/// Flags of `tracer top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// The daemon's base URL: http://HOST:PORT, or https:// for a daemon
    /// with TLS; https://USER:PASSWORD@HOST:PORT carries basic-auth
    /// credentials (percent-encoded).
    // --help would print the variable's value, password and all.
    #[arg(long, value_name = "URL", default_value = DEFAULT_ENDPOINT, env = "TRACER_ENDPOINT", hide_env_values = true, value_parser = EndpointParser)]
    pub endpoint: Endpoint,

    /// PEM file of the CA certificates to trust for https:// (instead of
    /// the system's).
    #[arg(long, value_name = "PATH", env = "TRACER_CA_FILE")]
    pub ca_file: Option<PathBuf>,

    /// Basic-auth user; the password is read from --basic-auth-password-file.
    #[arg(
        long,
        value_name = "USER",
        env = "TRACER_BASIC_AUTH_USER",
        requires = "basic_auth_password_file"
    )]
    pub basic_auth_user: Option<String>,

    /// File holding the basic-auth password (surrounding whitespace is
    /// dropped, as Prometheus does with its password_file).
    #[arg(
        long,
        value_name = "PATH",
        env = "TRACER_BASIC_AUTH_PASSWORD_FILE",
        requires = "basic_auth_user"
    )]
    pub basic_auth_password_file: Option<PathBuf>,

    /// Seconds between refreshes (0.2 to 3600).
    #[arg(short = 'd', long = "delay", value_name = "SECONDS", default_value = "1", value_parser = parse_delay)]
    pub delay: Duration,

    /// Print the current state once as plain text and exit.
    #[arg(long)]
    pub once: bool,
}

impl TopArgs {
    pub fn options(&self) -> TopOptions {
        TopOptions {
            endpoint: self.endpoint.clone(),
            client: ClientOptions {
                ca_file: self.ca_file.clone(),
                basic_auth: self
                    .basic_auth_user
                    .clone()
                    .zip(self.basic_auth_password_file.clone()),
            },
            interval: self.delay,
            once: self.once,
        }
    }
}

/// Parses `--endpoint` with a message that leaves the URL out: it may
/// hold a password (clap's own message would repeat the value).
#[derive(Clone)]
struct EndpointParser;

impl clap::builder::TypedValueParser for EndpointParser {
    type Value = Endpoint;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<Endpoint, clap::Error> {
        let invalid = |why: &str| {
            clap::Error::raw(
                ErrorKind::ValueValidation,
                format!(
                    "invalid value for '--endpoint <URL>': {why}\n\n\
                     For more information, try '--help'.\n"
                ),
            )
            .with_cmd(cmd)
        };
        let text = value.to_str().ok_or_else(|| invalid("not UTF-8"))?;
        Endpoint::parse(text).map_err(|e| invalid(&e))
    }
}

fn parse_delay(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(0.2..=3600.0).contains(&secs) {
        return Err(format!("{secs} s is out of range: use 0.2 to 3600"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::cli::{Cli, Command};

    use super::*;

    fn top(args: &[&str]) -> Result<TopArgs, clap::Error> {
        let cli = Cli::try_parse_from(["tracer", "top"].iter().chain(args))?;
        match cli.command {
            Command::Top(t) => Ok(t),
            _ => panic!("not top"),
        }
    }

    #[test]
    fn top_flags() {
        let t = top(&[]).unwrap();
        assert_eq!(t.endpoint.url, "http://127.0.0.1:9840");
        assert_eq!(t.delay, Duration::from_secs(1));
        let t = top(&["--endpoint", "http://h:1/", "-d", "0.5", "--once"]).unwrap();
        assert_eq!(t.options().endpoint.url, "http://h:1");
        assert_eq!(t.delay, Duration::from_millis(500));
        assert!(t.once);
    }

    #[test]
    fn tls_and_credentials_flags() {
        let t = top(&[
            "--endpoint",
            "https://h:9840",
            "--ca-file",
            "/etc/tracer/ca.crt",
            "--basic-auth-user",
            "prom",
            "--basic-auth-password-file",
            "/etc/tracer/password",
        ])
        .unwrap();
        let o = t.options();
        assert_eq!(o.client.ca_file, Some(PathBuf::from("/etc/tracer/ca.crt")));
        assert_eq!(
            o.client.basic_auth,
            Some(("prom".to_owned(), PathBuf::from("/etc/tracer/password")))
        );
        // A user without a password file, or the other way round, is a
        // usage error: the password never goes on the command line alone.
        for args in [
            &["--basic-auth-user", "prom"][..],
            &["--basic-auth-password-file", "/p"],
            &["--basic-auth-password", "x"],
        ] {
            let err = top(args).expect_err(&format!("{args:?} accepted"));
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        }
    }

    #[test]
    fn a_bad_url_does_not_echo_its_password() {
        let err = top(&["--endpoint", "ftp://prom:hunter2@h"]).expect_err("accepted");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
