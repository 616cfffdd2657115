//! Provider definitions: the providers an admin defined by name (`docker-rack1`,
//! `openstack-prod`), each of a kind, with its configuration and sealed credentials;
//! operator-wide (granted to tenants by name) or private to one tenant.

use crate::sql::{
    Row, SqlStore, conflict_if_unique, corrupt, not_found, not_found_if_foreign_key, sql,
};
use crate::{Result, Sealed, StoreError};
use async_trait::async_trait;
use swell_core::{ProviderKind, TenantId, Timestamp};

/// A stored provider definition.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderRecord {
    /// Its name, unique on the server (what groups and grants name).
    pub name: String,
    /// What kind of provider it is.
    pub kind: ProviderKind,
    /// The kind's settings (engines, endpoints, network defaults), never a secret.
    pub config: serde_json::Value,
    /// `None`: operator-wide, usable by the tenants granted it; `Some(t)`: private to
    /// tenant `t` (e.g. its own OpenStack project), visible to no other tenant.
    pub tenant: Option<TenantId>,
    /// The credentials, sealed with the server's key (bound to the definition's tenant
    /// and name); `None` when the kind needs none.
    pub credentials: Option<Sealed>,
    /// When it was defined.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

/// Provider definitions.
#[async_trait]
pub trait ProviderStore: Send + Sync + 'static {
    /// Stores a new definition; `Conflict` (kind `provider`) if the name is taken,
    /// `NotFound` (kind `tenant`) if its tenant does not exist.
    async fn create_provider(&self, provider: &ProviderRecord) -> Result<ProviderRecord>;

    /// The definition, if any.
    async fn get_provider(&self, name: &str) -> Result<Option<ProviderRecord>>;

    /// Every definition, by name.
    async fn list_providers(&self) -> Result<Vec<ProviderRecord>>;

    /// Replaces the definition's configuration, credentials and `updated_at` (its kind
    /// and tenant never change); `NotFound` if absent.
    async fn update_provider(&self, provider: &ProviderRecord) -> Result<ProviderRecord>;

    /// Removes the definition; `NotFound` if absent.
    async fn delete_provider(&self, name: &str) -> Result<()>;
}

const PROVIDER_COLUMNS: &str = "name, kind, config, tenant, credentials, created_at, updated_at";

fn decode_provider(row: &Row) -> Result<ProviderRecord> {
    let kind: String = row.get("kind")?;
    let config: String = row.get("config")?;
    let tenant = row
        .get::<Option<String>>("tenant")?
        .map(|t| TenantId::new(t).map_err(|e| corrupt("tenant", e)))
        .transpose()?;
    Ok(ProviderRecord {
        name: row.get("name")?,
        kind: kind.parse().map_err(|e| corrupt("kind", e))?,
        config: serde_json::from_str(&config).map_err(|e| corrupt("config", e))?,
        tenant,
        credentials: row.get::<Option<Vec<u8>>>("credentials")?.map(Sealed),
        created_at: row.time("created_at")?,
        updated_at: row.time("updated_at")?,
    })
}

fn encode_config(config: &serde_json::Value) -> Result<String> {
    serde_json::to_string(config).map_err(|e| StoreError::Corrupt(format!("config: {e}")))
}

#[async_trait]
impl<S: SqlStore> ProviderStore for S {
    async fn create_provider(&self, p: &ProviderRecord) -> Result<ProviderRecord> {
        let result = sql(
            "INSERT INTO providers (name, kind, config, tenant, credentials, created_at, \
             updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(p.name.as_str())
        .bind(p.kind.as_str())
        .bind(encode_config(&p.config)?)
        .bind(p.tenant.as_ref().map(TenantId::as_str))
        .bind(p.credentials.as_ref().map(|c| c.0.as_slice()))
        .bind(p.created_at)
        .bind(p.updated_at)
        .execute(self.db())
        .await;
        let tenant = p.tenant.as_ref().map_or("", TenantId::as_str);
        result
            .map_err(conflict_if_unique("provider", p.name.clone()))
            .map_err(not_found_if_foreign_key("tenant", tenant))?;
        Ok(p.clone())
    }

    async fn get_provider(&self, name: &str) -> Result<Option<ProviderRecord>> {
        sql(format!(
            "SELECT {PROVIDER_COLUMNS} FROM providers WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional_as(self.db(), decode_provider)
        .await
    }

    async fn list_providers(&self) -> Result<Vec<ProviderRecord>> {
        sql(format!(
            "SELECT {PROVIDER_COLUMNS} FROM providers ORDER BY name"
        ))
        .fetch_all_as(self.db(), decode_provider)
        .await
    }

    async fn update_provider(&self, p: &ProviderRecord) -> Result<ProviderRecord> {
        let updated = sql(
            "UPDATE providers SET config = $1, credentials = $2, updated_at = $3 WHERE name = $4",
        )
        .bind(encode_config(&p.config)?)
        .bind(p.credentials.as_ref().map(|c| c.0.as_slice()))
        .bind(p.updated_at)
        .bind(p.name.as_str())
        .execute(self.db())
        .await?;
        if updated == 0 {
            return Err(not_found("provider", p.name.as_str()));
        }
        self.get_provider(&p.name)
            .await?
            .ok_or_else(|| not_found("provider", p.name.as_str()))
    }

    async fn delete_provider(&self, name: &str) -> Result<()> {
        let deleted = sql("DELETE FROM providers WHERE name = $1")
            .bind(name)
            .execute(self.db())
            .await?;
        if deleted == 0 {
            return Err(not_found("provider", name));
        }
        Ok(())
    }
}
