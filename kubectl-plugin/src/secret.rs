//! `kubectl scanengine secret CONSOLE`: when the Console's pairing shared secret expires and when
//! the operator renews it, from the Console's status and spec. The value itself lives only in
//! the Secret's data; nothing here reads that Secret.

use std::fmt::Write as _;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use scan_engine_operator::crd::Console;
use serde::Serialize;

use crate::table::age;

/// The operator's default `--secret-renewal-margin`: the margin when the Console's
/// `spec.sharedSecret.renewBefore` is not set. (The operator keeps it as its flag's default
/// text; a test compares the two.)
pub const DEFAULT_RENEWAL_MARGIN: Duration = Duration::from_secs(15 * 60);

/// Where the renewal margin comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum MarginSource {
    /// `spec.sharedSecret.renewBefore`.
    Spec,
    /// The operator's default; an operator started with another `--secret-renewal-margin`
    /// renews at another time.
    OperatorDefault,
}

/// What `secret` shows. Never the value.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretInfo {
    pub namespace: String,
    pub console: String,
    /// The Secret (key `shared-secret`) holding the value.
    pub secret_name: Option<String>,
    pub expires_at: Option<Timestamp>,
    pub renews_at: Option<Timestamp>,
    #[serde(with = "humantime_serde_secs")]
    pub renew_before: Duration,
    pub margin_source: MarginSource,
    /// The SharedSecretReady condition's status and message, when there is one.
    pub ready: Option<(String, String)>,
}

mod humantime_serde_secs {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

impl SecretInfo {
    pub fn new(console: &Console) -> SecretInfo {
        let status = console.status.clone().unwrap_or_default();
        let spec_margin = console
            .spec
            .shared_secret
            .as_ref()
            .and_then(|s| s.renew_before.as_deref())
            .and_then(|d| humantime::parse_duration(d).ok());
        let (renew_before, margin_source) = match spec_margin {
            Some(m) => (m, MarginSource::Spec),
            None => (DEFAULT_RENEWAL_MARGIN, MarginSource::OperatorDefault),
        };
        let expires_at = status
            .shared_secret
            .as_ref()
            .and_then(|s| s.expires_at.as_ref())
            .map(|t| t.0);
        let renews_at = expires_at.and_then(|e| {
            let margin = i64::try_from(renew_before.as_secs()).ok()?;
            Timestamp::from_second(e.as_second().checked_sub(margin)?).ok()
        });
        SecretInfo {
            namespace: console.metadata.namespace.clone().unwrap_or_default(),
            console: console.metadata.name.clone().unwrap_or_default(),
            secret_name: status.shared_secret.as_ref().map(|s| s.secret_name.clone()),
            expires_at,
            renews_at,
            renew_before,
            margin_source,
            ready: status
                .conditions
                .iter()
                .find(|c| c.type_ == "SharedSecretReady")
                .map(|c| (c.status.clone(), c.message.clone())),
        }
    }
}

/// How far `t` is from `now`: `in 42m` or `3m ago`.
fn relative(t: Timestamp, now: Timestamp) -> String {
    let seconds = t.as_second() - now.as_second();
    if seconds >= 0 {
        format!("in {}", age(seconds))
    } else {
        format!("{} ago", age(-seconds))
    }
}

/// The lines `secret` prints, one `Label: value` each.
pub fn render(info: &SecretInfo, now: Timestamp) -> String {
    let mut out = String::new();
    let mut line = |label: &str, value: String| {
        let _ = writeln!(out, "{:<14}{value}", format!("{label}:"));
    };
    line("Console", format!("{}/{}", info.namespace, info.console));
    match &info.secret_name {
        None => line(
            "Secret",
            "none yet (status.sharedSecret is empty: the operator has not stored a shared \
             secret for this console)"
                .into(),
        ),
        Some(secret) => {
            line(
                "Secret",
                format!("{secret} (key shared-secret; the value is not shown)"),
            );
            line(
                "Expires",
                match info.expires_at {
                    Some(t) if t <= now => format!("{t} ({}, EXPIRED)", relative(t, now)),
                    Some(t) => format!("{t} ({})", relative(t, now)),
                    None => "unknown (the console has not said)".into(),
                },
            );
            let margin = humantime::format_duration(info.renew_before);
            let source = match info.margin_source {
                MarginSource::Spec => "spec.sharedSecret.renewBefore",
                MarginSource::OperatorDefault => "the operator's default --secret-renewal-margin",
            };
            line(
                "Next renewal",
                match info.renews_at {
                    Some(t) if t <= now => format!(
                        "due now ({margin} before expiry by {source}; the operator renews it at \
                         its next reconcile)"
                    ),
                    Some(t) => format!(
                        "{t} ({}; {margin} before expiry by {source})",
                        relative(t, now)
                    ),
                    None => format!("unknown ({margin} before an expiry not known yet)"),
                },
            );
        }
    }
    if let Some((status, message)) = &info.ready {
        line("Ready", format!("{status}: {message}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use scan_engine_operator::crd::ConsoleSpec;
    use scan_engine_operator::crd::ConsoleStatus;
    use scan_engine_operator::crd::console::{SharedSecretSpec, SharedSecretStatus};

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn console(renew_before: Option<&str>, expires: Option<&str>) -> Console {
        let mut c = Console::new(
            "main",
            ConsoleSpec {
                shared_secret: renew_before.map(|r| SharedSecretSpec {
                    renew_before: Some(r.into()),
                }),
                ..ConsoleSpec::default()
            },
        );
        c.metadata.namespace = Some("scanning".into());
        c.status = Some(ConsoleStatus {
            shared_secret: expires.map(|e| SharedSecretStatus {
                secret_name: "main-console-shared-secret".into(),
                expires_at: Some(Time(at(e))),
            }),
            conditions: vec![Condition {
                type_: "SharedSecretReady".into(),
                status: "True".into(),
                reason: "Valid".into(),
                message: "the shared secret is valid".into(),
                last_transition_time: Time(at("2026-01-01T00:00:00Z")),
                observed_generation: None,
            }],
            ..ConsoleStatus::default()
        });
        c
    }

    #[test]
    fn the_default_margin_is_the_operators_flag_default() {
        let command = scan_engine_operator::cli::Cli::command();
        let arg = command
            .get_arguments()
            .find(|a| a.get_id() == "secret_renewal_margin")
            .expect("the operator has --secret-renewal-margin");
        let defaults = arg.get_default_values();
        assert_eq!(defaults.len(), 1);
        let text = defaults[0].to_str().unwrap();
        assert_eq!(
            humantime::parse_duration(text).unwrap(),
            DEFAULT_RENEWAL_MARGIN
        );
    }

    #[test]
    fn expiry_and_renewal_with_the_default_margin() {
        let info = SecretInfo::new(&console(None, Some("2026-01-01T01:00:00Z")));
        assert_eq!(info.renews_at, Some(at("2026-01-01T00:45:00Z")));
        let text = render(&info, at("2026-01-01T00:18:00Z"));
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            [
                "Console:      scanning/main",
                "Secret:       main-console-shared-secret (key shared-secret; the value is not shown)",
                "Expires:      2026-01-01T01:00:00Z (in 42m)",
                "Next renewal: 2026-01-01T00:45:00Z (in 27m; 15m before expiry by the operator's default --secret-renewal-margin)",
                "Ready:        True: the shared secret is valid",
            ]
        );
    }

    #[test]
    fn the_spec_margin_moves_the_renewal() {
        let info = SecretInfo::new(&console(Some("30m"), Some("2026-01-01T01:00:00Z")));
        assert_eq!(info.margin_source, MarginSource::Spec);
        assert_eq!(info.renews_at, Some(at("2026-01-01T00:30:00Z")));
        let text = render(&info, at("2026-01-01T00:40:00Z"));
        assert!(
            text.contains(
                "Next renewal: due now (30m before expiry by spec.sharedSecret.renewBefore;"
            ),
            "{text}"
        );
        assert!(
            text.contains("Expires:      2026-01-01T01:00:00Z (in 20m)"),
            "{text}"
        );
    }

    #[test]
    fn an_expired_secret_says_so() {
        let info = SecretInfo::new(&console(None, Some("2026-01-01T01:00:00Z")));
        let text = render(&info, at("2026-01-01T01:03:00Z"));
        assert!(
            text.contains("Expires:      2026-01-01T01:00:00Z (3m ago, EXPIRED)"),
            "{text}"
        );
    }

    #[test]
    fn no_secret_yet_is_said_in_words() {
        let info = SecretInfo::new(&console(None, None));
        let text = render(&info, at("2026-01-01T00:00:00Z"));
        assert!(text.contains("Secret:       none yet"), "{text}");
        assert!(!text.contains("Expires"), "{text}");
    }
}
