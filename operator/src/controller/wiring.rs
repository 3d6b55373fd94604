//! The watches, stores and controllers, and what wakes which reconcile.
//!
//! One watch per kind and scope feeds one reflector store ([`super::stores`]). The kinds both
//! controllers react to (ScanEngines, Consoles and the child kinds) are shared: one watch,
//! one store, a subscription per controller. What wakes a reconcile:
//!
//! | ScanEngine reconcile | Console reconcile |
//! |---|---|
//! | its spec, labels, annotations, finalizers, deletion (not its status: that is its own write) | the same of its Console |
//! | a change of a child it owns (StatefulSet, Service, NetworkPolicy) | a change of a child it owns |
//! | a change of its pod | a Secret or ConfigMap it names or owns |
//! | what its Console publishes to engines (listener address, shared secret, fingerprint, version) | an engine of it being deleted (cleanup waits for them) |
//! | its console's listing saying something new about it | a change of state one of its engines recorded, or a wish for an early listing |
//! | the periodic requeue | the periodic requeue (its next listing) |
//!
//! The echo of the operator's own writes wakes a reconcile that then finds nothing to do and
//! makes no request: the predicates drop status writes, and a child whose store already holds
//! the desired object is not applied again.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::watcher as watch;
use kube::runtime::watcher::{self, Config};
use kube::runtime::{Controller, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::stores::Stores;
use super::{Context, Settings, console, names, scan_engine};
use crate::console_api::ConsoleApiFactory;
use crate::controller::shared::reconcile::error_policy;
use crate::crd::{Console, ScanEngine};
use crate::metrics::Metrics;

/// Events buffered per subscriber of a shared watch before the watch waits for it.
const SHARED_BUFFER: usize = 1024;

/// What the controllers are made of, besides the stores.
pub struct Parts {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub consoles: Arc<dyn ConsoleApiFactory>,
    pub clock: super::Clock,
    pub settings: Settings,
}

type Task = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// An API of `K` in `namespace`, or in all namespaces.
fn scoped<K>(client: &Client, namespace: Option<&str>) -> kube::Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => kube::Api::namespaced(client.clone(), ns),
        None => kube::Api::all(client.clone()),
    }
}

/// The watch of the operator's own child objects (its managed-by label).
fn managed_children() -> Config {
    Config::default().labels(&format!("{}={}", names::MANAGED_BY_LABEL, names::MANAGER))
}

/// The Secrets a Console may name: every type but Helm's release records and legacy
/// ServiceAccount tokens, which are many, large, and never a console's credentials or CA.
fn secrets_read() -> Config {
    Config::default().fields("type!=helm.sh/release.v1,type!=kubernetes.io/service-account-token")
}

/// A watch of `K` into a store, with managed fields dropped (they are never read and are most
/// of an object's size). Returns the store and the watch's stream of changed objects.
fn watched<K>(
    client: &Client,
    scope: Option<&str>,
    config: Config,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let stream = watch(scoped::<K>(client, scope), config)
        .default_backoff()
        .modify(|o: &mut K| o.managed_fields_mut().clear())
        .reflect(writer)
        .touched_objects();
    (store, stream)
}

/// A shared watch of `K` into a store: the store, `n` subscriptions, and the watch itself
/// (a task to run).
fn shared<K>(
    client: &Client,
    scope: Option<&str>,
    config: Config,
    n: usize,
) -> (Store<K>, Vec<reflector::ReflectHandle<K>>, Task)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store_shared::<K>(SHARED_BUFFER);
    let subscribers = (0..n).filter_map(|_| writer.subscribe()).collect();
    let task: Task = Box::pin(
        watch(scoped::<K>(client, scope), config)
            .default_backoff()
            .modify(|o: &mut K| o.managed_fields_mut().clear())
            .reflect_shared(writer)
            .for_each(|event| async move {
                if let Err(e) = event {
                    tracing::debug!(kind = %K::kind(&()), error = %e, "watch");
                }
            }),
    );
    (store, subscribers, task)
}

fn hash_of(value: impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// What a reconcile reads from its own object besides the spec: labels, annotations,
/// finalizers and deletion. Its status is its own write and wakes nothing.
fn own_changes<K: Resource>(obj: &K) -> Option<u64> {
    let m = obj.meta();
    Some(hash_of((
        m.generation,
        &m.labels,
        &m.annotations,
        &m.finalizers,
        m.deletion_timestamp.as_ref().map(|t| t.0.as_second()),
        &m.uid,
    )))
}

/// What a ScanEngine reads from its Console ([`scan_engine::validate::console_side`]).
fn published_to_engines(c: &Console) -> Option<u64> {
    let s = c.status.as_ref();
    Some(hash_of((
        &c.metadata.uid,
        c.metadata.generation,
        s.and_then(|s| s.engine_listener_address.as_ref()),
        s.and_then(|s| s.shared_secret.as_ref().map(|x| &x.secret_name)),
        s.and_then(|s| s.certificate_fingerprint.as_ref()),
        s.and_then(|s| s.version.as_ref()),
        c.metadata.deletion_timestamp.is_some(),
    )))
}

/// `stream` of shared objects, without those whose `predicate` hash did not change.
fn filtered<K>(
    stream: impl Stream<Item = Arc<K>> + Send + 'static,
    predicate: fn(&K) -> Option<u64>,
) -> impl Stream<Item = Arc<K>> + Send + 'static
where
    K: Resource + Clone + Send + Sync + 'static,
{
    stream
        .map(|o| Ok::<K, watcher::Error>(o.as_ref().clone()))
        .predicate_filter(predicate, kube::runtime::PredicateConfig::default())
        .filter_map(|o| async move { o.ok().map(Arc::new) })
}

/// Runs both controllers on `namespaces` (all namespaces when empty) until `shutdown`.
pub async fn run(
    parts: Parts,
    namespaces: Vec<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + Clone + 'static,
) {
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.into_iter().map(Some).collect()
    };
    let mut tasks = Vec::new();
    for scope in scopes {
        tasks.push(tokio::spawn(run_scope(
            &parts,
            scope.as_deref(),
            shutdown.clone(),
        )));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// The stores and both controllers of one scope; ends when both controllers stop.
fn run_scope(
    parts: &Parts,
    scope: Option<&str>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + Clone + 'static,
) -> Task {
    let client = &parts.client;
    let (engines, mut engine_subs, engines_watch) =
        shared::<ScanEngine>(client, scope, Config::default().any_semantic(), 3);
    let (consoles, mut console_subs, consoles_watch) =
        shared::<Console>(client, scope, Config::default().any_semantic(), 2);
    let (statefulsets, mut sts_subs, sts_watch) =
        shared::<StatefulSet>(client, scope, managed_children(), 2);
    let (services, mut svc_subs, svc_watch) =
        shared::<Service>(client, scope, managed_children(), 2);
    let (network_policies, mut np_subs, np_watch) =
        shared::<NetworkPolicy>(client, scope, managed_children(), 2);
    let (secrets, secret_events) = watched::<Secret>(client, scope, secrets_read());
    let (config_maps, config_map_events) = watched::<ConfigMap>(client, scope, Config::default());
    let engine_pods = Config::default().labels(&scan_engine::pods::watch_selector());
    let (pods, pod_events) = watched::<Pod>(client, scope, engine_pods);

    let stores = Stores {
        engines: engines.clone(),
        consoles: consoles.clone(),
        statefulsets,
        services,
        network_policies,
        secrets,
        config_maps,
        pods,
    };
    parts.metrics.add_engine_store(engines.clone());
    let ctx = Arc::new(Context::new(
        client.clone(),
        parts.metrics.clone(),
        parts.consoles.clone(),
        parts.clock.clone(),
        parts.settings.clone(),
        stores,
    ));
    let limits = kube::runtime::controller::Config::default()
        .concurrency(ctx.settings.max_concurrent_reconciles);
    let (Some(se_self), Some(se_for_console), Some(se_spare)) =
        (engine_subs.pop(), engine_subs.pop(), engine_subs.pop())
    else {
        return Box::pin(async {});
    };
    let (Some(c_self), Some(c_for_engines)) = (console_subs.pop(), console_subs.pop()) else {
        return Box::pin(async {});
    };
    let (Some(sts_e), Some(sts_c), Some(svc_e), Some(svc_c), Some(np_e), Some(np_c)) = (
        sts_subs.pop(),
        sts_subs.pop(),
        svc_subs.pop(),
        svc_subs.pop(),
        np_subs.pop(),
        np_subs.pop(),
    ) else {
        return Box::pin(async {});
    };

    let engine_controller = Controller::for_shared_stream(
        filtered(
            se_self,
            own_changes::<ScanEngine> as fn(&ScanEngine) -> Option<u64>,
        ),
        engines.clone(),
    )
    .with_config(limits.clone())
    .owns_shared_stream(sts_e)
    .owns_shared_stream(svc_e)
    .owns_shared_stream(np_e)
    .watches_stream(pod_events, |pod: Pod| {
        let ns = pod.namespace()?;
        let engine = scan_engine::pods::engine_of(&pod)?;
        Some(ObjectRef::<ScanEngine>::new(&engine).within(&ns))
    })
    .watches_shared_stream(
        filtered(
            c_for_engines,
            published_to_engines as fn(&Console) -> Option<u64>,
        ),
        {
            let engines = engines.clone();
            move |console: Arc<Console>| {
                let ns = console.namespace();
                let name = console.name_any();
                engines
                    .state()
                    .into_iter()
                    .filter(|se| se.namespace() == ns && se.spec.console_ref.name == name)
                    .map(|se| ObjectRef::from_obj(se.as_ref()))
                    .collect::<Vec<_>>()
            }
        },
    )
    .reconcile_on(ctx.console_engines.engine_triggers())
    .graceful_shutdown_on(shutdown.clone())
    .run(scan_engine::reconcile, error_policy, ctx.clone())
    .for_each(|res| async move {
        if let Err(e) = res {
            tracing::debug!(error = %e, "ScanEngine controller event");
        }
    });

    let console_controller = Controller::for_shared_stream(
        filtered(
            c_self,
            own_changes::<Console> as fn(&Console) -> Option<u64>,
        ),
        consoles.clone(),
    )
    .with_config(limits)
    .owns_shared_stream(sts_c)
    .owns_shared_stream(svc_c)
    .owns_shared_stream(np_c)
    .watches_stream(secret_events, {
        let consoles = consoles.clone();
        move |secret: Secret| referring_consoles(&consoles, &secret.metadata, true)
    })
    .watches_stream(config_map_events, {
        let consoles = consoles.clone();
        move |cm: ConfigMap| referring_consoles(&consoles, &cm.metadata, false)
    })
    .watches_shared_stream(se_for_console, |se: Arc<ScanEngine>| {
        // Only an engine being deleted concerns its Console (a cleanup waits for it).
        se.metadata.deletion_timestamp.as_ref()?;
        let ns = se.namespace()?;
        Some(ObjectRef::<Console>::new(&se.spec.console_ref.name).within(&ns))
    })
    .reconcile_on(ctx.console_engines.console_triggers())
    .graceful_shutdown_on(shutdown)
    .run(console::reconcile, error_policy, ctx.clone())
    .for_each(|res| async move {
        if let Err(e) = res {
            tracing::debug!(error = %e, "Console controller event");
        }
    });

    // The spare subscription is drained so the shared watch never waits for it; it exists so
    // that adding a third consumer (engine pools) needs no new watch.
    let spare = se_spare.for_each(|_| async {});
    let watches: Vec<Task> = vec![
        engines_watch,
        consoles_watch,
        sts_watch,
        svc_watch,
        np_watch,
        Box::pin(spare),
    ];
    Box::pin(async move {
        // The watches end with the controllers (they would otherwise watch forever).
        tokio::select! {
            _ = futures::future::join(engine_controller, console_controller) => {}
            _ = futures::future::join_all(watches) => {}
        }
    })
}

/// The Consoles in `meta`'s namespace that name it (credentials, CA bundle; with `secret`,
/// also their generated Secrets, found by owner reference).
fn referring_consoles(
    consoles: &Store<Console>,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    secret: bool,
) -> Vec<ObjectRef<Console>> {
    let (Some(ns), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref()) else {
        return Vec::new();
    };
    consoles
        .state()
        .into_iter()
        .filter(|c| c.metadata.namespace.as_deref() == Some(ns))
        .filter(|c| {
            let owned = meta
                .owner_references
                .iter()
                .flatten()
                .any(|o| Some(&o.uid) == c.metadata.uid.as_ref());
            owned || c.names_object(name, secret)
        })
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect()
}
