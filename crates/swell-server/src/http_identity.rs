//! The identity routes of `/v1`: login and logout, tenants, users and roles, API keys,
//! instance owners, quotas and the audit log. Like `http.rs` they only translate; who
//! may call each is in [`crate::auth::rules::RULES`].

use crate::auth::Principal;
use crate::auth::middleware::{AuditNote, ClientAddr};
use crate::clock::rfc3339;
use crate::http::{ApiQuery, instance_view, parse_body};
use crate::service::{Service, ServiceError};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use swell_api as api;
use swell_core::TenantId;
use swell_store::{AuditRecord, Quota, Role, TenantRecord, UserRecord};

type ApiResult<T> = Result<T, ServiceError>;
type St = State<Arc<Service>>;

/// The identity routes (the caller adds the authorization layer).
pub fn routes() -> Router<Arc<Service>> {
    Router::new()
        .route("/v1/auth/tokens", post(login))
        .route("/v1/auth/tokens/current", axum::routing::delete(logout))
        .route("/v1/auth/whoami", get(whoami))
        .route("/v1/instances", get(list_visible_instances))
        .route(
            "/v1/groups/{name}/instances/{id}/owners",
            get(list_instance_owners),
        )
        .route(
            "/v1/groups/{name}/instances/{id}/owners/{user}",
            put(add_instance_owner).delete(remove_instance_owner),
        )
        .route("/v1/tenants", get(list_tenants).post(create_tenant))
        .route(
            "/v1/tenants/{tenant}",
            get(get_tenant).put(update_tenant).delete(delete_tenant),
        )
        .route("/v1/tenants/{tenant}/users", get(list_roles))
        .route(
            "/v1/tenants/{tenant}/users/{user}",
            put(grant).delete(revoke),
        )
        .route(
            "/v1/quota/default",
            get(get_default_quota).put(set_default_quota),
        )
        .route("/v1/users", get(list_users).post(create_user))
        .route("/v1/users/{user}", get(get_user).delete(delete_user))
        .route("/v1/users/{user}/password", put(set_password))
        .route("/v1/api-keys", get(list_api_keys).post(create_api_key))
        .route("/v1/api-keys/{key}", axum::routing::delete(delete_api_key))
        .route("/v1/audit", get(list_audit))
}

/// The client's address (the peer, or what a trusted proxy forwarded), when the
/// server was started with connect info.
pub struct Source(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for Source {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // The authorization middleware works the address out once (trusted proxies);
        // without it (never on the API's routes) the peer is all there is.
        if let Some(ClientAddr(addr)) = parts.extensions.get::<ClientAddr>() {
            return Ok(Source(addr.clone()));
        }
        Ok(Source(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip().to_string()),
        ))
    }
}

fn quota_view(q: &Quota) -> api::Quota {
    api::Quota {
        max_instances: q.max_instances,
        max_vcpus: q.max_vcpus,
        max_memory_mb: q.max_memory_mb,
        max_groups: q.max_groups,
    }
}

async fn tenant_view(s: &Service, t: &TenantRecord) -> ApiResult<api::Tenant> {
    Ok(api::Tenant {
        name: t.id.to_string(),
        display_name: t.display_name.clone(),
        description: t.description.clone(),
        quota: quota_view(&t.quota),
        effective_quota: quota_view(&s.quota(&t.id).await?),
        providers: t.grants.providers.clone(),
        listen: t.grants.listen.iter().map(|r| r.to_string()).collect(),
        images: t.grants.images.iter().map(|p| p.to_string()).collect(),
        groups: s.list_groups(&t.id).await?.len() as u32,
        deleting: t.deleting,
        created_at: rfc3339(t.created_at),
    })
}

async fn user_view(s: &Service, u: &UserRecord, tenant: &TenantId) -> ApiResult<api::User> {
    let (role, owned) = s.user_in_tenant(&u.name, tenant).await?;
    Ok(api::User {
        name: u.name.clone(),
        admin: u.is_admin,
        role: role.map(|r| r.to_string()),
        owned_instances: owned.iter().map(|i| i.to_string()).collect(),
        created_at: rfc3339(u.created_at),
        password_changed_at: rfc3339(u.password_changed_at),
    })
}

fn audit_view(a: &AuditRecord) -> api::AuditEntry {
    api::AuditEntry {
        id: a.id,
        at: rfc3339(a.entry.at),
        user: a.entry.user.clone(),
        tenant: a.entry.tenant.as_ref().map(|t| t.to_string()),
        action: a.entry.action.clone(),
        target: a.entry.target.clone(),
        source: a.entry.source.clone(),
        result: a.entry.result,
    }
}

fn key_view(k: &swell_store::ApiKeyRecord) -> api::ApiKey {
    api::ApiKey {
        name: k.name.clone(),
        role: k.role.to_string(),
        created_by: k.created_by.clone(),
        created_at: rfc3339(k.created_at),
    }
}

/// Logs in: a bearer token for one tenant. Every failure is the same 401.
#[utoipa::path(post, path = "/v1/auth/tokens", request_body = api::LoginRequest, security(),
    responses((status = 201, body = api::LoginResponse), (status = 400, body = api::Problem),
        (status = 401, body = api::Problem), (status = 429, body = api::Problem)))]
pub(crate) async fn login(State(s): St, Source(source): Source, body: Bytes) -> Response {
    let req: api::LoginRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let note = AuditNote {
        user: req.user.chars().take(64).collect(),
        tenant: TenantId::new(&req.tenant).ok(),
    };
    let mut response = match s
        .auth()
        .login(&req.user, &req.password, &req.tenant, source.as_deref())
        .await
    {
        Ok((token, expires_at)) => (
            StatusCode::CREATED,
            axum::Json(api::LoginResponse {
                token,
                expires_at: rfc3339(expires_at),
            }),
        )
            .into_response(),
        Err(e) => ServiceError::from(e).into_response(),
    };
    response.extensions_mut().insert(note);
    response
}

/// Revokes the token of this call.
#[utoipa::path(delete, path = "/v1/auth/tokens/current", responses((status = 204), (status = 401, body = api::Problem)))]
pub(crate) async fn logout(State(s): St, p: Principal) -> ApiResult<StatusCode> {
    s.logout(&p).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Who the caller is.
#[utoipa::path(get, path = "/v1/auth/whoami", responses((status = 200, body = api::Whoami)))]
pub(crate) async fn whoami(p: Principal) -> axum::Json<api::Whoami> {
    axum::Json(api::Whoami {
        principal: p.name(),
        tenant: p.tenant.to_string(),
        role: p.role.map(|r| r.to_string()),
        admin: p.admin,
        owned_instances: p.owned.iter().map(|i| i.to_string()).collect(),
    })
}

/// The tenant's live instances the caller may see (an instance owner: only theirs).
#[utoipa::path(get, path = "/v1/instances", responses((status = 200, body = api::InstanceList)))]
pub(crate) async fn list_visible_instances(
    State(s): St,
    p: Principal,
) -> ApiResult<axum::Json<api::InstanceList>> {
    let list = s.visible_instances(&p).await?;
    Ok(axum::Json(api::InstanceList {
        instances: list.iter().map(|i| instance_view(&s, i)).collect(),
    }))
}

/// The users bound to an instance.
#[utoipa::path(get, path = "/v1/groups/{name}/instances/{id}/owners", params(("name" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = api::InstanceOwnerList), (status = 404, body = api::Problem)))]
pub(crate) async fn list_instance_owners(
    State(s): St,
    p: Principal,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult<axum::Json<api::InstanceOwnerList>> {
    let owners = s.list_instance_owners(&p.tenant, &name, &id).await?;
    Ok(axum::Json(api::InstanceOwnerList {
        owners: owners
            .into_iter()
            .map(|o| api::InstanceOwner {
                instance: o.instance.to_string(),
                user: o.user,
            })
            .collect(),
    }))
}

/// Binds a user to an instance: they may see, pause and resume it (seed 3).
#[utoipa::path(put, path = "/v1/groups/{name}/instances/{id}/owners/{user}", params(("name" = String, Path), ("id" = String, Path), ("user" = String, Path)),
    responses((status = 200, body = api::InstanceOwner), (status = 404, body = api::Problem)))]
pub(crate) async fn add_instance_owner(
    State(s): St,
    p: Principal,
    Path((name, id, user)): Path<(String, String, String)>,
) -> ApiResult<axum::Json<api::InstanceOwner>> {
    let o = s.add_instance_owner(&p.tenant, &name, &id, &user).await?;
    Ok(axum::Json(api::InstanceOwner {
        instance: o.instance.to_string(),
        user: o.user,
    }))
}

/// Removes a user's binding to an instance.
#[utoipa::path(delete, path = "/v1/groups/{name}/instances/{id}/owners/{user}", params(("name" = String, Path), ("id" = String, Path), ("user" = String, Path)),
    responses((status = 204), (status = 404, body = api::Problem)))]
pub(crate) async fn remove_instance_owner(
    State(s): St,
    p: Principal,
    Path((name, id, user)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    s.remove_instance_owner(&p.tenant, &name, &id, &user)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every tenant.
#[utoipa::path(get, path = "/v1/tenants", responses((status = 200, body = api::TenantList)))]
pub(crate) async fn list_tenants(State(s): St) -> ApiResult<axum::Json<api::TenantList>> {
    let mut tenants = Vec::new();
    for t in s.list_tenants().await? {
        tenants.push(tenant_view(&s, &t).await?);
    }
    Ok(axum::Json(api::TenantList { tenants }))
}

/// Creates a tenant.
#[utoipa::path(post, path = "/v1/tenants", request_body = api::CreateTenant,
    responses((status = 201, body = api::Tenant), (status = 400, body = api::Problem), (status = 409, body = api::Problem)))]
pub(crate) async fn create_tenant(
    State(s): St,
    body: Bytes,
) -> ApiResult<(StatusCode, axum::Json<api::Tenant>)> {
    let req: api::CreateTenant = parse_body(&body)?;
    let t = s.create_tenant(req).await?;
    Ok((StatusCode::CREATED, axum::Json(tenant_view(&s, &t).await?)))
}

/// One tenant.
#[utoipa::path(get, path = "/v1/tenants/{tenant}", params(("tenant" = String, Path)),
    responses((status = 200, body = api::Tenant), (status = 404, body = api::Problem)))]
pub(crate) async fn get_tenant(
    State(s): St,
    Path(tenant): Path<String>,
) -> ApiResult<axum::Json<api::Tenant>> {
    let t = s.get_tenant(&tenant).await?;
    Ok(axum::Json(tenant_view(&s, &t).await?))
}

/// Updates a tenant's display fields and quota.
#[utoipa::path(put, path = "/v1/tenants/{tenant}", params(("tenant" = String, Path)), request_body = api::UpdateTenant,
    responses((status = 200, body = api::Tenant), (status = 400, body = api::Problem), (status = 404, body = api::Problem)))]
pub(crate) async fn update_tenant(
    State(s): St,
    Path(tenant): Path<String>,
    body: Bytes,
) -> ApiResult<axum::Json<api::Tenant>> {
    let req: api::UpdateTenant = parse_body(&body)?;
    let t = s.update_tenant(&tenant, req).await?;
    Ok(axum::Json(tenant_view(&s, &t).await?))
}

/// Query of a tenant delete.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ForceQuery {
    /// Scale the tenant's groups to zero and delete them first.
    #[serde(default)]
    pub(crate) force: bool,
}

/// Deletes a tenant; with groups only with `force=true` (202 until they are gone).
#[utoipa::path(delete, path = "/v1/tenants/{tenant}", params(("tenant" = String, Path), ForceQuery),
    responses((status = 204), (status = 202, body = api::Tenant), (status = 404, body = api::Problem), (status = 409, body = api::Problem)))]
pub(crate) async fn delete_tenant(
    State(s): St,
    Path(tenant): Path<String>,
    ApiQuery(q): ApiQuery<ForceQuery>,
) -> ApiResult<Response> {
    let (t, gone) = s.delete_tenant(&tenant, q.force).await?;
    if gone {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok((StatusCode::ACCEPTED, axum::Json(tenant_view(&s, &t).await?)).into_response())
}

/// The tenant's role bindings.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/users", params(("tenant" = String, Path)),
    responses((status = 200, body = api::RoleBindingList), (status = 404, body = api::Problem)))]
pub(crate) async fn list_roles(
    State(s): St,
    Path(tenant): Path<String>,
) -> ApiResult<axum::Json<api::RoleBindingList>> {
    let bindings = s
        .list_roles(&tenant)
        .await?
        .into_iter()
        .map(|b| api::RoleBinding {
            user: b.user,
            tenant: b.tenant.to_string(),
            role: b.role.to_string(),
        })
        .collect();
    Ok(axum::Json(api::RoleBindingList { bindings }))
}

/// Gives a user a role in the tenant (replacing their role there).
#[utoipa::path(put, path = "/v1/tenants/{tenant}/users/{user}", params(("tenant" = String, Path), ("user" = String, Path)), request_body = api::Grant,
    responses((status = 200, body = api::RoleBinding), (status = 400, body = api::Problem), (status = 404, body = api::Problem)))]
pub(crate) async fn grant(
    State(s): St,
    p: Principal,
    Path((tenant, user)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<axum::Json<api::RoleBinding>> {
    let req: api::Grant = parse_body(&body)?;
    if req.role == Role::Owner.as_str() && !p.at_least(Role::Owner) {
        return Err(ServiceError::Forbidden(
            "only an owner may make owners".into(),
        ));
    }
    let b = s.grant(&tenant, &user, &req.role).await?;
    Ok(axum::Json(api::RoleBinding {
        user: b.user,
        tenant: b.tenant.to_string(),
        role: b.role.to_string(),
    }))
}

/// Takes a user's role in the tenant away.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/users/{user}", params(("tenant" = String, Path), ("user" = String, Path)),
    responses((status = 204), (status = 404, body = api::Problem)))]
pub(crate) async fn revoke(
    State(s): St,
    Path((tenant, user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    s.revoke(&tenant, &user).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The service-wide default quota.
#[utoipa::path(get, path = "/v1/quota/default", responses((status = 200, body = api::Quota)))]
pub(crate) async fn get_default_quota(State(s): St) -> ApiResult<axum::Json<api::Quota>> {
    Ok(axum::Json(quota_view(&s.default_quota().await?)))
}

/// Sets the service-wide default quota.
#[utoipa::path(put, path = "/v1/quota/default", request_body = api::Quota,
    responses((status = 200, body = api::Quota), (status = 400, body = api::Problem)))]
pub(crate) async fn set_default_quota(
    State(s): St,
    body: Bytes,
) -> ApiResult<axum::Json<api::Quota>> {
    let q: api::Quota = parse_body(&body)?;
    Ok(axum::Json(quota_view(&s.set_default_quota(&q).await?)))
}

/// Users of the caller's tenant (an admin: every user).
#[utoipa::path(get, path = "/v1/users", responses((status = 200, body = api::UserList)))]
pub(crate) async fn list_users(State(s): St, p: Principal) -> ApiResult<axum::Json<api::UserList>> {
    let mut users = Vec::new();
    for u in s.list_users(&p).await? {
        users.push(user_view(&s, &u, &p.tenant).await?);
    }
    Ok(axum::Json(api::UserList { users }))
}

/// Creates a user.
#[utoipa::path(post, path = "/v1/users", request_body = api::CreateUser,
    responses((status = 201, body = api::User), (status = 400, body = api::Problem), (status = 409, body = api::Problem)))]
pub(crate) async fn create_user(
    State(s): St,
    p: Principal,
    body: Bytes,
) -> ApiResult<(StatusCode, axum::Json<api::User>)> {
    let req: api::CreateUser = parse_body(&body)?;
    let u = s.create_user(&p, req).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(user_view(&s, &u, &p.tenant).await?),
    ))
}

/// One user.
#[utoipa::path(get, path = "/v1/users/{user}", params(("user" = String, Path)),
    responses((status = 200, body = api::User), (status = 404, body = api::Problem)))]
pub(crate) async fn get_user(
    State(s): St,
    p: Principal,
    Path(user): Path<String>,
) -> ApiResult<axum::Json<api::User>> {
    let u = s.get_user(&p, &user).await?;
    Ok(axum::Json(user_view(&s, &u, &p.tenant).await?))
}

/// Deletes a user with their roles and tokens.
#[utoipa::path(delete, path = "/v1/users/{user}", params(("user" = String, Path)),
    responses((status = 204), (status = 404, body = api::Problem), (status = 409, body = api::Problem)))]
pub(crate) async fn delete_user(State(s): St, Path(user): Path<String>) -> ApiResult<StatusCode> {
    s.delete_user(&user).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Changes a password; every token of the user is revoked.
#[utoipa::path(put, path = "/v1/users/{user}/password", params(("user" = String, Path)), request_body = api::SetPassword,
    responses((status = 204), (status = 400, body = api::Problem), (status = 404, body = api::Problem),
        (status = 429, body = api::Problem), (status = 503, body = api::Problem)))]
pub(crate) async fn set_password(
    State(s): St,
    p: Principal,
    Source(source): Source,
    Path(user): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let req: api::SetPassword = parse_body(&body)?;
    let current = if p.user.as_deref() == Some(user.as_str()) {
        let current = req.current_password.as_deref().ok_or_else(|| {
            ServiceError::from(swell_core::ValidationError::new(
                "current_password",
                "required when you change your own password",
            ))
        })?;
        Some(current)
    } else {
        None
    };
    s.set_password(&user, &req.password, current, source.as_deref())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The tenant's API keys (never the keys themselves).
#[utoipa::path(get, path = "/v1/api-keys", responses((status = 200, body = api::ApiKeyList)))]
pub(crate) async fn list_api_keys(
    State(s): St,
    p: Principal,
) -> ApiResult<axum::Json<api::ApiKeyList>> {
    let keys = s.list_api_keys(&p.tenant).await?;
    Ok(axum::Json(api::ApiKeyList {
        keys: keys.iter().map(key_view).collect(),
    }))
}

/// Creates an API key in the caller's tenant; the key is shown only in this answer.
#[utoipa::path(post, path = "/v1/api-keys", request_body = api::CreateApiKey,
    responses((status = 201, body = api::CreatedApiKey), (status = 400, body = api::Problem), (status = 409, body = api::Problem)))]
pub(crate) async fn create_api_key(
    State(s): St,
    p: Principal,
    body: Bytes,
) -> ApiResult<(StatusCode, axum::Json<api::CreatedApiKey>)> {
    let req: api::CreateApiKey = parse_body(&body)?;
    let (key, record) = s.create_api_key(&p, &req).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(api::CreatedApiKey {
            key,
            api_key: key_view(&record),
        }),
    ))
}

/// Deletes an API key.
#[utoipa::path(delete, path = "/v1/api-keys/{key}", params(("key" = String, Path)),
    responses((status = 204), (status = 404, body = api::Problem)))]
pub(crate) async fn delete_api_key(
    State(s): St,
    p: Principal,
    Path(key): Path<String>,
) -> ApiResult<StatusCode> {
    s.delete_api_key(&p.tenant, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query of the audit log.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// `json` (default) or `csv`.
    pub(crate) format: Option<String>,
    /// Every tenant's records (admins only).
    #[serde(default)]
    pub(crate) all: bool,
    /// At most this many (the newest); default 1000, at most 10000.
    pub(crate) limit: Option<u32>,
}

impl AuditQuery {
    /// Whether the answer is CSV (`format=csv`) rather than JSON (none, or `json`).
    pub(crate) fn csv(&self) -> Result<bool, swell_core::ValidationError> {
        match self.format.as_deref() {
            None | Some("json") => Ok(false),
            Some("csv") => Ok(true),
            Some(other) => Err(swell_core::ValidationError::new(
                "format",
                format!("unknown format `{other}`: json or csv"),
            )),
        }
    }
}

/// One CSV cell: quoted when needed, and neutralised when a spreadsheet would read it
/// as a formula (OWASP's rule: a cell starting with `=`, `+`, `-`, `@`, tab or CR gets a
/// leading `'`), since user names, paths and tenant names are the caller's text.
pub fn csv_field(v: &str) -> String {
    let v = if v.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{v}")
    } else {
        v.to_string()
    };
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v
    }
}

/// The tenant's audit log, oldest first, as JSON or CSV.
#[utoipa::path(get, path = "/v1/audit", params(AuditQuery),
    responses((status = 200, body = api::AuditList, description = "JSON; `text/csv` with format=csv"), (status = 400, body = api::Problem)))]
pub(crate) async fn list_audit(
    State(s): St,
    p: Principal,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Response> {
    let csv = q.csv()?;
    let entries: Vec<_> = s
        .list_audit(&p, q.all, q.limit)
        .await?
        .iter()
        .map(audit_view)
        .collect();
    if !csv {
        return Ok(axum::Json(api::AuditList { entries }).into_response());
    }
    let mut out = String::from("id,at,user,tenant,action,target,source,result\n");
    for e in &entries {
        let row = [
            e.id.to_string(),
            e.at.clone(),
            e.user.clone().unwrap_or_default(),
            e.tenant.clone().unwrap_or_default(),
            e.action.clone(),
            e.target.clone(),
            e.source.clone().unwrap_or_default(),
            e.result.to_string(),
        ];
        let row: Vec<String> = row.iter().map(|f| csv_field(f)).collect();
        out.push_str(&row.join(","));
        out.push('\n');
    }
    Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], out).into_response())
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_cells_are_quoted_and_never_formulas() {
        let check = |cell: &str, want: &str| assert_eq!(csv_field(cell), want, "{cell:?}");
        check("ann", "ann");
        check("/v1/groups", "/v1/groups");
        check("a,b", "\"a,b\"");
        check("say \"hi\"", "\"say \"\"hi\"\"\"");
        check(
            "=HYPERLINK(\"http://evil\")",
            "\"'=HYPERLINK(\"\"http://evil\"\")\"",
        );
        check("=1+1", "'=1+1");
        check("+1", "'+1");
        check("-1", "'-1");
        check("@SUM(A1)", "'@SUM(A1)");
        check("\tx", "'\tx");
        check("\rx", "\"'\rx\"");
        check("a=b", "a=b");
        check("", "");
    }
}
