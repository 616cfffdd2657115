//! `predictive`: forecasts the group's load from its own history — the short-term trend
//! plus daily and weekly seasonality — and sizes the group for the peak expected before
//! an instance started now would be ready (`provisioning_delay`), at `target`.
//!
//! It falls back to reactive target tracking (`ceil(N * avg / target)`) while the history
//! is shorter than `min_history` or while its recent forecasts have been wrong by more
//! than `max_error`; and it never scales in on a forecast alone: its recommendation is
//! never below the reactive one, so it goes down only when the present load does.

use super::forecast::{ForecastScore, LoadHistory};
use super::target::target_count;
use super::{GroupState, Policy, Recommendation};
use crate::duration::serde_human;
use crate::error::ValidationError;
use crate::event::Cause;
use crate::metrics::{LoadSummary, Metric, MetricWindow};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The predictive policy's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictivePolicy {
    /// The metric to forecast (`cpu` by default).
    #[serde(default)]
    pub metric: Metric,
    /// The value to keep the metric at (percent for `cpu`).
    pub target: f64,
    /// How long an instance takes from create to ready: the forecast looks this far ahead.
    #[serde(with = "serde_human", default = "default_delay")]
    pub provisioning_delay: Duration,
    /// Below this much history the policy is reactive only.
    #[serde(with = "serde_human", default = "default_min_history")]
    pub min_history: Duration,
    /// Above this mean relative error of recent forecasts the policy is reactive only.
    #[serde(default = "default_max_error")]
    pub max_error: f64,
    /// The window of the reactive part and of the present load level.
    #[serde(with = "serde_human", default = "default_period")]
    pub evaluation_period: Duration,
    /// The window of the short-term trend.
    #[serde(with = "serde_human", default = "default_trend")]
    pub trend_window: Duration,
}

fn default_delay() -> Duration {
    Duration::from_secs(120)
}
fn default_min_history() -> Duration {
    Duration::from_secs(86_400)
}
fn default_max_error() -> f64 {
    0.2
}
fn default_period() -> Duration {
    Duration::from_secs(60)
}
fn default_trend() -> Duration {
    Duration::from_secs(600)
}

/// A predictive policy with its memory.
#[derive(Debug, Clone)]
pub struct PredictiveRunner {
    spec: PredictivePolicy,
    history: LoadHistory,
    score: ForecastScore,
}

impl PredictivePolicy {
    /// Checks the policy's rules.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if !self.target.is_finite() || self.target <= 0.0 {
            return Err(ValidationError::new(
                "target",
                format!("target ({}) must be a number > 0", self.target),
            ));
        }
        if !self.max_error.is_finite() || self.max_error <= 0.0 {
            return Err(ValidationError::new("max_error", "must be a number > 0"));
        }
        for (field, d) in [
            ("evaluation_period", self.evaluation_period),
            ("trend_window", self.trend_window),
        ] {
            if d.is_zero() {
                return Err(ValidationError::new(field, "must be > 0"));
            }
        }
        Ok(())
    }

    /// A fresh policy with empty memory.
    pub fn runner(&self) -> PredictiveRunner {
        let recent = self
            .trend_window
            .max(self.provisioning_delay + self.evaluation_period)
            + Duration::from_secs(60);
        PredictiveRunner {
            spec: self.clone(),
            history: LoadHistory::new(self.metric, Duration::from_secs(300), recent),
            score: ForecastScore::new(50_000.0, self.target),
        }
    }
}

impl PredictiveRunner {
    /// What the forecast errors depend on (see [`Policy::learned`]): whether the forecast
    /// "has been wrong" carries over an edit of `max_error` or `min_history`, not one of
    /// the forecast itself.
    fn basis(&self) -> serde_json::Value {
        let s = &self.spec;
        serde_json::json!({
            "metric": s.metric,
            "target": s.target,
            "provisioning_delay": s.provisioning_delay,
            "evaluation_period": s.evaluation_period,
            "trend_window": s.trend_window,
        })
    }
}

impl Policy for PredictiveRunner {
    fn name(&self) -> &'static str {
        "predictive"
    }

    fn sized_from_load(&self) -> bool {
        true
    }

    fn remembers(&self) -> Option<Metric> {
        Some(self.spec.metric)
    }

    fn remember(&mut self, past: &[LoadSummary]) {
        self.history.remember(past);
    }

    fn learned(&self) -> Option<serde_json::Value> {
        Some(self.score.learned(self.basis()))
    }

    fn relearn(&mut self, learned: &serde_json::Value) -> bool {
        self.score.relearn(self.basis(), learned)
    }

    fn lookback(&self) -> Duration {
        self.spec.evaluation_period
    }

    fn evaluate(
        &mut self,
        state: &GroupState,
        window: &MetricWindow,
        now: Timestamp,
    ) -> Recommendation {
        let spec = &self.spec;
        let base = state.desired_capacity;
        self.history.ingest(window);
        self.score.settle(&self.history, now);
        let cause = |value, reason: String| Cause {
            policy: "predictive".into(),
            metric: Some(spec.metric.as_str().into()),
            value,
            threshold: Some(spec.target),
            before: base,
            after: base,
            reason,
        };
        let Some(avg) = window.average(spec.metric, now, spec.evaluation_period) else {
            return Recommendation {
                desired: None,
                cause: cause(None, format!("no recent {} samples", spec.metric)),
            };
        };
        let reactive = (state.ready > 0).then(|| target_count(state.ready, avg, spec.target));
        let horizon = spec.provisioning_delay + spec.evaluation_period;
        let level = self.history.level(now, spec.evaluation_period);

        // The forecast of the peak load before new capacity could be ready.
        let forecast = level.map(|level| {
            let trend = self
                .history
                .slope(now, spec.trend_window)
                .map_or(level, |s| level + s.max(0.0) * horizon.as_secs_f64());
            match self.history.seasonal_peak(now, horizon, level) {
                Some(season) => trend.max(season),
                None => trend,
            }
        });
        if let Some(f) = forecast {
            self.score.record(now, now.add(horizon), f);
        }
        let short = self.history.span(now) < spec.min_history;
        let wrong = self
            .score
            .error()
            .is_some_and(|e| e > (1.0 + spec.max_error).ln());
        let predicted = match forecast {
            Some(f) if !short && !wrong => Some(target_count(1, f, spec.target)),
            _ => None,
        };
        let desired = match (predicted, reactive) {
            // Never below the reactive count: a forecast alone does not scale in.
            (Some(p), Some(r)) => Some(p.max(r)),
            (None, r) => r,
            (Some(p), None) => Some(p.max(base)),
        };
        let mode = if short {
            "history too short: reactive"
        } else if wrong {
            "forecast has been wrong: reactive"
        } else {
            "forecast"
        };
        let desired = desired.filter(|&d| d != base);
        Recommendation {
            desired,
            cause: cause(
                Some(avg),
                format!(
                    "{mode}: {} {avg:.1} on {} ready → reactive {}, forecast peak {} in {}",
                    spec.metric,
                    state.ready,
                    reactive.map_or("-".into(), |r| r.to_string()),
                    forecast.map_or("-".into(), |f| format!("{f:.0}")),
                    crate::duration::format(horizon)
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::MetricSample;

    fn spec() -> PredictivePolicy {
        PredictivePolicy {
            metric: Metric::Cpu,
            target: 50.0,
            provisioning_delay: Duration::from_secs(120),
            min_history: Duration::from_secs(86_400),
            max_error: 0.2,
            evaluation_period: Duration::from_secs(60),
            trend_window: Duration::from_secs(600),
        }
    }

    fn sample(t: i64, value: f64, instances: u32) -> MetricSample {
        MetricSample {
            at: Timestamp::from_secs(t),
            metric: Metric::Cpu,
            value,
            instances,
        }
    }

    fn st(n: u32) -> GroupState {
        GroupState {
            desired_capacity: n,
            provisioned: n,
            ready: n,
            last_scaling_at: None,
        }
    }

    /// Feeds `load(t)` (in instance-percent) to a group of `n` instances every minute and
    /// returns the last recommendation.
    fn drive(
        p: &mut PredictiveRunner,
        n: u32,
        minutes: i64,
        load: impl Fn(i64) -> f64,
    ) -> Recommendation {
        drive_from(p, n, 0, minutes, load)
    }

    /// `drive` over minutes `from..to` only.
    fn drive_from(
        p: &mut PredictiveRunner,
        n: u32,
        from: i64,
        to: i64,
        load: impl Fn(i64) -> f64,
    ) -> Recommendation {
        let mut w = MetricWindow::new(Duration::from_secs(120));
        let mut last = None;
        for m in from..to {
            let t = m * 60;
            w.push(sample(t, load(t) / f64::from(n), n));
            last = Some(p.evaluate(&st(n), &w, Timestamp::from_secs(t)));
        }
        last.unwrap()
    }

    #[test]
    fn short_history_is_reactive() {
        let mut p = spec().runner();
        // 10 instances at 80 % against 50 % → ceil(16) = 16, whatever the trend.
        let r = drive(&mut p, 10, 30, |t| 700.0 + t as f64 / 10.0);
        let load = 700.0 + 29.0 * 6.0;
        assert_eq!(r.desired, Some((load / 50.0_f64).ceil() as u32));
        assert!(r.cause.reason.contains("too short"), "{}", r.cause.reason);
    }

    #[test]
    fn a_daily_rise_is_met_ahead_of_time() {
        let mut p = spec().runner();
        // 100 units at night, 300 from 08:00; the policy runs with 10 instances.
        let load = |t: i64| if ((t / 3600) % 24) >= 8 { 300.0 } else { 100.0 };
        let r = drive(&mut p, 10, 2 * 1440 + 8 * 60 - 2, load);
        // At 07:58 the present says ceil(100 / 50) = 2; the forecast says 300 / 50 = 6.
        assert_eq!(r.desired, Some(6), "{}", r.cause.reason);
        assert!(r.cause.reason.starts_with("forecast"), "{}", r.cause.reason);
    }

    /// A policy built after a restart (or an edit of the group) from the controller's
    /// stored one-minute summaries forecasts the daily rise at once; the same 20 minutes
    /// of live samples alone leave it reactive.
    #[test]
    fn a_remembered_history_forecasts_at_once() {
        let load = |t: i64| if ((t / 3600) % 24) >= 8 { 300.0 } else { 100.0 };
        let (start, end) = (2 * 1440 + 7 * 60 + 38, 2 * 1440 + 8 * 60 - 2);
        let past = crate::metrics::cpu_summaries(0..start - 20, load);

        let mut remembered = spec().runner();
        remembered.remember(&past);
        let r = drive_from(&mut remembered, 10, start, end, load);
        assert_eq!(r.desired, Some(6), "{}", r.cause.reason);
        assert!(r.cause.reason.starts_with("forecast"), "{}", r.cause.reason);

        let r = drive_from(&mut spec().runner(), 10, start, end, load);
        assert_eq!(r.desired, Some(2), "{}", r.cause.reason);
        assert!(r.cause.reason.contains("too short"), "{}", r.cause.reason);
    }

    /// What a policy found of its forecasts carries over to a new one of the same basis:
    /// a day of a load jumping between 100 and 300 each minute makes every forecast
    /// wrong, and a policy built after it stays reactive at once, where one that only
    /// remembers a day of history trusts its forecast.
    #[test]
    fn a_relearned_score_keeps_a_wrong_forecast_distrusted() {
        let jumpy = |t: i64| if (t / 60) % 2 == 0 { 100.0 } else { 300.0 };
        let day = 1440 + 30;
        let mut teacher = spec().runner();
        let r = drive(&mut teacher, 10, day, jumpy);
        assert!(
            r.cause.reason.starts_with("forecast has been wrong"),
            "{}",
            r.cause.reason
        );
        let learned = teacher.learned().unwrap();
        // (The history handed over is a steady one, on which a forecast is right: only
        // the relearned record can say "wrong".)
        let steady = |_| 200.0;
        let past = crate::metrics::cpu_summaries(0..day, steady);
        let mut taught = spec().runner();
        taught.remember(&past);
        assert!(taught.relearn(&learned));
        let r = drive_from(&mut taught, 10, day, day + 5, steady);
        assert!(
            r.cause.reason.starts_with("forecast has been wrong"),
            "{}",
            r.cause.reason
        );

        let mut untaught = spec().runner();
        untaught.remember(&past);
        let r = drive_from(&mut untaught, 10, day, day + 5, steady);
        assert!(
            r.cause.reason.starts_with("forecast:"),
            "{}",
            r.cause.reason
        );

        // `max_error` only reads the error: it may change; the forecast's period may not.
        let lenient = PredictivePolicy {
            max_error: 0.5,
            ..spec()
        };
        assert!(lenient.runner().relearn(&learned));
        let slower = PredictivePolicy {
            evaluation_period: Duration::from_secs(120),
            ..spec()
        };
        assert!(!slower.runner().relearn(&learned));
    }

    #[test]
    fn a_forecast_alone_never_scales_in() {
        let mut p = spec().runner();
        // Load fell for the last days at 08:00, but today it holds at 300 at 07:58:
        // the forecast says 100, the present says 300 → 6, not 2.
        let load = |t: i64| {
            let day = t / 86_400;
            if day < 2 && ((t / 3600) % 24) >= 8 {
                100.0
            } else {
                300.0
            }
        };
        let r = drive(&mut p, 6, 2 * 1440 + 8 * 60 - 2, load);
        assert_eq!(r.desired, None, "{}", r.cause.reason);
    }
}
