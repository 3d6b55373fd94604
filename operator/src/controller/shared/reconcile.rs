//! The frame every reconcile runs in: a span, the reconcile metrics, the finalizer, and the
//! error policy's backoff.
//!
//! The backoff after a failure is read from the object itself, not counted in memory: a
//! failing reconcile writes `Ready=False` first, so the time since that condition's last
//! transition is how long the object has been failing. Waiting as long again before the next
//! try doubles the wait at every failure (5 s, 10 s, 20 s … up to 5 minutes), and a restarted
//! operator resumes the same schedule.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{Instrument, warn};

use crate::controller::Context;
use crate::crd::conditions::{self, READY};
use crate::crd::{Console, ScanEngine};
use crate::{Error, Result};

/// Shortest wait after a failure.
pub const MIN_BACKOFF: Duration = Duration::from_secs(5);
/// Longest wait after a failure.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// A kind the operator reconciles.
pub trait Reconciled:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// The kind, for spans and metrics.
    const KIND: &'static str;
    /// The conditions of its status as last written.
    fn conditions(&self) -> &[Condition];
}

impl Reconciled for ScanEngine {
    const KIND: &'static str = "ScanEngine";
    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map_or(&[], |s| &s.conditions)
    }
}

impl Reconciled for Console {
    const KIND: &'static str = "Console";
    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map_or(&[], |s| &s.conditions)
    }
}

/// Runs `handle` for `obj` under `finalizer_name` (kube-runtime's finalizer helper: the apply
/// branch once the finalizer is in place, the cleanup branch once the object is being deleted),
/// in a span and timed.
pub async fn run<K, F, Fut>(
    ctx: &Context,
    obj: Arc<K>,
    finalizer_name: &str,
    handle: F,
) -> Result<Action>
where
    K: Reconciled,
    F: FnOnce(Finalizer<K>) -> Fut,
    Fut: Future<Output = Result<Action>>,
{
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let span = tracing::info_span!("reconcile", kind = K::KIND, namespace = %ns, name = %name);
    async move {
        // Until every store holds its first listing, an absent object may only be unlisted.
        ctx.stores.ready().await;
        let _timer = ctx.metrics.reconcile_started(K::KIND);
        let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
        finalizer(&api, finalizer_name, obj, handle)
            .await
            .map_err(Error::from)
    }
    .instrument(span)
    .await
}

/// The error policy of every controller: logs and counts the failure, and retries after
/// [`backoff`].
pub fn error_policy<K: Reconciled>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(kind = K::KIND, namespace = %obj.namespace().unwrap_or_default(), name = %obj.name_any(), error = %error, "reconcile failed");
    ctx.metrics.reconcile_failed(K::KIND, error);
    Action::requeue(backoff(failing_since(obj.conditions()), ctx.now()))
}

/// When `Ready` last became False, if it is False.
pub fn failing_since(conds: &[Condition]) -> Option<Timestamp> {
    conditions::find(conds, READY)
        .filter(|c| c.status == "False")
        .map(|c| c.last_transition_time.0)
}

/// How long to wait before retrying an object failing since `since`: as long as it has been
/// failing, within [`MIN_BACKOFF`] and [`MAX_BACKOFF`].
pub fn backoff(since: Option<Timestamp>, now: Timestamp) -> Duration {
    let failing = since
        .and_then(|s| Duration::try_from(now.duration_since(s)).ok())
        .unwrap_or(Duration::ZERO);
    failing.clamp(MIN_BACKOFF, MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_767_225_600 + second).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn the_wait_doubles_with_each_failure_and_is_bounded() {
        assert_eq!(backoff(None, at(0)), MIN_BACKOFF, "no condition yet");
        assert_eq!(backoff(Some(at(0)), at(1)), MIN_BACKOFF);
        // Retried at 5 s, then at 5 + 5 = 10 s, then at 10 + 10 = 20 s.
        assert_eq!(backoff(Some(at(0)), at(5)), Duration::from_secs(5));
        assert_eq!(backoff(Some(at(0)), at(10)), Duration::from_secs(10));
        assert_eq!(backoff(Some(at(0)), at(20)), Duration::from_secs(20));
        assert_eq!(backoff(Some(at(0)), at(86_400)), MAX_BACKOFF);
        assert_eq!(backoff(Some(at(10)), at(0)), MIN_BACKOFF, "clock skew");
    }
}
