//! The engine's trust list, health port and reverse pinning against hostile peers: many
//! unknown consoles at once (each a real TLS dial with its own certificate), a flood of fresh
//! certificates, a huge `consoles.xml`, an impostor at the console's address, and slow or idle
//! clients on the health port.

use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use scan_engine_protocol::{
    Identity, Message, messages::Role, session::Session, tls, version::BUILT_PRODUCT_VERSION,
};
use scan_engine_tests::{TestLogs, free_port, logs::current_test_name, procs::workspace_bin};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::common::{Console, DEADLINE, Engine, Mode, eventually, secret_file};

const T: Duration = Duration::from_secs(10);
/// What the engine allows to wait for authorization (`scan_engine::trust::MAX_PENDING`).
const MAX_PENDING: usize = scan_engine::trust::MAX_PENDING;

fn logs() -> TestLogs {
    TestLogs::for_current_test()
}

/// Dials the engine as a console with `identity`; returns the engine's answer to the greeting.
/// A dial the engine's admission slots turn away (they are bounded per source, and every test
/// console comes from 127.0.0.1) is tried again for up to 30 s.
async fn dial_as_console(addr: SocketAddr, identity: &Identity, name: &str) -> Option<Message> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(answer) = dial_once(addr, identity, name).await {
            return Some(answer);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn dial_once(addr: SocketAddr, identity: &Identity, name: &str) -> Option<Message> {
    let config = tls::client_config(identity).ok()?;
    let mut session = Session::dial(&addr.to_string(), config, T).await.ok()?;
    session
        .exchange_hello(Role::Console, BUILT_PRODUCT_VERSION, name, T)
        .await
        .ok()?;
    session.recv(T).await.ok()
}

/// Waits until the engine accepts TLS connections on `addr`.
async fn wait_listening(engine: &mut Engine, addr: SocketAddr) {
    engine.proc.wait_for_port(addr, DEADLINE).await;
}

fn identities(n: usize) -> Vec<std::sync::Arc<Identity>> {
    (0..n)
        .map(|i| std::sync::Arc::new(Identity::generate(&format!("console-{i}")).unwrap()))
        .collect()
}

/// Log text without its ANSI colour sequences.
fn without_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_unknown_consoles_and_an_admin_command_never_lose_an_entry() {
    let logs = logs();
    let port = free_port();
    let name = "trust-concurrent";
    // An entry from before, which the administrator enables while consoles dial in.
    let data_dir = logs.path(&format!("{name}-data"));
    std::fs::create_dir_all(&data_dir).unwrap();
    let waiting = Identity::generate("waiting").unwrap();
    std::fs::write(
        data_dir.join("consoles.xml"),
        format!(
            "<consoles>\n  <console id=\"1\" enabled=\"0\" fingerprint=\"{}\"/>\n</consoles>\n",
            waiting.fingerprint()
        ),
    )
    .unwrap();
    let mut engine = Engine::start(
        &logs,
        name,
        Mode::Standard {
            port,
            trusted: None,
        },
    );
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_listening(&mut engine, addr).await;

    let consoles = identities(32);
    let admin = {
        let data_dir = data_dir.clone();
        std::thread::spawn(move || {
            (0..6)
                .map(|i| {
                    let verb = if i % 2 == 0 { "disable" } else { "enable" };
                    std::process::Command::new(workspace_bin("scan-engine"))
                        .args(["consoles", verb, "1", "--data-dir"])
                        .arg(&data_dir)
                        .output()
                        .unwrap()
                })
                .collect::<Vec<_>>()
        })
    };
    let dials: Vec<_> = consoles
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let id = id.clone();
            async move { dial_as_console(addr, &id, &format!("console-{i}")).await }
        })
        .collect();
    let answers = futures_join_all(dials).await;
    for out in admin.join().unwrap() {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for (i, a) in answers.iter().enumerate() {
        assert!(
            matches!(a, Some(Message::PendingAuthorization)),
            "console {i} got {a:?}"
        );
    }
    let xml = engine.consoles_xml();
    let missing: Vec<_> = consoles
        .iter()
        .filter(|id| !xml.contains(id.fingerprint().as_str()))
        .map(|id| id.fingerprint().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "lost {} entries: {missing:?}\n{xml}",
        missing.len()
    );
    // The administrator's last word (enable) holds, and nothing else was enabled.
    let file = scan_engine::consoles_xml::parse(&xml).unwrap();
    assert_eq!(file.entries.len(), consoles.len() + 1);
    assert!(file.find(waiting.fingerprint()).unwrap().enabled);
    assert_eq!(file.entries.iter().filter(|e| e.enabled).count(), 1);
    let ids: std::collections::HashSet<_> = file.entries.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), file.entries.len(), "duplicate ids\n{xml}");
    // No temporary file is left behind.
    let strays: Vec<_> = std::fs::read_dir(&data_dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains("tmp"))
        .collect();
    assert!(strays.is_empty(), "{strays:?}");
    engine.proc.assert_running();
}

/// `futures::future::join_all` without the dependency: all futures on the runtime at once.
async fn futures_join_all<F>(futures: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_pending_cap_holds_under_a_flood_of_distinct_certificates() {
    let logs = logs();
    let port = free_port();
    let trusted = Identity::generate("the-real-console").unwrap();
    let mut engine = Engine::start(
        &logs,
        "trust-flood",
        Mode::Standard {
            port,
            trusted: Some(trusted.fingerprint().to_string()),
        },
    );
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_listening(&mut engine, addr).await;

    // Each dial presents a certificate of its own, as an attacker would.
    let flood = MAX_PENDING * 2 + 20;
    for chunk in 0..flood / 16 + 1 {
        let dials: Vec<_> = (0..16.min(flood - chunk * 16))
            .map(|_| async move {
                let id = Identity::generate("flood").unwrap();
                dial_as_console(addr, &id, "flood").await
            })
            .collect();
        for a in futures_join_all(dials).await {
            assert!(matches!(a, Some(Message::PendingAuthorization)), "{a:?}");
        }
    }
    let file = scan_engine::consoles_xml::parse(&engine.consoles_xml()).unwrap();
    let pending = file.entries.iter().filter(|e| !e.enabled).count();
    assert_eq!(pending, MAX_PENDING);
    assert_eq!(file.entries.len(), MAX_PENDING + 1);
    // The refusals were logged, but not once per refused console.
    let output = engine.output();
    let warnings = count(&output, "unknown console not recorded");
    println!(
        "{} consoles refused, {warnings} warnings logged",
        flood - MAX_PENDING
    );
    assert!((1..=3).contains(&warnings), "{warnings} warnings");
    // The real console still gets in.
    assert!(matches!(
        dial_as_console(addr, &trusted, "real").await,
        Some(Message::Accepted)
    ));
    engine.proc.assert_running();
}

fn write_many_consoles(path: &Path, n: usize) {
    let mut text = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<consoles>\n");
    for i in 0..n {
        text.push_str(&format!(
            "  <console id=\"{}\" enabled=\"{}\" lastAddress=\"10.{}.{}.{}\" port=\"40814\" fingerprint=\"sha256:{:064x}\"/>\n",
            i + 1,
            i % 2,
            i / 65536 % 256,
            i / 256 % 256,
            i % 256,
            i
        ));
    }
    text.push_str("</consoles>\n");
    std::fs::write(path, text).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_thousand_consoles_xml_entries_load_in_well_under_a_second() {
    let logs = logs();
    let name = "trust-large";
    let data_dir = logs.path(&format!("{name}-data"));
    std::fs::create_dir_all(&data_dir).unwrap();
    let path = data_dir.join("consoles.xml");
    write_many_consoles(&path, 20_000);

    let started = Instant::now();
    let loaded = scan_engine::consoles_xml::load(&path).unwrap();
    let took = started.elapsed();
    println!("loaded 20,000 consoles.xml entries in {took:?}");
    assert_eq!(loaded.entries.len(), 20_000);
    assert!(took < Duration::from_secs(2), "{took:?}");

    // The engine itself starts on that file and is ready promptly.
    let port = free_port();
    let started = Instant::now();
    let engine = Engine::start(
        &logs,
        name,
        Mode::Standard {
            port,
            trusted: None,
        },
    );
    let ready = eventually("the engine with 20,000 consoles to be ready", || async {
        (engine.probe("/readyz").await == 200).then_some(())
    });
    tokio::time::timeout(Duration::from_secs(10), ready)
        .await
        .expect("an engine with 20,000 consoles.xml entries is ready within 10 s");
    println!(
        "engine with 20,000 entries ready {:?} after spawning",
        started.elapsed()
    );
    let output = without_colours(&engine.output());
    assert!(output.contains("trusted_consoles=10000"), "{output}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reverse_engine_never_sends_the_secret_to_an_impostor_console() {
    let logs = logs();
    let real = Console::start(&logs, None).await;
    let real_fp = real.fingerprint().await;
    let secret = real.shared_secret().await;
    let file = secret_file(&logs, "secret", &secret);
    // Something else answers at the console's address: another console with its own identity
    // (and its own logs and data).
    let impostor_logs = TestLogs::new(&format!("{}-impostor", current_test_name()));
    let impostor = Console::start(&impostor_logs, None).await;

    let mut engine = Engine::start_with_env(
        &logs,
        "reverse-pinned",
        Mode::Reverse {
            console: impostor.engine_listen,
            secret_file: Some(file.clone()),
        },
        &[("SCAN_ENGINE_TRUSTED_CONSOLE_FINGERPRINT", real_fp.as_str())],
    );
    engine.wait_for_log("not the expected").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let out = engine.output();
    assert!(!out.contains("presenting the shared secret"), "{out}");
    assert!(!out.contains("not pinned"), "{out}");
    assert!(impostor.engines().await.is_empty());
    assert!(!engine.data_dir.join("pairing.json").exists());
    assert!(!impostor.proc.output().contains(&secret));

    // Pointed at the real console, the same engine pairs.
    engine.proc.stop();
    engine.mode = Mode::Reverse {
        console: real.engine_listen,
        secret_file: Some(file),
    };
    engine.restart();
    real.wait_status("reverse-pinned", "active").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reverse_engine_without_a_fingerprint_warns_once_that_its_console_is_not_pinned() {
    let logs = logs();
    let console = Console::start(&logs, None).await;
    let secret = console.shared_secret().await;
    // First towards a closed port, so that the engine retries a few times before pairing.
    let closed: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let file = secret_file(&logs, "secret", &secret);
    let mut engine = Engine::start(
        &logs,
        "reverse-tofu",
        Mode::Reverse {
            console: closed,
            secret_file: Some(file.clone()),
        },
    );
    engine.wait_for_log("retrying in").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    engine.proc.stop();
    assert_eq!(
        count(&engine.output(), "not pinned"),
        1,
        "{}",
        engine.output()
    );
    engine.mode = Mode::Reverse {
        console: console.engine_listen,
        secret_file: Some(file),
    };
    engine.restart();
    console.wait_status("reverse-tofu", "active").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_health_server_drops_slow_and_idle_clients() {
    let logs = logs();
    let port = free_port();
    let mut engine = Engine::start(
        &logs,
        "health-flood",
        Mode::Standard {
            port,
            trusted: None,
        },
    );
    engine.wait_for_log("health endpoints").await;
    let health = engine.health;
    assert_eq!(engine.probe("/healthz").await, 200);

    let started = Instant::now();
    let mut clients = Vec::new();
    // 200 clients that trickle a request head, a byte every 300 ms.
    for _ in 0..200 {
        clients.push(tokio::spawn(async move {
            let Ok(mut s) = tokio::net::TcpStream::connect(health).await else {
                return started.elapsed();
            };
            if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await
                .is_err()
            {
                return started.elapsed();
            }
            let mut buf = [0u8; 256];
            loop {
                tokio::select! {
                    r = s.read(&mut buf) => match r {
                        Ok(0) | Err(_) => return started.elapsed(),
                        Ok(_) => {}
                    },
                    () = tokio::time::sleep(Duration::from_millis(300)) => {
                        if s.write_all(b"a").await.is_err() {
                            return started.elapsed();
                        }
                    }
                }
            }
        }));
    }
    // 50 that connect and say nothing.
    for _ in 0..50 {
        clients.push(tokio::spawn(async move {
            let Ok(mut s) = tokio::net::TcpStream::connect(health).await else {
                return started.elapsed();
            };
            let mut buf = [0u8; 256];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return started.elapsed(),
                    Ok(_) => {}
                }
            }
        }));
    }
    // The probe answers while they are there or just after.
    let probed = eventually("/healthz to answer during the flood", || async {
        (engine.probe("/healthz").await == 200).then(|| started.elapsed())
    })
    .await;
    let mut slowest = Duration::ZERO;
    for c in clients {
        let closed_after = tokio::time::timeout(Duration::from_secs(15), c)
            .await
            .expect("every slow or idle client is closed within 15 s")
            .unwrap();
        slowest = slowest.max(closed_after);
    }
    println!("250 slow/idle clients closed within {slowest:?}; /healthz answered after {probed:?}");
    assert!(slowest < Duration::from_secs(10), "{slowest:?}");
    assert!(probed < Duration::from_secs(10), "{probed:?}");
    assert_eq!(engine.probe("/healthz").await, 200);
    engine.proc.assert_running();
}
