//! Console-to-engine (standard) mode: accept the console on `--listen`.
//!
//! Per connection: TLS handshake and greeting within [`FIRST_MESSAGE_DEADLINE`]; a version
//! mismatch is answered with `Incompatible`; then the console's certificate fingerprint is
//! looked up in the trust list (see [`crate::trust`]): unknown consoles are recorded disabled
//! and answered `PendingAuthorization`, disabled ones likewise, enabled ones get `Accepted` and
//! a served session. A misbehaving peer only ever loses its own connection.
//!
//! Until a console is accepted its connection holds one of [`MAX_PENDING_CONNECTIONS`]
//! admission slots, at most [`PER_SOURCE_SLOTS`] per source
//! ([`scan_engine_protocol::admission`]), so one source flooding idle or half-sent connections
//! cannot lock the real console out; accepted sessions have their own [`MAX_SESSIONS`] slots.
//! Refused and dropped peers, and unknown consoles turned away, are logged once per burst with
//! a count, never once per connection.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use scan_engine_protocol::{
    Fingerprint, Message,
    admission::{BurstLog, Limits, Slot, Slots},
    messages::Role,
    session::Session,
    tls,
    version::compatible,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::{
    Context, session,
    trust::{Decision, Seen},
};

/// Connections awaiting admission at once, from all sources; more are closed at accept.
pub const MAX_PENDING_CONNECTIONS: usize = 64;
/// Connections awaiting admission at once from one source (an IPv4 address or an IPv6 /64). A
/// console holds one session and redials one at a time.
pub const PER_SOURCE_SLOTS: usize = 4;
/// Accepted (trusted) console sessions served at once.
pub const MAX_SESSIONS: usize = 16;
/// Time a new connection has for its TLS handshake and its `Hello` together. A console needs a
/// few milliseconds.
pub const FIRST_MESSAGE_DEADLINE: Duration = Duration::from_secs(5);
/// A console that sends nothing (not even a ping) for this long is dropped.
const IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// At most one log line per this long for each kind of turned-away peer.
const LOG_WINDOW: Duration = Duration::from_secs(10);

/// The burst-limited logs of the listener.
pub struct Logs {
    refused: BurstLog,
    dropped: BurstLog,
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
            refused: BurstLog::new("console connections refused: no free slot", LOG_WINDOW),
            dropped: BurstLog::new(
                "dropped connections before a console was accepted",
                LOG_WINDOW,
            ),
            turned_away: BurstLog::new("console connections answered and closed", LOG_WINDOW),
        }
    }

    fn flush(&self) {
        self.refused.flush();
        self.dropped.flush();
        self.turned_away.flush();
    }
}

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
    let slots = Slots::new(Limits {
        total: MAX_PENDING_CONNECTIONS,
        per_source: PER_SOURCE_SLOTS,
    });
    let sessions = Arc::new(Semaphore::new(MAX_SESSIONS));
    let logs = Arc::new(Logs::new());
    let mut flush = tokio::time::interval(LOG_WINDOW);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = flush.tick() => {
                logs.flush();
                continue;
            }
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
        let slot = match slots.try_acquire(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                drop(tcp);
                logs.refused.record(peer.ip(), &refusal);
                continue;
            }
        };
        let ctx = ctx.clone();
        let acceptor = acceptor.clone();
        let shutdown = shutdown.clone();
        let (sessions, logs) = (sessions.clone(), logs.clone());
        tokio::spawn(async move {
            let conn = Connection {
                ctx,
                peer,
                logs: &logs,
                sessions,
            };
            match conn.handle(acceptor, tcp, slot, shutdown).await {
                Ok(Some(outcome)) => tracing::info!(peer = %peer, "connection closed: {outcome}"),
                Ok(None) => {}
                Err(e) => logs.dropped.record(peer.ip(), &crate::describe(&e)),
            }
        });
    }
    ctx.set_ready(false);
    Ok(())
}

struct Connection<'a> {
    ctx: Arc<Context>,
    peer: SocketAddr,
    logs: &'a Logs,
    sessions: Arc<Semaphore>,
}

impl Connection<'_> {
    /// Greets, decides and, for an enabled console, serves the session. `Ok(None)` when the
    /// peer was answered and closed (logged per burst), `Ok(Some)` when a session ended.
    async fn handle(
        self,
        acceptor: TlsAcceptor,
        tcp: TcpStream,
        slot: Slot,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Option<String>> {
        let Connection {
            ctx,
            peer,
            logs,
            sessions,
        } = self;
        let accepted = tokio::time::Instant::now();
        let tls = Session::accept(tcp, &acceptor, FIRST_MESSAGE_DEADLINE);
        let session = tokio::time::timeout(FIRST_MESSAGE_DEADLINE, tls)
            .await
            .map_err(|_| greeting_too_late())?
            .context("TLS handshake failed")?;
        let Some(admitted) = admit(&ctx, session, peer, logs, &sessions, accepted).await? else {
            return Ok(None);
        };
        let Admitted {
            session,
            id,
            permit,
            fingerprint,
        } = admitted;
        drop(slot);
        let ended = session::serve(
            session,
            session::Options {
                ping_interval: None,
                idle_timeout: IDLE_TIMEOUT,
                max_scan_concurrency: ctx.max_scan_concurrency,
            },
            shutdown,
        )
        .await;
        drop(permit);
        match ended {
            Ok(ended) => Ok(Some(format!("session ended: {ended:?}"))),
            Err(e) => {
                tracing::warn!(console = %fingerprint, console_id = id, "session lost: {e}");
                Ok(None)
            }
        }
    }
}

fn greeting_too_late() -> anyhow::Error {
    anyhow::anyhow!("no TLS handshake and greeting within {FIRST_MESSAGE_DEADLINE:?}")
}

/// A console answered `Accepted`: its session, to be served while `permit` is held.
#[derive(Debug)]
pub struct Admitted {
    pub session: Session,
    /// The console's id in the trust list.
    pub id: u64,
    /// One of the listener's [`MAX_SESSIONS`] session slots.
    pub permit: OwnedSemaphorePermit,
    pub fingerprint: Fingerprint,
}

/// Admits an authenticated session (the TLS handshake is done; `accepted` is when the
/// connection was accepted, the greeting deadline counts from then): the `Hello` exchange, the
/// version check and the trust decision. `Ok(Some)` when the console was answered `Accepted`
/// (its session is to be served), `Ok(None)` when it was answered and closed (logged per burst
/// in `logs`), `Err` when the connection was dropped.
pub async fn admit(
    ctx: &Context,
    mut session: Session,
    peer: SocketAddr,
    logs: &Logs,
    sessions: &Arc<Semaphore>,
    accepted: tokio::time::Instant,
) -> anyhow::Result<Option<Admitted>> {
    let greeting = session.exchange_hello(
        Role::Engine,
        &ctx.product_version,
        &ctx.name,
        FIRST_MESSAGE_DEADLINE,
    );
    let hello = tokio::time::timeout_at(accepted + FIRST_MESSAGE_DEADLINE, greeting)
        .await
        .map_err(|_| greeting_too_late())?
        .context("greeting failed")?;

    let fingerprint = session.peer_fingerprint().clone();
    if hello.role != Role::Console {
        anyhow::bail!(
            "peer {fingerprint} greeted as {:?}, not as a console",
            hello.role
        );
    }
    if !compatible(&hello.product_version, &ctx.product_version) {
        // The Hello passed the protocol's check: its version is short and plain.
        logs.turned_away.record(
            peer.ip(),
            &format_args!(
                "console {fingerprint} runs product version {}, this engine {}; answered \
                 incompatible",
                hello.product_version, ctx.product_version
            ),
        );
        let _ = session
            .send(Message::Incompatible {
                console_version: hello.product_version.clone(),
                engine_version: ctx.product_version.clone(),
            })
            .await;
        session.close().await;
        return Ok(None);
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
                    "new console recorded with enabled=\"0\": pending authorization. To pair, \
                     set enabled=\"1\" on its entry and restart the engine (or start it with \
                     --trusted-console-fingerprint)"
                );
            } else {
                logs.turned_away.record(
                    peer.ip(),
                    &format_args!(
                        "console {fingerprint} is not enabled in consoles.xml: pending \
                         authorization"
                    ),
                );
            }
            session.send(Message::PendingAuthorization).await?;
            session.close().await;
            Ok(None)
        }
        Decision::Accept { id } => {
            let Ok(permit) = sessions.clone().try_acquire_owned() else {
                session.close().await;
                anyhow::bail!(
                    "console {fingerprint} is enabled, but {MAX_SESSIONS} sessions are already \
                     open"
                );
            };
            session.send(Message::Accepted).await?;
            tracing::info!(
                console = %fingerprint,
                console_name = %hello.name,
                console_id = id,
                "console accepted; session open"
            );
            Ok(Some(Admitted {
                session,
                id,
                permit,
                fingerprint,
            }))
        }
    }
}
