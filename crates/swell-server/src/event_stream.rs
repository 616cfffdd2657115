//! Live events: `GET /v1/groups/{name}/events/stream` (Server-Sent Events).
//!
//! Delivery does not poll the store. Every committed transaction that recorded events
//! announces its group on one process-wide channel ([`swell_store::events::subscribe`]),
//! whoever wrote them (the service or the controller). A follower waits for an
//! announcement of its own group, then reads the rows after the last id it sent: the
//! announcement only says *where* to look, so a follower that lagged behind the channel
//! reads the store again and loses nothing. The stream ends when the group is deleted
//! (after its `group_deleted` event), at its `timeout`, after `max_events`, or when the
//! server stops.

use crate::service::{Result, Service, ServiceError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use swell_api as api;
use swell_core::{EventKind, TenantId};
use swell_store::events::EventAppended;
use swell_store::{EventFilter, EventRecord};
use tokio::sync::broadcast::{Receiver, error::RecvError};

/// The most open event streams per tenant unless configured otherwise
/// (`ServerConfig::max_event_streams`); one more is answered 429.
pub const DEFAULT_MAX_EVENT_STREAMS: usize = 32;

/// Rows read from the store per wake-up; more are read on the next turn at once.
const PAGE: u32 = 500;

/// Open streams per tenant, with the cap.
pub(crate) struct StreamCounts {
    max: usize,
    open: Arc<Mutex<HashMap<TenantId, usize>>>,
}

impl StreamCounts {
    /// No stream open; at most `max` per tenant.
    pub(crate) fn new(max: usize) -> Self {
        StreamCounts {
            max,
            open: Arc::default(),
        }
    }

    /// A place for one more stream of `tenant`, or `Busy` when it has `max` open.
    fn acquire(&self, tenant: &TenantId) -> Result<StreamPermit> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(tenant.clone()).or_default();
        if *n >= self.max {
            return Err(ServiceError::Busy(format!(
                "the tenant has {} open event streams, the most allowed; close one or retry later",
                self.max
            )));
        }
        *n += 1;
        Ok(StreamPermit {
            tenant: tenant.clone(),
            open: self.open.clone(),
        })
    }
}

/// One open stream of a tenant, given back when dropped (the client went away or the
/// stream ended).
struct StreamPermit {
    tenant: TenantId,
    open: Arc<Mutex<HashMap<TenantId, usize>>>,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.tenant);
            }
        }
    }
}

/// Follows a group's events from a given id: what one event stream reads.
pub struct EventFollower {
    service: Arc<Service>,
    tenant: TenantId,
    group: String,
    last_id: i64,
    announcements: Receiver<EventAppended>,
    /// The group's `group_deleted` event was returned: nothing follows.
    ended: bool,
    _permit: StreamPermit,
}

impl Service {
    /// Starts following `name`'s events after `after_id` (`None`: after the newest one
    /// now, so only new events). The group must exist in `tenant` (404 otherwise); the
    /// tenant may have at most the configured number of followers open (429).
    pub async fn follow_events(
        self: &Arc<Self>,
        tenant: &TenantId,
        name: &str,
        after_id: Option<i64>,
    ) -> Result<EventFollower> {
        if let Some(id) = after_id
            && id < 0
        {
            return Err(ServiceError::Invalid(swell_core::ValidationError::new(
                "after_id",
                "must be 0 or more",
            )));
        }
        // Subscribe before reading anything, so that no commit falls between the read
        // and the wait.
        let announcements = swell_store::events::subscribe();
        let group = self.get_group(tenant, name).await?;
        let permit = self.event_streams.acquire(tenant)?;
        let last_id = match after_id {
            Some(id) => id,
            None => self
                .store
                .list_events(
                    tenant,
                    name,
                    &EventFilter {
                        limit: Some(1),
                        ..EventFilter::default()
                    },
                )
                .await?
                .last()
                .map_or(0, |e| e.id),
        };
        Ok(EventFollower {
            service: self.clone(),
            tenant: tenant.clone(),
            group: group.spec.name.to_string(),
            last_id,
            announcements,
            ended: false,
            _permit: permit,
        })
    }
}

impl EventFollower {
    /// The next events after the last ones returned, oldest first, waiting until there
    /// are some; `None` once the group is gone (after its `group_deleted` event was
    /// returned) or the server stops.
    pub async fn next_events(&mut self) -> Result<Option<Vec<EventRecord>>> {
        loop {
            if self.ended || self.service.shutdown.is_cancelled() {
                return Ok(None);
            }
            let filter = EventFilter {
                after_id: Some(self.last_id),
                limit: Some(PAGE),
                ..EventFilter::default()
            };
            let mut events = self
                .service
                .store
                .list_events(&self.tenant, &self.group, &filter)
                .await?;
            if let Some(end) = events
                .iter()
                .position(|e| e.event.kind == EventKind::GroupDeleted)
            {
                events.truncate(end + 1);
                self.ended = true;
            }
            if let Some(last) = events.last() {
                self.last_id = last.id;
                return Ok(Some(events));
            }
            match self
                .service
                .store
                .get_group(&self.tenant, &self.group)
                .await?
            {
                Some(g) if !g.deleting => {}
                _ => return Ok(None),
            }
            if !self.wait().await {
                return Ok(None);
            }
        }
    }

    /// Waits for an announcement of this group (or a lag, after which the store is read
    /// again); false when the server stops.
    async fn wait(&mut self) -> bool {
        loop {
            let received = tokio::select! {
                r = self.announcements.recv() => r,
                () = self.service.shutdown.cancelled() => return false,
            };
            match received {
                Ok(a) if a.tenant == self.tenant && a.group == self.group => return true,
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => return true,
                Err(RecvError::Closed) => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;
    use futures_util::StreamExt;
    use std::time::Duration;

    /// A follower that returns its script's batches, then waits for ever (an idle
    /// group) or, with `end`, ends (a deleted group).
    struct Script {
        batches: Vec<Vec<EventRecord>>,
        end: bool,
    }

    impl Follow for Script {
        async fn next_events(&mut self) -> Result<Option<Vec<EventRecord>>> {
            if !self.batches.is_empty() {
                return Ok(Some(self.batches.remove(0)));
            }
            if self.end {
                return Ok(None);
            }
            std::future::pending().await
        }
        fn group(&self) -> &str {
            "web"
        }
    }

    fn event(id: i64) -> EventRecord {
        EventRecord {
            id,
            event: swell_store::NewEvent {
                tenant: TenantId::new("t").expect("a name"),
                group: "web".into(),
                at: swell_core::Timestamp::from_millis(id * 1000),
                kind: EventKind::DesiredCapacitySet,
                instance_id: None,
                cause: None,
                message: format!("event {id}"),
            },
        }
    }

    /// The whole body of a stream (it must end), and how many keep-alive comments and
    /// events it holds.
    async fn read(
        script: Script,
        max: Option<u32>,
        timeout: u64,
        keep_alive: u64,
    ) -> (String, usize, usize) {
        let body = sse(
            script,
            max,
            Duration::from_millis(timeout),
            Duration::from_millis(keep_alive),
        )
        .into_response()
        .into_body();
        let mut text = String::new();
        let mut chunks = body.into_data_stream();
        // A bound far above the timeout, so that a stream that never ends fails the test.
        let all = async {
            while let Some(chunk) = chunks.next().await {
                text.push_str(&String::from_utf8_lossy(&chunk.expect("a chunk")));
            }
        };
        tokio::time::timeout(Duration::from_secs(30), all)
            .await
            .expect("the stream ends");
        let comments = text.split("\n\n").filter(|m| m.trim() == ":").count();
        let events = text.matches("\nid: ").count() + usize::from(text.starts_with("id: "));
        (text, comments, events)
    }

    #[tokio::test]
    async fn an_idle_stream_sends_keep_alives_then_ends_at_its_timeout() {
        // Every 10 ms for 300 ms: the stream ends by itself (the timeout), having sent
        // comments only; on a loaded machine fewer than 30, but several.
        let idle = Script {
            batches: vec![],
            end: false,
        };
        let (text, comments, events) = read(idle, None, 300, 10).await;
        assert_eq!(events, 0, "{text}");
        assert!(comments >= 3, "{comments} keep-alives: {text:?}");
        // A keep-alive longer than the stream: none, and the timeout still ends it.
        let idle = Script {
            batches: vec![],
            end: false,
        };
        let (text, comments, _) = read(idle, None, 50, 60_000).await;
        assert_eq!(comments, 0, "{text:?}");
    }

    #[tokio::test]
    async fn events_are_sent_in_order_and_the_stream_ends_at_max_events_or_the_follower_end() {
        let script = || Script {
            batches: vec![vec![event(1), event(2)], vec![event(5)]],
            end: true,
        };
        // The follower's end ends the stream long before its timeout.
        let (text, comments, events) = read(script(), None, 600_000, 600_000).await;
        assert_eq!((comments, events), (0, 3), "{text:?}");
        let ids: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("id: "))
            .collect();
        assert_eq!(ids, ["1", "2", "5"]);
        // `max_events`: two of them, then the end.
        let (text, _, events) = read(script(), Some(2), 600_000, 600_000).await;
        assert_eq!(events, 2, "{text:?}");
        // Idle after its events, it ends at its timeout.
        let script = Script {
            batches: vec![vec![event(1)]],
            end: false,
        };
        let (text, _, events) = read(script, None, 100, 600_000).await;
        assert_eq!(events, 1, "{text:?}");
    }

    #[test]
    fn the_cap_is_per_tenant_and_a_dropped_stream_frees_its_place() {
        let counts = StreamCounts::new(2);
        let a = TenantId::new("a").expect("a name");
        let b = TenantId::new("b").expect("a name");
        let first = counts.acquire(&a).expect("one");
        let _second = counts.acquire(&a).expect("two");
        assert!(matches!(counts.acquire(&a), Err(ServiceError::Busy(_))));
        let _other = counts
            .acquire(&b)
            .expect("another tenant has its own places");
        drop(first);
        let _again = counts.acquire(&a).expect("a place was freed");
        assert!(matches!(counts.acquire(&a), Err(ServiceError::Busy(_))));
    }
}

/// The longest `timeout` a stream may ask for, in seconds.
pub const MAX_STREAM_TIMEOUT_SECS: u64 = 3600;

/// A stream's `timeout` when the query gives none, in seconds.
pub const DEFAULT_STREAM_TIMEOUT_SECS: u64 = 300;

/// How often an idle stream sends a comment, so that proxies and clients see it alive.
pub const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// Query of the event stream.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventStreamQuery {
    /// Start after this event id (the header `Last-Event-ID`, which a reconnecting
    /// client sends, wins over it); without either, only events recorded from now on.
    pub(crate) after_id: Option<i64>,
    /// End the stream after this many seconds (default 300, 1 to 3600); reconnect with
    /// `Last-Event-ID` to go on.
    pub(crate) timeout: Option<u64>,
    /// End the stream after this many events (0: check access and end at once).
    pub(crate) max_events: Option<u32>,
}

impl EventStreamQuery {
    /// The stream's duration; out of range is an error naming `timeout`.
    fn timeout(&self) -> Result<std::time::Duration> {
        let secs = self.timeout.unwrap_or(DEFAULT_STREAM_TIMEOUT_SECS);
        if !(1..=MAX_STREAM_TIMEOUT_SECS).contains(&secs) {
            return Err(ServiceError::Invalid(swell_core::ValidationError::new(
                "timeout",
                format!("must be from 1 to {MAX_STREAM_TIMEOUT_SECS} seconds"),
            )));
        }
        Ok(std::time::Duration::from_secs(secs))
    }
}

/// The id in a `Last-Event-ID` header, if any; one that is no event id is an error naming
/// the header.
fn last_event_id(headers: &axum::http::HeaderMap) -> Result<Option<i64>> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|id| *id >= 0)
        .map(Some)
        .ok_or_else(|| {
            ServiceError::Invalid(swell_core::ValidationError::new(
                "Last-Event-ID",
                "must be an event id (an integer, 0 or more)",
            ))
        })
}

/// What a stream reads its events from: an [`EventFollower`], or a script in tests.
trait Follow: Send + 'static {
    /// As [`EventFollower::next_events`].
    fn next_events(
        &mut self,
    ) -> impl std::future::Future<Output = Result<Option<Vec<EventRecord>>>> + Send;
    /// The group followed, for logs.
    fn group(&self) -> &str;
}

impl Follow for EventFollower {
    fn next_events(
        &mut self,
    ) -> impl std::future::Future<Output = Result<Option<Vec<EventRecord>>>> + Send {
        EventFollower::next_events(self)
    }
    fn group(&self) -> &str {
        &self.group
    }
}

/// Where a stream is: what it has read and not yet sent, and its end conditions.
struct StreamState<F> {
    follower: F,
    pending: std::collections::VecDeque<EventRecord>,
    /// Events it may still send (`max_events`), if bounded.
    left: Option<u32>,
    deadline: tokio::time::Instant,
}

/// The next SSE message of a stream, or `None` when it ends.
async fn next_message<F: Follow>(
    mut st: StreamState<F>,
) -> Option<(
    std::result::Result<axum::response::sse::Event, std::convert::Infallible>,
    StreamState<F>,
)> {
    loop {
        if st.left == Some(0) {
            return None;
        }
        if let Some(e) = st.pending.pop_front() {
            if let Some(n) = &mut st.left {
                *n -= 1;
            }
            let data = match serde_json::to_string(&crate::http::event_view(&e)) {
                Ok(data) => data,
                Err(err) => {
                    tracing::error!(id = e.id, "cannot encode an event: {err}");
                    return None;
                }
            };
            let message = axum::response::sse::Event::default()
                .id(e.id.to_string())
                .data(data);
            return Some((Ok(message), st));
        }
        match tokio::time::timeout_at(st.deadline, st.follower.next_events()).await {
            Ok(Ok(Some(events))) => st.pending.extend(events),
            Ok(Ok(None)) | Err(_) => return None,
            Ok(Err(e)) => {
                tracing::warn!(group = %st.follower.group(), "event stream ends: {e}");
                return None;
            }
        }
    }
}

/// Streams a group's events as Server-Sent Events as they are recorded: each message's
/// `id` is the event id and its `data` the event as `GET /v1/groups/{name}/events` shows
/// it. A client that reconnects with `Last-Event-ID` (browsers' `EventSource` does) gets
/// exactly the events it missed. The stream ends after the group's `group_deleted`
/// event, at `timeout`, after `max_events`, or when the server stops; an idle stream
/// sends a keep-alive comment every 15 s. A tenant has at most 32 streams open (429).
#[utoipa::path(get, path = "/v1/groups/{name}/events/stream",
    params(("name" = String, Path), EventStreamQuery,
        ("Last-Event-ID" = Option<i64>, Header, description = "Start after this event id (wins over `after_id`).")),
    responses((status = 200, description = "Server-Sent Events: `id: ID` and `data: EVENT_JSON` per event; `:` comments keep it alive",
        content((String = "text/event-stream"))),
        (status = 400, body = api::Problem), (status = 404, body = api::Problem),
        (status = 429, body = api::Problem)))]
pub(crate) async fn stream_events(
    axum::extract::State(s): axum::extract::State<Arc<Service>>,
    p: crate::auth::Principal,
    axum::extract::Path(name): axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
    crate::http::ApiQuery(q): crate::http::ApiQuery<EventStreamQuery>,
) -> std::result::Result<axum::response::Response, ServiceError> {
    use axum::response::IntoResponse;
    let timeout = q.timeout()?;
    let after_id = last_event_id(&headers)?.or(q.after_id);
    let follower = s.follow_events(&p.tenant, &name, after_id).await?;
    Ok(sse(follower, q.max_events, timeout, KEEP_ALIVE).into_response())
}

/// The SSE answer of a stream reading `follower`: it ends after `max_events` events, at
/// `timeout`, or when the follower ends; a comment every `keep_alive` while idle.
fn sse<F: Follow>(
    follower: F,
    max_events: Option<u32>,
    timeout: std::time::Duration,
    keep_alive: std::time::Duration,
) -> impl axum::response::IntoResponse {
    let state = StreamState {
        follower,
        pending: std::collections::VecDeque::new(),
        left: max_events,
        deadline: tokio::time::Instant::now() + timeout,
    };
    let stream = futures_util::stream::unfold(state, next_message);
    axum::response::sse::Sse::new(stream)
        .keep_alive(axum::response::sse::KeepAlive::new().interval(keep_alive))
}
