//! Who may do what: ONE table ([`RULES`]) of every route and the permission it needs.
//!
//! The middleware (`auth::middleware`) looks every matched route up here and refuses a
//! route that has no rule; `docs/api.md`'s permission table is generated from it
//! ([`permissions_markdown`]) and a test keeps the two equal.

use axum::http::Method;
use swell_store::Role;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Anyone, without a token.
    Public,
    /// Any valid token or API key.
    Authenticated,
    /// A service-wide administrator.
    Admin,
    /// At least this role in the credential's tenant (admins: always).
    Role(Role),
    /// A viewer or better sees everything; an instance owner sees only their instances.
    OwnInstances,
    /// A member or better; or the owner of the path's instance `{id}` (seed 3).
    OwnInstance,
    /// The user named in the path (`{user}`), or an admin.
    SelfOrAdmin,
    /// The user named in the path, an admin, or an owner of a tenant the user is in.
    SelfOrOwner,
    /// At least this role in the path's tenant `{tenant}`, which must be the credential's
    /// (another tenant is 404); admins: any tenant.
    TenantRole(Role),
    /// An admin; anyone else gets 403 for their own tenant and 404 for another.
    TenantAdmin,
    /// Only the alert token of the path's group `{name}`
    /// ([`crate::service::Service::create_alert_token`]); every other credential, an
    /// admin's too, is refused (403), and the token is refused everywhere else.
    AlertToken,
}

impl Permission {
    /// How the permission reads in the documentation.
    pub fn describe(self) -> &'static str {
        match self {
            Permission::Public => "anyone (no token)",
            Permission::Authenticated => "any token or API key",
            Permission::Admin => "admin",
            Permission::Role(Role::Viewer) => "viewer, member, owner, admin",
            Permission::Role(Role::Member) => "member, owner, admin",
            Permission::Role(Role::Owner) => "owner, admin",
            Permission::OwnInstances => {
                "viewer, member, owner, admin; an instance owner sees only their instances"
            }
            Permission::OwnInstance => "member, owner, admin; the instance's owner",
            Permission::SelfOrAdmin => "the user themself, admin",
            Permission::SelfOrOwner => "the user themself, an owner of their tenant, admin",
            Permission::TenantRole(Role::Viewer) => "viewer, member, owner of that tenant; admin",
            Permission::TenantRole(Role::Member) => "member, owner of that tenant; admin",
            Permission::TenantRole(Role::Owner) => "owner of that tenant; admin",
            Permission::TenantAdmin => "admin",
            Permission::AlertToken => "the group's alert token only",
        }
    }
}

use Permission::*;

/// Every route of the API: method, route template (as in the router) and permission.
pub const RULES: &[(Method, &str, Permission)] = &[
    (Method::GET, "/v1/health", Public),
    (Method::GET, "/v1/openapi.json", Public),
    (Method::POST, "/v1/auth/tokens", Public),
    (Method::DELETE, "/v1/auth/tokens/current", Authenticated),
    (Method::GET, "/v1/auth/whoami", Authenticated),
    (Method::GET, "/v1/groups", Role(Role::Viewer)),
    (Method::POST, "/v1/groups", Role(Role::Member)),
    (Method::POST, "/v1/apply", Role(Role::Member)),
    (Method::GET, "/v1/groups/{name}", Role(Role::Viewer)),
    (Method::PUT, "/v1/groups/{name}", Role(Role::Member)),
    (Method::DELETE, "/v1/groups/{name}", Role(Role::Member)),
    (
        Method::PUT,
        "/v1/groups/{name}/desired_capacity",
        Role(Role::Member),
    ),
    (
        Method::POST,
        "/v1/groups/{name}/suspend",
        Role(Role::Member),
    ),
    (Method::POST, "/v1/groups/{name}/resume", Role(Role::Member)),
    (Method::GET, "/v1/groups/{name}/instances", OwnInstances),
    (
        Method::POST,
        "/v1/groups/{name}/instances/{id}/protect",
        Role(Role::Member),
    ),
    (
        Method::POST,
        "/v1/groups/{name}/instances/{id}/unprotect",
        Role(Role::Member),
    ),
    (
        Method::POST,
        "/v1/groups/{name}/instances/{id}/pause",
        OwnInstance,
    ),
    (
        Method::POST,
        "/v1/groups/{name}/instances/{id}/resume",
        OwnInstance,
    ),
    (
        Method::GET,
        "/v1/groups/{name}/instances/{id}/owners",
        Role(Role::Viewer),
    ),
    (
        Method::PUT,
        "/v1/groups/{name}/instances/{id}/owners/{user}",
        Role(Role::Owner),
    ),
    (
        Method::DELETE,
        "/v1/groups/{name}/instances/{id}/owners/{user}",
        Role(Role::Owner),
    ),
    (Method::GET, "/v1/groups/{name}/events", Role(Role::Viewer)),
    (
        Method::GET,
        "/v1/groups/{name}/events/stream",
        Role(Role::Viewer),
    ),
    (
        Method::POST,
        "/v1/groups/{name}/metrics",
        Role(Role::Member),
    ),
    (Method::GET, "/v1/groups/{name}/metrics", Role(Role::Viewer)),
    (
        Method::GET,
        "/v1/groups/{name}/instances/{id}/metrics",
        OwnInstances,
    ),
    (
        Method::GET,
        "/v1/groups/{name}/metrics/history",
        Role(Role::Viewer),
    ),
    (
        Method::GET,
        "/v1/groups/{name}/load_balancer",
        Role(Role::Viewer),
    ),
    (Method::POST, "/v1/groups/{name}/alerts", AlertToken),
    (
        Method::POST,
        "/v1/groups/{name}/alerts/token",
        Role(Role::Member),
    ),
    (Method::GET, "/v1/metrics", Role(Role::Viewer)),
    (Method::GET, "/v1/webhooks", Role(Role::Member)),
    (Method::POST, "/v1/webhooks", Role(Role::Owner)),
    (Method::GET, "/v1/webhooks/{webhook}", Role(Role::Member)),
    (Method::DELETE, "/v1/webhooks/{webhook}", Role(Role::Owner)),
    (
        Method::GET,
        "/v1/webhooks/{webhook}/deliveries",
        Role(Role::Member),
    ),
    (Method::GET, "/v1/instances", OwnInstances),
    (Method::GET, "/v1/providers", Role(Role::Viewer)),
    (Method::POST, "/v1/providers", Admin),
    (Method::GET, "/v1/providers/{name}", Role(Role::Viewer)),
    (Method::PUT, "/v1/providers/{name}", Admin),
    (Method::DELETE, "/v1/providers/{name}", Admin),
    (Method::GET, "/v1/providers/{name}/hosts", Admin),
    (Method::GET, "/v1/prices", Admin),
    (Method::POST, "/v1/prices", Admin),
    (Method::DELETE, "/v1/prices/{name}", Admin),
    (Method::GET, "/v1/cost", Role(Role::Viewer)),
    (Method::GET, "/v1/tenants", Admin),
    (Method::POST, "/v1/tenants", Admin),
    (
        Method::GET,
        "/v1/tenants/{tenant}",
        TenantRole(Role::Viewer),
    ),
    (Method::PUT, "/v1/tenants/{tenant}", TenantAdmin),
    (Method::DELETE, "/v1/tenants/{tenant}", TenantAdmin),
    (
        Method::GET,
        "/v1/tenants/{tenant}/users",
        TenantRole(Role::Owner),
    ),
    (
        Method::PUT,
        "/v1/tenants/{tenant}/users/{user}",
        TenantRole(Role::Owner),
    ),
    (
        Method::DELETE,
        "/v1/tenants/{tenant}/users/{user}",
        TenantRole(Role::Owner),
    ),
    (Method::GET, "/v1/quota/default", Admin),
    (Method::PUT, "/v1/quota/default", Admin),
    (Method::GET, "/v1/users", Role(Role::Owner)),
    (Method::POST, "/v1/users", Role(Role::Owner)),
    (Method::GET, "/v1/users/{user}", SelfOrOwner),
    (Method::DELETE, "/v1/users/{user}", Admin),
    (Method::PUT, "/v1/users/{user}/password", SelfOrAdmin),
    (Method::GET, "/v1/api-keys", Role(Role::Owner)),
    (Method::POST, "/v1/api-keys", Role(Role::Owner)),
    (Method::DELETE, "/v1/api-keys/{key}", Role(Role::Owner)),
    (Method::GET, "/v1/audit", Role(Role::Owner)),
    // The web dashboard's static files (`crate::dashboard::ASSETS`): the same for
    // everyone, no data in them; the page calls the routes above with the user's token.
    (Method::GET, "/", Public),
    (Method::GET, "/ui/app.js", Public),
    (Method::GET, "/ui/app.css", Public),
    (Method::GET, "/ui/favicon.svg", Public),
];

/// The rule of a matched route, if it has one. `HEAD` has `GET`'s rule: axum answers
/// it with the `GET` handler, without the body.
pub fn rule(method: &Method, template: &str) -> Option<Permission> {
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    RULES
        .iter()
        .find(|(m, t, _)| m == method && *t == template)
        .map(|(_, _, p)| *p)
}

/// The methods with a rule on `template` (the `Allow` of a 405).
pub fn methods(template: &str) -> Vec<&'static Method> {
    RULES
        .iter()
        .filter(|(_, t, _)| *t == template)
        .map(|(m, _, _)| m)
        .collect()
}

/// The permission table of `docs/api.md`, generated from [`RULES`].
pub fn permissions_markdown() -> String {
    let mut out = String::from("| method and path | who may call it |\n|---|---|\n");
    for (method, template, permission) in RULES {
        out.push_str(&format!(
            "| `{method} {template}` | {} |\n",
            permission.describe()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each dashboard file has a `Public` rule (else the middleware would refuse it),
    /// and nothing else outside `/v1` has a rule.
    #[test]
    fn dashboard_assets_are_public_and_the_only_routes_outside_v1() {
        for asset in crate::dashboard::ASSETS {
            assert_eq!(
                rule(&Method::GET, asset.path),
                Some(Public),
                "{}",
                asset.path
            );
        }
        assert_eq!(rule(&Method::HEAD, "/"), Some(Public));
        assert_eq!(rule(&Method::POST, "/"), None);
        assert_eq!(methods("/"), [&Method::GET]);
        for (_, template, _) in RULES {
            assert!(
                template.starts_with("/v1/")
                    || crate::dashboard::ASSETS.iter().any(|a| a.path == *template),
                "{template}"
            );
        }
    }
}
