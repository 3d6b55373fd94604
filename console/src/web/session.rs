//! Signed-in sessions of the web pages.
//!
//! A session is a random token in a cookie (`__Host-` prefixed, `HttpOnly`, `Secure`,
//! `SameSite=Strict`, `Path=/`) and, on the console's side, the token's SHA-256 digest with the
//! session's CSRF token and the time it was last used. A session unused for
//! [`IDLE_TIMEOUT`] ends; signing out ends it at once. Every state-changing form carries the
//! session's CSRF token, compared in constant time. The sign-in form has its own pre-session
//! token (a cookie and a hidden field that must match).
//!
//! Sessions live in memory: a restarted console signs everyone out. At most [`MAX_SESSIONS`]
//! exist at once; when full, the one idle longest ends.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::http::{HeaderMap, HeaderValue, header};
use rand::RngCore;
use scan_engine_protocol::{Fingerprint, SharedSecret};
use subtle::ConstantTimeEq;

/// The session cookie.
pub const COOKIE: &str = "__Host-console-session";
/// The sign-in form's pre-session cookie.
pub const SIGN_IN_COOKIE: &str = "__Host-console-sign-in";
/// A session unused this long ends.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Sessions at once.
pub const MAX_SESSIONS: usize = 1024;

/// What a page shows once, after the redirect that follows a form.
#[derive(Clone)]
pub enum Flash {
    /// A sentence about what just happened.
    Notice(String),
    /// A problem with what just happened.
    Problem(String),
    /// A freshly generated shared secret, with when it expires (console clock, ms).
    Secret {
        value: SharedSecret,
        expires_at: i64,
    },
}

#[derive(Clone)]
struct Entry {
    csrf: String,
    last_seen: Instant,
    flash: Vec<Flash>,
}

/// The signed-in sessions.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

/// A request's session.
#[derive(Clone)]
pub struct SignedIn {
    key: String,
    /// The token every form of this session carries.
    pub csrf: String,
}

impl std::fmt::Debug for SignedIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignedIn(<redacted>)")
    }
}

/// A random token: 32 bytes, hex.
pub fn token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn key_of(token: &str) -> String {
    Fingerprint::of_der(token.as_bytes()).as_str().to_owned()
}

/// Whether two tokens are equal, in constant time (for equal lengths).
pub fn same_token(a: &str, b: &str) -> bool {
    !a.is_empty() && a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // The map is consistent after any panic; keep serving.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a session; returns the cookie's token.
    pub fn start(&self, now: Instant) -> String {
        let token = token();
        let mut map = self.lock();
        map.retain(|_, e| now.saturating_duration_since(e.last_seen) < IDLE_TIMEOUT);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, e)| e.last_seen)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(
            key_of(&token),
            Entry {
                csrf: self::token(),
                last_seen: now,
                flash: Vec::new(),
            },
        );
        token
    }

    /// The session of `token`, if it exists and has not been idle too long; using it counts
    /// as activity.
    pub fn find(&self, token: &str, now: Instant) -> Option<SignedIn> {
        let key = key_of(token);
        let mut map = self.lock();
        let entry = map.get_mut(&key)?;
        if now.saturating_duration_since(entry.last_seen) >= IDLE_TIMEOUT {
            map.remove(&key);
            return None;
        }
        entry.last_seen = now;
        Some(SignedIn {
            csrf: entry.csrf.clone(),
            key,
        })
    }

    /// Ends a session.
    pub fn end(&self, session: &SignedIn) {
        self.lock().remove(&session.key);
    }

    /// Keeps something for the session's next page.
    pub fn flash(&self, session: &SignedIn, flash: Flash) {
        if let Some(e) = self.lock().get_mut(&session.key) {
            // Bounded: a page shows a few at most.
            if e.flash.len() >= 8 {
                e.flash.remove(0);
            }
            e.flash.push(flash);
        }
    }

    /// Takes what was kept for this page.
    pub fn take_flash(&self, session: &SignedIn) -> Vec<Flash> {
        self.lock()
            .get_mut(&session.key)
            .map(|e| std::mem::take(&mut e.flash))
            .unwrap_or_default()
    }

    /// Sessions at present (tests).
    #[cfg(test)]
    pub fn count(&self) -> usize {
        self.lock().len()
    }
}

/// A cookie's value from a request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// A `Set-Cookie` value for one of our cookies. `max_age` zero deletes it; `None` makes it a
/// browser-session cookie.
pub fn set_cookie(name: &str, value: &str, max_age: Option<Duration>) -> HeaderValue {
    let mut s = format!("{name}={value}; Path=/; HttpOnly; Secure; SameSite=Strict");
    if let Some(age) = max_age {
        s.push_str(&format!("; Max-Age={}", age.as_secs()));
    }
    // Tokens are hex: always a valid header value.
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_ends_when_idle_or_signed_out() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let token = s.start(t0);
        let a = s.find(&token, t0 + IDLE_TIMEOUT / 2).expect("in use");
        // Activity moved the deadline.
        assert!(
            s.find(&token, t0 + IDLE_TIMEOUT + IDLE_TIMEOUT / 4)
                .is_some()
        );
        assert!(s.find("not-a-token", t0).is_none());
        s.end(&a);
        assert!(s.find(&token, t0 + IDLE_TIMEOUT / 2).is_none());

        let idle = s.start(t0);
        assert!(s.find(&idle, t0 + IDLE_TIMEOUT).is_none());
        assert_eq!(s.count(), 0);
    }

    #[test]
    fn the_table_is_bounded() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let first = s.start(t0);
        for i in 0..MAX_SESSIONS {
            s.start(t0 + Duration::from_millis(i as u64 + 1));
        }
        assert_eq!(s.count(), MAX_SESSIONS);
        assert!(s.find(&first, t0 + Duration::from_secs(1)).is_none());
    }

    #[test]
    fn cookies_are_read_and_written_strictly() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-console-session=abc ; b=2"),
        );
        assert_eq!(cookie(&h, COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
        let v = set_cookie(COOKIE, "abc", None);
        let v = v.to_str().unwrap();
        for part in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
            assert!(v.contains(part), "{v}");
        }
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("", ""));
    }
}
