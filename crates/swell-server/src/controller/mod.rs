//! The controller: one worker per group that samples metrics, asks the policy engine for
//! a desired capacity and reconciles the fleet towards it through the group's provider
//! and load balancer.
//!
//! Level-triggered: every pass compares the stored desired capacity with the stored and
//! observed instances and acts on the difference; it never relies on having seen an edge.
//! Every provider call is preceded by a durable intent (a `pending` or `terminating` row)
//! and followed by its outcome (DESIGN.md invariant 2), so [`Controller::recover`] can
//! finish or undo whatever a crash interrupted.

mod capacity;
mod collector;
mod create;
mod lb;
mod memory;
mod observer;
mod reconciler;
mod recorder;
mod recovery;
mod retirement;
pub mod stats;
mod worker;

use crate::clock::Clock;
use create::*;
pub use lb::{LbBindError, bind_lb, lb_config};
use memory::*;
use observer::*;
use retirement::*;
pub use stats::{ControllerStats, PassKind};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
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
use worker::*;

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
    /// Observers list only when [`Controller::observe_round`] is called, not on their
    /// timer (tests that count provider calls per round of an injected clock).
    pub manual_observation: bool,
}

/// The providers by name.
pub type Providers = HashMap<String, Arc<dyn Provider>>;

/// One group's latest resource reading per instance (for the API, the demo's live view
/// and a `most_loaded_host` retirement): kept by the group's worker, which drops the
/// instances that are gone at each collection, so it holds only the group's live
/// instances and a lookup touches a few entries, not the whole fleet's.
type GroupLatest = Arc<Mutex<foldhash::HashMap<InstanceId, InstanceMetrics>>>;

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

struct WorkerHandle {
    tx: mpsc::Sender<WorkerInput>,
    reload: Arc<Reload>,
    status: Arc<Mutex<String>>,
    lb: Arc<Mutex<Option<LoadBalancer>>>,
    latest: GroupLatest,
}

/// Runs the group workers.
pub struct Controller {
    store: Arc<dyn Store>,
    providers: crate::registry::ProviderRegistry,
    clock: Arc<dyn Clock>,
    options: ControllerOptions,
    workers: Mutex<HashMap<GroupKey, WorkerHandle>>,
    tasks: tokio::sync::Mutex<JoinSet<()>>,
    cancel: CancellationToken,
    stats: ControllerStats,
    /// One observer per provider instance, keyed by [`observer::provider_key`].
    observers: Mutex<HashMap<usize, observer::ObserverHandle>>,
    /// Every instance move of the workers and their tasks, gathered into shared
    /// transactions.
    recorder: recorder::InstanceRecorder,
    /// Every group's metric history intervals on their way to the store, written
    /// together once a second.
    metric_history: Arc<crate::metric_history::MetricHistory>,
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
            recorder: recorder::InstanceRecorder::new(store.clone()),
            store,
            providers,
            clock,
            options,
            workers: Mutex::new(HashMap::new()),
            tasks: tokio::sync::Mutex::new(JoinSet::new()),
            cancel: CancellationToken::new(),
            stats: ControllerStats::default(),
            observers: Mutex::new(HashMap::new()),
            metric_history: Arc::default(),
        })
    }

    /// The controller's counters: pass durations, decisions, provider calls.
    pub fn stats(&self) -> &ControllerStats {
        &self.stats
    }

    /// The latest resource reading of the instance `id` of a group, as its worker last
    /// collected it (`None` for an instance not running or not yet measured).
    pub fn latest_reading(
        &self,
        tenant: &TenantId,
        group: &str,
        id: &InstanceId,
    ) -> Option<InstanceMetrics> {
        let latest = self
            .workers
            .lock()
            .ok()?
            .get(&(tenant.clone(), group.to_string()))?
            .latest
            .clone();
        let readings = latest.lock().ok()?;
        readings.get(id).copied()
    }

    /// Reconciles the store with what the providers run after a (possibly unclean) stop,
    /// then starts one worker per stored group.
    pub async fn start(self: &Arc<Self>) -> Result<(), StoreError> {
        self.recover().await?;
        // Every group's metric history goes to the store in one write per
        // FLUSH_EVERY, not one per group and metrics interval.
        let (history, store, cancel) = (
            self.metric_history.clone(),
            self.store.clone(),
            self.cancel.clone(),
        );
        self.tasks.lock().await.spawn(async move {
            let mut every = tokio::time::interval(crate::metric_history::FLUSH_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = every.tick() => history.flush(store.as_ref()).await,
                }
            }
        });
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
        let worker = GroupWorker::new(
            self.clone(),
            group.clone(),
            tx.clone(),
            status.clone(),
            lb.clone(),
            lb_spec,
        );
        if let Ok(mut workers) = self.workers.lock() {
            workers.insert(
                key,
                WorkerHandle {
                    tx,
                    reload: reload.clone(),
                    status,
                    lb,
                    latest: worker.latest.clone(),
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

    /// How many inputs wait in each group worker's queue (at most [`WORKER_QUEUE`]).
    pub fn queue_depths(&self) -> Vec<(TenantId, String, usize)> {
        let Ok(workers) = self.workers.lock() else {
            return Vec::new();
        };
        workers
            .iter()
            .map(|((t, g), h)| {
                let depth = WORKER_QUEUE.saturating_sub(h.tx.capacity());
                (t.clone(), g.clone(), depth)
            })
            .collect()
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
    /// absent): every lookup of a provider by the controller and the service goes
    /// through here.
    pub fn provider(&self, tenant: &TenantId, name: &str) -> Option<Arc<dyn Provider>> {
        self.providers.get(tenant, name)
    }

    /// Every provider, with its name and owner (recovery and the stop on exit walk them
    /// all).
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
        // What the workers recorded last.
        self.metric_history.flush(self.store.as_ref()).await;
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

pub(super) fn reason(text: &str) -> InstanceUpdate {
    InstanceUpdate {
        status_reason: Some(text.into()),
        ..InstanceUpdate::default()
    }
}
