//! Metric windows: the group-level samples a policy reads.

use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

/// A metric a policy can scale on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// CPU utilisation, percent of one instance's allotment, averaged over the
    /// group's counted instances. In the simulator: load / ready capacity × 100.
    #[default]
    Cpu,
    /// Resident memory per instance, MiB, averaged over counted instances.
    Memory,
    /// Requests per second through the group's load balancer.
    RequestRate,
    /// Requests per second per running instance (AWS's request count per target).
    RequestRatePerInstance,
    /// Requests in flight through the load balancer.
    InFlight,
    /// 99th percentile latency to response headers, milliseconds.
    LatencyP99,
    /// Share of requests answered with a 5xx, percent.
    ErrorRate,
    /// CPU steal time, percent: how long a VM's virtual CPUs waited for the hypervisor
    /// (seed 1), averaged over the group's counted instances like `cpu`. Read by the
    /// `ssh` metric source from `top`, or pushed by an agent.
    Steal,
}

impl Metric {
    /// The snake_case name used in config, events and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Cpu => "cpu",
            Metric::Memory => "memory",
            Metric::RequestRate => "request_rate",
            Metric::RequestRatePerInstance => "request_rate_per_instance",
            Metric::InFlight => "in_flight",
            Metric::LatencyP99 => "latency_p99",
            Metric::ErrorRate => "error_rate",
            Metric::Steal => "steal",
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One group-level observation: the average of `metric` over the instances that count
/// (running and out of warmup) at `at`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricSample {
    /// When it was measured.
    pub at: Timestamp,
    /// What was measured.
    pub metric: Metric,
    /// The group average.
    pub value: f64,
    /// How many instances the average is over.
    pub instances: u32,
}

/// The recent samples of a group, oldest first, pruned to `retention`.
#[derive(Debug, Clone)]
pub struct MetricWindow {
    samples: VecDeque<MetricSample>,
    retention: Duration,
}

impl MetricWindow {
    /// An empty window keeping samples for `retention`.
    pub fn new(retention: Duration) -> Self {
        MetricWindow {
            samples: VecDeque::new(),
            retention,
        }
    }

    /// Adds a sample (samples older than the newest by more than `retention` drop out).
    /// Samples must come in time order; an out-of-order one is ignored.
    pub fn push(&mut self, sample: MetricSample) {
        if !sample.value.is_finite() {
            return;
        }
        if let Some(last) = self.samples.back()
            && sample.at < last.at
        {
            return;
        }
        self.samples.push_back(sample);
        let oldest = sample.at.sub(self.retention);
        while self.samples.front().is_some_and(|s| s.at < oldest) {
            self.samples.pop_front();
        }
    }

    /// Drops every sample (e.g. after the group's membership changed entirely).
    pub fn clear(&mut self) {
        self.samples.clear();
    }

    /// All samples, oldest first.
    pub fn samples(&self) -> impl DoubleEndedIterator<Item = &MetricSample> {
        self.samples.iter()
    }

    /// The samples taken after `from`, oldest first. Found by a binary search (the
    /// samples are in time order), so a short look back over a long window does not
    /// walk all of it: a window holds an hour of samples, and a group reads its last
    /// few seconds at every collection and evaluation.
    pub fn after(&self, from: Timestamp) -> impl DoubleEndedIterator<Item = &MetricSample> {
        let start = self.samples.partition_point(|s| s.at <= from);
        self.samples.range(start..)
    }

    /// The samples of `metric` taken in `(now - period, now]`.
    pub fn over(&self, metric: Metric, now: Timestamp, period: Duration) -> Vec<f64> {
        self.after(now.sub(period))
            .filter(|s| s.metric == metric && s.at <= now)
            .map(|s| s.value)
            .collect()
    }

    /// Mean of `metric` over `(now - period, now]`; `None` if there is no sample.
    pub fn average(&self, metric: Metric, now: Timestamp, period: Duration) -> Option<f64> {
        let (sum, n) = self
            .after(now.sub(period))
            .filter(|s| s.metric == metric && s.at <= now)
            .fold((0.0, 0u32), |(sum, n), s| (sum + s.value, n + 1));
        (n > 0).then(|| sum / f64::from(n))
    }

    /// The newest sample of `metric` at or before `now`.
    pub fn latest(&self, metric: Metric, now: Timestamp) -> Option<MetricSample> {
        self.samples
            .iter()
            .rev()
            .find(|s| s.metric == metric && s.at <= now)
            .copied()
    }
}

/// One period (five minutes, for the controller) of a group's *load* of one metric — the
/// group average times the instances it is over, which does not change when the group
/// does. The controller keeps these in its store so that forecasting policies remember
/// the days and weeks before a restart or an edit of the group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadSummary {
    /// The last sample's time in the period.
    pub at: Timestamp,
    /// The metric the load is of.
    pub metric: Metric,
    /// The mean load over the period's samples.
    pub mean: f64,
    /// The largest load among them.
    pub max: f64,
}

/// Folds a group's samples into one [`LoadSummary`] per metric and `period`.
#[derive(Debug, Clone)]
pub struct LoadSummarizer {
    period_ms: i64,
    /// The period being filled, and per metric (sum, count, max, last sample's time).
    current: Option<i64>,
    open: Vec<(Metric, f64, u32, f64, Timestamp)>,
}

impl LoadSummarizer {
    /// A summarizer closing a summary every `period` (at least a second).
    pub fn new(period: Duration) -> Self {
        LoadSummarizer {
            period_ms: (period.as_millis() as i64).max(1000),
            current: None,
            open: Vec::new(),
        }
    }

    /// Adds a sample; returns the summaries of the period it closed, if it starts a new
    /// one. Samples must come in time order (an older period's sample is dropped).
    pub fn push(&mut self, sample: &MetricSample) -> Vec<LoadSummary> {
        let load = sample.value * f64::from(sample.instances);
        if !load.is_finite() {
            return Vec::new();
        }
        let period = sample.at.as_millis().div_euclid(self.period_ms);
        let closed = match self.current {
            Some(c) if period < c => return Vec::new(),
            Some(c) if period == c => Vec::new(),
            _ => self.flush(),
        };
        self.current = Some(period);
        match self.open.iter_mut().find(|o| o.0 == sample.metric) {
            Some(o) => {
                o.1 += load;
                o.2 += 1;
                o.3 = o.3.max(load);
                o.4 = sample.at;
            }
            None => self.open.push((sample.metric, load, 1, load, sample.at)),
        }
        closed
    }

    /// Closes the period being filled (e.g. before the group's worker stops).
    pub fn flush(&mut self) -> Vec<LoadSummary> {
        self.current = None;
        self.open
            .drain(..)
            .map(|(metric, sum, count, max, at)| LoadSummary {
                at,
                metric,
                mean: sum / f64::from(count),
                max,
            })
            .collect()
    }
}

/// One CPU summary per minute `m` in `minutes` (stamped 30 s into it) of `load(m × 60)`:
/// the history a controller would have stored, for tests of the forecasting policies.
#[cfg(test)]
pub(crate) fn cpu_summaries(
    minutes: std::ops::Range<i64>,
    load: impl Fn(i64) -> f64,
) -> Vec<LoadSummary> {
    minutes
        .map(|m| LoadSummary {
            at: Timestamp::from_secs(m * 60 + 30),
            metric: Metric::Cpu,
            mean: load(m * 60),
            max: load(m * 60),
        })
        .collect()
}

/// One instance's reading, as the collector hands it to [`group_average`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InstanceReading {
    /// The reading.
    pub value: f64,
    /// When the instance started (its warmup runs from here).
    pub started_at: Timestamp,
}

/// The group average over the readings of instances out of warmup at `now`; `None` when
/// every instance is still warming up (or there are none), so policies see no sample
/// rather than a misleading zero.
pub fn group_average(
    readings: &[InstanceReading],
    warmup: Duration,
    now: Timestamp,
) -> Option<(f64, u32)> {
    let counted: Vec<f64> = readings
        .iter()
        .filter(|r| now.since(r.started_at) >= warmup && r.value.is_finite())
        .map(|r| r.value)
        .collect();
    if counted.is_empty() {
        None
    } else {
        Some((
            counted.iter().sum::<f64>() / counted.len() as f64,
            counted.len() as u32,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(at: i64, v: f64) -> MetricSample {
        MetricSample {
            at: Timestamp::from_secs(at),
            metric: Metric::Cpu,
            value: v,
            instances: 1,
        }
    }

    #[test]
    fn average_covers_half_open_period() {
        let mut w = MetricWindow::new(Duration::from_secs(600));
        for (t, v) in [(0, 100.0), (10, 10.0), (20, 20.0), (30, 30.0)] {
            w.push(s(t, v));
        }
        let now = Timestamp::from_secs(30);
        assert_eq!(
            w.average(Metric::Cpu, now, Duration::from_secs(20)),
            Some(25.0)
        );
        assert_eq!(
            w.average(Metric::Memory, now, Duration::from_secs(20)),
            None
        );
        assert_eq!(
            w.average(
                Metric::Cpu,
                Timestamp::from_secs(100),
                Duration::from_secs(5)
            ),
            None
        );
    }

    #[test]
    fn after_is_the_samples_strictly_later() {
        let mut w = MetricWindow::new(Duration::from_secs(600));
        for (t, v) in [(10, 1.0), (20, 2.0), (20, 3.0), (30, 4.0)] {
            w.push(s(t, v));
        }
        let check = |from: i64, expected: &[f64]| {
            let got: Vec<f64> = w
                .after(Timestamp::from_secs(from))
                .map(|s| s.value)
                .collect();
            assert_eq!(got, expected, "after {from}");
        };
        check(0, &[1.0, 2.0, 3.0, 4.0]);
        check(10, &[2.0, 3.0, 4.0]);
        check(19, &[2.0, 3.0, 4.0]);
        check(20, &[4.0]);
        check(30, &[]);
        check(99, &[]);
    }

    #[test]
    fn retention_prunes_and_order_is_kept() {
        let mut w = MetricWindow::new(Duration::from_secs(10));
        w.push(s(0, 1.0));
        w.push(s(20, 2.0));
        w.push(s(5, 3.0));
        w.push(s(21, f64::NAN));
        assert_eq!(w.samples().count(), 1);
    }

    #[test]
    fn warming_instances_do_not_count() {
        let r = |v, t| InstanceReading {
            value: v,
            started_at: Timestamp::from_secs(t),
        };
        let now = Timestamp::from_secs(100);
        let warmup = Duration::from_secs(60);
        assert_eq!(
            group_average(&[r(80.0, 0), r(0.0, 90)], warmup, now),
            Some((80.0, 1))
        );
        assert_eq!(group_average(&[r(80.0, 50), r(0.0, 90)], warmup, now), None);
        assert_eq!(group_average(&[], warmup, now), None);
    }

    /// Samples fold into one summary per metric and minute, of the load (value ×
    /// instances), closed by the first sample of the next minute.
    #[test]
    fn load_summaries_per_minute() {
        let s = |t: i64, metric, value, instances| MetricSample {
            at: Timestamp::from_secs(t),
            metric,
            value,
            instances,
        };
        let mut sum = LoadSummarizer::new(Duration::from_secs(60));
        assert!(sum.push(&s(0, Metric::Cpu, 50.0, 2)).is_empty()); // load 100
        assert!(sum.push(&s(20, Metric::Cpu, 80.0, 4)).is_empty()); // 320
        assert!(sum.push(&s(20, Metric::Memory, 10.0, 4)).is_empty()); // 40
        assert!(sum.push(&s(40, Metric::Cpu, 30.0, 4)).is_empty()); // 120
        let closed = sum.push(&s(65, Metric::Cpu, 10.0, 1));
        assert_eq!(
            closed,
            vec![
                LoadSummary {
                    at: Timestamp::from_secs(40),
                    metric: Metric::Cpu,
                    mean: 180.0,
                    max: 320.0
                },
                LoadSummary {
                    at: Timestamp::from_secs(20),
                    metric: Metric::Memory,
                    mean: 40.0,
                    max: 40.0
                },
            ]
        );
        // A late sample of a closed minute is dropped; flush closes the open one.
        assert!(sum.push(&s(50, Metric::Cpu, 99.0, 9)).is_empty());
        assert_eq!(
            sum.flush(),
            vec![LoadSummary {
                at: Timestamp::from_secs(65),
                metric: Metric::Cpu,
                mean: 10.0,
                max: 10.0
            }]
        );
        assert!(sum.flush().is_empty());
    }
}
