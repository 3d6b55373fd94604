//! Scans: a site's targets become jobs (one per target) that go to engines as `ScanJob`s over
//! their open sessions; the engines' `ScanProgress`, `ScanFinding` and `ScanFinished` land in
//! the store.
//!
//! A site uses an engine or a pool of engines. An engine scan sends every target to that engine
//! and fails when its session closes. A pool scan divides its targets among the pool's Active
//! engines (round robin); when one of them goes, its unfinished targets go back to the queue
//! and [`dispatch`] hands them to another Active engine of the pool; with none, the scan waits
//! (`dispatched`, with a message saying so) until one is. The [`dispatcher`] task looks for
//! waiting work every [`DISPATCH_INTERVAL`].

use std::time::Duration;

use scan_engine_protocol::{
    Message,
    messages::{ScanJob, ScanOutcome},
};

use crate::{
    context::App,
    engines::{EngineStatus, session::SEND_TIMEOUT, state},
    error::Error,
    store::{EngineRecord, ScanStatus, SiteRecord},
};

/// Ports tried when a site names none.
pub const DEFAULT_PORTS: &[u16] = &[
    21, 22, 23, 25, 53, 80, 110, 143, 443, 445, 3306, 3389, 5432, 8080, 8443,
];
/// Connect and banner timeout when a site names none.
pub const DEFAULT_TIMEOUT_MS: u64 = 1000;
/// Connection attempts an engine may run at once for one job.
pub const MAX_CONCURRENCY: u32 = 256;
/// How often the dispatcher looks for pool work waiting for an engine.
pub const DISPATCH_INTERVAL: Duration = Duration::from_millis(500);

/// Why a scan could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("site {0} does not exist")]
    NoSite(i64),
    /// The site has no targets (HTTP 400).
    #[error("site {0} has no targets to scan")]
    NothingToScan(i64),
    /// The engine is missing, not active, or has no open session (HTTP 409).
    #[error("{0}")]
    EngineNotReady(String),
    #[error(transparent)]
    Console(#[from] Error),
}

/// Whether `engine` may receive work now: Active, with an open session.
fn ready(app: &App, engine: &EngineRecord) -> bool {
    state::status(engine, app.clock.now(), &app.settings.thresholds()) == EngineStatus::Active
        && app.sessions.is_connected(engine.id)
}

/// Starts a scan of `site_id` on its engine or pool (or on `engine_override`, either kind);
/// returns the scan id. An engine that is not Active refuses the scan; a pool scan starts even
/// with no Active engine and waits for one.
pub async fn start(
    app: &App,
    site_id: i64,
    engine_override: Option<i64>,
) -> Result<i64, StartError> {
    let site = app
        .store
        .site(site_id)
        .await?
        .ok_or(StartError::NoSite(site_id))?;
    if site.targets.is_empty() {
        return Err(StartError::NothingToScan(site_id));
    }
    let Some(engine_id) = engine_override.or(site.engine_id) else {
        return Err(StartError::EngineNotReady(format!(
            "site {site_id} has no scan engine or pool: name one with engineId"
        )));
    };
    if let Some(pool) = app.store.pool(engine_id).await? {
        let scan_id = app
            .store
            .create_scan(
                site_id,
                pool.id,
                true,
                site.targets.clone(),
                app.clock.now(),
            )
            .await?;
        tracing::info!(
            scan_id,
            site_id,
            pool_id = pool.id,
            targets = site.targets.len(),
            "pool scan started"
        );
        dispatch(app, scan_id).await?;
        return Ok(scan_id);
    }
    let engine =
        app.store.engine(engine_id).await?.ok_or_else(|| {
            StartError::EngineNotReady(format!("engine {engine_id} does not exist"))
        })?;
    if !ready(app, &engine) {
        let status = state::status(&engine, app.clock.now(), &app.settings.thresholds());
        return Err(StartError::EngineNotReady(format!(
            "engine {engine_id} ({}) is {}, not active: {}",
            engine.name,
            status.as_str(),
            engine.message
        )));
    }
    let scan_id = app
        .store
        .create_scan(
            site_id,
            engine_id,
            false,
            site.targets.clone(),
            app.clock.now(),
        )
        .await?;
    for job in app.store.jobs(scan_id).await? {
        if !app.store.assign_job(job.id, engine_id).await? {
            continue;
        }
        if let Err(e) = send(app, &site, job.id, vec![job.target], engine_id).await {
            app.store
                .end_scan(scan_id, ScanStatus::Error, e.clone(), app.clock.now())
                .await?;
            return Err(StartError::EngineNotReady(format!(
                "engine {engine_id} ({}): {e}",
                engine.name
            )));
        }
    }
    tracing::info!(
        scan_id,
        site_id,
        engine_id,
        targets = site.targets.len(),
        "scan started"
    );
    Ok(scan_id)
}

async fn send(
    app: &App,
    site: &SiteRecord,
    job: i64,
    targets: Vec<String>,
    engine_id: i64,
) -> Result<(), String> {
    let job = ScanJob {
        scan_id: job as u64,
        targets,
        ports: site.ports.clone(),
        connect_timeout_ms: site.timeout_ms,
        banner_timeout_ms: site.timeout_ms,
        max_concurrency: MAX_CONCURRENCY,
    };
    app.sessions.send_scan(engine_id, job, SEND_TIMEOUT).await
}

/// Hands the pending jobs of pool scan `scan_id` to its pool's Active engines, round robin;
/// with none, marks the scan as waiting with a message saying so.
pub async fn dispatch(app: &App, scan_id: i64) -> Result<(), Error> {
    let Some(scan) = app.store.scan(scan_id).await? else {
        return Ok(());
    };
    if !scan.pool || !matches!(scan.status, ScanStatus::Running | ScanStatus::Dispatched) {
        return Ok(());
    }
    let pending: Vec<_> = app
        .store
        .jobs(scan_id)
        .await?
        .into_iter()
        .filter(|j| j.status == "pending")
        .collect();
    if pending.is_empty() {
        return Ok(());
    }
    let Some(site) = app.store.site(scan.site_id).await? else {
        app.store
            .end_scan(
                scan_id,
                ScanStatus::Error,
                "its site no longer exists".into(),
                app.clock.now(),
            )
            .await?;
        return Ok(());
    };
    let Some(pool) = app.store.pool(scan.engine_id).await? else {
        app.store
            .end_scan(
                scan_id,
                ScanStatus::Error,
                format!("engine pool {} no longer exists", scan.engine_id),
                app.clock.now(),
            )
            .await?;
        return Ok(());
    };
    let mut engines = Vec::new();
    for id in &pool.engines {
        if let Some(e) = app.store.engine(*id).await?
            && ready(app, &e)
        {
            engines.push(e.id);
        }
    }
    if engines.is_empty() {
        let message = format!(
            "waiting: engine pool {} ({}) has no Active engine; {} targets wait for one",
            pool.name,
            pool.id,
            pending.len()
        );
        if scan.message != message {
            tracing::info!(
                scan_id,
                pool_id = pool.id,
                "pool scan waiting for an Active engine"
            );
        }
        app.store.scan_waiting(scan_id, message).await?;
        return Ok(());
    }
    for (n, job) in pending.into_iter().enumerate() {
        let engine_id = engines[n % engines.len()];
        if !app.store.assign_job(job.id, engine_id).await? {
            continue;
        }
        match send(app, &site, job.id, vec![job.target], engine_id).await {
            Ok(()) => tracing::debug!(scan_id, job_id = job.id, engine_id, "target handed out"),
            Err(e) => {
                // The engine is going; its session's end queues its other work again.
                tracing::warn!(scan_id, engine_id, error = %e, "handing out a target failed; it waits for another engine");
                app.store.requeue_job(job.id).await?;
            }
        }
    }
    Ok(())
}

/// An engine's session ended or the engine was removed: its unfinished pool work goes to other
/// engines of the pool, its engine scans fail with `reason`.
pub async fn engine_lost(app: &App, engine_id: i64, reason: &str) -> Result<(), Error> {
    let moved = app.store.requeue_engine_jobs(engine_id).await?;
    let failed = app
        .store
        .fail_running_scans(Some(engine_id), reason.to_owned(), app.clock.now())
        .await?;
    if failed > 0 {
        tracing::warn!(
            engine_id,
            scans = failed,
            "scans failed because their engine went"
        );
    }
    for scan in moved {
        tracing::info!(
            engine_id,
            scan_id = scan,
            "the engine's unfinished targets move to other engines of the pool"
        );
        dispatch(app, scan).await?;
    }
    Ok(())
}

/// Hands out waiting pool work every [`DISPATCH_INTERVAL`] until the console stops.
pub async fn dispatcher(app: App) {
    let mut ticker = tokio::time::interval(DISPATCH_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = app.shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let scans = match app.store.scans_with_pending_jobs().await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot read waiting scans");
                continue;
            }
        };
        for scan in scans {
            if let Err(e) = dispatch(&app, scan).await {
                tracing::error!(scan_id = scan, error = %e, "cannot hand out a scan's targets");
            }
        }
    }
}

/// Records a job message from `engine_id` (messages about other engines' jobs are ignored). The
/// protocol's `scan_id` is the job's id.
pub async fn record(app: &App, engine_id: i64, message: Message) {
    let result = match message {
        Message::ScanProgress {
            scan_id,
            done,
            total,
        } => {
            app.store
                .scan_progress(scan_id as i64, engine_id, done, total)
                .await
        }
        Message::ScanFinding { scan_id, finding } => app
            .store
            .scan_finding(
                scan_id as i64,
                engine_id,
                finding.address,
                finding.host_name,
                finding.port,
                finding.banner,
            )
            .await
            .map(|stored| {
                if !stored {
                    tracing::debug!(
                        engine_id,
                        job_id = scan_id,
                        "finding for a job that is not running on this engine ignored"
                    );
                }
            }),
        Message::ScanFinished {
            scan_id,
            outcome,
            message,
        } => {
            let failed = outcome == ScanOutcome::Error;
            tracing::info!(engine_id, job_id = scan_id, failed, detail = %scan_engine_protocol::text::printable(&message, 200), "job ended");
            app.store
                .finish_job(scan_id as i64, engine_id, failed, message, app.clock.now())
                .await
                .map(|ended| {
                    if ended {
                        tracing::info!(engine_id, job_id = scan_id, "scan ended with its last job");
                    }
                })
        }
        _ => Ok(()),
    };
    if let Err(e) = result {
        tracing::error!(engine_id, error = %e, "cannot record a scan result");
    }
}
