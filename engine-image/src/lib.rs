//! The open Scan Engine.
//!
//! The binary (`src/main.rs`) only parses arguments and calls [`run`]. Everything else lives
//! here so that tests and fuzz targets can reach it:
//!
//! * [`cli`]: the command line of `docs/contracts.md` §2;
//! * [`consoles_xml`]: the strict `consoles.xml` parser and writer;
//! * [`consoles_command`]: `scan-engine consoles list|enable|disable` for administrators;
//! * [`trust`]: the engine's trust list at run time (read at start-up, appended to on disk);
//! * [`pairing`]: the reverse pairing record (`pairing.json`);
//! * [`standard`]: console-to-engine mode, accepting the console on `--listen`;
//! * [`reverse`]: engine-to-console mode, dialing the console;
//! * [`session`]: serving an admitted session (pings, scan jobs), the same in both modes;
//! * [`scan`]: the TCP connect discovery scanner;
//! * [`health`]: `/healthz` and `/readyz`;
//! * [`durable`]: replacing a file atomically and durably;
//! * [`bounded`]: peer-supplied strings cut for the logs, rate-limited warnings.

pub mod bounded;
pub mod cli;
pub mod consoles_command;
pub mod consoles_xml;
pub mod durable;
pub mod health;
pub mod pairing;
pub mod reverse;
pub mod scan;
pub mod session;
pub mod standard;
pub mod trust;

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use scan_engine_protocol::{Fingerprint, Identity, version};
use tokio_util::sync::CancellationToken;

pub use cli::{Cli, Command, Communication, LogFormat};

#[cfg(test)]
mod tests {
    #[test]
    fn describe_skips_repeated_causes() {
        let io = std::io::Error::other("tls handshake eof");
        let inner = scan_engine_protocol::Error::Io(io);
        let e = anyhow::Error::new(inner).context("TLS handshake failed");
        assert_eq!(
            super::describe(&e),
            "TLS handshake failed: i/o error: tls handshake eof"
        );
    }
}

/// How long a peer may take for the TLS handshake, and for each greeting message.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every part of a running engine shares.
#[derive(Debug)]
pub struct Context {
    pub name: String,
    pub product_version: String,
    pub data_dir: PathBuf,
    pub identity: Identity,
    pub trust: trust::TrustStore,
    pub trusted_console: Option<Fingerprint>,
    pub max_scan_concurrency: u32,
    pub ping_interval: Duration,
    /// Set while the engine can do its job (listening, or holding an admitted session).
    pub ready: AtomicBool,
}

impl Context {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// An error and its causes on one line, without repeating a cause that a message already
/// includes (many error types print their source in their own message).
pub fn describe(error: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// The engine's host name, the default `--name`.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        let name = String::from_utf8_lossy(&buf[..end]).trim().to_owned();
        if !name.is_empty() {
            return name;
        }
    }
    "scan-engine".to_owned()
}

/// Runs the engine until `shutdown` is cancelled or a start-up step fails.
pub async fn run(cli: Cli, shutdown: CancellationToken) -> anyhow::Result<()> {
    let (product_version, overridden) = version::product_version();
    if overridden {
        tracing::warn!(
            product_version = %product_version,
            "!!! {} is set: advertising product version {product_version} instead of {}. \
             This is for tests only and must never be set in production !!!",
            version::TEST_ONLY_VERSION_ENV,
            version::BUILT_PRODUCT_VERSION,
        );
    }
    let name = cli.name.clone().unwrap_or_else(host_name);
    std::fs::create_dir_all(&cli.data_dir)
        .with_context(|| format!("creating data directory {}", cli.data_dir.display()))?;
    let identity = Identity::load_or_generate(&cli.data_dir, "engine", &name)
        .context("loading the engine identity")?;
    let trust = trust::TrustStore::open(
        cli.data_dir.join(consoles_xml::FILE_NAME),
        cli.trusted_console_fingerprint.clone(),
    )?;
    tracing::info!(
        name = %name,
        product_version = %product_version,
        fingerprint = %identity.fingerprint(),
        communication = %cli.communication,
        data_dir = %cli.data_dir.display(),
        trusted_consoles = trust.enabled_count(),
        "scan engine starting"
    );
    let ctx = Arc::new(Context {
        name,
        product_version,
        data_dir: cli.data_dir.clone(),
        identity,
        trust,
        trusted_console: cli.trusted_console_fingerprint.clone(),
        max_scan_concurrency: cli.max_scan_concurrency,
        ping_interval: *cli.ping_interval,
        ready: AtomicBool::new(false),
    });

    let health = health::serve(cli.health_listen, ctx.clone(), shutdown.clone()).await?;
    let result = match cli.communication {
        Communication::ConsoleToEngine => {
            standard::run(ctx.clone(), cli.listen, shutdown.clone()).await
        }
        Communication::EngineToConsole => {
            let console_address = cli.console_address.clone().context(
                "--console-address (SCAN_ENGINE_CONSOLE_ADDRESS) is required with \
                 --communication engine-to-console",
            )?;
            reverse::run(
                ctx.clone(),
                reverse::Options {
                    console_address,
                    shared_secret_file: cli.shared_secret_file.clone(),
                },
                shutdown.clone(),
            )
            .await
        }
    };
    shutdown.cancel();
    let _ = health.await;
    tracing::info!("scan engine stopped");
    result
}
