//! Status: map what the console reports, what the engine's pod says and what kept the
//! reconcile from finishing to the ScanEngine's status and conditions (pure), and decide whether
//! it changed enough to write.
//!
//! `Ready` says why in its reason, first match wins: a [`Problem`] of the reconcile (a missing
//! Console, a child object the API server refused, the console API failing, …); the console
//! reporting the engine Active (Ready=True); a [`PodCause`] (the pod cannot be scheduled, its
//! image cannot be pulled, it crash loops); the console's state. `Reconciling` and `Stalled`
//! follow (see [`conditions::kstatus`]); docs/status.md has the whole table.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::build::config::MemoryReservation;
use super::pods::PodCause;
use crate::console_api::Engine;
use crate::crd::conditions::{self, Cond, READY};
use crate::crd::scan_engine::{Authorization, CommunicationStatus};
use crate::crd::{Communication, EngineState, ScanEngine, ScanEngineStatus};

pub const PAIRED: &str = "Paired";
pub const AUTHORIZED: &str = "Authorized";
pub const VERSION_COMPATIBLE: &str = "VersionCompatible";
pub const NETWORK_POLICY_READY: &str = "NetworkPolicyReady";
pub const MEMORY_RESERVED: &str = "MemoryReserved";
pub const CONSOLE_CLEANUP: &str = "ConsoleCleanup";

/// Ready reason: the API server refused a child object (its answer, naming the field, follows).
pub const CHILD_REJECTED: &str = "ChildRejected";
/// Ready reason: `spec.consoleRef` names no Console.
pub const CONSOLE_NOT_FOUND: &str = "ConsoleNotFound";

/// The Ready reasons that name a cause outside the console's view, each announced by a Warning
/// event of the same reason when Ready takes it.
pub const WARNING_CAUSES: [&str; 5] = [
    super::pods::POD_UNSCHEDULABLE,
    super::pods::IMAGE_PULL_FAILED,
    super::pods::CRASH_LOOPING,
    CHILD_REJECTED,
    CONSOLE_NOT_FOUND,
];

/// The reason and message of `status`'s Ready condition when it is one of [`WARNING_CAUSES`].
pub fn warning_cause(status: &ScanEngineStatus) -> Option<(&str, &str)> {
    conditions::find(&status.conditions, READY)
        .filter(|c| c.status == "False" && WARNING_CAUSES.contains(&c.reason.as_str()))
        .map(|c| (c.reason.as_str(), c.message.as_str()))
}

/// Something that kept the reconcile from finishing, shown in the conditions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub reason: String,
    pub message: String,
    /// Only a spec change or an administrator can help (kstatus `Stalled`).
    pub stalled: bool,
}

impl Problem {
    /// A problem the operator gets past on its own (it retries).
    pub fn transient(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            message: message.into(),
            stalled: false,
        }
    }
}

/// Everything the status is computed from.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    pub engine: &'a ScanEngine,
    pub communication: Communication,
    /// The console's registration of the engine, if any.
    pub registration: Option<&'a Engine>,
    /// Product version of the console.
    pub console_version: Option<&'a str>,
    /// Whether the NetworkPolicy was applied in this reconcile.
    pub policy_applied: bool,
    pub memory: Option<&'a MemoryReservation>,
    /// Why the reconcile could not complete.
    pub problem: Option<Problem>,
    /// Why the engine's pod does not run, if it says so.
    pub pod: Option<PodCause>,
    /// Refresh annotation value handled now (or earlier).
    pub handled_refresh: Option<String>,
    pub now: Timestamp,
}

/// The communication state: Pairing until the console knows the engine.
pub fn state(registration: Option<&Engine>) -> EngineState {
    registration.map_or(EngineState::Pairing, |e| {
        EngineState::from_api(e.status.as_deref().unwrap_or("unknown"))
    })
}

fn parse_time(s: Option<&str>) -> Option<Time> {
    s.and_then(|s| s.parse::<Timestamp>().ok()).map(Time)
}

/// Computes the new status.
pub fn compute(o: &Observed<'_>) -> ScanEngineStatus {
    let previous = o.engine.status.clone().unwrap_or_default();
    let generation = o.engine.metadata.generation;
    let state = state(o.registration);
    let console_message = o.registration.and_then(|e| e.message.clone());
    let console_name = &o.engine.spec.console_ref.name;

    let mut conds = Vec::new();

    // Ready: the console sees the engine Active; otherwise the first cause found says why.
    // What the pod says counts only while the console does not see the engine Active.
    let pod = o.pod.as_ref().filter(|_| state != EngineState::Active);
    let (ready, stalled) = match (&o.problem, state, pod) {
        (Some(p), _, _) => (
            Cond::false_(READY, p.reason.clone(), p.message.clone()),
            p.stalled,
        ),
        (None, EngineState::Active, _) => (
            Cond::true_(READY, "Active", "the console reports the engine active"),
            false,
        ),
        (None, _, Some(c)) => (Cond::false_(READY, c.reason, c.message.clone()), c.stalled),
        (None, s, None) => (
            Cond::false_(READY, s.as_str(), state_message(o, s)),
            // Only an administrator can help: the versions must match, or consoles.xml be
            // edited on the engine's volume.
            s == EngineState::Incompatible
                || (s == EngineState::PendingAuthorization
                    && o.engine.spec.authorization == Authorization::Manual),
        ),
    };
    let message = ready.message.clone();
    let [reconciling, stalled] = conditions::kstatus(&ready, stalled);
    conds.extend([ready, reconciling, stalled]);

    conds.push(match o.registration {
        Some(e) => Cond::true_(PAIRED, "Registered", format!("registered at Console {console_name} as engine {}", e.id)),
        None => match &o.problem {
            Some(p) => Cond::false_(PAIRED, p.reason.clone(), p.message.clone()),
            None => match o.communication {
                Communication::EngineToConsole => Cond::false_(
                    PAIRED,
                    "WaitingForEngine",
                    format!("waiting for the engine to pair itself with Console {console_name} on its engine listener"),
                ),
                Communication::ConsoleToEngine => {
                    Cond::false_(PAIRED, "Registering", format!("registering the engine at Console {console_name}"))
                }
            },
        },
    });

    conds.push(match state {
        EngineState::PendingAuthorization => Cond::false_(
            AUTHORIZED,
            "PendingAuthorization",
            state_message(o, EngineState::PendingAuthorization),
        ),
        EngineState::Pairing => {
            Cond::false_(AUTHORIZED, "NotPaired", "the engine is not paired yet")
        }
        EngineState::Incompatible => Cond::false_(
            AUTHORIZED,
            "Incompatible",
            "console and engine versions differ",
        ),
        _ => Cond::true_(AUTHORIZED, "Authorized", "the engine accepts its console"),
    });

    let engine_version = o
        .registration
        .and_then(|e| e.product_version.as_deref())
        .filter(|v| !v.is_empty());
    conds.push(match (state, engine_version, o.console_version) {
        (EngineState::Incompatible, ev, cv) => Cond::false_(
            VERSION_COMPATIBLE,
            "Incompatible",
            format!(
                "console runs {} and engine runs {}: they must run the same version",
                cv.unwrap_or("an unknown version"),
                ev.unwrap_or("an unknown version")
            ),
        ),
        (_, Some(ev), Some(cv)) if ev != cv => Cond::false_(
            VERSION_COMPATIBLE,
            "VersionMismatch",
            format!("console runs {cv} and engine runs {ev}: they must run the same version"),
        ),
        (_, Some(ev), _) => Cond::true_(
            VERSION_COMPATIBLE,
            "SameVersion",
            format!("engine runs {ev}"),
        ),
        _ => Cond::true_(
            VERSION_COMPATIBLE,
            "NotReported",
            "the console has not reported the engine's version",
        ),
    });

    conds.push(if o.policy_applied {
        Cond::true_(
            NETWORK_POLICY_READY,
            "Applied",
            match o.communication {
                Communication::ConsoleToEngine => format!(
                    "ingress only from Console {console_name} on port {}",
                    o.engine.spec.port
                ),
                Communication::EngineToConsole => {
                    "no ingress: the engine dials its console".to_string()
                }
            },
        )
    } else {
        let previous_np = conditions::find(&previous.conditions, NETWORK_POLICY_READY);
        match previous_np {
            Some(c) if c.status == "True" => {
                Cond::true_(NETWORK_POLICY_READY, c.reason.clone(), c.message.clone())
            }
            _ => Cond::false_(
                NETWORK_POLICY_READY,
                "NotApplied",
                "the NetworkPolicy has not been applied yet",
            ),
        }
    });

    if let Some(memory) = o.memory {
        conds.push(match memory {
            MemoryReservation::Reserved => Cond::true_(MEMORY_RESERVED, "RequestEqualsLimit", "memory request equals limit"),
            MemoryReservation::NotReserved { request, limit } => Cond::false_(
                MEMORY_RESERVED,
                "RequestBelowLimit",
                format!(
                    "memory request {} differs from limit {}: an engine on shared memory may run out of memory during a scan",
                    request.as_deref().unwrap_or("unset"),
                    limit.as_deref().unwrap_or("unset")
                ),
            ),
        });
    }

    // The console's own words while it is the cause; the cause's otherwise.
    let message = match (&o.problem, pod, &console_message) {
        (None, None, Some(m)) if !m.is_empty() => Some(m.clone()),
        _ => Some(message),
    };

    ScanEngineStatus {
        observed_generation: generation,
        communication: Some(CommunicationStatus {
            direction: o.communication,
            direction_display: o.communication.display().to_string(),
            state,
        }),
        engine_id: o.registration.map(|e| e.id),
        engine_name: Some(o.engine.console_engine_name()),
        version: engine_version.map(str::to_string),
        last_refresh_time: parse_time(
            o.registration
                .and_then(|e| e.last_refreshed_date.as_deref()),
        ),
        last_handled_refresh: o.handled_refresh.clone().or(previous.last_handled_refresh),
        message,
        conditions: conditions::merge(&previous.conditions, &conds, generation, o.now),
    }
}

fn state_message(o: &Observed<'_>, state: EngineState) -> String {
    let console = &o.engine.spec.console_ref.name;
    match state {
        EngineState::Pairing => match o.communication {
            Communication::EngineToConsole => format!("waiting for the engine to pair with Console {console}"),
            Communication::ConsoleToEngine => format!("registering with Console {console}"),
        },
        EngineState::Active => "the console reports the engine active".into(),
        EngineState::Unknown => {
            "no error recorded, but a significant lapse since the last exchange; annotate scanengine.dev/refresh to check now".into()
        }
        EngineState::PendingAuthorization => match o.engine.spec.authorization {
            Authorization::Manual => "the console is not enabled on the engine yet: set enabled=\"1\" for it in consoles.xml on the engine's volume and restart the engine pod".into(),
            Authorization::Automatic => "the engine has not enabled its console yet".into(),
        },
        EngineState::Incompatible => "console and engine run different versions".into(),
        EngineState::Down => "the engine is offline: the console cannot reach it or it has not called".into(),
    }
}

/// Whether `new` differs from `old` in anything but timestamps.
pub fn changed(old: Option<&ScanEngineStatus>, new: &ScanEngineStatus) -> bool {
    let Some(old) = old else { return true };
    let strip = |s: &ScanEngineStatus| ScanEngineStatus {
        last_refresh_time: None,
        conditions: vec![],
        ..s.clone()
    };
    strip(old) != strip(new) || !conditions::same_ignoring_time(&old.conditions, &new.conditions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::scan_engine::build::testing::engine;

    fn registration(status: &str, version: &str) -> Engine {
        Engine {
            id: 7,
            name: "edge.scanning".into(),
            status: Some(status.into()),
            product_version: Some(version.into()),
            last_refreshed_date: Some("2026-01-01T00:00:00Z".into()),
            message: Some(format!("console says {status}")),
            ..Default::default()
        }
    }

    fn observe<'a>(se: &'a ScanEngine, reg: Option<&'a Engine>, now: i64) -> Observed<'a> {
        Observed {
            engine: se,
            communication: se.spec.communication,
            registration: reg,
            console_version: Some("0.1.0"),
            policy_applied: true,
            memory: None,
            problem: None,
            pod: None,
            handled_refresh: None,
            now: Timestamp::from_second(now).unwrap_or(Timestamp::UNIX_EPOCH),
        }
    }

    fn cond<'a>(s: &'a ScanEngineStatus, t: &str) -> (&'a str, &'a str) {
        conditions::find(&s.conditions, t)
            .map_or(("", ""), |c| (c.status.as_str(), c.reason.as_str()))
    }

    #[test]
    fn active_engine_is_ready() {
        let se = engine(Communication::ConsoleToEngine);
        let reg = registration("active", "0.1.0");
        let s = compute(&observe(&se, Some(&reg), 100));
        assert_eq!(
            s.communication.as_ref().map(|c| c.state),
            Some(EngineState::Active)
        );
        assert_eq!(
            s.communication
                .as_ref()
                .map(|c| c.direction_display.as_str()),
            Some("Console → Engine")
        );
        assert_eq!(cond(&s, READY), ("True", "Active"));
        assert_eq!(cond(&s, PAIRED), ("True", "Registered"));
        assert_eq!(cond(&s, AUTHORIZED), ("True", "Authorized"));
        assert_eq!(cond(&s, VERSION_COMPATIBLE), ("True", "SameVersion"));
        assert_eq!(cond(&s, NETWORK_POLICY_READY), ("True", "Applied"));
        assert_eq!(s.engine_id, Some(7));
        assert_eq!(s.version.as_deref(), Some("0.1.0"));
        assert_eq!(s.message.as_deref(), Some("console says active"));
        assert!(
            s.conditions
                .iter()
                .all(|c| c.observed_generation == Some(1))
        );
    }

    #[test]
    fn every_console_state_maps_to_conditions() {
        let se = engine(Communication::ConsoleToEngine);
        for (api, state, ready_reason) in [
            (
                "pending-authorization",
                EngineState::PendingAuthorization,
                "PendingAuthorization",
            ),
            ("incompatible", EngineState::Incompatible, "Incompatible"),
            ("not-responding", EngineState::Down, "Down"),
            ("unknown", EngineState::Unknown, "Unknown"),
        ] {
            let reg = registration(api, "0.1.0");
            let s = compute(&observe(&se, Some(&reg), 100));
            assert_eq!(s.communication.as_ref().map(|c| c.state), Some(state));
            assert_eq!(cond(&s, READY), ("False", ready_reason), "{api}");
        }
        let reg = registration("pending-authorization", "0.1.0");
        assert_eq!(
            cond(&compute(&observe(&se, Some(&reg), 1)), AUTHORIZED),
            ("False", "PendingAuthorization")
        );
        let reg = registration("incompatible", "0.2.0");
        assert_eq!(
            cond(&compute(&observe(&se, Some(&reg), 1)), VERSION_COMPATIBLE),
            ("False", "Incompatible")
        );
    }

    /// Ready, Reconciling and Stalled: `(status, reason)` each.
    fn kstatus(s: &ScanEngineStatus) -> [(&str, &str); 3] {
        [
            cond(s, READY),
            cond(s, conditions::RECONCILING),
            cond(s, conditions::STALLED),
        ]
    }

    #[test]
    fn every_console_state_maps_to_kstatus_conditions() {
        use crate::crd::scan_engine::Authorization::{Automatic, Manual};
        let t = |r: &'static str| ("True", r);
        let f = |r: &'static str| ("False", r);
        for (api, authorization, expected) in [
            (
                "active",
                Automatic,
                [t("Active"), f("Reconciled"), f("Reconciled")],
            ),
            (
                "unknown",
                Automatic,
                [f("Unknown"), t("Unknown"), f("Progressing")],
            ),
            (
                "not-responding",
                Automatic,
                [f("Down"), t("Down"), f("Progressing")],
            ),
            (
                "pending-authorization",
                Automatic,
                [
                    f("PendingAuthorization"),
                    t("PendingAuthorization"),
                    f("Progressing"),
                ],
            ),
            // An administrator must edit consoles.xml: nothing the operator does helps.
            (
                "pending-authorization",
                Manual,
                [
                    f("PendingAuthorization"),
                    f("Stalled"),
                    t("PendingAuthorization"),
                ],
            ),
            (
                "incompatible",
                Automatic,
                [f("Incompatible"), f("Stalled"), t("Incompatible")],
            ),
        ] {
            let mut se = engine(Communication::ConsoleToEngine);
            se.spec.authorization = authorization;
            let reg = registration(api, "0.1.0");
            let s = compute(&observe(&se, Some(&reg), 100));
            assert_eq!(kstatus(&s), expected, "{api} {authorization:?}");
            assert!(
                s.conditions
                    .iter()
                    .all(|c| c.observed_generation == Some(1)),
                "{api}"
            );
        }
        // Not registered yet: pairing.
        let se = engine(Communication::EngineToConsole);
        let s = compute(&observe(&se, None, 100));
        assert_eq!(kstatus(&s), [f("Pairing"), t("Pairing"), f("Progressing")]);
        let ready = conditions::find(&s.conditions, READY).map(|c| c.message.clone());
        let reconciling =
            conditions::find(&s.conditions, conditions::RECONCILING).map(|c| c.message.clone());
        assert_eq!(ready, reconciling, "Reconciling says what Ready says");
    }

    #[test]
    fn a_pod_cause_names_ready_unless_the_console_sees_the_engine_active() {
        let se = engine(Communication::ConsoleToEngine);
        let cause = crate::controller::scan_engine::pods::PodCause {
            reason: "PodUnschedulable",
            message: "pod edge-scan-engine-0 cannot be scheduled: 0/1 nodes are available".into(),
            stalled: false,
        };
        let down = registration("not-responding", "0.1.0");
        let mut o = observe(&se, Some(&down), 100);
        o.pod = Some(cause.clone());
        let s = compute(&o);
        assert_eq!(cond(&s, READY), ("False", "PodUnschedulable"));
        assert_eq!(s.message.as_deref(), Some(cause.message.as_str()));
        assert_eq!(
            s.communication.as_ref().map(|c| c.state),
            Some(EngineState::Down),
            "the console's state is kept"
        );

        let active = registration("active", "0.1.0");
        let mut o = observe(&se, Some(&active), 100);
        o.pod = Some(cause.clone());
        assert_eq!(cond(&compute(&o), READY), ("True", "Active"));

        // A reconcile problem comes first.
        let mut o = observe(&se, Some(&down), 100);
        o.pod = Some(cause);
        o.problem = Some(Problem::transient("ConsoleUnreachable", "unreachable"));
        assert_eq!(cond(&compute(&o), READY), ("False", "ConsoleUnreachable"));
    }

    #[test]
    fn warning_causes_are_the_ready_reasons_outside_the_consoles_view() {
        let se = engine(Communication::ConsoleToEngine);
        let mut o = observe(&se, None, 100);
        o.problem = Some(Problem {
            reason: CHILD_REJECTED.into(),
            message: "apply StatefulSet scanning/edge-scan-engine: refused".into(),
            stalled: true,
        });
        let s = compute(&o);
        assert_eq!(
            warning_cause(&s),
            Some((
                CHILD_REJECTED,
                "apply StatefulSet scanning/edge-scan-engine: refused"
            ))
        );
        let down = registration("not-responding", "0.1.0");
        assert_eq!(warning_cause(&compute(&observe(&se, Some(&down), 1))), None);
    }

    #[test]
    fn unpaired_reverse_engine_waits() {
        let se = engine(Communication::EngineToConsole);
        let s = compute(&observe(&se, None, 100));
        assert_eq!(
            s.communication.as_ref().map(|c| c.state),
            Some(EngineState::Pairing)
        );
        assert_eq!(cond(&s, PAIRED), ("False", "WaitingForEngine"));
        assert_eq!(
            s.communication.map(|c| c.direction_display),
            Some("Engine → Console".to_string())
        );
    }

    #[test]
    fn unchanged_world_needs_no_write_and_keeps_transition_times() {
        let mut se = engine(Communication::ConsoleToEngine);
        let reg = registration("active", "0.1.0");
        let first = compute(&observe(&se, Some(&reg), 100));
        se.status = Some(first.clone());
        let mut later = registration("active", "0.1.0");
        later.last_refreshed_date = Some("2026-01-01T00:05:00Z".into());
        let second = compute(&observe(&se, Some(&later), 400));
        assert!(!changed(Some(&first), &second), "only timestamps moved");
        assert_eq!(first.conditions, second.conditions);

        let down = registration("not-responding", "0.1.0");
        let third = compute(&observe(&se, Some(&down), 500));
        assert!(changed(Some(&first), &third));
        let ready =
            conditions::find(&third.conditions, READY).map(|c| c.last_transition_time.clone());
        assert_eq!(
            ready,
            Some(Time(
                Timestamp::from_second(500).unwrap_or(Timestamp::UNIX_EPOCH)
            ))
        );
    }

    #[test]
    fn problems_surface_in_ready_and_message() {
        let se = engine(Communication::ConsoleToEngine);
        let mut o = observe(&se, None, 100);
        o.problem = Some(Problem::transient(
            "ConsoleUnreachable",
            "console scanning/main: unreachable",
        ));
        let s = compute(&o);
        assert_eq!(cond(&s, READY), ("False", "ConsoleUnreachable"));
        assert_eq!(cond(&s, PAIRED), ("False", "ConsoleUnreachable"));
        assert_eq!(
            s.message.as_deref(),
            Some("console scanning/main: unreachable")
        );
    }
}
