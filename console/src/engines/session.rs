//! The task that owns an accepted session, whichever side dialed: it answers and sends pings,
//! carries commands from the [`Registry`](super::Registry) and records what the engine reports.

use std::{collections::HashMap, time::Duration};

use scan_engine_protocol::{Message, session::Session};
use tokio::{sync::oneshot, time::MissedTickBehavior};

use super::registry::{Command, Registration};
use crate::{
    context::App,
    store::{Direction, Observation, Outcome},
};

/// Runs an accepted session until it ends and returns why it ended, in words.
///
/// A console-to-engine session is pinged by the console every ping interval and must answer
/// before the next one. An engine-to-console session is pinged by the engine; if it stays
/// silent for `--down-after`, the console gives up on it.
pub async fn drive(
    app: &App,
    session: &mut Session,
    engine_id: i64,
    direction: Direction,
    reg: &mut Registration,
) -> String {
    // Only admitted sessions are driven: the engine may now send full-sized frames.
    session.admit();
    let ping_interval = app.settings.ping_interval;
    let idle_limit = match direction {
        Direction::ConsoleToEngine => ping_interval * 2 + app.settings.handshake_timeout,
        Direction::EngineToConsole => app.settings.down_after,
    };
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + ping_interval, ping_interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let console_pings = direction == Direction::ConsoleToEngine;
    let mut seq: u64 = 0;
    let mut awaiting_periodic: Option<u64> = None;
    let mut waiting: HashMap<u64, oneshot::Sender<Result<(), String>>> = HashMap::new();

    loop {
        tokio::select! {
            _ = app.shutdown.cancelled() => return "the console is shutting down".into(),
            cmd = reg.commands.recv() => match cmd {
                None | Some(Command::Close) => return "closed by the console".into(),
                Some(Command::Ping { reply }) => {
                    seq += 1;
                    if let Err(e) = session.send(Message::Ping { seq }).await {
                        let _ = reply.send(Err(e.to_string()));
                        return format!("sending a ping failed: {e}");
                    }
                    waiting.insert(seq, reply);
                }
                Some(Command::Scan { job, reply }) => {
                    let scan_id = job.scan_id;
                    match session.send(Message::ScanJob(job)).await {
                        Ok(()) => {
                            tracing::info!(engine_id, scan_id, "scan job handed to the engine");
                            let _ = reply.send(Ok(()));
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e.to_string()));
                            return format!("sending a scan job failed: {e}");
                        }
                    }
                }
            },
            _ = ticker.tick(), if console_pings => {
                if awaiting_periodic.is_some() {
                    return format!("the engine did not answer a ping within {}", humantime::format_duration(ping_interval));
                }
                seq += 1;
                if let Err(e) = session.send(Message::Ping { seq }).await {
                    return format!("sending a ping failed: {e}");
                }
                awaiting_periodic = Some(seq);
            },
            received = session.recv(idle_limit) => {
                let message = match received {
                    Ok(m) => m,
                    Err(scan_engine_protocol::Error::Timeout(_)) => {
                        return format!("the engine sent nothing for {}", humantime::format_duration(idle_limit));
                    }
                    Err(e) => return e.to_string(),
                };
                match message {
                    Message::Ping { seq: theirs } => {
                        if let Err(e) = session.send(Message::Pong { seq: theirs }).await {
                            return format!("answering a ping failed: {e}");
                        }
                        contact(app, engine_id, direction).await;
                    }
                    Message::Pong { seq: theirs } => {
                        if awaiting_periodic == Some(theirs) {
                            awaiting_periodic = None;
                        }
                        if let Some(reply) = waiting.remove(&theirs) {
                            let _ = reply.send(Ok(()));
                        }
                        contact(app, engine_id, direction).await;
                    }
                    Message::ScanProgress { .. } | Message::ScanFinding { .. } | Message::ScanFinished { .. } => {
                        crate::scans::record(app, engine_id, message).await;
                        contact(app, engine_id, direction).await;
                    }
                    Message::PairRequest { .. } => {
                        tracing::debug!(engine_id, "ignoring a pair request on an admitted session");
                    }
                    other => return format!("unexpected {} message on an open session", other.kind()),
                }
            }
        }
    }
}

/// Records a successful exchange.
async fn contact(app: &App, engine_id: i64, direction: Direction) {
    let message = match direction {
        Direction::ConsoleToEngine => "connected (console-to-engine)",
        Direction::EngineToConsole => "connected (engine-to-console)",
    };
    let obs = Observation {
        outcome: Outcome::Ok,
        message: message.into(),
        product_version: None,
        at: app.clock.now(),
    };
    if let Err(e) = app.store.observe(engine_id, obs).await {
        tracing::error!(engine_id, error = %e, "cannot record an engine's contact");
    }
}

/// Records that an engine's session ended (unless the console itself is stopping): its engine
/// scans fail, its pool work moves to other engines.
pub async fn ended(app: &App, engine_id: i64, reason: &str) {
    if app.shutdown.is_cancelled() {
        return;
    }
    let now = app.clock.now();
    let obs = Observation {
        outcome: Outcome::Unreachable,
        message: format!("session closed: {reason}"),
        product_version: None,
        at: now,
    };
    if let Err(e) = app.store.observe(engine_id, obs).await {
        tracing::error!(engine_id, error = %e, "cannot record an engine's state");
    }
    if let Err(e) = crate::scans::engine_lost(
        app,
        engine_id,
        &format!("the engine's session closed: {reason}"),
    )
    .await
    {
        tracing::error!(engine_id, error = %e, "cannot record the scans of an engine that went");
    }
}

/// Time allowed for a scan job to be written.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
