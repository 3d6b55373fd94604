//! `/api/3/scan_engines`: list, create (console-to-engine), get, delete, refresh.

use axum::{
    extract::{Path, State},
    http::StatusCode,
};
use serde_json::{Value, json};

use super::{
    ApiError, ApiResult, Body, Paging, ok, page, parse_id, reply, required_text, self_links,
};
use crate::{
    app::App,
    clock::rfc3339,
    engines::state,
    error::Error,
    store::{Direction, EngineRecord, Observation, Outcome},
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
    let name = required_text(body.string("name")?, "name")?;
    // The same rule the session protocol holds engines' names to: an engine added here greets
    // the console with this name, and the name is shown in the API, pages and statuses.
    scan_engine_protocol::text::check_name(&name)
        .map_err(|why| ApiError::bad_request(format!("name {why}")))?;
    let address = required_text(body.string("address")?, "address")?;
    if address.chars().any(char::is_whitespace) {
        return Err(ApiError::bad_request(
            "address must be a host name or IP address",
        ));
    }
    let port = body
        .integer("port", 1..=65535)?
        .unwrap_or(scan_engine_protocol::DEFAULT_ENGINE_PORT as i64) as u16;
    let id = match app
        .store
        .create_standard_engine(&name, &address, port, app.clock.now())
        .await
    {
        Ok(id) => id,
        Err(Error::NameTaken(name)) => {
            return Err(ApiError::conflict(format!(
                "a scan engine named {name:?} already exists"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(engine_id = id, engine = %name, %address, port, "console-to-engine engine added");
    app.supervisors.start(&app, id);
    Ok(reply(
        StatusCode::CREATED,
        &json!({"id": id, "links": self_links(&path(id))}),
    ))
}

/// Removes an engine: stops dialing it, closes its session, unpins its certificate.
pub async fn delete(State(app): State<App>, Path(id): Path<String>) -> ApiResult {
    let e = find(&app, &id).await?;
    app.supervisors.stop(e.id);
    app.sessions.close(e.id);
    app.store.delete_engine(e.id).await?;
    app.store
        .fail_running_scans(Some(e.id), "the engine was deleted".into(), app.clock.now())
        .await?;
    tracing::info!(engine_id = e.id, engine = %e.name, "engine deleted");
    ok(json!({"links": []}))
}

/// Checks an engine now and returns it: a ping over its open session, or (console-to-engine)
/// a dial.
pub async fn refresh(State(app): State<App>, Path(id): Path<String>) -> ApiResult {
    let e = find(&app, &id).await?;
    let timeout = app.settings.handshake_timeout;
    match app.sessions.ping(e.id, timeout).await {
        Some(Ok(())) => {}
        Some(Err(message)) => observe_failure(&app, e.id, message).await?,
        None => match e.direction {
            Direction::ConsoleToEngine => {
                if !app.supervisors.refresh(e.id, timeout * 2).await {
                    app.supervisors.start(&app, e.id);
                }
            }
            Direction::EngineToConsole => {
                observe_failure(
                    &app,
                    e.id,
                    "the engine has no open session: it has not called the console".into(),
                )
                .await?
            }
        },
    }
    let e = find(&app, &id).await?;
    ok(engine_json(&app, &e))
}

async fn observe_failure(app: &App, id: i64, message: String) -> Result<(), ApiError> {
    let obs = Observation {
        outcome: Outcome::Unreachable,
        message,
        product_version: None,
        at: app.clock.now(),
    };
    app.store.observe(id, obs).await?;
    Ok(())
}
