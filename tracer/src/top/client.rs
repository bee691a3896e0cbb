//! Fetching the daemon's snapshot over HTTP or HTTPS, with basic auth when
//! the daemon asks for it (a web config file, as the README recommends
//! beyond loopback).

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use base64::Engine as _;
use rustls_pki_types::{CertificateDer, pem::PemObject as _};
use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};

use super::model::FetchFailure;
use crate::serve::snapshot::Snapshot;

/// Why `tracer top` could not be set up (before any request).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot read the CA file {path}: {error}")]
    CaFile { path: PathBuf, error: String },
    #[error("the CA file {path} holds no PEM certificate")]
    NoCaCertificate { path: PathBuf },
    #[error(
        "cannot read the system's CA certificates ({error}); give the daemon's CA with --ca-file"
    )]
    SystemRoots { error: String },
    #[error("cannot read the password file {path}: {error}")]
    PasswordFile {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("the password file {path} is empty")]
    EmptyPassword { path: PathBuf },
    #[error(
        "credentials given twice: in the URL and with --basic-auth-user; keep one (a password \
         in a file stays out of the process list)"
    )]
    CredentialsTwice,
}

/// Why one fetch failed; each message is one line that says what to do.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot reach the daemon at {url}: {error}")]
    Http { url: String, error: String },
    #[error("TLS with the daemon at {url} failed: {error}{hint}")]
    Tls {
        url: String,
        error: String,
        hint: &'static str,
    },
    #[error(
        "the daemon at {url} refused the credentials (401 Unauthorized): check \
         --basic-auth-user and --basic-auth-password-file, or user:password@ in the URL"
    )]
    WrongCredentials { url: String },
    #[error(
        "the daemon at {url} asks for credentials (401 Unauthorized): give --basic-auth-user \
         and --basic-auth-password-file, or user:password@ in the URL"
    )]
    NoCredentials { url: String },
    #[error("the daemon at {url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("the daemon at {url} sent a snapshot tracer cannot read: {error}")]
    Decode { url: String, error: String },
}

impl FetchError {
    /// What the screen shows while it keeps retrying.
    pub fn failure(&self) -> FetchFailure {
        let summary = match self {
            FetchError::Http { .. } => return FetchFailure::unreachable(self.to_string()),
            FetchError::Tls { .. } => "TLS with the daemon failed",
            FetchError::WrongCredentials { .. } | FetchError::NoCredentials { .. } => {
                "the daemon refused the credentials"
            }
            FetchError::Status { .. } => "the daemon answered an error",
            FetchError::Decode { .. } => "the snapshot cannot be read",
        };
        FetchFailure {
            summary,
            message: self.to_string(),
            hint: None,
        }
    }
}

/// The daemon's base URL, with any `user:password@` taken out of it (so
/// the screen never shows the password).
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `http://host:port` or `https://host:port`, no trailing slash.
    pub url: String,
    pub credentials: Option<Credentials>,
}

/// Basic-auth user and password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.url)
            .field("credentials", &self.credentials)
            .finish()
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

impl Endpoint {
    /// Parses `http[s]://[user[:password]@]host[:port][/]`; the user and
    /// password may be percent-encoded, as in any URL.
    pub fn parse(s: &str) -> Result<Endpoint, String> {
        let s = s.trim().trim_end_matches('/');
        let (scheme, rest) = s
            .split_once("://")
            .filter(|(scheme, _)| matches!(*scheme, "http" | "https"))
            .ok_or_else(|| "it is not an http:// or https:// URL".to_owned())?;
        let (userinfo, host) = match rest.rsplit_once('@') {
            Some((userinfo, host)) => (Some(userinfo), host),
            None => (None, rest),
        };
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err("the URL has no host".to_owned());
        }
        let credentials = match userinfo {
            None => None,
            Some(userinfo) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                Some(Credentials {
                    user: percent_decode(user)?,
                    password: percent_decode(password)?,
                })
            }
        };
        Ok(Endpoint {
            url: format!("{scheme}://{host}"),
            credentials,
        })
    }

    fn is_https(&self) -> bool {
        self.url.starts_with("https://")
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| "a `%` in the URL's user or password is not `%XX`".to_owned())?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the URL's user or password is not UTF-8".to_owned())
}

/// How to reach the daemon, besides its URL.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// PEM certificates to trust instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// `--basic-auth-user` and `--basic-auth-password-file`.
    pub basic_auth: Option<(String, PathBuf)>,
}

/// A reusable client (keeps its connection alive between refreshes).
pub struct Client {
    agent: ureq::Agent,
    url: String,
    authorization: Option<String>,
}

/// Largest snapshot accepted: it holds at most 1,000 leaks and 100
/// destinations, far below this.
const MAX_BODY: u64 = 16 << 20;

impl Client {
    pub fn new(
        endpoint: &Endpoint,
        options: &ClientOptions,
        timeout: Duration,
    ) -> Result<Client, SetupError> {
        let credentials = match (&endpoint.credentials, &options.basic_auth) {
            (Some(_), Some(_)) => return Err(SetupError::CredentialsTwice),
            (Some(c), None) => Some(c.clone()),
            (None, Some((user, file))) => Some(Credentials {
                user: user.clone(),
                password: read_password(file)?,
            }),
            (None, None) => None,
        };
        let mut config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            // 401 and the like are told apart below, with their own message.
            .http_status_as_error(false);
        if endpoint.is_https() {
            config = config.tls_config(tls_config(options.ca_file.as_deref())?);
        }
        let authorization = credentials.map(|c| {
            let token = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", c.user, c.password));
            format!("Basic {token}")
        });
        Ok(Client {
            agent: config.build().into(),
            url: format!("{}/api/v1/snapshot", endpoint.url),
            authorization,
        })
    }

    pub fn fetch(&self) -> Result<Snapshot, FetchError> {
        let mut request = self.agent.get(&self.url);
        if let Some(value) = &self.authorization {
            request = request.header("Authorization", value);
        }
        let mut response = request.call().map_err(|e| self.transport_error(e))?;
        match response.status().as_u16() {
            200 => {}
            401 if self.authorization.is_some() => {
                return Err(FetchError::WrongCredentials {
                    url: self.url.clone(),
                });
            }
            401 => {
                return Err(FetchError::NoCredentials {
                    url: self.url.clone(),
                });
            }
            status => {
                return Err(FetchError::Status {
                    url: self.url.clone(),
                    status,
                });
            }
        }
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .map_err(|e| self.transport_error(e))?;
        serde_json::from_str(&body).map_err(|e| FetchError::Decode {
            url: self.url.clone(),
            error: e.to_string(),
        })
    }

    fn transport_error(&self, error: ureq::Error) -> FetchError {
        let url = self.url.clone();
        match tls_error(&error) {
            Some(tls) => FetchError::Tls {
                url,
                hint: if matches!(tls, rustls::Error::InvalidCertificate(_)) {
                    "; if it uses a private CA, give it with --ca-file"
                } else {
                    ""
                },
                error: tls.to_string(),
            },
            None => FetchError::Http {
                url,
                error: error.to_string(),
            },
        }
    }
}

/// The rustls error behind a ureq error: ureq passes handshake failures up
/// as I/O errors that wrap it.
fn tls_error(error: &ureq::Error) -> Option<&rustls::Error> {
    match error {
        ureq::Error::Rustls(e) => Some(e),
        ureq::Error::Io(e) => e.get_ref()?.downcast_ref::<rustls::Error>(),
        _ => None,
    }
}

/// Trusts `ca_file`'s certificates, or the system's roots without one.
fn tls_config(ca_file: Option<&Path>) -> Result<TlsConfig, SetupError> {
    let roots: Vec<Certificate<'static>> = match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| SetupError::CaFile {
                    path: path.to_owned(),
                    error: e.to_string(),
                })?;
            if certs.is_empty() {
                return Err(SetupError::NoCaCertificate {
                    path: path.to_owned(),
                });
            }
            certs
                .iter()
                .map(|c| Certificate::from_der(c).to_owned())
                .collect()
        }
        None => {
            // The system's store (/etc/ssl/certs on Debian, SSL_CERT_FILE
            // and SSL_CERT_DIR when set), as curl and Prometheus use it.
            let found = rustls_native_certs::load_native_certs();
            if found.certs.is_empty() {
                let error = found
                    .errors
                    .first()
                    .map_or_else(|| "none found".to_owned(), ToString::to_string);
                return Err(SetupError::SystemRoots { error });
            }
            found
                .certs
                .iter()
                .map(|c| Certificate::from_der(c).to_owned())
                .collect()
        }
    };
    Ok(TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .root_certs(RootCerts::Specific(Arc::new(roots)))
        // The daemon's own provider: one TLS stack in the binary.
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .build())
}

/// The password file's content without surrounding whitespace, as
/// Prometheus reads its `password_file` (so one file serves both).
fn read_password(path: &Path) -> Result<String, SetupError> {
    let text = std::fs::read_to_string(path).map_err(|error| SetupError::PasswordFile {
        path: path.to_owned(),
        error,
    })?;
    let password = text.trim();
    if password.is_empty() {
        return Err(SetupError::EmptyPassword {
            path: path.to_owned(),
        });
    }
    Ok(password.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_lose_their_credentials_and_trailing_slash() {
        let e = Endpoint::parse("https://prom:s%40cret%3A1@127.0.0.1:9840/").expect("parse");
        assert_eq!(e.url, "https://127.0.0.1:9840");
        let c = e.credentials.expect("credentials");
        assert_eq!((c.user.as_str(), c.password.as_str()), ("prom", "s@cret:1"));
        assert!(
            !format!("{c:?}").contains("s@cret"),
            "Debug shows the password"
        );
        let e = Endpoint::parse("http://h:1").expect("parse");
        assert_eq!(e.url, "http://h:1");
        assert!(e.credentials.is_none());
        let e = Endpoint::parse("http://user@[::1]:9840").expect("parse");
        assert_eq!(e.url, "http://[::1]:9840");
        assert_eq!(e.credentials.expect("user").password, "");
        for bad in [
            "127.0.0.1:9840",
            "http://",
            "ftp://h",
            "http://u:p@",
            "http://u:%zz@h",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn credentials_come_from_one_place_and_a_file() {
        let dir = std::env::temp_dir().join(format!("tracer-top-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("password");
        std::fs::write(&file, "  pass word \n").expect("write");
        let timeout = Duration::from_secs(1);
        let plain = Endpoint::parse("http://127.0.0.1:9").expect("parse");
        let options = ClientOptions {
            ca_file: None,
            basic_auth: Some(("prom".into(), file.clone())),
        };
        let client = Client::new(&plain, &options, timeout).expect("client");
        let expected = base64::engine::general_purpose::STANDARD.encode("prom:pass word");
        assert_eq!(client.authorization, Some(format!("Basic {expected}")));
        let with_user = Endpoint::parse("http://a:b@127.0.0.1:9").expect("parse");
        assert!(matches!(
            Client::new(&with_user, &options, timeout),
            Err(SetupError::CredentialsTwice)
        ));
        std::fs::write(&file, "\n").expect("write");
        assert!(matches!(
            Client::new(&plain, &options, timeout),
            Err(SetupError::EmptyPassword { .. })
        ));
        let missing = ClientOptions {
            ca_file: Some(dir.join("nope.crt")),
            basic_auth: None,
        };
        let https = Endpoint::parse("https://127.0.0.1:9").expect("parse");
        let e = Client::new(&https, &missing, timeout).err().expect("error");
        assert!(e.to_string().contains("nope.crt"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
