//! End-to-end tests of the load balancer across scale-in (DESIGN.md invariant 4): a
//! real `swell serve`, real `swell demo-app` instances behind the group's load
//! balancer, steady traffic while `swell scale` moves the fleet, and what the server
//! reports afterwards through `GET /v1/groups/{name}/load_balancer` and the events.

mod common;

use common::{Swell, eventually, group_doc, ids, kinds_for, never_scale, of_kind, start_load};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Long enough for a loaded two-core machine; convergence normally takes seconds.
const CONVERGE: Duration = Duration::from_secs(60);

/// Waits until the group has exactly `n` instances, all `running`, and `desired == n`.
async fn wait_running(s: &Swell, group: &str, n: usize) -> Vec<Value> {
    common::wait_running(s, group, n, CONVERGE).await
}

/// Invariant 4 under steady traffic: 4 → 1 → 4 → 1 by `swell scale` loses no request;
/// every retired instance drained (left the pool) before it was terminated and got no
/// request after its drain began.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_request_fails_across_scale_in_and_out() {
    let started = Instant::now();
    let s = Swell::start().await;
    let doc = group_doc("steady", 1, 4, never_scale());
    let file = s.write("steady.json", &doc.to_string());
    s.cli_json(&["group", "create", "-f", &file]).await;
    wait_running(&s, "steady", 1).await;
    let lb = s.load_balancer("steady").await;
    let (load, tasks) = start_load(&lb, 4, 2);
    load.more(20, CONVERGE).await;

    let mut retired = BTreeSet::new();
    for round in 0..2 {
        let scaled = s.cli_json(&["scale", "steady", "4"]).await;
        assert_eq!(scaled["desired_capacity"], 4, "round {round}: {scaled}");
        let four = wait_running(&s, "steady", 4).await;
        // Every new instance takes traffic before the scale-in.
        load.more(150, CONVERGE).await;
        let scaled = s.cli_json(&["scale", "steady", "1"]).await;
        assert_eq!(scaled["desired_capacity"], 1, "round {round}: {scaled}");
        let one = wait_running(&s, "steady", 1).await;
        retired.extend(ids(&four).difference(&ids(&one)).cloned());
        load.more(20, CONVERGE).await;
    }
    load.finish(tasks).await;
    let (ok, failures) = (load.ok(), load.failures());
    assert!(
        failures.is_empty(),
        "{} of {} requests failed across the scale-in: {failures:#?}",
        failures.len(),
        ok + failures.len() as u64
    );
    assert!(ok > 300, "only {ok} requests went through");
    assert_eq!(retired.len(), 6, "{retired:?}");

    let status = s.get("/v1/groups/steady/load_balancer").await;
    assert_eq!(status["address"], lb.as_str(), "{status:#}");
    let backends = status["backends"].as_array().expect("backends");
    for b in backends {
        assert_eq!(b["requests_after_drain"], 0, "{b}");
    }
    for id in &retired {
        let b = backends
            .iter()
            .find(|b| b["id"] == id.as_str())
            .unwrap_or_else(|| panic!("retired instance {id} unknown to the LB: {status:#}"));
        assert!(b["draining_since"].is_string(), "{id} never drained: {b}");
        assert_eq!(b["in_pool"], false, "{b}");
        assert_eq!(b["in_flight"], 0, "{b}");
        assert!(
            b["requests"].as_u64().is_some_and(|n| n > 0),
            "{id} served nothing: {b}"
        );
    }

    let events = s.events("steady").await;
    for id in &retired {
        let kinds = kinds_for(&events, id);
        let drained = kinds.iter().position(|k| k == "instance_draining");
        let terminated = kinds.iter().position(|k| k == "instance_terminated");
        assert!(
            matches!((drained, terminated), (Some(d), Some(t)) if d < t),
            "instance {id}: {kinds:?}"
        );
    }
    eprintln!(
        "no_request_fails_across_scale_in_and_out: {ok} requests, {:?}",
        started.elapsed()
    );
}

/// A scale-out that comes while an instance drains takes that instance back instead of
/// creating a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_out_during_a_drain_reuses_the_draining_instance() {
    let started = Instant::now();
    let s = Swell::start().await;
    let mut doc = group_doc("reuse", 1, 2, never_scale());
    doc["drain_timeout"] = "30s".into();
    let file = s.write("reuse.json", &doc.to_string());
    s.cli_json(&["group", "create", "-f", &file]).await;
    s.cli_json(&["scale", "reuse", "2"]).await;
    let before = wait_running(&s, "reuse", 2).await;
    let lb = s.load_balancer("reuse").await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(40))
        .build()
        .expect("a client");

    // Slow requests on both instances (round robin) keep the retiring one draining:
    // 5 s leaves room for a loaded machine between the scale-in and the scale-out.
    let slow: Vec<_> = (0..4)
        .map(|_| {
            let (client, lb) = (client.clone(), lb.clone());
            tokio::spawn(async move {
                let r = client
                    .get(format!("http://{lb}/work?ms=5000"))
                    .send()
                    .await
                    .map_err(|e| format!("{e:?}"))?;
                if !r.status().is_success() {
                    return Err(format!("status {}", r.status()));
                }
                let body: Value = r.json().await.map_err(|e| e.to_string())?;
                Ok::<_, String>(body["instance"].as_str().unwrap_or_default().to_string())
            })
        })
        .collect();
    eventually(
        "slow requests in flight on both instances",
        CONVERGE,
        || async {
            let status = s.get("/v1/groups/reuse/load_balancer").await;
            let busy = status["backends"]
                .as_array()
                .map(|b| {
                    b.iter()
                        .filter(|b| b["in_flight"].as_u64().unwrap_or(0) > 0)
                        .count()
                })
                .unwrap_or(0);
            if busy == 2 {
                Ok(())
            } else {
                Err(format!("{status}"))
            }
        },
    )
    .await;

    s.cli_json(&["scale", "reuse", "1"]).await;
    let draining = eventually("an instance to drain", CONVERGE, || async {
        let d = s.ids_with_status("reuse", "draining").await;
        if d.len() == 1 {
            Ok(d[0].clone())
        } else {
            Err(format!("{:?}", s.instances("reuse", false).await))
        }
    })
    .await;
    let scaled = s.cli_json(&["scale", "reuse", "2"]).await;
    assert_eq!(scaled["desired_capacity"], 2);
    let after = wait_running(&s, "reuse", 2).await;
    assert_eq!(
        ids(&after),
        ids(&before),
        "a new instance replaced the draining one"
    );
    let all = s.instances("reuse", true).await;
    assert_eq!(ids(&all), ids(&before), "an instance was created: {all:#?}");

    let events = s.events("reuse").await;
    let reused: Vec<&Value> = of_kind(&events, "instance_created")
        .into_iter()
        .filter(|e| {
            e["instance_id"] == draining.as_str()
                && e["message"].as_str().is_some_and(|m| m.contains("reused"))
        })
        .collect();
    assert_eq!(reused.len(), 1, "{events:#?}");
    let kinds = kinds_for(&events, &draining);
    assert!(
        !kinds.iter().any(|k| k == "instance_terminated"),
        "{draining}: {kinds:?}"
    );
    assert!(kinds.iter().any(|k| k == "instance_draining"), "{kinds:?}");

    // Back in the pool, undrained (the load balancer follows the store on the worker's
    // next update, so a moment after the instance is running again); the slow
    // requests all finished.
    let b = eventually("the reused instance back in the pool", CONVERGE, || async {
        let status = s.get("/v1/groups/reuse/load_balancer").await;
        let b = status["backends"]
            .as_array()
            .and_then(|b| b.iter().find(|b| b["id"] == draining.as_str()))
            .cloned()
            .ok_or_else(|| format!("{status:#}"))?;
        if b["in_pool"] == true {
            Ok(b)
        } else {
            Err(format!("{b}"))
        }
    })
    .await;
    assert!(b["draining_since"].is_null(), "{b}");
    assert_eq!(b["requests_after_drain"], 0, "{b}");
    for t in slow {
        let r = t.await.expect("a client task");
        assert!(r.is_ok(), "a slow request failed: {r:?}");
    }
    eprintln!(
        "scale_out_during_a_drain_reuses_the_draining_instance: {:?}",
        started.elapsed()
    );
}
