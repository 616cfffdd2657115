//! A small HTTP service whose CPU cost per request is set per request, so that demos
//! and tests can load Swell's instances exactly as hard as they mean to.
//!
//! Routes:
//!
//! - `GET /work?ms=N` burns `N` milliseconds of CPU (capped at [`MAX_WORK_MS`]) on a
//!   blocking thread and answers `{"instance": "<id>", "burned_ms": N}`; a missing or
//!   malformed `N` is a `400` that says why.
//! - `GET /healthz` answers `ok`.
//! - `GET /` names the instance.
//!
//! The instance id comes from `SWELL_INSTANCE_ID`, which Swell's process provider sets.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! // What `swell demo-app --port 8080` does: serve until SIGTERM or SIGINT.
//! swell_demo_app::run("127.0.0.1:8080".parse().unwrap()).await
//! # }
//! ```
#![warn(missing_docs)]

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The most CPU one request may ask for, in milliseconds; larger values are capped.
pub const MAX_WORK_MS: u64 = 10_000;

/// What the service says about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DemoConfig {
    /// The instance id reported in responses (empty when not run by Swell).
    pub instance_id: String,
}

impl DemoConfig {
    /// Reads `SWELL_INSTANCE_ID` (empty when unset).
    pub fn from_env() -> Self {
        Self {
            instance_id: std::env::var("SWELL_INSTANCE_ID").unwrap_or_default(),
        }
    }
}

/// The service's routes, for embedding or for tests that drive it without a socket.
pub fn router(config: DemoConfig) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/healthz", get(healthz))
        .route("/work", get(work))
        .with_state(Arc::new(config))
}

/// Serves on `listener` (with the instance id from the environment) until `shutdown`
/// completes, then stops accepting and returns once in-flight requests have finished.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, DemoConfig::from_env(), shutdown).await
}

/// [`serve`] with an explicit configuration.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    config: DemoConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(config))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds `addr` and serves until SIGTERM or SIGINT, then finishes in-flight requests
/// and returns `Ok(())`. The one call behind `swell-demo-app` and `swell demo-app`.
pub async fn run(addr: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let terminate = termination()?;
    let config = DemoConfig::from_env();
    eprintln!(
        "swell-demo-app listening on {} (instance `{}`)",
        listener.local_addr()?,
        config.instance_id
    );
    serve_with(listener, config, terminate).await?;
    eprintln!("swell-demo-app stopped");
    Ok(())
}

/// A future that completes on the first SIGTERM or SIGINT. The handlers are installed
/// now, so that a signal arriving before the future is polled is not lost.
fn termination() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

async fn index(State(config): State<Arc<DemoConfig>>) -> String {
    format!(
        "swell-demo-app instance `{}`\nGET /work?ms=N burns N ms of CPU; GET /healthz\n",
        config.instance_id
    )
}

async fn healthz() -> &'static str {
    "ok"
}

async fn work(State(config): State<Arc<DemoConfig>>, RawQuery(query): RawQuery) -> Response {
    let ms = match parse_ms(query.as_deref()) {
        Ok(ms) => ms,
        Err(message) => return (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response(),
    };
    if tokio::task::spawn_blocking(move || burn(Duration::from_millis(ms)))
        .await
        .is_err()
    {
        return (StatusCode::INTERNAL_SERVER_ERROR, "the work failed\n").into_response();
    }
    let body = serde_json::json!({ "instance": config.instance_id, "burned_ms": ms });
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Reads `ms` from a query string: a non-negative integer, capped at [`MAX_WORK_MS`].
fn parse_ms(query: Option<&str>) -> Result<u64, String> {
    let value = query
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(name, _)| *name == "ms")
        .map(|(_, value)| value);
    let Some(value) = value else {
        return Err(format!(
            "query parameter `ms` is required: milliseconds of CPU to burn, 0 to {MAX_WORK_MS}"
        ));
    };
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Digits too many for a u64 are far above the cap too.
        return Ok(value
            .parse::<u64>()
            .map_or(MAX_WORK_MS, |ms| ms.min(MAX_WORK_MS)));
    }
    Err(format!(
        "`ms` must be a whole number of milliseconds (0 to {MAX_WORK_MS}), not `{value}`"
    ))
}

/// Keeps one core busy for `duration` of wall time.
fn burn(duration: Duration) {
    let start = Instant::now();
    let mut x: u64 = 0;
    while start.elapsed() < duration {
        for _ in 0..1_000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
    std::hint::black_box(x);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ms_is_parsed_and_capped() {
        for (query, expect) in [
            (Some("ms=50"), Ok(50)),
            (Some("ms=0"), Ok(0)),
            (Some("a=1&ms=7&ms=9"), Ok(7)),
            (Some("ms=99999999"), Ok(MAX_WORK_MS)),
            (Some("ms=10000"), Ok(10_000)),
            (Some("ms=99999999999999999999999"), Ok(MAX_WORK_MS)),
        ] {
            assert_eq!(parse_ms(query), expect, "{query:?}");
        }
        for query in [
            None,
            Some(""),
            Some("ms"),
            Some("ms="),
            Some("ms=-1"),
            Some("ms=1.5"),
            Some("ms=abc"),
            Some("ms=+1"),
            Some("msx=1"),
        ] {
            let err = parse_ms(query).unwrap_err();
            assert!(err.contains("ms"), "{query:?}: {err}");
        }
    }

    #[test]
    fn burn_takes_at_least_its_time() {
        let start = Instant::now();
        burn(Duration::from_millis(20));
        assert!(start.elapsed() >= Duration::from_millis(20));
    }
}
