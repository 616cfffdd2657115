//! `threshold`: average over `evaluation_period` above `scale_out_above` → add `step`;
//! below `scale_in_below` → remove `step`; in between → idle (seeds 0, 1 and 2).

use super::{GroupState, Policy, Recommendation};
use crate::duration::serde_human;
use crate::error::ValidationError;
use crate::event::Cause;
use crate::metrics::{Metric, MetricWindow};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A larger step for a larger breach: when the average is at least `breach` beyond the
/// threshold, scale by `step` instead of the default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepAdjustment {
    /// How far beyond the threshold (in the metric's unit) this step starts.
    pub breach: f64,
    /// Instances to add or remove.
    pub step: u32,
}

/// The threshold policy's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdPolicy {
    /// The metric to compare (`cpu` by default).
    #[serde(default)]
    pub metric: Metric,
    /// Scale out when the average is strictly above this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_out_above: Option<f64>,
    /// Scale in when the average is strictly below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_in_below: Option<f64>,
    /// Instances added or removed per action.
    #[serde(default = "default_step")]
    pub step: u32,
    /// Larger steps for larger breaches (largest matching `breach` wins).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepAdjustment>,
    /// The window the average is taken over.
    #[serde(with = "serde_human", default = "default_period")]
    pub evaluation_period: Duration,
}

fn default_step() -> u32 {
    1
}
fn default_period() -> Duration {
    Duration::from_secs(60)
}

impl ThresholdPolicy {
    /// Checks the policy's rules.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.scale_out_above.is_none() && self.scale_in_below.is_none() {
            return Err(ValidationError::new(
                "scale_out_above",
                "a threshold policy needs scale_out_above, scale_in_below or both",
            ));
        }
        for (field, v) in [
            ("scale_out_above", self.scale_out_above),
            ("scale_in_below", self.scale_in_below),
        ] {
            if let Some(v) = v
                && (!v.is_finite() || v < 0.0)
            {
                return Err(ValidationError::new(
                    field,
                    format!("{v} must be a number >= 0"),
                ));
            }
        }
        if let (Some(out), Some(inn)) = (self.scale_out_above, self.scale_in_below)
            && inn >= out
        {
            return Err(ValidationError::new(
                "scale_in_below",
                format!("scale_in_below ({inn}) must be < scale_out_above ({out})"),
            ));
        }
        if self.step == 0 {
            return Err(ValidationError::new("step", "step must be >= 1"));
        }
        for (i, s) in self.steps.iter().enumerate() {
            if s.step == 0 {
                return Err(ValidationError::new(
                    format!("steps[{i}].step"),
                    "step must be >= 1",
                ));
            }
            if !s.breach.is_finite() || s.breach < 0.0 {
                return Err(ValidationError::new(
                    format!("steps[{i}].breach"),
                    "breach must be a number >= 0",
                ));
            }
        }
        if self.evaluation_period.is_zero() {
            return Err(ValidationError::new("evaluation_period", "must be > 0"));
        }
        Ok(())
    }

    fn step_for(&self, breach: f64) -> u32 {
        self.steps
            .iter()
            .filter(|s| breach >= s.breach)
            .max_by(|a, b| a.breach.total_cmp(&b.breach))
            .map_or(self.step, |s| s.step)
    }
}

impl Policy for ThresholdPolicy {
    fn name(&self) -> &'static str {
        "threshold"
    }

    fn lookback(&self) -> Duration {
        self.evaluation_period
    }

    fn scale_out_threshold(&self) -> Option<super::ScaleOutThreshold> {
        Some(super::ScaleOutThreshold {
            metric: self.metric,
            level: self.scale_out_above?,
            period: self.evaluation_period,
        })
    }

    fn evaluate(
        &mut self,
        state: &GroupState,
        window: &MetricWindow,
        now: Timestamp,
    ) -> Recommendation {
        let base = state.desired_capacity;
        let cause = |threshold, value, reason: String| Cause {
            policy: "threshold".into(),
            metric: Some(self.metric.as_str().into()),
            value,
            threshold,
            before: base,
            after: base,
            reason,
        };
        let period = crate::duration::format(self.evaluation_period);
        let Some(avg) = window.average(self.metric, now, self.evaluation_period) else {
            return Recommendation {
                desired: None,
                cause: cause(
                    None,
                    None,
                    format!("no {} samples in the last {period}", self.metric),
                ),
            };
        };
        if let Some(t) = self.scale_out_above
            && avg > t
        {
            let step = self.step_for(avg - t);
            return Recommendation {
                desired: Some(base.saturating_add(step)),
                cause: cause(
                    Some(t),
                    Some(avg),
                    format!("{} {avg:.1} > {t} over {period}: +{step}", self.metric),
                ),
            };
        }
        if let Some(t) = self.scale_in_below
            && avg < t
        {
            let step = self.step_for(t - avg);
            return Recommendation {
                desired: Some(base.saturating_sub(step)),
                cause: cause(
                    Some(t),
                    Some(avg),
                    format!("{} {avg:.1} < {t} over {period}: -{step}", self.metric),
                ),
            };
        }
        Recommendation {
            desired: None,
            cause: cause(
                self.scale_out_above.or(self.scale_in_below),
                Some(avg),
                format!(
                    "{} {avg:.1} within the idle band over {period}",
                    self.metric
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::Capacity;
    use crate::metrics::MetricSample;
    use crate::policy::{DecisionKind, PolicyEngine, PolicySpec};

    fn window(points: &[(i64, f64)]) -> MetricWindow {
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

    fn state(desired: u32, last: Option<i64>) -> GroupState {
        GroupState {
            desired_capacity: desired,
            provisioned: desired,
            ready: desired,
            last_scaling_at: last.map(Timestamp::from_secs),
        }
    }

    fn spec(yaml_like: serde_json::Value) -> PolicySpec {
        serde_json::from_value(yaml_like).unwrap()
    }

    fn engine(p: serde_json::Value, min: u32, max: u32, cooldown: u64) -> PolicyEngine {
        let s = spec(p);
        s.validate().unwrap();
        PolicyEngine::new(
            &[s],
            Capacity::new(min, max).unwrap(),
            Duration::from_secs(cooldown),
        )
    }

    fn seed0() -> PolicyEngine {
        engine(
            serde_json::json!({"type": "threshold", "scale_out_above": 20, "step": 1, "evaluation_period": "40s"}),
            1,
            4,
            120,
        )
    }

    /// Seed 0: CPU above 20 % over 40 s adds one instance, up to 4.
    #[test]
    fn seed0_scales_out_by_one_up_to_four() {
        let mut e = seed0();
        let w = window(&[(5, 30.0), (10, 50.0), (15, 40.0)]);
        let d = e.decide(&state(1, None), &w, Timestamp::from_secs(15));
        assert_eq!((d.kind, d.desired_capacity), (DecisionKind::ScaleOut, 2));
        assert_eq!(d.cause.value, Some(40.0));
        assert_eq!(d.cause.threshold, Some(20.0));
        assert_eq!((d.cause.before, d.cause.after), (1, 2));
        let d = e.decide(&state(4, None), &w, Timestamp::from_secs(15));
        assert_eq!((d.kind, d.desired_capacity), (DecisionKind::Idle, 4));
    }

    /// Seed 0: only the last 40 s count; an old spike does not.
    #[test]
    fn seed0_window_is_forty_seconds() {
        let mut e = seed0();
        let w = window(&[(0, 90.0), (50, 10.0), (60, 15.0)]);
        let d = e.decide(&state(1, None), &w, Timestamp::from_secs(60));
        assert_eq!(d.kind, DecisionKind::Idle);
    }

    fn seed1() -> PolicyEngine {
        engine(
            serde_json::json!({"type": "threshold", "scale_out_above": 70, "scale_in_below": 30, "evaluation_period": "30s"}),
            1,
            5,
            60,
        )
    }

    /// Seed 1: max threshold out, min threshold in, the band between idle.
    #[test]
    fn seed1_band() {
        let now = Timestamp::from_secs(100);
        let check = |v: f64, kind: DecisionKind, desired: u32| {
            let d = seed1().decide(&state(3, None), &window(&[(90, v), (100, v)]), now);
            assert_eq!((d.kind, d.desired_capacity), (kind, desired), "at {v}");
        };
        check(85.0, DecisionKind::ScaleOut, 4);
        check(50.0, DecisionKind::Idle, 3);
        check(10.0, DecisionKind::ScaleIn, 2);
        // Exactly at a threshold is inside the band.
        check(70.0, DecisionKind::Idle, 3);
        check(30.0, DecisionKind::Idle, 3);
    }

    /// Seed 1: after a scale-out, a drop does not scale in until the cooldown expires.
    #[test]
    fn seed1_cooldown_expires_before_scale_in() {
        let mut e = seed1();
        let w = window(&[(100, 10.0), (110, 10.0), (120, 10.0), (170, 10.0)]);
        let d = e.decide(&state(3, Some(100)), &w, Timestamp::from_secs(120));
        assert_eq!(d.kind, DecisionKind::Idle);
        assert_eq!(d.cause.policy, "cooldown");
        let d = e.decide(&state(3, Some(100)), &w, Timestamp::from_secs(170));
        assert_eq!((d.kind, d.desired_capacity), (DecisionKind::ScaleIn, 2));
    }

    /// A scale-in's cooldown does not hold back a scale-out (running short is worse than
    /// running over); a scale-out's cooldown holds back both, and so does a cooldown this
    /// engine did not start (a restart, a manual change).
    #[test]
    fn scale_out_goes_through_a_scale_in_cooldown_only() {
        let mut e = seed1();
        let low = window(&[(100, 10.0), (110, 10.0)]);
        let d = e.decide(&state(3, None), &low, Timestamp::from_secs(110));
        assert_eq!((d.kind, d.desired_capacity), (DecisionKind::ScaleIn, 2));
        let high = window(&[(120, 90.0), (130, 90.0)]);
        let d = e.decide(&state(2, Some(110)), &high, Timestamp::from_secs(130));
        assert_eq!((d.kind, d.desired_capacity), (DecisionKind::ScaleOut, 3));
        // Now inside the scale-out's cooldown: neither way.
        let d = e.decide(&state(3, Some(130)), &high, Timestamp::from_secs(140));
        assert_eq!(
            (d.kind, d.cause.policy.as_str()),
            (DecisionKind::Idle, "cooldown")
        );
        let low_later = window(&[(130, 10.0), (140, 10.0)]);
        let d = e.decide(&state(3, Some(130)), &low_later, Timestamp::from_secs(140));
        assert_eq!(
            (d.kind, d.cause.policy.as_str()),
            (DecisionKind::Idle, "cooldown")
        );
        // A fresh engine does not know which way the last action went: it waits.
        let d = seed1().decide(&state(2, Some(110)), &high, Timestamp::from_secs(130));
        assert_eq!(
            (d.kind, d.cause.policy.as_str()),
            (DecisionKind::Idle, "cooldown")
        );
    }

    #[test]
    fn empty_window_is_idle() {
        let d = seed0().decide(&state(2, None), &window(&[]), Timestamp::from_secs(60));
        assert_eq!(d.kind, DecisionKind::Idle);
        assert!(
            d.cause.reason.contains("no cpu samples"),
            "{}",
            d.cause.reason
        );
    }

    /// When every instance is warming up the collector records no sample (see
    /// `metrics::group_average`), so the policy sees an empty window and waits.
    #[test]
    fn all_warming_up_is_idle() {
        use crate::metrics::{InstanceReading, group_average};
        let now = Timestamp::from_secs(30);
        let readings = [InstanceReading {
            value: 99.0,
            started_at: Timestamp::from_secs(20),
        }];
        assert_eq!(group_average(&readings, Duration::from_secs(60), now), None);
        let d = seed0().decide(&state(1, None), &window(&[]), now);
        assert_eq!(d.kind, DecisionKind::Idle);
    }

    #[test]
    fn desired_is_clamped() {
        let mut e = engine(
            serde_json::json!({"type": "threshold", "scale_out_above": 50, "scale_in_below": 10, "step": 5}),
            2,
            6,
            0,
        );
        let hot = window(&[(10, 95.0)]);
        let cold = window(&[(10, 1.0)]);
        let now = Timestamp::from_secs(10);
        assert_eq!(e.decide(&state(4, None), &hot, now).desired_capacity, 6);
        assert_eq!(e.decide(&state(4, None), &cold, now).desired_capacity, 2);
        // Out of bounds after a spec change: brought back in even without a breach.
        let d = e.decide(&state(9, None), &window(&[(10, 30.0)]), now);
        assert_eq!(
            (d.kind, d.desired_capacity, d.cause.policy.as_str()),
            (DecisionKind::ScaleIn, 6, "bounds")
        );
    }

    #[test]
    fn step_map_scales_by_breach() {
        let mut e = engine(
            serde_json::json!({"type": "threshold", "scale_out_above": 60, "step": 1,
                "steps": [{"breach": 10, "step": 2}, {"breach": 30, "step": 4}]}),
            1,
            100,
            0,
        );
        let now = Timestamp::from_secs(10);
        for (v, want) in [(65.0, 11), (75.0, 12), (95.0, 14)] {
            assert_eq!(
                e.decide(&state(10, None), &window(&[(10, v)]), now)
                    .desired_capacity,
                want,
                "{v}"
            );
        }
    }

    #[test]
    fn invalid_specs_name_the_field() {
        let err = |v: serde_json::Value| spec(v).validate().unwrap_err();
        assert_eq!(
            err(serde_json::json!({"type": "threshold"})).field,
            "scale_out_above"
        );
        let e = err(
            serde_json::json!({"type": "threshold", "scale_out_above": 20, "scale_in_below": 30}),
        );
        assert_eq!(e.rule, "scale_in_below (30) must be < scale_out_above (20)");
        assert_eq!(
            err(serde_json::json!({"type": "threshold", "scale_out_above": 20, "step": 0})).field,
            "step"
        );
    }

    proptest::proptest! {
        #[test]
        fn desired_always_within_bounds(desired in 0u32..50, v in 0.0f64..200.0, min in 0u32..10, extra in 0u32..10, step in 1u32..20) {
            let mut e = engine(
                serde_json::json!({"type": "threshold", "scale_out_above": 60, "scale_in_below": 20, "step": step}),
                min, min + extra, 0,
            );
            let d = e.decide(&state(desired, None), &window(&[(10, v)]), Timestamp::from_secs(10));
            proptest::prop_assert!(d.desired_capacity >= min && d.desired_capacity <= min + extra);
        }

        #[test]
        fn no_action_inside_cooldown(desired in 1u32..10, v in 0.0f64..200.0, since in 0i64..119) {
            let mut e = engine(
                serde_json::json!({"type": "threshold", "scale_out_above": 60, "scale_in_below": 20}),
                1, 10, 120,
            );
            let d = e.decide(&state(desired, Some(1000)), &window(&[(1000 + since, v)]), Timestamp::from_secs(1000 + since));
            proptest::prop_assert_eq!(d.kind, DecisionKind::Idle);
        }
    }
}
