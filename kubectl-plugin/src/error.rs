//! The plugin's one error type. Every message says what was being done and, where it can,
//! what to do about it.

use std::time::Duration;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No usable kubeconfig or in-cluster configuration.
    #[error("no Kubernetes configuration: {0}")]
    Config(String),

    /// A request to the API server failed.
    #[error("{action}: {}", api_message(.source))]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },

    /// The object asked for does not exist.
    #[error("{kind} {namespace}/{name} not found")]
    NotFound {
        kind: &'static str,
        namespace: String,
        name: String,
    },

    /// The ScanEngines watch failed.
    #[error("watching ScanEngines: {0}")]
    Watch(#[from] kube::runtime::watcher::Error),

    /// The operator did not act on a refresh in time.
    #[error(
        "the operator did not act on {}={value} of ScanEngine {engine} within {}: \
         status.lastHandledRefresh is still {previous}. Is the operator running? The annotation \
         stays set and the operator acts on it when it next reconciles the engine",
        scan_engine_operator::crd::REFRESH_ANNOTATION,
        humantime::format_duration(*.timeout)
    )]
    RefreshTimeout {
        /// `namespace/name`.
        engine: String,
        value: String,
        previous: String,
        timeout: Duration,
    },

    /// The command does not apply to this object; the message says why.
    #[error("{0}")]
    Refused(String),

    /// The user answered no (or nothing) to a confirmation.
    #[error("not confirmed: {0} unchanged")]
    NotConfirmed(String),

    /// A command run in the engine pod failed.
    #[error("`{command}` in pod {namespace}/{pod} failed: {message}")]
    Exec {
        command: String,
        namespace: String,
        pod: String,
        message: String,
    },

    /// Reading the terminal or writing the output failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),

    /// Writing JSON output failed.
    #[error("writing JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// The API server's own message for an API error (kube's Display adds noise around it).
fn api_message(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => other.to_string(),
    }
}

impl Error {
    /// A failed request, with what it was for.
    pub fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let action = action.into();
        move |source| Error::Kube { action, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
