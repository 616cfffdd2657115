//! Scaling policies and the engine that combines them.
//!
//! Each policy is a pure function of its spec, the group's state, the metric window and
//! the time, plus whatever memory it keeps in itself (a stabilisation window, a
//! forecast's history); the [`PolicyEngine`] combines them with DESIGN.md's rules:
//! scale-out takes the largest desired count, scale-in happens only when every policy
//! allows it, nothing happens within `cooldown` of the previous action (except a
//! scale-out after a scale-in, or one sized from the load), and the result is always
//! within `[min, max]`.

pub mod forecast;
mod hold_margin;
mod predictive;
mod proportional;
#[cfg(test)]
mod props;
mod schedule;
mod swell;
mod target;
mod threshold;

pub use predictive::{PredictivePolicy, PredictiveRunner};
pub use proportional::ProportionalPolicy;
pub use schedule::{SchedulePolicy, ScheduleRunner};
pub use swell::{SwellPolicy, SwellRunner};
pub use target::TargetPolicy;
pub use threshold::{StepAdjustment, ThresholdPolicy};

use crate::error::ValidationError;
use crate::event::Cause;
use crate::group::Capacity;
use crate::metrics::{LoadSummary, Metric, MetricWindow};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// What the group looks like when a policy decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupState {
    /// The desired capacity now (what the reconciler is converging to).
    pub desired_capacity: u32,
    /// Instances provisioned (pending or running), booting ones included.
    pub provisioned: u32,
    /// Instances running and out of warmup: those whose metrics count.
    pub ready: u32,
    /// When the desired capacity last changed by a scaling action.
    pub last_scaling_at: Option<Timestamp>,
}

/// One policy's opinion.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    /// The capacity it wants, or `None` when it has no opinion (no data, idle band).
    pub desired: Option<u32>,
    /// Why.
    pub cause: Cause,
}

/// A scaling policy: pure, deterministic, and free to keep memory between calls.
pub trait Policy: Send {
    /// The policy's name in events (`threshold`, `target`, …).
    fn name(&self) -> &'static str;

    /// The capacity this policy wants at `now`.
    fn evaluate(
        &mut self,
        state: &GroupState,
        window: &MetricWindow,
        now: Timestamp,
    ) -> Recommendation;

    /// How much metric history this policy reads (the window must keep at least this).
    fn lookback(&self) -> Duration;

    /// Bounds this policy imposes after its last evaluation (a schedule in its window);
    /// the engine holds the group within them, cooldown or not.
    fn capacity_override(&self) -> Option<CapacityOverride> {
        None
    }

    /// Whether the policy's recommendation takes part in the scale-out/scale-in vote
    /// (a schedule only sets bounds, so it does not block a scale-in by abstaining).
    fn votes(&self) -> bool {
        true
    }

    /// Whether the count it asks for is sized from the present load (`ceil(load /
    /// target)`, a forecast) rather than stepped from the current count. Such a count does
    /// not grow while the instances it asked for boot, so a second scale-out inside the
    /// cooldown adds only what the load newly needs and cannot overshoot; a step policy's
    /// would add its step again on a metric that does not yet show the new instances.
    fn sized_from_load(&self) -> bool {
        false
    }

    /// The reading above which this policy scales out, for the engine's flapping check
    /// before a scale-in; `None` for a policy without a fixed one (a forecast sizes from
    /// the load, so the count it asks for is already one it would not scale out from).
    fn scale_out_threshold(&self) -> Option<ScaleOutThreshold> {
        None
    }

    /// The metric whose long-term load this policy learns from (a forecasting policy's);
    /// the controller keeps that load's history for [`Policy::remember`].
    fn remembers(&self) -> Option<Metric> {
        None
    }

    /// Takes the group's load from before this policy was built (oldest first): a
    /// forecasting policy's seasonal memory survives restarts and edits of the group.
    fn remember(&mut self, _past: &[LoadSummary]) {}

    /// What the policy has learned that its load history does not give back (`swell`'s
    /// and `predictive`'s record of their forecast errors), for the controller to keep
    /// across restarts and edits; `None` when it learns nothing of the kind.
    fn learned(&self) -> Option<serde_json::Value> {
        None
    }

    /// Takes back what [`Policy::learned`] gave before a restart or an edit. A state
    /// learned on another basis (another metric, delay or horizon: its errors say nothing
    /// of this policy's) or unreadable is ignored; returns whether it was taken.
    fn relearn(&mut self, _learned: &serde_json::Value) -> bool {
        false
    }
}

/// What one policy of a group learned (see [`Policy::learned`]), as the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearnedState {
    /// Which policy: its name and its rank among the group's policies of that name
    /// (`swell#0`), so that adding a policy of another kind keeps the key.
    pub policy: String,
    /// The policy's own document.
    pub state: serde_json::Value,
}

/// Where a policy scales out: above `level` of `metric` averaged over `period`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleOutThreshold {
    /// The metric read.
    pub metric: Metric,
    /// The level above which the policy scales out.
    pub level: f64,
    /// The window it averages the metric over.
    pub period: Duration,
}

/// Bounds a schedule imposes while it is active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CapacityOverride {
    /// The floor.
    pub min: Option<u32>,
    /// The ceiling.
    pub max: Option<u32>,
    /// The count the group is raised to; dynamic policies may go above it (seed 2: the
    /// schedule's count is their floor).
    pub desired: Option<u32>,
}

impl fmt::Display for CapacityOverride {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = vec![];
        for (name, v) in [
            ("min", self.min),
            ("max", self.max),
            ("desired", self.desired),
        ] {
            if let Some(v) = v {
                parts.push(format!("{name} {v}"));
            }
        }
        f.write_str(&parts.join(", "))
    }
}

/// The policies a group gets when its spec names none: the `swell` policy with its
/// defaults.
pub fn default_policies() -> Vec<PolicySpec> {
    vec![PolicySpec::Swell(SwellPolicy::default())]
}

/// A policy's configuration, as written in a group's `policies:` list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PolicySpec {
    /// Thresholds with an idle band between them (seeds 0, 1, 2).
    Threshold(ThresholdPolicy),
    /// Seed 2's proportional step.
    Proportional(ProportionalPolicy),
    /// Target tracking with tolerance and scale-in stabilisation.
    Target(TargetPolicy),
    /// Cron + time zone + duration → min/max/desired override.
    Schedule(SchedulePolicy),
    /// Forecast (trend, daily and weekly seasonality) and scale ahead.
    Predictive(PredictivePolicy),
    /// The product's default: predictive target tracking with learned headroom.
    Swell(SwellPolicy),
}

impl PolicySpec {
    /// Checks the policy's own rules.
    pub fn validate(&self) -> Result<(), ValidationError> {
        match self {
            PolicySpec::Threshold(p) => p.validate(),
            PolicySpec::Proportional(p) => p.validate(),
            PolicySpec::Target(p) => p.validate(),
            PolicySpec::Schedule(p) => p.validate(),
            PolicySpec::Predictive(p) => p.validate(),
            PolicySpec::Swell(p) => p.validate(),
        }
    }

    /// A fresh policy with empty memory. An invalid spec (which [`PolicySpec::validate`]
    /// would have rejected) builds a policy that never recommends anything.
    pub fn build(&self) -> Box<dyn Policy> {
        match self {
            PolicySpec::Threshold(p) => Box::new(p.clone()),
            PolicySpec::Proportional(p) => Box::new(p.clone()),
            PolicySpec::Target(p) => Box::new(p.clone()),
            PolicySpec::Schedule(p) => match p.runner() {
                Ok(r) => Box::new(r),
                Err(e) => Box::new(Inert(e)),
            },
            PolicySpec::Predictive(p) => Box::new(p.runner()),
            PolicySpec::Swell(p) => Box::new(p.runner()),
        }
    }
}

/// Stands in for a policy whose spec is invalid: no opinion, no vote.
struct Inert(ValidationError);

impl Policy for Inert {
    fn name(&self) -> &'static str {
        "invalid"
    }

    fn evaluate(&mut self, state: &GroupState, _: &MetricWindow, _: Timestamp) -> Recommendation {
        Recommendation {
            desired: None,
            cause: Cause {
                policy: "invalid".into(),
                before: state.desired_capacity,
                after: state.desired_capacity,
                reason: format!("invalid policy ignored: {}", self.0),
                ..Cause::default()
            },
        }
    }

    fn lookback(&self) -> Duration {
        Duration::ZERO
    }

    fn votes(&self) -> bool {
        false
    }
}

/// Which way a decision goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionKind {
    /// Raise the desired capacity.
    ScaleOut,
    /// Lower the desired capacity.
    ScaleIn,
    /// Keep it.
    Idle,
}

/// The engine's verdict for one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The desired capacity to converge to (unchanged when idle).
    pub desired_capacity: u32,
    /// Out, in or idle.
    pub kind: DecisionKind,
    /// Why, with the numbers.
    pub cause: Cause,
}

/// A group's policies combined under its capacity and cooldown.
pub struct PolicyEngine {
    policies: Vec<Box<dyn Policy>>,
    capacity: Capacity,
    cooldown: Duration,
    /// When this engine last scaled in: a scale-in's cooldown does not hold back a
    /// scale-out. Kept in memory only; after a restart (or a manual change of the desired
    /// capacity) the cooldown blocks both ways, which errs on the side of stability.
    last_scale_in_at: Option<Timestamp>,
}

impl PolicyEngine {
    /// An engine for `specs` within `capacity`, waiting `cooldown` after each action.
    pub fn new(specs: &[PolicySpec], capacity: Capacity, cooldown: Duration) -> Self {
        Self::with_policies(
            specs.iter().map(PolicySpec::build).collect(),
            capacity,
            cooldown,
        )
    }

    /// An engine over already-built policies (custom policies, tests).
    pub fn with_policies(
        policies: Vec<Box<dyn Policy>>,
        capacity: Capacity,
        cooldown: Duration,
    ) -> Self {
        PolicyEngine {
            policies,
            capacity,
            cooldown,
            last_scale_in_at: None,
        }
    }

    /// How much metric history the policies need.
    pub fn lookback(&self) -> Duration {
        self.policies
            .iter()
            .map(|p| p.lookback())
            .max()
            .unwrap_or(Duration::ZERO)
    }

    /// The metrics whose history some policy learns from (see [`Policy::remembers`]).
    pub fn remembered_metrics(&self) -> Vec<Metric> {
        let mut metrics = Vec::new();
        for m in self.policies.iter().filter_map(|p| p.remembers()) {
            if !metrics.contains(&m) {
                metrics.push(m);
            }
        }
        metrics
    }

    /// Hands the group's past load to every policy (see [`Policy::remember`]).
    pub fn remember(&mut self, past: &[LoadSummary]) {
        for p in &mut self.policies {
            p.remember(past);
        }
    }

    /// What the policies have learned (see [`Policy::learned`]).
    pub fn learned(&self) -> Vec<LearnedState> {
        self.keyed()
            .filter_map(|(policy, p)| {
                let state = p.learned()?;
                Some(LearnedState { policy, state })
            })
            .collect()
    }

    /// Hands each policy what the policy of its key learned before (see
    /// [`Policy::relearn`]); returns the keys of the states taken.
    pub fn relearn(&mut self, states: &[LearnedState]) -> Vec<String> {
        let keys: Vec<String> = self.keyed().map(|(k, _)| k).collect();
        let mut taken = Vec::new();
        for (key, p) in keys.into_iter().zip(&mut self.policies) {
            if let Some(s) = states.iter().find(|s| s.policy == key)
                && p.relearn(&s.state)
            {
                taken.push(key);
            }
        }
        taken
    }

    /// The policies with their keys: name and rank among the policies of that name.
    fn keyed(&self) -> impl Iterator<Item = (String, &dyn Policy)> {
        self.policies.iter().enumerate().map(|(i, p)| {
            let rank = self.policies[..i]
                .iter()
                .filter(|q| q.name() == p.name())
                .count();
            (format!("{}#{rank}", p.name()), p.as_ref())
        })
    }

    /// Decides the desired capacity at `now`.
    pub fn decide(
        &mut self,
        state: &GroupState,
        window: &MetricWindow,
        now: Timestamp,
    ) -> Decision {
        let before = state.desired_capacity;
        // Every policy sees every evaluation, even in cooldown, so that stateful ones keep
        // their memory current.
        let recs: Vec<Recommendation> = self
            .policies
            .iter_mut()
            .map(|p| p.evaluate(state, window, now))
            .collect();

        // Schedules in their window narrow the bounds; their floor holds over cooldowns.
        let overrides: Vec<CapacityOverride> = self
            .policies
            .iter()
            .filter_map(|p| p.capacity_override())
            .collect();
        let bounds = effective_bounds(self.capacity, &overrides);
        let clamped = bounds.clamp(before);
        if clamped != before {
            let (policy, why) = if self.capacity.clamp(before) == before {
                (
                    "schedule",
                    format!("a schedule holds the group within {bounds}"),
                )
            } else {
                (
                    "bounds",
                    format!(
                        "desired capacity {before} is outside {}; clamped",
                        self.capacity
                    ),
                )
            };
            return decision(
                clamped,
                before,
                Cause {
                    policy: policy.into(),
                    before,
                    after: clamped,
                    reason: why,
                    ..Cause::default()
                },
            );
        }
        let thresholds: Vec<ScaleOutThreshold> = self
            .policies
            .iter()
            .filter(|p| p.votes())
            .filter_map(|p| p.scale_out_threshold())
            .collect();
        let (recs, sized): (Vec<Recommendation>, Vec<bool>) = self
            .policies
            .iter()
            .zip(recs)
            .filter(|(p, _)| p.votes())
            .map(|(p, r)| (r, p.sized_from_load()))
            .unzip();
        let grows = |r: &&Recommendation| r.desired.is_some_and(|d| d > before);
        let out = recs.iter().filter(grows).max_by_key(|r| r.desired);
        // The largest scale-out a load-sized policy asks for: the one a cooldown lets
        // through (see below).
        let sized_out = recs
            .iter()
            .zip(&sized)
            .filter(|&(_, &s)| s)
            .map(|(r, _)| r)
            .filter(grows)
            .max_by_key(|r| r.desired);
        let all_in = !recs.is_empty() && recs.iter().all(|r| r.desired.is_some_and(|d| d < before));
        let chosen = match (out, all_in) {
            (Some(r), _) => Some(r),
            // The smallest removal any policy asks for: scale-in only as far as all allow.
            (None, true) => recs.iter().max_by_key(|r| r.desired),
            (None, false) => None,
        };
        let Some(rec) = chosen else {
            let reason = recs
                .iter()
                .map(|r| r.cause.reason.clone())
                .collect::<Vec<_>>()
                .join("; ");
            let first = recs.first().map(|r| r.cause.clone()).unwrap_or_default();
            return idle(before, Cause { reason, ..first });
        };

        let mut rec = rec;
        let mut target = bounds.clamp(rec.desired.unwrap_or(before));
        if target == before {
            return idle(
                before,
                Cause {
                    reason: format!("{}; already at the bound {bounds}", rec.cause.reason),
                    ..rec.cause.clone()
                },
            );
        }
        // The cooldown lets a scale-out's new instances take effect before a step policy
        // acts again, and keeps scale-ins apart. Two scale-outs go through it (running
        // short is worse than running over): right after a scale-in, as AWS does, since
        // the policies' own scale-in holds already keep a group from flapping; and as far
        // as a load-sized policy asks, since its count does not grow while instances boot.
        let until = state
            .last_scaling_at
            .map(|last| last.add(self.cooldown))
            .filter(|&until| now < until);
        if let Some(until) = until {
            let after_scale_in = state.last_scaling_at == self.last_scale_in_at;
            match sized_out {
                _ if target > before && after_scale_in => {}
                Some(r) if target > before => {
                    rec = r;
                    target = bounds.clamp(r.desired.unwrap_or(before));
                }
                _ => {
                    return idle(
                        before,
                        Cause {
                            policy: "cooldown".into(),
                            reason: format!(
                                "{} wants {before} → {target}, but the cooldown runs {}s more",
                                rec.cause.policy,
                                until.since(now).as_secs_f64().ceil()
                            ),
                            ..rec.cause.clone()
                        },
                    );
                }
            }
        }
        if target < before {
            // Azure's flapping estimate: no scale-in so deep that the same load on fewer
            // instances crosses a policy's scale-out threshold.
            let floor = no_flapping_floor(&thresholds, state, window, now);
            if floor >= before {
                return idle(
                    before,
                    Cause {
                        reason: format!(
                            "{}; but on fewer than {before} instances the load would cross a scale-out threshold (flapping)",
                            rec.cause.reason
                        ),
                        ..rec.cause.clone()
                    },
                );
            }
            self.last_scale_in_at = Some(now);
            if floor > target {
                return decision(
                    floor,
                    before,
                    Cause {
                        before,
                        after: floor,
                        reason: format!(
                            "{}; only to {floor}: fewer instances would cross a scale-out threshold (flapping)",
                            rec.cause.reason
                        ),
                        ..rec.cause.clone()
                    },
                );
            }
        }
        decision(
            target,
            before,
            Cause {
                before,
                after: target,
                ..rec.cause.clone()
            },
        )
    }
}

/// The fewest instances the group may scale in to without flapping (Azure autoscale's
/// estimate): for every scale-out threshold on a metric that is the group's load shared
/// among its ready instances (`cpu`, `request_rate_per_instance`), the reading projected
/// onto the instances left after the scale-in (booting ones go first) must not exceed the
/// threshold. 0 when no threshold applies.
fn no_flapping_floor(
    thresholds: &[ScaleOutThreshold],
    state: &GroupState,
    window: &MetricWindow,
    now: Timestamp,
) -> u32 {
    let mut floor = 0u32;
    for t in thresholds {
        if !matches!(t.metric, Metric::Cpu | Metric::RequestRatePerInstance) || t.level <= 0.0 {
            continue;
        }
        let (Some(avg), Some(latest)) = (
            window.average(t.metric, now, t.period),
            window.latest(t.metric, now),
        ) else {
            continue;
        };
        // The load is the reading times the instances it was measured over; scaling in to
        // `c` leaves min(ready, c) of today's ready ones to carry it.
        let load = avg * f64::from(latest.instances);
        let ready_needed = (load / t.level - 1e-9).ceil().max(0.0) as u32;
        floor = floor.max(ready_needed.min(state.ready));
    }
    floor
}

/// The group's bounds narrowed by the active schedules: the largest floor (`min` or
/// `desired`) and the smallest ceiling, within the group's own bounds; a floor above a
/// ceiling wins (running short is worse than running over).
fn effective_bounds(capacity: Capacity, overrides: &[CapacityOverride]) -> Capacity {
    let mut lo = capacity.min();
    let mut hi = capacity.max();
    for o in overrides {
        for floor in [o.min, o.desired].into_iter().flatten() {
            lo = lo.max(floor);
        }
        if let Some(m) = o.max {
            hi = hi.min(m);
        }
    }
    let lo = capacity.clamp(lo);
    let hi = capacity.clamp(hi).max(lo);
    Capacity::new(lo, hi).unwrap_or(capacity)
}

fn decision(desired: u32, before: u32, cause: Cause) -> Decision {
    let kind = match desired.cmp(&before) {
        std::cmp::Ordering::Greater => DecisionKind::ScaleOut,
        std::cmp::Ordering::Less => DecisionKind::ScaleIn,
        std::cmp::Ordering::Equal => DecisionKind::Idle,
    };
    Decision {
        desired_capacity: desired,
        kind,
        cause,
    }
}

fn idle(before: u32, cause: Cause) -> Decision {
    Decision {
        desired_capacity: before,
        kind: DecisionKind::Idle,
        cause: Cause {
            before,
            after: before,
            ..cause
        },
    }
}

#[cfg(test)]
pub(crate) mod testkit {
    //! Shared helpers for the policies' unit tests.
    use super::GroupState;
    use crate::metrics::{Metric, MetricSample, MetricWindow};
    use crate::time::Timestamp;
    use std::time::Duration;

    /// A settled group of `n` instances.
    pub fn state(n: u32) -> GroupState {
        GroupState {
            desired_capacity: n,
            provisioned: n,
            ready: n,
            last_scaling_at: None,
        }
    }

    /// A window with `(seconds, cpu %)` samples.
    pub fn window(points: &[(i64, f64)]) -> MetricWindow {
        let mut w = MetricWindow::new(Duration::from_secs(3600));
        for &(t, v) in points {
            w.push(MetricSample {
                at: Timestamp::from_secs(t),
                metric: Metric::Cpu,
                value: v,
                instances: 1,
            });
        }
        w
    }
}
