//! `swell sim`: replays a load trace through a scaling policy (DESIGN.md's "Simulator
//! contract"; docs/simulator.md).

use crate::docs::parse_policy_file;
use crate::output::{Format, Output, Table};
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::time::Duration;
use swell_core::sim::{SimOptions, SimPolicy, SimReport, Trace, simulate};

/// Options of `swell sim`.
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// The trace: CSV with header `t_seconds,value`.
    #[arg(long)]
    pub trace: PathBuf,
    /// swell, hpa, aws-target, lab, static-peak or oracle.
    #[arg(long, default_value = "swell", conflicts_with = "policy_file")]
    pub policy: String,
    /// A group's `policies:` section in YAML, instead of a named policy.
    #[arg(long)]
    pub policy_file: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// The same as `-o json`.
    #[arg(long)]
    pub json: bool,
}

/// The simulated group and provider (shared with `swell bench policies`).
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// Load one instance serves within its SLO, in trace units, or `auto` (the trace's
    /// peak needs 50 instances).
    #[arg(long, default_value = "auto")]
    pub capacity: String,
    /// Time from create to ready.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub provision_delay: Duration,
    /// Simulation step.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub tick: Duration,
    /// Utilisation (percent) every target-based policy aims at.
    #[arg(long, default_value_t = 70.0)]
    pub target: f64,
    /// Fewest instances.
    #[arg(long, default_value_t = 1)]
    pub min: u32,
    /// Most instances.
    #[arg(long, default_value_t = 1000)]
    pub max: u32,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    swell_core::duration::parse(s)
}

impl ModelArgs {
    /// The simulator options these flags describe.
    pub fn options(&self) -> anyhow::Result<SimOptions> {
        let capacity = match self.capacity.trim() {
            "auto" => None,
            c => Some(
                c.parse::<f64>()
                    .ok()
                    .filter(|c| c.is_finite() && *c > 0.0)
                    .with_context(|| format!("--capacity: `{c}` must be a number > 0 or `auto`"))?,
            ),
        };
        Ok(SimOptions {
            capacity,
            provision_delay: self.provision_delay,
            tick: self.tick,
            target: self.target,
            min: self.min,
            max: self.max,
            ..SimOptions::default()
        })
    }
}

/// Reads and parses a trace file; its name in reports is the file stem.
pub fn load_trace(path: &Path) -> anyhow::Result<(String, Trace)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the trace {}", path.display()))?;
    let trace = Trace::parse(&text).with_context(|| format!("{}", path.display()))?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    Ok((name, trace))
}

/// Runs `swell sim`: the report as the lines of [`print_report`] (`-o table`, `wide`),
/// one JSON object on a line (`-o json`, `--json`), YAML, or CSV (one row).
pub fn run(args: SimArgs, output: Output) -> anyhow::Result<()> {
    let opts = args.model.options()?;
    let (name, trace) = load_trace(&args.trace)?;
    let policy = match &args.policy_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            SimPolicy::Specs(
                parse_policy_file(&text).with_context(|| format!("{}", path.display()))?,
            )
        }
        None => SimPolicy::named(&args.policy).with_context(|| {
            format!(
                "--policy: unknown policy `{}` (available: {})",
                args.policy,
                SimPolicy::NAMED.join(", ")
            )
        })?,
    };
    let report = simulate(&trace, &name, &policy, &opts)?;
    let format = if args.json {
        Format::Json
    } else {
        output.format
    };
    match format {
        Format::Table | Format::Wide => print_report(&report),
        Format::Json => outln!("{}", serde_json::to_string(&report)?),
        Format::Yaml | Format::Csv => {
            crate::output::print(Output { format, ..output }, &report, report_row)?
        }
    }
    Ok(())
}

/// The report as one row (for `-o csv`).
fn report_row(r: &SimReport) -> Table {
    let mut t = Table::new(&[
        "policy",
        "trace",
        "duration_s",
        "instance_hours",
        "under_time_share",
        "over_time_share",
        "under_accuracy",
        "over_accuracy",
        "instability",
        "unserved_fraction",
        "scaling_actions",
    ]);
    t.add_row([
        r.policy.clone(),
        r.trace.clone(),
        r.duration_s.to_string(),
        r.instance_hours.to_string(),
        r.under_time_share.to_string(),
        r.over_time_share.to_string(),
        r.under_accuracy.to_string(),
        r.over_accuracy.to_string(),
        r.instability.to_string(),
        r.unserved_fraction.to_string(),
        r.scaling_actions.to_string(),
    ]);
    t
}

fn print_report(r: &SimReport) {
    outln!("policy             {}", r.policy);
    outln!("trace              {}", r.trace);
    outln!("duration           {} s", r.duration_s);
    outln!("instance-hours     {:.1}", r.instance_hours);
    outln!(
        "under-provisioned  {:.3} % of the time",
        r.under_time_share * 100.0
    );
    outln!(
        "over-provisioned   {:.3} % of the time",
        r.over_time_share * 100.0
    );
    outln!("under accuracy     {:.4}", r.under_accuracy);
    outln!("over accuracy      {:.4}", r.over_accuracy);
    outln!("instability        {:.4}", r.instability);
    outln!("unserved load      {:.4} %", r.unserved_fraction * 100.0);
    outln!("scaling actions    {}", r.scaling_actions);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_file_section_and_list() {
        let specs = parse_policy_file(
            "policies:\n  - type: target\n    target: 60\n  - type: schedule\n    cron: '0 8 * * *'\n    duration: 2h\n    desired: 4\n",
        )
        .unwrap();
        assert_eq!(specs.len(), 2);
        let specs = parse_policy_file("- type: proportional\n  target: 60\n").unwrap();
        assert_eq!(specs.len(), 1);
    }

    #[test]
    fn policy_file_errors_name_the_place() {
        let err =
            parse_policy_file("policies:\n  - type: target\n    target: 60\n    tolerence: 1\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("tolerence"), "{err}");
        assert!(err.contains("line 4 column 5"), "{err}");
        let err = parse_policy_file("polices: []\n").unwrap_err().to_string();
        assert!(err.contains("polices") && err.contains("line"), "{err}");
        let err = parse_policy_file("policies:\n  - type: target\n    target: -1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("policies[0].target"), "{err}");
    }
}
