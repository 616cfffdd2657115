//! The `prometheus` metric source end to end: a real Prometheus (Debian's `prometheus`
//! package) started on loopback with its own config, scraping a tiny exporter this test
//! serves, and the server's group scaling on the value its query gives. A query
//! Prometheus refuses shows in the worker's status.

mod test_prometheus;

use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use swell_server::{Server, ServerConfig};
use test_prometheus::TestPrometheus;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ADMIN_PASSWORD: &str = "prometheus-source-test-admin";

/// Serves `/metrics` with `swell_test_load{group="lab"} <value>`.
async fn exporter(value: Arc<AtomicU64>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let value = f64::from_bits(value.load(Ordering::SeqCst));
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut read = 0;
                while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf[read..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read += n,
                    }
                    if read == buf.len() {
                        return;
                    }
                }
                let body = format!(
                    "# HELP swell_test_load A test load.\n# TYPE swell_test_load gauge\n\
                     swell_test_load{{group=\"lab\"}} {value}\nswell_test_load{{group=\"other\"}} 1\n"
                );
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(body.as_bytes()).await;
            });
        }
    });
    port
}

/// Polls `check` until it gives a value, for up to `secs` seconds.
async fn until<T, F: Future<Output = Option<T>>>(
    secs: u64,
    what: &str,
    check: impl Fn() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {secs}s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn get(http: &reqwest::Client, url: &str) -> Option<Value> {
    http.get(url).send().await.ok()?.json().await.ok()
}

#[tokio::test]
async fn a_prometheus_query_drives_the_policy_and_refusals_show() {
    let dir = tempfile::tempdir().unwrap();
    let data = std::fs::canonicalize(dir.path()).unwrap();
    let load = Arc::new(AtomicU64::new(85.0f64.to_bits()));
    let target = exporter(load.clone()).await;
    let prom_dir = data.join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let prom = TestPrometheus::start(&prom_dir, ([127, 0, 0, 1], target).into(), None);
    let plain = reqwest::Client::new();
    // Ready once it has scraped the exporter.
    until(60, "Prometheus scraping the exporter", || async {
        let q = get(
            &plain,
            &format!("{}/api/v1/query?query=swell_test_load", prom.url),
        )
        .await?;
        (q["data"]["result"].as_array()?.len() == 2).then_some(())
    })
    .await;

    let server = Server::start(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data.clone(),
        stop_instances_on_exit: true,
        admin_password: Some(swell_server::secrets::SecretString::new(ADMIN_PASSWORD)),
        // Groups here tick every 300 ms, below the server's 1 s default floor.
        min_interval: std::time::Duration::from_millis(300),
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let url = format!("http://{}", server.addr());
    let answer: Value = plain
        .post(format!("{url}/v1/auth/tokens"))
        .json(&json!({"user": "admin", "password": ADMIN_PASSWORD, "tenant": "default"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", answer["token"].as_str().unwrap())
            .parse()
            .unwrap(),
    );
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    let group = |name: &str, query: &str| {
        json!({
            "name": name,
            "template": {"command": ["sleep", "1000"]},
            "min": 1, "max": 2, "cooldown": "0s",
            "evaluation_interval": "300ms", "metrics_interval": "300ms",
            "policies": [{"type": "threshold", "metric": "cpu", "scale_out_above": 20,
                          "evaluation_period": "1s"}],
            "metric_sources": [{"type": "prometheus", "url": prom.url.clone(),
                                "query": query, "metric": "cpu", "timeout": "5s"}]
        })
    };
    for g in [
        group("lab", r#"avg(swell_test_load{group="{group}"})"#),
        group("broken", "avg(swell_test_load{"),
    ] {
        let r = http
            .post(format!("{url}/v1/groups"))
            .json(&g)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }

    // The `lab` series says 85 (the `other` group's 1 is not in its query): the
    // sleeping processes scale out on it.
    let out = until(60, "a scale-out on the queried cpu", || async {
        let v = get(&http, &format!("{url}/v1/groups/lab/events")).await?;
        v["events"]
            .as_array()?
            .iter()
            .find(|e| e["kind"] == "scale_out")
            .cloned()
    })
    .await;
    assert_eq!(out["cause"]["metric"], "cpu", "{out}");
    assert_eq!(out["cause"]["value"].as_f64(), Some(85.0), "{out}");

    // A query Prometheus refuses: its error, in the worker's status.
    let status = until(30, "the refused query in the status", || async {
        let h = get(&http, &format!("{url}/v1/health")).await?;
        h["workers"].as_array()?.iter().find_map(|w| {
            let state = w["state"].as_str()?;
            (w["name"] == "group/default/broken" && state.contains("metric source"))
                .then(|| state.to_string())
        })
    })
    .await;
    assert!(
        status.contains("prometheus (cpu): prometheus: bad_data"),
        "{status}"
    );
    server.shutdown().await;
}
