//! Scaling policies and the engine that combines them.
//!
//! Each policy is a pure function of its spec, the group's state, the metric window and
//! the time, plus whatever memory it keeps in itself (a stabilisation window, a
//! forecast's history); the [`PolicyEngine`] combines them with DESIGN.md's rules:
//! scale-out takes the largest desired count, scale-in happens only when every policy
//! allows it, nothing happens within `cooldown` of the previous action, and the result is
//! always within `[min, max]`.

mod threshold;

pub use threshold::{StepAdjustment, ThresholdPolicy};

use crate::event::Cause;
use crate::group::{Capacity, ValidationError};
use crate::metrics::MetricWindow;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
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
}

/// A policy's configuration, as written in a group's `policies:` list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PolicySpec {
    /// Thresholds with an idle band between them (seeds 0, 1, 2).
    Threshold(ThresholdPolicy),
}

impl PolicySpec {
    /// Checks the policy's own rules.
    pub fn validate(&self) -> Result<(), ValidationError> {
        match self {
            PolicySpec::Threshold(p) => p.validate(),
        }
    }

    /// A fresh policy with empty memory.
    pub fn build(&self) -> Box<dyn Policy> {
        match self {
            PolicySpec::Threshold(p) => Box::new(p.clone()),
        }
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

        let clamped = self.capacity.clamp(before);
        if clamped != before {
            return decision(
                clamped,
                before,
                Cause {
                    policy: "bounds".into(),
                    before,
                    after: clamped,
                    reason: format!(
                        "desired capacity {before} is outside {}; clamped",
                        self.capacity
                    ),
                    ..Cause::default()
                },
            );
        }

        let out = recs
            .iter()
            .filter(|r| r.desired.is_some_and(|d| d > before))
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

        let target = self.capacity.clamp(rec.desired.unwrap_or(before));
        if target == before {
            return idle(
                before,
                Cause {
                    reason: format!(
                        "{}; already at the bound {}",
                        rec.cause.reason, self.capacity
                    ),
                    ..rec.cause.clone()
                },
            );
        }
        if let Some(last) = state.last_scaling_at {
            let until = last.add(self.cooldown);
            if now < until {
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
