//! The session listeners (console 40815, engine 40814) against peers that have no pinned
//! certificate, hold connections open, send huge frames or stop reading.
//!
//! The attacker here is a TLS client with its own self-signed certificate, or a plain TCP
//! client, dialing from another loopback address (127.0.0.2) than the real engines and
//! consoles (127.0.0.1), as a second host on the same network would.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use scan_engine_protocol::{
    Identity, Message, SharedSecret, messages::Role, session::Session, tls,
};
use scan_engine_tests::{TestLogs, free_port};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
    sync::Semaphore,
    task::JoinHandle,
};

use crate::common::{Console, Engine, Mode, eventually, reverse_engine};

const ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const TIMEOUT: Duration = Duration::from_secs(5);

fn logs() -> TestLogs {
    TestLogs::for_current_test()
}

/// A TCP connection to `to` from `from` (any port), optionally with a small receive buffer.
async fn connect_from(from: Ipv4Addr, to: SocketAddr, recv_buffer: Option<u32>) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    socket.bind(SocketAddr::new(IpAddr::V4(from), 0)).unwrap();
    socket.connect(to).await.unwrap()
}

/// A TLS session to `to` from `from` with a certificate of the attacker's own.
async fn stranger_session(from: Ipv4Addr, to: SocketAddr, recv_buffer: Option<u32>) -> Session {
    let id = Identity::generate("stranger").unwrap();
    let tcp = connect_from(from, to, recv_buffer).await;
    Session::dial_over(tcp, tls::client_config(&id).unwrap(), TIMEOUT)
        .await
        .unwrap()
}

/// What the API reports about an engine that a stranger must not be able to change.
fn reported(e: &serde_json::Value) -> (serde_json::Value, serde_json::Value) {
    (e["status"].clone(), e["productVersion"].clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stranger_greeting_with_a_registered_name_and_a_junk_version_changes_nothing() {
    let logs = logs();
    let console = Console::start(&logs, None).await;
    let _engine = reverse_engine(&logs, &console, "victim").await;
    let before = console.wait_status("victim", "active").await;

    // A Hello with the engine's name and a junk version, from a certificate of its own...
    let mut s = stranger_session(ATTACKER, console.engine_listen, None).await;
    s.exchange_hello(Role::Engine, "6.6.6-junk", "victim", TIMEOUT)
        .await
        .unwrap();
    let answer = s.recv(TIMEOUT).await.unwrap();
    assert!(matches!(answer, Message::Incompatible { .. }), "{answer:?}");
    // ...and one with a 20 KB version, written by hand (the codec refuses to send it).
    let mut raw = stranger_session(ATTACKER, console.engine_listen, None)
        .await
        .into_stream();
    let body = format!(
        r#"{{"type":"hello","role":"engine","product_version":"{}","name":"victim"}}"#,
        "9".repeat(20_000)
    );
    let _ = raw.write_all(&(body.len() as u32).to_be_bytes()).await;
    let _ = raw.write_all(body.as_bytes()).await;
    let _ = raw.flush().await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, raw.read_to_end(&mut answer)).await;
    assert!(
        !String::from_utf8_lossy(&answer).contains("99999"),
        "the junk version was echoed back"
    );

    // Nothing the API reports about the engine changed, now or a while later.
    for _ in 0..10 {
        let now = console.engine_named("victim").await.unwrap();
        assert_eq!(reported(&now), reported(&before), "{now}");
        assert!(!now.to_string().contains("6.6.6-junk"), "{now}");
        assert!(!now.to_string().contains("99999"), "{now}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

#[tokio::test(flavor = "multi_thread")]
async fn nearly_complete_large_frames_before_authentication_do_not_grow_the_console() {
    const CONNECTIONS: usize = 128;
    const FRAME: usize = 1024 * 1024 - 64;
    let logs = logs();
    let console = Console::start(&logs, None).await;
    let pid = console.proc.pid().unwrap();
    // Let the console settle, then measure.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = vm_rss_kib(pid);

    // 128 TLS connections from 8 attacker addresses (16 each, so that no per-source limit is
    // what saves the console), each announcing a 1 MiB frame and sending all of it but the end.
    let mut held = Vec::new();
    let chunk = vec![b' '; 64 * 1024];
    for i in 0..CONNECTIONS {
        let from = Ipv4Addr::new(127, 0, 0, 2 + (i / 16) as u8);
        let mut stream = stranger_session(from, console.engine_listen, None)
            .await
            .into_stream();
        let mut sent = stream
            .write_all(&(FRAME as u32).to_be_bytes())
            .await
            .is_ok();
        let mut left = FRAME - 100;
        while sent && left > 0 {
            let n = left.min(chunk.len());
            sent = matches!(
                tokio::time::timeout(Duration::from_secs(2), stream.write_all(&chunk[..n])).await,
                Ok(Ok(()))
            );
            left -= n;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.flush()).await;
        held.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = vm_rss_kib(pid);
    let grown_mib = after.saturating_sub(before) as f64 / 1024.0;
    println!(
        "console VmRSS {before} KiB before, {after} KiB with {CONNECTIONS} connections each \
         holding a nearly complete 1 MiB frame: +{grown_mib:.1} MiB"
    );
    assert!(
        grown_mib < 8.0,
        "the console grew by {grown_mib:.1} MiB under pre-authentication frames"
    );
    // The console still answers.
    console.engines().await;
}

/// Holds up to `n` connections from `from` to `to`, half of them idle and half with a partial
/// TLS ClientHello, opening a new one whenever the listener closes one, until aborted.
fn flood(from: Ipv4Addr, to: SocketAddr, n: usize) -> JoinHandle<()> {
    tokio::spawn(async move {
        let open = Arc::new(Semaphore::new(n));
        let mut k = 0u64;
        loop {
            let Ok(permit) = open.clone().acquire_owned().await else {
                return;
            };
            k += 1;
            let half_sent = k.is_multiple_of(2);
            let socket = TcpSocket::new_v4().unwrap();
            if socket.bind(SocketAddr::new(IpAddr::V4(from), 0)).is_err() {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            let Ok(mut tcp) = socket.connect(to).await else {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            };
            tokio::spawn(async move {
                if half_sent {
                    // A TLS record header announcing a 512-byte handshake, and its first bytes.
                    let _ = tcp
                        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03])
                        .await;
                }
                let mut buf = [0u8; 256];
                while let Ok(n) = tcp.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
                // Closed by the listener: reopen after a moment.
                tokio::time::sleep(Duration::from_millis(5)).await;
                drop(permit);
            });
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_idle_and_half_sent_connections_does_not_stop_engines_from_pairing() {
    let logs = logs();
    let console = Console::start(&logs, None).await;

    // Console 40815: more connections than it would ever hold, from one attacker address.
    let attack = flood(ATTACKER, console.engine_listen, 320);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    let _reverse = reverse_engine(&logs, &console, "reverse-under-flood").await;
    console.wait_status("reverse-under-flood", "active").await;
    println!(
        "reverse engine active {:?} after starting it under the flood",
        started.elapsed()
    );
    // The API answers meanwhile.
    assert!(!console.engines().await.is_empty());
    attack.abort();

    // Engine 40814: the same against a standard engine, while its console dials it.
    let port = free_port();
    let _standard = Engine::start(
        &logs,
        "standard-under-flood",
        Mode::Standard {
            port,
            trusted: Some(console.fingerprint().await),
        },
    );
    let engine_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    eventually("the standard engine listens", || async move {
        TcpStream::connect(engine_addr).await.ok().map(|_| ())
    })
    .await;
    let attack = flood(ATTACKER, engine_addr, 100);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    console.add_engine("standard-under-flood", port).await;
    console.wait_status("standard-under-flood", "active").await;
    println!(
        "standard engine active {:?} after adding it under the flood",
        started.elapsed()
    );
    attack.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paired_engine_that_stops_reading_does_not_hang_refreshes() {
    let logs = logs();
    let console = Console::start(&logs, None).await;
    let secret = console.shared_secret().await;

    // A fake engine pairs over a socket with a tiny receive buffer...
    let mut s = stranger_session(Ipv4Addr::LOCALHOST, console.engine_listen, Some(4096)).await;
    s.exchange_hello(
        Role::Engine,
        scan_engine_protocol::version::BUILT_PRODUCT_VERSION,
        "deaf",
        TIMEOUT,
    )
    .await
    .unwrap();
    s.send(Message::PairRequest {
        shared_secret: SharedSecret::new(secret),
    })
    .await
    .unwrap();
    let Message::Paired { engine_id } = s.recv(TIMEOUT).await.unwrap() else {
        panic!("not paired")
    };
    // ...then pings without ever reading a pong, until the console stops taking its pings
    // because it is stuck writing pongs nobody reads.
    s.admit();
    s.set_send_timeout(Duration::from_secs(2));
    let mut seq = 0;
    let flooded = Instant::now();
    loop {
        seq += 1;
        match s.send(Message::Ping { seq }).await {
            Ok(()) => {}
            Err(scan_engine_protocol::Error::WriteTimeout(_)) => break,
            Err(e) => panic!("the console closed the session before it filled up: {e}"),
        }
        assert!(
            flooded.elapsed() < Duration::from_secs(60),
            "the console kept reading {seq} pings"
        );
    }
    println!("the console stopped reading after {seq} pings");
    // It still works through the pings it took; it is stuck once it has been writing pongs
    // for a while without recording any contact.
    let engine_path = format!("/api/3/scan_engines/{engine_id}");
    let mut last = serde_json::Value::Null;
    let mut unchanged = 0;
    while unchanged < 4 {
        assert!(
            flooded.elapsed() < Duration::from_secs(120),
            "the console kept recording the engine's pings"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = console.get(&engine_path).await["lastRefreshedDate"].clone();
        unchanged = if now == last { unchanged + 1 } else { 0 };
        last = now;
    }
    println!(
        "the console was stuck writing {:?} after the flood began",
        flooded.elapsed()
    );

    // Refreshes (more than the session's command queue holds) all answer in bounded time.
    let path = format!("/api/3/scan_engines/{engine_id}/refresh");
    let started = Instant::now();
    let calls: Vec<_> = (0..24)
        .map(|_| {
            let request =
                console.request_waiting(reqwest::Method::POST, &path, Duration::from_secs(60));
            tokio::spawn(async move {
                let status = request.send().await.map(|r| r.status().as_u16());
                (status, Instant::now())
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for call in calls {
        let (status, at) = call.await.unwrap();
        let took = at.duration_since(started);
        slowest = slowest.max(took);
        assert!(
            matches!(status, Ok(200)),
            "a refresh failed after {took:?}: {status:?}"
        );
        assert!(took < Duration::from_secs(30), "a refresh took {took:?}");
    }
    println!("24 refreshes of a stuck engine all answered within {slowest:?}");
    drop(s);
}
