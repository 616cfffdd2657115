//! A refusal answered before the request's body was read closes the connection and says
//! so (`Connection: close`), over a raw TCP socket to the real server: a client never
//! reuses a kept-alive connection whose unread body is still in flight (the
//! `IncompleteMessage` a reused connection met in the contract test). A body the server
//! did read keeps the connection alive.

use serde_json::{Value, json};
use std::time::Duration;
use swell_server::{Server, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ADMIN_PASSWORD: &str = "early-refusal-admin";

/// A bound on every read, so that a server that keeps a connection open fails the test
/// instead of hanging it.
const READ_BOUND: Duration = Duration::from_secs(20);

async fn start(dir: &std::path::Path) -> Server {
    Server::start(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        admin_password: Some(swell_server::secrets::SecretString::new(ADMIN_PASSWORD)),
        ..ServerConfig::default()
    })
    .await
    .unwrap()
}

async fn token(url: &str) -> String {
    let answer: Value = reqwest::Client::new()
        .post(format!("{url}/v1/auth/tokens"))
        .json(&json!({"user": "admin", "password": ADMIN_PASSWORD, "tenant": "default"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["token"].as_str().expect("a token").to_string()
}

/// One answer read off the socket: its status, its headers (names in lower case) and
/// its body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// Reads one answer framed by its `Content-Length` (every answer here has one), leaving
/// the socket positioned after it.
async fn read_answer(socket: &mut TcpStream) -> Answer {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(READ_BOUND, socket.read(&mut chunk))
            .await
            .expect("an answer within the bound")
            .expect("reading the answer");
        assert!(
            n > 0,
            "the connection closed before an answer: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).expect("an ASCII head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("a content-length: {head:?}"));
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(READ_BOUND, socket.read(&mut chunk))
            .await
            .expect("the body within the bound")
            .expect("reading the body");
        assert!(n > 0, "the connection closed inside the body");
        body.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(body.len(), length, "nothing after the answer's body");
    Answer {
        status,
        headers,
        body,
    }
}

/// Reads to the end of the stream: `true` when the server closed the connection (a
/// reset after the answer counts as closed too).
async fn closed_by_server(socket: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    match tokio::time::timeout(READ_BOUND, socket.read_to_end(&mut rest)).await {
        Ok(Ok(_)) => rest.is_empty(),
        Ok(Err(e)) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Err(_) => false,
    }
}

fn post(path: &str, token: Option<&str>, length: usize, body: &[u8]) -> Vec<u8> {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: swell\r\nConnection: keep-alive\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

#[tokio::test]
async fn a_refusal_before_the_body_is_read_closes_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let url = format!("http://{}", server.addr());
    let token = token(&url).await;
    let group = serde_json::to_vec(&json!({
        "name": "web", "template": {"command": ["sleep", "1000"]},
        "min": 0, "max": 1, "desired_capacity": 0
    }))
    .unwrap();

    // Without a token, the whole body sent: refused (401) in the authorization
    // middleware, before any handler reads it.
    let mut socket = TcpStream::connect(server.addr()).await.unwrap();
    socket
        .write_all(&post("/v1/groups", None, group.len(), &group))
        .await
        .unwrap();
    let answer = read_answer(&mut socket).await;
    assert_eq!(answer.status, 401, "{answer:?}");
    assert!(answer.closes(), "no `Connection: close`: {answer:?}");
    assert!(
        closed_by_server(&mut socket).await,
        "the server kept it open"
    );

    // Most of the body still in flight (a 64 KiB one, 10 bytes sent): the same, and the
    // rest of the body is never read as a request.
    let mut socket = TcpStream::connect(server.addr()).await.unwrap();
    socket
        .write_all(&post("/v1/groups", None, 65_536, b"{\"name\": "))
        .await
        .unwrap();
    let answer = read_answer(&mut socket).await;
    assert_eq!(answer.status, 401, "{answer:?}");
    assert!(answer.closes(), "no `Connection: close`: {answer:?}");
    assert!(
        closed_by_server(&mut socket).await,
        "the server kept it open"
    );

    // With a token, on a route that does not exist (the router's fallback), and on a
    // group the tenant does not have (the contract test's refused `…/alerts`): both
    // answered without reading the body.
    for path in ["/v1/no/such/route", "/v1/groups/absent/alerts"] {
        let mut socket = TcpStream::connect(server.addr()).await.unwrap();
        socket
            .write_all(&post(path, Some(&token), 65_536, b"{\"name\": "))
            .await
            .unwrap();
        let answer = read_answer(&mut socket).await;
        assert!(
            (400..500).contains(&answer.status),
            "{path}: {answer:?} {}",
            String::from_utf8_lossy(&answer.body)
        );
        assert!(
            answer.closes(),
            "{path}: no `Connection: close`: {answer:?}"
        );
        assert!(
            closed_by_server(&mut socket).await,
            "{path}: the server kept it open"
        );
    }

    server.shutdown().await;
}

#[tokio::test]
async fn a_body_that_was_read_keeps_the_connection_alive() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let url = format!("http://{}", server.addr());
    let token = token(&url).await;

    // Read whole and refused naming the field (400): the connection stays open and
    // serves the next request.
    let bad = br#"{"name": "web", "min": "two"}"#;
    let mut socket = TcpStream::connect(server.addr()).await.unwrap();
    socket
        .write_all(&post("/v1/groups", Some(&token), bad.len(), bad))
        .await
        .unwrap();
    let answer = read_answer(&mut socket).await;
    assert_eq!(
        answer.status,
        400,
        "{answer:?} {}",
        String::from_utf8_lossy(&answer.body)
    );
    assert!(!answer.closes(), "closed after a read body: {answer:?}");

    // Then a group created on the same connection (201), and a bodiless GET after it.
    let group = serde_json::to_vec(&json!({
        "name": "web", "template": {"command": ["sleep", "1000"]},
        "min": 0, "max": 1, "desired_capacity": 0
    }))
    .unwrap();
    socket
        .write_all(&post("/v1/groups", Some(&token), group.len(), &group))
        .await
        .unwrap();
    let answer = read_answer(&mut socket).await;
    assert_eq!(
        answer.status,
        201,
        "{answer:?} {}",
        String::from_utf8_lossy(&answer.body)
    );
    assert!(!answer.closes(), "{answer:?}");
    socket
        .write_all(b"GET /v1/health HTTP/1.1\r\nHost: swell\r\n\r\n")
        .await
        .unwrap();
    let answer = read_answer(&mut socket).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(!answer.closes(), "{answer:?}");

    server.shutdown().await;
}
