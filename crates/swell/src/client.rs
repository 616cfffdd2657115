//! The CLI's HTTP client, and the tables of groups, instances and events.

use crate::config::Target;
use crate::output::{Table, or_dash};
use anyhow::{Context, Result, bail};
use serde::de::DeserializeOwned;
use swell_api as api;

/// A client of one Swell server. It sends `Authorization: Bearer TOKEN` on every call
/// when the target has a token (`SWELL_TOKEN`, else the context's).
pub struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl Client {
    /// A client of the target's server with its token.
    /// `SWELL_CA_CERT` names a PEM file of CA certificates trusted besides the
    /// system's (a server with `--tls-cert` signed by a private CA, or self-signed).
    pub fn new(target: &Target) -> Result<Self> {
        let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(60));
        if let Some(path) = std::env::var_os("SWELL_CA_CERT").filter(|p| !p.is_empty()) {
            let path = std::path::PathBuf::from(path);
            let pem = std::fs::read(&path)
                .with_context(|| format!("SWELL_CA_CERT: reading {}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("SWELL_CA_CERT: {} is not PEM", path.display()))?;
            anyhow::ensure!(
                !certs.is_empty(),
                "SWELL_CA_CERT: {} holds no certificate",
                path.display()
            );
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().context("building the HTTP client")?;
        Ok(Client {
            base: target.url.clone(),
            http,
            token: target.token.clone(),
        })
    }

    /// Sends a request and returns the answer's body as text (for CSV exports).
    pub async fn get_text(&self, path: &str) -> Result<String> {
        let bytes = self.send(reqwest::Method::GET, path, None).await?;
        String::from_utf8(bytes).context("the answer is not UTF-8")
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Vec<u8>> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = self.answer(req, &url).await?;
        let status = resp.status();
        let bytes = resp.bytes().await.context("reading the answer")?;
        if !status.is_success() {
            return Err(failure(status, &bytes));
        }
        Ok(bytes.to_vec())
    }

    /// Sends `req`, saying what to do when the server cannot be reached.
    async fn answer(&self, req: reqwest::RequestBuilder, url: &str) -> Result<reqwest::Response> {
        match req.send().await {
            Ok(r) => Ok(r),
            Err(e) if e.is_connect() => bail!(
                "cannot reach Swell at {}: is `swell serve` running? (set --url or SWELL_URL to point elsewhere)",
                self.base
            ),
            Err(e) => Err(e).with_context(|| format!("calling {url}")),
        }
    }

    /// Opens a Server-Sent Events stream (`GET path`, with `Last-Event-ID`), whose body
    /// the caller reads as it comes; `None` for 404. The stream may last `lasts` (the
    /// client's usual 60 s limit does not apply to it).
    pub async fn open_stream(
        &self,
        path: &str,
        last_event_id: i64,
        lasts: std::time::Duration,
    ) -> Result<Option<reqwest::Response>> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .get(&url)
            .header("Accept", "text/event-stream")
            .header("Last-Event-ID", last_event_id.to_string())
            .timeout(lasts);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = self.answer(req, &url).await?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            let bytes = resp.bytes().await.context("reading the answer")?;
            return Err(failure(status, &bytes));
        }
        Ok(Some(resp))
    }

    /// Sends a request and decodes the answer, turning problem documents into errors
    /// that say what to do.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T> {
        let bytes = self.send(method, path, body).await?;
        let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        serde_json::from_slice(bytes).with_context(|| format!("decoding the answer of {path}"))
    }

    /// GET.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// GET, with `None` for 404 (a group that is gone).
    pub async fn get_opt<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>> {
        match self.get(path).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.downcast_ref::<NotFound>().is_some() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The error of a failed answer, from its problem document: what went wrong and, for
/// 401, how to log in.
fn failure(status: reqwest::StatusCode, bytes: &[u8]) -> anyhow::Error {
    let hint = if status == reqwest::StatusCode::UNAUTHORIZED {
        " (log in with `swell login --user U --tenant T`, pick a context with --context, or set SWELL_TOKEN)"
    } else {
        ""
    };
    let message = match serde_json::from_slice::<api::Problem>(bytes) {
        Ok(p) => format!("{} ({}): {}{hint}", p.title, p.status, p.detail),
        Err(_) => format!("{status}: {}{hint}", String::from_utf8_lossy(bytes)),
    };
    if status == reqwest::StatusCode::NOT_FOUND {
        return NotFound(message).into();
    }
    anyhow::anyhow!("{message}")
}

/// A 404 answer, told apart so that waiting for a deletion can see it.
#[derive(Debug)]
struct NotFound(String);

impl std::fmt::Display for NotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotFound {}

/// The group table; wide adds the tenant, the draining, terminating and paused
/// counts, the providers and the times.
pub fn groups_table(groups: &[api::Group]) -> Table {
    let mut t = Table::new(&[
        "NAME",
        "DESIRED",
        "RUNNING",
        "PENDING",
        "MIN",
        "MAX",
        "LOAD BALANCER",
    ])
    .wide(&[
        "TENANT",
        "DRAINING",
        "TERMINATING",
        "PAUSED",
        "PROVIDER",
        "LAST SCALING",
        "CREATED",
    ]);
    for g in groups {
        let num = |k: &str| g.spec.get(k).map(|v| v.to_string()).unwrap_or_default();
        t.add_row([
            if g.deleting {
                format!("{} (deleting)", g.name)
            } else if g.suspended {
                // Autoscaling suspended: only a user moves DESIRED.
                format!("{} (suspended)", g.name)
            } else {
                g.name.clone()
            },
            g.desired_capacity.to_string(),
            g.instances.running.to_string(),
            g.instances.pending.to_string(),
            num("min"),
            num("max"),
            or_dash(g.load_balancer.as_ref()),
            g.tenant.clone(),
            g.instances.draining.to_string(),
            g.instances.terminating.to_string(),
            g.instances.paused.to_string(),
            or_dash(g.spec.get("provider").and_then(|p| p.as_str())),
            or_dash(g.last_scaling_at.as_ref()),
            g.created_at.clone(),
        ]);
    }
    t
}

/// The instance table; wide adds where it runs, its provider id and why it is in its
/// status.
pub fn instances_table(list: &[api::Instance]) -> Table {
    let mut t = Table::new(&["ID", "#", "STATUS", "ADDRESS", "CPU %", "MEM MiB"]).wide(&[
        "LIFECYCLE",
        "PROVIDER",
        "HOST",
        "NATIVE ID",
        "PROTECTED",
        "STARTED",
        "REASON",
    ]);
    for i in list {
        t.add_row([
            i.id.clone(),
            i.created_order.to_string(),
            i.status.clone(),
            or_dash(i.address.as_ref()),
            or_dash(i.cpu_percent.map(|c| format!("{c:.1}"))),
            or_dash(i.memory_mb.map(|m| format!("{m:.1}"))),
            i.lifecycle.clone(),
            i.provider.clone(),
            or_dash(i.host.as_ref()),
            or_dash(i.native_id.as_ref()),
            i.protected.to_string(),
            or_dash(i.started_at.as_ref()),
            or_dash(i.status_reason.as_ref()),
        ]);
    }
    t
}

/// The event table; wide adds the instance and the cause's numbers.
pub fn events_table(list: &[api::Event]) -> Table {
    let mut t = Table::new(&["TIME", "KIND", "MESSAGE"]).wide(&[
        "ID",
        "INSTANCE",
        "POLICY",
        "METRIC",
        "VALUE",
        "THRESHOLD",
        "BEFORE",
        "AFTER",
    ]);
    for e in list {
        let c = e.cause.as_ref();
        t.add_row([
            e.at.clone(),
            e.kind.clone(),
            e.message.clone(),
            e.id.to_string(),
            or_dash(e.instance_id.as_ref()),
            or_dash(c.map(|c| &c.policy)),
            or_dash(c.and_then(|c| c.metric.as_ref())),
            or_dash(c.and_then(|c| c.value)),
            or_dash(c.and_then(|c| c.threshold)),
            or_dash(c.map(|c| c.before)),
            or_dash(c.map(|c| c.after)),
        ]);
    }
    t
}

/// The metric columns of `-o wide` and `-o csv` of `swell metrics GROUP`, in the API's
/// names (`cpu`, …), as the columns' headers say them.
const METRIC_COLUMNS: [(&str, &str); 8] = [
    ("cpu", "CPU"),
    ("memory", "MEMORY"),
    ("request_rate", "REQUEST_RATE"),
    ("request_rate_per_instance", "REQUEST_RATE_PER_INSTANCE"),
    ("in_flight", "IN_FLIGHT"),
    ("latency_p99", "LATENCY_P99"),
    ("error_rate", "ERROR_RATE"),
    ("steal", "STEAL"),
];

/// A group's metric history: the time, the running instances, the desired capacity
/// and the group's metric; wide adds every metric sampled.
pub fn group_metrics_table(list: &[api::GroupMetricPoint]) -> Table {
    let wide: Vec<&'static str> = METRIC_COLUMNS.iter().map(|(_, h)| *h).collect();
    let mut t = Table::new(&["TIME", "RUNNING", "DESIRED", "VALUE"]).wide(&wide);
    for p in list {
        let mut row = vec![
            p.at.clone(),
            p.running.to_string(),
            p.desired_capacity.to_string(),
            or_dash(p.value.map(|v| format!("{v:.2}"))),
        ];
        for (name, _) in METRIC_COLUMNS {
            row.push(or_dash(p.metrics.get(name)));
        }
        t.add_row(row);
    }
    t
}

/// One instance's metric history as a table.
pub fn instance_metrics_table(list: &[api::InstanceMetricPoint]) -> Table {
    let mut t = Table::new(&["TIME", "CPU_PERCENT", "MEMORY_MB"]);
    for p in list {
        t.add_row([
            p.at.clone(),
            format!("{:.2}", p.cpu_percent),
            format!("{:.1}", p.memory_mb),
        ]);
    }
    t
}

/// `value` percent-encoded for a query string (an RFC 3339 time's `+01:00` stays a
/// `+`, not a space).
pub fn query_value(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A group's load history as a table.
pub fn load_history_table(list: &[api::LoadSummary]) -> Table {
    let mut t = Table::new(&["TIME", "METRIC", "MEAN", "MAX"]);
    for l in list {
        t.add_row([
            l.at.clone(),
            l.metric.clone(),
            format!("{:.1}", l.mean),
            format!("{:.1}", l.max),
        ]);
    }
    t
}

/// The server's base URL from `--url`/`SWELL_URL`: `127.0.0.1:7700` means
/// `http://127.0.0.1:7700`; a trailing `/` is dropped.
pub fn server_url(url: &str) -> Result<String> {
    let url = url.trim();
    let full = if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    };
    let parsed = reqwest::Url::parse(&full)
        .map_err(|e| anyhow::anyhow!("--url `{url}`: {e} (expected e.g. http://127.0.0.1:7700)"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        anyhow::bail!(
            "--url `{url}`: must be an http:// or https:// address (e.g. http://127.0.0.1:7700)"
        );
    }
    Ok(full.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::server_url;

    #[test]
    fn server_urls() {
        let check = |given: &str, expected: Result<&str, &str>| match (server_url(given), expected)
        {
            (Ok(url), Ok(want)) => assert_eq!(url, want, "{given}"),
            (Err(e), Err(want)) => assert!(e.to_string().contains(want), "{given}: {e}"),
            (got, want) => panic!("{given}: got {got:?}, want {want:?}"),
        };
        check("http://127.0.0.1:7700", Ok("http://127.0.0.1:7700"));
        check("https://swell.example/", Ok("https://swell.example"));
        check("127.0.0.1:7850", Ok("http://127.0.0.1:7850"));
        check("localhost:7700/", Ok("http://localhost:7700"));
        check("ftp://x:1", Err("must be an http:// or https://"));
        check("http://", Err("--url `http://`"));
    }
}
