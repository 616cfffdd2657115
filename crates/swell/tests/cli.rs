//! The CLI's habits against a real `swell serve`: one output convention (`-o
//! table|wide|json|yaml|csv`, `--no-headers`) on every listing command, read back with
//! real parsers; `--wait` on scale, create, apply and delete; `swell events --follow`.

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

/// The structure of a document: objects' keys (recursively) and the shape of an
/// array's first element; scalars are only `_` (values such as CPU change between two
/// calls, structure does not).
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(a) => Value::Array(a.first().map(shape).into_iter().collect()),
        _ => Value::from("_"),
    }
}

/// The header cells of an aligned table (columns are separated by 3 spaces or more).
fn table_headers(text: &str) -> Vec<String> {
    let first = text.lines().next().unwrap_or_default();
    first
        .split("   ")
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(String::from)
        .collect()
}

/// One listing command: its arguments, where the listed items are in its JSON (`""`:
/// the answer is one item), and a header its table has.
struct Listing {
    args: Vec<String>,
    items: &'static str,
    header: &'static str,
    /// The list grows between two calls (a metric history gains a point per metrics
    /// interval): a later call has at least the rows of an earlier one.
    grows: bool,
}

impl Listing {
    fn new(args: &[&str], items: &'static str, header: &'static str) -> Listing {
        Listing {
            args: args.iter().map(|a| a.to_string()).collect(),
            items,
            header,
            grows: false,
        }
    }

    fn growing(args: &[&str], items: &'static str, header: &'static str) -> Listing {
        Listing {
            grows: true,
            ..Listing::new(args, items, header)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listing_command_prints_every_format() {
    let s = Swell::start().await;
    let doc = s.write(
        "web.json",
        &group_doc("web", 1, 3, never_scale()).to_string(),
    );
    s.cli_json(&["group", "create", "-f", &doc]).await;
    let running = wait_running(&s, "web", 1, Duration::from_secs(30)).await;
    let id = running[0]["id"].as_str().expect("an id").to_string();
    s.cli_json(&["api-key", "create", "ci", "--role", "viewer"])
        .await;
    s.cli_json(&["owner", "add", "web", &id, "admin"]).await;
    // The metric history listings below have a row to show.
    eventually(
        "a metric point of the instance",
        Duration::from_secs(30),
        || async {
            let m = s.cli_json(&["metrics", "web", "--instance", &id]).await;
            match m["points"].as_array() {
                Some(p) if !p.is_empty() => Ok(()),
                _ => Err(m.to_string()),
            }
        },
    )
    .await;

    let listings = [
        Listing::new(&["group", "list"], "/groups", "NAME"),
        Listing::new(&["group", "show", "web"], "", "DESIRED"),
        Listing::new(
            &["instance", "list", "web", "--all"],
            "/instances",
            "STATUS",
        ),
        Listing::new(&["events", "web"], "/events", "KIND"),
        Listing::new(&["metrics", "history", "web"], "/summaries", "METRIC"),
        Listing::growing(&["metrics", "web"], "/points", "RUNNING"),
        Listing::growing(
            &["metrics", "web", "--instance", &id],
            "/points",
            "CPU_PERCENT",
        ),
        Listing::new(&["tenant", "list"], "/tenants", "NAME"),
        Listing::new(&["user", "list"], "/users", "ROLE"),
        Listing::new(&["api-key", "list"], "/keys", "ROLE"),
        Listing::new(&["owner", "list", "web", &id], "/owners", "USER"),
        Listing::new(&["audit"], "/entries", "ACTION"),
        Listing::new(&["token", "whoami"], "", "PRINCIPAL"),
        Listing::new(&["quota", "show"], "", "MAX INSTANCES"),
    ];
    for l in &listings {
        let run = |format: &'static str, extra: &'static [&'static str]| {
            let mut args = vec!["-o", format];
            args.extend_from_slice(extra);
            args.extend(l.args.iter().map(String::as_str));
            let s = &s;
            async move {
                let out = s.cli(&args).await;
                assert!(out.status.success(), "{args:?}: {out:#?}");
                out.stdout
            }
        };
        let what = l.args.join(" ");
        let json: Value = serde_json::from_str(&run("json", &[]).await)
            .unwrap_or_else(|e| panic!("{what} -o json: {e}"));
        let yaml: Value = serde_saphyr::from_str(&run("yaml", &[]).await)
            .unwrap_or_else(|e| panic!("{what} -o yaml: {e}"));
        assert_eq!(shape(&json), shape(&yaml), "{what}: json and yaml differ");
        let rows = match l.items {
            _ if l.grows => {
                let rows = json
                    .pointer(l.items)
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                assert!(rows > 0, "{what}: {json}");
                rows
            }
            "" => 1,
            pointer => json
                .pointer(pointer)
                .and_then(Value::as_array)
                .unwrap_or_else(|| panic!("{what}: no {pointer} in {json}"))
                .len(),
        };

        let table = run("table", &[]).await;
        assert!(
            !table.contains(['│', '─', '┌', '╭']),
            "{what}: box drawing\n{table}"
        );
        let narrow = table_headers(&table);
        assert!(narrow.iter().any(|h| h == l.header), "{what}: {narrow:?}");
        let wide = run("wide", &[]).await;
        let wide_headers = table_headers(&wide);
        assert!(
            wide_headers.len() >= narrow.len() && wide_headers[..narrow.len()] == narrow[..],
            "{what}: wide {wide_headers:?} does not extend {narrow:?}"
        );
        let bare = run("table", &["--no-headers"]).await;
        if l.grows {
            assert!(
                bare.lines().count() + 1 >= table.lines().count(),
                "{what}: --no-headers\n{bare}"
            );
            assert!(!bare.starts_with("TIME"), "{what}: --no-headers\n{bare}");
        } else {
            assert_eq!(
                bare.lines().count() + 1,
                table.lines().count(),
                "{what}: --no-headers\n{bare}"
            );
        }

        let csv_text = run("csv", &[]).await;
        let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
        let headers = reader.headers().expect("a CSV header").clone();
        let records: Vec<csv::StringRecord> = reader
            .records()
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{what} -o csv: {e}\n{csv_text}"));
        if what != "audit" {
            // The audit export is the server's (lower-case field names); the others
            // have the wide table's columns.
            assert_eq!(
                headers.iter().collect::<Vec<_>>(),
                wide_headers,
                "{what}: csv columns"
            );
            if l.grows {
                assert!(records.len() >= rows, "{what}: csv rows\n{csv_text}");
            } else {
                assert_eq!(records.len(), rows, "{what}: csv rows\n{csv_text}");
            }
        } else {
            assert!(records.len() >= rows, "{what}: csv rows\n{csv_text}");
        }
    }

    // A table row per item, in the JSON's order.
    let list = s.cli(&["--no-headers", "group", "list"]).await.stdout;
    assert!(list.starts_with("web "), "{list}");
    // The old spelling of audit's format still works.
    let old = s.cli(&["audit", "--format", "json"]).await.json();
    assert!(
        old["entries"].as_array().is_some_and(|e| !e.is_empty()),
        "{old}"
    );
}

#[test]
fn sim_prints_every_format() {
    let trace = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../traces/wikipedia_en_2016-01_1h.csv"
    );
    let sim = |args: &[&str]| {
        let out = std::process::Command::new(SWELL)
            .args(["sim", "--trace", trace, "--policy", "hpa"])
            .args(args)
            .output()
            .expect("swell runs");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).expect("UTF-8")
    };
    let json: Value = serde_json::from_str(&sim(&["-o", "json"])).expect("JSON");
    assert_eq!(json["policy"], "hpa");
    let alias: Value = serde_json::from_str(&sim(&["--json"])).expect("JSON");
    assert_eq!(alias, json);
    let yaml: Value = serde_saphyr::from_str(&sim(&["-o", "yaml"])).expect("YAML");
    assert_eq!(yaml["scaling_actions"], json["scaling_actions"]);
    let csv_text = sim(&["-o", "csv"]);
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let headers = reader.headers().expect("a header").clone();
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("a row")).collect();
    assert_eq!(rows.len(), 1);
    let at = headers
        .iter()
        .position(|h| h == "instance_hours")
        .expect("instance_hours");
    assert_eq!(
        rows[0][at].parse::<f64>().ok(),
        json["instance_hours"].as_f64()
    );
    assert!(sim(&[]).contains("instance-hours"));
    // A command that prints only a table or JSON refuses the other formats rather than
    // ignoring them.
    let refused = std::process::Command::new(SWELL)
        .args(["bench", "policies", "-o", "yaml"])
        .output()
        .expect("swell runs");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("a table or JSON (-o json), not yaml"),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_returns_when_ready_or_fails_at_the_timeout() {
    let s = Swell::start().await;
    let doc = s.write(
        "web.json",
        &group_doc("web", 1, 3, never_scale()).to_string(),
    );
    let created = s
        .cli_json(&["group", "create", "-f", &doc, "--wait=60s"])
        .await;
    assert_eq!(created["instances"]["running"], 1, "{created}");

    let scaled = s.cli_json(&["scale", "web", "2", "--wait"]).await;
    assert_eq!(
        (
            &scaled["desired_capacity"],
            &scaled["instances"]["running"],
            &scaled["instances"]["pending"]
        ),
        (&Value::from(2), &Value::from(2), &Value::from(0)),
        "{scaled}"
    );

    let late = s.cli(&["scale", "web", "3", "--wait=1ms"]).await;
    assert!(!late.status.success(), "{late:#?}");
    assert!(
        late.stderr
            .contains("timed out after 1ms waiting: web: 2 of 3 ready"),
        "{late:#?}"
    );

    let tenant = s.write(
        "tenant.json",
        &serde_json::json!({
            "tenant": "default",
            "groups": [group_doc("api", 2, 2, never_scale())],
        })
        .to_string(),
    );
    let applied = s
        .cli_json(&["apply", "-f", &tenant, "--prune", "--wait=60s"])
        .await;
    let groups = applied.as_array().expect("the applied groups");
    assert_eq!(groups.len(), 1, "{applied}");
    assert_eq!(groups[0]["instances"]["running"], 2, "{applied}");
    // --prune deleted web, and --wait waited until it was gone.
    let gone = s.cli(&["group", "show", "web"]).await;
    assert!(gone.stderr.contains("404"), "{gone:#?}");

    s.cli_json(&["group", "delete", "api", "--wait=60s"]).await;
    let gone = s.cli(&["group", "show", "api"]).await;
    assert!(gone.stderr.contains("404"), "{gone:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_follow_prints_new_events_until_the_group_is_gone() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let s = Swell::start().await;
    let doc = s.write(
        "web.json",
        &group_doc("web", 1, 3, never_scale()).to_string(),
    );
    s.cli_json(&["group", "create", "-f", &doc, "--wait=60s"])
        .await;
    let mut follow = tokio::process::Command::new(SWELL)
        .args(["--url", &s.url, "-o", "json", "events", "web", "--follow"])
        .env("SWELL_TOKEN", &s.token)
        .env("XDG_CONFIG_HOME", s.dir.path().join("config"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("swell events --follow");
    let mut lines = BufReader::new(follow.stdout.take().expect("stdout")).lines();
    let mut next = async || -> Value {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("an event within 30s")
            .expect("reading")
            .expect("a line");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    };
    // What happened before, one object a line.
    let mut seen = vec![next().await];
    assert_eq!(seen[0]["kind"], "group_created", "{}", seen[0]);
    // Then what happens while following.
    s.cli_json(&["scale", "web", "2"]).await;
    while seen.last().map(|e| &e["kind"]) != Some(&Value::from("desired_capacity_set")) {
        seen.push(next().await);
    }
    let ids: Vec<i64> = seen.iter().filter_map(|e| e["id"].as_i64()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "each event once, in order: {ids:?}"
    );
    // The follow ends by itself once the group is gone.
    s.cli_json(&["group", "delete", "web", "--wait=60s"]).await;
    let status = tokio::time::timeout(Duration::from_secs(30), follow.wait())
        .await
        .expect("the follow ends once the group is gone")
        .expect("waiting");
    assert!(status.success(), "{status}");
}

#[test]
fn completions_load_in_their_shell_and_man_pages_are_written() {
    let swell = |args: &[&str]| {
        let out = std::process::Command::new(SWELL)
            .args(args)
            .output()
            .expect("swell runs");
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).expect("UTF-8")
    };
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let script = swell(&["completion", shell]);
        assert!(
            script.contains("swell") && script.contains("group"),
            "{shell}"
        );
    }
    // bash loads it and knows how to complete `swell`.
    let dir = tempfile::tempdir().expect("a directory");
    let script = dir.path().join("swell.bash");
    std::fs::write(&script, swell(&["completion", "bash"])).expect("written");
    let loaded = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p swell", script.display()))
        .output()
        .expect("bash runs");
    let said = String::from_utf8_lossy(&loaded.stdout);
    assert!(
        loaded.status.success() && said.contains("swell"),
        "{loaded:?}"
    );

    let man = dir.path().join("man");
    swell(&["man", "--dir", man.to_str().expect("UTF-8")]);
    for page in [
        "swell.1",
        "swell-group-list.1",
        "swell-scale.1",
        "swell-context-use.1",
    ] {
        let text =
            std::fs::read_to_string(man.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page}: {text}"
        );
    }
    let scale = std::fs::read_to_string(man.join("swell-scale.1")).expect("swell-scale.1");
    assert!(scale.contains("wait"), "{scale}");
}
