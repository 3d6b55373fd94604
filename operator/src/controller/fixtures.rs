//! A mock Kubernetes API server for reconciler tests (tower-test), in the style of
//! controller-rs: each scenario lists the exact requests (method, path with query, body
//! checks) the reconciler must make, in order, and how the API server answers.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

use super::{Context, Settings};
use crate::console_api::fake::FakeConsole;
use crate::metrics::Metrics;

pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// Annotates `meta` `scanengine.dev/skip-console-cleanup: "true"`.
pub fn skip_cleanup(meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) {
    meta.annotations = Some(
        [(
            crate::crd::SKIP_CLEANUP_ANNOTATION.to_string(),
            "true".to_string(),
        )]
        .into(),
    );
}

/// A client talking to the mock, and the mock's handle.
pub fn mock_client() -> (Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

/// A fixed clock: 2026-01-01T00:00:00Z.
pub fn now() -> Timestamp {
    Timestamp::from_second(1_767_225_600).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A context whose stores are empty.
pub fn context(client: Client, fake: &FakeConsole) -> Arc<Context> {
    context_with(client, fake, &[])
}

/// A context whose stores hold `objects` (JSON with `kind`), as the watches would, and whose
/// view of each Console's console (see [`crate::controller::console_engines`]) is a listing of
/// `fake` made now, unless the fake console is down.
pub fn context_with(client: Client, fake: &FakeConsole, objects: &[Value]) -> Arc<Context> {
    Arc::new(bare_context(client, fake, objects, now()))
}

/// The next periodic refresh: a clock one refresh interval after `ctx`'s, stores holding
/// `objects`, and a fresh listing of `fake`.
pub fn next_context(
    client: Client,
    fake: &FakeConsole,
    ctx: &Context,
    objects: &[Value],
) -> Arc<Context> {
    let at = ctx
        .now()
        .checked_add(ctx.settings.refresh_interval)
        .unwrap_or(Timestamp::MAX);
    Arc::new(bare_context(client, fake, objects, at))
}

/// `objects` as the API server would hold them after the requests `seen` (each server-side
/// apply answered with its body): the applied objects added, with a resourceVersion.
pub fn after(objects: &[Value], seen: &[Seen]) -> Vec<Value> {
    let mut out = objects.to_vec();
    for s in seen.iter().filter(|s| s.method == Method::PATCH) {
        if s.body.get("spec").is_some() && s.body.get("kind").is_some() {
            let (_, answered) = echo(&s.body);
            out.push(answered);
        }
    }
    out
}

fn bare_context(client: Client, fake: &FakeConsole, objects: &[Value], at: Timestamp) -> Context {
    let ctx = Context::new(
        client,
        Arc::new(Metrics::new()),
        Arc::new(fake.clone()),
        Arc::new(move || at),
        Settings {
            operator_namespace: "scan-engine-system".into(),
            default_version: "0.1.0".into(),
            ..Settings::default()
        },
        crate::controller::stores::testing::stores(objects),
    );
    let listing = {
        let state = fake.state();
        (!state.down).then(|| state.engines.values().cloned().collect::<Vec<_>>())
    };
    for console in ctx.stores.consoles.state() {
        let ns = console.metadata.namespace.as_deref().unwrap_or_default();
        let name = console.metadata.name.as_deref().unwrap_or_default();
        let uid = console.metadata.uid.as_deref();
        match &listing {
            Some(engines) => ctx
                .console_engines
                .listed(ns, name, uid, engines.clone(), at, &[]),
            // What the Console reconcile records when it cannot list its console.
            None => ctx.console_engines.listing_failed(
                ns,
                name,
                uid,
                "ConsoleUnreachable",
                &format!("Console {name}: console fake (https://fake:3780): GET /api/3/scan_engines: unreachable: connection refused"),
                &[],
            ),
        }
    }
    ctx
}

/// One request the reconciler must make, recorded with its body.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub body: Value,
}

type Answer = Box<dyn FnOnce(&Value) -> (StatusCode, Value) + Send>;

struct Step {
    method: Method,
    path: String,
    answer: Answer,
}

/// An ordered list of expected requests.
#[derive(Default)]
pub struct Scenario {
    steps: Vec<Step>,
}

/// Answers with the request body, as server-side apply would (plus a resourceVersion).
pub fn echo(body: &Value) -> (StatusCode, Value) {
    let mut body = body.clone();
    if let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), "1".into());
    }
    (StatusCode::OK, body)
}

pub fn not_found() -> (StatusCode, Value) {
    (
        StatusCode::NOT_FOUND,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
    )
}

pub const SSA: &str = "?&force=true&fieldManager=scan-engine-operator";

impl Scenario {
    pub fn new() -> Self {
        Self::default()
    }

    /// Expects `method path` and answers with `answer(request body)`.
    pub fn expect(
        mut self,
        method: Method,
        path: impl Into<String>,
        answer: impl FnOnce(&Value) -> (StatusCode, Value) + Send + 'static,
    ) -> Self {
        self.steps.push(Step {
            method,
            path: path.into(),
            answer: Box::new(answer),
        });
        self
    }

    /// Expects a GET answered with `obj`.
    pub fn get(self, path: impl Into<String>, obj: Value) -> Self {
        self.expect(Method::GET, path, move |_| (StatusCode::OK, obj))
    }

    /// Expects a server-side apply of a namespaced object, answered with its body.
    pub fn apply(self, group_path: &str, namespace: &str, plural: &str, name: &str) -> Self {
        self.expect(
            Method::PATCH,
            format!("{group_path}/namespaces/{namespace}/{plural}/{name}{SSA}"),
            echo,
        )
    }

    /// Expects the ownership read of a child not known as applied (answered: absent), then its
    /// server-side apply (see [`crate::controller::apply`]).
    pub fn first_apply(self, group_path: &str, namespace: &str, plural: &str, name: &str) -> Self {
        self.expect(
            Method::GET,
            format!("{group_path}/namespaces/{namespace}/{plural}/{name}"),
            |_| not_found(),
        )
        .apply(group_path, namespace, plural, name)
    }

    /// Expects an Event to be published.
    pub fn event(self, namespace: &str) -> Self {
        self.expect(
            Method::POST,
            format!("/apis/events.k8s.io/v1/namespaces/{namespace}/events?"),
            |b| (StatusCode::CREATED, b.clone()),
        )
    }

    /// Serves the scenario; the task returns every request seen. A request out of order fails
    /// the test with the expected and actual request.
    pub fn run(self, mut handle: Handle) -> tokio::task::JoinHandle<Vec<Seen>> {
        tokio::spawn(async move {
            let mut seen = Vec::new();
            for (i, step) in self.steps.into_iter().enumerate() {
                let Some((request, send)) = handle.next_request().await else {
                    panic!(
                        "step {i}: the reconciler stopped before {} {}",
                        step.method, step.path
                    );
                };
                let method = request.method().clone();
                let path = request
                    .uri()
                    .path_and_query()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                let bytes = request
                    .into_body()
                    .collect_bytes()
                    .await
                    .unwrap_or_default();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                assert_eq!(
                    (&method, path.as_str()),
                    (&step.method, step.path.as_str()),
                    "step {i}: unexpected request (body: {body})"
                );
                let (status, answer) = (step.answer)(&body);
                seen.push(Seen { method, path, body });
                let response = Response::builder()
                    .status(status)
                    .body(Body::from(serde_json::to_vec(&answer).unwrap_or_default()))
                    .unwrap_or_else(|_| Response::new(Body::empty()));
                send.send_response(response);
            }
            seen
        })
    }
}

/// Runs `fut` (a reconcile) against a scenario. Fails with the scenario's own assertion when a
/// request is out of order, and fails when the reconcile hangs (it made a request the scenario
/// does not answer) or stops short of the scenario.
pub async fn drive<T>(
    fut: impl std::future::Future<Output = T>,
    mut verifier: tokio::task::JoinHandle<Vec<Seen>>,
) -> (T, Vec<Seen>) {
    tokio::pin!(fut);
    let mut seen: Option<Vec<Seen>> = None;
    let deadline = tokio::time::sleep(Duration::from_secs(10));
    tokio::pin!(deadline);
    let out = loop {
        tokio::select! {
            out = &mut fut => break out,
            res = &mut verifier, if seen.is_none() => match res {
                Ok(s) => seen = Some(s),
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            },
            _ = &mut deadline => panic!("reconcile timed out: it made a request the scenario did not expect"),
        }
    };
    let seen = match seen {
        Some(s) => s,
        None => match tokio::time::timeout(Duration::from_secs(1), verifier).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => std::panic::resume_unwind(e.into_panic()),
            Err(_) => panic!("the reconciler made fewer requests than the scenario expects"),
        },
    };
    (out, seen)
}
