//! Outbound notifications (webhooks: their cursors into the event log and their delivery
//! log) and the tokens of the inbound alert receiver.
//!
//! A webhook's deliveries are driven from the event log: per group a cursor (the last
//! event handled) moves only in the transaction that records the attempt which finished
//! the event (delivered, or given up on), so a restart resumes where it stopped and no
//! event is lost; an attempt that failed is recorded and retried from the log.

use crate::sql::{
    Row, SqlStore, conflict_if_unique, corrupt, not_found, not_found_if_foreign_key, sql,
};
use crate::{Result, Sealed, StoreError};
use async_trait::async_trait;
use swell_core::{TenantId, Timestamp};

/// A stored webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookRecord {
    /// Its id (`wh-…`), unique on the server.
    pub id: String,
    /// Its tenant: it is sent only this tenant's events.
    pub tenant: TenantId,
    /// `Some(group)`: only that group's events; `None`: every group of the tenant.
    pub group: Option<String>,
    /// Where the events are `POST`ed.
    pub url: String,
    /// The event kinds sent (`scale_out`, …); empty: every kind.
    pub event_kinds: Vec<String>,
    /// The HMAC-SHA256 key, sealed with the server's key; never shown.
    pub secret: Sealed,
    /// The newest event id when it was made: it is sent only later events.
    pub start_event_id: i64,
    /// When it was made.
    pub created_at: Timestamp,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The receiver answered 2xx: the event is done.
    Delivered,
    /// It failed and will be tried again.
    Failed,
    /// It failed and will not be tried again (the last attempt, or a refusal that
    /// another try cannot change): the event is done.
    Abandoned,
}

impl DeliveryOutcome {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryOutcome::Delivered => "delivered",
            DeliveryOutcome::Failed => "failed",
            DeliveryOutcome::Abandoned => "abandoned",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "delivered" => Some(DeliveryOutcome::Delivered),
            "failed" => Some(DeliveryOutcome::Failed),
            "abandoned" => Some(DeliveryOutcome::Abandoned),
            _ => None,
        }
    }
}

/// One delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRecord {
    /// Increasing id (0 before it is stored).
    pub id: i64,
    /// The webhook.
    pub webhook: String,
    /// The webhook's tenant.
    pub tenant: TenantId,
    /// The event's group.
    pub group: String,
    /// The event sent.
    pub event_id: i64,
    /// 1 for the first attempt at this event, 2 for the first retry, …
    pub attempt: u32,
    /// When the attempt was made.
    pub at: Timestamp,
    /// How it ended.
    pub outcome: DeliveryOutcome,
    /// The receiver's HTTP status, if it answered.
    pub status_code: Option<u16>,
    /// Why it failed (a status, a timeout, a refused connection, a refused address).
    pub error: Option<String>,
}

/// Webhooks, their cursors and delivery log, and alert tokens.
#[async_trait]
pub trait NotificationStore: Send + Sync + 'static {
    /// Stores a new webhook; `Conflict` (kind `webhook`) if the id is taken, `NotFound`
    /// (kind `tenant`) if its tenant does not exist.
    async fn create_webhook(&self, webhook: &WebhookRecord) -> Result<WebhookRecord>;

    /// The tenant's webhook, if any (another tenant's is `None`).
    async fn get_webhook(&self, tenant: &TenantId, id: &str) -> Result<Option<WebhookRecord>>;

    /// The tenant's webhooks, by id.
    async fn list_webhooks(&self, tenant: &TenantId) -> Result<Vec<WebhookRecord>>;

    /// Every tenant's webhooks (for the dispatcher), by id.
    async fn list_all_webhooks(&self) -> Result<Vec<WebhookRecord>>;

    /// Removes the tenant's webhook with its cursors and delivery log; `NotFound` if absent.
    async fn delete_webhook(&self, tenant: &TenantId, id: &str) -> Result<()>;

    /// The newest event id in the log (0 when empty).
    async fn last_event_id(&self) -> Result<i64>;

    /// The groups a webhook has a cursor for, with the cursor.
    async fn webhook_cursors(&self, webhook: &str) -> Result<Vec<(String, i64)>>;

    /// Moves the webhook's cursor on `group` to `event_id` (only forward).
    async fn advance_webhook_cursor(&self, webhook: &str, group: &str, event_id: i64)
    -> Result<()>;

    /// Records an attempt; when its outcome finishes the event (delivered, abandoned)
    /// the webhook's cursor on the event's group moves to it in the same transaction.
    async fn record_delivery(&self, delivery: &DeliveryRecord) -> Result<DeliveryRecord>;

    /// The attempts at one event, oldest first.
    async fn event_deliveries(&self, webhook: &str, event_id: i64) -> Result<Vec<DeliveryRecord>>;

    /// The tenant's webhook's newest `limit` attempts, oldest first; `NotFound` if the
    /// webhook is not the tenant's.
    async fn list_deliveries(
        &self,
        tenant: &TenantId,
        webhook: &str,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>>;

    /// Sets the group's alert token (its hash), replacing the previous one.
    async fn set_alert_token(
        &self,
        tenant: &TenantId,
        group: &str,
        token_hash: &str,
        at: Timestamp,
    ) -> Result<()>;

    /// The tenant and group an alert token (its hash) belongs to, and when it was made.
    async fn alert_token(&self, token_hash: &str) -> Result<Option<(TenantId, String, Timestamp)>>;
}

const WEBHOOK_COLUMNS: &str =
    "id, tenant, group_name, url, event_kinds, secret, start_event_id, created_at";
const DELIVERY_COLUMNS: &str =
    "id, webhook, tenant, group_name, event_id, attempt, at, outcome, status_code, error";

fn decode_webhook(row: &Row) -> Result<WebhookRecord> {
    let kinds: String = row.get("event_kinds")?;
    Ok(WebhookRecord {
        id: row.get("id")?,
        tenant: row.tenant()?,
        group: row.get("group_name")?,
        url: row.get("url")?,
        event_kinds: serde_json::from_str(&kinds).map_err(|e| corrupt("event_kinds", e))?,
        secret: Sealed(row.get("secret")?),
        start_event_id: row.get("start_event_id")?,
        created_at: row.time("created_at")?,
    })
}

fn decode_delivery(row: &Row) -> Result<DeliveryRecord> {
    let outcome: String = row.get("outcome")?;
    let attempt: i64 = row.get("attempt")?;
    Ok(DeliveryRecord {
        id: row.get("id")?,
        webhook: row.get("webhook")?,
        tenant: row.tenant()?,
        group: row.get("group_name")?,
        event_id: row.get("event_id")?,
        attempt: u32::try_from(attempt).map_err(|e| corrupt("attempt", e))?,
        at: row.time("at")?,
        outcome: DeliveryOutcome::parse(&outcome)
            .ok_or_else(|| corrupt("outcome", format!("unknown outcome `{outcome}`")))?,
        status_code: row
            .get::<Option<i64>>("status_code")?
            .map(|c| u16::try_from(c).map_err(|e| corrupt("status_code", e)))
            .transpose()?,
        error: row.get("error")?,
    })
}

#[async_trait]
impl<S: SqlStore> NotificationStore for S {
    async fn create_webhook(&self, w: &WebhookRecord) -> Result<WebhookRecord> {
        let kinds = serde_json::to_string(&w.event_kinds)
            .map_err(|e| StoreError::Corrupt(format!("event_kinds: {e}")))?;
        sql(format!(
            "INSERT INTO webhooks ({WEBHOOK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(w.id.as_str())
        .bind(&w.tenant)
        .bind(w.group.as_deref())
        .bind(w.url.as_str())
        .bind(kinds)
        .bind(w.secret.0.as_slice())
        .bind(w.start_event_id)
        .bind(w.created_at)
        .execute(self.db())
        .await
        .map_err(conflict_if_unique("webhook", w.id.clone()))
        .map_err(not_found_if_foreign_key("tenant", w.tenant.as_str()))?;
        Ok(w.clone())
    }

    async fn get_webhook(&self, tenant: &TenantId, id: &str) -> Result<Option<WebhookRecord>> {
        sql(format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE tenant = $1 AND id = $2"
        ))
        .bind(tenant)
        .bind(id)
        .fetch_optional_as(self.db(), decode_webhook)
        .await
    }

    async fn list_webhooks(&self, tenant: &TenantId) -> Result<Vec<WebhookRecord>> {
        sql(format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE tenant = $1 ORDER BY id"
        ))
        .bind(tenant)
        .fetch_all_as(self.db(), decode_webhook)
        .await
    }

    async fn list_all_webhooks(&self) -> Result<Vec<WebhookRecord>> {
        sql(format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks ORDER BY id"
        ))
        .fetch_all_as(self.db(), decode_webhook)
        .await
    }

    async fn delete_webhook(&self, tenant: &TenantId, id: &str) -> Result<()> {
        let deleted = sql("DELETE FROM webhooks WHERE tenant = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .execute(self.db())
            .await?;
        if deleted == 0 {
            return Err(not_found("webhook", id));
        }
        Ok(())
    }

    async fn last_event_id(&self) -> Result<i64> {
        let row = sql("SELECT COALESCE(MAX(id), 0) AS last FROM events")
            .fetch_one(self.db())
            .await?;
        row.get("last")
    }

    async fn webhook_cursors(&self, webhook: &str) -> Result<Vec<(String, i64)>> {
        sql(
            "SELECT group_name, last_event_id FROM webhook_cursors WHERE webhook = $1 \
             ORDER BY group_name",
        )
        .bind(webhook)
        .fetch_all_as(self.db(), |row| {
            Ok((row.get("group_name")?, row.get("last_event_id")?))
        })
        .await
    }

    async fn advance_webhook_cursor(
        &self,
        webhook: &str,
        group: &str,
        event_id: i64,
    ) -> Result<()> {
        let mut tx = self.db().begin().await?;
        advance(&mut tx, webhook, group, event_id).await?;
        tx.commit().await
    }

    async fn record_delivery(&self, d: &DeliveryRecord) -> Result<DeliveryRecord> {
        let mut tx = self.db().begin().await?;
        let row = sql(
            "INSERT INTO webhook_deliveries (webhook, tenant, group_name, event_id, attempt, \
             at, outcome, status_code, error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             RETURNING id",
        )
        .bind(d.webhook.as_str())
        .bind(&d.tenant)
        .bind(d.group.as_str())
        .bind(d.event_id)
        .bind(d.attempt)
        .bind(d.at)
        .bind(d.outcome.as_str())
        .bind(d.status_code.map(u32::from))
        .bind(d.error.as_deref())
        .fetch_one(&mut tx)
        .await
        .map_err(not_found_if_foreign_key("webhook", d.webhook.as_str()))?;
        if d.outcome != DeliveryOutcome::Failed {
            advance(&mut tx, &d.webhook, &d.group, d.event_id).await?;
        }
        tx.commit().await?;
        let mut stored = d.clone();
        stored.id = row.get("id")?;
        Ok(stored)
    }

    async fn event_deliveries(&self, webhook: &str, event_id: i64) -> Result<Vec<DeliveryRecord>> {
        sql(format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries \
             WHERE webhook = $1 AND event_id = $2 ORDER BY id"
        ))
        .bind(webhook)
        .bind(event_id)
        .fetch_all_as(self.db(), decode_delivery)
        .await
    }

    async fn list_deliveries(
        &self,
        tenant: &TenantId,
        webhook: &str,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>> {
        if self.get_webhook(tenant, webhook).await?.is_none() {
            return Err(not_found("webhook", webhook));
        }
        let mut rows = sql(format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries \
             WHERE tenant = $1 AND webhook = $2 ORDER BY id DESC LIMIT $3"
        ))
        .bind(tenant)
        .bind(webhook)
        .bind(limit)
        .fetch_all_as(self.db(), decode_delivery)
        .await?;
        rows.reverse();
        Ok(rows)
    }

    async fn set_alert_token(
        &self,
        tenant: &TenantId,
        group: &str,
        token_hash: &str,
        at: Timestamp,
    ) -> Result<()> {
        sql(
            "INSERT INTO alert_tokens (tenant, group_name, token_hash, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (tenant, group_name) DO UPDATE SET \
             token_hash = excluded.token_hash, created_at = excluded.created_at",
        )
        .bind(tenant)
        .bind(group)
        .bind(token_hash)
        .bind(at)
        .execute(self.db())
        .await
        .map_err(not_found_if_foreign_key("tenant", tenant.as_str()))?;
        Ok(())
    }

    async fn alert_token(&self, token_hash: &str) -> Result<Option<(TenantId, String, Timestamp)>> {
        sql("SELECT tenant, group_name, created_at FROM alert_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional_as(self.db(), |row| {
                Ok((
                    row.tenant()?,
                    row.get("group_name")?,
                    row.time("created_at")?,
                ))
            })
            .await
    }
}

/// Moves a cursor forward (never back), inside a transaction.
async fn advance(tx: &mut crate::sql::Tx, webhook: &str, group: &str, event_id: i64) -> Result<()> {
    sql(
        "INSERT INTO webhook_cursors (webhook, group_name, last_event_id) VALUES ($1, $2, $3) \
         ON CONFLICT (webhook, group_name) DO UPDATE SET last_event_id = excluded.last_event_id \
         WHERE webhook_cursors.last_event_id < excluded.last_event_id",
    )
    .bind(webhook)
    .bind(group)
    .bind(event_id)
    .execute(tx)
    .await
    .map_err(not_found_if_foreign_key("webhook", webhook))?;
    Ok(())
}
