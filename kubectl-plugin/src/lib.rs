//! `kubectl scanengine`: the Security Console's Scan Engines table and its operations, for
//! ScanEngines and Consoles run by scan-engine-operator.
//!
//! - [`table`] and [`secret`]: pure rendering (the arrow for the communication method, the
//!   state in words and colour, ages, the shared secret's expiry), unit tested;
//! - [`commands`]: one module per subcommand, talking to the API server;
//! - [`cli`]: the command line; [`error`]: the one error type.
//!
//! The CRD types, the refresh annotation and the object names come from the operator's own
//! crate, so the plugin cannot drift from what the operator writes and reads.

pub mod cli;
pub mod commands;
pub mod error;
pub mod secret;
pub mod table;

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

pub use error::{Error, Result};

use cli::{Cli, Command};

/// A client for the kubeconfig (or in-cluster configuration) the flags name, and the
/// namespace to use when `-n` is not given.
pub async fn connect(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<(Client, String)> {
    let options = KubeConfigOptions {
        context: context.map(str::to_owned),
        ..KubeConfigOptions::default()
    };
    let config = match (kubeconfig, context) {
        (Some(path), _) => {
            let file = Kubeconfig::read_from(path).map_err(|err| Error::Config(err.to_string()))?;
            Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|err| Error::Config(format!("{}: {err}", path.display())))?
        }
        (None, Some(_)) => Config::from_kubeconfig(&options)
            .await
            .map_err(|err| Error::Config(err.to_string()))?,
        (None, None) => Config::infer()
            .await
            .map_err(|err| Error::Config(err.to_string()))?,
    };
    let namespace = config.default_namespace.clone();
    let client = Client::try_from(config).map_err(|err| Error::Config(err.to_string()))?;
    Ok((client, namespace))
}

/// Runs the command line.
pub async fn run(cli: Cli) -> Result<()> {
    let (client, default_ns) = connect(cli.kubeconfig.as_deref(), cli.context.as_deref()).await?;
    let ns = cli.namespace.clone().unwrap_or(default_ns.clone());
    match &cli.command {
        Command::Get(args) => {
            commands::get::run(&client, cli.namespace.as_deref(), &default_ns, args).await
        }
        Command::Refresh(args) => {
            commands::refresh::run(&client, &ns, &args.name, args.timeout).await
        }
        Command::Switch(args) => commands::switch::run(&client, &ns, &args.name, args.yes).await,
        Command::Secret(args) => commands::secret::run(&client, &ns, &args.console).await,
        Command::Authorize(args) => commands::authorize::run(&client, &ns, &args.name).await,
    }
}
