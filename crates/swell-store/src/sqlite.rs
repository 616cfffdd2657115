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
    ApiKeyRecord, AuditRecord, EventFilter, EventRecord, GroupRecord, GroupWrite, InstanceOwner,
    InstanceRecord, InstanceUpdate, NewAudit, NewEvent, Quota, Result, Role, RoleBinding, Sealed,
    Store, StoreError, TenantRecord, TokenRecord, UserRecord, decode_grants, encode_grants,
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
    Cause, EventKind, GroupSpec, InstanceId, InstanceStatus, LearnedState, Lifecycle, LoadSummary,
    TenantId, Timestamp,
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

/// Inserts a group (and its tenant, if new) and records `event`: [`Store::create_group`]
/// inside a caller's transaction.
async fn create_group_in(
    tx: &mut Transaction<'static, Sqlite>,
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
        created_at: now,
        updated_at: now,
    };
    ensure_tenant_in(tx, tenant, now).await?;
    let inserted = sqlx::query(&format!(
        "INSERT INTO scaling_groups ({GROUP_COLUMNS}) VALUES (?, ?, ?, ?, NULL, 0, ?, ?)"
    ))
    .bind(tenant.as_str())
    .bind(&spec.name)
    .bind(encode_spec(spec)?)
    .bind(i64::from(record.desired_capacity))
    .bind(millis(now))
    .bind(millis(now))
    .execute(&mut **tx)
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
    insert_event(tx, tenant, event).await?;
    Ok(record)
}

/// Replaces a group's spec, clamps its desired capacity, records `event`:
/// [`Store::update_group`] inside a caller's transaction.
async fn update_group_in(
    tx: &mut Transaction<'static, Sqlite>,
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
    sqlx::query(
        "UPDATE scaling_groups SET spec = ?, desired_capacity = ?, updated_at = ? \
             WHERE tenant = ? AND name = ?",
    )
    .bind(encode_spec(spec)?)
    .bind(i64::from(group.desired_capacity))
    .bind(millis(now))
    .bind(tenant.as_str())
    .bind(&spec.name)
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    insert_event(tx, tenant, event).await?;
    Ok(group)
}

/// Marks a group for deletion and records `event`: [`Store::mark_group_deleting`] inside
/// a caller's transaction.
async fn mark_group_deleting_in(
    tx: &mut Transaction<'static, Sqlite>,
    tenant: &TenantId,
    name: &str,
    event: &NewEvent,
) -> Result<GroupRecord> {
    let mut group = fetch_group(tx, tenant, name)
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
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    insert_event(tx, tenant, event).await?;
    Ok(group)
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

// ---- identity rows ----

const TENANT_COLUMNS: &str = "id, created_at, display_name, description, max_instances, \
     max_vcpus, max_memory_mb, max_groups, grants, deleting, updated_at";

const USER_COLUMNS: &str = "name, password_hash, is_admin, created_at, password_changed_at";

const API_KEY_COLUMNS: &str = "hash, tenant, name, role, created_by, created_at";

fn col_opt_u32(row: &SqliteRow, name: &str) -> Result<Option<u32>> {
    col::<Option<i64>>(row, name)?
        .map(|v| {
            u32::try_from(v)
                .map_err(|_| StoreError::Corrupt(format!("column `{name}`: {v} out of range")))
        })
        .transpose()
}

fn decode_tenant(row: &SqliteRow) -> Result<TenantRecord> {
    let id: String = col(row, "id")?;
    let max_memory_mb = col::<Option<i64>>(row, "max_memory_mb")?
        .map(|v| {
            u64::try_from(v).map_err(|_| {
                StoreError::Corrupt(format!("column `max_memory_mb`: {v} out of range"))
            })
        })
        .transpose()?;
    Ok(TenantRecord {
        id: TenantId::new(id).map_err(|e| StoreError::Corrupt(format!("column `id`: {e}")))?,
        display_name: col(row, "display_name")?,
        description: col(row, "description")?,
        quota: Quota {
            max_instances: col_opt_u32(row, "max_instances")?,
            max_vcpus: col_opt_u32(row, "max_vcpus")?,
            max_memory_mb,
            max_groups: col_opt_u32(row, "max_groups")?,
        },
        grants: decode_grants(&col::<String>(row, "grants")?)?,
        deleting: col_bool(row, "deleting")?,
        created_at: col_time(row, "created_at")?,
        updated_at: col_time(row, "updated_at")?,
    })
}

fn decode_user(row: &SqliteRow) -> Result<UserRecord> {
    Ok(UserRecord {
        name: col(row, "name")?,
        password_hash: col(row, "password_hash")?,
        is_admin: col_bool(row, "is_admin")?,
        created_at: col_time(row, "created_at")?,
        password_changed_at: col_time(row, "password_changed_at")?,
    })
}

fn decode_api_key(row: &SqliteRow) -> Result<ApiKeyRecord> {
    let role: String = col(row, "role")?;
    Ok(ApiKeyRecord {
        hash: col(row, "hash")?,
        tenant: col_tenant(row)?,
        name: col(row, "name")?,
        role: role.parse().map_err(StoreError::Corrupt)?,
        created_by: col(row, "created_by")?,
        created_at: col_time(row, "created_at")?,
    })
}

/// `NotFound` (kind `user` or `tenant`) unless both exist.
async fn user_and_tenant_exist(
    tx: &mut Transaction<'static, Sqlite>,
    user: &str,
    tenant: &TenantId,
) -> Result<()> {
    let u: Option<i64> = sqlx::query_scalar("SELECT 1 FROM users WHERE name = ?")
        .bind(user)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db)?;
    if u.is_none() {
        return Err(not_found("user", user));
    }
    let t: Option<i64> = sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = ?")
        .bind(tenant.as_str())
        .fetch_optional(&mut **tx)
        .await
        .map_err(db)?;
    if t.is_none() {
        return Err(not_found("tenant", tenant.as_str()));
    }
    Ok(())
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
        let mut tx = self.write().await?;
        let record = create_group_in(&mut tx, tenant, spec, now, &event).await?;
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
        let group = update_group_in(&mut tx, tenant, spec, now, &event).await?;
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
        let group = mark_group_deleting_in(&mut tx, tenant, name, &event).await?;
        tx.commit().await.map_err(db)?;
        Ok(group)
    }

    async fn apply_groups(
        &self,
        tenant: &TenantId,
        writes: &[GroupWrite],
        now: Timestamp,
    ) -> Result<Vec<GroupRecord>> {
        let mut tx = self.write().await?;
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
        tx.commit().await.map_err(db)?;
        Ok(records)
    }

    async fn delete_group(&self, tenant: &TenantId, name: &str) -> Result<()> {
        let mut tx = self.write().await?;
        for table in ["instances", "load_history", "learned_state"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE tenant = ? AND group_name = ?"
            ))
            .bind(tenant.as_str())
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
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

    async fn append_load_history(
        &self,
        tenant: &TenantId,
        group: &str,
        summaries: &[LoadSummary],
    ) -> Result<()> {
        let mut tx = self.write().await?;
        let exists = sqlx::query("SELECT 1 FROM scaling_groups WHERE tenant = ? AND name = ?")
            .bind(tenant.as_str())
            .bind(group)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        if exists.is_none() {
            return Err(not_found("group", group));
        }
        for s in summaries {
            sqlx::query(
                "INSERT OR REPLACE INTO load_history (tenant, group_name, metric, at, mean, max) \
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(tenant.as_str())
            .bind(group)
            .bind(s.metric.as_str())
            .bind(millis(s.at))
            .bind(s.mean)
            .bind(s.max)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn load_history(
        &self,
        tenant: &TenantId,
        group: &str,
        since: Timestamp,
    ) -> Result<Vec<LoadSummary>> {
        let rows = sqlx::query(
            "SELECT metric, at, mean, max FROM load_history \
             WHERE tenant = ? AND group_name = ? AND at >= ? ORDER BY at, metric",
        )
        .bind(tenant.as_str())
        .bind(group)
        .bind(millis(since))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|row| {
                let metric: String = col(row, "metric")?;
                let metric = serde_json::from_value(serde_json::Value::String(metric))
                    .map_err(|e| StoreError::Corrupt(format!("column `metric`: {e}")))?;
                Ok(LoadSummary {
                    at: col_time(row, "at")?,
                    metric,
                    mean: col(row, "mean")?,
                    max: col(row, "max")?,
                })
            })
            .collect()
    }

    async fn save_learned_states(
        &self,
        tenant: &TenantId,
        group: &str,
        states: &[LearnedState],
        at: Timestamp,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        let exists = sqlx::query("SELECT 1 FROM scaling_groups WHERE tenant = ? AND name = ?")
            .bind(tenant.as_str())
            .bind(group)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        if exists.is_none() {
            return Err(not_found("group", group));
        }
        sqlx::query("DELETE FROM learned_state WHERE tenant = ? AND group_name = ?")
            .bind(tenant.as_str())
            .bind(group)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        for s in states {
            sqlx::query(
                "INSERT INTO learned_state (tenant, group_name, policy, state, saved_at) \
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(tenant.as_str())
            .bind(group)
            .bind(&s.policy)
            .bind(s.state.to_string())
            .bind(millis(at))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn learned_states(&self, tenant: &TenantId, group: &str) -> Result<Vec<LearnedState>> {
        let rows = sqlx::query(
            "SELECT policy, state FROM learned_state \
             WHERE tenant = ? AND group_name = ? ORDER BY policy",
        )
        .bind(tenant.as_str())
        .bind(group)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|row| {
                let state: String = col(row, "state")?;
                Ok(LearnedState {
                    policy: col(row, "policy")?,
                    state: serde_json::from_str(&state)
                        .map_err(|e| StoreError::Corrupt(format!("column `state`: {e}")))?,
                })
            })
            .collect()
    }

    async fn prune_load_history(
        &self,
        tenant: &TenantId,
        group: &str,
        before: Timestamp,
    ) -> Result<u64> {
        let mut tx = self.write().await?;
        let done =
            sqlx::query("DELETE FROM load_history WHERE tenant = ? AND group_name = ? AND at < ?")
                .bind(tenant.as_str())
                .bind(group)
                .bind(millis(before))
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(done.rows_affected())
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

    async fn create_tenant(&self, tenant: &TenantRecord) -> Result<TenantRecord> {
        let q = &tenant.quota;
        let inserted = sqlx::query(
            "INSERT INTO tenants (id, created_at, display_name, description, max_instances, \
             max_vcpus, max_memory_mb, max_groups, grants, deleting, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(tenant.id.as_str())
        .bind(millis(tenant.created_at))
        .bind(&tenant.display_name)
        .bind(&tenant.description)
        .bind(q.max_instances.map(i64::from))
        .bind(q.max_vcpus.map(i64::from))
        .bind(q.max_memory_mb.map(|v| v as i64))
        .bind(q.max_groups.map(i64::from))
        .bind(encode_grants(&tenant.grants)?)
        .bind(tenant.deleting)
        .bind(millis(tenant.updated_at))
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => Ok(tenant.clone()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict {
                kind: "tenant",
                name: tenant.id.to_string(),
            }),
            Err(e) => Err(db(e)),
        }
    }

    async fn get_tenant(&self, id: &TenantId) -> Result<Option<TenantRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants WHERE id = ?"
        ))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(decode_tenant).transpose()
    }

    async fn list_tenants(&self) -> Result<Vec<TenantRecord>> {
        let rows = sqlx::query(&format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY id"))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(decode_tenant).collect()
    }

    async fn update_tenant(&self, tenant: &TenantRecord) -> Result<TenantRecord> {
        let q = &tenant.quota;
        let updated = sqlx::query(
            "UPDATE tenants SET display_name = ?, description = ?, max_instances = ?, \
             max_vcpus = ?, max_memory_mb = ?, max_groups = ?, grants = ?, deleting = ?, \
             updated_at = ? WHERE id = ?",
        )
        .bind(&tenant.display_name)
        .bind(&tenant.description)
        .bind(q.max_instances.map(i64::from))
        .bind(q.max_vcpus.map(i64::from))
        .bind(q.max_memory_mb.map(|v| v as i64))
        .bind(q.max_groups.map(i64::from))
        .bind(encode_grants(&tenant.grants)?)
        .bind(tenant.deleting)
        .bind(millis(tenant.updated_at))
        .bind(tenant.id.as_str())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        if updated.rows_affected() == 0 {
            return Err(not_found("tenant", tenant.id.as_str()));
        }
        self.get_tenant(&tenant.id)
            .await?
            .ok_or_else(|| not_found("tenant", tenant.id.as_str()))
    }

    async fn delete_tenant(&self, id: &TenantId) -> Result<()> {
        let mut tx = self.write().await?;
        let groups: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM scaling_groups WHERE tenant = ?")
                .bind(id.as_str())
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?;
        if groups > 0 {
            return Err(StoreError::Conflict {
                kind: "tenant",
                name: format!("{id}` still has {groups} group(s); `{id}"),
            });
        }
        let deleted = sqlx::query("DELETE FROM tenants WHERE id = ?")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if deleted.rows_affected() == 0 {
            return Err(not_found("tenant", id.as_str()));
        }
        tx.commit().await.map_err(db)
    }

    async fn get_quota(&self, tenant: &TenantId) -> Result<Quota> {
        let own = self
            .get_tenant(tenant)
            .await?
            .ok_or_else(|| not_found("tenant", tenant.as_str()))?
            .quota;
        let default = self.get_default_quota().await?;
        Ok(Quota {
            max_instances: own.max_instances.or(default.max_instances),
            max_vcpus: own.max_vcpus.or(default.max_vcpus),
            max_memory_mb: own.max_memory_mb.or(default.max_memory_mb),
            max_groups: own.max_groups.or(default.max_groups),
        })
    }

    async fn get_default_quota(&self) -> Result<Quota> {
        let raw: Option<String> =
            sqlx::query_scalar("SELECT value FROM settings WHERE key = 'default_quota'")
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        let Some(raw) = raw else {
            return Ok(Quota::default());
        };
        let v: serde_json::Value = serde_json::from_str(&raw)
            .map_err(|e| StoreError::Corrupt(format!("setting `default_quota`: {e}")))?;
        let field = |k: &str| -> Result<Option<u64>> {
            match v.get(k) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(x) => x.as_u64().map(Some).ok_or_else(|| {
                    StoreError::Corrupt(format!("setting `default_quota`: `{k}` is not a count"))
                }),
            }
        };
        let small = |k: &str| -> Result<Option<u32>> {
            field(k)?
                .map(|n| {
                    u32::try_from(n).map_err(|_| {
                        StoreError::Corrupt(format!("setting `default_quota`: `{k}` too large"))
                    })
                })
                .transpose()
        };
        Ok(Quota {
            max_instances: small("max_instances")?,
            max_vcpus: small("max_vcpus")?,
            max_memory_mb: field("max_memory_mb")?,
            max_groups: small("max_groups")?,
        })
    }

    async fn set_default_quota(&self, quota: &Quota) -> Result<()> {
        let value = serde_json::json!({
            "max_instances": quota.max_instances,
            "max_vcpus": quota.max_vcpus,
            "max_memory_mb": quota.max_memory_mb,
            "max_groups": quota.max_groups,
        });
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ('default_quota', ?) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(value.to_string())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn create_user(&self, user: &UserRecord) -> Result<()> {
        let inserted = sqlx::query(
            "INSERT INTO users (name, password_hash, is_admin, created_at, password_changed_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&user.name)
        .bind(&user.password_hash)
        .bind(user.is_admin)
        .bind(millis(user.created_at))
        .bind(millis(user.password_changed_at))
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict {
                kind: "user",
                name: user.name.clone(),
            }),
            Err(e) => Err(db(e)),
        }
    }

    async fn get_user(&self, name: &str) -> Result<Option<UserRecord>> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(decode_user).transpose()
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>> {
        let rows = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY name"))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(decode_user).collect()
    }

    async fn delete_user(&self, name: &str) -> Result<()> {
        let deleted = sqlx::query("DELETE FROM users WHERE name = ?")
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        if deleted.rows_affected() == 0 {
            return Err(not_found("user", name));
        }
        Ok(())
    }

    async fn set_password(&self, name: &str, password_hash: &str, now: Timestamp) -> Result<()> {
        let mut tx = self.write().await?;
        let updated = sqlx::query(
            "UPDATE users SET password_hash = ?, password_changed_at = ? WHERE name = ?",
        )
        .bind(password_hash)
        .bind(millis(now))
        .bind(name)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if updated.rows_affected() == 0 {
            return Err(not_found("user", name));
        }
        sqlx::query("UPDATE tokens SET revoked = 1 WHERE user_name = ?")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn set_role(
        &self,
        user: &str,
        tenant: &TenantId,
        role: Role,
        now: Timestamp,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        user_and_tenant_exist(&mut tx, user, tenant).await?;
        sqlx::query(
            "INSERT INTO role_bindings (user_name, tenant, role, created_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (user_name, tenant) DO UPDATE SET role = excluded.role",
        )
        .bind(user)
        .bind(tenant.as_str())
        .bind(role.as_str())
        .bind(millis(now))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn remove_role(&self, user: &str, tenant: &TenantId) -> Result<()> {
        let deleted = sqlx::query("DELETE FROM role_bindings WHERE user_name = ? AND tenant = ?")
            .bind(user)
            .bind(tenant.as_str())
            .execute(&self.pool)
            .await
            .map_err(db)?;
        if deleted.rows_affected() == 0 {
            return Err(not_found("role", format!("{user}@{tenant}")));
        }
        Ok(())
    }

    async fn get_role(&self, user: &str, tenant: &TenantId) -> Result<Option<Role>> {
        let raw: Option<String> =
            sqlx::query_scalar("SELECT role FROM role_bindings WHERE user_name = ? AND tenant = ?")
                .bind(user)
                .bind(tenant.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        raw.map(|r| r.parse::<Role>().map_err(StoreError::Corrupt))
            .transpose()
    }

    async fn list_roles(&self, tenant: &TenantId) -> Result<Vec<RoleBinding>> {
        let rows = sqlx::query(
            "SELECT user_name, tenant, role FROM role_bindings WHERE tenant = ? ORDER BY user_name",
        )
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|row| {
                let role: String = col(row, "role")?;
                Ok(RoleBinding {
                    user: col(row, "user_name")?,
                    tenant: col_tenant(row)?,
                    role: role.parse().map_err(StoreError::Corrupt)?,
                })
            })
            .collect()
    }

    async fn add_instance_owner(&self, owner: &InstanceOwner, now: Timestamp) -> Result<()> {
        let mut tx = self.write().await?;
        if fetch_instance(&mut tx, &owner.tenant, &owner.instance)
            .await?
            .is_none()
        {
            return Err(not_found("instance", owner.instance.as_str()));
        }
        user_and_tenant_exist(&mut tx, &owner.user, &owner.tenant).await?;
        sqlx::query(
            "INSERT INTO instance_owners (tenant, instance_id, user_name, created_at) \
             VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(owner.tenant.as_str())
        .bind(owner.instance.as_str())
        .bind(&owner.user)
        .bind(millis(now))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn remove_instance_owner(&self, owner: &InstanceOwner) -> Result<()> {
        let deleted = sqlx::query(
            "DELETE FROM instance_owners WHERE tenant = ? AND instance_id = ? AND user_name = ?",
        )
        .bind(owner.tenant.as_str())
        .bind(owner.instance.as_str())
        .bind(&owner.user)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        if deleted.rows_affected() == 0 {
            return Err(not_found(
                "instance owner",
                format!("{} of {}", owner.user, owner.instance),
            ));
        }
        Ok(())
    }

    async fn list_instance_owners(
        &self,
        tenant: &TenantId,
        user: Option<&str>,
    ) -> Result<Vec<InstanceOwner>> {
        let rows = sqlx::query(
            "SELECT tenant, instance_id, user_name FROM instance_owners \
             WHERE tenant = ? AND (? IS NULL OR user_name = ?) ORDER BY instance_id, user_name",
        )
        .bind(tenant.as_str())
        .bind(user)
        .bind(user)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|row| {
                Ok(InstanceOwner {
                    tenant: col_tenant(row)?,
                    instance: InstanceId(col(row, "instance_id")?),
                    user: col(row, "user_name")?,
                })
            })
            .collect()
    }

    async fn create_token(&self, token: &TokenRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO tokens (hash, user_name, tenant, created_at, expires_at, revoked) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&token.hash)
        .bind(&token.user)
        .bind(token.tenant.as_str())
        .bind(millis(token.created_at))
        .bind(millis(token.expires_at))
        .bind(token.revoked)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn get_token(&self, hash: &str) -> Result<Option<TokenRecord>> {
        let row = sqlx::query(
            "SELECT hash, user_name, tenant, created_at, expires_at, revoked FROM tokens \
             WHERE hash = ?",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref()
            .map(|row| {
                Ok(TokenRecord {
                    hash: col(row, "hash")?,
                    user: col(row, "user_name")?,
                    tenant: col_tenant(row)?,
                    created_at: col_time(row, "created_at")?,
                    expires_at: col_time(row, "expires_at")?,
                    revoked: col_bool(row, "revoked")?,
                })
            })
            .transpose()
    }

    async fn revoke_token(&self, hash: &str) -> Result<()> {
        let updated = sqlx::query("UPDATE tokens SET revoked = 1 WHERE hash = ?")
            .bind(hash)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        if updated.rows_affected() == 0 {
            return Err(not_found("token", "(hidden)"));
        }
        Ok(())
    }

    async fn revoke_user_tokens(&self, user: &str) -> Result<u64> {
        let updated =
            sqlx::query("UPDATE tokens SET revoked = 1 WHERE user_name = ? AND revoked = 0")
                .bind(user)
                .execute(&self.pool)
                .await
                .map_err(db)?;
        Ok(updated.rows_affected())
    }

    async fn create_api_key(&self, key: &ApiKeyRecord) -> Result<()> {
        let mut tx = self.write().await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = ?")
            .bind(key.tenant.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        if exists.is_none() {
            return Err(not_found("tenant", key.tenant.as_str()));
        }
        let inserted = sqlx::query(
            "INSERT INTO api_keys (hash, tenant, name, role, created_by, created_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&key.hash)
        .bind(key.tenant.as_str())
        .bind(&key.name)
        .bind(key.role.as_str())
        .bind(&key.created_by)
        .bind(millis(key.created_at))
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => tx.commit().await.map_err(db),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict {
                kind: "api key",
                name: key.name.clone(),
            }),
            Err(e) => Err(db(e)),
        }
    }

    async fn get_api_key(&self, hash: &str) -> Result<Option<ApiKeyRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE hash = ?"
        ))
        .bind(hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(decode_api_key).transpose()
    }

    async fn list_api_keys(&self, tenant: &TenantId) -> Result<Vec<ApiKeyRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE tenant = ? ORDER BY name"
        ))
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(decode_api_key).collect()
    }

    async fn delete_api_key(&self, tenant: &TenantId, name: &str) -> Result<()> {
        let deleted = sqlx::query("DELETE FROM api_keys WHERE tenant = ? AND name = ?")
            .bind(tenant.as_str())
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        if deleted.rows_affected() == 0 {
            return Err(not_found("api key", name));
        }
        Ok(())
    }

    async fn append_audit(&self, entry: &NewAudit) -> Result<AuditRecord> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO audit_log (at, user_name, tenant, action, target, source, result) \
             VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(millis(entry.at))
        .bind(&entry.user)
        .bind(entry.tenant.as_ref().map(TenantId::as_str))
        .bind(&entry.action)
        .bind(&entry.target)
        .bind(&entry.source)
        .bind(i64::from(entry.result))
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        Ok(AuditRecord {
            id,
            entry: entry.clone(),
        })
    }

    async fn list_audit(
        &self,
        tenant: Option<&TenantId>,
        limit: Option<u32>,
    ) -> Result<Vec<AuditRecord>> {
        let t = tenant.map(TenantId::as_str);
        let rows = sqlx::query(
            "SELECT id, at, user_name, tenant, action, target, source, result FROM audit_log \
             WHERE (? IS NULL OR tenant = ?) ORDER BY id DESC LIMIT ?",
        )
        .bind(t)
        .bind(t)
        .bind(i64::from(limit.unwrap_or(DEFAULT_EVENT_LIMIT)))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut out = rows
            .iter()
            .map(|row| {
                let tenant = col::<Option<String>>(row, "tenant")?
                    .map(|t| {
                        TenantId::new(t)
                            .map_err(|e| StoreError::Corrupt(format!("audit tenant: {e}")))
                    })
                    .transpose()?;
                let result: i64 = col(row, "result")?;
                Ok(AuditRecord {
                    id: col(row, "id")?,
                    entry: NewAudit {
                        at: col_time(row, "at")?,
                        user: col(row, "user_name")?,
                        tenant,
                        action: col(row, "action")?,
                        target: col(row, "target")?,
                        source: col(row, "source")?,
                        result: u16::try_from(result).map_err(|_| {
                            StoreError::Corrupt(format!("audit result {result} out of range"))
                        })?,
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        out.reverse();
        Ok(out)
    }

    async fn put_credential(
        &self,
        tenant: &TenantId,
        name: &str,
        sealed: &Sealed,
        now: Timestamp,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO provider_credentials (tenant, name, sealed, updated_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (tenant, name) DO UPDATE SET sealed = excluded.sealed, \
             updated_at = excluded.updated_at",
        )
        .bind(tenant.as_str())
        .bind(name)
        .bind(&sealed.0)
        .bind(millis(now))
        .execute(&self.pool)
        .await
        .map_err(|e| {
            if e.as_database_error()
                .is_some_and(|d| d.is_foreign_key_violation())
            {
                not_found("tenant", tenant.as_str())
            } else {
                db(e)
            }
        })?;
        Ok(())
    }

    async fn get_credential(&self, tenant: &TenantId, name: &str) -> Result<Option<Sealed>> {
        let raw: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT sealed FROM provider_credentials WHERE tenant = ? AND name = ?",
        )
        .bind(tenant.as_str())
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        Ok(raw.map(Sealed))
    }
}
