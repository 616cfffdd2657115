//! Live events over real HTTP (`GET /v1/groups/{name}/events/stream`): a real server,
//! real `sleep` processes scaled by the controller, a real SSE client reading the bytes.
//! The stream's messages equal the list route's events, in order; a reconnection with
//! `Last-Event-ID` gets exactly the missed ones; another tenant gets 404; the stream
//! ends after the group's deletion; a tenant's open streams are capped.

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use swell_server::{Server, ServerConfig};

const ADMIN_PASSWORD: &str = "stream-admin-password";

/// A guard on every read: a broken stream fails the test instead of hanging it (the
/// events come within milliseconds; this is no timing assertion).
const GUARD: Duration = Duration::from_secs(60);

/// Kills every process this server's data directory tagged (even when a test fails).
struct Cleanup(std::path::PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let owner = format!("SWELL_OWNER={}", self.0.display());
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
            if environ.split(|b| *b == 0).any(|kv| kv == owner.as_bytes()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

async fn start(dir: &Path, max_event_streams: usize) -> Server {
    Server::start(ServerConfig {
        listen: "127.0.0.1:0".parse().expect("an address"),
        data_dir: dir.to_path_buf(),
        stop_instances_on_exit: true,
        admin_password: Some(swell_server::secrets::SecretString::new(ADMIN_PASSWORD)),
        max_event_streams,
        ..ServerConfig::default()
    })
    .await
    .expect("the server starts")
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
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("the API answers");
        let status = resp.status();
        let body = resp.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    async fn ok(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let (status, v) = self.call(token, method.clone(), path, body).await;
        assert!(status.is_success(), "{method} {path}: {status} {v}");
        v
    }

    async fn login(&self, tenant: &str) -> String {
        let v = self
            .http
            .post(format!("{}/v1/auth/tokens", self.url))
            .json(&json!({"user": "admin", "password": ADMIN_PASSWORD, "tenant": tenant}))
            .send()
            .await
            .expect("login answers")
            .json::<Value>()
            .await
            .expect("JSON");
        v["token"].as_str().expect("a token").to_string()
    }

    /// A tenant granted the `process` provider, and its admin's token.
    async fn tenant(&self, root: &str, name: &str) -> String {
        self.ok(
            root,
            reqwest::Method::POST,
            "/v1/tenants",
            Some(json!({"name": name, "providers": ["process"]})),
        )
        .await;
        self.login(name).await
    }

    async fn group(&self, token: &str, name: &str) {
        self.ok(
            token,
            reqwest::Method::POST,
            "/v1/groups",
            Some(json!({
                "name": name,
                "template": {"command": ["sleep", "1000"]},
                "min": 0, "max": 3, "desired_capacity": 0,
                "evaluation_interval": "1h", "metrics_interval": "1h",
                "policies": [{"type": "threshold", "scale_out_above": 1000}]
            })),
        )
        .await;
    }

    async fn scale(&self, token: &str, group: &str, desired: u32) {
        self.ok(
            token,
            reqwest::Method::PUT,
            &format!("/v1/groups/{group}/desired_capacity"),
            Some(json!({"desired_capacity": desired})),
        )
        .await;
    }

    /// The group's events after `after_id`, as the list route shows them.
    async fn events_after(&self, token: &str, group: &str, after_id: i64) -> Vec<Value> {
        let v = self
            .ok(
                token,
                reqwest::Method::GET,
                &format!("/v1/groups/{group}/events?after_id={after_id}"),
                None,
            )
            .await;
        v["events"].as_array().expect("events").clone()
    }

    /// Opens a stream (`query` after `?`, `last_id` as `Last-Event-ID`).
    async fn stream(
        &self,
        token: &str,
        group: &str,
        query: &str,
        last_id: Option<i64>,
    ) -> reqwest::Response {
        let mut req = self
            .http
            .get(format!(
                "{}/v1/groups/{group}/events/stream?{query}",
                self.url
            ))
            .bearer_auth(token);
        if let Some(id) = last_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        req.send().await.expect("the stream answers")
    }
}

/// Reads Server-Sent Events from a response body.
struct SseReader {
    resp: reqwest::Response,
    buf: String,
}

impl SseReader {
    fn new(resp: reqwest::Response) -> Self {
        assert_eq!(resp.status(), StatusCode::OK);
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        SseReader {
            resp,
            buf: String::new(),
        }
    }

    /// The next event (its `id` and `data`), skipping keep-alive comments; `None` when
    /// the stream ends.
    async fn next(&mut self) -> Option<(i64, Value)> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut id = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().parse::<i64>().expect("a numeric id"));
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if let Some(id) = id {
                    let value: Value = serde_json::from_str(&data).expect("JSON data");
                    return Some((id, value));
                }
                continue;
            }
            let chunk = tokio::time::timeout(GUARD, self.resp.chunk())
                .await
                .expect("the stream neither sent nor ended")
                .expect("the stream reads");
            match chunk {
                Some(bytes) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                None => return None,
            }
        }
    }

    /// Events until one matches `until` (included).
    async fn until(&mut self, until: impl Fn(&Value) -> bool) -> Vec<(i64, Value)> {
        let mut seen = Vec::new();
        loop {
            let (id, v) = self.next().await.expect("the stream ended early");
            let stop = until(&v);
            seen.push((id, v));
            if stop {
                return seen;
            }
        }
    }
}

fn is_desired(after: u64) -> impl Fn(&Value) -> bool {
    move |v: &Value| v["kind"] == "desired_capacity_set" && v["cause"]["after"] == after
}

#[tokio::test]
async fn a_stream_delivers_in_order_resumes_exactly_and_ends_with_the_group() {
    let dir = tempfile::tempdir().expect("a directory");
    let data = std::fs::canonicalize(dir.path()).expect("a path");
    let _cleanup = Cleanup(data.clone());
    let server = start(&data, 32).await;
    let api = Api {
        url: format!("http://{}", server.addr()),
        http: reqwest::Client::new(),
    };
    let root = api.login("default").await;
    let alpha = api.tenant(&root, "alpha").await;
    let beta = api.tenant(&root, "beta").await;
    api.group(&alpha, "web").await;
    let before = api.events_after(&alpha, "web", 0).await;
    let start_id = before.last().expect("group_created")["id"]
        .as_i64()
        .expect("an id");

    // Subscribed from now on (no position): only new events, in order, as listed.
    let mut stream = SseReader::new(api.stream(&alpha, "web", "", None).await);
    api.scale(&alpha, "web", 1).await;
    api.scale(&alpha, "web", 2).await;
    let seen = stream.until(is_desired(2)).await;
    let listed = api.events_after(&alpha, "web", start_id).await;
    assert!(seen.len() >= 2 && seen.len() <= listed.len(), "{seen:?}");
    for ((id, v), l) in seen.iter().zip(&listed) {
        assert_eq!(v, l, "the stream's data is the list route's event");
        assert_eq!(Some(*id), l["id"].as_i64(), "the SSE id is the event id");
    }
    assert!(seen.iter().any(|(_, v)| is_desired(1)(v)), "{seen:?}");
    let last_seen = seen.last().expect("events").0;

    // The client goes away; events happen; it reconnects with Last-Event-ID (which wins
    // over `after_id`) and gets exactly the ones it missed, from the first after it.
    drop(stream);
    api.scale(&alpha, "web", 0).await;
    let missed = api.events_after(&alpha, "web", last_seen).await;
    assert!(missed.iter().any(|v| is_desired(0)(v)), "{missed:?}");
    let mut resumed = SseReader::new(
        api.stream(
            &alpha,
            "web",
            &format!("after_id=0&max_events={}", missed.len()),
            Some(last_seen),
        )
        .await,
    );
    let mut got = Vec::new();
    while let Some((_, v)) = resumed.next().await {
        got.push(v);
    }
    assert_eq!(got, missed, "a reconnection gets exactly the missed events");

    // `?after_id=` alone positions a new stream too.
    let mut from_start = SseReader::new(
        api.stream(&alpha, "web", "after_id=0&max_events=1", None)
            .await,
    );
    let (first, v) = from_start.next().await.expect("the first event");
    assert_eq!(Some(first), before[0]["id"].as_i64());
    assert_eq!(v["kind"], "group_created");
    assert!(
        from_start.next().await.is_none(),
        "max_events ends the stream"
    );

    // Another tenant: 404 problem, as for a group that does not exist; nothing streamed.
    for (token, group) in [(&beta, "web"), (&alpha, "nope")] {
        let resp = api.stream(token, group, "", None).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
    }
    // Bad positions and bounds: 400 naming the field.
    for (query, last, field) in [
        ("timeout=0", None, "timeout"),
        ("timeout=3601", None, "timeout"),
        ("after_id=-1", None, "after_id"),
        ("", Some(-5), "Last-Event-ID"),
    ] {
        let resp = api.stream(&alpha, "web", query, last).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{query}");
        let v: Value = resp.json().await.expect("a problem");
        assert!(v.to_string().contains(field), "{query} {last:?}: {v}");
    }

    // Deleting the group ends an open stream, after its `group_deleted` event.
    let mut open = SseReader::new(api.stream(&alpha, "web", "", None).await);
    api.ok(&alpha, reqwest::Method::DELETE, "/v1/groups/web", None)
        .await;
    let mut last = None;
    while let Some((_, v)) = open.next().await {
        last = Some(v);
    }
    assert_eq!(
        last.expect("the deletion was streamed")["kind"],
        "group_deleted"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_tenant_has_at_most_its_cap_of_open_streams() {
    let dir = tempfile::tempdir().expect("a directory");
    let data = std::fs::canonicalize(dir.path()).expect("a path");
    let _cleanup = Cleanup(data.clone());
    let server = start(&data, 2).await;
    let api = Api {
        url: format!("http://{}", server.addr()),
        http: reqwest::Client::new(),
    };
    let root = api.login("default").await;
    let alpha = api.tenant(&root, "alpha").await;
    let beta = api.tenant(&root, "beta").await;
    api.group(&alpha, "web").await;
    api.group(&beta, "web").await;

    let first = SseReader::new(api.stream(&alpha, "web", "", None).await);
    let _second = SseReader::new(api.stream(&alpha, "web", "", None).await);
    let third = api.stream(&alpha, "web", "", None).await;
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(third.headers().contains_key("retry-after"));
    let v: Value = third.json().await.expect("a problem");
    assert!(
        v["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("2 open event streams"),
        "{v}"
    );
    // The cap is per tenant.
    let _other = SseReader::new(api.stream(&beta, "web", "", None).await);

    // A closed stream gives its place back (once the server sees the connection go).
    drop(first);
    let deadline = tokio::time::Instant::now() + GUARD;
    loop {
        let resp = api.stream(&alpha, "web", "max_events=0", None).await;
        if resp.status() == StatusCode::OK {
            break;
        }
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place was never freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.shutdown().await;
}
