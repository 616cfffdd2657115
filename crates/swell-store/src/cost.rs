//! Cost: the prices an admin set per provider (and size), each with the time it takes
//! effect so that a change never rewrites what the past cost; and the instance rows a
//! period's cost is computed from (`swell_core::cost`).

use crate::instances::{INSTANCE_COLUMNS, decode_instance};
use crate::sql::{Row, SqlStore, not_found, sql};
use crate::{InstanceRecord, Result};
use async_trait::async_trait;
use swell_core::{TenantId, Timestamp};

/// One stored price: from `from` on, an instance-hour of `provider` (of `size`, or of
/// any size when `None`) costs `per_hour`.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceRecord {
    /// The provider's name.
    pub provider: String,
    /// The size (an OpenStack flavor) it is for; `None`: every size without its own.
    pub size: Option<String>,
    /// When it takes effect.
    pub from: Timestamp,
    /// The price of one instance-hour, in the operator's currency.
    pub per_hour: f64,
    /// When it was set.
    pub set_at: Timestamp,
}

/// Prices, and the instance rows a period's cost is computed from.
#[async_trait]
pub trait CostStore: Send + Sync + 'static {
    /// Stores a price; one already set for the same provider, size and `from` is
    /// replaced.
    async fn set_price(&self, price: &PriceRecord) -> Result<()>;

    /// Every price, by provider, size (provider-wide first), then `from`.
    async fn list_prices(&self) -> Result<Vec<PriceRecord>>;

    /// Removes every price of the provider and size (its whole history); returns how
    /// many; `NotFound` (kind `price`) when there was none.
    async fn delete_prices(&self, provider: &str, size: Option<&str>) -> Result<u64>;

    /// The group's instances alive at some moment of `[since, until)`: created before
    /// `until` and either still live or ended (terminated, failed: their `updated_at`)
    /// after `since`; by `created_order`.
    async fn instances_between(
        &self,
        tenant: &TenantId,
        group: &str,
        since: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<InstanceRecord>>;
}

/// The stored form of "any size" (a primary key cannot hold NULL).
const ANY_SIZE: &str = "";

fn decode_price(row: &Row) -> Result<PriceRecord> {
    let size: String = row.get("size")?;
    Ok(PriceRecord {
        provider: row.get("provider")?,
        size: (size != ANY_SIZE).then_some(size),
        from: row.time("effective_from")?,
        per_hour: row.get("per_hour")?,
        set_at: row.time("set_at")?,
    })
}

#[async_trait]
impl<S: SqlStore> CostStore for S {
    async fn set_price(&self, p: &PriceRecord) -> Result<()> {
        sql(
            "INSERT INTO prices (provider, size, effective_from, per_hour, set_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (provider, size, effective_from) \
             DO UPDATE SET per_hour = excluded.per_hour, set_at = excluded.set_at",
        )
        .bind(p.provider.as_str())
        .bind(p.size.as_deref().unwrap_or(ANY_SIZE))
        .bind(p.from)
        .bind(p.per_hour)
        .bind(p.set_at)
        .execute(self.db())
        .await?;
        Ok(())
    }

    async fn list_prices(&self) -> Result<Vec<PriceRecord>> {
        sql(
            "SELECT provider, size, effective_from, per_hour, set_at FROM prices \
             ORDER BY provider, size, effective_from",
        )
        .fetch_all_as(self.db(), decode_price)
        .await
    }

    async fn delete_prices(&self, provider: &str, size: Option<&str>) -> Result<u64> {
        let deleted = sql("DELETE FROM prices WHERE provider = $1 AND size = $2")
            .bind(provider)
            .bind(size.unwrap_or(ANY_SIZE))
            .execute(self.db())
            .await?;
        if deleted == 0 {
            let what = match size {
                Some(s) => format!("{provider} (size {s})"),
                None => provider.to_string(),
            };
            return Err(not_found("price", what));
        }
        Ok(deleted)
    }

    async fn instances_between(
        &self,
        tenant: &TenantId,
        group: &str,
        since: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<InstanceRecord>> {
        sql(format!(
            "SELECT {INSTANCE_COLUMNS} FROM instances \
             WHERE tenant = $1 AND group_name = $2 AND created_at < $3 \
               AND (status NOT IN ('terminated', 'failed') OR updated_at > $4) \
             ORDER BY created_order"
        ))
        .bind(tenant)
        .bind(group)
        .bind(until)
        .bind(since)
        .fetch_all_as(self.db(), decode_instance)
        .await
    }
}
