//! Client of the console REST API (the InsightVM API v3 subset in `docs/contracts.md` §4).
//!
//! The reconcilers only see the [`ConsoleApi`] trait, built per console by a
//! [`ConsoleApiFactory`], so tests substitute a fake console. [`http::HttpConsoleApi`] is the
//! real client: reqwest with rustls, `https://` only, explicit CA bundle or an explicit insecure
//! switch, timeouts, no redirects, bounded response bodies, retries with backoff for idempotent
//! calls and lenient deserialisation.
//!
//! Whatever a console says ends up in statuses, events and logs, so every string it sends is
//! cut and escaped first ([`bounded`]): a hostile or broken console cannot make the operator
//! store or print megabytes, or forge lines in a log.
//!
//! Credentials and the pairing shared secret are [`SecretString`]s: their `Debug` prints
//! `***`, they have no `==` (only a constant-time [`SecretString::same_as`]), and no error
//! message ever contains them.

#[cfg(test)]
pub mod fake;
pub mod http;

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;

/// A string that must never be logged: credentials and the pairing shared secret.
///
/// Deliberately not `PartialEq`: a derived `==` stops at the first differing byte, so how long
/// it takes tells how much of a guess was right. [`SecretString::same_as`] takes the same time
/// for every value of the same length.
///
/// ```compile_fail
/// use scan_engine_operator::console_api::SecretString;
/// let guess = SecretString::new("guess");
/// let _ = guess == SecretString::new("secret"); // no `==` on secrets
/// ```
#[derive(Clone)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value, for the one place that needs it (an HTTP header, a Secret's data).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `other` is this secret, compared in constant time (`subtle`).
    pub fn same_as(&self, other: &[u8]) -> bool {
        use subtle::ConstantTimeEq as _;
        self.0.as_bytes().ct_eq(other).into()
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(***)")
    }
}

/// `text` with control characters escaped (`\n` prints as `\\n`), cut to at most `max`
/// characters with a marker saying so. For every string a console sends that the operator
/// stores or shows. Written here because it is a few lines: what counts is that it is applied
/// everywhere, not how.
pub fn bounded(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    let mut count = 0usize;
    for c in text.chars() {
        let piece: String = if c.is_control() {
            c.escape_default().collect()
        } else {
            c.to_string()
        };
        let len = piece.chars().count();
        if count + len > max {
            out.push_str("…(cut)");
            return out;
        }
        count += len;
        out.push_str(&piece);
    }
    out
}

/// Longest console-reported message kept (an error message, an engine's state message).
pub const MAX_MESSAGE: usize = 256;
/// Longest console-reported name, version, address or state kept.
pub const MAX_FIELD: usize = 128;

/// Everything needed to talk to one console.
#[derive(Clone)]
pub struct ConsoleConnection {
    /// `namespace/name` of the Console resource, for errors and logs.
    pub console: String,
    /// Base URL of the API (`https://host:3780`), without `/api/3`.
    pub url: String,
    pub username: String,
    pub password: SecretString,
    /// PEM CA bundle that signs the API certificate.
    pub ca_bundle: Option<Vec<u8>>,
    /// Skip certificate verification (explicit user switch).
    pub insecure_skip_tls_verify: bool,
}

impl fmt::Debug for ConsoleConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsoleConnection")
            .field("console", &self.console)
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("ca_bundle", &self.ca_bundle.as_ref().map(|b| b.len()))
            .field("insecure_skip_tls_verify", &self.insecure_skip_tls_verify)
            .finish()
    }
}

/// `GET /api/3/administration/info`.
#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct ConsoleInfo {
    pub version: ConsoleVersion,
    pub engine_communication: Option<EngineCommunication>,
}

#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct ConsoleVersion {
    pub semantic: Option<String>,
}

/// Extension: how engines reach the console.
#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct EngineCommunication {
    pub certificate_fingerprint: Option<String>,
    pub port: Option<u16>,
}

/// A scan engine as the console reports it.
#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Engine {
    pub id: i64,
    pub name: String,
    pub address: Option<String>,
    pub port: Option<i64>,
    pub status: Option<String>,
    pub product_version: Option<String>,
    pub last_refreshed_date: Option<String>,
    pub direction: Option<String>,
    pub message: Option<String>,
}

impl ConsoleInfo {
    /// The same, with every string cut and escaped ([`bounded`]).
    pub fn bounded(mut self) -> Self {
        let cut = |v: &mut Option<String>| {
            if let Some(s) = v.as_mut() {
                *s = bounded(s, MAX_FIELD);
            }
        };
        cut(&mut self.version.semantic);
        if let Some(e) = self.engine_communication.as_mut() {
            cut(&mut e.certificate_fingerprint);
        }
        self
    }
}

impl Engine {
    /// The same, with every string cut and escaped ([`bounded`]).
    pub fn bounded(mut self) -> Self {
        let cut = |v: &mut Option<String>, max: usize| {
            if let Some(s) = v.as_mut() {
                *s = bounded(s, max);
            }
        };
        self.name = bounded(&self.name, MAX_FIELD);
        cut(&mut self.address, MAX_FIELD);
        cut(&mut self.status, MAX_FIELD);
        // The published spec spells it `incompatible-version`; older consoles `incompatible`.
        // The rest of the operator reads the older spelling.
        if self.status.as_deref() == Some("incompatible-version") {
            self.status = Some("incompatible".into());
        }
        cut(&mut self.product_version, MAX_FIELD);
        cut(&mut self.last_refreshed_date, MAX_FIELD);
        cut(&mut self.direction, MAX_FIELD);
        cut(&mut self.message, MAX_MESSAGE);
        self
    }
}

/// `POST /api/3/scan_engines` body.
#[derive(serde::Serialize, Clone, Debug, PartialEq, Eq)]
pub struct NewEngine {
    pub name: String,
    pub address: String,
    pub port: i32,
}

/// Which call failed, for errors and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Info,
    ListEngines,
    GetEngine,
    CreateEngine,
    DeleteEngine,
    RefreshEngine,
    SharedSecret,
    CreateSharedSecret,
    RevokeSharedSecret,
    SharedSecretTtl,
}

impl Call {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "GET /api/3/administration/info",
            Self::ListEngines => "GET /api/3/scan_engines",
            Self::GetEngine => "GET /api/3/scan_engines/{id}",
            Self::CreateEngine => "POST /api/3/scan_engines",
            Self::DeleteEngine => "DELETE /api/3/scan_engines/{id}",
            Self::RefreshEngine => "POST /api/3/scan_engines/{id}/refresh",
            Self::SharedSecret => "GET /api/3/scan_engines/shared_secret",
            Self::CreateSharedSecret => "POST /api/3/scan_engines/shared_secret",
            Self::RevokeSharedSecret => "DELETE /api/3/scan_engines/shared_secret",
            Self::SharedSecretTtl => "GET /api/3/scan_engines/shared_secret/time_to_live",
        }
    }
}

/// What went wrong in a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiErrorKind {
    /// The console answered with an error status.
    Status { code: u16, message: String },
    /// No answer: connection refused, TLS failure, timeout.
    Transport(String),
    /// An answer that could not be understood.
    Decode(String),
    /// The connection settings are unusable (bad URL, bad CA bundle).
    Config(String),
    /// The console contradicted itself (e.g. 404 on delete, yet the engine is still listed).
    Inconsistent(String),
    /// The answer was longer than the operator reads (the limit, in bytes).
    TooLarge { limit: usize },
}

/// A failed console API call: says which console, which URL and which call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("console {console} ({url}): {}: {}", call.as_str(), kind_text(kind))]
pub struct ApiError {
    pub console: String,
    pub url: String,
    pub call: Call,
    pub kind: ApiErrorKind,
}

fn kind_text(kind: &ApiErrorKind) -> String {
    match kind {
        ApiErrorKind::Status { code, message } if message.is_empty() => format!("HTTP {code}"),
        ApiErrorKind::Status { code, message } => format!("HTTP {code}: {message}"),
        ApiErrorKind::Transport(m) => format!("unreachable: {m}"),
        ApiErrorKind::Decode(m) => format!("unexpected response: {m}"),
        ApiErrorKind::Config(m) => format!("invalid connection settings: {m}"),
        ApiErrorKind::Inconsistent(m) => m.clone(),
        ApiErrorKind::TooLarge { limit } => format!(
            "unexpected response: the body is larger than the {} KiB the operator reads",
            limit / 1024
        ),
    }
}

impl ApiError {
    pub fn status_code(&self) -> Option<u16> {
        match self.kind {
            ApiErrorKind::Status { code, .. } => Some(code),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status_code() == Some(404)
    }

    /// True when the console could not be reached at all.
    pub fn is_unreachable(&self) -> bool {
        matches!(self.kind, ApiErrorKind::Transport(_))
    }

    /// Short label for metrics and condition reasons.
    pub fn reason(&self) -> &'static str {
        match self.kind {
            ApiErrorKind::Status {
                code: 401 | 403, ..
            } => "ConsoleAuthFailed",
            ApiErrorKind::Status { .. } => "ConsoleApiError",
            ApiErrorKind::Transport(_) => "ConsoleUnreachable",
            ApiErrorKind::Decode(_)
            | ApiErrorKind::Inconsistent(_)
            | ApiErrorKind::TooLarge { .. } => "ConsoleApiError",
            ApiErrorKind::Config(_) => "ConsoleConfigInvalid",
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The console API calls the operator makes.
pub trait ConsoleApi: Send + Sync {
    /// `GET administration/info`.
    fn info(&self) -> BoxFuture<'_, ApiResult<ConsoleInfo>>;
    /// `GET scan_engines`, all pages.
    fn list_engines(&self) -> BoxFuture<'_, ApiResult<Vec<Engine>>>;
    /// `GET scan_engines/{id}`; `None` on 404.
    fn get_engine(&self, id: i64) -> BoxFuture<'_, ApiResult<Option<Engine>>>;
    /// `POST scan_engines`; returns the new id.
    fn create_engine<'a>(&'a self, engine: &'a NewEngine) -> BoxFuture<'a, ApiResult<i64>>;
    /// `DELETE scan_engines/{id}`; a 404 counts as deleted only once a GET confirms it is gone.
    fn delete_engine(&self, id: i64) -> BoxFuture<'_, ApiResult<()>>;
    /// `POST scan_engines/{id}/refresh`.
    fn refresh_engine(&self, id: i64) -> BoxFuture<'_, ApiResult<Engine>>;
    /// `GET scan_engines/shared_secret`; `None` when none is valid.
    fn shared_secret(&self) -> BoxFuture<'_, ApiResult<Option<SecretString>>>;
    /// `POST scan_engines/shared_secret`: the current secret, or a new one.
    fn create_shared_secret(&self) -> BoxFuture<'_, ApiResult<SecretString>>;
    /// `DELETE scan_engines/shared_secret`.
    fn revoke_shared_secret(&self) -> BoxFuture<'_, ApiResult<()>>;
    /// `GET scan_engines/shared_secret/time_to_live` in seconds; `None` when none is valid.
    fn shared_secret_ttl(&self) -> BoxFuture<'_, ApiResult<Option<u64>>>;
}

/// Builds a [`ConsoleApi`] for a console's connection settings.
pub trait ConsoleApiFactory: Send + Sync {
    fn connect(&self, connection: ConsoleConnection) -> ApiResult<Arc<dyn ConsoleApi>>;
}

/// Finds an engine by its name at the console (names are unique there).
pub async fn find_engine_by_name(api: &dyn ConsoleApi, name: &str) -> ApiResult<Option<Engine>> {
    Ok(api
        .list_engines()
        .await?
        .into_iter()
        .find(|e| e.name == name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_debug_print() {
        let conn = ConsoleConnection {
            console: "ns/c".into(),
            url: "https://c:3780".into(),
            username: "admin".into(),
            password: SecretString::new("hunter2"),
            ca_bundle: None,
            insecure_skip_tls_verify: false,
        };
        let dbg = format!("{conn:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("***"));
    }

    #[test]
    fn secrets_compare_by_value_only_through_same_as() {
        let s = SecretString::new("s3cr3t");
        assert!(s.same_as(b"s3cr3t"));
        assert!(!s.same_as(b"s3cr3T"));
        assert!(!s.same_as(b"s3cr3t-and-more"));
        assert!(!s.same_as(b""));
    }

    #[test]
    fn errors_name_console_url_and_call() {
        let e = ApiError {
            console: "ns/c".into(),
            url: "https://c:3780".into(),
            call: Call::CreateEngine,
            kind: ApiErrorKind::Status {
                code: 409,
                message: "exists".into(),
            },
        };
        assert_eq!(
            e.to_string(),
            "console ns/c (https://c:3780): POST /api/3/scan_engines: HTTP 409: exists"
        );
    }

    #[test]
    fn console_strings_are_cut_and_escaped() {
        assert_eq!(bounded("active", 10), "active");
        assert_eq!(bounded("a\nforged log line", 64), "a\\nforged log line");
        let long = "x".repeat(900 * 1024);
        let cut = bounded(&long, MAX_MESSAGE);
        assert!(cut.chars().count() <= MAX_MESSAGE + 6, "{}", cut.len());
        assert!(cut.ends_with("…(cut)"));
        let engine = Engine {
            name: "n".repeat(20_000),
            product_version: Some("9".repeat(20_000)),
            message: Some("m\r\n".repeat(10_000)),
            ..Engine::default()
        }
        .bounded();
        assert!(engine.name.len() < 200);
        assert!(engine.product_version.is_some_and(|v| v.len() < 200));
        assert!(
            engine
                .message
                .is_some_and(|m| m.len() < 400 && !m.contains('\n'))
        );
    }

    #[test]
    fn lenient_engine_deserialisation() {
        let e: Engine = serde_json::from_str(
            r#"{"id": 7, "name": "a", "status": "active", "unexpected": {"x": 1}, "links": []}"#,
        )
        .unwrap_or_default();
        assert_eq!(e.id, 7);
        assert_eq!(e.status.as_deref(), Some("active"));
        assert_eq!(e.product_version, None);
    }
}
