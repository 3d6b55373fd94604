//! The operator's HTTP server: `/metrics` (OpenMetrics), `/healthz`, `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::{CONTENT_TYPE, Metrics};

#[derive(Clone)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    /// Set once the operator can serve (connected to the API server).
    pub ready: Arc<AtomicBool>,
}

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    match s.metrics.encode() {
        Ok(body) => (StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(s): State<HttpState>) -> impl IntoResponse {
    if s.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    state: HttpState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    #[tokio::test]
    async fn endpoints() {
        let state = HttpState {
            metrics: Arc::new(Metrics::new()),
            ready: Arc::new(AtomicBool::new(false)),
        };
        let app = router(state.clone());
        let get = |path: &str| Request::get(path).body(Body::empty()).unwrap_or_default();

        let resp = app
            .clone()
            .oneshot(get("/readyz"))
            .await
            .map(|r| r.status())
            .ok();
        assert_eq!(resp, Some(StatusCode::SERVICE_UNAVAILABLE));
        state.ready.store(true, Ordering::SeqCst);
        let resp = app
            .clone()
            .oneshot(get("/readyz"))
            .await
            .map(|r| r.status())
            .ok();
        assert_eq!(resp, Some(StatusCode::OK));
        let resp = app
            .clone()
            .oneshot(get("/healthz"))
            .await
            .map(|r| r.status())
            .ok();
        assert_eq!(resp, Some(StatusCode::OK));
        let resp = app.oneshot(get("/metrics")).await.ok();
        let ct = resp
            .as_ref()
            .and_then(|r| r.headers().get(header::CONTENT_TYPE))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        assert_eq!(ct.as_deref(), Some(CONTENT_TYPE));
    }
}
