//! Console reconciles against a mocked API server and a fake console.

use std::sync::Arc;

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::reconcile;
use crate::console_api::fake::FakeConsole;
use crate::controller::fixtures::{Scenario, context, drive, mock_client, next_context, not_found};
use crate::crd::Console;
use crate::crd::console::{ConsoleSpec, ManagedConsole};

const NS: &str = "scanning";
const SECRETS: &str = "/api/v1/namespaces/scanning/secrets";

fn console() -> Console {
    let mut c = Console::new(
        "main",
        ConsoleSpec {
            managed: Some(ManagedConsole::default()),
            ..Default::default()
        },
    );
    c.metadata.namespace = Some(NS.into());
    c.metadata.uid = Some("uid-main".into());
    c.metadata.finalizers = Some(vec![crate::crd::CONSOLE_FINALIZER.into()]);
    c.metadata.generation = Some(1);
    c
}

fn created(body: &Value) -> (StatusCode, Value) {
    (StatusCode::CREATED, body.clone())
}

fn status_patch(s: Scenario, c: &Console) -> Scenario {
    let mut obj = serde_json::to_value(c).unwrap_or_default();
    s.expect(
        Method::PATCH,
        "/apis/scanengine.dev/v1alpha1/namespaces/scanning/consoles/main/status?&force=true&fieldManager=scan-engine-operator",
        move |body| {
            obj["status"] = body["status"].clone();
            (StatusCode::OK, obj)
        },
    )
}

fn applies(s: Scenario) -> Scenario {
    s.first_apply(
        "/apis/networking.k8s.io/v1",
        NS,
        "networkpolicies",
        "main-console",
    )
    .first_apply("/api/v1", NS, "services", "main-console")
    .first_apply("/api/v1", NS, "services", "main-console-engines")
    .first_apply("/apis/apps/v1", NS, "statefulsets", "main-console")
}

#[tokio::test]
async fn managed_console_is_deployed_and_keeps_a_shared_secret() {
    let fake = FakeConsole::default();
    fake.insert_engine("a.scanning", "active", "engine-to-console");
    fake.insert_engine("b.scanning", "pending-authorization", "console-to-engine");
    let c = console();

    // First reconcile: Secrets generated, objects applied, a shared secret made and stored.
    let (client, handle) = mock_client();
    let create = format!("{SECRETS}?&fieldManager=scan-engine-operator");
    let s = Scenario::new()
        .expect(Method::GET, format!("{SECRETS}/main-console-admin"), |_| {
            not_found()
        })
        .expect(Method::POST, create.clone(), created)
        .expect(Method::GET, format!("{SECRETS}/main-console-ca"), |_| {
            not_found()
        })
        .expect(
            Method::GET,
            format!("{SECRETS}/main-console-api-tls"),
            |_| not_found(),
        )
        .expect(Method::POST, create.clone(), created)
        .expect(Method::POST, create, created)
        .event(NS);
    let s = applies(s)
        .get(
            format!("{SECRETS}/main-console-admin"),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "main-console-admin"}, "data": {"username": "YWRtaW4=", "password": "cHc="}}),
        )
        .get(
            format!("{SECRETS}/main-console-ca"),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "main-console-ca"}, "data": {"ca.crt": "UEVN"}}),
        )
        .expect(Method::GET, format!("{SECRETS}/main-console-shared-secret"), |_| not_found())
        .apply("/api/v1", NS, "secrets", "main-console-shared-secret")
        .event(NS);
    let s = status_patch(s, &c).event(NS);
    let ctx = context(client, &fake);
    let (result, seen) = drive(reconcile(Arc::new(c.clone()), ctx.clone()), s.run(handle)).await;
    assert!(result.is_ok(), "{result:?}");

    let admin = &seen[1].body;
    assert_eq!(admin["metadata"]["name"], "main-console-admin");
    assert_eq!(admin["metadata"]["ownerReferences"][0]["kind"], "Console");
    assert_eq!(seen[4].body["metadata"]["name"], "main-console-ca");
    let tls = &seen[5].body;
    assert_eq!(tls["metadata"]["name"], "main-console-api-tls");
    assert!(tls["data"]["tls.crt"].is_string() && tls["data"]["tls.key"].is_string());

    // The shared secret lives only in the Secret's data.
    let stored = &seen[18].body;
    assert_eq!(
        stored["data"]["shared-secret"], "ZmFrZS1zZWNyZXQtMQ==",
        "base64 of fake-secret-1"
    );
    assert_eq!(
        stored["metadata"]["annotations"]["scanengine.dev/expires-at"],
        "2026-01-01T01:00:00Z"
    );
    for s in &seen {
        if !s.path.contains("main-console-shared-secret") {
            assert!(
                !s.body.to_string().contains("fake-secret-1"),
                "secret leaked into {}",
                s.path
            );
        }
    }
    assert_eq!(seen[19].body["reason"], "SharedSecretRenewed");

    let status = &seen[20].body["status"];
    assert_eq!(status["type"], "Managed");
    assert_eq!(status["url"], "https://main-console.scanning.svc:3780");
    assert_eq!(status["version"], "0.1.0");
    assert_eq!(status["certificateFingerprint"], "sha256:c0ffee");
    assert_eq!(
        status["engineListenerAddress"],
        "main-console-engines.scanning.svc:40815"
    );
    assert_eq!(
        status["engines"],
        json!({"total": 2, "active": 1, "unknown": 0, "pendingAuthorization": 1, "incompatible": 0, "down": 0})
    );
    assert_eq!(
        status["sharedSecret"],
        json!({"secretName": "main-console-shared-secret", "expiresAt": "2026-01-01T01:00:00Z"})
    );
    assert_eq!(seen[21].body["reason"], "Ready");

    // A periodic refresh, nothing changed: reads only. Secrets kept, nothing applied again, no
    // shared secret or status write.
    let mut c2 = c;
    c2.status = serde_json::from_value(status.clone()).ok();
    let stored_secret = stored.clone();
    let existing = |name: &str| json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "ownerReferences": [{"apiVersion": "scanengine.dev/v1alpha1", "kind": "Console", "name": "main", "uid": "uid-main", "controller": true}]}, "data": {"username": "YWRtaW4=", "password": "cHc=", "ca.crt": "UEVN"}});
    let (client, handle) = mock_client();
    let s = Scenario::new()
        .get(
            format!("{SECRETS}/main-console-admin"),
            existing("main-console-admin"),
        )
        .get(
            format!("{SECRETS}/main-console-ca"),
            existing("main-console-ca"),
        )
        .get(
            format!("{SECRETS}/main-console-api-tls"),
            existing("main-console-api-tls"),
        );
    let s = s
        .get(
            format!("{SECRETS}/main-console-admin"),
            existing("main-console-admin"),
        )
        .get(
            format!("{SECRETS}/main-console-ca"),
            existing("main-console-ca"),
        )
        .get(
            format!("{SECRETS}/main-console-shared-secret"),
            stored_secret,
        );
    let (result, seen) = drive(
        reconcile(Arc::new(c2), next_context(client, &fake, &ctx)),
        s.run(handle),
    )
    .await;
    assert!(result.is_ok(), "{result:?}");
    assert!(seen.iter().all(|s| s.method == Method::GET), "{seen:?}");
    assert_eq!(fake.state().secrets_made, 1);
}

#[tokio::test]
async fn shared_secret_is_renewed_before_expiry() {
    let fake = FakeConsole::default();
    // The console's current secret has 10 minutes left: under the 15 minute margin.
    fake.state().secret = Some(("old-secret".into(), 600));
    let mut c = console();
    c.spec.managed = None;
    c.spec.external = Some(crate::crd::console::ExternalConsole {
        url: "https://console.example.com:3780".into(),
        credentials_secret_ref: crate::crd::console::CredentialsSecretRef {
            name: "creds".into(),
            ..Default::default()
        },
        insecure_skip_tls_verify: Some(true),
        ..Default::default()
    });
    let (client, handle) = mock_client();
    let s = Scenario::new()
        .get(format!("{SECRETS}/creds"), creds())
        .expect(
            Method::GET,
            format!("{SECRETS}/main-console-shared-secret"),
            |_| not_found(),
        )
        .apply("/api/v1", NS, "secrets", "main-console-shared-secret")
        .event(NS);
    // Its status, the warning about the unverified certificate, then Ready.
    let s = status_patch(s, &c).event(NS).event(NS);
    let (result, seen) = drive(
        reconcile(Arc::new(c), context(client, &fake)),
        s.run(handle),
    )
    .await;
    assert!(result.is_ok(), "{result:?}");
    let calls = fake.state().calls.clone();
    assert!(
        calls
            .iter()
            .any(|c| c == "DELETE /api/3/scan_engines/shared_secret"),
        "{calls:?}"
    );
    assert_eq!(
        seen[2].body["data"]["shared-secret"],
        "ZmFrZS1zZWNyZXQtMQ=="
    );
    let status = &seen[4].body["status"];
    assert_eq!(status["type"], "External");
    let warning = status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "InsecureTls"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(warning["status"], "True");
    assert_eq!(warning["reason"], "InsecureSkipTlsVerify");
    assert_eq!(seen[5].body["type"], "Warning");
    assert_eq!(seen[5].body["reason"], "InsecureSkipTlsVerify");
    assert_eq!(status["engineListenerAddress"], "console.example.com:40815");
    assert!(
        fake.state()
            .connections
            .iter()
            .any(|c| c.starts_with("scanning/main https://console.example.com:3780 admin"))
    );
}

#[tokio::test]
async fn unreachable_external_console_is_reported() {
    let fake = FakeConsole::default();
    fake.state().down = true;
    let c = external_console();
    let (client, handle) = mock_client();
    let s = Scenario::new().get(format!("{SECRETS}/creds"), creds());
    let s = status_patch(s, &c);
    let (result, seen) = drive(
        reconcile(Arc::new(c), context(client, &fake)),
        s.run(handle),
    )
    .await;
    assert!(result.is_err());
    let status = &seen[1].body["status"];
    let ready = status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "ConsoleUnreachable");
}

const CONSOLE_PATH: &str = "/apis/scanengine.dev/v1alpha1/namespaces/scanning/consoles/main";
const ENGINES: &str = "/apis/scanengine.dev/v1alpha1/namespaces/scanning/scanengines?";

fn external_console() -> Console {
    let mut c = console();
    c.spec.managed = None;
    c.spec.external = Some(crate::crd::console::ExternalConsole {
        url: "https://console.example.com:3780".into(),
        credentials_secret_ref: crate::crd::console::CredentialsSecretRef {
            name: "creds".into(),
            ..Default::default()
        },
        ca_bundle: Some("PEM".into()),
        ..Default::default()
    });
    c
}

/// The external console's credentials Secret: admin / pw.
fn creds() -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"}, "data": {"username": "YWRtaW4=", "password": "cHc="}})
}

fn deleted(mut c: Console) -> Console {
    c.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        crate::controller::fixtures::now(),
    ));
    c
}

fn engine_list(consoles: &[(&str, &str)]) -> Value {
    let items: Vec<Value> = consoles
        .iter()
        .map(|(name, console)| {
            json!({
                "apiVersion": "scanengine.dev/v1alpha1", "kind": "ScanEngine",
                "metadata": {"name": name, "namespace": NS},
                "spec": {"consoleRef": {"name": console}},
            })
        })
        .collect();
    json!({"apiVersion": "scanengine.dev/v1alpha1", "kind": "ScanEngineList", "metadata": {}, "items": items})
}

/// Expects the JSON patch that removes the finalizer.
fn finalizer_removed(s: Scenario, c: &Console) -> Scenario {
    let obj = serde_json::to_value(c).unwrap_or_default();
    s.expect(Method::PATCH, format!("{CONSOLE_PATH}?"), move |_| {
        (StatusCode::OK, obj)
    })
}

#[tokio::test]
async fn adds_its_finalizer_first() {
    let fake = FakeConsole::default();
    let mut c = console();
    c.metadata.finalizers = None;
    let (client, handle) = mock_client();
    let obj = serde_json::to_value(&c).unwrap_or_default();
    let s = Scenario::new().expect(Method::PATCH, format!("{CONSOLE_PATH}?"), move |_| {
        (StatusCode::OK, obj)
    });
    let (result, seen) = drive(
        reconcile(Arc::new(c), context(client, &fake)),
        s.run(handle),
    )
    .await;
    assert!(result.is_ok(), "{result:?}");
    let ops = seen[0].body.to_string();
    assert!(
        ops.contains("\"op\":\"add\"") && ops.contains("scanengine.dev/revoke-shared-secret"),
        "{ops}"
    );
}

#[tokio::test]
async fn a_deleted_external_console_waits_for_its_engines_then_revokes_its_shared_secret() {
    let fake = FakeConsole::default();
    let c = deleted(external_console());

    // Two engines still use it (a third uses another console): it stays, and says why.
    let (client, handle) = mock_client();
    let s = Scenario::new().get(
        ENGINES,
        engine_list(&[("edge", "main"), ("other", "elsewhere"), ("core", "main")]),
    );
    let s = status_patch(s, &c).event(NS);
    let (result, seen) = drive(
        reconcile(Arc::new(c.clone()), context(client, &fake)),
        s.run(handle),
    )
    .await;
    assert!(
        matches!(result, Err(crate::Error::Finalizer(_))),
        "{result:?}"
    );
    let cleanup = seen[1].body["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "ConsoleCleanup"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(cleanup["status"], "False");
    assert_eq!(cleanup["reason"], "EnginesRemain");
    let message = cleanup["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("core, edge") && !message.contains("other"),
        "{message}"
    );
    assert!(
        message.contains("scanengine.dev/skip-console-cleanup"),
        "{message}"
    );
    assert_eq!(seen[2].body["reason"], "ConsoleCleanupBlocked");
    assert!(
        !fake.state().calls.iter().any(|c| c.starts_with("DELETE")),
        "nothing revoked while engines remain"
    );

    // The engines are gone: the secret is revoked and the finalizer removed.
    let (client, handle) = mock_client();
    let s = Scenario::new()
        .get(ENGINES, engine_list(&[("other", "elsewhere")]))
        .get(format!("{SECRETS}/creds"), creds())
        .event(NS);
    let s = finalizer_removed(s, &c);
    let (result, seen) = drive(
        reconcile(Arc::new(c), context(client, &fake)),
        s.run(handle),
    )
    .await;
    assert!(result.is_ok(), "{result:?}");
    assert!(
        fake.state()
            .calls
            .iter()
            .any(|c| c == "DELETE /api/3/scan_engines/shared_secret"),
        "{:?}",
        fake.state().calls
    );
    assert_eq!(seen[2].body["reason"], "SharedSecretRevoked");
    assert!(seen[3].body.to_string().contains("\"op\":\"remove\""));
}

#[tokio::test]
async fn a_deleted_console_that_cannot_be_reached_stays_until_told_to_skip() {
    let fake = FakeConsole::default();
    fake.state().down = true;
    let mut c = deleted(external_console());

    let (client, handle) = mock_client();
    let s = Scenario::new()
        .get(ENGINES, engine_list(&[]))
        .get(format!("{SECRETS}/creds"), creds());
    let s = status_patch(s, &c).event(NS);
    let (result, seen) = drive(
        reconcile(Arc::new(c.clone()), context(client, &fake)),
        s.run(handle),
    )
    .await;
    assert!(result.is_err(), "{result:?}");
    let text = seen[2].body["status"].to_string();
    assert!(
        text.contains("ConsoleUnreachable") && text.contains("cannot revoke"),
        "{text}"
    );
    assert!(!text.contains("cHc"), "no credential in the status: {text}");

    crate::controller::fixtures::skip_cleanup(&mut c.metadata);
    let (client, handle) = mock_client();
    let s = finalizer_removed(Scenario::new().event(NS), &c);
    let (result, seen) = drive(
        reconcile(Arc::new(c), context(client, &fake)),
        s.run(handle),
    )
    .await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(seen[0].body["reason"], "ConsoleCleanupSkipped");
}

#[tokio::test]
async fn a_deleted_managed_console_goes_at_once() {
    let fake = FakeConsole::default();
    let c = deleted(console());
    let (client, handle) = mock_client();
    let s = finalizer_removed(Scenario::new(), &c);
    let (result, _) = drive(
        reconcile(Arc::new(c), context(client, &fake)),
        s.run(handle),
    )
    .await;
    assert!(result.is_ok(), "{result:?}");
    assert!(fake.state().calls.is_empty(), "the console is not called");
}

/// A Secret someone else made: no owner reference to the Console, no managed-by label.
fn foreign_secret(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS, "uid": "uid-theirs", "resourceVersion": "3"}, "data": {"ca.crt": "VEhFSVJT"}})
}

fn ready_of(status: &Value) -> Value {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn a_same_named_secret_of_someone_elses_is_left_alone_and_reported() {
    let fake = FakeConsole::default();
    let c = console();
    let ours = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "main-console-admin", "labels": {"app.kubernetes.io/managed-by": "scan-engine-operator"}}, "data": {"username": "YWRtaW4=", "password": "cHc="}});
    let (client, handle) = mock_client();
    // The API TLS Secret is missing, so the pair would be regenerated; but the CA Secret of
    // that name is not the operator's: it is neither deleted nor replaced.
    let s = Scenario::new()
        .get(format!("{SECRETS}/main-console-admin"), ours)
        .get(
            format!("{SECRETS}/main-console-ca"),
            foreign_secret("main-console-ca"),
        );
    let s = status_patch(s, &c).event(NS);
    let (result, seen) = drive(
        reconcile(Arc::new(c), context(client, &fake)),
        s.run(handle),
    )
    .await;
    assert!(result.is_err(), "{result:?}");
    assert!(
        seen.iter().all(|s| s.method == Method::GET
            || s.path.contains("/status")
            || s.path.contains("/events")),
        "nothing written or deleted but status and event: {seen:?}"
    );
    let ready = ready_of(&seen[2].body["status"]);
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "OwnershipConflict");
    let message = ready["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("Secret scanning/main-console-ca")
            && message.contains("not the operator's"),
        "{message}"
    );
    assert_eq!(seen[3].body["type"], "Warning");
    assert_eq!(seen[3].body["reason"], "OwnershipConflict");
    assert!(fake.state().calls.is_empty(), "the console is not called");
}

#[tokio::test]
async fn a_foreign_shared_secret_secret_is_not_overwritten() {
    let fake = FakeConsole::default();
    let c = external_console();
    let (client, handle) = mock_client();
    let s = Scenario::new()
        .get(format!("{SECRETS}/creds"), creds())
        .get(
            format!("{SECRETS}/main-console-shared-secret"),
            foreign_secret("main-console-shared-secret"),
        );
    let s = status_patch(s, &c).event(NS);
    let (result, seen) = drive(
        reconcile(Arc::new(c), context(client, &fake)),
        s.run(handle),
    )
    .await;
    assert!(result.is_err(), "{result:?}");
    assert!(
        !seen
            .iter()
            .any(|s| s.path.contains("secrets/main-console-shared-secret?")),
        "not applied over: {seen:?}"
    );
    let ready = ready_of(&seen[2].body["status"]);
    assert_eq!(ready["reason"], "OwnershipConflict");
    assert_eq!(seen[3].body["reason"], "OwnershipConflict");
    assert_eq!(
        fake.state().secrets_made,
        0,
        "no secret made for a Secret it cannot keep"
    );
}

#[tokio::test]
async fn a_plain_http_console_url_is_refused_at_run_time() {
    let fake = FakeConsole::default();
    let mut c = external_console();
    if let Some(e) = c.spec.external.as_mut() {
        e.url = "http://console.example.com:3780".into();
    }
    let (client, handle) = mock_client();
    // No credential is read for it, and the console is never called.
    let s = status_patch(Scenario::new(), &c);
    let (result, seen) = drive(
        reconcile(Arc::new(c), context(client, &fake)),
        s.run(handle),
    )
    .await;
    assert!(result.is_err(), "{result:?}");
    let ready = ready_of(&seen[0].body["status"]);
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "InsecureUrl");
    assert!(
        ready["message"]
            .as_str()
            .unwrap_or_default()
            .contains("must be an https:// URL"),
        "{ready}"
    );
    assert!(fake.state().connections.is_empty());
}
