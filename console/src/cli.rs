//! The command line (docs/contracts.md §3). Every flag has a `SECURITY_CONSOLE_*` environment
//! variable; secrets are only ever read from files.

use std::{path::PathBuf, time::Duration};

use clap::{Parser, ValueEnum};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The open Security Console: pairs distributed Scan Engines in both communication directions,
/// serves the InsightVM-v3-shaped REST API over HTTPS and stores scan results.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "security-console",
    version,
    about,
    long_about = None,
    after_help = "Logs go to stderr; RUST_LOG sets the filter (default: info). The shared secret, the admin password and private keys are never logged."
)]
pub struct Cli {
    /// Directory of the SQLite database (`console.db`), the engine-communication identity
    /// (`console.pem`, or `console.key` and `console.crt` from earlier versions) and a generated
    /// API certificate (`api.key`, `api.crt`).
    #[arg(
        long,
        env = "SECURITY_CONSOLE_DATA_DIR",
        default_value = "/var/lib/security-console"
    )]
    pub data_dir: PathBuf,

    /// Address of the HTTPS REST API.
    #[arg(
        long,
        env = "SECURITY_CONSOLE_API_LISTEN",
        default_value = "0.0.0.0:3780"
    )]
    pub api_listen: String,

    /// Address where engine-to-console (reverse) engines dial in.
    #[arg(
        long,
        env = "SECURITY_CONSOLE_ENGINE_LISTEN",
        default_value = "0.0.0.0:40815"
    )]
    pub engine_listen: String,

    /// PEM certificate (chain) serving the API. Requires --api-tls-key-file. When absent, a
    /// self-signed certificate for --api-hostname is generated into the data directory.
    #[arg(
        long,
        env = "SECURITY_CONSOLE_API_TLS_CERT_FILE",
        requires = "api_tls_key_file"
    )]
    pub api_tls_cert_file: Option<PathBuf>,

    /// PEM private key of --api-tls-cert-file.
    #[arg(
        long,
        env = "SECURITY_CONSOLE_API_TLS_KEY_FILE",
        requires = "api_tls_cert_file"
    )]
    pub api_tls_key_file: Option<PathBuf>,

    /// Names (comma separated; host names or IP addresses) of a generated API certificate.
    #[arg(
        long,
        env = "SECURITY_CONSOLE_API_HOSTNAME",
        default_value = "localhost",
        value_delimiter = ','
    )]
    pub api_hostname: Vec<String>,

    /// Basic-auth user name of the API.
    #[arg(long, env = "SECURITY_CONSOLE_ADMIN_USER", default_value = "admin")]
    pub admin_user: String,

    /// File holding the API password (required; surrounding whitespace is ignored).
    #[arg(long, env = "SECURITY_CONSOLE_ADMIN_PASSWORD_FILE")]
    pub admin_password_file: PathBuf,

    /// Lifetime of a pairing shared secret (e.g. `60m`, `90s`; shorter values are for tests).
    #[arg(long, env = "SECURITY_CONSOLE_SHARED_SECRET_TTL", default_value = "60m", value_parser = humantime::parse_duration)]
    pub shared_secret_ttl: Duration,

    /// How often the console checks (pings, or redials) console-to-engine engines.
    #[arg(long, env = "SECURITY_CONSOLE_PING_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub ping_interval: Duration,

    /// Lapse since the last successful exchange after which a quiet engine is `unknown`.
    #[arg(long, env = "SECURITY_CONSOLE_UNKNOWN_AFTER", default_value = "90s", value_parser = humantime::parse_duration)]
    pub unknown_after: Duration,

    /// Lapse after which an engine-to-console engine that has not called is `not-responding`
    /// (its session is closed).
    #[arg(long, env = "SECURITY_CONSOLE_DOWN_AFTER", default_value = "300s", value_parser = humantime::parse_duration)]
    pub down_after: Duration,

    /// Log format.
    #[arg(
        long,
        env = "SECURITY_CONSOLE_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

impl Cli {
    /// Checks relations between values that clap cannot express.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("--shared-secret-ttl", self.shared_secret_ttl),
            ("--ping-interval", self.ping_interval),
            ("--unknown-after", self.unknown_after),
            ("--down-after", self.down_after),
        ];
        for (flag, d) in positive {
            if d.is_zero() {
                return Err(format!("{flag} must be longer than zero"));
            }
        }
        if self.admin_user.trim().is_empty() {
            return Err("--admin-user must not be empty".into());
        }
        if self.api_hostname.iter().all(|h| h.trim().is_empty()) {
            return Err("--api-hostname must name at least one host".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_follow_the_contract() {
        let cli = Cli::try_parse_from(["security-console", "--admin-password-file", "/p"]).unwrap();
        assert_eq!(cli.data_dir, PathBuf::from("/var/lib/security-console"));
        assert_eq!(cli.api_listen, "0.0.0.0:3780");
        assert_eq!(cli.engine_listen, "0.0.0.0:40815");
        assert_eq!(cli.api_hostname, vec!["localhost".to_owned()]);
        assert_eq!(cli.admin_user, "admin");
        assert_eq!(cli.shared_secret_ttl, Duration::from_secs(3600));
        assert_eq!(cli.ping_interval, Duration::from_secs(30));
        assert_eq!(cli.unknown_after, Duration::from_secs(90));
        assert_eq!(cli.down_after, Duration::from_secs(300));
        assert_eq!(cli.log_format, LogFormat::Text);
        cli.validate().unwrap();
    }

    #[test]
    fn parses_durations_and_host_lists() {
        let cli = Cli::try_parse_from([
            "security-console",
            "--admin-password-file",
            "/p",
            "--shared-secret-ttl",
            "2s",
            "--api-hostname",
            "console.ns.svc,127.0.0.1",
        ])
        .unwrap();
        assert_eq!(cli.shared_secret_ttl, Duration::from_secs(2));
        assert_eq!(cli.api_hostname, vec!["console.ns.svc", "127.0.0.1"]);
    }

    #[test]
    fn cert_without_key_is_refused() {
        let r = Cli::try_parse_from([
            "security-console",
            "--admin-password-file",
            "/p",
            "--api-tls-cert-file",
            "/c",
        ]);
        assert!(r.is_err());
    }
}
