//! A group's event log.

use crate::sql::{Row, Sql, SqlStore, Tx, sql};
use crate::{EventFilter, EventRecord, NewEvent, Result, StoreError};
use async_trait::async_trait;
use swell_core::{Cause, EventKind, InstanceId, TenantId};

/// A group on which events were recorded (committed): what [`subscribe`] receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventAppended {
    /// The group's tenant.
    pub tenant: TenantId,
    /// The group's name.
    pub group: String,
}

/// How many announcements a slow subscriber may fall behind before it is told it lagged
/// (it then re-reads its group's rows, so nothing is lost).
pub const ANNOUNCE_CAPACITY: usize = 1024;

/// The process-wide announcement channel: every committed transaction that recorded
/// events sends one message per group, whichever store, engine or caller (service or
/// controller) wrote them. Process-wide rather than per store because every write path
/// ends in [`crate::sql::Tx::commit`]; a subscriber filters on its own tenant and group.
fn channel() -> &'static tokio::sync::broadcast::Sender<EventAppended> {
    static CHANNEL: std::sync::OnceLock<tokio::sync::broadcast::Sender<EventAppended>> =
        std::sync::OnceLock::new();
    CHANNEL.get_or_init(|| tokio::sync::broadcast::channel(ANNOUNCE_CAPACITY).0)
}

/// Receives an [`EventAppended`] after every commit that recorded events on a group.
/// It only says *where* to look: read the rows with [`EventStore::list_events`] after
/// the last id seen (a message may be for another store in the same process, or be
/// missed when lagging; reading the store again is always right).
pub fn subscribe() -> tokio::sync::broadcast::Receiver<EventAppended> {
    channel().subscribe()
}

/// Announces a committed event (no subscriber is not an error).
pub(crate) fn announce(appended: EventAppended) {
    let _ = channel().send(appended);
}

/// Events returned by [`EventStore::list_events`] when the filter sets no limit.
pub const DEFAULT_EVENT_LIMIT: u32 = 1000;

/// A group's event log.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Records an event.
    async fn append_event(&self, event: NewEvent) -> Result<EventRecord>;

    /// The group's events, oldest first, per `filter`.
    async fn list_events(
        &self,
        tenant: &TenantId,
        group: &str,
        filter: &EventFilter,
    ) -> Result<Vec<EventRecord>>;
}

const EVENT_COLUMNS: &str = "id, tenant, group_name, at, kind, instance_id, cause, message";

fn decode_event(row: &Row) -> Result<EventRecord> {
    let id: i64 = row.get("id")?;
    let kind: String = row.get("kind")?;
    let kind = EventKind::parse(&kind)
        .ok_or_else(|| StoreError::Corrupt(format!("event {id}: unknown kind `{kind}`")))?;
    let cause = match row.get::<Option<String>>("cause")? {
        None => None,
        Some(raw) => Some(
            serde_json::from_str::<Cause>(&raw)
                .map_err(|e| StoreError::Corrupt(format!("event {id}: cause: {e}")))?,
        ),
    };
    Ok(EventRecord {
        id,
        event: NewEvent {
            tenant: row.tenant()?,
            group: row.get("group_name")?,
            at: row.time("at")?,
            kind,
            instance_id: row.get::<Option<String>>("instance_id")?.map(InstanceId),
            cause,
            message: row.get("message")?,
        },
    })
}

/// Records `event` under `tenant` (the call's tenant, not the event's own field), inside
/// a caller's transaction.
pub(crate) async fn insert_event(
    tx: &mut Tx,
    tenant: &TenantId,
    event: &NewEvent,
) -> Result<EventRecord> {
    let row = event_insert(tx, tenant, event).await?.fetch_one(tx).await?;
    recorded(tenant, event, &row)
}

/// [`insert_event`] as the transaction's last statement, then its commit
/// ([`Tx::commit_after`]: on SQLite one round trip for both).
pub(crate) async fn insert_event_and_commit(
    mut tx: Tx,
    tenant: &TenantId,
    event: &NewEvent,
) -> Result<EventRecord> {
    let insert = event_insert(&mut tx, tenant, event).await?;
    let rows = tx.commit_after(insert).await?;
    let row = rows
        .first()
        .ok_or_else(|| StoreError::Corrupt("an event's insert returned no id".into()))?;
    recorded(tenant, event, row)
}

/// The statement that inserts `event` (returning its id), once the transaction holds
/// the group's event order and notes the event for announcement.
async fn event_insert(tx: &mut Tx, tenant: &TenantId, event: &NewEvent) -> Result<Sql> {
    let cause = event
        .cause
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("cannot encode the event's cause: {e}")))?;
    tx.lock_event_order(tenant, &event.group).await?;
    tx.recorded_event(tenant, &event.group);
    Ok(sql(
        "INSERT INTO events (tenant, group_name, at, kind, instance_id, cause, message) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(tenant)
    .bind(&event.group)
    .bind(event.at)
    .bind(event.kind.as_str())
    .bind(event.instance_id.as_ref().map(InstanceId::as_str))
    .bind(cause)
    .bind(&event.message))
}

/// The stored event, from its insert's row.
fn recorded(tenant: &TenantId, event: &NewEvent, row: &Row) -> Result<EventRecord> {
    let mut stored = event.clone();
    stored.tenant = tenant.clone();
    Ok(EventRecord {
        id: row.get("id")?,
        event: stored,
    })
}

#[async_trait]
impl<S: SqlStore> EventStore for S {
    async fn append_event(&self, event: NewEvent) -> Result<EventRecord> {
        let mut tx = self.db().begin().await?;
        let record = insert_event(&mut tx, &event.tenant, &event).await?;
        tx.commit().await?;
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
        let mut events = sql(format!(
            "SELECT {EVENT_COLUMNS} FROM events \
             WHERE tenant = $1 AND group_name = $2 \
               AND ($3 IS NULL OR at >= $4) \
               AND ($5 IS NULL OR at < $6) \
               AND ($7 IS NULL OR id > $8) \
             ORDER BY id {order} LIMIT $9"
        ))
        .bind(tenant)
        .bind(group)
        .bind(filter.since)
        .bind(filter.since)
        .bind(filter.until)
        .bind(filter.until)
        .bind(filter.after_id)
        .bind(filter.after_id)
        .bind(limit)
        .fetch_all_as(self.db(), decode_event)
        .await?;
        if filter.after_id.is_none() {
            events.reverse();
        }
        Ok(events)
    }
}
