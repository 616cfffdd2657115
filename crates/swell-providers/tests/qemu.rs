//! The qemu provider against real QEMU virtual machines (TCG here and on CI: this host
//! cannot run nested KVM guests), booting the `busybox-httpd` image of
//! scripts/build-vm-image (built on first use when missing).
//!
//! Every test has its own state directory and owner tag; a [`VmGuard`] SIGKILLs the
//! QEMU processes of the VMs it was given when the test ends, passed or failed.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};
use support::{IMAGE, VmGuard, images_dir, unique_owner};
use swell_core::{InstanceId, Template, TenantId};
use swell_providers::qemu::hosts::{QemuHost, QemuHostsProvider};
use swell_providers::qemu::{Accel, QemuConfig, QemuProvider};
use swell_providers::{CreateRequest, ObservedState, Provider, ProviderError};

/// How long a TCG VM may take from create to serving HTTP on a loaded machine.
const BOOT_WAIT: Duration = Duration::from_secs(90);

struct Fixture {
    _state: tempfile::TempDir,
    config: QemuConfig,
    provider: QemuProvider,
    guard: VmGuard,
}

fn fixture() -> Fixture {
    let state = tempfile::Builder::new()
        .prefix("sq")
        .tempdir_in("/tmp")
        .unwrap();
    let mut config = QemuConfig::new(images_dir(), state.path(), unique_owner("qemu-test"));
    config.accel = Accel::Tcg;
    let provider = QemuProvider::new(config.clone());
    Fixture {
        _state: state,
        config,
        provider,
        guard: VmGuard::default(),
    }
}

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

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap()
}

/// GETs `path` until it answers 200 or [`BOOT_WAIT`] passes; the body.
async fn wait_serving(addr: std::net::SocketAddr, path: &str) -> String {
    let client = http();
    let deadline = Instant::now() + BOOT_WAIT;
    loop {
        if let Ok(r) = client.get(format!("http://{addr}{path}")).send().await
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_is_created_listed_measured_paused_resumed_and_deleted() {
    let f = fixture();
    let id = InstanceId("vm-life-1".into());
    let vm = f.provider.create(&request("vm-life-1")).await.unwrap();
    let pid: i32 = vm.native_id.parse().unwrap();
    f.guard.watch(pid);
    assert_eq!(vm.state, ObservedState::Running);
    let addr = vm.address.expect("an address");
    assert!(addr.ip().is_loopback());

    // The guest serves its own instance id (the kernel command line's swell.instance).
    let body = wait_serving(addr, "/").await;
    assert_eq!(body.trim(), "vm-life-1");
    // The id is stamped on QEMU's command line: the SMBIOS serial and the name.
    let args = cmdline(pid);
    assert!(
        args.iter().any(|a| a == "type=1,serial=vm-life-1"),
        "{args:?}"
    );
    assert!(args.iter().any(|a| a == "swell-vm-life-1"), "{args:?}");

    // Creating the same id again returns the running VM, no second QEMU.
    let again = f.provider.create(&request("vm-life-1")).await.unwrap();
    assert_eq!(again.native_id, vm.native_id);
    let listed = f.provider.list().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].instance_id, id);
    assert_eq!(
        (listed[0].tenant.as_str(), listed[0].group.as_str()),
        ("default", "vms")
    );
    assert_eq!(listed[0].address, Some(addr));
    assert_eq!(listed[0].state, ObservedState::Running);

    // Metrics from the host side: a booted TCG VM has used CPU and holds its guest RAM.
    let metrics = f
        .provider
        .metrics(&[id.clone(), InstanceId("absent".into())])
        .await
        .unwrap();
    assert_eq!(metrics.len(), 1, "{metrics:?}");
    let m = metrics[0].1;
    assert!(m.cpu_percent > 0.0, "{m:?}");
    assert!(m.memory_mb > 50.0 && m.memory_mb < 1024.0, "{m:?}");

    // Pause: QMP stop; the guest no longer answers, list says paused.
    f.provider.pause(&id).await.unwrap();
    assert_eq!(
        f.provider.list().await.unwrap()[0].state,
        ObservedState::Paused
    );
    let paused = http()
        .get(format!("http://{addr}/"))
        .timeout(Duration::from_millis(1500))
        .send()
        .await;
    assert!(paused.is_err(), "a paused VM answered: {paused:?}");
    // Resume: QMP cont; it serves again.
    f.provider.resume(&id).await.unwrap();
    assert_eq!(
        f.provider.list().await.unwrap()[0].state,
        ObservedState::Running
    );
    assert_eq!(wait_serving(addr, "/").await.trim(), "vm-life-1");

    // Delete: the guest powers off on its ACPI button, QEMU exits, nothing is left.
    let started = Instant::now();
    f.provider
        .delete(&id, Duration::from_secs(20))
        .await
        .unwrap();
    assert!(!pid_alive(pid), "QEMU {pid} still runs");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the guest ignored its power button: {:?}",
        started.elapsed()
    );
    assert!(f.provider.list().await.unwrap().is_empty());
    assert!(!f.provider.instance_dir(&id).exists());
    // Deleting again succeeds; pausing a gone VM is NotFound.
    f.provider
        .delete(&id, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(matches!(
        f.provider.pause(&id).await,
        Err(ProviderError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_provider_adopts_its_vms_and_only_its_own() {
    let f = fixture();
    let vm = f.provider.create(&request("vm-adopt-1")).await.unwrap();
    let pid: i32 = vm.native_id.parse().unwrap();
    f.guard.watch(pid);

    // A new provider on the same state and owner (a server after a crash) finds it.
    let restarted = QemuProvider::new(f.config.clone());
    let listed = restarted.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].native_id, vm.native_id);
    assert_eq!(listed[0].address, vm.address);
    // Another owner on the same state directory does not.
    let mut other = f.config.clone();
    other.owner = unique_owner("qemu-test");
    assert!(QemuProvider::new(other).list().await.unwrap().is_empty());

    // A record whose pid is some other process (here: this test) is no VM, even with
    // the right start time: the VM's id is not on that process's command line.
    let records = f
        ._state
        .path()
        .join("records")
        .read_dir()
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let me = std::process::id();
    let my_start: u64 = std::fs::read_to_string(format!("/proc/{me}/stat"))
        .unwrap()
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap();
    std::fs::write(
        records.join("forged.json"),
        format!(
            r#"{{"instance_id":"forged","tenant":"default","group":"vms","port":1,"pid":{me},"starttime":{my_start},"vcpus":1}}"#
        ),
    )
    .unwrap();
    let ids: Vec<String> = restarted
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.instance_id.0)
        .collect();
    assert_eq!(ids, ["vm-adopt-1"]);

    // The adopted VM is controlled by the new provider: it deletes it.
    restarted
        .delete(&InstanceId("vm-adopt-1".into()), Duration::from_secs(20))
        .await
        .unwrap();
    assert!(!pid_alive(pid));
    assert!(f.provider.list().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_templates_are_refused_before_anything_starts() {
    let f = fixture();
    let mut no_image = request("vm-bad-1");
    no_image.template.image = None;
    let e = f.provider.create(&no_image).await.unwrap_err();
    assert!(
        matches!(&e, ProviderError::InvalidTemplate(m) if m.contains("template.image")),
        "{e}"
    );
    let mut escape = request("vm-bad-2");
    escape.template.image = Some("../etc".into());
    let e = f.provider.create(&escape).await.unwrap_err();
    assert!(
        matches!(&e, ProviderError::InvalidTemplate(m) if m.contains("must be an image name")),
        "{e}"
    );
    let mut absent = request("vm-bad-3");
    absent.template.image = Some("no-such-image".into());
    let e = f.provider.create(&absent).await.unwrap_err();
    assert!(
        matches!(&e, ProviderError::InvalidTemplate(m) if m.contains("build-vm-image")),
        "{e}"
    );
    assert!(f.provider.list().await.unwrap().is_empty());
    assert!(
        !f.provider
            .instance_dir(&InstanceId("vm-bad-3".into()))
            .exists()
    );
}

/// Pins every thread of a QEMU process to host CPU `cpu`.
fn pin(pid: i32, cpu: usize) {
    // util-linux's taskset (Essential in Debian): `-a` sets every thread's affinity.
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("running taskset");
    assert!(status.success(), "pinning QEMU {pid} to CPU {cpu}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_busy_vms_pinned_to_one_cpu_show_steal() {
    let f = fixture();
    let a = f.provider.create(&request("vm-steal-a")).await.unwrap();
    let b = f.provider.create(&request("vm-steal-b")).await.unwrap();
    let ids = [a.instance_id.clone(), b.instance_id.clone()];
    let pids: Vec<i32> = [&a, &b]
        .iter()
        .map(|v| v.native_id.parse().unwrap())
        .collect();
    for pid in &pids {
        f.guard.watch(*pid);
    }
    wait_serving(a.address.unwrap(), "/").await;
    wait_serving(b.address.unwrap(), "/").await;
    for pid in &pids {
        pin(*pid, 0);
    }

    // Both guests burn their vCPU; the two vCPU threads share one host CPU, so each
    // waits about half the time: the steal each guest would see.
    let burn = |addr: std::net::SocketAddr| {
        tokio::spawn(async move {
            reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap()
                .get(format!("http://{addr}/cgi-bin/burn?s=12"))
                .send()
                .await
        })
    };
    let burners = [burn(a.address.unwrap()), burn(b.address.unwrap())];
    tokio::time::sleep(Duration::from_secs(2)).await;
    let first = f.provider.steal(&ids).await.unwrap();
    assert!(
        first.is_empty(),
        "a first reading has no rate yet: {first:?}"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let steal = f.provider.steal(&ids).await.unwrap();
    eprintln!("steal with two busy VMs pinned to one CPU: {steal:?}");
    assert_eq!(steal.len(), 2, "{steal:?}");
    for (id, percent) in &steal {
        assert!(
            *percent > 25.0 && *percent <= 100.0,
            "{id}: steal {percent:.1} %, expected about 50 %"
        );
    }
    // The same reading reaches the collector: metrics carry it as `steal_percent`
    // (the group metric `steal`).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let metrics = f.provider.metrics(&ids).await.unwrap();
    assert_eq!(metrics.len(), 2, "{metrics:?}");
    for (id, m) in &metrics {
        let steal = m.steal_percent.expect("a steal reading in the metrics");
        assert!(
            steal > 25.0 && steal <= 100.0,
            "{id}: steal {steal:.1} % in the metrics, expected about 50 %"
        );
    }
    for b in burners {
        let _ = b.await;
    }
    for id in &ids {
        f.provider
            .delete(id, Duration::from_secs(20))
            .await
            .unwrap();
    }
}

/// The boot-to-serving figures of docs/benchmarks.md: from `create` to the first HTTP
/// answer of the guest, one VM alone and then four created at once, with each VM's
/// resident memory. Run with
/// `cargo test -p swell-providers --test qemu boot_to_serving -- --ignored --nocapture`
/// (the time is QEMU's and the guest's: a release build changes nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement for docs/benchmarks.md, not a check"]
async fn boot_to_serving() {
    let f = fixture();
    let accel = f.provider.accel().await;
    let boot = |id: String| {
        let provider = &f.provider;
        let guard = &f.guard;
        async move {
            let started = Instant::now();
            let vm = provider.create(&request(&id)).await.unwrap();
            guard.watch(vm.native_id.parse().unwrap());
            wait_serving(vm.address.unwrap(), "/").await;
            (vm.instance_id, started.elapsed())
        }
    };
    let (one, alone) = boot("vm-bench-0".into()).await;
    let mem = f
        .provider
        .metrics(std::slice::from_ref(&one))
        .await
        .unwrap()[0]
        .1
        .memory_mb;
    println!("accel {accel}: one VM boot-to-serving {alone:.2?}, resident {mem:.0} MiB");
    f.provider
        .delete(&one, Duration::from_secs(20))
        .await
        .unwrap();

    let started = Instant::now();
    let four = futures_util::future::join_all((1..=4).map(|n| boot(format!("vm-bench-{n}")))).await;
    let all = started.elapsed();
    let ids: Vec<InstanceId> = four.iter().map(|(id, _)| id.clone()).collect();
    let mems: Vec<f64> = f
        .provider
        .metrics(&ids)
        .await
        .unwrap()
        .iter()
        .map(|(_, m)| m.memory_mb)
        .collect();
    let times: Vec<String> = four.iter().map(|(_, t)| format!("{t:.2?}")).collect();
    println!(
        "accel {accel}: four VMs at once: all serving after {all:.2?} (each: {}), resident {:.0} MiB on average",
        times.join(", "),
        mems.iter().sum::<f64>() / mems.len().max(1) as f64
    );
    for id in &ids {
        f.provider
            .delete(id, Duration::from_secs(20))
            .await
            .unwrap();
    }
}

/// The guest reaches nothing but its own forwarded port: QEMU's user network maps the
/// host's loopback to 10.0.2.2, and `restrict=on` closes that (and everything else).
/// The image's `/cgi-bin/connect?HOST:PORT` tries a TCP connection from the guest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guest_cannot_reach_the_hosts_loopback() {
    let f = fixture();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let vm = f.provider.create(&request("vm-net-1")).await.unwrap();
    f.guard.watch(vm.native_id.parse().unwrap());
    let addr = vm.address.unwrap();
    wait_serving(addr, "/").await;
    let answer = http()
        .get(format!("http://{addr}/cgi-bin/connect?10.0.2.2:{port}"))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        answer.trim(),
        "closed",
        "the guest reached 127.0.0.1:{port}"
    );
    assert!(
        listener.accept().is_err(),
        "a connection from the guest arrived on the host's loopback"
    );
    f.provider
        .delete(&vm.instance_id, Duration::from_secs(20))
        .await
        .unwrap();
}

/// The probe's choice boots: on this host (a guest whose KVM reports running while the
/// firmware is stuck) it must say TCG; on a KVM host it says KVM, and the VM serves
/// either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probed_accelerator_boots_a_serving_vm() {
    let mut f = fixture();
    let accel = swell_providers::qemu::probe_accel(&f.config.qemu).await;
    eprintln!("probed accelerator: {accel}");
    f.config.accel = accel;
    f.provider = QemuProvider::new(f.config.clone());
    assert_eq!(f.provider.accel().await, accel);
    let vm = f.provider.create(&request("vm-probe-1")).await.unwrap();
    f.guard.watch(vm.native_id.parse().unwrap());
    assert_eq!(
        wait_serving(vm.address.unwrap(), "/").await.trim(),
        "vm-probe-1"
    );
    f.provider
        .delete(&vm.instance_id, Duration::from_secs(20))
        .await
        .unwrap();
}

fn request_sized(id: &str, vcpus: u32, memory_mb: u32) -> CreateRequest {
    let mut r = request(id);
    r.template.vcpus = vcpus;
    r.template.memory_mb = memory_mb;
    r
}

/// Two hypervisor hosts on this machine, each with its own state directory: VMs go to
/// the least-loaded host (by what is committed on each under the over-commit ratios,
/// not in turn), and when a host is lost (its QEMUs killed, its state directory gone)
/// its VMs leave the listing and their replacements go to the other host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_place_by_load_and_a_lost_hosts_vms_are_replaced_on_the_other() {
    let root = tempfile::Builder::new()
        .prefix("sqh")
        .tempdir_in("/tmp")
        .unwrap();
    let (h1, h2) = (root.path().join("h1"), root.path().join("h2"));
    let mut config = QemuConfig::new(images_dir(), &h1, unique_owner("qemu-test"));
    config.accel = Accel::Tcg;
    // h1: 1 vCPU, 1 GiB (16 vCPUs and 1536 MiB committable); h2 twice that.
    config.hosts = vec![
        QemuHost {
            vcpus: Some(1.0),
            memory_mb: Some(1024.0),
            ..QemuHost::local("h1", &h1)
        },
        QemuHost {
            vcpus: Some(2.0),
            memory_mb: Some(2048.0),
            ..QemuHost::local("h2", &h2)
        },
    ];
    let provider = QemuHostsProvider::new(config).unwrap();
    let guard = VmGuard::default();
    let mut placed = Vec::new();
    for id in ["vm-h-1", "vm-h-2", "vm-h-3"] {
        let vm = provider.create(&request_sized(id, 1, 128)).await.unwrap();
        guard.watch(vm.native_id.parse().unwrap());
        placed.push((id, vm.host.clone()));
    }
    // Both empty: h1 (the first). Then h1 holds 128 of 1536 MiB (8.3 %), h2 nothing:
    // h2. Then h2 holds 128 of 3072 MiB (4.2 %), less than h1: h2 again.
    assert_eq!(
        placed,
        [
            ("vm-h-1", "h1".to_string()),
            ("vm-h-2", "h2".into()),
            ("vm-h-3", "h2".into())
        ]
    );
    // Each host keeps its own VMs' records and files.
    assert!(h1.join("instances/vm-h-1").is_dir());
    assert!(h2.join("instances/vm-h-2").is_dir() && h2.join("instances/vm-h-3").is_dir());
    assert!(!h1.join("instances/vm-h-2").exists());
    let hosts = provider.hosts().await.unwrap();
    let summary: Vec<(String, bool, u32)> = hosts
        .iter()
        .map(|h| (h.name.clone(), h.up, h.vms))
        .collect();
    assert_eq!(summary, [("h1".into(), true, 1), ("h2".into(), true, 2)]);
    assert!(
        (hosts[0].load_percent - 100.0 * 128.0 / 1536.0).abs() < 1e-6,
        "{hosts:?}"
    );
    // Per-VM metrics come from whichever host runs the VM.
    let ids: Vec<InstanceId> = placed
        .iter()
        .map(|(id, _)| InstanceId((*id).into()))
        .collect();
    assert_eq!(provider.metrics(&ids).await.unwrap().len(), 3);

    // h2 is lost: its QEMUs die and its state directory goes.
    for id in &ids[1..] {
        let pid = provider
            .qemu_pid(id)
            .await
            .unwrap()
            .expect("a live VM on h2");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    std::fs::remove_dir_all(&h2).unwrap();
    let listed: Vec<String> = provider
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|i| format!("{}@{}", i.instance_id, i.host))
        .collect();
    assert_eq!(listed, ["vm-h-1@h1"]);
    let hosts = provider.hosts().await.unwrap();
    assert_eq!((hosts[1].up, hosts[1].vms), (false, 0), "{hosts:?}");
    // The replacements go to h1, though it is the more loaded, and h2 stays gone.
    for id in ["vm-h-4", "vm-h-5"] {
        let vm = provider.create(&request_sized(id, 1, 128)).await.unwrap();
        guard.watch(vm.native_id.parse().unwrap());
        assert_eq!(vm.host, "h1", "{vm:?}");
    }
    assert!(!h2.exists(), "a lost host's directory was made again");
    // Deleting a VM of the lost host succeeds (nothing is left of it).
    provider
        .delete(&ids[1], Duration::from_secs(1))
        .await
        .unwrap();
    for id in ["vm-h-1", "vm-h-4", "vm-h-5"] {
        provider
            .delete(&InstanceId(id.into()), Duration::from_secs(1))
            .await
            .unwrap();
    }
    assert!(provider.list().await.unwrap().is_empty());
    // With every host lost, listing fails rather than report every VM gone.
    std::fs::remove_dir_all(&h1).unwrap();
    let e = provider.list().await.unwrap_err().to_string();
    assert!(e.contains("no qemu host is up"), "{e}");
}

/// An image that reads cloud-init gets a NoCloud seed (an ISO labelled `cidata`) with
/// what the template says, read back from the ISO; a template's qemu part for an image
/// that reads none is refused before anything starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloud_init_image_gets_the_seed_the_template_says() {
    let f = fixture();
    // The test image, marked as reading cloud-init, in an images directory of its own.
    let images = tempfile::Builder::new()
        .prefix("sqi")
        .tempdir_in("/tmp")
        .unwrap();
    let src = f.config.images_dir.join(IMAGE);
    let dst = images.path().join("ci-httpd");
    std::fs::create_dir(&dst).unwrap();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("image.json")).unwrap()).unwrap();
    for field in ["kernel", "initrd"] {
        if let Some(name) = manifest[field].as_str() {
            std::os::unix::fs::symlink(src.join(name), dst.join(name)).unwrap();
        }
    }
    manifest["cloud_init"] = serde_json::json!(true);
    std::fs::write(dst.join("image.json"), manifest.to_string()).unwrap();
    let mut config = f.config.clone();
    config.images_dir = images.path().to_path_buf();
    let provider = QemuProvider::new(config);

    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOw2 lab@swell";
    let qemu = swell_core::QemuTemplate {
        hostname: Some("web-a".into()),
        ssh_authorized_keys: vec![key.into()],
        user_data: Some("#cloud-config\nruncmd:\n  - [touch, /run/swell]\n".into()),
    };
    let mut req = request("vm-ci-1");
    req.template.image = Some("ci-httpd".into());
    req.template.qemu = Some(qemu.clone());
    let vm = provider.create(&req).await.unwrap();
    let pid: i32 = vm.native_id.parse().unwrap();
    f.guard.watch(pid);
    let iso = provider
        .instance_dir(&InstanceId("vm-ci-1".into()))
        .join("seed.iso");
    // Attached read-only as a disk of its own.
    let args = cmdline(pid);
    let drive = format!("file={},if=virtio,format=raw,readonly=on", iso.display());
    assert!(args.contains(&drive), "{args:?}");
    // Read back: the label cloud-init looks for, and each file as the template said.
    let isoinfo = |args: &[&str]| {
        let out = Command::new("isoinfo")
            .args(args)
            .arg("-i")
            .arg(&iso)
            .output()
            .expect("running isoinfo (Debian package genisoimage; scripts/test installs it)");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(isoinfo(&["-d"]).contains("Volume id: cidata"));
    assert_eq!(
        isoinfo(&["-R", "-x", "/user-data"]),
        qemu.user_data.clone().unwrap()
    );
    assert_eq!(
        isoinfo(&["-R", "-x", "/meta-data"]),
        format!(
            "instance-id: \"vm-ci-1\"\nlocal-hostname: \"web-a\"\npublic-keys:\n  - \"{key}\"\n"
        )
    );
    // The busybox guest ignores the seed and serves as ever.
    assert_eq!(
        wait_serving(vm.address.unwrap(), "/").await.trim(),
        "vm-ci-1"
    );
    provider
        .delete(&vm.instance_id, Duration::from_secs(20))
        .await
        .unwrap();

    // The plain image reads no seed: a qemu part is refused, nothing starts.
    let mut plain = request("vm-ci-2");
    plain.template.qemu = Some(qemu);
    let e = f.provider.create(&plain).await.unwrap_err();
    assert!(
        matches!(&e, ProviderError::InvalidTemplate(m) if m.contains("template.qemu") && m.contains("cloud_init")),
        "{e}"
    );
    assert!(f.provider.list().await.unwrap().is_empty());
}
