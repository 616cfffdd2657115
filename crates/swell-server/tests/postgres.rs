//! The server on a PostgreSQL store (a real server, from `swell_store::pg_test_server`):
//! it runs groups from the database, a second server on the same database refuses to
//! start while the first runs (the one-server rule), and the next one takes over what
//! the first left.

use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use swell_server::secrets::SecretString;
use swell_server::{Server, ServerConfig, StartError};
use swell_store::PgStore;
use swell_store::pg_test_server::TestServer;
use swell_store::postgres::{LockError, SERVER_LOCK_KEY};

const ADMIN_PASSWORD: &str = "pg-test-admin";

async fn start(dir: &Path, database_url: &str) -> Result<Server, StartError> {
    Server::start(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        database_url: Some(SecretString::new(database_url)),
        stop_instances_on_exit: true,
        admin_password: Some(SecretString::new(ADMIN_PASSWORD)),
        // Both servers must unseal the same credentials: one key, not one per data dir.
        secret_key: Some(SecretString::new(
            "0000000000000000000000000000000000000000000000000000000000000000",
        )),
        // Groups here tick every 200 ms, below the server's 1 s default floor.
        min_interval: std::time::Duration::from_millis(200),
        ..ServerConfig::default()
    })
    .await
}

async fn login(url: &str) -> reqwest::Client {
    let answer: Value = reqwest::Client::new()
        .post(format!("{url}/v1/auth/tokens"))
        .json(&json!({"user": "admin", "password": ADMIN_PASSWORD, "tenant": "default"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = answer["token"].as_str().expect("a token").to_string();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

async fn running(http: &reqwest::Client, url: &str, group: &str) -> usize {
    let v: Value = http
        .get(format!("{url}/v1/groups/{group}/instances"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["instances"]
        .as_array()
        .map(|a| a.iter().filter(|i| i["status"] == "running").count())
        .unwrap_or(0)
}

async fn wait_running(http: &reqwest::Client, url: &str, group: &str, n: usize) {
    for _ in 0..200 {
        if running(http, url, group).await == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("group {group} never reached {n} running instances");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_per_database_and_the_next_one_takes_over() {
    let pg = TestServer::shared();
    let db = pg.database("server_lock").await;
    let (dir1, dir2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());

    let first = start(dir1.path(), &db.url).await.expect("the first server");
    let url = format!("http://{}", first.addr());
    let http = login(&url).await;
    let created = http
        .post(format!("{url}/v1/groups"))
        .json(&json!({
            "name": "web",
            "template": {"command": ["sleep", "1000"]},
            "min": 0, "max": 5, "desired_capacity": 2,
            "evaluation_interval": "200ms", "metrics_interval": "200ms",
            "policies": [{"type": "threshold", "scale_out_above": 1000}]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    wait_running(&http, &url, "web", 2).await;

    // A second server on the same database, with its own data directory: refused, with
    // an error that says why, before it touches a group.
    let err = match start(dir2.path(), &db.url).await {
        Ok(_) => panic!("a second server started on the same database"),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(
        matches!(err, StartError::ServerLock(_))
            && msg.contains("another swell server holds this database"),
        "{msg}"
    );
    assert!(
        !dir2.path().join("instances").exists()
            || std::fs::read_dir(dir2.path().join("instances"))
                .unwrap()
                .next()
                .is_none(),
        "the refused server started no instance"
    );
    wait_running(&http, &url, "web", 2).await;

    // Once the first stops, the next one starts and finds the group in the database.
    first.shutdown().await;
    let second = start(dir2.path(), &db.url)
        .await
        .expect("the next server, once the first stopped");
    let url = format!("http://{}", second.addr());
    let http = login(&url).await;
    let group: Value = http
        .get(format!("{url}/v1/groups/web"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(group["desired_capacity"], 2, "{group}");
    wait_running(&http, &url, "web", 2).await;
    second.shutdown().await;
    pg.drop_database(db).await;
}

#[tokio::test]
async fn a_wrong_database_url_is_a_clear_start_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = match start(dir.path(), "postgres://nobody@127.0.0.1:1/swell").await {
        Ok(_) => panic!("started without a database"),
        Err(e) => e,
    };
    assert!(matches!(err, StartError::Store(_)), "{err}");
}

/// The backend holding the server lock on `store`'s database, if any.
async fn lock_holder(store: &PgStore) -> Option<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND classid = (($1 >> 32) & 4294967295)::oid \
           AND objid = ($1 & 4294967295)::oid AND objsubid = 1",
    )
    .bind(SERVER_LOCK_KEY)
    .fetch_optional(store.pool())
    .await
    .unwrap()
}

async fn terminate(store: &PgStore, pid: i32) {
    let done: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(done, "terminate backend {pid}");
}

/// What a database restart or a network cut does to the lock's session: the server
/// takes the lock again if it can, and stops (`lock_lost`) if another server got it
/// first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lock_is_taken_again_or_stops_the_server() {
    let pg = TestServer::shared();
    let db = pg.database("lock_keeper").await;
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &db.url).await.expect("the server");
    let probe = PgStore::connect(&db.url).await.unwrap();
    let deadline = swell_server::LOCK_CHECK_INTERVAL * 4;

    let first = lock_holder(&probe)
        .await
        .expect("the server holds the lock");
    terminate(&probe, first).await;
    let again = tokio::time::timeout(deadline, async {
        loop {
            match lock_holder(&probe).await {
                Some(pid) if pid != first => return pid,
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
    .expect("the server takes the lock again");
    assert!(matches!(
        probe.lock_server().await,
        Err(LockError::Held { .. })
    ));
    assert!(
        tokio::time::timeout(Duration::from_millis(200), server.lock_lost())
            .await
            .is_err(),
        "not lost: taken again"
    );

    // This time another server is quicker: the first must stop.
    terminate(&probe, again).await;
    let other = tokio::time::timeout(deadline, async {
        loop {
            match probe.lock_server().await {
                Ok(lock) => return lock,
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
    .await
    .expect("the other takes the lock");
    let reason = tokio::time::timeout(deadline, server.lock_lost())
        .await
        .expect("the server notices");
    assert!(
        reason.contains("another swell server holds this database"),
        "{reason}"
    );
    server.shutdown().await;
    drop(other);
    probe.close().await;
    pg.drop_database(db).await;
}
