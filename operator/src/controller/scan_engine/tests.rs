//! ScanEngine reconciles against a mocked API server and a fake console.

use std::sync::Arc;

use http::Method;
use serde_json::{Value, json};

use super::pods::testing as pod;
use super::reconcile;
use crate::Error;
use crate::console_api::fake::FakeConsole;
use crate::controller::fixtures::{
    Scenario, after, context_with, drive, mock_client, next_context,
};
use crate::crd::{Communication, ScanEngine};

/// What the stores hold in most tests: the Console and its connection Secrets.
fn objects() -> Vec<Value> {
    vec![
        console(),
        secret(
            "main-console-admin",
            &[("username", "admin"), ("password", "pw")],
        ),
        secret("main-console-ca", &[("ca.crt", "PEM")]),
    ]
}

/// [`objects`] and the engine's pod with `status`, as the pod watch would hold it.
fn with_pod(status: Value) -> Vec<Value> {
    let mut o = objects();
    o.push(serde_json::to_value(pod::pod(status)).unwrap_or_default());
    o
}

const NS: &str = "scanning";
const SE_PATH: &str = "/apis/scanengine.dev/v1alpha1/namespaces/scanning/scanengines/edge";

fn console() -> Value {
    json!({
        "apiVersion": "scanengine.dev/v1alpha1",
        "kind": "Console",
        "metadata": {"name": "main", "namespace": NS, "uid": "uid-main", "generation": 1},
        "spec": {"managed": {}},
        "status": {
            "type": "Managed",
            "url": "https://main-console.scanning.svc:3780",
            "version": "0.1.0",
            "engineListenerAddress": "main-console-engines.scanning.svc:40815",
            "certificateFingerprint": "sha256:c0ffee",
            "sharedSecret": {"secretName": "main-console-shared-secret", "expiresAt": "2026-01-01T01:00:00Z"},
            "conditions": []
        }
    })
}

fn secret(name: &str, data: &[(&str, &str)]) -> Value {
    use base64::Engine as _;
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                Value::String(base64::engine::general_purpose::STANDARD.encode(v)),
            )
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS}, "data": data})
}

fn engine(communication: Communication) -> ScanEngine {
    let mut se = crate::controller::scan_engine::build::testing::engine(communication);
    se.metadata.finalizers = Some(vec![crate::crd::ENGINE_FINALIZER.into()]);
    se
}

/// The requests of a first apply: each child is not in its store yet, so it is read once
/// (absent) and applied. A reverse engine has no Service, and none in the store to delete.
fn applied(scenario: Scenario, communication: Communication) -> Scenario {
    let s = scenario.first_apply(
        "/apis/networking.k8s.io/v1",
        NS,
        "networkpolicies",
        "edge-scan-engine",
    );
    let s = match communication {
        Communication::ConsoleToEngine => {
            s.first_apply("/api/v1", NS, "services", "edge-scan-engine")
        }
        Communication::EngineToConsole => s,
    };
    s.first_apply("/apis/apps/v1", NS, "statefulsets", "edge-scan-engine")
}

/// A Service left from when the engine was Console → Engine, as its store holds it.
fn leftover_service() -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "edge-scan-engine", "namespace": NS, "uid": "uid-svc", "resourceVersion": "5", "ownerReferences": [{"apiVersion": "scanengine.dev/v1alpha1", "kind": "ScanEngine", "name": "edge", "uid": "uid-edge", "controller": true}]}})
}

/// The leftover Service is deleted (exactly it: no read first, the store has it).
fn leftover_service_deleted(s: Scenario) -> Scenario {
    s.expect(
        Method::DELETE,
        "/api/v1/namespaces/scanning/services/edge-scan-engine?",
        |_| {
            (
                http::StatusCode::OK,
                json!({"apiVersion": "v1", "kind": "Status", "status": "Success"}),
            )
        },
    )
}

/// Expects the status write; answers with the engine holding the new status.
fn status_patch(s: Scenario, se: &ScanEngine) -> Scenario {
    let mut obj = serde_json::to_value(se).unwrap_or_default();
    s.expect(
        Method::PATCH,
        format!("{SE_PATH}/status?&force=true&fieldManager=scan-engine-operator"),
        move |body| {
            obj["status"] = body["status"].clone();
            (http::StatusCode::OK, obj)
        },
    )
}

/// Expects a JSON patch of the engine's finalizers; answers with the engine.
fn finalizer_patch(s: Scenario, se: &ScanEngine) -> Scenario {
    let obj = serde_json::to_value(se).unwrap_or_default();
    s.expect(Method::PATCH, format!("{SE_PATH}?"), move |_| {
        (http::StatusCode::OK, obj)
    })
}

fn condition<'a>(status: &'a Value, type_: &str) -> (&'a str, &'a str) {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .map_or(("", ""), |c| {
            (
                c["status"].as_str().unwrap_or(""),
                c["reason"].as_str().unwrap_or(""),
            )
        })
}

#[tokio::test]
async fn adds_the_finalizer_first() {
    let (client, handle) = mock_client();
    let fake = FakeConsole::default();
    let mut se = engine(Communication::ConsoleToEngine);
    se.metadata.finalizers = None;
    let scenario = finalizer_patch(Scenario::new(), &se);
    let (result, seen) = drive(
        reconcile(Arc::new(se), context_with(client, &fake, &objects())),
        scenario.run(handle),
    )
    .await;
    assert!(result.is_ok(), "{result:?}");
    let ops = seen[0].body.to_string();
    assert!(
        ops.contains("\"op\":\"add\"") && ops.contains("scanengine.dev/console-cleanup"),
        "{ops}"
    );
}

#[tokio::test]
async fn creates_registers_and_writes_status_then_is_quiet() {
    let (client, handle) = mock_client();
    let fake = FakeConsole::default();
    let ctx = context_with(client, &fake, &objects());
    let se = engine(Communication::ConsoleToEngine);
    let scenario = status_patch(
        applied(Scenario::new(), Communication::ConsoleToEngine).event(NS),
        &se,
    )
    .event(NS);
    let (result, seen) = drive(
        reconcile(Arc::new(se.clone()), ctx.clone()),
        scenario.run(handle),
    )
    .await;
    assert!(result.is_ok(), "{result:?}");

    // The objects applied.
    let np = &seen[1].body;
    assert_eq!(np["spec"]["ingress"][0]["ports"][0]["port"], 40814);
    assert_eq!(
        np["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["scanengine.dev/console"],
        "main"
    );
    let sts = &seen[5].body;
    assert_eq!(sts["metadata"]["ownerReferences"][0]["controller"], true);
    let env = sts["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
    assert!(
        env.contains("SCAN_ENGINE_TRUSTED_CONSOLE_FINGERPRINT") && env.contains("sha256:c0ffee"),
        "{env}"
    );

    // Registered at the console with the Service's DNS name.
    assert_eq!(
        fake.state()
            .engines
            .get(&7)
            .and_then(|e| e.address.clone())
            .as_deref(),
        Some("edge-scan-engine.scanning.svc")
    );
    assert!(
        seen[6].body["note"]
            .as_str()
            .unwrap_or("")
            .contains("registered at Console main as engine 7")
    );

    // Status.
    let status = &seen[7].body["status"];
    assert_eq!(status["communication"]["direction"], "ConsoleToEngine");
    assert_eq!(
        status["communication"]["directionDisplay"],
        "Console → Engine"
    );
    assert_eq!(status["communication"]["state"], "Active");
    assert_eq!(status["engineId"], 7);
    assert_eq!(status["version"], "0.1.0");
    assert_eq!(status["observedGeneration"], 1);
    for t in [
        "Ready",
        "Paired",
        "Authorized",
        "VersionCompatible",
        "NetworkPolicyReady",
        "MemoryReserved",
    ] {
        assert_eq!(condition(status, t).0, "True", "{t}: {status}");
    }
    assert!(
        seen[8].body["note"]
            .as_str()
            .unwrap_or("")
            .contains("none → Active")
    );

    // The wake-ups that follow (the watch events of those applies and of the status write),
    // and every periodic refresh after: the stores hold what was applied, the console's
    // listing says the same. No request at all, and no console call.
    let mut se2 = se;
    se2.status = serde_json::from_value(status.clone()).ok();
    let stored = after(&objects(), &seen);
    let calls = fake.state().calls.len();
    for _ in 0..2 {
        let (client, handle) = mock_client();
        let (result, quiet) = drive(
            reconcile(
                Arc::new(se2.clone()),
                next_context(client, &fake, &ctx, &stored),
            ),
            Scenario::new().run(handle),
        )
        .await;
        assert!(result.is_ok(), "{result:?}");
        assert!(quiet.is_empty(), "{quiet:?}");
    }
    assert_eq!(fake.state().calls.len(), calls, "{:?}", fake.state().calls);
    assert_eq!(fake.state().engines.len(), 1, "no second registration");

    // Someone edits the StatefulSet (its store copy lacks a field the operator sets): only the
    // StatefulSet is applied again, without a read (the store shows it is the operator's).
    let edited: Vec<Value> = stored
        .iter()
        .cloned()
        .map(|mut o| {
            if o["kind"] == "StatefulSet" {
                o["spec"]["template"]["spec"]["containers"][0]["image"] = json!("edited:latest");
            }
            o
        })
        .collect();
    let (client, handle) = mock_client();
    let scenario = Scenario::new().apply("/apis/apps/v1", NS, "statefulsets", "edge-scan-engine");
    let (result, seen) = drive(
        reconcile(Arc::new(se2), next_context(client, &fake, &ctx, &edited)),
        scenario.run(handle),
    )
    .await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(seen.len(), 1, "{seen:?}");
}

#[tokio::test]
async fn a_reverse_engine_deletes_a_leftover_service_once() {
    let (client, handle) = mock_client();
    let fake = FakeConsole::default();
    let mut stored = objects();
    stored.push(leftover_service());
    let ctx = context_with(client, &fake, &stored);
    let se = engine(Communication::EngineToConsole);
    // A Service left from when the engine was Console → Engine: deleted.
    let scenario = Scenario::new().first_apply(
        "/apis/networking.k8s.io/v1",
        NS,
        "networkpolicies",
        "edge-scan-engine",
    );
    let scenario = leftover_service_deleted(scenario).first_apply(
        "/apis/apps/v1",
        NS,
        "statefulsets",
        "edge-scan-engine",
    );
    let scenario = status_patch(scenario, &se).event(NS);
    let (result, seen) = drive(
        reconcile(Arc::new(se.clone()), ctx.clone()),
        scenario.run(handle),
    )
    .await;
    assert!(result.is_ok(), "{result:?}");
    assert!(seen.iter().any(|s| s.method == Method::DELETE));

    // Once its deletion reached the store, the refresh after that makes no request at all.
    let mut se2 = se;
    se2.status = seen
        .iter()
        .find(|s| s.path.contains("/status"))
        .and_then(|s| serde_json::from_value(s.body["status"].clone()).ok());
    let (client, handle) = mock_client();
    let ctx2 = next_context(client, &fake, &ctx, &after(&objects(), &seen));
    let (result, seen) = drive(reconcile(Arc::new(se2), ctx2), Scenario::new().run(handle)).await;
    assert!(result.is_ok(), "{result:?}");
    assert!(seen.is_empty(), "{seen:?}");
}

#[tokio::test]
async fn direction_switch_removes_old_registration_and_swaps_policies() {
    let fake = FakeConsole::default();
    // First paired ConsoleToEngine.
    let (client, handle) = mock_client();
    let se = engine(Communication::ConsoleToEngine);
    let scenario = status_patch(
        applied(Scenario::new(), Communication::ConsoleToEngine).event(NS),
        &se,
    )
    .event(NS);
    let ctx = context_with(client, &fake, &objects());
    let (_, seen) = drive(
        reconcile(Arc::new(se.clone()), ctx.clone()),
        scenario.run(handle),
    )
    .await;
    let status = seen[7].body["status"].clone();
    let stored = after(&objects(), &seen);

    // Now the user switches to EngineToConsole: every child is applied again (their desired
    // bodies changed) and the Service, which its store holds, is deleted.
    let mut switched = se;
    switched.spec.communication = Communication::EngineToConsole;
    switched.metadata.generation = Some(2);
    switched.status = serde_json::from_value(status).ok();
    let (client, handle) = mock_client();
    let scenario = Scenario::new().apply(
        "/apis/networking.k8s.io/v1",
        NS,
        "networkpolicies",
        "edge-scan-engine",
    );
    let scenario = leftover_service_deleted(scenario).apply(
        "/apis/apps/v1",
        NS,
        "statefulsets",
        "edge-scan-engine",
    );
    let scenario = status_patch(scenario.event(NS), &switched).event(NS);
    let (result, seen) = drive(
        reconcile(
            Arc::new(switched),
            next_context(client, &fake, &ctx, &stored),
        ),
        scenario.run(handle),
    )
    .await;
    let seen: Vec<_> = seen
        .into_iter()
        .filter(|s| !s.path.contains("/services/"))
        .collect();
    assert!(result.is_ok(), "{result:?}");

    // Policy swapped: no ingress at all; Service removed; pod reconfigured for reverse pairing.
    let np = &seen[0].body;
    // The field manager no longer sets `ingress`, so server-side apply removes the rules it
    // owned; with policyTypes Ingress that denies all ingress.
    assert!(np["spec"].get("ingress").is_none(), "{np}");
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress"]));
    assert_eq!(
        np["metadata"]["labels"]["scanengine.dev/communication"],
        "engine-to-console"
    );
    let env = seen[1].body["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
    assert!(
        env.contains("engine-to-console") && env.contains("SCAN_ENGINE_SHARED_SECRET_FILE"),
        "{env}"
    );
    // Old registration removed at the console.
    assert!(fake.state().engines.is_empty());
    assert!(
        fake.state()
            .calls
            .iter()
            .any(|c| c == "DELETE /api/3/scan_engines/{id} 7")
    );
    assert!(
        seen[2].body["note"]
            .as_str()
            .unwrap_or("")
            .contains("removed registration 7")
    );
    // Status: re-pairing in the new direction.
    let status = &seen[3].body["status"];
    assert_eq!(status["communication"]["direction"], "EngineToConsole");
    assert_eq!(
        status["communication"]["directionDisplay"],
        "Engine → Console"
    );
    assert_eq!(status["communication"]["state"], "Pairing");
    assert_eq!(condition(status, "Paired"), ("False", "WaitingForEngine"));
    assert_eq!(status["observedGeneration"], 2);
}

#[tokio::test]
async fn an_unreachable_console_is_named_in_every_engine_without_calling_it_per_engine() {
    // The Console's listing failed (see the fixture): each engine says why from that, the
    // console is not called once per engine.
    let fake = FakeConsole::default();
    fake.state().down = true;
    let (client, handle) = mock_client();
    let se = engine(Communication::ConsoleToEngine);
    let scenario = status_patch(
        applied(Scenario::new(), Communication::ConsoleToEngine),
        &se,
    )
    .event(NS);
    let (result, seen) = drive(
        reconcile(Arc::new(se), context_with(client, &fake, &objects())),
        scenario.run(handle),
    )
    .await;
    assert!(result.is_ok(), "{result:?}");
    let status = &seen[6].body["status"];
    assert_eq!(condition(status, "Ready"), ("False", "ConsoleUnreachable"));
    assert_eq!(condition(status, "NetworkPolicyReady").0, "True");
    assert_eq!(
        kstatus(status)[1],
        ("True", "ConsoleUnreachable"),
        "it retries"
    );
    assert!(
        status["message"]
            .as_str()
            .unwrap_or("")
            .contains("unreachable"),
        "{status}"
    );
    assert!(fake.state().calls.is_empty(), "{:?}", fake.state().calls);
}

#[tokio::test]
async fn deletion_with_the_console_down_keeps_the_finalizer_until_escaped() {
    let fake = FakeConsole::default();
    fake.insert_engine("edge.scanning", "active", "console-to-engine");
    fake.state().down = true;
    let mut se = engine(Communication::ConsoleToEngine);
    se.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        crate::controller::fixtures::now(),
    ));

    let (client, handle) = mock_client();
    let scenario = status_patch(Scenario::new(), &se).event(NS);
    let (result, seen) = drive(
        reconcile(
            Arc::new(se.clone()),
            context_with(client, &fake, &objects()),
        ),
        scenario.run(handle),
    )
    .await;
    assert!(matches!(result, Err(Error::Finalizer(_))), "{result:?}");
    let status = &seen[0].body["status"];
    assert_eq!(
        condition(status, "ConsoleCleanup"),
        ("False", "ConsoleUnreachable")
    );
    assert!(
        status["message"]
            .as_str()
            .unwrap_or("")
            .contains("scanengine.dev/skip-console-cleanup")
    );
    assert_eq!(seen[1].body["reason"], "ConsoleCleanupFailed");
    assert!(
        seen.iter()
            .all(|s| !s.body.to_string().contains("\"op\":\"remove\"")),
        "finalizer kept"
    );

    // The escape hatch lets it go without touching the console.
    crate::controller::fixtures::skip_cleanup(&mut se.metadata);
    let (client, handle) = mock_client();
    let scenario = finalizer_patch(Scenario::new().event(NS), &se);
    let (result, seen) = drive(
        reconcile(Arc::new(se), context_with(client, &fake, &objects())),
        scenario.run(handle),
    )
    .await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(seen[0].body["reason"], "ConsoleCleanupSkipped");
    assert!(seen[1].body.to_string().contains("\"op\":\"remove\""));
}

#[tokio::test]
async fn deletion_removes_the_engine_from_its_console() {
    let fake = FakeConsole::default();
    let id = fake.insert_engine("edge.scanning", "active", "console-to-engine");
    let mut se = engine(Communication::ConsoleToEngine);
    se.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        crate::controller::fixtures::now(),
    ));
    let (client, handle) = mock_client();
    let scenario = Scenario::new().event(NS);
    let scenario = finalizer_patch(scenario, &se);
    let (result, seen) = drive(
        reconcile(Arc::new(se), context_with(client, &fake, &objects())),
        scenario.run(handle),
    )
    .await;
    assert!(result.is_ok(), "{result:?}");
    assert!(!fake.state().engines.contains_key(&id));
    assert_eq!(seen[0].body["reason"], "Unregistered");
}

#[tokio::test]
async fn refresh_annotation_triggers_a_console_refresh_once() {
    let fake = FakeConsole::default();
    let (client, handle) = mock_client();
    let mut se = engine(Communication::ConsoleToEngine);
    se.metadata.annotations =
        Some([(crate::crd::REFRESH_ANNOTATION.to_string(), "1".to_string())].into());
    let scenario = status_patch(
        applied(Scenario::new(), Communication::ConsoleToEngine).event(NS),
        &se,
    )
    .event(NS);
    let (result, seen) = drive(
        reconcile(Arc::new(se), context_with(client, &fake, &objects())),
        scenario.run(handle),
    )
    .await;
    assert!(result.is_ok(), "{result:?}");
    assert!(
        fake.state()
            .calls
            .iter()
            .any(|c| c == "POST /api/3/scan_engines/{id}/refresh 7")
    );
    assert_eq!(seen[7].body["status"]["lastHandledRefresh"], "1");
}

#[tokio::test]
async fn reverse_engine_waits_for_the_consoles_shared_secret() {
    let fake = FakeConsole::default();
    let (client, handle) = mock_client();
    let se = engine(Communication::EngineToConsole);
    let mut no_secret = console();
    no_secret["status"]["sharedSecret"] = Value::Null;
    let scenario = status_patch(Scenario::new(), &se).event(NS);
    let (result, seen) = drive(
        reconcile(Arc::new(se), context_with(client, &fake, &[no_secret])),
        scenario.run(handle),
    )
    .await;
    assert!(result.is_ok(), "{result:?}");
    let status = &seen[0].body["status"];
    assert_eq!(
        condition(status, "Ready"),
        ("False", "WaitingForSharedSecret")
    );
    assert_eq!(
        condition(status, "NetworkPolicyReady"),
        ("False", "NotApplied")
    );
    assert!(
        fake.state().calls.is_empty(),
        "the console is not called before the engine can pair"
    );
}

#[tokio::test]
async fn reverse_engine_is_not_started_before_its_console_reports_a_fingerprint() {
    let fake = FakeConsole::default();
    let (client, handle) = mock_client();
    let se = engine(Communication::EngineToConsole);
    let mut no_fingerprint = console();
    no_fingerprint["status"]["certificateFingerprint"] = Value::Null;
    // Nothing is applied: no pod that would dial with the shared secret and trust on first use.
    let scenario = status_patch(Scenario::new(), &se).event(NS);
    let (result, seen) = drive(
        reconcile(Arc::new(se), context_with(client, &fake, &[no_fingerprint])),
        scenario.run(handle),
    )
    .await;
    assert!(result.is_ok(), "{result:?}");
    assert!(
        !seen.iter().any(|s| s.path.contains("statefulsets")),
        "{seen:?}"
    );
    let status = &seen[0].body["status"];
    assert_eq!(condition(status, "Ready"), ("False", "WaitingForConsole"));
    assert!(
        status["message"]
            .as_str()
            .unwrap_or_default()
            .contains("certificate fingerprint"),
        "{status}"
    );
    assert!(fake.state().calls.is_empty());
}

#[tokio::test]
async fn reverse_engine_pins_its_consoles_fingerprint() {
    let fake = FakeConsole::default();
    let (client, handle) = mock_client();
    let se = engine(Communication::EngineToConsole);
    let scenario = status_patch(
        applied(Scenario::new(), Communication::EngineToConsole),
        &se,
    )
    .event(NS);
    let (result, seen) = drive(
        reconcile(Arc::new(se), context_with(client, &fake, &objects())),
        scenario.run(handle),
    )
    .await;
    assert!(result.is_ok(), "{result:?}");
    let sts = seen
        .iter()
        .find(|s| s.path.contains("statefulsets") && s.method == Method::PATCH)
        .map(|s| s.body.clone())
        .unwrap_or_default();
    let env = sts["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
    assert!(
        env.contains("SCAN_ENGINE_TRUSTED_CONSOLE_FINGERPRINT") && env.contains("sha256:c0ffee"),
        "{env}"
    );
}

#[tokio::test]
async fn a_same_named_statefulset_of_someone_elses_is_not_applied_over() {
    let fake = FakeConsole::default();
    let (client, handle) = mock_client();
    let se = engine(Communication::ConsoleToEngine);
    let theirs = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "edge-scan-engine", "namespace": NS, "uid": "uid-theirs", "labels": {"app": "database"}}});
    let scenario = Scenario::new()
        .first_apply(
            "/apis/networking.k8s.io/v1",
            NS,
            "networkpolicies",
            "edge-scan-engine",
        )
        .first_apply("/api/v1", NS, "services", "edge-scan-engine")
        .get(
            "/apis/apps/v1/namespaces/scanning/statefulsets/edge-scan-engine",
            theirs,
        );
    let scenario = status_patch(scenario, &se).event(NS).event(NS);
    let (result, seen) = drive(
        reconcile(Arc::new(se), context_with(client, &fake, &objects())),
        scenario.run(handle),
    )
    .await;
    assert!(result.is_err(), "{result:?}");
    assert!(
        !seen
            .iter()
            .any(|s| s.path.contains("statefulsets") && s.method != Method::GET),
        "{seen:?}"
    );
    let status = &seen[5].body["status"];
    assert_eq!(condition(status, "Ready"), ("False", "OwnershipConflict"));
    assert!(
        status["message"]
            .as_str()
            .unwrap_or_default()
            .contains("StatefulSet scanning/edge-scan-engine exists but is not the operator's"),
        "{status}"
    );
    assert!(
        seen.iter()
            .any(|s| s.body["reason"] == "OwnershipConflict" && s.body["type"] == "Warning"),
        "{seen:?}"
    );
    assert!(
        fake.state().calls.is_empty(),
        "not registered at the console"
    );
}

#[tokio::test]
async fn a_reverse_engine_leaves_a_foreign_service_of_its_name_alone() {
    let fake = FakeConsole::default();
    // Not the operator's (no managed-by label, no owner): not in its store, never touched.
    let (client, handle) = mock_client();
    let se = engine(Communication::EngineToConsole);
    let scenario = Scenario::new()
        .first_apply(
            "/apis/networking.k8s.io/v1",
            NS,
            "networkpolicies",
            "edge-scan-engine",
        )
        .first_apply("/apis/apps/v1", NS, "statefulsets", "edge-scan-engine");
    let scenario = status_patch(scenario, &se).event(NS);
    let (result, seen) = drive(
        reconcile(Arc::new(se), context_with(client, &fake, &objects())),
        scenario.run(handle),
    )
    .await;
    assert!(result.is_ok(), "{result:?}");
    assert!(!seen.iter().any(|s| s.method == Method::DELETE), "{seen:?}");
}

/// The condition `type_` as JSON.
fn condition_json<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

/// Ready, Reconciling and Stalled of a status: `(status, reason)` each.
fn kstatus(status: &Value) -> [(&str, &str); 3] {
    [
        condition(status, "Ready"),
        condition(status, "Reconciling"),
        condition(status, "Stalled"),
    ]
}

#[tokio::test]
async fn an_active_engine_is_ready_and_neither_reconciling_nor_stalled() {
    let fake = FakeConsole::default();
    let (client, handle) = mock_client();
    let se = engine(Communication::ConsoleToEngine);
    let scenario = status_patch(
        applied(Scenario::new(), Communication::ConsoleToEngine).event(NS),
        &se,
    )
    .event(NS);
    let (result, seen) = drive(
        super::reconcile(
            Arc::new(se),
            // The console sees the engine Active: an old crash loop of its pod is history.
            context_with(client, &fake, &with_pod(pod::crash_looping())),
        ),
        scenario.run(handle),
    )
    .await;
    assert!(result.is_ok(), "{result:?}");
    let status = &seen[7].body["status"];
    assert_eq!(
        kstatus(status),
        [
            ("True", "Active"),
            ("False", "Reconciled"),
            ("False", "Reconciled")
        ]
    );
    for t in ["Ready", "Reconciling", "Stalled"] {
        assert_eq!(condition_json(status, t)["observedGeneration"], 1, "{t}");
    }
}

/// Reconciles a new standard engine the console reports Down while its pod has `pod_status`;
/// returns the status written and the Warning event published with it.
async fn down_engine_with_pod(pod_status: Value) -> (Value, Value) {
    let fake = FakeConsole::default();
    fake.state().new_engine_status = "not-responding".into();
    let (client, handle) = mock_client();
    let se = engine(Communication::ConsoleToEngine);
    // Registered event, the status, the cause's Warning event, the state change.
    let scenario = status_patch(
        applied(Scenario::new(), Communication::ConsoleToEngine).event(NS),
        &se,
    )
    .event(NS)
    .event(NS);
    let (result, seen) = drive(
        super::reconcile(
            Arc::new(se),
            context_with(client, &fake, &with_pod(pod_status)),
        ),
        scenario.run(handle),
    )
    .await;
    assert!(result.is_ok(), "{result:?}");
    let status = seen[7].body["status"].clone();
    assert_eq!(
        status["communication"]["state"], "Down",
        "the console's state stays shown"
    );
    (status, seen[8].body.clone())
}

#[tokio::test]
async fn an_unschedulable_pod_names_the_schedulers_message_instead_of_offline() {
    let (status, warning) = down_engine_with_pod(pod::unschedulable()).await;
    assert_eq!(
        kstatus(&status),
        [
            ("False", "PodUnschedulable"),
            ("True", "PodUnschedulable"),
            ("False", "Progressing")
        ]
    );
    let message = status["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("pod edge-scan-engine-0 cannot be scheduled")
            && message.contains("1 Insufficient cpu"),
        "{message}"
    );
    assert!(!message.contains("offline"), "{message}");
    assert_eq!(condition_json(&status, "Ready")["message"], message);
    assert_eq!(warning["type"], "Warning");
    assert_eq!(warning["reason"], "PodUnschedulable");
    assert_eq!(warning["note"], message);
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_is_named_with_the_kubelets_error() {
    for (kubelet, stalled) in [
        ("ErrImagePull", false),
        ("ImagePullBackOff", false),
        ("ErrImageNeverPull", false),
        // No pull can ever fix a name that is not valid: only a spec change helps.
        ("InvalidImageName", true),
    ] {
        let (status, warning) = down_engine_with_pod(pod::waiting(
            kubelet,
            "failed to resolve reference \"registry.example/scan-engine:0.9.9\": not found",
        ))
        .await;
        let expected = if stalled {
            [
                ("False", "ImagePullFailed"),
                ("False", "Stalled"),
                ("True", "ImagePullFailed"),
            ]
        } else {
            [
                ("False", "ImagePullFailed"),
                ("True", "ImagePullFailed"),
                ("False", "Progressing"),
            ]
        };
        assert_eq!(kstatus(&status), expected, "{kubelet}");
        let message = status["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("registry.example/scan-engine:0.9.9")
                && message.contains(kubelet)
                && message.contains("not found"),
            "{kubelet}: {message}"
        );
        assert_eq!(warning["reason"], "ImagePullFailed", "{kubelet}");
        assert_eq!(warning["type"], "Warning");
    }
}

#[tokio::test]
async fn a_crash_loop_is_named_with_the_last_exit() {
    let (status, warning) = down_engine_with_pod(pod::crash_looping()).await;
    assert_eq!(
        kstatus(&status),
        [
            ("False", "CrashLooping"),
            ("True", "CrashLooping"),
            ("False", "Progressing")
        ]
    );
    let message = status["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("keeps crashing") && message.contains("Error (exit code 2)"),
        "{message}"
    );
    assert!(
        !message.contains("do-not-copy"),
        "the container's termination message is never copied: {message}"
    );
    assert_eq!(warning["reason"], "CrashLooping");
}

/// The answer of an API server refusing a StatefulSet (422 Invalid), with a long tail.
fn invalid_statefulset(_: &Value) -> (http::StatusCode, Value) {
    let message = format!(
        "StatefulSet.apps \"edge-scan-engine\" is invalid: spec.template.spec.containers[0].resources.requests: Invalid value: \"64\": must be less than or equal to cpu limit of 1{}",
        ", and more".repeat(1000)
    );
    (
        http::StatusCode::UNPROCESSABLE_ENTITY,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Invalid", "code": 422, "message": message}),
    )
}

#[tokio::test]
async fn a_statefulset_the_api_server_refuses_is_stalled_with_its_message_once() {
    let fake = FakeConsole::default();
    let (client, handle) = mock_client();
    let ctx = context_with(client, &fake, &objects());
    let se = engine(Communication::ConsoleToEngine);
    let scenario = Scenario::new()
        .first_apply(
            "/apis/networking.k8s.io/v1",
            NS,
            "networkpolicies",
            "edge-scan-engine",
        )
        .first_apply("/api/v1", NS, "services", "edge-scan-engine")
        .expect(
            Method::GET,
            "/apis/apps/v1/namespaces/scanning/statefulsets/edge-scan-engine",
            |_| crate::controller::fixtures::not_found(),
        )
        .expect(
            Method::PATCH,
            format!(
                "/apis/apps/v1/namespaces/scanning/statefulsets/edge-scan-engine{}",
                crate::controller::fixtures::SSA
            ),
            invalid_statefulset,
        );
    let scenario = status_patch(scenario, &se).event(NS).event(NS);
    let (result, seen) = drive(
        reconcile(Arc::new(se.clone()), ctx.clone()),
        scenario.run(handle),
    )
    .await;
    assert_eq!(
        result.as_ref().err().map(Error::metric_label),
        Some("child_rejected"),
        "{result:?}"
    );
    // The refused StatefulSet never reaches its store; the rest does.
    let stored: Vec<Value> = after(&objects(), &seen)
        .into_iter()
        .filter(|o| o["kind"] != "StatefulSet")
        .collect();
    let status = &seen[6].body["status"];
    assert_eq!(
        kstatus(status),
        [
            ("False", "ChildRejected"),
            ("False", "Stalled"),
            ("True", "ChildRejected")
        ]
    );
    assert!(
        status["communication"]["state"].is_string(),
        "never blank: {status}"
    );
    let message = status["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("apply StatefulSet scanning/edge-scan-engine")
            && message.contains("spec.template.spec.containers[0].resources.requests"),
        "{message}"
    );
    assert!(message.chars().count() < 800, "bounded: {}", message.len());
    assert_eq!(condition_json(status, "Stalled")["message"], message);
    assert_eq!(seen[7].body["type"], "Warning");
    assert_eq!(seen[7].body["reason"], "ChildRejected");
    assert!(fake.state().calls.is_empty(), "not registered");

    // The retry meets the same refusal: the status already says it, no write, no new event.
    let mut se2 = se;
    se2.status = serde_json::from_value(status.clone()).ok();
    let (client, handle) = mock_client();
    let scenario = Scenario::new()
        .expect(
            Method::GET,
            "/apis/apps/v1/namespaces/scanning/statefulsets/edge-scan-engine",
            |_| crate::controller::fixtures::not_found(),
        )
        .expect(
            Method::PATCH,
            format!(
                "/apis/apps/v1/namespaces/scanning/statefulsets/edge-scan-engine{}",
                crate::controller::fixtures::SSA
            ),
            invalid_statefulset,
        );
    let (result, seen) = drive(
        reconcile(Arc::new(se2), next_context(client, &fake, &ctx, &stored)),
        scenario.run(handle),
    )
    .await;
    assert!(result.is_err(), "{result:?}");
    assert_eq!(seen.len(), 2, "a read and the refused apply: {seen:?}");
}

#[tokio::test]
async fn a_missing_console_is_stalled_and_announced() {
    let fake = FakeConsole::default();
    let (client, handle) = mock_client();
    let se = engine(Communication::ConsoleToEngine);
    let scenario = status_patch(Scenario::new(), &se).event(NS).event(NS);
    let (result, seen) = drive(
        reconcile(Arc::new(se), context_with(client, &fake, &[])),
        scenario.run(handle),
    )
    .await;
    assert_eq!(
        result.as_ref().err().map(Error::metric_label),
        Some("console_not_found")
    );
    let status = &seen[0].body["status"];
    assert_eq!(
        kstatus(status),
        [
            ("False", "ConsoleNotFound"),
            ("False", "Stalled"),
            ("True", "ConsoleNotFound")
        ]
    );
    assert!(
        status["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Console scanning/main not found"),
        "{status}"
    );
    assert_eq!(seen[1].body["type"], "Warning");
    assert_eq!(seen[1].body["reason"], "ConsoleNotFound");
    assert!(
        seen[2].body["note"]
            .as_str()
            .unwrap_or_default()
            .contains("none → Pairing"),
        "{}",
        seen[2].body
    );
}

#[tokio::test]
async fn an_incompatible_engine_is_stalled_not_reconciling_forever() {
    let fake = FakeConsole::default();
    fake.state().new_engine_status = "incompatible".into();
    let (client, handle) = mock_client();
    let se = engine(Communication::ConsoleToEngine);
    let scenario = status_patch(
        applied(Scenario::new(), Communication::ConsoleToEngine).event(NS),
        &se,
    )
    .event(NS);
    let (result, seen) = drive(
        reconcile(Arc::new(se), context_with(client, &fake, &objects())),
        scenario.run(handle),
    )
    .await;
    assert!(result.is_ok(), "{result:?}");
    let status = &seen[7].body["status"];
    assert_eq!(
        kstatus(status),
        [
            ("False", "Incompatible"),
            ("False", "Stalled"),
            ("True", "Incompatible")
        ]
    );
    assert_eq!(status["communication"]["state"], "Incompatible");
    assert_eq!(seen[8].body["reason"], "StateChanged");
}
