//! System tests of engine pools and scans: a real `security-console` and real `scan-engine`s as
//! processes on loopback, driven through the console's REST API, every answer checked against
//! the published InsightVM API v3 excerpt (`scan_engine_tests::spec`).
//!
//! Build the binaries first: `cargo build -p security-console -p scan-engine`, then
//! `cargo test -p scan-engine-tests --test pools -- --test-threads=1`.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read as _, Write as _},
    net::{Ipv4Addr, TcpListener},
    time::{Duration, Instant},
};

use common::{Console, eventually, reverse_engine};
use reqwest::Method;
use scan_engine_tests::{TestLogs, spec::Spec};
use serde_json::{Value, json};

fn logs() -> TestLogs {
    TestLogs::for_current_test()
}

/// Sends a request and checks the answer against the spec's operation `template` (the spec's
/// path, such as `/api/3/scans/{id}`); returns the status and body.
async fn checked(
    console: &Console,
    spec: &Spec,
    method: Method,
    template: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let a = console.request(method.clone(), path, body, true).await;
    let problems = spec.check(
        method.as_str(),
        template,
        a.status,
        &a.content_type,
        &a.body,
    );
    assert!(
        problems.is_empty(),
        "{method} {path} answered {} {}: {problems:#?}",
        a.status,
        a.body
    );
    (a.status, a.body)
}

fn id_of(v: &Value) -> u64 {
    v["id"].as_u64().unwrap_or_else(|| panic!("no id in {v}"))
}

/// Listeners on `127.0.0.1` to `127.0.0.{n}`, all on one port, that greet with `banner` (or say
/// nothing) and hold each connection for `hold`; run on threads for the rest of the test
/// process. Returns the port and the addresses.
fn listeners(n: u8, banner: Option<&'static str>, hold: Duration) -> (u16, Vec<String>) {
    let first = TcpListener::bind((Ipv4Addr::new(127, 0, 0, 1), 0)).unwrap();
    let port = first.local_addr().unwrap().port();
    let mut all = vec![first];
    for last in 2..=n {
        all.push(
            TcpListener::bind((Ipv4Addr::new(127, 0, 0, last), port))
                .unwrap_or_else(|e| panic!("127.0.0.{last}:{port}: {e}")),
        );
    }
    for l in all {
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                std::thread::spawn(move || {
                    if let Some(b) = banner {
                        let _ = s.write_all(b.as_bytes());
                    }
                    let _ = s.set_read_timeout(Some(hold));
                    let mut buf = [0u8; 64];
                    let _ = s.read(&mut buf);
                });
            }
        });
    }
    let addresses = (1..=n).map(|i| format!("127.0.0.{i}")).collect();
    (port, addresses)
}

/// Creates a site on engine or pool `engine` and returns its id.
async fn site(
    console: &Console,
    spec: &Spec,
    engine: u64,
    targets: &[String],
    port: u16,
    timeout_ms: u64,
) -> u64 {
    let (status, v) = checked(
        console,
        spec,
        Method::POST,
        "/api/3/sites",
        "/api/3/sites",
        Some(json!({
            "name": format!("site-{}", targets.len()),
            "engineId": engine,
            "scan": {"assets": {"includedTargets": {"addresses": targets}}},
            "ports": [port],
            "timeoutMs": timeout_ms,
        })),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    id_of(&v)
}

async fn start_scan(console: &Console, spec: &Spec, site: u64) -> u64 {
    let (status, v) = checked(
        console,
        spec,
        Method::POST,
        "/api/3/sites/{id}/scans",
        &format!("/api/3/sites/{site}/scans"),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    id_of(&v)
}

async fn scan(console: &Console, spec: &Spec, id: u64) -> Value {
    let (status, v) = checked(
        console,
        spec,
        Method::GET,
        "/api/3/scans/{id}",
        &format!("/api/3/scans/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    v
}

async fn until_ended(console: &Console, spec: &Spec, id: u64) -> Value {
    eventually("the scan to end", || async {
        let s = scan(console, spec, id).await;
        let active = ["running", "dispatched", "paused"];
        (!active.contains(&s["status"].as_str().unwrap_or_default())).then_some(s)
    })
    .await
}

/// A scan's targets (the console's extension): address → (engine, status) of each job, in
/// order.
fn targets(scan: &Value) -> BTreeMap<String, Vec<(u64, String)>> {
    let mut out: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for t in scan["targets"].as_array().into_iter().flatten() {
        out.entry(t["address"].as_str().unwrap_or_default().to_owned())
            .or_default()
            .push((
                t["engineId"].as_u64().unwrap_or(0),
                t["status"].as_str().unwrap_or_default().to_owned(),
            ));
    }
    out
}

async fn create_pool(console: &Console, spec: &Spec, name: &str, engines: &[u64]) -> u64 {
    let (status, v) = checked(
        console,
        spec,
        Method::POST,
        "/api/3/scan_engine_pools",
        "/api/3/scan_engine_pools",
        Some(json!({"name": name, "engines": engines})),
    )
    .await;
    assert_eq!(status, 200, "the spec's 200: {v}");
    id_of(&v)
}

async fn pool(console: &Console, spec: &Spec, id: u64) -> Value {
    let (status, v) = checked(
        console,
        spec,
        Method::GET,
        "/api/3/scan_engine_pools/{id}",
        &format!("/api/3/scan_engine_pools/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn pools_are_created_changed_listed_and_deleted_and_survive_a_restart() {
    let logs = logs();
    let spec = Spec::load();
    let console = Console::start(&logs, None).await;
    let a = console
        .add_engine("pool-a", scan_engine_tests::free_port())
        .await;
    let b = console
        .add_engine("pool-b", scan_engine_tests::free_port())
        .await;

    let id = create_pool(&console, &spec, "east", &[a]).await;
    assert!(id != a && id != b, "pools and engines share one id space");
    let p = pool(&console, &spec, id).await;
    assert_eq!(
        (&p["name"], &p["engines"]),
        (&json!("east"), &json!([a])),
        "{p}"
    );

    let members = format!("/api/3/scan_engine_pools/{id}/engines");
    let tmpl = "/api/3/scan_engine_pools/{id}/engines/{engineId}";
    let (s, _) = checked(
        &console,
        &spec,
        Method::PUT,
        tmpl,
        &format!("{members}/{b}"),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let (_, list) = checked(
        &console,
        &spec,
        Method::GET,
        "/api/3/scan_engine_pools/{id}/engines",
        &members,
        None,
    )
    .await;
    assert_eq!(list["resources"], json!([a, b]), "{list}");
    let (s, _) = checked(
        &console,
        &spec,
        Method::DELETE,
        tmpl,
        &format!("{members}/{a}"),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(pool(&console, &spec, id).await["engines"], json!([b]));
    let (s, _) = checked(
        &console,
        &spec,
        Method::PUT,
        "/api/3/scan_engine_pools/{id}/engines",
        &members,
        Some(json!([a, b])),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(pool(&console, &spec, id).await["engines"], json!([a, b]));
    let (s, _) = checked(
        &console,
        &spec,
        Method::PUT,
        "/api/3/scan_engine_pools/{id}",
        &format!("/api/3/scan_engine_pools/{id}"),
        Some(json!({"name": "east-2"})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(pool(&console, &spec, id).await["name"], "east-2");
    let (_, of_a) = checked(
        &console,
        &spec,
        Method::GET,
        "/api/3/scan_engines/{id}/scan_engine_pools",
        &format!("/api/3/scan_engines/{a}/scan_engine_pools"),
        None,
    )
    .await;
    assert_eq!(of_a["resources"][0]["id"], json!(id), "{of_a}");

    // Refusals name what is wrong, as the spec's error shapes.
    let (s, v) = checked(
        &console,
        &spec,
        Method::POST,
        "/api/3/scan_engine_pools",
        "/api/3/scan_engine_pools",
        Some(json!({"name": "west", "engines": [999_999]})),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["message"].as_str().unwrap_or_default().contains("999999"),
        "{v}"
    );
    let (s, v) = checked(
        &console,
        &spec,
        Method::GET,
        "/api/3/scan_engine_pools/{id}",
        "/api/3/scan_engine_pools/999999",
        None,
    )
    .await;
    assert_eq!((s, &v["status"]), (404, &json!("404")), "{v}");

    // A site may use the pool.
    let site = site(&console, &spec, id, &["127.0.0.1".to_owned()], 9, 500).await;
    let (_, sites) = checked(
        &console,
        &spec,
        Method::GET,
        "/api/3/scan_engine_pools/{id}/sites",
        &format!("/api/3/scan_engine_pools/{id}/sites"),
        None,
    )
    .await;
    assert_eq!(sites["resources"], json!([site]), "{sites}");

    // Nothing is lost on a restart.
    let console = console.restart().await;
    let p = pool(&console, &spec, id).await;
    assert_eq!(
        (&p["name"], &p["engines"]),
        (&json!("east-2"), &json!([a, b])),
        "{p}"
    );
    let (_, all) = checked(
        &console,
        &spec,
        Method::GET,
        "/api/3/scan_engine_pools",
        "/api/3/scan_engine_pools",
        None,
    )
    .await;
    assert_eq!(all["resources"].as_array().map(Vec::len), Some(1), "{all}");
    let (s, _) = checked(
        &console,
        &spec,
        Method::DELETE,
        "/api/3/scan_engine_pools/{id}",
        &format!("/api/3/scan_engine_pools/{id}"),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = console
        .call(Method::GET, &format!("/api/3/scan_engine_pools/{id}"), None)
        .await;
    assert_eq!(s, 404);
    // Its engines stay.
    assert_eq!(console.engines().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pool_scan_divides_its_targets_between_two_active_engines() {
    let logs = logs();
    let spec = Spec::load();
    let console = Console::start(&logs, None).await;
    let _one = reverse_engine(&logs, &console, "split-1").await;
    let _two = reverse_engine(&logs, &console, "split-2").await;
    let one = id_of(&console.wait_status("split-1", "active").await);
    let two = id_of(&console.wait_status("split-2", "active").await);
    let pool = create_pool(&console, &spec, "split", &[one, two]).await;
    let (port, addresses) = listeners(4, Some("SSH-2.0-pool\r\n"), Duration::from_secs(2));
    let site = site(&console, &spec, pool, &addresses, port, 1000).await;

    let id = start_scan(&console, &spec, site).await;
    let done = until_ended(&console, &spec, id).await;
    assert_eq!(done["status"], "finished", "{done}");
    assert_eq!(done["engineId"], json!(pool), "{done}");
    assert_eq!(done["assets"], json!(4), "{done}");
    let by_target = targets(&done);
    assert_eq!(
        by_target.keys().cloned().collect::<Vec<_>>(),
        addresses,
        "{done}"
    );
    let mut used = BTreeSet::new();
    for (address, jobs) in &by_target {
        assert_eq!(jobs.len(), 1, "{address} scanned once: {done}");
        assert_eq!(jobs[0].1, "finished", "{done}");
        used.insert(jobs[0].0);
    }
    assert_eq!(
        used,
        BTreeSet::from([one, two]),
        "both engines got work: {done}"
    );

    let (_, assets) = console
        .call(Method::GET, "/api/3/assets?size=500", None)
        .await;
    let found: BTreeSet<String> = assets["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["services"][0]["banner"] == "SSH-2.0-pool")
        .filter_map(|a| a["ip"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(found, addresses.into_iter().collect(), "{assets}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_engine_killed_mid_scan_leaves_its_targets_to_the_other_engine_once_each() {
    let logs = logs();
    let spec = Spec::load();
    let console = Console::start(&logs, None).await;
    let mut doomed = reverse_engine(&logs, &console, "doomed").await;
    let _steady = reverse_engine(&logs, &console, "steady").await;
    let doomed_id = id_of(&console.wait_status("doomed", "active").await);
    let steady_id = id_of(&console.wait_status("steady", "active").await);
    let pool = create_pool(&console, &spec, "kill", &[doomed_id, steady_id]).await;
    // Silent services: each check waits out the 4 s banner timeout, so the scan is still
    // running when the engine is killed.
    let (port, addresses) = listeners(6, None, Duration::from_secs(20));
    let site = site(&console, &spec, pool, &addresses, port, 4000).await;

    let id = start_scan(&console, &spec, site).await;
    let first = eventually("both engines to be scanning", || async {
        let s = scan(&console, &spec, id).await;
        let on: BTreeSet<u64> = targets(&s)
            .values()
            .flatten()
            .filter(|(_, status)| status == "running")
            .map(|(e, _)| *e)
            .collect();
        (on.len() == 2).then_some(s)
    })
    .await;
    let doomed_share: BTreeSet<String> = targets(&first)
        .into_iter()
        .filter(|(_, jobs)| jobs.iter().any(|(e, _)| *e == doomed_id))
        .map(|(a, _)| a)
        .collect();
    assert!(!doomed_share.is_empty(), "{first}");
    doomed.proc.kill();
    let killed_at = Instant::now();

    let done = until_ended(&console, &spec, id).await;
    assert_eq!(done["status"], "finished", "{done}");
    assert_eq!(
        done["progress"]["done"], done["progress"]["total"],
        "{done}"
    );
    assert_eq!(
        done["progress"]["total"],
        json!(addresses.len()),
        "one check per target: {done}"
    );
    for (address, jobs) in targets(&done) {
        let finished: Vec<_> = jobs.iter().filter(|(_, s)| s == "finished").collect();
        assert_eq!(finished.len(), 1, "{address} finished exactly once: {done}");
        assert_eq!(
            finished[0].0, steady_id,
            "{address} finished by the engine left: {done}"
        );
        if doomed_share.contains(&address) {
            assert_eq!(
                jobs.first(),
                Some(&(doomed_id, "moved".to_owned())),
                "{address} moved off the killed engine: {done}"
            );
        }
    }
    assert!(killed_at.elapsed() < common::DEADLINE, "{done}");
    let e = console.wait_status("doomed", "not-responding").await;
    assert_eq!(e["id"], json!(doomed_id));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pool_with_no_active_engine_keeps_its_scan_waiting_and_says_so_until_one_joins() {
    let logs = logs();
    let spec = Spec::load();
    let console = Console::start(&logs, None).await;
    // An engine nobody runs: never Active.
    let absent = console
        .add_engine("absent", scan_engine_tests::free_port())
        .await;
    let pool = create_pool(&console, &spec, "idle", &[absent]).await;
    let (port, addresses) = listeners(1, Some("220 pool ESMTP\r\n"), Duration::from_secs(2));
    let site = site(&console, &spec, pool, &addresses, port, 1000).await;
    let id = start_scan(&console, &spec, site).await;

    let waiting = scan(&console, &spec, id).await;
    assert_eq!(waiting["status"], "dispatched", "{waiting}");
    let message = waiting["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("idle") && message.contains("no Active engine"),
        "{waiting}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(scan(&console, &spec, id).await["status"], "dispatched");

    // Pause and resume while it waits; it goes on waiting.
    let control = "/api/3/scans/{id}/{status}";
    let (s, _) = checked(
        &console,
        &spec,
        Method::POST,
        control,
        &format!("/api/3/scans/{id}/pause"),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(scan(&console, &spec, id).await["status"], "paused");
    let (s, v) = checked(
        &console,
        &spec,
        Method::POST,
        control,
        &format!("/api/3/scans/{id}/pause"),
        None,
    )
    .await;
    assert_eq!((s, &v["status"]), (400, &json!("400")), "{v}");
    let (s, _) = checked(
        &console,
        &spec,
        Method::POST,
        control,
        &format!("/api/3/scans/{id}/resume"),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(scan(&console, &spec, id).await["status"], "dispatched");
    let (_, active) = checked(
        &console,
        &spec,
        Method::GET,
        "/api/3/scans",
        "/api/3/scans?active=true",
        None,
    )
    .await;
    assert_eq!(active["resources"][0]["id"], json!(id), "{active}");

    // An Active engine joins the pool: the scan runs and finishes on it.
    let _joiner = reverse_engine(&logs, &console, "joiner").await;
    let joiner = id_of(&console.wait_status("joiner", "active").await);
    let (s, _) = checked(
        &console,
        &spec,
        Method::PUT,
        "/api/3/scan_engine_pools/{id}/engines/{engineId}",
        &format!("/api/3/scan_engine_pools/{pool}/engines/{joiner}"),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let done = until_ended(&console, &spec, id).await;
    assert_eq!(done["status"], "finished", "{done}");
    assert_eq!(
        targets(&done)["127.0.0.1"],
        vec![(joiner, "finished".to_owned())],
        "{done}"
    );
    let (s, v) = checked(
        &console,
        &spec,
        Method::POST,
        control,
        &format!("/api/3/scans/{id}/stop"),
        None,
    )
    .await;
    assert_eq!(s, 400, "a finished scan cannot stop: {v}");

    // A second scan, stopped while it waits for the pool's one engine to be handed work.
    let (s, _) = checked(
        &console,
        &spec,
        Method::DELETE,
        "/api/3/scan_engine_pools/{id}/engines/{engineId}",
        &format!("/api/3/scan_engine_pools/{pool}/engines/{joiner}"),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let second = start_scan(&console, &spec, site).await;
    assert_eq!(scan(&console, &spec, second).await["status"], "dispatched");
    let (s, _) = checked(
        &console,
        &spec,
        Method::POST,
        control,
        &format!("/api/3/scans/{second}/stop"),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let stopped = scan(&console, &spec, second).await;
    assert_eq!(stopped["status"], "stopped", "{stopped}");
    assert!(stopped["endTime"].is_string(), "{stopped}");
    let (s, v) = checked(
        &console,
        &spec,
        Method::POST,
        control,
        &format!("/api/3/scans/{second}/explode"),
        None,
    )
    .await;
    assert_eq!(s, 400, "{v}");

    // Every scan, a page at a time, newest first.
    let (_, page) = checked(
        &console,
        &spec,
        Method::GET,
        "/api/3/scans",
        "/api/3/scans?size=1",
        None,
    )
    .await;
    assert_eq!(page["resources"][0]["id"], json!(second), "{page}");
    assert_eq!(page["resources"][0]["siteId"], json!(site), "{page}");
    assert_eq!(page["page"]["totalResources"], json!(2), "{page}");
    assert_eq!(page["page"]["totalPages"], json!(2), "{page}");
    let rels: Vec<_> = page["links"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| l["rel"].clone())
        .collect();
    assert_eq!(rels, [json!("self"), json!("next")], "{page}");
    let (_, ended) = checked(
        &console,
        &spec,
        Method::GET,
        "/api/3/scans",
        "/api/3/scans?active=false&page=1&size=1",
        None,
    )
    .await;
    assert_eq!(ended["resources"][0]["id"], json!(id), "{ended}");
}

#[tokio::test(flavor = "multi_thread")]
async fn engine_secret_and_site_answers_fit_the_published_spec() {
    let logs = logs();
    let spec = Spec::load();
    let console = Console::start(&logs, None).await;
    let secret_path = "/api/3/scan_engines/shared_secret";
    let (s, v) = checked(&console, &spec, Method::GET, secret_path, secret_path, None).await;
    assert_eq!((s, &v["status"]), (404, &json!("404")), "{v}");
    let (s, secret) = checked(
        &console,
        &spec,
        Method::POST,
        secret_path,
        secret_path,
        None,
    )
    .await;
    assert_eq!(s, 201);
    let secret = secret.as_str().unwrap_or_default().to_owned();
    assert!(
        !secret.is_empty() && !secret.contains('"'),
        "plain text: {secret:?}"
    );
    let (s, again) = checked(&console, &spec, Method::GET, secret_path, secret_path, None).await;
    assert_eq!((s, again), (200, json!(secret)));
    let ttl = "/api/3/scan_engines/shared_secret/time_to_live";
    let (s, _) = checked(&console, &spec, Method::GET, ttl, ttl, None).await;
    assert_eq!(s, 200);

    let _engine = reverse_engine(&logs, &console, "shaped").await;
    let e = console.wait_status("shaped", "active").await;
    let (s, created) = checked(
        &console,
        &spec,
        Method::POST,
        "/api/3/scan_engines",
        "/api/3/scan_engines",
        Some(json!({"name": "never-up", "address": "127.0.0.1", "port": scan_engine_tests::free_port()})),
    )
    .await;
    assert_eq!(s, 201);
    let (_, list) = checked(
        &console,
        &spec,
        Method::GET,
        "/api/3/scan_engines",
        "/api/3/scan_engines",
        None,
    )
    .await;
    assert_eq!(
        list["resources"].as_array().map(Vec::len),
        Some(2),
        "{list}"
    );
    for id in [id_of(&e), id_of(&created)] {
        let (s, _) = checked(
            &console,
            &spec,
            Method::GET,
            "/api/3/scan_engines/{id}",
            &format!("/api/3/scan_engines/{id}"),
            None,
        )
        .await;
        assert_eq!(s, 200);
    }

    // A site needs only its name.
    let (s, bare) = checked(
        &console,
        &spec,
        Method::POST,
        "/api/3/sites",
        "/api/3/sites",
        Some(json!({"name": "bare"})),
    )
    .await;
    assert_eq!(s, 201, "{bare}");
    let (_, got) = checked(
        &console,
        &spec,
        Method::GET,
        "/api/3/sites/{id}",
        &format!("/api/3/sites/{}", id_of(&bare)),
        None,
    )
    .await;
    assert_eq!(got["name"], "bare", "{got}");
    let (_, sites) = checked(
        &console,
        &spec,
        Method::GET,
        "/api/3/sites",
        "/api/3/sites",
        None,
    )
    .await;
    assert_eq!(sites["page"]["totalResources"], json!(1), "{sites}");
    let (s, v) = checked(
        &console,
        &spec,
        Method::POST,
        "/api/3/sites",
        "/api/3/sites",
        Some(json!({"name": "x", "engineId": 999_999})),
    )
    .await;
    assert_eq!(s, 400, "{v}");

    // Not signed in: the spec's UnauthorizedError.
    let a = console
        .request(Method::GET, "/api/3/scans", None, false)
        .await;
    let problems = spec.check("GET", "/api/3/scans", a.status, &a.content_type, &a.body);
    assert!(problems.is_empty() && a.status == 401, "{problems:?} {a:?}");
    let (s, _) = checked(
        &console,
        &spec,
        Method::DELETE,
        secret_path,
        secret_path,
        None,
    )
    .await;
    assert_eq!(s, 200);
}
