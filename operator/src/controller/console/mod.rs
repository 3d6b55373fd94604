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
//! The Console is the unit of polling: its reconcile lists the console's engines once per
//! refresh interval and publishes them to every ScanEngine of the Console
//! ([`crate::controller::console_engines`]). Woken in between (its engines' states changed, a
//! reverse engine is expected), it only recounts its engines from that view, unless a
//! ScanEngine asked for an early listing.

pub mod build;
pub mod cleanup;
pub mod secrets;
pub mod shared_secret;
pub mod status;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::Event as Finalizer;
use kube::runtime::reflector::ObjectRef;

use self::status::Observed;
use super::shared::apply::{apply_status, ensure};
use super::shared::reconcile;
use super::stores::get;
use super::{Context, connection, owner_reference};
use crate::crd::{CONSOLE_FINALIZER, Console};
use crate::{Error, Result};

/// Requeue while a console is not reachable yet.
const RETRY: Duration = Duration::from_secs(10);
/// The shortest time between two listings of a console's engines.
pub const MIN_LISTING_GAP: Duration = Duration::from_secs(2);

pub async fn reconcile(console: Arc<Console>, ctx: Arc<Context>) -> Result<Action> {
    let ns = console.namespace().unwrap_or_default();
    let name = console.name_any();
    reconcile::run(&ctx, console, CONSOLE_FINALIZER, |event| async {
        match event {
            Finalizer::Apply(c) => reconcile_inner(&c, &ctx, &ns, &name).await,
            Finalizer::Cleanup(c) => cleanup::cleanup(&c, &ctx).await,
        }
    })
    .await
}

fn reason_of(error: &Error) -> String {
    error.reason().0.into()
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
        match deploy(console, ctx, &inputs).await {
            // Just created: the Secret watch brings them to the store and wakes this Console;
            // until then the connection cannot be resolved.
            Ok(true) => return Ok(Action::requeue(MIN_LISTING_GAP)),
            Ok(false) => {}
            Err(err) if err.is_not_owned() => {
                return Err(conflict(ctx, console, &mut observed, err).await);
            }
            Err(err) => return Err(err),
        }
    } else if let Some(external) = &console.spec.external {
        observed.url = Some(external.url.clone());
        observed.engine_listener = external.engine_listener_address.clone();
    }

    let uid = console.uid();
    let now = ctx.now();
    // Between listings, only a Console whose last look succeeded, with its spec seen and its
    // shared secret's Secret in place, merely recounts; anything else looks again.
    let settled = console.status.as_ref().is_some_and(|s| {
        s.observed_generation == console.metadata.generation
            && crate::crd::conditions::is_true(&s.conditions, crate::crd::conditions::READY)
    }) && ctx
        .stores
        .secret(ns, &super::names::shared_secret(name))
        .is_some();
    let due = ctx.console_engines.listing_due(
        ns,
        name,
        uid.as_deref(),
        now,
        ctx.settings.refresh_interval,
        MIN_LISTING_GAP,
    );
    if settled
        && !due
        && let Some(engines) = ctx.console_engines.engines(ns, name, uid.as_deref())
    {
        // Woken between listings: the counts follow the engines' recorded states.
        if let Some(mut status) = console.status.clone() {
            status.engines = Some(status::count(&engines));
            if status::changed(console.status.as_ref(), &status) {
                apply_status(&ctx.client, console, &status).await?;
            }
        }
        let next = ctx
            .console_engines
            .listed_at(ns, name)
            .and_then(|at| {
                std::time::Duration::try_from(now.duration_since(at))
                    .ok()
                    .map(|age| ctx.settings.refresh_interval.saturating_sub(age))
            })
            .unwrap_or(ctx.settings.refresh_interval);
        // An early listing asked for too soon after the last one is made once the gap is over.
        let next = if ctx.console_engines.wanted(ns, name) {
            MIN_LISTING_GAP
        } else {
            next
        };
        return Ok(Action::requeue(next.max(MIN_LISTING_GAP)));
    }

    match observe(console, ctx, ns, name, owner, &mut observed).await {
        Ok(check_again_in) => {
            write_status(ctx, console, &observed, now).await?;
            Ok(Action::requeue(
                ctx.settings.refresh_interval.min(check_again_in),
            ))
        }
        Err(err) if err.is_not_owned() => Err(conflict(ctx, console, &mut observed, err).await),
        Err(err) => {
            let (reason, _) = err.reason();
            ctx.console_engines.listing_failed(
                ns,
                name,
                uid.as_deref(),
                reason,
                &format!("Console {name}: {err}"),
                &engine_refs(ctx, ns, name),
            );
            observed.problem = Some((reason_of(&err), err.to_string()));
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

/// The Console's ScanEngines with their names at the console.
fn engine_refs(
    ctx: &Context,
    ns: &str,
    name: &str,
) -> Vec<(ObjectRef<crate::crd::ScanEngine>, String)> {
    ctx.stores
        .engines_of_console(ns, name)
        .into_iter()
        .map(|se| (ObjectRef::from_obj(se.as_ref()), se.console_engine_name()))
        .collect()
}

/// The managed console's objects: its Secrets once, then the StatefulSet, Services and
/// NetworkPolicy. Returns whether Secrets were created now.
async fn deploy(console: &Console, ctx: &Context, inputs: &build::Inputs<'_>) -> Result<bool> {
    let created = secrets::ensure(&ctx.client, &ctx.stores, inputs).await?;
    let fresh = !created.is_empty();
    if fresh {
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
    let (ns, stores) = (inputs.namespace, &ctx.stores);
    let live =
        |svc: &k8s_openapi::api::core::v1::Service| get(&stores.services, ns, &svc.name_any());
    let policy = get(&stores.network_policies, ns, &network_policy.name_any());
    ensure(&ctx.client, policy.as_deref(), network_policy).await?;
    let api_live = live(&api_service);
    ensure(&ctx.client, api_live.as_deref(), api_service).await?;
    let engines_live = live(&engine_service);
    ensure(&ctx.client, engines_live.as_deref(), engine_service).await?;
    let sts = get(&stores.statefulsets, ns, &statefulset.name_any());
    ensure(&ctx.client, sts.as_deref(), statefulset).await?;
    Ok(fresh)
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
    let conn = connection::resolve(&ctx.stores, console)?;
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
    // One listing of every engine (all pages) per refresh: the view every ScanEngine reads.
    let engines = api.list_engines().await?;
    ctx.console_engines.listed(
        ns,
        name,
        console.uid().as_deref(),
        engines.clone(),
        ctx.now(),
        &engine_refs(ctx, ns, name),
    );
    observed.engines = Some(engines);
    let margin = console
        .spec
        .shared_secret
        .as_ref()
        .and_then(|s| s.renew_before.as_deref())
        .and_then(|d| humantime::parse_duration(d).ok())
        .unwrap_or(ctx.settings.secret_renewal_margin);
    let outcome = shared_secret::ensure(ctx, api.as_ref(), name, ns, owner, margin).await?;
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
