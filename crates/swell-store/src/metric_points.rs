//! The metric history of groups and instances: one row per group and metrics interval,
//! holding the group's point and its instances' readings (a JSON array), written in
//! batches (every group's intervals of the last second in a few transactions), read back
//! by the export routes.
//!
//! An instance's readings are not rows of their own: at 10,000 groups of ten instances
//! and a `5s` metrics interval that was 20,000 rows a second, each with its index entry,
//! and the store's one SQLite writer spent most of an idle fleet's time on them. One row
//! per group interval is a tenth of that; an instance's history is read by scanning its
//! group's rows over the instance's lifetime (the service bounds the window by it).

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

/// One instance's reading at the end of a metrics interval of its group, as
/// [`MetricPointStore::append_metric_intervals`] keeps it with the group's point.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceReading {
    /// The instance.
    pub instance_id: InstanceId,
    /// CPU use, percent.
    pub cpu_percent: f64,
    /// Resident memory, MiB.
    pub memory_mb: f64,
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
    /// Its instances' readings, taken at the point's `at`.
    pub instances: Vec<InstanceReading>,
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
        instances: &[InstanceReading],
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

    /// Drops the group's points (with their instances' readings) older than `before`;
    /// returns how many points.
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

/// Arguments of one row of [`POINTS_INSERT`].
const COLUMNS: usize = 7;

/// The points' insert, `{}` standing for the rows: only those of a group that exists
/// (it may have been deleted since its worker collected).
const POINTS_INSERT: &str = "INSERT INTO group_metric_points \
     (tenant, group_name, at, running, desired_capacity, metric_values, instance_readings) \
     SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, v.column7 \
     FROM (VALUES {}) AS v WHERE EXISTS (SELECT 1 FROM scaling_groups g \
       WHERE g.tenant = v.column1 AND g.name = v.column2) \
     ON CONFLICT DO NOTHING";

/// [`POINTS_INSERT`] for `rows` rows; the text of a full chunk is built once.
fn insert_points(rows: usize) -> std::borrow::Cow<'static, str> {
    static FULL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        POINTS_INSERT.replace("{}", &placeholders(ROWS_PER_STATEMENT, COLUMNS))
    });
    if rows == ROWS_PER_STATEMENT {
        FULL.as_str().into()
    } else {
        POINTS_INSERT
            .replace("{}", &placeholders(rows, COLUMNS))
            .into()
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

/// The readings as a JSON array of `[instance, cpu_percent, memory_mb]`; a reading that
/// is not a finite number is left out (JSON has no such number).
fn encode_readings(readings: &[InstanceReading]) -> String {
    let rows: Vec<(&str, f64, f64)> = readings
        .iter()
        .filter(|r| r.cpu_percent.is_finite() && r.memory_mb.is_finite())
        .map(|r| (r.instance_id.as_str(), r.cpu_percent, r.memory_mb))
        .collect();
    serde_json::to_string(&rows).unwrap_or_else(|_| "[]".to_string())
}

/// The reading of `instance` among a point's readings, if it has one.
fn decode_reading(text: &str, instance: &InstanceId) -> Result<Option<(f64, f64)>> {
    let rows: Vec<(String, f64, f64)> =
        serde_json::from_str(text).map_err(|e| corrupt("instance_readings", e))?;
    Ok(rows
        .into_iter()
        .find(|(id, _, _)| id == instance.as_str())
        .map(|(_, cpu, memory)| (cpu, memory)))
}

/// A `LIKE` pattern (escape `\`) matching the readings that name `instance`: a cheap
/// filter in the database before [`decode_reading`] decides.
fn readings_naming(instance: &InstanceId) -> String {
    let quoted = serde_json::to_string(instance.as_str()).unwrap_or_default();
    let mut pattern = String::with_capacity(quoted.len() + 8);
    pattern.push('%');
    for c in quoted.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
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
        instances: &[InstanceReading],
    ) -> Result<()> {
        // The foreign key stands for the group's existence check: no extra read per tick.
        sql("INSERT INTO group_metric_points \
             (tenant, group_name, at, running, desired_capacity, metric_values, \
              instance_readings) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING")
        .bind(tenant)
        .bind(group)
        .bind(point.at)
        .bind(point.running)
        .bind(point.desired_capacity)
        .bind(encode_values(&point.values))
        .bind(encode_readings(instances))
        .execute(self.db())
        .await
        .map_err(not_found_if_foreign_key("group", group))?;
        Ok(())
    }

    async fn append_metric_intervals(&self, intervals: &[MetricInterval]) -> Result<()> {
        let mut tx = self.db().begin().await?;
        // A group deleted since its worker collected keeps nothing (its rows went with
        // it): checked in the statements, so the batch's other groups stand.
        for chunk in intervals.chunks(ROWS_PER_STATEMENT) {
            let mut q = sql(insert_points(chunk.len()));
            for i in chunk {
                q = q
                    .bind(&i.tenant)
                    .bind(&i.group)
                    .bind(i.point.at)
                    .bind(i.point.running)
                    .bind(i.point.desired_capacity)
                    .bind(encode_values(&i.point.values))
                    .bind(encode_readings(&i.instances));
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
        let rows = sql("SELECT at, instance_readings FROM group_metric_points \
             WHERE tenant = $1 AND group_name = $2 AND instance_readings LIKE $3 ESCAPE '\\' \
               AND ($4 IS NULL OR at >= $5) AND ($6 IS NULL OR at < $7) \
             ORDER BY at DESC LIMIT $8")
        .bind(tenant)
        .bind(group)
        .bind(readings_naming(instance))
        .bind(filter.since)
        .bind(filter.since)
        .bind(filter.until)
        .bind(filter.until)
        .bind(limit)
        .fetch_all_as(self.db(), |row| {
            let readings: String = row.get("instance_readings")?;
            Ok((row.time("at")?, readings))
        })
        .await?;
        let mut points = Vec::with_capacity(rows.len());
        for (at, readings) in rows.iter().rev() {
            if let Some((cpu_percent, memory_mb)) = decode_reading(readings, instance)? {
                points.push(InstanceMetricPoint {
                    instance_id: instance.clone(),
                    at: *at,
                    cpu_percent,
                    memory_mb,
                });
            }
        }
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

/// Drops the group's points (with their instances' readings) older than `before`.
async fn prune(tx: &mut Tx, tenant: &TenantId, group: &str, before: Timestamp) -> Result<u64> {
    sql("DELETE FROM group_metric_points WHERE tenant = $1 AND group_name = $2 AND at < $3")
        .bind(tenant)
        .bind(group)
        .bind(before)
        .execute(tx)
        .await
}
