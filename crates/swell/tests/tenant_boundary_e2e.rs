//! The load balancer port hijack of issue 15, end to end: a real `swell serve`, tenant
//! A's (`default`) group of real `swell demo-app` instances behind a load balancer with
//! `SO_REUSEPORT` workers, and tenant B's member asking for the same address. Before
//! the fix B's group was created (201) and its listener took about half of A's
//! connections (94 of 200); now it is refused with 409 and A's instances get them all.

mod common;

use common::{Swell, free_port, group_doc, never_scale};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_tenant_cannot_share_a_listen_address() {
    let s = Swell::start().await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut a = group_doc("a-web", 2, 2, never_scale());
    a["load_balancer"] = json!({"listen": listen, "workers": 2});
    let created = s
        .request(reqwest::Method::POST, "/v1/groups", Some(&a.to_string()))
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let a_ids: BTreeSet<String> = common::wait_running(&s, "a-web", 2, Duration::from_secs(60))
        .await
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();

    // Tenant B is granted `process` and, by an admin's mistake, a range holding A's port.
    let b = s
        .request(
            reqwest::Method::POST,
            "/v1/tenants",
            Some(
                &json!({"name": "bee", "providers": ["process"], "listen": [format!("127.0.0.1:{port}")]})
                    .to_string(),
            ),
        )
        .await;
    assert_eq!(b.status, 201, "{:?}", b.body);
    let token = s.user_token("bee-member", "bee", "member").await;
    let http = reqwest::Client::new();
    let mut hijack = group_doc("b-web", 2, 2, never_scale());
    hijack["load_balancer"] = json!({"listen": listen, "workers": 2});
    let r = http
        .post(format!("{}/v1/groups", s.url))
        .bearer_auth(&token)
        .json(&hijack)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["field"], "load_balancer.listen", "{body}");
    assert!(
        !body.to_string().contains("a-web"),
        "names A's group: {body}"
    );

    // 200 fresh connections through A's address: every one answered by A's instances.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut served = std::collections::BTreeMap::<String, u32>::new();
    for _ in 0..200 {
        let text = fresh
            .get(format!("http://{listen}/"))
            .send()
            .await
            .expect("A's load balancer answers")
            .text()
            .await
            .unwrap();
        let id = text
            .split('`')
            .nth(1)
            .unwrap_or_else(|| panic!("not a demo-app answer: {text}"))
            .to_string();
        *served.entry(id).or_default() += 1;
    }
    for (id, n) in &served {
        assert!(
            a_ids.contains(id),
            "{n} connections went to {id}, not A's: {served:?}"
        );
    }
    assert_eq!(served.values().sum::<u32>(), 200);
}
