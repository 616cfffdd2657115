//! The service layer's identity calls: tenants, users, role bindings, API keys,
//! instance owners, quotas, the audit log and sealed credentials. Like the rest of the
//! service they validate input whole before storing anything and scope every call by
//! the caller's tenant (the [`Principal`]'s, never the body's).

use crate::auth::{KEY_PREFIX, Principal, check_password, hash_token, new_secret};
use crate::service::{Result, Service, ServiceError};
use std::time::Duration;
use swell_api as api;
use swell_core::grants::{self, Grants, ImagePattern, ListenRange};
use swell_core::{GroupName, InstanceId, TenantId, ValidationError};
use swell_store::{
    ApiKeyRecord, AuditRecord, InstanceOwner, InstanceRecord, Quota, Role, RoleBinding, StoreError,
    TenantRecord, UserRecord,
};

/// Longest display name of a tenant.
pub const MAX_DISPLAY_NAME: usize = 200;
/// Longest description of a tenant.
pub const MAX_DESCRIPTION: usize = 2000;
/// Longest user name.
pub const MAX_USER_NAME: usize = 64;

/// Checks a user name (field `field`): 1 to 64 ASCII letters, digits, '.', '_', '-', '@'.
pub fn check_user_name(field: &str, name: &str) -> Result<(), ValidationError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_USER_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            format!(
                "`{name}` must be 1 to {MAX_USER_NAME} ASCII letters, digits, '.', '_', '-' or '@'"
            ),
        ))
    }
}

fn check_len(field: &str, value: &str, max: usize) -> Result<(), ValidationError> {
    if value.chars().count() > max {
        return Err(ValidationError::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    Ok(())
}

/// Parses a role (field `field`).
pub fn parse_role(field: &str, role: &str) -> Result<Role, ValidationError> {
    role.parse::<Role>()
        .map_err(|rule| ValidationError::new(field, rule))
}

fn tenant_id(field: &str, id: &str) -> Result<TenantId, ValidationError> {
    TenantId::new(id).map_err(|e| ValidationError::new(field, e.rule))
}

fn quota(q: &api::Quota) -> Quota {
    Quota {
        max_instances: q.max_instances,
        max_vcpus: q.max_vcpus,
        max_memory_mb: q.max_memory_mb,
        max_groups: q.max_groups,
    }
}

/// The limits a new tenant gets where neither its request nor the service-wide default
/// quota sets one: a tenant nobody thought about is bounded, not unlimited.
pub const NEW_TENANT_QUOTA: Quota = Quota {
    max_instances: Some(20),
    max_vcpus: None,
    max_memory_mb: None,
    max_groups: Some(10),
};

/// A new tenant's own quota: each limit as requested; else none (the service-wide
/// default applies) when the default sets it; else [`NEW_TENANT_QUOTA`]'s.
fn new_tenant_quota(requested: Quota, default: &Quota) -> Quota {
    fn pick<T>(requested: Option<T>, default: Option<T>, builtin: Option<T>) -> Option<T> {
        requested.or(if default.is_none() { builtin } else { None })
    }
    Quota {
        max_instances: pick(
            requested.max_instances,
            default.max_instances,
            NEW_TENANT_QUOTA.max_instances,
        ),
        max_vcpus: pick(
            requested.max_vcpus,
            default.max_vcpus,
            NEW_TENANT_QUOTA.max_vcpus,
        ),
        max_memory_mb: pick(
            requested.max_memory_mb,
            default.max_memory_mb,
            NEW_TENANT_QUOTA.max_memory_mb,
        ),
        max_groups: pick(
            requested.max_groups,
            default.max_groups,
            NEW_TENANT_QUOTA.max_groups,
        ),
    }
}

/// The tenant's grants with the lists given replacing `base`'s, each entry checked
/// (an error names `providers[i]`, `listen[i]` or `images[i]`).
pub fn grants_from(
    base: Grants,
    providers: Option<&[String]>,
    listen: Option<&[String]>,
    images: Option<&[String]>,
) -> Result<Grants, ValidationError> {
    let mut g = base;
    if let Some(p) = providers {
        grants::check_providers(p)?;
        g.providers = p.to_vec();
    }
    if let Some(l) = listen {
        g.listen = grants::parse_list::<ListenRange>("listen", l)?;
    }
    if let Some(i) = images {
        g.images = grants::parse_list::<ImagePattern>("images", i)?;
    }
    Ok(g)
}

fn not_found(kind: &'static str, name: &str) -> ServiceError {
    ServiceError::NotFound {
        kind,
        name: name.to_string(),
    }
}

/// Held across the "is another admin or tenant left?" check and the delete, so that
/// two concurrent deletes cannot both see the other's victim as the one remaining.
/// (Process-wide: one server per store; it only serialises these rare admin calls.)
static LAST_ONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Service {
    fn caller_user<'p>(&self, p: &'p Principal) -> Result<&'p str> {
        p.user
            .as_deref()
            .ok_or_else(|| ServiceError::Forbidden("an API key cannot do this".into()))
    }

    // ---- tenants ----

    /// Every tenant.
    pub async fn list_tenants(&self) -> Result<Vec<TenantRecord>> {
        Ok(self.store.list_tenants().await?)
    }

    /// One tenant.
    pub async fn get_tenant(&self, id: &str) -> Result<TenantRecord> {
        let id = tenant_id("tenant", id)?;
        self.store
            .get_tenant(&id)
            .await?
            .ok_or_else(|| not_found("tenant", id.as_str()))
    }

    /// The tenant's effective quota (its own limits, else the default).
    pub async fn quota(&self, tenant: &TenantId) -> Result<Quota> {
        Ok(self.store.get_quota(tenant).await?)
    }

    /// Creates a tenant.
    pub async fn create_tenant(&self, req: api::CreateTenant) -> Result<TenantRecord> {
        let id = tenant_id("name", &req.name)?;
        let display_name = req.display_name.unwrap_or_default();
        let description = req.description.unwrap_or_default();
        check_len("display_name", &display_name, MAX_DISPLAY_NAME)?;
        check_len("description", &description, MAX_DESCRIPTION)?;
        let grants = grants_from(
            Grants::default(),
            req.providers.as_deref(),
            req.listen.as_deref(),
            req.images.as_deref(),
        )?;
        self.check_grantable(&grants.providers)?;
        let default = self.store.get_default_quota().await?;
        let quota = new_tenant_quota(req.quota.as_ref().map(quota).unwrap_or_default(), &default);
        let now = self.now();
        Ok(self
            .store
            .create_tenant(&TenantRecord {
                id,
                display_name,
                description,
                quota,
                grants,
                deleting: false,
                created_at: now,
                updated_at: now,
            })
            .await?)
    }

    /// Updates a tenant's display fields, quota and grants (fields not given stay; a
    /// list given replaces the stored one whole). Groups already stored are not
    /// re-checked: a narrower grant applies to their next create or update.
    pub async fn update_tenant(&self, id: &str, req: api::UpdateTenant) -> Result<TenantRecord> {
        if let Some(d) = &req.display_name {
            check_len("display_name", d, MAX_DISPLAY_NAME)?;
        }
        if let Some(d) = &req.description {
            check_len("description", d, MAX_DESCRIPTION)?;
        }
        let mut t = self.get_tenant(id).await?;
        t.grants = grants_from(
            t.grants,
            req.providers.as_deref(),
            req.listen.as_deref(),
            req.images.as_deref(),
        )?;
        if req.providers.is_some() {
            self.check_grantable(&t.grants.providers)?;
        }
        if let Some(d) = req.display_name {
            t.display_name = d;
        }
        if let Some(d) = req.description {
            t.description = d;
        }
        if let Some(q) = &req.quota {
            t.quota = quota(q);
        }
        t.updated_at = self.now();
        Ok(self.store.update_tenant(&t).await?)
    }

    /// Deletes a tenant. With groups it is refused unless `force`, which marks the
    /// tenant deleting (its credentials stop working), deletes every group (scaling
    /// each to zero, draining first) and removes the tenant once the last group is gone.
    /// Returns the tenant and whether it is already gone.
    ///
    /// The last live tenant cannot be deleted (409): every login, an admin's too, is to
    /// a tenant, so without one no admin could log in again.
    pub async fn delete_tenant(&self, id: &str, force: bool) -> Result<(TenantRecord, bool)> {
        let _last_one = LAST_ONE.lock().await;
        let mut t = self.get_tenant(id).await?;
        let others = self
            .store
            .list_tenants()
            .await?
            .into_iter()
            .filter(|o| o.id != t.id && !o.deleting)
            .count();
        if others == 0 && !t.deleting {
            return Err(ServiceError::State(format!(
                "tenant `{id}` is the last one: every login, an admin's too, is to a tenant, so deleting it would lock every admin out; create another tenant first"
            )));
        }
        let groups = self.store.list_groups(&t.id).await?;
        if groups.is_empty() {
            self.store.delete_tenant(&t.id).await?;
            // Its private provider definitions went with it (the store's cascade).
            self.controller().registry().forget_tenant(&t.id);
            return Ok((t, true));
        }
        if !force {
            return Err(ServiceError::State(format!(
                "tenant `{id}` has {} group(s); delete them first, or use ?force=true (swell tenant delete --force) to scale them to zero and delete them",
                groups.len()
            )));
        }
        t.deleting = true;
        t.updated_at = self.now();
        let t = self.store.update_tenant(&t).await?;
        for g in groups.iter().filter(|g| !g.deleting) {
            self.delete_group(&t.id, &g.spec.name).await?;
        }
        let store = self.store.clone();
        let registry = self.controller().registry().clone();
        let tenant = t.id.clone();
        tokio::spawn(async move {
            for _ in 0..18_000 {
                match store.delete_tenant(&tenant).await {
                    Ok(()) | Err(StoreError::NotFound { .. }) => {
                        registry.forget_tenant(&tenant);
                        return;
                    }
                    Err(StoreError::Conflict { .. }) => {}
                    Err(e) => tracing::warn!(%tenant, "deleting the tenant: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            tracing::error!(%tenant, "its groups were not gone after an hour; tenant kept");
        });
        Ok((t, false))
    }

    /// The service-wide default quota.
    pub async fn default_quota(&self) -> Result<Quota> {
        Ok(self.store.get_default_quota().await?)
    }

    /// Sets the service-wide default quota.
    pub async fn set_default_quota(&self, q: &api::Quota) -> Result<Quota> {
        let q = quota(q);
        self.store.set_default_quota(&q).await?;
        Ok(q)
    }

    // ---- users and roles ----

    /// Users visible to the caller: an admin sees every user; an owner those with a role
    /// or an instance in the tenant.
    pub async fn list_users(&self, p: &Principal) -> Result<Vec<UserRecord>> {
        let users = self.store.list_users().await?;
        if p.admin {
            return Ok(users);
        }
        let roles = self.store.list_roles(&p.tenant).await?;
        let owners = self.store.list_instance_owners(&p.tenant, None).await?;
        Ok(users
            .into_iter()
            .filter(|u| {
                roles.iter().any(|r| r.user == u.name) || owners.iter().any(|o| o.user == u.name)
            })
            .collect())
    }

    /// One user, if visible to the caller (itself, an admin, or an owner of a tenant the
    /// user is in); else `NotFound`.
    pub async fn get_user(&self, p: &Principal, name: &str) -> Result<UserRecord> {
        let visible = p.admin
            || p.user.as_deref() == Some(name)
            || self.list_users(p).await?.iter().any(|u| u.name == name);
        if !visible {
            return Err(not_found("user", name));
        }
        self.store
            .get_user(name)
            .await?
            .ok_or_else(|| not_found("user", name))
    }

    /// The user's role and owned instances in `tenant`.
    pub async fn user_in_tenant(
        &self,
        user: &str,
        tenant: &TenantId,
    ) -> Result<(Option<Role>, Vec<InstanceId>)> {
        let role = self.store.get_role(user, tenant).await?;
        let owned = self
            .store
            .list_instance_owners(tenant, Some(user))
            .await?
            .into_iter()
            .map(|o| o.instance)
            .collect();
        Ok((role, owned))
    }

    /// Creates a user (only an admin may create an admin).
    pub async fn create_user(&self, p: &Principal, req: api::CreateUser) -> Result<UserRecord> {
        check_user_name("name", &req.name)?;
        check_password(&req.password)?;
        if req.admin && !p.admin {
            return Err(ServiceError::Forbidden(
                "only an admin may create an admin".into(),
            ));
        }
        if self.store.get_user(&req.name).await?.is_some() {
            return Err(ServiceError::Conflict {
                kind: "user",
                name: req.name,
            });
        }
        let hash = self.auth().hash(&req.password).await?;
        let now = self.now();
        let user = UserRecord {
            name: req.name,
            password_hash: hash,
            is_admin: req.admin,
            created_at: now,
            password_changed_at: now,
        };
        self.store.create_user(&user).await?;
        Ok(user)
    }

    /// Deletes a user (with its roles, tokens and the API keys it created). The last
    /// admin cannot be deleted.
    pub async fn delete_user(&self, name: &str) -> Result<()> {
        let _last_one = LAST_ONE.lock().await;
        let users = self.store.list_users().await?;
        let target = users
            .iter()
            .find(|u| u.name == name)
            .ok_or_else(|| not_found("user", name))?;
        if target.is_admin && users.iter().filter(|u| u.is_admin).count() == 1 {
            return Err(ServiceError::State(
                "the last admin cannot be deleted: no one could administer the service".into(),
            ));
        }
        self.store.delete_user(name).await?;
        // Its keys die with it (authentication refuses them anyway; this keeps a user
        // re-created under the name from finding them in its tenants' lists).
        for t in self.store.list_tenants().await? {
            for k in self.store.list_api_keys(&t.id).await? {
                if k.created_by == name {
                    match self.store.delete_api_key(&t.id, &k.name).await {
                        Ok(()) | Err(StoreError::NotFound { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Ok(())
    }

    /// Changes a user's password; every token of the user is revoked.
    /// `current` is the user's current password, checked when given (users changing
    /// their own password must give it).
    /// A change that checks `current` is rate-limited like a login of `name` from
    /// `source` (429), so a stolen token cannot guess the password through it.
    pub async fn set_password(
        &self,
        name: &str,
        password: &str,
        current: Option<&str>,
        source: Option<&str>,
    ) -> Result<()> {
        check_password(password)?;
        let Some(user) = self.store.get_user(name).await? else {
            return Err(not_found("user", name));
        };
        if current.is_some() {
            self.auth().check_password_attempt(name, source)?;
        }
        if let Some(current) = current
            && !self.auth().verify(current, &user.password_hash).await?
        {
            return Err(ValidationError::new(
                "current_password",
                "does not match your current password",
            )
            .into());
        }
        let hash = self.auth().hash(password).await?;
        Ok(self.store.set_password(name, &hash, self.now()).await?)
    }

    /// The tenant's role bindings.
    pub async fn list_roles(&self, tenant: &str) -> Result<Vec<RoleBinding>> {
        let t = self.get_tenant(tenant).await?;
        Ok(self.store.list_roles(&t.id).await?)
    }

    /// Gives `user` `role` in `tenant`.
    pub async fn grant(&self, tenant: &str, user: &str, role: &str) -> Result<RoleBinding> {
        let role = parse_role("role", role)?;
        check_user_name("user", user)?;
        let t = self.get_tenant(tenant).await?;
        self.store.set_role(user, &t.id, role, self.now()).await?;
        Ok(RoleBinding {
            user: user.to_string(),
            tenant: t.id,
            role,
        })
    }

    /// Takes `user`'s role in `tenant` away.
    pub async fn revoke(&self, tenant: &str, user: &str) -> Result<()> {
        let t = self.get_tenant(tenant).await?;
        Ok(self.store.remove_role(user, &t.id).await?)
    }

    // ---- tokens and API keys ----

    /// Revokes the caller's token (`DELETE /v1/auth/tokens/current`).
    pub async fn logout(&self, p: &Principal) -> Result<()> {
        let hash = p.token_hash.as_deref().ok_or_else(|| {
            ValidationError::new("authorization", "an API key is deleted, not logged out")
        })?;
        Ok(self.store.revoke_token(hash).await?)
    }

    /// The tenant's API keys.
    pub async fn list_api_keys(&self, tenant: &TenantId) -> Result<Vec<ApiKeyRecord>> {
        Ok(self.store.list_api_keys(tenant).await?)
    }

    /// Creates an API key in the caller's tenant; returns the key (shown once).
    pub async fn create_api_key(
        &self,
        p: &Principal,
        req: &api::CreateApiKey,
    ) -> Result<(String, ApiKeyRecord)> {
        GroupName::new(&req.name)?;
        let role = parse_role("role", &req.role)?;
        if !p.at_least(role) {
            return Err(ServiceError::Forbidden(format!(
                "a key cannot have more rights ({role}) than its creator"
            )));
        }
        let key = new_secret(KEY_PREFIX);
        let record = ApiKeyRecord {
            hash: hash_token(&key),
            tenant: p.tenant.clone(),
            name: req.name.clone(),
            role,
            created_by: p.name(),
            created_at: self.now(),
        };
        self.store.create_api_key(&record).await?;
        Ok((key, record))
    }

    /// Deletes an API key of the caller's tenant.
    pub async fn delete_api_key(&self, tenant: &TenantId, name: &str) -> Result<()> {
        Ok(self.store.delete_api_key(tenant, name).await?)
    }

    // ---- instance owners ----

    async fn instance_in_group(
        &self,
        tenant: &TenantId,
        group: &str,
        id: &str,
    ) -> Result<InstanceRecord> {
        self.store
            .get_instance(tenant, &InstanceId(id.to_string()))
            .await?
            .filter(|i| i.group == group)
            .ok_or_else(|| not_found("instance", id))
    }

    /// The users bound to an instance.
    pub async fn list_instance_owners(
        &self,
        tenant: &TenantId,
        group: &str,
        id: &str,
    ) -> Result<Vec<InstanceOwner>> {
        self.instance_in_group(tenant, group, id).await?;
        Ok(self
            .store
            .list_instance_owners(tenant, None)
            .await?
            .into_iter()
            .filter(|o| o.instance.as_str() == id)
            .collect())
    }

    /// Binds a user to an instance of the tenant (seed 3).
    pub async fn add_instance_owner(
        &self,
        tenant: &TenantId,
        group: &str,
        id: &str,
        user: &str,
    ) -> Result<InstanceOwner> {
        check_user_name("user", user)?;
        let inst = self.instance_in_group(tenant, group, id).await?;
        let owner = InstanceOwner {
            tenant: tenant.clone(),
            instance: inst.id,
            user: user.to_string(),
        };
        self.store.add_instance_owner(&owner, self.now()).await?;
        Ok(owner)
    }

    /// Removes a user's binding to an instance.
    pub async fn remove_instance_owner(
        &self,
        tenant: &TenantId,
        group: &str,
        id: &str,
        user: &str,
    ) -> Result<()> {
        let inst = self.instance_in_group(tenant, group, id).await?;
        Ok(self
            .store
            .remove_instance_owner(&InstanceOwner {
                tenant: tenant.clone(),
                instance: inst.id,
                user: user.to_string(),
            })
            .await?)
    }

    /// The tenant's live instances the caller may see: all of them for a viewer or
    /// better, only their own for an instance owner.
    pub async fn visible_instances(&self, p: &Principal) -> Result<Vec<InstanceRecord>> {
        let mut out = Vec::new();
        for g in self.store.list_groups(&p.tenant).await? {
            for i in self
                .store
                .list_instances(&p.tenant, &g.spec.name, false)
                .await?
            {
                if p.at_least(Role::Viewer) || p.owns(i.id.as_str()) {
                    out.push(i);
                }
            }
        }
        Ok(out)
    }

    // ---- audit and secrets ----

    /// Audit records of the caller's tenant (of every tenant for an admin asking `all`).
    pub async fn list_audit(
        &self,
        p: &Principal,
        all: bool,
        limit: Option<u32>,
    ) -> Result<Vec<AuditRecord>> {
        if all && !p.admin {
            return Err(ServiceError::Forbidden(
                "only an admin may list every tenant's audit log".into(),
            ));
        }
        let limit = crate::service::check_limit(limit)?;
        let tenant = (!all).then_some(&p.tenant);
        Ok(self.store.list_audit(tenant, limit).await?)
    }

    /// Seals and stores a provider credential of the tenant (never returned by the API),
    /// bound to the tenant and the name: moved to another row, it does not open.
    pub async fn put_provider_credential(
        &self,
        tenant: &TenantId,
        name: &str,
        plaintext: &[u8],
    ) -> Result<()> {
        let sealed = self.secret_key()?.seal(tenant.as_str(), name, plaintext)?;
        Ok(self
            .store
            .put_credential(tenant, name, &sealed, self.now())
            .await?)
    }

    /// Opens a stored provider credential of the tenant (for providers only).
    pub async fn provider_credential(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> Result<Option<Vec<u8>>> {
        match self.store.get_credential(tenant, name).await? {
            Some(sealed) => Ok(Some(self.secret_key()?.open(
                tenant.as_str(),
                name,
                &sealed,
            )?)),
            None => Ok(None),
        }
    }

    /// Creates the bootstrap admin on an empty store (see [`crate::auth::Auth::bootstrap`]),
    /// and the `default` tenant with the bootstrap grants ([`Grants::bootstrap`]: the
    /// `process` provider and loopback ports 1024 and up) when it does not exist yet.
    pub async fn bootstrap(&self, password: Option<&str>) -> Result<Option<String>> {
        if let Some(p) = password {
            check_password(p).map_err(|e| ValidationError::new("admin password", e.rule))?;
        }
        let tenant = TenantId::default_tenant();
        if self.store.list_users().await?.is_empty()
            && self.store.get_tenant(&tenant).await?.is_none()
        {
            let now = self.now();
            let created = self
                .store
                .create_tenant(&TenantRecord {
                    id: tenant,
                    display_name: String::new(),
                    description: String::new(),
                    quota: Quota::default(),
                    grants: Grants::bootstrap(),
                    deleting: false,
                    created_at: now,
                    updated_at: now,
                })
                .await;
            match created {
                // Another start created it meanwhile: it keeps what it has.
                Ok(_) | Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(self.auth().bootstrap(password).await?)
    }

    /// The caller's name check for user-only calls.
    pub fn require_user<'p>(&self, p: &'p Principal) -> Result<&'p str> {
        self.caller_user(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_tenant_is_bounded_unless_told_otherwise() {
        let q = |i, g| Quota {
            max_instances: i,
            max_groups: g,
            ..Quota::default()
        };
        for (requested, default, want) in [
            // Nothing anywhere: the built-in limits.
            (q(None, None), q(None, None), q(Some(20), Some(10))),
            // Asked for: kept.
            (q(Some(3), Some(1)), q(None, None), q(Some(3), Some(1))),
            // The service-wide default sets one: it applies (the tenant's own stays unset).
            (q(None, None), q(Some(50), None), q(None, Some(10))),
            (q(None, None), q(Some(50), Some(5)), q(None, None)),
        ] {
            assert_eq!(
                new_tenant_quota(requested, &default),
                want,
                "{requested:?} {default:?}"
            );
        }
    }

    #[test]
    fn grants_replace_only_the_lists_given() {
        let base = Grants::bootstrap();
        let g = grants_from(base.clone(), None, None, Some(&["acme/*".into()])).unwrap();
        assert_eq!(g.providers, base.providers);
        assert_eq!(g.listen, base.listen);
        assert_eq!(g.images.len(), 1);
        let g = grants_from(base, Some(&[]), Some(&[]), None).unwrap();
        assert_eq!(g, Grants::default());
        let e = grants_from(
            Grants::default(),
            None,
            Some(&["127.0.0.1:9-8".into()]),
            None,
        )
        .unwrap_err();
        assert_eq!(e.field, "listen[0]");
    }
}
