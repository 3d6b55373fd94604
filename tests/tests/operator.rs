//! Control-plane tier (issue 4, tier 3): the CRDs, the examples and the CEL rules against a real
//! kube-apiserver, and the operator binary running with exactly the chart's RBAC against real
//! `security-console` and `scan-engine` processes on loopback.
//!
//! ```text
//! cargo build -p scan-engine-operator -p security-console -p scan-engine
//! KUBEBUILDER_ASSETS=$(xtask/scripts/k8s-bins.sh | tail -1) \
//!     cargo test -p scan-engine-tests --test operator -- --test-threads=1
//! ```
//! (`cargo xtask test --tier control-plane` does all of it.) Without the control-plane
//! binaries the tests fail and say how to get them; they never skip.
//!
//! How the pods are stood in for: there is no kubelet, so the operator's StatefulSets never get
//! pods. Each engine runs as a process started from the StatefulSet's container exactly as the
//! operator wrote it (environment, arguments), with its volumes mapped to directories of the
//! test (the `data` claim to a directory that survives restarts, Secret volumes to files with
//! the Secret's current values) and only its listen and health addresses moved to loopback.
//! The console is an *external* console (`spec.external`) on loopback, trusted through the CA
//! of its API certificate; standard engines are registered at `advertisedAddress: 127.0.0.1`.

mod operator_support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    Api, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::discovery::Scope;
use kube::{Client, Resource, ResourceExt};
use operator_support::*;
use scan_engine_tests::{ControlPlane, ControlPlaneOptions, TestLogs, free_port, workspace_root};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// 1. CRDs, examples, CEL rules

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crds_are_structural_examples_pass_dry_run_and_cel_rules_reject_invalid_specs() {
    let cp = ControlPlane::start_with(ControlPlaneOptions {
        controller_manager: false,
        ..Default::default()
    })
    .await;
    let client = cp.client();
    let names = cp.install_crds(&workspace_root().join("crds")).await;
    assert_eq!(
        names.iter().collect::<BTreeSet<_>>(),
        ["consoles.scanengine.dev", "scanengines.scanengine.dev"]
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>()
            .iter()
            .collect(),
        "crds/ holds exactly the two CRDs"
    );

    // Every CRD is accepted as structural: Established and NamesAccepted, no NonStructuralSchema.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in &names {
        let conditions = eventually(
            format!("CRD {name} Established and NamesAccepted"),
            DEADLINE,
            String::new,
            || async {
                let crd = crds.get(name).await.map_err(|e| e.to_string())?;
                let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
                let is_true = |t: &str| {
                    conditions
                        .iter()
                        .any(|c| c.type_ == t && c.status == "True")
                };
                if is_true("Established") && is_true("NamesAccepted") {
                    Ok(conditions)
                } else {
                    Err(format!("{conditions:?}"))
                }
            },
        )
        .await;
        assert!(
            !conditions
                .iter()
                .any(|c| c.type_ == "NonStructuralSchema" && c.status == "True"),
            "CRD {name} is not structural: {conditions:?}"
        );
    }

    // Every manifest in examples/ passes server-side dry-run (dryRun=All) in a test namespace.
    let ns = cp.namespace().await;
    let mut files: Vec<_> = std::fs::read_dir(workspace_root().join("examples"))
        .expect("examples/")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut checked = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("reading an example");
        for mut doc in documents(&text) {
            let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
            if doc["apiVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with("kustomize.config.k8s.io/"))
            {
                // A kustomization is read by kubectl/kustomize, never sent to the API server;
                // every file it lists is checked below.
                for resource in doc["resources"].as_array().into_iter().flatten() {
                    let listed = file
                        .parent()
                        .unwrap_or(Path::new("."))
                        .join(resource.as_str().unwrap_or_default());
                    assert!(
                        listed.is_file(),
                        "{} lists missing {}",
                        file.display(),
                        listed.display()
                    );
                }
                continue;
            }
            let what = format!(
                "{} {kind} {}",
                file.file_name().unwrap_or_default().to_string_lossy(),
                doc["metadata"]["name"]
            );
            dry_run_create(&client, ns.name(), &mut doc)
                .await
                .unwrap_or_else(|e| panic!("{what}: rejected by server-side dry-run: {e}"));
            checked.push(what);
        }
    }
    for expected in [
        "managed-console.yaml Console",
        "managed-console.yaml ScanEngine",
        "external-console.yaml Console",
        "external-console.yaml ScanEngine",
        "manual-authorization.yaml ScanEngine",
    ] {
        assert!(
            checked.iter().any(|c| c.starts_with(expected)),
            "no {expected} was dry-run; checked: {checked:?}"
        );
    }

    // The CEL rules: each case of the operator's table, submitted to the real API server.
    let table: Value = serde_json::from_str(
        &std::fs::read_to_string(workspace_root().join("operator/tests/cel_cases.json"))
            .expect("operator/tests/cel_cases.json"),
    )
    .expect("cel_cases.json is JSON");
    let cases = table["cases"].as_array().expect("a `cases` array");
    assert!(cases.len() >= 10, "suspiciously few CEL cases");
    // The rules on metadata.name: cases that bring their own object name.
    let name_cases = table["nameCases"].as_array().expect("a `nameCases` array");
    assert!(!name_cases.is_empty(), "no metadata.name cases");
    let mut failures = Vec::new();
    for (i, case) in cases.iter().chain(name_cases).enumerate() {
        let name = case["name"].as_str().unwrap_or("?");
        let kind = case["kind"].as_str().expect("a kind");
        let accepted = case["accepted"].as_bool().expect("accepted");
        let resource = match kind {
            "Console" => console_resource(),
            "ScanEngine" => scan_engine_resource(),
            other => panic!("case {name}: unknown kind {other}"),
        };
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns.name(), &resource);
        let object_name = case["objectName"]
            .as_str()
            .map_or_else(|| format!("cel-{i}"), str::to_owned);
        let object = |spec: &Value| -> DynamicObject {
            serde_json::from_value(json!({
                "apiVersion": "scanengine.dev/v1alpha1",
                "kind": kind,
                "metadata": {"name": object_name, "namespace": ns.name()},
                "spec": spec,
            }))
            .expect("an object")
        };
        let result = match case.get("oldSpec").filter(|v| !v.is_null()) {
            None => {
                api.create(
                    &PostParams {
                        dry_run: true,
                        field_manager: None,
                    },
                    &object(&case["spec"]),
                )
                .await
            }
            Some(old) => {
                let stored = api
                    .create(&PostParams::default(), &object(old))
                    .await
                    .unwrap_or_else(|e| panic!("case {name}: the old object is rejected: {e}"));
                let mut new = object(&case["spec"]);
                new.metadata.resource_version = stored.metadata.resource_version.clone();
                let result = api
                    .replace(
                        &object_name,
                        &PostParams {
                            dry_run: true,
                            field_manager: None,
                        },
                        &new,
                    )
                    .await;
                let _ = api.delete(&object_name, &DeleteParams::default()).await;
                result
            }
        };
        match (accepted, result) {
            (true, Ok(_)) => {}
            (true, Err(e)) => failures.push(format!("{name}: expected accepted, got {e}")),
            (false, Ok(_)) => failures.push(format!("{name}: expected rejected, was accepted")),
            (false, Err(kube::Error::Api(status))) => {
                let wanted = case["message"].as_str().unwrap_or_default();
                if status.code != 422 || !status.message.contains(wanted) {
                    failures.push(format!(
                        "{name}: expected 422 with {wanted:?}, got {}: {}",
                        status.code, status.message
                    ));
                }
                if !status.message.contains("spec") && !status.message.contains("metadata.name") {
                    failures.push(format!(
                        "{name}: the message names no field: {}",
                        status.message
                    ));
                }
            }
            (false, Err(e)) => failures.push(format!("{name}: expected a 422, got {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "the API server disagrees with operator/tests/cel_cases.json:\n{}",
        failures.join("\n")
    );
}

/// `POST …?dryRun=All` of one manifest object, namespaced objects moved into `ns`.
async fn dry_run_create(client: &Client, ns: &str, doc: &mut Value) -> Result<(), kube::Error> {
    let mut object: DynamicObject = serde_json::from_value(doc.clone()).expect("an object");
    let types = object.types.clone().expect("apiVersion and kind");
    let gvk = GroupVersionKind::try_from(&types).expect("a GVK");
    let (resource, caps) = kube::discovery::pinned_kind(client, &gvk).await?;
    let api: Api<DynamicObject> = if caps.scope == Scope::Namespaced {
        object.metadata.namespace = Some(ns.to_owned());
        Api::namespaced_with(client.clone(), ns, &resource)
    } else {
        Api::all_with(client.clone(), &resource)
    };
    api.create(
        &PostParams {
            dry_run: true,
            field_manager: None,
        },
        &object,
    )
    .await
    .map(|_| ())
}

// ---------------------------------------------------------------------------------------------
// 2. the operator against real console and engines

/// Control plane, CRDs, the operator with the chart's RBAC, and an external console.
struct Harness {
    operator: Operator,
    console: ExternalConsole,
    logs: TestLogs,
    cp: ControlPlane,
}

impl Harness {
    async fn start(console_ttl: Option<&str>, chart_sets: &[&str]) -> Harness {
        let cp = ControlPlane::start().await;
        cp.install_crds(&workspace_root().join("crds")).await;
        let logs = TestLogs::for_current_test();
        let mut sets = vec![format!("refreshInterval={REFRESH_INTERVAL}")];
        sets.extend(chart_sets.iter().map(|s| s.to_string()));
        let operator = Operator::start(&cp, &logs, &sets).await;
        let console = ExternalConsole::start(&logs, "console", console_ttl).await;
        Harness {
            operator,
            console,
            logs,
            cp,
        }
    }

    fn client(&self) -> Client {
        self.cp.client()
    }

    /// The operator still runs and was never refused anything by the API server: with exactly
    /// the chart's RBAC, a missing rule shows up as `forbidden` in its log.
    fn assert_operator_never_forbidden(&self) {
        self.operator.assert_running();
        let log = self.operator.output();
        let refused: Vec<&str> = log
            .lines()
            .filter(|l| l.to_ascii_lowercase().contains("forbidden"))
            .collect();
        assert!(
            refused.is_empty(),
            "the chart's RBAC refused the operator something:\n{}",
            refused.join("\n")
        );
    }

    fn context(&self) -> impl Fn() -> String + '_ {
        || {
            format!(
                "{}\n{}",
                self.operator.log_tail(),
                self.console.proc.log_tail()
            )
        }
    }

    /// A namespace with an external Console `corp` for this harness's console, once the
    /// operator reports it Ready with its fingerprint and shared secret.
    async fn namespace_with_console(&self) -> scan_engine_tests::TestNamespace {
        let ns = self.cp.namespace().await;
        self.console.console_cr(&self.cp, ns.name(), "corp").await;
        let fingerprint = self.console.fingerprint().await;
        let api = consoles(&self.client(), ns.name());
        eventually(
            "Console corp Ready with fingerprint and shared secret",
            DEADLINE,
            self.context(),
            || async {
                self.operator.assert_running();
                let c = api.get("corp").await.map_err(|e| e.to_string())?;
                let s = &c.data["status"];
                let ready = condition(&c, "Ready").is_some_and(|r| r["status"] == "True");
                if ready
                    && s["certificateFingerprint"] == fingerprint.as_str()
                    && s["sharedSecret"]["secretName"] == "corp-console-shared-secret"
                    && s["type"] == "External"
                {
                    Ok(())
                } else {
                    Err(s.to_string())
                }
            },
        )
        .await;
        ns
    }

    /// Creates a ScanEngine; standard ones get `advertisedAddress: 127.0.0.1` and a free port.
    async fn engine_cr(&self, ns: &str, name: &str, spec: Value) -> (DynamicObject, u16) {
        let port = free_port();
        let mut spec = spec;
        spec["consoleRef"] = json!({"name": "corp"});
        if spec["communication"] == "ConsoleToEngine" {
            spec["advertisedAddress"] = json!("127.0.0.1");
            spec["port"] = json!(port);
        }
        let obj = create(
            &scan_engines(&self.client(), ns),
            json!({
                "apiVersion": "scanengine.dev/v1alpha1",
                "kind": "ScanEngine",
                "metadata": {"name": name, "namespace": ns},
                "spec": spec,
            }),
        )
        .await;
        (obj, port)
    }

    /// The engine's StatefulSet once the operator wrote it for `communication`.
    /// Waits until the pod `name` exists: the StatefulSet controller created it and admission
    /// (the namespace's restricted Pod Security Standard) let it in.
    async fn admitted_pod(&self, ns: &str, name: &str) {
        let api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(self.client(), ns);
        let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(self.client(), ns);
        eventually(
            format!("pod {ns}/{name} admitted"),
            DEADLINE,
            self.context(),
            || async {
                if api
                    .get_opt(name)
                    .await
                    .map_err(|e| e.to_string())?
                    .is_some()
                {
                    return Ok(());
                }
                let refused: Vec<String> = events
                    .list(&Default::default())
                    .await
                    .map(|l| l.items)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|e| e.reason.as_deref() == Some("FailedCreate"))
                    .filter_map(|e| e.message)
                    .collect();
                Err(format!("not created yet; FailedCreate events: {refused:?}"))
            },
        )
        .await
    }

    async fn statefulset(&self, ns: &str, engine: &str, communication: &str) -> StatefulSet {
        let api: Api<StatefulSet> = Api::namespaced(self.client(), ns);
        let name = format!("{engine}-scan-engine");
        eventually(
            format!("StatefulSet {ns}/{name} for {communication}"),
            DEADLINE,
            self.context(),
            || async {
                self.operator.assert_running();
                let sts = api
                    .get_opt(&name)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("not there")?;
                let env = env_of(&sts);
                if env
                    .iter()
                    .any(|(k, v)| k == "SCAN_ENGINE_COMMUNICATION" && v == communication)
                {
                    Ok(sts)
                } else {
                    Err(format!("env {env:?}"))
                }
            },
        )
        .await
    }

    async fn start_engine(
        &self,
        ns: &str,
        engine: &str,
        communication: &str,
        incarnation: &str,
        extra_env: &[(&str, &str)],
    ) -> PodEngine {
        let sts = self.statefulset(ns, engine, communication).await;
        let data_dir = self.logs.path(&format!("{ns}-{engine}-data"));
        start_engine_from_statefulset(
            &self.client(),
            &self.logs,
            &format!("{ns}-{engine}{incarnation}"),
            &sts,
            &data_dir,
            extra_env,
        )
        .await
    }

    /// Waits until the ScanEngine satisfies `check`; returns it.
    async fn wait_engine(
        &self,
        ns: &str,
        name: &str,
        what: &str,
        check: impl Fn(&DynamicObject) -> Result<(), String>,
    ) -> DynamicObject {
        let api = scan_engines(&self.client(), ns);
        eventually(
            format!("ScanEngine {ns}/{name}: {what}"),
            DEADLINE,
            self.context(),
            || async {
                self.operator.assert_running();
                let se = api.get(name).await.map_err(|e| e.to_string())?;
                check(&se)
                    .map(|()| se.clone())
                    .map_err(|e| format!("{e}; status: {}", se.data["status"]))
            },
        )
        .await
    }

    async fn wait_state(&self, ns: &str, name: &str, state: &str) -> DynamicObject {
        self.wait_engine(
            ns,
            name,
            &format!("state {state}"),
            |se| match engine_state(se).as_deref() {
                Some(s) if s == state => Ok(()),
                other => Err(format!("state {other:?}")),
            },
        )
        .await
    }
}

fn env_of(sts: &StatefulSet) -> Vec<(String, String)> {
    sts.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.first())
        .and_then(|c| c.env.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.name, e.value.unwrap_or_default()))
        .collect()
}

/// Asserts `obj` has exactly one controller owner reference, to `kind`/`name`/`uid`.
fn assert_controlled_by<K: Resource>(obj: &K, kind: &str, name: &str, uid: &str) {
    let refs = obj.meta().owner_references.clone().unwrap_or_default();
    let controllers: Vec<_> = refs.iter().filter(|r| r.controller == Some(true)).collect();
    assert_eq!(
        controllers.len(),
        1,
        "{:?} should have one controller owner reference: {refs:?}",
        obj.meta().name
    );
    let r = controllers[0];
    assert_eq!(
        (
            r.api_version.as_str(),
            r.kind.as_str(),
            r.name.as_str(),
            r.uid.as_str()
        ),
        ("scanengine.dev/v1alpha1", kind, name, uid),
        "owner of {:?}",
        obj.meta().name
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciles_engines_in_both_directions_to_active_and_down() {
    let h = Harness::start(None, &[]).await;
    let client = h.client();
    let ns_handle = h.namespace_with_console().await;
    let ns = ns_handle.name();

    // The Console's shared-secret Secret is the operator's, owned by the Console.
    let console = consoles(&client, ns).get("corp").await.expect("Console");
    let console_uid = console.uid().expect("uid");
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get("corp-console-shared-secret")
        .await
        .expect("the shared-secret Secret");
    assert_controlled_by(&secret, "Console", "corp", &console_uid);

    let (standard, port) = h
        .engine_cr(ns, "standard", json!({"communication": "ConsoleToEngine"}))
        .await;
    // The reverse engine asks for the pod knobs users set: a priority class (which must exist
    // for its pod to be admitted), a pull secret, extra labels, annotations and environment.
    let priority_class = format!("{ns}-scans");
    create(
        &Api::<DynamicObject>::all_with(
            client.clone(),
            &kube::api::ApiResource::erase::<k8s_openapi::api::scheduling::v1::PriorityClass>(&()),
        ),
        json!({
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": priority_class},
            "value": 1000,
        }),
    )
    .await;
    let (reverse, _) = h
        .engine_cr(
            ns,
            "reverse",
            json!({
                "communication": "EngineToConsole",
                "priorityClassName": priority_class,
                "imagePullSecrets": [{"name": "registry-creds"}],
                "podLabels": {"team": "red"},
                "podAnnotations": {"example.com/owner": "secops"},
                "env": [{"name": "TZ", "value": "Europe/Berlin"}],
            }),
        )
        .await;
    // The namespace enforces the restricted Pod Security Standard: the StatefulSet controller's
    // pods for both engines (and the Console's, if managed) are admitted.
    for engine in ["standard", "reverse"] {
        h.admitted_pod(ns, &format!("{engine}-scan-engine-0")).await;
    }
    let pod = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), ns)
        .get("reverse-scan-engine-0")
        .await
        .expect("the reverse engine's pod");
    let pod_spec = pod.spec.clone().unwrap_or_default();
    assert_eq!(
        (pod_spec.priority_class_name.as_deref(), pod_spec.priority),
        (Some(priority_class.as_str()), Some(1000)),
        "the pod runs at the priority class's priority"
    );
    assert_eq!(
        pod_spec
            .image_pull_secrets
            .unwrap_or_default()
            .iter()
            .map(|s| s.name.clone())
            .collect::<Vec<_>>(),
        vec!["registry-creds".to_owned()]
    );
    assert_eq!(pod.labels().get("team").map(String::as_str), Some("red"));
    assert_eq!(
        pod.annotations()
            .get("example.com/owner")
            .map(String::as_str),
        Some("secops")
    );
    assert!(
        pod_spec.containers[0]
            .env
            .iter()
            .flatten()
            .any(|e| e.name == "TZ" && e.value.as_deref() == Some("Europe/Berlin")),
        "the extra environment reaches the container"
    );

    // The objects, each controlled by its ScanEngine.
    let sts_std = h.statefulset(ns, "standard", "console-to-engine").await;
    let sts_rev = h.statefulset(ns, "reverse", "engine-to-console").await;
    let std_uid = standard.uid().expect("uid");
    let rev_uid = reverse.uid().expect("uid");
    assert_controlled_by(&sts_std, "ScanEngine", "standard", &std_uid);
    assert_controlled_by(&sts_rev, "ScanEngine", "reverse", &rev_uid);
    let fingerprint = h.console.fingerprint().await;
    let env_std = env_of(&sts_std);
    assert!(
        env_std.contains(&(
            "SCAN_ENGINE_TRUSTED_CONSOLE_FINGERPRINT".into(),
            fingerprint.clone()
        )),
        "Automatic authorization trusts the console's fingerprint: {env_std:?}"
    );
    let env_rev = env_of(&sts_rev);
    assert!(
        env_rev.contains(&(
            "SCAN_ENGINE_CONSOLE_ADDRESS".into(),
            h.console.engine_listen.to_string()
        )),
        "{env_rev:?}"
    );
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let svc = services
        .get("standard-scan-engine")
        .await
        .expect("the standard engine's Service");
    assert_controlled_by(&svc, "ScanEngine", "standard", &std_uid);
    assert!(
        services
            .get_opt("reverse-scan-engine")
            .await
            .expect("GET Service")
            .is_none(),
        "a reverse engine has no Service"
    );
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), ns);
    let np_std = policies
        .get("standard-scan-engine")
        .await
        .expect("standard NetworkPolicy");
    let np_rev = policies
        .get("reverse-scan-engine")
        .await
        .expect("reverse NetworkPolicy");
    assert_controlled_by(&np_std, "ScanEngine", "standard", &std_uid);
    assert_controlled_by(&np_rev, "ScanEngine", "reverse", &rev_uid);
    assert_eq!(ingress_ports(&np_std), vec![i32::from(port)]);
    assert_eq!(ingress_rules(&np_rev), 0, "reverse engines admit nothing");

    // The engines, as their pods would run them.
    let mut std_engine = h
        .start_engine(ns, "standard", "console-to-engine", "", &[])
        .await;
    let mut rev_engine = h
        .start_engine(ns, "reverse", "engine-to-console", "", &[])
        .await;
    assert_eq!(
        std_engine.env.get("SCAN_ENGINE_NAME").map(String::as_str),
        Some(format!("standard.{ns}").as_str())
    );

    let std_se = h.wait_state(ns, "standard", "Active").await;
    let rev_se = h.wait_state(ns, "reverse", "Active").await;
    assert_eq!(
        std_se.data["status"]["communication"]["direction"],
        "ConsoleToEngine"
    );
    assert_eq!(
        rev_se.data["status"]["communication"]["direction"],
        "EngineToConsole"
    );
    for name in ["standard", "reverse"] {
        h.wait_engine(ns, name, "Ready at its generation", ready_at_generation)
            .await;
    }
    // … so `kubectl wait` succeeds.
    let out =
        h.cp.kubectl()
            .args([
                "wait",
                "-n",
                ns,
                "--for=condition=Ready",
                "scanengine",
                "--all",
            ])
            .args(["--timeout=60s"])
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run kubectl from {} ({e}): build it with `cargo xtask k8s-bins`",
                    h.cp.bin_dir().display()
                )
            });
    assert!(
        out.status.success(),
        "kubectl wait: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The console agrees, under the ids the status reports.
    let registered = h.console.engines().await;
    for (se, direction) in [
        (&std_se, "console-to-engine"),
        (&rev_se, "engine-to-console"),
    ] {
        let id = se.data["status"]["engineId"].clone();
        let at_console = registered
            .iter()
            .find(|e| e["id"] == id)
            .unwrap_or_else(|| panic!("engine id {id} not at the console: {registered:?}"));
        assert_eq!(at_console["status"], "active", "{at_console}");
        assert_eq!(at_console["direction"], direction, "{at_console}");
    }
    let std_at_console = h
        .console
        .engine_named(&format!("standard.{ns}"))
        .await
        .expect("registered");
    assert_eq!(std_at_console["address"], "127.0.0.1");
    assert_eq!(std_at_console["port"], json!(port));
    let console_api = consoles(&client, ns);
    eventually(
        "Console status counts two active engines",
        DEADLINE,
        h.context(),
        || async {
            let c = console_api.get("corp").await.map_err(|e| e.to_string())?;
            let engines = &c.data["status"]["engines"];
            if engines["total"] == 2 && engines["active"] == 2 {
                Ok(())
            } else {
                Err(engines.to_string())
            }
        },
    )
    .await;

    // Killing an engine shows Down (the console sees the session close).
    std_engine.proc.kill();
    let down = h.wait_state(ns, "standard", "Down").await;
    let ready = condition(&down, "Ready").expect("Ready");
    assert_eq!(ready["status"], "False", "{ready}");
    rev_engine.proc.kill();
    h.wait_state(ns, "reverse", "Down").await;
    h.assert_operator_never_forbidden();
}

fn ingress_rules(np: &NetworkPolicy) -> usize {
    np.spec
        .as_ref()
        .and_then(|s| s.ingress.as_ref())
        .map_or(0, Vec::len)
}

fn ingress_ports(np: &NetworkPolicy) -> Vec<i32> {
    np.spec
        .as_ref()
        .and_then(|s| s.ingress.as_ref())
        .into_iter()
        .flatten()
        .flat_map(|r| r.ports.clone().unwrap_or_default())
        .filter_map(|p| match p.port {
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i)) => Some(i),
            _ => None,
        })
        .collect()
}

/// The Console's engine counts follow its engines' states right away, not at the next refresh:
/// with a 10-minute refresh interval, they show the engine Active within seconds of its status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_counts_follow_engine_states_without_waiting_for_the_refresh() {
    let h = Harness::start(None, &["refreshInterval=10m"]).await;
    let ns_handle = h.namespace_with_console().await;
    let ns = ns_handle.name();
    let console_api = consoles(&h.client(), ns);
    let counts = || async {
        let c = console_api.get("corp").await.map_err(|e| e.to_string())?;
        Ok::<_, String>(c.data["status"]["engines"].clone())
    };
    let before = counts().await.expect("Console");
    assert_eq!(before["active"], 0, "no engine yet: {before}");

    h.engine_cr(ns, "reverse", json!({"communication": "EngineToConsole"}))
        .await;
    let _engine = h
        .start_engine(ns, "reverse", "engine-to-console", "", &[])
        .await;
    h.wait_state(ns, "reverse", "Active").await;
    eventually(
        "Console counts the engine Active, long before its 10-minute refresh",
        Duration::from_secs(15),
        h.context(),
        || async {
            let engines = counts().await?;
            if engines["total"] == 1 && engines["active"] == 1 {
                Ok(())
            } else {
                Err(engines.to_string())
            }
        },
    )
    .await;
    h.assert_operator_never_forbidden();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_authorization_shows_pending_authorization_until_enabled() {
    let h = Harness::start(None, &[]).await;
    let ns_handle = h.namespace_with_console().await;
    let ns = ns_handle.name();
    h.engine_cr(
        ns,
        "manual",
        json!({"communication": "ConsoleToEngine", "authorization": "Manual"}),
    )
    .await;
    let mut engine = h
        .start_engine(ns, "manual", "console-to-engine", "", &[])
        .await;
    assert!(
        !engine
            .env
            .contains_key("SCAN_ENGINE_TRUSTED_CONSOLE_FINGERPRINT"),
        "Manual authorization must not pass a trusted fingerprint: {:?}",
        engine.env
    );
    let se = h.wait_state(ns, "manual", "PendingAuthorization").await;
    let ready = condition(&se, "Ready").expect("Ready");
    assert_eq!(ready["status"], "False", "{ready}");

    // As in the seeds: the admin enables the console in consoles.xml and restarts the engine.
    let fingerprint = h.console.fingerprint().await;
    let xml = engine.consoles_xml();
    assert!(
        xml.contains(&fingerprint) && xml.contains("enabled=\"0\""),
        "{xml}"
    );
    engine.proc.stop();
    std::fs::write(
        engine.data_dir.join("consoles.xml"),
        xml.replace("enabled=\"0\"", "enabled=\"1\""),
    )
    .expect("editing consoles.xml");
    let _engine = h
        .start_engine(ns, "manual", "console-to-engine", "-1", &[])
        .await;
    h.wait_state(ns, "manual", "Active").await;
    h.assert_operator_never_forbidden();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mismatched_engine_build_is_incompatible() {
    let h = Harness::start(None, &[]).await;
    let ns_handle = h.namespace_with_console().await;
    let ns = ns_handle.name();
    h.engine_cr(ns, "old", json!({"communication": "ConsoleToEngine"}))
        .await;
    let _engine = h
        .start_engine(
            ns,
            "old",
            "console-to-engine",
            "",
            &[(TEST_ONLY_VERSION_ENV, "9.9.9")],
        )
        .await;
    let se = h.wait_state(ns, "old", "Incompatible").await;
    let ready = condition(&se, "Ready").expect("Ready");
    assert_eq!(ready["status"], "False", "{ready}");
    let at_console = h
        .console
        .engine_named(&format!("old.{ns}"))
        .await
        .expect("registered");
    assert_eq!(at_console["status"], "incompatible-version", "{at_console}");
    assert_eq!(at_console["productVersion"], "9.9.9", "{at_console}");
    h.assert_operator_never_forbidden();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_direction_swaps_network_policies_and_re_pairs() {
    let h = Harness::start(None, &[]).await;
    let client = h.client();
    let ns_handle = h.namespace_with_console().await;
    let ns = ns_handle.name();
    let (_, port) = h
        .engine_cr(ns, "flip", json!({"communication": "ConsoleToEngine"}))
        .await;
    let mut engine = h
        .start_engine(ns, "flip", "console-to-engine", "", &[])
        .await;
    let before = h.wait_state(ns, "flip", "Active").await;
    let old_id = before.data["status"]["engineId"].clone();
    assert!(old_id.is_i64(), "{}", before.data["status"]);
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), ns);
    assert_eq!(
        ingress_ports(&policies.get("flip-scan-engine").await.expect("policy")),
        vec![i32::from(port)]
    );

    // Switch: the spec is the user's; advertisedAddress applies only to ConsoleToEngine.
    scan_engines(&client, ns)
        .patch(
            "flip",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {
                "communication": "EngineToConsole",
                "advertisedAddress": null,
            }})),
        )
        .await
        .expect("switching the direction");

    // The policy swaps to no ingress, the Service goes, the old registration goes.
    eventually(
        "the NetworkPolicy admits nothing",
        DEADLINE,
        h.context(),
        || async {
            let np = policies
                .get("flip-scan-engine")
                .await
                .map_err(|e| e.to_string())?;
            let labels = np.labels().clone();
            if ingress_rules(&np) == 0
                && labels
                    .get("scanengine.dev/communication")
                    .map(String::as_str)
                    == Some("engine-to-console")
            {
                Ok(())
            } else {
                Err(format!("{:?}", np.spec))
            }
        },
    )
    .await;
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    eventually(
        "the engine's Service is deleted",
        DEADLINE,
        h.context(),
        || async {
            match services.get_opt("flip-scan-engine").await {
                Ok(None) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    eventually(
        "the console-to-engine registration is gone at the console",
        DEADLINE,
        h.context(),
        || async {
            let engines = h.console.engines().await;
            if engines.iter().any(|e| e["id"] == old_id) {
                Err(format!("{engines:?}"))
            } else {
                Ok(())
            }
        },
    )
    .await;

    // The pod restarts with the new StatefulSet (same volume) and pairs in reverse.
    engine.proc.stop();
    let _engine = h
        .start_engine(ns, "flip", "engine-to-console", "-reverse", &[])
        .await;
    let after = h
        .wait_engine(ns, "flip", "Active in EngineToConsole", |se| {
            let c = &se.data["status"]["communication"];
            if c["state"] == "Active" && c["direction"] == "EngineToConsole" {
                Ok(())
            } else {
                Err(c.to_string())
            }
        })
        .await;
    let new_id = after.data["status"]["engineId"].clone();
    assert_ne!(new_id, old_id);
    let engines = h.console.engines().await;
    let named: Vec<_> = engines
        .iter()
        .filter(|e| e["name"] == format!("flip.{ns}").as_str())
        .collect();
    assert_eq!(named.len(), 1, "one registration: {engines:?}");
    assert_eq!(named[0]["id"], new_id);
    assert_eq!(named[0]["direction"], "engine-to-console");
    h.wait_engine(
        ns,
        "flip",
        "Ready at its new generation",
        ready_at_generation,
    )
    .await;
    h.assert_operator_never_forbidden();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_engines_and_their_console_removes_them_from_it_and_revokes_the_secret() {
    let h = Harness::start(None, &[]).await;
    let client = h.client();
    let ns_handle = h.namespace_with_console().await;
    let ns = ns_handle.name();
    h.engine_cr(ns, "gone", json!({"communication": "ConsoleToEngine"}))
        .await;
    let _engine = h
        .start_engine(ns, "gone", "console-to-engine", "", &[])
        .await;
    let se = h.wait_state(ns, "gone", "Active").await;
    assert!(
        se.finalizers()
            .contains(&"scanengine.dev/console-cleanup".to_string()),
        "{:?}",
        se.finalizers()
    );
    let id = se.data["status"]["engineId"].clone();
    let (status, _) = h.console.get("/api/3/scan_engines/shared_secret").await;
    assert_eq!(status, 200, "the Console made a shared secret");

    // The Console is deleted first: it waits for the engine that uses it, and says so.
    let console_api = consoles(&client, ns);
    console_api
        .delete("corp", &DeleteParams::default())
        .await
        .expect("deleting the Console");
    eventually(
        "the Console waits for its ScanEngine",
        DEADLINE,
        h.context(),
        || async {
            let c = console_api.get("corp").await.map_err(|e| e.to_string())?;
            match condition(&c, "ConsoleCleanup") {
                Some(cond)
                    if cond["reason"] == "EnginesRemain"
                        && cond["message"].as_str().is_some_and(|m| m.contains("gone")) =>
                {
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let (status, _) = h.console.get("/api/3/scan_engines/shared_secret").await;
    assert_eq!(status, 200, "not revoked while an engine uses the console");

    let api = scan_engines(&client, ns);
    api.delete("gone", &DeleteParams::default())
        .await
        .expect("deleting the ScanEngine");
    eventually(
        "GET /api/3/scan_engines no longer lists the engine",
        DEADLINE,
        h.context(),
        || async {
            let engines = h.console.engines().await;
            if engines.iter().any(|e| e["id"] == id) {
                Err(format!("{engines:?}"))
            } else {
                Ok(())
            }
        },
    )
    .await;
    let (status, _) = h.console.get(&format!("/api/3/scan_engines/{id}")).await;
    assert_eq!(status, 404);
    eventually(
        "the finalizer lets the ScanEngine go",
        DEADLINE,
        h.context(),
        || async {
            match api.get_opt("gone").await {
                Ok(None) => Ok(()),
                Ok(Some(se)) => Err(format!(
                    "still there, finalizers {:?}, status {}",
                    se.finalizers(),
                    se.data["status"]
                )),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await;

    // Then the Console goes, and its shared secret no longer pairs anything.
    eventually(
        "the Console is deleted once its engine is gone",
        DEADLINE,
        h.context(),
        || async {
            match console_api.get_opt("corp").await {
                Ok(None) => Ok(()),
                Ok(Some(c)) => Err(format!("still there: {}", c.data["status"])),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await;
    let (status, _) = h.console.get("/api/3/scan_engines/shared_secret").await;
    assert_eq!(status, 404, "the shared secret is revoked");
    h.assert_operator_never_forbidden();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_secret_is_renewed_before_it_expires() {
    // Secrets live 20s; the operator renews when 8s are left (the chart's secretRenewalMargin).
    let h = Harness::start(Some("20s"), &["secretRenewalMargin=8s"]).await;
    let client = h.client();
    let ns_handle = h.namespace_with_console().await;
    let ns = ns_handle.name();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let read = |s: &Secret| -> (String, Timestamp) {
        let value = s
            .data
            .as_ref()
            .and_then(|d| d.get("shared-secret"))
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
            .unwrap_or_default();
        let expires = s
            .annotations()
            .get("scanengine.dev/expires-at")
            .and_then(|v| v.parse::<Timestamp>().ok())
            .unwrap_or_else(|| panic!("no expires-at annotation: {:?}", s.annotations()));
        (value, expires)
    };
    let (first, first_expiry) = read(
        &secrets
            .get("corp-console-shared-secret")
            .await
            .expect("Secret"),
    );
    assert!(!first.is_empty());
    let seen = std::cell::RefCell::new(vec![first.clone()]);

    let (second, second_expiry) = eventually(
        "the Secret holds a renewed shared secret",
        DEADLINE,
        h.context(),
        || async {
            let s = secrets
                .get("corp-console-shared-secret")
                .await
                .map_err(|e| e.to_string())?;
            let (value, expiry) = read(&s);
            if value != first && expiry > first_expiry {
                Ok((value, expiry))
            } else {
                Err(format!("expires-at {expiry}"))
            }
        },
    )
    .await;
    assert!(
        Timestamp::now() < first_expiry,
        "the secret was renewed only after it had expired ({first_expiry})"
    );
    seen.borrow_mut().push(second.clone());

    // The console hands out the renewed value, and the Console's status follows the expiry.
    eventually(
        "the console and the Console status agree with the Secret",
        DEADLINE,
        h.context(),
        || async {
            let s = secrets
                .get("corp-console-shared-secret")
                .await
                .map_err(|e| e.to_string())?;
            let (value, expiry) = read(&s);
            if !seen.borrow().contains(&value) {
                seen.borrow_mut().push(value.clone());
            }
            let (_, current) = h.console.get("/api/3/scan_engines/shared_secret").await;
            let c = consoles(&client, ns)
                .get("corp")
                .await
                .map_err(|e| e.to_string())?;
            let status_expiry = c.data["status"]["sharedSecret"]["expiresAt"]
                .as_str()
                .and_then(|t| t.parse::<Timestamp>().ok());
            if current == value.as_str()
                && status_expiry.map(|t| t.as_second()) == Some(expiry.as_second())
            {
                Ok(())
            } else {
                Err(format!(
                    "status expiry {status_expiry:?}, Secret expiry {expiry}"
                ))
            }
        },
    )
    .await;
    assert!(second_expiry > first_expiry);

    // The value never appears in any status, event or log of the operator.
    let console = consoles(&client, ns).get("corp").await.expect("Console");
    let console_json = json_of(&console).to_string();
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("listing events");
    assert!(
        events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("SharedSecretRenewed")),
        "a SharedSecretRenewed event: {:?}",
        events.items.iter().map(|e| &e.reason).collect::<Vec<_>>()
    );
    let events_json = serde_json::to_string(&events.items).unwrap_or_default();
    let core_events = Api::<k8s_openapi::api::core::v1::Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("listing core events");
    let core_events_json = serde_json::to_string(&core_events.items).unwrap_or_default();
    let log = h.operator.output();
    for value in seen.borrow().iter() {
        assert!(
            !console_json.contains(value.as_str()),
            "the secret is in the Console"
        );
        assert!(
            !events_json.contains(value.as_str()),
            "the secret is in an event"
        );
        assert!(
            !core_events_json.contains(value.as_str()),
            "the secret is in an event"
        );
        assert!(
            !log.contains(value.as_str()),
            "the secret is in the operator's log"
        );
    }
    h.assert_operator_never_forbidden();
}

// ---------------------------------------------------------------------------------------------
// 3. leader election: two replicas, never two leaders

/// Name → resourceVersion of every ScanEngine, Console and StatefulSet in `ns`, and the names
/// registered at the console (sorted, duplicates kept): what a write by either replica changes.
async fn writes_snapshot(h: &Harness, ns: &str) -> (Vec<(String, String)>, Vec<String>) {
    let client = h.client();
    let mut versions = Vec::new();
    for (kind, objects) in [
        ("ScanEngine", scan_engines(&client, ns)),
        ("Console", consoles(&client, ns)),
    ] {
        for o in objects
            .list(&ListParams::default())
            .await
            .expect("listing")
            .items
        {
            versions.push((
                format!("{kind} {}", o.name_any()),
                o.resource_version().unwrap_or_default(),
            ));
        }
    }
    for s in list::<StatefulSet>(&client, ns).await {
        versions.push((
            format!("StatefulSet {}", s.name_any()),
            s.resource_version().unwrap_or_default(),
        ));
    }
    versions.sort();
    let mut registered: Vec<String> = h
        .console
        .engines()
        .await
        .iter()
        .filter_map(|e| e["name"].as_str().map(str::to_owned))
        .collect();
    registered.sort();
    (versions, registered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_steps_down_unheard_while_the_standby_takes_over() {
    use k8s_openapi::api::coordination::v1::Lease;

    let cp = ControlPlane::start().await;
    cp.install_crds(&workspace_root().join("crds")).await;
    let logs = TestLogs::for_current_test();
    // Two replicas, as the chart runs them; the first with short durations so that the
    // standby takes over soon after it stops.
    let sets = [
        format!("refreshInterval={REFRESH_INTERVAL}"),
        "replicaCount=2".to_owned(),
        "leaderElection.leaseDuration=6s".to_owned(),
        "leaderElection.renewDeadline=4s".to_owned(),
        "leaderElection.retryPeriod=1s".to_owned(),
    ];
    let first = Operator::start(&cp, &logs, &sets).await;
    let lease_name = first
        .flag("--lease-name")
        .expect("the chart sets --lease-name");
    let leases: Api<Lease> = Api::namespaced(cp.client(), first.namespace.name());
    let holder = || async {
        leases
            .get_opt(&lease_name)
            .await
            .map_err(|e| e.to_string())?
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
            .ok_or_else(|| "no holder".to_owned())
    };
    let first_name = first.pod_name.clone();
    eventually(
        "the first replica holds the Lease",
        DEADLINE,
        || first.log_tail(),
        || async {
            let who = holder().await?;
            if who == first_name { Ok(()) } else { Err(who) }
        },
    )
    .await;
    // The second replica's durations are long, so that the test can pause it too, below.
    let second = first
        .replica(
            &logs,
            "operator-standby",
            "scan-engine-operator-1",
            &[
                ("--lease-duration", "300s"),
                ("--lease-renew-deadline", "240s"),
            ],
        )
        .await;
    let console = ExternalConsole::start(&logs, "console", None).await;
    let mut h = Harness {
        operator: first,
        console,
        logs,
        cp,
    };
    let ns_handle = h.namespace_with_console().await;
    let ns = ns_handle.name();
    let registered_once = |name: &str, snapshot: &[String]| {
        let full = format!("{name}.{ns}");
        let n = snapshot.iter().filter(|r| **r == full).count();
        assert_eq!(
            n, 1,
            "{full} registered {n} times at the console: {snapshot:?}"
        );
    };

    // The leader registers an engine; the standby does nothing.
    h.engine_cr(ns, "before", json!({"communication": "ConsoleToEngine"}))
        .await;
    h.wait_engine(ns, "before", "registered", |se| {
        se.data["status"]["engineId"]
            .as_i64()
            .map(|_| ())
            .ok_or_else(|| "no engineId".into())
    })
    .await;
    let standby_log = second.output();
    assert!(
        standby_log.contains("waiting for the leader Lease") && !standby_log.contains("leading"),
        "the standby waits and does not lead:\n{}",
        second.log_tail()
    );

    // The leader stops (SIGSTOP: it neither renews nor exits). The standby takes over and
    // reconciles what changes after the stop.
    h.operator.signal(libc::SIGSTOP);
    let second_name = second.pod_name.clone();
    eventually(
        "the standby holds the Lease",
        DEADLINE,
        || second.log_tail(),
        || async {
            let who = holder().await?;
            if who == second_name { Ok(()) } else { Err(who) }
        },
    )
    .await;
    assert!(
        h.operator.is_running(),
        "the old leader is paused, not gone"
    );
    h.engine_cr(ns, "after", json!({"communication": "ConsoleToEngine"}))
        .await;
    let api = scan_engines(&h.client(), ns);
    eventually(
        "the new leader registers the engine created after the stop",
        DEADLINE,
        || second.log_tail(),
        || async {
            second.assert_running();
            let se = api.get("after").await.map_err(|e| e.to_string())?;
            se.data["status"]["engineId"]
                .as_i64()
                .map(|_| ())
                .ok_or_else(|| format!("status: {}", se.data["status"]))
        },
    )
    .await;

    // Pause the new leader too, so that any write from now on is the old leader's, and change
    // an engine: the old leader's watches hold the change when it runs again. Its renew
    // deadline has long passed: it must step down and exit, writing nothing, neither to the
    // API server nor to the console.
    second.signal(libc::SIGSTOP);
    tokio::time::sleep(Duration::from_secs(1)).await; // the new leader's requests in flight land
    api.patch(
        "before",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"nodeSelector": {"leader-test": "paused"}}})),
    )
    .await
    .expect("patching the ScanEngine");
    let (versions, registered) = writes_snapshot(&h, ns).await;
    for name in ["before", "after"] {
        registered_once(name, &registered);
    }
    h.operator.signal(libc::SIGCONT);
    let status = h.operator.wait_exit(DEADLINE).await;
    let old_log = h.operator.output();
    assert!(
        !status.success() && old_log.contains("not renewed within the renew deadline"),
        "the old leader exits ({status}) saying it stepped down at its renew deadline:\n{}",
        h.operator.log_tail()
    );
    let (versions_after, registered_after) = writes_snapshot(&h, ns).await;
    assert_eq!(
        versions_after, versions,
        "the old leader wrote to the API server after its renew deadline"
    );
    assert_eq!(
        registered_after, registered,
        "the old leader changed the console's engines after its renew deadline"
    );
    assert_eq!(
        holder().await.as_deref(),
        Ok(second_name.as_str()),
        "the Lease stays the new leader's"
    );

    // The new leader carries on: it reconciles the change the old one left alone, and a
    // further engine, registering each once.
    second.signal(libc::SIGCONT);
    let _old = std::mem::replace(&mut h.operator, second);
    let statefulsets: Api<StatefulSet> = Api::namespaced(h.client(), ns);
    eventually(
        "the new leader applies the node selector set while both were paused",
        DEADLINE,
        h.context(),
        || async {
            h.operator.assert_running();
            let sts = statefulsets
                .get("before-scan-engine")
                .await
                .map_err(|e| e.to_string())?;
            let selector = sts
                .spec
                .and_then(|s| s.template.spec)
                .and_then(|p| p.node_selector)
                .unwrap_or_default();
            if selector.get("leader-test").map(String::as_str) == Some("paused") {
                Ok(())
            } else {
                Err(format!("nodeSelector {selector:?}"))
            }
        },
    )
    .await;
    h.engine_cr(ns, "last", json!({"communication": "ConsoleToEngine"}))
        .await;
    h.wait_engine(ns, "last", "registered", |se| {
        se.data["status"]["engineId"]
            .as_i64()
            .map(|_| ())
            .ok_or_else(|| "no engineId".into())
    })
    .await;
    let (_, registered) = writes_snapshot(&h, ns).await;
    for name in ["before", "after", "last"] {
        registered_once(name, &registered);
    }
    h.assert_operator_never_forbidden();
}
