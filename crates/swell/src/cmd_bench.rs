//! `swell bench`: benchmarks that print figures against baselines measured in the same
//! run. `swell bench policies` runs every policy on every trace (docs/benchmarks.md).

use crate::cmd_sim::{ModelArgs, load_trace};
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::time::Instant;
use swell_core::sim::{SimPolicy, SimReport, simulate};

/// Options of `swell bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Which benchmark.
    #[command(subcommand)]
    pub command: BenchCommand,
}

/// The benchmarks.
#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Every scaling policy on every trace: cost, SLO and stability, against hpa and oracle.
    Policies(PoliciesArgs),
    /// Swell's load balancer against nginx under wrk: requests/s and p50/p99, keep-alive
    /// and new-connection loads.
    Lb(crate::cmd_bench_lb::LbBenchArgs),
    /// The controller on an in-process simulated provider and the real SQLite store:
    /// pass durations, decisions, provider calls and CPU share at N groups × M instances.
    Controller(crate::cmd_bench_controller::ControllerBenchArgs),
    /// Swell against the causal frontier (the cheapest hindsight-tuned causal rule at
    /// hpa's under-provisioned time + 0.1 pp), with the policy goals per trace.
    Frontier(FrontierArgs),
}

/// Options of `swell bench policies`.
#[derive(clap::Args, Debug)]
pub struct PoliciesArgs {
    /// The folder of `*.csv` traces [default: the repository's `traces/`].
    #[arg(long)]
    pub traces: Option<PathBuf>,
    /// Only these policies (comma separated) [default: all].
    #[arg(long, value_delimiter = ',')]
    pub policies: Vec<String>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Print one JSON object per (trace, policy) instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// Runs `swell bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.command {
        BenchCommand::Policies(a) => policies(a),
        BenchCommand::Lb(a) => crate::cmd_bench_lb::run(a),
        BenchCommand::Controller(a) => crate::cmd_bench_controller::run(a),
        BenchCommand::Frontier(a) => frontier(a),
    }
}

/// The repository's bundled `traces/`: found from the working directory (the repository
/// or any folder in it) or, for a binary built here, from the source tree.
fn default_traces() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        candidates.extend(cwd.ancestors().map(|dir| dir.join("traces")));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../traces"));
    candidates
        .into_iter()
        .find(|p| p.join("README.md").is_file() && p.is_dir())
}

/// The `*.csv` files of `dir` (default: the repository's `traces/`), sorted.
fn trace_files(dir: Option<PathBuf>) -> anyhow::Result<Vec<PathBuf>> {
    let dir = match dir {
        Some(d) => d,
        None => default_traces()
            .context("no traces/ folder found (run from the repository, or pass --traces DIR)")?,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no *.csv trace in {}", dir.display());
    }
    Ok(files)
}

fn policies(args: PoliciesArgs) -> anyhow::Result<()> {
    let opts = args.model.options()?;
    let files = trace_files(args.traces)?;
    let names: Vec<String> = if args.policies.is_empty() {
        SimPolicy::NAMED.iter().map(|s| s.to_string()).collect()
    } else {
        args.policies.clone()
    };
    let mut chosen = vec![];
    for n in &names {
        chosen.push(SimPolicy::named(n).with_context(|| {
            format!(
                "--policies: unknown policy `{n}` (available: {})",
                SimPolicy::NAMED.join(", ")
            )
        })?);
    }
    let total = files.len() * chosen.len();
    let mut done = 0;
    let started = Instant::now();
    let mut all: Vec<(String, Vec<SimReport>)> = vec![];
    for file in &files {
        let (name, trace) = load_trace(file)?;
        let mut reports = vec![];
        for policy in &chosen {
            let t0 = Instant::now();
            let r = simulate(&trace, &name, policy, &opts)?;
            done += 1;
            eprintln!(
                "[{done}/{total}] {name} {:<12} {:.1}s (total {:.0}s)",
                policy.name(),
                t0.elapsed().as_secs_f64(),
                started.elapsed().as_secs_f64()
            );
            if args.json {
                outln!("{}", serde_json::to_string(&r)?);
            }
            reports.push(r);
        }
        all.push((name, reports));
    }
    if !args.json {
        print_tables(&all);
    }
    Ok(())
}

fn find<'a>(reports: &'a [SimReport], policy: &str) -> Option<&'a SimReport> {
    reports.iter().find(|r| r.policy == policy)
}

fn ratio(a: f64, b: Option<&SimReport>) -> Option<f64> {
    b.map(|b| b.instance_hours)
        .filter(|&b| b > 0.0)
        .map(|b| a / b)
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.3}"))
}

fn print_tables(all: &[(String, Vec<SimReport>)]) {
    for (trace, reports) in all {
        let hpa = find(reports, "hpa");
        let oracle = find(reports, "oracle");
        outln!("### {trace}\n");
        outln!(
            "| policy | instance-hours | × hpa | × oracle | under-provisioned time % | unserved % | instability | actions |"
        );
        outln!("|---|---:|---:|---:|---:|---:|---:|---:|");
        for r in reports {
            outln!(
                "| {} | {:.1} | {} | {} | {:.3} | {:.4} | {:.4} | {} |",
                r.policy,
                r.instance_hours,
                fmt_ratio(ratio(r.instance_hours, hpa)),
                fmt_ratio(ratio(r.instance_hours, oracle)),
                r.under_time_share * 100.0,
                r.unserved_fraction * 100.0,
                r.instability,
                r.scaling_actions
            );
        }
        outln!();
    }
    // Geometric means of the instance-hour ratios over the traces.
    let policies: Vec<String> = all
        .first()
        .map(|(_, rs)| rs.iter().map(|r| r.policy.clone()).collect())
        .unwrap_or_default();
    outln!("### geometric mean over {} traces\n", all.len());
    outln!("| policy | instance-hours × hpa | instance-hours × oracle |");
    outln!("|---|---:|---:|");
    for p in policies {
        let gm = |base: &str| -> Option<f64> {
            let logs: Option<Vec<f64>> = all
                .iter()
                .map(|(_, rs)| {
                    let r = find(rs, &p)?;
                    ratio(r.instance_hours, find(rs, base)).map(f64::ln)
                })
                .collect();
            logs.filter(|l| !l.is_empty())
                .map(|l| (l.iter().sum::<f64>() / l.len() as f64).exp())
        };
        outln!(
            "| {p} | {} | {} |",
            fmt_ratio(gm("hpa")),
            fmt_ratio(gm("oracle"))
        );
    }
}

/// Options of `swell bench frontier`.
#[derive(clap::Args, Debug)]
pub struct FrontierArgs {
    /// The folder of `*.csv` traces [default: the repository's `traces/`].
    #[arg(long, conflicts_with = "seeds")]
    pub traces: Option<PathBuf>,
    /// Instead of a folder: every synthetic family of `swell_core::sim::synth` with these
    /// seeds (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub seeds: Vec<u64>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Print one JSON object per trace instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn frontier(args: FrontierArgs) -> anyhow::Result<()> {
    use swell_core::sim::frontier::causal_frontier;
    use swell_core::sim::synth::{SynthKind, file_name, generate};
    let opts = args.model.options()?;
    let traces: Vec<(String, swell_core::sim::Trace)> = if args.seeds.is_empty() {
        trace_files(args.traces)?
            .iter()
            .map(|f| load_trace(f))
            .collect::<anyhow::Result<_>>()?
    } else {
        let mut out = vec![];
        for &seed in &args.seeds {
            for kind in SynthKind::ALL {
                let name = file_name(kind, seed).replace(".csv", "");
                let trace = swell_core::sim::Trace::from_points(generate(kind, seed))
                    .with_context(|| format!("the generated trace {name}"))?;
                out.push((name, trace));
            }
        }
        out
    };
    let started = Instant::now();
    let mut reports = vec![];
    for (i, (name, trace)) in traces.iter().enumerate() {
        let r = causal_frontier(trace, name, &opts)?;
        eprintln!(
            "[{}/{}] {name} (total {:.0}s)",
            i + 1,
            traces.len(),
            started.elapsed().as_secs_f64()
        );
        if args.json {
            let mut v = serde_json::to_value(&r)?;
            v["swell_over_frontier"] = serde_json::json!(r.swell_over_frontier());
            outln!("{}", serde_json::to_string(&v)?);
        }
        reports.push(r);
    }
    if !args.json {
        print_frontier(&reports);
    }
    Ok(())
}

/// The goals of issue 18 per trace: under-provisioned time within min(hpa, aws-target) +
/// 0.1 pp, instance-hours at most min(hpa, aws-target), cost at most 1.05 × the frontier.
fn frontier_misses(r: &swell_core::sim::frontier::FrontierReport) -> Vec<String> {
    let mut miss = vec![];
    let best_under = r.hpa.under_time_share.min(r.aws_target.under_time_share);
    if r.swell.under_time_share > best_under + 0.001 {
        miss.push(format!(
            "under +{:.3} pp",
            (r.swell.under_time_share - best_under) * 100.0
        ));
    }
    let best_cost = r.hpa.instance_hours.min(r.aws_target.instance_hours);
    if r.swell.instance_hours > best_cost {
        miss.push(format!(
            "cost {:.3} × min(hpa, aws)",
            r.swell.instance_hours / best_cost
        ));
    }
    if r.swell_over_frontier().is_none_or(|x| x > 1.05) {
        miss.push("> 1.05 × frontier".into());
    }
    miss
}

fn print_frontier(reports: &[swell_core::sim::frontier::FrontierReport]) {
    outln!(
        "| trace | swell × frontier | hpa × frontier | frontier × oracle | rule (window, hold, m) | swell × hpa | swell × aws | under % swell / hpa / aws / frontier | goals missed |"
    );
    outln!("|---|---:|---:|---:|---|---:|---:|---|---|");
    let (mut lh, mut lf, mut nf) = (0.0, 0.0, 0);
    let mut missed = 0;
    for r in reports {
        let f = r.frontier;
        let over = |h: f64| f.map(|f| h / f.instance_hours);
        let misses = frontier_misses(r);
        missed += usize::from(!misses.is_empty());
        lh += (r.swell.instance_hours / r.hpa.instance_hours).ln();
        if let Some(x) = r.swell_over_frontier() {
            lf += x.ln();
            nf += 1;
        }
        outln!(
            "| {} | {} | {} | {} | {} | {:.3} | {:.3} | {:.3} / {:.3} / {:.3} / {} | {} |",
            r.trace,
            fmt_ratio(r.swell_over_frontier()),
            fmt_ratio(over(r.hpa.instance_hours)),
            fmt_ratio(f.map(|f| f.instance_hours / r.oracle.instance_hours)),
            f.map_or("-".into(), |f| format!(
                "{}, {}, {:.2}",
                f.window, f.hold, f.margin
            )),
            r.swell.instance_hours / r.hpa.instance_hours,
            r.swell.instance_hours / r.aws_target.instance_hours,
            r.swell.under_time_share * 100.0,
            r.hpa.under_time_share * 100.0,
            r.aws_target.under_time_share * 100.0,
            f.map_or("-".into(), |f| format!("{:.3}", f.under_time_share * 100.0)),
            misses.join(", ")
        );
    }
    let n = reports.len().max(1) as f64;
    outln!(
        "\n{} traces: swell's geometric mean {:.3} × hpa, {} × frontier; {missed} miss a goal",
        reports.len(),
        (lh / n).exp(),
        if nf > 0 {
            format!("{:.3}", (lf / f64::from(nf)).exp())
        } else {
            "-".into()
        }
    );
}
