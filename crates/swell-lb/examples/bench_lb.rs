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
    let cpu_before = cpu_seconds();
    let report = rt
        .block_on(bench_lb(&opts, |line| eprintln!("{line}")))
        .unwrap_or_else(|e| panic!("bench failed: {e}"));
    // This process is Swell's load balancer (nginx, wrk and the instances are
    // children): its CPU time per proxied request, warm-up excluded from the count.
    let requests: u64 = [&report.keepalive, &report.newconn]
        .iter()
        .flat_map(|c| c.swell_runs.iter().map(|r| r.requests))
        .sum();
    if let (Some(a), Some(b)) = (cpu_before, cpu_seconds()) {
        eprintln!(
            "swell CPU: {:.1} s for {requests} requests = {:.1} us/request (upper bound)",
            b - a,
            (b - a) * 1e6 / requests.max(1) as f64
        );
    }
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
}

/// User + system CPU seconds of this process so far (Linux).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}
