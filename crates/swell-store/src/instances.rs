//! Instances: the durable create and delete intents and their progress.

use crate::events::{insert_event, insert_event_and_commit};
use crate::groups::lock_group;
use crate::sql::{Row, RowLock, SqlStore, Tx, conflict_if_unique, not_found, sql};
use crate::{InstanceChange, InstanceRecord, InstanceUpdate, NewEvent, Result, StoreError};
use async_trait::async_trait;
use swell_core::{InstanceId, InstanceStatus, Lifecycle, TenantId, Timestamp};

/// Instances: the durable create and delete intents and their progress.
#[async_trait]
pub trait InstanceStore: Send + Sync + 'static {
    /// Records a create intent: inserts `instance` (its `created_order` is assigned here,
    /// one more than the group's largest) and `event`, in one transaction. Returns the
    /// stored record.
    async fn create_instance(
        &self,
        instance: &InstanceRecord,
        event: Option<NewEvent>,
    ) -> Result<InstanceRecord>;

    /// Records the create intents of `instances` (as [`InstanceStore::create_instance`]
    /// without events) in one transaction: all or none. Returns the stored records in
    /// order. A scale-out's intents so take one turn at the writer, not one each.
    async fn create_instances(&self, instances: &[InstanceRecord]) -> Result<Vec<InstanceRecord>>;

    /// Sets or clears an instance's scale-in protection, and records `event`, in one
    /// transaction that changes nothing else of the row (its status may be moving under
    /// the reconciler meanwhile). `NotFound` if the tenant has no such instance in
    /// `group`. An instance no longer live (draining and after: nothing left to
    /// protect) is returned unchanged, without the event; the caller reads its status.
    async fn set_instance_protected(
        &self,
        tenant: &TenantId,
        group: &str,
        id: &InstanceId,
        protected: bool,
        event: NewEvent,
    ) -> Result<InstanceRecord>;

    /// Moves an instance to `status` with `update`, and records `event`, in one transaction.
    async fn update_instance(
        &self,
        tenant: &TenantId,
        id: &InstanceId,
        status: InstanceStatus,
        update: InstanceUpdate,
        now: Timestamp,
        event: Option<NewEvent>,
    ) -> Result<InstanceRecord>;

    /// Moves several instances, each as [`InstanceStore::update_instance`], in one
    /// transaction: a burst of moves (many creates finishing, many retirements) takes one
    /// turn at the writer and one commit. Each change's stored record, in order; `None`
    /// for an instance its tenant does not have (nothing is written for it). An error
    /// only when the transaction fails, and then nothing is written.
    async fn update_instances(
        &self,
        changes: Vec<InstanceChange>,
    ) -> Result<Vec<Option<InstanceRecord>>>;

    /// The instance, if it exists in the tenant.
    async fn get_instance(
        &self,
        tenant: &TenantId,
        id: &InstanceId,
    ) -> Result<Option<InstanceRecord>>;

    /// The group's instances by `created_order`; final ones (terminated, failed) only when
    /// `include_final`.
    async fn list_instances(
        &self,
        tenant: &TenantId,
        group: &str,
        include_final: bool,
    ) -> Result<Vec<InstanceRecord>>;

    /// Every non-final instance of every tenant (for the reconciler only).
    async fn list_live_instances(&self) -> Result<Vec<InstanceRecord>>;

    /// How many non-final instances each group has, by provider and status, in one
    /// tenant or (`None`) every tenant: what a quota or a metrics page needs, without
    /// reading every instance's row.
    async fn count_live_instances(&self, tenant: Option<&TenantId>) -> Result<Vec<LiveCount>>;
}

/// Live instances of one group on one provider in one status
/// ([`InstanceStore::count_live_instances`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveCount {
    /// The group's tenant.
    pub tenant: TenantId,
    /// The group.
    pub group: String,
    /// The instances' provider.
    pub provider: String,
    /// Their status (never a final one).
    pub status: InstanceStatus,
    /// How many.
    pub count: u64,
}

pub(crate) const INSTANCE_COLUMNS: &str = "tenant, id, group_name, status, lifecycle, created_order, \
     provider, host, address, native_id, protected, status_reason, created_at, started_at, \
     updated_at";

pub(crate) fn decode_instance(row: &Row) -> Result<InstanceRecord> {
    let id: String = row.get("id")?;
    let status: String = row.get("status")?;
    let status = status
        .parse::<InstanceStatus>()
        .map_err(|e| StoreError::Corrupt(format!("instance `{id}`: {e}")))?;
    let lifecycle: String = row.get("lifecycle")?;
    let lifecycle = lifecycle
        .parse::<Lifecycle>()
        .map_err(|e| StoreError::Corrupt(format!("instance `{id}`: {e}")))?;
    Ok(InstanceRecord {
        tenant: row.tenant()?,
        group: row.get("group_name")?,
        status,
        lifecycle,
        created_order: row.get("created_order")?,
        provider: row.get("provider")?,
        host: row.get("host")?,
        address: row.get("address")?,
        native_id: row.get("native_id")?,
        protected: row.bool("protected")?,
        status_reason: row.get("status_reason")?,
        created_at: row.time("created_at")?,
        started_at: row.opt_time("started_at")?,
        updated_at: row.time("updated_at")?,
        id: InstanceId(id),
    })
}

/// The instance, its row locked until the transaction ends (a read-modify-write follows).
pub(crate) async fn fetch_instance(
    tx: &mut Tx,
    tenant: &TenantId,
    id: &InstanceId,
) -> Result<Option<InstanceRecord>> {
    sql(format!(
        "SELECT {INSTANCE_COLUMNS} FROM instances WHERE tenant = $1 AND id = $2"
    ))
    .bind(tenant)
    .bind(id)
    .lock(RowLock::Update)
    .fetch_optional_as(tx, decode_instance)
    .await
}

/// Takes the group's row lock, which makes `created_order = max + 1` one transaction's
/// at a time; `NotFound` if the tenant has no such group.
async fn lock_group_for_intents(tx: &mut Tx, tenant: &TenantId, group: &str) -> Result<()> {
    if lock_group(tx, tenant, group).await? {
        Ok(())
    } else {
        Err(not_found("group", group))
    }
}

/// Inserts a create intent (its `created_order` one more than its group's largest) inside
/// a caller's transaction that holds its group's lock ([`lock_group_for_intents`]);
/// returns the stored record.
async fn insert_intent(tx: &mut Tx, instance: &InstanceRecord) -> Result<InstanceRecord> {
    let tenant = &instance.tenant;
    let row = sql(format!(
        "INSERT INTO instances ({INSTANCE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, \
         (SELECT COALESCE(MAX(created_order), 0) + 1 FROM instances \
          WHERE tenant = $1 AND group_name = $3), \
         $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING created_order"
    ))
    .bind(tenant)
    .bind(&instance.id)
    .bind(&instance.group)
    .bind(instance.status.as_str())
    .bind(instance.lifecycle.as_str())
    .bind(&instance.provider)
    .bind(&instance.host)
    .bind(&instance.address)
    .bind(&instance.native_id)
    .bind(instance.protected)
    .bind(&instance.status_reason)
    .bind(instance.created_at)
    .bind(instance.started_at)
    .bind(instance.updated_at)
    .fetch_one(tx)
    .await
    .map_err(conflict_if_unique("instance", instance.id.to_string()))?;
    let mut stored = instance.clone();
    stored.created_order = row.get("created_order")?;
    Ok(stored)
}

/// Moves an instance to `status` with `update` inside a caller's transaction, in one
/// statement that changes the row and returns it (no read before): what `update` leaves
/// out keeps its value. `None` if the tenant has no such instance.
async fn move_instance(
    tx: &mut Tx,
    tenant: &TenantId,
    id: &InstanceId,
    status: InstanceStatus,
    update: InstanceUpdate,
    now: Timestamp,
) -> Result<Option<InstanceRecord>> {
    let InstanceUpdate {
        host,
        address,
        native_id,
        started_at,
        status_reason,
        protected,
    } = update;
    sql(format!(
        "UPDATE instances SET status = $1, host = COALESCE($2, host), \
         address = COALESCE($3, address), native_id = COALESCE($4, native_id), \
         protected = COALESCE($5, protected), \
         status_reason = COALESCE($6, status_reason), \
         started_at = COALESCE($7, started_at), updated_at = $8 \
         WHERE tenant = $9 AND id = $10 RETURNING {INSTANCE_COLUMNS}"
    ))
    .bind(status.as_str())
    .bind(host)
    .bind(address)
    .bind(native_id)
    .bind(protected)
    .bind(status_reason)
    .bind(started_at)
    .bind(now)
    .bind(tenant)
    .bind(id)
    .fetch_optional_as(tx, decode_instance)
    .await
}

#[async_trait]
impl<S: SqlStore> InstanceStore for S {
    /// `NotFound` (kind `group`) if the group is not in the instance's tenant; `Conflict`
    /// (kind `instance`) if the id is taken in the tenant. The event is recorded under
    /// `instance.tenant`.
    async fn create_instance(
        &self,
        instance: &InstanceRecord,
        event: Option<NewEvent>,
    ) -> Result<InstanceRecord> {
        let mut tx = self.db().begin().await?;
        lock_group_for_intents(&mut tx, &instance.tenant, &instance.group).await?;
        let stored = insert_intent(&mut tx, instance).await?;
        match &event {
            Some(event) => {
                insert_event_and_commit(tx, &instance.tenant, event).await?;
            }
            None => tx.commit().await?,
        }
        Ok(stored)
    }

    /// `NotFound` (kind `group`) if a group is not in its instance's tenant; `Conflict`
    /// (kind `instance`) if an id is taken in its tenant.
    async fn create_instances(&self, instances: &[InstanceRecord]) -> Result<Vec<InstanceRecord>> {
        if instances.is_empty() {
            // No turn at the writer for nothing.
            return Ok(Vec::new());
        }
        let mut tx = self.db().begin().await?;
        let mut stored = Vec::with_capacity(instances.len());
        // Each group locked once, however many of its intents the batch holds.
        let mut locked = std::collections::HashSet::new();
        for instance in instances {
            if locked.insert((&instance.tenant, instance.group.as_str())) {
                lock_group_for_intents(&mut tx, &instance.tenant, &instance.group).await?;
            }
            stored.push(insert_intent(&mut tx, instance).await?);
        }
        tx.commit().await?;
        Ok(stored)
    }

    async fn set_instance_protected(
        &self,
        tenant: &TenantId,
        group: &str,
        id: &InstanceId,
        protected: bool,
        event: NewEvent,
    ) -> Result<InstanceRecord> {
        let mut tx = self.db().begin().await?;
        let mut inst = fetch_instance(&mut tx, tenant, id)
            .await?
            .filter(|i| i.group == group)
            .ok_or_else(|| not_found("instance", id.as_str()))?;
        if !matches!(
            inst.status,
            InstanceStatus::Pending | InstanceStatus::Running | InstanceStatus::Paused
        ) {
            return Ok(inst);
        }
        inst.protected = protected;
        inst.updated_at = event.at;
        sql("UPDATE instances SET protected = $1, updated_at = $2 WHERE tenant = $3 AND id = $4")
            .bind(protected)
            .bind(event.at)
            .bind(tenant)
            .bind(id)
            .execute(&mut tx)
            .await?;
        insert_event(&mut tx, tenant, &event).await?;
        tx.commit().await?;
        Ok(inst)
    }

    /// Fields of `update` that are `Some` replace the stored ones; `updated_at` becomes
    /// `now`. Transitions are not checked here (the reconciler owns the state machine).
    async fn update_instance(
        &self,
        tenant: &TenantId,
        id: &InstanceId,
        status: InstanceStatus,
        update: InstanceUpdate,
        now: Timestamp,
        event: Option<NewEvent>,
    ) -> Result<InstanceRecord> {
        let mut tx = self.db().begin().await?;
        let inst = move_instance(&mut tx, tenant, id, status, update, now)
            .await?
            .ok_or_else(|| not_found("instance", id.as_str()))?;
        match &event {
            Some(event) => {
                insert_event_and_commit(tx, tenant, event).await?;
            }
            None => tx.commit().await?,
        }
        Ok(inst)
    }

    async fn update_instances(
        &self,
        changes: Vec<InstanceChange>,
    ) -> Result<Vec<Option<InstanceRecord>>> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.db().begin().await?;
        let mut stored = Vec::with_capacity(changes.len());
        let mut events = Vec::new();
        for change in changes {
            let moved = move_instance(
                &mut tx,
                &change.tenant,
                &change.id,
                change.status,
                change.update,
                change.now,
            )
            .await?;
            if moved.is_some()
                && let Some(event) = change.event
            {
                events.push((change.tenant, event));
            }
            stored.push(moved);
        }
        // The events after every row, so a batch never waits for a row while it holds a
        // group's event order (PostgreSQL locks it until the commit), and in the order
        // of their groups, so batches under way at once take those locks in the same
        // order. A group's own events keep theirs (a stable sort).
        events.sort_by(|(ta, a), (tb, b)| (ta, &a.group).cmp(&(tb, &b.group)));
        for (tenant, event) in &events {
            insert_event(&mut tx, tenant, event).await?;
        }
        tx.commit().await?;
        Ok(stored)
    }

    async fn get_instance(
        &self,
        tenant: &TenantId,
        id: &InstanceId,
    ) -> Result<Option<InstanceRecord>> {
        sql(format!(
            "SELECT {INSTANCE_COLUMNS} FROM instances WHERE tenant = $1 AND id = $2"
        ))
        .bind(tenant)
        .bind(id)
        .fetch_optional_as(self.db(), decode_instance)
        .await
    }

    async fn list_instances(
        &self,
        tenant: &TenantId,
        group: &str,
        include_final: bool,
    ) -> Result<Vec<InstanceRecord>> {
        // The live ones' condition is written out, not bound, so both engines read them
        // through the partial index `instances_live_by_group` (not the group's history).
        let live = if include_final {
            ""
        } else {
            "AND status NOT IN ('terminated', 'failed')"
        };
        sql(format!(
            "SELECT {INSTANCE_COLUMNS} FROM instances \
             WHERE tenant = $1 AND group_name = $2 {live} ORDER BY created_order"
        ))
        .bind(tenant)
        .bind(group)
        .fetch_all_as(self.db(), decode_instance)
        .await
    }

    /// Ordered by tenant, group, then `created_order`.
    async fn list_live_instances(&self) -> Result<Vec<InstanceRecord>> {
        sql(format!(
            "SELECT {INSTANCE_COLUMNS} FROM instances \
             WHERE status NOT IN ('terminated', 'failed') \
             ORDER BY tenant, group_name, created_order"
        ))
        .fetch_all_as(self.db(), decode_instance)
        .await
    }

    async fn count_live_instances(&self, tenant: Option<&TenantId>) -> Result<Vec<LiveCount>> {
        let mut q = sql(format!(
            "SELECT tenant, group_name, provider, status, COUNT(*) AS n FROM instances \
             WHERE status NOT IN ('terminated', 'failed') {} \
             GROUP BY tenant, group_name, provider, status \
             ORDER BY tenant, group_name, provider, status",
            if tenant.is_some() {
                "AND tenant = $1"
            } else {
                ""
            }
        ));
        if let Some(tenant) = tenant {
            q = q.bind(tenant);
        }
        q.fetch_all_as(self.db(), |row| {
            let status: String = row.get("status")?;
            let n: i64 = row.get("n")?;
            Ok(LiveCount {
                tenant: row.tenant()?,
                group: row.get("group_name")?,
                provider: row.get("provider")?,
                status: status
                    .parse()
                    .map_err(|e| StoreError::Corrupt(format!("instance status: {e}")))?,
                count: u64::try_from(n).unwrap_or(0),
            })
        })
        .await
    }
}
