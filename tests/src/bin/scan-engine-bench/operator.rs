//! `operator`: N ScanEngines reconciled by the release operator on a real control plane.

#[derive(Debug, clap::Args)]
pub struct Args {
    /// ScanEngines to create.
    #[arg(long, default_value_t = 1000)]
    engines: usize,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::bail!(
        "bench operator ({} engines): not implemented yet",
        args.engines
    )
}
