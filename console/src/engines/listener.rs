//! The engine listener (`--engine-listen`, 40815): engine-to-console engines dial in here.
//!
//! Admission (docs/contracts.md §5): TLS with a client certificate, `Hello` both ways, then
//! * a pinned certificate with a different product version → `Incompatible`, and that engine
//!   is marked incompatible;
//! * an unpinned certificate with a different product version → `Incompatible`, and nothing is
//!   read or recorded about any engine (the name in a `Hello` proves nothing);
//! * a pinned certificate → `Welcome {engine_id}`;
//! * otherwise a `PairRequest` with a valid shared secret → the engine is registered, its
//!   certificate pinned, `Paired {engine_id}`; anything else → `Rejected {reason}`.
//!
//! Until a connection is admitted it holds one of a bounded number of slots, at most
//! [`PER_SOURCE_SLOTS`] per source ([`scan_engine_protocol::admission`]); it must finish the
//! TLS handshake and its `Hello` within [`FIRST_MESSAGE_DEADLINE`], and its frames are bounded
//! by the protocol's small pre-authentication limit. Refused and dropped peers are logged once
//! per burst with a count. Each connection runs in its own task, so a slow, malformed or
//! hostile peer only ever loses its own connection, and one source cannot lock others out.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use scan_engine_protocol::{
    Message, SharedSecret,
    admission::{BurstLog, Limits, Slots},
    messages::{RejectReason, Role},
    session::Session,
    tls, version,
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::session;
use crate::{
    context::App,
    error::{Error, Result},
    store::{Direction, NewReverseEngine, Observation, Outcome},
};

/// How long an unpinned engine has, after the greetings, to present the shared secret. An
/// engine that means to pair sends it at once; one that thinks it is paired sends nothing and
/// must hear `Rejected {NotPaired}` before its own handshake timeout.
const PAIR_REQUEST_WAIT: Duration = Duration::from_secs(5);

/// Connections allowed to be in admission at once, from all sources; more are closed at once.
pub const MAX_PENDING_ADMISSIONS: usize = 256;

/// Connections allowed to be in admission at once from one source (an IPv4 address or an IPv6
/// /64). Engines behind one NAT pair one at a time in milliseconds, so this is plenty for them
/// and leaves an attacker a sixteenth of the slots at most.
pub const PER_SOURCE_SLOTS: usize = 16;

/// Time a new connection has for its TLS handshake and its `Hello` together (at most the
/// handshake timeout). A real engine needs a few milliseconds.
pub const FIRST_MESSAGE_DEADLINE: Duration = Duration::from_secs(5);

/// At most one log line per this long for each kind of refused peer.
const LOG_WINDOW: Duration = Duration::from_secs(10);

/// The burst-limited logs of one listener.
pub struct Logs {
    /// No slot was free.
    refused: BurstLog,
    /// Admission failed (TLS, deadline, malformed or invalid messages).
    dropped: BurstLog,
    /// An unpinned peer with another version, or a refused pairing.
    turned_away: BurstLog,
}

impl Default for Logs {
    fn default() -> Self {
        Self::new()
    }
}

impl Logs {
    pub fn new() -> Self {
        Self {
            refused: BurstLog::new(
                "engine connections refused: no free admission slot",
                LOG_WINDOW,
            ),
            dropped: BurstLog::new("dropped engine connections during admission", LOG_WINDOW),
            turned_away: BurstLog::new("engine connections answered and closed", LOG_WINDOW),
        }
    }

    fn flush(&self) {
        self.refused.flush();
        self.dropped.flush();
        self.turned_away.flush();
    }
}

/// Accepts engine connections until the console shuts down.
pub async fn serve(app: App, listener: TcpListener) -> Result<()> {
    let acceptor = TlsAcceptor::from(tls::server_config(&app.identity)?);
    let slots = Slots::new(Limits {
        total: MAX_PENDING_ADMISSIONS,
        per_source: PER_SOURCE_SLOTS,
    });
    let logs = Arc::new(Logs::new());
    let mut flush = tokio::time::interval(LOG_WINDOW);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = app.shutdown.cancelled() => return Ok(()),
            _ = flush.tick() => {
                logs.flush();
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting an engine connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let slot = match slots.try_acquire(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                drop(tcp);
                logs.refused.record(peer.ip(), &refusal);
                continue;
            }
        };
        let (app, acceptor, logs) = (app.clone(), acceptor.clone(), logs.clone());
        tokio::spawn(async move {
            let admitted = admit(&app, &acceptor, tcp, peer, &logs).await;
            drop(slot);
            match admitted {
                Ok(Some((mut session, engine_id))) => {
                    run(&app, &mut session, engine_id, peer).await
                }
                Ok(None) => {}
                Err(reason) => logs.dropped.record(peer.ip(), &reason),
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
pub enum Dropped {
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
    logs: &Logs,
) -> Result<Option<(Session, i64)>, Dropped> {
    let first_deadline = FIRST_MESSAGE_DEADLINE.min(app.settings.handshake_timeout);
    let accepted = tokio::time::Instant::now();
    let tls = Session::accept(tcp, acceptor, first_deadline);
    let session = tokio::time::timeout(first_deadline, tls)
        .await
        .map_err(|_| greeting_too_late(first_deadline))??;
    admit_session(app, session, peer, logs, accepted).await
}

/// The whole admission of one connection, from its accept to the decision.
fn admission_bound(app: &App) -> Duration {
    let timeout = app.settings.handshake_timeout;
    timeout + PAIR_REQUEST_WAIT + FIRST_MESSAGE_DEADLINE.min(timeout)
}

fn greeting_too_late(deadline: Duration) -> Dropped {
    Dropped::Other(format!(
        "no TLS handshake and greeting within {}",
        humantime::format_duration(deadline)
    ))
}

fn admission_too_late(bound: Duration) -> Dropped {
    Dropped::Other(format!(
        "admission took longer than {}",
        humantime::format_duration(bound)
    ))
}

/// Admits an authenticated session (the TLS handshake is done; `accepted` is when the
/// connection was accepted, the greeting deadline and the admission bound count from then):
/// the `Hello` exchange and the decision. `Some((session, engine id))` when the session may
/// stay open, `None` when it was answered and closed (the reason is logged in `logs`), `Err`
/// when it was dropped.
pub async fn admit_session(
    app: &App,
    mut session: Session,
    peer: SocketAddr,
    logs: &Logs,
    accepted: tokio::time::Instant,
) -> Result<Option<(Session, i64)>, Dropped> {
    let timeout = app.settings.handshake_timeout;
    let first_deadline = FIRST_MESSAGE_DEADLINE.min(timeout);
    let run = async {
        // The peer's Hello, within the short deadline that started at the accept.
        let greeting = session.exchange_hello(
            Role::Console,
            &app.settings.product_version,
            &app.settings.console_name,
            first_deadline,
        );
        let hello = tokio::time::timeout_at(accepted + first_deadline, greeting)
            .await
            .map_err(|_| greeting_too_late(first_deadline))??;
        if hello.role != Role::Engine {
            return Err(Dropped::Other(
                "the peer does not say it is an engine".into(),
            ));
        }
        // Authentication: the certificate, nothing the peer says about itself.
        let fingerprint = session.peer_fingerprint().clone();
        let pinned = app
            .store
            .engine_by_fingerprint(fingerprint.as_str())
            .await?;

        if !version::compatible(&app.settings.product_version, &hello.product_version) {
            // The Hello passed the protocol's check, so the version is short and plain.
            let message = format!(
                "engine runs version {}, the console runs {}",
                hello.product_version, app.settings.product_version
            );
            match &pinned {
                Some(e) => {
                    let obs = Observation {
                        outcome: Outcome::Incompatible,
                        message: message.clone(),
                        product_version: Some(hello.product_version.clone()),
                        at: app.clock.now(),
                    };
                    app.store.observe(e.id, obs).await?;
                    tracing::warn!(%peer, engine = %e.name, engine_id = e.id, detail = %message, "incompatible engine refused");
                }
                // Not authenticated: nothing about any engine is read or recorded.
                None => logs.turned_away.record(
                    peer.ip(),
                    &format_args!(
                        "an unpaired certificate greeted with another version: {message}"
                    ),
                ),
            }
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
                logs.turned_away.record(
                    peer.ip(),
                    &format_args!("pairing refused for {:?}: {reason}", hello.name),
                );
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
    let bound = admission_bound(app);
    match tokio::time::timeout_at(accepted + bound, run).await {
        Ok(r) => r,
        Err(_) => Err(admission_too_late(bound)),
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
