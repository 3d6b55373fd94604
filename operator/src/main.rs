//! `scan-engine-operator`: parses flags and runs; the work is in the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = <scan_engine_operator::cli::Cli as clap::Parser>::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(scan_engine_operator::run::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scan-engine-operator: {e:#}");
            ExitCode::FAILURE
        }
    }
}
