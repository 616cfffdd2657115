//! Authentication over real HTTP with an injected clock: tokens expire and are revoked
//! (logout, password change), API keys act with their role, failed logins look alike
//! and are rate-limited, bad input names its field and changes nothing, and no password,
//! token or credential is ever stored or logged in clear.

use serde_json::{Value, json};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use swell_core::{TenantId, Timestamp};
use swell_server::clock::Clock;
use swell_server::controller::{Controller, ControllerOptions, Providers};
use swell_server::secrets::SecretKey;
use swell_server::service::Service;
use swell_store::{SqliteStore, Store};

const ADMIN: &str = "tokens-admin-password";
const HOUR_MS: i64 = 3600 * 1000;

/// A clock the test moves by hand.
struct Manual(AtomicI64);

impl Clock for Manual {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.0.load(Ordering::SeqCst))
    }
}

impl Manual {
    fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

/// Every log line of this test binary, at every level.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || Sink(sink.clone()))
            .try_init();
        buf
    })
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Env {
    url: String,
    http: reqwest::Client,
    clock: Arc<Manual>,
    service: Arc<Service>,
}

async fn serve(dir: &Path) -> Env {
    logs();
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
    let service = Arc::new(Service::new(store, controller, clock.clone()).with_secret_key(key));
    assert_eq!(service.bootstrap(Some(ADMIN)).await.unwrap(), None);
    let app = swell_server::http::router(service.clone())
        .into_make_service_with_connect_info::<SocketAddr>();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Env {
        url,
        http: reqwest::Client::new(),
        clock,
        service,
    }
}

impl Env {
    async fn call(
        &self,
        token: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
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

    async fn login_answer(&self, user: &str, password: &str, tenant: &str) -> (u16, Value) {
        self.call(
            None,
            reqwest::Method::POST,
            "/v1/auth/tokens",
            Some(json!({"user": user, "password": password, "tenant": tenant})),
        )
        .await
    }

    async fn login(&self, user: &str, password: &str) -> String {
        let (status, body) = self.login_answer(user, password, "default").await;
        assert_eq!(status, 201, "{body}");
        body["token"].as_str().unwrap().to_string()
    }

    async fn whoami(&self, token: &str) -> (u16, Value) {
        self.call(Some(token), reqwest::Method::GET, "/v1/auth/whoami", None)
            .await
    }

    async fn ok(&self, token: &str, method: reqwest::Method, path: &str, body: Value) -> Value {
        let (status, v) = self.call(Some(token), method, path, Some(body)).await;
        assert!((200..300).contains(&status), "{path}: {status} {v}");
        v
    }
}

#[tokio::test]
async fn tokens_expire_and_are_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let e = serve(dir.path()).await;
    let t1 = e.login("admin", ADMIN).await;
    let (status, who) = e.whoami(&t1).await;
    assert_eq!((status, who["admin"].clone()), (200, json!(true)));

    // Expiry: 12 h by default, on the injected clock.
    e.clock.advance(12 * HOUR_MS - 1);
    assert_eq!(e.whoami(&t1).await.0, 200);
    e.clock.advance(1);
    let (status, body) = e.whoami(&t1).await;
    assert_eq!(status, 401);
    assert!(
        body["detail"].as_str().unwrap().contains("expired"),
        "{body}"
    );

    // Logout revokes that token only.
    let t2 = e.login("admin", ADMIN).await;
    let t3 = e.login("admin", ADMIN).await;
    let (status, _) = e
        .call(
            Some(&t2),
            reqwest::Method::DELETE,
            "/v1/auth/tokens/current",
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, body) = e.whoami(&t2).await;
    assert_eq!(status, 401);
    assert!(
        body["detail"].as_str().unwrap().contains("revoked"),
        "{body}"
    );
    assert_eq!(e.whoami(&t3).await.0, 200);

    // A password change revokes every token of the user.
    e.ok(
        &t3,
        reqwest::Method::POST,
        "/v1/users",
        json!({"name": "ann", "password": "ann-old-password"}),
    )
    .await;
    e.ok(
        &t3,
        reqwest::Method::PUT,
        "/v1/tenants/default/users/ann",
        json!({"role": "viewer"}),
    )
    .await;
    let a1 = e.login("ann", "ann-old-password").await;
    let a2 = e.login("ann", "ann-old-password").await;
    // Changing one's own password takes the current one: without it, or with a wrong
    // one, nothing changes and the problem names the field.
    for (body, rule) in [
        (
            json!({"password": "ann-stolen-password"}),
            "required when you change your own password",
        ),
        (
            json!({"password": "ann-stolen-password", "current_password": "not-it-at-all"}),
            "does not match your current password",
        ),
    ] {
        let (status, problem) = e
            .call(
                Some(&a1),
                reqwest::Method::PUT,
                "/v1/users/ann/password",
                Some(body),
            )
            .await;
        assert_eq!(status, 400, "{problem}");
        assert_eq!(problem["field"], "current_password");
        assert!(
            problem["detail"].as_str().unwrap_or("").contains(rule),
            "{problem}"
        );
    }
    assert_eq!(
        e.whoami(&a1).await.0,
        200,
        "a refused change revokes nothing"
    );
    e.ok(
        &t3,
        reqwest::Method::PUT,
        "/v1/users/ann/password",
        json!({"password": "ann-new-password"}),
    )
    .await;
    assert_eq!(e.whoami(&a1).await.0, 401);
    assert_eq!(e.whoami(&a2).await.0, 401);
    assert_eq!(e.whoami(&t3).await.0, 200, "other users keep their tokens");
    assert_eq!(
        e.login_answer("ann", "ann-old-password", "default").await.0,
        401
    );
    let a3 = e.login("ann", "ann-new-password").await;
    assert_eq!(e.whoami(&a3).await.1["role"], "viewer");

    // A role taken away works at once, even with a live token.
    let (status, _) = e
        .call(
            Some(&t3),
            reqwest::Method::DELETE,
            "/v1/tenants/default/users/ann",
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = e
        .call(Some(&a3), reqwest::Method::GET, "/v1/groups", None)
        .await;
    assert_eq!(status, 403);

    // No token, a malformed one, an unknown one.
    let (status, _) = e.call(None, reqwest::Method::GET, "/v1/groups", None).await;
    assert_eq!(status, 401);
    for bad in ["swt_nope", "swk_nope", "x"] {
        assert_eq!(e.whoami(bad).await.0, 401, "{bad}");
    }

    // API keys act in their tenant with their role, until deleted.
    let created = e
        .ok(
            &t3,
            reqwest::Method::POST,
            "/v1/api-keys",
            json!({"name": "ci", "role": "viewer"}),
        )
        .await;
    let key = created["key"].as_str().unwrap().to_string();
    let (status, who) = e.whoami(&key).await;
    assert_eq!((status, who["principal"].clone()), (200, json!("key:ci")));
    assert_eq!(
        e.call(Some(&key), reqwest::Method::GET, "/v1/groups", None)
            .await
            .0,
        200
    );
    let (status, _) = e
        .call(
            Some(&key),
            reqwest::Method::POST,
            "/v1/groups",
            Some(json!({"name": "web", "template": {"command": ["sleep", "1"]}, "max": 1})),
        )
        .await;
    assert_eq!(status, 403);
    let listed = e
        .call(Some(&t3), reqwest::Method::GET, "/v1/api-keys", None)
        .await
        .1;
    assert!(
        !listed.to_string().contains(&key),
        "keys are never shown again"
    );
    let (status, _) = e
        .call(Some(&t3), reqwest::Method::DELETE, "/v1/api-keys/ci", None)
        .await;
    assert_eq!(status, 204);
    assert_eq!(e.whoami(&key).await.0, 401);
}

#[tokio::test]
async fn failed_logins_look_alike_and_are_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    let e = serve(dir.path()).await;
    let admin = e.login("admin", ADMIN).await;
    e.ok(
        &admin,
        reqwest::Method::POST,
        "/v1/users",
        json!({"name": "bob", "password": "bob-password"}),
    )
    .await;
    e.ok(
        &admin,
        reqwest::Method::PUT,
        "/v1/tenants/default/users/bob",
        json!({"role": "member"}),
    )
    .await;
    let unknown = e.login_answer("nobody", "whatever-pw", "default").await;
    let wrong_pw = e.login_answer("bob", "not-his-password", "default").await;
    let wrong_tenant = e.login_answer("bob", "bob-password", "elsewhere").await;
    assert_eq!(unknown.0, 401);
    assert_eq!(
        unknown, wrong_pw,
        "an unknown user looks like a wrong password"
    );
    assert_eq!(unknown, wrong_tenant);

    // Per user: 10 attempts, then 429 until the bucket refills (one per 30 s).
    // Two attempts above, eight here: ten.
    for _ in 0..8 {
        assert_eq!(e.login_answer("bob", "nope-nope", "default").await.0, 401);
    }
    let (status, body) = e.login_answer("bob", "bob-password", "default").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(
        e.login_answer("admin", ADMIN, "default").await.0,
        201,
        "other users are not limited"
    );
    e.clock.advance(30_000);
    assert_eq!(
        e.login_answer("bob", "bob-password", "default").await.0,
        201
    );
    assert_eq!(
        e.login_answer("bob", "bob-password", "default").await.0,
        429
    );
    // Unknown users have buckets too (their limit reveals nothing either); nobody's
    // refilled to the full ten while the clock moved.
    for _ in 0..10 {
        e.login_answer("nobody", "x-x-x-x-x", "default").await;
    }
    assert_eq!(
        e.login_answer("nobody", "x-x-x-x-x", "default").await.0,
        429
    );
}

#[tokio::test]
async fn bad_input_names_the_field_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let e = serve(dir.path()).await;
    let admin = e.login("admin", ADMIN).await;
    e.ok(
        &admin,
        reqwest::Method::POST,
        "/v1/tenants",
        json!({"name": "acme"}),
    )
    .await;
    let state = |env: &Env, token: String| {
        let env_url = env.url.clone();
        let http = env.http.clone();
        async move {
            let mut out = String::new();
            for p in [
                "/v1/tenants",
                "/v1/users",
                "/v1/api-keys",
                "/v1/tenants/acme/users",
                "/v1/quota/default",
            ] {
                let v: Value = http
                    .get(format!("{env_url}{p}"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                out.push_str(&v.to_string());
            }
            out
        }
    };
    let before = state(&e, admin.clone()).await;
    let long = "x".repeat(201);
    let cases: Vec<(reqwest::Method, &str, Value, u16, &str)> = vec![
        (
            reqwest::Method::POST,
            "/v1/tenants",
            json!({"name": ""}),
            400,
            "name",
        ),
        (
            reqwest::Method::POST,
            "/v1/tenants",
            json!({"name": "Bad Name"}),
            400,
            "name",
        ),
        (
            reqwest::Method::POST,
            "/v1/tenants",
            json!({"name": "ok", "display_name": long}),
            400,
            "display_name",
        ),
        (
            reqwest::Method::POST,
            "/v1/tenants",
            json!({"name": "ok", "quota": {"max_instances": -1}}),
            400,
            "quota.max_instances",
        ),
        (
            reqwest::Method::POST,
            "/v1/tenants",
            json!({"name": "acme"}),
            409,
            "",
        ),
        (
            reqwest::Method::PUT,
            "/v1/tenants/acme",
            json!({"description": "d".repeat(2001)}),
            400,
            "description",
        ),
        (
            reqwest::Method::POST,
            "/v1/users",
            json!({"name": "", "password": "long enough"}),
            400,
            "name",
        ),
        (
            reqwest::Method::POST,
            "/v1/users",
            json!({"name": "x".repeat(65), "password": "long enough"}),
            400,
            "name",
        ),
        (
            reqwest::Method::POST,
            "/v1/users",
            json!({"name": "carl", "password": "short"}),
            400,
            "password",
        ),
        (
            reqwest::Method::POST,
            "/v1/users",
            json!({"name": "admin", "password": "long enough"}),
            409,
            "",
        ),
        (
            reqwest::Method::PUT,
            "/v1/tenants/acme/users/admin",
            json!({"role": "boss"}),
            400,
            "role",
        ),
        (
            reqwest::Method::PUT,
            "/v1/tenants/acme/users/admin",
            json!({"rolle": "owner"}),
            400,
            "rolle",
        ),
        (
            reqwest::Method::POST,
            "/v1/api-keys",
            json!({"name": "ci", "role": "superuser"}),
            400,
            "role",
        ),
        (
            reqwest::Method::POST,
            "/v1/api-keys",
            json!({"name": "", "role": "viewer"}),
            400,
            "name",
        ),
        (
            reqwest::Method::PUT,
            "/v1/quota/default",
            json!({"max_vcpus": "many"}),
            400,
            "max_vcpus",
        ),
        (
            reqwest::Method::GET,
            "/v1/audit?format=xml",
            Value::Null,
            400,
            "format",
        ),
    ];
    for (method, path, body, want, field) in cases {
        let body = (!body.is_null()).then_some(body);
        let (status, problem) = e
            .call(Some(&admin), method.clone(), path, body.clone())
            .await;
        assert_eq!(status, want, "{method} {path} {body:?}: {problem}");
        if want == 400 {
            assert_eq!(problem["field"], field, "{method} {path}: {problem}");
        } else {
            assert!(
                problem["detail"]
                    .as_str()
                    .unwrap()
                    .contains("already exists"),
                "{problem}"
            );
        }
    }
    let (status, problem) = e
        .call(
            None,
            reqwest::Method::POST,
            "/v1/auth/tokens",
            Some(json!({"user": "admin", "password": ADMIN})),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        problem["rule"].as_str().unwrap().contains("tenant"),
        "{problem}"
    );
    assert_eq!(
        state(&e, admin.clone()).await,
        before,
        "bad input changed something"
    );
}

fn file_bytes(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.file_name().to_string_lossy().starts_with("swell.db") {
            all.extend(std::fs::read(entry.path()).unwrap());
        }
    }
    all
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn no_password_token_or_credential_in_clear_in_the_store_or_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let e = serve(dir.path()).await;
    let password = "Sup3r-Secret-Passw0rd-4711";
    let credential = "OPENSTACK-PLAINTEXT-CREDENTIAL-987";
    let admin = e.login("admin", ADMIN).await;
    e.ok(
        &admin,
        reqwest::Method::POST,
        "/v1/users",
        json!({"name": "dora", "password": password}),
    )
    .await;
    e.ok(
        &admin,
        reqwest::Method::PUT,
        "/v1/tenants/default/users/dora",
        json!({"role": "owner"}),
    )
    .await;
    let token = e.login("dora", password).await;
    e.login_answer("dora", "Sup3r-Wrong-Passw0rd-4711", "default")
        .await;
    let key = e
        .ok(
            &token,
            reqwest::Method::POST,
            "/v1/api-keys",
            json!({"name": "ci", "role": "viewer"}),
        )
        .await["key"]
        .as_str()
        .unwrap()
        .to_string();
    e.ok(
        &admin,
        reqwest::Method::PUT,
        "/v1/users/dora/password",
        json!({"password": "Another-Secret-Passw0rd"}),
    )
    .await;
    let tenant = TenantId::default_tenant();
    e.service
        .put_provider_credential(&tenant, "openstack", credential.as_bytes())
        .await
        .unwrap();
    assert_eq!(
        e.service
            .provider_credential(&tenant, "openstack")
            .await
            .unwrap(),
        Some(credential.as_bytes().to_vec())
    );
    let (_, user) = e
        .call(Some(&admin), reqwest::Method::GET, "/v1/users/dora", None)
        .await;
    assert!(!user.to_string().contains("argon2"), "{user}");

    let db = file_bytes(dir.path());
    assert!(
        contains(&db, "$argon2id$"),
        "the hash is there (the grep works)"
    );
    let logs = logs().lock().unwrap().clone();
    assert!(contains(&logs, "swell"), "logs were captured");
    for secret in [
        password,
        "Another-Secret-Passw0rd",
        "Sup3r-Wrong-Passw0rd-4711",
        ADMIN,
        credential,
        &token,
        &key,
    ] {
        assert!(
            !contains(&db, secret),
            "`{secret}` is in the store in clear"
        );
        assert!(!contains(&logs, secret), "`{secret}` is in the logs");
    }
}
