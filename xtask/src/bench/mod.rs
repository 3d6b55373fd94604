//! `cargo xtask bench scan|console|operator|pairing [options]`.
//!
//! The measurements live in the `scan-engine-bench` binary of the tests crate
//! (`tests/src/bin/scan-engine-bench/`), so that xtask stays small and the load generator runs
//! optimised. This module prepares what a benchmark needs (nmap, control-plane binaries),
//! builds the benchmarked binaries and the load generator with `--release`, and runs it;
//! everything after the benchmark's name is passed through (`--help` lists the options).
//! Results and how to read them: docs/performance.md.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, Result, bail};

const USAGE: &str = "usage: cargo xtask bench <scan|console|operator|pairing> [options]\n\
    \n  scan      the engine's scanner against nmap -sT on loopback hosts\
    \n  console   N reverse-paired engine sessions against one security-console\
    \n  operator  N ScanEngines reconciled by the operator on a real control plane\
    \n  pairing   apply → Ready of engines in both directions on a cluster with the operator\
    \n\n`cargo xtask bench <name> --help` lists a benchmark's options; see docs/performance.md.";

pub fn bench(root: &Path, args: &[OsString]) -> Result<ExitCode> {
    let Some(which) = args.first().and_then(|a| a.to_str()) else {
        eprintln!("{USAGE}");
        return Ok(ExitCode::FAILURE);
    };
    let packages: &[&str] = match which {
        "scan" => &[],
        "console" => &["security-console"],
        "operator" => &["scan-engine-operator", "security-console"],
        "pairing" => &[],
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            return Ok(ExitCode::SUCCESS);
        }
        other => bail!("unknown benchmark {other:?}\n{USAGE}"),
    };
    let help = args.iter().any(|a| a == "--help" || a == "-h");
    let mut env: Vec<(&str, OsString)> = Vec::new();
    if !help {
        match which {
            "scan" => ensure_nmap()?,
            "operator" => env.push(("KUBEBUILDER_ASSETS", crate::k8s_bins()?.into())),
            // The local cluster's kubeconfig unless KUBECONFIG names another cluster.
            "pairing" if std::env::var_os("KUBECONFIG").is_none() => env.push((
                "KUBECONFIG",
                crate::cluster::kubeconfig_path().into_os_string(),
            )),
            _ => {}
        }
    }

    let mut build = crate::cargo();
    build.args([
        "build",
        "--release",
        "-p",
        "scan-engine-tests",
        "--bin",
        "scan-engine-bench",
    ]);
    // Each benchmarked binary by name: with `--bin` given, cargo builds only the named
    // binaries, whatever packages `-p` selects.
    for p in packages {
        build.args(["-p", p, "--bin", p]);
    }
    eprintln!("xtask: {}", crate::describe(&build));
    let status = build
        .current_dir(root)
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("building the benchmark binaries failed ({status})");
    }

    let bin = target_dir(root).join("release/scan-engine-bench");
    let mut run = Command::new(&bin);
    run.args(args).current_dir(root).stdin(Stdio::null());
    for (k, v) in env {
        run.env(k, v);
    }
    let status = run
        .status()
        .with_context(|| format!("running {}", bin.display()))?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// nmap is the scan benchmark's baseline: install Debian's package when it is missing and we
/// can (root with apt-get), otherwise fail saying how to get it.
fn ensure_nmap() -> Result<()> {
    if crate::on_path("nmap") {
        return Ok(());
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    if !root || !crate::on_path("apt-get") {
        bail!(
            "nmap is not installed and this user cannot install it (needs root and apt-get): \
             install nmap (Debian: `apt-get install -y nmap`) and run the benchmark again"
        );
    }
    eprintln!("xtask: nmap is missing; apt-get install -y nmap");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "nmap"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        eprintln!("xtask: apt-get install failed; apt-get update and retry");
        let _ = Command::new("apt-get").arg("update").status();
        if !install() {
            bail!("`apt-get install -y nmap` failed (see above); install nmap and run again");
        }
    }
    if !crate::on_path("nmap") {
        bail!("nmap was installed but is not on PATH");
    }
    Ok(())
}
