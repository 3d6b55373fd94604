//! The watches, stores and controllers, and what wakes which reconcile.
//!
//! One watch per kind and scope feeds one reflector store ([`super::stores`]) and the
//! ScanEngine controller's triggers; the Console controller has store-less watches of its own
//! for the kinds both react to. (kube-runtime's shared streams would save those watches, but
//! with them a newly elected leader did not reconcile the objects of its first listing, which
//! a restarted operator must do; the leader-election control-plane test shows it. That failure
//! may well have been the lost wake-up of kube-runtime's store readiness that [`Listed`] now
//! avoids; shared streams have not been tried again since.) What wakes a reconcile:
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

use super::stores::{Listed, Stores};
use super::{Context, Settings, console, names, scan_engine};
use crate::console_api::ConsoleApiFactory;
use crate::controller::shared::reconcile::error_policy;
use crate::crd::{Console, ScanEngine};
use crate::metrics::Metrics;

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
/// of an object's size), raising a flag of `listed` once the store holds its first listing.
/// Returns the store and the watch's stream of changed objects.
fn watched<K>(
    client: &Client,
    scope: Option<&str>,
    config: Config,
    listed: &mut Listed,
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
    let flag = listed.flag();
    let stream = watch(scoped::<K>(client, scope), config)
        .default_backoff()
        .modify(|o: &mut K| o.managed_fields_mut().clear())
        .reflect(writer)
        .inspect(move |event| {
            // After `reflect`: the store already holds the whole listing.
            if matches!(event, Ok(watcher::Event::InitDone)) {
                flag.send_replace(true);
            }
        })
        .touched_objects();
    (store, stream)
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
    let any = || Config::default().any_semantic();
    let mut listed = Listed::default();
    let (engines, engine_events) = watched::<ScanEngine>(client, scope, any(), &mut listed);
    let (consoles, console_events) = watched::<Console>(client, scope, any(), &mut listed);
    let (statefulsets, sts_events) =
        watched::<StatefulSet>(client, scope, managed_children(), &mut listed);
    let (services, svc_events) = watched::<Service>(client, scope, managed_children(), &mut listed);
    let (network_policies, np_events) =
        watched::<NetworkPolicy>(client, scope, managed_children(), &mut listed);
    let (secrets, secret_events) = watched::<Secret>(client, scope, secrets_read(), &mut listed);
    let (config_maps, config_map_events) =
        watched::<ConfigMap>(client, scope, Config::default(), &mut listed);
    let engine_pods = Config::default().labels(&scan_engine::pods::watch_selector());
    let (pods, pod_events) = watched::<Pod>(client, scope, engine_pods, &mut listed);

    let stores = Stores {
        engines: engines.clone(),
        consoles: consoles.clone(),
        statefulsets,
        services,
        network_policies,
        secrets,
        config_maps,
        pods,
        listed,
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
    let predicates = kube::runtime::PredicateConfig::default;

    // The ScanEngine controller consumes the watches whose stores the reconciles read; the
    // Console controller has watches of its own for the kinds both react to (they only
    // trigger, they keep no store).
    let own_engine_changes = engine_events
        .filter(|e| futures::future::ready(!matches!(e, Ok(se) if se.metadata.deletion_timestamp.is_some() && se.metadata.finalizers.as_ref().is_none_or(Vec::is_empty))))
        .predicate_filter(own_changes::<ScanEngine>, predicates());
    let console_published = watch(scoped::<Console>(client, scope), any())
        .default_backoff()
        .touched_objects()
        .predicate_filter(published_to_engines, predicates());
    let engine_controller = Controller::for_stream(own_engine_changes, engines.clone())
        .with_config(limits.clone())
        .owns_stream(sts_events)
        .owns_stream(svc_events)
        .owns_stream(np_events)
        .watches_stream(pod_events, |pod: Pod| {
            let ns = pod.namespace()?;
            let engine = scan_engine::pods::engine_of(&pod)?;
            Some(ObjectRef::<ScanEngine>::new(&engine).within(&ns))
        })
        .watches_stream(console_published, {
            let engines = engines.clone();
            move |console: Console| {
                let ns = console.namespace();
                let name = console.name_any();
                engines
                    .state()
                    .into_iter()
                    .filter(|se| se.namespace() == ns && se.spec.console_ref.name == name)
                    .map(|se| ObjectRef::from_obj(se.as_ref()))
                    .collect::<Vec<_>>()
            }
        })
        .reconcile_on(ctx.console_engines.engine_triggers())
        .graceful_shutdown_on(shutdown.clone())
        .run(scan_engine::reconcile, error_policy, ctx.clone())
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "ScanEngine controller event");
            }
        });

    let own_console_changes = console_events.predicate_filter(own_changes::<Console>, predicates());
    let console_controller = Controller::for_stream(own_console_changes, consoles.clone())
        .with_config(limits)
        .owns(scoped::<StatefulSet>(client, scope), managed_children())
        .owns(scoped::<Service>(client, scope), managed_children())
        .owns(scoped::<NetworkPolicy>(client, scope), managed_children())
        .watches_stream(secret_events, {
            let consoles = consoles.clone();
            move |secret: Secret| referring_consoles(&consoles, &secret.metadata, true)
        })
        .watches_stream(config_map_events, {
            let consoles = consoles.clone();
            move |cm: ConfigMap| referring_consoles(&consoles, &cm.metadata, false)
        })
        .watches(
            scoped::<ScanEngine>(client, scope),
            Config::default(),
            |se: ScanEngine| {
                // Only an engine being deleted concerns its Console (a cleanup waits for it).
                se.metadata.deletion_timestamp.as_ref()?;
                let ns = se.namespace()?;
                Some(ObjectRef::<Console>::new(&se.spec.console_ref.name).within(&ns))
            },
        )
        .reconcile_on(ctx.console_engines.console_triggers())
        .graceful_shutdown_on(shutdown)
        .run(console::reconcile, error_policy, ctx.clone())
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "Console controller event");
            }
        });

    Box::pin(async move {
        futures::future::join(engine_controller, console_controller).await;
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
