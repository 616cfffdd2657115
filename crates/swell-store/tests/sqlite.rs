//! The conformance suite against the SQLite adapter, in memory and in a file; plus what
//! only a file store has: reopening (migrations are idempotent) and the WAL journal.

use std::sync::Arc;
use swell_core::{EventKind, InstanceId, InstanceStatus, Lifecycle, TenantId, Timestamp};
use swell_store::conformance::{self, CHECKS};
use swell_store::{EventFilter, InstanceRecord, NewEvent, SqliteStore, Store, StoreError};
use swell_store::{EventStore, GroupStore, InstanceStore, TenantStore};
use tempfile::TempDir;

async fn memory() -> SqliteStore {
    SqliteStore::open_in_memory().await.expect("open in memory")
}

async fn file() -> (TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("data/swell.db"))
        .await
        .expect("open file");
    (dir, store)
}

macro_rules! conformance_tests {
    ($($name:ident),* $(,)?) => {
        /// The names this file runs, to check that it runs all of them.
        const NAMES: &[&str] = &[$(stringify!($name)),*];

        mod in_memory {
            $(
                #[tokio::test]
                async fn $name() {
                    swell_store::conformance::$name(&super::memory().await).await;
                }
            )*
        }

        mod in_file {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (_dir, store) = super::file().await;
                    swell_store::conformance::$name(&store).await;
                }
            )*
        }
    };
}

conformance_tests!(
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

#[test]
fn every_check_is_run() {
    let listed: Vec<_> = CHECKS.iter().map(|(name, _)| *name).collect();
    assert_eq!(listed, NAMES);
}

#[tokio::test]
async fn all_checks_share_one_memory_store() {
    conformance::run_all(&memory().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_checks_at_once_on_one_file_store() {
    let (_dir, store) = file().await;
    let store: Arc<dyn Store> = Arc::new(store);
    let mut set = tokio::task::JoinSet::new();
    for (name, check) in CHECKS {
        let store = store.clone();
        set.spawn(async move {
            check(&*store).await;
            name
        });
    }
    while let Some(done) = set.join_next().await {
        done.expect("a check panicked");
    }
}

fn tenant() -> TenantId {
    TenantId::new("reopen").unwrap()
}

async fn write_some(store: &SqliteStore) {
    let a = tenant();
    store
        .create_group(
            &a,
            &conformance::spec("web", 1, 3),
            Timestamp::from_millis(1_000),
            NewEvent {
                tenant: a.clone(),
                group: "web".into(),
                at: Timestamp::from_millis(1_000),
                kind: EventKind::GroupCreated,
                instance_id: None,
                cause: None,
                message: "created".into(),
            },
        )
        .await
        .unwrap();
    store
        .create_instance(
            &InstanceRecord {
                id: InstanceId("reopen-1".into()),
                tenant: a.clone(),
                group: "web".into(),
                status: InstanceStatus::Pending,
                lifecycle: Lifecycle::Permanent,
                created_order: 0,
                provider: "process".into(),
                host: None,
                address: None,
                native_id: None,
                protected: false,
                status_reason: None,
                created_at: Timestamp::from_millis(1_100),
                started_at: None,
                updated_at: Timestamp::from_millis(1_100),
            },
            None,
        )
        .await
        .unwrap();
}

async fn journal_mode(store: &SqliteStore) -> String {
    sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn reopen_keeps_data_and_migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/swell.db");
    let store = SqliteStore::open(&path).await.unwrap();
    write_some(&store).await;
    store.close().await;
    drop(store);
    assert!(path.exists());

    for _ in 0..2 {
        let store = SqliteStore::open(&path).await.expect("reopen");
        let a = tenant();
        let g = store
            .get_group(&a, "web")
            .await
            .unwrap()
            .expect("the group survived");
        assert_eq!((g.spec.min, g.spec.max, g.desired_capacity), (1, 3, 1));
        let inst = store.list_instances(&a, "web", true).await.unwrap();
        assert_eq!(inst.len(), 1);
        assert_eq!(inst[0].created_order, 1);
        let events = store
            .list_events(&a, "web", &EventFilter::default())
            .await
            .unwrap();
        assert_eq!(events.len(), 1);
        let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
            .fetch_one(store.pool())
            .await
            .unwrap();
        let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
            .unwrap()
            .count();
        assert_eq!(applied as usize, files, "each migration applied once");
        store.close().await;
    }
}

#[tokio::test]
async fn file_store_is_durable_wal() {
    let (_dir, store) = file().await;
    assert_eq!(journal_mode(&store).await, "wal");
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(sync, 2, "synchronous = FULL");
    let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(fk, 1);
    let temp: i64 = sqlx::query_scalar("PRAGMA temp_store")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(
        temp, 2,
        "statement journals in memory (temp_store = MEMORY)"
    );
}

#[tokio::test]
async fn memory_stores_are_private() {
    let one = memory().await;
    let two = memory().await;
    write_some(&one).await;
    assert!(two.list_groups(&tenant()).await.unwrap().is_empty());
    assert_eq!(one.list_groups(&tenant()).await.unwrap().len(), 1);
}

#[tokio::test]
async fn corrupt_rows_are_errors_not_panics() {
    let store = memory().await;
    write_some(&store).await;
    let a = tenant();
    sqlx::query("UPDATE scaling_groups SET spec = '{\"name\": \"web\"}'")
        .execute(store.pool())
        .await
        .unwrap();
    let err = store.get_group(&a, "web").await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt(m) if m.contains("spec")),
        "{err}"
    );
    assert!(matches!(
        store.list_all_groups().await,
        Err(StoreError::Corrupt(_))
    ));

    sqlx::query("UPDATE instances SET status = 'zombie'")
        .execute(store.pool())
        .await
        .unwrap();
    let err = store.list_live_instances().await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt(m) if m.contains("zombie")),
        "{err}"
    );

    sqlx::query("UPDATE events SET kind = 'exploded', cause = 'not json'")
        .execute(store.pool())
        .await
        .unwrap();
    let err = store
        .list_events(&a, "web", &EventFilter::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt(m) if m.contains("exploded")),
        "{err}"
    );

    sqlx::query("UPDATE events SET kind = 'scale_out'")
        .execute(store.pool())
        .await
        .unwrap();
    let err = store
        .list_events(&a, "web", &EventFilter::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt(m) if m.contains("cause")),
        "{err}"
    );
}

#[tokio::test]
async fn open_fails_cleanly_on_a_bad_path() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let err = SqliteStore::open(&blocker.join("swell.db"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Database(_)), "{err}");
}

/// A copy of the migrations before the tenant grants (issue 15), to build a store as an
/// older Swell left it.
fn migrations_before_grants(dir: &std::path::Path, source: &str, last: &str) {
    std::fs::create_dir_all(dir).unwrap();
    for entry in std::fs::read_dir(source).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().to_string();
        if name.as_str() <= last {
            std::fs::copy(entry.path(), dir.join(&name)).unwrap();
        }
    }
}

/// Upgrading a store: the bootstrap `default` tenant gets the bootstrap grants (the
/// `process` provider, loopback ports 1024 and up); every other tenant gets nothing.
#[tokio::test]
async fn upgrade_grants_only_the_default_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("swell.db");
    let old = dir.path().join("old-migrations");
    migrations_before_grants(
        &old,
        concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"),
        "20261202000004_learned_state.sql",
    );
    {
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
        let migrator = sqlx::migrate::Migrator::new(old.as_path()).await.unwrap();
        migrator.run(&pool).await.unwrap();
        for id in ["default", "acme"] {
            sqlx::query("INSERT INTO tenants (id, created_at, max_instances) VALUES (?, 1, 5)")
                .bind(id)
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;
    }
    let store = SqliteStore::open(&path).await.unwrap();
    let default = store
        .get_tenant(&TenantId::default_tenant())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(default.grants, swell_core::Grants::bootstrap());
    assert_eq!(default.quota.max_instances, Some(5), "kept");
    assert_eq!(default.quota.max_groups, None);
    let acme = store
        .get_tenant(&TenantId::new("acme").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(acme.grants, swell_core::Grants::default());
    store.close().await;
}

/// Upgrading a store: the instance readings of the metric history, rows of their own
/// before, are read back from their group's points.
#[tokio::test]
async fn upgrade_keeps_the_instance_readings() {
    use swell_store::{MetricPointStore, PointFilter};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("swell.db");
    let old = dir.path().join("old-migrations");
    migrations_before_grants(
        &old,
        concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"),
        "20261207000015_live_instances.sql",
    );
    {
        // Without the group's row: the foreign keys are off for this old store's writes.
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .foreign_keys(false);
        let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
        let migrator = sqlx::migrate::Migrator::new(old.as_path()).await.unwrap();
        migrator.run(&pool).await.unwrap();
        for at in [1000, 2000] {
            sqlx::query("INSERT INTO group_metric_points VALUES ('default', 'web', ?, 2, 2, '{}')")
                .bind(at)
                .execute(&pool)
                .await
                .unwrap();
            for (id, cpu) in [("i-1", 10.5), ("i-2", 20.0)] {
                sqlx::query(
                    "INSERT INTO instance_metric_points VALUES ('default', 'web', ?, ?, ?, 64)",
                )
                .bind(id)
                .bind(at)
                .bind(cpu + at as f64)
                .execute(&pool)
                .await
                .unwrap();
            }
        }
        pool.close().await;
    }
    let store = SqliteStore::open(&path).await.unwrap();
    let read = store
        .instance_metric_points(
            &TenantId::default_tenant(),
            "web",
            &InstanceId("i-2".into()),
            &PointFilter::default(),
        )
        .await
        .unwrap();
    let got: Vec<(i64, f64, f64)> = read
        .iter()
        .map(|p| (p.at.0, p.cpu_percent, p.memory_mb))
        .collect();
    assert_eq!(got, vec![(1000, 1020.0, 64.0), (2000, 2020.0, 64.0)]);
    store.close().await;
}

fn instance(id: &str, group: &str) -> InstanceRecord {
    InstanceRecord {
        id: InstanceId(id.into()),
        tenant: tenant(),
        group: group.into(),
        status: InstanceStatus::Pending,
        lifecycle: Lifecycle::Permanent,
        created_order: 0,
        provider: "process".into(),
        host: None,
        address: None,
        native_id: None,
        protected: false,
        status_reason: None,
        created_at: Timestamp::from_millis(2_000),
        started_at: None,
        updated_at: Timestamp::from_millis(2_000),
    }
}

/// A file store never checkpoints inside a writer's `COMMIT` (automatic checkpoints
/// are off on its connections); its own checkpoint copies the whole WAL when no reader
/// holds it.
#[tokio::test]
async fn checkpoints_run_beside_the_writer() {
    let (_dir, store) = file().await;
    let (auto,): (i64,) = sqlx::query_as("PRAGMA wal_autocheckpoint")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(auto, 0);
    write_some(&store).await;
    let (frames, copied) = store.checkpoint().await.unwrap();
    assert!(frames > 0, "the writes are in the WAL");
    assert_eq!(copied, frames);
}

/// Group commit under a burst: a shared transaction holds at most 64 writers, so
/// 256 writers queued at once are committed in at least four `COMMIT`s, the first of
/// them before the last writer's turn (not one `COMMIT` after the whole queue).
#[tokio::test]
async fn a_burst_of_writers_commits_in_bounded_batches() {
    let (_dir, store) = file().await;
    let store = Arc::new(store);
    write_some(&store).await;
    let before = store.commits();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..256 {
        let store = store.clone();
        set.spawn(async move {
            store
                .create_instance(&instance(&format!("b-{i:03}"), "web"), None)
                .await
        });
    }
    while let Some(joined) = set.join_next().await {
        joined.unwrap().unwrap();
    }
    let commits = store.commits() - before;
    assert!(
        (4..=256).contains(&commits),
        "256 writers queued at once took {commits} commits"
    );
}

/// A batch of nothing takes no turn at the writer: a reconcile with nothing to create
/// or move costs no `COMMIT`.
#[tokio::test]
async fn empty_batches_write_nothing() {
    let (_dir, store) = file().await;
    write_some(&store).await;
    let before = store.commits();
    assert!(store.create_instances(&[]).await.unwrap().is_empty());
    assert!(store.update_instances(Vec::new()).await.unwrap().is_empty());
    assert_eq!(store.commits(), before);
    // A batch that writes commits (the count is the one compared above).
    store
        .create_instances(&[instance("e-1", "web")])
        .await
        .unwrap();
    assert_eq!(store.commits(), before + 1);
}

/// Group commit: writers that wait for the one writer at the same time share a
/// `COMMIT`; each still gets its own outcome (a failed one undoes only its own writes)
/// and what succeeded is on disk once its call returns (a reopened store reads it).
#[tokio::test]
async fn concurrent_writers_share_commits_and_each_keeps_its_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("swell.db");
    let store = Arc::new(SqliteStore::open(&path).await.unwrap());
    write_some(&store).await; // group `web`, instance `reopen-1`
    let before = store.commits();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..60 {
        let store = store.clone();
        set.spawn(async move {
            let record = match i % 3 {
                // Fails inside its savepoint: the id is taken.
                1 if i < 10 => instance("reopen-1", "web"),
                // Fails before it writes: no such group.
                2 if i < 10 => instance(&format!("lost-{i}"), "nope"),
                _ => instance(&format!("i-{i:02}"), "web"),
            };
            (i, store.create_instance(&record, None).await)
        });
    }
    let mut stored = 0;
    while let Some(joined) = set.join_next().await {
        let (i, result) = joined.unwrap();
        match (i % 3, i < 10, result) {
            (
                1,
                true,
                Err(StoreError::Conflict {
                    kind: "instance", ..
                }),
            ) => {}
            (2, true, Err(StoreError::NotFound { kind: "group", .. })) => {}
            (_, _, Ok(r)) => {
                assert_eq!(r.id.0, format!("i-{i:02}"));
                stored += 1;
            }
            (_, _, other) => panic!("writer {i}: {other:?}"),
        }
    }
    assert_eq!(stored, 54);
    let commits = store.commits() - before;
    assert!(
        (1..27).contains(&commits),
        "54 writes waiting together took {commits} commits"
    );
    store.close().await;
    let reopened = SqliteStore::open(&path).await.unwrap();
    let all = reopened
        .list_instances(&tenant(), "web", true)
        .await
        .unwrap();
    assert_eq!(all.len(), 55);
    let mut orders: Vec<i64> = all.iter().map(|r| r.created_order).collect();
    orders.dedup();
    assert_eq!(orders, (1..=55).collect::<Vec<i64>>());
}

/// A write transaction dropped without committing (an early error) leaves nothing, and
/// the writer goes on serving the next writers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_does_not_stop_the_writer() {
    let (_dir, store) = file().await;
    write_some(&store).await;
    for _ in 0..3 {
        let err = store
            .create_instance(&instance("reopen-1", "web"), None)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    }
    store
        .create_instance(&instance("after", "web"), None)
        .await
        .unwrap();
    let ids: Vec<String> = store
        .list_instances(&tenant(), "web", true)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id.0)
        .collect();
    assert_eq!(ids, ["reopen-1", "after"]);
}
