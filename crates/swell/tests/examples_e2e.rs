//! The seeds' runnable examples in `examples/`, applied and exercised against a real
//! `swell serve` with the real CLI, not only parsed. Seed 0 (`openstack-lab.yaml`) runs
//! in `openstack_e2e.rs` against the OpenStack fixture and seed 1 (`seed1-hybrid.yaml`)
//! in `qemu_e2e.rs` beside the other VM tests; seeds 2 and 3 run here on the process
//! provider.
//!
//! The examples use the demo application as `swell demo-app` from `PATH`, as a user's
//! installed binary would be found: the server and the scripts get the test binary's
//! folder first on their `PATH`.

mod common;

use common::{ADMIN_PASSWORD, Pusher, SWELL, Swell, eventually, of_kind};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(120);

/// `examples/` in the repository.
fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// `PATH` with the folder of the `swell` binary under test first.
fn path_with_swell() -> String {
    let bin = Path::new(SWELL).parent().expect("the binary's folder");
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

async fn start() -> Swell {
    Swell::start_with(&[], &[("PATH", &path_with_swell())]).await
}

/// The first event of `kind` whose cause is `policy`'s, once there is one.
async fn first_action(s: &Swell, group: &str, kind: &str, policy: &str) -> Value {
    eventually(
        &format!("a {kind} by {policy} in {group}"),
        CONVERGE,
        || async {
            let events = s.events(group).await;
            of_kind(&events, kind)
                .into_iter()
                .find(|e| e["cause"]["policy"] == policy)
                .cloned()
                .ok_or_else(|| format!("{} events", events.len()))
        },
    )
    .await
}

/// Seed 2: one tenant file with every kind of policy the seed offers, applied whole with
/// `swell apply`. Its schedules are moved to "every minute" (so that their window is
/// open now); nothing else in the file is changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seed2_tenant_file_applies_and_every_policy_kind_acts() {
    let s = start().await;
    let text = std::fs::read_to_string(examples().join("seed2-aaas.yaml")).expect("the example");
    assert_eq!(text.matches(r#"cron: "0 9 * * MON-FRI""#).count(), 2);
    let text = text.replace(r#"cron: "0 9 * * MON-FRI""#, r#"cron: "* * * * *""#);
    let file = s.write("seed2-aaas.yaml", &text);
    let out = s.cli(&["-o", "json", "apply", "-f", &file]).await;
    assert!(out.status.success(), "apply: {out:#?}");
    // The seed's agent reports CPU from the start; pushed readings stand for the
    // instances' own while fresh.
    let _dynamic = Pusher::start(&s, "shop-dynamic", "cpu", 80.0);
    let _proactive = Pusher::start(&s, "shop-proactive", "cpu", 90.0);

    // Dynamic: seed 2's formula, ceil((80 - 60) / 60 × N) more (9 → 12 when all nine
    // count, as in the seed's own example).
    let out = first_action(&s, "shop-dynamic", "scale_out", "proportional").await;
    let reason = out["cause"]["reason"].as_str().unwrap_or_default();
    let n: f64 = reason
        .split(" on ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no instance count in {reason:?}"));
    let step = ((80.0 - 60.0) / 60.0 * n).ceil() as u64;
    assert_eq!(
        out["cause"]["after"].as_u64(),
        out["cause"]["before"].as_u64().map(|b| b + step),
        "{out:#}"
    );
    eprintln!("shop-dynamic: {reason}");

    // Static: the schedule's count while its window is open.
    let out = first_action(&s, "shop-static", "scale_out", "schedule").await;
    assert_eq!(out["cause"]["after"], 4, "{out:#}");
    common::wait_running(&s, "shop-static", 4, CONVERGE).await;

    // Custom: the schedule's count is the floor of the dynamic threshold policy.
    let out = first_action(&s, "shop-custom", "scale_out", "schedule").await;
    assert_eq!(out["cause"]["after"], 3, "{out:#}");
    common::wait_running(&s, "shop-custom", 3, CONVERGE).await;

    // Proactive: without an hour of history the forecast is reactive alone, and 90 %
    // against 60 % is a scale-out by the predictive policy.
    let out = first_action(&s, "shop-proactive", "scale_out", "predictive").await;
    assert!(
        out["cause"]["after"].as_u64() > out["cause"]["before"].as_u64(),
        "{out:#}"
    );

    // The seed's log management: every action and the CPU history as CSV files.
    let out = s.cli(&["events", "shop-dynamic", "-o", "csv"]).await;
    assert!(out.status.success(), "events csv: {out:#?}");
    let mut csv = csv::Reader::from_reader(out.stdout.as_bytes());
    let headers = csv.headers().expect("a header line").clone();
    let kind = headers
        .iter()
        .position(|h| h.eq_ignore_ascii_case("kind"))
        .unwrap_or_else(|| panic!("no kind column in {headers:?}"));
    let kinds: Vec<String> = csv
        .records()
        .map(|r| r.expect("a CSV record")[kind].to_lowercase())
        .collect();
    assert!(kinds.iter().any(|k| k == "scale_out"), "{kinds:?}");
    let out = s.cli(&["metrics", "shop-dynamic", "-o", "csv"]).await;
    assert!(out.status.success(), "metrics csv: {out:#?}");
    let mut csv = csv::Reader::from_reader(out.stdout.as_bytes());
    let headers = csv.headers().expect("a header line").clone();
    assert!(
        headers.iter().any(|h| h.to_lowercase().contains("cpu")),
        "{headers:?}"
    );
    assert!(csv.records().count() > 0, "no CPU history rows");
}

/// Seed 3: the admin's `setup.sh` makes a business tenant, applies its desktops and
/// binds one employee to each; an employee logs in, sees only their own desktop and
/// pauses and resumes it, and cannot touch a colleague's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seed3_business_cloud_employees_pause_only_their_own_desktop() {
    let s = start().await;
    let password = s.write("admin-password", ADMIN_PASSWORD);
    let passwords = s.dir.path().join("acme-passwords");
    let config = s.dir.path().join("config");
    let script = examples().join("seed3-business-cloud/setup.sh");
    let out = tokio::process::Command::new(&script)
        .arg(&password)
        .arg(&passwords)
        .env("PATH", path_with_swell())
        .env("SWELL_URL", &s.url)
        .env_remove("SWELL_TOKEN")
        .env_remove("SWELL_CONTEXT")
        .env("XDG_CONFIG_HOME", &config)
        .current_dir(s.dir.path())
        .output()
        .await
        .expect("running setup.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "setup.sh failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // "asha owns desktop ID (…)", one line per employee.
    let owned: Vec<(String, String)> = stdout
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let who = w.next()?;
            (w.next()? == "owns").then_some(())?;
            w.next()?;
            Some((who.to_string(), w.next()?.to_string()))
        })
        .collect();
    assert_eq!(owned.len(), 3, "{stdout}");

    // An employee, as the CLI sees them: their own context.
    let as_user = |user: &'static str, args: Vec<String>| {
        let (url, config) = (s.url.clone(), config.clone());
        async move {
            tokio::process::Command::new(SWELL)
                .arg("--url")
                .arg(&url)
                .arg("--context")
                .arg(user)
                .args(&args)
                .env_remove("SWELL_TOKEN")
                .env("XDG_CONFIG_HOME", &config)
                .output()
                .await
                .expect("running swell")
        }
    };
    let (asha, desk) = (&owned[0].0, &owned[0].1);
    assert_eq!(asha, "asha");
    let colleague = &owned[1].1;
    let pw = passwords.join("asha");
    let login = as_user(
        "asha",
        vec![
            "login".into(),
            "--user".into(),
            "asha".into(),
            "--tenant".into(),
            "acme".into(),
            "--password-file".into(),
            pw.display().to_string(),
        ],
    )
    .await;
    assert!(login.status.success(), "{login:?}");
    let list = as_user(
        "asha",
        vec![
            "-o".into(),
            "json".into(),
            "instance".into(),
            "list".into(),
            "desktops".into(),
        ],
    )
    .await;
    assert!(list.status.success(), "{list:?}");
    let seen: Value = serde_json::from_slice(&list.stdout).expect("JSON");
    let seen: Vec<&str> = seen["instances"]
        .as_array()
        .map(|a| a.iter().filter_map(|i| i["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(seen, [desk.as_str()], "asha sees only her desktop");

    let pause = |id: String| {
        as_user(
            "asha",
            vec![
                "-o".into(),
                "json".into(),
                "instance".into(),
                "pause".into(),
                "desktops".into(),
                id,
            ],
        )
    };
    let paused = pause(desk.clone()).await;
    assert!(paused.status.success(), "{paused:?}");
    // The admin's view of the tenant shows it paused, the colleague's still running.
    let admin_ctx = |args: Vec<String>| as_user("seed3-acme", args);
    let all = admin_ctx(vec![
        "-o".into(),
        "json".into(),
        "instance".into(),
        "list".into(),
        "desktops".into(),
    ])
    .await;
    let all: Value = serde_json::from_slice(&all.stdout).expect("JSON");
    let status_of = |id: &str| {
        all["instances"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["id"] == id))
            .map(|i| i["status"].as_str().unwrap_or_default().to_string())
    };
    assert_eq!(status_of(desk).as_deref(), Some("paused"), "{all:#}");
    assert_eq!(status_of(colleague).as_deref(), Some("running"), "{all:#}");

    // A colleague's desktop: refused, and still running.
    let refused = pause(colleague.clone()).await;
    assert!(!refused.status.success(), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("403"),
        "{refused:?}"
    );
    let resumed = as_user(
        "asha",
        vec![
            "-o".into(),
            "json".into(),
            "instance".into(),
            "resume".into(),
            "desktops".into(),
            desk.clone(),
        ],
    )
    .await;
    assert!(resumed.status.success(), "{resumed:?}");
    let resumed: Value = serde_json::from_slice(&resumed.stdout).expect("JSON");
    assert_eq!(resumed["status"], "running", "{resumed:#}");
}

/// The Quickstart's `tenant.yaml`, applied unchanged: its group runs and its load
/// balancer answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_tenant_example_serves_behind_its_load_balancer() {
    let s = start().await;
    let example = examples().join("tenant.yaml");
    let example = example.to_str().expect("a UTF-8 path");
    let out = s
        .cli(&["-o", "json", "apply", "-f", example, "--wait=2m"])
        .await;
    assert!(out.status.success(), "apply: {out:#?}");
    let lb = s.load_balancer("web").await;
    let answer = reqwest::get(format!("http://{lb}/"))
        .await
        .expect("the load balancer answers");
    assert!(answer.status().is_success(), "{answer:?}");
}
