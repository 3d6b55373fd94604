//! Scans: a site's targets go to its engine as a `ScanJob` over the engine's open session; the
//! engine's `ScanProgress`, `ScanFinding` and `ScanFinished` land in the store.

use scan_engine_protocol::{
    Message,
    messages::{ScanJob, ScanOutcome},
};

use crate::{
    context::App,
    engines::{EngineStatus, session::SEND_TIMEOUT, state},
    error::Error,
    store::ScanStatus,
};

/// Ports tried when a site names none.
pub const DEFAULT_PORTS: &[u16] = &[
    21, 22, 23, 25, 53, 80, 110, 143, 443, 445, 3306, 3389, 5432, 8080, 8443,
];
/// Connect and banner timeout when a site names none.
pub const DEFAULT_TIMEOUT_MS: u64 = 1000;
/// Connection attempts an engine may run at once for one scan.
pub const MAX_CONCURRENCY: u32 = 256;

/// Why a scan could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("site {0} does not exist")]
    NoSite(i64),
    /// The engine is missing, not active, or has no open session (HTTP 409).
    #[error("{0}")]
    EngineNotReady(String),
    #[error(transparent)]
    Console(#[from] Error),
}

/// Starts a scan of `site_id` on its engine (or on `engine_override`); returns the scan id.
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
    let engine_id = engine_override.unwrap_or(site.engine_id);
    let engine =
        app.store.engine(engine_id).await?.ok_or_else(|| {
            StartError::EngineNotReady(format!("engine {engine_id} does not exist"))
        })?;
    let status = state::status(&engine, app.clock.now(), &app.settings.thresholds());
    if status != EngineStatus::Active || !app.sessions.is_connected(engine_id) {
        return Err(StartError::EngineNotReady(format!(
            "engine {engine_id} ({}) is {}, not active: {}",
            engine.name,
            status.as_str(),
            engine.message
        )));
    }
    let scan_id = app
        .store
        .create_scan(site_id, engine_id, app.clock.now())
        .await?;
    let job = ScanJob {
        scan_id: scan_id as u64,
        targets: site.targets.clone(),
        ports: site.ports.clone(),
        connect_timeout_ms: site.timeout_ms,
        banner_timeout_ms: site.timeout_ms,
        max_concurrency: MAX_CONCURRENCY,
    };
    if let Err(e) = app.sessions.send_scan(engine_id, job, SEND_TIMEOUT).await {
        app.store
            .finish_scan(
                scan_id,
                engine_id,
                ScanStatus::Error,
                e.clone(),
                app.clock.now(),
            )
            .await?;
        return Err(StartError::EngineNotReady(format!(
            "engine {engine_id} ({}): {e}",
            engine.name
        )));
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

/// Records a scan message from `engine_id` (messages about other engines' scans are ignored).
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
                        scan_id,
                        "finding for a scan that is not running on this engine ignored"
                    );
                }
            }),
        Message::ScanFinished {
            scan_id,
            outcome,
            message,
        } => {
            let status = match outcome {
                ScanOutcome::Finished => ScanStatus::Finished,
                ScanOutcome::Error => ScanStatus::Error,
            };
            tracing::info!(engine_id, scan_id, status = status.as_str(), detail = %message, "scan ended");
            app.store
                .finish_scan(scan_id as i64, engine_id, status, message, app.clock.now())
                .await
        }
        _ => Ok(()),
    };
    if let Err(e) = result {
        tracing::error!(engine_id, error = %e, "cannot record a scan result");
    }
}
