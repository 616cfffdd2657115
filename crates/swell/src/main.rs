//! `swell`: the server, the demo, the simulator, the benchmarks and the client, in one binary.

mod cmd_bench;
mod cmd_sim;

use clap::{Parser, Subcommand};

/// Swell: autoscaling for private and hybrid clouds.
#[derive(Parser)]
#[command(name = "swell", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay a load trace through a scaling policy (see docs/simulator.md).
    Sim(cmd_sim::SimArgs),
    /// Benchmarks that print figures against a baseline measured in the same run.
    Bench(cmd_bench::BenchArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Sim(args) => cmd_sim::run(args),
        Command::Bench(args) => cmd_bench::run(args),
    }
}
