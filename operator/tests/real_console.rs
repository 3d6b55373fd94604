//! The console API client against the project's real `security-console` process, over HTTPS
//! with a serving certificate from the operator's own generator (as for managed consoles).
//!
//! A second test runs `scan-engine` processes with exactly the environment the operator writes
//! into engine pods and checks that they pair in both directions.
//!
//! Needs the binaries: `SECURITY_CONSOLE_BIN` / `SCAN_ENGINE_BIN`, or `target/debug/…` after
//! `cargo build -p security-console -p scan-engine`. Without them the tests say so and pass
//! without checking.

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

/// A workspace binary these tests drive: `<NAME>_BIN` when set, else the debug build in the
/// workspace target directory. A missing binary fails the test with the command that builds it
/// (`cargo xtask test` builds them before running the unit tier): these tests never skip.
fn workspace_binary(name: &str, env_override: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env_override) {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let p = target.join("debug").join(name);
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo build -p security-console -p scan-engine` \
         (or set {env_override})",
        p.display()
    );
    p
}

fn console_binary() -> PathBuf {
    workspace_binary("security-console", "SECURITY_CONSOLE_BIN")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

#[tokio::test]
async fn client_drives_the_real_console() {
    let bin = console_binary();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (_console, api, _, url) = start_console(&bin, dir.path()).await;
    let info = api.info().await.unwrap_or_else(|e| panic!("{e}"));
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
        console: "test/real".into(),
        url,
        username: "admin".into(),
        password: SecretString::new("wrong"),
        ca_bundle: None,
        insecure_skip_tls_verify: true,
    };
    let bad = HttpConsoleApi::new(bad, HttpSettings::default()).unwrap_or_else(|e| panic!("{e}"));
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

fn engine_binary() -> PathBuf {
    workspace_binary("scan-engine", "SCAN_ENGINE_BIN")
}

/// Starts a console; returns its guard, a client, its engine listener address and API URL.
async fn start_console(
    bin: &PathBuf,
    dir: &std::path::Path,
) -> (Killed, HttpConsoleApi, String, String) {
    let tls = generate_tls("real", vec!["localhost".into()]).unwrap_or_else(|e| panic!("{e}"));
    let write = |name: &str, body: &str| {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap_or_else(|e| panic!("write {name}: {e}"));
        p
    };
    let cert = write("tls.crt", &tls.cert);
    let key = write("tls.key", &tls.key);
    let password = write("password", "correct horse");
    let (api_port, engine_port) = (free_port(), free_port());
    let guard = Command::new(bin)
        .args([
            "--api-listen",
            &format!("127.0.0.1:{api_port}"),
            "--engine-listen",
            &format!("127.0.0.1:{engine_port}"),
        ])
        .arg("--data-dir")
        .arg(dir.join("console-data"))
        .arg("--api-tls-cert-file")
        .arg(&cert)
        .arg("--api-tls-key-file")
        .arg(&key)
        .arg("--admin-password-file")
        .arg(&password)
        .args(["--ping-interval", "1s", "--shared-secret-ttl", "2m"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let guard = Killed(guard);
    let conn = ConsoleConnection {
        console: "test/real".into(),
        url: format!("https://localhost:{api_port}"),
        username: "admin".into(),
        password: SecretString::new("correct horse"),
        ca_bundle: Some(tls.ca_cert.into_bytes()),
        insecure_skip_tls_verify: false,
    };
    let settings = HttpSettings {
        retry: RetryPolicy {
            attempts: 1,
            base_delay: Duration::ZERO,
        },
        ..HttpSettings::default()
    };
    let api = HttpConsoleApi::new(conn, settings).unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..100 {
        if api.info().await.is_ok() {
            return (
                guard,
                api,
                format!("127.0.0.1:{engine_port}"),
                format!("https://localhost:{api_port}"),
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the console API never answered");
}

/// Starts `scan-engine` with the environment the operator builds for `engine`.
fn start_engine(
    bin: &PathBuf,
    dir: &std::path::Path,
    engine: &scan_engine_operator::crd::ScanEngine,
    console: &scan_engine_operator::controller::scan_engine::build::ConsoleSide,
) -> Killed {
    use scan_engine_operator::controller::scan_engine::build::{Inputs, config};
    let inputs = Inputs {
        engine,
        name: engine.metadata.name.as_deref().unwrap_or_default(),
        namespace: "test",
        communication: engine.spec.communication,
        console,
        owner: Default::default(),
        default_version: scan_engine_operator::VERSION,
    };
    let mut cmd = Command::new(bin);
    for var in config::environment(&inputs) {
        let value = var.value.unwrap_or_default();
        // Paths and listeners of a pod, moved to this test's directory and free ports.
        let value = match var.name.as_str() {
            "SCAN_ENGINE_DATA_DIR" => dir.join("engine-data").display().to_string(),
            "SCAN_ENGINE_SHARED_SECRET_FILE" => dir.join("shared-secret").display().to_string(),
            "SCAN_ENGINE_HEALTH_LISTEN" => format!("127.0.0.1:{}", free_port()),
            "SCAN_ENGINE_LISTEN" => format!("127.0.0.1:{}", engine.spec.port),
            _ => value,
        };
        cmd.env(var.name, value);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    Killed(child)
}

async fn wait_for_state(
    api: &HttpConsoleApi,
    name: &str,
    status: &str,
) -> scan_engine_operator::console_api::Engine {
    let mut last = None;
    for _ in 0..150 {
        if let Ok(Some(e)) = scan_engine_operator::console_api::find_engine_by_name(api, name).await
        {
            if e.status.as_deref() == Some(status) {
                return e;
            }
            last = Some(e);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("engine {name} never became {status}; last seen: {last:?}");
}

#[tokio::test]
async fn engines_configured_by_the_operator_pair_in_both_directions() {
    use scan_engine_operator::controller::scan_engine::build::ConsoleSide;
    use scan_engine_operator::crd::scan_engine::{Authorization, ConsoleRef};
    use scan_engine_operator::crd::{Communication, ScanEngine, ScanEngineSpec};

    let (console_bin, engine_bin) = (console_binary(), engine_binary());
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let (_console, api, listener, _) = start_console(&console_bin, dir.path()).await;
    let info = api.info().await.unwrap_or_else(|e| panic!("{e}"));
    let fingerprint = info
        .engine_communication
        .and_then(|e| e.certificate_fingerprint);

    let spec = |communication, port| ScanEngineSpec {
        console_ref: ConsoleRef {
            name: "real".into(),
        },
        communication,
        port,
        image: None,
        version: None,
        resources: None,
        storage: None,
        node_selector: None,
        tolerations: None,
        affinity: None,
        authorization: Authorization::Automatic,
        advertised_address: None,
        service_type: None,
        image_pull_secrets: None,
        priority_class_name: None,
        pod_labels: None,
        pod_annotations: None,
        env: None,
    };

    // Reverse: the engine dials the console with the shared secret the operator stores.
    let secret = api
        .create_shared_secret()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let reverse_dir = dir.path().join("reverse");
    std::fs::create_dir_all(&reverse_dir).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(reverse_dir.join("shared-secret"), secret.expose())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut reverse = ScanEngine::new("reverse", spec(Communication::EngineToConsole, 40814));
    reverse.metadata.namespace = Some("test".into());
    let side = ConsoleSide {
        name: "real".into(),
        managed: false,
        engine_listener: Some(listener.clone()),
        shared_secret_name: Some("real-console-shared-secret".into()),
        fingerprint: None,
        source_cidrs: vec![],
    };
    let _reverse = start_engine(&engine_bin, &reverse_dir, &reverse, &side);
    let paired = wait_for_state(&api, "reverse.test", "active").await;
    assert_eq!(paired.direction.as_deref(), Some("engine-to-console"));

    // Standard with Automatic authorization: the operator registers it; the engine trusts the
    // console by the fingerprint the operator passes.
    let port = i32::from(free_port());
    let standard_dir = dir.path().join("standard");
    std::fs::create_dir_all(&standard_dir).unwrap_or_else(|e| panic!("{e}"));
    let mut standard = ScanEngine::new("standard", spec(Communication::ConsoleToEngine, port));
    standard.metadata.namespace = Some("test".into());
    let side = ConsoleSide {
        fingerprint: fingerprint.clone(),
        shared_secret_name: None,
        ..side
    };
    let _standard = start_engine(&engine_bin, &standard_dir, &standard, &side);
    let id = api
        .create_engine(&NewEngine {
            name: "standard.test".into(),
            address: "127.0.0.1".into(),
            port,
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let active = wait_for_state(&api, "standard.test", "active").await;
    assert_eq!(active.id, id);
    assert_eq!(active.direction.as_deref(), Some("console-to-engine"));
}
