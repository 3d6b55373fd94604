//! Leader election on a `coordination.k8s.io/v1` Lease, so that two replicas are safe.
//!
//! A replica holds the Lease while it renews it within `leaseDurationSeconds`. Another replica
//! takes it over only once it has expired. Writes use the Lease's `resourceVersion`, so two
//! replicas racing for it cannot both win. A leader that fails to renew before its lease
//! expires stops reconciling.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};

use crate::{Error, Result};

/// What to do with the Lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No Lease exists: create it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Someone else held it and it expired (or was released): take it over.
    TakeOver,
    /// Someone else holds a valid Lease.
    Wait,
}

/// Decides from the current Lease (pure, for tests).
pub fn decide(lease: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Decision {
    let Some(spec) = lease else {
        return Decision::Create;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder == identity {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::TakeOver;
    }
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
    let expired = match spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) {
        Some(t) => t.0.checked_add(duration).map_or(true, |until| until < now),
        None => true,
    };
    if expired {
        Decision::TakeOver
    } else {
        Decision::Wait
    }
}

/// A Lease-based elector.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease_duration: Duration,
}

impl LeaderElector {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        lease_duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            lease_duration,
        }
    }

    /// Tries once to become (or stay) the leader.
    pub async fn try_acquire_or_renew(&self) -> Result<bool> {
        let now = Timestamp::now();
        let current = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(Error::kube("get leader Lease"))?;
        let decision = decide(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.identity,
            now,
        );
        let duration = i32::try_from(self.lease_duration.as_secs()).unwrap_or(15);
        let result = match (decision, current) {
            (Decision::Wait, _) => return Ok(false),
            (Decision::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(duration),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                self.api
                    .create(&PostParams::default(), &lease)
                    .await
                    .map(|_| ())
            }
            (decision, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                if decision == Decision::TakeOver {
                    spec.holder_identity = Some(self.identity.clone());
                    spec.acquire_time = Some(MicroTime(now));
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.lease_duration_seconds = Some(duration);
                spec.renew_time = Some(MicroTime(now));
                // Carries resourceVersion: a concurrent writer makes this fail with 409.
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                    .map(|_| ())
            }
            (_, None) => return Ok(false),
        };
        match result {
            Ok(()) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(Error::kube("write leader Lease")(e)),
        }
    }

    /// Gives the Lease up (on shutdown) so a standby takes over at once.
    pub async fn release(&self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await
            && let Some(spec) = lease.spec.as_mut()
            && spec.holder_identity.as_deref() == Some(self.identity.as_str())
        {
            spec.holder_identity = None;
            if let Err(e) = self
                .api
                .replace(&self.name, &PostParams::default(), &lease)
                .await
            {
                tracing::warn!(error = %e, "cannot release the leader Lease");
            }
        }
    }

    /// Waits until this replica is the leader.
    pub async fn acquire(&self) {
        let retry = self.lease_duration / 5;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return,
                Ok(false) => tracing::debug!("another replica leads; waiting"),
                Err(e) => tracing::warn!(error = %e, "leader election failed; retrying"),
            }
            tokio::time::sleep(retry.max(Duration::from_millis(500))).await;
        }
    }

    /// Renews the Lease until a renewal has failed for longer than the lease lasts; returns
    /// then (leadership lost).
    pub async fn keep(&self) {
        let every = (self.lease_duration / 3).max(Duration::from_millis(500));
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(every).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::error!("another replica took the leader Lease");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "cannot renew the leader Lease"),
            }
            if last_ok.elapsed() >= self.lease_duration {
                tracing::error!("leader Lease not renewed in time");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(
                Timestamp::from_second(renewed).unwrap_or(Timestamp::UNIX_EPOCH),
            )),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn decisions() {
        let now = Timestamp::from_second(1000).unwrap_or(Timestamp::UNIX_EPOCH);
        assert_eq!(decide(None, "a", now), Decision::Create);
        assert_eq!(decide(Some(&spec("a", 990)), "a", now), Decision::Renew);
        assert_eq!(decide(Some(&spec("b", 990)), "a", now), Decision::Wait);
        assert_eq!(decide(Some(&spec("b", 980)), "a", now), Decision::TakeOver);
        assert_eq!(decide(Some(&spec("", 999)), "a", now), Decision::TakeOver);
    }
}
