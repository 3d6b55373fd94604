//! End-to-end tier: the chart, a managed console and engines on the real cluster KUBECONFIG
//! names (`cargo xtask demo`, `cargo xtask cluster up`, kind, …), with the project's images
//! already on its nodes.
//!
//! ```text
//! export KUBECONFIG=$(cargo xtask cluster kubeconfig)
//! cargo test -p scan-engine-tests --test e2e -- --test-threads=1
//! ```
//! (`cargo xtask test --tier e2e`; never part of `--tier all`.) Without KUBECONFIG every test
//! fails and says so; nothing is skipped. The chart is installed (or upgraded) with `helm
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
  containers:
  - {{name: probe, image: {PROBE_IMAGE}, imagePullPolicy: IfNotPresent, args: [sleep]}}
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

#[test]
fn manual_authorization_stays_pending() {
    let ns = Ns::new("e2e-manual");
    console_and_engines(&ns, &[("manual", "ConsoleToEngine", "Manual")]);
    wait_engine(
        &ns,
        "manual",
        "PendingAuthorization",
        ACTIVE_TIMEOUT,
        |se| state_of(se) == "PendingAuthorization",
    );
    // And it stays there: nobody enabled the console in the engine's consoles.xml.
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        let se = engine(&ns, "manual");
        assert_eq!(state_of(&se), "PendingAuthorization", "{}", se["status"]);
        assert_ne!(ready_of(&se), "True", "{}", se["status"]);
        std::thread::sleep(Duration::from_secs(4));
    }
}
