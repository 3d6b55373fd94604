//! The `ScanEngine` custom resource: one distributed Scan Engine paired with a Console.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, LocalObjectReference, ResourceRequirements, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::console::StorageSpec;
use super::pod_schema;
use crate::controller::scan_engine::build::config::DEFAULT_CPU;

/// Default port a ConsoleToEngine engine listens on (the seeds' 40814).
pub const DEFAULT_ENGINE_PORT: i32 = 40814;

/// Longest ScanEngine name: its StatefulSet `<name>-scan-engine` must stay within
/// [`super::MAX_STATEFULSET_NAME`]. The schema's rule on `metadata.name` says the same.
pub const MAX_NAME: usize = 40;

/// A distributed Scan Engine paired with a Console.
///
/// The operator runs the engine as a StatefulSet of one pod with a PersistentVolumeClaim for its
/// identity and `consoles.xml`, pairs it with the console in the direction `communication` asks
/// for, fences it with NetworkPolicies and keeps the status equal to what the console sees.
/// Deleting a ScanEngine removes it from its console; annotate it with
/// `scanengine.dev/skip-console-cleanup: "true"` to delete it while the console is unreachable.
/// Annotate it with `scanengine.dev/refresh: <any new value>` to have the console check it now.
// kube's printcolumn(...) lists repeat `type_`, which clippy mistakes for duplicate attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "scanengine.dev",
    version = "v1alpha1",
    kind = "ScanEngine",
    namespaced,
    doc = "A distributed Scan Engine run by the operator and paired with a Console in the direction spec.communication asks for.",
    status = "ScanEngineStatus",
    shortname = "se",
    category = "scanning",
    printcolumn(
        name = "Console",
        type_ = "string",
        json_path = ".spec.consoleRef.name"
    ),
    printcolumn(
        name = "Direction",
        type_ = "string",
        json_path = ".status.communication.directionDisplay"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.communication.state"
    ),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.version"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        description = "Why the engine is or is not Ready: the console's state, or the cause that keeps it from pairing",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        priority = 1,
        json_path = ".status.conditions[?(@.type==\"Ready\")].message"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    validation = Rule::new("size(self.metadata.name) <= 40").message("metadata.name of a ScanEngine must be at most 40 characters: its StatefulSet <name>-scan-engine must stay within the 52 characters Kubernetes allows a StatefulSet, whose pods carry its name and an 11-character revision suffix in the 63-character controller-revision-hash label"),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("metadata.name of a ScanEngine must begin with a letter and hold only lowercase letters, digits and '-' (no '.'): it names the engine's Service <name>-scan-engine")
)]
#[x_kube(validation = Rule::new("!has(self.advertisedAddress) || !has(self.communication) || self.communication == 'ConsoleToEngine'").message("spec.advertisedAddress applies only to communication ConsoleToEngine"))]
#[x_kube(validation = Rule::new("!has(self.serviceType) || self.serviceType == 'ClusterIP' || !has(self.communication) || self.communication == 'ConsoleToEngine'").message("spec.serviceType NodePort or LoadBalancer applies only to communication ConsoleToEngine"))]
#[serde(rename_all = "camelCase")]
pub struct ScanEngineSpec {
    /// The Console (in the same namespace) this engine pairs with. Immutable: moving an engine
    /// to another console would orphan its registration and pairing state.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.consoleRef is immutable: delete and recreate the ScanEngine to pair it with another console"))]
    pub console_ref: ConsoleRef,

    /// Who opens the connection: `ConsoleToEngine` (standard; the console dials the engine on
    /// `port`) or `EngineToConsole` (reverse; the engine dials the console on 40815 and pairs
    /// with the shared secret). Changing it re-pairs the engine and swaps its NetworkPolicies.
    #[serde(default)]
    pub communication: Communication,

    /// Port the engine listens on for its console (ConsoleToEngine). Defaults to 40814.
    #[serde(default = "default_port")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 65535").message("spec.port must be between 1 and 65535"))]
    pub port: i32,

    /// Container image of the engine. Defaults to `scan-engine:<version>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[^\\\\s]+$')").message("spec.image must be an image reference without whitespace"))]
    #[schemars(length(min = 1, max = 1024))]
    pub image: Option<String>,

    /// Product version, used as the image tag when `image` is not set. It must equal the
    /// console's version. Defaults to the operator's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_][A-Za-z0-9_.-]*$')").message("spec.version must be an image tag such as 0.2.0: letters, digits, '_', '.' and '-', not beginning with '.' or '-'"))]
    #[schemars(length(min = 1, max = 128))]
    pub version: Option<String>,

    /// Compute resources. Memory requests default to the memory limit: engines on shared
    /// memory may run out of memory during a scan, so a request below the limit is reported
    /// in the MemoryReserved condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "resources_schema")]
    pub resources: Option<ResourceRequirements>,

    /// Persistent storage for the engine's keystore, `consoles.xml` and pairing state.
    /// Immutable: a new size or class would orphan the existing volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.storage is immutable"))]
    #[x_kube(validation = Rule::new("!has(self.size) || isQuantity(string(self.size)) && quantity(string(self.size)).isGreaterThan(quantity('0'))").message("spec.storage.size must be a positive quantity such as 1Gi"))]
    #[x_kube(validation = Rule::new("!has(self.storageClassName) || self.storageClassName == '' || self.storageClassName.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("spec.storage.storageClassName must be the name of a StorageClass: lowercase letters, digits, '-' and '.'"))]
    pub storage: Option<StorageSpec>,

    /// Node selector of the engine pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "node_selector_schema")]
    pub node_selector: Option<BTreeMap<String, String>>,

    /// Tolerations of the engine pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "tolerations_schema")]
    pub tolerations: Option<Vec<Toleration>>,

    /// Affinity of the engine pod. When unset the operator keeps engines off nodes running a
    /// console pod where it can (a distributed engine never shares the console's host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// Secrets (in the engine's namespace) with credentials for the registry of `image`: the
    /// pod's `imagePullSecrets`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "image_pull_secrets_schema")]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,

    /// PriorityClass of the engine pod, so that a scan in progress is not the first pod evicted
    /// when its node runs short.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("spec.priorityClassName must be the name of a PriorityClass: lowercase letters, digits, '-' and '.'"))]
    #[schemars(length(min = 1, max = 253))]
    pub priority_class_name: Option<String>,

    /// Extra labels of the engine pod (not of its StatefulSet or Service). The labels the
    /// operator selects and fences the pod by are its own: `app.kubernetes.io/name`,
    /// `instance`, `component`, `part-of`, `managed-by`, `version` and every `scanengine.dev/`
    /// key are refused here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "pod_labels_schema")]
    pub pod_labels: Option<BTreeMap<String, String>>,

    /// Extra annotations of the engine pod (`scanengine.dev/` keys are the operator's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "pod_annotations_schema")]
    pub pod_annotations: Option<BTreeMap<String, String>>,

    /// Extra environment variables of the engine container (a time zone, a value from a
    /// Secret or ConfigMap). Names beginning with `SCAN_ENGINE_` are the operator's, set from
    /// the rest of this spec, and are refused here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "env_schema")]
    pub env: Option<Vec<EnvVar>>,

    /// How the engine comes to trust its console (ConsoleToEngine): `Automatic` (the operator
    /// tells the engine the console's certificate fingerprint) or `Manual` (an administrator
    /// sets `enabled="1"` in `consoles.xml` on the engine's volume and restarts the pod).
    #[serde(default)]
    pub authorization: Authorization,

    /// Address (`host` or `host:port`) the console dials for ConsoleToEngine, for consoles
    /// outside the cluster. Defaults to the engine Service's cluster DNS name (or its load
    /// balancer address for `serviceType: LoadBalancer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[^\\\\s/:]+(:[0-9]{1,5})?$')").message("spec.advertisedAddress must be host or host:port"))]
    #[x_kube(validation = Rule::new("!self.matches(':[0-9]+$') || self.matches(':([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$')").message("spec.advertisedAddress port must be between 1 and 65535"))]
    #[schemars(length(max = 512))]
    pub advertised_address: Option<String>,

    /// Type of the engine's Service (ConsoleToEngine): ClusterIP (default), NodePort or
    /// LoadBalancer for consoles outside the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_type: Option<ServiceType>,
}

fn default_port() -> i32 {
    DEFAULT_ENGINE_PORT
}

fn resources_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    pod_schema::resources(generator, "spec.resources", Some(DEFAULT_CPU))
}

fn node_selector_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    pod_schema::node_selector("spec.nodeSelector")
}

fn tolerations_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    pod_schema::tolerations(generator, "spec.tolerations")
}

fn image_pull_secrets_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    pod_schema::image_pull_secrets("spec.imagePullSecrets")
}

fn pod_labels_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    pod_schema::pod_labels("spec.podLabels")
}

fn pod_annotations_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    pod_schema::pod_annotations("spec.podAnnotations")
}

fn env_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    pod_schema::env(generator, "spec.env", "SCAN_ENGINE_")
}

/// Reference to a Console in the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ConsoleRef {
    /// Name of the Console. At most 63 characters: it is the value of the engine's
    /// `scanengine.dev/console` label.
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')").message("spec.consoleRef.name must be the name of a Console: lowercase letters, digits, '-' and '.'"))]
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
}

/// Communication direction between console and engine.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Communication {
    /// Standard: the console dials the engine.
    #[default]
    ConsoleToEngine,
    /// Reverse: the engine dials the console.
    EngineToConsole,
}

impl Communication {
    /// The value the engine's `--communication` flag and the console API use.
    pub fn as_flag(self) -> &'static str {
        match self {
            Self::ConsoleToEngine => "console-to-engine",
            Self::EngineToConsole => "engine-to-console",
        }
    }

    /// The arrow shown in `kubectl get`.
    pub fn display(self) -> &'static str {
        match self {
            Self::ConsoleToEngine => "Console → Engine",
            Self::EngineToConsole => "Engine → Console",
        }
    }

    /// Parses the console API's `direction` string.
    pub fn from_flag(s: &str) -> Option<Self> {
        match s {
            "console-to-engine" => Some(Self::ConsoleToEngine),
            "engine-to-console" => Some(Self::EngineToConsole),
            _ => None,
        }
    }
}

impl fmt::Display for Communication {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ConsoleToEngine => "ConsoleToEngine",
            Self::EngineToConsole => "EngineToConsole",
        })
    }
}

/// How the engine is told to trust its console.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Authorization {
    /// The operator passes the console's certificate fingerprint to the engine.
    #[default]
    Automatic,
    /// An administrator enables the console in the engine's `consoles.xml`.
    Manual,
}

/// Kubernetes Service type.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterIP => "ClusterIP",
            Self::NodePort => "NodePort",
            Self::LoadBalancer => "LoadBalancer",
        }
    }
}

/// Communication state of an engine as its console sees it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EngineState {
    /// Not registered at the console yet.
    Pairing,
    /// Recent successful exchange.
    Active,
    /// No error recorded, but a significant lapse since the last exchange.
    Unknown,
    /// The console is not yet enabled in the engine's `consoles.xml`.
    PendingAuthorization,
    /// Console and engine run different product versions.
    Incompatible,
    /// The engine is offline: it cannot be reached or has not called.
    Down,
}

impl EngineState {
    /// Maps the console API's engine `status` string; unrecognised values are Unknown.
    pub fn from_api(status: &str) -> Self {
        match status {
            "active" => Self::Active,
            "pending-authorization" => Self::PendingAuthorization,
            "incompatible" => Self::Incompatible,
            "not-responding" => Self::Down,
            _ => Self::Unknown,
        }
    }

    /// All states, for metrics.
    pub const ALL: [EngineState; 6] = [
        Self::Pairing,
        Self::Active,
        Self::Unknown,
        Self::PendingAuthorization,
        Self::Incompatible,
        Self::Down,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pairing => "Pairing",
            Self::Active => "Active",
            Self::Unknown => "Unknown",
            Self::PendingAuthorization => "PendingAuthorization",
            Self::Incompatible => "Incompatible",
            Self::Down => "Down",
        }
    }
}

impl fmt::Display for EngineState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Observed state of a ScanEngine.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ScanEngineStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Direction the engine is paired in and its state at the console.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub communication: Option<CommunicationStatus>,

    /// The console's id of this engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_id: Option<i64>,

    /// Name the engine is registered under at the console (`<name>.<namespace>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_name: Option<String>,

    /// Product version the console reports for the engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,

    /// When the console last refreshed the engine (updated with other status changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refresh_time: Option<Time>,

    /// Value of the `scanengine.dev/refresh` annotation last acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_refresh: Option<String>,

    /// Ready's message: the cause that keeps the engine from being Ready (a pod the scheduler
    /// cannot place, an image that cannot be pulled, a crash loop, a refused child object, a
    /// missing Console), or what the console last saw, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// Conditions: Ready, Reconciling and Stalled (kstatus: docs/status.md maps every console
    /// state and cause to them), Paired, Authorized, VersionCompatible, NetworkPolicyReady,
    /// MemoryReserved, ConsoleCleanup.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// Direction and state.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CommunicationStatus {
    /// Direction the engine is paired in.
    pub direction: Communication,
    /// `Console → Engine` or `Engine → Console`, for `kubectl get`.
    pub direction_display: String,
    /// State at the console.
    pub state: EngineState,
}

impl ScanEngine {
    /// Name the engine registers under at its console.
    pub fn console_engine_name(&self) -> String {
        format!(
            "{}.{}",
            self.metadata.name.as_deref().unwrap_or_default(),
            self.metadata.namespace.as_deref().unwrap_or_default()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_console_states() {
        assert_eq!(EngineState::from_api("active"), EngineState::Active);
        assert_eq!(EngineState::from_api("unknown"), EngineState::Unknown);
        assert_eq!(
            EngineState::from_api("pending-authorization"),
            EngineState::PendingAuthorization
        );
        assert_eq!(
            EngineState::from_api("incompatible"),
            EngineState::Incompatible
        );
        assert_eq!(EngineState::from_api("not-responding"), EngineState::Down);
        assert_eq!(EngineState::from_api("something-new"), EngineState::Unknown);
    }

    #[test]
    fn the_name_limit_is_the_longest_name_whose_children_kubernetes_accepts() {
        use crate::controller::names;
        use kube::CustomResourceExt;

        let rules = crate::crd::root_rules(&ScanEngine::crd());
        assert!(
            rules.contains(&format!("size(self.metadata.name) <= {MAX_NAME}")),
            "the schema limits metadata.name to {MAX_NAME}: {rules:?}"
        );
        let longest = "e".repeat(MAX_NAME);
        let statefulset = names::engine_objects(&longest);
        assert_eq!(statefulset.len(), crate::crd::MAX_STATEFULSET_NAME);
        assert!(
            names::engine_objects(&format!("{longest}e")).len() > crate::crd::MAX_STATEFULSET_NAME
        );
        // The Service of the same name, the pod's hostname and the labels fit as well.
        assert!(format!("{statefulset}-0").len() <= crate::crd::MAX_LABEL);
        for value in names::engine_selector(&longest).values() {
            assert!(value.len() <= crate::crd::MAX_LABEL);
        }
    }

    #[test]
    fn direction_strings() {
        assert_eq!(Communication::ConsoleToEngine.display(), "Console → Engine");
        assert_eq!(Communication::EngineToConsole.display(), "Engine → Console");
        for c in [
            Communication::ConsoleToEngine,
            Communication::EngineToConsole,
        ] {
            assert_eq!(Communication::from_flag(c.as_flag()), Some(c));
        }
    }
}
