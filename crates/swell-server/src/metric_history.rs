//! Every group's metric history, whatever its policy: one point per metrics interval
//! for the group (the mean of each metric over the interval, the running instances, the
//! desired capacity) with each running instance's reading (CPU and memory) in it. The
//! dashboard draws its chart from it and the API exports it (`GET
//! /v1/groups/{name}/metrics`, `GET /v1/groups/{name}/instances/{id}/metrics`), both
//! from the store.
//!
//! The controller's worker makes its group's interval at the end of each metric
//! collection ([`interval`]) and queues it ([`MetricHistory::queue`]);
//! [`MetricHistory::flush`] writes every group's intervals of the last [`FLUSH_EVERY`]
//! in a few multi-row writes, so the history survives a restart; each group's rows
//! older than [`METRIC_POINTS_KEPT`] are pruned. Nothing is kept in memory once written:
//! the exports read the store, and a copy in memory (a ring of recent points per group
//! and instance, until 2026-12) cost up to 160 KiB a group and a cache miss per reading,
//! for no reader. The five-minute load history forecasting policies keep is stored
//! separately (`/v1/groups/{name}/metrics/history`).

use std::collections::VecDeque;
use std::sync::Mutex;
use swell_core::{InstanceId, InstanceStatus, Metric, MetricWindow, Timestamp};
use swell_providers::InstanceMetrics;
use swell_store::{
    GroupMetricPoint, GroupRecord, InstanceReading, InstanceRecord, MetricInterval, Store,
};

/// How long the stored metric history is kept: a week of every group's and instance's
/// points (seed 2's daily CSV logs, with room to fetch them late).
pub const METRIC_POINTS_KEPT: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);
/// How often a group's stored points are pruned.
pub const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// One metrics interval of a group, as the API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupPoint {
    /// The end of the interval (when the worker collected).
    pub at: Timestamp,
    /// Instances running at `at`.
    pub running: u32,
    /// The desired capacity at `at`.
    pub desired_capacity: u32,
    /// Each metric sampled in the interval, with the mean of its samples, in
    /// [`Metric`]'s order.
    pub values: Vec<(Metric, f64)>,
}

/// One metrics interval of an instance, as the API shows it: its reading at the end of
/// the interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InstancePoint {
    /// When the reading was taken (the worker's collection).
    pub at: Timestamp,
    /// CPU use, percent of one core or of the instance's CPU limit.
    pub cpu_percent: f64,
    /// Resident memory, MiB.
    pub memory_mb: f64,
}

/// The intervals queued for the store.
#[derive(Debug, Default)]
pub struct MetricHistory {
    /// Intervals made but not yet written to the store ([`MetricHistory::flush`]).
    unsaved: Mutex<VecDeque<MetricInterval>>,
}

/// How often the controller writes the queued intervals to the store.
pub const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// Intervals one write of [`MetricHistory::flush`] holds (one row each, its instances'
/// readings in it: four statements).
const FLUSH_CHUNK: usize = 100;
/// Writes of one flush waiting for the store at once: other writers take their turns
/// between them.
const FLUSH_CHUNKS_AT_ONCE: usize = 4;
/// Intervals kept queued while the store refuses them (a minute of 10,000 groups at a
/// `5s` metrics interval); past it the oldest are dropped.
pub const MAX_UNSAVED: usize = 120_000;

/// The metrics interval `(from, now]` of `group` (`from`: the end of its previous one,
/// or one metrics interval ago): the mean of each metric `window` sampled in it, the
/// running instances of `instances`, and their latest `readings`. With `prune`, storing
/// it also drops the group's stored points older than [`METRIC_POINTS_KEPT`].
pub fn interval(
    group: &GroupRecord,
    from: Option<Timestamp>,
    now: Timestamp,
    instances: &[InstanceRecord],
    window: &MetricWindow,
    readings: Vec<(InstanceId, InstanceMetrics)>,
    prune: bool,
) -> MetricInterval {
    let from = from.unwrap_or_else(|| now.sub(group.spec.metrics_interval));
    let running = instances
        .iter()
        .filter(|i| i.status == InstanceStatus::Running)
        .count();
    MetricInterval {
        tenant: group.tenant.clone(),
        group: group.spec.name.clone(),
        point: GroupMetricPoint {
            at: now,
            running: running as u32,
            desired_capacity: group.desired_capacity,
            values: interval_means(window, from, now),
        },
        instances: readings
            .into_iter()
            .map(|(id, m)| InstanceReading {
                instance_id: id,
                cpu_percent: m.cpu_percent,
                memory_mb: m.memory_mb,
            })
            .collect(),
        prune_before: prune.then(|| now.sub(METRIC_POINTS_KEPT)),
    }
}

impl MetricHistory {
    /// Queues one interval for the store; [`MetricHistory::flush`] writes every queued
    /// interval at once.
    pub fn queue(&self, interval: MetricInterval) {
        if let Ok(mut unsaved) = self.unsaved.lock() {
            if unsaved.len() >= MAX_UNSAVED {
                // The store has been refusing for a while: the oldest go first.
                unsaved.pop_front();
            }
            unsaved.push_back(interval);
        }
    }

    /// Writes every queued interval to `store`, [`FLUSH_CHUNK`] intervals a write (the
    /// controller calls it every [`FLUSH_EVERY`] and when it stops), so the store's
    /// writes for the history do not grow with the number of groups. On failure the intervals stay
    /// queued for the next flush (at most [`MAX_UNSAVED`]): the history is a record, not
    /// a reason to stop scaling.
    pub async fn flush(&self, store: &dyn Store) {
        let batch: Vec<MetricInterval> = match self.unsaved.lock() {
            Ok(mut unsaved) => unsaved.drain(..).collect(),
            Err(_) => return,
        };
        if batch.is_empty() {
            return;
        }
        // In chunks, a few at a time: one write of a whole second of a large fleet held
        // the store's one writer for a quarter of a second, and every pass that wrote
        // meanwhile (a scaling decision, a create's intent) waited behind it.
        let chunks: Vec<&[MetricInterval]> = batch.chunks(FLUSH_CHUNK).collect();
        let mut again: Vec<MetricInterval> = Vec::new();
        for wave in chunks.chunks(FLUSH_CHUNKS_AT_ONCE) {
            let written = futures_util::future::join_all(
                wave.iter()
                    .map(|chunk| store.append_metric_intervals(chunk)),
            )
            .await;
            for (chunk, written) in wave.iter().zip(written) {
                if let Err(e) = written {
                    tracing::warn!(intervals = chunk.len(), "metric history: {e}");
                    again.extend_from_slice(chunk);
                }
            }
        }
        if again.is_empty() {
            return;
        }
        if let Ok(mut unsaved) = self.unsaved.lock() {
            let room = MAX_UNSAVED.saturating_sub(unsaved.len());
            // Back in front of what was queued since, the newest of them if room is
            // short.
            for interval in again.into_iter().rev().take(room) {
                unsaved.push_front(interval);
            }
        }
    }
}

/// The mean of each metric's samples of `window` in `(from, to]`, in [`Metric`]'s order.
pub fn interval_means(window: &MetricWindow, from: Timestamp, to: Timestamp) -> Vec<(Metric, f64)> {
    let mut sums: Vec<(Metric, f64, u32)> = Vec::new();
    for s in window.after(from).filter(|s| s.at <= to) {
        match sums.iter_mut().find(|(m, _, _)| *m == s.metric) {
            Some(entry) => {
                entry.1 += s.value;
                entry.2 += 1;
            }
            None => sums.push((s.metric, s.value, 1)),
        }
    }
    let mut means: Vec<(Metric, f64)> = sums
        .into_iter()
        .map(|(m, sum, n)| (m, sum / f64::from(n)))
        .collect();
    means.sort_by_key(|(m, _)| metric_order(*m));
    means
}

/// A metric's position in [`Metric`]'s declaration order.
fn metric_order(m: Metric) -> u8 {
    match m {
        Metric::Cpu => 0,
        Metric::Memory => 1,
        Metric::RequestRate => 2,
        Metric::RequestRatePerInstance => 3,
        Metric::InFlight => 4,
        Metric::LatencyP99 => 5,
        Metric::ErrorRate => 6,
        Metric::Steal => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use swell_core::MetricSample;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_millis(s * 1000)
    }

    fn group() -> GroupRecord {
        let spec: swell_core::GroupSpec = serde_json::from_value(serde_json::json!({
            "name": "web", "template": {"command": ["sleep", "1"]},
            "min": 1, "max": 3, "metrics_interval": "5s",
        }))
        .unwrap();
        GroupRecord {
            tenant: swell_core::TenantId::default_tenant(),
            spec,
            desired_capacity: 2,
            last_scaling_at: None,
            deleting: false,
            suspended_at: None,
            created_at: t(0),
            updated_at: t(0),
        }
    }

    #[test]
    fn an_interval_starts_where_the_last_ended_or_one_metrics_interval_ago() {
        let mut w = MetricWindow::new(std::time::Duration::from_secs(600));
        for at in [1, 4, 8, 10] {
            w.push(MetricSample {
                at: t(at),
                metric: Metric::Cpu,
                value: at as f64,
                instances: 1,
            });
        }
        let check = |from: Option<i64>, prune: bool, mean: f64| {
            let i = interval(&group(), from.map(t), t(10), &[], &w, Vec::new(), prune);
            assert_eq!(i.point.values, vec![(Metric::Cpu, mean)], "from {from:?}");
            assert_eq!((i.point.at, i.point.desired_capacity), (t(10), 2));
            assert_eq!(i.prune_before, prune.then(|| t(10).sub(METRIC_POINTS_KEPT)));
        };
        // (5, 10]: 8 and 10.
        check(None, false, 9.0);
        // (0, 10]: all four.
        check(Some(0), true, 5.75);
        // (8, 10]: 10 alone.
        check(Some(8), false, 10.0);
    }

    #[test]
    fn interval_means_average_each_metric_in_the_half_open_interval() {
        let mut w = MetricWindow::new(std::time::Duration::from_secs(600));
        for (at, metric, value) in [
            (10, Metric::RequestRate, 100.0),
            (11, Metric::Cpu, 10.0),
            (12, Metric::RequestRate, 50.0),
            (12, Metric::Cpu, 30.0),
            (13, Metric::Cpu, 99.0),
        ] {
            w.push(MetricSample {
                at: t(at),
                metric,
                value,
                instances: 1,
            });
        }
        assert_eq!(
            interval_means(&w, t(10), t(12)),
            vec![(Metric::Cpu, 20.0), (Metric::RequestRate, 50.0)]
        );
        assert!(interval_means(&w, t(13), t(20)).is_empty());
    }
}
