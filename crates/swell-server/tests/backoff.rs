//! The controller against a fake provider, on a clock the test moves by hand (DESIGN.md
//! invariant 5: no sleeping to test timing): a create that keeps failing is retried
//! with backoff, not at every evaluation tick; a provider without room caps the
//! scale-out with one `provider_capped` event, counting instances of the size the
//! provider reports rather than the template's; a retired instance is drained at the
//! provider before it is deleted; a deleted group's providers clean up after it once
//! its last instance is gone; a tenant's vCPU quota counts every instance at its
//! provider's size, and a size that cannot be read never lifts it. The worker's ticks
//! run on real time (100 ms); the tests poll for what they observe.

use async_trait::async_trait;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use swell_core::Template;
use swell_core::Timestamp;
use swell_core::{GroupSpec, InstanceId, TenantId};
use swell_providers::{
    CreateRequest, InstanceMetrics, InstanceSize, ObservedState, Provider, ProviderCapacity,
    ProviderError, ProviderInstance,
};
use swell_server::clock::Clock;
use swell_server::controller::{Controller, ControllerOptions, Providers};
use swell_server::service::Service;
use swell_store::{EventFilter, Quota, SqliteStore, Store};

/// A provider that records every call; creates fail while `refuse` is set, and
/// `capacity` reports `room` instances in all when set (less those it runs) and
/// `vcpus` vCPUs in all when set (less what its instances take: `size`'s vCPUs each,
/// 1 without one). `instance_size` reports `size` when set (an OpenStack flavor's), the
/// template's otherwise, and fails while `size_fails` is set.
#[derive(Default)]
struct Fake {
    /// Its provider name (`process` when empty).
    name: &'static str,
    calls: Mutex<Vec<String>>,
    live: Mutex<Vec<InstanceId>>,
    refuse: Mutex<bool>,
    room: Mutex<Option<u32>>,
    vcpus: Mutex<Option<f64>>,
    size: Mutex<Option<InstanceSize>>,
    size_fails: Mutex<bool>,
}

impl Fake {
    fn calls(&self, prefix: &str) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.starts_with(prefix))
            .cloned()
            .collect()
    }

    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }
}

#[async_trait]
impl Provider for Fake {
    fn name(&self) -> &str {
        if self.name.is_empty() {
            "process"
        } else {
            self.name
        }
    }

    async fn create(&self, r: &CreateRequest) -> Result<ProviderInstance, ProviderError> {
        self.record(format!("create {}", r.instance_id));
        if *self.refuse.lock().unwrap() {
            return Err(ProviderError::QuotaExceeded(
                "Quota exceeded for instances".into(),
            ));
        }
        self.live.lock().unwrap().push(r.instance_id.clone());
        Ok(ProviderInstance {
            instance_id: r.instance_id.clone(),
            tenant: r.tenant.to_string(),
            group: r.group.clone(),
            native_id: r.instance_id.to_string(),
            host: "fake".into(),
            address: None,
            state: ObservedState::Running,
        })
    }

    async fn delete(&self, id: &InstanceId, _grace: Duration) -> Result<(), ProviderError> {
        self.record(format!("delete {id}"));
        self.live.lock().unwrap().retain(|i| i != id);
        Ok(())
    }

    async fn pause(&self, _id: &InstanceId) -> Result<(), ProviderError> {
        Ok(())
    }

    async fn resume(&self, _id: &InstanceId) -> Result<(), ProviderError> {
        Ok(())
    }

    async fn list(&self) -> Result<Vec<ProviderInstance>, ProviderError> {
        Ok(self
            .live
            .lock()
            .unwrap()
            .iter()
            .map(|id| ProviderInstance {
                instance_id: id.clone(),
                tenant: "default".into(),
                group: "g".into(),
                native_id: id.to_string(),
                host: "fake".into(),
                address: None,
                state: ObservedState::Running,
            })
            .collect())
    }

    async fn metrics(
        &self,
        _ids: &[InstanceId],
    ) -> Result<Vec<(InstanceId, InstanceMetrics)>, ProviderError> {
        Ok(Vec::new())
    }

    async fn drain(&self, id: &InstanceId, _timeout: Duration) -> Result<(), ProviderError> {
        self.record(format!("drain {id}"));
        Ok(())
    }

    async fn capacity(&self) -> Result<Option<ProviderCapacity>, ProviderError> {
        self.record("capacity".into());
        let used = self.live.lock().unwrap().len() as u32;
        let room = *self.room.lock().unwrap();
        let vcpus = *self.vcpus.lock().unwrap();
        if room.is_none() && vcpus.is_none() {
            return Ok(None);
        }
        let each = self.size.lock().unwrap().map_or(1, |s| s.vcpus);
        Ok(Some(ProviderCapacity {
            instances: room.map(|n| n.saturating_sub(used)),
            vcpus: vcpus.map(|v| (v - f64::from(used * each)).max(0.0)),
            ..ProviderCapacity::default()
        }))
    }

    async fn instance_size(
        &self,
        template: &Template,
    ) -> Result<Option<InstanceSize>, ProviderError> {
        self.record("instance_size".into());
        if *self.size_fails.lock().unwrap() {
            return Err(ProviderError::Unavailable(
                "nova GET /flavors/x answered 503".into(),
            ));
        }
        Ok(self
            .size
            .lock()
            .unwrap()
            .or_else(|| InstanceSize::of_template(template)))
    }

    async fn group_deleted(&self, tenant: &TenantId, group: &str) -> Result<(), ProviderError> {
        self.record(format!("group_deleted {tenant}/{group}"));
        Ok(())
    }
}

/// A clock that moves only when the test says so.
struct ManualClock(Mutex<Timestamp>);

impl ManualClock {
    fn advance(&self, d: Duration) {
        let mut t = self.0.lock().unwrap();
        *t = t.add(d);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap()
    }
}

/// Polls `check` every 20 ms for up to 30 s.
async fn until(what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match check() {
            Ok(()) => return,
            Err(last) => assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}; last: {last}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn status(controller: &Controller) -> String {
    controller
        .worker_statuses()
        .into_iter()
        .map(|(_, s)| s)
        .next()
        .unwrap_or_default()
}

async fn setup(fake: Arc<Fake>, desired: u32) -> (Arc<Service>, Arc<Controller>, Arc<ManualClock>) {
    setup_with(vec![fake], desired).await
}

/// The group `g` on the fakes: the first is its provider, the others its fallbacks.
async fn setup_with(
    fakes: Vec<Arc<Fake>>,
    desired: u32,
) -> (Arc<Service>, Arc<Controller>, Arc<ManualClock>) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().await.unwrap());
    let manual = Arc::new(ManualClock(Mutex::new(Timestamp::from_secs(1_800_000_000))));
    let clock: Arc<dyn Clock> = manual.clone();
    let mut providers = Providers::new();
    let names: Vec<String> = fakes.iter().map(|f| f.name().to_string()).collect();
    for fake in fakes {
        providers.insert(fake.name().to_string(), fake as Arc<dyn Provider>);
    }
    let controller = Controller::new(
        store.clone(),
        providers,
        clock.clone(),
        ControllerOptions::default(),
    );
    controller.start().await.unwrap();
    let service = Arc::new(fast_service(store, controller.clone(), clock));
    grant_default(&service, &names).await;
    let spec: GroupSpec = serde_json::from_value(serde_json::json!({
        "name": "g",
        "provider": names[0],
        "fallback_providers": names[1..],
        "template": {"command": ["sleep", "1000"], "image": "app:latest"},
        "min": 0, "max": 4, "desired_capacity": desired,
        "evaluation_interval": "100ms", "metrics_interval": "100ms", "drain_timeout": "0s",
        "policies": [{"type": "threshold", "scale_out_above": 1000}]
    }))
    .unwrap();
    service
        .create_group(&TenantId::default_tenant(), spec)
        .await
        .unwrap();
    (service, controller, manual)
}

async fn messages(service: &Service, kind: &str) -> Vec<String> {
    service
        .list_events(&TenantId::default_tenant(), "g", &EventFilter::default())
        .await
        .unwrap()
        .iter()
        .filter(|e| e.event.kind.as_str() == kind)
        .map(|e| e.event.message.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_creates_back_off_instead_of_retrying_every_tick() {
    let fake = Arc::new(Fake::default());
    *fake.refuse.lock().unwrap() = true;
    let (service, controller, clock) = setup(fake.clone(), 1).await;
    let creates = || fake.calls("create").len();
    until("the first failed create", || match creates() {
        1 => Ok(()),
        n => Err(format!("{n} creates")),
    })
    .await;
    // Ticks go on, but the clock has not moved: no second attempt, and the worker
    // says when the next one is.
    until("the worker to wait 5 s", || {
        let s = status(&controller);
        if s.starts_with("next create in 5s (1 failed") {
            Ok(())
        } else {
            Err(s)
        }
    })
    .await;
    assert_eq!(creates(), 1);
    clock.advance(Duration::from_secs(5));
    until("the second attempt", || match creates() {
        2 => Ok(()),
        n => Err(format!("{n} creates")),
    })
    .await;
    // The provider's refusal is counted once the worker has taken it (the create call
    // is seen before that): only then does the clock move.
    until("the worker to wait 10 s", || {
        let s = status(&controller);
        if s.starts_with("next create in 10s (2 failed") {
            Ok(())
        } else {
            Err(s)
        }
    })
    .await;
    clock.advance(Duration::from_secs(4));
    until("the worker to wait 6 s more", || {
        let s = status(&controller);
        if s.starts_with("next create in 6s (2 failed") {
            Ok(())
        } else {
            Err(s)
        }
    })
    .await;
    assert_eq!(creates(), 2, "retried before its 10 s backoff");
    let failed = messages(&service, "instance_failed").await;
    assert_eq!(failed.len(), 2);
    assert!(
        failed[0].contains("quota exceeded at the provider")
            && failed[0].contains("next attempt in 5s (1 failed in a row)"),
        "{failed:?}"
    );
    assert!(failed[1].contains("next attempt in 10s"), "{failed:?}");

    // Once the provider accepts, the attempt after the backoff succeeds.
    *fake.refuse.lock().unwrap() = false;
    clock.advance(Duration::from_secs(6));
    until("a running instance", || match creates() {
        3 => Ok(()),
        n => Err(format!("{n} creates")),
    })
    .await;
    let tenant = TenantId::default_tenant();
    let mut live = Vec::new();
    for _ in 0..100 {
        live = service.list_instances(&tenant, "g", false).await.unwrap();
        if live.len() == 1 && live[0].status == swell_core::InstanceStatus::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(live.len(), 1, "{live:?}");
    controller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_without_room_caps_the_scale_out_once() {
    let fake = Arc::new(Fake::default());
    *fake.room.lock().unwrap() = Some(2);
    let (service, controller, _clock) = setup(fake.clone(), 4).await;
    // Several reconciles, each asking the provider for its room.
    until("several reconciles", || {
        match fake.calls("capacity").len() {
            n if n >= 6 => Ok(()),
            n => Err(format!("{n} capacity calls")),
        }
    })
    .await;
    let capped = messages(&service, "provider_capped").await;
    assert!(!capped.is_empty(), "no provider_capped event");
    assert!(capped[0].contains("capped at 2"), "{capped:?}");
    assert_eq!(
        capped.len(),
        1,
        "one event per cut, not per pass: {capped:?}"
    );
    assert_eq!(fake.calls("create").len(), 2);
    controller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_divides_by_the_providers_instance_size_not_the_templates() {
    // 8 vCPUs of room; the template says 1 vCPU (its default) but the provider's
    // instances take 4 (a flavor): 2 fit, not the 4 asked for.
    let fake = Arc::new(Fake::default());
    *fake.vcpus.lock().unwrap() = Some(8.0);
    *fake.size.lock().unwrap() = Some(InstanceSize {
        vcpus: 4,
        memory_mb: 8192,
    });
    let (service, controller, _clock) = setup(fake.clone(), 4).await;
    until("several reconciles", || {
        match fake.calls("capacity").len() {
            n if n >= 6 => Ok(()),
            n => Err(format!("{n} capacity calls")),
        }
    })
    .await;
    assert!(!fake.calls("instance_size").is_empty());
    assert_eq!(fake.calls("create").len(), 2);
    the_one_event(
        &service,
        "provider_capped",
        &[
            "capped at 2",
            "left: unlimited instances, 8.0 vcpus, unlimited MiB",
            "one instance needs 4 vcpus, 8192 MiB",
        ],
    )
    .await;
    controller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_size_error_does_not_block_the_scale_out() {
    // The size cannot be read: the vCPU room is not divided by a guess, and the
    // scale-out goes on (the creates would report a real problem).
    let fake = Arc::new(Fake::default());
    *fake.vcpus.lock().unwrap() = Some(2.0);
    *fake.size_fails.lock().unwrap() = true;
    let (service, controller, _clock) = setup(fake.clone(), 4).await;
    until_creates(&fake, 4).await;
    assert!(!fake.calls("instance_size").is_empty());
    let capped = messages(&service, "provider_capped").await;
    assert!(capped.is_empty(), "{capped:?}");
    controller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_group_is_cleaned_up_at_its_providers_after_its_last_instance() {
    let fake = Arc::new(Fake {
        name: "docker",
        ..Fake::default()
    });
    let fallback = Arc::new(Fake::default());
    let (service, controller, _clock) = setup_with(vec![fake.clone(), fallback.clone()], 2).await;
    until_creates(&fake, 2).await;
    assert!(fake.calls("group_deleted").is_empty());
    let tenant = TenantId::default_tenant();
    service.delete_group(&tenant, "g").await.unwrap();
    until("the group to go", || {
        match (
            fake.calls("group_deleted").len(),
            fallback.calls("group_deleted").len(),
        ) {
            (1, 1) => Ok(()),
            n => Err(format!("{n:?} group_deleted calls")),
        }
    })
    .await;
    // Only after both instances were deleted: nothing of the group is in use.
    let calls = fake.calls("");
    let cleanup = calls
        .iter()
        .position(|c| c == "group_deleted default/g")
        .unwrap();
    let deletes: Vec<usize> = calls
        .iter()
        .enumerate()
        .filter(|(_, c)| c.starts_with("delete "))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(deletes.len(), 2, "{calls:?}");
    assert!(deletes.iter().all(|d| *d < cleanup), "{calls:?}");
    for _ in 0..100 {
        if service.get_group(&tenant, "g").await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(service.get_group(&tenant, "g").await.is_err());
    controller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_instance_is_drained_at_the_provider_before_its_delete() {
    let fake = Arc::new(Fake::default());
    let (service, controller, _clock) = setup(fake.clone(), 1).await;
    until_creates(&fake, 1).await;
    service
        .set_desired_capacity(&TenantId::default_tenant(), "g", 0)
        .await
        .unwrap();
    until("the delete", || {
        if fake.calls("delete").is_empty() {
            Err(format!("{:?}", fake.calls("")))
        } else {
            Ok(())
        }
    })
    .await;
    let calls: Vec<String> = fake
        .calls("")
        .into_iter()
        .filter(|c| c.starts_with("drain") || c.starts_with("delete"))
        .collect();
    assert!(
        calls[0].starts_with("drain") && calls[1].starts_with("delete"),
        "{calls:?}"
    );
    controller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_keeps_failing_yields_to_the_fallback_and_scale_in_takes_the_fallback_first()
 {
    let primary = Arc::new(Fake::default());
    *primary.refuse.lock().unwrap() = true;
    let fallback = Arc::new(Fake {
        name: "docker",
        ..Fake::default()
    });
    let (service, controller, clock) = setup_with(vec![primary.clone(), fallback.clone()], 1).await;
    let tenant = TenantId::default_tenant();
    // Two failures: the primary is waited for, the fallback not used yet.
    for (n, wait) in [(1, 5), (2, 10)] {
        until("a failed create on the primary", || {
            match primary.calls("create").len() {
                x if x == n => Ok(()),
                x => Err(format!("{x} creates")),
            }
        })
        .await;
        until("the worker to wait for the primary", || {
            let s = status(&controller);
            if s.starts_with(&format!("next create in {wait}s ({n} failed")) {
                Ok(())
            } else {
                Err(s)
            }
        })
        .await;
        assert!(fallback.calls("create").is_empty());
        clock.advance(Duration::from_secs(wait));
    }
    // The third failure in a row: the primary yields, the fallback creates.
    until("a create on the fallback", || {
        match fallback.calls("create").len() {
            1 => Ok(()),
            x => Err(format!(
                "{x} creates; primary {:?}",
                primary.calls("create")
            )),
        }
    })
    .await;
    assert_eq!(primary.calls("create").len(), 3);

    // The primary recovers: once its backoff has passed it is first again.
    *primary.refuse.lock().unwrap() = false;
    clock.advance(Duration::from_secs(20));
    service.set_desired_capacity(&tenant, "g", 2).await.unwrap();
    until("a create on the recovered primary", || {
        match primary.live.lock().unwrap().len() {
            1 => Ok(()),
            x => Err(format!("{x} live on the primary")),
        }
    })
    .await;
    assert_eq!(fallback.calls("create").len(), 1);

    // Scale-in takes the least-preferred provider's instance first, although it is
    // the older one.
    service.set_desired_capacity(&tenant, "g", 1).await.unwrap();
    until("the fallback's instance deleted", || {
        if fallback.calls("delete").is_empty() {
            Err(format!("{:?}", fallback.calls("")))
        } else {
            Ok(())
        }
    })
    .await;
    // (The primary's deletes are the clean-ups of its failed creates.)
    assert_eq!(
        primary.live.lock().unwrap().len(),
        1,
        "{:?}",
        primary.calls("")
    );
    assert!(fallback.live.lock().unwrap().is_empty());
    controller.shutdown().await;
}

/// A controller on `fakes` (no group yet) whose tenants all have `quota`, the
/// service-wide default.
async fn setup_quota(fakes: Vec<Arc<Fake>>, quota: Quota) -> (Arc<Service>, Arc<Controller>) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().await.unwrap());
    store.set_default_quota(&quota).await.unwrap();
    let clock: Arc<dyn Clock> =
        Arc::new(ManualClock(Mutex::new(Timestamp::from_secs(1_800_000_000))));
    let mut providers = Providers::new();
    let names: Vec<String> = fakes.iter().map(|f| f.name().to_string()).collect();
    for fake in fakes {
        providers.insert(fake.name().to_string(), fake as Arc<dyn Provider>);
    }
    let controller = Controller::new(
        store.clone(),
        providers,
        clock.clone(),
        ControllerOptions::default(),
    );
    controller.start().await.unwrap();
    let service = Arc::new(fast_service(store, controller.clone(), clock));
    grant_default(&service, &names).await;
    (service, controller)
}

/// A service whose groups may tick every 100 ms (below the server's 1 s default floor).
fn fast_service(
    store: Arc<dyn Store>,
    controller: Arc<Controller>,
    clock: Arc<dyn Clock>,
) -> Service {
    Service::new(store, controller, clock).with_min_interval(Duration::from_millis(100))
}

/// Creates the `default` tenant granted the fakes' providers and the groups' image: a
/// tenant is granted nothing implicitly (issue 15).
async fn grant_default(service: &Service, providers: &[String]) {
    service
        .create_tenant(swell_api::CreateTenant {
            name: TenantId::default_tenant().to_string(),
            providers: Some(providers.to_vec()),
            images: Some(vec!["app:latest".into()]),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// Creates the group `name` on `provider`, its template sized 0 vCPUs and 0 MiB (as
/// an OpenStack template leaves them: the flavor says the size). The fakes stand in
/// for `process` and `openstack` (a `docker` template must have non-zero limits).
async fn create_unsized_group(service: &Service, name: &str, provider: &str, desired: u32) {
    let mut template = serde_json::json!(
        {"command": ["sleep", "1000"], "image": "app:latest", "vcpus": 0, "memory_mb": 0});
    if provider == "openstack" {
        template["openstack"] = serde_json::json!({"flavor": "m1.tiny"});
    }
    let spec: GroupSpec = serde_json::from_value(serde_json::json!({
        "name": name,
        "provider": provider,
        "template": template,
        "min": 0, "max": 4, "desired_capacity": desired,
        "evaluation_interval": "100ms", "metrics_interval": "100ms", "drain_timeout": "0s",
        "policies": [{"type": "threshold", "scale_out_above": 1000}]
    }))
    .unwrap();
    service
        .create_group(&TenantId::default_tenant(), spec)
        .await
        .unwrap();
}

/// Waits for `creates` creates on `fake`, then for six more sizing passes, and checks
/// the count held: the cap stops the group there, not just late.
async fn creates_settle_at(fake: &Fake, creates: usize) {
    until_creates(fake, creates).await;
    let passes = fake.calls("instance_size").len();
    until("more passes", || match fake.calls("instance_size").len() {
        n if n >= passes + 6 => Ok(()),
        n => Err(format!("{n} instance_size calls")),
    })
    .await;
    assert_eq!(fake.calls("create").len(), creates);
}

/// The group's one event of `kind`, which must say each of `parts`.
async fn the_one_event(service: &Service, kind: &str, parts: &[&str]) {
    let found = messages(service, kind).await;
    assert_eq!(found.len(), 1, "{found:?}");
    for part in parts {
        assert!(found[0].contains(part), "{part:?} in {found:?}");
    }
}

/// Waits until `fake` has been asked for exactly `n` creates.
async fn until_creates(fake: &Fake, n: usize) {
    until("the creates", || match fake.calls("create").len() {
        x if x == n => Ok(()),
        x => Err(format!("{x} creates")),
    })
    .await;
}

fn sized(name: &'static str, vcpus: u32) -> Arc<Fake> {
    let fake = Arc::new(Fake {
        name,
        ..Fake::default()
    });
    *fake.size.lock().unwrap() = Some(InstanceSize {
        vcpus,
        memory_mb: 2048 * u64::from(vcpus),
    });
    fake
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_vcpu_quota_counts_the_providers_instance_size_not_the_templates() {
    // 10 vCPUs of quota, 4 per instance on the provider (a flavor): floor(10 / 4) = 2
    // of the 4 asked for. The template's 0 vCPUs would not cap at all.
    let fake = sized("openstack", 4);
    let quota = Quota {
        max_vcpus: Some(10),
        ..Quota::default()
    };
    let (service, controller) = setup_quota(vec![fake.clone()], quota).await;
    create_unsized_group(&service, "g", "openstack", 4).await;
    creates_settle_at(&fake, 2).await;
    the_one_event(
        &service,
        "quota_capped",
        &[
            "capped at 2",
            "in use: 0 instances, 0 vcpus",
            "one instance needs 4 vcpus",
        ],
    )
    .await;
    controller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_groups_instances_count_at_their_own_providers_size() {
    // `a` runs one instance of 4 vCPUs on `process`; `g` asks for four of 2 vCPUs on
    // `openstack`. Quota 9: 5 left, floor(5 / 2) = 2. (Counting `a` by its template, 0,
    // would allow 4; at `g`'s size, 3.)
    let big = sized("process", 4);
    let small = sized("openstack", 2);
    let quota = Quota {
        max_vcpus: Some(9),
        ..Quota::default()
    };
    let (service, controller) = setup_quota(vec![big.clone(), small.clone()], quota).await;
    create_unsized_group(&service, "a", "process", 1).await;
    let tenant = TenantId::default_tenant();
    until("`a` running", || match big.live.lock().unwrap().len() {
        1 => Ok(()),
        n => Err(format!("{n} live")),
    })
    .await;
    for _ in 0..200 {
        let live = service.list_instances(&tenant, "a", false).await.unwrap();
        if live.len() == 1 && live[0].status == swell_core::InstanceStatus::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    create_unsized_group(&service, "g", "openstack", 4).await;
    creates_settle_at(&small, 2).await;
    assert_eq!(big.calls("create").len(), 1);
    the_one_event(
        &service,
        "quota_capped",
        &[
            "capped at 2",
            "in use: 1 instances, 4 vcpus",
            "one instance needs 2 vcpus",
        ],
    )
    .await;
    controller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_size_never_lifts_the_tenant_quota() {
    // The size cannot be read and the template says 0: nothing is created under a
    // vCPU quota (counting 0 would lift it), and the event says why. Once the size
    // can be read, the scale-out goes on up to the quota.
    let fake = sized("openstack", 4);
    *fake.size_fails.lock().unwrap() = true;
    let quota = Quota {
        max_vcpus: Some(8),
        ..Quota::default()
    };
    let (service, controller) = setup_quota(vec![fake.clone()], quota).await;
    create_unsized_group(&service, "g", "openstack", 4).await;
    until("several passes", || {
        match fake.calls("instance_size").len() {
            n if n >= 6 => Ok(()),
            n => Err(format!("{n} instance_size calls")),
        }
    })
    .await;
    assert!(fake.calls("create").is_empty());
    the_one_event(
        &service,
        "quota_capped",
        &[
            "capped at 0",
            "one instance needs unknown vcpus",
            "cannot be read",
        ],
    )
    .await;
    *fake.size_fails.lock().unwrap() = false;
    creates_settle_at(&fake, 2).await;
    controller.shutdown().await;
}
