//! The operator's one error type.

use crate::console_api::ApiError;

/// Everything a reconcile can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },

    /// A console API call failed (the error names the console, URL and call).
    #[error(transparent)]
    ConsoleApi(#[from] ApiError),

    /// The spec cannot be acted upon (what CEL cannot check).
    #[error("invalid spec: {0}")]
    InvalidSpec(String),

    /// The referenced Console does not exist.
    #[error("Console {0} not found")]
    ConsoleNotFound(String),

    /// The referenced Console exists but cannot be used yet.
    #[error("Console {console} is not ready: {reason}")]
    ConsoleNotReady { console: String, reason: String },

    /// A Secret or ConfigMap the operator needs is missing or incomplete.
    #[error("{0}")]
    MissingReference(String),

    /// Certificate or credential generation failed.
    #[error("generating {what}: {message}")]
    Generate { what: &'static str, message: String },

    /// The finalizer helper failed (wraps the apply/cleanup error).
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),

    /// A ScanEngine could not be removed from its console; the finalizer stays.
    #[error("cannot remove the engine from its console yet: {0}")]
    CleanupBlocked(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps a kube error with what was being done.
    pub fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let action = action.into();
        move |source| Error::Kube { action, source }
    }

    /// Label of the `reconcile_failures_total` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube_api",
            Error::ConsoleApi(e) if e.is_unreachable() => "console_unreachable",
            Error::ConsoleApi(_) => "console_api",
            Error::InvalidSpec(_) => "invalid_spec",
            Error::ConsoleNotFound(_) => "console_not_found",
            Error::ConsoleNotReady { .. } => "console_not_ready",
            Error::MissingReference(_) => "missing_reference",
            Error::Generate { .. } => "generate",
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.metric_label(),
                _ => "finalizer",
            },
            Error::CleanupBlocked(_) => "cleanup_blocked",
        }
    }
}

impl From<kube::runtime::finalizer::Error<Error>> for Error {
    fn from(e: kube::runtime::finalizer::Error<Error>) -> Self {
        Error::Finalizer(Box::new(e))
    }
}
