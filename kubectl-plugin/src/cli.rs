//! Command line of `kubectl scanengine`. kubectl passes a plugin its arguments unchanged, so
//! the plugin takes kubectl's `--kubeconfig`, `--context` and `-n` itself.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Scan Engines as the Security Console's Scan Engines table shows them, and the operations of
/// that page: refresh an engine, switch its communication method, see when the pairing shared
/// secret expires, and authorize a console on an engine with Manual authorization.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "kubectl-scanengine",
    bin_name = "kubectl scanengine",
    version,
    max_term_width = 100
)]
pub struct Cli {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,

    /// Namespace (default: the context's namespace, else `default`).
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Debug, Subcommand)]
pub enum Command {
    /// List ScanEngines: console, communication method (arrow), state, version, last refresh.
    Get(GetArgs),
    /// Ask the console to check an engine now, and wait for the new state.
    Refresh(RefreshArgs),
    /// Switch an engine's communication method (ConsoleToEngine ↔ EngineToConsole).
    Switch(SwitchArgs),
    /// Show when a Console's pairing shared secret expires and is renewed (never its value).
    Secret(SecretArgs),
    /// Enable the console on an engine with Manual authorization, and restart the engine pod.
    Authorize(AuthorizeArgs),
}

/// Output formats of `get`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Adds the engine id, the address the connection goes to and the pod; whole messages.
    Wide,
    /// One JSON object per engine and line.
    Json,
}

#[derive(Clone, Debug, Args)]
pub struct GetArgs {
    /// One ScanEngine; all in the namespace when omitted.
    pub name: Option<String>,

    /// ScanEngines of every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,

    /// After the list, print it again whenever an engine changes.
    #[arg(short = 'w', long)]
    pub watch: bool,

    /// Output format.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<Output>,
}

#[derive(Clone, Debug, Args)]
pub struct RefreshArgs {
    /// The ScanEngine.
    pub name: String,

    /// How long to wait for the operator to have the console check the engine.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

#[derive(Clone, Debug, Args)]
pub struct SwitchArgs {
    /// The ScanEngine.
    pub name: String,

    /// Switch without asking.
    #[arg(short = 'y', long)]
    pub yes: bool,
}

#[derive(Clone, Debug, Args)]
pub struct SecretArgs {
    /// The Console.
    pub console: String,
}

#[derive(Clone, Debug, Args)]
pub struct AuthorizeArgs {
    /// The ScanEngine (authorization: Manual, state Pending Authorization).
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn kubectl_style_flags_parse_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "kubectl-scanengine",
            "get",
            "engine",
            "-n",
            "scanning",
            "-o",
            "wide",
            "--watch",
            "--context",
            "prod",
        ])
        .unwrap();
        assert_eq!(cli.namespace.as_deref(), Some("scanning"));
        assert_eq!(cli.context.as_deref(), Some("prod"));
        let Command::Get(get) = cli.command else {
            panic!("not get")
        };
        assert_eq!(get.name.as_deref(), Some("engine"));
        assert_eq!(get.output, Some(Output::Wide));
        assert!(get.watch);
    }

    #[test]
    fn refresh_waits_a_minute_unless_told() {
        let parse = |args: &[&str]| match Cli::try_parse_from(args).unwrap().command {
            Command::Refresh(r) => r.timeout,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            parse(&["kubectl-scanengine", "refresh", "e"]),
            Duration::from_secs(60)
        );
        assert_eq!(
            parse(&["kubectl-scanengine", "refresh", "e", "--timeout", "5s"]),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn switch_and_authorize_need_a_name() {
        assert!(Cli::try_parse_from(["kubectl-scanengine", "switch"]).is_err());
        assert!(Cli::try_parse_from(["kubectl-scanengine", "authorize"]).is_err());
        assert!(Cli::try_parse_from(["kubectl-scanengine", "secret"]).is_err());
    }
}
