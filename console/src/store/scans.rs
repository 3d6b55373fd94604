//! Sites (what to scan, with which engine or pool), scans (one run of a site), the jobs a
//! scan is cut into (one per target, each handed to one engine at a time) and their results
//! (assets and their open services).
//!
//! A job is what an engine sees as a scan: the protocol's `scan_id` is the job's id. A job that
//! must move to another engine is closed as `moved` and a fresh job takes its target, so a late
//! message from the first engine can never count for the second.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{Page, Store, count, limit_offset};
use crate::{clock::Millis, error::Result};

/// A site to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSite {
    pub name: String,
    /// The engine or pool its scans use (they share one id space); none yet when `None`.
    pub engine_id: Option<i64>,
    pub targets: Vec<String>,
    pub ports: Vec<u16>,
    pub timeout_ms: u64,
}

/// One row of `sites`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteRecord {
    pub id: i64,
    pub name: String,
    pub engine_id: Option<i64>,
    pub targets: Vec<String>,
    pub ports: Vec<u16>,
    pub timeout_ms: u64,
}

/// Where a scan is (the spec's `Scan.status` values the console uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanStatus {
    /// Work is out on engines.
    Running,
    /// Waiting for an Active engine of its pool.
    Dispatched,
    /// No new work is handed out; work already out finishes.
    Paused,
    /// Stopped by a user; later results are dropped.
    Stopped,
    Finished,
    Error,
}

impl ScanStatus {
    /// The API and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ScanStatus::Running => "running",
            ScanStatus::Dispatched => "dispatched",
            ScanStatus::Paused => "paused",
            ScanStatus::Stopped => "stopped",
            ScanStatus::Finished => "finished",
            ScanStatus::Error => "error",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "running" => ScanStatus::Running,
            "dispatched" => ScanStatus::Dispatched,
            "paused" => ScanStatus::Paused,
            "stopped" => ScanStatus::Stopped,
            "finished" => ScanStatus::Finished,
            _ => ScanStatus::Error,
        }
    }

    /// Whether the scan has not ended.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            ScanStatus::Running | ScanStatus::Dispatched | ScanStatus::Paused
        )
    }
}

/// What a user asks of a scan (`POST /scans/{id}/{status}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanControl {
    Stop,
    Pause,
    Resume,
}

/// One row of `scans`, with its jobs' progress summed and the number of assets it found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanRecord {
    pub id: i64,
    pub site_id: i64,
    pub site_name: Option<String>,
    /// The engine, or the pool when `pool`.
    pub engine_id: i64,
    pub engine_name: Option<String>,
    pub pool: bool,
    pub status: ScanStatus,
    pub done: u64,
    pub total: u64,
    pub message: String,
    pub started_at: Millis,
    pub finished_at: Option<Millis>,
    pub assets: u64,
}

/// A job: one target of a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    pub id: i64,
    pub scan_id: i64,
    pub target: String,
    /// The engine it is (or was) on.
    pub engine_id: Option<i64>,
    pub status: String,
}

/// An open service of an asset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRecord {
    pub port: u16,
    pub protocol: String,
    pub banner: Option<String>,
}

/// An asset and its services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetRecord {
    pub id: i64,
    pub ip: String,
    pub host_name: Option<String>,
    pub services: Vec<ServiceRecord>,
}

const SITE_SELECT: &str = "SELECT id, name, engine_id, targets, ports, timeout_ms FROM sites";

fn site_from_row(r: &Row<'_>) -> rusqlite::Result<SiteRecord> {
    let targets: String = r.get(3)?;
    let ports: String = r.get(4)?;
    Ok(SiteRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        engine_id: r.get::<_, Option<i64>>(2)?.filter(|id| *id > 0),
        targets: serde_json::from_str(&targets).unwrap_or_default(),
        ports: serde_json::from_str(&ports).unwrap_or_default(),
        timeout_ms: r.get::<_, i64>(5)?.max(0) as u64,
    })
}

const SCAN_SELECT: &str = "SELECT s.id, s.site_id, s.engine_id, s.status, \
     (SELECT COALESCE(SUM(j.done), 0) FROM scan_jobs j WHERE j.scan_id = s.id AND j.status != 'moved'), \
     (SELECT COALESCE(SUM(j.total), 0) FROM scan_jobs j WHERE j.scan_id = s.id AND j.status != 'moved'), \
     s.message, s.started_at, s.finished_at, \
     (SELECT COUNT(*) FROM assets a WHERE a.last_scan = s.id), \
     (SELECT name FROM sites WHERE id = s.site_id), \
     COALESCE((SELECT name FROM engines WHERE id = s.engine_id), \
              (SELECT name FROM engine_pools WHERE id = s.engine_id)), \
     s.pool FROM scans s";

fn scan_from_row(r: &Row<'_>) -> rusqlite::Result<ScanRecord> {
    Ok(ScanRecord {
        id: r.get(0)?,
        site_id: r.get(1)?,
        engine_id: r.get(2)?,
        status: ScanStatus::parse(&r.get::<_, String>(3)?),
        done: r.get::<_, i64>(4)?.max(0) as u64,
        total: r.get::<_, i64>(5)?.max(0) as u64,
        message: r.get(6)?,
        started_at: r.get(7)?,
        finished_at: r.get(8)?,
        assets: r.get::<_, i64>(9)?.max(0) as u64,
        site_name: r.get(10)?,
        engine_name: r.get(11)?,
        pool: r.get::<_, i64>(12)? != 0,
    })
}

const ACTIVE: &str = "('running', 'dispatched', 'paused')";

/// The running job `job` of `engine` whose scan still takes results: its scan id.
fn live_job(c: &Connection, job: i64, engine: i64) -> rusqlite::Result<Option<i64>> {
    c.query_row(
        &format!(
            "SELECT j.scan_id FROM scan_jobs j JOIN scans s ON s.id = j.scan_id \
             WHERE j.id = ?1 AND j.engine_id = ?2 AND j.status = 'running' AND s.status IN {ACTIVE}"
        ),
        params![job, engine],
        |r| r.get(0),
    )
    .optional()
}

/// Ends `scan` when none of its jobs is pending or running: finished, or error when a job
/// failed (with that job's message).
fn end_if_done(c: &Connection, scan: i64, at: Millis) -> rusqlite::Result<bool> {
    let open: i64 = c.query_row(
        "SELECT COUNT(*) FROM scan_jobs WHERE scan_id = ?1 AND status IN ('pending', 'running')",
        [scan],
        |r| r.get(0),
    )?;
    if open > 0 {
        return Ok(false);
    }
    let failed: Option<String> = c
        .query_row(
            "SELECT message FROM scan_jobs WHERE scan_id = ?1 AND status = 'error' LIMIT 1",
            [scan],
            |r| r.get(0),
        )
        .optional()?;
    let (status, message) = match failed {
        Some(m) => ("error", m),
        None => ("finished", "every target scanned".to_owned()),
    };
    Ok(c.execute(
        &format!(
            "UPDATE scans SET status = ?2, message = ?3, finished_at = ?4 \
             WHERE id = ?1 AND status IN {ACTIVE}"
        ),
        params![scan, status, message, at],
    )? > 0)
}

impl Store {
    /// Adds a site.
    pub async fn create_site(&self, site: NewSite) -> Result<i64> {
        self.run(move |c| {
            c.execute(
                "INSERT INTO sites (name, engine_id, targets, ports, timeout_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    site.name,
                    site.engine_id,
                    serde_json::to_string(&site.targets).unwrap_or_else(|_| "[]".into()),
                    serde_json::to_string(&site.ports).unwrap_or_else(|_| "[]".into()),
                    site.timeout_ms as i64
                ],
            )?;
            Ok(c.last_insert_rowid())
        })
        .await
    }

    /// Every site, by id.
    pub async fn sites(&self) -> Result<Vec<SiteRecord>> {
        self.run(|c| {
            let mut st = c.prepare(&format!("{SITE_SELECT} ORDER BY id"))?;
            let rows = st.query_map([], site_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    /// One page of sites by id, and how many there are.
    pub async fn sites_page(&self, offset: u64, limit: u64) -> Result<Page<SiteRecord>> {
        self.run(move |c| {
            let total = count(c, "sites")?;
            let mut st = c.prepare(&format!("{SITE_SELECT} ORDER BY id LIMIT ?1 OFFSET ?2"))?;
            let rows = st.query_map(limit_offset(offset, limit), site_from_row)?;
            let items = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Page { items, total })
        })
        .await
    }

    /// The ids of the sites that use engine or pool `id`.
    pub async fn sites_using(&self, id: i64) -> Result<Vec<i64>> {
        self.run(move |c| {
            let mut st = c.prepare("SELECT id FROM sites WHERE engine_id = ?1 ORDER BY id")?;
            Ok(st
                .query_map([id], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    /// One site.
    pub async fn site(&self, id: i64) -> Result<Option<SiteRecord>> {
        self.run(move |c| {
            Ok(
                c.query_row(&format!("{SITE_SELECT} WHERE id = ?1"), [id], site_from_row)
                    .optional()?,
            )
        })
        .await
    }

    /// Starts recording a scan of `targets` (one pending job each) on an engine or a pool.
    pub async fn create_scan(
        &self,
        site_id: i64,
        engine_id: i64,
        pool: bool,
        targets: Vec<String>,
        at: Millis,
    ) -> Result<i64> {
        self.run(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO scans (site_id, engine_id, status, started_at, pool) VALUES (?1, ?2, 'running', ?3, ?4)",
                params![site_id, engine_id, at, pool as i64],
            )?;
            let scan = tx.last_insert_rowid();
            {
                let mut st =
                    tx.prepare("INSERT INTO scan_jobs (scan_id, target) VALUES (?1, ?2)")?;
                for t in &targets {
                    st.execute(params![scan, t])?;
                }
            }
            tx.commit()?;
            Ok(scan)
        })
        .await
    }

    /// One scan.
    pub async fn scan(&self, id: i64) -> Result<Option<ScanRecord>> {
        self.run(move |c| {
            Ok(c.query_row(
                &format!("{SCAN_SELECT} WHERE s.id = ?1"),
                [id],
                scan_from_row,
            )
            .optional()?)
        })
        .await
    }

    /// One page of every site's scans, newest first; only those that have (`Some(true)`) or
    /// have not (`Some(false)`) ended when asked.
    pub async fn scans_page(
        &self,
        offset: u64,
        limit: u64,
        active: Option<bool>,
    ) -> Result<Page<ScanRecord>> {
        self.run(move |c| {
            let filter = match active {
                None => String::new(),
                Some(true) => format!(" WHERE s.status IN {ACTIVE}"),
                Some(false) => format!(" WHERE s.status NOT IN {ACTIVE}"),
            };
            let total: i64 =
                c.query_row(&format!("SELECT COUNT(*) FROM scans s{filter}"), [], |r| {
                    r.get(0)
                })?;
            let mut st = c.prepare(&format!(
                "{SCAN_SELECT}{filter} ORDER BY s.id DESC LIMIT ?1 OFFSET ?2"
            ))?;
            let items = st
                .query_map(limit_offset(offset, limit), scan_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Page {
                items,
                total: total.max(0) as u64,
            })
        })
        .await
    }

    /// Every job of a scan, by id (moved ones included).
    pub async fn jobs(&self, scan: i64) -> Result<Vec<JobRecord>> {
        self.run(move |c| {
            let mut st = c.prepare(
                "SELECT id, scan_id, target, engine_id, status FROM scan_jobs WHERE scan_id = ?1 ORDER BY id",
            )?;
            Ok(st
                .query_map([scan], |r| {
                    Ok(JobRecord {
                        id: r.get(0)?,
                        scan_id: r.get(1)?,
                        target: r.get(2)?,
                        engine_id: r.get(3)?,
                        status: r.get(4)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    /// Scans that have work waiting for an engine: pool scans, running or waiting, with a
    /// pending job.
    pub async fn scans_with_pending_jobs(&self) -> Result<Vec<i64>> {
        self.run(|c| {
            let mut st = c.prepare(
                "SELECT s.id FROM scans s WHERE s.pool = 1 AND s.status IN ('running', 'dispatched') \
                 AND EXISTS (SELECT 1 FROM scan_jobs j WHERE j.scan_id = s.id AND j.status = 'pending') \
                 ORDER BY s.id",
            )?;
            Ok(st
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    /// Hands a pending job to `engine`; false when it is no longer pending or its scan is not
    /// running or waiting (the scan goes back to running).
    pub async fn assign_job(&self, job: i64, engine: i64) -> Result<bool> {
        self.run(move |c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "UPDATE scan_jobs SET engine_id = ?2, status = 'running' WHERE id = ?1 AND status = 'pending' \
                 AND scan_id IN (SELECT id FROM scans WHERE status IN ('running', 'dispatched'))",
                params![job, engine],
            )?;
            if n > 0 {
                tx.execute(
                    "UPDATE scans SET status = 'running', message = '' \
                     WHERE id = (SELECT scan_id FROM scan_jobs WHERE id = ?1) AND status = 'dispatched'",
                    [job],
                )?;
            }
            tx.commit()?;
            Ok(n > 0)
        })
        .await
    }

    /// Closes a running job as `moved` and queues its target again as a new pending job.
    pub async fn requeue_job(&self, job: i64) -> Result<()> {
        self.run(move |c| {
            let tx = c.transaction()?;
            if tx.execute(
                "UPDATE scan_jobs SET status = 'moved' WHERE id = ?1 AND status = 'running'",
                [job],
            )? > 0
            {
                tx.execute(
                    "INSERT INTO scan_jobs (scan_id, target) SELECT scan_id, target FROM scan_jobs WHERE id = ?1",
                    [job],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Moves the unfinished jobs of `engine` in pool scans back to the queue; the scans they
    /// belong to.
    pub async fn requeue_engine_jobs(&self, engine: i64) -> Result<Vec<i64>> {
        self.run(move |c| {
            let tx = c.transaction()?;
            let jobs: Vec<(i64, i64)> = tx
                .prepare(&format!(
                    "SELECT j.id, j.scan_id FROM scan_jobs j JOIN scans s ON s.id = j.scan_id \
                     WHERE j.engine_id = ?1 AND j.status = 'running' AND s.pool = 1 AND s.status IN {ACTIVE}"
                ))?
                .query_map([engine], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let mut scans = Vec::new();
            for (job, scan) in jobs {
                tx.execute("UPDATE scan_jobs SET status = 'moved' WHERE id = ?1", [job])?;
                tx.execute(
                    "INSERT INTO scan_jobs (scan_id, target) SELECT scan_id, target FROM scan_jobs WHERE id = ?1",
                    [job],
                )?;
                if !scans.contains(&scan) {
                    scans.push(scan);
                }
            }
            tx.commit()?;
            Ok(scans)
        })
        .await
    }

    /// Marks a running or waiting scan as waiting, with why.
    pub async fn scan_waiting(&self, scan: i64, message: String) -> Result<()> {
        self.run(move |c| {
            c.execute(
                "UPDATE scans SET status = 'dispatched', message = ?2 WHERE id = ?1 AND status IN ('running', 'dispatched')",
                params![scan, message],
            )?;
            Ok(())
        })
        .await
    }

    /// Records progress of a running job of `engine_id` (messages for other engines' jobs, or
    /// jobs of ended scans, are ignored). Batched.
    pub async fn scan_progress(
        &self,
        job: i64,
        engine_id: i64,
        done: u64,
        total: u64,
    ) -> Result<()> {
        self.run_batched(move |c| {
            if live_job(c, job, engine_id)?.is_some() {
                c.execute(
                    "UPDATE scan_jobs SET done = ?2, total = ?3 WHERE id = ?1",
                    params![job, done as i64, total as i64],
                )?;
            }
            Ok(())
        })
        .await
    }

    /// Stores one open service found by a running job of `engine_id`; false when that job is
    /// not running (or not this engine's), or its scan has ended. Batched: one savepoint of the
    /// writer's transaction.
    pub async fn scan_finding(
        &self,
        job: i64,
        engine_id: i64,
        ip: String,
        host_name: Option<String>,
        port: u16,
        banner: Option<String>,
    ) -> Result<bool> {
        self.run_batched(move |tx| {
            let Some(scan) = live_job(tx, job, engine_id)? else {
                return Ok(false);
            };
            tx.execute(
                "INSERT INTO assets (ip, host_name, last_scan) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(ip) DO UPDATE SET host_name = COALESCE(excluded.host_name, host_name), \
                 last_scan = excluded.last_scan",
                params![ip, host_name, scan],
            )?;
            let asset_id: i64 = tx.query_row("SELECT id FROM assets WHERE ip = ?1", [&ip], |r| r.get(0))?;
            tx.execute(
                "INSERT INTO services (asset_id, port, protocol, banner) VALUES (?1, ?2, 'tcp', ?3) \
                 ON CONFLICT(asset_id, port, protocol) DO UPDATE SET banner = excluded.banner",
                params![asset_id, port, banner],
            )?;
            Ok(true)
        })
        .await
    }

    /// Ends a running job of `engine_id` (finished, or error with `message`); the scan ends
    /// with its last job. True when this ended the scan.
    pub async fn finish_job(
        &self,
        job: i64,
        engine_id: i64,
        failed: bool,
        message: String,
        at: Millis,
    ) -> Result<bool> {
        self.run(move |c| {
            let tx = c.transaction()?;
            let Some(scan) = live_job(&tx, job, engine_id)? else {
                return Ok(false);
            };
            let status = if failed { "error" } else { "finished" };
            tx.execute(
                "UPDATE scan_jobs SET status = ?2, message = ?3 WHERE id = ?1",
                params![job, status, message],
            )?;
            let ended = end_if_done(&tx, scan, at)?;
            tx.commit()?;
            Ok(ended)
        })
        .await
    }

    /// Ends a scan that has not ended (with all its open jobs) as `status` with `message`.
    pub async fn end_scan(
        &self,
        scan: i64,
        status: ScanStatus,
        message: String,
        at: Millis,
    ) -> Result<()> {
        self.run(move |c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                &format!(
                    "UPDATE scans SET status = ?2, message = ?3, finished_at = ?4 WHERE id = ?1 AND status IN {ACTIVE}"
                ),
                params![scan, status.as_str(), message, at],
            )?;
            if n > 0 {
                tx.execute(
                    "UPDATE scan_jobs SET status = 'stopped' WHERE scan_id = ?1 AND status IN ('pending', 'running')",
                    [scan],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Stops, pauses or resumes a scan: `None` when there is no such scan, `Some(Err(status))`
    /// when the scan's status does not allow it.
    pub async fn control_scan(
        &self,
        scan: i64,
        control: ScanControl,
        at: Millis,
    ) -> Result<Option<Result<(), ScanStatus>>> {
        self.run(move |c| {
            let tx = c.transaction()?;
            let status: Option<String> = tx
                .query_row("SELECT status FROM scans WHERE id = ?1", [scan], |r| r.get(0))
                .optional()?;
            let Some(status) = status.map(|s| ScanStatus::parse(&s)) else {
                return Ok(None);
            };
            let allowed = match control {
                ScanControl::Stop => status.is_active(),
                ScanControl::Pause => matches!(status, ScanStatus::Running | ScanStatus::Dispatched),
                ScanControl::Resume => status == ScanStatus::Paused,
            };
            if !allowed {
                return Ok(Some(Err(status)));
            }
            match control {
                ScanControl::Stop => {
                    tx.execute(
                        "UPDATE scans SET status = 'stopped', message = 'stopped by a user', finished_at = ?2 WHERE id = ?1",
                        params![scan, at],
                    )?;
                    tx.execute(
                        "UPDATE scan_jobs SET status = 'stopped' WHERE scan_id = ?1 AND status IN ('pending', 'running')",
                        [scan],
                    )?;
                }
                ScanControl::Pause => {
                    tx.execute(
                        "UPDATE scans SET status = 'paused', message = 'paused by a user: no new targets are handed out' WHERE id = ?1",
                        [scan],
                    )?;
                }
                ScanControl::Resume => {
                    tx.execute(
                        "UPDATE scans SET status = 'running', message = '' WHERE id = ?1",
                        [scan],
                    )?;
                    // Work that ended while paused may have been the last.
                    end_if_done(&tx, scan, at)?;
                }
            }
            tx.commit()?;
            Ok(Some(Ok(())))
        })
        .await
    }

    /// Fails scans that have not ended: those on one engine, or all of them (`None`, at
    /// start-up).
    pub async fn fail_running_scans(
        &self,
        engine_id: Option<i64>,
        message: String,
        at: Millis,
    ) -> Result<usize> {
        self.run(move |c| {
            let tx = c.transaction()?;
            let filter = format!("status IN {ACTIVE} AND (?1 IS NULL OR (engine_id = ?1 AND pool = 0))");
            tx.execute(
                &format!(
                    "UPDATE scan_jobs SET status = 'stopped' WHERE status IN ('pending', 'running') \
                     AND scan_id IN (SELECT id FROM scans WHERE {filter})"
                ),
                params![engine_id],
            )?;
            let n = tx.execute(
                &format!("UPDATE scans SET status = 'error', message = ?2, finished_at = ?3 WHERE {filter}"),
                params![engine_id, message, at],
            )?;
            tx.commit()?;
            Ok(n)
        })
        .await
    }

    /// Every asset with its services.
    pub async fn assets(&self) -> Result<Vec<AssetRecord>> {
        Ok(self.assets_page(0, u64::MAX).await?.items)
    }

    /// One page of assets by id, each with its services, and how many assets there are.
    pub async fn assets_page(&self, offset: u64, limit: u64) -> Result<Page<AssetRecord>> {
        self.run(move |c| {
            let total = count(c, "assets")?;
            let mut st =
                c.prepare("SELECT id, ip, host_name FROM assets ORDER BY id LIMIT ?1 OFFSET ?2")?;
            let mut assets = st
                .query_map(limit_offset(offset, limit), |r| {
                    Ok(AssetRecord {
                        id: r.get(0)?,
                        ip: r.get(1)?,
                        host_name: r.get(2)?,
                        services: Vec::new(),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut st = c.prepare(
                "SELECT port, protocol, banner FROM services WHERE asset_id = ?1 ORDER BY port",
            )?;
            for a in &mut assets {
                a.services = st
                    .query_map([a.id], |r| {
                        Ok(ServiceRecord {
                            port: r.get::<_, i64>(0)?.clamp(0, u16::MAX as i64) as u16,
                            protocol: r.get(1)?,
                            banner: r.get(2)?,
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
            }
            Ok(Page {
                items: assets,
                total,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab(engine_id: Option<i64>) -> NewSite {
        NewSite {
            name: "lab".into(),
            engine_id,
            targets: vec!["10.0.0.0/30".into()],
            ports: vec![22, 80],
            timeout_ms: 500,
        }
    }

    #[tokio::test]
    async fn a_scan_records_assets_and_services() {
        let s = Store::open_in_memory().unwrap();
        let site = s.create_site(lab(Some(3))).await.unwrap();
        assert_eq!(s.site(site).await.unwrap().unwrap().ports, vec![22, 80]);
        let scan = s
            .create_scan(site, 3, false, vec!["10.0.0.0/30".into()], 100)
            .await
            .unwrap();
        let job = s.jobs(scan).await.unwrap()[0].id;
        assert!(s.assign_job(job, 3).await.unwrap());
        s.scan_progress(job, 3, 2, 8).await.unwrap();
        // Another engine cannot write into this job.
        assert!(
            !s.scan_finding(job, 4, "10.0.0.9".into(), None, 1, None)
                .await
                .unwrap()
        );
        assert!(
            s.scan_finding(job, 3, "10.0.0.1".into(), None, 22, Some("SSH-2.0".into()))
                .await
                .unwrap()
        );
        assert!(
            s.scan_finding(job, 3, "10.0.0.1".into(), None, 80, None)
                .await
                .unwrap()
        );
        assert!(
            s.finish_job(job, 3, false, "done".into(), 200)
                .await
                .unwrap()
        );
        let r = s.scan(scan).await.unwrap().unwrap();
        assert_eq!(
            (r.status, r.done, r.total, r.assets, r.finished_at),
            (ScanStatus::Finished, 2, 8, 1, Some(200))
        );
        let assets = s.assets().await.unwrap();
        assert_eq!(assets.len(), 1);
        assert_eq!(assets[0].services.len(), 2);
        assert_eq!(assets[0].services[0].banner.as_deref(), Some("SSH-2.0"));
        // Finished scans take no more results.
        assert!(
            !s.scan_finding(job, 3, "10.0.0.2".into(), None, 22, None)
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn running_scans_fail_when_their_engine_goes() {
        let s = Store::open_in_memory().unwrap();
        let a = s
            .create_scan(1, 3, false, vec!["x".into()], 0)
            .await
            .unwrap();
        let b = s
            .create_scan(1, 4, false, vec!["x".into()], 0)
            .await
            .unwrap();
        assert_eq!(
            s.fail_running_scans(Some(3), "gone".into(), 5)
                .await
                .unwrap(),
            1
        );
        assert_eq!(s.scan(a).await.unwrap().unwrap().status, ScanStatus::Error);
        assert_eq!(
            s.scan(b).await.unwrap().unwrap().status,
            ScanStatus::Running
        );
    }

    #[tokio::test]
    async fn a_pool_scan_moves_an_engines_unfinished_targets_and_ignores_it_afterwards() {
        let s = Store::open_in_memory().unwrap();
        let scan = s
            .create_scan(1, 9, true, vec!["a".into(), "b".into()], 0)
            .await
            .unwrap();
        let jobs = s.jobs(scan).await.unwrap();
        assert!(s.assign_job(jobs[0].id, 3).await.unwrap());
        assert!(s.assign_job(jobs[1].id, 4).await.unwrap());
        assert!(!s.assign_job(jobs[1].id, 3).await.unwrap(), "already out");
        assert!(
            !s.finish_job(jobs[0].id, 3, false, "ok".into(), 1)
                .await
                .unwrap()
        );
        // Engine 4 goes: target b is queued again; engine 3's finished target stays done.
        assert_eq!(s.requeue_engine_jobs(4).await.unwrap(), vec![scan]);
        assert_eq!(s.scans_with_pending_jobs().await.unwrap(), vec![scan]);
        let now = s.jobs(scan).await.unwrap();
        let pending: Vec<_> = now.iter().filter(|j| j.status == "pending").collect();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].target, "b");
        // A late word from engine 4 counts for nothing.
        assert!(
            !s.scan_finding(jobs[1].id, 4, "10.0.0.2".into(), None, 22, None)
                .await
                .unwrap()
        );
        assert!(
            !s.finish_job(jobs[1].id, 4, false, "late".into(), 2)
                .await
                .unwrap()
        );
        assert!(s.scan(scan).await.unwrap().unwrap().status.is_active());
        let next = pending[0].id;
        assert!(s.assign_job(next, 3).await.unwrap());
        assert!(s.finish_job(next, 3, false, "ok".into(), 3).await.unwrap());
        assert_eq!(
            s.scan(scan).await.unwrap().unwrap().status,
            ScanStatus::Finished
        );
    }

    #[tokio::test]
    async fn stop_pause_and_resume_follow_the_scans_status() {
        let s = Store::open_in_memory().unwrap();
        let scan = s
            .create_scan(1, 9, true, vec!["a".into()], 0)
            .await
            .unwrap();
        assert_eq!(
            s.control_scan(scan, ScanControl::Resume, 1).await.unwrap(),
            Some(Err(ScanStatus::Running))
        );
        assert_eq!(
            s.control_scan(scan, ScanControl::Pause, 1).await.unwrap(),
            Some(Ok(()))
        );
        assert!(
            s.scans_with_pending_jobs().await.unwrap().is_empty(),
            "paused hands out nothing"
        );
        let job = s.jobs(scan).await.unwrap()[0].id;
        assert!(!s.assign_job(job, 3).await.unwrap());
        assert_eq!(
            s.control_scan(scan, ScanControl::Resume, 2).await.unwrap(),
            Some(Ok(()))
        );
        assert_eq!(
            s.control_scan(scan, ScanControl::Stop, 3).await.unwrap(),
            Some(Ok(()))
        );
        let r = s.scan(scan).await.unwrap().unwrap();
        assert_eq!((r.status, r.finished_at), (ScanStatus::Stopped, Some(3)));
        assert_eq!(
            s.control_scan(scan, ScanControl::Stop, 4).await.unwrap(),
            Some(Err(ScanStatus::Stopped))
        );
        assert_eq!(
            s.control_scan(999, ScanControl::Stop, 4).await.unwrap(),
            None
        );
        let page = s.scans_page(0, 10, Some(true)).await.unwrap();
        assert_eq!(page.total, 0);
        assert_eq!(s.scans_page(0, 10, Some(false)).await.unwrap().total, 1);
    }
}
