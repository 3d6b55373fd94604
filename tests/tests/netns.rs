//! The two communication directions across hosts, with network namespaces standing in for
//! hosts: the console in the root namespace, the engines in their own namespace behind a veth
//! pair and a firewall that lets nothing in and lets only the console's port 40815 out.
//!
//! * engine-to-console (reverse) reaches `active`;
//! * console-to-engine (standard) cannot: the console cannot dial in, so the engine stays
//!   `not-responding`.
//!
//! Needs root and `ip` (iproute2) plus `iptables` or `nft`. Without them the test fails when
//! `CI=true` and otherwise prints a notice and passes vacuously.

mod common;

use std::{
    net::{Ipv4Addr, SocketAddr},
    process::Command,
    time::{Duration, Instant},
};

use common::{CONSOLE_PING, DEADLINE, DOWN_AFTER, ENGINE_PING, UNKNOWN_AFTER};
use scan_engine_tests::{Proc, ProcBuilder, TestLogs, free_loopback_addr, procs::workspace_bin};
use serde_json::{Value, json};

const CONSOLE_ENGINE_PORT: u16 = 40815;
const ENGINE_PORT: u16 = 40814;

fn run(cmd: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .map_err(|e| format!("{}: {e}", cmd.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed: {}",
            cmd.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Why this host cannot run the test, if it cannot.
fn missing_prerequisite() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("`ip` (iproute2) is not installed".into());
    }
    None
}

/// The engine "host": a namespace joined to the root namespace by a veth pair. Removed (with
/// the veth pair) on drop.
struct EngineHost {
    ns: String,
    root_ip: Ipv4Addr,
    ns_ip: Ipv4Addr,
}

impl EngineHost {
    fn create() -> Result<EngineHost, String> {
        let pid = std::process::id();
        let ns = format!("se-sys-{pid}");
        let subnet = (pid % 200 + 20) as u8;
        let root_ip = Ipv4Addr::new(10, 231, subnet, 1);
        let ns_ip = Ipv4Addr::new(10, 231, subnet, 2);
        let (v_root, v_ns) = (format!("se{pid}r"), format!("se{pid}n"));
        let _ = run(&["ip", "netns", "del", &ns]);
        run(&["ip", "netns", "add", &ns])?;
        let host = EngineHost { ns, root_ip, ns_ip };
        let ns = host.ns.as_str();
        run(&[
            "ip", "link", "add", &v_root, "type", "veth", "peer", "name", &v_ns,
        ])?;
        run(&["ip", "link", "set", &v_ns, "netns", ns])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{root_ip}/24"),
            "dev",
            &v_root,
        ])?;
        run(&["ip", "link", "set", &v_root, "up"])?;
        let in_ns = |args: &[&str]| {
            let mut cmd = vec!["ip", "netns", "exec", ns];
            cmd.extend_from_slice(args);
            run(&cmd)
        };
        in_ns(&["ip", "addr", "add", &format!("{ns_ip}/24"), "dev", &v_ns])?;
        in_ns(&["ip", "link", "set", &v_ns, "up"])?;
        in_ns(&["ip", "link", "set", "lo", "up"])?;
        host.firewall(&in_ns)?;
        Ok(host)
    }

    /// Inbound: loopback and replies only. Outbound: loopback, the console's 40815, replies.
    fn firewall(&self, in_ns: &dyn Fn(&[&str]) -> Result<(), String>) -> Result<(), String> {
        let console = self.root_ip.to_string();
        let port = CONSOLE_ENGINE_PORT.to_string();
        let iptables = || -> Result<(), String> {
            for rule in [
                vec!["-A", "INPUT", "-i", "lo", "-j", "ACCEPT"],
                vec![
                    "-A",
                    "INPUT",
                    "-m",
                    "conntrack",
                    "--ctstate",
                    "ESTABLISHED,RELATED",
                    "-j",
                    "ACCEPT",
                ],
                vec!["-P", "INPUT", "DROP"],
                vec!["-A", "OUTPUT", "-o", "lo", "-j", "ACCEPT"],
                vec![
                    "-A",
                    "OUTPUT",
                    "-m",
                    "conntrack",
                    "--ctstate",
                    "ESTABLISHED,RELATED",
                    "-j",
                    "ACCEPT",
                ],
                vec![
                    "-A", "OUTPUT", "-p", "tcp", "-d", &console, "--dport", &port, "-j", "ACCEPT",
                ],
                vec!["-P", "OUTPUT", "DROP"],
            ] {
                let mut cmd = vec!["iptables"];
                cmd.extend(rule);
                in_ns(&cmd)?;
            }
            Ok(())
        };
        let nft = || -> Result<(), String> {
            let ruleset = format!(
                "table inet fence {{
                  chain input {{ type filter hook input priority 0; policy drop;
                    iif lo accept; ct state established,related accept; }}
                  chain output {{ type filter hook output priority 0; policy drop;
                    oif lo accept; ct state established,related accept;
                    ip daddr {console} tcp dport {port} accept; }}
                }}"
            );
            let file = std::env::temp_dir().join(format!("{}.nft", self.ns));
            std::fs::write(&file, ruleset).map_err(|e| e.to_string())?;
            let r = in_ns(&["nft", "-f", file.to_str().unwrap_or_default()]);
            let _ = std::fs::remove_file(&file);
            r
        };
        iptables().or_else(|e1| nft().map_err(|e2| format!("{e1}; nft fallback: {e2}")))
    }
}

impl Drop for EngineHost {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair with it.
        if let Err(e) = run(&["ip", "netns", "del", &self.ns]) {
            eprintln!("cleanup: {e}");
        }
    }
}

fn api_client() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn api(
    client: &reqwest::Client,
    api: SocketAddr,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let mut req = client
        .request(method, format!("https://{api}{path}"))
        .basic_auth("admin", Some("netns-password"));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    // JSON, or the text/plain of the shared secret as a string.
    let text = resp.text().await.unwrap_or_default();
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

async fn status_of(client: &reqwest::Client, addr: SocketAddr, name: &str) -> Option<String> {
    let v = api(
        client,
        addr,
        reqwest::Method::GET,
        "/api/3/scan_engines?size=500",
        None,
    )
    .await;
    v["resources"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["status"].as_str().map(str::to_owned))
}

fn engine_in(
    host: &EngineHost,
    logs: &TestLogs,
    name: &str,
    health_port: u16,
    args: &[String],
) -> Proc {
    let bin = workspace_bin("scan-engine");
    ProcBuilder::new("ip")
        .name(name)
        .logs(logs)
        .args(["netns", "exec", host.ns.as_str()])
        .arg(bin.as_os_str())
        .arg("--data-dir")
        .arg(logs.path(&format!("{name}-data")).as_os_str())
        .args(["--name", name, "--ping-interval", ENGINE_PING])
        .arg("--health-listen")
        .arg(format!("127.0.0.1:{health_port}"))
        .args(args.iter().map(String::as_str))
        .spawn()
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_reverse_direction_crosses_a_firewall_that_blocks_inbound() {
    if let Some(why) = missing_prerequisite() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("netns system test cannot run in CI: {why} (it needs root and iproute2)");
        }
        eprintln!(
            "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             !!! SKIPPED netns system test: {why}.\n\
             !!! It needs root, iproute2 and iptables/nft. Run it as root to cover\n\
             !!! engines on separate hosts.\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
        );
        return;
    }
    let host = EngineHost::create().unwrap_or_else(|e| panic!("cannot build the namespaces: {e}"));
    let logs = TestLogs::for_current_test();

    // The console, in the root namespace.
    let api_addr = free_loopback_addr();
    let password = logs.path("console-password");
    std::fs::write(&password, "netns-password").unwrap();
    let engine_listen = SocketAddr::from((host.root_ip, CONSOLE_ENGINE_PORT));
    let mut console = ProcBuilder::workspace("security-console")
        .name("console")
        .logs(&logs)
        .arg("--data-dir")
        .arg(logs.path("console-data").as_os_str())
        .args(["--api-listen", &api_addr.to_string()])
        .args(["--engine-listen", &engine_listen.to_string()])
        .arg("--admin-password-file")
        .arg(password.as_os_str())
        .args(["--ping-interval", CONSOLE_PING])
        .args(["--unknown-after", UNKNOWN_AFTER, "--down-after", DOWN_AFTER])
        .spawn();
    console.wait_for_port(api_addr, DEADLINE).await;
    console.wait_for_port(engine_listen, DEADLINE).await;
    let client = api_client();

    let secret = api(
        &client,
        api_addr,
        reqwest::Method::POST,
        "/api/3/scan_engines/shared_secret",
        None,
    )
    .await;
    let secret_file = logs.path("secret");
    std::fs::write(&secret_file, secret.as_str().unwrap()).unwrap();

    let mut reverse = engine_in(
        &host,
        &logs,
        "ns-reverse",
        18080,
        &[
            "--communication".into(),
            "engine-to-console".into(),
            "--console-address".into(),
            engine_listen.to_string(),
            "--shared-secret-file".into(),
            secret_file.display().to_string(),
        ],
    );
    let mut standard = engine_in(
        &host,
        &logs,
        "ns-standard",
        18081,
        &[
            "--communication".into(),
            "console-to-engine".into(),
            "--listen".into(),
            format!("{}:{ENGINE_PORT}", host.ns_ip),
        ],
    );
    api(
        &client,
        api_addr,
        reqwest::Method::POST,
        "/api/3/scan_engines",
        Some(
            json!({"name": "ns-standard", "address": host.ns_ip.to_string(), "port": ENGINE_PORT}),
        ),
    )
    .await;

    // Reverse: active.
    let deadline = Instant::now() + DEADLINE;
    while status_of(&client, api_addr, "ns-reverse").await.as_deref() != Some("active") {
        reverse.assert_running();
        assert!(
            Instant::now() < deadline,
            "the reverse engine never became active\n{}",
            console.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Standard: the console cannot get in.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let s = status_of(&client, api_addr, "ns-standard").await;
        assert_ne!(s.as_deref(), Some("active"));
        assert_ne!(s.as_deref(), Some("pending-authorization"));
        if s.as_deref() == Some("not-responding") {
            break;
        }
        assert!(Instant::now() < deadline, "standard engine status {s:?}");
        standard.assert_running();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // …and it stays that way.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let s = status_of(&client, api_addr, "ns-standard").await;
        assert_eq!(s.as_deref(), Some("not-responding"));
        let r = status_of(&client, api_addr, "ns-reverse").await;
        assert_eq!(r.as_deref(), Some("active"));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    standard.assert_running();
    // The standard engine never saw its console.
    assert!(!standard.output().contains("console accepted"));
}
