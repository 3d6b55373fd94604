//! `cargo xtask <command>`: the project's automation, in Rust so it runs wherever cargo does.
//!
//! Every command is documented in `cargo xtask --help`; the README's test command is
//! `cargo xtask test`.

mod bench;
mod chart;
mod cluster;
mod demo;
mod fuzz;
mod images;
mod kube_score;
mod oci;

use std::ffi::OsString;
use std::fmt;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};

/// Project automation for scan-engine-operator.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build (once) the pinned control-plane binaries: etcd, kube-apiserver,
    /// kube-controller-manager, kubectl and helm.
    ///
    /// They are compiled from Go modules into a cache outside the repository (Go is
    /// required). When KUBEBUILDER_ASSETS names a directory that already holds etcd and
    /// kube-apiserver, that directory is used instead and nothing is built. Prints the
    /// directory holding the binaries; use it as KUBEBUILDER_ASSETS for the control-plane tests.
    K8sBins {
        /// Print only the directory (for `export KUBEBUILDER_ASSETS=$(cargo xtask k8s-bins --print-dir)`).
        #[arg(long)]
        print_dir: bool,
    },
    /// Regenerate everything derived from the CRD types: crds/*.yaml, docs/crd-reference.md and
    /// the chart's CRD templates (runs the operator's `crdgen`, then `chart-crds`).
    Crds {
        /// Arguments for crdgen instead of the defaults (e.g. none of them prints the YAML).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Run the test tiers (the README's test command) and print a summary table.
    ///
    /// Tiers, in order:
    ///   unit           cargo test of every crate but the integration suite, rustfmt and clippy;
    ///   system         console and engines as real processes over loopback, the console's
    ///                  web pages in headless Chromium (needs chromium and chromium-driver),
    ///                  and in network namespaces (the latter needs root and iproute2);
    ///   control-plane  a real etcd, kube-apiserver and kube-controller-manager (built from
    ///                  pinned Go modules by `k8s-bins`), with the operator, console and engines
    ///                  as local processes; the chart (helm, kube-score) and the kubectl plugin.
    ///   e2e            tests/tests/e2e.rs on a real cluster: with KUBECONFIG set, that
    ///                  cluster (the images must be on its nodes); otherwise the images are
    ///                  built (`images`), the local cluster is started (`cluster up`, root),
    ///                  the suite runs, and the cluster is stopped again
    ///                  (XTASK_KEEP_CLUSTER=1 keeps it).
    ///
    /// Exits non-zero if any tier fails. A tier whose test file does not exist yet is reported
    /// as "not present".
    #[command(verbatim_doc_comment)]
    Test {
        /// Which tier to run.
        #[arg(long, value_enum, default_value_t = Tier::All)]
        tier: Tier,
        /// Stop at the first failing step instead of running the remaining tiers.
        #[arg(long)]
        fail_fast: bool,
    },
    /// Run the demo: build the images, start the local cluster (root) — or use the cluster
    /// KUBECONFIG names when it answers, loading nothing —, install the chart, apply
    /// examples/managed-console.yaml in the namespace `scan-engine-demo`, wait until every
    /// ScanEngine is Ready and print the engine and console tables. Idempotent; `--down` tears
    /// it down.
    Demo(demo::DemoArgs),
    /// Build the three images (scan-engine-operator, scan-engine, security-console) from
    /// host-built release binaries, without pulling anything and without a container engine,
    /// as image archives in target/images/*.tar. `--check` inspects them instead (non-root
    /// user, starts on a read-only root with no network and no capabilities; root needed).
    Images(images::ImagesArgs),
    /// Score the chart's rendering and the operator's objects (golden files) with kube-score;
    /// every finding fails except those docs/manifests.md lists with a reason.
    KubeScore,
    /// Regenerate the chart's CRD templates from crds/ (`--check`: fail when stale).
    ChartCrds(chart::ChartCrdsArgs),
    /// Print the chart's RBAC (ServiceAccount, roles, bindings) as rendered by `helm template`.
    ChartRbac(chart::ChartRbacArgs),
    /// Run a real single-node Kubernetes cluster on this host: `up`, `down` (root), `status`,
    /// `verify`, `kubeconfig`.
    ///
    /// Everything is built from pinned sources or installed by the command; see docs/cluster.md.
    Cluster(cluster::ClusterArgs),
    /// Run a benchmark and print its table: `scan` (the engine's scanner against nmap -sT),
    /// `console` (N reverse-paired engine sessions against one console) or `operator`
    /// (N ScanEngines on a real control plane). See docs/performance.md.
    ///
    /// Builds the benchmarked binaries with --release; `cargo xtask bench <name> --help` lists
    /// a benchmark's options.
    /// Run every fuzz target (fuzz/) for a bounded time on the stable toolchain and print
    /// executions per target; fails on a crash. cargo-fuzz is installed once into the cache.
    /// The test command runs each target briefly; `--seconds 600` fuzzes longer.
    Fuzz(fuzz::FuzzArgs),
    Bench {
        /// The benchmark's name and options.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Tier {
    Unit,
    System,
    ControlPlane,
    E2e,
    All,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Cmd::K8sBins { print_dir } => {
            let dir = k8s_bins()?;
            if print_dir {
                println!("{}", dir.display());
            } else {
                println!("control-plane binaries are in {}", dir.display());
                println!("export KUBEBUILDER_ASSETS={}", dir.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Crds { args } => {
            let mut cmd = cargo();
            cmd.args([
                "run",
                "--quiet",
                "-p",
                "scan-engine-operator",
                "--bin",
                "crdgen",
                "--",
            ])
            .current_dir(workspace_root());
            let regenerate = args.is_empty();
            if regenerate {
                cmd.args(["--out-dir", "crds", "--reference", "docs/crd-reference.md"]);
            } else {
                cmd.args(args);
            }
            let status = cmd.status().context("running crdgen through cargo")?;
            if !status.success() {
                bail!("crdgen failed ({status})");
            }
            if regenerate {
                chart::chart_crds(&workspace_root(), &chart::ChartCrdsArgs::default())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Test { tier, fail_fast } => test(tier, fail_fast),
        Cmd::Demo(args) => demo::demo(&workspace_root(), &args),
        Cmd::Fuzz(args) => fuzz::fuzz(&workspace_root(), &args).map(|()| ExitCode::SUCCESS),
        Cmd::Images(args) => images::images(&workspace_root(), &args).map(|()| ExitCode::SUCCESS),
        Cmd::KubeScore => kube_score::kube_score(&workspace_root()).map(|()| ExitCode::SUCCESS),
        Cmd::ChartCrds(args) => {
            chart::chart_crds(&workspace_root(), &args).map(|()| ExitCode::SUCCESS)
        }
        Cmd::ChartRbac(args) => {
            chart::chart_rbac(&workspace_root(), &args).map(|()| ExitCode::SUCCESS)
        }
        Cmd::Cluster(args) => cluster::cluster(&workspace_root(), &args),
        Cmd::Bench { args } => bench::bench(&workspace_root(), &args),
    }
}

/// How long the test command fuzzes each target.
const FUZZ_SECONDS_IN_TESTS: &str = "20";

/// The workspace root: the parent of this crate's directory.
fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or(manifest_dir)
}

/// Where built tools live between runs, outside the repository (the same directory the
/// scripts use for the control-plane binaries).
fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SEO_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("scan-engine-operator")
}

/// The cargo that runs us (so toolchain overrides carry through).
fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// Runs `xtask/scripts/k8s-bins.sh`, streaming its progress, and returns the directory that
/// holds the binaries.
fn k8s_bins() -> Result<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/k8s-bins.sh");
    let assets_ready = std::env::var_os("KUBEBUILDER_ASSETS")
        .map(PathBuf::from)
        .is_some_and(|dir| dir.join("etcd").is_file() && dir.join("kube-apiserver").is_file());
    if !assets_ready {
        // Already built? Then Go is not needed.
        let check = Command::new("bash")
            .arg(&script)
            .arg("--check")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .with_context(|| format!("running {} --check", script.display()))?;
        let stdout = String::from_utf8_lossy(&check.stdout);
        if check.status.success()
            && let Some(dir) = stdout.lines().rev().find(|l| !l.trim().is_empty())
        {
            return Ok(PathBuf::from(dir.trim()));
        }
    }
    if !assets_ready && !on_path("go") {
        // The script checks too; say it here before anything starts, and say what to do.
        bail!(
            "Go is not installed, and it is needed to build etcd, kube-apiserver, \
             kube-controller-manager, kubectl and helm from their pinned Go modules.\n\
             Install Go >= 1.24 (https://go.dev/dl), or set \
             KUBEBUILDER_ASSETS to a directory that already holds these binaries."
        );
    }
    // The script prints progress on stderr (inherited, so it streams) and the directory on the
    // last line of stdout.
    let mut child = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", script.display()))?;
    let stdout = child
        .stdout
        .take()
        .context("capturing the script's stdout")?;
    let mut last = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading the script's output")?;
        if !line.trim().is_empty() {
            last = line.trim().to_owned();
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for {}", script.display()))?;
    if !status.success() {
        bail!(
            "{} failed ({status}); its messages are above",
            script.display()
        );
    }
    let dir = PathBuf::from(&last);
    if !dir.join("kube-apiserver").is_file() || !dir.join("etcd").is_file() {
        bail!(
            "{} finished but {} does not hold etcd and kube-apiserver",
            script.display(),
            dir.display()
        );
    }
    Ok(dir)
}

// ---------------------------------------------------------------------------------------------
// cargo xtask test

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Passed,
    Failed(String),
    NotPresent(String),
    Skipped(String),
}

impl Outcome {
    fn is_failure(&self) -> bool {
        matches!(self, Outcome::Failed(_))
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Passed => f.write_str("pass"),
            Outcome::Failed(why) => write!(f, "FAIL ({why})"),
            Outcome::NotPresent(why) => write!(f, "not present ({why})"),
            Outcome::Skipped(why) => write!(f, "SKIPPED ({why})"),
        }
    }
}

struct Row {
    tier: &'static str,
    step: String,
    took: Duration,
    outcome: Outcome,
}

struct Runner {
    root: PathBuf,
    rows: Vec<Row>,
    fail_fast: bool,
    in_ci: bool,
}

impl Runner {
    fn failed(&self) -> bool {
        self.rows.iter().any(|row| row.outcome.is_failure())
    }

    fn stop(&self) -> bool {
        self.fail_fast && self.failed()
    }

    fn record(
        &mut self,
        tier: &'static str,
        step: impl Into<String>,
        took: Duration,
        outcome: Outcome,
    ) {
        let step = step.into();
        eprintln!(
            "xtask: [{tier}] {step}: {outcome} in {:.1}s",
            took.as_secs_f64()
        );
        self.rows.push(Row {
            tier,
            step,
            took,
            outcome,
        });
    }

    /// Runs one command as a step of a tier, streaming its output.
    fn step(&mut self, tier: &'static str, step: &str, mut cmd: Command) -> bool {
        if self.stop() {
            return false;
        }
        eprintln!("\nxtask: [{tier}] {step}: {}", describe(&cmd));
        cmd.current_dir(&self.root).stdin(Stdio::null());
        let start = Instant::now();
        let outcome = match cmd.status() {
            Ok(status) if status.success() => Outcome::Passed,
            Ok(status) => Outcome::Failed(status.to_string()),
            Err(err) => Outcome::Failed(format!("could not start: {err}")),
        };
        let ok = outcome == Outcome::Passed;
        self.record(tier, step, start.elapsed(), outcome);
        ok
    }

    fn test_file(&self, name: &str) -> Option<PathBuf> {
        let path = self.root.join("tests/tests").join(format!("{name}.rs"));
        path.is_file().then_some(path)
    }

    fn unit(&mut self) {
        // The operator's client tests drive the real console and engine binaries.
        let mut build = cargo();
        build.args(["build", "-p", "security-console", "-p", "scan-engine"]);
        self.step("unit", "cargo build (console and engine binaries)", build);
        let mut test = cargo();
        test.args(["test", "--workspace", "--exclude", "scan-engine-tests"]);
        self.step(
            "unit",
            "cargo test (all crates but the integration suite)",
            test,
        );
        let mut support = cargo();
        support.args(["test", "-p", "scan-engine-tests", "--lib"]);
        self.step("unit", "cargo test (integration support library)", support);
        // Every fuzz target briefly: its kept regression inputs, then some exploration.
        if let Ok(me) = std::env::current_exe() {
            let mut fuzz = Command::new(me);
            fuzz.args(["fuzz", "--seconds", FUZZ_SECONDS_IN_TESTS]);
            self.step("unit", "fuzz targets (cargo xtask fuzz)", fuzz);
        }
        let mut fmt = cargo();
        fmt.args(["fmt", "--all", "--", "--check"]);
        self.step("unit", "cargo fmt --check", fmt);
        let mut clippy = cargo();
        clippy.args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]);
        self.step("unit", "cargo clippy -D warnings", clippy);
    }

    fn system(&mut self) {
        let system = self.test_file("system");
        let netns = self.test_file("netns");
        if system.is_none() && netns.is_none() {
            self.record(
                "system",
                "tests/tests/system.rs, tests/tests/netns.rs",
                Duration::ZERO,
                Outcome::NotPresent("no system test files yet".into()),
            );
            return;
        }
        let mut build = cargo();
        build.args(["build", "-p", "security-console", "-p", "scan-engine"]);
        if !self.step("system", "build console and engine", build) {
            return;
        }
        if system.is_some() {
            self.step(
                "system",
                "loopback (tests/tests/system.rs)",
                integration_test("system"),
            );
        } else {
            self.record(
                "system",
                "loopback (tests/tests/system.rs)",
                Duration::ZERO,
                Outcome::NotPresent("tests/tests/system.rs does not exist yet".into()),
            );
        }
        // Hostile peers: floods, half-sent frames, forged greetings, guessed passwords.
        if self.root.join("tests/tests/hostile/main.rs").is_file() {
            self.step(
                "system",
                "hostile peers (tests/tests/hostile)",
                integration_test("hostile"),
            );
        }
        // Engine pools and global scans, answers checked against the published v3 spec.
        if self.test_file("pools").is_some() {
            self.step(
                "system",
                "engine pools and scans (tests/tests/pools.rs)",
                integration_test("pools"),
            );
        }
        // The web pages in headless Chromium; the suite fails, saying what to install, when
        // the browser is missing.
        if self.test_file("browser").is_some() {
            self.step(
                "system",
                "web pages in headless Chromium (tests/tests/browser.rs)",
                integration_test("browser"),
            );
        }
        let step = "network namespaces (tests/tests/netns.rs)";
        if netns.is_none() {
            self.record(
                "system",
                step,
                Duration::ZERO,
                Outcome::NotPresent("tests/tests/netns.rs does not exist yet".into()),
            );
            return;
        }
        match netns_prerequisites() {
            Ok(()) => {
                self.step("system", step, integration_test("netns"));
            }
            Err(why) if self.in_ci => {
                self.record(
                    "system",
                    step,
                    Duration::ZERO,
                    Outcome::Failed(format!("{why} (required in CI)")),
                );
            }
            Err(why) => {
                eprintln!("xtask: WARNING: network-namespace tests not run: {why}");
                self.record("system", step, Duration::ZERO, Outcome::Skipped(why));
            }
        }
    }

    fn control_plane(&mut self) {
        let tier = "control-plane";
        if self.test_file("control_plane").is_none() {
            self.record(
                tier,
                "tests/tests/control_plane.rs",
                Duration::ZERO,
                Outcome::NotPresent("tests/tests/control_plane.rs does not exist yet".into()),
            );
            return;
        }
        if self.stop() {
            return;
        }
        eprintln!("\nxtask: [{tier}] control-plane binaries: xtask/scripts/k8s-bins.sh");
        let start = Instant::now();
        let bins = match k8s_bins() {
            Ok(dir) => {
                self.record(
                    tier,
                    "control-plane binaries (k8s-bins)",
                    start.elapsed(),
                    Outcome::Passed,
                );
                dir
            }
            Err(err) => {
                eprintln!("error: {err:#}");
                self.record(
                    tier,
                    "control-plane binaries (k8s-bins)",
                    start.elapsed(),
                    Outcome::Failed(
                        format!("{err:#}")
                            .lines()
                            .next()
                            .unwrap_or_default()
                            .to_owned(),
                    ),
                );
                return;
            }
        };
        let mut build = cargo();
        build.args([
            "build",
            "-p",
            "scan-engine-operator",
            "-p",
            "security-console",
            "-p",
            "scan-engine",
        ]);
        if !self.step(tier, "build operator, console and engine", build) {
            return;
        }
        // The chart test needs helm, which the binaries step has just provided.
        let mut chart = cargo();
        chart
            .args(["test", "-p", "xtask", "--", "--ignored", "--exact"])
            .arg("chart::tests::chart_renders_with_helm")
            .env("HELM", bins.join("helm"));
        self.step(tier, "chart: helm lint, template, schema", chart);
        let xtask = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("xtask"));
        let mut score = Command::new(&xtask);
        score.arg("kube-score").env("HELM", bins.join("helm"));
        self.step(tier, "kube-score: chart and operator objects", score);
        let mut test = integration_test("control_plane");
        test.env("KUBEBUILDER_ASSETS", &bins);
        self.step(tier, "control plane (tests/tests/control_plane.rs)", test);
        // The kubectl plugin's tests are ignored in the unit tier (they need the API server).
        let mut plugin = cargo();
        plugin
            .args([
                "test",
                "-p",
                "kubectl-scanengine",
                "--test",
                "control_plane",
            ])
            .args(["--", "--ignored", "--test-threads=1"])
            .env("KUBEBUILDER_ASSETS", &bins);
        self.step(
            tier,
            "kubectl plugin (kubectl-plugin/tests/control_plane.rs)",
            plugin,
        );
        let step = "operator (tests/tests/operator.rs)";
        if self.test_file("operator").is_none() {
            self.record(
                tier,
                step,
                Duration::ZERO,
                Outcome::NotPresent("tests/tests/operator.rs does not exist yet".into()),
            );
            return;
        }
        let mut test = integration_test("operator");
        test.env("KUBEBUILDER_ASSETS", &bins);
        self.step(tier, step, test);
    }

    /// The end-to-end suite on a real cluster. With KUBECONFIG set, against that cluster as it
    /// is (the images must be on its nodes). Otherwise on the local cluster, which this tier
    /// builds the images for, starts, and stops again at the end (root needed).
    fn e2e(&mut self) {
        let tier = "e2e";
        let step = "real cluster (tests/tests/e2e.rs)";
        if self.test_file("e2e").is_none() {
            self.record(
                tier,
                step,
                Duration::ZERO,
                Outcome::NotPresent("tests/tests/e2e.rs does not exist yet".into()),
            );
            return;
        }
        let local = cluster::kubeconfig_path();
        if let Some(kubeconfig) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty())
            && Path::new(&kubeconfig) != local
        {
            eprintln!(
                "xtask: [{tier}] using the cluster KUBECONFIG names ({}); its nodes must hold \
                 the images (`cargo xtask images`, then e.g. `kind load image-archive`)",
                Path::new(&kubeconfig).display()
            );
            self.step(tier, step, integration_test("e2e"));
            return;
        }
        if let Err(why) = cluster_prerequisites() {
            let outcome = if self.in_ci {
                Outcome::Failed(format!("{why} (required in CI)"))
            } else {
                eprintln!("xtask: WARNING: the end-to-end tier did not run: {why}");
                Outcome::Skipped(why)
            };
            self.record(tier, "local cluster", Duration::ZERO, outcome);
            return;
        }
        let xtask = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("xtask"));
        let mut images = Command::new(&xtask);
        images.arg("images");
        if !self.step(
            tier,
            "images: release build, archives, confined start as non-root",
            images,
        ) {
            return;
        }
        let mut up = Command::new(&xtask);
        up.args(["cluster", "up"]);
        if self.step(tier, "local cluster up (imports the images)", up) {
            let mut test = integration_test("e2e");
            test.env("KUBECONFIG", &local);
            self.step(tier, step, test);
        }
        // Always leave the machine as it was, even after a failure (the test namespaces of
        // failed tests are gone with the cluster; their logs were printed).
        let keep = std::env::var_os("XTASK_KEEP_CLUSTER").is_some_and(|v| v == "1");
        if keep {
            eprintln!("xtask: [{tier}] XTASK_KEEP_CLUSTER=1: leaving the local cluster up");
            return;
        }
        let mut down = Command::new(&xtask);
        down.args(["cluster", "down"]);
        let fail_fast = std::mem::replace(&mut self.fail_fast, false);
        self.step(tier, "local cluster down", down);
        self.fail_fast = fail_fast;
    }

    fn summary(&self) {
        let width = self
            .rows
            .iter()
            .map(|row| row.tier.len() + row.step.len() + 3)
            .max()
            .unwrap_or(10);
        println!("\n{:<width$}  {:>8}  result", "tier / step", "seconds");
        println!("{}", "-".repeat(width + 20));
        let mut total = Duration::ZERO;
        for row in &self.rows {
            total += row.took;
            let name = format!("{} / {}", row.tier, row.step);
            println!(
                "{name:<width$}  {:>8.1}  {}",
                row.took.as_secs_f64(),
                row.outcome
            );
        }
        println!("{}", "-".repeat(width + 20));
        println!("{:<width$}  {:>8.1}", "total", total.as_secs_f64());
        for tier in ["unit", "system", "control-plane", "e2e"] {
            let rows: Vec<&Row> = self.rows.iter().filter(|row| row.tier == tier).collect();
            if rows.is_empty() {
                continue;
            }
            let secs: f64 = rows.iter().map(|row| row.took.as_secs_f64()).sum();
            let verdict = if rows.iter().any(|row| row.outcome.is_failure()) {
                "FAIL"
            } else if rows
                .iter()
                .all(|row| matches!(row.outcome, Outcome::NotPresent(_)))
            {
                "not present"
            } else if rows
                .iter()
                .any(|row| matches!(row.outcome, Outcome::Skipped(_)))
            {
                "pass (with skipped steps)"
            } else {
                "pass"
            };
            println!("tier {tier:<14} {secs:>8.1}s  {verdict}");
        }
        let passed = self
            .rows
            .iter()
            .filter(|row| row.outcome == Outcome::Passed)
            .count();
        let failed = self
            .rows
            .iter()
            .filter(|row| row.outcome.is_failure())
            .count();
        let skipped = self.rows.len() - passed - failed;
        println!("xtask: {passed} passed, {failed} failed, {skipped} skipped");
    }
}

fn integration_test(name: &str) -> Command {
    let mut cmd = cargo();
    cmd.args([
        "test",
        "-p",
        "scan-engine-tests",
        "--test",
        name,
        "--",
        "--test-threads=1",
    ]);
    cmd
}

/// The local cluster needs root (kubelet, containerd, iptables); the images need nothing more.
fn cluster_prerequisites() -> std::result::Result<(), String> {
    if !cluster::is_root() {
        return Err(
            "the local cluster needs root (or set KUBECONFIG to a cluster holding the \
                    images)"
                .into(),
        );
    }
    Ok(())
}

/// Network-namespace tests need root and the `ip` tool.
fn netns_prerequisites() -> std::result::Result<(), String> {
    if !cluster::is_root() {
        return Err("network-namespace tests need root".into());
    }
    if !on_path("ip") {
        return Err("network-namespace tests need the `ip` tool (iproute2)".into());
    }
    Ok(())
}

fn describe(cmd: &Command) -> String {
    let mut words = vec![cmd.get_program().to_string_lossy().into_owned()];
    words.extend(cmd.get_args().map(|arg| arg.to_string_lossy().into_owned()));
    words.join(" ")
}

fn test(tier: Tier, fail_fast: bool) -> Result<ExitCode> {
    let mut runner = Runner {
        root: workspace_root(),
        rows: Vec::new(),
        fail_fast,
        in_ci: std::env::var("CI").is_ok_and(|v| v == "true" || v == "1"),
    };
    if matches!(tier, Tier::Unit | Tier::All) {
        runner.unit();
    }
    if matches!(tier, Tier::System | Tier::All) {
        runner.system();
    }
    if matches!(tier, Tier::ControlPlane | Tier::All) {
        runner.control_plane();
    }
    if matches!(tier, Tier::E2e | Tier::All) {
        runner.e2e();
    }
    runner.summary();
    Ok(if runner.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
