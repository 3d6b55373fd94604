//! `scan-engine-bench`: the measurements behind `cargo xtask bench scan|console|operator`.
//!
//! Each subcommand sets up what it measures (listeners, a release `security-console`, a control
//! plane and the release operator), runs the load, prints a Markdown table and exits non-zero
//! only when the benchmark itself could not run (a missed target is reported, not an error).
//! Built with `--release` by `cargo xtask bench`; see docs/performance.md.

mod console;
mod operator;
mod pairing;
mod report;
mod scan;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "scan-engine-bench",
    about = "Benchmarks of the scanner, console and operator"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// The engine's TCP connect scanner against `nmap -sT` on loopback hosts.
    Scan(scan::Args),
    /// Reverse-paired engine sessions held against one real security-console.
    Console(console::Args),
    /// N ScanEngines reconciled by the operator on a real control plane.
    Operator(operator::Args),
    /// Apply → Ready of ScanEngines in both directions on the cluster KUBECONFIG names.
    Pairing(pairing::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    report::raise_fd_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Cmd::Scan(args) => scan::run(args).await,
            Cmd::Console(args) => console::run(args).await,
            Cmd::Operator(args) => operator::run(args).await,
            Cmd::Pairing(args) => pairing::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `target/release` (the directory this binary runs from): where the benchmarked binaries are.
fn release_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(PathBuf::from))
        .unwrap_or_else(|| scan_engine_tests::workspace_root().join("target/release"))
}

/// A release binary of this workspace, or an error that says how to build it.
fn release_bin(name: &str) -> anyhow::Result<PathBuf> {
    let path = release_dir().join(name);
    if !path.is_file() {
        anyhow::bail!(
            "{} is missing: build it with `cargo build --release -p {name}` \
             (`cargo xtask bench` does)",
            path.display()
        );
    }
    Ok(path)
}
