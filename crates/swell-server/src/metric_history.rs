//! A short in-memory history of every group's metrics, whatever its policy: one point
//! per metrics interval for the group (the mean of each metric over the interval, the
//! running instances, the desired capacity) and one per instance (its CPU and memory
//! reading). The dashboard draws its chart from it and the API exports it
//! (`GET /v1/groups/{name}/metrics`, `GET /v1/groups/{name}/instances/{id}/metrics`).
//!
//! Every interval is also written to the store ([`MetricHistory::queue`], then
//! [`MetricHistory::flush`]: every group's intervals of the last [`FLUSH_EVERY`] in a few
//! multi-row writes), which the export routes read, so the history survives a restart; each
//! group's rows older than [`METRIC_POINTS_KEPT`] are pruned.
//! The in-memory rings are a bounded cache: [`GROUP_POINTS`] points per group, and per
//! group at most [`INSTANCES_KEPT`] instances of [`INSTANCE_POINTS`] points each, so that
//! at most about [`MAX_BYTES_PER_GROUP`] bytes per group, whatever the group's size or
//! age. The five-minute load history forecasting policies keep is stored separately
//! (`/v1/groups/{name}/metrics/history`).
//!
//! The controller feeds it once per metrics interval of each group
//! ([`MetricHistory::record`] then [`MetricHistory::queue`], at the end of the
//! worker's metric collection).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use swell_core::{InstanceId, InstanceStatus, Metric, MetricWindow, TenantId, Timestamp};
use swell_providers::InstanceMetrics;
use swell_store::{
    GroupMetricPoint, GroupRecord, InstanceReading, InstanceRecord, MetricInterval, Store,
};

/// How long the stored metric history is kept: a week of every group's and instance's
/// points (seed 2's daily CSV logs, with room to fetch them late).
pub const METRIC_POINTS_KEPT: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);
/// How often a group's stored points are pruned.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Points kept per group: 360 metrics intervals (six minutes at 1 s, an hour at 10 s).
pub const GROUP_POINTS: usize = 360;
/// Points kept per instance: 120 metrics intervals.
pub const INSTANCE_POINTS: usize = 120;
/// Instances of one group whose points are kept; beyond it, new instances are not
/// recorded until the rings of gone instances are dropped.
pub const INSTANCES_KEPT: usize = 32;
/// The metrics a group point may hold (every [`Metric`]).
const METRICS: usize = 8;
/// Room per kept instance besides its points: its id (a UUID) and its map entry.
const INSTANCE_OVERHEAD: usize = 256;
/// An upper bound of one group's memory here, in bytes (about 160 KiB): its points
/// (a timestamp, two counts and up to [`METRICS`] values each; the rings are allocated
/// once at their full size, so they never grow past it), its instances' points (a
/// timestamp and two values each), their ids and map entries, and the ring itself.
pub const MAX_BYTES_PER_GROUP: usize = (GROUP_POINTS + 1) * std::mem::size_of::<GroupPoint>()
    + GROUP_POINTS * METRICS * std::mem::size_of::<(Metric, f64)>()
    + INSTANCES_KEPT
        * ((INSTANCE_POINTS + 1) * std::mem::size_of::<InstancePoint>() + INSTANCE_OVERHEAD)
    + 1024;

/// One metrics interval of a group.
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

/// One metrics interval of an instance: its reading at the end of the interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InstancePoint {
    /// When the reading was taken (the worker's collection).
    pub at: Timestamp,
    /// CPU use, percent of one core or of the instance's CPU limit.
    pub cpu_percent: f64,
    /// Resident memory, MiB.
    pub memory_mb: f64,
}

#[derive(Debug, Default)]
struct GroupRing {
    /// The group's creation time: a group deleted and created again under the same name
    /// starts with an empty ring.
    created_at: Option<Timestamp>,
    points: VecDeque<GroupPoint>,
    instances: HashMap<InstanceId, VecDeque<InstancePoint>>,
}

/// A ring not fed for this long is dropped (its group was deleted, or its worker
/// stopped): deleted groups do not hold memory.
pub const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// Every group's ring, keyed by tenant and group name.
#[derive(Debug, Default)]
pub struct MetricHistory {
    groups: Mutex<Rings>,
    /// When each group's stored points were last pruned (since this server started).
    pruned_at: Mutex<HashMap<(TenantId, String), Timestamp>>,
    /// Intervals recorded but not yet written to the store ([`MetricHistory::flush`]).
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

#[derive(Debug, Default)]
struct Rings {
    by_group: HashMap<(TenantId, String), GroupRing>,
    /// When stale rings were last looked for (once a minute at most).
    swept_at: Option<Timestamp>,
}

/// What one recording takes, already extracted from the worker's state (the pure part
/// of [`MetricHistory::record`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    /// The group's creation time.
    pub created_at: Timestamp,
    /// The group's point.
    pub point: GroupPoint,
    /// Each running instance's reading.
    pub readings: Vec<(InstanceId, InstanceMetrics)>,
}

impl MetricHistory {
    /// Records the metrics interval ending `now` of `group`: the mean of each metric of
    /// `window` sampled since the group's previous point (or over the last metrics
    /// interval), the running instances of `instances` and their latest `readings`.
    /// Returns the interval, for [`MetricHistory::queue`].
    pub fn record(
        &self,
        group: &GroupRecord,
        now: Timestamp,
        instances: &[InstanceRecord],
        window: &MetricWindow,
        readings: Vec<(InstanceId, InstanceMetrics)>,
    ) -> Interval {
        let key = (group.tenant.clone(), group.spec.name.clone());
        let from = self
            .last_at(&key, group.created_at)
            .unwrap_or_else(|| now.sub(group.spec.metrics_interval));
        let running = instances
            .iter()
            .filter(|i| i.status == InstanceStatus::Running)
            .count();
        let interval = Interval {
            created_at: group.created_at,
            point: GroupPoint {
                at: now,
                running: running as u32,
                desired_capacity: group.desired_capacity,
                values: interval_means(window, from, now),
            },
            readings,
        };
        self.push(key, &interval, |id| instances.iter().any(|i| &i.id == id));
        interval
    }

    /// Queues one interval of `group` for the store (its point and its instances'
    /// readings); [`MetricHistory::flush`] writes every queued interval at once. Once an
    /// hour per group the interval also prunes its stored points older than
    /// [`METRIC_POINTS_KEPT`].
    pub fn queue(&self, group: &GroupRecord, interval: Interval) {
        let (tenant, name) = (&group.tenant, group.spec.name.as_str());
        let now = interval.point.at;
        let key = (tenant.clone(), name.to_string());
        let prune_before = match self.pruned_at.lock() {
            Ok(mut pruned) => {
                let due = pruned
                    .get(&key)
                    .is_none_or(|at| now.since(*at) >= PRUNE_EVERY);
                if due {
                    pruned.insert(key, now);
                }
                due.then(|| now.sub(METRIC_POINTS_KEPT))
            }
            Err(_) => None,
        };
        let queued = MetricInterval {
            tenant: tenant.clone(),
            group: name.to_string(),
            point: GroupMetricPoint {
                at: now,
                running: interval.point.running,
                desired_capacity: interval.point.desired_capacity,
                values: interval.point.values,
            },
            instances: interval
                .readings
                .into_iter()
                .map(|(id, m)| InstanceReading {
                    instance_id: id,
                    cpu_percent: m.cpu_percent,
                    memory_mb: m.memory_mb,
                })
                .collect(),
            prune_before,
        };
        if let Ok(mut unsaved) = self.unsaved.lock() {
            if unsaved.len() >= MAX_UNSAVED {
                // The store has been refusing for a while: the oldest go first.
                unsaved.pop_front();
            }
            unsaved.push_back(queued);
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

    fn last_at(&self, key: &(TenantId, String), created_at: Timestamp) -> Option<Timestamp> {
        let rings = self.groups.lock().ok()?;
        let ring = rings.by_group.get(key)?;
        if ring.created_at != Some(created_at) {
            return None;
        }
        ring.points.back().map(|p| p.at)
    }

    /// Adds one interval to the group's ring, dropping the oldest points past the
    /// bounds, the rings of instances no longer `live` when room is needed, and the whole ring when the group was created again.
    pub fn push(
        &self,
        key: (TenantId, String),
        interval: &Interval,
        live: impl Fn(&InstanceId) -> bool,
    ) {
        let Ok(mut rings) = self.groups.lock() else {
            return;
        };
        let now = interval.point.at;
        if rings
            .swept_at
            .is_none_or(|at| now.since(at) >= std::time::Duration::from_secs(60))
        {
            rings.swept_at = Some(now);
            rings.by_group.retain(|_, ring| {
                ring.points
                    .back()
                    .is_some_and(|p| now.since(p.at) < STALE_AFTER)
            });
        }
        let ring = rings.by_group.entry(key).or_default();
        if ring.created_at != Some(interval.created_at) {
            *ring = GroupRing {
                created_at: Some(interval.created_at),
                // Full size at once: a ring never reallocates (nor doubles) later.
                points: VecDeque::with_capacity(GROUP_POINTS + 1),
                instances: HashMap::with_capacity(INSTANCES_KEPT),
            };
        }
        // Time goes forward only: a point at or before the last is a replay.
        if ring
            .points
            .back()
            .is_some_and(|last| interval.point.at <= last.at)
        {
            return;
        }
        let at = interval.point.at;
        ring.points.push_back(interval.point.clone());
        while ring.points.len() > GROUP_POINTS {
            ring.points.pop_front();
        }
        for (id, m) in &interval.readings {
            let point = InstancePoint {
                at,
                cpu_percent: m.cpu_percent,
                memory_mb: m.memory_mb,
            };
            // One lookup for an instance already kept (nearly every reading).
            if let Some(points) = ring.instances.get_mut(id) {
                points.push_back(point);
                if points.len() > INSTANCE_POINTS {
                    points.pop_front();
                }
                continue;
            }
            if ring.instances.len() >= INSTANCES_KEPT {
                // Room is made only by dropping an instance that is gone.
                let gone = ring
                    .instances
                    .iter()
                    .filter(|(i, _)| !live(i))
                    .min_by_key(|(_, p)| p.back().map(|p| p.at))
                    .map(|(i, _)| i.clone());
                match gone {
                    Some(gone) => {
                        ring.instances.remove(&gone);
                    }
                    None => continue,
                }
            }
            let mut points = VecDeque::with_capacity(INSTANCE_POINTS + 1);
            points.push_back(point);
            ring.instances.insert(id.clone(), points);
        }
    }

    /// The group's points at or after `since` (all when `None`), oldest first; empty
    /// for a group created at another time than `created_at` (a group of the same name
    /// that was deleted).
    pub fn group_points(
        &self,
        tenant: &TenantId,
        name: &str,
        created_at: Timestamp,
        since: Option<Timestamp>,
    ) -> Vec<GroupPoint> {
        let Ok(rings) = self.groups.lock() else {
            return Vec::new();
        };
        match rings.by_group.get(&(tenant.clone(), name.to_string())) {
            Some(ring) if ring.created_at == Some(created_at) => ring
                .points
                .iter()
                .filter(|p| since.is_none_or(|s| p.at >= s))
                .cloned()
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The instance's points at or after `since` (all when `None`), oldest first.
    pub fn instance_points(
        &self,
        tenant: &TenantId,
        name: &str,
        created_at: Timestamp,
        id: &InstanceId,
        since: Option<Timestamp>,
    ) -> Vec<InstancePoint> {
        let Ok(rings) = self.groups.lock() else {
            return Vec::new();
        };
        match rings.by_group.get(&(tenant.clone(), name.to_string())) {
            Some(ring) if ring.created_at == Some(created_at) => ring
                .instances
                .get(id)
                .map(|p| {
                    p.iter()
                        .filter(|p| since.is_none_or(|s| p.at >= s))
                        .copied()
                        .collect()
                })
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// Drops the ring of a group (deleted).
    pub fn forget(&self, tenant: &TenantId, name: &str) {
        if let Ok(mut rings) = self.groups.lock() {
            rings.by_group.remove(&(tenant.clone(), name.to_string()));
        }
        if let Ok(mut pruned) = self.pruned_at.lock() {
            pruned.remove(&(tenant.clone(), name.to_string()));
        }
    }
}

/// The mean of each metric's samples of `window` in `(from, to]`, in [`Metric`]'s order.
pub fn interval_means(window: &MetricWindow, from: Timestamp, to: Timestamp) -> Vec<(Metric, f64)> {
    let mut sums: Vec<(Metric, f64, u32)> = Vec::new();
    for s in window.samples().filter(|s| s.at > from && s.at <= to) {
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
    // Kept for hundreds of intervals: no spare capacity (MAX_BYTES_PER_GROUP counts none).
    means.shrink_to_fit();
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

    fn key() -> (TenantId, String) {
        (TenantId::new("t").unwrap(), "web".to_string())
    }

    fn id(n: usize) -> InstanceId {
        InstanceId(format!("i-{n}"))
    }

    /// The instances numbered `ids` are live.
    fn live(ids: &[usize]) -> impl Fn(&InstanceId) -> bool + '_ {
        move |i| ids.iter().any(|n| &id(*n) == i)
    }

    fn interval(at: i64, readings: &[usize]) -> Interval {
        Interval {
            created_at: t(0),
            point: GroupPoint {
                at: t(at),
                running: readings.len() as u32,
                desired_capacity: 2,
                values: vec![(Metric::Cpu, at as f64)],
            },
            readings: readings
                .iter()
                .map(|n| {
                    (
                        id(*n),
                        InstanceMetrics {
                            cpu_percent: *n as f64,
                            memory_mb: at as f64,
                            steal_percent: None,
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn the_group_ring_keeps_the_newest_points_only() {
        let h = MetricHistory::default();
        let total = GROUP_POINTS + 40;
        for at in 1..=total as i64 {
            h.push(key(), &interval(at, &[1]), live(&[1]));
        }
        let (tenant, name) = key();
        let points = h.group_points(&tenant, &name, t(0), None);
        assert_eq!(points.len(), GROUP_POINTS);
        assert_eq!(points[0].at, t(41));
        assert_eq!(points.last().unwrap().at, t(total as i64));
        let one = h.instance_points(&tenant, &name, t(0), &id(1), None);
        assert_eq!(one.len(), INSTANCE_POINTS);
        assert_eq!(one[0].at, t((total - INSTANCE_POINTS + 1) as i64));
    }

    #[test]
    fn since_keeps_the_points_at_or_after_it() {
        let h = MetricHistory::default();
        for at in 1..=10 {
            h.push(key(), &interval(at, &[1]), live(&[1]));
        }
        let (tenant, name) = key();
        let ats = |since: Option<i64>| -> Vec<Timestamp> {
            h.group_points(&tenant, &name, t(0), since.map(t))
                .iter()
                .map(|p| p.at)
                .collect()
        };
        assert_eq!(ats(Some(8)), vec![t(8), t(9), t(10)]);
        assert_eq!(ats(Some(11)), Vec::<Timestamp>::new());
        assert_eq!(ats(None).len(), 10);
        assert_eq!(
            h.instance_points(&tenant, &name, t(0), &id(1), Some(t(10)))
                .len(),
            1
        );
    }

    #[test]
    fn at_most_instances_kept_and_gone_instances_make_room() {
        let h = MetricHistory::default();
        let all: Vec<usize> = (0..INSTANCES_KEPT + 8).collect();
        h.push(key(), &interval(1, &all), live(&all));
        let (tenant, name) = key();
        let kept = |n: usize| {
            !h.instance_points(&tenant, &name, t(0), &id(n), None)
                .is_empty()
        };
        assert_eq!(all.iter().filter(|n| kept(**n)).count(), INSTANCES_KEPT);
        // Every kept instance is gone now: a new one takes the place of one of them.
        let newcomers: Vec<usize> = vec![100];
        h.push(key(), &interval(2, &newcomers), live(&newcomers));
        assert!(kept(100));
        assert_eq!(
            (0..INSTANCES_KEPT + 8)
                .chain([100])
                .filter(|n| kept(*n))
                .count(),
            INSTANCES_KEPT
        );
    }

    #[test]
    fn a_group_created_again_starts_empty_and_replays_are_ignored() {
        let h = MetricHistory::default();
        h.push(key(), &interval(5, &[1]), live(&[1]));
        h.push(key(), &interval(5, &[1]), live(&[1]));
        h.push(key(), &interval(4, &[1]), live(&[1]));
        let (tenant, name) = key();
        assert_eq!(h.group_points(&tenant, &name, t(0), None).len(), 1);
        // Asked with another creation time: none of the old group's points.
        assert!(h.group_points(&tenant, &name, t(3), None).is_empty());
        let mut again = interval(6, &[2]);
        again.created_at = t(3);
        h.push(key(), &again, live(&[2]));
        assert_eq!(h.group_points(&tenant, &name, t(3), None).len(), 1);
        assert!(
            h.instance_points(&tenant, &name, t(3), &id(1), None)
                .is_empty()
        );
        h.forget(&tenant, &name);
        assert!(h.group_points(&tenant, &name, t(3), None).is_empty());
    }

    #[test]
    fn rings_not_fed_for_an_hour_are_dropped() {
        let h = MetricHistory::default();
        let other = (TenantId::new("t").unwrap(), "old".to_string());
        h.push(other.clone(), &interval(1, &[1]), live(&[1]));
        h.push(key(), &interval(2, &[1]), live(&[1]));
        let (tenant, _) = key();
        h.push(key(), &interval(3600, &[1]), live(&[1]));
        assert_eq!(h.group_points(&tenant, "old", t(0), None).len(), 1);
        h.push(key(), &interval(3661, &[1]), live(&[1]));
        assert!(h.group_points(&tenant, "old", t(0), None).is_empty());
        assert_eq!(h.group_points(&tenant, "web", t(0), None).len(), 3);
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

    /// The heap a ring holds, from its collections' capacities.
    fn heap_bytes(ring: &GroupRing) -> usize {
        use std::mem::size_of;
        let points = ring.points.capacity() * size_of::<GroupPoint>()
            + ring
                .points
                .iter()
                .map(|p| p.values.capacity() * size_of::<(Metric, f64)>())
                .sum::<usize>();
        let entry = size_of::<InstanceId>() + size_of::<VecDeque<InstancePoint>>() + 1;
        let instances = ring.instances.capacity() * entry
            + ring
                .instances
                .iter()
                .map(|(id, p)| id.0.capacity() + p.capacity() * size_of::<InstancePoint>())
                .sum::<usize>();
        size_of::<GroupRing>() + points + instances
    }

    #[test]
    fn a_full_ring_stays_within_the_documented_bound() {
        let h = MetricHistory::default();
        let every = [
            Metric::Cpu,
            Metric::Memory,
            Metric::RequestRate,
            Metric::RequestRatePerInstance,
            Metric::InFlight,
            Metric::LatencyP99,
            Metric::ErrorRate,
            Metric::Steal,
        ];
        let uuid = |n: usize| InstanceId(format!("01a24c66-63e0-758f-911c-{n:012}"));
        for at in 1..=(GROUP_POINTS + 100) as i64 {
            let ids: Vec<InstanceId> = (0..INSTANCES_KEPT + 4).map(uuid).collect();
            h.push(
                key(),
                &Interval {
                    created_at: t(0),
                    point: GroupPoint {
                        at: t(at),
                        running: ids.len() as u32,
                        desired_capacity: ids.len() as u32,
                        values: every.iter().map(|m| (*m, 1.0)).collect(),
                    },
                    readings: ids
                        .iter()
                        .map(|i| {
                            (
                                i.clone(),
                                InstanceMetrics {
                                    cpu_percent: 1.0,
                                    memory_mb: 1.0,
                                    steal_percent: None,
                                },
                            )
                        })
                        .collect(),
                },
                |i| ids.contains(i),
            );
        }
        let rings = h.groups.lock().unwrap();
        let ring = rings.by_group.get(&key()).unwrap();
        assert_eq!(ring.points.len(), GROUP_POINTS);
        assert_eq!(ring.instances.len(), INSTANCES_KEPT);
        let used = heap_bytes(ring);
        eprintln!("a full ring: {used} bytes; MAX_BYTES_PER_GROUP = {MAX_BYTES_PER_GROUP}");
        assert!(
            used <= MAX_BYTES_PER_GROUP,
            "{used} > {MAX_BYTES_PER_GROUP}"
        );
    }

    // The bound docs/metrics.md states (about 160 KiB), checked at compile time.
    const _: () = assert!(MAX_BYTES_PER_GROUP < 200 * 1024);
}
