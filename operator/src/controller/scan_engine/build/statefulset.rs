//! The engine's StatefulSet: one pod, a PVC for its data dir, restricted security context.

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Container, ContainerPort, EmptyDirVolumeSource, HTTPGetAction, PodAffinityTerm,
    PodAntiAffinity, PodSpec, PodTemplateSpec, Probe, SecretVolumeSource, Volume, VolumeMount,
    WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Inputs;
use super::config::{self, DATA_DIR, HEALTH_PORT, SHARED_SECRET_DIR};
use crate::controller::names::{self, COMPONENT_LABEL};
use crate::controller::shared::pod::{
    container_security_context, data_claim, pod_security_context, with_ephemeral_storage,
};
use crate::crd::Communication;

/// Keeps the engine off nodes running a console pod where possible (the seeds: never put a
/// distributed engine on the console's host). Preferred, not required, so single-node clusters
/// still schedule it; set `spec.affinity` to make it strict.
pub fn default_affinity() -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        label_selector: Some(LabelSelector {
                            match_labels: Some(
                                [(COMPONENT_LABEL.to_string(), "console".to_string())].into(),
                            ),
                            match_expressions: None,
                        }),
                        topology_key: "kubernetes.io/hostname".into(),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            required_during_scheduling_ignored_during_execution: None,
        }),
        ..Affinity::default()
    }
}

fn http_probe(path: &str, period: i32, failure: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("health".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failure),
        ..Probe::default()
    }
}

pub fn statefulset(inputs: &Inputs<'_>) -> StatefulSet {
    let spec = &inputs.engine.spec;
    let meta = inputs.meta();
    let name = names::engine_objects(inputs.name);
    // The user's extra pod labels first: the operator's own, which select and fence the pod,
    // always win (admission refuses them anyway).
    let mut labels = spec.pod_labels.clone().unwrap_or_default();
    labels.extend(meta.labels.clone().unwrap_or_default());
    let annotations = spec
        .pod_annotations
        .clone()
        .filter(|a| !a.is_empty())
        .map(|mut a| {
            a.retain(|k, _| !k.starts_with(crate::crd::GROUP_PREFIX));
            a
        });
    let (resources, _) = config::resources(inputs);

    let mut ports = vec![ContainerPort {
        name: Some("health".into()),
        container_port: HEALTH_PORT,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }];
    let mut mounts = vec![
        VolumeMount {
            name: "data".into(),
            mount_path: DATA_DIR.into(),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        },
    ];
    let mut volumes = vec![Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }];
    match inputs.communication {
        Communication::ConsoleToEngine => ports.insert(
            0,
            ContainerPort {
                name: Some("engine".into()),
                container_port: inputs.port(),
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
        ),
        Communication::EngineToConsole => {
            if let Some(secret) = &inputs.console.shared_secret_name {
                mounts.push(VolumeMount {
                    name: "shared-secret".into(),
                    mount_path: SHARED_SECRET_DIR.into(),
                    read_only: Some(true),
                    ..VolumeMount::default()
                });
                volumes.push(Volume {
                    name: "shared-secret".into(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some(secret.clone()),
                        default_mode: Some(0o440),
                        optional: Some(false),
                        items: None,
                    }),
                    ..Volume::default()
                });
            }
        }
    }

    let container = Container {
        name: "scan-engine".into(),
        image: Some(config::image(inputs)),
        image_pull_policy: Some("IfNotPresent".into()),
        env: Some(config::environment(inputs)),
        ports: Some(ports),
        resources: Some(with_ephemeral_storage(resources)),
        volume_mounts: Some(mounts),
        readiness_probe: Some(http_probe("/readyz", 10, 3)),
        liveness_probe: Some(http_probe("/healthz", 20, 3)),
        security_context: Some(container_security_context()),
        ..Container::default()
    };

    let claim = data_claim(
        names::engine_selector(inputs.name),
        spec.storage.clone().unwrap_or_default(),
    );

    StatefulSet {
        metadata: meta,
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(name),
            selector: LabelSelector {
                match_labels: Some(names::engine_selector(inputs.name)),
                match_expressions: None,
            },
            pod_management_policy: Some("Parallel".into()),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations,
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(volumes),
                    security_context: Some(pod_security_context()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    node_selector: config::node_selector(inputs),
                    tolerations: spec.tolerations.clone(),
                    affinity: Some(spec.affinity.clone().unwrap_or_else(default_affinity)),
                    termination_grace_period_seconds: Some(30),
                    image_pull_secrets: spec.image_pull_secrets.clone().filter(|s| !s.is_empty()),
                    priority_class_name: spec.priority_class_name.clone(),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![claim]),
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn golden_console_to_engine() {
        let se = engine(Communication::ConsoleToEngine);
        let console = console_side();
        assert_golden(
            "engine-statefulset-console-to-engine",
            &statefulset(&inputs(&se, &console)),
        );
    }

    #[test]
    fn golden_engine_to_console() {
        let se = engine(Communication::EngineToConsole);
        let console = console_side();
        assert_golden(
            "engine-statefulset-engine-to-console",
            &statefulset(&inputs(&se, &console)),
        );
    }

    #[test]
    fn pod_knobs_reach_the_pod_but_never_the_operators_own_labels_or_variables() {
        use k8s_openapi::api::core::v1::{EnvVar, LocalObjectReference};
        use std::collections::BTreeMap;
        let mut se = engine(Communication::EngineToConsole);
        se.spec.image_pull_secrets = Some(vec![LocalObjectReference {
            name: "registry-creds".into(),
        }]);
        se.spec.priority_class_name = Some("scanning-high".into());
        se.spec.pod_labels = Some(BTreeMap::from([
            ("team".to_owned(), "red".to_owned()),
            (names::INSTANCE_LABEL.to_owned(), "hijacked".to_owned()),
        ]));
        se.spec.pod_annotations = Some(BTreeMap::from([
            ("example.com/owner".to_owned(), "secops".to_owned()),
            ("scanengine.dev/refresh".to_owned(), "x".to_owned()),
        ]));
        se.spec.env = Some(vec![
            EnvVar {
                name: "TZ".into(),
                value: Some("Europe/Berlin".into()),
                value_from: None,
            },
            EnvVar {
                name: "SCAN_ENGINE_NAME".into(),
                value: Some("spoofed".into()),
                value_from: None,
            },
        ]);
        let console = console_side();
        let sts = statefulset(&inputs(&se, &console));
        let template = sts.spec.map(|s| s.template).unwrap_or_default();
        let meta = template.metadata.unwrap_or_default();
        let labels = meta.labels.unwrap_or_default();
        assert_eq!(labels.get("team").map(String::as_str), Some("red"));
        assert_eq!(
            labels.get(names::INSTANCE_LABEL).map(String::as_str),
            Some("edge"),
            "the operator's selector label wins"
        );
        let annotations = meta.annotations.unwrap_or_default();
        assert_eq!(
            annotations.get("example.com/owner").map(String::as_str),
            Some("secops")
        );
        assert!(!annotations.contains_key("scanengine.dev/refresh"));
        let pod = template.spec.unwrap_or_default();
        assert_eq!(pod.priority_class_name.as_deref(), Some("scanning-high"));
        assert_eq!(
            pod.image_pull_secrets
                .unwrap_or_default()
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>(),
            vec!["registry-creds"]
        );
        let env = pod.containers[0].env.clone().unwrap_or_default();
        let value = |name: &str| {
            env.iter()
                .filter(|v| v.name == name)
                .map(|v| v.value.clone().unwrap_or_default())
                .collect::<Vec<_>>()
        };
        assert_eq!(value("TZ"), vec!["Europe/Berlin"]);
        assert_eq!(
            value("SCAN_ENGINE_NAME"),
            vec![se.console_engine_name()],
            "the operator's variable, once"
        );
    }

    #[test]
    fn restricted_pod_security() {
        let se = engine(Communication::ConsoleToEngine);
        let console = console_side();
        let sts = statefulset(&inputs(&se, &console));
        let pod = sts.spec.and_then(|s| s.template.spec).unwrap_or_default();
        let psc = pod.security_context.unwrap_or_default();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(
            psc.seccomp_profile.map(|p| p.type_).as_deref(),
            Some("RuntimeDefault")
        );
        for c in &pod.containers {
            let sc = c.security_context.clone().unwrap_or_default();
            assert_eq!(sc.allow_privilege_escalation, Some(false));
            assert_eq!(sc.read_only_root_filesystem, Some(true));
            assert_eq!(
                sc.capabilities.and_then(|c| c.drop),
                Some(vec!["ALL".to_string()])
            );
        }
    }

    #[test]
    fn key_properties() {
        let se = engine(Communication::EngineToConsole);
        let console = console_side();
        let sts = statefulset(&inputs(&se, &console));
        assert_eq!(sts.metadata.name.as_deref(), Some("edge-scan-engine"));
        assert_eq!(
            sts.metadata
                .owner_references
                .as_ref()
                .map(|o| o[0].controller),
            Some(Some(true))
        );
        let spec = sts.spec.unwrap_or_default();
        assert_eq!(spec.replicas, Some(1));
        let claim = &spec.volume_claim_templates.unwrap_or_default()[0];
        assert_eq!(claim.metadata.name.as_deref(), Some("data"));
        let pod = spec.template.spec.unwrap_or_default();
        let mounts = pod.containers[0].volume_mounts.clone().unwrap_or_default();
        assert!(
            mounts
                .iter()
                .any(|m| m.name == "data" && m.mount_path == "/var/lib/scan-engine")
        );
        assert!(
            mounts
                .iter()
                .any(|m| m.name == "shared-secret" && m.read_only == Some(true))
        );
        // Reverse engines listen on nothing but health.
        let ports = pod.containers[0].ports.clone().unwrap_or_default();
        assert_eq!(ports.len(), 1);
        let labels = spec
            .template
            .metadata
            .and_then(|m| m.labels)
            .unwrap_or_default();
        assert_eq!(
            labels
                .get("scanengine.dev/communication")
                .map(String::as_str),
            Some("engine-to-console")
        );
        assert!(pod.affinity.and_then(|a| a.pod_anti_affinity).is_some());
    }
}
