//! What a listener grants a peer before it knows who the peer is: a connection slot, bounded
//! per source and in total, and at most one log line per burst when it refuses.
//!
//! Both session listeners (the console's 40815, the engine's 40814) hold every connection that
//! has not been admitted yet in a [`Slot`]. One source can hold at most
//! [`Limits::per_source`] of them, so a single attacker flooding idle or half-sent
//! connections leaves the remaining slots to everyone else; the total bounds memory and file
//! descriptors when many sources join in. Slots are held only until admission (a short
//! deadline applies to that), so an admitted session never counts against its source.
//!
//! A source is an IPv4 address, or the /64 prefix of an IPv6 address (one host usually holds a
//! whole /64, so counting single IPv6 addresses would give it billions of slots).
//!
//! Refusals and failed admissions are logged through a [`BurstLog`]: the first one at once,
//! then one summary line with a count per window, instead of a warning per dropped
//! connection. Neither the slot map nor the log limiter exists as a maintained crate in this
//! shape (tower's limits are global, `governor` limits rates, not concurrency), and each is a
//! few lines.

use std::{
    collections::HashMap,
    fmt::Display,
    net::{IpAddr, Ipv6Addr},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

/// How many unadmitted connections a listener holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// In total, whatever their source.
    pub total: usize,
    /// From one source (an IPv4 address or an IPv6 /64).
    pub per_source: usize,
}

/// Why a connection got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("too many connections awaiting admission from this source")]
    PerSource,
    #[error("too many connections awaiting admission")]
    Total,
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

/// The slots of one listener.
#[derive(Debug, Clone)]
pub struct Slots {
    limits: Limits,
    held: Arc<Mutex<Held>>,
}

/// One granted slot; dropping it frees it.
#[derive(Debug)]
pub struct Slot {
    held: Arc<Mutex<Held>>,
    source: IpAddr,
}

/// The key `ip` is counted under.
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

fn lock(held: &Mutex<Held>) -> MutexGuard<'_, Held> {
    // The counters stay consistent even if a holder panicked: every update is one step.
    held.lock().unwrap_or_else(|p| p.into_inner())
}

impl Slots {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            held: Arc::default(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// A slot for a connection from `ip`, or why there is none.
    pub fn try_acquire(&self, ip: IpAddr) -> Result<Slot, Refusal> {
        let source = source_of(ip);
        let mut held = lock(&self.held);
        let from_source = held.by_source.get(&source).copied().unwrap_or(0);
        if from_source >= self.limits.per_source {
            return Err(Refusal::PerSource);
        }
        if held.total >= self.limits.total {
            return Err(Refusal::Total);
        }
        held.total += 1;
        held.by_source.insert(source, from_source + 1);
        Ok(Slot {
            held: self.held.clone(),
            source,
        })
    }

    /// Slots held now.
    pub fn in_use(&self) -> usize {
        lock(&self.held).total
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = lock(&self.held);
        held.total = held.total.saturating_sub(1);
        if let Some(n) = held.by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                held.by_source.remove(&self.source);
            }
        }
    }
}

/// Longest reason a [`BurstLog`] line repeats, in characters.
const MAX_REASON_CHARS: usize = 200;

#[derive(Debug, Default)]
struct Burst {
    last_line: Option<Instant>,
    pending: u64,
    last_source: Option<IpAddr>,
    last_reason: String,
}

/// One line to write.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    count: u64,
    source: Option<IpAddr>,
    reason: String,
}

/// Logs refused or dropped peers at most once per window, with a count.
#[derive(Debug)]
pub struct BurstLog {
    what: &'static str,
    window: Duration,
    burst: Mutex<Burst>,
}

impl BurstLog {
    /// A log for `what` ("engine connections refused", say), one line per `window`.
    pub fn new(what: &'static str, window: Duration) -> Self {
        Self {
            what,
            window,
            burst: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Burst> {
        self.burst.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one refused peer; writes a line when none was written this window.
    pub fn record(&self, source: IpAddr, reason: &dyn Display) {
        if let Some(line) = self.note(Instant::now(), source, reason) {
            self.write(&line);
        }
    }

    /// Writes the count of refusals not yet logged, once the window has passed. Listeners
    /// call this every window, so the end of a burst is logged too.
    pub fn flush(&self) {
        if let Some(line) = self.due(Instant::now()) {
            self.write(&line);
        }
    }

    fn note(&self, now: Instant, source: IpAddr, reason: &dyn Display) -> Option<Line> {
        let mut b = self.lock();
        b.pending += 1;
        b.last_source = Some(source);
        b.last_reason = crate::text::printable(&reason.to_string(), MAX_REASON_CHARS);
        Self::take_if_due(&mut b, now, self.window)
    }

    fn due(&self, now: Instant) -> Option<Line> {
        let mut b = self.lock();
        if b.pending == 0 {
            return None;
        }
        Self::take_if_due(&mut b, now, self.window)
    }

    fn take_if_due(b: &mut Burst, now: Instant, window: Duration) -> Option<Line> {
        if b.last_line.is_some_and(|t| now.duration_since(t) < window) {
            return None;
        }
        b.last_line = Some(now);
        let line = Line {
            count: b.pending,
            source: b.last_source,
            reason: std::mem::take(&mut b.last_reason),
        };
        b.pending = 0;
        Some(line)
    }

    fn write(&self, line: &Line) {
        let source = line.source.map(|s| s.to_string()).unwrap_or_default();
        tracing::warn!(
            count = line.count,
            last_source = %source,
            last_reason = %line.reason,
            window = ?self.window,
            "{} (at most one line per window)",
            self.what
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_source_cannot_take_every_slot() {
        let slots = Slots::new(Limits {
            total: 10,
            per_source: 3,
        });
        let attacker: Vec<_> = (0..3)
            .map(|_| slots.try_acquire(ip("10.0.0.66")).unwrap())
            .collect();
        assert_eq!(
            slots.try_acquire(ip("10.0.0.66")).unwrap_err(),
            Refusal::PerSource
        );
        // The same host through an IPv4-mapped address is the same source.
        assert_eq!(
            slots.try_acquire(ip("::ffff:10.0.0.66")).unwrap_err(),
            Refusal::PerSource
        );
        let engine = slots.try_acquire(ip("10.0.0.7")).unwrap();
        assert_eq!(slots.in_use(), 4);
        drop(attacker);
        drop(engine);
        assert_eq!(slots.in_use(), 0);
        assert!(slots.try_acquire(ip("10.0.0.66")).is_ok());
    }

    #[test]
    fn the_total_bounds_many_sources() {
        let slots = Slots::new(Limits {
            total: 4,
            per_source: 2,
        });
        let _held: Vec<_> = (1..=4)
            .map(|i| slots.try_acquire(ip(&format!("10.0.0.{i}"))).unwrap())
            .collect();
        assert_eq!(
            slots.try_acquire(ip("10.0.0.9")).unwrap_err(),
            Refusal::Total
        );
    }

    #[test]
    fn an_ipv6_host_counts_as_its_64() {
        let slots = Slots::new(Limits {
            total: 10,
            per_source: 2,
        });
        let _a = slots.try_acquire(ip("2001:db8:1:2::1")).unwrap();
        let _b = slots.try_acquire(ip("2001:db8:1:2::ffff:1")).unwrap();
        assert_eq!(
            slots.try_acquire(ip("2001:db8:1:2:abcd::9")).unwrap_err(),
            Refusal::PerSource
        );
        assert!(slots.try_acquire(ip("2001:db8:1:3::1")).is_ok());
    }

    #[test]
    fn a_burst_of_refusals_is_one_line_per_window_with_its_count() {
        let log = BurstLog::new("refused", Duration::from_secs(10));
        let t0 = Instant::now();
        let src = ip("10.0.0.66");
        // The first refusal is written at once.
        let first = log.note(t0, src, &"full").unwrap();
        assert_eq!(first.count, 1);
        // The next 999 within the window are only counted...
        for i in 1..1000u64 {
            let at = t0 + Duration::from_millis(i * 5);
            assert_eq!(log.note(at, src, &"full"), None);
        }
        assert_eq!(log.due(t0 + Duration::from_secs(9)), None);
        // ...and written as one line once the window has passed.
        let summary = log.due(t0 + Duration::from_secs(10)).unwrap();
        assert_eq!((summary.count, summary.source), (999, Some(src)));
        assert_eq!(log.due(t0 + Duration::from_secs(30)), None);
        // A refusal after a quiet window is written at once again.
        assert_eq!(
            log.note(t0 + Duration::from_secs(31), src, &"x")
                .unwrap()
                .count,
            1
        );
    }

    #[test]
    fn a_reason_quoting_a_peer_is_cut() {
        let log = BurstLog::new("refused", Duration::from_secs(10));
        let line = log
            .note(Instant::now(), ip("10.0.0.66"), &"v".repeat(100_000))
            .unwrap();
        assert!(line.reason.len() < MAX_REASON_CHARS + 40);
    }
}
