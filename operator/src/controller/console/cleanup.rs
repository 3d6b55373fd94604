//! Deleting a Console, under the `scanengine.dev/revoke-shared-secret` finalizer.
//!
//! An external console outlives its Console resource, and so would the pairing shared secret
//! the operator made there: for up to an hour, anyone holding it could pair an engine. So,
//! before the Console goes:
//!
//! 1. the ScanEngines that use it are deleted first, each removing its registration at the
//!    console (their own finalizer); until then the Console waits and says which ones remain;
//! 2. the shared secret is revoked at the console.
//!
//! A managed console is deleted together with its Console (its objects are owned by it), so
//! nothing is revoked or waited for. `scanengine.dev/skip-console-cleanup: "true"` lets a
//! Console go at once, for a console that is gone for good.

use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use tracing::info;

use super::status::CLEANUP;
use crate::controller::{Context, connection};
use crate::crd::conditions::{self, Cond};
use crate::crd::{Console, SKIP_CLEANUP_ANNOTATION};
use crate::{Error, Result};

/// How many remaining ScanEngines a message names before it says "and N more".
const NAMED: usize = 5;

/// The cleanup branch of the Console reconciler; `Ok` lets the finalizer go.
pub async fn cleanup(console: &Console, ctx: &Context) -> Result<Action> {
    let ns = console.namespace().unwrap_or_default();
    let name = console.name_any();
    if console
        .annotations()
        .get(SKIP_CLEANUP_ANNOTATION)
        .is_some_and(|v| v == "true")
    {
        ctx.event(
            console,
            EventType::Warning,
            "ConsoleCleanupSkipped",
            "Delete",
            format!(
                "{SKIP_CLEANUP_ANNOTATION} is set: the pairing shared secret is not revoked and registrations may remain at the console"
            ),
        )
        .await;
        return Ok(Action::await_change());
    }
    if console.is_managed() {
        // The console itself is deleted with its Console: nothing outlives it.
        return Ok(Action::await_change());
    }

    let mut users: Vec<String> = ctx
        .stores
        .engines_of_console(&ns, &name)
        .into_iter()
        .map(|se| se.name_any())
        .collect();
    if !users.is_empty() {
        users.sort();
        let message = format!(
            "waiting for the ScanEngines that use this console to be deleted first, so each is removed from it: {}; to delete anyway, annotate the Console {SKIP_CLEANUP_ANNOTATION}=\"true\"",
            named(&users)
        );
        return Err(blocked(console, ctx, "EnginesRemain", message).await);
    }

    let revoked = async {
        let conn = connection::resolve(&ctx.stores, console)?;
        ctx.consoles.connect(conn)?.revoke_shared_secret().await?;
        Ok::<_, Error>(())
    }
    .await;
    match revoked {
        Ok(()) => {
            info!("revoked the pairing shared secret");
            ctx.event(
                console,
                EventType::Normal,
                "SharedSecretRevoked",
                "Delete",
                "revoked the pairing shared secret at the console".into(),
            )
            .await;
            ctx.console_engines.forget(&ns, &name);
            Ok(Action::await_change())
        }
        Err(err) => {
            let reason = super::reason_of(&err);
            let message = format!(
                "cannot revoke the pairing shared secret: {err}; retrying with backoff. To delete anyway, annotate the Console {SKIP_CLEANUP_ANNOTATION}=\"true\""
            );
            Err(blocked(console, ctx, &reason, message).await)
        }
    }
}

/// `a, b, c` or `a, b, c, d, e and 3 more`.
fn named(names: &[String]) -> String {
    let shown = names
        .iter()
        .take(NAMED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    match names.len().saturating_sub(NAMED) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

/// Says in the status (and, when that changes, an Event) why the Console stays; the error keeps
/// the finalizer and retries with backoff.
async fn blocked(console: &Console, ctx: &Context, reason: &str, message: String) -> Error {
    let mut status = console.status.clone().unwrap_or_default();
    let previous = status.clone();
    status.conditions = conditions::set(
        &status.conditions,
        &Cond::false_(CLEANUP, reason, message.clone()),
        console.metadata.generation,
        ctx.now(),
    );
    if super::status::changed(Some(&previous), &status) {
        match crate::controller::shared::apply::apply_status(&ctx.client, console, &status).await {
            Ok(()) => {
                ctx.event(
                    console,
                    EventType::Warning,
                    "ConsoleCleanupBlocked",
                    "Delete",
                    message.clone(),
                )
                .await
            }
            Err(e) => return e,
        }
    }
    Error::CleanupBlocked(message)
}

#[cfg(test)]
mod tests {
    use super::named;

    #[test]
    fn long_lists_of_engines_are_cut_short() {
        let names: Vec<String> = (1..=7).map(|i| format!("e{i}")).collect();
        assert_eq!(named(&names[..2]), "e1, e2");
        assert_eq!(named(&names), "e1, e2, e3, e4, e5 and 2 more");
    }
}
