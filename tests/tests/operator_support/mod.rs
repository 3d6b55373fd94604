//! Helpers for `tests/tests/operator.rs`: the operator as a process with exactly the chart's
//! RBAC, an external `security-console` on loopback with a CA-signed API certificate, and
//! `scan-engine` processes started from the StatefulSet pod spec the operator wrote.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Display;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kube::{Client, ResourceExt};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use scan_engine_tests::{
    ControlPlane, Proc, ProcBuilder, TestLogs, TestNamespace, free_loopback_addr, workspace_root,
};
use serde_json::{Value, json};

/// Deadline of every eventual assertion.
pub const DEADLINE: Duration = Duration::from_secs(60);
/// The operator's refresh interval (chart value `refreshInterval`).
pub const REFRESH_INTERVAL: &str = "2s";
/// The test-only product-version override of console and engine (docs/contracts.md §1).
pub const TEST_ONLY_VERSION_ENV: &str = "SCAN_ENGINE_TEST_ONLY_PRODUCT_VERSION";

const CONSOLE_PASSWORD: &str = "operator-test-password";
/// The console pings standard engines often (quick Active/Down); reverse engines ping at the
/// interval the operator configures (the engine's default, 30s), so the console's lapses are
/// longer than that: a reverse engine stays Active between its pings.
const CONSOLE_PING: &str = "500ms";
const CONSOLE_UNKNOWN_AFTER: &str = "90s";
const CONSOLE_DOWN_AFTER: &str = "120s";

/// Polls `check` every 250ms until it returns `Ok`, or panics after `deadline` with `what`, the
/// last `Err` it returned and `context()`.
pub async fn eventually<T, F, Fut>(
    what: impl Display,
    deadline: Duration,
    context: impl Fn() -> String,
    mut check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let until = Instant::now() + deadline;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) => {
                if Instant::now() >= until {
                    panic!(
                        "{what}: not within {deadline:?}; last seen: {last}\n{}",
                        context()
                    );
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// custom resources as JSON

pub fn scan_engine_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "scanengine.dev",
        "v1alpha1",
        "ScanEngine",
    ))
}

pub fn console_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "scanengine.dev",
        "v1alpha1",
        "Console",
    ))
}

pub fn scan_engines(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &scan_engine_resource())
}

pub fn consoles(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &console_resource())
}

/// Creates a custom resource from JSON (`apiVersion`, `kind`, `metadata`, `spec`).
pub async fn create(api: &Api<DynamicObject>, object: Value) -> DynamicObject {
    let obj: DynamicObject = serde_json::from_value(object.clone())
        .unwrap_or_else(|e| panic!("not an object: {e}: {object}"));
    api.create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("creating {object}: {e}"))
}

/// The whole object as JSON.
pub fn json_of(obj: &DynamicObject) -> Value {
    serde_json::to_value(obj).unwrap_or(Value::Null)
}

/// `.status.communication.state` of a ScanEngine.
pub fn engine_state(obj: &DynamicObject) -> Option<String> {
    obj.data["status"]["communication"]["state"]
        .as_str()
        .map(str::to_owned)
}

/// The condition `type_` of an object's status.
pub fn condition(obj: &DynamicObject, type_: &str) -> Option<Value> {
    obj.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}

/// What `kubectl wait --for=condition=Ready` plus kstatus want: Ready=True observed at the
/// current generation (both the condition's and the status's observedGeneration).
pub fn ready_at_generation(obj: &DynamicObject) -> Result<(), String> {
    let generation = obj.metadata.generation;
    let ready = condition(obj, "Ready").ok_or("no Ready condition")?;
    if ready["status"] != "True" {
        return Err(format!("Ready is {ready}"));
    }
    if ready["observedGeneration"].as_i64() != generation {
        return Err(format!(
            "Ready.observedGeneration {} != generation {generation:?}",
            ready["observedGeneration"]
        ));
    }
    if obj.data["status"]["observedGeneration"].as_i64() != generation {
        return Err(format!(
            "status.observedGeneration {} != generation {generation:?}",
            obj.data["status"]["observedGeneration"]
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// the console's API certificate

/// A CA and a serving certificate for `127.0.0.1` and `localhost` signed by it.
pub struct ApiPki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn api_pki() -> ApiPki {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "operator-test console API CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA certificate");
    let key = KeyPair::generate().expect("serving key");
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("serving params");
    params
        .distinguished_name
        .push(DnType::CommonName, "security-console");
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &ca).expect("serving certificate");
    ApiPki {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

// ---------------------------------------------------------------------------------------------
// the external console

/// A `security-console` process on loopback, reached by the operator as an external console.
pub struct ExternalConsole {
    pub proc: Proc,
    pub api: SocketAddr,
    pub engine_listen: SocketAddr,
    pub ca_pem: String,
    client: reqwest::Client,
}

impl ExternalConsole {
    /// Starts a console named `name` (log files, data dir) with an optional shared-secret TTL.
    pub async fn start(logs: &TestLogs, name: &str, secret_ttl: Option<&str>) -> ExternalConsole {
        let dir = logs.path(&format!("{name}-files"));
        let data_dir = dir.join("data");
        std::fs::create_dir_all(&data_dir).expect("console data dir");
        let pki = api_pki();
        let cert = dir.join("api.crt");
        let key = dir.join("api.key");
        let password = dir.join("password");
        std::fs::write(&cert, &pki.cert_pem).expect("writing the API certificate");
        std::fs::write(&key, &pki.key_pem).expect("writing the API key");
        std::fs::write(&password, CONSOLE_PASSWORD).expect("writing the API password");
        let api = free_loopback_addr();
        let engine_listen = free_loopback_addr();
        let mut b = ProcBuilder::workspace("security-console")
            .name(name)
            .logs(logs)
            .env_remove(TEST_ONLY_VERSION_ENV)
            .arg("--data-dir")
            .arg(data_dir.as_os_str())
            .arg("--api-listen")
            .arg(api.to_string())
            .arg("--engine-listen")
            .arg(engine_listen.to_string())
            .arg("--api-tls-cert-file")
            .arg(cert.as_os_str())
            .arg("--api-tls-key-file")
            .arg(key.as_os_str())
            .arg("--admin-password-file")
            .arg(password.as_os_str())
            .args(["--ping-interval", CONSOLE_PING])
            .args(["--unknown-after", CONSOLE_UNKNOWN_AFTER])
            .args(["--down-after", CONSOLE_DOWN_AFTER])
            .args(["--log-format", "text"]);
        if let Some(ttl) = secret_ttl {
            b = b.args(["--shared-secret-ttl", ttl]);
        }
        let mut proc = b.spawn();
        proc.wait_for_port(api, DEADLINE).await;
        proc.wait_for_port(engine_listen, DEADLINE).await;
        let client = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).expect("CA PEM"),
            )
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTPS client");
        ExternalConsole {
            proc,
            api,
            engine_listen,
            ca_pem: pki.ca_pem,
            client,
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.api)
    }

    /// `GET path` on the REST API (verifying the API certificate with the CA): status and JSON.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .client
            .get(format!("{}{path}", self.url()))
            .basic_auth("admin", Some(CONSOLE_PASSWORD))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = resp.status().as_u16();
        // The shared secret comes as text/plain: a string.
        let plain = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/plain"));
        let text = resp.text().await.unwrap_or_default();
        if plain {
            return (status, Value::String(text));
        }
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Every engine registration (`GET /api/3/scan_engines`, one page of up to 500).
    pub async fn engines(&self) -> Vec<Value> {
        let (status, body) = self.get("/api/3/scan_engines?size=500").await;
        assert_eq!(status, 200, "GET /api/3/scan_engines: {body}");
        body["resources"].as_array().cloned().unwrap_or_default()
    }

    pub async fn engine_named(&self, name: &str) -> Option<Value> {
        self.engines()
            .await
            .into_iter()
            .find(|e| e["name"].as_str() == Some(name))
    }

    /// The console's engine-communication certificate fingerprint.
    pub async fn fingerprint(&self) -> String {
        let (_, info) = self.get("/api/3/administration/info").await;
        info["engineCommunication"]["certificateFingerprint"]
            .as_str()
            .unwrap_or_else(|| panic!("no fingerprint in {info}"))
            .to_owned()
    }

    /// Creates, in `ns`, the credentials Secret and an external `Console` named `name`
    /// trusting the API certificate's CA, with reverse engines dialing the loopback listener.
    pub async fn console_cr(&self, cp: &ControlPlane, ns: &str, name: &str) -> DynamicObject {
        let creds = format!("{name}-api-credentials");
        let secret: Secret = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": creds, "namespace": ns},
            "stringData": {"username": "admin", "password": CONSOLE_PASSWORD},
        }))
        .expect("a Secret");
        Api::<Secret>::namespaced(cp.client(), ns)
            .create(&PostParams::default(), &secret)
            .await
            .expect("creating the credentials Secret");
        create(
            &consoles(&cp.client(), ns),
            json!({
                "apiVersion": "scanengine.dev/v1alpha1",
                "kind": "Console",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"external": {
                    "url": self.url(),
                    "credentialsSecretRef": {"name": creds},
                    "caBundle": self.ca_pem,
                    "engineListenerAddress": self.engine_listen.to_string(),
                }},
            }),
        )
        .await
    }
}

// ---------------------------------------------------------------------------------------------
// the operator with the chart's RBAC

/// The chart rendered by `helm template` (the call `cargo xtask chart-rbac` makes).
pub fn helm_template(cp: &ControlPlane, release_ns: &str, sets: &[String]) -> String {
    let chart = workspace_root().join("charts/scan-engine-operator");
    let mut cmd = cp.helm();
    cmd.arg("template")
        .arg("scan-engine-operator")
        .arg(&chart)
        .args(["--namespace", release_ns]);
    for set in sets {
        cmd.args(["--set", set]);
    }
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "cannot run helm from {} ({e}): build it with `cargo xtask k8s-bins`",
            cp.bin_dir().display()
        )
    });
    assert!(
        out.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 from helm")
}

/// The documents of a multi-document YAML text, as JSON.
pub fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| {
            <Value as serde::Deserialize>::deserialize(doc)
                .unwrap_or_else(|e| panic!("invalid YAML: {e}"))
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// The same kinds `cargo xtask chart-rbac` keeps.
pub const RBAC_KINDS: [&str; 5] = [
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
];

/// The operator as a process, acting as the chart's ServiceAccount.
pub struct Operator {
    proc: Mutex<Proc>,
    pub namespace: Arc<TestNamespace>,
    pub service_account: String,
    /// The Deployment's arguments and the ServiceAccount's kubeconfig, for more replicas.
    args: Vec<String>,
    kubeconfig: PathBuf,
    /// `POD_NAME`: the replica's identity in the leader Lease.
    pub pod_name: String,
}

impl Operator {
    /// Renders the chart (with `sets`), applies exactly its RBAC documents, and starts
    /// `scan-engine-operator` with the Deployment's arguments (only `--listen` moved to
    /// loopback) and a kubeconfig impersonating the chart's ServiceAccount.
    pub async fn start(cp: &ControlPlane, logs: &TestLogs, sets: &[String]) -> Operator {
        let namespace = cp.namespace().await;
        let ns = namespace.name().to_owned();
        let rendered = documents(&helm_template(cp, &ns, sets));
        let rbac: Vec<&Value> = rendered
            .iter()
            .filter(|d| d["kind"].as_str().is_some_and(|k| RBAC_KINDS.contains(&k)))
            .collect();
        assert!(
            rbac.iter().any(|d| d["kind"] == "ClusterRole"),
            "the chart rendered no ClusterRole"
        );
        let rbac_yaml = rbac
            .iter()
            .map(|d| serde_yaml::to_string(d).expect("YAML"))
            .collect::<Vec<_>>()
            .join("---\n");
        cp.apply_yaml(&cp.client(), &rbac_yaml, &ns).await;
        let service_account = rbac
            .iter()
            .find(|d| d["kind"] == "ServiceAccount")
            .and_then(|d| d["metadata"]["name"].as_str())
            .expect("the chart renders a ServiceAccount")
            .to_owned();

        let deployment = rendered
            .iter()
            .find(|d| d["kind"] == "Deployment")
            .expect("the chart renders a Deployment");
        let container = deployment["spec"]["template"]["spec"]["containers"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == "operator"))
            .expect("the Deployment has an `operator` container");
        let args: Vec<String> = container["args"]
            .as_array()
            .expect("the operator container has args")
            .iter()
            .map(|a| a.as_str().expect("string args").to_owned())
            .collect();
        let kubeconfig = cp.service_account_kubeconfig(&ns, &service_account);
        Self::spawn(
            logs,
            Arc::new(namespace),
            service_account,
            args,
            kubeconfig,
            "operator",
            "scan-engine-operator-0",
        )
        .await
    }

    /// One more replica of this operator: same arguments (but for `overrides`, `(flag, value)`
    /// pairs replacing the Deployment's), ServiceAccount and namespace, another `POD_NAME` (its
    /// identity in the leader Lease) and listen address.
    pub async fn replica(
        &self,
        logs: &TestLogs,
        name: &str,
        pod_name: &str,
        overrides: &[(&str, &str)],
    ) -> Operator {
        let args = self
            .args
            .iter()
            .map(|a| {
                overrides
                    .iter()
                    .find(|(flag, _)| a.starts_with(&format!("{flag}=")))
                    .map_or_else(|| a.clone(), |(flag, value)| format!("{flag}={value}"))
            })
            .collect();
        Self::spawn(
            logs,
            self.namespace.clone(),
            self.service_account.clone(),
            args,
            self.kubeconfig.clone(),
            name,
            pod_name,
        )
        .await
    }

    /// The value of `--flag=value` among the Deployment's arguments.
    pub fn flag(&self, flag: &str) -> Option<String> {
        let prefix = format!("{flag}=");
        self.args
            .iter()
            .find_map(|a| a.strip_prefix(&prefix).map(str::to_owned))
    }

    async fn spawn(
        logs: &TestLogs,
        namespace: Arc<TestNamespace>,
        service_account: String,
        args: Vec<String>,
        kubeconfig: PathBuf,
        name: &str,
        pod_name: &str,
    ) -> Operator {
        // Only `--listen` moves to loopback.
        let listen = free_loopback_addr();
        let with_listen: Vec<String> = args
            .iter()
            .map(|a| {
                if a.starts_with("--listen=") {
                    format!("--listen={listen}")
                } else {
                    a.clone()
                }
            })
            .collect();
        let mut proc = ProcBuilder::workspace("scan-engine-operator")
            .name(name)
            .logs(logs)
            .args(&with_listen)
            .env("KUBECONFIG", kubeconfig.as_os_str())
            .env("POD_NAMESPACE", namespace.name())
            .env("POD_NAME", pod_name)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT")
            .spawn();
        proc.wait_for_port(listen, DEADLINE).await;
        Operator {
            proc: Mutex::new(proc),
            namespace,
            service_account,
            args,
            kubeconfig,
            pod_name: pod_name.to_owned(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Proc> {
        self.proc.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn assert_running(&self) {
        self.lock().assert_running();
    }

    pub fn log_tail(&self) -> String {
        self.lock().log_tail()
    }

    pub fn output(&self) -> String {
        self.lock().output()
    }

    /// Sends `signal` to the process (`libc::SIGSTOP`, `libc::SIGCONT`, …).
    pub fn signal(&self, signal: i32) {
        self.lock().signal(signal);
    }

    /// Whether the process still runs (a stopped one does).
    pub fn is_running(&self) -> bool {
        self.lock().is_running()
    }

    /// Stops it at once with SIGKILL.
    pub fn kill(&self) {
        self.lock().kill();
    }

    /// Waits (up to `timeout`) for it to exit by itself.
    pub async fn wait_exit(&self, timeout: Duration) -> std::process::ExitStatus {
        let until = Instant::now() + timeout;
        loop {
            if let Some(status) = self.lock().try_wait() {
                return status;
            }
            assert!(
                Instant::now() < until,
                "{} still runs after {timeout:?}\n{}",
                self.lock().name(),
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// engines as the pods the operator describes

/// A `scan-engine` process started from a StatefulSet's pod spec.
pub struct PodEngine {
    pub proc: Proc,
    /// The environment it was started with (after the loopback overrides).
    pub env: BTreeMap<String, String>,
    /// Where the `data` volume is.
    pub data_dir: PathBuf,
    pub health: SocketAddr,
}

impl PodEngine {
    pub fn consoles_xml(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("consoles.xml")).unwrap_or_default()
    }
}

/// Starts `scan-engine` with exactly the environment and arguments of the StatefulSet's
/// `scan-engine` container: every path under a volume mount is mapped to a directory of the
/// test (the `data` claim to `data_dir`, which survives restarts like the PVC; Secret volumes
/// to files holding the Secret's current values), and only the listen and health addresses
/// are moved to loopback. `extra_env` is added on top (test-only overrides).
pub async fn start_engine_from_statefulset(
    client: &Client,
    logs: &TestLogs,
    proc_name: &str,
    sts: &StatefulSet,
    data_dir: &Path,
    extra_env: &[(&str, &str)],
) -> PodEngine {
    let ns = sts.namespace().unwrap_or_default();
    let spec = sts.spec.as_ref().expect("a StatefulSet spec");
    let claims: Vec<String> = spec
        .volume_claim_templates
        .iter()
        .flatten()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    let pod = spec.template.spec.as_ref().expect("a pod spec");
    let container = pod
        .containers
        .iter()
        .find(|c| c.name == "scan-engine")
        .expect("a scan-engine container");
    let volumes: BTreeMap<String, _> = pod
        .volumes
        .iter()
        .flatten()
        .map(|v| (v.name.clone(), v.clone()))
        .collect();

    // mount path → directory of the test
    let mut mounts: Vec<(String, PathBuf)> = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let dir = if claims.contains(&mount.name) && mount.name == "data" {
            data_dir.to_path_buf()
        } else if let Some(volume) = volumes.get(&mount.name) {
            let dir = logs.path(&format!("{proc_name}-volume-{}", mount.name));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("volume dir");
            if let Some(source) = &volume.secret {
                let name = source.secret_name.clone().expect("a secretName");
                let secret = Api::<Secret>::namespaced(client.clone(), &ns)
                    .get(&name)
                    .await
                    .unwrap_or_else(|e| panic!("Secret {ns}/{name} of volume {}: {e}", mount.name));
                let data = secret.data.unwrap_or_default();
                let items: Vec<(String, String)> = match &source.items {
                    Some(items) => items
                        .iter()
                        .map(|i| (i.key.clone(), i.path.clone()))
                        .collect(),
                    None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
                };
                for (key, path) in items {
                    let value = data
                        .get(&key)
                        .unwrap_or_else(|| panic!("Secret {name} has no key {key}"));
                    std::fs::write(dir.join(path), &value.0).expect("writing a Secret file");
                }
            } else if volume.empty_dir.is_none() {
                panic!(
                    "volume {} of kind the test cannot map: {volume:?}",
                    mount.name
                );
            }
            dir
        } else {
            panic!("volume mount {} names no volume or claim", mount.name);
        };
        std::fs::create_dir_all(&dir).expect("mount dir");
        mounts.push((mount.mount_path.clone(), dir));
    }
    let map_path = |value: &str| -> String {
        for (mount_path, dir) in &mounts {
            if value == mount_path {
                return dir.display().to_string();
            }
            if let Some(rest) = value.strip_prefix(&format!("{mount_path}/")) {
                return dir.join(rest).display().to_string();
            }
        }
        value.to_owned()
    };

    let health = free_loopback_addr();
    let mut env = BTreeMap::new();
    for var in container.env.iter().flatten() {
        assert!(
            var.value_from.is_none(),
            "env {} comes from valueFrom, which the test cannot reproduce",
            var.name
        );
        let value = var.value.clone().unwrap_or_default();
        let value = match var.name.as_str() {
            "SCAN_ENGINE_LISTEN" => {
                let port = value.rsplit_once(':').map(|(_, p)| p).unwrap_or("40814");
                format!("127.0.0.1:{port}")
            }
            "SCAN_ENGINE_HEALTH_LISTEN" => health.to_string(),
            _ => map_path(&value),
        };
        env.insert(var.name.clone(), value);
    }
    for (k, v) in extra_env {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    let args: Vec<String> = container
        .command
        .iter()
        .flatten()
        .skip(1)
        .chain(container.args.iter().flatten())
        .map(|a| map_path(a))
        .collect();
    let mut b = ProcBuilder::workspace("scan-engine")
        .name(proc_name)
        .logs(logs)
        .env_remove(TEST_ONLY_VERSION_ENV)
        .args(&args);
    for (k, v) in &env {
        b = b.env(k, v);
    }
    let mut proc = b.spawn();
    proc.wait_for_port(health, DEADLINE).await;
    PodEngine {
        proc,
        env,
        data_dir: data_dir.to_path_buf(),
        health,
    }
}

/// Lists objects of kind `K` in `ns` (admin).
pub async fn list<K>(client: &Client, ns: &str) -> Vec<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap_or_else(|e| panic!("listing in {ns}: {e}"))
        .items
}
