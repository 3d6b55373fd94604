//! `cargo xtask fuzz`: every fuzz target in `fuzz/` for a bounded time, on the stable toolchain.
//!
//! The targets are libFuzzer harnesses (`libfuzzer-sys`) run by cargo-fuzz, the field's
//! maintained runner. Without a sanitizer (`--sanitizer none`) cargo-fuzz needs no nightly
//! compiler: the binaries keep libFuzzer's coverage guidance, debug assertions and overflow
//! checks, so panics, arithmetic overflow and unbounded allocations (`-rss_limit_mb`) are
//! found; memory-safety bugs in `unsafe` code would need a sanitizer, and the crates fuzzed
//! here have none of their own. cargo-fuzz itself is installed once, pinned, into the same
//! cache as the control-plane binaries.
//!
//! Each target first replays its kept regression inputs (`fuzz/regressions/<target>/`, one file
//! per crash found and fixed), then explores from its seeds and the corpus it grew in earlier
//! runs (`target/fuzz/corpus/<target>/`). A crash stops with the input saved under
//! `target/fuzz/artifacts/<target>/` and the target reported as failed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;

/// The cargo-fuzz release the harnesses are run with.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

#[derive(Debug, Args)]
pub struct FuzzArgs {
    /// Seconds of fuzzing per target.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Only these targets (default: every target in fuzz/Cargo.toml).
    pub targets: Vec<String>,
    /// Memory limit per target process, in MiB (libFuzzer's -rss_limit_mb).
    #[arg(long, default_value_t = 1024)]
    pub rss_limit_mb: u64,
}

/// One target's run.
struct Run {
    target: String,
    seconds: f64,
    executions: Option<u64>,
    regressions: usize,
    outcome: std::result::Result<(), String>,
}

/// Runs the targets and prints a table; fails when any target crashed or did not build.
pub fn fuzz(root: &Path, args: &FuzzArgs) -> Result<()> {
    let cargo_fuzz = ensure_cargo_fuzz()?;
    let fuzz_dir = root.join("fuzz");
    let all = targets(&fuzz_dir)?;
    let chosen: Vec<String> = if args.targets.is_empty() {
        all
    } else {
        for t in &args.targets {
            if !all.contains(t) {
                bail!("no fuzz target {t:?}; the targets are: {}", all.join(", "));
            }
        }
        args.targets.clone()
    };
    let work = root.join("target/fuzz");

    // One build for every target, so the per-target times below are fuzzing only.
    eprintln!("xtask: building the fuzz targets (cargo fuzz build --sanitizer none)");
    let status = base_command(&cargo_fuzz, &fuzz_dir, &work, "build")
        .status()
        .context("running cargo fuzz build")?;
    if !status.success() {
        bail!("building the fuzz targets failed ({status})");
    }

    let mut runs = Vec::new();
    for target in &chosen {
        runs.push(run_target(&cargo_fuzz, &fuzz_dir, &work, target, args)?);
    }

    println!(
        "\n{:<24} {:>8} {:>14} {:>10} {:>12}  result",
        "target", "seconds", "executions", "exec/s", "regressions"
    );
    for r in &runs {
        let execs = r
            .executions
            .map_or_else(|| "?".to_owned(), |n| n.to_string());
        let rate = r.executions.map_or_else(
            || "?".to_owned(),
            |n| format!("{:.0}", n as f64 / r.seconds),
        );
        let result = match &r.outcome {
            Ok(()) => "no crash".to_owned(),
            Err(why) => format!("FAILED: {why}"),
        };
        println!(
            "{:<24} {:>8.1} {:>14} {:>10} {:>12}  {result}",
            r.target, r.seconds, execs, rate, r.regressions
        );
    }
    let failed: Vec<&str> = runs
        .iter()
        .filter(|r| r.outcome.is_err())
        .map(|r| r.target.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("fuzz targets failed: {}", failed.join(", "));
    }
    Ok(())
}

fn run_target(
    cargo_fuzz: &Path,
    fuzz_dir: &Path,
    work: &Path,
    target: &str,
    args: &FuzzArgs,
) -> Result<Run> {
    let corpus = work.join("corpus").join(target);
    let artifacts = work.join("artifacts").join(target);
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    std::fs::create_dir_all(&artifacts)
        .with_context(|| format!("creating {}", artifacts.display()))?;
    // libFuzzer writes new inputs into the first corpus directory only; the seeds and the
    // regression inputs after it are read, never changed.
    let mut dirs = vec![corpus];
    let mut regressions = 0;
    for kept in ["seeds", "regressions"] {
        let dir = fuzz_dir.join(kept).join(target);
        if dir.is_dir() {
            if kept == "regressions" {
                regressions = std::fs::read_dir(&dir)
                    .with_context(|| format!("reading {}", dir.display()))?
                    .count();
            }
            dirs.push(dir);
        }
    }

    eprintln!("\nxtask: fuzzing {target} for {} s", args.seconds);
    let mut cmd = base_command(cargo_fuzz, fuzz_dir, work, "run");
    cmd.arg(target)
        .args(&dirs)
        .arg("--")
        .arg(format!("-max_total_time={}", args.seconds))
        .arg(format!("-rss_limit_mb={}", args.rss_limit_mb))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1")
        // Progress lines would drown the table; crashes and the final stats still print.
        .arg("-verbosity=0")
        .stderr(Stdio::piped());
    let start = Instant::now();
    let output = cmd
        .output()
        .with_context(|| format!("running cargo fuzz run {target}"))?;
    let seconds = start.elapsed().as_secs_f64();
    let log = String::from_utf8_lossy(&output.stderr);
    let executions = log
        .lines()
        .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .and_then(|n| n.trim().parse().ok());
    let outcome = if output.status.success() {
        Ok(())
    } else {
        // The crash report (the panic message, the saved input) is what a developer needs.
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        for line in tail.iter().rev() {
            eprintln!("  {line}");
        }
        Err(format!(
            "{} (inputs saved under {})",
            output.status,
            artifacts.display()
        ))
    };
    Ok(Run {
        target: target.to_owned(),
        seconds,
        executions,
        regressions,
        outcome,
    })
}

fn base_command(cargo_fuzz: &Path, fuzz_dir: &Path, work: &Path, verb: &str) -> Command {
    let mut cmd = Command::new(cargo_fuzz);
    cmd.arg("fuzz")
        .arg(verb)
        .args(["--sanitizer", "none", "--fuzz-dir"])
        .arg(fuzz_dir)
        .arg("--target-dir")
        .arg(work.join("build"))
        .current_dir(fuzz_dir)
        // Fuzz binaries are built by the toolchain that runs us, stable included.
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    cmd
}

/// The fuzz targets, as named in fuzz/Cargo.toml.
fn targets(fuzz_dir: &Path) -> Result<Vec<String>> {
    let manifest = fuzz_dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    let mut names = Vec::new();
    let mut in_bin = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin && let Some(value) = line.strip_prefix("name") {
            let name = value.trim_start().trim_start_matches('=').trim();
            names.push(name.trim_matches('"').to_owned());
        }
    }
    if names.is_empty() {
        bail!("{} names no [[bin]] fuzz target", manifest.display());
    }
    Ok(names)
}

/// cargo-fuzz, installed once into the cache (or found on PATH at the pinned version).
fn ensure_cargo_fuzz() -> Result<PathBuf> {
    let cache = crate::cache_dir().join(format!("cargo-fuzz-{CARGO_FUZZ_VERSION}"));
    let bin = cache.join("bin/cargo-fuzz");
    if bin.is_file() {
        return Ok(bin);
    }
    eprintln!(
        "xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION} into {}",
        cache.display()
    );
    let status = crate::cargo()
        .args([
            "install",
            "cargo-fuzz",
            "--locked",
            "--version",
            CARGO_FUZZ_VERSION,
        ])
        .arg("--root")
        .arg(&cache)
        .status()
        .context("running cargo install cargo-fuzz")?;
    if !status.success() || !bin.is_file() {
        bail!("installing cargo-fuzz {CARGO_FUZZ_VERSION} failed ({status})");
    }
    Ok(bin)
}
