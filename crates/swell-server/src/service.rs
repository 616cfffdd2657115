//! The service layer: the one internal API that the HTTP handlers, the CLI's in-process
//! paths (the demo) and the tests share. It validates input whole before anything is
//! stored (DESIGN.md invariant 6) and scopes every call by tenant (invariant 3).

use crate::auth::{Auth, AuthError};
use crate::clock::Clock;
use crate::controller::{Controller, PushError, PushedReading, WORKER_QUEUE, bind_lb};
use crate::secrets::{SecretError, SecretKey};
use std::sync::Arc;
use swell_core::{
    EventKind, GroupName, GroupSpec, InstanceId, InstanceStatus, LoadSummary, Metric, TenantId,
    Timestamp, ValidationError,
};
use swell_lb::LoadBalancer;
use swell_store::{
    EventFilter, EventRecord, GroupRecord, InstanceRecord, InstanceUpdate, NewEvent, Store,
    StoreError,
};

/// What a service call can fail with; mapped to HTTP statuses in one place (`http.rs`).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The input broke a rule; nothing was changed.
    #[error("{0}")]
    Invalid(#[from] ValidationError),
    /// No such object in this tenant.
    #[error("{kind} `{name}` not found")]
    NotFound {
        /// `group` or `instance`.
        kind: &'static str,
        /// Its name or id.
        name: String,
    },
    /// The input refers to an object that does not exist in this tenant (422, naming
    /// the field): an unknown instance in a metric push.
    #[error("{0}")]
    Unknown(ValidationError),
    /// The object already exists.
    #[error("{kind} `{name}` already exists")]
    Conflict {
        /// `group`.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// The request cannot be applied in the object's current state.
    #[error("{0}")]
    State(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[source] StoreError),
    /// The provider failed.
    #[error("provider: {0}")]
    Provider(#[source] swell_providers::ProviderError),
    /// The caller is authenticated but may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// Authentication failed or was refused (401, or 429 when rate-limited).
    #[error("{0}")]
    Auth(#[from] AuthError),
    /// Sealing or opening a secret failed.
    #[error("secrets: {0}")]
    Secret(#[from] SecretError),
    /// The input names something its tenant was not granted, or goes past one of the
    /// tenant's limits (403, naming the field); nothing was changed.
    #[error("{0}")]
    NotGranted(ValidationError),
    /// The input names something another group already holds (409, naming the field:
    /// a listen address); the holder is never named. Nothing was changed.
    #[error("{0}")]
    Taken(ValidationError),
    /// The server cannot take this input now (429 with `Retry-After`): the group's
    /// worker queue is full. Nothing was queued.
    #[error("{0}")]
    Busy(String),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { kind, name } => ServiceError::NotFound { kind, name },
            StoreError::Conflict { kind, name } => ServiceError::Conflict { kind, name },
            other => ServiceError::Store(other),
        }
    }
}

/// Result of service calls.
pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// The shortest `evaluation_interval`, `metrics_interval` and load balancer
/// `health_check.interval` a group may have unless the server is configured otherwise
/// (`swell serve --min-interval`): each tick of a group costs the server work.
pub const DEFAULT_MIN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The largest `?limit=` a listing route accepts (events, audit); a larger one is a 400
/// naming `limit`. Page further with `after_id` (events).
pub const MAX_LIST_LIMIT: u32 = 10_000;

/// The internal API.
pub struct Service {
    pub(crate) store: Arc<dyn Store>,
    controller: Arc<Controller>,
    pub(crate) clock: Arc<dyn Clock>,
    auth: Auth,
    secret_key: Option<SecretKey>,
    /// The interval floor of group documents (see [`DEFAULT_MIN_INTERVAL`]).
    min_interval: std::time::Duration,
    /// Held from a group's listen check to its store write, so that two groups cannot
    /// both be given one free port.
    pub(crate) listen_lock: tokio::sync::Mutex<()>,
    metric_urls: crate::metric_urls::MetricUrlPolicy,
    /// Open event streams per tenant, and their cap (see [`crate::event_stream`]).
    pub(crate) event_streams: crate::event_stream::StreamCounts,
    /// Cancelled when the server stops: open event streams end then, so that the
    /// graceful shutdown does not wait for their timeout.
    pub(crate) shutdown: tokio_util::sync::CancellationToken,
    /// Webhooks may name loopback, private and link-local addresses (the admin's
    /// `--webhook-allow-private`; see [`crate::notify`]).
    pub(crate) webhook_allow_private: bool,
}

impl Service {
    /// A service over the store and the controller.
    pub fn new(store: Arc<dyn Store>, controller: Arc<Controller>, clock: Arc<dyn Clock>) -> Self {
        Service {
            auth: Auth::new(store.clone(), clock.clone()),
            store,
            controller,
            clock,
            secret_key: None,
            min_interval: DEFAULT_MIN_INTERVAL,
            listen_lock: tokio::sync::Mutex::new(()),
            metric_urls: crate::metric_urls::MetricUrlPolicy::default(),
            event_streams: crate::event_stream::StreamCounts::new(
                crate::event_stream::DEFAULT_MAX_EVENT_STREAMS,
            ),
            shutdown: tokio_util::sync::CancellationToken::new(),
            webhook_allow_private: false,
        }
    }

    /// The same service, letting webhooks name loopback, private and link-local
    /// addresses (`swell serve --webhook-allow-private`; default: refused).
    pub fn with_webhook_allow_private(mut self, allow: bool) -> Self {
        self.webhook_allow_private = allow;
        self
    }

    /// The same service, allowing `max` open event streams per tenant (default
    /// [`crate::event_stream::DEFAULT_MAX_EVENT_STREAMS`]); one more is refused (429).
    pub fn with_max_event_streams(mut self, max: usize) -> Self {
        self.event_streams = crate::event_stream::StreamCounts::new(max);
        self
    }

    /// The same service, ending its open event streams when `stop` is cancelled.
    pub fn with_shutdown(mut self, stop: tokio_util::sync::CancellationToken) -> Self {
        self.shutdown = stop;
        self
    }

    /// The same service with another interval floor (`swell serve --min-interval`;
    /// tests that need fast loops set it lower). [`GroupSpec::validate`]'s absolute
    /// 100 ms rule still applies.
    pub fn with_min_interval(mut self, floor: std::time::Duration) -> Self {
        self.min_interval = floor;
        self
    }

    /// The interval floor of group documents.
    pub fn min_interval(&self) -> std::time::Duration {
        self.min_interval
    }

    /// The same service, letting metric sources call only the URLs `policy` allows
    /// (`swell serve --allow-metric-url`; default: loopback hosts only).
    pub fn with_metric_url_policy(mut self, policy: crate::metric_urls::MetricUrlPolicy) -> Self {
        self.metric_urls = policy;
        self
    }

    /// Refuses (403, naming `metric_sources[i].url`) a group whose metric source would
    /// have the server call a URL the admin did not allow.
    fn check_metric_urls(&self, spec: &GroupSpec) -> Result<()> {
        self.metric_urls
            .check_group(spec)
            .map_err(ServiceError::NotGranted)
    }

    /// The same service, sealing provider credentials with `key`.
    pub fn with_secret_key(mut self, key: SecretKey) -> Self {
        self.secret_key = Some(key);
        self
    }

    /// The same service with its authentication configured by `options`.
    pub fn with_auth_options(mut self, options: crate::auth::AuthOptions) -> Self {
        self.auth = self.auth.with_options(options);
        self
    }

    /// Authentication (logins, tokens, API keys).
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// The store (for the audit log and tests).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The key sealing provider credentials; `Secret` error when none was configured.
    pub(crate) fn secret_key(&self) -> Result<&SecretKey> {
        self.secret_key
            .as_ref()
            .ok_or_else(|| ServiceError::State("no secret key is configured".into()))
    }

    /// The Prometheus page the caller may see ([`crate::exposition`]): an admin every
    /// tenant's series and the controller's own, anyone else their tenant's groups'.
    pub async fn metrics_page(&self, caller: &crate::auth::Principal) -> Result<String> {
        let scope = if caller.admin {
            crate::exposition::Scope::All
        } else {
            crate::exposition::Scope::Tenant(caller.tenant.clone())
        };
        self.scrape(&scope).await
    }

    /// The Prometheus page of `scope` (the scrape listener asks for
    /// [`crate::exposition::Scope::All`]).
    pub async fn scrape(&self, scope: &crate::exposition::Scope) -> Result<String> {
        crate::exposition::render(&self.controller, self.store.as_ref(), scope)
            .await
            .map_err(ServiceError::Store)
    }

    /// The address of the group's load balancer, if it has one running.
    pub fn load_balancer_addr(
        &self,
        tenant: &TenantId,
        group: &str,
    ) -> Option<std::net::SocketAddr> {
        self.controller.load_balancer_addr(tenant, group)
    }

    /// The tenant's group's running load balancer (`None` when it has none); an
    /// unknown group is `NotFound`.
    pub async fn load_balancer(
        &self,
        tenant: &TenantId,
        group: &str,
    ) -> Result<Option<LoadBalancer>> {
        self.get_group(tenant, group).await?;
        Ok(self.controller.load_balancer(tenant, group))
    }

    /// The latest resource reading of an instance, as its group's worker last collected it.
    pub fn latest_reading(&self, i: &InstanceRecord) -> Option<swell_providers::InstanceMetrics> {
        self.controller.latest_reading(&i.tenant, &i.group, &i.id)
    }

    /// The group workers' names (`group/TENANT/NAME`) and states the caller may see:
    /// its own tenant's, an admin every one, no one without a credential.
    pub fn worker_statuses(
        &self,
        caller: Option<&crate::auth::Principal>,
    ) -> Vec<(String, String)> {
        self.controller
            .worker_statuses()
            .into_iter()
            .filter(|(name, _)| match caller {
                None => false,
                Some(p) if p.admin => true,
                Some(p) => name.starts_with(&format!("group/{}/", p.tenant)),
            })
            .collect()
    }

    /// Appends one entry to the audit log.
    pub async fn append_audit(&self, entry: &swell_store::NewAudit) -> Result<()> {
        self.store
            .append_audit(entry)
            .await
            .map(|_| ())
            .map_err(ServiceError::Store)
    }

    /// The controller (for status and load balancer lookups).
    pub fn controller(&self) -> &Arc<Controller> {
        &self.controller
    }

    /// The current time of the injected clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub(crate) fn event(
        &self,
        tenant: &TenantId,
        group: &str,
        kind: EventKind,
        message: String,
    ) -> NewEvent {
        NewEvent {
            tenant: tenant.clone(),
            group: group.to_string(),
            at: self.clock.now(),
            kind,
            instance_id: None,
            cause: None,
            message,
        }
    }

    pub(crate) async fn bind_if_needed(
        &self,
        spec: &GroupSpec,
        current: Option<&GroupSpec>,
    ) -> Result<Option<LoadBalancer>> {
        let Some(lb) = &spec.load_balancer else {
            return Ok(None);
        };
        // Only a new address is bound here, so that a taken port is reported before
        // anything is stored; other changes on the same address the worker applies.
        if current
            .and_then(|c| c.load_balancer.as_ref())
            .map(|c| &c.listen)
            == Some(&lb.listen)
        {
            return Ok(None);
        }
        bind_lb(lb)
            .await
            .map(Some)
            .map_err(|rule| ValidationError::new("load_balancer.listen", rule).into())
    }

    fn check_provider(&self, tenant: &TenantId, spec: &GroupSpec) -> Result<()> {
        for (i, name) in spec.providers().enumerate() {
            if self.controller.provider(tenant, name).is_none() {
                let field = if i == 0 {
                    "provider".to_string()
                } else {
                    format!("fallback_providers[{}]", i - 1)
                };
                return Err(ValidationError::new(
                    field,
                    format!("provider `{name}` is not configured on this server"),
                )
                .into());
            }
        }
        Ok(())
    }

    /// A group document's own rules, each provider's template checked by the kind of
    /// the definition it names (`docker-rack1` is a docker provider). A name the tenant
    /// cannot see is left to the boundary, which refuses it as not granted.
    fn validate_spec(&self, tenant: &TenantId, spec: &GroupSpec) -> Result<()> {
        let registry = self.controller.registry();
        let kind_of = |name: &str| {
            registry
                .kind(tenant, name)
                .or_else(|| swell_core::ProviderKind::builtin(name))
        };
        Ok(spec.validate_with(&kind_of)?)
    }

    /// Every rule a new group must meet before it is stored: `create_group`'s checks,
    /// which `apply` runs too (so a rule added here holds for both). Returns the spec to
    /// store (a load balancer's `:0` port resolved inside the tenant's listen ranges);
    /// the caller holds `listen_lock` until it is stored.
    pub(crate) async fn check_new_group(
        &self,
        tenant: &TenantId,
        spec: GroupSpec,
    ) -> Result<GroupSpec> {
        self.validate_spec(tenant, &spec)?;
        self.check_floors(&spec)?;
        self.check_metric_urls(&spec)?;
        // Grants first: a tenant learns nothing of providers it was not granted.
        let spec = self.check_tenant_boundary(tenant, spec, None).await?;
        self.check_provider(tenant, &spec)?;
        Ok(spec)
    }

    /// Every rule a group's new spec must meet before it replaces the stored one:
    /// `update_group`'s checks, which `apply` runs too. The group as stored, and the spec
    /// to store; the caller holds `listen_lock` until it is stored.
    pub(crate) async fn check_group_update(
        &self,
        tenant: &TenantId,
        name: &str,
        spec: GroupSpec,
    ) -> Result<(GroupRecord, GroupSpec)> {
        self.validate_spec(tenant, &spec)?;
        if spec.name != name {
            return Err(ValidationError::new(
                "name",
                format!("the name cannot change (`{name}` → `{}`)", spec.name),
            )
            .into());
        }
        self.check_floors(&spec)?;
        self.check_metric_urls(&spec)?;
        let current = self.get_group(tenant, name).await?;
        if current.deleting {
            return Err(ServiceError::State(format!(
                "group `{name}` is being deleted"
            )));
        }
        if current.spec.provider != spec.provider {
            return Err(ValidationError::new(
                "provider",
                "the provider of a group cannot change; create a new group",
            )
            .into());
        }
        let spec = self
            .check_tenant_boundary(tenant, spec, Some(&current.spec))
            .await?;
        self.check_provider(tenant, &spec)?;
        Ok((current, spec))
    }

    /// Creates a group and starts its worker.
    pub async fn create_group(&self, tenant: &TenantId, spec: GroupSpec) -> Result<GroupRecord> {
        let _listen = self.listen_lock.lock().await;
        let spec = self.check_new_group(tenant, spec).await?;
        if self.store.get_group(tenant, &spec.name).await?.is_some() {
            return Err(ServiceError::Conflict {
                kind: "group",
                name: spec.name,
            });
        }
        let lb = self.bind_if_needed(&spec, None).await?;
        self.store.ensure_tenant(tenant, self.clock.now()).await?;
        let event = self.event(
            tenant,
            &spec.name,
            EventKind::GroupCreated,
            format!("group {} created ({}..{})", spec.name, spec.min, spec.max),
        );
        let record = match self
            .store
            .create_group(tenant, &spec, self.clock.now(), event)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                if let Some(lb) = lb {
                    lb.shutdown().await;
                }
                return Err(e.into());
            }
        };
        self.controller.spawn_worker(&record, lb).await;
        Ok(record)
    }

    /// Replaces a group's spec (its name cannot change).
    pub async fn update_group(
        &self,
        tenant: &TenantId,
        name: &str,
        spec: GroupSpec,
    ) -> Result<GroupRecord> {
        let _listen = self.listen_lock.lock().await;
        let (current, spec) = self.check_group_update(tenant, name, spec).await?;
        let lb = self.bind_if_needed(&spec, Some(&current.spec)).await?;
        let event = self.event(
            tenant,
            name,
            EventKind::GroupUpdated,
            format!("group {name} updated"),
        );
        let record = self
            .store
            .update_group(tenant, &spec, self.clock.now(), event)
            .await?;
        self.controller.notify(tenant, name, lb);
        Ok(record)
    }

    /// The group.
    pub async fn get_group(&self, tenant: &TenantId, name: &str) -> Result<GroupRecord> {
        self.store
            .get_group(tenant, name)
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                kind: "group",
                name: name.to_string(),
            })
    }

    /// The tenant's groups.
    pub async fn list_groups(&self, tenant: &TenantId) -> Result<Vec<GroupRecord>> {
        Ok(self.store.list_groups(tenant).await?)
    }

    /// Starts deleting a group: its instances are drained and deleted, then the group.
    pub async fn delete_group(&self, tenant: &TenantId, name: &str) -> Result<GroupRecord> {
        self.get_group(tenant, name).await?;
        let event = self.event(
            tenant,
            name,
            EventKind::GroupDeleted,
            format!("group {name} is being deleted"),
        );
        let record = self.store.mark_group_deleting(tenant, name, event).await?;
        self.controller.notify(tenant, name, None);
        Ok(record)
    }

    /// Sets the desired capacity by hand (within [min, max]).
    pub async fn set_desired_capacity(
        &self,
        tenant: &TenantId,
        name: &str,
        desired: u32,
    ) -> Result<GroupRecord> {
        let group = self.get_group(tenant, name).await?;
        let cap = group.spec.capacity()?;
        if desired < cap.min() || desired > cap.max() {
            return Err(ValidationError::new(
                "desired_capacity",
                format!(
                    "desired_capacity ({desired}) must be within [min, max] = [{}, {}]",
                    cap.min(),
                    cap.max()
                ),
            )
            .into());
        }
        if group.deleting {
            return Err(ServiceError::State(format!(
                "group `{name}` is being deleted"
            )));
        }
        let before = group.desired_capacity;
        let mut event = self.event(
            tenant,
            name,
            EventKind::DesiredCapacitySet,
            format!("desired capacity set {before} → {desired} by a user"),
        );
        event.cause = Some(swell_core::Cause {
            policy: "manual".into(),
            before,
            after: desired,
            reason: "set by a user".into(),
            ..Default::default()
        });
        let now = self.clock.now();
        let record = self
            .store
            .set_desired_capacity(tenant, name, desired, Some(now), event)
            .await?;
        self.controller.notify(tenant, name, None);
        Ok(record)
    }

    /// Suspends (`suspend`) or resumes the group's autoscaling (AWS's suspended
    /// processes, Senlin's disabled policies). While suspended the policies still
    /// evaluate and record a `would_scale` event for each new capacity they would have
    /// set, but change nothing; a desired capacity set by a user still applies, and the
    /// reconciler still replaces dead and unhealthy instances. Stored: a restart keeps
    /// it. Asking for the state the group is in changes nothing and records nothing.
    pub async fn set_suspended(
        &self,
        tenant: &TenantId,
        name: &str,
        suspend: bool,
    ) -> Result<GroupRecord> {
        let group = self.get_group(tenant, name).await?;
        if group.deleting {
            return Err(ServiceError::State(format!(
                "group `{name}` is being deleted"
            )));
        }
        if group.suspended_at.is_some() == suspend {
            return Ok(group);
        }
        let (kind, message) = if suspend {
            (
                EventKind::ScalingSuspended,
                format!(
                    "autoscaling of {name} suspended by a user: the policies record what they would do (would_scale) and change nothing; a desired capacity set by a user still applies"
                ),
            )
        } else {
            (
                EventKind::ScalingResumed,
                format!("autoscaling of {name} resumed by a user"),
            )
        };
        let event = self.event(tenant, name, kind, message);
        let record = self
            .store
            .set_suspended(tenant, name, suspend, event)
            .await?;
        self.controller.notify(tenant, name, None);
        Ok(record)
    }

    /// Sets (`protect`) or lifts an instance's scale-in protection: a protected
    /// instance is never chosen by a scale-in (it is still replaced when it dies or
    /// fails its health checks, and retired when its group is deleted). The instance
    /// must be live (pending, running or paused), else 409. Asking for the state it is
    /// in changes nothing and records nothing.
    pub async fn set_protected(
        &self,
        tenant: &TenantId,
        group: &str,
        id: &str,
        protect: bool,
    ) -> Result<InstanceRecord> {
        let iid = InstanceId(id.to_string());
        let not_found = || ServiceError::NotFound {
            kind: "instance",
            name: id.to_string(),
        };
        let inst = self
            .store
            .get_instance(tenant, &iid)
            .await?
            .filter(|i| i.group == group)
            .ok_or_else(not_found)?;
        let live = |i: &InstanceRecord| {
            matches!(
                i.status,
                InstanceStatus::Pending | InstanceStatus::Running | InstanceStatus::Paused
            )
        };
        let refuse = |i: &InstanceRecord| {
            ServiceError::State(format!(
                "instance {id} is {}: only a pending, running or paused instance can be {}",
                i.status,
                if protect { "protected" } else { "unprotected" }
            ))
        };
        if !live(&inst) {
            return Err(refuse(&inst));
        }
        if inst.protected == protect {
            return Ok(inst);
        }
        let (kind, word) = if protect {
            (EventKind::InstanceProtected, "protected from scale-in")
        } else {
            (
                EventKind::InstanceUnprotected,
                "no longer protected from scale-in",
            )
        };
        let mut event = self.event(
            tenant,
            group,
            kind,
            format!("instance {id} {word} by a user"),
        );
        event.instance_id = Some(iid.clone());
        let record = self
            .store
            .set_instance_protected(tenant, group, &iid, protect, event)
            .await?;
        // The store read it locked: it may have started retiring since our read.
        if !live(&record) {
            return Err(refuse(&record));
        }
        self.controller.notify(tenant, group, None);
        Ok(record)
    }

    /// The group's instances (final ones too when `all`).
    pub async fn list_instances(
        &self,
        tenant: &TenantId,
        name: &str,
        all: bool,
    ) -> Result<Vec<InstanceRecord>> {
        self.get_group(tenant, name).await?;
        Ok(self.store.list_instances(tenant, name, all).await?)
    }

    /// The group's events.
    pub async fn list_events(
        &self,
        tenant: &TenantId,
        name: &str,
        filter: &EventFilter,
    ) -> Result<Vec<EventRecord>> {
        GroupName::new(name)?;
        check_limit(filter.limit)?;
        let events = self.store.list_events(tenant, name, filter).await?;
        if events.is_empty() && self.store.get_group(tenant, name).await?.is_none() {
            return Err(ServiceError::NotFound {
                kind: "group",
                name: name.to_string(),
            });
        }
        Ok(events)
    }

    /// The group's stored load history, oldest first (`GET
    /// /v1/groups/{name}/metrics/history`): the summaries at or after `since` (default: the
    /// last hour), of `metric` when given.
    pub async fn load_history(
        &self,
        tenant: &TenantId,
        name: &str,
        since: Option<Timestamp>,
        metric: Option<&str>,
    ) -> Result<Vec<LoadSummary>> {
        let metric = metric
            .map(|m| {
                parse_metric(m).ok_or_else(|| {
                    ValidationError::new(
                        "metric",
                        format!(
                            "unknown metric `{m}` (one of {})",
                            PUSHABLE_METRICS.join(", ")
                        ),
                    )
                })
            })
            .transpose()?;
        let g = self.get_group(tenant, name).await?;
        let since = since.unwrap_or_else(|| self.clock.now().sub(LOAD_HISTORY_DEFAULT_SPAN));
        let mut history = self.store.load_history(tenant, &g.spec.name, since).await?;
        if let Some(m) = metric {
            history.retain(|s| s.metric == m);
        }
        Ok(history)
    }

    /// The group and its stored metric history matching `filter`, oldest first (`GET
    /// /v1/groups/{name}/metrics`).
    pub async fn group_metrics(
        &self,
        tenant: &TenantId,
        name: &str,
        filter: &swell_store::PointFilter,
    ) -> Result<(GroupRecord, Vec<crate::metric_history::GroupPoint>)> {
        let g = self.get_group(tenant, name).await?;
        let points = self
            .store
            .group_metric_points(tenant, &g.spec.name, filter)
            .await?
            .into_iter()
            .map(|p| crate::metric_history::GroupPoint {
                at: p.at,
                running: p.running,
                desired_capacity: p.desired_capacity,
                values: p.values,
            })
            .collect();
        Ok((g, points))
    }

    /// One instance's stored metric history matching `filter`, oldest first (`GET
    /// /v1/groups/{name}/instances/{id}/metrics`); the instance must be (or have been)
    /// one of the group's, else 404. An instance owner without a role may read only
    /// their own instance (403).
    pub async fn instance_metrics(
        &self,
        caller: &crate::auth::Principal,
        name: &str,
        id: &str,
        filter: &swell_store::PointFilter,
    ) -> Result<Vec<crate::metric_history::InstancePoint>> {
        let tenant = &caller.tenant;
        let g = self.get_group(tenant, name).await?;
        let instances = self
            .store
            .list_instances(tenant, &g.spec.name, true)
            .await?;
        let Some(instance) = instances.iter().find(|i| i.id.as_str() == id) else {
            return Err(ServiceError::NotFound {
                kind: "instance",
                name: id.to_string(),
            });
        };
        if !caller.at_least(swell_store::Role::Viewer) && !caller.owns(id) {
            return Err(ServiceError::Forbidden(format!(
                "instance `{id}` is not yours: an instance owner reads only their own instances"
            )));
        }
        // Its readings are kept in its group's points: the window is narrowed to the
        // instance's life, so the read does not scan the group's whole history.
        let mut filter = filter.clone();
        filter.since = filter.since.max(Some(instance.created_at));
        if instance.status.is_final() {
            let ended = instance.updated_at.add(std::time::Duration::from_millis(1));
            filter.until = Some(filter.until.map_or(ended, |until| until.min(ended)));
        }
        Ok(self
            .store
            .instance_metric_points(tenant, &g.spec.name, &instance.id, &filter)
            .await?
            .into_iter()
            .map(|p| crate::metric_history::InstancePoint {
                at: p.at,
                cpu_percent: p.cpu_percent,
                memory_mb: p.memory_mb,
            })
            .collect())
    }

    /// Takes pushed metric readings for a group (`POST /v1/groups/{name}/metrics`).
    /// Every sample is checked before any is used (DESIGN.md invariant 6): a known
    /// metric, a finite value >= 0, and an instance id, when given, of a live instance
    /// of this group in this tenant. Returns how many were accepted.
    pub async fn push_metrics(
        &self,
        tenant: &TenantId,
        group: &str,
        samples: &[PushSample],
    ) -> Result<u32> {
        let g = self.get_group(tenant, group).await?;
        let live = self.store.list_instances(tenant, group, false).await?;
        let live: Vec<&str> = live.iter().map(|r| r.id.as_str()).collect();
        let readings = check_samples(samples, group, &live, self.clock.now())?;
        let accepted = readings.len() as u32;
        match self.controller.push_metrics(tenant, &g.spec.name, readings) {
            Ok(()) => {}
            Err(PushError::NoWorker) => {
                return Err(ServiceError::State(format!(
                    "group `{group}` has no running worker (is it being deleted?)"
                )));
            }
            Err(PushError::Full) => {
                return Err(ServiceError::Busy(format!(
                    "group `{group}` has {WORKER_QUEUE} inputs waiting; push again in a second"
                )));
            }
        }
        Ok(accepted)
    }

    /// Pauses a running instance (seed 3): out of the load balancer, no CPU, still counted.
    pub async fn pause_instance(
        &self,
        tenant: &TenantId,
        group: &str,
        id: &str,
    ) -> Result<InstanceRecord> {
        self.set_paused(tenant, group, id, true).await
    }

    /// Resumes a paused instance.
    pub async fn resume_instance(
        &self,
        tenant: &TenantId,
        group: &str,
        id: &str,
    ) -> Result<InstanceRecord> {
        self.set_paused(tenant, group, id, false).await
    }

    async fn set_paused(
        &self,
        tenant: &TenantId,
        group: &str,
        id: &str,
        pause: bool,
    ) -> Result<InstanceRecord> {
        let iid = InstanceId(id.to_string());
        let inst = self
            .store
            .get_instance(tenant, &iid)
            .await?
            .filter(|i| i.group == group)
            .ok_or_else(|| ServiceError::NotFound {
                kind: "instance",
                name: id.to_string(),
            })?;
        let (from, to, kind) = if pause {
            (
                InstanceStatus::Running,
                InstanceStatus::Paused,
                EventKind::InstancePaused,
            )
        } else {
            (
                InstanceStatus::Paused,
                InstanceStatus::Running,
                EventKind::InstanceResumed,
            )
        };
        if inst.status != from {
            return Err(ServiceError::State(format!(
                "instance {id} is {}, it must be {from} to {}",
                inst.status,
                if pause { "pause" } else { "resume" }
            )));
        }
        let provider = self
            .controller
            .provider(tenant, &inst.provider)
            .ok_or_else(|| {
                ServiceError::State(format!("provider {} is not configured", inst.provider))
            })?;
        if pause {
            // Out of the load balancer first, so no request goes to a stopped process.
            // The instance is recorded as paused before the drain: the worker puts
            // every `running` instance into the load balancer, and a reconcile during
            // the drain would otherwise put this one back and send it requests that
            // then hang on the stopped process. (Recovery maps a crash in between
            // back to `running`: it reads the process state.)
            self.store
                .update_instance(
                    tenant,
                    &iid,
                    InstanceStatus::Paused,
                    InstanceUpdate::default(),
                    self.clock.now(),
                    None,
                )
                .await?;
            // The worker keeps its own copy of the records: it reads this one now.
            self.controller.notify(tenant, group, None);
            if let Some(lb) = self.controller.load_balancer(tenant, group) {
                lb.drain(id, std::time::Duration::from_secs(5)).await;
            }
            if let Err(e) = provider.pause(&iid).await {
                // Not paused after all: running again, and back in the load balancer.
                self.store
                    .update_instance(
                        tenant,
                        &iid,
                        InstanceStatus::Running,
                        InstanceUpdate::default(),
                        self.clock.now(),
                        None,
                    )
                    .await?;
                self.controller.notify(tenant, group, None);
                return Err(ServiceError::Provider(e));
            }
        } else {
            provider
                .resume(&iid)
                .await
                .map_err(ServiceError::Provider)?;
        }
        let mut event = self.event(
            tenant,
            group,
            kind,
            format!("instance {id} {}", if pause { "paused" } else { "resumed" }),
        );
        event.instance_id = Some(iid.clone());
        let record = self
            .store
            .update_instance(
                tenant,
                &iid,
                to,
                InstanceUpdate::default(),
                self.clock.now(),
                Some(event),
            )
            .await?;
        self.controller.notify(tenant, group, None);
        Ok(record)
    }
}

/// The most samples one metric push may carry.
pub const MAX_PUSHED_SAMPLES: usize = 1000;

/// Every metric a push may name (the group policies' metrics).
pub const PUSHABLE_METRICS: &[&str] = &[
    "cpu",
    "memory",
    "request_rate",
    "request_rate_per_instance",
    "in_flight",
    "latency_p99",
    "error_rate",
    "steal",
];

/// One pushed reading as the HTTP layer received it, before validation.
#[derive(Debug, Clone, PartialEq)]
pub struct PushSample {
    /// The metric's name.
    pub metric: String,
    /// The value.
    pub value: f64,
    /// The instance measured, if any.
    pub instance_id: Option<String>,
}

/// Checks pushed samples before any is used (DESIGN.md invariant 6): one to
/// [`MAX_PUSHED_SAMPLES`] of them, each of a known metric, with a finite value >= 0 and,
/// when it names one, an instance among `live` (this group's live instances in this
/// tenant). An error names the sample's field (`samples[2].value`) and the rule.
pub fn check_samples(
    samples: &[PushSample],
    group: &str,
    live: &[&str],
    at: Timestamp,
) -> Result<Vec<PushedReading>> {
    if samples.is_empty() {
        return Err(ValidationError::new("samples", "at least one sample is needed").into());
    }
    if samples.len() > MAX_PUSHED_SAMPLES {
        return Err(ValidationError::new(
            "samples",
            format!(
                "at most {MAX_PUSHED_SAMPLES} samples per request (got {})",
                samples.len()
            ),
        )
        .into());
    }
    let mut readings = Vec::with_capacity(samples.len());
    for (i, sample) in samples.iter().enumerate() {
        let metric = parse_metric(&sample.metric).ok_or_else(|| {
            ValidationError::new(
                format!("samples[{i}].metric"),
                format!(
                    "unknown metric `{}` (one of {})",
                    sample.metric,
                    PUSHABLE_METRICS.join(", ")
                ),
            )
        })?;
        if !sample.value.is_finite() || sample.value < 0.0 {
            return Err(ValidationError::new(
                format!("samples[{i}].value"),
                format!("must be a finite number >= 0 (got {})", sample.value),
            )
            .into());
        }
        let instance = match &sample.instance_id {
            None => None,
            Some(id) => {
                // A foreign tenant's instance reads exactly like one that does not
                // exist (DESIGN.md invariant 3).
                if !live.contains(&id.as_str()) {
                    return Err(ServiceError::Unknown(ValidationError::new(
                        format!("samples[{i}].instance_id"),
                        format!("no live instance `{id}` in group `{group}`"),
                    )));
                }
                Some(InstanceId(id.clone()))
            }
        };
        readings.push(PushedReading {
            metric,
            value: sample.value,
            instance,
            at,
        });
    }
    Ok(readings)
}

/// A listing's `?limit=`, refused above [`MAX_LIST_LIMIT`] (400 naming
/// `limit`) so that no request makes the server read and send an unbounded list.
pub(crate) fn check_limit(limit: Option<u32>) -> Result<Option<u32>> {
    match limit {
        Some(n) if n > MAX_LIST_LIMIT => Err(ServiceError::Invalid(ValidationError::new(
            "limit",
            format!(
                "must be at most {} (got {n}); page with after_id",
                MAX_LIST_LIMIT
            ),
        ))),
        other => Ok(other),
    }
}

/// How far back the load history reads without `since`.
const LOAD_HISTORY_DEFAULT_SPAN: std::time::Duration = std::time::Duration::from_secs(3600);

fn parse_metric(name: &str) -> Option<Metric> {
    serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
}
