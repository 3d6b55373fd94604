//! Console reconciles against a mocked API server, stores and a fake console.
//!
//! Every object a reconcile reads comes from the stores (`context_with`); the scenarios list
//! only the requests that remain: creating and applying children (a child missing from its
//! store is read once first), the shared-secret Secret, status writes and events.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::reconcile;
use crate::console_api::fake::FakeConsole;
use crate::controller::fixtures::{
    Scenario, Seen, after, context, context_with, drive, mock_client, next_context,
};
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

/// `c` as the stores hold it (JSON with `kind`).
fn stored(c: &Console) -> Value {
    let mut v = serde_json::to_value(c).unwrap_or_default();
    v["apiVersion"] = "scanengine.dev/v1alpha1".into();
    v["kind"] = "Console".into();
    v
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

/// Whether a request writes something (anything but a read).
fn is_write(s: &Seen) -> bool {
    s.method != Method::GET
}

/// [`after`], plus the Secrets the requests `seen` created or applied (which `after` leaves
/// out: a Secret has no `spec`), as the Secret watch would deliver them.
fn after_with_secrets(objects: &[Value], seen: &[Seen]) -> Vec<Value> {
    let mut out = after(objects, seen);
    for s in seen {
        let is_secret = s.body["kind"] == "Secret" || s.path.starts_with(SECRETS);
        if is_secret && (s.method == Method::POST || s.method == Method::PATCH) {
            let mut secret = s.body.clone();
            secret["apiVersion"] = "v1".into();
            secret["kind"] = "Secret".into();
            secret["metadata"]["resourceVersion"] = "1".into();
            out.push(secret);
        }
    }
    out
}

#[tokio::test]
async fn managed_console_is_deployed_and_keeps_a_shared_secret() {
    let fake = FakeConsole::default();
    fake.insert_engine("a.scanning", "active", "engine-to-console");
    fake.insert_engine("b.scanning", "pending-authorization", "console-to-engine");
    let c = console();

    // First reconcile, nothing in the stores: the Secrets are generated (no read: the Secret
    // store holds every Secret, so one missing from it does not exist), the objects applied
    // (each read once first: the child stores hold only the operator's objects).
    let (client, handle) = mock_client();
    let create = format!("{SECRETS}?&fieldManager=scan-engine-operator");
    let s = Scenario::new()
        .expect(Method::POST, create.clone(), created)
        .expect(Method::POST, create.clone(), created)
        .expect(Method::POST, create, created)
        .event(NS);
    // The store does not hold the Secrets just created until their watch events arrive, so
    // this reconcile does not try to connect yet: the watch of the Console's Secrets wakes it
    // again (and a short requeue, should that event be late).
    let s = applies(s);
    let ctx = context(client, &fake);
    let (result, seen) = drive(reconcile(Arc::new(c.clone()), ctx.clone()), s.run(handle)).await;
    assert_eq!(
        result.ok(),
        Some(Action::requeue(super::MIN_LISTING_GAP)),
        "not a failure"
    );

    let admin = &seen[0].body;
    assert_eq!(admin["metadata"]["name"], "main-console-admin");
    assert_eq!(admin["metadata"]["ownerReferences"][0]["kind"], "Console");
    assert!(admin["data"]["password"].is_string());
    assert_eq!(seen[1].body["metadata"]["name"], "main-console-ca");
    let tls = &seen[2].body;
    assert_eq!(tls["metadata"]["name"], "main-console-api-tls");
    assert!(tls["data"]["tls.crt"].is_string() && tls["data"]["tls.key"].is_string());
    assert_eq!(seen[3].body["reason"], "SecretsCreated");
    let applied: Vec<(&str, &str)> = seen
        .iter()
        .filter(|s| s.method == Method::PATCH && s.body.get("spec").is_some())
        .map(|s| {
            (
                s.body["kind"].as_str().unwrap_or_default(),
                s.body["metadata"]["name"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        applied,
        [
            ("NetworkPolicy", "main-console"),
            ("Service", "main-console"),
            ("Service", "main-console-engines"),
            ("StatefulSet", "main-console"),
        ]
    );
    let mut c = c;

    // Woken by its Secrets: they and the children are in the stores now. Nothing is created or
    // applied again; the console is reached with the generated credentials, a shared secret
    // is made and stored.
    let objects = after_with_secrets(&[], &seen);
    let (client, handle) = mock_client();
    let s = Scenario::new()
        .apply("/api/v1", NS, "secrets", "main-console-shared-secret")
        .event(NS);
    let s = status_patch(s, &c).event(NS);
    let ctx = context_with(client, &fake, &objects);
    let (result, seen) = drive(reconcile(Arc::new(c.clone()), ctx.clone()), s.run(handle)).await;
    assert!(result.is_ok(), "{result:?}");
    assert!(
        fake.state()
            .connections
            .iter()
            .any(|c| c == "scanning/main https://main-console.scanning.svc:3780 admin"),
        "{:?}",
        fake.state().connections
    );

    // The shared secret lives only in the Secret's data.
    let secret = &seen[0].body;
    assert_eq!(
        secret["data"]["shared-secret"], "ZmFrZS1zZWNyZXQtMQ==",
        "base64 of fake-secret-1"
    );
    assert_eq!(
        secret["metadata"]["annotations"]["scanengine.dev/expires-at"],
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
    assert_eq!(seen[1].body["reason"], "SharedSecretRenewed");

    let status = &seen[2].body["status"];
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
    assert_eq!(seen[3].body["reason"], "Ready");

    // A periodic refresh, nothing changed: the console is listed again, and not one request
    // is made. Secrets kept, nothing applied again, no shared secret or status write.
    c.status = serde_json::from_value(status.clone()).ok();
    let objects = after_with_secrets(&objects, &seen);
    let listings = |fake: &FakeConsole| {
        fake.state()
            .calls
            .iter()
            .filter(|c| *c == "GET /api/3/scan_engines")
            .count()
    };
    let listed_before = listings(&fake);
    let (client, handle) = mock_client();
    let (result, seen) = drive(
        reconcile(Arc::new(c), next_context(client, &fake, &ctx, &objects)),
        Scenario::new().run(handle),
    )
    .await;
    assert!(result.is_ok(), "{result:?}");
    assert!(!seen.iter().any(is_write), "{seen:?}");
    assert_eq!(
        listings(&fake),
        listed_before + 1,
        "the refresh lists the console"
    );
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
        .apply("/api/v1", NS, "secrets", "main-console-shared-secret")
        .event(NS);
    // Its status, the warning about the unverified certificate, then Ready.
    let s = status_patch(s, &c).event(NS).event(NS);
    let (result, seen) = drive(
        reconcile(Arc::new(c), context_with(client, &fake, &[creds()])),
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
        seen[0].body["data"]["shared-secret"],
        "ZmFrZS1zZWNyZXQtMQ=="
    );
    assert_eq!(seen[1].body["reason"], "SharedSecretRenewed");
    let status = &seen[2].body["status"];
    assert_eq!(status["type"], "External");
    let warning = status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "InsecureTls"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(warning["status"], "True");
    assert_eq!(warning["reason"], "InsecureSkipTlsVerify");
    assert_eq!(seen[3].body["type"], "Warning");
    assert_eq!(seen[3].body["reason"], "InsecureSkipTlsVerify");
    assert_eq!(seen[4].body["reason"], "Ready");
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
    let s = status_patch(Scenario::new(), &c);
    let (result, seen) = drive(
        reconcile(Arc::new(c), context_with(client, &fake, &[creds()])),
        s.run(handle),
    )
    .await;
    assert!(result.is_err());
    let status = &seen[0].body["status"];
    let ready = status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "ConsoleUnreachable");
}

const CONSOLE_PATH: &str = "/apis/scanengine.dev/v1alpha1/namespaces/scanning/consoles/main";

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
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": NS}, "data": {"username": "YWRtaW4=", "password": "cHc="}})
}

fn deleted(mut c: Console) -> Console {
    c.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        crate::controller::fixtures::now(),
    ));
    c
}

/// ScanEngines `(name, console)`, as the ScanEngine store holds them.
fn engines(consoles: &[(&str, &str)]) -> Vec<Value> {
    consoles
        .iter()
        .map(|(name, console)| {
            json!({
                "apiVersion": "scanengine.dev/v1alpha1", "kind": "ScanEngine",
                "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}")},
                "spec": {"consoleRef": {"name": console}},
            })
        })
        .collect()
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
    let mut objects = engines(&[("edge", "main"), ("other", "elsewhere"), ("core", "main")]);
    objects.push(creds());
    let (client, handle) = mock_client();
    let s = status_patch(Scenario::new(), &c).event(NS);
    let (result, seen) = drive(
        reconcile(Arc::new(c.clone()), context_with(client, &fake, &objects)),
        s.run(handle),
    )
    .await;
    assert!(
        matches!(result, Err(crate::Error::Finalizer(_))),
        "{result:?}"
    );
    let cleanup = seen[0].body["status"]["conditions"]
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
    assert_eq!(seen[1].body["reason"], "ConsoleCleanupBlocked");
    assert!(
        !fake.state().calls.iter().any(|c| c.starts_with("DELETE")),
        "nothing revoked while engines remain"
    );

    // The engines are gone: the secret is revoked and the finalizer removed.
    let mut objects = engines(&[("other", "elsewhere")]);
    objects.push(creds());
    let (client, handle) = mock_client();
    let s = finalizer_removed(Scenario::new().event(NS), &c);
    let (result, seen) = drive(
        reconcile(Arc::new(c), context_with(client, &fake, &objects)),
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
    assert_eq!(seen[0].body["reason"], "SharedSecretRevoked");
    assert!(seen[1].body.to_string().contains("\"op\":\"remove\""));
}

#[tokio::test]
async fn a_deleted_console_that_cannot_be_reached_stays_until_told_to_skip() {
    let fake = FakeConsole::default();
    fake.state().down = true;
    let mut c = deleted(external_console());

    let (client, handle) = mock_client();
    let s = status_patch(Scenario::new(), &c).event(NS);
    let (result, seen) = drive(
        reconcile(Arc::new(c.clone()), context_with(client, &fake, &[creds()])),
        s.run(handle),
    )
    .await;
    assert!(result.is_err(), "{result:?}");
    let text = seen[0].body["status"].to_string();
    assert!(
        text.contains("ConsoleUnreachable") && text.contains("cannot revoke"),
        "{text}"
    );
    assert!(!text.contains("cHc"), "no credential in the status: {text}");
    assert_eq!(seen[1].body["reason"], "ConsoleCleanupBlocked");

    crate::controller::fixtures::skip_cleanup(&mut c.metadata);
    let (client, handle) = mock_client();
    let s = finalizer_removed(Scenario::new().event(NS), &c);
    let (result, seen) = drive(
        reconcile(Arc::new(c), context_with(client, &fake, &[creds()])),
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
    let ours = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "main-console-admin", "namespace": NS, "labels": {"app.kubernetes.io/managed-by": "scan-engine-operator"}}, "data": {"username": "YWRtaW4=", "password": "cHc="}});
    let (client, handle) = mock_client();
    // The API TLS Secret is missing, so the pair would be regenerated; but the CA Secret of
    // that name is not the operator's: it is neither deleted nor replaced.
    let s = status_patch(Scenario::new(), &c).event(NS);
    let (result, seen) = drive(
        reconcile(
            Arc::new(c),
            context_with(client, &fake, &[ours, foreign_secret("main-console-ca")]),
        ),
        s.run(handle),
    )
    .await;
    assert!(result.is_err(), "{result:?}");
    assert!(
        seen.iter()
            .all(|s| s.path.contains("/status") || s.path.contains("/events")),
        "nothing written or deleted but status and event: {seen:?}"
    );
    let ready = ready_of(&seen[0].body["status"]);
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "OwnershipConflict");
    let message = ready["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("Secret scanning/main-console-ca")
            && message.contains("not the operator's"),
        "{message}"
    );
    assert_eq!(seen[1].body["type"], "Warning");
    assert_eq!(seen[1].body["reason"], "OwnershipConflict");
    assert!(fake.state().calls.is_empty(), "the console is not called");
}

#[tokio::test]
async fn a_foreign_shared_secret_secret_is_not_overwritten() {
    let fake = FakeConsole::default();
    let c = external_console();
    let (client, handle) = mock_client();
    let s = status_patch(Scenario::new(), &c).event(NS);
    let objects = [creds(), foreign_secret("main-console-shared-secret")];
    let (result, seen) = drive(
        reconcile(Arc::new(c), context_with(client, &fake, &objects)),
        s.run(handle),
    )
    .await;
    assert!(result.is_err(), "{result:?}");
    assert!(
        !seen
            .iter()
            .any(|s| s.path.contains("secrets/main-console-shared-secret")),
        "not applied over: {seen:?}"
    );
    let ready = ready_of(&seen[0].body["status"]);
    assert_eq!(ready["reason"], "OwnershipConflict");
    assert!(
        ready["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Secret scanning/main-console-shared-secret"),
        "{ready}"
    );
    assert_eq!(seen[1].body["reason"], "OwnershipConflict");
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
    // No credential is used for it, and the console is never called.
    let s = status_patch(Scenario::new(), &c);
    let (result, seen) = drive(
        reconcile(Arc::new(c), context_with(client, &fake, &[creds()])),
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
    assert!(fake.state().calls.is_empty());
}

/// Console `c` with a status written at generation 1 that counts `counts`.
fn with_counts(mut c: Console, counts: Value) -> Console {
    c.status = serde_json::from_value(json!({
        "observedGeneration": 1,
        "type": "External",
        "url": "https://console.example.com:3780",
        "engineListenerAddress": "console.example.com:40815",
        "engines": counts,
        "sharedSecret": {"secretName": "main-console-shared-secret", "expiresAt": "2026-01-01T01:00:00Z"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": "console API reachable and shared secret valid", "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}],
    }))
    .ok();
    c
}

/// The shared secret's Secret, as its store holds it.
fn shared_secret_secret() -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "main-console-shared-secret", "namespace": NS, "labels": {"app.kubernetes.io/managed-by": "scan-engine-operator"}}, "data": {"shared-secret": "c2VjcmV0"}})
}

#[tokio::test]
async fn a_console_woken_between_listings_only_recounts() {
    let fake = FakeConsole::default();
    fake.insert_engine("a.scanning", "active", "engine-to-console");
    fake.insert_engine("b.scanning", "pending-authorization", "console-to-engine");
    let counts = json!({"total": 2, "active": 1, "unknown": 0, "pendingAuthorization": 1, "incompatible": 0, "down": 0});

    // Its status already counts what the view holds: no request, and the console not called.
    let c = with_counts(external_console(), counts.clone());
    assert!(c.status.is_some());
    let (client, handle) = mock_client();
    let ctx = context_with(
        client,
        &fake,
        &[stored(&c), creds(), shared_secret_secret()],
    );
    let (result, seen) = drive(reconcile(Arc::new(c), ctx), Scenario::new().run(handle)).await;
    assert_eq!(
        result.ok(),
        Some(Action::requeue(Duration::from_secs(60))),
        "the next listing is one refresh interval after the last"
    );
    assert!(seen.is_empty(), "{seen:?}");
    assert!(fake.state().calls.is_empty(), "{:?}", fake.state().calls);

    // The counts are behind the view (an engine recorded a new state): the status is written
    // with the view's counts, and still the console is not called.
    let c = with_counts(
        external_console(),
        json!({"total": 1, "active": 0, "unknown": 0, "pendingAuthorization": 1, "incompatible": 0, "down": 0}),
    );
    let (client, handle) = mock_client();
    let ctx = context_with(
        client,
        &fake,
        &[stored(&c), creds(), shared_secret_secret()],
    );
    let s = status_patch(Scenario::new(), &c);
    let (result, seen) = drive(reconcile(Arc::new(c), ctx), s.run(handle)).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(seen.len(), 1, "{seen:?}");
    let status = &seen[0].body["status"];
    assert_eq!(status["engines"], counts);
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(
        status["sharedSecret"]["secretName"], "main-console-shared-secret",
        "the rest of the status is kept"
    );
    assert!(fake.state().calls.is_empty(), "{:?}", fake.state().calls);
}
