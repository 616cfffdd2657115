//! Integration tests of balancing, health, listeners, limits and metrics: a
//! real load balancer in front of real tiny backends, all on 127.0.0.1.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use swell_lb::{
    Algorithm, Backend, DrainOutcome, Health, HealthCheck, HealthCheckKind, LbConfig, LoadBalancer,
    PassiveEjection, Protocol,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------- backends

/// An HTTP backend: `/` answers its id with the status in `status`;
/// `/healthz` answers `health`; `?delay_ms=N` delays; `/echo` echoes the body.
struct HttpBackend {
    id: String,
    addr: SocketAddr,
    hits: Arc<AtomicU64>,
    status: Arc<AtomicU16>,
    health: Arc<AtomicU16>,
    /// Connections open now.
    conns: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl HttpBackend {
    async fn start(id: &str) -> HttpBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let b = HttpBackend {
            id: id.to_owned(),
            addr,
            hits: Arc::new(AtomicU64::new(0)),
            status: Arc::new(AtomicU16::new(200)),
            health: Arc::new(AtomicU16::new(200)),
            conns: Arc::new(AtomicU64::new(0)),
            stop: CancellationToken::new(),
        };
        let conns = Arc::clone(&b.conns);
        let (id, hits, status, health, stop) = (
            b.id.clone(),
            Arc::clone(&b.hits),
            Arc::clone(&b.status),
            Arc::clone(&b.health),
            b.stop.clone(),
        );
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    () = stop.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((s, _)) => s,
                        Err(_) => continue,
                    },
                };
                let (id, hits, status, health) = (
                    id.clone(),
                    Arc::clone(&hits),
                    Arc::clone(&status),
                    Arc::clone(&health),
                );
                let conns = Arc::clone(&conns);
                conns.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (id, hits, status, health) = (
                            id.clone(),
                            Arc::clone(&hits),
                            Arc::clone(&status),
                            Arc::clone(&health),
                        );
                        async move {
                            let code = if req.uri().path() == "/healthz" {
                                health.load(Ordering::SeqCst)
                            } else {
                                hits.fetch_add(1, Ordering::SeqCst);
                                status.load(Ordering::SeqCst)
                            };
                            let delay: u64 = req
                                .uri()
                                .query()
                                .and_then(|q| q.strip_prefix("delay_ms="))
                                .and_then(|v| v.parse().ok())
                                .unwrap_or(0);
                            tokio::time::sleep(Duration::from_millis(delay)).await;
                            let host = req
                                .headers()
                                .get("host")
                                .map(|v| v.to_str().unwrap().to_owned())
                                .unwrap_or_default();
                            let body = if req.uri().path() == "/echo" {
                                req.into_body().collect().await.unwrap().to_bytes()
                            } else {
                                Bytes::from(id)
                            };
                            let mut resp = Response::new(Full::new(body));
                            *resp.status_mut() = StatusCode::from_u16(code).unwrap();
                            resp.headers_mut()
                                .insert("x-seen-host", host.parse().unwrap());
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                    conns.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        b
    }

    fn backend(&self) -> Backend {
        Backend::new(self.id.clone(), self.addr)
    }

    fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A TCP backend that answers every chunk it reads with `<id>:<chunk>`.
async fn tcp_echo(id: &'static str) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    let mut out = format!("{id}:").into_bytes();
                    out.extend_from_slice(&buf[..n]);
                    if s.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Backend::new(id, addr)
}

// ---------------------------------------------------------------- helpers

async fn lb_with(config: LbConfig) -> LoadBalancer {
    LoadBalancer::bind_with("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap()
}

type H1Client = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn client() -> H1Client {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn get(client: &H1Client, lb: &LoadBalancer, path: &str) -> (StatusCode, String) {
    let resp = client
        .get(format!("http://{}{path}", lb.local_addr()).parse().unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// Polls `cond` every 10 ms for up to 5 s.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let ok = tokio::time::timeout(Duration::from_secs(5), async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(ok.is_ok(), "never happened: {what}");
}

fn routable_ids(lb: &LoadBalancer) -> Vec<String> {
    let mut ids: Vec<String> = lb.routable().into_iter().map(|b| b.id).collect();
    ids.sort();
    ids
}

fn fast_checks(kind: HealthCheckKind) -> HealthCheck {
    HealthCheck {
        kind,
        interval: Duration::from_millis(40),
        timeout: Duration::from_millis(500),
        healthy_threshold: 2,
        unhealthy_threshold: 2,
    }
}

// ---------------------------------------------------------------- balancing

#[tokio::test]
async fn weights_split_traffic_in_proportion() {
    let (a, b) = (HttpBackend::start("a").await, HttpBackend::start("b").await);
    let lb = lb_with(LbConfig::default()).await;
    lb.set_weighted_backends(vec![a.backend().with_weight(3), b.backend().with_weight(1)]);
    let client = client();
    let mut seen = HashMap::<String, u32>::new();
    for _ in 0..40 {
        let (status, body) = get(&client, &lb, "/").await;
        assert_eq!(status, StatusCode::OK);
        *seen.entry(body).or_default() += 1;
    }
    assert_eq!(seen, HashMap::from([("a".into(), 30), ("b".into(), 10)]));
    let stats = lb.stats();
    assert_eq!((stats[0].weight, stats[1].weight), (3, 1));
}

#[tokio::test]
async fn least_outstanding_sends_new_requests_away_from_a_busy_instance() {
    let (a, b) = (HttpBackend::start("a").await, HttpBackend::start("b").await);
    let lb = lb_with(LbConfig {
        algorithm: Algorithm::LeastOutstanding,
        ..LbConfig::default()
    })
    .await;
    lb.set_backends(vec![a.backend(), b.backend()]);
    let slow = tokio::spawn({
        let lb = lb.clone();
        async move { get(&client(), &lb, "/?delay_ms=500").await }
    });
    eventually("one request in flight", || {
        lb.stats().iter().map(|s| s.in_flight).sum::<u64>() == 1
    })
    .await;
    let busy = lb
        .stats()
        .into_iter()
        .find(|s| s.in_flight == 1)
        .unwrap()
        .id;
    let client = client();
    for _ in 0..10 {
        let (status, body) = get(&client, &lb, "/").await;
        assert_eq!(status, StatusCode::OK);
        assert_ne!(body, busy, "a new request went to the busy instance");
    }
    assert_eq!(slow.await.unwrap().1, busy);
    // Round robin would have sent half of them to the busy one.
    let (ha, hb) = (a.hits(), b.hits());
    assert_eq!(ha + hb, 11);
    assert_eq!(ha.min(hb), 1);
}

// ---------------------------------------------------------------- health

#[tokio::test]
async fn http_health_checks_gate_membership_and_report_unhealthy_instances() {
    let (a, b) = (HttpBackend::start("a").await, HttpBackend::start("b").await);
    b.health.store(500, Ordering::SeqCst);
    let lb = lb_with(LbConfig {
        health_check: Some(fast_checks(HealthCheckKind::Http {
            path: "/healthz".into(),
        })),
        ..LbConfig::default()
    })
    .await;
    let mut changes = lb.health_changes();
    lb.set_backends(vec![a.backend(), b.backend()]);
    // Nothing is routable before its first passed checks.
    assert!(lb.routable().is_empty());
    assert_eq!(
        get(&client(), &lb, "/").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    eventually("a healthy, b unhealthy", || {
        routable_ids(&lb) == ["a"] && lb.unhealthy().len() == 1
    })
    .await;
    assert_eq!(lb.unhealthy()[0].0, "b");
    assert!(changes.has_changed().unwrap());
    changes.mark_unchanged();
    let client = client();
    for _ in 0..6 {
        assert_eq!(get(&client, &lb, "/").await, (StatusCode::OK, "a".into()));
    }
    assert_eq!(b.hits(), 0, "b got traffic before it was healthy");

    // b recovers and joins; a fails and leaves; the controller hears of both.
    b.health.store(200, Ordering::SeqCst);
    a.health.store(503, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(5), changes.changed())
        .await
        .unwrap()
        .unwrap();
    eventually("b healthy, a unhealthy", || {
        routable_ids(&lb) == ["b"] && lb.unhealthy().iter().map(|u| &u.0).eq(["a"])
    })
    .await;
    let stats = lb.stats();
    assert_eq!(
        (stats[0].health, stats[1].health),
        (Health::Unhealthy, Health::Healthy)
    );
    assert!(stats[0].unhealthy_since.is_some());
    let a_hits = a.hits();
    for _ in 0..6 {
        assert_eq!(get(&client, &lb, "/").await, (StatusCode::OK, "b".into()));
    }
    assert_eq!(a.hits(), a_hits);
}

#[tokio::test]
async fn tcp_health_checks_find_a_dead_port() {
    let a = HttpBackend::start("a").await;
    // Bound but never listening, for the whole test: connecting is refused, and no other
    // test can take the port (a released one could be, and then it answered).
    let reserved = tokio::net::TcpSocket::new_v4().unwrap();
    reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let dead = Backend::new("dead", reserved.local_addr().unwrap());
    let lb = lb_with(LbConfig {
        health_check: Some(fast_checks(HealthCheckKind::Tcp)),
        ..LbConfig::default()
    })
    .await;
    lb.set_backends(vec![a.backend(), dead]);
    eventually("dead reported", || {
        routable_ids(&lb) == ["a"] && lb.unhealthy().iter().map(|u| &u.0).eq(["dead"])
    })
    .await;
}

#[tokio::test]
async fn checks_off_means_an_instance_joins_at_once() {
    let a = HttpBackend::start("a").await;
    let lb = lb_with(LbConfig::default()).await;
    lb.set_backends(vec![a.backend()]);
    assert_eq!(routable_ids(&lb), ["a"]);
    assert_eq!(lb.stats()[0].health, Health::Healthy);
}

#[tokio::test]
async fn passive_ejection_takes_a_failing_instance_out_then_back() {
    let (a, b) = (HttpBackend::start("a").await, HttpBackend::start("b").await);
    b.status.store(500, Ordering::SeqCst);
    let lb = lb_with(LbConfig {
        passive_ejection: Some(PassiveEjection {
            consecutive_failures: 3,
            ejection_time: Duration::from_millis(400),
        }),
        ..LbConfig::default()
    })
    .await;
    lb.set_backends(vec![a.backend(), b.backend()]);
    let client = client();
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(get(&client, &lb, "/").await.0);
    }
    // Round robin: b's 3rd failure is the 6th request; after it, only a.
    assert_eq!(b.hits(), 3);
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::INTERNAL_SERVER_ERROR)
            .count(),
        3
    );
    let b_stats = lb.stats().into_iter().find(|s| s.id == "b").unwrap();
    assert!(b_stats.ejected);
    assert_eq!(b_stats.ejections, 1);
    assert_eq!(
        lb.unhealthy()
            .iter()
            .map(|u| u.0.as_str())
            .collect::<Vec<_>>(),
        ["b"]
    );
    assert_eq!(routable_ids(&lb), ["a"]);
    // The ejection ends by itself; b is healthy again by then.
    b.status.store(200, Ordering::SeqCst);
    eventually("b readmitted", || routable_ids(&lb) == ["a", "b"]).await;
    assert!(lb.unhealthy().is_empty());
    let mut seen = HashMap::<String, u32>::new();
    for _ in 0..4 {
        *seen.entry(get(&client, &lb, "/").await.1).or_default() += 1;
    }
    assert_eq!(seen, HashMap::from([("a".into(), 2), ("b".into(), 2)]));
}

#[tokio::test]
async fn passive_ejection_counts_connect_failures_and_spares_the_last_instance() {
    // Bound but never listening, for the whole test: connecting is refused, and no other
    // test can take the port (a released one could be, and then it answered).
    let reserved = tokio::net::TcpSocket::new_v4().unwrap();
    reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let dead = Backend::new("dead", reserved.local_addr().unwrap());
    let a = HttpBackend::start("a").await;
    let lb = lb_with(LbConfig {
        passive_ejection: Some(PassiveEjection {
            consecutive_failures: 2,
            ejection_time: Duration::from_secs(60),
        }),
        ..LbConfig::default()
    })
    .await;
    lb.set_backends(vec![dead, a.backend()]);
    let client = client();
    for _ in 0..10 {
        // Retried on `a` when `dead` refuses, so every request succeeds.
        assert_eq!(get(&client, &lb, "/").await.0, StatusCode::OK);
    }
    assert_eq!(routable_ids(&lb), ["a"]);
    assert_eq!(lb.stats()[1].failures, 2, "dead was tried until ejected");
    // `a` failing now would leave nothing: it is never ejected.
    a.status.store(503, Ordering::SeqCst);
    for _ in 0..5 {
        get(&client, &lb, "/").await;
    }
    assert_eq!(routable_ids(&lb), ["a"]);
}

// ---------------------------------------------------------------- listeners

#[tokio::test]
async fn http2_prior_knowledge_is_served_and_proxied_to_http1_instances() {
    let (a, b) = (HttpBackend::start("a").await, HttpBackend::start("b").await);
    let lb = lb_with(LbConfig::default()).await;
    lb.set_backends(vec![a.backend(), b.backend()]);
    let h2: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    // Concurrent streams on one h2 connection, spread over both instances.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (h2, addr) = (h2.clone(), lb.local_addr());
        tasks.push(tokio::spawn(async move {
            let resp = h2
                .get(format!("http://{addr}/?delay_ms=50").parse().unwrap())
                .await
                .unwrap();
            assert_eq!(resp.version(), hyper::Version::HTTP_2);
            assert_eq!(resp.status(), StatusCode::OK);
            let host = resp.headers()["x-seen-host"].to_str().unwrap().to_owned();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (String::from_utf8(body.to_vec()).unwrap(), host)
        }));
    }
    let mut seen = HashMap::<String, u32>::new();
    for t in tasks {
        let (body, host) = t.await.unwrap();
        assert_eq!(host, lb.local_addr().to_string(), "Host from :authority");
        *seen.entry(body).or_default() += 1;
    }
    assert_eq!(seen, HashMap::from([("a".into(), 4), ("b".into(), 4)]));
    // A body over h2 reaches the instance too.
    let resp = h2
        .request(
            Request::post(format!("http://{}/echo", lb.local_addr()))
                .body(Full::new(Bytes::from("over h2")))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        resp.into_body().collect().await.unwrap().to_bytes(),
        "over h2"
    );
    // And HTTP/1.1 still works on the same port.
    assert_eq!(get(&client(), &lb, "/").await.0, StatusCode::OK);
}

#[tokio::test]
async fn tcp_mode_pipes_connections_and_balances_them() {
    let (a, b) = (tcp_echo("a").await, tcp_echo("b").await);
    let lb = lb_with(LbConfig {
        protocol: Protocol::Tcp,
        ..LbConfig::default()
    })
    .await;
    lb.set_backends(vec![a, b]);
    let mut answers = Vec::new();
    for i in 0..4 {
        let mut s = TcpStream::connect(lb.local_addr()).await.unwrap();
        let msg = format!("hello {i}");
        s.write_all(msg.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 64];
        let n = s.read(&mut buf).await.unwrap();
        answers.push(String::from_utf8(buf[..n].to_vec()).unwrap());
    }
    assert_eq!(
        answers,
        ["a:hello 0", "b:hello 1", "a:hello 2", "b:hello 3"]
    );
    let t = lb.traffic();
    assert_eq!(t.requests_total, 4);
}

#[tokio::test]
async fn tcp_mode_least_connections_and_drain_waits_for_connections_to_close() {
    let (a, b) = (tcp_echo("a").await, tcp_echo("b").await);
    let lb = lb_with(LbConfig {
        protocol: Protocol::Tcp,
        algorithm: Algorithm::LeastOutstanding,
        ..LbConfig::default()
    })
    .await;
    lb.set_backends(vec![a, b]);
    async fn open(lb: &LoadBalancer) -> (TcpStream, String) {
        let mut s = TcpStream::connect(lb.local_addr()).await.unwrap();
        s.write_all(b"x").await.unwrap();
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf).await.unwrap();
        let who = String::from_utf8(buf[..n].to_vec()).unwrap();
        (s, who.trim_end_matches(":x").to_owned())
    }
    // Two long-lived connections to one instance...
    let (c1, first) = open(&lb).await;
    let (c2, second) = open(&lb).await;
    assert_ne!(first, second);
    drop(c2);
    eventually("second connection closed", || {
        lb.stats().iter().map(|s| s.in_flight).sum::<u64>() == 1
    })
    .await;
    // ...then new ones go to the instance with fewer connections.
    let (c3, third) = open(&lb).await;
    assert_eq!(third, second);
    // Draining `first` waits for c1 to close; new connections go elsewhere.
    let drain = tokio::spawn({
        let (lb, first) = (lb.clone(), first.clone());
        async move { lb.drain(&first, Duration::from_secs(5)).await }
    });
    eventually("drain started", || lb.routable().len() == 1).await;
    let (_c4, fourth) = open(&lb).await;
    assert_eq!(fourth, second);
    assert!(!drain.is_finished());
    drop(c1);
    assert_eq!(drain.await.unwrap(), DrainOutcome::Drained);
    assert_eq!(lb.requests_after_drain(&first), 0);
    drop(c3);
}

#[tokio::test]
async fn tcp_mode_with_no_instance_closes_the_connection() {
    let lb = lb_with(LbConfig {
        protocol: Protocol::Tcp,
        ..LbConfig::default()
    })
    .await;
    let mut s = TcpStream::connect(lb.local_addr()).await.unwrap();
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert_eq!(lb.traffic().errors_total, 1);
}

// ---------------------------------------------------------------- limits

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let a = HttpBackend::start("a").await;
    let lb = lb_with(LbConfig {
        max_body_bytes: Some(1024),
        ..LbConfig::default()
    })
    .await;
    lb.set_backends(vec![a.backend()]);
    let client = client();
    let post = |body: Bytes| {
        Request::post(format!("http://{}/echo", lb.local_addr()))
            .body(Full::new(body))
            .unwrap()
    };
    // Declared length over the limit: refused before any instance sees it.
    let resp = client
        .request(post(Bytes::from(vec![b'x'; 2048])))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(a.hits(), 0);
    // At the limit: fine.
    let resp = client
        .request(post(Bytes::from(vec![b'y'; 1024])))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.into_body().collect().await.unwrap().to_bytes().len(),
        1024
    );

    // A chunked body (no declared length) that grows past the limit.
    let streamed = Chunks((0..8).map(|_| Bytes::from(vec![b'z'; 512])).collect());
    let chunked: Client<_, _> = Client::builder(TokioExecutor::new()).build_http();
    let resp = chunked
        .request(
            Request::post(format!("http://{}/echo", lb.local_addr()))
                .body(streamed)
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let t = lb.traffic();
    assert_eq!(
        (t.requests_total, t.errors_total),
        (3, 0),
        "413 is not a server error"
    );
}

/// A request body of several chunks and no declared length (sent chunked).
struct Chunks(Vec<Bytes>);

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let next = (!self.0.is_empty()).then(|| Ok(Frame::data(self.0.remove(0))));
        std::task::Poll::Ready(next)
    }
}

#[tokio::test]
async fn an_idle_client_connection_is_closed() {
    let a = HttpBackend::start("a").await;
    let lb = lb_with(LbConfig {
        idle_timeout: Duration::from_millis(200),
        ..LbConfig::default()
    })
    .await;
    lb.set_backends(vec![a.backend()]);
    let mut s = TcpStream::connect(lb.local_addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let started = tokio::time::Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .expect("idle connection was not closed")
        .unwrap();
    assert_eq!(n, 0);
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn invalid_config_is_refused_naming_the_field() {
    let err = LoadBalancer::bind_with(
        "127.0.0.1:0".parse().unwrap(),
        LbConfig {
            health_check: Some(HealthCheck {
                healthy_threshold: 0,
                ..HealthCheck::default()
            }),
            ..LbConfig::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert_eq!(
        err.to_string(),
        "health_check.healthy_threshold: must be at least 1"
    );
}

// ---------------------------------------------------------------- metrics

#[tokio::test]
async fn traffic_snapshot_counts_rates_errors_and_latency() {
    let (a, b) = (HttpBackend::start("a").await, HttpBackend::start("b").await);
    b.status.store(502, Ordering::SeqCst);
    let lb = lb_with(LbConfig::default()).await;
    let client = client();
    // One 503 from the proxy itself while the pool is empty.
    assert_eq!(
        get(&client, &lb, "/").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    lb.set_backends(vec![a.backend(), b.backend()]);
    for _ in 0..10 {
        get(&client, &lb, "/?delay_ms=5").await;
    }
    let t = lb.traffic();
    assert_eq!(t.requests_total, 11);
    assert_eq!(t.errors_total, 6);
    assert!((t.error_ratio - 6.0 / 11.0).abs() < 1e-9);
    assert!(t.request_rate > 0.0);
    assert_eq!(t.in_flight, 0);
    let p50 = t.latency_p50.unwrap();
    assert!(p50 >= Duration::from_millis(4), "{p50:?}");
    assert!(t.latency_p99.unwrap() >= p50);
    assert_eq!(t.backends.len(), 2);
    assert_eq!(t.backends[0].requests_total, 5);
    assert!(t.backends[0].request_rate > 0.0);
    // The histogram since start counts every answered HTTP request.
    assert_eq!(t.latency_histogram.count, 11);
    let (_, within_10s) = t.latency_histogram.buckets.last().copied().unwrap();
    assert_eq!(within_10s, 11);
}

#[tokio::test]
async fn dedicated_workers_share_one_port_one_pool_and_shut_down() {
    let (a, b) = (HttpBackend::start("a").await, HttpBackend::start("b").await);
    let lb = lb_with(LbConfig {
        workers: 2,
        ..LbConfig::default()
    })
    .await;
    lb.set_backends(vec![a.backend(), b.backend()]);
    // New connections land on either worker; the pool and the counters are shared.
    for _ in 0..20 {
        let mut s = TcpStream::connect(lb.local_addr()).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    }
    assert_eq!(a.hits() + b.hits(), 20);
    assert!(
        a.hits() >= 8 && b.hits() >= 8,
        "{} / {}",
        a.hits(),
        b.hits()
    );
    assert_eq!(lb.traffic().requests_total, 20);
    tokio::time::timeout(Duration::from_secs(5), lb.shutdown())
        .await
        .expect("shutdown hung");
    assert!(TcpStream::connect(lb.local_addr()).await.is_err());
}

#[tokio::test]
async fn a_drain_closes_the_idle_keep_alive_connections_to_the_instance() {
    let (a, b) = (HttpBackend::start("a").await, HttpBackend::start("b").await);
    let lb = lb_with(LbConfig::default()).await;
    lb.set_backends(vec![a.backend(), b.backend()]);
    let client = client();
    for _ in 0..4 {
        assert_eq!(get(&client, &lb, "/").await.0, StatusCode::OK);
    }
    assert!(
        a.conns.load(Ordering::SeqCst) >= 1,
        "no pooled connection to a"
    );
    assert_eq!(
        lb.drain("a", Duration::from_secs(5)).await,
        DrainOutcome::Drained
    );
    eventually("a's idle connections closed", || {
        a.conns.load(Ordering::SeqCst) == 0
    })
    .await;
    assert!(
        b.conns.load(Ordering::SeqCst) >= 1,
        "b's connections are kept"
    );
    assert_eq!(get(&client, &lb, "/").await, (StatusCode::OK, "b".into()));
}
