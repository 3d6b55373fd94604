//! `/api/3/scan_engine_pools`: create, list, get, update, delete, and the pool's engines (list,
//! replace, add, remove) and sites; `/api/3/scan_engines/{id}/scan_engine_pools`.

use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::{
    AnyJson, ApiError, ApiResult, Body, links_only, ok, parse_id, required_text, self_links,
};
use crate::{
    context::App,
    store::{PoolChange, PoolRecord},
};

const ROOT: &str = "/api/3/scan_engine_pools";

fn path(id: i64) -> String {
    format!("{ROOT}/{id}")
}

/// The spec's `EnginePool`.
fn pool_json(p: &PoolRecord) -> Value {
    json!({
        "id": p.id,
        "name": p.name,
        "engines": p.engines,
        "links": self_links(&path(p.id)),
    })
}

fn no_pool(id: i64) -> ApiError {
    ApiError::not_found(format!("engine pool {id} does not exist"))
}

/// The answer to a refused change.
fn refused(change: PoolChange, id: i64, name: Option<&str>) -> ApiError {
    match change {
        PoolChange::Done => ApiError::bad_request("nothing to refuse"),
        PoolChange::NoPool => no_pool(id),
        PoolChange::NameTaken => ApiError::conflict(format!(
            "an engine pool named {} already exists",
            super::quote(name.unwrap_or_default())
        )),
        PoolChange::NoEngine(e) => {
            ApiError::bad_request(format!("engines: scan engine {e} does not exist"))
        }
    }
}

/// An array of engine ids, as `field`.
fn engine_ids(value: &Value, field: &str) -> Result<Vec<i64>, ApiError> {
    let list = value
        .as_array()
        .ok_or_else(|| ApiError::bad_request(format!("{field} must be an array of engine ids")))?;
    list.iter()
        .map(|v| {
            v.as_i64().filter(|id| *id > 0).ok_or_else(|| {
                ApiError::bad_request(format!("{field} must hold positive integer engine ids"))
            })
        })
        .collect()
}

fn optional_engines(body: &Body) -> Result<Option<Vec<i64>>, ApiError> {
    match body.0.get("engines") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => engine_ids(v, "engines").map(Some),
    }
}

async fn find(app: &App, raw: &str) -> Result<PoolRecord, ApiError> {
    let id = parse_id(raw, "id")?;
    app.store.pool(id).await?.ok_or_else(|| no_pool(id))
}

/// Every pool (the spec's `Resources«EnginePool»`, not paged).
pub async fn list(State(app): State<App>) -> ApiResult {
    let pools = app.store.pools().await?;
    ok(json!({
        "resources": pools.iter().map(pool_json).collect::<Vec<_>>(),
        "links": self_links(ROOT),
    }))
}

/// Creates a pool from `{name, engines?}`: `200` with `{id, links}`, as the spec says.
pub async fn create(State(app): State<App>, body: Body) -> ApiResult {
    let name = required_text(body.string("name")?, "name")?;
    let engines = optional_engines(&body)?.unwrap_or_default();
    match app.store.create_pool(name.clone(), engines).await? {
        Ok(id) => {
            tracing::info!(pool_id = id, "engine pool created");
            ok(json!({"id": id, "links": self_links(&path(id))}))
        }
        Err(change) => Err(refused(change, 0, Some(&name))),
    }
}

/// One pool.
pub async fn get(State(app): State<App>, Path(id): Path<String>) -> ApiResult {
    ok(pool_json(&find(&app, &id).await?))
}

/// Renames a pool and, when `engines` is given, replaces its engines.
pub async fn update(State(app): State<App>, Path(id): Path<String>, body: Body) -> ApiResult {
    let id = parse_id(&id, "id")?;
    let name = match body.string("name")? {
        Some(n) => Some(required_text(Some(n), "name")?),
        None => None,
    };
    let engines = optional_engines(&body)?;
    match app.store.update_pool(id, name.clone(), engines).await? {
        PoolChange::Done => links_only(&path(id)),
        change => Err(refused(change, id, name.as_deref())),
    }
}

/// Deletes a pool; its engines stay.
pub async fn delete(State(app): State<App>, Path(id): Path<String>) -> ApiResult {
    let id = parse_id(&id, "id")?;
    if !app.store.delete_pool(id).await? {
        return Err(no_pool(id));
    }
    tracing::info!(pool_id = id, "engine pool deleted");
    links_only(ROOT)
}

/// The pool's engines (the spec's `ReferencesWith«EngineID,Link»`).
pub async fn engines(State(app): State<App>, Path(id): Path<String>) -> ApiResult {
    let p = find(&app, &id).await?;
    ok(json!({
        "resources": p.engines,
        "links": self_links(&format!("{}/engines", path(p.id))),
    }))
}

/// Replaces the pool's engines with a JSON array of engine ids.
pub async fn set_engines(
    State(app): State<App>,
    Path(id): Path<String>,
    AnyJson(body): AnyJson,
) -> ApiResult {
    let id = parse_id(&id, "id")?;
    let engines = engine_ids(&body, "the request body")?;
    match app.store.update_pool(id, None, Some(engines)).await? {
        PoolChange::Done => links_only(&format!("{}/engines", path(id))),
        change => Err(refused(change, id, None)),
    }
}

async fn membership(app: &App, id: &str, engine: &str, member: bool) -> ApiResult {
    let id = parse_id(id, "id")?;
    let engine = parse_id(engine, "engineId")?;
    match app.store.set_pool_member(id, engine, member).await? {
        PoolChange::Done => links_only(&format!("{}/engines/{engine}", path(id))),
        PoolChange::NoEngine(e) => Err(ApiError::not_found(format!(
            "scan engine {e} does not exist"
        ))),
        change => Err(refused(change, id, None)),
    }
}

/// Adds an engine to the pool.
pub async fn add_engine(
    State(app): State<App>,
    Path((id, engine)): Path<(String, String)>,
) -> ApiResult {
    membership(&app, &id, &engine, true).await
}

/// Takes an engine out of the pool.
pub async fn remove_engine(
    State(app): State<App>,
    Path((id, engine)): Path<(String, String)>,
) -> ApiResult {
    membership(&app, &id, &engine, false).await
}

/// The sites that scan with the pool (the spec's `ReferencesWith«SiteID,Link»`).
pub async fn sites(State(app): State<App>, Path(id): Path<String>) -> ApiResult {
    let p = find(&app, &id).await?;
    let sites = app.store.sites_using(p.id).await?;
    ok(json!({
        "resources": sites,
        "links": self_links(&format!("{}/sites", path(p.id))),
    }))
}

/// The pools an engine belongs to (`GET /scan_engines/{id}/scan_engine_pools`).
pub async fn of_engine(State(app): State<App>, Path(id): Path<String>) -> ApiResult {
    let id = parse_id(&id, "id")?;
    if app.store.engine(id).await?.is_none() {
        return Err(ApiError::not_found(format!(
            "scan engine {id} does not exist"
        )));
    }
    let mut pools = Vec::new();
    for p in app.store.pools_of_engine(id).await? {
        pools.extend(app.store.pool(p).await?);
    }
    ok(json!({
        "resources": pools.iter().map(pool_json).collect::<Vec<_>>(),
        "links": self_links(&format!("/api/3/scan_engines/{id}/scan_engine_pools")),
    }))
}
