//! A group whose load balancer cannot bind (its address held by another load balancer
//! of this server) does not bring anything down: the worker runs without it, says why
//! in its status and in a `load_balancer_error` event, and binds as soon as the address
//! is free. Real SQLite, the real process provider, real sockets.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use swell_core::{EventKind, GroupSpec, TenantId};
use swell_lb::{LbConfig, LoadBalancer};
use swell_providers::Provider;
use swell_providers::process::{ProcessConfig, ProcessProvider};
use swell_server::clock::{Clock, TokioClock};
use swell_server::controller::{Controller, ControllerOptions, Providers};
use swell_server::service::Service;
use swell_store::{EventFilter, SqliteStore, Store};

async fn start(dir: &Path) -> (Arc<Service>, Arc<Controller>, Arc<dyn Store>) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("swell.db")).await.unwrap());
    let process = ProcessProvider::new(ProcessConfig::new(
        dir.join("instances"),
        format!("lb-bind-test-{}", dir.display()),
    ));
    let mut providers = Providers::new();
    providers.insert("process".into(), Arc::new(process) as Arc<dyn Provider>);
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let controller = Controller::new(
        store.clone(),
        providers,
        clock.clone(),
        ControllerOptions::default(),
    );
    controller.start().await.unwrap();
    let service = Arc::new(Service::new(store.clone(), controller.clone(), clock));
    // A tenant is granted nothing implicitly: `default` gets what the bootstrap grants it
    // (`process`, loopback ports). A restart over the same store finds it there.
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
                listen: Some(vec!["127.0.0.1:1024-65535".into()]),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    (service, controller, store)
}

fn group(name: &str, listen: SocketAddr) -> GroupSpec {
    serde_json::from_value(serde_json::json!({
        "name": name,
        "template": {"command": ["sleep", "600"]},
        "min": 0, "max": 1, "desired_capacity": 0,
        "evaluation_interval": "1s", "metrics_interval": "1s",
        "load_balancer": {"listen": listen.to_string(), "workers": 2}
    }))
    .unwrap()
}

/// Polls `check` every 50 ms for up to 30 s.
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
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_balancer_whose_address_is_held_is_reported_and_bound_once_free() {
    let dir = tempfile::tempdir().unwrap();
    let tenant = TenantId::default_tenant();
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();

    // The group is stored with its address while it is free.
    let (service, controller, _) = start(dir.path()).await;
    service
        .create_group(&tenant, group("web", free))
        .await
        .expect("create");
    assert_eq!(controller.load_balancer_addr(&tenant, "web"), Some(free));
    // Another group on the same address is refused before anything is stored.
    let err = service
        .create_group(&tenant, group("other", free))
        .await
        .expect_err("the address is taken");
    assert!(err.to_string().contains("already in use"), "{err}");
    assert!(service.get_group(&tenant, "other").await.is_err());
    controller.shutdown().await;
    drop((service, controller));

    // Something else of this process takes the address while the server is down.
    let holder = until("the old load balancer to let go", async || {
        let config = LbConfig {
            workers: 2,
            ..LbConfig::default()
        };
        LoadBalancer::bind_with(free, config)
            .await
            .map_err(|e| e.to_string())
    })
    .await;

    // The server starts all the same; the group runs without its load balancer and
    // says why.
    let (service, controller, store) = start(dir.path()).await;
    assert_eq!(controller.load_balancer_addr(&tenant, "web"), None);
    let event = until("a load_balancer_error event", async || {
        let events = store
            .list_events(&tenant, "web", &EventFilter::default())
            .await
            .map_err(|e| e.to_string())?;
        events
            .into_iter()
            .find(|e| e.event.kind == EventKind::LoadBalancerError)
            .ok_or_else(|| "none yet".to_string())
    })
    .await;
    assert!(
        event.event.message.contains(&format!(
            "address {free} is already in use by another load balancer"
        )),
        "{}",
        event.event.message
    );
    let status = until("the status", async || {
        let statuses = controller.worker_statuses();
        let (_, status) = statuses
            .iter()
            .find(|(k, _)| k.ends_with("/web"))
            .ok_or("no worker")?;
        status
            .contains("load balancer: address")
            .then(|| status.clone())
            .ok_or_else(|| status.clone())
    })
    .await;
    assert!(status.contains(&free.to_string()), "{status}");

    // Once the address is free, the worker binds it (at its next evaluation).
    holder.shutdown().await;
    until("the group's load balancer", async || {
        match controller.load_balancer_addr(&tenant, "web") {
            Some(addr) if addr == free => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    until("the status to clear", async || {
        let statuses = controller.worker_statuses();
        match statuses.iter().find(|(k, _)| k.ends_with("/web")) {
            Some((_, s)) if !s.contains("load balancer:") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let errors = store
        .list_events(&tenant, "web", &EventFilter::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event.kind == EventKind::LoadBalancerError)
        .count();
    assert_eq!(errors, 1, "one event per problem, not one per retry");
    controller.shutdown().await;
    drop(service);
}
