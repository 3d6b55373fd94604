//! `GET /api/3/assets`: what scans found.

use axum::extract::State;
use serde_json::json;

use super::{ApiResult, Paging, ok, page};
use crate::context::App;

/// One page of assets with their open services.
pub async fn list(State(app): State<App>, paging: Paging) -> ApiResult {
    let assets = app.store.assets_page(paging.offset(), paging.size).await?;
    let resources = assets
        .items
        .into_iter()
        .map(|a| {
            let services: Vec<_> = a
                .services
                .into_iter()
                .map(|s| json!({"port": s.port, "protocol": s.protocol, "banner": s.banner}))
                .collect();
            json!({
                "id": a.id,
                "ip": a.ip,
                "hostName": a.host_name,
                "services": services,
                "links": [],
            })
        })
        .collect();
    ok(page(resources, assets.total, "/api/3/assets", paging))
}
