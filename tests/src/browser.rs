//! A real browser for the web-page tests: headless Chromium driven through WebDriver
//! (`chromedriver`), as a child process of the test.
//!
//! ```no_run
//! # async fn demo(logs: &scan_engine_tests::TestLogs) {
//! use scan_engine_tests::browser::Browser;
//! let browser = Browser::start(logs).await;
//! browser.goto("https://127.0.0.1:3780/login").await;
//! let title = browser.text("h1").await;
//! # }
//! ```
//!
//! Chromium and its driver come from the system (Debian's `chromium` and `chromium-driver`;
//! `CHROMIUM` and `CHROMEDRIVER` name other binaries). When they are missing, [`Browser::start`]
//! panics saying how to install them: the browser tests never skip silently.
//!
//! The browser trusts any certificate (`--ignore-certificate-errors`): the console under test
//! serves a self-signed one. Its window is 1280×900 unless a test resizes it.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use fantoccini::{Client, ClientBuilder, Locator, elements::Element};
use serde_json::{Value, json};

use crate::{Proc, ProcBuilder, TestLogs, free_loopback_addr};

/// How long a browser test waits for something to appear on a page.
pub const PAGE_DEADLINE: Duration = Duration::from_secs(30);

/// `name` as given by `env`, else the first of `candidates` that exists.
fn find_binary(env: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    for c in candidates {
        let p = PathBuf::from(c);
        if p.is_absolute() {
            if p.is_file() {
                return Some(p);
            }
            continue;
        }
        if let Some(path) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&path) {
                let full = dir.join(c);
                if full.is_file() {
                    return Some(full);
                }
            }
        }
    }
    None
}

/// The Chromium binary and its WebDriver, or why they are missing.
pub fn find_chromium() -> Result<(PathBuf, PathBuf), String> {
    let chromium = find_binary(
        "CHROMIUM",
        &["chromium", "chromium-browser", "/usr/bin/chromium"],
    );
    let driver = find_binary("CHROMEDRIVER", &["chromedriver", "/usr/bin/chromedriver"]);
    match (chromium, driver) {
        (Some(c), Some(d)) => Ok((c, d)),
        _ => Err(
            "the browser tests need headless Chromium and its WebDriver: install Debian's \
                  `chromium` and `chromium-driver` (`apt-get install chromium chromium-driver`), \
                  or set CHROMIUM and CHROMEDRIVER"
                .into(),
        ),
    }
}

/// A headless Chromium session; the driver process is stopped on drop.
pub struct Browser {
    pub client: Client,
    driver: Proc,
}

impl Browser {
    /// Starts `chromedriver` and a headless Chromium session.
    pub async fn start(logs: &TestLogs) -> Browser {
        let (chromium, driver_bin) = find_chromium().unwrap_or_else(|why| {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true");
            panic!(
                "{why}{}",
                if ci {
                    " (CI must install them: .ci/run does)"
                } else {
                    ""
                }
            )
        });
        let addr = free_loopback_addr();
        let mut driver = ProcBuilder::new(&driver_bin)
            .name("chromedriver")
            .logs(logs)
            .arg(format!("--port={}", addr.port()))
            .arg("--allowed-ips=127.0.0.1")
            .spawn();
        driver.wait_for_port(addr, Duration::from_secs(30)).await;
        let profile = logs.path("chromium-profile");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--ignore-certificate-errors",
                    "--no-first-run",
                    "--disable-extensions",
                    "--disable-background-networking",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        // The WebDriver client speaks plain HTTP to the driver on loopback.
        let mut builder =
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        builder.capabilities(caps);
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = loop {
            match builder.connect(&format!("http://{addr}")).await {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("browser: not ready yet ({e}); retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => panic!(
                    "cannot start a headless Chromium session: {e}\n{}",
                    driver.log_tail()
                ),
            }
        };
        Browser { client, driver }
    }

    /// Opens `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("opening {url}: {e}"));
    }

    /// The page's address, path and query only.
    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("current URL");
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// The element matching `css`, waiting for it to appear.
    pub async fn find(&self, css: &str) -> Element {
        let deadline = Instant::now() + PAGE_DEADLINE;
        loop {
            match self.client.find(Locator::Css(css)).await {
                Ok(e) => return e,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => panic!(
                    "no element {css:?} on {} within {PAGE_DEADLINE:?}: {e}\n{}",
                    self.path().await,
                    self.body_text().await
                ),
            }
        }
    }

    /// Every element matching `css` now.
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        self.client
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_default()
    }

    /// Whether an element matches `css` now.
    pub async fn exists(&self, css: &str) -> bool {
        !self.find_all(css).await.is_empty()
    }

    /// The visible text of the element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap_or_default()
    }

    /// The whole page's visible text.
    pub async fn body_text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(b) => b.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Clicks the element matching `css`.
    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("clicking {css:?}: {e}"));
    }

    /// Clicks the element matching `css` (a link or a form's button) and waits until the next
    /// page has loaded.
    pub async fn follow(&self, css: &str) {
        self.script("window.beforeThisClick = true; return null", vec![])
            .await;
        self.click(css).await;
        self.until(&format!("the page after clicking {css:?} to load"), || async {
            let done = self
                .client
                .execute(
                    "return window.beforeThisClick === undefined && document.readyState === 'complete'",
                    vec![],
                )
                .await
                .ok()?;
            (done == Value::Bool(true)).then_some(())
        })
        .await;
    }

    /// Replaces the value of the input matching `css` with `value`, as typed.
    pub async fn fill(&self, css: &str, value: &str) {
        let e = self.find(css).await;
        e.clear()
            .await
            .unwrap_or_else(|e| panic!("clearing {css:?}: {e}"));
        e.send_keys(value)
            .await
            .unwrap_or_else(|e| panic!("typing into {css:?}: {e}"));
    }

    /// Runs a script in the page and returns its value.
    pub async fn script(&self, js: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(js, args)
            .await
            .unwrap_or_else(|e| panic!("running a script: {e}"))
    }

    /// Runs an asynchronous script (its last argument is the callback) and returns its value.
    pub async fn script_async(&self, js: &str, args: Vec<Value>) -> Value {
        self.client
            .execute_async(js, args)
            .await
            .unwrap_or_else(|e| panic!("running a script: {e}"))
    }

    /// Waits until `check` returns `Some`; panics with `what` and the page's text after
    /// [`PAGE_DEADLINE`].
    pub async fn until<T, F, Fut>(&self, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + PAGE_DEADLINE;
        loop {
            if let Some(v) = check().await {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "{what} did not happen within {PAGE_DEADLINE:?}; the page ({}) shows:\n{}",
                    self.path().await,
                    self.body_text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Sets the window's size.
    pub async fn resize(&self, width: u32, height: u32) {
        self.client
            .set_window_size(width, height)
            .await
            .unwrap_or_else(|e| panic!("resizing the window: {e}"));
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        self.client.screenshot().await.expect("a screenshot")
    }

    /// The driver's logs, for messages.
    pub fn driver_log_tail(&self) -> String {
        self.driver.log_tail()
    }
}
