//! Integration tests of the HTTP/1.1 fast path over raw sockets: framing of
//! responses (length, chunked, until close), pipelining, bodies split across
//! reads, connection reuse, stale instance connections, and malformed or
//! slow clients. The instances are scripted TCP servers, so every byte on the
//! wire is the test's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use swell_lb::{Backend, LbConfig, LoadBalancer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------- scripted instances

/// What a scripted instance does with one request.
#[derive(Clone, Copy)]
enum Script {
    /// Answers the fixed bytes, keeps the connection.
    Answer(&'static str),
    /// Answers the fixed bytes, then closes the connection.
    AnswerClose(&'static str),
    /// Answers `200` with the request's head and body echoed as the body.
    Echo,
    /// Answers after this many milliseconds.
    Slow(&'static str, u64),
}

/// A scripted HTTP/1.1 instance. Counts connections and requests; every
/// request gets `script`.
struct Scripted {
    addr: SocketAddr,
    conns: Arc<AtomicU64>,
    /// Connections it saw closed by the load balancer.
    closed: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    /// Every request head it received, in order.
    heads: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Scripted {
    async fn start(script: Script) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let s = Scripted {
            addr: listener.local_addr().unwrap(),
            conns: Arc::new(AtomicU64::new(0)),
            closed: Arc::new(AtomicU64::new(0)),
            requests: Arc::new(AtomicU64::new(0)),
            heads: Arc::default(),
        };
        let closed = Arc::clone(&s.closed);
        let (conns, requests, heads) = (
            Arc::clone(&s.conns),
            Arc::clone(&s.requests),
            Arc::clone(&s.heads),
        );
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                conns.fetch_add(1, Ordering::SeqCst);
                let (requests, heads) = (Arc::clone(&requests), Arc::clone(&heads));
                let closed = Arc::clone(&closed);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let Some((head, body)) = read_request(&mut stream, &mut buf).await else {
                            closed.fetch_add(1, Ordering::SeqCst);
                            return;
                        };
                        requests.fetch_add(1, Ordering::SeqCst);
                        heads.lock().unwrap().push(head.clone());
                        let (answer, close) = match script {
                            Script::Answer(a) => (a.as_bytes().to_vec(), false),
                            Script::AnswerClose(a) => (a.as_bytes().to_vec(), true),
                            Script::Slow(a, ms) => {
                                tokio::time::sleep(Duration::from_millis(ms)).await;
                                (a.as_bytes().to_vec(), false)
                            }
                            Script::Echo => {
                                let mut echoed = head.into_bytes();
                                echoed.extend_from_slice(&body);
                                let mut a = format!(
                                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
                                    echoed.len()
                                )
                                .into_bytes();
                                a.extend_from_slice(&echoed);
                                (a, false)
                            }
                        };
                        if stream.write_all(&answer).await.is_err() || close {
                            return;
                        }
                    }
                });
            }
        });
        s
    }

    fn backend(&self, id: &str) -> Backend {
        Backend::new(id, self.addr)
    }
}

/// Reads one request (head and `content-length` body) from `stream`.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            if head
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked")
            {
                // Simple chunks only (no extensions, no trailers).
                let mut body = Vec::new();
                let mut at = end + 4;
                loop {
                    let line = loop {
                        if let Some(i) = find(&buf[at..], b"\r\n") {
                            break i;
                        }
                        read_more(stream, buf).await?;
                    };
                    let size =
                        usize::from_str_radix(std::str::from_utf8(&buf[at..at + line]).ok()?, 16)
                            .ok()?;
                    at += line + 2;
                    while buf.len() < at + size + 2 {
                        read_more(stream, buf).await?;
                    }
                    body.extend_from_slice(&buf[at..at + size]);
                    at += size + 2;
                    if size == 0 {
                        buf.drain(..at);
                        return Some((head, body));
                    }
                }
            }
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                read_more(stream, buf).await?;
            }
            let body = buf[end + 4..end + 4 + len].to_vec();
            buf.drain(..end + 4 + len);
            return Some((head, body));
        }
        read_more(stream, buf).await?;
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------- client side

async fn lb_with(config: LbConfig, backends: Vec<Backend>) -> LoadBalancer {
    let lb = LoadBalancer::bind_with("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    lb.set_backends(backends);
    lb
}

/// Reads one response (`content-length`, chunked, or until close) from a
/// client connection: (head, body as sent on the wire).
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> (String, Vec<u8>) {
    let end = loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            break end;
        }
        assert!(
            read_more(stream, buf).await.is_some(),
            "connection closed before a response head: {:?}",
            String::from_utf8_lossy(buf)
        );
    };
    let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
    buf.drain(..end + 4);
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    let body_len = if let Some(len) = header("content-length") {
        Some(len.parse::<usize>().unwrap())
    } else if header("transfer-encoding").is_some() {
        // Until the last chunk's empty line (no trailers in these tests).
        loop {
            if let Some(end) = find(buf, b"0\r\n\r\n") {
                break Some(end + 5);
            }
            assert!(read_more(stream, buf).await.is_some());
        }
    } else {
        None
    };
    let body = match body_len {
        Some(len) => {
            while buf.len() < len {
                assert!(read_more(stream, buf).await.is_some(), "body cut short");
            }
            buf.drain(..len).collect()
        }
        None => {
            while read_more(stream, buf).await.is_some() {}
            std::mem::take(buf)
        }
    };
    (head, body)
}

/// Reads until the server closes the connection (bounded).
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out))
        .await
        .expect("connection was not closed")
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn chunked_responses_are_forwarded_whole_and_the_connection_kept() {
    let chunked = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-backend: a\r\n\r\n\
                   5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n";
    let a = Scripted::start(Script::Answer(chunked)).await;
    let lb = lb_with(LbConfig::default(), vec![a.backend("a")]).await;
    let mut c = TcpStream::connect(lb.local_addr()).await.unwrap();
    let mut buf = Vec::new();
    for _ in 0..3 {
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let (head, body) = read_response(&mut c, &mut buf).await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
        assert!(head.contains("x-backend: a\r\n"), "{head}");
        assert_eq!(body, b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n");
    }
    // One client connection, one instance connection, reused.
    assert_eq!(a.requests.load(Ordering::SeqCst), 3);
    assert_eq!(a.conns.load(Ordering::SeqCst), 1);
    assert_eq!(lb.stats()[0].in_flight, 0);
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let a = Scripted::start(Script::Echo).await;
    let lb = lb_with(LbConfig::default(), vec![a.backend("a")]).await;
    let mut c = TcpStream::connect(lb.local_addr()).await.unwrap();
    c.write_all(
        b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n\
          POST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\
          GET /3 HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    for (path, body) in [("/1", ""), ("/2", "abc"), ("/3", "")] {
        let (head, echoed) = read_response(&mut c, &mut buf).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let echoed = String::from_utf8(echoed).unwrap();
        assert!(
            echoed.contains(&format!(" {path} HTTP/1.1\r\n")),
            "{echoed}"
        );
        assert!(echoed.ends_with(&format!("\r\n\r\n{body}")), "{echoed}");
    }
    assert_eq!(lb.traffic().requests_total, 3);
}

#[tokio::test]
async fn a_request_body_split_across_reads_is_forwarded_whole() {
    let a = Scripted::start(Script::Echo).await;
    let lb = lb_with(LbConfig::default(), vec![a.backend("a")]).await;
    let mut c = TcpStream::connect(lb.local_addr()).await.unwrap();
    c.set_nodelay(true).unwrap();
    for piece in [
        &b"POST /up HTTP/1.1\r\nHo"[..],
        b"st: x\r\nContent-Length: 11\r\n\r\nhel",
        b"lo wo",
        b"rld",
    ] {
        c.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (head, echoed) = read_response(&mut c, &mut Vec::new()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let echoed = String::from_utf8(echoed).unwrap();
    assert!(echoed.starts_with("POST /up HTTP/1.1\r\n"), "{echoed}");
    assert!(
        echoed.contains("x-forwarded-for: 127.0.0.1\r\n"),
        "{echoed}"
    );
    assert!(
        echoed.contains("forwarded: for=127.0.0.1;proto=http\r\n"),
        "{echoed}"
    );
    assert!(echoed.contains("x-forwarded-proto: http\r\n"), "{echoed}");
    assert!(echoed.ends_with("\r\n\r\nhello world"), "{echoed}");
}

#[tokio::test]
async fn a_slowloris_head_is_cut_off_by_the_header_read_timeout() {
    let a = Scripted::start(Script::Echo).await;
    let config = LbConfig {
        header_read_timeout: Duration::from_millis(300),
        ..LbConfig::default()
    };
    let lb = lb_with(config, vec![a.backend("a")]).await;
    let mut c = TcpStream::connect(lb.local_addr()).await.unwrap();
    c.set_nodelay(true).unwrap();
    let started = tokio::time::Instant::now();
    // One byte every 50 ms: never idle, never done.
    let trickle = async {
        for b in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: "
            .iter()
            .cycle()
            .take(200)
        {
            if c.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(600), trickle).await;
    let answer = read_to_close(&mut c).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(a.requests.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn malformed_or_oversized_heads_are_refused_and_never_reach_an_instance() {
    let a = Scripted::start(Script::Echo).await;
    let lb = lb_with(LbConfig::default(), vec![a.backend("a")]).await;
    let huge = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "b".repeat(70 * 1024));
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    for (request, status) in [
        ("GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", "400"),
        ("\u{1}\u{2} / HTTP/1.1\r\n\r\n", "400"),
        (
            "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n",
            "400",
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            "400",
        ),
        (huge.as_str(), "431"),
        (many.as_str(), "431"),
    ] {
        let mut c = TcpStream::connect(lb.local_addr()).await.unwrap();
        let _ = c.write_all(request.as_bytes()).await;
        let answer = read_to_close(&mut c).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{:?} → {answer:?}",
            &request[..request.len().min(40)]
        );
        assert!(answer.contains("connection: close\r\n"), "{answer:?}");
    }
    assert_eq!(a.requests.load(Ordering::SeqCst), 0);
    // Garbage did not hurt the listener.
    let mut c = TcpStream::connect(lb.local_addr()).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert!(read_to_close(&mut c).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn a_close_delimited_response_closes_the_client_connection_too() {
    let a = Scripted::start(Script::AnswerClose(
        "HTTP/1.0 200 OK\r\nx-old: yes\r\n\r\nuntil close",
    ))
    .await;
    let lb = lb_with(LbConfig::default(), vec![a.backend("a")]).await;
    let mut c = TcpStream::connect(lb.local_addr()).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut c).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer:?}");
    assert!(answer.contains("connection: close\r\n"), "{answer:?}");
    assert!(answer.ends_with("\r\n\r\nuntil close"), "{answer:?}");
    assert_eq!(lb.stats()[0].in_flight, 0);
    assert_eq!(lb.stats()[0].failures, 0);
}

#[tokio::test]
async fn head_requests_and_bodiless_statuses_read_no_body() {
    let a = Scripted::start(Script::Answer(
        "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
    ))
    .await;
    let lb = lb_with(LbConfig::default(), vec![a.backend("a")]).await;
    let mut c = TcpStream::connect(lb.local_addr()).await.unwrap();
    let mut buf = Vec::new();
    for _ in 0..2 {
        c.write_all(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        // The length describes the GET's body; there is none.
        let n = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                read_more(&mut c, &mut buf).await.unwrap();
                if find(&buf, b"\r\n\r\n").is_some() {
                    return buf.len();
                }
            }
        })
        .await
        .unwrap();
        let head = String::from_utf8(buf.drain(..n).collect()).unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("content-length: 5\r\n"), "{head}");
    }
    assert_eq!(a.conns.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_stale_instance_connection_is_replaced_without_a_failure() {
    // Each answer closes the instance's side, without saying so.
    let a = Scripted::start(Script::AnswerClose(
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    ))
    .await;
    let lb = lb_with(LbConfig::default(), vec![a.backend("a")]).await;
    let mut c = TcpStream::connect(lb.local_addr()).await.unwrap();
    let mut buf = Vec::new();
    for i in 0..5 {
        c.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx")
            .await
            .unwrap();
        let (head, body) = read_response(&mut c, &mut buf).await;
        assert!(head.starts_with("HTTP/1.1 200"), "request {i}: {head}");
        assert_eq!(body, b"ok");
        // Let the close reach the load balancer, or not: both must work.
        if i % 2 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(a.requests.load(Ordering::SeqCst), 5);
    assert_eq!(lb.stats()[0].failures, 0);
}

#[tokio::test]
async fn an_instance_failing_mid_body_closes_the_client_and_counts_a_failure() {
    let a = Scripted::start(Script::AnswerClose(
        "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part",
    ))
    .await;
    let lb = lb_with(LbConfig::default(), vec![a.backend("a")]).await;
    let mut c = TcpStream::connect(lb.local_addr()).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut c).await;
    assert!(answer.ends_with("only part"), "{answer:?}");
    let s = &lb.stats()[0];
    assert_eq!((s.failures, s.in_flight), (1, 0));
}

#[tokio::test]
async fn informational_responses_are_skipped() {
    let a = Scripted::start(Script::Answer(
        "HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 204 No Content\r\nx-ok: 1\r\n\r\n",
    ))
    .await;
    let lb = lb_with(LbConfig::default(), vec![a.backend("a")]).await;
    let mut c = TcpStream::connect(lb.local_addr()).await.unwrap();
    let mut buf = Vec::new();
    for _ in 0..2 {
        c.write_all(b"DELETE /x HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let n = loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                break end + 4;
            }
            read_more(&mut c, &mut buf).await.unwrap();
        };
        let head = String::from_utf8(buf.drain(..n).collect()).unwrap();
        assert!(head.starts_with("HTTP/1.1 204 No Content\r\n"), "{head}");
        assert!(head.contains("x-ok: 1"), "{head}");
    }
}

#[tokio::test]
async fn the_request_timeout_applies_on_the_fast_path_and_the_connection_survives() {
    let slow = Scripted::start(Script::Slow(
        "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
        2000,
    ))
    .await;
    let config = LbConfig {
        request_timeout: Duration::from_millis(150),
        ..LbConfig::default()
    };
    let lb = lb_with(config, vec![slow.backend("slow")]).await;
    let mut c = TcpStream::connect(lb.local_addr()).await.unwrap();
    let mut buf = Vec::new();
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut c, &mut buf).await;
    assert!(head.starts_with("HTTP/1.1 504"), "{head}");
    let s = &lb.stats()[0];
    assert_eq!((s.failures, s.in_flight), (1, 0));
    // The client connection still works (and gets a 503 once the pool is empty).
    lb.set_backends(vec![]);
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut c, &mut buf).await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(head.contains("retry-after: 1\r\n"), "{head}");
}

#[tokio::test]
async fn requests_the_fast_path_does_not_serve_go_to_hyper_on_the_same_connection() {
    let a = Scripted::start(Script::Echo).await;
    let lb = lb_with(LbConfig::default(), vec![a.backend("a")]).await;
    let mut c = TcpStream::connect(lb.local_addr()).await.unwrap();
    let mut buf = Vec::new();
    // Fast path first, then a chunked upload (hyper), then a plain GET again.
    c.write_all(b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut c, &mut buf).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    c.write_all(
        b"POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    let (head, echoed) = read_response(&mut c, &mut buf).await;
    assert!(
        head.to_ascii_lowercase().starts_with("http/1.1 200"),
        "{head}"
    );
    assert!(String::from_utf8_lossy(&echoed).ends_with("abc"));
    c.write_all(b"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (head, echoed) = read_response(&mut c, &mut buf).await;
    assert!(
        head.to_ascii_lowercase().starts_with("http/1.1 200"),
        "{head}"
    );
    assert!(String::from_utf8_lossy(&echoed).contains("GET /after HTTP/1.1"));
    assert_eq!(lb.traffic().requests_total, 3);
}

#[tokio::test]
async fn a_drain_closes_idle_fast_path_connections_to_the_instance() {
    let a = Scripted::start(Script::Echo).await;
    let b = Scripted::start(Script::Echo).await;
    let lb = lb_with(LbConfig::default(), vec![a.backend("a"), b.backend("b")]).await;
    let mut c = TcpStream::connect(lb.local_addr()).await.unwrap();
    let mut buf = Vec::new();
    for _ in 0..4 {
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        read_response(&mut c, &mut buf).await;
    }
    assert_eq!(a.conns.load(Ordering::SeqCst), 1);
    let drained = lb.drain("a", Duration::from_secs(5)).await;
    assert_eq!(drained, swell_lb::DrainOutcome::Drained);
    // Its idle connection is closed at once, not when it is deleted.
    tokio::time::timeout(Duration::from_secs(5), async {
        while a.closed.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the idle connection to a was not closed");
    for _ in 0..4 {
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        read_response(&mut c, &mut buf).await;
    }
    assert_eq!(a.requests.load(Ordering::SeqCst), 2);
    assert_eq!(b.requests.load(Ordering::SeqCst), 6);
    assert_eq!(lb.requests_after_drain("a"), 0);
}

#[tokio::test]
async fn a_connection_to_an_instance_that_left_mid_request_is_closed_not_pooled() {
    let a = Scripted::start(Script::Slow(
        "HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\na",
        200,
    ))
    .await;
    let b = Scripted::start(Script::Echo).await;
    let lb = lb_with(LbConfig::default(), vec![a.backend("a")]).await;
    let mut c = TcpStream::connect(lb.local_addr()).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        while lb.stats()[0].in_flight == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .unwrap();
    // `a` leaves without a drain while its request is in flight.
    lb.set_backends(vec![b.backend("b")]);
    let (head, body) = read_response(&mut c, &mut Vec::new()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"a");
    tokio::time::timeout(Duration::from_secs(5), async {
        while a.closed.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the connection to a was pooled after a left");
}
