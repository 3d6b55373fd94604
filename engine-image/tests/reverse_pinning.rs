//! A reverse engine against a fake console that records every byte it receives inside TLS:
//! with the console's fingerprint pinned, an impostor at the console's address gets nothing
//! (above all not the shared secret); without it, the first pairing trusts whoever answers.

use std::{
    path::Path,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use scan_engine::{Context, consoles_xml, pairing, reverse, trust::TrustStore};
use scan_engine_protocol::{Fingerprint, Identity, Message, messages::Role, tls};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

const VERSION: &str = "0.1.0";
const SECRET: &str = "a-shared-secret-only-the-real-console-knows";

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
        max_scan_concurrency: 4,
        ping_interval: Duration::from_millis(200),
        ready: AtomicBool::new(false),
    })
}

fn frame(message: &Message) -> Vec<u8> {
    let json = serde_json::to_vec(message).unwrap();
    let mut out = u32::try_from(json.len()).unwrap().to_be_bytes().to_vec();
    out.extend(json);
    out
}

/// Accepts `connections` connections as `console`, greets each like a console would and records
/// everything the engine sends until it hangs up (or 3 s pass).
async fn recording_console(
    listener: &TcpListener,
    console: &Identity,
    connections: usize,
) -> Vec<u8> {
    let acceptor = TlsAcceptor::from(tls::server_config(console).unwrap());
    let hello = frame(&Message::Hello {
        role: Role::Console,
        product_version: VERSION.into(),
        name: "console".into(),
    });
    let mut received = Vec::new();
    for _ in 0..connections {
        let (tcp, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
            .await
            .expect("the engine dials")
            .unwrap();
        let Ok(mut tls) = acceptor.accept(tcp).await else {
            continue;
        };
        let _ = tls.write_all(&hello).await;
        let mut buf = [0u8; 4096];
        let until = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            match tokio::time::timeout_at(until, tls.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => received.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
    }
    received
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

async fn engine_against(
    dir: &Path,
    trusted: Option<Fingerprint>,
    listener: &TcpListener,
) -> (
    tokio::task::JoinHandle<anyhow::Result<()>>,
    CancellationToken,
) {
    let secret_file = dir.join("secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let stop = CancellationToken::new();
    let engine = tokio::spawn(reverse::run(
        context(dir, trusted),
        reverse::Options {
            console_address: listener.local_addr().unwrap().to_string(),
            shared_secret_file: Some(secret_file),
        },
        stop.clone(),
    ));
    (engine, stop)
}

#[tokio::test]
async fn an_impostor_at_the_console_address_never_receives_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let real = Identity::generate("console").unwrap();
    let impostor = Identity::generate("console").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (engine, stop) =
        engine_against(dir.path(), Some(real.fingerprint().clone()), &listener).await;

    // Three dials (the engine retries): not one byte of application data, let alone the secret.
    let received = recording_console(&listener, &impostor, 3).await;
    assert!(
        !contains(&received, SECRET),
        "the impostor received the secret"
    );
    assert!(
        received.is_empty(),
        "the engine talked to an impostor: {}",
        String::from_utf8_lossy(&received)
    );
    assert!(pairing::load(dir.path()).unwrap().is_none());
    stop.cancel();
    engine.await.unwrap().unwrap();
}

#[tokio::test]
async fn without_a_pinned_fingerprint_the_first_pairing_trusts_whoever_answers() {
    // What the pin protects against: the same fake console, with no fingerprint given, is sent
    // the secret (this also shows the recorder sees the plaintext).
    let dir = tempfile::tempdir().unwrap();
    let impostor = Identity::generate("console").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (engine, stop) = engine_against(dir.path(), None, &listener).await;
    let received = recording_console(&listener, &impostor, 1).await;
    assert!(contains(&received, SECRET));
    stop.cancel();
    engine.await.unwrap().unwrap();
}
