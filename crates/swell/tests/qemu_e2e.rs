//! End-to-end tests of the `qemu` provider: a real `swell serve --qemu` booting real
//! QEMU VMs (TCG: this host cannot run nested KVM guests) from the `busybox-httpd`
//! image of scripts/build-vm-image (built on first use when missing), and the QEMU
//! processes the host shows against what the API says.
//!
//! A [`VmSweeper`] SIGKILLs, when the test ends, passed or failed, every QEMU process
//! whose files are under the test's data directory.

mod common;

use common::{Swell, eventually, group_doc, ids, never_scale};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use swell_providers::test_image::{IMAGE, images_dir};

/// TCG VMs on a loaded two-core machine boot in seconds, but several at once slower.
const CONVERGE: Duration = Duration::from_secs(120);

/// One test at a time: VMs are heavy on a two-core machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The QEMU processes of a data directory: instance id → pids (a duplicate shows
/// twice). Told by the VM's files being in an `instances/` directory under the data
/// directory (`<data dir>/qemu/instances/`, or a host's state directory there) and the
/// id by its SMBIOS serial, both on QEMU's command line.
fn vms(owner: &str) -> BTreeMap<String, Vec<i32>> {
    let marker = format!("{owner}/");
    let mut out: BTreeMap<String, Vec<i32>> = BTreeMap::new();
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
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let ours = |a: &String| {
            a.find(&marker)
                .is_some_and(|i| a[i..].contains("/instances/"))
        };
        if !args.iter().any(ours) {
            continue;
        }
        let zombie =
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "));
        if zombie {
            continue;
        }
        if let Some(id) = args.iter().find_map(|a| a.strip_prefix("type=1,serial=")) {
            out.entry(id.to_string()).or_default().push(pid);
        }
    }
    out
}

/// Kills every QEMU of a data directory when dropped.
struct VmSweeper(String);

impl Drop for VmSweeper {
    fn drop(&mut self) {
        for pid in vms(&self.0).values().flatten() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

async fn qemu_server() -> (Swell, VmSweeper) {
    let images = images_dir();
    let images = images.to_str().expect("a UTF-8 path");
    let s = Swell::start_with(
        &["--qemu", "--qemu-accel", "tcg", "--qemu-images", images],
        &[],
    )
    .await;
    let sweeper = VmSweeper(s.owner.clone());
    // The bootstrap grants cover `process` only: the admin grants the `default` tenant
    // the qemu provider and the test image, as an operator would.
    let granted = s
        .request(
            reqwest::Method::PUT,
            "/v1/tenants/default",
            Some(&format!(
                r#"{{"providers": ["process", "qemu"], "images": ["{IMAGE}"]}}"#
            )),
        )
        .await;
    assert_eq!(granted.status, 200, "{:?}", granted.body);
    (s, sweeper)
}

/// Waits until the group has exactly `n` running instances, `desired == n`, and the
/// host runs exactly their VMs, one QEMU each.
async fn converged(s: &Swell, group: &str, n: usize) -> Vec<Value> {
    eventually(
        &format!("group {group} to run exactly {n} VMs"),
        CONVERGE,
        || async {
            let g = s.get(&format!("/v1/groups/{group}")).await;
            let list = s.instances(group, false).await;
            let running: BTreeMap<String, Vec<i32>> = list
                .iter()
                .filter(|i| i["status"] == "running")
                .filter_map(|i| {
                    let pid = i["native_id"].as_str()?.parse().ok()?;
                    Some((i["id"].as_str()?.to_string(), vec![pid]))
                })
                .collect();
            let host = vms(&s.owner);
            if g["desired_capacity"] == n && list.len() == n && running == host {
                Ok(list)
            } else {
                let statuses: Vec<String> = list
                    .iter()
                    .map(|i| format!("{} {} pid {}", i["id"], i["status"], i["native_id"]))
                    .collect();
                Err(format!(
                    "desired {}, instances {statuses:?}, QEMU processes {host:?}",
                    g["desired_capacity"]
                ))
            }
        },
    )
    .await
}

/// Issue 19: `kill -9` of the server in the middle of a VM scale-out; the restart
/// converges with no orphan VM and no duplicate, and a scale-in powers the VMs off.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_vm_scale_out_leaves_no_orphan_and_no_duplicate() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let (mut s, _sweeper) = qemu_server().await;
    let mut doc = group_doc("vms", 1, 3, never_scale());
    doc["provider"] = "qemu".into();
    doc["template"] = serde_json::json!({ "image": IMAGE, "vcpus": 1, "memory_mb": 128 });
    let file = s.write("vms.json", &doc.to_string());
    s.cli_json(&["group", "create", "-f", &file]).await;
    let one = converged(&s, "vms", 1).await;

    s.cli_json(&["scale", "vms", "3"]).await;
    let deadline = Instant::now() + CONVERGE;
    loop {
        let list = s.instances("vms", true).await;
        if list.len() > 1 {
            break;
        }
        assert!(Instant::now() < deadline, "no new instance: {list:#?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    s.kill9();
    eprintln!("at the kill: QEMU processes {:?}", vms(&s.owner));
    s.restart().await;
    let three = converged(&s, "vms", 3).await;
    assert!(
        ids(&three).is_superset(&ids(&one)),
        "the first VM was adopted"
    );
    // Every VM of the data directory is a running instance, once.
    let host = vms(&s.owner);
    assert_eq!(host.len(), 3, "{host:?}");
    assert!(host.values().all(|pids| pids.len() == 1), "{host:?}");

    // Scale in: two VMs are powered off and their QEMU processes are gone.
    s.cli_json(&["scale", "vms", "1"]).await;
    let last = converged(&s, "vms", 1).await;
    assert_eq!(vms(&s.owner).len(), 1);
    // Deleting the group leaves no VM behind.
    s.cli_json(&["group", "delete", "vms"]).await;
    eventually("no VM left", CONVERGE, || async {
        let left = vms(&s.owner);
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    })
    .await;
    eprintln!(
        "kill_9_mid_vm_scale_out_leaves_no_orphan_and_no_duplicate: {} then {} in {:?}",
        three.len(),
        last.len(),
        started.elapsed()
    );
}

/// Issue 19: `swell demo --provider qemu --fast --json` scales the lab of VMs to 4 and
/// back to 1 without a failed request, and leaves no QEMU behind. Builds the
/// `swell-demo-app` VM image with scripts/build-vm-image when it is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_on_qemu() {
    let _serial = SERIAL.lock().await;
    let images = swell_providers::qemu::default_images_dir();
    if !images.join("swell-demo-app").join("image.json").is_file() {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/build-vm-image");
        // A target dir of its own: the `cargo test` running this holds its own.
        let target = match std::env::var_os("HOME") {
            Some(home) => PathBuf::from(home).join(".cache/swell/demo-image-target"),
            None => std::env::temp_dir().join("swell-demo-image-target"),
        };
        let status = Command::new(&script)
            .arg(&images)
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .expect("running scripts/build-vm-image");
        assert!(status.success(), "scripts/build-vm-image failed");
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out = tokio::process::Command::new(common::SWELL)
        .args(["demo", "--provider", "qemu", "--fast", "--json"])
        .current_dir(dir.path())
        .env_remove("SWELL_URL")
        .env("HOME", dir.path())
        .env("SWELL_VM_IMAGES", &images)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("running swell demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "swell demo failed:\n{stdout}\n{stderr}"
    );
    let last = stdout.lines().last().unwrap_or_default();
    let summary: Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("the last line is not JSON ({e}): {stdout}\n{stderr}"));
    assert_eq!(summary["max_instances"], 4, "{summary}\n{stderr}");
    assert_eq!(summary["final_instances"], 1, "{summary}\n{stderr}");
    assert_eq!(summary["errors"], 0, "{summary}\n{stderr}");
    // The demo's data directory was a temporary one under the system's: no QEMU of it
    // (its files under `<tmp>/…/qemu/instances/`) is left.
    let tmp = std::env::temp_dir().display().to_string();
    let left: Vec<String> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (cmdline.contains("qemu-system")
                && cmdline.contains(&tmp)
                && cmdline.contains("/qemu/instances/")
                && cmdline.contains("swell-demo-app"))
            .then_some(cmdline)
        })
        .collect();
    assert!(left.is_empty(), "the demo left VMs: {left:?}");
    eprintln!("demo_on_qemu: {summary} in {:?}", started.elapsed());
}

/// Issue 19 (seed 1's hybrid fleet): `provider: qemu` with `fallback_providers:
/// [docker]`, the host allowed two VMs (`--qemu-max-vms 2`): a scale-out to 4 runs two
/// VMs and two containers of the same demo app behind the group's one load balancer,
/// and traffic through it sees no failed request across the scale-in back to 1.
/// `swell serve --qemu --docker` with room for two VMs, the `default` tenant granted
/// both and the `swell-demo-app` image (a VM image and a Docker image of that name).
async fn mixed_server() -> (Swell, VmSweeper) {
    let images = swell_providers::qemu::default_images_dir();
    let docker_image = Command::new("docker")
        .args(["image", "inspect", "swell-demo-app:latest"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        docker_image && images.join("swell-demo-app/image.json").is_file(),
        "needs the swell-demo-app docker image (scripts/build-demo-image) and VM image (scripts/build-vm-image)"
    );
    let images_arg = images.to_str().expect("a UTF-8 path");
    let s = Swell::start_with(
        &[
            "--qemu",
            "--qemu-accel",
            "tcg",
            "--qemu-images",
            images_arg,
            "--qemu-max-vms",
            "2",
            "--docker",
        ],
        &[],
    )
    .await;
    let sweeper = VmSweeper(s.owner.clone());
    // As the seed-1 example says an operator does.
    let out = s
        .cli(&[
            "tenant",
            "update",
            "default",
            "--providers",
            "process,qemu,docker",
            "--images",
            "swell-demo-app",
        ])
        .await;
    assert!(out.status.success(), "tenant update: {out:#?}");
    (s, sweeper)
}

/// No QEMU process and no container of this server left.
async fn nothing_left(s: &Swell) {
    eventually("no VM or container left", CONVERGE, || async {
        let vms_left = vms(&s.owner);
        let filter = format!("label=swell.owner={}", s.owner);
        let containers = Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        if vms_left.is_empty() && containers.is_empty() {
            Ok(())
        } else {
            Err(format!("VMs {vms_left:?}, containers {containers:?}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mixed_vm_and_container_group_serves_behind_one_load_balancer() {
    if !std::path::Path::new("/var/run/docker.sock").exists() {
        eprintln!("SKIPPED mixed group: /var/run/docker.sock is absent");
        return;
    }
    let _serial = SERIAL.lock().await;
    let (s, _sweeper) = mixed_server().await;
    let mut doc = group_doc("mixed", 1, 4, never_scale());
    doc["provider"] = "qemu".into();
    doc["fallback_providers"] = serde_json::json!(["docker"]);
    doc["template"] =
        serde_json::json!({ "image": "swell-demo-app", "vcpus": 1, "memory_mb": 128 });
    let file = s.write("mixed.json", &doc.to_string());
    s.cli_json(&["group", "create", "-f", &file]).await;
    common::wait_running(&s, "mixed", 1, CONVERGE).await;
    let lb = s.load_balancer("mixed").await;
    let (load, tasks) = common::start_load(&lb, 3, 1);
    load.more(20, CONVERGE).await;

    s.cli_json(&["scale", "mixed", "4"]).await;
    let four = common::wait_running(&s, "mixed", 4, CONVERGE).await;
    let mut providers: Vec<&str> = four.iter().filter_map(|i| i["provider"].as_str()).collect();
    providers.sort_unstable();
    assert_eq!(providers, ["docker", "docker", "qemu", "qemu"], "{four:#?}");
    assert_eq!(vms(&s.owner).len(), 2);
    // Every instance, VM or container, gets traffic from the one load balancer.
    load.more(200, CONVERGE).await;
    let status = s.get("/v1/groups/mixed/load_balancer").await;
    let backends = status["backends"].as_array().cloned().unwrap_or_default();
    assert_eq!(backends.len(), 4, "{status:#}");
    s.cli_json(&["scale", "mixed", "1"]).await;
    common::wait_running(&s, "mixed", 1, CONVERGE).await;
    load.more(20, CONVERGE).await;
    load.finish(tasks).await;
    let failures = load.failures();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {failures:#?}",
        failures.len(),
        load.ok() + failures.len() as u64
    );
    s.cli_json(&["group", "delete", "mixed"]).await;
    nothing_left(&s).await;
}

/// Seed 1: `examples/seed1-hybrid.yaml` applied unchanged. High CPU fills the VM host's
/// room (two VMs) and then overflows to containers; low CPU removes a container first
/// (the least preferred provider), never the VMs before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seed1_hybrid_example_overflows_to_containers_and_scales_in_them_first() {
    if !std::path::Path::new("/var/run/docker.sock").exists() {
        eprintln!("SKIPPED seed 1: /var/run/docker.sock is absent");
        return;
    }
    let _serial = SERIAL.lock().await;
    let (s, _sweeper) = mixed_server().await;
    let example =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/seed1-hybrid.yaml");
    let example = example.to_str().expect("a UTF-8 path");
    let out = s.cli(&["-o", "json", "apply", "-f", example]).await;
    assert!(out.status.success(), "apply: {out:#?}");
    common::wait_running(&s, "hybrid", 1, CONVERGE).await;
    let pusher = common::Pusher::start(&s, "hybrid", "cpu", 90.0);
    let four = eventually("hybrid at 4 running", CONVERGE, || async {
        let list = s.instances("hybrid", false).await;
        let running = list.iter().filter(|i| i["status"] == "running").count();
        if running == 4 {
            Ok(list)
        } else {
            Err(format!("{running} running"))
        }
    })
    .await;
    let mut providers: Vec<&str> = four.iter().filter_map(|i| i["provider"].as_str()).collect();
    providers.sort_unstable();
    assert_eq!(providers, ["docker", "docker", "qemu", "qemu"], "{four:#?}");
    pusher.set(10.0);
    let events = eventually("a scale-in", CONVERGE, || async {
        let events = s.events("hybrid").await;
        if common::of_kind(&events, "scale_in").is_empty() {
            Err(format!("{} events", events.len()))
        } else {
            Ok(events)
        }
    })
    .await;
    // The first instance retired after the scale-in is a container.
    let retired = eventually("the first retirement", CONVERGE, || async {
        let all = s.instances("hybrid", true).await;
        all.into_iter()
            .find(|i| {
                matches!(
                    i["status"].as_str(),
                    Some("draining" | "terminating" | "terminated")
                )
            })
            .ok_or_else(|| "none retiring yet".to_string())
    })
    .await;
    assert_eq!(retired["provider"], "docker", "{retired:#}\n{events:#?}");
    s.cli_json(&["group", "delete", "hybrid"]).await;
    nothing_left(&s).await;
}

/// Issue 19, items 1, 2 and 4: a `qemu` provider defined at run time with two hosts
/// (state directories of their own under the data directory). A group of two VMs gets
/// one on each host; its policy is a band on `steal`, the host-side reading of its VMs,
/// which scales it in (steal is below 100 %); then the host of the VM left is lost (its
/// QEMU killed, its state directory removed) and the VM is replaced on the other host.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_defined_two_host_provider_places_scales_on_steal_and_survives_a_lost_host() {
    let _serial = SERIAL.lock().await;
    let images = images_dir();
    let s = Swell::start().await;
    let _sweeper = VmSweeper(s.owner.clone());
    let hosts = s.data_dir().join("h");
    let host = |name: &str| format!("{name}={}", hosts.join(name).display());
    let defined = s
        .cli_json(&[
            "provider",
            "create",
            "vmhosts",
            "--kind",
            "qemu",
            "--host",
            &host("a"),
            "--host",
            &host("b"),
            "--accel",
            "tcg",
            "--images-dir",
            images.to_str().expect("a UTF-8 path"),
        ])
        .await;
    assert_eq!(defined["kind"], "qemu", "{defined}");
    assert!(hosts.join("a").is_dir() && hosts.join("b").is_dir());
    // A broken definition names the field and the rule, and defines nothing.
    let bad = s
        .cli(&[
            "provider",
            "create",
            "badhosts",
            "--kind",
            "qemu",
            "--host",
            "a=relative/dir",
        ])
        .await;
    assert!(!bad.status.success());
    assert!(
        bad.stderr.contains("config.hosts[0].state_dir") && bad.stderr.contains("absolute"),
        "{}",
        bad.stderr
    );
    let granted = s
        .request(
            reqwest::Method::PUT,
            "/v1/tenants/default",
            Some(&format!(
                r#"{{"providers": ["process", "vmhosts"], "images": ["{IMAGE}"]}}"#
            )),
        )
        .await;
    assert_eq!(granted.status, 200, "{:?}", granted.body);

    let band = serde_json::json!([{ "type": "threshold", "metric": "steal",
        "scale_in_below": 100, "scale_out_above": 1000, "evaluation_period": "1s" }]);
    let mut doc = group_doc("vms", 1, 2, band);
    doc["provider"] = "vmhosts".into();
    doc["desired_capacity"] = 2.into();
    doc["template"] = serde_json::json!({ "image": IMAGE, "vcpus": 1, "memory_mb": 128 });
    // Through the API: the CLI checks a group file against the built-in providers only.
    let created = s
        .request(reqwest::Method::POST, "/v1/groups", Some(&doc.to_string()))
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    // Both VMs start before the first scale-in can happen (one pass creates both).
    let two = eventually("two VMs, one per host", CONVERGE, || async {
        let list = s.instances("vms", true).await;
        let mut on: Vec<String> = list
            .iter()
            .filter_map(|i| i["host"].as_str().map(str::to_string))
            .collect();
        on.sort();
        if on == ["a", "b"] {
            Ok(list)
        } else {
            Err(format!("{list:#?}"))
        }
    })
    .await;
    assert_eq!(two.len(), 2);
    // The band on steal scales in: the host-side steal reached the policy.
    let scale_in = eventually("a scale-in on steal", CONVERGE, || async {
        let events = s.events("vms").await;
        common::of_kind(&events, "scale_in")
            .first()
            .map(|e| (*e).clone())
            .ok_or_else(|| format!("{events:#?}"))
    })
    .await;
    assert_eq!(scale_in["cause"]["metric"], "steal", "{scale_in:#}");
    let steal = scale_in["cause"]["value"].as_f64().expect("a steal value");
    assert!((0.0..100.0).contains(&steal), "{scale_in:#}");
    let one = converged(&s, "vms", 1).await;
    let lost = one[0]["host"].as_str().unwrap().to_string();
    let other = if lost == "a" { "b" } else { "a" };

    // Its host is lost: the QEMU dies and the state directory goes.
    let pid: i32 = one[0]["native_id"].as_str().unwrap().parse().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    std::fs::remove_dir_all(hosts.join(&lost)).unwrap();
    let replaced = eventually("the VM replaced on the other host", CONVERGE, || async {
        let list = s.instances("vms", false).await;
        match list.as_slice() {
            [i] if i["status"] == "running" && i["id"] != one[0]["id"] => Ok(i.clone()),
            _ => Err(format!("{list:#?}")),
        }
    })
    .await;
    assert_eq!(replaced["host"], other, "{replaced:#}");
    assert!(
        !hosts.join(&lost).exists(),
        "the lost host's directory came back"
    );
    s.cli_json(&["group", "delete", "vms"]).await;
    eventually("no VM left", CONVERGE, || async {
        let left = vms(&s.owner);
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    })
    .await;
}

/// The QEMU processes whose files are under `dir`: instance id → pids.
fn vms_under(dir: &std::path::Path) -> BTreeMap<String, Vec<i32>> {
    let marker = format!("{}/instances/", dir.display());
    let mut out: BTreeMap<String, Vec<i32>> = BTreeMap::new();
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
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if !args.iter().any(|a| a.contains(&marker)) {
            continue;
        }
        if let Some(id) = args.iter().find_map(|a| a.strip_prefix("type=1,serial=")) {
            out.entry(id.to_string()).or_default().push(pid);
        }
    }
    out
}

/// Kills every QEMU whose files are under a directory when dropped.
struct DirSweeper(PathBuf);

impl Drop for DirSweeper {
    fn drop(&mut self) {
        for pid in vms_under(&self.0).values().flatten() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// The group `vms`'s one running instance (id, host) when it is the one QEMU whose
/// files are under `dir`.
async fn one_vm_on(s: &Swell, dir: &std::path::Path) -> Result<(String, String), String> {
    let list = s.instances("vms", false).await;
    let up: Vec<(String, String)> = list
        .iter()
        .filter(|i| i["status"] == "running")
        .map(|i| {
            (
                i["id"].as_str().unwrap_or_default().to_string(),
                i["host"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let host = vms_under(dir);
    if up.len() == 1 && host.len() == 1 && host.get(&up[0].0).is_some_and(|p| p.len() == 1) {
        Ok(up[0].clone())
    } else {
        Err(format!("running {up:?}, QEMU there {host:?}"))
    }
}

/// Issue 19, remote hosts: `swell serve --qemu-host rack2=ssh://…` with a private
/// OpenSSH server on loopback as the remote hypervisor host. The group's VM boots
/// there (its files in that host's state directory), serves through the group's load
/// balancer, shows on `swell provider hosts`; after a `kill -9` of the server the
/// restart adopts it over SSH (same instance, one QEMU), and deleting the group powers
/// it off there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_runs_on_an_ssh_host_and_a_restart_adopts_its_vm() {
    let _serial = SERIAL.lock().await;
    let root = tempfile::Builder::new()
        .prefix("sqe")
        .tempdir_in("/tmp")
        .expect("a temporary directory");
    let sshd_dir = root.path().join("sshd");
    std::fs::create_dir(&sshd_dir).unwrap();
    let sshd = swell_providers::test_sshd::TestSshd::start(&sshd_dir).unwrap();
    let remote = root.path().join("rack2");
    let _sweeper = DirSweeper(remote.clone());
    let images = images_dir();
    let host = format!(
        "rack2=ssh://root@127.0.0.1:{}{}",
        sshd.addr.port(),
        remote.display()
    );
    let key = sshd.client_key.display().to_string();
    let mut s = Swell::start_with(
        &[
            "--qemu",
            "--qemu-accel",
            "tcg",
            "--qemu-images",
            images.to_str().unwrap(),
            "--qemu-host",
            &host,
            "--qemu-ssh-identity",
            &key,
        ],
        &[],
    )
    .await;
    let granted = s
        .request(
            reqwest::Method::PUT,
            "/v1/tenants/default",
            Some(&format!(
                r#"{{"providers": ["process", "qemu"], "images": ["{IMAGE}"]}}"#
            )),
        )
        .await;
    assert_eq!(granted.status, 200, "{:?}", granted.body);
    let mut doc = group_doc("vms", 1, 2, never_scale());
    doc["provider"] = "qemu".into();
    doc["template"] = serde_json::json!({ "image": IMAGE, "vcpus": 1, "memory_mb": 128 });
    let file = s.write("vms.json", &doc.to_string());
    s.cli_json(&["group", "create", "-f", &file]).await;

    let (id, on) = eventually("one VM on rack2", CONVERGE, || one_vm_on(&s, &remote)).await;
    assert_eq!(on, "rack2");
    assert!(
        remote
            .join("instances")
            .join(&id)
            .join("console.log")
            .is_file()
    );
    // It serves its id through the group's load balancer.
    let lb = s.load_balancer("vms").await;
    let body = eventually("the VM serving through the load balancer", CONVERGE, || {
        let lb = lb.clone();
        async move {
            let r = reqwest::get(format!("http://{lb}/"))
                .await
                .map_err(|e| e.to_string())?;
            if r.status().is_success() {
                r.text().await.map_err(|e| e.to_string())
            } else {
                Err(r.status().to_string())
            }
        }
    })
    .await;
    assert_eq!(body.trim(), id);
    let hosts = s.cli_json(&["provider", "hosts", "qemu"]).await;
    assert_eq!(hosts["hosts"][0]["name"], "rack2", "{hosts}");
    assert_eq!(hosts["hosts"][0]["up"], true, "{hosts}");
    assert_eq!(hosts["hosts"][0]["vms"], 1, "{hosts}");

    // kill -9 of the server: the restart adopts the VM over SSH, no second QEMU.
    s.kill9();
    s.restart().await;
    let (again, _) = eventually("the VM adopted", CONVERGE, || one_vm_on(&s, &remote)).await;
    assert_eq!(again, id, "the same instance, adopted");

    s.cli_json(&["group", "delete", "vms"]).await;
    // QEMU goes first, then its files and record (in the same ssh call).
    eventually("no VM and no VM files left on rack2", CONVERGE, || async {
        let left = vms_under(&remote);
        let files = remote.join("instances").join(&id).exists();
        if left.is_empty() && !files {
            Ok(())
        } else {
            Err(format!("QEMU {left:?}, files there: {files}"))
        }
    })
    .await;
    // The server's SSH master connection ends with sshd's connection processes.
    take_down(sshd, &sshd_dir);
}

/// Stops sshd and its connection processes (and so every client's master connection).
fn take_down(sshd: swell_providers::test_sshd::TestSshd, dir: &std::path::Path) {
    let pid: i32 = std::fs::read_to_string(dir.join("sshd.pid"))
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(0);
    let ppid = |p: i32| -> Option<i32> {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        stat.rsplit_once(") ")?.1.split(' ').nth(1)?.parse().ok()
    };
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(p) = entry.file_name().to_string_lossy().parse::<i32>()
            && pid > 0
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
