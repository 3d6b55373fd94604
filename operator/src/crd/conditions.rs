//! Kubernetes-style conditions: helpers that keep `lastTransitionTime` stable and compare
//! condition lists without their timestamps.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Condition type shared by both kinds: the resource is usable.
pub const READY: &str = "Ready";
/// kstatus: the operator is still converging (True while not Ready and not Stalled).
pub const RECONCILING: &str = "Reconciling";
/// kstatus: only a spec change or an administrator can help (True with the cause as reason).
pub const STALLED: &str = "Stalled";

/// A condition before it gets its timestamps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cond {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Cond {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }

    pub fn true_(
        type_: &'static str,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(type_, true, reason, message)
    }

    pub fn false_(
        type_: &'static str,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(type_, false, reason, message)
    }
}

/// The kstatus conditions that go with `ready`: `Reconciling` and `Stalled`, at most one of them
/// True, both with `ready`'s reason and message when True. Ready=True: both False. Otherwise
/// `stalled` says whether only a spec change or an administrator can help (Stalled=True), or the
/// operator keeps converging on its own (Reconciling=True). Tools computing kstatus (Flux, Argo
/// CD, kpt) then report Current, Failed and InProgress.
pub fn kstatus(ready: &Cond, stalled: bool) -> [Cond; 2] {
    if ready.status {
        return [
            Cond::false_(RECONCILING, "Reconciled", "the resource is ready"),
            Cond::false_(STALLED, "Reconciled", "the resource is ready"),
        ];
    }
    if stalled {
        [
            Cond::false_(
                RECONCILING,
                "Stalled",
                "the operator cannot make progress on its own: see the Stalled condition",
            ),
            Cond::true_(STALLED, ready.reason.clone(), ready.message.clone()),
        ]
    } else {
        [
            Cond::true_(RECONCILING, ready.reason.clone(), ready.message.clone()),
            Cond::false_(
                STALLED,
                "Progressing",
                "the operator keeps trying on its own",
            ),
        ]
    }
}

fn status_str(status: bool) -> &'static str {
    if status { "True" } else { "False" }
}

/// Builds the new condition list from `desired`, keeping each condition's `lastTransitionTime`
/// from `previous` unless its status changed. Conditions in `previous` of types not in `desired`
/// are dropped. The result is ordered like `desired`.
pub fn merge(
    previous: &[Condition],
    desired: &[Cond],
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    desired
        .iter()
        .map(|d| {
            let status = status_str(d.status);
            let last_transition_time = previous
                .iter()
                .find(|p| p.type_ == d.type_ && p.status == status)
                .map(|p| p.last_transition_time.clone())
                .unwrap_or(Time(now));
            Condition {
                type_: d.type_.to_string(),
                status: status.to_string(),
                reason: d.reason.clone(),
                message: d.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// `previous` with one condition set: the others kept as they are, `cond` replacing the one of
/// its type (keeping its `lastTransitionTime` unless its status changed) or added at the end.
pub fn set(
    previous: &[Condition],
    cond: &Cond,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let new = merge(previous, std::slice::from_ref(cond), generation, now);
    let mut out: Vec<Condition> = previous
        .iter()
        .map(|p| match new.iter().find(|n| n.type_ == p.type_) {
            Some(n) => n.clone(),
            None => p.clone(),
        })
        .collect();
    if !previous.iter().any(|p| p.type_ == cond.type_) {
        out.extend(new);
    }
    out
}

/// True when both lists hold the same conditions, ignoring `lastTransitionTime`.
pub fn same_ignoring_time(a: &[Condition], b: &[Condition]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.type_ == y.type_
                && x.status == y.status
                && x.reason == y.reason
                && x.message == y.message
                && x.observed_generation == y.observed_generation
        })
}

/// The condition of `type_` in `conditions`, if any.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when `conditions` holds `type_` with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn setting_one_condition_keeps_the_others() {
        let before = merge(
            &[],
            &[
                Cond::true_(READY, "Ready", "ok"),
                Cond::true_("ApiReachable", "Reachable", "ok"),
            ],
            Some(1),
            ts(10),
        );
        let cleanup = Cond::false_("ConsoleCleanup", "EnginesRemain", "a, b");
        let after = set(&before, &cleanup, Some(1), ts(20));
        assert_eq!(after.len(), 3);
        assert_eq!(&after[..2], &before[..], "untouched");
        assert_eq!(after[2].reason, "EnginesRemain");
        assert_eq!(after[2].last_transition_time, Time(ts(20)));

        let again = set(
            &after,
            &Cond::false_("ConsoleCleanup", "EnginesRemain", "b"),
            Some(1),
            ts(30),
        );
        assert_eq!(again.len(), 3, "replaced, not added");
        assert_eq!(again[2].message, "b");
        assert_eq!(
            again[2].last_transition_time,
            Time(ts(20)),
            "same status: the transition time stays"
        );
    }

    #[test]
    fn transition_time_changes_only_with_status() {
        let first = merge(
            &[],
            &[Cond::false_(READY, "Pairing", "waiting")],
            Some(1),
            ts(100),
        );
        assert_eq!(first[0].last_transition_time, Time(ts(100)));
        // Same status, new reason and message: time kept.
        let second = merge(
            &first,
            &[Cond::false_(READY, "Down", "console says down")],
            Some(2),
            ts(200),
        );
        assert_eq!(second[0].last_transition_time, Time(ts(100)));
        assert_eq!(second[0].observed_generation, Some(2));
        assert_eq!(second[0].reason, "Down");
        // Status flips: time moves.
        let third = merge(
            &second,
            &[Cond::true_(READY, "Active", "ok")],
            Some(2),
            ts(300),
        );
        assert_eq!(third[0].last_transition_time, Time(ts(300)));
        assert_eq!(third[0].status, "True");
    }

    #[test]
    fn kstatus_conditions_follow_ready() {
        let ready = Cond::true_(READY, "Active", "ok");
        let [r, s] = kstatus(&ready, false);
        assert_eq!((r.status, s.status), (false, false));
        let down = Cond::false_(READY, "Down", "offline");
        let [r, s] = kstatus(&down, false);
        assert_eq!(
            (r.status, r.reason.as_str(), s.status),
            (true, "Down", false)
        );
        let incompatible = Cond::false_(READY, "Incompatible", "versions differ");
        let [r, s] = kstatus(&incompatible, true);
        assert_eq!(
            (r.status, s.status, s.reason.as_str(), s.message.as_str()),
            (false, true, "Incompatible", "versions differ")
        );
        let [r, s] = kstatus(&ready, true);
        assert!(!r.status && !s.status, "Ready wins");
    }

    #[test]
    fn comparison_ignores_time_only() {
        let a = merge(&[], &[Cond::true_(READY, "Active", "ok")], Some(1), ts(1));
        let b = merge(&[], &[Cond::true_(READY, "Active", "ok")], Some(1), ts(2));
        assert!(same_ignoring_time(&a, &b));
        let c = merge(
            &[],
            &[Cond::true_(READY, "Active", "other")],
            Some(1),
            ts(2),
        );
        assert!(!same_ignoring_time(&a, &c));
        let d = merge(&[], &[Cond::true_(READY, "Active", "ok")], Some(2), ts(2));
        assert!(!same_ignoring_time(&a, &d));
        assert!(is_true(&a, READY));
        assert!(!is_true(&a, "Paired"));
    }
}
