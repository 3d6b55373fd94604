//! Sites (what to scan, with which engine), scans (one run of a site) and their results
//! (assets and their open services).

use rusqlite::{OptionalExtension, Row, params};

use super::{Page, Store, count, limit_offset};
use crate::{clock::Millis, error::Result};

/// A site to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSite {
    pub name: String,
    pub engine_id: i64,
    pub targets: Vec<String>,
    pub ports: Vec<u16>,
    pub timeout_ms: u64,
}

/// One row of `sites`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteRecord {
    pub id: i64,
    pub name: String,
    pub engine_id: i64,
    pub targets: Vec<String>,
    pub ports: Vec<u16>,
    pub timeout_ms: u64,
}

/// Where a scan is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanStatus {
    Running,
    Finished,
    Error,
}

impl ScanStatus {
    /// The API and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ScanStatus::Running => "running",
            ScanStatus::Finished => "finished",
            ScanStatus::Error => "error",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "running" => ScanStatus::Running,
            "finished" => ScanStatus::Finished,
            _ => ScanStatus::Error,
        }
    }
}

/// One row of `scans`, with the number of assets it found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanRecord {
    pub id: i64,
    pub site_id: i64,
    pub engine_id: i64,
    pub status: ScanStatus,
    pub done: u64,
    pub total: u64,
    pub message: String,
    pub started_at: Millis,
    pub finished_at: Option<Millis>,
    pub assets: u64,
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

fn site_from_row(r: &Row<'_>) -> rusqlite::Result<SiteRecord> {
    let targets: String = r.get(3)?;
    let ports: String = r.get(4)?;
    Ok(SiteRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        engine_id: r.get(2)?,
        targets: serde_json::from_str(&targets).unwrap_or_default(),
        ports: serde_json::from_str(&ports).unwrap_or_default(),
        timeout_ms: r.get::<_, i64>(5)?.max(0) as u64,
    })
}

const SCAN_SELECT: &str = "SELECT s.id, s.site_id, s.engine_id, s.status, s.done, s.total, s.message, \
     s.started_at, s.finished_at, (SELECT COUNT(*) FROM assets a WHERE a.last_scan = s.id) FROM scans s";

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
    })
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
            let mut st = c.prepare(
                "SELECT id, name, engine_id, targets, ports, timeout_ms FROM sites ORDER BY id",
            )?;
            let rows = st.query_map([], site_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    /// One page of sites by id, and how many there are.
    pub async fn sites_page(&self, offset: u64, limit: u64) -> Result<Page<SiteRecord>> {
        self.run(move |c| {
            let total = count(c, "sites")?;
            let mut st = c.prepare(
                "SELECT id, name, engine_id, targets, ports, timeout_ms FROM sites ORDER BY id \
                 LIMIT ?1 OFFSET ?2",
            )?;
            let rows = st.query_map(limit_offset(offset, limit), site_from_row)?;
            let items = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Page { items, total })
        })
        .await
    }

    /// One site.
    pub async fn site(&self, id: i64) -> Result<Option<SiteRecord>> {
        self.run(move |c| {
            Ok(c.query_row(
                "SELECT id, name, engine_id, targets, ports, timeout_ms FROM sites WHERE id = ?1",
                [id],
                site_from_row,
            )
            .optional()?)
        })
        .await
    }

    /// Starts recording a scan.
    pub async fn create_scan(&self, site_id: i64, engine_id: i64, at: Millis) -> Result<i64> {
        self.run(move |c| {
            c.execute(
                "INSERT INTO scans (site_id, engine_id, status, started_at) VALUES (?1, ?2, 'running', ?3)",
                params![site_id, engine_id, at],
            )?;
            Ok(c.last_insert_rowid())
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

    /// Records progress of a running scan of `engine_id` (messages for other engines' scans are
    /// ignored, so an engine cannot write into someone else's scan). Batched.
    pub async fn scan_progress(
        &self,
        id: i64,
        engine_id: i64,
        done: u64,
        total: u64,
    ) -> Result<()> {
        self.run_batched(move |c| {
            c.execute(
                "UPDATE scans SET done = ?3, total = ?4 WHERE id = ?1 AND engine_id = ?2 AND status = 'running'",
                params![id, engine_id, done as i64, total as i64],
            )?;
            Ok(())
        })
        .await
    }

    /// Stores one open service found by a running scan of `engine_id`; false when that scan is
    /// not running (or not this engine's). Batched: one savepoint of the writer's transaction.
    pub async fn scan_finding(
        &self,
        id: i64,
        engine_id: i64,
        ip: String,
        host_name: Option<String>,
        port: u16,
        banner: Option<String>,
    ) -> Result<bool> {
        self.run_batched(move |tx| {
            let running = tx
                .query_row(
                    "SELECT 1 FROM scans WHERE id = ?1 AND engine_id = ?2 AND status = 'running'",
                    params![id, engine_id],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if !running {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO assets (ip, host_name, last_scan) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(ip) DO UPDATE SET host_name = COALESCE(excluded.host_name, host_name), \
                 last_scan = excluded.last_scan",
                params![ip, host_name, id],
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

    /// Ends a running scan of `engine_id`.
    pub async fn finish_scan(
        &self,
        id: i64,
        engine_id: i64,
        status: ScanStatus,
        message: String,
        at: Millis,
    ) -> Result<()> {
        self.run(move |c| {
            c.execute(
                "UPDATE scans SET status = ?3, message = ?4, finished_at = ?5 \
                 WHERE id = ?1 AND engine_id = ?2 AND status = 'running'",
                params![id, engine_id, status.as_str(), message, at],
            )?;
            Ok(())
        })
        .await
    }

    /// Marks running scans as failed: those of one engine, or all of them (`None`, at start-up).
    pub async fn fail_running_scans(
        &self,
        engine_id: Option<i64>,
        message: String,
        at: Millis,
    ) -> Result<usize> {
        self.run(move |c| {
            Ok(c.execute(
                "UPDATE scans SET status = 'error', message = ?2, finished_at = ?3 \
                 WHERE status = 'running' AND (?1 IS NULL OR engine_id = ?1)",
                params![engine_id, message, at],
            )?)
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

    #[tokio::test]
    async fn a_scan_records_assets_and_services() {
        let s = Store::open_in_memory().unwrap();
        let site = s
            .create_site(NewSite {
                name: "lab".into(),
                engine_id: 3,
                targets: vec!["10.0.0.0/30".into()],
                ports: vec![22, 80],
                timeout_ms: 500,
            })
            .await
            .unwrap();
        assert_eq!(s.site(site).await.unwrap().unwrap().ports, vec![22, 80]);
        let scan = s.create_scan(site, 3, 100).await.unwrap();
        s.scan_progress(scan, 3, 2, 8).await.unwrap();
        // Another engine cannot write into this scan.
        assert!(
            !s.scan_finding(scan, 4, "10.0.0.9".into(), None, 1, None)
                .await
                .unwrap()
        );
        assert!(
            s.scan_finding(scan, 3, "10.0.0.1".into(), None, 22, Some("SSH-2.0".into()))
                .await
                .unwrap()
        );
        assert!(
            s.scan_finding(scan, 3, "10.0.0.1".into(), None, 80, None)
                .await
                .unwrap()
        );
        s.finish_scan(scan, 3, ScanStatus::Finished, "done".into(), 200)
            .await
            .unwrap();
        let r = s.scan(scan).await.unwrap().unwrap();
        assert_eq!(
            (r.status, r.done, r.total, r.assets),
            (ScanStatus::Finished, 2, 8, 1)
        );
        let assets = s.assets().await.unwrap();
        assert_eq!(assets.len(), 1);
        assert_eq!(assets[0].services.len(), 2);
        assert_eq!(assets[0].services[0].banner.as_deref(), Some("SSH-2.0"));
        // Finished scans take no more results.
        assert!(
            !s.scan_finding(scan, 3, "10.0.0.2".into(), None, 22, None)
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn running_scans_fail_when_their_engine_goes() {
        let s = Store::open_in_memory().unwrap();
        let a = s.create_scan(1, 3, 0).await.unwrap();
        let b = s.create_scan(1, 4, 0).await.unwrap();
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
}
