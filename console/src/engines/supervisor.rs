//! Console-to-engine (standard) engines: one supervisor task per engine dials
//! `address:port`, says hello, and then
//! * `PendingAuthorization` → records it, closes, tries again every ping interval;
//! * `Accepted` → keeps the session open (pinging every ping interval) until it breaks;
//! * a dial or session failure → records `not-responding` with the error, redials every ping
//!   interval.
//!
//! The engine's certificate is pinned on first acceptance; a different certificate later is
//! refused until the engine is deleted and added again.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use scan_engine_protocol::{Message, messages::Role, session::Session, version};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::session;
use crate::{
    context::App,
    store::{Direction, EngineRecord, Observation, Outcome},
};

/// Pause before redialing an engine whose open session broke.
const REDIAL_DELAY: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Handle {
    cancel: CancellationToken,
    refresh: mpsc::Sender<oneshot::Sender<()>>,
}

/// The running supervisor tasks, by engine id.
#[derive(Debug, Default)]
pub struct Supervisors {
    tasks: Mutex<HashMap<i64, Handle>>,
}

impl Supervisors {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Handle>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts supervising a console-to-engine engine (replacing any previous supervisor).
    pub fn start(&self, app: &App, engine_id: i64) {
        let cancel = app.shutdown.child_token();
        let (refresh, refresh_rx) = mpsc::channel(8);
        let old = self.lock().insert(
            engine_id,
            Handle {
                cancel: cancel.clone(),
                refresh,
            },
        );
        if let Some(old) = old {
            old.cancel.cancel();
        }
        let app = app.clone();
        tokio::spawn(async move { supervise(app, engine_id, cancel, refresh_rx).await });
    }

    /// Stops supervising (the engine was deleted); its open session is closed too.
    pub fn stop(&self, engine_id: i64) {
        if let Some(h) = self.lock().remove(&engine_id) {
            h.cancel.cancel();
        }
    }

    /// Asks the supervisor to try the engine now and waits (at most `timeout`) for the attempt
    /// to be recorded; when enough refreshes are already waiting, returns at once. False when
    /// the engine has no supervisor.
    pub async fn refresh(&self, engine_id: i64, timeout: Duration) -> bool {
        let Some(tx) = self.lock().get(&engine_id).map(|h| h.refresh.clone()) else {
            return false;
        };
        let (done, rx) = oneshot::channel();
        match tx.try_send(done) {
            Ok(()) => {
                let _ = tokio::time::timeout(timeout, rx).await;
                true
            }
            // Enough refreshes are already waiting for the next attempt; never block the caller.
            Err(mpsc::error::TrySendError::Full(_)) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

async fn supervise(
    app: App,
    engine_id: i64,
    cancel: CancellationToken,
    mut refresh: mpsc::Receiver<oneshot::Sender<()>>,
) {
    let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
    loop {
        let engine = match app.store.engine(engine_id).await {
            Ok(Some(e)) if e.direction == Direction::ConsoleToEngine => e,
            Ok(_) => return,
            Err(e) => {
                tracing::error!(engine_id, error = %e, "cannot read the engine; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(app.settings.ping_interval) => continue,
                }
            }
        };
        let attempt = tokio::select! {
            _ = cancel.cancelled() => return,
            a = attempt(&app, &engine) => a,
        };
        // Everyone who asked for a refresh before or during this attempt has their answer.
        for w in waiters.drain(..) {
            let _ = w.send(());
        }
        while let Ok(w) = refresh.try_recv() {
            let _ = w.send(());
        }
        if let Some(mut session) = attempt {
            let mut reg = app.sessions.register(engine_id);
            let reason = tokio::select! {
                _ = cancel.cancelled() => None,
                r = session::drive(&app, &mut session, engine_id, Direction::ConsoleToEngine, &mut reg) => Some(r),
            };
            let current = app.sessions.unregister(engine_id, reg.generation);
            session.close().await;
            let Some(reason) = reason else { return };
            tracing::info!(engine_id, engine = %engine.name, %reason, "console-to-engine session ended");
            if current {
                session::ended(&app, engine_id, &reason).await;
            }
            if cancel.is_cancelled() {
                return;
            }
            // Redial soon: a broken session is most often a restarted engine.
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(REDIAL_DELAY.min(app.settings.ping_interval)) => continue,
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(app.settings.ping_interval) => {}
            w = refresh.recv() => if let Some(w) = w { waiters.push(w) },
        }
        while let Ok(w) = refresh.try_recv() {
            waiters.push(w);
        }
    }
}

/// `host:port`, bracketing IPv6 literals.
pub fn dial_address(address: &str, port: u16) -> String {
    if address.contains(':') && !address.starts_with('[') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    }
}

/// One dial: records what it found and returns the session when the engine accepted us.
async fn attempt(app: &App, engine: &EngineRecord) -> Option<Session> {
    let addr = dial_address(&engine.address, engine.port);
    let (obs, session) = match try_session(app, engine, &addr).await {
        Ok((obs, session)) => (obs, session),
        Err(message) => (
            Observation {
                outcome: Outcome::Unreachable,
                message,
                product_version: None,
                at: app.clock.now(),
            },
            None,
        ),
    };
    match obs.outcome {
        Outcome::Ok => {
            tracing::info!(engine_id = engine.id, engine = %engine.name, %addr, "engine accepted the console")
        }
        _ if obs.outcome != engine.outcome || obs.message != engine.message => {
            tracing::warn!(engine_id = engine.id, engine = %engine.name, %addr, detail = %obs.message, "engine not active")
        }
        _ => {
            tracing::debug!(engine_id = engine.id, %addr, detail = %obs.message, "engine still not active")
        }
    }
    if let Err(e) = app.store.observe(engine.id, obs).await {
        tracing::error!(engine_id = engine.id, error = %e, "cannot record the engine's state");
    }
    session
}

async fn try_session(
    app: &App,
    engine: &EngineRecord,
    addr: &str,
) -> Result<(Observation, Option<Session>), String> {
    let timeout = app.settings.handshake_timeout;
    let mut session = Session::dial(addr, app.client_config.clone(), timeout)
        .await
        .map_err(|e| format!("cannot reach {addr}: {e}"))?;
    let hello = session
        .exchange_hello(
            Role::Console,
            &app.settings.product_version,
            &app.settings.console_name,
            timeout,
        )
        .await
        .map_err(|e| format!("{addr}: no greeting: {e}"))?;
    if hello.role != Role::Engine {
        return Err(format!("{addr} is not a scan engine"));
    }
    let fingerprint = session.peer_fingerprint().to_string();
    if let Some(pinned) = &engine.fingerprint
        && *pinned != fingerprint
    {
        session.close().await;
        return Err(format!(
            "{addr} presented certificate {fingerprint}, but {pinned} is pinned for this engine; \
             delete and add the engine again to trust a new identity"
        ));
    }
    let observe = |outcome, message: String| Observation {
        outcome,
        message,
        product_version: Some(hello.product_version.clone()),
        at: app.clock.now(),
    };
    if !version::compatible(&app.settings.product_version, &hello.product_version) {
        let _ = session
            .send(Message::Incompatible {
                console_version: app.settings.product_version.clone(),
                engine_version: hello.product_version.clone(),
            })
            .await;
        session.close().await;
        let msg = format!(
            "engine runs version {}, the console runs {}",
            hello.product_version, app.settings.product_version
        );
        return Ok((observe(Outcome::Incompatible, msg), None));
    }
    match session.recv(timeout).await {
        Ok(Message::Accepted) => {
            if engine.fingerprint.is_none() {
                app.store
                    .pin_engine(engine.id, &fingerprint, &session.peer_cert_pem())
                    .await
                    .map_err(|e| format!("cannot pin the engine's certificate: {e}"))?;
            }
            Ok((
                observe(Outcome::Ok, "connected (console-to-engine)".into()),
                Some(session),
            ))
        }
        Ok(Message::PendingAuthorization) => {
            session.close().await;
            let msg = format!(
                "the engine has not enabled this console ({}) in consoles.xml",
                app.identity.fingerprint()
            );
            Ok((observe(Outcome::PendingAuthorization, msg), None))
        }
        Ok(Message::Incompatible { .. }) => {
            session.close().await;
            // Our own version and the one the engine greeted with (checked by the codec), not
            // whatever the answer repeats.
            let msg = format!(
                "the engine answered incompatible (it greeted with version {}, the console runs {})",
                hello.product_version, app.settings.product_version
            );
            Ok((observe(Outcome::Incompatible, msg), None))
        }
        Ok(other) => Err(format!(
            "{addr}: unexpected {} message after the greeting",
            other.kind()
        )),
        Err(e) => Err(format!("{addr}: no answer after the greeting: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dial_addresses() {
        assert_eq!(dial_address("engine.ns.svc", 40814), "engine.ns.svc:40814");
        assert_eq!(dial_address("10.0.0.1", 1), "10.0.0.1:1");
        assert_eq!(dial_address("fd00::1", 40814), "[fd00::1]:40814");
    }
}
