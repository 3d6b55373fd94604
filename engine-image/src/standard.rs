//! Console-to-engine (standard) mode: accept the console on `--listen`.
//!
//! Per connection: TLS handshake and greeting within [`HANDSHAKE_TIMEOUT`]; a version mismatch
//! is answered with `Incompatible`; then the console's certificate fingerprint is looked up in
//! the trust list (see [`crate::trust`]): unknown consoles are recorded disabled and answered
//! `PendingAuthorization`, disabled ones likewise, enabled ones get `Accepted` and a served
//! session. A misbehaving peer only ever loses its own connection.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use scan_engine_protocol::{Message, messages::Role, session::Session, tls, version::compatible};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::{
    Context, HANDSHAKE_TIMEOUT, session,
    trust::{Decision, Seen},
};

/// Connections being greeted or served at once; more are refused at accept.
const MAX_CONNECTIONS: usize = 64;
/// A console that sends nothing (not even a ping) for this long is dropped.
const IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Listens on `listen` until `shutdown`.
pub async fn run(
    ctx: Arc<Context>,
    listen: SocketAddr,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let acceptor = TlsAcceptor::from(tls::server_config(&ctx.identity)?);
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the console listener on {listen}"))?;
    let bound = listener.local_addr().unwrap_or(listen);
    tracing::info!(address = %bound, "waiting for consoles (console-to-engine)");
    ctx.set_ready(true);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(peer = %peer, "too many connections; dropping this one");
            continue;
        };
        let ctx = ctx.clone();
        let acceptor = acceptor.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match handle(ctx, acceptor, tcp, peer, shutdown).await {
                Ok(outcome) => tracing::info!(peer = %peer, "connection closed: {outcome}"),
                Err(e) => {
                    tracing::warn!(peer = %peer, "dropped connection: {}", crate::describe(&e))
                }
            }
        });
    }
    ctx.set_ready(false);
    Ok(())
}

async fn handle(
    ctx: Arc<Context>,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) -> anyhow::Result<String> {
    let mut session = Session::accept(tcp, &acceptor, HANDSHAKE_TIMEOUT)
        .await
        .context("TLS handshake failed")?;
    let hello = session
        .exchange_hello(
            Role::Engine,
            &ctx.product_version,
            &ctx.name,
            HANDSHAKE_TIMEOUT,
        )
        .await
        .context("greeting failed")?;
    let fingerprint = session.peer_fingerprint().clone();
    if hello.role != Role::Console {
        anyhow::bail!(
            "peer {fingerprint} greeted as {:?}, not as a console",
            hello.role
        );
    }
    if !compatible(&hello.product_version, &ctx.product_version) {
        tracing::error!(
            console = %fingerprint,
            console_version = %hello.product_version,
            engine_version = %ctx.product_version,
            "console runs a different product version; answering incompatible"
        );
        session
            .send(Message::Incompatible {
                console_version: hello.product_version.clone(),
                engine_version: ctx.product_version.clone(),
            })
            .await?;
        session.close().await;
        return Ok(format!(
            "incompatible versions (console {}, engine {})",
            hello.product_version, ctx.product_version
        ));
    }
    let seen = Seen {
        address: Some(peer.ip().to_string()),
        port: Some(peer.port()),
        cert_pem: Some(session.peer_cert_pem()),
    };
    match ctx.trust.decide(&fingerprint, seen) {
        Decision::Pending { id, newly_added } => {
            if newly_added {
                tracing::warn!(
                    console = %fingerprint,
                    console_name = %hello.name,
                    console_id = id,
                    file = %ctx.trust.path().display(),
                    "new console recorded with enabled=\"0\": pending authorization. To pair, set \
                     enabled=\"1\" on its entry and restart the engine (or start it with \
                     --trusted-console-fingerprint)"
                );
            } else {
                tracing::info!(
                    console = %fingerprint,
                    console_id = id,
                    "console is not enabled in consoles.xml: pending authorization"
                );
            }
            session.send(Message::PendingAuthorization).await?;
            session.close().await;
            Ok("pending authorization".to_owned())
        }
        Decision::Accept { id } => {
            session.send(Message::Accepted).await?;
            tracing::info!(
                console = %fingerprint,
                console_name = %hello.name,
                console_id = id,
                "console accepted; session open"
            );
            let ended = session::serve(
                session,
                session::Options {
                    ping_interval: None,
                    idle_timeout: IDLE_TIMEOUT,
                    max_scan_concurrency: ctx.max_scan_concurrency,
                },
                shutdown,
            )
            .await?;
            Ok(format!("session ended: {ended:?}"))
        }
    }
}
