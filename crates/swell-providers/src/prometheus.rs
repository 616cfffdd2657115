//! The `prometheus` metric source's southbound half: one instant query through the
//! server's HTTP API (`GET <url>/api/v1/query?query=…`) and the reading of its answer
//! ([`parse_answer`], pure and fuzzed: the answer comes from another service).

use serde::Deserialize;
use swell_core::PrometheusSourceSpec;

/// Longest answer read.
pub const MAX_ANSWER: usize = 1 << 20;

/// Why a query gave no value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PromError {
    /// The server could not be asked, or answered with an HTTP error and no API error.
    #[error("{0}")]
    Unavailable(String),
    /// The API's own error (`{"status": "error", …}`), e.g. a PromQL syntax error.
    #[error("prometheus: {0}")]
    Query(String),
    /// The answer is not the API's JSON.
    #[error("unreadable answer: {0}")]
    Answer(String),
    /// The query matched no series.
    #[error("the query gave no series")]
    Empty,
    /// The value is not a finite number (`NaN`, `+Inf`).
    #[error("the value `{0}` is not a finite number")]
    NotFinite(String),
    /// A matrix or string answer: the query must give an instant value.
    #[error("the answer is a {0}: the query must give an instant vector or a scalar")]
    WrongType(String),
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct Series {
    value: (f64, String),
}

/// The value of a `/api/v1/query` answer and how many series it averages: a scalar's
/// value, or the mean of an instant vector's series.
pub fn parse_answer(body: &[u8]) -> Result<(f64, usize), PromError> {
    let body = &body[..body.len().min(MAX_ANSWER)];
    let answer: Answer =
        serde_json::from_slice(body).map_err(|e| PromError::Answer(e.to_string()))?;
    if answer.status != "success" {
        let kind = answer.error_type.unwrap_or_else(|| "error".into());
        let message = answer.error.unwrap_or_default();
        return Err(PromError::Query(one_line(&format!("{kind}: {message}"))));
    }
    let data = answer
        .data
        .ok_or_else(|| PromError::Answer("no `data`".into()))?;
    let value = |text: &str| -> Result<f64, PromError> {
        let v: f64 = text
            .parse()
            .map_err(|_| PromError::Answer(format!("`{}` is not a number", one_line(text))))?;
        if v.is_finite() {
            Ok(v)
        } else {
            Err(PromError::NotFinite(text.to_string()))
        }
    };
    match data.result_type.as_str() {
        "scalar" => {
            let (_, text): (f64, String) = serde_json::from_value(data.result)
                .map_err(|e| PromError::Answer(e.to_string()))?;
            Ok((value(&text)?, 1))
        }
        "vector" => {
            let series: Vec<Series> = serde_json::from_value(data.result)
                .map_err(|e| PromError::Answer(e.to_string()))?;
            if series.is_empty() {
                return Err(PromError::Empty);
            }
            let mut sum = 0.0;
            for s in &series {
                sum += value(&s.value.1)?;
            }
            let mean = sum / series.len() as f64;
            if !mean.is_finite() {
                return Err(PromError::NotFinite(mean.to_string()));
            }
            Ok((mean, series.len()))
        }
        other => Err(PromError::WrongType(one_line(other))),
    }
}

fn one_line(text: &str) -> String {
    let line: String = text.chars().filter(|c| !c.is_control()).take(300).collect();
    line
}

/// An HTTP client for Prometheus queries (cheap to clone).
#[derive(Debug, Clone)]
pub struct PromClient(reqwest::Client);

impl Default for PromClient {
    fn default() -> Self {
        Self::new()
    }
}

impl PromClient {
    /// A client with its own connection pool that never follows a redirect: the URL
    /// was checked against the server's allow-list, and a redirect would lead past it.
    pub fn new() -> Self {
        PromClient(
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                // As `reqwest::Client::new()`: fails only without a TLS backend.
                .expect("the HTTP client builds"),
        )
    }

    /// Runs the source's query for `tenant`'s `group` and reads the value.
    pub async fn query(
        &self,
        source: &PrometheusSourceSpec,
        tenant: &str,
        group: &str,
    ) -> Result<f64, PromError> {
        query(&self.0, source, tenant, group).await
    }
}

async fn query(
    client: &reqwest::Client,
    source: &PrometheusSourceSpec,
    tenant: &str,
    group: &str,
) -> Result<f64, PromError> {
    let url = format!("{}/api/v1/query", source.url.trim_end_matches('/'));
    let q = source.query_for(tenant, group);
    let answer = client
        .get(&url)
        .query(&[("query", q.as_str())])
        .timeout(source.timeout)
        .send()
        .await
        .map_err(|e| PromError::Unavailable(format!("{url}: {}", error_chain(&e))))?;
    let status = answer.status();
    if status.is_redirection() {
        let to = answer
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(one_line)
            .unwrap_or_default();
        return Err(PromError::Unavailable(format!(
            "{url} answered {status}, a redirect to `{to}`: redirects are not followed; give the final URL"
        )));
    }
    let mut body = Vec::new();
    let mut answer = answer;
    while let Some(chunk) = answer
        .chunk()
        .await
        .map_err(|e| PromError::Unavailable(format!("{url}: {}", error_chain(&e))))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_ANSWER {
            return Err(PromError::Answer(format!("larger than {MAX_ANSWER} bytes")));
        }
    }
    match parse_answer(&body) {
        // The API's errors (400 bad_data, 422 execution) come with its JSON.
        Err(PromError::Answer(_)) if !status.is_success() => {
            Err(PromError::Unavailable(format!("{url} answered {status}")))
        }
        other => other.map(|(v, _)| v),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server answering every request with `answer`; the requests it saw.
    async fn http_server(
        answer: String,
    ) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let n = conn.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]);
                log.lock()
                    .unwrap()
                    .push(head.lines().next().unwrap_or("").to_string());
                let _ = conn.write_all(answer.as_bytes()).await;
            }
        });
        (url, seen)
    }

    /// A redirect (to a server that would answer well) is an error naming it, and the
    /// target is never asked.
    #[tokio::test]
    async fn redirects_are_not_followed() {
        let good = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"7"]}}"#;
        let (target, target_seen) = http_server(format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{good}",
            good.len()
        ))
        .await;
        let (url, _) = http_server(format!(
            "HTTP/1.1 302 Found\r\nlocation: {target}/api/v1/query?query=x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        ))
        .await;
        let source: PrometheusSourceSpec = serde_json::from_value(serde_json::json!({
            "url": url, "query": "x", "metric": "cpu"
        }))
        .unwrap();
        let err = PromClient::new()
            .query(&source, "t", "g")
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("302") && text.contains("redirect"), "{text}");
        assert!(text.contains(&target), "{text}");
        assert!(
            target_seen.lock().unwrap().is_empty(),
            "the target was asked"
        );
        // The target itself answers (the test's server works).
        let direct: PrometheusSourceSpec = serde_json::from_value(serde_json::json!({
            "url": target, "query": "x", "metric": "cpu"
        }))
        .unwrap();
        assert_eq!(PromClient::new().query(&direct, "t", "g").await, Ok(7.0));
    }

    fn check(body: &str, expect: Result<(f64, usize), PromError>) {
        assert_eq!(parse_answer(body.as_bytes()), expect, "{body}");
    }

    /// Answers as Prometheus 2.42 gives them.
    #[test]
    fn answers() {
        check(
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"group":"lab"},"value":[1764690000.123,"42.5"]}]}}"#,
            Ok((42.5, 1)),
        );
        check(
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"i":"a"},"value":[1,"10"]},{"metric":{"i":"b"},"value":[1,"30"]}]}}"#,
            Ok((20.0, 2)),
        );
        check(
            r#"{"status":"success","data":{"resultType":"scalar","result":[1764690000.1,"7"]}}"#,
            Ok((7.0, 1)),
        );
        check(
            r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
            Err(PromError::Empty),
        );
        check(
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#,
            Err(PromError::NotFinite("NaN".into())),
        );
        check(
            r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
            Err(PromError::WrongType("matrix".into())),
        );
        check(
            r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:5: parse error"}"#,
            Err(PromError::Query(
                "bad_data: invalid parameter \"query\": 1:5: parse error".into(),
            )),
        );
        assert!(matches!(parse_answer(b"<html>"), Err(PromError::Answer(_))));
    }
}
