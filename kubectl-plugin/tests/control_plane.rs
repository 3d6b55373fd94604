//! `kubectl scanengine` against a real kube-apiserver and etcd (the support library's control
//! plane), with the CRDs from `crds/` installed and ScanEngine and Console statuses written
//! through the status subresource, as the operator writes them. No operator runs: where a
//! command waits for it (`refresh`), the test either lets it time out or plays the operator.
//!
//! The tests are `#[ignore]`d so that the unit tier (`cargo test` of the workspace), which has
//! no control-plane binaries, does not run them. The control-plane tier runs them with
//!
//! ```text
//! KUBEBUILDER_ASSETS=<directory of etcd, kube-apiserver, kube-controller-manager> \
//!     cargo test -p kubectl-scanengine --test control_plane -- --ignored --test-threads=1
//! ```
//!
//! Without the binaries they fail and say how to get them (`cargo xtask k8s-bins`).

use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use scan_engine_operator::crd::{Communication, Console, REFRESH_ANNOTATION, ScanEngine};
use scan_engine_tests::{ControlPlane, ControlPlaneOptions, TestNamespace, workspace_root};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-scanengine");
const DEADLINE: Duration = Duration::from_secs(30);

/// A control plane (API server and etcd only: nothing here needs controllers) with the CRDs
/// installed, and a namespace of the test's own.
async fn cluster() -> (ControlPlane, TestNamespace) {
    let cp = ControlPlane::start_with(ControlPlaneOptions {
        controller_manager: false,
        ..ControlPlaneOptions::default()
    })
    .await;
    cp.install_crds(&workspace_root().join("crds")).await;
    let ns = cp.namespace().await;
    (cp, ns)
}

/// The plugin as a process with the admin kubeconfig, stdin given or closed, nothing from the
/// test's own environment that would change its output.
fn plugin(kubeconfig: &Path, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(PLUGIN);
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Run {
        Run {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit ok: {}\n--- stdout\n{}--- stderr\n{}",
            self.ok, self.stdout, self.stderr
        )
    }
}

async fn run(kubeconfig: &Path, args: &[&str]) -> Run {
    run_with_input(kubeconfig, args, None).await
}

async fn run_with_input(kubeconfig: &Path, args: &[&str], input: Option<&str>) -> Run {
    let mut cmd = plugin(kubeconfig, args);
    if input.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("starting kubectl-scanengine");
    if let Some(input) = input {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin
            .write_all(input.as_bytes())
            .await
            .expect("writing stdin");
    }
    let out = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("kubectl-scanengine {args:?} did not finish within 90s"))
        .expect("waiting for kubectl-scanengine");
    out.into()
}

async fn create_console(client: &Client, ns: &str, name: &str, status: Value) -> Console {
    let api: Api<Console> = Api::namespaced(client.clone(), ns);
    let console: Console = serde_json::from_value(json!({
        "apiVersion": "scanengine.dev/v1alpha1",
        "kind": "Console",
        "metadata": {"name": name},
        "spec": {"managed": {}},
    }))
    .unwrap();
    api.create(&PostParams::default(), &console)
        .await
        .expect("creating the Console");
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await
    .expect("writing the Console's status")
}

async fn create_engine(client: &Client, ns: &str, name: &str, spec: Value) -> ScanEngine {
    let api: Api<ScanEngine> = Api::namespaced(client.clone(), ns);
    let mut spec = spec;
    spec["consoleRef"] = json!({"name": "main"});
    let engine: ScanEngine = serde_json::from_value(json!({
        "apiVersion": "scanengine.dev/v1alpha1",
        "kind": "ScanEngine",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap();
    api.create(&PostParams::default(), &engine)
        .await
        .unwrap_or_else(|err| panic!("creating ScanEngine {name}: {err}"))
}

/// Writes the status the operator would: direction, state, version, id, refresh time, message.
async fn write_status(client: &Client, ns: &str, name: &str, status: Value) -> ScanEngine {
    let api: Api<ScanEngine> = Api::namespaced(client.clone(), ns);
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await
    .unwrap_or_else(|err| panic!("writing the status of ScanEngine {name}: {err}"))
}

fn status(direction: Communication, state: &str, id: i64, refreshed: Timestamp) -> Value {
    json!({
        "communication": {
            "direction": direction,
            "directionDisplay": direction.display(),
            "state": state,
        },
        "engineId": id,
        "engineName": "",
        "version": "0.1.0",
        "lastRefreshTime": refreshed.to_string(),
        "message": format!("the console reports the engine {state}"),
    })
}

fn ago(minutes: i64) -> Timestamp {
    Timestamp::now() - SignedDuration::from_mins(minutes)
}

async fn get_engine(client: &Client, ns: &str, name: &str) -> ScanEngine {
    Api::<ScanEngine>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap_or_else(|err| panic!("reading ScanEngine {name}: {err}"))
}

/// The line of the table that starts with `name`.
fn line_of<'a>(table: &'a str, name: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no line for {name} in\n{table}"))
}

/// The cells of `name`'s line (columns are separated by at least three spaces).
fn cells_of(table: &str, name: &str) -> Vec<String> {
    line_of(table, name)
        .split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane: run by cargo xtask test --tier control-plane"]
async fn get_shows_the_method_by_arrow_and_the_state_in_words() {
    let (cp, ns) = cluster().await;
    let client = cp.client();
    let kubeconfig = cp.admin_kubeconfig_path();
    let ns = ns.name();
    create_console(
        &client,
        ns,
        "main",
        json!({"engineListenerAddress": "main-console-engines.example:40815"}),
    )
    .await;
    create_engine(&client, ns, "standard", json!({})).await;
    create_engine(
        &client,
        ns,
        "reverse",
        json!({"communication": "EngineToConsole"}),
    )
    .await;
    create_engine(&client, ns, "offline", json!({})).await;
    create_engine(&client, ns, "fresh", json!({})).await;
    use Communication::*;
    write_status(
        &client,
        ns,
        "standard",
        status(ConsoleToEngine, "Active", 11, ago(3)),
    )
    .await;
    write_status(
        &client,
        ns,
        "reverse",
        status(EngineToConsole, "PendingAuthorization", 12, ago(3)),
    )
    .await;
    write_status(
        &client,
        ns,
        "offline",
        status(ConsoleToEngine, "Down", 13, ago(125)),
    )
    .await;

    let get = run(kubeconfig, &["get", "-n", ns]).await;
    assert!(get.ok, "{get}");
    let table = &get.stdout;
    let header = table.lines().next().unwrap();
    for column in [
        "NAME",
        "CONSOLE",
        "COMMUNICATION",
        "STATE",
        "VERSION",
        "LAST REFRESH",
        "MESSAGE",
    ] {
        assert!(header.contains(column), "no {column} column:\n{table}");
    }
    let mut standard = cells_of(table, "standard");
    // Refreshed 3 minutes before the status was written: "3m", or "3m1s" and on when the
    // plugin runs a second or more later.
    let age = standard.remove(5);
    assert!(age.starts_with("3m"), "last refresh {age:?}:\n{table}");
    assert_eq!(
        standard,
        [
            "standard",
            "main",
            "Console → Engine",
            "Active",
            "0.1.0",
            "the console reports the engine Active"
        ],
        "{table}"
    );
    assert_eq!(
        cells_of(table, "reverse")[2..4],
        ["Engine → Console", "Pending Authorization"],
        "{table}"
    );
    assert_eq!(
        cells_of(table, "offline")[2..6],
        ["Console → Engine", "Down", "0.1.0", "125m"],
        "{table}"
    );
    // No status yet: the spec's direction, no state.
    assert_eq!(
        cells_of(table, "fresh")[2..],
        ["Console → Engine", "<none>", "<none>", "<none>"],
        "{table}"
    );
    // Not a terminal: words only, no colour codes.
    assert!(!table.contains('\x1b'), "{table:?}");

    // -o wide: the engine id, where the connection goes, the pod (none: nothing runs here).
    let wide = run(kubeconfig, &["get", "-n", ns, "-o", "wide"]).await;
    assert!(wide.ok, "{wide}");
    assert!(wide.stdout.lines().next().unwrap().contains("ENGINE ID"));
    let standard = cells_of(&wide.stdout, "standard");
    assert_eq!(
        standard[6..9],
        [
            "11".to_owned(),
            format!("standard-scan-engine.{ns}.svc:40814"),
            "<none>".to_owned()
        ],
        "{}",
        wide.stdout
    );
    assert_eq!(
        cells_of(&wide.stdout, "reverse")[7],
        "main-console-engines.example:40815",
        "{}",
        wide.stdout
    );

    // One engine by name; -A adds the namespace.
    let one = run(kubeconfig, &["get", "reverse", "-n", ns]).await;
    assert!(one.ok, "{one}");
    assert_eq!(one.stdout.lines().count(), 2, "{one}");
    let all = run(kubeconfig, &["get", "-A"]).await;
    assert!(all.ok, "{all}");
    assert!(all.stdout.starts_with("NAMESPACE "), "{all}");
    assert!(
        all.stdout
            .lines()
            .any(|l| l.starts_with(ns) && l.contains(" standard ")),
        "{all}"
    );

    // -o json: one object per engine, the state as the CRD spells it.
    let json_out = run(kubeconfig, &["get", "standard", "-n", ns, "-o", "json"]).await;
    assert!(json_out.ok, "{json_out}");
    let row: Value = serde_json::from_str(json_out.stdout.trim()).expect("one JSON object");
    assert_eq!(row["state"], "Active");
    assert_eq!(row["communication"], "ConsoleToEngine");

    // A name that does not exist is an error that names it.
    let missing = run(kubeconfig, &["get", "nothing", "-n", ns]).await;
    assert!(!missing.ok, "{missing}");
    assert!(
        missing
            .stderr
            .contains(&format!("ScanEngine {ns}/nothing not found")),
        "{missing}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane: run by cargo xtask test --tier control-plane"]
async fn get_watch_prints_the_table_again_when_an_engine_changes() {
    let (cp, ns) = cluster().await;
    let client = cp.client();
    let ns = ns.name();
    create_engine(&client, ns, "standard", json!({})).await;
    write_status(
        &client,
        ns,
        "standard",
        status(Communication::ConsoleToEngine, "Active", 1, ago(1)),
    )
    .await;

    let mut child = plugin(cp.admin_kubeconfig_path(), &["get", "-n", ns, "--watch"])
        .spawn()
        .expect("starting kubectl-scanengine get --watch");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let seen = Arc::new(Mutex::new(String::new()));
    let reader = {
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                seen.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let wait_for = |wanted: &'static str| {
        let seen = seen.clone();
        async move {
            let until = Instant::now() + DEADLINE;
            while !seen.lock().unwrap().contains(wanted) {
                assert!(
                    Instant::now() < until,
                    "--watch did not print {wanted:?} within {DEADLINE:?}; it printed:\n{}",
                    seen.lock().unwrap()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait_for("Console → Engine   Active").await;
    write_status(
        &client,
        ns,
        "standard",
        status(Communication::ConsoleToEngine, "Unknown", 1, ago(20)),
    )
    .await;
    wait_for("Console → Engine   Unknown").await;
    create_engine(&client, ns, "second", json!({})).await;
    wait_for("\nsecond ").await;
    let printed = seen.lock().unwrap().clone();
    assert_eq!(
        printed.matches("NAME ").count(),
        3,
        "a table for the listing and one per change:\n{printed}"
    );
    child.kill().await.expect("stopping the watch");
    reader.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane: run by cargo xtask test --tier control-plane"]
async fn switch_flips_the_method_after_the_firewall_reminder() {
    let (cp, ns) = cluster().await;
    let client = cp.client();
    let kubeconfig = cp.admin_kubeconfig_path();
    let ns = ns.name();
    create_engine(&client, ns, "edge", json!({})).await;
    write_status(
        &client,
        ns,
        "edge",
        status(Communication::ConsoleToEngine, "Active", 5, ago(1)),
    )
    .await;

    // Without --yes it asks; anything but yes leaves the engine as it was.
    let declined = run_with_input(kubeconfig, &["switch", "edge", "-n", ns], Some("n\n")).await;
    assert!(!declined.ok, "{declined}");
    assert!(
        declined.stderr.contains("Adjust your firewall rules")
            && declined.stderr.contains("NetworkPolicies itself")
            && declined.stderr.contains("[y/N]"),
        "{declined}"
    );
    assert!(declined.stderr.contains("not confirmed"), "{declined}");
    assert_eq!(
        get_engine(&client, ns, "edge").await.spec.communication,
        Communication::ConsoleToEngine
    );
    // No answer at all (stdin closed) is no.
    let closed = run(kubeconfig, &["switch", "edge", "-n", ns]).await;
    assert!(!closed.ok, "{closed}");

    let yes = run_with_input(kubeconfig, &["switch", "edge", "-n", ns], Some("y\n")).await;
    assert!(yes.ok, "{yes}");
    assert!(
        yes.stderr.contains(
            "from ConsoleToEngine (Console → Engine) to EngineToConsole (Engine → Console)"
        ),
        "{yes}"
    );
    let engine = get_engine(&client, ns, "edge").await;
    assert_eq!(engine.spec.communication, Communication::EngineToConsole);
    assert!(
        engine
            .managed_fields()
            .iter()
            .any(|m| m.manager.as_deref() == Some("kubectl-scanengine")),
        "the switch is written under the plugin's own field manager: {:?}",
        engine.managed_fields()
    );
    // Until the operator re-pairs, the table shows both.
    let get = run(kubeconfig, &["get", "edge", "-n", ns]).await;
    assert!(
        get.stdout
            .contains("Console → Engine (switching to Engine → Console)"),
        "{get}"
    );

    // --yes asks nothing, and still says what the firewall needs.
    let back = run(kubeconfig, &["switch", "edge", "-n", ns, "--yes"]).await;
    assert!(back.ok, "{back}");
    assert!(back.stderr.is_empty(), "no question with --yes: {back}");
    assert!(
        back.stdout
            .contains("the console must reach the engine on TCP 40814"),
        "{back}"
    );
    assert_eq!(
        get_engine(&client, ns, "edge").await.spec.communication,
        Communication::ConsoleToEngine
    );

    // What the API server refuses is reported with its reason.
    create_engine(
        &client,
        ns,
        "public",
        json!({"advertisedAddress": "engine.example:40814"}),
    )
    .await;
    let refused = run(kubeconfig, &["switch", "public", "-n", ns, "--yes"]).await;
    assert!(!refused.ok, "{refused}");
    assert!(
        refused
            .stderr
            .contains("spec.advertisedAddress applies only to communication ConsoleToEngine"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane: run by cargo xtask test --tier control-plane"]
async fn refresh_sets_the_annotation_and_waits_for_the_operator() {
    let (cp, ns) = cluster().await;
    let client = cp.client();
    let kubeconfig = cp.admin_kubeconfig_path().to_owned();
    let ns = ns.name().to_owned();
    create_engine(&client, &ns, "edge", json!({})).await;
    write_status(
        &client,
        &ns,
        "edge",
        status(Communication::ConsoleToEngine, "Unknown", 5, ago(30)),
    )
    .await;

    // No operator: the annotation is set, and the wait ends with a message that says why.
    let started = Instant::now();
    let timed_out = run(
        &kubeconfig,
        &["refresh", "edge", "-n", &ns, "--timeout", "2s"],
    )
    .await;
    assert!(!timed_out.ok, "{timed_out}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "--timeout 2s took {:?}",
        started.elapsed()
    );
    let engine = get_engine(&client, &ns, "edge").await;
    let first = engine
        .annotations()
        .get(REFRESH_ANNOTATION)
        .cloned()
        .expect("refresh sets the operator's refresh annotation");
    assert!(
        timed_out.stderr.contains(&format!(
            "the operator did not act on {REFRESH_ANNOTATION}={first} of ScanEngine {ns}/edge within 2s"
        )) && timed_out.stderr.contains("Is the operator running?"),
        "{timed_out}"
    );

    // The test plays the operator: once the annotation changes, it acts on the new value.
    let child = plugin(
        &kubeconfig,
        &["refresh", "edge", "-n", &ns, "--timeout", "30s"],
    )
    .spawn()
    .expect("starting kubectl-scanengine refresh");
    let until = Instant::now() + DEADLINE;
    let value = loop {
        let engine = get_engine(&client, &ns, "edge").await;
        match engine.annotations().get(REFRESH_ANNOTATION) {
            Some(v) if *v != first => break v.clone(),
            _ => {}
        }
        assert!(
            Instant::now() < until,
            "refresh did not set a new annotation value"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut refreshed = status(
        Communication::ConsoleToEngine,
        "Active",
        5,
        Timestamp::now(),
    );
    refreshed["lastHandledRefresh"] = json!(value);
    write_status(&client, &ns, "edge", refreshed).await;
    let done: Run = tokio::time::timeout(Duration::from_secs(40), child.wait_with_output())
        .await
        .expect("refresh finished once the status reported the refresh")
        .expect("waiting for refresh")
        .into();
    assert!(done.ok, "{done}");
    let cells = cells_of(&done.stdout, "edge");
    assert_eq!(cells[2..4], ["Console → Engine", "Active"], "{done}");
    assert!(
        ["0s", "1s", "2s", "3s"].contains(&cells[5].as_str()),
        "the new refresh time: {done}"
    );

    let missing = run(&kubeconfig, &["refresh", "nothing", "-n", &ns]).await;
    assert!(!missing.ok);
    assert!(
        missing
            .stderr
            .contains(&format!("ScanEngine {ns}/nothing not found")),
        "{missing}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane: run by cargo xtask test --tier control-plane"]
async fn secret_shows_expiry_and_renewal_and_never_the_value() {
    let (cp, ns) = cluster().await;
    let client = cp.client();
    let ns = ns.name();
    const VALUE: &str = "0123456789abcdef-the-shared-secret";
    let mut secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "main-console-shared-secret"},
        "stringData": {"shared-secret": VALUE},
    }))
    .unwrap();
    secret.metadata.namespace = Some(ns.to_owned());
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("creating the shared secret's Secret");
    // Half a minute over 40m, so that the whole minutes shown do not depend on how fast the
    // test runs.
    let expires = Timestamp::now() + SignedDuration::from_secs(40 * 60 + 30);
    create_console(
        &client,
        ns,
        "main",
        json!({"sharedSecret": {
            "secretName": "main-console-shared-secret",
            "expiresAt": expires.to_string(),
        }}),
    )
    .await;

    // A user who may read Consoles and nothing else sees all the command shows.
    let rbac = format!(
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: console-reader}}
rules:
- apiGroups: [scanengine.dev]
  resources: [consoles]
  verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: console-reader}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: console-reader}}
subjects:
- {{kind: ServiceAccount, name: reader, namespace: {ns}}}
"#
    );
    cp.apply_yaml(&client, &rbac, ns).await;
    let reader = cp.service_account_kubeconfig(ns, "reader");

    let shown = run(&reader, &["secret", "main", "-n", ns]).await;
    assert!(shown.ok, "{shown}");
    let text = &shown.stdout;
    assert!(
        text.contains("main-console-shared-secret (key shared-secret; the value is not shown)"),
        "{shown}"
    );
    let expiry = expires.to_string();
    let expiry = expiry.split('.').next().unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("Expires:") && l.contains(expiry) && l.contains("(in 40m")),
        "{shown}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("Next renewal:")
            && l.contains("(in 25m")
            && l.contains("15m before expiry")),
        "{shown}"
    );
    assert!(
        !text.contains(VALUE) && !shown.stderr.contains(VALUE),
        "{shown}"
    );

    let missing = run(&reader, &["secret", "other", "-n", ns]).await;
    assert!(!missing.ok);
    assert!(
        missing
            .stderr
            .contains(&format!("Console {ns}/other not found")),
        "{missing}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the control plane: run by cargo xtask test --tier control-plane"]
async fn authorize_refuses_engines_that_need_no_authorizing() {
    let (cp, ns) = cluster().await;
    let client = cp.client();
    let kubeconfig = cp.admin_kubeconfig_path();
    let ns = ns.name();
    create_console(
        &client,
        ns,
        "main",
        json!({"certificateFingerprint": "sha256:00112233"}),
    )
    .await;
    create_engine(&client, ns, "automatic", json!({})).await;
    write_status(
        &client,
        ns,
        "automatic",
        status(
            Communication::ConsoleToEngine,
            "PendingAuthorization",
            1,
            ago(1),
        ),
    )
    .await;
    create_engine(&client, ns, "manual", json!({"authorization": "Manual"})).await;
    write_status(
        &client,
        ns,
        "manual",
        status(Communication::ConsoleToEngine, "Active", 2, ago(1)),
    )
    .await;

    let automatic = run(kubeconfig, &["authorize", "automatic", "-n", ns]).await;
    assert!(!automatic.ok, "{automatic}");
    assert!(
        automatic.stderr.contains("uses authorization Automatic"),
        "{automatic}"
    );
    let active = run(kubeconfig, &["authorize", "manual", "-n", ns]).await;
    assert!(!active.ok, "{active}");
    assert!(
        active
            .stderr
            .contains("is Active, not Pending Authorization"),
        "{active}"
    );

    // Pending Authorization, but no pod runs here (no kubelet): it says so and changes nothing.
    write_status(
        &client,
        ns,
        "manual",
        status(
            Communication::ConsoleToEngine,
            "PendingAuthorization",
            2,
            ago(1),
        ),
    )
    .await;
    let no_pod = run(kubeconfig, &["authorize", "manual", "-n", ns]).await;
    assert!(!no_pod.ok, "{no_pod}");
    assert!(
        no_pod
            .stderr
            .contains(&format!("ScanEngine {ns}/manual has no running pod")),
        "{no_pod}"
    );
}
