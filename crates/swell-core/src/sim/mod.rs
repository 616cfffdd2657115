//! The trace simulator behind `swell sim` and `swell bench policies` (DESIGN.md's
//! "Simulator contract"): it replays a load trace through the same [`PolicyEngine`] the
//! controller runs, against a simulated provider whose instances take `provision_delay`
//! to boot, and scores the result with the SPEC Research Group elasticity metrics.
//!
//! Pure: the trace comes in as text, the time is the simulation's own.

pub mod baselines;
pub mod frontier;
pub mod synth;

use crate::group::Capacity;
use crate::metrics::{Metric, MetricSample, MetricWindow};
use crate::policy::{GroupState, Policy, PolicyEngine, PolicySpec, SwellPolicy, ThresholdPolicy};
use crate::time::Timestamp;
use serde::Serialize;
use std::collections::VecDeque;
use std::time::Duration;

/// A trace that cannot be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TraceError {
    /// The first line is not `t_seconds,value`.
    #[error("line 1: the header must be `t_seconds,value`, not `{0}`")]
    Header(String),
    /// A row that is not two numbers.
    #[error("line {line}: `{text}` is not `t_seconds,value` with two numbers")]
    Row {
        /// 1-based line number.
        line: usize,
        /// The row.
        text: String,
    },
    /// Times that do not increase, or a negative value.
    #[error("line {line}: {rule}")]
    Order {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        rule: String,
    },
    /// No rows.
    #[error("the trace has no rows")]
    Empty,
}

/// The longest trace `Trace::parse` accepts: one year, in seconds.
pub const MAX_TRACE_SECONDS: f64 = 366.0 * 86_400.0;

/// Most ticks a simulation may take (`trace length / tick`), so that a long trace with a
/// short tick is an error rather than an allocation the machine cannot make.
pub const MAX_TICKS: f64 = 10_000_000.0;

/// Offered load over time: `(t_seconds, value)` rows, times strictly increasing.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    points: Vec<(f64, f64)>,
}

impl Trace {
    /// Parses the CSV text of a trace (`t_seconds,value` header, then one row per step).
    pub fn parse(text: &str) -> Result<Trace, TraceError> {
        let mut lines = text.lines().enumerate();
        let header = lines.next().map(|(_, l)| l.trim()).unwrap_or_default();
        if header.replace(' ', "") != "t_seconds,value" {
            return Err(TraceError::Header(header.to_string()));
        }
        let mut points: Vec<(f64, f64)> = Vec::new();
        for (i, line) in lines {
            let line_no = i + 1;
            let row = line.trim();
            if row.is_empty() {
                continue;
            }
            let parsed = row.split_once(',').and_then(|(t, v)| {
                Some((t.trim().parse::<f64>().ok()?, v.trim().parse::<f64>().ok()?))
            });
            let Some((t, v)) = parsed.filter(|(t, v)| t.is_finite() && v.is_finite()) else {
                return Err(TraceError::Row {
                    line: line_no,
                    text: row.to_string(),
                });
            };
            if t > MAX_TRACE_SECONDS {
                return Err(TraceError::Order {
                    line: line_no,
                    rule: format!(
                        "t_seconds {t} must be <= {MAX_TRACE_SECONDS} (a trace covers at most 366 days)"
                    ),
                });
            }
            if v < 0.0 {
                return Err(TraceError::Order {
                    line: line_no,
                    rule: format!("value {v} must be >= 0"),
                });
            }
            match points.last() {
                None if t != 0.0 => {
                    return Err(TraceError::Order {
                        line: line_no,
                        rule: format!("the first row must be at t_seconds 0, not {t}"),
                    });
                }
                Some(&(prev, _)) if t <= prev => {
                    return Err(TraceError::Order {
                        line: line_no,
                        rule: format!("t_seconds {t} must be greater than {prev}"),
                    });
                }
                _ => {}
            }
            points.push((t, v));
        }
        if points.is_empty() {
            return Err(TraceError::Empty);
        }
        Ok(Trace { points })
    }

    /// A trace from rows (for tests and generated load); times must increase from 0.
    pub fn from_points(points: Vec<(f64, f64)>) -> Result<Trace, TraceError> {
        let mut text = String::from("t_seconds,value\n");
        for (t, v) in points {
            text.push_str(&format!("{t},{v}\n"));
        }
        Trace::parse(&text)
    }

    /// The rows, `(t_seconds, value)`, times strictly increasing from 0.
    pub fn points(&self) -> &[(f64, f64)] {
        &self.points
    }

    /// The last row's time.
    pub fn t_last(&self) -> f64 {
        self.points.last().map_or(0.0, |p| p.0)
    }

    /// The largest value.
    pub fn peak(&self) -> f64 {
        self.points.iter().map(|p| p.1).fold(0.0, f64::max)
    }

    /// The load at every tick `i × tick`, `i = 0 ..= floor(t_last / tick)`, linearly
    /// interpolated between rows.
    pub fn sample(&self, tick: Duration) -> Vec<f64> {
        let step = tick.as_secs_f64();
        let n = (self.t_last() / step + 1e-9).floor() as usize + 1;
        let mut out = Vec::with_capacity(n);
        let mut j = 0;
        for i in 0..n {
            let t = i as f64 * step;
            while j + 1 < self.points.len() && self.points[j + 1].0 <= t {
                j += 1;
            }
            let (t0, v0) = self.points[j];
            let v = match self.points.get(j + 1) {
                Some(&(t1, v1)) if t > t0 => v0 + (v1 - v0) * (t - t0) / (t1 - t0),
                _ => v0,
            };
            out.push(v);
        }
        out
    }
}

/// Which policy a simulation runs.
#[derive(Debug, Clone, PartialEq)]
pub enum SimPolicy {
    /// The product's default policy, with the group defaults (cooldown 120 s).
    Swell,
    /// Kubernetes HPA v2 with the default behaviour.
    Hpa,
    /// AWS target tracking.
    AwsTarget,
    /// Seed 0 literally: threshold 20 %, 40 s, +1, max 4.
    Lab,
    /// The trace's peak demand, all the time.
    StaticPeak,
    /// Perfect foresight: the lower bound on cost.
    Oracle,
    /// A group's `policies:` section (with the group's default cooldown).
    Specs(Vec<PolicySpec>),
}

impl SimPolicy {
    /// Every named policy, in the order the benchmark prints them.
    pub const NAMED: [&'static str; 6] =
        ["swell", "hpa", "aws-target", "lab", "static-peak", "oracle"];

    /// The named policy, if `name` is one.
    pub fn named(name: &str) -> Option<SimPolicy> {
        Some(match name {
            "swell" => SimPolicy::Swell,
            "hpa" => SimPolicy::Hpa,
            "aws-target" => SimPolicy::AwsTarget,
            "lab" => SimPolicy::Lab,
            "static-peak" => SimPolicy::StaticPeak,
            "oracle" => SimPolicy::Oracle,
            _ => return None,
        })
    }

    /// The name in reports.
    pub fn name(&self) -> &'static str {
        match self {
            SimPolicy::Swell => "swell",
            SimPolicy::Hpa => "hpa",
            SimPolicy::AwsTarget => "aws-target",
            SimPolicy::Lab => "lab",
            SimPolicy::StaticPeak => "static-peak",
            SimPolicy::Oracle => "oracle",
            SimPolicy::Specs(_) => "policy-file",
        }
    }
}

/// The simulator's options (the defaults are the contract's).
#[derive(Debug, Clone, PartialEq)]
pub struct SimOptions {
    /// Load one instance serves within its SLO; `None`: the trace's peak needs 50.
    pub capacity: Option<f64>,
    /// Time from create to ready.
    pub provision_delay: Duration,
    /// The simulation step.
    pub tick: Duration,
    /// Utilisation (percent) every target-based policy aims at.
    pub target: f64,
    /// Fewest instances.
    pub min: u32,
    /// Most instances.
    pub max: u32,
    /// The group cooldown for `swell` and policy files (baselines keep their own rules).
    pub cooldown: Duration,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            capacity: None,
            provision_delay: Duration::from_secs(120),
            tick: Duration::from_secs(15),
            target: 70.0,
            min: 1,
            max: 1000,
            cooldown: Duration::from_secs(120),
        }
    }
}

/// Options the simulator cannot run with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimError {
    /// An option out of range.
    #[error("--{option}: {rule}")]
    Option {
        /// The option's name.
        option: &'static str,
        /// The rule it broke.
        rule: String,
    },
}

/// The result of one simulation: the SPEC Research Group elasticity metrics (the JSON
/// keys are the contract's).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimReport {
    /// The policy's name.
    pub policy: String,
    /// The trace's name.
    pub trace: String,
    /// Ticks × tick.
    pub duration_s: u64,
    /// Provisioned instances (booting included) × hours.
    pub instance_hours: f64,
    /// Share of time with `s_t < d_t`.
    pub under_time_share: f64,
    /// Share of time with `s_t > d_t`.
    pub over_time_share: f64,
    /// Mean of `(d_t - s_t)+ / d_t`.
    pub under_accuracy: f64,
    /// Mean of `(s_t - d_t)+ / d_t`.
    pub over_accuracy: f64,
    /// Share of ticks where supply does not move with demand.
    pub instability: f64,
    /// Load above ready capacity / total load.
    pub unserved_fraction: f64,
    /// Changes of the desired (for `oracle`: provisioned) count.
    pub scaling_actions: u64,
}

/// Per-tick series of a simulation, for tests and plots.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    /// Offered load.
    pub load: Vec<f64>,
    /// Demand `d_t`.
    pub demand: Vec<u32>,
    /// Ready instances `s_t`.
    pub supply: Vec<u32>,
    /// Provisioned instances (booting included).
    pub provisioned: Vec<u32>,
    /// Scaling actions taken.
    pub actions: u64,
}

/// `ceil(load / capacity)`, forgiving floating-point noise.
fn demand(load: f64, capacity: f64) -> u32 {
    ((load / capacity) - 1e-9)
        .ceil()
        .clamp(0.0, f64::from(u32::MAX)) as u32
}

/// Runs `policy` over `trace`.
pub fn simulate(
    trace: &Trace,
    trace_name: &str,
    policy: &SimPolicy,
    opts: &SimOptions,
) -> Result<SimReport, SimError> {
    let series = simulate_series(trace, policy, opts)?;
    let capacity = capacity_of(trace, opts);
    Ok(score(
        &series,
        capacity,
        opts.tick,
        policy.name(),
        trace_name,
    ))
}

fn capacity_of(trace: &Trace, opts: &SimOptions) -> f64 {
    match opts.capacity {
        Some(c) => c,
        None if trace.peak() > 0.0 => trace.peak() / 50.0,
        None => 1.0,
    }
}

fn check(opts: &SimOptions) -> Result<Capacity, SimError> {
    let err = |option, rule: &str| SimError::Option {
        option,
        rule: rule.to_string(),
    };
    if opts.capacity.is_some_and(|c| !c.is_finite() || c <= 0.0) {
        return Err(err("capacity", "must be a number > 0 or `auto`"));
    }
    if opts.tick < Duration::from_millis(1) {
        return Err(err("tick", "must be at least 1ms"));
    }
    if !opts.target.is_finite() || opts.target <= 0.0 || opts.target > 100.0 {
        return Err(err("target", "must be within (0, 100]"));
    }
    Capacity::new(opts.min, opts.max).map_err(|e| SimError::Option {
        option: "max",
        rule: e.rule,
    })
}

/// Runs `policy` over `trace` and returns the per-tick series.
pub fn simulate_series(
    trace: &Trace,
    policy: &SimPolicy,
    opts: &SimOptions,
) -> Result<Series, SimError> {
    let bounds = check(opts)?;
    let ticks = trace.t_last() / opts.tick.as_secs_f64();
    if ticks > MAX_TICKS {
        return Err(SimError::Option {
            option: "tick",
            rule: format!(
                "the trace ({} s) would take {ticks:.0} ticks of {:?}; at most {MAX_TICKS} (use a longer tick)",
                trace.t_last(),
                opts.tick
            ),
        });
    }
    let capacity = capacity_of(trace, opts);
    let load = trace.sample(opts.tick);
    let demand: Vec<u32> = load.iter().map(|&l| demand(l, capacity)).collect();
    let mut series = match policy {
        SimPolicy::Oracle => oracle(&demand, bounds, opts),
        SimPolicy::StaticPeak => {
            let peak = bounds.clamp(demand.iter().copied().max().unwrap_or(0));
            Series {
                supply: vec![peak; demand.len()],
                provisioned: vec![peak; demand.len()],
                ..Series::default()
            }
        }
        _ => {
            let (engine, bounds) = engine_for(policy, bounds, opts);
            run_engine(engine, bounds, &load, &demand, capacity, opts)
        }
    };
    series.load = load;
    series.demand = demand;
    Ok(series)
}

fn engine_for(policy: &SimPolicy, bounds: Capacity, opts: &SimOptions) -> (PolicyEngine, Capacity) {
    let one = |p: Box<dyn Policy>, cooldown| PolicyEngine::with_policies(vec![p], bounds, cooldown);
    match policy {
        SimPolicy::Swell => {
            let spec = SwellPolicy {
                target: opts.target,
                provisioning_delay: opts.provision_delay,
                ..SwellPolicy::default()
            };
            (one(Box::new(spec.runner()), opts.cooldown), bounds)
        }
        SimPolicy::Hpa => (
            one(Box::new(baselines::Hpa::new(opts.target)), Duration::ZERO),
            bounds,
        ),
        SimPolicy::AwsTarget => (
            one(
                Box::new(baselines::AwsTarget::new(opts.target)),
                Duration::ZERO,
            ),
            bounds,
        ),
        SimPolicy::Lab => {
            let lab = ThresholdPolicy {
                metric: Metric::Cpu,
                scale_out_above: Some(20.0),
                scale_in_below: None,
                step: 1,
                steps: vec![],
                evaluation_period: Duration::from_secs(40),
            };
            let max = bounds.max().min(4).max(bounds.min());
            let bounds = Capacity::new(bounds.min(), max).unwrap_or(bounds);
            (
                PolicyEngine::with_policies(vec![Box::new(lab)], bounds, Duration::ZERO),
                bounds,
            )
        }
        SimPolicy::Specs(specs) => (PolicyEngine::new(specs, bounds, opts.cooldown), bounds),
        SimPolicy::Oracle | SimPolicy::StaticPeak => (
            PolicyEngine::with_policies(vec![], bounds, Duration::ZERO),
            bounds,
        ),
    }
}

/// The oracle: ready = `clamp(d_t)`, provisioned = the largest need over
/// `[t, t + provision_delay]` (each instance is created exactly one delay ahead).
fn oracle(demand: &[u32], bounds: Capacity, opts: &SimOptions) -> Series {
    let need: Vec<u32> = demand.iter().map(|&d| bounds.clamp(d)).collect();
    let ahead =
        (opts.provision_delay.as_secs_f64() / opts.tick.as_secs_f64() + 1e-9).floor() as usize;
    let n = need.len();
    let mut provisioned = vec![0; n];
    // Sliding-window maximum over [i, i + ahead], computed from the end.
    let mut dq: VecDeque<usize> = VecDeque::new();
    let mut next = n;
    for i in (0..n).rev() {
        let hi = (i + ahead).min(n - 1);
        while next > i {
            next -= 1;
            while dq.back().is_some_and(|&j| need[j] <= need[next]) {
                dq.pop_back();
            }
            dq.push_back(next);
        }
        while dq.front().is_some_and(|&j| j > hi) {
            dq.pop_front();
        }
        provisioned[i] = dq.front().map_or(need[i], |&j| need[j]);
    }
    let actions = provisioned.windows(2).filter(|w| w[0] != w[1]).count() as u64;
    Series {
        supply: need,
        provisioned,
        actions,
        ..Series::default()
    }
}

fn run_engine(
    mut engine: PolicyEngine,
    bounds: Capacity,
    load: &[f64],
    demand: &[u32],
    capacity: f64,
    opts: &SimOptions,
) -> Series {
    let n = load.len();
    let tick_ms = opts.tick.as_millis() as i64;
    let delay = opts.provision_delay;
    let retention = engine.lookback().max(opts.tick) + opts.tick * 2;
    let mut window = MetricWindow::new(retention);
    let mut ready = bounds.clamp(demand[0]);
    let mut booting: VecDeque<Timestamp> = VecDeque::new();
    let mut desired = ready;
    let mut last_scaling_at: Option<Timestamp> = None;
    let mut series = Series {
        supply: Vec::with_capacity(n),
        provisioned: Vec::with_capacity(n),
        ..Series::default()
    };
    for (i, &load_now) in load.iter().enumerate() {
        let now = Timestamp::from_millis(i as i64 * tick_ms);
        if i > 0 {
            while booting.front().is_some_and(|&at| at <= now) {
                booting.pop_front();
                ready += 1;
            }
            let state = GroupState {
                desired_capacity: desired,
                provisioned: ready + booting.len() as u32,
                ready,
                last_scaling_at,
            };
            let d = engine.decide(&state, &window, now);
            if d.desired_capacity != desired {
                series.actions += 1;
                last_scaling_at = Some(now);
                desired = d.desired_capacity;
                let provisioned = ready + booting.len() as u32;
                if desired > provisioned {
                    for _ in provisioned..desired {
                        booting.push_back(now.add(delay));
                    }
                } else {
                    let mut remove = provisioned - desired;
                    while remove > 0 && booting.pop_back().is_some() {
                        remove -= 1;
                    }
                    ready -= remove.min(ready);
                }
            }
        }
        series.supply.push(ready);
        series.provisioned.push(ready + booting.len() as u32);
        let served_by = f64::from(ready.max(1)) * capacity;
        window.push(MetricSample {
            at: now,
            metric: Metric::Cpu,
            value: load_now / served_by * 100.0,
            instances: ready,
        });
    }
    series
}

fn sign(x: i64) -> i64 {
    x.signum()
}

/// Scores a series with the SPEC RG elasticity metrics.
pub fn score(
    series: &Series,
    capacity: f64,
    tick: Duration,
    policy: &str,
    trace: &str,
) -> SimReport {
    let n = series.demand.len().max(1);
    let nf = n as f64;
    let tick_s = tick.as_secs_f64();
    let mut under = 0u64;
    let mut over = 0u64;
    let mut under_acc = 0.0;
    let mut over_acc = 0.0;
    let mut unserved = 0.0;
    let mut total = 0.0;
    let mut prov = 0.0;
    for i in 0..series.demand.len() {
        let d = series.demand[i];
        let s = series.supply[i];
        let dd = f64::from(d.max(1));
        if s < d {
            under += 1;
            under_acc += f64::from(d - s) / dd;
        } else if s > d {
            over += 1;
            over_acc += f64::from(s - d) / dd;
        }
        let l = series.load[i];
        total += l;
        unserved += (l - f64::from(s) * capacity).max(0.0);
        prov += f64::from(series.provisioned[i]);
    }
    let moves = series.demand.len().saturating_sub(1);
    let unstable = (1..series.demand.len())
        .filter(|&i| {
            let ds = sign(i64::from(series.supply[i]) - i64::from(series.supply[i - 1]));
            let dd = sign(i64::from(series.demand[i]) - i64::from(series.demand[i - 1]));
            ds != dd
        })
        .count();
    SimReport {
        policy: policy.to_string(),
        trace: trace.to_string(),
        duration_s: (series.demand.len() as f64 * tick_s).round() as u64,
        instance_hours: prov * tick_s / 3600.0,
        under_time_share: under as f64 / nf,
        over_time_share: over as f64 / nf,
        under_accuracy: under_acc / nf,
        over_accuracy: over_acc / nf,
        instability: if moves == 0 {
            0.0
        } else {
            unstable as f64 / moves as f64
        },
        unserved_fraction: if total > 0.0 { unserved / total } else { 0.0 },
        scaling_actions: series.actions,
    }
}

#[cfg(test)]
mod tests;
