//! Plain HTTP probes: `GET /healthz` (the process is alive) and `GET /readyz` (the engine can
//! do its job: listening for its console, or holding an admitted session with it).

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use axum::{Router, extract::State, http::StatusCode, routing::get};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::Context;

/// Binds `addr` and serves the probes until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    ctx: Arc<Context>,
    shutdown: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the health listener on {addr}"))?;
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(address = %bound, "health endpoints /healthz and /readyz listening");
    let app = router(ctx);
    Ok(tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = result {
            tracing::error!("health server failed: {e}");
        }
    }))
}

/// The probe routes.
pub fn router(ctx: Arc<Context>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(ctx)
}

async fn readyz(State(ctx): State<Arc<Context>>) -> (StatusCode, &'static str) {
    if ctx.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
