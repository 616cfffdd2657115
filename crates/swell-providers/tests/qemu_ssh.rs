//! The qemu provider's SSH hosts against real parts: a private OpenSSH server on
//! loopback ([`TestSshd`], root, Debian's `openssh-server`) is the "remote" hypervisor
//! host (the same machine, reached only through ssh, with its own state directory),
//! real QEMU VMs (TCG) boot there from the `busybox-httpd` image of
//! scripts/build-vm-image, and a local host sits beside it.
//!
//! A [`VmGuard`] SIGKILLs the QEMU processes it was given when a test ends (the
//! "remote" pids are this machine's too).

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::{IMAGE, VmGuard, images_dir, unique_owner};
use swell_core::{InstanceId, Template, TenantId};
use swell_providers::qemu::hosts::{QemuHost, QemuHostsProvider};
use swell_providers::qemu::{Accel, QemuConfig};
use swell_providers::test_sshd::{TestSshd, keygen};
use swell_providers::{CreateRequest, ObservedState, Provider, ProviderError};

/// How long a TCG VM may take from create to serving HTTP on a loaded machine.
const BOOT_WAIT: Duration = Duration::from_secs(120);

fn request(id: &str) -> CreateRequest {
    CreateRequest {
        instance_id: InstanceId(id.into()),
        tenant: TenantId::default_tenant(),
        group: "vms".into(),
        template: Template {
            image: Some(IMAGE.into()),
            vcpus: 1,
            memory_mb: 128,
            ..Template::default()
        },
    }
}

/// GETs `/` until it answers 200 or [`BOOT_WAIT`] passes; the body.
async fn wait_serving(addr: std::net::SocketAddr) -> String {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let deadline = Instant::now() + BOOT_WAIT;
    loop {
        if let Ok(r) = client.get(format!("http://{addr}/")).send().await
            && r.status().is_success()
        {
            return r.text().await.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "{addr} did not serve within {BOOT_WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

fn pid_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.contains(") Z ") && !s.contains(") X "))
}

/// The parent pid of `pid`.
fn ppid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.split(' ').nth(1)?.parse().ok()
}

/// Takes the "remote" host off the network: SIGKILLs sshd's connection processes
/// (what a machine that went away does to its connections) and then sshd itself.
/// The VMs (daemonized QEMUs, not sshd's children) keep running, unreachable.
fn take_down(sshd: TestSshd, dir: &Path) {
    let pid: i32 = std::fs::read_to_string(dir.join("sshd.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let children: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| ppid(*p) == Some(pid))
        .collect();
    for child in children {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    drop(sshd);
}

struct Remote {
    root: tempfile::TempDir,
    sshd: TestSshd,
}

impl Remote {
    fn start() -> Remote {
        let root = tempfile::Builder::new()
            .prefix("sqs")
            .tempdir_in("/tmp")
            .unwrap();
        let sshd_dir = root.path().join("sshd");
        std::fs::create_dir(&sshd_dir).unwrap();
        let sshd = TestSshd::start(&sshd_dir).unwrap();
        Remote { root, sshd }
    }

    fn sshd_dir(&self) -> PathBuf {
        self.root.path().join("sshd")
    }

    /// The SSH host entry: its state in `<root>/<dir>` "there".
    fn host(&self, name: &str, dir: &str) -> QemuHost {
        QemuHost::ssh(
            name,
            format!("root@127.0.0.1:{}", self.sshd.addr.port()),
            &self.sshd.client_key,
            self.root.path().join(dir),
        )
    }
}

/// One SSH host (`rack2`, roomy) and one local host (`local`, small): VMs boot on the
/// SSH host through ssh alone, with their files and records in its state directory
/// there; list, metrics (one ssh command per pass whatever the VM count), pause,
/// resume and delete go through SSH; and when the SSH host stops answering it is down:
/// its VMs leave the listing and new VMs go to the local host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vms_run_on_an_ssh_host_and_leave_the_listing_when_it_is_down() {
    let remote = Remote::start();
    let (remote_dir, local_dir) = (
        remote.root.path().join("rack2"),
        remote.root.path().join("local"),
    );
    let owner = unique_owner("qemu-ssh-test");
    let mut config = QemuConfig::new(images_dir(), &local_dir, owner.clone());
    config.accel = Accel::Tcg;
    config.hosts = vec![
        QemuHost {
            vcpus: Some(64.0),
            memory_mb: Some(65536.0),
            ..remote.host("rack2", "rack2")
        },
        QemuHost {
            vcpus: Some(1.0),
            memory_mb: Some(256.0),
            ..QemuHost::local("local", &local_dir)
        },
    ];
    let provider = QemuHostsProvider::new(config).unwrap();
    let guard = VmGuard::default();
    let calls = || provider.ssh_calls("rack2").unwrap();
    assert_eq!(calls(), 0, "nothing is contacted before use");

    // Both empty: rack2, the first. Through ssh alone: its files are in its own
    // state directory, nothing in the local host's.
    let started = Instant::now();
    let vm1 = provider.create(&request("vm-s-1")).await.unwrap();
    let pid1: i32 = vm1.native_id.parse().unwrap();
    guard.watch(pid1);
    assert_eq!(
        (vm1.host.as_str(), vm1.state),
        ("rack2", ObservedState::Running)
    );
    let addr1 = vm1.address.unwrap();
    assert!(
        addr1.ip().is_loopback() && (20000..=32000).contains(&addr1.port()),
        "{addr1}"
    );
    assert_eq!(wait_serving(addr1).await.trim(), "vm-s-1");
    let remote_boot = started.elapsed();
    assert!(calls() >= 2, "master and create: {}", calls());
    let records = remote_dir.join("records");
    let owner_dir = std::fs::read_dir(&records)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(owner_dir.join("vm-s-1.json").is_file());
    assert!(remote_dir.join("instances/vm-s-1/console.log").is_file());
    assert!(!local_dir.join("instances/vm-s-1").exists());
    // Stamped like a local VM, and daemonized: not a child of this process.
    let args = cmdline(pid1);
    assert!(args.iter().any(|a| a == "type=1,serial=vm-s-1"), "{args:?}");
    assert!(args.iter().any(|a| a == "-daemonize"), "{args:?}");
    assert_ne!(ppid(pid1), Some(std::process::id() as i32));

    // rack2 holds 128 of 98304 MiB, the empty local host nothing: local. Then the
    // local one is at 33 %, rack2 far below: rack2 again.
    let started = Instant::now();
    let vm2 = provider.create(&request("vm-s-2")).await.unwrap();
    guard.watch(vm2.native_id.parse().unwrap());
    assert_eq!(vm2.host, "local");
    assert_eq!(wait_serving(vm2.address.unwrap()).await.trim(), "vm-s-2");
    let local_boot = started.elapsed();
    let vm3 = provider.create(&request("vm-s-3")).await.unwrap();
    let pid3: i32 = vm3.native_id.parse().unwrap();
    guard.watch(pid3);
    assert_eq!(vm3.host, "rack2");
    assert_ne!(vm3.address, vm1.address);
    eprintln!(
        "boot to serving: {:.1} s on the SSH host, {:.1} s on the local host (TCG)",
        remote_boot.as_secs_f64(),
        local_boot.as_secs_f64()
    );

    let mut listed: Vec<String> = provider
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|i| format!("{}@{}", i.instance_id, i.host))
        .collect();
    listed.sort();
    assert_eq!(listed, ["vm-s-1@rack2", "vm-s-2@local", "vm-s-3@rack2"]);

    // Metrics: one ssh command per pass on the SSH host, for both of its VMs.
    let ids: Vec<InstanceId> = ["vm-s-1", "vm-s-2", "vm-s-3"]
        .iter()
        .map(|i| InstanceId((*i).into()))
        .collect();
    let before = calls();
    let pass = Instant::now();
    let first = provider.metrics(&ids).await.unwrap();
    let pass = pass.elapsed();
    assert_eq!(calls() - before, 1, "one ssh call per metrics pass");
    eprintln!(
        "metrics pass over 3 VMs (2 on the SSH host): {} ssh call, {:.0} ms",
        calls() - before,
        pass.as_secs_f64() * 1000.0
    );
    assert_eq!(first.len(), 3, "{first:?}");
    let m1 = first
        .iter()
        .find(|(id, _)| id.as_str() == "vm-s-1")
        .unwrap()
        .1;
    assert!(m1.cpu_percent > 0.0, "{m1:?}");
    assert!(m1.memory_mb > 50.0 && m1.memory_mb < 1024.0, "{m1:?}");
    // The second pass has a previous reading: steal from the vCPU threads' waits.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = provider.metrics(&ids[..1]).await.unwrap();
    let steal = second[0].1.steal_percent.expect("steal on the second pass");
    assert!((0.0..=100.0).contains(&steal), "{steal}");

    // Pause and resume through the forwarded QMP socket.
    let id1 = &ids[0];
    provider.pause(id1).await.unwrap();
    let state = |list: Vec<swell_providers::ProviderInstance>| {
        list.into_iter()
            .find(|i| i.instance_id == *id1)
            .map(|i| i.state)
    };
    assert_eq!(
        state(provider.list().await.unwrap()),
        Some(ObservedState::Paused)
    );
    provider.resume(id1).await.unwrap();
    assert_eq!(
        state(provider.list().await.unwrap()),
        Some(ObservedState::Running)
    );
    assert_eq!(wait_serving(addr1).await.trim(), "vm-s-1");

    // Delete: QEMU gone, its files and record gone from the SSH host.
    provider
        .delete(&ids[2], Duration::from_secs(2))
        .await
        .unwrap();
    assert!(!pid_alive(pid3));
    assert!(!remote_dir.join("instances/vm-s-3").exists());
    assert!(!owner_dir.join("vm-s-3.json").exists());
    provider.delete(&ids[2], Duration::ZERO).await.unwrap();

    let hosts = provider.hosts().await.unwrap();
    let port = remote.sshd.addr.port();
    assert_eq!(
        hosts
            .iter()
            .map(|h| (h.name.as_str(), h.ssh.clone(), h.up, h.vms))
            .collect::<Vec<_>>(),
        [
            ("rack2", Some(format!("root@127.0.0.1:{port}")), true, 1),
            ("local", None, true, 1)
        ]
    );

    // rack2 goes away (its VM keeps running, unreachable): down, its VM left out,
    // and the next VM goes to the local host though it is the more loaded.
    let Remote { root, sshd } = remote;
    take_down(sshd, &root.path().join("sshd"));
    assert!(pid_alive(pid1));
    let listed: Vec<String> = provider
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|i| format!("{}@{}", i.instance_id, i.host))
        .collect();
    assert_eq!(listed, ["vm-s-2@local"]);
    let hosts = provider.hosts().await.unwrap();
    assert_eq!(
        hosts.iter().map(|h| (h.up, h.vms)).collect::<Vec<_>>(),
        [(false, 0), (true, 1)]
    );
    assert!(provider.metrics(&ids[..1]).await.unwrap().is_empty());
    assert!(matches!(
        provider.pause(id1).await,
        Err(ProviderError::NotFound(_))
    ));
    let vm4 = provider.create(&request("vm-s-4")).await.unwrap();
    guard.watch(vm4.native_id.parse().unwrap());
    assert_eq!(vm4.host, "local");
    drop(root);
}

/// After a crash a new provider (a new server process) adopts the SSH host's VMs from
/// the records there, checked against the host's kernel, and can stop them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_provider_adopts_the_vms_of_an_ssh_host() {
    let remote = Remote::start();
    let owner = unique_owner("qemu-ssh-test");
    let mut config = QemuConfig::new(images_dir(), remote.root.path().join("unused"), owner);
    config.accel = Accel::Tcg;
    config.hosts = vec![remote.host("rack2", "rack2")];
    let guard = VmGuard::default();

    let first = QemuHostsProvider::new(config.clone()).unwrap();
    let vm = first.create(&request("vm-r-1")).await.unwrap();
    let pid: i32 = vm.native_id.parse().unwrap();
    guard.watch(pid);
    // The server "crashes": its provider (and its SSH master) go away, the VM stays.
    drop(first);
    assert!(pid_alive(pid));

    let second = QemuHostsProvider::new(config).unwrap();
    let listed = second.list().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (
            listed[0].instance_id.as_str(),
            listed[0].native_id.as_str(),
            listed[0].address,
            listed[0].host.as_str(),
            listed[0].tenant.as_str(),
            listed[0].group.as_str()
        ),
        (
            "vm-r-1",
            vm.native_id.as_str(),
            vm.address,
            "rack2",
            "default",
            "vms"
        )
    );
    // Creating it again is the adopted VM, not a second one.
    let again = second.create(&request("vm-r-1")).await.unwrap();
    assert_eq!(again.native_id, vm.native_id);
    assert_eq!(
        second
            .metrics(&[listed[0].instance_id.clone()])
            .await
            .unwrap()
            .len(),
        1
    );
    second
        .delete(&listed[0].instance_id, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(!pid_alive(pid));
    assert!(second.list().await.unwrap().is_empty());
    drop(remote);
}

/// An SSH host whose key is not the one in the operator's known_hosts, or that
/// refuses Swell's key, is down: with no other host, `list` fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ssh_host_with_a_foreign_key_or_refusing_the_login_is_down() {
    let remote = Remote::start();
    let dir = remote.sshd_dir();
    let stranger = dir.join("stranger");
    keygen(&stranger).unwrap();
    let port = remote.sshd.addr.port();

    // The operator's known_hosts says another key.
    let known = dir.join("known_hosts");
    let foreign = std::fs::read_to_string(dir.join("stranger.pub")).unwrap();
    std::fs::write(&known, format!("[127.0.0.1]:{port} {foreign}")).unwrap();
    let mut config = QemuConfig::new(
        images_dir(),
        dir.join("unused"),
        unique_owner("qemu-ssh-test"),
    );
    config.accel = Accel::Tcg;
    config.hosts = vec![QemuHost {
        known_hosts: Some(known.clone()),
        ..remote.host("rack2", "rack2")
    }];
    let provider = QemuHostsProvider::new(config.clone()).unwrap();
    let e = provider.list().await.unwrap_err();
    assert!(e.to_string().contains("no qemu host is up"), "{e}");
    assert!(!provider.hosts().await.unwrap()[0].up);
    assert!(!remote.root.path().join("rack2").exists());

    // The right key in known_hosts: up.
    let host_key = std::fs::read_to_string(dir.join("host_key.pub")).unwrap();
    std::fs::write(&known, format!("[127.0.0.1]:{port} {host_key}")).unwrap();
    let provider = QemuHostsProvider::new(config.clone()).unwrap();
    assert!(provider.list().await.unwrap().is_empty());
    assert!(provider.hosts().await.unwrap()[0].up);
    assert!(remote.root.path().join("rack2").is_dir());

    // A key the host does not accept.
    config.hosts[0].identity_file = Some(stranger);
    let provider = QemuHostsProvider::new(config).unwrap();
    assert!(!provider.hosts().await.unwrap()[0].up);
}

/// A measurement for docs/benchmarks.md, not a check: create to first HTTP answer of
/// one VM on an SSH host and on a local host, alternately, three rounds each (each VM
/// deleted before the next); the create call alone; and one metrics pass and one list
/// on the SSH host with one VM (time and ssh calls).
/// `cargo test -p swell-providers --test qemu_ssh ssh_boot_to_serving -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement for docs/benchmarks.md, not a check"]
async fn ssh_boot_to_serving() {
    let remote = Remote::start();
    let local_dir = remote.root.path().join("local");
    let provider = |host: QemuHost| {
        let mut config = QemuConfig::new(images_dir(), &local_dir, unique_owner("qemu-ssh-test"));
        config.accel = Accel::Tcg;
        config.hosts = vec![host];
        QemuHostsProvider::new(config).unwrap()
    };
    let ssh = provider(remote.host("rack2", "rack2"));
    let local = provider(QemuHost::local("local", &local_dir));
    let guard = VmGuard::default();
    let mut rows: Vec<(&str, f64, f64)> = Vec::new();
    for round in 0..3 {
        for (name, p) in [("ssh", &ssh), ("local", &local)] {
            let id = format!("vm-b-{name}-{round}");
            let t0 = Instant::now();
            let vm = p.create(&request(&id)).await.unwrap();
            let created = t0.elapsed().as_secs_f64();
            guard.watch(vm.native_id.parse().unwrap());
            wait_serving(vm.address.unwrap()).await;
            let serving = t0.elapsed().as_secs_f64();
            if name == "ssh" && round == 2 {
                let ids = [InstanceId(id.clone())];
                for what in ["metrics", "list"] {
                    let calls = ssh.ssh_calls("rack2").unwrap();
                    let t = Instant::now();
                    if what == "metrics" {
                        assert_eq!(ssh.metrics(&ids).await.unwrap().len(), 1);
                    } else {
                        assert_eq!(ssh.list().await.unwrap().len(), 1);
                    }
                    eprintln!(
                        "{what} on the SSH host, one VM: {:.0} ms, {} ssh call(s)",
                        t.elapsed().as_secs_f64() * 1000.0,
                        ssh.ssh_calls("rack2").unwrap() - calls
                    );
                }
            }
            p.delete(&InstanceId(id), Duration::from_secs(1))
                .await
                .unwrap();
            rows.push((name, created, serving));
        }
    }
    for (name, created, serving) in &rows {
        eprintln!("{name}: create {created:.2} s, serving {serving:.2} s");
    }
}

/// A create that fails on the SSH host (its images are not where the host entry says)
/// comes back with QEMU's own message and leaves neither a record nor files there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_failing_on_the_ssh_host_says_why_and_leaves_nothing() {
    let remote = Remote::start();
    let mut config = QemuConfig::new(
        images_dir(),
        remote.root.path().join("unused"),
        unique_owner("qemu-ssh-test"),
    );
    config.accel = Accel::Tcg;
    config.hosts = vec![QemuHost {
        images_dir: Some(remote.root.path().join("no-images-here")),
        ..remote.host("rack2", "rack2")
    }];
    let provider = QemuHostsProvider::new(config).unwrap();
    let e = provider.create(&request("vm-f-1")).await.unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("starting QEMU failed") && text.contains("no-images-here"),
        "{text}"
    );
    assert!(provider.list().await.unwrap().is_empty());
    let dir = remote.root.path().join("rack2");
    assert!(!dir.join("instances/vm-f-1").exists());
    let records: Vec<_> = std::fs::read_dir(dir.join("records"))
        .unwrap()
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
        .collect();
    assert!(records.is_empty(), "{records:?}");
}
