//! The TCP connect discovery scanner.
//!
//! A job's targets are expanded to hosts ([`targets`]), every (host, port) pair is probed with
//! a connect attempt bounded by the job's connect timeout, and open ports get a banner read.
//! At most `min(job.max_concurrency, --max-scan-concurrency)` probes are in flight at once.
//! The probes of a job run on one blocking thread that multiplexes non-blocking connects
//! ([`driver`]); there is no task, timer or runtime registration per probe. Progress, findings
//! and the end of the scan are streamed to the session as messages.

mod driver;
pub mod targets;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use scan_engine_protocol::{
    Message,
    messages::{Finding, ScanJob, ScanOutcome},
};
use tokio::sync::mpsc;

/// Longest banner kept, in bytes.
pub const MAX_BANNER: usize = 256;
/// Progress is reported at least this often while a scan runs…
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);
/// …and at every 5% step.
const PROGRESS_STEPS: u64 = 20;
/// After the first banner bytes, wait this much longer for the rest.
const BANNER_GRACE: Duration = Duration::from_millis(50);

/// Why a scan ended before probing everything.
#[derive(Debug)]
enum Stop {
    /// The session went away (or the job was dropped); the scan is abandoned.
    Gone,
    /// The job cannot run; it ends with an error outcome and this message.
    Failed(String),
}

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Probed {
    /// Refused, unreachable or no answer within the connect timeout.
    NotOpen,
    /// The connect completed; what the port sent first, if banners are read.
    Open { banner: Option<String> },
}

/// Runs one job, sending `ScanProgress`, `ScanFinding`s and a final `ScanFinished` on `tx`.
///
/// Dropping the future, or closing the receiving side of `tx`, stops the scan and closes its
/// sockets.
pub async fn run_job(job: ScanJob, engine_limit: u32, tx: mpsc::Sender<Message>) {
    let scan_id = job.scan_id;
    let started = Instant::now();
    let (outcome, message) = match scan(&job, engine_limit, &tx).await {
        Ok(summary) => (ScanOutcome::Finished, summary),
        Err(Stop::Failed(problem)) => (ScanOutcome::Error, problem),
        Err(Stop::Gone) => {
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

/// The scan itself: a summary, or why it stopped.
async fn scan(
    job: &ScanJob,
    engine_limit: u32,
    tx: &mpsc::Sender<Message>,
) -> Result<String, Stop> {
    let scan_id = job.scan_id;
    if job.ports.is_empty() {
        return Err(Stop::Failed("the job names no ports".to_owned()));
    }
    if job.ports.contains(&0) {
        return Err(Stop::Failed("port 0 cannot be scanned".to_owned()));
    }
    let mut ports = job.ports.clone();
    ports.sort_unstable();
    ports.dedup();
    let (hosts, unresolved) = targets::expand(&job.targets).await.map_err(Stop::Failed)?;
    if hosts.is_empty() {
        return Err(Stop::Failed(if unresolved.is_empty() {
            "the job names no targets".to_owned()
        } else {
            format!("no target could be resolved: {}", unresolved.join("; "))
        }));
    }
    let plan = driver::Plan {
        addresses: hosts.iter().map(|h| h.address).collect(),
        ports,
        concurrency: job.max_concurrency.clamp(1, engine_limit.max(1)) as usize,
        connect_timeout: Duration::from_millis(job.connect_timeout_ms.max(1)),
        banner_timeout: Duration::from_millis(job.banner_timeout_ms),
    };
    let total = hosts.len() as u64 * plan.ports.len() as u64;
    tracing::info!(
        scan_id,
        hosts = hosts.len(),
        ports = plan.ports.len(),
        concurrency = plan.concurrency,
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

    let summary_head = format!("{} hosts × {} ports probed", hosts.len(), plan.ports.len());
    let poll =
        mio::Poll::new().map_err(|e| Stop::Failed(format!("cannot set up the probes: {e}")))?;
    let waker = mio::Waker::new(poll.registry(), driver::CANCEL)
        .map_err(|e| Stop::Failed(format!("cannot set up the probes: {e}")))?;
    let waker = Arc::new(waker);
    // Stops the probing thread when this future ends, whichever way: finished, the session
    // gone, or dropped.
    let _cancel = CancelOnDrop(waker.clone());
    let mut reporter = Reporter::new(scan_id, hosts, total, tx.clone());
    let mut probing = tokio::task::spawn_blocking(move || {
        // The waker lives as long as the loop: dropping it would take its wake-up out of the
        // poll before the loop has seen it.
        let _waker = waker;
        driver::run(&plan, poll, &mut reporter).map(|()| reporter.open)
    });
    let open = tokio::select! {
        joined = &mut probing => match joined {
            Ok(result) => result?,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => return Err(Stop::Gone),
        },
        // The driver only notices a closed session when it next reports; this wakes it now.
        () = tx.closed() => return Err(Stop::Gone),
    };
    let mut summary = format!("{summary_head}, {open} open");
    if !unresolved.is_empty() {
        summary.push_str(&format!("; not resolved: {}", unresolved.join("; ")));
    }
    Ok(summary)
}

/// Wakes the probing loop's poll with the cancel token when dropped.
struct CancelOnDrop(Arc<mio::Waker>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        // Fails only if the poll is gone, and then there is nothing left to stop.
        let _ = self.0.wake();
    }
}

async fn send(tx: &mpsc::Sender<Message>, m: Message) -> Result<(), Stop> {
    tx.send(m).await.map_err(|_| Stop::Gone)
}

/// Turns probe results into findings and progress messages, on the probing thread. Messages
/// are queued and sent by [`Reporter::flush`], which the driver calls before it waits, so the
/// session is woken once per batch of results rather than once per finding.
#[derive(Debug)]
struct Reporter {
    scan_id: u64,
    hosts: Vec<targets::Host>,
    tx: mpsc::Sender<Message>,
    queued: Vec<Message>,
    total: u64,
    done: u64,
    open: u64,
    last_step: u64,
    last_sent: Instant,
}

impl Reporter {
    fn new(scan_id: u64, hosts: Vec<targets::Host>, total: u64, tx: mpsc::Sender<Message>) -> Self {
        Self {
            scan_id,
            hosts,
            tx,
            queued: Vec::new(),
            total,
            done: 0,
            open: 0,
            last_step: 0,
            last_sent: Instant::now(),
        }
    }

    fn scan_id(&self) -> u64 {
        self.scan_id
    }

    /// Records the result of probing `port` on host number `host`.
    fn record(&mut self, host: usize, port: u16, result: Probed) {
        let scan_id = self.scan_id;
        self.done += 1;
        if let Probed::Open { banner } = result {
            self.open += 1;
            let host = &self.hosts[host];
            let finding = Finding {
                address: host.address.to_string(),
                host_name: host.name.clone(),
                port,
                banner,
            };
            self.queued.push(Message::ScanFinding { scan_id, finding });
        }
        let (done, total) = (self.done, self.total);
        let step = done * PROGRESS_STEPS / total;
        if done == total || step > self.last_step || self.last_sent.elapsed() >= PROGRESS_INTERVAL {
            self.last_step = step;
            self.last_sent = Instant::now();
            self.queued.push(Message::ScanProgress {
                scan_id,
                done,
                total,
            });
        }
    }

    /// Sends the queued messages, blocking while the session's queue is full.
    fn flush(&mut self) -> Result<(), Stop> {
        for m in self.queued.drain(..) {
            self.tx.blocking_send(m).map_err(|_| Stop::Gone)?;
        }
        Ok(())
    }
}

/// A banner as reported: the bytes as (lossy) UTF-8, trimmed; `None` when nothing is left.
fn banner_text(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

#[cfg(test)]
mod tests;
