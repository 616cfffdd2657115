//! The dialect layer: every statement is written once and runs on SQLite and PostgreSQL.
//!
//! The aggregate modules (`groups`, `instances`, …) hold the SQL; this module hides the
//! few places where the engines differ:
//!
//! - **Placeholders** are `$1`, `$2`, … everywhere: sqlx's SQLite driver binds `$N` to
//!   the N-th argument, as PostgreSQL does.
//! - **Portable SQL only:** `TRUE`/`FALSE` literals, `INSERT … ON CONFLICT … DO UPDATE SET
//!   c = excluded.c`, `RETURNING` (SQLite ≥ 3.35; sqlx bundles 3.46). Times are integer
//!   milliseconds and JSON documents text in both schemas, so they bind the same.
//! - **Booleans** bind as Rust `bool` (SQLite stores 0/1); [`Row::bool`] reads either
//!   and reports any other stored integer as corrupt.
//! - **Transactions** ([`Db::begin`]): on SQLite a savepoint in the store's shared
//!   `BEGIN IMMEDIATE` transaction, committed with the other writers' waiting at the same
//!   time (group commit, [`crate::group_commit`]); a write outside a transaction
//!   ([`Sql::execute`] on the pool) is one such transaction too. PostgreSQL `BEGIN` at
//!   `READ COMMITTED`.
//! - **Row locks** ([`Sql::lock`]): appended as `FOR …` on PostgreSQL, where writers of
//!   different rows run at once; nothing on SQLite, whose write transaction already
//!   excludes every other writer.
//! - **Event order** ([`Tx::lock_event_order`]): a transaction-level advisory lock on
//!   PostgreSQL; nothing on SQLite, whose one writer commits ids in the order it takes
//!   them.
//!
//! It is a small query builder rather than code generic over `sqlx::Database`: the shared
//! code is compiled once, and needs no trait bounds per bound type.

use crate::group_commit::{Member, Writer};
use crate::{Result, StoreError};
use sqlx::postgres::{PgArguments, PgPool, PgQueryResult, PgRow};
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqlitePool, SqliteQueryResult, SqliteRow};
use sqlx::{Postgres, Row as _, Sqlite, Transaction};
use std::borrow::Cow;
use swell_core::{InstanceId, TenantId, Timestamp};

/// A store whose aggregates run on an SQL database: implementing it gives a type every
/// aggregate trait, hence [`crate::Store`].
pub(crate) trait SqlStore: Send + Sync + 'static {
    /// The database.
    fn db(&self) -> Db<'_>;
}

/// A database's pool, on either engine.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Db<'a> {
    /// The pool and the store's one writer (every SQLite write goes through it).
    Sqlite(&'a SqlitePool, &'a Writer),
    Postgres(&'a PgPool),
}

impl Db<'_> {
    /// Starts a write transaction (see the module documentation). Dropping it without
    /// [`Tx::commit`] rolls it back, so an early `?` records nothing.
    pub(crate) async fn begin(self) -> Result<Tx> {
        match self {
            Db::Sqlite(pool, writer) => writer.begin(pool).await.map(TxConn::Sqlite),
            Db::Postgres(pool) => pool.begin().await.map(TxConn::Postgres),
        }
        .map(|conn| Tx {
            conn,
            events: Vec::new(),
        })
        .map_err(StoreError::Database)
    }
}

/// A write transaction, on either engine, with the groups it recorded events on (so that
/// they are announced once committed, see [`crate::events::subscribe`]).
#[derive(Debug)]
pub(crate) struct Tx {
    conn: TxConn,
    events: Vec<crate::events::EventAppended>,
}

/// A write transaction's connection.
#[derive(Debug)]
enum TxConn {
    Sqlite(Member),
    Postgres(Transaction<'static, Postgres>),
}

impl Tx {
    /// Commits, then announces the events it recorded. Announcing after the commit means
    /// a subscriber woken by it always finds the rows.
    pub(crate) async fn commit(self) -> Result<()> {
        match self.conn {
            TxConn::Sqlite(member) => member.commit().await,
            TxConn::Postgres(tx) => tx.commit().await,
        }
        .map_err(StoreError::Database)?;
        for appended in self.events {
            crate::events::announce(appended);
        }
        Ok(())
    }

    /// Runs `last`, the transaction's last statement, then commits as [`Tx::commit`]:
    /// on SQLite in the same round trip to the connection's thread as the savepoint's
    /// release ([`crate::group_commit`]: each round trip is a wait with the one writer
    /// held), on PostgreSQL one after the other. Returns `last`'s rows.
    pub(crate) async fn commit_after(mut self, last: Sql) -> Result<Vec<Row>> {
        let rows = match &mut self.conn {
            TxConn::Sqlite(member) => {
                let text = format!("{}; {}", last.text, crate::group_commit::RELEASE_AND_NEXT);
                let conn = member.conn().map_err(StoreError::Database)?;
                bind_sqlite(&text, last.args)
                    .fetch_all(conn)
                    .await
                    .map_err(StoreError::Database)?
                    .lift()
            }
            TxConn::Postgres(_) => last.fetch_all(&mut self).await?,
        };
        match self.conn {
            TxConn::Sqlite(member) => member.released().await,
            TxConn::Postgres(tx) => tx.commit().await,
        }
        .map_err(StoreError::Database)?;
        for appended in self.events {
            crate::events::announce(appended);
        }
        Ok(rows)
    }

    /// Notes that this transaction recorded an event on `group`, to announce on commit.
    pub(crate) fn recorded_event(&mut self, tenant: &TenantId, group: &str) {
        let appended = crate::events::EventAppended {
            tenant: tenant.clone(),
            group: group.to_string(),
        };
        if !self.events.contains(&appended) {
            self.events.push(appended);
        }
    }

    /// Orders this transaction's events on the group after those of every earlier
    /// transaction (see `postgres`: identity values are handed out in call order, not
    /// commit order).
    pub(crate) async fn lock_event_order(&mut self, tenant: &TenantId, group: &str) -> Result<()> {
        match &mut self.conn {
            TxConn::Sqlite(_) => Ok(()),
            TxConn::Postgres(tx) => crate::postgres::lock_event_order(tx, tenant, group).await,
        }
    }
}

/// Where a statement runs: on the pool (one statement, its own transaction) or inside a
/// write transaction.
pub(crate) enum On<'e> {
    Db(Db<'e>),
    Tx(&'e mut Tx),
}

impl<'e> From<Db<'e>> for On<'e> {
    fn from(db: Db<'e>) -> Self {
        On::Db(db)
    }
}

impl<'e> From<&'e mut Tx> for On<'e> {
    fn from(tx: &'e mut Tx) -> Self {
        On::Tx(tx)
    }
}

/// The lock a PostgreSQL `SELECT` takes on the rows it reads (SQLite takes none: its
/// write transaction already excludes every other writer).
#[derive(Debug, Clone, Copy)]
pub(crate) enum RowLock {
    /// `FOR UPDATE`: the row changes or goes next.
    Update,
    /// `FOR NO KEY UPDATE`: the row changes next, but rows referring to it may still be
    /// added (an instance or an event of a group whose desired capacity changes).
    NoKeyUpdate,
    /// `FOR KEY SHARE`: the row must not go away (nor its key change) until commit; its
    /// other writers need not wait.
    KeyShare,
}

impl RowLock {
    fn clause(self) -> &'static str {
        match self {
            RowLock::Update => " FOR UPDATE",
            RowLock::NoKeyUpdate => " FOR NO KEY UPDATE",
            RowLock::KeyShare => " FOR KEY SHARE",
        }
    }
}

/// A value bound to a placeholder. Each kind is typed even when absent, so PostgreSQL
/// knows a `NULL`'s type.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Text(Option<String>),
    Int(Option<i64>),
    Real(f64),
    Bool(Option<bool>),
    Bytes(Option<Vec<u8>>),
}

impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(Some(v.to_owned()))
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(Some(v))
    }
}
impl From<&String> for Arg {
    fn from(v: &String) -> Self {
        Arg::Text(Some(v.clone()))
    }
}
impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Self {
        Arg::Text(v.map(str::to_owned))
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Arg::Text(v)
    }
}
impl From<&Option<String>> for Arg {
    fn from(v: &Option<String>) -> Self {
        Arg::Text(v.clone())
    }
}
impl From<&TenantId> for Arg {
    fn from(v: &TenantId) -> Self {
        v.as_str().into()
    }
}
impl From<&InstanceId> for Arg {
    fn from(v: &InstanceId) -> Self {
        v.as_str().into()
    }
}
impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}
impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}
impl From<u32> for Arg {
    fn from(v: u32) -> Self {
        Arg::Int(Some(i64::from(v)))
    }
}
impl From<Option<u32>> for Arg {
    fn from(v: Option<u32>) -> Self {
        Arg::Int(v.map(i64::from))
    }
}
/// Times are stored as milliseconds since the Unix epoch.
impl From<Timestamp> for Arg {
    fn from(v: Timestamp) -> Self {
        Arg::Int(Some(v.as_millis()))
    }
}
impl From<Option<Timestamp>> for Arg {
    fn from(v: Option<Timestamp>) -> Self {
        Arg::Int(v.map(Timestamp::as_millis))
    }
}
impl From<bool> for Arg {
    fn from(v: bool) -> Self {
        Arg::Bool(Some(v))
    }
}
impl From<Option<bool>> for Arg {
    fn from(v: Option<bool>) -> Self {
        Arg::Bool(v)
    }
}
impl From<f64> for Arg {
    fn from(v: f64) -> Self {
        Arg::Real(v)
    }
}
impl From<&[u8]> for Arg {
    fn from(v: &[u8]) -> Self {
        Arg::Bytes(Some(v.to_vec()))
    }
}
impl From<Option<&[u8]>> for Arg {
    fn from(v: Option<&[u8]>) -> Self {
        Arg::Bytes(v.map(<[u8]>::to_vec))
    }
}

/// A statement with its arguments, ready to run on either engine.
#[must_use = "a statement does nothing until it is run"]
pub(crate) struct Sql {
    text: Cow<'static, str>,
    args: Vec<Arg>,
    lock: Option<RowLock>,
}

/// A statement (placeholders `$1`, `$2`, …; bind them in that order).
pub(crate) fn sql(text: impl Into<Cow<'static, str>>) -> Sql {
    Sql {
        text: text.into(),
        args: Vec::new(),
        lock: None,
    }
}

/// Runs the statement `$self` with sqlx's `$method` (`execute`, `fetch_all`, …) wherever
/// `$on` says, adding the row lock on PostgreSQL, and lifts the engine's result into
/// the shared types.
macro_rules! run {
    ($self:ident, $on:ident, $method:ident) => {{
        let Sql { text, args, lock } = $self;
        match $on.into() {
            On::Db(Db::Sqlite(pool, _)) => {
                bind_sqlite(&text, args).$method(pool).await.map(Lift::lift)
            }
            On::Tx(Tx {
                conn: TxConn::Sqlite(member),
                ..
            }) => match member.conn() {
                Ok(conn) => bind_sqlite(&text, args).$method(conn).await.map(Lift::lift),
                Err(e) => Err(e),
            },
            On::Db(Db::Postgres(pool)) => {
                let text = with_lock(&text, lock);
                bind_postgres(&text, args)
                    .$method(pool)
                    .await
                    .map(Lift::lift)
            }
            On::Tx(Tx {
                conn: TxConn::Postgres(tx),
                ..
            }) => {
                let text = with_lock(&text, lock);
                bind_postgres(&text, args)
                    .$method(&mut **tx)
                    .await
                    .map(Lift::lift)
            }
        }
        .map_err(StoreError::Database)
    }};
}

impl Sql {
    /// Binds the next placeholder.
    pub(crate) fn bind(mut self, arg: impl Into<Arg>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Locks the rows this `SELECT` reads, on PostgreSQL (see [`RowLock`]).
    pub(crate) fn lock(mut self, lock: RowLock) -> Self {
        self.lock = Some(lock);
        self
    }

    /// Runs it; how many rows it changed. On SQLite's pool it is a write transaction of
    /// its own, through the store's one writer (see [`crate::group_commit`]).
    pub(crate) async fn execute<'e>(self, on: impl Into<On<'e>>) -> Result<u64> {
        match on.into() {
            On::Db(db @ Db::Sqlite(..)) => {
                let mut tx = db.begin().await?;
                let changed = self.execute_here(&mut tx).await?;
                tx.commit().await?;
                Ok(changed)
            }
            on => self.execute_here(on).await,
        }
    }

    /// Runs it where `on` says.
    async fn execute_here<'e>(self, on: impl Into<On<'e>>) -> Result<u64> {
        run!(self, on, execute)
    }

    /// Runs it; its only row, if any.
    pub(crate) async fn fetch_optional<'e>(self, on: impl Into<On<'e>>) -> Result<Option<Row>> {
        run!(self, on, fetch_optional)
    }

    /// Runs it; its one row (an error if there is none).
    pub(crate) async fn fetch_one<'e>(self, on: impl Into<On<'e>>) -> Result<Row> {
        run!(self, on, fetch_one)
    }

    /// Runs it; every row.
    pub(crate) async fn fetch_all<'e>(self, on: impl Into<On<'e>>) -> Result<Vec<Row>> {
        run!(self, on, fetch_all)
    }

    /// Runs it; its only row, if any, decoded.
    pub(crate) async fn fetch_optional_as<'e, T>(
        self,
        on: impl Into<On<'e>>,
        decode: impl Fn(&Row) -> Result<T>,
    ) -> Result<Option<T>> {
        self.fetch_optional(on)
            .await?
            .as_ref()
            .map(decode)
            .transpose()
    }

    /// Runs it; every row, decoded.
    pub(crate) async fn fetch_all_as<'e, T>(
        self,
        on: impl Into<On<'e>>,
        decode: impl Fn(&Row) -> Result<T>,
    ) -> Result<Vec<T>> {
        self.fetch_all(on).await?.iter().map(decode).collect()
    }
}

fn with_lock(text: &str, lock: Option<RowLock>) -> Cow<'_, str> {
    match lock {
        None => Cow::Borrowed(text),
        Some(lock) => Cow::Owned(format!("{text}{}", lock.clause())),
    }
}

fn bind_sqlite(text: &str, args: Vec<Arg>) -> Query<'_, Sqlite, SqliteArguments<'_>> {
    args.into_iter()
        .fold(sqlx::query(text), |q, arg| match arg {
            Arg::Text(v) => q.bind(v),
            Arg::Int(v) => q.bind(v),
            Arg::Real(v) => q.bind(v),
            Arg::Bool(v) => q.bind(v),
            Arg::Bytes(v) => q.bind(v),
        })
}

fn bind_postgres(text: &str, args: Vec<Arg>) -> Query<'_, Postgres, PgArguments> {
    args.into_iter()
        .fold(sqlx::query(text), |q, arg| match arg {
            Arg::Text(v) => q.bind(v),
            Arg::Int(v) => q.bind(v),
            Arg::Real(v) => q.bind(v),
            Arg::Bool(v) => q.bind(v),
            Arg::Bytes(v) => q.bind(v),
        })
}

/// An engine's result as the shared type.
trait Lift<T> {
    fn lift(self) -> T;
}
impl Lift<u64> for SqliteQueryResult {
    fn lift(self) -> u64 {
        self.rows_affected()
    }
}
impl Lift<u64> for PgQueryResult {
    fn lift(self) -> u64 {
        self.rows_affected()
    }
}
impl Lift<Row> for SqliteRow {
    fn lift(self) -> Row {
        Row::Sqlite(self)
    }
}
impl Lift<Row> for PgRow {
    fn lift(self) -> Row {
        Row::Postgres(self)
    }
}
impl<A: Lift<B>, B> Lift<Option<B>> for Option<A> {
    fn lift(self) -> Option<B> {
        self.map(Lift::lift)
    }
}
impl<A: Lift<B>, B> Lift<Vec<B>> for Vec<A> {
    fn lift(self) -> Vec<B> {
        self.into_iter().map(Lift::lift).collect()
    }
}

/// A row read from either engine. Every getter reports a missing column, a wrong type
/// or a value out of range as [`StoreError::Corrupt`], never a panic.
pub(crate) enum Row {
    Sqlite(SqliteRow),
    Postgres(PgRow),
}

/// A type both engines decode the same way.
pub(crate) trait Column:
    for<'r> sqlx::Decode<'r, Sqlite>
    + sqlx::Type<Sqlite>
    + for<'r> sqlx::Decode<'r, Postgres>
    + sqlx::Type<Postgres>
{
}
impl<T> Column for T where
    T: for<'r> sqlx::Decode<'r, Sqlite>
        + sqlx::Type<Sqlite>
        + for<'r> sqlx::Decode<'r, Postgres>
        + sqlx::Type<Postgres>
{
}

impl Row {
    /// Column `name` (text, integers, reals, bytes, and their `Option`s).
    pub(crate) fn get<T: Column>(&self, name: &str) -> Result<T> {
        match self {
            Row::Sqlite(row) => row.try_get(name),
            Row::Postgres(row) => row.try_get(name),
        }
        .map_err(|e| corrupt(name, e))
    }

    /// A non-negative count that fits 32 bits.
    pub(crate) fn u32(&self, name: &str) -> Result<u32> {
        let v: i64 = self.get(name)?;
        u32::try_from(v).map_err(|_| corrupt(name, format!("{v} out of range")))
    }

    /// [`Row::u32`], or `NULL`.
    pub(crate) fn opt_u32(&self, name: &str) -> Result<Option<u32>> {
        self.get::<Option<i64>>(name)?
            .map(|v| u32::try_from(v).map_err(|_| corrupt(name, format!("{v} out of range"))))
            .transpose()
    }

    /// A boolean: PostgreSQL `BOOLEAN`, SQLite 0 or 1.
    pub(crate) fn bool(&self, name: &str) -> Result<bool> {
        match self {
            Row::Postgres(_) => self.get(name),
            Row::Sqlite(_) => match self.get::<i64>(name)? {
                0 => Ok(false),
                1 => Ok(true),
                v => Err(corrupt(name, format!("{v} is not a boolean"))),
            },
        }
    }

    /// A time (milliseconds since the Unix epoch).
    pub(crate) fn time(&self, name: &str) -> Result<Timestamp> {
        self.get::<i64>(name).map(Timestamp::from_millis)
    }

    /// [`Row::time`], or `NULL`.
    pub(crate) fn opt_time(&self, name: &str) -> Result<Option<Timestamp>> {
        self.get::<Option<i64>>(name)
            .map(|v| v.map(Timestamp::from_millis))
    }

    /// The `tenant` column.
    pub(crate) fn tenant(&self) -> Result<TenantId> {
        let raw: String = self.get("tenant")?;
        TenantId::new(raw).map_err(|e| corrupt("tenant", e))
    }
}

/// A stored column that cannot be read.
pub(crate) fn corrupt(column: &str, why: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("column `{column}`: {why}"))
}

/// `NotFound { kind, name }`.
pub(crate) fn not_found(kind: &'static str, name: impl Into<String>) -> StoreError {
    StoreError::NotFound {
        kind,
        name: name.into(),
    }
}

/// Maps a unique-key violation to `Conflict { kind, name }`; other errors pass.
pub(crate) fn conflict_if_unique(
    kind: &'static str,
    name: impl Into<String>,
) -> impl FnOnce(StoreError) -> StoreError {
    move |e| match &e {
        StoreError::Database(d)
            if d.as_database_error()
                .is_some_and(|d| d.is_unique_violation()) =>
        {
            StoreError::Conflict {
                kind,
                name: name.into(),
            }
        }
        _ => e,
    }
}

/// Maps a foreign-key violation to `NotFound { kind, name }`: the row referred to is
/// gone (or never was); other errors pass.
pub(crate) fn not_found_if_foreign_key(
    kind: &'static str,
    name: impl Into<String>,
) -> impl FnOnce(StoreError) -> StoreError {
    move |e| match &e {
        StoreError::Database(d)
            if d.as_database_error()
                .is_some_and(|d| d.is_foreign_key_violation()) =>
        {
            not_found(kind, name)
        }
        _ => e,
    }
}
