//! `cargo xtask demo`: the operator, a managed console and one engine in each direction on a
//! cluster, ending with the engine table.
//!
//! Target cluster: when `KUBECONFIG` is set (and is not the local cluster's kubeconfig) and the
//! cluster answers, that cluster is used as it is and nothing is built or loaded (its nodes must
//! be able to run the `:<version>` images, e.g. `kind load image-archive target/images/*.tar`).
//! Otherwise the images are built (`cargo xtask images`) and the local cluster is started
//! (`cargo xtask cluster up`, root), which imports them.
//!
//! Then: `helm upgrade --install` of the chart (tags = the workspace version, pull policy
//! `IfNotPresent`), `kubectl apply` of examples/managed-console.yaml moved into the namespace
//! `scan-engine-demo`, a wait (with a deadline) until every ScanEngine is Ready, and the tables.
//! Every step is idempotent, so running it again converges and prints the tables again.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::cluster::{self, ClusterAction, ClusterArgs};
use crate::images::{self, ImagesArgs};

/// The namespace the demo's Console and ScanEngines live in.
pub const NAMESPACE: &str = "scan-engine-demo";
/// The Helm release and its namespace.
pub const RELEASE: &str = "scan-engine-operator";
pub const RELEASE_NAMESPACE: &str = "scan-engine-operator";

/// Arguments of `cargo xtask demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Tear the demo down instead: delete its namespace and the Helm release, and stop the
    /// local cluster when the demo runs on it (`cargo xtask cluster down`).
    #[arg(long)]
    pub down: bool,
    /// Do not (re)build the images; use target/images/*.tar as they are (local cluster only).
    #[arg(long)]
    pub no_build: bool,
    /// How long to wait for every ScanEngine to be Ready, in seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

/// Which cluster the demo runs on.
enum Target {
    /// The local cluster of `cargo xtask cluster`.
    Local,
    /// Whatever `KUBECONFIG` names.
    External(PathBuf),
}

pub fn demo(root: &Path, args: &DemoArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let local_kubeconfig = cluster::kubeconfig_path();
    let kubectl = find_tool("kubectl")?;
    let target = match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        Some(path) if Path::new(&path) != local_kubeconfig => {
            let path = PathBuf::from(path);
            if !reachable(&kubectl, &path) {
                bail!(
                    "KUBECONFIG is set ({}) but that cluster does not answer \
                     (`kubectl version` failed). Start it, or unset KUBECONFIG to run the demo \
                     on the local cluster (`cargo xtask cluster up`, root).",
                    path.display()
                );
            }
            Target::External(path)
        }
        _ => Target::Local,
    };
    let kubeconfig = match &target {
        Target::Local => local_kubeconfig.clone(),
        Target::External(path) => path.clone(),
    };

    if args.down {
        return down(root, &target, &kubectl, &kubeconfig);
    }

    match &target {
        Target::Local => {
            if !cluster::is_root() {
                bail!(
                    "the demo starts the local cluster (kubelet, containerd, iptables), which \
                     needs root: run `sudo -E cargo xtask demo`. Or point KUBECONFIG at a \
                     cluster you already have (e.g. kind) that can run the images in \
                     target/images/."
                );
            }
            if args.no_build {
                note("images: --no-build, using target/images/*.tar as they are");
            } else {
                note("building the images (cargo xtask images)");
                images::images(
                    root,
                    &ImagesArgs {
                        check: false,
                        only: Vec::new(),
                        no_save: false,
                        no_cargo_build: false,
                    },
                )?;
            }
            note(
                "starting the local cluster (cargo xtask cluster up; imports target/images/*.tar)",
            );
            let code = cluster::cluster(
                root,
                &ClusterArgs {
                    action: ClusterAction::Up,
                },
            )?;
            if code != ExitCode::SUCCESS {
                bail!("`cargo xtask cluster up` failed; its messages are above");
            }
        }
        Target::External(path) => {
            note(&format!(
                "using the cluster of KUBECONFIG={} as it is: nothing is built or loaded; its \
                 nodes must have the images scan-engine-operator, scan-engine and \
                 security-console:{} (e.g. `kind load image-archive target/images/<image>.tar`)",
                path.display(),
                version()
            ));
        }
    }

    let helm = find_tool("helm")?;
    note("installing the chart (helm upgrade --install --wait)");
    let mut install = Command::new(&helm);
    install
        .env("KUBECONFIG", &kubeconfig)
        .args(["upgrade", "--install", RELEASE])
        .arg(root.join("charts/scan-engine-operator"))
        .args(["--namespace", RELEASE_NAMESPACE, "--create-namespace"])
        .args(["--wait", "--timeout", "5m"])
        .args(["--set", &format!("image.tag={}", version())])
        .args(["--set", "image.pullPolicy=IfNotPresent"]);
    run(&mut install)?;

    note(&format!(
        "applying examples/managed-console.yaml in the namespace {NAMESPACE}"
    ));
    let manifest = std::fs::read_to_string(root.join("examples/managed-console.yaml"))
        .context("reading examples/managed-console.yaml")?;
    let manifest = into_namespace(&manifest, "scanning", NAMESPACE);
    let mut apply = Command::new(&kubectl);
    apply
        .env("KUBECONFIG", &kubeconfig)
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped());
    let mut child = apply.spawn().context("starting kubectl apply")?;
    child
        .stdin
        .take()
        .context("kubectl's stdin")?
        .write_all(manifest.as_bytes())
        .context("writing the manifest to kubectl")?;
    let status = child.wait().context("waiting for kubectl apply")?;
    if !status.success() {
        bail!("kubectl apply failed ({status})");
    }

    note(&format!(
        "waiting (up to {}s) until every ScanEngine in {NAMESPACE} is Ready",
        args.timeout
    ));
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let mut last = String::new();
    loop {
        let states = engine_states(&kubectl, &kubeconfig)?;
        let line = states
            .iter()
            .map(|(name, state, ready)| format!("{name}={state}/{ready}"))
            .collect::<Vec<_>>()
            .join(" ");
        if line != last {
            note(&format!("engines: {line}"));
            last = line;
        }
        if !states.is_empty() && states.iter().all(|(_, _, ready)| ready == "True") {
            break;
        }
        if Instant::now() >= deadline {
            print_tables(&kubectl, &kubeconfig);
            bail!(
                "not every ScanEngine was Ready after {}s ({last}); see \
                 `kubectl describe scanengines -n {NAMESPACE}` and the operator's log \
                 (`kubectl logs -n {RELEASE_NAMESPACE} deployment/{RELEASE}`)",
                args.timeout
            );
        }
        std::thread::sleep(Duration::from_secs(3));
    }

    print_tables(&kubectl, &kubeconfig);
    println!(
        "\nThe demo is up ({:.0}s).",
        started.elapsed().as_secs_f64()
    );
    if matches!(target, Target::Local) {
        println!("  export KUBECONFIG={}", kubeconfig.display());
    }
    println!("  kubectl get consoles,scanengines -n {NAMESPACE}");
    println!("Tear it down with `cargo xtask demo --down`");
    if matches!(target, Target::Local) {
        println!(
            "(as root: it also stops the local cluster, like `sudo -E cargo xtask cluster down`)."
        );
    } else {
        println!("(deletes the namespace {NAMESPACE} and the Helm release; the cluster stays).");
    }
    Ok(ExitCode::SUCCESS)
}

fn down(root: &Path, target: &Target, kubectl: &Path, kubeconfig: &Path) -> Result<ExitCode> {
    match target {
        Target::Local => {
            // The whole cluster goes, the demo with it.
            if !cluster::is_root() {
                bail!(
                    "stopping the local cluster needs root: `sudo -E cargo xtask demo --down` \
                     (or `sudo -E cargo xtask cluster down`)"
                );
            }
            cluster::cluster(
                root,
                &ClusterArgs {
                    action: ClusterAction::Down,
                },
            )
        }
        Target::External(_) => {
            note(&format!("deleting the namespace {NAMESPACE}"));
            let mut delete = Command::new(kubectl);
            delete.env("KUBECONFIG", kubeconfig).args([
                "delete",
                "namespace",
                NAMESPACE,
                "--ignore-not-found",
                "--wait",
            ]);
            run(&mut delete)?;
            let helm = find_tool("helm")?;
            note(&format!("uninstalling the Helm release {RELEASE}"));
            let mut uninstall = Command::new(helm);
            uninstall
                .env("KUBECONFIG", kubeconfig)
                .args(["uninstall", RELEASE, "--namespace", RELEASE_NAMESPACE])
                .args(["--ignore-not-found", "--wait"]);
            run(&mut uninstall)?;
            note(
                "the CRDs are kept (chart value crds.keep); delete them with \
                 `kubectl delete crd consoles.scanengine.dev scanengines.scanengine.dev`",
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `(name, communication state, Ready condition status)` of every ScanEngine in the namespace.
fn engine_states(kubectl: &Path, kubeconfig: &Path) -> Result<Vec<(String, String, String)>> {
    let out = Command::new(kubectl)
        .env("KUBECONFIG", kubeconfig)
        .args(["get", "scanengines", "-n", NAMESPACE, "-o"])
        .arg(
            "jsonpath={range .items[*]}{.metadata.name}{\"\\t\"}{.status.communication.state}\
             {\"\\t\"}{.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
        )
        .stdin(Stdio::null())
        .output()
        .context("running kubectl get scanengines")?;
    if !out.status.success() {
        // The API may be briefly unavailable; report no engines and poll again.
        return Ok(Vec::new());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut fields = l.split('\t').map(str::to_owned);
            let name = fields.next().unwrap_or_default();
            let state = fields.next().filter(|s| !s.is_empty());
            let ready = fields.next().filter(|s| !s.is_empty());
            (
                name,
                state.unwrap_or_else(|| "-".into()),
                ready.unwrap_or_else(|| "-".into()),
            )
        })
        .collect())
}

fn print_tables(kubectl: &Path, kubeconfig: &Path) {
    for args in [
        ["get", "scanengines", "-n", NAMESPACE],
        ["get", "consoles", "-n", NAMESPACE],
    ] {
        println!("\n$ kubectl {}", args.join(" "));
        let _ = std::io::stdout().flush();
        let _ = Command::new(kubectl)
            .env("KUBECONFIG", kubeconfig)
            .args(args)
            .stdin(Stdio::null())
            .status();
    }
}

/// Moves a manifest of the examples into another namespace: the Namespace object's name and
/// every `namespace:` field.
pub fn into_namespace(manifest: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(manifest.len());
    let mut in_namespace_object = false;
    for line in manifest.split_inclusive('\n') {
        let trimmed = line.trim_end();
        if trimmed == "---" {
            in_namespace_object = false;
        } else if trimmed == "kind: Namespace" {
            in_namespace_object = true;
        }
        let indent = &line[..line.len() - line.trim_start().len()];
        let ending = &line[trimmed.len()..];
        if trimmed.trim_start() == format!("namespace: {from}") {
            out.push_str(&format!("{indent}namespace: {to}{ending}"));
        } else if in_namespace_object && trimmed == format!("  name: {from}") {
            out.push_str(&format!("  name: {to}{ending}"));
        } else {
            out.push_str(line);
        }
    }
    out
}

fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

fn note(msg: &str) {
    eprintln!("demo: {msg}");
}

fn run(cmd: &mut Command) -> Result<()> {
    let shown = crate::describe(cmd);
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("running {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

fn reachable(kubectl: &Path, kubeconfig: &Path) -> bool {
    Command::new(kubectl)
        .env("KUBECONFIG", kubeconfig)
        .args(["version", "--request-timeout=5s"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// kubectl or helm: from PATH, else the local cluster's `kube_bin`, else the pinned binaries
/// (`cargo xtask k8s-bins`, built once and cached).
fn find_tool(name: &str) -> Result<PathBuf> {
    if let Some(paths) = std::env::var_os("PATH")
        && let Some(found) = std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    {
        return Ok(found);
    }
    let env_file = cluster::state_dir().join("cluster.env");
    if let Ok(text) = std::fs::read_to_string(&env_file)
        && let Some(dir) = text.lines().find_map(|l| l.strip_prefix("kube_bin="))
    {
        let path = Path::new(dir.trim().trim_matches('"')).join(name);
        if path.is_file() {
            return Ok(path);
        }
    }
    let dir = crate::k8s_bins().with_context(|| format!("finding {name}"))?;
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{name} is neither on PATH nor in {}",
            dir.join(OsStr::new("")).display()
        );
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::into_namespace;

    #[test]
    fn moves_the_example_into_the_demo_namespace() {
        let manifest = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: scanning\n---\n\
                        kind: Console\nmetadata:\n  name: main\n  namespace: scanning\nspec:\n  \
                        consoleRef:\n    name: scanning\n";
        let moved = into_namespace(manifest, "scanning", "scan-engine-demo");
        assert_eq!(
            moved,
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: scan-engine-demo\n---\n\
             kind: Console\nmetadata:\n  name: main\n  namespace: scan-engine-demo\nspec:\n  \
             consoleRef:\n    name: scanning\n"
        );
    }
}
