//! The API through the router, as the operator calls it.

use std::net::SocketAddr;

use axum::{
    body::Body,
    extract::ConnectInfo,
    http::{Request, StatusCode, header},
};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::{
    clock::Clock,
    context::App,
    store::{Direction, NewReverseEngine},
    testing::{self, PASSWORD, USER},
};

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

async fn call_as(
    app: &App,
    method: &str,
    path: &str,
    body: Option<Value>,
    auth: Option<String>,
) -> (StatusCode, Value, axum::http::HeaderMap) {
    call_from(app, None, method, path, body, auth).await
}

/// A request as from `source` (as the HTTPS server attaches it), or from no connection.
async fn call_from(
    app: &App,
    source: Option<SocketAddr>,
    method: &str,
    path: &str,
    body: Option<Value>,
    auth: Option<String>,
) -> (StatusCode, Value, axum::http::HeaderMap) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(source) = source {
        req = req.extension(ConnectInfo(source));
    }
    if let Some(a) = auth {
        req = req.header(header::AUTHORIZATION, a);
    }
    let body = match body {
        Some(v) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Body::from(serde_json::to_vec(&v).unwrap())
        }
        None => Body::empty(),
    };
    let res = super::router(app.clone())
        .oneshot(req.body(body).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    let plain = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    let value = if bytes.is_empty() {
        Value::Null
    } else if plain {
        Value::String(String::from_utf8(bytes.to_vec()).expect("UTF-8 text"))
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {bytes:?}"))
    };
    (status, value, headers)
}

async fn call(app: &App, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let (s, v, _) = call_as(app, method, path, body, Some(basic(USER, PASSWORD))).await;
    (s, v)
}

fn assert_error(v: &Value, status: StatusCode, needle: &str) {
    // The spec spells an error's status as a string.
    assert_eq!(v["status"], json!(status.as_u16().to_string()), "{v}");
    assert_eq!(v["links"], json!([]), "{v}");
    let message = v["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(needle),
        "message {message:?} should mention {needle:?}"
    );
}

#[tokio::test]
async fn every_route_requires_basic_auth() {
    let app = testing::app();
    // Each refused call from its own source, so that the login backoff stays out of the way.
    let mut sources = (1..=u8::MAX).map(|i| SocketAddr::from(([192, 0, 2, i], 40000)));
    for (method, path) in [
        ("GET", "/api/3/administration/info"),
        ("GET", "/api/3/scan_engines"),
        ("POST", "/api/3/scan_engines/shared_secret"),
        ("GET", "/api/3/scan_engines/1"),
        ("GET", "/api/3/assets"),
        ("GET", "/api/3/nowhere"),
    ] {
        for auth in [
            None,
            Some(basic(USER, "wrong")),
            Some(basic("root", PASSWORD)),
            Some("Bearer x".into()),
        ] {
            let (status, body, headers) =
                call_from(&app, sources.next(), method, path, None, auth.clone()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} {auth:?}");
            assert!(
                headers
                    .get(header::WWW_AUTHENTICATE)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with("Basic ")
            );
            assert_error(&body, StatusCode::UNAUTHORIZED, "authentication");
        }
    }
    // Nothing was created by the refused POST.
    assert!(app.secrets.current().await.unwrap().is_none());
}

#[tokio::test]
async fn info_reports_version_and_engine_fingerprint() {
    let app = testing::app();
    let (status, v, headers) = call_as(
        &app,
        "GET",
        "/api/3/administration/info",
        None,
        Some(basic(USER, PASSWORD)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers[header::CONTENT_TYPE],
        "application/json;charset=UTF-8"
    );
    assert_eq!(v["version"]["semantic"], json!(testing::VERSION));
    assert_eq!(
        v["engineCommunication"]["certificateFingerprint"],
        json!(app.identity.fingerprint().as_str())
    );
    assert_eq!(v["engineCommunication"]["port"], json!(40815));
}

#[tokio::test]
async fn shared_secret_lifecycle_over_the_api() {
    let app = testing::app_with(testing::settings(), Clock::manual(1_767_225_600_000));
    let (s, v) = call(&app, "GET", "/api/3/scan_engines/shared_secret", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&v, StatusCode::NOT_FOUND, "shared secret");
    let (s, _) = call(
        &app,
        "GET",
        "/api/3/scan_engines/shared_secret/time_to_live",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let (s, created, headers) = call_as(
        &app,
        "POST",
        "/api/3/scan_engines/shared_secret",
        None,
        Some(basic(USER, PASSWORD)),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "the spec's 201");
    assert_eq!(
        headers[header::CONTENT_TYPE],
        "text/plain;charset=UTF-8",
        "the spec's media type"
    );
    let secret = created.as_str().expect("the secret as text").to_owned();
    assert_eq!(secret.trim(), secret, "no quotes, no new line");
    assert!(!secret.starts_with('"'), "{secret}");
    let (_, again) = call(&app, "POST", "/api/3/scan_engines/shared_secret", None).await;
    assert_eq!(
        again,
        json!(secret),
        "POST returns the current secret while it is valid"
    );
    let (s, got) = call(&app, "GET", "/api/3/scan_engines/shared_secret", None).await;
    assert_eq!((s, got), (StatusCode::OK, json!(secret)));

    app.clock.advance(std::time::Duration::from_secs(600));
    let (s, ttl) = call(
        &app,
        "GET",
        "/api/3/scan_engines/shared_secret/time_to_live",
        None,
    )
    .await;
    assert_eq!((s, ttl), (StatusCode::OK, json!(3000)));

    let (s, v) = call(&app, "DELETE", "/api/3/scan_engines/shared_secret", None).await;
    assert_eq!((s, v), (StatusCode::OK, json!({"links": []})));
    let (s, _) = call(&app, "GET", "/api/3/scan_engines/shared_secret", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, fresh) = call(&app, "POST", "/api/3/scan_engines/shared_secret", None).await;
    assert_ne!(fresh, json!(secret));

    app.clock.advance(std::time::Duration::from_secs(3600));
    let (s, _) = call(
        &app,
        "GET",
        "/api/3/scan_engines/shared_secret/time_to_live",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "expired");
}

#[tokio::test]
async fn lists_come_in_pages_of_ten_unless_asked_otherwise() {
    let app = testing::app();
    for i in 0..12 {
        let (s, _) = call(
            &app,
            "POST",
            "/api/3/scan_engines",
            Some(json!({"name": format!("engine-{i:02}"), "address": "127.0.0.1", "port": 9})),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let names = |v: &Value| -> Vec<String> {
        v["resources"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e["name"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };

    let (s, first) = call(&app, "GET", "/api/3/scan_engines", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(names(&first).len(), 10, "{first}");
    assert_eq!(
        first["page"],
        json!({"number": 0, "size": 10, "totalResources": 12, "totalPages": 2})
    );
    let next = first["links"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["rel"] == "next"))
        .and_then(|l| l["href"].as_str())
        .map(String::from);
    assert_eq!(next.as_deref(), Some("/api/3/scan_engines?page=1&size=10"));

    let (_, second) = call(&app, "GET", "/api/3/scan_engines?page=1&size=10", None).await;
    assert_eq!(names(&second), ["engine-10", "engine-11"]);
    let mut all = names(&first);
    all.extend(names(&second));
    let (_, one_page) = call(&app, "GET", "/api/3/scan_engines?size=500", None).await;
    assert_eq!(
        names(&one_page),
        all,
        "pages are in the same order as one big page"
    );

    let (_, past) = call(&app, "GET", "/api/3/scan_engines?page=5", None).await;
    assert_eq!(
        past["resources"],
        json!([]),
        "past the end: empty, not an error"
    );

    for (query, names_param) in [
        ("size=0", "size"),
        ("size=501", "size"),
        ("page=-1", "page"),
    ] {
        let (s, v) = call(&app, "GET", &format!("/api/3/scan_engines?{query}"), None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{query}");
        assert_error(&v, StatusCode::BAD_REQUEST, names_param);
    }
}

#[tokio::test]
async fn engines_create_list_get_delete() {
    let app = testing::app();
    let (s, v) = call(&app, "GET", "/api/3/scan_engines", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["resources"], json!([]));
    assert_eq!(
        v["page"],
        json!({"number": 0, "size": 10, "totalResources": 0, "totalPages": 0})
    );

    // A closed port: the engine will be not-responding, which is fine here.
    let (s, created) = call(
        &app,
        "POST",
        "/api/3/scan_engines",
        Some(json!({"name": "engine-a", "address": "127.0.0.1", "port": 9})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let id = created["id"].as_i64().unwrap();
    assert_eq!(
        created["links"][0]["href"],
        json!(format!("/api/3/scan_engines/{id}"))
    );

    let (s, e) = call(&app, "GET", &format!("/api/3/scan_engines/{id}"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(e["name"], json!("engine-a"));
    assert_eq!(e["address"], json!("127.0.0.1"));
    assert_eq!(e["port"], json!(9));
    assert_eq!(e["direction"], json!("console-to-engine"));
    for key in ["status", "lastUpdatedDate", "message", "links"] {
        assert!(e.get(key).is_some(), "engine lacks {key}: {e}");
    }
    // Not known before the first contact: left out, since the spec types them as strings.
    for key in ["productVersion", "lastRefreshedDate"] {
        assert!(e.get(key).is_none(), "{key} before any contact: {e}");
    }
    assert!(
        ["unknown", "not-responding"].contains(&e["status"].as_str().unwrap()),
        "{e}"
    );

    let (s, v) = call(
        &app,
        "POST",
        "/api/3/scan_engines",
        Some(json!({"name": "engine-a", "address": "10.0.0.2", "port": 40814})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_error(&v, StatusCode::CONFLICT, "engine-a");

    let (_, list) = call(&app, "GET", "/api/3/scan_engines", None).await;
    assert_eq!(list["resources"].as_array().unwrap().len(), 1);
    assert_eq!(list["page"]["totalResources"], json!(1));

    // Refresh dials now and records the failure in words.
    let (s, e) = call(
        &app,
        "POST",
        &format!("/api/3/scan_engines/{id}/refresh"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(e["status"], json!("not-responding"));
    assert!(
        e["message"].as_str().unwrap().contains("cannot reach"),
        "{e}"
    );
    assert!(e["lastRefreshedDate"].is_string());

    let (s, v) = call(&app, "DELETE", &format!("/api/3/scan_engines/{id}"), None).await;
    assert_eq!((s, v), (StatusCode::OK, json!({"links": []})));
    let (s, v) = call(&app, "GET", &format!("/api/3/scan_engines/{id}"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&v, StatusCode::NOT_FOUND, &id.to_string());
    let (s, _) = call(&app, "DELETE", &format!("/api/3/scan_engines/{id}"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = call(&app, "POST", "/api/3/scan_engines/999/refresh", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_input_is_a_400_naming_the_field() {
    let app = testing::app();
    let cases = [
        (json!({"address": "a", "port": 1}), "name"),
        (json!({"name": "", "address": "a", "port": 1}), "name"),
        (json!({"name": "n", "port": 1}), "address"),
        (json!({"name": "n", "address": "a", "port": 0}), "port"),
        (json!({"name": "n", "address": "a", "port": 70000}), "port"),
        (json!({"name": "n", "address": "a", "port": "x"}), "port"),
        (json!({"name": 5, "address": "a"}), "name"),
        // Names engines could never greet the console with.
        (
            json!({"name": "<script>", "address": "a", "port": 1}),
            "name",
        ),
        (
            json!({"name": "x".repeat(321), "address": "a", "port": 1}),
            "name",
        ),
        (json!(["not", "an", "object"]), "JSON object"),
    ];
    for (body, field) in cases {
        let (s, v) = call(&app, "POST", "/api/3/scan_engines", Some(body.clone())).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
        assert_error(&v, StatusCode::BAD_REQUEST, field);
    }
    let (s, v) = call(&app, "GET", "/api/3/scan_engines/abc", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, StatusCode::BAD_REQUEST, "id");
    let (s, v) = call(&app, "GET", "/api/3/nowhere", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&v, StatusCode::NOT_FOUND, "no such resource");
    assert!(app.store.engines().await.unwrap().is_empty());
}

#[tokio::test]
async fn reverse_engines_show_their_direction_and_address() {
    let app = testing::app();
    let id = app
        .store
        .pair_reverse_engine(NewReverseEngine {
            name: "rev".into(),
            address: "10.1.2.3".into(),
            fingerprint: "sha256:00".into(),
            cert_pem: "PEM".into(),
            product_version: testing::VERSION.into(),
            at: app.clock.now(),
        })
        .await
        .unwrap();
    let (_, e) = call(&app, "GET", &format!("/api/3/scan_engines/{id}"), None).await;
    assert_eq!(e["direction"], json!(Direction::EngineToConsole.as_str()));
    assert_eq!(e["status"], json!("active"));
    assert_eq!(e["port"], json!(0));
    assert_eq!(e["address"], json!("10.1.2.3"));
    assert_eq!(e["productVersion"], json!(testing::VERSION));
    // Refreshing an engine with no open session says so.
    let (_, e) = call(
        &app,
        "POST",
        &format!("/api/3/scan_engines/{id}/refresh"),
        None,
    )
    .await;
    assert_eq!(e["status"], json!("not-responding"));
    assert!(
        e["message"].as_str().unwrap().contains("no open session"),
        "{e}"
    );
}

#[tokio::test]
async fn sites_scans_and_assets() {
    let app = testing::app();
    let engine = app
        .store
        .create_standard_engine("idle", "127.0.0.1", 9, app.clock.now())
        .await
        .unwrap();
    let site_body = json!({
        "name": "lab",
        "engineId": engine,
        "scan": {"assets": {"includedTargets": {"addresses": ["10.0.0.0/30", "host.example"]}}},
        "ports": [22, 80],
        "timeoutMs": 500
    });
    let (s, created) = call(&app, "POST", "/api/3/sites", Some(site_body)).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let site = created["id"].as_i64().unwrap();
    let (s, v) = call(&app, "GET", &format!("/api/3/sites/{site}"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v["scan"]["assets"]["includedTargets"]["addresses"],
        json!(["10.0.0.0/30", "host.example"])
    );
    assert_eq!(v["ports"], json!([22, 80]));
    let (_, list) = call(&app, "GET", "/api/3/sites", None).await;
    assert_eq!(list["resources"].as_array().unwrap().len(), 1);

    // The engine is not active: 409.
    let (s, v) = call(
        &app,
        "POST",
        &format!("/api/3/sites/{site}/scans"),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_error(&v, StatusCode::CONFLICT, "not active");
    let (s, _) = call(&app, "POST", "/api/3/sites/999/scans", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = call(&app, "GET", "/api/3/scans/999", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Bad sites name their field.
    for (body, field) in [
        (json!({"engineId": engine}), "name"),
        (
            json!({"name": "x", "engineId": 999, "scan": {"assets": {"includedTargets": {"addresses": ["a"]}}}}),
            "engineId",
        ),
        (
            json!({"name": "x", "scan": {"assets": {"includedTargets": {"addresses": "a"}}}}),
            "addresses",
        ),
        (
            json!({"name": "x", "engineId": engine, "scan": {"assets": {"includedTargets": {"addresses": ["a"]}}}, "ports": [0]}),
            "ports",
        ),
        (
            json!({"name": "x", "engineId": engine, "scan": {"assets": {"includedTargets": {"addresses": ["a"]}}}, "timeoutMs": -1}),
            "timeoutMs",
        ),
    ] {
        let (s, v) = call(&app, "POST", "/api/3/sites", Some(body.clone())).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
        assert_error(&v, StatusCode::BAD_REQUEST, field);
    }

    // Only a name is needed (the spec's SiteCreateResource); with no targets and no engine
    // there is nothing to scan yet.
    let (s, bare) = call(&app, "POST", "/api/3/sites", Some(json!({"name": "bare"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{bare}");
    let bare = bare["id"].as_i64().unwrap();
    let (_, v) = call(&app, "GET", &format!("/api/3/sites/{bare}"), None).await;
    assert_eq!(
        (&v["name"], &v["scanEngine"]),
        (&json!("bare"), &Value::Null),
        "{v}"
    );
    let (s, v) = call(&app, "POST", &format!("/api/3/sites/{bare}/scans"), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, StatusCode::BAD_REQUEST, "no targets");

    // A scan recorded directly shows through the API.
    let scan = app
        .store
        .create_scan(
            site,
            engine,
            false,
            vec!["10.0.0.0/30".into()],
            app.clock.now(),
        )
        .await
        .unwrap();
    let job = app.store.jobs(scan).await.unwrap()[0].id;
    assert!(app.store.assign_job(job, engine).await.unwrap());
    app.store.scan_progress(job, engine, 3, 8).await.unwrap();
    app.store
        .scan_finding(
            job,
            engine,
            "10.0.0.1".into(),
            None,
            22,
            Some("SSH-2.0-x".into()),
        )
        .await
        .unwrap();
    let (s, v) = call(&app, "GET", &format!("/api/3/scans/{scan}"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["status"], json!("running"));
    assert_eq!(v["progress"], json!({"done": 3, "total": 8}));
    assert_eq!(v["assets"], json!(1));
    assert_eq!(
        (v["siteId"].as_i64(), v["engineId"].as_i64()),
        (Some(site), Some(engine))
    );
    let (_, assets) = call(&app, "GET", "/api/3/assets", None).await;
    assert_eq!(
        assets["resources"][0]["services"],
        json!([{"port": 22, "protocol": "tcp", "banner": "SSH-2.0-x"}])
    );
    assert_eq!(assets["resources"][0]["ip"], json!("10.0.0.1"));
}

#[tokio::test]
async fn a_scan_started_through_the_api_reaches_the_engine_and_its_results_show() {
    let app = testing::app();
    let (addr, _) =
        testing::fake_standard_engine(scan_engine_protocol::Message::Accepted, testing::VERSION)
            .await;
    let (s, created) = call(
        &app,
        "POST",
        "/api/3/scan_engines",
        Some(json!({"name": "scanner", "address": addr.ip().to_string(), "port": addr.port()})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let engine = created["id"].as_i64().unwrap();
    testing::eventually("engine active with an open session", || {
        let app = app.clone();
        async move {
            let (_, e) = call(&app, "GET", &format!("/api/3/scan_engines/{engine}"), None).await;
            e["status"] == json!("active") && app.sessions.is_connected(engine)
        }
    })
    .await;
    let (s, e) = call(
        &app,
        "POST",
        &format!("/api/3/scan_engines/{engine}/refresh"),
        None,
    )
    .await;
    assert_eq!((s, &e["status"]), (StatusCode::OK, &json!("active")), "{e}");
    assert_eq!(e["productVersion"], json!(testing::VERSION));

    let (_, site) = call(
        &app,
        "POST",
        "/api/3/sites",
        Some(json!({"name": "lab", "engineId": engine,
            "scan": {"assets": {"includedTargets": {"addresses": ["localhost"]}}}, "ports": [2222]})),
    )
    .await;
    let site = site["id"].as_i64().unwrap();
    let (s, scan) = call(&app, "POST", &format!("/api/3/sites/{site}/scans"), None).await;
    assert_eq!(s, StatusCode::OK, "the spec's 200: {scan}");
    let scan = scan["id"].as_i64().unwrap();
    testing::eventually("scan finished", || {
        let app = app.clone();
        async move {
            call(&app, "GET", &format!("/api/3/scans/{scan}"), None)
                .await
                .1["status"]
                == json!("finished")
        }
    })
    .await;
    let (_, v) = call(&app, "GET", &format!("/api/3/scans/{scan}"), None).await;
    assert_eq!(v["progress"], json!({"done": 2, "total": 2}));
    let (_, assets) = call(&app, "GET", "/api/3/assets", None).await;
    assert_eq!(assets["resources"][0]["hostName"], json!("localhost"));
    assert_eq!(assets["resources"][0]["services"][0]["port"], json!(2222));
}

#[tokio::test]
async fn guessing_is_answered_429_per_source_and_the_right_password_works_after_the_wait() {
    let app = testing::app();
    let guesser = Some(SocketAddr::from(([192, 0, 2, 7], 50000)));
    let other = Some(SocketAddr::from(([192, 0, 2, 8], 50000)));
    let path = "/api/3/administration/info";
    for _ in 0..=super::throttle::FREE_FAILURES {
        let (s, _, _) =
            call_from(&app, guesser, "GET", path, None, Some(basic(USER, "guess"))).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    // Blocked: even the right password is refused until the wait is over, and says how long.
    let (s, v, headers) = call_from(
        &app,
        guesser,
        "GET",
        path,
        None,
        Some(basic(USER, PASSWORD)),
    )
    .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_error(&v, StatusCode::TOO_MANY_REQUESTS, "failed logins");
    let wait: u64 = headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    // Another source is not affected.
    let (s, _, _) = call_from(&app, other, "GET", path, None, Some(basic(USER, PASSWORD))).await;
    assert_eq!(s, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
    let (s, _, _) = call_from(
        &app,
        guesser,
        "GET",
        path,
        None,
        Some(basic(USER, PASSWORD)),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "the right password works after the wait");
}

async fn post_raw(
    app: &App,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method("POST")
        .uri(path)
        .header(header::AUTHORIZATION, basic(USER, PASSWORD))
        .header(header::CONTENT_LENGTH, body.len());
    if let Some(t) = content_type {
        req = req.header(header::CONTENT_TYPE, t);
    }
    let res = super::router(app.clone())
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn bodies_must_be_declared_json_and_small() {
    let app = testing::app();
    let engine = json!({"name": "e", "address": "127.0.0.1", "port": 9}).to_string();
    // A text/plain body (what a cross-site form can send) is refused unread.
    for content_type in [
        Some("text/plain"),
        None,
        Some("application/x-www-form-urlencoded"),
    ] {
        let (s, v) = post_raw(
            &app,
            "/api/3/scan_engines",
            content_type,
            engine.clone().into_bytes(),
        )
        .await;
        assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{content_type:?}");
        assert_error(&v, StatusCode::UNSUPPORTED_MEDIA_TYPE, "application/json");
    }
    assert!(
        app.store.engines().await.unwrap().is_empty(),
        "nothing was created"
    );
    // Too large: 413, not 400.
    let big = format!(
        r#"{{"name": "e", "address": "127.0.0.1", "pad": "{}"}}"#,
        "x".repeat(super::MAX_BODY_BYTES)
    );
    let (s, v) = post_raw(
        &app,
        "/api/3/scan_engines",
        Some("application/json"),
        big.into_bytes(),
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_error(&v, StatusCode::PAYLOAD_TOO_LARGE, "at most");
    // JSON with parameters is JSON.
    let (s, _) = post_raw(
        &app,
        "/api/3/scan_engines",
        Some("application/json; charset=utf-8"),
        engine.into_bytes(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
}

#[tokio::test]
async fn a_huge_page_number_is_a_400_and_the_last_page_number_links_no_further() {
    let app = testing::app();
    let (s, v) = call(
        &app,
        "GET",
        "/api/3/scan_engines?page=18446744073709551615",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, StatusCode::BAD_REQUEST, "page");
    let last = super::MAX_PAGE_NUMBER;
    let (s, v) = call(
        &app,
        "GET",
        &format!("/api/3/assets?page={last}&size=500"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["resources"], json!([]));
    let rels: Vec<&str> = v["links"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["rel"].as_str())
        .collect();
    assert_eq!(rels, ["self"], "{v}");
}

#[tokio::test]
async fn a_site_the_engine_could_never_scan_is_refused_when_created() {
    let app = testing::app();
    let engine = app
        .store
        .create_standard_engine("idle", "127.0.0.1", 9, app.clock.now())
        .await
        .unwrap();
    let site = |targets: Value| {
        json!({"name": "wide", "engineId": engine,
               "scan": {"assets": {"includedTargets": {"addresses": targets}}}})
    };
    for targets in [
        json!(["0.0.0.0/0"]),
        json!(["10.0.0.0/8"]),
        json!(["::/0"]),
        json!(["10.0.0.0/16", "10.1.0.0/16"]),
        json!(["not a host!"]),
    ] {
        let (s, v) = call(&app, "POST", "/api/3/sites", Some(site(targets.clone()))).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{targets}: {v}");
        assert_error(
            &v,
            StatusCode::BAD_REQUEST,
            "scan.assets.includedTargets.addresses",
        );
    }
    assert_eq!(app.store.sites_page(0, 10).await.unwrap().total, 0);
    let (s, v) = call(
        &app,
        "POST",
        "/api/3/sites",
        Some(site(json!(["10.0.0.0/16"]))),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

#[tokio::test]
async fn an_internal_error_tells_the_client_nothing_of_its_cause() {
    use axum::response::IntoResponse as _;
    let cause = crate::error::Error::Config("/var/lib/security-console/console.db: locked".into());
    let response = super::ApiError::from(cause).into_response();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let bytes = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_error(
        &v,
        StatusCode::INTERNAL_SERVER_ERROR,
        "the console's log has the cause",
    );
    assert!(!v.to_string().contains("console.db"), "{v}");
}
