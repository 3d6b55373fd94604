//! `/api/3/scan_engines/shared_secret` and its `time_to_live`.

use axum::{extract::State, http::StatusCode};
use serde_json::json;

use super::{ApiError, ApiResult, ok, plain};
use crate::context::App;

fn none() -> ApiError {
    ApiError::not_found("there is no valid shared secret")
}

/// The current secret as `text/plain` (as the spec says), or 404.
pub async fn get(State(app): State<App>) -> ApiResult {
    let current = app.secrets.current().await?.ok_or_else(none)?;
    Ok(plain(StatusCode::OK, current.value.expose().to_owned()))
}

/// The current secret, or a new one when none is valid: `201`, `text/plain`.
pub async fn create(State(app): State<App>) -> ApiResult {
    let current = app.secrets.current_or_new().await?;
    Ok(plain(
        StatusCode::CREATED,
        current.value.expose().to_owned(),
    ))
}

/// Revokes the secret (engines already paired stay paired).
pub async fn revoke(State(app): State<App>) -> ApiResult {
    app.secrets.revoke().await?;
    ok(json!({"links": []}))
}

/// Seconds the current secret has left, or 404.
pub async fn time_to_live(State(app): State<App>) -> ApiResult {
    let ttl = app.secrets.time_to_live().await?.ok_or_else(none)?;
    ok(json!(ttl))
}
