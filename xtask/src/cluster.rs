//! `cargo xtask cluster up|down|status`: a real single-node Kubernetes cluster on this host.
//!
//! The work is done by the bash scripts in `xtask/scripts/cluster/` (see docs/cluster.md); this
//! module checks the obvious prerequisites, runs the right script with its output streaming, and
//! passes its exit status on.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub action: ClusterAction,
}

#[derive(Debug, Clone, Copy, Subcommand)]
pub enum ClusterAction {
    /// Build (once, cached outside the repository) and start etcd, the control plane, containerd,
    /// kubelet, kube-proxy, CoreDNS, kube-router's NetworkPolicy controller (firewall only) and
    /// the volume provisioner (default StorageClass `standard`); import the project's images from target/images/ when
    /// present. Idempotent. Prints `export KUBECONFIG=...`.
    Up,
    /// Stop every process of the cluster and remove its pods, mounts, cgroups, interfaces,
    /// iptables rules, ipsets and state; the binary cache is kept.
    Down,
    /// Show which processes run, the node and the pods; exits non-zero unless all is up.
    Status,
    /// Check a running cluster end to end: DNS from a pod, pod-to-pod and Service traffic,
    /// NetworkPolicy enforcement (deny-all, allow, egress) and a volume claim. Prints
    /// "N passed, N failed".
    Verify,
    /// Print the admin kubeconfig's path (the cluster need not be running).
    Kubeconfig,
}

/// The directory of the cluster's state (kubeconfig, certificates, logs), as the scripts compute it.
pub fn state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SEO_CLUSTER_STATE_DIR") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("scan-engine-operator/cluster")
}

/// The admin kubeconfig that `cluster up` writes.
pub fn kubeconfig_path() -> PathBuf {
    state_dir().join("kubeconfig")
}

/// Whether this process runs as root (the local cluster, network namespaces and iptables
/// need it).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

pub fn cluster(root: &Path, args: &ClusterArgs) -> Result<ExitCode> {
    let script = match args.action {
        ClusterAction::Kubeconfig => {
            println!("{}", kubeconfig_path().display());
            return Ok(ExitCode::SUCCESS);
        }
        ClusterAction::Up => "up.sh",
        ClusterAction::Down => "down.sh",
        ClusterAction::Status => "status.sh",
        ClusterAction::Verify => "verify.sh",
    };
    if matches!(args.action, ClusterAction::Up | ClusterAction::Down) && !is_root() {
        bail!(
            "`cargo xtask cluster` runs kubelet, containerd and iptables and must run as root \
             (e.g. `sudo -E cargo xtask cluster up`); users of kind can run \
             xtask/scripts/cluster/kind.sh instead"
        );
    }
    let path = root.join("xtask/scripts/cluster").join(script);
    let status = Command::new("bash")
        .arg(&path)
        .current_dir(root)
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("running {}", path.display()))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}
