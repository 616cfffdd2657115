//! A qemu provider's hypervisor hosts over real HTTP (`GET /v1/providers/{name}/hosts`
//! and the per-host series of `/v1/metrics`), against an in-process server on a real
//! SQLite file: two local hosts and one SSH host reached through a private OpenSSH
//! server on loopback (root, Debian's `openssh-server`). No VM is booted: a host's
//! figures are there (and 0) without any.

use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use swell_providers::test_sshd::TestSshd;
use swell_server::{Server, ServerConfig};

const ADMIN_PASSWORD: &str = "hosts-test-admin-pw";

async fn start(dir: &Path) -> Server {
    Server::start(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
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
    async fn call(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, String) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.text().await.unwrap())
    }

    async fn json(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (status, text) = self.call(token, method, path, body).await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn login(&self, user: &str, password: &str, tenant: &str) -> String {
        let (status, v) = self
            .json(
                "",
                reqwest::Method::POST,
                "/v1/auth/tokens",
                Some(json!({"user": user, "password": password, "tenant": tenant})),
            )
            .await;
        assert_eq!(status, 201, "{v}");
        v["token"].as_str().unwrap().to_string()
    }
}

/// The value of the series `name{labels}` on a metrics page.
fn series(page: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{{{labels}}} ");
    page.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// Takes the SSH host off the network: SIGKILLs sshd's connection processes (the
/// server's master connection ends with them) and then sshd itself.
fn take_down(sshd: TestSshd, dir: &Path) {
    let pid: i32 = std::fs::read_to_string(dir.join("sshd.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let ppid = |p: i32| -> Option<i32> {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        stat.rsplit_once(") ")?.1.split(' ').nth(1)?.parse().ok()
    };
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(p) = entry.file_name().to_string_lossy().parse::<i32>()
            && ppid(p) == Some(pid)
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    drop(sshd);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_see_each_hosts_state_and_load_over_http_and_in_metrics() {
    use reqwest::Method as M;
    let tmp = tempfile::Builder::new()
        .prefix("sph")
        .tempdir_in("/tmp")
        .unwrap();
    let dir = std::fs::canonicalize(tmp.path()).unwrap();
    let sshd_dir = dir.join("sshd");
    std::fs::create_dir(&sshd_dir).unwrap();
    let sshd = TestSshd::start(&sshd_dir).unwrap();
    let server = start(&dir.join("data")).await;
    let api = Api {
        url: server.url(),
        http: reqwest::Client::new(),
    };
    let admin = api.login("admin", ADMIN_PASSWORD, "default").await;
    let member_pw = "hosts-member-password-1";
    api.json(
        &admin,
        M::POST,
        "/v1/users",
        Some(json!({"name": "m", "password": member_pw})),
    )
    .await;
    let (st, v) = api
        .json(
            &admin,
            M::PUT,
            "/v1/tenants/default/users/m",
            Some(json!({"role": "member"})),
        )
        .await;
    assert!(st < 300, "{st} {v}");
    let member = api.login("m", member_pw, "default").await;

    let ssh_host = |identity: Option<&Path>| {
        let mut h = json!({
            "name": "rack2",
            "ssh": format!("root@127.0.0.1:{}", sshd.addr.port()),
            "state_dir": dir.join("rack2"),
        });
        if let Some(i) = identity {
            h["identity_file"] = json!(i);
        }
        h
    };
    // An SSH host without its key is refused naming the field.
    let (st, v) = api
        .json(
            &admin,
            M::POST,
            "/v1/providers",
            Some(json!({"name": "vms", "kind": "qemu", "config": {"hosts": [ssh_host(None)]}})),
        )
        .await;
    assert_eq!(
        (st, v["field"].as_str()),
        (400, Some("config.hosts[0].identity_file")),
        "{v}"
    );
    let config = json!({
        "hosts": [
            {"name": "a", "state_dir": dir.join("a"), "vcpus": 4, "memory_mb": 4096},
            {"name": "b", "state_dir": dir.join("b")},
            ssh_host(Some(&sshd.client_key)),
        ],
        "accel": "tcg",
    });
    let (st, v) = api
        .json(
            &admin,
            M::POST,
            "/v1/providers",
            Some(json!({"name": "vms", "kind": "qemu", "config": config})),
        )
        .await;
    assert_eq!(st, 201, "{v}");

    let (st, v) = api
        .json(&admin, M::GET, "/v1/providers/vms/hosts", None)
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["provider"], "vms");
    let hosts = v["hosts"].as_array().unwrap();
    let names: Vec<(&str, bool, u64)> = hosts
        .iter()
        .map(|h| {
            (
                h["name"].as_str().unwrap(),
                h["up"].as_bool().unwrap(),
                h["vms"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(names, [("a", true, 0), ("b", true, 0), ("rack2", true, 0)]);
    assert_eq!(
        (hosts[0]["vcpus"].as_f64(), hosts[0]["memory_mb"].as_f64()),
        (Some(4.0), Some(4096.0))
    );
    assert_eq!(hosts[0]["load_percent"].as_f64(), Some(0.0));
    assert!(hosts[0].get("ssh").is_none());
    assert_eq!(
        hosts[2]["ssh"].as_str(),
        Some(format!("root@127.0.0.1:{}", sshd.addr.port()).as_str())
    );
    // The SSH host reports its own CPUs and memory.
    assert!(hosts[2]["vcpus"].as_f64().unwrap() >= 1.0, "{v}");
    assert!(hosts[2]["memory_mb"].as_f64().unwrap() > 100.0, "{v}");
    assert!(dir.join("rack2").is_dir(), "made at first contact");

    // Only admins; an unknown provider is 404, one without hosts 409.
    let (st, _) = api
        .json(&member, M::GET, "/v1/providers/vms/hosts", None)
        .await;
    assert_eq!(st, 403);
    let (st, _) = api
        .json(&admin, M::GET, "/v1/providers/nope/hosts", None)
        .await;
    assert_eq!(st, 404);
    let (st, v) = api
        .json(&admin, M::GET, "/v1/providers/process/hosts", None)
        .await;
    assert_eq!(st, 409, "{v}");

    // The per-host series: on the admin's page, not on a tenant's.
    let (st, page) = api.call(&admin, M::GET, "/v1/metrics", None).await;
    assert_eq!(st, 200);
    for host in ["a", "b", "rack2"] {
        let l = format!("provider=\"vms\",host=\"{host}\"");
        assert_eq!(
            series(&page, "swell_provider_host_up", &l),
            Some(1.0),
            "{page}"
        );
        assert_eq!(series(&page, "swell_provider_host_vms", &l), Some(0.0));
        assert_eq!(
            series(&page, "swell_provider_host_load_ratio", &l),
            Some(0.0)
        );
    }
    assert_eq!(
        series(
            &page,
            "swell_provider_host_vcpus",
            "provider=\"vms\",host=\"a\""
        ),
        Some(4.0)
    );
    let (st, tenant_page) = api.call(&member, M::GET, "/v1/metrics", None).await;
    assert_eq!(st, 200);
    assert!(
        !tenant_page.contains("swell_provider_host"),
        "{tenant_page}"
    );

    // Host b loses its directory, rack2 its SSH: both down.
    std::fs::remove_dir_all(dir.join("b")).unwrap();
    take_down(sshd, &sshd_dir);
    let (_, v) = api
        .json(&admin, M::GET, "/v1/providers/vms/hosts", None)
        .await;
    let up: Vec<bool> = v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["up"].as_bool().unwrap())
        .collect();
    assert_eq!(up, [true, false, false], "{v}");
    let (_, page) = api.call(&admin, M::GET, "/v1/metrics", None).await;
    assert_eq!(
        series(
            &page,
            "swell_provider_host_up",
            "provider=\"vms\",host=\"rack2\""
        ),
        Some(0.0)
    );
    assert_eq!(
        series(
            &page,
            "swell_provider_host_up",
            "provider=\"vms\",host=\"b\""
        ),
        Some(0.0)
    );
    server.shutdown().await;
}
