//! The SQLite adapter: the default store, one file under the data directory.
//!
//! - **Durability.** WAL journal, `synchronous = FULL`: a create intent is on disk before
//!   the provider is called (DESIGN.md invariant 2).
//! - **Writes** take turns on the store's one writer (`crate::group_commit`): each is a
//!   savepoint in a shared `BEGIN IMMEDIATE` transaction (which takes the write lock up
//!   front, so a transaction that reads before it writes, `created_order = max + 1`,
//!   cannot fail with `SQLITE_BUSY` when it upgrades), and the writers waiting at the
//!   same time share one `COMMIT` and its `fsync`; each returns once its writes are on
//!   disk. Another process writing the same file waits on the 5 s busy timeout.
//! - **Checkpoints** run beside the writer, not in it: SQLite's automatic checkpoint
//!   copies the WAL into the database file (and `fsync`s it) inside the `COMMIT` that
//!   fills the WAL past 1,000 pages, holding the one writer, and every caller queued
//!   behind it, for as long as that takes. A file store turns it off and checkpoints
//!   `PASSIVE`ly every [`CHECKPOINT_EVERY`] on a reader's connection instead, which never
//!   blocks the writer.
//! - **Reads** of a file store go through a memory map ([`MMAP_SIZE`]), not `pread`.
//!   Statement journals (a savepoint's undo pages) and temporary tables stay in memory
//!   (`temp_store = MEMORY`).
//! - **Pool.** A file store keeps up to [`FILE_POOL_SIZE`] connections (readers run beside
//!   the one writer). An in-memory store is one private database per connection, so it
//!   uses exactly one connection that is never closed; its callers take turns.
//! - **Tenancy.** Every query filters by the tenant it is given; a foreign tenant's group
//!   or instance is simply absent. An event recorded together with a state change is
//!   stored under the call's tenant, whatever `event.tenant` says, so a caller's mistake
//!   cannot write into another tenant's log.
//! - **Schema** lives in `migrations/`, embedded in the binary and applied on open.
//!   Times are integer milliseconds; a group's spec and an event's cause are JSON.
//! - **Statements** are the ones PostgreSQL runs too: they live with their aggregate
//!   (`groups`, `instances`, …) and run through the dialect layer (`crate::sql`).

use crate::group_commit::Writer;
use crate::sql::{Db, SqlStore};
use crate::{Result, StoreError};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Connections kept by a file store.
pub const FILE_POOL_SIZE: u32 = 4;

/// How much of a file store each connection reads through a memory map (`PRAGMA
/// mmap_size`): in WAL mode a connection drops its page cache whenever another one has
/// committed, and without the map every page it reads again is a `pread` copied out of
/// the kernel's cache.
pub const MMAP_SIZE: u64 = 256 << 20;

/// How long a statement waits for another connection's write lock before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a file store checkpoints its WAL (see the module documentation).
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Swell's store on SQLite (see the module documentation for its guarantees).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    writer: Arc<Writer>,
    /// The background checkpoints of a file store, stopped with its last clone.
    checkpoints: Option<Arc<AbortOnDrop>>,
}

/// A task aborted when dropped.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
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
            .busy_timeout(BUSY_TIMEOUT)
            .pragma("wal_autocheckpoint", "0")
            .pragma("mmap_size", MMAP_SIZE.to_string())
            // Each write is a savepoint in a shared transaction, so SQLite keeps a
            // statement journal of the pages it changes; in memory, not in a temporary
            // file opened, written and closed at every commit.
            .pragma("temp_store", "memory");
        let pool = SqlitePoolOptions::new()
            .max_connections(FILE_POOL_SIZE)
            .connect_with(options)
            .await
            .map_err(StoreError::Database)?;
        let mut store = Self::migrated(pool).await?;
        let checkpointing = store.clone();
        store.checkpoints = Some(Arc::new(AbortOnDrop(tokio::spawn(async move {
            let mut every = tokio::time::interval(CHECKPOINT_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if checkpointing.pool.is_closed() {
                    return;
                }
                if let Err(e) = checkpointing.checkpoint().await {
                    tracing::warn!("checkpointing the store's WAL: {e}");
                }
            }
        }))));
        Ok(store)
    }

    /// Copies what the WAL holds into the database file as far as no reader still needs
    /// it (`PRAGMA wal_checkpoint(PASSIVE)`), without blocking the writer. Returns the
    /// WAL's frames and how many of them are now in the database file.
    pub async fn checkpoint(&self) -> Result<(i64, i64)> {
        let row: (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::Database)?;
        Ok((row.1, row.2))
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
        Ok(SqliteStore {
            pool,
            writer: Arc::new(Writer::default()),
            checkpoints: None,
        })
    }

    /// The connection pool, for diagnostics and tests (`PRAGMA journal_mode`, …).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Write transactions committed so far: with group commit one `COMMIT` holds the
    /// writes of every caller that waited for the writer at the same time, so this
    /// grows more slowly than the number of writes (for benchmarks and tests).
    pub fn commits(&self) -> u64 {
        self.writer.commits()
    }

    /// Waits for in-flight queries and closes every connection (checkpointing the WAL).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

impl SqlStore for SqliteStore {
    fn db(&self) -> Db<'_> {
        Db::Sqlite(&self.pool, &self.writer)
    }
}
