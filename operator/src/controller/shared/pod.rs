//! What every pod the operator builds has in common: the restricted Pod Security Standard,
//! bounded ephemeral storage and a `data` volume claim (pure).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSecurityContext,
    ResourceRequirements, SeccompProfile, SecurityContext, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::crd::console::StorageSpec as Storage;

/// UID and GID every container runs as (non-root).
pub const RUN_AS: i64 = 65532;
/// Default size of a data volume.
pub const DEFAULT_STORAGE: &str = "1Gi";

/// Ephemeral storage of every container the operator builds, unless its spec sets its own:
/// its logs and `/tmp` are all it writes outside its volume.
pub const EPHEMERAL_STORAGE_REQUEST: &str = "64Mi";
/// See [`EPHEMERAL_STORAGE_REQUEST`]; a runaway log or temporary file evicts the pod, not the
/// node's other pods.
pub const EPHEMERAL_STORAGE_LIMIT: &str = "1Gi";

/// `resources` with ephemeral-storage request and limit added where the spec set none.
pub fn with_ephemeral_storage(mut resources: ResourceRequirements) -> ResourceRequirements {
    const KEY: &str = "ephemeral-storage";
    resources
        .requests
        .get_or_insert_with(Default::default)
        .entry(KEY.into())
        .or_insert_with(|| Quantity(EPHEMERAL_STORAGE_REQUEST.into()));
    resources
        .limits
        .get_or_insert_with(Default::default)
        .entry(KEY.into())
        .or_insert_with(|| Quantity(EPHEMERAL_STORAGE_LIMIT.into()));
    resources
}

fn runtime_default() -> Option<SeccompProfile> {
    Some(SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    })
}

/// Restricted Pod Security Standard: pod level.
pub fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        fs_group: Some(RUN_AS),
        seccomp_profile: runtime_default(),
        ..PodSecurityContext::default()
    }
}

/// Restricted Pod Security Standard: container level.
pub fn container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        seccomp_profile: runtime_default(),
        ..SecurityContext::default()
    }
}

/// The `data` volume claim template of a StatefulSet, labelled `labels`, sized by `storage`.
pub fn data_claim(labels: BTreeMap<String, String>, storage: Storage) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".into()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: storage.storage_class_name,
            resources: Some(VolumeResourceRequirements {
                requests: Some(
                    [(
                        "storage".to_string(),
                        storage
                            .size
                            .unwrap_or_else(|| Quantity(DEFAULT_STORAGE.into())),
                    )]
                    .into(),
                ),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_s_own_ephemeral_storage_is_kept() {
        let mine = ResourceRequirements {
            limits: Some([("ephemeral-storage".to_string(), Quantity("5Gi".into()))].into()),
            ..ResourceRequirements::default()
        };
        let r = with_ephemeral_storage(mine);
        let limit = r.limits.as_ref().and_then(|l| l.get("ephemeral-storage"));
        assert_eq!(limit, Some(&Quantity("5Gi".into())));
        let request = r.requests.as_ref().and_then(|l| l.get("ephemeral-storage"));
        assert_eq!(request, Some(&Quantity(EPHEMERAL_STORAGE_REQUEST.into())));
    }

    #[test]
    fn pods_are_restricted() {
        let c = container_security_context();
        assert_eq!(c.allow_privilege_escalation, Some(false));
        assert_eq!(c.read_only_root_filesystem, Some(true));
        assert_eq!(
            c.capabilities.and_then(|c| c.drop),
            Some(vec!["ALL".to_string()])
        );
        assert_eq!(pod_security_context().run_as_non_root, Some(true));
    }
}
