//! `operator`: N ScanEngines (EngineToConsole, against an external Console CR that points at a
//! running release `security-console`, so no engine process is needed) reconciled by the
//! release operator on a real etcd + kube-apiserver.
//!
//! 1. operator: the bench creates the N ScanEngines and waits until every one has its
//!    NetworkPolicy and StatefulSet and a status for its generation;
//! 2. idle: the operator's writes over two refresh periods, from the API server's
//!    `apiserver_request_total` (write verbs) and from resourceVersion changes of the objects
//!    it owns; its peak RSS (VmHWM);
//! 3. baseline: the operator is stopped and the same client, with the same concurrency, creates
//!    in a fresh namespace what the operator produced: each ScanEngine (with its finalizer), its
//!    NetworkPolicy and StatefulSet (copies of the operator's), and its status.
//!
//! The controller manager is not started: it would create pods for the StatefulSets and make
//! writes of its own during the idle window. The operator runs with leader election off (its
//! Lease renewals would be writes) and as a ServiceAccount bound to `cluster-admin`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use scan_engine_tests::{ControlPlane, ControlPlaneOptions, ProcBuilder, TestLogs, free_port};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::report::{Row, machine, mib, print_table, proc_status_kib, secs};

const PASSWORD: &str = "bench-operator-password";
const TIMEOUT: Duration = Duration::from_secs(60);
const WRITE_VERBS: [&str; 5] = ["POST", "PUT", "PATCH", "DELETE", "APPLY"];

#[derive(Debug, clap::Args)]
pub struct Args {
    /// ScanEngines to create.
    #[arg(long, default_value_t = 1000)]
    engines: usize,
    /// Creations in flight at once (operator phase and baseline alike).
    #[arg(long, default_value_t = 16)]
    create_concurrency: usize,
    /// The operator's --refresh-interval, in seconds; the idle window is two of them.
    #[arg(long, default_value_t = 30)]
    refresh_interval: u64,
    /// Give up waiting for the operator after this many seconds.
    #[arg(long, default_value_t = 1800)]
    deadline: u64,
}

fn scan_engines(client: &Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("scanengine.dev", "v1alpha1", "ScanEngine");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "scanengines");
    Api::namespaced_with(client.clone(), ns, &ar)
}

fn consoles(client: &Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("scanengine.dev", "v1alpha1", "Console");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "consoles");
    Api::namespaced_with(client.clone(), ns, &ar)
}

fn engine_name(i: usize) -> String {
    format!("se-{i:05}")
}

fn child_name(i: usize) -> String {
    format!("{}-scan-engine", engine_name(i))
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.engines == 0 || args.create_concurrency == 0 || args.refresh_interval == 0 {
        bail!("--engines, --create-concurrency and --refresh-interval must be positive");
    }
    let operator_bin = crate::release_bin("scan-engine-operator")?;
    let console_bin = crate::release_bin("security-console")?;
    let root = scan_engine_tests::workspace_root();

    eprintln!("bench operator: starting etcd and kube-apiserver");
    let cp = ControlPlane::start_with(ControlPlaneOptions {
        controller_manager: false,
        ..ControlPlaneOptions::default()
    })
    .await;
    cp.install_crds(&root.join("crds")).await;
    let client = cp.client();
    let logs = TestLogs::new("bench-operator");

    // The console the Console CR points at.
    let data_dir = logs.path("console-data");
    std::fs::create_dir_all(&data_dir)?;
    let password_file = logs.path("console-password");
    std::fs::write(&password_file, PASSWORD)?;
    let api: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let engine_listen: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut console = ProcBuilder::new(&console_bin)
        .name("console")
        .logs(&logs)
        .arg("--data-dir")
        .arg(data_dir.as_os_str())
        .arg("--api-listen")
        .arg(api.to_string())
        .arg("--engine-listen")
        .arg(engine_listen.to_string())
        .arg("--admin-password-file")
        .arg(password_file.as_os_str())
        .env("RUST_LOG", "warn")
        .try_spawn()
        .context("starting security-console")?;
    console.wait_for_port(api, TIMEOUT).await;

    // The operator: its own namespace, a ServiceAccount bound to cluster-admin.
    let op_ns = cp.namespace().await;
    let sa = "scan-engine-operator";
    cp.apply_yaml(
        &client,
        &format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  \
             name: bench-operator\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: \
             ClusterRole\n  name: cluster-admin\nsubjects:\n- kind: ServiceAccount\n  name: {sa}\n  \
             namespace: {}\n",
            op_ns.name()
        ),
        op_ns.name(),
    )
    .await;
    let listen: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let kubeconfig = cp.service_account_kubeconfig(op_ns.name(), sa);
    let mut operator = ProcBuilder::new(&operator_bin)
        .name("operator")
        .logs(&logs)
        .arg(format!("--listen={listen}"))
        .arg("--leader-election=false")
        .arg(format!("--refresh-interval={}s", args.refresh_interval))
        .args(["--log-format", "json", "--log-filter", "warn"])
        .env("KUBECONFIG", kubeconfig.as_os_str())
        .env("POD_NAMESPACE", op_ns.name())
        .env("POD_NAME", "scan-engine-operator-0")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .try_spawn()
        .context("starting scan-engine-operator")?;
    let op_pid = operator.pid().context("operator pid")?;
    operator.wait_for_port(listen, TIMEOUT).await;

    // The Console CR, ready before the clock starts.
    let ns = cp.namespace().await;
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "console-api", "namespace": ns.name()},
        "stringData": {"username": "admin", "password": PASSWORD},
    }))?;
    Api::<Secret>::namespaced(client.clone(), ns.name())
        .create(&PostParams::default(), &secret)
        .await?;
    let console_cr: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "scanengine.dev/v1alpha1", "kind": "Console",
        "metadata": {"name": "console", "namespace": ns.name()},
        "spec": {"external": {
            "url": format!("https://{api}"),
            "credentialsSecretRef": {"name": "console-api"},
            "insecureSkipTlsVerify": true,
            "engineListenerAddress": engine_listen.to_string(),
        }},
    }))?;
    let cons = consoles(&client, ns.name());
    cons.create(&PostParams::default(), &console_cr).await?;
    let waited = Instant::now();
    loop {
        let c = cons.get("console").await?;
        let ready = c.data["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        });
        if ready {
            break;
        }
        if waited.elapsed() > TIMEOUT {
            bail!(
                "the Console CR is not Ready after {TIMEOUT:?}: {}\noperator log: {}",
                c.data["status"],
                operator.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rss_before = proc_status_kib(op_pid, "VmRSS")?;

    // 1. The operator.
    eprintln!(
        "bench operator: creating {} ScanEngines ({} at a time)",
        args.engines, args.create_concurrency
    );
    let engines = scan_engines(&client, ns.name());
    let gate = Arc::new(Semaphore::new(args.create_concurrency));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.engines {
        let gate = gate.clone();
        let engines = engines.clone();
        let ns = ns.name().to_owned();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let obj: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "scanengine.dev/v1alpha1", "kind": "ScanEngine",
                "metadata": {"name": engine_name(i), "namespace": ns},
                "spec": {"consoleRef": {"name": "console"}, "communication": "EngineToConsole"},
            }))?;
            engines.create(&PostParams::default(), &obj).await?;
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let created = started.elapsed();
    let deadline = Duration::from_secs(args.deadline);
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), ns.name());
    let np_api: Api<NetworkPolicy> = Api::namespaced(client.clone(), ns.name());
    let operator_time = loop {
        let (done, detail) = reconciled(&engines, &sts_api, &np_api, args.engines).await?;
        if done == args.engines {
            break started.elapsed();
        }
        if started.elapsed() > deadline {
            bail!(
                "after {deadline:?} only {done} of {} ScanEngines are reconciled ({detail})\n\
                 operator log: {}",
                args.engines,
                operator.log_tail()
            );
        }
        operator.assert_running();
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!(
        "bench operator: {} ScanEngines reconciled in {:.2} s (created in {:.2} s)",
        args.engines,
        operator_time.as_secs_f64(),
        created.as_secs_f64()
    );

    // 2. Idle: nothing changes; the operator should write nothing.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = Duration::from_secs(2 * args.refresh_interval);
    eprintln!("bench operator: idle for {idle:?} (two refresh intervals)");
    let np0_before = serde_json::to_value(np_api.get(&child_name(0)).await?)?;
    let sts0_before = serde_json::to_value(sts_api.get(&child_name(0)).await?)?;
    let versions_before = resource_versions(&client, ns.name()).await?;
    let metrics_before = write_counts(&client).await?;
    let console_before = console_requests(listen).await?;
    tokio::time::sleep(idle).await;
    let metrics_after = write_counts(&client).await?;
    let console_after = console_requests(listen).await?;
    let console_calls: BTreeMap<String, f64> = console_after
        .iter()
        .map(|(k, v)| (k.clone(), v - console_before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d > 0.0)
        .collect();
    let per_interval = |calls: f64| calls / 2.0;
    let console_total: f64 = console_calls.values().sum();
    let console_lists = console_calls
        .get("GET /api/3/scan_engines")
        .copied()
        .unwrap_or(0.0);
    let versions_after = resource_versions(&client, ns.name()).await?;
    // What changed in engine 0's children, for whoever chases idle writes.
    for (kind, before, after) in [
        (
            "NetworkPolicy",
            np0_before,
            serde_json::to_value(np_api.get(&child_name(0)).await?)?,
        ),
        (
            "StatefulSet",
            sts0_before,
            serde_json::to_value(sts_api.get(&child_name(0)).await?)?,
        ),
    ] {
        let mut changes = Vec::new();
        diff("", &before, &after, &mut changes);
        changes.retain(|c| !c.starts_with(".metadata.resourceVersion"));
        if !changes.is_empty() {
            eprintln!(
                "bench operator: {kind} {} changed while idle: {}",
                child_name(0),
                changes.join("; ")
            );
        }
    }
    let hwm = proc_status_kib(op_pid, "VmHWM")?;
    let rss_after = proc_status_kib(op_pid, "VmRSS")?;
    operator.assert_running();
    let mut changed_kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for k in versions_after
        .iter()
        .filter(|(k, v)| versions_before.get(*k) != Some(*v))
        .map(|(k, _)| k)
        .chain(
            versions_before
                .keys()
                .filter(|k| !versions_after.contains_key(*k)),
        )
    {
        *changed_kinds
            .entry(k.split('/').next().unwrap_or_default())
            .or_default() += 1;
    }
    let changed_objects: usize = changed_kinds.values().sum();
    let changed_detail = if changed_kinds.is_empty() {
        String::new()
    } else {
        format!(
            " ({})",
            changed_kinds
                .iter()
                .map(|(k, n)| format!("{k}: {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let mut idle_writes: BTreeMap<String, u64> = BTreeMap::new();
    for (k, after) in &metrics_after {
        let d = after - metrics_before.get(k).copied().unwrap_or(0.0);
        if d >= 0.5 {
            idle_writes.insert(k.clone(), d.round() as u64);
        }
    }
    let apiserver_own = |k: &str| k.contains("leases");
    let operator_writes: u64 = idle_writes
        .iter()
        .filter(|(k, _)| !apiserver_own(k))
        .map(|(_, v)| v)
        .sum();
    let other_writes: Vec<String> = idle_writes
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();

    // 3. Baseline: the operator stops; the same client writes the same end state directly.
    operator.stop();
    let templates = Templates {
        engine: engines.get(&engine_name(0)).await?,
        sts: sts_api.get(&child_name(0)).await?,
        np: np_api.get(&child_name(0)).await?,
    };
    let base_ns = cp.namespace().await;
    eprintln!("bench operator: baseline in {}", base_ns.name());
    let templates = Arc::new(templates.for_namespace(base_ns.name())?);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.engines {
        let gate = gate.clone();
        let client = client.clone();
        let t = templates.clone();
        let ns = base_ns.name().to_owned();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            baseline_one(&client, &ns, &t, i).await
        }));
    }
    for t in tasks {
        t.await??;
    }
    let baseline_time = started.elapsed();
    let (done, detail) = reconciled(
        &scan_engines(&client, base_ns.name()),
        &Api::namespaced(client.clone(), base_ns.name()),
        &Api::namespaced(client.clone(), base_ns.name()),
        args.engines,
    )
    .await?;
    if done != args.engines {
        bail!("the baseline did not reach the operator's end state: {detail}");
    }
    console.stop();

    let ratio = operator_time.as_secs_f64() / baseline_time.as_secs_f64();
    let n = args.engines;
    let rows = vec![
        Row::new("ScanEngines", n.to_string()).target(">= 1000", n >= 1000),
        Row::new("creating the ScanEngines (bench client)", secs(created)),
        Row::new(
            "operator: create → every child object and status written",
            secs(operator_time),
        ),
        Row::new(
            "baseline: same client writes CR, NetworkPolicy, StatefulSet, status",
            secs(baseline_time),
        ),
        Row::new("operator / baseline", format!("{ratio:.2}×")).target("<= 2×", ratio <= 2.0),
        Row::new(
            "operator throughput",
            format!("{:.0} engines/s", n as f64 / operator_time.as_secs_f64()),
        ),
        Row::new("operator VmRSS before the engines", mib(rss_before)),
        Row::new("operator VmRSS after idle", mib(rss_after)),
        {
            // The targets: 48 MiB up to a thousand engines, 128 MiB up to ten thousand.
            let (label, limit) = if n <= 1000 {
                ("< 48 MiB", 48)
            } else {
                ("< 128 MiB", 128)
            };
            Row::new("operator VmHWM (peak RSS)", mib(hwm)).target(label, hwm < limit * 1024)
        },
        Row::new(
            "console API calls per refresh interval, all calls (operator's console_requests_total)",
            format!("{:.1}", per_interval(console_total)),
        ),
        Row::new(
            "console engine listings per refresh interval (one Console)",
            format!("{:.1}", per_interval(console_lists)),
        )
        .target("1 (flat in N)", per_interval(console_lists) <= 1.0),
        Row::new(
            "console calls during idle (call: n)",
            if console_calls.is_empty() {
                "none".to_owned()
            } else {
                console_calls
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            },
        ),
        Row::new(
            format!("API writes during idle ({idle:?}, apiserver_request_total, excluding leases)"),
            operator_writes.to_string(),
        )
        .target("0", operator_writes == 0),
        Row::new(
            "objects in the namespace whose resourceVersion changed during idle",
            format!("{changed_objects}{changed_detail}"),
        )
        .target("0", changed_objects == 0),
        Row::new(
            "all write counts during idle (verb resource: n)",
            if other_writes.is_empty() {
                "none".to_owned()
            } else {
                other_writes.join("; ")
            },
        ),
    ];
    let title = format!(
        "bench operator: {n} EngineToConsole ScanEngines, {} creations in flight, \
         --refresh-interval {}s; etcd + kube-apiserver on loopback (no controller manager); \
         release operator; {}",
        args.create_concurrency,
        args.refresh_interval,
        machine()
    );
    print_table(&title, &rows);
    if !detail.is_empty() {
        eprintln!("bench operator: baseline detail: {detail}");
    }
    Ok(())
}

/// How many of `n` engines have a NetworkPolicy, a StatefulSet and a status for their
/// generation; and, when not all, what is missing.
async fn reconciled(
    engines: &Api<DynamicObject>,
    sts: &Api<StatefulSet>,
    np: &Api<NetworkPolicy>,
    n: usize,
) -> anyhow::Result<(usize, String)> {
    let lp = ListParams::default();
    let sts_names: std::collections::HashSet<String> = sts
        .list_metadata(&lp)
        .await?
        .items
        .into_iter()
        .filter_map(|o| o.metadata.name)
        .collect();
    let np_names: std::collections::HashSet<String> = np
        .list_metadata(&lp)
        .await?
        .items
        .into_iter()
        .filter_map(|o| o.metadata.name)
        .collect();
    let mut status_ok = 0;
    for e in engines.list(&lp).await?.items {
        let generation = e.metadata.generation;
        if e.data["status"]["observedGeneration"].as_i64() == generation
            && generation.is_some()
            && e.data["status"]["communication"]["state"].is_string()
        {
            status_ok += 1;
        }
    }
    let with_children = (0..n)
        .filter(|i| sts_names.contains(&child_name(*i)) && np_names.contains(&child_name(*i)))
        .count();
    let done = with_children.min(status_ok);
    Ok((
        done,
        format!("{status_ok} statuses, {with_children} with StatefulSet and NetworkPolicy"),
    ))
}

/// resourceVersion of every object the operator writes in `ns`.
async fn resource_versions(client: &Client, ns: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let lp = ListParams::default();
    let mut out = BTreeMap::new();
    let mut put = |kind: &str, items: Vec<(Option<String>, Option<String>)>| {
        for (name, rv) in items {
            out.insert(
                format!("{kind}/{}", name.unwrap_or_default()),
                rv.unwrap_or_default(),
            );
        }
    };
    let meta = |m: &kube::api::ObjectMeta| (m.name.clone(), m.resource_version.clone());
    put(
        "scanengine",
        scan_engines(client, ns)
            .list_metadata(&lp)
            .await?
            .items
            .iter()
            .map(|o| meta(&o.metadata))
            .collect(),
    );
    put(
        "console",
        consoles(client, ns)
            .list_metadata(&lp)
            .await?
            .items
            .iter()
            .map(|o| meta(&o.metadata))
            .collect(),
    );
    put(
        "statefulset",
        Api::<StatefulSet>::namespaced(client.clone(), ns)
            .list_metadata(&lp)
            .await?
            .items
            .iter()
            .map(|o| meta(&o.metadata))
            .collect(),
    );
    put(
        "networkpolicy",
        Api::<NetworkPolicy>::namespaced(client.clone(), ns)
            .list_metadata(&lp)
            .await?
            .items
            .iter()
            .map(|o| meta(&o.metadata))
            .collect(),
    );
    put(
        "secret",
        Api::<Secret>::namespaced(client.clone(), ns)
            .list_metadata(&lp)
            .await?
            .items
            .iter()
            .map(|o| meta(&o.metadata))
            .collect(),
    );
    Ok(out)
}

/// The operator's `console_requests_total`, by call, from its metrics endpoint at `listen`.
async fn console_requests(listen: SocketAddr) -> anyhow::Result<BTreeMap<String, f64>> {
    let text = reqwest::get(format!("http://{listen}/metrics"))
        .await?
        .text()
        .await?;
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("scan_engine_operator_console_requests_total{call=\"")
        else {
            continue;
        };
        if let Some((call, value)) = rest.split_once("\"} ")
            && let Ok(v) = value.trim().parse::<f64>()
        {
            out.insert(call.to_owned(), v);
        }
    }
    Ok(out)
}

/// `apiserver_request_total` for write verbs, keyed "VERB resource[/subresource]".
async fn write_counts(client: &Client) -> anyhow::Result<BTreeMap<String, f64>> {
    let req = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(req).await.context("GET /metrics")?;
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_owned())
                .unwrap_or_default()
        };
        let verb = label("verb");
        if !WRITE_VERBS.contains(&verb.as_str()) {
            continue;
        }
        let mut resource = label("resource");
        let sub = label("subresource");
        if !sub.is_empty() {
            resource = format!("{resource}/{sub}");
        }
        let v: f64 = value.trim().parse().unwrap_or(0.0);
        *out.entry(format!("{verb} {resource}")).or_insert(0.0) += v;
    }
    Ok(out)
}

/// The operator's objects for engine 0, cleaned into templates for the baseline.
struct Templates {
    engine: DynamicObject,
    sts: StatefulSet,
    np: NetworkPolicy,
}

/// JSON text templates with `se-00000` to be replaced by each engine's name.
struct TextTemplates {
    engine: String,
    status: String,
    sts: String,
    np: String,
}

fn clean(meta: &Value, ns: &str) -> Value {
    json!({
        "name": meta["name"],
        "namespace": ns,
        "labels": meta["labels"],
        "annotations": meta["annotations"],
        "finalizers": meta["finalizers"],
    })
}

impl Templates {
    fn for_namespace(&self, ns: &str) -> anyhow::Result<TextTemplates> {
        let engine = serde_json::to_value(&self.engine)?;
        let status = engine["status"].clone();
        let engine = json!({
            "apiVersion": "scanengine.dev/v1alpha1", "kind": "ScanEngine",
            "metadata": clean(&engine["metadata"], ns),
            "spec": engine["spec"],
        });
        let mut sts = serde_json::to_value(&self.sts)?;
        sts["metadata"] = clean(&sts["metadata"], ns);
        sts.as_object_mut().map(|o| o.remove("status"));
        let mut np = serde_json::to_value(&self.np)?;
        np["metadata"] = clean(&np["metadata"], ns);
        // Null fields (no labels, no finalizers) are dropped by the API server.
        Ok(TextTemplates {
            engine: engine.to_string(),
            status: json!({ "status": status }).to_string(),
            sts: sts.to_string(),
            np: np.to_string(),
        })
    }
}

/// The baseline's writes for engine `i`: the ScanEngine, its NetworkPolicy and StatefulSet
/// (owned by it, as the operator's are) and its status.
async fn baseline_one(
    client: &Client,
    ns: &str,
    t: &TextTemplates,
    i: usize,
) -> anyhow::Result<()> {
    let name = engine_name(i);
    let fill = |s: &str| s.replace(&engine_name(0), &name);
    let engines = scan_engines(client, ns);
    let engine: DynamicObject = serde_json::from_str(&fill(&t.engine))?;
    let engine = engines.create(&PostParams::default(), &engine).await?;
    let owner = OwnerReference {
        api_version: "scanengine.dev/v1alpha1".into(),
        kind: "ScanEngine".into(),
        name: name.clone(),
        uid: engine
            .metadata
            .uid
            .clone()
            .context("the created ScanEngine has no uid")?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let mut np: NetworkPolicy = serde_json::from_str(&fill(&t.np))?;
    np.metadata.owner_references = Some(vec![owner.clone()]);
    let mut sts: StatefulSet = serde_json::from_str(&fill(&t.sts))?;
    sts.metadata.owner_references = Some(vec![owner]);
    Api::<NetworkPolicy>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &np)
        .await?;
    Api::<StatefulSet>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &sts)
        .await?;
    let status: Value = serde_json::from_str(&fill(&t.status))?;
    engines
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(())
}

/// Paths where `a` and `b` differ, with both values (shortened).
fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                let null = Value::Null;
                diff(
                    &format!("{path}.{k}"),
                    x.get(k).unwrap_or(&null),
                    y.get(k).unwrap_or(&null),
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                diff(&format!("{path}[{i}]"), p, q, out);
            }
        }
        _ if a != b => {
            let short = |v: &Value| v.to_string().chars().take(160).collect::<String>();
            out.push(format!("{path}: {} -> {}", short(a), short(b)));
        }
        _ => {}
    }
}
