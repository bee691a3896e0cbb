//! The web config file: TLS and basic auth for the HTTP endpoint, in the
//! format of the Prometheus exporters (exporter-toolkit), so that one file
//! and one habit serve node_exporter and tracer alike:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: /etc/tracer/tls.crt
//!   key_file: /etc/tracer/tls.key
//!   client_auth_type: RequireAndVerifyClientCert   # optional
//!   client_ca_file: /etc/tracer/clients-ca.crt     # with the line above
//!   min_version: TLS12                             # or TLS13
//! basic_auth_users:
//!   prometheus: $2y$10$...                         # bcrypt, e.g. `htpasswd -nBC 10 ""`
//! ```
//!
//! The subset of exporter-toolkit's keys that rustls can honour is accepted;
//! the rest (cipher suites, curve preferences, HTTP/2, extra headers) are
//! refused by name rather than silently ignored.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{
    RootCertStore, ServerConfig,
    server::{WebPkiClientVerifier, danger::ClientCertVerifier},
    version::{TLS12, TLS13},
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    tls_server_config: Option<TlsFile>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
    http_server_config: Option<serde_norway::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    #[serde(default)]
    client_auth_type: ClientAuth,
    client_ca_file: Option<PathBuf>,
    min_version: Option<TlsVersion>,
    max_version: Option<TlsVersion>,
    // exporter-toolkit keys that need Go's TLS stack; refused with a reason.
    cipher_suites: Option<serde_norway::Value>,
    curve_preferences: Option<serde_norway::Value>,
    prefer_server_cipher_suites: Option<serde_norway::Value>,
    client_allowed_sans: Option<serde_norway::Value>,
    cert: Option<serde_norway::Value>,
    key: Option<serde_norway::Value>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
enum ClientAuth {
    #[default]
    NoClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
    RequestClientCert,
    RequireAnyClientCert,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
enum TlsVersion {
    TLS10,
    TLS11,
    TLS12,
    TLS13,
}

/// What the web config file asks for, checked and ready to use.
#[derive(Clone, Default)]
pub struct WebSecurity {
    /// TLS settings; `None` serves plain HTTP.
    pub tls: Option<Arc<ServerConfig>>,
    /// User name to bcrypt hash; empty means no authentication.
    pub users: BTreeMap<String, String>,
}

impl fmt::Debug for WebSecurity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSecurity")
            .field("tls", &self.tls.is_some())
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl WebSecurity {
    /// Reads and checks the file at `path` and every file it names.
    pub fn load(path: &Path) -> Result<WebSecurity, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read web config file {}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        WebSecurity::parse(&text, base).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses the file's text; relative paths in it are relative to `base`
    /// (the file's directory, as exporter-toolkit does).
    pub fn parse(text: &str, base: &Path) -> Result<WebSecurity, String> {
        // An empty file is valid YAML for "nothing configured".
        let file: File = if text.trim().is_empty() {
            File::default()
        } else {
            serde_norway::from_str(text).map_err(|e| e.to_string())?
        };
        if file.http_server_config.is_some() {
            return Err(
                "http_server_config is not supported by tracer (it serves HTTP/1.1 \
                        and sets no extra headers); remove it"
                    .to_owned(),
            );
        }
        for (user, hash) in &file.basic_auth_users {
            if user.is_empty() || user.contains(':') {
                return Err(format!(
                    "basic_auth_users: `{user}` is not a valid user name (empty or with `:`)"
                ));
            }
            hash.parse::<bcrypt::HashParts>().map_err(|e| {
                format!(
                    "basic_auth_users: the password of `{user}` is not a bcrypt hash ({e}); \
                     make one with `htpasswd -nBC 10 \"\"`"
                )
            })?;
        }
        let tls = match file.tls_server_config {
            None => None,
            Some(tls) => Some(Arc::new(tls.server_config(base)?)),
        };
        Ok(WebSecurity {
            tls,
            users: file.basic_auth_users,
        })
    }

    /// What is configured, in a few words (for the log).
    pub fn describe(&self) -> String {
        match (self.tls.is_some(), self.users.len()) {
            (false, 0) => "plain HTTP, no authentication".to_owned(),
            (true, 0) => "TLS, no authentication".to_owned(),
            (tls, n) => format!(
                "{}, basic auth ({n} user{})",
                if tls { "TLS" } else { "plain HTTP" },
                if n == 1 { "" } else { "s" }
            ),
        }
    }
}

impl TlsFile {
    fn server_config(self, base: &Path) -> Result<ServerConfig, String> {
        let unsupported = [
            ("cipher_suites", self.cipher_suites.is_some()),
            ("curve_preferences", self.curve_preferences.is_some()),
            (
                "prefer_server_cipher_suites",
                self.prefer_server_cipher_suites.is_some(),
            ),
            ("client_allowed_sans", self.client_allowed_sans.is_some()),
            ("cert", self.cert.is_some()),
            ("key", self.key.is_some()),
        ];
        if let Some((key, _)) = unsupported.iter().find(|(_, set)| *set) {
            return Err(format!(
                "tls_server_config.{key} is not supported by tracer (rustls picks safe \
                 cipher suites and curves itself; certificates come from cert_file and key_file)"
            ));
        }
        let (Some(cert_file), Some(key_file)) = (self.cert_file, self.key_file) else {
            return Err("tls_server_config needs both cert_file and key_file".to_owned());
        };
        let cert_file = base.join(cert_file);
        let key_file = base.join(key_file);
        let certs = CertificateDer::pem_file_iter(&cert_file)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("cert_file {}: {e}", cert_file.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "cert_file {}: no PEM certificate in it",
                cert_file.display()
            ));
        }
        let key = PrivateKeyDer::from_pem_file(&key_file)
            .map_err(|e| format!("key_file {}: {e}", key_file.display()))?;

        let versions = versions(self.min_version, self.max_version)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| format!("tls_server_config: {e}"))?;
        let verifier = client_verifier(
            self.client_auth_type,
            self.client_ca_file.map(|p| base.join(p)),
            provider,
        )?;
        let builder = match verifier {
            Some(verifier) => builder.with_client_cert_verifier(verifier),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(certs, key).map_err(|e| {
            format!(
                "cert_file {} and key_file {}: {e}",
                cert_file.display(),
                key_file.display()
            )
        })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

fn versions(
    min: Option<TlsVersion>,
    max: Option<TlsVersion>,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, String> {
    // exporter-toolkit's default minimum is TLS 1.2, which is also the
    // oldest rustls speaks.
    let min = min.unwrap_or(TlsVersion::TLS12);
    let max = max.unwrap_or(TlsVersion::TLS13);
    if min < TlsVersion::TLS12 {
        return Err(format!(
            "tls_server_config.min_version {min:?} is not supported: TLS12 is the oldest \
             tracer speaks"
        ));
    }
    if max < min {
        return Err(format!(
            "tls_server_config: max_version {max:?} is below min_version {min:?}"
        ));
    }
    Ok([(TlsVersion::TLS12, &TLS12), (TlsVersion::TLS13, &TLS13)]
        .into_iter()
        .filter(|(v, _)| (min..=max).contains(v))
        .map(|(_, p)| p)
        .collect())
}

fn client_verifier(
    auth: ClientAuth,
    ca_file: Option<PathBuf>,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, String> {
    match (auth, ca_file) {
        (ClientAuth::NoClientCert, None) => Ok(None),
        (ClientAuth::NoClientCert, Some(_)) => Err(
            "tls_server_config: client_ca_file is set but client_auth_type is NoClientCert; \
             set client_auth_type to RequireAndVerifyClientCert or VerifyClientCertIfGiven"
                .to_owned(),
        ),
        (ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert, _) => Err(format!(
            "tls_server_config.client_auth_type {auth:?} is not supported by tracer (it would \
             accept certificates nobody verified); use RequireAndVerifyClientCert"
        )),
        (_, None) => Err(format!(
            "tls_server_config: client_auth_type {auth:?} needs client_ca_file"
        )),
        (auth, Some(ca_file)) => {
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(&ca_file)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("client_ca_file {}: {e}", ca_file.display()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!(
                    "client_ca_file {}: no usable CA certificate in it",
                    ca_file.display()
                ));
            }
            let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let builder = if auth == ClientAuth::VerifyClientCertIfGiven {
                builder.allow_unauthenticated()
            } else {
                builder
            };
            builder
                .build()
                .map(Some)
                .map_err(|e| format!("client_ca_file {}: {e}", ca_file.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // bcrypt("secret", cost 4): cheap enough for a unit test.
    const HASH: &str = "$2y$04$b8n1IVUER5EUZOcJ0Oo8gOKsCLUzYCi2dgdZOww.aqJ412lpu/VO2";

    fn parse(text: &str) -> Result<WebSecurity, String> {
        WebSecurity::parse(text, Path::new("/nonexistent"))
    }

    #[test]
    fn empty_file_configures_nothing() {
        let web = parse("").expect("valid");
        assert!(web.tls.is_none() && web.users.is_empty());
        assert_eq!(web.describe(), "plain HTTP, no authentication");
    }

    #[test]
    fn basic_auth_users_need_bcrypt_hashes() {
        let web = parse(&format!("basic_auth_users:\n  prom: '{HASH}'\n")).expect("valid");
        assert_eq!(web.users.len(), 1);
        let err = parse("basic_auth_users:\n  prom: plaintext\n").expect_err("not bcrypt");
        assert!(
            err.contains("not a bcrypt hash") && err.contains("prom"),
            "{err}"
        );
        let err = parse(&format!("basic_auth_users:\n  'a:b': '{HASH}'\n")).expect_err(":");
        assert!(err.contains("not a valid user name"), "{err}");
    }

    #[test]
    fn unknown_and_unsupported_keys_are_refused_by_name() {
        let err = parse("tls_server_confg: {}\n").expect_err("typo");
        assert!(err.contains("tls_server_confg"), "{err}");
        let err = parse("http_server_config:\n  http2: false\n").expect_err("unsupported");
        assert!(err.contains("http_server_config is not supported"), "{err}");
        let err = parse("tls_server_config:\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n")
            .expect_err("unsupported");
        assert!(err.contains("cipher_suites is not supported"), "{err}");
    }

    #[test]
    fn tls_needs_cert_and_key_files_that_exist() {
        let err = parse("tls_server_config:\n  cert_file: a.crt\n").expect_err("no key");
        assert!(err.contains("both cert_file and key_file"), "{err}");
        let err = parse("tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n")
            .expect_err("missing files");
        assert!(err.contains("cert_file /nonexistent/a.crt"), "{err}");
    }

    #[test]
    fn versions_and_client_auth_are_checked() {
        assert_eq!(versions(None, None).expect("default").len(), 2);
        assert_eq!(
            versions(Some(TlsVersion::TLS13), None)
                .expect("1.3 only")
                .len(),
            1
        );
        assert!(versions(Some(TlsVersion::TLS11), None).is_err());
        assert!(versions(Some(TlsVersion::TLS13), Some(TlsVersion::TLS12)).is_err());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let err = client_verifier(
            ClientAuth::RequireAndVerifyClientCert,
            None,
            provider.clone(),
        )
        .expect_err("needs a CA");
        assert!(err.contains("needs client_ca_file"), "{err}");
        let err = client_verifier(ClientAuth::NoClientCert, Some("ca.crt".into()), provider)
            .expect_err("CA without auth type");
        assert!(err.contains("client_auth_type"), "{err}");
    }
}
