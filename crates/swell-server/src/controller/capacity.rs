//! What may be created: reads the tenant's quota and the providers' room for the
//! planner ([`swell_core::plan`] decides the cut). Only read for a scale-out: they cost
//! store reads and provider calls (`capacity`, `instance_size`).

use super::*;
use swell_core::plan::{PlanInput, QuotaLimits, QuotaSize, QuotaUse, Room, Size, TenantQuota};

impl GroupWorker {
    /// Fills `input` with the tenant's quota (and what its other groups use of it) and
    /// each provider's room, instance size and quota size.
    pub(super) async fn read_caps(
        &mut self,
        group: &GroupRecord,
        providers: &[Arc<dyn Provider>],
        input: &mut PlanInput,
    ) {
        input.quota = self.tenant_quota(group).await;
        let sized = matches!(input.quota, TenantQuota::Limited { limits, .. } if limits.sized());
        let c = self.controller.clone();
        for p in input.providers.iter_mut() {
            let Some(provider) = providers.iter().find(|q| q.name() == p.name) else {
                continue;
            };
            if sized {
                p.quota_size = quota_size_of(
                    Some(provider.as_ref()),
                    &p.name,
                    &group.spec.template,
                    &group.spec.name,
                )
                .await;
            }
            c.stats.provider_call(&p.name, "capacity");
            let cap = match provider.capacity().await {
                Ok(cap) => cap,
                Err(e) => {
                    c.stats.provider_error(&p.name, "capacity");
                    // The create itself will report what is wrong; no cap on a guess.
                    tracing::warn!(group = %group.spec.name, "provider capacity: {e}");
                    None
                }
            };
            p.room = cap.map(|cap| Room {
                instances: cap.instances,
                vcpus: cap.vcpus,
                memory_mb: cap.memory_mb,
            });
            // The size is the provider's (an OpenStack flavor), not the template's
            // numbers, which are often left at their defaults; only asked when there is
            // a vCPU or memory room to divide.
            p.size = match cap {
                Some(cap) if cap.vcpus.is_some() || cap.memory_mb.is_some() => {
                    match provider.instance_size(&group.spec.template).await {
                        Ok(size) => size.map(|s| Size {
                            vcpus: s.vcpus,
                            memory_mb: s.memory_mb,
                        }),
                        Err(e) => {
                            // As for capacity: the create will say what is wrong; count
                            // instances only rather than divide by a guess.
                            tracing::warn!(group = %group.spec.name, "provider instance size: {e}");
                            None
                        }
                    }
                }
                _ => None,
            };
        }
    }

    /// The tenant's quota and what its *other* groups' live instances take of it, each
    /// counted at the size its provider gives it (sizes only read under a vCPU or
    /// memory limit, each (group, provider) pair once).
    async fn tenant_quota(&mut self, group: &GroupRecord) -> TenantQuota {
        let c = self.controller.clone();
        let quota = match c.store.get_quota(&group.tenant).await {
            Ok(q) => q,
            Err(StoreError::NotFound { .. }) => return TenantQuota::Unlimited,
            Err(e) => {
                self.set_status(WorkerStatus::StoreError(e.to_string()));
                return TenantQuota::Unreadable;
            }
        };
        let limits = QuotaLimits {
            max_instances: quota.max_instances,
            max_vcpus: quota.max_vcpus,
            max_memory_mb: quota.max_memory_mb,
        };
        if limits == QuotaLimits::default() {
            return TenantQuota::Unlimited;
        }
        // Counted by the store (per group, provider and status), not read row by row:
        // a scale-out under a quota costs the same whatever the fleet's size.
        let (Ok(groups), Ok(live)) = (
            c.store.list_groups(&group.tenant).await,
            c.store.count_live_instances(Some(&group.tenant)).await,
        ) else {
            return TenantQuota::Unreadable;
        };
        let sized = limits.sized();
        let mut sizes: HashMap<(&str, &str), QuotaSize> = HashMap::new();
        let mut others = QuotaUse {
            instances: 0,
            size: QuotaSize::ZERO,
        };
        for inst in live
            .iter()
            .filter(|i| i.group != group.spec.name && i.status.counts_toward_capacity())
        {
            others.instances += inst.count;
            if !sized {
                continue;
            }
            // A live instance keeps its group's record until it is gone (a deleted
            // group's record waits for its last instance), so a miss is a race with the
            // deletion: the instance counts by number only.
            let Some(g) = groups.iter().find(|g| g.spec.name == inst.group) else {
                continue;
            };
            let key = (inst.group.as_str(), inst.provider.as_str());
            let size = match sizes.get(&key) {
                Some(size) => *size,
                None => {
                    let provider = c.provider(&group.tenant, &inst.provider);
                    let size = quota_size_of(
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
            others.size = others.size.plus(size.times(inst.count));
        }
        TenantQuota::Limited { limits, others }
    }
}

/// What one instance of `template` on `provider` (named `name`, `None` when not
/// configured here) counts against a tenant's vCPU and memory quota, falling back to
/// the template's numbers when the provider cannot say; unknown when neither can (see
/// [`QuotaSize`]: unknown is never read as 0).
pub(super) async fn quota_size_of(
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
        // The provider says instances of this template take nothing it can count (the
        // template's own numbers are both 0): a known 0.
        Ok(None) => QuotaSize::ZERO,
        Err(e) => {
            tracing::warn!(
                group,
                provider = name,
                "instance size for the tenant's quota: {e}; counting the template's vcpus {} and memory_mb {} (0: unknown, no scale-out under that quota)",
                template.vcpus,
                template.memory_mb
            );
            super::reconciler::template_size(template)
        }
    }
}
