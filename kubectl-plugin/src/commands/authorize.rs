//! `authorize NAME`: the administrator's step of Manual authorization. An engine with
//! `authorization: Manual` answers its console "pending authorization" until the console is
//! enabled in the engine's `consoles.xml`; this runs
//! `/usr/local/bin/scan-engine consoles enable <the Console's certificate fingerprint>` in the
//! engine pod through the pods/exec API (the image has no shell, but it needs none: the engine
//! binary is the command) and then deletes the pod, so the StatefulSet starts it again and the
//! engine reads its trust list at start-up.

use std::io::Write;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{AttachParams, DeleteParams, ListParams};
use kube::{Api, Client, ResourceExt};
use scan_engine_operator::controller::names;
use scan_engine_operator::controller::scan_engine::pods;
use scan_engine_operator::crd::scan_engine::Authorization;
use scan_engine_operator::crd::{Communication, EngineState, ScanEngine};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::{Error, Result};
use crate::table::state_words;

/// The engine binary in the engine image (its entrypoint).
pub const ENGINE_BINARY: &str = "/usr/local/bin/scan-engine";
/// Most output read from the command, per stream.
const MAX_OUTPUT: u64 = 64 * 1024;

/// Why `authorize` does not apply to `engine`, if it does not.
pub fn refusal(engine: &ScanEngine) -> Option<String> {
    let id = format!(
        "ScanEngine {}/{}",
        engine.namespace().unwrap_or_default(),
        engine.name_any()
    );
    if engine.spec.authorization != Authorization::Manual {
        return Some(format!(
            "{id} uses authorization Automatic: the operator tells the engine its console's \
             certificate fingerprint itself, so there is nothing to authorize by hand"
        ));
    }
    if engine.spec.communication != Communication::ConsoleToEngine {
        return Some(format!(
            "{id} pairs EngineToConsole: a reverse engine pairs with the shared secret and has \
             no console to authorize (Manual authorization applies to ConsoleToEngine)"
        ));
    }
    let state = engine
        .status
        .as_ref()
        .and_then(|s| s.communication.as_ref())
        .map(|c| c.state);
    match state {
        Some(EngineState::PendingAuthorization) => None,
        Some(other) => Some(format!(
            "{id} is {}, not Pending Authorization: only an engine whose console waits to be \
             enabled needs authorizing",
            state_words(other)
        )),
        None => Some(format!(
            "{id} has no state yet: its console has not reached it. Authorize it once \
             `kubectl scanengine get` shows Pending Authorization"
        )),
    }
}

/// The command run in the engine pod.
pub fn command(fingerprint: &str) -> [String; 4] {
    [
        ENGINE_BINARY.into(),
        "consoles".into(),
        "enable".into(),
        fingerprint.into(),
    ]
}

/// The running pod of `engine` among `pods`.
pub fn running_pod<'a>(engine: &str, candidates: &'a [Pod]) -> Option<&'a Pod> {
    candidates.iter().find(|pod| {
        pods::engine_of(pod).as_deref() == Some(engine)
            && pod.metadata.deletion_timestamp.is_none()
            && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    })
}

async fn read_all(stream: Option<impl AsyncRead + Unpin>) -> String {
    let mut bytes = Vec::new();
    if let Some(stream) = stream {
        // What was read before an error is still worth showing.
        let _ = stream.take(MAX_OUTPUT).read_to_end(&mut bytes).await;
    }
    String::from_utf8_lossy(&bytes).trim().to_owned()
}

pub async fn run(client: &Client, namespace: &str, name: &str) -> Result<()> {
    let api: Api<ScanEngine> = Api::namespaced(client.clone(), namespace);
    let engine = super::engine(&api, namespace, name).await?;
    if let Some(why) = refusal(&engine) {
        return Err(Error::Refused(why));
    }
    let consoles = Api::namespaced(client.clone(), namespace);
    let console_name = &engine.spec.console_ref.name;
    let console = super::console(&consoles, namespace, console_name).await?;
    let Some(fingerprint) = console
        .status
        .as_ref()
        .and_then(|s| s.certificate_fingerprint.clone())
    else {
        return Err(Error::Refused(format!(
            "Console {namespace}/{console_name} has no status.certificateFingerprint yet: the \
             operator has not read the console's certificate, so there is nothing to enable"
        )));
    };

    let pod_api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = names::engine_selector(name)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let candidates = pod_api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::kube(format!(
            "listing the pods of ScanEngine {namespace}/{name}"
        )))?;
    let Some(pod) = running_pod(name, &candidates.items) else {
        return Err(Error::Refused(format!(
            "ScanEngine {namespace}/{name} has no running pod (StatefulSet {}): the console can \
             only be enabled in a running engine",
            names::engine_objects(name)
        )));
    };
    let pod_name = pod.name_any();

    let command = command(&fingerprint);
    let shown = command.join(" ");
    let exec_failed = |message: String| Error::Exec {
        command: shown.clone(),
        namespace: namespace.into(),
        pod: pod_name.clone(),
        message,
    };
    let mut process = pod_api
        .exec(
            &pod_name,
            command.clone(),
            &AttachParams::default()
                .stdin(false)
                .stdout(true)
                .stderr(true),
        )
        .await
        .map_err(|err| exec_failed(format!("the pods/exec request failed: {err}")))?;
    let status = process.take_status();
    let (stdout, stderr) = tokio::join!(read_all(process.stdout()), read_all(process.stderr()));
    let status = match status {
        Some(status) => status.await,
        None => None,
    };
    process
        .join()
        .await
        .map_err(|err| exec_failed(format!("the exec stream failed: {err}")))?;
    if status.as_ref().and_then(|s| s.status.as_deref()) != Some("Success") {
        let reason = status
            .and_then(|s| s.message)
            .unwrap_or_else(|| "no exit status".into());
        let message = if stderr.is_empty() {
            reason
        } else {
            format!("{stderr} ({reason})")
        };
        return Err(exec_failed(message));
    }

    let mut out = std::io::stdout().lock();
    if !stdout.is_empty() {
        writeln!(out, "{stdout}")?;
    }
    writeln!(
        out,
        "Enabled console {console_name} ({fingerprint}) in the consoles.xml of pod {namespace}/{pod_name}."
    )?;
    pod_api
        .delete(&pod_name, &DeleteParams::default())
        .await
        .map_err(Error::kube(format!(
            "deleting pod {namespace}/{pod_name} so that the engine restarts; delete it yourself \
             (the console stays enabled)"
        )))?;
    writeln!(
        out,
        "Deleted pod {namespace}/{pod_name}: its StatefulSet starts it again and the engine reads \
         consoles.xml at start-up. `kubectl scanengine refresh {name} -n {namespace}` then shows \
         the new state."
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn engine(authorization: &str, communication: &str, state: Option<&str>) -> ScanEngine {
        let mut value = json!({
            "apiVersion": "scanengine.dev/v1alpha1",
            "kind": "ScanEngine",
            "metadata": {"name": "edge", "namespace": "scanning"},
            "spec": {
                "consoleRef": {"name": "c"},
                "communication": communication,
                "authorization": authorization,
            }
        });
        if let Some(state) = state {
            value["status"] = json!({"communication": {
                "direction": communication,
                "directionDisplay": "",
                "state": state,
            }});
        }
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn only_a_manual_engine_pending_authorization_is_authorized() {
        assert_eq!(
            refusal(&engine(
                "Manual",
                "ConsoleToEngine",
                Some("PendingAuthorization")
            )),
            None
        );
        let automatic = refusal(&engine(
            "Automatic",
            "ConsoleToEngine",
            Some("PendingAuthorization"),
        ))
        .unwrap();
        assert!(
            automatic.starts_with("ScanEngine scanning/edge uses authorization Automatic"),
            "{automatic}"
        );
        let active = refusal(&engine("Manual", "ConsoleToEngine", Some("Active"))).unwrap();
        assert!(
            active.contains("is Active, not Pending Authorization"),
            "{active}"
        );
        let reverse = refusal(&engine(
            "Manual",
            "EngineToConsole",
            Some("PendingAuthorization"),
        ))
        .unwrap();
        assert!(reverse.contains("pairs EngineToConsole"), "{reverse}");
        let new = refusal(&engine("Manual", "ConsoleToEngine", None)).unwrap();
        assert!(new.contains("has no state yet"), "{new}");
    }

    #[test]
    fn the_command_is_the_engine_binary_itself() {
        assert_eq!(
            command("sha256:ab"),
            [
                "/usr/local/bin/scan-engine",
                "consoles",
                "enable",
                "sha256:ab"
            ]
        );
    }

    #[test]
    fn only_a_running_pod_of_the_engines_statefulset_is_used() {
        let pod = |name: &str, engine: &str, owner: &str, phase: &str| -> Pod {
            serde_json::from_value(json!({
                "metadata": {
                    "name": name,
                    "labels": {"scanengine.dev/engine": engine},
                    "ownerReferences": [{
                        "apiVersion": "apps/v1", "kind": "StatefulSet", "name": owner,
                        "uid": "u", "controller": true
                    }]
                },
                "status": {"phase": phase}
            }))
            .unwrap()
        };
        let pods = [
            pod("stray", "edge", "someone-else", "Running"),
            pod("edge-scan-engine-0", "edge", "edge-scan-engine", "Pending"),
        ];
        assert!(running_pod("edge", &pods).is_none());
        let pods = [
            pod("edge-scan-engine-0", "edge", "edge-scan-engine", "Running"),
            pod(
                "other-scan-engine-0",
                "other",
                "other-scan-engine",
                "Running",
            ),
        ];
        assert_eq!(
            running_pod("edge", &pods).map(|p| p.name_any()).as_deref(),
            Some("edge-scan-engine-0")
        );
    }
}
