//! Pairing and sessions against in-process fake engines built from the protocol crate.

use std::time::Duration;

use scan_engine_protocol::{Identity, Message, messages::RejectReason, tls};
use tokio::{io::AsyncWriteExt, net::TcpListener};

use crate::{
    clock::Clock,
    engines::{EngineStatus, state},
    store::{Direction, Outcome},
    testing::{self, VERSION},
};

async fn status_of(app: &crate::context::App, id: i64) -> EngineStatus {
    let e = app.store.engine(id).await.unwrap().unwrap();
    state::status(&e, app.clock.now(), &app.settings.thresholds())
}

#[tokio::test]
async fn a_wrong_secret_is_refused_and_registers_nothing() {
    let app = testing::app();
    let addr = testing::start_listener(&app).await;
    app.secrets.current_or_new().await.unwrap();
    let id = Identity::generate("e1").unwrap();
    let (_s, answer) = testing::pair(addr, &id, "e1", "WRONG-SECRET").await;
    assert!(
        matches!(
            answer,
            Message::Rejected {
                reason: RejectReason::InvalidSecret,
                ..
            }
        ),
        "{answer:?}"
    );
    assert!(app.store.engines().await.unwrap().is_empty());
}

#[tokio::test]
async fn without_any_secret_pairing_is_refused() {
    let app = testing::app();
    let addr = testing::start_listener(&app).await;
    let id = Identity::generate("e1").unwrap();
    let (_s, answer) = testing::pair(addr, &id, "e1", "ABCD").await;
    assert!(
        matches!(
            answer,
            Message::Rejected {
                reason: RejectReason::NoSharedSecret,
                ..
            }
        ),
        "{answer:?}"
    );
    assert!(app.store.engines().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_expired_secret_is_refused() {
    let app = testing::app_with(testing::settings(), Clock::manual(1_000_000_000));
    let addr = testing::start_listener(&app).await;
    let secret = app.secrets.current_or_new().await.unwrap();
    app.clock.advance(Duration::from_secs(3601));
    let id = Identity::generate("e1").unwrap();
    let (_s, answer) = testing::pair(addr, &id, "e1", secret.value.expose()).await;
    assert!(
        matches!(
            answer,
            Message::Rejected {
                reason: RejectReason::ExpiredSecret,
                ..
            }
        ),
        "{answer:?}"
    );
    assert!(app.store.engines().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_unpaired_engine_without_a_secret_is_not_paired() {
    let app = testing::app();
    let addr = testing::start_listener(&app).await;
    let id = Identity::generate("e1").unwrap();
    let (mut s, _) = testing::dial(addr, &id, "e1", VERSION).await;
    // Says nothing after hello: the console gives up after its handshake timeout.
    let answer = s.recv(Duration::from_secs(5)).await.unwrap();
    assert!(
        matches!(
            answer,
            Message::Rejected {
                reason: RejectReason::NotPaired,
                ..
            }
        ),
        "{answer:?}"
    );
}

#[tokio::test]
async fn the_right_secret_pairs_and_the_pinned_certificate_is_welcomed_back() {
    let app = testing::app();
    let addr = testing::start_listener(&app).await;
    let secret = app.secrets.current_or_new().await.unwrap();
    let id = Identity::generate("e1").unwrap();

    let (mut s, answer) = testing::pair(addr, &id, "e1", secret.value.expose()).await;
    let Message::Paired { engine_id } = answer else {
        panic!("expected paired, got {answer:?}")
    };
    let engine = app.store.engine(engine_id as i64).await.unwrap().unwrap();
    assert_eq!(engine.name, "e1");
    assert_eq!(engine.direction, Direction::EngineToConsole);
    assert_eq!(engine.port, 0);
    assert_eq!(engine.address, "127.0.0.1");
    assert_eq!(
        engine.fingerprint.as_deref(),
        Some(id.fingerprint().as_str())
    );
    assert_eq!(engine.product_version.as_deref(), Some(VERSION));
    testing::ping(&mut s, 1).await;
    assert_eq!(
        status_of(&app, engine_id as i64).await,
        EngineStatus::Active
    );

    // A second engine may use the same secret.
    let other = Identity::generate("e2").unwrap();
    let (_s2, answer) = testing::pair(addr, &other, "e2", secret.value.expose()).await;
    assert!(matches!(answer, Message::Paired { .. }), "{answer:?}");

    // The engine restarts: the same certificate is welcomed without a secret, even after revoke.
    drop(s);
    app.secrets.revoke().await.unwrap();
    let (mut s, _) = testing::dial(addr, &id, "e1", VERSION).await;
    let answer = s.recv(Duration::from_secs(5)).await.unwrap();
    assert_eq!(answer, Message::Welcome { engine_id });
    testing::ping(&mut s, 2).await;
    // The console can refresh it over the open session.
    let answer_one_ping = async {
        match s.recv(Duration::from_secs(5)).await.unwrap() {
            Message::Ping { seq } => s.send(Message::Pong { seq }).await.unwrap(),
            other => panic!("expected a ping, got {other:?}"),
        }
    };
    let (refreshed, ()) = tokio::join!(
        app.sessions.ping(engine_id as i64, Duration::from_secs(5)),
        answer_one_ping
    );
    assert_eq!(refreshed, Some(Ok(())));
    assert_eq!(
        status_of(&app, engine_id as i64).await,
        EngineStatus::Active
    );

    // The session ends: the engine is reported not-responding.
    drop(s);
    testing::eventually("not-responding after the session closed", || {
        let app = app.clone();
        async move { status_of(&app, engine_id as i64).await == EngineStatus::NotResponding }
    })
    .await;
}

#[tokio::test]
async fn another_identity_cannot_take_a_registered_name() {
    let app = testing::app();
    let addr = testing::start_listener(&app).await;
    let secret = app.secrets.current_or_new().await.unwrap();
    let (_s, answer) = testing::pair(
        addr,
        &Identity::generate("a").unwrap(),
        "same",
        secret.value.expose(),
    )
    .await;
    assert!(matches!(answer, Message::Paired { .. }));
    let (_s, answer) = testing::pair(
        addr,
        &Identity::generate("b").unwrap(),
        "same",
        secret.value.expose(),
    )
    .await;
    assert!(
        matches!(
            answer,
            Message::Rejected {
                reason: RejectReason::NameTaken,
                ..
            }
        ),
        "{answer:?}"
    );
    assert_eq!(app.store.engines().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_mismatched_version_is_marked_incompatible() {
    let app = testing::app();
    let addr = testing::start_listener(&app).await;
    let secret = app.secrets.current_or_new().await.unwrap();
    let id = Identity::generate("e1").unwrap();
    let (s, answer) = testing::pair(addr, &id, "e1", secret.value.expose()).await;
    let Message::Paired { engine_id } = answer else {
        panic!("{answer:?}")
    };
    drop(s);

    let (mut s, _) = testing::dial(addr, &id, "e1", "9.9.9").await;
    let answer = s.recv(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        answer,
        Message::Incompatible {
            console_version: VERSION.into(),
            engine_version: "9.9.9".into()
        }
    );
    testing::eventually("incompatible", || {
        let app = app.clone();
        async move { status_of(&app, engine_id as i64).await == EngineStatus::Incompatible }
    })
    .await;
    let e = app.store.engine(engine_id as i64).await.unwrap().unwrap();
    assert_eq!(e.product_version.as_deref(), Some("9.9.9"));
    assert!(e.message.contains("9.9.9"), "{}", e.message);

    // An unknown engine with another version is refused and not registered.
    let (mut s, _) = testing::dial(addr, &Identity::generate("x").unwrap(), "x", "9.9.9").await;
    assert!(matches!(
        s.recv(Duration::from_secs(5)).await.unwrap(),
        Message::Incompatible { .. }
    ));
    assert!(app.store.engine_by_name("x").await.unwrap().is_none());
}

#[tokio::test]
async fn garbage_and_oversized_frames_drop_only_their_own_connection() {
    let app = testing::app();
    let addr = testing::start_listener(&app).await;
    let secret = app.secrets.current_or_new().await.unwrap();
    let good = Identity::generate("good").unwrap();
    let (mut good_session, answer) =
        testing::pair(addr, &good, "good", secret.value.expose()).await;
    assert!(matches!(answer, Message::Paired { .. }));

    // A peer that connects and says nothing.
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();

    // Plain garbage instead of TLS.
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\n\r\n\x00\xff garbage")
        .await
        .unwrap();

    // A TLS peer announcing a 2 GiB frame.
    let bad = Identity::generate("bad").unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(tls::client_config(&bad).unwrap());
    let name = rustls::pki_types::ServerName::try_from(tls::SESSION_SERVER_NAME).unwrap();
    let mut tls_stream = connector.connect(name, tcp).await.unwrap();
    tls_stream
        .write_all(&[0x7f, 0xff, 0xff, 0xff, b'{'])
        .await
        .unwrap();
    tls_stream.flush().await.unwrap();

    // A TLS peer sending a well-framed but malformed message.
    let (mut malformed, _) =
        testing::dial(addr, &Identity::generate("m").unwrap(), "m", VERSION).await;
    let _ = malformed.send(Message::Pong { seq: 1 }).await; // not a pair request
    let answer = malformed.recv(Duration::from_secs(5)).await.unwrap();
    assert!(matches!(
        answer,
        Message::Rejected {
            reason: RejectReason::NotPaired,
            ..
        }
    ));

    // The bad connections are closed by the console...
    let mut buf = Vec::new();
    let n = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut raw, &mut buf),
    )
    .await;
    assert!(n.is_ok(), "raw garbage connection still open");
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut tls_stream, &mut buf),
    )
    .await;
    assert!(n.is_ok(), "oversized-frame connection not closed");
    let started = std::time::Instant::now();
    let n = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read(&mut silent, &mut buf),
    )
    .await;
    assert!(
        matches!(n, Ok(Ok(0)) | Ok(Err(_))),
        "silent connection not closed: {n:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by the handshake timeout"
    );
    // ...while the good session keeps working.
    testing::ping(&mut good_session, 7).await;
    assert_eq!(app.store.engines().await.unwrap().len(), 1);
}

async fn add_standard(app: &crate::context::App, name: &str, addr: std::net::SocketAddr) -> i64 {
    let id = app
        .store
        .create_standard_engine(name, &addr.ip().to_string(), addr.port(), app.clock.now())
        .await
        .unwrap();
    app.supervisors.start(app, id);
    id
}

async fn wait_status(app: &crate::context::App, id: i64, want: EngineStatus) {
    testing::eventually(want.as_str(), || {
        let app = app.clone();
        async move { status_of(&app, id).await == want }
    })
    .await;
}

#[tokio::test]
async fn standard_engines_pending_accepted_incompatible_and_down() {
    let app = testing::app();
    let (pending_addr, _) =
        testing::fake_standard_engine(Message::PendingAuthorization, VERSION).await;
    let (accepting_addr, accepting_id) =
        testing::fake_standard_engine(Message::Accepted, VERSION).await;
    let (old_addr, _) = testing::fake_standard_engine(Message::Accepted, "0.0.1").await;
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap(); // dropped: refuses

    let pending = add_standard(&app, "pending", pending_addr).await;
    let accepting = add_standard(&app, "accepting", accepting_addr).await;
    let old = add_standard(&app, "old", old_addr).await;
    let down = add_standard(&app, "down", closed).await;

    wait_status(&app, pending, EngineStatus::PendingAuthorization).await;
    wait_status(&app, accepting, EngineStatus::Active).await;
    wait_status(&app, old, EngineStatus::Incompatible).await;
    wait_status(&app, down, EngineStatus::NotResponding).await;

    let e = app.store.engine(accepting).await.unwrap().unwrap();
    assert_eq!(
        e.fingerprint.as_deref(),
        Some(accepting_id.fingerprint().as_str()),
        "pinned on acceptance"
    );
    assert!(
        app.store
            .engine(down)
            .await
            .unwrap()
            .unwrap()
            .message
            .contains("cannot reach")
    );
    assert!(
        app.store
            .engine(pending)
            .await
            .unwrap()
            .unwrap()
            .message
            .contains("consoles.xml")
    );

    // Periodic pings keep it active over several intervals.
    tokio::time::sleep(app.settings.ping_interval * 4).await;
    let e = app.store.engine(accepting).await.unwrap().unwrap();
    assert_eq!(e.outcome, Outcome::Ok, "{}", e.message);
    assert!(app.sessions.is_connected(accepting));

    // Deleting stops the supervisor and closes the session.
    app.supervisors.stop(accepting);
    app.sessions.close(accepting);
    testing::eventually("session closed", || {
        let app = app.clone();
        async move { !app.sessions.is_connected(accepting) }
    })
    .await;
}

#[tokio::test]
async fn a_scan_runs_over_a_standard_session_and_stores_results() {
    let app = testing::app();
    let (addr, _) = testing::fake_standard_engine(Message::Accepted, VERSION).await;
    let engine = add_standard(&app, "scanner", addr).await;
    wait_status(&app, engine, EngineStatus::Active).await;
    testing::eventually("session registered", || {
        let app = app.clone();
        async move { app.sessions.is_connected(engine) }
    })
    .await;
    let site = app
        .store
        .create_site(crate::store::NewSite {
            name: "lab".into(),
            engine_id: Some(engine),
            targets: vec!["localhost".into()],
            ports: vec![22],
            timeout_ms: 100,
        })
        .await
        .unwrap();
    let scan = crate::scans::start(&app, site, None).await.unwrap();
    testing::eventually("scan finished", || {
        let app = app.clone();
        async move {
            app.store.scan(scan).await.unwrap().unwrap().status
                == crate::store::ScanStatus::Finished
        }
    })
    .await;
    let r = app.store.scan(scan).await.unwrap().unwrap();
    assert_eq!((r.done, r.total, r.assets), (2, 2, 1));
    let assets = app.store.assets().await.unwrap();
    assert_eq!(assets[0].host_name.as_deref(), Some("localhost"));
    assert_eq!(
        assets[0].services[0].banner.as_deref(),
        Some("SSH-2.0-test")
    );
}

#[tokio::test]
async fn a_restarted_console_keeps_its_engines_without_re_pairing() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        crate::context::Console::new(
            testing::settings(),
            crate::store::Store::open(&dir.path().join("console.db")).unwrap(),
            Clock::system(),
            Identity::load_or_generate(dir.path(), "console", "security-console").unwrap(),
            crate::auth::Credentials::new("admin".into(), "pw".into()),
        )
        .unwrap()
    };
    let (std_addr, _) = testing::fake_standard_engine(Message::Accepted, VERSION).await;
    let engine = Identity::generate("rev").unwrap();

    let first = open();
    let fingerprint = first.identity.fingerprint().clone();
    let addr = testing::start_listener(&first).await;
    let standard = add_standard(&first, "std", std_addr).await;
    wait_status(&first, standard, EngineStatus::Active).await;
    let secret = first.secrets.current_or_new().await.unwrap();
    let (s, answer) = testing::pair(addr, &engine, "rev", secret.value.expose()).await;
    let Message::Paired { engine_id } = answer else {
        panic!("{answer:?}")
    };
    drop(s);
    first.shutdown.cancel();
    drop(first);

    let second = open();
    assert_eq!(
        second.identity.fingerprint(),
        &fingerprint,
        "same console identity"
    );
    let addr = testing::start_listener(&second).await;
    assert_eq!(second.start_supervisors().await.unwrap(), 1);
    testing::eventually("the standard engine redialed", || {
        let app = second.clone();
        async move { app.sessions.is_connected(standard) }
    })
    .await;
    let (mut s, _) = testing::dial(addr, &engine, "rev", VERSION).await;
    assert_eq!(
        s.recv(Duration::from_secs(5)).await.unwrap(),
        Message::Welcome { engine_id }
    );
    testing::ping(&mut s, 1).await;
    wait_status(&second, engine_id as i64, EngineStatus::Active).await;
}

/// A TLS connection to the listener with `id`'s certificate, speaking raw bytes.
async fn raw_tls(
    addr: std::net::SocketAddr,
    id: &Identity,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(tls::client_config(id).unwrap());
    let name = rustls::pki_types::ServerName::try_from(tls::SESSION_SERVER_NAME).unwrap();
    connector.connect(name, tcp).await.unwrap()
}

#[tokio::test]
async fn a_stranger_greeting_with_a_registered_name_and_another_version_changes_nothing() {
    let app = testing::app();
    let addr = testing::start_listener(&app).await;
    let secret = app.secrets.current_or_new().await.unwrap();
    let real = Identity::generate("e1").unwrap();
    let (mut s, answer) = testing::pair(addr, &real, "e1", secret.value.expose()).await;
    let Message::Paired { engine_id } = answer else {
        panic!("{answer:?}")
    };
    testing::ping(&mut s, 1).await;
    // The session's own "connected" observation is written behind the pairing's; wait for it so
    // that only the stranger could change the record from here on.
    testing::eventually("the session's connected observation", || async {
        let record = app.store.engine(engine_id as i64).await.unwrap().unwrap();
        record.message.starts_with("connected")
    })
    .await;
    let before = app.store.engine(engine_id as i64).await.unwrap().unwrap();

    // Any self-signed certificate, the registered engine's name, another version.
    let stranger = Identity::generate("e1").unwrap();
    let (mut t, _) = testing::dial(addr, &stranger, "e1", "6.6.6-junk").await;
    assert!(matches!(
        t.recv(Duration::from_secs(5)).await.unwrap(),
        Message::Incompatible { .. }
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = app.store.engine(engine_id as i64).await.unwrap().unwrap();
    assert_eq!(after.outcome, before.outcome);
    assert_eq!(after.product_version.as_deref(), Some(VERSION));
    assert_eq!(after.message, before.message, "{after:?}");
    assert_eq!(
        status_of(&app, engine_id as i64).await,
        EngineStatus::Active
    );
}

#[tokio::test]
async fn a_hello_with_a_junk_version_is_refused_and_stored_nowhere_even_when_pinned() {
    let app = testing::app();
    let addr = testing::start_listener(&app).await;
    let secret = app.secrets.current_or_new().await.unwrap();
    let id = Identity::generate("e1").unwrap();
    let (s, answer) = testing::pair(addr, &id, "e1", secret.value.expose()).await;
    let Message::Paired { engine_id } = answer else {
        panic!("{answer:?}")
    };
    drop(s);

    // The codec would not send such a Hello, so write it by hand: 3,000 bytes of version.
    let body = format!(
        r#"{{"type":"hello","role":"engine","product_version":"{}","name":"e1"}}"#,
        "9".repeat(3000)
    );
    let mut stream = raw_tls(addr, &id).await;
    stream
        .write_all(&(body.len() as u32).to_be_bytes())
        .await
        .unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    // The console's own Hello comes back, then the connection closes without an answer that
    // repeats the version.
    let mut echoed = Vec::new();
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut echoed),
    )
    .await;
    assert!(read.is_ok(), "connection not closed");
    assert!(!String::from_utf8_lossy(&echoed).contains("9999"));
    let e = app.store.engine(engine_id as i64).await.unwrap().unwrap();
    assert_eq!(e.product_version.as_deref(), Some(VERSION));
    assert!(!e.message.contains("9999"), "{}", e.message);
    assert_ne!(e.outcome, Outcome::Incompatible);
}

#[tokio::test]
async fn one_source_holding_idle_connections_cannot_lock_a_real_engine_out() {
    use crate::engines::listener::PER_SOURCE_SLOTS;
    let app = testing::app();
    let addr = testing::start_listener(&app).await;
    let secret = app.secrets.current_or_new().await.unwrap();

    // The attacker, from another loopback address, opens more idle sockets than its share.
    let mut attacker = Vec::new();
    for _ in 0..PER_SOURCE_SLOTS + 8 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        attacker.push(socket.connect(addr).await.unwrap());
    }
    // Those beyond its share are closed at once...
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut closed = 0;
    for s in &attacker {
        let mut b = [0u8; 1];
        match s.try_read(&mut b) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            _ => closed += 1,
        }
    }
    assert_eq!(closed, 8);
    // ...and a real engine from another source pairs while the rest are held.
    let id = Identity::generate("real").unwrap();
    let (_s, answer) = testing::pair(addr, &id, "real", secret.value.expose()).await;
    assert!(matches!(answer, Message::Paired { .. }), "{answer:?}");
}
