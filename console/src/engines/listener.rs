//! The engine listener (`--engine-listen`, 40815): engine-to-console engines dial in here.
//!
//! Admission (docs/contracts.md §5): TLS with a client certificate, `Hello` both ways, then
//! * different product versions → `Incompatible`, the engine (if known) is marked incompatible;
//! * a pinned certificate → `Welcome {engine_id}`;
//! * otherwise a `PairRequest` with a valid shared secret → the engine is registered, its
//!   certificate pinned, `Paired {engine_id}`; anything else → `Rejected {reason}`.
//!
//! Each connection runs in its own task with bounded admission time, so a slow, malformed or
//! hostile peer only ever loses its own connection.

use std::{net::SocketAddr, sync::Arc};

use scan_engine_protocol::{
    Message, SharedSecret,
    messages::{RejectReason, Role},
    session::Session,
    tls, version,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_rustls::TlsAcceptor;

use super::session;
use crate::{
    app::App,
    error::{Error, Result},
    store::{Direction, NewReverseEngine, Observation, Outcome},
};

/// How long an unpinned engine has, after the greetings, to present the shared secret. An
/// engine that means to pair sends it at once; one that thinks it is paired sends nothing and
/// must hear `Rejected {NotPaired}` before its own handshake timeout.
const PAIR_REQUEST_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Connections allowed to be in admission at once; more are dropped straight away.
const MAX_PENDING_ADMISSIONS: usize = 256;

/// Accepts engine connections until the console shuts down.
pub async fn serve(app: App, listener: TcpListener) -> Result<()> {
    let acceptor = TlsAcceptor::from(tls::server_config(&app.identity)?);
    let admissions = Arc::new(Semaphore::new(MAX_PENDING_ADMISSIONS));
    loop {
        let (tcp, peer) = tokio::select! {
            _ = app.shutdown.cancelled() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting an engine connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = admissions.clone().try_acquire_owned() else {
            tracing::warn!(%peer, reason = "too many connections in admission", "engine connection dropped");
            continue;
        };
        let (app, acceptor) = (app.clone(), acceptor.clone());
        tokio::spawn(async move {
            let admitted = admit(&app, &acceptor, tcp, peer).await;
            drop(permit);
            match admitted {
                Ok(Some((mut session, engine_id))) => {
                    run(&app, &mut session, engine_id, peer).await
                }
                Ok(None) => {}
                Err(reason) => tracing::warn!(%peer, %reason, "engine connection dropped"),
            }
        });
    }
}

/// Runs an admitted reverse session and records its end.
async fn run(app: &App, session: &mut Session, engine_id: i64, peer: SocketAddr) {
    let mut reg = app.sessions.register(engine_id);
    let reason = session::drive(
        app,
        session,
        engine_id,
        Direction::EngineToConsole,
        &mut reg,
    )
    .await;
    if app.sessions.unregister(engine_id, reg.generation) {
        tracing::info!(engine_id, %peer, %reason, "engine-to-console session ended");
        session::ended(app, engine_id, &reason).await;
    } else {
        tracing::info!(engine_id, %peer, %reason, "engine-to-console session replaced by a newer one");
    }
}

/// Why a connection was dropped during admission.
#[derive(Debug, thiserror::Error)]
enum Dropped {
    #[error(transparent)]
    Protocol(#[from] scan_engine_protocol::Error),
    #[error(transparent)]
    Console(#[from] Error),
    #[error("{0}")]
    Other(String),
}

/// Admits a connection: `Some((session, engine id))` when it may stay open, `None` when it was
/// answered and closed (the reason is logged here), `Err` when it was dropped.
async fn admit(
    app: &App,
    acceptor: &TlsAcceptor,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
) -> Result<Option<(Session, i64)>, Dropped> {
    let timeout = app.settings.handshake_timeout;
    let run = async {
        let mut session = Session::accept(tcp, acceptor, timeout).await?;
        let hello = session
            .exchange_hello(
                Role::Console,
                &app.settings.product_version,
                &app.settings.console_name,
                timeout,
            )
            .await?;
        if hello.role != Role::Engine {
            return Err(Dropped::Other(
                "the peer does not say it is an engine".into(),
            ));
        }
        let fingerprint = session.peer_fingerprint().clone();
        let pinned = app
            .store
            .engine_by_fingerprint(fingerprint.as_str())
            .await?;

        if !version::compatible(&app.settings.product_version, &hello.product_version) {
            let known = match &pinned {
                Some(e) => Some(e.clone()),
                None => app.store.engine_by_name(&hello.name).await?,
            };
            let message = format!(
                "engine runs version {}, the console runs {}",
                hello.product_version, app.settings.product_version
            );
            if let Some(e) = &known {
                let obs = Observation {
                    outcome: Outcome::Incompatible,
                    message: message.clone(),
                    product_version: Some(hello.product_version.clone()),
                    at: app.clock.now(),
                };
                app.store.observe(e.id, obs).await?;
            }
            tracing::warn!(%peer, engine = %hello.name, engine_id = known.map(|e| e.id), detail = %message, "incompatible engine refused");
            let _ = session
                .send(Message::Incompatible {
                    console_version: app.settings.product_version.clone(),
                    engine_version: hello.product_version,
                })
                .await;
            session.close().await;
            return Ok(None);
        }

        if let Some(engine) = pinned.filter(|e| e.direction == Direction::EngineToConsole) {
            session
                .send(Message::Welcome {
                    engine_id: engine.id as u64,
                })
                .await?;
            app.store
                .set_engine_address(engine.id, &peer.ip().to_string())
                .await?;
            let obs = Observation {
                outcome: Outcome::Ok,
                message: "connected (engine-to-console)".into(),
                product_version: Some(hello.product_version),
                at: app.clock.now(),
            };
            app.store.observe(engine.id, obs).await?;
            tracing::info!(%peer, engine = %engine.name, engine_id = engine.id, "engine-to-console engine welcomed");
            return Ok(Some((session, engine.id)));
        }

        // Not pinned: the engine must present the shared secret now.
        let presented = match session.recv(timeout.min(PAIR_REQUEST_WAIT)).await {
            Ok(Message::PairRequest { shared_secret }) => Some(shared_secret),
            Ok(_) | Err(scan_engine_protocol::Error::Timeout(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let decision = match &presented {
            None => Err(RejectReason::NotPaired),
            Some(secret) => {
                let identity = (fingerprint.to_string(), session.peer_cert_pem());
                check_and_register(
                    app,
                    secret,
                    &hello.name,
                    &hello.product_version,
                    identity,
                    peer,
                )
                .await?
            }
        };
        match decision {
            Ok(engine_id) => {
                // An engine that switched from console-to-engine keeps its id; stop dialing it.
                app.supervisors.stop(engine_id);
                session
                    .send(Message::Paired {
                        engine_id: engine_id as u64,
                    })
                    .await?;
                tracing::info!(%peer, engine = %hello.name, engine_id, fingerprint = %fingerprint, "engine-to-console engine paired");
                Ok(Some((session, engine_id)))
            }
            Err(reason) => {
                tracing::warn!(%peer, engine = %hello.name, reason = ?reason, "pairing refused: {reason}");
                let _ = session
                    .send(Message::Rejected {
                        reason,
                        message: reason.to_string(),
                    })
                    .await;
                session.close().await;
                Ok(None)
            }
        }
    };
    // Bounds the whole admission, not only each step, against a peer that trickles bytes.
    match tokio::time::timeout(timeout * 3, run).await {
        Ok(r) => r,
        Err(_) => Err(Dropped::Other(format!(
            "admission took longer than {}",
            humantime::format_duration(timeout * 3)
        ))),
    }
}

async fn check_and_register(
    app: &App,
    secret: &SharedSecret,
    name: &str,
    product_version: &str,
    (fingerprint, cert_pem): (String, String),
    peer: SocketAddr,
) -> Result<Result<i64, RejectReason>, Dropped> {
    if let Err(reason) = app.secrets.check(secret).await? {
        return Ok(Err(reason));
    }
    if name.trim().is_empty() {
        return Err(Dropped::Other("the engine sent an empty name".into()));
    }
    let new = NewReverseEngine {
        name: name.to_owned(),
        address: peer.ip().to_string(),
        fingerprint,
        cert_pem,
        product_version: product_version.to_owned(),
        at: app.clock.now(),
    };
    match app.store.pair_reverse_engine(new).await {
        Ok(id) => Ok(Ok(id)),
        Err(Error::NameTaken(_)) => Ok(Err(RejectReason::NameTaken)),
        Err(e) => Err(e.into()),
    }
}
