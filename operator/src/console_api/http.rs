//! The real console API client: reqwest over rustls.
//!
//! What a console (or whatever answers at its URL) can make the operator do is bounded: only
//! `https://` URLs are dialled (the request carries the API password, the answer may be the
//! pairing shared secret), redirects are never followed (they would take the password
//! elsewhere), every request has a timeout, at most [`MAX_BODY`] of an answer is read, and the
//! strings kept from it are cut and escaped ([`super::bounded`]).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::{
    ApiError, ApiErrorKind, ApiResult, Call, ConsoleApi, ConsoleApiFactory, ConsoleConnection,
    ConsoleInfo, Engine, NewEngine, SecretString,
};

/// Retries of idempotent calls.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts in total (1 = no retry).
    pub attempts: u32,
    /// Delay before the first retry; doubled for each further one.
    pub base_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 3,
            base_delay: Duration::from_millis(250),
        }
    }
}

/// Timeouts and retries of every client the factory builds.
#[derive(Clone, Copy, Debug)]
pub struct HttpSettings {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(20),
            retry: RetryPolicy::default(),
        }
    }
}

/// The most of a response body the client reads; a longer answer is an error naming this
/// limit. The largest real answer, a page of 500 engines, is about 200 KiB.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// How many distinct TLS configurations the factory keeps clients for; beyond that it starts
/// afresh (a CA rotation leaves an unused entry behind).
const MAX_SHARED_CLIENTS: usize = 64;

/// What an HTTP client depends on: the CA bundle and the verification switch (credentials go
/// with each request, not with the client).
type ClientKey = (Option<Vec<u8>>, bool);

/// Builds [`HttpConsoleApi`] clients. Reconciles share one HTTP client (TLS configuration and
/// connection pool) per CA bundle, so a refresh reuses open connections instead of making a
/// TLS handshake and a new TLS configuration per engine.
#[derive(Default)]
pub struct HttpConsoleApiFactory {
    settings: HttpSettings,
    clients: std::sync::Mutex<std::collections::HashMap<ClientKey, reqwest::Client>>,
    observer: Option<RequestObserver>,
}

/// Told of every request sent to a console (each attempt), for the request metrics.
pub type RequestObserver = Arc<dyn Fn(Call) + Send + Sync>;

impl std::fmt::Debug for HttpConsoleApiFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConsoleApiFactory")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl HttpConsoleApiFactory {
    pub fn new(settings: HttpSettings) -> Self {
        Self {
            settings,
            clients: std::sync::Mutex::default(),
            observer: None,
        }
    }

    /// The same, telling `observer` of every request sent.
    pub fn observed(settings: HttpSettings, observer: RequestObserver) -> Self {
        Self {
            observer: Some(observer),
            ..Self::new(settings)
        }
    }

    /// How many HTTP clients are kept (for tests).
    pub fn shared_clients(&self) -> usize {
        self.clients.lock().map_or(0, |c| c.len())
    }
}

impl ConsoleApiFactory for HttpConsoleApiFactory {
    fn connect(&self, connection: ConsoleConnection) -> ApiResult<Arc<dyn ConsoleApi>> {
        let key: ClientKey = (
            connection.ca_bundle.clone(),
            connection.insecure_skip_tls_verify,
        );
        let known = self
            .clients
            .lock()
            .ok()
            .and_then(|clients| clients.get(&key).cloned());
        let http = match known {
            Some(http) => http,
            None => {
                let http = HttpConsoleApi::client(&connection, self.settings)?;
                if let Ok(mut clients) = self.clients.lock() {
                    if clients.len() >= MAX_SHARED_CLIENTS {
                        clients.clear();
                    }
                    clients.insert(key, http.clone());
                }
                http
            }
        };
        let mut api = HttpConsoleApi::with_client(connection, http, self.settings)?;
        api.observer = self.observer.clone();
        Ok(Arc::new(api))
    }
}

fn config_error(conn: &ConsoleConnection, message: String) -> ApiError {
    ApiError {
        console: conn.console.clone(),
        url: conn.url.clone(),
        call: Call::Info,
        kind: ApiErrorKind::Config(message),
    }
}

/// A console API client for one console.
pub struct HttpConsoleApi {
    http: reqwest::Client,
    base: String,
    console: String,
    username: String,
    password: SecretString,
    retry: RetryPolicy,
    observer: Option<RequestObserver>,
}

/// The longest shared secret read from a `text/plain` answer.
const MAX_SECRET: usize = 1024;

#[derive(Deserialize, Default)]
#[serde(default)]
struct ErrorBody {
    message: String,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Page {
    number: u64,
    total_pages: u64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct EnginePage {
    resources: Vec<Engine>,
    page: Option<Page>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Created {
    id: i64,
}

const PAGE_SIZE: u32 = 500;
const MAX_PAGES: u64 = 1000;

impl HttpConsoleApi {
    pub fn new(conn: ConsoleConnection, settings: HttpSettings) -> ApiResult<Self> {
        let http = Self::client(&conn, settings)?;
        Self::with_client(conn, http, settings)
    }

    /// A client for `conn`'s URL over an HTTP client built before.
    fn with_client(
        conn: ConsoleConnection,
        http: reqwest::Client,
        settings: HttpSettings,
    ) -> ApiResult<Self> {
        let parsed = reqwest::Url::parse(&conn.url)
            .map_err(|e| config_error(&conn, format!("bad URL: {e}")))?;
        if parsed.scheme() != "https" {
            // Checked here too, not only by the CRD's schema: a Console stored before that
            // rule, or any other caller, must not send the password in the clear.
            return Err(config_error(
                &conn,
                format!(
                    "the console URL must be https:// (it is {}://): the operator sends the API password over it and reads the pairing shared secret from it",
                    super::bounded(parsed.scheme(), 16)
                ),
            ));
        }
        Ok(Self {
            http,
            base: conn.url.trim_end_matches('/').to_string(),
            console: conn.console,
            username: conn.username,
            password: conn.password,
            retry: settings.retry,
            observer: None,
        })
    }

    /// The HTTP client for `conn`'s TLS settings.
    fn client(conn: &ConsoleConnection, settings: HttpSettings) -> ApiResult<reqwest::Client> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = &conn.ca_bundle {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                config_error(conn, format!("CA bundle is not valid PEM: {}", chain(&e)))
            })?;
            if certs.is_empty() {
                return Err(config_error(conn, "CA bundle holds no certificate".into()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if conn.insecure_skip_tls_verify {
            builder = builder.danger_accept_invalid_certs(true);
        }
        builder
            .build()
            .map_err(|e| config_error(conn, format!("cannot build HTTP client: {}", chain(&e))))
    }

    fn error(&self, call: Call, kind: ApiErrorKind) -> ApiError {
        ApiError {
            console: self.console.clone(),
            url: self.base.clone(),
            call,
            kind,
        }
    }

    /// Sends one request, retrying transport errors, 429 and 5xx when `idempotent`.
    async fn send(
        &self,
        call: Call,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        idempotent: bool,
    ) -> ApiResult<(StatusCode, Vec<u8>)> {
        let (status, _, bytes) = self
            .send_typed(call, method, path, body, idempotent)
            .await?;
        Ok((status, bytes))
    }

    /// [`Self::send`], also returning whether the answer was declared `text/plain`.
    async fn send_typed(
        &self,
        call: Call,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        idempotent: bool,
    ) -> ApiResult<(StatusCode, bool, Vec<u8>)> {
        let attempts = if idempotent {
            self.retry.attempts.max(1)
        } else {
            1
        };
        let mut delay = self.retry.base_delay;
        let mut last = None;
        for attempt in 1..=attempts {
            if attempt > 1 {
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2);
            }
            let mut req = self
                .http
                .request(method.clone(), format!("{}/api/3/{}", self.base, path))
                .basic_auth(&self.username, Some(self.password.expose()))
                .header(
                    reqwest::header::ACCEPT,
                    "application/json, text/plain;q=0.9",
                );
            if let Some(b) = body {
                req = req.json(b);
            }
            if let Some(observe) = &self.observer {
                observe(call);
            }
            match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let plain = resp
                        .headers()
                        .get(reqwest::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.split(';').next())
                        .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/plain"));
                    match read_body(resp, MAX_BODY).await {
                        Ok(bytes) => {
                            if (status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS)
                                && attempt < attempts
                            {
                                tracing::debug!(console = %self.console, call = call.as_str(), %status, attempt, "retrying console call");
                                last = Some(self.status_error(call, status, &bytes));
                                continue;
                            }
                            return Ok((status, plain, bytes));
                        }
                        Err(BodyError::TooLarge) => {
                            // Not retried: the same console answers the same way.
                            return Err(
                                self.error(call, ApiErrorKind::TooLarge { limit: MAX_BODY })
                            );
                        }
                        Err(BodyError::Transport(e)) => {
                            last = Some(
                                self.error(call, ApiErrorKind::Transport(chain(&e.without_url()))),
                            )
                        }
                    }
                }
                Err(e) => {
                    last = Some(self.error(call, ApiErrorKind::Transport(chain(&e.without_url()))))
                }
            }
            tracing::debug!(console = %self.console, call = call.as_str(), attempt, "console call failed");
        }
        Err(last
            .unwrap_or_else(|| self.error(call, ApiErrorKind::Transport("no attempt made".into()))))
    }

    fn status_error(&self, call: Call, status: StatusCode, body: &[u8]) -> ApiError {
        let message = serde_json::from_slice::<ErrorBody>(body)
            .map(|b| super::bounded(&b.message, super::MAX_MESSAGE))
            .unwrap_or_default();
        self.error(
            call,
            ApiErrorKind::Status {
                code: status.as_u16(),
                message,
            },
        )
    }

    /// A shared secret as consoles send it: `text/plain` (the published spec) or a JSON string
    /// (older consoles). Never echoes the body.
    fn decode_secret(&self, call: Call, plain: bool, body: &[u8]) -> ApiResult<SecretString> {
        if !plain {
            return self.decode::<String>(call, body).map(SecretString::new);
        }
        let text = std::str::from_utf8(body)
            .ok()
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= MAX_SECRET && !t.chars().any(char::is_control))
            .ok_or_else(|| {
                self.error(
                    call,
                    ApiErrorKind::Decode(format!(
                        "the text/plain shared secret is empty, over {MAX_SECRET} bytes, or not printable UTF-8"
                    )),
                )
            })?;
        Ok(SecretString::new(text.to_owned()))
    }

    fn decode<T: DeserializeOwned>(&self, call: Call, body: &[u8]) -> ApiResult<T> {
        // Never echo the body: it may be the shared secret.
        serde_json::from_slice(body).map_err(|e| {
            self.error(
                call,
                ApiErrorKind::Decode(format!(
                    "{:?} error at line {} column {}",
                    e.classify(),
                    e.line(),
                    e.column()
                )),
            )
        })
    }

    async fn get_json<T: DeserializeOwned>(&self, call: Call, path: &str) -> ApiResult<Option<T>> {
        let (status, body) = self.send(call, Method::GET, path, None, true).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(self.status_error(call, status, &body));
        }
        self.decode(call, &body).map(Some)
    }

    async fn expect_success(
        &self,
        call: Call,
        method: Method,
        path: &str,
        idempotent: bool,
    ) -> ApiResult<Vec<u8>> {
        let (status, body) = self.send(call, method, path, None, idempotent).await?;
        if !status.is_success() {
            return Err(self.status_error(call, status, &body));
        }
        Ok(body)
    }
}

/// Why a body was not read.
enum BodyError {
    /// Longer than the limit: announced so, or found so while reading.
    TooLarge,
    Transport(reqwest::Error),
}

/// Reads `resp`'s body chunk by chunk, stopping as soon as it would exceed `limit` bytes: a
/// console cannot make the operator buffer more than that, whatever it announces or sends.
async fn read_body(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, BodyError> {
    if resp
        .content_length()
        .is_some_and(|announced| announced > limit as u64)
    {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl ConsoleApi for HttpConsoleApi {
    fn info(&self) -> BoxFuture<'_, ApiResult<ConsoleInfo>> {
        Box::pin(async move {
            let call = Call::Info;
            self.get_json::<ConsoleInfo>(call, "administration/info")
                .await?
                .map(ConsoleInfo::bounded)
                .ok_or_else(|| {
                    self.error(
                        call,
                        ApiErrorKind::Status {
                            code: 404,
                            message: String::new(),
                        },
                    )
                })
        })
    }

    fn list_engines(&self) -> BoxFuture<'_, ApiResult<Vec<Engine>>> {
        Box::pin(async move {
            let call = Call::ListEngines;
            let mut engines = Vec::new();
            let mut page = 0u64;
            loop {
                let path = format!("scan_engines?page={page}&size={PAGE_SIZE}");
                let body: EnginePage = self.get_json(call, &path).await?.ok_or_else(|| {
                    self.error(
                        call,
                        ApiErrorKind::Status {
                            code: 404,
                            message: String::new(),
                        },
                    )
                })?;
                let count = body.resources.len();
                engines.extend(body.resources.into_iter().map(Engine::bounded));
                match body.page {
                    Some(p)
                        if p.number + 1 < p.total_pages && count > 0 && page + 1 < MAX_PAGES =>
                    {
                        page += 1
                    }
                    _ => break,
                }
            }
            Ok(engines)
        })
    }

    fn get_engine(&self, id: i64) -> BoxFuture<'_, ApiResult<Option<Engine>>> {
        Box::pin(async move {
            Ok(self
                .get_json::<Engine>(Call::GetEngine, &format!("scan_engines/{id}"))
                .await?
                .map(Engine::bounded))
        })
    }

    fn create_engine<'a>(&'a self, engine: &'a NewEngine) -> BoxFuture<'a, ApiResult<i64>> {
        Box::pin(async move {
            let call = Call::CreateEngine;
            let body = serde_json::to_value(engine)
                .map_err(|e| self.error(call, ApiErrorKind::Decode(e.to_string())))?;
            let (status, resp) = self
                .send(call, Method::POST, "scan_engines", Some(&body), false)
                .await?;
            if !status.is_success() {
                return Err(self.status_error(call, status, &resp));
            }
            Ok(self.decode::<Created>(call, &resp)?.id)
        })
    }

    fn delete_engine(&self, id: i64) -> BoxFuture<'_, ApiResult<()>> {
        Box::pin(async move {
            let call = Call::DeleteEngine;
            let (status, body) = self
                .send(
                    call,
                    Method::DELETE,
                    &format!("scan_engines/{id}"),
                    None,
                    true,
                )
                .await?;
            if status.is_success() {
                return Ok(());
            }
            if status == StatusCode::NOT_FOUND {
                // A 404 may come from a proxy or a wrong base path: only believe it once the
                // engine itself is confirmed gone.
                return match self.get_engine(id).await? {
                    None => Ok(()),
                    Some(_) => Err(self.error(
                        call,
                        ApiErrorKind::Inconsistent(format!(
                            "delete answered 404 but engine {id} still exists"
                        )),
                    )),
                };
            }
            Err(self.status_error(call, status, &body))
        })
    }

    fn refresh_engine(&self, id: i64) -> BoxFuture<'_, ApiResult<Engine>> {
        Box::pin(async move {
            let call = Call::RefreshEngine;
            let body = self
                .expect_success(
                    call,
                    Method::POST,
                    &format!("scan_engines/{id}/refresh"),
                    true,
                )
                .await?;
            self.decode::<Engine>(call, &body).map(Engine::bounded)
        })
    }

    fn shared_secret(&self) -> BoxFuture<'_, ApiResult<Option<SecretString>>> {
        Box::pin(async move {
            let call = Call::SharedSecret;
            let (status, plain, body) = self
                .send_typed(call, Method::GET, "scan_engines/shared_secret", None, true)
                .await?;
            if status == StatusCode::NOT_FOUND {
                return Ok(None);
            }
            if !status.is_success() {
                return Err(self.status_error(call, status, &body));
            }
            self.decode_secret(call, plain, &body).map(Some)
        })
    }

    fn create_shared_secret(&self) -> BoxFuture<'_, ApiResult<SecretString>> {
        Box::pin(async move {
            let call = Call::CreateSharedSecret;
            let (status, plain, body) = self
                .send_typed(call, Method::POST, "scan_engines/shared_secret", None, true)
                .await?;
            if !status.is_success() {
                return Err(self.status_error(call, status, &body));
            }
            self.decode_secret(call, plain, &body)
        })
    }

    fn revoke_shared_secret(&self) -> BoxFuture<'_, ApiResult<()>> {
        Box::pin(async move {
            let call = Call::RevokeSharedSecret;
            let (status, body) = self
                .send(
                    call,
                    Method::DELETE,
                    "scan_engines/shared_secret",
                    None,
                    true,
                )
                .await?;
            if status.is_success() || status == StatusCode::NOT_FOUND {
                return Ok(());
            }
            Err(self.status_error(call, status, &body))
        })
    }

    fn shared_secret_ttl(&self) -> BoxFuture<'_, ApiResult<Option<u64>>> {
        Box::pin(async move {
            self.get_json(
                Call::SharedSecretTtl,
                "scan_engines/shared_secret/time_to_live",
            )
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    //! The client against a small local HTTPS console on loopback, with a CA made per test.

    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::extract::{Path, State};
    use axum::http::StatusCode as AxStatus;
    use axum::routing::{delete, get};
    use axum::{Json, Router};
    use serde_json::json;

    use super::*;

    #[derive(Default)]
    struct Counters {
        flaky: AtomicUsize,
        creates: AtomicUsize,
    }

    /// A console serving `router` over HTTPS: its URL and the CA that signs its certificate.
    async fn serve(router: Router) -> (String, String) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls = crate::controller::console::secrets::generate_tls(
            "test",
            vec!["localhost".to_string()],
        )
        .unwrap_or_else(|e| panic!("generate: {e}"));
        let certs: Vec<_> = rustls_pemfile::certs(&mut tls.cert.as_bytes())
            .filter_map(Result::ok)
            .collect();
        let Some(key) = rustls_pemfile::private_key(&mut tls.key.as_bytes())
            .ok()
            .flatten()
        else {
            panic!("no key")
        };
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap_or_else(|e| panic!("server config: {e}"));
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("bind: {e}"),
        };
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, router) = (acceptor.clone(), router.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(
                            hyper_util::rt::TokioIo::new(tls),
                            hyper_util::service::TowerToHyperService::new(router),
                        )
                        .await;
                });
            }
        });
        (format!("https://localhost:{port}"), tls.ca_cert)
    }

    fn client((url, ca): (String, String)) -> HttpConsoleApi {
        client_with(url, ca, Duration::from_secs(20))
    }

    fn client_with(url: String, ca: String, request_timeout: Duration) -> HttpConsoleApi {
        let conn = ConsoleConnection {
            console: "ns/console".into(),
            url,
            username: "admin".into(),
            password: SecretString::new("pw"),
            ca_bundle: (!ca.is_empty()).then(|| ca.into_bytes()),
            insecure_skip_tls_verify: false,
        };
        let settings = HttpSettings {
            retry: RetryPolicy {
                attempts: 3,
                base_delay: Duration::from_millis(1),
            },
            request_timeout,
            ..HttpSettings::default()
        };
        match HttpConsoleApi::new(conn, settings) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    fn router(counters: Arc<Counters>) -> Router {
        Router::new()
            .route(
                "/api/3/administration/info",
                get(|State(c): State<Arc<Counters>>| async move {
                    // Fails twice, then answers: retried because GET is idempotent.
                    if c.flaky.fetch_add(1, Ordering::SeqCst) < 2 {
                        return (AxStatus::SERVICE_UNAVAILABLE, Json(json!({"status": 503, "message": "busy"})));
                    }
                    (
                        AxStatus::OK,
                        Json(json!({"version": {"semantic": "0.1.0", "extra": 1},
                            "engineCommunication": {"certificateFingerprint": "sha256:ab", "port": 40815},
                            "unknownTopLevel": true})),
                    )
                }),
            )
            .route(
                "/api/3/scan_engines",
                get(|| async {
                    Json(json!({"resources": [{"id": 7, "name": "a.ns", "status": "active", "productVersion": "0.1.0", "links": []}],
                        "page": {"number": 0, "size": 500, "totalResources": 1, "totalPages": 1}, "links": []}))
                })
                .post(|State(c): State<Arc<Counters>>| async move {
                    c.creates.fetch_add(1, Ordering::SeqCst);
                    (AxStatus::INTERNAL_SERVER_ERROR, Json(json!({"status": 500, "message": "boom"})))
                }),
            )
            .route(
                "/api/3/scan_engines/{id}",
                get(|Path(id): Path<i64>| async move {
                    if id == 7 {
                        (AxStatus::OK, Json(json!({"id": 7, "name": "a.ns", "status": "active"})))
                    } else {
                        (AxStatus::NOT_FOUND, Json(json!({"status": 404, "message": "not found"})))
                    }
                })
                .delete(|| async { (AxStatus::NOT_FOUND, Json(json!({"status": 404, "message": "not found"}))) }),
            )
            .route(
                "/api/3/scan_engines/shared_secret",
                get(|| async { Json(json!("s3cr3t-value")) }).post(|| async { Json(json!(12345)) }),
            )
            .route("/api/3/scan_engines/shared_secret/time_to_live", get(|| async { Json(json!(1800)) }))
            .route("/api/3/unused", delete(|| async { "" }).post(|| async { "" }))
            .with_state(counters)
    }

    /// A console as the published spec has it: the secret as `text/plain` (201 on POST), the
    /// `incompatible-version` spelling, errors with `status` as a string.
    fn spec_router() -> Router {
        let text = |status: AxStatus, body: &'static str| {
            (
                status,
                [(axum::http::header::CONTENT_TYPE, "text/plain;charset=UTF-8")],
                body,
            )
        };
        Router::new()
            .route(
                "/api/3/scan_engines/shared_secret",
                get(move || async move { text(AxStatus::OK, "7B1D-BA4C-12AB-34CD") })
                    .post(move || async move { text(AxStatus::CREATED, "7B1D-BA4C-12AB-34CD\n") }),
            )
            .route(
                "/api/3/scan_engines/{id}",
                get(|Path(id): Path<i64>| async move {
                    if id == 3 {
                        (AxStatus::OK, Json(json!({"id": 3, "name": "old.ns", "address": "a", "port": 40814, "status": "incompatible-version"})))
                    } else {
                        (AxStatus::BAD_REQUEST, Json(json!({"status": "400", "message": "bad id", "links": []})))
                    }
                }),
            )
    }

    #[tokio::test]
    async fn reads_the_spec_spellings_as_well_as_the_older_ones() {
        let api = client(serve(spec_router()).await);
        let secret = api.shared_secret().await.ok().flatten();
        assert_eq!(
            secret.as_ref().map(SecretString::expose),
            Some("7B1D-BA4C-12AB-34CD"),
            "text/plain read as the secret"
        );
        let created = api.create_shared_secret().await.ok();
        assert_eq!(
            created.as_ref().map(SecretString::expose),
            Some("7B1D-BA4C-12AB-34CD"),
            "201 and a trailing new line are fine"
        );
        let e = api.get_engine(3).await.ok().flatten();
        assert_eq!(
            e.and_then(|e| e.status),
            Some("incompatible".to_owned()),
            "incompatible-version reads as the operator's incompatible"
        );
        let err = api
            .get_engine(4)
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("HTTP 400: bad id"),
            "a string status is an error body too: {err}"
        );
    }

    #[tokio::test]
    async fn an_unreadable_text_secret_is_an_error_that_does_not_echo_it() {
        let router = Router::new().route(
            "/api/3/scan_engines/shared_secret",
            get(|| async {
                (
                    [(axum::http::header::CONTENT_TYPE, "text/plain")],
                    "line\u{7}bell-secret",
                )
            }),
        );
        let api = client(serve(router).await);
        let err = api
            .shared_secret()
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("not printable") && !err.contains("bell-secret"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn talks_to_a_console() {
        let counters = Arc::new(Counters::default());
        let api = client(serve(router(counters.clone())).await);

        let info = api.info().await.unwrap_or_default();
        assert_eq!(info.version.semantic.as_deref(), Some("0.1.0"));
        assert_eq!(
            info.engine_communication
                .and_then(|e| e.certificate_fingerprint)
                .as_deref(),
            Some("sha256:ab")
        );
        assert_eq!(
            counters.flaky.load(Ordering::SeqCst),
            3,
            "two retries then success"
        );

        let engines = api.list_engines().await.unwrap_or_default();
        assert_eq!(engines.len(), 1);
        assert_eq!(engines[0].product_version.as_deref(), Some("0.1.0"));

        // 404 on delete with the engine still there is not "deleted".
        let err = api.delete_engine(7).await.err();
        assert!(
            matches!(
                err.as_ref().map(|e| &e.kind),
                Some(ApiErrorKind::Inconsistent(_))
            ),
            "{err:?}"
        );
        // 404 on delete and on GET: gone.
        assert!(api.delete_engine(8).await.is_ok());

        // Create is not idempotent: exactly one attempt, and the error names console and call.
        let err = api
            .create_engine(&NewEngine {
                name: "b".into(),
                address: "b.ns.svc".into(),
                port: 40814,
            })
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(counters.creates.load(Ordering::SeqCst), 1);
        assert!(
            err.contains("ns/console")
                && err.contains("POST /api/3/scan_engines")
                && err.contains("HTTP 500: boom"),
            "{err}"
        );

        let secret = api.shared_secret().await.ok().flatten();
        assert_eq!(
            secret.as_ref().map(SecretString::expose),
            Some("s3cr3t-value")
        );
        assert_eq!(api.shared_secret_ttl().await.ok().flatten(), Some(1800));

        // A malformed secret answer must not echo the body.
        let err = api
            .create_shared_secret()
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("unexpected response") && !err.contains("12345"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn unreachable_console_is_a_transport_error() {
        let Ok(tls) = crate::controller::console::secrets::generate_tls("t", vec![]) else {
            panic!("generate")
        };
        let api = client(("https://127.0.0.1:1".into(), tls.ca_cert));
        let err = api.info().await.err();
        assert!(
            err.as_ref().is_some_and(ApiError::is_unreachable),
            "{err:?}"
        );
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(!text.contains("pw"));
    }

    #[tokio::test]
    async fn plain_http_urls_are_refused_before_any_connection() {
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("bind: {e}"),
        };
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        let conn = ConsoleConnection {
            console: "ns/console".into(),
            url: format!("http://127.0.0.1:{port}"),
            username: "admin".into(),
            password: SecretString::new("pw"),
            ca_bundle: None,
            insecure_skip_tls_verify: true,
        };
        let factory = HttpConsoleApiFactory::new(HttpSettings::default());
        let err = factory.connect(conn).err();
        assert!(
            matches!(err.as_ref().map(|e| &e.kind), Some(ApiErrorKind::Config(_))),
            "{err:?}"
        );
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            text.contains("must be https://") && text.contains("it is http://"),
            "{text}"
        );
        let dialled = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
        assert!(dialled.is_err(), "nothing is sent to an http:// URL");
    }

    #[tokio::test]
    async fn redirects_are_never_followed() {
        let elsewhere = Arc::new(AtomicUsize::new(0));
        let router = Router::new()
            .route(
                "/api/3/administration/info",
                get(|| async { (AxStatus::FOUND, [("location", "/api/3/elsewhere")], "moved") }),
            )
            .route(
                "/api/3/elsewhere",
                get(|State(hits): State<Arc<AtomicUsize>>| async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    Json(json!({"version": {"semantic": "0.1.0"}}))
                }),
            )
            .with_state(elsewhere.clone());
        let api = client(serve(router).await);
        let err = api.info().await.err();
        assert_eq!(
            err.as_ref().and_then(ApiError::status_code),
            Some(302),
            "{err:?}"
        );
        assert_eq!(
            elsewhere.load(Ordering::SeqCst),
            0,
            "the password went nowhere else"
        );
    }

    /// A body of `chunks` pieces of 64 KiB, with no length announced (chunked).
    fn stream_of(chunks: usize) -> axum::body::Body {
        let piece = axum::body::Bytes::from(vec![b' '; 64 * 1024]);
        axum::body::Body::from_stream(futures::stream::iter(
            std::iter::repeat_n(piece, chunks).map(Ok::<_, std::io::Error>),
        ))
    }

    #[tokio::test]
    async fn response_bodies_are_read_up_to_the_limit_only() {
        let router = Router::new()
            // Announced too large.
            .route(
                "/api/3/administration/info",
                get(|| async { vec![b' '; MAX_BODY + 1] }),
            )
            // Not announced: 64 MiB streamed, far beyond the limit.
            .route("/api/3/scan_engines", get(|| async { stream_of(1024) }))
            // Just under the limit: read.
            .route(
                "/api/3/scan_engines/shared_secret/time_to_live",
                get(|| async {
                    let mut body = vec![b' '; MAX_BODY - 4];
                    body.extend_from_slice(b"1800");
                    body
                }),
            );
        let api = client(serve(router).await);
        for err in [api.info().await.err(), api.list_engines().await.err()] {
            assert!(
                matches!(
                    err.as_ref().map(|e| &e.kind),
                    Some(ApiErrorKind::TooLarge { .. })
                ),
                "{err:?}"
            );
            let text = err.map(|e| e.to_string()).unwrap_or_default();
            assert!(
                text.contains("4096 KiB"),
                "the error names the limit: {text}"
            );
        }
        assert_eq!(api.shared_secret_ttl().await.ok().flatten(), Some(1800));
    }

    #[tokio::test]
    async fn a_console_that_stops_sending_is_cut_off_by_the_request_timeout() {
        let router = Router::new().route(
            "/api/3/administration/info",
            get(|| async {
                let first = futures::stream::once(async {
                    Ok::<_, std::io::Error>(axum::body::Bytes::from_static(b"{\"version\":"))
                });
                axum::body::Body::from_stream(futures::StreamExt::chain(
                    first,
                    futures::stream::pending(),
                ))
            }),
        );
        let (url, ca) = serve(router).await;
        let api = client_with(url, ca, Duration::from_millis(300));
        let started = std::time::Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(10), api.info()).await;
        assert!(
            matches!(err, Ok(Err(ref e)) if e.is_unreachable()),
            "{err:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "three attempts of 300 ms"
        );
    }

    #[tokio::test]
    async fn console_error_messages_are_cut_and_escaped() {
        let router = Router::new().route(
            "/api/3/administration/info",
            get(|| async {
                let message = format!("{}\nlevel=ERROR forged", "x".repeat(100_000));
                (
                    AxStatus::BAD_REQUEST,
                    Json(json!({"status": "400", "message": message})),
                )
            }),
        );
        let api = client(serve(router).await);
        let text = api
            .info()
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(text.contains("HTTP 400: xxx"), "{text}");
        assert!(text.len() < 1024, "{} bytes", text.len());
        assert!(!text.contains('\n'), "{text}");
    }

    #[test]
    fn bad_ca_bundle_is_a_config_error() {
        let conn = ConsoleConnection {
            console: "ns/console".into(),
            url: "https://console:3780".into(),
            username: "admin".into(),
            password: SecretString::new("pw"),
            ca_bundle: Some(b"not a pem".to_vec()),
            insecure_skip_tls_verify: false,
        };
        let err = HttpConsoleApi::new(conn, HttpSettings::default()).err();
        assert!(matches!(err.map(|e| e.kind), Some(ApiErrorKind::Config(_))));
    }
}

#[cfg(test)]
mod tls_tests {
    //! The client over real TLS, with a certificate the operator generates for managed consoles.

    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::controller::console::secrets::{api_dns_names, generate_tls};

    /// Serves `connections` HTTPS connections, each answered with an info document.
    async fn https_console(cert_pem: &str, key_pem: &str, connections: usize) -> String {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let certs: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .filter_map(Result::ok)
            .collect();
        let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .ok()
            .flatten();
        let Some(key) = key else { panic!("no key") };
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key);
        let Ok(config) = config else {
            panic!("bad server config")
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let Ok(listener) = tokio::net::TcpListener::bind("127.0.0.1:0").await else {
            panic!("bind")
        };
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        tokio::spawn(async move {
            for _ in 0..connections {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = vec![0u8; 4096];
                    let _ = tls.read(&mut buf).await;
                    let body = r#"{"version":{"semantic":"0.1.0"}}"#;
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(resp.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        format!("https://localhost:{port}")
    }

    fn conn(url: &str, ca: Option<&str>, insecure: bool) -> ConsoleConnection {
        ConsoleConnection {
            console: "ns/main".into(),
            url: url.into(),
            username: "admin".into(),
            password: SecretString::new("pw"),
            ca_bundle: ca.map(|c| c.as_bytes().to_vec()),
            insecure_skip_tls_verify: insecure,
        }
    }

    #[tokio::test]
    async fn trusts_the_generated_ca_only() {
        let Ok(tls) = generate_tls("main", api_dns_names("main", "scanning")) else {
            panic!("generate")
        };
        let url = https_console(&tls.cert, &tls.key, 3).await;
        let settings = HttpSettings {
            retry: RetryPolicy {
                attempts: 1,
                base_delay: Duration::ZERO,
            },
            ..HttpSettings::default()
        };

        let api = HttpConsoleApi::new(conn(&url, Some(&tls.ca_cert), false), settings)
            .map_err(|e| e.to_string());
        let info = match api {
            Ok(api) => api.info().await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        assert_eq!(
            info.map(|i| i.version.semantic),
            Ok(Some("0.1.0".to_string()))
        );

        // Without the CA (and without the explicit insecure switch) the console is not trusted.
        let Ok(api) = HttpConsoleApi::new(conn(&url, None, false), settings) else {
            panic!("client")
        };
        let err = api.info().await.err();
        assert!(
            err.as_ref().is_some_and(ApiError::is_unreachable),
            "{err:?}"
        );

        // The explicit insecure switch accepts it.
        let Ok(api) = HttpConsoleApi::new(conn(&url, None, true), settings) else {
            panic!("client")
        };
        assert!(api.info().await.is_ok());
    }

    #[tokio::test]
    async fn reconciles_share_one_http_client_per_ca_bundle() {
        let Ok(tls) = generate_tls("main", api_dns_names("main", "scanning")) else {
            panic!("generate")
        };
        let Ok(other) = generate_tls("other", api_dns_names("other", "scanning")) else {
            panic!("generate")
        };
        let url = https_console(&tls.cert, &tls.key, 2).await;
        let factory = HttpConsoleApiFactory::new(HttpSettings::default());
        for _ in 0..2 {
            let api = factory
                .connect(conn(&url, Some(&tls.ca_cert), false))
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(api.info().await.is_ok());
        }
        assert_eq!(factory.shared_clients(), 1);
        // Another console's CA is another TLS configuration: its own client.
        let _ = factory
            .connect(conn(&url, Some(&other.ca_cert), false))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(factory.shared_clients(), 2);
        // A bad URL is still refused, with the shared client at hand.
        let bad = factory.connect(conn("ftp://main", Some(&tls.ca_cert), false));
        assert!(
            bad.err()
                .is_some_and(|e| e.to_string().contains("must be https://"))
        );
    }
}
