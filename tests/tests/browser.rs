//! The console's web pages in a real browser: headless Chromium through WebDriver against a
//! real `security-console` and real `scan-engine`s on loopback. Each test asserts what an
//! administrator sees: the words, colours and arrows on the page, the notices after a form.
//!
//! Needs Debian's `chromium` and `chromium-driver` (the test fails, saying so, without them).
//! Build the binaries first: `cargo build -p security-console -p scan-engine`, then
//! `cargo test -p scan-engine-tests --test browser -- --test-threads=1`.
//!
//! Screenshots of the engines page for the documentation are written by the ignored test
//! `screenshots` (`cargo test -p scan-engine-tests --test browser -- --ignored screenshots`).

mod common;

use std::{
    io::{Read as _, Write as _},
    net::TcpListener,
    time::Duration,
};

use common::{Console, Engine, Mode, reverse_engine};
use scan_engine_tests::{TestLogs, browser::Browser, free_port};
use serde_json::{Value, json};

/// The state colours of the style sheet, as the browser computes them.
const GREEN: &str = "rgba(26, 127, 55, 1)";
const RED: &str = "rgba(198, 40, 40, 1)";

fn logs() -> TestLogs {
    TestLogs::for_current_test()
}

/// A browser signed in to `console`.
struct Ui {
    browser: Browser,
    base: String,
}

impl Ui {
    async fn start(logs: &TestLogs, console: &Console) -> Ui {
        let browser = Browser::start(logs).await;
        Ui {
            browser,
            base: format!("https://{}", console.api),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn open(&self, path: &str) {
        self.browser.goto(&self.url(path)).await;
    }

    async fn sign_in_with(&self, user: &str, password: &str) {
        self.open("/login").await;
        self.browser.fill("#user", user).await;
        self.browser.fill("#password", password).await;
        self.browser.follow("form button[type=submit]").await;
    }

    async fn sign_in(&self, logs: &TestLogs) {
        self.sign_in_with("admin", &password(logs)).await;
        self.browser
            .until("the sign-in to reach Administration", || async {
                (self.browser.path().await == "/administration").then_some(())
            })
            .await;
    }

    /// The row of the engine named `name` on the engines page.
    async fn row(&self, name: &str) -> String {
        let rows = self.browser.find_all("tr[data-engine-id]").await;
        for r in rows {
            let Ok(th) = r.find(fantoccini::Locator::Css("th")).await else {
                continue;
            };
            if th.text().await.unwrap_or_default() == name {
                let id = r
                    .attr("data-engine-id")
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                return format!("tr[data-engine-id=\"{id}\"]");
            }
        }
        panic!(
            "no row for engine {name} on the page:\n{}",
            self.browser.body_text().await
        );
    }

    /// What a user sees in an engine's Communication Status: the arrow's direction, the
    /// colour of the arrow and of the state's words, and the words.
    async fn communication(&self, name: &str) -> (String, String, String, String) {
        let row = self.row(name).await;
        let b = &self.browser;
        let svg = b.find(&format!("{row} .comm svg.arrow")).await;
        let class = svg.attr("class").await.ok().flatten().unwrap_or_default();
        let pointing = if class.contains("to-engine") {
            "to the Engine"
        } else if class.contains("to-console") {
            "to the Console"
        } else {
            "nowhere"
        };
        let arrow_colour = b
            .find(&format!("{row} .comm"))
            .await
            .css_value("color")
            .await
            .unwrap_or_default();
        let state = b.find(&format!("{row} .state")).await;
        let words_colour = state.css_value("color").await.unwrap_or_default();
        assert_eq!(
            arrow_colour, words_colour,
            "{name}: arrow and words differ in colour"
        );
        (
            pointing.to_owned(),
            arrow_colour,
            state.text().await.unwrap_or_default(),
            b.find(&format!("{row} .status"))
                .await
                .attr("aria-label")
                .await
                .ok()
                .flatten()
                .unwrap_or_default(),
        )
    }

    /// Waits until the engine's row shows `words`, without reloading the page.
    async fn wait_state(&self, name: &str, words: &str) {
        self.browser
            .until(&format!("{name} to show {words}"), || async {
                let row = self.row(name).await;
                let shown = self
                    .browser
                    .find(&format!("{row} .state"))
                    .await
                    .text()
                    .await
                    .unwrap_or_default();
                (shown == words).then_some(())
            })
            .await;
    }

    /// A form post from the page's own script: `csrf` sends the page's token, `cookies` the
    /// session cookie. Returns the final HTTP status.
    async fn post_from_page(&self, path: &str, fields: Value, csrf: bool, cookies: bool) -> u64 {
        let v = self
            .browser
            .script_async(
                r#"
                const [path, fields, csrf, cookies, done] = arguments;
                const body = new URLSearchParams(fields);
                if (csrf) body.set("csrf", document.querySelector("input[name=csrf]").value);
                fetch(path, { method: "POST", body, credentials: cookies ? "same-origin" : "omit" })
                  .then((r) => done(r.status), (e) => done(String(e)));
                "#,
                vec![json!(path), fields, json!(csrf), json!(cookies)],
            )
            .await;
        v.as_u64()
            .unwrap_or_else(|| panic!("POST {path} from the page: {v}"))
    }
}

fn password(logs: &TestLogs) -> String {
    std::fs::read_to_string(logs.path("console-password"))
        .expect("the console's password file")
        .trim()
        .to_owned()
}

/// A console-to-engine engine on a free port that already trusts `console`.
async fn trusted_engine(logs: &TestLogs, console: &Console, name: &str) -> (Engine, u16) {
    let fp = console.fingerprint().await;
    let port = free_port();
    let mut engine = Engine::start(
        logs,
        name,
        Mode::Standard {
            port,
            trusted: Some(fp),
        },
    );
    engine
        .proc
        .wait_for_port(([127, 0, 0, 1], port).into(), common::DEADLINE)
        .await;
    (engine, port)
}

#[tokio::test(flavor = "multi_thread")]
async fn signing_in_is_required_and_posts_without_session_or_token_are_refused() {
    let logs = logs();
    let console = Console::start(&logs, None).await;
    let ui = Ui::start(&logs, &console).await;
    let b = &ui.browser;

    // A page asked for without a session leads to the sign-in form.
    ui.open("/administration/engines").await;
    assert_eq!(b.path().await, "/login");
    assert_eq!(b.text("h1").await, "Sign in to the Security Console");

    // A wrong password is refused, in words.
    ui.sign_in_with("admin", "not-the-password").await;
    assert!(
        b.text("#sign-in-problem").await.contains("not right"),
        "{}",
        b.body_text().await
    );

    // By keyboard alone: the user name field has the focus, Tab moves to the password, Enter
    // sends the form.
    ui.open("/login").await;
    let focused = b.script("return document.activeElement.id", vec![]).await;
    assert_eq!(focused, json!("user"));
    b.find("#user")
        .await
        .send_keys("admin\u{E004}")
        .await
        .expect("typing");
    let focused = b.script("return document.activeElement.id", vec![]).await;
    assert_eq!(focused, json!("password"));
    b.find("#password")
        .await
        .send_keys(&format!("{}\u{E007}", password(&logs)))
        .await
        .expect("typing");
    b.until("the keyboard sign-in to reach Administration", || async {
        (b.path().await == "/administration").then_some(())
    })
    .await;
    // The session cookie is out of the page scripts' reach and bound to this site.
    let cookies = b.client.get_all_cookies().await.expect("cookies");
    let session = cookies
        .iter()
        .find(|c| c.name() == "__Host-console-session")
        .unwrap_or_else(|| panic!("no session cookie in {cookies:?}"));
    assert_eq!(session.http_only(), Some(true), "{session:?}");
    assert_eq!(session.secure(), Some(true), "{session:?}");
    assert_eq!(
        format!("{:?}", session.same_site()),
        "Some(Strict)",
        "{session:?}"
    );
    let visible = b.script("return document.cookie", vec![]).await;
    assert!(
        !visible
            .as_str()
            .unwrap_or_default()
            .contains("console-session"),
        "{visible}"
    );

    // Administration → Scan Options → manage next to Engines.
    assert!(b.text("#scan-options").await.contains("Scan Options"));
    b.follow("a[href=\"/administration/engines\"]").await;
    assert_eq!(b.text("h1").await, "Scan Engines");

    // Forms without the page's token, or without the session, change nothing.
    let engine = json!({"name": "forged", "address": "127.0.0.1", "port": "9"});
    let no_token = ui
        .post_from_page("/administration/engines", engine.clone(), false, true)
        .await;
    assert_eq!(no_token, 403);
    let no_cookie = ui
        .post_from_page("/administration/engines", engine.clone(), true, false)
        .await;
    assert_eq!(no_cookie, 403);
    let revoke = ui
        .post_from_page("/administration/shared-secret", json!({}), false, true)
        .await;
    assert_eq!(revoke, 403);
    assert!(console.engines().await.is_empty());
    // The same form with both is accepted (so the refusals were about the token and cookie).
    let both = ui
        .post_from_page("/administration/engines", engine, true, true)
        .await;
    assert_eq!(both, 200);
    assert!(console.engine_named("forged").await.is_some());

    // Signing out ends the session: the pages lead to the sign-in form again.
    b.follow("form.sign-out button").await;
    assert_eq!(b.path().await, "/login");
    ui.open("/administration/engines").await;
    assert_eq!(b.path().await, "/login");
}

/// Engines in every state the system tests produce: `rev-active` (engine-to-console),
/// `std-active`, `std-pending` (its consoles.xml does not enable the console), `std-old` (another
/// version) and `std-down` (active; the caller may kill it). Returns them once the console shows
/// each state.
async fn engines_in_every_state(logs: &TestLogs, console: &Console) -> Vec<Engine> {
    let fp = console.fingerprint().await;
    let reverse = reverse_engine(logs, console, "rev-active").await;
    let (standard, port) = trusted_engine(logs, console, "std-active").await;
    console.add_engine("std-active", port).await;
    let pending_port = free_port();
    let mut pending = Engine::start(
        logs,
        "std-pending",
        Mode::Standard {
            port: pending_port,
            trusted: None,
        },
    );
    pending
        .proc
        .wait_for_port(([127, 0, 0, 1], pending_port).into(), common::DEADLINE)
        .await;
    console.add_engine("std-pending", pending_port).await;
    let old_port = free_port();
    let mut old = Engine::start_with_env(
        logs,
        "std-old",
        Mode::Standard {
            port: old_port,
            trusted: Some(fp),
        },
        &[("SCAN_ENGINE_TEST_ONLY_PRODUCT_VERSION", "9.9.9")],
    );
    old.wait_for_log("for tests only").await;
    console.add_engine("std-old", old_port).await;
    let (doomed, doomed_port) = trusted_engine(logs, console, "std-down").await;
    console.add_engine("std-down", doomed_port).await;
    console.wait_status("rev-active", "active").await;
    console.wait_status("std-active", "active").await;
    console
        .wait_status("std-pending", "pending-authorization")
        .await;
    console.wait_status("std-old", "incompatible-version").await;
    console.wait_status("std-down", "active").await;
    vec![reverse, standard, pending, old, doomed]
}

#[tokio::test(flavor = "multi_thread")]
async fn the_engines_table_shows_method_by_arrow_and_state_by_colour_and_words() {
    let logs = logs();
    let console = Console::start(&logs, None).await;
    let mut engines = engines_in_every_state(&logs, &console).await;
    let mut doomed = engines.pop().expect("std-down");

    let ui = Ui::start(&logs, &console).await;
    ui.sign_in(&logs).await;
    ui.open("/administration/engines").await;
    let b = &ui.browser;
    // Column headers as the seeds name them.
    let headers = b.text("table.engines thead").await;
    for h in [
        "Name",
        "Address",
        "Port",
        "Product Version",
        "Last Refreshed",
        "Communication Status",
        "Refresh",
    ] {
        assert!(headers.contains(h), "{headers}");
    }

    let want = [
        ("rev-active", "to the Console", GREEN, "Active"),
        ("std-active", "to the Engine", GREEN, "Active"),
        ("std-pending", "to the Engine", RED, "Pending Authorization"),
        ("std-old", "to the Engine", RED, "Incompatible"),
        ("std-down", "to the Engine", GREEN, "Active"),
    ];
    for (name, pointing, colour, words) in want {
        let (p, c, w, label) = ui.communication(name).await;
        assert_eq!(
            (p.as_str(), c.as_str(), w.as_str()),
            (pointing, colour, words),
            "{name}"
        );
        // A screen reader hears the method and the state too.
        let method = if pointing == "to the Engine" {
            "Console to Engine"
        } else {
            "Engine to Console"
        };
        assert!(
            label.contains(method) && label.contains(words),
            "{name}: {label}"
        );
    }
    // The version the engine announced shows in its row.
    let old_row = ui.row("std-old").await;
    assert!(b.text(&old_row).await.contains("9.9.9"));

    // At a phone's width each engine is a card that fits the screen, its state in view.
    b.resize(390, 900).await;
    let overflow = b
        .script(
            r#"return Array.from(document.querySelectorAll(".state, .comm, th[scope=row]"))
                 .filter((e) => e.getBoundingClientRect().right > window.innerWidth)
                 .map((e) => e.textContent)"#,
            vec![],
        )
        .await;
    assert_eq!(overflow, json!([]), "cut off at 390 px");
    let wide = b
        .script(
            "return document.documentElement.scrollWidth > window.innerWidth",
            vec![],
        )
        .await;
    assert_eq!(wide, json!(false), "the page scrolls sideways at 390 px");
    b.resize(1280, 900).await;

    // The table updates itself while open: an engine that goes down turns red, "Down",
    // without the page being loaded again.
    b.script("window.stillTheSamePage = 42; return null", vec![])
        .await;
    doomed.proc.kill();
    ui.wait_state("std-down", "Down").await;
    let (_, colour, _, _) = ui.communication("std-down").await;
    assert_eq!(colour, RED);
    let same = b.script("return window.stillTheSamePage", vec![]).await;
    assert_eq!(same, json!(42), "the page was reloaded");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_engine_is_added_refreshed_and_removed_from_the_page() {
    let logs = logs();
    let console = Console::start(&logs, None).await;
    let (_engine, port) = trusted_engine(&logs, &console, "web-added").await;
    let ui = Ui::start(&logs, &console).await;
    ui.sign_in(&logs).await;
    let b = &ui.browser;

    // Administration → Scan Options → create next to Engines.
    b.follow("a[href=\"/administration/engines/new\"]").await;
    assert_eq!(b.text("h1").await, "Add Scan Engine");
    assert_eq!(
        b.find("#port").await.prop("value").await.ok().flatten(),
        Some("40814".to_owned()),
        "the port defaults to 40814"
    );
    // The API's validation messages, next to the field at fault.
    b.follow("form.engine-form button[type=submit]").await;
    assert!(b.text("#name-error").await.contains("name is required"));
    assert_eq!(
        b.find("#name")
            .await
            .attr("aria-invalid")
            .await
            .ok()
            .flatten(),
        Some("true".to_owned())
    );
    b.fill("#name", "web-added").await;
    b.fill("#address", "127.0.0.1").await;
    b.fill("#port", "0").await;
    b.follow("form.engine-form button[type=submit]").await;
    assert!(
        b.text("#port-error")
            .await
            .contains("port must be an integer from 1 to 65535")
    );
    // What was typed is kept.
    assert_eq!(
        b.find("#name").await.prop("value").await.ok().flatten(),
        Some("web-added".to_owned())
    );
    b.fill("#port", &port.to_string()).await;
    b.follow("form.engine-form button[type=submit]").await;
    assert_eq!(b.path().await, "/administration/engines");
    assert!(
        b.text(".notices")
            .await
            .contains("Added scan engine web-added")
    );
    ui.wait_state("web-added", "Active").await;

    // The same name again is refused next to the name.
    ui.open("/administration/engines/new").await;
    b.fill("#name", "web-added").await;
    b.fill("#address", "127.0.0.1").await;
    b.follow("form.engine-form button[type=submit]").await;
    assert!(b.text("#name-error").await.contains("already exists"));

    // The Refresh button checks the engine now and says what it found.
    ui.open("/administration/engines").await;
    let row = ui.row("web-added").await;
    b.follow(&format!("{row} button[aria-label=\"Refresh web-added\"]"))
        .await;
    assert!(
        b.text(".notices")
            .await
            .contains("Refreshed web-added: Active"),
        "{}",
        b.body_text().await
    );
    // So does Refresh Displayed Engines, for every engine on the page.
    b.follow("form[action=\"/administration/engines/refresh\"] button")
        .await;
    assert!(
        b.text(".notices")
            .await
            .contains("Refreshed the 1 displayed engine")
    );

    // Removing asks first; Cancel keeps the engine.
    let row = ui.row("web-added").await;
    b.follow(&format!("{row} a[aria-label=\"Remove web-added\"]"))
        .await;
    assert_eq!(b.text("h1").await, "Remove scan engine web-added?");
    b.follow("a.button[href=\"/administration/engines\"]").await;
    ui.row("web-added").await;
    let row = ui.row("web-added").await;
    b.follow(&format!("{row} a[aria-label=\"Remove web-added\"]"))
        .await;
    b.follow("button.danger").await;
    assert!(
        b.text(".notices")
            .await
            .contains("Removed scan engine web-added")
    );
    assert!(!b.body_text().await.contains("127.0.0.1"));
    assert!(console.engines().await.is_empty());
}

/// `mm:ss` as seconds.
fn seconds_of(text: &str) -> u64 {
    let (m, s) = text
        .split_once(':')
        .unwrap_or_else(|| panic!("not mm:ss: {text:?}"));
    m.parse::<u64>().expect("minutes") * 60 + s.parse::<u64>().expect("seconds")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shared_secret_is_generated_shown_once_copied_and_revoked() {
    let logs = logs();
    let console = Console::start(&logs, None).await;
    let ui = Ui::start(&logs, &console).await;
    ui.sign_in(&logs).await;
    ui.open("/administration/engines").await;
    let b = &ui.browser;
    let section = b.text("#shared-secret").await;
    assert!(section.contains("Generate Scan Engine Shared Secret"));
    assert!(
        section.contains("Many engines may use the same secret"),
        "{section}"
    );
    assert!(section.contains("expires 60 minutes"), "{section}");
    assert!(
        section.contains("No shared secret is valid now"),
        "{section}"
    );

    b.follow("form[action=\"/administration/shared-secret\"] button")
        .await;
    let value = b
        .find("#secret-value")
        .await
        .prop("value")
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    let (status, api_value) = console
        .call(
            reqwest::Method::GET,
            "/api/3/scan_engines/shared_secret",
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        api_value,
        json!(value),
        "the page shows the console's secret"
    );

    // Its lifetime counts down from 60 minutes.
    let first = seconds_of(&b.text("#secret-countdown").await);
    assert!((3500..=3600).contains(&first), "{first}");
    b.until("the countdown to move", || async {
        let now = seconds_of(&b.text("#secret-countdown").await);
        (now < first).then_some(())
    })
    .await;

    b.click("#copy-secret").await;
    let copied = b.text("#copy-status").await;
    assert_eq!(copied, "Copied to the clipboard.");

    // Shown once: the page loaded again shows the time left, not the secret.
    ui.open("/administration/engines").await;
    assert!(!b.exists("#secret-value").await);
    assert!(!b.body_text().await.contains(&value));
    assert!(b.text("#secret-valid").await.contains("valid for another"));

    b.follow("form[action=\"/administration/shared-secret/revoke\"] button")
        .await;
    assert!(
        b.text(".notices")
            .await
            .contains("Revoked the shared secret")
    );
    assert!(
        b.text("#secret-none")
            .await
            .contains("No shared secret is valid now")
    );
    let (status, _) = console
        .call(
            reqwest::Method::GET,
            "/api/3/scan_engines/shared_secret",
            None,
        )
        .await;
    assert_eq!(status, 404);
}

/// A TCP listener on 127.0.0.1 that greets each client with `banner`.
fn banner_listener(banner: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("a listener");
    let port = l.local_addr().expect("its address").port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let _ = s.write_all(banner.as_bytes());
                let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
                let mut buf = [0u8; 64];
                let _ = s.read(&mut buf);
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn a_site_is_created_scanned_and_its_findings_shown() {
    let logs = logs();
    let console = Console::start(&logs, None).await;
    let _engine = reverse_engine(&logs, &console, "scanner").await;
    console.wait_status("scanner", "active").await;
    let ssh = banner_listener("SSH-2.0-BrowserTest_1.0\r\n");
    let closed = free_port();

    let ui = Ui::start(&logs, &console).await;
    ui.sign_in(&logs).await;
    let b = &ui.browser;
    b.follow("header nav a[href=\"/sites\"]").await;
    assert_eq!(b.text("h1").await, "Sites");
    // A site without targets is refused next to the field.
    b.fill("#site-name", "loopback").await;
    b.follow("form[action=\"/sites\"] button[type=submit]")
        .await;
    assert!(
        b.text("#site-targets-error")
            .await
            .contains("at least one target")
    );
    b.fill("#site-targets", "127.0.0.1").await;
    b.fill("#site-ports", &format!("{ssh}, {closed}")).await;
    b.follow("form[action=\"/sites\"] button[type=submit]")
        .await;
    assert_eq!(b.text("h1").await, "Site loopback");

    // The site's Engines tab: Add Scan Engine with the API's messages.
    assert!(b.text("#engines-tab").await.contains("Engines"));
    b.fill("#name", "<bad>").await;
    b.fill("#address", "127.0.0.1").await;
    b.follow("form.engine-form button[type=submit]").await;
    let error = b.text("#name-error").await;
    assert!(error.starts_with("name "), "{error}");
    // A good one is added and the site's page says so.
    b.fill("#name", "site-added").await;
    b.fill("#port", "9").await;
    b.follow("form.engine-form button[type=submit]").await;
    assert!(
        b.text(".notices")
            .await
            .contains("Added scan engine site-added"),
        "{}",
        b.body_text().await
    );
    assert!(console.engine_named("site-added").await.is_some());

    b.follow("form.scan-form button[type=submit]").await;
    assert!(b.path().await.starts_with("/scans/"), "{}", b.path().await);
    // The page follows the scan by itself until it ends, then shows what it found.
    b.until("the scan to finish", || async {
        (b.text("#scan-status").await == "Finished").then_some(())
    })
    .await;
    let found = b.text("table.assets").await;
    assert!(found.contains("127.0.0.1"), "{found}");
    assert!(found.contains(&format!("{ssh}/tcp")), "{found}");
    assert!(found.contains("SSH-2.0-BrowserTest_1.0"), "{found}");
    assert!(!found.contains(&format!("{closed}/tcp")), "{found}");
    let counts = b.text("#scan-counts").await;
    assert!(counts.starts_with("2 of 2 checks"), "{counts}");

    b.follow("header nav a[href=\"/assets\"]").await;
    assert!(
        b.text("table.assets")
            .await
            .contains("SSH-2.0-BrowserTest_1.0")
    );
}

/// The files the engines page's look comes from; the screenshots record their digests.
const SCREENSHOT_SOURCES: [&str; 5] = [
    "console/src/web/static/console.css",
    "console/src/web/static/console.js",
    "console/src/web/mod.rs",
    "console/src/web/engines.rs",
    "console/src/web/secret.rs",
];
/// Where the screenshots and the digests of their sources are kept.
const SCREENSHOT_DIR: &str = "docs/screenshots";
const SCREENSHOT_RECORD: &str = "docs/screenshots/engines-page.sources";
/// The command that writes them.
const SCREENSHOT_COMMAND: &str =
    "cargo test -p scan-engine-tests --test browser -- --ignored screenshots";

/// One line per source: its SHA-256 and its path.
fn screenshot_sources() -> String {
    let root = scan_engine_tests::workspace_root();
    SCREENSHOT_SOURCES
        .iter()
        .map(|path| {
            let bytes = std::fs::read(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
            format!(
                "{} {path}\n",
                scan_engine_protocol::Fingerprint::of_der(&bytes).as_str()
            )
        })
        .collect()
}

#[test]
fn the_screenshots_show_the_current_engines_page() {
    let root = scan_engine_tests::workspace_root();
    let recorded = std::fs::read_to_string(root.join(SCREENSHOT_RECORD)).unwrap_or_default();
    assert_eq!(
        recorded,
        screenshot_sources(),
        "the engines page changed since its screenshots were taken: run `{SCREENSHOT_COMMAND}` \
         (after `cargo build -p security-console -p scan-engine`) and commit {SCREENSHOT_DIR}"
    );
    for png in ["engines-desktop.png", "engines-narrow.png"] {
        assert!(
            root.join(SCREENSHOT_DIR).join(png).is_file(),
            "{SCREENSHOT_DIR}/{png} is missing: run `{SCREENSHOT_COMMAND}`"
        );
    }
}

/// Writes the documentation's screenshots of the engines page (desktop and phone widths) with
/// engines in every state, and the digests of the files they were made from.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "writes docs/screenshots; run on purpose"]
async fn screenshots() {
    let logs = logs();
    let console = Console::start(&logs, None).await;
    let mut engines = engines_in_every_state(&logs, &console).await;
    let mut doomed = engines.pop().expect("std-down");
    doomed.proc.kill();
    console.wait_status("std-down", "not-responding").await;
    let ui = Ui::start(&logs, &console).await;
    ui.sign_in(&logs).await;
    let root = scan_engine_tests::workspace_root();
    let dir = root.join(SCREENSHOT_DIR);
    std::fs::create_dir_all(&dir).expect("the screenshot directory");
    for (file, width, height) in [
        ("engines-desktop.png", 1280, 900),
        ("engines-narrow.png", 390, 1400),
    ] {
        ui.browser.resize(width, height).await;
        ui.open("/administration/engines").await;
        ui.wait_state("std-down", "Down").await;
        let png = ui.browser.screenshot().await;
        std::fs::write(dir.join(file), png).expect("writing a screenshot");
    }
    std::fs::write(root.join(SCREENSHOT_RECORD), screenshot_sources()).expect("the record");
}
