//! `scan`: the engine's scanner (`scan_engine::scan::run_job`, the code a scan job runs) and
//! `nmap -sT` scan the same loopback hosts and ports with the same concurrency, connect timeout
//! and no retries; the bench compares wall time and the open host:port sets.
//!
//! Hosts are 127.0.0.1 … 127.0.0.H (all of 127/8 is loopback on Linux); ports are
//! `base-port … base-port+P-1`. The bench listens on a deterministic 1-in-`open-every` subset
//! of (host, port), accepting and dropping connections on a thread of its own.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use scan_engine_protocol::{
    Message,
    messages::{ScanJob, ScanOutcome},
};

use crate::report::{Row, machine, percentile, print_table, secs};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Number of loopback hosts (127.0.0.1 … 127.0.0.H).
    #[arg(long, default_value_t = 64)]
    hosts: u8,
    /// Number of consecutive ports scanned on every host.
    #[arg(long, default_value_t = 256)]
    ports: u16,
    /// First port.
    #[arg(long, default_value_t = 21000)]
    base_port: u16,
    /// About one (host, port) in this many gets a listener.
    #[arg(long, default_value_t = 10)]
    open_every: u32,
    /// Simultaneous connection attempts (engine max concurrency; nmap --min/--max-parallelism).
    #[arg(long, default_value_t = 256)]
    concurrency: u32,
    /// Connect timeout (engine connect_timeout_ms; nmap --max-rtt-timeout).
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
    /// Runs of each scanner (alternating); the table shows medians.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// The nmap program.
    #[arg(long, default_value = "nmap")]
    nmap: String,
}

type Findings = BTreeSet<SocketAddr>;

pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.hosts == 0 || args.ports == 0 || args.rounds == 0 || args.open_every == 0 {
        bail!("--hosts, --ports, --rounds and --open-every must be positive");
    }
    if u32::from(args.base_port) + u32::from(args.ports) > 65536 {
        bail!("--base-port + --ports must stay below 65536");
    }
    let nmap_version = std::process::Command::new(&args.nmap)
        .arg("--version")
        .output()
        .with_context(|| {
            format!(
                "cannot run {} (install nmap: `apt-get install -y nmap`)",
                args.nmap
            )
        })?;
    let nmap_version = String::from_utf8_lossy(&nmap_version.stdout)
        .lines()
        .next()
        .unwrap_or("nmap")
        .trim()
        .to_owned();

    let hosts: Vec<Ipv4Addr> = (1..=args.hosts)
        .map(|i| Ipv4Addr::new(127, 0, 0, i))
        .collect();
    let ports: Vec<u16> = (0..args.ports).map(|i| args.base_port + i).collect();
    let expected = open_listeners(&hosts, &ports, args.open_every)?;
    eprintln!(
        "bench scan: {} hosts × {} ports = {} probes, {} listeners, concurrency {}, timeout {} ms",
        hosts.len(),
        ports.len(),
        hosts.len() * ports.len(),
        expected.len(),
        args.concurrency,
        args.timeout_ms
    );

    let mut engine_times = Vec::new();
    let mut nmap_times = Vec::new();
    let mut engine_sets = Vec::new();
    let mut nmap_sets = Vec::new();
    for round in 1..=args.rounds {
        // Alternate who goes first so neither always inherits the other's TIME_WAIT sockets.
        for engine_first in [round % 2 == 1, round % 2 == 0] {
            if engine_first {
                let (took, found) = run_engine(&args, &hosts, &ports).await?;
                eprintln!(
                    "bench scan: round {round}: engine {:.3} s, {} open",
                    took.as_secs_f64(),
                    found.len()
                );
                engine_times.push(took);
                engine_sets.push(found);
            } else {
                let (took, found) = run_nmap(&args, &ports).await?;
                eprintln!(
                    "bench scan: round {round}: nmap   {:.3} s, {} open",
                    took.as_secs_f64(),
                    found.len()
                );
                nmap_times.push(took);
                nmap_sets.push(found);
            }
        }
    }

    engine_times.sort();
    nmap_times.sort();
    let engine = percentile(&engine_times, 50.0);
    let nmap = percentile(&nmap_times, 50.0);
    let ratio = engine.as_secs_f64() / nmap.as_secs_f64();
    let identical = engine_sets
        .iter()
        .chain(&nmap_sets)
        .all(|s| *s == engine_sets[0]);
    let engine_found_listeners = engine_sets.iter().all(|s| expected.is_subset(s));
    let extra: usize = engine_sets[0].difference(&expected).count();
    let title = format!(
        "bench scan: {} hosts × {} ports ({} probes), {} open listeners, concurrency {}, \
         connect timeout {} ms, {} rounds (medians); {}; {}",
        hosts.len(),
        ports.len(),
        hosts.len() * ports.len(),
        expected.len(),
        args.concurrency,
        args.timeout_ms,
        args.rounds,
        nmap_version,
        machine()
    );
    let rows = vec![
        Row::new("engine scanner wall time (median)", secs(engine)),
        Row::new(
            "nmap -sT wall time (median, process start to exit)",
            secs(nmap),
        ),
        Row::new("engine / nmap wall-time ratio", format!("{ratio:.2}"))
            .target("<= 1.00", ratio <= 1.0),
        Row::new(
            "engine probes/s",
            format!(
                "{:.0}",
                (hosts.len() * ports.len()) as f64 / engine.as_secs_f64()
            ),
        ),
        Row::new(
            "nmap probes/s",
            format!(
                "{:.0}",
                (hosts.len() * ports.len()) as f64 / nmap.as_secs_f64()
            ),
        ),
        Row::new(
            "open host:port found (engine / nmap, first round)",
            format!("{} / {}", engine_sets[0].len(), nmap_sets[0].len()),
        ),
        Row::new(
            "findings identical (every round, both tools)",
            if identical { "yes" } else { "no" },
        )
        .target("identical", identical),
        Row::new(
            "bench listeners all found / other listeners in range",
            format!(
                "{} / {extra}",
                if engine_found_listeners { "yes" } else { "no" }
            ),
        ),
    ];
    if !identical {
        for (i, (e, n)) in engine_sets.iter().zip(&nmap_sets).enumerate() {
            let only_engine: Vec<_> = e.difference(n).take(5).collect();
            let only_nmap: Vec<_> = n.difference(e).take(5).collect();
            eprintln!(
                "bench scan: round {}: only engine {only_engine:?}, only nmap {only_nmap:?}",
                i + 1
            );
        }
    }
    print_table(&title, &rows);
    println!(
        "\nnmap command: {} {}",
        args.nmap,
        nmap_args(&args, &ports).join(" ")
    );
    Ok(())
}

/// Listens on the chosen (host, port) pairs on a thread of its own, accepting and dropping
/// every connection, for the life of the process. Returns the listening addresses.
fn open_listeners(hosts: &[Ipv4Addr], ports: &[u16], every: u32) -> anyhow::Result<Findings> {
    let mut listeners = Vec::new();
    let mut addrs = Findings::new();
    for (h, host) in hosts.iter().enumerate() {
        for (p, port) in ports.iter().enumerate() {
            if !(h as u32 * 31 + p as u32 * 17 + 7).is_multiple_of(every) {
                continue;
            }
            let addr = SocketAddr::new(IpAddr::V4(*host), *port);
            let l = std::net::TcpListener::bind(addr)
                .with_context(|| format!("listening on {addr} (choose another --base-port)"))?;
            l.set_nonblocking(true)?;
            listeners.push(l);
            addrs.insert(addr);
        }
    }
    std::thread::Builder::new()
        .name("bench-listeners".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("listener runtime");
            rt.block_on(async move {
                let mut tasks = Vec::new();
                for l in listeners {
                    let l = tokio::net::TcpListener::from_std(l).expect("tokio listener");
                    tasks.push(tokio::spawn(async move {
                        loop {
                            if let Ok((s, _)) = l.accept().await {
                                drop(s);
                            }
                        }
                    }));
                }
                for t in tasks {
                    let _ = t.await;
                }
            });
        })?;
    Ok(addrs)
}

/// One scan job through the engine's scanner, timed from the call to `ScanFinished`.
async fn run_engine(
    args: &Args,
    hosts: &[Ipv4Addr],
    ports: &[u16],
) -> anyhow::Result<(Duration, Findings)> {
    let job = ScanJob {
        scan_id: 1,
        targets: hosts.iter().map(ToString::to_string).collect(),
        ports: ports.to_vec(),
        connect_timeout_ms: args.timeout_ms,
        // nmap -sT reads no banners; neither does the engine here.
        banner_timeout_ms: 0,
        max_concurrency: args.concurrency,
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let start = Instant::now();
    let scan = tokio::spawn(scan_engine::scan::run_job(job, args.concurrency, tx));
    let mut found = Findings::new();
    let mut finished = None;
    while let Some(m) = rx.recv().await {
        match m {
            Message::ScanFinding { finding, .. } => {
                let ip: IpAddr = finding.address.parse()?;
                found.insert(SocketAddr::new(ip, finding.port));
            }
            Message::ScanFinished {
                outcome, message, ..
            } => {
                finished = Some((start.elapsed(), outcome, message));
            }
            _ => {}
        }
    }
    scan.await?;
    match finished {
        Some((took, ScanOutcome::Finished, _)) => Ok((took, found)),
        Some((_, _, message)) => bail!("the engine's scan failed: {message}"),
        None => bail!("the engine's scan ended without ScanFinished"),
    }
}

fn nmap_args(args: &Args, ports: &[u16]) -> Vec<String> {
    let last = ports.last().copied().unwrap_or(args.base_port);
    let parallelism = args.concurrency.to_string();
    let hostgroup = args.hosts.to_string();
    let timeout = format!("{}ms", args.timeout_ms);
    [
        "-sT",
        "-Pn",
        "-n",
        "--max-retries",
        "0",
        "--min-parallelism",
        &parallelism,
        "--max-parallelism",
        &parallelism,
        // Every host in one group, as the engine probes all hosts under one concurrency bound.
        "--min-hostgroup",
        &hostgroup,
        "--max-hostgroup",
        &hostgroup,
        "--max-rtt-timeout",
        &timeout,
        "--max-scan-delay",
        "0",
        "--host-timeout",
        "600s",
        "-p",
        &format!("{}-{last}", args.base_port),
        "-oG",
        "-",
        &format!("127.0.0.1-{}", args.hosts),
    ]
    .iter()
    .map(ToString::to_string)
    .collect()
}

/// One `nmap -sT` run, timed from spawn to exit; open ports parsed from its grepable output.
async fn run_nmap(args: &Args, ports: &[u16]) -> anyhow::Result<(Duration, Findings)> {
    let start = Instant::now();
    let out = tokio::process::Command::new(&args.nmap)
        .args(nmap_args(args, ports))
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {}", args.nmap))?;
    let took = start.elapsed();
    if !out.status.success() {
        bail!(
            "nmap failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut found = Findings::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(rest) = line.strip_prefix("Host: ") else {
            continue;
        };
        let Some((host, ports_part)) = rest.split_once("Ports: ") else {
            continue;
        };
        let ip: IpAddr = host
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .parse()
            .with_context(|| format!("nmap output line {line:?}"))?;
        let ports_part = ports_part.split('\t').next().unwrap_or_default();
        for entry in ports_part.split(", ") {
            let mut fields = entry.trim().split('/');
            let (Some(port), Some(state)) = (fields.next(), fields.next()) else {
                continue;
            };
            if state == "open" {
                found.insert(SocketAddr::new(ip, port.parse()?));
            }
        }
    }
    Ok((took, found))
}
