//! Wiring of the binary: logging, client, HTTP server, leader election, controllers and
//! graceful shutdown on SIGTERM/SIGINT.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use tokio::sync::watch;

use crate::cli::Cli;
use crate::console_api::http::{HttpConsoleApiFactory, HttpSettings};
use crate::controller::{self, Settings};
use crate::http::{self as server, HttpState};
use crate::leader::{self, LeaderElector, Leadership};
use crate::metrics::Metrics;
use crate::telemetry;

/// Resolves on SIGTERM or Ctrl-C.
async fn termination() {
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

type Stop =
    futures::future::Shared<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + Sync>>>;

/// A cloneable future that resolves once a stop is requested.
fn waiter(rx: &watch::Receiver<bool>) -> Stop {
    let mut rx = rx.clone();
    let fut: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + Sync>> =
        Box::pin(async move {
            let _ = rx.wait_for(|stop| *stop).await;
        });
    futures::FutureExt::shared(fut)
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    telemetry::init(cli.log_format, &cli.log_filter).map_err(anyhow::Error::msg)?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pod_labels = cli.pod_labels().map_err(anyhow::Error::msg)?;
    let timing = cli.leader_timing().map_err(anyhow::Error::msg)?;

    let client = kube::Client::try_default()
        .await
        .context("cannot reach the Kubernetes API server")?;
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);

    let http_state = HttpState {
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    let http = tokio::spawn(server::serve(cli.listen, http_state, waiter(&stop_rx)));

    let stop = stop_tx.clone();
    tokio::spawn(async move {
        termination().await;
        tracing::info!("termination signal: shutting down");
        let _ = stop.send(true);
    });

    let identity = cli
        .pod_name
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("scan-engine-operator-{}", std::process::id()));
    ready.store(true, Ordering::SeqCst);

    // With leader election, the controllers write through fences that refuse every write once
    // the renew deadline has passed; the elector's own Lease requests are not fenced.
    let leadership = Arc::new(Leadership::default());
    let mut elector = cli.leader_election.then(|| {
        LeaderElector::new(
            client.clone(),
            &cli.operator_namespace,
            &cli.lease_name,
            &identity,
            timing,
            leadership.clone(),
        )
    });
    if let Some(elector) = &mut elector {
        tracing::info!(
            lease = %cli.lease_name,
            %identity,
            lease_duration = ?timing.lease_duration,
            renew_deadline = ?timing.renew_deadline,
            retry_period = ?timing.retry_period,
            "waiting for the leader Lease"
        );
        let mut stop_wait = stop_rx.clone();
        tokio::select! {
            _ = elector.acquire() => {}
            _ = stop_wait.wait_for(|s| *s) => {
                let _ = http.await;
                return Ok(());
            }
        }
        tracing::info!("leading");
        metrics.set_leader(true);
    }

    let settings = Settings {
        refresh_interval: cli.refresh_interval,
        secret_renewal_margin: cli.secret_renewal_margin,
        operator_namespace: cli.operator_namespace.clone(),
        operator_pod_labels: pod_labels,
        default_version: crate::VERSION.into(),
        max_concurrent_reconciles: cli.max_concurrent_reconciles,
    };
    let counted = metrics.clone();
    let factory: Arc<dyn crate::console_api::ConsoleApiFactory> =
        Arc::new(HttpConsoleApiFactory::observed(
            HttpSettings {
                request_timeout: cli.console_timeout,
                ..HttpSettings::default()
            },
            Arc::new(move |call| counted.console_request(call.as_str())),
        ));
    let (controller_client, factory) = if elector.is_some() {
        (
            leader::fenced_client(client.clone(), leadership.clone()),
            Arc::new(leader::FencedConsoles::new(factory, leadership.clone())) as Arc<_>,
        )
    } else {
        (client.clone(), factory)
    };
    let parts = controller::wiring::Parts {
        client: controller_client,
        metrics: metrics.clone(),
        consoles: factory,
        clock: Arc::new(k8s_openapi::jiff::Timestamp::now),
        settings,
    };

    let mut lost = false;
    let controllers =
        controller::wiring::run(parts, cli.watch_namespaces.clone(), waiter(&stop_rx));
    match &mut elector {
        Some(elector) => {
            tokio::pin!(controllers);
            tokio::select! {
                _ = &mut controllers => {}
                _ = elector.keep() => {
                    // The fences already refuse every write; stop the controllers, but exit
                    // without them if they take longer than the margin before the Lease expires.
                    lost = true;
                    metrics.set_leader(false);
                    let _ = stop_tx.send(true);
                    let margin = timing.lease_duration.saturating_sub(timing.renew_deadline) / 2;
                    if tokio::time::timeout(margin, &mut controllers).await.is_err() {
                        tracing::warn!("controllers did not stop in time; exiting without them");
                    }
                }
            }
        }
        None => controllers.await,
    }
    let _ = stop_tx.send(true);
    if let Some(elector) = &elector {
        metrics.set_leader(false);
        if !lost {
            elector.release().await;
        }
    }
    let _ = http.await;
    if lost {
        anyhow::bail!("lost the leader Lease");
    }
    tracing::info!("stopped");
    Ok(())
}
