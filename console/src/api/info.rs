//! `GET /api/3/administration/info`.

use axum::extract::State;
use serde_json::json;

use super::{ApiResult, ok, self_links};
use crate::context::App;

/// The console's version and, as an extension, how engines reach it: the fingerprint engines
/// trust (Automatic authorization) and the engine listener's port.
pub async fn get(State(app): State<App>) -> ApiResult {
    ok(json!({
        "version": {"semantic": app.settings.product_version},
        "engineCommunication": {
            "certificateFingerprint": app.identity.fingerprint().as_str(),
            "port": app.settings.engine_port,
        },
        "links": self_links("/api/3/administration/info"),
    }))
}
