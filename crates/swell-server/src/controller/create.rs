//! Creating an instance behind a durable intent, in its own task (so a scale-out of
//! many instances takes one create's time), and waiting for it to serve.

use super::*;

/// How long a new instance may take to accept TCP connections before it is failed.
pub(super) const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A failed create in words that say which failure it was, for the event and the
/// instance's status reason.
pub(super) fn describe_create_failure(e: &ProviderError) -> String {
    match e {
        ProviderError::QuotaExceeded(m) => format!("quota exceeded at the provider: {m}"),
        ProviderError::NoCapacity(m) => format!("no valid host (no capacity): {m}"),
        ProviderError::Unavailable(m) => format!("provider unavailable: {m}"),
        ProviderError::Conflict(m) => format!("conflict at the provider: {m}"),
        ProviderError::InvalidTemplate(m) => format!("invalid template: {m}"),
        other => format!("provider error: {other}"),
    }
}

/// How a create task ended, for the worker to record (a failure's event says when the
/// next attempt is, which only the worker knows).
pub(super) struct CreateOutcome {
    /// The instance.
    pub(super) id: InstanceId,
    /// Its provider.
    pub(super) provider: String,
    /// When the create started.
    pub(super) started: Timestamp,
    /// Its `running` record, or why it failed (the provider's leftovers already
    /// cleaned up).
    pub(super) result: Result<InstanceRecord, String>,
}

impl GroupWorker {
    /// Stores the durable intents of the pass's creates (one `pending` record each, which
    /// the next plan counts) and starts each create in its own task: the provider's
    /// create, the wait until it serves, its `running` record. The intents are written
    /// in one transaction (one turn at the store's writer, all or none). Each outcome
    /// comes back as [`Wake::Created`]; a failure is recorded there
    /// ([`GroupWorker::created`]). The creates started, or the store's refusal.
    pub(super) async fn start_creates(
        &mut self,
        group: &GroupRecord,
        creates: Vec<(Arc<dyn Provider>, Lifecycle)>,
    ) -> (u32, Option<StoreError>) {
        let c = self.controller.clone();
        let now = c.clock.now();
        let intents: Vec<InstanceRecord> = creates
            .iter()
            .map(|(provider, lifecycle)| InstanceRecord {
                id: InstanceId(uuid::Uuid::now_v7().to_string()),
                tenant: group.tenant.clone(),
                group: group.spec.name.clone(),
                status: InstanceStatus::Pending,
                lifecycle: *lifecycle,
                created_order: 0,
                provider: provider.name().to_string(),
                host: None,
                address: None,
                native_id: None,
                protected: false,
                status_reason: None,
                created_at: now,
                started_at: None,
                updated_at: now,
            })
            .collect();
        let stored = match c.store.create_instances(&intents).await {
            Ok(stored) => stored,
            Err(e) => {
                self.records_stale = true;
                return (0, Some(e));
            }
        };
        let started = stored.len() as u32;
        for ((provider, lifecycle), record) in creates.into_iter().zip(stored) {
            let id = record.id.clone();
            self.keep_record(record);
            self.spawn_create(group, provider, lifecycle, id);
        }
        (started, None)
    }

    /// Creates instance `id`, whose intent is stored, in its own task.
    fn spawn_create(
        &mut self,
        group: &GroupRecord,
        provider: Arc<dyn Provider>,
        lifecycle: Lifecycle,
        id: InstanceId,
    ) {
        let c = self.controller.clone();
        let now = c.clock.now();
        // Until the worker learns the create finished, no snapshot can judge it.
        self.fresh
            .insert(id.clone(), (provider.name().to_string(), u64::MAX));
        *self
            .creating_on
            .entry(provider.name().to_string())
            .or_insert(0) += 1;
        let request = CreateRequest {
            instance_id: id.clone(),
            tenant: group.tenant.clone(),
            group: group.spec.name.clone(),
            template: group.spec.template.clone(),
        };
        let ready_path = readiness_path(&group.spec).map(str::to_string);
        let serves_traffic = group.spec.load_balancer.is_some();
        self.creating
            .spawn(tracing::Instrument::in_current_span(async move {
                c.stats.provider_call(provider.name(), "create");
                let outcome = match provider.create(&request).await {
                    // Only instances that serve traffic through a load balancer must
                    // accept connections before they count as running.
                    Ok(p) => match p.address.filter(|_| serves_traffic) {
                        Some(addr) => match wait_ready(addr, ready_path.as_deref()).await {
                            Ok(()) => Ok(p),
                            Err(e) => Err(format!("not ready: {e}")),
                        },
                        None => Ok(p),
                    },
                    Err(e) => {
                        c.stats.provider_error(provider.name(), "create");
                        Err(describe_create_failure(&e))
                    }
                };
                let (tenant, name) = (&request.tenant, &request.group);
                let result = match outcome {
                    Ok(p) => {
                        let update = InstanceUpdate {
                            host: Some(p.host.clone()),
                            address: p.address.map(|a| a.to_string()),
                            native_id: Some(p.native_id.clone()),
                            started_at: Some(c.clock.now()),
                            ..InstanceUpdate::default()
                        };
                        let msg = format!(
                            "created instance {id} ({}) at {}",
                            lifecycle.as_str(),
                            p.address
                                .map(|a| a.to_string())
                                .unwrap_or_else(|| "-".into())
                        );
                        let event =
                            c.event(tenant, name, EventKind::InstanceCreated, Some(&id), msg);
                        c.recorder
                            .update(
                                tenant,
                                &id,
                                InstanceStatus::Running,
                                update,
                                c.clock.now(),
                                Some(event),
                            )
                            .await
                            .map_err(|e| format!("recording the created instance: {e}"))
                    }
                    Err(e) => {
                        // Whatever the failed create left (an ERROR server, a floating
                        // IP, a half-made container) goes; a leftover the delete misses
                        // is swept by a later pass.
                        if let Err(err) = provider.delete(&id, STOP_GRACE).await {
                            tracing::warn!(instance = %id, "cleaning up a failed create: {err}");
                        }
                        Err(e)
                    }
                };
                CreateOutcome {
                    id,
                    provider: provider.name().to_string(),
                    started: now,
                    result,
                }
            }));
    }
}

/// The path a new instance must answer before it joins an HTTP load balancer: the
/// health check's, else `/`; `None` for a TCP load balancer.
pub(super) fn readiness_path(spec: &swell_core::GroupSpec) -> Option<&str> {
    let lb = spec.load_balancer.as_ref()?;
    if lb.protocol == LbProtocol::Tcp {
        return None;
    }
    Some(
        lb.health_check
            .as_ref()
            .filter(|h| h.kind == HealthCheckType::Http)
            .map_or("/", |h| h.path.as_str()),
    )
}

/// Waits until the instance at `addr` serves: for an HTTP load balancer, until it
/// answers an HTTP request (any status) on `path`; for TCP, until it accepts a
/// connection. A connect alone is not enough for HTTP: a port published through a
/// proxy (Docker's) accepts connections before the application listens.
pub(super) async fn wait_ready(addr: SocketAddr, http_path: Option<&str>) -> Result<(), String> {
    let attempt = async {
        loop {
            if let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await {
                match http_path {
                    None => return,
                    Some(path) if answers_http(&mut stream, addr, path).await => return,
                    Some(_) => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(READY_TIMEOUT, attempt)
        .await
        .map_err(|_| format!("did not serve on {addr} within {READY_TIMEOUT:?}"))
}

/// Whether a `GET path` on `stream` gets the start of an HTTP response within a second.
pub(super) async fn answers_http(
    stream: &mut tokio::net::TcpStream,
    addr: SocketAddr,
    path: &str,
) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let exchange = async {
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 5];
        stream.read_exact(&mut head).await.ok()?;
        Some(&head == b"HTTP/")
    };
    tokio::time::timeout(Duration::from_secs(1), exchange)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}
