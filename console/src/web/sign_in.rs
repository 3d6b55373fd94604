//! Signing in with the console's admin user and password, and signing out.
//!
//! Failed sign-ins go through the API's failed-login backoff (`crate::auth::throttle`), per source
//! address. The form carries a pre-session token that must match its cookie, so another site
//! cannot sign a browser in. Neither the tried user name nor the password is ever logged or
//! shown back.

use std::time::{Duration, Instant};

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use maud::{Markup, html};

use super::{
    Posted, SignInForm, Web, document, page, see_other,
    session::{self, COOKIE, IDLE_TIMEOUT, SIGN_IN_COOKIE},
};
use crate::{api::source_of_request, auth::throttle::Verdict};

/// How long the sign-in form's token lives.
const SIGN_IN_TOKEN_AGE: Duration = Duration::from_secs(30 * 60);

fn form_page(token: &str, problem: Option<&str>) -> Markup {
    document(
        "Sign in",
        None,
        None,
        html! {
            div class="sign-in" {
                h1 { "Sign in to the Security Console" }
                @if let Some(p) = problem {
                    p class="problem" role="alert" id="sign-in-problem" { (p) }
                }
                form method="post" action="/login" {
                    input type="hidden" name="token" value=(token);
                    div class="field" {
                        label for="user" { "User name" }
                        input id="user" name="user" type="text" autocomplete="username" required autofocus;
                    }
                    div class="field" {
                        label for="password" { "Password" }
                        input id="password" name="password" type="password" autocomplete="current-password" required;
                    }
                    button type="submit" class="primary" { "Sign in" }
                }
            }
        },
    )
}

fn with_token(status: StatusCode, problem: Option<&str>) -> Response {
    let token = session::token();
    let mut res = (status, page(form_page(&token, problem))).into_response();
    res.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(SIGN_IN_COOKIE, &token, Some(SIGN_IN_TOKEN_AGE)),
    );
    res
}

/// `GET /login`: the form (or, when already signed in, Administration).
pub async fn form(State(web): State<Web>, headers: HeaderMap) -> Response {
    if let Some(token) = session::cookie(&headers, COOKIE)
        && web.sessions.find(token, Instant::now()).is_some()
    {
        return see_other("/administration");
    }
    with_token(StatusCode::OK, None)
}

/// `POST /login`.
pub async fn submit(State(web): State<Web>, form: SignInForm) -> Response {
    let SignInForm { parts, fields } = form;
    let cookie_token = session::cookie(&parts.headers, SIGN_IN_COOKIE).unwrap_or_default();
    let sent_token = fields.get("token").unwrap_or_default();
    if !session::same_token(cookie_token, sent_token) {
        return with_token(
            StatusCode::FORBIDDEN,
            Some("The sign-in form was out of date. Please sign in again."),
        );
    }
    let source = source_of_request(&parts.extensions);
    let user = fields.get("user").unwrap_or_default();
    let password = fields.get("password").unwrap_or_default();
    match web.app.credentials.sign_in(source, user, password) {
        Verdict::Admitted => {
            let token = web.sessions.start(Instant::now());
            tracing::info!(%source, "signed in to the web pages");
            let mut res = see_other("/administration");
            let h = res.headers_mut();
            // A browser-session cookie: the console ends the session when idle.
            h.append(
                header::SET_COOKIE,
                session::set_cookie(COOKIE, &token, None),
            );
            h.append(
                header::SET_COOKIE,
                session::set_cookie(SIGN_IN_COOKIE, "", Some(Duration::ZERO)),
            );
            res
        }
        Verdict::Refused => with_token(
            StatusCode::UNAUTHORIZED,
            Some("The user name or password is not right."),
        ),
        Verdict::Blocked(wait) => {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let mut res = with_token(
                StatusCode::TOO_MANY_REQUESTS,
                Some(&format!(
                    "Too many failed sign-ins from this address. Try again in {seconds} s."
                )),
            );
            res.headers_mut()
                .insert(header::RETRY_AFTER, seconds.into());
            res
        }
    }
}

/// `POST /logout`.
pub async fn sign_out(State(web): State<Web>, posted: Posted) -> Response {
    web.sessions.end(&posted.session);
    let mut res = see_other("/login");
    res.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(COOKIE, "", Some(Duration::ZERO)),
    );
    res
}

/// The idle timeout in words, for pages that mention it.
pub fn idle_timeout_words() -> String {
    humantime::format_duration(IDLE_TIMEOUT).to_string()
}
