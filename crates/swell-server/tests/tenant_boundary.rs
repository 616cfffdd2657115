//! The hostile-tenant suite's grant rows (issue 15), over real HTTP against an
//! in-process server on a real SQLite file: as `member` and `owner` of tenant `bee`,
//! which an admin granted only some providers, listen ranges and images, every field of
//! a group document that names a host resource is refused with the field named and
//! nothing stored, or confined to what `bee` was granted. Never another tenant's port.

use serde_json::{Value, json};
use std::path::Path;
use swell_server::{Server, ServerConfig};

const ADMIN_PASSWORD: &str = "boundary-test-admin";

async fn start(dir: &Path) -> Server {
    // The default configuration: the interval floor is swell serve's 1 s.
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

struct Api {
    url: String,
    http: reqwest::Client,
}

impl Api {
    async fn call(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let bytes = r.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn ok(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let (status, v) = self.call(token, method.clone(), path, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {v}"
        );
        v
    }

    async fn login(&self, user: &str, password: &str, tenant: &str) -> String {
        let r = self
            .http
            .post(format!("{}/v1/auth/tokens", self.url))
            .json(&json!({"user": user, "password": password, "tenant": tenant}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        let v: Value = r.json().await.unwrap();
        v["token"].as_str().unwrap().to_string()
    }
}

/// A group of `provider` that never scales, with 1 s intervals (the floor).
fn group(name: &str, provider: &str) -> Value {
    json!({
        "name": name,
        "provider": provider,
        "template": {"command": ["sleep", "1000"], "image": "acme/web:1"},
        "min": 0, "max": 2, "desired_capacity": 0,
        "evaluation_interval": "1s", "metrics_interval": "1s",
        "policies": [{"type": "threshold", "scale_out_above": 1000}]
    })
}

fn with_listen(mut g: Value, listen: &str) -> Value {
    g["load_balancer"] = json!({"listen": listen});
    g
}

/// A free loopback port with the next `n` ports probably free too.
fn free_base(n: u16) -> u16 {
    for _ in 0..50 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = l.local_addr().unwrap().port();
        drop(l);
        if base < 65535 - n
            && (base..=base + n).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        {
            return base;
        }
    }
    panic!("no free port range");
}

/// Asserts a refusal: the status, `application/problem+json` with the field.
fn refused(answer: &(u16, Value), status: u16, field: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["field"], field, "{}", answer.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_uses_only_what_it_was_granted() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let api = Api {
        url: format!("http://{}", server.addr()),
        http: reqwest::Client::new(),
    };
    let admin = api.login("admin", ADMIN_PASSWORD, "default").await;
    use reqwest::Method as M;

    // The bootstrap tenant has the bootstrap grants; a new tenant nothing but what the
    // admin gives it, and the new-tenant default quota.
    let default = api.ok(&admin, M::GET, "/v1/tenants/default", None).await;
    assert_eq!(default["providers"], json!(["process"]));
    assert_eq!(default["listen"], json!(["127.0.0.1:1024-65535"]));
    let plain = api
        .ok(
            &admin,
            M::POST,
            "/v1/tenants",
            Some(json!({"name": "plain"})),
        )
        .await;
    assert_eq!(plain["providers"], json!([]));
    assert_eq!(plain["listen"], json!([]));
    assert_eq!(plain["images"], json!([]));
    assert_eq!(plain["quota"]["max_groups"], 10);
    assert_eq!(plain["quota"]["max_instances"], 20);

    // Bad grants are refused whole, naming the entry.
    for (body, field) in [
        (
            json!({"name": "x1", "providers": ["process", "xen"]}),
            "providers[1]",
        ),
        (
            json!({"name": "x2", "listen": ["127.0.0.1:80", "127.0.0.1:70000"]}),
            "listen[1]",
        ),
        (
            json!({"name": "x3", "listen": ["localhost:8080"]}),
            "listen[0]",
        ),
        (json!({"name": "x4", "images": ["acme/[a-z]"]}), "images[0]"),
    ] {
        refused(
            &api.call(&admin, M::POST, "/v1/tenants", Some(body)).await,
            400,
            field,
        );
    }

    // Tenant A (`default`) holds port `p`; `bee` is granted a range that includes it,
    // and the wildcard address on it (an admin's mistake the 409 still covers).
    let p = free_base(20);
    let (range, outside) = (format!("127.0.0.1:{p}-{}", p + 19), p + 20);
    api.ok(
        &admin,
        M::POST,
        "/v1/groups",
        Some(with_listen(
            group("a-web", "process"),
            &format!("127.0.0.1:{p}"),
        )),
    )
    .await;
    api.ok(
        &admin,
        M::POST,
        "/v1/tenants",
        Some(json!({
            "name": "bee",
            "providers": ["docker"],
            "listen": [range, format!("0.0.0.0:{p}")],
            "images": ["acme/*"],
            "quota": {"max_groups": 2},
        })),
    )
    .await;
    let mut tokens = Vec::new();
    for role in ["member", "owner"] {
        let user = format!("bee-{role}");
        let pw = format!("{user}-password-42");
        api.ok(
            &admin,
            M::POST,
            "/v1/users",
            Some(json!({"name": user, "password": pw})),
        )
        .await;
        api.ok(
            &admin,
            M::PUT,
            &format!("/v1/tenants/bee/users/{user}"),
            Some(json!({"role": role})),
        )
        .await;
        tokens.push(api.login(&user, &pw, "bee").await);
    }
    let (member, owner) = (tokens[0].clone(), tokens[1].clone());

    // Only an admin grants: the tenant's owner cannot grant itself more.
    let (st, _) = api
        .call(
            &owner,
            M::PUT,
            "/v1/tenants/bee",
            Some(json!({"providers": ["process"]})),
        )
        .await;
    assert_eq!(st, 403);

    let groups = |t: String| {
        let api = &api;
        async move { api.ok(&t, M::GET, "/v1/groups", None).await }
    };
    let before = groups(owner.clone()).await;
    for token in [&member, &owner] {
        // An ungranted provider: `process` runs commands on the host.
        refused(
            &api.call(token, M::POST, "/v1/groups", Some(group("p", "process")))
                .await,
            403,
            "provider",
        );
        let mut g = group("f", "docker");
        g["fallback_providers"] = json!(["process"]);
        refused(
            &api.call(token, M::POST, "/v1/groups", Some(g)).await,
            403,
            "fallback_providers[0]",
        );
        // An image outside the tenant's patterns (another tenant's private image).
        let mut g = group("i", "docker");
        g["template"]["image"] = json!("other-tenant/private:latest");
        let answer = api.call(token, M::POST, "/v1/groups", Some(g)).await;
        refused(&answer, 403, "template.image");
        assert_eq!(answer.1["title"], "Not granted");
    }
    assert_eq!(groups(owner.clone()).await, before, "nothing stored");

    // Now `bee` may run processes; listen addresses are its ranges only.
    api.ok(
        &admin,
        M::PUT,
        "/v1/tenants/bee",
        Some(json!({"providers": ["docker", "process"]})),
    )
    .await;
    for (listen, status) in [
        (format!("127.0.0.1:{outside}"), 403),
        (format!("0.0.0.0:{}", p + 1), 403),
        ("127.0.0.2:0".to_string(), 403),
        (format!("[::1]:{}", p + 1), 403),
    ] {
        let answer = api
            .call(
                &member,
                M::POST,
                "/v1/groups",
                Some(with_listen(group("l", "process"), &listen)),
            )
            .await;
        refused(&answer, status, "load_balancer.listen");
    }
    // Tenant A's address, and the wildcard address on its port: 409, naming neither A
    // nor its group.
    for listen in [format!("127.0.0.1:{p}"), format!("0.0.0.0:{p}")] {
        let answer = api
            .call(
                &member,
                M::POST,
                "/v1/groups",
                Some(with_listen(group("l", "process"), &listen)),
            )
            .await;
        refused(&answer, 409, "load_balancer.listen");
        let text = answer.1.to_string();
        assert!(
            !text.contains("default") && !text.contains("a-web"),
            "{text}"
        );
    }
    assert_eq!(groups(owner.clone()).await, before, "nothing stored");
    // A's listener is still A's alone: nothing else was bound on its port.
    assert!(std::net::TcpListener::bind(("127.0.0.1", p)).is_err());

    // `:0` picks a free port inside the range (not A's), stored concretely; applying the
    // same document again keeps it.
    let created = api
        .ok(
            &owner,
            M::POST,
            "/v1/groups",
            Some(with_listen(group("web", "process"), "127.0.0.1:0")),
        )
        .await;
    let listen = created["spec"]["load_balancer"]["listen"]
        .as_str()
        .unwrap()
        .to_string();
    let port: u16 = listen.rsplit_once(':').unwrap().1.parse().unwrap();
    assert!(port > p && port < p + 20, "{listen} in {p}..{}", p + 19);
    assert_eq!(created["load_balancer"], listen);
    let again = api
        .ok(
            &owner,
            M::PUT,
            "/v1/groups/web",
            Some(with_listen(group("web", "process"), "127.0.0.1:0")),
        )
        .await;
    assert_eq!(again["spec"]["load_balancer"]["listen"], listen);
    // An update is held to the same rules: the stored address stays.
    let answer = api
        .call(
            &owner,
            M::PUT,
            "/v1/groups/web",
            Some(with_listen(
                group("web", "process"),
                &format!("127.0.0.1:{p}"),
            )),
        )
        .await;
    refused(&answer, 409, "load_balancer.listen");
    let mut fast = with_listen(group("web", "process"), &listen);
    fast["evaluation_interval"] = json!("200ms");
    refused(
        &api.call(&owner, M::PUT, "/v1/groups/web", Some(fast)).await,
        400,
        "evaluation_interval",
    );
    let stored = api.ok(&owner, M::GET, "/v1/groups/web", None).await;
    assert_eq!(stored["spec"]["load_balancer"]["listen"], listen);
    assert_eq!(stored["spec"]["evaluation_interval"], "1s");

    // max_groups = 2: the third group is refused, naming the limit.
    api.ok(
        &member,
        M::POST,
        "/v1/groups",
        Some(group("second", "process")),
    )
    .await;
    let answer = api
        .call(
            &member,
            M::POST,
            "/v1/groups",
            Some(group("third", "process")),
        )
        .await;
    refused(&answer, 403, "name");
    assert!(
        answer.1["detail"].as_str().unwrap().contains("max_groups"),
        "{}",
        answer.1
    );

    // Interval floors (1 s here, the default), each named.
    let mut g = group("slow", "process");
    g["metrics_interval"] = json!("500ms");
    refused(
        &api.call(&admin, M::POST, "/v1/groups", Some(g)).await,
        400,
        "metrics_interval",
    );
    let mut g = group("slow", "process");
    g["evaluation_interval"] = json!("999ms");
    refused(
        &api.call(&admin, M::POST, "/v1/groups", Some(g)).await,
        400,
        "evaluation_interval",
    );
    let mut g = with_listen(group("slow", "process"), "127.0.0.1:0");
    g["load_balancer"]["health_check"] = json!({"interval": "100ms"});
    refused(
        &api.call(&admin, M::POST, "/v1/groups", Some(g)).await,
        400,
        "load_balancer.health_check.interval",
    );

    // `?limit=` is capped on the listing routes.
    refused(
        &api.call(&owner, M::GET, "/v1/groups/web/events?limit=1000000", None)
            .await,
        400,
        "limit",
    );
    refused(
        &api.call(&owner, M::GET, "/v1/audit?limit=1000000", None)
            .await,
        400,
        "limit",
    );
    api.ok(&owner, M::GET, "/v1/groups/web/events?limit=10000", None)
        .await;

    // What the tenant shows: its grants, as the admin set them.
    let bee = api.ok(&owner, M::GET, "/v1/tenants/bee", None).await;
    assert_eq!(bee["providers"], json!(["docker", "process"]));
    assert_eq!(bee["images"], json!(["acme/*"]));
    assert_eq!(bee["effective_quota"]["max_groups"], 2);
    server.shutdown().await;
}
