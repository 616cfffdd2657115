//! The authorization middleware: resolves the principal from `Authorization: Bearer …`,
//! checks the route's rule in [`RULES`](super::rules::RULES), hands the principal to the
//! handler, and records every mutating call in the audit log.

use super::rules::{Permission, methods, rule};
use super::{AuthError, Principal};
use crate::problem::problem;
use crate::service::Service;
use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use swell_core::TenantId;
use swell_store::NewAudit;

/// What a handler tells the audit log about a call it made without a principal (a
/// login): who tried, and in which tenant.
#[derive(Debug, Clone)]
pub struct AuditNote {
    /// The user name given.
    pub user: String,
    /// The tenant given, when it is a valid tenant id.
    pub tenant: Option<TenantId>,
}

/// The client's address as the middleware worked it out (the peer, or what a trusted
/// proxy forwarded): handlers read it from the request's extensions.
#[derive(Debug, Clone)]
pub struct ClientAddr(pub Option<String>);

/// What the rule says about one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// 401: no or a bad credential.
    Unauthorized,
    /// 403: the caller's role in its own tenant is not enough.
    Forbidden,
    /// 404: the object is in another tenant (or not visible at all).
    NotFound,
}

/// Applies `permission` to a caller and the route's path parameters. Pure.
pub fn decide(
    permission: Permission,
    principal: Option<&Principal>,
    params: &HashMap<String, String>,
) -> Decision {
    use swell_store::Role;
    if permission == Permission::Public {
        return Decision::Allow;
    }
    let Some(p) = principal else {
        return Decision::Unauthorized;
    };
    let allow = |ok: bool| {
        if ok {
            Decision::Allow
        } else {
            Decision::Forbidden
        }
    };
    let param = |k: &str| params.get(k).map(String::as_str).unwrap_or_default();
    match permission {
        Permission::Public | Permission::Authenticated => Decision::Allow,
        Permission::Admin => allow(p.admin),
        Permission::Role(r) => allow(p.at_least(r)),
        Permission::OwnInstances => allow(p.at_least(Role::Viewer) || !p.owned.is_empty()),
        Permission::OwnInstance => allow(p.at_least(Role::Member) || p.owns(param("id"))),
        Permission::SelfOrAdmin => allow(p.admin || p.user.as_deref() == Some(param("user"))),
        Permission::SelfOrOwner => {
            allow(p.admin || p.user.as_deref() == Some(param("user")) || p.at_least(Role::Owner))
        }
        Permission::TenantRole(r) => {
            if p.admin {
                Decision::Allow
            } else if param("tenant") != p.tenant.as_str() {
                Decision::NotFound
            } else {
                allow(p.at_least(r))
            }
        }
        Permission::TenantAdmin => {
            if p.admin {
                Decision::Allow
            } else if param("tenant") != p.tenant.as_str() {
                Decision::NotFound
            } else {
                Decision::Forbidden
            }
        }
        Permission::AlertToken => allow(is_alert_token_of(p, param("name"))),
    }
}

/// Whether `p` is the alert token of `group` (the middleware makes such a principal
/// only from an alert token; a user or an API key always has a user or a role).
fn is_alert_token_of(p: &Principal, group: &str) -> bool {
    p.user.is_none()
        && p.role.is_none()
        && !p.admin
        && p.key.as_deref() == Some(crate::notify::alert_principal_key(group).as_str())
}

fn bearer(req: &axum::http::request::Parts) -> Option<&str> {
    req.headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

fn unauthorized(detail: String) -> Response {
    let mut r = problem(StatusCode::UNAUTHORIZED, "Unauthorized", detail, None);
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// The middleware (installed with `route_layer`, so that the route is matched first).
pub async fn authorize(State(s): State<Arc<Service>>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let method = parts.method.clone();
    let template = parts
        .extensions
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let source = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| {
        let forwarded: Vec<&str> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        s.auth().client_addr(c.0.ip(), &forwarded).to_string()
    });
    parts.extensions.insert(ClientAddr(source.clone()));
    let path = parts.uri.path().to_string();
    let params: HashMap<String, String> = RawPathParams::from_request_parts(&mut parts, &())
        .await
        .map(|p| {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default();
    let mutating = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);

    let Some(permission) = rule(&method, &template) else {
        let allowed = methods(&template);
        if !allowed.is_empty() {
            // A known route with another method: the client's mistake, not a missing rule.
            let allow = allowed
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let mut r = problem(
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed",
                format!("`{template}` answers {allow}"),
                None,
            );
            if let Ok(v) = HeaderValue::from_str(&allow) {
                r.headers_mut().insert(header::ALLOW, v);
            }
            return r;
        }
        tracing::error!(%method, template, "route without an authorization rule: refused");
        return problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal error",
            "this route has no authorization rule".into(),
            None,
        );
    };

    let mut principal = None;
    let mut early = None;
    // An alert token counts only on the alert route of its group; anywhere else it is
    // an unknown credential (401).
    let alert_scope = match (permission, bearer(&parts)) {
        (Permission::AlertToken, Some(token)) => match s.alert_token_scope(token).await {
            Ok(scope) => scope,
            Err(e) => {
                tracing::error!("alert token: {e}");
                None
            }
        },
        _ => None,
    };
    if let Some((tenant, group)) = alert_scope {
        principal = Some(Principal {
            user: None,
            key: Some(crate::notify::alert_principal_key(&group)),
            tenant,
            role: None,
            admin: false,
            owned: Vec::new(),
            token_hash: None,
        });
    } else if let Some(token) = bearer(&parts) {
        match s.auth().authenticate(token).await {
            Ok(p) => principal = Some(p),
            Err(AuthError::Unauthorized(why)) => {
                // A service-level record, never a tenant's: the caller proved nothing.
                tracing::info!(source = source.as_deref().unwrap_or("-"), %method, template,
                    "refused credential: {why}");
                if permission != Permission::Public {
                    early = Some(unauthorized(why));
                }
            }
            Err(e) => {
                tracing::error!("authentication: {e}");
                early = Some(problem(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal error",
                    "authentication failed; see the server log".into(),
                    None,
                ));
            }
        }
    }

    let response = match early {
        Some(r) => r,
        None => match decide(permission, principal.as_ref(), &params) {
            Decision::Allow => {
                let mut req = Request::from_parts(parts, body);
                if let Some(p) = &principal {
                    req.extensions_mut().insert(p.clone());
                }
                next.run(req).await
            }
            Decision::Unauthorized => unauthorized(
                "this call needs `Authorization: Bearer TOKEN` (POST /v1/auth/tokens, or `swell login`)"
                    .into(),
            ),
            Decision::Forbidden => problem(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!(
                    "`{method} {template}` needs {}; you are {} in tenant `{}`",
                    permission.describe(),
                    principal
                        .as_ref()
                        .and_then(|p| p.role)
                        .map_or("without a role".to_string(), |r| format!("{r}")),
                    principal
                        .as_ref()
                        .map_or_else(String::new, |p| p.tenant.to_string()),
                ),
                None,
            ),
            Decision::NotFound => problem(
                StatusCode::NOT_FOUND,
                "Not found",
                "no such object in your tenant".into(),
                None,
            ),
        },
    };

    if mutating {
        let note = response.extensions().get::<AuditNote>().cloned();
        let (user, tenant) = match (&principal, note) {
            // An admin acting on a tenant named in the path is recorded in that tenant's
            // log, so that its owners see what was done to it.
            (Some(p), _) if p.admin => (
                Some(p.name()),
                params
                    .get("tenant")
                    .and_then(|t| TenantId::new(t).ok())
                    .or_else(|| Some(p.tenant.clone())),
            ),
            (Some(p), _) => (Some(p.name()), Some(p.tenant.clone())),
            // Unauthenticated: a login. Only a successful one lands in the tenant's
            // log; a failed one is the service's (tenant none: admins see it with
            // `?all=true`), so nobody can write into a tenant's log without its password.
            (None, Some(n)) if response.status().is_success() => (Some(n.user), n.tenant),
            (None, Some(n)) => {
                tracing::warn!(user = %n.user, source = source.as_deref().unwrap_or("-"),
                    status = response.status().as_u16(), "failed login");
                (Some(n.user), None)
            }
            (None, None) => (None, None),
        };
        let entry = NewAudit {
            at: s.now(),
            user,
            tenant,
            action: format!("{method} {template}"),
            target: path,
            source,
            result: response.status().as_u16(),
        };
        if let Err(e) = s.append_audit(&entry).await {
            tracing::error!("audit log: {e}");
        }
    }
    response.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use swell_core::InstanceId;
    use swell_store::Role;

    fn who(role: Option<Role>, admin: bool, owned: &[&str]) -> Principal {
        Principal {
            user: Some("ann".into()),
            key: None,
            tenant: TenantId::new("a").unwrap(),
            role,
            admin,
            owned: owned.iter().map(|i| InstanceId(i.to_string())).collect(),
            token_hash: None,
        }
    }

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn decisions() {
        use Decision::*;
        let none = params(&[]);
        let viewer = who(Some(Role::Viewer), false, &[]);
        let member = who(Some(Role::Member), false, &[]);
        let owner = who(Some(Role::Owner), false, &[]);
        let admin = who(None, true, &[]);
        let io = who(None, false, &["i1"]);
        let cases = [
            (Permission::Public, None, &none, Allow),
            (Permission::Authenticated, None, &none, Unauthorized),
            (Permission::Role(Role::Viewer), Some(&viewer), &none, Allow),
            (
                Permission::Role(Role::Member),
                Some(&viewer),
                &none,
                Forbidden,
            ),
            (Permission::Role(Role::Member), Some(&member), &none, Allow),
            (
                Permission::Role(Role::Owner),
                Some(&member),
                &none,
                Forbidden,
            ),
            (Permission::Role(Role::Owner), Some(&admin), &none, Allow),
            (Permission::Admin, Some(&owner), &none, Forbidden),
            (Permission::OwnInstances, Some(&io), &none, Allow),
            (
                Permission::OwnInstance,
                Some(&io),
                &params(&[("id", "i1")]),
                Allow,
            ),
            (
                Permission::OwnInstance,
                Some(&io),
                &params(&[("id", "i2")]),
                Forbidden,
            ),
            (
                Permission::OwnInstance,
                Some(&viewer),
                &params(&[("id", "i1")]),
                Forbidden,
            ),
            (
                Permission::TenantRole(Role::Viewer),
                Some(&viewer),
                &params(&[("tenant", "a")]),
                Allow,
            ),
            (
                Permission::TenantRole(Role::Viewer),
                Some(&owner),
                &params(&[("tenant", "b")]),
                NotFound,
            ),
            (
                Permission::TenantRole(Role::Owner),
                Some(&member),
                &params(&[("tenant", "a")]),
                Forbidden,
            ),
            (
                Permission::TenantAdmin,
                Some(&owner),
                &params(&[("tenant", "a")]),
                Forbidden,
            ),
            (
                Permission::TenantAdmin,
                Some(&owner),
                &params(&[("tenant", "b")]),
                NotFound,
            ),
            (
                Permission::TenantAdmin,
                Some(&admin),
                &params(&[("tenant", "b")]),
                Allow,
            ),
            (
                Permission::SelfOrAdmin,
                Some(&viewer),
                &params(&[("user", "ann")]),
                Allow,
            ),
            (
                Permission::SelfOrAdmin,
                Some(&owner),
                &params(&[("user", "bob")]),
                Forbidden,
            ),
            (
                Permission::SelfOrOwner,
                Some(&owner),
                &params(&[("user", "bob")]),
                Allow,
            ),
        ];
        for (i, (perm, p, params, want)) in cases.into_iter().enumerate() {
            assert_eq!(decide(perm, p, params), want, "case {i}: {perm:?}");
        }
    }
}
