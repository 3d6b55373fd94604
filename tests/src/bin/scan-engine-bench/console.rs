//! `console`: N reverse-paired engine sessions against one release `security-console`, held by
//! this process (one task per session, each with its own identity), built on the protocol
//! crate exactly as an engine-to-console engine dials.
//!
//! Measures pairing throughput, ping round trips over the held sessions and the console's RSS
//! per session ((VmRSS with N sessions − VmRSS idle) / N).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use scan_engine_protocol::{
    Identity, Message, SharedSecret, messages::Role, session::Session, tls,
    version::product_version,
};
use scan_engine_tests::{ProcBuilder, TestLogs, free_port};
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::report::{
    Row, fd_limit, machine, mib, ms, percentile, print_table, proc_status_kib, secs,
};

const PASSWORD: &str = "bench-console-password";
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Engine sessions to pair and hold.
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
    /// Pairings in flight at once.
    #[arg(long, default_value_t = 32)]
    pair_concurrency: usize,
    /// Pings each session sends (after all are paired).
    #[arg(long, default_value_t = 5)]
    pings: u32,
    /// Interval between one session's pings; sessions are spread evenly over it, so the
    /// console sees sessions/interval pings per second (the default engine interval is 30 s).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    ping_interval: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Some(v) = s.strip_suffix("ms") {
        return v
            .parse()
            .map(Duration::from_millis)
            .map_err(|e| e.to_string());
    }
    if let Some(v) = s.strip_suffix('s') {
        return v
            .parse()
            .map(Duration::from_secs_f64)
            .map_err(|e| e.to_string());
    }
    Err(format!("{s:?}: use e.g. 500ms or 2s"))
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.sessions == 0 || args.pair_concurrency == 0 || args.pings == 0 {
        bail!("--sessions, --pair-concurrency and --pings must be positive");
    }
    let needed = args.sessions as u64 * 2 + 256;
    if fd_limit() < needed {
        bail!(
            "the open-files limit is {} but {} sessions need about {needed} (both ends run on \
             this host): raise it with `ulimit -n`",
            fd_limit(),
            args.sessions
        );
    }
    let console_bin = crate::release_bin("security-console")?;
    let logs = TestLogs::new("bench-console");
    let data_dir = logs.path("console-data");
    std::fs::create_dir_all(&data_dir)?;
    let password_file = logs.path("console-password");
    std::fs::write(&password_file, PASSWORD)?;
    let api: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let engine_listen: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut console = ProcBuilder::new(&console_bin)
        .name("console")
        .logs(&logs)
        .arg("--data-dir")
        .arg(data_dir.as_os_str())
        .arg("--api-listen")
        .arg(api.to_string())
        .arg("--engine-listen")
        .arg(engine_listen.to_string())
        .arg("--admin-password-file")
        .arg(password_file.as_os_str())
        .args(["--log-format", "json"])
        .env("RUST_LOG", "warn")
        .try_spawn()
        .context("starting security-console")?;
    let pid = console.pid().context("console pid")?;
    console.wait_for_port(api, TIMEOUT).await;
    console.wait_for_port(engine_listen, TIMEOUT).await;

    let http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(TIMEOUT)
        .build()?;
    // The shared secret comes as text/plain.
    let secret = http
        .post(format!("https://{api}/api/3/scan_engines/shared_secret"))
        .basic_auth("admin", Some(PASSWORD))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let secret = SharedSecret::new(secret);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle = proc_status_kib(pid, "VmRSS")?;

    eprintln!(
        "bench console: generating {} engine identities",
        args.sessions
    );
    let (version, _) = product_version();
    let mut configs = Vec::with_capacity(args.sessions);
    for i in 0..args.sessions {
        let id = Identity::generate(&format!("bench-engine-{i}"))?;
        configs.push(tls::client_config(&id)?);
    }

    eprintln!(
        "bench console: pairing {} sessions ({} at a time)",
        args.sessions, args.pair_concurrency
    );
    let gate = Arc::new(Semaphore::new(args.pair_concurrency));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.sessions);
    for (i, config) in configs.into_iter().enumerate() {
        let gate = gate.clone();
        let secret = secret.clone();
        let version = version.clone();
        let addr = engine_listen.to_string();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let t = Instant::now();
            let mut s = Session::dial(&addr, config, TIMEOUT)
                .await
                .context("dialing the console")?;
            pair(&mut s, &version, i, secret).await?;
            let session = s;
            Ok::<_, anyhow::Error>((session, t.elapsed()))
        }));
    }
    let mut sessions = Vec::with_capacity(args.sessions);
    let mut pair_latency = Vec::with_capacity(args.sessions);
    let mut failures = Vec::new();
    for t in tasks {
        match t.await? {
            Ok((s, took)) => {
                sessions.push(s);
                pair_latency.push(took);
            }
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    let pairing = started.elapsed();
    if !failures.is_empty() {
        bail!(
            "{} of {} pairings failed; first: {} (console log: {})",
            failures.len(),
            args.sessions,
            failures[0],
            console.log_tail()
        );
    }
    pair_latency.sort();
    eprintln!(
        "bench console: {} sessions paired in {:.2} s",
        sessions.len(),
        pairing.as_secs_f64()
    );

    // Every session pings `pings` times, one ping per interval, sessions spread evenly.
    let n = sessions.len();
    let mut tasks = Vec::with_capacity(n);
    for (i, mut s) in sessions.into_iter().enumerate() {
        let interval = args.ping_interval;
        let pings = args.pings;
        tasks.push(tokio::spawn(async move {
            let offset = interval.mul_f64(i as f64 / n as f64);
            let first = tokio::time::Instant::now() + offset;
            let mut rtts = Vec::with_capacity(pings as usize);
            for k in 0..pings {
                tokio::time::sleep_until(first + interval * k).await;
                let seq = u64::from(k) + 1;
                let t = Instant::now();
                s.send(Message::Ping { seq }).await?;
                loop {
                    match s.recv(TIMEOUT).await? {
                        Message::Pong { seq: got } if got == seq => break,
                        Message::Ping { seq: theirs } => {
                            s.send(Message::Pong { seq: theirs }).await?
                        }
                        _ => {}
                    }
                }
                rtts.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>((s, rtts))
        }));
    }
    let mut held = Vec::with_capacity(n);
    let mut rtts = Vec::with_capacity(n * args.pings as usize);
    for t in tasks {
        let (s, r) = t.await??;
        held.push(s);
        rtts.extend(r);
    }
    rtts.sort();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_loaded = proc_status_kib(pid, "VmRSS")?;
    let hwm = proc_status_kib(pid, "VmHWM")?;

    // Every page of the engine list (500 per page).
    let mut active = 0;
    for number in 0.. {
        let engines: Value = console_api(http.get(format!(
            "https://{api}/api/3/scan_engines?page={number}&size=500"
        )))
        .await?;
        active += engines["resources"]
            .as_array()
            .map_or(0, |a| a.iter().filter(|e| e["status"] == "active").count());
        if number + 1 >= engines["page"]["totalPages"].as_u64().unwrap_or(0) {
            break;
        }
    }
    console.assert_running();

    let per_session = rss_loaded.saturating_sub(rss_idle) as f64 / n as f64;
    let rate = n as f64 / pairing.as_secs_f64();
    let p50 = percentile(&rtts, 50.0);
    let p99 = percentile(&rtts, 99.0);
    let rows = vec![
        Row::new("sessions paired and held", n.to_string()).target(">= 1000", n >= 1000),
        Row::new(
            "engines active in GET /api/3/scan_engines",
            active.to_string(),
        )
        .target(format!("= {n}"), active == n),
        Row::new("pairing wall time", secs(pairing)),
        Row::new("pairing throughput", format!("{rate:.0} sessions/s")),
        Row::new(
            "pairing latency p50 / p99 (dial + TLS + hello + pair)",
            format!(
                "{} / {}",
                ms(percentile(&pair_latency, 50.0)),
                ms(percentile(&pair_latency, 99.0))
            ),
        ),
        Row::new(
            "pings measured",
            format!(
                "{} ({:.0} pings/s offered)",
                rtts.len(),
                n as f64 / args.ping_interval.as_secs_f64()
            ),
        ),
        Row::new("ping round trip p50", ms(p50)),
        Row::new("ping round trip p99", ms(p99)).target("< 50 ms", p99 < Duration::from_millis(50)),
        Row::new(
            "ping round trip max",
            ms(rtts.last().copied().unwrap_or_default()),
        ),
        Row::new("console VmRSS idle", mib(rss_idle)),
        Row::new(format!("console VmRSS with {n} sessions"), mib(rss_loaded)),
        Row::new("console VmHWM (peak)", mib(hwm)),
        Row::new("console RSS per session", format!("{:.1} KiB", per_session))
            .target("< 64 KiB", per_session < 64.0),
    ];
    let title = format!(
        "bench console: {n} reverse-paired sessions, {} pairings in flight, {} pings per \
         session every {:?}; release security-console; {}",
        args.pair_concurrency,
        args.pings,
        args.ping_interval,
        machine()
    );
    print_table(&title, &rows);
    drop(held);
    console.stop();
    Ok(())
}

/// Greets the console and pairs with the shared secret, as a first-time engine-to-console
/// engine does.
/// Sends a console API request as the admin; its JSON answer, or the error status.
async fn console_api<T: serde::de::DeserializeOwned>(
    request: reqwest::RequestBuilder,
) -> anyhow::Result<T> {
    Ok(request
        .basic_auth("admin", Some(PASSWORD))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

async fn pair(
    s: &mut Session,
    version: &str,
    i: usize,
    secret: SharedSecret,
) -> anyhow::Result<()> {
    let hello = s
        .exchange_hello(Role::Engine, version, &format!("bench-engine-{i}"), TIMEOUT)
        .await
        .context("hello")?;
    if hello.role != Role::Console {
        bail!("the peer is not a console");
    }
    s.send(Message::PairRequest {
        shared_secret: secret,
    })
    .await?;
    match s.recv(TIMEOUT).await? {
        Message::Paired { .. } => Ok(()),
        other => bail!("pairing answered with {}", other.kind()),
    }
}
