//! Pure builders of a managed console's objects.

pub mod network_policy;
pub mod service;
pub mod statefulset;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::controller::Settings;
use crate::controller::names;
use crate::crd::console::ManagedConsole;

/// Everything the builders read.
#[derive(Clone, Debug)]
pub struct Inputs<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub spec: &'a ManagedConsole,
    pub owner: OwnerReference,
    pub settings: &'a Settings,
}

impl Inputs<'_> {
    pub fn meta(&self, name: String) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.to_string()),
            labels: Some(names::console_labels(self.name)),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }
}

/// The complete desired set of a managed console's objects (Secrets are created separately,
/// once, and never rewritten).
#[derive(Clone, Debug)]
pub struct Desired {
    pub statefulset: StatefulSet,
    pub api_service: Service,
    pub engine_service: Service,
    pub network_policy: NetworkPolicy,
}

pub fn desired(inputs: &Inputs<'_>) -> Desired {
    Desired {
        statefulset: statefulset::statefulset(inputs),
        api_service: service::api_service(inputs),
        engine_service: service::engine_service(inputs),
        network_policy: network_policy::network_policy(inputs),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "scanengine.dev/v1alpha1".into(),
            kind: "Console".into(),
            name: "main".into(),
            uid: "uid-main".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    pub fn inputs<'a>(spec: &'a ManagedConsole, settings: &'a Settings) -> Inputs<'a> {
        Inputs {
            name: "main",
            namespace: "scanning",
            spec,
            owner: owner(),
            settings,
        }
    }

    pub fn settings() -> Settings {
        Settings {
            operator_namespace: "scan-engine-system".into(),
            default_version: "0.1.0".into(),
            ..Settings::default()
        }
    }
}
