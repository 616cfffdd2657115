//! Tenants' encrypted provider credentials.

use crate::sql::{SqlStore, not_found_if_foreign_key, sql};
use crate::{Result, Sealed};
use async_trait::async_trait;
use swell_core::{TenantId, Timestamp};

/// Tenants' encrypted provider credentials.
#[async_trait]
pub trait CredentialStore: Send + Sync + 'static {
    /// Stores (or replaces) an encrypted provider credential of the tenant.
    async fn put_credential(
        &self,
        tenant: &TenantId,
        name: &str,
        sealed: &Sealed,
        now: Timestamp,
    ) -> Result<()>;

    /// The encrypted provider credential, if any.
    async fn get_credential(&self, tenant: &TenantId, name: &str) -> Result<Option<Sealed>>;
}

#[async_trait]
impl<S: SqlStore> CredentialStore for S {
    /// `NotFound` (kind `tenant`) if the tenant does not exist.
    async fn put_credential(
        &self,
        tenant: &TenantId,
        name: &str,
        sealed: &Sealed,
        now: Timestamp,
    ) -> Result<()> {
        sql(
            "INSERT INTO provider_credentials (tenant, name, sealed, updated_at) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant, name) DO UPDATE SET sealed = excluded.sealed, \
             updated_at = excluded.updated_at",
        )
        .bind(tenant)
        .bind(name)
        .bind(sealed.0.as_slice())
        .bind(now)
        .execute(self.db())
        .await
        .map_err(not_found_if_foreign_key("tenant", tenant.as_str()))?;
        Ok(())
    }

    async fn get_credential(&self, tenant: &TenantId, name: &str) -> Result<Option<Sealed>> {
        sql("SELECT sealed FROM provider_credentials WHERE tenant = $1 AND name = $2")
            .bind(tenant)
            .bind(name)
            .fetch_optional_as(self.db(), |row| row.get("sealed").map(Sealed))
            .await
    }
}
