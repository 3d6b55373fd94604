//! The operator's memory: kube-runtime reflector stores of every kind it reads.
//!
//! A reconcile reads its Console, the Secrets and ConfigMaps a Console names, its child objects
//! and its engine's pods from these stores, never with a request of its own. The stores are
//! filled by the watches in [`super::wiring`] before any reconcile runs, and they are all the
//! operator knows: a restarted operator lists everything once and then behaves exactly like one
//! that has been running for weeks.
//!
//! Children (StatefulSets, Services, NetworkPolicies, the managed console's Secrets) are watched
//! by the operator's managed-by label, so the stores hold only the operator's own objects. A
//! child missing from its store is either absent or someone else's; the apply in
//! [`super::shared::apply`] tells which with one read before it creates anything.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};
use std::sync::Arc;
use tokio::sync::watch;

use crate::crd::{Console, ScanEngine};

/// Whether every store holds its first complete listing: one flag per store, raised by its
/// watch stream when the listing is done ([`kube::runtime::watcher::Event::InitDone`]).
///
/// Kept here rather than taken from kube-runtime's `Store::wait_until_ready`, whose one-shot
/// channel keeps a single waker: of several reconciles waiting at once only the last is woken,
/// and the others wait forever, holding their object's slot so that no later change of it is
/// reconciled either. A newly elected leader, whose first reconciles start before its stores
/// are listed, lost its first objects exactly that way. A `watch` channel wakes every waiter.
#[derive(Clone, Default)]
pub struct Listed {
    flags: Vec<watch::Receiver<bool>>,
}

impl Listed {
    /// A new flag, lowered; the store is listed once the returned sender says `true`.
    pub fn flag(&mut self) -> watch::Sender<bool> {
        let (tx, rx) = watch::channel(false);
        self.flags.push(rx);
        tx
    }

    /// Resolves once every flag is raised (or its watch is gone, which happens only at
    /// shutdown).
    pub async fn wait(&self) {
        for flag in &self.flags {
            let mut flag = flag.clone();
            let _ = flag.wait_for(|listed| *listed).await;
        }
    }
}

/// Readers of every store (cheap to clone).
#[derive(Clone)]
pub struct Stores {
    pub engines: Store<ScanEngine>,
    pub consoles: Store<Console>,
    pub statefulsets: Store<StatefulSet>,
    pub services: Store<Service>,
    pub network_policies: Store<NetworkPolicy>,
    /// The Secrets in the watched namespaces (a Console names its credentials and CA by name),
    /// but for Helm release records and ServiceAccount tokens.
    pub secrets: Store<Secret>,
    /// Every ConfigMap in the watched namespaces (an external Console's CA bundle).
    pub config_maps: Store<ConfigMap>,
    /// The operator's engine pods.
    pub pods: Store<Pod>,
    /// Whether the stores above hold their first listings.
    pub listed: Listed,
}

/// A namespaced object of `K` from `store`.
pub fn get<K>(store: &Store<K>, namespace: &str, name: &str) -> Option<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store.get(&ObjectRef::new(name).within(namespace))
}

impl Stores {
    /// Resolves once every store holds its first complete listing: before that, an absent
    /// object may only not be listed yet.
    pub async fn ready(&self) {
        self.listed.wait().await;
    }

    pub fn console(&self, namespace: &str, name: &str) -> Option<Arc<Console>> {
        get(&self.consoles, namespace, name)
    }

    pub fn secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        get(&self.secrets, namespace, name)
    }

    pub fn config_map(&self, namespace: &str, name: &str) -> Option<Arc<ConfigMap>> {
        get(&self.config_maps, namespace, name)
    }

    /// The ScanEngines of Console `namespace/name`.
    pub fn engines_of_console(&self, namespace: &str, name: &str) -> Vec<Arc<ScanEngine>> {
        self.engines.state_filter(|se| {
            se.metadata.namespace.as_deref() == Some(namespace) && se.spec.console_ref.name == name
        })
    }
}

/// Stores filled by hand, for tests: what the watches would hold.
#[cfg(test)]
pub mod testing {
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher::Event;
    use serde::de::DeserializeOwned;
    use serde_json::Value;

    use super::*;

    fn store<K>(objects: &[Value]) -> Store<K>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + 'static,
    {
        let mut writer = Writer::<K>::default();
        writer.apply_watcher_event(&Event::Init);
        for o in objects {
            let kind_matches = o.get("kind").and_then(Value::as_str) == Some(&K::kind(&()));
            if let (true, Ok(obj)) = (kind_matches, serde_json::from_value::<K>(o.clone())) {
                writer.apply_watcher_event(&Event::InitApply(obj));
            }
        }
        writer.apply_watcher_event(&Event::InitDone);
        writer.as_reader()
    }

    /// Stores holding `objects` (JSON with `kind`), each in the store of its kind.
    pub fn stores(objects: &[Value]) -> Stores {
        Stores {
            engines: store(objects),
            consoles: store(objects),
            statefulsets: store(objects),
            services: store(objects),
            network_policies: store(objects),
            secrets: store(objects),
            config_maps: store(objects),
            pods: store(objects),
            listed: super::Listed::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Listed;

    #[tokio::test]
    async fn every_reconcile_waiting_for_the_listings_is_woken_when_they_are_done() {
        let mut listed = Listed::default();
        let flags: Vec<_> = (0..3).map(|_| listed.flag()).collect();
        // Many reconciles wait at once, as a new leader's first ones do.
        let waiting: Vec<_> = (0..8)
            .map(|_| {
                let listed = listed.clone();
                tokio::spawn(async move { listed.wait().await })
            })
            .collect();
        tokio::task::yield_now().await;
        flags[0].send_replace(true);
        flags[1].send_replace(true);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            waiting.iter().all(|w| !w.is_finished()),
            "no reconcile goes on before every store is listed"
        );
        flags[2].send_replace(true);
        let all = futures::future::join_all(waiting);
        assert!(
            tokio::time::timeout(Duration::from_secs(10), all)
                .await
                .is_ok_and(|r| r.iter().all(Result::is_ok)),
            "every waiting reconcile goes on once the last store is listed"
        );
    }
}
