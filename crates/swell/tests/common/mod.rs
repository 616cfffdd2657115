//! Helpers of the end-to-end tests: a real `swell serve` child process on its own port
//! and data directory, the real CLI, and a scan of `/proc` for the instance processes a
//! server tagged as its own.
//!
//! [`Swell`]'s `Drop` kills the server and every process tagged with its data directory,
//! so that no test leaves a process behind, even when an assertion fails.

#![allow(dead_code)]

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `swell` binary under test.
pub const SWELL: &str = env!("CARGO_BIN_EXE_swell");

/// The bootstrap admin's password of every test server (`SWELL_ADMIN_PASSWORD`).
pub const ADMIN_PASSWORD: &str = "e2e-admin-password";

/// How long a server may take to answer `/v1/health` after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// What a CLI run printed.
#[derive(Debug)]
pub struct CliOutput {
    /// Its exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CliOutput {
    /// Standard output as JSON; panics (with both streams) unless the run succeeded.
    pub fn json(&self) -> Value {
        assert!(self.status.success(), "the CLI failed: {self:#?}");
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("the CLI did not print JSON ({e}): {self:#?}"))
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    /// Its status.
    pub status: u16,
    /// Its `Content-Type`.
    pub content_type: String,
    /// Its body as JSON (`Null` when it is not JSON).
    pub body: Value,
}

/// One `swell serve` and its temporary directory.
pub struct Swell {
    /// The temporary directory: `data/` (the data directory) and the server logs.
    pub dir: tempfile::TempDir,
    /// The server's canonical data directory: the `SWELL_OWNER` of its instances.
    pub owner: String,
    /// The API's base URL (changes at each start: every start picks a free port).
    pub url: String,
    child: Option<Child>,
    starts: u32,
    http: reqwest::Client,
    /// The bootstrap admin's token on the `default` tenant: every API call and CLI run
    /// (as `SWELL_TOKEN`) carries it.
    pub token: String,
    /// Extra `swell serve` arguments (provider flags), given at every start.
    serve_args: Vec<String>,
    /// Extra environment of `swell serve` (a cloud's `OS_*` variables).
    serve_env: Vec<(String, String)>,
}

impl Swell {
    /// Starts a server on a fresh data directory and waits until it answers.
    pub async fn start() -> Swell {
        Swell::start_with(&[], &[]).await
    }

    /// Like [`Swell::start`], with extra `swell serve` arguments and environment (e.g.
    /// `--openstack` and the cloud's `OS_*` variables), used again at every restart.
    pub async fn start_with(args: &[&str], env: &[(&str, &str)]) -> Swell {
        let dir = tempfile::Builder::new()
            .prefix("swell-e2e-")
            .tempdir()
            .expect("a temporary directory");
        let data = dir.path().join("data");
        fs::create_dir_all(&data).expect("the data directory");
        let owner = fs::canonicalize(&data)
            .expect("canonical data directory")
            .display()
            .to_string();
        let mut swell = Swell {
            dir,
            owner,
            url: String::new(),
            child: None,
            starts: 0,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("an HTTP client"),
            token: String::new(),
            serve_args: args.iter().map(|a| a.to_string()).collect(),
            serve_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        swell.restart().await;
        swell
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The log file of the `n`th start (1-based).
    pub fn log_path(&self, n: u32) -> PathBuf {
        self.dir.path().join(format!("server-{n}.log"))
    }

    /// Starts the server (again) on the same data directory and waits for its health
    /// endpoint. Panics if a server of this `Swell` is still running.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "the server is still running");
        // A free port can be taken by a parallel test between the probe and the bind:
        // then the server exits at once and another port is tried.
        for _attempt in 0..3 {
            self.starts += 1;
            let port = free_port();
            let log = fs::File::create(self.log_path(self.starts)).expect("a log file");
            let child = Command::new(SWELL)
                .args([
                    "serve",
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                    "--data-dir",
                ])
                .arg(self.data_dir())
                .args(&self.serve_args)
                // The groups here tick every 500 ms (`group_doc`), below the server's
                // 1 s default floor; a test's own environment may set another.
                .env("SWELL_MIN_INTERVAL", "100ms")
                .envs(self.serve_env.iter().map(|(k, v)| (k, v)))
                .env("SWELL_LOG", "info")
                .env("SWELL_ADMIN_PASSWORD", ADMIN_PASSWORD)
                .env_remove("SWELL_URL")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log file"))
                .stderr(log)
                .spawn()
                .expect("starting swell serve");
            self.url = format!("http://127.0.0.1:{port}");
            self.child = Some(child);
            let deadline = Instant::now() + START_TIMEOUT;
            loop {
                if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok()?) {
                    self.child = None;
                    let log = self.log(self.starts);
                    if log.contains("cannot listen on") {
                        break;
                    }
                    panic!("swell serve exited with {status} at start:\n{log}");
                }
                if let Ok(r) = self
                    .http
                    .get(format!("{}/v1/health", self.url))
                    .send()
                    .await
                    && r.status().is_success()
                {
                    self.login().await;
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "swell serve did not answer /v1/health within {START_TIMEOUT:?}:\n{}",
                    self.log(self.starts)
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("swell serve could not bind a free port in 3 attempts");
    }

    /// Logs in as the bootstrap admin on `default` and keeps the token.
    async fn login(&mut self) {
        let r = self
            .http
            .post(format!("{}/v1/auth/tokens", self.url))
            .json(&serde_json::json!({
                "user": "admin", "password": ADMIN_PASSWORD, "tenant": "default"
            }))
            .send()
            .await
            .expect("the login answers");
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(status.as_u16(), 201, "login as admin: {body}");
        self.token = body["token"].as_str().expect("a token").to_string();
    }

    /// Creates user `user` with `role` in `tenant` (through the CLI, as the admin) and
    /// returns a token of that user acting in `tenant`.
    pub async fn user_token(&self, user: &str, tenant: &str, role: &str) -> String {
        let password = format!("{user}-password-42");
        let file = self.write(&format!("{user}.password"), &password);
        self.cli_json(&["user", "create", user, "--password-file", &file])
            .await;
        self.cli_json(&["user", "grant", user, "--tenant", tenant, "--role", role])
            .await;
        let login: Value = self
            .http
            .post(format!("{}/v1/auth/tokens", self.url))
            .json(&serde_json::json!({"user": user, "password": password, "tenant": tenant}))
            .send()
            .await
            .expect("the login answers")
            .json()
            .await
            .expect("a login answer");
        login["token"].as_str().expect("a token").to_string()
    }

    /// The server's pid.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("the server runs").id() as i32
    }

    /// `kill -9`: the server dies without any chance to clean up.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("the server runs");
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
        let _ = child.wait();
    }

    /// SIGTERM, then waits for a clean exit (status 0).
    pub async fn stop(&mut self) {
        let mut child = self.child.take().expect("the server runs");
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("SIGTERM");
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("waiting for the server") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "swell serve did not exit within {STOP_TIMEOUT:?} of SIGTERM:\n{}",
                    self.log(self.starts)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(
            status.success(),
            "swell serve exited with {status} after SIGTERM:\n{}",
            self.log(self.starts)
        );
    }

    /// The log of the `n`th start.
    pub fn log(&self, n: u32) -> String {
        fs::read_to_string(self.log_path(n)).unwrap_or_default()
    }

    /// Every server log so far, for assertion messages.
    pub fn logs(&self) -> String {
        (1..=self.starts)
            .map(|n| format!("--- server start {n} ---\n{}", self.log(n)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Runs `swell --url <server> ARGS…`.
    pub async fn cli(&self, args: &[&str]) -> CliOutput {
        let out = tokio::process::Command::new(SWELL)
            .arg("--url")
            .arg(&self.url)
            .args(args)
            .env_remove("SWELL_URL")
            .env("SWELL_TOKEN", &self.token)
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            // What a user sees: no backtraces in error messages.
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .await
            .expect("running the swell CLI");
        CliOutput {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs `swell --url <server> -o json ARGS…`, asserts success, returns the JSON.
    pub async fn cli_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["-o", "json"];
        all.extend_from_slice(args);
        self.cli(&all).await.json()
    }

    /// Writes `text` to `name` in the temporary directory and returns its path.
    pub fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        fs::write(&path, text).expect("writing a document");
        path.display().to_string()
    }

    /// A raw API request.
    pub async fn request(&self, method: reqwest::Method, path: &str, body: Option<&str>) -> Answer {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.expect("the API answers");
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = resp.bytes().await.expect("the API's answer");
        Answer {
            status,
            content_type,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    /// `GET path`, which must answer 200 with JSON.
    pub async fn get(&self, path: &str) -> Value {
        let a = self.request(reqwest::Method::GET, path, None).await;
        assert_eq!(a.status, 200, "GET {path}: {a:?}");
        a.body
    }

    /// The group's instances (`all` includes terminated and failed ones).
    pub async fn instances(&self, group: &str, all: bool) -> Vec<Value> {
        let v = self
            .get(&format!("/v1/groups/{group}/instances?all={all}"))
            .await;
        v["instances"].as_array().cloned().unwrap_or_default()
    }

    /// The ids of the group's instances in `status`.
    pub async fn ids_with_status(&self, group: &str, status: &str) -> Vec<String> {
        self.instances(group, false)
            .await
            .iter()
            .filter(|i| i["status"] == status)
            .map(|i| i["id"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// The group's events, oldest first.
    pub async fn events(&self, group: &str) -> Vec<Value> {
        let v = self.get(&format!("/v1/groups/{group}/events")).await;
        v["events"].as_array().cloned().unwrap_or_default()
    }

    /// The group's load balancer address (`127.0.0.1:port`).
    pub async fn load_balancer(&self, group: &str) -> String {
        let g = self.get(&format!("/v1/groups/{group}")).await;
        g["load_balancer"]
            .as_str()
            .unwrap_or_else(|| panic!("group {group} has no load balancer: {g}"))
            .to_string()
    }

    /// Live processes tagged with this server's data directory: instance id → pids.
    pub fn tagged(&self) -> BTreeMap<String, Vec<i32>> {
        tagged_processes(&self.owner)
    }

    /// Kills the server and every tagged process, and waits until they are gone.
    fn kill_everything(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = self.tagged();
            if left.is_empty() || Instant::now() > deadline {
                if !left.is_empty() {
                    eprintln!(
                        "processes still tagged {} after cleanup: {left:?}",
                        self.owner
                    );
                }
                return;
            }
            for pid in left.values().flatten() {
                let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Swell {
    fn drop(&mut self) {
        self.kill_everything();
        if std::thread::panicking() {
            eprintln!(
                "server logs of the failed test ({}):\n{}",
                self.dir.path().display(),
                tail(&self.logs(), 200)
            );
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Every live process whose environment carries `SWELL_OWNER=owner`, by
/// `SWELL_INSTANCE_ID`. Zombies show an empty environment and drop out.
pub fn tagged_processes(owner: &str) -> BTreeMap<String, Vec<i32>> {
    let mut found: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(environ) = fs::read(Path::new("/proc").join(pid.to_string()).join("environ")) else {
            continue;
        };
        let mut is_ours = false;
        let mut id = None;
        for var in environ.split(|b| *b == 0) {
            let var = String::from_utf8_lossy(var);
            if let Some(v) = var.strip_prefix("SWELL_OWNER=") {
                is_ours = v == owner;
            } else if let Some(v) = var.strip_prefix("SWELL_INSTANCE_ID=") {
                id = Some(v.to_string());
            }
        }
        if is_ours && process_state(pid).is_some_and(|s| s != 'Z' && s != 'X') {
            found.entry(id.unwrap_or_default()).or_default().push(pid);
        }
    }
    found
}

/// The state letter of `/proc/PID/stat` (`R`, `S`, `T`, `Z`, …).
pub fn process_state(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: the state follows
    // the last `)`.
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// Polls `check` until it returns `Some` or `timeout` passes; panics with `what` and
/// the last value seen (from `describe`) on timeout.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) => {
                assert!(
                    Instant::now() < deadline,
                    "timed out after {timeout:?} waiting for {what}; last seen: {last}"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A group document (JSON, which the CLI reads as YAML too) on the compressed timings
/// of `swell demo --fast`, running `swell demo-app` behind a load balancer.
pub fn group_doc(name: &str, min: u32, max: u32, policies: Value) -> Value {
    serde_json::json!({
        "name": name,
        "provider": "process",
        "template": { "command": [SWELL, "demo-app", "--port", "{port}"] },
        "min": min,
        "max": max,
        "cooldown": "3s",
        "warmup": "0s",
        "drain_timeout": "2s",
        "evaluation_interval": "1s",
        "metrics_interval": "500ms",
        "policies": policies,
        "load_balancer": { "listen": "127.0.0.1:0" },
    })
}

/// A policy list that never scales (so that only a user moves the desired capacity).
pub fn never_scale() -> Value {
    serde_json::json!([{ "type": "threshold", "metric": "cpu", "scale_out_above": 100000 }])
}

/// The events of `kind`.
pub fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["kind"] == kind).collect()
}

/// The kinds of the events about instance `id`.
pub fn kinds_for(events: &[Value], id: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["instance_id"] == id)
        .map(|e| e["kind"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Waits until the group has exactly `n` instances, all `running`, and `desired == n`.
pub async fn wait_running(s: &Swell, group: &str, n: usize, within: Duration) -> Vec<Value> {
    eventually(
        &format!("group {group} to run exactly {n} instances"),
        within,
        || async {
            let g = s.get(&format!("/v1/groups/{group}")).await;
            let list = s.instances(group, false).await;
            let statuses: Vec<&str> = list.iter().filter_map(|i| i["status"].as_str()).collect();
            if g["desired_capacity"] == n
                && list.len() == n
                && statuses.iter().all(|s| *s == "running")
            {
                Ok(list)
            } else {
                Err(format!(
                    "desired {}, instances {statuses:?}",
                    g["desired_capacity"]
                ))
            }
        },
    )
    .await
}

/// The ids of instances as the API lists them.
pub fn ids(list: &[Value]) -> std::collections::BTreeSet<String> {
    list.iter()
        .map(|i| i["id"].as_str().expect("an id").to_string())
        .collect()
}

/// Requests sent through a load balancer, counted; every failure kept with its reason.
pub struct Load {
    ok: AtomicU64,
    failures: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl Load {
    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    pub fn failures(&self) -> Vec<String> {
        self.failures.lock().expect("failures").clone()
    }

    /// Stops the clients and waits for them.
    pub async fn finish(&self, tasks: Vec<tokio::task::JoinHandle<()>>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.expect("a client task");
        }
    }

    /// Waits (up to `within`) until at least `n` more requests succeeded.
    pub async fn more(&self, n: u64, within: Duration) {
        let since = self.ok();
        eventually("traffic to flow", within, || async {
            let now = self.ok();
            if now >= since + n {
                Ok(())
            } else {
                Err(format!("{} requests", now - since))
            }
        })
        .await;
    }
}

/// `fast` clients loop on `/work?ms=5`, `slow` ones on `/work?ms=300`, until
/// `load.stop`.
pub fn start_load(
    lb: &str,
    fast: usize,
    slow: usize,
) -> (Arc<Load>, Vec<tokio::task::JoinHandle<()>>) {
    let load = Arc::new(Load {
        ok: AtomicU64::new(0),
        failures: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
    });
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("a load client");
    let tasks = (0..fast + slow)
        .map(|w| {
            let (client, load, lb) = (client.clone(), load.clone(), lb.to_string());
            let ms = if w < fast { 5 } else { 300 };
            tokio::spawn(async move {
                while !load.stop.load(Ordering::Relaxed) {
                    let outcome = match client.get(format!("http://{lb}/work?ms={ms}")).send().await
                    {
                        Ok(r) if r.status().is_success() => {
                            r.bytes().await.map(|_| ()).map_err(|e| e.to_string())
                        }
                        Ok(r) => Err(format!("status {}", r.status())),
                        Err(e) => Err(format!("{e:?}")),
                    };
                    match outcome {
                        Ok(()) => {
                            load.ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => load
                            .failures
                            .lock()
                            .expect("failures")
                            .push(format!("{:.3} /work?ms={ms}: {e}", unix_now())),
                    }
                }
            })
        })
        .collect();
    (load, tasks)
}

/// Seconds since the epoch, to line failures up with the server's log.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Pushes a group-level reading of `metric` every 300 ms (what an agent in the instances
/// would send) until dropped; the value can be changed on the way.
pub struct Pusher {
    value: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Pusher {
    /// Starts pushing `value` of `metric` to `group`.
    pub fn start(s: &Swell, group: &str, metric: &str, value: f64) -> Pusher {
        use std::sync::atomic::Ordering;
        let shared = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(value.to_bits()));
        let v = shared.clone();
        let url = format!("{}/v1/groups/{group}/metrics", s.url);
        let (token, metric) = (s.token.clone(), metric.to_string());
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            loop {
                let value = f64::from_bits(v.load(Ordering::Relaxed));
                let body = serde_json::json!({"samples": [{"metric": metric, "value": value}]});
                let _ = http.post(&url).bearer_auth(&token).json(&body).send().await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        Pusher {
            value: shared,
            task,
        }
    }

    /// The value pushed from now on.
    pub fn set(&self, value: f64) {
        self.value
            .store(value.to_bits(), std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Pusher {
    fn drop(&mut self) {
        self.task.abort();
    }
}
