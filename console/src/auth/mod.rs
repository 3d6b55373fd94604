//! The console's admin credentials, as the REST API's Basic auth and the pages' sign-in form
//! check them, behind one failed-login backoff per source address ([`throttle`]).

pub mod throttle;

use std::{net::IpAddr, sync::Arc, time::Instant};

use http::HeaderValue;
use scan_engine_protocol::Fingerprint;
use subtle::ConstantTimeEq;

use throttle::{LoginThrottle, Verdict};

/// The admin user and password, kept as SHA-256 digests, and the failed-login backoff
/// ([`throttle`]).
#[derive(Clone)]
pub struct Credentials {
    user: Fingerprint,
    password: Fingerprint,
    throttle: Arc<LoginThrottle>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &"<redacted>")
            .field("password", &"<redacted>")
            .finish()
    }
}

/// SHA-256 of `bytes` (`Fingerprint::of_der` hashes any bytes, not only certificates). Comparing
/// digests takes the same time whatever the length of what a client sent.
fn digest(bytes: &[u8]) -> Fingerprint {
    Fingerprint::of_der(bytes)
}

impl Credentials {
    pub fn new(user: String, password: String) -> Self {
        Self {
            user: digest(user.as_bytes()),
            password: digest(password.as_bytes()),
            throttle: Arc::default(),
        }
    }

    /// Whether an `Authorization` header carries these credentials: the digests of user and
    /// password are compared in constant time, both always.
    fn admit(&self, header: Option<&HeaderValue>) -> bool {
        use base64::Engine as _;
        let Some(value) = header.and_then(|h| h.to_str().ok()) else {
            return false;
        };
        let Some(encoded) = value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
            .map(|(_, rest)| rest.trim())
        else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
            return false;
        };
        let Some(colon) = decoded.iter().position(|&b| b == b':') else {
            return false;
        };
        let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
        self.matches(user, password)
    }

    /// Whether `user` and `password` are these credentials: both digests are compared in
    /// constant time, both always.
    fn matches(&self, user: &[u8], password: &[u8]) -> bool {
        let user_ok = digest(user)
            .as_str()
            .as_bytes()
            .ct_eq(self.user.as_str().as_bytes());
        let password_ok = digest(password)
            .as_str()
            .as_bytes()
            .ct_eq(self.password.as_str().as_bytes());
        (user_ok & password_ok).into()
    }
}

impl Credentials {
    /// A request's `Authorization` header (Basic) from `source`, through the failed-login
    /// backoff.
    pub fn basic(&self, source: IpAddr, header: Option<&HeaderValue>) -> Verdict {
        self.throttle
            .attempt(source, Instant::now(), || self.admit(header))
    }

    /// A sign-in with a user name and password (the web pages' form) from `source`, through
    /// the same failed-login backoff as the API's Basic auth: a guesser gains nothing by
    /// switching between the two.
    pub fn sign_in(&self, source: IpAddr, user: &str, password: &str) -> Verdict {
        self.throttle.attempt(source, Instant::now(), || {
            self.matches(user.as_bytes(), password.as_bytes())
        })
    }
}
