//! The `ssh` metric source end to end in the server: a real OpenSSH server on loopback
//! (root, a generated key; Debian's `openssh-server`), groups of `process` instances
//! (on 127.0.0.1, where that sshd listens), the real `top`. Seed 0's policy scales out
//! on the CPU `top` reports, seed 1's band scales in on steal time, and a source that
//! cannot connect shows in the worker's status without stopping its group.

use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use swell_providers::test_sshd::TestSshd;
use swell_server::{Server, ServerConfig};

const ADMIN_PASSWORD: &str = "ssh-source-test-admin";

async fn start(dir: &Path) -> (Server, String, reqwest::Client) {
    let server = Server::start(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        stop_instances_on_exit: true,
        admin_password: Some(swell_server::secrets::SecretString::new(ADMIN_PASSWORD)),
        // Groups here tick every 300 ms, below the server's 1 s default floor.
        min_interval: std::time::Duration::from_millis(300),
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
    let token = answer["token"].as_str().expect("a token").to_string();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    (server, url, http)
}

/// A group of `sleep` processes (they use no CPU: what the policy sees comes from
/// `top`) read by an `ssh` source on `port`.
fn group(name: &str, port: u16, key: &str, desired: u32, policy: Value) -> Value {
    json!({
        "name": name,
        "template": {"command": ["sleep", "1000"]},
        "min": 1, "max": 2, "desired_capacity": desired, "cooldown": "0s",
        "evaluation_interval": "300ms", "metrics_interval": "300ms",
        "policies": [policy],
        "metric_sources": [{"type": "ssh", "user": "root", "port": port,
                            "private_key_file": key,
                            "command": "top -bn2 -d0.3", "timeout": "5s"}]
    })
}

async fn get(http: &reqwest::Client, url: &str) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

/// Polls `check` until it gives a value, for up to `secs` seconds.
async fn until<T, F: Future<Output = Option<T>>>(
    secs: u64,
    what: &str,
    check: impl Fn() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {secs}s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The first event of `kind` in `group`.
async fn event(http: &reqwest::Client, url: &str, group: &str, kind: &str) -> Option<Value> {
    let v = get(http, &format!("{url}/v1/groups/{group}/events")).await;
    v["events"]
        .as_array()?
        .iter()
        .find(|e| e["kind"] == kind)
        .cloned()
}

/// Busy loops, one per CPU, so that the host's `top` shows load; killed when dropped.
struct Burners(Vec<Child>);
impl Burners {
    fn start() -> Burners {
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        Burners(
            (0..n)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .stdin(Stdio::null())
                        .spawn()
                        .unwrap()
                })
                .collect(),
        )
    }
}
impl Drop for Burners {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[tokio::test]
async fn ssh_top_readings_drive_policies_and_failures_show() {
    let dir = tempfile::tempdir().unwrap();
    let data = std::fs::canonicalize(dir.path()).unwrap();
    let ssh_dir = data.join("sshd");
    std::fs::create_dir_all(&ssh_dir).unwrap();
    let sshd = TestSshd::start(&ssh_dir).unwrap();
    let (server, url, http) = start(&data).await;
    let port = sshd.addr.port();
    // The operator puts the tenant's key in its key directory; the group names it.
    let keys = data.join("ssh-keys/default");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::copy(&sshd.client_key, keys.join("lab_key")).unwrap();
    let key = "lab_key";

    // Seed 1: a band on steal time; steal below the minimum lets the group scale in.
    let seed1 = group(
        "steal",
        port,
        key,
        2,
        json!({"type": "threshold", "metric": "steal", "scale_in_below": 100,
               "scale_out_above": 1000, "evaluation_period": "1s"}),
    );
    // A source that cannot connect (the sshd's port plus nothing: a closed port).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let broken = group(
        "broken",
        closed_port,
        key,
        1,
        json!({"type": "threshold", "metric": "cpu", "scale_out_above": 20}),
    );
    for g in [&seed1, &broken] {
        let r = http
            .post(format!("{url}/v1/groups"))
            .json(g)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }

    let scale_in = until(60, "a scale-in on steal", || {
        event(&http, &url, "steal", "scale_in")
    })
    .await;
    let cause = &scale_in["cause"];
    assert_eq!(cause["metric"], "steal", "{scale_in}");
    let steal = cause["value"].as_f64().unwrap();
    assert!((0.0..100.0).contains(&steal), "{scale_in}");

    // The broken source: named in the worker's status, and the group still works.
    let status = until(30, "the broken source's status", || async {
        let h = get(&http, &format!("{url}/v1/health")).await;
        h["workers"].as_array()?.iter().find_map(|w| {
            let state = w["state"].as_str()?;
            (w["name"] == "group/default/broken" && state.contains("metric source"))
                .then(|| state.to_string())
        })
    })
    .await;
    assert!(
        status.contains("ssh: 1 of 1 instances unreadable")
            && status.contains("Connection refused"),
        "{status}"
    );
    let r = http
        .put(format!("{url}/v1/groups/broken/desired_capacity"))
        .json(&json!({"desired_capacity": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    until(30, "the broken group's second instance", || async {
        let v = get(&http, &format!("{url}/v1/groups/broken/instances")).await;
        let running = v["instances"]
            .as_array()?
            .iter()
            .filter(|i| i["status"] == "running")
            .count();
        (running == 2).then_some(())
    })
    .await;

    // Seed 0: scale out when the CPU `top` reports is above 20 %. The instances sleep
    // (their provider reading is ~0 %): the load is the host's, which `top` sees.
    let _burners = Burners::start();
    let seed0 = group(
        "lab",
        port,
        key,
        1,
        json!({"type": "threshold", "metric": "cpu", "scale_out_above": 20,
               "evaluation_period": "1s"}),
    );
    let r = http
        .post(format!("{url}/v1/groups"))
        .json(&seed0)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let out = until(60, "a scale-out on cpu", || {
        event(&http, &url, "lab", "scale_out")
    })
    .await;
    assert_eq!(out["cause"]["metric"], "cpu", "{out}");
    assert!(out["cause"]["value"].as_f64().unwrap() > 20.0, "{out}");
    // The instance view shows the reading from `top`, not the sleeping process's.
    let v = get(&http, &format!("{url}/v1/groups/lab/instances")).await;
    let cpu = v["instances"][0]["cpu_percent"].as_f64().unwrap_or(0.0);
    assert!(cpu > 20.0, "{v}");
    // Each instance's host key was pinned in its own known_hosts file; the steal
    // group's retired instance's file is gone.
    let pinned = |group: &str| {
        std::fs::read_dir(data.join("known_hosts/default").join(group))
            .unwrap()
            .count()
    };
    assert!(pinned("lab") >= 1);
    until(30, "the retired instance's known_hosts removed", || async {
        (pinned("steal") == 1).then_some(())
    })
    .await;

    server.shutdown().await;
}
