//! The `Console` custom resource: a Security Console that ScanEngines pair with.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::pod_schema;
use super::scan_engine::ServiceType;

/// Longest Console name: the value of the `scanengine.dev/console` label of its objects and
/// engines. The schema's rule on `metadata.name` says the same.
pub const MAX_NAME: usize = super::MAX_LABEL;
/// Longest managed Console name: its StatefulSet `<name>-console` must stay within
/// [`super::MAX_STATEFULSET_NAME`].
pub const MAX_MANAGED_NAME: usize = 44;

/// A Security Console that ScanEngines pair with.
///
/// Either `managed` (the operator deploys the project's console: a StatefulSet with a
/// PersistentVolumeClaim, a Service for the REST API on 3780 and one for the engine listener on
/// 40815) or `external` (an existing console reached through its REST API). For both, the
/// operator keeps a valid pairing shared secret in a Secret it owns and renews it before it
/// expires.
// kube's printcolumn(...) lists repeat `type_`, which clippy mistakes for duplicate attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "scanengine.dev",
    version = "v1alpha1",
    kind = "Console",
    namespaced,
    doc = "A Security Console that ScanEngines pair with: managed (deployed by the operator) or external (an existing console reached over its REST API).",
    status = "ConsoleStatus",
    shortname = "con",
    category = "scanning",
    printcolumn(
        name = "Type",
        type_ = "string",
        json_path = ".status.type",
        description = "Managed or External"
    ),
    printcolumn(
        name = "URL",
        type_ = "string",
        json_path = ".status.url",
        priority = 1
    ),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.version"),
    printcolumn(
        name = "Engines",
        type_ = "integer",
        json_path = ".status.engines.total"
    ),
    printcolumn(
        name = "Active",
        type_ = "integer",
        json_path = ".status.engines.active"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    validation = Rule::new("size(self.metadata.name) <= 63").message("metadata.name of a Console must be at most 63 characters: it is the value of the scanengine.dev/console label on the console's objects and its engines"),
    validation = Rule::new("!has(self.spec.managed) || size(self.metadata.name) <= 44").message("metadata.name of a managed Console must be at most 44 characters: its StatefulSet <name>-console must stay within the 52 characters Kubernetes allows a StatefulSet, whose pods carry its name and an 11-character revision suffix in the 63-character controller-revision-hash label"),
    validation = Rule::new("!has(self.spec.managed) || self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("metadata.name of a managed Console must begin with a letter and hold only lowercase letters, digits and '-' (no '.'): it names the console's Services <name>-console and <name>-console-engines")
)]
#[x_kube(validation = Rule::new("has(self.managed) != has(self.external)").message("exactly one of spec.managed or spec.external must be set"))]
#[x_kube(validation = Rule::new("has(self.managed) == has(oldSelf.managed)").message("spec.managed and spec.external cannot be swapped on an existing Console: create a new Console instead"))]
#[serde(rename_all = "camelCase")]
pub struct ConsoleSpec {
    /// Deploy and run the project's security console in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedConsole>,

    /// Use an existing console reachable over HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalConsole>,

    /// How the operator keeps the console's pairing shared secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_secret: Option<SharedSecretSpec>,
}

/// A console the operator deploys itself.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ManagedConsole {
    /// Container image of the console. Defaults to `security-console:<operator version>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[^\\\\s]+$')").message("spec.managed.image must be an image reference without whitespace"))]
    #[schemars(length(min = 1, max = 1024))]
    pub image: Option<String>,

    /// Product version, used as the image tag when `image` is not set. Engines must run the
    /// same version as their console or the console reports them Incompatible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_][A-Za-z0-9_.-]*$')").message("spec.managed.version must be an image tag such as 0.2.0: letters, digits, '_', '.' and '-', not beginning with '.' or '-'"))]
    #[schemars(length(min = 1, max = 128))]
    pub version: Option<String>,

    /// Persistent storage for the console's database and engine-communication identity.
    /// Immutable: a new size or class would orphan the existing volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.managed.storage is immutable"))]
    #[x_kube(validation = Rule::new("!has(self.size) || isQuantity(string(self.size)) && quantity(string(self.size)).isGreaterThan(quantity('0'))").message("spec.managed.storage.size must be a positive quantity such as 1Gi"))]
    #[x_kube(validation = Rule::new("!has(self.storageClassName) || self.storageClassName == '' || self.storageClassName.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("spec.managed.storage.storageClassName must be the name of a StorageClass: lowercase letters, digits, '-' and '.'"))]
    pub storage: Option<StorageSpec>,

    /// Compute resources of the console container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "resources_schema")]
    pub resources: Option<ResourceRequirements>,

    /// Node selector of the console pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "node_selector_schema")]
    pub node_selector: Option<BTreeMap<String, String>>,

    /// Tolerations of the console pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "tolerations_schema")]
    pub tolerations: Option<Vec<Toleration>>,

    /// Affinity of the console pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// Service type of the engine listener (40815), for reverse-paired engines outside the
    /// cluster. Defaults to ClusterIP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_listener_service_type: Option<ServiceType>,
}

fn resources_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    pod_schema::resources(generator, "spec.managed.resources", None)
}

fn node_selector_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    pod_schema::node_selector("spec.managed.nodeSelector")
}

fn tolerations_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    pod_schema::tolerations(generator, "spec.managed.tolerations")
}

/// A PersistentVolumeClaim request.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Requested size, e.g. `1Gi`. Defaults to `1Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Quantity>,

    /// StorageClass of the claim; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub storage_class_name: Option<String>,
}

/// An existing console reached through its REST API.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("(has(self.caBundle) ? 1 : 0) + (has(self.caBundleRef) ? 1 : 0) + ((has(self.insecureSkipTlsVerify) && self.insecureSkipTlsVerify) ? 1 : 0) == 1").message("exactly one of spec.external.caBundle, spec.external.caBundleRef or spec.external.insecureSkipTlsVerify: true must be set"))]
#[serde(rename_all = "camelCase")]
pub struct ExternalConsole {
    /// Base URL of the console's REST API, e.g. `https://console.example.com:3780`.
    #[x_kube(validation = Rule::new("self.startsWith('https://')").message("spec.external.url must be an https:// URL"))]
    #[schemars(length(min = 1, max = 2048))]
    pub url: String,

    /// Secret in the Console's namespace holding the API user and password.
    pub credentials_secret_ref: CredentialsSecretRef,

    /// PEM-encoded CA certificates that sign the console's API certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,

    /// A Secret or ConfigMap key in the Console's namespace holding the PEM CA bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_ref: Option<CaBundleRef>,

    /// Skip verification of the console's API certificate. Only for tests and demos: whoever
    /// can intercept the connection reads the API password and the pairing shared secret. While
    /// set, the Console carries the warning condition `InsecureTls` (True, reason
    /// `InsecureSkipTlsVerify`) and gets a Warning event of that reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_tls_verify: Option<bool>,

    /// `host:port` that reverse (EngineToConsole) engines dial. Defaults to the URL's host and
    /// the engine-communication port the console reports (40815).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[^\\\\s/]+:[0-9]{1,5}$')").message("spec.external.engineListenerAddress must be host:port"))]
    #[x_kube(validation = Rule::new("!self.matches(':[0-9]+$') || self.matches(':([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$')").message("spec.external.engineListenerAddress port must be between 1 and 65535"))]
    #[schemars(length(max = 512))]
    pub engine_listener_address: Option<String>,

    /// CIDRs the console connects from when it dials ConsoleToEngine engines. Used in the
    /// engines' NetworkPolicies; when empty, engine ports admit any source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.all(c, isCIDR(c))").message("spec.external.sourceCidrs must hold CIDRs such as 192.0.2.0/24 or 2001:db8::/32"))]
    #[schemars(length(max = 64), inner(length(max = 64)))]
    pub source_cidrs: Option<Vec<String>>,
}

/// Reference to a Secret holding API credentials.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key of the user name. Defaults to `username`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_key: Option<String>,
    /// Key of the password. Defaults to `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_key: Option<String>,
}

/// Kind of object holding a CA bundle.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CaBundleKind {
    #[default]
    Secret,
    ConfigMap,
}

/// Reference to a key of a Secret or ConfigMap holding a PEM CA bundle.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CaBundleRef {
    /// `Secret` or `ConfigMap`. Defaults to Secret.
    #[serde(default)]
    pub kind: CaBundleKind,
    /// Name of the object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key holding the bundle. Defaults to `ca.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Pairing shared secret settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SharedSecretSpec {
    /// Renew the shared secret when less than this is left of its life (a Go-style duration such
    /// as `15m`). Defaults to the operator's `--secret-renewal-margin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(s|m|h))+$')").message("spec.sharedSecret.renewBefore must be a duration such as 15m or 1h30m"))]
    #[x_kube(validation = Rule::new("!self.matches('^([0-9]+(s|m|h))+$') || (self.matches('^([0-9]{1,5}(s|m|h))+$') && duration(self) > duration('0s') && duration(self) < duration('1h'))").message("spec.sharedSecret.renewBefore must be longer than 0s and shorter than 1h, the life of a shared secret"))]
    #[schemars(length(max = 32))]
    pub renew_before: Option<String>,
}

/// Observed state of a Console.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ConsoleStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Managed` or `External`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#type: Option<String>,

    /// URL of the console's REST API the operator uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,

    /// Product version the console reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,

    /// `host:port` reverse-paired engines dial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_listener_address: Option<String>,

    /// SHA-256 fingerprint of the console's engine-communication certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_fingerprint: Option<String>,

    /// Engines known to the console, by communication state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engines: Option<EngineCounts>,

    /// Where the pairing shared secret is kept (never the value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_secret: Option<SharedSecretStatus>,

    /// Conditions: Ready, ApiReachable, SharedSecretReady; InsecureTls (True, reason
    /// InsecureSkipTlsVerify) only while spec.external.insecureSkipTlsVerify is set. A Ready
    /// reason of OwnershipConflict names a same-named object the operator did not make and
    /// leaves alone.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// Engine counts by communication state as the console reports them.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EngineCounts {
    pub total: i64,
    pub active: i64,
    pub unknown: i64,
    pub pending_authorization: i64,
    pub incompatible: i64,
    pub down: i64,
}

/// Where the pairing shared secret lives.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SharedSecretStatus {
    /// Name of the Secret (key `shared-secret`) in the Console's namespace.
    pub secret_name: String,
    /// When the console stops accepting the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
}

impl Console {
    /// Whether the operator deploys this console.
    pub fn is_managed(&self) -> bool {
        self.spec.managed.is_some()
    }

    /// Whether the spec names object `name`: a Secret (`secret`) or a ConfigMap it reads the
    /// credentials or the CA bundle from.
    pub fn names_object(&self, name: &str, secret: bool) -> bool {
        let Some(external) = &self.spec.external else {
            return false;
        };
        let credentials = secret && external.credentials_secret_ref.name == name;
        let ca = external
            .ca_bundle_ref
            .as_ref()
            .is_some_and(|r| r.name == name && (r.kind == CaBundleKind::Secret) == secret);
        credentials || ca
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::names;
    use crate::crd::{MAX_LABEL, MAX_STATEFULSET_NAME};
    use kube::CustomResourceExt;

    #[test]
    fn the_name_limits_are_the_longest_names_whose_children_kubernetes_accepts() {
        let rules = crate::crd::root_rules(&Console::crd());
        for wanted in [
            format!("size(self.metadata.name) <= {MAX_NAME}"),
            format!("!has(self.spec.managed) || size(self.metadata.name) <= {MAX_MANAGED_NAME}"),
        ] {
            assert!(rules.contains(&wanted), "no rule {wanted:?} in {rules:?}");
        }
        let longest = "c".repeat(MAX_MANAGED_NAME);
        assert_eq!(names::console_objects(&longest).len(), MAX_STATEFULSET_NAME);
        assert!(names::console_objects(&format!("{longest}c")).len() > MAX_STATEFULSET_NAME);
        assert!(names::console_engine_service(&longest).len() <= MAX_LABEL);
        for value in names::console_labels(&longest).values() {
            assert!(value.len() <= MAX_LABEL);
        }
        // An external console's name is a label value of its engines and its Secret.
        let external = "c".repeat(MAX_NAME);
        for value in names::reverse_engines_of(&external).values() {
            assert!(value.len() <= MAX_LABEL);
        }
        assert!(names::shared_secret(&external).len() <= 253);
    }
}
