//! The control-plane harness itself: a real etcd, kube-apiserver and kube-controller-manager
//! start, RBAC is enforced, and the controllers run. And what the control plane alone shows of
//! the operator: the status of an engine whose pod cannot be scheduled.
//!
//! Run with `cargo xtask test --tier control-plane`, or, once `cargo xtask k8s-bins` has built
//! the binaries, `cargo test -p scan-engine-tests --test control_plane`.

mod operator_support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use operator_support::{
    DEADLINE, ExternalConsole, Operator, REFRESH_INTERVAL, condition, consoles, create, eventually,
    scan_engines,
};
use scan_engine_tests::{ControlPlane, TestLogs, free_port, workspace_root};
use serde_json::json;

fn config_map(name: &str) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.to_owned());
    cm.data = Some([("key".to_owned(), "value".to_owned())].into());
    cm
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_runs_with_rbac_and_controllers() {
    let cp = ControlPlane::start().await;
    let client = cp.client();

    // The pinned version is the one running.
    let version = client.apiserver_version().await.expect("GET /version");
    assert_eq!(
        version.git_version, "v1.34.4",
        "unexpected API server version: {version:?}"
    );

    // A namespace of our own, and a ConfigMap in it.
    let ns = cp.namespace().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns.name());
    let owner = cms
        .create(&PostParams::default(), &config_map("owner"))
        .await
        .expect("creating the owner ConfigMap");
    assert_eq!(
        cms.get("owner").await.expect("reading it back").data,
        config_map("owner").data
    );

    // The garbage collector (kube-controller-manager) deletes what a deleted owner owned.
    let mut dependent = config_map("dependent");
    dependent.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: "owner".into(),
        uid: owner
            .metadata
            .uid
            .clone()
            .expect("a created object has a uid"),
        ..OwnerReference::default()
    }]);
    cms.create(&PostParams::default(), &dependent)
        .await
        .expect("creating the dependent ConfigMap");
    cms.delete("owner", &DeleteParams::background())
        .await
        .expect("deleting the owner");
    let deadline = Instant::now() + Duration::from_secs(60);
    while cms
        .get_opt("dependent")
        .await
        .expect("reading the dependent")
        .is_some()
    {
        assert!(
            Instant::now() < deadline,
            "the garbage collector did not delete the dependent ConfigMap within 60s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // RBAC is enforced: a ServiceAccount without any binding may not list Secrets, …
    let nobody = cp.service_account_client(ns.name(), "nobody");
    let err = Api::<Secret>::namespaced(nobody.clone(), ns.name())
        .list(&ListParams::default())
        .await
        .expect_err("a ServiceAccount without RBAC must not list Secrets");
    match &err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 403, "expected Forbidden, got {status:?}")
        }
        other => panic!("expected Forbidden, got {other:?}"),
    }
    // … while the admin may.
    Api::<Secret>::namespaced(client.clone(), ns.name())
        .list(&ListParams::default())
        .await
        .expect("the admin lists Secrets");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_kubeconfig_carries_the_impersonation() {
    let cp = ControlPlane::start_with(scan_engine_tests::ControlPlaneOptions {
        controller_manager: false,
        ..Default::default()
    })
    .await;
    let ns = cp.namespace().await;
    let path = cp.service_account_kubeconfig(ns.name(), "operator");
    let text = std::fs::read_to_string(&path).expect("reading the written kubeconfig");
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&text).expect("a valid kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("a client configuration from it");
    let client = kube::Client::try_from(config).expect("a client");
    let err = Api::<ConfigMap>::namespaced(client, ns.name())
        .list(&ListParams::default())
        .await
        .expect_err("the ServiceAccount has no RBAC yet");
    let kube::Error::Api(status) = &err else {
        panic!("expected Forbidden, got {err:?}");
    };
    assert_eq!(status.code, 403);
    assert!(
        status
            .message
            .contains(&format!("system:serviceaccount:{}:operator", ns.name())),
        "the API server should name the impersonated ServiceAccount: {}",
        status.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_rbac_is_exactly_what_a_service_account_gets() {
    let cp = ControlPlane::start_with(scan_engine_tests::ControlPlaneOptions {
        controller_manager: false,
        ..Default::default()
    })
    .await;
    let ns = cp.namespace().await;
    let rbac = format!(
        r#"
apiVersion: v1
kind: ServiceAccount
metadata:
  name: reader
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: configmap-reader
rules:
  - apiGroups: [""]
    resources: ["configmaps"]
    verbs: ["get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: reader
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: configmap-reader
subjects:
  - kind: ServiceAccount
    name: reader
    namespace: {ns}
"#
    );
    let applied = cp.apply_yaml(&cp.client(), &rbac, ns.name()).await;
    assert_eq!(applied.len(), 3);
    assert!(
        applied
            .iter()
            .all(|o| o.metadata.namespace.as_deref() == Some(ns.name()))
    );

    let reader = cp.service_account_client(ns.name(), "reader");
    Api::<ConfigMap>::namespaced(reader.clone(), ns.name())
        .list(&ListParams::default())
        .await
        .expect("the Role lets the reader list ConfigMaps");
    let err = Api::<Secret>::namespaced(reader.clone(), ns.name())
        .list(&ListParams::default())
        .await
        .expect_err("… and nothing else");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403),
        "{err:?}"
    );
    let err = cms_in_other_namespace(reader).await;
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403),
        "{err:?}"
    );
}

async fn cms_in_other_namespace(client: kube::Client) -> kube::Error {
    Api::<ConfigMap>::namespaced(client, "default")
        .list(&ListParams::default())
        .await
        .expect_err("a Role binds in its own namespace only")
}

/// There is no scheduler here: the test writes the pod's PodScheduled condition exactly as the
/// scheduler does for a pod asking for more CPU than any node has. The operator, with exactly
/// the chart's RBAC, must see it through its pod watch and name it in the ScanEngine's status,
/// instead of the console's "offline".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_asking_for_more_cpu_than_any_node_has_shows_pod_unschedulable() {
    let cp = ControlPlane::start().await;
    cp.install_crds(&workspace_root().join("crds")).await;
    let logs = TestLogs::for_current_test();
    let operator =
        Operator::start(&cp, &logs, &[format!("refreshInterval={REFRESH_INTERVAL}")]).await;
    let console = ExternalConsole::start(&logs, "console", None).await;
    let context = || format!("{}\n{}", operator.log_tail(), console.proc.log_tail());
    let ns = cp.namespace().await;
    let ns = ns.name();
    console.console_cr(&cp, ns, "corp").await;
    let console_api = consoles(&cp.client(), ns);
    eventually("Console corp Ready", DEADLINE, context, || async {
        let c = console_api.get("corp").await.map_err(|e| e.to_string())?;
        match condition(&c, "Ready") {
            Some(r) if r["status"] == "True" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    let engines = scan_engines(&cp.client(), ns);
    create(
        &engines,
        json!({
            "apiVersion": "scanengine.dev/v1alpha1",
            "kind": "ScanEngine",
            "metadata": {"name": "greedy", "namespace": ns},
            "spec": {
                "consoleRef": {"name": "corp"},
                "communication": "ConsoleToEngine",
                "advertisedAddress": "127.0.0.1",
                "port": free_port(),
                "resources": {
                    "requests": {"cpu": "64", "memory": "1Gi"},
                    "limits": {"cpu": "64", "memory": "1Gi"}
                }
            }
        }),
    )
    .await;

    // The StatefulSet controller creates the pod; the "scheduler" finds no node for it.
    let pods: Api<Pod> = Api::namespaced(cp.client(), ns);
    let pod = "greedy-scan-engine-0";
    eventually(format!("pod {pod} created"), DEADLINE, context, || async {
        match pods.get_opt(pod).await {
            Ok(Some(_)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let scheduler_says = "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.";
    pods.patch_status(
        pod,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Pending", "conditions": [{
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": scheduler_says,
            "lastTransitionTime": "2026-01-01T00:00:00Z"
        }]}})),
    )
    .await
    .expect("writing the pod's PodScheduled condition");

    let se = eventually(
        "ScanEngine greedy Ready=False PodUnschedulable",
        DEADLINE,
        context,
        || async {
            let se = engines.get("greedy").await.map_err(|e| e.to_string())?;
            let ready = condition(&se, "Ready").ok_or("no Ready condition")?;
            if ready["reason"] == "PodUnschedulable" {
                Ok(se)
            } else {
                Err(format!("Ready is {ready}"))
            }
        },
    )
    .await;
    let ready = condition(&se, "Ready").unwrap_or_default();
    assert_eq!(ready["status"], "False");
    let message = ready["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(pod) && message.contains("1 Insufficient cpu"),
        "{message}"
    );
    assert_eq!(se.data["status"]["message"], message);
    assert!(
        se.data["status"]["communication"]["state"].is_string(),
        "the Status column is never blank: {}",
        se.data["status"]
    );
    // kstatus: still converging (a node may be added), not stalled; at this generation.
    let reconciling = condition(&se, "Reconciling").unwrap_or_default();
    assert_eq!(
        (&reconciling["status"], &reconciling["reason"]),
        (&json!("True"), &json!("PodUnschedulable"))
    );
    let stalled = condition(&se, "Stalled").unwrap_or_default();
    assert_eq!(stalled["status"], "False");
    for c in [&ready, &reconciling, &stalled] {
        assert_eq!(
            c["observedGeneration"].as_i64(),
            se.metadata.generation,
            "{c}"
        );
    }

    // A Warning event of the same reason, about the ScanEngine.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(cp.client(), ns);
    eventually(
        "a PodUnschedulable Warning event",
        DEADLINE,
        context,
        || async {
            let list = events
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let found = list.items.iter().any(|e| {
                e.reason.as_deref() == Some("PodUnschedulable")
                    && e.type_.as_deref() == Some("Warning")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("greedy")
                    && e.note
                        .as_deref()
                        .is_some_and(|n| n.contains("Insufficient cpu"))
            });
            if found {
                Ok(())
            } else {
                Err(format!(
                    "{:?}",
                    list.items.iter().map(|e| &e.reason).collect::<Vec<_>>()
                ))
            }
        },
    )
    .await;

    // With exactly the chart's RBAC, the pod watch was never refused.
    operator.assert_running();
    let refused: Vec<String> = operator
        .output()
        .lines()
        .filter(|l| l.to_ascii_lowercase().contains("forbidden"))
        .map(str::to_owned)
        .collect();
    assert!(refused.is_empty(), "{}", refused.join("\n"));
}
