//! `swell bench` (placeholder until the benchmarks land).

/// Options of `swell bench`.
#[derive(clap::Args)]
pub struct BenchArgs {}

/// Runs `swell bench`.
pub fn run(_args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("swell bench is not built yet")
}
