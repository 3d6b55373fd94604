//! Command line of `scan-engine-operator`. Every flag also reads an environment variable.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{ArgAction, Parser, ValueEnum};

use crate::leader::Timing;

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Runs distributed Scan Engines and their Consoles as Kubernetes custom resources.
#[derive(Clone, Debug, Parser)]
#[command(name = "scan-engine-operator", version, about)]
pub struct Cli {
    /// Namespaces to watch (comma separated). Empty: every namespace (cluster mode).
    #[arg(
        long,
        env = "SCAN_ENGINE_OPERATOR_WATCH_NAMESPACES",
        value_delimiter = ','
    )]
    pub watch_namespaces: Vec<String>,

    /// Address of the HTTP server for /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "SCAN_ENGINE_OPERATOR_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    pub listen: SocketAddr,

    /// How often engine and console status is refreshed from the console.
    #[arg(long, env = "SCAN_ENGINE_OPERATOR_REFRESH_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub refresh_interval: Duration,

    /// Renew a console's pairing shared secret when less than this is left of its life.
    #[arg(long, env = "SCAN_ENGINE_OPERATOR_SECRET_RENEWAL_MARGIN", default_value = "15m", value_parser = humantime::parse_duration)]
    pub secret_renewal_margin: Duration,

    /// Timeout of one console API request.
    #[arg(long, env = "SCAN_ENGINE_OPERATOR_CONSOLE_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub console_timeout: Duration,

    /// Log format.
    #[arg(
        long,
        env = "SCAN_ENGINE_OPERATOR_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// Reconciles running at once, per kind (ScanEngine, Console). Bounds the operator's memory
    /// and its load on the API server and the consoles when many objects change together.
    #[arg(
        long,
        env = "SCAN_ENGINE_OPERATOR_MAX_CONCURRENT_RECONCILES",
        default_value_t = 16,
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub max_concurrent_reconciles: u16,

    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "SCAN_ENGINE_OPERATOR_LOG_FILTER", default_value = "info")]
    pub log_filter: String,

    /// Elect a leader through a Lease so that only one replica reconciles.
    #[arg(long, env = "SCAN_ENGINE_OPERATOR_LEADER_ELECTION", default_value_t = true, action = ArgAction::Set)]
    pub leader_election: bool,

    /// Name of the leader Lease (in the operator's namespace).
    #[arg(
        long,
        env = "SCAN_ENGINE_OPERATOR_LEASE_NAME",
        default_value = "scan-engine-operator-leader"
    )]
    pub lease_name: String,

    /// How long a leader's Lease is valid without renewal: a standby takes it over once it has
    /// seen no renewal for this long. Whole seconds.
    #[arg(long, env = "SCAN_ENGINE_OPERATOR_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,

    /// A leader that has not renewed its Lease for this long stops reconciling and exits, so
    /// it is gone before the Lease can expire. Shorter than --lease-duration.
    #[arg(long, env = "SCAN_ENGINE_OPERATOR_LEASE_RENEW_DEADLINE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub lease_renew_deadline: Duration,

    /// How often the leader renews its Lease and a standby tries to acquire it. Shorter than
    /// --lease-renew-deadline.
    #[arg(long, env = "SCAN_ENGINE_OPERATOR_LEASE_RETRY_PERIOD", default_value = "2s", value_parser = humantime::parse_duration)]
    pub lease_retry_period: Duration,

    /// Namespace the operator runs in (from the downward API).
    #[arg(long, env = "POD_NAMESPACE", default_value = "scan-engine-operator")]
    pub operator_namespace: String,

    /// Identity of this replica in the Lease (from the downward API; default: host name).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,

    /// Labels of the operator's pods, `k=v` comma separated: managed consoles admit them on 3780.
    #[arg(
        long,
        env = "SCAN_ENGINE_OPERATOR_POD_LABELS",
        default_value = "app.kubernetes.io/name=scan-engine-operator"
    )]
    pub operator_pod_labels: String,
}

impl Cli {
    /// `k=v,k2=v2` as a map; malformed pairs are an error.
    pub fn pod_labels(&self) -> Result<BTreeMap<String, String>, String> {
        self.operator_pod_labels
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|pair| {
                pair.split_once('=')
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                    .ok_or_else(|| format!("--operator-pod-labels: `{pair}` is not key=value"))
            })
            .collect()
    }

    /// The leader election durations, checked: the renew deadline below the lease duration and
    /// the retry period below the renew deadline (an error names the flag).
    pub fn leader_timing(&self) -> Result<Timing, String> {
        let (lease, renew, retry) = (
            self.lease_duration,
            self.lease_renew_deadline,
            self.lease_retry_period,
        );
        let show = |d: Duration| humantime::format_duration(d).to_string();
        if lease.is_zero() || lease.subsec_nanos() != 0 || i32::try_from(lease.as_secs()).is_err() {
            return Err(format!(
                "--lease-duration: {} is not a positive whole number of seconds (a Lease stores seconds)",
                show(lease)
            ));
        }
        if renew >= lease {
            return Err(format!(
                "--lease-renew-deadline: {} must be shorter than --lease-duration ({}), or a leader could still write after its Lease expired",
                show(renew),
                show(lease)
            ));
        }
        if retry.is_zero() || retry >= renew {
            return Err(format!(
                "--lease-retry-period: {} must be above zero and shorter than --lease-renew-deadline ({}), or a leader could not retry a renewal before its deadline",
                show(retry),
                show(renew)
            ));
        }
        Ok(Timing {
            lease_duration: lease,
            renew_deadline: renew,
            retry_period: retry,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flags() {
        let cli = Cli::try_parse_from([
            "scan-engine-operator",
            "--watch-namespaces",
            "a,b",
            "--refresh-interval",
            "30s",
            "--log-format",
            "json",
            "--leader-election",
            "false",
        ]);
        let Ok(cli) = cli else { panic!("{cli:?}") };
        assert_eq!(cli.watch_namespaces, ["a", "b"]);
        assert_eq!(cli.refresh_interval, Duration::from_secs(30));
        assert_eq!(cli.secret_renewal_margin, Duration::from_secs(900));
        assert_eq!(cli.log_format, LogFormat::Json);
        assert!(!cli.leader_election);
        assert_eq!(
            cli.pod_labels()
                .ok()
                .and_then(|l| l.get("app.kubernetes.io/name").cloned())
                .as_deref(),
            Some("scan-engine-operator")
        );
        assert_eq!(
            cli.leader_timing(),
            Ok(Timing {
                lease_duration: Duration::from_secs(15),
                renew_deadline: Duration::from_secs(10),
                retry_period: Duration::from_secs(2),
            })
        );
    }

    fn timing(args: &[&str]) -> Result<Timing, String> {
        let cli = Cli::try_parse_from(["scan-engine-operator"].iter().chain(args))
            .map_err(|e| e.to_string())?;
        cli.leader_timing()
    }

    #[test]
    fn leader_durations_are_checked_and_the_error_names_the_flag() {
        let err = |args: &[&str]| timing(args).err().unwrap_or_default();
        let renew = err(&["--lease-duration", "15s", "--lease-renew-deadline", "15s"]);
        assert!(
            renew.starts_with("--lease-renew-deadline:") && renew.contains("--lease-duration"),
            "{renew}"
        );
        let retry = err(&["--lease-renew-deadline", "5s", "--lease-retry-period", "6s"]);
        assert!(retry.starts_with("--lease-retry-period:"), "{retry}");
        let zero = err(&["--lease-retry-period", "0s"]);
        assert!(zero.starts_with("--lease-retry-period:"), "{zero}");
        let fraction = err(&["--lease-duration", "15500ms"]);
        assert!(fraction.starts_with("--lease-duration:"), "{fraction}");
        assert_eq!(
            timing(&[
                "--lease-duration",
                "4s",
                "--lease-renew-deadline",
                "3s",
                "--lease-retry-period",
                "500ms"
            ]),
            Ok(Timing {
                lease_duration: Duration::from_secs(4),
                renew_deadline: Duration::from_secs(3),
                retry_period: Duration::from_millis(500),
            })
        );
    }
}
