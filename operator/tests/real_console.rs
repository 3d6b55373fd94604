//! The console API client against the project's real `security-console` process, over HTTPS
//! with a serving certificate from the operator's own generator (as for managed consoles).
//!
//! Needs the console binary: `SECURITY_CONSOLE_BIN`, or `target/debug/security-console` after
//! `cargo build -p security-console`. Without it the test says so and passes without checking.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use scan_engine_operator::console_api::http::{HttpConsoleApi, HttpSettings, RetryPolicy};
use scan_engine_operator::console_api::{ConsoleApi, ConsoleConnection, NewEngine, SecretString};
use scan_engine_operator::controller::console::secrets::generate_tls;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn console_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SECURITY_CONSOLE_BIN") {
        return Some(PathBuf::from(p));
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/security-console");
    p.exists().then_some(p)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

#[tokio::test]
async fn client_drives_the_real_console() {
    let Some(bin) = console_binary() else {
        eprintln!("skipped: no security-console binary (set SECURITY_CONSOLE_BIN or build it)");
        return;
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let tls = generate_tls("real", vec!["localhost".into()]).unwrap_or_else(|e| panic!("{e}"));
    let write = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap_or_else(|e| panic!("write {name}: {e}"));
        p
    };
    let cert = write("tls.crt", &tls.cert);
    let key = write("tls.key", &tls.key);
    let password = write("password", "correct horse");
    let (api_port, engine_port) = (free_port(), free_port());
    let child = Command::new(&bin)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--api-listen")
        .arg(format!("127.0.0.1:{api_port}"))
        .arg("--engine-listen")
        .arg(format!("127.0.0.1:{engine_port}"))
        .arg("--api-tls-cert-file")
        .arg(&cert)
        .arg("--api-tls-key-file")
        .arg(&key)
        .arg("--admin-password-file")
        .arg(&password)
        .arg("--shared-secret-ttl")
        .arg("2m")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let _guard = Killed(child);

    let conn = ConsoleConnection {
        console: "test/real".into(),
        url: format!("https://localhost:{api_port}"),
        username: "admin".into(),
        password: SecretString::new("correct horse"),
        ca_bundle: Some(tls.ca_cert.clone().into_bytes()),
        insecure_skip_tls_verify: false,
    };
    let settings = HttpSettings {
        retry: RetryPolicy {
            attempts: 1,
            base_delay: Duration::ZERO,
        },
        ..HttpSettings::default()
    };
    let api = HttpConsoleApi::new(conn.clone(), settings).unwrap_or_else(|e| panic!("{e}"));

    let mut info = None;
    for _ in 0..100 {
        match api.info().await {
            Ok(i) => {
                info = Some(i);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let info = info.unwrap_or_else(|| panic!("the console API never answered"));
    assert!(info.version.semantic.is_some());
    let fp = info
        .engine_communication
        .and_then(|e| e.certificate_fingerprint)
        .unwrap_or_default();
    assert!(fp.starts_with("sha256:"), "{fp}");

    // Shared secret lifecycle.
    let secret = api
        .create_shared_secret()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!secret.expose().is_empty());
    let ttl = api
        .shared_secret_ttl()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(ttl.is_some_and(|t| t <= 120), "{ttl:?}");
    let current = api.shared_secret().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        current.as_ref().map(SecretString::expose),
        Some(secret.expose())
    );
    api.revoke_shared_secret()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(api.shared_secret_ttl().await.ok().flatten(), None);

    // Engine registration, idempotence and deletion.
    let new = NewEngine {
        name: "edge.test".into(),
        address: "127.0.0.1".into(),
        port: i32::from(free_port()),
    };
    let id = api
        .create_engine(&new)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let again = api.create_engine(&new).await.err();
    assert_eq!(again.and_then(|e| e.status_code()), Some(409));
    let listed = api.list_engines().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(listed.iter().any(|e| e.id == id && e.name == "edge.test"));
    let engine = api.get_engine(id).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        engine.and_then(|e| e.direction).as_deref(),
        Some("console-to-engine")
    );
    let refreshed = api
        .refresh_engine(id)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(refreshed.id, id);
    api.delete_engine(id)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(api.get_engine(id).await.ok().flatten(), None);
    // A second delete answers 404; confirmed gone by a GET, so it counts as deleted.
    api.delete_engine(id)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // Wrong password: the error names console, URL and call, and not the password.
    let bad = ConsoleConnection {
        password: SecretString::new("wrong"),
        ..conn
    };
    let bad = HttpConsoleApi::new(bad, settings).unwrap_or_else(|e| panic!("{e}"));
    let err = bad
        .info()
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("test/real") && err.contains("HTTP 401") && !err.contains("wrong"),
        "{err}"
    );
}
