//! The REST API (3780) against a client that guesses passwords, floods sockets, trickles bodies
//! and sends what a browser could post cross-site: a real console process on loopback.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    process::Stdio,
    time::{Duration, Instant},
};

use reqwest::{Method, StatusCode};
use scan_engine_tests::TestLogs;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

use crate::common::Console;

/// A client of its own (the console's helper authenticates every call).
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn url(console: &Console, path: &str) -> String {
    format!("https://{}{path}", console.api)
}

async fn body_of(resp: reqwest::Response) -> Value {
    serde_json::from_str(&resp.text().await.unwrap_or_default()).unwrap_or(Value::Null)
}

#[tokio::test]
async fn guessing_passwords_is_answered_429_and_the_right_password_works_after_the_wait() {
    let logs = TestLogs::for_current_test();
    let console = Console::start(&logs, None).await;
    let client = client();
    let tried_user = "guessed-user-name-that-must-not-be-logged";
    let (mut refused, mut throttled, mut retry_after) = (0, 0, None);
    for i in 0..200 {
        let resp = client
            .get(url(&console, "/api/3/administration/info"))
            .basic_auth(tried_user, Some(format!("guess-{i}")))
            .send()
            .await
            .unwrap();
        match resp.status() {
            StatusCode::UNAUTHORIZED => refused += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                throttled += 1;
                retry_after = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                let body = body_of(resp).await;
                assert_eq!(body["status"], json!("429"), "{body}");
            }
            other => panic!("guess {i}: {other}"),
        }
    }
    assert!(
        refused <= 10 && throttled >= 190,
        "200 guesses: {refused} checked (401), {throttled} refused unchecked (429)"
    );
    // The right password from the same address waits out the block, then works.
    let wait = retry_after.expect("429 carries Retry-After");
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let (status, body) = console
        .call(Method::GET, "/api/3/administration/info", None)
        .await;
    assert_eq!(status, 200, "{body}");
    // One warning per block, with the source and a count; never the tried user name.
    let log = console.proc.output();
    assert!(
        log.contains("source blocked"),
        "{}",
        console.proc.log_tail()
    );
    assert!(!log.contains(tried_user), "the tried user name was logged");
    assert!(!log.contains("guess-1"), "a tried password was logged");
    let lines = log.matches("source blocked").count();
    assert!(lines <= 3, "{lines} log lines for one burst");
}

#[tokio::test]
async fn an_oversized_body_is_413_and_a_text_plain_body_is_415_and_never_parsed() {
    let logs = TestLogs::for_current_test();
    let console = Console::start(&logs, None).await;
    let client = client();
    let huge = json!({"name": "x", "address": "127.0.0.1", "pad": "x".repeat(300 * 1024)});
    let resp = client
        .post(url(&console, "/api/3/scan_engines"))
        .basic_auth("admin", Some("system-test-password"))
        .json(&huge)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body = body_of(resp).await;
    assert_eq!(body["status"], json!("413"), "{body}");

    // What a cross-site form post looks like: valid JSON, declared text/plain.
    let resp = client
        .post(url(&console, "/api/3/scan_engines"))
        .basic_auth("admin", Some("system-test-password"))
        .header(reqwest::header::CONTENT_TYPE, "text/plain")
        .body(json!({"name": "planted", "address": "127.0.0.1", "port": 9}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(
        console.engine_named("planted").await.is_none(),
        "the text/plain body created an engine"
    );
}

#[tokio::test]
async fn a_huge_page_number_is_a_400_naming_it_and_a_site_targeting_slash_0_is_refused() {
    let logs = TestLogs::for_current_test();
    let console = Console::start(&logs, None).await;
    let (status, body) = console
        .call(
            Method::GET,
            "/api/3/scan_engines?page=18446744073709551615",
            None,
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("page"),
        "{body}"
    );

    let engine = console.add_engine("wide-scanner", 9).await;
    for targets in [json!(["0.0.0.0/0"]), json!(["10.0.0.0/8"])] {
        let (status, body) = console
            .call(
                Method::POST,
                "/api/3/sites",
                Some(json!({
                    "name": "everything",
                    "engineId": engine,
                    "scan": {"assets": {"includedTargets": {"addresses": targets}}},
                })),
            )
            .await;
        assert_eq!(status, 400, "{targets}: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap_or_default()
                .contains("scan.assets.includedTargets.addresses"),
            "{body}"
        );
    }
    let sites = console.get("/api/3/sites").await;
    assert_eq!(sites["page"]["totalResources"], json!(0), "{sites}");
}

#[tokio::test]
async fn a_trickled_authenticated_body_is_cut_within_seconds() {
    let logs = TestLogs::for_current_test();
    let console = Console::start(&logs, None).await;
    let mut tls = openssl_client(console.api);
    let mut stdin = tls.stdin.take().unwrap();
    let mut stdout = tls.stdout.take().unwrap();
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode("admin:system-test-password");
    let head = format!(
        "POST /api/3/sites HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic {auth}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
    );
    stdin.write_all(head.as_bytes()).await.unwrap();
    stdin.flush().await.unwrap();
    let started = Instant::now();
    // One byte a second, for up to 40 s, while reading whatever the console answers.
    let trickle = async {
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if stdin.write_all(b" ").await.is_err() || stdin.flush().await.is_err() {
                break;
            }
        }
        std::future::pending::<()>().await
    };
    let mut answer = Vec::new();
    let read_to_close = async {
        let mut buf = [0u8; 4096];
        loop {
            match stdout.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    };
    let closed = tokio::select! {
        _ = trickle => false,
        _ = read_to_close => true,
        _ = tokio::time::sleep(Duration::from_secs(40)) => false,
    };
    let held = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(closed, "the trickled body was still held after {held:?}");
    assert!(held < Duration::from_secs(10), "held for {held:?}");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

/// A TLS client whose stdin and stdout are the connection's plaintext. The test crate has no
/// TLS client that can send slowly or sit idle; the openssl command-line client can.
fn openssl_client(to: SocketAddr) -> tokio::process::Child {
    tokio::process::Command::new("openssl")
        .args(["s_client", "-quiet", "-ign_eof", "-connect"])
        .arg(to.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the openssl command-line client runs")
}

/// How long until the console closes `client`'s connection (None: still open after `limit`).
async fn time_to_close(client: &mut tokio::process::Child, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut stdout = client.stdout.take()?;
    let mut buf = [0u8; 4096];
    let closed = async {
        loop {
            match stdout.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, closed)
        .await
        .ok()
        .map(|_| started.elapsed())
}

#[tokio::test]
async fn idle_and_slow_header_tls_clients_are_closed_within_seconds() {
    let logs = TestLogs::for_current_test();
    let console = Console::start(&logs, None).await;
    // One sends nothing after its handshake; one sends its request line and then a header
    // byte a second.
    let mut idle = openssl_client(console.api);
    let mut slow = openssl_client(console.api);
    let mut slow_in = slow.stdin.take().unwrap();
    slow_in
        .write_all(b"GET /api/3/administration/info HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    slow_in.flush().await.unwrap();
    let drip = tokio::spawn(async move {
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if slow_in.write_all(b"X").await.is_err() || slow_in.flush().await.is_err() {
                break;
            }
        }
    });
    let limit = Duration::from_secs(25);
    let (idle_closed, slow_closed) = tokio::join!(
        time_to_close(&mut idle, limit),
        time_to_close(&mut slow, limit)
    );
    drip.abort();
    for (what, closed) in [("idle", idle_closed), ("slow-header", slow_closed)] {
        let closed = closed.unwrap_or_else(|| panic!("the {what} client was held {limit:?}"));
        assert!(closed < Duration::from_secs(15), "{what} held {closed:?}");
    }
}

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(from), 0))?;
    socket.connect(to).await
}

#[tokio::test]
async fn four_hundred_idle_sockets_are_capped_and_do_not_stop_an_authenticated_request() {
    let logs = TestLogs::for_current_test();
    let console = Console::start(&logs, None).await;
    // The flood comes from another loopback address than the real client.
    let attacker = Ipv4Addr::new(127, 0, 0, 2);
    let mut idle = Vec::new();
    for _ in 0..400 {
        idle.push(connect_from(attacker, console.api).await.unwrap());
    }
    let started = Instant::now();
    let (status, body) = console
        .call(Method::GET, "/api/3/administration/info", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Most of the flood was closed at once rather than held (a TLS handshake would wait 5 s).
    let mut closed = 0;
    for s in &mut idle {
        let mut buf = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(20), s.read(&mut buf)).await
        {
            closed += 1;
        }
    }
    assert!(
        closed >= 300,
        "only {closed} of 400 idle sockets were refused"
    );
}

#[tokio::test]
async fn a_trickled_body_to_a_route_that_reads_none_is_not_held_either() {
    let logs = TestLogs::for_current_test();
    let console = Console::start(&logs, None).await;
    let mut tls = openssl_client(console.api);
    let mut stdin = tls.stdin.take().unwrap();
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode("admin:system-test-password");
    let head = format!(
        "POST /api/3/scan_engines/shared_secret HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Basic {auth}\r\nContent-Type: application/json\r\n\
         Content-Length: 1000\r\n\r\n{{"
    );
    stdin.write_all(head.as_bytes()).await.unwrap();
    stdin.flush().await.unwrap();
    let drip = tokio::spawn(async move {
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if stdin.write_all(b" ").await.is_err() || stdin.flush().await.is_err() {
                break;
            }
        }
    });
    let closed = time_to_close(&mut tls, Duration::from_secs(30)).await;
    drip.abort();
    let closed = closed.expect("the connection was held 30 s");
    assert!(closed < Duration::from_secs(15), "held {closed:?}");
}
