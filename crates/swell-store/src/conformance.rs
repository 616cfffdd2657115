//! The conformance suite: what every [`Store`] adapter must do, checked the same way for
//! each (STYLE.md 5; model: garage `src/db/test.rs`).
//!
//! Each check is an `async fn(&dyn Store)` that panics on the first broken rule. Checks
//! use their own tenants (named after the check), so they may share one store and run in
//! any order, one after another or at once; cross-tenant listings are filtered to the
//! check's tenants. [`CHECKS`] lists them all; [`run_all`] runs them in turn.
//!
//! ```ignore
//! let store = SqliteStore::open_in_memory().await?;
//! swell_store::conformance::run_all(&store).await;
//! ```

use crate::{
    ApiKeyRecord, DeliveryOutcome, DeliveryRecord, EventFilter, EventRecord, GroupWrite,
    InstanceChange, InstanceOwner, InstanceRecord, InstanceUpdate, NewAudit, NewEvent, PriceRecord,
    ProviderRecord, Quota, Role, Sealed, Store, StoreError, TenantRecord, TokenRecord, UserRecord,
    WebhookRecord,
};
use std::future::Future;
use std::pin::Pin;
use swell_core::{
    Cause, EventKind, Grants, GroupSpec, InstanceId, InstanceStatus, LearnedState, Lifecycle,
    LoadSummary, Metric, ProviderKind, TenantId, Timestamp,
};

/// A boxed check, as listed in [`CHECKS`].
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// One named check.
pub type Check = for<'a> fn(&'a dyn Store) -> CheckFuture<'a>;

macro_rules! checks {
    ($($name:ident),* $(,)?) => {
        /// Every check, by name.
        pub const CHECKS: &[(&str, Check)] = &[
            $((stringify!($name), |s| Box::pin($name(s)))),*
        ];
    };
}

/// What a group's policies learned is replaced as a whole, kept per tenant and group,
/// and removed with its group; a group that does not exist keeps none.
pub async fn learned_states(store: &dyn Store) {
    let (a, b) = (tenant("learned-a"), tenant("learned-b"));
    for x in [&a, &b] {
        store.ensure_tenant(x, t(1)).await.expect("ensure_tenant");
        new_group(store, x, "web", 1, 5).await;
    }
    let state = |policy: &str, scored: u64| LearnedState {
        policy: policy.into(),
        state: serde_json::json!({"scored": scored, "histograms": [[[3, 0.5]]]}),
    };
    let read = |x: &TenantId| {
        let x = x.clone();
        async move {
            store
                .learned_states(&x, "web")
                .await
                .expect("learned_states")
        }
    };
    assert!(read(&a).await.is_empty());
    let first = [state("swell#0", 100), state("predictive#0", 7)];
    store
        .save_learned_states(&a, "web", &first, t(10))
        .await
        .expect("save_learned_states");
    store
        .save_learned_states(&b, "web", &[state("swell#0", 1)], t(10))
        .await
        .expect("save_learned_states in b");
    assert_eq!(
        read(&a).await,
        [state("predictive#0", 7), state("swell#0", 100)]
    );
    // A later save replaces the whole set: the predictive policy was removed.
    store
        .save_learned_states(&a, "web", &[state("swell#0", 250)], t(20))
        .await
        .expect("save_learned_states again");
    assert_eq!(read(&a).await, [state("swell#0", 250)]);
    assert_eq!(read(&b).await, [state("swell#0", 1)]);
    assert_not_found(
        store.save_learned_states(&a, "nope", &first, t(30)).await,
        "group",
        "a group that does not exist",
    );

    store.delete_group(&a, "web").await.expect("delete_group");
    new_group(store, &a, "web", 1, 5).await;
    assert!(
        read(&a).await.is_empty(),
        "a new group of the same name starts empty"
    );
    assert_eq!(read(&b).await, [state("swell#0", 1)]);
}

checks!(
    group_lifecycle,
    group_conflict,
    tenant_isolation,
    desired_clamped_into_bounds,
    instance_order,
    instance_transitions,
    instance_batches,
    list_instances_include_final,
    live_instances,
    events_filters,
    events_are_announced_on_commit,
    events_default_limit,
    failed_transactions_record_nothing,
    concurrent_writes,
    tenants_and_quotas,
    tenant_grants,
    users_roles_and_tokens,
    api_keys_owners_audit_credentials,
    load_history,
    metric_points,
    metric_intervals,
    learned_states,
    apply_groups_all_or_none,
    provider_definitions,
    suspend_and_resume,
    instance_protection,
    prices_and_period_instances,
    webhooks_and_deliveries,
);

/// Runs every check in [`CHECKS`], one after another, on `store`.
pub async fn run_all(store: &dyn Store) {
    for (_, check) in CHECKS {
        check(store).await;
    }
}

// ---- fixtures ----

fn tenant(name: &str) -> TenantId {
    TenantId::new(name).expect("a valid tenant name")
}

fn t(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}

/// A valid group spec named `name` with bounds `[min, max]`.
pub fn spec(name: &str, min: u32, max: u32) -> GroupSpec {
    let spec: GroupSpec = serde_json::from_value(serde_json::json!({
        "name": name,
        "template": {"command": ["app", "--port", "{port}"], "env": {"MODE": "test"}},
        "min": min,
        "max": max,
        "cooldown": "30s",
        "policies": [{"type": "threshold", "scale_out_above": 20, "evaluation_period": "40s"}],
    }))
    .expect("a valid group spec");
    spec.validate().expect("a valid group spec");
    spec
}

fn event(tenant: &TenantId, group: &str, kind: EventKind, at: i64) -> NewEvent {
    NewEvent {
        tenant: tenant.clone(),
        group: group.to_string(),
        at: t(at),
        kind,
        instance_id: None,
        cause: None,
        message: format!("{kind} at {at}"),
    }
}

/// A `pending` create intent of `id` in `group`, recorded at `at` ms.
pub fn instance(tenant: &TenantId, group: &str, id: &str, at: i64) -> InstanceRecord {
    InstanceRecord {
        id: InstanceId(id.to_string()),
        tenant: tenant.clone(),
        group: group.to_string(),
        status: InstanceStatus::Pending,
        lifecycle: Lifecycle::Permanent,
        created_order: 99, // the store assigns it
        provider: "process".into(),
        host: None,
        address: None,
        native_id: None,
        protected: false,
        status_reason: None,
        created_at: t(at),
        started_at: None,
        updated_at: t(at),
    }
}

async fn events_of(store: &dyn Store, tenant: &TenantId, group: &str) -> Vec<EventRecord> {
    store
        .list_events(tenant, group, &EventFilter::default())
        .await
        .expect("list_events")
}

async fn new_group(store: &dyn Store, tenant: &TenantId, name: &str, min: u32, max: u32) {
    store
        .create_group(
            tenant,
            &spec(name, min, max),
            t(1_000),
            event(tenant, name, EventKind::GroupCreated, 1_000),
        )
        .await
        .expect("create_group");
}

fn assert_not_found(result: Result<impl std::fmt::Debug, StoreError>, kind: &str, what: &str) {
    match result {
        Err(StoreError::NotFound { kind: k, .. }) if k == kind => {}
        other => panic!("{what}: expected NotFound({kind}), got {other:?}"),
    }
}

// ---- checks ----

/// Create, get, list, update, set desired, mark deleting and delete a group; every
/// change records its event; deleting keeps the events and removes the instances.
pub async fn group_lifecycle(store: &dyn Store) {
    let a = tenant("lifecycle-a");
    store.ensure_tenant(&a, t(1)).await.expect("ensure_tenant");
    store
        .ensure_tenant(&a, t(2))
        .await
        .expect("ensure_tenant twice");

    let mut web = spec("web", 1, 5);
    web.desired_capacity = Some(3);
    let created = store
        .create_group(
            &a,
            &web,
            t(1_000),
            event(&a, "web", EventKind::GroupCreated, 1_000),
        )
        .await
        .expect("create_group");
    assert_eq!(created.tenant, a);
    assert_eq!(created.spec, web);
    assert_eq!(created.desired_capacity, 3, "desired starts at spec's");
    assert_eq!(created.last_scaling_at, None);
    assert!(!created.deleting);
    assert_eq!(
        (created.created_at, created.updated_at),
        (t(1_000), t(1_000))
    );
    new_group(store, &a, "api", 2, 4).await;

    let got = store.get_group(&a, "web").await.expect("get_group");
    assert_eq!(
        got.as_ref(),
        Some(&created),
        "get returns what create returned"
    );
    let api = store
        .get_group(&a, "api")
        .await
        .expect("get_group")
        .unwrap();
    assert_eq!(api.desired_capacity, 2, "desired starts at min");
    assert_eq!(store.get_group(&a, "nope").await.expect("get_group"), None);

    let names: Vec<_> = store
        .list_groups(&a)
        .await
        .expect("list_groups")
        .into_iter()
        .map(|g| g.spec.name)
        .collect();
    assert_eq!(names, ["api", "web"], "list_groups is by name");
    let all: Vec<_> = store
        .list_all_groups()
        .await
        .expect("list_all_groups")
        .into_iter()
        .filter(|g| g.tenant == a)
        .map(|g| g.spec.name)
        .collect();
    assert_eq!(all, ["api", "web"]);

    let mut web2 = spec("web", 1, 5);
    web2.cooldown = std::time::Duration::from_secs(90);
    web2.template.command = vec!["app2".into(), "{port}".into()];
    let updated = store
        .update_group(
            &a,
            &web2,
            t(2_000),
            event(&a, "web", EventKind::GroupUpdated, 2_000),
        )
        .await
        .expect("update_group");
    assert_eq!(updated.spec, web2);
    assert_eq!(updated.desired_capacity, 3, "in bounds: unchanged");
    assert_eq!(
        (updated.created_at, updated.updated_at),
        (t(1_000), t(2_000))
    );
    assert_eq!(
        store.get_group(&a, "web").await.unwrap().as_ref(),
        Some(&updated)
    );

    let set = store
        .set_desired_capacity(
            &a,
            "web",
            4,
            Some(t(3_000)),
            event(&a, "web", EventKind::ScaleOut, 3_000),
        )
        .await
        .expect("set_desired_capacity");
    assert_eq!(set.desired_capacity, 4);
    assert_eq!(set.last_scaling_at, Some(t(3_000)));
    let set = store
        .set_desired_capacity(
            &a,
            "web",
            2,
            None,
            event(&a, "web", EventKind::DesiredCapacitySet, 4_000),
        )
        .await
        .expect("set_desired_capacity");
    assert_eq!(set.desired_capacity, 2);
    assert_eq!(
        set.last_scaling_at,
        Some(t(3_000)),
        "no scaling_at keeps the cooldown reference"
    );
    assert_eq!(
        store.get_group(&a, "web").await.unwrap().as_ref(),
        Some(&set)
    );

    let marked = store
        .mark_group_deleting(&a, "web", event(&a, "web", EventKind::GroupDeleted, 5_000))
        .await
        .expect("mark_group_deleting");
    assert!(marked.deleting);
    assert!(store.get_group(&a, "web").await.unwrap().unwrap().deleting);

    store
        .create_instance(&instance(&a, "web", "lifecycle-i1", 5_500), None)
        .await
        .expect("create_instance");
    store.delete_group(&a, "web").await.expect("delete_group");
    assert_eq!(store.get_group(&a, "web").await.unwrap(), None);
    assert_eq!(
        store
            .get_instance(&a, &InstanceId("lifecycle-i1".into()))
            .await
            .unwrap(),
        None,
        "delete_group removes the instances"
    );
    assert!(
        store
            .list_instances(&a, "web", true)
            .await
            .unwrap()
            .is_empty()
    );
    assert_not_found(store.delete_group(&a, "web").await, "group", "delete twice");

    let kinds: Vec<_> = events_of(store, &a, "web")
        .await
        .into_iter()
        .map(|e| e.event.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            EventKind::GroupCreated,
            EventKind::GroupUpdated,
            EventKind::ScaleOut,
            EventKind::DesiredCapacitySet,
            EventKind::GroupDeleted,
        ],
        "every change recorded its event, and deletion kept them"
    );
    let names: Vec<_> = store
        .list_groups(&a)
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.spec.name)
        .collect();
    assert_eq!(names, ["api"]);
}

/// Suspending records since when, survives a reopen of the row (a re-read), keeps its
/// first time when repeated, is cleared by a resume, leaves the desired capacity and the
/// spec alone, records each call's event, and is scoped by tenant.
pub async fn suspend_and_resume(store: &dyn Store) {
    let (a, b) = (tenant("suspend-a"), tenant("suspend-b"));
    new_group(store, &a, "web", 1, 5).await;
    new_group(store, &b, "web", 1, 5).await;
    let before = store.get_group(&a, "web").await.unwrap().unwrap();
    assert_eq!(before.suspended_at, None, "a new group is not suspended");

    let g = store
        .set_suspended(
            &a,
            "web",
            true,
            event(&a, "web", EventKind::ScalingSuspended, 5_000),
        )
        .await
        .expect("suspend");
    assert_eq!(g.suspended_at, Some(t(5_000)));
    let again = store
        .set_suspended(
            &a,
            "web",
            true,
            event(&a, "web", EventKind::ScalingSuspended, 6_000),
        )
        .await
        .expect("suspend twice");
    assert_eq!(again.suspended_at, Some(t(5_000)), "the first time is kept");
    let read = store.get_group(&a, "web").await.unwrap().unwrap();
    assert_eq!(
        read.suspended_at,
        Some(t(5_000)),
        "stored, not only returned"
    );
    assert_eq!(
        (read.desired_capacity, &read.spec),
        (before.desired_capacity, &before.spec)
    );
    let other = store.get_group(&b, "web").await.unwrap().unwrap();
    assert_eq!(
        other.suspended_at, None,
        "another tenant's group of the same name"
    );
    assert!(
        store
            .list_groups(&a)
            .await
            .unwrap()
            .iter()
            .all(|g| g.suspended_at == Some(t(5_000)))
    );

    let resumed = store
        .set_suspended(
            &a,
            "web",
            false,
            event(&a, "web", EventKind::ScalingResumed, 7_000),
        )
        .await
        .expect("resume");
    assert_eq!(resumed.suspended_at, None);
    assert_eq!(
        store
            .get_group(&a, "web")
            .await
            .unwrap()
            .unwrap()
            .suspended_at,
        None
    );
    let kinds: Vec<EventKind> = events_of(store, &a, "web")
        .await
        .iter()
        .map(|e| e.event.kind)
        .collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == EventKind::ScalingSuspended)
            .count(),
        2
    );
    assert!(kinds.contains(&EventKind::ScalingResumed));

    let err = store
        .set_suspended(
            &a,
            "nope",
            true,
            event(&a, "nope", EventKind::ScalingSuspended, 8_000),
        )
        .await
        .expect_err("no such group");
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
}

/// Protection changes only the flag (status, address, reason stay), records its event,
/// is scoped by tenant and group, and leaves a retiring instance unchanged without an
/// event.
pub async fn instance_protection(store: &dyn Store) {
    let (a, b) = (tenant("protect-a"), tenant("protect-b"));
    new_group(store, &a, "web", 0, 5).await;
    new_group(store, &a, "api", 0, 5).await;
    new_group(store, &b, "web", 0, 5).await;
    let mut rec = instance(&a, "web", "protect-i1", 1_000);
    rec.status = InstanceStatus::Running;
    rec.address = Some("127.0.0.1:4000".into());
    let rec = store.create_instance(&rec, None).await.unwrap();
    let id = rec.id.clone();
    let protect = |on: bool, at: i64| {
        let mut e = event(
            &a,
            "web",
            if on {
                EventKind::InstanceProtected
            } else {
                EventKind::InstanceUnprotected
            },
            at,
        );
        e.instance_id = Some(id.clone());
        e
    };
    let p = store
        .set_instance_protected(&a, "web", &id, true, protect(true, 2_000))
        .await
        .expect("protect");
    assert!(p.protected);
    let read = store.get_instance(&a, &id).await.unwrap().unwrap();
    assert!(read.protected);
    assert_eq!(
        (read.status, read.address.as_deref(), read.updated_at),
        (InstanceStatus::Running, Some("127.0.0.1:4000"), t(2_000))
    );
    // Another tenant, or another group of the tenant: not found.
    for (tenant, group) in [(&b, "web"), (&a, "api")] {
        let err = store
            .set_instance_protected(tenant, group, &id, false, protect(false, 2_500))
            .await
            .expect_err("not this tenant's or group's");
        assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
    }
    assert!(
        store
            .get_instance(&a, &id)
            .await
            .unwrap()
            .unwrap()
            .protected
    );
    let u = store
        .set_instance_protected(&a, "web", &id, false, protect(false, 3_000))
        .await
        .expect("unprotect");
    assert!(!u.protected);
    // Draining: returned as it is, no event.
    store
        .update_instance(
            &a,
            &id,
            InstanceStatus::Draining,
            InstanceUpdate::default(),
            t(4_000),
            None,
        )
        .await
        .unwrap();
    let d = store
        .set_instance_protected(&a, "web", &id, true, protect(true, 5_000))
        .await
        .expect("a draining instance is no error");
    assert_eq!((d.status, d.protected), (InstanceStatus::Draining, false));
    let kinds: Vec<EventKind> = events_of(store, &a, "web")
        .await
        .iter()
        .map(|e| e.event.kind)
        .collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| matches!(
                k,
                EventKind::InstanceProtected | EventKind::InstanceUnprotected
            ))
            .count(),
        2,
        "{kinds:?}"
    );
}

/// A taken name is a `Conflict` in its tenant and free in another.
pub async fn group_conflict(store: &dyn Store) {
    let a = tenant("conflict-a");
    let b = tenant("conflict-b");
    new_group(store, &a, "web", 1, 3).await;
    let err = store
        .create_group(
            &a,
            &spec("web", 2, 8),
            t(2_000),
            event(&a, "web", EventKind::GroupCreated, 2_000),
        )
        .await
        .expect_err("same name twice");
    assert!(
        matches!(&err, StoreError::Conflict { kind: "group", name } if name == "web"),
        "{err:?}"
    );
    let g = store.get_group(&a, "web").await.unwrap().unwrap();
    assert_eq!(
        (g.spec.min, g.spec.max),
        (1, 3),
        "the first group is untouched"
    );
    assert_eq!(events_of(store, &a, "web").await.len(), 1);
    new_group(store, &b, "web", 1, 3).await;
}

/// Tenant B can neither see nor change tenant A's groups, instances or events; an event
/// given with a foreign tenant is recorded under the call's tenant.
pub async fn tenant_isolation(store: &dyn Store) {
    let a = tenant("isolation-a");
    let b = tenant("isolation-b");
    store.ensure_tenant(&b, t(1)).await.unwrap();
    new_group(store, &a, "web", 1, 5).await;
    let inst = store
        .create_instance(&instance(&a, "web", "isolation-i1", 1_100), None)
        .await
        .unwrap();
    let id = inst.id.clone();
    let before_group = store.get_group(&a, "web").await.unwrap();

    assert_eq!(store.get_group(&b, "web").await.unwrap(), None);
    assert!(store.list_groups(&b).await.unwrap().is_empty());
    assert_not_found(
        store
            .update_group(
                &b,
                &spec("web", 0, 1),
                t(2_000),
                event(&b, "web", EventKind::GroupUpdated, 2_000),
            )
            .await,
        "group",
        "update a foreign group",
    );
    assert_not_found(
        store
            .set_desired_capacity(
                &b,
                "web",
                4,
                Some(t(2_000)),
                event(&b, "web", EventKind::ScaleOut, 2_000),
            )
            .await,
        "group",
        "set desired on a foreign group",
    );
    assert_not_found(
        store
            .mark_group_deleting(&b, "web", event(&b, "web", EventKind::GroupDeleted, 2_000))
            .await,
        "group",
        "mark a foreign group deleting",
    );
    assert_not_found(
        store.delete_group(&b, "web").await,
        "group",
        "delete a foreign group",
    );
    assert_eq!(store.get_instance(&b, &id).await.unwrap(), None);
    assert!(
        store
            .list_instances(&b, "web", true)
            .await
            .unwrap()
            .is_empty()
    );
    assert_not_found(
        store
            .update_instance(
                &b,
                &id,
                InstanceStatus::Terminating,
                InstanceUpdate::default(),
                t(2_000),
                Some(event(&b, "web", EventKind::InstanceTerminated, 2_000)),
            )
            .await,
        "instance",
        "update a foreign instance",
    );
    assert_not_found(
        store
            .create_instance(&instance(&b, "web", "isolation-i2", 2_000), None)
            .await,
        "group",
        "create an instance in a foreign group",
    );
    assert!(events_of(store, &b, "web").await.is_empty());

    // A's state is untouched.
    assert_eq!(store.get_group(&a, "web").await.unwrap(), before_group);
    assert_eq!(store.get_instance(&a, &id).await.unwrap(), Some(inst));
    assert_eq!(events_of(store, &a, "web").await.len(), 1);

    // The same names in B are B's own.
    new_group(store, &b, "web", 2, 2).await;
    let b_inst = store
        .create_instance(&instance(&b, "web", "isolation-i1", 3_000), None)
        .await
        .expect("the same instance id in another tenant");
    assert_eq!(b_inst.created_order, 1);
    assert_eq!(store.get_group(&a, "web").await.unwrap(), before_group);
    assert_eq!(
        store.list_instances(&a, "web", true).await.unwrap().len(),
        1
    );

    // An event carrying A's tenant, recorded by a call on B, lands in B's log.
    store
        .set_desired_capacity(
            &b,
            "web",
            2,
            None,
            event(&a, "web", EventKind::DesiredCapacitySet, 4_000),
        )
        .await
        .unwrap();
    assert_eq!(events_of(store, &a, "web").await.len(), 1);
    let b_events = events_of(store, &b, "web").await;
    assert_eq!(b_events.len(), 2);
    assert!(b_events.iter().all(|e| e.event.tenant == b));
}

/// `update_group` clamps the desired capacity into the new bounds; so does
/// `set_desired_capacity` if given a value outside them.
pub async fn desired_clamped_into_bounds(store: &dyn Store) {
    let a = tenant("clamp-a");
    let mut s = spec("web", 1, 10);
    s.desired_capacity = Some(5);
    store
        .create_group(
            &a,
            &s,
            t(1_000),
            event(&a, "web", EventKind::GroupCreated, 1_000),
        )
        .await
        .unwrap();
    let update = |min, max, at| {
        let s = spec("web", min, max);
        let a = a.clone();
        async move {
            store
                .update_group(&a, &s, t(at), event(&a, "web", EventKind::GroupUpdated, at))
                .await
                .expect("update_group")
                .desired_capacity
        }
    };
    assert_eq!(
        update(1, 3, 2_000).await,
        3,
        "lowered max pulls desired down"
    );
    assert_eq!(update(4, 8, 3_000).await, 4, "raised min pushes desired up");
    assert_eq!(update(0, 8, 4_000).await, 4, "in bounds: unchanged");
    assert_eq!(
        store
            .get_group(&a, "web")
            .await
            .unwrap()
            .unwrap()
            .desired_capacity,
        4
    );
    let g = store
        .set_desired_capacity(
            &a,
            "web",
            50,
            None,
            event(&a, "web", EventKind::DesiredCapacitySet, 5_000),
        )
        .await
        .unwrap();
    assert_eq!(
        g.desired_capacity, 8,
        "set_desired_capacity stays within max"
    );
}

/// `created_order` is 1, 2, 3… per group, whatever the caller passed, and keeps growing
/// past final instances.
pub async fn instance_order(store: &dyn Store) {
    let a = tenant("order-a");
    new_group(store, &a, "web", 0, 10).await;
    new_group(store, &a, "api", 0, 10).await;
    let mut orders = Vec::new();
    for i in 1..=3 {
        let mut rec = instance(&a, "web", &format!("order-web-{i}"), 2_000 + i);
        rec.lifecycle = Lifecycle::ScaledUp;
        rec.protected = i == 2;
        rec.status_reason = Some("intent".into());
        let stored = store
            .create_instance(
                &rec,
                Some(NewEvent {
                    instance_id: Some(rec.id.clone()),
                    ..event(&a, "web", EventKind::InstanceCreated, 2_000 + i)
                }),
            )
            .await
            .expect("create_instance");
        assert_eq!(
            stored,
            InstanceRecord {
                created_order: i,
                ..rec.clone()
            }
        );
        assert_eq!(
            store.get_instance(&a, &rec.id).await.unwrap(),
            Some(stored.clone()),
            "get returns what create returned"
        );
        orders.push(stored.created_order);
    }
    assert_eq!(orders, [1, 2, 3]);
    let api1 = store
        .create_instance(&instance(&a, "api", "order-api-1", 3_000), None)
        .await
        .unwrap();
    assert_eq!(api1.created_order, 1, "numbering is per group");

    store
        .update_instance(
            &a,
            &InstanceId("order-web-3".into()),
            InstanceStatus::Failed,
            InstanceUpdate::default(),
            t(4_000),
            None,
        )
        .await
        .unwrap();
    let next = store
        .create_instance(&instance(&a, "web", "order-web-4", 5_000), None)
        .await
        .unwrap();
    assert_eq!(next.created_order, 4, "final instances keep their number");

    let events = events_of(store, &a, "web").await;
    let created: Vec<_> = events
        .iter()
        .filter(|e| e.event.kind == EventKind::InstanceCreated)
        .map(|e| e.event.instance_id.clone().unwrap().0)
        .collect();
    assert_eq!(created, ["order-web-1", "order-web-2", "order-web-3"]);
}

/// `update_instance` moves through the status machine, applies only the fields it is
/// given, stamps `updated_at`, and records its event.
pub async fn instance_transitions(store: &dyn Store) {
    let a = tenant("transitions-a");
    new_group(store, &a, "web", 0, 5).await;
    let mut rec = instance(&a, "web", "transitions-i1", 2_000);
    rec.status_reason = Some("create intent".into());
    let rec = store.create_instance(&rec, None).await.unwrap();
    let id = rec.id.clone();

    let cause = Cause {
        policy: "threshold".into(),
        metric: Some("cpu".into()),
        value: Some(42.5),
        threshold: Some(20.0),
        before: 1,
        after: 2,
        reason: "cpu 42.5 > 20".into(),
    };
    let running = store
        .update_instance(
            &a,
            &id,
            InstanceStatus::Running,
            InstanceUpdate {
                host: Some("localhost".into()),
                address: Some("127.0.0.1:41234".into()),
                native_id: Some("4242".into()),
                started_at: Some(t(3_000)),
                status_reason: None,
                protected: None,
            },
            t(3_100),
            Some(NewEvent {
                instance_id: Some(id.clone()),
                cause: Some(cause.clone()),
                ..event(&a, "web", EventKind::InstanceCreated, 3_100)
            }),
        )
        .await
        .expect("pending -> running");
    let expect = InstanceRecord {
        status: InstanceStatus::Running,
        host: Some("localhost".into()),
        address: Some("127.0.0.1:41234".into()),
        native_id: Some("4242".into()),
        started_at: Some(t(3_000)),
        updated_at: t(3_100),
        ..rec.clone()
    };
    assert_eq!(running, expect);
    assert_eq!(
        running.status_reason.as_deref(),
        Some("create intent"),
        "a field not given is kept"
    );
    assert_eq!(store.get_instance(&a, &id).await.unwrap(), Some(expect));

    let protected = store
        .update_instance(
            &a,
            &id,
            InstanceStatus::Running,
            InstanceUpdate {
                protected: Some(true),
                status_reason: Some("protected by user".into()),
                ..Default::default()
            },
            t(3_500),
            None,
        )
        .await
        .unwrap();
    assert!(protected.protected);
    assert_eq!(
        protected.status_reason.as_deref(),
        Some("protected by user")
    );
    assert_eq!(protected.address.as_deref(), Some("127.0.0.1:41234"));

    let mut at = 4_000;
    for (status, kind) in [
        (InstanceStatus::Draining, EventKind::InstanceDraining),
        (InstanceStatus::Terminating, EventKind::InstanceTerminated),
        (InstanceStatus::Terminated, EventKind::InstanceTerminated),
    ] {
        let r = store
            .update_instance(
                &a,
                &id,
                status,
                InstanceUpdate::default(),
                t(at),
                Some(NewEvent {
                    instance_id: Some(id.clone()),
                    ..event(&a, "web", kind, at)
                }),
            )
            .await
            .unwrap_or_else(|e| panic!("-> {status}: {e}"));
        assert_eq!((r.status, r.updated_at), (status, t(at)));
        assert_eq!(
            store.get_instance(&a, &id).await.unwrap().unwrap().status,
            status
        );
        at += 1_000;
    }

    let events = events_of(store, &a, "web").await;
    assert_eq!(events.len(), 5, "created group + 4 instance events");
    let first = &events[1].event;
    assert_eq!(first.kind, EventKind::InstanceCreated);
    assert_eq!(first.instance_id.as_ref(), Some(&id));
    assert_eq!(first.cause.as_ref(), Some(&cause), "the cause round-trips");
    assert_eq!(first.at, t(3_100));
    assert_eq!(first.message, "instance_created at 3100");
    assert_eq!(
        events.last().unwrap().event.kind,
        EventKind::InstanceTerminated
    );

    assert_not_found(
        store
            .update_instance(
                &a,
                &InstanceId("transitions-nope".into()),
                InstanceStatus::Running,
                InstanceUpdate::default(),
                t(9_000),
                None,
            )
            .await,
        "instance",
        "update a missing instance",
    );
}

/// `create_instances` records a batch of intents all or none, numbered in order after
/// the group's last; `update_instances` applies each change as `update_instance` does,
/// in one transaction, answers `None` for an instance its tenant does not have (writing
/// nothing for it, not even its event), and records the others' events.
pub async fn instance_batches(store: &dyn Store) {
    let (a, b) = (tenant("batches-a"), tenant("batches-b"));
    new_group(store, &a, "web", 0, 10).await;
    new_group(store, &b, "web", 0, 10).await;
    store
        .create_instance(&instance(&a, "web", "batches-a0", 1_000), None)
        .await
        .unwrap();
    let batch: Vec<InstanceRecord> = (1..=3)
        .map(|i| instance(&a, "web", &format!("batches-a{i}"), 2_000 + i))
        .collect();
    let stored = store
        .create_instances(&batch)
        .await
        .expect("create_instances");
    let orders: Vec<i64> = stored.iter().map(|r| r.created_order).collect();
    assert_eq!(
        orders,
        [2, 3, 4],
        "numbered in order after the group's last"
    );
    for (stored, given) in stored.iter().zip(&batch) {
        assert_eq!(
            stored,
            &InstanceRecord {
                created_order: stored.created_order,
                ..given.clone()
            }
        );
    }

    // All or none: a taken id, or a group the tenant does not have, stores nothing.
    let taken = vec![
        instance(&a, "web", "batches-a5", 3_000),
        instance(&a, "web", "batches-a1", 3_000),
    ];
    let e = store.create_instances(&taken).await.unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::Conflict {
                kind: "instance",
                ..
            }
        ),
        "a taken id: {e:?}"
    );
    let elsewhere = vec![
        instance(&a, "web", "batches-a6", 3_000),
        instance(&b, "api", "batches-b6", 3_000),
    ];
    assert_not_found(
        store.create_instances(&elsewhere).await,
        "group",
        "unknown group",
    );
    for id in ["batches-a5", "batches-a6", "batches-b6"] {
        let id = InstanceId(id.into());
        assert_eq!(store.get_instance(&a, &id).await.unwrap(), None, "{id}");
        assert_eq!(store.get_instance(&b, &id).await.unwrap(), None, "{id}");
    }
    assert_eq!(
        store.list_instances(&a, "web", true).await.unwrap().len(),
        4
    );

    let b1 = store
        .create_instances(&[instance(&b, "web", "batches-b1", 4_000)])
        .await
        .unwrap();
    assert_eq!(b1[0].created_order, 1, "numbering is per group");
    let change = |tenant: &TenantId, id: &str, status, at: i64| InstanceChange {
        tenant: tenant.clone(),
        id: InstanceId(id.into()),
        status,
        update: InstanceUpdate {
            host: Some(format!("host-{id}")),
            started_at: Some(t(at)),
            ..InstanceUpdate::default()
        },
        now: t(at),
        event: Some(NewEvent {
            instance_id: Some(InstanceId(id.into())),
            ..event(tenant, "web", EventKind::InstanceCreated, at)
        }),
    };
    let moved = store
        .update_instances(vec![
            change(&a, "batches-a1", InstanceStatus::Running, 5_000),
            // Another tenant's instance is not this tenant's to move.
            change(&a, "batches-b1", InstanceStatus::Running, 5_001),
            change(&b, "batches-b1", InstanceStatus::Running, 5_002),
            change(&a, "batches-a2", InstanceStatus::Failed, 5_003),
        ])
        .await
        .expect("update_instances");
    let summary: Vec<Option<(String, InstanceStatus, Option<String>)>> = moved
        .iter()
        .map(|r| {
            r.as_ref()
                .map(|r| (r.id.0.clone(), r.status, r.host.clone()))
        })
        .collect();
    assert_eq!(
        summary,
        [
            Some((
                "batches-a1".into(),
                InstanceStatus::Running,
                Some("host-batches-a1".into())
            )),
            None,
            Some((
                "batches-b1".into(),
                InstanceStatus::Running,
                Some("host-batches-b1".into())
            )),
            Some((
                "batches-a2".into(),
                InstanceStatus::Failed,
                Some("host-batches-a2".into())
            )),
        ]
    );
    for r in moved.iter().flatten() {
        assert_eq!(
            store.get_instance(&r.tenant, &r.id).await.unwrap().as_ref(),
            Some(r),
            "stored as returned"
        );
    }
    let created = |events: Vec<EventRecord>| -> Vec<(String, Timestamp)> {
        events
            .into_iter()
            .filter(|e| e.event.kind == EventKind::InstanceCreated)
            .map(|e| (e.event.instance_id.unwrap().0, e.event.at))
            .collect()
    };
    assert_eq!(
        created(events_of(store, &a, "web").await),
        [
            ("batches-a1".to_string(), t(5_000)),
            ("batches-a2".to_string(), t(5_003))
        ],
        "the moved instances' events, in order; none for the one not found"
    );
    assert_eq!(
        created(events_of(store, &b, "web").await),
        [("batches-b1".to_string(), t(5_002))]
    );
    assert_eq!(
        store.update_instances(Vec::new()).await.unwrap(),
        Vec::<Option<InstanceRecord>>::new()
    );
}

/// `list_instances` is by `created_order` and hides final instances unless asked.
pub async fn list_instances_include_final(store: &dyn Store) {
    let a = tenant("final-a");
    new_group(store, &a, "web", 0, 10).await;
    let statuses = InstanceStatus::ALL;
    for (i, status) in statuses.iter().enumerate() {
        let id = InstanceId(format!("final-{i}"));
        store
            .create_instance(&instance(&a, "web", id.as_str(), 2_000), None)
            .await
            .unwrap();
        store
            .update_instance(&a, &id, *status, InstanceUpdate::default(), t(3_000), None)
            .await
            .unwrap();
    }
    let all = store.list_instances(&a, "web", true).await.unwrap();
    assert_eq!(
        all.iter().map(|i| i.created_order).collect::<Vec<_>>(),
        (1..=statuses.len() as i64).collect::<Vec<_>>()
    );
    assert_eq!(
        all.iter().map(|i| i.status).collect::<Vec<_>>(),
        statuses.to_vec()
    );
    let live = store.list_instances(&a, "web", false).await.unwrap();
    let expect: Vec<_> = statuses.into_iter().filter(|s| !s.is_final()).collect();
    assert_eq!(live.iter().map(|i| i.status).collect::<Vec<_>>(), expect);
    assert!(
        store
            .list_instances(&a, "other", true)
            .await
            .unwrap()
            .is_empty()
    );
}

/// `list_live_instances` returns every tenant's non-final instances.
pub async fn live_instances(store: &dyn Store) {
    let a = tenant("live-a");
    let b = tenant("live-b");
    for tn in [&a, &b] {
        new_group(store, tn, "web", 0, 10).await;
        for (i, status) in [
            InstanceStatus::Running,
            InstanceStatus::Terminated,
            InstanceStatus::Pending,
            InstanceStatus::Failed,
            InstanceStatus::Draining,
        ]
        .into_iter()
        .enumerate()
        {
            let id = InstanceId(format!("{tn}-{i}"));
            store
                .create_instance(&instance(tn, "web", id.as_str(), 2_000), None)
                .await
                .unwrap();
            store
                .update_instance(tn, &id, status, InstanceUpdate::default(), t(3_000), None)
                .await
                .unwrap();
        }
    }
    let mut live: Vec<_> = store
        .list_live_instances()
        .await
        .expect("list_live_instances")
        .into_iter()
        .filter(|i| i.tenant == a || i.tenant == b)
        .map(|i| (i.tenant.to_string(), i.id.0, i.status))
        .collect();
    live.sort_by(|x, y| x.1.cmp(&y.1));
    let mut expect = Vec::new();
    for tn in ["live-a", "live-b"] {
        expect.push((tn.to_string(), format!("{tn}-0"), InstanceStatus::Running));
        expect.push((tn.to_string(), format!("{tn}-2"), InstanceStatus::Pending));
        expect.push((tn.to_string(), format!("{tn}-4"), InstanceStatus::Draining));
    }
    assert_eq!(live, expect);
    // The same, counted: one tenant's, then every tenant's.
    let counted = |tn: &TenantId, status, count| crate::LiveCount {
        tenant: tn.clone(),
        group: "web".into(),
        provider: "process".into(),
        status,
        count,
    };
    let of_a = vec![
        counted(&a, InstanceStatus::Draining, 1),
        counted(&a, InstanceStatus::Pending, 1),
        counted(&a, InstanceStatus::Running, 1),
    ];
    assert_eq!(
        store
            .count_live_instances(Some(&a))
            .await
            .expect("count_live_instances"),
        of_a
    );
    let all: Vec<crate::LiveCount> = store
        .count_live_instances(None)
        .await
        .expect("count_live_instances")
        .into_iter()
        .filter(|c| c.tenant == a || c.tenant == b)
        .collect();
    assert_eq!(all.len(), 6);
    assert_eq!(all[..3], of_a[..]);
}

/// Every committed transaction that recorded events announces its group once committed
/// ([`crate::events::subscribe`]), whichever write recorded them; a transaction that
/// fails announces nothing.
pub async fn events_are_announced_on_commit(store: &dyn Store) {
    // The channel is the process's, and other tests (another store's copy of this one
    // too) announce on it: a tenant name of this run alone, and only its messages count.
    static RUN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let a = tenant(&format!("announce-{run}"));
    let mut rx = crate::events::subscribe();
    let mut next = async || loop {
        let got = tokio::time::timeout(std::time::Duration::from_secs(30), rx.recv())
            .await
            .expect("an announcement within 30 s");
        match got {
            Ok(m) if m.tenant == a => return m.group,
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(e) => panic!("the channel: {e}"),
        }
    };
    store.ensure_tenant(&a, t(1)).await.expect("ensure_tenant");
    new_group(store, &a, "web", 1, 5).await;
    assert_eq!(next().await, "web", "create_group's event");
    // A failed create (the name is taken) records and announces nothing: the next
    // announcement is the append that follows it.
    let again = store
        .create_group(
            &a,
            &spec("web", 1, 5),
            t(2_000),
            event(&a, "web", EventKind::GroupCreated, 2_000),
        )
        .await;
    assert!(
        matches!(again, Err(StoreError::Conflict { .. })),
        "{again:?}"
    );
    store
        .append_event(event(&a, "api", EventKind::ScaleOut, 3_000))
        .await
        .expect("append_event");
    assert_eq!(
        next().await,
        "api",
        "append_event's, and none of the failed create"
    );
    store
        .set_desired_capacity(
            &a,
            "web",
            2,
            Some(t(4_000)),
            event(&a, "web", EventKind::DesiredCapacitySet, 4_000),
        )
        .await
        .expect("set_desired_capacity");
    assert_eq!(next().await, "web", "set_desired_capacity's event");
}

/// `list_events`: per group, oldest first, `since` ≤ at < `until`, id > `after_id`,
/// and `limit` keeps the newest (or, after an id, the oldest after it).
pub async fn events_filters(store: &dyn Store) {
    let a = tenant("events-a");
    let b = tenant("events-b");
    let mut ids = Vec::new();
    for i in 0..10 {
        let rec = store
            .append_event(event(&a, "web", EventKind::ScaleOut, 1_000 * i))
            .await
            .expect("append_event");
        assert_eq!(rec.event, event(&a, "web", EventKind::ScaleOut, 1_000 * i));
        ids.push(rec.id);
        // Noise in another group and another tenant.
        store
            .append_event(event(&a, "api", EventKind::ScaleIn, 1_000 * i))
            .await
            .unwrap();
        store
            .append_event(event(&b, "web", EventKind::ScaleIn, 1_000 * i))
            .await
            .unwrap();
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");

    let a = &a;
    let list = |filter: EventFilter| async move {
        store
            .list_events(a, "web", &filter)
            .await
            .expect("list_events")
            .into_iter()
            .map(|e| e.event.at.as_millis() / 1_000)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        list(EventFilter::default()).await,
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(
        list(EventFilter {
            since: Some(t(3_000)),
            until: Some(t(6_000)),
            ..Default::default()
        })
        .await,
        [3, 4, 5],
        "since inclusive, until exclusive"
    );
    assert_eq!(
        list(EventFilter {
            limit: Some(3),
            ..Default::default()
        })
        .await,
        [7, 8, 9],
        "limit keeps the newest, oldest first"
    );
    assert_eq!(
        list(EventFilter {
            after_id: Some(ids[6]),
            ..Default::default()
        })
        .await,
        [7, 8, 9]
    );
    assert_eq!(
        list(EventFilter {
            after_id: Some(ids[2]),
            limit: Some(2),
            ..Default::default()
        })
        .await,
        [3, 4],
        "after an id, limit pages forward without gaps"
    );
    assert_eq!(
        list(EventFilter {
            since: Some(t(2_000)),
            until: Some(t(9_000)),
            after_id: Some(ids[4]),
            limit: Some(10),
        })
        .await,
        [5, 6, 7, 8]
    );
    assert!(
        list(EventFilter {
            limit: Some(0),
            ..Default::default()
        })
        .await
        .is_empty()
    );
    assert!(
        list(EventFilter {
            after_id: Some(ids[9]),
            ..Default::default()
        })
        .await
        .is_empty()
    );
    assert!(
        store
            .list_events(a, "nope", &EventFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
}

/// Without a limit, `list_events` returns the newest 1000.
pub async fn events_default_limit(store: &dyn Store) {
    let a = tenant("event-limit-a");
    for i in 0..1_005 {
        store
            .append_event(event(&a, "web", EventKind::ScaleOut, i))
            .await
            .expect("append_event");
    }
    let events = events_of(store, &a, "web").await;
    assert_eq!(events.len(), 1_000);
    assert_eq!(events.first().unwrap().event.at, t(5));
    assert_eq!(events.last().unwrap().event.at, t(1_004));
}

/// A call that fails changes nothing: no row, no event.
pub async fn failed_transactions_record_nothing(store: &dyn Store) {
    let a = tenant("atomic-a");
    new_group(store, &a, "web", 1, 5).await;
    let inst = store
        .create_instance(&instance(&a, "web", "atomic-i1", 1_500), None)
        .await
        .unwrap();
    let group = store.get_group(&a, "web").await.unwrap();

    // Conflicting create: the event is not recorded.
    store
        .create_group(
            &a,
            &spec("web", 1, 5),
            t(2_000),
            event(&a, "web", EventKind::GroupCreated, 2_000),
        )
        .await
        .expect_err("conflict");
    // Missing targets: no event under their name.
    store
        .update_group(
            &a,
            &spec("gone", 1, 5),
            t(2_000),
            event(&a, "gone", EventKind::GroupUpdated, 2_000),
        )
        .await
        .expect_err("update a missing group");
    store
        .set_desired_capacity(
            &a,
            "gone",
            2,
            None,
            event(&a, "gone", EventKind::ScaleOut, 2_000),
        )
        .await
        .expect_err("set desired on a missing group");
    store
        .mark_group_deleting(
            &a,
            "gone",
            event(&a, "gone", EventKind::GroupDeleted, 2_000),
        )
        .await
        .expect_err("mark a missing group");
    store
        .create_instance(
            &instance(&a, "gone", "atomic-i2", 2_000),
            Some(event(&a, "gone", EventKind::InstanceCreated, 2_000)),
        )
        .await
        .expect_err("instance in a missing group");
    store
        .update_instance(
            &a,
            &InstanceId("atomic-nope".into()),
            InstanceStatus::Running,
            InstanceUpdate::default(),
            t(2_000),
            Some(event(&a, "gone", EventKind::InstanceCreated, 2_000)),
        )
        .await
        .expect_err("update a missing instance");
    // Duplicate instance id: the first is untouched, the event is not recorded.
    let mut dup = instance(&a, "web", "atomic-i1", 2_000);
    dup.status = InstanceStatus::Running;
    let err = store
        .create_instance(
            &dup,
            Some(event(&a, "web", EventKind::InstanceCreated, 2_000)),
        )
        .await
        .expect_err("duplicate instance id");
    assert!(
        matches!(
            &err,
            StoreError::Conflict {
                kind: "instance",
                ..
            }
        ),
        "{err:?}"
    );

    assert_eq!(store.get_group(&a, "web").await.unwrap(), group);
    assert_eq!(store.get_instance(&a, &inst.id).await.unwrap(), Some(inst));
    assert_eq!(
        store.list_instances(&a, "web", true).await.unwrap().len(),
        1
    );
    assert_eq!(
        store
            .get_instance(&a, &InstanceId("atomic-i2".into()))
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.get_group(&a, "gone").await.unwrap(), None);
    assert!(events_of(store, &a, "gone").await.is_empty());
    assert_eq!(
        events_of(store, &a, "web").await.len(),
        1,
        "only the create"
    );
}

/// Writers running at once (as the controller's tasks do) neither fail nor lose
/// updates, and `created_order` stays unique and gapless.
pub async fn concurrent_writes(store: &dyn Store) {
    let a = tenant("concurrent-a");
    new_group(store, &a, "web", 0, 100).await;
    let create = |i: u32| {
        let a = a.clone();
        async move {
            let rec = instance(&a, "web", &format!("concurrent-{i}"), 2_000);
            store
                .create_instance(
                    &rec,
                    Some(NewEvent {
                        instance_id: Some(rec.id.clone()),
                        ..event(&a, "web", EventKind::InstanceCreated, 2_000)
                    }),
                )
                .await
                .expect("concurrent create_instance")
                .created_order
        }
    };
    let desired = |n: u32| {
        let a = a.clone();
        async move {
            store
                .set_desired_capacity(
                    &a,
                    "web",
                    n,
                    Some(t(2_000)),
                    event(&a, "web", EventKind::ScaleOut, 2_000),
                )
                .await
                .expect("concurrent set_desired_capacity");
        }
    };
    let read = || {
        let a = a.clone();
        async move {
            store
                .list_instances(&a, "web", true)
                .await
                .expect("concurrent list_instances");
        }
    };
    let (o1, o2, o3, o4, o5, o6, o7, o8, (), (), (), ()) = tokio::join!(
        create(1),
        create(2),
        create(3),
        create(4),
        create(5),
        create(6),
        create(7),
        create(8),
        desired(3),
        desired(4),
        read(),
        read(),
    );
    let mut orders = vec![o1, o2, o3, o4, o5, o6, o7, o8];
    orders.sort_unstable();
    assert_eq!(orders, (1..=8).collect::<Vec<_>>());
    let stored: Vec<_> = store
        .list_instances(&a, "web", true)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.created_order)
        .collect();
    assert_eq!(stored, (1..=8).collect::<Vec<_>>());
    assert_eq!(events_of(store, &a, "web").await.len(), 1 + 8 + 2);
    let d = store
        .get_group(&a, "web")
        .await
        .unwrap()
        .unwrap()
        .desired_capacity;
    assert!(d == 3 || d == 4, "{d}");
}

// ---- identity, access and accounting ----

fn tenant_record(id: &TenantId, at: i64) -> TenantRecord {
    TenantRecord {
        id: id.clone(),
        display_name: format!("{id} display"),
        description: String::new(),
        quota: Quota::default(),
        grants: Grants::default(),
        deleting: false,
        created_at: t(at),
        updated_at: t(at),
    }
}

fn user_record(name: &str, at: i64) -> UserRecord {
    UserRecord {
        name: name.to_string(),
        password_hash: "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA".into(),
        is_admin: false,
        created_at: t(at),
        password_changed_at: t(at),
    }
}

/// Tenants are created once, updated, listed; the effective quota falls back field by
/// field to the default; a tenant with groups cannot be deleted.
pub async fn tenants_and_quotas(store: &dyn Store) {
    let a = tenant("conf-tq-a");
    let b = tenant("conf-tq-b");
    store.create_tenant(&tenant_record(&a, 1)).await.unwrap();
    store.create_tenant(&tenant_record(&b, 1)).await.unwrap();
    assert!(matches!(
        store.create_tenant(&tenant_record(&a, 2)).await,
        Err(StoreError::Conflict { kind: "tenant", .. })
    ));
    let mut rec = store.get_tenant(&a).await.unwrap().expect("stored");
    assert_eq!(rec, tenant_record(&a, 1));
    rec.quota.max_instances = Some(7);
    rec.display_name = "A".into();
    rec.updated_at = t(5);
    assert_eq!(store.update_tenant(&rec).await.unwrap(), rec);
    let ids: Vec<_> = store
        .list_tenants()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .filter(|id| id == &a || id == &b)
        .collect();
    assert_eq!(ids, vec![a.clone(), b.clone()]);

    // The default quota is service-wide; other checks may not set it, so restore it.
    let before = store.get_default_quota().await.unwrap();
    let default = Quota {
        max_instances: Some(3),
        max_vcpus: Some(8),
        max_memory_mb: Some(1 << 33),
        max_groups: Some(4),
    };
    store.set_default_quota(&default).await.unwrap();
    assert_eq!(store.get_default_quota().await.unwrap(), default);
    let q = store.get_quota(&a).await.unwrap();
    assert_eq!(
        q,
        Quota {
            max_instances: Some(7),
            ..default
        }
    );
    assert_eq!(store.get_quota(&b).await.unwrap(), default);
    store.set_default_quota(&before).await.unwrap();
    assert!(matches!(
        store.get_quota(&tenant("conf-tq-none")).await,
        Err(StoreError::NotFound { kind: "tenant", .. })
    ));

    store
        .create_group(
            &b,
            &spec("web", 0, 2),
            t(10),
            event(&b, "web", EventKind::GroupCreated, 10),
        )
        .await
        .unwrap();
    assert!(matches!(
        store.delete_tenant(&b).await,
        Err(StoreError::Conflict { kind: "tenant", .. })
    ));
    store.delete_group(&b, "web").await.unwrap();
    store.delete_tenant(&b).await.unwrap();
    assert!(store.get_tenant(&b).await.unwrap().is_none());
    assert!(matches!(
        store.delete_tenant(&b).await,
        Err(StoreError::NotFound { kind: "tenant", .. })
    ));
    assert!(store.get_tenant(&a).await.unwrap().is_some());
}

/// A tenant's grants and group limit are stored with it and replaced whole by an
/// update; a tenant created implicitly (`ensure_tenant`) or without grants has none.
pub async fn tenant_grants(store: &dyn Store) {
    let a = tenant("conf-tg-a");
    let b = tenant("conf-tg-b");
    let c = tenant("conf-tg-c");
    let granted = Grants {
        providers: vec!["docker".into(), "process".into()],
        listen: vec![
            "127.0.0.1:20000-20099".parse().expect("range"),
            "[::1]:8080".parse().expect("range"),
        ],
        images: vec!["acme/*".parse().expect("pattern")],
    };
    let mut rec = tenant_record(&a, 1);
    rec.grants = granted.clone();
    rec.quota.max_groups = Some(3);
    store.create_tenant(&rec).await.unwrap();
    assert_eq!(store.get_tenant(&a).await.unwrap(), Some(rec.clone()));
    assert_eq!(store.get_quota(&a).await.unwrap().max_groups, Some(3));

    store.create_tenant(&tenant_record(&b, 1)).await.unwrap();
    let b_rec = store.get_tenant(&b).await.unwrap().expect("stored");
    assert_eq!(b_rec.grants, Grants::default(), "nothing granted");
    store.ensure_tenant(&c, t(1)).await.unwrap();
    let c_rec = store.get_tenant(&c).await.unwrap().expect("stored");
    assert_eq!(
        c_rec.grants,
        Grants::default(),
        "nothing granted implicitly"
    );
    assert_eq!(c_rec.quota, Quota::default());

    // An update replaces the grants whole and touches no other tenant.
    rec.grants = Grants {
        providers: vec!["process".into()],
        ..Grants::default()
    };
    rec.quota.max_groups = None;
    rec.updated_at = t(2);
    assert_eq!(store.update_tenant(&rec).await.unwrap(), rec);
    assert_eq!(store.get_tenant(&a).await.unwrap(), Some(rec.clone()));
    assert_eq!(store.get_tenant(&b).await.unwrap(), Some(b_rec.clone()));
    let listed = store.list_tenants().await.unwrap();
    let listed_a = listed.iter().find(|t| t.id == a).expect("listed");
    assert_eq!(listed_a.grants, rec.grants);
}

/// Users are unique; roles are one per tenant; a password change revokes every token.
pub async fn users_roles_and_tokens(store: &dyn Store) {
    let a = tenant("conf-urt-a");
    let b = tenant("conf-urt-b");
    store.create_tenant(&tenant_record(&a, 1)).await.unwrap();
    store.create_tenant(&tenant_record(&b, 1)).await.unwrap();
    let ann = "conf-urt-ann";
    store.create_user(&user_record(ann, 1)).await.unwrap();
    assert!(matches!(
        store.create_user(&user_record(ann, 2)).await,
        Err(StoreError::Conflict { kind: "user", .. })
    ));
    assert_eq!(
        store.get_user(ann).await.unwrap(),
        Some(user_record(ann, 1))
    );
    assert!(!format!("{:?}", user_record(ann, 1)).contains("argon2"));

    store.set_role(ann, &a, Role::Viewer, t(2)).await.unwrap();
    store.set_role(ann, &a, Role::Owner, t(3)).await.unwrap();
    assert_eq!(store.get_role(ann, &a).await.unwrap(), Some(Role::Owner));
    assert_eq!(store.get_role(ann, &b).await.unwrap(), None);
    assert_eq!(store.list_roles(&a).await.unwrap().len(), 1);
    assert!(store.list_roles(&b).await.unwrap().is_empty());
    assert!(matches!(
        store
            .set_role("conf-urt-nobody", &a, Role::Viewer, t(3))
            .await,
        Err(StoreError::NotFound { kind: "user", .. })
    ));
    assert!(matches!(
        store
            .set_role(ann, &tenant("conf-urt-none"), Role::Viewer, t(3))
            .await,
        Err(StoreError::NotFound { kind: "tenant", .. })
    ));
    assert!(matches!(
        store.remove_role(ann, &b).await,
        Err(StoreError::NotFound { kind: "role", .. })
    ));

    for (hash, tenant) in [("conf-urt-h1", &a), ("conf-urt-h2", &b)] {
        store
            .create_token(&TokenRecord {
                hash: hash.into(),
                user: ann.into(),
                tenant: tenant.clone(),
                created_at: t(4),
                expires_at: t(1_000),
                revoked: false,
            })
            .await
            .unwrap();
    }
    store.revoke_token("conf-urt-h1").await.unwrap();
    assert!(
        store
            .get_token("conf-urt-h1")
            .await
            .unwrap()
            .unwrap()
            .revoked
    );
    assert!(
        !store
            .get_token("conf-urt-h2")
            .await
            .unwrap()
            .unwrap()
            .revoked
    );
    store
        .set_password(ann, "$argon2id$new", t(9))
        .await
        .unwrap();
    assert!(
        store
            .get_token("conf-urt-h2")
            .await
            .unwrap()
            .unwrap()
            .revoked
    );
    let u = store.get_user(ann).await.unwrap().unwrap();
    assert_eq!(
        (u.password_hash.as_str(), u.password_changed_at),
        ("$argon2id$new", t(9))
    );
    assert_eq!(store.revoke_user_tokens(ann).await.unwrap(), 0);

    store.remove_role(ann, &a).await.unwrap();
    assert_eq!(store.get_role(ann, &a).await.unwrap(), None);
    store.set_role(ann, &a, Role::Member, t(10)).await.unwrap();
    store.delete_user(ann).await.unwrap();
    assert!(store.get_user(ann).await.unwrap().is_none());
    assert!(store.list_roles(&a).await.unwrap().is_empty());
    assert!(store.get_token("conf-urt-h2").await.unwrap().is_none());
    assert!(matches!(
        store.delete_user(ann).await,
        Err(StoreError::NotFound { kind: "user", .. })
    ));
}

/// API keys are unique per tenant; instance owners are scoped; audit lists per tenant;
/// credentials round-trip as stored.
pub async fn api_keys_owners_audit_credentials(store: &dyn Store) {
    let a = tenant("conf-koac-a");
    let b = tenant("conf-koac-b");
    store.create_tenant(&tenant_record(&a, 1)).await.unwrap();
    store.create_tenant(&tenant_record(&b, 1)).await.unwrap();
    let key = ApiKeyRecord {
        hash: "conf-koac-k1".into(),
        tenant: a.clone(),
        name: "ci".into(),
        role: Role::Member,
        created_by: "someone".into(),
        created_at: t(1),
    };
    store.create_api_key(&key).await.unwrap();
    let dup = ApiKeyRecord {
        hash: "conf-koac-k2".into(),
        ..key.clone()
    };
    assert!(matches!(
        store.create_api_key(&dup).await,
        Err(StoreError::Conflict {
            kind: "api key",
            ..
        })
    ));
    let other = ApiKeyRecord {
        tenant: b.clone(),
        ..dup.clone()
    };
    store.create_api_key(&other).await.unwrap();
    assert_eq!(
        store.get_api_key("conf-koac-k1").await.unwrap(),
        Some(key.clone())
    );
    assert_eq!(store.list_api_keys(&a).await.unwrap(), vec![key.clone()]);
    store.delete_api_key(&a, "ci").await.unwrap();
    assert!(store.get_api_key("conf-koac-k1").await.unwrap().is_none());
    assert_eq!(store.list_api_keys(&b).await.unwrap().len(), 1);

    store
        .create_group(
            &a,
            &spec("web", 0, 2),
            t(2),
            event(&a, "web", EventKind::GroupCreated, 2),
        )
        .await
        .unwrap();
    store
        .create_instance(&instance(&a, "web", "conf-koac-i1", 3), None)
        .await
        .unwrap();
    let bob = "conf-koac-bob";
    store.create_user(&user_record(bob, 1)).await.unwrap();
    let own = InstanceOwner {
        tenant: a.clone(),
        instance: InstanceId("conf-koac-i1".into()),
        user: bob.into(),
    };
    store.add_instance_owner(&own, t(4)).await.unwrap();
    store.add_instance_owner(&own, t(5)).await.unwrap();
    let foreign = InstanceOwner {
        tenant: b.clone(),
        ..own.clone()
    };
    assert!(matches!(
        store.add_instance_owner(&foreign, t(5)).await,
        Err(StoreError::NotFound {
            kind: "instance",
            ..
        })
    ));
    assert_eq!(
        store.list_instance_owners(&a, Some(bob)).await.unwrap(),
        vec![own.clone()]
    );
    assert!(
        store
            .list_instance_owners(&b, None)
            .await
            .unwrap()
            .is_empty()
    );
    store.remove_instance_owner(&own).await.unwrap();
    assert!(
        store
            .list_instance_owners(&a, None)
            .await
            .unwrap()
            .is_empty()
    );

    for (tenant, result) in [(Some(a.clone()), 201), (Some(b.clone()), 403), (None, 401)] {
        store
            .append_audit(&NewAudit {
                at: t(6),
                user: Some(bob.into()),
                tenant,
                action: "POST /v1/groups".into(),
                target: "/v1/groups".into(),
                source: Some("127.0.0.1:5000".into()),
                result,
            })
            .await
            .unwrap();
    }
    let mine = store.list_audit(Some(&a), None).await.unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].entry.result, 201);
    let all = store.list_audit(None, None).await.unwrap();
    assert!(all.len() >= 3);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "oldest first");

    let sealed = Sealed(vec![1, 2, 3, 0, 255]);
    store
        .put_credential(&a, "openstack", &sealed, t(7))
        .await
        .unwrap();
    assert_eq!(
        store.get_credential(&a, "openstack").await.unwrap(),
        Some(sealed)
    );
    assert!(
        store
            .get_credential(&b, "openstack")
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        store
            .put_credential(&tenant("conf-koac-none"), "x", &Sealed(vec![1]), t(8))
            .await,
        Err(StoreError::NotFound { kind: "tenant", .. })
    ));
}

/// Metric points are kept per group and per instance, written one interval at a time (a
/// replay at the same `at` changes nothing), read back oldest first as the newest `limit`
/// in `[since, until)`, pruned by age per group, and removed with their group; a group
/// that does not exist (in this tenant) keeps none.
pub async fn metric_points(store: &dyn Store) {
    use crate::{GroupMetricPoint, InstanceMetricPoint, InstanceReading, PointFilter};
    let (a, b) = (tenant("metric-points-a"), tenant("metric-points-b"));
    for x in [&a, &b] {
        store.ensure_tenant(x, t(1)).await.expect("ensure_tenant");
        new_group(store, x, "web", 1, 5).await;
    }
    let point = |ms: i64, running: u32| GroupMetricPoint {
        at: t(ms),
        running,
        desired_capacity: 2,
        values: vec![
            (Metric::Cpu, ms as f64 / 1000.0),
            (Metric::RequestRate, 7.5),
        ],
    };
    // What a point keeps of an instance at `ms`, and what a read gives back of it.
    let reading = |id: &str, ms: i64| InstanceReading {
        instance_id: InstanceId(id.to_string()),
        cpu_percent: ms as f64 / 100.0,
        memory_mb: 64.0,
    };
    let read = |id: &str, ms: i64| InstanceMetricPoint {
        instance_id: InstanceId(id.to_string()),
        at: t(ms),
        cpu_percent: ms as f64 / 100.0,
        memory_mb: 64.0,
    };
    for ms in [1000, 2000, 3000, 4000] {
        store
            .append_metric_points(
                &a,
                "web",
                &point(ms, 2),
                &[reading("i-1", ms), reading("i-2", ms)],
            )
            .await
            .expect("append_metric_points");
    }
    // A replay keeps what was there.
    store
        .append_metric_points(&a, "web", &point(4000, 9), &[reading("i-1", 4000)])
        .await
        .expect("append_metric_points replay");
    store
        .append_metric_points(&b, "web", &point(1000, 5), &[reading("i-9", 1000)])
        .await
        .expect("append_metric_points in b");
    assert!(matches!(
        store
            .append_metric_points(&a, "nope", &point(1000, 1), &[reading("i-1", 1000)])
            .await,
        Err(StoreError::NotFound { kind: "group", .. })
    ));
    let all = PointFilter::default();
    let points = store
        .group_metric_points(&a, "web", &all)
        .await
        .expect("group_metric_points");
    assert_eq!(
        points,
        vec![
            point(1000, 2),
            point(2000, 2),
            point(3000, 2),
            point(4000, 2)
        ]
    );
    let window = PointFilter {
        since: Some(t(2000)),
        until: Some(t(4000)),
        limit: None,
    };
    let ats = |p: &[GroupMetricPoint]| p.iter().map(|p| p.at).collect::<Vec<_>>();
    assert_eq!(
        ats(&store
            .group_metric_points(&a, "web", &window)
            .await
            .expect("window")),
        vec![t(2000), t(3000)]
    );
    let tail = PointFilter {
        limit: Some(2),
        ..PointFilter::default()
    };
    assert_eq!(
        ats(&store
            .group_metric_points(&a, "web", &tail)
            .await
            .expect("tail")),
        vec![t(3000), t(4000)]
    );
    let one = store
        .instance_metric_points(&a, "web", &InstanceId("i-2".into()), &window)
        .await
        .expect("instance_metric_points");
    assert_eq!(one, vec![read("i-2", 2000), read("i-2", 3000)]);
    // Tenant boundary: b's instance is not a's, a's group is not b's.
    assert!(
        store
            .instance_metric_points(&a, "web", &InstanceId("i-9".into()), &all)
            .await
            .expect("other tenant's instance")
            .is_empty()
    );
    assert_eq!(
        store
            .group_metric_points(&b, "web", &all)
            .await
            .expect("b")
            .len(),
        1
    );
    let pruned = store
        .prune_metric_points(&a, "web", t(3000))
        .await
        .expect("prune_metric_points");
    // Two group points (with their four readings).
    assert_eq!(pruned, 2);
    assert_eq!(
        ats(&store
            .group_metric_points(&a, "web", &all)
            .await
            .expect("after prune")),
        vec![t(3000), t(4000)]
    );
    assert_eq!(
        store
            .group_metric_points(&b, "web", &all)
            .await
            .expect("b kept")
            .len(),
        1
    );
    store.delete_group(&a, "web").await.expect("delete_group");
    new_group(store, &a, "web", 1, 5).await;
    assert!(
        store
            .group_metric_points(&a, "web", &all)
            .await
            .expect("after delete")
            .is_empty()
    );
    assert!(
        store
            .instance_metric_points(&a, "web", &InstanceId("i-1".into()), &all)
            .await
            .expect("after delete")
            .is_empty()
    );
}

/// A batch of intervals ([`crate::MetricPointStore::append_metric_intervals`]) keeps each
/// as its single-group write would, across groups and tenants and past one statement's
/// rows, skips the intervals of a group that does not exist without failing the others,
/// and prunes the groups that ask for it.
pub async fn metric_intervals(store: &dyn Store) {
    use crate::{
        GroupMetricPoint, InstanceMetricPoint, InstanceReading, MetricInterval, PointFilter,
    };
    let (a, b) = (tenant("metric-intervals-a"), tenant("metric-intervals-b"));
    for x in [&a, &b] {
        store.ensure_tenant(x, t(1)).await.expect("ensure_tenant");
        new_group(store, x, "web", 1, 5).await;
    }
    let interval = |x: &TenantId, group: &str, ms: i64, prune: Option<i64>| MetricInterval {
        tenant: x.clone(),
        group: group.to_string(),
        point: GroupMetricPoint {
            at: t(ms),
            running: 2,
            desired_capacity: 3,
            values: vec![(Metric::Cpu, ms as f64 / 1000.0)],
        },
        // 150 readings in each point.
        instances: (0..150)
            .map(|n| InstanceReading {
                instance_id: InstanceId(format!("i-{n}")),
                cpu_percent: n as f64,
                memory_mb: 64.0,
            })
            .collect(),
        prune_before: prune.map(t),
    };
    // 130 intervals of a's group (more than one statement's rows), b's, and a group
    // that does not exist.
    let mut batch: Vec<MetricInterval> = (1..=130)
        .map(|k| interval(&a, "web", k * 1000, None))
        .collect();
    batch.push(interval(&b, "web", 1000, None));
    batch.push(interval(&a, "nope", 1000, None));
    store
        .append_metric_intervals(&batch)
        .await
        .expect("append_metric_intervals");
    let all = PointFilter {
        limit: Some(1000),
        ..PointFilter::default()
    };
    let points = store
        .group_metric_points(&a, "web", &all)
        .await
        .expect("group_metric_points");
    assert_eq!(points.len(), 130);
    assert_eq!(points[0], batch[0].point);
    let readings = store
        .instance_metric_points(&a, "web", &InstanceId("i-149".into()), &all)
        .await
        .expect("instance_metric_points");
    assert_eq!(readings.len(), 130);
    assert_eq!(readings[129].cpu_percent, 149.0);
    // An instance whose id starts another's reads only its own readings.
    let of_14 = store
        .instance_metric_points(&a, "web", &InstanceId("i-14".into()), &all)
        .await
        .expect("i-14");
    assert_eq!(of_14.len(), 130);
    assert!(of_14.iter().all(|p| p.cpu_percent == 14.0), "{of_14:?}");
    // Ids with the characters a `LIKE` pattern gives meaning to, and quotes, are read
    // as they are.
    let odd = ["a%b_c", r#"q"u\o"#];
    let mut point = interval(&b, "web", 5000, None);
    point.instances = odd
        .iter()
        .map(|id| InstanceReading {
            instance_id: InstanceId(id.to_string()),
            cpu_percent: 3.0,
            memory_mb: 1.0,
        })
        .collect();
    store
        .append_metric_intervals(&[point])
        .await
        .expect("odd ids");
    for id in odd {
        let read = store
            .instance_metric_points(&b, "web", &InstanceId(id.into()), &all)
            .await
            .expect("odd id");
        assert_eq!(read.len(), 1, "{id}");
    }
    assert!(
        store
            .instance_metric_points(&b, "web", &InstanceId("axbyc".into()), &all)
            .await
            .expect("wildcards are not wild")
            .is_empty()
    );
    let of_b = store
        .instance_metric_points(&b, "web", &InstanceId("i-7".into()), &all)
        .await
        .expect("b's readings");
    assert_eq!(
        of_b,
        vec![InstanceMetricPoint {
            instance_id: InstanceId("i-7".into()),
            at: t(1000),
            cpu_percent: 7.0,
            memory_mb: 64.0,
        }]
    );
    // A replay changes nothing; an interval asking for it prunes its group only.
    let mut replay = interval(&a, "web", 1000, None);
    replay.point.running = 9;
    store
        .append_metric_intervals(&[replay, interval(&b, "web", 200_000, Some(100_000))])
        .await
        .expect("replay and prune");
    let points = store
        .group_metric_points(&a, "web", &all)
        .await
        .expect("a after");
    assert_eq!((points.len(), points[0].running), (130, 2));
    let b_points = store
        .group_metric_points(&b, "web", &all)
        .await
        .expect("b after");
    assert_eq!(
        b_points.iter().map(|p| p.at).collect::<Vec<_>>(),
        vec![t(200_000)]
    );
}

/// Load summaries are kept per group, read back oldest first from `since`, replaced at the
/// same `(metric, at)`, pruned by age per group, and removed with their group; a group
/// that does not exist (in this tenant) keeps none.
pub async fn load_history(store: &dyn Store) {
    let (a, b) = (tenant("load-history-a"), tenant("load-history-b"));
    for x in [&a, &b] {
        store.ensure_tenant(x, t(1)).await.expect("ensure_tenant");
        new_group(store, x, "web", 1, 5).await;
    }
    let sum = |ms, metric, mean| LoadSummary {
        at: t(ms),
        metric,
        mean,
        max: mean * 2.0,
    };
    store
        .append_load_history(
            &a,
            "web",
            &[
                sum(60_000, Metric::Cpu, 10.0),
                sum(60_000, Metric::RequestRate, 7.0),
                sum(120_000, Metric::Cpu, 20.0),
            ],
        )
        .await
        .expect("append_load_history");
    // The same (metric, at) again replaces it.
    store
        .append_load_history(&a, "web", &[sum(120_000, Metric::Cpu, 25.0)])
        .await
        .expect("append_load_history again");
    store
        .append_load_history(&b, "web", &[sum(90_000, Metric::Cpu, 99.0)])
        .await
        .expect("append_load_history in b");
    assert_not_found(
        store
            .append_load_history(&a, "nope", &[sum(60_000, Metric::Cpu, 1.0)])
            .await,
        "group",
        "a group that does not exist",
    );

    let read = |x: &TenantId, since| {
        let x = x.clone();
        async move {
            store
                .load_history(&x, "web", t(since))
                .await
                .expect("load_history")
        }
    };
    assert_eq!(
        read(&a, 0).await,
        vec![
            sum(60_000, Metric::Cpu, 10.0),
            sum(60_000, Metric::RequestRate, 7.0),
            sum(120_000, Metric::Cpu, 25.0),
        ]
    );
    assert_eq!(
        read(&a, 60_001).await,
        vec![sum(120_000, Metric::Cpu, 25.0)]
    );
    assert_eq!(read(&b, 0).await, vec![sum(90_000, Metric::Cpu, 99.0)]);
    assert!(
        store
            .load_history(&a, "nope", t(0))
            .await
            .expect("load_history of no group")
            .is_empty()
    );

    // Pruning is by age, in one group: the other tenant's keeps its older row.
    let pruned = store
        .prune_load_history(&a, "web", t(100_000))
        .await
        .expect("prune_load_history");
    assert_eq!(pruned, 2);
    assert_eq!(read(&a, 0).await, vec![sum(120_000, Metric::Cpu, 25.0)]);
    assert_eq!(read(&b, 0).await, vec![sum(90_000, Metric::Cpu, 99.0)]);

    store.delete_group(&a, "web").await.expect("delete_group");
    new_group(store, &a, "web", 1, 5).await;
    assert!(
        read(&a, 0).await.is_empty(),
        "a new group of the same name starts empty"
    );
}

/// A batch of group writes is one transaction: every write with its event, or, when one
/// fails (here a name taken in the tenant, then a group that does not exist), none of
/// them and no event; another tenant's groups are out of its reach.
pub async fn apply_groups_all_or_none(store: &dyn Store) {
    let (a, b) = (tenant("apply-a"), tenant("apply-b"));
    new_group(store, &a, "old", 1, 3).await;
    new_group(store, &a, "gone", 1, 3).await;
    new_group(store, &b, "other", 1, 3).await;
    let ev = |x: &TenantId, g: &str, kind| event(x, g, kind, 5_000);
    let create = |x: &TenantId, name: &str| GroupWrite::Create {
        spec: spec(name, 1, 4),
        event: ev(x, name, EventKind::GroupCreated),
    };
    let state = |x: &TenantId| {
        let x = x.clone();
        async move {
            let mut all = Vec::new();
            for g in store.list_groups(&x).await.expect("list_groups") {
                let events = events_of(store, &x, &g.spec.name).await.len();
                all.push((g.spec.name, g.spec.max, g.deleting, events));
            }
            all
        }
    };
    let before = state(&a).await;

    // A taken name fails the third write: nothing of the first two is kept.
    let writes = [
        create(&a, "new"),
        GroupWrite::Update {
            spec: spec("old", 1, 9),
            event: ev(&a, "old", EventKind::GroupUpdated),
        },
        create(&a, "gone"),
    ];
    let err = store
        .apply_groups(&a, &writes, t(5_000))
        .await
        .expect_err("a taken name");
    assert!(
        matches!(&err, StoreError::Conflict { kind: "group", name } if name == "gone"),
        "{err:?}"
    );
    assert_eq!(state(&a).await, before, "a failed batch changed something");
    assert!(events_of(store, &a, "new").await.is_empty());

    // Another tenant's group is absent: updating it fails the batch, and changes neither.
    let writes = [
        create(&a, "new"),
        GroupWrite::Update {
            spec: spec("other", 1, 9),
            event: ev(&a, "other", EventKind::GroupUpdated),
        },
    ];
    assert_not_found(
        store.apply_groups(&a, &writes, t(5_000)).await,
        "group",
        "another tenant's group",
    );
    assert_eq!(state(&a).await, before);
    assert_eq!(state(&b).await, [("other".to_string(), 3, false, 1)]);

    // A good batch: all of it, in order, each write with its event.
    let writes = [
        create(&a, "new"),
        GroupWrite::Update {
            spec: spec("old", 2, 9),
            event: ev(&a, "old", EventKind::GroupUpdated),
        },
        GroupWrite::MarkDeleting {
            name: "gone".into(),
            event: ev(&a, "gone", EventKind::GroupDeleted),
        },
    ];
    let records = store
        .apply_groups(&a, &writes, t(5_000))
        .await
        .expect("apply_groups");
    let got: Vec<(&str, u32, bool)> = records
        .iter()
        .map(|r| (r.spec.name.as_str(), r.desired_capacity, r.deleting))
        .collect();
    assert_eq!(
        got,
        [("new", 1, false), ("old", 2, false), ("gone", 1, true)]
    );
    assert_eq!(
        state(&a).await,
        [
            ("gone".to_string(), 3, true, 2),
            ("new".to_string(), 4, false, 1),
            ("old".to_string(), 9, false, 2),
        ]
    );
    assert_eq!(state(&b).await, [("other".to_string(), 3, false, 1)]);
}

/// Provider definitions: names are unique across operator-wide and tenant-private ones;
/// config and sealed credentials come back as stored; an update changes only config,
/// credentials and `updated_at`; a private definition needs its tenant and goes with it.
pub async fn provider_definitions(store: &dyn Store) {
    let a = tenant("conf-pd-a");
    store.create_tenant(&tenant_record(&a, 1)).await.unwrap();
    let ours = |all: Vec<ProviderRecord>| -> Vec<String> {
        all.into_iter()
            .map(|p| p.name)
            .filter(|n| n.starts_with("conf-pd-"))
            .collect()
    };
    let rack = ProviderRecord {
        name: "conf-pd-rack1".into(),
        kind: ProviderKind::Docker,
        config: serde_json::json!({"engines": [{"name": "e1", "endpoint": "unix:///run/d.sock"}]}),
        tenant: None,
        credentials: None,
        created_at: t(1),
        updated_at: t(1),
    };
    let private = ProviderRecord {
        name: "conf-pd-os-a".into(),
        kind: ProviderKind::Openstack,
        config: serde_json::json!({"auth_url": "http://keystone:5000/v3", "region": "RegionOne"}),
        tenant: Some(a.clone()),
        credentials: Some(Sealed(vec![1, 2, 3, 0, 255])),
        created_at: t(2),
        updated_at: t(2),
    };
    assert_eq!(store.create_provider(&rack).await.unwrap(), rack);
    assert_eq!(store.create_provider(&private).await.unwrap(), private);
    assert_eq!(
        store.get_provider("conf-pd-rack1").await.unwrap(),
        Some(rack.clone())
    );
    assert_eq!(
        store.get_provider("conf-pd-os-a").await.unwrap(),
        Some(private.clone())
    );
    assert_eq!(store.get_provider("conf-pd-none").await.unwrap(), None);
    assert_eq!(
        ours(store.list_providers().await.unwrap()),
        ["conf-pd-os-a", "conf-pd-rack1"],
        "by name"
    );

    // One name for one definition, whoever holds it.
    let mut again = private.clone();
    again.name = "conf-pd-rack1".into();
    match store.create_provider(&again).await {
        Err(StoreError::Conflict {
            kind: "provider", ..
        }) => {}
        other => panic!("a taken name: expected Conflict(provider), got {other:?}"),
    }
    assert_eq!(
        store.get_provider("conf-pd-rack1").await.unwrap(),
        Some(rack.clone())
    );
    let mut orphan = private.clone();
    orphan.name = "conf-pd-orphan".into();
    orphan.tenant = Some(tenant("conf-pd-nobody"));
    assert_not_found(
        store.create_provider(&orphan).await,
        "tenant",
        "a tenant that does not exist",
    );
    assert_eq!(store.get_provider("conf-pd-orphan").await.unwrap(), None);

    // An update replaces config and credentials, never the kind, tenant or creation time.
    let mut changed = private.clone();
    changed.config = serde_json::json!({"auth_url": "http://keystone:5000/v3", "region": "Two"});
    changed.credentials = Some(Sealed(vec![9; 40]));
    changed.kind = ProviderKind::Process;
    changed.tenant = None;
    changed.created_at = t(99);
    changed.updated_at = t(3);
    let stored = store.update_provider(&changed).await.unwrap();
    assert_eq!(stored.config, changed.config);
    assert_eq!(stored.credentials, changed.credentials);
    assert_eq!(stored.updated_at, t(3));
    assert_eq!(
        (stored.kind, stored.tenant.clone(), stored.created_at),
        (ProviderKind::Openstack, Some(a.clone()), t(2))
    );
    let mut cleared = stored.clone();
    cleared.credentials = None;
    assert_eq!(
        store.update_provider(&cleared).await.unwrap().credentials,
        None
    );
    let mut missing = rack.clone();
    missing.name = "conf-pd-none".into();
    assert_not_found(
        store.update_provider(&missing).await,
        "provider",
        "update of an absent one",
    );

    assert_not_found(
        store.delete_provider("conf-pd-none").await,
        "provider",
        "delete of an absent one",
    );
    store.delete_provider("conf-pd-rack1").await.unwrap();
    assert_eq!(store.get_provider("conf-pd-rack1").await.unwrap(), None);

    // Every kind is stored, qemu's (issue 19) included.
    let vms = ProviderRecord {
        name: "conf-pd-vms".into(),
        kind: ProviderKind::Qemu,
        config: serde_json::json!({"hosts": [{"name": "h1", "state_dir": "/srv/h1"}]}),
        tenant: None,
        credentials: None,
        created_at: t(4),
        updated_at: t(4),
    };
    assert_eq!(store.create_provider(&vms).await.unwrap(), vms);
    assert_eq!(store.get_provider("conf-pd-vms").await.unwrap(), Some(vms));
    store.delete_provider("conf-pd-vms").await.unwrap();

    // A tenant's private definitions go with it.
    store.delete_tenant(&a).await.unwrap();
    assert_eq!(store.get_provider("conf-pd-os-a").await.unwrap(), None);
    assert!(ours(store.list_providers().await.unwrap()).is_empty());
}

/// Prices are kept per provider, size and start time (setting the same one again
/// replaces it; a later one adds to the history), listed in order, deleted per provider
/// and size; a period's instances are those alive in it, of the one tenant and group.
pub async fn prices_and_period_instances(store: &dyn Store) {
    let price = |provider: &str, size: Option<&str>, from: i64, per_hour: f64| PriceRecord {
        provider: provider.into(),
        size: size.map(Into::into),
        from: t(from),
        per_hour,
        set_at: t(from),
    };
    let ours = |all: Vec<PriceRecord>| -> Vec<(String, Option<String>, i64, f64)> {
        all.into_iter()
            .filter(|p| p.provider.starts_with("conf-price-"))
            .map(|p| (p.provider, p.size, p.from.0, p.per_hour))
            .collect()
    };
    for p in [
        price("conf-price-os", Some("m1.large"), 10, 0.4),
        price("conf-price-os", None, 20, 0.1),
        price("conf-price-os", None, 10, 0.05),
        price("conf-price-proc", None, 0, 0.01),
        price("conf-price-os", None, 20, 0.125),
    ] {
        store.set_price(&p).await.expect("set_price");
    }
    let os = |size: Option<&str>| size.map(String::from);
    assert_eq!(
        ours(store.list_prices().await.unwrap()),
        vec![
            ("conf-price-os".to_string(), os(None), 10, 0.05),
            ("conf-price-os".to_string(), os(None), 20, 0.125),
            ("conf-price-os".to_string(), os(Some("m1.large")), 10, 0.4),
            ("conf-price-proc".to_string(), os(None), 0, 0.01),
        ],
        "by provider, size, from; the same start replaced"
    );
    assert_not_found(
        store.delete_prices("conf-price-os", Some("m1.tiny")).await,
        "price",
        "a size without a price",
    );
    assert_eq!(store.delete_prices("conf-price-os", None).await.unwrap(), 2);
    assert_eq!(
        ours(store.list_prices().await.unwrap()),
        vec![
            ("conf-price-os".to_string(), os(Some("m1.large")), 10, 0.4),
            ("conf-price-proc".to_string(), os(None), 0, 0.01),
        ],
        "the provider-wide history gone, the size's kept"
    );

    let (a, b) = (tenant("conf-cost-a"), tenant("conf-cost-b"));
    for x in [&a, &b] {
        new_group(store, x, "web", 0, 10).await;
    }
    // a: i1 lives 1000-2000, i2 3000-(live), i3 created 5000 (after the period),
    // i4 failed at 1500; b: one live instance.
    for (id, at) in [("i1", 1_000), ("i2", 3_000), ("i3", 5_000), ("i4", 1_200)] {
        store
            .create_instance(&instance(&a, "web", id, at), None)
            .await
            .expect("create_instance");
    }
    store
        .create_instance(&instance(&b, "web", "j1", 1_000), None)
        .await
        .expect("create_instance");
    for (id, status, at) in [
        ("i1", InstanceStatus::Terminated, 2_000),
        ("i4", InstanceStatus::Failed, 1_500),
    ] {
        store
            .update_instance(
                &a,
                &InstanceId(id.into()),
                status,
                InstanceUpdate::default(),
                t(at),
                None,
            )
            .await
            .expect("update_instance");
    }
    let ids = |v: Vec<InstanceRecord>| -> Vec<String> { v.into_iter().map(|i| i.id.0).collect() };
    let between = |since: i64, until: i64| store.instances_between(&a, "web", t(since), t(until));
    assert_eq!(ids(between(0, 4_000).await.unwrap()), ["i1", "i2", "i4"]);
    assert_eq!(
        ids(between(1_600, 4_000).await.unwrap()),
        ["i1", "i2"],
        "ended before the period: left out"
    );
    assert_eq!(
        ids(between(2_000, 3_000).await.unwrap()),
        Vec::<String>::new(),
        "ended at the start, created at the end: left out"
    );
    assert_eq!(
        ids(between(0, 10_000).await.unwrap()),
        ["i1", "i2", "i3", "i4"]
    );
    assert_eq!(
        ids(store
            .instances_between(&b, "web", t(0), t(10_000))
            .await
            .unwrap()),
        ["j1"],
        "another tenant's group of the same name"
    );
}

/// Webhooks are per tenant (another tenant's is absent); an attempt that finishes an
/// event (delivered, abandoned) moves the webhook's cursor on the event's group in the
/// same transaction, a failed one does not, and a cursor never moves back; the
/// delivery log is the tenant's; alert tokens map to their tenant and group, and a new
/// one replaces the old. Everything goes with the webhook, or the tenant.
pub async fn webhooks_and_deliveries(store: &dyn Store) {
    let a = tenant("conf-wh-a");
    let b = tenant("conf-wh-b");
    store.create_tenant(&tenant_record(&a, 1)).await.unwrap();
    store.create_tenant(&tenant_record(&b, 1)).await.unwrap();
    new_group(store, &a, "web", 1, 5).await;
    let last = store.last_event_id().await.unwrap();
    assert!(last >= 1, "the group's event is in the log: {last}");
    let hook = WebhookRecord {
        id: "conf-wh-1".into(),
        tenant: a.clone(),
        group: Some("web".into()),
        url: "https://hooks.example.com/swell".into(),
        event_kinds: vec!["scale_out".into(), "instance_failed".into()],
        secret: Sealed(vec![7, 0, 255, 1]),
        start_event_id: last,
        created_at: t(5),
    };
    let wide = WebhookRecord {
        id: "conf-wh-2".into(),
        group: None,
        event_kinds: Vec::new(),
        ..hook.clone()
    };
    assert_eq!(store.create_webhook(&hook).await.unwrap(), hook);
    store.create_webhook(&wide).await.unwrap();
    match store.create_webhook(&hook).await {
        Err(StoreError::Conflict {
            kind: "webhook", ..
        }) => {}
        other => panic!("a taken id: expected Conflict(webhook), got {other:?}"),
    }
    let orphan = WebhookRecord {
        id: "conf-wh-orphan".into(),
        tenant: tenant("conf-wh-nobody"),
        ..hook.clone()
    };
    assert_not_found(
        store.create_webhook(&orphan).await,
        "tenant",
        "no such tenant",
    );
    assert_eq!(
        store.get_webhook(&a, "conf-wh-1").await.unwrap(),
        Some(hook.clone())
    );
    assert_eq!(
        store.get_webhook(&b, "conf-wh-1").await.unwrap(),
        None,
        "another tenant's"
    );
    let ids = |all: Vec<WebhookRecord>| all.into_iter().map(|w| w.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list_webhooks(&a).await.unwrap()),
        ["conf-wh-1", "conf-wh-2"]
    );
    assert!(store.list_webhooks(&b).await.unwrap().is_empty());
    let all: Vec<String> = ids(store.list_all_webhooks().await.unwrap())
        .into_iter()
        .filter(|id| id.starts_with("conf-wh-"))
        .collect();
    assert_eq!(all, ["conf-wh-1", "conf-wh-2"]);

    // Attempts: a failure leaves the cursor, a delivery moves it.
    assert!(store.webhook_cursors("conf-wh-1").await.unwrap().is_empty());
    let attempt = |n: u32, outcome: DeliveryOutcome, event_id: i64| DeliveryRecord {
        id: 0,
        webhook: "conf-wh-1".into(),
        tenant: a.clone(),
        group: "web".into(),
        event_id,
        attempt: n,
        at: t(10 + i64::from(n)),
        outcome,
        status_code: Some(if outcome == DeliveryOutcome::Delivered {
            200
        } else {
            500
        }),
        error: (outcome != DeliveryOutcome::Delivered).then(|| "HTTP 500".to_string()),
    };
    let first = store
        .record_delivery(&attempt(1, DeliveryOutcome::Failed, last + 10))
        .await
        .unwrap();
    assert!(first.id > 0);
    assert!(store.webhook_cursors("conf-wh-1").await.unwrap().is_empty());
    store
        .record_delivery(&attempt(2, DeliveryOutcome::Delivered, last + 10))
        .await
        .unwrap();
    assert_eq!(
        store.webhook_cursors("conf-wh-1").await.unwrap(),
        [("web".to_string(), last + 10)]
    );
    let attempts = store
        .event_deliveries("conf-wh-1", last + 10)
        .await
        .unwrap();
    assert_eq!(
        attempts
            .iter()
            .map(|d| (d.attempt, d.outcome))
            .collect::<Vec<_>>(),
        [
            (1, DeliveryOutcome::Failed),
            (2, DeliveryOutcome::Delivered)
        ]
    );
    assert_eq!(attempts[0].error.as_deref(), Some("HTTP 500"));
    assert_eq!(attempts[1].status_code, Some(200));
    // Never back; forward by hand (an event no webhook wants).
    store
        .advance_webhook_cursor("conf-wh-1", "web", last + 3)
        .await
        .unwrap();
    store
        .advance_webhook_cursor("conf-wh-1", "web", last + 12)
        .await
        .unwrap();
    store
        .record_delivery(&attempt(1, DeliveryOutcome::Abandoned, last + 11))
        .await
        .unwrap();
    assert_eq!(
        store.webhook_cursors("conf-wh-1").await.unwrap(),
        [("web".to_string(), last + 12)]
    );
    let log = store.list_deliveries(&a, "conf-wh-1", 2).await.unwrap();
    assert_eq!(
        log.iter()
            .map(|d| (d.event_id, d.attempt))
            .collect::<Vec<_>>(),
        [(last + 10, 2), (last + 11, 1)],
        "the newest two, oldest first"
    );
    assert_not_found(
        store.list_deliveries(&b, "conf-wh-1", 10).await,
        "webhook",
        "another tenant's delivery log",
    );

    // Alert tokens: one per group, scoped to it.
    store
        .set_alert_token(&a, "web", "hash-1", t(20))
        .await
        .unwrap();
    assert_eq!(
        store.alert_token("hash-1").await.unwrap(),
        Some((a.clone(), "web".to_string(), t(20)))
    );
    store
        .set_alert_token(&a, "web", "hash-2", t(21))
        .await
        .unwrap();
    assert_eq!(store.alert_token("hash-1").await.unwrap(), None, "replaced");
    assert_eq!(
        store.alert_token("hash-2").await.unwrap(),
        Some((a.clone(), "web".to_string(), t(21)))
    );

    // Deleting a webhook takes its cursors and log; the tenant takes the rest.
    assert_not_found(
        store.delete_webhook(&b, "conf-wh-1").await,
        "webhook",
        "another tenant's",
    );
    store.delete_webhook(&a, "conf-wh-1").await.unwrap();
    assert_eq!(store.get_webhook(&a, "conf-wh-1").await.unwrap(), None);
    store.delete_group(&a, "web").await.unwrap();
    assert!(store.webhook_cursors("conf-wh-1").await.unwrap().is_empty());
    assert!(
        store
            .event_deliveries("conf-wh-1", last + 10)
            .await
            .unwrap()
            .is_empty()
    );
    store.delete_tenant(&a).await.unwrap();
    assert!(store.list_webhooks(&a).await.unwrap().is_empty());
    assert_eq!(store.alert_token("hash-2").await.unwrap(), None);
}
