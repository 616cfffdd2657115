//! The CLI's HTTP client and its output: tables by default, `-o json` for scripts.

use anyhow::{Context, Result, bail};
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use serde::Serialize;
use serde::de::DeserializeOwned;
use swell_api as api;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Human tables.
    Table,
    /// JSON, for scripts.
    Json,
}

/// A client of one Swell server. It sends `Authorization: Bearer TOKEN` on every call:
/// the token in `SWELL_TOKEN`, else the one `swell login` stored.
pub struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

/// Where `swell login` keeps the token: `$XDG_CONFIG_HOME/swell/token`, else
/// `~/.config/swell/token`.
pub fn token_path() -> Option<std::path::PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| std::path::PathBuf::from(h).join(".config"))
        })?;
    Some(base.join("swell").join("token"))
}

/// The token to send: `SWELL_TOKEN` if set, else the stored one.
pub fn current_token() -> Option<String> {
    if let Ok(t) = std::env::var("SWELL_TOKEN")
        && !t.trim().is_empty()
    {
        return Some(t.trim().to_string());
    }
    let text = std::fs::read_to_string(token_path()?).ok()?;
    let t = text.trim();
    (!t.is_empty()).then(|| t.to_string())
}

impl Client {
    /// A client of the server at `url` (e.g. `http://127.0.0.1:7700`).
    /// `SWELL_CA_CERT` names a PEM file of CA certificates trusted besides the
    /// system's (a server with `--tls-cert` signed by a private CA, or self-signed).
    pub fn new(url: &str) -> Result<Self> {
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
            base: server_url(url)?,
            http,
            token: current_token(),
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
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) if e.is_connect() => bail!(
                "cannot reach Swell at {}: is `swell serve` running? (set --url or SWELL_URL to point elsewhere)",
                self.base
            ),
            Err(e) => return Err(e).with_context(|| format!("calling {url}")),
        };
        let status = resp.status();
        let bytes = resp.bytes().await.context("reading the answer")?;
        if !status.is_success() {
            let hint = if status == reqwest::StatusCode::UNAUTHORIZED {
                " (log in with `swell login --user U --password-file F --tenant T`, or set SWELL_TOKEN)"
            } else {
                ""
            };
            if let Ok(p) = serde_json::from_slice::<api::Problem>(&bytes) {
                bail!("{} ({}): {}{hint}", p.title, p.status, p.detail);
            }
            bail!("{status}: {}{hint}", String::from_utf8_lossy(&bytes));
        }
        Ok(bytes.to_vec())
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
}

/// Prints `value` as JSON, or as the table `table` builds.
pub fn print<T: Serialize>(
    output: Output,
    value: &T,
    table: impl FnOnce(&T) -> Table,
) -> Result<()> {
    match output {
        Output::Json => outln!("{}", serde_json::to_string_pretty(value)?),
        Output::Table => outln!("{}", table(value)),
    }
    Ok(())
}

/// A table with a header row.
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY).set_header(header.to_vec());
    t
}

/// The group table.
pub fn groups_table(groups: &[api::Group]) -> Table {
    let mut t = table(&[
        "NAME",
        "DESIRED",
        "RUNNING",
        "PENDING",
        "DRAINING",
        "MIN",
        "MAX",
        "LOAD BALANCER",
        "LAST SCALING",
    ]);
    for g in groups {
        let num = |k: &str| g.spec.get(k).map(|v| v.to_string()).unwrap_or_default();
        t.add_row(vec![
            if g.deleting {
                format!("{} (deleting)", g.name)
            } else {
                g.name.clone()
            },
            g.desired_capacity.to_string(),
            g.instances.running.to_string(),
            g.instances.pending.to_string(),
            g.instances.draining.to_string(),
            num("min"),
            num("max"),
            g.load_balancer.clone().unwrap_or_else(|| "-".into()),
            g.last_scaling_at.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    t
}

/// The instance table.
pub fn instances_table(list: &[api::Instance]) -> Table {
    let mut t = table(&[
        "ID",
        "#",
        "STATUS",
        "LIFECYCLE",
        "ADDRESS",
        "PID",
        "CPU %",
        "MEM MiB",
        "STARTED",
    ]);
    for i in list {
        t.add_row(vec![
            i.id.clone(),
            i.created_order.to_string(),
            i.status.clone(),
            i.lifecycle.clone(),
            i.address.clone().unwrap_or_else(|| "-".into()),
            i.native_id.clone().unwrap_or_else(|| "-".into()),
            i.cpu_percent.map_or("-".into(), |c| format!("{c:.1}")),
            i.memory_mb.map_or("-".into(), |m| format!("{m:.1}")),
            i.started_at.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    t
}

/// The event table.
pub fn events_table(list: &[api::Event]) -> Table {
    let mut t = table(&["TIME", "KIND", "MESSAGE"]);
    for e in list {
        t.add_row(vec![e.at.clone(), e.kind.clone(), e.message.clone()]);
    }
    t
}

/// A group's load history as a table.
pub fn load_history_table(list: &[api::LoadSummary]) -> Table {
    let mut t = table(&["TIME", "METRIC", "MEAN", "MAX"]);
    for l in list {
        t.add_row(vec![
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
