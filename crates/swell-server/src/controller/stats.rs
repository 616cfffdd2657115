//! The controller's own counters: how long the workers' passes take, how many scaling
//! decisions they make, how many calls they make to each provider. Lock-free, always
//! on; read by `swell bench controller` and the observer test.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Buckets of the tick histogram: bucket `i` holds durations up to
/// `10 µs × 1.1^i`, so percentiles are within 10 %; the last one holds the rest.
const BUCKETS: usize = 180;

fn bucket_bound(i: usize) -> Duration {
    Duration::from_secs_f64(10e-6 * 1.1f64.powi(i as i32))
}

/// A histogram of durations with a fixed memory, whatever the number of samples.
#[derive(Debug)]
pub struct DurationHistogram {
    counts: Vec<AtomicU64>,
    sum_us: AtomicU64,
}

impl Default for DurationHistogram {
    fn default() -> Self {
        DurationHistogram {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl DurationHistogram {
    /// Counts one duration.
    pub fn record(&self, d: Duration) {
        let secs = d.as_secs_f64().max(10e-6);
        let i = ((secs / 10e-6).ln() / 1.1f64.ln()).ceil().max(0.0) as usize;
        self.counts[i.min(BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// How many durations were counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// The sum of the durations counted.
    pub fn sum(&self) -> Duration {
        Duration::from_micros(self.sum_us.load(Ordering::Relaxed))
    }

    /// The duration below which a share `q` (0..=1) of the counted ones fall (the
    /// upper bound of its bucket); zero when none was counted.
    pub fn quantile(&self, q: f64) -> Duration {
        let total = self.count();
        if total == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c.load(Ordering::Relaxed);
            if seen >= rank {
                return bucket_bound(i);
            }
        }
        bucket_bound(BUCKETS - 1)
    }

    /// Forgets every duration counted (a benchmark's warm-up).
    pub fn reset(&self) {
        for c in &self.counts {
            c.store(0, Ordering::Relaxed);
        }
        self.sum_us.store(0, Ordering::Relaxed);
    }
}

/// The controller's counters (see the [module docs](self)).
#[derive(Debug, Default)]
pub struct ControllerStats {
    /// How long each pass of a group worker took (one timer tick, reload or input).
    pub ticks: DurationHistogram,
    /// Scaling decisions stored (desired capacity changed by a policy).
    pub decisions: AtomicU64,
    /// Calls to each provider, by provider name and call (`list`, `metrics`, `create`,
    /// `delete`, `capacity`).
    provider_calls: Mutex<HashMap<(String, &'static str), u64>>,
}

impl ControllerStats {
    /// Counts one call to a provider.
    pub fn provider_call(&self, provider: &str, call: &'static str) {
        if let Ok(mut calls) = self.provider_calls.lock() {
            *calls.entry((provider.to_string(), call)).or_insert(0) += 1;
        }
    }

    /// The calls made to the providers so far, by provider and call, sorted.
    pub fn provider_calls(&self) -> Vec<(String, &'static str, u64)> {
        let mut out: Vec<(String, &'static str, u64)> = self
            .provider_calls
            .lock()
            .map(|c| c.iter().map(|((p, k), n)| (p.clone(), *k, *n)).collect())
            .unwrap_or_default();
        out.sort();
        out
    }

    /// Every call made to the providers so far.
    pub fn provider_calls_total(&self) -> u64 {
        self.provider_calls().iter().map(|(_, _, n)| n).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_a_bucket() {
        let h = DurationHistogram::default();
        assert_eq!(h.quantile(0.99), Duration::ZERO);
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        assert_eq!(h.count(), 100);
        let p50 = h.quantile(0.5).as_secs_f64() * 1000.0;
        let p99 = h.quantile(0.99).as_secs_f64() * 1000.0;
        assert!((50.0..=55.0).contains(&p50), "{p50}");
        assert!((99.0..=109.0).contains(&p99), "{p99}");
        assert_eq!(h.sum(), Duration::from_millis(5050));
        h.reset();
        assert_eq!(h.count(), 0);
    }

    #[test]
    fn provider_calls_are_counted_by_provider_and_call() {
        let s = ControllerStats::default();
        s.provider_call("process", "list");
        s.provider_call("process", "list");
        s.provider_call("docker", "metrics");
        assert_eq!(
            s.provider_calls(),
            vec![
                ("docker".to_string(), "metrics", 1),
                ("process".to_string(), "list", 2)
            ]
        );
        assert_eq!(s.provider_calls_total(), 3);
    }
}
