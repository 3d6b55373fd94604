//! The engine's configuration: image, environment (docs/contracts.md §2) and resources.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::Inputs;
use crate::crd::Communication;
use crate::crd::scan_engine::Authorization;

/// Where the engine keeps its identity, `consoles.xml` and pairing state (on the PVC).
pub const DATA_DIR: &str = "/var/lib/scan-engine";
/// Where the console's shared-secret Secret is mounted (reverse engines).
pub const SHARED_SECRET_DIR: &str = "/etc/scan-engine/shared-secret";
/// Health endpoint port of the engine.
pub const HEALTH_PORT: i32 = 8080;
/// Memory of an engine when the spec sets none.
pub const DEFAULT_MEMORY: &str = "1Gi";
/// CPU request of an engine when the spec sets none.
pub const DEFAULT_CPU: &str = "250m";

/// The container image: `spec.image`, else `scan-engine:<version>`.
pub fn image(inputs: &Inputs<'_>) -> String {
    let spec = &inputs.engine.spec;
    spec.image.clone().unwrap_or_else(|| {
        format!(
            "scan-engine:{}",
            spec.version.as_deref().unwrap_or(inputs.default_version)
        )
    })
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// Environment of the engine container. Secrets are passed as files, never as values.
/// The prefix of the environment variables the operator sets on an engine.
pub const RESERVED_ENV_PREFIX: &str = "SCAN_ENGINE_";

pub fn environment(inputs: &Inputs<'_>) -> Vec<EnvVar> {
    let mut vars = vec![
        env("SCAN_ENGINE_DATA_DIR", DATA_DIR),
        env("SCAN_ENGINE_NAME", inputs.engine.console_engine_name()),
        env("SCAN_ENGINE_COMMUNICATION", inputs.communication.as_flag()),
        env(
            "SCAN_ENGINE_HEALTH_LISTEN",
            format!("0.0.0.0:{HEALTH_PORT}"),
        ),
        env("SCAN_ENGINE_LOG_FORMAT", "json"),
    ];
    match inputs.communication {
        Communication::ConsoleToEngine => {
            vars.push(env(
                "SCAN_ENGINE_LISTEN",
                format!("0.0.0.0:{}", inputs.port()),
            ));
            if inputs.authorization() == Authorization::Automatic
                && let Some(fp) = &inputs.console.fingerprint
            {
                vars.push(env("SCAN_ENGINE_TRUSTED_CONSOLE_FINGERPRINT", fp.clone()));
            }
        }
        Communication::EngineToConsole => {
            if let Some(address) = &inputs.console.engine_listener {
                vars.push(env("SCAN_ENGINE_CONSOLE_ADDRESS", address.clone()));
            }
            // Pinned from the first dial: the shared secret only goes to this certificate.
            if let Some(fp) = &inputs.console.fingerprint {
                vars.push(env("SCAN_ENGINE_TRUSTED_CONSOLE_FINGERPRINT", fp.clone()));
            }
            vars.push(env(
                "SCAN_ENGINE_SHARED_SECRET_FILE",
                format!(
                    "{SHARED_SECRET_DIR}/{}",
                    crate::controller::names::SHARED_SECRET_KEY
                ),
            ));
        }
    }
    // The user's extra variables after the operator's, without the operator's prefix (which
    // admission refuses too): the engine's settings come from the rest of the spec.
    vars.extend(
        inputs
            .engine
            .spec
            .env
            .iter()
            .flatten()
            .filter(|v| !v.name.starts_with(RESERVED_ENV_PREFIX))
            .cloned(),
    );
    vars
}

/// Whether the engine's memory is reserved (request equal to limit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemoryReservation {
    Reserved,
    /// The user set a request different from the limit (or no limit).
    NotReserved {
        request: Option<String>,
        limit: Option<String>,
    },
}

/// Resources of the engine container: the spec's, with memory request and limit made equal
/// where only one is set, and defaults when none is.
pub fn resources(inputs: &Inputs<'_>) -> (ResourceRequirements, MemoryReservation) {
    let mut res = inputs.engine.spec.resources.clone().unwrap_or_default();
    let mut requests = res.requests.take().unwrap_or_default();
    let mut limits = res.limits.take().unwrap_or_default();
    let request = requests.get("memory").cloned();
    let limit = limits.get("memory").cloned();
    let reservation = match (request, limit) {
        (None, None) => {
            requests.insert("memory".into(), Quantity(DEFAULT_MEMORY.into()));
            limits.insert("memory".into(), Quantity(DEFAULT_MEMORY.into()));
            MemoryReservation::Reserved
        }
        (Some(r), None) => {
            limits.insert("memory".into(), r);
            MemoryReservation::Reserved
        }
        (None, Some(l)) => {
            requests.insert("memory".into(), l);
            MemoryReservation::Reserved
        }
        (Some(r), Some(l)) if r == l => MemoryReservation::Reserved,
        (Some(r), Some(l)) => MemoryReservation::NotReserved {
            request: Some(r.0),
            limit: Some(l.0),
        },
    };
    requests
        .entry("cpu".into())
        .or_insert_with(|| Quantity(DEFAULT_CPU.into()));
    res.requests = Some(requests);
    res.limits = Some(limits);
    (res, reservation)
}

/// Node selector of the pod.
pub fn node_selector(inputs: &Inputs<'_>) -> Option<BTreeMap<String, String>> {
    inputs.engine.spec.node_selector.clone()
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    fn names(vars: &[EnvVar]) -> Vec<String> {
        vars.iter()
            .map(|v| format!("{}={}", v.name, v.value.as_deref().unwrap_or_default()))
            .collect()
    }

    #[test]
    fn console_to_engine_environment() {
        let se = engine(Communication::ConsoleToEngine);
        let console = console_side();
        assert_eq!(
            names(&environment(&inputs(&se, &console))),
            [
                "SCAN_ENGINE_DATA_DIR=/var/lib/scan-engine",
                "SCAN_ENGINE_NAME=edge.scanning",
                "SCAN_ENGINE_COMMUNICATION=console-to-engine",
                "SCAN_ENGINE_HEALTH_LISTEN=0.0.0.0:8080",
                "SCAN_ENGINE_LOG_FORMAT=json",
                "SCAN_ENGINE_LISTEN=0.0.0.0:40814",
                "SCAN_ENGINE_TRUSTED_CONSOLE_FINGERPRINT=sha256:c0ffee",
            ]
        );
    }

    #[test]
    fn manual_authorization_has_no_fingerprint() {
        let mut se = engine(Communication::ConsoleToEngine);
        se.spec.authorization = Authorization::Manual;
        let console = console_side();
        let env = names(&environment(&inputs(&se, &console)));
        assert!(
            !env.iter()
                .any(|v| v.starts_with("SCAN_ENGINE_TRUSTED_CONSOLE_FINGERPRINT")),
            "{env:?}"
        );
    }

    #[test]
    fn engine_to_console_environment() {
        let se = engine(Communication::EngineToConsole);
        let console = console_side();
        let env = names(&environment(&inputs(&se, &console)));
        assert!(env.contains(&"SCAN_ENGINE_COMMUNICATION=engine-to-console".to_string()));
        assert!(env.contains(
            &"SCAN_ENGINE_CONSOLE_ADDRESS=main-console-engines.scanning.svc:40815".to_string()
        ));
        assert!(
            env.contains(
                &"SCAN_ENGINE_SHARED_SECRET_FILE=/etc/scan-engine/shared-secret/shared-secret"
                    .to_string()
            )
        );
        assert!(!env.iter().any(|v| v.starts_with("SCAN_ENGINE_LISTEN")));
        assert!(
            env.contains(&"SCAN_ENGINE_TRUSTED_CONSOLE_FINGERPRINT=sha256:c0ffee".to_string()),
            "a reverse engine pins its console from the first dial: {env:?}"
        );
    }

    #[test]
    fn memory_defaults_and_reservation() {
        let console = console_side();
        let mut se = engine(Communication::ConsoleToEngine);
        let (res, reservation) = resources(&inputs(&se, &console));
        assert_eq!(reservation, MemoryReservation::Reserved);
        assert_eq!(
            res.requests.as_ref().and_then(|r| r.get("memory")),
            Some(&Quantity("1Gi".into()))
        );
        assert_eq!(
            res.limits.as_ref().and_then(|r| r.get("memory")),
            Some(&Quantity("1Gi".into()))
        );

        // Only a limit: the request follows it.
        se.spec.resources = Some(ResourceRequirements {
            limits: Some([("memory".to_string(), Quantity("2Gi".into()))].into()),
            ..Default::default()
        });
        let (res, reservation) = resources(&inputs(&se, &console));
        assert_eq!(reservation, MemoryReservation::Reserved);
        assert_eq!(
            res.requests.as_ref().and_then(|r| r.get("memory")),
            Some(&Quantity("2Gi".into()))
        );

        // Request below limit: kept as the user asked, but reported.
        se.spec.resources = Some(ResourceRequirements {
            limits: Some([("memory".to_string(), Quantity("2Gi".into()))].into()),
            requests: Some([("memory".to_string(), Quantity("512Mi".into()))].into()),
            ..Default::default()
        });
        let (_, reservation) = resources(&inputs(&se, &console));
        assert_eq!(
            reservation,
            MemoryReservation::NotReserved {
                request: Some("512Mi".into()),
                limit: Some("2Gi".into())
            }
        );
    }

    #[test]
    fn image_defaults_to_version_tag() {
        let console = console_side();
        let mut se = engine(Communication::ConsoleToEngine);
        assert_eq!(image(&inputs(&se, &console)), "scan-engine:0.1.0");
        se.spec.version = Some("0.2.0".into());
        assert_eq!(image(&inputs(&se, &console)), "scan-engine:0.2.0");
        se.spec.image = Some("registry.local/scan-engine@sha256:abc".into());
        assert_eq!(
            image(&inputs(&se, &console)),
            "registry.local/scan-engine@sha256:abc"
        );
    }
}
