//! The pages' style sheet, script and icon, embedded in the binary: the console loads nothing
//! from anywhere else.

use axum::{
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};

/// The style sheet.
pub const CSS: &str = include_str!("static/console.css");
/// The script: polls the engines table and a running scan, counts the secret down, copies it.
pub const JS: &str = include_str!("static/console.js");
/// The icon (an arrow between two boxes).
pub const ICON: &str = include_str!("static/favicon.svg");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // Revalidated every time: a restarted, upgraded console serves its own.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

pub async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

pub async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

pub async fn favicon() -> Response {
    asset("image/svg+xml", ICON)
}
