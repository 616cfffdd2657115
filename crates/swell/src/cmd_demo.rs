//! `swell demo`: the OpenStack lab example's policy on the embedded defaults. An in-process server runs a
//! group of `swell demo-app` processes behind its load balancer; the demo sends a surge
//! of CPU-heavy requests through the load balancer, then goes quiet, and shows every
//! instance, its CPU and each decision with its cause as the fleet scales out and back in.

use anyhow::{Context, Result, bail};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use swell_core::{EventKind, GroupSpec, InstanceStatus, TenantId};
use swell_server::{Server, ServerConfig};
use swell_store::EventFilter;

/// Options of `swell demo`.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Compress the periods (evaluation period, cooldown, intervals) by 4 so the whole run
    /// takes under two minutes; the logic is the same.
    #[arg(long)]
    fast: bool,
    /// Print progress on stderr and, as the last line on stdout, a JSON summary (the
    /// same as `-o json`).
    #[arg(long)]
    pub json: bool,
    /// Where instances run: `process` (local child processes), `docker` (containers
    /// of the `swell-demo-app:latest` image on the local engine; build it with
    /// `scripts/build-demo-image`) or `qemu` (VMs of the `swell-demo-app` VM image;
    /// build it with `scripts/build-vm-image`).
    #[arg(long, default_value = "process")]
    provider: String,
}

/// The image the docker demo runs.
const DEMO_IMAGE: &str = "swell-demo-app:latest";
/// The VM image the qemu demo boots (a directory of scripts/build-vm-image's).
const DEMO_VM_IMAGE: &str = "swell-demo-app";

/// The demo's group: the OpenStack lab example (CPU above 20 % over 40 s → +1, max 4), with a
/// scale-in threshold added so that the fleet comes back to its minimum.
fn lab_group(exe: &str, fast: bool, provider: &str) -> Result<GroupSpec> {
    let k = if fast { 4 } else { 1 };
    let secs = |s: u64| format!("{}ms", s * 1000 / k);
    let template = if provider == "docker" {
        serde_json::json!({ "image": DEMO_IMAGE })
    } else if provider == "qemu" {
        serde_json::json!({ "image": DEMO_VM_IMAGE, "vcpus": 1, "memory_mb": 128 })
    } else {
        serde_json::json!({ "command": [exe, "demo-app", "--port", "{port}"] })
    };
    let doc = serde_json::json!({
        "name": "lab",
        "provider": provider,
        "template": template,
        "min": 1,
        "max": 4,
        "cooldown": secs(40),
        "warmup": "0s",
        "drain_timeout": secs(20),
        "evaluation_interval": secs(8),
        "metrics_interval": secs(4),
        "policies": [{
            "type": "threshold",
            "metric": "cpu",
            "scale_out_above": 20,
            "scale_in_below": 5,
            "step": 1,
            "evaluation_period": secs(40),
        }],
        "load_balancer": { "listen": "127.0.0.1:0" },
    });
    let spec: GroupSpec = serde_json::from_value(doc).context("the demo group")?;
    spec.validate()?;
    Ok(spec)
}

/// The CLI context the demo writes for its own server (`demo`), so that `swell --context
/// demo …` reaches it while it runs; the current context is left as it was.
const DEMO_CONTEXT: &str = "demo";

/// Logs the demo's bootstrap admin in and stores the token in context `demo`. A failure
/// (no configuration directory) only means the CLI cannot reach the demo.
async fn demo_context(server: &Server) -> Result<String> {
    let password = server
        .generated_admin_password()
        .context("the demo's admin has no generated password")?;
    let (token, _) = server
        .service()
        .auth()
        .login(
            swell_server::auth::BOOTSTRAP_ADMIN,
            password.expose(),
            "default",
            None,
        )
        .await?;
    let url = server.url();
    let mut config = crate::config::Config::load(crate::config::DEFAULT_URL)?;
    config.remember(
        DEMO_CONTEXT,
        &url,
        swell_server::auth::BOOTSTRAP_ADMIN,
        "default",
        token,
    );
    config.save()?;
    Ok(DEMO_CONTEXT.to_string())
}

/// Removes the demo's context once its server is gone.
fn forget_context(name: &str) {
    let url = crate::config::DEFAULT_URL;
    if let Ok(mut config) = crate::config::Config::load(url)
        && config.delete(name).is_ok()
    {
        let _ = config.save();
    }
}

struct Load {
    ok: AtomicU64,
    failed: AtomicU64,
    surge: AtomicBool,
    stop: AtomicBool,
}

/// Sends requests through the load balancer: `workers` loops of `/work?ms=40` while
/// `surge` is set, plus one light request every 250 ms throughout.
fn start_load(lb: String, load: Arc<Load>, workers: usize) -> Vec<tokio::task::JoinHandle<()>> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default();
    let mut tasks = Vec::new();
    for w in 0..=workers {
        let (client, load, lb) = (client.clone(), load.clone(), lb.clone());
        tasks.push(tokio::spawn(async move {
            let heavy = w < workers;
            while !load.stop.load(Ordering::Relaxed) {
                if heavy && !load.surge.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                let ms = if heavy { 40 } else { 1 };
                let ok = match client.get(format!("http://{lb}/work?ms={ms}")).send().await {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                let counter = if ok { &load.ok } else { &load.failed };
                counter.fetch_add(1, Ordering::Relaxed);
                if !heavy {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }));
    }
    tasks
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> Result<()> {
    match args.provider.as_str() {
        "process" => {}
        "docker" => {
            let found = std::process::Command::new("docker")
                .args(["image", "inspect", DEMO_IMAGE])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !found {
                bail!(
                    "the image {DEMO_IMAGE} is not on the local Docker engine: build it with ./scripts/build-demo-image"
                );
            }
        }
        "qemu" => {
            let images = swell_providers::qemu::default_images_dir();
            if !images.join(DEMO_VM_IMAGE).join("image.json").is_file() {
                bail!(
                    "the VM image {DEMO_VM_IMAGE} is not in {}: build it with ./scripts/build-vm-image",
                    images.display()
                );
            }
        }
        other => bail!(
            "unknown provider `{other}`: use --provider process, --provider docker or --provider qemu"
        ),
    }
    let say = |line: String| {
        if args.json {
            eprintln!("{line}");
        } else {
            outln!("{line}");
        }
    };
    let data = tempfile::tempdir().context("creating a temporary data directory")?;
    let exe = std::env::current_exe().context("finding the swell executable")?;
    let exe = exe
        .to_str()
        .context("the swell executable's path is not UTF-8")?
        .to_string();
    let server = Server::start(ServerConfig {
        listen: "127.0.0.1:0".parse()?,
        data_dir: data.path().to_path_buf(),
        database_url: None,
        stop_instances_on_exit: true,
        // The demo drives the service in-process as the bootstrap admin on `default`.
        admin_password: None,
        secret_key: None,
        secret_key_file: None,
        docker_engines: if args.provider == "docker" {
            vec![swell_providers::docker::EngineConfig::local("local")]
        } else {
            Vec::new()
        },
        openstack: None,
        qemu: (args.provider == "qemu").then(|| {
            swell_providers::qemu::QemuConfig::new(
                swell_providers::qemu::default_images_dir(),
                "",
                "",
            )
        }),
        ..ServerConfig::default()
    })
    .await?;
    let service = server.service();
    let tenant = TenantId::default_tenant();
    if args.provider == "qemu" {
        // As for docker below: the qemu provider and its one VM image.
        service
            .update_tenant(
                tenant.as_str(),
                swell_api::UpdateTenant {
                    providers: Some(vec!["process".into(), "qemu".into()]),
                    images: Some(vec![DEMO_VM_IMAGE.into()]),
                    ..Default::default()
                },
            )
            .await?;
    }
    if args.provider == "docker" {
        // The bootstrap grants cover `process` only: the demo grants its own (temporary)
        // `default` tenant the docker provider and its one image, as an admin would.
        service
            .update_tenant(
                tenant.as_str(),
                swell_api::UpdateTenant {
                    providers: Some(vec!["process".into(), "docker".into()]),
                    images: Some(vec![DEMO_IMAGE.into()]),
                    ..Default::default()
                },
            )
            .await?;
    }
    let context = demo_context(&server).await;
    let spec = lab_group(&exe, args.fast, &args.provider)?;
    service.create_group(&tenant, spec).await?;
    let lb = service
        .controller()
        .load_balancer_addr(&tenant, "lab")
        .context("the demo group has no load balancer")?;
    say(format!(
        "Swell demo: group `lab` on the {} provider (cpu > 20 % over {} → +1, max 4; < 5 % → -1), load balancer http://{lb}, API http://{}",
        args.provider,
        if args.fast { "10s" } else { "40s" },
        server.addr()
    ));

    if let Ok(name) = &context {
        say(format!(
            "the CLI reaches it while it runs: swell --context {name} group list (the current context is unchanged)"
        ));
    }
    let result = drive(&args, &service, &tenant, &lb.to_string(), &say).await;
    say("stopping the demo's instances…".into());
    server.shutdown().await;
    if let Ok(name) = context {
        forget_context(&name);
    }
    let summary = result?;
    if args.json {
        outln!("{}", serde_json::to_string(&summary)?);
    } else {
        outln!(
            "\nSummary: max {} instances, final {}, {} scale-out and {} scale-in decisions, {} failed requests of {}.",
            summary["max_instances"],
            summary["final_instances"],
            summary["scale_out_events"],
            summary["scale_in_events"],
            summary["errors"],
            summary["requests"]
        );
    }
    Ok(())
}

async fn drive(
    args: &DemoArgs,
    service: &swell_server::service::Service,
    tenant: &TenantId,
    lb: &str,
    say: &dyn Fn(String),
) -> Result<serde_json::Value> {
    let k: u32 = if args.fast { 4 } else { 1 };
    let tick = Duration::from_millis(4000 / k as u64);
    let surge_limit = Duration::from_secs(240 / k as u64);
    let hold = Duration::from_secs(40 / k as u64);
    let quiet_limit = Duration::from_secs(360 / k as u64);

    // Load starts once the first instance serves, so no request meets an empty pool.
    let ready_deadline = Instant::now() + Duration::from_secs(60);
    while service
        .list_instances(tenant, "lab", false)
        .await?
        .iter()
        .all(|i| i.status != InstanceStatus::Running)
    {
        if Instant::now() > ready_deadline {
            bail!("the first instance did not start within 60s; see the instance logs");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let load = Arc::new(Load {
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        surge: AtomicBool::new(true),
        stop: AtomicBool::new(false),
    });
    let tasks = start_load(lb.to_string(), load.clone(), 8);
    let start = Instant::now();
    let mut phase_start = start;
    let mut surge = true;
    let mut at_max_since: Option<Instant> = None;
    let mut max_instances = 0usize;
    let mut final_instances;
    let mut last_event = 0i64;
    let (mut outs, mut ins) = (0u32, 0u32);
    say("phase 1: surge — 8 clients send CPU-heavy requests through the load balancer".into());
    loop {
        tokio::time::sleep(tick).await;
        let group = service.get_group(tenant, "lab").await?;
        let instances = service.list_instances(tenant, "lab", false).await?;
        let running: Vec<_> = instances
            .iter()
            .filter(|i| i.status == InstanceStatus::Running)
            .collect();
        max_instances = max_instances.max(running.len());
        final_instances = running.len();
        let cpus: Vec<String> = running
            .iter()
            .map(|i| {
                let cpu = service.latest_reading(i).map(|m| m.cpu_percent);
                format!(
                    "#{} {}",
                    i.created_order,
                    cpu.map_or("  -  ".into(), |c| format!("{c:5.1}%"))
                )
            })
            .collect();
        let draining = instances
            .iter()
            .filter(|i| {
                i.status == InstanceStatus::Draining || i.status == InstanceStatus::Terminating
            })
            .count();
        say(format!(
            "t+{:>3}s  desired {}  running {} {}[{}]  requests ok {} failed {}",
            start.elapsed().as_secs(),
            group.desired_capacity,
            running.len(),
            if draining > 0 {
                format!("draining {draining} ")
            } else {
                String::new()
            },
            cpus.join(" | "),
            load.ok.load(Ordering::Relaxed),
            load.failed.load(Ordering::Relaxed)
        ));
        let events = service
            .list_events(
                tenant,
                "lab",
                &EventFilter {
                    after_id: Some(last_event),
                    ..EventFilter::default()
                },
            )
            .await?;
        for e in &events {
            last_event = e.id;
            match e.event.kind {
                EventKind::ScaleOut => outs += 1,
                EventKind::ScaleIn => ins += 1,
                _ => {}
            }
            if matches!(
                e.event.kind,
                EventKind::ScaleOut
                    | EventKind::ScaleIn
                    | EventKind::InstanceCreated
                    | EventKind::InstanceDraining
                    | EventKind::InstanceTerminated
                    | EventKind::InstanceFailed
            ) {
                say(format!("         ▸ {}: {}", e.event.kind, e.event.message));
            }
        }
        if surge {
            if group.desired_capacity == 4 && running.len() == 4 {
                let since = *at_max_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= hold {
                    surge = false;
                }
            }
            if phase_start.elapsed() >= surge_limit {
                say("the surge did not reach 4 instances in time; going quiet anyway".into());
                surge = false;
            }
            if !surge {
                load.surge.store(false, Ordering::Relaxed);
                phase_start = Instant::now();
                say("phase 2: quiet — only a light request every 250 ms".into());
            }
        } else if (group.desired_capacity == 1 && running.len() == 1 && draining == 0)
            || phase_start.elapsed() >= quiet_limit
        {
            break;
        }
    }
    load.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    Ok(serde_json::json!({
        "max_instances": max_instances,
        "final_instances": final_instances,
        "scale_out_events": outs,
        "scale_in_events": ins,
        "errors": load.failed.load(Ordering::Relaxed),
        "requests": load.ok.load(Ordering::Relaxed) + load.failed.load(Ordering::Relaxed),
    }))
}
