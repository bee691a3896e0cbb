//! HTTP basic auth against the web config's bcrypt hashes.
//!
//! bcrypt is slow on purpose (tens of milliseconds at cost 10), so:
//! * a password that verified once is remembered for its user until the
//!   config changes, and checked in constant time: a scrape every 15 s does
//!   not cost a bcrypt each;
//! * at most one bcrypt runs at a time, off the async threads, so a flood of
//!   wrong passwords costs one core at most and never stalls the event loop;
//! * an unknown user costs a bcrypt too, so timing does not reveal names.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, PoisonError},
};

use axum::http::{HeaderMap, header};
use base64::Engine as _;
use tokio::sync::Semaphore;

/// Checked against when the user is unknown, so that both paths cost the same.
const DUMMY_HASH: &str = "$2y$10$yzCNyqBf5LKcqtHERb0Lo.w1Rfs0ryoT5IS7GlYE/hXJBMGx95o1G";

pub struct BasicAuth {
    users: BTreeMap<String, String>,
    /// Passwords that verified, by user (cleared with the config).
    verified: Mutex<HashMap<String, Vec<u8>>>,
    bcrypt_slots: Semaphore,
}

impl BasicAuth {
    pub fn new(users: BTreeMap<String, String>) -> BasicAuth {
        BasicAuth {
            users,
            verified: Mutex::new(HashMap::new()),
            bcrypt_slots: Semaphore::new(1),
        }
    }

    /// True when the request's `Authorization` header names a configured
    /// user with the right password.
    pub async fn allows(&self, headers: &HeaderMap) -> bool {
        let Some((user, password)) = credentials(headers) else {
            return false;
        };
        if self.remembered(&user, &password) {
            return true;
        }
        let hash = self
            .users
            .get(&user)
            .cloned()
            .unwrap_or_else(|| DUMMY_HASH.to_owned());
        let known = self.users.contains_key(&user);
        let Ok(_slot) = self.bcrypt_slots.acquire().await else {
            return false;
        };
        let password_copy = password.clone();
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(&password_copy, &hash))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        if ok && known {
            self.verified
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(user, password);
        }
        ok && known
    }

    fn remembered(&self, user: &str, password: &[u8]) -> bool {
        let verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        verified
            .get(user)
            .is_some_and(|known| constant_time_eq(known, password))
    }
}

/// User and password from `Authorization: Basic base64(user:password)`.
fn credentials(headers: &HeaderMap) -> Option<(String, Vec<u8>)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Shared by the connections of one web config.
pub type SharedAuth = Arc<BasicAuth>;

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn header(user_password: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let encoded = base64::engine::general_purpose::STANDARD.encode(user_password);
        let value = HeaderValue::from_str(&format!("Basic {encoded}")).expect("header");
        headers.insert(header::AUTHORIZATION, value);
        headers
    }

    fn auth() -> BasicAuth {
        let hash = bcrypt::hash("s3cret:with colon", 4).expect("hash");
        BasicAuth::new(BTreeMap::from([("prom".to_owned(), hash)]))
    }

    #[tokio::test]
    async fn right_password_passes_and_is_remembered() {
        let auth = auth();
        assert!(auth.allows(&header("prom:s3cret:with colon")).await);
        assert!(auth.remembered("prom", b"s3cret:with colon"));
        assert!(auth.allows(&header("prom:s3cret:with colon")).await);
    }

    #[tokio::test]
    async fn wrong_password_unknown_user_and_junk_fail() {
        let auth = auth();
        assert!(!auth.allows(&header("prom:s3cret")).await);
        assert!(!auth.allows(&header("other:s3cret:with colon")).await);
        assert!(!auth.allows(&header("no colon at all")).await);
        assert!(!auth.allows(&HeaderMap::new()).await);
        let mut bearer = HeaderMap::new();
        bearer.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert!(!auth.allows(&bearer).await);
        let mut junk = HeaderMap::new();
        junk.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic %%%"));
        assert!(!auth.allows(&junk).await);
        assert!(!auth.remembered("prom", b"s3cret"));
    }

    #[test]
    fn the_dummy_hash_is_a_real_bcrypt_hash() {
        assert!(DUMMY_HASH.parse::<bcrypt::HashParts>().is_ok());
        assert_eq!(
            DUMMY_HASH
                .parse::<bcrypt::HashParts>()
                .expect("hash")
                .get_cost(),
            10
        );
    }
}
