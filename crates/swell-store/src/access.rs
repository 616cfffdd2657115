//! Who may do what: users, role bindings, instance owners, tokens and API keys.

use crate::instances::fetch_instance;
use crate::sql::{Row, SqlStore, Tx, conflict_if_unique, not_found, not_found_if_foreign_key, sql};
use crate::{
    ApiKeyRecord, InstanceOwner, Result, Role, RoleBinding, StoreError, TokenRecord, UserRecord,
};
use async_trait::async_trait;
use swell_core::{InstanceId, TenantId, Timestamp};

/// Who may do what: users, role bindings, instance owners, tokens and API keys.
#[async_trait]
pub trait AccessStore: Send + Sync + 'static {
    /// Stores a new user; `Conflict` if the name is taken.
    async fn create_user(&self, user: &UserRecord) -> Result<()>;

    /// The user, if it exists.
    async fn get_user(&self, name: &str) -> Result<Option<UserRecord>>;

    /// Every user, by name.
    async fn list_users(&self) -> Result<Vec<UserRecord>>;

    /// Removes the user with its bindings and tokens; `NotFound` if absent.
    async fn delete_user(&self, name: &str) -> Result<()>;

    /// Replaces the password hash and revokes every token of the user, in one
    /// transaction; `NotFound` if absent.
    async fn set_password(&self, name: &str, password_hash: &str, now: Timestamp) -> Result<()>;

    /// Gives the user `role` in the tenant (replacing any other role there); `NotFound`
    /// (kind `user` or `tenant`) if either is absent.
    async fn set_role(
        &self,
        user: &str,
        tenant: &TenantId,
        role: Role,
        now: Timestamp,
    ) -> Result<()>;

    /// Takes the user's role in the tenant away; `NotFound` (kind `role`) if there is none.
    async fn remove_role(&self, user: &str, tenant: &TenantId) -> Result<()>;

    /// The user's role in the tenant, if any.
    async fn get_role(&self, user: &str, tenant: &TenantId) -> Result<Option<Role>>;

    /// The tenant's role bindings, by user.
    async fn list_roles(&self, tenant: &TenantId) -> Result<Vec<RoleBinding>>;

    /// Binds a user to an instance of the tenant; `NotFound` (kind `instance` or `user`)
    /// if either is absent. Idempotent.
    async fn add_instance_owner(&self, owner: &InstanceOwner, now: Timestamp) -> Result<()>;

    /// Removes the binding; `NotFound` (kind `instance owner`) if there is none.
    async fn remove_instance_owner(&self, owner: &InstanceOwner) -> Result<()>;

    /// The tenant's instance-owner bindings (of one user when `user` is given), by
    /// instance then user.
    async fn list_instance_owners(
        &self,
        tenant: &TenantId,
        user: Option<&str>,
    ) -> Result<Vec<InstanceOwner>>;

    /// Stores a new token (by hash).
    async fn create_token(&self, token: &TokenRecord) -> Result<()>;

    /// The token with this hash, if any (revoked and expired ones too).
    async fn get_token(&self, hash: &str) -> Result<Option<TokenRecord>>;

    /// Revokes one token; `NotFound` if absent.
    async fn revoke_token(&self, hash: &str) -> Result<()>;

    /// Revokes every token of the user; returns how many were live.
    async fn revoke_user_tokens(&self, user: &str) -> Result<u64>;

    /// Stores a new API key; `Conflict` if the name is taken in its tenant, `NotFound`
    /// (kind `tenant`) if the tenant is absent.
    async fn create_api_key(&self, key: &ApiKeyRecord) -> Result<()>;

    /// The API key with this hash, if any.
    async fn get_api_key(&self, hash: &str) -> Result<Option<ApiKeyRecord>>;

    /// The tenant's API keys, by name.
    async fn list_api_keys(&self, tenant: &TenantId) -> Result<Vec<ApiKeyRecord>>;

    /// Removes the tenant's API key; `NotFound` if absent.
    async fn delete_api_key(&self, tenant: &TenantId, name: &str) -> Result<()>;
}

const USER_COLUMNS: &str = "name, password_hash, is_admin, created_at, password_changed_at";

const TENANT_EXISTS: &str = "SELECT 1 FROM tenants WHERE id = $1";

const API_KEY_COLUMNS: &str = "hash, tenant, name, role, created_by, created_at";

fn decode_user(row: &Row) -> Result<UserRecord> {
    Ok(UserRecord {
        name: row.get("name")?,
        password_hash: row.get("password_hash")?,
        is_admin: row.bool("is_admin")?,
        created_at: row.time("created_at")?,
        password_changed_at: row.time("password_changed_at")?,
    })
}

fn decode_role(row: &Row) -> Result<Role> {
    row.get::<String>("role")?
        .parse()
        .map_err(StoreError::Corrupt)
}

fn decode_api_key(row: &Row) -> Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        hash: row.get("hash")?,
        tenant: row.tenant()?,
        name: row.get("name")?,
        role: decode_role(row)?,
        created_by: row.get("created_by")?,
        created_at: row.time("created_at")?,
    })
}

/// `NotFound { kind, name: key }` unless `query` (`SELECT 1 … = $1`) finds a row.
async fn exists(tx: &mut Tx, kind: &'static str, query: &'static str, key: &str) -> Result<()> {
    sql(query)
        .bind(key)
        .fetch_optional(tx)
        .await?
        .map(|_| ())
        .ok_or_else(|| not_found(kind, key))
}

/// `NotFound` (kind `user` or `tenant`) unless both exist.
async fn user_and_tenant_exist(tx: &mut Tx, user: &str, tenant: &TenantId) -> Result<()> {
    exists(tx, "user", "SELECT 1 FROM users WHERE name = $1", user).await?;
    exists(tx, "tenant", TENANT_EXISTS, tenant.as_str()).await
}

#[async_trait]
impl<S: SqlStore> AccessStore for S {
    async fn create_user(&self, user: &UserRecord) -> Result<()> {
        sql(
            "INSERT INTO users (name, password_hash, is_admin, created_at, password_changed_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&user.name)
        .bind(&user.password_hash)
        .bind(user.is_admin)
        .bind(user.created_at)
        .bind(user.password_changed_at)
        .execute(self.db())
        .await
        .map_err(conflict_if_unique("user", &user.name))?;
        Ok(())
    }

    async fn get_user(&self, name: &str) -> Result<Option<UserRecord>> {
        sql(format!("SELECT {USER_COLUMNS} FROM users WHERE name = $1"))
            .bind(name)
            .fetch_optional_as(self.db(), decode_user)
            .await
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>> {
        sql(format!("SELECT {USER_COLUMNS} FROM users ORDER BY name"))
            .fetch_all_as(self.db(), decode_user)
            .await
    }

    async fn delete_user(&self, name: &str) -> Result<()> {
        let deleted = sql("DELETE FROM users WHERE name = $1")
            .bind(name)
            .execute(self.db())
            .await?;
        if deleted == 0 {
            return Err(not_found("user", name));
        }
        Ok(())
    }

    async fn set_password(&self, name: &str, password_hash: &str, now: Timestamp) -> Result<()> {
        let mut tx = self.db().begin().await?;
        let updated =
            sql("UPDATE users SET password_hash = $1, password_changed_at = $2 WHERE name = $3")
                .bind(password_hash)
                .bind(now)
                .bind(name)
                .execute(&mut tx)
                .await?;
        if updated == 0 {
            return Err(not_found("user", name));
        }
        sql("UPDATE tokens SET revoked = TRUE WHERE user_name = $1")
            .bind(name)
            .execute(&mut tx)
            .await?;
        tx.commit().await
    }

    async fn set_role(
        &self,
        user: &str,
        tenant: &TenantId,
        role: Role,
        now: Timestamp,
    ) -> Result<()> {
        let mut tx = self.db().begin().await?;
        user_and_tenant_exist(&mut tx, user, tenant).await?;
        sql(
            "INSERT INTO role_bindings (user_name, tenant, role, created_at) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (user_name, tenant) DO UPDATE SET role = excluded.role",
        )
        .bind(user)
        .bind(tenant)
        .bind(role.as_str())
        .bind(now)
        .execute(&mut tx)
        .await?;
        tx.commit().await
    }

    async fn remove_role(&self, user: &str, tenant: &TenantId) -> Result<()> {
        let deleted = sql("DELETE FROM role_bindings WHERE user_name = $1 AND tenant = $2")
            .bind(user)
            .bind(tenant)
            .execute(self.db())
            .await?;
        if deleted == 0 {
            return Err(not_found("role", format!("{user}@{tenant}")));
        }
        Ok(())
    }

    async fn get_role(&self, user: &str, tenant: &TenantId) -> Result<Option<Role>> {
        sql("SELECT role FROM role_bindings WHERE user_name = $1 AND tenant = $2")
            .bind(user)
            .bind(tenant)
            .fetch_optional_as(self.db(), decode_role)
            .await
    }

    async fn list_roles(&self, tenant: &TenantId) -> Result<Vec<RoleBinding>> {
        sql(
            "SELECT user_name, tenant, role FROM role_bindings WHERE tenant = $1 \
             ORDER BY user_name",
        )
        .bind(tenant)
        .fetch_all_as(self.db(), |row| {
            Ok(RoleBinding {
                user: row.get("user_name")?,
                tenant: row.tenant()?,
                role: decode_role(row)?,
            })
        })
        .await
    }

    async fn add_instance_owner(&self, owner: &InstanceOwner, now: Timestamp) -> Result<()> {
        let mut tx = self.db().begin().await?;
        if fetch_instance(&mut tx, &owner.tenant, &owner.instance)
            .await?
            .is_none()
        {
            return Err(not_found("instance", owner.instance.as_str()));
        }
        user_and_tenant_exist(&mut tx, &owner.user, &owner.tenant).await?;
        sql(
            "INSERT INTO instance_owners (tenant, instance_id, user_name, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(&owner.tenant)
        .bind(&owner.instance)
        .bind(&owner.user)
        .bind(now)
        .execute(&mut tx)
        .await?;
        tx.commit().await
    }

    async fn remove_instance_owner(&self, owner: &InstanceOwner) -> Result<()> {
        let deleted = sql("DELETE FROM instance_owners \
             WHERE tenant = $1 AND instance_id = $2 AND user_name = $3")
        .bind(&owner.tenant)
        .bind(&owner.instance)
        .bind(&owner.user)
        .execute(self.db())
        .await?;
        if deleted == 0 {
            return Err(not_found(
                "instance owner",
                format!("{} of {}", owner.user, owner.instance),
            ));
        }
        Ok(())
    }

    async fn list_instance_owners(
        &self,
        tenant: &TenantId,
        user: Option<&str>,
    ) -> Result<Vec<InstanceOwner>> {
        sql(
            "SELECT tenant, instance_id, user_name FROM instance_owners \
             WHERE tenant = $1 AND ($2 IS NULL OR user_name = $3) \
             ORDER BY instance_id, user_name",
        )
        .bind(tenant)
        .bind(user)
        .bind(user)
        .fetch_all_as(self.db(), |row| {
            Ok(InstanceOwner {
                tenant: row.tenant()?,
                instance: InstanceId(row.get("instance_id")?),
                user: row.get("user_name")?,
            })
        })
        .await
    }

    async fn create_token(&self, token: &TokenRecord) -> Result<()> {
        sql(
            "INSERT INTO tokens (hash, user_name, tenant, created_at, expires_at, revoked) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&token.hash)
        .bind(&token.user)
        .bind(&token.tenant)
        .bind(token.created_at)
        .bind(token.expires_at)
        .bind(token.revoked)
        .execute(self.db())
        .await?;
        Ok(())
    }

    async fn get_token(&self, hash: &str) -> Result<Option<TokenRecord>> {
        sql(
            "SELECT hash, user_name, tenant, created_at, expires_at, revoked FROM tokens \
             WHERE hash = $1",
        )
        .bind(hash)
        .fetch_optional_as(self.db(), |row| {
            Ok(TokenRecord {
                hash: row.get("hash")?,
                user: row.get("user_name")?,
                tenant: row.tenant()?,
                created_at: row.time("created_at")?,
                expires_at: row.time("expires_at")?,
                revoked: row.bool("revoked")?,
            })
        })
        .await
    }

    async fn revoke_token(&self, hash: &str) -> Result<()> {
        let updated = sql("UPDATE tokens SET revoked = TRUE WHERE hash = $1")
            .bind(hash)
            .execute(self.db())
            .await?;
        if updated == 0 {
            return Err(not_found("token", "(hidden)"));
        }
        Ok(())
    }

    async fn revoke_user_tokens(&self, user: &str) -> Result<u64> {
        sql("UPDATE tokens SET revoked = TRUE WHERE user_name = $1 AND revoked = FALSE")
            .bind(user)
            .execute(self.db())
            .await
    }

    async fn create_api_key(&self, key: &ApiKeyRecord) -> Result<()> {
        let mut tx = self.db().begin().await?;
        exists(&mut tx, "tenant", TENANT_EXISTS, key.tenant.as_str()).await?;
        sql(
            "INSERT INTO api_keys (hash, tenant, name, role, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&key.hash)
        .bind(&key.tenant)
        .bind(&key.name)
        .bind(key.role.as_str())
        .bind(&key.created_by)
        .bind(key.created_at)
        .execute(&mut tx)
        .await
        .map_err(conflict_if_unique("api key", &key.name))
        // On PostgreSQL the tenant may be deleted between the check and the insert.
        .map_err(not_found_if_foreign_key("tenant", key.tenant.as_str()))?;
        tx.commit().await
    }

    async fn get_api_key(&self, hash: &str) -> Result<Option<ApiKeyRecord>> {
        sql(format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE hash = $1"
        ))
        .bind(hash)
        .fetch_optional_as(self.db(), decode_api_key)
        .await
    }

    async fn list_api_keys(&self, tenant: &TenantId) -> Result<Vec<ApiKeyRecord>> {
        sql(format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE tenant = $1 ORDER BY name"
        ))
        .bind(tenant)
        .fetch_all_as(self.db(), decode_api_key)
        .await
    }

    async fn delete_api_key(&self, tenant: &TenantId, name: &str) -> Result<()> {
        let deleted = sql("DELETE FROM api_keys WHERE tenant = $1 AND name = $2")
            .bind(tenant)
            .bind(name)
            .execute(self.db())
            .await?;
        if deleted == 0 {
            return Err(not_found("api key", name));
        }
        Ok(())
    }
}
