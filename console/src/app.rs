//! Start-up ([`run`]) and the wiring: the listeners, and the HTTPS port's [`router`] of web
//! pages and REST API. Both build on the shared state in [`crate::context`]; nothing imports
//! this module but the binary.

use std::{path::Path, sync::Arc, time::Duration};

use scan_engine_protocol::{Identity, version};
use tokio::net::TcpListener;

pub use crate::context::{App, Console, Settings};
use crate::{
    auth::Credentials,
    cli::Cli,
    clock::Clock,
    engines::listener,
    error::{Error, Result},
    store::Store,
};

fn read_secret_file(path: &Path, what: &str) -> Result<String> {
    let value = std::fs::read_to_string(path).map_err(|source| Error::File {
        path: path.to_owned(),
        source,
    })?;
    let value = value.trim().to_owned();
    if value.is_empty() {
        return Err(Error::InvalidFile {
            path: path.to_owned(),
            problem: format!("the {what} file is empty"),
        });
    }
    Ok(value)
}

async fn bind(addr: &str) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen {
            addr: addr.to_owned(),
            source,
        })
}

/// Runs the console until SIGTERM or SIGINT.
pub async fn run(cli: Cli) -> Result<()> {
    cli.validate().map_err(Error::Config)?;
    let (product_version, overridden) = version::product_version();
    if overridden {
        tracing::warn!(
            %product_version,
            env = version::TEST_ONLY_VERSION_ENV,
            "TEST-ONLY OVERRIDE ACTIVE: the advertised product version comes from the environment; never use this in production"
        );
    }
    let password = read_secret_file(&cli.admin_password_file, "admin password")?;
    std::fs::create_dir_all(&cli.data_dir).map_err(|source| Error::File {
        path: cli.data_dir.clone(),
        source,
    })?;
    let identity = Identity::load_or_generate(&cli.data_dir, "console", "security-console")?;
    let api_tls = crate::tls::server_config(&cli)?;
    let store = Store::open(&cli.data_dir.join("console.db"))?;
    let clock = Clock::system();
    let failed = store
        .fail_running_scans(
            None,
            "the console restarted during the scan".into(),
            clock.now(),
        )
        .await?;
    if failed > 0 {
        tracing::warn!(
            scans = failed,
            "scans interrupted by a console restart marked as failed"
        );
    }

    let engine_listener = bind(&cli.engine_listen).await?;
    let api_listener = bind(&cli.api_listen).await?;
    let engine_addr = engine_listener
        .local_addr()
        .map_err(|source| Error::Listen {
            addr: cli.engine_listen.clone(),
            source,
        })?;
    let api_addr = api_listener.local_addr().map_err(|source| Error::Listen {
        addr: cli.api_listen.clone(),
        source,
    })?;

    let settings = Settings {
        ping_interval: cli.ping_interval,
        unknown_after: cli.unknown_after,
        down_after: cli.down_after,
        shared_secret_ttl: cli.shared_secret_ttl,
        handshake_timeout: Duration::from_secs(10),
        product_version: product_version.clone(),
        console_name: "security-console".into(),
        engine_port: engine_addr.port(),
    };
    let app = Console::new(
        settings,
        store,
        clock,
        identity,
        Credentials::new(cli.admin_user.clone(), password),
    )?;
    tracing::info!(
        fingerprint = %app.identity.fingerprint(),
        %product_version,
        data_dir = %cli.data_dir.display(),
        "security console starting"
    );
    let supervised = app.start_supervisors().await?;
    tracing::info!(
        engines = supervised,
        "supervising console-to-engine engines"
    );

    let mut engine_task = tokio::spawn(listener::serve(app.clone(), engine_listener));
    tokio::spawn(crate::scans::dispatcher(app.clone()));
    let api_task = tokio::spawn(crate::tls::serve(
        api_listener,
        api_tls,
        router(&app),
        app.shutdown.clone(),
    ));
    tracing::info!("listening api={api_addr} engine={engine_addr}");

    let signal = shutdown_signal();
    tokio::pin!(signal);
    tokio::select! {
        s = &mut signal => tracing::info!(signal = s, "shutting down"),
        r = &mut engine_task => {
            app.shutdown.cancel();
            return match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(Error::Config(format!("engine listener stopped: {e}"))),
            };
        }
    }
    app.shutdown.cancel();
    // Give open connections a moment to close politely.
    let _ = tokio::time::timeout(Duration::from_secs(5), api_task).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    tracing::info!("stopped");
    Ok(())
}

/// What the HTTPS port serves: the web pages and the REST API (whose fallback answers any
/// other path).
pub fn router(app: &App) -> axum::Router {
    let sessions = Arc::new(crate::web::session::Sessions::default());
    axum::Router::new()
        .merge(crate::web::router(app.clone(), sessions))
        .merge(crate::api::router(app.clone()))
}

async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            },
            _ => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}
