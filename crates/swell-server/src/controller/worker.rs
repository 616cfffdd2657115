//! A group's worker: its loop over one closed set of wake-ups ([`Wake`]), the group
//! record it works from, and the policy decision.

use super::*;

/// What woke a group worker: every pass starts from exactly one of these.
pub(super) enum Wake {
    /// The evaluation timer: decide, then reconcile if anything may have changed.
    Evaluate,
    /// The metrics timer: sample the instances from the providers' snapshots.
    Collect,
    /// The group changed in the store (spec, desired capacity, deletion, an instance).
    Reload,
    /// An input from its queue.
    Input(WorkerInput),
    /// A retirement finished (its instance and its last record, unless the task
    /// panicked).
    Retired(Option<(InstanceId, Option<InstanceRecord>)>),
    /// A create finished (its outcome, unless the task panicked).
    Created(Option<CreateOutcome>),
}

impl Wake {
    /// What woke the worker, for the pass counters.
    fn kind(&self) -> PassKind {
        match self {
            Wake::Evaluate => PassKind::Evaluate,
            Wake::Collect => PassKind::Collect,
            Wake::Reload => PassKind::Reload,
            Wake::Input(_) => PassKind::Input,
            Wake::Retired(_) => PassKind::Retired,
            Wake::Created(_) => PassKind::Created,
        }
    }
}

/// What a worker is doing, as the API's worker list shows it (with the load balancer's
/// and the metric sources' trouble after it, when there is any).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum WorkerStatus {
    /// Not yet through its first pass.
    Starting,
    /// Creates are under way.
    Creating {
        /// Instances that count toward capacity.
        have: u32,
        /// The count worked toward.
        target: u32,
    },
    /// Its instances match the desired capacity (the last pass had nothing to create).
    Running {
        /// Running instances.
        running: usize,
        /// The desired capacity.
        desired: u32,
    },
    /// The policies saw no reason to change the desired capacity.
    Idle {
        /// The desired capacity.
        desired: u32,
        /// The policies' reason.
        reason: String,
    },
    /// The policies changed the desired capacity (the event's message).
    Scaled(String),
    /// Autoscaling is suspended by a user: what the policies would do.
    Suspended {
        /// The desired capacity (only a user changes it now).
        desired: u32,
        /// The capacity the policies would set, if other than `desired`.
        would: Option<u32>,
        /// The policies' reason.
        reason: String,
    },
    /// The next create waits for a provider's backoff.
    Waiting {
        /// Seconds until it may start.
        seconds: u64,
        /// The provider's failed creates in a row.
        failures: u32,
        /// Instances that count toward capacity.
        have: u32,
        /// The count worked toward.
        target: u32,
    },
    /// None of the group's providers is configured on this server.
    UnknownProvider(String),
    /// The store refused a read or a write.
    StoreError(String),
    /// The worker has stopped.
    Stopped,
}

impl std::fmt::Display for WorkerStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkerStatus::Starting => f.write_str("starting"),
            WorkerStatus::Creating { have, target } => {
                write!(f, "creating instance ({have} → {target})")
            }
            WorkerStatus::Running { running, desired } => {
                write!(f, "{running} running, desired {desired}")
            }
            WorkerStatus::Idle { desired, reason } => write!(f, "idle at {desired}: {reason}"),
            WorkerStatus::Scaled(message) => f.write_str(message),
            WorkerStatus::Suspended {
                desired,
                would: Some(would),
                reason,
            } => write!(
                f,
                "suspended at {desired}: the policies would scale to {would} ({reason})"
            ),
            WorkerStatus::Suspended {
                desired,
                would: None,
                reason,
            } => write!(f, "suspended at {desired}: {reason}"),
            WorkerStatus::Waiting {
                seconds,
                failures,
                have,
                target,
            } => write!(
                f,
                "next create in {seconds}s ({failures} failed in a row; {have} → {target})"
            ),
            WorkerStatus::UnknownProvider(name) => write!(f, "unknown provider {name}"),
            WorkerStatus::StoreError(e) => write!(f, "store error: {e}"),
            WorkerStatus::Stopped => f.write_str("stopped"),
        }
    }
}

/// A timer of `period` whose first tick comes at an offset within the period that
/// depends on the group: workers started together (a server's start, a benchmark) do
/// not all evaluate, and write their decisions to the store, at the same instant.
pub(super) fn spread(key: &GroupKey, period: Duration) -> tokio::time::Interval {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    let nanos = period.as_nanos().max(1);
    let offset = Duration::from_nanos((u128::from(h.finish()) % nanos) as u64);
    let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    timer
}

/// How long a worker whose group is settled goes without reconciling: a pass then runs
/// whatever the snapshots say, as a safety net under the change-driven passes.
pub(super) const RESYNC: Duration = Duration::from_secs(60);

/// One group's worker: metrics, decisions and reconciliation, serialised.
pub(super) struct GroupWorker {
    /// The worker's own input, for the metric sources' rounds to report back.
    pub(super) tx: mpsc::Sender<WorkerInput>,
    /// The client of the group's `prometheus` sources.
    pub(super) prometheus: swell_providers::prometheus::PromClient,
    /// The metric sources' round under way (one at a time).
    pub(super) source_round: Option<tokio::task::JoinHandle<()>>,
    /// What went wrong in the metric sources' last round, shown in the worker's status.
    pub(super) source_problem: Option<String>,
    /// Why the group's load balancer is not running (its address is taken, …), shown
    /// in the worker's status; retried every evaluation until it binds.
    pub(super) lb_problem: Option<String>,
    pub(super) controller: Arc<Controller>,
    pub(super) key: GroupKey,
    /// The group as last read from the store (at start and at each reload: every change
    /// through the service wakes the worker) or written by this worker.
    /// Shared, so a pass that reads it across awaits takes a pointer, not a copy of the
    /// whole spec.
    pub(super) group: Arc<GroupRecord>,
    /// The group's live instance records: read from the store at start and after a
    /// reload, then kept by the worker from what its own writes return (it and its
    /// tasks are the only writers of them besides the service, whose every change
    /// wakes it with a reload), so a reconcile reads nothing. Shared, so a pass that
    /// works from them across awaits takes a pointer; a write copies them only while
    /// such a pass holds them.
    pub(super) instances: Arc<Vec<InstanceRecord>>,
    /// The store may hold instance records the worker has not seen (at start, after a
    /// reload or a refused write): the next reconcile reads them.
    pub(super) records_stale: bool,
    pub(super) status: WorkerStatus,
    /// The status as shown (with the load balancer's and metric sources' trouble).
    pub(super) shown: Arc<Mutex<String>>,
    pub(super) lb: Arc<Mutex<Option<LoadBalancer>>>,
    pub(super) window: MetricWindow,
    pub(super) engine: Option<(swell_core::GroupSpec, PolicyEngine)>,
    pub(super) retiring: JoinSet<(InstanceId, Option<InstanceRecord>)>,
    /// The retirements under way, so a scale-out can cancel a drain and reuse the
    /// instance, and a reload does not start a second retirement of the same one.
    pub(super) retiring_ids: HashMap<InstanceId, Retirement>,
    /// The creates under way (each its own task, so a scale-out of many instances
    /// takes one create's time and does not stall this loop).
    pub(super) creating: JoinSet<CreateOutcome>,
    /// Creates under way, by provider.
    pub(super) creating_on: HashMap<String, u32>,
    /// The section the current load balancer was built from.
    pub(super) lb_spec: Option<LoadBalancerSpec>,
    /// The scale-out cuts already announced (one event per cut target).
    pub(super) announced: swell_core::plan::Announced,
    /// While the group is suspended: the capacity the last `would_scale` event named,
    /// so that one is recorded per new would-be capacity, not per evaluation.
    pub(super) would_scale: Option<u32>,
    /// Per provider: failed creates in a row and the earliest next attempt.
    pub(super) backoff: HashMap<String, swell_core::plan::CreateBackoff>,
    /// The latest reading of each live instance (shared with the controller's readers).
    pub(super) latest: GroupLatest,
    /// The latest pushed per-instance readings: (metric, instance) → (value, received).
    pub(super) pushed_instance: HashMap<(Metric, InstanceId), (f64, Timestamp)>,
    /// When each metric was last pushed as a group-level value.
    pub(super) pushed_group: HashMap<Metric, Timestamp>,
    /// Leftovers of failed instances already removed (one event each).
    pub(super) swept: HashSet<InstanceId>,
    /// Folds the samples of the metrics the policies remember into five-minute summaries
    /// for the store.
    pub(super) summarizer: LoadSummarizer,
    /// Summaries closed but not yet stored.
    pub(super) unsaved: Vec<LoadSummary>,
    /// When this worker last dropped summaries older than [`LOAD_HISTORY_KEPT`].
    pub(super) history_pruned_at: Option<Timestamp>,
    /// The end of the last metrics interval queued for the group's metric history.
    pub(super) points_at: Option<Timestamp>,
    /// When this worker last had the group's stored metric points pruned.
    pub(super) points_pruned_at: Option<Timestamp>,
    /// The snapshots of the group's providers (by name, by priority).
    pub(super) observed: Vec<Watch>,
    /// Instances created since their provider's observer started its list numbered
    /// here: a snapshot numbered at most that cannot show them (whatever the clock
    /// says), so it does not find them dead.
    pub(super) fresh: HashMap<InstanceId, (String, u64)>,
    /// The snapshots' fingerprints and list times the last reconcile saw.
    pub(super) seen: Vec<(u64, Option<Timestamp>)>,
    /// Something changed since the last reconcile (a reload, a finished task, a
    /// decision): the next evaluation reconciles.
    pub(super) dirty: bool,
    /// The last reconcile had nothing left to do; when not, every evaluation reconciles.
    pub(super) settled: bool,
    /// An instance started after the snapshot the last reconcile used: the next
    /// snapshot is looked at even if its fingerprint did not change.
    pub(super) awaiting_list: bool,
    /// When the last reconcile ran.
    pub(super) reconciled_at: Option<tokio::time::Instant>,
}

impl GroupWorker {
    /// A worker for `group`, not yet running ([`GroupWorker::run`]).
    pub(super) fn new(
        controller: Arc<Controller>,
        group: GroupRecord,
        tx: mpsc::Sender<WorkerInput>,
        shown: Arc<Mutex<String>>,
        lb: Arc<Mutex<Option<LoadBalancer>>>,
        lb_spec: Option<LoadBalancerSpec>,
    ) -> Self {
        GroupWorker {
            tx,
            prometheus: swell_providers::prometheus::PromClient::new(),
            source_round: None,
            source_problem: None,
            lb_problem: None,
            controller,
            key: (group.tenant.clone(), group.spec.name.clone()),
            group: Arc::new(group),
            instances: Arc::default(),
            records_stale: true,
            status: WorkerStatus::Starting,
            shown,
            lb,
            window: MetricWindow::new(Duration::from_secs(3600)),
            engine: None,
            retiring: JoinSet::new(),
            retiring_ids: HashMap::new(),
            creating: JoinSet::new(),
            creating_on: HashMap::new(),
            lb_spec,
            announced: swell_core::plan::Announced::default(),
            would_scale: None,
            backoff: HashMap::new(),
            latest: Arc::default(),
            pushed_instance: HashMap::new(),
            pushed_group: HashMap::new(),
            swept: HashSet::new(),
            summarizer: LoadSummarizer::new(LOAD_SUMMARY_PERIOD),
            unsaved: Vec::new(),
            history_pruned_at: None,
            points_at: None,
            points_pruned_at: None,
            observed: Vec::new(),
            fresh: HashMap::new(),
            seen: Vec::new(),
            dirty: true,
            settled: false,
            awaiting_list: false,
            reconciled_at: None,
        }
    }

    /// Sets what the worker is doing and shows it.
    pub(super) fn set_status(&mut self, status: WorkerStatus) {
        self.status = status;
        self.show();
    }

    /// Shows the status with the load balancer's and the metric sources' trouble.
    pub(super) fn show(&self) {
        let mut s = self.status.to_string();
        if let Some(problem) = &self.lb_problem {
            s = format!("{s}; load balancer: {problem}");
        }
        if let Some(problem) = &self.source_problem {
            s = format!("{s}; metric source: {problem}");
        }
        if let Ok(mut shown) = self.shown.lock() {
            *shown = s;
        }
    }

    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<WorkerInput>, reload: Arc<Reload>) {
        let cancel = self.controller.cancel.clone();
        if !self.reload_group().await {
            return;
        }
        let spec = &self.group.spec;
        let mut intervals = (spec.evaluation_interval, spec.metrics_interval);
        let mut eval = spread(&self.key, intervals.0);
        let mut sample = spread(&self.key, intervals.1);
        // A load balancer that could not bind at start: tried again, and the reason
        // recorded if it still cannot.
        if self.group.spec.load_balancer != self.lb_spec {
            self.refresh_lb(None).await;
        }
        let mut done = self.reconcile().await;
        while !done {
            let wake = tokio::select! {
                _ = cancel.cancelled() => break,
                _ = eval.tick() => Wake::Evaluate,
                _ = sample.tick() => Wake::Collect,
                _ = reload.wake.notified() => Wake::Reload,
                Some(input) = rx.recv() => Wake::Input(input),
                Some(joined) = self.retiring.join_next(), if !self.retiring.is_empty() => {
                    Wake::Retired(joined.ok())
                }
                Some(joined) = self.creating.join_next(), if !self.creating.is_empty() => {
                    Wake::Created(joined.ok())
                }
            };
            let started = std::time::Instant::now();
            let kind = wake.kind();
            done = match wake {
                Wake::Evaluate => {
                    if self.lb_problem.is_some() {
                        self.refresh_lb(None).await;
                    }
                    self.evaluate().await;
                    self.reconcile_if_needed().await
                }
                Wake::Collect => {
                    self.collect().await;
                    false
                }
                Wake::Reload => {
                    let lb = reload.take_lb();
                    if self.reload_group().await {
                        self.refresh_lb(lb).await;
                        let spec = &self.group.spec;
                        let now_intervals = (spec.evaluation_interval, spec.metrics_interval);
                        if now_intervals != intervals {
                            intervals = now_intervals;
                            eval = spread(&self.key, intervals.0);
                            sample = spread(&self.key, intervals.1);
                        }
                        self.reconcile().await
                    } else {
                        // The group is gone: the address it was given is let go.
                        if let Some(lb) = lb {
                            lb.shutdown().await;
                        }
                        true
                    }
                }
                Wake::Input(WorkerInput::Metrics(readings)) => {
                    self.take_pushed(readings).await;
                    false
                }
                Wake::Input(WorkerInput::SourceRound(round)) => {
                    self.take_source_round(round).await;
                    false
                }
                Wake::Retired(retired) => {
                    self.retired(retired);
                    // The others that finished meanwhile, for the same reconcile.
                    while let Some(joined) = self.retiring.try_join_next() {
                        self.retired(joined.ok());
                    }
                    self.reconcile().await
                }
                Wake::Created(outcome) => {
                    if let Some(outcome) = outcome {
                        self.created(outcome).await;
                    }
                    while let Some(joined) = self.creating.try_join_next() {
                        if let Ok(outcome) = joined {
                            self.created(outcome).await;
                        }
                    }
                    self.reconcile().await
                }
            };
            self.controller.stats.pass(kind, started.elapsed());
        }
        // The period being summarised is stored as far as it got.
        let last = self.summarizer.flush();
        self.unsaved.extend(last);
        self.save_memory().await;
        if let Some(round) = self.source_round.take() {
            round.abort();
        }
        // Retirements and creates in flight are abandoned here: their rows say
        // `draining`, `terminating` or `pending`, and recovery at the next start
        // finishes them.
        self.retiring.shutdown().await;
        self.creating.shutdown().await;
        self.controller.unobserve(&self.key);
        self.controller.stats.forget_group(&self.key.0, &self.key.1);
        self.set_status(WorkerStatus::Stopped);
    }

    /// Reconciles when something may have changed since the last pass: a reload, a
    /// finished task or decision, a provider snapshot showing the group's instances
    /// changed, an unhealthy instance, an unsettled last pass; else once per
    /// [`RESYNC`]. An idle group costs no store read.
    pub(super) async fn reconcile_if_needed(&mut self) -> bool {
        let seen = self.snapshot_marks();
        if seen.len() != self.seen.len() {
            self.dirty = true;
        }
        for ((fingerprint, listed_at), (was_fingerprint, was_listed_at)) in
            seen.iter().zip(&self.seen)
        {
            if fingerprint != was_fingerprint || (self.awaiting_list && listed_at != was_listed_at)
            {
                self.dirty = true;
            }
        }
        let unhealthy = self.lb().is_some_and(|lb| !lb.unhealthy().is_empty());
        let stale = self.reconciled_at.is_none_or(|at| at.elapsed() >= RESYNC);
        if self.dirty || !self.settled || unhealthy || stale {
            self.reconcile().await
        } else {
            false
        }
    }

    /// Each of the group's provider snapshots' fingerprint of the group and list time.
    pub(super) fn snapshot_marks(&self) -> Vec<(u64, Option<Timestamp>)> {
        self.observed
            .iter()
            .map(|w| {
                let o = w.rx.borrow();
                let fingerprint = o.groups.get(&self.key).map_or(0, |g| g.fingerprint);
                (fingerprint, o.listed_at)
            })
            .collect()
    }

    /// Reads the group from the store, rebuilds the policy engine when its spec
    /// changed, and subscribes to its providers' snapshots. False when the group is
    /// gone; a store error keeps the group as last read (shown in the status).
    pub(super) async fn reload_group(&mut self) -> bool {
        let (tenant, name) = &self.key;
        let g = match self.controller.store.get_group(tenant, name).await {
            Ok(Some(g)) => g,
            Ok(None) => return false,
            Err(e) => {
                self.set_status(WorkerStatus::StoreError(e.to_string()));
                return true;
            }
        };
        let rebuild = self.engine.as_ref().is_none_or(|(spec, _)| spec != &g.spec);
        if rebuild && let Ok(capacity) = g.spec.capacity() {
            let mut engine = PolicyEngine::new(&g.spec.policies, capacity, g.spec.cooldown);
            self.remember(&g, &mut engine).await;
            // What the policies learned comes from the engine an edit replaces, else (at
            // start) from the store.
            let carried = self.engine.as_ref().map(|(_, old)| old.learned());
            let learned = match carried {
                Some(learned) => learned,
                None => self.stored_learned(&g).await,
            };
            engine.relearn(&learned);
            let mut window = MetricWindow::new(engine.lookback().max(Duration::from_secs(600)) * 2);
            for sample in self.window.samples() {
                window.push(*sample);
            }
            self.window = window;
            self.engine = Some((g.spec.clone(), engine));
        }
        let c = self.controller.clone();
        self.controller.unobserve(&self.key);
        self.observed = g
            .spec
            .providers()
            .filter_map(|n| {
                let p = c.provider(&g.tenant, n)?;
                Some(c.observe(&p, &self.key, g.spec.metrics_interval, n))
            })
            .collect();
        if g.suspended_at.is_none() {
            self.would_scale = None;
        }
        self.group = Arc::new(g);
        self.dirty = true;
        self.records_stale = true;
        true
    }

    /// Takes a finished retirement's outcome: its instance and last record.
    fn retired(&mut self, retired: Option<(InstanceId, Option<InstanceRecord>)>) {
        if let Some((id, _)) = &retired {
            self.retiring_ids.remove(id);
        }
        // No record back (a reuse, a refused write, a panic): read them again.
        match retired.and_then(|(_, record)| record) {
            Some(record) => self.keep_record(record),
            None => self.records_stale = true,
        }
    }

    /// Keeps a record the worker's own write returned: it replaces the one of the same
    /// instance, and a final one (terminated, failed) leaves the live records.
    pub(super) fn keep_record(&mut self, record: InstanceRecord) {
        let live = !record.status.is_final();
        let found = self.instances.iter().position(|i| i.id == record.id);
        if found.is_none() && !live {
            // Nothing to change: the records are not copied out from under a pass.
            return;
        }
        let instances = Arc::make_mut(&mut self.instances);
        match found {
            Some(at) if live => instances[at] = record,
            Some(at) => {
                instances.remove(at);
            }
            None => {
                let at = instances.partition_point(|i| i.created_order <= record.created_order);
                instances.insert(at, record);
            }
        }
    }

    /// Asks the policies for a desired capacity and stores it with its cause. Reads
    /// nothing from the store: the group and its instances are the worker's own.
    pub(super) async fn evaluate(&mut self) {
        if self.group.deleting {
            return;
        }
        let c = self.controller.clone();
        let now = c.clock.now();
        let warmup = self.group.spec.warmup;
        let provisioned = self
            .instances
            .iter()
            .filter(|i| matches!(i.status, InstanceStatus::Pending | InstanceStatus::Running))
            .count() as u32;
        let ready = self
            .instances
            .iter()
            .filter(|i| {
                i.status == InstanceStatus::Running
                    && i.started_at.is_some_and(|s| now.since(s) >= warmup)
            })
            .count() as u32;
        let state = GroupState {
            desired_capacity: self.group.desired_capacity,
            provisioned,
            ready,
            last_scaling_at: self.group.last_scaling_at,
        };
        let Some((_, engine)) = self.engine.as_mut() else {
            return;
        };
        let decision = engine.decide(&state, &self.window, now);
        if self.group.suspended_at.is_some() {
            self.suspended_decision(decision, now).await;
            return;
        }
        let kind = match decision.kind {
            DecisionKind::Idle => {
                let status = WorkerStatus::Idle {
                    desired: self.group.desired_capacity,
                    reason: decision.cause.reason,
                };
                if status != self.status {
                    self.set_status(status);
                }
                return;
            }
            DecisionKind::ScaleOut => EventKind::ScaleOut,
            DecisionKind::ScaleIn => EventKind::ScaleIn,
        };
        c.stats.decision(&self.key.0, &self.key.1);
        let message = format!(
            "{} {} → {}: {}",
            kind, decision.cause.before, decision.cause.after, decision.cause.reason
        );
        self.set_status(WorkerStatus::Scaled(message.clone()));
        let (tenant, name) = self.key.clone();
        let event = NewEvent {
            tenant: tenant.clone(),
            group: name.clone(),
            at: now,
            kind,
            instance_id: None,
            cause: Some(decision.cause.clone()),
            message,
        };
        match c
            .store
            .set_desired_capacity(&tenant, &name, decision.desired_capacity, Some(now), event)
            .await
        {
            Ok(group) => {
                self.group = Arc::new(group);
                self.dirty = true;
            }
            Err(e) => self.set_status(WorkerStatus::StoreError(e.to_string())),
        }
    }

    /// A decision while autoscaling is suspended: nothing changes; a scaling decision
    /// is recorded as a `would_scale` event (once per new would-be capacity, with the
    /// cause the policies gave) and shown in the status.
    async fn suspended_decision(&mut self, decision: swell_core::Decision, now: Timestamp) {
        let desired = self.group.desired_capacity;
        let kind = match decision.kind {
            DecisionKind::Idle => {
                self.would_scale = None;
                let status = WorkerStatus::Suspended {
                    desired,
                    would: None,
                    reason: decision.cause.reason,
                };
                if status != self.status {
                    self.set_status(status);
                }
                return;
            }
            DecisionKind::ScaleOut => EventKind::ScaleOut,
            DecisionKind::ScaleIn => EventKind::ScaleIn,
        };
        let would = decision.desired_capacity;
        let status = WorkerStatus::Suspended {
            desired,
            would: Some(would),
            reason: decision.cause.reason.clone(),
        };
        if status != self.status {
            self.set_status(status);
        }
        if self.would_scale == Some(would) {
            return;
        }
        let (tenant, name) = self.key.clone();
        let event = NewEvent {
            tenant,
            group: name,
            at: now,
            kind: EventKind::WouldScale,
            instance_id: None,
            cause: Some(decision.cause.clone()),
            message: format!(
                "would {kind} {} → {would}: {} (autoscaling suspended: nothing changed)",
                decision.cause.before, decision.cause.reason
            ),
        };
        match self.controller.store.append_event(event).await {
            Ok(_) => self.would_scale = Some(would),
            Err(e) => self.set_status(WorkerStatus::StoreError(e.to_string())),
        }
    }
}
