//! The SQLite adapter: the default store, one file under the data directory.
//!
//! - **Durability.** WAL journal, `synchronous = FULL`: a create intent is on disk before
//!   the provider is called (DESIGN.md invariant 2).
//! - **Writes** run in `BEGIN IMMEDIATE` transactions, so a transaction that reads before
//!   it writes (`created_order = max + 1`) takes the write lock up front instead of
//!   failing with `SQLITE_BUSY` when it upgrades; writers queue on the 5 s busy timeout.
//! - **Pool.** A file store keeps up to [`FILE_POOL_SIZE`] connections (readers run beside
//!   the one writer). An in-memory store is one private database per connection, so it
//!   uses exactly one connection that is never closed; its callers take turns.
//! - **Tenancy.** Every query filters by the tenant it is given; a foreign tenant's group
//!   or instance is simply absent. An event recorded together with a state change is
//!   stored under the call's tenant, whatever `event.tenant` says, so a caller's mistake
//!   cannot write into another tenant's log.
//! - **Schema** lives in `migrations/`, embedded in the binary and applied on open.
//!   Times are integer milliseconds; a group's spec and an event's cause are JSON.

use crate::{
    EventFilter, EventRecord, GroupRecord, InstanceRecord, InstanceUpdate, NewEvent, Result, Store,
    StoreError,
};
use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};
use std::path::Path;
use std::time::Duration;
use swell_core::{
    Cause, EventKind, GroupSpec, InstanceId, InstanceStatus, Lifecycle, TenantId, Timestamp,
};

/// Connections kept by a file store.
pub const FILE_POOL_SIZE: u32 = 4;

/// How long a statement waits for another connection's write lock before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Events returned by [`Store::list_events`] when the filter sets no limit.
pub const DEFAULT_EVENT_LIMIT: u32 = 1000;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

const GROUP_COLUMNS: &str =
    "tenant, name, spec, desired_capacity, last_scaling_at, deleting, created_at, updated_at";

const INSTANCE_COLUMNS: &str = "tenant, id, group_name, status, lifecycle, created_order, \
     provider, host, address, native_id, protected, status_reason, created_at, started_at, \
     updated_at";

const EVENT_COLUMNS: &str = "id, tenant, group_name, at, kind, instance_id, cause, message";

/// Swell's store on SQLite (see the module documentation for its guarantees).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating it and its parent directory if needed) the database at `path`,
    /// and applies any pending migration.
    pub async fn open(path: &Path) -> Result<Self> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Database(sqlx::Error::Configuration(
                    format!("cannot create the directory {}: {e}", parent.display()).into(),
                ))
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(FILE_POOL_SIZE)
            .connect_with(options)
            .await
            .map_err(StoreError::Database)?;
        Self::migrated(pool).await
    }

    /// A fresh, empty, private in-memory store (for tests and `swell sim`-like tools).
    /// It lives as long as this value (and its clones).
    pub async fn open_in_memory() -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .in_memory(true)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        // Each connection to `:memory:` is its own database: keep exactly one, forever.
        let pool = SqlitePoolOptions::new()
            .min_connections(1)
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(StoreError::Database)?;
        Self::migrated(pool).await
    }

    async fn migrated(pool: SqlitePool) -> Result<Self> {
        MIGRATOR.run(&pool).await.map_err(StoreError::Migration)?;
        Ok(SqliteStore { pool })
    }

    /// The connection pool, for diagnostics and tests (`PRAGMA journal_mode`, …).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Waits for in-flight queries and closes every connection (checkpointing the WAL).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn write(&self) -> Result<Transaction<'static, Sqlite>> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(StoreError::Database)
    }
}

fn db(e: sqlx::Error) -> StoreError {
    StoreError::Database(e)
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

fn not_found(kind: &'static str, name: impl Into<String>) -> StoreError {
    StoreError::NotFound {
        kind,
        name: name.into(),
    }
}

fn millis(t: Timestamp) -> i64 {
    t.as_millis()
}

// ---- decoding: every failure is `Corrupt`, never a panic ----

fn col<'r, T>(row: &'r SqliteRow, name: &str) -> Result<T>
where
    T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
{
    row.try_get(name)
        .map_err(|e| StoreError::Corrupt(format!("column `{name}`: {e}")))
}

fn col_u32(row: &SqliteRow, name: &str) -> Result<u32> {
    let v: i64 = col(row, name)?;
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("column `{name}`: {v} out of range")))
}

fn col_bool(row: &SqliteRow, name: &str) -> Result<bool> {
    match col::<i64>(row, name)? {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(StoreError::Corrupt(format!(
            "column `{name}`: {v} is not a boolean"
        ))),
    }
}

fn col_time(row: &SqliteRow, name: &str) -> Result<Timestamp> {
    col::<i64>(row, name).map(Timestamp::from_millis)
}

fn col_opt_time(row: &SqliteRow, name: &str) -> Result<Option<Timestamp>> {
    col::<Option<i64>>(row, name).map(|v| v.map(Timestamp::from_millis))
}

fn col_tenant(row: &SqliteRow) -> Result<TenantId> {
    let raw: String = col(row, "tenant")?;
    TenantId::new(raw).map_err(|e| StoreError::Corrupt(format!("column `tenant`: {e}")))
}

fn decode_group(row: &SqliteRow) -> Result<GroupRecord> {
    let name: String = col(row, "name")?;
    let raw_spec: String = col(row, "spec")?;
    let spec: GroupSpec = serde_json::from_str(&raw_spec)
        .map_err(|e| StoreError::Corrupt(format!("group `{name}`: spec: {e}")))?;
    if spec.name != name {
        return Err(StoreError::Corrupt(format!(
            "group `{name}`: its spec is named `{}`",
            spec.name
        )));
    }
    Ok(GroupRecord {
        tenant: col_tenant(row)?,
        spec,
        desired_capacity: col_u32(row, "desired_capacity")?,
        last_scaling_at: col_opt_time(row, "last_scaling_at")?,
        deleting: col_bool(row, "deleting")?,
        created_at: col_time(row, "created_at")?,
        updated_at: col_time(row, "updated_at")?,
    })
}

fn decode_instance(row: &SqliteRow) -> Result<InstanceRecord> {
    let id: String = col(row, "id")?;
    let status: String = col(row, "status")?;
    let status = status
        .parse::<InstanceStatus>()
        .map_err(|e| StoreError::Corrupt(format!("instance `{id}`: {e}")))?;
    let lifecycle: String = col(row, "lifecycle")?;
    let lifecycle = lifecycle
        .parse::<Lifecycle>()
        .map_err(|e| StoreError::Corrupt(format!("instance `{id}`: {e}")))?;
    Ok(InstanceRecord {
        tenant: col_tenant(row)?,
        group: col(row, "group_name")?,
        status,
        lifecycle,
        created_order: col(row, "created_order")?,
        provider: col(row, "provider")?,
        host: col(row, "host")?,
        address: col(row, "address")?,
        native_id: col(row, "native_id")?,
        protected: col_bool(row, "protected")?,
        status_reason: col(row, "status_reason")?,
        created_at: col_time(row, "created_at")?,
        started_at: col_opt_time(row, "started_at")?,
        updated_at: col_time(row, "updated_at")?,
        id: InstanceId(id),
    })
}

fn decode_event(row: &SqliteRow) -> Result<EventRecord> {
    let id: i64 = col(row, "id")?;
    let kind: String = col(row, "kind")?;
    let kind = EventKind::parse(&kind)
        .ok_or_else(|| StoreError::Corrupt(format!("event {id}: unknown kind `{kind}`")))?;
    let cause = match col::<Option<String>>(row, "cause")? {
        None => None,
        Some(raw) => Some(
            serde_json::from_str::<Cause>(&raw)
                .map_err(|e| StoreError::Corrupt(format!("event {id}: cause: {e}")))?,
        ),
    };
    Ok(EventRecord {
        id,
        event: NewEvent {
            tenant: col_tenant(row)?,
            group: col(row, "group_name")?,
            at: col_time(row, "at")?,
            kind,
            instance_id: col::<Option<String>>(row, "instance_id")?.map(InstanceId),
            cause,
            message: col(row, "message")?,
        },
    })
}

// ---- statements shared by several methods, run inside a caller's transaction ----

async fn ensure_tenant_in(
    tx: &mut Transaction<'static, Sqlite>,
    tenant: &TenantId,
    now: Timestamp,
) -> Result<()> {
    sqlx::query("INSERT INTO tenants (id, created_at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING")
        .bind(tenant.as_str())
        .bind(millis(now))
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    Ok(())
}

/// Records `event` under `tenant` (the call's tenant, not the event's own field).
async fn insert_event(
    tx: &mut Transaction<'static, Sqlite>,
    tenant: &TenantId,
    event: &NewEvent,
) -> Result<EventRecord> {
    let cause = event
        .cause
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("cannot encode the event's cause: {e}")))?;
    let row = sqlx::query(
        "INSERT INTO events (tenant, group_name, at, kind, instance_id, cause, message) \
         VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(tenant.as_str())
    .bind(&event.group)
    .bind(millis(event.at))
    .bind(event.kind.as_str())
    .bind(event.instance_id.as_ref().map(InstanceId::as_str))
    .bind(cause)
    .bind(&event.message)
    .fetch_one(&mut **tx)
    .await
    .map_err(db)?;
    let mut stored = event.clone();
    stored.tenant = tenant.clone();
    Ok(EventRecord {
        id: col(&row, "id")?,
        event: stored,
    })
}

async fn fetch_group(
    tx: &mut Transaction<'static, Sqlite>,
    tenant: &TenantId,
    name: &str,
) -> Result<Option<GroupRecord>> {
    let row = sqlx::query(&format!(
        "SELECT {GROUP_COLUMNS} FROM scaling_groups WHERE tenant = ? AND name = ?"
    ))
    .bind(tenant.as_str())
    .bind(name)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db)?;
    row.as_ref().map(decode_group).transpose()
}

async fn fetch_instance(
    tx: &mut Transaction<'static, Sqlite>,
    tenant: &TenantId,
    id: &InstanceId,
) -> Result<Option<InstanceRecord>> {
    let row = sqlx::query(&format!(
        "SELECT {INSTANCE_COLUMNS} FROM instances WHERE tenant = ? AND id = ?"
    ))
    .bind(tenant.as_str())
    .bind(id.as_str())
    .fetch_optional(&mut **tx)
    .await
    .map_err(db)?;
    row.as_ref().map(decode_instance).transpose()
}

fn encode_spec(spec: &GroupSpec) -> Result<String> {
    serde_json::to_string(spec)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode group `{}`: {e}", spec.name)))
}

#[async_trait]
impl Store for SqliteStore {
    async fn ensure_tenant(&self, tenant: &TenantId, now: Timestamp) -> Result<()> {
        let mut tx = self.write().await?;
        ensure_tenant_in(&mut tx, tenant, now).await?;
        tx.commit().await.map_err(db)
    }

    /// Also creates the tenant if it does not exist yet.
    async fn create_group(
        &self,
        tenant: &TenantId,
        spec: &GroupSpec,
        now: Timestamp,
        event: NewEvent,
    ) -> Result<GroupRecord> {
        let record = GroupRecord {
            tenant: tenant.clone(),
            spec: spec.clone(),
            desired_capacity: spec.initial_desired(),
            last_scaling_at: None,
            deleting: false,
            created_at: now,
            updated_at: now,
        };
        let mut tx = self.write().await?;
        ensure_tenant_in(&mut tx, tenant, now).await?;
        let inserted = sqlx::query(&format!(
            "INSERT INTO scaling_groups ({GROUP_COLUMNS}) VALUES (?, ?, ?, ?, NULL, 0, ?, ?)"
        ))
        .bind(tenant.as_str())
        .bind(&spec.name)
        .bind(encode_spec(spec)?)
        .bind(i64::from(record.desired_capacity))
        .bind(millis(now))
        .bind(millis(now))
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict {
                    kind: "group",
                    name: spec.name.clone(),
                });
            }
            Err(e) => return Err(db(e)),
        }
        insert_event(&mut tx, tenant, &event).await?;
        tx.commit().await.map_err(db)?;
        Ok(record)
    }

    async fn get_group(&self, tenant: &TenantId, name: &str) -> Result<Option<GroupRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {GROUP_COLUMNS} FROM scaling_groups WHERE tenant = ? AND name = ?"
        ))
        .bind(tenant.as_str())
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(decode_group).transpose()
    }

    async fn list_groups(&self, tenant: &TenantId) -> Result<Vec<GroupRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {GROUP_COLUMNS} FROM scaling_groups WHERE tenant = ? ORDER BY name"
        ))
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(decode_group).collect()
    }

    async fn list_all_groups(&self) -> Result<Vec<GroupRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {GROUP_COLUMNS} FROM scaling_groups ORDER BY tenant, name"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(decode_group).collect()
    }

    async fn update_group(
        &self,
        tenant: &TenantId,
        spec: &GroupSpec,
        now: Timestamp,
        event: NewEvent,
    ) -> Result<GroupRecord> {
        let mut tx = self.write().await?;
        let mut group = fetch_group(&mut tx, tenant, &spec.name)
            .await?
            .ok_or_else(|| not_found("group", &spec.name))?;
        // `clamp` would panic on min > max; a stored spec was validated, but stay total.
        group.desired_capacity = group.desired_capacity.max(spec.min).min(spec.max);
        group.spec = spec.clone();
        group.updated_at = now;
        sqlx::query(
            "UPDATE scaling_groups SET spec = ?, desired_capacity = ?, updated_at = ? \
             WHERE tenant = ? AND name = ?",
        )
        .bind(encode_spec(spec)?)
        .bind(i64::from(group.desired_capacity))
        .bind(millis(now))
        .bind(tenant.as_str())
        .bind(&spec.name)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        insert_event(&mut tx, tenant, &event).await?;
        tx.commit().await.map_err(db)?;
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
        let mut tx = self.write().await?;
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
        sqlx::query(
            "UPDATE scaling_groups SET desired_capacity = ?, last_scaling_at = ?, updated_at = ? \
             WHERE tenant = ? AND name = ?",
        )
        .bind(i64::from(clamped))
        .bind(group.last_scaling_at.map(millis))
        .bind(millis(group.updated_at))
        .bind(tenant.as_str())
        .bind(name)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        insert_event(&mut tx, tenant, &event).await?;
        tx.commit().await.map_err(db)?;
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
        let mut tx = self.write().await?;
        let mut group = fetch_group(&mut tx, tenant, name)
            .await?
            .ok_or_else(|| not_found("group", name))?;
        group.deleting = true;
        group.updated_at = event.at;
        sqlx::query(
            "UPDATE scaling_groups SET deleting = 1, updated_at = ? WHERE tenant = ? AND name = ?",
        )
        .bind(millis(event.at))
        .bind(tenant.as_str())
        .bind(name)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        insert_event(&mut tx, tenant, &event).await?;
        tx.commit().await.map_err(db)?;
        Ok(group)
    }

    async fn delete_group(&self, tenant: &TenantId, name: &str) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query("DELETE FROM instances WHERE tenant = ? AND group_name = ?")
            .bind(tenant.as_str())
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let deleted = sqlx::query("DELETE FROM scaling_groups WHERE tenant = ? AND name = ?")
            .bind(tenant.as_str())
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if deleted.rows_affected() == 0 {
            // Dropping the transaction rolls it back.
            return Err(not_found("group", name));
        }
        tx.commit().await.map_err(db)
    }

    /// `NotFound` (kind `group`) if the group is not in the instance's tenant; `Conflict`
    /// (kind `instance`) if the id is taken in the tenant. The event is recorded under
    /// `instance.tenant`.
    async fn create_instance(
        &self,
        instance: &InstanceRecord,
        event: Option<NewEvent>,
    ) -> Result<InstanceRecord> {
        let tenant = &instance.tenant;
        let mut tx = self.write().await?;
        if fetch_group(&mut tx, tenant, &instance.group)
            .await?
            .is_none()
        {
            return Err(not_found("group", &instance.group));
        }
        let inserted = sqlx::query(&format!(
            "INSERT INTO instances ({INSTANCE_COLUMNS}) VALUES (?, ?, ?, ?, ?, \
             (SELECT COALESCE(MAX(created_order), 0) + 1 FROM instances \
              WHERE tenant = ? AND group_name = ?), \
             ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING created_order"
        ))
        .bind(tenant.as_str())
        .bind(instance.id.as_str())
        .bind(&instance.group)
        .bind(instance.status.as_str())
        .bind(instance.lifecycle.as_str())
        .bind(tenant.as_str())
        .bind(&instance.group)
        .bind(&instance.provider)
        .bind(&instance.host)
        .bind(&instance.address)
        .bind(&instance.native_id)
        .bind(instance.protected)
        .bind(&instance.status_reason)
        .bind(millis(instance.created_at))
        .bind(instance.started_at.map(millis))
        .bind(millis(instance.updated_at))
        .fetch_one(&mut *tx)
        .await;
        let row = match inserted {
            Ok(row) => row,
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict {
                    kind: "instance",
                    name: instance.id.to_string(),
                });
            }
            Err(e) => return Err(db(e)),
        };
        let mut stored = instance.clone();
        stored.created_order = col(&row, "created_order")?;
        if let Some(event) = &event {
            insert_event(&mut tx, tenant, event).await?;
        }
        tx.commit().await.map_err(db)?;
        Ok(stored)
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
        let mut tx = self.write().await?;
        let mut inst = fetch_instance(&mut tx, tenant, id)
            .await?
            .ok_or_else(|| not_found("instance", id.as_str()))?;
        let InstanceUpdate {
            host,
            address,
            native_id,
            started_at,
            status_reason,
            protected,
        } = update;
        inst.status = status;
        inst.updated_at = now;
        if host.is_some() {
            inst.host = host;
        }
        if address.is_some() {
            inst.address = address;
        }
        if native_id.is_some() {
            inst.native_id = native_id;
        }
        if started_at.is_some() {
            inst.started_at = started_at;
        }
        if status_reason.is_some() {
            inst.status_reason = status_reason;
        }
        if let Some(p) = protected {
            inst.protected = p;
        }
        sqlx::query(
            "UPDATE instances SET status = ?, host = ?, address = ?, native_id = ?, \
             protected = ?, status_reason = ?, started_at = ?, updated_at = ? \
             WHERE tenant = ? AND id = ?",
        )
        .bind(inst.status.as_str())
        .bind(&inst.host)
        .bind(&inst.address)
        .bind(&inst.native_id)
        .bind(inst.protected)
        .bind(&inst.status_reason)
        .bind(inst.started_at.map(millis))
        .bind(millis(now))
        .bind(tenant.as_str())
        .bind(id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if let Some(event) = &event {
            insert_event(&mut tx, tenant, event).await?;
        }
        tx.commit().await.map_err(db)?;
        Ok(inst)
    }

    async fn get_instance(
        &self,
        tenant: &TenantId,
        id: &InstanceId,
    ) -> Result<Option<InstanceRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {INSTANCE_COLUMNS} FROM instances WHERE tenant = ? AND id = ?"
        ))
        .bind(tenant.as_str())
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(decode_instance).transpose()
    }

    async fn list_instances(
        &self,
        tenant: &TenantId,
        group: &str,
        include_final: bool,
    ) -> Result<Vec<InstanceRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {INSTANCE_COLUMNS} FROM instances \
             WHERE tenant = ? AND group_name = ? \
               AND (? OR status NOT IN ('terminated', 'failed')) \
             ORDER BY created_order"
        ))
        .bind(tenant.as_str())
        .bind(group)
        .bind(include_final)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(decode_instance).collect()
    }

    /// Ordered by tenant, group, then `created_order`.
    async fn list_live_instances(&self) -> Result<Vec<InstanceRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {INSTANCE_COLUMNS} FROM instances \
             WHERE status NOT IN ('terminated', 'failed') \
             ORDER BY tenant, group_name, created_order"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(decode_instance).collect()
    }

    async fn append_event(&self, event: NewEvent) -> Result<EventRecord> {
        let mut tx = self.write().await?;
        let tenant = event.tenant.clone();
        let record = insert_event(&mut tx, &tenant, &event).await?;
        tx.commit().await.map_err(db)?;
        Ok(record)
    }

    /// `since` ≤ `at` < `until`; `id` > `after_id`. Without `after_id` the newest `limit`
    /// matches are returned (a tail); with it, the oldest `limit` after that id (so a
    /// follower that pages with the last id it saw never skips an event). Either way
    /// oldest first.
    async fn list_events(
        &self,
        tenant: &TenantId,
        group: &str,
        filter: &EventFilter,
    ) -> Result<Vec<EventRecord>> {
        let limit = i64::from(filter.limit.unwrap_or(DEFAULT_EVENT_LIMIT));
        let order = if filter.after_id.is_some() {
            "ASC"
        } else {
            "DESC"
        };
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events \
             WHERE tenant = ? AND group_name = ? \
               AND (? IS NULL OR at >= ?) \
               AND (? IS NULL OR at < ?) \
               AND (? IS NULL OR id > ?) \
             ORDER BY id {order} LIMIT ?"
        ))
        .bind(tenant.as_str())
        .bind(group)
        .bind(filter.since.map(millis))
        .bind(filter.since.map(millis))
        .bind(filter.until.map(millis))
        .bind(filter.until.map(millis))
        .bind(filter.after_id)
        .bind(filter.after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut events = rows.iter().map(decode_event).collect::<Result<Vec<_>>>()?;
        if filter.after_id.is_none() {
            events.reverse();
        }
        Ok(events)
    }
}
