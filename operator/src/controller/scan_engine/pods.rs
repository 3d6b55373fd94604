//! What the engine's pod says about why the engine cannot run (pure).
//!
//! The pods come from a kube-runtime reflector store fed by a watch of the operator's engine
//! pods (see [`crate::controller::wiring`]); a reconcile never reads them with an extra request.
//! Only pods controlled by the engine's StatefulSet count, so a pod someone else labels like an
//! engine's cannot put words into its status. What a pod reports (the scheduler's message, the
//! kubelet's image pull error) is cut to [`MAX_CAUSE_MESSAGE`] and escaped; a container's
//! termination message is never copied (the engine may have written anything there).

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::ResourceExt;
use kube::runtime::reflector::Store;

use crate::console_api::bounded;
use crate::controller::names;
use crate::crd::ENGINE_LABEL;

/// The store of the operator's engine pods (label `app.kubernetes.io/name=scan-engine` and the
/// operator's managed-by label).
pub type PodStore = Store<Pod>;

/// Ready reason: the scheduler cannot place the engine's pod.
pub const POD_UNSCHEDULABLE: &str = "PodUnschedulable";
/// Ready reason: the engine's image is missing or cannot be pulled.
pub const IMAGE_PULL_FAILED: &str = "ImagePullFailed";
/// Ready reason: the engine's container keeps exiting.
pub const CRASH_LOOPING: &str = "CrashLooping";

/// Longest text copied from a pod (or the API server) into a status or an event.
pub const MAX_CAUSE_MESSAGE: usize = 512;

/// The label selector of the engine pods' watch.
pub fn watch_selector() -> String {
    format!(
        "{}=scan-engine,{}={}",
        names::NAME_LABEL,
        names::MANAGED_BY_LABEL,
        names::MANAGER
    )
}

/// Why the engine's pod does not run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodCause {
    /// The Ready reason ([`POD_UNSCHEDULABLE`], [`IMAGE_PULL_FAILED`], [`CRASH_LOOPING`]).
    pub reason: &'static str,
    pub message: String,
    /// Only a spec change can help (an image name that is not valid).
    pub stalled: bool,
}

/// The ScanEngine (its name) whose StatefulSet controls `pod`, if any.
pub fn engine_of(pod: &Pod) -> Option<String> {
    let engine = pod.labels().get(ENGINE_LABEL)?;
    let statefulset = names::engine_objects(engine);
    pod.owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && o.kind == "StatefulSet" && o.name == statefulset)
        .then(|| engine.clone())
}

/// The pods of engine `name` in `namespace` held by `store`.
pub fn of_engine(store: &PodStore, namespace: &str, name: &str) -> Vec<Pod> {
    store
        .state_filter(|p| {
            p.namespace().as_deref() == Some(namespace) && engine_of(p).as_deref() == Some(name)
        })
        .into_iter()
        .map(|p| p.as_ref().clone())
        .collect()
}

/// Since when the engine's pod is Ready (its `Ready` condition's last transition), if one is.
pub fn ready_since(pods: &[Pod]) -> Option<k8s_openapi::jiff::Timestamp> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.status.as_ref()?.conditions.as_ref())
        .flatten()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| {
            c.last_transition_time
                .as_ref()
                .map_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH, |t| t.0)
        })
}

/// Since when the engine's pod is not Ready (its `Ready` condition's last transition to False,
/// or its creation), when there is a pod and none is Ready.
pub fn not_ready_since(pods: &[Pod]) -> Option<k8s_openapi::jiff::Timestamp> {
    if pods.is_empty() || ready_since(pods).is_some() {
        return None;
    }
    pods.iter()
        .filter_map(|p| {
            let ready = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
                .and_then(|c| c.last_transition_time.as_ref())
                .map(|t| t.0);
            ready.or(p.metadata.creation_timestamp.as_ref().map(|t| t.0))
        })
        .max()
}

/// The first cause found in `pods` (pods being deleted are left out: their successor counts).
pub fn diagnose(pods: &[Pod]) -> Option<PodCause> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .find_map(diagnose_pod)
}

fn diagnose_pod(pod: &Pod) -> Option<PodCause> {
    let status = pod.status.as_ref()?;
    let name = pod.name_any();
    let unscheduled = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        .filter(|c| c.reason.as_deref() == Some("Unschedulable"));
    if let Some(c) = unscheduled {
        return Some(PodCause {
            reason: POD_UNSCHEDULABLE,
            message: format!(
                "pod {name} cannot be scheduled: {}",
                bounded(
                    c.message.as_deref().unwrap_or("no reason given"),
                    MAX_CAUSE_MESSAGE
                )
            ),
            stalled: false,
        });
    }
    status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .find_map(|c| diagnose_container(&name, c))
}

fn diagnose_container(pod: &str, c: &ContainerStatus) -> Option<PodCause> {
    let waiting = c.state.as_ref()?.waiting.as_ref()?;
    let reason = waiting.reason.as_deref()?;
    let said = waiting
        .message
        .as_deref()
        .map(|m| format!(": {}", bounded(m, MAX_CAUSE_MESSAGE)))
        .unwrap_or_default();
    match reason {
        "ErrImagePull" | "ImagePullBackOff" | "ErrImageNeverPull" | "InvalidImageName" => {
            Some(PodCause {
                reason: IMAGE_PULL_FAILED,
                message: format!(
                    "container {} of pod {pod} cannot get its image {}: {reason}{said}",
                    bounded(&c.name, 64),
                    bounded(&c.image, 256)
                ),
                stalled: reason == "InvalidImageName",
            })
        }
        "CrashLoopBackOff" => {
            let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
            let exit = match last {
                Some(t) => format!(
                    "; it last exited with {} (exit code {})",
                    bounded(t.reason.as_deref().unwrap_or("no reason"), 64),
                    t.exit_code
                ),
                None => String::new(),
            };
            Some(PodCause {
                reason: CRASH_LOOPING,
                message: format!(
                    "container {} of pod {pod} keeps crashing (CrashLoopBackOff){exit}",
                    bounded(&c.name, 64)
                ),
                stalled: false,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Engine pods as the scheduler and the kubelet report them.

    use serde_json::{Value, json};

    /// The pod of engine `edge` in `scanning` with `status`.
    pub fn pod(status: Value) -> k8s_openapi::api::core::v1::Pod {
        serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "edge-scan-engine-0",
                "namespace": "scanning",
                "labels": {
                    "app.kubernetes.io/name": "scan-engine",
                    "app.kubernetes.io/managed-by": "scan-engine-operator",
                    "scanengine.dev/engine": "edge"
                },
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "edge-scan-engine", "uid": "uid-sts", "controller": true}]
            },
            "status": status
        }))
        .unwrap_or_default()
    }

    pub fn unschedulable() -> Value {
        json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."}]})
    }

    pub fn waiting(reason: &str, message: &str) -> Value {
        json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}], "containerStatuses": [{
            "name": "scan-engine", "image": "registry.example/scan-engine:0.9.9", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": reason, "message": message}}
        }]})
    }

    pub fn crash_looping() -> Value {
        json!({"phase": "Running", "containerStatuses": [{
            "name": "scan-engine", "image": "scan-engine:0.1.0", "imageID": "", "ready": false, "restartCount": 4,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 1m20s restarting failed container=scan-engine pod=edge-scan-engine-0_scanning(uid)"}},
            "lastState": {"terminated": {"exitCode": 2, "reason": "Error", "message": "token=do-not-copy"}}
        }]})
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn each_pod_problem_has_its_reason_and_says_why() {
        let cause = diagnose(&[pod(unschedulable())]);
        assert_eq!(cause.as_ref().map(|c| c.reason), Some(POD_UNSCHEDULABLE));
        assert!(
            cause
                .as_ref()
                .is_some_and(|c| c.message.contains("1 Insufficient cpu")),
            "{cause:?}"
        );

        for (kubelet, stalled) in [
            ("ErrImagePull", false),
            ("ImagePullBackOff", false),
            ("ErrImageNeverPull", false),
            ("InvalidImageName", true),
        ] {
            let cause = diagnose(&[pod(waiting(kubelet, "manifest unknown"))]);
            let Some(cause) = cause else {
                panic!("{kubelet}: no cause")
            };
            assert_eq!(cause.reason, IMAGE_PULL_FAILED, "{kubelet}");
            assert_eq!(cause.stalled, stalled, "{kubelet}");
            assert!(
                cause
                    .message
                    .contains("registry.example/scan-engine:0.9.9: ")
                    && cause.message.contains(kubelet)
                    && cause.message.contains("manifest unknown"),
                "{}",
                cause.message
            );
        }

        let cause = diagnose(&[pod(crash_looping())]);
        let Some(cause) = cause else {
            panic!("no cause")
        };
        assert_eq!(cause.reason, CRASH_LOOPING);
        assert!(
            cause.message.contains("exited with Error (exit code 2)"),
            "{}",
            cause.message
        );
        assert!(
            !cause.message.contains("do-not-copy") && !cause.message.contains("back-off 1m20s"),
            "neither the termination message nor the changing back-off is copied: {}",
            cause.message
        );
    }

    #[test]
    fn a_healthy_pending_or_foreign_pod_names_no_cause() {
        // No scheduler has looked at it yet, or it runs.
        assert_eq!(
            diagnose(&[pod(serde_json::json!({"phase": "Pending"}))]),
            None
        );
        assert_eq!(
            diagnose(&[pod(waiting("ContainerCreating", ""))]),
            None,
            "creating is progress"
        );
        // Being deleted: its successor counts.
        let mut going = pod(unschedulable());
        going.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        assert_eq!(diagnose(&[going]), None);

        // Labelled like the engine's, but not controlled by its StatefulSet.
        let mut foreign = pod(unschedulable());
        assert_eq!(engine_of(&foreign).as_deref(), Some("edge"));
        foreign.metadata.owner_references = None;
        assert_eq!(engine_of(&foreign), None);
    }

    #[test]
    fn what_a_pod_says_is_bounded_and_escaped() {
        let long = format!("line one\n{}", "x".repeat(10_000));
        let cause = diagnose(&[pod(waiting("ErrImagePull", &long))]);
        let message = cause.map(|c| c.message).unwrap_or_default();
        assert!(
            message.chars().count() < MAX_CAUSE_MESSAGE + 400,
            "{}",
            message.len()
        );
        assert!(!message.contains('\n'), "{message}");
    }

    #[cfg(test)]
    mod readiness {
        use super::testing::pod;
        use super::*;
        use serde_json::json;

        #[test]
        fn a_pod_that_stopped_being_ready_says_since_when() {
            let ready = pod(
                json!({"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}),
            );
            let not = pod(
                json!({"conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": "2026-01-01T00:01:00Z"}]}),
            );
            assert!(not_ready_since(std::slice::from_ref(&ready)).is_none());
            assert!(ready_since(std::slice::from_ref(&ready)).is_some());
            assert_eq!(
                not_ready_since(&[not]).map(|t| t.to_string()),
                Some("2026-01-01T00:01:00Z".to_string())
            );
            assert!(
                not_ready_since(&[]).is_none(),
                "no pod: its watch event comes next"
            );
        }
    }
}
