//! A forecasting policy's memory outlives the controller (DESIGN.md "Nothing lost"): the
//! worker stores five-minute summaries of the load its policies learn from, and a worker
//! started later — after a restart, or an edit of the group — hands them to its new
//! policies; the API reads the same history. Real SQLite in a file, real child processes (`sleep`) as instances, and a
//! clock the test moves by hand (the worker's ticks run on real time, 100 ms; the test
//! polls for what it observes).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use swell_core::{GroupSpec, LoadSummary, Metric, TenantId, Timestamp};
use swell_providers::Provider;
use swell_providers::process::{ProcessConfig, ProcessProvider};
use swell_server::clock::Clock;
use swell_server::controller::{Controller, ControllerOptions, Providers};
use swell_server::service::{PushSample, Service, ServiceError};
use swell_store::{SqliteStore, Store};

/// A clock that moves only when the test says so.
struct ManualClock(Mutex<Timestamp>);

impl ManualClock {
    fn set(&self, t: Timestamp) {
        *self.0.lock().unwrap() = t;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap()
    }
}

const DAY: i64 = 86_400;
/// Midnight UTC of the test's first day.
const DAY0: i64 = 1_800_000_000 / DAY * DAY;

/// The test's daily load (requests per second): 100 at night, 300 from 08:00.
fn daily(t: i64) -> f64 {
    if (t - DAY0) % DAY >= 8 * 3600 {
        300.0
    } else {
        100.0
    }
}

/// A controller and service over the store in `dir`, with the process provider.
async fn start(
    dir: &Path,
    clock: Arc<ManualClock>,
    stop_instances_on_exit: bool,
) -> (Arc<Service>, Arc<Controller>, Arc<dyn Store>) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("swell.db")).await.unwrap());
    let process = ProcessProvider::new(ProcessConfig::new(
        dir.join("instances"),
        format!("load-history-test-{}", dir.display()),
    ));
    let mut providers = Providers::new();
    providers.insert("process".into(), Arc::new(process) as Arc<dyn Provider>);
    let clock: Arc<dyn Clock> = clock;
    let controller = Controller::new(
        store.clone(),
        providers,
        clock.clone(),
        ControllerOptions {
            stop_instances_on_exit,
            ..ControllerOptions::default()
        },
    );
    controller.start().await.unwrap();
    // Groups here tick every 100 ms, below the server's 1 s default floor.
    let service = Arc::new(
        Service::new(store.clone(), controller.clone(), clock)
            .with_min_interval(Duration::from_millis(100)),
    );
    // A tenant is granted nothing implicitly (issue 15): `default` gets `process`, as
    // the bootstrap grants it. A restart over the same store finds it there.
    if store
        .get_tenant(&TenantId::default_tenant())
        .await
        .unwrap()
        .is_none()
    {
        service
            .create_tenant(swell_api::CreateTenant {
                name: TenantId::default_tenant().to_string(),
                providers: Some(vec!["process".into()]),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    (service, controller, store)
}

/// Two to `max` instances, one predictive policy on the pushed request rate per instance
/// (a metric nothing but the test provides: no load balancer, and the process provider
/// measures CPU and memory), sizing for 50 with a day's history.
fn group(name: &str, max: u32) -> GroupSpec {
    serde_json::from_value(serde_json::json!({
        "name": name,
        "template": {"command": ["sleep", "600"]},
        "min": 2, "max": max, "desired_capacity": 2,
        "evaluation_interval": "100ms", "metrics_interval": "100ms", "drain_timeout": "0s",
        "policies": [{"type": "predictive", "metric": "request_rate_per_instance", "target": 50,
                      "provisioning_delay": "120s", "min_history": "1d",
                      "evaluation_period": "60s"}]
    }))
    .unwrap()
}

/// Polls `check` every 20 ms for up to 30 s.
async fn until<T>(what: &str, mut check: impl AsyncFnMut() -> Result<T, String>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) => assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}; last: {last}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn running(service: &Service, name: &str, want: usize) -> Result<(), String> {
    let live = service
        .list_instances(&TenantId::default_tenant(), name, false)
        .await
        .map_err(|e| e.to_string())?;
    let n = live
        .iter()
        .filter(|i| i.status == swell_core::InstanceStatus::Running)
        .count();
    if n == want {
        Ok(())
    } else {
        Err(format!("{n} running"))
    }
}

/// Pushes the request rate per instance that makes the group's load `load` on `on`
/// running instances.
async fn push(service: &Service, name: &str, load: f64, on: u32) {
    let sample = PushSample {
        metric: "request_rate_per_instance".into(),
        value: load / f64::from(on),
        instance_id: None,
    };
    service
        .push_metrics(&TenantId::default_tenant(), name, &[sample])
        .await
        .unwrap();
}

fn status(controller: &Controller, name: &str) -> String {
    controller
        .worker_statuses()
        .into_iter()
        .find(|(g, _)| g.ends_with(name))
        .map(|(_, s)| s)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forecasting_memory_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let tenant = TenantId::default_tenant();
    let clock = Arc::new(ManualClock(Mutex::new(Timestamp::from_secs(DAY0 + 3600))));
    let (service, controller, store) = start(dir.path(), clock.clone(), false).await;

    // The worker stores a period's summary of the load once the next period begins.
    // (Two instances at most: the load is pushed as if on two.)
    service
        .create_group(&tenant, group("kept", 2))
        .await
        .unwrap();
    until("two running instances", async || {
        running(&service, "kept", 2).await
    })
    .await;
    for (second, load) in [(0, 100.0), (100, 140.0), (200, 120.0), (300, 90.0)] {
        clock.set(Timestamp::from_secs(DAY0 + 2 * 3600 + second));
        push(&service, "kept", load, 2).await;
    }
    let stored = until("the first period stored", async || {
        let h = store
            .load_history(&tenant, "kept", Timestamp::from_secs(DAY0))
            .await
            .map_err(|e| e.to_string())?;
        if h.is_empty() {
            Err("nothing yet".into())
        } else {
            Ok(h)
        }
    })
    .await;
    assert_eq!(
        stored,
        vec![LoadSummary {
            at: Timestamp::from_secs(DAY0 + 2 * 3600 + 200),
            metric: Metric::RequestRatePerInstance,
            mean: 120.0,
            max: 140.0,
        }]
    );

    // Two groups alike, one with two days of the daily load behind it (as the worker
    // of an earlier run would have stored them), one without.
    for name in ["remembers", "forgets"] {
        service
            .create_group(&tenant, group(name, 10))
            .await
            .unwrap();
    }
    let now = DAY0 + 2 * DAY + 7 * 3600 + 58 * 60;
    let past: Vec<LoadSummary> = (DAY0 / 60..now / 60 - 1)
        .map(|m| LoadSummary {
            at: Timestamp::from_secs(m * 60 + 30),
            metric: Metric::RequestRatePerInstance,
            mean: daily(m * 60),
            max: daily(m * 60),
        })
        .collect();
    store
        .append_load_history(&tenant, "remembers", &past)
        .await
        .unwrap();

    // Restart: new workers build their policies from the store.
    controller.shutdown().await;
    drop((service, controller, store));
    let (service, controller, _store) = start(dir.path(), clock.clone(), true).await;
    for name in ["remembers", "forgets"] {
        until("two running instances", async || {
            running(&service, name, 2).await
        })
        .await;
    }
    clock.set(Timestamp::from_secs(now));
    for name in ["remembers", "forgets"] {
        push(&service, name, 100.0, 2).await;
    }

    // At 07:58 the present load needs ceil(100 / 50) = 2 instances; yesterday's 08:00
    // rise says 300 / 50 = 6, and only the group that remembers it knows.
    until("a forecast scale-out", async || {
        let g = service
            .get_group(&tenant, "remembers")
            .await
            .map_err(|e| e.to_string())?;
        if g.desired_capacity == 6 {
            Ok(())
        } else {
            Err(format!(
                "desired {}: {}",
                g.desired_capacity,
                status(&controller, "remembers")
            ))
        }
    })
    .await;
    until("the other group to stay reactive", async || {
        let s = status(&controller, "forgets");
        if s.contains("history too short") {
            Ok(())
        } else {
            Err(s)
        }
    })
    .await;
    let g = service.get_group(&tenant, "forgets").await.unwrap();
    assert_eq!(g.desired_capacity, 2);

    // The API reads the same history (`GET /v1/groups/{name}/metrics/history`): by
    // default the last hour, optionally of one metric; a metric it does not know is an
    // error naming the parameter.
    let read = |name: &'static str, since: Option<i64>, metric: Option<&'static str>| {
        let service = service.clone();
        async move {
            service
                .load_history(
                    &TenantId::default_tenant(),
                    name,
                    since.map(Timestamp::from_secs),
                    metric,
                )
                .await
        }
    };
    // The period still open when the first controller stopped was stored as it stood.
    let kept = read("kept", Some(DAY0), Some("request_rate_per_instance"));
    let at_stop = LoadSummary {
        at: Timestamp::from_secs(DAY0 + 2 * 3600 + 300),
        metric: Metric::RequestRatePerInstance,
        mean: 90.0,
        max: 90.0,
    };
    assert_eq!(kept.await.unwrap(), [stored[0], at_stop]);
    assert!(
        read("kept", Some(DAY0), Some("cpu"))
            .await
            .unwrap()
            .is_empty()
    );
    let last_hour = read("remembers", None, None).await.unwrap();
    assert_eq!(last_hour.len(), 59, "{last_hour:?}");
    assert_eq!(last_hour, past[past.len() - 59..]);
    match read("kept", None, Some("cpuu")).await {
        Err(ServiceError::Invalid(e)) => {
            assert_eq!(e.field, "metric");
            assert!(e.rule.contains("unknown metric `cpuu`"), "{}", e.rule);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        read("nope", None, None).await,
        Err(ServiceError::NotFound { .. })
    ));
    // An edit of the group rebuilds its policies: they start from the store again and
    // still forecast, where a fresh policy would say "history too short". A minute on,
    // the same load of 100 on the six instances now running: 6 stays.
    service
        .update_group(&tenant, "remembers", group("remembers", 11))
        .await
        .unwrap();
    until("six running instances", async || {
        running(&service, "remembers", 6).await
    })
    .await;
    clock.set(Timestamp::from_secs(now + 61));
    push(&service, "remembers", 100.0, 6).await;
    until("the edited group's policy to forecast", async || {
        let s = status(&controller, "remembers");
        if s.starts_with("idle at 6: forecast") && s.contains(" 16.7 on 6 ready") {
            Ok(())
        } else {
            Err(s)
        }
    })
    .await;

    controller.shutdown().await;
}

/// Two instances (fixed), the `swell` policy on the pushed request rate per instance,
/// judging itself after 20 scored forecasts; `delay` is its provisioning delay.
fn swell_group(name: &str, delay: &str) -> GroupSpec {
    serde_json::from_value(serde_json::json!({
        "name": name,
        "template": {"command": ["sleep", "600"]},
        "min": 2, "max": 2, "desired_capacity": 2,
        "evaluation_interval": "100ms", "metrics_interval": "100ms", "drain_timeout": "0s",
        "policies": [{"type": "swell", "metric": "request_rate_per_instance",
                      "provisioning_delay": delay, "horizon": "40s", "min_scored": 20}]
    }))
    .unwrap()
}

/// Waits for the worker's next decision on a load of `per_instance` (pushed alone, 20 s
/// after the last one, so that it is the whole present level) and returns its reason.
async fn decision_on(
    service: &Service,
    controller: &Controller,
    clock: &ManualClock,
    at: &mut i64,
    name: &str,
    per_instance: f64,
) -> String {
    *at += 20;
    clock.set(Timestamp::from_secs(*at));
    push(service, name, per_instance * 2.0, 2).await;
    let shown = format!("request_rate_per_instance {per_instance:.1} on 2 ready");
    until("a decision on the new load", async || {
        let s = status(controller, name);
        if s.contains(&shown) { Ok(s) } else { Err(s) }
    })
    .await
}

/// `swell`'s record of its forecast errors (what sizes its headroom once 20 forecasts are
/// scored) outlives an edit of the group and a restart of the controller; an edit that
/// changes what the errors depend on (the provisioning delay) starts it afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learned_headroom_survives_an_edit_and_a_restart() {
    const LEARNED: &str = "p99";
    const COLD: &str = "no track record yet";
    let dir = tempfile::tempdir().unwrap();
    let tenant = TenantId::default_tenant();
    let mut at = DAY0;
    let clock = Arc::new(ManualClock(Mutex::new(Timestamp::from_secs(at))));
    let (service, controller, store) = start(dir.path(), clock.clone(), false).await;
    service
        .create_group(&tenant, swell_group("learns", "20s"))
        .await
        .unwrap();
    until("two running instances", async || {
        running(&service, "learns", 2).await
    })
    .await;

    // A steady 100 per instance, 5 s apart, until the policy sizes from its record.
    let mut learned_after = None;
    for step in 0..600 {
        at += 5;
        clock.set(Timestamp::from_secs(at));
        push(&service, "learns", 200.0, 2).await;
        tokio::time::sleep(Duration::from_millis(25)).await;
        if status(&controller, "learns").contains(LEARNED) {
            learned_after = Some(step);
            break;
        }
    }
    assert!(
        learned_after.is_some(),
        "never learned: {}",
        status(&controller, "learns")
    );
    // The record is stored with the five-minute summaries, when the next period begins.
    let next_period = (at / 300 + 1) * 300;
    while at <= next_period {
        at += 5;
        clock.set(Timestamp::from_secs(at));
        push(&service, "learns", 200.0, 2).await;
    }
    until("the learned state stored", async || {
        let states = store
            .learned_states(&tenant, "learns")
            .await
            .map_err(|e| e.to_string())?;
        match states.as_slice() {
            [s] if s.policy == "swell#0" && s.state["scored"].as_u64() >= Some(20) => Ok(()),
            _ => Err(format!("{states:?}")),
        }
    })
    .await;

    // An edit of something else keeps the record: the rebuilt policy's first decision
    // already sizes from it.
    let mut edited = swell_group("learns", "20s");
    edited.cooldown = Duration::from_secs(60);
    service
        .update_group(&tenant, "learns", edited)
        .await
        .unwrap();
    let s = decision_on(&service, &controller, &clock, &mut at, "learns", 90.0).await;
    assert!(s.contains(LEARNED), "{s}");

    // A restart keeps it too (the worker saves it when it stops); a new group beside it
    // starts cold, which is what the edited and restarted group would show without it.
    controller.shutdown().await;
    drop((service, controller, store));
    let (service, controller, store) = start(dir.path(), clock.clone(), true).await;
    service
        .create_group(&tenant, swell_group("fresh", "20s"))
        .await
        .unwrap();
    for name in ["learns", "fresh"] {
        until("two running instances", async || {
            running(&service, name, 2).await
        })
        .await;
    }
    let s = decision_on(&service, &controller, &clock, &mut at, "learns", 80.0).await;
    assert!(s.contains(LEARNED), "{s}");
    let s = decision_on(&service, &controller, &clock, &mut at, "fresh", 80.0).await;
    assert!(s.contains(COLD), "{s}");

    // Another provisioning delay makes the record another forecast's: not taken.
    service
        .update_group(&tenant, "learns", swell_group("learns", "30s"))
        .await
        .unwrap();
    let s = decision_on(&service, &controller, &clock, &mut at, "learns", 70.0).await;
    assert!(s.contains(COLD), "{s}");
    drop(store);
    controller.shutdown().await;
}

/// A group worker's queue is bounded (issue 15): metric pushes that arrive faster than
/// the worker takes them are refused once [`WORKER_QUEUE`] wait, instead of growing the
/// server's memory; once the worker has taken them, pushes are accepted again. On a
/// current-thread runtime the worker cannot run while the test pushes without awaiting,
/// so exactly the queue's size is accepted.
#[tokio::test]
async fn a_full_worker_queue_refuses_pushes_instead_of_growing() {
    use swell_server::controller::{PushError, PushedReading, WORKER_QUEUE};
    let dir = tempfile::tempdir().unwrap();
    let tenant = TenantId::default_tenant();
    let clock = Arc::new(ManualClock(Mutex::new(Timestamp::from_secs(DAY0 + 3600))));
    let (service, controller, _store) = start(dir.path(), clock, true).await;
    let mut g = group("busy", 2);
    g.min = 0;
    g.desired_capacity = Some(0);
    service.create_group(&tenant, g).await.unwrap();
    let reading = || {
        vec![PushedReading {
            metric: Metric::RequestRatePerInstance,
            value: 1.0,
            instance: None,
            at: Timestamp::from_secs(DAY0 + 3600),
        }]
    };
    let outcomes: Vec<_> = (0..10 * WORKER_QUEUE)
        .map(|_| controller.push_metrics(&tenant, "busy", reading()))
        .collect();
    let accepted = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(
        accepted,
        WORKER_QUEUE,
        "{:?}",
        &outcomes[WORKER_QUEUE - 1..]
    );
    assert!(
        outcomes[WORKER_QUEUE..]
            .iter()
            .all(|o| *o == Err(PushError::Full))
    );
    // Through the service, a full queue is `Busy` (429 over HTTP), nothing queued.
    let sample = PushSample {
        metric: "request_rate_per_instance".into(),
        value: 1.0,
        instance_id: None,
    };
    match service.push_metrics(&tenant, "busy", &[sample]).await {
        Err(ServiceError::Busy(why)) => assert!(why.contains("push again"), "{why}"),
        // The service's store reads may have let the worker drain the queue first.
        Ok(_) => {}
        other => panic!("{other:?}"),
    }
    until("the worker to drain its queue", async || {
        match controller.push_metrics(&tenant, "busy", reading()) {
            Ok(()) => Ok(()),
            Err(e) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                Err(format!("{e:?}"))
            }
        }
    })
    .await;
    controller.shutdown().await;
}
