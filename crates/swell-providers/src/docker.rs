//! The docker provider: every instance is a container on one of several Docker
//! engines (hosts), driven through the Engine API.
//!
//! **Containers.** An instance is the container `swell-<instance id>`, created from the
//! template's `image` (never pulled: the image must already be on the engine — see
//! `docs/providers.md`), with the template's `command` as its `Cmd` (after the image's
//! entrypoint; none keeps the image's default), its `env` plus `PORT` (the port the
//! app must listen on, [`DockerConfig::container_port`], 8080 by default),
//! `SWELL_INSTANCE_ID`, `SWELL_GROUP` and `SWELL_TENANT`; `{port}` in the command and the
//! env values becomes that port. Its CPU limit is the template's `vcpus` (`NanoCpus`),
//! its memory limit `memory_mb` (without swap); both are required. The port is
//! published on the engine's [`EngineConfig::publish_address`] (127.0.0.1 for the local
//! engine, the engine's own address for a remote one; never the wildcard address) at a
//! port the engine picks; the instance's address is that address and port, read back
//! from the engine, so the group's load balancer on the host reaches it.
//!
//! **Hardening.** Every container drops every capability (`CapDrop: ALL`), cannot gain
//! privileges (`no-new-privileges`), may run [`DockerConfig::pids_limit`] processes,
//! has a read-only root filesystem with a tmpfs on `/tmp` (unless the template's
//! `docker.writable_root`), and runs as the image's own `USER` (or the template's
//! `docker.user`, a numeric non-zero id). An image that declares no user runs as root
//! inside the container, limited by all of the above; that is logged.
//!
//! **Labels.** Every container carries `swell.owner`, `swell.instance`, `swell.group`,
//! `swell.tenant`, `swell.vcpus` and `swell.memory_mb`. [`list`](crate::Provider::list)
//! finds this owner's containers by label on every engine, so a restarted server adopts
//! them (or the controller removes them as orphans) exactly as with the process
//! provider. Creating an instance whose container exists already (the same name on
//! any engine) returns that container, started if it was not, instead of a second one.
//!
//! **Several engines.** Each new container goes to the least-loaded engine that answers
//! and has room under the over-commit ratios ([`swell_core::placement::choose_host`]):
//! an engine's allocation is the sum of the `swell.vcpus` and `swell.memory_mb` labels
//! of the Swell containers running on it (any owner's), its measured load the CPU this
//! provider last read from its containers. An engine that stops answering is marked
//! down: placement skips it, and `list` reports the containers last seen on it as
//! exited (after one retry), so the controller replaces them elsewhere. Those
//! containers are *condemned*: when the engine answers again they are removed, so that
//! nothing the controller already replaced comes back beside its replacement. Every call tries a down engine
//! again, so it is used again as soon as it answers. When no engine answers at all,
//! `list` fails instead (there is nowhere to replace anything).
//!
//! **Tenant networks.** Each tenant's containers join the bridge network
//! `swell-<tenant>` on their engine, created on demand (labelled `swell.tenant`,
//! `swell.network=tenant`) and removed once its last container is deleted. Docker
//! isolates bridge networks from each other (its `DOCKER-ISOLATION` iptables chains),
//! so containers of different tenants cannot reach each other; published ports stay
//! reachable from the host.
//!
//! **Metrics** come from the engine's stats endpoint (`stream=false`, which carries
//! the engine's previous sample too): CPU in percent of the container's CPU limit
//! (100 % = the whole limit busy), memory in use less inactive page cache, in MiB.
//!
//! ```no_run
//! use std::time::Duration;
//! use swell_core::{InstanceId, Template, TenantId};
//! use swell_providers::docker::{DockerConfig, DockerProvider, EngineConfig};
//! use swell_providers::{CreateRequest, Provider};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let provider = DockerProvider::new(DockerConfig::new(
//!     "server-1f3a",
//!     vec![EngineConfig::local("local")],
//! ))?;
//! let web = provider
//!     .create(&CreateRequest {
//!         instance_id: InstanceId("web-0001".into()),
//!         tenant: TenantId::default_tenant(),
//!         group: "web".into(),
//!         template: Template {
//!             image: Some("swell-demo-app:latest".into()),
//!             ..Template::default()
//!         },
//!     })
//!     .await?;
//! println!("container {} on {} at {:?}", web.native_id, web.host, web.address);
//! provider.delete(&web.instance_id, Duration::from_secs(10)).await?;
//! # Ok(())
//! # }
//! ```

mod engine;
pub(crate) mod stats;

use crate::{
    CreateRequest, InstanceMetrics, ObservedState, Provider, ProviderError, ProviderInstance,
};
use async_trait::async_trait;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummary,
    ContainerSummaryStateEnum, HostConfig, NetworkCreateRequest, PortBinding,
};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, InspectNetworkOptions, ListContainersOptions,
    ListNetworksOptions, RemoveContainerOptions, StatsOptions, StopContainerOptions,
};
use engine::{CallError, Engine};
use futures_util::StreamExt;
use futures_util::future::join_all;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use swell_core::InstanceId;
use swell_core::group::DOCKER_MIN_MEMORY_MB;
use swell_core::placement::{self, HostLoad, Overcommit, PlacementPrefs, Resources};

/// Label carrying the owning server's tag.
pub const LABEL_OWNER: &str = "swell.owner";
/// Label carrying the instance's id.
pub const LABEL_INSTANCE: &str = "swell.instance";
/// Label carrying the instance's group name.
pub const LABEL_GROUP: &str = "swell.group";
/// Label carrying the instance's tenant (also on tenant networks).
pub const LABEL_TENANT: &str = "swell.tenant";
/// Label carrying the vCPUs the container reserves (its CPU limit).
pub const LABEL_VCPUS: &str = "swell.vcpus";
/// Label carrying the MiB the container reserves (its memory limit).
pub const LABEL_MEMORY_MB: &str = "swell.memory_mb";
/// Label marking a network as a Swell tenant network (`swell.network=tenant`).
pub const LABEL_NETWORK: &str = "swell.network";
/// Prefix of container and network names.
pub const NAME_PREFIX: &str = "swell-";
/// The Unix socket of a local engine.
pub const DEFAULT_SOCKET: &str = "unix:///var/run/docker.sock";

/// How long `list` waits before asking an engine that did not answer once more.
const RETRY_DELAY: Duration = Duration::from_millis(250);
/// How long a container may take to stop beyond its grace before the call gives up.
const STOP_SLACK: Duration = Duration::from_secs(30);

/// Client certificates for an engine reached over TCP with TLS (the files
/// `docker --tlsverify` uses: `ca.pem`, `cert.pem`, `key.pem`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// The CA certificate that signed the engine's certificate (PEM).
    pub ca: PathBuf,
    /// This client's certificate (PEM).
    pub cert: PathBuf,
    /// This client's private key (PEM).
    pub key: PathBuf,
}

/// One Docker engine: one host.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// The engine's name, unique within the provider: the instances' `host`.
    pub name: String,
    /// Where the engine listens: `unix:///var/run/docker.sock` (or a bare socket path),
    /// or `tcp://host:2376`.
    pub endpoint: String,
    /// Client certificates for a `tcp://` endpoint, which needs them: a plain TCP
    /// engine is refused (whoever reaches its port is root on its host).
    pub tls: Option<TlsConfig>,
    /// Physical vCPUs; `None` asks the engine (`docker info`'s CPUs).
    pub cpu_capacity: Option<f64>,
    /// Physical memory in MiB; `None` asks the engine (`docker info`'s total memory).
    pub memory_mb_capacity: Option<u64>,
    /// The address on the engine's host that container ports are published on, and
    /// that the instances' addresses use: `127.0.0.1` for a local engine, an address
    /// the load balancer can reach for a remote one (by default the one Swell reaches
    /// the engine at, see [`EngineConfig::for_endpoint`]). Never the wildcard address:
    /// a port published there is open on every interface of the engine's host.
    pub publish_address: IpAddr,
}

impl EngineConfig {
    /// The local engine at [`DEFAULT_SOCKET`], its capacity read from the engine.
    pub fn local(name: impl Into<String>) -> Self {
        EngineConfig {
            name: name.into(),
            endpoint: DEFAULT_SOCKET.into(),
            tls: None,
            cpu_capacity: None,
            memory_mb_capacity: None,
            publish_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }

    /// The engine `name` at `endpoint`, as `swell serve --docker-engine NAME=ENDPOINT`
    /// gives it: a Unix socket is the local engine (ports published on 127.0.0.1); a
    /// `tcp://host:port` engine publishes on the address Swell reaches it at (`host`,
    /// resolved now when it is a name), so that its containers' ports are open on that
    /// one address of its host and the load balancer connects there. A `tcp://` engine
    /// still needs [`EngineConfig::tls`].
    pub fn for_endpoint(
        name: impl Into<String>,
        endpoint: &str,
    ) -> Result<EngineConfig, DockerConfigError> {
        let name = name.into();
        let err = |rule: String| DockerConfigError {
            field: format!("engine {name}: endpoint"),
            rule,
        };
        let mut engine = EngineConfig::local(name.clone());
        engine.endpoint = endpoint.to_string();
        match parse_endpoint(endpoint) {
            None => Err(err(
                "must be unix:///path/to/docker.sock or tcp://host:port".into(),
            )),
            Some(Endpoint::Unix(_)) => Ok(engine),
            Some(Endpoint::Tcp(addr)) => {
                let (host, port) = addr.rsplit_once(':').unwrap_or((addr.as_str(), "0"));
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let ip = match host.parse::<IpAddr>() {
                    Ok(ip) => ip,
                    Err(_) => {
                        use std::net::ToSocketAddrs;
                        let port = port.parse::<u16>().unwrap_or(0);
                        (host, port)
                            .to_socket_addrs()
                            .map_err(|e| err(format!("cannot resolve {host}: {e}")))?
                            .next()
                            .ok_or_else(|| err(format!("{host} has no address")))?
                            .ip()
                    }
                };
                engine.publish_address = ip;
                Ok(engine)
            }
        }
    }
}

/// How to build a [`DockerProvider`].
#[derive(Debug, Clone, PartialEq)]
pub struct DockerConfig {
    /// The engines (hosts), at least one.
    pub engines: Vec<EngineConfig>,
    /// The tag of the Swell server that owns the containers (unique per server); only
    /// containers labelled with it are this provider's.
    pub owner: String,
    /// vCPUs committable per physical vCPU (default 16).
    pub cpu_overcommit: f64,
    /// MiB committable per physical MiB (default 1.5).
    pub memory_overcommit: f64,
    /// Engines whose load (percent, see [`swell_core::placement`]) is below this are
    /// preferred and filled evenly by commitment (default 70).
    pub prefer_below_percent: f64,
    /// Engines whose load is above this are never chosen (default none).
    pub never_above_percent: Option<f64>,
    /// The port the app in every container listens on, given to it as `PORT`
    /// (default 8080).
    pub container_port: u16,
    /// How long one call to an engine may take before the engine counts as down
    /// (default 10 s; a stop may take its grace on top).
    pub request_timeout: Duration,
    /// Most processes (and threads) one container may have: its `PidsLimit`
    /// (default [`DEFAULT_PIDS_LIMIT`]), so a fork bomb stays inside it.
    pub pids_limit: u32,
}

/// [`DockerConfig::pids_limit`] by default.
pub const DEFAULT_PIDS_LIMIT: u32 = 512;

/// The tmpfs on `/tmp` of a container with a read-only root filesystem.
pub const TMP_TMPFS: &str = "rw,nosuid,nodev,size=64m";

impl DockerConfig {
    /// A config with the defaults: 16:1 CPU and 1.5:1 memory over-commit, engines
    /// below 70 % load preferred, port 8080, 10 s per call, 512 processes per
    /// container.
    pub fn new(owner: impl Into<String>, engines: Vec<EngineConfig>) -> Self {
        DockerConfig {
            engines,
            owner: owner.into(),
            cpu_overcommit: 16.0,
            memory_overcommit: 1.5,
            prefer_below_percent: 70.0,
            never_above_percent: None,
            container_port: 8080,
            request_timeout: Duration::from_secs(10),
            pids_limit: DEFAULT_PIDS_LIMIT,
        }
    }
}

/// A rejected [`DockerConfig`]: which field, and which rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct DockerConfigError {
    /// The field, e.g. `engines[1].endpoint`.
    pub field: String,
    /// The rule, e.g. `must start with unix:// or tcp://`.
    pub rule: String,
}

/// Where an engine listens, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// A Unix socket path.
    Unix(String),
    /// `host:port` over TCP.
    Tcp(String),
}

fn parse_endpoint(endpoint: &str) -> Option<Endpoint> {
    if let Some(path) = endpoint.strip_prefix("unix://") {
        return (!path.is_empty()).then(|| Endpoint::Unix(path.to_string()));
    }
    if endpoint.starts_with('/') {
        return Some(Endpoint::Unix(endpoint.to_string()));
    }
    let rest = endpoint
        .strip_prefix("tcp://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .or_else(|| endpoint.strip_prefix("http://"))?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = rest.rsplit_once(':')?;
    (!host.is_empty() && port.parse::<u16>().is_ok()).then(|| Endpoint::Tcp(rest.to_string()))
}

impl DockerConfig {
    /// Checks every rule; the first broken one is returned with its field.
    pub fn validate(&self) -> Result<(), DockerConfigError> {
        let err = |field: String, rule: &str| DockerConfigError {
            field,
            rule: rule.to_string(),
        };
        if self.engines.is_empty() {
            return Err(err("engines".into(), "at least one engine is needed"));
        }
        if self.owner.is_empty() {
            return Err(err("owner".into(), "must not be empty"));
        }
        for (field, ratio) in [
            ("cpu_overcommit", self.cpu_overcommit),
            ("memory_overcommit", self.memory_overcommit),
        ] {
            if !(ratio.is_finite() && ratio > 0.0) {
                return Err(err(field.into(), "must be a positive number"));
            }
        }
        if self.container_port == 0 {
            return Err(err("container_port".into(), "must be 1 to 65535"));
        }
        if self.request_timeout < Duration::from_secs(1) {
            return Err(err("request_timeout".into(), "must be at least 1s"));
        }
        if self.pids_limit == 0 {
            return Err(err("pids_limit".into(), "must be at least 1"));
        }
        let mut names = HashSet::new();
        for (i, engine) in self.engines.iter().enumerate() {
            let field = |f: &str| format!("engines[{i}].{f}");
            if engine.name.is_empty() || !names.insert(engine.name.as_str()) {
                return Err(err(field("name"), "must be non-empty and unique"));
            }
            match parse_endpoint(&engine.endpoint) {
                None => {
                    return Err(err(
                        field("endpoint"),
                        "must be unix:///path/to/docker.sock or tcp://host:port",
                    ));
                }
                Some(Endpoint::Unix(_)) if engine.tls.is_some() => {
                    return Err(err(field("tls"), "only applies to a tcp:// endpoint"));
                }
                Some(Endpoint::Tcp(_)) if engine.tls.is_none() => {
                    return Err(err(
                        field("tls"),
                        "a tcp:// engine needs TLS (a CA, a client certificate and its key: \
                         swell serve --docker-tls-ca, --docker-tls-cert, --docker-tls-key); \
                         without it whoever reaches the port is root on the engine's host",
                    ));
                }
                _ => {}
            }
            if engine.publish_address.is_unspecified() {
                return Err(err(
                    field("publish_address"),
                    "must be one address of the engine's host, not the wildcard address \
                     (a port published there is open on every interface)",
                ));
            }
            if engine
                .cpu_capacity
                .is_some_and(|c| !(c.is_finite() && c > 0.0))
            {
                return Err(err(field("cpu_capacity"), "must be a positive number"));
            }
            if engine.memory_mb_capacity == Some(0) {
                return Err(err(field("memory_mb_capacity"), "must be positive"));
            }
        }
        Ok(())
    }
}

/// One engine as placement last saw it (see [`DockerProvider::engines`]).
#[derive(Debug, Clone, PartialEq)]
pub struct EngineStatus {
    /// The engine's name.
    pub name: String,
    /// Whether it answered.
    pub up: bool,
    /// Why not, when it did not.
    pub down_reason: Option<String>,
    /// Its load and capacity (zero capacity when it was never reached).
    pub load: HostLoad,
    /// Its load in percent (see [`swell_core::placement`]).
    pub load_percent: f64,
    /// Swell containers (any owner's) running or paused on it.
    pub containers: usize,
}

/// Runs instances as containers on Docker engines; see the [module docs](self).
#[derive(Debug)]
pub struct DockerProvider {
    config: DockerConfig,
    pub(crate) engines: Vec<Engine>,
    /// Serialises creates (placement sees every earlier create) and network removal
    /// (a network is not removed while a create is about to attach to it).
    create_lock: tokio::sync::Mutex<()>,
    /// CPU cores each instance used at its latest metrics reading.
    cores: Mutex<HashMap<String, f64>>,
}

impl DockerProvider {
    /// Builds the provider after checking the config. Nothing is contacted until it is
    /// used; an engine that does not answer then is marked down.
    pub fn new(config: DockerConfig) -> Result<Self, DockerConfigError> {
        config.validate()?;
        let engines = config
            .engines
            .iter()
            .map(|e| {
                // Validated above.
                let endpoint = parse_endpoint(&e.endpoint).unwrap_or(Endpoint::Unix(String::new()));
                Engine::new(e.clone(), endpoint, config.request_timeout)
            })
            .collect();
        Ok(DockerProvider {
            config,
            engines,
            create_lock: tokio::sync::Mutex::new(()),
            cores: Mutex::new(HashMap::new()),
        })
    }

    /// The ownership tag this provider manages.
    pub fn owner(&self) -> &str {
        &self.config.owner
    }

    /// Every engine's state and load, asking each engine now.
    pub async fn engines(&self) -> Vec<EngineStatus> {
        let loads = join_all(self.engines.iter().map(|e| self.host_load(e))).await;
        let oc = self.overcommit();
        self.engines
            .iter()
            .zip(loads)
            .map(|(engine, (load, containers))| EngineStatus {
                name: engine.name().to_string(),
                up: load.up,
                down_reason: engine.down_reason(),
                load_percent: load.load_percent(oc),
                load,
                containers,
            })
            .collect()
    }

    fn overcommit(&self) -> Overcommit {
        Overcommit {
            cpu: self.config.cpu_overcommit,
            memory: self.config.memory_overcommit,
        }
    }

    fn prefs(&self) -> PlacementPrefs {
        PlacementPrefs {
            overcommit: self.overcommit(),
            prefer_below: self.config.prefer_below_percent,
            never_above: self.config.never_above_percent,
        }
    }

    /// An engine's load for placement, and how many Swell containers run on it.
    async fn host_load(&self, engine: &Engine) -> (HostLoad, usize) {
        let down = HostLoad {
            up: false,
            capacity: Resources::default(),
            allocated: Resources::default(),
            cpu_used: 0.0,
        };
        let capacity = match engine.capacity().await {
            Ok(c) => c,
            Err(_) => return (down, 0),
        };
        let options = ListContainersOptions {
            all: false,
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![LABEL_INSTANCE.to_string()],
            )])),
            ..ListContainersOptions::default()
        };
        let running = match engine
            .call(|d| async move { d.list_containers(Some(options)).await })
            .await
        {
            Ok(list) => list,
            Err(_) => return (down, 0),
        };
        let allocated = allocated(&running);
        let mut cpu_used = 0.0;
        let cores = lock(&self.cores);
        for c in &running {
            let labels = c.labels.as_ref();
            let label = |key: &str| labels.and_then(|l| l.get(key));
            if label(LABEL_OWNER).map(String::as_str) == Some(self.config.owner.as_str())
                && let Some(id) = label(LABEL_INSTANCE)
            {
                cpu_used += cores.get(id).copied().unwrap_or(0.0);
            }
        }
        let load = HostLoad {
            up: true,
            capacity,
            allocated,
            cpu_used,
        };
        (load, running.len())
    }

    /// This owner's containers on one engine, as the engine lists them.
    async fn owned_summaries(&self, engine: &Engine) -> Result<Vec<ContainerSummary>, CallError> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![format!("{LABEL_OWNER}={}", self.config.owner)],
            )])),
            ..ListContainersOptions::default()
        };
        engine
            .call(|d| async move { d.list_containers(Some(options)).await })
            .await
    }

    /// This owner's containers on one engine; removes the condemned ones.
    async fn list_engine(&self, engine: &Engine) -> Result<Vec<ProviderInstance>, CallError> {
        let summaries = self.owned_summaries(engine).await?;
        let mut instances: Vec<ProviderInstance> = summaries
            .iter()
            .filter_map(|s| self.summary_instance(engine, s))
            .collect();
        // What was condemned while the engine was away goes now.
        let condemned = engine.condemned();
        if !condemned.is_empty() {
            for name in &condemned {
                match self.remove_container(engine, name).await {
                    Ok(()) => {
                        tracing::info!(engine = %engine.name(), container = %name,
                            "removed a container replaced while its engine was down");
                        engine.pardon(name);
                    }
                    Err(e) => tracing::warn!(engine = %engine.name(), container = %name,
                        "cannot remove a condemned container yet: {e}"),
                }
            }
            instances.retain(|i| !condemned.contains(&container_name(&i.instance_id)));
            self.sweep_networks(engine).await;
        }
        engine.remember(&instances);
        Ok(instances)
    }

    pub(crate) fn summary_instance(
        &self,
        engine: &Engine,
        s: &ContainerSummary,
    ) -> Option<ProviderInstance> {
        let labels = s.labels.as_ref()?;
        let id = labels.get(LABEL_INSTANCE)?;
        let port = s.ports.as_ref().and_then(|ports| {
            ports
                .iter()
                .find(|p| p.private_port == self.config.container_port && p.public_port.is_some())
                .and_then(|p| p.public_port)
        });
        let state = match s.state {
            Some(ContainerSummaryStateEnum::RUNNING | ContainerSummaryStateEnum::RESTARTING) => {
                ObservedState::Running
            }
            Some(ContainerSummaryStateEnum::PAUSED) => ObservedState::Paused,
            _ => ObservedState::Exited,
        };
        Some(ProviderInstance {
            instance_id: InstanceId(id.clone()),
            tenant: labels.get(LABEL_TENANT).cloned().unwrap_or_default(),
            group: labels.get(LABEL_GROUP).cloned().unwrap_or_default(),
            native_id: s.id.clone().unwrap_or_default(),
            host: engine.name().to_string(),
            address: port.map(|p| SocketAddr::new(engine.config.publish_address, p)),
            state,
        })
    }

    pub(crate) fn inspect_instance(
        &self,
        engine: &Engine,
        c: &ContainerInspectResponse,
    ) -> Option<ProviderInstance> {
        let labels = c.config.as_ref()?.labels.as_ref()?;
        if labels.get(LABEL_OWNER) != Some(&self.config.owner) {
            return None;
        }
        let id = labels.get(LABEL_INSTANCE)?;
        let key = format!("{}/tcp", self.config.container_port);
        let port = c
            .network_settings
            .as_ref()
            .and_then(|n| n.ports.as_ref())
            .and_then(|ports| ports.get(&key))
            .and_then(|bindings| bindings.as_ref())
            .and_then(|bindings| {
                bindings
                    .iter()
                    .find_map(|b| b.host_port.as_ref()?.parse::<u16>().ok())
            });
        Some(ProviderInstance {
            instance_id: InstanceId(id.clone()),
            tenant: labels.get(LABEL_TENANT).cloned().unwrap_or_default(),
            group: labels.get(LABEL_GROUP).cloned().unwrap_or_default(),
            native_id: c.id.clone().unwrap_or_default(),
            host: engine.name().to_string(),
            address: port.map(|p| SocketAddr::new(engine.config.publish_address, p)),
            state: inspect_state(c),
        })
    }

    /// The container named `name` on `engine`, if it is there.
    async fn inspect(
        &self,
        engine: &Engine,
        name: &str,
    ) -> Result<Option<ContainerInspectResponse>, CallError> {
        let name = name.to_string();
        match engine
            .call(|d| async move {
                d.inspect_container(&name, None::<InspectContainerOptions>)
                    .await
            })
            .await
        {
            Ok(c) => Ok(Some(c)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The engine holding instance `id`'s container, among the engines that answer.
    async fn locate(
        &self,
        id: &InstanceId,
    ) -> Result<Option<(&Engine, ContainerInspectResponse)>, ProviderError> {
        let name = container_name(id);
        let found = join_all(self.engines.iter().map(|e| self.inspect(e, &name))).await;
        for (engine, result) in self.engines.iter().zip(found) {
            match result {
                Ok(Some(c)) => return Ok(Some((engine, c))),
                Ok(None) | Err(CallError::Down(_)) => {}
                Err(e) => return Err(backend(engine, "inspecting", &name, e)),
            }
        }
        Ok(None)
    }

    /// Starts the container if it is not running yet (created, or exited) and reads
    /// it back.
    async fn ensure_started(
        &self,
        engine: &Engine,
        c: ContainerInspectResponse,
        name: &str,
    ) -> Result<ProviderInstance, ProviderError> {
        if self.inspect_instance(engine, &c).is_none() {
            return Err(ProviderError::Backend(format!(
                "container {name} on engine {} is not this server's (owner label differs)",
                engine.name()
            )));
        }
        let c = if inspect_state(&c) == ObservedState::Exited {
            let n = name.to_string();
            match engine
                .call(|d| async move { d.start_container(&n, None).await })
                .await
            {
                Ok(()) => {}
                Err(e) => return Err(start_error(engine, name, e)),
            }
            match self.inspect(engine, name).await {
                Ok(Some(c)) => c,
                Ok(None) => {
                    return Err(ProviderError::Backend(format!(
                        "container {name} vanished on engine {} as it started",
                        engine.name()
                    )));
                }
                Err(e) => return Err(backend(engine, "inspecting", name, e)),
            }
        } else {
            c
        };
        self.inspect_instance(engine, &c).ok_or_else(|| {
            ProviderError::Backend(format!(
                "container {name} on engine {} belongs to another owner",
                engine.name()
            ))
        })
    }

    /// Creates the tenant's network on `engine` unless it exists.
    async fn ensure_network(&self, engine: &Engine, tenant: &str) -> Result<(), ProviderError> {
        let name = network_name(tenant);
        let n = name.clone();
        match engine
            .call(|d| async move { d.inspect_network(&n, None::<InspectNetworkOptions>).await })
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(backend(engine, "inspecting network", &name, e)),
        }
        let request = NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".into()),
            labels: Some(HashMap::from([
                (LABEL_TENANT.to_string(), tenant.to_string()),
                (LABEL_NETWORK.to_string(), "tenant".to_string()),
            ])),
            options: Some(HashMap::from([(
                "com.docker.network.bridge.enable_icc".to_string(),
                "true".to_string(),
            )])),
            ..NetworkCreateRequest::default()
        };
        match engine
            .call(|d| async move { d.create_network(request).await })
            .await
        {
            Ok(_) => {
                tracing::info!(engine = %engine.name(), network = %name, "created tenant network");
                Ok(())
            }
            // Created meanwhile by another server.
            Err(e) if e.is_conflict() => Ok(()),
            Err(e) => Err(backend(engine, "creating network", &name, e)),
        }
    }

    /// Removes the tenant's network on `engine` if no container is attached to it.
    async fn remove_network_if_empty(&self, engine: &Engine, tenant: &str) {
        let name = network_name(tenant);
        let n = name.clone();
        let inspected = engine
            .call(|d| async move { d.inspect_network(&n, None::<InspectNetworkOptions>).await })
            .await;
        let Ok(network) = inspected else {
            return;
        };
        let is_ours = network
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_NETWORK))
            .is_some_and(|v| v == "tenant");
        if !is_ours || network.containers.as_ref().is_some_and(|c| !c.is_empty()) {
            return;
        }
        let n = name.clone();
        match engine
            .call(|d| async move { d.remove_network(&n).await })
            .await
        {
            Ok(()) => {
                tracing::info!(engine = %engine.name(), network = %name, "removed empty tenant network");
            }
            // Gone already, or a container (another server's) joined meanwhile.
            Err(e) => {
                tracing::debug!(engine = %engine.name(), network = %name, "network kept: {e}")
            }
        }
    }

    /// Removes every empty tenant network on `engine`.
    async fn sweep_networks(&self, engine: &Engine) {
        let options = ListNetworksOptions {
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![format!("{LABEL_NETWORK}=tenant")],
            )])),
        };
        let Ok(networks) = engine
            .call(|d| async move { d.list_networks(Some(options)).await })
            .await
        else {
            return;
        };
        let _serial = self.create_lock.lock().await;
        for network in networks {
            if let Some(tenant) = network.labels.as_ref().and_then(|l| l.get(LABEL_TENANT)) {
                self.remove_network_if_empty(engine, tenant).await;
            }
        }
    }

    /// Force-removes a container; one that is gone already is fine.
    async fn remove_container(&self, engine: &Engine, name: &str) -> Result<(), CallError> {
        let n = name.to_string();
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..RemoveContainerOptions::default()
        };
        match engine
            .call(|d| async move { d.remove_container(&n, Some(options)).await })
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            // "removal already in progress"
            Err(e) if e.is_conflict() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The container's create body for `request`, run as `user` (`None`: the image's
    /// default).
    fn container_body(
        &self,
        request: &CreateRequest,
        image: &str,
        publish: IpAddr,
        user: Option<String>,
    ) -> ContainerCreateBody {
        let port = self.config.container_port;
        let port_text = port.to_string();
        let substitute = |s: &String| s.replace("{port}", &port_text);
        let template = &request.template;
        let mut env: Vec<String> = template
            .env
            .iter()
            .filter(|(name, _)| name.as_str() != "PORT")
            .map(|(name, value)| format!("{name}={}", substitute(value)))
            .collect();
        env.push(format!("PORT={port}"));
        env.push(format!("SWELL_INSTANCE_ID={}", request.instance_id));
        env.push(format!("SWELL_GROUP={}", request.group));
        env.push(format!("SWELL_TENANT={}", request.tenant.as_str()));
        let labels = HashMap::from([
            (LABEL_OWNER.to_string(), self.config.owner.clone()),
            (
                LABEL_INSTANCE.to_string(),
                request.instance_id.as_str().to_string(),
            ),
            (LABEL_GROUP.to_string(), request.group.clone()),
            (
                LABEL_TENANT.to_string(),
                request.tenant.as_str().to_string(),
            ),
            (LABEL_VCPUS.to_string(), template.vcpus.to_string()),
            (LABEL_MEMORY_MB.to_string(), template.memory_mb.to_string()),
        ]);
        let port_key = format!("{port}/tcp");
        let writable_root = template.docker.as_ref().is_some_and(|d| d.writable_root);
        // `create` refuses a template without limits; the floor keeps this total.
        let memory = i64::from(template.memory_mb.max(DOCKER_MIN_MEMORY_MB)) * 1024 * 1024;
        let host_config = HostConfig {
            nano_cpus: Some(i64::from(template.vcpus.max(1)) * 1_000_000_000),
            memory: Some(memory),
            // No swap beyond the memory limit.
            memory_swap: Some(memory),
            pids_limit: Some(i64::from(self.config.pids_limit)),
            cap_drop: Some(vec!["ALL".to_string()]),
            security_opt: Some(vec!["no-new-privileges:true".to_string()]),
            readonly_rootfs: Some(!writable_root),
            tmpfs: (!writable_root)
                .then(|| HashMap::from([("/tmp".to_string(), TMP_TMPFS.to_string())])),
            network_mode: Some(network_name(request.tenant.as_str())),
            port_bindings: Some(HashMap::from([(
                port_key.clone(),
                Some(vec![PortBinding {
                    host_ip: Some(publish.to_string()),
                    host_port: Some(String::new()),
                }]),
            )])),
            ..HostConfig::default()
        };
        ContainerCreateBody {
            image: Some(image.to_string()),
            user,
            cmd: (!template.command.is_empty())
                .then(|| template.command.iter().map(substitute).collect()),
            env: Some(env),
            labels: Some(labels),
            exposed_ports: Some(vec![port_key]),
            host_config: Some(host_config),
            ..ContainerCreateBody::default()
        }
    }

    /// The user `request`'s container runs as on `engine`: the template's
    /// `docker.user`, else the image's own `USER` (`None` when it declares none, so it
    /// runs as root inside the container, which is logged).
    async fn run_as(
        &self,
        engine: &Engine,
        request: &CreateRequest,
        image: &str,
    ) -> Result<Option<String>, ProviderError> {
        if let Some(user) = request
            .template
            .docker
            .as_ref()
            .and_then(|d| d.user.clone())
        {
            return Ok(Some(user));
        }
        let i = image.to_string();
        let inspected = match engine
            .call(|d| async move { d.inspect_image(&i).await })
            .await
        {
            Ok(inspected) => inspected,
            Err(e) if e.is_not_found() => {
                return Err(ProviderError::InvalidTemplate(format!(
                    "engine {}: no image `{image}` (images are not pulled: load it onto \
                     every engine first, e.g. with `docker load`)",
                    engine.name()
                )));
            }
            Err(e) => return Err(backend(engine, "inspecting image", image, e)),
        };
        let user = inspected
            .config
            .and_then(|c| c.user)
            .filter(|u| !u.trim().is_empty());
        if user.as_deref().is_none_or(is_root) {
            tracing::warn!(instance = %request.instance_id, %image,
                "the image declares no non-root user: the container runs as root (without \
                 capabilities); set template.docker.user to run it as another user");
        }
        Ok(user)
    }

    /// Creates and starts a new container on `engine`; a name conflict returns the
    /// container that has the name.
    async fn create_on(
        &self,
        engine: &Engine,
        request: &CreateRequest,
        image: &str,
    ) -> Result<ProviderInstance, ProviderError> {
        let name = container_name(&request.instance_id);
        let user = self.run_as(engine, request, image).await?;
        let body = self.container_body(request, image, engine.config.publish_address, user);
        let mut network_retried = false;
        loop {
            self.ensure_network(engine, request.tenant.as_str()).await?;
            let options = CreateContainerOptions {
                name: Some(name.clone()),
                ..CreateContainerOptions::default()
            };
            let b = body.clone();
            match engine
                .call(|d| async move { d.create_container(Some(options), b).await })
                .await
            {
                Ok(_) => break,
                Err(e) if e.is_conflict() => break,
                Err(CallError::Api {
                    status: 404,
                    message,
                }) if message.contains("network") && !network_retried => {
                    // Removed by another server between our check and the create.
                    network_retried = true;
                }
                Err(CallError::Api {
                    status: 404,
                    message,
                }) => {
                    return Err(ProviderError::InvalidTemplate(format!(
                        "engine {}: {message} (images are not pulled: load `{image}` onto \
                         every engine first, e.g. with `docker load`)",
                        engine.name()
                    )));
                }
                Err(CallError::Api {
                    status: 400,
                    message,
                }) => {
                    return Err(ProviderError::InvalidTemplate(format!(
                        "engine {} refused the container: {message}",
                        engine.name()
                    )));
                }
                Err(e) => return Err(backend(engine, "creating", &name, e)),
            }
        }
        let container = match self.inspect(engine, &name).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                return Err(ProviderError::Backend(format!(
                    "container {name} vanished on engine {} right after its create",
                    engine.name()
                )));
            }
            Err(e) => return Err(backend(engine, "inspecting", &name, e)),
        };
        match self.ensure_started(engine, container, &name).await {
            Ok(instance) => {
                engine.note(&instance);
                tracing::info!(instance = %request.instance_id, engine = %engine.name(),
                    address = ?instance.address, "started container instance");
                Ok(instance)
            }
            Err(e) => {
                // Leave nothing half-made behind (the command may not exist in the
                // image, the port may not bind).
                let _ = self.remove_container(engine, &name).await;
                Err(e)
            }
        }
    }

    /// Finds the container, stops it within `grace` and removes it; whether it was on
    /// an engine that answered (and its tenant).
    async fn stop_and_remove(
        &self,
        engine: &Engine,
        name: &str,
        grace: Duration,
    ) -> Result<Option<String>, CallError> {
        let Some(c) = self.inspect(engine, name).await? else {
            return Ok(None);
        };
        if self.inspect_instance(engine, &c).is_none() {
            // Another server's container of the same name: not ours to remove.
            return Ok(None);
        }
        let tenant = c
            .config
            .as_ref()
            .and_then(|cfg| cfg.labels.as_ref())
            .and_then(|l| l.get(LABEL_TENANT))
            .cloned()
            .unwrap_or_default();
        let state = inspect_state(&c);
        if state == ObservedState::Paused {
            let n = name.to_string();
            match engine
                .call(|d| async move { d.unpause_container(&n).await })
                .await
            {
                Ok(()) => {}
                Err(e) if e.is_conflict() => {}
                Err(e) => return Err(e),
            }
        }
        if state != ObservedState::Exited {
            let n = name.to_string();
            let options = StopContainerOptions {
                t: Some(grace.as_secs_f64().ceil().min(i32::MAX as f64) as i32),
                ..StopContainerOptions::default()
            };
            let timeout = self.config.request_timeout + grace + STOP_SLACK;
            match engine
                .call(|d| async move {
                    d.with_timeout(timeout)
                        .stop_container(&n, Some(options))
                        .await
                })
                .await
            {
                Ok(()) => {}
                // Not running any more (304 is not an error in bollard), or gone.
                Err(e) if e.is_not_found() || e.is_conflict() => {}
                Err(e) => return Err(e),
            }
        }
        self.remove_container(engine, name).await?;
        Ok(Some(tenant))
    }

    async fn pause_or_resume(&self, id: &InstanceId, pause: bool) -> Result<(), ProviderError> {
        let Some((engine, c)) = self.locate(id).await? else {
            return Err(ProviderError::NotFound(id.clone()));
        };
        if self.inspect_instance(engine, &c).is_none() {
            return Err(ProviderError::NotFound(id.clone()));
        }
        let state = inspect_state(&c);
        let name = container_name(id);
        let n = name.clone();
        let result = match (pause, state) {
            (true, ObservedState::Paused) | (false, ObservedState::Running) => return Ok(()),
            (_, ObservedState::Exited) => {
                return Err(ProviderError::Backend(format!(
                    "instance {id} is not running on engine {}",
                    engine.name()
                )));
            }
            (true, _) => {
                engine
                    .call(|d| async move { d.pause_container(&n).await })
                    .await
            }
            (false, _) => {
                engine
                    .call(|d| async move { d.unpause_container(&n).await })
                    .await
            }
        };
        result.map_err(|e| backend(engine, if pause { "pausing" } else { "resuming" }, &name, e))
    }
}

#[async_trait]
impl Provider for DockerProvider {
    fn name(&self) -> &str {
        "docker"
    }

    async fn create(&self, request: &CreateRequest) -> Result<ProviderInstance, ProviderError> {
        let id = &request.instance_id;
        check_instance_id(id)?;
        let image = match request.template.image.as_deref() {
            Some(image) if !image.trim().is_empty() => image,
            _ => {
                return Err(ProviderError::InvalidTemplate(
                    "the docker provider needs an `image`".into(),
                ));
            }
        };
        // Group validation says the same; a group stored before that rule must not
        // get a container without limits either.
        if request.template.vcpus == 0 || request.template.memory_mb < DOCKER_MIN_MEMORY_MB {
            return Err(ProviderError::InvalidTemplate(format!(
                "the docker provider needs limits: vcpus >= 1 and memory_mb >= \
                 {DOCKER_MIN_MEMORY_MB} (got {} and {})",
                request.template.vcpus, request.template.memory_mb
            )));
        }
        let _serial = self.create_lock.lock().await;
        let name = container_name(id);
        if let Some((engine, existing)) = self.locate(id).await? {
            return self.ensure_started(engine, existing, &name).await;
        }
        let loads = join_all(self.engines.iter().map(|e| self.host_load(e))).await;
        let hosts: Vec<HostLoad> = loads.iter().map(|(load, _)| *load).collect();
        let need = Resources {
            vcpus: f64::from(request.template.vcpus),
            memory_mb: f64::from(request.template.memory_mb),
        };
        let Some(chosen) = placement::choose_host(&hosts, need, &self.prefs()) else {
            let oc = self.overcommit();
            let states: Vec<String> = self
                .engines
                .iter()
                .zip(&hosts)
                .map(|(e, h)| {
                    if h.up {
                        format!(
                            "{}: {:.0}% loaded, {}/{} vCPUs and {}/{} MiB committed",
                            e.name(),
                            h.load_percent(oc),
                            h.allocated.vcpus,
                            h.capacity.vcpus * oc.cpu,
                            h.allocated.memory_mb,
                            (h.capacity.memory_mb * oc.memory).floor()
                        )
                    } else {
                        format!("{}: down", e.name())
                    }
                })
                .collect();
            return Err(ProviderError::NoCapacity(format!(
                "no docker engine has room for {} vCPUs and {} MiB ({})",
                request.template.vcpus,
                request.template.memory_mb,
                states.join("; ")
            )));
        };
        self.create_on(&self.engines[chosen], request, image).await
    }

    async fn delete(&self, id: &InstanceId, grace: Duration) -> Result<(), ProviderError> {
        let name = container_name(id);
        let results = join_all(
            self.engines
                .iter()
                .map(|e| self.stop_and_remove(e, &name, grace)),
        )
        .await;
        let mut failure = None;
        for (engine, result) in self.engines.iter().zip(results) {
            match result {
                Ok(None) => {}
                Ok(Some(tenant)) => {
                    engine.forget(id.as_str());
                    tracing::info!(instance = %id, engine = %engine.name(), "removed container instance");
                    lock(&self.cores).remove(id.as_str());
                    let _serial = self.create_lock.lock().await;
                    self.remove_network_if_empty(engine, &tenant).await;
                }
                // It may be there: remove it as soon as the engine answers again.
                Err(CallError::Down(_)) => engine.condemn([name.clone()]),
                Err(e) => failure = Some(backend(engine, "deleting", &name, e)),
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn pause(&self, id: &InstanceId) -> Result<(), ProviderError> {
        self.pause_or_resume(id, true).await
    }

    async fn resume(&self, id: &InstanceId) -> Result<(), ProviderError> {
        self.pause_or_resume(id, false).await
    }

    async fn list(&self) -> Result<Vec<ProviderInstance>, ProviderError> {
        let results = join_all(self.engines.iter().map(|e| async move {
            match self.list_engine(e).await {
                // One more try before its containers count as gone: a single lost
                // call must not get them all replaced.
                Err(CallError::Down(_)) => {
                    tokio::time::sleep(RETRY_DELAY).await;
                    self.list_engine(e).await
                }
                other => other,
            }
        }))
        .await;
        if let Some(reason) = results
            .iter()
            .map(|r| match r {
                Err(CallError::Down(why)) => Some(why),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
        {
            return Err(ProviderError::Backend(format!(
                "no docker engine answers ({})",
                self.engines
                    .iter()
                    .zip(reason)
                    .map(|(e, why)| format!("{}: {why}", e.name()))
                    .collect::<Vec<_>>()
                    .join("; ")
            )));
        }
        let mut all = Vec::new();
        for (engine, result) in self.engines.iter().zip(results) {
            match result {
                Ok(instances) => all.extend(instances),
                Err(CallError::Down(_)) => {
                    // Gone as far as the controller can tell: it replaces them, and they
                    // are removed when the engine comes back.
                    let known = engine.known();
                    engine.condemn(known.iter().map(|i| container_name(&i.instance_id)));
                    all.extend(known.into_iter().map(|i| ProviderInstance {
                        state: ObservedState::Exited,
                        ..i
                    }));
                }
                Err(e) => {
                    return Err(ProviderError::Backend(format!(
                        "listing containers on engine {}: {e}",
                        engine.name()
                    )));
                }
            }
        }
        Ok(all)
    }

    async fn metrics(
        &self,
        ids: &[InstanceId],
    ) -> Result<Vec<(InstanceId, InstanceMetrics)>, ProviderError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let wanted: HashSet<&str> = ids.iter().map(InstanceId::as_str).collect();
        let listed = join_all(self.engines.iter().map(|e| self.owned_summaries(e))).await;
        // (engine, instance id, container name, CPU limit in vCPUs)
        let mut targets: Vec<(&Engine, InstanceId, String, f64)> = Vec::new();
        for (engine, result) in self.engines.iter().zip(listed) {
            for summary in result.unwrap_or_default() {
                let Some(instance) = self.summary_instance(engine, &summary) else {
                    continue;
                };
                if instance.state == ObservedState::Exited
                    || !wanted.contains(instance.instance_id.as_str())
                    || engine
                        .condemned()
                        .contains(&container_name(&instance.instance_id))
                    || targets.iter().any(|t| t.1 == instance.instance_id)
                {
                    continue;
                }
                let limit = summary
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL_VCPUS))
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0);
                let name = container_name(&instance.instance_id);
                targets.push((engine, instance.instance_id, name, limit));
            }
        }
        let readings = join_all(targets.iter().map(|(engine, _, name, _)| async move {
            let options = StatsOptions {
                stream: false,
                one_shot: false,
            };
            let n = name.clone();
            engine
                .call(|d| async move {
                    match d.stats(&n, Some(options)).next().await {
                        Some(result) => result.map(Some),
                        None => Ok(None),
                    }
                })
                .await
        }))
        .await;
        let mut out = Vec::new();
        let mut cores = lock(&self.cores);
        for ((_, id, _, limit), stats) in targets.into_iter().zip(readings) {
            let Ok(Some(stats)) = stats else {
                continue;
            };
            let reading = stats::reading(&stats, limit);
            cores.insert(id.as_str().to_string(), reading.cores);
            out.push((id, reading.metrics));
        }
        Ok(out)
    }
}

/// What the running containers' labels say is committed on an engine: the sum of their
/// `swell.vcpus` and `swell.memory_mb`. Any container may carry the labels (another
/// owner's, one started by hand): a value that is not a finite number >= 0 (`NaN`,
/// `inf`, `-4`) counts as 0, so that it cannot make the engine's load unreadable for
/// placement.
pub(crate) fn allocated(running: &[ContainerSummary]) -> Resources {
    let mut total = Resources::default();
    for c in running {
        let number = |key: &str| {
            c.labels
                .as_ref()
                .and_then(|l| l.get(key))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|n| n.is_finite() && *n >= 0.0)
                .unwrap_or(0.0)
        };
        total = total.plus(Resources {
            vcpus: number(LABEL_VCPUS),
            memory_mb: number(LABEL_MEMORY_MB),
        });
    }
    total
}

/// Whether a container user is root (`root`, `0`, `0:…`, `root:…`).
fn is_root(user: &str) -> bool {
    let uid = user.split(':').next().unwrap_or_default().trim();
    uid == "root" || (!uid.is_empty() && uid.bytes().all(|b| b == b'0'))
}

/// The container's name for an instance.
pub fn container_name(id: &InstanceId) -> String {
    format!("{NAME_PREFIX}{id}")
}

/// The tenant's network name.
pub fn network_name(tenant: &str) -> String {
    format!("{NAME_PREFIX}{tenant}")
}

fn inspect_state(c: &ContainerInspectResponse) -> ObservedState {
    match c.state.as_ref().and_then(|s| s.status) {
        Some(ContainerStateStatusEnum::RUNNING | ContainerStateStatusEnum::RESTARTING) => {
            ObservedState::Running
        }
        Some(ContainerStateStatusEnum::PAUSED) => ObservedState::Paused,
        _ => ObservedState::Exited,
    }
}

/// Instance ids become container names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
fn check_instance_id(id: &InstanceId) -> Result<(), ProviderError> {
    let s = id.as_str();
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ProviderError::Backend(format!(
            "instance id `{s}` must be 1 to 128 ASCII letters, digits, '-', '_' or '.'"
        )))
    }
}

/// A failed start: the template's fault when the engine says the request was bad or
/// the program cannot be run (`executable file not found`, `no such file`).
fn start_error(engine: &Engine, name: &str, error: CallError) -> ProviderError {
    match &error {
        CallError::Api { status, message }
            if *status == 400
                || message.contains("executable file not found")
                || message.contains("no such file or directory") =>
        {
            ProviderError::InvalidTemplate(format!(
                "engine {} cannot start {name}: {message}",
                engine.name()
            ))
        }
        _ => backend(engine, "starting", name, error),
    }
}

fn backend(engine: &Engine, action: &str, what: &str, error: CallError) -> ProviderError {
    ProviderError::Backend(format!(
        "{action} {what} on docker engine {}: {error}",
        engine.name()
    ))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use swell_core::{Template, TenantId};

    fn config() -> DockerConfig {
        DockerConfig::new("owner-1", vec![EngineConfig::local("local")])
    }

    #[test]
    fn endpoints_parse() {
        let cases = [
            (
                "unix:///var/run/docker.sock",
                Some(Endpoint::Unix("/var/run/docker.sock".into())),
            ),
            ("/run/d.sock", Some(Endpoint::Unix("/run/d.sock".into()))),
            (
                "tcp://10.0.0.5:2376",
                Some(Endpoint::Tcp("10.0.0.5:2376".into())),
            ),
            (
                "https://docker.example:2376/",
                Some(Endpoint::Tcp("docker.example:2376".into())),
            ),
            ("tcp://host", None),
            ("tcp://:2376", None),
            ("unix://", None),
            ("ssh://host", None),
            ("", None),
        ];
        for (text, expect) in cases {
            assert_eq!(parse_endpoint(text), expect, "{text}");
        }
    }

    #[test]
    fn config_errors_name_the_field() {
        let check = |change: &dyn Fn(&mut DockerConfig), field: &str| {
            let mut c = config();
            change(&mut c);
            let err = c.validate().expect_err(field);
            assert_eq!(err.field, field, "{err}");
        };
        assert!(config().validate().is_ok());
        check(&|c| c.engines.clear(), "engines");
        check(&|c| c.owner.clear(), "owner");
        check(&|c| c.cpu_overcommit = 0.0, "cpu_overcommit");
        check(&|c| c.memory_overcommit = f64::NAN, "memory_overcommit");
        check(&|c| c.container_port = 0, "container_port");
        check(&|c| c.request_timeout = Duration::ZERO, "request_timeout");
        check(
            &|c| c.engines.push(EngineConfig::local("local")),
            "engines[1].name",
        );
        check(
            &|c| c.engines[0].endpoint = "ssh://x".into(),
            "engines[0].endpoint",
        );
        check(
            &|c| {
                c.engines[0].tls = Some(TlsConfig {
                    ca: "ca.pem".into(),
                    cert: "cert.pem".into(),
                    key: "key.pem".into(),
                })
            },
            "engines[0].tls",
        );
        check(
            &|c| c.engines[0].cpu_capacity = Some(-1.0),
            "engines[0].cpu_capacity",
        );
        check(
            &|c| c.engines[0].memory_mb_capacity = Some(0),
            "engines[0].memory_mb_capacity",
        );
        check(&|c| c.pids_limit = 0, "pids_limit");
        // A TCP engine without TLS: whoever reaches its port is root on its host.
        for endpoint in [
            "tcp://10.0.0.5:2375",
            "http://10.0.0.5:2375",
            "https://h:2376",
        ] {
            check(
                &|c| c.engines[0].endpoint = endpoint.into(),
                "engines[0].tls",
            );
        }
        check(
            &|c| c.engines[0].publish_address = IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            "engines[0].publish_address",
        );
        check(
            &|c| c.engines[0].publish_address = "::".parse().expect("an address"),
            "engines[0].publish_address",
        );
        // With TLS it is fine.
        let mut c = config();
        c.engines[0].endpoint = "tcp://10.0.0.5:2376".into();
        c.engines[0].tls = Some(TlsConfig {
            ca: "ca.pem".into(),
            cert: "cert.pem".into(),
            key: "key.pem".into(),
        });
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn the_container_carries_the_template_and_the_tags() {
        let provider = DockerProvider::new(config()).expect("valid config");
        let request = CreateRequest {
            instance_id: InstanceId("i-1".into()),
            tenant: TenantId::new("acme").expect("valid tenant"),
            group: "web".into(),
            template: Template {
                command: vec!["--listen".into(), "0.0.0.0:{port}".into()],
                image: Some("app:1".into()),
                env: BTreeMap::from([
                    ("MODE".to_string(), "port-{port}".to_string()),
                    ("PORT".to_string(), "1".to_string()),
                ]),
                vcpus: 2,
                memory_mb: 512,
                openstack: None,
                docker: None,
                qemu: None,
            },
        };
        let body = provider.container_body(
            &request,
            "app:1",
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            Some("65534:65534".into()),
        );
        assert_eq!(body.user.as_deref(), Some("65534:65534"));
        assert_eq!(body.image.as_deref(), Some("app:1"));
        assert_eq!(
            body.cmd,
            Some(vec!["--listen".to_string(), "0.0.0.0:8080".to_string()])
        );
        let env = body.env.unwrap_or_default();
        for expected in [
            "MODE=port-8080",
            "PORT=8080",
            "SWELL_INSTANCE_ID=i-1",
            "SWELL_GROUP=web",
            "SWELL_TENANT=acme",
        ] {
            assert!(env.iter().any(|e| e == expected), "{expected} in {env:?}");
        }
        assert!(!env.iter().any(|e| e == "PORT=1"), "{env:?}");
        let labels = body.labels.unwrap_or_default();
        for (k, v) in [
            (LABEL_OWNER, "owner-1"),
            (LABEL_INSTANCE, "i-1"),
            (LABEL_GROUP, "web"),
            (LABEL_TENANT, "acme"),
            (LABEL_VCPUS, "2"),
            (LABEL_MEMORY_MB, "512"),
        ] {
            assert_eq!(labels.get(k).map(String::as_str), Some(v), "{k}");
        }
        let hc = body.host_config.unwrap_or_default();
        assert_eq!(hc.nano_cpus, Some(2_000_000_000));
        assert_eq!(hc.memory, Some(512 * 1024 * 1024));
        assert_eq!(hc.memory_swap, hc.memory);
        assert_eq!(hc.network_mode.as_deref(), Some("swell-acme"));
        // Hardened by default.
        assert_eq!(hc.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(
            hc.security_opt,
            Some(vec!["no-new-privileges:true".to_string()])
        );
        assert_eq!(hc.pids_limit, Some(512));
        assert_eq!(hc.readonly_rootfs, Some(true));
        assert_eq!(
            hc.tmpfs,
            Some(HashMap::from([("/tmp".to_string(), TMP_TMPFS.to_string())]))
        );
        assert_eq!(hc.privileged, None);
        let bindings = hc.port_bindings.unwrap_or_default();
        let published = bindings
            .get("8080/tcp")
            .cloned()
            .flatten()
            .unwrap_or_default();
        assert_eq!(published.len(), 1);
        assert_eq!(published[0].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(body.exposed_ports, Some(vec!["8080/tcp".to_string()]));
    }

    #[test]
    fn an_empty_command_keeps_the_image_default_and_a_template_relaxes_the_root() {
        let provider = DockerProvider::new(config()).expect("valid config");
        let request = CreateRequest {
            instance_id: InstanceId("i-2".into()),
            tenant: TenantId::default_tenant(),
            group: "web".into(),
            template: Template {
                image: Some("app:1".into()),
                docker: Some(swell_core::DockerTemplate {
                    writable_root: true,
                    user: None,
                }),
                vcpus: 1,
                memory_mb: 256,
                ..Template::default()
            },
        };
        let body =
            provider.container_body(&request, "app:1", IpAddr::V4(Ipv4Addr::LOCALHOST), None);
        assert_eq!((body.cmd, body.user), (None, None));
        let hc = body.host_config.unwrap_or_default();
        assert_eq!((hc.readonly_rootfs, hc.tmpfs), (Some(false), None));
        // Everything else stays.
        assert_eq!(hc.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(hc.nano_cpus, Some(1_000_000_000));
        assert_eq!(hc.memory, Some(256 * 1024 * 1024));
    }

    #[tokio::test]
    async fn a_template_without_limits_is_refused_before_any_engine_call() {
        let mut c = config();
        c.engines[0].endpoint = "unix:///nonexistent/swell-test.sock".into();
        let provider = DockerProvider::new(c).expect("valid config");
        for (vcpus, memory_mb) in [(0, 256), (1, 0), (1, 5)] {
            let request = CreateRequest {
                instance_id: InstanceId("i-3".into()),
                tenant: TenantId::default_tenant(),
                group: "web".into(),
                template: Template {
                    image: Some("app:1".into()),
                    vcpus,
                    memory_mb,
                    ..Template::default()
                },
            };
            let err = provider.create(&request).await.expect_err("refused");
            assert!(
                matches!(&err, ProviderError::InvalidTemplate(m) if m.contains("limits")),
                "{vcpus}/{memory_mb}: {err}"
            );
        }
    }

    #[test]
    fn root_users_are_recognised() {
        for (user, root) in [
            ("root", true),
            ("0", true),
            ("0:0", true),
            ("00", true),
            ("root:staff", true),
            ("65534:65534", false),
            ("nobody", false),
            ("1000", false),
        ] {
            assert_eq!(is_root(user), root, "{user}");
        }
    }

    #[test]
    fn engines_from_an_endpoint_publish_where_they_are_reached() {
        let check = |endpoint: &str, publish: Option<&str>| {
            let got = EngineConfig::for_endpoint("e", endpoint)
                .ok()
                .map(|e| e.publish_address.to_string());
            assert_eq!(got.as_deref(), publish, "{endpoint}");
        };
        check("unix:///var/run/docker.sock", Some("127.0.0.1"));
        check("/run/docker.sock", Some("127.0.0.1"));
        check("tcp://10.0.0.5:2376", Some("10.0.0.5"));
        check("tcp://[fd00::5]:2376", Some("fd00::5"));
        check("tcp://localhost:2376", Some("127.0.0.1"));
        check("ssh://host", None);
    }

    #[test]
    fn instance_ids_must_be_container_names() {
        assert!(
            check_instance_id(&InstanceId("0190b3c4-7e4f-7000-8000-000000000000".into())).is_ok()
        );
        for bad in ["", "a/b", "a b", "é", &"x".repeat(129)] {
            assert!(check_instance_id(&InstanceId(bad.into())).is_err(), "{bad}");
        }
    }
}
