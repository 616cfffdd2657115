//! One Docker engine: a lazily built, version-negotiated client, and whether the engine
//! answers.

use super::{Endpoint, EngineConfig};
use crate::ProviderInstance;
use bollard::Docker;
use bollard::errors::Error as BollardError;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;
use swell_core::placement::Resources;

/// Why a call to an engine failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CallError {
    /// The engine did not answer (connection refused, socket gone, timeout, TLS, …).
    Down(String),
    /// The engine answered with an error status.
    Api {
        /// The HTTP status.
        status: u16,
        /// The engine's message.
        message: String,
    },
}

impl CallError {
    /// Whether this is the engine's `404`.
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, CallError::Api { status: 404, .. })
    }

    /// Whether this is the engine's `409` (a name conflict, a state that forbids it).
    pub(crate) fn is_conflict(&self) -> bool {
        matches!(self, CallError::Api { status: 409, .. })
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Down(why) => write!(f, "engine does not answer: {why}"),
            CallError::Api { status, message } => write!(f, "engine answered {status}: {message}"),
        }
    }
}

/// What the provider remembers about an engine between calls.
#[derive(Debug, Default)]
struct EngineState {
    /// Whether the last call reached it (true until a call fails).
    up: bool,
    /// Why it is down, when it is.
    down_reason: Option<String>,
    /// Our containers as the last successful listing saw them, by instance id: what
    /// `list` reports (as exited) while the engine is down.
    known: HashMap<String, ProviderInstance>,
    /// Container names reported as exited while the engine was down, or deleted while
    /// it was: removed as soon as it answers again, so that what came back cannot run
    /// beside its replacement.
    condemned: HashSet<String>,
    /// Physical capacity, from the config or the engine's `info`.
    capacity: Option<Resources>,
}

/// One engine of a docker provider.
#[derive(Debug)]
pub(crate) struct Engine {
    pub(crate) config: EngineConfig,
    endpoint: Endpoint,
    timeout: Duration,
    /// The negotiated client; dropped when the engine stops answering, so that the
    /// next call connects (and negotiates) afresh.
    client: tokio::sync::Mutex<Option<Docker>>,
    state: Mutex<EngineState>,
}

impl Engine {
    pub(crate) fn new(config: EngineConfig, endpoint: Endpoint, timeout: Duration) -> Self {
        let capacity = match (config.cpu_capacity, config.memory_mb_capacity) {
            (Some(vcpus), Some(memory_mb)) => Some(Resources {
                vcpus,
                memory_mb: memory_mb as f64,
            }),
            _ => None,
        };
        Engine {
            config,
            endpoint,
            timeout,
            client: tokio::sync::Mutex::new(None),
            state: Mutex::new(EngineState {
                up: true,
                capacity,
                ..EngineState::default()
            }),
        }
    }

    /// The engine's name (the instances' `host`).
    pub(crate) fn name(&self) -> &str {
        &self.config.name
    }

    /// Why the engine is down, if it is.
    pub(crate) fn down_reason(&self) -> Option<String> {
        lock(&self.state).down_reason.clone()
    }

    /// A connected client, negotiating the API version on first use.
    async fn client(&self) -> Result<Docker, CallError> {
        let mut slot = self.client.lock().await;
        if let Some(docker) = slot.as_ref() {
            return Ok(docker.clone());
        }
        let secs = self.timeout.as_secs().max(1);
        let version = bollard::API_DEFAULT_VERSION;
        let built = match &self.endpoint {
            Endpoint::Unix(path) => Docker::connect_with_unix(path, secs, version),
            Endpoint::Tcp(addr) => match &self.config.tls {
                Some(tls) => {
                    Docker::connect_with_ssl(addr, &tls.key, &tls.cert, &tls.ca, secs, version)
                }
                None => Docker::connect_with_http(addr, secs, version),
            },
        }
        .map_err(|e| CallError::Down(e.to_string()))?;
        let negotiated = tokio::time::timeout(self.timeout, built.negotiate_version())
            .await
            .map_err(|_| CallError::Down(format!("no answer within {:?}", self.timeout)))?
            .map_err(classify)?;
        *slot = Some(negotiated.clone());
        Ok(negotiated)
    }

    /// Runs one call against the engine and records whether it answered. An engine
    /// that answers with an error status is up; one that does not answer is down.
    pub(crate) async fn call<T, F, Fut>(&self, f: F) -> Result<T, CallError>
    where
        F: FnOnce(Docker) -> Fut,
        Fut: Future<Output = Result<T, BollardError>>,
    {
        let result = match self.client().await {
            Ok(docker) => f(docker).await.map_err(classify),
            Err(e) => Err(e),
        };
        match &result {
            Err(CallError::Down(why)) => self.mark_down(why).await,
            _ => self.mark_up(),
        }
        result
    }

    fn mark_up(&self) {
        let mut state = lock(&self.state);
        if !state.up {
            tracing::info!(engine = %self.config.name, "docker engine answers again");
        }
        state.up = true;
        state.down_reason = None;
    }

    async fn mark_down(&self, why: &str) {
        *self.client.lock().await = None;
        let mut state = lock(&self.state);
        if state.up {
            tracing::warn!(engine = %self.config.name, "docker engine marked down: {why}");
        }
        state.up = false;
        state.down_reason = Some(why.to_string());
    }

    /// Records a successful listing of our containers.
    pub(crate) fn remember(&self, instances: &[ProviderInstance]) {
        lock(&self.state).known = instances
            .iter()
            .map(|i| (i.instance_id.as_str().to_string(), i.clone()))
            .collect();
    }

    /// Records one container just created (or found) on the engine.
    pub(crate) fn note(&self, instance: &ProviderInstance) {
        lock(&self.state)
            .known
            .insert(instance.instance_id.as_str().to_string(), instance.clone());
    }

    /// Forgets one removed container.
    pub(crate) fn forget(&self, instance_id: &str) {
        lock(&self.state).known.remove(instance_id);
    }

    /// What the last successful listing saw.
    pub(crate) fn known(&self) -> Vec<ProviderInstance> {
        let mut known: Vec<ProviderInstance> = lock(&self.state).known.values().cloned().collect();
        known.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        known
    }

    /// Marks container names for removal when the engine answers again.
    pub(crate) fn condemn(&self, names: impl IntoIterator<Item = String>) {
        lock(&self.state).condemned.extend(names);
    }

    /// The names marked for removal.
    pub(crate) fn condemned(&self) -> HashSet<String> {
        lock(&self.state).condemned.clone()
    }

    /// Forgets a removed name.
    pub(crate) fn pardon(&self, name: &str) {
        lock(&self.state).condemned.remove(name);
    }

    /// The engine's physical capacity: from the config, else asked once from the engine.
    pub(crate) async fn capacity(&self) -> Result<Resources, CallError> {
        if let Some(capacity) = lock(&self.state).capacity {
            return Ok(capacity);
        }
        let info = self.call(|d| async move { d.info().await }).await?;
        let vcpus = self
            .config
            .cpu_capacity
            .unwrap_or(info.ncpu.unwrap_or(1).max(1) as f64);
        let memory_mb = match self.config.memory_mb_capacity {
            Some(mb) => mb as f64,
            None => (info.mem_total.unwrap_or(0).max(0) as f64) / (1024.0 * 1024.0),
        };
        let capacity = Resources { vcpus, memory_mb };
        lock(&self.state).capacity = Some(capacity);
        Ok(capacity)
    }
}

/// Sorts a bollard error into "answered" and "did not answer".
fn classify(error: BollardError) -> CallError {
    match error {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => CallError::Api {
            status: status_code,
            message,
        },
        // It answered, with something this client cannot read: not a reason to call
        // the engine down.
        e @ (BollardError::JsonDataError { .. } | BollardError::JsonSerdeError { .. }) => {
            CallError::Api {
                status: 0,
                message: e.to_string(),
            }
        }
        other => CallError::Down(other.to_string()),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
