//! The HTTP/1.1 fast path: a client connection served without hyper.
//!
//! Most requests a load balancer sees are plain HTTP/1.1 with no body or a
//! small one of declared length. For those, a connection runs a small loop:
//! parse the head with `httparse` (bounded: [`MAX_HEAD`] bytes,
//! [`MAX_HEADERS`] headers), write the rewritten head and the body to a plain
//! keep-alive connection to the instance, parse the response head, and copy
//! the response body through as it arrives, framed by `Content-Length`,
//! chunked encoding (a small state machine finds its end) or the instance
//! closing the connection. Nothing is allocated per request; the buffers
//! belong to the client connection and to the instance connection.
//!
//! Everything else — HTTP/2 with prior knowledge, HTTP/1.0, chunked or large
//! (over [`MAX_BUFFERED_BODY`]) request bodies, `Expect`, `Upgrade`, `CONNECT`,
//! absolute-form targets — is handed over to hyper (`serve_hyper`) at a
//! request boundary, with the bytes already read, for the rest of the
//! connection.
//!
//! The load balancer's rules are the same on both paths: forwarding and
//! hop-by-hop headers, `413` past the body limit, `503` with `Retry-After`,
//! `502`/`504`, the retry of bodiless idempotent requests, the request,
//! header-read and idle timeouts, passive health, the in-flight guard held
//! until the response body has been read to the end (the drain contract), and
//! traffic metrics.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use httparse::Status;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use crate::LbConfig;
use crate::io::Prefixed;
use crate::proxy::Proxy;
use crate::upstream::{RawConn, Upstream, UpstreamError};

/// Largest request or response head accepted.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Most headers in a request or response head.
pub(crate) const MAX_HEADERS: usize = 100;
/// Largest request body the fast path buffers before dispatching; a larger
/// one is streamed by hyper.
pub(crate) const MAX_BUFFERED_BODY: usize = 64 * 1024;
/// Most header names a `Connection` header may list on the fast path.
const MAX_LISTED: usize = 8;
/// Room made in a buffer before a read.
const READ_CHUNK: usize = 16 * 1024;
/// What an HTTP/2 client with prior knowledge sends first (its start).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";
/// How long, at most, a connection closed after an error response keeps
/// reading (and discarding) what the client still sends, so that the client
/// reads the response instead of a reset.
const LINGER: Duration = Duration::from_secs(2);
/// How much a lingering close reads, at most.
const LINGER_BYTES: usize = 256 * 1024;

/// Serves one client connection; hands it over to hyper when a request needs
/// more than the fast path does.
pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    proxy: Arc<Proxy>,
    config: Arc<LbConfig>,
    cancel: CancellationToken,
) {
    let mut conn = Conn::new(stream, peer, Arc::clone(&proxy), Arc::clone(&config));
    if let End::Handoff = conn.run(&cancel).await {
        let Conn { stream, buf, .. } = conn;
        let io = Prefixed::new(buf.freeze(), stream);
        // Boxed: hyper's connection state would otherwise make every
        // connection's task (copied around when spawned) several times larger.
        Box::pin(crate::serve_hyper(io, peer, proxy, config, cancel)).await;
    }
}

/// How a connection's fast-path loop ended.
enum End {
    /// Close the connection (dropping it does).
    Close,
    /// Serve the rest of it with hyper, starting with the buffered bytes.
    Handoff,
}

/// What to do after one exchange.
enum Next {
    KeepAlive,
    Close,
}

/// A request head the fast path cannot answer itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reject {
    /// Malformed head: `400`.
    BadRequest,
    /// Head over [`MAX_HEAD`] or over [`MAX_HEADERS`] headers: `431`.
    HeadTooLarge,
    /// Head (or small body) not received within its timeout: `408`.
    Timeout,
    /// Declared body over the configured limit: `413`.
    BodyTooLarge,
}

/// What the parse of a request head found.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    /// More bytes needed.
    Partial,
    /// A request for hyper (see the module documentation).
    Handoff,
    Reject(Reject),
    Complete(ReqMeta),
}

/// One parsed request; its rewritten head (without the final empty line) is
/// in `Conn::req`.
#[derive(Debug, PartialEq, Eq)]
struct ReqMeta {
    head_len: usize,
    body_len: usize,
    /// The client asked to close the connection after this exchange.
    close: bool,
    is_head: bool,
    /// Bodiless and idempotent: may be sent to a second instance.
    retryable: bool,
    /// No `Host` header: the instance's address is sent as the host.
    host_missing: bool,
}

/// Per-connection constants used to rewrite request heads.
struct Forwarding {
    /// The client's address as `X-Forwarded-For` lists it.
    xff: String,
    /// This hop's element of `Forwarded`.
    forwarded: String,
    max_body: Option<u64>,
}

impl Forwarding {
    fn new(client: IpAddr, max_body: Option<u64>) -> Self {
        let node = match client {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("\"[{ip}]\""),
        };
        Self {
            xff: client.to_string(),
            forwarded: format!("for={node};proto=http"),
            max_body,
        }
    }
}

struct Conn {
    stream: TcpStream,
    /// Bytes read from the client and not yet consumed.
    buf: BytesMut,
    /// The upstream request being sent: head, then body.
    req: Vec<u8>,
    /// The client response head being written (and the first body bytes).
    resp: Vec<u8>,
    fwd: Forwarding,
    /// The request timeout: one timer for the connection, moved forward for
    /// each request (moving a timer later costs no timer-wheel work).
    deadline: Pin<Box<Sleep>>,
    proxy: Arc<Proxy>,
    config: Arc<LbConfig>,
}

impl Conn {
    fn new(stream: TcpStream, peer: SocketAddr, proxy: Arc<Proxy>, config: Arc<LbConfig>) -> Self {
        Self {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            req: Vec::with_capacity(1024),
            resp: Vec::with_capacity(1024),
            fwd: Forwarding::new(peer.ip(), config.max_body_bytes),
            deadline: Box::pin(tokio::time::sleep(proxy.request_timeout)),
            proxy,
            config,
        }
    }

    async fn run(&mut self, cancel: &CancellationToken) -> End {
        let cancelled = cancel.cancelled();
        tokio::pin!(cancelled);
        let idle_timeout = self.config.idle_timeout;
        let mut last_active = Instant::now();
        // One timer for the connection's idle time, moved only when it fires.
        let idle = tokio::time::sleep_until(last_active + idle_timeout);
        tokio::pin!(idle);
        let mut first = true;
        // When the head being received must be complete.
        let mut head_deadline: Option<Instant> = None;
        loop {
            if !self.buf.is_empty() {
                match parse_request(&self.buf, first, &self.fwd, &mut self.req) {
                    Parsed::Partial => {}
                    Parsed::Handoff => return End::Handoff,
                    Parsed::Reject(r) => {
                        self.reject(r).await;
                        return End::Close;
                    }
                    Parsed::Complete(meta) => {
                        first = false;
                        head_deadline = None;
                        match self.exchange(meta).await {
                            Next::KeepAlive => {
                                last_active = Instant::now();
                                continue;
                            }
                            Next::Close => return End::Close,
                        }
                    }
                }
            }
            if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
                self.buf.reserve(READ_CHUNK);
            }
            let read = if self.buf.is_empty() {
                // Between requests: the idle timeout and a shutdown apply.
                tokio::select! {
                    // A shutdown first: a busy client must not keep its
                    // connection open through one.
                    biased;
                    () = &mut cancelled => return End::Close,
                    r = self.stream.read_buf(&mut self.buf) => r,
                    () = &mut idle => {
                        let deadline = last_active + idle_timeout;
                        if Instant::now() >= deadline {
                            tracing::debug!("client connection idle: closing");
                            return End::Close;
                        }
                        idle.as_mut().reset(deadline);
                        continue;
                    }
                }
            } else {
                // Inside a head: the header read timeout applies (a slowloris
                // client cannot hold the connection by trickling bytes).
                let deadline = *head_deadline
                    .get_or_insert_with(|| Instant::now() + self.config.header_read_timeout);
                tokio::select! {
                    biased;
                    r = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)) => match r {
                        Ok(r) => r,
                        Err(_) => {
                            self.reject(Reject::Timeout).await;
                            return End::Close;
                        }
                    },
                    () = &mut cancelled => return End::Close,
                }
            };
            match read {
                Ok(0) | Err(_) => return End::Close,
                Ok(_) => {}
            }
        }
    }

    /// Answers a request the fast path refuses, then closes.
    async fn reject(&mut self, r: Reject) {
        let status = match r {
            Reject::BadRequest => 400,
            Reject::HeadTooLarge => 431,
            Reject::Timeout => 408,
            Reject::BodyTooLarge => {
                // Like the hyper path: an answer, not an error of the service.
                self.proxy.traffic.record(Some(Duration::ZERO), false);
                413
            }
        };
        self.resp.clear();
        error_response(&mut self.resp, status, true);
        if self.stream.write_all(&self.resp).await.is_ok() {
            linger(&mut self.stream).await;
        }
    }

    /// Proxies one request whose head is parsed and rewritten in `self.req`.
    async fn exchange(&mut self, meta: ReqMeta) -> Next {
        let started = Instant::now();
        let deadline = started + self.proxy.request_timeout;
        let total = meta.head_len + meta.body_len;
        // A small body is read in full before an instance is picked.
        while self.buf.len() < total {
            self.buf.reserve(total - self.buf.len());
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => return Next::Close,
                Err(_) => {
                    self.reject(Reject::Timeout).await;
                    return Next::Close;
                }
            }
        }
        let head_base = self.req.len();
        self.deadline.as_mut().reset(deadline);
        let body = meta.head_len..total;

        let Some(mut guard) = self.proxy.pool.acquire(None) else {
            tracing::debug!("not proxied: no instance is ready to serve this request");
            self.buf.advance(total);
            return self.answer_error(503, started, meta.close).await;
        };
        let mut retried = false;
        let (mut up, resp) = loop {
            let addr = guard.addr();
            self.req.truncate(head_base);
            if meta.host_missing {
                let _ = write!(self.req, "host: {addr}\r\n");
            }
            self.req.extend_from_slice(b"\r\n");
            self.req.extend_from_slice(&self.buf[body.clone()]);
            let sent = attempt(
                &self.proxy.upstream,
                addr,
                &self.req,
                meta.is_head,
                meta.close,
                &mut self.resp,
            );
            let result = tokio::select! {
                biased;
                r = sent => Ok(r),
                () = self.deadline.as_mut() => Err(()),
            };
            match result {
                Ok(Ok(got)) => break got,
                Ok(Err(err)) => {
                    guard.record_failure();
                    self.proxy.outcome(&guard, false);
                    let backend = guard.id().to_owned();
                    tracing::debug!(%backend, error = %crate::proxy::err_chain(&err), "instance failed");
                    if err.is_unsent()
                        && meta.retryable
                        && !retried
                        && let Some(next) = self.proxy.pool.acquire(Some(&backend))
                    {
                        tracing::debug!(from = %backend, to = %next.id(), "retrying on the next backend");
                        retried = true;
                        guard = next;
                        continue;
                    }
                    self.buf.advance(total);
                    return self.answer_error(502, started, meta.close).await;
                }
                Err(_elapsed) => {
                    guard.record_failure();
                    self.proxy.outcome(&guard, false);
                    tracing::debug!(backend = %guard.id(), "instance did not answer in time");
                    self.buf.advance(total);
                    return self.answer_error(504, started, meta.close).await;
                }
            }
        };
        self.buf.advance(total);
        let server_error = resp.status >= 500;
        self.proxy.outcome(&guard, !server_error);
        self.proxy
            .traffic
            .record(Some(started.elapsed()), server_error);

        // The response: head (already rewritten in `self.resp`), then body.
        let close = resp.close_client;
        match relay(
            &mut up,
            resp,
            &mut self.stream,
            &mut self.resp,
            self.config.idle_timeout,
        )
        .await
        {
            Ok(reusable) => {
                // Back to the pool before the guard ends, so that a drain
                // that completes then also closes this connection.
                if reusable {
                    self.proxy.upstream.put_raw(guard.addr(), up);
                }
                drop(guard);
                if close { Next::Close } else { Next::KeepAlive }
            }
            Err(RelayError::Client) => Next::Close,
            Err(RelayError::Upstream(why)) => {
                tracing::debug!(backend = %guard.id(), error = why, "response body failed");
                guard.record_failure();
                Next::Close
            }
        }
    }

    /// Answers `status` for a request that was not proxied.
    async fn answer_error(&mut self, status: u16, started: Instant, close: bool) -> Next {
        self.proxy
            .traffic
            .record(Some(started.elapsed()), status >= 500);
        self.resp.clear();
        error_response(&mut self.resp, status, close);
        match self.stream.write_all(&self.resp).await {
            Ok(()) if !close => Next::KeepAlive,
            _ => Next::Close,
        }
    }
}

/// Writes a complete plain-text error response.
fn error_response(out: &mut Vec<u8>, status: u16, close: bool) {
    let (reason, text) = match status {
        400 => ("Bad Request", "bad request\n"),
        408 => ("Request Timeout", "request timeout\n"),
        413 => ("Payload Too Large", "request body too large\n"),
        431 => (
            "Request Header Fields Too Large",
            "request header fields too large\n",
        ),
        502 => ("Bad Gateway", "the instance could not be reached\n"),
        503 => (
            "Service Unavailable",
            "no instance is ready to serve this request\n",
        ),
        _ => ("Gateway Timeout", "the instance did not answer in time\n"),
    };
    let _ = write!(
        out,
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n",
        text.len()
    );
    if status == 503 {
        out.extend_from_slice(b"retry-after: 1\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(text.as_bytes());
}

/// Closes gracefully after an error response: stops writing, then reads and
/// discards what the client still sends (bounded in time and bytes), so that
/// closing with unread data does not reset the connection before the client
/// has read the response.
async fn linger(stream: &mut TcpStream) {
    let _ = stream.shutdown().await;
    // On the heap, not in every connection's future.
    let mut sink = vec![0u8; 8192];
    let mut left = LINGER_BYTES;
    let deadline = Instant::now() + LINGER;
    while left > 0 {
        match tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
            _ => return,
        }
    }
}

// ------------------------------------------------------------ request heads

/// What a header name means to a proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Other,
    Connection,
    /// Hop-by-hop, never forwarded: `Keep-Alive`, `TE`, `Trailer`, `Proxy-*`.
    HopByHop,
    TransferEncoding,
    Upgrade,
    Expect,
    ContentLength,
    Host,
    XForwardedFor,
    XForwardedProto,
    Forwarded,
}

fn classify(name: &str) -> Kind {
    let n = name.as_bytes();
    let is = |s: &str| n.eq_ignore_ascii_case(s.as_bytes());
    let kind = match n.len() {
        2 if is("te") => Kind::HopByHop,
        4 if is("host") => Kind::Host,
        6 if is("expect") => Kind::Expect,
        7 if is("trailer") => Kind::HopByHop,
        7 if is("upgrade") => Kind::Upgrade,
        9 if is("forwarded") => Kind::Forwarded,
        10 if is("connection") => Kind::Connection,
        10 if is("keep-alive") => Kind::HopByHop,
        14 if is("content-length") => Kind::ContentLength,
        15 if is("x-forwarded-for") => Kind::XForwardedFor,
        17 if is("transfer-encoding") => Kind::TransferEncoding,
        17 if is("x-forwarded-proto") => Kind::XForwardedProto,
        _ => Kind::Other,
    };
    if kind == Kind::Other && n.len() > 6 && n[..6].eq_ignore_ascii_case(b"proxy-") {
        return Kind::HopByHop;
    }
    kind
}

/// The comma-separated elements of a header value, trimmed, empty ones skipped.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// A value `HeaderValue::to_str` would accept: the hyper path folds only
/// those into `X-Forwarded-For` and `Forwarded`.
fn is_visible(value: &[u8]) -> bool {
    value.iter().all(|&b| b == b'\t' || (32..127).contains(&b))
}

/// A `Content-Length` value: digits only.
fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Whether `buf` starts like an HTTP/2 connection preface.
fn looks_like_h2(buf: &[u8]) -> bool {
    let n = buf.len().min(H2_PREFACE.len());
    buf[..n] == H2_PREFACE[..n]
}

/// Parses the request head at the start of `buf` and, when the fast path can
/// serve it, writes the rewritten head (without its final empty line) to `out`.
fn parse_request(buf: &[u8], first: bool, fwd: &Forwarding, out: &mut Vec<u8>) -> Parsed {
    if first && looks_like_h2(buf) {
        return if buf.len() >= H2_PREFACE.len() {
            Parsed::Handoff
        } else {
            Parsed::Partial
        };
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(Status::Complete(n)) if n <= MAX_HEAD => n,
        Ok(Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Reject(Reject::HeadTooLarge);
        }
        Ok(Status::Partial) if buf.len() > MAX_HEAD => return Parsed::Reject(Reject::HeadTooLarge),
        Ok(Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Reject(Reject::BadRequest),
    };
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return Parsed::Reject(Reject::BadRequest);
    };
    if version != 1 || !path.starts_with('/') || method == "CONNECT" {
        return Parsed::Handoff;
    }
    let mut close = false;
    let mut host = false;
    let mut length: Option<u64> = None;
    let mut listed: [&[u8]; MAX_LISTED] = [&[]; MAX_LISTED];
    let mut n_listed = 0;
    let mut kinds = [Kind::Other; MAX_HEADERS];
    for (h, kind) in req.headers.iter().zip(kinds.iter_mut()) {
        *kind = classify(h.name);
        match *kind {
            Kind::Connection => {
                for t in tokens(h.value) {
                    if t.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    } else if n_listed < MAX_LISTED {
                        listed[n_listed] = t;
                        n_listed += 1;
                    } else {
                        return Parsed::Handoff;
                    }
                }
            }
            Kind::TransferEncoding | Kind::Upgrade | Kind::Expect => return Parsed::Handoff,
            Kind::ContentLength => match (parse_length(h.value), length) {
                (Some(l), None) => length = Some(l),
                (Some(l), Some(seen)) if l == seen => {}
                _ => return Parsed::Reject(Reject::BadRequest),
            },
            Kind::Host => host = true,
            _ => {}
        }
    }
    let length = length.unwrap_or(0);
    if let Some(limit) = fwd.max_body
        && length > limit
    {
        return Parsed::Reject(Reject::BodyTooLarge);
    }
    if length > MAX_BUFFERED_BODY as u64 {
        return Parsed::Handoff;
    }
    let listed = &listed[..n_listed];

    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (h, kind) in req.headers.iter().zip(kinds) {
        match kind {
            Kind::Other | Kind::ContentLength | Kind::Host => {}
            _ => continue,
        }
        // `Connection` may name end-to-end headers to drop, but never the framing
        // (`Connection: content-length` would send the body without its length: the
        // instance would read it as the next request) nor `Host`.
        if kind == Kind::Other
            && !listed.is_empty()
            && listed
                .iter()
                .any(|l| l.eq_ignore_ascii_case(h.name.as_bytes()))
        {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    for (kind, name, this_hop) in [
        (Kind::XForwardedFor, "x-forwarded-for", &fwd.xff),
        (Kind::Forwarded, "forwarded", &fwd.forwarded),
    ] {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        for (h, k) in req.headers.iter().zip(kinds) {
            if k == kind && is_visible(h.value) {
                out.extend_from_slice(h.value);
                out.extend_from_slice(b", ");
            }
        }
        out.extend_from_slice(this_hop.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"x-forwarded-proto: http\r\n");

    let idempotent = matches!(method, "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE");
    Parsed::Complete(ReqMeta {
        head_len,
        // Bounded by MAX_BUFFERED_BODY above.
        body_len: length as usize,
        close,
        is_head: method == "HEAD",
        retryable: idempotent && length == 0,
        host_missing: !host,
    })
}

/// The fuzzing body of `swell_lb::fuzz_targets::h1_request`: the first byte picks the
/// connection's constants (IPv4 or IPv6 client, a body limit or none, first request or
/// not), the rest is the bytes a client sent. Panics only when an invariant breaks.
#[cfg(feature = "testing")]
pub(crate) fn fuzz_request(data: &[u8]) {
    let (flags, buf) = data.split_first().unwrap_or((&0, &[]));
    let client: IpAddr = if flags & 1 == 0 {
        std::net::Ipv4Addr::new(192, 0, 2, 1).into()
    } else {
        std::net::Ipv6Addr::LOCALHOST.into()
    };
    let max_body = (flags & 2 != 0).then_some(1000);
    let fwd = Forwarding::new(client, max_body);
    let mut out = Vec::new();
    let Parsed::Complete(meta) = parse_request(buf, flags & 4 != 0, &fwd, &mut out) else {
        return;
    };
    assert!(meta.head_len <= buf.len(), "{meta:?}");
    assert!(meta.body_len <= MAX_BUFFERED_BODY, "{meta:?}");
    assert!(
        max_body.is_none_or(|l| meta.body_len as u64 <= l),
        "{meta:?}"
    );
    assert!(!meta.retryable || meta.body_len == 0, "{meta:?}");
    // What the instance receives is a request head it frames the same way: the same
    // body length (or it would read the body as the next request), the same method,
    // and a Host unless the load balancer adds one.
    out.extend_from_slice(b"\r\n");
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS + 3];
    let parsed = httparse::Request::new(&mut headers).parse(&out);
    assert_eq!(
        parsed,
        Ok(Status::Complete(out.len())),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    if headers.iter().filter(|h| !h.name.is_empty()).count() > MAX_HEADERS {
        // Three more than the client sent (the forwarding headers): past this load
        // balancer's own limit, which an instance need not share.
        return;
    }
    let mut again = Vec::new();
    match parse_request(&out, false, &fwd, &mut again) {
        Parsed::Complete(m) => {
            assert_eq!(m.head_len, out.len(), "{:?}", String::from_utf8_lossy(&out));
            assert_eq!(
                (m.body_len, m.is_head, m.retryable, m.host_missing),
                (
                    meta.body_len,
                    meta.is_head,
                    meta.retryable,
                    meta.host_missing
                ),
                "{:?} -> {:?}",
                String::from_utf8_lossy(buf),
                String::from_utf8_lossy(&out)
            );
        }
        other => panic!(
            "the rewritten head does not parse: {other:?}: {:?} -> {:?}",
            String::from_utf8_lossy(buf),
            String::from_utf8_lossy(&out)
        ),
    }
}

/// The fuzzing body of `swell_lb::fuzz_targets::h1_response`: the first byte picks
/// whether the request was `HEAD` and asked to close, the rest is what an instance sent
/// (a response head, then a body read through its framing).
#[cfg(feature = "testing")]
pub(crate) fn fuzz_response(data: &[u8]) {
    let (flags, buf) = data.split_first().unwrap_or((&0, &[]));
    let mut out = Vec::new();
    let Ok(RespParsed::Complete(meta)) =
        parse_response(buf, flags & 1 != 0, flags & 2 != 0, &mut out)
    else {
        return;
    };
    assert!(meta.head_len <= buf.len(), "{meta:?}");
    assert!((200..1000).contains(&meta.status), "{meta:?}");
    assert!(
        out.ends_with(b"\r\n\r\n"),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    // The client frames the rewritten head's body the same way (or reads to the close
    // the head announces).
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS + 2];
    let parsed = httparse::Response::new(&mut headers).parse(&out);
    assert_eq!(
        parsed,
        Ok(Status::Complete(out.len())),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    if headers.iter().filter(|h| !h.name.is_empty()).count() > MAX_HEADERS {
        // Up to two more than the instance sent (`transfer-encoding`, `connection`):
        // past this load balancer's own limit, which a client need not share.
        return;
    }
    let mut again = Vec::new();
    match parse_response(&out, flags & 1 != 0, flags & 2 != 0, &mut again) {
        Ok(RespParsed::Complete(m)) => {
            assert!(
                m.framing == meta.framing || meta.close_client,
                "{:?} -> {:?}: {:?} != {:?}",
                String::from_utf8_lossy(&buf[..meta.head_len]),
                String::from_utf8_lossy(&out),
                m.framing,
                meta.framing
            );
        }
        other => panic!(
            "the rewritten head does not parse: {other:?}: {:?}",
            String::from_utf8_lossy(&out)
        ),
    }
    // The body, read in pieces of any size, is consumed within what was read; an
    // incomplete line stays in the buffer for the next read, as in `relay`.
    let mut framing = meta.framing;
    let mut pending = Vec::new();
    for piece in buf[meta.head_len..].chunks(usize::from(flags >> 2).max(1)) {
        pending.extend_from_slice(piece);
        let Ok((used, done)) = framing.consume(&pending) else {
            return;
        };
        assert!(used <= pending.len(), "{used} > {}", pending.len());
        pending.drain(..used);
        if done {
            return;
        }
    }
}

// ------------------------------------------------------------ the instance side

/// Why an attempt on an instance failed.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error(transparent)]
    Connect(UpstreamError),
    #[error("writing the request failed")]
    Write(#[source] std::io::Error),
    #[error("the instance closed the connection before answering")]
    Closed(#[source] Option<std::io::Error>),
    #[error("reading the response failed")]
    Read(#[source] std::io::Error),
    #[error("invalid response: {0}")]
    Invalid(&'static str),
}

impl AttemptError {
    /// Whether the instance cannot have answered (nor, for a write error,
    /// received the whole request).
    fn is_unsent(&self) -> bool {
        matches!(
            self,
            AttemptError::Connect(_) | AttemptError::Write(_) | AttemptError::Closed(_)
        )
    }
}

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes (0: no body, as for `HEAD`, `204` and `304`).
    Length(u64),
    Chunked(Chunked),
    /// When the instance closes the connection.
    UntilClose,
}

impl Framing {
    /// How many bytes at the start of `buf` belong to the body, and whether
    /// they end it.
    fn consume(&mut self, buf: &[u8]) -> Result<(usize, bool), &'static str> {
        match self {
            Framing::Length(left) => {
                let take = (*left).min(buf.len() as u64);
                *left -= take;
                Ok((take as usize, *left == 0))
            }
            Framing::Chunked(c) => c.consume(buf),
            Framing::UntilClose => Ok((buf.len(), false)),
        }
    }
}

/// Where a chunked body is: enough to find its end while copying it through
/// unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunked {
    /// At a chunk-size line.
    Size,
    /// Inside a chunk's data, with this much left.
    Data(u64),
    /// At the line end after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
    Done,
}

impl Chunked {
    /// Like [`Framing::consume`]. An incomplete line at the end of `buf` is
    /// not consumed: the caller reads more after it.
    fn consume(&mut self, buf: &[u8]) -> Result<(usize, bool), &'static str> {
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            match *self {
                Chunked::Size => match httparse::parse_chunk_size(rest) {
                    Ok(Status::Complete((n, size))) => {
                        pos += n;
                        *self = if size == 0 {
                            Chunked::Trailers
                        } else {
                            Chunked::Data(size)
                        };
                    }
                    Ok(Status::Partial) => return Ok((pos, false)),
                    Err(_) => return Err("invalid chunk size"),
                },
                Chunked::Data(left) => {
                    let take = left.min(rest.len() as u64);
                    pos += take as usize;
                    if take < left {
                        *self = Chunked::Data(left - take);
                        return Ok((pos, false));
                    }
                    *self = Chunked::DataEnd;
                }
                Chunked::DataEnd => {
                    if rest.starts_with(b"\r\n") {
                        pos += 2;
                    } else if rest.starts_with(b"\n") {
                        pos += 1;
                    } else if rest.is_empty() || rest == b"\r" {
                        return Ok((pos, false));
                    } else {
                        return Err("chunk data not followed by a line end");
                    }
                    *self = Chunked::Size;
                }
                Chunked::Trailers => {
                    if rest.starts_with(b"\r\n") {
                        pos += 2;
                        *self = Chunked::Done;
                    } else if rest.starts_with(b"\n") {
                        pos += 1;
                        *self = Chunked::Done;
                    } else {
                        match rest.iter().position(|&b| b == b'\n') {
                            Some(i) => pos += i + 1,
                            None => return Ok((pos, false)),
                        }
                    }
                }
                Chunked::Done => return Ok((pos, true)),
            }
        }
    }
}

/// A parsed response head; its rewritten form is in the caller's buffer.
#[derive(Debug)]
struct RespMeta {
    head_len: usize,
    status: u16,
    framing: Framing,
    /// The instance connection may carry another request afterwards.
    keep_alive: bool,
    /// The client connection closes after this response.
    close_client: bool,
}

/// What the parse of a response head found.
#[derive(Debug)]
enum RespParsed {
    Partial,
    /// A `1xx` of this length, skipped (never forwarded).
    Informational(usize),
    Complete(RespMeta),
}

/// Parses the response head at the start of `buf` and writes the client's
/// version of it, complete, to `out`.
fn parse_response(
    buf: &[u8],
    is_head: bool,
    client_close: bool,
    out: &mut Vec<u8>,
) -> Result<RespParsed, &'static str> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(Status::Complete(n)) if n <= MAX_HEAD => n,
        Ok(Status::Partial) if buf.len() <= MAX_HEAD => return Ok(RespParsed::Partial),
        Ok(_) | Err(httparse::Error::TooManyHeaders) => return Err("response head too large"),
        Err(_) => return Err("malformed response head"),
    };
    let (Some(version), Some(status)) = (resp.version, resp.code) else {
        return Err("malformed response head");
    };
    // httparse takes any three digits; like hyper, refuse a status below 100 (`000`
    // would reach the client as a final response).
    if status < 100 {
        return Err("invalid status code");
    }
    if status == 101 {
        return Err("unexpected 101 Switching Protocols");
    }
    if (100..200).contains(&status) {
        return Ok(RespParsed::Informational(head_len));
    }
    let mut keep_alive = version == 1;
    let mut chunked = false;
    let mut until_close = false;
    let mut length: Option<u64> = None;
    let mut listed: [&[u8]; MAX_LISTED] = [&[]; MAX_LISTED];
    let mut n_listed = 0;
    let mut kinds = [Kind::Other; MAX_HEADERS];
    for (h, kind) in resp.headers.iter().zip(kinds.iter_mut()) {
        *kind = classify(h.name);
        match *kind {
            Kind::Connection => {
                for t in tokens(h.value) {
                    if t.eq_ignore_ascii_case(b"close") {
                        keep_alive = false;
                    } else if n_listed < MAX_LISTED {
                        listed[n_listed] = t;
                        n_listed += 1;
                    }
                }
            }
            Kind::TransferEncoding => {
                let last = tokens(h.value).last().unwrap_or_default();
                chunked = last.eq_ignore_ascii_case(b"chunked");
                until_close = !chunked;
            }
            Kind::ContentLength => match (parse_length(h.value), length) {
                (Some(l), None) => length = Some(l),
                (Some(l), Some(seen)) if l == seen => {}
                _ => return Err("invalid Content-Length"),
            },
            _ => {}
        }
    }
    let framing = if is_head || status == 204 || status == 304 {
        Framing::Length(0)
    } else if chunked {
        Framing::Chunked(Chunked::Size)
    } else if until_close {
        Framing::UntilClose
    } else if let Some(l) = length {
        Framing::Length(l)
    } else {
        Framing::UntilClose
    };
    let close_client = client_close || framing == Framing::UntilClose;
    let listed = &listed[..n_listed];

    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    // httparse accepts exactly three digits.
    out.extend_from_slice(&[
        b'0' + (status / 100 % 10) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
        b' ',
    ]);
    out.extend_from_slice(resp.reason.unwrap_or_default().as_bytes());
    out.extend_from_slice(b"\r\n");
    for (h, kind) in resp.headers.iter().zip(kinds) {
        match kind {
            Kind::ContentLength if chunked => continue,
            Kind::Connection | Kind::HopByHop | Kind::TransferEncoding | Kind::Upgrade => continue,
            _ => {}
        }
        // The length that frames the body stays, whatever `Connection` lists.
        if kind != Kind::ContentLength
            && !listed.is_empty()
            && listed
                .iter()
                .any(|l| l.eq_ignore_ascii_case(h.name.as_bytes()))
        {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if matches!(framing, Framing::Chunked(_)) {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if close_client {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(RespParsed::Complete(RespMeta {
        head_len,
        status,
        framing,
        keep_alive: keep_alive && framing != Framing::UntilClose,
        close_client,
    }))
}

/// Sends `req` to `addr` on an idle connection or a new one and reads the
/// response head. A request that a stale idle connection could not carry is
/// sent once more on a new connection (it is buffered whole).
async fn attempt(
    upstream: &Upstream,
    addr: SocketAddr,
    req: &[u8],
    is_head: bool,
    client_close: bool,
    out: &mut Vec<u8>,
) -> Result<(RawConn, RespMeta), AttemptError> {
    let mut fresh = false;
    loop {
        let reused = if fresh { None } else { upstream.take_raw(addr) };
        let was_reused = reused.is_some();
        let mut up = match reused {
            Some(c) => c,
            None => upstream
                .connect_raw(addr)
                .await
                .map_err(AttemptError::Connect)?,
        };
        if let Err(e) = up.stream.write_all(req).await {
            if was_reused {
                fresh = true;
                continue;
            }
            return Err(AttemptError::Write(e));
        }
        match read_response_head(&mut up, is_head, client_close, out).await {
            Ok(meta) => return Ok((up, meta)),
            Err(AttemptError::Closed(_)) if was_reused => fresh = true,
            Err(e) => return Err(e),
        }
    }
}

async fn read_response_head(
    up: &mut RawConn,
    is_head: bool,
    client_close: bool,
    out: &mut Vec<u8>,
) -> Result<RespMeta, AttemptError> {
    let mut received = false;
    loop {
        if !up.buf.is_empty() {
            received = true;
            match parse_response(&up.buf, is_head, client_close, out)
                .map_err(AttemptError::Invalid)?
            {
                RespParsed::Complete(meta) => return Ok(meta),
                RespParsed::Informational(n) => {
                    up.buf.advance(n);
                    continue;
                }
                RespParsed::Partial => {}
            }
        }
        if up.buf.capacity() - up.buf.len() < READ_CHUNK / 4 {
            up.buf.reserve(READ_CHUNK);
        }
        match up.stream.read_buf(&mut up.buf).await {
            Ok(0) if received => return Err(AttemptError::Invalid("response head cut short")),
            Ok(0) => return Err(AttemptError::Closed(None)),
            Ok(_) => {}
            Err(e) if received => return Err(AttemptError::Read(e)),
            Err(e) => return Err(AttemptError::Closed(Some(e))),
        }
    }
}

/// Why copying a response body stopped early.
enum RelayError {
    /// The client went away.
    Client,
    /// The instance failed mid-body.
    Upstream(&'static str),
}

/// Writes the response head in `out` and copies the body from the instance to
/// the client. Returns whether the instance connection can be reused.
async fn relay(
    up: &mut RawConn,
    meta: RespMeta,
    client: &mut TcpStream,
    out: &mut Vec<u8>,
    stall: Duration,
) -> Result<bool, RelayError> {
    up.buf.advance(meta.head_len);
    let mut framing = meta.framing;
    // The head and what came with it of the body, in one write.
    let (take, mut done) = framing.consume(&up.buf).map_err(RelayError::Upstream)?;
    out.extend_from_slice(&up.buf[..take]);
    up.buf.advance(take);
    client
        .write_all(&out[..])
        .await
        .map_err(|_| RelayError::Client)?;
    while !done {
        if up.buf.len() > MAX_HEAD {
            return Err(RelayError::Upstream("chunk line too long"));
        }
        if up.buf.capacity() - up.buf.len() < READ_CHUNK / 4 {
            up.buf.reserve(READ_CHUNK);
        }
        // A body may stream for as long as it likes, but not stall forever.
        let n = match tokio::time::timeout(stall, up.stream.read_buf(&mut up.buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(_)) => return Err(RelayError::Upstream("read failed")),
            Err(_) => return Err(RelayError::Upstream("stalled")),
        };
        if n == 0 {
            return if framing == Framing::UntilClose {
                Ok(false)
            } else {
                Err(RelayError::Upstream("body cut short"))
            };
        }
        let (take, d) = framing.consume(&up.buf).map_err(RelayError::Upstream)?;
        done = d;
        if take > 0 {
            client
                .write_all(&up.buf[..take])
                .await
                .map_err(|_| RelayError::Client)?;
            up.buf.advance(take);
        }
    }
    // Bytes past the end of the body: the instance is confused; do not reuse.
    Ok(meta.keep_alive && up.buf.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fwd() -> Forwarding {
        Forwarding::new("127.0.0.1".parse().unwrap(), Some(1000))
    }

    fn parse(head: &str) -> (Parsed, String) {
        let mut out = Vec::new();
        let p = parse_request(head.as_bytes(), true, &fwd(), &mut out);
        (p, String::from_utf8(out).unwrap())
    }

    #[test]
    fn a_plain_request_is_rewritten() {
        let (p, out) = parse(
            "GET /a?b=1 HTTP/1.1\r\nHost: app\r\nConnection: keep-alive, X-Secret\r\n\
             X-Secret: 1\r\nProxy-Authorization: x\r\nTE: trailers\r\nKeep-Alive: 5\r\n\
             X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2\r\n\
             X-Forwarded-Proto: https\r\nForwarded: for=192.0.2.1\r\nAccept: */*\r\n\r\n",
        );
        let Parsed::Complete(meta) = p else {
            panic!("{p:?}")
        };
        assert_eq!(
            out,
            "GET /a?b=1 HTTP/1.1\r\nHost: app\r\nAccept: */*\r\n\
             x-forwarded-for: 10.0.0.1, 10.0.0.2, 127.0.0.1\r\n\
             forwarded: for=192.0.2.1, for=127.0.0.1;proto=http\r\n\
             x-forwarded-proto: http\r\n"
        );
        assert!(!meta.close && meta.retryable && !meta.host_missing && !meta.is_head);
        assert_eq!(meta.body_len, 0);
    }

    #[test]
    fn request_heads_are_classified() {
        let check = |head: &str, expect: Parsed| {
            let (p, _) = parse(head);
            assert_eq!(p, expect, "{head:?}");
        };
        use Parsed::{Handoff, Partial, Reject as R};
        check("GET / HTTP/1.1\r\nHost: x\r\n", Partial);
        check("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Handoff);
        check("PRI * HT", Partial);
        check("GET / HTTP/1.0\r\n\r\n", Handoff);
        check("GET http://x/ HTTP/1.1\r\n\r\n", Handoff);
        check("OPTIONS * HTTP/1.1\r\n\r\n", Handoff);
        check("CONNECT x:1 HTTP/1.1\r\n\r\n", Handoff);
        check(
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            Handoff,
        );
        check("GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", Handoff);
        check(
            "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
            Handoff,
        );
        check(
            "POST / HTTP/1.1\r\nContent-Length: 1001\r\n\r\n",
            R(Reject::BodyTooLarge),
        );
        check(
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            R(Reject::BadRequest),
        );
        check(
            "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            R(Reject::BadRequest),
        );
        check(
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            R(Reject::BadRequest),
        );
        check(
            "GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
            R(Reject::BadRequest),
        );
        check("\x00\x01\x02 / HTTP/1.1\r\n\r\n", R(Reject::BadRequest));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("h{i}: v\r\n")).collect();
        check(
            &format!("GET / HTTP/1.1\r\n{many}\r\n"),
            R(Reject::HeadTooLarge),
        );
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(MAX_HEAD));
        check(&long, R(Reject::HeadTooLarge));
    }

    #[test]
    fn bodies_close_and_missing_host_are_noted() {
        let (p, out) =
            parse("POST /x HTTP/1.1\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello");
        let Parsed::Complete(meta) = p else {
            panic!("{p:?}")
        };
        assert_eq!(
            (meta.body_len, meta.close, meta.retryable),
            (5, true, false)
        );
        assert!(meta.host_missing);
        assert!(out.contains("Content-Length: 5\r\n"), "{out}");
        assert!(!out.to_ascii_lowercase().contains("connection"), "{out}");
        let (p, _) = parse("HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(matches!(p, Parsed::Complete(m) if m.is_head && m.retryable));
    }

    #[test]
    fn ipv6_clients_are_quoted_in_forwarded() {
        let f = Forwarding::new("::1".parse().unwrap(), None);
        assert_eq!(f.xff, "::1");
        assert_eq!(f.forwarded, "for=\"[::1]\";proto=http");
    }

    fn response(head: &str, is_head: bool) -> (RespMeta, String) {
        let mut out = Vec::new();
        match parse_response(head.as_bytes(), is_head, false, &mut out).unwrap() {
            RespParsed::Complete(m) => (m, String::from_utf8(out).unwrap()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn response_heads_are_framed_and_stripped() {
        let (m, out) = response(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\n\
             Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\nX-Backend: a\r\n\r\nhi",
            false,
        );
        assert_eq!(m.framing, Framing::Length(2));
        assert!(m.keep_alive && !m.close_client);
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Backend: a\r\n\r\n"
        );
        let (m, out) = response(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
            false,
        );
        assert_eq!(m.framing, Framing::Chunked(Chunked::Size));
        assert_eq!(out, "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
        let (m, out) = response("HTTP/1.0 200 OK\r\n\r\n", false);
        assert_eq!(m.framing, Framing::UntilClose);
        assert!(!m.keep_alive && m.close_client);
        assert!(out.ends_with("connection: close\r\n\r\n"));
        let (m, _) = response("HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", true);
        assert_eq!(m.framing, Framing::Length(0));
        let (m, _) = response("HTTP/1.1 304 Not Modified\r\n\r\n", false);
        assert_eq!(m.framing, Framing::Length(0));
        let (m, _) = response(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert!(!m.keep_alive && !m.close_client);
        let mut out = Vec::new();
        assert!(matches!(
            parse_response(
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200",
                false,
                false,
                &mut out
            ),
            Ok(RespParsed::Informational(25))
        ));
        assert!(parse_response(b"HTTP/1.1 101 Switching\r\n\r\n", false, false, &mut out).is_err());
        assert!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                false,
                false,
                &mut out
            )
            .is_err()
        );
        assert!(parse_response(b"garbage\r\n\r\n", false, false, &mut out).is_err());
    }

    /// Feeds `body` to a chunked decoder in pieces of `step` bytes, as reads
    /// would deliver them; returns the bytes forwarded and whether it ended.
    fn feed_chunked(body: &[u8], step: usize) -> Result<(Vec<u8>, bool), &'static str> {
        let mut framing = Framing::Chunked(Chunked::Size);
        let mut pending = Vec::new();
        let mut forwarded = Vec::new();
        for piece in body.chunks(step) {
            pending.extend_from_slice(piece);
            let (take, done) = framing.consume(&pending)?;
            forwarded.extend(pending.drain(..take));
            if done {
                return Ok((forwarded, pending.is_empty()));
            }
        }
        Ok((forwarded, false))
    }

    #[test]
    fn chunked_bodies_end_where_they_end_however_they_are_split() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Sum: 1\r\n\r\n";
        for step in 1..=body.len() {
            let (forwarded, exact) = feed_chunked(body, step).unwrap();
            assert_eq!(forwarded, body, "step {step}");
            assert!(exact, "step {step}");
        }
        // Bytes after the end are not part of the body.
        let mut f = Framing::Chunked(Chunked::Size);
        assert_eq!(f.consume(b"0\r\n\r\nHTTP/1.1"), Ok((5, true)));
        // Not the end yet.
        assert!(!feed_chunked(b"5\r\nhel", 3).unwrap().1);
        // Garbage.
        assert!(feed_chunked(b"zz\r\n", 4).is_err());
        assert!(feed_chunked(b"1\r\nab\r\n", 8).is_err());
    }

    /// Found by fuzzing (`fuzz/corpus/h1_response/status-000`) and while writing the
    /// request target's property (`fuzz/corpus/h1_request/connection-lists-*`).
    #[test]
    fn framing_survives_the_connection_header_and_bad_statuses_are_refused() {
        let (p, out) = parse(
            "POST / HTTP/1.1\r\nHost: x\r\nConnection: content-length, host, x-a\r\n\
             X-A: 1\r\nContent-Length: 5\r\n\r\nhello",
        );
        assert!(
            matches!(p, Parsed::Complete(ReqMeta { body_len: 5, .. })),
            "{p:?}"
        );
        assert!(out.contains("Content-Length: 5\r\n"), "{out}");
        assert!(out.contains("Host: x\r\n") && !out.contains("X-A"), "{out}");

        let (meta, out) = response(
            "HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\n",
            false,
        );
        assert_eq!(meta.framing, Framing::Length(5));
        assert!(out.contains("Content-Length: 5\r\n"), "{out}");

        let mut out = Vec::new();
        assert_eq!(
            parse_response(b"HTTP/1.0 000 OK\r\n\r\n", false, false, &mut out).err(),
            Some("invalid status code")
        );
    }

    #[test]
    fn lengths_parse_strictly() {
        assert_eq!(parse_length(b"0"), Some(0));
        assert_eq!(parse_length(b"123"), Some(123));
        for bad in [&b""[..], b"+1", b"1 2", b"0x10", b"99999999999999999999"] {
            assert_eq!(parse_length(bad), None, "{bad:?}");
        }
    }
}
