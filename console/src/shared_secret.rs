//! The pairing shared secret's lifecycle (docs/contracts.md §4): one current secret at a time,
//! usable by many engines until it expires (`--shared-secret-ttl`, 60 minutes by default) or is
//! revoked. The value is only ever returned by the API and compared in constant time; it never
//! reaches a log line.

use std::time::Duration;

use rand::RngCore;
use scan_engine_protocol::{SharedSecret, messages::RejectReason};
use tokio::sync::Mutex;

use crate::{
    clock::{Clock, Millis},
    error::Result,
    store::{SecretRecord, Store},
};

/// The valid secret and when it stops being valid.
#[derive(Clone, PartialEq, Eq)]
pub struct CurrentSecret {
    pub value: SharedSecret,
    pub expires_at: Millis,
}

impl std::fmt::Debug for CurrentSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CurrentSecret")
            .field("value", &self.value)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Generates, serves, revokes and checks shared secrets.
#[derive(Debug)]
pub struct SharedSecrets {
    store: Store,
    clock: Clock,
    ttl: Duration,
    /// Serialises "current or new" so that two simultaneous requests get the same secret.
    create: Mutex<()>,
}

impl SharedSecrets {
    pub fn new(store: Store, clock: Clock, ttl: Duration) -> Self {
        Self {
            store,
            clock,
            ttl,
            create: Mutex::new(()),
        }
    }

    /// The valid secret, if there is one.
    pub async fn current(&self) -> Result<Option<CurrentSecret>> {
        let now = self.clock.now();
        Ok(valid(&self.store.secrets().await?, now))
    }

    /// The valid secret, or a fresh one when there is none.
    pub async fn current_or_new(&self) -> Result<CurrentSecret> {
        let _guard = self.create.lock().await;
        if let Some(c) = self.current().await? {
            return Ok(c);
        }
        let now = self.clock.now();
        let expires_at = now.saturating_add(self.ttl.as_millis() as i64);
        let value = generate();
        self.store
            .insert_secret(value.clone(), now, expires_at)
            .await?;
        tracing::info!(expires_at = %crate::clock::rfc3339(expires_at), "generated a new pairing shared secret");
        Ok(CurrentSecret {
            value: SharedSecret::new(value),
            expires_at,
        })
    }

    /// Revokes every secret; engines that are already paired are not affected.
    pub async fn revoke(&self) -> Result<()> {
        self.store.revoke_secrets().await?;
        tracing::info!("revoked the pairing shared secret");
        Ok(())
    }

    /// Whole seconds the valid secret has left, if there is one.
    pub async fn time_to_live(&self) -> Result<Option<u64>> {
        let now = self.clock.now();
        Ok(self
            .current()
            .await?
            .map(|c| ((c.expires_at - now).max(0) / 1000) as u64))
    }

    /// Whether an engine may pair with `presented`.
    pub async fn check(&self, presented: &SharedSecret) -> Result<Result<(), RejectReason>> {
        let now = self.clock.now();
        Ok(verify(&self.store.secrets().await?, presented, now))
    }
}

fn is_valid(r: &SecretRecord, now: Millis) -> bool {
    !r.revoked && now < r.expires_at
}

/// The newest valid secret among `records`.
fn valid(records: &[SecretRecord], now: Millis) -> Option<CurrentSecret> {
    records
        .iter()
        .filter(|r| is_valid(r, now))
        .max_by_key(|r| r.id)
        .map(|r| CurrentSecret {
            value: SharedSecret::new(r.value.clone()),
            expires_at: r.expires_at,
        })
}

/// The pairing decision. Every stored secret is compared (in constant time) so that the time
/// taken does not depend on which one, if any, matched.
pub fn verify(
    records: &[SecretRecord],
    presented: &SharedSecret,
    now: Millis,
) -> Result<(), RejectReason> {
    let mut matched: Option<&SecretRecord> = None;
    for r in records {
        if SharedSecret::new(r.value.clone()).constant_time_eq(presented) && matched.is_none() {
            matched = Some(r);
        }
    }
    match matched {
        Some(r) if is_valid(r, now) => Ok(()),
        Some(r) if !r.revoked => Err(RejectReason::ExpiredSecret),
        _ if valid(records, now).is_some() => Err(RejectReason::InvalidSecret),
        _ => Err(RejectReason::NoSharedSecret),
    }
}

/// A fresh secret: 160 random bits as upper-case hex in groups of four (`1A2B-3C4D-…`).
pub fn generate() -> String {
    let mut bytes = [0u8; 20];
    rand::rng().fill_bytes(&mut bytes);
    let hex = hex::encode_upper(bytes);
    hex.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(ttl_secs: u64) -> (SharedSecrets, Clock) {
        let clock = Clock::manual(1_000_000);
        let s = SharedSecrets::new(
            Store::open_in_memory().unwrap(),
            clock.clone(),
            Duration::from_secs(ttl_secs),
        );
        (s, clock)
    }

    #[test]
    fn generated_secrets_are_grouped_and_distinct() {
        let a = generate();
        assert_eq!(a.len(), 49);
        assert!(
            a.split('-')
                .all(|g| g.len() == 4 && g.bytes().all(|b| b.is_ascii_hexdigit()))
        );
        assert_ne!(a, generate());
    }

    #[tokio::test]
    async fn lifecycle_create_reuse_expire_renew() {
        let (s, clock) = secrets(60);
        assert!(s.current().await.unwrap().is_none());
        assert!(s.time_to_live().await.unwrap().is_none());
        let first = s.current_or_new().await.unwrap();
        assert_eq!(
            s.current_or_new().await.unwrap(),
            first,
            "a valid secret is reused"
        );
        assert_eq!(s.time_to_live().await.unwrap(), Some(60));
        assert_eq!(s.check(&first.value).await.unwrap(), Ok(()));

        clock.advance(Duration::from_secs(59));
        assert_eq!(s.time_to_live().await.unwrap(), Some(1));
        clock.advance(Duration::from_secs(1));
        assert!(s.current().await.unwrap().is_none(), "expired");
        assert!(s.time_to_live().await.unwrap().is_none());
        assert_eq!(
            s.check(&first.value).await.unwrap(),
            Err(RejectReason::ExpiredSecret)
        );
        assert_eq!(
            s.check(&SharedSecret::new("nope")).await.unwrap(),
            Err(RejectReason::NoSharedSecret)
        );

        let second = s.current_or_new().await.unwrap();
        assert_ne!(second.value.expose(), first.value.expose());
        assert_eq!(
            s.check(&first.value).await.unwrap(),
            Err(RejectReason::ExpiredSecret)
        );
        assert_eq!(
            s.check(&SharedSecret::new("nope")).await.unwrap(),
            Err(RejectReason::InvalidSecret)
        );
    }

    #[tokio::test]
    async fn revoking_leaves_no_secret() {
        let (s, _clock) = secrets(60);
        let c = s.current_or_new().await.unwrap();
        s.revoke().await.unwrap();
        assert!(s.current().await.unwrap().is_none());
        assert_eq!(
            s.check(&c.value).await.unwrap(),
            Err(RejectReason::NoSharedSecret)
        );
        let fresh = s.current_or_new().await.unwrap();
        assert_ne!(fresh.value.expose(), c.value.expose());
        assert_eq!(
            s.check(&c.value).await.unwrap(),
            Err(RejectReason::InvalidSecret)
        );
    }

    #[test]
    fn debug_never_shows_the_value() {
        let c = CurrentSecret {
            value: SharedSecret::new("ABCD-EFGH"),
            expires_at: 0,
        };
        assert!(!format!("{c:?}").contains("ABCD"));
    }
}
