//! A throw-away certificate authority and server certificate made with the
//! `openssl` command (not with the crates under test), for the TLS tests.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

pub struct TestPki {
    pub dir: PathBuf,
    /// The CA certificate clients trust.
    pub ca: PathBuf,
    /// The server's certificate (SAN 127.0.0.1) and key.
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl (Debian package openssl; `cargo xtask test` installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestPki {
    /// Makes a CA and a server certificate for 127.0.0.1 under a new
    /// directory named after `tag`.
    pub fn new(tag: &str) -> TestPki {
        let dir = std::env::temp_dir().join(format!("tracer-pki-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("pki dir");
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        openssl(
            &dir,
            &[
                &["req", "-x509", "-nodes"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.crt",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=tracer test CA",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            ]
            .concat(),
        );
        openssl(
            &dir,
            &[
                &["req", "-nodes"][..],
                &ec,
                &[
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                    "-subj",
                    "/CN=127.0.0.1",
                ],
            ]
            .concat(),
        );
        std::fs::write(
            dir.join("server.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n",
        )
        .expect("ext file");
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ],
        );
        TestPki {
            ca: dir.join("ca.crt"),
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
            dir,
        }
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A bcrypt hash of `password` made by `htpasswd` (Debian package
/// apache2-utils), the tool the exporters' docs suggest.
pub fn htpasswd_hash(password: &str) -> String {
    htpasswd_hash_with_cost(password, 6)
}

/// [`htpasswd_hash`] at a given bcrypt cost.
pub fn htpasswd_hash_with_cost(password: &str, cost: u32) -> String {
    let out = Command::new("htpasswd")
        .args(["-nbBC", &cost.to_string(), "", password])
        .output()
        .expect("htpasswd (Debian package apache2-utils; `cargo xtask test` installs it)");
    assert!(out.status.success(), "htpasswd failed");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches(':')
        .to_owned()
}
