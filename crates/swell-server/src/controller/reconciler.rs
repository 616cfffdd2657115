//! The reconciler: observe → plan → act. It reads the group's providers' snapshots
//! (the [`observer`](super::observer)'s, never the providers themselves) and then its
//! instance records, hands both to the pure planner ([`swell_core::plan::plan`]: which
//! instances to fail, replace, take back, create and retire, and why a scale-out is cut
//! or waits), and carries the plan out, writing one event per change.
//!
//! "Why was this instance not created?" is answered by the plan's `capped` (the tenant's
//! quota, the providers' room: a `quota_capped` or `provider_capped` event) and
//! `waiting` (a provider backing off after failed creates: the worker's status), both
//! decided in `swell_core::plan`.

use super::*;
use swell_core::plan::{
    self, CreateBackoff, InstanceInput, ObservedInstance, PlanInput, ProviderInput,
    QuotaSize as PlanQuotaSize, Retirement as RetirementState, TenantQuota, Waiting,
};

/// One provider's snapshot as a pass reads it: its name, when it listed, what it
/// reports of the group.
type Snapshot = (String, Option<Timestamp>, Option<Arc<GroupObservation>>);

/// A size of 0 in a template is unknown, not nothing (see [`PlanQuotaSize`]).
pub(super) fn template_size(template: &swell_core::Template) -> PlanQuotaSize {
    let known = |n: u32| (n > 0).then_some(u64::from(n));
    PlanQuotaSize {
        vcpus: known(template.vcpus),
        memory_mb: known(template.memory_mb),
    }
}

impl GroupWorker {
    /// Converges the instances to the desired capacity. Returns true when the group is
    /// gone (deleted) and the worker should stop.
    pub(super) async fn reconcile(&mut self) -> bool {
        let c = self.controller.clone();
        let group = self.group.clone();
        let (tenant, name) = (group.tenant.clone(), group.spec.name.clone());
        // The group's providers by priority (the ones this server has configured).
        let providers: Vec<Arc<dyn Provider>> = group
            .spec
            .providers()
            .filter_map(|n| c.provider(&tenant, n))
            .collect();
        if providers.is_empty() {
            self.set_status(WorkerStatus::UnknownProvider(group.spec.provider.clone()));
            return false;
        }
        self.reconciled_at = Some(tokio::time::Instant::now());
        self.dirty = false;
        // Observe first, then read the records: a create stores its record before the
        // provider starts anything, so an observed instance without one is an orphan.
        self.seen = self.snapshot_marks();
        let mut numbers: HashMap<String, u64> = HashMap::new();
        let snapshots: Vec<Snapshot> = self
            .observed
            .iter()
            .map(|w| {
                let o = w.rx.borrow();
                numbers.insert(w.name.clone(), o.number);
                (
                    w.name.clone(),
                    o.listed_at,
                    o.groups.get(&self.key).cloned(),
                )
            })
            .collect();
        if self.records_stale {
            match c.store.list_instances(&tenant, &name, false).await {
                Ok(list) => {
                    self.instances = Arc::new(list);
                    self.records_stale = false;
                }
                Err(e) => {
                    self.set_status(WorkerStatus::StoreError(e.to_string()));
                    self.dirty = true;
                    return false;
                }
            }
        }
        // The plan works from the records as they are now; the writes below keep
        // `self.instances` up to date as they go.
        let live = self.instances.clone();
        let now = c.clock.now();
        let observed = match observed_input(&c, &self.key, &self.swept, &snapshots, &live).await {
            Ok(o) => o,
            Err(e) => {
                self.set_status(WorkerStatus::StoreError(e.to_string()));
                self.dirty = true;
                return false;
            }
        };
        let lb = self.lb();
        let replace_after = lb.as_ref().and_then(|_| {
            group
                .spec
                .load_balancer
                .as_ref()
                .and_then(|l| l.health_check.as_ref())
                .map(|h| h.replace_after)
        });
        // The load balancer stamps health changes with the system clock.
        let unhealthy: HashMap<String, Duration> = match (&lb, replace_after) {
            (Some(lb), Some(_)) => {
                let wall = std::time::SystemTime::now();
                lb.unhealthy()
                    .into_iter()
                    .map(|(id, since)| (id, wall.duration_since(since).unwrap_or_default()))
                    .collect()
            }
            _ => HashMap::new(),
        };
        // A fresh instance is only judged by a snapshot its create finished before.
        self.fresh.retain(|id, (provider, lists)| {
            numbers.get(provider.as_str()).is_some_and(|n| n <= lists)
                && live.iter().any(|r| &r.id == id)
        });
        let listed_at: HashMap<&str, Timestamp> = snapshots
            .iter()
            .filter_map(|(n, at, _)| Some((n.as_str(), (*at)?)))
            .collect();
        let started_at = |r: &InstanceRecord| {
            let started = r.started_at.unwrap_or(r.created_at);
            match (self.fresh.get(&r.id), listed_at.get(r.provider.as_str())) {
                (Some(_), Some(at)) => started.max(at.add(Duration::from_millis(1))),
                _ => started,
            }
        };
        // The latest CPU readings, for a `most_loaded_host` termination policy.
        let cpu: HashMap<InstanceId, f64> = if group
            .spec
            .termination_policy
            .contains(&swell_core::TerminationRule::MostLoadedHost)
        {
            self.latest
                .lock()
                .map(|l| {
                    live.iter()
                        .filter_map(|r| Some((r.id.clone(), l.get(&r.id)?.cpu_percent)))
                        .collect()
                })
                .unwrap_or_default()
        } else {
            HashMap::new()
        };
        let mut input = PlanInput {
            desired: group.desired_capacity,
            deleting: group.deleting,
            min: group.spec.min,
            providers: snapshots
                .iter()
                .map(|(n, listed_at, _)| ProviderInput {
                    name: n.clone(),
                    listed_at: *listed_at,
                    room: None,
                    size: None,
                    quota_size: PlanQuotaSize::ZERO,
                    backoff: self.backoff.get(n).copied(),
                })
                .collect(),
            instances: live
                .iter()
                .map(|r| InstanceInput {
                    id: r.id.clone(),
                    provider: r.provider.clone(),
                    status: r.status,
                    lifecycle: r.lifecycle,
                    created_order: u64::try_from(r.created_order).unwrap_or(0),
                    started_at: started_at(r),
                    protected: r.protected,
                    host: r.host.clone(),
                    cpu_percent: cpu.get(&r.id).copied(),
                    unhealthy_for: unhealthy.get(r.id.as_str()).copied(),
                    retirement: self
                        .retiring_ids
                        .get(&r.id)
                        .map_or(RetirementState::None, |t| t.state()),
                    replaced: r.status_reason.as_deref() == Some("unhealthy"),
                })
                .collect(),
            observed,
            replace_after,
            quota: TenantQuota::Unlimited,
            template_size: template_size(&group.spec.template),
            announced: self.announced,
            termination_policy: group.spec.termination_policy.clone(),
        };
        let mut the_plan = plan::plan(&input, now);
        // The caps cost store and provider reads: only for a scale-out.
        if the_plan.have < the_plan.desired {
            self.read_caps(&group, &providers, &mut input).await;
            the_plan = plan::plan(&input, now);
        }
        self.announced = the_plan.announced;
        let provider_named = |n: &str| providers.iter().find(|p| p.name() == n).cloned();
        let record = |id: &InstanceId| live.iter().find(|r| &r.id == id);
        let mut acted = false;

        for leftover in &the_plan.sweep {
            let Some(provider) = provider_named(&leftover.provider) else {
                continue;
            };
            acted = true;
            self.sweep(&group, provider.as_ref(), leftover).await;
        }
        for dead in &the_plan.fail {
            acted = true;
            let event = c.event(
                &tenant,
                &name,
                EventKind::InstanceFailed,
                Some(&dead.id),
                format!(
                    "instance {} exited unexpectedly; it will be replaced",
                    dead.id
                ),
            );
            match c
                .recorder
                .update(
                    &tenant,
                    &dead.id,
                    InstanceStatus::Failed,
                    reason("exited unexpectedly"),
                    c.clock.now(),
                    Some(event),
                )
                .await
            {
                Ok(record) => self.keep_record(record),
                Err(_) => self.records_stale = true,
            }
            // What is left of it (an exited container, a tenant network) goes too.
            if let Some(provider) = provider_named(&dead.provider)
                && let Err(e) = provider.delete(&dead.id, STOP_GRACE).await
            {
                tracing::warn!(instance = %dead.id, "cleaning up a dead instance: {e}");
            }
        }
        if !the_plan.fail.is_empty() {
            // Out of the load balancer now, not after their replacements are created.
            self.update_lb();
        }
        for sick in &the_plan.replace {
            acted = true;
            let event = c.event(
                &tenant,
                &name,
                EventKind::InstanceFailed,
                Some(&sick.id),
                format!(
                    "instance {} failed its health checks for {}s; replacing it",
                    sick.id,
                    sick.unhealthy_for.as_secs()
                ),
            );
            let updated = c
                .recorder
                .update(
                    &tenant,
                    &sick.id,
                    InstanceStatus::Draining,
                    reason("unhealthy"),
                    c.clock.now(),
                    Some(event),
                )
                .await;
            match updated {
                Ok(record) => {
                    self.keep_record(record);
                    if let Some(provider) = provider_named(&sick.provider) {
                        self.spawn_retire(&group, sick.id.clone(), provider);
                    }
                }
                Err(_) => self.records_stale = true,
            }
        }
        for id in &the_plan.reuse {
            acted = true;
            self.reuse_draining(&group, id).await;
        }
        for cap in the_plan.capped.iter().filter(|c| c.announce) {
            let Some(kind) = cap.event_kind() else {
                continue;
            };
            let event = c.event(&tenant, &name, kind, None, cap.message());
            if let Err(e) = c.store.append_event(event).await {
                self.set_status(WorkerStatus::StoreError(e.to_string()));
            }
        }
        let mut creates = Vec::new();
        let mut starting: HashMap<&str, u32> = HashMap::new();
        for create in &the_plan.create {
            let Some(provider) = provider_named(&create.provider) else {
                continue;
            };
            // A provider that failed since its last success is probed with one create
            // at a time, not a burst of them.
            let backing_off = self.backoff.contains_key(&create.provider);
            let in_flight = self.creating_on.get(&create.provider).copied().unwrap_or(0)
                + starting.get(create.provider.as_str()).copied().unwrap_or(0);
            if backing_off && in_flight > 0 {
                continue;
            }
            acted = true;
            *starting.entry(create.provider.as_str()).or_insert(0) += 1;
            creates.push((provider, create.lifecycle));
        }
        let (started, refused) = self.start_creates(&group, creates).await;
        if let Some(e) = refused {
            self.set_status(WorkerStatus::StoreError(e.to_string()));
        }
        if started > 0 {
            self.set_status(WorkerStatus::Creating {
                have: the_plan.have,
                target: the_plan.target,
            });
        } else if let Some(Waiting::Backoff {
            until, failures, ..
        }) = &the_plan.waiting
            && self.creating.is_empty()
        {
            self.set_status(WorkerStatus::Waiting {
                seconds: until.since(now).as_secs().max(1),
                failures: *failures,
                have: the_plan.have,
                target: the_plan.target,
            });
        }
        let victims: Vec<InstanceRecord> = the_plan
            .retire
            .iter()
            .filter_map(|victim| record(&victim.id).cloned())
            .collect();
        if !victims.is_empty() {
            acted = true;
            self.start_retires(&group, &victims).await;
        }
        // Retirements interrupted by a reload of this worker are picked up again.
        for resumed in &the_plan.resume {
            if let Some(provider) = provider_named(&resumed.provider) {
                acted = true;
                self.spawn_retire(&group, resumed.id.clone(), provider);
            }
        }
        self.update_lb();
        // An instance that started after the snapshots: the next list is looked at.
        let oldest_list = the_plan_listed(&input);
        self.awaiting_list = self.instances.iter().any(|i| {
            i.status == InstanceStatus::Running
                && oldest_list.is_none_or(|at| i.started_at.unwrap_or(i.created_at) > at)
        });
        self.settled = !acted
            && the_plan.waiting.is_none()
            // Protected instances a scale-in must keep are no reason to try again.
            && the_plan.have == the_plan.target + the_plan.kept_protected
            && the_plan.capped.is_empty()
            && self.creating.is_empty()
            && self.retiring.is_empty()
            && !self
                .instances
                .iter()
                .any(|i| !matches!(i.status, InstanceStatus::Running | InstanceStatus::Paused));

        if group.deleting && self.retiring.is_empty() && self.creating.is_empty() {
            return self.finish_deletion(&group, &providers).await;
        }
        if !group.deleting
            && matches!(
                self.status,
                WorkerStatus::Creating { .. } | WorkerStatus::Starting
            )
            && self.creating.is_empty()
        {
            let running = self
                .instances
                .iter()
                .filter(|i| i.status == InstanceStatus::Running)
                .count();
            self.set_status(WorkerStatus::Running {
                running,
                desired: group.desired_capacity,
            });
        }
        false
    }

    /// Deletes what a provider still has of a failed or unknown instance of this group:
    /// the remains of a create whose cleanup failed (an ERROR server, a server that was
    /// still building when its create timed out). One event per instance removed.
    async fn sweep(
        &mut self,
        group: &GroupRecord,
        provider: &dyn Provider,
        leftover: &plan::Leftover,
    ) {
        let c = self.controller.clone();
        let id = &leftover.id;
        match provider.delete(id, STOP_GRACE).await {
            Ok(()) => {
                self.swept.insert(id.clone());
                let event = c.event(
                    &group.tenant,
                    &group.spec.name,
                    EventKind::InstanceTerminated,
                    Some(id),
                    format!(
                        "removed what was left of failed instance {id} at the provider ({})",
                        leftover.native_id
                    ),
                );
                if let Err(e) = c.store.append_event(event).await {
                    self.set_status(WorkerStatus::StoreError(e.to_string()));
                }
            }
            Err(e) => {
                tracing::warn!(instance = %id, "removing a leftover: {e}; will retry");
            }
        }
    }

    /// The group is being deleted and has no instance left: what the providers keep for
    /// the whole group goes, then its record. True when it is gone.
    async fn finish_deletion(
        &mut self,
        group: &GroupRecord,
        providers: &[Arc<dyn Provider>],
    ) -> bool {
        let c = self.controller.clone();
        let (tenant, name) = (&group.tenant, &group.spec.name);
        let remaining = c
            .store
            .list_instances(tenant, name, false)
            .await
            .map(|l| l.len())
            .unwrap_or(1);
        if remaining != 0 {
            return false;
        }
        // What the providers keep for the whole group (OpenStack: its security group)
        // goes with it; before the record, so that no group of the same name can be
        // created and use it meanwhile. A failure leaves it behind (logged, with what to
        // remove) rather than keep a deleted group alive.
        for provider in providers {
            if let Err(e) = provider.group_deleted(tenant, name).await {
                tracing::warn!(
                    group = %name,
                    "provider {}: cleaning up after the group: {e}",
                    provider.name()
                );
            }
        }
        if let Err(e) = c.store.delete_group(tenant, name).await {
            self.set_status(WorkerStatus::StoreError(e.to_string()));
            return false;
        }
        if let Some(lb) = self.lb() {
            lb.shutdown().await;
        }
        if let Ok(mut w) = c.workers.lock() {
            w.remove(&self.key);
        }
        true
    }

    /// Records a finished create's outcome: a success clears the provider's backoff; a
    /// failure arms it (once per outage: creates that started before the last failure
    /// counted fail for the same reason) and is recorded with when the next attempt is.
    pub(super) async fn created(&mut self, outcome: CreateOutcome) {
        let c = self.controller.clone();
        if let Some(n) = self.creating_on.get_mut(&outcome.provider) {
            *n = n.saturating_sub(1);
        }
        // Snapshots started from now on can show it.
        self.fresh.remove(&outcome.id);
        let error = match outcome.result {
            Ok(record) => {
                self.keep_record(record);
                self.backoff.remove(&outcome.provider);
                if let Some(w) = self.observed.iter().find(|w| w.name == outcome.provider) {
                    let lists = w.lists_started();
                    self.fresh.insert(outcome.id, (outcome.provider, lists));
                }
                return;
            }
            Err(e) => e,
        };
        let now = c.clock.now();
        let previous = self.backoff.get(&outcome.provider).copied();
        let counted = previous
            .is_none_or(|b| b.until.sub(CreateBackoff::delay(b.failures)) < outcome.started);
        let backoff = match previous {
            Some(b) if !counted => b,
            _ => CreateBackoff::after_failure(previous, now),
        };
        self.backoff.insert(outcome.provider.clone(), backoff);
        let (tenant, name) = self.key.clone();
        let id = &outcome.id;
        let event = c.event(
            &tenant,
            &name,
            EventKind::InstanceFailed,
            Some(id),
            format!(
                "could not create instance {id} on {}: {error}; next attempt in {}s ({} failed in a row)",
                outcome.provider,
                backoff.until.since(now).as_secs(),
                backoff.failures
            ),
        );
        match c
            .recorder
            .update(
                &tenant,
                id,
                InstanceStatus::Failed,
                reason(&error),
                now,
                Some(event),
            )
            .await
        {
            Ok(record) => self.keep_record(record),
            Err(e) => {
                // The `running` record may be stored (a refused write after it).
                self.records_stale = true;
                self.set_status(WorkerStatus::StoreError(e.to_string()));
            }
        }
    }
}

/// The oldest list time among the plan's providers (`None` when one has not listed).
fn the_plan_listed(input: &PlanInput) -> Option<Timestamp> {
    let mut oldest: Option<Timestamp> = None;
    for p in &input.providers {
        let at = p.listed_at?;
        oldest = Some(oldest.map_or(at, |o| o.min(at)));
    }
    oldest
}

/// The group's instances in the snapshots, except those already swept, each with
/// its record's status. Final records are only read when a snapshot shows an
/// instance without a live record; one that ended after the snapshot was taken is
/// left out (the snapshot predates its cleanup).
async fn observed_input(
    controller: &Controller,
    key: &GroupKey,
    swept: &HashSet<InstanceId>,
    snapshots: &[Snapshot],
    live: &[InstanceRecord],
) -> Result<Vec<ObservedInstance>, StoreError> {
    let live_status: HashMap<&InstanceId, InstanceStatus> =
        live.iter().map(|r| (&r.id, r.status)).collect();
    let mut out = Vec::new();
    let mut unknown = false;
    for (provider, _, obs) in snapshots {
        let Some(obs) = obs else { continue };
        for p in obs
            .instances
            .iter()
            .filter(|p| !swept.contains(&p.instance_id))
        {
            let record = live_status.get(&p.instance_id).copied();
            unknown |= record.is_none();
            out.push(ObservedInstance {
                id: p.instance_id.clone(),
                provider: provider.clone(),
                native_id: p.native_id.clone(),
                exited: p.state == ObservedState::Exited,
                record,
            });
        }
    }
    if !unknown {
        return Ok(out);
    }
    let (tenant, name) = key;
    let all = controller.store.list_instances(tenant, name, true).await?;
    let listed_at: HashMap<&str, Option<Timestamp>> = snapshots
        .iter()
        .map(|(n, at, _)| (n.as_str(), *at))
        .collect();
    out.retain_mut(|o| {
        if o.record.is_some() {
            return true;
        }
        match all.iter().find(|r| r.id == o.id) {
            Some(r) => {
                let snapshot = listed_at.get(o.provider.as_str()).copied().flatten();
                if snapshot.is_none_or(|at| r.updated_at >= at) {
                    return false;
                }
                o.record = Some(r.status);
                true
            }
            None => true,
        }
    });
    Ok(out)
}
