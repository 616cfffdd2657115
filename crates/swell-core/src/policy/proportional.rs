//! `proportional`: seed 2's formula. When the average is above the target, add
//! `ceil((avg - t) / t * N)` instances; below it, remove `floor((t - avg) / t * N)`, where
//! `N` is the number of instances whose metrics count. Seed 2's worked example: 9
//! instances at 80 % against 60 % → `ceil(20 / 60 * 9)` = +3.

use super::{GroupState, Policy, Recommendation};
use crate::duration::serde_human;
use crate::error::ValidationError;
use crate::event::Cause;
use crate::metrics::{Metric, MetricWindow};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The proportional policy's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProportionalPolicy {
    /// The metric to compare (`cpu` by default).
    #[serde(default)]
    pub metric: Metric,
    /// The value the group should sit at (percent for `cpu`).
    pub target: f64,
    /// The window the average is taken over.
    #[serde(with = "serde_human", default = "default_period")]
    pub evaluation_period: Duration,
}

fn default_period() -> Duration {
    Duration::from_secs(60)
}

impl ProportionalPolicy {
    /// Checks the policy's rules.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if !self.target.is_finite() || self.target <= 0.0 {
            return Err(ValidationError::new(
                "target",
                format!("target ({}) must be a number > 0", self.target),
            ));
        }
        if self.evaluation_period.is_zero() {
            return Err(ValidationError::new("evaluation_period", "must be > 0"));
        }
        Ok(())
    }

    /// The change seed 2's formula asks for: positive out, negative in.
    pub fn step(&self, avg: f64, n: u32) -> i64 {
        let t = self.target;
        let n = f64::from(n);
        if avg > t {
            ((avg - t) / t * n).ceil() as i64
        } else {
            -(((t - avg) / t * n).floor() as i64)
        }
    }
}

impl Policy for ProportionalPolicy {
    fn name(&self) -> &'static str {
        "proportional"
    }

    fn lookback(&self) -> Duration {
        self.evaluation_period
    }

    fn scale_out_threshold(&self) -> Option<super::ScaleOutThreshold> {
        Some(super::ScaleOutThreshold {
            metric: self.metric,
            level: self.target,
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
        let period = crate::duration::format(self.evaluation_period);
        let cause = |value, reason: String| Cause {
            policy: "proportional".into(),
            metric: Some(self.metric.as_str().into()),
            value,
            threshold: Some(self.target),
            before: base,
            after: base,
            reason,
        };
        let Some(avg) = window.average(self.metric, now, self.evaluation_period) else {
            return Recommendation {
                desired: None,
                cause: cause(
                    None,
                    format!("no {} samples in the last {period}", self.metric),
                ),
            };
        };
        let step = self.step(avg, state.ready);
        if step == 0 {
            return Recommendation {
                desired: None,
                cause: cause(
                    Some(avg),
                    format!(
                        "{} {avg:.1} against {} over {period} on {} instances: no change",
                        self.metric, self.target, state.ready
                    ),
                ),
            };
        }
        let desired = (i64::from(base) + step).clamp(0, i64::from(u32::MAX)) as u32;
        Recommendation {
            desired: Some(desired),
            cause: cause(
                Some(avg),
                format!(
                    "{} {avg:.1} against {} over {period} on {} instances: {step:+}",
                    self.metric, self.target, state.ready
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testkit::{state, window};

    fn policy(target: f64) -> ProportionalPolicy {
        ProportionalPolicy {
            metric: Metric::Cpu,
            target,
            evaluation_period: Duration::from_secs(60),
        }
    }

    /// Seed 2's worked example: 9 instances, 80 % against 60 % → +3.
    #[test]
    fn seed2_worked_example() {
        let mut p = policy(60.0);
        let r = p.evaluate(
            &state(9),
            &window(&[(50, 80.0), (60, 80.0)]),
            Timestamp::from_secs(60),
        );
        assert_eq!(r.desired, Some(12));
        assert!(r.cause.reason.contains("+3"), "{}", r.cause.reason);
    }

    #[test]
    fn hand_computed_steps() {
        let p = policy(60.0);
        // out: ceil((avg - t) / t * N)
        assert_eq!(p.step(61.0, 9), 1); // ceil(0.15)
        assert_eq!(p.step(90.0, 4), 2); // ceil(2.0)
        assert_eq!(p.step(120.0, 10), 10);
        // in: floor((t - avg) / t * N)
        assert_eq!(p.step(30.0, 9), -4); // floor(4.5)
        assert_eq!(p.step(55.0, 9), 0); // floor(0.75)
        assert_eq!(p.step(0.0, 3), -3);
        assert_eq!(p.step(60.0, 9), 0);
    }

    #[test]
    fn scale_in_and_idle() {
        let mut p = policy(60.0);
        let now = Timestamp::from_secs(60);
        let r = p.evaluate(&state(9), &window(&[(60, 30.0)]), now);
        assert_eq!(r.desired, Some(5));
        let r = p.evaluate(&state(9), &window(&[(60, 57.0)]), now);
        assert_eq!(r.desired, None);
        let r = p.evaluate(&state(9), &window(&[]), now);
        assert_eq!(r.desired, None);
    }

    #[test]
    fn bad_target_is_rejected() {
        assert_eq!(policy(0.0).validate().unwrap_err().field, "target");
        assert_eq!(policy(f64::NAN).validate().unwrap_err().field, "target");
    }
}
