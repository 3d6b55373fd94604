//! The reconcilers and what they share.
//!
//! - [`console`]: `Console` → managed console objects, API connection, shared secret, status;
//! - [`scan_engine`]: `ScanEngine` → engine pod, Service, NetworkPolicy, console registration, status;
//! - [`Context`]: what every reconcile gets (client, event recorder, metrics, console API
//!   factory, clock, settings, and the [`applied`] cache of what was last applied).

pub mod applied;
pub mod apply;
pub mod connection;
pub mod console;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod names;
pub mod scan_engine;
pub mod wakeups;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};

use crate::console_api::ConsoleApiFactory;
use crate::metrics::Metrics;

/// A clock, injectable so tests are deterministic.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Settings of the reconcilers (from the command line).
#[derive(Clone, Debug)]
pub struct Settings {
    /// How often an engine's and a console's status is refreshed from the console.
    pub refresh_interval: Duration,
    /// Renew the pairing shared secret when less than this is left (Console may override).
    pub secret_renewal_margin: Duration,
    /// Namespace the operator runs in (managed console policies admit it on 3780).
    pub operator_namespace: String,
    /// Labels of the operator's pods (managed console policies admit them on 3780).
    pub operator_pod_labels: std::collections::BTreeMap<String, String>,
    /// Product version of consoles and engines when a spec names none.
    pub default_version: String,
    /// Reconciles running at once, per kind.
    pub max_concurrent_reconciles: u16,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            refresh_interval: Duration::from_secs(60),
            secret_renewal_margin: Duration::from_secs(15 * 60),
            operator_namespace: "scan-engine-operator".into(),
            operator_pod_labels: [(
                "app.kubernetes.io/name".to_string(),
                "scan-engine-operator".to_string(),
            )]
            .into(),
            default_version: crate::VERSION.into(),
            max_concurrent_reconciles: 16,
        }
    }
}

/// What every reconcile gets.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub consoles: Arc<dyn ConsoleApiFactory>,
    pub clock: Clock,
    pub settings: Settings,
    /// What was last applied, so unchanged child objects are not re-sent on every refresh.
    pub applied: Arc<applied::AppliedCache>,
    /// Which ScanEngine wake-ups have work to do (not the echo of a status write).
    pub wakeups: Arc<wakeups::Wakeups>,
    /// Wakes a Console's reconcile when one of its engines changes state.
    pub console_waker: Arc<console::waker::ConsoleWaker>,
    /// Consoles' connections, reused briefly by ScanEngine reconciles.
    pub connections: Arc<connection::ResolvedConnections>,
    /// Consecutive failures per object, for error backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        consoles: Arc<dyn ConsoleApiFactory>,
        clock: Clock,
        settings: Settings,
    ) -> Self {
        let reporter = Reporter {
            controller: names::MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            consoles,
            clock,
            settings,
            applied: Arc::default(),
            wakeups: Arc::default(),
            console_waker: Arc::default(),
            connections: Arc::default(),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Shares `other`'s memory (applied objects, wake-ups): tests reconcile twice with the same
    /// memory and a fresh mock client.
    pub fn sharing_memory_of(mut self, other: &Context) -> Self {
        self.applied = other.applied.clone();
        self.wakeups = other.wakeups.clone();
        self
    }

    pub fn now(&self) -> Timestamp {
        (self.clock)()
    }

    /// Publishes an event about `obj`; failures are logged, never fatal.
    pub async fn event<K>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) where
        K: Resource<DynamicType = ()>,
    {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "cannot publish event");
        }
    }

    /// Backoff after a failed reconcile: 5s doubling up to 5 minutes.
    pub fn failure_backoff(&self, key: String) -> Action {
        let mut failures = crate::lock(&self.failures);
        let n = failures.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        let secs = 5u64.saturating_mul(1u64 << (*n - 1).min(6)).min(300);
        Action::requeue(Duration::from_secs(secs))
    }

    /// Forgets the failures of an object after a successful reconcile.
    pub fn reset_backoff(&self, key: &str) {
        crate::lock(&self.failures).remove(key);
    }
}

/// `kind/namespace/name`, for backoff bookkeeping and logs.
pub fn object_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    key_of(
        &K::kind(&()),
        &obj.namespace().unwrap_or_default(),
        &obj.name_any(),
    )
}

/// `kind/namespace/name` from its parts (an owner reference names no object to ask).
fn key_of(kind: &str, namespace: &str, name: &str) -> String {
    format!("{kind}/{namespace}/{name}")
}

/// A controller owner reference to `obj` (children are garbage collected with it).
pub fn owner_reference<K: Resource<DynamicType = ()>>(obj: &K) -> Option<OwnerReference> {
    obj.controller_owner_ref(&())
}

/// Runs both controllers on `namespaces` (all namespaces when empty) until `shutdown`.
pub async fn run(
    ctx: Arc<Context>,
    namespaces: Vec<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + Clone + 'static,
) {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::{Pod, Secret};
    use kube::runtime::reflector::ObjectRef;
    use kube::runtime::watcher::Config;
    use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};

    use crate::crd::{Console, ScanEngine};

    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.into_iter().map(Some).collect()
    };
    let mut tasks = Vec::new();
    for scope in scopes {
        let client = ctx.client.clone();
        let scope = scope.as_deref();
        let cache = ctx.applied.clone();
        let wake = ctx.wakeups.clone();
        let limits = kube::runtime::controller::Config::default()
            .concurrency(ctx.settings.max_concurrent_reconciles);

        let engine_controller = Controller::new(
            scoped::<ScanEngine>(&client, scope),
            Config::default().any_semantic(),
        )
        .with_config(limits.clone());
        let store = engine_controller.store();
        // The engine pods: a reflector store the reconcile reads what they say from, and a
        // watch that wakes their ScanEngine when one changes (see `scan_engine::pods`).
        let engine_pods = Config::default().labels(&scan_engine::pods::watch_selector());
        let (pods, pods_writer) = reflector::store::<Pod>();
        let pods_reflector = reflector(
            pods_writer,
            watcher(scoped::<Pod>(&client, scope), engine_pods.clone()),
        )
        .default_backoff()
        .for_each(|event| async move {
            if let Err(e) = event {
                tracing::debug!(error = %e, "engine pod watch");
            }
        });
        let engine_task = watching_children(engine_controller, &client, scope, &cache, &wake)
            .watches(scoped::<Pod>(&client, scope), engine_pods, {
                let wake = wake.clone();
                move |pod: Pod| {
                    let ns = pod.namespace()?;
                    let engine = scan_engine::pods::engine_of(&pod)?;
                    wake.touch(&key_of(&ScanEngine::kind(&()), &ns, &engine));
                    Some(ObjectRef::<ScanEngine>::new(&engine).within(&ns))
                }
            })
            .watches(scoped::<Console>(&client, scope), Config::default(), {
                let wake = wake.clone();
                move |console: Console| {
                    let ns = console.namespace();
                    let name = console.name_any();
                    store
                        .state()
                        .into_iter()
                        .filter(|se| se.namespace() == ns && se.spec.console_ref.name == name)
                        .map(|se| {
                            wake.touch(&object_key(se.as_ref()));
                            ObjectRef::from_obj(se.as_ref())
                        })
                        .collect::<Vec<_>>()
                }
            })
            .graceful_shutdown_on(shutdown.clone())
            .run(
                move |engine, ctx| scan_engine::reconcile(engine, ctx, pods.clone()),
                scan_engine::error_policy,
                ctx.clone(),
            )
            .for_each(|res| async move {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "ScanEngine controller event");
                }
            });

        let console_controller = Controller::new(
            scoped::<Console>(&client, scope),
            Config::default().any_semantic(),
        )
        .with_config(limits);
        let console_task = watching_children(console_controller, &client, scope, &cache, &wake)
            .watches(
                scoped::<Secret>(&client, scope),
                managed_children(),
                child_changed(&cache, &wake),
            )
            .watches(scoped::<ScanEngine>(&client, scope), Config::default(), {
                let waker = ctx.console_waker.clone();
                move |se: ScanEngine| {
                    let ns = se.namespace().unwrap_or_default();
                    waker
                        .take(&ns, &se.spec.console_ref.name)
                        .then(|| ObjectRef::new(&se.spec.console_ref.name).within(&ns))
                }
            })
            .graceful_shutdown_on(shutdown.clone())
            .run(console::reconcile, console::error_policy, ctx.clone())
            .for_each(|res| async move {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "Console controller event");
                }
            });
        // The pod reflector ends with the controller (it would otherwise watch forever).
        tasks.push(tokio::spawn(async move {
            tokio::select! {
                () = engine_task => {}
                () = pods_reflector => {}
            }
        }));
        tasks.push(tokio::spawn(console_task));
    }
    for t in tasks {
        let _ = t.await;
    }
}

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
fn managed_children() -> kube::runtime::watcher::Config {
    kube::runtime::watcher::Config::default().labels(&format!(
        "{}={}",
        names::MANAGED_BY_LABEL,
        names::MANAGER
    ))
}

/// `controller` watching the kinds of child objects both controllers own (StatefulSet,
/// Service, NetworkPolicy), each event going through [`child_changed`].
fn watching_children<Owner>(
    controller: kube::runtime::Controller<Owner>,
    client: &Client,
    namespace: Option<&str>,
    cache: &Arc<applied::AppliedCache>,
    wake: &Arc<wakeups::Wakeups>,
) -> kube::runtime::Controller<Owner>
where
    Owner: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    controller
        .watches(
            scoped::<StatefulSet>(client, namespace),
            managed_children(),
            child_changed(cache, wake),
        )
        .watches(
            scoped::<Service>(client, namespace),
            managed_children(),
            child_changed(cache, wake),
        )
        .watches(
            scoped::<NetworkPolicy>(client, namespace),
            managed_children(),
            child_changed(cache, wake),
        )
}

/// The mapper of a child watch: tells the [`applied`] cache that the child changed (so the next
/// reconcile applies it again) and triggers the reconcile of its controlling `Owner`, as
/// `Controller::owns` would; except for the echo of the operator's own apply, and for any event
/// while the owner's reconcile is applying that child (it weighs the event itself), which
/// trigger nothing.
fn child_changed<Child, Owner>(
    cache: &Arc<applied::AppliedCache>,
    wake: &Arc<wakeups::Wakeups>,
) -> impl Fn(Child) -> Vec<kube::runtime::reflector::ObjectRef<Owner>> + Send + Sync + 'static
where
    Child: Resource<DynamicType = ()>,
    Owner: Resource<DynamicType = ()>,
{
    let cache = cache.clone();
    let wake = wake.clone();
    move |child: Child| {
        // Both controllers watch the same kinds of children: only the mapper of the child's
        // controlling owner's kind looks at the event, so each event reaches the cache once.
        let Some(owner) = child.owner_references().iter().find(|o| {
            o.controller == Some(true)
                && o.kind == Owner::kind(&())
                && o.api_version == Owner::api_version(&())
        }) else {
            return Vec::new();
        };
        let namespace = child.namespace().unwrap_or_default();
        let changed = cache.changed(
            &applied::ObjectKey::new(&Child::kind(&()), &namespace, &child.name_any()),
            child.meta().resource_version.as_deref(),
        );
        if !changed {
            // The echo of the operator's own apply, or an apply in flight: nothing to trigger.
            return Vec::new();
        }
        wake.touch(&key_of(&owner.kind, &namespace, &owner.name));
        vec![kube::runtime::reflector::ObjectRef::new(&owner.name).within(&namespace)]
    }
}
