//! Keeping what peers control out of the logs in bulk: strings cut and escaped before they are
//! logged (the protocol's rule), and warnings about refused peers at most once per interval.
//!
//! Both are a few lines; a crate (`governor` for rate limits) would bring far more than the one
//! "at most every N seconds, with a count of what was held back" this engine needs.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// How many characters of a peer-supplied string are logged.
pub const LOGGED_CHARS: usize = 128;

/// `text` cut to `max` characters and escaped so that it stays on one line and cannot forge log
/// lines or reorder what a terminal shows: the protocol's one rule for showing what a peer sent
/// ([`scan_engine_protocol::text::printable`]), shared by console and engine.
pub fn cut(text: &str, max: usize) -> String {
    scan_engine_protocol::text::printable(text, max)
}

/// [`cut`] to [`LOGGED_CHARS`].
pub fn for_log(text: &str) -> String {
    cut(text, LOGGED_CHARS)
}

/// Lets one event through per interval and counts the ones it held back.
#[derive(Debug)]
pub struct RateLimited {
    interval: Duration,
    last: Mutex<Option<Instant>>,
    held_back: AtomicU64,
}

impl RateLimited {
    pub const fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: Mutex::new(None),
            held_back: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when the caller should log now, `n` being how many events were held back since
    /// the last one that was logged; `None` when this one is held back.
    pub fn check(&self) -> Option<u64> {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match *last {
            Some(at) if now.duration_since(at) < self.interval => {
                self.held_back.fetch_add(1, Ordering::Relaxed);
                None
            }
            _ => {
                *last = Some(now);
                Some(self.held_back.swap(0, Ordering::Relaxed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_bounds_and_escapes() {
        assert_eq!(cut("1.2.3", 10), "1.2.3");
        assert_eq!(cut("abcdef", 3), "abc...(3 more bytes)");
        assert_eq!(
            cut("a\nb\"c\u{1b}[31m\u{202e}", 20),
            "a\\nb\\\"c\\u{1b}[31m\\u{202e}"
        );
        let huge = "x".repeat(900 * 1024);
        assert!(for_log(&huge).len() <= LOGGED_CHARS + 32);
    }

    #[test]
    fn rate_limited_lets_one_through_per_interval_and_counts_the_rest() {
        let r = RateLimited::new(Duration::from_secs(3600));
        assert_eq!(r.check(), Some(0));
        for _ in 0..1000 {
            assert_eq!(r.check(), None);
        }
        let r = RateLimited::new(Duration::ZERO);
        assert_eq!(r.check(), Some(0));
        assert_eq!(r.check(), Some(0));
    }
}
