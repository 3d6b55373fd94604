//! The probing loop: non-blocking connects multiplexed on one thread.
//!
//! A fixed pool of `concurrency` slots holds one probe each. Free slots are filled with
//! non-blocking connects, a burst at a time, and one wait (`epoll_wait`, through [`mio`])
//! collects every slot that has an answer. A socket is registered once and never
//! deregistered: closing it removes it from the poll set. Deadlines (the connect timeout,
//! then the banner timeouts) live in a min-heap; entries left behind by probes that ended or
//! moved on are dropped when they reach the top.
//!
//! A port is open only when its connect completed: no socket error, and the kernel names a
//! peer. An open socket is closed with `SO_LINGER` 0, so the peer gets a reset instead of a
//! FIN exchange and the engine keeps no `TIME_WAIT` socket per open port (`nmap -sT` does the
//! same). Refused probes are already closed by the kernel and timed-out ones are still in
//! `SYN_SENT`: closing those sends nothing.
//!
//! The loop runs on a blocking thread. It stops when the poll's [`mio::Waker`] (token
//! [`CANCEL`]) fires, which the job does when it is dropped or its session goes away, and when
//! a result cannot be delivered.

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    io::{self, Read as _},
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use mio::{Events, Interest, Poll, Token, net::TcpStream};
use socket2::SockRef;

use super::{BANNER_GRACE, MAX_BANNER, Probed, Reporter, Stop, banner_text};

/// The token of the waker that cancels the loop.
pub(super) const CANCEL: Token = Token(usize::MAX);
/// At most this many readiness events are taken per wait.
const MAX_EVENTS: usize = 1024;
/// At most this many probes are started between two looks at the readiness events. Starting
/// every free slot at once is slower at high concurrency (1,024 slots: about 15% on loopback).
const START_BURST: usize = 64;

/// What to probe and how.
#[derive(Debug)]
pub(super) struct Plan {
    pub addresses: Vec<IpAddr>,
    /// Non-empty, without 0.
    pub ports: Vec<u16>,
    /// At least 1.
    pub concurrency: usize,
    pub connect_timeout: Duration,
    /// Zero: no banner reads.
    pub banner_timeout: Duration,
}

impl Plan {
    fn probes(&self) -> u64 {
        self.addresses.len() as u64 * self.ports.len() as u64
    }

    /// Probe `n`, numbered host-major: the host's index and the port.
    fn probe(&self, n: u64) -> (usize, u16) {
        let n_ports = self.ports.len() as u64;
        ((n / n_ports) as usize, self.ports[(n % n_ports) as usize])
    }
}

/// Probes every (host, port) of `plan` through `poll`, handing each result to `reporter`.
pub(super) fn run(plan: &Plan, poll: Poll, reporter: &mut Reporter) -> Result<(), Stop> {
    // No more slots than probes.
    let width = plan
        .concurrency
        .min(usize::try_from(plan.probes()).unwrap_or(usize::MAX));
    let mut driver = Driver {
        plan,
        poll,
        slots: (0..width).map(|_| None).collect(),
        free: (0..width).rev().collect(),
        due: BinaryHeap::new(),
        reporter,
        local_errors: 0,
        first_local_error: None,
    };
    let mut result = driver.run();
    if !matches!(result, Err(Stop::Gone)) {
        result = driver.reporter.flush().and(result);
    }
    if let Some(e) = &driver.first_local_error {
        tracing::warn!(
            scan_id = driver.reporter.scan_id(),
            probes = driver.local_errors,
            "connection attempts failed on this host, not at the target, and count as not \
             open (first: {e})"
        );
    }
    result
}

/// One probe in flight.
#[derive(Debug)]
struct Slot {
    stream: TcpStream,
    /// The probe's number: tells this probe's heap entries from an earlier occupant's.
    probe: u64,
    host: usize,
    port: u16,
    phase: Phase,
    /// When the current phase gives up.
    deadline: Instant,
}

#[derive(Debug)]
enum Phase {
    Connecting,
    /// Connected, reading a banner until `until` and at most [`BANNER_GRACE`] after the last
    /// bytes.
    Reading {
        until: Instant,
        buf: Box<[u8; MAX_BANNER]>,
        len: usize,
    },
}

/// A heap entry: (deadline, probe number, slot index), earliest first.
type Due = Reverse<(Instant, u64, usize)>;

struct Driver<'a> {
    plan: &'a Plan,
    poll: Poll,
    slots: Vec<Option<Slot>>,
    /// Indices of the empty slots.
    free: Vec<usize>,
    due: BinaryHeap<Due>,
    reporter: &'a mut Reporter,
    local_errors: u64,
    first_local_error: Option<io::Error>,
}

impl Driver<'_> {
    fn run(&mut self) -> Result<(), Stop> {
        let total = self.plan.probes();
        let mut events = Events::with_capacity(self.slots.len().min(MAX_EVENTS) + 1);
        let mut next = 0u64;
        loop {
            // Start probes in short bursts: the ones of a burst are answered, closed and
            // reported while their sockets are still warm, before more start.
            let mut started = 0;
            while next < total
                && started < START_BURST
                && let Some(index) = self.free.pop()
            {
                self.start(index, next)?;
                next += 1;
                started += 1;
            }
            if self.free.len() == self.slots.len() {
                return Ok(());
            }
            self.reporter.flush()?;
            let more_to_start = next < total && !self.free.is_empty();
            let timeout = if more_to_start {
                // Only take the answers that are in, then start the next burst.
                Some(Duration::ZERO)
            } else {
                self.next_deadline()
                    .map(|at| at.saturating_duration_since(Instant::now()))
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Stop::Failed(format!("waiting for connections failed: {e}")));
            }
            let now = Instant::now();
            let mut taken = 0;
            for event in &events {
                if event.token() == CANCEL {
                    return Err(Stop::Gone);
                }
                self.ready(event.token().0, event.is_error(), now);
                taken += 1;
            }
            // With a full batch, more answers may be waiting: take them before calling any
            // probe timed out.
            if taken < events.capacity() {
                self.expire(Instant::now());
            }
        }
    }

    /// Starts probe number `probe` in the empty slot `index`.
    fn start(&mut self, index: usize, probe: u64) -> Result<(), Stop> {
        let (host, port) = self.plan.probe(probe);
        let address = SocketAddr::new(self.plan.addresses[host], port);
        let mut stream = match TcpStream::connect(address) {
            Ok(s) => s,
            Err(e) => {
                // An unreachable network fails here. So does a shortage on this host (file
                // descriptors, ephemeral ports), which is counted and reported at the end.
                if is_local(&e) {
                    self.local_errors += 1;
                    self.first_local_error.get_or_insert(e);
                }
                self.free.push(index);
                self.reporter.record(host, port, Probed::NotOpen);
                return Ok(());
            }
        };
        self.poll
            .registry()
            .register(
                &mut stream,
                Token(index),
                Interest::WRITABLE | Interest::READABLE,
            )
            .map_err(|e| Stop::Failed(format!("cannot wait for a connection: {e}")))?;
        let deadline = Instant::now() + self.plan.connect_timeout;
        self.due.push(Reverse((deadline, probe, index)));
        self.slots[index] = Some(Slot {
            stream,
            probe,
            host,
            port,
            phase: Phase::Connecting,
            deadline,
        });
        Ok(())
    }

    /// Slot `index` has a readiness event; `error` when it carries a socket error.
    fn ready(&mut self, index: usize, error: bool, now: Instant) {
        let Some(slot) = self.slots.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        if let Phase::Connecting = slot.phase {
            match connect_state(&slot.stream, error) {
                Connect::Pending => return,
                Connect::Failed => return self.finish(index, Probed::NotOpen),
                Connect::Connected => {}
            }
            if self.plan.banner_timeout.is_zero() {
                return self.finish(index, Probed::Open { banner: None });
            }
            let until = now + self.plan.banner_timeout;
            slot.phase = Phase::Reading {
                until,
                buf: Box::new([0; MAX_BANNER]),
                len: 0,
            };
            slot.deadline = until;
            self.due.push(Reverse((until, slot.probe, index)));
        }
        match read_banner(slot, now) {
            Read::Done(result) => self.finish(index, result),
            Read::Wait { rescheduled: true } => {
                self.due.push(Reverse((slot.deadline, slot.probe, index)));
            }
            Read::Wait { rescheduled: false } => {}
        }
    }

    /// The earliest deadline of a probe in flight. Entries left by probes that have ended or
    /// moved on are dropped on the way, so that they never wake the loop.
    fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(&Reverse((at, probe, index))) = self.due.peek() {
            match &self.slots[index] {
                Some(slot) if slot.probe == probe && slot.deadline == at => return Some(at),
                _ => {
                    self.due.pop();
                }
            }
        }
        None
    }

    /// Ends the probes whose time is up: a connect that did not complete is not open; a banner
    /// read keeps what it has.
    fn expire(&mut self, now: Instant) {
        while let Some(at) = self.next_deadline() {
            if at > now {
                break;
            }
            let Some(Reverse((_, _, index))) = self.due.pop() else {
                break;
            };
            let Some(slot) = self.slots[index].as_ref() else {
                continue;
            };
            let result = match &slot.phase {
                Phase::Connecting => Probed::NotOpen,
                Phase::Reading { buf, len, .. } => Probed::Open {
                    banner: banner_text(&buf[..*len]),
                },
            };
            self.finish(index, result);
        }
    }

    /// Closes slot `index` and reports its result.
    fn finish(&mut self, index: usize, result: Probed) {
        let Some(slot) = self.slots[index].take() else {
            return;
        };
        self.free.push(index);
        if let Probed::Open { .. } = result {
            // Reset rather than close gracefully: no FIN exchange, no TIME_WAIT. Should this
            // fail, the socket is simply closed the usual way.
            let _ = SockRef::from(&slot.stream).set_linger(Some(Duration::ZERO));
        }
        drop(slot.stream);
        self.reporter.record(slot.host, slot.port, result);
    }
}

/// Where a connect attempt stands after a readiness event.
enum Connect {
    Pending,
    Connected,
    Failed,
}

fn connect_state(stream: &TcpStream, error: bool) -> Connect {
    // A failed connect leaves a socket error, which the event carries (EPOLLERR): refused
    // ports, the common case of a scan, are settled without a system call.
    if error {
        return Connect::Failed;
    }
    match stream.take_error() {
        Ok(None) => {}
        Ok(Some(_)) | Err(_) => return Connect::Failed,
    }
    match stream.peer_addr() {
        Ok(_) => Connect::Connected,
        Err(e)
            if e.kind() == io::ErrorKind::NotConnected
                || e.raw_os_error() == Some(libc::EINPROGRESS) =>
        {
            Connect::Pending
        }
        Err(_) => Connect::Failed,
    }
}

/// Whether a connect error is about this host rather than the target.
fn is_local(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL)
    )
}

enum Read {
    Done(Probed),
    /// Wait for more; `rescheduled` when the slot's deadline moved (bytes arrived).
    Wait {
        rescheduled: bool,
    },
}

/// Reads what the peer has sent so far.
fn read_banner(slot: &mut Slot, now: Instant) -> Read {
    let Phase::Reading { until, buf, len } = &mut slot.phase else {
        return Read::Wait { rescheduled: false };
    };
    let before = *len;
    while *len < MAX_BANNER {
        match slot.stream.read(&mut buf[*len..]) {
            Ok(0) => break,
            Ok(n) => *len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let rescheduled = *len > before;
                if rescheduled {
                    slot.deadline = (now + BANNER_GRACE).min(*until);
                }
                return Read::Wait { rescheduled };
            }
            Err(_) => break,
        }
    }
    Read::Done(Probed::Open {
        banner: banner_text(&buf[..*len]),
    })
}
