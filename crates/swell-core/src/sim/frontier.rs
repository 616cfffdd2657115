//! The causal frontier: how cheap a simple causal rule, tuned per trace *with hindsight*,
//! can be at `hpa`'s under-provisioned time + 0.1 pp — the yardstick `swell bench
//! frontier` holds `swell` to (docs/policies.md, "The causal frontier").
//!
//! The rule family: every tick, ask for `ceil(L + m·√L)` instances (at least `min`), `L`
//! the mean load in instances of the last `window` ticks seen (metrics arrive one tick
//! late, as in the simulator); scale out to it at once; scale in to the largest count
//! asked for over the last `hold` ticks; instances are ready `provision_delay` after they
//! are asked for, removals are immediate (booting ones first). For every `window` and
//! `hold` of the family the smallest margin `m` meeting the allowance is searched (0.1
//! steps, then 0.01), and the cheapest result is the frontier. No online policy knows `m`
//! in advance, so the frontier is a bound to approach, not a policy.

use super::{SimError, SimOptions, SimPolicy, SimReport, Trace, capacity_of, simulate};
use crate::group::Capacity;
use serde::Serialize;
use std::collections::VecDeque;

/// How many ticks of level the family averages over.
const WINDOWS: [usize; 3] = [1, 2, 4];
/// How many ticks the family holds a count before scaling in.
const HOLDS: [usize; 4] = [1, 4, 8, 20];
/// The under-provisioned time the frontier may spend beyond `hpa`'s (0.1 pp).
pub const ALLOWANCE: f64 = 0.001;

/// One member of the rule family.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FrontierRule {
    /// Ticks of level averaged.
    pub window: usize,
    /// Ticks a count is held before a scale-in.
    pub hold: usize,
    /// The margin `m` in `ceil(L + m·√L)`.
    pub margin: f64,
    /// Its instance-hours.
    pub instance_hours: f64,
    /// Its share of time with fewer ready instances than the demand.
    pub under_time_share: f64,
}

/// One trace's frontier, with the policies it is compared to (simulated on the same
/// trace with the same options).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrontierReport {
    /// The trace's name.
    pub trace: String,
    /// The cheapest rule of the family within the allowance (`None` if no margin up to
    /// 10 meets it).
    pub frontier: Option<FrontierRule>,
    /// `swell`, the product's default.
    pub swell: SimReport,
    /// Kubernetes' HPA.
    pub hpa: SimReport,
    /// AWS target tracking.
    pub aws_target: SimReport,
    /// Perfect foresight.
    pub oracle: SimReport,
}

impl FrontierReport {
    /// `swell`'s instance-hours over the frontier's.
    pub fn swell_over_frontier(&self) -> Option<f64> {
        self.frontier
            .filter(|f| f.instance_hours > 0.0)
            .map(|f| self.swell.instance_hours / f.instance_hours)
    }
}

/// Computes `trace`'s frontier and the policies it is compared to.
pub fn causal_frontier(
    trace: &Trace,
    name: &str,
    opts: &SimOptions,
) -> Result<FrontierReport, SimError> {
    let run = |p: SimPolicy| simulate(trace, name, &p, opts);
    let hpa = run(SimPolicy::Hpa)?;
    let bounds = super::check(opts)?;
    let capacity = capacity_of(trace, opts);
    let load: Vec<f64> = trace
        .sample(opts.tick)
        .iter()
        .map(|l| l / capacity)
        .collect();
    let demand: Vec<u32> = load.iter().map(|&l| super::demand(l, 1.0)).collect();
    let tick_s = opts.tick.as_secs_f64();
    let delay = (opts.provision_delay.as_secs_f64() / tick_s).round() as usize;
    let rules = Rules {
        load: &load,
        demand: &demand,
        bounds,
        delay,
        tick_hours: tick_s / 3600.0,
        allowed: hpa.under_time_share + ALLOWANCE,
    };
    let frontier = WINDOWS
        .iter()
        .flat_map(|&w| HOLDS.iter().map(move |&h| (w, h)))
        .filter_map(|(w, h)| rules.cheapest(w, h))
        .min_by(|a, b| a.instance_hours.total_cmp(&b.instance_hours));
    Ok(FrontierReport {
        trace: name.to_string(),
        frontier,
        swell: run(SimPolicy::Swell)?,
        aws_target: run(SimPolicy::AwsTarget)?,
        oracle: run(SimPolicy::Oracle)?,
        hpa,
    })
}

struct Rules<'a> {
    load: &'a [f64],
    demand: &'a [u32],
    bounds: Capacity,
    delay: usize,
    tick_hours: f64,
    allowed: f64,
}

impl Rules<'_> {
    /// The smallest margin (to 0.01) meeting the allowance with this window and hold.
    fn cheapest(&self, window: usize, hold: usize) -> Option<FrontierRule> {
        let level = trailing_mean(self.load, window);
        let coarse = (0..=100).find_map(|i| {
            let m = f64::from(i) * 0.1;
            self.run(&level, hold, m).map(|r| (m, r))
        })?;
        let (m0, mut best) = coarse;
        let mut margin = m0;
        for j in (1..10).rev() {
            let m = m0 - f64::from(j) * 0.01;
            if m < 0.0 {
                continue;
            }
            if let Some(r) = self.run(&level, hold, m) {
                margin = m;
                best = r;
                break;
            }
        }
        Some(FrontierRule {
            window,
            hold,
            margin,
            instance_hours: best.0,
            under_time_share: best.1,
        })
    }

    /// Runs the rule; `(instance-hours, under-provisioned share)` if within the allowance.
    fn run(&self, level: &[f64], hold: usize, m: f64) -> Option<(f64, f64)> {
        let ask = |l: f64| {
            let x = (l + m * l.max(1.0).sqrt() - 1e-9).ceil().max(0.0) as u32;
            self.bounds.clamp(x)
        };
        let n = self.demand.len();
        let mut ready = self.bounds.clamp(self.demand[0]);
        let mut booting: VecDeque<usize> = VecDeque::new();
        let mut asked: VecDeque<(usize, u32)> = VecDeque::new();
        let mut desired = ready;
        let (mut under, mut cost) = (0usize, 0.0);
        let budget = (self.allowed * n as f64).floor() as usize;
        for (i, (&level, &need)) in level.iter().zip(self.demand).enumerate() {
            if i > 0 {
                while booting.front().is_some_and(|&r| r <= i) {
                    booting.pop_front();
                    ready += 1;
                }
                let raw = ask(level);
                asked.push_back((i, raw));
                while asked.front().is_some_and(|&(j, _)| j + hold <= i) {
                    asked.pop_front();
                }
                let held = asked.iter().map(|a| a.1).max().unwrap_or(raw);
                let want = if raw > desired {
                    raw
                } else {
                    held.min(desired)
                };
                if want != desired {
                    let provisioned = ready + booting.len() as u32;
                    if want > provisioned {
                        booting.extend(std::iter::repeat_n(
                            i + self.delay,
                            (want - provisioned) as usize,
                        ));
                    } else {
                        let mut remove = provisioned - want;
                        while remove > 0 && booting.pop_back().is_some() {
                            remove -= 1;
                        }
                        ready -= remove.min(ready);
                    }
                    desired = want;
                }
            }
            if ready < need {
                under += 1;
                if under > budget {
                    return None;
                }
            }
            cost += f64::from(ready + booting.len() as u32);
        }
        Some((cost * self.tick_hours, under as f64 / n as f64))
    }
}

/// The level seen at each tick: the mean of the `w` ticks before it (tick 0 sees itself).
fn trailing_mean(x: &[f64], w: usize) -> Vec<f64> {
    (0..x.len())
        .map(|i| {
            let b = i.saturating_sub(1);
            let a = (b + 1).saturating_sub(w);
            x[a..=b].iter().sum::<f64>() / (b - a + 1) as f64
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn trailing_mean_sees_only_earlier_ticks() {
        let x = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(trailing_mean(&x, 1), vec![1.0, 1.0, 2.0, 3.0]);
        assert_eq!(trailing_mean(&x, 2), vec![1.0, 1.0, 1.5, 2.5]);
    }

    /// On a flat load the rule needs no margin and no hold: it costs what the oracle does
    /// and is never short.
    #[test]
    fn a_flat_load_costs_the_oracle() {
        let trace =
            Trace::from_points((0..120).map(|i| (i as f64 * 60.0, 500.0)).collect()).unwrap();
        let opts = SimOptions {
            capacity: Some(10.0),
            ..SimOptions::default()
        };
        let r = causal_frontier(&trace, "flat", &opts).unwrap();
        let f = r.frontier.unwrap();
        assert_eq!((f.margin, f.under_time_share), (0.0, 0.0));
        assert!((f.instance_hours - r.oracle.instance_hours).abs() < 1e-9);
    }

    /// Noisy plateaus and steps: the frontier stays within `hpa`'s under-provisioned time
    /// plus 0.1 pp, above the oracle's cost and below `hpa`'s (whose 30 % headroom is
    /// more than the noise needs).
    #[test]
    fn the_frontier_keeps_within_hpas_under_provisioning() {
        let trace = Trace::from_points(
            (0..600)
                .map(|i| {
                    let noisy = if i % 7 == 0 { 620.0 } else { 480.0 };
                    (i as f64 * 60.0, if i % 120 < 60 { noisy } else { 300.0 })
                })
                .collect(),
        )
        .unwrap();
        let opts = SimOptions {
            capacity: Some(10.0),
            provision_delay: Duration::from_secs(120),
            ..SimOptions::default()
        };
        let r = causal_frontier(&trace, "steps", &opts).unwrap();
        let f = r.frontier.unwrap();
        assert!(f.under_time_share <= r.hpa.under_time_share + ALLOWANCE);
        assert!(f.instance_hours >= r.oracle.instance_hours);
        assert!(
            f.instance_hours <= r.hpa.instance_hours,
            "{f:?} against hpa {}",
            r.hpa.instance_hours
        );
    }
}
