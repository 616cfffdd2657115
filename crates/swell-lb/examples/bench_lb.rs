//! Runs the load-balancer benchmark without the `swell` binary:
//!
//! ```sh
//! cargo build --release -p swell-demo-app
//! cargo run --release -p swell-lb --example bench_lb -- [--json] [--runs N] [--secs S] \
//!     -- target/release/swell-demo-app
//! ```
//!
//! `swell bench lb` is the same benchmark, with `swell demo-app` as the backend.

use std::time::Duration;

use swell_lb::bench::{BenchOptions, bench_lb};

fn main() {
    let mut opts = BenchOptions::default();
    let mut json = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--json" => json = true,
            "--runs" => opts.runs = args.next().and_then(|v| v.parse().ok()).expect("--runs N"),
            "--secs" => {
                opts.duration =
                    Duration::from_secs(args.next().and_then(|v| v.parse().ok()).expect("--secs S"))
            }
            "--workers" => {
                opts.workers = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--workers N")
            }
            "--" => {
                opts.backend_command = args.by_ref().collect();
            }
            other => panic!("unknown argument {other}"),
        }
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let report = rt
        .block_on(bench_lb(&opts, |line| eprintln!("{line}")))
        .unwrap_or_else(|e| panic!("bench failed: {e}"));
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
}
