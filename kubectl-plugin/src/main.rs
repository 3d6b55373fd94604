//! `kubectl-scanengine`: kubectl runs it for `kubectl scanengine …`.

use std::process::ExitCode;

use clap::Parser;
use kubectl_scanengine::cli::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match kubectl_scanengine::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
