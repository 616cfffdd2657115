//! Scaling groups: their specs and desired capacities.

use crate::events::{insert_event, insert_event_and_commit};
use crate::sql::{Db, Row, RowLock, SqlStore, Tx, conflict_if_unique, not_found, sql};
use crate::tenants::ensure_tenant_in;
use crate::{GroupRecord, GroupWrite, NewEvent, Result, StoreError};
use async_trait::async_trait;
use swell_core::{GroupSpec, TenantId, Timestamp};

/// Scaling groups: their specs and desired capacities.
#[async_trait]
pub trait GroupStore: Send + Sync + 'static {
    /// Stores a new group with `desired_capacity = spec.initial_desired()` and records
    /// `event` in the same transaction; `Conflict` if the name is taken in the tenant.
    async fn create_group(
        &self,
        tenant: &TenantId,
        spec: &GroupSpec,
        now: Timestamp,
        event: NewEvent,
    ) -> Result<GroupRecord>;

    /// The group, if it exists in the tenant.
    async fn get_group(&self, tenant: &TenantId, name: &str) -> Result<Option<GroupRecord>>;

    /// The tenant's groups, by name.
    async fn list_groups(&self, tenant: &TenantId) -> Result<Vec<GroupRecord>>;

    /// Every group of every tenant (for the controller only).
    async fn list_all_groups(&self) -> Result<Vec<GroupRecord>>;

    /// Replaces the spec (the name cannot change), clamps `desired_capacity` into the new
    /// `[min, max]`, records `event`; `NotFound` if absent.
    async fn update_group(
        &self,
        tenant: &TenantId,
        spec: &GroupSpec,
        now: Timestamp,
        event: NewEvent,
    ) -> Result<GroupRecord>;

    /// Sets the desired capacity and, when `scaling_at` is given, the cooldown reference;
    /// records `event` in the same transaction.
    async fn set_desired_capacity(
        &self,
        tenant: &TenantId,
        name: &str,
        desired: u32,
        scaling_at: Option<Timestamp>,
        event: NewEvent,
    ) -> Result<GroupRecord>;

    /// Suspends (`suspended`: since `event.at`) or resumes the group's autoscaling and
    /// records `event` in the same transaction; `NotFound` if absent. Suspending a
    /// suspended group keeps its first `suspended_at`.
    async fn set_suspended(
        &self,
        tenant: &TenantId,
        name: &str,
        suspended: bool,
        event: NewEvent,
    ) -> Result<GroupRecord>;

    /// Marks the group for deletion and records `event`.
    async fn mark_group_deleting(
        &self,
        tenant: &TenantId,
        name: &str,
        event: NewEvent,
    ) -> Result<GroupRecord>;

    /// Applies every write, in order, in ONE transaction: all of them or, if any fails
    /// (`Conflict`, `NotFound`, …), none, with that error. Each write does what its
    /// single-group method does (events included). The records, in the writes' order.
    async fn apply_groups(
        &self,
        tenant: &TenantId,
        writes: &[GroupWrite],
        now: Timestamp,
    ) -> Result<Vec<GroupRecord>>;

    /// Removes the group row (and its instances' rows); its events stay.
    async fn delete_group(&self, tenant: &TenantId, name: &str) -> Result<()>;
}

const GROUP_COLUMNS: &str = "tenant, name, spec, desired_capacity, last_scaling_at, deleting, created_at, updated_at, \
     suspended_at";

fn decode_group(row: &Row) -> Result<GroupRecord> {
    let name: String = row.get("name")?;
    let raw_spec: String = row.get("spec")?;
    let spec: GroupSpec = serde_json::from_str(&raw_spec)
        .map_err(|e| StoreError::Corrupt(format!("group `{name}`: spec: {e}")))?;
    if spec.name != name {
        return Err(StoreError::Corrupt(format!(
            "group `{name}`: its spec is named `{}`",
            spec.name
        )));
    }
    Ok(GroupRecord {
        tenant: row.tenant()?,
        spec,
        desired_capacity: row.u32("desired_capacity")?,
        last_scaling_at: row.opt_time("last_scaling_at")?,
        deleting: row.bool("deleting")?,
        suspended_at: row.opt_time("suspended_at")?,
        created_at: row.time("created_at")?,
        updated_at: row.time("updated_at")?,
    })
}

fn encode_spec(spec: &GroupSpec) -> Result<String> {
    serde_json::to_string(spec)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode group `{}`: {e}", spec.name)))
}

async fn select_groups(
    db: Db<'_>,
    filter: &str,
    tenant: Option<&TenantId>,
) -> Result<Vec<GroupRecord>> {
    let mut q = sql(format!(
        "SELECT {GROUP_COLUMNS} FROM scaling_groups {filter}"
    ));
    if let Some(tenant) = tenant {
        q = q.bind(tenant);
    }
    q.fetch_all_as(db, decode_group).await
}

/// The group, its row locked until the transaction ends (a read-modify-write follows).
pub(crate) async fn fetch_group(
    tx: &mut Tx,
    tenant: &TenantId,
    name: &str,
) -> Result<Option<GroupRecord>> {
    sql(format!(
        "SELECT {GROUP_COLUMNS} FROM scaling_groups WHERE tenant = $1 AND name = $2"
    ))
    .bind(tenant)
    .bind(name)
    .lock(RowLock::NoKeyUpdate)
    .fetch_optional_as(tx, decode_group)
    .await
}

/// Whether the group exists, locking its row as [`fetch_group`] does, without reading
/// (and decoding) its spec: what a write that only needs the group to stand asks.
pub(crate) async fn lock_group(tx: &mut Tx, tenant: &TenantId, name: &str) -> Result<bool> {
    let row = sql("SELECT 1 AS present FROM scaling_groups WHERE tenant = $1 AND name = $2")
        .bind(tenant)
        .bind(name)
        .lock(RowLock::NoKeyUpdate)
        .fetch_optional(tx)
        .await?;
    Ok(row.is_some())
}

/// Inserts a group (and its tenant, if new) and records `event`:
/// [`GroupStore::create_group`] inside a caller's transaction.
async fn create_group_in(
    tx: &mut Tx,
    tenant: &TenantId,
    spec: &GroupSpec,
    now: Timestamp,
    event: &NewEvent,
) -> Result<GroupRecord> {
    let record = GroupRecord {
        tenant: tenant.clone(),
        spec: spec.clone(),
        desired_capacity: spec.initial_desired(),
        last_scaling_at: None,
        deleting: false,
        suspended_at: None,
        created_at: now,
        updated_at: now,
    };
    ensure_tenant_in(tx, tenant, now).await?;
    sql(format!(
        "INSERT INTO scaling_groups ({GROUP_COLUMNS}) \
         VALUES ($1, $2, $3, $4, NULL, FALSE, $5, $6, NULL)"
    ))
    .bind(tenant)
    .bind(&spec.name)
    .bind(encode_spec(spec)?)
    .bind(record.desired_capacity)
    .bind(now)
    .bind(now)
    .execute(&mut *tx)
    .await
    .map_err(conflict_if_unique("group", &spec.name))?;
    insert_event(tx, tenant, event).await?;
    Ok(record)
}

/// Replaces a group's spec, clamps its desired capacity, records `event`:
/// [`GroupStore::update_group`] inside a caller's transaction.
async fn update_group_in(
    tx: &mut Tx,
    tenant: &TenantId,
    spec: &GroupSpec,
    now: Timestamp,
    event: &NewEvent,
) -> Result<GroupRecord> {
    let mut group = fetch_group(tx, tenant, &spec.name)
        .await?
        .ok_or_else(|| not_found("group", &spec.name))?;
    // `clamp` would panic on min > max; a stored spec was validated, but stay total.
    group.desired_capacity = group.desired_capacity.max(spec.min).min(spec.max);
    group.spec = spec.clone();
    group.updated_at = now;
    sql(
        "UPDATE scaling_groups SET spec = $1, desired_capacity = $2, updated_at = $3 \
         WHERE tenant = $4 AND name = $5",
    )
    .bind(encode_spec(spec)?)
    .bind(group.desired_capacity)
    .bind(now)
    .bind(tenant)
    .bind(&spec.name)
    .execute(&mut *tx)
    .await?;
    insert_event(tx, tenant, event).await?;
    Ok(group)
}

/// Marks a group for deletion and records `event`: [`GroupStore::mark_group_deleting`]
/// inside a caller's transaction.
async fn mark_group_deleting_in(
    tx: &mut Tx,
    tenant: &TenantId,
    name: &str,
    event: &NewEvent,
) -> Result<GroupRecord> {
    let mut group = fetch_group(tx, tenant, name)
        .await?
        .ok_or_else(|| not_found("group", name))?;
    group.deleting = true;
    group.updated_at = event.at;
    sql(
        "UPDATE scaling_groups SET deleting = TRUE, updated_at = $1 \
         WHERE tenant = $2 AND name = $3",
    )
    .bind(event.at)
    .bind(tenant)
    .bind(name)
    .execute(&mut *tx)
    .await?;
    insert_event(tx, tenant, event).await?;
    Ok(group)
}

#[async_trait]
impl<S: SqlStore> GroupStore for S {
    /// Also creates the tenant if it does not exist yet.
    async fn create_group(
        &self,
        tenant: &TenantId,
        spec: &GroupSpec,
        now: Timestamp,
        event: NewEvent,
    ) -> Result<GroupRecord> {
        let mut tx = self.db().begin().await?;
        let record = create_group_in(&mut tx, tenant, spec, now, &event).await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn get_group(&self, tenant: &TenantId, name: &str) -> Result<Option<GroupRecord>> {
        sql(format!(
            "SELECT {GROUP_COLUMNS} FROM scaling_groups WHERE tenant = $1 AND name = $2"
        ))
        .bind(tenant)
        .bind(name)
        .fetch_optional_as(self.db(), decode_group)
        .await
    }

    async fn list_groups(&self, tenant: &TenantId) -> Result<Vec<GroupRecord>> {
        select_groups(self.db(), "WHERE tenant = $1 ORDER BY name", Some(tenant)).await
    }

    async fn list_all_groups(&self) -> Result<Vec<GroupRecord>> {
        select_groups(self.db(), "ORDER BY tenant, name", None).await
    }

    async fn update_group(
        &self,
        tenant: &TenantId,
        spec: &GroupSpec,
        now: Timestamp,
        event: NewEvent,
    ) -> Result<GroupRecord> {
        let mut tx = self.db().begin().await?;
        let group = update_group_in(&mut tx, tenant, spec, now, &event).await?;
        tx.commit().await?;
        Ok(group)
    }

    /// `desired` is clamped into the group's `[min, max]` (the caller should have done
    /// so already; a warning is logged when it had not). `updated_at` becomes `event.at`.
    async fn set_desired_capacity(
        &self,
        tenant: &TenantId,
        name: &str,
        desired: u32,
        scaling_at: Option<Timestamp>,
        event: NewEvent,
    ) -> Result<GroupRecord> {
        let mut tx = self.db().begin().await?;
        let mut group = fetch_group(&mut tx, tenant, name)
            .await?
            .ok_or_else(|| not_found("group", name))?;
        let clamped = desired.max(group.spec.min).min(group.spec.max);
        if clamped != desired {
            tracing::warn!(
                tenant = %tenant, group = name, desired, clamped,
                "desired capacity outside [min, max]; clamped"
            );
        }
        group.desired_capacity = clamped;
        if scaling_at.is_some() {
            group.last_scaling_at = scaling_at;
        }
        group.updated_at = event.at;
        sql(
            "UPDATE scaling_groups SET desired_capacity = $1, last_scaling_at = $2, \
             updated_at = $3 WHERE tenant = $4 AND name = $5",
        )
        .bind(clamped)
        .bind(group.last_scaling_at)
        .bind(group.updated_at)
        .bind(tenant)
        .bind(name)
        .execute(&mut tx)
        .await?;
        insert_event_and_commit(tx, tenant, &event).await?;
        Ok(group)
    }

    async fn set_suspended(
        &self,
        tenant: &TenantId,
        name: &str,
        suspended: bool,
        event: NewEvent,
    ) -> Result<GroupRecord> {
        let mut tx = self.db().begin().await?;
        let mut group = fetch_group(&mut tx, tenant, name)
            .await?
            .ok_or_else(|| not_found("group", name))?;
        group.suspended_at = if suspended {
            group.suspended_at.or(Some(event.at))
        } else {
            None
        };
        group.updated_at = event.at;
        sql(
            "UPDATE scaling_groups SET suspended_at = $1, updated_at = $2 \
             WHERE tenant = $3 AND name = $4",
        )
        .bind(group.suspended_at)
        .bind(group.updated_at)
        .bind(tenant)
        .bind(name)
        .execute(&mut tx)
        .await?;
        insert_event(&mut tx, tenant, &event).await?;
        tx.commit().await?;
        Ok(group)
    }

    /// Idempotent on the flag (each call records its event). `updated_at` becomes
    /// `event.at`.
    async fn mark_group_deleting(
        &self,
        tenant: &TenantId,
        name: &str,
        event: NewEvent,
    ) -> Result<GroupRecord> {
        let mut tx = self.db().begin().await?;
        let group = mark_group_deleting_in(&mut tx, tenant, name, &event).await?;
        tx.commit().await?;
        Ok(group)
    }

    async fn apply_groups(
        &self,
        tenant: &TenantId,
        writes: &[GroupWrite],
        now: Timestamp,
    ) -> Result<Vec<GroupRecord>> {
        let mut tx = self.db().begin().await?;
        let mut records = Vec::with_capacity(writes.len());
        for write in writes {
            // An error returns before the commit: the transaction rolls back whole.
            records.push(match write {
                GroupWrite::Create { spec, event } => {
                    create_group_in(&mut tx, tenant, spec, now, event).await?
                }
                GroupWrite::Update { spec, event } => {
                    update_group_in(&mut tx, tenant, spec, now, event).await?
                }
                GroupWrite::MarkDeleting { name, event } => {
                    mark_group_deleting_in(&mut tx, tenant, name, event).await?
                }
            });
        }
        tx.commit().await?;
        Ok(records)
    }

    async fn delete_group(&self, tenant: &TenantId, name: &str) -> Result<()> {
        let mut tx = self.db().begin().await?;
        for table in [
            "instances",
            "load_history",
            "learned_state",
            "group_metric_points",
        ] {
            sql(format!(
                "DELETE FROM {table} WHERE tenant = $1 AND group_name = $2"
            ))
            .bind(tenant)
            .bind(name)
            .execute(&mut tx)
            .await?;
        }
        let deleted = sql("DELETE FROM scaling_groups WHERE tenant = $1 AND name = $2")
            .bind(tenant)
            .bind(name)
            .execute(&mut tx)
            .await?;
        if deleted == 0 {
            // Dropping the transaction rolls it back.
            return Err(not_found("group", name));
        }
        tx.commit().await
    }
}
