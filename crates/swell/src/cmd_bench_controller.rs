//! `swell bench controller`: the real controller and the real SQLite store (a file in a
//! temporary folder) on the in-process simulated provider
//! ([`swell_providers::simulated`]), with `--groups` groups of `--instances` instances
//! each at the default intervals. Once every group has its instances, it measures for
//! `--seconds`: the workers' pass durations, the scaling decisions, the provider calls
//! per minute and the process's CPU time over wall time (`core_share`; 1.0 = one core).
//! See docs/benchmarks.md.

use anyhow::{Context, bail};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use swell_core::{EventKind, GroupSpec, InstanceStatus, TenantId};
use swell_providers::Provider;
use swell_providers::simulated::SimulatedProvider;
use swell_server::clock::{Clock, TokioClock};
use swell_server::controller::{Controller, ControllerOptions, PassKind, Providers};
use swell_store::{NewEvent, SqliteStore, Store};

/// Options of `swell bench controller`.
#[derive(clap::Args, Debug)]
pub struct ControllerBenchArgs {
    /// Groups.
    #[arg(long, default_value_t = 300)]
    pub groups: u32,
    /// Instances per group (the group's `min` and starting desired capacity; its `max`
    /// is twice that).
    #[arg(long, default_value_t = 1)]
    pub instances: u32,
    /// Seconds measured, once every group has its instances.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Seconds of one turn of the simulated CPU load (each group at its own phase).
    #[arg(long, default_value_t = 1800)]
    pub period: u64,
    /// How far the simulated CPU swings either side of the policy's 50 % target, in
    /// percentage points.
    #[arg(long, default_value_t = 15.0)]
    pub swing: f64,
    /// Longest wait for every group to have its instances before measuring.
    #[arg(long, default_value_t = 1800)]
    pub setup_timeout: u64,
    /// Seconds waited, once every instance is recorded `running`, before measuring: the
    /// passes the last creates woke have run by then.
    #[arg(long, default_value_t = 15)]
    pub settle: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// CPU time this process has used (user + system), from `/proc/self/stat`.
pub fn process_cpu_time() -> anyhow::Result<Duration> {
    cpu_time_of("self")
}

/// CPU time (user + system) of the process `pid` (`self` for this one), from
/// `/proc/<pid>/stat`.
pub fn cpu_time_of(pid: &str) -> anyhow::Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) is in parentheses and may hold spaces: count from
    // after its closing one. utime and stime are fields 14 and 15, in clock ticks.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("{path}: no command field"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("{path}: field {} is not a number", i + 3))
    };
    // Fields after the command start at 3: utime is field 14, index 11 here.
    let ticks = tick(11)? + tick(12)?;
    // /proc reports in USER_HZ, which Linux fixes at 100 whatever the kernel's own HZ.
    Ok(Duration::from_millis(ticks * 10))
}

/// The group a benchmark runs: `instances` permanent instances, up to twice that, a
/// target-tracking policy at 50 % CPU (the simulated load swings around it).
fn spec(name: &str, instances: u32) -> anyhow::Result<GroupSpec> {
    let spec: GroupSpec = serde_json::from_value(serde_json::json!({
        "name": name,
        "provider": "simulated",
        "template": {"command": ["sleep", "1000"]},
        "min": instances, "max": instances * 2, "desired_capacity": instances,
        "cooldown": "30s", "warmup": "0s", "drain_timeout": "0s",
        "policies": [{"type": "target", "metric": "cpu", "target": 50.0}],
    }))
    .context("the benchmark's group spec")?;
    // Not `validate`d: its provider name, `simulated`, is not one a user may write.
    Ok(spec)
}

/// What one run measured.
#[derive(Debug, serde::Serialize)]
pub struct ControllerBenchReport {
    /// Groups.
    pub groups: u32,
    /// Instances per group at the start.
    pub instances: u32,
    /// Seconds measured.
    pub seconds: f64,
    /// Seconds until every group had its instances, all recorded `running` (the
    /// `--settle` wait after it is not counted).
    pub setup_seconds: f64,
    /// Scaling decisions stored while measuring.
    pub decisions: u64,
    /// Worker passes while measuring.
    pub ticks: u64,
    /// Median pass duration.
    pub p50_tick_ms: f64,
    /// 99th percentile pass duration.
    pub p99_tick_ms: f64,
    /// CPU time over wall time while measuring (1.0 = one core).
    pub core_share: f64,
    /// Calls to the provider per minute while measuring.
    pub provider_calls_per_minute: f64,
    /// The store's `COMMIT`s per minute while measuring (each holds the writes of every
    /// caller that waited for the writer at the same time: group commit).
    pub store_commits_per_minute: f64,
    /// The passes by what woke the worker (`evaluate`, `collect`, `reload`, `input`,
    /// `retired`, `created`): how many, and their 99th percentile, to tell which kind
    /// the slow ones are.
    pub passes_by_wake: std::collections::BTreeMap<&'static str, PassFigures>,
}

/// One kind of pass's figures in a [`ControllerBenchReport`].
#[derive(Debug, serde::Serialize)]
pub struct PassFigures {
    /// Passes while measuring.
    pub passes: u64,
    /// Their 99th percentile duration.
    pub p99_ms: f64,
}

/// Runs `swell bench controller`.
pub fn run(args: ControllerBenchArgs) -> anyhow::Result<()> {
    if args.groups == 0 || args.instances == 0 {
        bail!("--groups and --instances must be at least 1");
    }
    if args.instances > swell_core::group::MAX_GROUP_SIZE / 2 {
        bail!(
            "--instances must be at most {} (a group's max is twice it)",
            swell_core::group::MAX_GROUP_SIZE / 2
        );
    }
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let report = rt.block_on(bench(&args))?;
    if args.json {
        outln!("{}", serde_json::to_string(&report)?);
    } else {
        outln!(
            "swell bench controller --groups {} --instances {} --seconds {}",
            args.groups,
            args.instances,
            args.seconds
        );
        outln!(
            "| groups | instances | decisions | p50 tick ms | p99 tick ms | core share | provider calls/min |"
        );
        outln!("|---:|---:|---:|---:|---:|---:|---:|");
        outln!(
            "| {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.0} |",
            report.groups,
            report.instances,
            report.decisions,
            report.p50_tick_ms,
            report.p99_tick_ms,
            report.core_share,
            report.provider_calls_per_minute
        );
    }
    Ok(())
}

async fn bench(args: &ControllerBenchArgs) -> anyhow::Result<ControllerBenchReport> {
    let dir = tempfile::tempdir().context("a temporary folder for the store")?;
    let sqlite = SqliteStore::open(&dir.path().join("swell.db"))
        .await
        .context("opening the store")?;
    let store: Arc<dyn Store> = Arc::new(sqlite.clone());
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let sim = Arc::new(SimulatedProvider::new(
        "simulated",
        Duration::from_secs(args.period),
        args.swing,
    ));
    let tenant = TenantId::default_tenant();
    let setup = Instant::now();
    for i in 0..args.groups {
        let name = format!("g{i:05}");
        let spec = spec(&name, args.instances)?;
        let event = NewEvent {
            tenant: tenant.clone(),
            group: name.clone(),
            at: clock.now(),
            kind: EventKind::GroupCreated,
            instance_id: None,
            cause: None,
            message: format!("created group {name}"),
        };
        store
            .create_group(&tenant, &spec, clock.now(), event)
            .await
            .with_context(|| format!("storing group {name}"))?;
    }
    let mut providers = Providers::new();
    providers.insert(sim.name().to_string(), sim.clone() as Arc<dyn Provider>);
    let controller = Controller::new(
        store.clone(),
        providers,
        clock.clone(),
        ControllerOptions::default(),
    );
    controller
        .start()
        .await
        .context("starting the controller")?;
    let wanted = (args.groups as usize) * (args.instances as usize);
    let deadline = setup + Duration::from_secs(args.setup_timeout);
    let mut said = Instant::now();
    while sim.len() < wanted {
        if Instant::now() > deadline {
            controller.shutdown().await;
            bail!(
                "only {} of {wanted} instances after {}s (--setup-timeout)",
                sim.len(),
                args.setup_timeout
            );
        }
        if said.elapsed() >= Duration::from_secs(10) {
            eprintln!("setting up: {} of {wanted} instances", sim.len());
            said = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The provider has them all; the store's records follow (each create's `running`
    // row). Measuring starts once every group's first instances are recorded `running`
    // (its `min`, so scaling in never takes it below): no initial create left to record.
    loop {
        // Counted by the store: this runs every second over up to 100,000 rows.
        let running: u64 = store
            .count_live_instances(None)
            .await
            .context("counting the instances")?
            .iter()
            .filter(|c| c.status == InstanceStatus::Running)
            .map(|c| c.count)
            .sum();
        if running >= wanted as u64 {
            break;
        }
        if Instant::now() > deadline {
            controller.shutdown().await;
            bail!(
                "only {running} of {wanted} instances recorded running after {}s (--setup-timeout)",
                args.setup_timeout
            );
        }
        if said.elapsed() >= Duration::from_secs(10) {
            eprintln!("setting up: {running} of {wanted} instances recorded running");
            said = Instant::now();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let setup_seconds = setup.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let stats = controller.stats();
    stats.reset_passes();
    let decisions_before = stats.decisions.load(Ordering::Relaxed);
    let calls_before = sim.calls().total();
    let commits_before = sqlite.commits();
    let cpu_before = process_cpu_time()?;
    let wall = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds.max(1))).await;
    let cpu = process_cpu_time()?.saturating_sub(cpu_before);
    let elapsed = wall.elapsed();
    let calls = sim.calls().total() - calls_before;
    let report = ControllerBenchReport {
        groups: args.groups,
        instances: args.instances,
        seconds: elapsed.as_secs_f64(),
        setup_seconds,
        decisions: stats.decisions.load(Ordering::Relaxed) - decisions_before,
        ticks: stats.ticks.count(),
        p50_tick_ms: stats.ticks.quantile(0.50).as_secs_f64() * 1000.0,
        p99_tick_ms: stats.ticks.quantile(0.99).as_secs_f64() * 1000.0,
        core_share: cpu.as_secs_f64() / elapsed.as_secs_f64(),
        provider_calls_per_minute: calls as f64 * 60.0 / elapsed.as_secs_f64(),
        store_commits_per_minute: (sqlite.commits() - commits_before) as f64 * 60.0
            / elapsed.as_secs_f64(),
        passes_by_wake: PassKind::ALL
            .into_iter()
            .map(|kind| {
                let passes = stats.passes(kind);
                let figures = PassFigures {
                    passes: passes.count(),
                    p99_ms: passes.quantile(0.99).as_secs_f64() * 1000.0,
                };
                (kind.as_str(), figures)
            })
            .collect(),
    };
    controller.shutdown().await;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_cpu_time() {
        let before = process_cpu_time().unwrap();
        // Burn a little CPU so the count can only grow.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(process_cpu_time().unwrap() >= before);
    }

    #[test]
    fn the_benchmark_group_is_valid() {
        let s = spec("g00001", 10).unwrap();
        assert_eq!((s.min, s.max), (10, 20));
    }
}
