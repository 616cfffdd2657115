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
use swell_core::{
    DecisionKind, EventKind, GroupState, InstanceId, InstanceStatus, Lifecycle, Metric,
    MetricSample, MetricWindow, PolicyEngine, TenantId,
};
use swell_lb::{Backend, LoadBalancer};
use swell_providers::{CreateRequest, InstanceMetrics, ObservedState, Provider, ProviderInstance};
use swell_store::{GroupRecord, InstanceRecord, InstanceUpdate, NewEvent, Store, StoreError};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long a new instance may take to accept TCP connections before it is failed.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Grace between the provider's graceful and forced stop.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Settings of the controller.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// Stop every instance when the server shuts down (default: leave them running and
    /// adopt them at the next start).
    pub stop_instances_on_exit: bool,
}

/// The providers by name.
pub type Providers = HashMap<String, Arc<dyn Provider>>;

/// Latest resource readings per instance (for the API and the demo's live view).
pub type LatestMetrics = Arc<RwLock<HashMap<InstanceId, InstanceMetrics>>>;

type GroupKey = (TenantId, String);

/// What can wake a group worker besides its timers.
#[derive(Debug)]
pub enum WorkerInput {
    /// The group's spec or desired capacity changed in the store; `lb` carries a newly
    /// bound load balancer when the listen address changed.
    Reload {
        /// A replacement load balancer, already bound.
        lb: Option<LoadBalancer>,
    },
}

struct WorkerHandle {
    tx: mpsc::UnboundedSender<WorkerInput>,
    status: Arc<Mutex<String>>,
    lb: Arc<Mutex<Option<LoadBalancer>>>,
}

/// Runs the group workers.
pub struct Controller {
    store: Arc<dyn Store>,
    providers: Arc<Providers>,
    clock: Arc<dyn Clock>,
    options: ControllerOptions,
    workers: Mutex<HashMap<GroupKey, WorkerHandle>>,
    tasks: tokio::sync::Mutex<JoinSet<()>>,
    latest: LatestMetrics,
    cancel: CancellationToken,
}

impl Controller {
    /// A controller over `store` and `providers`; call [`Controller::start`] to run it.
    pub fn new(
        store: Arc<dyn Store>,
        providers: Providers,
        clock: Arc<dyn Clock>,
        options: ControllerOptions,
    ) -> Arc<Self> {
        Arc::new(Controller {
            store,
            providers: Arc::new(providers),
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
                Some(spec) => match bind_lb(&spec.listen).await {
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
        for (name, provider) in self.providers.iter() {
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
            for inst in live.iter().filter(|i| &i.provider == name) {
                let seen = alive.get(&inst.id);
                let (status, update, kind, message) = match (inst.status, seen) {
                    (
                        InstanceStatus::Pending | InstanceStatus::Running | InstanceStatus::Paused,
                        Some(p),
                    ) => {
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
                if let Ok(tenant) = TenantId::new(p.tenant.clone()) {
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

    /// Starts the worker of a newly stored group (or wakes it if it runs).
    pub async fn spawn_worker(self: &Arc<Self>, group: &GroupRecord, lb: Option<LoadBalancer>) {
        let key = (group.tenant.clone(), group.spec.name.clone());
        if let Some(handle) = self
            .workers
            .lock()
            .map(|w| w.get(&key).map(|h| h.tx.clone()))
            .ok()
            .flatten()
        {
            let _ = handle.send(WorkerInput::Reload { lb });
            return;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let status = Arc::new(Mutex::new("starting".to_string()));
        let lb = Arc::new(Mutex::new(lb));
        let worker = GroupWorker {
            controller: self.clone(),
            key: key.clone(),
            status: status.clone(),
            lb: lb.clone(),
            window: MetricWindow::new(Duration::from_secs(3600)),
            engine: None,
            retiring: JoinSet::new(),
            retiring_ids: Arc::new(Mutex::new(HashSet::new())),
        };
        if let Ok(mut workers) = self.workers.lock() {
            workers.insert(key, WorkerHandle { tx, status, lb });
        }
        self.tasks.lock().await.spawn(worker.run(rx));
    }

    /// Wakes a group's worker after its spec or desired capacity changed.
    pub fn notify(&self, tenant: &TenantId, group: &str, lb: Option<LoadBalancer>) {
        if let Ok(workers) = self.workers.lock()
            && let Some(h) = workers.get(&(tenant.clone(), group.to_string()))
        {
            let _ = h.tx.send(WorkerInput::Reload { lb });
        }
    }

    /// The group's load balancer address, if it has one running.
    pub fn load_balancer_addr(&self, tenant: &TenantId, group: &str) -> Option<SocketAddr> {
        let workers = self.workers.lock().ok()?;
        let h = workers.get(&(tenant.clone(), group.to_string()))?;
        let lb = h.lb.lock().ok()?;
        lb.as_ref().map(|l| l.local_addr())
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

    /// The provider by name.
    pub fn provider(&self, name: &str) -> Option<Arc<dyn Provider>> {
        self.providers.get(name).cloned()
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
        if self.options.stop_instances_on_exit {
            if let Err(e) = self.stop_all().await {
                tracing::error!("stopping instances on exit: {e}");
            }
        }
        for lb in lbs {
            lb.shutdown().await;
        }
    }

    async fn stop_all(&self) -> Result<(), StoreError> {
        for inst in self.store.list_live_instances().await? {
            let now = self.clock.now();
            let Some(provider) = self.provider(&inst.provider) else {
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

/// Binds a group's load balancer.
pub async fn bind_lb(listen: &str) -> Result<LoadBalancer, String> {
    let addr: SocketAddr = listen
        .parse()
        .map_err(|_| format!("`{listen}` must be an address like 127.0.0.1:8080"))?;
    LoadBalancer::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))
}

fn reason(text: &str) -> InstanceUpdate {
    InstanceUpdate {
        status_reason: Some(text.into()),
        ..InstanceUpdate::default()
    }
}

/// One group's worker: metrics, decisions and reconciliation, serialised.
struct GroupWorker {
    controller: Arc<Controller>,
    key: GroupKey,
    status: Arc<Mutex<String>>,
    lb: Arc<Mutex<Option<LoadBalancer>>>,
    window: MetricWindow,
    engine: Option<(swell_core::GroupSpec, PolicyEngine)>,
    retiring: JoinSet<()>,
    retiring_ids: Arc<Mutex<HashSet<InstanceId>>>,
}

impl GroupWorker {
    fn set_status(&self, s: impl Into<String>) {
        if let Ok(mut st) = self.status.lock() {
            *st = s.into();
        }
    }

    fn lb(&self) -> Option<LoadBalancer> {
        self.lb.lock().ok().and_then(|l| l.clone())
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<WorkerInput>) {
        let cancel = self.controller.cancel.clone();
        let Some(group) = self.load().await else {
            return;
        };
        let mut eval = tokio::time::interval(group.spec.evaluation_interval);
        let mut sample = tokio::time::interval(group.spec.metrics_interval);
        eval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut intervals = (group.spec.evaluation_interval, group.spec.metrics_interval);
        self.reconcile().await;
        loop {
            let done = tokio::select! {
                _ = cancel.cancelled() => break,
                _ = eval.tick() => {
                    self.evaluate().await;
                    self.reconcile().await
                }
                _ = sample.tick() => {
                    self.collect().await;
                    false
                }
                Some(input) = rx.recv() => {
                    let WorkerInput::Reload { lb } = input;
                    if let Some(new_lb) = lb {
                        let old = self.lb.lock().ok().and_then(|mut l| l.replace(new_lb));
                        if let Some(old) = old { old.shutdown().await; }
                    }
                    self.engine = None;
                    if let Some(g) = self.load().await {
                        let now_intervals = (g.spec.evaluation_interval, g.spec.metrics_interval);
                        if now_intervals != intervals {
                            intervals = now_intervals;
                            eval = tokio::time::interval(intervals.0);
                            sample = tokio::time::interval(intervals.1);
                        }
                    }
                    self.reconcile().await
                }
                Some(_) = self.retiring.join_next(), if !self.retiring.is_empty() => {
                    self.reconcile().await
                }
            };
            if done {
                break;
            }
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
                    let engine = PolicyEngine::new(&g.spec.policies, capacity, g.spec.cooldown);
                    self.window =
                        MetricWindow::new(engine.lookback().max(Duration::from_secs(600)) * 2);
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

    /// Samples the running instances and feeds the group's window.
    async fn collect(&mut self) {
        let Some(group) = self.load().await else {
            return;
        };
        let c = &self.controller;
        let Some(provider) = c.provider(&group.spec.provider) else {
            return;
        };
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
        let ids: Vec<InstanceId> = running.iter().map(|i| i.id.clone()).collect();
        let Ok(readings) = provider.metrics(&ids).await else {
            return;
        };
        let now = c.clock.now();
        if let Ok(mut latest) = c.latest.write() {
            for (id, m) in &readings {
                latest.insert(id.clone(), *m);
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
            let r: Vec<InstanceReading> = running
                .iter()
                .filter_map(|i| {
                    by_id.get(&i.id).map(|m| InstanceReading {
                        value: pick(m),
                        started_at: i.started_at.unwrap_or(i.created_at),
                    })
                })
                .collect();
            if let Some((value, n)) = group_average(&r, group.spec.warmup, now) {
                self.window.push(MetricSample {
                    at: now,
                    metric,
                    value,
                    instances: n,
                });
            }
        }
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
        let Some(provider) = c.provider(&group.spec.provider) else {
            self.set_status(format!("unknown provider {}", group.spec.provider));
            return false;
        };
        let (tenant, name) = (group.tenant.clone(), group.spec.name.clone());
        let Ok(mut instances) = c.store.list_instances(&tenant, &name, false).await else {
            return false;
        };

        // Instances the provider no longer runs are failed (and replaced below).
        if let Ok(observed) = provider.list().await {
            let alive: HashSet<InstanceId> = observed
                .into_iter()
                .filter(|p| p.state != ObservedState::Exited)
                .map(|p| p.instance_id)
                .collect();
            for inst in instances
                .iter()
                .filter(|i| matches!(i.status, InstanceStatus::Running | InstanceStatus::Paused))
            {
                if !alive.contains(&inst.id) {
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
                }
            }
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
        let have = counted.len() as u32;
        if have < target {
            let mut permanent = counted
                .iter()
                .filter(|i| i.lifecycle == Lifecycle::Permanent)
                .count() as u32;
            for _ in have..target {
                let lifecycle = if permanent < group.spec.min {
                    permanent += 1;
                    Lifecycle::Permanent
                } else {
                    Lifecycle::ScaledUp
                };
                self.set_status(format!("creating instance ({have} → {target})"));
                if let Err(e) = self.create_one(&group, provider.as_ref(), lifecycle).await {
                    self.set_status(format!("store error: {e}"));
                    break;
                }
            }
        } else if have > target {
            let mut victims: Vec<&InstanceRecord> =
                counted.iter().copied().filter(|i| !i.protected).collect();
            // Scaled-up before permanent, newest first (seed 1's ScaledUpOrder).
            victims.sort_by_key(|i| {
                (
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
            let busy = self
                .retiring_ids
                .lock()
                .map(|r| r.contains(&inst.id))
                .unwrap_or(true);
            if !busy {
                self.spawn_retire(&group, inst.id.clone(), provider.clone());
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

    async fn create_one(
        &mut self,
        group: &GroupRecord,
        provider: &dyn Provider,
        lifecycle: Lifecycle,
    ) -> Result<(), StoreError> {
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
                Some(addr) => match wait_ready(addr).await {
                    Ok(()) => Ok(p),
                    Err(e) => Err(e),
                },
                None => Ok(p),
            },
            Err(e) => Err(e.to_string()),
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
                self.update_lb(tenant, name).await;
            }
            Err(e) => {
                let _ = provider.delete(&id, STOP_GRACE).await;
                let event = c.event(
                    tenant,
                    name,
                    EventKind::InstanceFailed,
                    Some(&id),
                    format!("could not create instance {id}: {e}"),
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
            }
        }
        Ok(())
    }

    /// Takes an instance out of the load balancer (status `draining`) and retires it in
    /// the background.
    async fn start_retire(&mut self, group: &GroupRecord, inst: &InstanceRecord) {
        let c = self.controller.clone();
        let Some(provider) = c.provider(&inst.provider) else {
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
        if let Ok(mut r) = self.retiring_ids.lock() {
            r.insert(id.clone());
        }
        let c = self.controller.clone();
        let lb = self.lb();
        let (tenant, name, drain_timeout) = (
            group.tenant.clone(),
            group.spec.name.clone(),
            group.spec.drain_timeout,
        );
        let retiring = self.retiring_ids.clone();
        self.retiring.spawn(async move {
            if let Some(lb) = lb {
                let outcome = lb.drain(id.as_str(), drain_timeout).await;
                tracing::info!(instance = %id, ?outcome, "drained");
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
            if let Ok(mut r) = retiring.lock() {
                r.remove(&id);
            }
        });
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

/// Waits until `addr` accepts TCP connections.
async fn wait_ready(addr: SocketAddr) -> Result<(), String> {
    let attempt = async {
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(READY_TIMEOUT, attempt)
        .await
        .map_err(|_| format!("did not accept connections on {addr} within {READY_TIMEOUT:?}"))
}
