//! Notifications (issue 20, item 4): webhooks out, Alertmanager alerts in.
//!
//! **Webhooks.** A tenant's webhook is sent its events (of one group or all, of chosen
//! kinds) as a signed JSON `POST`. Deliveries are driven from the store's event log:
//! per webhook and group a durable cursor names the last event handled, and the
//! [`Notifier`] sends the events after it in order, one at a time (an event is retried
//! before the next is sent, so a receiver sees them in the log's order). Every attempt
//! is recorded; the one that finishes an event moves the cursor in the same
//! transaction, so a restart resumes at the first unfinished event and none is lost
//! (at-least-once: a crash between the receiver's answer and the record sends it
//! again; `X-Swell-Delivery` names the event for deduplication). Failures (5xx, 408,
//! 429, timeout, connection refused) are retried after [`retry_delay`]: 1 s, doubling
//! up to 5 min, [`MAX_ATTEMPTS`] attempts in all; any other answer, or an address the
//! server refuses, abandons the event at once.
//!
//! **Request forgery.** The server makes the request, from its network position: a
//! tenant naming `http://169.254.169.254/` or `http://127.0.0.1:7700/` would reach what
//! only the server can. So the target's addresses are checked at every attempt (after
//! resolving the name, and the request is pinned to the checked address, so a name
//! that resolves elsewhere the second time gains nothing): loopback, private,
//! link-local, shared, unspecified, broadcast and multicast addresses are refused
//! unless the admin allowed them (`swell serve --webhook-allow-private`). Redirects are
//! not followed.
//!
//! **Alerts.** `POST /v1/groups/{name}/alerts` takes Alertmanager's webhook payload
//! (version 4) and does what the group's `alerts:` says ([`swell_core::AlertsSpec`]),
//! recording a `scale_out`/`scale_in` event whose cause is the alert. It is called with
//! the group's alert token ([`Service::create_alert_token`]), which nothing else
//! accepts and which is accepted nowhere else.

use crate::auth::{hash_token, new_secret};
use crate::clock::{Clock, rfc3339};
use crate::secrets::SecretKey;
use crate::service::{Result, Service, ServiceError};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use swell_api as api;
use swell_core::{EventKind, TenantId, Timestamp, ValidationError};
use swell_store::{
    DeliveryOutcome, DeliveryRecord, EventFilter, EventRecord, Store, StoreError, WebhookRecord,
};
use tokio_util::sync::CancellationToken;

/// The header carrying the body's signature: `sha256=` and the lowercase hex
/// HMAC-SHA256 of the exact body bytes under the webhook's secret.
pub const SIGNATURE_HEADER: &str = "x-swell-signature";
/// The header naming the event's kind (`scale_out`).
pub const EVENT_HEADER: &str = "x-swell-event";
/// The header naming the delivery: `EVENT_ID` (the same for every attempt at one event,
/// so that a receiver can drop a repeat).
pub const DELIVERY_HEADER: &str = "x-swell-delivery";
/// Attempts at one event before it is abandoned.
pub const MAX_ATTEMPTS: u32 = 8;
/// The wait after the first failed attempt; it doubles after each further one.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between two attempts.
pub const MAX_RETRY: Duration = Duration::from_secs(300);
/// How long one attempt may take (connect, send, answer).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the notifier looks for events and due retries.
pub const TICK: Duration = Duration::from_secs(1);
/// Events read per group and pass.
const BATCH: u32 = 100;
/// The most webhooks one tenant may have: each is work for the server.
pub const MAX_WEBHOOKS_PER_TENANT: usize = 20;
/// The delivery log's default and largest page.
pub const DEFAULT_DELIVERIES: u32 = 100;

/// HMAC-SHA256 (RFC 2104) of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// The `X-Swell-Signature` value of `body` under `secret`: `sha256=HEX`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mac = hmac_sha256(secret, body);
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// The wait before the next attempt after `failures` failed ones (1 s, 2 s, 4 s, …,
/// at most [`MAX_RETRY`]).
pub fn retry_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_RETRY.saturating_mul(1 << doublings).min(MAX_RETRY)
}

/// What to do about an event, given its attempts so far (oldest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Make attempt number `n`.
    Attempt(u32),
    /// Nothing before this time (the backoff after a failure).
    WaitUntil(Timestamp),
    /// Finished (delivered or abandoned).
    Done,
}

/// The next step for an event: pure, so that the backoff is a table test.
pub fn next_step(attempts: &[DeliveryRecord], now: Timestamp) -> NextStep {
    let Some(last) = attempts.last() else {
        return NextStep::Attempt(1);
    };
    if last.outcome != DeliveryOutcome::Failed || last.attempt >= MAX_ATTEMPTS {
        return NextStep::Done;
    }
    let due = last.at.add(retry_delay(last.attempt));
    if now < due {
        NextStep::WaitUntil(due)
    } else {
        NextStep::Attempt(last.attempt + 1)
    }
}

/// How an answer (or its absence) ends an attempt: `Failed` is tried again.
pub fn outcome_of(status: Option<u16>) -> DeliveryOutcome {
    match status {
        Some(200..=299) => DeliveryOutcome::Delivered,
        None | Some(408 | 429 | 500..=599) => DeliveryOutcome::Failed,
        Some(_) => DeliveryOutcome::Abandoned,
    }
}

/// Whether the server may send a webhook to `ip` without the admin's allowance: not
/// loopback, private, link-local, shared (100.64/10), unspecified, broadcast,
/// multicast, nor an IPv6 unique-local or IPv4-mapped form of those.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// A webhook URL's parts, checked: `http`/`https`, a host, no user information.
fn parse_url(url: &str) -> std::result::Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("`{url}` is not a URL ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("`{url}` must start with http:// or https://"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!("`{url}` must not hold a user name or password"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{url}` has no host"));
    }
    Ok(parsed)
}

/// The address to send to: the URL's host resolved, every address checked (see the
/// module documentation). `Err` says why the target is refused or unreachable.
async fn resolve(
    url: &reqwest::Url,
    allow_private: bool,
) -> std::result::Result<SocketAddr, String> {
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(80);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::time::timeout(ATTEMPT_TIMEOUT, tokio::net::lookup_host((bare, port)))
            .await
            .map_err(|_| format!("resolving `{host}` timed out"))?
            .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
            .collect(),
    };
    let first = *addrs
        .first()
        .ok_or_else(|| format!("`{host}` has no address"))?;
    if !allow_private && let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
        return Err(format!(
            "refused: `{host}` is {} (a loopback, private or link-local address); \
             the admin may allow them with `swell serve --webhook-allow-private`",
            bad.ip()
        ));
    }
    Ok(first)
}

/// The name a webhook's secret is sealed under (with its tenant): `webhook/ID`.
pub fn secret_name(id: &str) -> String {
    format!("webhook/{id}")
}

/// Sends webhooks from the event log (see the module documentation).
pub struct Notifier {
    store: Arc<dyn Store>,
    key: SecretKey,
    clock: Arc<dyn Clock>,
    allow_private: bool,
}

impl Notifier {
    /// A notifier over the store, opening secrets with `key`, reading time from
    /// `clock`; `allow_private`: the admin's `--webhook-allow-private`.
    pub fn new(
        store: Arc<dyn Store>,
        key: SecretKey,
        clock: Arc<dyn Clock>,
        allow_private: bool,
    ) -> Self {
        Notifier {
            store,
            key,
            clock,
            allow_private,
        }
    }

    /// Runs [`Notifier::run_once`] every [`TICK`] until `stop`.
    pub fn spawn(self: Arc<Self>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(TICK) => {}
                }
                if let Err(e) = self.run_once().await {
                    tracing::warn!("webhooks: {e}");
                }
            }
        })
    }

    /// One pass: for every webhook and group, the events after the cursor, in order,
    /// until one must wait (a failed attempt's backoff). Returns the attempts made.
    pub async fn run_once(&self) -> std::result::Result<u32, StoreError> {
        let mut attempts = 0;
        for hook in self.store.list_all_webhooks().await? {
            attempts += self.run_webhook(&hook).await?;
        }
        Ok(attempts)
    }

    async fn run_webhook(&self, hook: &WebhookRecord) -> std::result::Result<u32, StoreError> {
        let cursors: BTreeMap<String, i64> = self
            .store
            .webhook_cursors(&hook.id)
            .await?
            .into_iter()
            .collect();
        // The tenant's groups, and those gone since with a cursor (their last events).
        let mut groups: Vec<String> = match &hook.group {
            Some(g) => vec![g.clone()],
            None => self
                .store
                .list_groups(&hook.tenant)
                .await?
                .into_iter()
                .map(|g| g.spec.name)
                .collect(),
        };
        for g in cursors.keys() {
            if !groups.contains(g) && hook.group.as_ref().is_none_or(|h| h == g) {
                groups.push(g.clone());
            }
        }
        let mut attempts = 0;
        let mut secret = None;
        for group in groups {
            let mut after = cursors.get(&group).copied().unwrap_or(hook.start_event_id);
            'group: loop {
                let filter = EventFilter {
                    after_id: Some(after),
                    limit: Some(BATCH),
                    ..EventFilter::default()
                };
                let events = self
                    .store
                    .list_events(&hook.tenant, &group, &filter)
                    .await?;
                let full = events.len() == BATCH as usize;
                let mut skipped = None;
                for event in &events {
                    let wanted = hook.event_kinds.is_empty()
                        || hook
                            .event_kinds
                            .iter()
                            .any(|k| k == event.event.kind.as_str());
                    if !wanted {
                        skipped = Some(event.id);
                        continue;
                    }
                    if let Some(id) = skipped.take() {
                        self.store
                            .advance_webhook_cursor(&hook.id, &group, id)
                            .await?;
                    }
                    let tried = self.store.event_deliveries(&hook.id, event.id).await?;
                    match next_step(&tried, self.clock.now()) {
                        NextStep::Done => {
                            self.store
                                .advance_webhook_cursor(&hook.id, &group, event.id)
                                .await?;
                        }
                        NextStep::WaitUntil(_) => break 'group,
                        NextStep::Attempt(n) => {
                            if secret.is_none() {
                                secret = Some(
                                    self.key
                                        .open(
                                            hook.tenant.as_str(),
                                            &secret_name(&hook.id),
                                            &hook.secret,
                                        )
                                        .map_err(|e| e.to_string()),
                                );
                            }
                            let record = self
                                .deliver(
                                    hook,
                                    secret
                                        .as_ref()
                                        .map(|s| s.as_deref().map_err(String::as_str)),
                                    event,
                                    n,
                                )
                                .await;
                            attempts += 1;
                            let outcome = record.outcome;
                            self.store.record_delivery(&record).await?;
                            if outcome == DeliveryOutcome::Failed {
                                break 'group;
                            }
                        }
                    }
                    after = event.id;
                }
                if let Some(id) = skipped {
                    self.store
                        .advance_webhook_cursor(&hook.id, &group, id)
                        .await?;
                    after = id;
                }
                if !full {
                    break;
                }
            }
        }
        Ok(attempts)
    }

    /// Makes attempt `attempt` at `event`, returning its record (not yet stored).
    async fn deliver(
        &self,
        hook: &WebhookRecord,
        secret: Option<std::result::Result<&[u8], &str>>,
        event: &EventRecord,
        attempt: u32,
    ) -> DeliveryRecord {
        let mut record = DeliveryRecord {
            id: 0,
            webhook: hook.id.clone(),
            tenant: hook.tenant.clone(),
            group: event.event.group.clone(),
            event_id: event.id,
            attempt,
            at: self.clock.now(),
            outcome: DeliveryOutcome::Abandoned,
            status_code: None,
            error: None,
        };
        let secret = match secret {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                record.error = Some(format!("cannot open the webhook's secret: {e}"));
                return record;
            }
            None => {
                record.error = Some("no secret".into());
                return record;
            }
        };
        let url = match parse_url(&hook.url) {
            Ok(u) => u,
            Err(e) => {
                record.error = Some(e);
                return record;
            }
        };
        let addr = match resolve(&url, self.allow_private).await {
            Ok(a) => a,
            Err(e) => {
                // A refused address stays refused; a name that does not resolve may later.
                record.outcome = if e.starts_with("refused") {
                    DeliveryOutcome::Abandoned
                } else {
                    self.failed(attempt)
                };
                record.error = Some(e);
                return record;
            }
        };
        let payload = api::WebhookPayload {
            webhook: hook.id.clone(),
            tenant: hook.tenant.to_string(),
            event: crate::http::event_view(event),
        };
        let body = serde_json::to_vec(&payload).unwrap_or_default();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(ATTEMPT_TIMEOUT)
            .resolve(url.host_str().unwrap_or_default(), addr)
            .build();
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                record.outcome = self.failed(attempt);
                record.error = Some(format!("HTTP client: {e}"));
                return record;
            }
        };
        let sent = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(
                reqwest::header::USER_AGENT,
                concat!("swell/", env!("CARGO_PKG_VERSION")),
            )
            .header(SIGNATURE_HEADER, signature(secret, &body))
            .header(EVENT_HEADER, event.event.kind.as_str())
            .header(DELIVERY_HEADER, event.id.to_string())
            .body(body)
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                record.status_code = Some(status);
                record.outcome = match outcome_of(Some(status)) {
                    DeliveryOutcome::Failed => self.failed(attempt),
                    other => other,
                };
                if record.outcome != DeliveryOutcome::Delivered {
                    record.error = Some(format!("the receiver answered {status}"));
                }
            }
            Err(e) => {
                record.outcome = self.failed(attempt);
                record.error = Some(if e.is_timeout() {
                    format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs())
                } else if e.is_connect() {
                    format!("cannot connect to {addr}: {}", root_cause(&e))
                } else {
                    root_cause(&e)
                });
            }
        }
        record
    }

    /// A failure: tried again, unless it was the last attempt.
    fn failed(&self, attempt: u32) -> DeliveryOutcome {
        if attempt >= MAX_ATTEMPTS {
            DeliveryOutcome::Abandoned
        } else {
            DeliveryOutcome::Failed
        }
    }
}

/// The innermost error's text (reqwest's own is "error sending request").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    inner.to_string()
}

/// The API view of a webhook (never its secret).
pub fn webhook_view(w: &WebhookRecord) -> api::Webhook {
    api::Webhook {
        id: w.id.clone(),
        group: w.group.clone(),
        url: w.url.clone(),
        events: w.event_kinds.clone(),
        secret: "set".into(),
        created_at: rfc3339(w.created_at),
    }
}

/// The API view of a delivery attempt.
pub fn delivery_view(d: &DeliveryRecord) -> api::WebhookDelivery {
    api::WebhookDelivery {
        event_id: d.event_id,
        group: d.group.clone(),
        attempt: d.attempt,
        at: rfc3339(d.at),
        outcome: d.outcome.as_str().into(),
        status_code: d.status_code,
        error: d.error.clone(),
    }
}

/// The name the middleware gives an alert token's caller (`Principal::key`): a
/// colon never appears in an API key's name, so no key can pass for it.
pub fn alert_principal_key(group: &str) -> String {
    format!("alert-token:{group}")
}

impl Service {
    /// Makes a webhook for the tenant (see [`api::CreateWebhook`]); its secret is sealed.
    pub async fn create_webhook(
        &self,
        tenant: &TenantId,
        req: api::CreateWebhook,
    ) -> Result<WebhookRecord> {
        let url = parse_url(&req.url).map_err(|rule| ValidationError::new("url", rule))?;
        let host = url.host_str().unwrap_or_default();
        let literal = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>();
        let local = matches!(literal, Ok(ip) if !is_public(ip)) || host == "localhost";
        if local && !self.webhook_allow_private {
            return Err(ValidationError::new(
                "url",
                format!(
                    "`{host}` is a loopback, private or link-local address: refused unless the \
                     admin allows them (swell serve --webhook-allow-private)"
                ),
            )
            .into());
        }
        let len = req.secret.chars().count();
        if !(16..=256).contains(&len) {
            return Err(ValidationError::new("secret", "must be 16 to 256 characters").into());
        }
        for (i, kind) in req.events.iter().enumerate() {
            if EventKind::parse(kind).is_none() {
                return Err(ValidationError::new(
                    format!("events[{i}]"),
                    format!("`{kind}` is not an event kind (see docs/api.md, \"Events\")"),
                )
                .into());
            }
        }
        if let Some(group) = &req.group {
            self.get_group(tenant, group).await?;
        }
        if self.store.list_webhooks(tenant).await?.len() >= MAX_WEBHOOKS_PER_TENANT {
            return Err(ServiceError::State(format!(
                "a tenant may have at most {MAX_WEBHOOKS_PER_TENANT} webhooks; delete one first"
            )));
        }
        let id = format!("wh-{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
        let secret =
            self.secret_key()?
                .seal(tenant.as_str(), &secret_name(&id), req.secret.as_bytes())?;
        let record = WebhookRecord {
            id,
            tenant: tenant.clone(),
            group: req.group,
            url: req.url,
            event_kinds: req.events,
            secret,
            start_event_id: self.store.last_event_id().await?,
            created_at: self.clock.now(),
        };
        Ok(self.store.create_webhook(&record).await?)
    }

    /// The tenant's webhooks.
    pub async fn list_webhooks(&self, tenant: &TenantId) -> Result<Vec<WebhookRecord>> {
        Ok(self.store.list_webhooks(tenant).await?)
    }

    /// The tenant's webhook; another tenant's is not found.
    pub async fn get_webhook(&self, tenant: &TenantId, id: &str) -> Result<WebhookRecord> {
        self.store
            .get_webhook(tenant, id)
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                kind: "webhook",
                name: id.to_string(),
            })
    }

    /// Deletes the tenant's webhook with its delivery log.
    pub async fn delete_webhook(&self, tenant: &TenantId, id: &str) -> Result<()> {
        Ok(self.store.delete_webhook(tenant, id).await?)
    }

    /// The webhook's newest `limit` attempts (default [`DEFAULT_DELIVERIES`]).
    pub async fn list_deliveries(
        &self,
        tenant: &TenantId,
        id: &str,
        limit: Option<u32>,
    ) -> Result<Vec<DeliveryRecord>> {
        let limit = crate::service::check_limit(limit)?.unwrap_or(DEFAULT_DELIVERIES);
        Ok(self.store.list_deliveries(tenant, id, limit).await?)
    }

    /// A new alert token for the group (shown once; the previous one stops working).
    pub async fn create_alert_token(&self, tenant: &TenantId, group: &str) -> Result<String> {
        self.get_group(tenant, group).await?;
        let token = new_secret("swa_");
        self.store
            .set_alert_token(tenant, group, &hash_token(&token), self.clock.now())
            .await?;
        Ok(token)
    }

    /// The tenant and group an alert token is for, if it is one of a live group: a
    /// token made before its group (of a deleted group of the same name) opens nothing.
    pub async fn alert_token_scope(&self, token: &str) -> Result<Option<(TenantId, String)>> {
        let Some((tenant, group, made)) = self.store.alert_token(&hash_token(token)).await? else {
            return Ok(None);
        };
        Ok(self
            .store
            .get_group(&tenant, &group)
            .await?
            .filter(|g| g.created_at <= made && !g.deleting)
            .map(|_| (tenant, group)))
    }

    /// Does what the group's `alerts:` says about an Alertmanager notification.
    pub async fn receive_alerts(
        &self,
        tenant: &TenantId,
        group: &str,
        payload: &api::AlertmanagerPayload,
    ) -> Result<api::AlertResult> {
        if payload.version != "4" {
            return Err(ValidationError::new(
                "version",
                format!(
                    "`{}` is not supported: Alertmanager's webhook payload version 4",
                    payload.version
                ),
            )
            .into());
        }
        for (i, a) in payload.alerts.iter().enumerate() {
            if !matches!(a.status.as_str(), "firing" | "resolved") {
                return Err(ValidationError::new(
                    format!("alerts[{i}].status"),
                    format!("`{}` must be firing or resolved", a.status),
                )
                .into());
            }
        }
        let record = self.get_group(tenant, group).await?;
        let Some(alerts) = record.spec.alerts else {
            return Err(ServiceError::State(format!(
                "group `{group}` has no `alerts:` section: it takes no alerts"
            )));
        };
        let firing: Vec<&api::Alert> = payload
            .alerts
            .iter()
            .filter(|a| a.status == "firing")
            .collect();
        let (action, which) = if !firing.is_empty() {
            (Some(alerts.firing), firing)
        } else {
            (alerts.resolved, payload.alerts.iter().collect())
        };
        let before = record.desired_capacity;
        let Some(action) = action else {
            return Ok(api::AlertResult {
                action: "ignored".into(),
                before,
                after: before,
            });
        };
        let cap = record.spec.capacity()?;
        let after = action.desired_after(before, cap.min(), cap.max());
        if after == before {
            return Ok(api::AlertResult {
                action: "unchanged".into(),
                before,
                after,
            });
        }
        // What reaches the store is bounded and printable, whatever the labels hold.
        let clean = |s: &str| {
            s.chars()
                .filter(|c| !c.is_control())
                .take(100)
                .collect::<String>()
        };
        let mut names: Vec<String> = which
            .iter()
            .take(10)
            .map(|a| {
                let name = clean(a.labels.get("alertname").map_or("unnamed", String::as_str));
                if a.fingerprint.is_empty() {
                    name
                } else {
                    format!("{name} ({})", clean(&a.fingerprint))
                }
            })
            .collect();
        if which.len() > 10 {
            names.push(format!("and {} more", which.len() - 10));
        }
        let status = if payload.alerts.iter().any(|a| a.status == "firing") {
            "firing"
        } else {
            "resolved"
        };
        let reason = format!("Alertmanager: {status} {}", names.join(", "));
        let kind = if after > before {
            EventKind::ScaleOut
        } else {
            EventKind::ScaleIn
        };
        let mut event = self.event(
            tenant,
            group,
            kind,
            format!("desired capacity {before} → {after}: {reason}"),
        );
        event.cause = Some(swell_core::Cause {
            policy: "alert".into(),
            metric: which
                .first()
                .and_then(|a| a.labels.get("alertname"))
                .map(|n| clean(n.as_str())),
            before,
            after,
            reason,
            ..Default::default()
        });
        self.store
            .set_desired_capacity(tenant, group, after, Some(self.clock.now()), event)
            .await?;
        self.controller().notify(tenant, group, None);
        Ok(api::AlertResult {
            action: "scaled".into(),
            before,
            after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231's test cases 1, 2 and 6 (a key longer than the block).
    #[test]
    fn hmac_matches_rfc_4231() {
        let hex = |b: [u8; 32]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(
            hex(hmac_sha256(&[0x0b; 20], b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            hex(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
        assert!(signature(b"k", b"{}").starts_with("sha256="));
    }

    fn attempt(n: u32, outcome: DeliveryOutcome, at_s: i64) -> DeliveryRecord {
        DeliveryRecord {
            id: i64::from(n),
            webhook: "wh".into(),
            tenant: TenantId::new("t").unwrap(),
            group: "g".into(),
            event_id: 7,
            attempt: n,
            at: Timestamp::from_millis(at_s * 1000),
            outcome,
            status_code: None,
            error: None,
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let check = |failures: u32, secs: u64| {
            assert_eq!(
                retry_delay(failures),
                Duration::from_secs(secs),
                "after {failures}"
            );
        };
        check(1, 1);
        check(2, 2);
        check(3, 4);
        check(8, 128);
        check(9, 256);
        check(10, 300);
        check(u32::MAX, 300);
    }

    #[test]
    fn next_step_table() {
        use DeliveryOutcome::*;
        let at = |s: i64| Timestamp::from_millis(s * 1000);
        let check = |attempts: &[DeliveryRecord], now_s: i64, expected: NextStep| {
            assert_eq!(
                next_step(attempts, at(now_s)),
                expected,
                "{attempts:?} at {now_s}"
            );
        };
        check(&[], 0, NextStep::Attempt(1));
        check(&[attempt(1, Failed, 10)], 10, NextStep::WaitUntil(at(11)));
        check(&[attempt(1, Failed, 10)], 11, NextStep::Attempt(2));
        let two = [attempt(1, Failed, 10), attempt(2, Failed, 11)];
        check(&two, 12, NextStep::WaitUntil(at(13)));
        check(&two, 13, NextStep::Attempt(3));
        check(
            &[attempt(1, Failed, 10), attempt(2, Delivered, 11)],
            99,
            NextStep::Done,
        );
        check(&[attempt(1, Abandoned, 10)], 99, NextStep::Done);
        check(&[attempt(MAX_ATTEMPTS, Failed, 10)], 10_000, NextStep::Done);
    }

    #[test]
    fn outcomes_by_status() {
        use DeliveryOutcome::*;
        for (status, expected) in [
            (Some(200), Delivered),
            (Some(204), Delivered),
            (Some(500), Failed),
            (Some(503), Failed),
            (Some(429), Failed),
            (Some(408), Failed),
            (None, Failed),
            (Some(301), Abandoned),
            (Some(400), Abandoned),
            (Some(404), Abandoned),
        ] {
            assert_eq!(outcome_of(status), expected, "{status:?}");
        }
    }

    #[test]
    fn private_addresses_are_not_public() {
        for (ip, public) in [
            ("127.0.0.1", false),
            ("10.1.2.3", false),
            ("172.16.0.1", false),
            ("192.168.1.1", false),
            ("169.254.169.254", false),
            ("100.64.0.1", false),
            ("0.0.0.0", false),
            ("255.255.255.255", false),
            ("224.0.0.1", false),
            ("::1", false),
            ("::", false),
            ("fd00::1", false),
            ("fe80::1", false),
            ("::ffff:127.0.0.1", false),
            ("::ffff:10.0.0.1", false),
            ("8.8.8.8", true),
            ("100.128.0.1", true),
            ("2001:4860:4860::8888", true),
        ] {
            assert_eq!(is_public(ip.parse().unwrap()), public, "{ip}");
        }
    }

    #[test]
    fn urls_are_checked() {
        for (url, ok) in [
            ("https://hooks.example.com/swell", true),
            ("http://10.0.0.1:8080/x", true),
            ("ftp://example.com/", false),
            ("https://user:pw@example.com/", false),
            ("not a url", false),
        ] {
            assert_eq!(parse_url(url).is_ok(), ok, "{url}");
        }
    }
}
