//! Active health checks: one named worker per load balancer probes every
//! configured backend each `interval` (and a new, still pending backend at
//! once), and feeds the results to the pool, which moves a backend in or out
//! of routing after `healthy_threshold` / `unhealthy_threshold` results in a
//! row. Passive ejection lives in the proxy, on real traffic.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::pool::{Pool, Transition};
use crate::{Health, HealthCheck, HealthCheckKind};

type CheckClient = Client<HttpConnector, Empty<Bytes>>;

/// Runs until `cancel`: checks every configured backend every
/// `check.interval`, and pending (new) backends as soon as they are added.
pub(crate) async fn run(pool: Arc<Pool>, check: HealthCheck, cancel: CancellationToken) {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(check.timeout));
    connector.set_nodelay(true);
    let client: CheckClient = Client::builder(TokioExecutor::new())
        // A check must not reuse a connection that the instance may have
        // half-closed: fresh connections measure what a new client would see.
        .pool_max_idle_per_host(0)
        .build(connector);
    let mut changes = pool.subscribe();
    let mut interval = tokio::time::interval(check.interval.max(Duration::from_millis(1)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let only_pending = tokio::select! {
            () = cancel.cancelled() => return,
            _ = interval.tick() => false,
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                true
            }
        };
        let targets: Vec<(String, SocketAddr)> = pool
            .configured()
            .into_iter()
            .filter(|m| !only_pending || m.state_health() == Health::Pending)
            .map(|m| (m.id, m.addr))
            .collect();
        if targets.is_empty() {
            continue;
        }
        let mut round = JoinSet::new();
        for (id, addr) in targets {
            let (client, kind, timeout) = (client.clone(), check.kind.clone(), check.timeout);
            round.spawn(async move {
                let ok = probe(&client, &kind, addr, timeout).await;
                (id, addr, ok)
            });
        }
        let results = tokio::select! {
            () = cancel.cancelled() => return,
            results = round.join_all() => results,
        };
        for (id, addr, ok) in results {
            match pool.record_check(&id, ok, check.healthy_threshold, check.unhealthy_threshold) {
                Transition::None => {}
                Transition::BecameHealthy => {
                    tracing::info!(backend = %id, %addr, "health check passed: instance is healthy");
                }
                Transition::BecameUnhealthy => {
                    tracing::warn!(backend = %id, %addr, "health check failed: instance is unhealthy");
                }
            }
        }
        // Results of this round changed nothing the next `changed()` must see
        // again: only membership changes made after this point should wake us.
        changes.mark_unchanged();
    }
}

/// One probe: an HTTP `GET` answered with 2xx or 3xx, or a TCP connect, within
/// `timeout`.
async fn probe(
    client: &CheckClient,
    kind: &HealthCheckKind,
    addr: SocketAddr,
    timeout: Duration,
) -> bool {
    match kind {
        HealthCheckKind::Tcp => {
            matches!(
                tokio::time::timeout(timeout, TcpStream::connect(addr)).await,
                Ok(Ok(_))
            )
        }
        HealthCheckKind::Http { path } => {
            let uri = match Uri::builder()
                .scheme("http")
                .authority(addr.to_string())
                .path_and_query(path.as_str())
                .build()
            {
                Ok(uri) => uri,
                Err(_) => return false,
            };
            let Ok(req) = Request::get(uri)
                .header(hyper::header::USER_AGENT, "swell-lb-health-check")
                .body(Empty::new())
            else {
                return false;
            };
            let attempt = async {
                let resp = client.request(req).await.ok()?;
                let status = resp.status();
                resp.into_body().collect().await.ok()?;
                Some(status.is_success() || status.is_redirection())
            };
            matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
        }
    }
}
