//! Swell's control plane in one process: the store, the controller (one worker per
//! group), the providers and the REST API. `swell serve` and `swell demo` both run a
//! [`Server`].
#![warn(missing_docs)]

pub mod apply;
pub mod auth;
pub mod boundary;
pub mod clock;
pub mod controller;
pub mod cost;
pub mod dashboard;
pub mod data_dir_lock;
pub mod event_stream;
pub mod exposition;
/// Fuzzing bodies of the API's parsers, for `fuzz/` and `tests/fuzz_corpus.rs` only:
/// behind the `testing` feature, so a normal build does not ship them.
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod fuzz_targets;
pub mod http;
pub mod http_history;
pub mod http_identity;
pub mod http_notify;
pub mod http_providers;
pub mod identity;
pub mod metric_history;
pub mod metric_urls;
pub mod notify;
pub mod openapi;
pub mod problem;
pub mod registry;
pub mod secrets;
pub mod service;
pub mod tls;
mod unread_body;

use crate::clock::{Clock, TokioClock};
use crate::controller::{Controller, ControllerOptions};
use crate::registry::{ProviderRegistry, RegistryContext};
use crate::service::Service;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use swell_providers::Provider;
use swell_providers::docker::{DockerConfig, DockerProvider};
use swell_providers::openstack::OpenStackProvider;
use swell_providers::process::{InstanceUser, InstanceUserError, ProcessConfig, ProcessProvider};
use swell_store::postgres::{LockError, ServerLock};
use swell_store::{PgStore, SqliteStore, Store};
use tokio_util::sync::CancellationToken;

/// Everything `swell serve` is configured with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where the REST API listens (`127.0.0.1:7700`; port 0 picks a free one).
    pub listen: SocketAddr,
    /// Where the SQLite store and instance logs live (`./swell-data`).
    pub data_dir: PathBuf,
    /// A PostgreSQL database to use as the store instead of SQLite in `data_dir`
    /// (`postgres://user:password@host/db`; a secret, since it may hold a password).
    /// The server holds the database's server lock for its lifetime: one server per
    /// database.
    pub database_url: Option<secrets::SecretString>,
    /// Stop every instance on shutdown instead of leaving them for the next start.
    pub stop_instances_on_exit: bool,
    /// The bootstrap admin's password, used only on first start with an empty store
    /// (`SWELL_ADMIN_PASSWORD` or `--admin-password-file`); when `None` one is
    /// generated and returned by [`Server::generated_admin_password`].
    pub admin_password: Option<secrets::SecretString>,
    /// The key sealing provider credentials (`SWELL_SECRET_KEY`: 32 bytes, base64 or hex).
    pub secret_key: Option<secrets::SecretString>,
    /// A file holding that key; default `<data dir>/secret.key`, generated (0600) if absent.
    pub secret_key_file: Option<PathBuf>,
    /// Docker engines of the `docker` provider (`--docker-engine NAME=ENDPOINT`); the
    /// provider is available only when at least one is given.
    pub docker_engines: Vec<swell_providers::docker::EngineConfig>,
    /// The `openstack` provider's cloud (`--openstack` from the `OS_*` environment, or
    /// `--os-cloud NAME` from a clouds.yaml); the provider is available only when set.
    /// Its `owner` is replaced at start by this server's tag (its data directory), so
    /// that two servers never adopt each other's servers.
    pub openstack: Option<swell_providers::openstack::OpenStackConfig>,
    /// The `qemu` provider (`--qemu`): its images directory and accelerator; the
    /// provider is available only when set. Its `state_dir` and `owner` are replaced
    /// at start by `<data dir>/qemu` and this server's tag; without `hosts` that
    /// directory is its one host's (`localhost`).
    pub qemu: Option<swell_providers::qemu::QemuConfig>,
    /// The shortest `evaluation_interval`, `metrics_interval` and load balancer
    /// `health_check.interval` a group may have (`--min-interval`, default 1 s): a
    /// floor on the work one tenant's group can make the server do.
    pub min_interval: std::time::Duration,
    /// Peers whose `X-Forwarded-For` names the client (`--trusted-proxy CIDR_OR_IP`):
    /// rate limits and the audit log then use the address the proxy saw. Empty: the
    /// TCP peer is the client.
    pub trusted_proxies: Vec<auth::source::Cidr>,
    /// The URLs a group's `prometheus` metric source may name (`--allow-metric-url`);
    /// default: loopback hosts only.
    pub metric_urls: metric_urls::MetricUrlPolicy,
    /// Run process instances as this unprivileged user (`--instance-user`) instead of
    /// the server's; the server must run as root, and the user must exist.
    pub instance_user: Option<String>,
    /// Serve the API over TLS with this certificate and key (`--tls-cert`, `--tls-key`);
    /// `None`: plain HTTP.
    pub tls: Option<tls::TlsFiles>,
    /// The most open event streams (`GET /v1/groups/{name}/events/stream`) per tenant;
    /// one more is answered 429.
    pub max_event_streams: usize,
    /// Webhooks may name loopback, private and link-local addresses
    /// (`--webhook-allow-private`); by default they are refused (request forgery,
    /// see docs/security.md).
    pub webhook_allow_private: bool,
    /// A second listener serving only `GET /metrics` without a credential
    /// (`--metrics-listen`): every tenant's series, for the operator's Prometheus
    /// ([`exposition::scrape_router`]). `None`: Prometheus scrapes `/v1/metrics` with a
    /// token.
    pub metrics_listen: Option<SocketAddr>,
}

impl Default for ServerConfig {
    /// `swell serve`'s defaults: the API on `127.0.0.1:7700`, SQLite in `./swell-data`,
    /// instances left running at exit, no Docker engine, no OpenStack cloud, intervals of
    /// at least 1 s.
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            data_dir: PathBuf::from("swell-data"),
            database_url: None,
            stop_instances_on_exit: false,
            admin_password: None,
            secret_key: None,
            secret_key_file: None,
            docker_engines: Vec::new(),
            openstack: None,
            qemu: None,
            min_interval: service::DEFAULT_MIN_INTERVAL,
            trusted_proxies: Vec::new(),
            metric_urls: metric_urls::MetricUrlPolicy::default(),
            instance_user: None,
            tls: None,
            max_event_streams: event_stream::DEFAULT_MAX_EVENT_STREAMS,
            webhook_allow_private: false,
            metrics_listen: None,
        }
    }
}

/// What can stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory cannot be used.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another server holds the data directory (or its lock cannot be taken).
    #[error("{0}")]
    DataDirLock(#[from] data_dir_lock::DataDirLockError),
    /// The store cannot be opened or recovered.
    #[error("store: {0}")]
    Store(#[from] swell_store::StoreError),
    /// Another server manages the PostgreSQL database (or its lock cannot be taken).
    #[error("{0}")]
    ServerLock(#[from] LockError),
    /// The secret key cannot be read or created.
    #[error("secret key: {0}")]
    Secret(#[from] secrets::SecretError),
    /// The bootstrap admin cannot be created.
    #[error("bootstrap admin: {0}")]
    Bootstrap(#[from] service::ServiceError),
    /// The docker provider's configuration is invalid.
    #[error("docker provider: {0}")]
    Docker(#[from] swell_providers::docker::DockerConfigError),
    /// The instance user cannot be used.
    #[error("--instance-user: {0}")]
    InstanceUser(#[from] InstanceUserError),
    /// The qemu provider's hosts are invalid or their state directories cannot be made.
    #[error("qemu provider: {0}")]
    Qemu(#[from] swell_providers::ProviderError),
    /// The openstack provider's configuration is invalid.
    #[error("openstack provider: {0}")]
    OpenStack(#[from] swell_providers::openstack::OpenStackConfigError),
    /// The TLS certificate or key cannot be used.
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    /// The scrape listener's address cannot be bound.
    #[error("cannot listen on {addr} (--metrics-listen): {source}")]
    MetricsListen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The API address cannot be bound.
    #[error(
        "cannot listen on {addr}: {source} (is another swell running? use --listen to pick another address)"
    )]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A running server.
pub struct Server {
    service: Arc<Service>,
    controller: Arc<Controller>,
    addr: SocketAddr,
    tls: bool,
    stop: CancellationToken,
    http: tokio::task::JoinHandle<()>,
    /// The webhook notifier ([`notify::Notifier`]), stopped with `stop`.
    notifier: tokio::task::JoinHandle<()>,
    /// The scrape listener's address and task, when configured.
    metrics: Option<(SocketAddr, tokio::task::JoinHandle<()>)>,
    generated_admin_password: Option<secrets::SecretString>,
    /// Keeps the PostgreSQL server lock while this server runs on a PostgreSQL store.
    lock_keeper: Option<LockKeeper>,
    /// The data directory's lock: one server per data directory. Dropped last.
    _data_dir_lock: data_dir_lock::DataDirLock,
}

/// How often a server on PostgreSQL checks that the session holding its server lock is
/// alive (a database restart or a network cut ends it, and PostgreSQL releases the lock).
pub const LOCK_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// The task that holds the server lock and watches its session.
struct LockKeeper {
    /// Set to why, when the lock was lost and could not be taken again.
    lost: tokio::sync::watch::Receiver<Option<String>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LockKeeper {
    // A server dropped without `shutdown` still lets the lock go.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Holds `lock` until `stop`; every [`LOCK_CHECK_INTERVAL`] checks its session, and if
/// the session is gone takes the lock again on a new one. If that fails (another server
/// took it, or the database cannot be reached) it reports the loss and ends: a server
/// that cannot show it holds the lock must stop managing groups (fail-stop), since
/// another may have started on the database.
async fn keep_lock(
    store: PgStore,
    mut lock: ServerLock,
    stop: CancellationToken,
    lost: tokio::sync::watch::Sender<Option<String>>,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                if let Err(e) = lock.release().await {
                    // The session ends with the process anyway, which releases the lock.
                    tracing::warn!("releasing the PostgreSQL server lock: {e}");
                }
                return;
            }
            _ = tokio::time::sleep(LOCK_CHECK_INTERVAL) => {}
        }
        // A ping that hangs (a silent network cut) counts as a lost session.
        let alive = tokio::time::timeout(LOCK_CHECK_INTERVAL, lock.is_held())
            .await
            .unwrap_or(false);
        if alive {
            continue;
        }
        match store.lock_server().await {
            Ok(again) => {
                tracing::warn!(
                    "the PostgreSQL session holding the server lock ended; took the lock again"
                );
                lock = again;
            }
            Err(e) => {
                tracing::error!("lost the PostgreSQL server lock: {e}");
                let _ = lost.send(Some(e.to_string()));
                return;
            }
        }
    }
}

impl Server {
    /// Opens the store, recovers what a previous run left, starts the workers and the API.
    pub async fn start(config: ServerConfig) -> Result<Server, StartError> {
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|source| StartError::DataDir {
            path: data_dir.clone(),
            source,
        })?;
        let data_dir = std::fs::canonicalize(&data_dir).map_err(|source| StartError::DataDir {
            path: data_dir.clone(),
            source,
        })?;
        // Before the store is opened or any instance adopted: a second server on this
        // directory would take over the first one's instances.
        let data_dir_lock = data_dir_lock::DataDirLock::acquire(&data_dir)?;
        let (store, lock_keeper): (Arc<dyn Store>, _) = match &config.database_url {
            None => (
                Arc::new(SqliteStore::open(&data_dir.join("swell.db")).await?),
                None,
            ),
            Some(url) => {
                let pg = PgStore::connect(url.expose()).await?;
                // Before anything reads a group: the controller cannot share groups with
                // another server yet, so a second one must not start on this database.
                let lock = pg.lock_server().await?;
                tracing::info!(database = pg.display_url(), "store: PostgreSQL");
                let (lost_tx, lost) = tokio::sync::watch::channel(None);
                let stop = CancellationToken::new();
                let task = tokio::spawn(keep_lock(pg.clone(), lock, stop.clone(), lost_tx));
                (
                    Arc::new(pg) as Arc<dyn Store>,
                    Some(LockKeeper { lost, stop, task }),
                )
            }
        };
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
        let mut process_config =
            ProcessConfig::new(data_dir.join("instances"), owner_tag(&data_dir));
        process_config.records_dir = data_dir.join("process-records");
        if let Some(name) = &config.instance_user {
            let user = InstanceUser::lookup(name)?;
            let instances = &process_config.instances_dir;
            std::fs::create_dir_all(instances).map_err(|source| StartError::DataDir {
                path: instances.clone(),
                source,
            })?;
            confine_data_dir(&data_dir)?;
            user.check_reach(instances)?;
            tracing::info!(user = %user.name, uid = user.uid, gid = user.gid, "process instances run as the instance user");
            process_config.instance_user = Some(user);
        }
        // The built-in definitions (named after their kind, tagged with the server's
        // tag as before), then the stored ones: all before recovery adopts instances.
        let providers = ProviderRegistry::new(RegistryContext {
            owner: owner_tag(&data_dir),
            process: process_config.clone(),
        });
        let process = ProcessProvider::new(process_config);
        providers.insert_builtin(
            process.name().to_string(),
            Arc::new(process) as Arc<dyn Provider>,
        );
        if !config.docker_engines.is_empty() {
            let docker = DockerProvider::new(DockerConfig::new(
                owner_tag(&data_dir),
                config.docker_engines.clone(),
            ))?;
            providers.insert_builtin(
                docker.name().to_string(),
                Arc::new(docker) as Arc<dyn Provider>,
            );
        }
        if let Some(mut os) = config.openstack.clone() {
            os.owner = owner_tag(&data_dir);
            let openstack = OpenStackProvider::new(os)?;
            providers.insert_builtin(
                openstack.name().to_string(),
                Arc::new(openstack) as Arc<dyn Provider>,
            );
        }
        if let Some(mut qemu) = config.qemu.clone() {
            qemu.state_dir = data_dir.join("qemu");
            qemu.owner = owner_tag(&data_dir);
            let qemu = swell_providers::qemu::hosts::QemuHostsProvider::new(qemu)?;
            // Probed now, so that the log says at start which accelerator VMs get.
            qemu.accel().await;
            providers.insert_builtin(qemu.name().to_string(), Arc::new(qemu) as Arc<dyn Provider>);
        }
        let key = secrets::SecretKey::load_or_create(
            &data_dir,
            config.secret_key.as_ref(),
            config.secret_key_file.as_deref(),
        )?;
        providers.load_stored(store.as_ref(), &key).await?;
        let controller = Controller::with_registry(
            store.clone(),
            providers,
            clock.clone(),
            ControllerOptions {
                stop_instances_on_exit: config.stop_instances_on_exit,
                known_hosts_dir: Some(data_dir.join("known_hosts")),
                ssh_keys_dir: Some(data_dir.join("ssh-keys")),
                ..ControllerOptions::default()
            },
        );
        // Before anything binds or starts: a bad certificate is a start error.
        let tls_config = config.tls.as_ref().map(tls::server_config).transpose()?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => {
                let bound = async {
                    let l = tokio::net::TcpListener::bind(addr).await?;
                    let local = l.local_addr()?;
                    Ok::<_, std::io::Error>((l, local))
                };
                Some(
                    bound
                        .await
                        .map_err(|source| StartError::MetricsListen { addr, source })?,
                )
            }
            None => None,
        };
        controller.start().await?;
        let stop = CancellationToken::new();
        let notifier = Arc::new(notify::Notifier::new(
            store.clone(),
            key.clone(),
            clock.clone(),
            config.webhook_allow_private,
        ))
        .spawn(stop.clone());
        let service = Arc::new(
            Service::new(store, controller.clone(), clock)
                .with_webhook_allow_private(config.webhook_allow_private)
                .with_shutdown(stop.clone())
                .with_max_event_streams(config.max_event_streams)
                .with_secret_key(key)
                .with_min_interval(config.min_interval)
                .with_metric_url_policy(config.metric_urls.clone())
                .with_auth_options(auth::AuthOptions {
                    trusted_proxies: config.trusted_proxies.clone(),
                    ..auth::AuthOptions::default()
                }),
        );
        let generated_admin_password = service
            .bootstrap(config.admin_password.as_ref().map(|p| p.expose()))
            .await?
            .map(secrets::SecretString::new);
        let router = http::router(service.clone());
        let stopped = stop.clone();
        let http = match tls_config {
            None => {
                let app = router.into_make_service_with_connect_info::<SocketAddr>();
                tokio::spawn(async move {
                    let serve = axum::serve(listener, app)
                        .with_graceful_shutdown(async move { stopped.cancelled().await });
                    if let Err(e) = serve.await {
                        tracing::error!("API server: {e}");
                    }
                })
            }
            Some(tls_config) => {
                let listener = tls::TlsListener::new(listener, tls_config).map_err(|source| {
                    StartError::Listen {
                        addr: config.listen,
                        source,
                    }
                })?;
                let app = router
                    .layer(axum::middleware::from_fn(tls::peer_as_socket_addr))
                    .into_make_service_with_connect_info::<tls::TlsPeer>();
                tokio::spawn(async move {
                    let serve = axum::serve(listener, app)
                        .with_graceful_shutdown(async move { stopped.cancelled().await });
                    if let Err(e) = serve.await {
                        tracing::error!("API server: {e}");
                    }
                })
            }
        };
        let metrics = metrics_listener.map(|(listener, metrics_addr)| {
            let app = exposition::scrape_router(service.clone());
            let stopped = stop.clone();
            let task = tokio::spawn(async move {
                let serve = axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stopped.cancelled().await });
                if let Err(e) = serve.await {
                    tracing::error!("metrics listener: {e}");
                }
            });
            tracing::info!(%metrics_addr, "serving Prometheus metrics at /metrics");
            (metrics_addr, task)
        });
        tracing::info!(%addr, tls = config.tls.is_some(), data_dir = %data_dir.display(), "swell serving");
        Ok(Server {
            service,
            controller,
            addr,
            tls: config.tls.is_some(),
            stop,
            http,
            notifier,
            metrics,
            generated_admin_password,
            lock_keeper,
            _data_dir_lock: data_dir_lock,
        })
    }

    /// The bootstrap admin's password when this start created the admin without one
    /// given: `swell serve` prints it once.
    pub fn generated_admin_password(&self) -> Option<&secrets::SecretString> {
        self.generated_admin_password.as_ref()
    }

    /// The API's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API's base URL: `https://ADDR` with TLS, else `http://ADDR`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The scrape listener's address (`--metrics-listen`), when configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(addr, _)| *addr)
    }

    /// The internal API.
    pub fn service(&self) -> Arc<Service> {
        self.service.clone()
    }

    /// Stops the API and the workers; instances keep running unless configured otherwise.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.http.await;
        let _ = self.notifier.await;
        if let Some((_, task)) = self.metrics {
            let _ = task.await;
        }
        self.controller.shutdown().await;
        if let Some(mut keeper) = self.lock_keeper {
            keeper.stop.cancel();
            let _ = (&mut keeper.task).await;
        }
    }

    /// Resolves, with the reason, if this server lost its PostgreSQL server lock and
    /// could not take it again (another server may now manage the database's groups):
    /// `swell serve` then stops. Never resolves on SQLite.
    pub async fn lock_lost(&self) -> String {
        let Some(keeper) = &self.lock_keeper else {
            return std::future::pending().await;
        };
        let mut lost = keeper.lost.clone();
        match lost.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            // The keeper ended without a loss: it was stopped, so nothing is lost.
            Err(_) => std::future::pending().await,
        }
    }
}

/// With an instance user, the data directory is only *searchable* by others (so the
/// instance user reaches `instances/<id>/`), and what it holds besides `instances/` is
/// the server's alone: the store's files `0600`, its directories `0700`. (SQLite gives
/// a new `-wal`/`-shm` file the database file's mode.)
fn confine_data_dir(data_dir: &std::path::Path) -> Result<(), StartError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| StartError::DataDir { path, source }
    };
    let mode = std::fs::metadata(data_dir)
        .map_err(io(data_dir))?
        .permissions()
        .mode();
    let searchable_only = (mode & 0o7700) | 0o011;
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(searchable_only))
        .map_err(io(data_dir))?;
    for entry in std::fs::read_dir(data_dir).map_err(io(data_dir))? {
        let entry = entry.map_err(io(data_dir))?;
        let path = entry.path();
        if entry.file_name() == "instances" {
            continue;
        }
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let private = if kind.is_dir() {
            0o700
        } else if kind.is_file() {
            0o600
        } else {
            continue;
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(private))
            .map_err(io(&path))?;
    }
    // Made later by the controller; private from the start.
    for dir in ["known_hosts", "ssh-keys", "process-records"] {
        let path = data_dir.join(dir);
        std::fs::create_dir_all(&path).map_err(io(&path))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))
            .map_err(io(&path))?;
    }
    Ok(())
}

/// The tag that marks this server's instances: its canonical data directory, so two
/// servers with different data directories never adopt each other's instances.
fn owner_tag(data_dir: &std::path::Path) -> String {
    data_dir.display().to_string()
}
