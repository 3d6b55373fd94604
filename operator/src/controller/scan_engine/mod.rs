//! The ScanEngine reconciler, a pipeline:
//!
//! 1. **read** the ScanEngine, its Console and its pods, from the stores ([`reconcile`]);
//! 2. **validate** what the Console must provide ([`validate`]);
//! 3. **build** the desired StatefulSet, Service and NetworkPolicy (pure, [`build`]);
//! 4. **apply** those that differ from their stores, with server-side apply ([`apply`]);
//! 5. **pair**: plan (pure) and make the console calls for this engine, from the console's last
//!    listing ([`pairing`], [`crate::controller::console_engines`]);
//! 6. **status**: compute it from what the console reports and what the engine's pod says
//!    ([`pods`]) and write it only when it changed ([`status`]), with an Event on each state
//!    transition and a Warning event when Ready takes a cause.
//!
//! A reconcile with nothing to change makes no request at all: every read is a store's, and
//! the console is called only to create, delete or refresh this engine.
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
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::Event as Finalizer;
use tracing::info;

use self::build::Inputs;
use self::build::config;
use self::status::{Observed, Problem};
use super::console_engines::Seen;
use super::shared::apply::apply_status;
use super::shared::reconcile;
use super::{Context, connection, owner_reference};
use crate::console_api::find_engine_by_name;
use crate::crd::conditions::{self, Cond};
use crate::crd::{
    Communication, Console, ENGINE_FINALIZER, EngineState, REFRESH_ANNOTATION,
    SKIP_CLEANUP_ANNOTATION, ScanEngine,
};
use crate::{Error, Result};

/// Requeue while an engine waits for something no event announces (a load balancer address).
const PAIRING_REQUEUE: Duration = Duration::from_secs(15);

/// Entry point of the controller.
pub async fn reconcile(engine: Arc<ScanEngine>, ctx: Arc<Context>) -> Result<Action> {
    reconcile::run(&ctx, engine, ENGINE_FINALIZER, |event| async {
        match event {
            Finalizer::Apply(se) => apply_engine(se, &ctx).await,
            Finalizer::Cleanup(se) => cleanup(se, &ctx).await,
        }
    })
    .await
}

fn problem_of(error: &Error) -> Problem {
    let (reason, stalled) = error.reason();
    Problem {
        reason: reason.into(),
        message: error.to_string(),
        stalled,
    }
}

/// The apply branch of the pipeline; returns when to look again.
async fn apply_engine(engine: Arc<ScanEngine>, ctx: &Context) -> Result<Action> {
    let ns = engine.namespace().unwrap_or_default();
    let name = engine.name_any();
    tracing::debug!(generation = ?engine.metadata.generation, "reconciling");
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

    // 1. read: the Console and the engine's pods, from the stores
    let console_name = engine.spec.console_ref.name.clone();
    let Some(console) = ctx.stores.console(&ns, &console_name) else {
        let err = Error::ConsoleNotFound(format!("{ns}/{console_name}"));
        observed.problem = Some(problem_of(&err));
        write_status(ctx, &engine, &observed).await?;
        return Err(err);
    };
    let console_status = console.status.clone().unwrap_or_default();
    observed.console_version = console_status.version.as_deref();
    let pods = pods::of_engine(&ctx.stores.pods, &ns, &name);
    observed.pod = pods::diagnose(&pods);
    let ready_since = pods::ready_since(&pods);

    // 2. validate
    let side = match validate::console_side(&engine, &console) {
        Ok(side) => side,
        Err(not_ready) => {
            // The Console's status change that ends the wait wakes this engine.
            observed.problem = Some(Problem::transient(not_ready.reason, not_ready.message));
            write_status(ctx, &engine, &observed).await?;
            return Ok(Action::requeue(ctx.settings.refresh_interval));
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

    // 3. build, 4. apply what differs from the stores
    let applied = match apply::apply_all(
        &ctx.client,
        &ctx.stores,
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
            write_status(ctx, &engine, &observed).await?;
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
                write_status(ctx, &engine, &observed).await?;
            }
            return Err(err);
        }
    };
    observed.policy_applied = true;
    observed.memory = Some(&memory);

    // 5. pair, from the console's last listing
    let target = pairing::Target {
        name: engine.console_engine_name(),
        communication,
        address: match communication {
            Communication::ConsoleToEngine => {
                match pairing::dial_address(&engine, &name, &ns, applied.service.as_ref()) {
                    Ok(a) => Some(a),
                    Err(waiting) => {
                        observed.problem = Some(Problem::transient("WaitingForAddress", waiting));
                        write_status(ctx, &engine, &observed).await?;
                        return Ok(Action::requeue(PAIRING_REQUEUE));
                    }
                }
            }
            Communication::EngineToConsole => None,
        },
    };
    let refresh_wanted = engine.annotations().get(REFRESH_ANNOTATION).cloned();
    let previous = engine.status.clone().unwrap_or_default();
    let situation = pairing::Situation {
        known_direction: previous.communication.as_ref().map(|c| c.direction),
        refresh_requested: refresh_wanted.is_some()
            && refresh_wanted != previous.last_handled_refresh,
        ready_since,
        now: ctx.now(),
    };
    let seen =
        ctx.console_engines
            .lookup(&ns, &console_name, console.uid().as_deref(), &target.name);
    let plan = pairing::plan(&target, &seen, &situation);
    if plan.want_listing {
        ctx.console_engines.want_listing(&ns, &console_name);
    }
    let current = match &seen {
        Seen::Present(e) => Some(e.clone()),
        Seen::Failed { reason, message } => {
            observed.problem = Some(Problem::transient(reason.clone(), message.clone()));
            None
        }
        Seen::NotListed => {
            if engine.status.is_some() {
                // Restarted, or the Console was just created: its first listing wakes us.
                return Ok(Action::requeue(ctx.settings.refresh_interval));
            }
            observed.problem = Some(Problem::transient(
                "WaitingForConsole",
                format!("waiting for the first look at Console {console_name}'s engines"),
            ));
            None
        }
        Seen::Absent => None,
    };
    let outcome = if plan.calls_console() {
        match pair(ctx, &console, &plan, current).await {
            Ok(o) => o,
            Err(err) => {
                observed.problem = Some(problem_of(&err));
                write_status(ctx, &engine, &observed).await?;
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
        }
    } else {
        pairing::Outcome {
            engine: current,
            ..pairing::Outcome::default()
        }
    };
    if let Some(id) = outcome.removed {
        info!(engine_id = id, "removed the console's old registration");
        ctx.console_engines
            .removed(&ns, &console_name, &target.name);
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
    if let Some(e) = outcome.engine.clone().filter(|_| plan.calls_console()) {
        ctx.console_engines.record(&ns, &console_name, e);
    }
    if situation.refresh_requested && outcome.refreshed {
        observed.handled_refresh = refresh_wanted;
    }
    observed.registration = outcome.engine.as_ref();

    // 6. status
    let new = write_status(ctx, &engine, &observed).await?;
    let state = new
        .communication
        .as_ref()
        .map_or(EngineState::Pairing, |c| c.state);
    let refresh_soon = ready_since.is_some()
        && state != EngineState::Active
        && outcome
            .engine
            .as_ref()
            .is_none_or(|e| pairing::refresh_due(e, ready_since, ctx.now() + pairing::RETRY_GAP));
    // Pairing, or just fallen out of Active: the console's state may change any second, so
    // the Console lists early (one listing serves all its engines that wait).
    let stalled = conditions::is_true(&new.conditions, conditions::STALLED);
    let pairing_or_fallen = state != EngineState::Active
        && !stalled
        && pairing::within_window(
            super::shared::reconcile::failing_since(&new.conditions),
            ctx.now(),
        );
    // The console says Active, but the pod just stopped being Ready (deleted, restarted): the
    // console is about to see it go, and the status should say so within seconds.
    let pod_gone_quiet = state == EngineState::Active
        && pairing::within_window(pods::not_ready_since(&pods), ctx.now());
    let listing_soon = pairing_or_fallen || pod_gone_quiet;
    if listing_soon {
        ctx.console_engines.want_listing(&ns, &console_name);
    }
    Ok(Action::requeue(if refresh_soon || listing_soon {
        pairing::RETRY_GAP
    } else {
        ctx.settings.refresh_interval
    }))
}

/// The reason of the engine's `Ready` condition as last written.
fn previous_ready_reason(engine: &ScanEngine) -> Option<&str> {
    engine
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, conditions::READY))
        .map(|c| c.reason.as_str())
}

/// Makes the console calls of `plan` for this one engine.
async fn pair(
    ctx: &Context,
    console: &Console,
    plan: &pairing::Plan,
    current: Option<crate::console_api::Engine>,
) -> Result<pairing::Outcome> {
    let conn = connection::resolve(&ctx.stores, console)?;
    let api = ctx.consoles.connect(conn)?;
    Ok(pairing::execute(api.as_ref(), plan, current).await?)
}

/// Computes and (if changed) writes the status; publishes an Event on a state transition.
/// Returns the status computed.
async fn write_status(
    ctx: &Context,
    engine: &ScanEngine,
    observed: &Observed<'_>,
) -> Result<crate::crd::scan_engine::ScanEngineStatus> {
    let new = status::compute(observed);
    let state = new
        .communication
        .as_ref()
        .map_or(EngineState::Pairing, |c| c.state);
    let old = engine.status.as_ref();
    if !status::changed(old, &new) {
        return Ok(new);
    }
    let old_state = old.and_then(|s| s.communication.as_ref()).map(|c| c.state);
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
    Ok(new)
}

/// The cleanup branch: remove the engine from its console.
async fn cleanup(engine: Arc<ScanEngine>, ctx: &Context) -> Result<Action> {
    let ns = engine.namespace().unwrap_or_default();
    let console_name = engine.spec.console_ref.name.clone();
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
    let Some(console) = ctx.stores.console(&ns, &console_name) else {
        info!("Console {ns}/{console_name} is gone: nothing to clean up");
        return Ok(Action::await_change());
    };
    if console.is_managed() && console.metadata.deletion_timestamp.is_some() {
        // A managed console goes with its Console, registrations and all.
        info!("managed Console {ns}/{console_name} is being deleted: nothing to clean up");
        return Ok(Action::await_change());
    }
    match remove_registration(ctx, &engine, &console).await {
        Ok(removed) => {
            if let Some(id) = removed {
                ctx.console_engines
                    .removed(&ns, &console_name, &engine.console_engine_name());
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

/// Removes the engine's registration: the one the console's last listing shows, or (before
/// any listing) the one found by name.
async fn remove_registration(
    ctx: &Context,
    engine: &ScanEngine,
    console: &Console,
) -> Result<Option<i64>> {
    let ns = engine.namespace().unwrap_or_default();
    let name = engine.console_engine_name();
    let seen =
        ctx.console_engines
            .lookup(&ns, &console.name_any(), console.uid().as_deref(), &name);
    if seen == Seen::Absent {
        return Ok(None);
    }
    let conn = connection::resolve(&ctx.stores, console)?;
    let api = ctx.consoles.connect(conn)?;
    let found = match seen {
        Seen::Present(e) => Some(e),
        _ => find_engine_by_name(api.as_ref(), &name).await?,
    };
    match found {
        Some(e) => {
            api.delete_engine(e.id).await?;
            Ok(Some(e.id))
        }
        None => Ok(None),
    }
}
