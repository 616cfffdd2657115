//! The server in-process over real HTTP, a real SQLite file and real child processes:
//! API validation (bad input changes nothing) and recovery after a restart.

use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use swell_core::Template;
use swell_core::{InstanceId, InstanceStatus, Lifecycle, TenantId, Timestamp};
use swell_providers::process::{ProcessConfig, ProcessProvider};
use swell_providers::{CreateRequest, Provider};
use swell_server::{Server, ServerConfig};
use swell_store::{InstanceRecord, InstanceStore, SqliteStore};

async fn start(dir: &Path) -> (Server, String) {
    let server = Server::start(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        admin_password: Some(swell_server::secrets::SecretString::new(ADMIN_PASSWORD)),
        // Groups here tick every 100 ms, below the server's 1 s default floor.
        min_interval: std::time::Duration::from_millis(100),
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let url = format!("http://{}", server.addr());
    (server, url)
}

/// The bootstrap admin's password in these tests.
const ADMIN_PASSWORD: &str = "server-test-admin";

/// A client logged in as the bootstrap admin on the `default` tenant: every request
/// carries its bearer token (tokens are stored, so it outlives a restart).
async fn login(url: &str) -> reqwest::Client {
    let answer: Value = reqwest::Client::new()
        .post(format!("{url}/v1/auth/tokens"))
        .json(&json!({"user": "admin", "password": ADMIN_PASSWORD, "tenant": "default"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = answer["token"].as_str().expect("a token").to_string();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// A group of `sleep` processes: no load balancer, so they count as running once spawned.
fn sleepers(name: &str, desired: u32) -> Value {
    json!({
        "name": name,
        "template": {"command": ["sleep", "1000"]},
        "min": 0, "max": 5, "desired_capacity": desired,
        "evaluation_interval": "200ms", "metrics_interval": "200ms",
        "policies": [{"type": "threshold", "scale_out_above": 1000}]
    })
}

async fn running_ids(http: &reqwest::Client, url: &str, group: &str) -> Vec<String> {
    let v: Value = http
        .get(format!("{url}/v1/groups/{group}/instances"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut ids: Vec<String> = v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["status"] == "running")
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

async fn wait_running(http: &reqwest::Client, url: &str, group: &str, n: usize) -> Vec<String> {
    for _ in 0..200 {
        let ids = running_ids(http, url, group).await;
        if ids.len() == n {
            return ids;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("group {group} never reached {n} running instances");
}

/// Pids of live processes tagged with this data dir.
fn tagged_processes(owner: &Path) -> Vec<(u32, String)> {
    let owner = format!("SWELL_OWNER={}", owner.display());
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let vars: Vec<String> = env
            .split(|b| *b == 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        if vars.iter().any(|v| v == &owner) && !zombie {
            let id = vars
                .iter()
                .find_map(|v| v.strip_prefix("SWELL_INSTANCE_ID="))
                .unwrap_or_default()
                .to_string();
            out.push((pid, id));
        }
    }
    out
}

fn kill_tagged(owner: &Path) {
    for (pid, _) in tagged_processes(owner) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

struct Cleanup(std::path::PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        kill_tagged(&self.0);
    }
}

#[tokio::test]
async fn invalid_input_is_rejected_whole_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (server, url) = start(dir.path()).await;
    let http = login(&url).await;
    let cases = [
        (
            json!({"name": "web", "template": {"command": ["a"]}, "min": 3, "max": 1}),
            "max",
            "max (1) must be >= min (3)",
        ),
        (
            json!({"name": "Web!", "template": {"command": ["a"]}, "max": 1}),
            "name",
            "lowercase",
        ),
        (
            json!({"name": "web", "template": {"command": ["a"]}, "max": 1, "maxx": 2}),
            "body",
            "unknown field `maxx`",
        ),
        (
            json!({"name": "web", "template": {"command": ["a"]}, "max": "three"}),
            "max",
            "invalid type",
        ),
        (
            json!({"name": "web", "template": {"command": ["a"]}, "max": 2, "cooldown": "soon"}),
            "cooldown",
            "not a duration",
        ),
        (
            json!({"name": "web", "template": {"command": ["a"]}, "max": 2, "policies": [{"type": "threshold", "scale_out_above": 10, "step": 0}]}),
            "policies[0].step",
            "step must be >= 1",
        ),
        (
            json!({"name": "web", "template": {"command": ["a"]}, "max": 2, "load_balancer": {"listen": "nowhere"}}),
            "load_balancer.listen",
            "address",
        ),
    ];
    for (body, field, rule) in cases {
        let resp = http
            .post(format!("{url}/v1/groups"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        let p: Value = resp.json().await.unwrap();
        assert!(
            p["field"]
                .as_str()
                .unwrap()
                .contains(field.trim_start_matches("body")),
            "{p} for {field}"
        );
        assert!(
            p["detail"].as_str().unwrap().contains(rule),
            "{p} for {rule}"
        );
    }
    let resp = http
        .post(format!("{url}/v1/groups"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // Query parameters are input too: a problem naming the parameter, as for bodies.
    for (query, field, rule) in [
        ("events?limit=abc", "limit", "invalid digit"),
        ("events?since=yesterday", "since", "not an RFC 3339 time"),
        ("instances?all=maybe", "all", "`true` or `false`"),
    ] {
        let resp = http
            .get(format!("{url}/v1/groups/nope/{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{query}");
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        let p: Value = resp.json().await.unwrap();
        assert_eq!(p["field"], field, "{p}");
        assert!(p["rule"].as_str().unwrap().contains(rule), "{p}");
    }
    let groups: Value = http
        .get(format!("{url}/v1/groups"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(groups["groups"], json!([]));
    assert_eq!(
        http.get(format!("{url}/v1/groups/nope"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        http.get(format!("{url}/v1/groups/nope/events"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // A valid group, then conflicts and bad updates that leave it untouched.
    let _cleanup = Cleanup(std::fs::canonicalize(dir.path()).unwrap());
    let created = http
        .post(format!("{url}/v1/groups"))
        .json(&sleepers("web", 1))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(
        http.post(format!("{url}/v1/groups"))
            .json(&sleepers("web", 1))
            .send()
            .await
            .unwrap()
            .status(),
        409
    );
    let resp = http
        .put(format!("{url}/v1/groups/web/desired_capacity"))
        .json(&json!({"desired_capacity": 9}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let p: Value = resp.json().await.unwrap();
    assert_eq!(p["field"], "desired_capacity");
    let mut renamed = sleepers("other", 1);
    renamed["max"] = json!(3);
    assert_eq!(
        http.put(format!("{url}/v1/groups/web"))
            .json(&renamed)
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    let g: Value = http
        .get(format!("{url}/v1/groups/web"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (g["spec"]["max"].clone(), g["desired_capacity"].clone()),
        (json!(5), json!(1))
    );

    let doc: Value = http
        .get(format!("{url}/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/v1/groups",
        "/v1/groups/{name}/events",
        "/v1/groups/{name}/desired_capacity",
    ] {
        assert!(doc["paths"][path].is_object(), "openapi lacks {path}");
    }
    // Query parameters are documented as such (the handlers parse them themselves).
    let params = doc["paths"]["/v1/groups/{name}/events"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let limit = params.iter().find(|p| p["name"] == "limit").unwrap();
    assert_eq!(limit["in"], "query", "{limit}");
    server.shutdown().await;
}

#[tokio::test]
async fn restart_adopts_live_instances_fails_dead_intents_and_removes_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let data = std::fs::canonicalize(dir.path()).unwrap();
    let _cleanup = Cleanup(data.clone());
    let (server, url) = start(&data).await;
    let http = login(&url).await;
    assert_eq!(
        http.post(format!("{url}/v1/groups"))
            .json(&sleepers("batch", 2))
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    let before = wait_running(&http, &url, "batch", 2).await;
    server.shutdown().await;
    // Instances outlive a clean stop by default.
    let mut alive: Vec<String> = tagged_processes(&data)
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    alive.sort();
    assert_eq!(alive, before);

    // What a crash can leave behind: a create intent whose process never started, and a
    // tagged process the store does not know (an orphan).
    let store = SqliteStore::open(&data.join("swell.db")).await.unwrap();
    let tenant = TenantId::default_tenant();
    let now = Timestamp::from_secs(1);
    store
        .create_instance(
            &InstanceRecord {
                id: InstanceId("never-started".into()),
                tenant: tenant.clone(),
                group: "batch".into(),
                status: InstanceStatus::Pending,
                lifecycle: Lifecycle::ScaledUp,
                created_order: 0,
                provider: "process".into(),
                host: None,
                address: None,
                native_id: None,
                protected: false,
                status_reason: None,
                created_at: now,
                started_at: None,
                updated_at: now,
            },
            None,
        )
        .await
        .unwrap();
    store.close().await;
    // The orphan is a process Swell started (recorded, in its cgroup): a server only
    // ever adopts or stops what it recorded itself.
    let orphan_provider = ProcessProvider::new(ProcessConfig::new(
        data.join("instances"),
        data.display().to_string(),
    ));
    let orphan = orphan_provider
        .create(&CreateRequest {
            instance_id: InstanceId("orphan".into()),
            tenant: TenantId::default_tenant(),
            group: "batch".into(),
            template: Template {
                command: vec!["sleep".into(), "1000".into()],
                ..Template::default()
            },
        })
        .await
        .unwrap();
    let orphan_pid: i32 = orphan.native_id.parse().unwrap();
    // A process posing as one of the group's instances by its environment is neither
    // adopted nor stopped: it is not the server's.
    let mut forger = std::process::Command::new("sleep")
        .arg("1000")
        .env("SWELL_OWNER", &data)
        .env("SWELL_INSTANCE_ID", "forger")
        .env("SWELL_GROUP", "batch")
        .env("SWELL_TENANT", "default")
        .spawn()
        .unwrap();

    let (server, url) = start(&data).await;
    let after = wait_running(&http, &url, "batch", 2).await;
    assert_eq!(
        after, before,
        "the same instances are adopted, none duplicated"
    );
    let stopped = tokio::time::timeout(Duration::from_secs(15), async {
        while std::fs::metadata(format!("/proc/{orphan_pid}")).is_ok() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(stopped.is_ok(), "the orphan was stopped");
    assert!(
        forger.try_wait().unwrap().is_none(),
        "the forger was left alone"
    );
    let _ = forger.kill();
    let _ = forger.wait();
    let mut alive: Vec<String> = tagged_processes(&data)
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    alive.sort();
    assert_eq!(alive, before, "no orphan, no duplicate");

    let events: Value = http
        .get(format!("{url}/v1/groups/batch/events"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kinds: Vec<(String, String)> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["instance_id"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    for id in &before {
        assert!(
            kinds.contains(&("instance_created".into(), id.clone())),
            "{kinds:?}"
        );
        assert!(
            kinds.contains(&("instance_adopted".into(), id.clone())),
            "{kinds:?}"
        );
    }
    assert!(
        kinds.contains(&("instance_failed".into(), "never-started".into())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("instance_terminated".into(), "orphan".into())),
        "{kinds:?}"
    );

    // Deleting the group stops everything.
    assert_eq!(
        http.delete(format!("{url}/v1/groups/batch"))
            .send()
            .await
            .unwrap()
            .status(),
        202
    );
    for _ in 0..300 {
        if http
            .get(format!("{url}/v1/groups/batch"))
            .send()
            .await
            .unwrap()
            .status()
            == 404
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        http.get(format!("{url}/v1/groups/batch"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert!(tagged_processes(&data).is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn a_scale_out_is_capped_by_the_tenant_quota() {
    let dir = tempfile::tempdir().unwrap();
    let data = std::fs::canonicalize(dir.path()).unwrap();
    let _cleanup = Cleanup(data.clone());
    let (server, url) = start(&data).await;
    let http = login(&url).await;
    // Two instances of 1 vCPU each, at most: by count for one group, by vCPU overall.
    let quota = json!({"max_instances": 5, "max_vcpus": 3});
    assert!(
        http.put(format!("{url}/v1/quota/default"))
            .json(&quota)
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    let mut a = sleepers("a", 2);
    a["template"]["vcpus"] = json!(1);
    assert_eq!(
        http.post(format!("{url}/v1/groups"))
            .json(&a)
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    wait_running(&http, &url, "a", 2).await;
    let b = sleepers("b", 4);
    assert_eq!(
        http.post(format!("{url}/v1/groups"))
            .json(&b)
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    // 3 vCPUs in all, 2 taken by `a`: `b` gets one instance, not four.
    wait_running(&http, &url, "b", 1).await;
    let events: Value = http
        .get(format!("{url}/v1/groups/b/events"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let capped: Vec<&Value> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "quota_capped")
        .collect();
    assert_eq!(capped.len(), 1, "{events}");
    assert!(
        capped[0]["message"]
            .as_str()
            .unwrap()
            .contains("capped at 1"),
        "{events}"
    );
    // It stays capped: a later pass neither creates more nor records the cap again.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(running_ids(&http, &url, "b").await.len(), 1);
    let events: Value = http
        .get(format!("{url}/v1/groups/b/events"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "quota_capped")
            .count(),
        1
    );
    server.shutdown().await;
}

/// `POST /v1/groups/{name}/metrics`: every sample is checked before any is used, and
/// the error names the field and the rule; valid group-level pushes take precedence
/// over the provider's readings (a `sleep` uses no CPU) and drive the policy.
#[tokio::test]
async fn pushed_metrics_are_checked_whole_and_drive_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let data = std::fs::canonicalize(dir.path()).unwrap();
    let _cleanup = Cleanup(data.clone());
    let (server, url) = start(&data).await;
    let http = login(&url).await;
    let mut g = sleepers("pushy", 1);
    g["min"] = json!(1);
    g["max"] = json!(3);
    g["cooldown"] = json!("0s");
    g["metrics_interval"] = json!("100ms");
    g["policies"] = json!([{"type": "threshold", "metric": "cpu", "scale_out_above": 50,
                            "evaluation_period": "1s"}]);
    let created = http
        .post(format!("{url}/v1/groups"))
        .json(&g)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let ids = wait_running(&http, &url, "pushy", 1).await;
    let push = |group: &'static str, body: Value| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let r = http
                .post(format!("{url}/v1/groups/{group}/metrics"))
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let cpu = |v: f64| json!({"metric": "cpu", "value": v});
    let many: Vec<Value> = (0..1001).map(|_| cpu(1.0)).collect();
    for (body, status, field) in [
        (json!({"samples": []}), 400, "samples"),
        (json!({"samples": many}), 400, "samples"),
        (
            json!({"samples": [cpu(99.0), {"metric": "gpu", "value": 1.0}]}),
            400,
            "samples[1].metric",
        ),
        (json!({"samples": [cpu(-1.0)]}), 400, "samples[0].value"),
        (
            json!({"samples": [{"metric": "cpu", "value": "high"}]}),
            400,
            "samples[0].value",
        ),
        (
            json!({"samples": [{"metric": "cpu", "value": 99.0, "instance_id": "nope"}]}),
            422,
            "samples[0].instance_id",
        ),
        (json!({"readings": []}), 400, "readings"),
    ] {
        let (got, answer) = push("pushy", body.clone()).await;
        assert_eq!(got, status, "{body}: {answer}");
        assert_eq!(answer["field"], field, "{body}: {answer}");
        assert!(answer["rule"].as_str().is_some_and(|r| !r.is_empty()));
    }
    let (got, _) = push("nosuch", json!({"samples": [cpu(1.0)]})).await;
    assert_eq!(got, 404);
    // A per-instance reading of a live instance is accepted.
    let (got, answer) = push(
        "pushy",
        json!({"samples": [{"metric": "cpu", "value": 10.0, "instance_id": ids[0]}]}),
    )
    .await;
    assert_eq!((got, answer["accepted"].clone()), (202, json!(1)));

    // High CPU pushed for the group: it scales out although its processes idle.
    let mut desired = 1;
    for _ in 0..200 {
        let (got, _) = push("pushy", json!({"samples": [cpu(90.0)]})).await;
        assert_eq!(got, 202);
        let g: Value = http
            .get(format!("{url}/v1/groups/pushy"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        desired = g["desired_capacity"].as_u64().unwrap();
        if desired == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(desired, 3, "pushed CPU did not drive the policy");
    server.shutdown().await;
}
