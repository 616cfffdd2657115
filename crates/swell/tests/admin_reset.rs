//! `swell admin reset-password` on the server's host, against the store: a lost
//! password is replaced (generated and printed once, or from a file), the user's tokens
//! are revoked, and the new password logs in on the restarted server.

mod common;

use common::{SWELL, Swell};
use serde_json::json;
use std::process::Stdio;

async fn reset(s: &Swell, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(SWELL)
        .args(["admin", "reset-password"])
        .args(args)
        .arg("--data-dir")
        .arg(s.data_dir())
        .env_remove("SWELL_DATA_DIR")
        .env_remove("SWELL_DATABASE_URL")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("running swell admin reset-password")
}

async fn login(s: &Swell, user: &str, password: &str) -> (u16, serde_json::Value) {
    let a = s
        .request(
            reqwest::Method::POST,
            "/v1/auth/tokens",
            Some(&json!({"user": user, "password": password, "tenant": "default"}).to_string()),
        )
        .await;
    (a.status, a.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_password_offline_then_log_in_on_the_restarted_server() {
    let mut s = Swell::start().await;
    s.cli_json(&[
        "user",
        "create",
        "ops",
        "--admin",
        "--password-file",
        &s.write("ops.pw", "ops-forgotten-password\n"),
    ])
    .await;
    let (status, body) = login(&s, "ops", "ops-forgotten-password").await;
    assert_eq!(status, 201, "{body}");
    let old_token = body["token"].as_str().unwrap().to_string();
    s.stop().await;

    // Generated: printed once on standard output, nothing else there.
    let out = reset(&s, &["ops"]).await;
    assert!(out.status.success(), "{out:?}");
    let password = String::from_utf8(out.stdout.clone())
        .unwrap()
        .trim()
        .to_string();
    assert!(password.len() >= 20, "{password:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("tokens are revoked"),
        "{out:?}"
    );
    // An unknown user or a missing store: an error, nothing changed.
    let out = reset(&s, &["nobody"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no user `nobody`"));

    s.restart().await;
    assert_eq!(login(&s, "ops", "ops-forgotten-password").await.0, 401);
    let (status, body) = login(&s, "ops", &password).await;
    assert_eq!(status, 201, "{body}");
    let who = reqwest::Client::new()
        .get(format!("{}/v1/auth/whoami", s.url))
        .bearer_auth(&old_token)
        .send()
        .await
        .unwrap();
    assert_eq!(who.status().as_u16(), 401, "the old token is revoked");

    // From a file, while the server runs (SQLite takes both).
    let file = s.write("new.pw", "ops-chosen-password\n");
    let out = reset(&s, &["ops", "--password-file", &file]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty(), "nothing printed: {out:?}");
    s.stop().await;
    s.restart().await;
    assert_eq!(login(&s, "ops", "ops-chosen-password").await.0, 201);
    assert_eq!(login(&s, "ops", &password).await.0, 401);
}
