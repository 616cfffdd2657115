//! The docker provider against the real Docker engine on this machine (and a second
//! `dockerd` the test starts, as a second host).
//!
//! Skipped, with a message, when `/var/run/docker.sock` is absent. The
//! `swell-demo-app:latest` image is built with `scripts/build-demo-image` when the
//! engine does not have it. Every test uses its own owner tag and tenants, and a
//! [`Cleanup`] guard removes whatever carries them (containers, networks, the second
//! daemon and its files) when the test ends, passed or failed. The tests run one at a
//! time: placement counts every Swell container on an engine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use swell_core::{InstanceId, Template, TenantId};
use swell_providers::docker::{DockerConfig, DockerProvider, EngineConfig, TlsConfig};
use swell_providers::{CreateRequest, ObservedState, Provider, ProviderError, ProviderInstance};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SOCKET: &str = "/var/run/docker.sock";
const IMAGE: &str = "swell-demo-app:latest";

/// One test at a time (placement sees every Swell container on an engine).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Whether the engine is here; says why not when it is not.
fn docker_here(test: &str) -> bool {
    if Path::new(SOCKET).exists() {
        true
    } else {
        eprintln!("SKIPPED {test}: {SOCKET} is absent (no Docker engine on this machine)");
        false
    }
}

/// Runs the docker CLI against `host` (None: the default engine); its stdout, trimmed,
/// and whether it succeeded.
fn docker(host: Option<&str>, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new("docker");
    if let Some(h) = host {
        cmd.args(["-H", h]);
    }
    match cmd.args(args).stdin(Stdio::null()).output() {
        Ok(out) => (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        ),
        Err(e) => (false, e.to_string()),
    }
}

/// Builds the demo image with the repository's script unless the engine has it.
fn ensure_image() {
    static ONCE: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut done = ONCE.lock().unwrap_or_else(|p| p.into_inner());
    if *done || docker(None, &["image", "inspect", IMAGE]).0 {
        *done = true;
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/build-demo-image");
    // A target dir of its own: the `cargo test` running this may hold the lock on
    // its own target dir while the tests run.
    let target = match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".cache/swell/demo-image-target"),
        None => std::env::temp_dir().join("swell-demo-image-target"),
    };
    eprintln!("building {IMAGE} with {}", script.display());
    let status = Command::new(&script)
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .expect("run scripts/build-demo-image");
    assert!(status.success(), "scripts/build-demo-image failed");
    *done = true;
}

/// A name no other test (or test run) uses: lowercase letters, digits and '-'.
fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Removes, when dropped, every container labelled with the owner or one of the
/// tenants and every network of the tenants, on each engine; then stops the daemons.
struct Cleanup {
    owner: String,
    tenants: Vec<String>,
    hosts: Vec<Option<String>>,
    daemons: Vec<Daemon>,
    /// Removed after the daemons have stopped (a running daemon keeps mounts there).
    dirs: Vec<tempfile::TempDir>,
}

impl Cleanup {
    fn new(owner: &str, tenants: &[&str]) -> Self {
        Cleanup {
            owner: owner.to_string(),
            tenants: tenants.iter().map(|t| t.to_string()).collect(),
            hosts: vec![None],
            daemons: Vec::new(),
            dirs: Vec::new(),
        }
    }

    /// Keeps `dir` until the end of the test; its path.
    fn keep_dir(&mut self, dir: tempfile::TempDir) -> PathBuf {
        let path = dir.path().to_path_buf();
        self.dirs.push(dir);
        path
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for host in &self.hosts {
            let host = host.as_deref();
            let mut filters = vec![format!("label=swell.owner={}", self.owner)];
            filters.extend(
                self.tenants
                    .iter()
                    .map(|t| format!("label=swell.tenant={t}")),
            );
            for filter in filters {
                let (_, ids) = docker(host, &["ps", "-aq", "--filter", &filter]);
                for id in ids.split_whitespace() {
                    docker(host, &["rm", "-f", id]);
                }
            }
            for tenant in &self.tenants {
                docker(host, &["network", "rm", &format!("swell-{tenant}")]);
            }
        }
        for daemon in &mut self.daemons {
            daemon.stop();
        }
        self.dirs.clear();
    }
}

/// A second `dockerd` in a temp dir: own socket, data root, exec root, pid file, no
/// default bridge, no iptables (the host's engine owns those chains), the `vfs` storage
/// driver (works on any file system), its own managed containerd.
struct Daemon {
    dir: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    fn start(dir: &Path) -> Daemon {
        Daemon::start_with(dir, &[])
    }

    /// Starts it with extra `dockerd` arguments.
    fn start_with(dir: &Path, extra: &[String]) -> Daemon {
        std::fs::create_dir_all(dir).expect("daemon dir");
        std::fs::write(dir.join("daemon.json"), "{}").expect("daemon.json");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("dockerd.log"))
            .expect("dockerd.log");
        let path = |p: &str| dir.join(p).display().to_string();
        let child = Command::new("dockerd")
            .args(["--host", &format!("unix://{}", path("d.sock"))])
            .args(["--config-file", &path("daemon.json")])
            .args(["--data-root", &path("data")])
            .args(["--exec-root", &path("exec")])
            .args(["--pidfile", &path("d.pid")])
            .args(["--bridge", "none", "--iptables=false", "--ip-masq=false"])
            .args(["--storage-driver", "vfs", "--mtu", "1400"])
            .args(["--containerd-namespace", "swelltest"])
            .args(["--containerd-plugins-namespace", "swelltest-plugins"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start a second dockerd");
        let daemon = Daemon {
            dir: dir.to_path_buf(),
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !docker(Some(&daemon.host()), &["info", "--format", "{{.ID}}"]).0 {
            assert!(
                Instant::now() < deadline,
                "second dockerd did not answer within 60s; see {}",
                daemon.dir.join("dockerd.log").display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        daemon
    }

    fn host(&self) -> String {
        format!("unix://{}", self.dir.join("d.sock").display())
    }

    /// SIGTERM, then SIGKILL after 20 s; waits for it, then removes what it leaves
    /// behind: the shims of its containers (their containerd is gone) and the mounts
    /// under its directory (it bind-mounts its data root), so the directory can go.
    fn stop(&mut self) {
        self.stop_daemon();
        self.reap_leftovers();
    }

    fn stop_daemon(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

impl Daemon {
    fn reap_leftovers(&self) {
        let dir = self.dir.display().to_string();
        // Shims started for this daemon's containers name its containerd socket.
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains("containerd-shim") && cmdline.contains(&format!("{dir}/")) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        // Mounts under the directory, deepest first.
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<&str> = mountinfo
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .filter(|point| point.starts_with(&format!("{dir}/")) || *point == dir)
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for point in points {
            let _ = Command::new("umount").args(["-l", point]).status();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

fn template() -> Template {
    Template {
        image: Some(IMAGE.into()),
        vcpus: 1,
        memory_mb: 64,
        ..Template::default()
    }
}

fn request(id: &str, tenant: &str, template: Template) -> CreateRequest {
    CreateRequest {
        instance_id: InstanceId(id.into()),
        tenant: TenantId::new(tenant).expect("valid tenant"),
        group: "web".into(),
        template,
    }
}

fn local_engine(name: &str) -> EngineConfig {
    EngineConfig {
        cpu_capacity: Some(2.0),
        memory_mb_capacity: Some(4096),
        ..EngineConfig::local(name)
    }
}

fn provider(owner: &str, engines: Vec<EngineConfig>) -> DockerProvider {
    DockerProvider::new(DockerConfig::new(owner, engines)).expect("valid config")
}

/// `GET path` on `addr` (HTTP/1.0); the status line and body.
async fn get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    stream.read_to_string(&mut out).await?;
    Ok(out)
}

/// Waits until the instance answers `/healthz`.
async fn wait_healthy(addr: std::net::SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(text) = get(addr, "/healthz").await
            && text.contains("ok")
        {
            return;
        }
        assert!(Instant::now() < deadline, "{addr} never became healthy");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn find<'a>(list: &'a [ProviderInstance], id: &str) -> Option<&'a ProviderInstance> {
    list.iter().find(|i| i.instance_id.as_str() == id)
}

fn network_exists(host: Option<&str>, tenant: &str) -> bool {
    docker(host, &["network", "inspect", &format!("swell-{tenant}")]).0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_lives_through_create_list_metrics_pause_and_delete() {
    if !docker_here("lifecycle") {
        return;
    }
    let _serial = SERIAL.lock().await;
    ensure_image();
    let (owner, tenant) = (unique("own"), unique("ten"));
    let _cleanup = Cleanup::new(&owner, &[&tenant]);
    let p = provider(&owner, vec![local_engine("local")]);
    assert_eq!(p.name(), "docker");

    let created = p
        .create(&request("life-1", &tenant, template()))
        .await
        .expect("create");
    assert_eq!(created.state, ObservedState::Running);
    assert_eq!(created.host, "local");
    assert_eq!(created.tenant, tenant);
    assert_eq!(created.group, "web");
    let addr = created.address.expect("a published address");
    assert!(addr.ip().is_loopback(), "{addr}");
    wait_healthy(addr).await;
    let root = get(addr, "/").await.expect("GET /");
    assert!(
        root.contains("life-1"),
        "the app sees its instance id: {root}"
    );

    // Labels, limits and the tenant network, as the engine has them.
    let (ok, inspect) = docker(
        None,
        &[
            "inspect",
            "--format",
            "{{index .Config.Labels \"swell.owner\"}} {{.HostConfig.NanoCpus}} {{.HostConfig.Memory}} {{.HostConfig.NetworkMode}}",
            "swell-life-1",
        ],
    );
    assert!(ok, "{inspect}");
    assert_eq!(
        inspect,
        format!("{owner} 1000000000 {} swell-{tenant}", 64 * 1024 * 1024)
    );
    assert!(network_exists(None, &tenant));

    let listed = p.list().await.expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0], created);

    // Metrics: load the instance while the engine samples it.
    let busy = tokio::spawn(async move {
        for _ in 0..3 {
            let _ = get(addr, "/work?ms=900").await;
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = InstanceId("life-1".into());
    let m = p.metrics(std::slice::from_ref(&id)).await.expect("metrics");
    let _ = busy.await;
    assert_eq!(m.len(), 1, "{m:?}");
    assert_eq!(m[0].0, id);
    assert!(
        m[0].1.cpu_percent > 8.0 && m[0].1.cpu_percent <= 120.0,
        "a busy 1-vCPU container shows its work (even on a crowded machine): {m:?}"
    );
    assert!(m[0].1.memory_mb > 0.1 && m[0].1.memory_mb < 64.0, "{m:?}");
    // Unknown ids are left out.
    let none = p
        .metrics(&[InstanceId("nope".into())])
        .await
        .expect("metrics");
    assert!(none.is_empty());

    p.pause(&id).await.expect("pause");
    p.pause(&id).await.expect("pausing twice is fine");
    let listed = p.list().await.expect("list");
    assert_eq!(listed[0].state, ObservedState::Paused);
    p.resume(&id).await.expect("resume");
    let listed = p.list().await.expect("list");
    assert_eq!(listed[0].state, ObservedState::Running);
    wait_healthy(addr).await;

    // Delete a paused container: it still stops within the grace.
    p.pause(&id).await.expect("pause");
    let started = Instant::now();
    p.delete(&id, Duration::from_secs(5)).await.expect("delete");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(p.list().await.expect("list").is_empty());
    assert!(
        !docker(None, &["inspect", "swell-life-1"]).0,
        "container removed"
    );
    assert!(
        !network_exists(None, &tenant),
        "empty tenant network removed"
    );
    p.delete(&id, Duration::from_secs(1))
        .await
        .expect("deleting again is fine");
    assert!(matches!(
        p.pause(&id).await,
        Err(ProviderError::NotFound(_))
    ));
}

/// One `docker inspect --format` field of a container.
fn inspect(container: &str, format: &str) -> String {
    let (ok, out) = docker(None, &["inspect", "--format", format, container]);
    assert!(ok, "docker inspect {container}: {out}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_are_hardened_and_publish_on_the_engine_address_only() {
    if !docker_here("hardening") {
        return;
    }
    let _serial = SERIAL.lock().await;
    ensure_image();
    let (owner, tenant) = (unique("own"), unique("ten"));
    let _cleanup = Cleanup::new(&owner, &[&tenant]);
    let p = provider(&owner, vec![local_engine("local")]);

    // The defaults: everything on, and the demo image still serves (read-only root,
    // as the image's own user, nobody).
    let created = p
        .create(&request("hard-1", &tenant, template()))
        .await
        .expect("create");
    let addr = created.address.expect("a published address");
    wait_healthy(addr).await;
    let c = "swell-hard-1";
    assert_eq!(inspect(c, "{{json .HostConfig.CapDrop}}"), r#"["ALL"]"#);
    assert_eq!(
        inspect(c, "{{json .HostConfig.SecurityOpt}}"),
        r#"["no-new-privileges:true"]"#
    );
    assert_eq!(inspect(c, "{{.HostConfig.PidsLimit}}"), "512");
    assert_eq!(inspect(c, "{{.HostConfig.ReadonlyRootfs}}"), "true");
    assert_eq!(
        inspect(c, "{{json .HostConfig.Tmpfs}}"),
        r#"{"/tmp":"rw,nosuid,nodev,size=64m"}"#
    );
    assert_eq!(inspect(c, "{{.HostConfig.Privileged}}"), "false");
    assert_eq!(
        inspect(
            c,
            "{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}} {{.HostConfig.MemorySwap}}"
        ),
        format!("1000000000 {0} {0}", 64 * 1024 * 1024)
    );
    assert_eq!(inspect(c, "{{.Config.User}}"), "65534:65534");
    // The port is published on 127.0.0.1 only, not on every interface.
    let host_ip = r#"{{range (index .NetworkSettings.Ports "8080/tcp")}}{{.HostIp}} {{end}}"#;
    assert_eq!(inspect(c, host_ip), "127.0.0.1");
    assert_eq!(
        inspect(
            c,
            r#"{{range (index .HostConfig.PortBindings "8080/tcp")}}{{.HostIp}} {{end}}"#
        ),
        "127.0.0.1"
    );
    assert!(addr.ip().is_loopback(), "{addr}");

    // What a template may relax: a writable root, another (non-root) user.
    let relaxed = Template {
        docker: Some(swell_core::DockerTemplate {
            writable_root: true,
            user: Some("1000:1000".into()),
        }),
        ..template()
    };
    let other = p
        .create(&request("hard-2", &tenant, relaxed))
        .await
        .expect("create");
    wait_healthy(other.address.expect("address")).await;
    let c = "swell-hard-2";
    assert_eq!(
        inspect(
            c,
            "{{.HostConfig.ReadonlyRootfs}} {{json .HostConfig.Tmpfs}} {{.Config.User}}"
        ),
        "false null 1000:1000"
    );
    assert_eq!(inspect(c, "{{json .HostConfig.CapDrop}}"), r#"["ALL"]"#);

    // No limits, no container; an image the engine lacks is named.
    let unlimited = Template {
        vcpus: 0,
        ..template()
    };
    let err = p
        .create(&request("hard-3", &tenant, unlimited))
        .await
        .expect_err("no limits");
    assert!(matches!(err, ProviderError::InvalidTemplate(_)), "{err}");
    let missing = Template {
        image: Some("swell-no-such-image:0".into()),
        ..template()
    };
    let err = p
        .create(&request("hard-4", &tenant, missing))
        .await
        .expect_err("no image");
    assert!(err.to_string().contains("docker load"), "{err}");
    assert!(!docker(None, &["inspect", "swell-hard-3"]).0);
    assert!(!docker(None, &["inspect", "swell-hard-4"]).0);
    for id in ["hard-1", "hard-2"] {
        p.delete(&InstanceId(id.into()), Duration::from_secs(2))
            .await
            .expect("delete");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_is_idempotent_and_servers_adopt_only_their_own() {
    if !docker_here("idempotence") {
        return;
    }
    let _serial = SERIAL.lock().await;
    ensure_image();
    let (owner, other_owner, tenant) = (unique("own"), unique("other"), unique("ten"));
    let _cleanup = Cleanup::new(&owner, &[&tenant]);
    let p = provider(&owner, vec![local_engine("local")]);

    let first = p
        .create(&request("idem-1", &tenant, template()))
        .await
        .expect("create");
    let again = p
        .create(&request("idem-1", &tenant, template()))
        .await
        .expect("create again");
    assert_eq!(first, again);
    assert_eq!(p.list().await.expect("list").len(), 1);

    // A restarted server (a new provider, same owner) sees it and does not duplicate it.
    let restarted = provider(&owner, vec![local_engine("local")]);
    let adopted = restarted.list().await.expect("list");
    assert_eq!(adopted, vec![first.clone()]);
    let third = restarted
        .create(&request("idem-1", &tenant, template()))
        .await
        .expect("create after restart");
    assert_eq!(third.native_id, first.native_id);

    // A stopped (exited) container with the id is started again, not duplicated.
    assert!(docker(None, &["stop", "-t", "1", "swell-idem-1"]).0);
    let listed = p.list().await.expect("list");
    assert_eq!(listed[0].state, ObservedState::Exited);
    let restarted_one = p
        .create(&request("idem-1", &tenant, template()))
        .await
        .expect("create restarts it");
    assert_eq!(restarted_one.native_id, first.native_id);
    assert_eq!(restarted_one.state, ObservedState::Running);

    // Another owner sees nothing, cannot take it over, and cannot delete it.
    let stranger = provider(&other_owner, vec![local_engine("local")]);
    assert!(stranger.list().await.expect("list").is_empty());
    assert!(
        stranger
            .create(&request("idem-1", &tenant, template()))
            .await
            .is_err()
    );
    stranger
        .delete(&InstanceId("idem-1".into()), Duration::from_secs(1))
        .await
        .expect("not ours: nothing to do");
    assert_eq!(p.list().await.expect("list").len(), 1);

    // Bad templates are rejected before anything is made.
    let no_image = Template {
        image: None,
        ..template()
    };
    assert!(matches!(
        p.create(&request("idem-2", &tenant, no_image)).await,
        Err(ProviderError::InvalidTemplate(_))
    ));
    let missing = Template {
        image: Some("swell-no-such-image:never".into()),
        ..template()
    };
    let err = p
        .create(&request("idem-3", &tenant, missing))
        .await
        .expect_err("a missing image");
    assert!(
        matches!(&err, ProviderError::InvalidTemplate(m) if m.contains("docker load")),
        "{err}"
    );
    assert_eq!(p.list().await.expect("list").len(), 1);

    p.delete(&InstanceId("idem-1".into()), Duration::from_secs(2))
        .await
        .expect("delete");
    assert!(p.list().await.expect("list").is_empty());
}

/// The container's address on its tenant network.
fn tenant_ip(tenant: &str, name: &str) -> String {
    let format = format!("{{{{(index .NetworkSettings.Networks \"swell-{tenant}\").IPAddress}}}}");
    let (ok, ip) = docker(None, &["inspect", "--format", &format, name]);
    assert!(
        ok && !ip.is_empty(),
        "no address for {name} on swell-{tenant}: {ip}"
    );
    ip
}

/// From a fresh container on `tenant`'s network, whether `target` accepts a connection.
fn probe_from(tenant: &str, owner: &str, target: &str) -> bool {
    let (ok, out) = docker(
        None,
        &[
            "run",
            "--rm",
            "--label",
            &format!("swell.owner={owner}"),
            "--network",
            &format!("swell-{tenant}"),
            IMAGE,
            "--probe",
            target,
        ],
    );
    eprintln!("probe from {tenant} to {target}: {out}");
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_cannot_reach_each_other() {
    if !docker_here("isolation") {
        return;
    }
    let _serial = SERIAL.lock().await;
    ensure_image();
    let (owner, a, b) = (unique("own"), unique("ta"), unique("tb"));
    let _cleanup = Cleanup::new(&owner, &[&a, &b]);
    let p = provider(&owner, vec![local_engine("local")]);
    let mut addrs = Vec::new();
    for (id, tenant) in [("iso-a1", &a), ("iso-a2", &a), ("iso-b1", &b)] {
        let inst = p
            .create(&request(id, tenant, template()))
            .await
            .expect("create");
        addrs.push(inst.address.expect("address"));
    }
    // The load balancer on the host reaches every tenant's containers.
    for addr in &addrs {
        wait_healthy(*addr).await;
    }
    let a2 = format!("{}:8080", tenant_ip(&a, "swell-iso-a2"));
    let b1 = format!("{}:8080", tenant_ip(&b, "swell-iso-b1"));
    assert!(probe_from(&a, &owner, &a2), "within tenant A: reachable");
    assert!(
        !probe_from(&a, &owner, &b1),
        "from tenant A to tenant B: blocked"
    );
    assert!(
        !probe_from(&b, &owner, &a2),
        "from tenant B to tenant A: blocked"
    );

    // Each tenant's network goes with its last container.
    p.delete(&InstanceId("iso-b1".into()), Duration::from_secs(2))
        .await
        .expect("delete");
    assert!(!network_exists(None, &b));
    p.delete(&InstanceId("iso-a1".into()), Duration::from_secs(2))
        .await
        .expect("delete");
    assert!(network_exists(None, &a), "iso-a2 still uses it");
    p.delete(&InstanceId("iso-a2".into()), Duration::from_secs(2))
        .await
        .expect("delete");
    assert!(!network_exists(None, &a));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_engine_shares_the_load_and_is_skipped_while_down() {
    if !docker_here("second engine") {
        return;
    }
    if !Command::new("dockerd")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        eprintln!("SKIPPED second engine: no `dockerd` binary to start a second engine with");
        return;
    }
    let _serial = SERIAL.lock().await;
    ensure_image();
    let (owner, tenant) = (unique("own"), unique("ten"));
    let mut cleanup = Cleanup::new(&owner, &[&tenant]);
    let dir = tempfile::Builder::new()
        .prefix("swell-dockerd-")
        .tempdir_in("/tmp")
        .expect("temp dir");
    let dir = cleanup.keep_dir(dir);
    let daemon = Daemon::start(&dir);
    let second_host = daemon.host();
    cleanup.hosts.push(Some(second_host.clone()));
    cleanup.daemons.push(daemon);

    // The second engine gets the image the way a user's would: `docker save | load`.
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "docker save {IMAGE} | docker -H {second_host} load -q"
        ))
        .status()
        .expect("docker save | load");
    assert!(status.success());

    let engines = vec![
        local_engine("main"),
        EngineConfig {
            endpoint: second_host.clone(),
            ..local_engine("second")
        },
    ];
    let p = provider(&owner, engines.clone());
    let baseline = p.engines().await;
    assert!(baseline.iter().all(|e| e.up), "{baseline:?}");

    // Placement spreads equally committed, quiet engines evenly.
    let mut on = BTreeMap::<String, Vec<String>>::new();
    for i in 0..4 {
        let id = format!("spread-{i}");
        let inst = p
            .create(&request(&id, &tenant, template()))
            .await
            .expect("create");
        wait_healthy(inst.address.expect("address")).await;
        on.entry(inst.host.clone()).or_default().push(id);
    }
    let count = |host: &str, on: &BTreeMap<String, Vec<String>>| on.get(host).map_or(0, Vec::len);
    if baseline[0].containers == 0 {
        assert_eq!((count("main", &on), count("second", &on)), (2, 2), "{on:?}");
    } else {
        // Other Swell containers run on the main engine: the second gets more.
        assert!(count("second", &on) >= 2, "{on:?}");
    }
    let (ok, names) = docker(Some(&second_host), &["ps", "--format", "{{.Names}}"]);
    assert!(ok);
    for id in on.get("second").into_iter().flatten() {
        assert!(names.contains(&format!("swell-{id}")), "{names}");
    }

    // Load, not just commitment: with the second engine's containers busy, the next
    // container goes to the main engine (no engine counts as quiet here, so the least
    // loaded one wins: main at 2/32 committed vCPUs = 6.25 %, second at its measured
    // CPU use, which is above that while its containers work).
    let busy_config = DockerConfig {
        prefer_below_percent: 0.0,
        ..DockerConfig::new(owner.clone(), engines.clone())
    };
    let busy_p = DockerProvider::new(busy_config).expect("valid config");
    let second_ids: Vec<InstanceId> = on
        .get("second")
        .into_iter()
        .flatten()
        .map(|id| InstanceId(id.clone()))
        .collect();
    let listed = busy_p.list().await.expect("list");
    let burners: Vec<_> = second_ids
        .iter()
        .filter_map(|id| find(&listed, id.as_str()).and_then(|i| i.address))
        .map(|addr| {
            tokio::spawn(async move {
                // Bounded: at most 8 s of work per container.
                for _ in 0..16 {
                    let _ = get(addr, "/work?ms=500").await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let readings = busy_p.metrics(&second_ids).await.expect("metrics");
    assert!(
        // Well below 100 % each when other work shares the machine's two cores.
        readings.iter().map(|(_, m)| m.cpu_percent).sum::<f64>() > 15.0,
        "{readings:?}"
    );
    let status = busy_p.engines().await;
    assert!(
        status[1].load_percent > status[0].load_percent,
        "{status:?}"
    );
    let hot = busy_p
        .create(&request("spread-hot", &tenant, template()))
        .await
        .expect("create");
    assert_eq!(hot.host, "main", "{status:?}");
    for b in burners {
        b.abort();
    }

    // The second engine stops answering: its containers read as exited, placement
    // skips it.
    cleanup.daemons[0].stop();
    let listed = p.list().await.expect("list");
    for inst in &listed {
        let expect = if inst.host == "second" {
            ObservedState::Exited
        } else {
            ObservedState::Running
        };
        assert_eq!(inst.state, expect, "{inst:?}");
    }
    assert_eq!(
        listed.iter().filter(|i| i.host == "second").count(),
        count("second", &on)
    );
    let status = p.engines().await;
    assert!(
        !status[1].up && status[1].down_reason.is_some(),
        "{status:?}"
    );
    for i in 0..2 {
        let inst = p
            .create(&request(&format!("replace-{i}"), &tenant, template()))
            .await
            .expect("create while the second engine is down");
        assert_eq!(inst.host, "main");
    }
    // Deleting an instance of the down engine succeeds (it goes when the engine is back).
    let gone = InstanceId(on["second"][0].clone());
    p.delete(&gone, Duration::from_secs(1))
        .await
        .expect("delete on a down engine");

    // Back again: used again, and what was reported exited meanwhile is removed.
    let restarted = Daemon::start(&dir);
    cleanup.daemons.push(restarted);
    let listed = p.list().await.expect("list");
    assert!(
        listed.iter().all(|i| i.host == "main"),
        "condemned containers removed: {listed:?}"
    );
    let (_, left) = docker(
        Some(&second_host),
        &[
            "ps",
            "-aq",
            "--filter",
            &format!("label=swell.owner={owner}"),
        ],
    );
    assert!(left.is_empty(), "left on the second engine: {left}");
    let status = p.engines().await;
    assert!(status[1].up, "{status:?}");
    let back = p
        .create(&request("back-1", &tenant, template()))
        .await
        .expect("create");
    assert_eq!(back.host, "second", "the emptier engine again");
    wait_healthy(back.address.expect("address")).await;

    for inst in p.list().await.expect("list") {
        p.delete(&inst.instance_id, Duration::from_secs(2))
            .await
            .expect("delete");
    }
    assert!(p.list().await.expect("list").is_empty());
    assert!(!network_exists(None, &tenant));
    assert!(!network_exists(Some(&second_host), &tenant));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_engine_is_reported_not_fatal() {
    // Needs no engine: the socket does not exist.
    let owner = unique("own");
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = format!("unix://{}", dir.path().join("nope.sock").display());
    let p = provider(
        &owner,
        vec![EngineConfig {
            endpoint: missing,
            ..local_engine("ghost")
        }],
    );
    let err = p.list().await.expect_err("no engine answers");
    assert!(err.to_string().contains("ghost"), "{err}");
    let err = p
        .create(&request("ghost-1", "default", template()))
        .await
        .expect_err("nowhere to place");
    assert!(matches!(err, ProviderError::NoCapacity(_)), "{err}");
    p.delete(&InstanceId("ghost-1".into()), Duration::from_secs(1))
        .await
        .expect("deleting on a down engine defers");
    let status = p.engines().await;
    assert!(!status[0].up);
}

/// Runs one `openssl` command in `dir`.
fn openssl(dir: &Path, args: &str) {
    let status = Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run openssl");
    assert!(status.success(), "openssl {args}");
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as
/// `dockerd --tlsverify` and `docker --tlsverify` use them.
fn make_certs(dir: &Path) {
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .expect("server.ext");
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").expect("client.ext");
    openssl(
        dir,
        "req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out ca.pem -days 1 -subj /CN=swell-test-ca",
    );
    openssl(
        dir,
        "req -newkey rsa:2048 -nodes -keyout server-key.pem -out server.csr -subj /CN=localhost",
    );
    openssl(
        dir,
        "x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out server-cert.pem -days 1 -extfile server.ext",
    );
    openssl(
        dir,
        "req -newkey rsa:2048 -nodes -keyout key.pem -out client.csr -subj /CN=swell-client",
    );
    openssl(
        dir,
        "x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out cert.pem -days 1 -extfile client.ext",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_over_tcp_with_tls() {
    if !docker_here("tls engine") {
        return;
    }
    let tools_here = [("dockerd", "--version"), ("openssl", "version")]
        .iter()
        .all(|(tool, arg)| {
            Command::new(tool)
                .arg(arg)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok()
        });
    if !tools_here {
        eprintln!("SKIPPED tls engine: needs `dockerd` and `openssl`");
        return;
    }
    let _serial = SERIAL.lock().await;
    ensure_image();
    let (owner, tenant) = (unique("own"), unique("ten"));
    let mut cleanup = Cleanup::new(&owner, &[&tenant]);
    let dir = tempfile::Builder::new()
        .prefix("swell-dockerd-tls-")
        .tempdir_in("/tmp")
        .expect("temp dir");
    let dir = cleanup.keep_dir(dir);
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).expect("certs dir");
    make_certs(&certs);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let cert = |name: &str| certs.join(name).display().to_string();
    let daemon = Daemon::start_with(
        &dir.join("daemon"),
        &[
            "--host".into(),
            format!("tcp://127.0.0.1:{port}"),
            "--tlsverify".into(),
            "--tlscacert".into(),
            cert("ca.pem"),
            "--tlscert".into(),
            cert("server-cert.pem"),
            "--tlskey".into(),
            cert("server-key.pem"),
        ],
    );
    let unix_host = daemon.host();
    cleanup.hosts.push(Some(unix_host.clone()));
    cleanup.daemons.push(daemon);
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "docker save {IMAGE} | docker -H {unix_host} load -q"
        ))
        .status()
        .expect("docker save | load");
    assert!(status.success());

    let engine = EngineConfig {
        endpoint: format!("tcp://127.0.0.1:{port}"),
        tls: Some(TlsConfig {
            ca: certs.join("ca.pem"),
            cert: certs.join("cert.pem"),
            key: certs.join("key.pem"),
        }),
        ..local_engine("remote")
    };
    let p = provider(&owner, vec![engine.clone()]);
    let inst = p
        .create(&request("tls-1", &tenant, template()))
        .await
        .expect("create over TLS");
    assert_eq!(inst.host, "remote");
    wait_healthy(inst.address.expect("address")).await;
    assert_eq!(p.list().await.expect("list"), vec![inst.clone()]);
    let (_, names) = docker(Some(&unix_host), &["ps", "--format", "{{.Names}}"]);
    assert_eq!(names, "swell-tls-1");

    // Without the client certificate the engine is out of reach, and such a provider
    // is not even built: a plain TCP engine is refused.
    let err = DockerProvider::new(DockerConfig::new(
        &owner,
        vec![EngineConfig {
            tls: None,
            ..engine.clone()
        }],
    ))
    .expect_err("a tcp:// engine without TLS is refused");
    assert_eq!(err.field, "engines[0].tls", "{err}");
    let (ok, out) = docker(None, &["-H", &format!("tcp://127.0.0.1:{port}"), "info"]);
    assert!(!ok, "the engine answers plain TCP: {out}");

    p.delete(&inst.instance_id, Duration::from_secs(2))
        .await
        .expect("delete over TLS");
    assert!(p.list().await.expect("list").is_empty());
}
