//! Integration tests of who may listen where and how many connections a load
//! balancer holds: real load balancers and real backends on 127.0.0.1.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use swell_lb::{AddressInUse, Backend, LbConfig, LoadBalancer, Protocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A keep-alive HTTP/1.1 backend answering every request with its id; counts them.
struct Upstream {
    id: &'static str,
    addr: SocketAddr,
    hits: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    async fn start(id: &'static str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("backend address");
        let hits = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&hits);
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    loop {
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            counter.fetch_add(1, Ordering::SeqCst);
                            let answer = format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{id}",
                                id.len()
                            );
                            if s.write_all(answer.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        Upstream {
            id,
            addr,
            hits,
            task,
        }
    }

    fn backend(&self) -> Backend {
        Backend::new(self.id, self.addr)
    }

    fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn config(workers: usize) -> LbConfig {
    LbConfig {
        workers,
        ..LbConfig::default()
    }
}

/// One request on a new connection (`Connection: close`); the body, or `None`
/// when the connection closed without an answer.
async fn one_request(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// Sends a keep-alive request on `s` and reads its answer; `None` when the
/// connection closed first.
async fn request_on(s: &mut TcpStream) -> Option<String> {
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Some(String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string());
            }
        }
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return None,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("no answer and no close within 5 s"),
        }
    }
}

/// Polls `check` until it holds (or fails after 10 s).
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The measurement: a second group's load balancer with workers on the
/// first one's address bound and took 94 of 200 connections. Now it is refused,
/// and all 200 reach the first group's instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_load_balancer_cannot_join_the_first_ones_port() {
    let (ours, theirs) = (
        Upstream::start("ours").await,
        Upstream::start("theirs").await,
    );
    let a = LoadBalancer::bind_with("127.0.0.1:0".parse().unwrap(), config(2))
        .await
        .expect("bind A");
    a.set_backends(vec![ours.backend()]);
    let addr = a.local_addr();

    let b = LoadBalancer::bind_with(addr, config(2)).await;
    if let Ok(b) = &b {
        b.set_backends(vec![theirs.backend()]);
    }
    for _ in 0..200 {
        let _ = one_request(addr).await;
    }
    assert_eq!(
        (ours.hits(), theirs.hits()),
        (200, 0),
        "every connection to A's address reaches A's instance (B bound: {})",
        b.is_ok()
    );
    let err = b.expect_err("B must not bind A's address");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
    let typed = AddressInUse::find(&err).expect("an AddressInUse inside");
    assert_eq!(typed.addr, addr);
    assert_eq!(typed.holder, Some(addr));
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

/// Every mix of shared-runtime and worker listeners, and the wildcard address of
/// the same port, is refused while the first one listens; once it has stopped
/// (or been dropped) the address is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_address_is_refused_in_every_form_until_released() {
    for (first, second) in [(0, 0), (0, 2), (2, 0), (2, 2), (1, 1)] {
        let a = LoadBalancer::bind_with("127.0.0.1:0".parse().unwrap(), config(first))
            .await
            .expect("bind A");
        let addr = a.local_addr();
        let wildcard = SocketAddr::from(([0, 0, 0, 0], addr.port()));
        for target in [addr, wildcard] {
            let err = LoadBalancer::bind_with(target, config(second))
                .await
                .expect_err("an overlapping address is refused");
            let typed = AddressInUse::find(&err).expect("typed");
            assert_eq!((typed.addr, typed.holder), (target, Some(addr)), "{err}");
        }
        // Another port is fine.
        let other = LoadBalancer::bind_with("127.0.0.1:0".parse().unwrap(), config(second))
            .await
            .expect("another port");
        assert_ne!(other.local_addr(), addr);
        other.shutdown().await;

        if first == 1 {
            // Dropped without a shutdown: released once its sockets close.
            drop(a);
            eventually("the dropped load balancer's address is free", async || {
                match LoadBalancer::bind_with(addr, config(second)).await {
                    Ok(b) => {
                        b.shutdown().await;
                        true
                    }
                    Err(_) => false,
                }
            })
            .await;
        } else {
            a.shutdown().await;
            let b = LoadBalancer::bind_with(addr, config(second))
                .await
                .expect("free after the shutdown");
            b.shutdown().await;
        }
    }
}

/// A wildcard listener holds every address of its port.
#[tokio::test]
async fn a_wildcard_listener_holds_its_port_on_every_address() {
    let a = LoadBalancer::bind_with("0.0.0.0:0".parse().unwrap(), config(0))
        .await
        .expect("bind A");
    let port = a.local_addr().port();
    let err = LoadBalancer::bind_with(SocketAddr::from(([127, 0, 0, 1], port)), config(2))
        .await
        .expect_err("refused");
    assert!(AddressInUse::find(&err).is_some(), "{err}");
    a.shutdown().await;
}

/// `max_connections: 3`: three held connections are served, the fourth is closed
/// at once (and counted), and once one of the three ends a new one is served, in
/// HTTP and TCP mode, on the shared runtime and on workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_closed_at_once_and_counted() {
    let up = Upstream::start("up").await;
    for protocol in [Protocol::Http, Protocol::Tcp] {
        for workers in [0, 2] {
            let case = format!("{protocol:?} with {workers} workers");
            let lb = LoadBalancer::bind_with(
                "127.0.0.1:0".parse().unwrap(),
                LbConfig {
                    protocol,
                    workers,
                    max_connections: 3,
                    ..LbConfig::default()
                },
            )
            .await
            .expect("bind");
            lb.set_backends(vec![up.backend()]);
            let addr = lb.local_addr();
            let mut held = Vec::new();
            for i in 0..3 {
                let mut s = TcpStream::connect(addr).await.expect("connect");
                assert_eq!(
                    request_on(&mut s).await.as_deref(),
                    Some("up"),
                    "{case}: connection {i}"
                );
                held.push(s);
            }
            assert_eq!(lb.traffic().connections_open, 3, "{case}");
            let mut fourth = TcpStream::connect(addr).await.expect("connect");
            assert_eq!(
                request_on(&mut fourth).await,
                None,
                "{case}: the fourth is closed"
            );
            assert_eq!(lb.traffic().connections_refused_total, 1, "{case}");
            // The held ones still work.
            assert_eq!(
                request_on(&mut held[0]).await.as_deref(),
                Some("up"),
                "{case}"
            );

            drop(held.pop());
            eventually("a slot frees when a connection ends", async || {
                lb.traffic().connections_open == 2
            })
            .await;
            let mut fifth = TcpStream::connect(addr).await.expect("connect");
            assert_eq!(
                request_on(&mut fifth).await.as_deref(),
                Some("up"),
                "{case}"
            );
            assert_eq!(lb.traffic().connections_refused_total, 1, "{case}");
            drop((held, fifth));
            lb.shutdown().await;
        }
    }
}

#[test]
fn a_zero_cap_is_refused() {
    let err = LbConfig {
        max_connections: 0,
        ..LbConfig::default()
    }
    .validate()
    .expect_err("0 is refused");
    assert_eq!(err.field, "max_connections");
}
