//! `swell webhook …` against a real `swell serve` (the real binary, a real SQLite
//! store): the secret is read from a file and never printed; a loopback URL is refused
//! without the admin's allowance; the delivery log is readable; a webhook can be deleted.

mod common;

use common::Swell;

const SECRET: &str = "cli-webhook-secret-7Fq2x";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_create_list_read_deliveries_and_delete_webhooks_from_the_cli() {
    let s = Swell::start().await;
    let secret_file = s.write("hook.secret", &format!("{SECRET}\n"));
    let made = s
        .cli_json(&[
            "webhook",
            "create",
            "https://hooks.invalid/swell",
            "--events",
            "scale_out,instance_failed",
            "--secret-file",
            &secret_file,
        ])
        .await;
    assert_eq!(made["secret"], "set");
    assert_eq!(
        made["events"],
        serde_json::json!(["scale_out", "instance_failed"])
    );
    let id = made["id"].as_str().unwrap().to_string();

    let refused = s
        .cli(&[
            "webhook",
            "create",
            "http://127.0.0.1:9/hook",
            "--secret-file",
            &secret_file,
        ])
        .await;
    assert!(!refused.status.success(), "{refused:?}");
    assert!(refused.stderr.contains("url"), "{refused:?}");

    let table = s.cli(&["webhook", "list"]).await;
    assert!(table.status.success(), "{table:?}");
    assert!(table.stdout.starts_with("ID"), "{table:?}");
    assert!(
        table.stdout.contains(&id) && table.stdout.contains("scale_out,instance_failed"),
        "{table:?}"
    );
    assert!(!table.stdout.contains(SECRET) && !s.logs().contains(SECRET));

    let log = s.cli_json(&["webhook", "deliveries", &id]).await;
    assert_eq!(log["deliveries"], serde_json::json!([]));

    let deleted = s.cli(&["webhook", "delete", &id]).await;
    assert!(deleted.status.success(), "{deleted:?}");
    let list = s.cli_json(&["webhook", "list"]).await;
    assert_eq!(list["webhooks"], serde_json::json!([]));
}
