//! Server-side apply of child objects with the operator's one field manager, against what the
//! stores hold.
//!
//! [`ensure`] sends a child only when the object in its store differs from the desired one
//! ([`in_sync`]): a reconcile that changes nothing makes no write request, however often it
//! runs, and a restarted operator decides exactly as a long-running one. The desired body
//! carries a hash of itself in [`APPLIED_HASH_ANNOTATION`], so a field the operator stopped
//! setting (which a comparison of the desired fields alone cannot see) is applied away too.
//!
//! The operator writes and deletes only what is its own ([`names::is_ours`]): a child missing
//! from its store (the stores hold only objects with the operator's managed-by label) is read
//! once before it is created, so a same-named object of someone else's is never taken over;
//! a delete names the uid it read, so it removes exactly that object.

use std::fmt::Debug;

use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use serde_json::Value;

use crate::controller::names::{self, MANAGER};
use crate::{Error, Result};

/// Annotation of every child: a hash of the body the operator last applied.
pub const APPLIED_HASH_ANNOTATION: &str = "scanengine.dev/applied-hash";

/// A namespaced kind the operator reads, writes or deletes (every child kind and its own
/// custom resources).
pub trait Child:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
{
}

impl<K> Child for K where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned
{
}

/// What [`ensure`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum Ensured<K> {
    /// The store's object already is the desired one: no request was made.
    Unchanged,
    /// Applied; what the API server holds now.
    Applied(K),
}

/// `desired` with [`APPLIED_HASH_ANNOTATION`] set to the hash of the rest of its body.
pub fn stamped<K: Resource + Serialize>(mut desired: K) -> K {
    desired.annotations_mut().remove(APPLIED_HASH_ANNOTATION);
    let hash = serde_json::to_vec(&desired)
        .map(|body| {
            use std::hash::{DefaultHasher, Hash, Hasher};
            let mut h = DefaultHasher::new();
            body.hash(&mut h);
            format!("{:016x}", h.finish())
        })
        .unwrap_or_default();
    desired
        .annotations_mut()
        .insert(APPLIED_HASH_ANNOTATION.into(), hash);
    desired
}

/// Applies `desired` (stamped with [`stamped`]) unless `live`, the object in the store, already
/// holds it. A child missing from the store is checked first ([`check_ours`]).
pub async fn ensure<K>(client: &Client, live: Option<&K>, desired: K) -> Result<Ensured<K>>
where
    K: Child,
{
    let desired = stamped(desired);
    match live {
        Some(live) => {
            let (owner_uid, owner_kind) = owner_of(&desired);
            if !names::is_ours(live.meta(), &owner_uid) {
                return Err(Error::not_owned(
                    &K::kind(&()),
                    &live.namespace().unwrap_or_default(),
                    &live.name_any(),
                    &owner_kind,
                ));
            }
            if live.meta().deletion_timestamp.is_none() && in_sync(&desired, live) {
                return Ok(Ensured::Unchanged);
            }
            tracing::debug!(kind = %K::kind(&()), name = %live.name_any(), "differs from its store copy: applying");
        }
        None => check_ours(client, &desired).await?,
    }
    apply(client, &desired).await.map(Ensured::Applied)
}

/// Makes sure the operator's child `live` (from the store) does not exist: deletes exactly it.
/// Nothing in the store is nothing of the operator's (a same-named object someone else made is
/// left alone); an object already being deleted is left to finish.
pub async fn ensure_absent<K>(client: &Client, live: Option<&K>, owner_uid: &str) -> Result<()>
where
    K: Child,
{
    match live {
        Some(obj)
            if obj.meta().deletion_timestamp.is_none() && names::is_ours(obj.meta(), owner_uid) =>
        {
            delete_exactly(client, obj).await
        }
        _ => Ok(()),
    }
}

/// Whether `live` holds every field of `desired` with the same value (quantities compared by
/// value: the API server prints `1024Mi` as `1Gi`). Fields only `live` has (defaults, other
/// managers' fields, status) do not count.
pub fn in_sync<K: Serialize>(desired: &K, live: &K) -> bool {
    match (serde_json::to_value(desired), serde_json::to_value(live)) {
        (Ok(d), Ok(l)) => contains(&l, &d),
        _ => false,
    }
}

fn contains(live: &Value, desired: &Value) -> bool {
    match (desired, live) {
        (Value::Null, _) => true,
        (Value::Object(d), Value::Object(l)) => d.iter().all(|(k, dv)| match l.get(k) {
            Some(lv) => contains(lv, dv),
            None => is_empty(dv),
        }),
        (Value::Object(d), Value::Null) => d.values().all(is_empty),
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(dv, lv)| contains(lv, dv))
        }
        (Value::Array(d), Value::Null) => d.is_empty(),
        (Value::String(d), Value::String(l)) => d == l || same_quantity(d, l),
        (Value::Number(d), Value::Number(l)) => d.as_f64() == l.as_f64(),
        (d, l) => d == l,
    }
}

/// What the API server drops or never prints: `null`, `{}`, `[]`.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.values().all(is_empty),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Whether two strings are the same Kubernetes quantity (`1Gi` and `1024Mi`, `1` and `1000m`).
fn same_quantity(a: &str, b: &str) -> bool {
    match (quantity(a), quantity(b)) {
        (Some(x), Some(y)) => (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs()),
        _ => false,
    }
}

/// The value of a quantity string (a number and a binary or decimal suffix), if it is one.
/// A few lines: only equality matters here, not the full grammar's error messages.
fn quantity(s: &str) -> Option<f64> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let n: f64 = number.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        "Ei" => 1024.0f64.powi(6),
        _ => return None,
    };
    Some(n * scale)
}

/// Applies `obj` (namespaced, named) with server-side apply and returns what the API server
/// holds afterwards.
pub async fn apply<K>(client: &Client, obj: &K) -> Result<K>
where
    K: Child,
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
    K: Child,
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

/// Deletes exactly `existing` (a namespaced object just read): the request names its uid and
/// resourceVersion, so an object replaced or changed since is not deleted (409). Gone is fine.
pub async fn delete_exactly<K>(client: &Client, existing: &K) -> Result<()>
where
    K: Child,
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
    K: Child,
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
    K: Child,
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
