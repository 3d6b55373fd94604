//! Apply: server-side apply of the desired set, and read back of what the console needs.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Client;

use super::build::Desired;
use crate::Result;
use crate::controller::applied::AppliedCache;
use crate::controller::apply::{apply_cached, ensure_absent};
use crate::controller::names;

/// What the API server holds after the apply.
#[derive(Clone, Debug)]
pub struct Applied {
    pub statefulset: StatefulSet,
    pub service: Option<Service>,
    pub network_policy: NetworkPolicy,
}

/// Applies every desired object (skipping those `cache` knows unchanged). The desired set is
/// destructured completely, so a new kind of child object does not compile until it is applied
/// here.
pub async fn apply_all(
    client: &Client,
    cache: &AppliedCache,
    namespace: &str,
    engine: &str,
    desired: Desired,
) -> Result<Applied> {
    let Desired {
        statefulset,
        service,
        network_policy,
    } = desired;
    // The policy first: a pod never runs unfenced, and a direction switch swaps policies
    // before the pod restarts in the new direction.
    let network_policy = apply_cached(client, cache, &network_policy).await?;
    let service = match service {
        Some(svc) => Some(apply_cached(client, cache, &svc).await?),
        None => {
            ensure_absent::<Service>(client, cache, namespace, &names::engine_objects(engine))
                .await?;
            None
        }
    };
    let statefulset = apply_cached(client, cache, &statefulset).await?;
    Ok(Applied {
        statefulset,
        service,
        network_policy,
    })
}
