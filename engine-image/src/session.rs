//! Serving an admitted session, the same whichever side dialed: answer pings, send our own
//! pings when asked to, and run scan jobs. Scans run in their own tasks and hand their messages
//! to this loop through a channel, so a `Pong` is never stuck behind a scan.

use std::time::Duration;

use scan_engine_protocol::{Error as ProtocolError, Message, session::Session};
use tokio::{sync::mpsc, task::JoinSet, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::scan;

/// How a session is served.
#[derive(Debug, Clone)]
pub struct Options {
    /// Send `Ping` at this interval (reverse mode); `None` only answers.
    pub ping_interval: Option<Duration>,
    /// Drop the session when the peer sends nothing for this long.
    pub idle_timeout: Duration,
    /// The engine's own cap on concurrent connection attempts per scan.
    pub max_scan_concurrency: u32,
}

/// Why a session ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The peer closed the connection.
    ClosedByPeer,
    /// The engine is shutting down.
    Shutdown,
}

/// Why a session ended with an error.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("the console sent nothing for {0:?}")]
    Idle(Duration),
    #[error("the console reports incompatible versions (console {console}, engine {engine})")]
    Incompatible { console: String, engine: String },
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

const CHANNEL_DEPTH: usize = 256;
/// `Session::recv` needs a timeout; idleness is tracked separately.
const FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// Serves `session` until the peer leaves, an error occurs, or `shutdown`.
pub async fn serve(
    mut session: Session,
    options: Options,
    shutdown: CancellationToken,
) -> Result<Ended, SessionError> {
    // Only admitted sessions are served: the console may now send full-sized frames.
    session.admit();
    let (tx, mut rx) = mpsc::channel::<Message>(CHANNEL_DEPTH);
    let mut scans = JoinSet::new();
    let mut ping = options.ping_interval.map(|d| {
        let mut i = tokio::time::interval(d);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let mut seq = 0u64;
    let mut last_heard = Instant::now();
    loop {
        let idle = tokio::time::sleep_until(last_heard + options.idle_timeout);
        let tick = async {
            match ping.as_mut() {
                Some(i) => {
                    i.tick().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => {
                session.close().await;
                return Ok(Ended::Shutdown);
            }
            received = session.recv(FOREVER) => {
                let message = match received {
                    Ok(m) => m,
                    Err(ProtocolError::Closed) => return Ok(Ended::ClosedByPeer),
                    Err(e) => return Err(e.into()),
                };
                last_heard = Instant::now();
                match message {
                    Message::Ping { seq } => session.send(Message::Pong { seq }).await?,
                    Message::Pong { .. } => {}
                    Message::ScanJob(job) => {
                        tracing::info!(
                            scan_id = job.scan_id,
                            targets = job.targets.len(),
                            ports = job.ports.len(),
                            "scan job received"
                        );
                        let tx = tx.clone();
                        let limit = options.max_scan_concurrency;
                        scans.spawn(scan::run_job(job, limit, tx));
                    }
                    Message::Incompatible { console_version, engine_version } => {
                        return Err(SessionError::Incompatible {
                            console: console_version,
                            engine: engine_version,
                        });
                    }
                    other => {
                        tracing::warn!(
                            message = other.kind(),
                            "ignoring a message that has no meaning on an open session"
                        );
                    }
                }
            }
            Some(out) = rx.recv() => session.send(out).await?,
            () = tick => {
                seq += 1;
                session.send(Message::Ping { seq }).await?;
            }
            Some(done) = scans.join_next(), if !scans.is_empty() => {
                if let Err(e) = done
                    && e.is_panic()
                {
                    tracing::error!("a scan task panicked: {e}");
                }
            }
            () = idle => return Err(SessionError::Idle(options.idle_timeout)),
        }
    }
}
