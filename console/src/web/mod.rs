//! The console's web pages, served beside the REST API on its port: sign-in, Administration,
//! the Scan Engines page (the seeds' table, the shared secret), sites, scans and assets.
//!
//! * [`session`]: signed-in sessions, their cookie and CSRF tokens;
//! * [`sign_in`]: the sign-in and sign-out forms;
//! * [`engines`]: Administration and its Scan Engines page: the table, refreshes, adding and
//!   removing engines;
//! * [`secret`]: "Generate Scan Engine Shared Secret";
//! * [`sites`]: sites, their Engines tab, scans and assets.
//!
//! Pages are rendered on the server (maud, which escapes every value) and work without
//! scripts; a small embedded script ([`assets`]) keeps the engines table and a running scan
//! up to date by polling JSON, counts the shared secret's lifetime down and copies it. Nothing
//! is loaded from anywhere but the console itself, which the Content-Security-Policy enforces.
//!
//! Every page but sign-in needs a session; every POST is a [`Posted`] form, which refuses a
//! request without a session, without the session's CSRF token, or sent from another site.

pub mod assets;
pub mod engines;
pub mod secret;
pub mod session;
pub mod sign_in;
pub mod sites;

use std::{sync::Arc, time::Instant};

use axum::{
    Router,
    extract::{FromRequest, FromRequestParts, Request},
    http::{HeaderValue, Method, StatusCode, header, request::Parts},
    middleware::{self, Next},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use maud::{DOCTYPE, Markup, html};

use crate::context::App;
use session::{Flash, Sessions, SignedIn};

/// What the pages share: the console and the signed-in sessions.
#[derive(Clone, Debug)]
pub struct Web {
    pub app: App,
    pub sessions: Arc<Sessions>,
}

/// The pages' router (no fallback: the API's answers unknown paths).
pub fn router(app: App, sessions: Arc<Sessions>) -> Router {
    let web = Web { app, sessions };
    Router::new()
        .route("/", get(|| async { Redirect::to("/administration") }))
        .route("/login", get(sign_in::form).post(sign_in::submit))
        .route("/logout", post(sign_in::sign_out))
        .route("/administration", get(engines::administration))
        .route(
            "/administration/engines",
            get(engines::list).post(engines::create),
        )
        .route("/administration/engines/status", get(engines::status))
        .route("/administration/engines/new", get(engines::new_form))
        .route(
            "/administration/engines/refresh",
            post(engines::refresh_displayed),
        )
        .route(
            "/administration/engines/{id}/refresh",
            post(engines::refresh),
        )
        .route(
            "/administration/engines/{id}/remove",
            get(engines::confirm_remove).post(engines::remove),
        )
        .route("/administration/shared-secret", post(secret::generate))
        .route("/administration/shared-secret/revoke", post(secret::revoke))
        .route("/sites", get(sites::list).post(sites::create))
        .route("/sites/{id}", get(sites::show))
        .route("/sites/{id}/engines", post(sites::add_engine))
        .route("/sites/{id}/scans", post(sites::start_scan))
        .route("/scans/{id}", get(sites::scan))
        .route("/scans/{id}/status", get(sites::scan_status))
        .route("/assets", get(sites::assets))
        .route("/static/console.css", get(assets::css))
        .route("/static/console.js", get(assets::js))
        .route("/favicon.ico", get(assets::favicon))
        .layer(middleware::from_fn(security_headers))
        .with_state(web)
}

/// Headers on every page: nothing from elsewhere, no framing, no sniffing, no referrer for
/// other sites (the console's own forms keep their `Origin`), and
/// pages (not assets) are never cached.
async fn security_headers(req: Request, next: Next) -> Response {
    let is_asset = req.uri().path().starts_with("/static/");
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !is_asset {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// A page that could not be served, as the user sees it.
#[derive(Debug)]
pub struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl From<crate::error::Error> for PageError {
    fn from(e: crate::error::Error) -> Self {
        // The cause is for the console's log, not for the page.
        tracing::error!(error = %e, "page request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal error: the console's log has the cause.",
        )
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let title = match self.status {
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::FORBIDDEN => "Refused",
            StatusCode::BAD_REQUEST => "Bad request",
            _ => "Error",
        };
        let body = html! {
            h1 { (title) }
            p role="alert" { (self.message) }
            p { a href="/administration" { "Back to Administration" } }
        };
        (self.status, page(document(title, None, None, body))).into_response()
    }
}

/// Result of a page handler.
pub type PageResult = Result<Response, PageError>;

/// Which tab of the navigation is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Administration,
    Sites,
    Assets,
}

/// A whole page: the navigation (when signed in), `body` as the main content.
pub fn document(title: &str, tab: Option<Tab>, session: Option<&SignedIn>, body: Markup) -> Markup {
    let current = |t: Tab| if tab == Some(t) { Some("page") } else { None };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Security Console" }
                link rel="stylesheet" href="/static/console.css";
                script src="/static/console.js" defer {}
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header class="top" {
                    span class="brand" { "Security Console" }
                    @if let Some(s) = session {
                        nav aria-label="Main" {
                            ul {
                                li { a href="/administration" aria-current=[current(Tab::Administration)] { "Administration" } }
                                li { a href="/sites" aria-current=[current(Tab::Sites)] { "Sites" } }
                                li { a href="/assets" aria-current=[current(Tab::Assets)] { "Assets" } }
                            }
                        }
                        form method="post" action="/logout" class="sign-out" {
                            (csrf_field(s))
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main id="main" tabindex="-1" { (body) }
            }
        }
    }
}

/// The hidden CSRF field of a form.
pub fn csrf_field(s: &SignedIn) -> Markup {
    html! { input type="hidden" name="csrf" value=(s.csrf); }
}

/// The kept notices of a page, announced to screen readers.
pub fn notices(flash: &[Flash]) -> Markup {
    html! {
        div class="notices" role="status" aria-live="polite" {
            @for f in flash {
                @match f {
                    Flash::Notice(text) => p class="notice" { (text) },
                    Flash::Problem(text) => p class="problem" { (text) },
                    Flash::Secret { .. } => {},
                }
            }
        }
    }
}

/// An HTML response.
pub fn page(markup: Markup) -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

/// `303 See Other` to `to`, the answer to every successful form.
pub fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// Why a request is not let in.
pub enum Refusal {
    /// A page asked for without a session: to the sign-in page.
    SignIn,
    /// A form posted without a session, without its token or from elsewhere.
    Forbidden(&'static str),
    /// A form body that cannot be read.
    BadForm(String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::SignIn => Redirect::to("/login").into_response(),
            Refusal::Forbidden(why) => PageError::new(StatusCode::FORBIDDEN, why).into_response(),
            Refusal::BadForm(why) => PageError::new(StatusCode::BAD_REQUEST, why).into_response(),
        }
    }
}

fn session_of(web: &Web, parts: &Parts) -> Option<SignedIn> {
    let token = session::cookie(&parts.headers, session::COOKIE)?;
    web.sessions.find(token, Instant::now())
}

impl FromRequestParts<Web> for SignedIn {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, web: &Web) -> Result<Self, Refusal> {
        match session_of(web, parts) {
            Some(s) => Ok(s),
            None if parts.method == Method::GET || parts.method == Method::HEAD => {
                Err(Refusal::SignIn)
            }
            None => Err(Refusal::Forbidden(NO_SESSION)),
        }
    }
}

const NO_SESSION: &str =
    "You are not signed in (or your session ended): nothing was changed. Sign in and try again.";
const BAD_TOKEN: &str = "This form did not come from the console's own page (its security token is \
     missing or out of date): nothing was changed. Reload the page and try again.";
const CROSS_SITE: &str = "This form was sent from another site: nothing was changed.";

/// The largest form the pages read.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// The fields of a posted form.
#[derive(Debug, Default)]
pub struct Fields(Vec<(String, String)>);

impl Fields {
    /// The first value of `name`, if any.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `name` when present and not blank.
    pub fn filled(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.trim().is_empty())
    }
}

/// Whether a request came from another site (by `Sec-Fetch-Site` or `Origin`).
fn cross_site(parts: &Parts) -> bool {
    let fetch_site = parts
        .headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok());
    // Browsers that send it say exactly where a request came from.
    if let Some(site) = fetch_site {
        return !matches!(site, "same-origin" | "none");
    }
    let (Some(origin), Some(host)) = (
        parts
            .headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok()),
        parts
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok()),
    ) else {
        return false;
    };
    origin != format!("https://{host}")
}

async fn read_form(req: Request) -> Result<(Parts, Fields), Refusal> {
    let (parts, body) = req.into_parts();
    // The API's deadline for a body: a trickled form cannot hold a connection.
    let read = tokio::time::timeout(
        crate::api::BODY_READ_TIMEOUT,
        axum::body::to_bytes(body, MAX_FORM_BYTES),
    )
    .await
    .map_err(|_| Refusal::BadForm("The form did not arrive in time.".into()))?;
    let bytes = read
        .map_err(|_| Refusal::BadForm(format!("A form must be at most {MAX_FORM_BYTES} bytes.")))?;
    let fields = form_urlencoded::parse(&bytes).into_owned().collect();
    Ok((parts, Fields(fields)))
}

/// A form posted by a signed-in user from one of the console's own pages, its token checked.
pub struct Posted {
    pub session: SignedIn,
    pub fields: Fields,
}

impl FromRequest<Web> for Posted {
    type Rejection = Refusal;

    async fn from_request(req: Request, web: &Web) -> Result<Self, Refusal> {
        let (parts, fields) = read_form(req).await?;
        let session = session_of(web, &parts).ok_or(Refusal::Forbidden(NO_SESSION))?;
        if cross_site(&parts) {
            return Err(Refusal::Forbidden(CROSS_SITE));
        }
        let sent = fields.get("csrf").unwrap_or_default();
        if !session::same_token(sent, &session.csrf) {
            return Err(Refusal::Forbidden(BAD_TOKEN));
        }
        Ok(Posted { session, fields })
    }
}

/// The sign-in form as posted (no session yet; its own token is checked by the handler).
pub struct SignInForm {
    pub parts: Parts,
    pub fields: Fields,
}

impl FromRequest<Web> for SignInForm {
    type Rejection = Refusal;

    async fn from_request(req: Request, _web: &Web) -> Result<Self, Refusal> {
        let (parts, fields) = read_form(req).await?;
        if cross_site(&parts) {
            return Err(Refusal::Forbidden(CROSS_SITE));
        }
        Ok(SignInForm { parts, fields })
    }
}

/// A time of the console's clock for a page: UTC, to the second.
pub fn when(ms: crate::clock::Millis) -> String {
    // `2026-01-02T03:04:05Z` → `2026-01-02 03:04:05 UTC`
    let s = crate::clock::rfc3339(ms);
    format!("{} UTC", s.trim_end_matches('Z').replacen('T', " ", 1))
}

#[cfg(test)]
mod tests;
