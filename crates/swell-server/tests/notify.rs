//! Webhooks and the Alertmanager receiver, with real parts: a real HTTP receiver that
//! checks the signature, a real SQLite file (reopened, as after a restart), the server
//! over real HTTP. Backoff timing comes from an injected clock: nothing sleeps to test it.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use swell_core::{EventKind, GroupSpec, TenantId, Timestamp};
use swell_server::clock::{Clock, ManualClock};
use swell_server::notify::{self, Notifier};
use swell_server::secrets::SecretKey;
use swell_server::{Server, ServerConfig};
use swell_store::{
    DeliveryOutcome, EventStore, GroupStore, NewEvent, NotificationStore, Quota, SqliteStore,
    Store, TenantRecord, TenantStore, WebhookRecord,
};

const SECRET: &str = "a-webhook-secret-of-some-length";

/// What the receiver saw: per request, the event's kind and id, and whether the
/// signature checked out.
#[derive(Default)]
struct Seen {
    requests: Vec<(String, i64, bool)>,
    /// Answers still to give before the 200s (500, 500 → two failures).
    answers: Vec<StatusCode>,
}

async fn receive(
    State(seen): State<Arc<Mutex<Seen>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    // The check a receiver makes (docs/api.md): HMAC-SHA256 of the raw body.
    let expected = notify::signature(SECRET.as_bytes(), &body);
    let signed = headers
        .get(notify::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        == Some(expected.as_str());
    let payload: Value = serde_json::from_slice(&body).unwrap_or_default();
    let mut seen = seen.lock().unwrap();
    seen.requests.push((
        payload["event"]["kind"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        payload["event"]["id"].as_i64().unwrap_or_default(),
        signed,
    ));
    if seen.answers.is_empty() {
        StatusCode::OK
    } else {
        seen.answers.remove(0)
    }
}

/// A receiver on a loopback port, answering `answers` first, then 200.
async fn receiver(answers: Vec<StatusCode>) -> (String, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen {
        requests: Vec::new(),
        answers,
    }));
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}/hook"), seen)
}

fn group(name: &str) -> GroupSpec {
    serde_json::from_value(json!({
        "name": name,
        "template": {"command": ["sleep", "1000"]},
        "min": 1,
        "max": 5,
    }))
    .unwrap()
}

fn event(tenant: &TenantId, group: &str, kind: EventKind, at: Timestamp) -> NewEvent {
    NewEvent {
        tenant: tenant.clone(),
        group: group.into(),
        at,
        kind,
        instance_id: None,
        cause: None,
        message: format!("{kind}"),
    }
}

/// A tenant `acme` with a group `web`, and a webhook on its `scale_out` events.
async fn setup(
    store: &SqliteStore,
    key: &SecretKey,
    url: &str,
    now: Timestamp,
) -> (TenantId, WebhookRecord) {
    let tenant = TenantId::new("acme").unwrap();
    store
        .create_tenant(&TenantRecord {
            id: tenant.clone(),
            display_name: "Acme".into(),
            description: String::new(),
            quota: Quota::default(),
            grants: Default::default(),
            deleting: false,
            created_at: now,
            updated_at: now,
        })
        .await
        .unwrap();
    store
        .create_group(
            &tenant,
            &group("web"),
            now,
            event(&tenant, "web", EventKind::GroupCreated, now),
        )
        .await
        .unwrap();
    let id = "wh-test".to_string();
    let hook = WebhookRecord {
        id: id.clone(),
        tenant: tenant.clone(),
        group: None,
        url: url.into(),
        event_kinds: vec!["scale_out".into()],
        secret: key
            .seal(
                tenant.as_str(),
                &notify::secret_name(&id),
                SECRET.as_bytes(),
            )
            .unwrap(),
        start_event_id: store.last_event_id().await.unwrap(),
        created_at: now,
    };
    store.create_webhook(&hook).await.unwrap();
    (tenant, hook)
}

/// The receiver answers 500 twice, then 200: three attempts, spaced by the backoff
/// (1 s, then 2 s) on the injected clock, each signed; the delivery log shows all three.
/// An event of a kind the webhook does not want is never sent. After a "restart" (the
/// store reopened, a new notifier) an event recorded while nothing ran is delivered,
/// and the delivered one is not sent again.
#[tokio::test]
async fn retries_with_backoff_and_resumes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("swell.db");
    let store = SqliteStore::open(&db).await.unwrap();
    let key = SecretKey::generate();
    let t0 = Timestamp::from_millis(1_800_000_000_000);
    let clock = Arc::new(ManualClock::new(t0));
    let (url, seen) = receiver(vec![
        StatusCode::INTERNAL_SERVER_ERROR,
        StatusCode::INTERNAL_SERVER_ERROR,
    ])
    .await;
    let (tenant, hook) = setup(&store, &key, &url, t0).await;
    let dyn_store: Arc<dyn Store> = Arc::new(store.clone());
    let notifier = Notifier::new(dyn_store.clone(), key.clone(), clock.clone(), true);

    assert_eq!(
        notifier.run_once().await.unwrap(),
        0,
        "nothing after the webhook was made"
    );
    store
        .append_event(event(&tenant, "web", EventKind::InstanceCreated, t0))
        .await
        .unwrap();
    let scaled = store
        .append_event(event(&tenant, "web", EventKind::ScaleOut, t0))
        .await
        .unwrap();

    // Attempt 1 fails (500); nothing more until 1 s has passed.
    assert_eq!(notifier.run_once().await.unwrap(), 1);
    assert_eq!(notifier.run_once().await.unwrap(), 0);
    clock.advance(Duration::from_millis(999));
    assert_eq!(
        notifier.run_once().await.unwrap(),
        0,
        "before the first backoff ends"
    );
    clock.advance(Duration::from_millis(1));
    // Attempt 2 fails (500); the next waits 2 s.
    assert_eq!(notifier.run_once().await.unwrap(), 1);
    clock.advance(Duration::from_millis(1_999));
    assert_eq!(
        notifier.run_once().await.unwrap(),
        0,
        "before the second backoff ends"
    );
    clock.advance(Duration::from_millis(1));
    // Attempt 3 is answered 200.
    assert_eq!(notifier.run_once().await.unwrap(), 1);
    assert_eq!(notifier.run_once().await.unwrap(), 0, "delivered: done");

    let requests = seen.lock().unwrap().requests.clone();
    assert_eq!(
        requests,
        vec![("scale_out".to_string(), scaled.id, true); 3],
        "three signed attempts at the scale_out event, none at instance_created"
    );
    let log = store.list_deliveries(&tenant, &hook.id, 100).await.unwrap();
    let summary: Vec<_> = log
        .iter()
        .map(|d| {
            (
                d.attempt,
                d.outcome,
                d.status_code,
                d.at.as_millis() - t0.as_millis(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, DeliveryOutcome::Failed, Some(500), 0),
            (2, DeliveryOutcome::Failed, Some(500), 1_000),
            (3, DeliveryOutcome::Delivered, Some(200), 3_000),
        ]
    );

    // A restart: nothing runs while an event is recorded; a new notifier on the
    // reopened store sends it, and only it.
    drop(notifier);
    drop(dyn_store);
    let later = store
        .append_event(event(&tenant, "web", EventKind::ScaleOut, t0))
        .await
        .unwrap();
    drop(store);
    let reopened = SqliteStore::open(&db).await.unwrap();
    let notifier = Notifier::new(Arc::new(reopened.clone()), key, clock.clone(), true);
    assert_eq!(notifier.run_once().await.unwrap(), 1);
    let requests = seen.lock().unwrap().requests.clone();
    assert_eq!(requests.len(), 4);
    assert_eq!(requests[3], ("scale_out".to_string(), later.id, true));
    assert_eq!(notifier.run_once().await.unwrap(), 0);
}

/// Without the admin's allowance a loopback target is refused at the attempt (the
/// receiver sees nothing) and the event abandoned, with the reason in the log.
#[tokio::test]
async fn loopback_targets_are_refused_by_default() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let key = SecretKey::generate();
    let t0 = Timestamp::from_millis(1_800_000_000_000);
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(t0));
    let (url, seen) = receiver(Vec::new()).await;
    let (tenant, hook) = setup(&store, &key, &url, t0).await;
    store
        .append_event(event(&tenant, "web", EventKind::ScaleOut, t0))
        .await
        .unwrap();
    let notifier = Notifier::new(Arc::new(store.clone()), key, clock, false);
    assert_eq!(notifier.run_once().await.unwrap(), 1);
    assert_eq!(
        notifier.run_once().await.unwrap(),
        0,
        "abandoned: not tried again"
    );
    assert!(seen.lock().unwrap().requests.is_empty());
    let log = store.list_deliveries(&tenant, &hook.id, 10).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].outcome, DeliveryOutcome::Abandoned);
    let error = log[0].error.clone().unwrap_or_default();
    assert!(
        error.contains("refused") && error.contains("127.0.0.1"),
        "{error}"
    );
}

const ADMIN_PASSWORD: &str = "notify-test-admin";

async fn start(dir: &Path, allow_private: bool) -> (Server, String, String) {
    let server = Server::start(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        admin_password: Some(swell_server::secrets::SecretString::new(ADMIN_PASSWORD)),
        webhook_allow_private: allow_private,
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let url = format!("http://{}", server.addr());
    let answer: Value = reqwest::Client::new()
        .post(format!("{url}/v1/auth/tokens"))
        .json(&json!({"user": "admin", "password": ADMIN_PASSWORD, "tenant": "default"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = answer["token"].as_str().unwrap().to_string();
    (server, url, token)
}

async fn call(
    url: &str,
    token: Option<&str>,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, format!("{url}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// An Alertmanager notification in the shape Alertmanager sends it (webhook payload
/// version 4; the annotation holds a newline, as real ones do).
fn alertmanager(status: &str) -> Value {
    json!({
        "receiver": "swell-web",
        "status": status,
        "alerts": [{
            "status": status,
            "labels": {"alertname": "HighRequestLatency", "job": "web", "severity": "page"},
            "annotations": {"summary": "p99 above 500 ms", "description": "p99 is 730 ms\nfor 5 minutes"},
            "startsAt": "2026-12-06T20:11:03.541Z",
            "endsAt": if status == "firing" { "0001-01-01T00:00:00Z" } else { "2026-12-06T20:21:03.541Z" },
            "generatorURL": "http://prometheus:9090/graph?g0.expr=latency_p99+%3E+0.5&g0.tab=1",
            "fingerprint": "6a8f2e1c9b0d4e37"
        }],
        "groupLabels": {"alertname": "HighRequestLatency"},
        "commonLabels": {"alertname": "HighRequestLatency", "job": "web", "severity": "page"},
        "commonAnnotations": {"summary": "p99 above 500 ms"},
        "externalURL": "http://alertmanager:9093",
        "version": "4",
        "groupKey": "{}:{alertname=\"HighRequestLatency\"}",
        "truncatedAlerts": 0
    })
}

/// A firing alert posted with the group's alert token scales the group by its step
/// and is recorded with the alert as the cause; a resolved one does nothing (no
/// `alerts.resolved`); the token works only on its group's receiver, and nothing
/// else opens the receiver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_payload_scales_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let (server, url, admin) = start(dir.path(), false).await;
    use reqwest::Method;
    let mut doc = serde_json::to_value(group("web")).unwrap();
    doc["alerts"] = json!({"firing": {"step": 2}});
    doc["template"]["command"] = json!(["sleep", "1000"]);
    let (status, body) = call(&url, Some(&admin), Method::POST, "/v1/groups", Some(&doc)).await;
    assert_eq!(status, 201, "{body}");
    let mut other = serde_json::to_value(group("other")).unwrap();
    other["alerts"] = json!({"firing": {"desired_capacity": 3}});
    let (status, _) = call(&url, Some(&admin), Method::POST, "/v1/groups", Some(&other)).await;
    assert_eq!(status, 201);

    let (status, token) = call(
        &url,
        Some(&admin),
        Method::POST,
        "/v1/groups/web/alerts/token",
        None,
    )
    .await;
    assert_eq!(status, 201, "{token}");
    let token = token["token"].as_str().unwrap().to_string();

    // Nothing but the token opens the receiver; the token opens nothing else.
    let firing = alertmanager("firing");
    let (status, _) = call(
        &url,
        None,
        Method::POST,
        "/v1/groups/web/alerts",
        Some(&firing),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = call(
        &url,
        Some(&admin),
        Method::POST,
        "/v1/groups/web/alerts",
        Some(&firing),
    )
    .await;
    assert_eq!(
        status, 403,
        "an admin's token is not the group's alert token"
    );
    let (status, _) = call(
        &url,
        Some(&token),
        Method::POST,
        "/v1/groups/other/alerts",
        Some(&firing),
    )
    .await;
    assert_eq!(status, 403, "another group's receiver");
    let (status, _) = call(&url, Some(&token), Method::GET, "/v1/groups/web", None).await;
    assert_eq!(status, 401, "the alert token is no API credential");
    let (_, group_doc) = call(&url, Some(&admin), Method::GET, "/v1/groups/web", None).await;
    assert_eq!(
        group_doc["desired_capacity"], 1,
        "refused calls changed nothing"
    );

    // Bad input: named field, nothing changed.
    let mut bad = firing.clone();
    bad["version"] = json!("3");
    let (status, problem) = call(
        &url,
        Some(&token),
        Method::POST,
        "/v1/groups/web/alerts",
        Some(&bad),
    )
    .await;
    assert_eq!(
        (status, problem["field"].as_str()),
        (400, Some("version")),
        "{problem}"
    );

    let (status, result) = call(
        &url,
        Some(&token),
        Method::POST,
        "/v1/groups/web/alerts",
        Some(&firing),
    )
    .await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result, json!({"action": "scaled", "before": 1, "after": 3}));
    let (_, group_doc) = call(&url, Some(&admin), Method::GET, "/v1/groups/web", None).await;
    assert_eq!(group_doc["desired_capacity"], 3);
    let (_, events) = call(
        &url,
        Some(&admin),
        Method::GET,
        "/v1/groups/web/events",
        None,
    )
    .await;
    let scale = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "scale_out")
        .cloned()
        .expect("a scale_out event");
    assert_eq!(scale["cause"]["policy"], "alert");
    assert_eq!(scale["cause"]["metric"], "HighRequestLatency");
    assert_eq!(
        (
            scale["cause"]["before"].as_u64(),
            scale["cause"]["after"].as_u64()
        ),
        (Some(1), Some(3))
    );
    let reason = scale["cause"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("HighRequestLatency (6a8f2e1c9b0d4e37)"),
        "{reason}"
    );

    // Resolved: nothing, since the group does not say otherwise.
    let (status, result) = call(
        &url,
        Some(&token),
        Method::POST,
        "/v1/groups/web/alerts",
        Some(&alertmanager("resolved")),
    )
    .await;
    assert_eq!((status, result["action"].as_str()), (200, Some("ignored")));
    let (_, group_doc) = call(&url, Some(&admin), Method::GET, "/v1/groups/web", None).await;
    assert_eq!(group_doc["desired_capacity"], 3);

    // A new token replaces the old one.
    let (_, again) = call(
        &url,
        Some(&admin),
        Method::POST,
        "/v1/groups/web/alerts/token",
        None,
    )
    .await;
    assert_ne!(again["token"], json!(token));
    let (status, _) = call(
        &url,
        Some(&token),
        Method::POST,
        "/v1/groups/web/alerts",
        Some(&firing),
    )
    .await;
    assert_eq!(status, 401, "the old token no longer works");
    server.shutdown().await;
}

/// The webhook routes: a loopback URL is refused without the admin's allowance (400
/// naming `url`), bad kinds and short secrets name their field, the secret is never
/// shown, and the delivery log is readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_routes_validate_and_never_show_the_secret() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    let (server, url, admin) = start(dir.path(), false).await;
    let body = |u: &str| json!({"url": u, "events": ["scale_out"], "secret": SECRET});
    for (input, field) in [
        (body("http://127.0.0.1:9/hook"), "url"),
        (body("http://169.254.169.254/latest/meta-data"), "url"),
        (body("http://localhost/hook"), "url"),
        (body("ftp://hooks.example.com/"), "url"),
        (
            json!({"url": "https://hooks.example.com/", "secret": "short"}),
            "secret",
        ),
        (
            json!({"url": "https://hooks.example.com/", "secret": SECRET, "events": ["scale_sideways"]}),
            "events[0]",
        ),
    ] {
        let (status, problem) = call(
            &url,
            Some(&admin),
            Method::POST,
            "/v1/webhooks",
            Some(&input),
        )
        .await;
        assert_eq!(
            (status, problem["field"].as_str()),
            (400, Some(field)),
            "{input}: {problem}"
        );
    }
    let (status, list) = call(&url, Some(&admin), Method::GET, "/v1/webhooks", None).await;
    assert_eq!(
        (status, list["webhooks"].as_array().map(Vec::len)),
        (200, Some(0)),
        "bad input stored nothing"
    );

    let (status, made) = call(
        &url,
        Some(&admin),
        Method::POST,
        "/v1/webhooks",
        Some(&body("https://hooks.example.com/swell")),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(made["secret"], "set");
    let id = made["id"].as_str().unwrap();
    let (status, shown) = call(
        &url,
        Some(&admin),
        Method::GET,
        &format!("/v1/webhooks/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(!shown.to_string().contains(SECRET));
    let (status, log) = call(
        &url,
        Some(&admin),
        Method::GET,
        &format!("/v1/webhooks/{id}/deliveries"),
        None,
    )
    .await;
    assert_eq!(
        (status, log["deliveries"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    let (status, _) = call(
        &url,
        Some(&admin),
        Method::DELETE,
        &format!("/v1/webhooks/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = call(
        &url,
        Some(&admin),
        Method::GET,
        &format!("/v1/webhooks/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 404);
    server.shutdown().await;
}
