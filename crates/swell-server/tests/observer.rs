//! One observer per provider (issue 17, item 1): the provider is listed and measured
//! once per round whatever the number of groups on it, so 10 groups and 1,000 groups
//! cost the same provider calls per minute — read from the controller's own counters.
//!
//! The clock is injected (`ManualClock`) and the observers run in manual mode: each
//! five-second step of the clock is one `observe_round`, the default metrics interval,
//! so a minute is twelve rounds and nothing sleeps to make time pass. Meanwhile the
//! workers tick on their own (every 100 ms): had any of them called the provider, the
//! counts would grow with the groups.
//!
//! The provider is the in-process simulated one (`swell_providers::simulated`, the
//! benchmark's): what is measured is the controller, and a real provider would only
//! add its own latency. The store is the real SQLite one.

use std::sync::Arc;
use std::time::Duration;
use swell_core::{EventKind, GroupSpec, TenantId, Timestamp};
use swell_providers::Provider;
use swell_providers::simulated::SimulatedProvider;
use swell_server::clock::{Clock, ManualClock};
use swell_server::controller::{Controller, ControllerOptions, Providers};
use swell_store::{NewEvent, SqliteStore, Store};

/// Waits (polling) until `done` holds, for up to two minutes.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A controller on the real (in-memory) SQLite store and the simulated provider, its
/// observers in manual mode, running the groups of `specs` (each on `simulated`, with
/// a `sleep` template).
struct Fleet {
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
    sim: Arc<SimulatedProvider>,
    controller: Arc<Controller>,
}

/// An event of the group `group` with `message` (its kind does not matter here).
fn event(group: &str, message: &str) -> NewEvent {
    NewEvent {
        tenant: TenantId::default_tenant(),
        group: group.into(),
        at: Timestamp::from_secs(1_800_000_000),
        kind: EventKind::GroupCreated,
        instance_id: None,
        cause: None,
        message: message.into(),
    }
}

async fn fleet(specs: impl IntoIterator<Item = serde_json::Value>) -> Fleet {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().await.unwrap());
    let manual = Arc::new(ManualClock::new(Timestamp::from_secs(1_800_000_000)));
    let clock: Arc<dyn Clock> = manual.clone();
    let sim = Arc::new(SimulatedProvider::new(
        "simulated",
        Duration::from_secs(600),
        0.0,
    ));
    let tenant = TenantId::default_tenant();
    for mut spec in specs {
        spec["provider"] = "simulated".into();
        spec["template"] = serde_json::json!({"command": ["sleep", "1000"]});
        let spec: GroupSpec = serde_json::from_value(spec).unwrap();
        let created = event(&spec.name, &format!("created group {}", spec.name));
        store
            .create_group(&tenant, &spec, clock.now(), created)
            .await
            .unwrap();
    }
    let mut providers = Providers::new();
    providers.insert("simulated".into(), sim.clone() as Arc<dyn Provider>);
    let options = ControllerOptions {
        manual_observation: true,
        ..ControllerOptions::default()
    };
    let controller = Controller::new(store.clone(), providers, clock, options);
    controller.start().await.unwrap();
    Fleet {
        store,
        clock: manual,
        sim,
        controller,
    }
}

/// The controller's `list` and `metrics` calls to the provider during one minute of
/// the injected clock, once `groups` groups of one instance each run; and the
/// provider's own count of every call in that minute.
async fn calls_per_minute(groups: usize) -> (u64, u64, u64) {
    let Fleet {
        clock,
        sim,
        controller,
        ..
    } = fleet((0..groups).map(|i| {
        serde_json::json!({
            "name": format!("g{i:04}"),
            "min": 1, "max": 1, "desired_capacity": 1,
            "evaluation_interval": "100ms", "metrics_interval": "100ms",
        })
    }))
    .await;
    until("every group's instance", || sim.len() >= groups).await;
    // One round so that every observer has listed the instances.
    controller.observe_round().await;
    let count = |call: &str| {
        controller
            .stats()
            .provider_calls()
            .iter()
            .filter(|(p, k, _)| p == "simulated" && *k == call)
            .map(|(_, _, n)| *n)
            .sum::<u64>()
    };
    let before = (count("list"), count("metrics"), sim.calls().total());
    let ticks = controller.stats().ticks.count();
    for _ in 0..12 {
        clock.advance(Duration::from_secs(5));
        controller.observe_round().await;
    }
    // The workers went on meanwhile: several passes each.
    let want = ticks + 5 * groups as u64;
    until("the workers' passes", || {
        controller.stats().ticks.count() >= want
    })
    .await;
    let after = (count("list"), count("metrics"), sim.calls().total());
    controller.shutdown().await;
    (after.0 - before.0, after.1 - before.1, after.2 - before.2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_calls_per_minute_do_not_grow_with_the_groups() {
    let ten = calls_per_minute(10).await;
    let thousand = calls_per_minute(1000).await;
    // Twelve rounds: twelve lists, each followed by one read of the readings of every
    // live instance, and no other call (the provider's own count agrees).
    assert_eq!(ten, (12, 12, 24), "10 groups");
    assert_eq!(thousand, ten, "1000 groups against 10");
}

/// A group's latest readings (what the API shows of each instance) hold its live
/// instances only: the reading of a retired instance goes at the next collection, so a
/// fleet that turns its instances over does not grow the server's memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_instance_leaves_the_latest_readings() {
    let Fleet {
        store,
        sim,
        controller,
        ..
    } = fleet([serde_json::json!({
        "name": "g",
        "min": 0, "max": 2, "desired_capacity": 2, "drain_timeout": "0s",
        "evaluation_interval": "100ms", "metrics_interval": "100ms",
    })])
    .await;
    let tenant = TenantId::default_tenant();
    until("both instances", || sim.len() == 2).await;
    controller.observe_round().await;
    let ids: Vec<_> = sim
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.instance_id)
        .collect();
    let reading = |id| controller.latest_reading(&tenant, "g", id);
    until("both instances' readings", || {
        ids.iter().all(|id| reading(id).is_some())
    })
    .await;

    store
        .set_desired_capacity(&tenant, "g", 1, None, event("g", "desired 1"))
        .await
        .unwrap();
    controller.notify(&tenant, "g", None);
    until("one instance retired", || sim.len() == 1).await;
    controller.observe_round().await;
    let kept = sim.list().await.unwrap()[0].instance_id.clone();
    let gone = ids.iter().find(|id| **id != kept).unwrap().clone();
    until("the retired instance's reading dropped", || {
        reading(&gone).is_none()
    })
    .await;
    assert!(
        reading(&kept).is_some(),
        "the kept instance's reading stays"
    );
    controller.shutdown().await;
}
