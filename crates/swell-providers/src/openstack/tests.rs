//! The provider against a small fake cloud (axum on 127.0.0.1:0) that replays responses
//! recorded from the real fixture cloud (`tests/fixtures/openstack/*.json`, recorded by
//! `record.sh` there from `scripts/openstack/up.sh`'s OpenStack 2025.1), and checks the
//! exact requests: token reuse and renewal, 401 re-authentication, retries on 5xx and
//! 409, an ERROR server deleted and reported as no capacity, a quota 403.

use super::client::Tuning;
use super::*;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use swell_core::group::OpenStackTemplate;
use swell_core::{PauseMode, Template, TenantId};

/// A response recorded from the fixture cloud.
fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/openstack/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

#[derive(Clone)]
struct Reply {
    status: u16,
    body: String,
}

fn reply(status: u16, fixture_name: &str) -> Reply {
    Reply {
        status,
        body: fixture(fixture_name),
    }
}

fn raw(status: u16, body: &str) -> Reply {
    Reply {
        status,
        body: body.into(),
    }
}

/// One request the fake received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    token: Option<String>,
    microversion: Option<String>,
    body: String,
}

#[derive(Default)]
struct FakeState {
    base: String,
    /// (method, path with or without its query) → replies in order; the last one
    /// repeats.
    routes: Vec<(String, String, VecDeque<Reply>)>,
    seen: Vec<Seen>,
    tokens_issued: u32,
    valid_tokens: HashSet<String>,
    /// Tokens Keystone hands out are rejected by the services.
    reject_all_tokens: bool,
    /// Keystone refuses the credentials.
    refuse_auth: bool,
}

/// The fake cloud: one port, one path prefix per service.
struct Fake {
    state: Arc<Mutex<FakeState>>,
}

impl Fake {
    async fn start() -> Fake {
        let state = Arc::new(Mutex::new(FakeState::default()));
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        state.lock().unwrap().base = base;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Fake { state }
    }

    fn base(&self) -> String {
        self.state.lock().unwrap().base.clone()
    }

    fn route(&self, method: &str, path: &str, replies: Vec<Reply>) {
        self.state.lock().unwrap().routes.push((
            method.into(),
            path.into(),
            replies.into_iter().collect(),
        ));
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    fn seen_calls(&self) -> Vec<String> {
        self.seen()
            .iter()
            .map(|s| format!("{} {}", s.method, s.path))
            .collect()
    }

    fn tokens_issued(&self) -> u32 {
        self.state.lock().unwrap().tokens_issued
    }

    fn revoke_all(&self) {
        self.state.lock().unwrap().valid_tokens.clear();
    }

    /// A provider for owner `rec` (the recorded servers' owner) with no delays.
    fn provider(&self, clock: Clock) -> OpenStackProvider {
        let auth = AuthConfig::password(
            format!("{}/identity/v3", self.base()),
            "admin",
            "adminpass",
            "admin",
        );
        let mut config = OpenStackConfig::new("rec", auth);
        config.region = Some("RegionOne".into());
        let tuning = Tuning {
            backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
            poll_interval: Duration::ZERO,
            ..Tuning::default()
        };
        OpenStackProvider::with_tuning(config, clock, tuning).unwrap()
    }
}

async fn handle(
    State(state): State<Arc<Mutex<FakeState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut st = state.lock().unwrap();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let path = uri.path().to_string();
    let seen = Seen {
        method: method.to_string(),
        path: uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        token: header("x-auth-token"),
        microversion: header("openstack-api-version"),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    st.seen.push(seen.clone());
    if method == Method::POST && path == "/identity/v3/auth/tokens" {
        if st.refuse_auth {
            return (StatusCode::UNAUTHORIZED, fixture("auth-401.json")).into_response();
        }
        st.tokens_issued += 1;
        let token = format!("token-{}", st.tokens_issued);
        if !st.reject_all_tokens {
            st.valid_tokens.insert(token.clone());
        }
        // The recorded token, its catalog pointed at this fake.
        let base = st.base.clone();
        let mut text = fixture("token.json");
        for (port, prefix) in [
            ("5000", "identity"),
            ("8774", "compute"),
            ("9696", "network"),
            ("9292", "image"),
            ("9876", "lb"),
            ("8778", "placement"),
        ] {
            text = text.replace(
                &format!("http://127.0.0.1:{port}"),
                &format!("{base}/{prefix}"),
            );
        }
        return (
            StatusCode::CREATED,
            [
                ("x-subject-token", token),
                ("content-type", "application/json".into()),
            ],
            text,
        )
            .into_response();
    }
    if !seen
        .token
        .as_ref()
        .is_some_and(|t| st.valid_tokens.contains(t))
    {
        return (StatusCode::UNAUTHORIZED, fixture("auth-401.json")).into_response();
    }
    // A route with a query answers that exact query; one without, any query.
    let full = seen.path.clone();
    let exact = st
        .routes
        .iter()
        .position(|(m, p, _)| *m == method.as_str() && *p == full);
    let route = match exact {
        Some(i) => st.routes.get_mut(i),
        None => st
            .routes
            .iter_mut()
            .find(|(m, p, _)| *m == method.as_str() && *p == path),
    };
    let Some((_, _, replies)) = route else {
        return (
            StatusCode::NOT_FOUND,
            format!(r#"{{"itemNotFound": {{"code": 404, "message": "fake: no route for {method} {path}"}}}}"#),
        )
            .into_response();
    };
    let r = if replies.len() > 1 {
        replies.pop_front().unwrap_or_else(|| raw(500, "empty"))
    } else {
        replies
            .front()
            .cloned()
            .unwrap_or_else(|| raw(500, "empty"))
    };
    if r.status == CUT {
        // The headers go out, then the body fails: the client's read breaks, as when
        // the API's process dies or the network cuts mid-answer.
        let broken = futures_util::stream::once(async {
            Err::<Bytes, std::io::Error>(std::io::Error::other("the fake API went away"))
        });
        return (StatusCode::OK, axum::body::Body::from_stream(broken)).into_response();
    }
    (
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [("content-type", "application/json")],
        r.body,
    )
        .into_response()
}

/// A reply status meaning: the connection breaks during the answer.
const CUT: u16 = 0;

/// A clock the test sets.
fn settable_clock(start: SystemTime) -> (Arc<Mutex<SystemTime>>, Clock) {
    let now = Arc::new(Mutex::new(start));
    let n = now.clone();
    (now, Arc::new(move || *n.lock().unwrap()))
}

/// When the recorded token expires (an hour after it was issued).
fn expiry() -> SystemTime {
    let v: Value = serde_json::from_str(&fixture("token.json")).unwrap();
    super::auth::parse_expiry(v["token"]["expires_at"].as_str().unwrap()).unwrap()
}

fn real_clock() -> Clock {
    Arc::new(|| expiry() - Duration::from_secs(3000))
}

#[tokio::test]
async fn the_token_is_reused_and_renewed_before_it_expires() {
    let fake = Fake::start().await;
    fake.route(
        "GET",
        "/compute/v2.1/servers/detail",
        vec![reply(200, "servers-detail.json")],
    );
    let (now, clock) = settable_clock(expiry() - Duration::from_secs(3600));
    let p = fake.provider(clock);
    let listed = p.list().await.unwrap();
    assert!(listed.iter().any(|i| i.instance_id.as_str() == "web-0001"));
    *now.lock().unwrap() = expiry() - Duration::from_secs(121); // still good
    p.list().await.unwrap();
    assert_eq!(fake.tokens_issued(), 1);
    *now.lock().unwrap() = expiry() - Duration::from_secs(30); // within the 2 min margin: renewed
    p.list().await.unwrap();
    assert_eq!(fake.tokens_issued(), 2);
    let tokens: Vec<Option<String>> = fake
        .seen()
        .iter()
        .filter(|s| s.path.starts_with("/compute"))
        .map(|s| s.token.clone())
        .collect();
    assert_eq!(
        tokens,
        [Some("token-1"), Some("token-1"), Some("token-2")].map(|t| t.map(String::from))
    );
    // Every Nova call names its microversion.
    assert!(
        fake.seen()
            .iter()
            .filter(|s| s.path.starts_with("/compute"))
            .all(|s| s.microversion.as_deref() == Some("compute 2.79"))
    );
    // The token request: password auth, scoped to the project.
    let auth: Value = serde_json::from_str(&fake.seen()[0].body).unwrap();
    assert_eq!(auth["auth"]["scope"]["project"]["name"], "admin");

    // A token shorter-lived than twice the margin is renewed halfway, not every call.
    let fake = Fake::start().await;
    fake.route(
        "GET",
        "/compute/v2.1/servers/detail",
        vec![reply(200, "servers-detail.json")],
    );
    let (now, clock) = settable_clock(expiry() - Duration::from_secs(100));
    let p = fake.provider(clock);
    p.list().await.unwrap();
    *now.lock().unwrap() = expiry() - Duration::from_secs(51);
    p.list().await.unwrap();
    assert_eq!(fake.tokens_issued(), 1);
    *now.lock().unwrap() = expiry() - Duration::from_secs(49);
    p.list().await.unwrap();
    assert_eq!(fake.tokens_issued(), 2);
}

#[tokio::test]
async fn a_401_authenticates_again_once() {
    let fake = Fake::start().await;
    fake.route(
        "GET",
        "/compute/v2.1/servers/detail",
        vec![reply(200, "servers-detail.json")],
    );
    let p = fake.provider(real_clock());
    p.list().await.unwrap();
    fake.revoke_all(); // e.g. Keystone restarted or the token was revoked
    p.list().await.unwrap();
    assert_eq!(fake.tokens_issued(), 2);
    assert_eq!(
        fake.seen_calls(),
        [
            "POST /identity/v3/auth/tokens",
            "GET /compute/v2.1/servers/detail?project_id=fbd090c4a9de469684ea6e7dfe0e81b3&limit=500",
            "GET /compute/v2.1/servers/detail?project_id=fbd090c4a9de469684ea6e7dfe0e81b3&limit=500",
            "POST /identity/v3/auth/tokens",
            "GET /compute/v2.1/servers/detail?project_id=fbd090c4a9de469684ea6e7dfe0e81b3&limit=500",
        ]
    );
    // Tokens that keep being refused: one re-authentication, then a clear error.
    fake.state.lock().unwrap().reject_all_tokens = true;
    fake.revoke_all();
    let err = p.list().await.unwrap_err();
    assert!(matches!(err, ProviderError::Backend(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("nova GET /servers/detail answered 401"),
        "{err}"
    );
    assert!(err.to_string().contains("check the provider's credentials"));
    assert_eq!(fake.tokens_issued(), 3);
}

#[tokio::test]
async fn refused_credentials_and_an_unreachable_keystone_are_explained() {
    let fake = Fake::start().await;
    fake.state.lock().unwrap().refuse_auth = true;
    let err = fake.provider(real_clock()).list().await.unwrap_err();
    assert!(matches!(err, ProviderError::Backend(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "keystone POST /v3/auth/tokens: Keystone refused the credentials (user admin, project admin): The request you have made requires authentication.; check the provider's credentials"
    );

    let auth = AuthConfig::password(
        "http://127.0.0.1:9/v3", // nothing listens on the discard port
        "admin",
        "adminpass",
        "admin",
    );
    let mut config = OpenStackConfig::new("rec", auth);
    config.request_timeout = Duration::from_secs(5);
    let tuning = Tuning {
        backoff: Duration::ZERO,
        ..Tuning::default()
    };
    let p = OpenStackProvider::with_tuning(config, real_clock(), tuning).unwrap();
    let err = p.list().await.unwrap_err();
    assert!(matches!(err, ProviderError::Unavailable(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("keystone POST /v3/auth/tokens failed: could not connect"),
        "{err}"
    );
    assert!(err.to_string().contains("(after 4 tries)"), "{err}");
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff_then_succeed_or_give_up() {
    let fake = Fake::start().await;
    let html = "<html><body><h1>503 Service Unavailable</h1>No server is available to handle this request.</body></html>";
    fake.route(
        "GET",
        "/compute/v2.1/servers/detail",
        vec![
            raw(503, html),
            raw(502, "Bad Gateway"),
            reply(200, "servers-detail.json"),
        ],
    );
    let p = fake.provider(real_clock());
    assert_eq!(p.list().await.unwrap().len(), 1);
    assert_eq!(
        fake.seen_calls()
            .iter()
            .filter(|c| c.contains("servers/detail"))
            .count(),
        3
    );

    let fake = Fake::start().await;
    fake.route("GET", "/compute/v2.1/limits", vec![raw(503, html)]);
    let p = fake.provider(real_clock());
    let err = p.capacity().await.unwrap_err();
    assert!(matches!(err, ProviderError::Unavailable(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "provider unavailable: nova GET /limits answered 503: 503 Service Unavailable No server is available to handle this request. (after 4 tries); the cloud is failing or overloaded, Swell tries again later"
    );
    assert_eq!(fake.seen_calls().len(), 1 + 4);
}

/// The routes a create of `web-0002` from image `tiny`, flavor `m1.tiny` (by name),
/// network `private` goes through, recorded from the fixture cloud.
fn create_routes(fake: &Fake) {
    fake.route(
        "GET",
        "/compute/v2.1/servers/detail",
        vec![raw(200, r#"{"servers": []}"#)],
    );
    fake.route(
        "GET",
        "/image/v2/images",
        vec![reply(200, "image-list-tiny.json")],
    );
    fake.route(
        "GET",
        "/compute/v2.1/flavors/m1.tiny",
        vec![reply(404, "flavor-m1.tiny-404.json")],
    );
    fake.route(
        "GET",
        "/compute/v2.1/flavors/detail",
        vec![reply(200, "flavors-detail.json")],
    );
    fake.route(
        "GET",
        "/network/v2.0/networks",
        vec![reply(200, "network-list-private.json")],
    );
}

fn create_request() -> CreateRequest {
    CreateRequest {
        instance_id: InstanceId("web-0002".into()),
        tenant: TenantId::new("acme").unwrap(),
        group: "web".into(),
        template: Template {
            image: Some("tiny".into()),
            openstack: Some(OpenStackTemplate {
                flavor: "m1.tiny".into(),
                networks: vec!["private".into()],
                user_data: Some("#cloud-config\n".into()),
                member_port: 8080,
                ..OpenStackTemplate::default()
            }),
            ..Template::default()
        },
    }
}

#[tokio::test]
async fn an_error_server_is_deleted_and_reported_as_no_capacity() {
    let fake = Fake::start().await;
    create_routes(&fake);
    let created: Value = serde_json::from_str(&fixture("server-create-huge.json")).unwrap();
    let id = created["server"]["id"].as_str().unwrap().to_string();
    fake.route(
        "POST",
        "/compute/v2.1/servers",
        vec![reply(202, "server-create-huge.json")],
    );
    fake.route(
        "GET",
        &format!("/compute/v2.1/servers/{id}"),
        vec![
            reply(200, "server-error-novalidhost.json"),
            reply(404, "server-404.json"),
        ],
    );
    fake.route(
        "GET",
        "/network/v2.0/ports",
        vec![raw(200, r#"{"ports": []}"#)],
    );
    fake.route(
        "DELETE",
        &format!("/compute/v2.1/servers/{id}"),
        vec![raw(204, "")],
    );
    let p = fake.provider(real_clock());
    let err = p.create(&create_request()).await.unwrap_err();
    let ProviderError::NoCapacity(msg) = &err else {
        panic!("expected NoCapacity, got {err:?}");
    };
    assert!(
        msg.contains(&format!(
            "server swell-rec-huge ({id}) for instance web-0002 went to ERROR: No valid host was found.; it was deleted; no compute host has room for flavor `m1.tiny`"
        )),
        "{msg}"
    );
    let calls = fake.seen_calls();
    assert!(
        calls.contains(&format!("DELETE /compute/v2.1/servers/{id}")),
        "{calls:#?}"
    );
    // The create request: resolved ids, Swell's metadata, base64 user data.
    let post = fake
        .seen()
        .into_iter()
        .find(|s| s.method == "POST" && s.path == "/compute/v2.1/servers")
        .unwrap();
    let body: Value = serde_json::from_str(&post.body).unwrap();
    let s = &body["server"];
    assert_eq!(s["name"], "swell-acme-web-web0002");
    assert_eq!(s["imageRef"], "2403977b-4fd0-47c5-b7ab-e33e3519a258");
    assert_eq!(s["flavorRef"], "1");
    assert_eq!(
        s["networks"][0]["uuid"],
        serde_json::from_str::<Value>(&fixture("network-list-private.json")).unwrap()["networks"]
            [0]["id"]
    );
    assert_eq!(s["user_data"], "I2Nsb3VkLWNvbmZpZwo=");
    assert_eq!(
        s["metadata"],
        json!({"swell_owner": "rec", "swell_instance": "web-0002", "swell_group": "web",
               "swell_tenant": "acme", "swell_member_port": "8080", "swell_network": "private"})
    );
}

/// A server that stays in BUILD while Nova answers points at the compute service; Nova's
/// API itself failing while a server builds (its answers cut off, or 503) is reported as
/// the API's failure (a cut-off answer once asked "is nova-compute running?" too).
#[tokio::test]
async fn a_server_stuck_in_build_and_a_failing_nova_api_are_told_apart() {
    for (server_reply, want, not) in [
        (
            reply(200, "server-build.json"),
            "still BUILD after 0 s (wanted ACTIVE or PAUSED or SUSPENDED); the server was deleted — is nova-compute running?",
            "overloaded",
        ),
        (
            raw(CUT, ""),
            "check that the endpoint is reachable, Swell tries again later",
            "nova-compute",
        ),
        (
            raw(503, "Service Unavailable"),
            "answered 503: Service Unavailable (after 4 tries); the cloud is failing or overloaded",
            "nova-compute",
        ),
    ] {
        let fake = Fake::start().await;
        create_routes(&fake);
        let created: Value = serde_json::from_str(&fixture("server-create.json")).unwrap();
        let id = created["server"]["id"].as_str().unwrap().to_string();
        fake.route(
            "POST",
            "/compute/v2.1/servers",
            vec![reply(202, "server-create.json")],
        );
        fake.route(
            "GET",
            &format!("/compute/v2.1/servers/{id}"),
            vec![server_reply],
        );
        fake.route(
            "GET",
            "/network/v2.0/ports",
            vec![raw(200, r#"{"ports": []}"#)],
        );
        fake.route(
            "DELETE",
            &format!("/compute/v2.1/servers/{id}"),
            vec![raw(204, "")],
        );
        let mut p = fake.provider(real_clock());
        p.config.build_timeout = Duration::from_millis(1);
        let err = p.create(&create_request()).await.unwrap_err();
        let ProviderError::Unavailable(msg) = &err else {
            panic!("expected Unavailable, got {err:?}");
        };
        assert!(msg.contains(want), "{msg}");
        assert!(!msg.contains(not), "{msg}");
    }
}

#[tokio::test]
async fn a_quota_403_is_quota_exceeded_and_the_create_is_not_resent() {
    let fake = Fake::start().await;
    create_routes(&fake);
    fake.route(
        "POST",
        "/compute/v2.1/servers",
        vec![reply(403, "server-create-quota-403.json")],
    );
    let p = fake.provider(real_clock());
    let err = p.create(&create_request()).await.unwrap_err();
    assert!(matches!(err, ProviderError::QuotaExceeded(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "quota exceeded: nova POST /servers answered 403: Quota exceeded for instances: Requested 1, but already used 1 of 1 instances; raise the project's quota or lower the group's max"
    );
    let posts = fake
        .seen_calls()
        .into_iter()
        .filter(|c| c == "POST /compute/v2.1/servers")
        .count();
    assert_eq!(posts, 1);
}

#[tokio::test]
async fn a_lost_create_answer_is_resolved_by_metadata_not_by_a_second_post() {
    let fake = Fake::start().await;
    create_routes(&fake);
    // The POST fails with a 500 but the server was made: found by its metadata.
    fake.state.lock().unwrap().routes.remove(0);
    let mut active: Value = serde_json::from_str(&fixture("server-active.json")).unwrap();
    active["server"]["metadata"]["swell_instance"] = json!("web-0002");
    let id = active["server"]["id"].as_str().unwrap().to_string();
    let listed = json!({"servers": [active["server"].clone()]}).to_string();
    fake.route(
        "GET",
        "/compute/v2.1/servers/detail",
        vec![raw(200, r#"{"servers": []}"#), raw(200, &listed)],
    );
    fake.route(
        "POST",
        "/compute/v2.1/servers",
        vec![raw(
            500,
            r#"{"computeFault": {"code": 500, "message": "Unexpected API Error."}}"#,
        )],
    );
    fake.route(
        "GET",
        &format!("/compute/v2.1/servers/{id}"),
        vec![raw(200, &active.to_string())],
    );
    let p = fake.provider(real_clock());
    let inst = p.create(&create_request()).await.unwrap();
    assert_eq!(inst.native_id, id);
    assert_eq!(inst.address, Some("10.10.0.252:8080".parse().unwrap()));
    let posts = fake
        .seen_calls()
        .into_iter()
        .filter(|c| c == "POST /compute/v2.1/servers")
        .count();
    assert_eq!(posts, 1);
}

#[tokio::test]
async fn a_409_is_retried_then_reported_as_conflict() {
    let fake = Fake::start().await;
    let active: Value = serde_json::from_str(&fixture("server-active.json")).unwrap();
    let id = active["server"]["id"].as_str().unwrap().to_string();
    fake.route(
        "GET",
        "/compute/v2.1/servers/detail",
        vec![reply(200, "servers-detail.json")],
    );
    fake.route(
        "POST",
        &format!("/compute/v2.1/servers/{id}/action"),
        vec![reply(409, "server-unpause-409.json"), raw(202, "")],
    );
    fake.route(
        "GET",
        &format!("/compute/v2.1/servers/{id}"),
        vec![reply(200, "server-paused.json")],
    );
    let p = fake.provider(real_clock());
    p.pause(&InstanceId("web-0001".into())).await.unwrap();
    let actions: Vec<Seen> = fake
        .seen()
        .into_iter()
        .filter(|s| s.path.ends_with("/action"))
        .collect();
    assert_eq!(actions.len(), 2);
    assert_eq!(actions[1].body, r#"{"pause":null}"#);

    let fake = Fake::start().await;
    fake.route(
        "GET",
        "/compute/v2.1/servers/detail",
        vec![reply(200, "servers-detail.json")],
    );
    fake.route(
        "POST",
        &format!("/compute/v2.1/servers/{id}/action"),
        vec![reply(409, "server-unpause-409.json")],
    );
    let p = fake.provider(real_clock());
    let err = p.pause(&InstanceId("web-0001".into())).await.unwrap_err();
    assert!(matches!(err, ProviderError::Conflict(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("nova POST /servers/{id}/action answered 409")
            || err.to_string().contains("answered 409: Cannot 'unpause'"),
        "{err}"
    );
    // An unknown instance is NotFound.
    let err = p.pause(&InstanceId("web-9999".into())).await.unwrap_err();
    assert!(matches!(err, ProviderError::NotFound(_)), "{err:?}");
}

#[tokio::test]
async fn capacity_is_the_smaller_of_limits_and_hypervisors() {
    let fake = Fake::start().await;
    fake.route(
        "GET",
        "/compute/v2.1/limits",
        vec![reply(200, "limits.json")],
    );
    fake.route(
        "GET",
        "/compute/v2.1/os-hypervisors/detail",
        vec![reply(200, "hypervisors-detail.json")],
    );
    let p = fake.provider(real_clock());
    let cap = p.capacity().await.unwrap().unwrap();
    let limits: Value = serde_json::from_str(&fixture("limits.json")).unwrap();
    let a = &limits["limits"]["absolute"];
    let n = |k: &str| a[k].as_i64().unwrap();
    assert_eq!(
        cap.instances,
        Some((n("maxTotalInstances") - n("totalInstancesUsed")) as u32)
    );
    // Quota cores (100) are tighter than the hypervisor (1000 × 16).
    assert_eq!(
        cap.vcpus,
        Some((n("maxTotalCores") - n("totalCoresUsed")) as f64)
    );
    // The hypervisor: 800000 MiB × 1.5 − used, far above the RAM quota.
    assert_eq!(
        cap.memory_mb,
        Some((n("maxTotalRAMSize") - n("totalRAMUsed")) as u64)
    );
    // A hypervisor tighter than the quota: its room after over-commit wins.
    let fake = Fake::start().await;
    fake.route(
        "GET",
        "/compute/v2.1/limits",
        vec![reply(200, "limits.json")],
    );
    fake.route(
        "GET",
        "/compute/v2.1/os-hypervisors/detail",
        vec![raw(
            200,
            r#"{"hypervisors": [
                {"state": "up", "status": "enabled", "vcpus": 4, "vcpus_used": 60, "memory_mb": 8192, "memory_mb_used": 10000},
                {"state": "down", "status": "enabled", "vcpus": 64, "vcpus_used": 0, "memory_mb": 65536, "memory_mb_used": 0}]}"#,
        )],
    );
    let p = fake.provider(real_clock());
    let cap = p.capacity().await.unwrap().unwrap();
    assert_eq!(cap.vcpus, Some(4.0)); // 4 × 16 − 60; the down host counts nothing
    assert_eq!(cap.memory_mb, Some(2288)); // 8192 × 1.5 − 10000
}

/// A template on `flavor` whose own vcpus/memory_mb are a group document's defaults
/// (1, 256 MiB), as one commonly leaves them.
fn template_on(flavor: &str) -> Template {
    Template {
        image: Some("tiny".into()),
        vcpus: 1,
        memory_mb: 256,
        openstack: Some(OpenStackTemplate {
            flavor: flavor.into(),
            ..OpenStackTemplate::default()
        }),
        ..Template::default()
    }
}

#[tokio::test]
async fn the_instance_size_is_the_flavors_and_is_asked_once() {
    let fake = Fake::start().await;
    fake.route(
        "GET",
        "/compute/v2.1/flavors/swell-rec-medium",
        vec![reply(200, "flavor-swell-rec-medium.json")],
    );
    let p = fake.provider(real_clock());
    let t = template_on("swell-rec-medium");
    assert_eq!((t.vcpus, t.memory_mb), (1, 256));
    let want = Some(InstanceSize {
        vcpus: 2,
        memory_mb: 2048,
    });
    assert_eq!(p.instance_size(&t).await.unwrap(), want);
    assert_eq!(p.instance_size(&t).await.unwrap(), want);
    let flavor_calls = |fake: &Fake| {
        fake.seen_calls()
            .into_iter()
            .filter(|c| c.contains("/flavors"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        flavor_calls(&fake),
        ["GET /compute/v2.1/flavors/swell-rec-medium"],
        "flavors never change: the second call is served from the cache"
    );

    // By name (Nova's GET /flavors/{id} does not know names): the list, once.
    let fake = Fake::start().await;
    create_routes(&fake);
    let p = fake.provider(real_clock());
    let t = template_on("m1.tiny");
    let want = Some(InstanceSize {
        vcpus: 1,
        memory_mb: 512,
    });
    assert_eq!(p.instance_size(&t).await.unwrap(), want);
    assert_eq!(p.instance_size(&t).await.unwrap(), want);
    assert_eq!(
        flavor_calls(&fake),
        [
            "GET /compute/v2.1/flavors/m1.tiny",
            "GET /compute/v2.1/flavors/detail?is_public=None"
        ]
    );

    // An unknown flavor is an invalid template (and is not cached: it may be made).
    let err = p.instance_size(&template_on("m1.huge")).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::InvalidTemplate(m) if m.contains("no flavor `m1.huge`")),
        "{err:?}"
    );
    // Without an openstack section there is no flavor: the template's own numbers.
    let plain = Template {
        vcpus: 3,
        memory_mb: 1024,
        ..Template::default()
    };
    assert_eq!(
        p.instance_size(&plain).await.unwrap(),
        Some(InstanceSize {
            vcpus: 3,
            memory_mb: 1024
        })
    );
}

/// The recorded token's project (`token.json`): what the provider acts in.
const PROJECT: &str = "fbd090c4a9de469684ea6e7dfe0e81b3";
/// Another project of the same cloud.
const OTHER_PROJECT: &str = "8a92df540ec845898d7abe2034acde80";

/// The recorded security group (made by an older Swell, before the owner was written in
/// its description) as `project`'s group `name` with this description.
fn security_group_listing(name: &str, project: &str, description: Option<&str>) -> Value {
    let mut v = json_fixture("security-groups-by-name.json");
    let sg = &mut v["security_groups"][0];
    sg["name"] = json!(name);
    sg["project_id"] = json!(project);
    sg["tenant_id"] = json!(project);
    if let Some(d) = description {
        sg["description"] = json!(d);
    }
    v
}

#[tokio::test]
async fn the_groups_security_group_goes_with_the_group_but_never_while_used() {
    let sg = json_fixture("security-groups-by-name.json");
    let sg_id = sg["security_groups"][0]["id"].as_str().unwrap().to_string();
    let delete = format!("DELETE /network/v2.0/security-groups/{sg_id}");
    let fake_with = |listing: Value, servers: Reply, delete_reply: Reply| {
        let sg_id = sg_id.clone();
        async move {
            let fake = Fake::start().await;
            fake.route(
                "GET",
                "/network/v2.0/security-groups",
                vec![raw(200, &listing.to_string())],
            );
            fake.route("GET", "/compute/v2.1/servers/detail", vec![servers]);
            fake.route(
                "DELETE",
                &format!("/network/v2.0/security-groups/{sg_id}"),
                vec![delete_reply],
            );
            fake
        }
    };
    let rec_web = || security_group_listing("swell.rec.web", PROJECT, None);
    let no_servers = || raw(200, r#"{"servers": []}"#);
    // The group `rec/web` (security group `swell.rec.web`) has no server left: deleted.
    let fake = fake_with(
        rec_web(),
        no_servers(),
        reply(204, "security-group-delete.json"),
    )
    .await;
    let p = fake.provider(real_clock());
    let rec = TenantId::new("rec").unwrap();
    p.group_deleted(&rec, "web").await.unwrap();
    let calls = fake.seen_calls();
    assert_eq!(
        calls[1],
        format!("GET /network/v2.0/security-groups?name=swell.rec.web&project_id={PROJECT}"),
        "{calls:?}"
    );
    assert_eq!(
        calls[2],
        format!("GET /compute/v2.1/servers/detail?project_id={PROJECT}&limit=500")
    );
    assert_eq!(calls[3], delete);
    assert_eq!(calls.len(), 4, "{calls:?}");

    // Described as this owner's (`rec`): deleted too.
    let fake = fake_with(
        security_group_listing(
            "swell.rec.web",
            PROJECT,
            Some(&scope::security_group_description("rec")),
        ),
        no_servers(),
        reply(204, "security-group-delete.json"),
    )
    .await;
    fake.provider(real_clock())
        .group_deleted(&rec, "web")
        .await
        .unwrap();
    assert!(fake.seen_calls().contains(&delete));

    // Never another project's group of the same name (Neutron answering it, as if the
    // project filter were ignored: an admin's credential sees every project), nor the
    // project's group of that name another Swell (owner) made: one look, nothing else.
    for listing in [
        security_group_listing("swell.rec.web", OTHER_PROJECT, None),
        security_group_listing(
            "swell.rec.web",
            PROJECT,
            Some(&scope::security_group_description("another-swell")),
        ),
        security_group_listing("swell.rec.web", PROJECT, Some("made by hand")),
    ] {
        let fake = fake_with(
            listing,
            no_servers(),
            reply(204, "security-group-delete.json"),
        )
        .await;
        fake.provider(real_clock())
            .group_deleted(&rec, "web")
            .await
            .unwrap();
        let calls = fake.seen_calls();
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert!(!calls.contains(&delete), "{calls:?}");
    }

    // A server of the group (acme/web, recorded) is still there: kept, not asked.
    let fake = fake_with(
        security_group_listing("swell.acme.web", PROJECT, None),
        reply(200, "servers-detail.json"),
        reply(204, "security-group-delete.json"),
    )
    .await;
    let p = fake.provider(real_clock());
    p.group_deleted(&TenantId::new("acme").unwrap(), "web")
        .await
        .unwrap();
    let calls = fake.seen_calls();
    assert!(
        calls.iter().any(|c| c.contains("/servers/detail")),
        "{calls:?}"
    );
    assert!(!calls.contains(&delete), "{calls:?}");

    // Neutron finds it in use (another server's port): kept, and not an error.
    let fake = fake_with(
        rec_web(),
        no_servers(),
        reply(409, "security-group-delete-in-use-409.json"),
    )
    .await;
    let p = fake.provider(real_clock());
    p.group_deleted(&rec, "web").await.unwrap();
    assert!(fake.seen_calls().contains(&delete));

    // No such security group (the template had no rules): one look, nothing else.
    let fake = Fake::start().await;
    fake.route(
        "GET",
        "/network/v2.0/security-groups",
        vec![raw(200, r#"{"security_groups": []}"#)],
    );
    let p = fake.provider(real_clock());
    p.group_deleted(&rec, "web").await.unwrap();
    let calls = fake.seen_calls();
    assert_eq!(calls.len(), 2, "{calls:?}");

    // Neutron failing is the caller's to log.
    let fake = fake_with(rec_web(), no_servers(), raw(503, "{}")).await;
    let p = fake.provider(real_clock());
    let err = p.group_deleted(&rec, "web").await.unwrap_err();
    assert!(matches!(err, ProviderError::Unavailable(_)), "{err:?}");
}

fn json_fixture(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).unwrap()
}

#[tokio::test]
async fn a_floating_ip_and_an_octavia_member_are_added_then_drained_in_order() {
    let fake = Fake::start().await;
    create_routes(&fake);
    fake.state.lock().unwrap().routes.remove(0);
    let pool = json_fixture("octavia-pool.json")["pool"].clone();
    let pool_id = pool["id"].as_str().unwrap().to_string();
    let lb_id = pool["loadbalancers"][0]["id"].as_str().unwrap().to_string();
    let member_id = json_fixture("octavia-member-create.json")["member"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let port = json_fixture("ports-of-server.json")["ports"][0].clone();
    // Nova echoes the metadata it was given: the recorded server plus the pool's id.
    let mut active = json_fixture("server-active.json");
    active["server"]["metadata"][META_POOL] = json!(pool_id);
    let id = active["server"]["id"].as_str().unwrap().to_string();
    let listed = json!({"servers": [active["server"].clone()]}).to_string();
    fake.route(
        "GET",
        "/compute/v2.1/servers/detail",
        vec![raw(200, r#"{"servers": []}"#), raw(200, &listed)],
    );
    fake.route(
        "GET",
        "/lb/v2/lbaas/pools",
        vec![reply(200, "octavia-pools-by-name.json")],
    );
    // The external network `public`: the recorded network made external.
    let mut public = json_fixture("network-list-private.json");
    public["networks"][0]["id"] = json!("5a1b2c3d-0000-4000-8000-00000000e7e1");
    public["networks"][0]["name"] = json!("public");
    public["networks"][0]["router:external"] = json!(true);
    fake.route(
        "GET",
        "/network/v2.0/networks?name=public&router%3Aexternal=true",
        vec![raw(200, &public.to_string())],
    );
    fake.route(
        "POST",
        "/compute/v2.1/servers",
        vec![reply(202, "server-create.json")],
    );
    fake.route(
        "GET",
        &format!("/compute/v2.1/servers/{id}"),
        vec![
            reply(200, "server-build.json"),
            raw(200, &active.to_string()),
        ],
    );
    fake.route(
        "GET",
        "/network/v2.0/ports",
        vec![reply(200, "ports-of-server.json")],
    );
    fake.route(
        "GET",
        "/network/v2.0/floatingips",
        vec![raw(200, r#"{"floatingips": []}"#)],
    );
    fake.route(
        "POST",
        "/network/v2.0/floatingips",
        vec![reply(201, "floatingip-create.json")],
    );
    let members = format!("/lb/v2/lbaas/pools/{pool_id}/members");
    fake.route(
        "GET",
        &members,
        vec![
            reply(200, "octavia-members-none.json"),
            reply(200, "octavia-members-web-0001.json"),
            reply(200, "octavia-members-none.json"),
        ],
    );
    fake.route(
        "POST",
        &members,
        vec![reply(201, "octavia-member-create.json")],
    );
    fake.route(
        "GET",
        &format!("/lb/v2/lbaas/pools/{pool_id}"),
        vec![reply(200, "octavia-pool.json")],
    );
    fake.route(
        "PUT",
        &format!("{members}/{member_id}"),
        vec![reply(200, "octavia-member-weight-0.json")],
    );
    fake.route(
        "DELETE",
        &format!("{members}/{member_id}"),
        vec![raw(204, "")],
    );
    fake.route(
        "GET",
        &format!("/lb/v2/lbaas/loadbalancers/{lb_id}"),
        vec![
            reply(200, "octavia-lb-active.json"),
            reply(200, "octavia-lb-active.json"),
            reply(200, "octavia-lb-pending-update.json"),
            reply(200, "octavia-lb-active.json"),
        ],
    );

    let mut request = create_request();
    request.instance_id = InstanceId("web-0001".into());
    let os = request.template.openstack.as_mut().unwrap();
    os.floating_ip_network = Some("public".into());
    os.octavia_pool = Some("swell-rec-pool".into());
    let p = fake.provider(real_clock());
    let inst = p.create(&request).await.unwrap();
    assert_eq!(inst.address, Some("10.10.0.252:8080".parse().unwrap()));

    let seen = fake.seen();
    let body_of = |method: &str, path: &str| -> Value {
        let s = seen
            .iter()
            .find(|s| s.method == method && s.path == path)
            .unwrap_or_else(|| panic!("no {method} {path}"));
        serde_json::from_str(&s.body).unwrap()
    };
    let server = body_of("POST", "/compute/v2.1/servers");
    assert_eq!(server["server"]["metadata"][META_POOL], json!(pool_id));
    let fip = body_of("POST", "/network/v2.0/floatingips");
    assert_eq!(
        fip["floatingip"]["floating_network_id"],
        "5a1b2c3d-0000-4000-8000-00000000e7e1"
    );
    assert_eq!(fip["floatingip"]["port_id"], port["id"]);
    assert_eq!(fip["floatingip"]["fixed_ip_address"], "10.10.0.252");
    assert_eq!(fip["floatingip"]["description"], "swell instance web-0001");
    let member = body_of("POST", &members);
    assert_eq!(
        member,
        json!({"member": {"name": "web-0001", "address": "10.10.0.252", "protocol_port": 8080,
            "subnet_id": port["fixed_ips"][0]["subnet_id"]}})
    );
    // The member is added once the server is ACTIVE and has its floating IP.
    let calls = fake.seen_calls();
    let pos = |c: &str| {
        calls
            .iter()
            .position(|x| x == c)
            .unwrap_or_else(|| panic!("{c} not in {calls:#?}"))
    };
    assert!(pos(&format!("POST {members}")) > pos("POST /network/v2.0/floatingips"));

    // Drain: weight 0, then removal; the load balancer waited for around each change.
    let before = fake.seen().len();
    p.drain(&inst.instance_id, Duration::ZERO).await.unwrap();
    let drain: Vec<String> = fake.seen_calls()[before..]
        .iter()
        .filter(|c| !c.starts_with("GET /compute"))
        .cloned()
        .collect();
    assert_eq!(
        drain,
        [
            format!("GET /lb/v2/lbaas/pools/{pool_id}"),
            format!("GET {members}?name=web-0001"),
            // PENDING_UPDATE (recorded), polled again until ACTIVE
            format!("GET /lb/v2/lbaas/loadbalancers/{lb_id}"),
            format!("GET /lb/v2/lbaas/loadbalancers/{lb_id}"),
            format!("PUT {members}/{member_id}"),
            format!("GET /lb/v2/lbaas/loadbalancers/{lb_id}"),
            format!("GET /lb/v2/lbaas/loadbalancers/{lb_id}"),
            format!("DELETE {members}/{member_id}"),
            format!("GET /lb/v2/lbaas/loadbalancers/{lb_id}"),
            format!("GET {members}?name=web-0001"),
        ]
    );
    let put = &fake.seen()[before..]
        .iter()
        .find(|s| s.method == "PUT")
        .unwrap()
        .body
        .clone();
    assert_eq!(put, r#"{"member":{"weight":0}}"#);
}

#[test]
fn group_security_group_names_never_collide() {
    let name = |tenant: &str, group: &str| group_sg_name(&TenantId::new(tenant).unwrap(), group);
    // Joined with `-`, both were `swell-acme-dev-web`: one tenant's rules on the other's servers.
    assert_ne!(name("acme", "dev-web"), name("acme-dev", "web"));
    assert_eq!(name("acme", "dev-web"), "swell.acme.dev-web");
}

/// Another project's resources, as a cloud that ignored the project filter (or an
/// admin's view of every project) would answer: never used, and refused in the words of
/// a name that exists nowhere. The real cloud's side: `tests/openstack.rs`.
#[tokio::test]
async fn names_resolve_in_the_credentials_project_even_when_the_cloud_answers_more() {
    let theirs = |fixture_name: &str, key: &str| {
        let mut v = json_fixture(fixture_name);
        for r in v[key].as_array_mut().unwrap() {
            r["project_id"] = json!(OTHER_PROJECT);
            r["tenant_id"] = json!(OTHER_PROJECT);
        }
        v
    };
    let net = theirs("network-list-private.json", "networks");
    let net_id = net["networks"][0]["id"].as_str().unwrap().to_string();
    let pools = theirs("octavia-pools-by-name.json", "pools");
    let pool_id = pools["pools"][0]["id"].as_str().unwrap().to_string();
    let sgs = security_group_listing("web-sg", OTHER_PROJECT, None);
    let sg_id = sgs["security_groups"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    /// What the cloud answers of one kind: its list (path, key, answer) and the
    /// resource by id (path, answer).
    struct Answers {
        list: (&'static str, &'static str, Value),
        by_id: (String, Value),
    }
    type Change = fn(&mut OpenStackTemplate, &str);
    let cases: Vec<(Answers, Change, &str, String, String)> = vec![
        (
            Answers {
                list: ("/network/v2.0/networks", "networks", net.clone()),
                by_id: (
                    format!("/network/v2.0/networks/{net_id}"),
                    json!({"network": net["networks"][0].clone()}),
                ),
            },
            |os, v| os.networks = vec![v.into()],
            "template.openstack.networks[0]",
            "private".into(),
            net_id.clone(),
        ),
        (
            Answers {
                list: ("/lb/v2/lbaas/pools", "pools", pools.clone()),
                by_id: (
                    format!("/lb/v2/lbaas/pools/{pool_id}"),
                    json!({"pool": pools["pools"][0].clone()}),
                ),
            },
            |os, v| os.octavia_pool = Some(v.into()),
            "template.openstack.octavia_pool",
            "swell-rec-pool".into(),
            pool_id.clone(),
        ),
        (
            Answers {
                list: (
                    "/network/v2.0/security-groups",
                    "security_groups",
                    sgs.clone(),
                ),
                by_id: (
                    format!("/network/v2.0/security-groups/{sg_id}"),
                    json!({"security_group": sgs["security_groups"][0].clone()}),
                ),
            },
            |os, v| os.security_groups = vec![v.into()],
            "template.openstack.security_groups[0]",
            "web-sg".into(),
            sg_id.clone(),
        ),
    ];
    for (answers, change, field, name, id) in cases {
        let mut messages = Vec::new();
        // Theirs by name, theirs by id, then a cloud that has nothing of the kind.
        for (value, answered) in [(&name, true), (&id, true), (&name, false)] {
            let fake = Fake::start().await;
            create_routes(&fake);
            // The template's own network `private` resolves as the project's (cases
            // not about networks); the case's answers replace any other.
            fake.state
                .lock()
                .unwrap()
                .routes
                .retain(|r| r.1 != "/network/v2.0/networks");
            if !field.contains("networks") {
                fake.route(
                    "GET",
                    &format!("/network/v2.0/networks?name=private&project_id={PROJECT}"),
                    vec![reply(200, "network-list-private.json")],
                );
                fake.route(
                    "GET",
                    "/network/v2.0/networks?name=private&shared=true",
                    vec![raw(200, r#"{"networks": []}"#)],
                );
            }
            let (path, key, list) = &answers.list;
            if answered {
                fake.route("GET", path, vec![raw(200, &list.to_string())]);
                let (path, one) = &answers.by_id;
                fake.route("GET", path, vec![raw(200, &one.to_string())]);
            } else {
                fake.route(
                    "GET",
                    path,
                    vec![raw(200, &json!({ *key: [] }).to_string())],
                );
            }
            let mut request = create_request();
            change(request.template.openstack.as_mut().unwrap(), value);
            let err = fake
                .provider(real_clock())
                .create(&request)
                .await
                .unwrap_err();
            let ProviderError::InvalidTemplate(m) = &err else {
                panic!("{field} = {value}: expected InvalidTemplate, got {err:?}");
            };
            assert!(m.starts_with(field), "{m}");
            for secret in [name.as_str(), id.as_str(), OTHER_PROJECT] {
                assert!(!m.contains(secret), "{m} names {secret}");
            }
            let calls = fake.seen_calls();
            assert!(
                !calls.iter().any(|c| c.starts_with("POST /compute")),
                "{calls:#?}"
            );
            // By name, the project is in the query (security groups, pools) or the
            // queries ask only for the project's own and shared networks.
            if value == &name {
                let lookups: Vec<&String> = calls
                    .iter()
                    .filter(|c| c.contains(&format!("name={name}")))
                    .collect();
                assert!(!lookups.is_empty(), "{calls:#?}");
                assert!(
                    lookups
                        .iter()
                        .all(|c| c.contains(&format!("project_id={PROJECT}"))
                            || c.contains("shared=true")),
                    "{lookups:#?}"
                );
            }
            messages.push(m.clone());
        }
        // Word for word the same: theirs by name, by id, and nothing at all.
        assert_eq!(messages[0], messages[2], "{field}");
        assert_eq!(messages[1], messages[2], "{field}");
    }
}

/// The recorded ACTIVE server of `web-0001` with its pause mode stamped as `mode`
/// (absent for `None`) and its status set to `status`, as one server and as a list.
fn server_in(mode: Option<&str>, status: &str) -> (String, Value, Value) {
    let mut list: Value = serde_json::from_str(&fixture("servers-detail.json")).unwrap();
    let server = &mut list["servers"][0];
    if let Some(m) = mode {
        server["metadata"][META_PAUSE_MODE] = json!(m);
    }
    server["status"] = json!(status);
    let id = server["id"].as_str().unwrap().to_string();
    let one = json!({ "server": server.clone() });
    (id, list, one)
}

/// Each pause mode sends its own Nova action (`{"pause":null}`, `{"suspend":null}`,
/// `{"shelve":null}`) and waits for its own status; a shelved server may settle
/// SHELVED_OFFLOADED.
#[tokio::test]
async fn pause_sends_the_action_of_the_servers_pause_mode() {
    for (mode, settled, body) in [
        (None, "PAUSED", r#"{"pause":null}"#),
        (Some("pause"), "PAUSED", r#"{"pause":null}"#),
        (Some("suspend"), "SUSPENDED", r#"{"suspend":null}"#),
        (Some("shelve"), "SHELVED", r#"{"shelve":null}"#),
        (Some("shelve"), "SHELVED_OFFLOADED", r#"{"shelve":null}"#),
    ] {
        let fake = Fake::start().await;
        let (id, list, _) = server_in(mode, "ACTIVE");
        let (_, _, after) = server_in(mode, settled);
        fake.route(
            "GET",
            "/compute/v2.1/servers/detail",
            vec![raw(200, &list.to_string())],
        );
        fake.route(
            "POST",
            &format!("/compute/v2.1/servers/{id}/action"),
            vec![raw(202, "")],
        );
        fake.route(
            "GET",
            &format!("/compute/v2.1/servers/{id}"),
            vec![raw(200, &after.to_string())],
        );
        let p = fake.provider(real_clock());
        p.pause(&InstanceId("web-0001".into()))
            .await
            .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        let actions: Vec<String> = fake
            .seen()
            .into_iter()
            .filter(|s| s.path.ends_with("/action"))
            .map(|s| s.body)
            .collect();
        assert_eq!(actions, [body], "{mode:?}");
    }
}

/// Resume undoes whatever the server shows: unpause, resume, unshelve; a server
/// already paused its way is not paused again; one in a state with no way back is a
/// conflict naming it.
#[tokio::test]
async fn resume_undoes_the_status_the_server_shows() {
    for (mode, status, body) in [
        (None, "PAUSED", r#"{"unpause":null}"#),
        (Some("suspend"), "SUSPENDED", r#"{"resume":null}"#),
        (Some("shelve"), "SHELVED", r#"{"unshelve":null}"#),
        (Some("shelve"), "SHELVED_OFFLOADED", r#"{"unshelve":null}"#),
    ] {
        let fake = Fake::start().await;
        let (id, list, _) = server_in(mode, status);
        let (_, _, active) = server_in(mode, "ACTIVE");
        fake.route(
            "GET",
            "/compute/v2.1/servers/detail",
            vec![raw(200, &list.to_string())],
        );
        fake.route(
            "POST",
            &format!("/compute/v2.1/servers/{id}/action"),
            vec![raw(202, "")],
        );
        fake.route(
            "GET",
            &format!("/compute/v2.1/servers/{id}"),
            vec![raw(200, &active.to_string())],
        );
        let p = fake.provider(real_clock());
        // Paused already: pausing again asks Nova for nothing.
        p.pause(&InstanceId("web-0001".into()))
            .await
            .unwrap_or_else(|e| panic!("{status}: {e}"));
        p.resume(&InstanceId("web-0001".into()))
            .await
            .unwrap_or_else(|e| panic!("{status}: {e}"));
        let actions: Vec<String> = fake
            .seen()
            .into_iter()
            .filter(|s| s.path.ends_with("/action"))
            .map(|s| s.body)
            .collect();
        assert_eq!(actions, [body], "{status}");
    }
    let fake = Fake::start().await;
    let (_, list, _) = server_in(None, "SHUTOFF");
    fake.route(
        "GET",
        "/compute/v2.1/servers/detail",
        vec![raw(200, &list.to_string())],
    );
    let p = fake.provider(real_clock());
    let err = p.resume(&InstanceId("web-0001".into())).await.unwrap_err();
    assert!(matches!(err, ProviderError::Conflict(_)), "{err:?}");
    assert!(err.to_string().contains("is SHUTOFF"), "{err}");
    assert!(fake.seen_calls().iter().all(|c| !c.ends_with("/action")));
}

/// The template's pause mode is stamped on the server it creates (only when it is not
/// the default, so a `pause` server's metadata is as before).
#[test]
fn the_server_body_carries_the_pause_mode() {
    let config = OpenStackConfig::new(
        "rec",
        AuthConfig::password("http://127.0.0.1:9/identity/v3", "a", "b", "c"),
    );
    let p = OpenStackProvider::new(config).unwrap();
    let plan = Plan {
        image_id: "img".into(),
        flavor_id: "1".into(),
        networks: Vec::new(),
        security_groups: Vec::new(),
        floating_network_id: None,
        pool: None,
    };
    for (mode, stamped) in [
        (PauseMode::Pause, None),
        (PauseMode::Suspend, Some("suspend")),
        (PauseMode::Shelve, Some("shelve")),
    ] {
        let mut request = create_request();
        if let Some(os) = request.template.openstack.as_mut() {
            os.pause_mode = mode;
        }
        let body = p.server_body(&request, &plan);
        assert_eq!(
            body["server"]["metadata"]
                .get(META_PAUSE_MODE)
                .and_then(Value::as_str),
            stamped,
            "{mode:?}"
        );
    }
}
