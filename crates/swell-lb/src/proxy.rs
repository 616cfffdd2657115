//! Forwarding one request: backend choice, retry, header rewriting, limits,
//! timeouts, passive health and traffic accounting.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, LengthLimitError, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use tokio::time::Instant;

use crate::pool::{InFlightGuard, Pool};
use crate::traffic::Traffic;
use crate::upstream::{Lease, Upstream, UpstreamError};
use crate::{Health, LbConfig, PassiveEjection};

/// Errors of bodies flowing through the load balancer.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Body type of everything the load balancer sends, both ways.
pub(crate) type LbBody = BoxBody<Bytes, BoxError>;

/// Why a request could not be forwarded; each maps to one status code.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    #[error("no instance is ready to serve this request")]
    NoBackend,
    #[error("backend {backend} could not be reached")]
    Unreachable {
        backend: String,
        #[source]
        source: UpstreamError,
    },
    #[error("backend {backend} failed")]
    Upstream {
        backend: String,
        #[source]
        source: UpstreamError,
    },
    #[error("backend {backend} did not answer within {timeout:?}")]
    Timeout { backend: String, timeout: Duration },
    #[error("request could not be rewritten for the backend")]
    BadRequest(#[source] hyper::http::Error),
    #[error("request body is larger than {limit} bytes")]
    TooLarge { limit: u64 },
}

impl ProxyError {
    fn into_response(self) -> Response<LbBody> {
        let (status, text) = match &self {
            ProxyError::NoBackend => (
                StatusCode::SERVICE_UNAVAILABLE,
                "no instance is ready to serve this request\n",
            ),
            ProxyError::Unreachable { .. } | ProxyError::Upstream { .. } => (
                StatusCode::BAD_GATEWAY,
                "the instance could not be reached\n",
            ),
            ProxyError::Timeout { .. } => (
                StatusCode::GATEWAY_TIMEOUT,
                "the instance did not answer in time\n",
            ),
            ProxyError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad request\n"),
            ProxyError::TooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n")
            }
        };
        let mut resp = Response::new(
            Full::new(Bytes::from_static(text.as_bytes()))
                .map_err(|never: Infallible| match never {})
                .boxed(),
        );
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body may still be on its way: do not read it.
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// Shared forwarding state: the pool, one keep-alive client for all backends,
/// limits and the traffic recorders.
pub(crate) struct Proxy {
    pub(crate) pool: Arc<Pool>,
    pub(crate) traffic: Arc<Traffic>,
    pub(crate) upstream: Arc<Upstream>,
    pub(crate) request_timeout: Duration,
    max_body_bytes: Option<u64>,
    passive: Option<PassiveEjection>,
}

impl Proxy {
    /// A proxy with a fresh pool and traffic recorders.
    pub(crate) fn new(config: &LbConfig) -> Self {
        let initial = if config.health_check.is_some() {
            Health::Pending
        } else {
            Health::Healthy
        };
        Self::sharing(
            config,
            Arc::new(Pool::new(config.algorithm, initial)),
            Arc::new(Traffic::new()),
        )
    }

    /// A proxy with its own client (for one worker thread) over a shared pool,
    /// with the given traffic recorders.
    pub(crate) fn sharing(config: &LbConfig, pool: Arc<Pool>, traffic: Arc<Traffic>) -> Self {
        Self {
            pool,
            traffic,
            upstream: Arc::new(Upstream::new(
                config.connect_timeout,
                config.pool_idle_timeout,
            )),
            request_timeout: config.request_timeout,
            max_body_bytes: config.max_body_bytes,
            passive: config.passive_ejection.clone(),
        }
    }

    /// Passive health: records the outcome of one attempt on `guard`'s
    /// backend and, when that ejects it, schedules its re-admission.
    pub(crate) fn outcome(&self, guard: &InFlightGuard, ok: bool) {
        let Some(passive) = &self.passive else {
            return;
        };
        if self
            .pool
            .record_outcome(guard.state(), ok, passive.consecutive_failures)
        {
            let (pool, state, after) = (
                Arc::clone(&self.pool),
                Arc::clone(guard.state()),
                passive.ejection_time,
            );
            tracing::warn!(backend = %guard.id(), failures = passive.consecutive_failures,
                ejection = ?after, "instance ejected after consecutive failures");
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                pool.readmit(&state);
            });
        }
    }

    /// Serves one client request. Never fails: errors become 5xx responses.
    pub(crate) async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<LbBody>, Infallible> {
        let started = Instant::now();
        let result = self.forward(req, peer).await;
        let resp = match result {
            Ok(resp) => resp,
            Err(err) => {
                tracing::debug!(%peer, error = %err_chain(&err), "not proxied");
                err.into_response()
            }
        };
        let status = resp.status();
        self.traffic
            .record(Some(started.elapsed()), status.is_server_error());
        Ok(resp)
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<LbBody>, ProxyError> {
        let (mut parts, body) = req.into_parts();
        if let Some(limit) = self.max_body_bytes
            && body.size_hint().lower() > limit
        {
            return Err(ProxyError::TooLarge { limit });
        }
        // HTTP/2 carries the host in `:authority`; HTTP/1.1 backends need `Host`.
        if !parts.headers.contains_key(header::HOST)
            && let Some(authority) = parts.uri.authority()
            && let Ok(host) = HeaderValue::from_str(authority.as_str())
        {
            parts.headers.insert(header::HOST, host);
        }
        strip_hop_by_hop(&mut parts.headers);
        add_forwarding_headers(&mut parts.headers, peer.ip());
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        // Only requests that carry no body and are idempotent may be sent twice:
        // nothing of theirs is lost by resending, and RFC 9110 §9.2.2 allows it.
        let retryable = is_idempotent(&parts.method) && body.is_end_stream();
        let mut body = Some(body);

        // One deadline for the whole request, retry included.
        let deadline = Instant::now() + self.request_timeout;
        let mut guard = self.pool.acquire(None).ok_or(ProxyError::NoBackend)?;
        let mut retried = false;
        loop {
            let upstream_body = match (retryable, body.take()) {
                (false, Some(b)) => match self.max_body_bytes {
                    Some(limit) => Limited::new(b, limit as usize).boxed(),
                    None => b.map_err(BoxError::from).boxed(),
                },
                _ => Empty::new().map_err(|never| match never {}).boxed(),
            };
            let upstream = build_upstream(&parts, guard.addr(), &path, upstream_body)
                .map_err(ProxyError::BadRequest)?;
            match tokio::time::timeout_at(deadline, self.upstream.send(guard.addr(), upstream))
                .await
            {
                Ok(Ok((resp, lease))) => {
                    self.outcome(&guard, !resp.status().is_server_error());
                    return Ok(finish_response(resp, guard, lease, &self.upstream));
                }
                Ok(Err(source)) if is_too_large(&source) => {
                    // The client's fault, not the instance's.
                    let limit = self.max_body_bytes.unwrap_or(0);
                    return Err(ProxyError::TooLarge { limit });
                }
                Ok(Err(source)) if source.is_unsent() => {
                    guard.record_failure();
                    self.outcome(&guard, false);
                    let backend = guard.id().to_owned();
                    tracing::debug!(%backend, error = %err_chain(&source), "backend unreachable");
                    let next = if retryable && !retried {
                        self.pool.acquire(Some(&backend))
                    } else {
                        None
                    };
                    match next {
                        Some(next) => {
                            retried = true;
                            tracing::debug!(from = %backend, to = %next.id(), "retrying on the next backend");
                            guard = next;
                        }
                        None => return Err(ProxyError::Unreachable { backend, source }),
                    }
                }
                Ok(Err(source)) => {
                    guard.record_failure();
                    self.outcome(&guard, false);
                    let backend = guard.id().to_owned();
                    return Err(ProxyError::Upstream { backend, source });
                }
                Err(_elapsed) => {
                    guard.record_failure();
                    self.outcome(&guard, false);
                    return Err(ProxyError::Timeout {
                        backend: guard.id().to_owned(),
                        timeout: self.request_timeout,
                    });
                }
            }
        }
    }
}

/// Whether a client error was caused by the request body passing the limit.
fn is_too_large(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.is::<LengthLimitError>() {
            return true;
        }
        cur = e.source();
    }
    false
}

pub(crate) fn err_chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        s.push_str(": ");
        s.push_str(&e.to_string());
        cur = e.source();
    }
    s
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    )
}

fn build_upstream(
    parts: &hyper::http::request::Parts,
    addr: SocketAddr,
    path: &str,
    body: LbBody,
) -> Result<Request<LbBody>, hyper::http::Error> {
    // Origin form: the connection already goes to the instance.
    let uri = Uri::builder().path_and_query(path).build()?;
    let mut req = Request::builder()
        .method(parts.method.clone())
        .uri(uri)
        .version(Version::HTTP_11)
        .body(body)?;
    *req.headers_mut() = parts.headers.clone();
    if !req.headers().contains_key(header::HOST)
        && let Ok(host) = HeaderValue::from_str(&addr.to_string())
    {
        req.headers_mut().insert(header::HOST, host);
    }
    Ok(req)
}

fn finish_response(
    resp: Response<Incoming>,
    guard: InFlightGuard,
    lease: Lease,
    upstream: &Arc<Upstream>,
) -> Response<LbBody> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(
        parts,
        GuardedBody {
            inner: body,
            guard: Some(guard),
            lease: Some(lease),
            upstream: Arc::clone(upstream),
        }
        .map_err(BoxError::from)
        .boxed(),
    )
}

/// The headers RFC 9110 §7.6.1 says a proxy must not forward, plus `Proxy-*`.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    let proxy: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy {
        headers.remove(name);
    }
}

/// Appends the client to `X-Forwarded-For` and `Forwarded`, and sets
/// `X-Forwarded-Proto: http`.
pub(crate) fn add_forwarding_headers(headers: &mut HeaderMap, client: IpAddr) {
    append_list(
        headers,
        HeaderName::from_static("x-forwarded-for"),
        &client.to_string(),
    );
    let node = match client {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("\"[{ip}]\""),
    };
    append_list(
        headers,
        header::FORWARDED,
        &format!("for={node};proto=http"),
    );
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    );
}

/// Folds every existing value of `name` and `item` into one comma-separated value.
fn append_list(headers: &mut HeaderMap, name: HeaderName, item: &str) {
    let mut values: Vec<&str> = headers
        .get_all(&name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    values.push(item);
    if let Ok(v) = HeaderValue::from_str(&values.join(", ")) {
        headers.insert(name, v);
    }
}

/// A backend's response body that holds its request's [`InFlightGuard`] until
/// the last byte has been read from the backend (or the body is dropped, when the
/// client goes away).
struct GuardedBody {
    inner: Incoming,
    guard: Option<InFlightGuard>,
    /// The instance connection, returned to the pool at the end of the body.
    lease: Option<Lease>,
    upstream: Arc<Upstream>,
}

impl Drop for GuardedBody {
    fn drop(&mut self) {
        // A body that was never polled because it was empty (HEAD, 204,
        // `Content-Length: 0`) still leaves a reusable connection.
        if let Some(lease) = self.lease.take()
            && self.inner.is_end_stream()
        {
            self.upstream.checkin(lease);
        }
    }
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some(lease) = self.lease.take() {
                    self.upstream.checkin(lease);
                }
                self.guard = None;
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(g) = self.guard.take() {
                    g.record_failure();
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn strips_hop_by_hop_and_connection_listed_headers() {
        let mut h = headers(&[
            ("connection", "keep-alive, X-Secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-sum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("content-length", "3"),
            ("host", "app"),
        ]);
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["content-length", "host"]);
    }

    #[test]
    fn forwarding_headers_append_to_existing_ones() {
        let mut h = headers(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-for", "10.0.0.2"),
            ("x-forwarded-proto", "https"),
        ]);
        add_forwarding_headers(&mut h, "127.0.0.1".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 10.0.0.2, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["forwarded"], "for=127.0.0.1;proto=http");
    }

    #[test]
    fn forwarded_quotes_ipv6() {
        let mut h = headers(&[("forwarded", "for=192.0.2.1")]);
        add_forwarding_headers(&mut h, "::1".parse().unwrap());
        assert_eq!(h["forwarded"], "for=192.0.2.1, for=\"[::1]\";proto=http");
        assert_eq!(h["x-forwarded-for"], "::1");
    }

    #[test]
    fn only_bodiless_idempotent_methods_are_retried() {
        for m in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::PUT,
            Method::DELETE,
        ] {
            assert!(is_idempotent(&m), "{m}");
        }
        for m in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!is_idempotent(&m), "{m}");
        }
    }

    #[test]
    fn no_backend_is_503_with_retry_after() {
        let resp = ProxyError::NoBackend.into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
    }
}
