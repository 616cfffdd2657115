//! Keep-alive HTTP/1.1 connections to the instances.
//!
//! A small pool of idle connections per instance address, built on hyper's
//! connection-level client: a request checks one out (or connects), and the
//! proxy checks it back in when the response body has been read to the end.
//! Compared with a general-purpose client it skips the per-request task the
//! latter spawns to watch for the connection's return, and its pool key
//! hashing; a request that a stale idle connection could not send is resent
//! once on a fresh connection to the same instance (hyper hands the unsent
//! request back), bodies included.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::proxy::LbBody;

/// Idle connections kept per instance, at most.
const MAX_IDLE_PER_ADDR: usize = 512;

/// An idle plain connection younger than this is reused without checking
/// whether the instance closed it.
const RECENT: Duration = Duration::from_secs(1);

/// Why an attempt failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// The TCP connect failed: nothing was sent.
    #[error("connect failed")]
    Connect(#[source] std::io::Error),
    /// The TCP connect took longer than the connect timeout: nothing was sent.
    #[error("connect timed out after {0:?}")]
    ConnectTimeout(Duration),
    /// The HTTP/1.1 handshake failed: nothing was sent.
    #[error("handshake failed")]
    Handshake(#[source] hyper::Error),
    /// Sending the request or reading the response failed.
    #[error("request failed")]
    Send(#[source] hyper::Error),
}

impl UpstreamError {
    /// Whether the instance cannot have seen the request: the connect failed,
    /// or the connection closed before any response (the race every
    /// keep-alive proxy has when an instance exits).
    pub(crate) fn is_unsent(&self) -> bool {
        match self {
            UpstreamError::Connect(_)
            | UpstreamError::ConnectTimeout(_)
            | UpstreamError::Handshake(_) => true,
            UpstreamError::Send(e) => e.is_incomplete_message() || e.is_canceled(),
        }
    }
}

struct Idle {
    sender: SendRequest<LbBody>,
    since: Instant,
}

/// A connection to return with [`Upstream::checkin`] once its response has
/// been read to the end.
pub(crate) struct Lease {
    addr: SocketAddr,
    sender: SendRequest<LbBody>,
}

/// A plain TCP connection to an instance, for the HTTP/1.1 fast path
/// (`h1.rs`), with its read buffer.
pub(crate) struct RawConn {
    pub(crate) stream: TcpStream,
    pub(crate) buf: BytesMut,
    /// [`Upstream::forgets`] when it was handed out: one returned after a
    /// [`Upstream::forget`] is closed, not pooled (its instance may have left).
    generation: u64,
}

/// Idle plain connections to one instance, with since when.
type RawIdle = Vec<(RawConn, Instant)>;

/// Read buffer of a [`RawConn`], to start with.
const RAW_BUF: usize = 16 * 1024;

/// The pool of idle connections, per instance address: hyper's (for requests
/// served by hyper) and plain ones (for the fast path).
pub(crate) struct Upstream {
    idle: Mutex<HashMap<SocketAddr, Vec<Idle>>>,
    /// Per instance address (a handful: a linear scan beats hashing), the
    /// idle connections, most recently used last.
    raw: Mutex<Vec<(SocketAddr, RawIdle)>>,
    /// Calls of [`Upstream::forget`] so far; written under the `raw` lock.
    forgets: AtomicU64,
    connect_timeout: Duration,
    idle_timeout: Duration,
}

impl Upstream {
    pub(crate) fn new(connect_timeout: Duration, idle_timeout: Duration) -> Self {
        Self {
            idle: Mutex::new(HashMap::new()),
            raw: Mutex::new(Vec::new()),
            forgets: AtomicU64::new(0),
            connect_timeout,
            idle_timeout,
        }
    }

    /// An idle connection that is still open, if any.
    async fn reuse(&self, addr: SocketAddr) -> Option<SendRequest<LbBody>> {
        loop {
            let idle = {
                let mut map = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
                map.get_mut(&addr)?.pop()?
            };
            if idle.since.elapsed() >= self.idle_timeout || idle.sender.is_closed() {
                continue; // dropping it closes the connection
            }
            let mut sender = idle.sender;
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    async fn connect_tcp(&self, addr: SocketAddr) -> Result<TcpStream, UpstreamError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout(self.connect_timeout))?
            .map_err(UpstreamError::Connect)?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// A new plain connection to `addr`, for the fast path.
    pub(crate) async fn connect_raw(&self, addr: SocketAddr) -> Result<RawConn, UpstreamError> {
        let stream = self.connect_tcp(addr).await?;
        Ok(RawConn {
            stream,
            buf: BytesMut::with_capacity(RAW_BUF),
            generation: self.forgets.load(Ordering::Relaxed),
        })
    }

    /// An idle plain connection to `addr` that is still open, if any. One
    /// that was idle for less than [`RECENT`] is taken as is (a stale one is
    /// found when the request cannot be sent on it, and the request is sent
    /// again on a new connection); an older one is checked first, which costs
    /// no system call unless its socket became readable (the instance closed
    /// it, or sent something it should not have).
    pub(crate) fn take_raw(&self, addr: SocketAddr) -> Option<RawConn> {
        loop {
            let (mut conn, since) = {
                let mut pools = self.raw.lock().unwrap_or_else(PoisonError::into_inner);
                let (_, idle) = pools.iter_mut().find(|(a, _)| *a == addr)?;
                idle.pop()?
            };
            conn.generation = self.forgets.load(Ordering::Relaxed);
            let idle_for = since.elapsed();
            if idle_for >= self.idle_timeout || !conn.buf.is_empty() {
                continue; // dropping it closes the connection
            }
            if idle_for < RECENT {
                return Some(conn);
            }
            match conn.stream.try_read(&mut [0u8; 1]) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Some(conn),
                _ => continue, // EOF, an error, or unexpected bytes
            }
        }
    }

    /// Returns a plain connection whose response has been read to the end.
    pub(crate) fn put_raw(&self, addr: SocketAddr, conn: RawConn) {
        let mut pools = self.raw.lock().unwrap_or_else(PoisonError::into_inner);
        if conn.generation != self.forgets.load(Ordering::Relaxed) {
            // A forget ran while it was out: perhaps of its instance.
            drop(pools);
            return;
        }
        let idle = match pools.iter().position(|(a, _)| *a == addr) {
            Some(i) => &mut pools[i].1,
            None => {
                pools.push((addr, Vec::new()));
                &mut pools.last_mut().expect("just pushed").1
            }
        };
        if idle.len() < MAX_IDLE_PER_ADDR {
            idle.push((conn, Instant::now()));
        }
    }

    async fn connect(&self, addr: SocketAddr) -> Result<SendRequest<LbBody>, UpstreamError> {
        let stream = self.connect_tcp(addr).await?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(UpstreamError::Handshake)?;
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!(%addr, error = %err, "instance connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Sends `req` to `addr` on an idle connection or a new one. Returns the
    /// response and the connection, to check in when the body is done.
    pub(crate) async fn send(
        &self,
        addr: SocketAddr,
        req: Request<LbBody>,
    ) -> Result<(Response<Incoming>, Lease), UpstreamError> {
        let mut req = req;
        let mut fresh = false;
        loop {
            let reused = if fresh { None } else { self.reuse(addr).await };
            let was_reused = reused.is_some();
            let mut sender = match reused {
                Some(s) => s,
                None => self.connect(addr).await?,
            };
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, Lease { addr, sender })),
                Err(mut err) => match err.take_message() {
                    // A stale idle connection never sent it: once more, fresh.
                    Some(unsent) if was_reused => {
                        req = unsent;
                        fresh = true;
                    }
                    _ => return Err(UpstreamError::Send(err.into_error())),
                },
            }
        }
    }

    /// Closes every idle connection to `addr` (a drained instance).
    pub(crate) fn forget(&self, addr: SocketAddr) {
        let gone = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&addr);
        drop(gone);
        let gone = {
            let mut pools = self.raw.lock().unwrap_or_else(PoisonError::into_inner);
            self.forgets.fetch_add(1, Ordering::Relaxed);
            pools
                .iter()
                .position(|(a, _)| *a == addr)
                .map(|i| pools.swap_remove(i))
        };
        drop(gone);
    }

    /// Returns a connection whose response has been read to the end.
    pub(crate) fn checkin(&self, lease: Lease) {
        if lease.sender.is_closed() {
            return;
        }
        let mut map = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let idle = map.entry(lease.addr).or_default();
        if idle.len() < MAX_IDLE_PER_ADDR {
            idle.push(Idle {
                sender: lease.sender,
                since: Instant::now(),
            });
        }
    }
}
