//! Engine-to-console (reverse) mode: dial the console, pair once with the shared secret, then
//! authenticate by certificate alone, keep the session open, ping at `--ping-interval`, and run
//! the scan jobs the console hands over. Every failure is logged with its reason and retried
//! with a backoff capped at the ping interval.
//!
//! The console is pinned from the first dial when `--trusted-console-fingerprint` is given:
//! its certificate's fingerprint is checked right after the TLS handshake, before the engine
//! says anything, so an impostor at the console's address never sees the shared secret (nor
//! even the engine's greeting). Without it the first pairing trusts whichever certificate
//! answers (trust on first use, then pinned by `pairing.json`), and a warning says so once.
//! Whatever the console says that is logged (versions, a rejection's message) is cut and
//! escaped first ([`crate::bounded`]).

use std::{path::PathBuf, sync::Arc, time::Duration};

use scan_engine_protocol::{
    Fingerprint, Message, SharedSecret,
    messages::{RejectReason, Role},
    session::Session,
    tls,
    version::compatible,
};
use tokio_util::sync::CancellationToken;

use crate::{
    Context, HANDSHAKE_TIMEOUT,
    bounded::{self, for_log},
    pairing::{self, PairingRecord},
    session,
    trust::Seen,
};

/// Where and how to reach the console.
#[derive(Debug, Clone)]
pub struct Options {
    pub console_address: String,
    pub shared_secret_file: Option<PathBuf>,
}

/// Why one attempt ended.
#[derive(Debug)]
enum Attempt {
    /// The session was admitted and later ended; reconnect promptly.
    Served,
    /// The engine is shutting down.
    Shutdown,
}

/// Dials the console until `shutdown`.
pub async fn run(
    ctx: Arc<Context>,
    options: Options,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let client = tls::client_config(&ctx.identity)?;
    let cap = ctx.ping_interval.max(Duration::from_millis(100));
    let first = Duration::from_millis(250).min(cap);
    let mut backoff = first;
    let mut warned_unpinned = false;
    tracing::info!(console = %options.console_address, "dialing the console (engine-to-console)");
    loop {
        let result = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = attempt(&ctx, &options, client.clone(), &shutdown, &mut warned_unpinned) => r,
        };
        ctx.set_ready(false);
        let delay = match result {
            Ok(Attempt::Shutdown) => return Ok(()),
            Ok(Attempt::Served) => {
                backoff = first;
                first
            }
            Err(e) => {
                // Errors can quote what the console sent: keep the line bounded.
                tracing::error!(
                    console = %options.console_address,
                    "{}; retrying in {backoff:?}",
                    bounded::cut(&crate::describe(&e), 1024)
                );
                let d = backoff;
                backoff = (backoff * 2).min(cap);
                d
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(delay) => {}
        }
    }
}

fn read_secret(options: &Options) -> anyhow::Result<SharedSecret> {
    let Some(path) = &options.shared_secret_file else {
        anyhow::bail!(
            "not paired with the console yet and no --shared-secret-file given: generate a \
             shared secret on the console and give the engine the file that holds it"
        );
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!(
            "not paired yet and the shared secret file {} cannot be read: {e}",
            path.display()
        )
    })?;
    let secret = SharedSecret::new(text);
    if secret.is_empty() {
        anyhow::bail!(
            "not paired yet and the shared secret file {} is empty",
            path.display()
        );
    }
    Ok(secret)
}

async fn attempt(
    ctx: &Arc<Context>,
    options: &Options,
    client: Arc<rustls::ClientConfig>,
    shutdown: &CancellationToken,
    warned_unpinned: &mut bool,
) -> anyhow::Result<Attempt> {
    let record = pairing::load(&ctx.data_dir)?;
    if let (Some(r), Some(t)) = (&record, &ctx.trusted_console)
        && &r.console_fingerprint != t
    {
        anyhow::bail!(
            "the pairing record {} names console {} but --trusted-console-fingerprint is {t}; \
             remove the record to pair with the trusted console",
            pairing::path(&ctx.data_dir).display(),
            r.console_fingerprint
        );
    }
    // Without a record the secret is needed: fail before dialing if it is missing.
    let secret = match &record {
        Some(_) => None,
        None => Some(read_secret(options)?),
    };
    if record.is_none() && ctx.trusted_console.is_none() && !*warned_unpinned {
        *warned_unpinned = true;
        tracing::warn!(
            console = %options.console_address,
            "the console is not pinned: without --trusted-console-fingerprint the first \
             pairing sends the shared secret to whichever certificate answers at this address \
             (trust on first use). Give the console's fingerprint to pin it from the first dial"
        );
    }

    let mut session = Session::dial(&options.console_address, client, HANDSHAKE_TIMEOUT)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the console: {e}"))?;
    let console = session.peer_fingerprint().clone();
    let expected = record
        .as_ref()
        .map(|r| &r.console_fingerprint)
        .or(ctx.trusted_console.as_ref());
    if let Some(expected) = expected
        && &console != expected
    {
        session.close().await;
        anyhow::bail!(
            "the console at {} presents certificate {console}, not the expected {expected}; \
             refusing to talk to it",
            options.console_address
        );
    }
    let hello = session
        .exchange_hello(
            Role::Engine,
            &ctx.product_version,
            &ctx.name,
            HANDSHAKE_TIMEOUT,
        )
        .await
        .map_err(|e| anyhow::anyhow!("greeting the console failed: {e}"))?;
    if hello.role != Role::Console {
        anyhow::bail!("the peer greeted as {:?}, not as a console", hello.role);
    }
    if !compatible(&hello.product_version, &ctx.product_version) {
        let console_version = for_log(&hello.product_version);
        let _ = session
            .send(Message::Incompatible {
                console_version: console_version.clone(),
                engine_version: ctx.product_version.clone(),
            })
            .await;
        session.close().await;
        anyhow::bail!(
            "incompatible: the console runs product version {console_version} and this engine {}",
            ctx.product_version
        );
    }
    if let Some(secret) = secret {
        tracing::info!(console = %console, "not paired yet: presenting the shared secret");
        session
            .send(Message::PairRequest {
                shared_secret: secret,
            })
            .await?;
    }
    let answer = session
        .recv(HANDSHAKE_TIMEOUT)
        .await
        .map_err(|e| anyhow::anyhow!("waiting for the console's answer: {e}"))?;
    let engine_id = match answer {
        Message::Paired { engine_id } => {
            tracing::info!(console = %console, engine_id, "paired with the console");
            engine_id
        }
        Message::Welcome { engine_id } => {
            tracing::info!(console = %console, engine_id, "admitted by the console");
            engine_id
        }
        Message::Rejected { reason, message } => {
            let message = for_log(&message);
            if reason == RejectReason::NotPaired && record.is_some() {
                if options
                    .shared_secret_file
                    .as_ref()
                    .is_some_and(|p| p.exists())
                {
                    pairing::remove(&ctx.data_dir)?;
                    anyhow::bail!(
                        "rejected by the console: {reason} ({message}); it no longer knows this \
                         engine, so the stale pairing record was removed and the engine will \
                         pair again with the shared secret"
                    );
                }
                anyhow::bail!(
                    "rejected by the console: {reason} ({message}); it no longer knows this \
                     engine. Provide --shared-secret-file to pair again"
                );
            }
            anyhow::bail!("rejected by the console: {reason} ({message})");
        }
        Message::Incompatible {
            console_version,
            engine_version,
        } => anyhow::bail!(
            "incompatible: the console runs product version {} and this engine {}",
            for_log(&console_version),
            for_log(&engine_version)
        ),
        other => anyhow::bail!(
            "protocol error: expected paired, welcome or rejected, got {}",
            other.kind()
        ),
    };
    remember(ctx, options, &session, &console, engine_id, record.as_ref());

    ctx.set_ready(true);
    let ended = session::serve(
        session,
        session::Options {
            ping_interval: Some(ctx.ping_interval),
            idle_timeout: ctx.ping_interval * 3 + Duration::from_secs(10),
            max_scan_concurrency: ctx.max_scan_concurrency,
        },
        shutdown.clone(),
    )
    .await;
    match ended {
        Ok(session::Ended::Shutdown) => Ok(Attempt::Shutdown),
        Ok(session::Ended::ClosedByPeer) => {
            tracing::warn!(console = %console, "the console closed the session; reconnecting");
            Ok(Attempt::Served)
        }
        Err(e) => {
            tracing::warn!(console = %console, "session lost: {e}; reconnecting");
            Ok(Attempt::Served)
        }
    }
}

/// Stores the pairing record and records the console, enabled, in `consoles.xml`.
fn remember(
    ctx: &Context,
    options: &Options,
    session: &Session,
    console: &Fingerprint,
    engine_id: u64,
    record: Option<&PairingRecord>,
) {
    let new = PairingRecord {
        console_fingerprint: console.clone(),
        engine_id,
        console_address: options.console_address.clone(),
    };
    if record != Some(&new) {
        match pairing::save(&ctx.data_dir, &new) {
            Ok(()) => tracing::info!(engine_id, "pairing record stored"),
            Err(e) => tracing::error!(
                "{}; the engine will need the shared secret again",
                crate::describe(&e)
            ),
        }
        let seen = Seen {
            address: session.peer_addr().map(|a| a.ip().to_string()),
            port: session.peer_addr().map(|a| a.port()),
            cert_pem: Some(session.peer_cert_pem()),
        };
        if let Err(e) = ctx.trust.enable(console, seen) {
            tracing::error!("could not record the console in the trust list: {e}");
        }
    }
}
