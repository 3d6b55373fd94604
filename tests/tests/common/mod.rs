//! Helpers for the system suites: a console and engines as real processes, and the console's
//! REST API as the tests see it.

#![allow(dead_code)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use scan_engine_tests::{Proc, ProcBuilder, TestLogs, free_loopback_addr};
use serde_json::{Value, json};

/// Console knobs that make state changes quick enough to test.
pub const CONSOLE_PING: &str = "500ms";
pub const UNKNOWN_AFTER: &str = "3s";
pub const DOWN_AFTER: &str = "4s";
/// Engine ping interval for reverse engines.
pub const ENGINE_PING: &str = "500ms";
/// Deadline for any state the tests wait for.
pub const DEADLINE: Duration = Duration::from_secs(30);

const PASSWORD: &str = "system-test-password";

/// What the console answered.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    /// JSON; a string for `text/plain`; Null when empty.
    pub body: Value,
}

/// A running `security-console` and an API client for it.
pub struct Console {
    pub proc: Proc,
    pub api: SocketAddr,
    pub engine_listen: SocketAddr,
    pub data_dir: PathBuf,
    logs: TestLogs,
    secret_ttl: Option<String>,
    client: reqwest::Client,
}

impl Console {
    /// Starts a console with fresh ports and a data directory in the test's logs.
    pub async fn start(logs: &TestLogs, secret_ttl: Option<&str>) -> Console {
        let data_dir = logs.path("console-data");
        Self::start_at(
            logs,
            data_dir,
            free_loopback_addr(),
            free_loopback_addr(),
            secret_ttl.map(str::to_owned),
        )
        .await
    }

    async fn start_at(
        logs: &TestLogs,
        data_dir: PathBuf,
        api: SocketAddr,
        engine_listen: SocketAddr,
        secret_ttl: Option<String>,
    ) -> Console {
        std::fs::create_dir_all(&data_dir).unwrap();
        let password_file = logs.path("console-password");
        std::fs::write(&password_file, PASSWORD).unwrap();
        let mut b = ProcBuilder::workspace("security-console")
            .name("console")
            .logs(logs)
            .arg("--data-dir")
            .arg(data_dir.as_os_str())
            .arg("--api-listen")
            .arg(api.to_string())
            .arg("--engine-listen")
            .arg(engine_listen.to_string())
            .arg("--admin-password-file")
            .arg(password_file.as_os_str())
            .args(["--ping-interval", CONSOLE_PING])
            .args(["--unknown-after", UNKNOWN_AFTER])
            .args(["--down-after", DOWN_AFTER])
            .env_remove(scan_engine_protocol::version::TEST_ONLY_VERSION_ENV);
        if let Some(ttl) = &secret_ttl {
            b = b.args(["--shared-secret-ttl", ttl.as_str()]);
        }
        let mut proc = b.spawn();
        proc.wait_for_port(api, DEADLINE).await;
        proc.wait_for_port(engine_listen, DEADLINE).await;
        let client = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Console {
            proc,
            api,
            engine_listen,
            data_dir,
            logs: logs.clone(),
            secret_ttl,
            client,
        }
    }

    /// Stops the console (SIGTERM) and starts it again on the same ports and data.
    pub async fn restart(self) -> Console {
        let Console {
            mut proc,
            api,
            engine_listen,
            data_dir,
            logs,
            secret_ttl,
            ..
        } = self;
        proc.stop();
        drop(proc);
        Self::start_at(&logs, data_dir, api, engine_listen, secret_ttl).await
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.api)
    }

    /// A request; returns the status and the JSON body (Null when empty; a string when the
    /// body is `text/plain`, such as the shared secret).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let r = self.request(method, path, body, true).await;
        (r.status, r.body)
    }

    /// A request, signed in or not, with everything of its answer a test checks.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        signed_in: bool,
    ) -> Answer {
        let mut req = self.client.request(method.clone(), self.url(path));
        if signed_in {
            req = req.basic_auth("admin", Some(PASSWORD));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = resp.text().await.unwrap_or_default();
        let body = if content_type.starts_with("text/plain") {
            Value::String(text)
        } else {
            serde_json::from_str(&text).unwrap_or(Value::Null)
        };
        Answer {
            status,
            content_type,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Value {
        let (status, body) = self.call(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        let (status, reply) = self.call(reqwest::Method::POST, path, Some(body)).await;
        assert!(
            (200..300).contains(&status),
            "POST {path}: {status} {reply}"
        );
        reply
    }

    /// The console's engine-communication fingerprint.
    pub async fn fingerprint(&self) -> String {
        let info = self.get("/api/3/administration/info").await;
        info["engineCommunication"]["certificateFingerprint"]
            .as_str()
            .unwrap_or_else(|| panic!("no engineCommunication.certificateFingerprint in {info}"))
            .to_owned()
    }

    /// A valid shared secret (the current one or a new one).
    pub async fn shared_secret(&self) -> String {
        let v = self
            .post("/api/3/scan_engines/shared_secret", Value::Null)
            .await;
        v.as_str()
            .unwrap_or_else(|| panic!("shared secret is not text/plain: {v}"))
            .to_owned()
    }

    /// All engines the console knows.
    pub async fn engines(&self) -> Vec<Value> {
        let v = self.get("/api/3/scan_engines?size=500").await;
        v["resources"].as_array().cloned().unwrap_or_default()
    }

    /// The engine registered under `name`, if any.
    pub async fn engine_named(&self, name: &str) -> Option<Value> {
        self.engines()
            .await
            .into_iter()
            .find(|e| e["name"].as_str() == Some(name))
    }

    /// Adds a console-to-engine engine; returns its id.
    pub async fn add_engine(&self, name: &str, port: u16) -> u64 {
        let v = self
            .post(
                "/api/3/scan_engines",
                json!({"name": name, "address": "127.0.0.1", "port": port}),
            )
            .await;
        v["id"].as_u64().unwrap_or_else(|| panic!("no id in {v}"))
    }

    /// Waits until the engine named `name` has `status`; returns it.
    pub async fn wait_status(&self, name: &str, status: &str) -> Value {
        let deadline = Instant::now() + DEADLINE;
        let mut last = None;
        loop {
            if let Some(e) = self.engine_named(name).await {
                if e["status"].as_str() == Some(status) {
                    return e;
                }
                last = Some(e);
            }
            if Instant::now() > deadline {
                panic!(
                    "engine {name} did not become {status} within {DEADLINE:?}; last seen: {}\n{}",
                    last.map_or("<not registered>".to_owned(), |e| e.to_string()),
                    self.proc.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// How an engine talks to its console.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Console-to-engine on this port, optionally trusting a console fingerprint.
    Standard { port: u16, trusted: Option<String> },
    /// Engine-to-console to this address, with this secret file.
    Reverse {
        console: SocketAddr,
        secret_file: Option<PathBuf>,
    },
}

/// A scan engine process with its own data directory.
pub struct Engine {
    pub proc: Proc,
    /// Where its `/healthz` and `/readyz` answer.
    pub health: SocketAddr,
    pub name: String,
    pub data_dir: PathBuf,
    pub mode: Mode,
    logs: TestLogs,
    envs: Vec<(String, String)>,
    spawned: u32,
}

impl Engine {
    pub fn start(logs: &TestLogs, name: &str, mode: Mode) -> Engine {
        Self::start_with_env(logs, name, mode, &[])
    }

    pub fn start_with_env(
        logs: &TestLogs,
        name: &str,
        mode: Mode,
        envs: &[(&str, &str)],
    ) -> Engine {
        let data_dir = logs.path(&format!("{name}-data"));
        let envs: Vec<(String, String)> = envs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let health = free_loopback_addr();
        let proc = spawn_engine(logs, name, &data_dir, &mode, &envs, health, 0);
        Engine {
            proc,
            health,
            name: name.to_owned(),
            data_dir,
            mode,
            logs: logs.clone(),
            envs,
            spawned: 1,
        }
    }

    /// Starts the engine again with the same data and settings (after `stop` or `kill`).
    pub fn restart(&mut self) {
        self.proc.stop();
        self.proc = spawn_engine(
            &self.logs,
            &self.name,
            &self.data_dir,
            &self.mode,
            &self.envs,
            self.health,
            self.spawned,
        );
        self.spawned += 1;
    }

    pub fn consoles_xml(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("consoles.xml")).unwrap_or_default()
    }

    /// Everything every incarnation of this engine logged so far.
    pub fn output(&self) -> String {
        self.proc.output()
    }

    /// The HTTP status of `GET <health>/<path>` (0 when it cannot connect).
    pub async fn probe(&self, path: &str) -> u16 {
        match reqwest::get(format!("http://{}{path}", self.health)).await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    /// Waits until the engine's log contains `needle`.
    pub async fn wait_for_log(&mut self, needle: &str) {
        self.proc.wait_for_output(needle, DEADLINE).await;
    }
}

fn spawn_engine(
    logs: &TestLogs,
    name: &str,
    data_dir: &Path,
    mode: &Mode,
    envs: &[(String, String)],
    health: SocketAddr,
    incarnation: u32,
) -> Proc {
    let proc_name = if incarnation == 0 {
        name.to_owned()
    } else {
        format!("{name}.{incarnation}")
    };
    let mut b = ProcBuilder::workspace("scan-engine")
        .name(proc_name)
        .logs(logs)
        .env_remove(scan_engine_protocol::version::TEST_ONLY_VERSION_ENV)
        .arg("--data-dir")
        .arg(data_dir.as_os_str())
        .args(["--name", name])
        .arg("--health-listen")
        .arg(health.to_string())
        .args(["--ping-interval", ENGINE_PING]);
    match mode {
        Mode::Standard { port, trusted } => {
            b = b
                .args(["--communication", "console-to-engine"])
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"));
            if let Some(fp) = trusted {
                b = b.args(["--trusted-console-fingerprint", fp.as_str()]);
            }
        }
        Mode::Reverse {
            console,
            secret_file,
        } => {
            b = b
                .args(["--communication", "engine-to-console"])
                .arg("--console-address")
                .arg(console.to_string());
            if let Some(f) = secret_file {
                b = b.arg("--shared-secret-file").arg(f.as_os_str());
            }
        }
    }
    for (k, v) in envs {
        b = b.env(k, v);
    }
    b.spawn()
}

/// Writes `secret` to a file in the test's logs directory; returns its path.
pub fn secret_file(logs: &TestLogs, name: &str, secret: &str) -> PathBuf {
    let path = logs.path(name);
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    path
}

/// Polls `check` until it returns `Some`, or panics with `what` after the deadline.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("{what} did not happen within {DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl Console {
    /// An authenticated API request whose client waits up to `timeout` for the answer; owned,
    /// so it can be sent from a spawned task.
    pub fn request_waiting(
        &self,
        method: reqwest::Method,
        path: &str,
        timeout: Duration,
    ) -> reqwest::RequestBuilder {
        let client = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .timeout(timeout)
            .build()
            .unwrap();
        client
            .request(method, self.url(path))
            .basic_auth("admin", Some(PASSWORD))
    }
}

/// A reverse engine paired with `console` using a fresh shared secret.
pub async fn reverse_engine(logs: &TestLogs, console: &Console, name: &str) -> Engine {
    let secret = console.shared_secret().await;
    let file = secret_file(logs, &format!("{name}-secret"), &secret);
    Engine::start(
        logs,
        name,
        Mode::Reverse {
            console: console.engine_listen,
            secret_file: Some(file),
        },
    )
}
