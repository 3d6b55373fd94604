//! Keeps a valid pairing shared secret in the Console's `<c>-console-shared-secret` Secret.
//!
//! Each reconcile asks the console how long the current secret has left. When none is valid,
//! or less than the renewal margin is left, the operator revokes it and has the console make a
//! new one; otherwise it makes sure the Secret holds the current value. The value only ever
//! travels from the console API into the Secret's data: never into status, events or logs.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::Result;
use crate::console_api::{ConsoleApi, SecretString};
use crate::controller::names::{
    self, EXPIRES_AT_ANNOTATION, LIFETIME_ANNOTATION, SHARED_SECRET_KEY,
};
use crate::controller::shared::apply::apply;
use crate::crd::console::SharedSecretStatus;

/// Lifetime assumed when the console has not told us (the seeds: 60 minutes).
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// Expiry drift tolerated before the Secret is rewritten.
const DRIFT: i64 = 120;

/// What the reconcile learned.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub status: SharedSecretStatus,
    /// Whether a new secret was made now.
    pub renewed: bool,
    /// Whether the Secret object was written now.
    pub written: bool,
    /// When to look again.
    pub check_again_in: Duration,
}

/// The margin actually used: never more than half the secret's lifetime, so consoles with
/// short-lived secrets (tests) do not renew on every reconcile.
pub fn effective_margin(margin: Duration, lifetime: Duration) -> Duration {
    margin.min(lifetime / 2)
}

/// When a secret with `ttl` seconds left at `now` expires, in whole seconds: the status field
/// is a Kubernetes time (whole seconds), so a fraction would make every refresh see a change
/// and write the same status again.
pub fn expiry(now: Timestamp, ttl: u64) -> Timestamp {
    whole_seconds(
        now.checked_add(SignedDuration::from_secs(
            i64::try_from(ttl).unwrap_or(i64::MAX),
        ))
        .unwrap_or(now),
    )
}

fn whole_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

fn stored(secret: &Secret) -> (Option<Vec<u8>>, Option<Timestamp>, Option<u64>) {
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get(SHARED_SECRET_KEY))
        .map(|v| v.0.clone());
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    let expires = annotations
        .get(EXPIRES_AT_ANNOTATION)
        .and_then(|v| v.parse::<Timestamp>().ok())
        .map(whole_seconds);
    let lifetime = annotations
        .get(LIFETIME_ANNOTATION)
        .and_then(|v| v.parse::<u64>().ok());
    (value, expires, lifetime)
}

/// The Secret object holding `value`.
pub fn secret_object(
    console: &str,
    namespace: &str,
    owner: OwnerReference,
    value: &SecretString,
    expires_at: Timestamp,
    lifetime: u64,
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(names::shared_secret(console)),
            namespace: Some(namespace.into()),
            labels: Some(names::console_labels(console)),
            annotations: Some(BTreeMap::from([
                (EXPIRES_AT_ANNOTATION.to_string(), expires_at.to_string()),
                (LIFETIME_ANNOTATION.to_string(), lifetime.to_string()),
            ])),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            SHARED_SECRET_KEY.to_string(),
            ByteString(value.expose().as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

/// Makes sure the Secret holds a shared secret valid for longer than the margin.
pub async fn ensure(
    ctx: &crate::controller::Context,
    api: &dyn ConsoleApi,
    console: &str,
    namespace: &str,
    owner: OwnerReference,
    margin: Duration,
) -> Result<Outcome> {
    let (client, now) = (&ctx.client, ctx.now());
    let secret_name = names::shared_secret(console);
    let existing = ctx.stores.secret(namespace, &secret_name);
    if let Some(foreign) = existing
        .as_ref()
        .filter(|s| !names::is_ours(&s.metadata, &owner.uid))
    {
        // Someone else's Secret of that name: neither read as ours nor overwritten.
        return Err(crate::Error::not_owned(
            "Secret",
            namespace,
            &foreign.metadata.name.clone().unwrap_or_default(),
            "Console",
        ));
    }
    let (stored_value, stored_expiry, stored_lifetime) = existing
        .as_deref()
        .map(stored)
        .unwrap_or((None, None, None));
    let lifetime = Duration::from_secs(stored_lifetime.unwrap_or(DEFAULT_LIFETIME.as_secs()));
    let margin = effective_margin(margin, lifetime);

    let ttl = api.shared_secret_ttl().await?;
    let (value, ttl, lifetime, renewed) = match ttl {
        Some(ttl) if Duration::from_secs(ttl) > margin => {
            let value = match api.shared_secret().await? {
                Some(v) => v,
                None => api.create_shared_secret().await?,
            };
            (value, ttl, lifetime.as_secs(), false)
        }
        valid => {
            if valid.is_some() {
                api.revoke_shared_secret().await?;
            }
            let value = api.create_shared_secret().await?;
            let ttl = api
                .shared_secret_ttl()
                .await?
                .unwrap_or(DEFAULT_LIFETIME.as_secs());
            (value, ttl, ttl, true)
        }
    };

    let expires_at = expiry(now, ttl);
    let same_value = stored_value.as_deref().is_some_and(|v| value.same_as(v));
    let same_expiry =
        stored_expiry.is_some_and(|e| (e.as_second() - expires_at.as_second()).abs() <= DRIFT);
    let expires_at = if same_value && same_expiry {
        stored_expiry.unwrap_or(expires_at)
    } else {
        expires_at
    };
    let written = !(same_value && same_expiry && stored_lifetime.is_some());
    if written {
        apply(
            client,
            &secret_object(console, namespace, owner, &value, expires_at, lifetime),
        )
        .await?;
    }
    let margin = effective_margin(margin, Duration::from_secs(lifetime));
    let check_again_in = Duration::from_secs(ttl)
        .saturating_sub(margin)
        .max(Duration::from_secs(5));
    Ok(Outcome {
        status: SharedSecretStatus {
            secret_name,
            expires_at: Some(Time(expires_at)),
        },
        renewed,
        written,
        check_again_in,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_in_whole_seconds_and_survives_a_round_trip() {
        let now =
            Timestamp::from_nanosecond(1_767_225_600_123_456_789).unwrap_or(Timestamp::UNIX_EPOCH);
        let at = expiry(now, 3600);
        assert_eq!(at.as_second(), 1_767_225_600 + 3600);
        assert_eq!(at.subsec_nanosecond(), 0);
        // As the status stores it (a Kubernetes time) and reads it back: unchanged.
        let time = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at);
        let back: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time =
            serde_json::from_value(serde_json::to_value(&time).unwrap_or_default())
                .unwrap_or(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
        assert_eq!(back.0, at);
        // Which is not so for a fraction of a second: the status would differ on every refresh.
        let fractional = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now);
        let back: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time =
            serde_json::from_value(serde_json::to_value(&fractional).unwrap_or_default())
                .unwrap_or(fractional.clone());
        assert_ne!(back.0, now);
    }

    #[test]
    fn margin_never_exceeds_half_the_lifetime() {
        assert_eq!(
            effective_margin(Duration::from_secs(900), Duration::from_secs(3600)),
            Duration::from_secs(900)
        );
        assert_eq!(
            effective_margin(Duration::from_secs(900), Duration::from_secs(120)),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn secret_object_keeps_the_value_in_data_only() {
        let owner = OwnerReference {
            name: "main".into(),
            ..OwnerReference::default()
        };
        let s = secret_object(
            "main",
            "scanning",
            owner,
            &SecretString::new("v4lue"),
            Timestamp::UNIX_EPOCH,
            3600,
        );
        assert_eq!(
            s.metadata.name.as_deref(),
            Some("main-console-shared-secret")
        );
        let meta = serde_json::to_string(&s.metadata).unwrap_or_default();
        assert!(!meta.contains("v4lue"));
        assert_eq!(
            s.data.and_then(|d| d.get("shared-secret").cloned()),
            Some(ByteString(b"v4lue".to_vec()))
        );
    }
}
