//! `pairing`: apply → Ready of ScanEngines in both directions, on the cluster `KUBECONFIG`
//! names, with the operator already installed there (`cargo xtask demo`, or the e2e tier with
//! `XTASK_KEEP_CLUSTER=1`) and the project's images on its nodes.
//!
//! In a namespace of its own the bench creates a managed Console, waits until it is Ready, then
//! applies `--engines` ScanEngines of each direction, one after another, and records for each
//! the time from its creation to the first status with `Ready=True` it sees (listed every 100 ms). Each
//! direction is measured separately, so one does not wait behind the other's pods. Prints p50,
//! p95 and the slowest per direction; the namespace is deleted at the end.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams,
};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::report::{Row, machine, print_table};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// ScanEngines per direction.
    #[arg(long, default_value_t = 10)]
    engines: usize,
    /// Give up on an engine that is not Ready after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

fn api(client: &Client, ns: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("scanengine.dev", "v1alpha1", kind);
    Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::from_gvk_with_plural(&gvk, plural),
    )
}

fn ready(o: &DynamicObject) -> bool {
    o.data["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.engines == 0 {
        bail!("--engines must be positive");
    }
    let client = Client::try_default()
        .await
        .context("no cluster: set KUBECONFIG to a cluster with the operator installed")?;
    let ns = format!("bench-pairing-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            )?,
        )
        .await?;
    let result = measure(&client, &ns, &args).await;
    let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
    let rows = result?;
    let title = format!(
        "bench pairing: apply → Ready of {} ScanEngines per direction, created one after \
         another, on the cluster KUBECONFIG names; {}",
        args.engines,
        machine()
    );
    print_table(&title, &rows);
    Ok(())
}

async fn measure(client: &Client, ns: &str, args: &Args) -> anyhow::Result<Vec<Row>> {
    let consoles = api(client, ns, "Console", "consoles");
    let engines = api(client, ns, "ScanEngine", "scanengines");
    let console: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "scanengine.dev/v1alpha1", "kind": "Console",
        "metadata": {"name": "main", "namespace": ns},
        "spec": {"managed": {
            "storage": {"size": "1Gi"},
            "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}
        }},
    }))?;
    consoles.create(&PostParams::default(), &console).await?;
    let deadline = Duration::from_secs(args.timeout);
    let started = Instant::now();
    while !ready(&consoles.get("main").await?) {
        if started.elapsed() > deadline {
            bail!("Console main is not Ready after {deadline:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("bench pairing: Console Ready in {:?}", started.elapsed());

    let mut rows = Vec::new();
    for (direction, prefix) in [("ConsoleToEngine", "c2e"), ("EngineToConsole", "e2c")] {
        let latencies = direction_latencies(&engines, ns, direction, prefix, args).await?;
        let p = |q: f64| percentile(&latencies, q);
        rows.push(
            Row::new(format!("{direction}: p50 apply → Ready"), secs(p(0.50)))
                .target("< 5 s", p(0.50) < Duration::from_secs(5)),
        );
        rows.push(
            Row::new(format!("{direction}: p95 apply → Ready"), secs(p(0.95)))
                .target("< 10 s", p(0.95) < Duration::from_secs(10)),
        );
        rows.push(Row::new(format!("{direction}: slowest"), secs(p(1.0))));
    }
    Ok(rows)
}

async fn direction_latencies(
    engines: &Api<DynamicObject>,
    ns: &str,
    direction: &str,
    prefix: &str,
    args: &Args,
) -> anyhow::Result<Vec<Duration>> {
    let mut created: BTreeMap<String, Instant> = BTreeMap::new();
    for i in 0..args.engines {
        let name = format!("{prefix}-{i:02}");
        let se: DynamicObject = serde_json::from_value(engine(ns, &name, direction))?;
        engines.create(&PostParams::default(), &se).await?;
        created.insert(name, Instant::now());
    }
    // Listed every 100 ms: the latencies are exact to that.
    let mut done: BTreeMap<String, Duration> = BTreeMap::new();
    let started = Instant::now();
    while done.len() < created.len() {
        if started.elapsed() > Duration::from_secs(args.timeout) {
            bail!(
                "{direction}: {} of {} engines Ready after {}s",
                done.len(),
                created.len(),
                args.timeout
            );
        }
        for o in engines.list(&ListParams::default()).await? {
            let name = o.name_any();
            if let Some(at) = created.get(&name)
                && !done.contains_key(&name)
                && ready(&o)
            {
                done.insert(name, at.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("bench pairing: {direction}: {done:?}");
    Ok(done.into_values().collect())
}

fn engine(ns: &str, name: &str, direction: &str) -> Value {
    json!({
        "apiVersion": "scanengine.dev/v1alpha1", "kind": "ScanEngine",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "consoleRef": {"name": "main"},
            "communication": direction,
            "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        },
    })
}

/// The `q` quantile of `values` (nearest rank).
fn percentile(values: &[Duration], q: f64) -> Duration {
    let mut v = values.to_vec();
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}
