//! Pair: make the console's registration of the engine match the spec, from what the
//! console's last listing says ([`crate::controller::console_engines`]).
//!
//! [`plan`] (pure) decides which calls to make for this one engine; [`execute`] makes them.
//! ConsoleToEngine: the operator creates the engine at the console with the address the
//! console should dial. EngineToConsole: the engine pairs itself with the shared secret; the
//! operator waits for it to appear in a listing, and asks for an early one once the engine's
//! pod is Ready (its readiness means it holds a session with the console). A registration in
//! the other direction (after `communication` changed) or with a stale address is removed
//! first.
//!
//! Pairing follows events, not timers: when the engine's pod becomes Ready and the console has
//! not looked at the engine since, the console is asked to refresh it at once (it dials then,
//! instead of at its next round), and again every [`RETRY_GAP`] for [`PAIRING_WINDOW`] while the
//! engine is not reachable yet (a new pod's address takes a moment to reach every node). The
//! console's `lastRefreshedDate` says when it last looked, so nothing is remembered here. For
//! the same minute after an engine's Ready condition turned False (it was just created, or just
//! fell out of Active), its Console is asked to list early ([`within_window`]): one listing
//! answers every engine of the Console that waits.

use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::jiff::Timestamp;

use super::build::service::cluster_dns_name;
use crate::console_api::{ApiResult, ConsoleApi, Engine, NewEngine, find_engine_by_name};
use crate::controller::console_engines::Seen;
use crate::crd::scan_engine::ServiceType;
use crate::crd::{Communication, EngineState, ScanEngine};

/// How long after the pod became Ready the console is asked again while it cannot reach the
/// engine yet.
pub const PAIRING_WINDOW: Duration = Duration::from_secs(60);
/// How often, within [`PAIRING_WINDOW`].
pub const RETRY_GAP: Duration = Duration::from_secs(2);
/// How often after it, while the console still cannot reach an engine whose pod is Ready.
pub const SLOW_RETRY: Duration = Duration::from_secs(30);

/// What the console should know about the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub communication: Communication,
    /// `(address, port)` the console dials (ConsoleToEngine).
    pub address: Option<(String, i32)>,
}

/// What the reconcile knows besides the console's record.
#[derive(Clone, Debug, PartialEq)]
pub struct Situation {
    /// The direction of the registration as last written to the status.
    pub known_direction: Option<Communication>,
    /// The refresh annotation asks for a refresh not handled yet.
    pub refresh_requested: bool,
    /// Since when the engine's pod is Ready, if it is.
    pub ready_since: Option<Timestamp>,
    pub now: Timestamp,
}

/// The calls to make for one engine, in this order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Remove this registration (direction or address changed).
    pub remove: Option<i64>,
    /// Register the engine (ConsoleToEngine).
    pub create: Option<NewEngine>,
    /// Ask the console to refresh the registration (the existing one, or the one created).
    pub refresh: bool,
    /// Ask the Console for an early listing: a reverse engine should have appeared by now.
    pub want_listing: bool,
}

impl Plan {
    pub fn calls_console(&self) -> bool {
        self.remove.is_some() || self.create.is_some() || self.refresh
    }
}

/// What pairing did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    /// The registration as the console reports it now.
    pub engine: Option<Engine>,
    /// Id of a registration removed because direction or address changed.
    pub removed: Option<i64>,
    /// Id of a registration created now.
    pub created: Option<i64>,
    /// Whether the console was asked to refresh the engine.
    pub refreshed: bool,
}

/// The address the console dials for a ConsoleToEngine engine, from the spec and the applied
/// Service. `Err` says what it is waiting for.
pub fn dial_address(
    engine: &ScanEngine,
    name: &str,
    namespace: &str,
    service: Option<&Service>,
) -> Result<(String, i32), String> {
    let spec = &engine.spec;
    let node_port = || {
        service
            .and_then(|s| s.spec.as_ref())
            .and_then(|s| s.ports.as_ref())
            .and_then(|p| p.first())
            .and_then(|p| p.node_port)
    };
    if let Some(advertised) = &spec.advertised_address {
        if let Some((host, port)) = advertised.rsplit_once(':')
            && let Ok(port) = port.parse::<i32>()
        {
            return Ok((host.to_string(), port));
        }
        let port = match spec.service_type.unwrap_or_default() {
            ServiceType::NodePort => node_port().ok_or("waiting for the Service's node port")?,
            _ => spec.port,
        };
        return Ok((advertised.clone(), port));
    }
    if spec.service_type == Some(ServiceType::LoadBalancer) {
        let ingress = service
            .and_then(|s| s.status.as_ref())
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .and_then(|i| i.first())
            .and_then(|i| i.ip.clone().or_else(|| i.hostname.clone()));
        return ingress
            .map(|host| (host, spec.port))
            .ok_or_else(|| "waiting for the load balancer address".to_string());
    }
    Ok((cluster_dns_name(name, namespace), spec.port))
}

fn registered_direction(engine: &Engine, fallback: Option<Communication>) -> Option<Communication> {
    engine
        .direction
        .as_deref()
        .and_then(Communication::from_flag)
        .or(fallback)
}

/// Whether the console should look at the engine now: its pod is Ready, the console does not
/// see it Active, and the console has not looked since the pod became Ready, or (while the
/// console cannot reach it, within [`PAIRING_WINDOW`]) not for [`RETRY_GAP`].
pub fn refresh_due(engine: &Engine, ready_since: Option<Timestamp>, now: Timestamp) -> bool {
    let Some(ready) = ready_since else {
        return false;
    };
    let state = super::status::state(Some(engine));
    if state == EngineState::Active {
        return false;
    }
    let last = engine
        .last_refreshed_date
        .as_deref()
        .and_then(|s| s.parse::<Timestamp>().ok());
    let Some(last) = last.filter(|l| *l >= ready) else {
        return true;
    };
    // Only an administrator helps Pending Authorization and Incompatible: one look is enough.
    let unreachable = matches!(state, EngineState::Unknown | EngineState::Down);
    let within = |d: Duration| {
        k8s_openapi::jiff::SignedDuration::try_from(d).is_ok_and(|d| now.duration_since(ready) < d)
    };
    let since_last = Duration::try_from(now.duration_since(last)).unwrap_or(Duration::ZERO);
    // After the window, an engine the console cannot reach is looked at again every
    // SLOW_RETRY: the console may not try on its own until asked.
    unreachable && ((within(PAIRING_WINDOW) && since_last >= RETRY_GAP) || since_last >= SLOW_RETRY)
}

/// Whether `since` (when the engine's Ready condition became False) is less than
/// [`PAIRING_WINDOW`] before `now`: the engine was just created, or just fell out of Active.
pub fn within_window(since: Option<Timestamp>, now: Timestamp) -> bool {
    since.is_some_and(|since| {
        k8s_openapi::jiff::SignedDuration::try_from(PAIRING_WINDOW)
            .is_ok_and(|w| now.duration_since(since) < w)
    })
}

/// The calls that bring the console's registration (`seen`) in line with `target`.
pub fn plan(target: &Target, seen: &Seen, situation: &Situation) -> Plan {
    let mut plan = Plan::default();
    let current = match seen {
        Seen::Present(e) => Some(e),
        Seen::Absent => None,
        // Nothing is known: nothing is done until the console is listed.
        Seen::NotListed | Seen::Failed { .. } => return plan,
    };
    let mut keep = current;
    if let Some(existing) = current {
        let direction_changed = registered_direction(existing, situation.known_direction)
            .is_some_and(|d| d != target.communication);
        let address_changed = match (&target.address, target.communication) {
            (Some((address, port)), Communication::ConsoleToEngine) => {
                existing.address.as_deref() != Some(address.as_str())
                    || existing.port != Some(i64::from(*port))
            }
            _ => false,
        };
        if direction_changed || address_changed {
            plan.remove = Some(existing.id);
            keep = None;
        }
    }
    match keep {
        Some(existing) => {
            plan.refresh = situation.refresh_requested
                || refresh_due(existing, situation.ready_since, situation.now);
        }
        None => match (&target.address, target.communication) {
            (Some((address, port)), Communication::ConsoleToEngine) => {
                plan.create = Some(NewEngine {
                    name: target.name.clone(),
                    address: address.clone(),
                    port: *port,
                });
                // A pod already Ready need not wait for the console's next round.
                plan.refresh = situation.ready_since.is_some() || situation.refresh_requested;
            }
            _ => plan.want_listing = situation.ready_since.is_some() && plan.remove.is_none(),
        },
    }
    plan
}

/// Makes the calls of `plan`; `current` is the registration the plan was made from.
pub async fn execute(
    api: &dyn ConsoleApi,
    plan: &Plan,
    current: Option<Engine>,
) -> ApiResult<Outcome> {
    let mut outcome = Outcome {
        engine: current,
        ..Outcome::default()
    };
    if let Some(id) = plan.remove {
        api.delete_engine(id).await?;
        outcome.removed = Some(id);
        outcome.engine = None;
    }
    if let Some(new) = &plan.create {
        let id = match api.create_engine(new).await {
            Ok(id) => {
                outcome.created = Some(id);
                Some(id)
            }
            // Someone registered it since the last listing: use theirs.
            Err(e) if e.status_code() == Some(409) => {
                find_engine_by_name(api, &new.name).await?.map(|e| e.id)
            }
            Err(e) => return Err(e),
        };
        outcome.engine = match id {
            Some(id) => api.get_engine(id).await?,
            None => None,
        };
    }
    if plan.refresh
        && let Some(existing) = &outcome.engine
    {
        outcome.engine = Some(api.refresh_engine(existing.id).await?);
        outcome.refreshed = true;
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console_api::fake::FakeConsole;
    use crate::controller::scan_engine::build::testing::engine;
    use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, ServiceStatus};

    fn target(c: Communication) -> Target {
        Target {
            name: "edge.scanning".into(),
            communication: c,
            address: (c == Communication::ConsoleToEngine)
                .then(|| ("edge-scan-engine.scanning.svc".to_string(), 40814)),
        }
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_767_225_600 + second).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn situation(ready_since: Option<i64>, now: i64) -> Situation {
        Situation {
            known_direction: None,
            refresh_requested: false,
            ready_since: ready_since.map(at),
            now: at(now),
        }
    }

    fn registered(status: &str, direction: &str, last_refreshed: i64) -> Engine {
        Engine {
            id: 7,
            name: "edge.scanning".into(),
            address: Some("edge-scan-engine.scanning.svc".into()),
            port: Some(40814),
            status: Some(status.into()),
            direction: Some(direction.into()),
            last_refreshed_date: Some(at(last_refreshed).to_string()),
            ..Engine::default()
        }
    }

    #[test]
    fn early_listings_are_wanted_only_for_a_minute_after_ready_turned_false() {
        assert!(!within_window(None, at(0)), "never failed");
        assert!(within_window(Some(at(0)), at(59)));
        assert!(!within_window(Some(at(0)), at(60)));
    }

    #[test]
    fn nothing_is_done_before_the_console_is_listed() {
        let t = target(Communication::ConsoleToEngine);
        assert_eq!(
            plan(&t, &Seen::NotListed, &situation(Some(0), 1)),
            Plan::default()
        );
        let failed = Seen::Failed {
            reason: "ConsoleUnreachable".into(),
            message: "refused".into(),
        };
        assert_eq!(plan(&t, &failed, &situation(Some(0), 1)), Plan::default());
    }

    #[test]
    fn an_absent_engine_is_registered_and_refreshed_once_its_pod_is_ready() {
        let t = target(Communication::ConsoleToEngine);
        let p = plan(&t, &Seen::Absent, &situation(None, 0));
        assert_eq!(p.create.as_ref().map(|n| n.port), Some(40814));
        assert!(
            !p.refresh,
            "the pod is not Ready: the console dials at its own time"
        );
        assert!(plan(&t, &Seen::Absent, &situation(Some(0), 1)).refresh);
    }

    #[test]
    fn a_ready_pod_makes_the_console_look_at_once_then_every_retry_gap_for_a_while() {
        let t = target(Communication::ConsoleToEngine);
        let before = Seen::Present(registered("unknown", "console-to-engine", -5));
        assert!(
            plan(&t, &before, &situation(Some(0), 0)).refresh,
            "not looked since Ready"
        );
        assert!(
            !plan(&t, &before, &situation(None, 0)).refresh,
            "pod not Ready"
        );
        let just = Seen::Present(registered("unknown", "console-to-engine", 1));
        assert!(
            !plan(&t, &just, &situation(Some(0), 2)).refresh,
            "looked 1 s ago"
        );
        assert!(plan(&t, &just, &situation(Some(0), 3)).refresh, "2 s later");
        let late = Seen::Present(registered("unknown", "console-to-engine", 50));
        assert!(
            !plan(&t, &late, &situation(Some(0), 61)).refresh,
            "window over: every 30 s"
        );
        assert!(
            plan(&t, &late, &situation(Some(0), 80)).refresh,
            "30 s later"
        );
        let active = Seen::Present(registered("active", "console-to-engine", -5));
        assert!(!plan(&t, &active, &situation(Some(0), 1)).refresh);
        let pending = Seen::Present(registered("pending-authorization", "engine-to-console", 1));
        let reverse = target(Communication::EngineToConsole);
        assert!(
            !plan(&reverse, &pending, &situation(Some(0), 5)).refresh,
            "only an administrator helps: one look"
        );
        let mut asked = situation(None, 5);
        asked.refresh_requested = true;
        assert!(plan(&t, &active, &asked).refresh, "the refresh annotation");
    }

    #[test]
    fn a_reverse_engine_is_awaited_and_an_early_listing_asked_once_its_pod_is_ready() {
        let t = target(Communication::EngineToConsole);
        assert_eq!(
            plan(&t, &Seen::Absent, &situation(None, 0)),
            Plan::default()
        );
        let p = plan(&t, &Seen::Absent, &situation(Some(0), 1));
        assert!(p.want_listing && !p.calls_console());
    }

    #[test]
    fn a_registration_in_the_other_direction_or_at_another_address_is_replaced() {
        let reverse = target(Communication::EngineToConsole);
        let old = Seen::Present(registered("active", "console-to-engine", 0));
        let p = plan(&reverse, &old, &situation(None, 1));
        assert_eq!((p.remove, p.create.is_some()), (Some(7), false));
        let mut moved = target(Communication::ConsoleToEngine);
        moved.address = Some(("engine.example.com".into(), 4000));
        let p = plan(&moved, &old, &situation(None, 1));
        assert_eq!(p.remove, Some(7));
        assert_eq!(
            p.create.map(|n| n.address),
            Some("engine.example.com".into())
        );
    }

    #[tokio::test]
    async fn executing_a_plan_makes_its_calls_and_returns_the_new_registration() {
        let fake = FakeConsole::default();
        let old = fake.insert_engine("edge.scanning", "active", "engine-to-console");
        let p = plan(
            &target(Communication::ConsoleToEngine),
            &Seen::Present(registered("active", "engine-to-console", 0)),
            &situation(Some(0), 1),
        );
        let mut p = p;
        p.remove = Some(old);
        let out = execute(&fake, &p, None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.removed, Some(old));
        let created = out.created.unwrap_or_default();
        assert_eq!(out.engine.as_ref().map(|e| e.id), Some(created));
        assert!(out.refreshed);
        assert_eq!(
            fake.state().engines.keys().copied().collect::<Vec<_>>(),
            [created]
        );
    }

    #[test]
    fn dial_addresses() {
        let mut se = engine(Communication::ConsoleToEngine);
        assert_eq!(
            dial_address(&se, "edge", "scanning", None),
            Ok(("edge-scan-engine.scanning.svc".into(), 40814))
        );
        se.spec.advertised_address = Some("engine.example.com:4000".into());
        assert_eq!(
            dial_address(&se, "edge", "scanning", None),
            Ok(("engine.example.com".into(), 4000))
        );
        se.spec.advertised_address = Some("engine.example.com".into());
        assert_eq!(
            dial_address(&se, "edge", "scanning", None),
            Ok(("engine.example.com".into(), 40814))
        );
        se.spec.advertised_address = None;
        se.spec.service_type = Some(ServiceType::LoadBalancer);
        assert!(dial_address(&se, "edge", "scanning", None).is_err());
        let svc = Service {
            status: Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(vec![LoadBalancerIngress {
                        ip: Some("192.0.2.10".into()),
                        ..Default::default()
                    }]),
                }),
                conditions: None,
            }),
            ..Default::default()
        };
        assert_eq!(
            dial_address(&se, "edge", "scanning", Some(&svc)),
            Ok(("192.0.2.10".into(), 40814))
        );
    }
}
