//! Server-side apply of child objects with the operator's one field manager.
//!
//! The operator writes and deletes only what is its own ([`names::is_ours`]): before a child
//! is force-applied for the first time (or again after a watch event, which may be a deletion
//! and a re-creation by someone else), a read checks that no same-named object of someone
//! else's is there; a delete names the uid it read, so it removes exactly that object.

use std::fmt::Debug;

use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::applied::{AppliedCache, Digest, ObjectKey};
use super::names::{self, MANAGER};
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
        if !cache.holds(&key) {
            // Not known as applied by this operator since the last watch event: look first.
            check_ours(client, obj).await?;
        }
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

/// The uid and kind of the controller owner `obj` is built with (every child has one).
fn owner_of<K: Resource>(obj: &K) -> (String, String) {
    obj.meta()
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| (o.uid.clone(), o.kind.clone()))
        .unwrap_or_default()
}

/// Fails with [`Error::NotOwned`] when an object named like `obj` exists and is not the
/// operator's (see [`names::is_ours`]); absent or ours is fine.
pub async fn check_ours<K>(client: &Client, obj: &K) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let (owner_uid, owner_kind) = owner_of(obj);
    match get_opt::<K>(client, &ns, &name).await? {
        Some(existing) if !names::is_ours(existing.meta(), &owner_uid) => {
            Err(Error::not_owned(&K::kind(&()), &ns, &name, &owner_kind))
        }
        _ => Ok(()),
    }
}

/// Makes sure a namespaced object of the operator's does not exist: a read first, a delete of
/// exactly what was read when it is there and ours (`owner_uid`, or the managed-by label), and
/// nothing at all when `cache` knows it absent since the last watch event. A same-named object
/// of someone else's is left alone.
pub async fn ensure_absent<K>(
    client: &Client,
    cache: &AppliedCache,
    namespace: &str,
    name: &str,
    owner_uid: &str,
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
            Ok(Some(foreign)) if !names::is_ours(foreign.meta(), owner_uid) => {
                tracing::info!(kind = %K::kind(&()), %namespace, %name, "not the operator's: left alone");
                Ok(())
            }
            Ok(Some(existing)) => delete_exactly(client, &existing).await,
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

/// Deletes exactly `existing` (a namespaced object just read): the request names its uid and
/// resourceVersion, so an object replaced or changed since is not deleted (409). Gone is fine.
pub async fn delete_exactly<K>(client: &Client, existing: &K) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let namespace = existing.namespace().unwrap_or_default();
    let name = existing.name_any();
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    let params = DeleteParams::default().preconditions(Preconditions {
        uid: existing.meta().uid.clone(),
        resource_version: existing.meta().resource_version.clone(),
    });
    match api.delete(&name, &params).await {
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
