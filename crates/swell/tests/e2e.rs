//! End-to-end tests: each starts the real `swell serve` binary on its own port and data
//! directory, drives it through the real CLI and the REST API, runs real `swell
//! demo-app` instances behind the group's load balancer, and checks what the server
//! did: instances, processes, events. The timings are those of `swell demo --fast`;
//! waits poll with a deadline for the real system to converge, nothing sleeps to test
//! timing logic.

mod common;

use common::{Swell, eventually, group_doc, ids, kinds_for, never_scale, of_kind, process_state};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Long enough for a loaded two-core machine; convergence normally takes seconds.
const CONVERGE: Duration = Duration::from_secs(90);

/// Requests sent through a load balancer, counted.
struct Load {
    ok: AtomicU64,
    failed: AtomicU64,
    failures: Mutex<Vec<String>>,
    heavy: AtomicBool,
    stop: AtomicBool,
}

impl Load {
    fn new() -> Arc<Load> {
        Arc::new(Load {
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            failures: Mutex::new(Vec::new()),
            heavy: AtomicBool::new(true),
            stop: AtomicBool::new(false),
        })
    }
}

/// Light clients: each sends `/work?ms=0` every 50 ms (far below the scale-in threshold).
const LIGHT_CLIENTS: usize = 2;

/// `heavy` clients loop on `/work?ms=20` while `load.heavy` is set; the light clients
/// keep sending until `load.stop`.
fn start_load(lb: &str, load: &Arc<Load>, heavy: usize) -> Vec<tokio::task::JoinHandle<()>> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("a load client");
    (0..heavy + LIGHT_CLIENTS)
        .map(|w| {
            let (client, load, lb) = (client.clone(), load.clone(), lb.to_string());
            tokio::spawn(async move {
                let is_heavy = w < heavy;
                while !load.stop.load(Ordering::Relaxed) {
                    if is_heavy && !load.heavy.load(Ordering::Relaxed) {
                        return;
                    }
                    let ms = if is_heavy { 20 } else { 0 };
                    let outcome = match client.get(format!("http://{lb}/work?ms={ms}")).send().await
                    {
                        Ok(r) if r.status().is_success() => {
                            r.bytes().await.map(|_| ()).map_err(|e| e.to_string())
                        }
                        Ok(r) => Err(format!("status {}", r.status())),
                        Err(e) => Err(e.to_string()),
                    };
                    match outcome {
                        Ok(()) => load.ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            if let Ok(mut f) = load.failures.lock() {
                                f.push(e);
                            }
                            load.failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    if !is_heavy {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            })
        })
        .collect()
}

/// Checks a scale decision's cause: the threshold policy on cpu, with the average it
/// saw, the threshold it crossed and a one-instance step from `before` to `after`.
fn check_cause(e: &Value, out: bool) {
    let c = &e["cause"];
    assert_eq!(c["policy"], "threshold", "{e}");
    assert_eq!(c["metric"], "cpu", "{e}");
    let value = c["value"]
        .as_f64()
        .unwrap_or_else(|| panic!("no value: {e}"));
    let threshold = c["threshold"]
        .as_f64()
        .unwrap_or_else(|| panic!("no threshold: {e}"));
    let (before, after) = (
        c["before"].as_u64().expect("before"),
        c["after"].as_u64().expect("after"),
    );
    if out {
        assert_eq!(threshold, 20.0, "{e}");
        assert!(value > threshold, "scale-out below its threshold: {e}");
        assert_eq!(after, before + 1, "{e}");
    } else {
        assert_eq!(threshold, 5.0, "{e}");
        assert!(value < threshold, "scale-in above its threshold: {e}");
        assert_eq!(after + 1, before, "{e}");
    }
}

/// Waits until the group has exactly `n` instances, all `running`, and `desired == n`.
async fn wait_running(s: &Swell, group: &str, n: usize) -> Vec<Value> {
    common::wait_running(s, group, n, CONVERGE).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cli_scale_out_to_max_and_in_to_min() {
    let s = Swell::start().await;
    let exe = common::SWELL;
    let yaml = format!(
        r#"# the seed-0 lab on the compressed timings of `swell demo --fast`
name: web
provider: process
template:
  command: ["{exe}", "demo-app", "--port", "{{port}}"]
min: 1
max: 3
cooldown: 3s
warmup: 0s
drain_timeout: 2s
evaluation_interval: 1s
metrics_interval: 500ms
policies:
  - type: threshold
    metric: cpu
    scale_out_above: 20
    scale_in_below: 5
    step: 1
    evaluation_period: 4s
load_balancer:
  listen: 127.0.0.1:0
"#
    );
    let file = s.write("group.yaml", &yaml);
    let created = s.cli_json(&["group", "create", "-f", &file]).await;
    assert_eq!(created["name"], "web");
    let list = s.cli_json(&["group", "list"]).await;
    let groups = list["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 1, "{list}");
    assert_eq!(groups[0]["name"], "web");
    assert_eq!(groups[0]["spec"]["max"], 3);
    assert_eq!(groups[0]["spec"]["min"], 1);

    let first = wait_running(&s, "web", 1).await;
    let first_id = first[0]["id"].as_str().expect("id").to_string();
    let lb = s.load_balancer("web").await;

    // Surge: CPU-heavy requests until the group runs its max.
    let load = Load::new();
    let tasks = start_load(&lb, &load, 4);
    let at_max = wait_running(&s, "web", 3).await;
    assert!(ids(&at_max).contains(&first_id));
    let ok_at_max = load.ok.load(Ordering::Relaxed);
    assert!(ok_at_max > 0, "no request got through during the surge");

    // Quiet: only the light client, which keeps running through the scale-in so that a
    // request sent to a retiring instance would show up as a failure.
    load.heavy.store(false, Ordering::Relaxed);
    let at_min = wait_running(&s, "web", 1).await;
    load.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("a load task");
    }
    let (ok, failed) = (
        load.ok.load(Ordering::Relaxed),
        load.failed.load(Ordering::Relaxed),
    );
    let failures = load.failures.lock().map(|f| f.clone()).unwrap_or_default();
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed through the load balancer: {failures:?}",
        ok + failed
    );
    assert!(
        ok >= ok_at_max + 50,
        "too few requests during the scale-in ({} after {ok_at_max})",
        ok - ok_at_max
    );
    // Scale-in retires the newest scaled-up instances first: the permanent one stays.
    assert_eq!(ids(&at_min), BTreeSet::from([first_id.clone()]));

    let events = s.cli_json(&["events", "web"]).await;
    let events = events["events"].as_array().expect("events").clone();
    let outs = of_kind(&events, "scale_out");
    let ins = of_kind(&events, "scale_in");
    assert!(
        outs.len() >= 2,
        "expected two scale-outs (1 → 2 → 3): {outs:#?}"
    );
    assert!(
        ins.len() >= 2,
        "expected two scale-ins (3 → 2 → 1): {ins:#?}"
    );
    for e in &outs {
        check_cause(e, true);
    }
    for e in &ins {
        check_cause(e, false);
    }
    let steps = |list: &[&Value]| -> Vec<(u64, u64)> {
        list.iter()
            .map(|e| {
                let c = &e["cause"];
                (
                    c["before"].as_u64().unwrap_or_default(),
                    c["after"].as_u64().unwrap_or_default(),
                )
            })
            .collect()
    };
    assert_eq!(steps(&outs), vec![(1, 2), (2, 3)], "{outs:#?}");
    assert_eq!(steps(&ins), vec![(3, 2), (2, 1)], "{ins:#?}");
    // Every retired instance was drained before it was terminated.
    let retired: BTreeSet<String> = ids(&at_max).difference(&ids(&at_min)).cloned().collect();
    assert_eq!(retired.len(), 2);
    for id in &retired {
        let kinds = kinds_for(&events, id);
        let drained = kinds.iter().position(|k| k == "instance_draining");
        let terminated = kinds.iter().position(|k| k == "instance_terminated");
        assert!(
            matches!((drained, terminated), (Some(d), Some(t)) if d < t),
            "instance {id} was not drained, then terminated: {kinds:?}"
        );
    }

    let instances = s.cli_json(&["instance", "list", "web"]).await;
    let instances = instances["instances"].as_array().expect("instances");
    assert_eq!(instances.len(), 1, "{instances:#?}");
    assert_eq!(instances[0]["id"], first_id.as_str());
    assert_eq!(instances[0]["status"], "running");
    assert_eq!(instances[0]["lifecycle"], "permanent");
    // Exactly that one process runs for the group.
    eventually("the retired processes to exit", CONVERGE, || async {
        let tagged = s.tagged();
        if tagged.keys().cloned().collect::<BTreeSet<_>>() == ids(&at_min) {
            Ok(())
        } else {
            Err(format!("{tagged:?}"))
        }
    })
    .await;
}

/// After a restart: waits until the group runs exactly `n` instances and the processes
/// tagged with the server's data directory are exactly those instances, one process
/// each, with the pid the API shows (no orphan, no duplicate); then checks that every
/// instance the store ever had has an event for its current state (no lost event).
/// Until the group has scaled in (`scaled_in`), nothing may have been terminated.
/// Returns the processes by instance id.
async fn check_converged(
    s: &Swell,
    group: &str,
    n: usize,
    scaled_in: bool,
) -> BTreeMap<String, Vec<i32>> {
    let running = wait_running(s, group, n).await;
    let running_ids = ids(&running);
    let tagged = eventually(
        "the tagged processes to be the running instances",
        CONVERGE,
        || async {
            let tagged = s.tagged();
            if tagged.keys().cloned().collect::<BTreeSet<_>>() == running_ids {
                Ok(tagged)
            } else {
                Err(format!("tagged {tagged:?}, running {running_ids:?}"))
            }
        },
    )
    .await;
    for inst in &running {
        let id = inst["id"].as_str().expect("id");
        assert_eq!(
            tagged[id].len(),
            1,
            "instance {id} runs as several processes: {tagged:?}"
        );
        assert_eq!(
            inst["native_id"].as_str(),
            Some(tagged[id][0].to_string().as_str()),
            "the API's pid of {id} is not its process: {inst}"
        );
    }
    let g = s.get(&format!("/v1/groups/{group}")).await;
    assert_eq!(g["instances"]["running"], n, "{g}");
    assert_eq!(g["instances"]["pending"], 0, "{g}");

    let events = s.events(group).await;
    for inst in s.instances(group, true).await {
        let id = inst["id"].as_str().expect("id");
        let kinds = kinds_for(&events, id);
        let expected: &[&str] = match inst["status"].as_str() {
            Some("running") => &["instance_created", "instance_adopted"],
            Some("failed") => &["instance_failed"],
            Some("terminated") if scaled_in => &["instance_terminated"],
            other => panic!("instance {id} is {other:?} after convergence: {inst}"),
        };
        assert!(
            kinds.iter().any(|k| expected.contains(&k.as_str())),
            "instance {id} ({}) has none of {expected:?}: {kinds:?}",
            inst["status"]
        );
    }
    if !scaled_in {
        assert!(
            of_kind(&events, "instance_terminated").is_empty(),
            "nothing should have been terminated (an orphan?): {events:#?}"
        );
    }
    tagged
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_scale_then_restart_adopts() {
    let mut s = Swell::start().await;
    let doc = group_doc("fleet", 1, 6, never_scale());
    let file = s.write("fleet.json", &doc.to_string());
    s.cli_json(&["group", "create", "-f", &file]).await;
    let first = wait_running(&s, "fleet", 1).await;
    let first_id = first[0]["id"].as_str().expect("id").to_string();

    // Crash 1: kill -9 as soon as the first new instance shows in the API (its create
    // intent is stored; its process may or may not have started).
    let scaled = s.cli_json(&["scale", "fleet", "4"]).await;
    assert_eq!(scaled["desired_capacity"], 4);
    let deadline = Instant::now() + CONVERGE;
    let at_kill = loop {
        let list = s.instances("fleet", true).await;
        if list.len() > 1 {
            break list;
        }
        assert!(Instant::now() < deadline, "no new instance: {list:#?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    s.kill9();
    let interrupted: BTreeSet<String> = ids(&at_kill)
        .into_iter()
        .filter(|id| *id != first_id)
        .collect();
    eprintln!(
        "crash 1: instances {at_kill:#?}, processes {:?}",
        s.tagged()
    );
    s.restart().await;
    let tagged = check_converged(&s, "fleet", 4, false).await;
    let events = s.events("fleet").await;
    assert!(
        kinds_for(&events, &first_id).contains(&"instance_adopted".to_string()),
        "the instance that ran before the crash was not adopted: {:?}",
        kinds_for(&events, &first_id)
    );
    for id in &interrupted {
        let kinds = kinds_for(&events, id);
        assert!(
            kinds
                .iter()
                .any(|k| k == "instance_adopted" || k == "instance_failed"),
            "no adopted/failed event for {id}, whose create the crash interrupted: {kinds:?}"
        );
    }

    // Crash 2: kill -9 as soon as the process of a new instance runs, most likely before
    // the server recorded that its create succeeded: the restart must adopt that very
    // process, not start a second one.
    s.cli_json(&["scale", "fleet", "6"]).await;
    let deadline = Instant::now() + CONVERGE;
    let (new_id, new_pids) = loop {
        if let Some((id, pids)) = s
            .tagged()
            .into_iter()
            .find(|(id, _)| !tagged.contains_key(id))
        {
            break (id, pids);
        }
        assert!(Instant::now() < deadline, "no new process");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    s.kill9();
    eprintln!("crash 2: new process {new_id} {new_pids:?}");
    s.restart().await;
    let tagged = check_converged(&s, "fleet", 6, false).await;
    assert_eq!(
        tagged.get(&new_id),
        Some(&new_pids),
        "the process that ran at the crash was not adopted"
    );
    let events = s.events("fleet").await;
    assert!(
        kinds_for(&events, &new_id).contains(&"instance_adopted".to_string()),
        "{:?}",
        kinds_for(&events, &new_id)
    );

    // A clean stop leaves the instances running; the next start adopts them.
    let last_event = events.last().and_then(|e| e["id"].as_i64()).unwrap_or(0);
    s.stop().await;
    assert_eq!(
        s.tagged(),
        tagged,
        "instances must outlive a SIGTERM'd server"
    );
    s.restart().await;
    assert_eq!(
        check_converged(&s, "fleet", 6, false).await,
        tagged,
        "the restart must adopt, not replace"
    );
    let events = s
        .get(&format!("/v1/groups/fleet/events?after_id={last_event}"))
        .await;
    let events = events["events"].as_array().expect("events").clone();
    for id in tagged.keys() {
        assert_eq!(
            kinds_for(&events, id),
            ["instance_adopted"],
            "after the clean restart: {events:#?}"
        );
    }

    // Crash 3: kill -9 while the scale-in retires instances (draining or terminating):
    // the restart finishes the deletions.
    let before_scale_in = s.instances("fleet", false).await;
    // A slow request on every instance while the scale-in starts keeps the retiring ones
    // draining for up to the drain timeout: an idle instance's drain ends at once, and on
    // a loaded machine a whole retirement could fall between two polls below.
    let lb = s.load_balancer("fleet").await;
    let client = reqwest::Client::new();
    let slow: Vec<_> = (0..6)
        .map(|_| {
            let (client, url) = (client.clone(), format!("http://{lb}/work?ms=1500"));
            tokio::spawn(async move { client.get(url).send().await.map(|r| r.status()) })
        })
        .collect();
    eventually("a slow request on each instance", CONVERGE, || async {
        let status = s.get("/v1/groups/fleet/load_balancer").await;
        match status["in_flight"].as_u64() {
            Some(n) if n >= 6 => Ok(()),
            _ => Err(format!("{status}")),
        }
    })
    .await;
    s.cli_json(&["scale", "fleet", "2"]).await;
    let deadline = Instant::now() + CONVERGE;
    let retiring = loop {
        let list = s.instances("fleet", false).await;
        let retiring: Vec<Value> = list
            .into_iter()
            .filter(|i| i["status"] == "draining" || i["status"] == "terminating")
            .collect();
        if !retiring.is_empty() {
            break retiring;
        }
        assert!(Instant::now() < deadline, "no instance retired");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    s.kill9();
    slow.iter().for_each(|task| task.abort());
    eprintln!("crash 3: retiring {retiring:#?}");
    s.restart().await;
    let kept = check_converged(&s, "fleet", 2, true).await;
    let events = s.events("fleet").await;
    for inst in &retiring {
        let id = inst["id"].as_str().expect("id");
        assert!(!kept.contains_key(id), "retiring instance {id} still runs");
        assert_eq!(
            kinds_for(&events, id).last().map(String::as_str),
            Some("instance_terminated"),
            "{id}: {:?}",
            kinds_for(&events, id)
        );
    }
    // Scale-in retires the newest scaled-up instances first: the permanent one and
    // the oldest scaled-up one stay.
    let mut order: Vec<(bool, i64, String)> = before_scale_in
        .iter()
        .map(|i| {
            (
                i["lifecycle"] != "permanent",
                i["created_order"].as_i64().expect("created_order"),
                i["id"].as_str().expect("id").to_string(),
            )
        })
        .collect();
    order.sort();
    let expected: BTreeSet<String> = order.into_iter().take(2).map(|(_, _, id)| id).collect();
    assert_eq!(kept.keys().cloned().collect::<BTreeSet<_>>(), expected);

    // Deleting the group leaves no process behind.
    let deleting = s.cli_json(&["group", "delete", "fleet"]).await;
    assert_eq!(deleting["deleting"], true);
    eventually("the group to be deleted", CONVERGE, || async {
        let a = s
            .request(reqwest::Method::GET, "/v1/groups/fleet", None)
            .await;
        if a.status == 404 {
            Ok(())
        } else {
            Err(format!("{a:?}"))
        }
    })
    .await;
    assert_eq!(
        s.tagged(),
        BTreeMap::new(),
        "processes outlived their group"
    );
}

#[tokio::test]
async fn invalid_input_changes_nothing() {
    let s = Swell::start().await;
    let exe = common::SWELL;

    let bad_bounds = s.write(
        "bounds.yaml",
        &format!("name: bad\nmin: 3\nmax: 1\ntemplate:\n  command: [\"{exe}\", \"demo-app\", \"--port\", \"{{port}}\"]\n"),
    );
    let out = s.cli(&["group", "create", "-f", &bad_bounds]).await;
    assert!(!out.status.success(), "{out:#?}");
    assert!(
        out.stderr.contains("max: max (1) must be >= min (3)"),
        "the field and the rule: {out:#?}"
    );

    let unknown = s.write(
        "unknown.yaml",
        "name: bad\nmax: 3\ntemplate:\n  command: [app, '{port}']\nmaxx: 4\n",
    );
    let out = s.cli(&["group", "create", "-f", &unknown]).await;
    assert!(!out.status.success(), "{out:#?}");
    assert!(out.stderr.contains("maxx"), "the unknown field: {out:#?}");
    assert!(
        out.stderr.contains(" line ") && out.stderr.contains(" column "),
        "a line and a column: {out:#?}"
    );

    let problem = |a: &common::Answer, status: u16, field: &str| {
        assert_eq!(a.status, status, "{a:?}");
        assert_eq!(a.content_type, "application/problem+json", "{a:?}");
        assert_eq!(a.body["status"], status, "{a:?}");
        assert_eq!(a.body["field"], field, "{a:?}");
    };
    let post = |body: &'static str| s.request(reqwest::Method::POST, "/v1/groups", Some(body));
    let a = post(r#"{"name": "bad", "max": "three", "template": {"command": ["app"]}}"#).await;
    problem(&a, 400, "max");
    // Truncated JSON: a 400 problem document (its `field` is wrong, see
    // `malformed_json_names_the_body`).
    let a = post(r#"{"name": "bad", "max": 3, "template": {"command": ["app"]}"#).await;
    assert_eq!(a.status, 400, "{a:?}");
    assert_eq!(a.content_type, "application/problem+json", "{a:?}");
    assert!(
        a.body["rule"].as_str().is_some_and(|r| r.contains("EOF")),
        "{a:?}"
    );
    let a = post(r#"{"name": "bad", "min": 3, "max": 1, "template": {"command": ["app"]}}"#).await;
    problem(&a, 400, "max");
    assert_eq!(a.body["rule"], "max (1) must be >= min (3)", "{a:?}");
    let a = post(r#"{"name": "bad", "max": 3, "template": {"command": ["app"]}, "maxx": 1}"#).await;
    assert_eq!(a.status, 400, "{a:?}");
    assert!(
        a.body["rule"].as_str().unwrap_or_default().contains("maxx"),
        "{a:?}"
    );

    let a = s
        .request(reqwest::Method::GET, "/v1/groups/nope", None)
        .await;
    assert_eq!(a.status, 404, "{a:?}");
    assert_eq!(a.content_type, "application/problem+json", "{a:?}");
    let out = s.cli(&["scale", "nope", "2"]).await;
    assert!(!out.status.success(), "{out:#?}");
    assert!(out.stderr.contains("not found"), "{out:#?}");
    let out = s.cli(&["metrics", "history", "nope"]).await;
    assert!(!out.status.success(), "{out:#?}");
    assert!(out.stderr.contains("not found"), "{out:#?}");
    let history = |q: &str| {
        let path = format!("/v1/groups/nope/metrics/history?{q}");
        let s = &s;
        async move { s.request(reqwest::Method::GET, &path, None).await }
    };
    problem(&history("since=yesterday").await, 400, "since");
    let a = history("metric=cpuu").await;
    problem(&a, 400, "metric");
    assert!(
        a.body["rule"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown metric `cpuu`"),
        "{a:?}"
    );

    let list = s.cli_json(&["group", "list"]).await;
    assert_eq!(
        list,
        json!({ "groups": [] }),
        "bad input changed the stored state"
    );
    assert!(s.tagged().is_empty(), "bad input started processes");

    let a = s
        .request(reqwest::Method::GET, "/v1/openapi.json", None)
        .await;
    assert_eq!(a.status, 200);
    assert!(a.content_type.starts_with("application/json"), "{a:?}");
    assert!(a.body["openapi"].is_string(), "{}", a.body);
    assert!(a.body["paths"]["/v1/groups"].is_object(), "{}", a.body);
    assert!(
        a.body["paths"]["/v1/groups/{name}/metrics/history"].is_object(),
        "{}",
        a.body
    );
}

/// DESIGN.md: unknown fields are errors that give the line and column *of the field*
/// (serde-saphyr alone points at the enclosing mapping; `docs::parse` finds the key).
#[tokio::test]
async fn unknown_field_error_points_at_the_field() {
    let s = Swell::start().await;
    let unknown = s.write(
        "unknown.yaml",
        "name: bad\nmax: 3\ntemplate:\n  command: [app, '{port}']\nmaxx: 4\n",
    );
    let out = s.cli(&["group", "create", "-f", &unknown]).await;
    assert!(!out.status.success(), "{out:#?}");
    assert!(out.stderr.contains("line 5 column 1"), "{out:#?}");
}

/// A body that is not JSON at all has no field to name: the problem names `body`.
#[tokio::test]
async fn malformed_json_names_the_body() {
    let s = Swell::start().await;
    let a = s
        .request(
            reqwest::Method::POST,
            "/v1/groups",
            Some(r#"{"name": "bad", "max": 3"#),
        )
        .await;
    assert_eq!(a.status, 400, "{a:?}");
    assert_eq!(a.body["field"], "body", "{a:?}");
}

#[tokio::test]
async fn apply_is_declarative() {
    let s = Swell::start().await;
    let tenant = |b_max: u32| {
        json!({
            "tenant": "default",
            "groups": [group_doc("alpha", 1, 2, never_scale()), group_doc("beta", 1, b_max, never_scale())],
        })
    };
    // JSON is YAML: write the document as YAML-compatible JSON, then as real YAML.
    let file = s.write("tenant.yaml", &tenant(3).to_string());
    let applied = s.cli_json(&["apply", "-f", &file]).await;
    let names: Vec<&str> = applied
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    assert_eq!(names, ["alpha", "beta"]);
    let before = s.get("/v1/groups/beta").await;
    assert_eq!(before["spec"]["max"], 3);

    let file = s.write("tenant.yaml", &tenant(5).to_string());
    let out = s.cli(&["apply", "-f", &file]).await;
    assert!(out.status.success(), "{out:#?}");
    // alpha's document did not change: it is left alone (no write, no event).
    assert!(out.stderr.contains("group alpha unchanged"), "{out:#?}");
    assert!(out.stderr.contains("group beta updated"), "{out:#?}");

    let list = s.cli_json(&["group", "list"]).await;
    let groups = list["groups"].as_array().expect("groups");
    let mut names: Vec<&str> = groups.iter().filter_map(|g| g["name"].as_str()).collect();
    names.sort();
    assert_eq!(names, ["alpha", "beta"], "no duplicate");
    let beta = s.get("/v1/groups/beta").await;
    assert_eq!(beta["spec"]["max"], 5);
    assert_eq!(
        beta["created_at"], before["created_at"],
        "updated, not re-created"
    );
    let alpha = s.get("/v1/groups/alpha").await;
    assert_eq!(alpha["spec"]["max"], 2);
    let events = s.events("beta").await;
    assert_eq!(of_kind(&events, "group_created").len(), 1, "{events:#?}");
    assert_eq!(of_kind(&events, "group_updated").len(), 1, "{events:#?}");

    // A document with one bad group changes nothing, not even its good groups.
    let bad = json!({
        "groups": [group_doc("gamma", 1, 2, never_scale()), group_doc("delta", 3, 1, never_scale())],
    });
    let file = s.write("bad.yaml", &bad.to_string());
    let out = s.cli(&["apply", "-f", &file]).await;
    assert!(!out.status.success(), "{out:#?}");
    assert!(out.stderr.contains("delta"), "{out:#?}");
    assert!(
        out.stderr.contains("max (1) must be >= min (3)"),
        "{out:#?}"
    );
    let list = s.cli_json(&["group", "list"]).await;
    assert_eq!(list["groups"].as_array().map(Vec::len), Some(2), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume() {
    let s = Swell::start().await;
    let doc = group_doc("portal", 2, 2, never_scale());
    let file = s.write("portal.json", &doc.to_string());
    s.cli_json(&["group", "create", "-f", &file]).await;
    let running = wait_running(&s, "portal", 2).await;
    let id = running[0]["id"].as_str().expect("id").to_string();
    let pid: i32 = running[0]["native_id"]
        .as_str()
        .and_then(|p| p.parse().ok())
        .expect("a pid");
    assert_eq!(s.tagged().get(&id), Some(&vec![pid]));

    let paused = s.cli_json(&["instance", "pause", "portal", &id]).await;
    assert_eq!(paused["status"], "paused", "{paused}");
    assert_eq!(process_state(pid), Some('T'), "the process must be stopped");
    let g = s.get("/v1/groups/portal").await;
    assert_eq!(g["instances"]["paused"], 1, "{g}");
    assert_eq!(g["instances"]["running"], 1, "{g}");

    // Out of the load balancer: every request reaches the other instance.
    let lb = s.load_balancer("portal").await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("a client");
    for _ in 0..10 {
        let r = client
            .get(format!("http://{lb}/work?ms=1"))
            .send()
            .await
            .expect("the load balancer answers while an instance is paused");
        assert!(r.status().is_success(), "{r:?}");
    }
    // Still counted: the paused instance is not replaced.
    let list = s.instances("portal", true).await;
    assert_eq!(
        list.len(),
        2,
        "a paused instance must not be replaced: {list:#?}"
    );
    assert_eq!(
        s.instances("portal", false)
            .await
            .iter()
            .find(|i| i["id"] == id.as_str())
            .map(|i| i["status"].clone()),
        Some(json!("paused"))
    );

    let out = s.cli(&["instance", "pause", "portal", &id]).await;
    assert!(!out.status.success(), "pausing twice: {out:#?}");
    assert!(out.stderr.contains("must be running"), "{out:#?}");

    let resumed = s.cli_json(&["instance", "resume", "portal", &id]).await;
    assert_eq!(resumed["status"], "running", "{resumed}");
    let state = process_state(pid).expect("the process still runs");
    assert!(matches!(state, 'S' | 'R'), "state {state} after resume");
    assert_eq!(s.tagged().get(&id), Some(&vec![pid]), "same process");
    let events = s.events("portal").await;
    assert_eq!(
        kinds_for(&events, &id),
        ["instance_created", "instance_paused", "instance_resumed"],
        "{events:#?}"
    );
    wait_running(&s, "portal", 2).await;
}

/// What answered a request through a load balancer: the demo app names its instance.
async fn served_by(client: &reqwest::Client, lb: &str, ms: u64) -> Result<String, String> {
    let r = client
        .get(format!("http://{lb}/work?ms={ms}"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!("status {}", r.status()));
    }
    let body: Value = r.json().await.map_err(|e| e.to_string())?;
    body["instance"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("no instance in {body}"))
}

/// One request's outcome and how long it took.
type Timed = (Result<String, String>, Duration);

/// Seed 3's portal under traffic: pausing an instance that is serving requests takes it
/// out of the load balancer before its process stops, so no request meets a stopped
/// process (it would hang until the resume); resuming puts it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pause_under_load_loses_no_request() {
    let s = Swell::start().await;
    let doc = group_doc("busy", 2, 2, never_scale());
    let file = s.write("busy.json", &doc.to_string());
    s.cli_json(&["group", "create", "-f", &file]).await;
    let running = wait_running(&s, "busy", 2).await;
    let (a, b) = (
        running[0]["id"].as_str().expect("id").to_string(),
        running[1]["id"].as_str().expect("id").to_string(),
    );
    let lb = s.load_balancer("busy").await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("a client");

    // Long requests on both instances make the pause drain for longer than an
    // evaluation interval; light clients keep sending meanwhile and after.
    let stop = Arc::new(AtomicBool::new(false));
    let light = Arc::new(Mutex::new(Vec::<Timed>::new()));
    let mut heavy_tasks = Vec::new();
    for _ in 0..4 {
        let (client, lb) = (client.clone(), lb.clone());
        heavy_tasks.push(tokio::spawn(
            async move { served_by(&client, &lb, 2500).await },
        ));
    }
    let mut light_tasks = Vec::new();
    for _ in 0..6 {
        let (client, lb, light, stop) = (client.clone(), lb.clone(), light.clone(), stop.clone());
        light_tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                let r = served_by(&client, &lb, 2).await;
                light.lock().expect("results").push((r, start.elapsed()));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    let count = |light: &Arc<Mutex<Vec<Timed>>>| light.lock().expect("results").len();
    eventually("light requests to flow", CONVERGE, || async {
        if count(&light) >= 20 {
            Ok(())
        } else {
            Err(format!("{}", count(&light)))
        }
    })
    .await;
    let paused = s.cli_json(&["instance", "pause", "busy", &a]).await;
    assert_eq!(paused["status"], "paused");
    // `a` stays stopped for a while with traffic going on: a request sent to it would
    // hang for that long.
    let paused_at = Instant::now();
    let before = count(&light);
    eventually("traffic while `a` is paused", CONVERGE, || async {
        let n = count(&light);
        if n >= before + 100 && paused_at.elapsed() >= Duration::from_secs(3) {
            Ok(())
        } else {
            Err(format!("{} requests", n - before))
        }
    })
    .await;
    let resumed = s.cli_json(&["instance", "resume", "busy", &a]).await;
    assert_eq!(resumed["status"], "running");
    // Back in the load balancer: `a` answers again.
    eventually("`a` to serve again", CONVERGE, || async {
        let done = light.lock().expect("results");
        if done
            .iter()
            .rev()
            .take(20)
            .any(|(r, _)| r.as_deref() == Ok(a.as_str()))
        {
            Ok(())
        } else {
            Err(format!("{} requests", done.len()))
        }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for t in light_tasks {
        t.await.expect("a client task");
    }
    for t in heavy_tasks {
        let r = t.await.expect("a client task");
        assert!(r.is_ok(), "a long request failed: {r:?}");
    }
    let light = light.lock().expect("results").clone();
    let failed: Vec<&String> = light.iter().filter_map(|(r, _)| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed around the pause: {failed:?}",
        failed.len(),
        light.len()
    );
    // A 2 ms request takes milliseconds, even on a busy machine; one that met the
    // stopped process waited for the resume (seconds).
    let slow: Vec<&Timed> = light
        .iter()
        .filter(|(_, took)| *took > Duration::from_millis(1500))
        .collect();
    assert!(
        slow.is_empty(),
        "{} of {} light requests waited for the paused process: {slow:?}",
        slow.len(),
        light.len()
    );
    assert!(
        light[before..]
            .iter()
            .any(|(r, _)| r.as_deref() == Ok(b.as_str()))
    );
    wait_running(&s, "busy", 2).await;
}

/// DESIGN.md invariant 4 with requests in flight: a manual scale-in takes the retiring
/// instances out of the load balancer, lets their long requests finish (within the
/// drain timeout), and only then stops them; light traffic goes on meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_in_drains_requests_in_flight() {
    let s = Swell::start().await;
    let doc = group_doc("drain", 1, 3, never_scale());
    let file = s.write("drain.json", &doc.to_string());
    s.cli_json(&["group", "create", "-f", &file]).await;
    s.cli_json(&["scale", "drain", "3"]).await;
    let running = wait_running(&s, "drain", 3).await;
    let lb = s.load_balancer("drain").await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("a client");

    let stop = Arc::new(AtomicBool::new(false));
    let light = Arc::new(Mutex::new(Vec::<Timed>::new()));
    let mut light_tasks = Vec::new();
    for _ in 0..2 {
        let (client, lb, light, stop) = (client.clone(), lb.clone(), light.clone(), stop.clone());
        light_tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                let r = served_by(&client, &lb, 0).await;
                light.lock().expect("results").push((r, start.elapsed()));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    // Six long requests: two on each instance (round robin).
    let mut long = Vec::new();
    for _ in 0..6 {
        let (client, lb) = (client.clone(), lb.clone());
        long.push(tokio::spawn(async move {
            let start = Instant::now();
            (served_by(&client, &lb, 1200).await, start.elapsed())
        }));
    }
    eventually("long requests in flight", CONVERGE, || async {
        let n = light.lock().expect("results").len();
        if n >= 10 { Ok(()) } else { Err(format!("{n}")) }
    })
    .await;
    let scaled = s.cli_json(&["scale", "drain", "1"]).await;
    assert_eq!(scaled["desired_capacity"], 1);
    let kept = wait_running(&s, "drain", 1).await;
    stop.store(true, Ordering::Relaxed);
    for t in light_tasks {
        t.await.expect("a client task");
    }
    let mut served_by_retired = 0;
    for t in long {
        let (r, took) = t.await.expect("a client task");
        let id = r.unwrap_or_else(|e| panic!("a long request failed during the scale-in: {e}"));
        assert!(took >= Duration::from_millis(1200), "{took:?}");
        if id != kept[0]["id"] {
            served_by_retired += 1;
        }
    }
    assert!(
        served_by_retired > 0,
        "no long request was in flight on a retired instance"
    );
    let light = light.lock().expect("results").clone();
    let failed: Vec<&String> = light.iter().filter_map(|(r, _)| r.as_ref().err()).collect();
    assert!(failed.is_empty(), "{failed:?}");

    // Each retired instance drained before it was terminated.
    let events = s.events("drain").await;
    let retired: BTreeSet<String> = ids(&running).difference(&ids(&kept)).cloned().collect();
    assert_eq!(retired.len(), 2);
    for id in &retired {
        let kinds = kinds_for(&events, id);
        let drained = kinds.iter().position(|k| k == "instance_draining");
        let terminated = kinds.iter().position(|k| k == "instance_terminated");
        assert!(
            matches!((drained, terminated), (Some(d), Some(t)) if d < t),
            "instance {id}: {kinds:?}"
        );
    }
    assert_eq!(
        s.tagged().keys().cloned().collect::<BTreeSet<_>>(),
        ids(&kept)
    );
}
