//! End-to-end tests of the `openstack` provider against a REAL OpenStack on this machine
//! (Keystone, Nova with its fake hypervisor, Neutron, Glance, Octavia with no-op
//! drivers; `scripts/openstack/up.sh` starts it, `scripts/test` runs these): the real
//! `swell serve --openstack` binary, driven through its API and CLI, checked against
//! what Nova, Neutron and Octavia report.
//!
//! Run with `cargo test -p swell --test openstack_e2e -- --ignored --test-threads=1`.
//!
//! The cloud is shared with the provider's own integration tests, which may run at the
//! same time: these tests touch only what they create — servers tagged with their own
//! server's `swell_owner`, their own load balancer, flavor and project — and never the
//! admin project's quota (the quota test uses a project of its own). A [`CloudGuard`]
//! removes all of it when a test ends, passed or failed; a [`Stopped`] guard always
//! resumes a nova-compute the test stopped.
//!
//! Fake servers run nothing, so the CPU the policies see is pushed through Swell's
//! metric API (`POST /v1/groups/{name}/metrics`, `swell metrics push`).

mod common;

use common::{Pusher, Swell, eventually, of_kind};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

const KEYSTONE: &str = "http://127.0.0.1:5000/v3";
const NOVA: &str = "http://127.0.0.1:8774/v2.1";
const NEUTRON: &str = "http://127.0.0.1:9696/v2.0";
const OCTAVIA: &str = "http://127.0.0.1:9876/v2";
const ADMIN_USER: &str = "admin";
const ADMIN_PASS: &str = "adminpass";
/// Scale steps on the fake hypervisor take 10–20 s each (7–10 s to ACTIVE, floating IP
/// and Octavia member); a loaded two-core machine is slower.
const CONVERGE: Duration = Duration::from_secs(240);

/// A member the test keeps in its Octavia pool: the fixture's Octavia (no-op network
/// driver) fails to remove the last member of a subnet (a `KeyError` computing the
/// network delta leaves it in ERROR), so Swell's members are never the last.
const SENTINEL: &str = "swell-e2e-sentinel";

/// One test at a time even without `--test-threads=1` (one nova-compute to stop).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The fixture's state directory (PID files in `run/`).
fn state_dir() -> PathBuf {
    std::env::var_os("SWELL_OPENSTACK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root/.cache/swell/openstack"))
}

/// A short unique suffix for the names a test creates.
fn unique() -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    format!("{}", n % 100_000_000)
}

/// The `OS_*` environment of `swell serve --openstack` for `project`.
fn os_env(project: &str) -> Vec<(&'static str, String)> {
    vec![
        ("OS_AUTH_URL", KEYSTONE.to_string()),
        ("OS_USERNAME", ADMIN_USER.to_string()),
        ("OS_PASSWORD", ADMIN_PASS.to_string()),
        ("OS_PROJECT_NAME", project.to_string()),
        ("OS_USER_DOMAIN_ID", "default".to_string()),
        ("OS_PROJECT_DOMAIN_ID", "default".to_string()),
        ("OS_REGION_NAME", "RegionOne".to_string()),
        ("OS_INTERFACE", "public".to_string()),
    ]
}

/// Starts `swell serve --openstack` on `project` with `extra` serve arguments.
async fn start_swell(project: &str, extra: &[&str]) -> Swell {
    let env = os_env(project);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut args = vec!["--openstack"];
    args.extend_from_slice(extra);
    let s = Swell::start_with(&args, &env).await;
    // The bootstrap grants cover `process` only (issue 15): the admin grants the
    // `default` tenant the openstack provider and the test image.
    let granted = s
        .request(
            reqwest::Method::PUT,
            "/v1/tenants/default",
            Some(r#"{"providers": ["process", "openstack"], "images": ["tiny"]}"#),
        )
        .await;
    assert_eq!(granted.status, 200, "{:?}", granted.body);
    s
}

/// A client of the cloud as the admin user, scoped to the admin project (it lists
/// every project's servers).
#[derive(Clone)]
struct Cloud {
    http: reqwest::Client,
    token: String,
}

/// One Nova server that carries a Swell owner tag.
#[derive(Debug, Clone)]
struct Server {
    id: String,
    instance: String,
    status: String,
    task_state: Option<String>,
    project: String,
}

impl Cloud {
    async fn login() -> Cloud {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("an HTTP client");
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": ADMIN_USER, "domain": {"id": "default"}, "password": ADMIN_PASS}}},
            "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}
        }});
        let r = http
            .post(format!("{KEYSTONE}/auth/tokens"))
            .json(&body)
            .send()
            .await
            .expect("Keystone answers (is the fixture up? scripts/openstack/up.sh)");
        assert_eq!(r.status().as_u16(), 201, "login to Keystone");
        let token = r
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .expect("a token")
            .to_string();
        Cloud { http, token }
    }

    async fn call(&self, method: reqwest::Method, url: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method.clone(), url)
            .header("X-Auth-Token", &self.token)
            .header("OpenStack-API-Version", "compute 2.79");
        if let Some(b) = body {
            req = req.json(&b);
        }
        match req.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let bytes = r.bytes().await.unwrap_or_default();
                (
                    status,
                    serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                )
            }
            Err(e) => (0, Value::String(format!("{method} {url}: {e}"))),
        }
    }

    async fn get(&self, url: &str) -> Value {
        let (status, body) = self.call(reqwest::Method::GET, url, None).await;
        assert_eq!(status, 200, "GET {url}: {body}");
        body
    }

    async fn post(&self, url: &str, body: Value) -> Value {
        let (status, answer) = self
            .call(reqwest::Method::POST, url, Some(body.clone()))
            .await;
        assert!(
            (200..300).contains(&status),
            "POST {url} {body}: {status} {answer}"
        );
        answer
    }

    /// Every server (all projects) whose `swell_owner` is `owner`.
    async fn servers(&self, owner: &str) -> Vec<Server> {
        let v = self
            .get(&format!("{NOVA}/servers/detail?all_tenants=1&limit=1000"))
            .await;
        v["servers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|s| s["metadata"]["swell_owner"] == owner)
            .map(|s| Server {
                id: s["id"].as_str().unwrap_or_default().to_string(),
                instance: s["metadata"]["swell_instance"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                status: s["status"].as_str().unwrap_or_default().to_string(),
                task_state: s["OS-EXT-STS:task_state"].as_str().map(str::to_string),
                project: s["tenant_id"].as_str().unwrap_or_default().to_string(),
            })
            .collect()
    }

    /// The floating IPs on the server's ports.
    async fn floating_ips(&self, server_id: &str) -> Vec<String> {
        let ports = self
            .get(&format!("{NEUTRON}/ports?device_id={server_id}"))
            .await;
        let mut out = Vec::new();
        for p in ports["ports"].as_array().cloned().unwrap_or_default() {
            let port = p["id"].as_str().unwrap_or_default();
            let fips = self
                .get(&format!("{NEUTRON}/floatingips?port_id={port}"))
                .await;
            for f in fips["floatingips"].as_array().cloned().unwrap_or_default() {
                out.push(f["floating_ip_address"].as_str().unwrap_or_default().into());
            }
        }
        out
    }

    /// The member names of an Octavia pool (the provider names them by instance id),
    /// without the test's [`SENTINEL`].
    async fn members(&self, pool: &str) -> BTreeSet<String> {
        let v = self
            .get(&format!("{OCTAVIA}/lbaas/pools/{pool}/members"))
            .await;
        v["members"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|m| m["name"].as_str().unwrap_or_default().to_string())
            .filter(|n| n != SENTINEL)
            .collect()
    }

    /// Waits until `path` (an Octavia object) is ACTIVE.
    async fn octavia_active(&self, path: &str) {
        let url = format!("{OCTAVIA}/lbaas/{path}");
        eventually(&format!("{path} ACTIVE"), CONVERGE, || async {
            let (status, v) = self.call(reqwest::Method::GET, &url, None).await;
            let state = v
                .as_object()
                .and_then(|o| o.values().next())
                .and_then(|o| o["provisioning_status"].as_str())
                .unwrap_or_default()
                .to_string();
            assert_ne!(state, "ERROR", "{path} went to ERROR: {v}");
            if state == "ACTIVE" {
                Ok(())
            } else {
                Err(format!("{status} {state}"))
            }
        })
        .await;
    }

    /// A project `name` with the admin user as its admin; returns its id.
    async fn create_project(&self, name: &str) -> String {
        let v = self
            .post(
                &format!("{KEYSTONE}/projects"),
                json!({"project": {"name": name, "domain_id": "default"}}),
            )
            .await;
        let id = v["project"]["id"]
            .as_str()
            .expect("a project id")
            .to_string();
        let users = self
            .get(&format!("{KEYSTONE}/users?name={ADMIN_USER}"))
            .await;
        let user = users["users"][0]["id"].as_str().expect("the admin user");
        let roles = self.get(&format!("{KEYSTONE}/roles?name=admin")).await;
        let role = roles["roles"][0]["id"].as_str().expect("the admin role");
        let (status, body) = self
            .call(
                reqwest::Method::PUT,
                &format!("{KEYSTONE}/projects/{id}/users/{user}/roles/{role}"),
                None,
            )
            .await;
        assert!((200..300).contains(&status), "role grant: {status} {body}");
        id
    }

    /// Removes every server tagged `owner` (their floating IPs first) and waits for
    /// Nova to forget them.
    /// Deletes the security groups Neutron lists for `query` (`name=…`, `project_id=…`).
    async fn remove_security_groups(&self, query: &str) {
        let v = self
            .call(
                reqwest::Method::GET,
                &format!("{NEUTRON}/security-groups?{query}"),
                None,
            )
            .await
            .1;
        for sg in v["security_groups"].as_array().cloned().unwrap_or_default() {
            let id = sg["id"].as_str().unwrap_or_default();
            self.call(
                reqwest::Method::DELETE,
                &format!("{NEUTRON}/security-groups/{id}"),
                None,
            )
            .await;
        }
    }

    async fn remove_servers(&self, owner: &str) {
        for s in self.servers(owner).await {
            let ports = self
                .call(
                    reqwest::Method::GET,
                    &format!("{NEUTRON}/ports?device_id={}", s.id),
                    None,
                )
                .await
                .1;
            for p in ports["ports"].as_array().cloned().unwrap_or_default() {
                let port = p["id"].as_str().unwrap_or_default();
                let fips = self
                    .call(
                        reqwest::Method::GET,
                        &format!("{NEUTRON}/floatingips?port_id={port}"),
                        None,
                    )
                    .await
                    .1;
                for f in fips["floatingips"].as_array().cloned().unwrap_or_default() {
                    let fid = f["id"].as_str().unwrap_or_default();
                    self.call(
                        reqwest::Method::DELETE,
                        &format!("{NEUTRON}/floatingips/{fid}"),
                        None,
                    )
                    .await;
                }
            }
            self.call(
                reqwest::Method::DELETE,
                &format!("{NOVA}/servers/{}", s.id),
                None,
            )
            .await;
        }
        for _ in 0..120 {
            if self.servers(owner).await.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        eprintln!(
            "cleanup: servers of {owner} still in Nova: {:?}",
            self.servers(owner).await
        );
    }
}

/// What a test created in the cloud, removed when the test ends (passed or failed),
/// after the Swell server is gone (declare it before the [`Swell`]).
struct CloudGuard {
    cloud: Option<Cloud>,
    owners: Vec<String>,
    load_balancers: Vec<String>,
    flavors: Vec<String>,
    /// Security groups by name, with the project they are in.
    security_groups: Vec<String>,
    projects: Vec<String>,
}

impl CloudGuard {
    fn new(cloud: &Cloud) -> CloudGuard {
        CloudGuard {
            cloud: Some(cloud.clone()),
            owners: Vec::new(),
            load_balancers: Vec::new(),
            flavors: Vec::new(),
            security_groups: Vec::new(),
            projects: Vec::new(),
        }
    }
}

impl Drop for CloudGuard {
    fn drop(&mut self) {
        let Some(cloud) = self.cloud.clone() else {
            return;
        };
        let owners = std::mem::take(&mut self.owners);
        let lbs = std::mem::take(&mut self.load_balancers);
        let flavors = std::mem::take(&mut self.flavors);
        let sgs = std::mem::take(&mut self.security_groups);
        let projects = std::mem::take(&mut self.projects);
        // Drop runs inside the test's runtime: the async cleanup gets a thread and a
        // runtime of its own.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a cleanup runtime");
            rt.block_on(async move {
                for owner in &owners {
                    cloud.remove_servers(owner).await;
                }
                for lb in &lbs {
                    cloud
                        .call(
                            reqwest::Method::DELETE,
                            &format!("{OCTAVIA}/lbaas/loadbalancers/{lb}?cascade=true"),
                            None,
                        )
                        .await;
                }
                for name in &sgs {
                    cloud.remove_security_groups(&format!("name={name}")).await;
                }
                for f in &flavors {
                    cloud
                        .call(
                            reqwest::Method::DELETE,
                            &format!("{NOVA}/flavors/{f}"),
                            None,
                        )
                        .await;
                }
                for p in &projects {
                    // Its default security group goes with it.
                    cloud
                        .remove_security_groups(&format!("project_id={p}"))
                        .await;
                    cloud
                        .call(
                            reqwest::Method::DELETE,
                            &format!("{NOVA}/os-quota-sets/{p}"),
                            None,
                        )
                        .await;
                    cloud
                        .call(
                            reqwest::Method::DELETE,
                            &format!("{KEYSTONE}/projects/{p}"),
                            None,
                        )
                        .await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// nova-compute stopped with SIGSTOP; SIGCONT when dropped, whatever happened.
struct Stopped(i32);

impl Stopped {
    fn nova_compute() -> Stopped {
        let file = state_dir().join("run/nova-compute.pid");
        let pid: i32 = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .trim()
            .parse()
            .expect("a pid");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .expect("SIGSTOP nova-compute");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGCONT,
        );
    }
}

/// A group document on the lab's shape with short timings.
fn lab_group(name: &str, flavor: &str, desired: u32, max: u32, extra: Value) -> Value {
    let mut os = json!({"flavor": flavor, "networks": ["private"]});
    if let (Some(o), Some(e)) = (os.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    json!({
        "name": name,
        "provider": "openstack",
        "template": {"image": "tiny", "vcpus": 1, "memory_mb": 512, "openstack": os},
        "min": 1,
        "max": max,
        "desired_capacity": desired,
        "cooldown": "2s",
        "warmup": "0s",
        "drain_timeout": "2s",
        "evaluation_interval": "1s",
        "metrics_interval": "1s",
        "policies": [{"type": "threshold", "metric": "cpu", "scale_out_above": 20,
                      "scale_in_below": 10, "step": 1, "evaluation_period": "3s"}],
    })
}

/// Creates the group with the CLI.
async fn create_group(s: &Swell, doc: &Value) {
    let name = doc["name"].as_str().expect("a name");
    let file = s.write(&format!("{name}.json"), &doc.to_string());
    let out = s.cli(&["-o", "json", "group", "create", "-f", &file]).await;
    assert!(out.status.success(), "group create: {out:#?}");
}

/// Swell's live instances of `group`: id → status.
async fn swell_live(s: &Swell, group: &str) -> BTreeMap<String, String> {
    s.instances(group, false)
        .await
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap_or_default().to_string(),
                i["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Waits until the group runs exactly `n` instances, all running, with desired `n`,
/// and Nova's servers tagged with this server's owner are exactly those, ACTIVE, one
/// server each. Returns the ids with their servers.
async fn converged(s: &Swell, cloud: &Cloud, group: &str, n: usize) -> BTreeMap<String, Server> {
    eventually(
        &format!("group {group} at {n} running instances, Nova in agreement"),
        CONVERGE,
        || async {
            let g = s.get(&format!("/v1/groups/{group}")).await;
            let live = swell_live(s, group).await;
            let servers = cloud.servers(&s.owner).await;
            let by_instance: BTreeMap<String, Server> = servers
                .iter()
                .map(|x| (x.instance.clone(), x.clone()))
                .collect();
            let swell_ids: BTreeSet<&String> = live.keys().collect();
            let nova_ids: BTreeSet<&String> = by_instance.keys().collect();
            let ok = g["desired_capacity"] == n
                && live.len() == n
                && live.values().all(|st| st == "running")
                && servers.len() == n
                && swell_ids == nova_ids
                && servers
                    .iter()
                    .all(|x| x.status == "ACTIVE" && x.task_state.is_none());
            if ok {
                Ok(by_instance)
            } else {
                Err(format!(
                    "desired {}, Swell {live:?}, Nova {:?}",
                    g["desired_capacity"],
                    servers
                        .iter()
                        .map(|x| format!("{} {} {:?}", x.instance, x.status, x.task_state))
                        .collect::<Vec<_>>()
                ))
            }
        },
    )
    .await
}

/// Checks, once converged, that each instance has one floating IP and one Octavia member.
async fn check_fips_and_members(cloud: &Cloud, servers: &BTreeMap<String, Server>, pool: &str) {
    for (id, server) in servers {
        let fips = cloud.floating_ips(&server.id).await;
        assert_eq!(
            fips.len(),
            1,
            "instance {id} (server {}) should have one floating IP: {fips:?}",
            server.id
        );
    }
    let ids: BTreeSet<String> = servers.keys().cloned().collect();
    eventually(
        "the Octavia pool to hold one member per instance",
        CONVERGE,
        || async {
            let members = cloud.members(pool).await;
            if members == ids {
                Ok(())
            } else {
                Err(format!("members {members:?}, instances {ids:?}"))
            }
        },
    )
    .await;
}

/// Deletes the group through the CLI and waits until it is gone and Nova holds no
/// server of this Swell.
async fn delete_group(s: &Swell, cloud: &Cloud, group: &str) {
    let out = s.cli(&["-o", "json", "group", "delete", group]).await;
    assert!(out.status.success(), "group delete: {out:#?}");
    eventually(
        &format!("group {group} to be deleted"),
        CONVERGE,
        || async {
            let a = s
                .request(reqwest::Method::GET, &format!("/v1/groups/{group}"), None)
                .await;
            let servers = cloud.servers(&s.owner).await;
            if a.status == 404 && servers.is_empty() {
                Ok(())
            } else {
                Err(format!("GET {}, servers {servers:?}", a.status))
            }
        },
    )
    .await;
}

/// An Octavia load balancer with an HTTP listener and pool on `private-subnet`;
/// returns (load balancer id, pool id).
async fn octavia_pool(cloud: &Cloud, name: &str) -> (String, String) {
    let subnets = cloud
        .get(&format!("{NEUTRON}/subnets?name=private-subnet"))
        .await;
    let subnet = subnets["subnets"][0]["id"]
        .as_str()
        .expect("the private-subnet")
        .to_string();
    let lb = cloud
        .post(
            &format!("{OCTAVIA}/lbaas/loadbalancers"),
            json!({"loadbalancer": {"name": name, "vip_subnet_id": subnet}}),
        )
        .await["loadbalancer"]["id"]
        .as_str()
        .expect("a load balancer id")
        .to_string();
    cloud.octavia_active(&format!("loadbalancers/{lb}")).await;
    let listener = cloud
        .post(
            &format!("{OCTAVIA}/lbaas/listeners"),
            json!({"listener": {"loadbalancer_id": lb, "protocol": "HTTP", "protocol_port": 80}}),
        )
        .await["listener"]["id"]
        .as_str()
        .expect("a listener id")
        .to_string();
    cloud.octavia_active(&format!("loadbalancers/{lb}")).await;
    let pool = cloud
        .post(
            &format!("{OCTAVIA}/lbaas/pools"),
            json!({"pool": {"listener_id": listener, "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}}),
        )
        .await["pool"]["id"]
        .as_str()
        .expect("a pool id")
        .to_string();
    cloud.octavia_active(&format!("loadbalancers/{lb}")).await;
    let gateway = subnets["subnets"][0]["gateway_ip"]
        .as_str()
        .expect("the subnet's gateway")
        .to_string();
    cloud
        .post(
            &format!("{OCTAVIA}/lbaas/pools/{pool}/members"),
            json!({"member": {"name": SENTINEL, "address": gateway, "protocol_port": 80,
                              "subnet_id": subnet}}),
        )
        .await;
    cloud.octavia_active(&format!("loadbalancers/{lb}")).await;
    (lb, pool)
}

fn messages(events: &[Value], kind: &str) -> Vec<String> {
    of_kind(events, kind)
        .iter()
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the OpenStack fixture: scripts/openstack/up.sh (scripts/test runs these)"]
async fn lab_scales_1_4_1_with_floating_ips_and_octavia_members() {
    let _serial = SERIAL.lock().await;
    let cloud = Cloud::login().await;
    let mut guard = CloudGuard::new(&cloud);
    let tag = unique();
    let (lb, pool) = octavia_pool(&cloud, &format!("swell-e2e-{tag}")).await;
    guard.load_balancers.push(lb);
    let s = start_swell("admin", &[]).await;
    guard.owners.push(s.owner.clone());
    let group = format!("lab-{tag}");
    guard.security_groups.push(format!("swell.default.{group}"));
    let doc = lab_group(
        &group,
        "m1.tiny",
        1,
        4,
        json!({
            "floating_ip_network": "public",
            "octavia_pool": pool,
            "member_port": 80,
            "security_group_rules": [
                {"protocol": "tcp", "port_range_min": 22},
                {"protocol": "icmp"},
                {"protocol": "tcp", "port_range_min": 80},
            ],
        }),
    );
    // Nothing pushed yet: a threshold policy without samples stays idle at 1.
    create_group(&s, &doc).await;
    let one = converged(&s, &cloud, &group, 1).await;
    check_fips_and_members(&cloud, &one, &pool).await;

    // Pause and resume through the CLI: Nova shows PAUSED, then ACTIVE.
    let id = one.keys().next().expect("one instance").clone();
    let server = one[&id].id.clone();
    let out = s
        .cli(&["-o", "json", "instance", "pause", &group, &id])
        .await;
    assert_eq!(out.json()["status"], "paused", "{out:#?}");
    let nova_status = |want: &'static str| {
        let (cloud, server) = (cloud.clone(), server.clone());
        async move {
            let v = cloud.get(&format!("{NOVA}/servers/{server}")).await;
            let st = v["server"]["status"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if st == want { Ok(()) } else { Err(st) }
        }
    };
    eventually("Nova to show PAUSED", CONVERGE, || nova_status("PAUSED")).await;
    let out = s
        .cli(&["-o", "json", "instance", "resume", &group, &id])
        .await;
    assert_eq!(out.json()["status"], "running", "{out:#?}");
    eventually("Nova to show ACTIVE", CONVERGE, || nova_status("ACTIVE")).await;

    // A per-instance reading through the CLI, then high group CPU: 1 → 4, one step at
    // a time, each instance with its floating IP and Octavia member.
    let out = s
        .cli(&["metrics", "push", &group, "cpu", "85", "--instance", &id])
        .await;
    assert!(out.status.success(), "metrics push: {out:#?}");
    let started = std::time::Instant::now();
    let pusher = Pusher::start(&s, &group, "cpu", 85.0);
    let four = converged(&s, &cloud, &group, 4).await;
    eprintln!("1 → 4 took {:?}", started.elapsed());
    check_fips_and_members(&cloud, &four, &pool).await;
    assert!(four.contains_key(&id), "the first instance was replaced");
    let events = s.events(&group).await;
    let outs = of_kind(&events, "scale_out");
    assert_eq!(outs.len(), 3, "three +1 steps: {outs:#?}");

    // Low CPU: back to 1; every retired instance leaves the pool and loses its
    // floating IP, and its server is deleted.
    pusher.set(3.0);
    let started = std::time::Instant::now();
    let back = converged(&s, &cloud, &group, 1).await;
    eprintln!("4 → 1 took {:?}", started.elapsed());
    check_fips_and_members(&cloud, &back, &pool).await;
    for (gone, server) in four.iter().filter(|(k, _)| !back.contains_key(*k)) {
        assert!(
            cloud.floating_ips(&server.id).await.is_empty(),
            "retired instance {gone} kept a floating IP"
        );
    }
    let events = s.events(&group).await;
    assert_eq!(of_kind(&events, "scale_in").len(), 3, "{events:#?}");
    assert!(
        of_kind(&events, "instance_failed").is_empty(),
        "no instance should have failed: {events:#?}"
    );
    drop(pusher);

    delete_group(&s, &cloud, &group).await;
    // Octavia forgets a member once its removal is provisioned.
    eventually("the pool to be empty", CONVERGE, || async {
        let members = cloud.members(&pool).await;
        if members.is_empty() {
            Ok(())
        } else {
            Err(format!("members left behind: {members:?}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the OpenStack fixture: scripts/openstack/up.sh (scripts/test runs these)"]
async fn project_quota_of_two_caps_the_group_at_two_without_orphans() {
    let _serial = SERIAL.lock().await;
    let cloud = Cloud::login().await;
    let mut guard = CloudGuard::new(&cloud);
    let tag = unique();
    // A project of its own: the admin project's quota is never touched.
    let project_name = format!("swell-e2e-quota-{tag}");
    let project = cloud.create_project(&project_name).await;
    guard.projects.push(project.clone());
    let (status, body) = cloud
        .call(
            reqwest::Method::PUT,
            &format!("{NOVA}/os-quota-sets/{project}"),
            Some(json!({"quota_set": {"instances": 2}})),
        )
        .await;
    assert_eq!(status, 200, "quota: {body}");
    let s = start_swell(&project_name, &[]).await;
    guard.owners.push(s.owner.clone());
    let group = format!("quota-{tag}");
    create_group(&s, &lab_group(&group, "m1.tiny", 1, 4, json!({}))).await;
    converged(&s, &cloud, &group, 1).await;

    let out = s.cli(&["-o", "json", "scale", &group, "4"]).await;
    assert_eq!(out.json()["desired_capacity"], 4);
    let events = eventually("an event naming the quota", CONVERGE, || async {
        let events = s.events(&group).await;
        let capped = messages(&events, "provider_capped");
        let failed: Vec<String> = messages(&events, "instance_failed")
            .into_iter()
            .filter(|m| m.contains("quota"))
            .collect();
        if capped.is_empty() && failed.is_empty() {
            Err(format!("{:?}", messages(&events, "instance_created")))
        } else {
            Ok(events)
        }
    })
    .await;
    eprintln!(
        "quota events: capped {:?}, failed {:?}",
        messages(&events, "provider_capped"),
        messages(&events, "instance_failed")
    );
    // The group stays at two running, Nova agrees, for several evaluations.
    let check = || async {
        let live = swell_live(&s, &group).await;
        let running: BTreeSet<String> = live
            .iter()
            .filter(|(_, st)| *st == "running")
            .map(|(id, _)| id.clone())
            .collect();
        let servers = cloud.servers(&s.owner).await;
        let nova: BTreeSet<String> = servers.iter().map(|x| x.instance.clone()).collect();
        (live, running, nova, servers)
    };
    eventually(
        "two running instances under the quota",
        CONVERGE,
        || async {
            let (live, running, nova, servers) = check().await;
            if running.len() == 2 && nova == running && live.len() == 2 {
                Ok(())
            } else {
                Err(format!("Swell {live:?}, Nova {servers:?}"))
            }
        },
    )
    .await;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (live, running, nova, servers) = check().await;
        assert!(
            running.len() == 2 && nova == running,
            "the group must stay at 2 with Nova in agreement: Swell {live:?}, Nova {servers:?}"
        );
        assert!(servers.iter().all(|x| x.project == project));
    }
    let health = s.get("/v1/health").await;
    eprintln!("workers: {}", health["workers"]);

    delete_group(&s, &cloud, &group).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the OpenStack fixture: scripts/openstack/up.sh (scripts/test runs these)"]
async fn flavor_no_host_fits_gives_no_valid_host_and_no_orphan() {
    let _serial = SERIAL.lock().await;
    let cloud = Cloud::login().await;
    let mut guard = CloudGuard::new(&cloud);
    let tag = unique();
    // A million GB of disk: within every project quota (Nova has no disk quota; huge
    // vCPUs or RAM would hit the cores/RAM quota first), beyond the fake hypervisor's
    // 600 000 GB, so the scheduler finds no valid host.
    let flavor_name = format!("swell-e2e-huge-{tag}");
    let flavor = cloud
        .post(
            &format!("{NOVA}/flavors"),
            json!({"flavor": {"name": flavor_name, "vcpus": 1, "ram": 512, "disk": 1_000_000}}),
        )
        .await["flavor"]["id"]
        .as_str()
        .expect("a flavor id")
        .to_string();
    guard.flavors.push(flavor);
    let s = start_swell("admin", &[]).await;
    guard.owners.push(s.owner.clone());
    let group = format!("huge-{tag}");
    create_group(&s, &lab_group(&group, &flavor_name, 1, 2, json!({}))).await;

    // The create fails with Nova's NoValidHost; the ERROR server is deleted.
    let events = eventually("a failed create naming no valid host", CONVERGE, || async {
        let events = s.events(&group).await;
        let failed = messages(&events, "instance_failed");
        if failed.iter().any(|m| m.contains("no valid host")) {
            Ok(events)
        } else {
            Err(format!("{failed:?}"))
        }
    })
    .await;
    let failed = messages(&events, "instance_failed");
    eprintln!("failed creates: {failed:#?}");
    assert!(
        failed[0].contains("next attempt in"),
        "the event says when the next attempt is: {failed:?}"
    );
    eventually("no ERROR server left in Nova", CONVERGE, || async {
        let servers = cloud.servers(&s.owner).await;
        // A retry may be building right now; none may be left in ERROR, and every
        // server must be a live instance of Swell's.
        let live = swell_live(&s, &group).await;
        let orphan = servers
            .iter()
            .any(|x| x.status == "ERROR" || !live.contains_key(&x.instance));
        if orphan {
            Err(format!("Nova {servers:?}, Swell {live:?}"))
        } else {
            Ok(())
        }
    })
    .await;
    // The next attempt comes after the backoff (its timing is tested on a hand-moved
    // clock in swell-server's tests/backoff.rs), and fails the same way.
    let failed = eventually("a second failed create", CONVERGE, || async {
        let failed = messages(&s.events(&group).await, "instance_failed");
        if failed.len() >= 2 {
            Ok(failed)
        } else {
            Err(format!("{failed:?}"))
        }
    })
    .await;
    assert!(
        failed[1].contains("no valid host") && failed[1].contains("(2 failed in a row)"),
        "{failed:#?}"
    );

    delete_group(&s, &cloud, &group).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the OpenStack fixture: scripts/openstack/up.sh (scripts/test runs these)"]
async fn nova_compute_stopped_times_out_creates_then_recovers() {
    let _serial = SERIAL.lock().await;
    let cloud = Cloud::login().await;
    let mut guard = CloudGuard::new(&cloud);
    let tag = unique();
    let s = start_swell("admin", &["--os-build-timeout", "15s"]).await;
    guard.owners.push(s.owner.clone());
    let group = format!("stopped-{tag}");
    create_group(&s, &lab_group(&group, "m1.tiny", 1, 2, json!({}))).await;
    converged(&s, &cloud, &group, 1).await;

    let stopped = Stopped::nova_compute();
    let out = s.cli(&["-o", "json", "scale", &group, "2"]).await;
    assert_eq!(out.json()["desired_capacity"], 2);
    let events = eventually(
        "a failed create while nova-compute is stopped",
        CONVERGE,
        || async {
            let events = s.events(&group).await;
            let failed = messages(&events, "instance_failed");
            if failed.is_empty() {
                Err("no failure yet".to_string())
            } else {
                Ok(events)
            }
        },
    )
    .await;
    eprintln!(
        "with nova-compute stopped: {:#?}",
        messages(&events, "instance_failed")
    );
    drop(stopped);

    // Resumed: the group reaches 2, and Nova holds exactly Swell's instances.
    converged(&s, &cloud, &group, 2).await;
    delete_group(&s, &cloud, &group).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the OpenStack fixture: scripts/openstack/up.sh (scripts/test runs these)"]
async fn kill_9_during_scale_out_then_restart_no_orphan_no_duplicate() {
    let _serial = SERIAL.lock().await;
    let cloud = Cloud::login().await;
    let mut guard = CloudGuard::new(&cloud);
    let tag = unique();
    let mut s = start_swell("admin", &[]).await;
    guard.owners.push(s.owner.clone());
    let group = format!("crash-{tag}");
    create_group(
        &s,
        &lab_group(
            &group,
            "m1.tiny",
            1,
            4,
            json!({"floating_ip_network": "public"}),
        ),
    )
    .await;
    converged(&s, &cloud, &group, 1).await;

    // kill -9 while a new server is being built: its intent is stored, Nova has it.
    let out = s.cli(&["-o", "json", "scale", &group, "4"]).await;
    assert_eq!(out.json()["desired_capacity"], 4);
    eventually("a second server building in Nova", CONVERGE, || async {
        let servers = cloud.servers(&s.owner).await;
        if servers.len() >= 2 {
            Ok(())
        } else {
            Err(format!("{servers:?}"))
        }
    })
    .await;
    s.kill9();
    eprintln!(
        "at the kill: Nova {:?}",
        cloud
            .servers(&s.owner)
            .await
            .iter()
            .map(|x| format!("{} {} {:?}", x.instance, x.status, x.task_state))
            .collect::<Vec<_>>()
    );
    s.restart().await;
    let four = converged(&s, &cloud, &group, 4).await;
    // One server per instance: no duplicate create of an interrupted intent.
    let servers = cloud.servers(&s.owner).await;
    let mut per_instance: BTreeMap<String, usize> = BTreeMap::new();
    for x in &servers {
        *per_instance.entry(x.instance.clone()).or_default() += 1;
    }
    assert!(
        per_instance.values().all(|n| *n == 1) && per_instance.len() == 4,
        "duplicates in Nova: {per_instance:?}"
    );
    for (id, server) in &four {
        assert_eq!(
            cloud.floating_ips(&server.id).await.len(),
            1,
            "instance {id} has one floating IP after the restart"
        );
    }
    let events = s.events(&group).await;
    eprintln!(
        "after the restart: adopted {:?}, failed {:?}",
        messages(&events, "instance_adopted"),
        messages(&events, "instance_failed")
    );
    delete_group(&s, &cloud, &group).await;
}

/// Issue 15, item 3 through the API: an admin gives tenant `bee` a provider of its own,
/// private to it and acting with the application credential of the fixture's second
/// project (`tenant-b`, made by `scripts/openstack/up.sh`). bee's group creates its
/// server in tenant-b's project on tenant-b's network; the `default` tenant, whose
/// built-in `openstack` provider acts in the admin project, cannot name bee's provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the OpenStack fixture: scripts/openstack/up.sh (scripts/test runs these)"]
async fn a_tenants_private_provider_acts_in_its_own_project() {
    let _serial = SERIAL.lock().await;
    let cloud = Cloud::login().await;
    let mut guard = CloudGuard::new(&cloud);
    let tag = unique();
    let s = start_swell("admin", &[]).await;
    let owner = format!("{}#openstack-bee", s.owner);
    guard.owners.push(owner.clone());
    let projects = cloud
        .get(&format!("{KEYSTONE}/projects?name=tenant-b"))
        .await;
    let project_b = projects["projects"][0]["id"]
        .as_str()
        .expect("project tenant-b (made by scripts/openstack/up.sh)")
        .to_string();
    let group = format!("bee-{tag}");
    guard.security_groups.push(format!("swell.bee.{group}"));

    let tenant = s
        .request(
            reqwest::Method::POST,
            "/v1/tenants",
            Some(&json!({"name": "bee", "images": ["tiny"]}).to_string()),
        )
        .await;
    assert_eq!(tenant.status, 201, "{:?}", tenant.body);
    let defined = s
        .request(
            reqwest::Method::POST,
            "/v1/providers",
            Some(
                &json!({
                    "name": "openstack-bee", "kind": "openstack", "tenant": "bee",
                    "config": {"auth_url": KEYSTONE, "application_credential_name": "swell-b",
                               "user_name": "tenant-b", "region": "RegionOne",
                               "interface": "public"},
                    "credentials": "tenant-b-app-secret",
                })
                .to_string(),
            ),
        )
        .await;
    assert_eq!(defined.status, 201, "{:?}", defined.body);
    assert_eq!(defined.body["credentials"], "set", "{:?}", defined.body);

    // The admin's own tenant cannot use bee's private provider: refused like a name
    // that does not exist, nothing stored.
    let mut doc = lab_group(&group, "m1.tiny", 1, 2, json!({"networks": ["net-b"]}));
    doc["provider"] = json!("openstack-bee");
    let refused = s
        .request(reqwest::Method::POST, "/v1/groups", Some(&doc.to_string()))
        .await;
    assert_eq!(refused.status, 403, "{:?}", refused.body);
    assert_eq!(refused.body["field"], "provider", "{:?}", refused.body);
    let none = s
        .request(reqwest::Method::GET, &format!("/v1/groups/{group}"), None)
        .await;
    assert_eq!(none.status, 404, "nothing stored: {:?}", none.body);

    // bee's member creates the same group in bee.
    let token = s.user_token("bee-member", "bee", "member").await;
    let http = reqwest::Client::new();
    let bee = |method: reqwest::Method, path: String| {
        http.request(method, format!("{}{path}", s.url))
            .bearer_auth(&token)
    };
    let created = bee(reqwest::Method::POST, "/v1/groups".into())
        .json(&doc)
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201, "{:?}", created.text().await);

    // One ACTIVE server, in tenant-b's project, stamped with the definition's own tag;
    // Swell shows it running in bee's group.
    let server = eventually(
        "bee's server ACTIVE in tenant-b's project, running in Swell",
        CONVERGE,
        || async {
            let servers = cloud.servers(&owner).await;
            let listed: Value = bee(
                reqwest::Method::GET,
                format!("/v1/groups/{group}/instances"),
            )
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
            let running = listed["instances"]
                .as_array()
                .map(|a| a.iter().filter(|i| i["status"] == "running").count())
                .unwrap_or(0);
            match servers.as_slice() {
                [one] if one.status == "ACTIVE" && running == 1 => Ok(one.clone()),
                _ => Err(format!("Nova {servers:?}, Swell {listed}")),
            }
        },
    )
    .await;
    assert_eq!(server.project, project_b, "the server is tenant-b's");
    assert!(
        cloud.servers(&s.owner).await.is_empty(),
        "nothing under the built-in provider's tag"
    );
    let ports = cloud
        .get(&format!("{NEUTRON}/ports?device_id={}", server.id))
        .await;
    let network = ports["ports"][0]["network_id"].as_str().expect("a port");
    let nets = cloud.get(&format!("{NEUTRON}/networks/{network}")).await;
    assert_eq!(nets["network"]["name"], "net-b", "on tenant-b's network");

    // Deleting bee's group removes the server.
    let deleted = bee(reqwest::Method::DELETE, format!("/v1/groups/{group}"))
        .send()
        .await
        .expect("delete");
    assert!(deleted.status().is_success(), "{:?}", deleted.text().await);
    eventually("bee's server gone", CONVERGE, || async {
        let servers = cloud.servers(&owner).await;
        if servers.is_empty() {
            Ok(())
        } else {
            Err(format!("{servers:?}"))
        }
    })
    .await;
}

/// Seed 0: the lab's own document, `examples/openstack-lab.yaml`, applied unchanged with
/// `swell apply`: one server with a floating IP and the lab's security group, and one
/// more when the CPU the lab's agent reports is above 20 % over 40 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the OpenStack fixture: scripts/openstack/up.sh (scripts/test runs these)"]
async fn seed0_lab_example_applies_and_scales_out_with_floating_ips() {
    let _serial = SERIAL.lock().await;
    let cloud = Cloud::login().await;
    let mut guard = CloudGuard::new(&cloud);
    let s = start_swell("admin", &[]).await;
    guard.owners.push(s.owner.clone());
    guard.security_groups.push("swell.default.lab".into());
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/openstack-lab.yaml");
    let example = example.to_str().expect("a UTF-8 path");
    let out = s.cli(&["-o", "json", "apply", "-f", example]).await;
    assert!(out.status.success(), "apply: {out:#?}");
    let one = converged(&s, &cloud, "lab", 1).await;
    for server in one.values() {
        assert_eq!(cloud.floating_ips(&server.id).await.len(), 1, "{server:?}");
    }
    let sgs = cloud
        .get(&format!("{NEUTRON}/security-groups?name=swell.default.lab"))
        .await;
    let rules = sgs["security_groups"][0]["security_group_rules"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (protocol, port) in [("tcp", Some(22)), ("icmp", None), ("tcp", Some(80))] {
        assert!(
            rules.iter().any(|r| r["direction"] == "ingress"
                && r["protocol"] == protocol
                && port.is_none_or(|p| r["port_range_min"] == p)),
            "no {protocol} {port:?} rule in {rules:#?}"
        );
    }
    // The lab's rule: above 20 % over 40 s, one more server (its cooldown is a minute,
    // so the second step is not waited for).
    let pusher = Pusher::start(&s, "lab", "cpu", 85.0);
    let two = converged(&s, &cloud, "lab", 2).await;
    drop(pusher);
    for server in two.values() {
        assert_eq!(cloud.floating_ips(&server.id).await.len(), 1, "{server:?}");
    }
    let events = s.events("lab").await;
    let outs = of_kind(&events, "scale_out");
    assert_eq!(
        outs.first().map(|e| &e["cause"]["policy"]),
        Some(&"threshold".into()),
        "{outs:#?}"
    );
    delete_group(&s, &cloud, "lab").await;
}
