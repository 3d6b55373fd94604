//! The live sessions: one open session task per engine, reachable by engine id. The API asks a
//! session to ping (refresh) or to carry a scan job; the task owns the connection.
//!
//! Handing a command to a session never waits: each session has a queue of
//! [`COMMAND_QUEUE_DEPTH`] commands, and when it is full (the task is stuck writing to an
//! engine that stopped reading, until the protocol's send timeout ends the session) the API
//! call fails at once with an error saying so instead of hanging.

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use scan_engine_protocol::messages::ScanJob;
use tokio::sync::{mpsc, oneshot};

/// What the rest of the console can ask of a session task.
#[derive(Debug)]
pub enum Command {
    /// Ping the engine now; the reply comes when its `Pong` does.
    Ping {
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Hand the engine a scan job; the reply says whether it was written to the connection.
    Scan {
        job: ScanJob,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Close the session (the engine was deleted, or replaced by a newer session).
    Close,
}

/// Commands that may wait for one session task.
pub const COMMAND_QUEUE_DEPTH: usize = 16;

#[derive(Debug, Clone)]
struct Handle {
    generation: u64,
    tx: mpsc::Sender<Command>,
}

/// The engine id → session task map.
#[derive(Debug, Default)]
pub struct Registry {
    sessions: Mutex<HashMap<i64, Handle>>,
    next_generation: AtomicU64,
}

/// A session task's side of its registration.
#[derive(Debug)]
pub struct Registration {
    pub generation: u64,
    pub commands: mpsc::Receiver<Command>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Handle>> {
        // A panic while holding this lock leaves the map consistent; keep serving.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new session for `engine_id`, closing any older one.
    pub fn register(&self, engine_id: i64) -> Registration {
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, commands) = mpsc::channel(COMMAND_QUEUE_DEPTH);
        let old = self.lock().insert(engine_id, Handle { generation, tx });
        if let Some(old) = old {
            let _ = old.tx.try_send(Command::Close);
        }
        Registration {
            generation,
            commands,
        }
    }

    /// Forgets a session when it ends; returns whether it was still the engine's current one.
    pub fn unregister(&self, engine_id: i64, generation: u64) -> bool {
        let mut map = self.lock();
        if map
            .get(&engine_id)
            .is_some_and(|h| h.generation == generation)
        {
            map.remove(&engine_id);
            true
        } else {
            false
        }
    }

    /// Whether the engine has an open session.
    pub fn is_connected(&self, engine_id: i64) -> bool {
        self.lock()
            .get(&engine_id)
            .is_some_and(|h| !h.tx.is_closed())
    }

    /// Closes the engine's session, if any.
    pub fn close(&self, engine_id: i64) {
        if let Some(h) = self.lock().remove(&engine_id) {
            let _ = h.tx.try_send(Command::Close);
        }
    }

    fn sender(&self, engine_id: i64) -> Option<mpsc::Sender<Command>> {
        self.lock().get(&engine_id).map(|h| h.tx.clone())
    }

    /// Pings the engine over its open session: `None` when it has none, else whether a `Pong`
    /// came back within `timeout` (an error at once when the session's queue is full).
    pub async fn ping(&self, engine_id: i64, timeout: Duration) -> Option<Result<(), String>> {
        let tx = self.sender(engine_id)?;
        let (reply, rx) = oneshot::channel();
        match tx.try_send(Command::Ping { reply }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => return None,
            Err(mpsc::error::TrySendError::Full(_)) => return Some(Err(busy())),
        }
        Some(match tokio::time::timeout(timeout, rx).await {
            Err(_) => Err(format!(
                "no answer to a ping within {}",
                humantime::format_duration(timeout)
            )),
            Ok(Err(_)) => Err("the session closed during the ping".to_owned()),
            Ok(Ok(r)) => r,
        })
    }

    /// Hands a scan job to the engine's open session.
    pub async fn send_scan(
        &self,
        engine_id: i64,
        job: ScanJob,
        timeout: Duration,
    ) -> Result<(), String> {
        let tx = self
            .sender(engine_id)
            .ok_or_else(|| "the engine has no open session".to_owned())?;
        let (reply, rx) = oneshot::channel();
        tx.try_send(Command::Scan { job, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Closed(_) => {
                    "the engine's session has closed".to_owned()
                }
                mpsc::error::TrySendError::Full(_) => busy(),
            })?;
        match tokio::time::timeout(timeout, rx).await {
            Err(_) => Err("the engine's session did not take the job in time".to_owned()),
            Ok(Err(_)) => Err("the engine's session closed".to_owned()),
            Ok(Ok(r)) => r,
        }
    }
}

fn busy() -> String {
    format!(
        "the engine's session is not keeping up: {COMMAND_QUEUE_DEPTH} commands are already \
         waiting for it"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> ScanJob {
        ScanJob {
            scan_id: 1,
            targets: vec!["127.0.0.1".into()],
            ports: vec![22],
            connect_timeout_ms: 100,
            banner_timeout_ms: 100,
            max_concurrency: 1,
        }
    }

    /// A session task that is stuck (here: never reads its queue) must not make refresh or
    /// scan calls wait: once its queue is full they fail at once.
    #[tokio::test(start_paused = true)]
    async fn a_stuck_session_fails_refreshes_and_scans_at_once() {
        let registry = Registry::default();
        let _stuck = registry.register(7);
        let started = tokio::time::Instant::now();
        let mut timed_out = 0;
        for _ in 0..COMMAND_QUEUE_DEPTH {
            // Queued; no pong ever comes, so each waits for its own timeout.
            if let Some(Err(_)) = registry.ping(7, Duration::from_secs(1)).await {
                timed_out += 1;
            }
        }
        assert_eq!(timed_out, COMMAND_QUEUE_DEPTH);
        let queued_for = started.elapsed();
        let refresh = registry.ping(7, Duration::from_secs(3600)).await;
        assert!(
            matches!(&refresh, Some(Err(m)) if m.contains("not keeping up")),
            "{refresh:?}"
        );
        let scan = registry
            .send_scan(7, job(), Duration::from_secs(3600))
            .await;
        assert!(
            matches!(&scan, Err(m) if m.contains("not keeping up")),
            "{scan:?}"
        );
        // Neither of the last two waited for anything.
        assert_eq!(started.elapsed(), queued_for);
    }

    #[tokio::test]
    async fn an_engine_without_a_session_is_told_so() {
        let registry = Registry::default();
        assert_eq!(registry.ping(1, Duration::from_secs(1)).await, None);
        let reg = registry.register(1);
        drop(reg);
        assert_eq!(registry.ping(1, Duration::from_secs(1)).await, None);
        assert!(
            registry
                .send_scan(1, job(), Duration::from_secs(1))
                .await
                .is_err()
        );
    }
}
