//! `/api/3/sites` and `/api/3/sites/{id}/scans`.

use axum::{
    extract::{Path, State},
    http::StatusCode,
};
use serde_json::{Value, json};

use super::{
    ApiError, ApiResult, Body, Paging, ok, page, parse_id, reply, required_text, self_links,
};
use crate::{
    context::App,
    scans::{self, StartError},
    store::{NewSite, SiteRecord},
};

/// The spec's `Site`; `engineId` (as in `SiteCreateResource`), `scan`, `ports` and `timeoutMs`
/// are extensions. `scanEngine` names an engine or a pool (one id space).
fn site_json(s: &SiteRecord) -> Value {
    json!({
        "id": s.id,
        "name": s.name,
        "type": "static",
        "scanEngine": s.engine_id,
        "engineId": s.engine_id,
        "scan": {"assets": {"includedTargets": {"addresses": s.targets}}},
        "ports": s.ports,
        "timeoutMs": s.timeout_ms,
        "links": self_links(&format!("/api/3/sites/{}", s.id)),
    })
}

/// One page of sites.
pub async fn list(State(app): State<App>, paging: Paging) -> ApiResult {
    let sites = app.store.sites_page(paging.offset(), paging.size).await?;
    ok(page(
        sites.items.iter().map(site_json).collect(),
        sites.total,
        "/api/3/sites",
        paging,
    ))
}

/// One site.
pub async fn get(State(app): State<App>, Path(id): Path<String>) -> ApiResult {
    let id = parse_id(&id, "id")?;
    let site = app
        .store
        .site(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("site {id} does not exist")))?;
    ok(site_json(&site))
}

fn targets(body: &Body) -> Result<Vec<String>, ApiError> {
    const FIELD: &str = "scan.assets.includedTargets.addresses";
    // Optional, as in the spec's `SiteCreateResource`: a site without targets has nothing to
    // scan until it gets some.
    let Some(addresses) = body
        .0
        .get("scan")
        .and_then(|v| v.get("assets"))
        .and_then(|v| v.get("includedTargets"))
        .and_then(|v| v.get("addresses"))
        .filter(|v| !v.is_null())
    else {
        return Ok(Vec::new());
    };
    let list = addresses
        .as_array()
        .ok_or_else(|| ApiError::bad_request(format!("{FIELD} must be an array of strings")))?;
    if list.is_empty() {
        return Ok(Vec::new());
    }
    let targets: Vec<String> = list
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "{FIELD} must hold addresses, CIDR blocks or host names"
                    ))
                })
        })
        .collect::<Result<_, _>>()?;
    // The engine's own bounds (the largest block, the most addresses per scan), checked now
    // rather than when a scan is refused.
    scan_engine_protocol::targets::count(&targets)
        .map_err(|problem| ApiError::bad_request(format!("{FIELD}: {problem}")))?;
    Ok(targets)
}

fn ports(body: &Body) -> Result<Vec<u16>, ApiError> {
    match body.0.get("ports") {
        None | Some(Value::Null) => Ok(scans::DEFAULT_PORTS.to_vec()),
        Some(Value::Array(list)) if !list.is_empty() => list
            .iter()
            .map(|v| {
                v.as_u64()
                    .filter(|p| (1..=65535).contains(p))
                    .map(|p| p as u16)
                    .ok_or_else(|| {
                        ApiError::bad_request("ports must hold integers from 1 to 65535")
                    })
            })
            .collect(),
        Some(_) => Err(ApiError::bad_request(
            "ports must be a non-empty array of integers from 1 to 65535",
        )),
    }
}

/// Creates a site: only `name` is required (the spec's `SiteCreateResource`); `engineId` names
/// an engine or a pool.
pub async fn create(State(app): State<App>, body: Body) -> ApiResult {
    let name = required_text(body.string("name")?, "name")?;
    let engine_id = body.integer("engineId", 1..=i64::MAX)?;
    if let Some(id) = engine_id
        && app.store.engine(id).await?.is_none()
        && app.store.pool(id).await?.is_none()
    {
        return Err(ApiError::bad_request(format!(
            "engineId: no scan engine or engine pool has id {id}"
        )));
    }
    let targets = targets(&body)?;
    let ports = ports(&body)?;
    let timeout_ms = body
        .integer("timeoutMs", 1..=600_000)?
        .map(|t| t as u64)
        .unwrap_or(scans::DEFAULT_TIMEOUT_MS);
    let id = app
        .store
        .create_site(NewSite {
            name,
            engine_id,
            targets,
            ports,
            timeout_ms,
        })
        .await?;
    Ok(reply(
        StatusCode::CREATED,
        &json!({"id": id, "links": self_links(&format!("/api/3/sites/{id}"))}),
    ))
}

/// Starts a scan of a site on its engine or pool (or on `engineId`, either): `200` with `{id,
/// links}` as the spec says; 409 when an engine is not active.
pub async fn start_scan(State(app): State<App>, Path(id): Path<String>, body: Body) -> ApiResult {
    let site_id = parse_id(&id, "id")?;
    let engine_override = body.integer("engineId", 1..=i64::MAX)?;
    match scans::start(&app, site_id, engine_override).await {
        Ok(scan_id) => {
            ok(json!({"id": scan_id, "links": self_links(&format!("/api/3/scans/{scan_id}"))}))
        }
        Err(StartError::NoSite(id)) => {
            Err(ApiError::not_found(format!("site {id} does not exist")))
        }
        Err(StartError::EngineNotReady(message)) => Err(ApiError::conflict(message)),
        Err(e @ StartError::NothingToScan(_)) => Err(ApiError::bad_request(e.to_string())),
        Err(StartError::Console(e)) => Err(e.into()),
    }
}
