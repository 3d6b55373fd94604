//! Pure builders of an engine's desired child objects. No I/O here: every function maps the
//! validated inputs to objects, and each is unit tested against golden output.

pub mod config;
pub mod network_policy;
pub mod service;
pub mod statefulset;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::controller::names;
use crate::crd::scan_engine::{Authorization, ServiceType};
use crate::crd::{Communication, ScanEngine};

/// What the engine needs to know about its console.
#[derive(Clone, Debug, PartialEq)]
pub struct ConsoleSide {
    /// Name of the Console resource.
    pub name: String,
    /// Whether the operator runs the console (its pods then carry our labels).
    pub managed: bool,
    /// `host:port` a reverse engine dials.
    pub engine_listener: Option<String>,
    /// Where the pairing shared secret is kept (reverse).
    pub shared_secret_name: Option<String>,
    /// Fingerprint of the console's engine-communication certificate the engine pins
    /// (reverse engines, and standard ones with Automatic authorization).
    pub fingerprint: Option<String>,
    /// CIDRs an external console dials engines from.
    pub source_cidrs: Vec<String>,
}

/// Everything the builders read, already validated.
#[derive(Clone, Debug)]
pub struct Inputs<'a> {
    pub engine: &'a ScanEngine,
    pub name: &'a str,
    pub namespace: &'a str,
    pub communication: Communication,
    pub console: &'a ConsoleSide,
    pub owner: OwnerReference,
    /// Product version when the spec names none (the operator's version).
    pub default_version: &'a str,
}

impl Inputs<'_> {
    pub fn port(&self) -> i32 {
        self.engine.spec.port
    }

    pub fn authorization(&self) -> Authorization {
        self.engine.spec.authorization
    }

    pub fn service_type(&self) -> ServiceType {
        self.engine.spec.service_type.unwrap_or_default()
    }

    /// Metadata of a child object named `e-scan-engine`.
    pub fn meta(&self) -> ObjectMeta {
        ObjectMeta {
            name: Some(names::engine_objects(self.name)),
            namespace: Some(self.namespace.to_string()),
            labels: Some(names::engine_labels(
                self.name,
                &self.console.name,
                self.communication,
            )),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }
}

/// The complete desired set of an engine's child objects.
#[derive(Clone, Debug)]
pub struct Desired {
    pub statefulset: StatefulSet,
    /// Only for ConsoleToEngine; `None` means "delete it if it exists".
    pub service: Option<Service>,
    pub network_policy: NetworkPolicy,
}

/// Builds every child object.
pub fn desired(inputs: &Inputs<'_>) -> Desired {
    Desired {
        statefulset: statefulset::statefulset(inputs),
        service: service::service(inputs),
        network_policy: network_policy::network_policy(inputs),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A representative engine for the golden tests.
    use super::*;
    use crate::crd::ScanEngineSpec;
    use crate::crd::scan_engine::{ConsoleRef, DEFAULT_ENGINE_PORT};

    pub fn engine(communication: Communication) -> ScanEngine {
        let mut se = ScanEngine::new(
            "edge",
            ScanEngineSpec {
                console_ref: ConsoleRef {
                    name: "main".into(),
                },
                communication,
                port: DEFAULT_ENGINE_PORT,
                image: None,
                version: None,
                resources: None,
                storage: None,
                node_selector: None,
                tolerations: None,
                affinity: None,
                authorization: Authorization::Automatic,
                advertised_address: None,
                service_type: None,
                image_pull_secrets: None,
                priority_class_name: None,
                pod_labels: None,
                pod_annotations: None,
                env: None,
            },
        );
        se.metadata.namespace = Some("scanning".into());
        se.metadata.uid = Some("uid-edge".into());
        se.metadata.generation = Some(1);
        se
    }

    pub fn console_side() -> ConsoleSide {
        ConsoleSide {
            name: "main".into(),
            managed: true,
            engine_listener: Some("main-console-engines.scanning.svc:40815".into()),
            shared_secret_name: Some("main-console-shared-secret".into()),
            fingerprint: Some("sha256:c0ffee".into()),
            source_cidrs: vec![],
        }
    }

    pub fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "scanengine.dev/v1alpha1".into(),
            kind: "ScanEngine".into(),
            name: "edge".into(),
            uid: "uid-edge".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    pub fn inputs<'a>(engine: &'a ScanEngine, console: &'a ConsoleSide) -> Inputs<'a> {
        Inputs {
            engine,
            name: "edge",
            namespace: "scanning",
            communication: engine.spec.communication,
            console,
            owner: owner(),
            default_version: "0.1.0",
        }
    }

    /// Compares `value` with the golden file `tests/golden/<name>.yaml`; `UPDATE_GOLDEN=1`
    /// rewrites it.
    pub fn assert_golden<T: serde::Serialize>(name: &str, value: &T) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(format!("{name}.yaml"));
        let rendered = match serde_yaml::to_string(value) {
            Ok(s) => s,
            Err(e) => panic!("cannot render {name}: {e}"),
        };
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            if let Err(e) = std::fs::write(&path, &rendered) {
                panic!("cannot write {}: {e}", path.display());
            }
            return;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            expected == rendered,
            "{name} differs from {} (run with UPDATE_GOLDEN=1 to accept):\n--- expected\n{expected}\n--- actual\n{rendered}",
            path.display()
        );
    }
}
