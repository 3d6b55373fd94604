//! The managed console's StatefulSet (docs/contracts.md §3).

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, KeyToPath, PodSpec, PodTemplateSpec,
    Probe, ResourceRequirements, SecretVolumeSource, TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Inputs;
use crate::controller::connection::{API_PORT, ENGINE_LISTENER_PORT};
use crate::controller::names;
use crate::controller::shared::pod::{
    container_security_context, data_claim, pod_security_context, with_ephemeral_storage,
};

pub const DATA_DIR: &str = "/var/lib/security-console";
pub const TLS_DIR: &str = "/etc/security-console/tls";
pub const ADMIN_DIR: &str = "/etc/security-console/admin";
pub const ADMIN_USER: &str = "admin";

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

pub fn image(inputs: &Inputs<'_>) -> String {
    inputs.spec.image.clone().unwrap_or_else(|| {
        format!(
            "security-console:{}",
            inputs
                .spec
                .version
                .as_deref()
                .unwrap_or(&inputs.settings.default_version)
        )
    })
}

fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(
            [
                ("cpu".to_string(), Quantity("250m".into())),
                ("memory".to_string(), Quantity("512Mi".into())),
            ]
            .into(),
        ),
        limits: Some([("memory".to_string(), Quantity("512Mi".into()))].into()),
        ..ResourceRequirements::default()
    }
}

fn tcp_probe(port: &str, period: i32) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::String(port.into()),
            host: None,
        }),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

fn secret_volume(name: &str, secret: String, items: &[(&str, &str)]) -> Volume {
    Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret),
            default_mode: Some(0o440),
            optional: Some(false),
            items: Some(
                items
                    .iter()
                    .map(|(k, p)| KeyToPath {
                        key: k.to_string(),
                        path: p.to_string(),
                        mode: None,
                    })
                    .collect(),
            ),
        }),
        ..Volume::default()
    }
}

pub fn statefulset(inputs: &Inputs<'_>) -> StatefulSet {
    let name = names::console_objects(inputs.name);
    let spec = inputs.spec;
    let storage = spec.storage.clone().unwrap_or_default();
    let container = Container {
        name: "security-console".into(),
        image: Some(image(inputs)),
        image_pull_policy: Some("IfNotPresent".into()),
        env: Some(vec![
            env("SECURITY_CONSOLE_DATA_DIR", DATA_DIR),
            env("SECURITY_CONSOLE_API_LISTEN", format!("0.0.0.0:{API_PORT}")),
            env(
                "SECURITY_CONSOLE_ENGINE_LISTEN",
                format!("0.0.0.0:{ENGINE_LISTENER_PORT}"),
            ),
            env(
                "SECURITY_CONSOLE_API_TLS_CERT_FILE",
                format!("{TLS_DIR}/tls.crt"),
            ),
            env(
                "SECURITY_CONSOLE_API_TLS_KEY_FILE",
                format!("{TLS_DIR}/tls.key"),
            ),
            env("SECURITY_CONSOLE_ADMIN_USER", ADMIN_USER),
            env(
                "SECURITY_CONSOLE_ADMIN_PASSWORD_FILE",
                format!("{ADMIN_DIR}/password"),
            ),
            env("SECURITY_CONSOLE_LOG_FORMAT", "json"),
        ]),
        ports: Some(vec![
            ContainerPort {
                name: Some("api".into()),
                container_port: API_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("engines".into()),
                container_port: ENGINE_LISTENER_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
        ]),
        resources: Some(with_ephemeral_storage(
            spec.resources.clone().unwrap_or_else(default_resources),
        )),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "data".into(),
                mount_path: DATA_DIR.into(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "api-tls".into(),
                mount_path: TLS_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "admin".into(),
                mount_path: ADMIN_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "tmp".into(),
                mount_path: "/tmp".into(),
                ..VolumeMount::default()
            },
        ]),
        // Ready when its API answers; alive while its engine listener (40815) accepts, which
        // does not depend on the API's load: a busy API makes it unready, not restarted.
        readiness_probe: Some(tcp_probe("api", 10)),
        liveness_probe: Some(tcp_probe("engines", 20)),
        security_context: Some(container_security_context()),
        ..Container::default()
    };
    StatefulSet {
        metadata: inputs.meta(name.clone()),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(name),
            selector: LabelSelector {
                match_labels: Some(names::console_selector(inputs.name)),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(names::console_labels(inputs.name)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(vec![
                        secret_volume(
                            "api-tls",
                            names::console_tls_secret(inputs.name),
                            &[("tls.crt", "tls.crt"), ("tls.key", "tls.key")],
                        ),
                        secret_volume(
                            "admin",
                            names::console_admin_secret(inputs.name),
                            &[("password", "password")],
                        ),
                        Volume {
                            name: "tmp".into(),
                            empty_dir: Some(EmptyDirVolumeSource::default()),
                            ..Volume::default()
                        },
                    ]),
                    security_context: Some(pod_security_context()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    node_selector: spec.node_selector.clone(),
                    tolerations: spec.tolerations.clone(),
                    affinity: spec.affinity.clone(),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![data_claim(
                names::console_selector(inputs.name),
                storage,
            )]),
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::controller::scan_engine::build::testing::assert_golden;
    use crate::crd::console::ManagedConsole;

    #[test]
    fn golden_statefulset() {
        let spec = ManagedConsole::default();
        let settings = settings();
        assert_golden(
            "console-statefulset",
            &statefulset(&inputs(&spec, &settings)),
        );
    }

    #[test]
    fn image_and_secrets() {
        let spec = ManagedConsole {
            version: Some("0.2.0".into()),
            ..Default::default()
        };
        let settings = settings();
        let sts = statefulset(&inputs(&spec, &settings));
        let pod = sts.spec.and_then(|s| s.template.spec).unwrap_or_default();
        assert_eq!(
            pod.containers[0].image.as_deref(),
            Some("security-console:0.2.0")
        );
        let secrets: Vec<_> = pod
            .volumes
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| v.secret.and_then(|s| s.secret_name))
            .collect();
        assert_eq!(secrets, ["main-console-api-tls", "main-console-admin"]);
    }
}
