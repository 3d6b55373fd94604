//! The console's shared state: its settings, store, clock, identity, live sessions and
//! supervisors, credentials ([`Console`], shared as [`App`]). The REST API, the web pages and the
//! engine tasks all work on it; the wiring in `crate::app` starts them.

use std::sync::Arc;

use scan_engine_protocol::{Identity, tls};
use tokio_util::sync::CancellationToken;

use crate::{
    auth::Credentials,
    clock::Clock,
    engines::{Registry, Supervisors, Thresholds},
    error::Result,
    shared_secret::SharedSecrets,
    store::{Direction, Store},
};
use std::time::Duration;

/// Tunables, from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    pub ping_interval: Duration,
    pub unknown_after: Duration,
    pub down_after: Duration,
    pub shared_secret_ttl: Duration,
    /// Bound on each step of a connection's admission (TLS, hello, pairing).
    pub handshake_timeout: Duration,
    /// The version advertised to engines.
    pub product_version: String,
    /// The name in our `Hello`.
    pub console_name: String,
    /// The engine listener's port, reported by `administration/info`.
    pub engine_port: u16,
}

impl Settings {
    /// State thresholds.
    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            unknown_after: self.unknown_after,
            down_after: self.down_after,
        }
    }
}

/// Everything the tasks of a running console share.
#[derive(Debug)]
pub struct Console {
    pub settings: Settings,
    pub store: Store,
    pub clock: Clock,
    pub identity: Arc<Identity>,
    pub client_config: Arc<rustls::ClientConfig>,
    pub secrets: SharedSecrets,
    pub sessions: Registry,
    pub supervisors: Supervisors,
    pub credentials: Credentials,
    /// Cancelled on SIGTERM/SIGINT; every task watches it.
    pub shutdown: CancellationToken,
}

/// Shared handle to the console.
pub type App = Arc<Console>;

impl Console {
    /// Assembles a console from its parts (no task is started).
    pub fn new(
        settings: Settings,
        store: Store,
        clock: Clock,
        identity: Identity,
        credentials: Credentials,
    ) -> Result<App> {
        let client_config = tls::client_config(&identity)?;
        let secrets = SharedSecrets::new(store.clone(), clock.clone(), settings.shared_secret_ttl);
        Ok(Arc::new(Console {
            settings,
            store,
            clock,
            identity: Arc::new(identity),
            client_config,
            secrets,
            sessions: Registry::default(),
            supervisors: Supervisors::default(),
            credentials,
            shutdown: CancellationToken::new(),
        }))
    }

    /// Starts a supervisor for every stored console-to-engine engine.
    pub async fn start_supervisors(self: &Arc<Self>) -> Result<usize> {
        let engines = self.store.engines().await?;
        let mut n = 0;
        for e in engines
            .iter()
            .filter(|e| e.direction == Direction::ConsoleToEngine)
        {
            self.supervisors.start(self, e.id);
            n += 1;
        }
        Ok(n)
    }
}
