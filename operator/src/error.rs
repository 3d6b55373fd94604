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

    /// An object the operator would write or delete exists and is not its own (no owner
    /// reference to the resource it reconciles, no managed-by label): it is left alone. The
    /// text names the object ([`Error::not_owned`]).
    #[error("{0}")]
    NotOwned(String),

    /// A console URL that is not `https://`.
    #[error("{0}")]
    InsecureUrl(String),

    /// The API server refused a child object the operator applies (invalid, or denied by an
    /// admission plugin or webhook): `message` is its answer, which names the field, cut short
    /// ([`Error::rejected_child`]).
    #[error("{action}: refused by the API server: {message}")]
    ChildRejected { action: String, message: String },

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
            Error::ChildRejected { .. } => "child_rejected",
            Error::NotOwned(_) => "not_owned",
            Error::InsecureUrl(_) => "insecure_url",
        }
    }
}

impl Error {
    /// The reason of the `Ready=False` condition this error puts in a status, and whether only
    /// a spec change or an administrator can help (kstatus `Stalled`).
    pub fn reason(&self) -> (&'static str, bool) {
        match self {
            Error::ConsoleApi(e) => (e.reason(), false),
            Error::ConsoleNotFound(_) => ("ConsoleNotFound", true),
            Error::ConsoleNotReady { .. } => ("ConsoleNotReady", false),
            Error::MissingReference(_) => ("MissingReference", false),
            Error::Kube { .. } => ("KubernetesApiError", false),
            Error::NotOwned(_) => (Self::NOT_OWNED_REASON, true),
            Error::InsecureUrl(_) => ("InsecureUrl", true),
            Error::ChildRejected { .. } => ("ChildRejected", true),
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.reason(),
                _ => ("ReconcileError", false),
            },
            _ => ("ReconcileError", false),
        }
    }

    /// The condition reason of an object the operator does not own.
    pub const NOT_OWNED_REASON: &'static str = "OwnershipConflict";

    /// An object that exists and is not the operator's.
    pub fn not_owned(kind: &str, namespace: &str, name: &str, owner_kind: &str) -> Self {
        Error::NotOwned(format!(
            "{kind} {namespace}/{name} exists but is not the operator's (no owner reference to this {owner_kind}, no {}={} label): left alone; delete or rename it so the operator can create its own",
            crate::controller::names::MANAGED_BY_LABEL,
            crate::controller::names::MANAGER,
        ))
    }

    /// The API server's refusal of an object the operator applied (400 Bad Request, 403
    /// Forbidden, 422 Invalid answering an `apply`, see [`crate::controller::apply::apply`]) as
    /// [`Error::ChildRejected`], its message cut to `max` characters; any other error as it is.
    pub fn rejected_child(self, max: usize) -> Self {
        match self {
            Error::Kube {
                action,
                source: kube::Error::Api(status),
            } if matches!(status.code, 400 | 403 | 422) && action.starts_with("apply ") => {
                Error::ChildRejected {
                    action,
                    message: crate::console_api::bounded(&status.message, max),
                }
            }
            other => other,
        }
    }

    /// Whether this is (or wraps) [`Error::NotOwned`].
    pub fn is_not_owned(&self) -> bool {
        match self {
            Error::NotOwned(_) => true,
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.is_not_owned(),
                _ => false,
            },
            _ => false,
        }
    }
}

impl From<kube::runtime::finalizer::Error<Error>> for Error {
    fn from(e: kube::runtime::finalizer::Error<Error>) -> Self {
        Error::Finalizer(Box::new(e))
    }
}
