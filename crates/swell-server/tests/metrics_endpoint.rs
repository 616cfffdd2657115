//! The Prometheus page end to end, over real HTTP against an in-process server on a real
//! SQLite file with real `sleep` processes: each tenant's credential sees only its
//! tenant's series, an admin and the scrape listener (`--metrics-listen`) everyone's and
//! the controller's own; counters and histograms, not precomputed rates; a deleted
//! group's series leave with it. Then a real Prometheus (Debian's `prometheus`) scrapes
//! the listener and loads the alert rules of docs/metrics.md.

mod test_prometheus;

use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};
use swell_server::{Server, ServerConfig};
use test_prometheus::TestPrometheus;

const ADMIN_PASSWORD: &str = "metrics-endpoint-test-admin";

async fn start(dir: &Path) -> Server {
    Server::start(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        stop_instances_on_exit: true,
        admin_password: Some(swell_server::secrets::SecretString::new(ADMIN_PASSWORD)),
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..ServerConfig::default()
    })
    .await
    .unwrap()
}

/// One sample line of the exposition.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed page: its samples and each family's declared type.
#[derive(Debug)]
struct Page {
    samples: Vec<Sample>,
    types: HashMap<String, String>,
}

impl Page {
    /// The value of the one sample named `name` whose labels include `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<&Sample> = self.find(name, labels);
        assert!(found.len() <= 1, "{name} {labels:?}: {found:?}");
        found.first().map(|s| s.value)
    }

    fn find(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// Whether any sample is labelled `key="value"`.
    fn any_labelled(&self, key: &str, value: &str) -> bool {
        self.samples
            .iter()
            .any(|s| s.labels.get(key).map(String::as_str) == Some(value))
    }
}

/// Parses the OpenMetrics text format strictly enough to fail on a malformed page:
/// every sample belongs to a family declared by a `# TYPE` line before it, and the
/// page ends with `# EOF`.
fn parse(text: &str) -> Page {
    let mut samples = Vec::new();
    let mut types = HashMap::new();
    assert!(text.ends_with("# EOF\n"), "no # EOF: {text}");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => panic!("not a sample: {line}"),
        };
        let mut labels = BTreeMap::new();
        let value_text = if let Some(mut rest) = rest.strip_prefix('{') {
            loop {
                if let Some(after) = rest.strip_prefix('}') {
                    break after.trim();
                }
                rest = rest.strip_prefix(',').unwrap_or(rest);
                let (key, after) = rest.split_once("=\"").expect("label=\"value\"");
                let mut value = String::new();
                let mut chars = after.char_indices();
                let end = loop {
                    match chars.next().expect("closing quote") {
                        (_, '\\') => match chars.next().expect("escape").1 {
                            'n' => value.push('\n'),
                            c => value.push(c),
                        },
                        (i, '"') => break i,
                        (_, c) => value.push(c),
                    }
                };
                labels.insert(key.to_string(), value);
                rest = &after[end + 1..];
            }
        } else {
            rest.trim()
        };
        let value = match value_text {
            "+Inf" => f64::INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().unwrap_or_else(|_| panic!("value of {line}")),
        };
        let family = ["_total", "_bucket", "_count", "_sum"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix).filter(|f| types.contains_key(*f)))
            .unwrap_or(name);
        assert!(types.contains_key(family), "no # TYPE for {name}");
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Page { samples, types }
}

struct Api {
    url: String,
    http: reqwest::Client,
}

impl Api {
    async fn call(&self, token: &str, method: reqwest::Method, path: &str, body: Value) -> Value {
        let r = self
            .http
            .request(method.clone(), format!("{}{path}", self.url))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{method} {path}: {status} {v}");
        v
    }

    async fn login(&self, user: &str, password: &str, tenant: &str) -> String {
        let r = self
            .http
            .post(format!("{}/v1/auth/tokens", self.url))
            .json(&json!({"user": user, "password": password, "tenant": tenant}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        let v: Value = r.json().await.unwrap();
        v["token"].as_str().unwrap().to_string()
    }

    /// `GET /v1/metrics` with `token`: the status, the content type and the page.
    async fn scrape(&self, token: Option<&str>) -> (u16, String, String) {
        let mut req = self.http.get(format!("{}/v1/metrics", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let kind = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, kind, r.text().await.unwrap())
    }
}

/// Polls `check` until it gives a value, for up to `secs` seconds (it waits for real
/// processes and a real Prometheus, not for a timer of the server's).
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

fn sleepers(name: &str, desired: u32) -> Value {
    json!({
        "name": name,
        "template": {"command": ["sleep", "1000"]},
        "min": 0, "max": 3, "desired_capacity": desired,
        "evaluation_interval": "1s", "metrics_interval": "1s",
        "policies": [{"type": "threshold", "scale_out_above": 1000}]
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn each_scraper_sees_its_series_and_a_deleted_groups_leave() {
    use reqwest::Method as M;
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let api = Api {
        url: server.url(),
        http: reqwest::Client::new(),
    };
    let admin = api.login("admin", ADMIN_PASSWORD, "default").await;
    api.call(
        &admin,
        M::POST,
        "/v1/tenants",
        json!({"name": "bee", "providers": ["process"], "listen": ["127.0.0.1:1024-65535"]}),
    )
    .await;
    api.call(
        &admin,
        M::POST,
        "/v1/users",
        json!({"name": "bee-member", "password": "bee-member-password-42"}),
    )
    .await;
    api.call(
        &admin,
        M::PUT,
        "/v1/tenants/bee/users/bee-member",
        json!({"role": "member"}),
    )
    .await;
    let bee = api
        .login("bee-member", "bee-member-password-42", "bee")
        .await;

    // default: `web` with one instance, `gate` with a load balancer and none;
    // bee: `api`, empty.
    api.call(&admin, M::POST, "/v1/groups", sleepers("web", 1))
        .await;
    let lb_port = free_port();
    let mut gate = sleepers("gate", 0);
    gate["load_balancer"] = json!({"listen": format!("127.0.0.1:{lb_port}")});
    api.call(&admin, M::POST, "/v1/groups", gate).await;
    api.call(&bee, M::POST, "/v1/groups", sleepers("api", 0))
        .await;

    // One request through `gate`'s load balancer: no instance, so the proxy answers 503.
    let answer = until(30, "gate's load balancer answering", || async {
        reqwest::get(format!("http://127.0.0.1:{lb_port}/"))
            .await
            .ok()
    })
    .await;
    assert_eq!(answer.status().as_u16(), 503);

    let web = [("tenant", "default"), ("group", "web")];
    let page = until(60, "web's instance running on the page", || async {
        let (_, _, text) = api.scrape(Some(&admin)).await;
        let page = parse(&text);
        (page.value("swell_group_ready_instances", &web) == Some(1.0)).then_some(page)
    })
    .await;

    // The admin's page: every tenant's groups and the controller's own series.
    assert_eq!(page.value("swell_group_desired_capacity", &web), Some(1.0));
    assert_eq!(
        page.value(
            "swell_group_instances",
            &[("group", "web"), ("state", "running")]
        ),
        Some(1.0)
    );
    assert_eq!(
        page.value(
            "swell_group_instances",
            &[("group", "web"), ("state", "pending")]
        ),
        Some(0.0)
    );
    assert_eq!(
        page.value(
            "swell_group_desired_capacity",
            &[("tenant", "bee"), ("group", "api")]
        ),
        Some(0.0)
    );
    assert_eq!(page.value("swell_scaling_decisions_total", &web), Some(0.0));
    assert_eq!(page.value("swell_worker_queue_depth", &web), Some(0.0));
    let g = [("group", "gate")];
    assert_eq!(page.value("swell_lb_requests_total", &g), Some(1.0));
    assert_eq!(page.value("swell_lb_errors_total", &g), Some(1.0));
    assert_eq!(
        page.value("swell_lb_request_duration_seconds_count", &g),
        Some(1.0)
    );
    assert_eq!(
        page.value(
            "swell_lb_request_duration_seconds_bucket",
            &[("group", "gate"), ("le", "+Inf")]
        ),
        Some(1.0)
    );
    assert_eq!(page.types["swell_lb_requests"], "counter");
    assert_eq!(page.types["swell_lb_request_duration_seconds"], "histogram");
    // No precomputed rates any more: Prometheus computes them from the counters.
    for gone in [
        "swell_lb_request_rate",
        "swell_lb_error_ratio",
        "swell_lb_latency_seconds",
    ] {
        assert!(page.find(gone, &[]).is_empty(), "{gone} still exported");
    }
    assert!(
        page.value("swell_worker_pass_duration_seconds_count", &[])
            .unwrap()
            > 0.0
    );
    let listed = page.value(
        "swell_provider_calls_total",
        &[("provider", "process"), ("call", "list")],
    );
    assert!(listed.unwrap() > 0.0);
    assert_eq!(
        page.value(
            "swell_provider_calls_total",
            &[("provider", "process"), ("call", "create")]
        ),
        Some(1.0)
    );
    assert_eq!(
        page.value(
            "swell_provider_errors_total",
            &[("provider", "process"), ("call", "create")]
        ),
        Some(0.0)
    );

    // A tenant's page: its groups only, and none of the controller's own series.
    let (status, kind, text) = api.scrape(Some(&bee)).await;
    assert_eq!(status, 200, "{text}");
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    let mine = parse(&text);
    assert!(!mine.samples.is_empty());
    assert!(
        mine.samples
            .iter()
            .all(|s| s.labels.get("tenant").map(String::as_str) == Some("bee")),
        "{text}"
    );
    assert!(!mine.any_labelled("group", "web"));
    assert!(mine.find("swell_provider_calls_total", &[]).is_empty());
    assert!(
        mine.find("swell_worker_pass_duration_seconds_count", &[])
            .is_empty()
    );
    assert_eq!(
        mine.value("swell_group_desired_capacity", &[("group", "api")]),
        Some(0.0)
    );

    // No credential, no page on the API's address.
    let (status, kind, _) = api.scrape(None).await;
    assert_eq!(status, 401);
    assert!(kind.starts_with("application/problem+json"), "{kind}");

    // The scrape listener: everything, without a credential, and nothing else.
    let listener = format!("http://{}", server.metrics_addr().unwrap());
    let r = reqwest::get(format!("{listener}/metrics")).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let all = parse(&r.text().await.unwrap());
    assert_eq!(
        all.value("swell_group_desired_capacity", &[("group", "api")]),
        Some(0.0)
    );
    assert!(
        all.value("swell_provider_calls_total", &[("call", "list")])
            .is_some()
    );
    for path in ["/v1/groups", "/v1/metrics", "/"] {
        let r = reqwest::get(format!("{listener}{path}")).await.unwrap();
        assert_eq!(r.status().as_u16(), 404, "{path}");
    }

    // Deleting `web`: once its instance is retired and the group gone, none of its
    // series remain on any page.
    api.call(&admin, M::DELETE, "/v1/groups/web", Value::Null)
        .await;
    until(60, "web's series leaving the page", || async {
        let text = reqwest::get(format!("{listener}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        (!parse(&text).any_labelled("group", "web")).then_some(())
    })
    .await;
    let (_, _, text) = api.scrape(Some(&admin)).await;
    let after = parse(&text);
    assert!(!after.any_labelled("group", "web"), "{text}");
    assert!(after.any_labelled("group", "gate"));
    assert_eq!(
        after.value(
            "swell_provider_calls_total",
            &[("provider", "process"), ("call", "delete")]
        ),
        Some(1.0)
    );
    server.shutdown().await;
}

/// The alert rules docs/metrics.md shows (the `yaml` block after its marker), so the documented
/// rules are the ones a real Prometheus loads here.
fn documented_rules() -> String {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/metrics.md"),
    )
    .unwrap();
    let marked = doc
        .find("<!-- alert-rules")
        .expect("the alert rules' marker");
    let start = marked + doc[marked..].find("```yaml\n").expect("their yaml block") + 8;
    let len = doc[start..].find("```").unwrap();
    doc[start..start + len].to_string()
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_listener_with_the_documented_rules() {
    let dir = tempfile::tempdir().unwrap();
    let data = std::fs::canonicalize(dir.path()).unwrap();
    let server = start(&data.join("swell")).await;
    let api = Api {
        url: server.url(),
        http: reqwest::Client::new(),
    };
    let admin = api.login("admin", ADMIN_PASSWORD, "default").await;
    api.call(
        &admin,
        reqwest::Method::POST,
        "/v1/groups",
        sleepers("web", 1),
    )
    .await;
    let prom_dir = data.join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let prom = TestPrometheus::start(
        &prom_dir,
        server.metrics_addr().unwrap(),
        Some(&documented_rules()),
    );
    let http = reqwest::Client::new();
    let query = |q: &'static str| {
        let http = http.clone();
        let url = prom.url.clone();
        async move {
            let v: Value = http
                .get(format!("{url}/api/v1/query"))
                .query(&[("query", q)])
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let first = v["data"]["result"].as_array()?.first()?.clone();
            first["value"][1].as_str()?.parse::<f64>().ok()
        }
    };
    let desired = until(60, "Prometheus storing web's desired capacity", || {
        query("swell_group_desired_capacity{tenant=\"default\",group=\"web\"}")
    })
    .await;
    assert_eq!(desired, 1.0);
    until(60, "Prometheus computing a pass-duration quantile", || async {
        let q = query(
            "histogram_quantile(0.99, sum by (le) (rate(swell_worker_pass_duration_seconds_bucket[1m])))",
        )
        .await?;
        q.is_finite().then_some(())
    })
    .await;
    // Every documented rule loaded and evaluates without error.
    let rules = until(30, "the documented rules evaluated", || async {
        let v: Value = http
            .get(format!("{}/api/v1/rules", prom.url))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let rules: Vec<Value> = v["data"]["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let evaluated = !rules.is_empty()
            && rules.iter().all(|r| {
                r["lastEvaluation"]
                    .as_str()
                    .is_some_and(|t| !t.starts_with("0001"))
            });
        evaluated.then_some(rules)
    })
    .await;
    assert!(rules.len() >= 4, "{rules:?}");
    for r in &rules {
        assert_eq!(r["health"], "ok", "{r}");
    }
    drop(prom);
    server.shutdown().await;
}
