//! The memory of the forecasting policies: a bounded history of the group's *load* (the
//! metric times the instances it is averaged over, so that it does not change when the
//! group does), a short-term trend, daily and weekly seasonal ratios, and a record of how
//! wrong past forecasts were.
//!
//! Everything is kept inside the policy object (the metric window only holds a minute or
//! so): the history is aggregated into fixed buckets (5 minutes by default), so two weeks
//! take about 4,000 numbers whatever the sampling cadence.

use crate::metrics::{LoadSummary, Metric, MetricWindow};
use crate::time::Timestamp;
use serde::Deserialize;
use std::collections::VecDeque;
use std::time::Duration;

const DAY_MS: i64 = 86_400_000;
const WEEK_MS: i64 = 7 * DAY_MS;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    sum: f64,
    count: u32,
    max: f64,
}

impl Bucket {
    fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / f64::from(self.count))
    }
}

/// A bounded history of the group's load.
#[derive(Debug, Clone)]
pub struct LoadHistory {
    metric: Metric,
    bucket_ms: i64,
    keep_buckets: usize,
    /// Index (time / bucket) of `buckets[0]`.
    first: i64,
    buckets: VecDeque<Bucket>,
    /// Recent raw points `(t, load)`, for the trend and for scoring forecasts.
    recent: VecDeque<(i64, f64)>,
    recent_ms: i64,
    last_seen: Option<Timestamp>,
    started: Option<Timestamp>,
}

impl LoadHistory {
    /// An empty history of `metric`, in buckets of `bucket`, keeping raw points for
    /// `recent` (at least the trend window and the forecast horizon).
    pub fn new(metric: Metric, bucket: Duration, recent: Duration) -> Self {
        let bucket_ms = (bucket.as_millis() as i64).max(1000);
        LoadHistory {
            metric,
            bucket_ms,
            // Two weeks and a day: two weekly lags and the bucket being filled.
            keep_buckets: ((2 * WEEK_MS + DAY_MS) / bucket_ms) as usize + 2,
            first: 0,
            buckets: VecDeque::new(),
            recent: VecDeque::new(),
            recent_ms: recent.as_millis() as i64,
            last_seen: None,
            started: None,
        }
    }

    /// Takes the window's samples newer than the last one seen.
    pub fn ingest(&mut self, window: &MetricWindow) {
        let last = self.last_seen;
        let fresh: Vec<(Timestamp, f64)> = window
            .samples()
            .filter(|s| s.metric == self.metric && last.is_none_or(|l| s.at > l))
            .map(|s| (s.at, s.value * f64::from(s.instances)))
            .collect();
        for (at, load) in fresh {
            self.push(at, load);
        }
    }

    /// Adds one load observation.
    pub fn push(&mut self, at: Timestamp, load: f64) {
        self.add(at, load, load);
    }

    /// Takes the summaries of `metric` kept from before this policy existed (oldest first;
    /// any not newer than the last load seen are skipped).
    pub fn remember(&mut self, past: &[LoadSummary]) {
        let metric = self.metric;
        for p in past.iter().filter(|p| p.metric == metric) {
            self.add(p.at, p.mean, p.max);
        }
    }

    fn add(&mut self, at: Timestamp, load: f64, max: f64) {
        if !load.is_finite() || !max.is_finite() || self.last_seen.is_some_and(|l| at <= l) {
            return;
        }
        self.last_seen = Some(at);
        self.started.get_or_insert(at);
        let t = at.as_millis();
        let idx = t.div_euclid(self.bucket_ms);
        if self.buckets.is_empty() {
            self.first = idx;
        }
        let end = self.first + self.buckets.len() as i64;
        if idx >= end {
            let missing = (idx - end + 1).min(self.keep_buckets as i64 + 1);
            if idx - end + 1 > missing {
                // A gap longer than the whole history: start over.
                self.buckets.clear();
                self.first = idx;
                self.buckets.push_back(Bucket::default());
            } else {
                for _ in 0..missing {
                    self.buckets.push_back(Bucket::default());
                }
            }
        }
        while self.buckets.len() > self.keep_buckets {
            self.buckets.pop_front();
            self.first += 1;
        }
        if let Some(b) = self.buckets.get_mut((idx - self.first) as usize) {
            b.sum += load;
            b.max = if b.count == 0 { max } else { b.max.max(max) };
            b.count += 1;
        }
        self.recent.push_back((t, load));
        while self
            .recent
            .front()
            .is_some_and(|&(s, _)| s < t - self.recent_ms)
        {
            self.recent.pop_front();
        }
    }

    /// How long the history reaches back.
    pub fn span(&self, now: Timestamp) -> Duration {
        self.started.map_or(Duration::ZERO, |s| now.since(s))
    }

    /// The mean load over `(now - period, now]`.
    pub fn level(&self, now: Timestamp, period: Duration) -> Option<f64> {
        let from = now.as_millis() - period.as_millis() as i64;
        let (sum, n) = self
            .recent
            .iter()
            .filter(|&&(t, _)| t > from && t <= now.as_millis())
            .fold((0.0, 0u32), |(s, n), &(_, v)| (s + v, n + 1));
        (n > 0).then(|| sum / f64::from(n))
    }

    /// The loads seen in `(from, to]`.
    pub fn between(&self, from: Timestamp, to: Timestamp) -> impl Iterator<Item = f64> + '_ {
        self.recent
            .iter()
            .filter(move |&&(t, _)| t > from.as_millis() && t <= to.as_millis())
            .map(|&(_, v)| v)
    }

    /// The largest load seen in `(from, to]`.
    pub fn max_between(&self, from: Timestamp, to: Timestamp) -> Option<f64> {
        self.recent
            .iter()
            .filter(|&&(t, _)| t > from.as_millis() && t <= to.as_millis())
            .map(|&(_, v)| v)
            .reduce(f64::max)
    }

    /// Least-squares slope of the load over `(now - period, now]`, in load per second;
    /// `None` with fewer than three points.
    pub fn slope(&self, now: Timestamp, period: Duration) -> Option<f64> {
        let from = now.as_millis() - period.as_millis() as i64;
        let pts: Vec<(f64, f64)> = self
            .recent
            .iter()
            .filter(|&&(t, _)| t > from && t <= now.as_millis())
            .map(|&(t, v)| ((t - from) as f64 / 1000.0, v))
            .collect();
        if pts.len() < 3 {
            return None;
        }
        let n = pts.len() as f64;
        let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
        let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
        let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
        let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        (sxx > 0.0).then(|| sxy / sxx)
    }

    fn bucket(&self, idx: i64) -> Option<&Bucket> {
        if idx < self.first {
            return None;
        }
        self.buckets
            .get((idx - self.first) as usize)
            .filter(|b| b.count > 0)
    }

    /// The seasonal forecast of the peak load over `(now, now + horizon]`: the level now
    /// times how much the load rose over the same stretch one day (up to three days) and
    /// one week (up to two weeks) earlier. `None` until a day of history exists.
    pub fn seasonal_peak(&self, now: Timestamp, horizon: Duration, level: f64) -> Option<f64> {
        let now_idx = now.as_millis().div_euclid(self.bucket_ms);
        // The last complete bucket is the reference for "now" in the past season.
        let reference = now_idx - 1;
        let end = (now.as_millis() + horizon.as_millis() as i64).div_euclid(self.bucket_ms);
        let mut ratios = Vec::new();
        let lags = [DAY_MS, 2 * DAY_MS, 3 * DAY_MS, WEEK_MS, 2 * WEEK_MS];
        for lag in lags {
            let lag_b = lag / self.bucket_ms;
            let Some(base) = self.bucket(reference - lag_b).and_then(Bucket::mean) else {
                continue;
            };
            let peak = (reference + 1 - lag_b..=end - lag_b)
                .filter_map(|i| self.bucket(i).map(|b| b.max))
                .reduce(f64::max);
            if let Some(peak) = peak
                && base > 0.0
            {
                ratios.push(peak / base);
            }
        }
        if ratios.is_empty() {
            return None;
        }
        let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
        Some(level * mean)
    }
}

/// How wrong past forecasts were. Each forecast of the peak over a horizon is scored
/// when the horizon has passed, against every load observed in it. Two measures are kept,
/// both with exponential forgetting:
///
/// - the mean of `|ln(actual peak / forecast)|`: is the forecast any good at all?
/// - histograms of the error in *square-root units*, `z = (actual - forecast) /
///   sqrt(forecast)`, with the load counted in instances (`unit` = one instance's load).
///   Counting noise — requests arriving at random — grows like the square root of the
///   load, so `z` spreads alike at night and at peak. Real loads are burstier at some
///   levels than at others, so one histogram is kept per load class (forecasts of 1-2,
///   2-4, 4-8, … instances) besides the pooled one; a class's own quantile is used once
///   it has [`CLASS_MIN`] recent samples.
#[derive(Debug, Clone)]
pub struct ForecastScore {
    pending: VecDeque<(Timestamp, Timestamp, f64)>,
    pooled: Histogram,
    classes: Vec<Histogram>,
    /// The weight of the newest sample: it grows by `1 / decay` per sample, which is
    /// exponential forgetting without touching every bin.
    weight: f64,
    decay: f64,
    unit: f64,
    abs_log_error: Option<f64>,
    scored: u64,
}

#[derive(Debug, Clone)]
struct Histogram {
    bins: Vec<f64>,
    total: f64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            bins: vec![0.0; BINS],
            total: 0.0,
        }
    }

    fn add(&mut self, bin: usize, w: f64) {
        self.bins[bin] += w;
        self.total += w;
    }

    fn rescale(&mut self, by: f64) {
        for b in &mut self.bins {
            *b /= by;
        }
        self.total /= by;
    }

    fn quantile(&self, q: f64) -> Option<f64> {
        if self.total <= 0.0 {
            return None;
        }
        let want = q.clamp(0.0, 1.0) * self.total;
        let mut acc = 0.0;
        for (i, b) in self.bins.iter().enumerate() {
            acc += b;
            if acc >= want {
                return Some((i + 1) as f64 / BINS as f64 * 2.0 * Z_SPAN - Z_SPAN);
            }
        }
        Some(Z_SPAN)
    }
}

const BINS: usize = 400;
/// Bins cover z in [-Z_SPAN, Z_SPAN].
const Z_SPAN: f64 = 10.0;
/// Load classes: forecasts of [2^k, 2^(k+1)) instances, the last one open.
const CLASSES: usize = 16;
/// Recent samples a class needs before its own quantile is trusted over the pooled one.
pub const CLASS_MIN: f64 = 100.0;

fn class_of(instances: f64) -> usize {
    (instances.max(1.0).log2().floor() as usize).min(CLASSES - 1)
}

impl ForecastScore {
    /// An empty score; `memory` is roughly how many recent error samples weigh in,
    /// `unit` the load of one instance.
    pub fn new(memory: f64, unit: f64) -> Self {
        ForecastScore {
            pending: VecDeque::new(),
            pooled: Histogram::new(),
            classes: vec![Histogram::new(); CLASSES],
            weight: 1.0,
            decay: 1.0 - 1.0 / memory.max(1.0),
            unit: if unit > 0.0 { unit } else { 1.0 },
            abs_log_error: None,
            scored: 0,
        }
    }

    /// Remembers a forecast of the peak over `(made, until]`.
    pub fn record(&mut self, made: Timestamp, until: Timestamp, forecast: f64) {
        if forecast.is_finite() && forecast >= 0.0 {
            self.pending.push_back((made, until, forecast));
        }
        // A controller that stopped evaluating for long leaves stale forecasts behind.
        while self.pending.len() > 10_000 {
            self.pending.pop_front();
        }
    }

    /// Scores every forecast whose horizon has passed by `now`: every load observed in
    /// `(made, until]` is one error sample, so a quantile is a share of *time*, the unit
    /// under-provisioning is measured in.
    pub fn settle(&mut self, history: &LoadHistory, now: Timestamp) {
        while let Some(&(made, until, forecast)) = self.pending.front() {
            if until > now {
                break;
            }
            self.pending.pop_front();
            let f = forecast / self.unit;
            let sd = f.max(1.0).sqrt();
            let class = class_of(f);
            let mut any = false;
            for actual in history.between(made, until) {
                any = true;
                let z = (actual / self.unit - f) / sd;
                let bin = (((z + Z_SPAN) / (2.0 * Z_SPAN) * BINS as f64).floor() as i64)
                    .clamp(0, BINS as i64 - 1) as usize;
                self.weight /= self.decay;
                if self.weight > 1e200 {
                    self.pooled.rescale(self.weight);
                    for c in &mut self.classes {
                        c.rescale(self.weight);
                    }
                    self.weight = 1.0;
                }
                self.pooled.add(bin, self.weight);
                self.classes[class].add(bin, self.weight);
            }
            if !any {
                continue;
            }
            if let Some(actual) = history.max_between(made, until) {
                let e = (actual.max(1e-9) / forecast.max(1e-9)).ln().abs().min(5.0);
                let d = self.decay;
                self.abs_log_error = Some(match self.abs_log_error {
                    None => e,
                    Some(m) => m * d + e * (1.0 - d),
                });
            }
            self.scored += 1;
        }
    }

    /// How many forecasts have been scored.
    pub fn scored(&self) -> u64 {
        self.scored
    }

    /// The mean absolute relative error of recent forecasts (as `|ln(actual/forecast)|`).
    pub fn error(&self) -> Option<f64> {
        self.abs_log_error
    }

    /// The pooled `q` quantile of `z` (upper edge of its bin), `None` when nothing was
    /// scored.
    pub fn z_quantile(&self, q: f64) -> Option<f64> {
        self.pooled.quantile(q)
    }

    /// What the score has learned — the error histograms, the mean error and the count of
    /// forecasts scored, not the forecasts still pending (scored within minutes) — tagged
    /// with the `basis` it was learned on (whatever makes its errors this policy's).
    pub fn learned(&self, basis: serde_json::Value) -> serde_json::Value {
        // Weights relative to the newest sample's, so the restored score starts at 1.
        let sparse = |h: &Histogram| -> Vec<(usize, f64)> {
            (h.bins.iter().enumerate())
                .filter(|(_, w)| **w > 0.0)
                .map(|(i, w)| (i, w / self.weight))
                .collect()
        };
        let mut histograms = vec![sparse(&self.pooled)];
        histograms.extend(self.classes.iter().map(sparse));
        serde_json::json!({
            "basis": basis,
            "scored": self.scored,
            "abs_log_error": self.abs_log_error,
            "histograms": histograms,
        })
    }

    /// Takes back what [`ForecastScore::learned`] gave, if it was learned on `basis`; a
    /// state on another basis or unreadable changes nothing. Returns whether it was taken.
    pub fn relearn(&mut self, basis: serde_json::Value, state: &serde_json::Value) -> bool {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Learned {
            basis: serde_json::Value,
            scored: u64,
            abs_log_error: Option<f64>,
            histograms: Vec<Vec<(usize, f64)>>,
        }
        let Ok(l) = Learned::deserialize(state) else {
            return false;
        };
        let sound = |w: f64| w.is_finite() && w >= 0.0;
        if l.basis != basis
            || l.histograms.len() != CLASSES + 1
            || !l.abs_log_error.is_none_or(sound)
            || !(l.histograms.iter().flatten()).all(|&(bin, w)| bin < BINS && sound(w))
        {
            return false;
        }
        let mut histograms = l.histograms.iter().map(|bins| {
            let mut h = Histogram::new();
            for &(bin, w) in bins {
                h.add(bin, w);
            }
            h
        });
        self.pooled = histograms.next().unwrap_or_else(Histogram::new);
        self.classes = histograms.collect();
        self.weight = 1.0;
        self.abs_log_error = l.abs_log_error;
        self.scored = l.scored;
        true
    }

    /// The load, in instances, that a forecast (in load units) reaches at the `q`
    /// quantile of past errors at its level: `f + z_q * sqrt(f)`.
    pub fn upper(&self, forecast: f64, q: f64) -> Option<f64> {
        let f = forecast / self.unit;
        let class = &self.classes[class_of(f)];
        let z = if class.total / self.weight >= CLASS_MIN {
            class.quantile(q)?
        } else {
            self.pooled.quantile(q)?
        };
        Some(f + z * f.max(1.0).sqrt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_level_and_slope() {
        let mut h = LoadHistory::new(
            Metric::Cpu,
            Duration::from_secs(300),
            Duration::from_secs(600),
        );
        for i in 0..=20 {
            h.push(Timestamp::from_secs(i * 15), 100.0 + i as f64 * 15.0);
        }
        let now = Timestamp::from_secs(300);
        // One load unit per second.
        let s = h.slope(now, Duration::from_secs(300)).unwrap();
        assert!((s - 1.0).abs() < 1e-9, "{s}");
        assert_eq!(
            h.level(now, Duration::from_secs(20)),
            Some((385.0 + 400.0) / 2.0)
        );
        assert_eq!(
            h.max_between(Timestamp::from_secs(0), Timestamp::from_secs(150)),
            Some(250.0)
        );
    }

    #[test]
    fn daily_season_predicts_the_morning_rise() {
        let mut h = LoadHistory::new(
            Metric::Cpu,
            Duration::from_secs(300),
            Duration::from_secs(600),
        );
        // Two days: 100 at night, 300 from 08:00 to 20:00.
        for m in 0..(2 * 1440) {
            let hour = (m / 60) % 24;
            let load = if (8..20).contains(&hour) {
                300.0
            } else {
                100.0
            };
            h.push(Timestamp::from_secs(m * 60), load);
        }
        // Day 3, 07:50, level 100: over the next 20 minutes the load triples.
        let now = Timestamp::from_secs(2 * 86_400 + 7 * 3600 + 50 * 60);
        let p = h
            .seasonal_peak(now, Duration::from_secs(1200), 100.0)
            .unwrap();
        assert!((p - 300.0).abs() < 1e-9, "{p}");
    }

    #[test]
    fn score_quantiles() {
        let mut h = LoadHistory::new(
            Metric::Cpu,
            Duration::from_secs(300),
            Duration::from_secs(600),
        );
        // One instance carries 10: forecasts of 10 instances, actual 11 → z = 1 / sqrt(10).
        let mut s = ForecastScore::new(1000.0, 10.0);
        for i in 0..100 {
            h.push(Timestamp::from_secs(i * 10), 110.0);
            s.record(
                Timestamp::from_secs(i * 10),
                Timestamp::from_secs(i * 10 + 10),
                100.0,
            );
        }
        s.settle(&h, Timestamp::from_secs(2000));
        let z = s.z_quantile(0.99).unwrap();
        let want = 1.0 / 10f64.sqrt();
        assert!(z >= want && z < want + 0.06, "{z}");
        let up = s.upper(100.0, 0.99).unwrap();
        assert!((11.0..11.2).contains(&up), "{up}");
        assert!((s.error().unwrap() - 1.1f64.ln()).abs() < 1e-9);
    }
}
