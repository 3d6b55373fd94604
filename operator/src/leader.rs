//! Leader election on a `coordination.k8s.io/v1` Lease, so that two replicas never reconcile at
//! the same time.
//!
//! The timing follows client-go's `leaderelection`:
//!
//! - **lease duration**: a standby takes the Lease over once its record (holder, renew time, …)
//!   has not changed for this long, measured on the standby's own monotonic clock from when it
//!   first saw that record, not from the holder's `renewTime`, so clock skew between nodes does
//!   not shorten it. A released Lease (no holder) is taken at once.
//! - **renew deadline** (shorter than the lease duration): the leader must have renewed the
//!   Lease within this time since it *sent* its last successful renewal, or it steps down. A
//!   standby first sees that renewal no earlier than the API server wrote it, which is after it
//!   was sent, so the leader stops at least `lease duration − renew deadline` before any standby
//!   may lead.
//! - **retry period** (shorter than the renew deadline): how often the leader renews and a
//!   standby tries to acquire.
//!
//! Every Lease request is bounded by `tokio::time::timeout`: a renewal by the time left until the
//! renew deadline, so a request that hangs cannot carry leadership past it. Writes carry the
//! Lease's `resourceVersion`, so two replicas racing for it cannot both win.
//!
//! Stepping down must not rely on the renew loop running first: a process that was paused (or
//! starved) wakes all its tasks at once. So [`Leadership`] holds the instant the leader's right
//! to write ends (last renewal sent + renew deadline), and [`fenced_client`] and
//! [`FencedConsoles`] refuse the controllers' writes, to the API server and to consoles, from
//! that instant on, whatever the renew loop is doing.
//!
//! Why not a crate: `kube-lease-manager` (0.13, built on kube 5 and k8s-openapi 0.29) resolves
//! in this workspace, but it does not give these guarantees. Its Lease requests carry no
//! timeout, it has no renew deadline (it renews `grace` seconds before expiry and, when that
//! fails, retries with back-off), and its lost-lease signal is sent only after it has read the
//! Lease and seen another holder: a leader cut off from the API server keeps believing it leads
//! until it can read again, which is exactly when a standby may already have taken over. Its
//! durations are also whole seconds only. `kube-runtime` has no elector.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use futures::future::BoxFuture;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};

use crate::console_api::{
    ApiError, ApiErrorKind, ApiResult, Call, ConsoleApi, ConsoleApiFactory, ConsoleConnection,
    ConsoleInfo, Engine, NewEngine, SecretString,
};
use crate::{Error, Result};

/// The durations of the election (validated by `Cli::leader_timing`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How long a Lease is valid without renewal (whole seconds: the Lease stores seconds).
    pub lease_duration: Duration,
    /// How long after its last successful renewal the leader may still act.
    pub renew_deadline: Duration,
    /// How often the leader renews and a standby tries to acquire.
    pub retry_period: Duration,
}

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

/// Decides from the current Lease (pure, for tests). `unchanged_since` is when this replica first
/// saw the Lease's current record ([`Observation`]); the holder's lease duration counts from then.
/// `default_duration` applies when the Lease states none.
pub fn decide(
    lease: Option<&LeaseSpec>,
    identity: &str,
    unchanged_since: Instant,
    now: Instant,
    default_duration: Duration,
) -> Decision {
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
    let duration = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(default_duration, Duration::from_secs);
    match unchanged_since.checked_add(duration) {
        Some(expiry) if now < expiry => Decision::Wait,
        _ => Decision::TakeOver,
    }
}

/// The time left, at `now`, for renewing a leadership whose last successful renewal was sent at
/// `renewed_at`; `None` once the renew deadline has passed: the leader must step down.
pub fn renew_budget(
    renewed_at: Instant,
    renew_deadline: Duration,
    now: Instant,
) -> Option<Duration> {
    let left = renewed_at
        .checked_add(renew_deadline)?
        .checked_duration_since(now)?;
    (!left.is_zero()).then_some(left)
}

/// When this replica first saw the Lease's current record.
#[derive(Debug, Default)]
pub struct Observation {
    seen: Option<(Option<LeaseSpec>, Instant)>,
}

impl Observation {
    /// Notes the record read at `now`; returns since when it has been unchanged.
    pub fn observe(&mut self, record: Option<&LeaseSpec>, now: Instant) -> Instant {
        match &self.seen {
            Some((seen, since)) if seen.as_ref() == record => *since,
            _ => {
                self.seen = Some((record.cloned(), now));
                now
            }
        }
    }
}

/// Until when this replica may write as the leader; shared by the elector and the fences.
#[derive(Debug, Default)]
pub struct Leadership {
    until: Mutex<Option<Instant>>,
}

impl Leadership {
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.until.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this replica may write at `now`.
    pub fn leading_at(&self, now: Instant) -> bool {
        self.slot().is_some_and(|until| now < until)
    }

    fn lead_until(&self, until: Option<Instant>) {
        *self.slot() = until;
    }

    /// Ends leadership at once.
    pub fn end(&self) {
        *self.slot() = None;
    }
}

/// How one attempt at the Lease went.
enum Attempt {
    /// This replica holds the Lease (renewed, created or taken over).
    Leading,
    /// Another replica holds it, or won a race for it.
    Standby,
}

/// A Lease-based elector.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
    observation: Observation,
    /// When the last successful renewal (or acquisition) was sent.
    renewed_at: Option<Instant>,
    leadership: Arc<Leadership>,
}

impl LeaderElector {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timing: Timing,
        leadership: Arc<Leadership>,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            timing,
            observation: Observation::default(),
            renewed_at: None,
            leadership,
        }
    }

    /// One get-decide-write round; the caller bounds it with a timeout.
    async fn attempt(&mut self) -> Result<Attempt> {
        let current = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(Error::kube("get leader Lease"))?;
        let spec = current.as_ref().and_then(|l| l.spec.as_ref());
        let since = self.observation.observe(spec, Instant::now());
        let decision = decide(
            spec,
            &self.identity,
            since,
            Instant::now(),
            self.timing.lease_duration,
        );
        let now = Timestamp::now();
        let seconds = i32::try_from(self.timing.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let result = match (decision, current) {
            (Decision::Wait, _) => return Ok(Attempt::Standby),
            (Decision::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(seconds),
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
                spec.lease_duration_seconds = Some(seconds);
                spec.renew_time = Some(MicroTime(now));
                // Carries resourceVersion: a concurrent writer makes this fail with 409.
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                    .map(|_| ())
            }
            (_, None) => return Ok(Attempt::Standby),
        };
        match result {
            Ok(()) => Ok(Attempt::Leading),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Standby),
            Err(e) => Err(Error::kube("write leader Lease")(e)),
        }
    }

    /// Records a successful acquisition or renewal sent at `sent`.
    fn renewed(&mut self, sent: Instant) {
        self.renewed_at = Some(sent);
        self.leadership
            .lead_until(sent.checked_add(self.timing.renew_deadline));
    }

    /// Waits until this replica is the leader.
    pub async fn acquire(&mut self) {
        loop {
            let sent = Instant::now();
            match tokio::time::timeout(self.timing.renew_deadline, self.attempt()).await {
                Ok(Ok(Attempt::Leading)) => {
                    self.renewed(sent);
                    return;
                }
                Ok(Ok(Attempt::Standby)) => tracing::debug!("another replica leads; waiting"),
                Ok(Err(e)) => tracing::warn!(error = %e, "leader election failed; retrying"),
                Err(_) => tracing::warn!(
                    timeout = ?self.timing.renew_deadline,
                    "leader Lease request timed out; retrying"
                ),
            }
            tokio::time::sleep(self.timing.retry_period).await;
        }
    }

    /// Renews the Lease every retry period while leading. Returns (leadership lost, already
    /// ended in [`Leadership`]) when another replica holds the Lease or when no renewal
    /// succeeded within the renew deadline; that is before the Lease can expire for a standby.
    pub async fn keep(&mut self) {
        loop {
            tokio::time::sleep(self.timing.retry_period).await;
            let sent = Instant::now();
            let budget = self
                .renewed_at
                .and_then(|at| renew_budget(at, self.timing.renew_deadline, sent));
            let Some(budget) = budget else {
                self.leadership.end();
                tracing::error!(
                    renew_deadline = ?self.timing.renew_deadline,
                    "leader Lease not renewed within the renew deadline: stepping down"
                );
                return;
            };
            match tokio::time::timeout(budget, self.attempt()).await {
                Ok(Ok(Attempt::Leading)) => self.renewed(sent),
                Ok(Ok(Attempt::Standby)) => {
                    self.leadership.end();
                    tracing::error!("another replica took the leader Lease: stepping down");
                    return;
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot renew the leader Lease"),
                Err(_) => tracing::warn!(
                    timeout = ?budget,
                    "renewing the leader Lease timed out"
                ),
            }
        }
    }

    /// Gives the Lease up (on shutdown) so a standby takes over at once. Bounded by the renew
    /// deadline; does nothing when this replica no longer holds it.
    pub async fn release(&self) {
        self.leadership.end();
        let release = async {
            let lease = self
                .api
                .get_opt(&self.name)
                .await
                .map_err(Error::kube("get leader Lease"))?;
            if let Some(mut lease) = lease
                && let Some(spec) = lease.spec.as_mut()
                && spec.holder_identity.as_deref() == Some(self.identity.as_str())
            {
                spec.holder_identity = None;
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                    .map_err(Error::kube("release leader Lease"))?;
            }
            Ok::<(), Error>(())
        };
        match tokio::time::timeout(self.timing.renew_deadline, release).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot release the leader Lease"),
            Err(_) => tracing::warn!("releasing the leader Lease timed out"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// fences: no write once leadership has ended

/// Whether an API request with this method writes.
fn writes(method: &::http::Method) -> bool {
    !matches!(
        *method,
        ::http::Method::GET | ::http::Method::HEAD | ::http::Method::OPTIONS
    )
}

/// A client that sends what `inner` sends, but refuses every write (POST, PUT, PATCH, DELETE)
/// while `leadership` does not lead. Reads and watches pass.
pub fn fenced_client(inner: Client, leadership: Arc<Leadership>) -> Client {
    let namespace = inner.default_namespace().to_owned();
    let service = tower::service_fn(move |request: ::http::Request<kube::client::Body>| {
        let inner = inner.clone();
        let leadership = leadership.clone();
        async move {
            if writes(request.method()) && !leadership.leading_at(Instant::now()) {
                return Err(kube::Error::Service(
                    "not the leader (Lease lost or not renewed in time): write refused".into(),
                ));
            }
            inner.send(request).await
        }
    });
    Client::new(service, namespace)
}

/// Consoles whose writing calls (create, delete, refresh an engine; create, revoke the shared
/// secret) fail while `leadership` does not lead.
pub struct FencedConsoles {
    inner: Arc<dyn ConsoleApiFactory>,
    leadership: Arc<Leadership>,
}

impl FencedConsoles {
    pub fn new(inner: Arc<dyn ConsoleApiFactory>, leadership: Arc<Leadership>) -> Self {
        Self { inner, leadership }
    }
}

impl ConsoleApiFactory for FencedConsoles {
    fn connect(&self, connection: ConsoleConnection) -> ApiResult<Arc<dyn ConsoleApi>> {
        let console = connection.console.clone();
        let url = connection.url.clone();
        Ok(Arc::new(FencedConsole {
            inner: self.inner.connect(connection)?,
            leadership: self.leadership.clone(),
            console,
            url,
        }))
    }
}

struct FencedConsole {
    inner: Arc<dyn ConsoleApi>,
    leadership: Arc<Leadership>,
    console: String,
    url: String,
}

impl FencedConsole {
    /// `call` unless leadership has ended.
    fn write<'a, T: Send + 'a>(
        &'a self,
        call: Call,
        run: impl FnOnce() -> BoxFuture<'a, ApiResult<T>>,
    ) -> BoxFuture<'a, ApiResult<T>> {
        if self.leadership.leading_at(Instant::now()) {
            return run();
        }
        let error = ApiError {
            console: self.console.clone(),
            url: self.url.clone(),
            call,
            kind: ApiErrorKind::Inconsistent(
                "not the leader (Lease lost or not renewed in time): call refused".into(),
            ),
        };
        async move { Err(error) }.boxed()
    }
}

impl ConsoleApi for FencedConsole {
    fn info(&self) -> BoxFuture<'_, ApiResult<ConsoleInfo>> {
        self.inner.info()
    }
    fn list_engines(&self) -> BoxFuture<'_, ApiResult<Vec<Engine>>> {
        self.inner.list_engines()
    }
    fn get_engine(&self, id: i64) -> BoxFuture<'_, ApiResult<Option<Engine>>> {
        self.inner.get_engine(id)
    }
    fn create_engine<'a>(&'a self, engine: &'a NewEngine) -> BoxFuture<'a, ApiResult<i64>> {
        self.write(Call::CreateEngine, || self.inner.create_engine(engine))
    }
    fn delete_engine(&self, id: i64) -> BoxFuture<'_, ApiResult<()>> {
        self.write(Call::DeleteEngine, || self.inner.delete_engine(id))
    }
    fn refresh_engine(&self, id: i64) -> BoxFuture<'_, ApiResult<Engine>> {
        self.write(Call::RefreshEngine, || self.inner.refresh_engine(id))
    }
    fn shared_secret(&self) -> BoxFuture<'_, ApiResult<Option<SecretString>>> {
        self.inner.shared_secret()
    }
    fn create_shared_secret(&self) -> BoxFuture<'_, ApiResult<SecretString>> {
        self.write(Call::CreateSharedSecret, || {
            self.inner.create_shared_secret()
        })
    }
    fn revoke_shared_secret(&self) -> BoxFuture<'_, ApiResult<()>> {
        self.write(Call::RevokeSharedSecret, || {
            self.inner.revoke_shared_secret()
        })
    }
    fn shared_secret_ttl(&self) -> BoxFuture<'_, ApiResult<Option<u64>>> {
        self.inner.shared_secret_ttl()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(15);
    const RENEW_DEADLINE: Duration = Duration::from_secs(10);

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

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn decisions() {
        let t0 = Instant::now();
        let now = t0 + secs(10);
        assert_eq!(decide(None, "a", t0, now, LEASE), Decision::Create);
        assert_eq!(
            decide(Some(&spec("a", 990)), "a", t0, now, LEASE),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&spec("b", 990)), "a", t0, now, LEASE),
            Decision::Wait
        );
        assert_eq!(
            decide(Some(&spec("b", 990)), "a", t0, t0 + secs(15), LEASE),
            Decision::TakeOver
        );
        assert_eq!(
            decide(Some(&spec("", 999)), "a", now, now, LEASE),
            Decision::TakeOver
        );
    }

    #[test]
    fn a_standby_counts_the_lease_from_when_it_saw_the_record_not_from_the_holders_clock() {
        // The holder's renewTime says it renewed long ago (its clock is behind, or ours is
        // ahead): that alone never lets a standby take over.
        let t0 = Instant::now();
        let mut seen = Observation::default();
        let stale = spec("b", 0);
        let since = seen.observe(Some(&stale), t0);
        assert_eq!(
            decide(Some(&stale), "a", since, t0 + secs(1), LEASE),
            Decision::Wait
        );
        // Each renewal changes the record and restarts the standby's count.
        let renewed = spec("b", 5);
        let since = seen.observe(Some(&renewed), t0 + secs(14));
        assert_eq!(since, t0 + secs(14));
        assert_eq!(
            decide(Some(&renewed), "a", since, t0 + secs(20), LEASE),
            Decision::Wait
        );
        // An unchanged record keeps its first sighting; it expires a lease duration after it.
        let since = seen.observe(Some(&renewed), t0 + secs(28));
        assert_eq!(since, t0 + secs(14));
        assert_eq!(
            decide(Some(&renewed), "a", since, t0 + secs(29), LEASE),
            Decision::TakeOver
        );
        // The holder's own lease duration counts, not ours.
        let long = LeaseSpec {
            lease_duration_seconds: Some(60),
            ..renewed
        };
        let since = seen.observe(Some(&long), t0 + secs(30));
        assert_eq!(
            decide(Some(&long), "a", since, t0 + secs(60), LEASE),
            Decision::Wait
        );
        assert_eq!(
            decide(Some(&long), "a", since, t0 + secs(90), LEASE),
            Decision::TakeOver
        );
    }

    #[test]
    fn the_renew_budget_ends_at_the_renew_deadline() {
        let sent = Instant::now();
        assert_eq!(
            renew_budget(sent, RENEW_DEADLINE, sent + secs(2)),
            Some(secs(8))
        );
        assert_eq!(
            renew_budget(sent, RENEW_DEADLINE, sent + Duration::from_millis(9_999)),
            Some(Duration::from_millis(1))
        );
        assert_eq!(renew_budget(sent, RENEW_DEADLINE, sent + secs(10)), None);
        // A process paused far past the deadline (SIGSTOP, a starved node) steps down.
        assert_eq!(renew_budget(sent, RENEW_DEADLINE, sent + secs(600)), None);
    }

    #[test]
    fn a_leader_that_cannot_renew_stops_before_a_standby_may_take_over() {
        // The leader's last renewal was sent at `sent`; the API server wrote it at `written`
        // (no earlier), and a standby saw it at `written` at the soonest.
        let sent = Instant::now();
        let written = sent + Duration::from_millis(300);
        let mut standby = Observation::default();
        let record = spec("leader", 100);
        let since = standby.observe(Some(&record), written);
        // Find the first instant (100 ms steps) the standby may take over, and the first the
        // leader has no budget left.
        let first = |f: &dyn Fn(Instant) -> bool| {
            (0..400u64)
                .map(|i| sent + Duration::from_millis(i * 100))
                .find(|t| f(*t))
        };
        let takeover =
            first(&|t| decide(Some(&record), "standby", since, t, LEASE) == Decision::TakeOver);
        let step_down = first(&|t| renew_budget(sent, RENEW_DEADLINE, t).is_none());
        let (Some(takeover), Some(step_down)) = (takeover, step_down) else {
            panic!("neither times out: {takeover:?} {step_down:?}");
        };
        assert!(
            step_down + (LEASE - RENEW_DEADLINE) <= takeover,
            "the leader stops {:?} after sending, a standby may lead {:?} after",
            step_down - sent,
            takeover - sent
        );
    }

    #[test]
    fn leadership_ends_at_its_deadline_or_when_ended() {
        let t0 = Instant::now();
        let leadership = Leadership::default();
        assert!(!leadership.leading_at(t0), "not leading before acquiring");
        leadership.lead_until(Some(t0 + RENEW_DEADLINE));
        assert!(leadership.leading_at(t0 + secs(9)));
        assert!(!leadership.leading_at(t0 + secs(10)));
        leadership.end();
        assert!(!leadership.leading_at(t0));
    }

    #[tokio::test]
    async fn the_fenced_client_refuses_writes_but_not_reads_once_leadership_ends() {
        use k8s_openapi::api::core::v1::ConfigMap;

        let (service, mut handle) = tower_test::mock::pair::<
            ::http::Request<kube::client::Body>,
            ::http::Response<kube::client::Body>,
        >();
        let leadership = Arc::new(Leadership::default());
        let client = fenced_client(Client::new(service, "default"), leadership.clone());
        let api: Api<ConfigMap> = Api::namespaced(client, "ns");
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some("cm".into()),
                namespace: Some("ns".into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        };
        let body = serde_json::to_vec(&cm).unwrap_or_default();
        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some((request, respond)) = handle.next_request().await {
                seen.push(request.method().to_string());
                respond.send_response(::http::Response::new(kube::client::Body::from(
                    body.clone(),
                )));
            }
            seen
        });

        // Leading: writes and reads reach the API server.
        leadership.lead_until(Instant::now().checked_add(secs(60)));
        assert!(api.create(&PostParams::default(), &cm).await.is_ok());
        // Ended (lost, or the renew deadline passed): a write fails without being sent, reads
        // still work.
        leadership.end();
        let refused = api.create(&PostParams::default(), &cm).await;
        assert!(
            matches!(&refused, Err(kube::Error::Service(e)) if e.to_string().contains("not the leader")),
            "{refused:?}"
        );
        assert!(api.delete("cm", &Default::default()).await.is_err());
        assert!(api.get("cm").await.is_ok());
        drop(api);
        let seen = server.await.unwrap_or_default();
        assert_eq!(seen, ["POST", "GET"], "only these reached the API server");
    }

    #[tokio::test]
    async fn fenced_consoles_refuse_registrations_once_leadership_ends() {
        use crate::console_api::fake::FakeConsole;

        let fake = FakeConsole::default();
        let leadership = Arc::new(Leadership::default());
        let consoles = FencedConsoles::new(Arc::new(fake.clone()), leadership.clone());
        let connection = ConsoleConnection {
            console: "ns/corp".into(),
            url: "https://console:3780".into(),
            username: "admin".into(),
            password: SecretString::new("pw"),
            ca_bundle: None,
            insecure_skip_tls_verify: false,
        };
        let Ok(api) = consoles.connect(connection) else {
            panic!("connect");
        };
        let engine = NewEngine {
            name: "e.ns".into(),
            address: "127.0.0.1".into(),
            port: 40814,
        };
        leadership.lead_until(Instant::now().checked_add(secs(60)));
        assert!(api.create_engine(&engine).await.is_ok());
        leadership.end();
        let refused = api.create_engine(&engine).await;
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.call == Call::CreateEngine && e.to_string().contains("ns/corp")),
            "{refused:?}"
        );
        assert!(api.revoke_shared_secret().await.is_err());
        assert!(api.list_engines().await.is_ok(), "reads still pass");
        assert_eq!(
            fake.state().engines.len(),
            1,
            "registered once, while leading"
        );
    }

    #[test]
    fn only_writes_are_fenced() {
        assert!(!writes(&http::Method::GET));
        for m in [
            http::Method::POST,
            http::Method::PUT,
            http::Method::PATCH,
            http::Method::DELETE,
        ] {
            assert!(writes(&m), "{m}");
        }
    }
}
