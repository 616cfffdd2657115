//! Recovery at start: finishes or undoes what a crash interrupted.

use super::*;

impl Controller {
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
                self.recorder
                    .update(&inst.tenant, &inst.id, status, update, now, Some(event))
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
    pub(super) async fn finish_create(
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
}
