//! `target` tracking: keep the metric near `target` with `desired = ceil(N * avg / target)`
//! (N = instances whose metrics count), idle within a tolerance band, scale out at once
//! on a short window, and scale in only to the largest recommendation of a stabilisation
//! window (so a dip shorter than the window changes nothing).

use super::{GroupState, Policy, Recommendation};
use crate::duration::serde_human;
use crate::error::ValidationError;
use crate::event::Cause;
use crate::metrics::{Metric, MetricWindow};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::Duration;

/// The target-tracking policy's configuration (its memory is not part of it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetPolicy {
    /// The metric to track (`cpu` by default).
    #[serde(default)]
    pub metric: Metric,
    /// The value to keep the metric at (percent for `cpu`).
    pub target: f64,
    /// No change while `|avg / target - 1| <= tolerance`.
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
    /// The (short) window a scale-out reads: reacting fast is cheap to undo.
    #[serde(with = "serde_human", default = "default_out_period")]
    pub scale_out_period: Duration,
    /// The window a scale-in recommendation reads.
    #[serde(with = "serde_human", default = "default_in_period")]
    pub scale_in_period: Duration,
    /// Scale in only to the largest recommendation of this long a window.
    #[serde(with = "serde_human", default = "default_stabilization")]
    pub scale_in_stabilization: Duration,
    /// At most this many instances added or removed per evaluation (unlimited if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_step: Option<u32>,
    /// At most this percentage of the current count added or removed per evaluation (at
    /// least one instance); with `max_step` too, the larger allowance wins (the HPA's
    /// default `selectPolicy: Max`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_step_percent: Option<f64>,
    #[serde(skip)]
    history: VecDeque<(Timestamp, u32)>,
}

fn default_tolerance() -> f64 {
    0.1
}
fn default_out_period() -> Duration {
    Duration::from_secs(30)
}
fn default_in_period() -> Duration {
    Duration::from_secs(60)
}
fn default_stabilization() -> Duration {
    Duration::from_secs(300)
}

/// `ceil(n * avg / target)`, forgiving floating-point noise just above an integer.
pub(crate) fn target_count(n: u32, avg: f64, target: f64) -> u32 {
    let x = f64::from(n) * avg / target;
    (x - 1e-9).ceil().clamp(0.0, f64::from(u32::MAX)) as u32
}

impl TargetPolicy {
    /// A policy with the documented defaults around `target`.
    pub fn new(target: f64) -> Self {
        TargetPolicy {
            metric: Metric::Cpu,
            target,
            tolerance: default_tolerance(),
            scale_out_period: default_out_period(),
            scale_in_period: default_in_period(),
            scale_in_stabilization: default_stabilization(),
            max_step: None,
            max_step_percent: None,
            history: VecDeque::new(),
        }
    }

    /// Checks the policy's rules.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if !self.target.is_finite() || self.target <= 0.0 {
            return Err(ValidationError::new(
                "target",
                format!("target ({}) must be a number > 0", self.target),
            ));
        }
        if !self.tolerance.is_finite() || !(0.0..1.0).contains(&self.tolerance) {
            return Err(ValidationError::new(
                "tolerance",
                format!("tolerance ({}) must be within [0, 1)", self.tolerance),
            ));
        }
        for (field, d) in [
            ("scale_out_period", self.scale_out_period),
            ("scale_in_period", self.scale_in_period),
        ] {
            if d.is_zero() {
                return Err(ValidationError::new(field, "must be > 0"));
            }
        }
        if self.max_step == Some(0) {
            return Err(ValidationError::new("max_step", "max_step must be >= 1"));
        }
        if let Some(p) = self.max_step_percent
            && !(p.is_finite() && p > 0.0)
        {
            return Err(ValidationError::new(
                "max_step_percent",
                format!("max_step_percent ({p}) must be a number > 0"),
            ));
        }
        Ok(())
    }

    /// The counts one evaluation may move `base` to: `(lowest, highest)`. Each limit set
    /// allows a change; the larger allowance wins, as with the HPA's `selectPolicy: Max`
    /// (Kubernetes: `ceil(base × (1 ± percent / 100))`).
    fn step_limits(&self, base: u32) -> (u32, u32) {
        if self.max_step.is_none() && self.max_step_percent.is_none() {
            return (0, u32::MAX);
        }
        let (mut low, mut high) = (base, base);
        if let Some(step) = self.max_step {
            low = low.min(base.saturating_sub(step));
            high = high.max(base.saturating_add(step));
        }
        if let Some(p) = self.max_step_percent {
            let b = f64::from(base);
            let up = (b * (1.0 + p / 100.0) - 1e-9)
                .ceil()
                .min(f64::from(u32::MAX)) as u32;
            let down = (b * (1.0 - p / 100.0) - 1e-9).ceil().max(0.0) as u32;
            high = high.max(up.max(base.saturating_add(1)));
            low = low.min(down.min(base.saturating_sub(1)));
        }
        (low, high)
    }
}

impl Policy for TargetPolicy {
    fn name(&self) -> &'static str {
        "target"
    }

    fn sized_from_load(&self) -> bool {
        true
    }

    fn lookback(&self) -> Duration {
        self.scale_out_period.max(self.scale_in_period)
    }

    fn scale_out_threshold(&self) -> Option<super::ScaleOutThreshold> {
        Some(super::ScaleOutThreshold {
            metric: self.metric,
            level: self.target * (1.0 + self.tolerance),
            period: self.scale_out_period,
        })
    }

    fn evaluate(
        &mut self,
        state: &GroupState,
        window: &MetricWindow,
        now: Timestamp,
    ) -> Recommendation {
        let base = state.desired_capacity;
        let n = state.ready;
        let cause = |value, reason: String| Cause {
            policy: "target".into(),
            metric: Some(self.metric.as_str().into()),
            value,
            threshold: Some(self.target),
            before: base,
            after: base,
            reason,
        };
        let out_avg = window.average(self.metric, now, self.scale_out_period);
        let in_avg = window.average(self.metric, now, self.scale_in_period);
        let (Some(out_avg), Some(in_avg)) = (out_avg, in_avg) else {
            return Recommendation {
                desired: None,
                cause: cause(None, format!("no recent {} samples", self.metric)),
            };
        };
        if n == 0 {
            return Recommendation {
                desired: None,
                cause: cause(Some(out_avg), "no instance is ready to measure".into()),
            };
        }
        let (lowest, highest) = self.step_limits(base);

        // The scale-in recommendation is remembered for the stabilisation window.
        let in_rec = if in_avg / self.target < 1.0 - self.tolerance {
            target_count(n, in_avg, self.target)
        } else {
            base
        };
        self.history.push_back((now, in_rec));
        let from = now.sub(self.scale_in_stabilization);
        while self.history.front().is_some_and(|&(t, _)| t <= from) {
            self.history.pop_front();
        }

        if out_avg / self.target > 1.0 + self.tolerance {
            let want = target_count(n, out_avg, self.target);
            if want > base {
                let desired = want.min(highest);
                return Recommendation {
                    desired: Some(desired),
                    cause: cause(
                        Some(out_avg),
                        format!(
                            "{} {out_avg:.1} > {} on {n} instances: ceil({n} × {out_avg:.1} / {}) = {want}",
                            self.metric, self.target, self.target
                        ),
                    ),
                };
            }
        }
        let stable = self.history.iter().map(|&(_, r)| r).max().unwrap_or(base);
        if stable < base {
            let desired = stable.max(lowest);
            return Recommendation {
                desired: Some(desired),
                cause: cause(
                    Some(in_avg),
                    format!(
                        "{} {in_avg:.1} < {} for {}: the largest recommendation is {stable}",
                        self.metric,
                        self.target,
                        crate::duration::format(self.scale_in_stabilization)
                    ),
                ),
            };
        }
        Recommendation {
            desired: None,
            cause: cause(
                Some(out_avg),
                format!(
                    "{} {out_avg:.1} near {} (tolerance {})",
                    self.metric, self.target, self.tolerance
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testkit::{state, window};

    #[test]
    fn scales_out_at_once_to_the_target_count() {
        let mut p = TargetPolicy::new(60.0);
        // 9 ready at 80 % against 60 %: ceil(9 × 80 / 60) = 12.
        let r = p.evaluate(
            &state(9),
            &window(&[(90, 80.0), (100, 80.0)]),
            Timestamp::from_secs(100),
        );
        assert_eq!(r.desired, Some(12));
    }

    /// A count sized from the load goes through a scale-out's cooldown: while the first
    /// scale-out's instances boot the same load asks for the same count (no overshoot),
    /// and a load that rose further gets its instances at once.
    #[test]
    fn load_sized_scale_out_goes_through_the_cooldown() {
        use crate::group::Capacity;
        use crate::policy::{DecisionKind, PolicyEngine, PolicySpec};
        let spec: PolicySpec =
            serde_json::from_value(serde_json::json!({"type": "target", "target": 60})).unwrap();
        let cap = Capacity::new(1, 50).unwrap();
        let mut e = PolicyEngine::new(&[spec], cap, Duration::from_secs(120));
        let now = Timestamp::from_secs(100);
        let d = e.decide(&state(9), &window(&[(90, 80.0), (100, 80.0)]), now);
        assert_eq!((d.kind, d.desired_capacity), (DecisionKind::ScaleOut, 12));
        // 10 s later, 3 still booting: 9 ready, desired 12, inside the cooldown.
        let booting = GroupState {
            desired_capacity: 12,
            provisioned: 12,
            ready: 9,
            last_scaling_at: Some(now),
        };
        let later = Timestamp::from_secs(110);
        let d = e.decide(&booting, &window(&[(110, 80.0)]), later);
        assert_eq!((d.kind, d.desired_capacity), (DecisionKind::Idle, 12));
        let d = e.decide(&booting, &window(&[(110, 120.0)]), later);
        assert_eq!((d.kind, d.desired_capacity), (DecisionKind::ScaleOut, 18));

        // Beside a step policy that asks for more, the cooldown lets through only what
        // the load-sized one asks: threshold 12 + 5 = 17, target ceil(9 × 90 / 60) = 14.
        let both: Vec<PolicySpec> = [
            serde_json::json!({"type": "threshold", "scale_out_above": 60, "step": 5}),
            serde_json::json!({"type": "target", "target": 60}),
        ]
        .into_iter()
        .map(|j| serde_json::from_value(j).unwrap())
        .collect();
        let mut e = PolicyEngine::new(&both, cap, Duration::from_secs(120));
        let d = e.decide(&booting, &window(&[(110, 90.0)]), later);
        assert_eq!((d.kind, d.desired_capacity), (DecisionKind::ScaleOut, 14));
        assert_eq!(d.cause.policy, "target");
        let d = e.decide(&booting, &window(&[(180, 90.0)]), Timestamp::from_secs(230));
        assert_eq!((d.kind, d.desired_capacity), (DecisionKind::ScaleOut, 17));
    }

    #[test]
    fn tolerance_band_is_idle() {
        let mut p = TargetPolicy::new(60.0);
        let now = Timestamp::from_secs(100);
        // 65 / 60 = 1.083: inside the 10 % band.
        assert_eq!(
            p.evaluate(&state(9), &window(&[(100, 65.0)]), now).desired,
            None
        );
        // 55 / 60 = 0.917: inside too.
        assert_eq!(
            p.evaluate(&state(9), &window(&[(100, 55.0)]), now).desired,
            None
        );
    }

    #[test]
    fn scale_in_waits_for_the_stabilisation_window() {
        let mut p = TargetPolicy::new(50.0);
        p.scale_in_stabilization = Duration::from_secs(60);
        // At t = 0..60 the load is at the target: the recommendation is the current 10.
        let mut points = vec![];
        for t in (0..=60).step_by(10) {
            points.push((t, 50.0));
        }
        // Then it halves: ceil(10 × 25 / 50) = 5.
        for t in (70..=200).step_by(10) {
            points.push((t, 25.0));
        }
        let w = window(&points);
        let mut first_in = None;
        for t in (0..=200).step_by(10) {
            let r = p.evaluate(&state(10), &w, Timestamp::from_secs(t));
            if r.desired.is_some() && first_in.is_none() {
                first_in = Some((t, r.desired));
            }
        }
        // t = 70: mean of 20..70 is 45.8 (inside the tolerance) → 10; t = 80: 41.7 →
        // ceil(8.3) = 9; later ones are lower. The stabilisation window keeps the largest
        // recommendation of (t - 60, t]: 10 until t = 130, when the t = 70 one drops out.
        assert_eq!(first_in, Some((130, Some(9))));
    }

    #[test]
    fn max_step_limits_each_move() {
        let mut p = TargetPolicy::new(50.0);
        p.max_step = Some(2);
        let r = p.evaluate(
            &state(4),
            &window(&[(100, 100.0)]),
            Timestamp::from_secs(100),
        );
        assert_eq!(r.desired, Some(6));
    }

    /// Kubernetes' percentage policies: `ceil(base × (1 + p))` up, `ceil(base × (1 − p))`
    /// down, at least one instance; beside `max_step` the larger allowance wins.
    #[test]
    fn max_step_percent_limits_each_move() {
        let check = |max_step, percent, base, expected| {
            let mut p = TargetPolicy::new(50.0);
            p.max_step = max_step;
            p.max_step_percent = percent;
            assert_eq!(
                p.step_limits(base),
                expected,
                "{max_step:?} {percent:?} {base}"
            );
        };
        check(None, Some(100.0), 10, (0, 20));
        check(None, Some(50.0), 10, (5, 15));
        check(None, Some(10.0), 3, (2, 4));
        check(None, Some(10.0), 0, (0, 1));
        check(Some(4), Some(100.0), 2, (0, 6));
        check(Some(4), Some(100.0), 10, (0, 20));
        check(Some(2), Some(10.0), 30, (27, 33));
        check(Some(2), None, 30, (28, 32));
        check(None, None, 30, (0, u32::MAX));
        // Through `evaluate`: 4 at 200 % of 50 % wants 16; 50 % of 4 allows 6.
        let mut p = TargetPolicy::new(50.0);
        p.max_step_percent = Some(50.0);
        let r = p.evaluate(
            &state(4),
            &window(&[(100, 200.0)]),
            Timestamp::from_secs(100),
        );
        assert_eq!(r.desired, Some(6));
    }

    #[test]
    fn max_step_percent_must_be_positive() {
        for bad in [0.0, -5.0, f64::NAN] {
            let mut p = TargetPolicy::new(50.0);
            p.max_step_percent = Some(bad);
            let e = p.validate().unwrap_err();
            assert_eq!(e.field, "max_step_percent");
            assert!(e.rule.contains("must be a number > 0"), "{}", e.rule);
        }
    }

    #[test]
    fn target_count_forgives_rounding_noise() {
        assert_eq!(target_count(3, 70.0, 70.0), 3);
        assert_eq!(target_count(10, 70.000_000_000_01, 70.0), 10);
        assert_eq!(target_count(10, 70.1, 70.0), 11);
    }
}
