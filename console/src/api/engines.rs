//! `/api/3/scan_engines`: list, create (console-to-engine), get, delete, refresh.

use axum::{
    extract::{Path, State},
    http::StatusCode,
};
use serde_json::{Value, json};

use super::{ApiError, ApiResult, Body, Paging, ok, page, parse_id, reply, self_links};
use crate::{
    clock::rfc3339,
    context::App,
    engines::{
        admin::{self, AddError, NewEngine},
        state,
    },
    store::EngineRecord,
};

fn path(id: i64) -> String {
    format!("/api/3/scan_engines/{id}")
}

/// The API's Engine shape.
pub fn engine_json(app: &App, e: &EngineRecord) -> Value {
    let status = state::status(e, app.clock.now(), &app.settings.thresholds());
    json!({
        "id": e.id,
        "name": e.name,
        "address": e.address,
        "port": e.port,
        "status": status.as_str(),
        "productVersion": e.product_version,
        "lastRefreshedDate": e.last_refreshed.map(rfc3339),
        "lastUpdatedDate": rfc3339(e.last_updated),
        "direction": e.direction.as_str(),
        "message": e.message,
        "links": self_links(&path(e.id)),
    })
}

async fn find(app: &App, raw: &str) -> Result<EngineRecord, ApiError> {
    let id = parse_id(raw, "id")?;
    app.store
        .engine(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("scan engine {id} does not exist")))
}

/// One page of engines.
pub async fn list(State(app): State<App>, paging: Paging) -> ApiResult {
    let engines = app.store.engines_page(paging.offset(), paging.size).await?;
    let resources = engines.items.iter().map(|e| engine_json(&app, e)).collect();
    ok(page(
        resources,
        engines.total,
        "/api/3/scan_engines",
        paging,
    ))
}

/// One engine.
pub async fn get(State(app): State<App>, Path(id): Path<String>) -> ApiResult {
    let e = find(&app, &id).await?;
    ok(engine_json(&app, &e))
}

/// Adds a console-to-engine engine and starts dialing it.
pub async fn create(State(app): State<App>, body: Body) -> ApiResult {
    let name = body.string("name")?;
    let address = body.string("address")?;
    let port = body.integer("port", 1..=65535)?;
    let new = NewEngine::check(name.as_deref(), address.as_deref(), port)
        .map_err(|e| ApiError::bad_request(e.message))?;
    let id = match admin::add(&app, new).await {
        Ok(id) => id,
        Err(AddError::Invalid(e)) => return Err(ApiError::bad_request(e.message)),
        Err(AddError::NameTaken(name)) => {
            return Err(ApiError::conflict(format!(
                "a scan engine named {name:?} already exists"
            )));
        }
        Err(AddError::Console(e)) => return Err(e.into()),
    };
    Ok(reply(
        StatusCode::CREATED,
        &json!({"id": id, "links": self_links(&path(id))}),
    ))
}

/// Removes an engine: stops dialing it, closes its session, unpins its certificate.
pub async fn delete(State(app): State<App>, Path(id): Path<String>) -> ApiResult {
    let e = find(&app, &id).await?;
    admin::remove(&app, &e).await?;
    ok(json!({"links": []}))
}

/// Checks an engine now and returns it: a ping over its open session, or (console-to-engine)
/// a dial.
pub async fn refresh(State(app): State<App>, Path(id): Path<String>) -> ApiResult {
    let e = find(&app, &id).await?;
    admin::refresh(&app, &e).await?;
    let e = find(&app, &id).await?;
    ok(engine_json(&app, &e))
}
