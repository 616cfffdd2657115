//! `swell-lb`: the per-group load balancer: HTTP/1.1 and HTTP/2 (h2c) or raw
//! TCP, round robin or least outstanding, weights, active and passive health,
//! traffic metrics, and an exact drain.
//!
//! One [`LoadBalancer`] fronts one scaling group on one listener. In
//! [`Protocol::Http`] mode it speaks HTTP/1.1 and HTTP/2 with prior knowledge
//! (h2c) on the same port, and reverse-proxies every request over HTTP/1.1
//! keep-alive connections to the instances, streaming bodies both ways. In
//! [`Protocol::Tcp`] mode it pipes each client connection to one instance.
//!
//! Plain HTTP/1.1 requests (no body, or a small one of declared length) take
//! a fast path that does not go through hyper: the head is parsed with
//! `httparse` and rewritten into a buffer, sent on a plain pooled connection
//! to the instance, and the response is copied back as it arrives (framed by
//! `Content-Length`, chunked encoding or connection close). A connection whose
//! next request needs more (h2c, a chunked or large upload, `Expect`,
//! `Upgrade`, HTTP/1.0) is handed over to hyper for the rest of its life. Both
//! paths apply the same rules below.
//!
//! # Balancing and membership
//!
//! [`Algorithm::RoundRobin`] is smooth weighted round robin (nginx's);
//! [`Algorithm::LeastOutstanding`] picks the instance with the fewest requests
//! (connections, in TCP mode) in flight relative to its weight. The controller
//! sets the pool with [`LoadBalancer::set_backends`] or
//! [`LoadBalancer::set_weighted_backends`]; the routing snapshot is swapped
//! atomically and no open connection is touched.
//!
//! # Health
//!
//! With [`LbConfig::health_check`] set, an instance joins routing only once it
//! has passed `healthy_threshold` checks in a row, and leaves it after
//! `unhealthy_threshold` failures in a row. With
//! [`LbConfig::passive_ejection`] set, `consecutive_failures` failed requests
//! in a row (connect errors, timeouts, 5xx answers) eject an instance for
//! `ejection_time`; the last routable instance is never ejected.
//! [`LoadBalancer::unhealthy`] and [`LoadBalancer::health_changes`] tell the
//! controller which instances to replace.
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
//!    went away); in TCP mode, every connection until it closes. `drain`
//!    returns [`DrainOutcome::Drained`] as soon as the count reaches zero, or
//!    [`DrainOutcome::TimedOut`] when the timeout passes first.
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
//! Not here: TLS, WebSocket upgrades (`Upgrade` is stripped as a hop-by-hop
//! header), several listeners sharing one pool (run one [`LoadBalancer`] per
//! listener).

#![warn(missing_docs)]

pub mod bench;
/// Fuzzing bodies for the load balancer's parsers of outside input (client request
/// heads, instance response heads and bodies), shared by the `fuzz/` targets and the
/// stable replay test `tests/fuzz_corpus.rs`. Not part of the API: behind the `testing`
/// feature, so a normal build does not ship them.
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod fuzz_targets {
    /// The HTTP/1.1 fast path's request-head parse (`h1.rs`): never panics, and a head
    /// it serves is rewritten into one the instance frames the same way.
    pub fn h1_request(data: &[u8]) {
        crate::h1::fuzz_request(data);
    }

    /// The fast path's response-head parse and body framing: never panics, and never
    /// consumes more than it was given.
    pub fn h1_response(data: &[u8]) {
        crate::h1::fuzz_response(data);
    }
}
mod h1;
mod health;
mod io;
mod listen;
mod pool;
mod proxy;
mod tcp;
mod traffic;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::io::{ActivityIo, idle_watchdog};
use crate::listen::{Connections, Registration};
use crate::proxy::Proxy;

pub use crate::listen::AddressInUse;

pub use crate::traffic::{
    BackendTraffic, LATENCY_BUCKETS, LatencyHistogram, TrafficSnapshot, WINDOW,
};

/// One instance the load balancer may send requests to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Backend {
    /// Stable identity (the instance id); drains and stats are keyed by it.
    pub id: String,
    /// Where the instance listens (HTTP/1.1 in HTTP mode).
    pub addr: SocketAddr,
}

impl Backend {
    /// A backend with weight 1 (what [`LoadBalancer::set_backends`] gives every one).
    pub fn new(id: impl Into<String>, addr: SocketAddr) -> Self {
        Self {
            id: id.into(),
            addr,
        }
    }

    /// The same backend with a weight, for [`LoadBalancer::set_weighted_backends`].
    pub fn with_weight(self, weight: u32) -> WeightedBackend {
        WeightedBackend {
            backend: self,
            weight,
        }
    }
}

/// A [`Backend`] with its share of the traffic: an instance of weight 3 gets
/// three times the requests (or in-flight requests, with least outstanding)
/// of an instance of weight 1. Weights are clamped to 1..=100.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WeightedBackend {
    /// The instance.
    pub backend: Backend,
    /// Its weight, 1 by default.
    pub weight: u32,
}

impl From<Backend> for WeightedBackend {
    fn from(backend: Backend) -> Self {
        Self { backend, weight: 1 }
    }
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

/// What active health checks last concluded about a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Health {
    /// Not yet passed `healthy_threshold` checks in a row (a new instance while
    /// checks are on): it gets no traffic yet.
    #[default]
    Pending,
    /// Takes traffic (unless ejected or draining). Every backend is healthy
    /// at once when checks are off.
    Healthy,
    /// Failed `unhealthy_threshold` checks in a row: no traffic until it passes
    /// `healthy_threshold` in a row again.
    Unhealthy,
}

/// Counters for one backend id, kept for every backend ever seen.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendStats {
    /// The backend's id.
    pub id: String,
    /// Its last known address (`None` if it was only ever named in a drain).
    pub addr: Option<SocketAddr>,
    /// Its weight in the pool.
    pub weight: u32,
    /// Whether it is in the current pool (may take new requests if healthy).
    pub in_pool: bool,
    /// Requests dispatched to it, retried attempts included (TCP: connections).
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
    /// What active checks say (always `Healthy` when checks are off).
    pub health: Health,
    /// Taken out of routing by passive ejection right now.
    pub ejected: bool,
    /// How many times passive ejection has taken it out.
    pub ejections: u64,
    /// Since when it has been unhealthy or ejected.
    pub unhealthy_since: Option<SystemTime>,
    /// Requests per second dispatched to it over the last [`WINDOW`].
    pub request_rate: f64,
}

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on the same port, proxied
    /// per request (L7).
    #[default]
    Http,
    /// Raw TCP: each client connection is piped to one instance (L4).
    Tcp,
}

/// How the next request (TCP: connection) picks its instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// Smooth weighted round robin.
    #[default]
    RoundRobin,
    /// Fewest requests in flight relative to weight (least connections in TCP
    /// mode); ties rotate.
    LeastOutstanding,
}

/// What an active health check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheckKind {
    /// `GET path` over HTTP/1.1; healthy on a 2xx or 3xx within the timeout.
    Http {
        /// Path and optional query, e.g. `/healthz`.
        path: String,
    },
    /// A TCP connect within the timeout.
    Tcp,
}

/// Active health checking of every instance in the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// What a probe does.
    pub kind: HealthCheckKind,
    /// Time between probes of one instance. Default 5 s.
    pub interval: Duration,
    /// A probe slower than this fails. Default 2 s.
    pub timeout: Duration,
    /// Passed probes in a row that make an instance healthy. Default 2.
    pub healthy_threshold: u32,
    /// Failed probes in a row that make an instance unhealthy. Default 3.
    pub unhealthy_threshold: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            kind: HealthCheckKind::Http {
                path: "/healthz".to_owned(),
            },
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }
}

/// Passive health: ejection of an instance that fails real requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassiveEjection {
    /// Failed requests in a row (connect errors, upstream errors, timeouts and
    /// 5xx answers) that eject an instance. Default 5.
    pub consecutive_failures: u32,
    /// How long an ejected instance gets no traffic. Default 30 s.
    pub ejection_time: Duration,
}

impl Default for PassiveEjection {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            ejection_time: Duration::from_secs(30),
        }
    }
}

/// A configuration that cannot work, naming the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct ConfigError {
    /// The offending field, e.g. `health_check.interval`.
    pub field: &'static str,
    /// The rule it breaks.
    pub rule: String,
}

/// Everything about one load balancer except its address; [`LbConfig::default`]
/// is what [`LoadBalancer::bind`] uses (HTTP, round robin, no health checks,
/// no body limit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbConfig {
    /// What the listener speaks. Default [`Protocol::Http`].
    pub protocol: Protocol,
    /// How instances are picked. Default [`Algorithm::RoundRobin`].
    pub algorithm: Algorithm,
    /// Active health checks; `None` (the default): every instance joins at once.
    pub health_check: Option<HealthCheck>,
    /// Passive ejection; `None` (the default): off.
    pub passive_ejection: Option<PassiveEjection>,
    /// Time from dispatch until the backend's response headers arrive, a retry
    /// included; past it the client gets `504`. It does not limit how long a
    /// response body may stream. Default 60 s.
    pub request_timeout: Duration,
    /// A client connection with no byte read or written for this long is
    /// closed (HTTP: gracefully, after the request in progress). Default 60 s.
    pub idle_timeout: Duration,
    /// Largest request body accepted; a larger one gets `413`. `None` (the
    /// default): unlimited.
    pub max_body_bytes: Option<u64>,
    /// Time allowed for a TCP connect to a backend; past it the connect counts
    /// as failed (and may be retried). Default 5 s.
    pub connect_timeout: Duration,
    /// How long an idle keep-alive connection to a backend is kept. Default 90 s.
    pub pool_idle_timeout: Duration,
    /// How long a client may take to send a request's headers. Default 30 s.
    pub header_read_timeout: Duration,
    /// Dedicated worker threads, each with its own single-threaded runtime,
    /// its own listening socket on the same port (`SO_REUSEPORT`) and its own
    /// connections to the instances, like nginx's worker processes: nothing
    /// of one connection ever crosses threads. 0 (the default): serve on the
    /// runtime that called [`LoadBalancer::bind_with`]. For a busy listener,
    /// use the number of cores. The workers' sockets share their port only
    /// with each other: no other load balancer of this process can bind an
    /// overlapping address while they listen ([`AddressInUse`]).
    pub workers: usize,
    /// Most client connections open at once, over all workers. A connection
    /// above it is accepted and closed at once (the client sees the connection
    /// close before any answer), and counted in
    /// [`TrafficSnapshot::connections_refused_total`]. Default
    /// [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
}

/// [`LbConfig::max_connections`] by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

impl Default for LbConfig {
    fn default() -> Self {
        Self {
            protocol: Protocol::Http,
            algorithm: Algorithm::RoundRobin,
            health_check: None,
            passive_ejection: None,
            request_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            max_body_bytes: None,
            connect_timeout: Duration::from_secs(5),
            pool_idle_timeout: Duration::from_secs(90),
            header_read_timeout: Duration::from_secs(30),
            workers: 0,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl LbConfig {
    /// Checks the rules [`LoadBalancer::bind_with`] relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = |field: &'static str, d: Duration| {
            if d.is_zero() {
                Err(ConfigError {
                    field,
                    rule: "must be greater than 0".into(),
                })
            } else {
                Ok(())
            }
        };
        positive("request_timeout", self.request_timeout)?;
        positive("idle_timeout", self.idle_timeout)?;
        positive("connect_timeout", self.connect_timeout)?;
        positive("header_read_timeout", self.header_read_timeout)?;
        if let Some(h) = &self.health_check {
            positive("health_check.interval", h.interval)?;
            positive("health_check.timeout", h.timeout)?;
            if h.healthy_threshold == 0 {
                return Err(ConfigError {
                    field: "health_check.healthy_threshold",
                    rule: "must be at least 1".into(),
                });
            }
            if h.unhealthy_threshold == 0 {
                return Err(ConfigError {
                    field: "health_check.unhealthy_threshold",
                    rule: "must be at least 1".into(),
                });
            }
            if let HealthCheckKind::Http { path } = &h.kind
                && !path.starts_with('/')
            {
                return Err(ConfigError {
                    field: "health_check.path",
                    rule: format!("must start with / (got {path:?})"),
                });
            }
        }
        if let Some(p) = &self.passive_ejection {
            if p.consecutive_failures == 0 {
                return Err(ConfigError {
                    field: "passive_ejection.consecutive_failures",
                    rule: "must be at least 1".into(),
                });
            }
            positive("passive_ejection.ejection_time", p.ejection_time)?;
        }
        if self.max_body_bytes == Some(0) {
            return Err(ConfigError {
                field: "max_body_bytes",
                rule: "must be greater than 0 (omit it for no limit)".into(),
            });
        }
        if self.max_connections == 0 {
            return Err(ConfigError {
                field: "max_connections",
                rule: "must be at least 1".into(),
            });
        }
        Ok(())
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
    config: LbConfig,
    /// Every worker's pool of instance connections (one when `workers == 0`).
    upstreams: Vec<Arc<upstream::Upstream>>,
    /// Every worker's traffic recorders, and the shared proxy's.
    traffics: Vec<Arc<traffic::Traffic>>,
    /// Client connections open over all workers, and those refused.
    connections: Arc<Connections>,
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
            .field("protocol", &self.inner.config.protocol)
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

    /// Like [`LoadBalancer::bind`], with explicit configuration. An invalid
    /// `config` is an [`std::io::ErrorKind::InvalidInput`] error wrapping a
    /// [`ConfigError`]; an address another live load balancer of this process
    /// holds (or overlaps: the wildcard address of the same port), or that the
    /// kernel reports in use, is an [`std::io::ErrorKind::AddrInUse`] error
    /// wrapping an [`AddressInUse`], whatever either one's `workers`.
    pub async fn bind_with(listen: SocketAddr, config: LbConfig) -> std::io::Result<LoadBalancer> {
        config
            .validate()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let proxy = Arc::new(Proxy::new(&config));
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let mut upstreams = vec![Arc::clone(&proxy.upstream)];
        let mut traffics = vec![Arc::clone(&proxy.traffic)];
        let connections = Arc::new(Connections::new(config.max_connections));
        let local_addr = if config.workers == 0 {
            let (sockets, registration) = listen::bind(listen, 1, false)?;
            let Some(socket) = sockets.into_iter().next() else {
                return Err(std::io::Error::other("no listening socket"));
            };
            let listener = TcpListener::from_std(socket)?;
            let local_addr = listener.local_addr()?;
            tasks.spawn(accept_loop(
                Listening {
                    listener,
                    registration,
                    connections: Arc::clone(&connections),
                },
                Arc::clone(&proxy),
                Arc::new(config.clone()),
                cancel.clone(),
                tasks.clone(),
            ));
            local_addr
        } else {
            let (addr, workers) =
                spawn_workers(listen, &proxy, &config, &connections, &cancel, &tasks)?;
            upstreams = workers.iter().map(|p| Arc::clone(&p.upstream)).collect();
            traffics.extend(workers.iter().map(|p| Arc::clone(&p.traffic)));
            addr
        };
        if let Some(check) = config.health_check.clone() {
            tasks.spawn(health::run(Arc::clone(&proxy.pool), check, cancel.clone()));
        }
        tracing::info!(%local_addr, protocol = ?config.protocol, algorithm = ?config.algorithm,
            "load balancer listening");
        Ok(LoadBalancer {
            inner: Arc::new(Inner {
                proxy,
                local_addr,
                config,
                upstreams,
                traffics,
                connections,
                cancel,
                tasks,
            }),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &LbConfig {
        &self.inner.config
    }

    /// Replaces the pool atomically, every backend with weight 1. A backend
    /// that leaves gets no new request once this returns (its in-flight ones
    /// finish); a backend that (re)joins is no longer draining. Duplicate ids
    /// keep the first entry. With health checks on, a backend never seen
    /// before takes traffic only once it has passed them.
    pub fn set_backends(&self, backends: Vec<Backend>) {
        self.set_weighted_backends(backends.into_iter().map(WeightedBackend::from).collect());
    }

    /// Like [`LoadBalancer::set_backends`], with a weight per backend.
    pub fn set_weighted_backends(&self, backends: Vec<WeightedBackend>) {
        let (joined, left) = self.inner.proxy.pool.set(backends);
        // Idle connections to leavers close now; in-flight ones finish.
        for id in &left {
            if let Some(addr) = self.inner.proxy.pool.state(id).and_then(|s| s.addr()) {
                for u in &self.inner.upstreams {
                    u.forget(addr);
                }
            }
        }
        if !joined.is_empty() || !left.is_empty() {
            let pool: Vec<String> = self.backends().into_iter().map(|b| b.id).collect();
            tracing::info!(lb = %self.inner.local_addr, ?joined, ?left, ?pool, "pool updated");
        }
    }

    /// The configured pool, in the order it was set, healthy or not.
    pub fn backends(&self) -> Vec<Backend> {
        self.inner
            .proxy
            .pool
            .configured()
            .into_iter()
            .map(|m| Backend {
                id: m.id,
                addr: m.addr,
            })
            .collect()
    }

    /// The backends that may take a request now: configured, healthy, not
    /// ejected.
    pub fn routable(&self) -> Vec<Backend> {
        self.inner
            .proxy
            .pool
            .routing()
            .members
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
        // Its idle keep-alive connections close now, not when it is deleted.
        if let Some(addr) = state.addr() {
            for u in &self.inner.upstreams {
                u.forget(addr);
            }
        }
        tracing::info!(%lb, backend = %id, ?outcome, "drain finished");
        outcome
    }

    /// Counters for every backend ever seen, sorted by id.
    pub fn stats(&self) -> Vec<BackendStats> {
        self.inner.proxy.pool.stats()
    }

    /// Configured instances that active checks found unhealthy or that passive
    /// ejection took out, with since when, sorted by id. The controller
    /// replaces one that stays here past its grace period. A new instance
    /// still waiting for its first passed checks is not listed.
    pub fn unhealthy(&self) -> Vec<(String, SystemTime)> {
        self.inner.proxy.pool.unhealthy()
    }

    /// A receiver that sees a new value on every health or membership change;
    /// `changed().await` on it, then read [`LoadBalancer::unhealthy`] or
    /// [`LoadBalancer::stats`].
    pub fn health_changes(&self) -> watch::Receiver<u64> {
        self.inner.proxy.pool.subscribe()
    }

    /// A sample of the traffic: totals, rates and latency percentiles over the
    /// last [`WINDOW`], per load balancer and per instance.
    pub fn traffic(&self) -> TrafficSnapshot {
        let t = traffic::Traffic::sum(&self.inner.traffics);
        let stats = self.stats();
        let routable: Vec<String> = self.routable().into_iter().map(|b| b.id).collect();
        let [p50, p90, p99] = t.latency;
        let in_window = t.requests_in_window;
        let errors_in_window = t.errors_in_window;
        TrafficSnapshot {
            requests_total: t.requests_total,
            errors_total: t.errors_total,
            request_rate: t.request_rate,
            error_rate: t.error_rate,
            error_ratio: if in_window == 0 {
                0.0
            } else {
                (errors_in_window as f64 / in_window as f64).min(1.0)
            },
            in_flight: stats.iter().map(|s| s.in_flight).sum(),
            connections_open: self.inner.connections.open(),
            connections_refused_total: self.inner.connections.refused(),
            latency_histogram: t.latency_histogram,
            latency_p50: p50,
            latency_p90: p90,
            latency_p99: p99,
            backends: stats
                .into_iter()
                .map(|s| BackendTraffic {
                    routable: routable.contains(&s.id),
                    id: s.id,
                    requests_total: s.requests,
                    request_rate: s.request_rate,
                    in_flight: s.in_flight,
                    failures: s.failures,
                })
                .collect(),
        }
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
    /// client connections (TCP mode: every connection), and returns when every
    /// connection has closed. The wait is bounded by the request timeout (for
    /// the backend's response headers) plus however long the response bodies
    /// take to stream; wrap it in a timeout to bound it harder.
    pub async fn shutdown(&self) {
        tracing::info!(lb = %self.inner.local_addr, "load balancer shutting down");
        self.inner.cancel.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        tracing::info!(lb = %self.inner.local_addr, "load balancer stopped");
    }
}

/// Binds `workers` listening sockets on one port with `SO_REUSEPORT` (the
/// kernel spreads new connections over them, as with nginx's `reuseport`) and
/// starts one thread per socket, each running its own accept loop on its own
/// single-threaded runtime. (One shared socket would let the first worker to
/// wake take a whole burst of connections.) No other load balancer of this
/// process may join them (see `listen.rs`). Returns the bound address.
fn spawn_workers(
    listen: SocketAddr,
    proxy: &Arc<Proxy>,
    config: &LbConfig,
    connections: &Arc<Connections>,
    cancel: &CancellationToken,
    tasks: &TaskTracker,
) -> std::io::Result<(SocketAddr, Vec<Arc<Proxy>>)> {
    let (listeners, registration) = listen::bind(listen, config.workers, true)?;
    let local_addr = listeners
        .first()
        .ok_or_else(|| std::io::Error::other("no listening socket"))?
        .local_addr()?;
    let config = Arc::new(config.clone());
    let mut workers = Vec::with_capacity(listeners.len());
    for (i, listener) in listeners.into_iter().enumerate() {
        let proxy = Arc::new(Proxy::sharing(
            &config,
            Arc::clone(&proxy.pool),
            Arc::new(traffic::Traffic::new()),
        ));
        workers.push(Arc::clone(&proxy));
        // The worker's own copies: its connections clone and drop them, and
        // that should touch no cache line another worker writes. A child
        // token is cancelled with its parent.
        let (config, cancel, token) = (
            Arc::new(LbConfig::clone(&config)),
            cancel.child_token(),
            tasks.token(),
        );
        let (registration, connections) = (Arc::clone(&registration), Arc::clone(connections));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name(format!("swell-lb-{i}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let local = TaskTracker::new();
                    match TcpListener::from_std(listener) {
                        Ok(listener) => {
                            let listening = Listening {
                                listener,
                                registration,
                                connections,
                            };
                            accept_loop(listening, proxy, config, cancel, local.clone()).await;
                        }
                        Err(err) => {
                            tracing::error!(error = %err, "load balancer worker could not listen")
                        }
                    }
                    local.close();
                    local.wait().await;
                });
                drop(token);
            })?;
    }
    Ok((local_addr, workers))
}

/// One listening socket with what its accept loop shares with the load
/// balancer's other sockets.
struct Listening {
    listener: TcpListener,
    /// The address's record in the registry: released once every socket of the
    /// load balancer is closed.
    registration: Arc<Registration>,
    /// The load balancer's connection cap.
    connections: Arc<Connections>,
}

async fn accept_loop(
    listening: Listening,
    proxy: Arc<Proxy>,
    config: Arc<LbConfig>,
    cancel: CancellationToken,
    tasks: TaskTracker,
) {
    let Listening {
        listener,
        registration,
        connections,
    } = listening;
    // Registered once, not once per accepted connection.
    let cancelled = cancel.cancelled();
    tokio::pin!(cancelled);
    loop {
        let accepted = tokio::select! {
            () = &mut cancelled => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Over the cap: closed at once rather than left waiting in the
                // backlog, so the client knows now and no queue builds up.
                let Some(slot) = connections.admit() else {
                    tracing::debug!(%peer, max = config.max_connections,
                        "connection cap reached: closing the new connection");
                    drop(stream);
                    continue;
                };
                let (proxy, config, cancel) =
                    (Arc::clone(&proxy), Arc::clone(&config), cancel.clone());
                match config.protocol {
                    Protocol::Http => {
                        tasks.spawn(async move {
                            serve_http(stream, peer, proxy, config, cancel).await;
                            drop(slot);
                        });
                    }
                    Protocol::Tcp => {
                        tasks.spawn(async move {
                            tcp::serve(stream, peer, proxy, config, cancel).await;
                            drop(slot);
                        });
                    }
                }
            }
            Err(err) => {
                // Typically EMFILE: back off instead of spinning.
                tracing::warn!(error = %err, "accept failed");
                tokio::select! {
                    () = &mut cancelled => break,
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        }
    }
    // Dropping the listener here refuses new connections; the address is free
    // for another load balancer once every socket of this one is closed.
    drop(listener);
    drop(registration);
}

async fn serve_http(
    stream: TcpStream,
    peer: SocketAddr,
    proxy: Arc<Proxy>,
    config: Arc<LbConfig>,
    cancel: CancellationToken,
) {
    // TCP_NODELAY: inherited from the listening socket.
    h1::serve(stream, peer, proxy, config, cancel).await;
}

/// Serves a client connection with hyper: HTTP/2 with prior knowledge, and
/// the HTTP/1.1 requests the fast path (`h1.rs`) hands over.
async fn serve_hyper<T>(
    io: T,
    peer: SocketAddr,
    proxy: Arc<Proxy>,
    config: Arc<LbConfig>,
    cancel: CancellationToken,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (io, activity) = ActivityIo::new(io);
    let service = service_fn(move |req| Arc::clone(&proxy).handle(req, peer));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let idle = idle_watchdog(activity, config.idle_timeout);
    tokio::pin!(idle);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = cancel.cancelled() => {
            // Finishes the request in progress, if any, then closes.
            conn.as_mut().graceful_shutdown();
            conn.as_mut().await
        }
        () = &mut idle => {
            tracing::debug!(%peer, "client connection idle: closing");
            conn.as_mut().graceful_shutdown();
            conn.as_mut().await
        }
    };
    if let Err(err) = result {
        tracing::debug!(%peer, error = %err, "client connection ended with an error");
    }
}
