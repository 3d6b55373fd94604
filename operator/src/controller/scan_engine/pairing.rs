//! Pair: make the console's registration of the engine match the spec.
//!
//! ConsoleToEngine: the operator creates the engine at the console (found by name first, so it
//! is idempotent) with the address the console should dial. EngineToConsole: the engine pairs
//! itself with the shared secret; the operator only finds it by name. A registration in the
//! other direction (after `communication` changed) or with a stale address is removed first.

use k8s_openapi::api::core::v1::Service;

use super::build::service::cluster_dns_name;
use crate::console_api::{ApiResult, ConsoleApi, Engine, NewEngine, find_engine_by_name};
use crate::crd::scan_engine::ServiceType;
use crate::crd::{Communication, ScanEngine};

/// What the console should know about the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub communication: Communication,
    /// `(address, port)` the console dials (ConsoleToEngine).
    pub address: Option<(String, i32)>,
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

/// Brings the console's registration in line with `target`.
pub async fn ensure(
    api: &dyn ConsoleApi,
    target: &Target,
    known_id: Option<i64>,
    known_direction: Option<Communication>,
    refresh: bool,
) -> ApiResult<Outcome> {
    let mut outcome = Outcome::default();
    let mut current = match known_id {
        Some(id) => api.get_engine(id).await?.filter(|e| e.name == target.name),
        None => None,
    };
    if current.is_none() {
        current = find_engine_by_name(api, &target.name).await?;
    }

    if let Some(existing) = &current {
        let direction_changed = registered_direction(existing, known_direction)
            .is_some_and(|d| d != target.communication);
        let address_changed = match (&target.address, target.communication) {
            (Some((address, port)), Communication::ConsoleToEngine) => {
                existing.address.as_deref() != Some(address.as_str())
                    || existing.port != Some(i64::from(*port))
            }
            _ => false,
        };
        if direction_changed || address_changed {
            api.delete_engine(existing.id).await?;
            outcome.removed = Some(existing.id);
            current = None;
        }
    }

    if current.is_none()
        && target.communication == Communication::ConsoleToEngine
        && let Some((address, port)) = &target.address
    {
        let new = NewEngine {
            name: target.name.clone(),
            address: address.clone(),
            port: *port,
        };
        let id = match api.create_engine(&new).await {
            Ok(id) => {
                outcome.created = Some(id);
                Some(id)
            }
            // Someone registered it between our lookup and create: use theirs.
            Err(e) if e.status_code() == Some(409) => {
                find_engine_by_name(api, &target.name).await?.map(|e| e.id)
            }
            Err(e) => return Err(e),
        };
        current = match id {
            Some(id) => api.get_engine(id).await?,
            None => None,
        };
    }

    if refresh && let Some(existing) = &current {
        current = Some(api.refresh_engine(existing.id).await?);
        outcome.refreshed = true;
    }
    outcome.engine = current;
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

    #[tokio::test]
    async fn creates_once_then_finds_by_name() {
        let fake = FakeConsole::default();
        let first = ensure(
            &fake,
            &target(Communication::ConsoleToEngine),
            None,
            None,
            false,
        )
        .await
        .ok();
        assert_eq!(first.as_ref().and_then(|o| o.created), Some(7));
        let second = ensure(
            &fake,
            &target(Communication::ConsoleToEngine),
            None,
            None,
            false,
        )
        .await
        .ok();
        assert_eq!(second.as_ref().and_then(|o| o.created), None);
        assert_eq!(second.and_then(|o| o.engine).map(|e| e.id), Some(7));
        assert_eq!(fake.state().engines.len(), 1);
    }

    #[tokio::test]
    async fn direction_switch_removes_the_old_registration() {
        let fake = FakeConsole::default();
        let _ = ensure(
            &fake,
            &target(Communication::ConsoleToEngine),
            None,
            None,
            false,
        )
        .await;
        let out = ensure(
            &fake,
            &target(Communication::EngineToConsole),
            Some(7),
            Some(Communication::ConsoleToEngine),
            false,
        )
        .await
        .ok();
        assert_eq!(out.as_ref().and_then(|o| o.removed), Some(7));
        assert_eq!(
            out.and_then(|o| o.engine),
            None,
            "the reverse engine pairs itself"
        );
        assert!(fake.state().engines.is_empty());
        // The engine dials in: found by name.
        let id = fake.insert_engine("edge.scanning", "active", "engine-to-console");
        let out = ensure(
            &fake,
            &target(Communication::EngineToConsole),
            None,
            Some(Communication::EngineToConsole),
            true,
        )
        .await
        .ok();
        assert_eq!(
            out.as_ref().and_then(|o| o.engine.as_ref()).map(|e| e.id),
            Some(id)
        );
        assert!(out.is_some_and(|o| o.refreshed));
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
