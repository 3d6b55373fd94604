//! The reconcilers and what they share.
//!
//! - [`console`]: `Console` → managed console objects, API connection, one listing of the
//!   console's engines per refresh, shared secret, status;
//! - [`scan_engine`]: `ScanEngine` → engine pod, Service, NetworkPolicy, console registration,
//!   status;
//! - [`shared`]: what both use (apply against the stores, the reconcile frame, pod security);
//! - [`stores`]: the reflector stores every read comes from, and [`console_engines`], the view
//!   of what each console says about its engines;
//! - [`wiring`]: the watches, stores and controllers, and what wakes which reconcile;
//! - [`Context`]: what every reconcile gets.

pub mod connection;
pub mod console;
pub mod console_engines;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod names;
pub mod scan_engine;
pub mod shared;
pub mod stores;
pub mod wiring;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};

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
    /// Every object the reconciles read.
    pub stores: stores::Stores,
    /// What each console last said about its engines.
    pub console_engines: console_engines::ConsoleEngines,
}

impl Context {
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        consoles: Arc<dyn ConsoleApiFactory>,
        clock: Clock,
        settings: Settings,
        stores: stores::Stores,
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
            stores,
            console_engines: console_engines::ConsoleEngines::default(),
        }
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
}

/// A controller owner reference to `obj` (children are garbage collected with it).
pub fn owner_reference<K: Resource<DynamicType = ()>>(obj: &K) -> Option<OwnerReference> {
    obj.controller_owner_ref(&())
}
