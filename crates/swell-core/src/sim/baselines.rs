//! The baselines `swell sim` compares against, each faithful to its public documentation
//! and to DESIGN.md's "Model details": Kubernetes' HPA v2 with its default behaviour and
//! AWS target tracking. (`lab` is the threshold policy with seed 0's numbers; `oracle`
//! and `static-peak` need no policy: the simulator computes them from the demand.)

use crate::event::Cause;
use crate::metrics::{Metric, MetricWindow};
use crate::policy::{GroupState, Policy, Recommendation};
use crate::time::Timestamp;
use std::collections::VecDeque;
use std::time::Duration;

/// Kubernetes HorizontalPodAutoscaler (autoscaling/v2) with the default behaviour:
/// 15 s sync period, tolerance 0.1, 300 s scale-down stabilisation, scale-up limited to
/// `max(4 pods, 100 %)` per 15 s, scale-down to 100 % per 15 s. The replica calculator
/// is Kubernetes' `GetResourceReplicas`: within the tolerance nothing changes; a scale-down
/// is `ceil(ratio × ready)`; on a scale-up, not-yet-ready pods count at 0 % and the ratio
/// is recomputed over all of them (no change if it falls within the tolerance or flips).
#[derive(Debug, Clone)]
pub struct Hpa {
    target: f64,
    tolerance: f64,
    period_ms: i64,
    stabilization: Duration,
    recommendations: VecDeque<(Timestamp, u32)>,
}

impl Hpa {
    /// An HPA aiming at `target` percent CPU, with the default behaviour.
    pub fn new(target: f64) -> Self {
        Hpa {
            target,
            tolerance: 0.1,
            period_ms: 15_000,
            stabilization: Duration::from_secs(300),
            recommendations: VecDeque::new(),
        }
    }

    /// The replica calculator alone (Kubernetes' `GetResourceReplicas`): the count for
    /// utilisation `u` measured over `measured` instances, with `ready` of `current`
    /// instances ready now.
    ///
    /// The reading covers only the instances it was measured over: one that became ready
    /// since has no reading of its own ("missing"), and counts at 100 % of the target on
    /// a scale-down and at 0 % on a scale-up; instances still booting count at 0 % on a
    /// scale-up and not at all on a scale-down. (Multiplying the reading by today's ready
    /// count instead added an instance each time one finished booting between the sample
    /// and the decision, which the scale-down window then kept.)
    pub fn replicas(&self, u: f64, measured: u32, ready: u32, current: u32) -> u32 {
        let measured = measured.min(ready);
        if measured == 0 {
            // Kubernetes: "did not receive metrics for targeted pods": no action.
            return current;
        }
        let ratio = u / self.target;
        let missing = ready - measured;
        let unready = current.saturating_sub(ready);
        let scale_up_with_unready = unready > 0 && ratio > 1.0;
        if !scale_up_with_unready && missing == 0 {
            if (1.0 - ratio).abs() <= self.tolerance {
                return current;
            }
            return (ratio * f64::from(measured)).ceil() as u32;
        }
        let mut total = u * f64::from(measured);
        let mut counted = measured;
        if missing > 0 && ratio != 1.0 {
            if ratio < 1.0 {
                total += self.target * f64::from(missing);
            }
            counted += missing;
        }
        if scale_up_with_unready {
            counted += unready;
        }
        let new_ratio = total / (self.target * f64::from(counted));
        if (1.0 - new_ratio).abs() <= self.tolerance
            || (ratio < 1.0 && new_ratio > 1.0)
            || (ratio > 1.0 && new_ratio < 1.0)
        {
            return current;
        }
        let n = (new_ratio * f64::from(counted)).ceil() as u32;
        if (new_ratio < 1.0 && n > current) || (new_ratio > 1.0 && n < current) {
            return current;
        }
        n
    }
}

impl Policy for Hpa {
    fn name(&self) -> &'static str {
        "hpa"
    }

    fn lookback(&self) -> Duration {
        Duration::from_secs(60)
    }

    fn evaluate(
        &mut self,
        state: &GroupState,
        window: &MetricWindow,
        now: Timestamp,
    ) -> Recommendation {
        let current = state.provisioned;
        let cause = |value, reason: String| Cause {
            policy: "hpa".into(),
            metric: Some("cpu".into()),
            value,
            threshold: Some(self.target),
            before: state.desired_capacity,
            after: state.desired_capacity,
            reason,
        };
        if now.as_millis().rem_euclid(self.period_ms) != 0 {
            return Recommendation {
                desired: None,
                cause: cause(None, "between sync periods".into()),
            };
        }
        let Some(sample) = window.latest(Metric::Cpu, now).filter(|_| state.ready > 0) else {
            return Recommendation {
                desired: None,
                cause: cause(None, "no metrics".into()),
            };
        };
        let u = sample.value;
        let raw = self.replicas(u, sample.instances, state.ready, current);
        self.recommendations.push_back((now, raw));
        let from = now.sub(self.stabilization);
        while self
            .recommendations
            .front()
            .is_some_and(|&(t, _)| t <= from)
        {
            self.recommendations.pop_front();
        }
        let stable = self
            .recommendations
            .iter()
            .map(|&(_, r)| r)
            .max()
            .unwrap_or(raw);
        let limit = current.saturating_add(4).max(current.saturating_mul(2));
        let desired = stable.min(limit);
        Recommendation {
            desired: (desired != current).then_some(desired),
            cause: cause(
                Some(u),
                format!(
                    "cpu {u:.1} against {} on {}/{current} ready: {raw}, stabilised {stable}, limited {desired}",
                    self.target, state.ready
                ),
            ),
        }
    }
}

/// AWS EC2 Auto Scaling target tracking, as its documentation describes it: one-minute
/// datapoints (mean utilisation of the ticks in `[t − 60 s, t)`, formed at multiples of
/// 60 s); the high alarm is in ALARM while the last 3 datapoints are above the target, the
/// low alarm while the last 15 are below 0.9 × target, and an alarm in ALARM invokes the
/// policy once a minute (a capacity change does not reset it). A scale-out sizes from the
/// capacity that is not warming up, `ceil(ready × datapoint / target)`, and happens only if
/// that is more than the capacity already provisioned (instances warming up count as
/// capacity being added); a scale-in sets `ceil(provisioned × datapoint / target)`, and is
/// blocked while any instance is still warming up.
#[derive(Debug, Clone)]
pub struct AwsTarget {
    target: f64,
    points: VecDeque<f64>,
}

impl AwsTarget {
    /// Target tracking at `target` percent CPU.
    pub fn new(target: f64) -> Self {
        AwsTarget {
            target,
            points: VecDeque::new(),
        }
    }
}

const AWS_OUT_POINTS: usize = 3;
const AWS_IN_POINTS: usize = 15;

impl Policy for AwsTarget {
    fn name(&self) -> &'static str {
        "aws-target"
    }

    fn lookback(&self) -> Duration {
        Duration::from_secs(120)
    }

    fn evaluate(
        &mut self,
        state: &GroupState,
        window: &MetricWindow,
        now: Timestamp,
    ) -> Recommendation {
        let current = state.provisioned;
        let cause = |value, reason: String| Cause {
            policy: "aws-target".into(),
            metric: Some("cpu".into()),
            value,
            threshold: Some(self.target),
            before: state.desired_capacity,
            after: state.desired_capacity,
            reason,
        };
        if now.as_millis().rem_euclid(60_000) != 0 {
            return Recommendation {
                desired: None,
                cause: cause(None, "between datapoints".into()),
            };
        }
        let from = now.sub(Duration::from_secs(60));
        let (sum, n) = window
            .samples()
            .filter(|s| s.metric == Metric::Cpu && s.at >= from && s.at < now)
            .fold((0.0, 0u32), |(a, n), s| (a + s.value, n + 1));
        if n == 0 {
            return Recommendation {
                desired: None,
                cause: cause(None, "missing datapoint".into()),
            };
        }
        let dp = sum / f64::from(n);
        self.points.push_back(dp);
        while self.points.len() > AWS_IN_POINTS {
            self.points.pop_front();
        }
        let last = |k: usize, breach: &dyn Fn(f64) -> bool| {
            self.points.len() >= k && self.points.iter().rev().take(k).all(|&p| breach(p))
        };
        let high = last(AWS_OUT_POINTS, &|p| p > self.target);
        let low = last(AWS_IN_POINTS, &|p| p < 0.9 * self.target);
        let warming = current.saturating_sub(state.ready);
        let (want, how) = if high {
            let want = (f64::from(state.ready) * dp / self.target).ceil() as u32;
            (
                want.max(current),
                format!(
                    "high alarm: ceil({} ready × {dp:.1} / {}) = {want}, {current} provisioned",
                    state.ready, self.target
                ),
            )
        } else if low && warming > 0 {
            (
                current,
                format!("low alarm: scale-in waits for {warming} warming instance(s)"),
            )
        } else if low {
            let want = (f64::from(current) * dp / self.target).ceil() as u32;
            (
                want.min(current),
                format!(
                    "low alarm: ceil({current} × {dp:.1} / {}) = {want}",
                    self.target
                ),
            )
        } else {
            (current, format!("datapoint {dp:.1}: no alarm"))
        };
        Recommendation {
            desired: (want != current).then_some(want),
            cause: cause(Some(dp), how),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::MetricSample;

    /// Kubernetes' documentation: "if the current metric value is 200m, and the desired
    /// value is 100m, the number of replicas will be doubled"; and the walkthrough's
    /// figure: 50 replicas at 90 % CPU against a 75 % target → 60.
    #[test]
    fn hpa_documented_examples() {
        let h = Hpa::new(75.0);
        assert_eq!(h.replicas(90.0, 50, 50, 50), 60);
        let h = Hpa::new(100.0);
        assert_eq!(h.replicas(200.0, 3, 3, 3), 6);
        // "if the current value is 50m, you'll halve the number of replicas"
        assert_eq!(h.replicas(50.0, 4, 4, 4), 2);
        // Within the 0.1 tolerance: no change.
        assert_eq!(h.replicas(109.0, 4, 4, 4), 4);
        assert_eq!(h.replicas(91.0, 4, 4, 4), 4);
    }

    #[test]
    fn hpa_counts_unready_pods_at_zero_on_scale_up() {
        let h = Hpa::new(50.0);
        // 4 ready at 100 % of 6: ratio 2 → recomputed 4 × 100 / (50 × 6) = 1.333 → 8.
        assert_eq!(h.replicas(100.0, 4, 4, 6), 8);
        // 4 ready at 80 % of 6: recomputed 1.067, within the tolerance → 6.
        assert_eq!(h.replicas(80.0, 4, 4, 6), 6);
        // 4 ready at 60 % of 8: recomputed 0.6 < 1 flips direction → 8.
        assert_eq!(h.replicas(60.0, 4, 4, 8), 8);
    }

    /// A window of CPU readings, each measured over `instances` instances.
    fn win(instances: u32, points: &[(i64, f64)]) -> MetricWindow {
        let mut w = MetricWindow::new(Duration::from_secs(3600));
        for &(t, v) in points {
            w.push(MetricSample {
                at: Timestamp::from_secs(t),
                metric: Metric::Cpu,
                value: v,
                instances,
            });
        }
        w
    }

    /// Kubernetes' replica calculator works on the pods its metrics cover: an instance
    /// that became ready after the reading has none, and counts at 0 % on a scale-up
    /// (at the target on a scale-down).
    #[test]
    fn hpa_uses_the_instances_the_reading_was_measured_over() {
        let h = Hpa::new(50.0);
        // 2 measured at 100 %, a third ready since: 200 / (50 × 3) = 1.33 → 4. Reading
        // the 100 % as if over all 3 asked for 6.
        assert_eq!(h.replicas(100.0, 2, 3, 3), 4);
        // 2 measured at 60 %, a third ready since: 120 / 150 = 0.8 flips the direction
        // → no change (the reading alone said 1.2 → 3 × 1.2 = 4).
        assert_eq!(h.replicas(60.0, 2, 3, 3), 3);
        // Scale-down: 2 measured at 10 %, a third ready since counts at the target:
        // (20 + 50) / 150 = 0.47 → ceil(0.47 × 3) = 2.
        assert_eq!(h.replicas(10.0, 2, 3, 3), 2);
        // Nothing measured: no action.
        assert_eq!(h.replicas(100.0, 0, 3, 3), 3);
        // Through `evaluate`: the sample taken over 2, decided with 3 ready.
        let mut h = Hpa::new(50.0);
        let r = h.evaluate(&st(3), &win(2, &[(0, 100.0)]), Timestamp::from_secs(15));
        assert_eq!(r.desired, Some(4));
    }

    fn st(n: u32) -> GroupState {
        GroupState {
            desired_capacity: n,
            provisioned: n,
            ready: n,
            last_scaling_at: None,
        }
    }

    #[test]
    fn hpa_stabilises_scale_down_and_limits_scale_up() {
        let mut h = Hpa::new(50.0);
        // 2 replicas at 500 %: ratio 10 → 20, limited to max(2 + 4, 4) = 6.
        let r = h.evaluate(&st(2), &win(2, &[(0, 500.0)]), Timestamp::from_secs(15));
        assert_eq!(r.desired, Some(6));
        // Not at a multiple of 15 s: nothing.
        let r = h.evaluate(&st(2), &win(2, &[(0, 500.0)]), Timestamp::from_secs(20));
        assert_eq!(r.desired, None);
        // Then 10 replicas at 10 %: raw 2, but 20 was recommended within 300 s → 20,
        // limited to 20.
        let r = h.evaluate(&st(10), &win(10, &[(20, 10.0)]), Timestamp::from_secs(30));
        assert_eq!(r.desired, Some(20));
        let r = h.evaluate(&st(20), &win(20, &[(300, 5.0)]), Timestamp::from_secs(315));
        // (15 s is outside (15, 315]; 30 s is inside: its raw was 2; now raw is 2.)
        assert_eq!(r.desired, Some(2));
    }

    #[test]
    fn aws_alarms() {
        let mut a = AwsTarget::new(50.0);
        // Datapoints from 15 s ticks: minute 1 mean of [0,60) etc.
        let mut pts = vec![];
        for t in (0..240).step_by(15) {
            pts.push((t, 80.0));
        }
        let w = win(4, &pts);
        let r1 = a.evaluate(&st(4), &w, Timestamp::from_secs(60));
        let r2 = a.evaluate(&st(4), &w, Timestamp::from_secs(120));
        assert_eq!((r1.desired, r2.desired), (None, None));
        let r3 = a.evaluate(&st(4), &w, Timestamp::from_secs(180));
        // ceil(4 × 80 / 50) = 7
        assert_eq!(r3.desired, Some(7));
        // The alarm stays in ALARM and invokes the policy again a minute later: with the 3
        // new instances still warming up, ceil(4 ready × 80 / 50) = 7 adds nothing.
        let warming = GroupState {
            desired_capacity: 7,
            provisioned: 7,
            ready: 4,
            last_scaling_at: None,
        };
        let r4 = a.evaluate(&warming, &w, Timestamp::from_secs(240));
        assert_eq!(r4.desired, None, "{}", r4.cause.reason);
        // Scale-in needs 15 low datapoints.
        let mut a = AwsTarget::new(50.0);
        let pts: Vec<(i64, f64)> = (0..1000).step_by(15).map(|t| (t, 20.0)).collect();
        let w = win(4, &pts);
        let mut first = None;
        for m in 1..=16 {
            let r = a.evaluate(&st(10), &w, Timestamp::from_secs(m * 60));
            if r.desired.is_some() && first.is_none() {
                first = Some((m, r.desired));
            }
        }
        // ceil(10 × 20 / 50) = 4 at the 15th datapoint.
        assert_eq!(first, Some((15, Some(4))));
    }

    /// AWS: "Auto Scaling doesn't count the instance towards the group's capacity until
    /// ... the warmup time finishes (for scale out)", and an alarm that stays in ALARM
    /// invokes the policy once a minute. Sizing from the provisioned count (warming
    /// instances included) overshot; restarting the alarm after each change waited three
    /// more minutes on a load still rising.
    #[test]
    fn aws_scales_out_from_the_capacity_not_warming_up_every_minute_in_alarm() {
        let state = |provisioned, ready| GroupState {
            desired_capacity: provisioned,
            provisioned,
            ready,
            last_scaling_at: None,
        };
        let mut a = AwsTarget::new(50.0);
        let mut pts: Vec<(i64, f64)> = (0..180).step_by(15).map(|t| (t, 80.0)).collect();
        let w = win(4, &pts);
        for m in 1..=2 {
            a.evaluate(&state(6, 4), &w, Timestamp::from_secs(m * 60));
        }
        // 4 ready, 2 warming: ceil(4 × 80 / 50) = 7, not ceil(6 × 80 / 50) = 10.
        let r = a.evaluate(&state(6, 4), &w, Timestamp::from_secs(180));
        assert_eq!(r.desired, Some(7), "{}", r.cause.reason);
        // The load rises while those boot: a minute later, ceil(4 × 100 / 50) = 8.
        pts.extend((180..240).step_by(15).map(|t| (t, 100.0)));
        let r = a.evaluate(&state(7, 4), &win(4, &pts), Timestamp::from_secs(240));
        assert_eq!(r.desired, Some(8), "{}", r.cause.reason);
    }

    /// AWS: while instances warm up, "dynamic scaling becomes conservative ... This blocks
    /// the scale-in activities for dynamic scaling until the new instances finish warming up."
    #[test]
    fn aws_does_not_scale_in_while_instances_warm_up() {
        let pts: Vec<(i64, f64)> = (0..1000).step_by(15).map(|t| (t, 20.0)).collect();
        let w = win(4, &pts);
        let warming = GroupState {
            desired_capacity: 10,
            provisioned: 10,
            ready: 9,
            last_scaling_at: None,
        };
        let mut a = AwsTarget::new(50.0);
        let mut asked = vec![];
        for m in 1..=16 {
            asked.push(
                a.evaluate(&warming, &w, Timestamp::from_secs(m * 60))
                    .desired,
            );
        }
        assert!(asked.iter().all(Option::is_none), "{asked:?}");
        // Once the tenth is ready, the low alarm (still in ALARM) scales in at once.
        let r = a.evaluate(&st(10), &w, Timestamp::from_secs(17 * 60));
        assert_eq!(r.desired, Some(4));
    }
}
