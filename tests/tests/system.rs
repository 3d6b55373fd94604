//! System tests: a real `security-console` and real `scan-engine`s as processes on loopback,
//! driven through the console's REST API (docs/contracts.md §4).
//!
//! Build the binaries first: `cargo build -p security-console -p scan-engine`, then
//! `cargo test -p scan-engine-tests --test system -- --test-threads=1`.

mod common;

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    time::{Duration, Instant},
};

use common::{Console, Engine, Mode, eventually, reverse_engine, secret_file};
use scan_engine_tests::{TestLogs, free_port};
use serde_json::{Value, json};

fn logs() -> TestLogs {
    TestLogs::for_current_test()
}

#[tokio::test(flavor = "multi_thread")]
async fn reverse_pairing_reaches_active() {
    let logs = logs();
    let console = Console::start(&logs, None).await;
    let mut engine = reverse_engine(&logs, &console, "reverse-a").await;
    let e = console.wait_status("reverse-a", "active").await;
    assert_eq!(e["direction"], "engine-to-console", "{e}");
    assert_eq!(e["port"], 0, "{e}");
    assert!(e["productVersion"].is_string(), "{e}");

    // The engine remembers the pairing and records the console as enabled.
    let pairing: Value =
        serde_json::from_slice(&std::fs::read(engine.data_dir.join("pairing.json")).unwrap())
            .unwrap();
    assert_eq!(pairing["engine_id"], e["id"]);
    let fp = console.fingerprint().await;
    assert_eq!(pairing["console_fingerprint"], fp.as_str());
    let xml = engine.consoles_xml();
    assert!(xml.contains(&fp) && xml.contains("enabled=\"1\""), "{xml}");
    // The secret never appears in the engine's log.
    let secret = console.shared_secret().await;
    assert!(!engine.output().contains(&secret));

    // Its probes say it is alive and ready (it holds an admitted session).
    assert_eq!(engine.probe("/healthz").await, 200);
    assert_eq!(engine.probe("/readyz").await, 200);

    // Restarted without a secret file, it reconnects by certificate alone, same id.
    engine.mode = Mode::Reverse {
        console: console.engine_listen,
        secret_file: None,
    };
    engine.proc.kill();
    engine.restart();
    engine.wait_for_log("admitted by the console").await;
    let again = console.wait_status("reverse-a", "active").await;
    assert_eq!(again["id"], e["id"]);
    assert_eq!(console.engines().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn standard_pairing_pending_until_consoles_xml_enables_the_console() {
    let logs = logs();
    let console = Console::start(&logs, None).await;
    let port = free_port();
    let mut engine = Engine::start(
        &logs,
        "standard-a",
        Mode::Standard {
            port,
            trusted: None,
        },
    );
    engine
        .proc
        .wait_for_port(([127, 0, 0, 1], port).into(), common::DEADLINE)
        .await;
    let id = console.add_engine("standard-a", port).await;
    let e = console
        .wait_status("standard-a", "pending-authorization")
        .await;
    assert_eq!(e["direction"], "console-to-engine", "{e}");

    // The engine wrote the console into consoles.xml, disabled.
    let fp = console.fingerprint().await;
    let xml = engine.consoles_xml();
    assert!(xml.contains(&fp), "{xml}");
    assert!(xml.contains("enabled=\"0\""), "{xml}");
    assert!(xml.contains("lastAddress=\"127.0.0.1\""), "{xml}");
    assert!(xml.contains("BEGIN CERTIFICATE"), "{xml}");

    // An admin enables it and restarts the engine, as in the seeds. SIGTERM stops it cleanly.
    let status = engine.proc.stop().expect("exit status");
    assert!(status.success(), "engine exited with {status}");
    assert!(engine.output().contains("scan engine stopped"));
    let path = engine.data_dir.join("consoles.xml");
    std::fs::write(&path, xml.replace("enabled=\"0\"", "enabled=\"1\"")).unwrap();
    engine.restart();
    let e = console.wait_status("standard-a", "active").await;
    assert_eq!(e["id"], id);
}

#[tokio::test(flavor = "multi_thread")]
async fn standard_pairing_with_a_trusted_fingerprint_is_active_directly() {
    let logs = logs();
    let console = Console::start(&logs, None).await;
    let fp = console.fingerprint().await;
    let port = free_port();
    let mut engine = Engine::start(
        &logs,
        "standard-trusted",
        Mode::Standard {
            port,
            trusted: Some(fp.clone()),
        },
    );
    engine
        .proc
        .wait_for_port(([127, 0, 0, 1], port).into(), common::DEADLINE)
        .await;
    // The engine enabled the console itself before it ever connected.
    let xml = engine.consoles_xml();
    assert!(xml.contains(&fp) && xml.contains("enabled=\"1\""), "{xml}");
    console.add_engine("standard-trusted", port).await;
    let deadline = Instant::now() + common::DEADLINE;
    loop {
        let e = console.engine_named("standard-trusted").await.unwrap();
        assert_ne!(e["status"], "pending-authorization", "{e}");
        if e["status"] == "active" {
            break;
        }
        assert!(Instant::now() < deadline, "never active: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_secret_is_refused_and_nothing_is_registered() {
    let logs = logs();
    let console = Console::start(&logs, None).await;
    let real = console.shared_secret().await;
    let file = secret_file(&logs, "wrong-secret", "not-the-console-secret");
    let mut engine = Engine::start(
        &logs,
        "wrong-secret",
        Mode::Reverse {
            console: console.engine_listen,
            secret_file: Some(file),
        },
    );
    engine
        .wait_for_log("rejected by the console: the shared secret is not valid")
        .await;
    assert!(console.engines().await.is_empty());
    assert!(!engine.data_dir.join("pairing.json").exists());
    assert!(!engine.output().contains("not-the-console-secret"));
    assert!(!engine.output().contains(&real));
    engine.proc.assert_running();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_secret_is_refused() {
    let logs = logs();
    let console = Console::start(&logs, Some("2s")).await;
    let secret = console.shared_secret().await;
    // Wait until the console itself says the secret is gone.
    eventually("shared secret expiry", || async {
        let (status, _) = console
            .call(
                reqwest::Method::GET,
                "/api/3/scan_engines/shared_secret",
                None,
            )
            .await;
        (status == 404).then_some(())
    })
    .await;
    let file = secret_file(&logs, "expired-secret", &secret);
    let mut engine = Engine::start(
        &logs,
        "expired",
        Mode::Reverse {
            console: console.engine_listen,
            secret_file: Some(file),
        },
    );
    engine.wait_for_log("rejected by the console").await;
    let out = engine.output();
    assert!(
        out.contains("expired") || out.contains("no valid shared secret"),
        "{out}"
    );
    assert!(console.engines().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mismatched_version_is_incompatible() {
    let logs = logs();
    let console = Console::start(&logs, None).await;
    let fp = console.fingerprint().await;
    let port = free_port();
    let mut engine = Engine::start_with_env(
        &logs,
        "old-engine",
        Mode::Standard {
            port,
            trusted: Some(fp),
        },
        &[("SCAN_ENGINE_TEST_ONLY_PRODUCT_VERSION", "9.9.9")],
    );
    engine.wait_for_log("for tests only").await;
    console.add_engine("old-engine", port).await;
    let e = console
        .wait_status("old-engine", "incompatible-version")
        .await;
    assert_eq!(e["productVersion"], "9.9.9", "{e}");
    engine.proc.assert_running();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_engine_is_not_responding_and_active_again_after_restart() {
    let logs = logs();
    let console = Console::start(&logs, None).await;
    let fp = console.fingerprint().await;
    let mut reverse = reverse_engine(&logs, &console, "reverse-k").await;
    let port = free_port();
    let mut standard = Engine::start(
        &logs,
        "standard-k",
        Mode::Standard {
            port,
            trusted: Some(fp),
        },
    );
    standard
        .proc
        .wait_for_port(([127, 0, 0, 1], port).into(), common::DEADLINE)
        .await;
    console.add_engine("standard-k", port).await;
    let r = console.wait_status("reverse-k", "active").await;
    let s = console.wait_status("standard-k", "active").await;

    reverse.proc.kill();
    standard.proc.kill();
    console.wait_status("reverse-k", "not-responding").await;
    console.wait_status("standard-k", "not-responding").await;

    reverse.restart();
    standard.restart();
    assert_eq!(
        console.wait_status("reverse-k", "active").await["id"],
        r["id"]
    );
    assert_eq!(
        console.wait_status("standard-k", "active").await["id"],
        s["id"]
    );
    assert_eq!(console.engines().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_console_gets_its_engines_back_without_re_pairing() {
    let logs = logs();
    let console = Console::start(&logs, None).await;
    let fp = console.fingerprint().await;
    let mut reverse = reverse_engine(&logs, &console, "reverse-c").await;
    let port = free_port();
    let standard = Engine::start(
        &logs,
        "standard-c",
        Mode::Standard {
            port,
            trusted: Some(fp.clone()),
        },
    );
    console.add_engine("standard-c", port).await;
    let r = console.wait_status("reverse-c", "active").await;
    let s = console.wait_status("standard-c", "active").await;
    let paired_before = reverse.output().matches("paired with the console").count();

    // Revoke the secret: reconnecting must not need it.
    console
        .call(
            reqwest::Method::DELETE,
            "/api/3/scan_engines/shared_secret",
            None,
        )
        .await;
    let console = console.restart().await;
    assert_eq!(console.fingerprint().await, fp);
    assert_eq!(
        console.wait_status("reverse-c", "active").await["id"],
        r["id"]
    );
    assert_eq!(
        console.wait_status("standard-c", "active").await["id"],
        s["id"]
    );
    assert_eq!(console.engines().await.len(), 2);
    assert_eq!(
        reverse.output().matches("paired with the console").count(),
        paired_before,
        "the reverse engine paired again instead of reconnecting by certificate"
    );
    reverse.wait_for_log("admitted by the console").await;
    drop(standard);
}

/// A TCP listener on 127.0.0.1 that greets each client with `banner` and keeps the connection
/// open briefly; runs on a thread for the rest of the test process.
fn banner_listener(banner: Option<&'static str>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                if let Some(b) = banner {
                    let _ = s.write_all(b.as_bytes());
                }
                let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
                let mut buf = [0u8; 64];
                let _ = s.read(&mut buf);
            });
        }
    });
    port
}

fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_discovery_scan_finds_exactly_the_open_ports() {
    let logs = logs();
    let console = Console::start(&logs, None).await;
    let _engine = reverse_engine(&logs, &console, "scanner").await;
    let e = console.wait_status("scanner", "active").await;

    let ssh = banner_listener(Some("SSH-2.0-OpenSSH_9.6\r\n"));
    let http = banner_listener(None);
    let smtp = banner_listener(Some("220 mail.example ESMTP\r\n"));
    let closed = [closed_port(), closed_port()];
    let ports = vec![ssh, http, smtp, closed[0], closed[1]];

    let site = console
        .post(
            "/api/3/sites",
            json!({
                "name": "loopback",
                "engineId": e["id"],
                "scan": {"assets": {"includedTargets": {"addresses": ["127.0.0.1"]}}},
                "ports": ports,
                "timeoutMs": 1000,
            }),
        )
        .await;
    let site_id = site["id"].as_u64().expect("site id");
    let scan = console
        .post(&format!("/api/3/sites/{site_id}/scans"), json!({}))
        .await;
    let scan_id = scan["id"].as_u64().expect("scan id");
    let done = eventually("the scan to finish", || async {
        let s = console.get(&format!("/api/3/scans/{scan_id}")).await;
        match s["status"].as_str() {
            Some("finished") => Some(s),
            Some("error") => panic!("scan failed: {s}"),
            _ => None,
        }
    })
    .await;
    assert_eq!(
        done["progress"]["done"], done["progress"]["total"],
        "{done}"
    );
    assert_eq!(done["progress"]["total"], 5, "{done}");

    let assets = console.get("/api/3/assets?size=500").await;
    let resources = assets["resources"].as_array().cloned().unwrap_or_default();
    let asset = resources
        .iter()
        .find(|a| a["ip"] == "127.0.0.1")
        .unwrap_or_else(|| panic!("no asset 127.0.0.1 in {assets}"));
    let services: BTreeMap<u64, Option<String>> = asset["services"]
        .as_array()
        .unwrap_or_else(|| panic!("no services in {asset}"))
        .iter()
        .map(|s| {
            assert_eq!(s["protocol"], "tcp", "{s}");
            (
                s["port"].as_u64().unwrap(),
                s["banner"].as_str().map(str::to_owned),
            )
        })
        .collect();
    let want: BTreeMap<u64, Option<String>> = [
        (ssh as u64, Some("SSH-2.0-OpenSSH_9.6".to_owned())),
        (http as u64, None),
        (smtp as u64, Some("220 mail.example ESMTP".to_owned())),
    ]
    .into_iter()
    .collect();
    assert_eq!(services, want, "{asset}");
}

/// Sends garbage of several kinds to `addr`; each connection on its own thread.
fn garbage_clients(addr: std::net::SocketAddr) -> Vec<std::thread::JoinHandle<()>> {
    let payloads: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        vec![0xff; 4096],
        // A TLS-looking record header announcing far too much.
        vec![0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0x00],
        // A frame length of 4 GiB, as if the session had started.
        vec![0xff, 0xff, 0xff, 0xff, b'{'],
        Vec::new(),
    ];
    payloads
        .into_iter()
        .map(|p| {
            std::thread::spawn(move || {
                if let Ok(mut s) = TcpStream::connect(addr) {
                    let _ = s.write_all(&p);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut buf = [0u8; 256];
                    let _ = s.read(&mut buf);
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_clients_do_not_disturb_active_engines() {
    let logs = logs();
    let mut console = Console::start(&logs, None).await;
    let fp = console.fingerprint().await;
    let mut reverse = reverse_engine(&logs, &console, "reverse-g").await;
    let port = free_port();
    let mut standard = Engine::start(
        &logs,
        "standard-g",
        Mode::Standard {
            port,
            trusted: Some(fp),
        },
    );
    console.add_engine("standard-g", port).await;
    console.wait_status("reverse-g", "active").await;
    console.wait_status("standard-g", "active").await;

    let engine_addr = ([127, 0, 0, 1], port).into();
    // A slow client that connects and says nothing.
    let _silent = TcpStream::connect(engine_addr).unwrap();
    let mut threads = garbage_clients(engine_addr);
    threads.extend(garbage_clients(console.engine_listen));
    for t in threads {
        t.join().unwrap();
    }
    // Both stay active for several ping intervals, and the engine said why it dropped them.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        for name in ["reverse-g", "standard-g"] {
            let e = console.engine_named(name).await.unwrap();
            assert_eq!(e["status"], "active", "{e}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    standard.wait_for_log("dropped connection").await;
    standard.proc.assert_running();
    reverse.proc.assert_running();
    console.proc.assert_running();
}
