//! `swell sim` (placeholder until the simulator lands).

/// Options of `swell sim`.
#[derive(clap::Args)]
pub struct SimArgs {}

/// Runs `swell sim`.
pub fn run(_args: SimArgs) -> anyhow::Result<()> {
    anyhow::bail!("swell sim is not built yet")
}
