//! The PostgreSQL adapter: one database shared by the server, for deployments that
//! want PostgreSQL's durability, backups and replication (DESIGN.md: "PostgreSQL for
//! HA"). It passes the same conformance suite as [`crate::SqliteStore`].
//!
//! - **Concurrency.** Transactions run at PostgreSQL's default `READ COMMITTED`, and
//!   every read-modify-write locks what it reads: a group's row is read `FOR NO KEY
//!   UPDATE` before its desired capacity, spec or instances change (so two scaling
//!   decisions cannot lose one another, and `created_order = max + 1` is computed by one
//!   transaction at a time per group), an instance's row `FOR UPDATE` before it moves.
//!   We chose row locks over `SERIALIZABLE` with retries because every write here knows
//!   up front which one row it depends on: a lock makes the second writer wait for the
//!   first instead of failing and redoing its work, and no retry loop can hide a bug.
//!   Writes to different groups never wait for each other (SQLite serialises them all).
//! - **Event order.** An event's id comes from an identity sequence, and sequence values
//!   are handed out in call order, not commit order: two transactions could commit ids 8
//!   and 7 in that order, and a follower paging with `after_id = 8` would never see 7.
//!   So each transaction that records an event first takes a transaction-level advisory
//!   lock on the event's tenant and group ([`EVENT_LOCK_CLASS`]); within a group, ids
//!   then become visible in increasing order, as they do in SQLite.
//! - **Tenancy.** As in SQLite: every query filters by the tenant it is given, and an
//!   event recorded with a state change is stored under the call's tenant.
//! - **Schema** lives in `migrations-postgres/`, embedded in the binary and applied on
//!   connect (sqlx holds an advisory lock while it migrates, so two servers starting at
//!   once do not both migrate). Times are BIGINT milliseconds, booleans BOOLEAN, JSON
//!   documents TEXT (they round-trip byte for byte, like SQLite's); ordered names are
//!   `COLLATE "C"`, so listings are in byte order whatever the database's locale.
//! - **One server per database.** The controller cannot yet share groups between
//!   servers, so `swell serve` holds [`PgStore::lock_server`] for its lifetime; a second
//!   server on the same database refuses to start ([`LockError::Held`]).

use crate::sqlite::DEFAULT_EVENT_LIMIT;
use crate::{
    ApiKeyRecord, AuditRecord, EventFilter, EventRecord, GroupRecord, GroupWrite, InstanceOwner,
    InstanceRecord, InstanceUpdate, NewAudit, NewEvent, Quota, Result, Role, RoleBinding, Sealed,
    Store, StoreError, TenantRecord, TokenRecord, UserRecord, decode_grants, encode_grants,
};
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Connection, Postgres, Row, Transaction};
use std::str::FromStr;
use swell_core::{
    Cause, EventKind, GroupSpec, InstanceId, InstanceStatus, LearnedState, Lifecycle, LoadSummary,
    TenantId, Timestamp,
};

/// Connections kept by the pool: the controller's group workers, the API and the
/// reconciler share them.
pub const POOL_SIZE: u32 = 8;

/// The key of the session-level advisory lock a server holds on its database
/// (`pg_try_advisory_lock(bigint)`): the bytes of `SWELL_SV`.
pub const SERVER_LOCK_KEY: i64 = 0x5357_454c_4c5f_5356;

/// The first key of the transaction-level advisory locks that order events per group
/// (`pg_advisory_xact_lock(int, int)`, the second key a hash of tenant and group): the
/// bytes of `SWEV`. PostgreSQL keeps the one-bigint and two-int key spaces apart, so
/// these never meet [`SERVER_LOCK_KEY`].
pub const EVENT_LOCK_CLASS: i32 = 0x5357_4556;

/// The `application_name` of Swell's connections, so that `pg_stat_activity` (and the
/// "another server holds this database" error) can tell them apart.
pub const APPLICATION_NAME: &str = "swell";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations-postgres");

const GROUP_COLUMNS: &str =
    "tenant, name, spec, desired_capacity, last_scaling_at, deleting, created_at, updated_at";

const INSTANCE_COLUMNS: &str = "tenant, id, group_name, status, lifecycle, created_order, \
     provider, host, address, native_id, protected, status_reason, created_at, started_at, \
     updated_at";

const EVENT_COLUMNS: &str = "id, tenant, group_name, at, kind, instance_id, cause, message";

/// Why [`PgStore::lock_server`] could not take the server lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another session (another `swell serve`) holds it.
    #[error(
        "another swell server holds this database ({holder}); \
         only one server may manage a database's groups: stop the other one, \
         or give this one its own database"
    )]
    Held {
        /// Who holds it, as PostgreSQL reports it (backend pid, client address, since).
        holder: String,
    },
    /// The database failed.
    #[error("cannot take the server lock: {0}")]
    Database(#[source] sqlx::Error),
}

/// The server lock: a dedicated connection holding the session-level advisory lock
/// [`SERVER_LOCK_KEY`]. PostgreSQL releases the lock when that session ends, so it is
/// released when this value is dropped (the connection closes), when the process dies,
/// or when the connection is lost.
#[derive(Debug)]
pub struct ServerLock {
    conn: Option<PgConnection>,
}

impl ServerLock {
    /// Whether the lock's session is still alive (if the connection was lost, PostgreSQL
    /// has released the lock and another server may have taken it).
    pub async fn is_held(&mut self) -> bool {
        match self.conn.as_mut() {
            Some(conn) => conn.ping().await.is_ok(),
            None => false,
        }
    }

    /// Releases the lock and closes its connection.
    pub async fn release(mut self) -> Result<(), LockError> {
        if let Some(mut conn) = self.conn.take() {
            sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(SERVER_LOCK_KEY)
                .execute(&mut conn)
                .await
                .map_err(LockError::Database)?;
            conn.close().await.map_err(LockError::Database)?;
        }
        Ok(())
    }
}

/// Swell's store on PostgreSQL (see the module documentation for its guarantees).
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// `postgres://user@host:port/database`, without the password, for messages.
    display: String,
}

impl std::fmt::Debug for PgStore {
    // Not derived: the pool's options hold the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("database", &self.display)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db`, or
    /// `postgres:///db?host=/run/postgresql` for a unix socket) and applies any pending
    /// migration. The database must exist; the schema is created in it.
    pub async fn connect(url: &str) -> Result<Self> {
        let options = PgConnectOptions::from_str(url).map_err(StoreError::Database)?;
        Self::connect_with(options).await
    }

    /// [`PgStore::connect`] with parsed options.
    pub async fn connect_with(options: PgConnectOptions) -> Result<Self> {
        let display = display_options(&options);
        let options = options.application_name(APPLICATION_NAME);
        // One connection first: a wrong address or password fails now with the server's
        // own error, where the pool would retry until its acquire timeout (30 s).
        let mut conn = options.connect().await.map_err(StoreError::Database)?;
        MIGRATOR
            .run(&mut conn)
            .await
            .map_err(StoreError::Migration)?;
        let _ = conn.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .connect_with(options)
            .await
            .map_err(StoreError::Database)?;
        Ok(PgStore { pool, display })
    }

    /// The connection pool, for diagnostics and tests.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The database, as `postgres://user@host:port/database` (no password).
    pub fn display_url(&self) -> &str {
        &self.display
    }

    /// Waits for in-flight queries and closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Takes the server lock on this database, or fails with [`LockError::Held`] at once
    /// if another session holds it. Hold the returned value for as long as this process
    /// manages the database's groups.
    pub async fn lock_server(&self) -> Result<ServerLock, LockError> {
        // A connection of its own, taken out of the pool: the lock belongs to a session,
        // and a pooled connection would be handed to other queries and recycled.
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(LockError::Database)?
            .detach();
        let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(SERVER_LOCK_KEY)
            .fetch_one(&mut conn)
            .await
            .map_err(LockError::Database)?;
        if taken {
            return Ok(ServerLock { conn: Some(conn) });
        }
        // Best effort: say who holds it, so the operator can find the other server.
        let holder: Option<String> = sqlx::query_scalar(
            "SELECT format('PostgreSQL backend pid %s, client %s, application %L, since %s', \
                    l.pid, COALESCE(host(a.client_addr), 'local socket'), \
                    a.application_name, a.backend_start) \
             FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND l.database = \
                   (SELECT oid FROM pg_database WHERE datname = current_database()) \
               AND l.classid = (($1 >> 32) & 4294967295)::oid \
               AND l.objid = ($1 & 4294967295)::oid AND l.objsubid = 1 \
             LIMIT 1",
        )
        .bind(SERVER_LOCK_KEY)
        .fetch_optional(&mut conn)
        .await
        .ok()
        .flatten();
        let _ = conn.close().await;
        Err(LockError::Held {
            holder: holder.unwrap_or_else(|| "holder unknown".into()),
        })
    }

    async fn begin(&self) -> Result<Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(StoreError::Database)
    }
}

fn display_options(o: &PgConnectOptions) -> String {
    format!(
        "postgres://{}@{}:{}/{}",
        o.get_username(),
        o.get_host(),
        o.get_port(),
        o.get_database().unwrap_or(o.get_username()),
    )
}

/// Orders this transaction's events after those of every earlier transaction on the
/// same group (see the module documentation): held until commit or rollback.
async fn lock_event_order(
    tx: &mut Transaction<'static, Postgres>,
    tenant: &TenantId,
    group: &str,
) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(EVENT_LOCK_CLASS)
        .bind(format!("{tenant}/{group}"))
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    Ok(())
}

fn db(e: sqlx::Error) -> StoreError {
    StoreError::Database(e)
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_foreign_key_violation())
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

fn col<'r, T>(row: &'r PgRow, name: &str) -> Result<T>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    row.try_get(name)
        .map_err(|e| StoreError::Corrupt(format!("column `{name}`: {e}")))
}

fn col_u32(row: &PgRow, name: &str) -> Result<u32> {
    let v: i64 = col(row, name)?;
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("column `{name}`: {v} out of range")))
}

fn col_bool(row: &PgRow, name: &str) -> Result<bool> {
    col::<bool>(row, name)
}

fn col_time(row: &PgRow, name: &str) -> Result<Timestamp> {
    col::<i64>(row, name).map(Timestamp::from_millis)
}

fn col_opt_time(row: &PgRow, name: &str) -> Result<Option<Timestamp>> {
    col::<Option<i64>>(row, name).map(|v| v.map(Timestamp::from_millis))
}

fn col_tenant(row: &PgRow) -> Result<TenantId> {
    let raw: String = col(row, "tenant")?;
    TenantId::new(raw).map_err(|e| StoreError::Corrupt(format!("column `tenant`: {e}")))
}

fn decode_group(row: &PgRow) -> Result<GroupRecord> {
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

fn decode_instance(row: &PgRow) -> Result<InstanceRecord> {
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

fn decode_event(row: &PgRow) -> Result<EventRecord> {
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
    tx: &mut Transaction<'static, Postgres>,
    tenant: &TenantId,
    now: Timestamp,
) -> Result<()> {
    sqlx::query("INSERT INTO tenants (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
        .bind(tenant.as_str())
        .bind(millis(now))
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    Ok(())
}

/// Records `event` under `tenant` (the call's tenant, not the event's own field).
async fn insert_event(
    tx: &mut Transaction<'static, Postgres>,
    tenant: &TenantId,
    event: &NewEvent,
) -> Result<EventRecord> {
    let cause = event
        .cause
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("cannot encode the event's cause: {e}")))?;
    lock_event_order(tx, tenant, &event.group).await?;
    let row = sqlx::query(
        "INSERT INTO events (tenant, group_name, at, kind, instance_id, cause, message) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
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

/// The group, its row locked until the transaction ends (a read-modify-write follows).
async fn fetch_group(
    tx: &mut Transaction<'static, Postgres>,
    tenant: &TenantId,
    name: &str,
) -> Result<Option<GroupRecord>> {
    let row = sqlx::query(&format!(
        "SELECT {GROUP_COLUMNS} FROM scaling_groups WHERE tenant = $1 AND name = $2 \
         FOR NO KEY UPDATE"
    ))
    .bind(tenant.as_str())
    .bind(name)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db)?;
    row.as_ref().map(decode_group).transpose()
}

/// The instance, its row locked until the transaction ends (a read-modify-write follows).
/// Inserts a group (and its tenant, if new) and records `event`: [`Store::create_group`]
/// inside a caller's transaction.
async fn create_group_in(
    tx: &mut Transaction<'static, Postgres>,
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
        "INSERT INTO scaling_groups ({GROUP_COLUMNS}) VALUES ($1, $2, $3, $4, NULL, FALSE, $5, $6)"
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
    tx: &mut Transaction<'static, Postgres>,
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
        "UPDATE scaling_groups SET spec = $1, desired_capacity = $2, updated_at = $3 \
             WHERE tenant = $4 AND name = $5",
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
    tx: &mut Transaction<'static, Postgres>,
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
            "UPDATE scaling_groups SET deleting = TRUE, updated_at = $1 WHERE tenant = $2 AND name = $3",
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
    tx: &mut Transaction<'static, Postgres>,
    tenant: &TenantId,
    id: &InstanceId,
) -> Result<Option<InstanceRecord>> {
    let row = sqlx::query(&format!(
        "SELECT {INSTANCE_COLUMNS} FROM instances WHERE tenant = $1 AND id = $2 FOR UPDATE"
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

fn col_opt_u32(row: &PgRow, name: &str) -> Result<Option<u32>> {
    col::<Option<i64>>(row, name)?
        .map(|v| {
            u32::try_from(v)
                .map_err(|_| StoreError::Corrupt(format!("column `{name}`: {v} out of range")))
        })
        .transpose()
}

fn decode_tenant(row: &PgRow) -> Result<TenantRecord> {
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

fn decode_user(row: &PgRow) -> Result<UserRecord> {
    Ok(UserRecord {
        name: col(row, "name")?,
        password_hash: col(row, "password_hash")?,
        is_admin: col_bool(row, "is_admin")?,
        created_at: col_time(row, "created_at")?,
        password_changed_at: col_time(row, "password_changed_at")?,
    })
}

fn decode_api_key(row: &PgRow) -> Result<ApiKeyRecord> {
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
    tx: &mut Transaction<'static, Postgres>,
    user: &str,
    tenant: &TenantId,
) -> Result<()> {
    let u: Option<i32> = sqlx::query_scalar("SELECT 1 FROM users WHERE name = $1")
        .bind(user)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db)?;
    if u.is_none() {
        return Err(not_found("user", user));
    }
    let t: Option<i32> = sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = $1")
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
impl Store for PgStore {
    async fn ensure_tenant(&self, tenant: &TenantId, now: Timestamp) -> Result<()> {
        let mut tx = self.begin().await?;
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
        let mut tx = self.begin().await?;
        let record = create_group_in(&mut tx, tenant, spec, now, &event).await?;
        tx.commit().await.map_err(db)?;
        Ok(record)
    }

    async fn get_group(&self, tenant: &TenantId, name: &str) -> Result<Option<GroupRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {GROUP_COLUMNS} FROM scaling_groups WHERE tenant = $1 AND name = $2"
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
            "SELECT {GROUP_COLUMNS} FROM scaling_groups WHERE tenant = $1 ORDER BY name"
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
        let mut tx = self.begin().await?;
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
        let mut tx = self.begin().await?;
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
            "UPDATE scaling_groups SET desired_capacity = $1, last_scaling_at = $2, updated_at = $3 \
             WHERE tenant = $4 AND name = $5",
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
        let mut tx = self.begin().await?;
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
        let mut tx = self.begin().await?;
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
        let mut tx = self.begin().await?;
        for table in ["instances", "load_history", "learned_state"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE tenant = $1 AND group_name = $2"
            ))
            .bind(tenant.as_str())
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        let deleted = sqlx::query("DELETE FROM scaling_groups WHERE tenant = $1 AND name = $2")
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
        let mut tx = self.begin().await?;
        if fetch_group(&mut tx, tenant, &instance.group)
            .await?
            .is_none()
        {
            return Err(not_found("group", &instance.group));
        }
        let inserted = sqlx::query(&format!(
            "INSERT INTO instances ({INSTANCE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, \
             (SELECT COALESCE(MAX(created_order), 0) + 1 FROM instances \
              WHERE tenant = $6 AND group_name = $7), \
             $8, $9, $10, $11, $12, $13, $14, $15, $16) RETURNING created_order"
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
        let mut tx = self.begin().await?;
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
            "UPDATE instances SET status = $1, host = $2, address = $3, native_id = $4, \
             protected = $5, status_reason = $6, started_at = $7, updated_at = $8 \
             WHERE tenant = $9 AND id = $10",
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
            "SELECT {INSTANCE_COLUMNS} FROM instances WHERE tenant = $1 AND id = $2"
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
             WHERE tenant = $1 AND group_name = $2 \
               AND ($3 OR status NOT IN ('terminated', 'failed')) \
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
        let mut tx = self.begin().await?;
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
        let mut tx = self.begin().await?;
        // KEY SHARE: the group cannot be deleted under us (its rows would be orphans),
        // but its other writers need not wait.
        let exists = sqlx::query(
            "SELECT 1 FROM scaling_groups WHERE tenant = $1 AND name = $2 FOR KEY SHARE",
        )
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
                "INSERT INTO load_history (tenant, group_name, metric, at, mean, max) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant, group_name, metric, at) \
                 DO UPDATE SET mean = excluded.mean, max = excluded.max",
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
             WHERE tenant = $1 AND group_name = $2 AND at >= $3 ORDER BY at, metric",
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
        let mut tx = self.begin().await?;
        // Saves of one group take turns: two interleaved delete-then-insert transactions
        // would collide on the primary key.
        let exists = sqlx::query(
            "SELECT 1 FROM scaling_groups WHERE tenant = $1 AND name = $2 FOR NO KEY UPDATE",
        )
        .bind(tenant.as_str())
        .bind(group)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        if exists.is_none() {
            return Err(not_found("group", group));
        }
        sqlx::query("DELETE FROM learned_state WHERE tenant = $1 AND group_name = $2")
            .bind(tenant.as_str())
            .bind(group)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        for s in states {
            sqlx::query(
                "INSERT INTO learned_state (tenant, group_name, policy, state, saved_at) \
                 VALUES ($1, $2, $3, $4, $5)",
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
             WHERE tenant = $1 AND group_name = $2 ORDER BY policy",
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
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "DELETE FROM load_history WHERE tenant = $1 AND group_name = $2 AND at < $3",
        )
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
             WHERE tenant = $1 AND group_name = $2 \
               AND ($3 IS NULL OR at >= $4) \
               AND ($5 IS NULL OR at < $6) \
               AND ($7 IS NULL OR id > $8) \
             ORDER BY id {order} LIMIT $9"
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
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
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
            "SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1"
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
            "UPDATE tenants SET display_name = $1, description = $2, max_instances = $3, \
             max_vcpus = $4, max_memory_mb = $5, max_groups = $6, grants = $7, deleting = $8, \
             updated_at = $9 WHERE id = $10",
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
        let mut tx = self.begin().await?;
        // Lock the tenant first: a group being created in it holds a KEY SHARE lock on
        // this row (its foreign key), so we wait for it and then count it, and a group
        // created after us waits for our delete and fails, instead of one slipping in
        // between the count and the delete.
        sqlx::query("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let groups: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM scaling_groups WHERE tenant = $1")
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
        let deleted = sqlx::query("DELETE FROM tenants WHERE id = $1")
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
            "INSERT INTO settings (key, value) VALUES ('default_quota', $1) \
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
             VALUES ($1, $2, $3, $4, $5)",
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
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE name = $1"))
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
        let deleted = sqlx::query("DELETE FROM users WHERE name = $1")
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
        let mut tx = self.begin().await?;
        let updated = sqlx::query(
            "UPDATE users SET password_hash = $1, password_changed_at = $2 WHERE name = $3",
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
        sqlx::query("UPDATE tokens SET revoked = TRUE WHERE user_name = $1")
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
        let mut tx = self.begin().await?;
        user_and_tenant_exist(&mut tx, user, tenant).await?;
        sqlx::query(
            "INSERT INTO role_bindings (user_name, tenant, role, created_at) VALUES ($1, $2, $3, $4) \
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
        let deleted = sqlx::query("DELETE FROM role_bindings WHERE user_name = $1 AND tenant = $2")
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
        let raw: Option<String> = sqlx::query_scalar(
            "SELECT role FROM role_bindings WHERE user_name = $1 AND tenant = $2",
        )
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
            "SELECT user_name, tenant, role FROM role_bindings WHERE tenant = $1 ORDER BY user_name",
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
        let mut tx = self.begin().await?;
        if fetch_instance(&mut tx, &owner.tenant, &owner.instance)
            .await?
            .is_none()
        {
            return Err(not_found("instance", owner.instance.as_str()));
        }
        user_and_tenant_exist(&mut tx, &owner.user, &owner.tenant).await?;
        sqlx::query(
            "INSERT INTO instance_owners (tenant, instance_id, user_name, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
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
            "DELETE FROM instance_owners WHERE tenant = $1 AND instance_id = $2 AND user_name = $3",
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
             WHERE tenant = $1 AND ($2 IS NULL OR user_name = $3) ORDER BY instance_id, user_name",
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
             VALUES ($1, $2, $3, $4, $5, $6)",
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
             WHERE hash = $1",
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
        let updated = sqlx::query("UPDATE tokens SET revoked = TRUE WHERE hash = $1")
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
        let updated = sqlx::query(
            "UPDATE tokens SET revoked = TRUE WHERE user_name = $1 AND revoked = FALSE",
        )
        .bind(user)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(updated.rows_affected())
    }

    async fn create_api_key(&self, key: &ApiKeyRecord) -> Result<()> {
        let mut tx = self.begin().await?;
        let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = $1")
            .bind(key.tenant.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        if exists.is_none() {
            return Err(not_found("tenant", key.tenant.as_str()));
        }
        let inserted = sqlx::query(
            "INSERT INTO api_keys (hash, tenant, name, role, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
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
            // The tenant was deleted between the check and the insert.
            Err(e) if is_foreign_key_violation(&e) => Err(not_found("tenant", key.tenant.as_str())),
            Err(e) => Err(db(e)),
        }
    }

    async fn get_api_key(&self, hash: &str) -> Result<Option<ApiKeyRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE hash = $1"
        ))
        .bind(hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(decode_api_key).transpose()
    }

    async fn list_api_keys(&self, tenant: &TenantId) -> Result<Vec<ApiKeyRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE tenant = $1 ORDER BY name"
        ))
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(decode_api_key).collect()
    }

    async fn delete_api_key(&self, tenant: &TenantId, name: &str) -> Result<()> {
        let deleted = sqlx::query("DELETE FROM api_keys WHERE tenant = $1 AND name = $2")
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
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
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
             WHERE ($1 IS NULL OR tenant = $2) ORDER BY id DESC LIMIT $3",
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
            "INSERT INTO provider_credentials (tenant, name, sealed, updated_at) VALUES ($1, $2, $3, $4) \
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
            if is_foreign_key_violation(&e) {
                not_found("tenant", tenant.as_str())
            } else {
                db(e)
            }
        })?;
        Ok(())
    }

    async fn get_credential(&self, tenant: &TenantId, name: &str) -> Result<Option<Sealed>> {
        let raw: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT sealed FROM provider_credentials WHERE tenant = $1 AND name = $2",
        )
        .bind(tenant.as_str())
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        Ok(raw.map(Sealed))
    }
}
