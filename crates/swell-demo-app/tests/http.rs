//! The demo app over a real socket, driven by a minimal HTTP/1.1 client.

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use swell_demo_app::{DemoConfig, serve_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

async fn start(instance_id: &str) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let config = DemoConfig {
        instance_id: instance_id.into(),
    };
    let task = tokio::spawn(serve_with(listener, config, async {
        let _ = stopped.await;
    }));
    Server {
        addr,
        stop: Some(stop),
        task,
    }
}

/// Status code and body of `GET path`.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {response:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_burns_the_requested_time_and_answers_json() {
    let server = start("web-7").await;
    let start = Instant::now();
    let (status, body) = get(server.addr, "/work?ms=50").await;
    let took = start.elapsed();
    assert_eq!(status, 200, "{body}");
    assert!(took >= Duration::from_millis(50), "{took:?}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"instance": "web-7", "burned_ms": 50})
    );

    let (status, body) = get(server.addr, "/work?ms=0").await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["burned_ms"], 0);
}

#[tokio::test]
async fn health_index_and_bad_requests() {
    let server = start("web-8").await;
    assert_eq!(get(server.addr, "/healthz").await, (200, "ok".to_string()));
    let (status, body) = get(server.addr, "/").await;
    assert_eq!(status, 200);
    assert!(body.contains("web-8"), "{body}");

    for path in [
        "/work",
        "/work?ms=",
        "/work?ms=-5",
        "/work?ms=abc",
        "/work?ms=1.5",
    ] {
        let (status, body) = get(server.addr, path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains("ms"), "{path}: {body}");
    }
    let (status, _) = get(server.addr, "/nope").await;
    assert_eq!(status, 404);
}

/// Reads one response with a `Content-Length` body from a kept-alive connection.
async fn read_response(stream: &mut tokio::io::BufReader<tokio::net::TcpStream>) -> (u16, String) {
    use tokio::io::AsyncBufReadExt;
    let mut status_line = String::new();
    stream.read_line(&mut status_line).await.unwrap();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {status_line:?}"));
    let mut length = 0;
    loop {
        let mut header = String::new();
        stream.read_line(&mut header).await.unwrap();
        if header == "\r\n" || header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.unwrap();
    (status, String::from_utf8(body).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_request_in_flight() {
    let mut server = start("").await;
    let addr = server.addr;
    // A first request on a kept-alive connection proves the server serves it…
    let mut conn = tokio::io::BufReader::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    conn.get_mut()
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut conn).await, (200, "ok".to_string()));
    // … then the slow one goes out on it, and the server is asked to stop meanwhile.
    conn.get_mut()
        .write_all(b"GET /work?ms=600 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let asked = Instant::now();
    server.stop.take().unwrap().send(()).unwrap();

    let (status, body) = read_response(&mut conn).await;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json, serde_json::json!({"instance": "", "burned_ms": 600}));

    tokio::time::timeout(Duration::from_secs(5), server.task)
        .await
        .expect("the server stops once the request is done")
        .unwrap()
        .unwrap();
    assert!(
        asked.elapsed() >= Duration::from_millis(200),
        "it waited for the work"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

/// The binary: serves on `--port`, and exits 0 on SIGTERM.
#[tokio::test]
async fn the_binary_serves_and_exits_cleanly_on_sigterm() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_swell-demo-app"))
        .args(["--port", &port.to_string()])
        .env("SWELL_INSTANCE_ID", "bin-1")
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let start = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = get(addr, "/work?ms=1").await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["instance"], "bin-1");

    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
}
