//! Retiring an instance: drain, then terminate, then record.

use super::*;

/// A retirement under way. Its drain can be cancelled (and the instance reused) until
/// the retirement commits to deleting: whichever of `cancel` and `commit` comes first
/// wins, atomically.
#[derive(Clone, Default)]
pub(super) struct Retirement {
    cancel: CancellationToken,
    /// 0 draining, 1 committed to deletion, 2 cancelled.
    state: Arc<std::sync::atomic::AtomicU8>,
}

impl Retirement {
    /// Where it is, for the planner.
    pub(super) fn state(&self) -> swell_core::plan::Retirement {
        match self.state.load(std::sync::atomic::Ordering::Acquire) {
            0 => swell_core::plan::Retirement::Cancellable,
            1 => swell_core::plan::Retirement::Committed,
            _ => swell_core::plan::Retirement::None,
        }
    }

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

impl GroupWorker {
    /// Takes instances out of the load balancer (status `draining`) and retires them in
    /// the background. Their `draining` records are asked for at once, so the recorder
    /// writes them in one transaction rather than one each in turn.
    pub(super) async fn start_retires(&mut self, group: &GroupRecord, insts: &[InstanceRecord]) {
        let c = self.controller.clone();
        let retiring: Vec<(&InstanceRecord, Arc<dyn Provider>)> = insts
            .iter()
            .filter_map(|inst| Some((inst, c.provider(&group.tenant, &inst.provider)?)))
            .collect();
        let drained = futures_util::future::join_all(retiring.iter().map(|(inst, _)| {
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
            c.recorder.update(
                &group.tenant,
                &inst.id,
                InstanceStatus::Draining,
                InstanceUpdate::default(),
                c.clock.now(),
                Some(event),
            )
        }))
        .await;
        for ((inst, provider), drained) in retiring.into_iter().zip(drained) {
            match drained {
                Ok(record) => {
                    self.keep_record(record);
                    self.spawn_retire(group, inst.id.clone(), provider);
                }
                Err(_) => self.records_stale = true,
            }
        }
    }

    /// Retires an instance already recorded `draining`, in its own task: out of the
    /// load balancer (drained up to `drain_timeout`, cancellable until then), out of the
    /// provider's own load balancer, then terminated ([`Controller::terminate`]).
    pub(super) fn spawn_retire(
        &mut self,
        group: &GroupRecord,
        id: InstanceId,
        provider: Arc<dyn Provider>,
    ) {
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
                    return (id, None);
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
                let result = c
                    .terminate(
                        &tenant,
                        &name,
                        &id,
                        provider.as_ref(),
                        format!("terminated instance {id}"),
                        format!("cannot delete instance {id}"),
                    )
                    .await;
                match result {
                    Ok(record) => (id, Some(record)),
                    Err(e) => {
                        tracing::error!(instance = %id, "retire: {e}");
                        (id, None)
                    }
                }
            }));
    }

    /// Takes a draining instance back into service instead of creating a new one (a
    /// scale-out during a drain). False when its deletion has already begun.
    pub(super) async fn reuse_draining(&mut self, group: &GroupRecord, id: &InstanceId) -> bool {
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
        match c
            .recorder
            .update(
                &group.tenant,
                id,
                InstanceStatus::Running,
                reason("reused after a cancelled drain"),
                c.clock.now(),
                Some(event),
            )
            .await
        {
            Ok(record) => {
                self.keep_record(record);
                true
            }
            Err(_) => {
                self.records_stale = true;
                false
            }
        }
    }
}

impl Controller {
    /// The one terminate-then-record sequence: the instance is recorded `terminating`
    /// (the durable intent), deleted at its provider, then recorded `terminated` with
    /// `done` as its event; a failed delete leaves it `terminating` with a
    /// `provider_error` event (`failed: <error>; will retry`), for the next pass or
    /// recovery to finish. Returns the instance's last record.
    pub(super) async fn terminate(
        &self,
        tenant: &TenantId,
        group: &str,
        id: &InstanceId,
        provider: &dyn Provider,
        done: String,
        failed: String,
    ) -> Result<InstanceRecord, StoreError> {
        self.recorder
            .update(
                tenant,
                id,
                InstanceStatus::Terminating,
                InstanceUpdate::default(),
                self.clock.now(),
                None,
            )
            .await?;
        self.stats.provider_call(provider.name(), "delete");
        let (status, kind, msg) = match provider.delete(id, STOP_GRACE).await {
            Ok(()) => (
                InstanceStatus::Terminated,
                EventKind::InstanceTerminated,
                done,
            ),
            Err(e) => {
                self.stats.provider_error(provider.name(), "delete");
                (
                    InstanceStatus::Terminating,
                    EventKind::ProviderError,
                    format!("{failed}: {e}; will retry"),
                )
            }
        };
        let event = self.event(tenant, group, kind, Some(id), msg);
        self.recorder
            .update(
                tenant,
                id,
                status,
                InstanceUpdate::default(),
                self.clock.now(),
                Some(event),
            )
            .await
    }

    /// Stops every live instance (`stop_instances_on_exit`).
    pub(super) async fn stop_all(&self) -> Result<(), StoreError> {
        for inst in self.store.list_live_instances().await? {
            let Some(provider) = self.provider(&inst.tenant, &inst.provider) else {
                continue;
            };
            self.terminate(
                &inst.tenant,
                &inst.group,
                &inst.id,
                provider.as_ref(),
                format!("stopped instance {} on exit", inst.id),
                format!("cannot stop instance {} on exit", inst.id),
            )
            .await?;
        }
        Ok(())
    }
}
