//! Integration tests: a real load balancer in front of real tiny HTTP backends,
//! all on 127.0.0.1. No mocks.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use swell_lb::{Backend, DrainOutcome, LbConfig, LoadBalancer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------- test backend

/// A tiny backend: answers with its own id; `?delay_ms=N` delays the answer;
/// `/echo` returns the request body; `x-seen-*` headers report what it received.
struct TestBackend {
    id: String,
    addr: SocketAddr,
    hits: Arc<AtomicU64>,
    accept: JoinHandle<()>,
    /// Cancelled by [`TestBackend::stop`]: every connection closes (after the
    /// response in progress, like a process exiting cleanly).
    stopped: CancellationToken,
}

impl TestBackend {
    async fn start(id: &str) -> TestBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let stopped = CancellationToken::new();
        let accept = tokio::spawn({
            let id = id.to_owned();
            let hits = Arc::clone(&hits);
            let stopped = stopped.clone();
            async move {
                loop {
                    let stream = tokio::select! {
                        () = stopped.cancelled() => return, // drops the listener
                        accepted = listener.accept() => match accepted {
                            Ok((stream, _)) => stream,
                            Err(_) => continue,
                        },
                    };
                    let id = id.clone();
                    let hits = Arc::clone(&hits);
                    let stopped = stopped.clone();
                    tokio::spawn(async move {
                        let svc = service_fn(move |req| {
                            hits.fetch_add(1, Ordering::SeqCst);
                            backend_answer(id.clone(), req)
                        });
                        let conn =
                            http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
                        tokio::pin!(conn);
                        tokio::select! {
                            _ = conn.as_mut() => {}
                            () = stopped.cancelled() => {
                                conn.as_mut().graceful_shutdown();
                                let _ = conn.await;
                            }
                        }
                    });
                }
            }
        });
        TestBackend {
            id: id.to_owned(),
            addr,
            hits,
            accept,
            stopped,
        }
    }

    /// Stops the backend: its port refuses connections from when this returns,
    /// and its open connections close.
    async fn stop(&mut self) {
        self.stopped.cancel();
        (&mut self.accept).await.unwrap();
    }

    fn backend(&self) -> Backend {
        Backend {
            id: self.id.clone(),
            addr: self.addr,
        }
    }

    fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.stopped.cancel();
    }
}

async fn backend_answer(
    id: String,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let delay_ms: u64 = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("delay_ms=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    }
    let mut seen = Vec::new();
    for name in [
        "x-forwarded-for",
        "x-forwarded-proto",
        "forwarded",
        "x-secret",
        "proxy-authorization",
        "host",
    ] {
        let v: Vec<&str> = req
            .headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        if !v.is_empty() {
            seen.push((format!("x-seen-{name}"), v.join(" | ")));
        }
    }
    let body = if req.uri().path() == "/echo" {
        req.into_body().collect().await.unwrap().to_bytes()
    } else {
        Bytes::from(id.clone())
    };
    let mut resp = Response::new(Full::new(body));
    resp.headers_mut()
        .insert("x-backend", HeaderValue::from_str(&id).unwrap());
    resp.headers_mut()
        .insert("keep-alive", HeaderValue::from_static("timeout=5"));
    for (k, v) in seen {
        resp.headers_mut().insert(
            hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(&v).unwrap(),
        );
    }
    Ok(resp)
}

/// An address where nothing listens: connecting to it is refused. The port is held by a
/// socket bound but never listening, kept for the test process's life, so that no
/// other test can take it (a released port could be, and then it answered).
async fn dead_backend(id: &str) -> Backend {
    let reserved = tokio::net::TcpSocket::new_v4().unwrap();
    reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = reserved.local_addr().unwrap();
    std::mem::forget(reserved);
    Backend {
        id: id.to_owned(),
        addr,
    }
}

// ---------------------------------------------------------------- test client

type TestClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

struct Answer {
    status: StatusCode,
    headers: hyper::HeaderMap,
    body: String,
}

async fn send(
    client: &TestClient,
    lb: &LoadBalancer,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Answer {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", lb.local_addr()));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Full::new(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

async fn get(client: &TestClient, lb: &LoadBalancer, path: &str) -> Answer {
    send(client, lb, Method::GET, path, &[], Bytes::new()).await
}

async fn lb() -> LoadBalancer {
    LoadBalancer::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn stats_of(lb: &LoadBalancer, id: &str) -> swell_lb::BackendStats {
    lb.stats().into_iter().find(|s| s.id == id).unwrap()
}

/// Waits (bounded) until `id` has `n` requests in flight.
async fn wait_in_flight(lb: &LoadBalancer, id: &str, n: u64) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while lb.stats().iter().find(|s| s.id == id).map(|s| s.in_flight) != Some(n) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{id} never had {n} requests in flight"));
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn round_robin_spreads_requests_evenly() {
    let backends = [
        TestBackend::start("a").await,
        TestBackend::start("b").await,
        TestBackend::start("c").await,
    ];
    let lb = lb().await;
    lb.set_backends(backends.iter().map(TestBackend::backend).collect());
    let client = client();
    let mut seen: HashMap<String, u64> = HashMap::new();
    for _ in 0..30 {
        let a = get(&client, &lb, "/").await;
        assert_eq!(a.status, StatusCode::OK);
        *seen.entry(a.body).or_default() += 1;
    }
    assert_eq!(
        seen,
        HashMap::from([("a".into(), 10), ("b".into(), 10), ("c".into(), 10)])
    );
    for b in &backends {
        assert_eq!(b.hits(), 10);
        let s = stats_of(&lb, &b.id);
        assert_eq!((s.requests, s.in_flight, s.failures), (10, 0, 0));
        assert!(s.last_request_at.is_some());
    }
}

#[tokio::test]
async fn set_backends_swap_under_load_fails_nothing() {
    let (a, b, c) = (
        TestBackend::start("a").await,
        TestBackend::start("b").await,
        TestBackend::start("c").await,
    );
    let lb = lb().await;
    lb.set_backends(vec![a.backend(), b.backend()]);
    let done = Arc::new(AtomicU64::new(0));
    let (swapped_tx, swapped_rx) = tokio::sync::watch::channel(false);
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (lb, done, mut swapped) = (lb.clone(), Arc::clone(&done), swapped_rx.clone());
        workers.push(tokio::spawn(async move {
            let client = client();
            let mut bodies = Vec::new();
            // Bounded: 25 requests before the swap is seen, 25 after.
            for phase in 0..2 {
                if phase == 1 {
                    swapped.wait_for(|s| *s).await.unwrap();
                }
                for _ in 0..25 {
                    let a = get(&client, &lb, "/?delay_ms=5").await;
                    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
                    bodies.push((phase, a.body));
                    done.fetch_add(1, Ordering::SeqCst);
                }
            }
            bodies
        }));
    }
    // Swap while the workers are mid-way through their first phase.
    tokio::time::timeout(Duration::from_secs(10), async {
        while done.load(Ordering::SeqCst) < 40 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .unwrap();
    lb.set_backends(vec![b.backend(), c.backend()]);
    let a_requests_at_swap = stats_of(&lb, "a").requests;
    swapped_tx.send(true).unwrap();

    let mut after = HashMap::<String, u64>::new();
    for w in workers {
        for (phase, body) in w.await.unwrap() {
            if phase == 1 {
                *after.entry(body).or_default() += 1;
            }
        }
    }
    let a_stats = stats_of(&lb, "a");
    assert_eq!(a_stats.requests, a_requests_at_swap, "a got a new request");
    assert!(!a_stats.in_pool);
    assert_eq!(a_stats.in_flight, 0);
    assert_eq!(after.get("a"), None);
    assert_eq!(after.values().sum::<u64>(), 100);
    assert!(after.get("c").copied().unwrap_or(0) > 0);
    assert!(lb.stats().iter().all(|s| s.failures == 0));
    assert_eq!(a.hits(), a_requests_at_swap);
}

#[tokio::test]
async fn drain_waits_for_a_slow_request_while_load_goes_elsewhere() {
    let (a, b) = (TestBackend::start("a").await, TestBackend::start("b").await);
    let lb = lb().await;
    lb.set_backends(vec![a.backend()]);
    let slow = tokio::spawn({
        let lb = lb.clone();
        async move { get(&client(), &lb, "/?delay_ms=300").await }
    });
    wait_in_flight(&lb, "a", 1).await;
    lb.set_backends(vec![a.backend(), b.backend()]);

    // Steady load through the whole drain, on keep-alive client connections.
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut load = Vec::new();
    for _ in 0..3 {
        let (lb, stop) = (lb.clone(), Arc::clone(&stop));
        load.push(tokio::spawn(async move {
            let client = client();
            let mut answers = Vec::new();
            let stopped = stop.notified();
            tokio::pin!(stopped);
            // Bounded: at most 500 requests per worker.
            for _ in 0..500 {
                tokio::select! {
                    () = &mut stopped => break,
                    a = get(&client, &lb, "/?delay_ms=2") => answers.push(a),
                }
            }
            answers
        }));
    }
    tokio::time::sleep(Duration::from_millis(20)).await;

    let outcome = lb.drain("a", Duration::from_secs(5)).await;
    assert_eq!(outcome, DrainOutcome::Drained);
    let a_stats = stats_of(&lb, "a");
    assert_eq!(a_stats.in_flight, 0);
    assert!(a_stats.draining_since.is_some());
    assert!(!lb.backends().iter().any(|x| x.id == "a"));
    let slow = slow.await.unwrap();
    assert_eq!((slow.status, slow.body.as_str()), (StatusCode::OK, "a"));

    // Keep the load running a little past the drain, then stop it.
    let a_requests_after = a_stats.requests;
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.notify_waiters();
    let mut total = 0;
    for w in load {
        for ans in w.await.unwrap() {
            assert_eq!(ans.status, StatusCode::OK, "{}", ans.body);
            total += 1;
        }
    }
    assert!(total > 0);
    assert_eq!(lb.requests_after_drain("a"), 0);
    assert_eq!(stats_of(&lb, "a").requests, a_requests_after);
    assert_eq!(a.hits(), a_requests_after);
    assert!(lb.stats().iter().all(|s| s.failures == 0));
}

#[tokio::test]
async fn drain_times_out_when_a_request_outlasts_it() {
    let a = TestBackend::start("a").await;
    let lb = lb().await;
    lb.set_backends(vec![a.backend()]);
    let slow = tokio::spawn({
        let lb = lb.clone();
        async move { get(&client(), &lb, "/?delay_ms=1000").await }
    });
    wait_in_flight(&lb, "a", 1).await;
    let outcome = lb.drain("a", Duration::from_millis(100)).await;
    assert_eq!(outcome, DrainOutcome::TimedOut { in_flight: 1 });
    // The pool is now empty; the slow request still finishes.
    assert_eq!(
        get(&client(), &lb, "/").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(slow.await.unwrap().status, StatusCode::OK);
    assert_eq!(stats_of(&lb, "a").in_flight, 0);
    assert_eq!(lb.requests_after_drain("a"), 0);
}

#[tokio::test]
async fn drain_of_an_idle_or_unknown_backend_returns_at_once() {
    let a = TestBackend::start("a").await;
    let lb = lb().await;
    lb.set_backends(vec![a.backend()]);
    assert_eq!(
        lb.drain("a", Duration::from_secs(60)).await,
        DrainOutcome::Drained
    );
    assert_eq!(
        lb.drain("nope", Duration::from_secs(60)).await,
        DrainOutcome::Drained
    );
    assert!(lb.backends().is_empty());
    // Rejoining clears the drain mark and takes traffic again.
    lb.set_backends(vec![a.backend()]);
    assert!(stats_of(&lb, "a").draining_since.is_none());
    assert_eq!(get(&client(), &lb, "/").await.body, "a");
}

#[tokio::test]
async fn empty_pool_is_503_with_retry_after() {
    let lb = lb().await;
    let a = get(&client(), &lb, "/").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.headers["retry-after"], "1");
    assert!(a.body.contains("no instance"), "{}", a.body);
}

#[tokio::test]
async fn refused_only_backend_is_502_and_counted() {
    let lb = lb().await;
    lb.set_backends(vec![dead_backend("dead").await]);
    let a = get(&client(), &lb, "/").await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    let s = stats_of(&lb, "dead");
    assert_eq!((s.requests, s.failures, s.in_flight), (1, 1, 0));
}

#[tokio::test]
async fn bodiless_request_is_retried_on_the_next_backend() {
    let a = TestBackend::start("a").await;
    let lb = lb().await;
    lb.set_backends(vec![dead_backend("dead").await, a.backend()]);
    let client = client();
    for method in [
        Method::GET,
        Method::GET,
        Method::HEAD,
        Method::DELETE,
        Method::PUT,
    ] {
        let ans = send(&client, &lb, method.clone(), "/", &[], Bytes::new()).await;
        assert_eq!(ans.status, StatusCode::OK, "{method}");
        assert_eq!(ans.headers["x-backend"], "a");
    }
    assert!(stats_of(&lb, "dead").failures >= 2);
    assert_eq!(a.hits(), 5);
}

#[tokio::test]
async fn request_with_a_body_is_not_retried() {
    let a = TestBackend::start("a").await;
    let lb = lb().await;
    lb.set_backends(vec![dead_backend("dead").await, a.backend()]);
    let client = client();
    // Two POSTs in a row start on different backends: exactly one hits `dead`.
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let ans = send(&client, &lb, Method::POST, "/echo", &[], Bytes::from("x")).await;
        statuses.push(ans.status);
    }
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::BAD_GATEWAY]);
    assert_eq!(stats_of(&lb, "dead").failures, 1);
}

#[tokio::test]
async fn forwarding_headers_reach_the_backend_and_hop_by_hop_ones_do_not() {
    let a = TestBackend::start("a").await;
    let lb = lb().await;
    lb.set_backends(vec![a.backend()]);
    let ans = send(
        &client(),
        &lb,
        Method::GET,
        "/",
        &[
            ("x-forwarded-for", "192.0.2.7"),
            ("connection", "x-secret"),
            ("x-secret", "s3cret"),
            ("proxy-authorization", "Basic Zm9v"),
            ("host", "app.example"),
        ],
        Bytes::new(),
    )
    .await;
    assert_eq!(ans.status, StatusCode::OK);
    let h = &ans.headers;
    assert_eq!(h["x-seen-x-forwarded-for"], "192.0.2.7, 127.0.0.1");
    assert_eq!(h["x-seen-x-forwarded-proto"], "http");
    assert_eq!(h["x-seen-forwarded"], "for=127.0.0.1;proto=http");
    assert_eq!(h["x-seen-host"], "app.example");
    assert!(!h.contains_key("x-seen-x-secret"));
    assert!(!h.contains_key("x-seen-proxy-authorization"));
    // The backend's own hop-by-hop header does not reach the client either.
    assert!(!h.contains_key("keep-alive"));
}

#[tokio::test]
async fn bodies_stream_both_ways() {
    let a = TestBackend::start("a").await;
    let lb = lb().await;
    lb.set_backends(vec![a.backend()]);
    let payload: Vec<u8> = (0..2 * 1024 * 1024)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    let ans = send(
        &client(),
        &lb,
        Method::POST,
        "/echo",
        &[],
        Bytes::from(payload.clone()),
    )
    .await;
    assert_eq!(ans.status, StatusCode::OK);
    assert_eq!(ans.body.as_bytes(), &payload[..]);
    assert_eq!(stats_of(&lb, "a").in_flight, 0);
}

#[tokio::test]
async fn chunked_request_body_is_forwarded() {
    let a = TestBackend::start("a").await;
    let lb = lb().await;
    lb.set_backends(vec![a.backend()]);
    let mut s = TcpStream::connect(lb.local_addr()).await.unwrap();
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with("hello world"), "{out}");
}

#[tokio::test]
async fn slow_backend_is_504_after_the_request_timeout() {
    let a = TestBackend::start("a").await;
    let config = LbConfig {
        request_timeout: Duration::from_millis(100),
        ..LbConfig::default()
    };
    let lb = LoadBalancer::bind_with("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    lb.set_backends(vec![a.backend()]);
    let ans = get(&client(), &lb, "/?delay_ms=2000").await;
    assert_eq!(ans.status, StatusCode::GATEWAY_TIMEOUT);
    let s = stats_of(&lb, "a");
    assert_eq!((s.failures, s.in_flight), (1, 0));
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_then_refuses_connections() {
    let a = TestBackend::start("a").await;
    let lb = lb().await;
    lb.set_backends(vec![a.backend()]);
    // An idle keep-alive connection, which shutdown must close.
    let mut idle = TcpStream::connect(lb.local_addr()).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));

    let slow = tokio::spawn({
        let lb = lb.clone();
        async move { get(&client(), &lb, "/?delay_ms=300").await }
    });
    wait_in_flight(&lb, "a", 1).await;
    tokio::time::timeout(Duration::from_secs(5), lb.shutdown())
        .await
        .expect("shutdown hung");
    let slow = slow.await.unwrap();
    assert_eq!((slow.status, slow.body.as_str()), (StatusCode::OK, "a"));
    // The idle connection was closed: reading gives EOF.
    let n = tokio::time::timeout(Duration::from_secs(1), idle.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0);
    assert!(TcpStream::connect(lb.local_addr()).await.is_err());
}

#[tokio::test]
async fn an_instance_dying_while_still_in_the_pool_fails_no_bodiless_request() {
    let (mut a, b) = (TestBackend::start("a").await, TestBackend::start("b").await);
    let lb = lb().await;
    lb.set_backends(vec![a.backend(), b.backend()]);
    let done = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (lb, done) = (lb.clone(), Arc::clone(&done));
        workers.push(tokio::spawn(async move {
            // Keep-alive client connections, so the LB holds pooled
            // connections to `a` when it dies.
            let client = client();
            let mut statuses = Vec::new();
            for _ in 0..60 {
                statuses.push(get(&client, &lb, "/").await.status);
                done.fetch_add(1, Ordering::SeqCst);
            }
            statuses
        }));
    }
    tokio::time::timeout(Duration::from_secs(10), async {
        while done.load(Ordering::SeqCst) < 60 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .unwrap();
    // `a` exits without leaving the pool first (a crash, not a scale-in).
    a.stop().await;
    for w in workers {
        for status in w.await.unwrap() {
            assert_eq!(status, StatusCode::OK);
        }
    }
    assert!(
        stats_of(&lb, "a").failures > 0,
        "the test never hit the dead instance"
    );
}
