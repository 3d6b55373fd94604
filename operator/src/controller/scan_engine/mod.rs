//! The ScanEngine reconciler, a pipeline:
//!
//! 1. **read** the ScanEngine and its Console ([`reconcile`]);
//! 2. **validate** what the Console must provide ([`validate`]);
//! 3. **build** the desired StatefulSet, Service and NetworkPolicy (pure, [`build`]);
//! 4. **apply** them with server-side apply and read back the Service ([`apply`]);
//! 5. **pair** the engine with its console through the console API ([`pairing`]);
//! 6. **status**: compute it from what the console reports and what the engine's pod says
//!    ([`pods`], read from a reflector store) and write it only when it changed ([`status`]),
//!    with an Event on each state transition and a Warning event when Ready takes a cause.
//!
//! Deletion runs [`cleanup`] under the `scanengine.dev/console-cleanup` finalizer: the engine is
//! removed from its console first; while the console is unreachable the finalizer stays and the
//! ConsoleCleanup condition says so, unless `scanengine.dev/skip-console-cleanup: "true"` is set.
//! Nothing is removed when the Console is gone, or is a managed one being deleted (the console
//! goes with it).

pub mod apply;
pub mod build;
pub mod pairing;
pub mod pods;
pub mod status;
#[cfg(test)]
mod tests;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use tracing::{Instrument, info, warn};

use self::build::Inputs;
use self::build::config;
use self::pods::PodStore;
use self::status::{Observed, Problem};
use super::apply::{apply_status, get_opt};
use super::{Context, object_key, owner_reference, wakeups};
use crate::console_api::find_engine_by_name;
use crate::crd::conditions::{self, Cond};
use crate::crd::{
    Communication, Console, ENGINE_FINALIZER, EngineState, REFRESH_ANNOTATION,
    SKIP_CLEANUP_ANNOTATION, ScanEngine,
};
use crate::{Error, Result};

/// Requeue while an engine is not Active yet.
const PAIRING_REQUEUE: Duration = Duration::from_secs(15);

/// Entry point of the controller; `pods` is the store of the engine pods of the controller's
/// namespace (or of all namespaces).
pub async fn reconcile(
    engine: Arc<ScanEngine>,
    ctx: Arc<Context>,
    pods: PodStore,
) -> Result<Action> {
    let ns = engine.namespace().unwrap_or_default();
    let name = engine.name_any();
    let span = tracing::info_span!("reconcile", kind = "ScanEngine", namespace = %ns, name = %name);
    async move {
        let _timer = ctx.metrics.reconcile_started("ScanEngine");
        let api: Api<ScanEngine> = Api::namespaced(ctx.client.clone(), &ns);
        let key = object_key(engine.as_ref());
        let result = finalizer(&api, ENGINE_FINALIZER, engine, |event| async {
            match event {
                Finalizer::Apply(se) => apply_unless_idle(se, ctx.clone(), &pods).await,
                Finalizer::Cleanup(se) => {
                    ctx.wakeups.forget(&object_key(se.as_ref()));
                    let ns = se.namespace().unwrap_or_default();
                    let console = se.spec.console_ref.name.clone();
                    let released = cleanup(se, ctx.clone()).await;
                    if released.is_ok() {
                        // The engine goes now: its Console recounts, or stops waiting for it.
                        ctx.console_waker.wake(&ns, &console);
                    }
                    released
                }
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

/// Requeues a failed reconcile with backoff and counts the failure.
pub fn error_policy(engine: Arc<ScanEngine>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(namespace = %engine.namespace().unwrap_or_default(), name = %engine.name_any(), error = %error, "ScanEngine reconcile failed");
    ctx.metrics.reconcile_failed("ScanEngine", error);
    ctx.failure_backoff(object_key(engine.as_ref()))
}

fn problem_of(error: &Error) -> Problem {
    // `stalled`: only a spec change or an administrator can help.
    let (reason, stalled) = match error {
        Error::ConsoleApi(e) => (e.reason(), false),
        Error::ConsoleNotFound(_) => (status::CONSOLE_NOT_FOUND, true),
        Error::MissingReference(_) => ("MissingReference", false),
        Error::Kube { .. } => ("KubernetesApiError", false),
        Error::NotOwned(_) => (Error::NOT_OWNED_REASON, true),
        Error::InsecureUrl(_) => ("InsecureUrl", true),
        Error::ChildRejected { .. } => (status::CHILD_REJECTED, true),
        _ => ("ReconcileError", false),
    };
    Problem {
        reason: reason.into(),
        message: error.to_string(),
        stalled,
    }
}

/// The apply branch, unless this wake-up has nothing to do (see [`super::wakeups`]): the echo of
/// the reconcile's own status write, with nothing changed and the next refresh not due.
async fn apply_unless_idle(
    engine: Arc<ScanEngine>,
    ctx: Arc<Context>,
    pods: &PodStore,
) -> Result<Action> {
    let key = object_key(engine.as_ref());
    let digest = wakeups::metadata_digest(engine.as_ref());
    let now = ctx.now();
    if let Some(left) = ctx.wakeups.idle(&key, digest, now) {
        tracing::debug!(next_in = ?left, "nothing changed since the last reconcile");
        return Ok(Action::requeue(left));
    }
    ctx.wakeups.begin(&key);
    match apply_engine(engine, ctx.clone(), pods).await {
        Ok(next) => {
            ctx.wakeups.done(&key, digest, now, next);
            Ok(Action::requeue(next))
        }
        Err(e) => {
            ctx.wakeups.forget(&key);
            Err(e)
        }
    }
}

/// The apply branch of the pipeline; returns when to look again.
async fn apply_engine(
    engine: Arc<ScanEngine>,
    ctx: Arc<Context>,
    pods: &PodStore,
) -> Result<Duration> {
    let ns = engine.namespace().unwrap_or_default();
    let name = engine.name_any();
    let communication = engine.spec.communication;
    let mut observed = Observed {
        engine: &engine,
        communication,
        registration: None,
        console_version: None,
        policy_applied: false,
        memory: None,
        problem: None,
        pod: None,
        handled_refresh: None,
        now: ctx.now(),
    };

    // 1. read
    let console_name = engine.spec.console_ref.name.clone();
    let console = match get_opt::<Console>(&ctx.client, &ns, &console_name).await? {
        Some(c) => c,
        None => {
            let err = Error::ConsoleNotFound(format!("{ns}/{console_name}"));
            observed.problem = Some(problem_of(&err));
            write_status(&ctx, &engine, &observed).await?;
            return Err(err);
        }
    };
    let console_status = console.status.clone().unwrap_or_default();
    observed.console_version = console_status.version.as_deref();

    // 2. validate
    let side = match validate::console_side(&engine, &console) {
        Ok(side) => side,
        Err(not_ready) => {
            observed.problem = Some(Problem::transient(not_ready.reason, not_ready.message));
            write_status(&ctx, &engine, &observed).await?;
            return Ok(PAIRING_REQUEUE);
        }
    };
    let owner = owner_reference(engine.as_ref())
        .ok_or_else(|| Error::InvalidSpec("ScanEngine has no uid yet".into()))?;
    let inputs = Inputs {
        engine: &engine,
        name: &name,
        namespace: &ns,
        communication,
        console: &side,
        owner,
        default_version: &ctx.settings.default_version,
    };
    let (_, memory) = config::resources(&inputs);

    // 3. build, 4. apply and read back
    let applied = match apply::apply_all(
        &ctx.client,
        &ctx.applied,
        &ns,
        &name,
        build::desired(&inputs),
    )
    .await
    {
        Ok(applied) => applied,
        Err(err) if err.is_not_owned() => {
            // Someone else's object of the same name: left alone, and said so.
            let already = previous_ready_reason(&engine) == Some(Error::NOT_OWNED_REASON);
            observed.problem = Some(problem_of(&err));
            write_status(&ctx, &engine, &observed).await?;
            if !already {
                ctx.event(
                    engine.as_ref(),
                    EventType::Warning,
                    Error::NOT_OWNED_REASON,
                    "Deploy",
                    err.to_string(),
                )
                .await;
            }
            return Err(err);
        }
        Err(err) => {
            // Refused by the API server (invalid, denied by admission): only a spec change or
            // an administrator helps, and the status says so with the API server's words.
            let err = err.rejected_child(pods::MAX_CAUSE_MESSAGE);
            if matches!(err, Error::ChildRejected { .. }) {
                observed.problem = Some(problem_of(&err));
                write_status(&ctx, &engine, &observed).await?;
            }
            return Err(err);
        }
    };
    observed.policy_applied = true;
    observed.memory = Some(&memory);

    // 5. pair
    let target = pairing::Target {
        name: engine.console_engine_name(),
        communication,
        address: match communication {
            Communication::ConsoleToEngine => {
                match pairing::dial_address(&engine, &name, &ns, applied.service.as_ref()) {
                    Ok(a) => Some(a),
                    Err(waiting) => {
                        observed.problem = Some(Problem::transient("WaitingForAddress", waiting));
                        write_status(&ctx, &engine, &observed).await?;
                        return Ok(PAIRING_REQUEUE);
                    }
                }
            }
            Communication::EngineToConsole => None,
        },
    };
    let refresh_wanted = engine.annotations().get(REFRESH_ANNOTATION).cloned();
    let previous = engine.status.clone().unwrap_or_default();
    let refresh = refresh_wanted.is_some() && refresh_wanted != previous.last_handled_refresh;
    let known_direction = previous.communication.as_ref().map(|c| c.direction);

    let outcome = match pair(
        &ctx,
        &console,
        &target,
        previous.engine_id,
        known_direction,
        refresh,
    )
    .await
    {
        Ok(o) => o,
        Err(err) => {
            observed.problem = Some(problem_of(&err));
            write_status(&ctx, &engine, &observed).await?;
            if let Error::ConsoleApi(api_err) = &err {
                ctx.event(
                    engine.as_ref(),
                    EventType::Warning,
                    api_err.reason(),
                    "Pair",
                    err.to_string(),
                )
                .await;
            }
            return Err(err);
        }
    };
    if let Some(id) = outcome.removed {
        info!(engine_id = id, "removed the console's old registration");
        ctx.event(
            engine.as_ref(),
            EventType::Normal,
            "Unregistered",
            "Pair",
            format!(
                "removed registration {id} from Console {console_name} to re-pair {}",
                communication.display()
            ),
        )
        .await;
    }
    if let Some(id) = outcome.created {
        ctx.event(
            engine.as_ref(),
            EventType::Normal,
            "Registered",
            "Pair",
            format!("registered at Console {console_name} as engine {id}"),
        )
        .await;
    }
    if refresh {
        observed.handled_refresh = refresh_wanted;
    }
    observed.registration = outcome.engine.as_ref();

    // 6. status, with what the engine's pod says (read last: the pod's watch event that woke
    // this reconcile has reached the store by now, or the next requeue sees it)
    observed.pod = pods::diagnose(&pods::of_engine(pods, &ns, &name));
    let state = write_status(&ctx, &engine, &observed).await?;
    Ok(match state {
        EngineState::Active => ctx.settings.refresh_interval,
        _ => ctx.settings.refresh_interval.min(PAIRING_REQUEUE),
    })
}

/// The reason of the engine's `Ready` condition as last written.
fn previous_ready_reason(engine: &ScanEngine) -> Option<&str> {
    engine
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, conditions::READY))
        .map(|c| c.reason.as_str())
}

async fn pair(
    ctx: &Context,
    console: &Console,
    target: &pairing::Target,
    known_id: Option<i64>,
    known_direction: Option<Communication>,
    refresh: bool,
) -> Result<pairing::Outcome> {
    let conn = ctx
        .connections
        .resolve(&ctx.client, console, ctx.now())
        .await?;
    let api = ctx.consoles.connect(conn)?;
    pairing::ensure(api.as_ref(), target, known_id, known_direction, refresh)
        .await
        .map_err(|e| {
            if matches!(e.status_code(), Some(401 | 403)) {
                // The credentials may have changed since they were read: read them next time.
                ctx.connections.forget(console);
            }
            e.into()
        })
}

/// Computes and (if changed) writes the status; publishes an Event on a state transition.
async fn write_status(
    ctx: &Context,
    engine: &ScanEngine,
    observed: &Observed<'_>,
) -> Result<EngineState> {
    let new = status::compute(observed);
    let state = new
        .communication
        .as_ref()
        .map_or(EngineState::Pairing, |c| c.state);
    ctx.metrics
        .set_engine_state(&object_key(engine), Some(state));
    let old = engine.status.as_ref();
    if !status::changed(old, &new) {
        return Ok(state);
    }
    let old_state = old.and_then(|s| s.communication.as_ref()).map(|c| c.state);
    if old_state != Some(state) || old.and_then(|s| s.engine_id) != new.engine_id {
        // The Console counts its engines by state: the event of this write wakes it.
        ctx.console_waker.wake(
            &engine.namespace().unwrap_or_default(),
            &engine.spec.console_ref.name,
        );
    }
    apply_status(&ctx.client, engine, &new).await?;
    let old_reason = old
        .and_then(|s| conditions::find(&s.conditions, conditions::READY))
        .map(|c| c.reason.as_str());
    if let Some((reason, message)) = status::warning_cause(&new)
        && old_reason != Some(reason)
    {
        ctx.event(
            engine,
            EventType::Warning,
            reason,
            "Deploy",
            message.to_string(),
        )
        .await;
    }
    if old_state != Some(state) {
        let type_ = if state == EngineState::Active {
            EventType::Normal
        } else {
            EventType::Warning
        };
        let from = old_state.map_or("none".to_string(), |s| s.to_string());
        let note = format!(
            "{from} → {state}: {}",
            new.message.clone().unwrap_or_default()
        );
        ctx.event(engine, type_, "StateChanged", "Refresh", note)
            .await;
    }
    Ok(state)
}

/// The cleanup branch: remove the engine from its console.
async fn cleanup(engine: Arc<ScanEngine>, ctx: Arc<Context>) -> Result<Action> {
    let ns = engine.namespace().unwrap_or_default();
    let console_name = engine.spec.console_ref.name.clone();
    ctx.metrics
        .set_engine_state(&object_key(engine.as_ref()), None);
    if engine
        .annotations()
        .get(SKIP_CLEANUP_ANNOTATION)
        .is_some_and(|v| v == "true")
    {
        ctx.event(
            engine.as_ref(),
            EventType::Warning,
            "ConsoleCleanupSkipped",
            "Delete",
            format!("{SKIP_CLEANUP_ANNOTATION} is set: the engine may stay registered at Console {console_name}"),
        )
        .await;
        return Ok(Action::await_change());
    }
    let Some(console) = get_opt::<Console>(&ctx.client, &ns, &console_name).await? else {
        info!("Console {ns}/{console_name} is gone: nothing to clean up");
        return Ok(Action::await_change());
    };
    if console.is_managed() && console.metadata.deletion_timestamp.is_some() {
        // A managed console goes with its Console, registrations and all.
        info!("managed Console {ns}/{console_name} is being deleted: nothing to clean up");
        return Ok(Action::await_change());
    }
    match remove_registration(&ctx, &engine, &console).await {
        Ok(removed) => {
            if let Some(id) = removed {
                ctx.event(
                    engine.as_ref(),
                    EventType::Normal,
                    "Unregistered",
                    "Delete",
                    format!("removed engine {id} from Console {console_name}"),
                )
                .await;
            }
            Ok(Action::await_change())
        }
        Err(err) => {
            let message = format!(
                "cannot remove the engine from Console {console_name}: {err}; retrying with backoff. \
                 To delete anyway, annotate the ScanEngine {SKIP_CLEANUP_ANNOTATION}=\"true\""
            );
            let mut new = engine.status.clone().unwrap_or_default();
            let mut desired: Vec<Cond> = Vec::new();
            for c in &new.conditions {
                if c.type_ != status::CONSOLE_CLEANUP
                    && let Some(t) = static_type(&c.type_)
                {
                    desired.push(Cond::new(
                        t,
                        c.status == "True",
                        c.reason.clone(),
                        c.message.clone(),
                    ));
                }
            }
            desired.push(Cond::false_(
                status::CONSOLE_CLEANUP,
                problem_of(&err).reason,
                message.clone(),
            ));
            new.conditions = conditions::merge(
                &new.conditions,
                &desired,
                engine.metadata.generation,
                ctx.now(),
            );
            new.message = Some(message.clone());
            if status::changed(engine.status.as_ref(), &new) {
                apply_status(&ctx.client, engine.as_ref(), &new).await?;
                ctx.event(
                    engine.as_ref(),
                    EventType::Warning,
                    "ConsoleCleanupFailed",
                    "Delete",
                    message.clone(),
                )
                .await;
            }
            Err(Error::CleanupBlocked(err.to_string()))
        }
    }
}

/// Maps a stored condition type back to its static name (the types this reconciler writes).
fn static_type(t: &str) -> Option<&'static str> {
    [
        conditions::READY,
        conditions::RECONCILING,
        conditions::STALLED,
        status::PAIRED,
        status::AUTHORIZED,
        status::VERSION_COMPATIBLE,
        status::NETWORK_POLICY_READY,
        status::MEMORY_RESERVED,
        status::CONSOLE_CLEANUP,
    ]
    .into_iter()
    .find(|known| *known == t)
}

async fn remove_registration(
    ctx: &Context,
    engine: &ScanEngine,
    console: &Console,
) -> Result<Option<i64>> {
    let conn = ctx
        .connections
        .resolve(&ctx.client, console, ctx.now())
        .await?;
    let api = ctx.consoles.connect(conn)?;
    let name = engine.console_engine_name();
    let known = engine.status.as_ref().and_then(|s| s.engine_id);
    let found = match known {
        Some(id) => api.get_engine(id).await?.filter(|e| e.name == name),
        None => None,
    };
    let found = match found {
        Some(e) => Some(e),
        None => find_engine_by_name(api.as_ref(), &name).await?,
    };
    match found {
        Some(e) => {
            api.delete_engine(e.id).await?;
            Ok(Some(e.id))
        }
        None => Ok(None),
    }
}
