//! `swell bench lb`: Swell's load balancer against nginx in front of the same two
//! `swell demo-app` instances, measured by `wrk` (see docs/benchmarks.md).

use anyhow::Context;
use std::path::PathBuf;
use std::time::Duration;
use swell_lb::bench::{BenchOptions, bench_lb};

/// Options of `swell bench lb`.
#[derive(clap::Args, Debug)]
pub struct LbBenchArgs {
    /// Measured runs per load and per proxy (they alternate; medians are reported).
    #[arg(long, default_value_t = 3)]
    pub runs: u32,
    /// Seconds per measured run.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Seconds of warm-up against each proxy before measuring.
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// wrk threads (`-t`).
    #[arg(long, default_value_t = 2)]
    pub threads: u32,
    /// wrk connections (`-c`).
    #[arg(long, default_value_t = 64)]
    pub connections: u32,
    /// Swell's load-balancer worker threads [default: one per core, like nginx's
    /// `worker_processes auto`].
    #[arg(long)]
    pub workers: Option<usize>,
    /// The path requested (the demo app's `/` is cheap).
    #[arg(long, default_value = "/")]
    pub path: String,
    /// The nginx binary.
    #[arg(long, default_value = "nginx")]
    pub nginx: PathBuf,
    /// The wrk binary.
    #[arg(long, default_value = "wrk")]
    pub wrk: PathBuf,
    /// Install nginx and wrk with `apt-get install -y nginx wrk` when missing (as root).
    #[arg(long)]
    pub install: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `swell bench lb`.
pub fn run(args: LbBenchArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding the swell binary")?;
    let mut opts = BenchOptions {
        backend_command: vec![
            exe.to_string_lossy().into_owned(),
            "demo-app".into(),
            "--port".into(),
            "{port}".into(),
        ],
        path: args.path,
        runs: args.runs.max(1),
        duration: Duration::from_secs(args.duration.max(1)),
        warmup: Duration::from_secs(args.warmup),
        threads: args.threads,
        connections: args.connections,
        nginx: args.nginx,
        wrk: args.wrk,
        install: args.install,
        ..BenchOptions::default()
    };
    if let Some(w) = args.workers {
        opts.workers = w;
    }
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let report = rt
        .block_on(bench_lb(&opts, |line| eprintln!("{line}")))
        .context("swell bench lb")?;
    if args.json {
        outln!("{}", report.to_json());
    } else {
        outln!("{}", report.command);
        out!("{}", report.to_text());
    }
    Ok(())
}
