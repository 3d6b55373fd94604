//! The REST API (docs/contracts.md §4): InsightVM API v3 shapes under `/api/3/`, Basic auth on
//! every route, JSON errors `{status, message, links}` with the matching HTTP status.
//!
//! One file per resource: [`info`], [`engines`], [`pools`], [`shared_secret`], [`sites`],
//! [`scans`], [`assets`]. Request bodies are parsed by hand from JSON values so that a 400 names the field
//! at fault; they must be declared `application/json` (415), are bounded in size (413) and in
//! time (408). Lists are paged in the store, with checked page arithmetic. Wrong logins are
//! throttled per source address ([`throttle`], in `crate::auth`); the source comes from the [`ConnectInfo`] that
//! the HTTPS server (`crate::tls`) attaches to each request.

mod assets;
mod engines;
mod info;
mod pools;
mod scans;
mod shared_secret;
mod sites;

/// The failed-login backoff, shared by the API's Basic auth and the pages' sign-in.
pub use crate::auth::{Credentials, throttle};

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use axum::{
    Router,
    extract::{ConnectInfo, FromRequest, Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::{Map, Value, json};

use crate::context::App;
use throttle::Verdict;

/// The source address of a request as the HTTPS server attached it; without a connection (the
/// router called directly) all requests share one source.
pub fn source_of_request(req: &axum::http::Extensions) -> IpAddr {
    req.get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip())
}

/// An API error: `{status, message, links}` with the same HTTP status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// The message, as the client reads it.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }
}

impl From<crate::error::Error> for ApiError {
    fn from(e: crate::error::Error) -> Self {
        // The cause (a database path, an I/O error) is for the console's log, not for a client.
        tracing::error!(error = %e, "API request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error: the console's log has the cause",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // The published spec's error shapes spell `status` as a string ("400").
        let body = json!({
            "status": self.status.as_u16().to_string(),
            "message": self.message,
            "links": [],
        });
        reply(self.status, &body)
    }
}

/// Result of a handler.
pub type ApiResult = Result<Response, ApiError>;

const JSON_CONTENT_TYPE: &str = "application/json;charset=UTF-8";

/// A `text/plain` response (the spec's media type for the shared secret).
pub fn plain(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain;charset=UTF-8"),
        )],
        body,
    )
        .into_response()
}

/// `{"links": [...]}`: the spec's `Links` answer of an update or a delete.
pub fn links_only(path: &str) -> ApiResult {
    ok(json!({"links": self_links(path)}))
}

/// `value` without the object members that are `null`: the spec types every property, so an
/// unknown value (an engine never refreshed, a scan not ended) is left out rather than `null`.
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// A JSON response with the API's content type (members that are `null` left out).
pub fn reply(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(&without_nulls(body)).unwrap_or_else(|_| b"null".to_vec());
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(JSON_CONTENT_TYPE),
        )],
        bytes,
    )
        .into_response()
}

/// `200` with `body`.
pub fn ok(body: Value) -> ApiResult {
    Ok(reply(StatusCode::OK, &body))
}

/// A `links` array holding the resource's own address.
pub fn self_links(path: &str) -> Value {
    json!([{"href": path, "rel": "self"}])
}

/// Page size when a request names none (as in InsightVM API v3).
pub const DEFAULT_PAGE_SIZE: u64 = 10;
/// The largest page a request may ask for.
pub const MAX_PAGE_SIZE: u64 = 500;
/// The largest page number: the first row of any page (number × size) fits SQLite's signed
/// 64-bit OFFSET, and the number of the next page cannot overflow.
pub const MAX_PAGE_NUMBER: u64 = i64::MAX as u64 / MAX_PAGE_SIZE;

/// Which page of a list a request asks for: `?page=` (0 to [`MAX_PAGE_NUMBER`]) and `?size=` (1
/// to [`MAX_PAGE_SIZE`], default [`DEFAULT_PAGE_SIZE`]). A bad value is a 400 naming the
/// parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Paging {
    pub number: u64,
    pub size: u64,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Paging {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, ApiError> {
        Paging::from_query(parts.uri.query().unwrap_or_default())
    }
}

/// At most this much of a client's value is quoted back in an error.
const QUOTE_MAX: usize = 40;

/// A client-supplied value for an error message: cut to [`QUOTE_MAX`] characters and escaped
/// (the protocol's one rule for showing what a peer sent), in quotes.
pub fn quote(value: &str) -> String {
    format!(
        "\"{}\"",
        scan_engine_protocol::text::printable(value, QUOTE_MAX)
    )
}

impl Paging {
    /// Reads `page` and `size` from a query string; other parameters are ignored.
    pub fn from_query(query: &str) -> Result<Self, ApiError> {
        let mut paging = Paging {
            number: 0,
            size: DEFAULT_PAGE_SIZE,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "page" => {
                    paging.number = value
                        .parse()
                        .ok()
                        .filter(|n| *n <= MAX_PAGE_NUMBER)
                        .ok_or_else(|| {
                            ApiError::bad_request(format!(
                                "page must be a page number from 0 to {MAX_PAGE_NUMBER}, not {}",
                                quote(value)
                            ))
                        })?
                }
                "size" => {
                    paging.size = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
                        .ok_or_else(|| {
                            ApiError::bad_request(format!(
                                "size must be from 1 to {MAX_PAGE_SIZE}, not {}",
                                quote(value)
                            ))
                        })?
                }
                _ => {}
            }
        }
        Ok(paging)
    }

    /// The index of the page's first row (cannot overflow: see [`MAX_PAGE_NUMBER`]).
    pub fn offset(&self) -> u64 {
        self.number.saturating_mul(self.size)
    }
}

/// The page envelope of one page of a list: its `resources` (the rows of this page only, as the
/// store returned them), `page` (number, size, totalResources, totalPages) and `links` (self,
/// and next and previous where they exist).
pub fn page(resources: Vec<Value>, total: u64, path: &str, paging: Paging) -> Value {
    let pages = total.div_ceil(paging.size);
    let at = |n: u64| format!("{path}?page={n}&size={}", paging.size);
    let mut links = vec![json!({"href": at(paging.number), "rel": "self"})];
    if let Some(next) = paging.number.checked_add(1).filter(|n| *n < pages) {
        links.push(json!({"href": at(next), "rel": "next"}));
    }
    if let Some(prev) = paging
        .number
        .checked_sub(1)
        .filter(|_| paging.number <= pages)
    {
        links.push(json!({"href": at(prev), "rel": "prev"}));
    }
    json!({
        "resources": resources,
        "page": {
            "number": paging.number,
            "size": paging.size,
            "totalResources": total,
            "totalPages": pages,
        },
        "links": links,
    })
}

/// A path id, or a 400 naming it.
pub fn parse_id(raw: &str, what: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| {
        ApiError::bad_request(format!(
            "{what} must be a positive integer, not {}",
            quote(raw)
        ))
    })
}

/// The largest request body the API reads; a larger one is a 413.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// How much of a too large body is read (and dropped) so that its sender hears the 413.
const MAX_DRAINED_BYTES: usize = 4 * 1024 * 1024;
/// Time a client has to send a whole request body once its headers are in; a slower body is a
/// 408 and the connection is closed, so a trickled body cannot hold a connection.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether a `Content-Type` names JSON (`application/json`, any parameters).
fn is_json(content_type: Option<&HeaderValue>) -> bool {
    content_type
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

/// A request body as a JSON object (an empty body reads as `{}`). A body that is not declared
/// `application/json` is a 415 and is never parsed (a browser can post `text/plain` across
/// sites without a preflight); one over [`MAX_BODY_BYTES`] is a 413; one slower than
/// [`BODY_READ_TIMEOUT`] is a 408; anything else that is not a JSON object is a 400.
pub struct Body(pub Map<String, Value>);

/// A request body as any JSON value (an empty body reads as `null`), with the same checks as
/// [`Body`]: for the spec's bodies that are arrays.
pub struct AnyJson(pub Value);

impl<S: Send + Sync> FromRequest<S> for AnyJson {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        use axum::body::HttpBody as _;
        // The body's own size hint: exact from Content-Length, open-ended when chunked.
        let hint = req.body().size_hint();
        if hint.exact() == Some(0) {
            return Ok(AnyJson(Value::Null));
        }
        if !is_json(req.headers().get(header::CONTENT_TYPE)) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the request body must be application/json",
            ));
        }
        if hint.lower() > MAX_DRAINED_BYTES as u64 {
            return Err(too_large());
        }
        let bytes = tokio::time::timeout(BODY_READ_TIMEOUT, read_limited(req.into_body()))
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the request body did not arrive within {} s",
                        BODY_READ_TIMEOUT.as_secs()
                    ),
                )
            })??;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(AnyJson(Value::Null));
        }
        serde_json::from_slice::<Value>(&bytes)
            .map(AnyJson)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
    }
}

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match AnyJson::from_request(req, state).await?.0 {
            Value::Null => Ok(Body(Map::new())),
            Value::Object(map) => Ok(Body(map)),
            _ => Err(ApiError::bad_request(
                "the request body must be a JSON object",
            )),
        }
    }
}

/// Reads a body of at most [`MAX_BODY_BYTES`]. A larger one is read on and thrown away up to
/// [`MAX_DRAINED_BYTES`] before the 413, so that a client still sending it hears the answer
/// rather than a reset connection; nothing past the limit is kept.
async fn read_limited(body: axum::body::Body) -> Result<Vec<u8>, ApiError> {
    use futures::StreamExt as _;
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    let mut seen: usize = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| ApiError::bad_request("unreadable request body"))?;
        seen = seen.saturating_add(chunk.len());
        if seen > MAX_DRAINED_BYTES {
            break;
        }
        if seen <= MAX_BODY_BYTES {
            bytes.extend_from_slice(&chunk);
        }
    }
    if seen > MAX_BODY_BYTES {
        return Err(too_large());
    }
    Ok(bytes)
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body must be at most {MAX_BODY_BYTES} bytes"),
    )
}

impl Body {
    /// A string field; `None` when absent or null.
    pub fn string(&self, field: &str) -> Result<Option<String>, ApiError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::bad_request(format!("{field} must be a string"))),
        }
    }

    /// An integer field within `range`; `None` when absent or null.
    pub fn integer(
        &self,
        field: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Result<Option<i64>, ApiError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .filter(|n| range.contains(n))
                .map(Some)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "{field} must be an integer from {} to {}",
                        range.start(),
                        range.end()
                    ))
                }),
        }
    }
}

/// A required, non-empty, reasonably short string.
pub fn required_text(value: Option<String>, field: &'static str) -> Result<String, ApiError> {
    crate::engines::admin::required_text(value.as_deref(), field)
        .map_err(|e| ApiError::bad_request(e.message))
}

async fn require_auth(State(app): State<App>, req: Request, next: Next) -> Response {
    let source = source_of_request(req.extensions());
    let verdict = app
        .credentials
        .basic(source, req.headers().get(header::AUTHORIZATION));
    match verdict {
        Verdict::Admitted => next.run(req).await,
        Verdict::Refused => {
            let mut res =
                ApiError::new(StatusCode::UNAUTHORIZED, "authentication required").into_response();
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"Security Console\", charset=\"UTF-8\""),
            );
            res
        }
        Verdict::Blocked(wait) => {
            // Whole seconds, rounded up, so a client that waits as told is let in.
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let mut res = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many failed logins from this address; retry in {seconds} s"),
            )
            .into_response();
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            res
        }
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such resource")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this resource",
    )
}

/// The API router, authentication included.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/api/3/administration/info", get(info::get))
        .route(
            "/api/3/scan_engines",
            get(engines::list).post(engines::create),
        )
        .route(
            "/api/3/scan_engines/shared_secret",
            get(shared_secret::get)
                .post(shared_secret::create)
                .delete(shared_secret::revoke),
        )
        .route(
            "/api/3/scan_engines/shared_secret/time_to_live",
            get(shared_secret::time_to_live),
        )
        .route(
            "/api/3/scan_engines/{id}",
            get(engines::get).delete(engines::delete),
        )
        .route("/api/3/scan_engines/{id}/refresh", post(engines::refresh))
        .route(
            "/api/3/scan_engines/{id}/scan_engine_pools",
            get(pools::of_engine),
        )
        .route(
            "/api/3/scan_engine_pools",
            get(pools::list).post(pools::create),
        )
        .route(
            "/api/3/scan_engine_pools/{id}",
            get(pools::get).put(pools::update).delete(pools::delete),
        )
        .route(
            "/api/3/scan_engine_pools/{id}/engines",
            get(pools::engines).put(pools::set_engines),
        )
        .route(
            "/api/3/scan_engine_pools/{id}/engines/{engine_id}",
            axum::routing::put(pools::add_engine).delete(pools::remove_engine),
        )
        .route("/api/3/scan_engine_pools/{id}/sites", get(pools::sites))
        .route("/api/3/sites", get(sites::list).post(sites::create))
        .route("/api/3/sites/{id}", get(sites::get))
        .route("/api/3/sites/{id}/scans", post(sites::start_scan))
        .route("/api/3/scans", get(scans::list))
        .route("/api/3/scans/{id}", get(scans::get))
        .route("/api/3/scans/{id}/{status}", post(scans::control))
        .route("/api/3/assets", get(assets::list))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(app.clone(), require_auth))
        .with_state(app)
}

#[cfg(test)]
mod tests;
