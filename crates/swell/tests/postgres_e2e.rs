//! End to end on a PostgreSQL store: the real `swell serve` with `SWELL_DATABASE_URL`
//! (a real PostgreSQL server from `swell_store::pg_test_server`, a database of its own),
//! driven through the real CLI. The group lives in the database; a second server on the
//! same database refuses to start; after a `kill -9` the lock is PostgreSQL's to release,
//! and the restarted server adopts the instances it left.

mod common;

use common::Swell;
use std::process::Stdio;
use std::time::Duration;
use swell_store::pg_test_server::TestServer;
use swell_store::{InstanceStore, PgStore};

const CONVERGE: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_postgres_scale_refuse_a_second_server_and_recover() {
    let pg = TestServer::shared();
    let db = pg.database("e2e").await;
    let mut s = Swell::start_with(&[], &[("SWELL_DATABASE_URL", db.url.as_str())]).await;

    let doc = |min: u32| {
        format!(
            "name: web\nprovider: process\ntemplate:\n  command: [\"sleep\", \"1000\"]\n\
             min: {min}\nmax: 3\nevaluation_interval: 500ms\nmetrics_interval: 500ms\n\
             policies:\n  - type: threshold\n    scale_out_above: 1000\n"
        )
    };
    let file = s.write("group.yaml", &doc(1));
    let created = s.cli_json(&["group", "create", "-f", &file]).await;
    assert_eq!(created["name"], "web");
    common::wait_running(&s, "web", 1, CONVERGE).await;
    // Scale out: a larger min raises the desired capacity.
    let file = s.write("group.yaml", &doc(2));
    s.cli_json(&["group", "update", "-f", &file]).await;
    let before = common::wait_running(&s, "web", 2, CONVERGE).await;

    // It is all in PostgreSQL, nothing in an SQLite file.
    assert!(!s.data_dir().join("swell.db").exists());
    let store = PgStore::connect(&db.url).await.expect("the database");
    let live = store.list_live_instances().await.unwrap();
    assert_eq!(live.len(), 2, "{live:?}");
    store.close().await;

    // A second server on the same database: refused at start, with the reason.
    let other = tempfile::tempdir().unwrap();
    let second = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(common::SWELL)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(other.path())
            .args(["--database-url", &db.url])
            .env("SWELL_ADMIN_PASSWORD", common::ADMIN_PASSWORD)
            .env_remove("SWELL_DATABASE_URL")
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("the second server exits at once")
    .expect("running swell serve");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{stderr}");
    assert!(
        stderr.contains("another swell server holds this database"),
        "{stderr}"
    );
    common::wait_running(&s, "web", 2, CONVERGE).await;

    // kill -9: the session dies with the process, PostgreSQL releases the lock, and the
    // restarted server adopts the instances it left.
    s.kill9();
    s.restart().await;
    let after = common::wait_running(&s, "web", 2, CONVERGE).await;
    assert_eq!(
        common::ids(&after),
        common::ids(&before),
        "adopted, not replaced"
    );
    s.stop().await;
    pg.drop_database(db).await;
}
