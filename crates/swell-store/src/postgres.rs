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
//! - **Statements** are the ones SQLite runs too: they live with their aggregate
//!   (`groups`, `instances`, …) and run through the dialect layer (`crate::sql`), which
//!   adds the row locks and this module's event-order lock.
//! - **Schema** lives in `migrations-postgres/`, embedded in the binary and applied on
//!   connect (sqlx holds an advisory lock while it migrates, so two servers starting at
//!   once do not both migrate). Times are BIGINT milliseconds, booleans BOOLEAN, JSON
//!   documents TEXT (they round-trip byte for byte, like SQLite's); ordered names are
//!   `COLLATE "C"`, so listings are in byte order whatever the database's locale.
//! - **One server per database.** The controller cannot yet share groups between
//!   servers, so `swell serve` holds [`PgStore::lock_server`] for its lifetime; a second
//!   server on the same database refuses to start ([`LockError::Held`]).

use crate::sql::{Db, SqlStore};
use crate::{Result, StoreError};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Postgres, Transaction};
use std::str::FromStr;
use swell_core::TenantId;

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
}

impl SqlStore for PgStore {
    fn db(&self) -> Db<'_> {
        Db::Postgres(&self.pool)
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
pub(crate) async fn lock_event_order(
    tx: &mut Transaction<'static, Postgres>,
    tenant: &TenantId,
    group: &str,
) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(EVENT_LOCK_CLASS)
        .bind(format!("{tenant}/{group}"))
        .execute(&mut **tx)
        .await
        .map_err(StoreError::Database)?;
    Ok(())
}
