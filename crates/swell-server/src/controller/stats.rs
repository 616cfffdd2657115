//! The controller's own counters: how long the workers' passes take, how many scaling
//! decisions they make (per group), how many calls they make to each provider and how
//! many of those failed. Always on, cheap to count (an atomic or a short lock where the
//! call happens); read by `swell bench controller`, the observer test and the Prometheus
//! exposition (`crate::exposition`), which renders them at each scrape.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use swell_core::TenantId;

/// Buckets of the tick histogram: bucket `i` holds durations up to
/// `10 µs × 1.1^i`, so percentiles are within 10 %; the last one holds the rest.
const BUCKETS: usize = 180;

fn bucket_bound(i: usize) -> Duration {
    Duration::from_secs_f64(10e-6 * 1.1f64.powi(i as i32))
}

/// Upper bounds (seconds) of the pass-duration buckets Prometheus sees: few, fixed,
/// so that `histogram_quantile` over many scrapes stays cheap (the fine buckets above
/// serve the benchmark's percentiles).
pub const PASS_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram of durations with a fixed memory, whatever the number of samples.
#[derive(Debug)]
pub struct DurationHistogram {
    counts: Vec<AtomicU64>,
    /// The same durations in [`PASS_BUCKETS`] (the last slot: above the last bound).
    coarse: Vec<AtomicU64>,
    sum_us: AtomicU64,
}

impl Default for DurationHistogram {
    fn default() -> Self {
        DurationHistogram {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            coarse: (0..=PASS_BUCKETS.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
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
        let secs = d.as_secs_f64();
        let coarse = PASS_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(PASS_BUCKETS.len());
        self.coarse[coarse].fetch_add(1, Ordering::Relaxed);
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

    /// For each of [`PASS_BUCKETS`], how many durations were at most that long
    /// (cumulative, as Prometheus' `_bucket{le}` series).
    pub fn cumulative_buckets(&self) -> Vec<(f64, u64)> {
        let mut seen = 0;
        PASS_BUCKETS
            .iter()
            .zip(&self.coarse)
            .map(|(bound, c)| {
                seen += c.load(Ordering::Relaxed);
                (*bound, seen)
            })
            .collect()
    }

    /// Forgets every duration counted (a benchmark's warm-up).
    pub fn reset(&self) {
        for c in self.counts.iter().chain(&self.coarse) {
            c.store(0, Ordering::Relaxed);
        }
        self.sum_us.store(0, Ordering::Relaxed);
    }
}

/// What woke a worker for a pass (its wake-up without the payload), so
/// slow passes can be told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassKind {
    /// The evaluation timer: a decision, and a reconcile when something changed.
    Evaluate,
    /// The metrics timer: a collection.
    Collect,
    /// The group changed in the store.
    Reload,
    /// An input from the worker's queue (pushed readings, a metric-source round).
    Input,
    /// Retirements finished.
    Retired,
    /// Creates finished.
    Created,
}

impl PassKind {
    /// Every kind, in the order [`ControllerStats::passes`] keeps them.
    pub const ALL: [PassKind; 6] = [
        PassKind::Evaluate,
        PassKind::Collect,
        PassKind::Reload,
        PassKind::Input,
        PassKind::Retired,
        PassKind::Created,
    ];

    /// Its name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            PassKind::Evaluate => "evaluate",
            PassKind::Collect => "collect",
            PassKind::Reload => "reload",
            PassKind::Input => "input",
            PassKind::Retired => "retired",
            PassKind::Created => "created",
        }
    }
}

/// The controller's counters (see the [module docs](self)).
#[derive(Debug, Default)]
pub struct ControllerStats {
    /// How long each pass of a group worker took (one timer tick, reload or input).
    pub ticks: DurationHistogram,
    /// The same passes by what woke the worker ([`PassKind::ALL`]'s order).
    by_kind: [DurationHistogram; 6],
    /// Scaling decisions stored (desired capacity changed by a policy).
    pub decisions: AtomicU64,
    /// Calls to each provider, by provider name and call (`list`, `metrics`, `create`,
    /// `delete`, `capacity`).
    provider_calls: Mutex<HashMap<(String, &'static str), u64>>,
    /// Of those, the ones that returned an error.
    provider_errors: Mutex<HashMap<(String, &'static str), u64>>,
    /// Scaling decisions by group, forgotten with the group ([`Self::forget_group`]).
    group_decisions: Mutex<HashMap<(TenantId, String), u64>>,
}

impl ControllerStats {
    /// Counts one pass of a worker, woken by `kind`.
    pub fn pass(&self, kind: PassKind, d: Duration) {
        self.ticks.record(d);
        self.by_kind[kind as usize].record(d);
    }

    /// Forgets every pass counted, of every kind (a benchmark's warm-up).
    pub fn reset_passes(&self) {
        self.ticks.reset();
        for passes in &self.by_kind {
            passes.reset();
        }
    }

    /// The passes woken by `kind`.
    pub fn passes(&self, kind: PassKind) -> &DurationHistogram {
        &self.by_kind[kind as usize]
    }

    /// Counts one call to a provider.
    pub fn provider_call(&self, provider: &str, call: &'static str) {
        count(&self.provider_calls, provider, call);
    }

    /// Counts one call to a provider that returned an error (counted by
    /// [`Self::provider_call`] too).
    pub fn provider_error(&self, provider: &str, call: &'static str) {
        count(&self.provider_errors, provider, call);
    }

    /// Counts one scaling decision of a group (and in [`Self::decisions`]).
    pub fn decision(&self, tenant: &TenantId, group: &str) {
        self.decisions.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut d) = self.group_decisions.lock() {
            *d.entry((tenant.clone(), group.to_string())).or_insert(0) += 1;
        }
    }

    /// Forgets a group's counters: its worker stopped (the group is deleted, or the
    /// server stops), so its series leave the Prometheus page with it.
    pub fn forget_group(&self, tenant: &TenantId, group: &str) {
        if let Ok(mut d) = self.group_decisions.lock() {
            d.remove(&(tenant.clone(), group.to_string()));
        }
    }

    /// Scaling decisions so far of each group that has a worker, sorted.
    pub fn group_decisions(&self) -> Vec<(TenantId, String, u64)> {
        let mut out: Vec<(TenantId, String, u64)> = self
            .group_decisions
            .lock()
            .map(|d| {
                d.iter()
                    .map(|((t, g), n)| (t.clone(), g.clone(), *n))
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// The calls made to the providers so far, by provider and call, sorted.
    pub fn provider_calls(&self) -> Vec<(String, &'static str, u64)> {
        listed(&self.provider_calls)
    }

    /// The calls that returned an error so far, by provider and call, sorted.
    pub fn provider_errors(&self) -> Vec<(String, &'static str, u64)> {
        listed(&self.provider_errors)
    }

    /// Every call made to the providers so far.
    pub fn provider_calls_total(&self) -> u64 {
        self.provider_calls().iter().map(|(_, _, n)| n).sum()
    }
}

type CallCounts = Mutex<HashMap<(String, &'static str), u64>>;

fn count(counts: &CallCounts, provider: &str, call: &'static str) {
    if let Ok(mut counts) = counts.lock() {
        *counts.entry((provider.to_string(), call)).or_insert(0) += 1;
    }
}

fn listed(counts: &CallCounts) -> Vec<(String, &'static str, u64)> {
    let mut out: Vec<(String, &'static str, u64)> = counts
        .lock()
        .map(|c| c.iter().map(|((p, k), n)| (p.clone(), *k, *n)).collect())
        .unwrap_or_default();
    out.sort();
    out
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
        let coarse = h.cumulative_buckets();
        let at = |bound: f64| coarse.iter().find(|(b, _)| *b == bound).map(|(_, n)| *n);
        assert_eq!(at(0.001), Some(1));
        assert_eq!(at(0.01), Some(10));
        assert_eq!(at(0.05), Some(50));
        assert_eq!(at(0.1), Some(100));
        assert_eq!(at(10.0), Some(100));
        h.reset();
        assert_eq!(h.cumulative_buckets()[13], (10.0, 0));
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
        s.provider_error("docker", "metrics");
        assert_eq!(
            s.provider_errors(),
            vec![("docker".to_string(), "metrics", 1)]
        );
    }

    #[test]
    fn a_groups_decisions_are_forgotten_with_it() {
        let s = ControllerStats::default();
        let acme = TenantId::new("acme").unwrap();
        s.decision(&acme, "web");
        s.decision(&acme, "web");
        s.decision(&acme, "api");
        assert_eq!(s.decisions.load(Ordering::Relaxed), 3);
        assert_eq!(
            s.group_decisions(),
            vec![
                (acme.clone(), "api".to_string(), 1),
                (acme.clone(), "web".to_string(), 2)
            ]
        );
        s.forget_group(&acme, "web");
        assert_eq!(s.group_decisions(), vec![(acme, "api".to_string(), 1)]);
        assert_eq!(s.decisions.load(Ordering::Relaxed), 3);
    }
}
