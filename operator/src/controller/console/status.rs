//! The Console's status (pure).

use k8s_openapi::jiff::Timestamp;

use crate::console_api::{ConsoleInfo, Engine};
use crate::crd::conditions::{self, Cond, READY};
use crate::crd::console::{ConsoleStatus, EngineCounts, SharedSecretStatus};
use crate::crd::{Console, EngineState};

pub const API_REACHABLE: &str = "ApiReachable";
pub const SHARED_SECRET_READY: &str = "SharedSecretReady";
/// Only while a Console is deleted: why it has not gone yet ([`super::cleanup`]).
pub const CLEANUP: &str = "ConsoleCleanup";
/// A warning, present (True) only while `spec.external.insecureSkipTlsVerify` is set.
pub const INSECURE_TLS: &str = "InsecureTls";
/// Reason of [`INSECURE_TLS`], and of the Warning event when it appears.
pub const INSECURE_SKIP_TLS_VERIFY: &str = "InsecureSkipTlsVerify";

/// Whether the operator skips verifying this console's API certificate.
pub fn skips_tls_verify(console: &Console) -> bool {
    console
        .spec
        .external
        .as_ref()
        .and_then(|e| e.insecure_skip_tls_verify)
        .unwrap_or(false)
}

/// The warning condition of a Console whose certificate is not verified, if it is one.
pub fn insecure_tls(console: &Console) -> Option<Cond> {
    skips_tls_verify(console).then(|| {
        Cond::true_(
            INSECURE_TLS,
            INSECURE_SKIP_TLS_VERIFY,
            "spec.external.insecureSkipTlsVerify is set: the console's API certificate is not verified, so whoever can intercept the connection can read the API password and the pairing shared secret. Set spec.external.caBundle or caBundleRef instead",
        )
    })
}

/// What the reconcile learned about a console.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub url: Option<String>,
    pub engine_listener: Option<String>,
    pub info: Option<ConsoleInfo>,
    pub engines: Option<Vec<Engine>>,
    pub shared_secret: Option<SharedSecretStatus>,
    /// `(reason, message)` of what failed.
    pub problem: Option<(String, String)>,
}

/// Counts engines by state.
pub fn count(engines: &[Engine]) -> EngineCounts {
    let mut c = EngineCounts {
        total: engines.len() as i64,
        ..EngineCounts::default()
    };
    for e in engines {
        match EngineState::from_api(e.status.as_deref().unwrap_or("unknown")) {
            EngineState::Active => c.active += 1,
            EngineState::PendingAuthorization => c.pending_authorization += 1,
            EngineState::Incompatible => c.incompatible += 1,
            EngineState::Down => c.down += 1,
            EngineState::Unknown | EngineState::Pairing => c.unknown += 1,
        }
    }
    c
}

pub fn compute(console: &Console, o: &Observed, now: Timestamp) -> ConsoleStatus {
    let previous = console.status.clone().unwrap_or_default();
    let generation = console.metadata.generation;
    let version = o
        .info
        .as_ref()
        .and_then(|i| i.version.semantic.clone())
        .or(previous.version.clone());
    let fingerprint = o
        .info
        .as_ref()
        .and_then(|i| i.engine_communication.as_ref())
        .and_then(|e| e.certificate_fingerprint.clone())
        .or(previous.certificate_fingerprint.clone());

    let api = match (&o.info, &o.problem) {
        (Some(_), _) => Cond::true_(
            API_REACHABLE,
            "Reachable",
            format!(
                "console API answers, version {}",
                version.as_deref().unwrap_or("unknown")
            ),
        ),
        (None, Some((reason, message))) => {
            Cond::false_(API_REACHABLE, reason.clone(), message.clone())
        }
        (None, None) => Cond::false_(
            API_REACHABLE,
            "NotChecked",
            "the console API has not been reached yet",
        ),
    };
    let secret = match (&o.shared_secret, &o.problem) {
        (Some(s), _) => Cond::true_(
            SHARED_SECRET_READY,
            "Valid",
            format!(
                "Secret {} holds a pairing shared secret valid until {}",
                s.secret_name,
                s.expires_at
                    .as_ref()
                    .map_or("unknown".into(), |t| t.0.to_string())
            ),
        ),
        (None, Some((reason, message))) => {
            Cond::false_(SHARED_SECRET_READY, reason.clone(), message.clone())
        }
        (None, None) => Cond::false_(SHARED_SECRET_READY, "Pending", "no shared secret yet"),
    };
    let ready = match &o.problem {
        Some((reason, message)) => Cond::false_(READY, reason.clone(), message.clone()),
        None if o.info.is_some() && o.shared_secret.is_some() => Cond::true_(
            READY,
            "Ready",
            "console API reachable and shared secret valid",
        ),
        None => Cond::false_(READY, "Pending", "waiting for the console"),
    };

    ConsoleStatus {
        observed_generation: generation,
        r#type: Some(
            if console.is_managed() {
                "Managed"
            } else {
                "External"
            }
            .into(),
        ),
        url: o.url.clone(),
        version,
        engine_listener_address: o.engine_listener.clone(),
        certificate_fingerprint: fingerprint,
        engines: o.engines.as_deref().map(count).or(previous.engines.clone()),
        shared_secret: o.shared_secret.clone().or(previous.shared_secret.clone()),
        conditions: conditions::merge(
            &previous.conditions,
            &[ready, api, secret]
                .into_iter()
                .chain(insecure_tls(console))
                .collect::<Vec<_>>(),
            generation,
            now,
        ),
    }
}

/// Whether `new` differs from `old` in anything but timestamps (the secret's expiry counts).
pub fn changed(old: Option<&ConsoleStatus>, new: &ConsoleStatus) -> bool {
    let Some(old) = old else { return true };
    let strip = |s: &ConsoleStatus| ConsoleStatus {
        conditions: vec![],
        ..s.clone()
    };
    strip(old) != strip(new) || !conditions::same_ignoring_time(&old.conditions, &new.conditions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipping_tls_verification_is_a_warning_condition() {
        let mut console = Console::new("corp", crate::crd::console::ConsoleSpec::default());
        console.spec.external = Some(crate::crd::console::ExternalConsole {
            url: "https://console.example.com:3780".into(),
            insecure_skip_tls_verify: Some(true),
            ..Default::default()
        });
        let now = Timestamp::UNIX_EPOCH;
        let status = compute(&console, &Observed::default(), now);
        let warning = conditions::find(&status.conditions, INSECURE_TLS);
        assert_eq!(warning.map(|c| c.status.as_str()), Some("True"));
        assert_eq!(
            warning.map(|c| c.reason.as_str()),
            Some(INSECURE_SKIP_TLS_VERIFY)
        );
        // With a CA bundle instead: no such condition.
        if let Some(e) = console.spec.external.as_mut() {
            e.insecure_skip_tls_verify = None;
            e.ca_bundle = Some("PEM".into());
        }
        let status = compute(&console, &Observed::default(), now);
        assert!(conditions::find(&status.conditions, INSECURE_TLS).is_none());
    }

    #[test]
    fn counts_by_state() {
        let e = |s: &str| Engine {
            status: Some(s.into()),
            ..Engine::default()
        };
        let c = count(&[
            e("active"),
            e("active"),
            e("not-responding"),
            e("pending-authorization"),
            e("incompatible"),
            e("weird"),
        ]);
        assert_eq!(
            c,
            EngineCounts {
                total: 6,
                active: 2,
                unknown: 1,
                pending_authorization: 1,
                incompatible: 1,
                down: 1
            }
        );
    }
}
