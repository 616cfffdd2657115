//! Authorization over real HTTP: two tenants, each with an owner, a member, a viewer and
//! an instance owner; EVERY route of the rules table (which must equal the OpenAPI
//! document's routes) called by every role, on its own tenant's objects and on the
//! other tenant's. Allowed calls succeed, forbidden ones are 401/403/404, and the other
//! tenant's state is byte-for-byte unchanged afterwards.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;
use swell_server::auth::rules::{Permission, RULES};
use swell_server::{Server, ServerConfig};
use swell_store::Role;

const ADMIN_PASSWORD: &str = "authz-admin-password";

fn pw(user: &str) -> String {
    format!("{user}-password")
}

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Who {
    Anon,
    Admin,
    Owner,
    Member,
    Viewer,
    InstanceOwner,
}

const ALL: [Who; 6] = [
    Who::Anon,
    Who::Admin,
    Who::Owner,
    Who::Member,
    Who::Viewer,
    Who::InstanceOwner,
];

/// The rule in words, stated independently of the server's code: who may call a route
/// of this permission on their own tenant (path user = themself for `SelfOrAdmin`, a
/// third user for `SelfOrOwner`, the path instance = the instance owner's).
fn allowed(p: Permission, who: Who) -> bool {
    use Who::*;
    let at_least = |r: Role| match r {
        Role::Viewer => matches!(who, Admin | Owner | Member | Viewer),
        Role::Member => matches!(who, Admin | Owner | Member),
        Role::Owner => matches!(who, Admin | Owner),
    };
    match p {
        Permission::Public => true,
        Permission::Authenticated | Permission::SelfOrAdmin | Permission::OwnInstances => {
            who != Anon
        }
        Permission::Admin | Permission::TenantAdmin => who == Admin,
        Permission::Role(r) | Permission::TenantRole(r) => at_least(r),
        Permission::OwnInstance => matches!(who, Admin | Owner | Member | InstanceOwner),
        Permission::SelfOrOwner => matches!(who, Admin | Owner),
        // Only the group's alert token, which none of these holds.
        Permission::AlertToken => false,
    }
}

struct Api {
    url: String,
    http: reqwest::Client,
}

#[derive(Debug)]
struct Answer {
    status: StatusCode,
    body: Value,
}

impl Api {
    async fn call(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Answer {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.expect("the API answers");
        let status = resp.status();
        let bytes = resp.bytes().await.unwrap_or_default();
        Answer {
            status,
            body: serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into())),
        }
    }

    /// A call that must succeed.
    async fn ok(&self, token: &str, method: Method, path: &str, body: Option<Value>) -> Value {
        let a = self
            .call(Some(token), method.clone(), path, body.as_ref())
            .await;
        assert!(a.status.is_success(), "{method} {path}: {a:?}");
        a.body
    }

    async fn login(&self, user: &str, password: &str, tenant: &str) -> String {
        let a = self
            .call(
                None,
                Method::POST,
                "/v1/auth/tokens",
                Some(&json!({"user": user, "password": password, "tenant": tenant})),
            )
            .await;
        assert_eq!(
            a.status,
            StatusCode::CREATED,
            "login {user}@{tenant}: {a:?}"
        );
        a.body["token"].as_str().unwrap().to_string()
    }
}

/// Kills every process this server's data directory tagged (even when a test fails).
struct Cleanup(std::path::PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let owner = format!("SWELL_OWNER={}", self.0.display());
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let env = std::fs::read(entry.path().join("environ")).unwrap_or_default();
            if env.split(|b| *b == 0).any(|v| v == owner.as_bytes()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

async fn start(dir: &Path) -> Server {
    Server::start(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        stop_instances_on_exit: true,
        admin_password: Some(swell_server::secrets::SecretString::new(ADMIN_PASSWORD)),
        ..ServerConfig::default()
    })
    .await
    .unwrap()
}

fn sleepers(name: &str, desired: u32) -> Value {
    json!({
        "name": name,
        "template": {"command": ["sleep", "1000"]},
        "min": 0, "max": 3, "desired_capacity": desired,
        "evaluation_interval": "1h", "metrics_interval": "1h",
        "policies": [{"type": "threshold", "scale_out_above": 1000}]
    })
}

async fn running(api: &Api, token: &str, group: &str, n: usize) -> Vec<String> {
    for _ in 0..200 {
        let v = api
            .ok(
                token,
                Method::GET,
                &format!("/v1/groups/{group}/instances"),
                None,
            )
            .await;
        let ids: Vec<String> = v["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["status"] == "running")
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect();
        if ids.len() == n {
            return ids;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("group {group} never reached {n} running instances");
}

/// One tenant's fixtures.
struct Tenant {
    name: String,
    group: String,
    /// The instance owner's instance, and another one.
    owned: String,
    other: String,
    /// The tenant's webhook.
    webhook: String,
    /// Tokens by role (admin: the admin's token on this tenant).
    tokens: HashMap<Who, String>,
}

impl Tenant {
    fn user(&self, who: Who) -> String {
        match who {
            Who::Admin => "admin".into(),
            Who::Owner => format!("{}-owner", self.name),
            Who::Member => format!("{}-member", self.name),
            Who::Viewer => format!("{}-viewer", self.name),
            Who::InstanceOwner => format!("{}-io", self.name),
            Who::Anon => String::new(),
        }
    }

    fn token(&self, who: Who) -> Option<&str> {
        self.tokens.get(&who).map(String::as_str)
    }

    fn admin(&self) -> &str {
        self.token(Who::Admin).unwrap()
    }
}

async fn setup_tenant(api: &Api, root: &str, name: &str) -> Tenant {
    // Granted the `process` provider its sleepers run on (a new tenant is granted
    // nothing), and room for the matrix's many groups (a new tenant's default is 10).
    api.ok(
        root,
        Method::POST,
        "/v1/tenants",
        Some(json!({"name": name, "providers": ["process"], "quota": {"max_groups": 1000}})),
    )
    .await;
    let mut t = Tenant {
        name: name.into(),
        group: format!("web-{name}"),
        owned: String::new(),
        other: String::new(),
        webhook: String::new(),
        tokens: HashMap::new(),
    };
    let admin = api.login("admin", ADMIN_PASSWORD, name).await;
    for (who, role) in [
        (Who::Owner, Some("owner")),
        (Who::Member, Some("member")),
        (Who::Viewer, Some("viewer")),
        (Who::InstanceOwner, None),
    ] {
        let user = t.user(who);
        api.ok(
            &admin,
            Method::POST,
            "/v1/users",
            Some(json!({"name": user, "password": pw(&user)})),
        )
        .await;
        if let Some(role) = role {
            api.ok(
                &admin,
                Method::PUT,
                &format!("/v1/tenants/{name}/users/{user}"),
                Some(json!({"role": role})),
            )
            .await;
        }
    }
    // A third user with a viewer role (the target of user-management calls).
    let extra = format!("{name}-extra");
    api.ok(
        &admin,
        Method::POST,
        "/v1/users",
        Some(json!({"name": extra, "password": pw(&extra)})),
    )
    .await;
    api.ok(
        &admin,
        Method::PUT,
        &format!("/v1/tenants/{name}/users/{extra}"),
        Some(json!({"role": "viewer"})),
    )
    .await;
    api.ok(
        &admin,
        Method::POST,
        "/v1/groups",
        Some(sleepers(&t.group, 2)),
    )
    .await;
    // A provider definition private to the tenant, named like its group, so that the
    // matrix's `{name}` names it on `/v1/providers/{name}`: the other tenant must find
    // nothing there (404), this tenant's roles see it.
    api.ok(
        &admin,
        Method::POST,
        "/v1/providers",
        Some(json!({"name": t.group, "kind": "process", "tenant": name})),
    )
    .await;
    t.webhook = webhook(api, &admin, name).await;
    let ids = running(api, &admin, &t.group, 2).await;
    t.owned = ids[0].clone();
    t.other = ids[1].clone();
    api.ok(
        &admin,
        Method::PUT,
        &format!(
            "/v1/groups/{}/instances/{}/owners/{}",
            t.group,
            t.owned,
            t.user(Who::InstanceOwner)
        ),
        None,
    )
    .await;
    api.ok(
        &admin,
        Method::POST,
        "/v1/api-keys",
        Some(json!({"name": format!("{name}-key"), "role": "viewer"})),
    )
    .await;
    for who in [Who::Owner, Who::Member, Who::Viewer, Who::InstanceOwner] {
        let user = t.user(who);
        let token = api.login(&user, &pw(&user), name).await;
        t.tokens.insert(who, token);
    }
    t.tokens.insert(Who::Admin, admin);
    t
}

/// Makes a webhook of the tenant (its deliveries fail in the background: nobody
/// answers at that name), returning its id.
async fn webhook(api: &Api, admin: &str, name: &str) -> String {
    let made = api
        .ok(
            admin,
            Method::POST,
            "/v1/webhooks",
            Some(
                json!({"url": format!("https://hooks.invalid/{name}"), "events": ["group_deleted"],
                "secret": "a secret of sixteen+"}),
            ),
        )
        .await;
    made["id"].as_str().unwrap().to_string()
}

/// An Alertmanager notification (webhook payload version 4).
fn alert_payload() -> Value {
    json!({"version": "4", "status": "firing", "receiver": "swell", "groupKey": "{}:{}",
        "alerts": [{"status": "firing", "labels": {"alertname": "HighLoad"}, "fingerprint": "f00d"}]})
}

/// Everything the API shows about a tenant, as its admin sees it (live metrics removed).
async fn dump(api: &Api, t: &Tenant) -> String {
    let admin = t.admin();
    let mut out = Vec::new();
    for path in [
        format!("/v1/tenants/{}", t.name),
        "/v1/groups".into(),
        format!("/v1/groups/{}", t.group),
        format!("/v1/groups/{}/instances?all=true", t.group),
        format!("/v1/groups/{}/events", t.group),
        format!("/v1/tenants/{}/users", t.name),
        "/v1/api-keys".into(),
        "/v1/webhooks".into(),
        format!("/v1/groups/{}/instances/{}/owners", t.group, t.owned),
        "/v1/instances".into(),
    ] {
        let mut v = api.ok(admin, Method::GET, &path, None).await;
        if let Some(list) = v.get_mut("instances").and_then(Value::as_array_mut) {
            for i in list {
                i["cpu_percent"] = Value::Null;
                i["memory_mb"] = Value::Null;
            }
        }
        out.push(format!("{path}\n{v}"));
    }
    for who in [Who::Owner, Who::Member, Who::Viewer, Who::InstanceOwner] {
        let w = api
            .ok(t.token(who).unwrap(), Method::GET, "/v1/auth/whoami", None)
            .await;
        out.push(w.to_string());
    }
    out.join("\n")
}

/// A concrete call of a route: path, body, and the token to use instead of the
/// caller's own (for calls that end the caller's token).
struct Call {
    path: String,
    body: Option<Value>,
}

fn fill(template: &str, params: &[(&str, &str)]) -> String {
    let mut path = template.to_string();
    for (k, v) in params {
        path = path.replace(&format!("{{{k}}}"), v);
    }
    assert!(!path.contains('{'), "unfilled parameter in {path}");
    path
}

/// Builds the call of `method template` by `who` on `t`'s objects (`fresh`: a counter
/// for names), doing any setup it needs as `t`'s admin. Panics for a route it does not
/// know: a new route needs a case here.
async fn own_call(
    api: &Api,
    t: &Tenant,
    method: &Method,
    template: &str,
    who: Who,
    fresh: usize,
) -> Call {
    let admin = t.admin();
    let me = t.user(who);
    let extra = format!("{}-extra", t.name);
    let mut params: Vec<(&str, String)> = vec![
        ("name", t.group.clone()),
        ("id", t.owned.clone()),
        ("tenant", t.name.clone()),
        ("user", extra.clone()),
        ("webhook", t.webhook.clone()),
    ];
    let mut body = None;
    let set = |params: &mut Vec<(&str, String)>, k: &'static str, v: String| {
        params.retain(|(x, _)| *x != k);
        params.push((k, v));
    };
    match (method.as_str(), template) {
        ("GET", _) => {
            if template == "/v1/users/{user}" {
                set(&mut params, "user", extra.clone());
            }
            if template == "/v1/providers/{name}/hosts" {
                // A qemu definition (only those have hosts): one local host, no VM.
                let p = format!("phosts-{fresh}");
                let dir =
                    std::env::temp_dir().join(format!("swell-authz-{p}-{}", std::process::id()));
                api.ok(
                    admin,
                    Method::POST,
                    "/v1/providers",
                    Some(json!({"name": p, "kind": "qemu",
                        "config": {"hosts": [{"name": "h1", "state_dir": dir}], "accel": "tcg"}})),
                )
                .await;
                set(&mut params, "name", p);
            }
        }
        ("POST", "/v1/auth/tokens") => {
            let password = if who == Who::Anon {
                "wrong password".to_string()
            } else if who == Who::Admin {
                ADMIN_PASSWORD.to_string()
            } else {
                pw(&me)
            };
            let user = if who == Who::Anon {
                "nobody".into()
            } else {
                me.clone()
            };
            body = Some(json!({"user": user, "password": password, "tenant": t.name}));
        }
        ("DELETE", "/v1/auth/tokens/current") => {}
        ("POST", "/v1/groups") => body = Some(sleepers(&format!("new-{fresh}"), 0)),
        ("POST", "/v1/apply") => {
            body = Some(json!({"groups": [sleepers(&format!("applied-{fresh}"), 0)]}));
        }
        ("PUT", "/v1/groups/{name}") => body = Some(sleepers(&t.group, 2)),
        ("DELETE", "/v1/groups/{name}") => {
            let g = format!("del-{fresh}");
            api.ok(admin, Method::POST, "/v1/groups", Some(sleepers(&g, 0)))
                .await;
            set(&mut params, "name", g);
        }
        ("PUT", "/v1/groups/{name}/desired_capacity") => {
            body = Some(json!({"desired_capacity": 2}));
        }
        ("POST", "/v1/groups/{name}/metrics") => {
            // One group-level and one per-instance reading: the foreign call names
            // this tenant's instance, which must read as unknown there.
            body = Some(json!({"samples": [
                {"metric": "cpu", "value": 1.0},
                {"metric": "cpu", "value": 2.0, "instance_id": t.owned},
            ]}));
        }
        ("POST", "/v1/groups/{name}/instances/{id}/pause") => {
            let _ = api
                .call(
                    Some(admin),
                    Method::POST,
                    &fill(
                        "/v1/groups/{name}/instances/{id}/resume",
                        &[("name", &t.group), ("id", &t.owned)],
                    ),
                    None,
                )
                .await;
        }
        ("POST", "/v1/groups/{name}/instances/{id}/resume") => {
            let _ = api
                .call(
                    Some(admin),
                    Method::POST,
                    &fill(
                        "/v1/groups/{name}/instances/{id}/pause",
                        &[("name", &t.group), ("id", &t.owned)],
                    ),
                    None,
                )
                .await;
        }
        // Idempotent: each role's call finds the state the previous one left.
        ("POST", "/v1/groups/{name}/suspend")
        | ("POST", "/v1/groups/{name}/resume")
        | ("POST", "/v1/groups/{name}/instances/{id}/protect")
        | ("POST", "/v1/groups/{name}/instances/{id}/unprotect") => {}
        ("PUT", "/v1/groups/{name}/instances/{id}/owners/{user}") => {
            set(&mut params, "id", t.other.clone());
        }
        ("DELETE", "/v1/groups/{name}/instances/{id}/owners/{user}") => {
            set(&mut params, "id", t.other.clone());
            api.ok(
                admin,
                Method::PUT,
                &fill(
                    template,
                    &[("name", &t.group), ("id", &t.other), ("user", &extra)],
                ),
                None,
            )
            .await;
        }
        ("POST", "/v1/groups/{name}/alerts") => body = Some(alert_payload()),
        ("POST", "/v1/groups/{name}/alerts/token") => {}
        ("POST", "/v1/webhooks") => {
            body = Some(json!({"url": format!("https://hooks.invalid/{fresh}"),
                "events": ["group_deleted"], "secret": "a secret of sixteen+"}));
        }
        ("DELETE", "/v1/webhooks/{webhook}") => {
            let w = webhook(api, admin, &t.name).await;
            set(&mut params, "webhook", w);
        }
        ("POST", "/v1/tenants") => body = Some(json!({"name": format!("t-{fresh}")})),
        ("POST", "/v1/providers") => {
            body = Some(json!({"name": format!("p-{fresh}"), "kind": "process"}));
        }
        ("PUT", "/v1/providers/{name}") => body = Some(json!({"config": {}})),
        ("DELETE", "/v1/providers/{name}") => {
            let p = format!("pdel-{fresh}");
            api.ok(
                admin,
                Method::POST,
                "/v1/providers",
                Some(json!({"name": p, "kind": "process"})),
            )
            .await;
            set(&mut params, "name", p);
        }
        ("POST", "/v1/prices") => {
            body = Some(json!({"provider": "process", "per_hour": 0.5}));
        }
        ("DELETE", "/v1/prices/{name}") => {
            api.ok(
                admin,
                Method::POST,
                "/v1/prices",
                Some(json!({"provider": "process", "per_hour": 0.25})),
            )
            .await;
            set(&mut params, "name", "process".into());
        }
        ("PUT", "/v1/tenants/{tenant}") => body = Some(json!({"description": "updated"})),
        ("DELETE", "/v1/tenants/{tenant}") => {
            if who == Who::Admin {
                let name = format!("tdel-{fresh}");
                api.ok(
                    admin,
                    Method::POST,
                    "/v1/tenants",
                    Some(json!({"name": name})),
                )
                .await;
                set(&mut params, "tenant", name);
            }
        }
        ("PUT", "/v1/tenants/{tenant}/users/{user}") => body = Some(json!({"role": "viewer"})),
        ("DELETE", "/v1/tenants/{tenant}/users/{user}") => {
            api.ok(
                admin,
                Method::PUT,
                &fill(template, &[("tenant", &t.name), ("user", &extra)]),
                Some(json!({"role": "viewer"})),
            )
            .await;
        }
        ("PUT", "/v1/quota/default") => body = Some(json!({})),
        ("POST", "/v1/users") => {
            body = Some(json!({"name": format!("u-{fresh}"), "password": "a long password"}));
        }
        ("DELETE", "/v1/users/{user}") => {
            let u = format!("gone-{fresh}");
            api.ok(
                admin,
                Method::POST,
                "/v1/users",
                Some(json!({"name": u, "password": "a long password"})),
            )
            .await;
            set(&mut params, "user", u);
        }
        ("PUT", "/v1/users/{user}/password") => {
            // Themself: every role may; it revokes their tokens (the caller logs in again).
            set(
                &mut params,
                "user",
                if who == Who::Anon {
                    extra.clone()
                } else {
                    me.clone()
                },
            );
            let password = if who == Who::Admin {
                ADMIN_PASSWORD.to_string()
            } else {
                pw(&me)
            };
            // Changing one's own password takes the current one.
            body = Some(json!({"password": password, "current_password": password}));
        }
        ("POST", "/v1/api-keys") => {
            body = Some(json!({"name": format!("k-{fresh}"), "role": "viewer"}));
        }
        ("DELETE", "/v1/api-keys/{key}") => {
            let k = format!("kdel-{fresh}");
            api.ok(
                admin,
                Method::POST,
                "/v1/api-keys",
                Some(json!({"name": k, "role": "viewer"})),
            )
            .await;
            params.push(("key", k));
        }
        (m, t) => panic!("no test case for `{m} {t}`: add one to own_call"),
    }
    if template.contains("{key}") && !params.iter().any(|(k, _)| *k == "key") {
        params.push(("key", format!("{}-key", t.name)));
    }
    let refs: Vec<(&str, &str)> = params
        .iter()
        .filter(|(k, _)| template.contains(&format!("{{{k}}}")))
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    let mut path = fill(template, &refs);
    if template.ends_with("/events/stream") {
        // The stream would stay open (until its timeout): one event, then the end.
        path.push_str("?after_id=0&max_events=1");
    }
    Call { path, body }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_every_role_both_tenants() {
    let dir = tempfile::tempdir().unwrap();
    let data = std::fs::canonicalize(dir.path()).unwrap();
    let _cleanup = Cleanup(data.clone());
    let server = start(&data).await;
    let api = Api {
        url: format!("http://{}", server.addr()),
        http: reqwest::Client::new(),
    };

    // The rules table and the OpenAPI document list the same routes.
    let doc = api
        .call(None, Method::GET, "/v1/openapi.json", None)
        .await
        .body;
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    let ruled: BTreeSet<String> = RULES
        .iter()
        .map(|(m, t, _)| format!("{m} {t}"))
        .filter(|r| r != "GET /v1/openapi.json")
        // The dashboard's static files are not API routes (swell_server::dashboard).
        .filter(|r| r.contains(" /v1/"))
        .collect();
    assert_eq!(
        ruled, documented,
        "every documented route has a rule and vice versa"
    );

    let root = api.login("admin", ADMIN_PASSWORD, "default").await;
    let mut alpha = setup_tenant(&api, &root, "alpha").await;
    let beta = setup_tenant(&api, &root, "beta").await;

    // ---- alpha's users against beta's objects: never allowed; beta unchanged ----
    let before = dump(&api, &beta).await;
    let beta_params = [
        ("name", beta.group.as_str()),
        ("id", beta.owned.as_str()),
        ("tenant", beta.name.as_str()),
        ("user", "beta-extra"),
        ("key", "beta-key"),
        ("webhook", beta.webhook.as_str()),
    ];
    let mut foreign_checked = 0;
    for (method, template, permission) in RULES {
        if !template.contains('{') && *template != "/v1/auth/tokens" {
            continue; // no object named: the token's tenant is the only one reachable
        }
        for who in [
            Who::Anon,
            Who::Owner,
            Who::Member,
            Who::Viewer,
            Who::InstanceOwner,
        ] {
            let (path, body) = if *template == "/v1/auth/tokens" {
                let user = alpha.user(who);
                let password = if who == Who::Anon {
                    "x".into()
                } else {
                    pw(&user)
                };
                (
                    template.to_string(),
                    Some(json!({"user": user, "password": password, "tenant": "beta"})),
                )
            } else {
                let refs: Vec<(&str, &str)> = beta_params
                    .iter()
                    .filter(|(k, _)| template.contains(&format!("{{{k}}}")))
                    .copied()
                    .collect();
                let body = match method.as_str() {
                    "PUT" if template.ends_with("/password") => {
                        Some(json!({"password": "hijacked!!"}))
                    }
                    "PUT" if template.contains("/users/") => Some(json!({"role": "owner"})),
                    "PUT" if *template == "/v1/groups/{name}" => Some(sleepers(&beta.group, 3)),
                    "PUT" if template.ends_with("desired_capacity") => {
                        Some(json!({"desired_capacity": 3}))
                    }
                    "PUT" if *template == "/v1/tenants/{tenant}" => {
                        Some(json!({"description": "hijacked"}))
                    }
                    "POST" if template.ends_with("/alerts") => Some(alert_payload()),
                    "POST" if template.ends_with("/metrics") => Some(json!({"samples": [
                        {"metric": "cpu", "value": 99.0, "instance_id": beta.owned},
                    ]})),
                    _ => None,
                };
                (fill(template, &refs), body)
            };
            let a = api
                .call(alpha.token(who), method.clone(), &path, body.as_ref())
                .await;
            let code = a.status.as_u16();
            let expect: &[u16] = if who == Who::Anon {
                &[401]
            } else if allowed(*permission, who)
                && !matches!(
                    (permission, who),
                    (Permission::SelfOrAdmin | Permission::Public, _)
                        | (Permission::OwnInstance, Who::InstanceOwner)
                )
            {
                &[404]
            } else {
                &[401, 403, 404]
            };
            assert!(
                expect.contains(&code),
                "{who:?} of alpha: {method} {path} on beta's objects answered {code}, expected {expect:?}: {:?}",
                a.body
            );
            foreign_checked += 1;
        }
    }
    assert!(foreign_checked > 50);
    let after = dump(&api, &beta).await;
    assert_eq!(before, after, "beta's state changed under alpha's calls");

    // ---- every role on its own tenant ----
    let mut fresh = 0;
    let mut checked = 0;
    for (method, template, permission) in RULES {
        for who in ALL {
            fresh += 1;
            let call = own_call(&api, &alpha, method, template, who, fresh).await;
            // Calls that end the caller's token use a second token of the caller.
            let ends_token =
                *template == "/v1/auth/tokens/current" || template.ends_with("/password");
            let token = if ends_token && who != Who::Anon {
                let user = alpha.user(who);
                let password = if who == Who::Admin {
                    ADMIN_PASSWORD.to_string()
                } else {
                    pw(&user)
                };
                Some(api.login(&user, &password, "alpha").await)
            } else {
                alpha.token(who).map(str::to_string)
            };
            let a = api
                .call(
                    token.as_deref(),
                    method.clone(),
                    &call.path,
                    call.body.as_ref(),
                )
                .await;
            let code = a.status.as_u16();
            let ok = allowed(*permission, who);
            if *template == "/v1/auth/tokens" && who == Who::Anon {
                assert_eq!(code, 401, "a wrong password: {a:?}");
            } else if ok {
                assert!(
                    a.status.is_success(),
                    "{who:?}: {method} {} must be allowed ({permission:?}), got {code}: {:?}",
                    call.path,
                    a.body
                );
            } else {
                let want = if who == Who::Anon { 401 } else { 403 };
                assert_eq!(
                    code, want,
                    "{who:?}: {method} {} must be refused ({permission:?}): {:?}",
                    call.path, a.body
                );
            }
            if template.ends_with("/password") && ok {
                // Every token of the user was revoked: log in again.
                let user = alpha.user(who);
                let old = alpha.token(who).unwrap().to_string();
                let stale = api
                    .call(Some(&old), Method::GET, "/v1/auth/whoami", None)
                    .await;
                assert_eq!(
                    stale.status, 401,
                    "{who:?}'s old token outlived the password change"
                );
                let password = if who == Who::Admin {
                    ADMIN_PASSWORD.to_string()
                } else {
                    pw(&user)
                };
                let token = api.login(&user, &password, "alpha").await;
                alpha.tokens.insert(who, token);
            }
            checked += 1;
        }
    }
    assert_eq!(checked, RULES.len() * ALL.len());

    // A viewer can neither suspend the group nor protect an instance: nothing changes.
    let viewer = alpha.token(Who::Viewer).unwrap();
    for path in [
        format!("/v1/groups/{}/suspend", alpha.group),
        format!(
            "/v1/groups/{}/instances/{}/protect",
            alpha.group, alpha.owned
        ),
    ] {
        let a = api.call(Some(viewer), Method::POST, &path, None).await;
        assert_eq!(a.status, 403, "{path}: {a:?}");
    }
    let g = api
        .ok(
            viewer,
            Method::GET,
            &format!("/v1/groups/{}", alpha.group),
            None,
        )
        .await;
    assert_eq!(g["suspended"], false, "{g}");
    let list = api
        .ok(
            viewer,
            Method::GET,
            &format!("/v1/groups/{}/instances", alpha.group),
            None,
        )
        .await;
    assert!(
        list["instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["protected"] == false),
        "{list}"
    );

    // The instance owner sees and acts on only their instance.
    let io = alpha.token(Who::InstanceOwner).unwrap();
    let list = api
        .ok(
            io,
            Method::GET,
            &format!("/v1/groups/{}/instances", alpha.group),
            None,
        )
        .await;
    let ids: Vec<&str> = list["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![alpha.owned.as_str()]);
    let other = api
        .call(
            Some(io),
            Method::POST,
            &format!("/v1/groups/{}/instances/{}/pause", alpha.group, alpha.other),
            None,
        )
        .await;
    assert_eq!(other.status, 403, "{other:?}");
    // Their instance's metric history, not another's.
    for (id, want) in [(&alpha.owned, 200), (&alpha.other, 403)] {
        let a = api
            .call(
                Some(io),
                Method::GET,
                &format!("/v1/groups/{}/instances/{id}/metrics", alpha.group),
                None,
            )
            .await;
        assert_eq!(a.status, want, "{id}: {a:?}");
    }

    // The audit log recorded the mutating calls with who, where from and the result.
    let audit = api
        .ok(
            alpha.token(Who::Owner).unwrap(),
            Method::GET,
            "/v1/audit",
            None,
        )
        .await;
    let entries = audit["entries"].as_array().unwrap();
    assert!(entries.iter().any(|e| {
        e["action"] == "POST /v1/groups"
            && e["user"] == "alpha-member"
            && e["result"] == 201
            && e["source"]
                .as_str()
                .is_some_and(|s| s.starts_with("127.0.0.1"))
    }));
    assert!(
        entries
            .iter()
            .any(|e| e["user"] == "alpha-viewer" && e["result"] == 403)
    );
    assert!(entries.iter().all(|e| e["tenant"] == "alpha"));
    assert!(
        entries
            .iter()
            .all(|e| e["action"].as_str().unwrap().split(' ').next() != Some("GET"))
    );
    let csv = api
        .call(
            alpha.token(Who::Owner),
            Method::GET,
            "/v1/audit?format=csv",
            None,
        )
        .await;
    let text = csv.body.as_str().unwrap().to_string();
    assert!(text.starts_with("id,at,user,tenant,action,target,source,result\n"));
    assert_eq!(text.lines().count(), entries.len() + 1);

    server.shutdown().await;
}

/// A tenant with groups is kept unless forced; forced, its groups scale to zero (their
/// processes stop), its credentials stop working, and then it is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_tenant_with_groups_needs_force() {
    let dir = tempfile::tempdir().unwrap();
    let data = std::fs::canonicalize(dir.path()).unwrap();
    let _cleanup = Cleanup(data.clone());
    let server = start(&data).await;
    let api = Api {
        url: format!("http://{}", server.addr()),
        http: reqwest::Client::new(),
    };
    let root = api.login("admin", ADMIN_PASSWORD, "default").await;
    let t = setup_tenant(&api, &root, "doomed").await;
    let owner = t.token(Who::Owner).unwrap().to_string();

    let refused = api
        .call(Some(&root), Method::DELETE, "/v1/tenants/doomed", None)
        .await;
    assert_eq!(refused.status, 409, "{refused:?}");
    assert!(refused.body["detail"].as_str().unwrap().contains("force"));
    assert_eq!(
        running(&api, &owner, &t.group, 2).await.len(),
        2,
        "nothing changed"
    );

    let forced = api
        .call(
            Some(&root),
            Method::DELETE,
            "/v1/tenants/doomed?force=true",
            None,
        )
        .await;
    assert_eq!(forced.status, 202, "{forced:?}");
    assert_eq!(forced.body["deleting"], true);
    let stale = api
        .call(Some(&owner), Method::GET, "/v1/groups", None)
        .await;
    assert_eq!(stale.status, 401, "a deleting tenant's tokens stop at once");
    let mut gone = false;
    for _ in 0..400 {
        let a = api
            .call(Some(&root), Method::GET, "/v1/tenants/doomed", None)
            .await;
        if a.status == 404 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the tenant was never removed");
    let owner_tag = format!("SWELL_OWNER={}", data.display());
    let tagged = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("environ"))
                .unwrap_or_default()
                .split(|b| *b == 0)
                .any(|v| v == owner_tag.as_bytes())
        })
        .count();
    assert_eq!(tagged, 0, "the tenant's instances were stopped");
    let login = api
        .call(
            None,
            Method::POST,
            "/v1/auth/tokens",
            Some(&json!({"user": "doomed-owner", "password": pw("doomed-owner"), "tenant": "doomed"})),
        )
        .await;
    assert_eq!(login.status, 401);
    server.shutdown().await;
}
