//! All console state, in one embedded SQLite database (`<data-dir>/console.db`).
//!
//! The rest of the console goes through the small typed API of [`Store`]; SQL stays in this
//! module. Every call runs on the blocking thread pool behind one connection mutex, so async
//! tasks never block on the disk. The schema is versioned by SQLite's `user_version` and
//! migrated forward on open; a database from a newer console is refused.
//!
//! Engines' chatter (observations after each ping, scan progress and findings) is written by
//! one writer thread that commits whatever has queued up as one transaction, each call in its
//! own savepoint ([`Store::run_batched`]): while one commit is on the disk, the next calls
//! gather behind it, so a thousand engines pinging is a handful of commits, not a thousand.
//! The database runs in WAL mode with `synchronous=NORMAL`: a power cut can lose the last
//! commits (pings and findings, which the next ping or scan repeats) but never corrupts it.
//! Lists are read a page at a time (`LIMIT`/`OFFSET` and a `COUNT`).

mod engines;
mod pools;
mod scans;
mod secrets;

use std::{
    path::Path,
    sync::{Arc, Mutex},
};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

pub use engines::{Direction, EngineRecord, NewReverseEngine, Observation, Outcome};
pub use pools::{PoolChange, PoolRecord};
pub use scans::{
    AssetRecord, JobRecord, NewSite, ScanControl, ScanRecord, ScanStatus, ServiceRecord, SiteRecord,
};
pub use secrets::SecretRecord;

use crate::error::{Error, Result};

/// Schema migrations; entry `i` moves `user_version` from `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE engines (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    name            TEXT NOT NULL UNIQUE,
    address         TEXT NOT NULL,
    port            INTEGER NOT NULL,
    direction       TEXT NOT NULL,
    fingerprint     TEXT UNIQUE,
    cert_pem        TEXT,
    product_version TEXT,
    last_refreshed  INTEGER,
    last_updated    INTEGER NOT NULL,
    last_contact    INTEGER,
    outcome         TEXT NOT NULL DEFAULT 'none',
    message         TEXT NOT NULL DEFAULT ''
);
CREATE TABLE shared_secret (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    value      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked    INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE sites (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL,
    engine_id  INTEGER NOT NULL,
    targets    TEXT NOT NULL,
    ports      TEXT NOT NULL,
    timeout_ms INTEGER NOT NULL
);
CREATE TABLE scans (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    site_id     INTEGER NOT NULL,
    engine_id   INTEGER NOT NULL,
    status      TEXT NOT NULL,
    done        INTEGER NOT NULL DEFAULT 0,
    total       INTEGER NOT NULL DEFAULT 0,
    message     TEXT NOT NULL DEFAULT '',
    started_at  INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE TABLE assets (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    ip        TEXT NOT NULL UNIQUE,
    host_name TEXT,
    last_scan INTEGER
);
CREATE TABLE services (
    asset_id INTEGER NOT NULL REFERENCES assets(id) ON DELETE CASCADE,
    port     INTEGER NOT NULL,
    protocol TEXT NOT NULL,
    banner   TEXT,
    PRIMARY KEY (asset_id, port, protocol)
);
"#,
    r#"
CREATE TABLE engine_pools (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE engine_pool_members (
    pool_id   INTEGER NOT NULL REFERENCES engine_pools(id) ON DELETE CASCADE,
    engine_id INTEGER NOT NULL REFERENCES engines(id) ON DELETE CASCADE,
    PRIMARY KEY (pool_id, engine_id)
);
CREATE TABLE sites_v2 (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL,
    engine_id  INTEGER,
    targets    TEXT NOT NULL,
    ports      TEXT NOT NULL,
    timeout_ms INTEGER NOT NULL
);
INSERT INTO sites_v2 (id, name, engine_id, targets, ports, timeout_ms)
    SELECT id, name, engine_id, targets, ports, timeout_ms FROM sites;
DROP TABLE sites;
ALTER TABLE sites_v2 RENAME TO sites;
ALTER TABLE scans ADD COLUMN pool INTEGER NOT NULL DEFAULT 0;
CREATE TABLE scan_jobs (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    scan_id   INTEGER NOT NULL,
    target    TEXT NOT NULL,
    engine_id INTEGER,
    status    TEXT NOT NULL DEFAULT 'pending',
    done      INTEGER NOT NULL DEFAULT 0,
    total     INTEGER NOT NULL DEFAULT 0,
    message   TEXT NOT NULL DEFAULT ''
);
CREATE INDEX scan_jobs_by_scan ON scan_jobs (scan_id, status);
CREATE INDEX scan_jobs_by_engine ON scan_jobs (engine_id, status);
"#,
];

/// One page of a list, and the length of the whole list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
}

/// The number of rows of `table` (a constant of this module, never input).
fn count(conn: &Connection, table: &str) -> Result<u64> {
    let n: i64 = conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?;
    Ok(n.max(0) as u64)
}

/// `LIMIT ?1 OFFSET ?2` parameters; values past SQLite's range read as "no rows".
fn limit_offset(offset: u64, limit: u64) -> [i64; 2] {
    [
        i64::try_from(limit).unwrap_or(i64::MAX),
        i64::try_from(offset).unwrap_or(i64::MAX),
    ]
}

/// What a batched call does once its batch has committed (or failed to): answer its caller.
type Reply = Box<dyn FnOnce(Option<&Error>) + Send>;
/// A batched call: runs in the writer's open transaction, returns its reply.
type Job = Box<dyn FnOnce(&Connection) -> Reply + Send>;

/// Most calls one transaction of the writer holds.
const MAX_BATCH: usize = 512;

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    /// The writer thread's queue ([`Store::run_batched`]).
    batch: mpsc::UnboundedSender<Job>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl Store {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| Error::File {
                path: dir.to_owned(),
                source,
            })?;
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Self::init(conn)
    }

    /// A private in-memory database (tests).
    pub fn open_in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Self> {
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn)?;
        let conn = Arc::new(Mutex::new(conn));
        let (batch, jobs) = mpsc::unbounded_channel();
        let writer_conn = conn.clone();
        std::thread::Builder::new()
            .name("console-db-writer".into())
            .spawn(move || write_batches(&writer_conn, jobs))
            .map_err(|e| Error::StoreTask(format!("starting the database writer: {e}")))?;
        Ok(Self { conn, batch })
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| Error::StoreTask("database lock poisoned".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| Error::StoreTask(e.to_string()))?
    }

    /// Runs `f` on the writer thread, in one transaction with whatever other batched calls are
    /// queued, inside its own savepoint (an error undoes only `f`'s writes). Answers once the
    /// transaction has committed.
    async fn run_batched<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |c: &Connection| {
            let result = in_savepoint(c, f);
            Box::new(move |commit_error: Option<&Error>| {
                let result = match commit_error {
                    Some(e) => Err(Error::StoreTask(format!("committing a batch failed: {e}"))),
                    None => result,
                };
                let _ = tx.send(result);
            })
        });
        self.batch
            .send(job)
            .map_err(|_| Error::StoreTask("the database writer stopped".into()))?;
        rx.await
            .map_err(|_| Error::StoreTask("the database writer dropped a call".into()))?
    }
}

/// Runs `f` inside a savepoint of the open transaction, rolled back when it fails.
fn in_savepoint<T>(c: &Connection, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    c.execute_batch("SAVEPOINT call")?;
    match f(c) {
        Ok(v) => {
            c.execute_batch("RELEASE call")?;
            Ok(v)
        }
        Err(e) => {
            c.execute_batch("ROLLBACK TO call; RELEASE call")?;
            Err(e)
        }
    }
}

/// The writer thread: takes the first queued call, everything queued behind it (up to
/// [`MAX_BATCH`]), runs them in one transaction and answers them all after the commit. Ends when
/// every [`Store`] handle is gone.
fn write_batches(conn: &Mutex<Connection>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = jobs.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // A poisoned lock only follows a panic elsewhere; the dropped calls and every later one
        // then fail with "the database writer stopped".
        let Ok(guard) = conn.lock() else {
            return;
        };
        if let Err(e) = guard.execute_batch("BEGIN IMMEDIATE") {
            // Dropping the calls answers each with an error.
            tracing::error!(error = %e, calls = batch.len(), "the database writer could not begin a transaction");
            continue;
        }
        let replies: Vec<Reply> = batch.into_iter().map(|job| job(&guard)).collect();
        let error = guard.execute_batch("COMMIT").map_err(Error::from).err();
        if let Some(e) = &error {
            tracing::error!(error = %e, calls = replies.len(), "a batch of database writes failed");
            let _ = guard.execute_batch("ROLLBACK");
        }
        drop(guard);
        for reply in replies {
            reply(error.as_ref());
        }
    }
}

/// The schema version this console writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

fn migrate(conn: &mut Connection) -> Result<()> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(Error::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rusqlite::params;

    use super::*;

    #[tokio::test]
    async fn migrates_once_and_refuses_newer_schemas() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.db");
        drop(Store::open(&path).unwrap());
        drop(Store::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(conn);
        assert!(matches!(
            Store::open(&path),
            Err(Error::SchemaTooNew { .. })
        ));
    }

    fn ok(at: i64) -> Observation {
        Observation {
            outcome: Outcome::Ok,
            message: "accepted".into(),
            product_version: Some("0.1.0".into()),
            at,
        }
    }

    #[tokio::test]
    async fn lists_are_read_a_page_at_a_time() {
        let s = Store::open_in_memory().unwrap();
        for i in 0..7 {
            s.create_standard_engine(&format!("e{i}"), "a", 1, 0)
                .await
                .unwrap();
        }
        let page = s.engines_page(5, 5).await.unwrap();
        assert_eq!(page.total, 7);
        let names: Vec<_> = page.items.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["e5", "e6"]);
        let past = s.engines_page(u64::MAX, 500).await.unwrap();
        assert_eq!((past.items.len(), past.total), (0, 7));
        assert_eq!(s.sites_page(0, 10).await.unwrap().total, 0);
        assert_eq!(s.assets_page(0, 10).await.unwrap().items, vec![]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_observations_are_all_recorded_and_a_failing_call_spoils_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("console.db")).unwrap();
        let mut ids = Vec::new();
        for i in 0..20 {
            ids.push(
                s.create_standard_engine(&format!("e{i}"), "a", 1, 0)
                    .await
                    .unwrap(),
            );
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (n, id) in ids.iter().copied().enumerate() {
            let s = s.clone();
            tasks.spawn(async move {
                for round in 1..=10 {
                    s.observe(id, ok((n * 100 + round) as i64)).await.unwrap();
                }
            });
        }
        // A call that fails inside the same batches: only its own writes are undone.
        let failing = s
            .run_batched(|c| {
                c.execute("UPDATE engines SET message = 'spoiled'", [])?;
                c.execute("INSERT INTO no_such_table VALUES (1)", [])?;
                Ok(())
            })
            .await;
        assert!(failing.is_err());
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        for (n, id) in ids.iter().enumerate() {
            let e = s.engine(*id).await.unwrap().unwrap();
            assert_eq!(e.last_refreshed, Some((n * 100 + 10) as i64));
            assert_eq!(e.message, "accepted");
        }
    }

    /// Pings recorded per second by 50 engines at once, one transaction each with
    /// `synchronous=FULL` (as before) and batched with `synchronous=NORMAL` (as now). Run with
    /// `cargo test -p security-console --release -- --ignored --nocapture pings_per_second`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[ignore = "a measurement, not a check"]
    async fn pings_per_second() {
        const ENGINES: usize = 50;
        const PINGS: usize = 40;
        for batched in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let s = Store::open(&dir.path().join("console.db")).unwrap();
            if !batched {
                s.run(|c| Ok(c.pragma_update(None, "synchronous", "FULL")?))
                    .await
                    .unwrap();
            }
            let mut ids = Vec::new();
            for i in 0..ENGINES {
                ids.push(
                    s.create_standard_engine(&format!("e{i}"), "a", 1, 0)
                        .await
                        .unwrap(),
                );
            }
            let start = std::time::Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for id in ids {
                let s = s.clone();
                tasks.spawn(async move {
                    for round in 0..PINGS as i64 {
                        if batched {
                            s.observe(id, ok(round)).await.unwrap();
                        } else {
                            let obs = ok(round);
                            s.run(move |c| {
                                c.execute(
                                    "UPDATE engines SET outcome = 'ok', message = ?2, \
                                     last_refreshed = ?3 WHERE id = ?1",
                                    params![id, obs.message, obs.at],
                                )?;
                                Ok(())
                            })
                            .await
                            .unwrap();
                        }
                    }
                });
            }
            while let Some(r) = tasks.join_next().await {
                r.unwrap();
            }
            let rate = (ENGINES * PINGS) as f64 / start.elapsed().as_secs_f64();
            println!(
                "{}: {rate:.0} pings recorded per second",
                if batched {
                    "batched, synchronous=NORMAL"
                } else {
                    "one transaction each, synchronous=FULL"
                }
            );
        }
    }
}
