//! `/api/3/scans` (every site's scans, paged), `/api/3/scans/{id}` and
//! `/api/3/scans/{id}/{status}` (stop, pause, resume).

use axum::extract::{Path, RawQuery, State};
use serde_json::{Value, json};

use super::{ApiError, ApiResult, Paging, links_only, ok, page, parse_id, quote, self_links};
use crate::{
    clock::rfc3339,
    context::App,
    store::{ScanControl, ScanRecord},
};

/// The spec's `GlobalScan` (a `Scan` with its site); `progress` is an extension.
pub fn scan_json(s: &ScanRecord) -> Value {
    json!({
        "id": s.id,
        "siteId": s.site_id,
        "siteName": s.site_name,
        "engineId": s.engine_id,
        "engineName": s.engine_name,
        "scanType": "Manual",
        "status": s.status.as_str(),
        "assets": s.assets,
        "progress": {"done": s.done, "total": s.total},
        "message": s.message,
        "startTime": rfc3339(s.started_at),
        "endTime": s.finished_at.map(rfc3339),
        "links": self_links(&format!("/api/3/scans/{}", s.id)),
    })
}

/// `?active=` (`true` or `false`); absent means every scan.
fn active(query: &str) -> Result<Option<bool>, ApiError> {
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == "active" {
            return match value {
                "true" => Ok(Some(true)),
                "false" => Ok(Some(false)),
                _ => Err(ApiError::bad_request(format!(
                    "active must be true or false, not {}",
                    quote(value)
                ))),
            };
        }
    }
    Ok(None)
}

/// One page of every site's scans, newest first (`PageOf«GlobalScan»`).
pub async fn list(State(app): State<App>, paging: Paging, RawQuery(q): RawQuery) -> ApiResult {
    let active = active(q.as_deref().unwrap_or_default())?;
    let scans = app
        .store
        .scans_page(paging.offset(), paging.size, active)
        .await?;
    ok(page(
        scans.items.iter().map(scan_json).collect(),
        scans.total,
        "/api/3/scans",
        paging,
    ))
}

/// One scan, with (an extension) `targets`: each target with the engine it went to and how
/// that ended (`pending`, `running`, `finished`, `error`, `stopped`, or `moved` when it went to
/// another engine of the pool).
pub async fn get(State(app): State<App>, Path(id): Path<String>) -> ApiResult {
    let id = parse_id(&id, "id")?;
    let scan = app
        .store
        .scan(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("scan {id} does not exist")))?;
    let jobs = app.store.jobs(id).await?;
    let mut v = scan_json(&scan);
    v["targets"] = jobs
        .iter()
        .map(|j| json!({"address": j.target, "engineId": j.engine_id, "status": j.status}))
        .collect();
    ok(v)
}

/// `stop`, `pause` or `resume` a scan; a word the scan's status does not allow is a 400.
pub async fn control(
    State(app): State<App>,
    Path((id, status)): Path<(String, String)>,
) -> ApiResult {
    let id = parse_id(&id, "id")?;
    let control = match status.as_str() {
        "stop" => ScanControl::Stop,
        "pause" => ScanControl::Pause,
        "resume" => ScanControl::Resume,
        other => {
            return Err(ApiError::bad_request(format!(
                "status must be stop, pause or resume, not {}",
                quote(other)
            )));
        }
    };
    match app.store.control_scan(id, control, app.clock.now()).await? {
        None => Err(ApiError::not_found(format!("scan {id} does not exist"))),
        Some(Err(now)) => Err(ApiError::bad_request(format!(
            "scan {id} is {}: it cannot {status}",
            now.as_str()
        ))),
        Some(Ok(())) => {
            tracing::info!(scan_id = id, action = %status, "scan controlled by a user");
            if control == ScanControl::Resume
                && let Err(e) = crate::scans::dispatch(&app, id).await
            {
                tracing::error!(scan_id = id, error = %e, "cannot hand out a resumed scan's targets");
            }
            links_only(&format!("/api/3/scans/{id}"))
        }
    }
}
