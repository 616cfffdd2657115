//! The metric history and exports over real HTTP, a real SQLite file and real child
//! processes: a `threshold` group (whose policy keeps no load history) still has a
//! chart series with its thresholds; `?since=` filters; the CSV answers, parsed back
//! with the `csv` crate, equal the JSON ones; bad queries are 400 problems naming
//! the parameter, unknown instances 404.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};
use swell_server::{Server, ServerConfig};

const ADMIN_PASSWORD: &str = "metric-history-admin";

async fn start(dir: &Path) -> (Server, String) {
    let server = Server::start(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        admin_password: Some(swell_server::secrets::SecretString::new(ADMIN_PASSWORD)),
        // The group here samples every 100 ms, below the server's 1 s default floor.
        min_interval: Duration::from_millis(100),
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let url = format!("http://{}", server.addr());
    (server, url)
}

/// A client logged in as the bootstrap admin on `default`.
async fn login(url: &str) -> reqwest::Client {
    let answer: Value = reqwest::Client::new()
        .post(format!("{url}/v1/auth/tokens"))
        .json(&json!({"user": "admin", "password": ADMIN_PASSWORD, "tenant": "default"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = answer["token"].as_str().expect("a token").to_string();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// Kills every process this server's data directory tagged (even when a test fails).
struct Cleanup(std::path::PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let owner = format!("SWELL_OWNER={}", self.0.display());
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let env = std::fs::read(entry.path().join("environ")).unwrap_or_default();
            if env.split(|b| *b == 0).any(|v| v == owner.as_bytes()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

struct Got {
    status: u16,
    content_type: String,
    text: String,
}

async fn get(http: &reqwest::Client, url: &str) -> Got {
    let r = http.get(url).send().await.expect("the API answers");
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = r.text().await.unwrap_or_default();
    Got {
        status,
        content_type,
        text,
    }
}

async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    let g = get(http, url).await;
    assert_eq!(g.status, 200, "{url}: {}", g.text);
    assert_eq!(g.content_type, "application/json", "{url}");
    serde_json::from_str(&g.text).expect("JSON")
}

/// The CSV answer of `url`, parsed with the `csv` crate: the header and the rows.
async fn get_csv(http: &reqwest::Client, url: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let g = get(http, url).await;
    assert_eq!(g.status, 200, "{url}: {}", g.text);
    assert_eq!(g.content_type, "text/csv; charset=utf-8", "{url}");
    let mut reader = csv::Reader::from_reader(g.text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .expect("a CSV header")
        .iter()
        .map(str::to_string)
        .collect();
    let rows = reader
        .records()
        .map(|r| r.expect("a CSV row").iter().map(str::to_string).collect())
        .collect();
    (header, rows)
}

/// A number of a CSV cell ("" is none).
fn num(cell: &str) -> Option<f64> {
    (!cell.is_empty()).then(|| cell.parse().expect("a number"))
}

/// The CSV rows and JSON points of the same time (the first cell, `at`), in order.
fn same_times<'a>(
    rows: &'a [Vec<String>],
    points: &'a [Value],
) -> Vec<(&'a Vec<String>, &'a Value)> {
    rows.iter()
        .filter_map(|row| {
            points
                .iter()
                .find(|p| p["at"].as_str() == Some(row[0].as_str()))
                .map(|p| (row, p))
        })
        .collect()
}

/// Polls `check` (real processes and a real sampling loop) until it answers, or fails
/// after a minute saying what was last seen.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) if Instant::now() > deadline => panic!("{what}: never; last {last}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_threshold_group_has_a_chart_series_and_its_csv_equals_its_json() {
    let dir = tempfile::tempdir().unwrap();
    let data = std::fs::canonicalize(dir.path()).unwrap();
    let _cleanup = Cleanup(data.clone());
    let (server, url) = start(&data).await;
    let http = login(&url).await;

    // Two `sleep` processes; the thresholds never fire (the floor is 2).
    let group = json!({
        "name": "web",
        "template": {"command": ["sleep", "1000"]},
        "min": 2, "max": 4, "desired_capacity": 2,
        "evaluation_interval": "100ms", "metrics_interval": "100ms",
        "policies": [{"type": "threshold", "metric": "cpu",
                      "scale_out_above": 1000.0, "scale_in_below": 0.5}]
    });
    let r = http
        .post(format!("{url}/v1/groups"))
        .json(&group)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let base = format!("{url}/v1/groups/web");

    // A series of points with both instances running, each sampled for cpu.
    let doc = eventually("eight points with two running", || async {
        let doc = get_json(&http, &format!("{base}/metrics")).await;
        let full = doc["points"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["running"] == 2 && p["value"].is_number())
            .count();
        if full >= 8 {
            Ok(doc)
        } else {
            Err(doc.to_string())
        }
    })
    .await;
    assert_eq!(doc["group"], "web");
    assert_eq!(doc["metric"], "cpu");
    assert_eq!(doc["interval_seconds"], 0.1);
    assert_eq!(
        doc["lines"],
        json!([
            {"policy": "threshold", "metric": "cpu", "kind": "scale_out_above", "value": 1000.0},
            {"policy": "threshold", "metric": "cpu", "kind": "scale_in_below", "value": 0.5},
        ])
    );
    let points = doc["points"].as_array().unwrap();
    for p in points {
        assert_eq!(p["desired_capacity"], 2, "{p}");
        if let Some(v) = p["value"].as_f64() {
            assert_eq!(p["metrics"]["cpu"].as_f64(), Some(v), "{p}");
        }
    }
    let ats: Vec<&str> = points.iter().map(|p| p["at"].as_str().unwrap()).collect();
    // Compared as times: the text's fraction has as many digits as it needs ("11.9Z"
    // comes before "11.999Z" in time, after it as text).
    let times: Vec<_> = ats
        .iter()
        .map(|at| swell_server::clock::parse_rfc3339(at).unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] < w[1]),
        "oldest first: {ats:?}"
    );
    // The threshold policy keeps no load history: the chart's series is from the ring.
    let history = get_json(&http, &format!("{base}/metrics/history")).await;
    assert_eq!(history["summaries"], json!([]), "{history}");

    // `since`: the points at or after it.
    let since = ats[2];
    let from_third = get_json(&http, &format!("{base}/metrics?since={since}")).await;
    let got: Vec<&str> = from_third["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["at"].as_str().unwrap())
        .collect();
    assert_eq!(got[..ats.len() - 2], ats[2..], "since={since}");

    // The CSV answer equals the JSON one, point by point (the ring moves on between
    // the two calls: the points of both are compared, at least five of them).
    let json_now = get_json(&http, &format!("{base}/metrics?since={since}")).await;
    let (header, rows) = get_csv(&http, &format!("{base}/metrics?since={since}&format=csv")).await;
    assert_eq!(header[..3], ["at", "running", "desired_capacity"]);
    let pairs = same_times(&rows, json_now["points"].as_array().unwrap());
    assert!(pairs.len() >= 5, "{} points in both", pairs.len());
    for (row, p) in pairs {
        assert_eq!(row[0], p["at"].as_str().unwrap());
        assert_eq!(row[1], p["running"].to_string());
        assert_eq!(row[2], p["desired_capacity"].to_string());
        let mut from_csv = BTreeMap::new();
        for (name, cell) in header[3..].iter().zip(&row[3..]) {
            if let Some(v) = num(cell) {
                from_csv.insert(name.clone(), v);
            }
        }
        let from_json: BTreeMap<String, f64> =
            serde_json::from_value(p["metrics"].clone()).unwrap();
        assert_eq!(from_csv, from_json, "{row:?} vs {p}");
    }

    // Each instance: one point per interval, CPU and memory, JSON equal to CSV.
    let list = get_json(&http, &format!("{base}/instances")).await;
    let ids: Vec<String> = list["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2);
    for id in &ids {
        let one = eventually("three instance points", || async {
            let doc = get_json(&http, &format!("{base}/instances/{id}/metrics")).await;
            if doc["points"].as_array().unwrap().len() >= 3 {
                Ok(doc)
            } else {
                Err(doc.to_string())
            }
        })
        .await;
        assert_eq!(one["group"], "web");
        assert_eq!(one["instance_id"], id.as_str());
        let first = one["points"][0]["at"].as_str().unwrap().to_string();
        let (header, rows) = get_csv(
            &http,
            &format!("{base}/instances/{id}/metrics?since={first}&format=csv"),
        )
        .await;
        assert_eq!(header, ["at", "cpu_percent", "memory_mb"]);
        let pairs = same_times(&rows, one["points"].as_array().unwrap());
        assert!(pairs.len() >= 2, "{} points in both", pairs.len());
        for (row, p) in pairs {
            assert_eq!(row[0], p["at"].as_str().unwrap());
            assert_eq!(num(&row[1]), p["cpu_percent"].as_f64(), "{row:?} vs {p}");
            assert_eq!(num(&row[2]), p["memory_mb"].as_f64(), "{row:?} vs {p}");
            // `sleep` holds some memory: a real reading, not a placeholder.
            assert!(p["memory_mb"].as_f64().unwrap() > 0.0, "{p}");
        }
    }

    // Events as CSV: the same events as the JSON answer, cause over columns.
    let r = http
        .put(format!("{base}/desired_capacity"))
        .json(&json!({"desired_capacity": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let events = get_json(&http, &format!("{base}/events")).await;
    let (header, rows) = get_csv(&http, &format!("{base}/events?format=csv")).await;
    assert_eq!(
        header,
        [
            "id",
            "at",
            "group",
            "kind",
            "instance_id",
            "policy",
            "metric",
            "value",
            "threshold",
            "before",
            "after",
            "reason",
            "message"
        ]
    );
    let events = events["events"].as_array().unwrap();
    assert!(
        rows.len() >= events.len() && events.len() >= 3,
        "{events:?}"
    );
    for (row, e) in rows.iter().zip(events) {
        assert_eq!(row[0], e["id"].to_string());
        assert_eq!(row[1], e["at"].as_str().unwrap());
        assert_eq!(row[2], "web");
        assert_eq!(row[3], e["kind"].as_str().unwrap());
        assert_eq!(row[4], e["instance_id"].as_str().unwrap_or_default());
        assert_eq!(row[5], e["cause"]["policy"].as_str().unwrap_or_default());
        assert_eq!(num(&row[9]), e["cause"]["before"].as_f64());
        assert_eq!(num(&row[10]), e["cause"]["after"].as_f64());
        assert_eq!(row[12], e["message"].as_str().unwrap());
    }
    let manual = rows
        .iter()
        .find(|r| r[5] == "manual")
        .expect("the manual change");
    assert_eq!(manual[9..12], ["2", "3", "set by a user"]);

    // Bad queries: 400 naming the parameter; unknown objects: 404. Nothing else answers.
    for (path, field) in [
        (format!("{base}/metrics?format=xml"), "format"),
        (format!("{base}/metrics?since=yesterday"), "since"),
        (
            format!("{base}/instances/{}/metrics?format=pdf", ids[0]),
            "format",
        ),
        (format!("{base}/events?format=tsv"), "format"),
    ] {
        let g = get(&http, &path).await;
        assert_eq!(g.status, 400, "{path}: {}", g.text);
        let problem: Value = serde_json::from_str(&g.text).unwrap();
        assert_eq!(problem["field"], field, "{path}: {problem}");
    }
    for path in [
        format!("{base}/instances/nope/metrics"),
        format!("{url}/v1/groups/nope/metrics"),
        format!("{url}/v1/groups/nope/instances/{}/metrics", ids[0]),
    ] {
        let g = get(&http, &path).await;
        assert_eq!(g.status, 404, "{path}: {}", g.text);
    }

    server.shutdown().await;
}

/// The group's and instance's points as `(at, whole point)`, oldest first.
fn points_of(doc: &Value) -> Vec<(String, Value)> {
    doc["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["at"].as_str().unwrap().to_string(), p.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_survives_a_restart_and_until_and_limit_filter_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = std::fs::canonicalize(dir.path()).unwrap();
    let _cleanup = Cleanup(data.clone());
    let (server, url) = start(&data).await;
    let http = login(&url).await;
    let group = json!({
        "name": "web",
        "template": {"command": ["sleep", "1000"]},
        "min": 1, "max": 2, "desired_capacity": 1,
        "evaluation_interval": "100ms", "metrics_interval": "100ms",
        "policies": [{"type": "threshold", "metric": "cpu",
                      "scale_out_above": 1000.0, "scale_in_below": 0.5}]
    });
    let r = http
        .post(format!("{url}/v1/groups"))
        .json(&group)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let list = eventually("one instance", || async {
        let list = get_json(&http, &format!("{url}/v1/groups/web/instances")).await;
        match list["instances"].as_array().map(Vec::len) {
            Some(1) => Ok(list),
            _ => Err(list.to_string()),
        }
    })
    .await;
    let id = list["instances"][0]["id"].as_str().unwrap().to_string();
    let instance_url = format!("{url}/v1/groups/web/instances/{id}/metrics");
    let before = eventually("four instance points", || async {
        let doc = get_json(&http, &instance_url).await;
        if doc["points"].as_array().unwrap().len() >= 4 {
            Ok(doc)
        } else {
            Err(doc.to_string())
        }
    })
    .await;
    let group_before = get_json(&http, &format!("{url}/v1/groups/web/metrics")).await;
    server.shutdown().await;

    // A new server on the same data directory: the points from before are there.
    let (server, url) = start(&data).await;
    let http = login(&url).await;
    let base = format!("{url}/v1/groups/web");
    let instance_url = format!("{base}/instances/{id}/metrics");
    let after = points_of(&get_json(&http, &instance_url).await);
    let kept = points_of(&before);
    assert!(kept.len() >= 4);
    assert_eq!(
        after[..kept.len()],
        kept[..],
        "instance points after the restart"
    );
    let group_after = points_of(&get_json(&http, &format!("{base}/metrics")).await);
    let group_kept = points_of(&group_before);
    assert!(group_kept.len() >= 4, "{group_before}");
    assert_eq!(group_after[..group_kept.len()], group_kept[..]);

    // `until` (exclusive) and `limit` (the newest): the second and third point.
    let third = &kept[2].0;
    let doc = get_json(&http, &format!("{instance_url}?until={third}&limit=1")).await;
    assert_eq!(points_of(&doc), vec![kept[1].clone()]);
    let (_, rows) = get_csv(
        &http,
        &format!(
            "{instance_url}?since={}&until={third}&format=csv",
            kept[0].0
        ),
    )
    .await;
    let ats: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(ats, [kept[0].0.as_str(), kept[1].0.as_str()]);
    // Bad limits and times are 400s naming the parameter.
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=100001", "limit"),
        ("until=yesterday", "until"),
    ] {
        let got = get(&http, &format!("{base}/metrics?{query}")).await;
        assert_eq!(got.status, 400, "{query}: {}", got.text);
        assert!(got.text.contains(field), "{query}: {}", got.text);
    }
    server.shutdown().await;
}
