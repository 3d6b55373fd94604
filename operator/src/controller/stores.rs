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

use crate::crd::{Console, ScanEngine};

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
        // An error means the watch was dropped, which happens only at shutdown.
        let _ = futures::join!(
            self.engines.wait_until_ready(),
            self.consoles.wait_until_ready(),
            self.statefulsets.wait_until_ready(),
            self.services.wait_until_ready(),
            self.network_policies.wait_until_ready(),
            self.secrets.wait_until_ready(),
            self.config_maps.wait_until_ready(),
            self.pods.wait_until_ready(),
        );
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
        }
    }
}
