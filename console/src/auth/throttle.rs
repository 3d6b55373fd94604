//! Failed-login backoff per source address, so that the API's Basic auth cannot be guessed at
//! thousands of passwords a second.
//!
//! A source gets [`FREE_FAILURES`] wrong logins; every further one blocks it for a delay that
//! doubles from [`FIRST_DELAY`] up to [`MAX_DELAY`]. While blocked, every request from that
//! source is answered `429` with `Retry-After` before its credentials are looked at, so a blocked
//! guesser learns nothing. A right login after the block resets the source. IPv6 sources count by
//! their /64, as one host usually holds a whole /64 (the session listeners' `source_of`). Each block is one warning line with the
//! source and the failure count (never the tried user name or password), so a burst of guesses is
//! one line per block rather than one per guess. The table holds at most [`MAX_SOURCES`] sources;
//! when it is full, the quietest sources are forgotten first.
//!
//! Written by hand rather than with a rate-limiting crate: what is limited is failures, not
//! requests, and the check and the record must be one step under one lock.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use scan_engine_protocol::admission::source_of;

/// Wrong logins a source may make before it is blocked.
pub const FREE_FAILURES: u32 = 5;
/// The first block.
pub const FIRST_DELAY: Duration = Duration::from_secs(1);
/// The longest block.
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// A source with no failure for this long starts afresh.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Sources remembered at once.
const MAX_SOURCES: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    blocked_until: Option<Instant>,
}

/// What [`LoginThrottle::attempt`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The credentials were right.
    Admitted,
    /// The credentials were wrong (401).
    Refused,
    /// The source is blocked for this long; its credentials were not checked (429).
    Blocked(Duration),
}

/// Failed logins by source.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    sources: Mutex<HashMap<IpAddr, Failures>>,
}

/// The block after `count` failures (`count > FREE_FAILURES`).
fn delay_after(count: u32) -> Duration {
    let doublings = count.saturating_sub(FREE_FAILURES + 1).min(16);
    FIRST_DELAY
        .checked_mul(1 << doublings)
        .unwrap_or(MAX_DELAY)
        .min(MAX_DELAY)
}

impl LoginThrottle {
    /// Checks a login from `source` at `now`: refuses it when the source is blocked, otherwise
    /// runs `admit` and records the outcome. Check and record happen under one lock, so parallel
    /// guesses cannot slip past a block.
    pub fn attempt(&self, source: IpAddr, now: Instant, admit: impl FnOnce() -> bool) -> Verdict {
        let key = source_of(source);
        let Ok(mut sources) = self.sources.lock() else {
            // A poisoned table only ever follows a panic elsewhere: stay safe, refuse.
            return Verdict::Blocked(MAX_DELAY);
        };
        if let Some(f) = sources.get(&key)
            && let Some(until) = f.blocked_until
            && until > now
        {
            return Verdict::Blocked(until - now);
        }
        if admit() {
            sources.remove(&key);
            return Verdict::Admitted;
        }
        if !sources.contains_key(&key) && sources.len() >= MAX_SOURCES {
            forget_some(&mut sources, now);
        }
        let f = sources.entry(key).or_insert(Failures {
            count: 0,
            last: now,
            blocked_until: None,
        });
        if now.saturating_duration_since(f.last) > FORGET_AFTER {
            f.count = 0;
        }
        f.count = f.count.saturating_add(1);
        f.last = now;
        if f.count > FREE_FAILURES {
            let delay = delay_after(f.count);
            f.blocked_until = Some(now + delay);
            tracing::warn!(
                source = %key,
                failures = f.count,
                blocked_for_s = delay.as_secs(),
                "failed API logins: source blocked"
            );
        }
        Verdict::Refused
    }

    /// How many sources are remembered (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.sources.lock().map(|s| s.len()).unwrap_or_default()
    }
}

/// Drops forgotten sources, and when none is, the tenth of the table that failed longest ago.
fn forget_some(sources: &mut HashMap<IpAddr, Failures>, now: Instant) {
    sources.retain(|_, f| {
        now.saturating_duration_since(f.last) <= FORGET_AFTER
            || f.blocked_until.is_some_and(|u| u > now)
    });
    if sources.len() < MAX_SOURCES {
        return;
    }
    let mut by_age: Vec<(Instant, IpAddr)> = sources.iter().map(|(k, f)| (f.last, *k)).collect();
    by_age.sort_unstable();
    for (_, key) in by_age.into_iter().take(MAX_SOURCES / 10) {
        sources.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn a_guesser_is_blocked_with_doubling_delays_and_others_are_not() {
        let t = LoginThrottle::default();
        let start = Instant::now();
        for _ in 0..FREE_FAILURES {
            assert_eq!(t.attempt(A, start, || false), Verdict::Refused);
        }
        // The next failure starts a block of FIRST_DELAY.
        assert_eq!(t.attempt(A, start, || false), Verdict::Refused);
        let mut checked = false;
        assert_eq!(
            t.attempt(A, start, || {
                checked = true;
                true
            }),
            Verdict::Blocked(FIRST_DELAY)
        );
        assert!(!checked, "a blocked source's credentials are not checked");
        // Another source is not affected.
        assert_eq!(t.attempt(B, start, || true), Verdict::Admitted);
        // After the block, one more failure doubles it.
        let later = start + FIRST_DELAY;
        assert_eq!(t.attempt(A, later, || false), Verdict::Refused);
        assert_eq!(
            t.attempt(A, later, || true),
            Verdict::Blocked(FIRST_DELAY * 2)
        );
        // The right password after the block is admitted and resets the source.
        let after = later + FIRST_DELAY * 2;
        assert_eq!(t.attempt(A, after, || true), Verdict::Admitted);
        assert_eq!(t.attempt(A, after, || false), Verdict::Refused);
    }

    #[test]
    fn the_delay_is_capped() {
        assert_eq!(delay_after(FREE_FAILURES + 1), FIRST_DELAY);
        assert_eq!(delay_after(FREE_FAILURES + 2), FIRST_DELAY * 2);
        assert_eq!(delay_after(1_000), MAX_DELAY);
        assert_eq!(delay_after(u32::MAX), MAX_DELAY);
    }

    #[test]
    fn ipv6_sources_count_by_their_64() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        for i in 0..=FREE_FAILURES {
            let ip: IpAddr = format!("2001:db8::{i:x}").parse().unwrap();
            t.attempt(ip, now, || false);
        }
        let other: IpAddr = "2001:db8::ffff".parse().unwrap();
        assert!(matches!(
            t.attempt(other, now, || true),
            Verdict::Blocked(_)
        ));
        let elsewhere: IpAddr = "2001:db8:1::1".parse().unwrap();
        assert_eq!(t.attempt(elsewhere, now, || true), Verdict::Admitted);
    }

    #[test]
    fn the_table_stays_bounded() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        for i in 0..(MAX_SOURCES as u32 + 500) {
            t.attempt(IpAddr::V4(i.into()), now, || false);
        }
        assert!(t.len() <= MAX_SOURCES, "{}", t.len());
    }
}
