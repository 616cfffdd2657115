//! The conformance suite against the PostgreSQL adapter on a real server (started once
//! for this test binary by `swell_store::pg_test_server`, or `SWELL_TEST_POSTGRES_URL`),
//! each check in a database of its own; plus what only PostgreSQL has: reconnecting
//! (migrations are idempotent), the server lock, and listings in byte order whatever
//! the database's locale.

use std::sync::Arc;
use std::time::Instant;
use swell_core::{EventKind, InstanceId, InstanceStatus, Lifecycle, TenantId, Timestamp};
use swell_store::conformance::{self, CHECKS};
use swell_store::pg_test_server::{TestDatabase, TestServer};
use swell_store::postgres::LockError;
use swell_store::{AccessStore, EventStore, GroupStore, InstanceStore, TenantStore};
use swell_store::{EventFilter, InstanceRecord, NewEvent, PgStore, Store, StoreError, UserRecord};

/// A fresh database and a store on it.
async fn fresh(hint: &str) -> (TestDatabase, PgStore) {
    let db = TestServer::shared().database(hint).await;
    let store = PgStore::connect(&db.url).await.expect("connect");
    (db, store)
}

async fn done(db: TestDatabase, store: PgStore) {
    store.close().await;
    TestServer::shared().drop_database(db).await;
}

macro_rules! conformance_tests {
    ($($name:ident),* $(,)?) => {
        /// The names this file runs, to check that it runs all of them.
        const NAMES: &[&str] = &[$(stringify!($name)),*];

        mod each_in_its_database {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (db, store) = super::fresh(stringify!($name)).await;
                    swell_store::conformance::$name(&store).await;
                    super::done(db, store).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_checks_one_after_another_on_one_database() {
    let (db, store) = fresh("run_all").await;
    let t0 = Instant::now();
    conformance::run_all(&store).await;
    eprintln!(
        "{} checks in {:?} (server started in {:?})",
        CHECKS.len(),
        t0.elapsed(),
        TestServer::shared().started_in()
    );
    done(db, store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_checks_at_once_on_one_database() {
    let (db, store) = fresh("at_once").await;
    let shared: Arc<dyn Store> = Arc::new(store.clone());
    let mut set = tokio::task::JoinSet::new();
    for (name, check) in CHECKS {
        let store = shared.clone();
        set.spawn(async move {
            check(&*store).await;
            name
        });
    }
    while let Some(finished) = set.join_next().await {
        finished.expect("a check panicked");
    }
    done(db, store).await;
}

fn tenant() -> TenantId {
    TenantId::new("reopen").unwrap()
}

async fn write_some(store: &PgStore) {
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

#[tokio::test]
async fn reconnect_keeps_data_and_migrations_are_idempotent() {
    let (db, store) = fresh("reconnect").await;
    write_some(&store).await;
    store.close().await;
    for _ in 0..2 {
        let store = PgStore::connect(&db.url).await.expect("reconnect");
        let a = tenant();
        let g = store.get_group(&a, "web").await.unwrap().expect("kept");
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
        let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations-postgres"))
            .unwrap()
            .count();
        assert_eq!(applied as usize, files, "each migration applied once");
        store.close().await;
    }
    TestServer::shared().drop_database(db).await;
}

#[tokio::test]
async fn two_stores_connecting_at_once_migrate_once() {
    let db = TestServer::shared().database("migrate_race").await;
    let (one, two) = tokio::join!(PgStore::connect(&db.url), PgStore::connect(&db.url));
    let (one, two) = (one.expect("first"), two.expect("second"));
    write_some(&one).await;
    assert_eq!(two.list_groups(&tenant()).await.unwrap().len(), 1);
    one.close().await;
    two.close().await;
    TestServer::shared().drop_database(db).await;
}

#[tokio::test]
async fn one_server_lock_per_database() {
    let (db, first) = fresh("server_lock").await;
    let second = PgStore::connect(&db.url).await.expect("second store");
    let mut lock = first.lock_server().await.expect("the first server locks");
    assert!(lock.is_held().await);
    let err = second
        .lock_server()
        .await
        .expect_err("the second is refused");
    assert!(matches!(err, LockError::Held { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("another swell server holds this database")
            && msg.contains("application 'swell'"),
        "{msg}"
    );
    // Another database on the same server is another lock.
    let (other_db, other) = fresh("server_lock_other").await;
    let other_lock = other.lock_server().await.expect("another database");

    // Released explicitly…
    lock.release().await.expect("release");
    let lock2 = second.lock_server().await.expect("free after release");
    assert!(matches!(
        first.lock_server().await,
        Err(LockError::Held { .. })
    ));
    // …or by dropping it (the session ends).
    drop(lock2);
    let mut taken = None;
    for _ in 0..50 {
        match first.lock_server().await {
            Ok(l) => {
                taken = Some(l);
                break;
            }
            Err(LockError::Held { .. }) => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(taken.is_some(), "a dropped lock is released");
    drop((taken, other_lock));
    done(other_db, other).await;
    second.close().await;
    done(db, first).await;
}

#[tokio::test]
async fn listings_are_in_byte_order_under_any_locale() {
    // A database whose default collation sorts case-insensitively ("a" < "B" < "c"),
    // unlike SQLite and the C locale ("B" < "a" < "c"). User names are free-form.
    let server = TestServer::shared();
    let db = server
        .database_with(
            "collation",
            "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'",
        )
        .await;
    let store = PgStore::connect(&db.url).await.unwrap();
    let default_order: Vec<String> =
        sqlx::query_scalar("SELECT x FROM (VALUES ('c'), ('a'), ('B')) AS v (x) ORDER BY x")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(
        default_order,
        ["a", "B", "c"],
        "the database's own order differs"
    );
    for name in ["c", "a", "B"] {
        store
            .create_user(&UserRecord {
                name: name.into(),
                password_hash: "x".into(),
                is_admin: false,
                created_at: Timestamp::from_millis(1),
                password_changed_at: Timestamp::from_millis(1),
            })
            .await
            .unwrap();
    }
    let names: Vec<_> = store
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["B", "a", "c"]);
    done(db, store).await;
}

#[tokio::test]
async fn corrupt_rows_are_errors_not_panics() {
    let (db, store) = fresh("corrupt").await;
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
    sqlx::query("UPDATE instances SET status = 'zombie'")
        .execute(store.pool())
        .await
        .unwrap();
    let err = store.list_live_instances().await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt(m) if m.contains("zombie")),
        "{err}"
    );
    sqlx::query("UPDATE events SET kind = 'scale_out', cause = 'not json'")
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
    done(db, store).await;
}

#[tokio::test]
async fn connect_fails_cleanly() {
    let err = PgStore::connect("postgres://nobody@127.0.0.1:1/nothing")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Database(_)), "{err}");
    let err = PgStore::connect("not a url").await.unwrap_err();
    assert!(matches!(err, StoreError::Database(_)), "{err}");
}

#[tokio::test]
async fn debug_hides_the_password() {
    let server = TestServer::shared();
    if server.dir().is_none() {
        // An external server checks passwords; ours trusts its socket.
        return;
    }
    let db = server.database("debug").await;
    let options = std::str::FromStr::from_str(&db.url)
        .map(|o: sqlx::postgres::PgConnectOptions| o.password("s3cret"))
        .unwrap();
    let store = PgStore::connect_with(options).await.unwrap();
    let shown = format!("{store:?}");
    assert!(shown.contains(&db.name), "{shown}");
    assert!(!shown.contains("s3cret"), "{shown}");
    done(db, store).await;
}

/// Upgrading a PostgreSQL store: the bootstrap `default` tenant gets the bootstrap
/// grants; every other tenant gets nothing.
#[tokio::test]
async fn upgrade_grants_only_the_default_tenant() {
    let db = TestServer::shared().database("upgrade_grants").await;
    let old = tempfile::tempdir().unwrap();
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations-postgres");
    std::fs::copy(
        format!("{source}/20261202000001_initial.sql"),
        old.path().join("20261202000001_initial.sql"),
    )
    .unwrap();
    {
        let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
        let migrator = sqlx::migrate::Migrator::new(old.path()).await.unwrap();
        migrator.run(&pool).await.unwrap();
        for id in ["default", "acme"] {
            sqlx::query("INSERT INTO tenants (id, created_at) VALUES ($1, 1)")
                .bind(id)
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;
    }
    let store = PgStore::connect(&db.url).await.unwrap();
    let default = store
        .get_tenant(&TenantId::default_tenant())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(default.grants, swell_core::Grants::bootstrap());
    let acme = store
        .get_tenant(&TenantId::new("acme").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(acme.grants, swell_core::Grants::default());
    done(db, store).await;
}

/// Upgrading a PostgreSQL store: the instance readings of the metric history, rows of
/// their own before, are read back from their group's points.
#[tokio::test]
async fn upgrade_keeps_the_instance_readings() {
    use swell_store::{MetricPointStore, PointFilter};
    let db = TestServer::shared().database("upgrade_readings").await;
    let old = tempfile::tempdir().unwrap();
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations-postgres");
    for entry in std::fs::read_dir(source).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        if name.as_str() <= "20261207000012_live_instances.sql" {
            std::fs::copy(format!("{source}/{name}"), old.path().join(&name)).unwrap();
        }
    }
    {
        let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
        let migrator = sqlx::migrate::Migrator::new(old.path()).await.unwrap();
        migrator.run(&pool).await.unwrap();
        let mut conn = pool.acquire().await.unwrap();
        // Without the group's row: foreign keys are not checked for this old store's
        // writes (the test server's user is a superuser).
        sqlx::query("SET session_replication_role = replica")
            .execute(&mut *conn)
            .await
            .unwrap();
        for at in [1000_i64, 2000] {
            sqlx::query(
                "INSERT INTO group_metric_points VALUES ('default', 'web', $1, 2, 2, '{}')",
            )
            .bind(at)
            .execute(&mut *conn)
            .await
            .unwrap();
            for (id, cpu) in [("i-1", 10.5), ("i-2", 20.0)] {
                sqlx::query(
                    "INSERT INTO instance_metric_points VALUES ('default', 'web', $1, $2, $3, 64)",
                )
                .bind(id)
                .bind(at)
                .bind(cpu + at as f64)
                .execute(&mut *conn)
                .await
                .unwrap();
            }
        }
        drop(conn);
        pool.close().await;
    }
    let store = PgStore::connect(&db.url).await.unwrap();
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
    done(db, store).await;
}
