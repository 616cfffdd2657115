//! The operator's controls (issue 20, item 5), end to end with the real binary: a
//! suspended group's policies record what they would do and change nothing (a user
//! still scales it; a restart keeps it suspended), a protected instance is never chosen
//! by a scale-in, and `swell group update NAME --set` changes one field, validated like
//! a whole document.
//!
//! The policies are driven by pushed CPU readings (`swell metrics push`), never by
//! waiting: each poll pushes a reading and looks at what the server recorded.

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::Duration;

const WITHIN: Duration = Duration::from_secs(60);

/// A group whose only policy scales out by one while the pushed CPU is above 50 %.
fn hot_group(name: &str, min: u32, max: u32) -> Value {
    group_doc(
        name,
        min,
        max,
        json!([{"type": "threshold", "metric": "cpu", "scale_out_above": 50.0,
                "evaluation_period": "1s"}]),
    )
}

/// Pushes a group-level CPU reading of 95 % through the CLI.
async fn push_hot(s: &Swell, group: &str) {
    let out = s.cli(&["metrics", "push", group, "cpu", "95"]).await;
    assert!(out.status.success(), "metrics push: {out:?}");
}

/// Keeps the group hot until an event of `kind` whose cause ends at `after` is
/// recorded; returns it with every event so far.
async fn hot_until(s: &Swell, group: &str, kind: &str, after: u64) -> (Value, Vec<Value>) {
    eventually(&format!("a {kind} event to {after}"), WITHIN, || async {
        push_hot(s, group).await;
        let events = s.events(group).await;
        let found = of_kind(&events, kind)
            .into_iter()
            .find(|e| e["cause"]["after"] == after)
            .cloned();
        match found {
            Some(e) => Ok((e, events)),
            None => Err(format!(
                "{:?}",
                events.iter().map(|e| &e["message"]).collect::<Vec<_>>()
            )),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_group_says_what_it_would_do_and_does_nothing() {
    let mut s = Swell::start().await;
    let file = s.write("web.json", &hot_group("web", 1, 4).to_string());
    let created = s.cli_json(&["group", "create", "-f", &file]).await;
    assert_eq!(created["suspended"], false);
    wait_running(&s, "web", 1, WITHIN).await;

    let g = s.cli_json(&["group", "suspend", "web"]).await;
    assert_eq!(g["suspended"], true, "{g}");
    assert!(g["suspended_at"].is_string(), "{g}");
    let table = s.cli(&["group", "show", "web"]).await;
    assert!(table.stdout.contains("web (suspended)"), "{table:?}");

    // Hot: the policies would scale out to 2, and say so; nothing changes.
    let (would, events) = hot_until(&s, "web", "would_scale", 2).await;
    assert_eq!(would["cause"]["policy"], "threshold", "{would}");
    assert_eq!(would["cause"]["before"], 1, "{would}");
    let message = would["message"].as_str().unwrap();
    assert!(
        message.starts_with("would scale_out 1 → 2") && message.contains("nothing changed"),
        "{message}"
    );
    assert!(of_kind(&events, "scale_out").is_empty(), "{events:#?}");
    assert_eq!(of_kind(&events, "scaling_suspended").len(), 1);
    let g = s.get("/v1/groups/web").await;
    assert_eq!(g["desired_capacity"], 1, "{g}");
    assert_eq!(s.instances("web", false).await.len(), 1);
    // The worker's status says it too.
    let health = s.get("/v1/health").await;
    let status = health["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "group/default/web")
        .map(|w| w["state"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default();
    assert!(
        status.starts_with("suspended at 1"),
        "worker status: {status}"
    );

    // A user still scales a suspended group.
    let scaled = s.cli_json(&["scale", "web", "2"]).await;
    assert_eq!(scaled["desired_capacity"], 2);
    assert_eq!(scaled["suspended"], true);
    wait_running(&s, "web", 2, WITHIN).await;
    let (_, events) = hot_until(&s, "web", "would_scale", 3).await;
    assert!(of_kind(&events, "scale_out").is_empty(), "{events:#?}");
    assert_eq!(s.get("/v1/groups/web").await["desired_capacity"], 2);

    // Suspending again changes nothing and records nothing.
    s.cli_json(&["group", "suspend", "web"]).await;
    assert_eq!(
        of_kind(&s.events("web").await, "scaling_suspended").len(),
        1
    );

    // A restart keeps it suspended.
    s.stop().await;
    s.restart().await;
    let g = s.cli_json(&["group", "show", "web"]).await;
    assert_eq!(g["suspended"], true, "after a restart: {g}");
    let before = of_kind(&s.events("web").await, "would_scale").len();
    eventually("a would_scale event after the restart", WITHIN, || async {
        push_hot(&s, "web").await;
        let events = s.events("web").await;
        let n = of_kind(&events, "would_scale").len();
        if n > before {
            Ok(())
        } else {
            Err(format!("{n} would_scale events"))
        }
    })
    .await;
    let events = s.events("web").await;
    assert!(of_kind(&events, "scale_out").is_empty(), "{events:#?}");
    assert_eq!(s.get("/v1/groups/web").await["desired_capacity"], 2);
    // One event per new would-be capacity and worker start, not one per evaluation.
    assert!(
        of_kind(&events, "would_scale").len() <= 3,
        "{:#?}",
        of_kind(&events, "would_scale")
    );

    // Resumed: the policies act again.
    let g = s.cli_json(&["group", "resume", "web"]).await;
    assert_eq!(g["suspended"], false);
    let (scale_out, events) = hot_until(&s, "web", "scale_out", 3).await;
    assert_eq!(scale_out["cause"]["before"], 2, "{scale_out}");
    assert_eq!(of_kind(&events, "scaling_resumed").len(), 1);
    wait_running(&s, "web", 3, WITHIN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_instances_stay_and_set_changes_one_field() {
    let s = Swell::start().await;
    let mut doc = group_doc("web", 0, 4, never_scale());
    doc["desired_capacity"] = json!(3);
    doc["termination_policy"] = json!(["oldest"]);
    let file = s.write("web.json", &doc.to_string());
    s.cli_json(&["group", "create", "-f", &file]).await;
    let list = wait_running(&s, "web", 3, WITHIN).await;
    let by_order = |n: u64| {
        list.iter()
            .find(|i| i["created_order"] == n)
            .map(|i| i["id"].as_str().unwrap().to_string())
            .unwrap()
    };
    let (oldest, middle, newest) = (by_order(1), by_order(2), by_order(3));

    // The oldest would go first (termination_policy: [oldest]); protected, it stays.
    let p = s.cli_json(&["instance", "protect", "web", &oldest]).await;
    assert_eq!(p["protected"], true, "{p}");
    let wide = s.cli(&["-o", "wide", "instance", "list", "web"]).await;
    assert!(wide.stdout.contains("PROTECTED"), "{wide:?}");
    s.cli_json(&["scale", "web", "2"]).await;
    let left = wait_running(&s, "web", 2, WITHIN).await;
    assert_eq!(
        ids(&left),
        [oldest.clone(), newest.clone()].into_iter().collect(),
        "the oldest unprotected one ({middle}) went"
    );
    let events = s.events("web").await;
    assert!(
        kinds_for(&events, &oldest).contains(&"instance_protected".to_string()),
        "{events:#?}"
    );

    // Unprotected: the oldest goes next.
    let u = s.cli_json(&["instance", "unprotect", "web", &oldest]).await;
    assert_eq!(u["protected"], false);
    s.cli_json(&["scale", "web", "1"]).await;
    let left = wait_running(&s, "web", 1, WITHIN).await;
    assert_eq!(ids(&left), [newest.clone()].into_iter().collect());
    // A retired instance cannot be protected: 409, nothing recorded.
    let gone = s.cli(&["instance", "protect", "web", &middle]).await;
    assert!(!gone.status.success(), "{gone:?}");
    assert!(
        gone.stderr.contains("only a pending, running or paused"),
        "{gone:?}"
    );

    // --set: one field, then a nested one, in one call.
    let g = s
        .cli_json(&[
            "group",
            "update",
            "web",
            "--set",
            "max=10",
            "--set",
            "termination_policy=[newest, most_loaded_host]",
        ])
        .await;
    assert_eq!(g["spec"]["max"], 10, "{g}");
    assert_eq!(
        g["spec"]["termination_policy"],
        json!(["newest", "most_loaded_host"])
    );
    let g = s
        .cli_json(&[
            "group",
            "update",
            "web",
            "--set",
            "policies.0.scale_out_above=90",
        ])
        .await;
    assert_eq!(g["spec"]["policies"][0]["scale_out_above"], 90.0, "{g}");
    assert_eq!(g["spec"]["max"], 10, "the earlier change stays");

    // Bad values: an error naming the field and the rule, and nothing changed.
    let before = s.get("/v1/groups/web").await;
    let events_before = s.events("web").await.len();
    for (set, field, rule) in [
        ("min=11", "max", "must be >= min (11)"),
        (
            "termination_policy=[oldest, oldest]",
            "termination_policy[1]",
            "listed twice",
        ),
        (
            "termination_policy=[cheapest]",
            "termination_policy",
            "unknown variant",
        ),
        ("maxx=3", "maxx", "unknown field"),
        ("policies.3.target=60", "policies.3", "the list has 1 items"),
    ] {
        let out = s.cli(&["group", "update", "web", "--set", set]).await;
        assert!(!out.status.success(), "{set}: {out:?}");
        assert!(
            out.stderr.contains(field) && out.stderr.contains(rule),
            "{set}: expected `{field}` and `{rule}` in {:?}",
            out.stderr
        );
    }
    let after = s.get("/v1/groups/web").await;
    assert_eq!(before["spec"], after["spec"]);
    assert_eq!(s.events("web").await.len(), events_before);
}
