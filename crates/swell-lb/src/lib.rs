//! `swell-lb`: the per-group HTTP/1.1 load balancer, with draining.
//!
//! One [`LoadBalancer`] fronts one scaling group. It listens on one address,
//! spreads requests round robin over the group's current pool of [`Backend`]s and
//! reverse-proxies them with a keep-alive client, streaming bodies both ways.
//!
//! # The drain contract (design invariant 4: scale-in loses no request)
//!
//! The controller retires an instance in this order:
//!
//! 1. [`LoadBalancer::drain`] (or [`LoadBalancer::set_backends`] without it, then
//!    `drain`) takes the instance out of the pool. From the moment that call has
//!    started its work, **no new request is dispatched to it**: the decision "may
//!    this backend take a request" and the in-flight count are kept under one lock
//!    per backend, so a request that read an older pool snapshot is refused and
//!    sent elsewhere. [`LoadBalancer::requests_after_drain`] counts any violation
//!    and must stay 0.
//! 2. Every request dispatched before that moment is *in flight* until its
//!    response body has been read to the end from the backend (or the client
//!    went away). `drain` returns [`DrainOutcome::Drained`] as soon as the count
//!    reaches zero, or [`DrainOutcome::TimedOut`] when the timeout passes first.
//! 3. Only then does the controller delete the instance.
//!
//! Client connections belong to the load balancer, not to a backend, so a
//! client's idle keep-alive connection is unaffected by a drain: its next request
//! simply goes to another backend.
//!
//! A bodiless idempotent request (`GET`, `HEAD`, `OPTIONS`, `PUT`, `DELETE`) whose
//! connect to a backend fails, or whose pooled backend connection closes before
//! any response, is retried once on the next backend, so an instance that dies
//! between a pool update and the connect does not fail a request. A request with
//! a body is never retried: it gets `502`.
//!
//! Not yet here (later issues): HTTP/2, TCP listeners, active health checks,
//! WebSocket upgrades (`Upgrade` is stripped as a hop-by-hop header).

mod pool;
mod proxy;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::proxy::Proxy;

/// One instance the load balancer may send requests to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Backend {
    /// Stable identity (the instance id); drains and stats are keyed by it.
    pub id: String,
    /// Where the instance listens for HTTP/1.1.
    pub addr: SocketAddr,
}

/// How a [`LoadBalancer::drain`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainOutcome {
    /// Nothing is in flight to the backend any more: it is safe to delete.
    Drained,
    /// The timeout passed first; `in_flight` requests were still running then.
    /// They keep running until they finish or the instance goes away.
    TimedOut {
        /// Requests still in flight when the timeout passed.
        in_flight: u64,
    },
}

/// Counters for one backend id, kept for every backend ever seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendStats {
    /// The backend's id.
    pub id: String,
    /// Its last known address (`None` if it was only ever named in a drain).
    pub addr: Option<SocketAddr>,
    /// Whether it is in the current pool (may take new requests).
    pub in_pool: bool,
    /// Requests dispatched to it, retried attempts included.
    pub requests: u64,
    /// Requests dispatched to it whose response has not finished yet.
    pub in_flight: u64,
    /// Failed attempts: connect errors, upstream errors, timeouts.
    pub failures: u64,
    /// When the last request was dispatched to it.
    pub last_request_at: Option<SystemTime>,
    /// When its current drain began; cleared if it rejoins the pool.
    pub draining_since: Option<SystemTime>,
    /// Requests dispatched to it while it was draining; must stay 0.
    pub requests_after_drain: u64,
}

/// Tuning for a [`LoadBalancer`]; [`LbConfig::default`] is what
/// [`LoadBalancer::bind`] uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbConfig {
    /// Time from dispatch until the backend's response headers arrive, a retry
    /// included; past it the client gets `504`. It does not limit how long a
    /// response body may stream. Default 60 s.
    pub request_timeout: Duration,
    /// Time allowed for a TCP connect to a backend; past it the connect counts
    /// as failed (and may be retried). Default 5 s.
    pub connect_timeout: Duration,
    /// How long an idle keep-alive connection to a backend is kept. Default 90 s.
    pub pool_idle_timeout: Duration,
    /// How long a client may take to send a request's headers. Default 30 s.
    pub header_read_timeout: Duration,
}

impl Default for LbConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            pool_idle_timeout: Duration::from_secs(90),
            header_read_timeout: Duration::from_secs(30),
        }
    }
}

/// A running load balancer for one group. Cheap to clone; every clone controls
/// the same listener. When the last clone is dropped it shuts down as
/// [`LoadBalancer::shutdown`] would, without waiting.
#[derive(Clone)]
pub struct LoadBalancer {
    inner: Arc<Inner>,
}

struct Inner {
    proxy: Arc<Proxy>,
    local_addr: SocketAddr,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl std::fmt::Debug for LoadBalancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadBalancer")
            .field("local_addr", &self.inner.local_addr)
            .field("pool", &self.backends())
            .finish()
    }
}

impl LoadBalancer {
    /// Binds `listen` now (port 0 picks a free port) and serves on a spawned
    /// task, with the default [`LbConfig`]. The pool starts empty: until
    /// [`LoadBalancer::set_backends`] is called every request gets `503`.
    pub async fn bind(listen: SocketAddr) -> std::io::Result<LoadBalancer> {
        Self::bind_with(listen, LbConfig::default()).await
    }

    /// Like [`LoadBalancer::bind`], with explicit tuning.
    pub async fn bind_with(listen: SocketAddr, config: LbConfig) -> std::io::Result<LoadBalancer> {
        let listener = TcpListener::bind(listen).await?;
        let local_addr = listener.local_addr()?;
        let proxy = Arc::new(Proxy::new(&config));
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(accept_loop(
            listener,
            Arc::clone(&proxy),
            config,
            cancel.clone(),
            tasks.clone(),
        ));
        tracing::info!(%local_addr, "load balancer listening");
        Ok(LoadBalancer {
            inner: Arc::new(Inner {
                proxy,
                local_addr,
                cancel,
                tasks,
            }),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Replaces the pool atomically. A backend that leaves gets no new request
    /// once this returns (its in-flight ones finish); a backend that (re)joins is
    /// no longer draining. Duplicate ids keep the first entry.
    pub fn set_backends(&self, backends: Vec<Backend>) {
        let (joined, left) = self.inner.proxy.pool.set(backends);
        if !joined.is_empty() || !left.is_empty() {
            let pool: Vec<String> = self.backends().into_iter().map(|b| b.id).collect();
            tracing::info!(lb = %self.inner.local_addr, ?joined, ?left, ?pool, "pool updated");
        }
    }

    /// The current pool, in round-robin order.
    pub fn backends(&self) -> Vec<Backend> {
        self.inner
            .proxy
            .pool
            .snapshot()
            .iter()
            .map(|m| Backend {
                id: m.id.clone(),
                addr: m.addr,
            })
            .collect()
    }

    /// Removes `id` from the pool (if still there) and marks it draining, then
    /// waits until it has nothing in flight or `timeout` passes (tokio time).
    /// An id the load balancer has never seen is trivially `Drained`.
    pub async fn drain(&self, id: &str, timeout: Duration) -> DrainOutcome {
        let lb = self.inner.local_addr;
        let Some(state) = self.inner.proxy.pool.begin_drain(id) else {
            tracing::info!(%lb, backend = %id, "drain of an unknown backend: nothing in flight");
            return DrainOutcome::Drained;
        };
        tracing::info!(%lb, backend = %id, in_flight = state.in_flight(), ?timeout, "drain started");
        let outcome = match tokio::time::timeout(timeout, state.idle()).await {
            Ok(()) => DrainOutcome::Drained,
            Err(_) => match state.in_flight() {
                0 => DrainOutcome::Drained,
                in_flight => DrainOutcome::TimedOut { in_flight },
            },
        };
        tracing::info!(%lb, backend = %id, ?outcome, "drain finished");
        outcome
    }

    /// Counters for every backend ever seen, sorted by id.
    pub fn stats(&self) -> Vec<BackendStats> {
        self.inner.proxy.pool.stats()
    }

    /// Requests dispatched to `id` after its drain began. The drain contract
    /// keeps it at 0; anything else is a bug.
    pub fn requests_after_drain(&self, id: &str) -> u64 {
        self.inner
            .proxy
            .pool
            .state(id)
            .map_or(0, |s| s.requests_after_drain())
    }

    /// Stops accepting connections, lets in-flight requests finish, closes idle
    /// client connections, and returns when every connection has closed. The
    /// wait is bounded by the request timeout (for the backend's response
    /// headers) plus however long the response bodies take to stream; wrap it
    /// in a timeout to bound it harder.
    pub async fn shutdown(&self) {
        tracing::info!(lb = %self.inner.local_addr, "load balancer shutting down");
        self.inner.cancel.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        tracing::info!(lb = %self.inner.local_addr, "load balancer stopped");
    }
}

async fn accept_loop(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    config: LbConfig,
    cancel: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                tasks.spawn(serve_connection(
                    stream,
                    peer,
                    Arc::clone(&proxy),
                    config.header_read_timeout,
                    cancel.clone(),
                ));
            }
            Err(err) => {
                // Typically EMFILE: back off instead of spinning.
                tracing::warn!(error = %err, "accept failed");
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        }
    }
    // Dropping the listener here refuses new connections.
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    proxy: Arc<Proxy>,
    header_read_timeout: Duration,
    cancel: CancellationToken,
) {
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %err, "set_nodelay failed");
    }
    let service = service_fn(move |req| Arc::clone(&proxy).handle(req, peer));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = cancel.cancelled() => {
            // Finishes the request in progress, if any, then closes.
            conn.as_mut().graceful_shutdown();
            conn.as_mut().await
        }
    };
    if let Err(err) = result {
        tracing::debug!(%peer, error = %err, "client connection ended with an error");
    }
}
