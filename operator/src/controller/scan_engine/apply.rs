//! Apply: server-side apply of the desired set, and read back of what the console needs.

use k8s_openapi::api::core::v1::Service;
use kube::Client;

use super::build::Desired;
use crate::Result;
use crate::controller::applied::AppliedCache;
use crate::controller::apply::{apply_cached, apply_cached_read_back, ensure_absent};
use crate::controller::names;

/// What the reconcile reads back after the apply: the Service (node port, load balancer
/// address), when the engine has one.
#[derive(Clone, Debug)]
pub struct Applied {
    pub service: Option<Service>,
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
    apply_cached(client, cache, &network_policy).await?;
    let service = match service {
        Some(svc) => Some(apply_cached_read_back(client, cache, &svc).await?),
        None => {
            let owner_uid = statefulset
                .metadata
                .owner_references
                .iter()
                .flatten()
                .map(|o| o.uid.clone())
                .next()
                .unwrap_or_default();
            ensure_absent::<Service>(
                client,
                cache,
                namespace,
                &names::engine_objects(engine),
                &owner_uid,
            )
            .await?;
            None
        }
    };
    apply_cached(client, cache, &statefulset).await?;
    Ok(Applied { service })
}
