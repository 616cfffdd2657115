//! Traffic metrics: request and error rates and latency percentiles over a
//! sliding window (what scaling policies read), plus totals and a cumulative
//! latency histogram since start (what Prometheus scrapes: it computes rates
//! itself), cheap enough to record on every request (a few relaxed atomic
//! increments, no lock). The server renders them (`swell-server`'s
//! `exposition.rs`).
//!
//! The window is a ring of [`SLOTS`] slots of [`SLOT`] each; a slot is reset
//! lazily by the first event of a new period. An event racing with that reset
//! may be lost: the figures are for scaling decisions and dashboards, not for
//! billing. Time is `tokio::time`, so a paused test clock drives it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Length of one slot of the sliding window.
pub const SLOT: Duration = Duration::from_secs(5);
/// Slots in the ring: the window is `(SLOTS - 1) × SLOT` full slots (60 s)
/// plus the slot in progress.
pub const SLOTS: usize = 13;
/// The span rates and percentiles are computed over (at most).
pub const WINDOW: Duration = Duration::from_secs(SLOT.as_secs() * (SLOTS as u64 - 1));

/// Histogram buckets: 8 linear ones for 0-7 µs, then 8 per power of two
/// (at most 12.5 % relative error) up to 2^40 µs.
const BUCKETS: usize = 8 + 38 * 8;

fn bucket_of(micros: u64) -> usize {
    if micros < 8 {
        return micros as usize;
    }
    let exp = 63 - u64::from(micros.leading_zeros()); // >= 3
    let sub = (micros >> (exp - 3)) & 7;
    (8 + (exp - 3) * 8 + sub).min(BUCKETS as u64 - 1) as usize
}

/// The middle of a bucket, in microseconds.
fn bucket_value(index: usize) -> u64 {
    if index < 8 {
        return index as u64;
    }
    let exp = (index - 8) / 8 + 3;
    let sub = ((index - 8) % 8) as u64;
    let width = 1u64 << (exp - 3);
    ((8 + sub) << (exp - 3)) + width / 2
}

/// The current period number and where the ring's slot for it is.
fn epoch(base: Instant) -> u64 {
    (base.elapsed().as_millis() / SLOT.as_millis()) as u64
}

/// Seconds the window covers at `base.elapsed()`: the full slots behind the
/// current one plus its elapsed part, or less while the process is young.
fn covered_secs(base: Instant) -> f64 {
    let elapsed = base.elapsed();
    let in_slot = Duration::from_millis((elapsed.as_millis() % SLOT.as_millis()) as u64);
    elapsed.min(WINDOW + in_slot).as_secs_f64().max(1e-3)
}

struct Slot {
    /// Period this slot counts for (`u64::MAX`: never used).
    epoch: AtomicU64,
    count: AtomicU64,
}

/// Events per second over the sliding window.
pub(crate) struct RateWindow {
    base: Instant,
    slots: [Slot; SLOTS],
}

impl RateWindow {
    pub(crate) fn new() -> Self {
        Self {
            base: Instant::now(),
            slots: std::array::from_fn(|_| Slot {
                epoch: AtomicU64::new(u64::MAX),
                count: AtomicU64::new(0),
            }),
        }
    }

    pub(crate) fn record(&self) {
        let e = epoch(self.base);
        let slot = &self.slots[e as usize % SLOTS];
        let seen = slot.epoch.load(Ordering::Acquire);
        if seen != e
            && slot
                .epoch
                .compare_exchange(seen, e, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            slot.count.store(0, Ordering::Release);
        }
        slot.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Events in the window.
    pub(crate) fn count(&self) -> u64 {
        let e = epoch(self.base);
        self.slots
            .iter()
            .filter(|s| {
                let se = s.epoch.load(Ordering::Acquire);
                se != u64::MAX && se <= e && e - se < SLOTS as u64
            })
            .map(|s| s.count.load(Ordering::Relaxed))
            .sum()
    }

    pub(crate) fn per_second(&self) -> f64 {
        self.count() as f64 / covered_secs(self.base)
    }
}

struct HistSlot {
    epoch: AtomicU64,
    buckets: Box<[AtomicU64]>,
}

/// A latency histogram over the sliding window.
pub(crate) struct LatencyWindow {
    base: Instant,
    slots: Vec<HistSlot>,
}

impl LatencyWindow {
    pub(crate) fn new() -> Self {
        Self {
            base: Instant::now(),
            slots: (0..SLOTS)
                .map(|_| HistSlot {
                    epoch: AtomicU64::new(u64::MAX),
                    buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
                })
                .collect(),
        }
    }

    pub(crate) fn record(&self, latency: Duration) {
        let e = epoch(self.base);
        let slot = &self.slots[e as usize % SLOTS];
        let seen = slot.epoch.load(Ordering::Acquire);
        if seen != e
            && slot
                .epoch
                .compare_exchange(seen, e, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            for b in slot.buckets.iter() {
                b.store(0, Ordering::Relaxed);
            }
        }
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        slot.buckets[bucket_of(micros)].fetch_add(1, Ordering::Relaxed);
    }

    /// The window's quantiles `qs` (each in 0..=1), `None` when it is empty.
    #[cfg(test)]
    pub(crate) fn quantiles<const N: usize>(&self, qs: [f64; N]) -> [Option<Duration>; N] {
        let mut merged = vec![0u64; BUCKETS];
        self.add_to(&mut merged);
        quantiles_of(&merged, qs)
    }

    /// Adds the window's bucket counts to `merged` (`BUCKETS` long).
    fn add_to(&self, merged: &mut [u64]) {
        let e = epoch(self.base);
        for s in &self.slots {
            let se = s.epoch.load(Ordering::Acquire);
            if se == u64::MAX || se > e || e - se >= SLOTS as u64 {
                continue;
            }
            for (m, b) in merged.iter_mut().zip(s.buckets.iter()) {
                *m += b.load(Ordering::Relaxed);
            }
        }
    }
}

/// The quantiles `qs` of a histogram of bucket counts.
fn quantiles_of<const N: usize>(merged: &[u64], qs: [f64; N]) -> [Option<Duration>; N] {
    let total: u64 = merged.iter().sum();
    qs.map(|q| {
        if total == 0 {
            return None;
        }
        // The smallest value with at least q of the samples at or below it.
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, n) in merged.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Duration::from_micros(bucket_value(i)));
            }
        }
        None
    })
}

/// Upper bounds (seconds) of the cumulative latency histogram's buckets, the
/// ones Prometheus' client libraries use by default; `+Inf` is implied.
pub const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Latencies since start in [`LATENCY_BUCKETS`] (not cumulative here: slot
/// `i` counts the latencies above bound `i - 1` and at most bound `i`; the
/// last slot the rest).
pub(crate) struct LatencyTotals {
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl LatencyTotals {
    fn new() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_micros: AtomicU64::new(0),
        }
    }

    fn record(&self, latency: Duration) {
        let secs = latency.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }
}

/// A cumulative histogram of latencies since start, in the shape Prometheus
/// exposes: for each bound, how many were at most that long.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencyHistogram {
    /// `(upper bound in seconds, latencies at most that long)`, for each of
    /// [`LATENCY_BUCKETS`]; the count is the `+Inf` bucket.
    pub buckets: Vec<(f64, u64)>,
    /// Latencies recorded.
    pub count: u64,
    /// Their sum, in seconds.
    pub sum_seconds: f64,
}

/// One worker's recorders (each worker thread has its own, so that recording
/// touches no cache line another core writes); [`Traffic::sum`] adds them up.
pub(crate) struct Traffic {
    pub(crate) requests_total: AtomicU64,
    pub(crate) errors_total: AtomicU64,
    pub(crate) requests: RateWindow,
    pub(crate) errors: RateWindow,
    pub(crate) latency: LatencyWindow,
    pub(crate) latency_totals: LatencyTotals,
}

impl Traffic {
    pub(crate) fn new() -> Self {
        Self {
            requests_total: AtomicU64::new(0),
            errors_total: AtomicU64::new(0),
            requests: RateWindow::new(),
            errors: RateWindow::new(),
            latency: LatencyWindow::new(),
            latency_totals: LatencyTotals::new(),
        }
    }

    /// Records one finished request (or, in TCP mode, one connection, with no
    /// latency). `error` is a 5xx answer, from the instance or the proxy.
    pub(crate) fn record(&self, latency: Option<Duration>, error: bool) {
        self.requests_total.fetch_add(1, Ordering::Relaxed);
        self.requests.record();
        if error {
            self.errors_total.fetch_add(1, Ordering::Relaxed);
            self.errors.record();
        }
        if let Some(l) = latency {
            self.latency.record(l);
            self.latency_totals.record(l);
        }
    }

    /// The figures of several recorders (one per worker) together.
    pub(crate) fn sum(all: &[std::sync::Arc<Traffic>]) -> TrafficSum {
        let mut merged = vec![0u64; BUCKETS];
        let mut sum = TrafficSum::default();
        let mut totals = [0u64; LATENCY_BUCKETS.len() + 1];
        let mut sum_micros = 0u64;
        for t in all {
            for (total, b) in totals.iter_mut().zip(&t.latency_totals.buckets) {
                *total += b.load(Ordering::Relaxed);
            }
            sum_micros =
                sum_micros.saturating_add(t.latency_totals.sum_micros.load(Ordering::Relaxed));
            sum.requests_total += t.requests_total.load(Ordering::Relaxed);
            sum.errors_total += t.errors_total.load(Ordering::Relaxed);
            sum.request_rate += t.requests.per_second();
            sum.error_rate += t.errors.per_second();
            sum.requests_in_window += t.requests.count();
            sum.errors_in_window += t.errors.count();
            t.latency.add_to(&mut merged);
        }
        sum.latency = quantiles_of(&merged, [0.5, 0.9, 0.99]);
        let mut seen = 0;
        sum.latency_histogram = LatencyHistogram {
            buckets: LATENCY_BUCKETS
                .iter()
                .zip(totals)
                .map(|(bound, n)| {
                    seen += n;
                    (*bound, seen)
                })
                .collect(),
            count: totals.iter().sum(),
            sum_seconds: sum_micros as f64 / 1e6,
        };
        sum
    }
}

/// What [`Traffic::sum`] adds up.
#[derive(Debug, Default)]
pub(crate) struct TrafficSum {
    pub(crate) requests_total: u64,
    pub(crate) errors_total: u64,
    pub(crate) request_rate: f64,
    pub(crate) error_rate: f64,
    pub(crate) requests_in_window: u64,
    pub(crate) errors_in_window: u64,
    /// p50, p90, p99.
    pub(crate) latency: [Option<Duration>; 3],
    pub(crate) latency_histogram: LatencyHistogram,
}

/// A sample of one load balancer's traffic, for scaling policies (the rates and
/// percentiles) and the server's Prometheus endpoint (the totals and the histogram).
/// Rates and percentiles cover the last [`WINDOW`] (less while the load
/// balancer is younger than that).
#[derive(Debug, Clone, PartialEq)]
pub struct TrafficSnapshot {
    /// Requests answered since start (in TCP mode: connections accepted).
    pub requests_total: u64,
    /// Of those, answered with a 5xx: the instance's own or the proxy's
    /// (`502`, `503`, `504`).
    pub errors_total: u64,
    /// Requests per second over the window.
    pub request_rate: f64,
    /// 5xx answers per second over the window.
    pub error_rate: f64,
    /// 5xx answers as a fraction (0 to 1) of the window's requests; 0 when idle.
    pub error_ratio: f64,
    /// Requests (connections in TCP mode) in flight to instances now.
    pub in_flight: u64,
    /// Client connections open now (at most [`crate::LbConfig::max_connections`]).
    pub connections_open: u64,
    /// Client connections closed at once since start because
    /// [`crate::LbConfig::max_connections`] were open.
    pub connections_refused_total: u64,
    /// Median time from a request's arrival to its response headers.
    pub latency_p50: Option<Duration>,
    /// 90th percentile of the same.
    pub latency_p90: Option<Duration>,
    /// 99th percentile of the same.
    pub latency_p99: Option<Duration>,
    /// The same times since start, cumulative (for Prometheus).
    pub latency_histogram: LatencyHistogram,
    /// Per instance, sorted by id; every instance ever seen.
    pub backends: Vec<BackendTraffic>,
}

/// One instance's share of a [`TrafficSnapshot`].
#[derive(Debug, Clone, PartialEq)]
pub struct BackendTraffic {
    /// The instance id.
    pub id: String,
    /// Requests dispatched to it since start, retried attempts included.
    pub requests_total: u64,
    /// Requests per second dispatched to it over the window (AWS's "request
    /// count per target", as a rate).
    pub request_rate: f64,
    /// Requests in flight to it now.
    pub in_flight: u64,
    /// Failed attempts since start.
    pub failures: u64,
    /// Whether it is in the pool, healthy and not ejected: it may take requests.
    pub routable: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in [
            0u64,
            1,
            7,
            8,
            9,
            15,
            16,
            100,
            1_000,
            65_535,
            1 << 30,
            1 << 39,
        ] {
            let b = bucket_of(v);
            assert!(b >= last, "{v}");
            last = b;
            let mid = bucket_value(b) as f64;
            assert!(
                (mid - v as f64).abs() <= (v as f64) * 0.125 + 1.0,
                "{v} -> {mid}"
            );
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[tokio::test(start_paused = true)]
    async fn percentiles_and_rates_slide_with_the_window() {
        let t = Traffic::new();
        for ms in 1..=100u64 {
            t.record(Some(Duration::from_millis(ms)), ms > 95);
        }
        let [p50, p90, p99] = t.latency.quantiles([0.5, 0.9, 0.99]);
        let within = |d: Option<Duration>, ms: f64| {
            let got = d.unwrap().as_secs_f64() * 1000.0;
            assert!((got - ms).abs() <= ms * 0.125, "{got} vs {ms}");
        };
        within(p50, 50.0);
        within(p90, 90.0);
        within(p99, 99.0);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!((t.requests.per_second() - 10.0).abs() < 0.01);
        assert_eq!(t.errors.count(), 5);
        // Past the window, everything has slid out; totals remain.
        tokio::time::advance(WINDOW + SLOT).await;
        assert_eq!(t.requests.count(), 0);
        assert_eq!(t.latency.quantiles([0.5]), [None]);
        assert_eq!(t.requests_total.load(Ordering::Relaxed), 100);
    }

    #[test]
    fn the_latency_histogram_is_cumulative_since_start() {
        let t = Traffic::new();
        for ms in [1u64, 5, 7, 30, 2000, 20_000] {
            t.record(Some(Duration::from_millis(ms)), false);
        }
        t.record(None, false);
        let h = Traffic::sum(&[std::sync::Arc::new(t)]).latency_histogram;
        let at = |bound: f64| h.buckets.iter().find(|(b, _)| *b == bound).map(|(_, n)| *n);
        assert_eq!(at(0.005), Some(2), "{h:?}");
        assert_eq!(at(0.01), Some(3));
        assert_eq!(at(0.05), Some(4));
        assert_eq!(at(2.5), Some(5));
        assert_eq!(at(10.0), Some(5));
        assert_eq!(h.count, 6);
        assert!((h.sum_seconds - 22.043).abs() < 1e-9, "{}", h.sum_seconds);
    }
}
