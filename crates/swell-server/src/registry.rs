//! The provider registry: every provider this server can run instances on, by name.
//!
//! Two sources fill it. The built-in definitions come from `swell serve`'s flags and
//! are named after their kind (`process`, always; `docker` with `--docker-engine`;
//! `openstack` with `--openstack`/`--os-cloud`; `qemu` with `--qemu`), so the Quickstart, the demo and
//! `examples/` work unchanged. The stored definitions are the ones an admin made with
//! `POST /v1/providers` (`docker-rack1`, `openstack-prod`): operator-wide ones, which a
//! tenant may use once granted by name, and tenant-private ones (a tenant's own
//! OpenStack project), which only that tenant sees. Adding or removing a definition
//! updates the registry at once; no restart.
//!
//! Each stored definition has its own ownership tag (`<server tag>#<name>`), stamped on
//! its instances, so that two definitions on one Docker engine or one OpenStack project
//! never adopt each other's instances at recovery; the built-ins keep the server's tag,
//! so instances started before definitions existed are still adopted.
//!
//! Whether a tenant may name an operator-wide definition (its grants) is checked in
//! [`crate::boundary`]; the registry only answers what exists and who can see it.

use async_trait::async_trait;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use swell_core::{ProviderKind, TenantId, ValidationError};
use swell_providers::docker::{DockerConfig, DockerProvider, EngineConfig, TlsConfig};
use swell_providers::openstack::{
    AppCredentialRef, AuthConfig, NameOrId, OpenStackConfig, OpenStackProvider, Secret,
};
use swell_providers::process::{ProcessConfig, ProcessProvider};
use swell_providers::qemu::QemuConfig;
use swell_providers::qemu::hosts::{QemuHost, QemuHostsProvider};
use swell_providers::{
    CreateRequest, InstanceMetrics, InstanceSize, Provider, ProviderCapacity, ProviderError,
    ProviderInstance,
};
use swell_store::ProviderRecord;

/// One provider the server can run instances on.
pub struct RegisteredProvider {
    /// Its name (what groups and grants name; also the instances' `provider`).
    pub name: String,
    /// Its kind.
    pub kind: ProviderKind,
    /// `Some(t)`: private to tenant `t`; `None`: operator-wide.
    pub tenant: Option<TenantId>,
    /// Configured by `swell serve`'s flags rather than stored.
    pub builtin: bool,
    /// The provider itself.
    pub provider: Arc<dyn Provider>,
}

impl RegisteredProvider {
    /// Whether `tenant` can see it: operator-wide ones are visible to all (using one
    /// still needs a grant), a private one only to its tenant.
    pub fn visible_to(&self, tenant: &TenantId) -> bool {
        self.tenant.as_ref().is_none_or(|t| t == tenant)
    }
}

/// What every definition built at run time shares with the built-ins: the server's
/// ownership tag and its process settings (instance directory, records, instance user).
#[derive(Debug, Clone)]
pub struct RegistryContext {
    /// The server's ownership tag (its data directory); a definition's is
    /// `<owner>#<name>`.
    pub owner: String,
    /// The built-in `process` provider's settings, which `process` definitions share
    /// (each with its own ownership tag).
    pub process: ProcessConfig,
}

/// Every provider of the server, by name; cheap to clone (one shared map).
#[derive(Clone)]
pub struct ProviderRegistry {
    providers: Arc<RwLock<BTreeMap<String, Arc<RegisteredProvider>>>>,
    context: Arc<RegistryContext>,
}

impl std::fmt::Debug for ProviderRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderRegistry")
            .field("names", &self.names())
            .finish()
    }
}

/// The ownership tag of stored definition `name` on a server tagged `owner`.
pub fn definition_owner(owner: &str, name: &str) -> String {
    format!("{owner}#{name}")
}

impl ProviderRegistry {
    /// An empty registry for a server with these settings.
    pub fn new(context: RegistryContext) -> Self {
        ProviderRegistry {
            providers: Arc::new(RwLock::new(BTreeMap::new())),
            context: Arc::new(context),
        }
    }

    /// A registry holding exactly `providers`, each a built-in under its key (for tests
    /// and embedders that build providers by hand).
    pub fn with_builtins(providers: impl IntoIterator<Item = (String, Arc<dyn Provider>)>) -> Self {
        let registry = ProviderRegistry::new(RegistryContext {
            owner: "swell".into(),
            process: ProcessConfig::new(std::env::temp_dir().join("swell-instances"), "swell"),
        });
        for (name, p) in providers {
            registry.insert_builtin(name, p);
        }
        registry
    }

    /// Adds a built-in provider under `name` (`process`, `docker`, `openstack`, or a
    /// test's; a name that is no kind counts as a `process` one).
    pub fn insert_builtin(&self, name: String, provider: Arc<dyn Provider>) {
        let kind = ProviderKind::builtin(&name).unwrap_or(ProviderKind::Process);
        self.put(RegisteredProvider {
            name,
            kind,
            tenant: None,
            builtin: true,
            provider,
        });
    }

    fn put(&self, entry: RegisteredProvider) {
        if let Ok(mut map) = self.providers.write() {
            map.insert(entry.name.clone(), Arc::new(entry));
        }
    }

    /// Builds the provider of a stored definition (`secret`: its opened credentials)
    /// and adds it, replacing one of the same name. Nothing changes when it cannot be
    /// built: the error names the field of the definition.
    pub fn define(
        &self,
        record: &ProviderRecord,
        secret: Option<&str>,
    ) -> Result<(), ValidationError> {
        let entry = self.build(record, secret)?;
        self.put(entry);
        Ok(())
    }

    /// Builds the provider of a definition without adding it (to check a definition
    /// before it is stored).
    pub fn build(
        &self,
        record: &ProviderRecord,
        secret: Option<&str>,
    ) -> Result<RegisteredProvider, ValidationError> {
        let owner = definition_owner(&self.context.owner, &record.name);
        let inner = build_provider(&self.context, record, secret, owner)?;
        Ok(RegisteredProvider {
            name: record.name.clone(),
            kind: record.kind,
            tenant: record.tenant.clone(),
            builtin: false,
            provider: Arc::new(Named {
                name: record.name.clone(),
                inner,
            }),
        })
    }

    /// Removes a stored definition's provider (a built-in stays).
    pub fn remove(&self, name: &str) {
        if let Ok(mut map) = self.providers.write()
            && map.get(name).is_some_and(|e| !e.builtin)
        {
            map.remove(name);
        }
    }

    /// Removes every definition private to `tenant` (the tenant was deleted).
    pub fn forget_tenant(&self, tenant: &TenantId) {
        if let Ok(mut map) = self.providers.write() {
            map.retain(|_, e| e.tenant.as_ref() != Some(tenant));
        }
    }

    /// The provider `name` as `tenant` sees it: a definition private to another
    /// tenant is absent. (Whether an operator-wide one is granted to the tenant is the
    /// boundary's check.)
    pub fn get(&self, tenant: &TenantId, name: &str) -> Option<Arc<dyn Provider>> {
        self.entry(name)
            .filter(|e| e.visible_to(tenant))
            .map(|e| e.provider.clone())
    }

    /// The registry's entry `name`, whoever it belongs to (admin views, grants).
    pub fn entry(&self, name: &str) -> Option<Arc<RegisteredProvider>> {
        self.providers.read().ok()?.get(name).cloned()
    }

    /// The kind of provider `name` as `tenant` sees it.
    pub fn kind(&self, tenant: &TenantId, name: &str) -> Option<ProviderKind> {
        self.entry(name)
            .filter(|e| e.visible_to(tenant))
            .map(|e| e.kind)
    }

    /// Every provider, by name (for recovery and the admin's listing).
    pub fn all(&self) -> Vec<Arc<RegisteredProvider>> {
        self.providers
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every provider's name.
    pub fn names(&self) -> Vec<String> {
        self.providers
            .read()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }
}

/// A `docker` definition's `config`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerDefinition {
    /// The engines (hosts), at least one.
    pub engines: Vec<DockerEngineDefinition>,
    /// Most processes one container may have (default 512).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<u32>,
}

/// One engine of a `docker` definition.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerEngineDefinition {
    /// The engine's name, unique within the definition (the instances' `host`).
    pub name: String,
    /// `unix:///var/run/docker.sock` or `tcp://host:2376` (which needs `tls`).
    pub endpoint: String,
    /// Client certificate files on the server's host, for a `tcp://` engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<DockerTlsDefinition>,
}

/// The client certificate files of a `tcp://` engine (paths on the server's host).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerTlsDefinition {
    /// The CA certificate (PEM).
    pub ca: PathBuf,
    /// The client certificate (PEM).
    pub cert: PathBuf,
    /// The client key (PEM).
    pub key: PathBuf,
}

/// An `openstack` definition's `config`; the secret (application-credential secret or
/// password) is the definition's `credentials`, sealed, never here.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenStackDefinition {
    /// Keystone's URL (`http://controller:5000/v3`).
    pub auth_url: String,
    /// An application credential, by id (the credentials are its secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_credential_id: Option<String>,
    /// An application credential, by name (with `user_name` or `user_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_credential_name: Option<String>,
    /// A user by name (password auth, or the owner of a named application credential).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    /// A user by id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The user's domain by name (default: the `default` domain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_domain_name: Option<String>,
    /// The project (password auth) by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_name: Option<String>,
    /// The project by id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// The project's domain by name (default: the `default` domain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_domain_name: Option<String>,
    /// The region whose endpoints are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The endpoint interface: `public` (default), `internal` or `admin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
}

/// A `qemu` definition's `config`: its hypervisor hosts and how VMs are placed on
/// them. Paths are on the server's host (only an admin defines providers), but an SSH
/// host's `state_dir` and `images_dir`, which are on that host.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QemuDefinition {
    /// The hosts, at least one, each with its own state directory.
    pub hosts: Vec<QemuHost>,
    /// Where the VM images are (default: `$SWELL_VM_IMAGES`, else
    /// `~/.cache/swell/vm-images`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images_dir: Option<PathBuf>,
    /// `auto` (default: KVM when the probe finds it works, else TCG), `kvm` or `tcg`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accel: Option<String>,
    /// vCPUs committable per physical vCPU (default 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_overcommit: Option<f64>,
    /// MiB committable per physical MiB (default 1.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_overcommit: Option<f64>,
    /// Hosts below this load (percent) are preferred (default 70).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefer_below_percent: Option<f64>,
    /// A host above this load (percent) is never chosen (default: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub never_above_percent: Option<f64>,
}

impl QemuDefinition {
    /// The provider configuration it describes, owned by `owner`.
    fn config(&self, owner: String) -> Result<QemuConfig, ValidationError> {
        if self.hosts.is_empty() {
            return Err(ValidationError::new(
                "config.hosts",
                "at least one host, e.g. {\"name\": \"rack1\", \"state_dir\": \"/srv/swell/rack1\"}",
            ));
        }
        let images = self
            .images_dir
            .clone()
            .unwrap_or_else(swell_providers::qemu::default_images_dir);
        // The first host's directory; each host has its own anyway.
        let mut config = QemuConfig::new(images, self.hosts[0].state_dir.clone(), owner);
        if let Some(a) = &self.accel {
            config.accel = a
                .parse()
                .map_err(|rule| ValidationError::new("config.accel", rule))?;
        }
        config.hosts = self.hosts.clone();
        let p = &mut config.placement;
        if let Some(v) = self.cpu_overcommit {
            p.overcommit.cpu = v;
        }
        if let Some(v) = self.memory_overcommit {
            p.overcommit.memory = v;
        }
        if let Some(v) = self.prefer_below_percent {
            p.prefer_below = v;
        }
        p.never_above = self.never_above_percent;
        swell_providers::qemu::hosts::validate(&config)
            .map_err(|e| ValidationError::new(format!("config.{}", e.field), e.rule))?;
        Ok(config)
    }
}

/// A `process` definition's `config`: nothing to set (`{}`); its instances run on the
/// server's host like the built-in `process` provider's, under their own ownership tag.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessDefinition {}

fn config_error(e: impl std::fmt::Display) -> ValidationError {
    ValidationError::new("config", e.to_string())
}

/// The definition's config, checked against its kind and returned in canonical form
/// (what is stored and shown).
pub fn canonical_config(
    kind: ProviderKind,
    config: &serde_json::Value,
) -> Result<serde_json::Value, ValidationError> {
    fn round<T: serde::de::DeserializeOwned + serde::Serialize>(
        v: &serde_json::Value,
    ) -> Result<serde_json::Value, ValidationError> {
        let parsed: T = serde_json::from_value(v.clone()).map_err(config_error)?;
        serde_json::to_value(parsed).map_err(config_error)
    }
    match kind {
        ProviderKind::Process => round::<ProcessDefinition>(config),
        ProviderKind::Docker => round::<DockerDefinition>(config),
        ProviderKind::Openstack => round::<OpenStackDefinition>(config),
        ProviderKind::Qemu => {
            let def: QemuDefinition =
                serde_json::from_value(config.clone()).map_err(config_error)?;
            def.config(String::new())?;
            serde_json::to_value(def).map_err(config_error)
        }
    }
}

/// Whether a definition of `kind` needs `credentials`.
pub fn needs_credentials(kind: ProviderKind) -> bool {
    kind == ProviderKind::Openstack
}

fn build_provider(
    context: &RegistryContext,
    record: &ProviderRecord,
    secret: Option<&str>,
    owner: String,
) -> Result<Arc<dyn Provider>, ValidationError> {
    match record.kind {
        ProviderKind::Process => {
            let _: ProcessDefinition =
                serde_json::from_value(record.config.clone()).map_err(config_error)?;
            let mut config = context.process.clone();
            config.owner = owner;
            Ok(Arc::new(ProcessProvider::new(config)))
        }
        ProviderKind::Docker => {
            let def: DockerDefinition =
                serde_json::from_value(record.config.clone()).map_err(config_error)?;
            if def.engines.is_empty() {
                return Err(ValidationError::new(
                    "config.engines",
                    "at least one engine, e.g. {\"name\": \"local\", \"endpoint\": \"unix:///var/run/docker.sock\"}",
                ));
            }
            let mut engines = Vec::with_capacity(def.engines.len());
            for (i, e) in def.engines.iter().enumerate() {
                let mut engine =
                    EngineConfig::for_endpoint(e.name.clone(), &e.endpoint).map_err(|err| {
                        ValidationError::new(format!("config.engines[{i}].endpoint"), err.rule)
                    })?;
                engine.tls = e.tls.as_ref().map(|t| TlsConfig {
                    ca: t.ca.clone(),
                    cert: t.cert.clone(),
                    key: t.key.clone(),
                });
                engines.push(engine);
            }
            let mut config = DockerConfig::new(owner, engines);
            if let Some(p) = def.pids_limit {
                config.pids_limit = p;
            }
            let provider = DockerProvider::new(config).map_err(|e| {
                ValidationError::new(format!("config.{}", e.field.replace(' ', "")), e.rule)
            })?;
            Ok(Arc::new(provider))
        }
        ProviderKind::Qemu => {
            let def: QemuDefinition =
                serde_json::from_value(record.config.clone()).map_err(config_error)?;
            let provider = QemuHostsProvider::new(def.config(owner)?)
                .map_err(|e| ValidationError::new("config.hosts", e.to_string()))?;
            Ok(Arc::new(provider))
        }
        ProviderKind::Openstack => {
            let def: OpenStackDefinition =
                serde_json::from_value(record.config.clone()).map_err(config_error)?;
            let secret = secret.filter(|s| !s.is_empty()).ok_or_else(|| {
                ValidationError::new(
                    "credentials",
                    "an openstack provider needs its secret: the application credential's secret, or the user's password",
                )
            })?;
            let auth = openstack_auth(&def, secret)?;
            let mut config = OpenStackConfig::new(owner, auth);
            config.region = def.region.clone();
            if let Some(i) = &def.interface {
                config.interface = i.clone();
            }
            let provider = OpenStackProvider::new(config)
                .map_err(|e| ValidationError::new("config", e.to_string()))?;
            Ok(Arc::new(provider))
        }
    }
}

fn openstack_auth(def: &OpenStackDefinition, secret: &str) -> Result<AuthConfig, ValidationError> {
    let domain = |name: &Option<String>| {
        name.clone()
            .map_or_else(NameOrId::default_domain, NameOrId::Name)
    };
    let user = || match (&def.user_id, &def.user_name) {
        (Some(id), _) => Ok(NameOrId::Id(id.clone())),
        (None, Some(name)) => Ok(NameOrId::Name(name.clone())),
        (None, None) => Err(ValidationError::new(
            "config.user_name",
            "a user (`user_name` or `user_id`) is needed without an application credential id",
        )),
    };
    if let Some(id) = &def.application_credential_id {
        return Ok(AuthConfig::ApplicationCredential {
            auth_url: def.auth_url.clone(),
            credential: AppCredentialRef::Id(id.clone()),
            secret: Secret::new(secret),
        });
    }
    if let Some(name) = &def.application_credential_name {
        return Ok(AuthConfig::ApplicationCredential {
            auth_url: def.auth_url.clone(),
            credential: AppCredentialRef::Name {
                name: name.clone(),
                user: user()?,
                user_domain: domain(&def.user_domain_name),
            },
            secret: Secret::new(secret),
        });
    }
    let project = match (&def.project_id, &def.project_name) {
        (Some(id), _) => NameOrId::Id(id.clone()),
        (None, Some(name)) => NameOrId::Name(name.clone()),
        (None, None) => {
            return Err(ValidationError::new(
                "config.project_name",
                "password auth needs a project (`project_name` or `project_id`); or give `application_credential_id`",
            ));
        }
    };
    Ok(AuthConfig::Password {
        auth_url: def.auth_url.clone(),
        user: user()?,
        password: Secret::new(secret),
        user_domain: domain(&def.user_domain_name),
        project,
        project_domain: domain(&def.project_domain_name),
    })
}

/// A provider under its definition's name: the instances' `provider`, the backoff
/// keys and every message use the name the group gave, not the kind's.
struct Named {
    name: String,
    inner: Arc<dyn Provider>,
}

#[async_trait]
impl Provider for Named {
    fn name(&self) -> &str {
        &self.name
    }

    async fn create(&self, request: &CreateRequest) -> Result<ProviderInstance, ProviderError> {
        self.inner.create(request).await
    }

    async fn delete(
        &self,
        id: &swell_core::InstanceId,
        grace: Duration,
    ) -> Result<(), ProviderError> {
        self.inner.delete(id, grace).await
    }

    async fn pause(&self, id: &swell_core::InstanceId) -> Result<(), ProviderError> {
        self.inner.pause(id).await
    }

    async fn resume(&self, id: &swell_core::InstanceId) -> Result<(), ProviderError> {
        self.inner.resume(id).await
    }

    async fn list(&self) -> Result<Vec<ProviderInstance>, ProviderError> {
        self.inner.list().await
    }

    async fn metrics(
        &self,
        ids: &[swell_core::InstanceId],
    ) -> Result<Vec<(swell_core::InstanceId, InstanceMetrics)>, ProviderError> {
        self.inner.metrics(ids).await
    }

    async fn observe(&self) -> Result<swell_providers::Observation, ProviderError> {
        self.inner.observe().await
    }

    async fn drain(
        &self,
        id: &swell_core::InstanceId,
        drain_timeout: Duration,
    ) -> Result<(), ProviderError> {
        self.inner.drain(id, drain_timeout).await
    }

    async fn capacity(&self) -> Result<Option<ProviderCapacity>, ProviderError> {
        self.inner.capacity().await
    }

    async fn instance_size(
        &self,
        template: &swell_core::Template,
    ) -> Result<Option<InstanceSize>, ProviderError> {
        self.inner.instance_size(template).await
    }

    async fn group_deleted(&self, tenant: &TenantId, group: &str) -> Result<(), ProviderError> {
        self.inner.group_deleted(tenant, group).await
    }

    async fn hosts(
        &self,
    ) -> Result<Option<Vec<swell_providers::qemu::hosts::HostStatus>>, ProviderError> {
        self.inner.hosts().await
    }
}

// ---- stored definitions: loading, sealing, and the service's calls ----

/// What a definition's credentials are sealed as: its tenant (`""` for an operator-wide
/// one) and `provider:<name>`, so a sealed value copied to another definition's row, or
/// to a tenant's credential, does not open.
fn seal_binding(record: &ProviderRecord) -> (String, String) {
    (
        record
            .tenant
            .as_ref()
            .map_or_else(String::new, |t| t.to_string()),
        format!("provider:{}", record.name),
    )
}

fn open_credentials(
    key: &crate::secrets::SecretKey,
    record: &ProviderRecord,
) -> Result<Option<crate::secrets::SecretString>, crate::secrets::SecretError> {
    let Some(sealed) = &record.credentials else {
        return Ok(None);
    };
    let (tenant, name) = seal_binding(record);
    let plain = key.open(&tenant, &name, sealed)?;
    Ok(Some(crate::secrets::SecretString::new(
        String::from_utf8_lossy(&plain).into_owned(),
    )))
}

impl ProviderRegistry {
    /// Adds every stored definition (at start, before recovery, so that their
    /// instances are adopted). One that cannot be built (its engine's certificates
    /// gone, a key that no longer opens its credentials) is logged and left out; the
    /// server still starts, and its groups report the provider unknown.
    pub async fn load_stored(
        &self,
        store: &dyn swell_store::Store,
        key: &crate::secrets::SecretKey,
    ) -> Result<(), swell_store::StoreError> {
        for record in store.list_providers().await? {
            let secret = match open_credentials(key, &record) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(provider = %record.name, "cannot open its credentials: {e}");
                    continue;
                }
            };
            match self.define(&record, secret.as_ref().map(|s| s.expose())) {
                Ok(()) => {
                    tracing::info!(provider = %record.name, kind = %record.kind, "provider definition loaded")
                }
                Err(e) => {
                    tracing::error!(provider = %record.name, "provider definition left out: {e}")
                }
            }
        }
        Ok(())
    }

    fn insert(&self, entry: RegisteredProvider) {
        self.put(entry);
    }
}

use crate::auth::Principal;
use crate::service::{Result as ServiceResult, Service, ServiceError};
use swell_api as api;
use swell_core::ProviderName;

/// Held across a definition's checks and its store write, so that two calls on one
/// definition (or a delete and a grant) cannot interleave. (Process-wide: one server
/// per store; these are rare admin calls.)
static DEFINITIONS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn view(entry: &RegisteredProvider, record: Option<&ProviderRecord>, admin: bool) -> api::Provider {
    api::Provider {
        name: entry.name.clone(),
        kind: entry.kind.to_string(),
        tenant: entry.tenant.as_ref().map(ToString::to_string),
        builtin: entry.builtin,
        config: record.filter(|_| admin).map(|r| r.config.clone()),
        credentials: record
            .and_then(|r| r.credentials.as_ref())
            .map(|_| "set".to_string()),
        created_at: record.map(|r| crate::clock::rfc3339(r.created_at)),
        updated_at: record.map(|r| crate::clock::rfc3339(r.updated_at)),
    }
}

fn reserved(name: &str) -> bool {
    ProviderKind::builtin(name).is_some()
}

impl Service {
    /// The server's provider registry.
    pub fn registry(&self) -> &ProviderRegistry {
        self.controller().registry()
    }

    /// Whether `p` may see provider `entry`: an admin every one; anyone else the ones
    /// its tenant may use (granted by name, or private to it).
    async fn may_see(&self, p: &Principal, entry: &RegisteredProvider) -> ServiceResult<bool> {
        if p.admin {
            return Ok(true);
        }
        if entry.tenant.is_some() {
            return Ok(entry.visible_to(&p.tenant));
        }
        let grants = self
            .store
            .get_tenant(&p.tenant)
            .await?
            .map(|t| t.grants)
            .unwrap_or_default();
        Ok(grants.allows_provider(&entry.name))
    }

    async fn provider_view(
        &self,
        p: &Principal,
        entry: &RegisteredProvider,
    ) -> ServiceResult<api::Provider> {
        let record = if entry.builtin {
            None
        } else {
            self.store.get_provider(&entry.name).await?
        };
        Ok(view(entry, record.as_ref(), p.admin))
    }

    /// The providers `p` may see, by name.
    pub async fn list_providers(&self, p: &Principal) -> ServiceResult<Vec<api::Provider>> {
        let mut out = Vec::new();
        for entry in self.registry().all() {
            if self.may_see(p, &entry).await? {
                out.push(self.provider_view(p, &entry).await?);
            }
        }
        Ok(out)
    }

    /// One provider; 404 when `p` may not see it (a tenant cannot tell another
    /// tenant's private definition from none).
    pub async fn get_provider(&self, p: &Principal, name: &str) -> ServiceResult<api::Provider> {
        ProviderName::new(name)?;
        let missing = || ServiceError::NotFound {
            kind: "provider",
            name: name.to_string(),
        };
        let entry = self.registry().entry(name).ok_or_else(missing)?;
        if !self.may_see(p, &entry).await? {
            return Err(missing());
        }
        self.provider_view(p, &entry).await
    }

    /// The hypervisor hosts of provider `name` (admins: they show every tenant's VMs
    /// and the hosts' SSH targets), read now; 404 for an unknown provider, 409 for
    /// one without hosts (not `qemu`).
    pub async fn provider_hosts(&self, name: &str) -> ServiceResult<api::ProviderHostList> {
        ProviderName::new(name)?;
        let entry = self
            .registry()
            .entry(name)
            .ok_or_else(|| ServiceError::NotFound {
                kind: "provider",
                name: name.to_string(),
            })?;
        let hosts = entry
            .provider
            .hosts()
            .await
            .map_err(ServiceError::Provider)?
            .ok_or_else(|| {
                ServiceError::State(format!(
                    "provider `{name}` ({}) has no hypervisor hosts: only a qemu provider has",
                    entry.kind
                ))
            })?;
        Ok(api::ProviderHostList {
            provider: name.to_string(),
            hosts: hosts.iter().map(host_view).collect(),
        })
    }

    /// Checks a tenant's granted provider names (field `providers[i]`): each a
    /// built-in name (granting one this server does not configure grants nothing until
    /// it does) or an operator-wide definition; a definition private to a tenant is
    /// never granted to another.
    pub(crate) fn check_grantable(&self, providers: &[String]) -> ServiceResult<()> {
        for (i, name) in providers.iter().enumerate() {
            if reserved(name) {
                continue;
            }
            let field = format!("providers[{i}]");
            match self.registry().entry(name) {
                Some(e) if e.tenant.is_none() => {}
                Some(e) => {
                    return Err(ValidationError::new(
                        field,
                        format!(
                            "provider `{name}` is private to tenant `{}` and cannot be granted",
                            e.tenant
                                .as_ref()
                                .map(ToString::to_string)
                                .unwrap_or_default()
                        ),
                    )
                    .into());
                }
                None => {
                    return Err(ValidationError::new(
                        field,
                        format!(
                            "unknown provider `{name}` (defined: {}); an admin defines one with `swell provider create`",
                            self.registry().names().join(", ")
                        ),
                    )
                    .into());
                }
            }
        }
        Ok(())
    }

    fn seal_credentials(
        &self,
        record: &ProviderRecord,
        secret: &str,
    ) -> ServiceResult<swell_store::Sealed> {
        let (tenant, name) = seal_binding(record);
        Ok(self.secret_key()?.seal(&tenant, &name, secret.as_bytes())?)
    }

    /// Defines a provider (admins only): checks the whole definition and builds its
    /// provider before anything is stored; seals the credentials.
    pub async fn create_provider(&self, req: api::CreateProvider) -> ServiceResult<api::Provider> {
        let _one = DEFINITIONS.lock().await;
        let name = ProviderName::new(req.name.clone())?;
        if reserved(name.as_str()) {
            return Err(ValidationError::new(
                "name",
                format!(
                    "`{name}` is the built-in provider's name (configured by `swell serve` flags); pick another"
                ),
            )
            .into());
        }
        let kind: ProviderKind = req
            .kind
            .parse()
            .map_err(|rule| ValidationError::new("kind", rule))?;
        let tenant = match &req.tenant {
            None => None,
            Some(t) => {
                let id = TenantId::new(t.as_str())
                    .map_err(|e| ValidationError::new("tenant", e.rule))?;
                if self.store.get_tenant(&id).await?.is_none() {
                    return Err(ServiceError::Unknown(ValidationError::new(
                        "tenant",
                        format!("no tenant `{id}`"),
                    )));
                }
                Some(id)
            }
        };
        let config = canonical_config(kind, req.config.as_ref().unwrap_or(&serde_json::json!({})))?;
        let secret = req.credentials.as_deref();
        check_credentials(kind, secret)?;
        if self.registry().entry(name.as_str()).is_some()
            || self.store.get_provider(name.as_str()).await?.is_some()
        {
            return Err(ServiceError::Conflict {
                kind: "provider",
                name: name.to_string(),
            });
        }
        let now = self.now();
        let mut record = ProviderRecord {
            name: name.to_string(),
            kind,
            config,
            tenant,
            credentials: None,
            created_at: now,
            updated_at: now,
        };
        let entry = self.registry().build(&record, secret)?;
        if let Some(secret) = secret {
            record.credentials = Some(self.seal_credentials(&record, secret)?);
        }
        let stored = self.store.create_provider(&record).await?;
        self.registry().insert(entry);
        tracing::info!(provider = %stored.name, kind = %stored.kind, tenant = ?stored.tenant.as_ref().map(|t| t.to_string()), "provider defined");
        let entry = self
            .registry()
            .entry(&stored.name)
            .ok_or_else(|| ServiceError::NotFound {
                kind: "provider",
                name: stored.name.clone(),
            })?;
        Ok(view(&entry, Some(&stored), true))
    }

    /// Replaces a definition's config and (when given) credentials (admins only); its
    /// groups use the rebuilt provider from their next pass, and keep their instances
    /// (the ownership tag does not change).
    pub async fn update_provider(
        &self,
        name: &str,
        req: api::UpdateProvider,
    ) -> ServiceResult<api::Provider> {
        let _one = DEFINITIONS.lock().await;
        let mut record = self.stored_definition(name).await?;
        if let Some(c) = &req.config {
            record.config = canonical_config(record.kind, c)?;
        }
        let kept;
        let secret = match req.credentials.as_deref() {
            Some(s) => {
                check_credentials(record.kind, Some(s))?;
                Some(s)
            }
            None => {
                kept = open_credentials(self.secret_key()?, &record)?;
                kept.as_ref().map(|s| s.expose())
            }
        };
        let entry = self.registry().build(&record, secret)?;
        if let Some(s) = req.credentials.as_deref() {
            record.credentials = Some(self.seal_credentials(&record, s)?);
        }
        record.updated_at = self.now();
        let stored = self.store.update_provider(&record).await?;
        self.registry().insert(entry);
        tracing::info!(provider = %stored.name, "provider definition updated");
        let entry = self
            .registry()
            .entry(name)
            .ok_or_else(|| ServiceError::NotFound {
                kind: "provider",
                name: name.to_string(),
            })?;
        Ok(view(&entry, Some(&stored), true))
    }

    /// Removes a definition (admins only): 409 while any group names it (their count,
    /// never their names or tenants); its name leaves every tenant's grants, so a later
    /// definition of the same name is granted to nobody.
    pub async fn delete_provider(&self, name: &str) -> ServiceResult<()> {
        let _one = DEFINITIONS.lock().await;
        // Group creates and updates hold it from their checks to their store write.
        let _groups = self.listen_lock.lock().await;
        let record = self.stored_definition(name).await?;
        let using = self
            .store
            .list_all_groups()
            .await?
            .iter()
            .filter(|g| g.spec.providers().any(|p| p == name))
            .count();
        if using > 0 {
            return Err(ServiceError::State(format!(
                "provider `{name}` is used by {using} group(s); delete them (or their use of it) first"
            )));
        }
        self.store.delete_provider(&record.name).await?;
        self.registry().remove(&record.name);
        for mut t in self.store.list_tenants().await? {
            if t.grants.allows_provider(name) {
                t.grants.providers.retain(|p| p != name);
                t.updated_at = self.now();
                self.store.update_tenant(&t).await?;
            }
        }
        tracing::info!(provider = %name, "provider definition deleted");
        Ok(())
    }

    /// The stored definition `name`; a built-in is 409 (the server's flags configure
    /// it), an absent one 404.
    async fn stored_definition(&self, name: &str) -> ServiceResult<ProviderRecord> {
        ProviderName::new(name)?;
        if self.registry().entry(name).is_some_and(|e| e.builtin) {
            return Err(ServiceError::State(format!(
                "`{name}` is a built-in provider, configured by `swell serve` flags; it cannot be changed or deleted through the API"
            )));
        }
        self.store
            .get_provider(name)
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                kind: "provider",
                name: name.to_string(),
            })
    }
}

/// Most bytes of a definition's credentials.
pub const MAX_CREDENTIALS: usize = 4096;

fn check_credentials(kind: ProviderKind, secret: Option<&str>) -> Result<(), ValidationError> {
    match secret {
        Some(_) if !needs_credentials(kind) => Err(ValidationError::new(
            "credentials",
            format!("a {kind} provider takes no credentials"),
        )),
        Some(s) if s.is_empty() || s.len() > MAX_CREDENTIALS => Err(ValidationError::new(
            "credentials",
            format!("must be 1 to {MAX_CREDENTIALS} bytes"),
        )),
        _ => Ok(()),
    }
}

/// A host as the API shows it (a non-finite load, from a host without capacity, is
/// shown as 100 %).
pub(crate) fn host_view(h: &swell_providers::qemu::hosts::HostStatus) -> api::ProviderHost {
    api::ProviderHost {
        name: h.name.clone(),
        ssh: h.ssh.clone(),
        up: h.up,
        vms: h.vms,
        vcpus: h.load.capacity.vcpus,
        memory_mb: h.load.capacity.memory_mb,
        vcpus_allocated: h.load.allocated.vcpus,
        memory_mb_allocated: h.load.allocated.memory_mb,
        cpu_used: h.load.cpu_used,
        load_percent: if h.load_percent.is_finite() {
            h.load_percent
        } else {
            100.0
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use swell_core::Timestamp;

    fn registry(dir: &std::path::Path) -> ProviderRegistry {
        let mut process = ProcessConfig::new(dir.join("instances"), "/srv/swell");
        process.cgroups = false;
        ProviderRegistry::new(RegistryContext {
            owner: "/srv/swell".into(),
            process,
        })
    }

    fn record(name: &str, kind: ProviderKind, tenant: Option<&str>) -> ProviderRecord {
        ProviderRecord {
            name: name.into(),
            kind,
            config: serde_json::json!({}),
            tenant: tenant.map(|t| TenantId::new(t).unwrap()),
            credentials: None,
            created_at: Timestamp::from_millis(1),
            updated_at: Timestamp::from_millis(1),
        }
    }

    /// A private definition is visible to its tenant only; an operator-wide one to
    /// every tenant; a removed one to nobody; a stored definition carries its own name.
    #[test]
    fn visibility_by_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let r = registry(dir.path());
        let (a, b) = (TenantId::new("a").unwrap(), TenantId::new("b").unwrap());
        r.define(&record("local2", ProviderKind::Process, None), None)
            .unwrap();
        r.define(&record("mine", ProviderKind::Process, Some("a")), None)
            .unwrap();
        assert_eq!(r.get(&a, "local2").unwrap().name(), "local2");
        assert!(r.get(&b, "local2").is_some());
        assert!(r.get(&a, "mine").is_some());
        assert!(r.get(&b, "mine").is_none(), "private to a");
        assert_eq!(r.kind(&b, "mine"), None);
        assert_eq!(r.kind(&a, "mine"), Some(ProviderKind::Process));
        // A clone shares the map: a change is seen by every holder at once.
        let clone = r.clone();
        r.remove("local2");
        assert!(clone.get(&a, "local2").is_none());
        r.forget_tenant(&a);
        assert!(clone.get(&a, "mine").is_none());
        assert!(r.names().is_empty());
    }

    /// A built-in keeps its name and cannot be removed like a stored definition.
    #[test]
    fn builtins_stay() {
        let dir = tempfile::tempdir().unwrap();
        let r = registry(dir.path());
        let mut config = ProcessConfig::new(dir.path().join("i"), "/srv/swell");
        config.cgroups = false;
        r.insert_builtin("process".into(), Arc::new(ProcessProvider::new(config)));
        r.remove("process");
        let e = r.entry("process").expect("still there");
        assert!(e.builtin && e.kind == ProviderKind::Process);
    }

    /// Bad definitions are refused naming the field; nothing is added.
    #[test]
    fn bad_definitions_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let r = registry(dir.path());
        let mut d = record("rack", ProviderKind::Docker, None);
        d.config = serde_json::json!({"engines": []});
        assert_eq!(r.define(&d, None).unwrap_err().field, "config.engines");
        d.config = serde_json::json!({"engines": [{"name": "e", "endpoint": "ftp://x"}]});
        assert_eq!(
            r.define(&d, None).unwrap_err().field,
            "config.engines[0].endpoint"
        );
        d.config =
            serde_json::json!({"engines": [{"name": "e", "endpoint": "unix:///x", "colour": 1}]});
        assert_eq!(r.define(&d, None).unwrap_err().field, "config");
        let mut o = record("cloud", ProviderKind::Openstack, None);
        o.config = serde_json::json!({"auth_url": "http://127.0.0.1:5000/v3", "application_credential_id": "abc"});
        assert_eq!(r.define(&o, None).unwrap_err().field, "credentials");
        o.config = serde_json::json!({"auth_url": "http://127.0.0.1:5000/v3", "user_name": "u"});
        assert_eq!(
            r.define(&o, Some("pw")).unwrap_err().field,
            "config.project_name"
        );
        assert!(r.names().is_empty());
        o.config = serde_json::json!({"auth_url": "http://127.0.0.1:5000/v3", "application_credential_id": "abc"});
        r.define(&o, Some("s3cret")).unwrap();
        assert_eq!(r.entry("cloud").unwrap().provider.name(), "cloud");
    }

    /// Two `process` definitions on one host, and the server's built-in: each lists
    /// only what it started itself (its own ownership tag), so none adopts the other's
    /// instances at recovery. Real processes.
    #[tokio::test]
    async fn definitions_on_one_host_see_only_their_own_instances() {
        use swell_core::{InstanceId, Template};
        let dir = tempfile::tempdir().unwrap();
        let r = registry(dir.path());
        let mut builtin = r.context.process.clone();
        builtin.cgroups = false;
        r.insert_builtin("process".into(), Arc::new(ProcessProvider::new(builtin)));
        for name in ["one", "two"] {
            r.define(&record(name, ProviderKind::Process, None), None)
                .unwrap();
        }
        let t = TenantId::new("a").unwrap();
        let one = r.get(&t, "one").unwrap();
        let request = CreateRequest {
            instance_id: InstanceId("i-one-1".into()),
            tenant: t.clone(),
            group: "web".into(),
            template: Template {
                command: vec!["sleep".into(), "30".into()],
                ..Template::default()
            },
        };
        one.create(&request).await.unwrap();
        let listed = |name: &'static str| {
            let p = r.get(&t, name).unwrap();
            async move {
                p.list()
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|i| i.instance_id.0)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(listed("one").await, ["i-one-1"]);
        assert!(listed("two").await.is_empty(), "another definition's");
        assert!(listed("process").await.is_empty(), "the server's own");
        one.delete(&request.instance_id, Duration::from_secs(1))
            .await
            .unwrap();
    }

    #[test]
    fn definition_tags_differ_from_the_servers() {
        assert_eq!(definition_owner("/srv/swell", "rack1"), "/srv/swell#rack1");
        assert_ne!(
            definition_owner("/srv/swell", "a"),
            definition_owner("/srv/swell", "b")
        );
    }
}
