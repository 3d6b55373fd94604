use std::collections::BTreeMap;

use scan_engine_protocol::{
    Message,
    messages::{ScanJob, ScanOutcome},
};
use tokio::{io::AsyncWriteExt as _, net::TcpListener, sync::mpsc};

use super::*;

/// Opens a listener on 127.0.0.1 that greets every client with `banner` (if any).
async fn listener(banner: Option<&'static [u8]>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            if let Some(b) = banner {
                let _ = s.write_all(b).await;
            }
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                drop(s);
            });
        }
    });
    port
}

/// A port that nothing listens on.
async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

async fn run(job: ScanJob, engine_limit: u32) -> Vec<Message> {
    let (tx, mut rx) = mpsc::channel(16);
    let task = tokio::spawn(run_job(job, engine_limit, tx));
    let mut out = Vec::new();
    while let Some(m) = rx.recv().await {
        out.push(m);
    }
    task.await.unwrap();
    out
}

fn job(targets: &[&str], ports: Vec<u16>) -> ScanJob {
    ScanJob {
        scan_id: 42,
        targets: targets.iter().map(|s| s.to_string()).collect(),
        ports,
        connect_timeout_ms: 1000,
        banner_timeout_ms: 500,
        max_concurrency: 8,
    }
}

#[tokio::test]
async fn finds_exactly_the_open_ports_with_their_banners() {
    let ssh = listener(Some(b"SSH-2.0-OpenSSH_9.6\r\n")).await;
    let smtp = listener(Some(b"220 mail ESMTP \x00\xff\n")).await;
    let silent = listener(None).await;
    let mut closed = Vec::new();
    for _ in 0..5 {
        closed.push(closed_port().await);
    }
    let mut ports = vec![ssh, smtp, silent];
    ports.extend(&closed);
    let messages = run(job(&["127.0.0.1"], ports.clone()), 2).await;

    let findings: BTreeMap<u16, Option<String>> = messages
        .iter()
        .filter_map(|m| match m {
            Message::ScanFinding {
                scan_id: 42,
                finding,
            } => {
                assert_eq!(finding.address, "127.0.0.1");
                Some((finding.port, finding.banner.clone()))
            }
            _ => None,
        })
        .collect();
    let want: BTreeMap<u16, Option<String>> = [
        (ssh, Some("SSH-2.0-OpenSSH_9.6".to_owned())),
        (smtp, Some("220 mail ESMTP \u{0}\u{fffd}".to_owned())),
        (silent, None),
    ]
    .into_iter()
    .collect();
    assert_eq!(findings, want);

    let progress: Vec<(u64, u64)> = messages
        .iter()
        .filter_map(|m| match m {
            Message::ScanProgress { done, total, .. } => Some((*done, *total)),
            _ => None,
        })
        .collect();
    assert_eq!(progress.first(), Some(&(0, ports.len() as u64)));
    assert_eq!(
        progress.last(),
        Some(&(ports.len() as u64, ports.len() as u64))
    );
    match messages.last().unwrap() {
        Message::ScanFinished {
            scan_id: 42,
            outcome: ScanOutcome::Finished,
            message,
        } => assert!(message.contains("3 open"), "{message}"),
        other => panic!("last message {other:?}"),
    }
}

#[tokio::test]
async fn invalid_jobs_end_in_an_error_outcome() {
    for (targets, ports) in [
        (vec!["10.0.0.0/8"], vec![22]),
        (vec!["not a host!"], vec![22]),
        (vec!["127.0.0.1"], vec![]),
        (vec![], vec![22]),
    ] {
        let messages = run(job(&targets, ports), 4).await;
        assert!(
            matches!(
                messages.as_slice(),
                [Message::ScanFinished {
                    outcome: ScanOutcome::Error,
                    ..
                }]
            ),
            "{targets:?}: {messages:?}"
        );
    }
}

#[tokio::test]
async fn concurrency_is_bounded_by_the_engine_and_the_job() {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };
    // A listener that counts connections held open at the same time.
    let l = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let current = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    {
        let (current, peak) = (current.clone(), peak.clone());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let now = current.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                let current = current.clone();
                tokio::spawn(async move {
                    // Held until the scanner gives up on a banner and closes its side.
                    use tokio::io::AsyncReadExt as _;
                    let mut buf = [0u8; 16];
                    while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
                    current.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
    }
    // 12 loopback addresses × 1 port, engine limit 3, job limit 8.
    let targets: Vec<String> = (1..=12).map(|i| format!("127.0.0.{i}")).collect();
    let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
    let mut j = job(&targets, vec![port]);
    j.banner_timeout_ms = 100;
    let messages = run(j, 3).await;
    let found = messages
        .iter()
        .filter(|m| matches!(m, Message::ScanFinding { .. }))
        .count();
    assert_eq!(found, 12);
    let peak = peak.load(Ordering::SeqCst);
    assert!((1..=3).contains(&peak), "peak concurrency {peak}");
}

#[tokio::test]
async fn a_closed_session_stops_the_scan() {
    let (tx, rx) = mpsc::channel(1);
    drop(rx);
    // Must return promptly instead of probing a /16.
    tokio::time::timeout(
        Duration::from_secs(5),
        run_job(job(&["127.0.0.0/16"], vec![1]), 4, tx),
    )
    .await
    .unwrap();
}

/// A port on 127.0.0.1 that silently drops connection attempts, as a filtered port does: a
/// listener that never accepts, with a backlog of 0 and one connection already queued. Linux
/// drops a SYN for a listener whose accept queue is full (without `tcp_abort_on_overflow`).
/// Keep the returned values alive for as long as the port is needed.
fn blackholed_port() -> (std::net::TcpListener, std::net::TcpStream, u16) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap().into_std().unwrap();
    let address = listener.local_addr().unwrap();
    let queued = std::net::TcpStream::connect(address).unwrap();
    let attempt = std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200));
    assert!(
        attempt.is_err(),
        "the accept queue of {address} should be full and drop connection attempts"
    );
    (listener, queued, address.port())
}

/// How many sockets of this network namespace are in SYN_SENT towards 127.0.0.1:`port`.
fn syn_sent_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let remote = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(2) == Some(&remote.as_str()) && fields.get(3) == Some(&"02")
        })
        .count()
}

fn open_ports(messages: &[Message]) -> Vec<u16> {
    let mut ports: Vec<u16> = messages
        .iter()
        .filter_map(|m| match m {
            Message::ScanFinding { finding, .. } => Some(finding.port),
            _ => None,
        })
        .collect();
    ports.sort_unstable();
    ports
}

#[tokio::test]
async fn without_banner_reads_open_ports_are_found_with_no_banner() {
    let greeter = listener(Some(b"220 ready\r\n")).await;
    let silent = listener(None).await;
    let closed = closed_port().await;
    let mut j = job(&["127.0.0.1"], vec![greeter, silent, closed]);
    j.banner_timeout_ms = 0;
    let messages = run(j, 8).await;
    let mut want = vec![greeter, silent];
    want.sort_unstable();
    assert_eq!(open_ports(&messages), want);
    assert!(
        messages.iter().all(|m| !matches!(
            m,
            Message::ScanFinding { finding, .. } if finding.banner.is_some()
        )),
        "{messages:?}"
    );
}

#[tokio::test]
async fn a_port_that_drops_connection_attempts_is_not_open_after_the_connect_timeout() {
    let (_listener, _queued, dropped) = blackholed_port();
    let open = listener(None).await;
    let closed = closed_port().await;
    let mut j = job(&["127.0.0.1"], vec![dropped, open, closed]);
    j.connect_timeout_ms = 300;
    j.banner_timeout_ms = 0;
    let started = std::time::Instant::now();
    let messages = run(j, 8).await;
    let took = started.elapsed();
    assert_eq!(open_ports(&messages), vec![open]);
    assert!(
        matches!(
            messages.last(),
            Some(Message::ScanFinished {
                outcome: ScanOutcome::Finished,
                ..
            })
        ),
        "{messages:?}"
    );
    // It waited for the dropped port (the bound is not cut short)…
    assert!(took >= Duration::from_millis(300), "took {took:?}");
    // …and gave up at the job's bound, give or take scheduling, not at the kernel's own
    // connect timeout (over a minute).
    assert!(took < Duration::from_millis(1500), "took {took:?}");
}

#[tokio::test]
async fn dropping_the_job_or_closing_the_session_closes_its_connection_attempts() {
    for close_session in [false, true] {
        let (_listener, _queued, dropped) = blackholed_port();
        let mut j = job(&["127.0.0.1"], vec![dropped]);
        j.connect_timeout_ms = 30_000;
        let (tx, mut rx) = mpsc::channel(16);
        let task = tokio::spawn(run_job(j, 4, tx));
        assert!(matches!(
            rx.recv().await,
            Some(Message::ScanProgress { done: 0, .. })
        ));
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while syn_sent_to(dropped) == 0 {
            assert!(std::time::Instant::now() < until, "the probe never started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if close_session {
            drop(rx);
            // The job ends by itself, long before its connect timeout.
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("the job should end when its session closes")
                .unwrap();
        } else {
            task.abort();
            assert!(task.await.unwrap_err().is_cancelled());
        }
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while syn_sent_to(dropped) > 0 {
            assert!(
                std::time::Instant::now() < until,
                "the connection attempt outlived its job (session closed: {close_session})"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
