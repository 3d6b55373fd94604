//! The live sessions: one open session task per engine, reachable by engine id. The API asks a
//! session to ping (refresh) or to carry a scan job; the task owns the connection.

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
        let (tx, commands) = mpsc::channel(16);
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
    /// came back within `timeout`.
    pub async fn ping(&self, engine_id: i64, timeout: Duration) -> Option<Result<(), String>> {
        let tx = self.sender(engine_id)?;
        let (reply, rx) = oneshot::channel();
        if tx.send(Command::Ping { reply }).await.is_err() {
            return None;
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
        tx.send(Command::Scan { job, reply })
            .await
            .map_err(|_| "the engine's session has closed".to_owned())?;
        match tokio::time::timeout(timeout, rx).await {
            Err(_) => Err("the engine's session did not take the job in time".to_owned()),
            Ok(Err(_)) => Err("the engine's session closed".to_owned()),
            Ok(Ok(r)) => r,
        }
    }
}
