//! The HTTP client every OpenStack call goes through: a cached Keystone token renewed
//! before it expires, endpoints from the catalog, retries with exponential backoff on
//! 5xx, timeouts and connection errors, a few retries on 409, one re-authentication on
//! 401, and errors that say which call failed and what the cloud answered.

use super::auth::{self, Catalog, TokenBody};
use super::config::{AuthConfig, OpenStackConfig, OpenStackConfigError};
use crate::ProviderError;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The wall clock, injectable so that token renewal is tested without waiting.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Retry and polling parameters (tests shrink the delays to nothing).
#[derive(Debug, Clone)]
pub(crate) struct Tuning {
    /// Tries per call on 5xx, timeouts and connection errors (the first included).
    pub(crate) attempts: u32,
    /// Tries per call on 409 (the first included).
    pub(crate) conflict_attempts: u32,
    /// The first retry's delay; doubled on each further one.
    pub(crate) backoff: Duration,
    /// The longest delay between retries.
    pub(crate) max_backoff: Duration,
    /// Between two polls of a server or load balancer status.
    pub(crate) poll_interval: Duration,
    /// A token is renewed once it expires within this margin.
    pub(crate) renew_margin: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            attempts: 4,
            conflict_attempts: 4,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
            poll_interval: Duration::from_secs(1),
            renew_margin: Duration::from_secs(120),
        }
    }
}

/// The OpenStack services the provider calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    Compute,
    Network,
    Image,
    LoadBalancer,
}

impl Service {
    /// The catalog's service type.
    pub(crate) fn kind(self) -> &'static str {
        match self {
            Service::Compute => "compute",
            Service::Network => "network",
            Service::Image => "image",
            Service::LoadBalancer => "load-balancer",
        }
    }

    /// The project's name, for messages.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Service::Compute => "nova",
            Service::Network => "neutron",
            Service::Image => "glance",
            Service::LoadBalancer => "octavia",
        }
    }

    /// The API root below the catalog URL (`/v2.0` for Neutron, `/v2` for Glance and
    /// Octavia; Nova's catalog URL already names its version).
    fn version_suffix(self) -> &'static str {
        match self {
            Service::Compute => "",
            Service::Network => "/v2.0",
            Service::Image | Service::LoadBalancer => "/v2",
        }
    }
}

/// A failed call: which call, and what happened.
#[derive(Debug, Clone)]
pub(crate) struct CallError {
    /// `nova POST /servers`.
    pub(crate) call: String,
    /// What went wrong.
    pub(crate) kind: CallErrorKind,
    /// The cloud's own message, or the transport error.
    pub(crate) message: String,
    /// How many times the call was tried.
    pub(crate) tries: u32,
}

/// The kinds of failure the provider tells apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CallErrorKind {
    /// An HTTP error status, with Neutron's error type if any (`OverQuota`).
    Status(u16, Option<String>),
    /// Timeout, connection refused or reset.
    Transport,
    /// The answer was not the JSON expected.
    Decode,
    /// Keystone refused the credentials.
    Auth,
    /// The catalog has no endpoint for the service.
    NoEndpoint,
}

impl CallError {
    pub(crate) fn new(
        call: &str,
        kind: CallErrorKind,
        message: impl Into<String>,
        tries: u32,
    ) -> Self {
        CallError {
            call: call.to_string(),
            kind,
            message: message.into(),
            tries,
        }
    }

    /// The HTTP status, if the cloud answered with one.
    pub(crate) fn status(&self) -> Option<u16> {
        match self.kind {
            CallErrorKind::Status(s, _) => Some(s),
            _ => None,
        }
    }

    /// A 404.
    pub(crate) fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// Whether the cloud said a quota is used up (Nova 403/413 "Quota exceeded",
    /// Neutron `OverQuota`).
    pub(crate) fn is_quota(&self) -> bool {
        match &self.kind {
            CallErrorKind::Status(_, Some(t)) if t == "OverQuota" => true,
            CallErrorKind::Status(403 | 413, _) => {
                let m = self.message.to_ascii_lowercase();
                m.contains("quota") || m.contains("limit exceeded")
            }
            _ => false,
        }
    }

    fn tried(&self) -> String {
        if self.tries > 1 {
            format!(" (after {} tries)", self.tries)
        } else {
            String::new()
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            CallErrorKind::Status(s, _) => {
                write!(
                    f,
                    "{} answered {s}: {}{}",
                    self.call,
                    self.message,
                    self.tried()
                )
            }
            CallErrorKind::Transport => {
                write!(f, "{} failed: {}{}", self.call, self.message, self.tried())
            }
            CallErrorKind::Decode => {
                write!(
                    f,
                    "{} gave an answer Swell cannot read: {}",
                    self.call, self.message
                )
            }
            CallErrorKind::Auth | CallErrorKind::NoEndpoint => {
                write!(f, "{}: {}", self.call, self.message)
            }
        }
    }
}

impl From<CallError> for ProviderError {
    fn from(e: CallError) -> Self {
        if e.is_quota() {
            return ProviderError::QuotaExceeded(format!(
                "{e}; raise the project's quota or lower the group's max"
            ));
        }
        match &e.kind {
            CallErrorKind::Status(409, _) => ProviderError::Conflict(format!(
                "{e}; the object was busy (another operation in progress), Swell tries again later"
            )),
            CallErrorKind::Status(s, _) if *s >= 500 => ProviderError::Unavailable(format!(
                "{e}; the cloud is failing or overloaded, Swell tries again later"
            )),
            CallErrorKind::Transport => ProviderError::Unavailable(format!(
                "{e}; check that the endpoint is reachable, Swell tries again later"
            )),
            CallErrorKind::Auth | CallErrorKind::Status(401, _) => {
                ProviderError::Backend(format!("{e}; check the provider's credentials"))
            }
            CallErrorKind::Status(403, _) => {
                ProviderError::Backend(format!("{e}; the credentials lack a role this call needs"))
            }
            _ => ProviderError::Backend(e.to_string()),
        }
    }
}

/// What the cloud's error body says: its message, and Neutron's error type. A JSON body
/// without a message (or with an empty one) is shown as it is, like a text body.
pub(crate) fn error_message(body: &str) -> (String, Option<String>) {
    let text = body.trim();
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        let non_empty = |m: Option<&Value>| {
            m.and_then(Value::as_str)
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(str::to_string)
        };
        if let Some(n) = v.get("NeutronError") {
            let ty = n.get("type").and_then(Value::as_str).map(str::to_string);
            let msg = non_empty(n.get("message")).unwrap_or_else(|| plain_message(text));
            return (msg, ty);
        }
        for key in ["faultstring", "description", "message", "title"] {
            if let Some(m) = non_empty(v.get(key)) {
                return (m, None);
            }
        }
        // Nova and Keystone: {"forbidden": {"code": 403, "message": "…"}}.
        if let Some(obj) = v.as_object() {
            for inner in obj.values() {
                if let Some(m) = non_empty(inner.get("message")) {
                    return (m, None);
                }
            }
        }
    }
    (plain_message(text), None)
}

/// A body as a one-line message: HTML or plain text (a proxy's 502 page, Glance's plain
/// errors) without its tags, at most 300 characters; `(no message)` when nothing is left.
fn plain_message(text: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    let mut msg = out.split_whitespace().collect::<Vec<_>>().join(" ");
    if msg.chars().count() > 300 {
        msg = msg.chars().take(300).collect::<String>() + "…";
    }
    if msg.is_empty() {
        msg = "(no message)".into();
    }
    msg
}

/// A Keystone session: the token, when it expires, and its catalog.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) token: String,
    /// When to get a new token: `renew_margin` before it expires, or halfway through
    /// its life for tokens shorter than twice the margin.
    pub(crate) renew_at: SystemTime,
    pub(crate) catalog: Catalog,
    pub(crate) project_id: String,
    pub(crate) is_admin: bool,
}

/// The session a successful `POST /v3/auth/tokens` answer (`text`, the token from its
/// `X-Subject-Token` header) opens at `now`: renewed `renew_margin` before it expires, or
/// halfway through a shorter life. An answer Swell cannot use is an error naming the
/// field (`token.catalog[0].endpoints: …`), or an `Auth` error when the token is not
/// scoped to a project.
pub(crate) fn session_from_answer(
    text: &str,
    token: String,
    now: SystemTime,
    renew_margin: Duration,
    auth: &AuthConfig,
) -> Result<Session, (CallErrorKind, String)> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| (CallErrorKind::Decode, e.to_string()))?;
    let body: TokenBody =
        super::nova::decode_value(value).map_err(|e| (CallErrorKind::Decode, e))?;
    let expires_at = auth::parse_expiry(&body.token.expires_at).ok_or_else(|| {
        (
            CallErrorKind::Decode,
            format!(
                "token.expires_at: `{}` is not an RFC 3339 time",
                body.token.expires_at
            ),
        )
    })?;
    let project = body.token.project.ok_or_else(|| {
        (
            CallErrorKind::Auth,
            format!(
                "the token of {} is not scoped to a project; give a project",
                auth::describe(auth)
            ),
        )
    })?;
    let life = expires_at.duration_since(now).unwrap_or_default();
    let renew_at = expires_at - renew_margin.min(life / 2);
    Ok(Session {
        token,
        renew_at,
        catalog: Catalog {
            services: body.token.catalog,
        },
        project_id: project.id,
        is_admin: body.token.roles.iter().any(|r| r.name == "admin"),
    })
}

/// Whether a call may be sent again after a 5xx or a transport error: safe for
/// reads, deletes and updates; not for a `POST` that creates something the provider
/// cannot find again (a server — the provider looks it up by metadata instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    Safe,
    Once,
}

/// The client.
pub(crate) struct Client {
    http: reqwest::Client,
    auth: AuthConfig,
    region: Option<String>,
    interface: String,
    microversion: String,
    clock: Clock,
    pub(crate) tuning: Tuning,
    session: tokio::sync::Mutex<Option<Arc<Session>>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("auth_url", &self.auth.auth_url())
            .field("region", &self.region)
            .field("interface", &self.interface)
            .finish_non_exhaustive()
    }
}

/// An answer: the status and the JSON body (`Null` when empty).
pub(crate) struct Answer {
    pub(crate) body: Value,
}

impl Client {
    pub(crate) fn new(
        config: &OpenStackConfig,
        clock: Clock,
        tuning: Tuning,
    ) -> Result<Self, OpenStackConfigError> {
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("swell/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| OpenStackConfigError::Client(e.to_string()))?;
        Ok(Client {
            http,
            auth: config.auth.clone(),
            region: config.region.clone(),
            interface: config.interface.clone(),
            microversion: config.compute_microversion.clone(),
            clock,
            tuning,
            session: tokio::sync::Mutex::new(None),
        })
    }

    fn backoff(&self, retry: u32) -> Duration {
        let factor = 1u32 << retry.min(16);
        self.tuning
            .backoff
            .saturating_mul(factor)
            .min(self.tuning.max_backoff)
    }

    /// The current session, authenticating first when there is none or its token
    /// expires within the renewal margin.
    pub(crate) async fn session(&self) -> Result<Arc<Session>, CallError> {
        let mut guard = self.session.lock().await;
        if let Some(s) = guard.as_ref() {
            let now = (self.clock)();
            if now < s.renew_at {
                return Ok(s.clone());
            }
            tracing::debug!("openstack: token expires soon, renewing");
        }
        let s = Arc::new(self.authenticate().await?);
        *guard = Some(s.clone());
        Ok(s)
    }

    /// Forgets the session if it still holds `token` (a 401 showed it revoked).
    async fn invalidate(&self, token: &str) {
        let mut guard = self.session.lock().await;
        if guard.as_ref().is_some_and(|s| s.token == token) {
            *guard = None;
        }
    }

    async fn authenticate(&self) -> Result<Session, CallError> {
        let url = format!("{}/auth/tokens", auth::identity_url(self.auth.auth_url()));
        let call = "keystone POST /v3/auth/tokens";
        let body = auth::token_request(&self.auth);
        let mut tries = 0;
        let resp = loop {
            tries += 1;
            match self.http.post(&url).json(&body).send().await {
                Ok(r) if r.status().is_server_error() && tries < self.tuning.attempts => {}
                Ok(r) => break r,
                Err(e) if tries < self.tuning.attempts => {
                    tracing::debug!("openstack: {call}: {e}; retrying");
                }
                Err(e) => {
                    return Err(CallError::new(
                        call,
                        CallErrorKind::Transport,
                        transport(&e),
                        tries,
                    ));
                }
            }
            tokio::time::sleep(self.backoff(tries - 1)).await;
        };
        let status = resp.status();
        let token = resp
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = resp
            .text()
            .await
            .map_err(|e| CallError::new(call, CallErrorKind::Transport, transport(&e), tries))?;
        if !status.is_success() {
            let (msg, ty) = error_message(&text);
            if status == StatusCode::UNAUTHORIZED {
                return Err(CallError::new(
                    call,
                    CallErrorKind::Auth,
                    format!(
                        "Keystone refused the credentials ({}): {msg}",
                        auth::describe(&self.auth)
                    ),
                    tries,
                ));
            }
            return Err(CallError::new(
                call,
                CallErrorKind::Status(status.as_u16(), ty),
                msg,
                tries,
            ));
        }
        let token = token.ok_or_else(|| {
            CallError::new(
                call,
                CallErrorKind::Decode,
                "no X-Subject-Token header",
                tries,
            )
        })?;
        session_from_answer(
            &text,
            token,
            (self.clock)(),
            self.tuning.renew_margin,
            &self.auth,
        )
        .map_err(|(kind, message)| CallError::new(call, kind, message, tries))
    }

    fn base_url_in(&self, s: &Session, service: Service) -> Result<String, CallError> {
        let url = s
            .catalog
            .endpoint(service.kind(), self.region.as_deref(), &self.interface)
            .ok_or_else(|| {
                CallError::new(
                    service.label(),
                    CallErrorKind::NoEndpoint,
                    format!(
                        "the catalog has no {} endpoint for interface {} in {} (it offers: {})",
                        service.kind(),
                        self.interface,
                        self.region.as_deref().unwrap_or("any region"),
                        s.catalog.offered(service.kind())
                    ),
                    0,
                )
            })?;
        let suffix = service.version_suffix();
        if suffix.is_empty() || url.ends_with(suffix) {
            Ok(url)
        } else {
            Ok(format!("{url}{suffix}"))
        }
    }

    /// Whether the catalog has `service`.
    pub(crate) async fn has_service(&self, service: Service) -> Result<bool, CallError> {
        let s = self.session().await?;
        Ok(s.catalog.has(service.kind()))
    }

    /// `GET`.
    pub(crate) async fn get(&self, service: Service, path: &str) -> Result<Value, CallError> {
        self.call(service, Method::GET, path, None, Retry::Safe)
            .await
            .map(|a| a.body)
    }

    /// `DELETE`; a 404 counts as done.
    pub(crate) async fn delete(&self, service: Service, path: &str) -> Result<(), CallError> {
        match self
            .call(service, Method::DELETE, path, None, Retry::Safe)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// One call, with the retries described in the module documentation.
    pub(crate) async fn call(
        &self,
        service: Service,
        method: Method,
        path: &str,
        body: Option<&Value>,
        retry: Retry,
    ) -> Result<Answer, CallError> {
        let call = format!(
            "{} {method} {}",
            service.label(),
            path.split('?').next().unwrap_or(path)
        );
        let mut tries = 0u32;
        let mut conflicts = 0u32;
        let mut reauthenticated = false;
        loop {
            tries += 1;
            let session = self.session().await?;
            let url = format!("{}{path}", self.base_url_in(&session, service)?);
            let mut req = self
                .http
                .request(method.clone(), &url)
                .header("X-Auth-Token", &session.token)
                .header("Accept", "application/json");
            if service == Service::Compute {
                req = req.header(
                    "OpenStack-API-Version",
                    format!("compute {}", self.microversion),
                );
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let may_retry = retry == Retry::Safe && tries < self.tuning.attempts;
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    if may_retry {
                        tracing::debug!("openstack: {call}: {e}; retrying");
                        tokio::time::sleep(self.backoff(tries - 1)).await;
                        continue;
                    }
                    return Err(CallError::new(
                        &call,
                        CallErrorKind::Transport,
                        transport(&e),
                        tries,
                    ));
                }
            };
            let status = resp.status();
            let text = match resp.text().await {
                Ok(t) => t,
                Err(e) => {
                    if may_retry {
                        tokio::time::sleep(self.backoff(tries - 1)).await;
                        continue;
                    }
                    return Err(CallError::new(
                        &call,
                        CallErrorKind::Transport,
                        transport(&e),
                        tries,
                    ));
                }
            };
            if status.is_success() {
                let body = if text.trim().is_empty() {
                    Value::Null
                } else {
                    serde_json::from_str(&text).map_err(|e| {
                        CallError::new(&call, CallErrorKind::Decode, e.to_string(), tries)
                    })?
                };
                return Ok(Answer { body });
            }
            if status == StatusCode::UNAUTHORIZED && !reauthenticated {
                tracing::debug!("openstack: {call}: 401, authenticating again");
                reauthenticated = true;
                self.invalidate(&session.token).await;
                tries -= 1;
                continue;
            }
            let (msg, ty) = error_message(&text);
            let err = CallError::new(
                &call,
                CallErrorKind::Status(status.as_u16(), ty),
                msg,
                tries,
            );
            if status == StatusCode::CONFLICT && !err.is_quota() {
                conflicts += 1;
                if conflicts < self.tuning.conflict_attempts {
                    tracing::debug!("openstack: {err}; retrying");
                    tokio::time::sleep(self.backoff(conflicts)).await;
                    continue;
                }
                return Err(err);
            }
            if status.is_server_error() && may_retry {
                tracing::debug!("openstack: {err}; retrying");
                tokio::time::sleep(self.backoff(tries - 1)).await;
                continue;
            }
            return Err(err);
        }
    }
}

/// A transport error in words, with its cause (reqwest's own message is terse).
fn transport(e: &reqwest::Error) -> String {
    let mut msg = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "could not connect".to_string()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/tests/fixtures/openstack/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    fn err(status: u16, fixture_name: &str) -> CallError {
        let (message, ty) = error_message(&fixture(fixture_name));
        CallError::new(
            "nova POST /servers",
            CallErrorKind::Status(status, ty),
            message,
            1,
        )
    }

    /// Error bodies recorded from the fixture cloud map to the provider's errors.
    #[test]
    fn error_mapping_from_recorded_bodies() {
        let check = |e: CallError, expect: &str, variant: fn(&ProviderError) -> bool| {
            let p = ProviderError::from(e);
            assert!(variant(&p), "{p:?}");
            assert!(p.to_string().contains(expect), "{p}");
        };
        check(
            err(403, "server-create-quota-403.json"),
            "nova POST /servers answered 403: Quota exceeded for instances: Requested 1, but already used 1 of 1 instances; raise the project's quota",
            |p| matches!(p, ProviderError::QuotaExceeded(_)),
        );
        check(
            err(403, "server-create-cores-quota-403.json"),
            "Quota exceeded for cores",
            |p| matches!(p, ProviderError::QuotaExceeded(_)),
        );
        check(
            err(409, "floatingip-quota-409.json"),
            "Quota exceeded for resources: ['floatingip']",
            |p| matches!(p, ProviderError::QuotaExceeded(_)),
        );
        check(
            err(409, "server-unpause-409.json"),
            "Cannot 'unpause' instance",
            |p| matches!(p, ProviderError::Conflict(_)),
        );
        check(err(404, "server-404.json"), "could not be found", |p| {
            matches!(p, ProviderError::Backend(_))
        });
        check(
            err(401, "auth-401.json"),
            "The request you have made requires authentication.; check the provider's credentials",
            |p| matches!(p, ProviderError::Backend(_)),
        );
        let (msg, _) = error_message(
            "<html><body><h1>503 Service Unavailable</h1>\nNo server is available.</body></html>",
        );
        assert_eq!(msg, "503 Service Unavailable No server is available.");
        let e = CallError::new(
            "nova GET /servers/detail",
            CallErrorKind::Status(503, None),
            msg,
            4,
        );
        check(
            e,
            "nova GET /servers/detail answered 503: 503 Service Unavailable No server is available. (after 4 tries)",
            |p| matches!(p, ProviderError::Unavailable(_)),
        );
        let e = CallError::new("nova GET /limits", CallErrorKind::Transport, "timed out", 4);
        check(
            e,
            "nova GET /limits failed: timed out (after 4 tries)",
            |p| matches!(p, ProviderError::Unavailable(_)),
        );
        // A message that is empty or missing: the body, never an empty message.
        let (msg, ty) = error_message(r#"{"NeutronError": {"type": "OverQuota", "message": ""}}"#);
        assert_eq!(ty.as_deref(), Some("OverQuota"));
        assert_eq!(
            msg,
            r#"{"NeutronError": {"type": "OverQuota", "message": ""}}"#
        );
        assert_eq!(
            error_message(r#"{"message": " ", "title": "Conflict"}"#).0,
            "Conflict"
        );
        // Octavia's shape.
        assert_eq!(
            error_message(r#"{"faultcode": "Client", "faultstring": "Load Balancer 1 is immutable and cannot be updated.", "debuginfo": null}"#).0,
            "Load Balancer 1 is immutable and cannot be updated."
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let config =
            OpenStackConfig::new("o", AuthConfig::password("http://k:5000", "u", "p", "x"));
        let c = Client::new(&config, Arc::new(SystemTime::now), Tuning::default()).unwrap();
        let d: Vec<u64> = (0..6).map(|i| c.backoff(i).as_millis() as u64).collect();
        assert_eq!(d, [500, 1000, 2000, 4000, 8000, 8000]);
    }
}
