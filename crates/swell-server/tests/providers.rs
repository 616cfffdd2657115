//! Provider definitions (issue 15, operator resources vs tenant resources), over real
//! HTTP against an in-process server on a real SQLite file, with real processes: an
//! admin defines providers by name and grants them to tenants; a member cannot define
//! one; a tenant names only what it was granted (or what is private to it); another
//! tenant's private definition is indistinguishable from none; a secret is sealed and
//! never shown; a definition in use cannot go; after a restart the instances of stored
//! definitions are adopted, each by its own definition.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;
use swell_server::{Server, ServerConfig};

const ADMIN_PASSWORD: &str = "providers-test-admin";
/// The OpenStack secret of the private definition: it must never come back out.
const SECRET: &str = "s3cret-app-cred-Zq81x";

async fn start(dir: &Path, stop_instances_on_exit: bool) -> Server {
    Server::start(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        stop_instances_on_exit,
        admin_password: Some(swell_server::secrets::SecretString::new(ADMIN_PASSWORD)),
        min_interval: Duration::from_millis(200),
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
    fn of(server: &Server) -> Api {
        Api {
            url: server.url(),
            http: reqwest::Client::new(),
        }
    }

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

    /// The instances of `group` that are running, as (id, native id).
    async fn running(&self, token: &str, group: &str) -> Vec<(String, String)> {
        let v = self
            .ok(
                token,
                reqwest::Method::GET,
                &format!("/v1/groups/{group}/instances"),
                None,
            )
            .await;
        v["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["status"] == "running")
            .map(|i| {
                (
                    i["id"].as_str().unwrap().to_string(),
                    i["native_id"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    async fn wait_running(&self, token: &str, group: &str, n: usize) -> Vec<(String, String)> {
        for _ in 0..300 {
            let ids = self.running(token, group).await;
            if ids.len() == n {
                return ids;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("group {group} never reached {n} running instances");
    }
}

/// A group of `sleep` processes on `provider` (no load balancer: running once spawned).
fn sleepers(name: &str, provider: &str, desired: u32) -> Value {
    json!({
        "name": name,
        "provider": provider,
        "template": {"command": ["sleep", "1000"]},
        "min": 0, "max": 3, "desired_capacity": desired,
        "evaluation_interval": "200ms", "metrics_interval": "200ms",
        "policies": [{"type": "threshold", "scale_out_above": 1000}]
    })
}

fn refused(answer: &(u16, Value), status: u16, field: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["field"], field, "{}", answer.1);
}

/// Kills, at the end whatever happened, every process any provider of this data
/// directory started (the server's tag, or `<tag>#<definition>`).
struct Cleanup(PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let tag = format!("SWELL_OWNER={}", self.0.display());
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(env) = std::fs::read(entry.path().join("environ")) else {
                continue;
            };
            let ours = env.split(|b| *b == 0).any(|v| {
                let v = String::from_utf8_lossy(v);
                v == tag || v.starts_with(&format!("{tag}#"))
            });
            if ours {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_define_providers_tenants_use_what_they_were_granted() {
    use reqwest::Method as M;
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::fs::canonicalize(tmp.path()).unwrap();
    let _cleanup = Cleanup(dir.clone());
    let server = start(&dir, false).await;
    let api = Api::of(&server);
    let admin = api.login("admin", ADMIN_PASSWORD, "default").await;

    // Two tenants, a member in each.
    let mut member = std::collections::HashMap::new();
    for t in ["ay", "bee"] {
        api.ok(&admin, M::POST, "/v1/tenants", Some(json!({"name": t})))
            .await;
        let user = format!("{t}-member");
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
            &format!("/v1/tenants/{t}/users/{user}"),
            Some(json!({"role": "member"})),
        )
        .await;
        member.insert(t, api.login(&user, &pw, t).await);
    }
    let (a, b) = (member["ay"].clone(), member["bee"].clone());
    let listed = |token: String| {
        let api = &api;
        async move {
            let v = api.ok(&token, M::GET, "/v1/providers", None).await;
            v["providers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };

    // A member cannot define a provider; nothing is stored.
    let rack = json!({"name": "rack1", "kind": "process"});
    let (st, _) = api
        .call(&b, M::POST, "/v1/providers", Some(rack.clone()))
        .await;
    assert_eq!(st, 403);
    assert_eq!(
        listed(admin.clone()).await,
        ["process"],
        "only the built-in"
    );

    // Bad definitions: refused naming the field, nothing stored.
    for (body, status, field) in [
        (json!({"name": "x", "kind": "qemu"}), 400, "config"),
        (json!({"name": "qemu", "kind": "qemu"}), 400, "name"),
        (
            json!({"name": "x", "kind": "qemu", "config": {"hosts": []}}),
            400,
            "config.hosts",
        ),
        (
            json!({"name": "x", "kind": "qemu", "config": {"hosts": [{"name": "a", "state_dir": "rel"}]}}),
            400,
            "config.hosts[0].state_dir",
        ),
        (
            json!({"name": "x", "kind": "qemu", "config": {"hosts": [{"name": "a", "state_dir": "/tmp/a"}], "never_above_percent": -1}}),
            400,
            "config.never_above_percent",
        ),
        (
            json!({"name": "x", "kind": "qemu", "config": {"hosts": [{"name": "a", "state_dir": "/tmp/a"}], "accel": "xen"}}),
            400,
            "config.accel",
        ),
        (json!({"name": "docker", "kind": "docker"}), 400, "name"),
        (json!({"name": "Bad_Name", "kind": "process"}), 400, "name"),
        (
            json!({"name": "x", "kind": "process", "credentials": "pw"}),
            400,
            "credentials",
        ),
        (
            json!({"name": "x", "kind": "process", "config": {"colour": "red"}}),
            400,
            "config",
        ),
        (
            json!({"name": "x", "kind": "docker", "config": {"engines": [{"name": "e", "endpoint": "tcp://127.0.0.1:2375"}]}}),
            400,
            "config.engines[0].tls",
        ),
        (
            json!({"name": "x", "kind": "openstack", "config": {"auth_url": "http://127.0.0.1:9/v3", "application_credential_id": "id"}}),
            400,
            "credentials",
        ),
        (
            json!({"name": "x", "kind": "process", "tenant": "nobody"}),
            422,
            "tenant",
        ),
        (
            json!({"name": "x", "kind": "process", "extra": 1}),
            400,
            "extra",
        ),
    ] {
        let answer = api.call(&admin, M::POST, "/v1/providers", Some(body)).await;
        assert_eq!(answer.0, status, "{}", answer.1);
        assert!(
            answer.1["field"]
                .as_str()
                .unwrap_or_default()
                .starts_with(field),
            "{field}: {}",
            answer.1
        );
    }
    assert_eq!(listed(admin.clone()).await, ["process"], "nothing stored");

    // The admin defines an operator-wide `rack1` and, private to `ay`, its own
    // OpenStack project (an application credential) and its own process provider.
    let created = api
        .ok(&admin, M::POST, "/v1/providers", Some(rack.clone()))
        .await;
    assert_eq!(created["kind"], "process");
    assert_eq!(created["tenant"], Value::Null);
    assert_eq!(created["builtin"], false);
    let (st, _) = api.call(&admin, M::POST, "/v1/providers", Some(rack)).await;
    assert_eq!(st, 409, "the name is taken");
    let os = api
        .ok(
            &admin,
            M::POST,
            "/v1/providers",
            Some(json!({
                "name": "os-ay", "kind": "openstack", "tenant": "ay",
                "config": {"auth_url": "http://127.0.0.1:9/v3", "application_credential_id": "ay-cred", "region": "RegionOne"},
                "credentials": SECRET,
            })),
        )
        .await;
    assert_eq!(os["credentials"], "set");
    assert_eq!(os["tenant"], "ay");
    api.ok(
        &admin,
        M::POST,
        "/v1/providers",
        Some(json!({"name": "proc-ay", "kind": "process", "tenant": "ay"})),
    )
    .await;

    // Grants name definitions: an unknown one, or one private to another tenant, is
    // refused naming the entry.
    for (providers, field) in [
        (json!(["rack1", "nope"]), "providers[1]"),
        (json!(["os-ay"]), "providers[0]"),
    ] {
        refused(
            &api.call(
                &admin,
                M::PUT,
                "/v1/tenants/bee",
                Some(json!({"providers": providers})),
            )
            .await,
            400,
            field,
        );
    }
    api.ok(
        &admin,
        M::PUT,
        "/v1/tenants/bee",
        Some(json!({"providers": ["rack1"]})),
    )
    .await;

    // What each tenant sees: what it may use, and nothing of the other's.
    assert_eq!(listed(b.clone()).await, ["rack1"]);
    assert_eq!(listed(a.clone()).await, ["os-ay", "proc-ay"]);
    let hidden = api.call(&b, M::GET, "/v1/providers/os-ay", None).await;
    let absent = api.call(&b, M::GET, "/v1/providers/os-zz", None).await;
    assert_eq!((hidden.0, absent.0), (404, 404));
    assert_eq!(
        hidden.1["detail"].as_str().unwrap().replace("os-ay", "X"),
        absent.1["detail"].as_str().unwrap().replace("os-zz", "X"),
        "another tenant's private definition reads like none"
    );
    refused(
        &api.call(&b, M::GET, "/v1/providers/Not_A_Name", None).await,
        400,
        "name",
    );
    let own = api.ok(&a, M::GET, "/v1/providers/os-ay", None).await;
    assert_eq!(own["credentials"], "set");
    assert_eq!(own["config"], Value::Null, "config is for admins");
    assert_eq!(
        api.ok(&admin, M::GET, "/v1/providers/os-ay", None).await["config"]["region"],
        "RegionOne"
    );

    // B's group on `rack1` runs; A naming `rack1` (not granted) is 403 on `provider`
    // and nothing is stored; B naming A's private provider reads like a name that
    // does not exist.
    api.ok(&b, M::POST, "/v1/groups", Some(sleepers("web", "rack1", 1)))
        .await;
    let before_b = api.wait_running(&b, "web", 1).await;
    let answer = api
        .call(&a, M::POST, "/v1/groups", Some(sleepers("web", "rack1", 1)))
        .await;
    refused(&answer, 403, "provider");
    assert_eq!(
        api.ok(&a, M::GET, "/v1/groups", None).await["groups"],
        json!([]),
        "nothing stored"
    );
    let private = api
        .call(&b, M::POST, "/v1/groups", Some(sleepers("x", "proc-ay", 1)))
        .await;
    let unknown = api
        .call(&b, M::POST, "/v1/groups", Some(sleepers("x", "proc-zz", 1)))
        .await;
    refused(&private, 403, "provider");
    refused(&unknown, 403, "provider");
    assert_eq!(
        private.1["detail"]
            .as_str()
            .unwrap()
            .replace("proc-ay", "X"),
        unknown.1["detail"]
            .as_str()
            .unwrap()
            .replace("proc-zz", "X"),
    );
    // A uses its private provider without a grant.
    api.ok(
        &a,
        M::POST,
        "/v1/groups",
        Some(sleepers("own", "proc-ay", 1)),
    )
    .await;
    let before_a = api.wait_running(&a, "own", 1).await;
    let inst = api.ok(&b, M::GET, "/v1/groups/web/instances", None).await;
    assert_eq!(inst["instances"][0]["provider"], "rack1");
    // Each definition records its instances under its own owner tag
    // (`<data dir>#<name>`), never under the server's or another definition's: what
    // each adopts at a restart is its own.
    let records = |definition: &str| -> Vec<String> {
        let mut out = Vec::new();
        for d in std::fs::read_dir(dir.join("process-records"))
            .unwrap()
            .flatten()
        {
            let name = d.file_name().to_string_lossy().into_owned();
            if name.contains(&format!("_{definition}-")) {
                for f in std::fs::read_dir(d.path()).unwrap().flatten() {
                    out.push(f.file_name().to_string_lossy().into_owned());
                }
            }
        }
        out
    };
    assert_eq!(records("rack1"), [format!("{}.json", before_b[0].0)]);
    assert_eq!(records("proc-ay"), [format!("{}.json", before_a[0].0)]);

    // In use: the definition cannot go (the count, never the group's name); a built-in
    // never can.
    let answer = api
        .call(&admin, M::DELETE, "/v1/providers/rack1", None)
        .await;
    assert_eq!(answer.0, 409, "{}", answer.1);
    let detail = answer.1["detail"].as_str().unwrap();
    assert!(
        detail.contains("1 group(s)") && !detail.contains("web"),
        "{detail}"
    );
    let (st, _) = api
        .call(&admin, M::DELETE, "/v1/providers/process", None)
        .await;
    assert_eq!(st, 409);

    // Changing a definition rebuilds its provider at once: B's group keeps its
    // instance (same owner tag) and scales out through the new one.
    let changed = api
        .ok(
            &admin,
            M::PUT,
            "/v1/providers/rack1",
            Some(json!({"config": {}})),
        )
        .await;
    assert_ne!(changed["updated_at"], created["updated_at"]);
    api.ok(
        &b,
        M::PUT,
        "/v1/groups/web/desired_capacity",
        Some(json!({"desired_capacity": 2})),
    )
    .await;
    let two = api.wait_running(&b, "web", 2).await;
    assert!(two.contains(&before_b[0]), "{two:?} keeps {before_b:?}");
    api.ok(
        &b,
        M::PUT,
        "/v1/groups/web/desired_capacity",
        Some(json!({"desired_capacity": 1})),
    )
    .await;
    let before_b = api.wait_running(&b, "web", 1).await;
    // The retired one finishes its drain and delete before the restart below, so that
    // what the restart does to the group is adoption only.
    let mut live = usize::MAX;
    for _ in 0..300 {
        let listed = api.ok(&b, M::GET, "/v1/groups/web/instances", None).await;
        live = listed["instances"].as_array().unwrap().len();
        if live == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(live, 1, "the retired instance is gone");

    // A new secret replaces the old one; neither ever comes back, nor reaches the
    // audit log or the store file in the clear.
    api.ok(
        &admin,
        M::PUT,
        "/v1/providers/os-ay",
        Some(json!({"credentials": format!("{SECRET}-2")})),
    )
    .await;
    let mut seen = String::new();
    for token in [&admin, &a] {
        seen.push_str(
            &api.ok(token, M::GET, "/v1/providers", None)
                .await
                .to_string(),
        );
        seen.push_str(
            &api.ok(token, M::GET, "/v1/providers/os-ay", None)
                .await
                .to_string(),
        );
    }
    seen.push_str(
        &api.ok(&admin, M::GET, "/v1/audit?all=true", None)
            .await
            .to_string(),
    );
    assert!(seen.contains("POST /v1/providers"), "the calls are audited");
    assert!(!seen.contains(SECRET), "a secret was shown");
    let events_before = api.ok(&b, M::GET, "/v1/groups/web/events", None).await["events"]
        .as_array()
        .unwrap()
        .len();
    server.shutdown().await;
    for file in std::fs::read_dir(&dir).unwrap().flatten() {
        if file.file_name().to_string_lossy().starts_with("swell.db") {
            // A `-wal` or `-shm` file may go while the store closes.
            let Ok(bytes) = std::fs::read(file.path()) else {
                continue;
            };
            assert!(
                !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
                "{} holds the secret in the clear",
                file.path().display()
            );
        }
    }

    // After a restart the stored definitions are back, and their instances adopted
    // (same ids, same processes), each by its own definition.
    let server = start(&dir, true).await;
    let api = Api::of(&server);
    let b = api
        .login("bee-member", "bee-member-password-42", "bee")
        .await;
    let a = api.login("ay-member", "ay-member-password-42", "ay").await;
    assert_eq!(api.wait_running(&b, "web", 1).await, before_b);
    assert_eq!(api.wait_running(&a, "own", 1).await, before_a);
    let events = api.ok(&b, M::GET, "/v1/groups/web/events", None).await;
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .skip(events_before)
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"instance_adopted"), "{kinds:?}");
    assert!(
        !kinds.contains(&"instance_failed") && !kinds.contains(&"instance_terminated"),
        "{kinds:?}"
    );
    let admin = api.login("admin", ADMIN_PASSWORD, "default").await;
    let all = api.ok(&admin, M::GET, "/v1/providers", None).await;
    let names: Vec<&str> = all["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["os-ay", "proc-ay", "process", "rack1"]);
    assert!(!all.to_string().contains(SECRET));
    server.shutdown().await;
}

/// Recovery adopts a tenant-private provider's instances into its own tenant only: a
/// live instance of that provider recorded under another tenant's group (which no API
/// path can make; a hand-edited or forged row) is neither adopted nor touched. Real
/// SQLite, real processes through the real registry and controller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_providers_instances_are_adopted_for_its_tenant_only() {
    use std::sync::Arc;
    use swell_core::{EventKind, InstanceId, InstanceStatus, Lifecycle, TenantId, Timestamp};
    use swell_providers::CreateRequest;
    use swell_providers::process::ProcessConfig;
    use swell_server::clock::{Clock, TokioClock};
    use swell_server::controller::{Controller, ControllerOptions};
    use swell_server::registry::{ProviderRegistry, RegistryContext};
    use swell_store::{EventFilter, InstanceRecord, NewEvent, ProviderRecord, SqliteStore, Store};

    let tmp = tempfile::tempdir().unwrap();
    let dir = std::fs::canonicalize(tmp.path()).unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("swell.db")).await.unwrap());
    let owner = dir.display().to_string();
    let mut process = ProcessConfig::new(dir.join("instances"), owner.clone());
    process.cgroups = false;
    let registry = ProviderRegistry::new(RegistryContext { owner, process });
    let (a, b) = (TenantId::new("ay").unwrap(), TenantId::new("bee").unwrap());
    let now = Timestamp::from_millis(1_000);
    for t in [&a, &b] {
        store.ensure_tenant(t, now).await.unwrap();
    }
    let private = ProviderRecord {
        name: "proc-ay".into(),
        kind: swell_core::ProviderKind::Process,
        config: json!({}),
        tenant: Some(a.clone()),
        credentials: None,
        created_at: now,
        updated_at: now,
    };
    store.create_provider(&private).await.unwrap();
    registry.define(&private, None).unwrap();
    let provider = registry.get(&a, "proc-ay").unwrap();

    // One live instance each, both started by `proc-ay`, recorded in each tenant's group.
    let mut started = Vec::new();
    for t in [&a, &b] {
        let spec: swell_core::GroupSpec =
            serde_json::from_value(sleepers("web", "proc-ay", 0)).unwrap();
        let event = NewEvent {
            tenant: t.clone(),
            group: "web".into(),
            at: now,
            kind: EventKind::GroupCreated,
            instance_id: None,
            cause: None,
            message: "created".into(),
        };
        store.create_group(t, &spec, now, event).await.unwrap();
        let id = InstanceId(format!("i-{t}"));
        let live = provider
            .create(&CreateRequest {
                instance_id: id.clone(),
                tenant: t.clone(),
                group: "web".into(),
                template: spec.template.clone(),
            })
            .await
            .unwrap();
        store
            .create_instance(
                &InstanceRecord {
                    id: id.clone(),
                    tenant: t.clone(),
                    group: "web".into(),
                    status: InstanceStatus::Running,
                    lifecycle: Lifecycle::Permanent,
                    created_order: 0,
                    provider: "proc-ay".into(),
                    host: Some(live.host.clone()),
                    address: None,
                    native_id: Some(live.native_id.clone()),
                    protected: false,
                    status_reason: None,
                    created_at: now,
                    started_at: Some(now),
                    updated_at: now,
                },
                None,
            )
            .await
            .unwrap();
        started.push(id);
    }

    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let controller = Controller::with_registry(
        store.clone(),
        registry.clone(),
        clock,
        ControllerOptions::default(),
    );
    controller.recover().await.unwrap();
    let adopted = |t: TenantId| {
        let store = store.clone();
        async move {
            store
                .list_events(&t, "web", &EventFilter::default())
                .await
                .unwrap()
                .into_iter()
                .filter(|e| e.event.kind == EventKind::InstanceAdopted)
                .count()
        }
    };
    assert_eq!(adopted(a.clone()).await, 1, "its own tenant's instance");
    assert_eq!(adopted(b.clone()).await, 0, "never into another tenant");
    let b_row = store.get_instance(&b, &started[1]).await.unwrap().unwrap();
    assert_eq!(b_row.status_reason, None, "left as it was");
    for id in &started {
        provider.delete(id, Duration::from_secs(2)).await.unwrap();
    }
}
