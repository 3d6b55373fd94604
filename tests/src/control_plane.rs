//! An envtest-like Kubernetes control plane: etcd, kube-apiserver and kube-controller-manager
//! as local processes on free loopback ports, with certificates generated for the run.
//!
//! ```no_run
//! # async fn demo() {
//! use scan_engine_tests::ControlPlane;
//! use k8s_openapi::api::core::v1::ConfigMap;
//! use kube::api::{Api, ListParams};
//!
//! let cp = ControlPlane::start().await;           // panics, saying why, when it cannot
//! let ns = cp.namespace().await;                   // unique, deleted on drop
//! let admin = cp.client();                          // system:masters
//! let operator = cp.service_account_client(ns.name(), "operator"); // exactly that SA's RBAC
//! let _ = Api::<ConfigMap>::namespaced(operator, ns.name()).list(&ListParams::default()).await;
//! # let _ = admin;
//! // A process (the operator, kubectl, …) gets a kubeconfig file:
//! let _kubeconfig = cp.service_account_kubeconfig(ns.name(), "operator");
//! # }
//! ```
//!
//! The binaries are taken from `KUBEBUILDER_ASSETS`, or else from the cache that
//! `cargo xtask k8s-bins` fills. When they are missing, starting fails with a message that
//! says how to get them: the control-plane tests never skip silently.
//!
//! RBAC is on; the admin's client certificate has `O=system:masters`. Clients for a
//! ServiceAccount impersonate `system:serviceaccount:<ns>:<name>` (the API server adds the
//! ServiceAccount groups), so a test sees exactly what that account's Roles allow, whether or
//! not the ServiceAccount object exists. There is no scheduler and no kubelet: Pods are created
//! by the controllers but never run.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::Scope;
use kube::{Client, Config};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::logs::{TestLogs, current_test_name, sanitize};
use crate::procs::{Proc, ProcBuilder, free_ports};

/// The binaries the control plane needs.
pub const REQUIRED_BINARIES: [&str; 3] = ["etcd", "kube-apiserver", "kube-controller-manager"];

/// The service CIDR given to the API server (and its first address, the `kubernetes` Service).
pub const SERVICE_CLUSTER_IP_RANGE: &str = "10.96.0.0/16";

const HOW_TO_GET_BINARIES: &str = "The control-plane tests need etcd, kube-apiserver and \
    kube-controller-manager. Build them once with `cargo xtask k8s-bins` (needs Go; they are \
    cached outside the repository), or point KUBEBUILDER_ASSETS at a directory holding them. \
    `cargo xtask test --tier control-plane` does both for you.";

/// What to start.
#[derive(Debug, Clone)]
pub struct ControlPlaneOptions {
    /// Start kube-controller-manager (garbage collector, namespace deletion, ServiceAccounts,
    /// StatefulSet and Deployment controllers, …). Default: true.
    pub controller_manager: bool,
    /// Extra kube-apiserver flags (`--feature-gates=…`, …).
    pub apiserver_args: Vec<String>,
    /// How long to wait for the whole control plane to be ready. Default: 90 s.
    pub ready_timeout: Duration,
}

impl Default for ControlPlaneOptions {
    fn default() -> Self {
        ControlPlaneOptions {
            controller_manager: true,
            apiserver_args: Vec::new(),
            ready_timeout: Duration::from_secs(90),
        }
    }
}

/// A running control plane. Dropping it stops every component (controller manager, API
/// server, etcd, in that order) and removes its files; logs are kept when the test failed.
pub struct ControlPlane {
    server: String,
    bin_dir: PathBuf,
    admin_kubeconfig: Kubeconfig,
    admin_kubeconfig_path: PathBuf,
    admin_config: Config,
    admin: Client,
    ca_pem: String,
    admin_cert: (String, String),
    controller_manager: Option<Proc>,
    apiserver: Proc,
    etcd: Proc,
    logs: TestLogs,
    dir: tempfile::TempDir,
}

impl ControlPlane {
    /// Starts etcd, kube-apiserver and kube-controller-manager and waits until they are ready.
    /// Panics with the reason (and the components' log tails) when that fails.
    pub async fn start() -> ControlPlane {
        Self::start_with(ControlPlaneOptions::default()).await
    }

    /// [`ControlPlane::start`] with options.
    pub async fn start_with(options: ControlPlaneOptions) -> ControlPlane {
        let bin_dir = bin_dir().unwrap_or_else(|err| panic!("{err:#}"));
        let logs = TestLogs::new(&format!("{}-control-plane", current_test_name()));
        let started = Instant::now();
        let cp = start(bin_dir, logs, &options)
            .await
            .unwrap_or_else(|err| panic!("the control plane did not start: {err:#}"));
        eprintln!(
            "control plane ready at {} in {:.1}s (logs: {})",
            cp.server,
            started.elapsed().as_secs_f64(),
            cp.logs.dir().display()
        );
        cp
    }

    /// The API server's URL (`https://127.0.0.1:<port>`).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The CA that signed the API server's certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A client with cluster-admin rights (`O=system:masters`).
    pub fn client(&self) -> Client {
        self.admin.clone()
    }

    /// The admin client's configuration (to derive other clients).
    pub fn admin_config(&self) -> &Config {
        &self.admin_config
    }

    /// The admin kubeconfig, in memory.
    pub fn admin_kubeconfig(&self) -> &Kubeconfig {
        &self.admin_kubeconfig
    }

    /// The admin kubeconfig file (for kubectl, helm, or a process under test).
    pub fn admin_kubeconfig_path(&self) -> &Path {
        &self.admin_kubeconfig_path
    }

    /// The directory holding etcd, kube-apiserver, kube-controller-manager (and, when built,
    /// kubectl and helm).
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The logs of the control plane's components (shared with nothing else).
    pub fn logs(&self) -> &TestLogs {
        &self.logs
    }

    /// The user name of a ServiceAccount: `system:serviceaccount:<namespace>:<name>`.
    pub fn service_account_user(namespace: &str, name: &str) -> String {
        format!("system:serviceaccount:{namespace}:{name}")
    }

    /// A client that acts as the ServiceAccount `namespace/name` (by impersonation), with
    /// exactly the rights RBAC gives that account.
    pub fn service_account_client(&self, namespace: &str, name: &str) -> Client {
        self.impersonating_client(&Self::service_account_user(namespace, name), None)
    }

    /// A client that acts as any user (and, if given, groups), by impersonation.
    pub fn impersonating_client(&self, user: &str, groups: Option<Vec<String>>) -> Client {
        let mut config = self.admin_config.clone();
        config.auth_info.impersonate = Some(user.to_owned());
        config.auth_info.impersonate_groups = groups;
        Client::try_from(config).expect("a client from the admin configuration")
    }

    /// Writes a kubeconfig that acts as the ServiceAccount `namespace/name` (the admin
    /// certificate plus `as: system:serviceaccount:…`) and returns its path. Give it to a
    /// process under test (`KUBECONFIG=…`) to run it with exactly that account's RBAC.
    pub fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        let user = Self::service_account_user(namespace, name);
        let path = self.dir.path().join(format!(
            "kubeconfig-sa-{}-{}",
            sanitize(namespace),
            sanitize(name)
        ));
        let text = kubeconfig_yaml(
            &self.server,
            &self.ca_pem,
            "admin",
            &self.admin_cert,
            Some(&user),
        );
        fs::write(&path, text).expect("writing a ServiceAccount kubeconfig");
        path
    }

    /// A `kubectl` command (from the binaries' directory) using the admin kubeconfig.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(self.bin_dir.join("kubectl"));
        cmd.arg("--kubeconfig").arg(&self.admin_kubeconfig_path);
        cmd
    }

    /// A `helm` command (from the binaries' directory) using the admin kubeconfig.
    pub fn helm(&self) -> Command {
        let mut cmd = Command::new(self.bin_dir.join("helm"));
        cmd.arg("--kubeconfig").arg(&self.admin_kubeconfig_path);
        cmd
    }

    /// Server-side applies every object of a (multi-document) YAML text as `client`'s user,
    /// putting namespaced objects without a namespace into `namespace`. Returns the objects
    /// as the API server stored them. Use it for `examples/`, `helm template` output (the
    /// chart's RBAC), or any fixture.
    pub async fn apply_yaml(
        &self,
        client: &Client,
        yaml: &str,
        namespace: &str,
    ) -> Vec<DynamicObject> {
        let mut applied = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(yaml) {
            let value = <serde_yaml::Value as serde::Deserialize>::deserialize(doc)
                .unwrap_or_else(|err| panic!("parsing YAML: {err}"));
            if value.is_null() {
                continue;
            }
            let mut object: DynamicObject = serde_yaml::from_value(value)
                .unwrap_or_else(|err| panic!("not a Kubernetes object: {err}"));
            let types = object
                .types
                .clone()
                .expect("every object names its apiVersion and kind");
            let gvk = GroupVersionKind::try_from(&types)
                .unwrap_or_else(|err| panic!("bad apiVersion/kind {types:?}: {err}"));
            let (resource, caps) = kube::discovery::pinned_kind(client, &gvk)
                .await
                .unwrap_or_else(|err| panic!("the API server does not serve {gvk:?}: {err}"));
            let name = object
                .metadata
                .name
                .clone()
                .expect("every object has a name");
            let api: Api<DynamicObject> = if caps.scope == Scope::Namespaced {
                let ns = object
                    .metadata
                    .namespace
                    .get_or_insert_with(|| namespace.to_owned())
                    .clone();
                Api::namespaced_with(client.clone(), &ns, &resource)
            } else {
                Api::all_with(client.clone(), &resource)
            };
            object.metadata.managed_fields = None;
            object.metadata.resource_version = None;
            let params = PatchParams::apply("scan-engine-tests").force();
            let stored = api
                .patch(&name, &params, &Patch::Apply(&object))
                .await
                .unwrap_or_else(|err| panic!("applying {} {name}: {err}", gvk.kind));
            applied.push(stored);
        }
        applied
    }

    /// Creates a namespace with a unique name derived from the test's name, waits until its
    /// `default` ServiceAccount exists (when the controller manager runs), and returns a handle
    /// that deletes it on drop (best effort).
    pub async fn namespace(&self) -> TestNamespace {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let test = current_test_name();
        let short = test.rsplit("::").next().unwrap_or(&test);
        let mut base: String = sanitize(short)
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c == '_' { '-' } else { c })
            .take(40)
            .collect();
        base = base.trim_matches('-').to_owned();
        if base.is_empty() {
            base = "test".into();
        }
        let name = format!(
            "{base}-{}-{}",
            std::process::id() % 100_000,
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let api: Api<Namespace> = Api::all(self.client());
        let mut ns = Namespace::default();
        ns.metadata.name = Some(name.clone());
        // Every pod the operator makes must meet the restricted Pod Security Standard; the
        // admission controller refuses any that does not.
        ns.metadata.labels = Some(
            [(
                "pod-security.kubernetes.io/enforce".to_string(),
                "restricted".to_string(),
            )]
            .into(),
        );
        api.create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|err| panic!("creating namespace {name}: {err}"));
        if self.controller_manager.is_some() {
            let sas: Api<ServiceAccount> = Api::namespaced(self.client(), &name);
            let deadline = Instant::now() + Duration::from_secs(30);
            while sas.get_opt("default").await.ok().flatten().is_none() {
                assert!(
                    Instant::now() < deadline,
                    "the default ServiceAccount of namespace {name} was not created within 30s"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        TestNamespace {
            name,
            kubeconfig: self.admin_kubeconfig.clone(),
        }
    }

    /// Creates (or replaces) every CustomResourceDefinition in the YAML files of `dir` (default
    /// use: the workspace's `crds/`) and waits until each is Established.
    pub async fn install_crds(&self, dir: &Path) -> Vec<String> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client());
        let mut names = Vec::new();
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap_or_else(|err| panic!("reading CRDs from {}: {err}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        files.sort();
        for file in files {
            let text = fs::read_to_string(&file)
                .unwrap_or_else(|err| panic!("reading {}: {err}", file.display()));
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let value = <serde_yaml::Value as serde::Deserialize>::deserialize(doc)
                    .unwrap_or_else(|err| panic!("parsing {}: {err}", file.display()));
                if value.is_null() {
                    continue;
                }
                let crd: CustomResourceDefinition = serde_yaml::from_value(value)
                    .unwrap_or_else(|err| panic!("{} is not a CRD: {err}", file.display()));
                let name = crd.metadata.name.clone().expect("a CRD has a name");
                let ssapply = PatchParams::apply("scan-engine-tests").force();
                api.patch(&name, &ssapply, &Patch::Apply(&crd))
                    .await
                    .unwrap_or_else(|err| {
                        panic!("installing CRD {name} from {}: {err}", file.display())
                    });
                names.push(name);
            }
        }
        for name in &names {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let crd = api
                    .get(name)
                    .await
                    .unwrap_or_else(|err| panic!("reading CRD {name}: {err}"));
                let established = crd
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                if established {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "CRD {name} not Established within 30s"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        names
    }

    /// Panics, with the log tails, if a component has exited.
    pub fn assert_running(&mut self) {
        self.etcd.assert_running();
        self.apiserver.assert_running();
        if let Some(kcm) = self.controller_manager.as_mut() {
            kcm.assert_running();
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(kcm) = self.controller_manager.as_mut() {
            kcm.stop();
        }
        self.apiserver.stop();
        self.etcd.stop();
    }
}

/// A namespace created for one test; deleted (best effort, without waiting for it to be gone)
/// when dropped, unless the test is failing.
pub struct TestNamespace {
    name: String,
    kubeconfig: Kubeconfig,
}

impl TestNamespace {
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Display for TestNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        // Drop cannot await, and the test's runtime may be the one running this drop: delete
        // from a thread with its own runtime and its own client, and wait a bounded time.
        let name = self.name.clone();
        let kubeconfig = self.kubeconfig.clone();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime {
                runtime.block_on(async {
                    if let Ok(config) =
                        Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                            .await
                        && let Ok(client) = Client::try_from(config)
                    {
                        let api: Api<Namespace> = Api::all(client);
                        let _ = api.delete(&name, &DeleteParams::background()).await;
                    }
                });
            }
            let _ = done_tx.send(());
        });
        let _ = done_rx.recv_timeout(Duration::from_secs(5));
    }
}

/// The directory holding the control-plane binaries: `KUBEBUILDER_ASSETS` when set, else the
/// cache `cargo xtask k8s-bins` fills. Never builds anything; the error says how to get them.
pub fn bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("KUBEBUILDER_ASSETS").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        let missing: Vec<&str> = REQUIRED_BINARIES
            .into_iter()
            .filter(|b| !dir.join(b).is_file())
            .collect();
        if !missing.is_empty() {
            bail!(
                "KUBEBUILDER_ASSETS={} lacks {}.\n{HOW_TO_GET_BINARIES}",
                dir.display(),
                missing.join(", ")
            );
        }
        return Ok(dir);
    }
    let script = crate::workspace_root().join("xtask/scripts/k8s-bins.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("--check")
        .args(REQUIRED_BINARIES)
        .output()
        .with_context(|| format!("running {} --check", script.display()))?;
    if !out.status.success() {
        bail!(
            "{}\n{HOW_TO_GET_BINARIES}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = stdout.lines().last().unwrap_or_default().trim();
    Ok(PathBuf::from(dir))
}

// ---------------------------------------------------------------------------------------------
// start-up

struct Pki {
    ca_pem: String,
    ca_key_pem: String,
    serving: (String, String),
    admin: (String, String),
    controller_manager: (String, String),
    service_account_key_pem: String,
    service_account_pub_pem: String,
}

fn pki() -> Result<Pki> {
    let ca_key = KeyPair::generate()?;
    let ca_key_pem = ca_key.serialize_pem();
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "scan-engine-tests control-plane CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;

    let leaf = |cn: &str,
                org: Option<&str>,
                sans: Vec<String>,
                usage: ExtendedKeyUsagePurpose|
     -> Result<(String, String)> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name.push(DnType::CommonName, cn);
        if let Some(org) = org {
            params
                .distinguished_name
                .push(DnType::OrganizationName, org);
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &ca)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    let serving = leaf(
        "kube-apiserver",
        None,
        [
            "127.0.0.1",
            "localhost",
            "10.96.0.1",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ]
        .map(String::from)
        .to_vec(),
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let admin = leaf(
        "admin",
        Some("system:masters"),
        Vec::new(),
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    // With --use-service-account-credentials=false every controller acts as the controller
    // manager itself, so it needs more than the system:kube-controller-manager role grants.
    let controller_manager = leaf(
        "system:kube-controller-manager",
        Some("system:masters"),
        Vec::new(),
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    let service_account_key = KeyPair::generate()?;
    Ok(Pki {
        ca_pem: ca.pem(),
        ca_key_pem,
        serving,
        admin,
        controller_manager,
        service_account_key_pem: service_account_key.serialize_pem(),
        service_account_pub_pem: service_account_key.public_key_pem(),
    })
}

/// A kubeconfig with one cluster, one user authenticated by a client certificate, optionally
/// impersonating another user (`as:`).
fn kubeconfig_yaml(
    server: &str,
    ca_pem: &str,
    user: &str,
    (cert, key): &(String, String),
    impersonate: Option<&str>,
) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let impersonate = impersonate
        .map(|who| format!("    as: {}\n", serde_json::Value::String(who.to_owned())))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: scan-engine-tests\n  \
           cluster:\n    \
             server: {server}\n    \
             certificate-authority-data: {ca}\n\
         users:\n\
         - name: {user}\n  \
           user:\n    \
             client-certificate-data: {cert}\n    \
             client-key-data: {key}\n\
         {impersonate}\
         contexts:\n\
         - name: {user}\n  \
           context:\n    \
             cluster: scan-engine-tests\n    \
             user: {user}\n\
         current-context: {user}\n",
        ca = b64(ca_pem),
        cert = b64(cert),
        key = b64(key),
    )
}

fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

async fn start(
    bin_dir: PathBuf,
    logs: TestLogs,
    options: &ControlPlaneOptions,
) -> Result<ControlPlane> {
    let deadline = Instant::now() + options.ready_timeout;
    let dir = tempfile::Builder::new()
        .prefix("scan-engine-cp-")
        .tempdir()?;
    let p = |name: &str| dir.path().join(name);
    let pki = pki().context("generating certificates")?;
    write(&p("ca.crt"), &pki.ca_pem)?;
    write(&p("ca.key"), &pki.ca_key_pem)?;
    write(&p("apiserver.crt"), &pki.serving.0)?;
    write(&p("apiserver.key"), &pki.serving.1)?;
    write(&p("sa.key"), &pki.service_account_key_pem)?;
    write(&p("sa.pub"), &pki.service_account_pub_pem)?;

    let ports = free_ports(3);
    let (etcd_client, etcd_peer, apiserver_port) = (ports[0], ports[1], ports[2]);
    let server = format!("https://127.0.0.1:{apiserver_port}");

    let etcd_client_url = format!("http://127.0.0.1:{etcd_client}");
    let etcd_peer_url = format!("http://127.0.0.1:{etcd_peer}");
    let mut etcd = ProcBuilder::new(bin_dir.join("etcd"))
        .logs(&logs)
        .kill_grace(Duration::from_secs(1))
        .arg("--name=default")
        .arg(format!("--data-dir={}", p("etcd").display()))
        .arg(format!("--listen-client-urls={etcd_client_url}"))
        .arg(format!("--advertise-client-urls={etcd_client_url}"))
        .arg(format!("--listen-peer-urls={etcd_peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={etcd_peer_url}"))
        .arg(format!("--initial-cluster=default={etcd_peer_url}"))
        .arg("--unsafe-no-fsync")
        .arg("--log-level=warn")
        .try_spawn()
        .context("starting etcd")?;
    let etcd_addr = ([127, 0, 0, 1], etcd_client).into();
    etcd.wait_for_port(etcd_addr, remaining(deadline)).await;

    let mut apiserver = ProcBuilder::new(bin_dir.join("kube-apiserver"))
        .logs(&logs)
        .kill_grace(Duration::from_secs(1))
        .arg(format!("--etcd-servers={etcd_client_url}"))
        .arg("--bind-address=127.0.0.1")
        .arg("--advertise-address=127.0.0.1")
        .arg(format!("--secure-port={apiserver_port}"))
        .arg(format!("--cert-dir={}", p("apiserver-certs").display()))
        .arg(format!("--tls-cert-file={}", p("apiserver.crt").display()))
        .arg(format!(
            "--tls-private-key-file={}",
            p("apiserver.key").display()
        ))
        .arg(format!("--client-ca-file={}", p("ca.crt").display()))
        .arg("--authorization-mode=RBAC")
        .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
        .arg(format!(
            "--service-account-key-file={}",
            p("sa.pub").display()
        ))
        .arg(format!(
            "--service-account-signing-key-file={}",
            p("sa.key").display()
        ))
        .arg(format!(
            "--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"
        ))
        .arg("--enable-admission-plugins=NamespaceLifecycle,ServiceAccount")
        .arg("--allow-privileged=true")
        .arg("--endpoint-reconciler-type=none")
        .args(&options.apiserver_args)
        .try_spawn()
        .context("starting kube-apiserver")?;

    let admin_yaml = kubeconfig_yaml(&server, &pki.ca_pem, "admin", &pki.admin, None);
    let admin_kubeconfig_path = p("kubeconfig-admin");
    write(&admin_kubeconfig_path, &admin_yaml)?;
    let admin_kubeconfig =
        Kubeconfig::from_yaml(&admin_yaml).context("parsing the admin kubeconfig")?;
    let admin_config =
        Config::from_custom_kubeconfig(admin_kubeconfig.clone(), &KubeConfigOptions::default())
            .await
            .context("admin client configuration")?;
    let admin = Client::try_from(admin_config.clone()).context("admin client")?;

    // Ready: /readyz answers 200 (it checks etcd, RBAC bootstrap roles, priority levels, …).
    loop {
        apiserver.assert_running();
        let req = http::Request::get("/readyz").body(Vec::new())?;
        match admin.request_text(req).await {
            Ok(body) if body.trim() == "ok" => break,
            result => {
                if Instant::now() >= deadline {
                    bail!(
                        "kube-apiserver not ready after {:?} (last answer: {result:?})\n{}",
                        options.ready_timeout,
                        apiserver.log_tail()
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    let controller_manager = if options.controller_manager {
        let kcm_kubeconfig = p("kubeconfig-controller-manager");
        write(
            &kcm_kubeconfig,
            &kubeconfig_yaml(
                &server,
                &pki.ca_pem,
                "system:kube-controller-manager",
                &pki.controller_manager,
                None,
            ),
        )?;
        let mut kcm = ProcBuilder::new(bin_dir.join("kube-controller-manager"))
            .logs(&logs)
            .kill_grace(Duration::from_secs(1))
            .arg(format!("--kubeconfig={}", kcm_kubeconfig.display()))
            .arg("--controllers=*")
            .arg("--leader-elect=false")
            .arg("--use-service-account-credentials=false")
            .arg("--secure-port=0")
            .arg(format!(
                "--service-account-private-key-file={}",
                p("sa.key").display()
            ))
            .arg(format!("--root-ca-file={}", p("ca.crt").display()))
            .arg(format!(
                "--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"
            ))
            .try_spawn()
            .context("starting kube-controller-manager")?;
        // Ready: the ServiceAccount controller has created `default` in `default`.
        let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
        loop {
            kcm.assert_running();
            if sas.get_opt("default").await.ok().flatten().is_some() {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "kube-controller-manager did not create the default ServiceAccount within {:?}\n{}",
                    options.ready_timeout,
                    kcm.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Some(kcm)
    } else {
        None
    };

    Ok(ControlPlane {
        server,
        bin_dir,
        admin_kubeconfig,
        admin_kubeconfig_path,
        admin_config,
        admin,
        ca_pem: pki.ca_pem,
        admin_cert: pki.admin,
        controller_manager,
        apiserver,
        etcd,
        logs,
        dir,
    })
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}
