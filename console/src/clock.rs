//! Time as the console sees it: Unix milliseconds from an injectable clock, so that expiry and
//! state thresholds are tested without sleeping.

use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// Where "now" comes from.
#[derive(Clone)]
pub struct Clock(Source);

#[derive(Clone)]
enum Source {
    System,
    Manual(Arc<AtomicI64>),
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Source::System => f.write_str("Clock(system)"),
            Source::Manual(t) => write!(f, "Clock(manual {})", t.load(Ordering::SeqCst)),
        }
    }
}

impl Clock {
    /// The wall clock.
    pub fn system() -> Self {
        Self(Source::System)
    }

    /// A clock that only moves when told to (tests).
    pub fn manual(start: Millis) -> Self {
        Self(Source::Manual(Arc::new(AtomicI64::new(start))))
    }

    /// Now, in Unix milliseconds.
    pub fn now(&self) -> Millis {
        match &self.0 {
            Source::System => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
            Source::Manual(t) => t.load(Ordering::SeqCst),
        }
    }

    /// Moves a manual clock forward (no effect on the system clock).
    pub fn advance(&self, by: std::time::Duration) {
        if let Source::Manual(t) = &self.0 {
            t.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
        }
    }
}

/// RFC 3339 (`2026-01-01T00:00:00Z`) form of a Unix-milliseconds time.
pub fn rfc3339(ms: Millis) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339_in_utc_seconds() {
        assert_eq!(rfc3339(1_767_225_600_123), "2026-01-01T00:00:00Z");
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = Clock::manual(1000);
        assert_eq!(c.now(), 1000);
        c.advance(std::time::Duration::from_secs(2));
        assert_eq!(c.now(), 3000);
    }
}
