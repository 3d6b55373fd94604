//! The communication state the console reports for an engine, as a pure function of what it
//! last observed and the time (docs/contracts.md §4, the seeds' colour codes).

use std::time::Duration;

use crate::{
    clock::Millis,
    store::{Direction, EngineRecord, Outcome},
};

/// The API's `status` values (the spec's `ScanEngine.status` enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineStatus {
    /// Recent successful exchange (green).
    Active,
    /// No error recorded, but a significant lapse since the last exchange (orange).
    Unknown,
    /// The engine has not enabled this console (red).
    PendingAuthorization,
    /// Different product versions (red).
    Incompatible,
    /// Down: cannot be reached, or has not called (red).
    NotResponding,
}

impl EngineStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EngineStatus::Active => "active",
            EngineStatus::Unknown => "unknown",
            EngineStatus::PendingAuthorization => "pending-authorization",
            EngineStatus::Incompatible => "incompatible-version",
            EngineStatus::NotResponding => "not-responding",
        }
    }
}

/// When quiet engines change state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Lapse after which an engine with no recorded error is `unknown`.
    pub unknown_after: Duration,
    /// Lapse after which an engine-to-console engine that has not called is `not-responding`.
    pub down_after: Duration,
}

/// The state of `engine` at `now`.
///
/// * a recorded version mismatch, missing authorization or failure wins;
/// * after a success: `active` until `unknown_after` has passed without another one, then
///   `unknown`; an engine-to-console engine that stays silent past `down_after` is
///   `not-responding` (it has not called);
/// * a console-to-engine engine not contacted yet is `unknown`.
pub fn status(engine: &EngineRecord, now: Millis, t: &Thresholds) -> EngineStatus {
    match engine.outcome {
        Outcome::Incompatible => EngineStatus::Incompatible,
        Outcome::PendingAuthorization => EngineStatus::PendingAuthorization,
        Outcome::Unreachable => EngineStatus::NotResponding,
        Outcome::None => EngineStatus::Unknown,
        Outcome::Ok => {
            let lapse = now
                .saturating_sub(engine.last_contact.unwrap_or(i64::MIN / 2))
                .max(0) as u128;
            if engine.direction == Direction::EngineToConsole && lapse > t.down_after.as_millis() {
                EngineStatus::NotResponding
            } else if lapse > t.unknown_after.as_millis() {
                EngineStatus::Unknown
            } else {
                EngineStatus::Active
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds {
        unknown_after: Duration::from_secs(90),
        down_after: Duration::from_secs(300),
    };

    fn engine(
        direction: Direction,
        outcome: Outcome,
        last_contact: Option<Millis>,
    ) -> EngineRecord {
        EngineRecord {
            id: 1,
            name: "e".into(),
            address: "a".into(),
            port: 40814,
            direction,
            fingerprint: None,
            cert_pem: None,
            product_version: None,
            last_refreshed: None,
            last_updated: 0,
            last_contact,
            outcome,
            message: String::new(),
        }
    }

    #[test]
    fn state_table() {
        use Direction::*;
        use EngineStatus::*;
        use Outcome as O;
        let s = 1000;
        let now = 1_000_000;
        #[rustfmt::skip]
        let table: &[(Direction, Outcome, Option<Millis>, EngineStatus)] = &[
            (ConsoleToEngine, O::Ok, Some(now), Active),
            (ConsoleToEngine, O::Ok, Some(now - 90 * s), Active),
            (ConsoleToEngine, O::Ok, Some(now - 91 * s), Unknown),
            (ConsoleToEngine, O::Ok, Some(now - 301 * s), Unknown),
            (EngineToConsole, O::Ok, Some(now - 30 * s), Active),
            (EngineToConsole, O::Ok, Some(now - 91 * s), Unknown),
            (EngineToConsole, O::Ok, Some(now - 300 * s), Unknown),
            (EngineToConsole, O::Ok, Some(now - 301 * s), NotResponding),
            (EngineToConsole, O::Ok, None, NotResponding),
            (ConsoleToEngine, O::None, None, Unknown),
            (ConsoleToEngine, O::PendingAuthorization, Some(now), PendingAuthorization),
            (ConsoleToEngine, O::Incompatible, Some(now), Incompatible),
            (EngineToConsole, O::Incompatible, None, Incompatible),
            (ConsoleToEngine, O::Unreachable, Some(now), NotResponding),
            (EngineToConsole, O::Unreachable, Some(now), NotResponding),
            // A clock that went backwards does not make an engine look stale.
            (ConsoleToEngine, O::Ok, Some(now + 10 * s), Active),
        ];
        for (direction, outcome, contact, want) in table {
            let e = engine(*direction, *outcome, *contact);
            assert_eq!(
                status(&e, now, &T),
                *want,
                "{direction:?} {outcome:?} {contact:?}"
            );
        }
    }

    #[test]
    fn api_spellings() {
        let all = [
            EngineStatus::Active,
            EngineStatus::Unknown,
            EngineStatus::PendingAuthorization,
            EngineStatus::Incompatible,
            EngineStatus::NotResponding,
        ];
        let names: Vec<_> = all.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "active",
                "unknown",
                "pending-authorization",
                "incompatible-version",
                "not-responding"
            ]
        );
    }
}
