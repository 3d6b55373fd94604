//! Names and labels of every object the operator creates.
//!
//! | owner | kind | name |
//! |---|---|---|
//! | ScanEngine `e` | StatefulSet, Service, NetworkPolicy | `e-scan-engine` |
//! | Console `c` (managed) | StatefulSet, API Service (3780), NetworkPolicy | `c-console` |
//! | Console `c` (managed) | engine listener Service (40815) | `c-console-engines` |
//! | Console `c` (managed) | Secret: admin password (`username`, `password`) | `c-console-admin` |
//! | Console `c` (managed) | Secret: API CA (`ca.crt`, `ca.key`) | `c-console-ca` |
//! | Console `c` (managed) | Secret: API serving cert (`tls.crt`, `tls.key`, `ca.crt`) | `c-console-api-tls` |
//! | Console `c` | Secret: pairing shared secret (`shared-secret`) | `c-console-shared-secret` |

use std::collections::BTreeMap;

use crate::crd::{COMMUNICATION_LABEL, CONSOLE_LABEL, Communication, ENGINE_LABEL};

/// The one server-side apply field manager of the operator.
pub const MANAGER: &str = "scan-engine-operator";

pub const NAME_LABEL: &str = "app.kubernetes.io/name";
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const PART_OF_LABEL: &str = "app.kubernetes.io/part-of";
pub const VERSION_LABEL: &str = "app.kubernetes.io/version";

/// Data key of the pairing shared secret in its Secret.
pub const SHARED_SECRET_KEY: &str = "shared-secret";
/// Annotation on the shared-secret Secret: RFC 3339 expiry.
pub const EXPIRES_AT_ANNOTATION: &str = "scanengine.dev/expires-at";
/// Annotation on the shared-secret Secret: full lifetime in seconds of the current secret.
pub const LIFETIME_ANNOTATION: &str = "scanengine.dev/lifetime-seconds";

pub fn engine_objects(engine: &str) -> String {
    format!("{engine}-scan-engine")
}

pub fn console_objects(console: &str) -> String {
    format!("{console}-console")
}

pub fn console_engine_service(console: &str) -> String {
    format!("{console}-console-engines")
}

pub fn console_admin_secret(console: &str) -> String {
    format!("{console}-console-admin")
}

pub fn console_ca_secret(console: &str) -> String {
    format!("{console}-console-ca")
}

pub fn console_tls_secret(console: &str) -> String {
    format!("{console}-console-api-tls")
}

pub fn shared_secret(console: &str) -> String {
    format!("{console}-console-shared-secret")
}

/// Whether an object is the operator's to write or delete: it has an owner reference to the
/// resource with `owner_uid`, or carries the operator's managed-by label. A same-named object
/// someone else made is neither, and is left alone.
pub fn is_ours(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    owner_uid: &str,
) -> bool {
    let owned = meta
        .owner_references
        .iter()
        .flatten()
        .any(|o| !owner_uid.is_empty() && o.uid == owner_uid);
    let labelled = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .is_some_and(|v| v == MANAGER);
    owned || labelled
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Labels selecting an engine's pod (stable: StatefulSet selectors are immutable).
pub fn engine_selector(engine: &str) -> BTreeMap<String, String> {
    map(&[
        (NAME_LABEL, "scan-engine"),
        (INSTANCE_LABEL, engine),
        (ENGINE_LABEL, engine),
    ])
}

/// All labels of an engine's objects and pod.
pub fn engine_labels(
    engine: &str,
    console: &str,
    communication: Communication,
) -> BTreeMap<String, String> {
    let mut labels = engine_selector(engine);
    labels.extend(map(&[
        (COMPONENT_LABEL, "scan-engine"),
        (PART_OF_LABEL, "scan-engine-operator"),
        (MANAGED_BY_LABEL, MANAGER),
        (CONSOLE_LABEL, console),
        (COMMUNICATION_LABEL, communication.as_flag()),
    ]));
    labels
}

/// Labels selecting a managed console's pod.
pub fn console_selector(console: &str) -> BTreeMap<String, String> {
    map(&[
        (NAME_LABEL, "security-console"),
        (INSTANCE_LABEL, console),
        (COMPONENT_LABEL, "console"),
        (CONSOLE_LABEL, console),
    ])
}

/// All labels of a console's objects and pod.
pub fn console_labels(console: &str) -> BTreeMap<String, String> {
    let mut labels = console_selector(console);
    labels.extend(map(&[
        (PART_OF_LABEL, "scan-engine-operator"),
        (MANAGED_BY_LABEL, MANAGER),
    ]));
    labels
}

/// Labels of the reverse-paired engines of a console (what its 40815 policy admits).
pub fn reverse_engines_of(console: &str) -> BTreeMap<String, String> {
    map(&[
        (NAME_LABEL, "scan-engine"),
        (CONSOLE_LABEL, console),
        (
            COMMUNICATION_LABEL,
            Communication::EngineToConsole.as_flag(),
        ),
    ])
}
