//! The audit log of API requests.

use crate::events::DEFAULT_EVENT_LIMIT;
use crate::sql::{SqlStore, sql};
use crate::{AuditRecord, NewAudit, Result, StoreError};
use async_trait::async_trait;
use swell_core::TenantId;

/// The audit log of API requests.
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// Appends an audit record.
    async fn append_audit(&self, entry: &NewAudit) -> Result<AuditRecord>;

    /// Audit records oldest first: of one tenant, or of all when `tenant` is `None`; the
    /// newest `limit` (default 1000).
    async fn list_audit(
        &self,
        tenant: Option<&TenantId>,
        limit: Option<u32>,
    ) -> Result<Vec<AuditRecord>>;
}

#[async_trait]
impl<S: SqlStore> AuditStore for S {
    async fn append_audit(&self, entry: &NewAudit) -> Result<AuditRecord> {
        let id: i64 = sql(
            "INSERT INTO audit_log (at, user_name, tenant, action, target, source, result) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(entry.at)
        .bind(&entry.user)
        .bind(entry.tenant.as_ref().map(TenantId::as_str))
        .bind(&entry.action)
        .bind(&entry.target)
        .bind(&entry.source)
        .bind(i64::from(entry.result))
        .fetch_one(self.db())
        .await?
        .get("id")?;
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
        let mut out = sql(
            "SELECT id, at, user_name, tenant, action, target, source, result FROM audit_log \
             WHERE ($1 IS NULL OR tenant = $2) ORDER BY id DESC LIMIT $3",
        )
        .bind(t)
        .bind(t)
        .bind(limit.unwrap_or(DEFAULT_EVENT_LIMIT))
        .fetch_all_as(self.db(), |row| {
            let tenant = row
                .get::<Option<String>>("tenant")?
                .map(|t| {
                    TenantId::new(t).map_err(|e| StoreError::Corrupt(format!("audit tenant: {e}")))
                })
                .transpose()?;
            let result: i64 = row.get("result")?;
            Ok(AuditRecord {
                id: row.get("id")?,
                entry: NewAudit {
                    at: row.time("at")?,
                    user: row.get("user_name")?,
                    tenant,
                    action: row.get("action")?,
                    target: row.get("target")?,
                    source: row.get("source")?,
                    result: u16::try_from(result).map_err(|_| {
                        StoreError::Corrupt(format!("audit result {result} out of range"))
                    })?,
                },
            })
        })
        .await?;
        out.reverse();
        Ok(out)
    }
}
