//! The metric history of groups and instances: one row per metrics interval, written in
//! batches (every group's intervals of the last second in one transaction), read back by
//! the export routes.

use crate::Result;
use crate::sql::{SqlStore, Tx, corrupt, not_found_if_foreign_key, sql};
use async_trait::async_trait;
use swell_core::{InstanceId, Metric, TenantId, Timestamp};

/// Points a read returns when it asks for no limit.
pub const DEFAULT_METRIC_POINT_LIMIT: u32 = 10_000;
/// The largest limit a read may ask for: a day of a `1s` metrics interval fits.
pub const MAX_METRIC_POINT_LIMIT: u32 = 100_000;

/// One metrics interval of a group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupMetricPoint {
    /// The end of the interval.
    pub at: Timestamp,
    /// Instances running at `at`.
    pub running: u32,
    /// The desired capacity at `at`.
    pub desired_capacity: u32,
    /// The mean of each metric sampled in the interval.
    pub values: Vec<(Metric, f64)>,
}

/// One metrics interval of an instance: its reading at the end of the interval.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceMetricPoint {
    /// The instance.
    pub instance_id: InstanceId,
    /// When the reading was taken.
    pub at: Timestamp,
    /// CPU use, percent.
    pub cpu_percent: f64,
    /// Resident memory, MiB.
    pub memory_mb: f64,
}

/// One metrics interval of one group, as [`MetricPointStore::append_metric_intervals`]
/// writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricInterval {
    /// The group's tenant.
    pub tenant: TenantId,
    /// The group.
    pub group: String,
    /// The group's point.
    pub point: GroupMetricPoint,
    /// Its instances' readings.
    pub instances: Vec<InstanceMetricPoint>,
    /// Also drop the group's points older than this (its retention), in the same
    /// transaction.
    pub prune_before: Option<Timestamp>,
}

/// Which points a read returns: `since` ≤ `at` < `until`, the newest `limit` of them
/// (a tail, like the events' list), oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PointFilter {
    /// Only points at or after it.
    pub since: Option<Timestamp>,
    /// Only points before it.
    pub until: Option<Timestamp>,
    /// At most this many (default [`DEFAULT_METRIC_POINT_LIMIT`]).
    pub limit: Option<u32>,
}

/// The metric history of groups and instances.
#[async_trait]
pub trait MetricPointStore: Send + Sync + 'static {
    /// Keeps one metrics interval of a group: its point and its instances' readings, in
    /// one transaction (a point already kept at the same `at` stays as it was: a
    /// replay). `NotFound` if the group does not exist.
    async fn append_metric_points(
        &self,
        tenant: &TenantId,
        group: &str,
        point: &GroupMetricPoint,
        instances: &[InstanceMetricPoint],
    ) -> Result<()>;

    /// Keeps many groups' intervals in one transaction of a few statements, as
    /// [`MetricPointStore::append_metric_points`] would one by one, each also pruning
    /// its group when it says so; an interval of a group that no longer exists is
    /// skipped.
    async fn append_metric_intervals(&self, intervals: &[MetricInterval]) -> Result<()>;

    /// The group's points matching `filter`, oldest first.
    async fn group_metric_points(
        &self,
        tenant: &TenantId,
        group: &str,
        filter: &PointFilter,
    ) -> Result<Vec<GroupMetricPoint>>;

    /// One instance's points matching `filter`, oldest first.
    async fn instance_metric_points(
        &self,
        tenant: &TenantId,
        group: &str,
        instance: &InstanceId,
        filter: &PointFilter,
    ) -> Result<Vec<InstanceMetricPoint>>;

    /// Drops the group's points (its own and its instances') older than `before`;
    /// returns how many rows.
    async fn prune_metric_points(
        &self,
        tenant: &TenantId,
        group: &str,
        before: Timestamp,
    ) -> Result<u64>;
}

/// Rows one statement of [`MetricPointStore::append_metric_intervals`] writes: each
/// statement is a round trip (on SQLite, to its connection's thread), so a second of a
/// large fleet's history is a few dozen statements, not one per row; but SQLite finds
/// each `$N` argument's place by a walk over the statement's arguments, so a statement of
/// many rows costs more per row than a few round trips (measured with `swell bench
/// controller`: 100 rows a statement spent 15 % of the run in that walk).
const ROWS_PER_STATEMENT: usize = 25;

/// The group points' insert, `{}` standing for the rows: only those of a group that
/// exists (it may have been deleted since its worker collected).
const GROUP_POINTS_INSERT: &str = "INSERT INTO group_metric_points \
     (tenant, group_name, at, running, desired_capacity, metric_values) \
     SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6 \
     FROM (VALUES {}) AS v WHERE EXISTS (SELECT 1 FROM scaling_groups g \
       WHERE g.tenant = v.column1 AND g.name = v.column2) \
     ON CONFLICT DO NOTHING";

/// The instance readings' insert, as [`GROUP_POINTS_INSERT`].
const INSTANCE_POINTS_INSERT: &str = "INSERT INTO instance_metric_points \
     (tenant, group_name, instance_id, at, cpu_percent, memory_mb) \
     SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6 \
     FROM (VALUES {}) AS v WHERE EXISTS (SELECT 1 FROM scaling_groups g \
       WHERE g.tenant = v.column1 AND g.name = v.column2) \
     ON CONFLICT DO NOTHING";

/// `statement` (one of the inserts above) for `rows` rows of six arguments; the text of
/// a full chunk is built once.
fn insert_points(statement: &'static str, rows: usize) -> std::borrow::Cow<'static, str> {
    static FULL: std::sync::LazyLock<[String; 2]> = std::sync::LazyLock::new(|| {
        [GROUP_POINTS_INSERT, INSTANCE_POINTS_INSERT]
            .map(|s| s.replace("{}", &placeholders(ROWS_PER_STATEMENT, 6)))
    });
    match (rows == ROWS_PER_STATEMENT, statement == GROUP_POINTS_INSERT) {
        (true, true) => FULL[0].as_str().into(),
        (true, false) => FULL[1].as_str().into(),
        _ => statement.replace("{}", &placeholders(rows, 6)).into(),
    }
}

/// `($1, $2, …), (…), …`: `rows` rows of `columns` placeholders each.
fn placeholders(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|r| {
            let cells: Vec<String> = (1..=columns)
                .map(|c| format!("${}", r * columns + c))
                .collect();
            format!("({})", cells.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn encode_values(values: &[(Metric, f64)]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = values
        .iter()
        .map(|(m, v)| (m.as_str().to_string(), serde_json::json!(v)))
        .collect();
    serde_json::Value::Object(map).to_string()
}

fn decode_values(text: &str) -> Result<Vec<(Metric, f64)>> {
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| corrupt("metric_values", e))?;
    let mut values = Vec::with_capacity(map.len());
    for (name, value) in map {
        let metric: Metric = serde_json::from_value(serde_json::Value::String(name))
            .map_err(|e| corrupt("metric_values", e))?;
        let value = value
            .as_f64()
            .ok_or_else(|| corrupt("metric_values", "a value is not a number"))?;
        values.push((metric, value));
    }
    // In Metric's declaration order, as the in-memory history keeps them.
    values.sort_by_key(|(m, _)| *m as u8);
    Ok(values)
}

#[async_trait]
impl<S: SqlStore> MetricPointStore for S {
    async fn append_metric_points(
        &self,
        tenant: &TenantId,
        group: &str,
        point: &GroupMetricPoint,
        instances: &[InstanceMetricPoint],
    ) -> Result<()> {
        let mut tx = self.db().begin().await?;
        // The foreign key stands for the group's existence check: no extra read per tick.
        sql("INSERT INTO group_metric_points \
             (tenant, group_name, at, running, desired_capacity, metric_values) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING")
        .bind(tenant)
        .bind(group)
        .bind(point.at)
        .bind(point.running)
        .bind(point.desired_capacity)
        .bind(encode_values(&point.values))
        .execute(&mut tx)
        .await
        .map_err(not_found_if_foreign_key("group", group))?;
        for p in instances {
            insert_instance_point(&mut tx, tenant, group, p)
                .await
                .map_err(not_found_if_foreign_key("group", group))?;
        }
        tx.commit().await
    }

    async fn append_metric_intervals(&self, intervals: &[MetricInterval]) -> Result<()> {
        let mut tx = self.db().begin().await?;
        // A group deleted since its worker collected keeps nothing (its rows went with
        // it): checked in the statements, so the batch's other groups stand.
        for chunk in intervals.chunks(ROWS_PER_STATEMENT) {
            let mut q = sql(insert_points(GROUP_POINTS_INSERT, chunk.len()));
            for i in chunk {
                q = q
                    .bind(&i.tenant)
                    .bind(&i.group)
                    .bind(i.point.at)
                    .bind(i.point.running)
                    .bind(i.point.desired_capacity)
                    .bind(encode_values(&i.point.values));
            }
            q.execute(&mut tx).await?;
        }
        let readings: Vec<(&MetricInterval, &InstanceMetricPoint)> = intervals
            .iter()
            .flat_map(|i| i.instances.iter().map(move |p| (i, p)))
            .collect();
        for chunk in readings.chunks(ROWS_PER_STATEMENT) {
            let mut q = sql(insert_points(INSTANCE_POINTS_INSERT, chunk.len()));
            for (i, p) in chunk {
                q = q
                    .bind(&i.tenant)
                    .bind(&i.group)
                    .bind(&p.instance_id)
                    .bind(p.at)
                    .bind(p.cpu_percent)
                    .bind(p.memory_mb);
            }
            q.execute(&mut tx).await?;
        }
        for i in intervals {
            if let Some(before) = i.prune_before {
                prune(&mut tx, &i.tenant, &i.group, before).await?;
            }
        }
        tx.commit().await
    }

    async fn group_metric_points(
        &self,
        tenant: &TenantId,
        group: &str,
        filter: &PointFilter,
    ) -> Result<Vec<GroupMetricPoint>> {
        let limit = i64::from(filter.limit.unwrap_or(DEFAULT_METRIC_POINT_LIMIT));
        let mut points = sql("SELECT at, running, desired_capacity, metric_values \
             FROM group_metric_points WHERE tenant = $1 AND group_name = $2 \
               AND ($3 IS NULL OR at >= $4) AND ($5 IS NULL OR at < $6) \
             ORDER BY at DESC LIMIT $7")
        .bind(tenant)
        .bind(group)
        .bind(filter.since)
        .bind(filter.since)
        .bind(filter.until)
        .bind(filter.until)
        .bind(limit)
        .fetch_all_as(self.db(), |row| {
            let values: String = row.get("metric_values")?;
            Ok(GroupMetricPoint {
                at: row.time("at")?,
                running: row.u32("running")?,
                desired_capacity: row.u32("desired_capacity")?,
                values: decode_values(&values)?,
            })
        })
        .await?;
        points.reverse();
        Ok(points)
    }

    async fn instance_metric_points(
        &self,
        tenant: &TenantId,
        group: &str,
        instance: &InstanceId,
        filter: &PointFilter,
    ) -> Result<Vec<InstanceMetricPoint>> {
        let limit = i64::from(filter.limit.unwrap_or(DEFAULT_METRIC_POINT_LIMIT));
        let mut points = sql("SELECT instance_id, at, cpu_percent, memory_mb \
             FROM instance_metric_points \
             WHERE tenant = $1 AND group_name = $2 AND instance_id = $3 \
               AND ($4 IS NULL OR at >= $5) AND ($6 IS NULL OR at < $7) \
             ORDER BY at DESC LIMIT $8")
        .bind(tenant)
        .bind(group)
        .bind(instance)
        .bind(filter.since)
        .bind(filter.since)
        .bind(filter.until)
        .bind(filter.until)
        .bind(limit)
        .fetch_all_as(self.db(), |row| {
            let id: String = row.get("instance_id")?;
            Ok(InstanceMetricPoint {
                instance_id: InstanceId(id),
                at: row.time("at")?,
                cpu_percent: row.get("cpu_percent")?,
                memory_mb: row.get("memory_mb")?,
            })
        })
        .await?;
        points.reverse();
        Ok(points)
    }

    async fn prune_metric_points(
        &self,
        tenant: &TenantId,
        group: &str,
        before: Timestamp,
    ) -> Result<u64> {
        let mut tx = self.db().begin().await?;
        let pruned = prune(&mut tx, tenant, group, before).await?;
        tx.commit().await?;
        Ok(pruned)
    }
}

async fn insert_instance_point(
    tx: &mut Tx,
    tenant: &TenantId,
    group: &str,
    p: &InstanceMetricPoint,
) -> Result<u64> {
    sql("INSERT INTO instance_metric_points \
         (tenant, group_name, instance_id, at, cpu_percent, memory_mb) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING")
    .bind(tenant)
    .bind(group)
    .bind(&p.instance_id)
    .bind(p.at)
    .bind(p.cpu_percent)
    .bind(p.memory_mb)
    .execute(tx)
    .await
}

/// Drops the group's points (its own and its instances') older than `before`.
async fn prune(tx: &mut Tx, tenant: &TenantId, group: &str, before: Timestamp) -> Result<u64> {
    let mut pruned = 0;
    for table in ["group_metric_points", "instance_metric_points"] {
        pruned += sql(format!(
            "DELETE FROM {table} WHERE tenant = $1 AND group_name = $2 AND at < $3"
        ))
        .bind(tenant)
        .bind(group)
        .bind(before)
        .execute(&mut *tx)
        .await?;
    }
    Ok(pruned)
}
