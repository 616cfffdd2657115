//! The openstack provider: every instance is a Nova server in one project of one
//! OpenStack cloud (one region), driven through the REST APIs by a thin `reqwest`
//! client — about fifteen calls, all in this module tree: Keystone v3 (`auth`), Nova
//! v2.1 (`nova`), Neutron (`neutron`), Glance (`glance`) and Octavia (`octavia`).
//!
//! **Authentication.** A Keystone v3 token from a password (user and project by name
//! or id, with their domains) or an application credential ([`AuthConfig`]), read from
//! `OS_*` variables ([`OpenStackConfig::from_env_vars`]) or a `clouds.yaml`
//! ([`OpenStackConfig::from_clouds_yaml`]). The token is cached and renewed two minutes
//! before its `expires_at` (compared with an injectable clock,
//! [`OpenStackProvider::with_clock`]); a 401 re-authenticates once. Endpoints come from
//! the token's catalog for the configured region and interface.
//!
//! **One project.** The provider acts in the one project its credential's token is
//! scoped to, and only there ([`scope`]): a template's networks (the project's own or
//! shared with it), floating-IP network (an external one), security groups, Octavia pool
//! (the project's own), key pair (the credential's user's), image and flavor (the
//! project's own, public, or shared with the project) are resolved among what the
//! project may use, by name and by id, even with an admin's credential that sees every
//! project; servers are listed with the project's id and each checked to be the
//! project's. A name or id of another project's resource fails in the same words as one
//! that exists nowhere, naming neither.
//!
//! **Servers.** An instance is the server `swell-<tenant>-<group>-<short id>` (the short
//! id: the last 8 letters and digits of the instance id) made from the template's
//! `image` (a Glance name or id) and its `openstack` section: flavor (name or id),
//! networks (Neutron names or ids; none lets Nova pick the project's only network),
//! security groups (given to Nova by id), key pair, user data (sent base64),
//! availability zone. Every Nova
//! call carries `OpenStack-API-Version: compute <microversion>` (2.79 by default).
//! Every server carries the metadata `swell_owner`, `swell_instance`, `swell_group`,
//! `swell_tenant` and `swell_member_port` (plus `swell_network` and
//! `swell_octavia_pool` when they apply); [`list`](crate::Provider::list) reads the
//! project's servers and keeps the ones whose `swell_owner` is this owner, so a
//! restarted server adopts them (or the controller removes them as orphans).
//! Creating an instance id that has a server already returns that server (waiting for
//! it if it is still building) instead of creating a second (one that is SHUTOFF,
//! SHELVED or DELETED, which it would never leave, is removed and replaced); a
//! `POST /servers` whose
//! answer is lost is resolved the same way, never by sending it again.
//!
//! **States.** ACTIVE and the transitional states of a live server (BUILD, REBOOT,
//! RESIZE, MIGRATING …) are reported `Running` — a server still building is on its way,
//! and reporting it gone would make the controller replace it; PAUSED and SUSPENDED are
//! `Paused`, and so are SHELVED and SHELVED_OFFLOADED on a server whose pause mode is
//! `shelve`; ERROR, SHUTOFF, SHELVED (otherwise), SOFT_DELETED, DELETED and UNKNOWN
//! are `Exited`.
//! The host is the compute host (`OS-EXT-SRV-ATTR:host`, visible to admins), else the
//! region. The address is the server's first fixed IP with the template's
//! `member_port`.
//!
//! **Create** waits for ACTIVE or ERROR, polling every second, up to
//! [`OpenStackConfig::build_timeout`]. A server that ends in ERROR (NoValidHost, …) is
//! deleted and the call fails with [`ProviderError::NoCapacity`] carrying Nova's fault
//! message; one that is still building at the timeout is deleted too
//! ([`ProviderError::Unavailable`]). With `floating_ip_network`, a floating IP is then
//! allocated on that network and associated with the server's port; with
//! `octavia_pool`, the server's fixed IP becomes a member of that pool (named after the
//! instance id, on the IP's subnet, at `member_port`) and the call waits for the load
//! balancer to be ACTIVE again. If either step fails, the server is deleted (no orphan)
//! and the error returned. A template whose image, flavor, network or pool does not
//! exist fails with [`ProviderError::InvalidTemplate`] before anything is created.
//!
//! **Security groups.** With `security_group_rules`, the group's own security group
//! `swell.<tenant>.<group>` is found or created in the project (described as this
//! owner's: one of that name made by hand or by another owner is never taken, changed
//! or deleted), its missing rules added,
//! and it is attached to each server, together with the template's `security_groups`
//! (`default` when the template names none, as Nova would). It is kept while the group
//! exists (removing it while a scale-out may attach it would race) and deleted by
//! [`group_deleted`](crate::Provider::group_deleted) when the group is removed: not
//! while a server of the group (this owner's) is left, and one Neutron still finds in
//! use (409) is kept with a warning.
//!
//! **Drain and delete.** [`drain`](crate::Provider::drain) sets the instance's Octavia
//! member to weight 0 (no new connections), waits the drain timeout, then removes the
//! member. [`delete`](crate::Provider::delete) removes any member left, releases every
//! floating IP on the server's ports (so none leaks even after a crash between
//! allocation and bookkeeping), deletes the server and waits for Nova's 404, then
//! releases any unassociated floating IP described `swell instance <id>` (left behind
//! by a server deleted outside Swell). Nova's own shutdown timeout replaces the grace
//! period.
//!
//! **Pause.** [`pause`](crate::Provider::pause) is the Nova action the template's
//! `pause_mode` names (stamped on the server as `swell_pause_mode` when it was created,
//! so a server is resumed the way it was paused): `pause` (waits for PAUSED),
//! `suspend` (SUSPENDED: the guest's memory goes to the hypervisor's disk, its RAM is
//! freed) or `shelve` (SHELVED or SHELVED_OFFLOADED: shut down and snapshotted, off
//! the hypervisor once offloaded). [`resume`](crate::Provider::resume) undoes whichever
//! the server shows (`unpause`, `resume`, `unshelve`) and waits for ACTIVE.
//!
//! **Capacity** ([`capacity`](crate::Provider::capacity)) is the room the project's
//! limits leave (`GET /limits`: instances, cores, RAM) and, when the credentials may read
//! the hypervisors (admin), the room on the enabled, up hypervisors under the
//! over-commit ratios (`vcpus × cpu_overcommit − vcpus_used`, likewise memory) — the
//! smaller of the two. One instance's share of it
//! ([`instance_size`](crate::Provider::instance_size)) is the template's flavor's
//! `vcpus` and `ram`, read once per flavor string and cached (a flavor never changes).
//!
//! **Metrics** of OpenStack instances come from Swell's metric push API (an agent in the
//! guest): Nova has no cheap per-server CPU reading, so
//! [`metrics`](crate::Provider::metrics) returns nothing.
//!
//! **Failures.** Every call is retried with exponential backoff (0.5 s, 1 s, 2 s) on
//! 5xx, timeouts and connection errors, and on 409 (a server or load balancer busy with
//! another task); a 401 re-authenticates once. What survives the retries maps to:
//! quota exceeded (Nova 403/413, Neutron `OverQuota`) → [`ProviderError::QuotaExceeded`];
//! 5xx, timeouts, connection errors → [`ProviderError::Unavailable`]; 409 →
//! [`ProviderError::Conflict`]; ERROR servers → [`ProviderError::NoCapacity`]; anything
//! else → [`ProviderError::Backend`]. Each message names the call (`nova POST
//! /servers`), what the cloud said, and what to do.
//!
//! ```no_run
//! use std::time::Duration;
//! use swell_core::group::OpenStackTemplate;
//! use swell_core::{InstanceId, Template, TenantId};
//! use swell_providers::openstack::{AuthConfig, OpenStackConfig, OpenStackProvider};
//! use swell_providers::{CreateRequest, Provider};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let auth = AuthConfig::password("http://127.0.0.1:5000/v3", "admin", "adminpass", "admin");
//! let provider = OpenStackProvider::new(OpenStackConfig::new("server-1f3a", auth))?;
//! let web = provider
//!     .create(&CreateRequest {
//!         instance_id: InstanceId("web-0001".into()),
//!         tenant: TenantId::default_tenant(),
//!         group: "web".into(),
//!         template: Template {
//!             image: Some("cirros".into()),
//!             openstack: Some(OpenStackTemplate {
//!                 flavor: "m1.tiny".into(),
//!                 networks: vec!["private".into()],
//!                 floating_ip_network: Some("public".into()),
//!                 member_port: 80,
//!                 ..OpenStackTemplate::default()
//!             }),
//!             ..Template::default()
//!         },
//!     })
//!     .await?;
//! println!("server {} on {} at {:?}", web.native_id, web.host, web.address);
//! provider.delete(&web.instance_id, Duration::from_secs(10)).await?;
//! # Ok(())
//! # }
//! ```

pub(crate) mod auth;
pub(crate) mod client;
mod config;
mod glance;
pub(crate) mod neutron;
pub(crate) mod nova;
pub(crate) mod octavia;
pub(crate) mod scope;
#[cfg(test)]
mod tests;

pub use client::Clock;
pub use config::{
    AppCredentialRef, AuthConfig, DEFAULT_COMPUTE_MICROVERSION, NameOrId, OpenStackConfig,
    OpenStackConfigError, Secret,
};

use crate::{
    CreateRequest, InstanceMetrics, InstanceSize, ObservedState, Provider, ProviderCapacity,
    ProviderError, ProviderInstance,
};
use async_trait::async_trait;
use base64::Engine as _;
use client::{CallError, CallErrorKind, Client, Service, Tuning};
use nova::Server;
use scope::NetworkUse;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use swell_core::{InstanceId, Template, TenantId};
use tokio::time::Instant;

/// The call name of [`OpenStackProvider::wait_status`]'s timeout: Nova answered every
/// poll, but the server never reached the status wanted.
const STILL_WAITING: &str = "nova: waiting for the server";

/// Metadata key carrying the owning Swell server's tag.
pub const META_OWNER: &str = "swell_owner";
/// Metadata key carrying the instance's id.
pub const META_INSTANCE: &str = "swell_instance";
/// Metadata key carrying the instance's group name.
pub const META_GROUP: &str = "swell_group";
/// Metadata key carrying the instance's tenant.
pub const META_TENANT: &str = "swell_tenant";
/// Metadata key carrying the port the instance serves on (`member_port`).
pub const META_MEMBER_PORT: &str = "swell_member_port";
/// Metadata key carrying the name of the server's first network.
pub const META_NETWORK: &str = "swell_network";
/// Metadata key carrying the id of the Octavia pool the instance is a member of.
pub const META_POOL: &str = "swell_octavia_pool";
/// Metadata key carrying how the server is paused (`pause`, `suspend`, `shelve`: the
/// template's `pause_mode` when it was created; absent: `pause`).
pub const META_PAUSE_MODE: &str = "swell_pause_mode";
/// Prefix of server and security-group names.
pub const NAME_PREFIX: &str = "swell-";

/// The openstack provider (see the module documentation).
#[derive(Debug)]
pub struct OpenStackProvider {
    config: OpenStackConfig,
    client: Client,
    /// Serialises find-or-create of the groups' security groups, so that two
    /// instances created at once do not make two groups of the same name.
    security_groups: tokio::sync::Mutex<()>,
    /// Flavors by the name or id a template gives, for
    /// [`instance_size`](crate::Provider::instance_size): a Nova flavor's vCPUs and
    /// RAM never change (it can only be deleted and made again), so the capacity cap,
    /// asked at every scale-out pass, costs no call after the first.
    flavors: std::sync::Mutex<HashMap<String, nova::Flavor>>,
}

/// What a template resolves to before a server is created.
struct Plan {
    image_id: String,
    flavor_id: String,
    networks: Vec<neutron::Network>,
    security_groups: Vec<String>,
    floating_network_id: Option<String>,
    pool: Option<octavia::Pool>,
}

impl OpenStackProvider {
    /// Builds the provider; no call is made until the first operation (Keystone is
    /// asked for a token then).
    pub fn new(config: OpenStackConfig) -> Result<Self, OpenStackConfigError> {
        Self::with_clock(config, Arc::new(SystemTime::now))
    }

    /// [`new`](Self::new) with the clock that decides when the token needs renewing.
    pub fn with_clock(config: OpenStackConfig, clock: Clock) -> Result<Self, OpenStackConfigError> {
        Self::with_tuning(config, clock, Tuning::default())
    }

    pub(crate) fn with_tuning(
        config: OpenStackConfig,
        clock: Clock,
        tuning: Tuning,
    ) -> Result<Self, OpenStackConfigError> {
        config.validate()?;
        let client = Client::new(&config, clock, tuning)?;
        Ok(OpenStackProvider {
            config,
            client,
            security_groups: tokio::sync::Mutex::new(()),
            flavors: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &OpenStackConfig {
        &self.config
    }

    /// The host reported when Nova does not show the compute host: the region.
    fn host_label(&self) -> &str {
        self.config.region.as_deref().unwrap_or("openstack")
    }

    /// This owner's servers carrying `id`.
    async fn find_servers(&self, id: &InstanceId) -> Result<Vec<Server>, CallError> {
        let short = short_id(id.as_str());
        // Nova's name filter is a regular expression; the short id is [a-z0-9].
        let query = if short.is_empty() {
            String::new()
        } else {
            format!("name={}", nova::enc(&format!("-{short}$")))
        };
        let project = self.project().await?;
        Ok(nova::list_servers(&self.client, &project, &query)
            .await?
            .into_iter()
            .filter(|s| s.owned_by(&self.config.owner) && s.instance_id() == Some(id.as_str()))
            .collect())
    }

    /// The id of the project the credential's token is scoped to: everything this
    /// provider resolves, lists or removes is that project's (module [`scope`]).
    async fn project(&self) -> Result<String, CallError> {
        Ok(self.client.session().await?.project_id.clone())
    }

    async fn find_one(&self, id: &InstanceId) -> Result<Server, ProviderError> {
        self.find_servers(id)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| ProviderError::NotFound(id.clone()))
    }

    /// Resolves names to ids; fails before anything is created.
    async fn plan(&self, request: &CreateRequest) -> Result<Plan, ProviderError> {
        let os = request.template.openstack.as_ref().ok_or_else(|| {
            ProviderError::InvalidTemplate(
                "template.openstack: the openstack provider needs it (flavor, networks …)".into(),
            )
        })?;
        let image = request.template.image.as_deref().ok_or_else(|| {
            ProviderError::InvalidTemplate(
                "template.image: the openstack provider needs a Glance image (name or id)".into(),
            )
        })?;
        let c = &self.client;
        let project = self.project().await?;
        let image_id = glance::resolve_image(c, &project, image).await?.ok_or_else(|| {
            ProviderError::InvalidTemplate(format!(
                "template.image: Glance has no active image `{image}` (see `openstack image list`)"
            ))
        })?;
        // Resolved afresh (a flavor may have been deleted and made again under its
        // name), which also refreshes the size cache.
        let flavor_id = self.resolve_flavor(&os.flavor).await?.id;
        let mut networks = Vec::new();
        for (i, n) in os.networks.iter().enumerate() {
            networks.push(
                self.one_network(
                    n,
                    &format!("template.openstack.networks[{i}]"),
                    NetworkUse::Attach,
                )
                .await?,
            );
        }
        let floating_network_id = match &os.floating_ip_network {
            Some(n) => Some(
                self.one_network(
                    n,
                    "template.openstack.floating_ip_network",
                    NetworkUse::FloatingIp,
                )
                .await?
                .id,
            ),
            None => None,
        };
        if let Some(k) = &os.key_name
            && !nova::has_keypair(c, k).await?
        {
            return Err(ProviderError::InvalidTemplate(
                "template.openstack.key_name: the provider's user has no key pair of this name (see `openstack keypair list`)".into(),
            ));
        }
        // Resolved to ids here, each among the project's own groups only: Nova is
        // given ids, so a name another project also uses can never pick theirs.
        let mut security_groups = Vec::new();
        for (i, name) in os.security_groups.iter().enumerate() {
            security_groups.push(
                self.one_security_group(
                    &project,
                    name,
                    &format!("template.openstack.security_groups[{i}]"),
                )
                .await?,
            );
        }
        if !os.security_group_rules.is_empty() {
            if security_groups.is_empty() {
                security_groups.push(
                    self.one_security_group(
                        &project,
                        "default",
                        "template.openstack.security_groups",
                    )
                    .await?,
                );
            }
            let name = group_sg_name(&request.tenant, &request.group);
            let _one_at_a_time = self.security_groups.lock().await;
            let sg = neutron::ensure_security_group(
                c,
                &project,
                &self.config.owner,
                &name,
                &os.security_group_rules,
            )
            .await?;
            security_groups.push(sg);
        }
        let pool = match &os.octavia_pool {
            None => None,
            Some(p) => {
                if !c.has_service(Service::LoadBalancer).await? {
                    return Err(ProviderError::InvalidTemplate(format!(
                        "template.openstack.octavia_pool: `{p}` is set but the cloud's catalog has no load-balancer (Octavia) service"
                    )));
                }
                let mut pools = octavia::find_pool(c, &project, p).await?;
                match pools.len() {
                    1 => pools.pop(),
                    // The same words whether the pool exists nowhere or in another
                    // project: an error never tells of another project's resources.
                    0 => {
                        return Err(ProviderError::InvalidTemplate(
                            "template.openstack.octavia_pool: the project has no load-balancer pool of this name or id (see `openstack loadbalancer pool list`)".into(),
                        ));
                    }
                    n => {
                        return Err(ProviderError::InvalidTemplate(format!(
                            "template.openstack.octavia_pool: {n} of the project's pools have this name; give its id"
                        )));
                    }
                }
            }
        };
        Ok(Plan {
            image_id,
            flavor_id,
            networks,
            security_groups,
            floating_network_id,
            pool,
        })
    }

    /// The template's flavor from Nova (by id or name), remembered for
    /// [`cached_flavor`](Self::cached_flavor); an unknown one is an invalid template.
    async fn resolve_flavor(&self, flavor: &str) -> Result<nova::Flavor, ProviderError> {
        let project = self.project().await?;
        let found = nova::resolve_flavor(&self.client, &project, flavor)
            .await?
            .ok_or_else(|| {
                ProviderError::InvalidTemplate(format!(
                    "template.openstack.flavor: Nova has no flavor `{flavor}` (see `openstack flavor list`)"
                ))
            })?;
        self.flavors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(flavor.to_string(), found.clone());
        Ok(found)
    }

    /// The template's flavor, from the cache when it was resolved before.
    async fn cached_flavor(&self, flavor: &str) -> Result<nova::Flavor, ProviderError> {
        let cached = self
            .flavors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(flavor)
            .cloned();
        match cached {
            Some(f) => Ok(f),
            None => self.resolve_flavor(flavor).await,
        }
    }

    /// The one network the project may use for `use_` named `name_or_id`. The error
    /// for a network of another project is word for word the one for a name that
    /// exists nowhere, and names neither (module [`scope`]).
    async fn one_network(
        &self,
        name_or_id: &str,
        field: &str,
        use_: NetworkUse,
    ) -> Result<neutron::Network, ProviderError> {
        let project = self.project().await?;
        let mut found = neutron::find_network(&self.client, &project, name_or_id, use_).await?;
        match (found.len(), use_) {
            (1, _) => Ok(found.remove(0)),
            (0, NetworkUse::Attach) => Err(ProviderError::InvalidTemplate(format!(
                "{field}: the project has no network of this name or id, and none is shared with it (see `openstack network list`)"
            ))),
            (0, NetworkUse::FloatingIp) => Err(ProviderError::InvalidTemplate(format!(
                "{field}: there is no external network (router:external) of this name or id (see `openstack network list --external`)"
            ))),
            (n, _) => Err(ProviderError::InvalidTemplate(format!(
                "{field}: {n} networks the project may use have this name; give its id"
            ))),
        }
    }

    /// The id of the project's own security group named `name_or_id`; the error for
    /// another project's group is the one for a name that exists nowhere.
    async fn one_security_group(
        &self,
        project: &str,
        name_or_id: &str,
        field: &str,
    ) -> Result<String, ProviderError> {
        let mut found = neutron::find_security_group(&self.client, project, name_or_id).await?;
        match found.len() {
            1 => Ok(found.remove(0).id),
            0 => Err(ProviderError::InvalidTemplate(format!(
                "{field}: the project has no security group of this name or id (see `openstack security group list`)"
            ))),
            n => Err(ProviderError::InvalidTemplate(format!(
                "{field}: {n} of the project's security groups have this name; give its id"
            ))),
        }
    }

    fn server_body(&self, request: &CreateRequest, plan: &Plan) -> Value {
        let os = request.template.openstack.clone().unwrap_or_default();
        let mut metadata = json!({
            META_OWNER: self.config.owner,
            META_INSTANCE: request.instance_id.as_str(),
            META_GROUP: request.group,
            META_TENANT: request.tenant.as_str(),
            META_MEMBER_PORT: os.member_port.to_string(),
        });
        // Only a mode other than the default is written, so a pause-mode server looks
        // exactly as before.
        if !os.pause_mode.is_default() {
            metadata[META_PAUSE_MODE] = json!(os.pause_mode.as_str());
        }
        if let Some(n) = plan.networks.first() {
            metadata[META_NETWORK] = json!(n.name);
        }
        if let Some(p) = &plan.pool {
            metadata[META_POOL] = json!(p.id);
        }
        let networks = if plan.networks.is_empty() {
            json!("auto")
        } else {
            json!(
                plan.networks
                    .iter()
                    .map(|n| json!({"uuid": n.id}))
                    .collect::<Vec<_>>()
            )
        };
        let mut server = json!({
            "name": server_name(request),
            "imageRef": plan.image_id,
            "flavorRef": plan.flavor_id,
            "networks": networks,
            "metadata": metadata,
        });
        if !plan.security_groups.is_empty() {
            server["security_groups"] = json!(
                plan.security_groups
                    .iter()
                    .map(|s| json!({ "name": s }))
                    .collect::<Vec<_>>()
            );
        }
        if let Some(k) = &os.key_name {
            server["key_name"] = json!(k);
        }
        if let Some(u) = &os.user_data {
            server["user_data"] = json!(base64::engine::general_purpose::STANDARD.encode(u));
        }
        if let Some(az) = &os.availability_zone {
            server["availability_zone"] = json!(az);
        }
        json!({ "server": server })
    }

    /// Polls a server until its status is one of `wanted` or ERROR, up to `timeout`.
    /// `Ok(None)`: it vanished; `Err` whose call is [`STILL_WAITING`]: Nova answered,
    /// but the server stayed in another status; any other `Err`: Nova did not answer.
    async fn wait_status(
        &self,
        server_id: &str,
        wanted: &[&str],
        timeout: Duration,
    ) -> Result<Option<Server>, CallError> {
        let deadline = Instant::now() + timeout;
        loop {
            let Some(s) = nova::get_server(&self.client, server_id).await? else {
                return Ok(None);
            };
            if s.status == "ERROR" || wanted.contains(&s.status.as_str()) {
                return Ok(Some(s));
            }
            if Instant::now() >= deadline {
                return Err(CallError::new(
                    STILL_WAITING,
                    CallErrorKind::Transport,
                    format!(
                        "server {} ({}) still {} after {} s (wanted {})",
                        s.name,
                        s.id,
                        s.status,
                        timeout.as_secs(),
                        wanted.join(" or ")
                    ),
                    1,
                ));
            }
            tokio::time::sleep(self.client.tuning.poll_interval).await;
        }
    }

    /// Deletes a server and waits for Nova's 404.
    async fn delete_server(&self, server: &Server) -> Result<(), ProviderError> {
        let c = &self.client;
        c.delete(Service::Compute, &format!("/servers/{}", server.id))
            .await?;
        let deadline = Instant::now() + self.config.build_timeout;
        loop {
            match nova::get_server(c, &server.id).await? {
                None => return Ok(()),
                Some(s) if Instant::now() >= deadline => {
                    return Err(ProviderError::Unavailable(format!(
                        "nova DELETE /servers/{}: server {} still {} after {} s; Swell tries again",
                        s.id,
                        s.name,
                        s.status,
                        self.config.build_timeout.as_secs()
                    )));
                }
                Some(_) => tokio::time::sleep(c.tuning.poll_interval).await,
            }
        }
    }

    /// Everything of a server: its Octavia members, its floating IPs, the server.
    async fn remove_server(&self, server: &Server) -> Result<(), ProviderError> {
        if let (Some(pool), Some(id)) = (server.metadata.get(META_POOL), server.instance_id()) {
            self.remove_members(pool, id).await?;
        }
        self.release_floating_ips(server).await?;
        self.delete_server(server).await
    }

    async fn release_floating_ips(&self, server: &Server) -> Result<(), ProviderError> {
        let c = &self.client;
        for port in neutron::ports_of(c, &server.id).await? {
            for fip in neutron::floating_ips_of(c, &port.id).await? {
                tracing::debug!(
                    "openstack: releasing floating IP {} of server {}",
                    fip.floating_ip_address,
                    server.id
                );
                neutron::delete_floating_ip(c, &fip.id).await?;
            }
        }
        Ok(())
    }

    /// Removes the pool's members named `instance` (none, or the pool gone, is fine).
    async fn remove_members(&self, pool_id: &str, instance: &str) -> Result<(), ProviderError> {
        let c = &self.client;
        if !c.has_service(Service::LoadBalancer).await? {
            return Ok(());
        }
        let Some(pool) = octavia::own_pool(c, &self.project().await?, pool_id).await? else {
            return Ok(());
        };
        let members = octavia::members_named(c, &pool.id, instance).await?;
        tracing::debug!(
            "openstack: instance {instance}: {} member(s) in pool {}",
            members.len(),
            pool.id
        );
        for m in members {
            self.lb_settled(&pool).await?;
            octavia::remove_member(c, &pool.id, &m.id).await?;
            self.lb_settled(&pool).await?;
        }
        self.check_members_gone(&pool, instance).await
    }

    /// Octavia accepts a removal and may still fail it (the member stays, in ERROR):
    /// say so, without failing the caller — the server goes either way.
    async fn check_members_gone(
        &self,
        pool: &octavia::Pool,
        instance: &str,
    ) -> Result<(), ProviderError> {
        let left = octavia::members_named(&self.client, &pool.id, instance).await?;
        for m in left {
            tracing::warn!(
                "openstack: Octavia accepted removing member {} ({instance}) from pool {} but it is still there, provisioning status {}; see the Octavia worker's log, and remove it with `openstack loadbalancer member delete {} {}`",
                m.id,
                pool.id,
                m.provisioning_status,
                pool.id,
                m.id
            );
        }
        Ok(())
    }

    async fn lb_settled(&self, pool: &octavia::Pool) -> Result<(), ProviderError> {
        if let Some(lb) = pool.loadbalancer() {
            octavia::wait_lb_active(&self.client, lb, self.config.build_timeout).await?;
        }
        Ok(())
    }

    /// After `POST /servers` (or on finding an existing server): waits for ACTIVE,
    /// adds the floating IP and the Octavia member, and cleans up on failure.
    async fn finish(
        &self,
        request: &CreateRequest,
        plan: Option<&Plan>,
        server_id: &str,
    ) -> Result<ProviderInstance, ProviderError> {
        let c = &self.client;
        let waited = self
            .wait_status(
                server_id,
                &["ACTIVE", "PAUSED", "SUSPENDED"],
                self.config.build_timeout,
            )
            .await;
        let server = match waited {
            Ok(Some(s)) => s,
            Ok(None) => {
                return Err(ProviderError::Unavailable(format!(
                    "server {server_id} for instance {} vanished while building (deleted by someone else?); Swell tries again",
                    request.instance_id
                )));
            }
            Err(e) if e.call == STILL_WAITING => {
                // Still building at the timeout (Nova answers, the compute service does
                // not act): remove it rather than leave a server Swell has given up on.
                // Nova itself not answering is the generic error below.
                if let Ok(Some(s)) = nova::get_server(c, server_id).await {
                    let _ = self.remove_server(&s).await;
                }
                return Err(ProviderError::Unavailable(format!(
                    "{}; the server was deleted — is nova-compute running? Swell tries again",
                    e.message
                )));
            }
            Err(e) => return Err(e.into()),
        };
        if server.status == "ERROR" {
            let fault = server.fault_message();
            self.remove_server(&server).await?;
            let hint = if fault.contains("No valid host") {
                format!(
                    "no compute host has room for flavor `{}`: free capacity, choose a smaller flavor, or let a provider of lower priority take the group",
                    request
                        .template
                        .openstack
                        .as_ref()
                        .map(|o| o.flavor.as_str())
                        .unwrap_or("?")
                )
            } else {
                "the logs of nova-conductor and nova-compute have the details".into()
            };
            return Err(ProviderError::NoCapacity(format!(
                "server {} ({}) for instance {} went to ERROR: {fault}; it was deleted; {hint}",
                server.name, server.id, request.instance_id
            )));
        }
        if let Err(e) = self.attach(request, plan, &server).await {
            tracing::warn!(
                "openstack: instance {}: {e}; deleting server {}",
                request.instance_id,
                server.id
            );
            if let Err(cleanup) = self.remove_server(&server).await {
                tracing::warn!("openstack: cleaning up server {}: {cleanup}", server.id);
            }
            return Err(e);
        }
        let server = nova::get_server(c, &server.id).await?.unwrap_or(server);
        server.to_instance(self.host_label()).ok_or_else(|| {
            ProviderError::Backend(format!("server {} lost its Swell metadata", server.id))
        })
    }

    /// The floating IP and the Octavia member of a new server (each skipped when done).
    async fn attach(
        &self,
        request: &CreateRequest,
        plan: Option<&Plan>,
        server: &Server,
    ) -> Result<(), ProviderError> {
        let c = &self.client;
        let Some(os) = request.template.openstack.as_ref() else {
            return Ok(());
        };
        let need_fip = os.floating_ip_network.is_some();
        let need_member = os.octavia_pool.is_some();
        if !need_fip && !need_member {
            return Ok(());
        }
        let fixed = server.fixed_ip().map(|ip| ip.to_string());
        let ports = neutron::ports_of(c, &server.id).await?;
        let port = ports
            .iter()
            .find(|p| {
                p.fixed_ips
                    .iter()
                    .any(|f| Some(&f.ip_address) == fixed.as_ref())
            })
            .or_else(|| ports.first());
        if let Some(net) = &os.floating_ip_network {
            let port = port.ok_or_else(|| {
                ProviderError::Backend(format!(
                    "server {} has no Neutron port to give a floating IP",
                    server.id
                ))
            })?;
            if neutron::floating_ips_of(c, &port.id).await?.is_empty() {
                let net_id = match plan.and_then(|p| p.floating_network_id.clone()) {
                    Some(id) => id,
                    None => {
                        self.one_network(
                            net,
                            "template.openstack.floating_ip_network",
                            NetworkUse::FloatingIp,
                        )
                        .await?
                        .id
                    }
                };
                let fixed_ip = port
                    .fixed_ips
                    .iter()
                    .find(|f| Some(&f.ip_address) == fixed.as_ref())
                    .map(|f| f.ip_address.as_str());
                let fip = neutron::create_floating_ip(
                    c,
                    &net_id,
                    &port.id,
                    fixed_ip,
                    &fip_description(&request.instance_id),
                )
                .await?;
                tracing::debug!(
                    "openstack: instance {} has floating IP {}",
                    request.instance_id,
                    fip.floating_ip_address
                );
            }
        }
        if need_member {
            let pool = match plan.and_then(|p| p.pool.clone()) {
                Some(p) => p,
                None => match server.metadata.get(META_POOL) {
                    Some(id) => octavia::own_pool(c, &self.project().await?, id)
                        .await?
                        .ok_or_else(|| {
                            ProviderError::InvalidTemplate(format!(
                                "template.openstack.octavia_pool: pool {id} is gone"
                            ))
                        })?,
                    None => return Ok(()),
                },
            };
            let name = request.instance_id.as_str();
            if octavia::members_named(c, &pool.id, name).await?.is_empty() {
                let ip = fixed.clone().ok_or_else(|| {
                    ProviderError::Backend(format!(
                        "server {} has no fixed IP to add to pool {}",
                        server.id, pool.id
                    ))
                })?;
                let subnet = port.and_then(|p| {
                    p.fixed_ips
                        .iter()
                        .find(|f| f.ip_address == ip)
                        .map(|f| f.subnet_id.clone())
                });
                self.lb_settled(&pool).await?;
                octavia::add_member(c, &pool.id, name, &ip, os.member_port, subnet.as_deref())
                    .await?;
                self.lb_settled(&pool).await?;
            }
        }
        Ok(())
    }
}

/// Statuses a server does not leave by itself (an ERROR server is handled apart).
fn stays_down(status: &str) -> bool {
    matches!(
        status,
        "SHUTOFF" | "SHELVED" | "SHELVED_OFFLOADED" | "SOFT_DELETED" | "DELETED" | "UNKNOWN"
    )
}

/// The last 8 letters and digits of an instance id, lowercased.
fn short_id(id: &str) -> String {
    let chars: Vec<char> = id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    chars[chars.len().saturating_sub(8)..].iter().collect()
}

/// `swell-<tenant>-<group>-<short id>`.
fn server_name(request: &CreateRequest) -> String {
    format!(
        "{NAME_PREFIX}{}-{}-{}",
        request.tenant,
        request.group,
        short_id(request.instance_id.as_str())
    )
}

/// The description of an instance's floating IP, by which a dangling one is found.
fn fip_description(id: &InstanceId) -> String {
    format!("swell instance {id}")
}

/// `swell.<tenant>.<group>`: the group's own security group. The separator is a `.`,
/// which neither a tenant id nor a group name may hold, so two groups never share a name
/// (with `-`, `acme`/`dev-web` and `acme-dev`/`web` both made `swell-acme-dev-web`, and
/// one tenant's rules landed on the other's servers).
fn group_sg_name(tenant: &TenantId, group: &str) -> String {
    format!("swell.{tenant}.{group}")
}

#[async_trait]
impl Provider for OpenStackProvider {
    fn name(&self) -> &str {
        "openstack"
    }

    async fn create(&self, request: &CreateRequest) -> Result<ProviderInstance, ProviderError> {
        if let Some(existing) = self
            .find_servers(&request.instance_id)
            .await?
            .into_iter()
            .next()
        {
            tracing::debug!(
                "openstack: instance {} exists as server {} ({})",
                request.instance_id,
                existing.id,
                existing.status
            );
            if !stays_down(&existing.status) {
                return self.finish(request, None, &existing.id).await;
            }
            // Stopped, shelved or deleted: it will not become ACTIVE by itself.
            self.remove_server(&existing).await?;
        }
        let plan = self.plan(request).await?;
        let body = self.server_body(request, &plan);
        let server_id = match nova::create_server(&self.client, &body).await {
            Ok(id) => id,
            Err(e)
                if e.kind == CallErrorKind::Transport || e.status().is_some_and(|s| s >= 500) =>
            {
                // The answer may be lost while the server exists: look, never resend.
                match self.find_servers(&request.instance_id).await {
                    Ok(found) if !found.is_empty() => found[0].id.clone(),
                    _ => return Err(e.into()),
                }
            }
            Err(e) if e.status() == Some(400) => {
                return Err(ProviderError::InvalidTemplate(format!(
                    "{e}; check the template's openstack section"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        self.finish(request, Some(&plan), &server_id).await
    }

    async fn delete(&self, id: &InstanceId, _grace: Duration) -> Result<(), ProviderError> {
        for server in self.find_servers(id).await? {
            self.remove_server(&server).await?;
        }
        // A floating IP left dangling by a server deleted behind Swell's back (or a
        // crash between allocation and association) is found by its description.
        let c = &self.client;
        let session = c.session().await?;
        for fip in
            neutron::floating_ips_described(c, &session.project_id, &fip_description(id)).await?
        {
            if fip.port_id.is_none() {
                tracing::debug!(
                    "openstack: releasing dangling floating IP {} of instance {id}",
                    fip.floating_ip_address
                );
                neutron::delete_floating_ip(c, &fip.id).await?;
            }
        }
        Ok(())
    }

    async fn pause(&self, id: &InstanceId) -> Result<(), ProviderError> {
        let s = self.find_one(id).await?;
        let mode = s.pause_mode();
        match s.status.as_str() {
            // Already paused, as `list` would report it.
            _ if s.state() == ObservedState::Paused => return Ok(()),
            "ACTIVE" => nova::action(&self.client, &s.id, nova::pause_action(mode)).await?,
            other => {
                return Err(ProviderError::Conflict(format!(
                    "instance {id}: server {} is {other}; only an ACTIVE server can be paused",
                    s.id
                )));
            }
        }
        self.wait_settled(id, &s.id, nova::paused_statuses(mode))
            .await
    }

    async fn resume(&self, id: &InstanceId) -> Result<(), ProviderError> {
        let s = self.find_one(id).await?;
        match s.status.as_str() {
            "ACTIVE" => return Ok(()),
            status => match nova::resume_action(status) {
                Some(action) => nova::action(&self.client, &s.id, action).await?,
                None => {
                    return Err(ProviderError::Conflict(format!(
                        "instance {id}: server {} is {status}; only a PAUSED, SUSPENDED or SHELVED server can be resumed",
                        s.id
                    )));
                }
            },
        }
        self.wait_settled(id, &s.id, &["ACTIVE"]).await
    }

    async fn list(&self) -> Result<Vec<ProviderInstance>, ProviderError> {
        let project = self.project().await?;
        Ok(nova::list_servers(&self.client, &project, "")
            .await?
            .iter()
            .filter(|s| s.owned_by(&self.config.owner))
            .filter_map(|s| s.to_instance(self.host_label()))
            .collect())
    }

    async fn metrics(
        &self,
        _ids: &[InstanceId],
    ) -> Result<Vec<(InstanceId, InstanceMetrics)>, ProviderError> {
        // OpenStack instances report through Swell's metric push API (module docs).
        Ok(Vec::new())
    }

    async fn drain(&self, id: &InstanceId, drain_timeout: Duration) -> Result<(), ProviderError> {
        let c = &self.client;
        let Some(server) = self.find_servers(id).await?.into_iter().next() else {
            return Ok(());
        };
        let Some(pool_id) = server.metadata.get(META_POOL) else {
            return Ok(());
        };
        if !c.has_service(Service::LoadBalancer).await? {
            return Ok(());
        }
        let Some(pool) = octavia::own_pool(c, &self.project().await?, pool_id).await? else {
            return Ok(());
        };
        let members = octavia::members_named(c, &pool.id, id.as_str()).await?;
        if members.is_empty() {
            return Ok(());
        }
        for m in &members {
            self.lb_settled(&pool).await?;
            octavia::set_weight(c, &pool.id, &m.id, 0).await?;
        }
        self.lb_settled(&pool).await?;
        // Real waiting: connections already open finish; dropping the future cancels.
        tokio::time::sleep(drain_timeout).await;
        for m in &members {
            self.lb_settled(&pool).await?;
            octavia::remove_member(c, &pool.id, &m.id).await?;
        }
        self.lb_settled(&pool).await?;
        self.check_members_gone(&pool, id.as_str()).await
    }

    async fn capacity(&self) -> Result<Option<ProviderCapacity>, ProviderError> {
        let l = nova::limits(&self.client).await?;
        let admin = self.client.session().await?.is_admin;
        let hypervisors = if admin {
            nova::hypervisors(&self.client).await?
        } else {
            None
        };
        Ok(Some(capacity_from(
            &l,
            hypervisors.as_deref(),
            self.config.cpu_overcommit,
            self.config.memory_overcommit,
        )))
    }

    async fn instance_size(
        &self,
        template: &Template,
    ) -> Result<Option<InstanceSize>, ProviderError> {
        // Without an openstack section no server can be made (create says so); the
        // template's own numbers are all there is.
        let Some(os) = template.openstack.as_ref() else {
            return Ok(InstanceSize::of_template(template));
        };
        let f = self.cached_flavor(&os.flavor).await?;
        Ok(Some(InstanceSize {
            vcpus: f.vcpus,
            memory_mb: f.ram,
        }))
    }

    async fn group_deleted(&self, tenant: &TenantId, group: &str) -> Result<(), ProviderError> {
        let c = &self.client;
        let name = group_sg_name(tenant, group);
        // No create of this provider finds-or-creates a security group meanwhile.
        let _one_at_a_time = self.security_groups.lock().await;
        let project = self.project().await?;
        // Only the project's own group of this name that this owner made: never another
        // project's (whatever an admin's credential sees), never another Swell's.
        let found: Vec<_> = neutron::security_groups_named(c, &project, &name)
            .await?
            .into_iter()
            .filter(|sg| sg.is_swells(&self.config.owner))
            .collect();
        if found.is_empty() {
            return Ok(());
        }
        // A server of the group is left (one whose cleanup failed): Neutron would
        // refuse anyway, and removing the group from under it is never right. The
        // group's record goes next, so nothing asks again: say what to remove.
        let left = nova::list_servers(c, &project, "")
            .await?
            .into_iter()
            .filter(|s| {
                s.owned_by(&self.config.owner)
                    && s.metadata.get(META_GROUP).map(String::as_str) == Some(group)
                    && s.metadata.get(META_TENANT).map(String::as_str) == Some(tenant.as_str())
            })
            .count();
        if left > 0 {
            tracing::warn!(
                "openstack: group {tenant}/{group} is deleted but {left} server(s) of it are left; security group {name} kept: remove it with `openstack security group delete {name}` once they are gone"
            );
            return Ok(());
        }
        for sg in found {
            match neutron::delete_security_group(c, &sg.id).await {
                Ok(()) => {
                    tracing::debug!("openstack: deleted security group {name} ({})", sg.id);
                }
                // SecurityGroupInUse: a port still has it (another Swell server's
                // group of the same name, or a port Nova has not released yet).
                Err(e) if e.status() == Some(409) && !e.is_quota() => {
                    tracing::warn!(
                        "openstack: security group {name} ({}) is still in use, kept: {e}; remove it with `openstack security group delete {}` once free",
                        sg.id,
                        sg.id
                    );
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// The room the project's limits leave (a negative maximum is unlimited) and, with the
/// hypervisors' totals, the room on the enabled, up ones under the over-commit ratios:
/// each part never below 0, whatever the cloud answered.
pub(crate) fn capacity_from(
    l: &nova::AbsoluteLimits,
    hypervisors: Option<&[nova::Hypervisor]>,
    cpu_overcommit: f64,
    memory_overcommit: f64,
) -> ProviderCapacity {
    // Saturating: a cloud may answer any i64 for either (a negative use, i64::MIN).
    let room = |max: i64, used: i64| (max >= 0).then(|| max.saturating_sub(used).max(0));
    let mut cap = ProviderCapacity {
        instances: room(l.max_total_instances, l.total_instances_used)
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
        vcpus: room(l.max_total_cores, l.total_cores_used).map(|n| n as f64),
        memory_mb: room(l.max_total_ram_size, l.total_ram_used)
            .map(|n| u64::try_from(n).unwrap_or(0)),
    };
    if let Some(hvs) = hypervisors {
        let usable = hvs.iter().filter(|h| {
            h.state.as_deref() != Some("down") && h.status.as_deref() != Some("disabled")
        });
        let (mut cpu, mut mem) = (0.0f64, 0.0f64);
        for h in usable {
            cpu += (h.vcpus.unwrap_or(0.0) * cpu_overcommit - h.vcpus_used.unwrap_or(0.0)).max(0.0);
            mem += (h.memory_mb.unwrap_or(0.0) * memory_overcommit
                - h.memory_mb_used.unwrap_or(0.0))
            .max(0.0);
        }
        cap.vcpus = Some(cap.vcpus.map_or(cpu, |q| q.min(cpu)));
        let mem = mem.floor() as u64;
        cap.memory_mb = Some(cap.memory_mb.map_or(mem, |q| q.min(mem)));
    }
    cap
}

impl OpenStackProvider {
    /// Waits for a paused or resumed server to reach one of `statuses`.
    async fn wait_settled(
        &self,
        id: &InstanceId,
        server_id: &str,
        statuses: &[&str],
    ) -> Result<(), ProviderError> {
        match self
            .wait_status(server_id, statuses, self.config.build_timeout)
            .await
        {
            Ok(Some(s)) if statuses.contains(&s.status.as_str()) => Ok(()),
            Ok(Some(s)) => Err(ProviderError::Backend(format!(
                "instance {id}: server {} went to {} instead of {}: {}",
                s.id,
                s.status,
                statuses.join(" or "),
                s.fault_message()
            ))),
            Ok(None) => Err(ProviderError::NotFound(id.clone())),
            Err(e) => Err(e.into()),
        }
    }
}
