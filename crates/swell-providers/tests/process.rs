//! The process provider against real child processes (`sleep`, `sh`, `python3`).
//!
//! Every test uses its own owner tag, and an [`OwnerGuard`] SIGKILLs whatever carries
//! that tag (or sits in its cgroups) when the test ends, passed or failed, and removes
//! its cgroups.
//!
//! The tests run as root on a cgroup v1 hybrid host (the unified hierarchy mounted
//! with no controller), so the provider runs instances in v1 cgroups; the v2 mode is
//! not exercised here (only its choice, from fake mount tables, in the unit tests).

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use swell_core::{InstanceId, Template, TenantId};
use swell_providers::process::cgroup::CgroupMode;
use swell_providers::process::{
    ENV_GROUP, ENV_INSTANCE_ID, ENV_OWNER, ENV_PORT, ENV_TENANT, InstanceUser, ProcessConfig,
    ProcessProvider,
};
use swell_providers::{CreateRequest, ObservedState, Provider, ProviderError, ProviderInstance};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A tag no other test (or test run) uses.
fn unique_owner() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!(
        "test-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// `/proc/<pid>/environ` in one large read (several small ones can straddle an
/// `execve` and return a cut-off environment).
fn read_environ(pid: i32) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut file = std::fs::File::open(format!("/proc/{pid}/environ")).ok()?;
    let mut buf = vec![0; 1 << 20];
    let n = file.read(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// Kills every process tagged with its owner, or in its cgroups, when dropped, and
/// removes the cgroups.
struct OwnerGuard {
    owner: String,
    cgroups: Vec<std::path::PathBuf>,
}

impl OwnerGuard {
    fn new(provider: &ProcessProvider) -> Self {
        OwnerGuard {
            owner: provider.owner().to_string(),
            cgroups: provider.cgroup_parents().to_vec(),
        }
    }

    /// The instance cgroups under the owner's parents.
    fn cgroup_dirs(&self) -> Vec<std::path::PathBuf> {
        self.cgroups
            .iter()
            .filter_map(|p| std::fs::read_dir(p).ok())
            .flatten()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect()
    }

    /// Processes carrying the owner's tag in their environment (a test's own look:
    /// the provider never reads it).
    fn pids(&self) -> Vec<i32> {
        let needle = format!("SWELL_OWNER={}", self.owner);
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                read_environ(*pid).is_some_and(|env| {
                    env.split(|b| *b == 0)
                        .any(|entry| entry == needle.as_bytes())
                })
            })
            .collect()
    }
}

impl Drop for OwnerGuard {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut pids = self.pids();
            for dir in self.cgroup_dirs() {
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                pids.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
            for pid in &pids {
                let _ = killpg(Pid::from_raw(*pid), Signal::SIGKILL);
                let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
            }
            for dir in self.cgroup_dirs() {
                let _ = std::fs::remove_dir(dir);
            }
            if (pids.is_empty() && self.cgroup_dirs().is_empty()) || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for parent in &self.cgroups {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

struct Fixture {
    provider: ProcessProvider,
    dir: tempfile::TempDir,
    guard: OwnerGuard,
}

fn fixture() -> Fixture {
    fixture_with(|_| {})
}

/// A fixture whose configuration `adjust` changes first.
fn fixture_with(adjust: impl FnOnce(&mut ProcessConfig)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ProcessConfig::new(dir.path().join("instances"), unique_owner());
    adjust(&mut config);
    let provider = ProcessProvider::new(config);
    let guard = OwnerGuard::new(&provider);
    Fixture {
        provider,
        dir,
        guard,
    }
}

impl Fixture {
    /// Another provider with the same owner and settings, as a restarted server would
    /// build.
    fn restarted(&self) -> ProcessProvider {
        let mut config = ProcessConfig::new(self.dir.path().join("instances"), &self.guard.owner);
        config.cgroups = self.provider.cgroup_mode() != CgroupMode::None;
        ProcessProvider::new(config)
    }
}

fn request(id: &str, command: &[&str]) -> CreateRequest {
    CreateRequest {
        instance_id: InstanceId(id.into()),
        tenant: TenantId::new("acme").unwrap(),
        group: "web".into(),
        template: Template {
            command: command.iter().map(|s| s.to_string()).collect(),
            ..Template::default()
        },
    }
}

fn pid_of(instance: &ProviderInstance) -> i32 {
    instance.native_id.parse().unwrap()
}

/// Field 3 (state) and 5 (pgrp) of `/proc/<pid>/stat`; `None` once the pid is gone.
fn proc_state(pid: i32) -> Option<(char, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    Some((rest[0].chars().next()?, rest[2].parse().ok()?))
}

async fn find(provider: &ProcessProvider, id: &str) -> Option<ProviderInstance> {
    provider
        .list()
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.instance_id.as_str() == id)
}

/// Polls `check` every 50 ms until it holds or `timeout` passes.
async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < timeout, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET path` over HTTP/1.0; the whole response.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

#[tokio::test]
async fn a_python_web_server_runs_is_listed_answers_and_is_deleted() {
    let f = fixture();
    let mut req = request(
        "web-1",
        &[
            "python3",
            "-m",
            "http.server",
            "{port}",
            "--bind",
            "127.0.0.1",
        ],
    );
    req.template.env = BTreeMap::from([
        ("GREETING".to_string(), "hello-{port}".to_string()),
        // The provider's own tags win over the template's.
        ("SWELL_OWNER".to_string(), "somebody-else".to_string()),
    ]);
    let created = f.provider.create(&req).await.unwrap();
    let pid = pid_of(&created);
    let addr = created.address.expect("an address");
    assert_eq!(created.instance_id, InstanceId("web-1".into()));
    assert_eq!(
        (created.tenant.as_str(), created.group.as_str()),
        ("acme", "web")
    );
    assert_eq!(created.host, "localhost");
    assert_eq!(created.state, ObservedState::Running);
    assert!(addr.ip().is_loopback());
    assert_ne!(addr.port(), 0);

    // While the pyenv shim execs its way to python, the instance never blinks out of
    // the list (mid-exec, /proc can show an empty or cut-off environment).
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(400) {
        assert!(find(&f.provider, "web-1").await.is_some(), "blinked out");
    }

    // Its own process group, so that Ctrl-C on the server's terminal misses it.
    let (_, pgrp) = proc_state(pid).unwrap();
    assert_eq!(pgrp, pid);

    // Its environment carries the tags, the port and the template's variables.
    // (A pyenv shim execs a few times; mid-exec the environment reads empty.)
    let mut environ = Vec::new();
    for _ in 0..100 {
        environ = read_environ(pid).unwrap();
        if !environ.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let environ: Vec<String> = environ
        .split(|b| *b == 0)
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .collect();
    let port = addr.port();
    for expected in [
        "SWELL_INSTANCE_ID=web-1".to_string(),
        "SWELL_GROUP=web".into(),
        "SWELL_TENANT=acme".into(),
        format!("SWELL_OWNER={}", f.guard.owner),
        format!("PORT={port}"),
        format!("GREETING=hello-{port}"),
    ] {
        assert!(environ.contains(&expected), "{expected} in {environ:?}");
    }

    let listed = find(&f.provider, "web-1").await.expect("listed");
    assert_eq!(listed, created);
    assert_eq!(f.provider.list().await.unwrap().len(), 1);

    // It serves on the port it was given.
    let start = Instant::now();
    let response = loop {
        match http_get(addr, "/").await {
            Ok(response) => break response,
            Err(e) => assert!(start.elapsed() < Duration::from_secs(15), "python: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(response.starts_with("HTTP/1."), "{response}");
    assert!(response.contains(" 200 "), "{response}");

    // Idempotent: the same id again is the same process.
    let again = f.provider.create(&req).await.unwrap();
    assert_eq!(again, created);
    assert_eq!(f.provider.list().await.unwrap().len(), 1);

    // Logs are per instance; python logs each request on stderr.
    let logs = f.provider.log_dir(&req.instance_id);
    assert_eq!(logs, f.dir.path().join("instances").join("web-1"));
    assert!(logs.join("stdout.log").is_file());
    eventually(Duration::from_secs(5), "the request is logged", || {
        let text = std::fs::read_to_string(logs.join("stderr.log")).unwrap_or_default();
        async move { text.contains("GET /") }
    })
    .await;

    let start = Instant::now();
    f.provider
        .delete(&req.instance_id, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(find(&f.provider, "web-1").await, None);
    assert!(
        http_get(addr, "/").await.is_err(),
        "nothing listens any more"
    );
    // Deleting what is gone succeeds; the logs stay.
    f.provider
        .delete(&req.instance_id, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(logs.join("stderr.log").is_file());
}

#[tokio::test]
async fn metrics_tell_a_busy_loop_from_a_sleeper_and_pause_stops_the_loop() {
    let f = fixture();
    let busy = request("busy", &["sh", "-c", "while :; do :; done"]);
    let idle = request("idle", &["sleep", "300"]);
    f.provider.create(&busy).await.unwrap();
    f.provider.create(&idle).await.unwrap();
    let ids = vec![
        busy.instance_id.clone(),
        idle.instance_id.clone(),
        InstanceId("not-there".into()),
    ];

    f.provider.metrics(&ids).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let metrics = f.provider.metrics(&ids).await.unwrap();
    let got: Vec<&str> = metrics.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(got, ["busy", "idle"], "an unknown id is left out");
    let (busy_m, idle_m) = (metrics[0].1, metrics[1].1);
    eprintln!("busy: {busy_m:?}, idle: {idle_m:?}");
    // The machine is shared, so "busy" only means clearly more than idle.
    assert!(busy_m.cpu_percent > 20.0, "busy: {busy_m:?}");
    assert!(busy_m.cpu_percent < 250.0, "busy: {busy_m:?}");
    assert!(idle_m.cpu_percent < 5.0, "idle: {idle_m:?}");
    for m in [busy_m, idle_m] {
        assert!(m.memory_mb > 0.1 && m.memory_mb < 100.0, "{m:?}");
    }

    // Paused, the loop gets no CPU; resumed, it does again.
    f.provider.pause(&busy.instance_id).await.unwrap();
    assert_eq!(
        find(&f.provider, "busy").await.unwrap().state,
        ObservedState::Paused
    );
    f.provider.metrics(&ids[..1]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let paused = f.provider.metrics(&ids[..1]).await.unwrap();
    assert!(paused[0].1.cpu_percent < 5.0, "paused: {paused:?}");

    f.provider.resume(&busy.instance_id).await.unwrap();
    assert_eq!(
        find(&f.provider, "busy").await.unwrap().state,
        ObservedState::Running
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let resumed = f.provider.metrics(&ids[..1]).await.unwrap();
    assert!(resumed[0].1.cpu_percent > 20.0, "resumed: {resumed:?}");

    // One observation lists both and measures both, from the same samples.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let observed = f.provider.observe().await.unwrap();
    assert!(observed.measured && observed.metrics_error.is_none());
    let mut seen: Vec<(&str, f64)> = observed
        .instances
        .iter()
        .map(|(p, m)| (p.instance_id.as_str(), m.map_or(-1.0, |m| m.cpu_percent)))
        .collect();
    seen.sort_by(|a, b| a.0.cmp(b.0));
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[0].0 == "busy" && seen[0].1 > 20.0, "{seen:?}");
    assert!(
        seen[1].0 == "idle" && (0.0..5.0).contains(&seen[1].1),
        "{seen:?}"
    );

    for id in &ids {
        f.provider.delete(id, Duration::from_secs(5)).await.unwrap();
    }
    assert!(f.provider.list().await.unwrap().is_empty());
    assert!(f.provider.metrics(&ids).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_process_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let f = fixture();
    let stubborn = request(
        "stubborn",
        &["sh", "-c", "trap '' TERM; while :; do sleep 0.05; done"],
    );
    let created = f.provider.create(&stubborn).await.unwrap();
    let pid = pid_of(&created);
    // Give sh time to install its trap.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let grace = Duration::from_millis(700);
    let start = Instant::now();
    f.provider
        .delete(&stubborn.instance_id, grace)
        .await
        .unwrap();
    let took = start.elapsed();
    assert!(took >= grace, "killed before the grace period: {took:?}");
    assert!(took < grace + Duration::from_secs(3), "{took:?}");
    assert_eq!(find(&f.provider, "stubborn").await, None);
    eventually(Duration::from_secs(5), "the pid is reaped", || async move {
        proc_state(pid).is_none()
    })
    .await;
    assert!(f.guard.pids().is_empty(), "no group member is left");
}

#[tokio::test]
async fn a_paused_instance_still_stops_promptly_on_sigterm() {
    let f = fixture();
    let req = request("sleeper", &["sleep", "300"]);
    f.provider.create(&req).await.unwrap();
    f.provider.pause(&req.instance_id).await.unwrap();
    let start = Instant::now();
    f.provider
        .delete(&req.instance_id, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(find(&f.provider, "sleeper").await, None);
}

#[tokio::test]
async fn a_restarted_server_adopts_its_instances_and_others_do_not_see_them() {
    let f = fixture();
    let req = request("adopted", &["sleep", "300"]);
    let created = f.provider.create(&req).await.unwrap();

    let restarted = f.restarted();
    let seen = find(&restarted, "adopted").await.expect("adopted");
    assert_eq!(seen, created);
    // Creating it again through the new provider returns the running one.
    assert_eq!(restarted.create(&req).await.unwrap(), created);
    let metrics = restarted
        .metrics(std::slice::from_ref(&req.instance_id))
        .await
        .unwrap();
    assert_eq!(metrics.len(), 1);

    let stranger = ProcessProvider::new(ProcessConfig::new(
        f.dir.path().join("other"),
        unique_owner(),
    ));
    let _stranger_guard = OwnerGuard::new(&stranger);
    assert!(stranger.list().await.unwrap().is_empty());
    assert!(
        stranger
            .metrics(std::slice::from_ref(&req.instance_id))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        stranger.pause(&req.instance_id).await,
        Err(ProviderError::NotFound(_))
    ));
    // A stranger's delete of the same id is a no-op on our process.
    stranger
        .delete(&req.instance_id, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(find(&f.provider, "adopted").await.is_some());

    restarted
        .delete(&req.instance_id, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(find(&f.provider, "adopted").await, None);
    assert_eq!(find(&restarted, "adopted").await, None);
}

#[tokio::test]
async fn instances_get_distinct_ports_and_exited_ones_are_reaped() {
    let f = fixture();
    let mut ports = Vec::new();
    for i in 0..5 {
        let created = f
            .provider
            .create(&request(&format!("s-{i}"), &["sleep", "300"]))
            .await
            .unwrap();
        ports.push(created.address.unwrap().port());
    }
    let mut unique = ports.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ports.len(), "{ports:?}");
    assert_eq!(f.provider.list().await.unwrap().len(), 5);

    let short = f
        .provider
        .create(&request(
            "short",
            &["sh", "-c", "echo hi; echo oops >&2; exit 3"],
        ))
        .await
        .unwrap();
    let pid = pid_of(&short);
    eventually(
        Duration::from_secs(5),
        "the exited process is reaped",
        || async move { proc_state(pid).is_none() },
    )
    .await;
    assert_eq!(find(&f.provider, "short").await, None);
    let logs = f.provider.log_dir(&short.instance_id);
    assert_eq!(
        std::fs::read_to_string(logs.join("stdout.log")).unwrap(),
        "hi\n"
    );
    assert_eq!(
        std::fs::read_to_string(logs.join("stderr.log")).unwrap(),
        "oops\n"
    );
    // An exited instance is created anew; its logs are appended to.
    let again = f
        .provider
        .create(&request("short", &["sh", "-c", "echo again"]))
        .await
        .unwrap();
    assert_ne!(again.native_id, short.native_id);
    eventually(Duration::from_secs(5), "the second run logs", || {
        let text = std::fs::read_to_string(logs.join("stdout.log")).unwrap_or_default();
        async move { text == "hi\nagain\n" }
    })
    .await;

    for i in 0..5 {
        f.provider
            .delete(&InstanceId(format!("s-{i}")), Duration::from_secs(5))
            .await
            .unwrap();
    }
    assert!(f.provider.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn unrunnable_templates_are_invalid() {
    let f = fixture();
    let not_executable = f.dir.path().join("script.sh");
    std::fs::write(&not_executable, "#!/bin/sh\necho hi\n").unwrap();
    let not_executable = not_executable.to_str().unwrap().to_string();
    for (command, name) in [
        (
            vec!["/nonexistent/swell-test-program"],
            "swell-test-program",
        ),
        (
            vec!["swell-no-such-program-on-path", "x"],
            "swell-no-such-program-on-path",
        ),
        (vec![not_executable.as_str()], "script.sh"),
        (vec![], "command"),
    ] {
        let err = f
            .provider
            .create(&request("bad", &command))
            .await
            .unwrap_err();
        match &err {
            ProviderError::InvalidTemplate(message) => {
                assert!(message.contains(name), "{message}")
            }
            other => panic!("{command:?}: {other:?}"),
        }
    }
    assert!(f.provider.list().await.unwrap().is_empty());

    let err = f
        .provider
        .create(&request("../escape", &["sleep", "1"]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("../escape"), "{err}");
}

#[tokio::test]
async fn unknown_instances() {
    let f = fixture();
    let id = InstanceId("ghost".into());
    assert!(matches!(
        f.provider.pause(&id).await,
        Err(ProviderError::NotFound(_))
    ));
    assert!(matches!(
        f.provider.resume(&id).await,
        Err(ProviderError::NotFound(_))
    ));
    f.provider
        .delete(&id, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(f.provider.metrics(&[id]).await.unwrap().is_empty());
    assert_eq!(f.provider.name(), "process");
}

#[tokio::test]
async fn a_wrapper_and_everything_it_starts_are_one_instance() {
    let f = fixture();
    // A shell that starts a child in its group and a daemon in a session of its own;
    // all three inherit the tags.
    let req = request(
        "family",
        &["sh", "-c", "sleep 300 & setsid sleep 301 & wait"],
    );
    let created = f.provider.create(&req).await.unwrap();
    eventually(Duration::from_secs(5), "all three run", || async {
        f.guard.pids().len() == 3
    })
    .await;
    let listed = f.provider.list().await.unwrap();
    assert_eq!(listed, vec![created.clone()], "one instance, the shell");
    let metrics = f
        .provider
        .metrics(std::slice::from_ref(&req.instance_id))
        .await
        .unwrap();
    assert_eq!(metrics.len(), 1);
    assert!(metrics[0].1.memory_mb > 0.0);

    f.provider.pause(&req.instance_id).await.unwrap();
    for pid in f.guard.pids() {
        eventually(
            Duration::from_secs(2),
            "every process is stopped",
            || async move { proc_state(pid).is_none_or(|(state, _)| state == 'T') },
        )
        .await;
    }
    f.provider.resume(&req.instance_id).await.unwrap();

    f.provider
        .delete(&req.instance_id, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(f.guard.pids().is_empty(), "{:?}", f.guard.pids());
    assert!(f.provider.list().await.unwrap().is_empty());
}

/// The "server" of [`instances_outlive_their_server`]: a second copy of this test
/// binary that creates one instance, prints its pid and waits to be killed. It does
/// nothing when run as an ordinary test.
#[tokio::test]
#[ignore = "run by instances_outlive_their_server"]
async fn helper_server() {
    let (Ok(owner), Ok(dir)) = (
        std::env::var("SWELL_TEST_HELPER_OWNER"),
        std::env::var("SWELL_TEST_HELPER_DIR"),
    ) else {
        return;
    };
    let provider = ProcessProvider::new(ProcessConfig::new(dir, owner));
    let created = provider
        .create(&request("survivor", &["sleep", "300"]))
        .await
        .unwrap();
    println!("PID {}", created.native_id);
    tokio::time::sleep(Duration::from_secs(300)).await;
}

#[tokio::test]
async fn instances_outlive_their_server() {
    use tokio::io::AsyncBufReadExt;
    let f = fixture();
    let mut server = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "helper_server",
            "--exact",
            "--include-ignored",
            "--nocapture",
        ])
        .env("SWELL_TEST_HELPER_OWNER", &f.guard.owner)
        .env("SWELL_TEST_HELPER_DIR", f.dir.path().join("instances"))
        .stdout(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let server_pid = Pid::from_raw(server.id().unwrap() as i32);
    let mut lines = tokio::io::BufReader::new(server.stdout.take().unwrap()).lines();
    let pid: i32 = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(pid) = line.strip_prefix("PID ") {
                return pid.parse().unwrap();
            }
        }
        panic!("the helper server printed no pid");
    })
    .await
    .expect("the helper server starts an instance");

    // Ctrl-C on the server's terminal: SIGINT to its (foreground) process group.
    killpg(server_pid, Signal::SIGINT).unwrap();
    let _ = kill(server_pid, Signal::SIGKILL);
    let status = tokio::time::timeout(Duration::from_secs(10), server.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success());

    tokio::time::sleep(Duration::from_millis(200)).await;
    let (state, _) = proc_state(pid).expect("the instance outlived its server");
    assert_ne!(state, 'Z');

    // The restarted server finds it and deletes it.
    let adopted = find(&f.provider, "survivor").await.expect("adopted");
    assert_eq!(pid_of(&adopted), pid);
    assert_eq!(adopted.state, ObservedState::Running);
    f.provider
        .delete(&adopted.instance_id, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(find(&f.provider, "survivor").await, None);
    assert!(f.guard.pids().is_empty());
}

/// Reads a file the instance writes, once it is complete (ends with a newline).
async fn written_by_instance(path: std::path::PathBuf) -> String {
    let mut text = String::new();
    eventually(
        Duration::from_secs(10),
        &format!("{} is written", path.display()),
        || {
            text = std::fs::read_to_string(&path).unwrap_or_default();
            let done = text.ends_with('\n');
            async move { done }
        },
    )
    .await;
    text
}

#[tokio::test]
async fn an_instance_sees_only_its_allowed_environment_in_its_own_directory() {
    for cgroups in [true, false] {
        let f = fixture_with(|c| c.cgroups = cgroups);
        let mut req = request(
            "envy",
            &["sh", "-c", "env > env.txt; pwd > pwd.txt; exec sleep 1000"],
        );
        req.template.env = BTreeMap::from([("GREETING".to_string(), "hi-{port}".to_string())]);
        let created = f.provider.create(&req).await.unwrap();
        let dir = f.provider.log_dir(&req.instance_id);
        let env = written_by_instance(dir.join("env.txt")).await;
        let pwd = written_by_instance(dir.join("pwd.txt")).await;
        assert_eq!(
            pwd.trim_end(),
            std::fs::canonicalize(&dir).unwrap().to_str().unwrap()
        );
        let port = created.address.unwrap().port();
        let vars: BTreeMap<&str, &str> = env.lines().filter_map(|l| l.split_once('=')).collect();
        let mut keys: Vec<&str> = vars.keys().copied().collect();
        // The shell adds PWD (and may add SHLVL or `_`) on its own.
        keys.retain(|k| !matches!(*k, "PWD" | "SHLVL" | "_" | "OLDPWD"));
        assert_eq!(
            keys,
            [
                "GREETING",
                "HOME",
                "PATH",
                "PORT",
                "SWELL_GROUP",
                "SWELL_INSTANCE_ID",
                "SWELL_OWNER",
                "SWELL_TENANT"
            ],
            "cgroups {cgroups}: {env}"
        );
        assert_eq!(vars["HOME"], dir.to_str().unwrap());
        assert_eq!(vars["GREETING"], format!("hi-{port}"));
        assert_eq!(vars["PATH"], std::env::var("PATH").unwrap());
        // Nothing of the test process (the "server") leaks: cargo sets these for it.
        assert!(std::env::var("CARGO_PKG_NAME").is_ok());
        assert!(!env.contains("CARGO"), "{env}");
        f.provider
            .delete(&req.instance_id, Duration::from_secs(5))
            .await
            .unwrap();
    }
}

/// The value of one cgroup file.
fn cgroup_file(dirs: &[std::path::PathBuf], name: &str) -> String {
    let dir = dirs
        .iter()
        .find(|d| d.join(name).exists())
        .unwrap_or_else(|| panic!("no {name} in {dirs:?}"));
    std::fs::read_to_string(dir.join(name))
        .unwrap()
        .trim()
        .to_string()
}

#[tokio::test]
async fn an_instance_runs_in_its_own_cgroup_with_the_templates_limits() {
    let f = fixture();
    // This host: cgroup v1 hybrid, tests as root.
    assert_eq!(f.provider.cgroup_mode(), CgroupMode::V1);
    let mut req = request("limited", &["sh", "-c", "sleep 1000 & wait"]);
    req.template.vcpus = 2;
    req.template.memory_mb = 64;
    let created = f.provider.create(&req).await.unwrap();
    let dirs = f.provider.cgroup_dirs(&req.instance_id);
    assert_eq!(dirs.len(), 3);
    for dir in &dirs {
        assert!(dir.ends_with("limited"), "{dir:?}");
        assert!(
            dir.parent().unwrap().parent().unwrap().ends_with("swell"),
            "{dir:?}"
        );
    }
    assert_eq!(cgroup_file(&dirs, "cpu.cfs_quota_us"), "200000");
    assert_eq!(cgroup_file(&dirs, "cpu.cfs_period_us"), "100000");
    assert_eq!(
        cgroup_file(&dirs, "memory.limit_in_bytes"),
        (64u64 * 1024 * 1024).to_string()
    );
    assert_eq!(cgroup_file(&dirs, "pids.max"), "512");
    // The shell and the sleep it started, in every hierarchy.
    let pid = pid_of(&created);
    for dir in &dirs {
        let dir = dir.clone();
        eventually(
            Duration::from_secs(5),
            "both processes are in the cgroup",
            || {
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                let pids: Vec<i32> = procs.lines().filter_map(|l| l.parse().ok()).collect();
                async move { pids.len() == 2 && pids.contains(&pid) }
            },
        )
        .await;
    }
    // The program runs under the pid the provider started (the gate exec'd in place).
    let comm = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(comm.contains("sleep 1000 & wait"), "{comm:?}");

    // Another owner's parent is elsewhere: two servers never share cgroups.
    let other = fixture();
    assert_ne!(other.provider.cgroup_parents(), f.provider.cgroup_parents());

    f.provider
        .delete(&req.instance_id, Duration::from_secs(5))
        .await
        .unwrap();
    for dir in &dirs {
        assert!(!dir.exists(), "{dir:?} removed with the instance");
    }
}

#[tokio::test]
async fn a_fork_loop_stops_at_the_pids_limit() {
    let f = fixture_with(|c| c.pids_max = 40);
    let req = request(
        "forky",
        &[
            "sh",
            "-c",
            "for i in $(seq 1000); do sleep 100 & done; wait",
        ],
    );
    f.provider.create(&req).await.unwrap();
    let dirs = f.provider.cgroup_dirs(&req.instance_id);
    let stderr = f.provider.log_dir(&req.instance_id).join("stderr.log");
    eventually(Duration::from_secs(20), "forks fail at the limit", || {
        let text = std::fs::read_to_string(&stderr).unwrap_or_default();
        async move { text.to_lowercase().contains("fork") }
    })
    .await;
    let current: u32 = cgroup_file(&dirs, "pids.current").parse().unwrap();
    assert!(current <= 40, "{current} tasks");
    let events = cgroup_file(&dirs, "pids.events");
    assert!(!events.ends_with(" 0"), "{events}");
    f.provider
        .delete(&req.instance_id, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(f.guard.pids().is_empty(), "{:?}", f.guard.pids());
    assert!(f.provider.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_process_with_forged_tags_is_never_adopted() {
    for cgroups in [true, false] {
        let f = fixture_with(|c| c.cgroups = cgroups);
        // A real instance of tenant acme, so that there is something to pose as.
        let real = f
            .provider
            .create(&request("real", &["sleep", "300"]))
            .await
            .unwrap();
        // A process started outside Swell that claims to be an instance of this
        // server, in another tenant's group, and to be "real" as well.
        let mut forgers = Vec::new();
        for id in ["forged", "real"] {
            let child = std::process::Command::new("sleep")
                .arg("300")
                .env(ENV_OWNER, &f.guard.owner)
                .env(ENV_INSTANCE_ID, id)
                .env(ENV_TENANT, "victim")
                .env(ENV_GROUP, "payroll")
                .env(ENV_PORT, "9")
                .process_group(0)
                .spawn()
                .unwrap();
            forgers.push(child);
        }
        for provider in [&f.provider, &f.restarted()] {
            let listed = provider.list().await.unwrap();
            assert_eq!(listed, vec![real.clone()], "cgroups {cgroups}");
            assert!(matches!(
                provider.pause(&InstanceId("forged".into())).await,
                Err(ProviderError::NotFound(_))
            ));
            let metrics = provider
                .metrics(&[InstanceId("forged".into())])
                .await
                .unwrap();
            assert!(metrics.is_empty());
        }
        // Deleting "real" stops the real one only.
        f.provider
            .delete(&real.instance_id, Duration::from_secs(5))
            .await
            .unwrap();
        for child in &mut forgers {
            assert!(
                child.try_wait().unwrap().is_none(),
                "a forger was signalled"
            );
            let _ = child.kill();
            let _ = child.wait();
        }
        assert!(f.provider.list().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn without_cgroups_a_restart_adopts_from_the_records_and_delete_takes_the_group() {
    let f = fixture_with(|c| c.cgroups = false);
    assert_eq!(f.provider.cgroup_mode(), CgroupMode::None);
    assert!(f.provider.cgroup_dirs(&InstanceId("x".into())).is_empty());
    let req = request("kept", &["sh", "-c", "sleep 300 & wait"]);
    let created = f.provider.create(&req).await.unwrap();
    eventually(
        Duration::from_secs(5),
        "the shell and its sleep run",
        || async { f.guard.pids().len() == 2 },
    )
    .await;
    let restarted = f.restarted();
    assert_eq!(find(&restarted, "kept").await, Some(created.clone()));
    let metrics = restarted
        .metrics(std::slice::from_ref(&req.instance_id))
        .await
        .unwrap();
    assert_eq!(metrics.len(), 1);
    // The recorded pid names one process: once it is gone and only its group is left,
    // the oldest member stands for the instance.
    kill(Pid::from_raw(pid_of(&created)), Signal::SIGKILL).unwrap();
    eventually(Duration::from_secs(5), "the shell is gone", || async {
        f.guard.pids().len() == 1
    })
    .await;
    let left = find(&restarted, "kept").await.expect("still an instance");
    assert_ne!(left.native_id, created.native_id);
    restarted
        .delete(&req.instance_id, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(f.guard.pids().is_empty());
    assert!(restarted.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_instance_user_cannot_read_or_write_the_servers_files() {
    use std::os::unix::fs::PermissionsExt;
    let nobody = InstanceUser::lookup("nobody").expect("tests run as root");
    assert!(matches!(
        InstanceUser::lookup("root"),
        Err(swell_providers::process::InstanceUserError::Root(_))
    ));
    assert!(matches!(
        InstanceUser::lookup("swell-no-such-user"),
        Err(swell_providers::process::InstanceUserError::NoSuchUser(_))
    ));
    let user = nobody.clone();
    let f = fixture_with(move |c| c.instance_user = Some(user));
    // The "data directory": searchable like a real one (0755), with a 0600 secret.
    let data = f.dir.path();
    // A data directory made 0700 is told at start, naming the directory.
    std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o700)).unwrap();
    let err = nobody.check_reach(&data.join("instances")).unwrap_err();
    assert!(err.to_string().contains("chmod o+x"), "{err}");
    assert!(err.to_string().contains(data.to_str().unwrap()), "{err}");
    std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o755)).unwrap();
    nobody.check_reach(&data.join("instances")).unwrap();
    std::fs::write(data.join("secret.key"), "TOP-SECRET-KEY\n").unwrap();
    std::fs::set_permissions(
        data.join("secret.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let req = request(
        "jailed",
        &[
            "sh",
            "-c",
            "id -u > uid.txt; cat ../../secret.key > stolen.txt; \
             echo owned > ../../pwned; echo owned > ../../instances/pwned; \
             echo mine > mine.txt; echo done > done.txt; exec sleep 1000",
        ],
    );
    f.provider.create(&req).await.unwrap();
    let dir = f.provider.log_dir(&req.instance_id);
    written_by_instance(dir.join("done.txt")).await;
    assert_eq!(
        std::fs::read_to_string(dir.join("uid.txt")).unwrap().trim(),
        nobody.uid.to_string()
    );
    let stolen = std::fs::read_to_string(dir.join("stolen.txt")).unwrap_or_default();
    assert!(!stolen.contains("TOP-SECRET"), "{stolen}");
    assert!(!data.join("pwned").exists());
    assert!(!data.join("instances").join("pwned").exists());
    // Its own directory is its own.
    assert_eq!(
        std::fs::read_to_string(dir.join("mine.txt")).unwrap(),
        "mine\n"
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&dir).unwrap().uid(), nobody.uid);
    let stderr = std::fs::read_to_string(dir.join("stderr.log")).unwrap();
    assert_eq!(stderr.matches("Permission denied").count(), 3, "{stderr}");
    // The records it cannot reach either (they are what adoption trusts).
    let records = data.join("process-records");
    assert_eq!(
        std::fs::metadata(records.read_dir().unwrap().next().unwrap().unwrap().path())
            .unwrap()
            .mode()
            & 0o777,
        0o700
    );
    f.provider
        .delete(&req.instance_id, Duration::from_secs(5))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_log_planted_as_a_link_is_refused() {
    let f = fixture();
    let req = request("linky", &["sleep", "300"]);
    let dir = f.provider.log_dir(&req.instance_id);
    std::fs::create_dir_all(&dir).unwrap();
    let target = f.dir.path().join("precious");
    std::fs::write(&target, "keep\n").unwrap();
    std::os::unix::fs::symlink(&target, dir.join("stdout.log")).unwrap();
    assert!(f.provider.create(&req).await.is_err());
    std::fs::remove_file(dir.join("stdout.log")).unwrap();
    std::fs::hard_link(&target, dir.join("stdout.log")).unwrap();
    assert!(f.provider.create(&req).await.is_err());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep\n");
    assert!(f.provider.list().await.unwrap().is_empty());
}

/// `list()` with 300 idle instances: how long one takes. Run by hand:
/// `cargo test -p swell-providers --test process list_cost -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "a measurement, not a test"]
async fn list_cost() {
    let f = fixture();
    let n = 300;
    for i in 0..n {
        f.provider
            .create(&request(&format!("idle-{i}"), &["sleep", "1000"]))
            .await
            .unwrap();
    }
    assert_eq!(f.provider.list().await.unwrap().len(), n);
    let rounds = 20;
    let start = Instant::now();
    for _ in 0..rounds {
        assert_eq!(f.provider.list().await.unwrap().len(), n);
    }
    let per_list = start.elapsed() / rounds;
    let processes = std::fs::read_dir("/proc")
        .unwrap()
        .filter(|e| {
            e.as_ref().is_ok_and(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|s| s.parse::<u32>().is_ok())
            })
        })
        .count();
    println!("LIST_COST instances={n} processes_on_host={processes} per_list={per_list:?}");
    for i in 0..n {
        f.provider
            .delete(&InstanceId(format!("idle-{i}")), Duration::from_secs(5))
            .await
            .unwrap();
    }
}
