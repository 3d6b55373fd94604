//! The `scan-engine` command line (`docs/contracts.md` §2). Every flag can also be set through
//! the environment variable of the same name with a `SCAN_ENGINE_` prefix.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, ValueEnum};
use scan_engine_protocol::Fingerprint;

/// Who opens the session between console and engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Communication {
    /// Standard: the console dials the engine on `--listen` (port 40814).
    ConsoleToEngine,
    /// Reverse: the engine dials the console at `--console-address` (port 40815).
    EngineToConsole,
}

impl std::fmt::Display for Communication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Communication::ConsoleToEngine => "console-to-engine",
            Communication::EngineToConsole => "engine-to-console",
        })
    }
}

/// Administrative commands (the engine itself runs without one).
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum Command {
    /// List, enable or disable the consoles in <data-dir>/consoles.xml (standard pairing);
    /// restart the engine afterwards.
    #[command(subcommand)]
    Consoles(crate::consoles_command::ConsolesCommand),
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The open Scan Engine: pairs with a Security Console and runs TCP discovery scans for it.
///
/// Standard pairing (console-to-engine): the console dials this engine. A console the engine
/// does not know is written to `<data-dir>/consoles.xml` with enabled="0" and is answered
/// "pending authorization"; set enabled="1" on its entry and restart the engine to accept it,
/// or start the engine with --trusted-console-fingerprint.
///
/// Reverse pairing (engine-to-console): the engine dials the console, presents the shared
/// secret from --shared-secret-file once, and afterwards authenticates by certificate alone.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "scan-engine",
    version,
    about,
    long_about,
    max_term_width = 100,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    /// Without a command, the engine runs.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Directory for the engine's identity (engine.pem, or engine.crt and engine.key from
    /// earlier versions), consoles.xml and the reverse pairing record (pairing.json). Must
    /// persist across restarts.
    #[arg(
        long,
        global = true,
        env = "SCAN_ENGINE_DATA_DIR",
        value_name = "DIR",
        default_value = "/var/lib/scan-engine"
    )]
    pub data_dir: PathBuf,

    /// Name the engine registers under (reverse pairing) and greets consoles with: up to 320
    /// ASCII letters, digits, inner spaces and `. - _ : @ + / ( )`. [default: the host name]
    #[arg(long, env = "SCAN_ENGINE_NAME", value_name = "NAME", value_parser = parse_name)]
    pub name: Option<String>,

    /// Who opens the session: the console (standard, inbound to --listen) or the engine
    /// (reverse, outbound to --console-address).
    #[arg(
        long,
        env = "SCAN_ENGINE_COMMUNICATION",
        value_enum,
        default_value_t = Communication::ConsoleToEngine
    )]
    pub communication: Communication,

    /// Address on which a console-to-engine engine accepts its console.
    #[arg(
        long,
        env = "SCAN_ENGINE_LISTEN",
        value_name = "ADDR:PORT",
        default_value = "0.0.0.0:40814"
    )]
    pub listen: SocketAddr,

    /// host:port of the console's engine listener (usually port 40815). Required with
    /// --communication engine-to-console.
    #[arg(
        long,
        env = "SCAN_ENGINE_CONSOLE_ADDRESS",
        value_name = "HOST:PORT",
        required_if_eq("communication", "engine-to-console")
    )]
    pub console_address: Option<String>,

    /// File holding the console's pairing shared secret. Read only while the engine has no
    /// pairing record (first reverse pairing); the secret is never logged.
    #[arg(long, env = "SCAN_ENGINE_SHARED_SECRET_FILE", value_name = "FILE")]
    pub shared_secret_file: Option<PathBuf>,

    /// sha256:<hex> fingerprint of the console's engine-communication certificate. The engine
    /// enables that console in consoles.xml itself (Automatic authorization) and, in reverse
    /// mode, refuses to pair with any other console.
    #[arg(
        long,
        env = "SCAN_ENGINE_TRUSTED_CONSOLE_FINGERPRINT",
        value_name = "sha256:HEX"
    )]
    pub trusted_console_fingerprint: Option<Fingerprint>,

    /// How often a reverse engine pings its console (e.g. 30s, 500ms, 1m). Also caps the
    /// retry backoff when the console cannot be reached.
    #[arg(
        long,
        env = "SCAN_ENGINE_PING_INTERVAL",
        value_name = "DURATION",
        default_value = "30s"
    )]
    pub ping_interval: humantime::Duration,

    /// Address of the plain HTTP health server (GET /healthz, GET /readyz).
    #[arg(
        long,
        env = "SCAN_ENGINE_HEALTH_LISTEN",
        value_name = "ADDR:PORT",
        default_value = "0.0.0.0:8080"
    )]
    pub health_listen: SocketAddr,

    /// Upper bound on simultaneous TCP connection attempts during a scan (a job may ask for
    /// fewer).
    #[arg(
        long,
        env = "SCAN_ENGINE_MAX_SCAN_CONCURRENCY",
        value_name = "N",
        default_value_t = 256,
        value_parser = clap::value_parser!(u32).range(1..=65536)
    )]
    pub max_scan_concurrency: u32,

    /// Log format. The level is set with RUST_LOG (default: info).
    #[arg(
        long,
        env = "SCAN_ENGINE_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,
}

/// `--name`, checked as the console checks the name in a `Hello`.
fn parse_name(name: &str) -> Result<String, String> {
    scan_engine_protocol::text::check_name(name)
        .map(|()| name.to_owned())
        .map_err(|problem| format!("the name {problem}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_follow_the_contract() {
        let cli = Cli::try_parse_from(["scan-engine"]).unwrap();
        assert_eq!(cli.communication, Communication::ConsoleToEngine);
        assert_eq!(cli.listen.port(), 40814);
        assert_eq!(cli.health_listen.port(), 8080);
        assert_eq!(*cli.ping_interval, std::time::Duration::from_secs(30));
        assert_eq!(cli.max_scan_concurrency, 256);
        assert_eq!(cli.data_dir, PathBuf::from("/var/lib/scan-engine"));
    }

    #[test]
    fn reverse_mode_needs_a_console_address() {
        assert!(
            Cli::try_parse_from(["scan-engine", "--communication", "engine-to-console"]).is_err()
        );
        let cli = Cli::try_parse_from([
            "scan-engine",
            "--communication",
            "engine-to-console",
            "--console-address",
            "console:40815",
            "--ping-interval",
            "500ms",
        ])
        .unwrap();
        assert_eq!(*cli.ping_interval, std::time::Duration::from_millis(500));
    }

    #[test]
    fn the_consoles_command_needs_no_engine_settings() {
        let cli = Cli::try_parse_from([
            "scan-engine",
            "--communication",
            "engine-to-console",
            "consoles",
            "enable",
            "2",
            "--data-dir",
            "/data",
        ])
        .unwrap();
        assert_eq!(
            cli.command,
            Some(Command::Consoles(
                crate::consoles_command::ConsolesCommand::Enable {
                    console: "2".into()
                }
            ))
        );
        assert_eq!(cli.data_dir, PathBuf::from("/data"));
    }

    #[test]
    fn names_a_console_would_refuse_are_refused_at_start() {
        assert!(Cli::try_parse_from(["scan-engine", "--name", "<b>x</b>"]).is_err());
        let cli = Cli::try_parse_from(["scan-engine", "--name", "edge.scanning"]).unwrap();
        assert_eq!(cli.name.as_deref(), Some("edge.scanning"));
    }

    #[test]
    fn fingerprints_are_validated() {
        assert!(
            Cli::try_parse_from(["scan-engine", "--trusted-console-fingerprint", "md5:00"])
                .is_err()
        );
        let fp = format!("sha256:{}", "ab".repeat(32));
        let cli =
            Cli::try_parse_from(["scan-engine", "--trusted-console-fingerprint", &fp]).unwrap();
        assert_eq!(cli.trusted_console_fingerprint.unwrap().as_str(), fp);
    }

    #[test]
    fn help_mentions_every_environment_variable() {
        let help = Cli::command().render_long_help().to_string();
        for env in [
            "SCAN_ENGINE_DATA_DIR",
            "SCAN_ENGINE_NAME",
            "SCAN_ENGINE_COMMUNICATION",
            "SCAN_ENGINE_LISTEN",
            "SCAN_ENGINE_CONSOLE_ADDRESS",
            "SCAN_ENGINE_SHARED_SECRET_FILE",
            "SCAN_ENGINE_TRUSTED_CONSOLE_FINGERPRINT",
            "SCAN_ENGINE_PING_INTERVAL",
            "SCAN_ENGINE_HEALTH_LISTEN",
            "SCAN_ENGINE_MAX_SCAN_CONCURRENCY",
            "SCAN_ENGINE_LOG_FORMAT",
        ] {
            assert!(help.contains(env), "--help does not mention {env}");
        }
        assert!(!help.contains("TEST_ONLY"));
    }
}
