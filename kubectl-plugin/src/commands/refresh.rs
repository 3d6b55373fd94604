//! `refresh NAME [--timeout 60s]`: the console's Refresh button. Sets the refresh annotation the
//! operator honours to a new value, waits until the operator reports it has acted on that value
//! (`status.lastHandledRefresh`), and prints the engine's row as it is then.

use std::io::Write;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::Patch;
use kube::runtime::wait::await_condition;
use kube::{Api, Client};
use scan_engine_operator::crd::{REFRESH_ANNOTATION, ScanEngine};
use serde_json::json;

use crate::error::{Error, Result};
use crate::table::{self, Extra, Row, Style};

/// A value for the annotation that differs from the current one: the time, to the nanosecond.
pub fn new_value(now: Timestamp, current: Option<&str>) -> String {
    let value = now.to_string();
    if current == Some(value.as_str()) {
        format!("{value}-again")
    } else {
        value
    }
}

/// Whether `engine`'s status says the operator has acted on refresh `value`.
pub fn handled(engine: Option<&ScanEngine>, value: &str) -> bool {
    engine
        .and_then(|e| e.status.as_ref())
        .and_then(|s| s.last_handled_refresh.as_deref())
        == Some(value)
}

pub async fn run(client: &Client, namespace: &str, name: &str, timeout: Duration) -> Result<()> {
    let api: Api<ScanEngine> = Api::namespaced(client.clone(), namespace);
    let engine = super::engine(&api, namespace, name).await?;
    let current = engine
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REFRESH_ANNOTATION));
    let previous = engine
        .status
        .as_ref()
        .and_then(|s| s.last_handled_refresh.clone());
    let value = new_value(Timestamp::now(), current.map(String::as_str));
    let patch = json!({"metadata": {"annotations": {REFRESH_ANNOTATION: value}}});
    api.patch(name, &super::patch_params(), &Patch::Merge(&patch))
        .await
        .map_err(Error::kube(format!(
            "setting {REFRESH_ANNOTATION} on ScanEngine {namespace}/{name}"
        )))?;
    eprintln!(
        "Set {REFRESH_ANNOTATION}={value} on ScanEngine {namespace}/{name}; waiting up to {} for the operator to refresh it at its console",
        humantime::format_duration(timeout)
    );

    let wanted = value.clone();
    let condition = move |e: Option<&ScanEngine>| handled(e, &wanted) || e.is_none();
    let refreshed =
        match tokio::time::timeout(timeout, await_condition(api.clone(), name, condition)).await {
            Err(_elapsed) => {
                return Err(Error::RefreshTimeout {
                    engine: format!("{namespace}/{name}"),
                    value,
                    previous: previous.map_or_else(|| "unset".into(), |p| format!("{p:?}")),
                    timeout,
                });
            }
            Ok(Err(err)) => {
                return Err(Error::Refused(format!(
                    "waiting for the refresh of ScanEngine {namespace}/{name}: {err}"
                )));
            }
            Ok(Ok(engine)) => engine,
        };
    let Some(engine) = refreshed else {
        return Err(Error::NotFound {
            kind: "ScanEngine",
            namespace: namespace.into(),
            name: name.into(),
        });
    };
    let row = Row::new(&engine, &Extra::default());
    let style = Style {
        color: table::use_color(
            std::io::IsTerminal::is_terminal(&std::io::stdout()),
            std::env::var_os("NO_COLOR").as_deref(),
        ),
        ..Style::default()
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(table::render(&[row], style, Timestamp::now()).as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use scan_engine_operator::crd::ScanEngineStatus;

    fn engine(handled: Option<&str>) -> ScanEngine {
        let mut e: ScanEngine = serde_json::from_value(json!({
            "apiVersion": "scanengine.dev/v1alpha1",
            "kind": "ScanEngine",
            "metadata": {"name": "e", "namespace": "ns"},
            "spec": {"consoleRef": {"name": "c"}}
        }))
        .unwrap();
        e.status = Some(ScanEngineStatus {
            last_handled_refresh: handled.map(str::to_owned),
            ..ScanEngineStatus::default()
        });
        e
    }

    #[test]
    fn the_annotation_is_the_one_the_status_reports_on() {
        // `kubectl explain scanengine.status.lastHandledRefresh` names the annotation it follows.
        use kube::CustomResourceExt;
        let crd = serde_json::to_string(&ScanEngine::crd()).unwrap();
        assert!(
            crd.contains(&format!(
                "`{REFRESH_ANNOTATION}` annotation last acted upon"
            )),
            "the CRD documents another refresh annotation than {REFRESH_ANNOTATION}"
        );
    }

    #[test]
    fn every_refresh_asks_with_a_new_value() {
        let now: Timestamp = "2026-01-01T00:00:00.5Z".parse().unwrap();
        assert_eq!(new_value(now, None), "2026-01-01T00:00:00.5Z");
        assert_eq!(new_value(now, Some("1")), "2026-01-01T00:00:00.5Z");
        assert_eq!(
            new_value(now, Some("2026-01-01T00:00:00.5Z")),
            "2026-01-01T00:00:00.5Z-again"
        );
    }

    #[test]
    fn only_the_value_asked_for_counts_as_handled() {
        assert!(handled(Some(&engine(Some("b"))), "b"));
        assert!(!handled(Some(&engine(Some("a"))), "b"));
        assert!(!handled(Some(&engine(None)), "b"));
        assert!(!handled(None, "b"));
    }
}
