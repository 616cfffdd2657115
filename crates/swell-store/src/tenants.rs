//! Tenants and their quotas.

use crate::sql::{Row, RowLock, SqlStore, Tx, conflict_if_unique, corrupt, not_found, sql};
use crate::{Quota, Result, StoreError, TenantRecord, decode_grants, encode_grants};
use async_trait::async_trait;
use swell_core::{TenantId, Timestamp};

/// Tenants and their quotas.
#[async_trait]
pub trait TenantStore: Send + Sync + 'static {
    /// Creates the tenant if it does not exist.
    async fn ensure_tenant(&self, tenant: &TenantId, now: Timestamp) -> Result<()>;

    /// Stores a new tenant; `Conflict` if the id is taken.
    async fn create_tenant(&self, tenant: &TenantRecord) -> Result<TenantRecord>;

    /// The tenant, if it exists.
    async fn get_tenant(&self, id: &TenantId) -> Result<Option<TenantRecord>>;

    /// Every tenant, by id.
    async fn list_tenants(&self) -> Result<Vec<TenantRecord>>;

    /// Replaces the tenant's display fields, quota, grants, deleting flag and `updated_at`;
    /// `NotFound` if absent.
    async fn update_tenant(&self, tenant: &TenantRecord) -> Result<TenantRecord>;

    /// Removes the tenant with its role bindings, instance owners, tokens, API keys,
    /// credentials and private provider definitions (its events and audit records stay); `NotFound` if absent, `Conflict`
    /// (kind `tenant`) while it still has groups.
    async fn delete_tenant(&self, id: &TenantId) -> Result<()>;

    /// The tenant's effective quota: its own limits, each missing one taken from the
    /// service-wide default. `NotFound` if the tenant does not exist.
    async fn get_quota(&self, tenant: &TenantId) -> Result<Quota>;

    /// The service-wide default quota (unlimited until an admin sets one).
    async fn get_default_quota(&self) -> Result<Quota>;

    /// Sets the service-wide default quota.
    async fn set_default_quota(&self, quota: &Quota) -> Result<()>;
}

const TENANT_COLUMNS: &str = "id, created_at, display_name, description, max_instances, \
     max_vcpus, max_memory_mb, max_groups, grants, deleting, updated_at";

fn decode_tenant(row: &Row) -> Result<TenantRecord> {
    let id: String = row.get("id")?;
    let max_memory_mb = row
        .get::<Option<i64>>("max_memory_mb")?
        .map(|v| {
            u64::try_from(v).map_err(|_| corrupt("max_memory_mb", format!("{v} out of range")))
        })
        .transpose()?;
    Ok(TenantRecord {
        id: TenantId::new(id).map_err(|e| corrupt("id", e))?,
        display_name: row.get("display_name")?,
        description: row.get("description")?,
        quota: Quota {
            max_instances: row.opt_u32("max_instances")?,
            max_vcpus: row.opt_u32("max_vcpus")?,
            max_memory_mb,
            max_groups: row.opt_u32("max_groups")?,
        },
        grants: decode_grants(&row.get::<String>("grants")?)?,
        deleting: row.bool("deleting")?,
        created_at: row.time("created_at")?,
        updated_at: row.time("updated_at")?,
    })
}

/// Creates the tenant if it does not exist, inside a caller's transaction.
pub(crate) async fn ensure_tenant_in(tx: &mut Tx, tenant: &TenantId, now: Timestamp) -> Result<()> {
    sql("INSERT INTO tenants (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
        .bind(tenant)
        .bind(now)
        .execute(tx)
        .await?;
    Ok(())
}

#[async_trait]
impl<S: SqlStore> TenantStore for S {
    async fn ensure_tenant(&self, tenant: &TenantId, now: Timestamp) -> Result<()> {
        let mut tx = self.db().begin().await?;
        ensure_tenant_in(&mut tx, tenant, now).await?;
        tx.commit().await
    }

    async fn create_tenant(&self, tenant: &TenantRecord) -> Result<TenantRecord> {
        let q = &tenant.quota;
        sql(
            "INSERT INTO tenants (id, created_at, display_name, description, max_instances, \
             max_vcpus, max_memory_mb, max_groups, grants, deleting, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&tenant.id)
        .bind(tenant.created_at)
        .bind(&tenant.display_name)
        .bind(&tenant.description)
        .bind(q.max_instances)
        .bind(q.max_vcpus)
        .bind(q.max_memory_mb.map(|v| v as i64))
        .bind(q.max_groups)
        .bind(encode_grants(&tenant.grants)?)
        .bind(tenant.deleting)
        .bind(tenant.updated_at)
        .execute(self.db())
        .await
        .map_err(conflict_if_unique("tenant", tenant.id.to_string()))?;
        Ok(tenant.clone())
    }

    async fn get_tenant(&self, id: &TenantId) -> Result<Option<TenantRecord>> {
        sql(format!(
            "SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional_as(self.db(), decode_tenant)
        .await
    }

    async fn list_tenants(&self) -> Result<Vec<TenantRecord>> {
        sql(format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY id"))
            .fetch_all_as(self.db(), decode_tenant)
            .await
    }

    async fn update_tenant(&self, tenant: &TenantRecord) -> Result<TenantRecord> {
        let q = &tenant.quota;
        let updated = sql("UPDATE tenants SET display_name = $1, description = $2, \
             max_instances = $3, max_vcpus = $4, max_memory_mb = $5, max_groups = $6, \
             grants = $7, deleting = $8, updated_at = $9 WHERE id = $10")
        .bind(&tenant.display_name)
        .bind(&tenant.description)
        .bind(q.max_instances)
        .bind(q.max_vcpus)
        .bind(q.max_memory_mb.map(|v| v as i64))
        .bind(q.max_groups)
        .bind(encode_grants(&tenant.grants)?)
        .bind(tenant.deleting)
        .bind(tenant.updated_at)
        .bind(&tenant.id)
        .execute(self.db())
        .await?;
        if updated == 0 {
            return Err(not_found("tenant", tenant.id.as_str()));
        }
        self.get_tenant(&tenant.id)
            .await?
            .ok_or_else(|| not_found("tenant", tenant.id.as_str()))
    }

    async fn delete_tenant(&self, id: &TenantId) -> Result<()> {
        let mut tx = self.db().begin().await?;
        // Lock the tenant first: a group being created in it holds a KEY SHARE lock on
        // this row (its foreign key), so we wait for it and then count it, and a group
        // created after us waits for our delete and fails, instead of one slipping in
        // between the count and the delete.
        sql("SELECT 1 FROM tenants WHERE id = $1")
            .bind(id)
            .lock(RowLock::Update)
            .fetch_optional(&mut tx)
            .await?;
        let groups: i64 = sql("SELECT COUNT(*) AS n FROM scaling_groups WHERE tenant = $1")
            .bind(id)
            .fetch_one(&mut tx)
            .await?
            .get("n")?;
        if groups > 0 {
            return Err(StoreError::Conflict {
                kind: "tenant",
                name: format!("{id}` still has {groups} group(s); `{id}"),
            });
        }
        let deleted = sql("DELETE FROM tenants WHERE id = $1")
            .bind(id)
            .execute(&mut tx)
            .await?;
        if deleted == 0 {
            return Err(not_found("tenant", id.as_str()));
        }
        tx.commit().await
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
        let row = sql("SELECT value FROM settings WHERE key = 'default_quota'")
            .fetch_optional(self.db())
            .await?;
        let Some(row) = row else {
            return Ok(Quota::default());
        };
        let raw: String = row.get("value")?;
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
        sql(
            "INSERT INTO settings (key, value) VALUES ('default_quota', $1) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(value.to_string())
        .execute(self.db())
        .await?;
        Ok(())
    }
}
