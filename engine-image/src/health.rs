//! Plain HTTP probes: `GET /healthz` (the process is alive) and `GET /readyz` (the engine can
//! do its job: listening for its console, or holding an admitted session with it).
//!
//! Whoever reaches the health port can open connections and then send nothing, or trickle a
//! request's headers a byte at a time. `axum::serve` would hold such connections forever, so the
//! probes are served by hyper directly with [`Limits`]: the request head must arrive within
//! `header_timeout` (also while a kept-alive connection waits for its next request), no
//! connection lives longer than `max_connection_age`, and at most `max_connections` are open;
//! more are closed at once, with a warning at most every 10 s. A probe (kubelet opens a
//! connection per probe and sends its request at once) is answered in milliseconds, so these
//! bounds cost it nothing.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::{Router, extract::State, http::StatusCode, routing::get};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{Context, bounded::RateLimited};

/// Bounds on the health server's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time for a request head to arrive, from the connection's start or its previous
    /// response.
    pub header_timeout: Duration,
    /// A connection is closed this long after it was accepted, whatever it is doing.
    pub max_connection_age: Duration,
    /// Connections open at once.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(2),
            max_connection_age: Duration::from_secs(5),
            max_connections: 64,
        }
    }
}

/// Binds `addr` and serves the probes until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    ctx: Arc<Context>,
    shutdown: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the health listener on {addr}"))?;
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(address = %bound, "health endpoints /healthz and /readyz listening");
    Ok(serve_on(listener, ctx, Limits::default(), shutdown))
}

/// Serves the probes on `listener` within `limits` until `shutdown`.
pub fn serve_on(
    listener: TcpListener,
    ctx: Arc<Context>,
    limits: Limits,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let app = router(ctx);
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(limits.max_connections));
        let refused = RateLimited::new(Duration::from_secs(10));
        loop {
            let (tcp, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Usually out of file descriptors: back off instead of spinning.
                        tracing::warn!("health listener: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                drop(tcp);
                if let Some(held_back) = refused.check() {
                    tracing::warn!(
                        peer = %peer,
                        max_connections = limits.max_connections,
                        refused_since_last_warning = held_back,
                        "health listener: too many connections; closing new ones"
                    );
                }
                continue;
            };
            let service = TowerToHyperService::new(app.clone());
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let mut http = hyper::server::conn::http1::Builder::new();
                http.timer(TokioTimer::new())
                    .header_read_timeout(limits.header_timeout);
                let conn = http.serve_connection(TokioIo::new(tcp), service);
                let mut conn = std::pin::pin!(conn);
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(peer = %peer, "health connection ended: {e}");
                        }
                    }
                    () = tokio::time::sleep(limits.max_connection_age) => {
                        tracing::debug!(peer = %peer, "health connection open too long; closed");
                    }
                    _ = shutdown.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
                    }
                }
            });
        }
    })
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

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::AtomicBool,
        time::{Duration, Instant},
    };

    use scan_engine_protocol::Identity;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;
    use crate::trust::TrustStore;

    fn context(dir: &std::path::Path) -> Arc<Context> {
        Arc::new(Context {
            name: "e".into(),
            product_version: "0.1.0".into(),
            data_dir: dir.to_owned(),
            identity: Identity::generate("e").unwrap(),
            trust: TrustStore::open(dir.join("consoles.xml"), None).unwrap(),
            trusted_console: None,
            max_scan_concurrency: 1,
            ping_interval: Duration::from_secs(1),
            ready: AtomicBool::new(true),
        })
    }

    async fn start(limits: Limits) -> (SocketAddr, CancellationToken, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        serve_on(listener, context(dir.path()), limits, stop.clone());
        (addr, stop, dir)
    }

    /// Reads until the server closes the connection; the time it took.
    async fn closed_within(stream: &mut tokio::net::TcpStream, bound: Duration) -> Duration {
        let started = Instant::now();
        let mut buf = [0u8; 1024];
        loop {
            match tokio::time::timeout(bound, stream.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => return started.elapsed(),
                Ok(Ok(_)) => {}
                Err(_) => panic!("the health server kept a connection open for {bound:?}"),
            }
        }
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn probes_answer() {
        let (addr, _stop, _dir) = start(Limits::default()).await;
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
    }

    #[tokio::test]
    async fn silent_trickling_and_kept_alive_clients_are_closed() {
        // The age limit is far away: the header deadline alone closes all three.
        let limits = Limits {
            header_timeout: Duration::from_millis(300),
            max_connection_age: Duration::from_secs(60),
            max_connections: 64,
        };
        let (addr, _stop, _dir) = start(limits).await;
        // Says nothing.
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        // Sends half a request head.
        let mut trickle = tokio::net::TcpStream::connect(addr).await.unwrap();
        trickle
            .write_all(b"GET /healthz HTTP/1.1\r\nX-A: ")
            .await
            .unwrap();
        // Gets an answer, then keeps the connection open without a second request.
        let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let bound = Duration::from_secs(5);
        for s in [&mut silent, &mut trickle, &mut idle] {
            let took = closed_within(s, bound).await;
            assert!(took < Duration::from_secs(3), "{took:?}");
        }
    }

    #[tokio::test]
    async fn a_slow_but_steady_client_is_closed_at_the_connection_age() {
        let limits = Limits {
            header_timeout: Duration::from_secs(30),
            max_connection_age: Duration::from_millis(500),
            max_connections: 64,
        };
        let (addr, _stop, _dir) = start(limits).await;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        let writer = async {
            for _ in 0..50 {
                if s.write_all(b"X-A: b\r\n").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("the connection outlived its age limit");
        };
        writer.await;
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_are_closed_and_probes_answer_after() {
        let limits = Limits {
            header_timeout: Duration::from_millis(500),
            max_connection_age: Duration::from_secs(2),
            max_connections: 8,
        };
        let (addr, _stop, _dir) = start(limits).await;
        let mut held = Vec::new();
        for _ in 0..8 {
            held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The ninth is closed at once, without an answer.
        let mut ninth = tokio::net::TcpStream::connect(addr).await.unwrap();
        closed_within(&mut ninth, Duration::from_millis(400)).await;
        // Once the silent ones time out, probes get in again.
        for s in &mut held {
            closed_within(s, Duration::from_secs(5)).await;
        }
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
    }
}
