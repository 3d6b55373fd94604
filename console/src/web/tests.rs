//! The pages through the console's whole router (pages and API), as a browser calls them.

use std::time::Instant;

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, Request, StatusCode, header},
};
use tower::ServiceExt;

use super::session::{COOKIE, SIGN_IN_COOKIE};
use crate::testing::{self, PASSWORD, USER};

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The value a `Set-Cookie` header gives `name`.
    fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| {
                v.split(';')
                    .next()
                    .and_then(|kv| kv.split_once('='))
                    .filter(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_owned())
            })
    }

    /// The value of the first hidden input named `name`.
    fn hidden(&self, name: &str) -> String {
        let needle = format!("name=\"{name}\" value=\"");
        let start = self
            .body
            .find(&needle)
            .unwrap_or_else(|| panic!("no {name} field in {}", self.body))
            + needle.len();
        self.body[start..]
            .split('"')
            .next()
            .unwrap_or_default()
            .to_owned()
    }
}

async fn send(router: &Router, req: Request<Body>) -> Reply {
    let res = router.clone().oneshot(req).await.expect("a response");
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 24)
        .await
        .expect("a body");
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

async fn get(router: &Router, path: &str, cookie: Option<&str>) -> Reply {
    let mut req = Request::get(path);
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    send(router, req.body(Body::empty()).expect("request")).await
}

async fn post(router: &Router, path: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> Reply {
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let mut req =
        Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    send(router, req.body(Body::from(body)).expect("request")).await
}

/// Signs in; returns the `Cookie` header of the session and its CSRF token.
async fn sign_in(router: &Router) -> (String, String) {
    let form = get(router, "/login", None).await;
    let token = form.cookie(SIGN_IN_COOKIE).expect("a sign-in cookie");
    let res = post(
        router,
        "/login",
        Some(&format!("{SIGN_IN_COOKIE}={token}")),
        &[("token", &token), ("user", USER), ("password", PASSWORD)],
    )
    .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let session = res.cookie(COOKIE).expect("a session cookie");
    let cookie = format!("{COOKIE}={session}");
    let page = get(router, "/administration/engines", Some(&cookie)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    (cookie, page.hidden("csrf"))
}

#[tokio::test]
async fn pages_need_a_session_and_forms_need_its_token() {
    let app = testing::app();
    let router = crate::app::router(&app);
    let res = get(&router, "/administration/engines", None).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert_eq!(res.location(), "/login");
    // The API keeps its Basic auth.
    let res = get(&router, "/api/3/scan_engines", None).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);

    let (cookie, csrf) = sign_in(&router).await;
    let engine = [("name", "e1"), ("address", "127.0.0.1"), ("port", "9")];
    let res = post(&router, "/administration/engines", Some(&cookie), &engine).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    let mut with_token = engine.to_vec();
    with_token.push(("csrf", &csrf));
    let res = post(&router, "/administration/engines", None, &with_token).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    let mut wrong = engine.to_vec();
    wrong.push(("csrf", "0000"));
    let res = post(&router, "/administration/engines", Some(&cookie), &wrong).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert!(app.store.engines().await.unwrap().is_empty());

    let res = post(
        &router,
        "/administration/engines",
        Some(&cookie),
        &with_token,
    )
    .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    assert_eq!(app.store.engines().await.unwrap().len(), 1);

    // Signed out, the cookie is worth nothing.
    let res = post(&router, "/logout", Some(&cookie), &[("csrf", &csrf)]).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    let res = get(&router, "/administration/engines", Some(&cookie)).await;
    assert_eq!(res.location(), "/login");
}

#[tokio::test]
async fn wrong_sign_ins_are_throttled_with_the_api_logins() {
    let app = testing::app();
    let router = crate::app::router(&app);
    let form = get(&router, "/login", None).await;
    let token = form.cookie(SIGN_IN_COOKIE).expect("a sign-in cookie");
    let cookie = format!("{SIGN_IN_COOKIE}={token}");
    let mut statuses = Vec::new();
    for _ in 0..=crate::auth::throttle::FREE_FAILURES {
        let res = post(
            &router,
            "/login",
            Some(&cookie),
            &[("token", &token), ("user", USER), ("password", "guess")],
        )
        .await;
        assert!(!res.body.contains("guess"));
        statuses.push(res.status);
    }
    assert!(
        statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    // Blocked now: even the right password waits, on the pages and on the API alike.
    let res = post(
        &router,
        "/login",
        Some(&cookie),
        &[("token", &token), ("user", USER), ("password", PASSWORD)],
    )
    .await;
    assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(res.body.contains("Too many failed sign-ins"));
    // A form without its pre-session token is refused before the password is looked at.
    let res = post(
        &router,
        "/login",
        None,
        &[("user", USER), ("password", PASSWORD)],
    )
    .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_form_from_another_site_is_refused() {
    let app = testing::app();
    let router = crate::app::router(&app);
    let (cookie, csrf) = sign_in(&router).await;
    let req = Request::post("/administration/shared-secret")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::COOKIE, &cookie)
        .header("sec-fetch-site", "cross-site")
        .body(Body::from(format!("csrf={csrf}")))
        .expect("request");
    let res = send(&router, req).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert!(app.secrets.current().await.unwrap().is_none());
}

#[tokio::test]
async fn the_engines_page_with_a_thousand_engines_renders_in_well_under_a_second() {
    let app = testing::app();
    for i in 0..1000 {
        app.store
            .create_standard_engine(&format!("engine-{i:04}"), "10.0.0.1", 40814, 0)
            .await
            .expect("an engine");
    }
    let router = crate::app::router(&app);
    let (cookie, _) = sign_in(&router).await;
    for path in [
        "/administration/engines",
        "/administration/engines?page=1&size=500",
        "/administration/engines/status?page=1&size=500",
    ] {
        let started = Instant::now();
        let res = get(&router, path, Some(&cookie)).await;
        let took = started.elapsed();
        assert_eq!(res.status, StatusCode::OK, "{path}");
        assert!(took.as_millis() < 500, "{path} took {took:?}");
    }
    let first = get(&router, "/administration/engines", Some(&cookie)).await;
    assert_eq!(first.body.matches("data-engine-id=").count(), 50);
    assert!(first.body.contains("Page 1 of 20 (1000 in all)"));
    let last = get(
        &router,
        "/administration/engines?page=1&size=500",
        Some(&cookie),
    )
    .await;
    assert_eq!(last.body.matches("data-engine-id=").count(), 500);
    assert!(last.body.contains("engine-0999"));
    let bad = get(&router, "/administration/engines?size=0", Some(&cookie)).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("size must be from 1 to 500"));
}

#[tokio::test]
async fn every_page_loads_nothing_from_elsewhere() {
    let app = testing::app();
    let router = crate::app::router(&app);
    let (cookie, _) = sign_in(&router).await;
    for path in [
        "/administration",
        "/administration/engines",
        "/administration/engines/new",
        "/sites",
        "/assets",
        "/login",
    ] {
        let res = get(&router, path, Some(&cookie)).await;
        let csp = res
            .headers
            .get(header::CONTENT_SECURITY_POLICY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
        assert!(
            !res.body.contains("http://") && !res.body.contains("https://"),
            "{path}"
        );
    }
    for asset in ["/static/console.css", "/static/console.js", "/favicon.ico"] {
        let res = get(&router, asset, None).await;
        assert_eq!(res.status, StatusCode::OK, "{asset}");
    }
}

#[tokio::test]
async fn a_form_too_large_is_refused_unread() {
    let app = testing::app();
    let router = crate::app::router(&app);
    let (cookie, csrf) = sign_in(&router).await;
    let pad = "x".repeat(super::MAX_FORM_BYTES + 1);
    let res = post(
        &router,
        "/administration/engines",
        Some(&cookie),
        &[("csrf", &csrf), ("name", &pad), ("address", "a")],
    )
    .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert!(res.body.contains("at most"), "{}", res.body);
    assert!(app.store.engines().await.unwrap().is_empty());
}

#[test]
fn every_state_has_its_colour_and_words() {
    use crate::engines::EngineStatus as S;
    let table = [
        (S::Active, ("green", "Active")),
        (S::Unknown, ("orange", "Unknown")),
        (S::PendingAuthorization, ("red", "Pending Authorization")),
        (S::Incompatible, ("red", "Incompatible")),
        (S::NotResponding, ("red", "Down")),
    ];
    for (status, want) in table {
        assert_eq!(super::engines::look(status), want, "{status:?}");
    }
}

#[tokio::test]
async fn what_an_engine_reports_is_shown_as_text_never_as_markup() {
    let app = testing::app();
    let id = app
        .store
        .create_standard_engine("e1", "10.0.0.1", 40814, 0)
        .await
        .expect("an engine");
    app.store
        .observe(
            id,
            crate::store::Observation {
                outcome: crate::store::Outcome::Incompatible,
                message: "<script>alert(1)</script>".into(),
                product_version: Some("\"><img src=x>".into()),
                at: 1,
            },
        )
        .await
        .expect("an observation");
    let router = crate::app::router(&app);
    let (cookie, _) = sign_in(&router).await;
    let page = get(&router, "/administration/engines", Some(&cookie)).await;
    assert!(!page.body.contains("<script>alert"), "{}", page.body);
    assert!(!page.body.contains("<img src=x>"), "{}", page.body);
    assert!(page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(page.body.contains("Incompatible"));
}
