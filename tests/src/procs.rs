//! Programs as child processes of a test.
//!
//! ```no_run
//! # async fn demo() {
//! use scan_engine_tests::{ProcBuilder, free_loopback_addr};
//! use std::time::Duration;
//!
//! let api = free_loopback_addr();
//! let mut console = ProcBuilder::workspace("security-console")
//!     .arg("--api-listen")
//!     .arg(api.to_string())
//!     .env("SECURITY_CONSOLE_LOG_FORMAT", "text")
//!     .spawn();
//! console.wait_for_port(api, Duration::from_secs(30)).await;
//! // … talk to it; it is killed (with its process group) when `console` is dropped.
//! # }
//! ```
//!
//! Each process writes `<name>.stdout.log` and `<name>.stderr.log` into the test's
//! [`TestLogs`]; the directory is kept and printed when the test fails.
//!
//! Processes run in their own process group, which is killed on drop (SIGTERM, then SIGKILL
//! after a grace period), and get SIGKILL from the kernel if the thread that spawned them dies
//! (so a killed test binary leaves nothing behind). Spawn them from the test's own thread or
//! runtime, not from a short-lived helper thread such as `spawn_blocking`.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::logs::{TestLogs, tail};

/// The three binaries of this workspace that tests run as processes.
pub const WORKSPACE_BINARIES: [(&str, &str); 3] = [
    ("security-console", "security-console"),
    ("scan-engine", "scan-engine"),
    ("scan-engine-operator", "scan-engine-operator"),
];

/// The directory cargo puts this build's binaries in (`target/debug`), found from the running
/// test executable (`target/debug/deps/<test>-<hash>`), then `CARGO_TARGET_DIR`, then
/// `<workspace>/target`.
pub fn target_bin_dir() -> PathBuf {
    if let Ok(exe) = std::env::current_exe()
        && let Some(deps) = exe.parent()
        && deps.file_name().is_some_and(|n| n == "deps")
        && let Some(dir) = deps.parent()
    {
        return dir.to_path_buf();
    }
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target"))
        .join("debug")
}

/// The path of a workspace binary (`security-console`, `scan-engine`, `scan-engine-operator`).
///
/// Panics, saying how to build it, when it has not been built. Cargo does not build other
/// packages' binaries for an integration test: `cargo xtask test` builds them first; by hand,
/// run `cargo build -p <package>` before `cargo test -p scan-engine-tests`.
pub fn workspace_bin(name: &str) -> PathBuf {
    let path = target_bin_dir().join(name);
    if !path.is_file() {
        let package = WORKSPACE_BINARIES
            .iter()
            .find(|(bin, _)| *bin == name)
            .map(|(_, package)| *package)
            .unwrap_or(name);
        panic!(
            "{} has not been built: run `cargo build -p {package}` first \
             (`cargo xtask test` does this for you)",
            path.display()
        );
    }
    path
}

/// A free TCP port on 127.0.0.1 (bound, then released: another process could take it in
/// between, which is rare enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free TCP port on 127.0.0.1")
}

/// `127.0.0.1:<free port>`.
pub fn free_loopback_addr() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()))
}

/// `n` distinct free ports, all held open while they are chosen.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| {
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("no free TCP port on 127.0.0.1")
        })
        .collect();
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .expect("local address of a bound listener")
                .port()
        })
        .collect()
}

/// Waits until something accepts TCP connections on `addr`.
pub async fn wait_for_port(addr: SocketAddr, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("nothing listens on {addr} after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// [`wait_for_port`] for tests without an async runtime.
pub fn wait_for_port_blocking(addr: SocketAddr, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("nothing listens on {addr} after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How to start a process; [`ProcBuilder::spawn`] starts it.
#[derive(Debug)]
pub struct ProcBuilder {
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    env: HashMap<OsString, Option<OsString>>,
    current_dir: Option<PathBuf>,
    logs: Option<TestLogs>,
    kill_grace: Duration,
}

impl ProcBuilder {
    /// Any program (a path, or a name looked up on `PATH`); logs are named after its file name.
    pub fn new(program: impl AsRef<Path>) -> Self {
        let program = program.as_ref().to_path_buf();
        let name = program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "proc".into());
        ProcBuilder {
            name,
            program,
            args: Vec::new(),
            env: HashMap::new(),
            current_dir: None,
            logs: None,
            kill_grace: Duration::from_secs(3),
        }
    }

    /// A binary of this workspace, built under `target/debug` (see [`workspace_bin`]).
    pub fn workspace(bin: &str) -> Self {
        Self::new(workspace_bin(bin))
    }

    /// The name used for the log files and in messages (must be unique within the test's
    /// logs: `console-a`, `engine-b`, …).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.insert(key.into(), Some(value.into()));
        self
    }

    pub fn env_remove(mut self, key: impl Into<OsString>) -> Self {
        self.env.insert(key.into(), None);
        self
    }

    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    /// The log directory to write into (default: a new one for the current test). Share one
    /// [`TestLogs`] between all the processes of a test.
    pub fn logs(mut self, logs: &TestLogs) -> Self {
        self.logs = Some(logs.clone());
        self
    }

    /// How long to wait after SIGTERM before SIGKILL when the process is stopped (default 3 s).
    pub fn kill_grace(mut self, grace: Duration) -> Self {
        self.kill_grace = grace;
        self
    }

    /// Starts the process; panics with the reason when it cannot be started.
    pub fn spawn(self) -> Proc {
        let what = format!("{} ({})", self.name, self.program.display());
        self.try_spawn()
            .unwrap_or_else(|err| panic!("cannot start {what}: {err:#}"))
    }

    /// Starts the process.
    pub fn try_spawn(self) -> Result<Proc> {
        let logs = self.logs.unwrap_or_else(TestLogs::for_current_test);
        let stdout_path = logs.path(&format!("{}.stdout.log", self.name));
        let stderr_path = logs.path(&format!("{}.stderr.log", self.name));
        let stdout = File::create(&stdout_path)?;
        let stderr = File::create(&stderr_path)?;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0);
        for (key, value) in &self.env {
            match value {
                Some(value) => cmd.env(key, value),
                None => cmd.env_remove(key),
            };
        }
        if let Some(dir) = &self.current_dir {
            cmd.current_dir(dir);
        }
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        Ok(Proc {
            name: self.name,
            child: Some(child),
            exit: None,
            stdout_path,
            stderr_path,
            kill_grace: self.kill_grace,
            _logs: logs,
        })
    }
}

/// A running child process. Dropping it stops it (and its process group).
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Option<Child>,
    exit: Option<ExitStatus>,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    kill_grace: Duration,
    // Last field: dropped after the process is stopped, so the logs are complete when kept.
    _logs: TestLogs,
}

impl Proc {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id (which is also its process group id).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn stdout_path(&self) -> &Path {
        &self.stdout_path
    }

    pub fn stderr_path(&self) -> &Path {
        &self.stderr_path
    }

    /// Everything the process wrote to stdout so far.
    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// stdout and stderr, one after the other.
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout(), self.stderr())
    }

    /// The exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none()
            && let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            self.exit = Some(status);
        }
        self.exit
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.try_wait().is_none()
    }

    /// Panics, with the end of its logs, when the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.try_wait() {
            panic!(
                "{} exited unexpectedly ({status})\n{}",
                self.name,
                self.log_tail()
            );
        }
    }

    /// The last lines of stdout and stderr, for messages.
    pub fn log_tail(&self) -> String {
        format!(
            "---- {} stdout ({}) ----\n{}\n---- {} stderr ({}) ----\n{}",
            self.name,
            self.stdout_path.display(),
            tail(&self.stdout(), 30),
            self.name,
            self.stderr_path.display(),
            tail(&self.stderr(), 30)
        )
    }

    /// Waits until the process accepts connections on `addr`; panics if it exits first or
    /// the timeout passes.
    pub async fn wait_for_port(&mut self, addr: SocketAddr, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            self.assert_running();
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} does not listen on {addr} after {timeout:?}\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until stdout or stderr contains `needle`; panics if the process exits first or
    /// the timeout passes.
    pub async fn wait_for_output(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.output().contains(needle) {
                return;
            }
            self.assert_running();
            if Instant::now() >= deadline {
                panic!(
                    "{} did not print {needle:?} within {timeout:?}\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for the process to exit by itself; panics after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} still runs after {timeout:?}\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `signal` to the process group (e.g. `libc::SIGTERM`, `libc::SIGSTOP`).
    pub fn signal(&self, signal: i32) {
        if self.exit.is_none()
            && let Some(pid) = self.pid()
        {
            // SAFETY: kill(2) with a negative pid signals the process group we created.
            unsafe {
                libc::kill(-(pid as i32), signal);
            }
        }
    }

    /// Stops the process group: SIGTERM, then SIGKILL after the grace period. Idempotent;
    /// returns the process's exit status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            return self.exit;
        };
        let pgid = child.id() as i32;
        if self.exit.is_none() {
            // SAFETY: see `signal`.
            unsafe {
                libc::kill(-pgid, libc::SIGTERM);
            }
            let deadline = Instant::now() + self.kill_grace;
            while Instant::now() < deadline {
                if let Ok(Some(status)) = child.try_wait() {
                    self.exit = Some(status);
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // Whatever is left of the group (the leader, or children it started) gets SIGKILL.
        // SAFETY: see `signal`.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        if self.exit.is_none() {
            self.exit = child.wait().ok();
        }
        self.exit
    }

    /// Stops the process at once with SIGKILL (a crash, as far as it can tell).
    pub fn kill(&mut self) -> Option<ExitStatus> {
        self.kill_grace = Duration::ZERO;
        if let Some(child) = &self.child {
            // SAFETY: see `signal`.
            unsafe {
                libc::kill(-(child.id() as i32), libc::SIGKILL);
            }
        }
        self.stop()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let was_running = self.exit.is_none();
        let status = self.stop();
        if std::thread::panicking() {
            let how = if was_running { "stopped" } else { "had exited" };
            eprintln!(
                "{} {how} ({}); logs: {} {}",
                self.name,
                status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "status unknown".into()),
                self.stdout_path.display(),
                self.stderr_path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct() {
        let ports = free_ports(5);
        let mut unique = ports.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 5, "{ports:?}");
    }

    #[tokio::test]
    async fn a_process_logs_and_is_killed_with_its_group_on_drop() {
        let logs = TestLogs::new("procs-self-test");
        let mut proc = ProcBuilder::new("sh")
            .name("shell")
            .logs(&logs)
            .args([
                "-c",
                "echo started; echo oops >&2; sleep 600 & echo $! > child.pid; wait",
            ])
            .current_dir(logs.dir())
            .kill_grace(Duration::from_millis(200))
            .spawn();
        proc.wait_for_output("started", Duration::from_secs(10))
            .await;
        proc.wait_for_output("oops", Duration::from_secs(10)).await;
        assert!(proc.is_running());
        let pid_file = logs.path("child.pid");
        let deadline = Instant::now() + Duration::from_secs(10);
        while fs::read_to_string(&pid_file)
            .unwrap_or_default()
            .trim()
            .is_empty()
        {
            assert!(
                Instant::now() < deadline,
                "the shell did not start its child"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let grandchild: i32 = fs::read_to_string(&pid_file)
            .expect("pid file")
            .trim()
            .parse()
            .expect("a pid");
        drop(proc);
        // The grandchild was in the group: it is gone too (give the kernel a moment to reap).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let stat = fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .next();
            if stat.is_empty() || state == Some("Z") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "grandchild {grandchild} survived: {stat}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[tokio::test]
    async fn wait_for_port_sees_a_listener() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let addr = listener.local_addr().expect("addr");
        wait_for_port(addr, Duration::from_secs(1))
            .await
            .expect("listening");
        drop(listener);
        assert!(
            wait_for_port(addr, Duration::from_millis(200))
                .await
                .is_err()
        );
    }
}
