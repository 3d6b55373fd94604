//! Apply: server-side apply of the desired set, each object only when its store holds
//! something else ([`crate::controller::shared::apply`]).

use k8s_openapi::api::core::v1::Service;
use kube::Client;

use super::build::Desired;
use crate::Result;
use crate::controller::names;
use crate::controller::shared::apply::{Ensured, ensure, ensure_absent};
use crate::controller::stores::{Stores, get};

/// What the reconcile needs of what is applied: the Service (node port, load balancer
/// address), when the engine has one, as the API server holds it.
#[derive(Clone, Debug)]
pub struct Applied {
    pub service: Option<Service>,
}

/// Applies every desired object that differs from its store. The desired set is destructured
/// completely, so a new kind of child object does not compile until it is applied here.
pub async fn apply_all(
    client: &Client,
    stores: &Stores,
    namespace: &str,
    engine: &str,
    desired: Desired,
) -> Result<Applied> {
    let Desired {
        statefulset,
        service,
        network_policy,
    } = desired;
    let child = names::engine_objects(engine);
    // The policy first: a pod never runs unfenced, and a direction switch swaps policies
    // before the pod restarts in the new direction.
    let live = get(&stores.network_policies, namespace, &child);
    ensure(client, live.as_deref(), network_policy).await?;
    let live_service = get(&stores.services, namespace, &child);
    let service = match service {
        Some(svc) => match ensure(client, live_service.as_deref(), svc).await? {
            Ensured::Applied(answer) => Some(answer),
            Ensured::Unchanged => live_service.map(|s| s.as_ref().clone()),
        },
        None => {
            let owner_uid = statefulset
                .metadata
                .owner_references
                .iter()
                .flatten()
                .map(|o| o.uid.clone())
                .next()
                .unwrap_or_default();
            ensure_absent(client, live_service.as_deref(), &owner_uid).await?;
            None
        }
    };
    let live = get(&stores.statefulsets, namespace, &child);
    ensure(client, live.as_deref(), statefulset).await?;
    Ok(Applied { service })
}
