//! The REST API (docs/contracts.md §4): InsightVM API v3 shapes under `/api/3/`, Basic auth on
//! every route, JSON errors `{status, message, links}` with the matching HTTP status.
//!
//! One file per resource: [`info`], [`engines`], [`shared_secret`], [`sites`] (sites, scans),
//! [`assets`]. Request bodies are parsed by hand from JSON values so that a 400 names the field
//! at fault.

mod assets;
mod engines;
mod info;
mod shared_secret;
mod sites;

use axum::{
    Router,
    body::Bytes,
    extract::{FromRequest, Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq;

use crate::app::App;

/// The admin user and password the API accepts.
#[derive(Clone)]
pub struct Credentials {
    user: String,
    password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    pub fn new(user: String, password: String) -> Self {
        Self { user, password }
    }

    /// Whether an `Authorization` header carries these credentials (constant-time compare).
    fn admit(&self, header: Option<&HeaderValue>) -> bool {
        use base64::Engine as _;
        let Some(value) = header.and_then(|h| h.to_str().ok()) else {
            return false;
        };
        let Some(encoded) = value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
            .map(|(_, rest)| rest.trim())
        else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
            return false;
        };
        let Some(colon) = decoded.iter().position(|&b| b == b':') else {
            return false;
        };
        let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
        let user_ok = user.ct_eq(self.user.as_bytes());
        let password_ok = password.ct_eq(self.password.as_bytes());
        (user_ok & password_ok).into()
    }
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
        tracing::error!(error = %e, "API request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error: {e}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"status": self.status.as_u16(), "message": self.message, "links": []});
        reply(self.status, &body)
    }
}

/// Result of a handler.
pub type ApiResult = Result<Response, ApiError>;

const JSON_CONTENT_TYPE: &str = "application/json;charset=UTF-8";

/// A JSON response with the API's content type.
pub fn reply(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"null".to_vec());
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
pub const DEFAULT_PAGE_SIZE: usize = 10;
/// The largest page a request may ask for.
pub const MAX_PAGE_SIZE: usize = 500;

/// Which page of a list a request asks for: `?page=` (from 0) and `?size=` (1 to
/// [`MAX_PAGE_SIZE`], default [`DEFAULT_PAGE_SIZE`]). A bad value is a 400 naming the parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Paging {
    pub number: usize,
    pub size: usize,
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
                    paging.number = value.parse().map_err(|_| {
                        ApiError::bad_request(format!(
                            "page must be a page number from 0, not {value:?}"
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
                                "size must be from 1 to {MAX_PAGE_SIZE}, not {value:?}"
                            ))
                        })?
                }
                _ => {}
            }
        }
        Ok(paging)
    }
}

/// The page envelope of one page of a list: its `resources`, `page` (number, size,
/// totalResources, totalPages) and `links` (self, and next and previous where they exist).
pub fn page(resources: Vec<Value>, path: &str, paging: Paging) -> Value {
    let total = resources.len();
    let pages = total.div_ceil(paging.size);
    let first = paging.number.saturating_mul(paging.size);
    let resources: Vec<Value> = resources
        .into_iter()
        .skip(first)
        .take(paging.size)
        .collect();
    let at = |n: usize| format!("{path}?page={n}&size={}", paging.size);
    let mut links = vec![json!({"href": at(paging.number), "rel": "self"})];
    if paging.number + 1 < pages {
        links.push(json!({"href": at(paging.number + 1), "rel": "next"}));
    }
    if paging.number > 0 && paging.number <= pages {
        links.push(json!({"href": at(paging.number - 1), "rel": "prev"}));
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
        ApiError::bad_request(format!("{what} must be a positive integer, not {raw:?}"))
    })
}

/// A request body as a JSON object (an empty body reads as `{}`); a 400 when it is not one.
pub struct Body(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("unreadable request body: {e}")))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Body(Map::new()));
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(Body(map)),
            Ok(_) => Err(ApiError::bad_request(
                "the request body must be a JSON object",
            )),
            Err(e) => Err(ApiError::bad_request(format!(
                "the request body is not valid JSON: {e}"
            ))),
        }
    }
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
pub fn required_text(value: Option<String>, field: &str) -> Result<String, ApiError> {
    let v = value.map(|s| s.trim().to_owned()).unwrap_or_default();
    if v.is_empty() {
        return Err(ApiError::bad_request(format!("{field} is required")));
    }
    if v.len() > 255 {
        return Err(ApiError::bad_request(format!(
            "{field} must be at most 255 characters"
        )));
    }
    if v.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(v)
}

async fn require_auth(State(app): State<App>, req: Request, next: Next) -> Response {
    if app
        .credentials
        .admit(req.headers().get(header::AUTHORIZATION))
    {
        return next.run(req).await;
    }
    let mut res =
        ApiError::new(StatusCode::UNAUTHORIZED, "authentication required").into_response();
    res.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"Security Console\", charset=\"UTF-8\""),
    );
    res
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
        .route("/api/3/sites", get(sites::list).post(sites::create))
        .route("/api/3/sites/{id}", get(sites::get))
        .route("/api/3/sites/{id}/scans", post(sites::start_scan))
        .route("/api/3/scans/{id}", get(sites::get_scan))
        .route("/api/3/assets", get(assets::list))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(app.clone(), require_auth))
        .with_state(app)
}

#[cfg(test)]
mod tests;
