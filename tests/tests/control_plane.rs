//! The control-plane harness itself: a real etcd, kube-apiserver and kube-controller-manager
//! start, RBAC is enforced, and the controllers run.
//!
//! Run with `cargo xtask test --tier control-plane`, or, once `cargo xtask k8s-bins` has built
//! the binaries, `cargo test -p scan-engine-tests --test control_plane`.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use scan_engine_tests::ControlPlane;

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
