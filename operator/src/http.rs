//! The operator's HTTP server: `/metrics` (OpenMetrics), `/healthz`, `/readyz`.
//!
//! Whoever reaches the port can open connections, so the server bounds what they cost
//! ([`Limits`]): a client has a few seconds to send a request's headers (also between requests
//! on a kept-alive connection, so an idle client is dropped as a slow one is), no connection
//! lives longer than a minute, and past a number of open connections new ones are closed at
//! once rather than queued. The probes and a scraper send a complete request at once and never
//! notice. hyper serves the connections directly, because `axum::serve` offers no header
//! timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::metrics::{CONTENT_TYPE, Metrics};

/// What one client may hold of the server.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Time to send a request's headers, from the connection's start or the previous answer.
    pub header_read_timeout: Duration,
    /// Longest life of a connection, whatever it does.
    pub max_connection_age: Duration,
    /// Connections served at once; more are closed as they come.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(5),
            max_connection_age: Duration::from_secs(60),
            max_connections: 512,
        }
    }
}

/// How often, at most, refused connections are logged (with their count since).
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

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

/// Serves on `addr` with the default [`Limits`] until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    state: HttpState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    serve_on(listener, state, Limits::default(), shutdown).await;
    Ok(())
}

/// Serves on `listener` within `limits` until `shutdown` resolves.
pub async fn serve_on(
    listener: TcpListener,
    state: HttpState,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let router = router(state);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let builder = Arc::new(builder);
    let mut refused: u64 = 0;
    let mut last_refusal_log: Option<tokio::time::Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // Out of descriptors, say: wait a little rather than spin.
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(tcp);
            refused += 1;
            let now = tokio::time::Instant::now();
            if last_refusal_log.is_none_or(|at| now.duration_since(at) >= REFUSAL_LOG_INTERVAL) {
                tracing::warn!(
                    refused,
                    max_connections = limits.max_connections,
                    "HTTP server full: closed new connections"
                );
                last_refusal_log = Some(now);
                refused = 0;
            }
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let builder = builder.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
            // A slow or idle client ends in the header timeout; anything else at the age limit.
            let _ = tokio::time::timeout(limits.max_connection_age, connection).await;
        });
    }
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

    /// A server on loopback with `limits`; its address.
    async fn server(limits: Limits) -> SocketAddr {
        let Ok(listener) = TcpListener::bind("127.0.0.1:0").await else {
            panic!("bind")
        };
        let Ok(addr) = listener.local_addr() else {
            panic!("no address")
        };
        let state = HttpState {
            metrics: Arc::new(Metrics::new()),
            ready: Arc::new(AtomicBool::new(true)),
        };
        tokio::spawn(serve_on(listener, state, limits, std::future::pending()));
        addr
    }

    /// `GET /healthz` on a new connection: the status line, or what went wrong.
    async fn healthz(addr: SocketAddr) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let attempt = async {
            let mut tcp = tokio::net::TcpStream::connect(addr).await?;
            tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: operator\r\nconnection: close\r\n\r\n")
                .await?;
            let mut answer = Vec::new();
            tcp.read_to_end(&mut answer).await?;
            Ok::<_, std::io::Error>(
                String::from_utf8_lossy(&answer)
                    .lines()
                    .next()
                    .unwrap_or("closed")
                    .to_string(),
            )
        };
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => format!("error: {e}"),
            Err(_) => "no answer within 5 s".into(),
        }
    }

    /// Waits until the server closes `tcp` (a read ends or fails); `false` after `within`.
    async fn closed_within(tcp: tokio::net::tcp::OwnedReadHalf, within: Duration) -> bool {
        use tokio::io::AsyncReadExt;
        let mut tcp = tcp;
        let mut buf = [0u8; 512];
        let wait = async {
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(within, wait).await.is_ok()
    }

    #[tokio::test]
    async fn slow_and_idle_clients_are_dropped_while_healthz_answers() {
        use tokio::io::AsyncWriteExt;
        let addr = server(Limits {
            header_read_timeout: Duration::from_secs(1),
            ..Limits::default()
        })
        .await;
        let mut readers = Vec::new();
        // 200 clients trickling a header that never ends, one byte every 200 ms.
        for _ in 0..200 {
            let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else {
                panic!("connect")
            };
            let (rd, mut wr) = tcp.into_split();
            tokio::spawn(async move {
                if wr
                    .write_all(b"GET /healthz HTTP/1.1\r\nx-slow: ")
                    .await
                    .is_err()
                {
                    return;
                }
                while wr.write_all(b"a").await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
            readers.push(rd);
        }
        // 50 clients that connect and say nothing.
        let mut idle = Vec::new();
        for _ in 0..50 {
            let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else {
                panic!("connect")
            };
            let (rd, wr) = tcp.into_split();
            idle.push(wr);
            readers.push(rd);
        }
        // The probe is served in the middle of it.
        assert_eq!(healthz(addr).await, "HTTP/1.1 200 OK");

        let closed = futures::future::join_all(
            readers
                .into_iter()
                .map(|rd| closed_within(rd, Duration::from_secs(5))),
        )
        .await;
        assert_eq!(
            closed.iter().filter(|c| **c).count(),
            250,
            "every slow and idle client is closed within 5 s"
        );
        assert_eq!(healthz(addr).await, "HTTP/1.1 200 OK");
    }

    #[tokio::test]
    async fn past_the_connection_cap_new_connections_are_closed_until_slots_free() {
        let addr = server(Limits {
            header_read_timeout: Duration::from_secs(1),
            max_connections: 8,
            ..Limits::default()
        })
        .await;
        let mut held = Vec::new();
        for _ in 0..8 {
            let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else {
                panic!("connect")
            };
            held.push(tcp);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let full = healthz(addr).await;
        assert_ne!(
            full, "HTTP/1.1 200 OK",
            "the ninth connection is not served"
        );
        assert!(
            !full.contains("within 5 s"),
            "it is closed at once, not queued: {full}"
        );
        // The idle holders are dropped after the header timeout: served again.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(healthz(addr).await, "HTTP/1.1 200 OK");
    }
}
