//! The controller: one worker per group that samples metrics, asks the policy engine for
//! a desired capacity and reconciles the fleet towards it through the group's provider
//! and load balancer.
//!
//! Level-triggered: every pass compares the stored desired capacity with the stored and
//! observed instances and acts on the difference; it never relies on having seen an edge.
//! Every provider call is preceded by a durable intent (a `pending` or `terminating` row)
//! and followed by its outcome (DESIGN.md invariant 2), so [`Controller::recover`] can
//! finish or undo whatever a crash interrupted.

use crate::clock::Clock;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use swell_core::metrics::{InstanceReading, group_average};
use swell_core::top::TopCpu;
use swell_core::{
    DecisionKind, EventKind, GroupState, InstanceId, InstanceStatus, LearnedState, Lifecycle,
    LoadSummarizer, LoadSummary, Metric, MetricSample, MetricWindow, PolicyEngine, TenantId,
    Timestamp,
};
use swell_core::{HealthCheckType, LbAlgorithm, LbProtocol, LoadBalancerSpec};
use swell_core::{MetricSourceSpec, SshSourceSpec};
use swell_lb::{
    Algorithm, Backend, HealthCheck, HealthCheckKind, LbConfig, LoadBalancer, PassiveEjection,
    Protocol,
};
use swell_providers::{
    CreateRequest, InstanceMetrics, ObservedState, Provider, ProviderError, ProviderInstance,
};
use swell_store::{GroupRecord, InstanceRecord, InstanceUpdate, NewEvent, Store, StoreError};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long a new instance may take to accept TCP connections before it is failed.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Grace between the provider's graceful and forced stop.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Settings of the controller (the default: instances left running at exit, SSH files in
/// the system's temporary directory).
#[derive(Debug, Clone, Default)]
pub struct ControllerOptions {
    /// Stop every instance when the server shuts down (default: leave them running and
    /// adopt them at the next start).
    pub stop_instances_on_exit: bool,
    /// Where the `ssh` metric source keeps one known_hosts file per instance, under
    /// `<tenant>/<group>/` (`swell serve`: `<data_dir>/known_hosts`); `None`:
    /// `swell-known_hosts` in the system's temporary directory.
    pub known_hosts_dir: Option<std::path::PathBuf>,
    /// Where the `ssh` metric source finds each tenant's private keys, under
    /// `<tenant>/` (`swell serve`: `<data_dir>/ssh-keys`); `None`: `swell-ssh-keys` in
    /// the system's temporary directory.
    pub ssh_keys_dir: Option<std::path::PathBuf>,
    /// The short in-memory history of every group's metrics, fed once per metrics
    /// interval whatever the group's policy (the dashboard's chart, the exports).
    pub metric_history: Arc<crate::metric_history::MetricHistory>,
}

/// The providers by name.
pub type Providers = HashMap<String, Arc<dyn Provider>>;

/// Latest resource readings per instance (for the API and the demo's live view).
pub type LatestMetrics = Arc<RwLock<HashMap<InstanceId, InstanceMetrics>>>;

type GroupKey = (TenantId, String);

/// What can wake a group worker besides its timers and a reload ([`Reload`]), through
/// its bounded queue ([`WORKER_QUEUE`] inputs).
#[derive(Debug)]
pub enum WorkerInput {
    /// Readings pushed through the API, already validated by the service.
    Metrics(Vec<PushedReading>),
    /// A round of the group's metric sources (`ssh`, `prometheus`) finished.
    SourceRound(SourceRound),
}

/// The outcome of one round of a group's metric sources, done concurrently off the
/// worker's loop: one `ssh` read per running instance, one query per `prometheus` source.
#[derive(Debug)]
pub struct SourceRound {
    /// Each instance's `ssh` reading, or why it failed.
    pub reads: Vec<(InstanceId, Result<TopCpu, String>)>,
    /// Each `prometheus` source's group-level value, or why there is none.
    pub values: Vec<(Metric, Result<f64, String>)>,
}

/// Inputs a group worker's queue holds; a metric push that finds it full is refused
/// (429) instead of growing the server's memory.
pub const WORKER_QUEUE: usize = 64;

/// A pending "the group changed in the store, reload it": however many changes arrive
/// before the worker looks, it reloads once (they coalesce), so an API caller can
/// never fill the worker's queue with them. A newly bound load balancer waits here; a
/// newer one replaces it (the older is shut down).
#[derive(Default)]
struct Reload {
    wake: tokio::sync::Notify,
    lb: Mutex<Option<LoadBalancer>>,
}

impl Reload {
    /// Asks for a reload, handing over `lb` when the listen address changed.
    fn request(&self, lb: Option<LoadBalancer>) {
        if let Some(lb) = lb
            && let Ok(mut slot) = self.lb.lock()
            && let Some(older) = slot.replace(lb)
        {
            tokio::spawn(async move { older.shutdown().await });
        }
        self.wake.notify_one();
    }

    /// The load balancer handed over since the last reload, if any.
    fn take_lb(&self) -> Option<LoadBalancer> {
        self.lb.lock().ok().and_then(|mut l| l.take())
    }
}

/// Why pushed readings were not handed to a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The group has no worker (it is gone).
    NoWorker,
    /// The worker's queue is full ([`WORKER_QUEUE`]); retry shortly.
    Full,
}

/// Reads of one `ssh` source round that run at once.
const SSH_READS_AT_ONCE: usize = 16;

/// One reading pushed through `POST /v1/groups/{name}/metrics` (an agent, a script, a
/// test: OpenStack's fake servers run nothing a provider could measure).
#[derive(Debug, Clone, PartialEq)]
pub struct PushedReading {
    /// What was measured.
    pub metric: Metric,
    /// The value (finite, checked by the service).
    pub value: f64,
    /// The instance measured; `None` for a group-level value.
    pub instance: Option<InstanceId>,
    /// When the server received it.
    pub at: Timestamp,
}

/// The period of the load summaries kept for forecasting policies: the resolution of
/// their seasonal history (`LoadHistory`'s buckets).
const LOAD_SUMMARY_PERIOD: Duration = Duration::from_secs(300);
/// How long load summaries are kept: the two weeks and a day a forecasting policy reads
/// (two weekly lags), with a day to spare.
const LOAD_HISTORY_KEPT: Duration = Duration::from_secs(16 * 86_400);
/// Load summaries kept in memory while the store refuses them: a day of three metrics,
/// then the oldest are dropped.
const UNSAVED_KEPT: usize = 3 * 288;

/// First wait after a failed create; it doubles with each further failure in a row.
const CREATE_BACKOFF_BASE: Duration = Duration::from_secs(5);
/// The longest wait between two creates that keep failing.
const CREATE_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Failed creates in a row after which a provider yields to the group's next one.
const YIELD_AFTER: u32 = 3;

/// Failed creates in a row and when the next attempt may start, so that a cloud that is
/// out of quota or down is not asked again at every evaluation tick.
#[derive(Debug, Clone, Copy, PartialEq)]
struct CreateBackoff {
    failures: u32,
    until: Timestamp,
}

/// The wait after `failures` failed creates in a row: 5 s, 10 s, 20 s, … up to 60 s.
fn backoff_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    CREATE_BACKOFF_BASE
        .saturating_mul(1u32 << doublings)
        .min(CREATE_BACKOFF_MAX)
}

struct WorkerHandle {
    tx: mpsc::Sender<WorkerInput>,
    reload: Arc<Reload>,
    status: Arc<Mutex<String>>,
    lb: Arc<Mutex<Option<LoadBalancer>>>,
}

/// Runs the group workers.
pub struct Controller {
    store: Arc<dyn Store>,
    providers: crate::registry::ProviderRegistry,
    clock: Arc<dyn Clock>,
    options: ControllerOptions,
    workers: Mutex<HashMap<GroupKey, WorkerHandle>>,
    tasks: tokio::sync::Mutex<JoinSet<()>>,
    latest: LatestMetrics,
    cancel: CancellationToken,
}

impl Controller {
    /// A controller over `store` and `providers` (each a built-in under its key); call
    /// [`Controller::start`] to run it.
    pub fn new(
        store: Arc<dyn Store>,
        providers: Providers,
        clock: Arc<dyn Clock>,
        options: ControllerOptions,
    ) -> Arc<Self> {
        let registry = crate::registry::ProviderRegistry::with_builtins(providers);
        Self::with_registry(store, registry, clock, options)
    }

    /// A controller over `store` and the providers of `registry` (which the service
    /// updates when an admin defines or removes one).
    pub fn with_registry(
        store: Arc<dyn Store>,
        providers: crate::registry::ProviderRegistry,
        clock: Arc<dyn Clock>,
        options: ControllerOptions,
    ) -> Arc<Self> {
        Arc::new(Controller {
            store,
            providers,
            clock,
            options,
            workers: Mutex::new(HashMap::new()),
            tasks: tokio::sync::Mutex::new(JoinSet::new()),
            latest: Arc::new(RwLock::new(HashMap::new())),
            cancel: CancellationToken::new(),
        })
    }

    /// The latest per-instance readings.
    pub fn latest_metrics(&self) -> LatestMetrics {
        self.latest.clone()
    }

    /// Reconciles the store with what the providers run after a (possibly unclean) stop,
    /// then starts one worker per stored group.
    pub async fn start(self: &Arc<Self>) -> Result<(), StoreError> {
        self.recover().await?;
        for group in self.store.list_all_groups().await? {
            let lb = match &group.spec.load_balancer {
                Some(spec) => match bind_lb(spec).await {
                    Ok(lb) => Some(lb),
                    Err(e) => {
                        tracing::error!(group = %group.spec.name, "load balancer: {e}");
                        None
                    }
                },
                None => None,
            };
            self.spawn_worker(&group, lb).await;
        }
        Ok(())
    }

    /// Finishes or undoes what a crash interrupted: adopts live instances, fails the
    /// intents that never produced one, finishes deletions, removes orphans. Every change
    /// is recorded as an event.
    pub async fn recover(&self) -> Result<(), StoreError> {
        let now = self.clock.now();
        let live = self.store.list_live_instances().await?;
        let known: HashSet<InstanceId> = live.iter().map(|i| i.id.clone()).collect();
        let groups = self.store.list_all_groups().await?;
        for entry in self.all_providers() {
            let (name, provider) = (&entry.name, &entry.provider);
            let observed = match provider.list().await {
                Ok(list) => list,
                Err(e) => {
                    tracing::error!(provider = %name, "cannot list instances for recovery: {e}");
                    continue;
                }
            };
            let alive: HashMap<InstanceId, ProviderInstance> = observed
                .into_iter()
                .filter(|p| p.state != ObservedState::Exited)
                .map(|p| (p.instance_id.clone(), p))
                .collect();
            // A tenant-private provider's instances are adopted for its tenant only.
            let ours = |i: &&InstanceRecord| {
                &i.provider == name && entry.tenant.as_ref().is_none_or(|t| *t == i.tenant)
            };
            for inst in live.iter().filter(ours) {
                let seen = alive.get(&inst.id);
                let (status, update, kind, message) = match (inst.status, seen) {
                    (
                        InstanceStatus::Pending | InstanceStatus::Running | InstanceStatus::Paused,
                        Some(p),
                    ) => {
                        // An interrupted create may have left its work half done (a
                        // server without its floating IP or pool membership): creating
                        // the same id again finishes it and never makes a second one.
                        let finished = if inst.status == InstanceStatus::Pending {
                            self.finish_create(provider.as_ref(), &groups, inst).await
                        } else {
                            None
                        };
                        let p = finished.as_ref().unwrap_or(p);
                        let status = if p.state == ObservedState::Paused {
                            InstanceStatus::Paused
                        } else {
                            InstanceStatus::Running
                        };
                        let update = InstanceUpdate {
                            address: p.address.map(|a| a.to_string()),
                            native_id: Some(p.native_id.clone()),
                            host: Some(p.host.clone()),
                            started_at: inst.started_at.or(Some(now)),
                            status_reason: Some("adopted after restart".into()),
                            ..InstanceUpdate::default()
                        };
                        (
                            status,
                            update,
                            EventKind::InstanceAdopted,
                            format!("adopted live instance {} after restart", inst.id),
                        )
                    }
                    (InstanceStatus::Pending, None) => (
                        InstanceStatus::Failed,
                        reason(
                            "the create was interrupted by a restart before the instance started",
                        ),
                        EventKind::InstanceFailed,
                        format!(
                            "create intent {} never produced an instance; marked failed",
                            inst.id
                        ),
                    ),
                    (InstanceStatus::Running | InstanceStatus::Paused, None) => (
                        InstanceStatus::Failed,
                        reason("found dead at restart"),
                        EventKind::InstanceFailed,
                        format!("instance {} was found dead at restart", inst.id),
                    ),
                    (InstanceStatus::Draining | InstanceStatus::Terminating, _) => {
                        if seen.is_some()
                            && let Err(e) = provider.delete(&inst.id, STOP_GRACE).await
                        {
                            tracing::error!(instance = %inst.id, "cannot finish delete: {e}");
                            continue;
                        }
                        (
                            InstanceStatus::Terminated,
                            reason("deletion finished after restart"),
                            EventKind::InstanceTerminated,
                            format!("finished deleting instance {} after restart", inst.id),
                        )
                    }
                    (InstanceStatus::Terminated | InstanceStatus::Failed, _) => continue,
                };
                if status == InstanceStatus::Failed {
                    // What the interrupted create or the dead instance left behind (a
                    // created or exited container, a tenant network) goes too: the
                    // orphan sweep below only sees live instances.
                    if let Err(e) = provider.delete(&inst.id, STOP_GRACE).await {
                        tracing::warn!(instance = %inst.id, "cleaning up a failed instance: {e}");
                    }
                }
                let event = self.event(&inst.tenant, &inst.group, kind, Some(&inst.id), message);
                self.store
                    .update_instance(&inst.tenant, &inst.id, status, update, now, Some(event))
                    .await?;
            }
            // Tagged as ours but without a live row: an orphan. Nothing may keep running
            // that the store does not account for.
            for (id, p) in alive.iter().filter(|(id, _)| !known.contains(*id)) {
                tracing::warn!(instance = %id, "removing orphan instance");
                if let Err(e) = provider.delete(id, STOP_GRACE).await {
                    tracing::error!(instance = %id, "cannot remove orphan: {e}");
                    continue;
                }
                let tenant = entry
                    .tenant
                    .clone()
                    .map_or_else(|| TenantId::new(p.tenant.clone()), Ok);
                if let Ok(tenant) = tenant {
                    let event = self.event(
                        &tenant,
                        &p.group,
                        EventKind::InstanceTerminated,
                        Some(id),
                        format!("removed orphan instance {id} (no live record)"),
                    );
                    self.store.append_event(event).await?;
                }
            }
        }
        Ok(())
    }

    /// Calls the idempotent create again for an intent whose instance exists, so that
    /// the provider completes what the crash interrupted; `None` (adopt as seen) when
    /// the group is gone or the call fails.
    async fn finish_create(
        &self,
        provider: &dyn Provider,
        groups: &[GroupRecord],
        inst: &InstanceRecord,
    ) -> Option<ProviderInstance> {
        let group = groups
            .iter()
            .find(|g| g.tenant == inst.tenant && g.spec.name == inst.group)?;
        let request = CreateRequest {
            instance_id: inst.id.clone(),
            tenant: inst.tenant.clone(),
            group: inst.group.clone(),
            template: group.spec.template.clone(),
        };
        match provider.create(&request).await {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(instance = %inst.id, "finishing an interrupted create: {e}");
                None
            }
        }
    }

    /// Starts the worker of a newly stored group (or wakes it if it runs).
    pub async fn spawn_worker(self: &Arc<Self>, group: &GroupRecord, lb: Option<LoadBalancer>) {
        let key = (group.tenant.clone(), group.spec.name.clone());
        if let Some(reload) = self
            .workers
            .lock()
            .map(|w| w.get(&key).map(|h| h.reload.clone()))
            .ok()
            .flatten()
        {
            reload.request(lb);
            return;
        }
        let (tx, rx) = mpsc::channel(WORKER_QUEUE);
        let reload = Arc::new(Reload::default());
        let status = Arc::new(Mutex::new("starting".to_string()));
        let lb_spec = lb.as_ref().and(group.spec.load_balancer.clone());
        let lb = Arc::new(Mutex::new(lb));
        let worker = GroupWorker {
            tx: tx.clone(),
            prometheus: swell_providers::prometheus::PromClient::new(),
            source_round: None,
            source_problem: None,
            lb_problem: None,
            controller: self.clone(),
            key: key.clone(),
            status: status.clone(),
            lb: lb.clone(),
            window: MetricWindow::new(Duration::from_secs(3600)),
            engine: None,
            retiring: JoinSet::new(),
            retiring_ids: HashMap::new(),
            lb_spec,
            quota_capped_at: None,
            provider_capped_at: None,
            backoff: HashMap::new(),
            pushed_instance: HashMap::new(),
            pushed_group: HashMap::new(),
            swept: HashSet::new(),
            summarizer: LoadSummarizer::new(LOAD_SUMMARY_PERIOD),
            unsaved: Vec::new(),
            history_pruned_at: None,
        };
        if let Ok(mut workers) = self.workers.lock() {
            workers.insert(
                key,
                WorkerHandle {
                    tx,
                    reload: reload.clone(),
                    status,
                    lb,
                },
            );
        }
        // Every line a worker logs carries its tenant and group (text: a `group{…}`
        // prefix; JSON: the `span` fields), so a log system can filter by them.
        let span = tracing::info_span!("group", tenant = %group.tenant, group = %group.spec.name);
        self.tasks
            .lock()
            .await
            .spawn(tracing::Instrument::instrument(
                worker.run(rx, reload),
                span,
            ));
    }

    /// Wakes a group's worker after its spec or desired capacity changed.
    pub fn notify(&self, tenant: &TenantId, group: &str, lb: Option<LoadBalancer>) {
        if let Ok(workers) = self.workers.lock()
            && let Some(h) = workers.get(&(tenant.clone(), group.to_string()))
        {
            h.reload.request(lb);
        }
    }

    /// Hands pushed readings to the group's worker without waiting: `Full` when its
    /// queue is full, `NoWorker` when the group has none (it is gone).
    pub fn push_metrics(
        &self,
        tenant: &TenantId,
        group: &str,
        readings: Vec<PushedReading>,
    ) -> Result<(), PushError> {
        let Ok(workers) = self.workers.lock() else {
            return Err(PushError::NoWorker);
        };
        let h = workers
            .get(&(tenant.clone(), group.to_string()))
            .ok_or(PushError::NoWorker)?;
        h.tx.try_send(WorkerInput::Metrics(readings))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => PushError::Full,
                mpsc::error::TrySendError::Closed(_) => PushError::NoWorker,
            })
    }

    /// The group's load balancer address, if it has one running.
    pub fn load_balancer_addr(&self, tenant: &TenantId, group: &str) -> Option<SocketAddr> {
        let workers = self.workers.lock().ok()?;
        let h = workers.get(&(tenant.clone(), group.to_string()))?;
        let lb = h.lb.lock().ok()?;
        lb.as_ref().map(|l| l.local_addr())
    }

    /// Every running load balancer's bound address, with its group (for the service's
    /// check that no two groups share a listen address).
    pub fn bound_listen_addrs(&self) -> Vec<(TenantId, String, SocketAddr)> {
        let Ok(workers) = self.workers.lock() else {
            return Vec::new();
        };
        workers
            .iter()
            .filter_map(|((tenant, group), h)| {
                let lb = h.lb.lock().ok()?;
                let addr = lb.as_ref()?.local_addr();
                Some((tenant.clone(), group.clone(), addr))
            })
            .collect()
    }

    /// The group's load balancer, if it has one running.
    pub fn load_balancer(&self, tenant: &TenantId, group: &str) -> Option<LoadBalancer> {
        let workers = self.workers.lock().ok()?;
        let h = workers.get(&(tenant.clone(), group.to_string()))?;
        h.lb.lock().ok()?.clone()
    }

    /// Each worker's name and state.
    pub fn worker_statuses(&self) -> Vec<(String, String)> {
        let Ok(workers) = self.workers.lock() else {
            return Vec::new();
        };
        let mut out: Vec<(String, String)> = workers
            .iter()
            .map(|((t, g), h)| {
                let state = h.status.lock().map(|s| s.clone()).unwrap_or_default();
                (format!("group/{t}/{g}"), state)
            })
            .collect();
        out.sort();
        out
    }

    /// Provider `name` as `tenant` sees it (a definition private to another tenant is
    /// absent): every lookup of a provider goes through here.
    pub fn provider(&self, tenant: &TenantId, name: &str) -> Option<Arc<dyn Provider>> {
        self.providers.get(tenant, name)
    }

    /// Every provider, with its name and owner (for recovery).
    pub fn all_providers(&self) -> Vec<Arc<crate::registry::RegisteredProvider>> {
        self.providers.all()
    }

    /// The provider registry (the service defines and removes providers in it).
    pub fn registry(&self) -> &crate::registry::ProviderRegistry {
        &self.providers
    }

    /// Stops every worker; stops the instances too when configured so.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        let mut tasks = self.tasks.lock().await;
        while tasks.join_next().await.is_some() {}
        let lbs: Vec<LoadBalancer> = self
            .workers
            .lock()
            .map(|w| {
                w.values()
                    .filter_map(|h| h.lb.lock().ok().and_then(|l| l.clone()))
                    .collect()
            })
            .unwrap_or_default();
        if self.options.stop_instances_on_exit
            && let Err(e) = self.stop_all().await
        {
            tracing::error!("stopping instances on exit: {e}");
        }
        for lb in lbs {
            lb.shutdown().await;
        }
    }

    async fn stop_all(&self) -> Result<(), StoreError> {
        for inst in self.store.list_live_instances().await? {
            let now = self.clock.now();
            let Some(provider) = self.provider(&inst.tenant, &inst.provider) else {
                continue;
            };
            self.store
                .update_instance(
                    &inst.tenant,
                    &inst.id,
                    InstanceStatus::Terminating,
                    InstanceUpdate::default(),
                    now,
                    None,
                )
                .await?;
            let (status, kind, msg) = match provider.delete(&inst.id, STOP_GRACE).await {
                Ok(()) => (
                    InstanceStatus::Terminated,
                    EventKind::InstanceTerminated,
                    format!("stopped instance {} on exit", inst.id),
                ),
                Err(e) => (
                    InstanceStatus::Terminating,
                    EventKind::ProviderError,
                    format!("cannot stop instance {} on exit: {e}", inst.id),
                ),
            };
            let event = self.event(&inst.tenant, &inst.group, kind, Some(&inst.id), msg);
            self.store
                .update_instance(
                    &inst.tenant,
                    &inst.id,
                    status,
                    InstanceUpdate::default(),
                    self.clock.now(),
                    Some(event),
                )
                .await?;
        }
        Ok(())
    }

    fn event(
        &self,
        tenant: &TenantId,
        group: &str,
        kind: EventKind,
        instance: Option<&InstanceId>,
        message: String,
    ) -> NewEvent {
        NewEvent {
            tenant: tenant.clone(),
            group: group.to_string(),
            at: self.clock.now(),
            kind,
            instance_id: instance.cloned(),
            cause: None,
            message,
        }
    }
}

/// Why a group's load balancer could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LbBindError {
    /// Another live load balancer (any group's) holds the address, or one that
    /// overlaps it, or another program does.
    #[error("{0}")]
    AddressInUse(swell_lb::AddressInUse),
    /// Anything else: a malformed address, a bind the system refused, a setting the
    /// load balancer cannot run with.
    #[error("{0}")]
    Other(String),
}

impl From<LbBindError> for String {
    fn from(e: LbBindError) -> String {
        e.to_string()
    }
}

/// Binds a group's load balancer.
pub async fn bind_lb(spec: &LoadBalancerSpec) -> Result<LoadBalancer, LbBindError> {
    let addr: SocketAddr = spec.listen.parse().map_err(|_| {
        LbBindError::Other(format!(
            "`{}` must be an address like 127.0.0.1:8080",
            spec.listen
        ))
    })?;
    LoadBalancer::bind_with(addr, lb_config(spec))
        .await
        .map_err(|e| match swell_lb::AddressInUse::find(&e) {
            Some(in_use) => LbBindError::AddressInUse(in_use.clone()),
            None => LbBindError::Other(format!("cannot listen on {addr}: {e}")),
        })
}

/// The load balancer's configuration from the group document's section.
pub fn lb_config(spec: &LoadBalancerSpec) -> LbConfig {
    LbConfig {
        protocol: match spec.protocol {
            LbProtocol::Http => Protocol::Http,
            LbProtocol::Tcp => Protocol::Tcp,
        },
        algorithm: match spec.algorithm {
            LbAlgorithm::RoundRobin => Algorithm::RoundRobin,
            LbAlgorithm::LeastOutstanding => Algorithm::LeastOutstanding,
        },
        health_check: spec.health_check.as_ref().map(|h| HealthCheck {
            kind: match h.kind {
                HealthCheckType::Http => HealthCheckKind::Http {
                    path: h.path.clone(),
                },
                HealthCheckType::Tcp => HealthCheckKind::Tcp,
            },
            interval: h.interval,
            timeout: h.timeout,
            healthy_threshold: h.healthy_threshold,
            unhealthy_threshold: h.unhealthy_threshold,
        }),
        passive_ejection: spec.passive_ejection.as_ref().map(|p| PassiveEjection {
            consecutive_failures: p.consecutive_failures,
            ejection_time: p.ejection_time,
        }),
        request_timeout: spec.request_timeout,
        idle_timeout: spec.idle_timeout,
        max_body_bytes: spec.max_body_bytes,
        workers: spec.workers as usize,
        max_connections: spec.max_connections as usize,
        ..LbConfig::default()
    }
}

/// A failed create in words that say which failure it was, for the event and the
/// instance's status reason.
fn describe_create_failure(e: &ProviderError) -> String {
    match e {
        ProviderError::QuotaExceeded(m) => format!("quota exceeded at the provider: {m}"),
        ProviderError::NoCapacity(m) => format!("no valid host (no capacity): {m}"),
        ProviderError::Unavailable(m) => format!("provider unavailable: {m}"),
        ProviderError::Conflict(m) => format!("conflict at the provider: {m}"),
        ProviderError::InvalidTemplate(m) => format!("invalid template: {m}"),
        other => format!("provider error: {other}"),
    }
}

fn reason(text: &str) -> InstanceUpdate {
    InstanceUpdate {
        status_reason: Some(text.into()),
        ..InstanceUpdate::default()
    }
}

/// A retirement under way. Its drain can be cancelled (and the instance reused) until
/// the retirement commits to deleting: whichever of `cancel` and `commit` comes first
/// wins, atomically.
#[derive(Clone, Default)]
struct Retirement {
    cancel: CancellationToken,
    /// 0 draining, 1 committed to deletion, 2 cancelled.
    state: Arc<std::sync::atomic::AtomicU8>,
}

impl Retirement {
    fn commit(&self) -> bool {
        use std::sync::atomic::Ordering::AcqRel;
        self.state
            .compare_exchange(0, 1, AcqRel, std::sync::atomic::Ordering::Acquire)
            .is_ok()
    }

    fn cancel(&self) -> bool {
        use std::sync::atomic::Ordering::AcqRel;
        let won = self
            .state
            .compare_exchange(0, 2, AcqRel, std::sync::atomic::Ordering::Acquire)
            .is_ok();
        if won {
            self.cancel.cancel();
        }
        won
    }
}

/// One group's worker: metrics, decisions and reconciliation, serialised.
struct GroupWorker {
    /// The worker's own input, for the metric sources' rounds to report back.
    tx: mpsc::Sender<WorkerInput>,
    /// The client of the group's `prometheus` sources.
    prometheus: swell_providers::prometheus::PromClient,
    /// The metric sources' round under way (one at a time).
    source_round: Option<tokio::task::JoinHandle<()>>,
    /// What went wrong in the metric sources' last round, shown in the worker's status.
    source_problem: Option<String>,
    /// Why the group's load balancer is not running (its address is taken, …), shown
    /// in the worker's status; retried every evaluation until it binds.
    lb_problem: Option<String>,
    controller: Arc<Controller>,
    key: GroupKey,
    status: Arc<Mutex<String>>,
    lb: Arc<Mutex<Option<LoadBalancer>>>,
    window: MetricWindow,
    engine: Option<(swell_core::GroupSpec, PolicyEngine)>,
    retiring: JoinSet<InstanceId>,
    /// The retirements under way, so a scale-out can cancel a drain and reuse the
    /// instance, and a reload does not start a second retirement of the same one.
    retiring_ids: HashMap<InstanceId, Retirement>,
    /// The section the current load balancer was built from.
    lb_spec: Option<LoadBalancerSpec>,
    /// The target whose scale-out the quota last cut (one event per cut).
    quota_capped_at: Option<u32>,
    /// The target whose scale-out the provider's lack of room last cut (one event per cut).
    provider_capped_at: Option<u32>,
    /// Per provider: failed creates in a row and the earliest next attempt.
    backoff: HashMap<String, CreateBackoff>,
    /// The latest pushed per-instance readings: (metric, instance) → (value, received).
    pushed_instance: HashMap<(Metric, InstanceId), (f64, Timestamp)>,
    /// When each metric was last pushed as a group-level value.
    pushed_group: HashMap<Metric, Timestamp>,
    /// Leftovers of failed instances already removed (one event each).
    swept: HashSet<InstanceId>,
    /// Folds the samples of the metrics the policies remember into five-minute summaries
    /// for the store.
    summarizer: LoadSummarizer,
    /// Summaries closed but not yet stored.
    unsaved: Vec<LoadSummary>,
    /// When this worker last dropped summaries older than [`LOAD_HISTORY_KEPT`].
    history_pruned_at: Option<Timestamp>,
}

impl GroupWorker {
    fn set_status(&self, s: impl Into<String>) {
        let s = s.into();
        let mut s = s
            .split("; load balancer: ")
            .next()
            .unwrap_or_default()
            .to_string();
        if let Some(problem) = &self.lb_problem {
            s = format!("{s}; load balancer: {problem}");
        }
        if let Some(problem) = &self.source_problem {
            s = format!("{s}; metric source: {problem}");
        }
        if let Ok(mut st) = self.status.lock() {
            *st = s;
        }
    }

    fn lb(&self) -> Option<LoadBalancer> {
        self.lb.lock().ok().and_then(|l| l.clone())
    }

    fn replace_lb(&mut self, lb: Option<LoadBalancer>) -> Option<LoadBalancer> {
        self.lb
            .lock()
            .ok()
            .and_then(|mut l| std::mem::replace(&mut *l, lb))
    }

    /// Brings the load balancer in line with the group's section: `bound` is a new one
    /// the service already bound (a new address); a change of settings on the same
    /// address rebinds here.
    async fn refresh_lb(&mut self, group: &GroupRecord, bound: Option<LoadBalancer>) {
        let wanted = group.spec.load_balancer.clone();
        if let Some(new_lb) = bound {
            if let Some(old) = self.replace_lb(Some(new_lb)) {
                old.shutdown().await;
            }
            self.lb_spec = wanted;
            self.lb_trouble(group, None).await;
            return;
        }
        if wanted == self.lb_spec {
            if wanted.is_none() {
                self.lb_trouble(group, None).await;
            }
            return;
        }
        if let Some(old) = self.replace_lb(None) {
            old.shutdown().await;
        }
        self.lb_spec = None;
        match wanted {
            Some(spec) => match bind_lb(&spec).await {
                Ok(lb) => {
                    self.replace_lb(Some(lb));
                    self.lb_spec = Some(spec);
                    self.lb_trouble(group, None).await;
                }
                Err(e) => self.lb_trouble(group, Some(e.to_string())).await,
            },
            None => self.lb_trouble(group, None).await,
        }
    }

    /// Records why the load balancer is not running (`None`: it runs, or the group has
    /// none): in the status, and as one `load_balancer_error` event per new problem,
    /// so that the group's owner sees it; the worker carries on without it.
    async fn lb_trouble(&mut self, group: &GroupRecord, problem: Option<String>) {
        if problem == self.lb_problem {
            return;
        }
        match &problem {
            Some(p) => tracing::error!(group = %group.spec.name, "load balancer: {p}"),
            None if self.lb_problem.is_some() => {
                tracing::info!(group = %group.spec.name, "load balancer listening again")
            }
            None => {}
        }
        self.lb_problem = problem.clone();
        let current = self.status.lock().map(|s| s.clone()).unwrap_or_default();
        self.set_status(
            current
                .split("; metric source: ")
                .next()
                .unwrap_or_default(),
        );
        if let Some(p) = problem {
            let event = self.controller.event(
                &group.tenant,
                &group.spec.name,
                EventKind::LoadBalancerError,
                None,
                format!("load balancer not running: {p}"),
            );
            if let Err(e) = self.controller.store.append_event(event).await {
                tracing::warn!(group = %group.spec.name, "cannot record the event: {e}");
            }
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<WorkerInput>, reload: Arc<Reload>) {
        let cancel = self.controller.cancel.clone();
        let Some(group) = self.load().await else {
            return;
        };
        let mut eval = tokio::time::interval(group.spec.evaluation_interval);
        let mut sample = tokio::time::interval(group.spec.metrics_interval);
        eval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut intervals = (group.spec.evaluation_interval, group.spec.metrics_interval);
        // A load balancer that could not bind at start: tried again, and the reason
        // recorded if it still cannot.
        if group.spec.load_balancer != self.lb_spec {
            self.refresh_lb(&group, None).await;
        }
        self.reconcile().await;
        loop {
            let done = tokio::select! {
                _ = cancel.cancelled() => break,
                _ = eval.tick() => {
                    if self.lb_problem.is_some()
                        && let Some(g) = self.load().await
                    {
                        self.refresh_lb(&g, None).await;
                    }
                    self.evaluate().await;
                    self.reconcile().await
                }
                _ = sample.tick() => {
                    self.collect().await;
                    false
                }
                _ = reload.wake.notified() => {
                    let lb = reload.take_lb();
                    if let Some(g) = self.load().await {
                        self.refresh_lb(&g, lb).await;
                        let now_intervals =
                            (g.spec.evaluation_interval, g.spec.metrics_interval);
                        if now_intervals != intervals {
                            intervals = now_intervals;
                            eval = tokio::time::interval(intervals.0);
                            sample = tokio::time::interval(intervals.1);
                        }
                    } else if let Some(lb) = lb {
                        // The group is gone: the address it was given is let go.
                        lb.shutdown().await;
                    }
                    self.reconcile().await
                }
                Some(input) = rx.recv() => match input {
                    WorkerInput::Metrics(readings) => {
                        self.take_pushed(readings).await;
                        false
                    }
                    WorkerInput::SourceRound(round) => {
                        self.take_source_round(round).await;
                        false
                    }
                },
                Some(joined) = self.retiring.join_next(), if !self.retiring.is_empty() => {
                    if let Ok(id) = joined {
                        self.retiring_ids.remove(&id);
                    }
                    self.reconcile().await
                }
            };
            if done {
                break;
            }
        }
        // The period being summarised is stored as far as it got.
        let last = self.summarizer.flush();
        self.unsaved.extend(last);
        if let Some(group) = self.load().await {
            self.save_memory(&group).await;
        }
        if let Some(round) = self.source_round.take() {
            round.abort();
        }
        // Retirements in flight are abandoned here: their rows say `draining` or
        // `terminating`, and recovery at the next start finishes them.
        self.retiring.shutdown().await;
        self.set_status("stopped");
    }

    async fn load(&mut self) -> Option<GroupRecord> {
        let (tenant, name) = &self.key;
        match self.controller.store.get_group(tenant, name).await {
            Ok(Some(g)) => {
                let rebuild = self.engine.as_ref().is_none_or(|(spec, _)| spec != &g.spec);
                if rebuild && let Ok(capacity) = g.spec.capacity() {
                    let mut engine = PolicyEngine::new(&g.spec.policies, capacity, g.spec.cooldown);
                    self.remember(&g, &mut engine).await;
                    // What the policies learned comes from the engine an edit replaces,
                    // else (at start) from the store.
                    let carried = self.engine.as_ref().map(|(_, old)| old.learned());
                    let learned = match carried {
                        Some(learned) => learned,
                        None => self.stored_learned(&g).await,
                    };
                    engine.relearn(&learned);
                    let mut window =
                        MetricWindow::new(engine.lookback().max(Duration::from_secs(600)) * 2);
                    for sample in self.window.samples() {
                        window.push(*sample);
                    }
                    self.window = window;
                    self.engine = Some((g.spec.clone(), engine));
                }
                Some(g)
            }
            Ok(None) => None,
            Err(e) => {
                self.set_status(format!("store error: {e}"));
                None
            }
        }
    }

    /// Hands a new engine the group's stored load history, if a policy learns from it.
    /// Unreadable history is not fatal: the policies start with an empty memory.
    async fn remember(&mut self, group: &GroupRecord, engine: &mut PolicyEngine) {
        let metrics = engine.remembered_metrics();
        if metrics.is_empty() {
            return;
        }
        let since = self.controller.clock.now().sub(LOAD_HISTORY_KEPT);
        let store = &self.controller.store;
        match store
            .load_history(&group.tenant, &group.spec.name, since)
            .await
        {
            Ok(past) => engine.remember(&past),
            Err(e) => tracing::warn!(group = %group.spec.name, "load history: {e}"),
        }
    }

    /// What the group's policies learned before this worker started. Unreadable state
    /// is not fatal: the policies start from scratch.
    async fn stored_learned(&mut self, group: &GroupRecord) -> Vec<LearnedState> {
        let store = &self.controller.store;
        store
            .learned_states(&group.tenant, &group.spec.name)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(group = %group.spec.name, "learned state: {e}");
                Vec::new()
            })
    }

    /// Adds a group-level sample to the window, and to the load history when a policy
    /// learns from its metric.
    fn observe(&mut self, sample: MetricSample) {
        self.window.push(sample);
        let remembered = self
            .engine
            .as_ref()
            .is_some_and(|(_, e)| e.remembered_metrics().contains(&sample.metric));
        if remembered {
            let closed = self.summarizer.push(&sample);
            self.unsaved.extend(closed);
        }
    }

    /// Stores the load summaries closed since the last call with what the policies have
    /// learned by now (so every five minutes, and when the worker stops), and hourly drops
    /// summaries past [`LOAD_HISTORY_KEPT`]. Summaries the store refuses are kept for the
    /// next call, up to [`UNSAVED_KEPT`]; a refused learned state waits for the next save.
    async fn save_memory(&mut self, group: &GroupRecord) {
        if self.unsaved.is_empty() {
            return;
        }
        let store = &self.controller.store;
        let (tenant, name) = (&group.tenant, &group.spec.name);
        if let Err(e) = store.append_load_history(tenant, name, &self.unsaved).await {
            tracing::warn!(group = %name, "load history: {e}");
            let excess = self.unsaved.len().saturating_sub(UNSAVED_KEPT);
            self.unsaved.drain(..excess);
            return;
        }
        self.unsaved.clear();
        let now = self.controller.clock.now();
        let learned = self.engine.as_ref().map(|(_, e)| e.learned());
        if let Some(learned) = learned
            && let Err(e) = store.save_learned_states(tenant, name, &learned, now).await
        {
            tracing::warn!(group = %name, "learned state: {e}");
        }
        if self
            .history_pruned_at
            .is_none_or(|at| now.since(at) >= Duration::from_secs(3600))
        {
            self.history_pruned_at = Some(now);
            let before = now.sub(LOAD_HISTORY_KEPT);
            if let Err(e) = store
                .prune_load_history(&group.tenant, &group.spec.name, before)
                .await
            {
                tracing::warn!(group = %group.spec.name, "load history: {e}");
            }
        }
    }

    /// Keeps pushed readings: group-level ones go straight into the window, per-instance
    /// ones wait for the next sample tick, where they are averaged like provider readings.
    async fn take_pushed(&mut self, readings: Vec<PushedReading>) {
        let Some(group) = self.load().await else {
            return;
        };
        let running = self
            .controller
            .store
            .list_instances(&group.tenant, &group.spec.name, false)
            .await
            .map(|l| {
                l.iter()
                    .filter(|i| i.status == InstanceStatus::Running)
                    .count() as u32
            })
            .unwrap_or(0);
        for r in readings {
            match r.instance {
                Some(id) => {
                    if let Ok(mut latest) = self.controller.latest.write() {
                        let m = latest.entry(id.clone()).or_insert(InstanceMetrics {
                            cpu_percent: 0.0,
                            memory_mb: 0.0,
                        });
                        match r.metric {
                            Metric::Cpu => m.cpu_percent = r.value,
                            Metric::Memory => m.memory_mb = r.value,
                            _ => {}
                        }
                    }
                    self.pushed_instance.insert((r.metric, id), (r.value, r.at));
                }
                None => {
                    self.pushed_group.insert(r.metric, r.at);
                    self.observe(MetricSample {
                        at: r.at,
                        metric: r.metric,
                        value: r.value,
                        instances: running,
                    });
                }
            }
        }
        self.save_memory(&group).await;
    }

    /// Samples the running instances and feeds the group's window. Pushed readings
    /// take precedence over the provider's and the load balancer's for their metric
    /// while fresh (received within two metrics intervals).
    async fn collect(&mut self) {
        let Some(group) = self.load().await else {
            return;
        };
        let c = self.controller.clone();
        let Ok(instances) = c
            .store
            .list_instances(&group.tenant, &group.spec.name, false)
            .await
        else {
            return;
        };
        let running: Vec<&InstanceRecord> = instances
            .iter()
            .filter(|i| i.status == InstanceStatus::Running)
            .collect();
        let now = c.clock.now();
        let freshness = group.spec.metrics_interval.saturating_mul(2);
        let fresh = |at: Timestamp| now.since(at) <= freshness;
        self.pushed_instance.retain(|_, (_, at)| fresh(*at));
        self.pushed_group.retain(|_, at| fresh(*at));
        // Metrics a fresh push speaks for: the provider's readings of them are ignored.
        let mut pushed: HashSet<Metric> = self.pushed_group.keys().copied().collect();
        let per_instance: HashSet<Metric> = self.pushed_instance.keys().map(|(m, _)| *m).collect();
        for metric in per_instance {
            if pushed.contains(&metric) {
                continue;
            }
            pushed.insert(metric);
            let sample = average_sample(&running, group.spec.warmup, now, metric, |i| {
                self.pushed_instance
                    .get(&(metric, i.id.clone()))
                    .map(|(value, _)| *value)
            });
            if let Some(sample) = sample {
                self.observe(sample);
            }
        }
        // Each provider measures its own instances.
        let mut readings = Vec::new();
        for name in group.spec.providers() {
            let Some(provider) = c.provider(&group.tenant, name) else {
                continue;
            };
            let ids: Vec<InstanceId> = running
                .iter()
                .filter(|i| i.provider == name)
                .map(|i| i.id.clone())
                .collect();
            if ids.is_empty() {
                continue;
            }
            match provider.metrics(&ids).await {
                Ok(r) => readings.extend(r),
                Err(e) => tracing::debug!(group = %group.spec.name, "provider metrics: {e}"),
            }
        }
        let ssh = ssh_source(&group.spec);
        let claimed: HashSet<Metric> = group
            .spec
            .metric_sources
            .iter()
            .flat_map(|s| s.metrics())
            .collect();
        if let Ok(mut latest) = c.latest.write() {
            for (id, m) in &readings {
                let mut m = *m;
                // An `ssh` source's CPU reading stands until its next round.
                if ssh.is_some()
                    && let Some(old) = latest.get(id)
                {
                    m.cpu_percent = old.cpu_percent;
                }
                latest.insert(id.clone(), m);
            }
        }
        let by_id: HashMap<&InstanceId, &InstanceMetrics> =
            readings.iter().map(|(id, m)| (id, m)).collect();
        for (metric, pick) in [
            (
                Metric::Cpu,
                (|m: &InstanceMetrics| m.cpu_percent) as fn(&InstanceMetrics) -> f64,
            ),
            (Metric::Memory, |m| m.memory_mb),
        ] {
            // A metric source speaks for its metrics (its rounds feed the window).
            if pushed.contains(&metric) || claimed.contains(&metric) {
                continue;
            }
            let sample = average_sample(&running, group.spec.warmup, now, metric, |i| {
                by_id.get(&i.id).map(|m| pick(m))
            });
            if let Some(sample) = sample {
                self.observe(sample);
            }
        }
        if group.spec.metric_sources.is_empty() {
            self.source_problem = None;
        } else {
            self.start_source_round(&group, ssh, &running);
        }
        // The load balancer's traffic, as scaling metrics.
        if let Some(lb) = self.lb() {
            let t = lb.traffic();
            let per_instance = t.request_rate / running.len().max(1) as f64;
            let mut values = vec![
                (Metric::RequestRate, t.request_rate),
                (Metric::RequestRatePerInstance, per_instance),
                (Metric::InFlight, t.in_flight as f64),
                (Metric::ErrorRate, t.error_ratio * 100.0),
            ];
            if let Some(p99) = t.latency_p99 {
                values.push((Metric::LatencyP99, p99.as_secs_f64() * 1000.0));
            }
            for (metric, value) in values {
                if pushed.contains(&metric) || claimed.contains(&metric) {
                    continue;
                }
                self.observe(MetricSample {
                    at: now,
                    metric,
                    value,
                    instances: running.len() as u32,
                });
            }
        }
        c.options
            .metric_history
            .record(&group, now, &instances, &self.window, &c.latest);
        self.save_memory(&group).await;
    }

    /// Starts a round of the metric sources, unless the last one is still under way:
    /// the `ssh` source's reads of the running instances (at most
    /// [`SSH_READS_AT_ONCE`] at a time) and the `prometheus` queries, each bounded by
    /// its source's timeout, all off the worker's loop; the round reports back as
    /// [`WorkerInput::SourceRound`].
    fn start_source_round(
        &mut self,
        group: &GroupRecord,
        ssh: Option<SshSourceSpec>,
        running: &[&InstanceRecord],
    ) {
        if self.source_round.as_ref().is_some_and(|r| !r.is_finished()) {
            return;
        }
        // The key is a name in the tenant's own key directory (validation refuses a
        // path), so no group can make the server use another tenant's file.
        let ssh = ssh.map(|mut s| {
            let key = self.ssh_keys_dir(group).join(&s.private_key_file);
            s.private_key_file = key.display().to_string();
            s
        });
        let queries: Vec<swell_core::PrometheusSourceSpec> = group
            .spec
            .metric_sources
            .iter()
            .filter_map(|s| match s {
                MetricSourceSpec::Prometheus(p) => Some(p.clone()),
                MetricSourceSpec::Ssh(_) => None,
            })
            .collect();
        let (tenant, name) = (group.tenant.to_string(), group.spec.name.clone());
        let client = self.prometheus.clone();
        let dir = self.known_hosts_dir(group);
        let targets: Vec<(InstanceId, Option<String>)> = match ssh {
            Some(_) => running
                .iter()
                .map(|i| {
                    let host = i.address.as_deref().and_then(swell_providers::ssh::host_of);
                    (i.id.clone(), host)
                })
                .collect(),
            None => Vec::new(),
        };
        if targets.is_empty() && queries.is_empty() {
            return;
        }
        let source = ssh.unwrap_or_else(|| SshSourceSpec {
            user: String::new(),
            port: 22,
            private_key_file: String::new(),
            command: String::new(),
            timeout: Duration::ZERO,
        });
        let tx = self.tx.clone();
        let cancel = self.controller.cancel.clone();
        self.source_round = Some(tokio::spawn(tracing::Instrument::in_current_span(
            async move {
                let source = Arc::new(source);
                let limit = Arc::new(tokio::sync::Semaphore::new(SSH_READS_AT_ONCE));
                let mut reads = JoinSet::new();
                for (id, host) in targets {
                    let (source, limit, dir) = (source.clone(), limit.clone(), dir.clone());
                    reads.spawn(async move {
                        let Some(host) = host else {
                            return (id, Err("the instance has no IP address".to_string()));
                        };
                        let Ok(_permit) = limit.acquire_owned().await else {
                            return (id, Err("stopped".to_string()));
                        };
                        if let Err(e) = std::fs::create_dir_all(&dir) {
                            return (id, Err(format!("{}: {e}", dir.display())));
                        }
                        let known = dir.join(id.as_str());
                        let read = swell_providers::ssh::read_top(&source, &host, &known).await;
                        (id, read.map_err(|e| e.to_string()))
                    });
                }
                let mut values = JoinSet::new();
                for q in queries {
                    let (client, tenant, name) = (client.clone(), tenant.clone(), name.clone());
                    values.spawn(async move {
                        let value = client.query(&q, &tenant, &name).await;
                        (q.metric, value.map_err(|e| e.to_string()))
                    });
                }
                let mut round = SourceRound {
                    reads: Vec::new(),
                    values: Vec::new(),
                };
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        next = values.join_next() => match next {
                            Some(Ok(value)) => round.values.push(value),
                            Some(Err(_)) => {}
                            None => break,
                        },
                    }
                }
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        next = reads.join_next() => match next {
                            Some(Ok(read)) => round.reads.push(read),
                            Some(Err(_)) => {}
                            None => break,
                        },
                    }
                }
                // Waits for room in the queue: a round is one per group at a time.
                let _ = tx.send(WorkerInput::SourceRound(round)).await;
            },
        )));
    }

    /// The tenant's directory of SSH private keys: `<ssh_keys_dir>/<tenant>/`.
    fn ssh_keys_dir(&self, group: &GroupRecord) -> std::path::PathBuf {
        self.controller
            .options
            .ssh_keys_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("swell-ssh-keys"))
            .join(group.tenant.as_str())
    }

    /// Where the `ssh` source keeps the group's known_hosts files, one per instance:
    /// `<known_hosts_dir>/<tenant>/<group>/`.
    fn known_hosts_dir(&self, group: &GroupRecord) -> std::path::PathBuf {
        self.controller
            .options
            .known_hosts_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("swell-known_hosts"))
            .join(group.tenant.as_str())
            .join(&group.spec.name)
    }

    /// Removes the known_hosts files of the group's instances that are gone.
    fn sweep_known_hosts(&self, group: &GroupRecord, live: &[InstanceRecord]) {
        let Ok(entries) = std::fs::read_dir(self.known_hosts_dir(group)) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !live.iter().any(|i| name == i.id.as_str()) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Feeds a finished round into the window: each `prometheus` value as the group's
    /// sample of its metric, and the `ssh` reads' `cpu` and `steal` averaged over the
    /// instances it read that are still running and out of warmup, unless a fresh push
    /// speaks for the metric. Failed reads are shown in the worker's status.
    async fn take_source_round(&mut self, round: SourceRound) {
        let Some(group) = self.load().await else {
            return;
        };
        let failed: Vec<String> = round
            .reads
            .iter()
            .filter_map(|(id, r)| r.as_ref().err().map(|e| format!("{id}: {e}")))
            .collect();
        let mut problems: Vec<String> = Vec::new();
        if !failed.is_empty() {
            problems.push(format!(
                "ssh: {} of {} instances unreadable ({})",
                failed.len(),
                round.reads.len(),
                failed.join("; ")
            ));
        }
        for (metric, value) in &round.values {
            if let Err(e) = value {
                problems.push(format!("prometheus ({metric}): {e}"));
            }
        }
        let problem = (!problems.is_empty()).then(|| problems.join("; "));
        if problem != self.source_problem {
            match &problem {
                Some(p) => tracing::warn!(group = %group.spec.name, "metric source {p}"),
                None => {
                    tracing::info!(group = %group.spec.name, "metric sources: all reads succeed again")
                }
            }
        }
        self.source_problem = problem;
        let status = self.status.lock().map(|s| s.clone()).unwrap_or_default();
        let base = status
            .split("; metric source: ")
            .next()
            .unwrap_or("")
            .to_string();
        self.set_status(base);
        let ok: HashMap<&InstanceId, TopCpu> = round
            .reads
            .iter()
            .filter_map(|(id, r)| r.as_ref().ok().map(|t| (id, *t)))
            .collect();
        if let Ok(mut latest) = self.controller.latest.write() {
            for (id, t) in &ok {
                let m = latest.entry((*id).clone()).or_insert(InstanceMetrics {
                    cpu_percent: 0.0,
                    memory_mb: 0.0,
                });
                m.cpu_percent = t.cpu;
            }
        }
        let c = self.controller.clone();
        let Ok(instances) = c
            .store
            .list_instances(&group.tenant, &group.spec.name, false)
            .await
        else {
            return;
        };
        if !round.reads.is_empty() {
            self.sweep_known_hosts(&group, &instances);
        }
        let running: Vec<&InstanceRecord> = instances
            .iter()
            .filter(|i| i.status == InstanceStatus::Running)
            .collect();
        let now = c.clock.now();
        let freshness = group.spec.metrics_interval.saturating_mul(2);
        for (metric, pick) in [
            (
                Metric::Cpu,
                (|t: &TopCpu| Some(t.cpu)) as fn(&TopCpu) -> Option<f64>,
            ),
            (Metric::Steal, |t| t.steal),
        ] {
            let pushed_fresh = self
                .pushed_group
                .get(&metric)
                .is_some_and(|at| now.since(*at) <= freshness)
                || self
                    .pushed_instance
                    .iter()
                    .any(|((m, _), (_, at))| *m == metric && now.since(*at) <= freshness);
            if pushed_fresh {
                continue;
            }
            let sample = average_sample(&running, group.spec.warmup, now, metric, |i| {
                ok.get(&i.id).and_then(pick)
            });
            if let Some(sample) = sample {
                self.observe(sample);
            }
        }
        for (metric, value) in round.values {
            let Ok(value) = value else {
                continue;
            };
            if self
                .pushed_group
                .get(&metric)
                .is_some_and(|at| now.since(*at) <= freshness)
            {
                continue;
            }
            self.observe(MetricSample {
                at: now,
                metric,
                value,
                instances: running.len() as u32,
            });
        }
        self.save_memory(&group).await;
    }

    /// Asks the policies for a desired capacity and stores it with its cause.
    async fn evaluate(&mut self) {
        let Some(group) = self.load().await else {
            return;
        };
        if group.deleting {
            return;
        }
        let c = self.controller.clone();
        let Ok(instances) = c
            .store
            .list_instances(&group.tenant, &group.spec.name, false)
            .await
        else {
            return;
        };
        let now = c.clock.now();
        let provisioned = instances
            .iter()
            .filter(|i| matches!(i.status, InstanceStatus::Pending | InstanceStatus::Running))
            .count() as u32;
        let ready = instances
            .iter()
            .filter(|i| {
                i.status == InstanceStatus::Running
                    && i.started_at
                        .is_some_and(|s| now.since(s) >= group.spec.warmup)
            })
            .count() as u32;
        let state = GroupState {
            desired_capacity: group.desired_capacity,
            provisioned,
            ready,
            last_scaling_at: group.last_scaling_at,
        };
        let Some((_, engine)) = self.engine.as_mut() else {
            return;
        };
        let decision = engine.decide(&state, &self.window, now);
        let kind = match decision.kind {
            DecisionKind::Idle => {
                self.set_status(format!(
                    "idle at {}: {}",
                    group.desired_capacity, decision.cause.reason
                ));
                return;
            }
            DecisionKind::ScaleOut => EventKind::ScaleOut,
            DecisionKind::ScaleIn => EventKind::ScaleIn,
        };
        let message = format!(
            "{} {} → {}: {}",
            kind, decision.cause.before, decision.cause.after, decision.cause.reason
        );
        self.set_status(message.clone());
        let event = NewEvent {
            tenant: group.tenant.clone(),
            group: group.spec.name.clone(),
            at: now,
            kind,
            instance_id: None,
            cause: Some(decision.cause.clone()),
            message,
        };
        if let Err(e) = c
            .store
            .set_desired_capacity(
                &group.tenant,
                &group.spec.name,
                decision.desired_capacity,
                Some(now),
                event,
            )
            .await
        {
            self.set_status(format!("store error: {e}"));
        }
    }

    /// Converges the instances to the desired capacity. Returns true when the group is
    /// gone (deleted) and the worker should stop.
    async fn reconcile(&mut self) -> bool {
        let Some(group) = self.load().await else {
            return true;
        };
        let c = self.controller.clone();
        // The group's providers by priority (the ones this server has configured).
        let providers: Vec<Arc<dyn Provider>> = group
            .spec
            .providers()
            .filter_map(|n| c.provider(&group.tenant, n))
            .collect();
        if providers.is_empty() {
            self.set_status(format!("unknown provider {}", group.spec.provider));
            return false;
        }
        let (tenant, name) = (group.tenant.clone(), group.spec.name.clone());
        let Ok(mut instances) = c.store.list_instances(&tenant, &name, false).await else {
            return false;
        };

        // Instances their provider no longer runs are failed (and replaced below).
        let mut lost = false;
        for provider in &providers {
            let Ok(observed) = provider.list().await else {
                continue;
            };
            self.sweep_leftovers(&group, provider.as_ref(), &observed)
                .await;
            let alive: HashSet<InstanceId> = observed
                .into_iter()
                .filter(|p| p.state != ObservedState::Exited)
                .map(|p| p.instance_id)
                .collect();
            for inst in instances.iter().filter(|i| {
                i.provider == provider.name()
                    && matches!(i.status, InstanceStatus::Running | InstanceStatus::Paused)
            }) {
                if !alive.contains(&inst.id) {
                    lost = true;
                    let event = c.event(
                        &tenant,
                        &name,
                        EventKind::InstanceFailed,
                        Some(&inst.id),
                        format!(
                            "instance {} exited unexpectedly; it will be replaced",
                            inst.id
                        ),
                    );
                    let _ = c
                        .store
                        .update_instance(
                            &tenant,
                            &inst.id,
                            InstanceStatus::Failed,
                            reason("exited unexpectedly"),
                            c.clock.now(),
                            Some(event),
                        )
                        .await;
                    // What is left of it (an exited container, a tenant network) goes too.
                    if let Err(e) = provider.delete(&inst.id, STOP_GRACE).await {
                        tracing::warn!(instance = %inst.id, "cleaning up a dead instance: {e}");
                    }
                }
            }
        }
        match c.store.list_instances(&tenant, &name, false).await {
            Ok(list) => instances = list,
            Err(_) => return false,
        }
        if lost {
            // Out of the load balancer now, not after their replacements are created.
            self.update_lb(&tenant, &name).await;
        }

        if self.replace_unhealthy(&group, &instances).await {
            match c.store.list_instances(&tenant, &name, false).await {
                Ok(list) => instances = list,
                Err(_) => return false,
            }
        }

        let target = if group.deleting {
            0
        } else {
            group.desired_capacity
        };
        let counted: Vec<&InstanceRecord> = instances
            .iter()
            .filter(|i| i.status.counts_toward_capacity())
            .collect();
        let mut have = counted.len() as u32;
        let mut permanent = counted
            .iter()
            .filter(|i| i.lifecycle == Lifecycle::Permanent)
            .count() as u32;
        if have < target {
            let draining: Vec<&InstanceRecord> = instances
                .iter()
                .filter(|i| i.status == InstanceStatus::Draining)
                .collect();
            for inst in draining {
                if have < target && self.reuse_draining(&group, &inst.id).await {
                    have += 1;
                    permanent += u32::from(inst.lifecycle == Lifecycle::Permanent);
                }
            }
        }
        let target = if have < target {
            self.quota_cap(&group, &providers, have, target).await
        } else {
            target
        };
        let mut rooms = Vec::new();
        let target = if have < target {
            let (allowed, r) = self.provider_rooms(&group, &providers, have, target).await;
            rooms = r;
            allowed
        } else {
            target
        };
        if have < target {
            for _ in have..target {
                let now = c.clock.now();
                let Some(i) = self.pick_provider(&providers, &rooms, now) else {
                    // Every provider with room failed recently: the next attempt waits
                    // (out of quota, no host, down) instead of asking at every tick.
                    if let Some(b) = providers
                        .iter()
                        .filter_map(|p| self.backoff.get(p.name()))
                        .filter(|b| now < b.until)
                        .min_by_key(|b| b.until)
                    {
                        self.set_status(format!(
                            "next create in {}s ({} failed in a row; {have} → {target})",
                            b.until.since(now).as_secs().max(1),
                            b.failures
                        ));
                    }
                    break;
                };
                let lifecycle = if permanent < group.spec.min {
                    Lifecycle::Permanent
                } else {
                    Lifecycle::ScaledUp
                };
                self.set_status(format!("creating instance ({have} → {target})"));
                match self
                    .create_one(&group, providers[i].as_ref(), lifecycle)
                    .await
                {
                    Ok(true) => {
                        permanent += u32::from(lifecycle == Lifecycle::Permanent);
                        rooms[i] = rooms[i].saturating_sub(1);
                    }
                    // Failed: that provider backs off; the next one may be tried.
                    Ok(false) => {}
                    Err(e) => {
                        self.set_status(format!("store error: {e}"));
                        break;
                    }
                }
            }
        } else if have > target {
            let mut victims: Vec<&InstanceRecord> =
                counted.iter().copied().filter(|i| !i.protected).collect();
            // The least-preferred provider's first (DESIGN.md "Placement"), then
            // scaled-up before permanent, newest first (seed 1's ScaledUpOrder).
            let priority = |p: &str| {
                group
                    .spec
                    .providers()
                    .position(|q| q == p)
                    .unwrap_or(usize::MAX)
            };
            victims.sort_by_key(|i| {
                (
                    std::cmp::Reverse(priority(&i.provider)),
                    i.lifecycle == Lifecycle::Permanent,
                    std::cmp::Reverse(i.created_order),
                )
            });
            for inst in victims.into_iter().take((have - target) as usize) {
                self.start_retire(&group, inst).await;
            }
        }
        // Retirements interrupted by a reload of this worker are picked up again.
        for inst in instances.iter().filter(|i| {
            matches!(
                i.status,
                InstanceStatus::Draining | InstanceStatus::Terminating
            )
        }) {
            if !self.retiring_ids.contains_key(&inst.id)
                && let Some(provider) = c.provider(&inst.tenant, &inst.provider)
            {
                self.spawn_retire(&group, inst.id.clone(), provider);
            }
        }
        self.update_lb(&tenant, &name).await;

        if group.deleting && self.retiring.is_empty() {
            let remaining = c
                .store
                .list_instances(&tenant, &name, false)
                .await
                .map(|l| l.len())
                .unwrap_or(1);
            if remaining == 0 {
                // What the providers keep for the whole group (OpenStack: its security
                // group) goes with it; before the record, so that no group of the same
                // name can be created and use it meanwhile. A failure leaves it behind
                // (logged, with what to remove) rather than keep a deleted group alive.
                for provider in &providers {
                    if let Err(e) = provider.group_deleted(&tenant, &name).await {
                        tracing::warn!(
                            group = %name,
                            "provider {}: cleaning up after the group: {e}",
                            provider.name()
                        );
                    }
                }
                if let Err(e) = c.store.delete_group(&tenant, &name).await {
                    self.set_status(format!("store error: {e}"));
                    return false;
                }
                if let Some(lb) = self.lb() {
                    lb.shutdown().await;
                }
                if let Ok(mut w) = c.workers.lock() {
                    w.remove(&self.key);
                }
                return true;
            }
        }
        let n = instances
            .iter()
            .filter(|i| i.status == InstanceStatus::Running)
            .count();
        if !group.deleting {
            let current = self.status.lock().map(|s| s.clone()).unwrap_or_default();
            if current.starts_with("creating") || current == "starting" {
                self.set_status(format!("{n} running, desired {}", group.desired_capacity));
            }
        }
        false
    }

    /// Creates one instance behind a durable intent. `Ok(false)` when the create
    /// failed: the instance is recorded as failed and the backoff is armed.
    async fn create_one(
        &mut self,
        group: &GroupRecord,
        provider: &dyn Provider,
        lifecycle: Lifecycle,
    ) -> Result<bool, StoreError> {
        let c = self.controller.clone();
        let now = c.clock.now();
        let id = InstanceId(uuid::Uuid::now_v7().to_string());
        let intent = InstanceRecord {
            id: id.clone(),
            tenant: group.tenant.clone(),
            group: group.spec.name.clone(),
            status: InstanceStatus::Pending,
            lifecycle,
            created_order: 0,
            provider: provider.name().to_string(),
            host: None,
            address: None,
            native_id: None,
            protected: false,
            status_reason: None,
            created_at: now,
            started_at: None,
            updated_at: now,
        };
        c.store.create_instance(&intent, None).await?;
        let request = CreateRequest {
            instance_id: id.clone(),
            tenant: group.tenant.clone(),
            group: group.spec.name.clone(),
            template: group.spec.template.clone(),
        };
        let outcome = match provider.create(&request).await {
            // Only instances that serve traffic through a load balancer must accept
            // connections before they count as running.
            Ok(p) => match p.address.filter(|_| group.spec.load_balancer.is_some()) {
                Some(addr) => match wait_ready(addr, readiness_path(&group.spec)).await {
                    Ok(()) => Ok(p),
                    Err(e) => Err(format!("not ready: {e}")),
                },
                None => Ok(p),
            },
            Err(e) => Err(describe_create_failure(&e)),
        };
        let (tenant, name) = (&group.tenant, &group.spec.name);
        match outcome {
            Ok(p) => {
                let update = InstanceUpdate {
                    host: Some(p.host.clone()),
                    address: p.address.map(|a| a.to_string()),
                    native_id: Some(p.native_id.clone()),
                    started_at: Some(c.clock.now()),
                    ..InstanceUpdate::default()
                };
                let msg = format!(
                    "created instance {id} ({}) at {}",
                    lifecycle.as_str(),
                    p.address
                        .map(|a| a.to_string())
                        .unwrap_or_else(|| "-".into())
                );
                let event = c.event(tenant, name, EventKind::InstanceCreated, Some(&id), msg);
                c.store
                    .update_instance(
                        tenant,
                        &id,
                        InstanceStatus::Running,
                        update,
                        c.clock.now(),
                        Some(event),
                    )
                    .await?;
                self.backoff.remove(provider.name());
                self.update_lb(tenant, name).await;
                Ok(true)
            }
            Err(e) => {
                // Whatever the failed create left (an ERROR server, a floating IP, a
                // half-made container) goes; a leftover the delete misses is swept by
                // a later pass.
                if let Err(err) = provider.delete(&id, STOP_GRACE).await {
                    tracing::warn!(instance = %id, "cleaning up a failed create: {err}");
                }
                let failures = self.backoff.get(provider.name()).map_or(0, |b| b.failures) + 1;
                let delay = backoff_delay(failures);
                self.backoff.insert(
                    provider.name().to_string(),
                    CreateBackoff {
                        failures,
                        until: c.clock.now().add(delay),
                    },
                );
                let event = c.event(
                    tenant,
                    name,
                    EventKind::InstanceFailed,
                    Some(&id),
                    format!(
                        "could not create instance {id} on {}: {e}; next attempt in {}s ({failures} failed in a row)",
                        provider.name(),
                        delay.as_secs()
                    ),
                );
                c.store
                    .update_instance(
                        tenant,
                        &id,
                        InstanceStatus::Failed,
                        reason(&e),
                        c.clock.now(),
                        Some(event),
                    )
                    .await?;
                Ok(false)
            }
        }
    }

    /// Deletes what the provider still has of this group's instances that are failed
    /// or unknown to the store: the remains of a create whose cleanup failed (an ERROR
    /// server, a server that was still building when its create timed out). One event
    /// per instance removed.
    async fn sweep_leftovers(
        &mut self,
        group: &GroupRecord,
        provider: &dyn Provider,
        observed: &[ProviderInstance],
    ) {
        let c = self.controller.clone();
        let (tenant, name) = (&group.tenant, &group.spec.name);
        let mine: Vec<&ProviderInstance> = observed
            .iter()
            .filter(|p| p.tenant == tenant.as_str() && &p.group == name)
            .filter(|p| !self.swept.contains(&p.instance_id))
            .collect();
        if mine.is_empty() {
            return;
        }
        let Ok(records) = c.store.list_instances(tenant, name, true).await else {
            return;
        };
        for p in mine {
            let leftover = match records.iter().find(|r| r.id == p.instance_id) {
                Some(r) => r.status == InstanceStatus::Failed,
                // Creates of this group run in this worker, after the intent is stored:
                // a server without any record is an orphan.
                None => true,
            };
            if !leftover {
                continue;
            }
            let id = &p.instance_id;
            match provider.delete(id, STOP_GRACE).await {
                Ok(()) => {
                    self.swept.insert(id.clone());
                    let event = c.event(
                        tenant,
                        name,
                        EventKind::InstanceTerminated,
                        Some(id),
                        format!(
                            "removed what was left of failed instance {id} at the provider ({})",
                            p.native_id
                        ),
                    );
                    if let Err(e) = c.store.append_event(event).await {
                        self.set_status(format!("store error: {e}"));
                    }
                }
                Err(e) => {
                    tracing::warn!(instance = %id, "removing a leftover: {e}; will retry");
                }
            }
        }
    }

    /// The room each provider has (its [`Provider::capacity`], e.g. the project's Nova
    /// limits), in instances of the size the provider reports
    /// ([`Provider::instance_size`]: an OpenStack flavor's vCPUs and RAM, else the
    /// template's `vcpus` and `memory_mb`), and the largest count up to `target` they
    /// allow together; records a `provider_capped` event, naming the room and the size,
    /// when that cuts a scale-out (once per cut target). An unknown capacity is
    /// unlimited; an unknown size leaves only the instance count.
    async fn provider_rooms(
        &mut self,
        group: &GroupRecord,
        providers: &[Arc<dyn Provider>],
        have: u32,
        target: u32,
    ) -> (u32, Vec<u64>) {
        let t = &group.spec.template;
        let mut rooms = Vec::with_capacity(providers.len());
        let mut said = Vec::new();
        for provider in providers {
            let cap = match provider.capacity().await {
                Ok(Some(cap)) => cap,
                Ok(None) => {
                    rooms.push(u64::MAX);
                    continue;
                }
                Err(e) => {
                    // The create itself will report what is wrong; no cap on a guess.
                    tracing::warn!(group = %group.spec.name, "provider capacity: {e}");
                    rooms.push(u64::MAX);
                    continue;
                }
            };
            // The size is the provider's (an OpenStack flavor), not the template's
            // numbers, which are often left at their defaults; only asked when there
            // is a vCPU or memory room to divide.
            let size = if cap.vcpus.is_some() || cap.memory_mb.is_some() {
                match provider.instance_size(t).await {
                    Ok(size) => size,
                    Err(e) => {
                        // As for capacity: the create will say what is wrong; count
                        // instances only rather than divide by a guess.
                        tracing::warn!(group = %group.spec.name, "provider instance size: {e}");
                        None
                    }
                }
            } else {
                None
            };
            let mut room = u64::MAX;
            if let Some(n) = cap.instances {
                room = room.min(u64::from(n));
            }
            if let (Some(v), Some(size)) = (cap.vcpus, size)
                && size.vcpus > 0
            {
                room = room.min((v.max(0.0) / f64::from(size.vcpus)).floor() as u64);
            }
            if let (Some(m), Some(size)) = (cap.memory_mb, size)
                && size.memory_mb > 0
            {
                room = room.min(m / size.memory_mb);
            }
            let show = |v: Option<String>| v.unwrap_or_else(|| "unlimited".into());
            let mut left = format!(
                "{} instances, {} vcpus, {} MiB",
                show(cap.instances.map(|n| n.to_string())),
                show(cap.vcpus.map(|v| format!("{v:.1}"))),
                show(cap.memory_mb.map(|m| m.to_string())),
            );
            match size {
                Some(s) => left.push_str(&format!(
                    "; one instance needs {} vcpus, {} MiB",
                    s.vcpus, s.memory_mb
                )),
                None if cap.vcpus.is_some() || cap.memory_mb.is_some() => {
                    left.push_str("; instance size unknown, only the count caps")
                }
                None => {}
            }
            said.push((provider.name(), left));
            rooms.push(room);
        }
        let total = rooms.iter().fold(0u64, |a, r| a.saturating_add(*r));
        let allowed = have
            .saturating_add(u32::try_from(total).unwrap_or(u32::MAX))
            .min(target);
        if allowed < target && self.provider_capped_at != Some(target) {
            self.provider_capped_at = Some(target);
            let names: Vec<&str> = providers.iter().map(|p| p.name()).collect();
            let left = match said.as_slice() {
                [(_, one)] => one.clone(),
                many => many
                    .iter()
                    .map(|(name, left)| format!("{name}: {left}"))
                    .collect::<Vec<_>>()
                    .join(" | "),
            };
            let event = self.controller.event(
                &group.tenant,
                &group.spec.name,
                EventKind::ProviderCapped,
                None,
                format!(
                    "scale-out to {target} capped at {allowed}: provider {} has no room for more (left: {left})",
                    names.join(", "),
                ),
            );
            if let Err(e) = self.controller.store.append_event(event).await {
                self.set_status(format!("store error: {e}"));
            }
        } else if allowed == target {
            self.provider_capped_at = None;
        }
        (allowed, rooms)
    }

    /// The provider the next create goes to, by priority: one without room is skipped;
    /// one that failed recently is waited for — unless it failed [`YIELD_AFTER`]
    /// creates in a row, then it yields to the next until its backoff has passed (and
    /// is tried first again after). `None`: wait.
    fn pick_provider(
        &self,
        providers: &[Arc<dyn Provider>],
        rooms: &[u64],
        now: Timestamp,
    ) -> Option<usize> {
        for (i, provider) in providers.iter().enumerate() {
            if rooms.get(i).is_none_or(|r| *r == 0) {
                continue;
            }
            match self.backoff.get(provider.name()) {
                Some(b) if now < b.until && b.failures >= YIELD_AFTER => continue,
                Some(b) if now < b.until => return None,
                _ => return Some(i),
            }
        }
        None
    }

    /// Takes an instance out of the load balancer (status `draining`) and retires it in
    /// the background.
    async fn start_retire(&mut self, group: &GroupRecord, inst: &InstanceRecord) {
        let c = self.controller.clone();
        let Some(provider) = c.provider(&inst.tenant, &inst.provider) else {
            return;
        };
        let msg = format!(
            "draining instance {} (up to {:?})",
            inst.id, group.spec.drain_timeout
        );
        let event = c.event(
            &group.tenant,
            &group.spec.name,
            EventKind::InstanceDraining,
            Some(&inst.id),
            msg,
        );
        if c.store
            .update_instance(
                &group.tenant,
                &inst.id,
                InstanceStatus::Draining,
                InstanceUpdate::default(),
                c.clock.now(),
                Some(event),
            )
            .await
            .is_err()
        {
            return;
        }
        self.spawn_retire(group, inst.id.clone(), provider);
    }

    fn spawn_retire(&mut self, group: &GroupRecord, id: InstanceId, provider: Arc<dyn Provider>) {
        if self.retiring_ids.contains_key(&id) {
            return;
        }
        let retirement = Retirement::default();
        self.retiring_ids.insert(id.clone(), retirement.clone());
        let c = self.controller.clone();
        let lb = self.lb();
        let (tenant, name, drain_timeout) = (
            group.tenant.clone(),
            group.spec.name.clone(),
            group.spec.drain_timeout,
        );
        self.retiring
            .spawn(tracing::Instrument::in_current_span(async move {
                if let Some(lb) = lb {
                    tokio::select! {
                        outcome = lb.drain(id.as_str(), drain_timeout) => {
                            tracing::info!(instance = %id, ?outcome, "drained");
                        }
                        _ = retirement.cancel.cancelled() => {}
                    }
                }
                if !retirement.commit() {
                    // A scale-out took the instance back before its deletion began.
                    return id;
                }
                // Then out of the provider's own load balancer (an Octavia pool), drained
                // there too; a failure there does not keep the instance alive: the delete
                // removes the membership with the server.
                if let Err(e) = provider.drain(&id, drain_timeout).await {
                    tracing::warn!(instance = %id, "provider drain: {e}");
                    let event = c.event(
                        &tenant,
                        &name,
                        EventKind::ProviderError,
                        Some(&id),
                        format!(
                            "cannot drain instance {id} at the provider: {e}; deleting it anyway"
                        ),
                    );
                    let _ = c.store.append_event(event).await;
                }
                let result = async {
                    c.store
                        .update_instance(
                            &tenant,
                            &id,
                            InstanceStatus::Terminating,
                            InstanceUpdate::default(),
                            c.clock.now(),
                            None,
                        )
                        .await?;
                    let (status, kind, msg) = match provider.delete(&id, STOP_GRACE).await {
                        Ok(()) => (
                            InstanceStatus::Terminated,
                            EventKind::InstanceTerminated,
                            format!("terminated instance {id}"),
                        ),
                        Err(e) => (
                            InstanceStatus::Terminating,
                            EventKind::ProviderError,
                            format!("cannot delete instance {id}: {e}; will retry"),
                        ),
                    };
                    let event = c.event(&tenant, &name, kind, Some(&id), msg);
                    c.store
                        .update_instance(
                            &tenant,
                            &id,
                            status,
                            InstanceUpdate::default(),
                            c.clock.now(),
                            Some(event),
                        )
                        .await?;
                    Ok::<_, StoreError>(())
                }
                .await;
                if let Err(e) = result {
                    tracing::error!(instance = %id, "retire: {e}");
                }
                id
            }));
    }

    /// The largest count up to `target` the tenant's quota allows this group, given
    /// every live instance of the tenant, each counted at the size its provider gives
    /// it ([`Provider::instance_size`]: an OpenStack flavor's vCPUs and RAM, else the
    /// template's), and the group's new instances at the largest size among
    /// `providers`; records a `quota_capped` event when it cuts a scale-out (once per
    /// cut target). A size that cannot be read and that the template does not give
    /// either holds a vCPU or memory quota at the instances there are (see
    /// [`QuotaSize`]).
    async fn quota_cap(
        &mut self,
        group: &GroupRecord,
        providers: &[Arc<dyn Provider>],
        have: u32,
        target: u32,
    ) -> u32 {
        let c = self.controller.clone();
        let quota = match c.store.get_quota(&group.tenant).await {
            Ok(q) => q,
            Err(StoreError::NotFound { .. }) => return target,
            Err(e) => {
                self.set_status(format!("store error: {e}"));
                return have;
            }
        };
        if quota.max_instances.is_none()
            && quota.max_vcpus.is_none()
            && quota.max_memory_mb.is_none()
        {
            return target;
        }
        let (Ok(groups), Ok(live)) = (
            c.store.list_groups(&group.tenant).await,
            c.store.list_live_instances().await,
        ) else {
            return have;
        };
        // Sizes are only asked for when a vCPU or memory limit needs them; each
        // (group, provider) pair once per pass. Nothing is kept across passes: the
        // provider caches what is worth caching (OpenStack: the flavor).
        let sized = quota.max_vcpus.is_some() || quota.max_memory_mb.is_some();
        let mut sizes: HashMap<(&str, &str), QuotaSize> = HashMap::new();
        let (mut instances, mut used) = (0u64, QuotaSize::ZERO);
        for inst in live
            .iter()
            .filter(|i| i.tenant == group.tenant && i.status.counts_toward_capacity())
        {
            instances += 1;
            if !sized {
                continue;
            }
            // A live instance keeps its group's record until it is gone (a deleted
            // group's record waits for its last instance), so a miss is a race with
            // the deletion: the instance counts by number only, as it always did.
            let Some(g) = groups.iter().find(|g| g.spec.name == inst.group) else {
                continue;
            };
            let key = (inst.group.as_str(), inst.provider.as_str());
            let size = match sizes.get(&key) {
                Some(size) => *size,
                None => {
                    let provider = c.provider(&inst.tenant, &inst.provider);
                    let size = QuotaSize::of(
                        provider.as_deref(),
                        &inst.provider,
                        &g.spec.template,
                        &g.spec.name,
                    )
                    .await;
                    sizes.insert(key, size);
                    size
                }
            };
            used = used.plus(size);
        }
        // A new instance goes to the first of the group's providers, by priority, that
        // has room and is not backing off — decided after this cap, and it can change
        // from one create to the next. Counting each new one at the largest size among
        // them can never let a create exceed the quota; at worst, when a smaller
        // provider takes the create, the group stops a little short of it.
        let mut each = QuotaSize::ZERO;
        if sized {
            for provider in providers {
                let size = QuotaSize::of(
                    Some(provider.as_ref()),
                    provider.name(),
                    &group.spec.template,
                    &group.spec.name,
                )
                .await;
                each = each.max(size);
            }
        }
        let room = |limit: Option<u64>, used: Option<u64>, each: Option<u64>| -> u64 {
            match (limit, used, each) {
                (None, _, _) => u64::MAX,
                // An unknown size under a limit on it: no new instance until it is
                // known, rather than a create the quota may not allow.
                (Some(_), None, _) | (Some(_), _, None) => 0,
                (Some(l), Some(used), Some(each)) if each > 0 => l.saturating_sub(used) / each,
                // Instances that take none of it are not limited by it.
                (Some(_), Some(_), Some(_)) => u64::MAX,
            }
        };
        let extra = room(quota.max_instances.map(u64::from), Some(instances), Some(1))
            .min(room(quota.max_vcpus.map(u64::from), used.vcpus, each.vcpus))
            .min(room(quota.max_memory_mb, used.memory_mb, each.memory_mb));
        let allowed = have
            .saturating_add(u32::try_from(extra).unwrap_or(u32::MAX))
            .min(target);
        if allowed < target && self.quota_capped_at != Some(target) {
            self.quota_capped_at = Some(target);
            let show = |v: Option<u64>| v.map_or_else(|| "unknown".to_string(), |v| v.to_string());
            let mut message = format!(
                "scale-out to {target} capped at {allowed} by the tenant's quota (instances {:?}, vcpus {:?}, memory_mb {:?}; in use: {instances} instances",
                quota.max_instances, quota.max_vcpus, quota.max_memory_mb,
            );
            // Sizes are only read under a vCPU or memory limit; without one they are
            // not part of the cut.
            if sized {
                message.push_str(&format!(
                    ", {} vcpus, {} MiB; one instance needs {} vcpus, {} MiB",
                    show(used.vcpus),
                    show(used.memory_mb),
                    show(each.vcpus),
                    show(each.memory_mb)
                ));
            }
            message.push(')');
            let unknown = (quota.max_vcpus.is_some()
                && (used.vcpus.is_none() || each.vcpus.is_none()))
                || (quota.max_memory_mb.is_some()
                    && (used.memory_mb.is_none() || each.memory_mb.is_none()));
            if unknown {
                message.push_str(
                    "; an instance size cannot be read (see the server log) and the template gives none: no scale-out until it can",
                );
            }
            let event = c.event(
                &group.tenant,
                &group.spec.name,
                EventKind::QuotaCapped,
                None,
                message,
            );
            if let Err(e) = c.store.append_event(event).await {
                self.set_status(format!("store error: {e}"));
            }
        } else if allowed == target {
            self.quota_capped_at = None;
        }
        allowed
    }

    /// Retires the running instances the load balancer has found unhealthy for longer
    /// than `health_check.replace_after`; the next pass replaces them (seed 1's
    /// self-healing). True when it retired any.
    async fn replace_unhealthy(
        &mut self,
        group: &GroupRecord,
        instances: &[InstanceRecord],
    ) -> bool {
        let (Some(lb), Some(check)) = (
            self.lb(),
            group
                .spec
                .load_balancer
                .as_ref()
                .and_then(|l| l.health_check.as_ref()),
        ) else {
            return false;
        };
        let c = self.controller.clone();
        let mut any = false;
        // The load balancer stamps health changes with the system clock.
        let now = std::time::SystemTime::now();
        for (id, since) in lb.unhealthy() {
            let unhealthy_for = now.duration_since(since).unwrap_or_default();
            let Some(inst) = instances
                .iter()
                .find(|i| i.id.as_str() == id && i.status == InstanceStatus::Running)
            else {
                continue;
            };
            if unhealthy_for < check.replace_after {
                continue;
            }
            let event = c.event(
                &group.tenant,
                &group.spec.name,
                EventKind::InstanceFailed,
                Some(&inst.id),
                format!(
                    "instance {id} failed its health checks for {}s; replacing it",
                    unhealthy_for.as_secs()
                ),
            );
            let updated = c
                .store
                .update_instance(
                    &group.tenant,
                    &inst.id,
                    InstanceStatus::Draining,
                    reason("unhealthy"),
                    c.clock.now(),
                    Some(event),
                )
                .await;
            if updated.is_ok()
                && let Some(provider) = c.provider(&inst.tenant, &inst.provider)
            {
                self.spawn_retire(group, inst.id.clone(), provider);
                any = true;
            }
        }
        any
    }

    /// Takes a draining instance back into service instead of creating a new one (a
    /// scale-out during a drain). False when its deletion has already begun.
    async fn reuse_draining(&mut self, group: &GroupRecord, id: &InstanceId) -> bool {
        let Some(retirement) = self.retiring_ids.get(id) else {
            return false;
        };
        if !retirement.cancel() {
            return false;
        }
        self.retiring_ids.remove(id);
        let c = self.controller.clone();
        let event = c.event(
            &group.tenant,
            &group.spec.name,
            EventKind::InstanceCreated,
            Some(id),
            format!("drain of instance {id} cancelled: reused for the scale-out"),
        );
        c.store
            .update_instance(
                &group.tenant,
                id,
                InstanceStatus::Running,
                reason("reused after a cancelled drain"),
                c.clock.now(),
                Some(event),
            )
            .await
            .is_ok()
    }

    /// Points the load balancer at exactly the running instances.
    async fn update_lb(&mut self, tenant: &TenantId, name: &str) {
        let Some(lb) = self.lb() else { return };
        let Ok(instances) = self
            .controller
            .store
            .list_instances(tenant, name, false)
            .await
        else {
            return;
        };
        let backends = instances
            .iter()
            .filter(|i| i.status == InstanceStatus::Running)
            .filter_map(|i| {
                let addr = i.address.as_ref()?.parse().ok()?;
                Some(Backend {
                    id: i.id.to_string(),
                    addr,
                })
            })
            .collect();
        lb.set_backends(backends);
    }
}

/// What one instance counts against a tenant's vCPU and memory quota; `None` is
/// unknown: its provider could not say ([`Provider::instance_size`] failed, or the
/// provider is not configured on this server) and the template's number is 0.
///
/// Unknown is never read as 0: a template that leaves `vcpus`/`memory_mb` at 0 is the
/// normal case for OpenStack (the flavor says the size), and counting such instances
/// as taking nothing would lift the quota exactly when Nova is slow to answer. So an
/// unknown size under a limit on it lets no new instance be created (the room is 0,
/// and the `quota_capped` event says why) until the size can be read again; a
/// template that gives its numbers is used instead, with a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct QuotaSize {
    vcpus: Option<u64>,
    memory_mb: Option<u64>,
}

impl QuotaSize {
    /// Nothing yet: the start of a sum or of a maximum.
    const ZERO: QuotaSize = QuotaSize {
        vcpus: Some(0),
        memory_mb: Some(0),
    };

    /// The size of one instance of `template` on `provider` (named `name`, `None` when
    /// not configured here), falling back to the template's numbers when the provider
    /// cannot say.
    async fn of(
        provider: Option<&dyn Provider>,
        name: &str,
        template: &swell_core::Template,
        group: &str,
    ) -> QuotaSize {
        let asked = match provider {
            Some(p) => p.instance_size(template).await.map_err(|e| e.to_string()),
            None => Err(format!("provider {name} is not configured")),
        };
        match asked {
            Ok(Some(size)) => QuotaSize {
                vcpus: Some(u64::from(size.vcpus)),
                memory_mb: Some(size.memory_mb),
            },
            // The provider says instances of this template take nothing it can count
            // (the template's own numbers are both 0): a known 0, as before.
            Ok(None) => QuotaSize::ZERO,
            Err(e) => {
                let known = |n: u32| (n > 0).then_some(u64::from(n));
                tracing::warn!(
                    group,
                    provider = name,
                    "instance size for the tenant's quota: {e}; counting the template's vcpus {} and memory_mb {} (0: unknown, no scale-out under that quota)",
                    template.vcpus,
                    template.memory_mb
                );
                QuotaSize {
                    vcpus: known(template.vcpus),
                    memory_mb: known(template.memory_mb),
                }
            }
        }
    }

    /// The sum; unknown when either is.
    fn plus(self, other: QuotaSize) -> QuotaSize {
        let add = |a: Option<u64>, b: Option<u64>| Some(a?.saturating_add(b?));
        QuotaSize {
            vcpus: add(self.vcpus, other.vcpus),
            memory_mb: add(self.memory_mb, other.memory_mb),
        }
    }

    /// The larger of each; unknown when either is.
    fn max(self, other: QuotaSize) -> QuotaSize {
        let max = |a: Option<u64>, b: Option<u64>| Some(a?.max(b?));
        QuotaSize {
            vcpus: max(self.vcpus, other.vcpus),
            memory_mb: max(self.memory_mb, other.memory_mb),
        }
    }
}

/// The group's average of one metric over its running instances (those in warmup left
/// out), as a window sample; `None` when no instance has a reading.
fn average_sample(
    running: &[&InstanceRecord],
    warmup: Duration,
    now: Timestamp,
    metric: Metric,
    value_of: impl Fn(&InstanceRecord) -> Option<f64>,
) -> Option<MetricSample> {
    let readings: Vec<InstanceReading> = running
        .iter()
        .filter_map(|i| {
            value_of(i).map(|value| InstanceReading {
                value,
                started_at: i.started_at.unwrap_or(i.created_at),
            })
        })
        .collect();
    group_average(&readings, warmup, now).map(|(value, instances)| MetricSample {
        at: now,
        metric,
        value,
        instances,
    })
}

/// The group's `ssh` metric source, if it has one.
fn ssh_source(spec: &swell_core::GroupSpec) -> Option<SshSourceSpec> {
    spec.metric_sources.iter().find_map(|s| match s {
        MetricSourceSpec::Ssh(ssh) => Some(ssh.clone()),
        MetricSourceSpec::Prometheus(_) => None,
    })
}

/// The path a new instance must answer before it joins an HTTP load balancer: the
/// health check's, else `/`; `None` for a TCP load balancer.
fn readiness_path(spec: &swell_core::GroupSpec) -> Option<&str> {
    let lb = spec.load_balancer.as_ref()?;
    if lb.protocol == LbProtocol::Tcp {
        return None;
    }
    Some(
        lb.health_check
            .as_ref()
            .filter(|h| h.kind == HealthCheckType::Http)
            .map_or("/", |h| h.path.as_str()),
    )
}

/// Waits until the instance at `addr` serves: for an HTTP load balancer, until it
/// answers an HTTP request (any status) on `path`; for TCP, until it accepts a
/// connection. A connect alone is not enough for HTTP: a port published through a
/// proxy (Docker's) accepts connections before the application listens.
async fn wait_ready(addr: SocketAddr, http_path: Option<&str>) -> Result<(), String> {
    let attempt = async {
        loop {
            if let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await {
                match http_path {
                    None => return,
                    Some(path) if answers_http(&mut stream, addr, path).await => return,
                    Some(_) => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(READY_TIMEOUT, attempt)
        .await
        .map_err(|_| format!("did not serve on {addr} within {READY_TIMEOUT:?}"))
}

/// Whether a `GET path` on `stream` gets the start of an HTTP response within a second.
async fn answers_http(stream: &mut tokio::net::TcpStream, addr: SocketAddr, path: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let exchange = async {
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 5];
        stream.read_exact(&mut head).await.ok()?;
        Some(&head == b"HTTP/")
    };
    tokio::time::timeout(Duration::from_secs(1), exchange)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}
