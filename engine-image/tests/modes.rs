//! Both communication modes against a scripted console, in-process.

use std::{
    net::SocketAddr,
    path::Path,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use scan_engine::{Context, consoles_xml, pairing, reverse, standard, trust::TrustStore};
use scan_engine_protocol::{
    Fingerprint, Identity, Message, SharedSecret,
    messages::{RejectReason, Role, ScanJob, ScanOutcome},
    session::Session,
    tls,
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

const VERSION: &str = "0.1.0";
const T: Duration = Duration::from_secs(10);

fn context(dir: &Path, trusted: Option<Fingerprint>) -> Arc<Context> {
    let identity = Identity::load_or_generate(dir, "engine", "e1").unwrap();
    let trust = TrustStore::open(dir.join(consoles_xml::FILE_NAME), trusted.clone()).unwrap();
    Arc::new(Context {
        name: "e1".into(),
        product_version: VERSION.into(),
        data_dir: dir.to_owned(),
        identity,
        trust,
        trusted_console: trusted,
        max_scan_concurrency: 16,
        ping_interval: Duration::from_millis(200),
        ready: AtomicBool::new(false),
    })
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn dial(addr: SocketAddr, console: &Identity) -> Session {
    for _ in 0..100 {
        if let Ok(s) =
            Session::dial(&addr.to_string(), tls::client_config(console).unwrap(), T).await
        {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("engine does not listen on {addr}");
}

#[tokio::test]
async fn standard_mode_pending_then_accepted_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let console = Identity::generate("console").unwrap();
    let addr = free_addr();

    let stop = CancellationToken::new();
    let engine = tokio::spawn(standard::run(context(dir.path(), None), addr, stop.clone()));
    let mut s = dial(addr, &console).await;
    let hello = s
        .exchange_hello(Role::Console, VERSION, "c", T)
        .await
        .unwrap();
    assert_eq!(hello.role, Role::Engine);
    assert_eq!(s.recv(T).await.unwrap(), Message::PendingAuthorization);
    let file = consoles_xml::load(&dir.path().join("consoles.xml")).unwrap();
    assert_eq!(file.entries.len(), 1);
    assert_eq!(&file.entries[0].fingerprint, console.fingerprint());
    assert!(!file.entries[0].enabled);

    // A different version is incompatible.
    let mut s = dial(addr, &console).await;
    s.exchange_hello(Role::Console, "9.9.9", "c", T)
        .await
        .unwrap();
    assert!(matches!(
        s.recv(T).await.unwrap(),
        Message::Incompatible { .. }
    ));

    // Garbage does not stop the listener.
    {
        use tokio::io::AsyncWriteExt as _;
        let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
        raw.write_all(&[0xff; 1000]).await.unwrap();
    }

    // The admin enables it and restarts the engine.
    stop.cancel();
    engine.await.unwrap().unwrap();
    let mut edited = file.clone();
    edited.entries[0].enabled = true;
    consoles_xml::save(&dir.path().join("consoles.xml"), &edited).unwrap();
    let stop = CancellationToken::new();
    let engine = tokio::spawn(standard::run(context(dir.path(), None), addr, stop.clone()));
    let mut s = dial(addr, &console).await;
    s.exchange_hello(Role::Console, VERSION, "c", T)
        .await
        .unwrap();
    assert_eq!(s.recv(T).await.unwrap(), Message::Accepted);

    // Pings are answered while a scan runs.
    s.send(Message::ScanJob(ScanJob {
        scan_id: 9,
        targets: vec!["127.0.0.1".into()],
        ports: vec![free_addr().port()],
        connect_timeout_ms: 500,
        banner_timeout_ms: 100,
        max_concurrency: 4,
    }))
    .await
    .unwrap();
    s.send(Message::Ping { seq: 1 }).await.unwrap();
    let mut pong = false;
    let mut finished = false;
    while !(pong && finished) {
        match s.recv(T).await.unwrap() {
            Message::Pong { seq: 1 } => pong = true,
            Message::ScanFinished {
                scan_id: 9,
                outcome,
                ..
            } => {
                assert_eq!(outcome, ScanOutcome::Finished);
                finished = true;
            }
            Message::ScanProgress { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    stop.cancel();
    engine.await.unwrap().unwrap();
}

/// A console that accepts one connection and runs `script` on it.
async fn console_accepts(
    listener: &TcpListener,
    console: &Identity,
) -> (Session, scan_engine_protocol::session::PeerHello) {
    let acceptor = TlsAcceptor::from(tls::server_config(console).unwrap());
    let (tcp, _) = listener.accept().await.unwrap();
    let mut s = Session::accept(tcp, &acceptor, T).await.unwrap();
    let hello = s
        .exchange_hello(Role::Console, VERSION, "c", T)
        .await
        .unwrap();
    (s, hello)
}

#[tokio::test]
async fn reverse_mode_pairs_once_then_reconnects_by_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, "s3cret\n").unwrap();
    let console = Identity::generate("console").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let engine = tokio::spawn(reverse::run(
        context(dir.path(), Some(console.fingerprint().clone())),
        reverse::Options {
            console_address: addr.to_string(),
            shared_secret_file: Some(secret_file.clone()),
        },
        stop.clone(),
    ));

    // First connection: a wrong secret in the file would be refused; this one is right.
    let (mut s, hello) = console_accepts(&listener, &console).await;
    assert_eq!(hello.role, Role::Engine);
    assert_eq!(hello.name, "e1");
    match s.recv(T).await.unwrap() {
        Message::PairRequest { shared_secret } => {
            assert!(shared_secret.constant_time_eq(&SharedSecret::new("s3cret")))
        }
        other => panic!("expected a pair request, got {other:?}"),
    }
    s.send(Message::Paired { engine_id: 7 }).await.unwrap();
    // The engine pings on its own and answers ours.
    assert!(matches!(s.recv(T).await.unwrap(), Message::Ping { .. }));
    s.send(Message::Ping { seq: 5 }).await.unwrap();
    loop {
        match s.recv(T).await.unwrap() {
            Message::Pong { seq: 5 } => break,
            Message::Ping { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let record = pairing::load(dir.path()).unwrap().unwrap();
    assert_eq!(record.engine_id, 7);
    assert_eq!(&record.console_fingerprint, console.fingerprint());
    let xml = consoles_xml::load(&dir.path().join("consoles.xml")).unwrap();
    assert!(xml.find(console.fingerprint()).unwrap().enabled);
    drop(s); // the console restarts

    // Second connection: no secret, just the certificate.
    let (mut s, _) = console_accepts(&listener, &console).await;
    s.send(Message::Welcome { engine_id: 7 }).await.unwrap();
    assert!(matches!(s.recv(T).await.unwrap(), Message::Ping { .. }));
    drop(s);

    // The console forgot the engine: the stale record is dropped and it pairs again.
    let (mut s, _) = console_accepts(&listener, &console).await;
    s.send(Message::Rejected {
        reason: RejectReason::NotPaired,
        message: "who are you".into(),
    })
    .await
    .unwrap();
    drop(s);
    let (mut s, _) = console_accepts(&listener, &console).await;
    assert!(matches!(
        s.recv(T).await.unwrap(),
        Message::PairRequest { .. }
    ));
    s.send(Message::Paired { engine_id: 8 }).await.unwrap();
    assert!(matches!(s.recv(T).await.unwrap(), Message::Ping { .. }));
    assert_eq!(pairing::load(dir.path()).unwrap().unwrap().engine_id, 8);

    stop.cancel();
    engine.await.unwrap().unwrap();
}

#[tokio::test]
async fn reverse_mode_refuses_an_untrusted_console() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, "s3cret").unwrap();
    let trusted = Identity::generate("trusted").unwrap();
    let impostor = Identity::generate("impostor").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let engine = tokio::spawn(reverse::run(
        context(dir.path(), Some(trusted.fingerprint().clone())),
        reverse::Options {
            console_address: addr.to_string(),
            shared_secret_file: Some(secret_file),
        },
        stop.clone(),
    ));
    let acceptor = TlsAcceptor::from(tls::server_config(&impostor).unwrap());
    let (tcp, _) = listener.accept().await.unwrap();
    let mut s = Session::accept(tcp, &acceptor, T).await.unwrap();
    // The engine hangs up without greeting, let alone sending its secret.
    s.send(Message::Hello {
        role: Role::Console,
        product_version: VERSION.into(),
        name: "impostor".into(),
    })
    .await
    .ok();
    match s.recv(T).await {
        Err(_) => {}
        Ok(m) => panic!("the engine talked to an untrusted console: {m:?}"),
    }
    assert!(pairing::load(dir.path()).unwrap().is_none());
    stop.cancel();
    engine.await.unwrap().unwrap();
}
