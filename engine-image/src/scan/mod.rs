//! The TCP connect discovery scanner.
//!
//! A job's targets are expanded to hosts ([`targets`]), every (host, port) pair is probed with
//! a connect attempt bounded by the job's connect timeout, and open ports get a banner read.
//! At most `min(job.max_concurrency, --max-scan-concurrency)` probes run at once (a bounded,
//! lazily fed stream, never one task per port). Progress, findings and the end of the scan are
//! streamed to the session as messages.

pub mod targets;

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use futures::StreamExt as _;
use scan_engine_protocol::{
    Message,
    messages::{Finding, ScanJob, ScanOutcome},
};
use tokio::{io::AsyncReadExt as _, net::TcpStream, sync::mpsc, time::Instant};

/// Longest banner kept, in bytes.
pub const MAX_BANNER: usize = 256;
/// Progress is reported at least this often while a scan runs…
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);
/// …and at every 5% step.
const PROGRESS_STEPS: u64 = 20;
/// After the first banner bytes, wait this much longer for the rest.
const BANNER_GRACE: Duration = Duration::from_millis(50);

/// The session went away; the scan stops.
#[derive(Debug)]
struct Gone;

/// Runs one job, sending `ScanProgress`, `ScanFinding`s and a final `ScanFinished` on `tx`.
pub async fn run_job(job: ScanJob, engine_limit: u32, tx: mpsc::Sender<Message>) {
    let scan_id = job.scan_id;
    let started = Instant::now();
    let (outcome, message) = match scan(&job, engine_limit, &tx).await {
        Ok(Ok(summary)) => (ScanOutcome::Finished, summary),
        Ok(Err(problem)) => (ScanOutcome::Error, problem),
        Err(Gone) => {
            tracing::info!(scan_id, "session closed; scan abandoned");
            return;
        }
    };
    match outcome {
        ScanOutcome::Finished => {
            tracing::info!(scan_id, elapsed = ?started.elapsed(), "scan finished: {message}")
        }
        ScanOutcome::Error => tracing::warn!(scan_id, "scan failed: {message}"),
    }
    let _ = tx
        .send(Message::ScanFinished {
            scan_id,
            outcome,
            message,
        })
        .await;
}

/// The scan itself: `Ok(Ok(summary))`, `Ok(Err(problem))` for a job that cannot run.
async fn scan(
    job: &ScanJob,
    engine_limit: u32,
    tx: &mpsc::Sender<Message>,
) -> Result<Result<String, String>, Gone> {
    let scan_id = job.scan_id;
    if job.ports.is_empty() {
        return Ok(Err("the job names no ports".to_owned()));
    }
    if job.ports.contains(&0) {
        return Ok(Err("port 0 cannot be scanned".to_owned()));
    }
    let mut ports = job.ports.clone();
    ports.sort_unstable();
    ports.dedup();
    let (hosts, unresolved) = match targets::expand(&job.targets).await {
        Ok(h) => h,
        Err(e) => return Ok(Err(e)),
    };
    if hosts.is_empty() {
        return Ok(Err(if unresolved.is_empty() {
            "the job names no targets".to_owned()
        } else {
            format!("no target could be resolved: {}", unresolved.join("; "))
        }));
    }
    let total = (hosts.len() * ports.len()) as u64;
    let concurrency = job.max_concurrency.clamp(1, engine_limit.max(1)) as usize;
    let connect_timeout = Duration::from_millis(job.connect_timeout_ms.max(1));
    let banner_timeout = Duration::from_millis(job.banner_timeout_ms);
    tracing::info!(
        scan_id,
        hosts = hosts.len(),
        ports = ports.len(),
        concurrency,
        "scan started"
    );
    send(
        tx,
        Message::ScanProgress {
            scan_id,
            done: 0,
            total,
        },
    )
    .await?;

    // Probes are numbered host-major and built lazily, so memory stays bounded by the
    // concurrency, not by hosts × ports.
    let n_ports = ports.len();
    let probes = (0..hosts.len() * n_ports).map(|k| (k / n_ports, ports[k % n_ports]));
    let mut results = futures::stream::iter(probes)
        .map(|(index, port)| {
            let address = hosts[index].address;
            async move {
                let open = probe(address, port, connect_timeout, banner_timeout).await;
                (index, port, open)
            }
        })
        .buffer_unordered(concurrency);

    let mut done = 0u64;
    let mut open = 0u64;
    let mut last_step = 0u64;
    let mut last_sent = Instant::now();
    while let Some((index, port, result)) = results.next().await {
        let host = &hosts[index];
        done += 1;
        if let Some(banner) = result {
            open += 1;
            let finding = Finding {
                address: host.address.to_string(),
                host_name: host.name.clone(),
                port,
                banner,
            };
            send(tx, Message::ScanFinding { scan_id, finding }).await?;
        }
        let step = done * PROGRESS_STEPS / total;
        if done == total || step > last_step || last_sent.elapsed() >= PROGRESS_INTERVAL {
            last_step = step;
            last_sent = Instant::now();
            send(
                tx,
                Message::ScanProgress {
                    scan_id,
                    done,
                    total,
                },
            )
            .await?;
        }
    }
    let mut summary = format!(
        "{} hosts × {} ports probed, {open} open",
        hosts.len(),
        ports.len()
    );
    if !unresolved.is_empty() {
        summary.push_str(&format!("; not resolved: {}", unresolved.join("; ")));
    }
    Ok(Ok(summary))
}

async fn send(tx: &mpsc::Sender<Message>, m: Message) -> Result<(), Gone> {
    tx.send(m).await.map_err(|_| Gone)
}

/// Connects to `address:port`; `Some(banner)` when the port is open.
pub async fn probe(
    address: IpAddr,
    port: u16,
    connect_timeout: Duration,
    banner_timeout: Duration,
) -> Option<Option<String>> {
    let addr = SocketAddr::new(address, port);
    let mut stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        _ => return None,
    };
    Some(read_banner(&mut stream, banner_timeout).await)
}

/// Reads up to [`MAX_BANNER`] bytes: waits up to `timeout` for the first, then briefly for more.
pub async fn read_banner(stream: &mut TcpStream, timeout: Duration) -> Option<String> {
    if timeout.is_zero() {
        return None;
    }
    let mut buf = vec![0u8; MAX_BANNER];
    let mut len = 0;
    let deadline = Instant::now() + timeout;
    while len < MAX_BANNER {
        let wait_until = if len == 0 {
            deadline
        } else {
            (Instant::now() + BANNER_GRACE).min(deadline)
        };
        match tokio::time::timeout_at(wait_until, stream.read(&mut buf[len..])).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => len += n,
        }
    }
    let text = String::from_utf8_lossy(&buf[..len]);
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

#[cfg(test)]
mod tests;
