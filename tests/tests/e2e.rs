//! End-to-end tier: the chart, a managed console and engines on the real cluster KUBECONFIG
//! names (`cargo xtask demo`, `cargo xtask cluster up`, kind, …), with the project's images
//! already on its nodes.
//!
//! ```text
//! export KUBECONFIG=$(cargo xtask cluster kubeconfig)
//! cargo test -p scan-engine-tests --test e2e -- --test-threads=1
//! ```
//! `cargo xtask test` (and `--tier e2e`) builds the images, starts the local cluster, runs this
//! suite on it and stops the cluster; with KUBECONFIG set it runs against that cluster instead.
//! Run by hand without KUBECONFIG, every test fails and says so; nothing is skipped. The chart is installed (or upgraded) with `helm
//! upgrade --install` under the demo's release name, so the suite is self-sufficient and shares
//! the operator with the demo. Each test works in its own namespace `e2e-…`, deleted first (a
//! leftover of an earlier run) and at the end when the test passed (kept for inspection when it
//! failed).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use scan_engine_tests::workspace_root;
use serde_json::Value;

const RELEASE: &str = "scan-engine-operator";
const RELEASE_NAMESPACE: &str = "scan-engine-operator";
const PROBE_IMAGE: &str = "docker.io/scan-engine-operator/cluster-probe:dev";
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(300);
/// The pod- and container-level settings the restricted Pod Security Standard asks for (flow
/// style, for the tests' own pods).
const RESTRICTED_POD: &str = "securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}";
const RESTRICTED_CONTAINER: &str =
    "securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}";
/// The managed console `main`'s pod.
const CONSOLE_PODS: &str = "app.kubernetes.io/name=security-console,scanengine.dev/console=main";

// ---------------------------------------------------------------------------------------------
// Support

fn kubeconfig() -> PathBuf {
    match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        Some(path) => PathBuf::from(path),
        None => panic!(
            "KUBECONFIG is not set: the e2e suite runs against a real cluster. Start one \
             (`sudo -E cargo xtask demo` or `sudo -E cargo xtask cluster up`), then \
             `export KUBECONFIG=$(cargo xtask cluster kubeconfig)`"
        ),
    }
}

/// kubectl or helm: `$KUBECTL`/`$HELM`, PATH, or the local cluster's `kube_bin`.
fn tool(name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(name.to_uppercase()) {
        return PathBuf::from(path);
    }
    if let Some(found) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    }) {
        return found;
    }
    let state = std::env::var_os("SEO_CLUSTER_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let base = std::env::var_os("XDG_STATE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".local/state")
                });
            base.join("scan-engine-operator/cluster")
        });
    let env = std::fs::read_to_string(state.join("cluster.env")).unwrap_or_default();
    if let Some(dir) = env.lines().find_map(|l| l.strip_prefix("kube_bin=")) {
        let path = Path::new(dir.trim().trim_matches('"')).join(name);
        if path.is_file() {
            return path;
        }
    }
    panic!(
        "{name} not found: put it on PATH, set {}, or start the local cluster",
        name.to_uppercase()
    )
}

fn run(program: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(program);
    cmd.env("KUBECONFIG", kubeconfig())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("writing stdin");
    }
    child.wait_with_output().expect("waiting for a command")
}

fn kubectl(args: &[&str]) -> Output {
    run(&tool("kubectl"), args, None)
}

/// Runs kubectl and panics with its output unless it succeeds.
fn kubectl_ok(args: &[&str]) -> String {
    let out = kubectl(args);
    assert!(
        out.status.success(),
        "kubectl {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn kubectl_apply(ns: &str, manifest: &str) {
    let out = run(
        &tool("kubectl"),
        &["apply", "-n", ns, "-f", "-"],
        Some(manifest),
    );
    assert!(
        out.status.success(),
        "kubectl apply failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Installs (or upgrades) the chart once per test process.
fn operator() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let version = env!("CARGO_PKG_VERSION");
        let tag = format!("image.tag={version}");
        let chart = workspace_root().join("charts/scan-engine-operator");
        let out = run(
            &tool("helm"),
            &[
                "upgrade",
                "--install",
                RELEASE,
                chart.to_str().expect("utf-8 path"),
                "--namespace",
                RELEASE_NAMESPACE,
                "--create-namespace",
                "--wait",
                "--timeout",
                "5m",
                "--set",
                &tag,
                "--set",
                "image.pullPolicy=IfNotPresent",
            ],
            None,
        );
        assert!(
            out.status.success(),
            "helm upgrade --install failed (is KUBECONFIG's cluster up, with the images \
             scan-engine-operator, scan-engine, security-console:{version} on its nodes?): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// A test's namespace: recreated at the start, deleted at the end unless the test panicked.
struct Ns(String);

impl Ns {
    fn new(name: &str) -> Self {
        kubeconfig();
        operator();
        kubectl_ok(&["delete", "namespace", name, "--ignore-not-found", "--wait"]);
        kubectl_ok(&["create", "namespace", name]);
        // The operator's pods (and the tests' own) meet the restricted Pod Security Standard.
        kubectl_ok(&[
            "label",
            "namespace",
            name,
            "pod-security.kubernetes.io/enforce=restricted",
        ]);
        Ns(name.to_owned())
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("e2e: keeping namespace {} for inspection", self.0);
        } else {
            let _ = kubectl(&["delete", "namespace", &self.0, "--wait=false"]);
        }
    }
}

/// A managed console `main` with small requests (the node is shared), and `engines`.
fn console_and_engines(ns: &Ns, engines: &[(&str, &str, &str)]) {
    let mut manifest = String::from(
        "apiVersion: scanengine.dev/v1alpha1
kind: Console
metadata:
  name: main
spec:
  managed:
    storage:
      size: 1Gi
    resources:
      requests: {cpu: 50m, memory: 128Mi}
      limits: {memory: 512Mi}
",
    );
    for (name, communication, authorization) in engines {
        manifest.push_str(&format!(
            "---
apiVersion: scanengine.dev/v1alpha1
kind: ScanEngine
metadata:
  name: {name}
spec:
  consoleRef: {{name: main}}
  communication: {communication}
  authorization: {authorization}
  resources:
    requests: {{cpu: 50m, memory: 64Mi}}
    limits: {{memory: 512Mi}}
"
        ));
    }
    kubectl_apply(&ns.0, &manifest);
}

fn engine(ns: &Ns, name: &str) -> Value {
    let out = kubectl_ok(&["get", "scanengine", name, "-n", &ns.0, "-o", "json"]);
    serde_json::from_str(&out).expect("scanengine JSON")
}

fn state_of(se: &Value) -> String {
    se["status"]["communication"]["state"]
        .as_str()
        .unwrap_or("-")
        .to_owned()
}

fn ready_of(se: &Value) -> String {
    se["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["status"].as_str())
        .unwrap_or("-")
        .to_owned()
}

/// Polls the engine until `pred` holds; panics with the last status after `timeout`.
fn wait_engine(
    ns: &Ns,
    name: &str,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let se = engine(ns, name);
        if pred(&se) {
            return se;
        }
        if Instant::now() >= deadline {
            panic!(
                "{}/{name}: not {what} after {}s; status: {}",
                ns.0,
                timeout.as_secs(),
                serde_json::to_string_pretty(&se["status"]).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_secs(3));
    }
}

fn wait_active(ns: &Ns, name: &str) -> Value {
    wait_engine(ns, name, "Active and Ready", ACTIVE_TIMEOUT, |se| {
        state_of(se) == "Active" && ready_of(se) == "True"
    })
}

fn pod_ip(ns: &Ns, pod: &str) -> String {
    let ip = kubectl_ok(&[
        "get",
        "pod",
        pod,
        "-n",
        &ns.0,
        "-o",
        "jsonpath={.status.podIP}",
    ]);
    assert!(!ip.is_empty(), "pod {pod} has no IP");
    ip
}

/// A probe pod (the cluster's test image) without any label a policy admits.
fn probe_pod(ns: &Ns) {
    kubectl_apply(
        &ns.0,
        &format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: outsider, labels: {{app: outsider}}}}
spec:
  {RESTRICTED_POD}
  containers:
  - {{name: probe, image: {PROBE_IMAGE}, imagePullPolicy: IfNotPresent, args: [sleep], {RESTRICTED_CONTAINER}}}
"
        ),
    );
    kubectl_ok(&[
        "wait",
        "-n",
        &ns.0,
        "--for=condition=Ready",
        "pod/outsider",
        "--timeout=120s",
    ]);
}

/// The probe's TCP connect to `ip:port` (an HTTP GET; the engine port speaks TLS, so even an
/// accepted connection fails the GET, but not with "connection refused" or a timeout).
fn probe_connect(ns: &Ns, ip: &str, port: u16) -> Result<(), String> {
    let url = format!("http://{ip}:{port}/");
    let out = kubectl(&[
        "exec", "-n", &ns.0, "outsider", "--", "/probe", "get", &url, "3s",
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A dial that fails (REJECTed: refused; DROPped: a dial timeout) never connected.
    if text.contains("connection refused")
        || (text.contains("dial tcp") && text.contains("timeout"))
    {
        Err(text)
    } else {
        Ok(())
    }
}

/// Asserts that the connection stays refused for a few attempts.
fn assert_refused(ns: &Ns, ip: &str, port: u16, what: &str) {
    for _ in 0..3 {
        if probe_connect(ns, ip, port).is_ok() {
            panic!("{what}: a pod without the console's labels connected to {ip}:{port}");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// `pod`'s (a probe pod's) HTTP GET of `ip:port`: Ok when it connected and got an answer, Err
/// with the probe's output otherwise.
fn get_from(ns: &Ns, pod: &str, ip: &str, port: u16) -> Result<String, String> {
    let url = format!("http://{ip}:{port}/");
    let out = kubectl(&["exec", "-n", &ns.0, pod, "--", "/probe", "get", &url, "3s"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// Retries `get_from` until `want(result)` holds, for up to `timeout`; the last result otherwise.
fn get_until(
    ns: &Ns,
    pod: &str,
    ip: &str,
    port: u16,
    timeout: Duration,
    want: impl Fn(&Result<String, String>) -> bool,
) -> Result<Result<String, String>, Result<String, String>> {
    let start = Instant::now();
    loop {
        let got = get_from(ns, pod, ip, port);
        if want(&got) {
            return Ok(got);
        }
        if start.elapsed() > timeout {
            return Err(got);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// A refusal by the enforcer: kube-router REJECTs what no policy admits (a TCP reset or ICMP
/// port-unreachable: "connection refused"), unlike a server that is down or slow.
fn refused(got: &Result<String, String>) -> bool {
    matches!(got, Err(text) if text.contains("connection refused"))
}

fn network_policy(ns: &Ns, engine: &str) -> Value {
    let out = kubectl_ok(&[
        "get",
        "networkpolicy",
        &format!("{engine}-scan-engine"),
        "-n",
        &ns.0,
        "-o",
        "json",
    ]);
    serde_json::from_str(&out).expect("networkpolicy JSON")
}

/// An Ingress policy without rules (the API server drops an empty `ingress` list).
fn admits_nothing(np: &Value) -> bool {
    let ingress = &np["spec"]["ingress"];
    ingress.is_null() || ingress.as_array().is_some_and(Vec::is_empty)
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn both_directions_reach_active() {
    let ns = Ns::new("e2e-directions");
    console_and_engines(
        &ns,
        &[
            ("standard", "ConsoleToEngine", "Automatic"),
            ("reverse", "EngineToConsole", "Automatic"),
        ],
    );
    for name in ["standard", "reverse"] {
        let se = wait_active(&ns, name);
        assert!(
            se["status"]["engineId"].as_i64().is_some(),
            "{name}: Active without an engine id: {}",
            se["status"]
        );
    }
    let standard = engine(&ns, "standard");
    let reverse = engine(&ns, "reverse");
    assert_eq!(
        standard["status"]["communication"]["direction"], "ConsoleToEngine",
        "{}",
        standard["status"]
    );
    assert_eq!(
        reverse["status"]["communication"]["direction"], "EngineToConsole",
        "{}",
        reverse["status"]
    );
}

#[test]
fn engines_accept_port_40814_only_from_their_console() {
    let ns = Ns::new("e2e-netpol");
    console_and_engines(
        &ns,
        &[
            ("standard", "ConsoleToEngine", "Automatic"),
            ("reverse", "EngineToConsole", "Automatic"),
        ],
    );
    // Active standard engine: the console's pod connected to 40814 through the policy.
    wait_active(&ns, "standard");
    wait_active(&ns, "reverse");

    let reverse_np = network_policy(&ns, "reverse");
    assert!(
        admits_nothing(&reverse_np),
        "the reverse engine's policy admits nothing: {}",
        reverse_np["spec"]
    );
    let standard_np = network_policy(&ns, "standard");
    assert_eq!(
        standard_np["spec"]["ingress"][0]["ports"][0]["port"], 40814,
        "{}",
        standard_np["spec"]
    );

    probe_pod(&ns);
    let standard_ip = pod_ip(&ns, "standard-scan-engine-0");
    let reverse_ip = pod_ip(&ns, "reverse-scan-engine-0");
    assert_refused(&ns, &reverse_ip, 40814, "reverse engine");
    assert_refused(&ns, &standard_ip, 40814, "standard engine");
}

/// A NetworkPolicy denies the connection it should deny, judged by the cluster's enforcer, with
/// a control on each side: the same client reaches the same server before the policy and after
/// it is deleted, and a pod the policy admits reaches the server while it is in force, so the
/// refusal is the policy's and nothing else's.
#[test]
fn a_network_policy_refuses_a_pod_it_does_not_admit() {
    let ns = Ns::new("e2e-deny");
    kubectl_apply(
        &ns.0,
        &format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: server, labels: {{app: server}}}}
spec:
  {RESTRICTED_POD}
  containers:
  - {{name: probe, image: {PROBE_IMAGE}, imagePullPolicy: IfNotPresent, args: [serve, ':8080'], ports: [{{name: http, containerPort: 8080}}], {RESTRICTED_CONTAINER}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: insider, labels: {{app: insider}}}}
spec:
  {RESTRICTED_POD}
  containers:
  - {{name: probe, image: {PROBE_IMAGE}, imagePullPolicy: IfNotPresent, args: [sleep], {RESTRICTED_CONTAINER}}}
"
        ),
    );
    probe_pod(&ns);
    kubectl_ok(&[
        "wait",
        "-n",
        &ns.0,
        "--for=condition=Ready",
        "pod/server",
        "pod/insider",
        "--timeout=120s",
    ]);
    let server = pod_ip(&ns, "server");
    let minute = Duration::from_secs(60);

    // Control: without a policy the outsider reaches the server.
    if let Err(got) = get_until(&ns, "outsider", &server, 8080, minute, Result::is_ok) {
        panic!("without a policy, outsider -> server {server}:8080 failed: {got:?}");
    }

    kubectl_apply(
        &ns.0,
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-admits-insider}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: insider}}}]
    ports: [{port: http}]
",
    );
    // The policy takes effect: the outsider is refused, and stays refused.
    if let Err(got) = get_until(&ns, "outsider", &server, 8080, minute, refused) {
        panic!("the policy admits only app=insider, yet outsider -> server: {got:?}");
    }
    for _ in 0..3 {
        let got = get_from(&ns, "outsider", &server, 8080);
        assert!(refused(&got), "outsider -> server again: {got:?}");
        std::thread::sleep(Duration::from_secs(1));
    }
    // The pod it admits still gets through, by the named port.
    if let Err(got) = get_until(&ns, "insider", &server, 8080, minute, Result::is_ok) {
        panic!("the policy admits app=insider, yet insider -> server failed: {got:?}");
    }
    // And without the policy the outsider is back in.
    kubectl_ok(&[
        "delete",
        "networkpolicy",
        "server-admits-insider",
        "-n",
        &ns.0,
    ]);
    if let Err(got) = get_until(&ns, "outsider", &server, 8080, minute, Result::is_ok) {
        panic!("with the policy deleted, outsider -> server still failed: {got:?}");
    }
}

#[test]
fn switching_direction_moves_the_policy_and_the_state_follows() {
    let ns = Ns::new("e2e-switch");
    console_and_engines(&ns, &[("flip", "ConsoleToEngine", "Automatic")]);
    wait_active(&ns, "flip");
    assert!(!admits_nothing(&network_policy(&ns, "flip")));

    kubectl_ok(&[
        "patch",
        "scanengine",
        "flip",
        "-n",
        &ns.0,
        "--type=merge",
        "-p",
        r#"{"spec":{"communication":"EngineToConsole"}}"#,
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if admits_nothing(&network_policy(&ns, "flip")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the policy still admits ingress after the switch: {}",
            network_policy(&ns, "flip")["spec"]
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    wait_engine(
        &ns,
        "flip",
        "Active in EngineToConsole",
        ACTIVE_TIMEOUT,
        |se| {
            se["status"]["communication"]["direction"] == "EngineToConsole"
                && state_of(se) == "Active"
                && ready_of(se) == "True"
        },
    );
}

#[test]
fn deleting_an_engine_pod_goes_down_and_back_with_the_same_engine_id() {
    let ns = Ns::new("e2e-restart");
    console_and_engines(&ns, &[("standard", "ConsoleToEngine", "Automatic")]);
    let before = wait_active(&ns, "standard");
    let id = before["status"]["engineId"].clone();
    assert!(id.as_i64().is_some(), "{}", before["status"]);

    kubectl_ok(&[
        "delete",
        "pod",
        "standard-scan-engine-0",
        "-n",
        &ns.0,
        "--wait=false",
    ]);
    wait_engine(&ns, "standard", "Down", Duration::from_secs(240), |se| {
        state_of(se) == "Down"
    });
    let after = wait_active(&ns, "standard");
    assert_eq!(
        after["status"]["engineId"], id,
        "the pairing was not kept: {}",
        after["status"]
    );
}

// ---------------------------------------------------------------------------------------------
// The console's REST API, for the scenarios that look at what the console holds.

/// The managed console `main`'s REST API through `kubectl port-forward` (which enters the console
/// pod's network namespace: the policy admitting only the operator on 3780 does not apply), over
/// HTTPS verified against the console's CA under the Service's DNS name. The admin password is
/// read from the console's Secret and never printed.
struct ConsoleApi {
    forward: std::process::Child,
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
    base: String,
    user: String,
    password: String,
}

fn secret_value(ns: &Ns, secret: &str, key: &str) -> String {
    use base64::Engine as _;
    let key = key.replace('.', "\\.");
    let encoded = kubectl_ok(&[
        "get",
        "secret",
        secret,
        "-n",
        &ns.0,
        "-o",
        &format!("jsonpath={{.data.{key}}}"),
    ]);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .unwrap_or_else(|e| panic!("Secret {secret} key {key} is not base64: {e}"));
    String::from_utf8(bytes).unwrap_or_else(|_| panic!("Secret {secret} key {key} is not UTF-8"))
}

impl ConsoleApi {
    fn connect(ns: &Ns) -> Self {
        use std::io::BufRead as _;
        let ca = secret_value(ns, "main-console-ca", "ca.crt");
        let user = secret_value(ns, "main-console-admin", "username");
        let password = secret_value(ns, "main-console-admin", "password");
        let mut forward = Command::new(tool("kubectl"))
            .args(["port-forward", "-n", &ns.0, "svc/main-console", ":3780"])
            .env("KUBECONFIG", kubeconfig())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("kubectl port-forward");
        let stdout = forward.stdout.take().expect("port-forward stdout");
        let mut lines = std::io::BufReader::new(stdout).lines();
        // "Forwarding from 127.0.0.1:41234 -> 3780"
        let port: u16 = lines
            .next()
            .and_then(Result::ok)
            .and_then(|l| {
                l.strip_prefix("Forwarding from 127.0.0.1:")
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|p| p.parse().ok())
            })
            .expect("kubectl port-forward did not say which local port it forwards");
        // It prints a line per connection: keep its pipe drained.
        std::thread::spawn(move || lines.for_each(drop));
        let host = format!("main-console.{}.svc", ns.0);
        let client = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(ca.as_bytes()).expect("the console's CA (PEM)"),
            )
            .resolve(&host, std::net::SocketAddr::from(([127, 0, 0, 1], port)))
            .timeout(Duration::from_secs(20))
            .build()
            .expect("HTTP client");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        ConsoleApi {
            forward,
            runtime,
            client,
            base: format!("https://{host}:{port}/api/3"),
            user,
            password,
        }
    }

    fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .client
            .request(method.clone(), &url)
            .basic_auth(&self.user, Some(&self.password));
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.runtime.block_on(async {
            let response = request
                .send()
                .await
                .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            assert!(status.is_success(), "{method} {url}: {status}: {text}");
            serde_json::from_str(&text).unwrap_or(Value::Null)
        })
    }

    fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, None)
    }

    fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body))
    }

    /// The console's registrations: (name, id), sorted.
    fn engines(&self) -> Vec<(String, i64)> {
        let list = self.get("/scan_engines?size=500");
        let mut engines: Vec<(String, i64)> = list["resources"]
            .as_array()
            .unwrap_or_else(|| panic!("no resources in {list}"))
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap_or_default().to_owned(),
                    e["id"].as_i64().unwrap_or_default(),
                )
            })
            .collect();
        engines.sort();
        engines
    }
}

impl Drop for ConsoleApi {
    fn drop(&mut self) {
        let _ = self.forward.kill();
        let _ = self.forward.wait();
    }
}

/// How many `reason` events the namespace holds (count aggregated repeats).
fn events_with_reason(ns: &Ns, reason: &str) -> u64 {
    let out = kubectl_ok(&[
        "get",
        "events",
        "-n",
        &ns.0,
        "--field-selector",
        &format!("reason={reason}"),
        "-o",
        "json",
    ]);
    let list: Value = serde_json::from_str(&out).expect("events JSON");
    list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|e| e["count"].as_u64().unwrap_or(1).max(1))
                .sum()
        })
        .unwrap_or(0)
}

fn pod_uid(ns: &str, pod: &str) -> String {
    let out = kubectl(&[
        "get",
        "pod",
        pod,
        "-n",
        ns,
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn wait_pod_ready(ns: &str, selector: &str) {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let out = kubectl(&[
            "wait",
            "-n",
            ns,
            "--for=condition=Ready",
            "pod",
            "-l",
            selector,
            "--timeout=30s",
        ]);
        if out.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pods {selector} in {ns} not Ready: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

// ---------------------------------------------------------------------------------------------
// Restarts, crashes, manual authorization and a scan

#[test]
fn restarting_the_console_gives_active_again_without_re_pairing() {
    let ns = Ns::new("e2e-console-restart");
    console_and_engines(
        &ns,
        &[
            ("standard", "ConsoleToEngine", "Automatic"),
            ("reverse", "EngineToConsole", "Automatic"),
        ],
    );
    let ids_before: Vec<Value> = ["standard", "reverse"]
        .iter()
        .map(|name| wait_active(&ns, name)["status"]["engineId"].clone())
        .collect();
    let registrations_before = ConsoleApi::connect(&ns).engines();
    assert_eq!(registrations_before.len(), 2, "{registrations_before:?}");
    let registered_events = events_with_reason(&ns, "Registered");
    let uid_before = pod_uid(&ns.0, "main-console-0");

    kubectl_ok(&[
        "delete",
        "pod",
        "main-console-0",
        "-n",
        &ns.0,
        "--wait=true",
    ]);
    let deadline = Instant::now() + Duration::from_secs(120);
    while pod_uid(&ns.0, "main-console-0") == uid_before
        || pod_uid(&ns.0, "main-console-0").is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "the console pod was not recreated"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    wait_pod_ready(&ns.0, CONSOLE_PODS);

    for (name, id) in ["standard", "reverse"].iter().zip(&ids_before) {
        let after = wait_active(&ns, name);
        assert_eq!(
            &after["status"]["engineId"], id,
            "{name} was paired again: {}",
            after["status"]
        );
    }
    assert_eq!(
        ConsoleApi::connect(&ns).engines(),
        registrations_before,
        "the console's registrations changed across its restart"
    );
    assert_eq!(
        events_with_reason(&ns, "Registered"),
        registered_events,
        "the operator registered an engine again after the console restarted"
    );
}

#[test]
fn killing_the_operator_mid_reconcile_leaves_no_duplicate_registrations() {
    const SELECTOR: &str = "app.kubernetes.io/name=scan-engine-operator";
    let ns = Ns::new("e2e-operator-kill");
    console_and_engines(&ns, &[]);
    wait_pod_ready(&ns.0, CONSOLE_PODS);
    let engines: Vec<(String, &str)> = (0..4)
        .map(|i| (format!("standard-{i}"), "ConsoleToEngine"))
        .chain((0..2).map(|i| (format!("reverse-{i}"), "EngineToConsole")))
        .collect();
    let list: Vec<(&str, &str, &str)> = engines
        .iter()
        .map(|(n, c)| (n.as_str(), *c, "Automatic"))
        .collect();
    console_and_engines(&ns, &list);

    // Kill the operator as soon as the first engine is registered (the others are mid-way),
    // then once more while its successor catches up.
    let deadline = Instant::now() + ACTIVE_TIMEOUT;
    while !engines
        .iter()
        .any(|(n, _)| engine(&ns, n)["status"]["engineId"].as_i64().is_some())
    {
        assert!(Instant::now() < deadline, "no engine was registered");
        std::thread::sleep(Duration::from_millis(500));
    }
    for round in 0..2 {
        kubectl_ok(&[
            "delete",
            "pod",
            "-n",
            RELEASE_NAMESPACE,
            "-l",
            SELECTOR,
            "--grace-period=0",
            "--force",
            "--wait=false",
        ]);
        if round == 0 {
            std::thread::sleep(Duration::from_secs(3));
            wait_pod_ready(RELEASE_NAMESPACE, SELECTOR);
            std::thread::sleep(Duration::from_secs(2));
        }
    }
    wait_pod_ready(RELEASE_NAMESPACE, SELECTOR);

    let mut ids = Vec::new();
    for (name, _) in &engines {
        let se = wait_active(&ns, name);
        ids.push((
            format!("{name}.{}", ns.0),
            se["status"]["engineId"].as_i64().expect("engine id"),
        ));
    }
    ids.sort();
    assert_eq!(
        ConsoleApi::connect(&ns).engines(),
        ids,
        "the console holds exactly one registration per ScanEngine, under the id in its status"
    );
}

#[test]
fn manual_authorization_stays_pending_until_consoles_xml_enables_the_console() {
    let ns = Ns::new("e2e-manual-enable");
    console_and_engines(&ns, &[("manual", "ConsoleToEngine", "Manual")]);
    wait_engine(
        &ns,
        "manual",
        "PendingAuthorization",
        ACTIVE_TIMEOUT,
        |se| state_of(se) == "PendingAuthorization",
    );
    // And it stays there while nobody enables the console in the engine's consoles.xml.
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        let se = engine(&ns, "manual");
        assert_eq!(state_of(&se), "PendingAuthorization", "{}", se["status"]);
        assert_ne!(ready_of(&se), "True", "{}", se["status"]);
        std::thread::sleep(Duration::from_secs(4));
    }
    let console: Value = serde_json::from_str(&kubectl_ok(&[
        "get", "console", "main", "-n", &ns.0, "-o", "json",
    ]))
    .expect("console JSON");
    let fingerprint = console["status"]["certificateFingerprint"]
        .as_str()
        .expect("the console's fingerprint")
        .to_owned();

    // As the seeds describe: the administrator enables the console in the engine's
    // consoles.xml and restarts the engine.
    let list = kubectl_ok(&[
        "exec",
        "-n",
        &ns.0,
        "manual-scan-engine-0",
        "--",
        "/usr/local/bin/scan-engine",
        "consoles",
        "list",
    ]);
    assert!(
        list.lines()
            .any(|l| l.contains(&fingerprint) && l.contains(" no ")),
        "consoles.xml holds the console, not enabled: {list}"
    );
    kubectl_ok(&[
        "exec",
        "-n",
        &ns.0,
        "manual-scan-engine-0",
        "--",
        "/usr/local/bin/scan-engine",
        "consoles",
        "enable",
        &fingerprint,
    ]);
    kubectl_ok(&["delete", "pod", "manual-scan-engine-0", "-n", &ns.0]);
    wait_active(&ns, "manual");
}

#[test]
fn a_discovery_scan_of_an_in_cluster_target_reports_its_open_ports() {
    let ns = Ns::new("e2e-scan");
    console_and_engines(&ns, &[("scanner", "ConsoleToEngine", "Automatic")]);
    kubectl_apply(
        &ns.0,
        &format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: target, labels: {{app: target}}}}
spec:
  {RESTRICTED_POD}
  containers:
  - {{name: web, image: {PROBE_IMAGE}, imagePullPolicy: IfNotPresent, args: [serve, ':8080'], {RESTRICTED_CONTAINER}}}
  - {{name: admin, image: {PROBE_IMAGE}, imagePullPolicy: IfNotPresent, args: [serve, ':9090'], {RESTRICTED_CONTAINER}}}
"
        ),
    );
    kubectl_ok(&[
        "wait",
        "-n",
        &ns.0,
        "--for=condition=Ready",
        "pod/target",
        "--timeout=120s",
    ]);
    let target = pod_ip(&ns, "target");
    let engine_id = wait_active(&ns, "scanner")["status"]["engineId"].clone();

    let api = ConsoleApi::connect(&ns);
    let ports = [22, 80, 8080, 8081, 9090, 9091, 40814];
    let site = api.post(
        "/sites",
        serde_json::json!({
            "name": "in-cluster",
            "engineId": engine_id,
            "scan": {"assets": {"includedTargets": {"addresses": [target]}}},
            "ports": ports,
            "timeoutMs": 2000,
        }),
    );
    let site_id = site["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("site: {site}"));
    let scan = api.post(&format!("/sites/{site_id}/scans"), serde_json::json!({}));
    let scan_id = scan["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("scan: {scan}"));
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = loop {
        let s = api.get(&format!("/scans/{scan_id}"));
        match s["status"].as_str() {
            Some("finished") => break s,
            Some("error") => panic!("the scan failed: {s}"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "the scan did not finish: {s}");
        std::thread::sleep(Duration::from_secs(1));
    };
    assert_eq!(done["progress"]["total"], ports.len(), "{done}");

    let assets = api.get("/assets");
    let asset = assets["resources"]
        .as_array()
        .and_then(|r| r.iter().find(|a| a["ip"] == target.as_str()))
        .unwrap_or_else(|| panic!("no asset {target} in {assets}"))
        .clone();
    let mut open: Vec<u64> = asset["services"]
        .as_array()
        .unwrap_or_else(|| panic!("no services in {asset}"))
        .iter()
        .filter_map(|s| s["port"].as_u64())
        .collect();
    open.sort_unstable();
    assert_eq!(open, vec![8080, 9090], "{asset}");
}

// ---------------------------------------------------------------------------------------------
// The examples, as users apply them

/// Waits until the namespaces of earlier tests are gone: the examples request their real CPU
/// and memory, which a single node only has once the earlier tests' pods are gone.
fn wait_for_earlier_namespaces_to_go(mine: &Ns) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let names = kubectl_ok(&["get", "namespaces", "-o", "name"]);
        let others: Vec<&str> = names
            .lines()
            .filter(|n| n.starts_with("namespace/e2e-") && *n != format!("namespace/{}", mine.0))
            .collect();
        if others.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "namespaces of earlier tests still terminating: {others:?}"
        );
        std::thread::sleep(Duration::from_secs(3));
    }
}

#[test]
fn the_managed_console_example_reaches_active_in_both_directions() {
    let ns = Ns::new("e2e-example");
    wait_for_earlier_namespaces_to_go(&ns);
    let example = std::fs::read_to_string(workspace_root().join("examples/managed-console.yaml"))
        .expect("examples/managed-console.yaml");
    let manifest = example
        .replace("namespace: scanning", &format!("namespace: {}", ns.0))
        .replace("name: scanning", &format!("name: {}", ns.0));
    kubectl_apply(&ns.0, &manifest);
    let labels = kubectl_ok(&[
        "get",
        "namespace",
        &ns.0,
        "-o",
        "jsonpath={.metadata.labels}",
    ]);
    assert!(
        labels.contains("pod-security.kubernetes.io/enforce") && labels.contains("restricted"),
        "the example's namespace enforces the restricted Pod Security Standard: {labels}"
    );
    for (name, direction) in [
        ("standard", "ConsoleToEngine"),
        ("reverse", "EngineToConsole"),
    ] {
        let se = wait_active(&ns, name);
        assert_eq!(
            se["status"]["communication"]["direction"], direction,
            "{}",
            se["status"]
        );
    }
}
