//! The Console reconciler:
//!
//! 1. **managed**: create the admin, CA and API TLS Secrets once ([`secrets`]), then build
//!    ([`build`]) and server-side apply the StatefulSet, Services and NetworkPolicy;
//! 2. **connect** to the console API ([`crate::controller::connection`]);
//! 3. **observe**: version and fingerprint (`administration/info`), engines by state;
//! 4. **shared secret**: keep a valid one in the Console's Secret ([`shared_secret`]);
//! 5. **status** ([`status`]), written only when it changed.
//!
//! Deletion runs [`cleanup`] under the `scanengine.dev/revoke-shared-secret` finalizer: an
//! external console's shared secret is revoked once no ScanEngine uses it.
//!
//! Besides its own changes and the refresh interval, a Console is reconciled when one of its
//! engines changes state ([`waker`]), so its engine counts follow.

pub mod build;
pub mod cleanup;
pub mod secrets;
pub mod shared_secret;
pub mod status;
#[cfg(test)]
mod tests;
pub mod waker;

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use tracing::{Instrument, warn};

use self::status::Observed;
use super::apply::{apply_cached, apply_status};
use super::{Context, connection, object_key, owner_reference};
use crate::crd::{CONSOLE_FINALIZER, Console};
use crate::{Error, Result};

/// Requeue while a console is not reachable yet.
const RETRY: Duration = Duration::from_secs(10);

pub async fn reconcile(console: Arc<Console>, ctx: Arc<Context>) -> Result<Action> {
    let ns = console.namespace().unwrap_or_default();
    let name = console.name_any();
    let span = tracing::info_span!("reconcile", kind = "Console", namespace = %ns, name = %name);
    async move {
        let _timer = ctx.metrics.reconcile_started("Console");
        let key = object_key(console.as_ref());
        let api: Api<Console> = Api::namespaced(ctx.client.clone(), &ns);
        let result = finalizer(&api, CONSOLE_FINALIZER, console, |event| async {
            match event {
                Finalizer::Apply(c) => reconcile_inner(&c, &ctx, &ns, &name).await,
                Finalizer::Cleanup(c) => cleanup::cleanup(&c, &ctx).await,
            }
        })
        .await
        .map_err(Error::from);
        if result.is_ok() {
            ctx.reset_backoff(&key);
        }
        result
    }
    .instrument(span)
    .await
}

pub fn error_policy(console: Arc<Console>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(namespace = %console.namespace().unwrap_or_default(), name = %console.name_any(), error = %error, "Console reconcile failed");
    ctx.metrics.reconcile_failed("Console", error);
    ctx.failure_backoff(object_key(console.as_ref()))
}

fn reason_of(error: &Error) -> String {
    match error {
        Error::ConsoleApi(e) => e.reason().into(),
        Error::MissingReference(_) => "MissingReference".into(),
        Error::Kube { .. } => "KubernetesApiError".into(),
        Error::NotOwned(_) => Error::NOT_OWNED_REASON.into(),
        Error::InsecureUrl(_) => "InsecureUrl".into(),
        _ => "ReconcileError".into(),
    }
}

async fn reconcile_inner(console: &Console, ctx: &Context, ns: &str, name: &str) -> Result<Action> {
    let owner = owner_reference(console)
        .ok_or_else(|| Error::InvalidSpec("Console has no uid yet".into()))?;
    let mut observed = Observed::default();

    if let Some(managed) = &console.spec.managed {
        let inputs = build::Inputs {
            name,
            namespace: ns,
            spec: managed,
            owner: owner.clone(),
            settings: &ctx.settings,
        };
        observed.url = Some(connection::managed_url(name, ns));
        observed.engine_listener = Some(connection::managed_engine_listener(name, ns));
        if let Err(err) = deploy(console, ctx, &inputs).await {
            if err.is_not_owned() {
                return Err(conflict(ctx, console, &mut observed, err).await);
            }
            return Err(err);
        }
    } else if let Some(external) = &console.spec.external {
        observed.url = Some(external.url.clone());
        observed.engine_listener = external.engine_listener_address.clone();
    }

    match observe(console, ctx, ns, name, owner, &mut observed).await {
        Ok(check_again_in) => {
            let now = ctx.now();
            write_status(ctx, console, &observed, now).await?;
            Ok(Action::requeue(
                ctx.settings.refresh_interval.min(check_again_in),
            ))
        }
        Err(err) if err.is_not_owned() => Err(conflict(ctx, console, &mut observed, err).await),
        Err(err) => {
            observed.problem = Some((reason_of(&err), err.to_string()));
            let now = ctx.now();
            write_status(ctx, console, &observed, now).await?;
            if matches!(err, Error::ConsoleApi(_))
                && console.is_managed()
                && observed.info.is_none()
            {
                // A managed console that is still starting: not a failure yet.
                return Ok(Action::requeue(RETRY));
            }
            Err(err)
        }
    }
}

/// The managed console's objects: its Secrets once, then the StatefulSet, Services and
/// NetworkPolicy.
async fn deploy(console: &Console, ctx: &Context, inputs: &build::Inputs<'_>) -> Result<()> {
    let created = secrets::ensure(&ctx.client, inputs).await?;
    if !created.is_empty() {
        ctx.event(
            console,
            EventType::Normal,
            "SecretsCreated",
            "Deploy",
            format!("created Secrets {}", created.join(", ")),
        )
        .await;
    }
    let build::Desired {
        statefulset,
        api_service,
        engine_service,
        network_policy,
    } = build::desired(inputs);
    apply_cached(&ctx.client, &ctx.applied, &network_policy).await?;
    apply_cached(&ctx.client, &ctx.applied, &api_service).await?;
    apply_cached(&ctx.client, &ctx.applied, &engine_service).await?;
    apply_cached(&ctx.client, &ctx.applied, &statefulset).await?;
    Ok(())
}

/// A same-named object that is not the operator's is in the way: the status says which
/// (`Ready=False`, reason `OwnershipConflict`), a Warning event says it once, and the error
/// retries with backoff. The object itself is left alone.
async fn conflict(ctx: &Context, console: &Console, observed: &mut Observed, err: Error) -> Error {
    let already = console.status.as_ref().is_some_and(|s| {
        crate::crd::conditions::find(&s.conditions, crate::crd::conditions::READY)
            .is_some_and(|c| c.reason == Error::NOT_OWNED_REASON && c.message == err.to_string())
    });
    observed.problem = Some((reason_of(&err), err.to_string()));
    let now = ctx.now();
    if let Err(e) = write_status(ctx, console, observed, now).await {
        return e;
    }
    if !already {
        ctx.event(
            console,
            EventType::Warning,
            Error::NOT_OWNED_REASON,
            "Deploy",
            err.to_string(),
        )
        .await;
    }
    err
}

/// Talks to the console; fills `observed`; returns when the shared secret needs a look again.
async fn observe(
    console: &Console,
    ctx: &Context,
    ns: &str,
    name: &str,
    owner: k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    observed: &mut Observed,
) -> Result<Duration> {
    let conn = connection::resolve(&ctx.client, console).await?;
    let api = ctx.consoles.connect(conn)?;
    let info = api.info().await?;
    if observed.engine_listener.is_none()
        && let Some(url) = &observed.url
        && let Ok(parsed) = reqwest::Url::parse(url)
        && let Some(host) = parsed.host_str()
    {
        let port = info
            .engine_communication
            .as_ref()
            .and_then(|e| e.port)
            .unwrap_or(40815);
        observed.engine_listener = Some(format!("{host}:{port}"));
    }
    observed.info = Some(info);
    observed.engines = Some(api.list_engines().await?);
    let margin = console
        .spec
        .shared_secret
        .as_ref()
        .and_then(|s| s.renew_before.as_deref())
        .and_then(|d| humantime::parse_duration(d).ok())
        .unwrap_or(ctx.settings.secret_renewal_margin);
    let outcome = shared_secret::ensure(
        &ctx.client,
        api.as_ref(),
        name,
        ns,
        owner,
        margin,
        ctx.now(),
    )
    .await?;
    if outcome.renewed {
        ctx.event(
            console,
            EventType::Normal,
            "SharedSecretRenewed",
            "RenewSharedSecret",
            format!(
                "new pairing shared secret in Secret {} (value not shown), valid until {}",
                outcome.status.secret_name,
                outcome
                    .status
                    .expires_at
                    .as_ref()
                    .map_or("unknown".into(), |t| t.0.to_string())
            ),
        )
        .await;
    }
    observed.shared_secret = Some(outcome.status);
    Ok(outcome.check_again_in)
}

async fn write_status(
    ctx: &Context,
    console: &Console,
    observed: &Observed,
    now: k8s_openapi::jiff::Timestamp,
) -> Result<()> {
    let new = status::compute(console, observed, now);
    if !status::changed(console.status.as_ref(), &new) {
        return Ok(());
    }
    let was_ready = console.status.as_ref().is_some_and(|s| {
        crate::crd::conditions::is_true(&s.conditions, crate::crd::conditions::READY)
    });
    let is_ready = crate::crd::conditions::is_true(&new.conditions, crate::crd::conditions::READY);
    let warned = console.status.as_ref().is_some_and(|s| {
        crate::crd::conditions::find(&s.conditions, status::INSECURE_TLS).is_some()
    });
    apply_status(&ctx.client, console, &new).await?;
    if !warned && let Some(warning) = status::insecure_tls(console) {
        ctx.event(
            console,
            EventType::Warning,
            status::INSECURE_SKIP_TLS_VERIFY,
            "Connect",
            warning.message,
        )
        .await;
    }
    if was_ready != is_ready {
        let (type_, reason) = if is_ready {
            (EventType::Normal, "Ready")
        } else {
            (EventType::Warning, "NotReady")
        };
        let note = crate::crd::conditions::find(&new.conditions, crate::crd::conditions::READY)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        ctx.event(console, type_, reason, "Refresh", note).await;
    }
    Ok(())
}
