//! `apply`: a tenant document (the groups one tenant wants) applied whole. Every group is
//! checked first with the single-group create and update rules; then every change is
//! written in ONE store transaction ([`swell_store::Store::apply_groups`]), so a bad
//! group, a taken port or a dropped connection never leaves half a document applied.

use crate::service::{Result, Service, ServiceError};
use swell_core::{EventKind, GroupName, GroupSpec, TenantId, ValidationError};
use swell_lb::LoadBalancer;
use swell_store::{GroupRecord, GroupWrite};

/// What `apply` does (or, in a dry run, would do) to one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyAction {
    /// The group is new.
    Create,
    /// The group exists with another document.
    Update,
    /// The group exists with this very document: nothing is written.
    Unchanged,
    /// The group is not in the document and `prune` was asked: it is deleted.
    Delete,
}

impl ApplyAction {
    /// The action as the API and the CLI say it.
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyAction::Create => "create",
            ApplyAction::Update => "update",
            ApplyAction::Unchanged => "unchanged",
            ApplyAction::Delete => "delete",
        }
    }
}

/// One line of an apply's plan: a group, its action, and (unless a dry run) the group
/// as stored afterwards.
#[derive(Debug, Clone)]
pub struct ApplyChange {
    /// The group's name.
    pub group: String,
    /// What is done to it.
    pub action: ApplyAction,
    /// The group after the apply (the current one for `unchanged`); `None` in a dry run
    /// for groups that would be created.
    pub record: Option<GroupRecord>,
}

/// The options of an apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Delete the tenant's groups the document does not list.
    pub prune: bool,
    /// Check everything and return the plan, changing nothing.
    pub dry_run: bool,
}

/// `groups[i]`, with the group's name when it is a valid one (never an unbounded or
/// hostile string in a message).
fn group_label(i: usize, name: &str) -> String {
    match GroupName::new(name.to_string()) {
        Ok(_) => format!("groups[{i}] (`{name}`)"),
        Err(_) => format!("groups[{i}]"),
    }
}

/// An error of group `i`'s checks, placed in the document: the field under `groups[i]`,
/// the message naming the group.
fn in_group(i: usize, name: &str, e: ServiceError) -> ServiceError {
    let label = group_label(i, name);
    let place = |v: ValidationError| {
        let mut v = v.within(&format!("groups[{i}]"));
        if GroupName::new(name.to_string()).is_ok() {
            v.rule = format!("group `{name}`: {}", v.rule);
        }
        v
    };
    match e {
        ServiceError::Invalid(v) => ServiceError::Invalid(place(v)),
        ServiceError::NotGranted(v) => ServiceError::NotGranted(place(v)),
        ServiceError::Taken(v) => ServiceError::Taken(place(v)),
        ServiceError::Unknown(v) => ServiceError::Unknown(v.within(&format!("groups[{i}]"))),
        ServiceError::Forbidden(m) => ServiceError::Forbidden(format!("{label}: {m}")),
        ServiceError::State(m) => ServiceError::State(format!("{label}: {m}")),
        other => other,
    }
}

impl Service {
    /// Applies a tenant document: creates its new groups, updates the changed ones,
    /// leaves the same ones alone and, with `prune`, deletes the tenant's groups it does
    /// not list. `document_tenant` is the document's `tenant:`, which must be the
    /// caller's when given. All groups are checked before anything is written, with
    /// the rules of `create_group` and `update_group`; the writes are one transaction.
    /// The plan, in the document's order, then the deletions by name.
    pub async fn apply(
        &self,
        tenant: &TenantId,
        document_tenant: Option<&str>,
        specs: Vec<GroupSpec>,
        options: ApplyOptions,
    ) -> Result<Vec<ApplyChange>> {
        if let Some(t) = document_tenant
            && t != tenant.as_str()
        {
            return Err(ValidationError::new(
                "tenant",
                format!(
                    "the document is for tenant `{t}` but the credential acts in `{tenant}`: log in to `{t}`"
                ),
            )
            .into());
        }
        // One listen check for the whole document, held until it is stored.
        let _listen = self.listen_lock.lock().await;
        let existing = self.list_groups(tenant).await?;
        let mut plan: Vec<(ApplyAction, GroupSpec, Option<GroupRecord>)> = Vec::new();
        for (i, spec) in specs.into_iter().enumerate() {
            if let Some(j) = plan.iter().position(|(_, s, _)| s.name == spec.name) {
                return Err(ValidationError::new(
                    format!("groups[{i}].name"),
                    format!("group `{}` is listed twice (also groups[{j}])", spec.name),
                )
                .into());
            }
            let name = spec.name.clone();
            let exists = existing.iter().any(|g| g.spec.name == name);
            let (action, spec, current) = if exists {
                let (current, spec) = self
                    .check_group_update(tenant, &name, spec)
                    .await
                    .map_err(|e| in_group(i, &name, e))?;
                let action = if current.spec == spec {
                    ApplyAction::Unchanged
                } else {
                    ApplyAction::Update
                };
                (action, spec, Some(current))
            } else {
                let spec = self
                    .check_new_group(tenant, spec)
                    .await
                    .map_err(|e| in_group(i, &name, e))?;
                (ApplyAction::Create, spec, None)
            };
            plan.push((action, spec, current));
        }
        // Each create was checked against the stored count alone: the document's new
        // groups together must fit `max_groups` too.
        let creates = plan
            .iter()
            .filter(|(action, _, _)| matches!(action, ApplyAction::Create))
            .count();
        if creates > 1 {
            let exists = self.store().get_tenant(tenant).await?.is_some();
            self.check_group_limit(tenant, exists, creates).await?;
        }
        let mut deletions = Vec::new();
        if options.prune {
            for g in &existing {
                if !g.deleting && !plan.iter().any(|(_, s, _)| s.name == g.spec.name) {
                    deletions.push(g.clone());
                }
            }
        }

        // New load balancer addresses are bound before anything is written, so that a
        // taken port fails the whole document; a dry run lets them go again at once.
        let mut bound: Vec<Option<LoadBalancer>> = Vec::with_capacity(plan.len());
        for (i, (action, spec, current)) in plan.iter().enumerate() {
            let lb = match action {
                ApplyAction::Create | ApplyAction::Update => {
                    self.bind_if_needed(spec, current.as_ref().map(|c| &c.spec))
                        .await
                }
                ApplyAction::Unchanged | ApplyAction::Delete => Ok(None),
            };
            match lb {
                Ok(lb) => bound.push(lb),
                Err(e) => {
                    release(bound).await;
                    return Err(in_group(i, &spec.name, e));
                }
            }
        }

        if options.dry_run {
            release(bound).await;
            let mut changes: Vec<ApplyChange> = plan
                .into_iter()
                .map(|(action, spec, current)| ApplyChange {
                    group: spec.name,
                    action,
                    record: current,
                })
                .collect();
            changes.extend(deletions.into_iter().map(|g| ApplyChange {
                group: g.spec.name.clone(),
                action: ApplyAction::Delete,
                record: Some(g),
            }));
            return Ok(changes);
        }

        let mut writes = Vec::new();
        for (action, spec, _) in &plan {
            let name = &spec.name;
            match action {
                ApplyAction::Create => writes.push(GroupWrite::Create {
                    spec: spec.clone(),
                    event: self.event(
                        tenant,
                        name,
                        EventKind::GroupCreated,
                        format!("group {name} created ({}..{}) by apply", spec.min, spec.max),
                    ),
                }),
                ApplyAction::Update => writes.push(GroupWrite::Update {
                    spec: spec.clone(),
                    event: self.event(
                        tenant,
                        name,
                        EventKind::GroupUpdated,
                        format!("group {name} updated by apply"),
                    ),
                }),
                ApplyAction::Unchanged | ApplyAction::Delete => {}
            }
        }
        for g in &deletions {
            let name = &g.spec.name;
            writes.push(GroupWrite::MarkDeleting {
                name: name.clone(),
                event: self.event(
                    tenant,
                    name,
                    EventKind::GroupDeleted,
                    format!("group {name} is being deleted (pruned by apply)"),
                ),
            });
        }
        let mut records = match self
            .store
            .apply_groups(tenant, &writes, self.clock.now())
            .await
        {
            Ok(records) => records.into_iter(),
            Err(e) => {
                release(bound).await;
                return Err(e.into());
            }
        };

        // Committed: the workers learn of it (a new group's worker starts).
        let mut changes = Vec::new();
        for ((action, spec, current), lb) in plan.into_iter().zip(bound) {
            let record = match action {
                ApplyAction::Create => {
                    let record = records.next();
                    if let Some(r) = &record {
                        self.controller().spawn_worker(r, lb).await;
                    }
                    record
                }
                ApplyAction::Update => {
                    self.controller().notify(tenant, &spec.name, lb);
                    records.next()
                }
                ApplyAction::Unchanged | ApplyAction::Delete => current,
            };
            changes.push(ApplyChange {
                group: spec.name,
                action,
                record,
            });
        }
        for g in deletions {
            self.controller().notify(tenant, &g.spec.name, None);
            changes.push(ApplyChange {
                group: g.spec.name,
                action: ApplyAction::Delete,
                record: records.next(),
            });
        }
        Ok(changes)
    }
}

/// Lets go of load balancers bound for an apply that did not happen.
async fn release(bound: Vec<Option<LoadBalancer>>) {
    for lb in bound.into_iter().flatten() {
        lb.shutdown().await;
    }
}
