//! Server-side apply of child objects with the operator's one field manager.

use std::fmt::Debug;

use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::applied::{AppliedCache, Digest, ObjectKey};
use super::names::MANAGER;
use crate::{Error, Result};

/// How often a child is applied in one reconcile while it keeps changing during the apply (an
/// event other than the apply's own arrived before its answer). After the last, the object is
/// left unknown to the cache, so the next reconcile applies it again; by then the other
/// writer's change (a StatefulSet's status during a rollout, say) has usually settled.
pub const APPLY_ATTEMPTS: usize = 3;

/// Applies `obj` (namespaced, named) with server-side apply and returns what the API server
/// holds afterwards.
pub async fn apply<K>(client: &Client, obj: &K) -> Result<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    let mut body = serde_json::to_value(obj).map_err(|e| Error::InvalidSpec(e.to_string()))?;
    if let Some(map) = body.as_object_mut() {
        map.insert("apiVersion".into(), K::api_version(&()).into());
        map.insert("kind".into(), K::kind(&()).into());
        map.remove("status");
    }
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(Error::kube(format!("apply {} {ns}/{name}", K::kind(&()))))
}

/// Like [`apply`], but skips the request when `cache` says the same body was applied and no
/// watch event touched the object since (see [`super::applied`]). Remembers only a digest.
pub async fn apply_cached<K>(client: &Client, cache: &AppliedCache, obj: &K) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    apply_through_cache(client, cache, obj, false)
        .await
        .map(drop)
}

/// Like [`apply_cached`], and returns what the API server holds: the answer of the apply, or
/// the one remembered from the last apply when nothing changed since.
pub async fn apply_cached_read_back<K>(client: &Client, cache: &AppliedCache, obj: &K) -> Result<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    match apply_through_cache(client, cache, obj, true).await? {
        Some(read_back) => Ok(read_back),
        // Not reached: with `keep`, the object is always returned.
        None => apply(client, obj).await,
    }
}

async fn apply_through_cache<K>(
    client: &Client,
    cache: &AppliedCache,
    obj: &K,
    keep: bool,
) -> Result<Option<K>>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let key = ObjectKey::new(
        &K::kind(&()),
        &obj.namespace().unwrap_or_default(),
        &obj.name_any(),
    );
    let body = serde_json::to_value(obj).map_err(|e| Error::InvalidSpec(e.to_string()))?;
    // Whether the answer is kept is part of the digest: a read-back never meets a bare entry.
    let digest = Digest::of(Some(&body)).keeping(keep);
    match cache.lookup(&key, digest) {
        Some(None) if !keep => return Ok(None),
        Some(Some(known)) if keep => {
            if let Ok(obj) = serde_json::from_value::<K>(known) {
                return Ok(Some(obj));
            }
        }
        _ => {}
    }
    let mut attempt = 1;
    loop {
        cache.begin(&key);
        let applied = match apply(client, obj).await {
            Ok(applied) => applied,
            Err(e) => {
                cache.forget(&key);
                return Err(e);
            }
        };
        let kept = if keep {
            serde_json::to_value(&applied).ok()
        } else {
            None
        };
        if cache.finish(&key, digest, kept, applied.resource_version()) || attempt == APPLY_ATTEMPTS
        {
            return Ok(Some(applied));
        }
        tracing::debug!(kind = %K::kind(&()), name = %obj.name_any(), attempt, "changed while applied; applying again");
        attempt += 1;
    }
}

/// Makes sure a namespaced object does not exist: a read first, a delete only when it is
/// there, and nothing at all when `cache` knows it absent since the last watch event.
pub async fn ensure_absent<K>(
    client: &Client,
    cache: &AppliedCache,
    namespace: &str,
    name: &str,
) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let key = ObjectKey::new(&K::kind(&()), namespace, name);
    let digest = Digest::absent();
    if let Some(None) = cache.lookup(&key, digest) {
        return Ok(());
    }
    let mut attempt = 1;
    loop {
        cache.begin(&key);
        let result = match get_opt::<K>(client, namespace, name).await {
            Ok(Some(terminating)) if terminating.meta().deletion_timestamp.is_some() => {
                // Going away already; its deletion event wakes the owner to look again.
                cache.forget(&key);
                return Ok(());
            }
            Ok(Some(_)) => delete_if_exists::<K>(client, namespace, name).await,
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            cache.forget(&key);
            return Err(e);
        }
        // Kept only when no event came in meanwhile; after a delete, the deletion's own event
        // makes the next round read again and find the object gone.
        if cache.finish(&key, digest, None, None) || attempt == APPLY_ATTEMPTS {
            return Ok(());
        }
        attempt += 1;
    }
}

/// Deletes a namespaced object; absent is fine.
pub async fn delete_if_exists<K>(client: &Client, namespace: &str, name: &str) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(Error::kube(format!(
            "delete {} {namespace}/{name}",
            K::kind(&())
        ))(e)),
    }
}

/// Gets a namespaced object; `None` when absent.
pub async fn get_opt<K>(client: &Client, namespace: &str, name: &str) -> Result<Option<K>>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    api.get_opt(name).await.map_err(Error::kube(format!(
        "get {} {namespace}/{name}",
        K::kind(&())
    )))
}

/// Writes `status` of a custom resource with server-side apply.
pub async fn apply_status<K>(client: &Client, obj: &K, status: &impl Serialize) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(Error::kube(format!(
        "write status of {} {ns}/{name}",
        K::kind(&())
    )))?;
    Ok(())
}
