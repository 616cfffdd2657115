//! Scaling groups: what to launch, how many, and by which policies.
//!
//! `GroupSpec` is also the documented configuration format (`tenant.yaml`, the API's group
//! body): unknown fields are errors, and [`GroupSpec::validate`] names the field and the
//! rule of the first problem it finds.

use crate::duration::serde_human;
use crate::error::ValidationError;
use crate::ids::GroupName;
use crate::metrics::Metric;
use crate::policy::PolicySpec;
use crate::provider::ProviderKind;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// The group's size bounds; cannot be built with `min > max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    min: u32,
    max: u32,
}

impl Capacity {
    /// Bounds `[min, max]`; an error naming `max` if `max < min`.
    pub fn new(min: u32, max: u32) -> Result<Self, ValidationError> {
        if max < min {
            return Err(ValidationError::new(
                "max",
                format!("max ({max}) must be >= min ({min})"),
            ));
        }
        Ok(Capacity { min, max })
    }

    /// The lower bound.
    pub fn min(self) -> u32 {
        self.min
    }

    /// The upper bound.
    pub fn max(self) -> u32 {
        self.max
    }

    /// `n` clamped into `[min, max]`.
    pub fn clamp(self, n: u32) -> u32 {
        n.clamp(self.min, self.max)
    }
}

/// What to launch for each instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// Process provider: the program and its arguments; `{port}` is replaced by the
    /// instance's port.
    #[serde(default)]
    pub command: Vec<String>,
    /// Docker/OpenStack image (unused by the process provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Environment variables given to the instance.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// vCPUs one instance takes (for quotas and placement).
    #[serde(default = "default_vcpus")]
    pub vcpus: u32,
    /// Memory one instance takes, in MiB.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u32,
    /// What an `openstack` instance is made of besides its image (flavor, networks,
    /// security groups, user data, floating IP, Octavia pool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openstack: Option<OpenStackTemplate>,
    /// How a `docker` instance's container relaxes the provider's hardening (a
    /// writable root filesystem, another user); absent keeps every default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerTemplate>,
    /// What a `qemu` VM's cloud-init NoCloud seed says (hostname, SSH keys, user
    /// data), for images that read one; absent gives such images a seed with the
    /// instance id as hostname and nothing else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qemu: Option<QemuTemplate>,
}

/// The qemu part of a template: the cloud-init NoCloud seed each VM of an image that
/// reads one (`cloud_init: true` in its `image.json`) gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct QemuTemplate {
    /// The VM's hostname (`local-hostname`); default: the instance id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// SSH public keys cloud-init installs for the default user (`public-keys`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_authorized_keys: Vec<String>,
    /// Cloud-init user data, as text (`#cloud-config` or a script).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
}

/// The most SSH keys one qemu template carries.
pub const QEMU_MAX_SSH_KEYS: usize = 32;
/// The longest user data of a qemu template, bytes (OpenStack's limit too).
pub const QEMU_MAX_USER_DATA: usize = 65_535;

impl QemuTemplate {
    /// Checks every rule; the field is relative to `template.qemu`.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(h) = &self.hostname {
            let ok = !h.is_empty()
                && h.len() <= 63
                && !h.starts_with('-')
                && !h.ends_with('-')
                && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            if !ok {
                return Err(ValidationError::new(
                    "hostname",
                    format!(
                        "`{h}` must be 1 to 63 ASCII letters, digits or '-', not starting or ending with '-'"
                    ),
                ));
            }
        }
        if self.ssh_authorized_keys.len() > QEMU_MAX_SSH_KEYS {
            return Err(ValidationError::new(
                "ssh_authorized_keys",
                format!("at most {QEMU_MAX_SSH_KEYS} keys"),
            ));
        }
        for (i, key) in self.ssh_authorized_keys.iter().enumerate() {
            let typed = ["ssh-", "ecdsa-sha2-", "sk-"]
                .iter()
                .any(|p| key.starts_with(p));
            let one_line =
                key.len() <= 16_384 && key.chars().all(|c| c == ' ' || c.is_ascii_graphic());
            if !(typed && one_line && key.split(' ').nth(1).is_some_and(|b| !b.is_empty())) {
                return Err(ValidationError::new(
                    format!("ssh_authorized_keys[{i}]"),
                    "must be one OpenSSH public key line (`ssh-ed25519 AAAA... comment`), printable ASCII, at most 16384 characters",
                ));
            }
        }
        if let Some(u) = &self.user_data {
            if u.len() > QEMU_MAX_USER_DATA {
                return Err(ValidationError::new(
                    "user_data",
                    format!("at most {QEMU_MAX_USER_DATA} bytes"),
                ));
            }
            if u.contains('\0') {
                return Err(ValidationError::new("user_data", "must not contain NUL"));
            }
        }
        Ok(())
    }
}

/// The Docker part of a template. Every container is hardened (no capabilities,
/// `no-new-privileges`, a pids limit, a read-only root filesystem, the image's own
/// user); these fields are the only ways a group relaxes or changes that.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DockerTemplate {
    /// A writable root filesystem instead of the read-only one (with a tmpfs on
    /// `/tmp`), for an image that writes outside `/tmp`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub writable_root: bool,
    /// Run as this numeric `UID[:GID]` (never 0) instead of the image's `USER`,
    /// e.g. `65534:65534` for an image that declares no user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// Docker's smallest memory limit, in MiB.
pub const DOCKER_MIN_MEMORY_MB: u32 = 6;

impl DockerTemplate {
    /// Checks every rule; the field is relative to `template.docker`.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(user) = &self.user {
            let id = |s: &str| {
                !s.is_empty()
                    && s.len() <= 10
                    && s.bytes().all(|b| b.is_ascii_digit())
                    && s.parse::<u32>().is_ok_and(|n| n != 0)
            };
            let ok = match user.split_once(':') {
                Some((uid, gid)) => id(uid) && id(gid),
                None => id(user),
            };
            if !ok {
                return Err(ValidationError::new(
                    "user",
                    format!(
                        "`{user}` must be a numeric UID or UID:GID other than 0 (e.g. 65534:65534)"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The OpenStack part of a template: one Nova server per instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct OpenStackTemplate {
    /// The Nova flavor, by name or id (`m1.tiny`).
    pub flavor: String,
    /// Neutron networks the server gets a port on, by name or id; empty lets Nova pick
    /// the project's only network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
    /// Existing security groups to attach, by name or id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<String>,
    /// Rules of the group's own security group (`swell-<tenant>-<group>`), created and
    /// kept by Swell and attached to every instance (seed 0's objective 4); none means
    /// no such group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_group_rules: Vec<SecurityGroupRule>,
    /// The Nova key pair injected into the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    /// Cloud-init user data, as text (seed 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// The availability zone to create servers in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    /// An external network, by name or id: each instance gets a floating IP from it,
    /// released when the instance is deleted (seed 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floating_ip_network: Option<String>,
    /// An Octavia pool, by name or id: each instance becomes a member once ACTIVE and
    /// leaves it (drained for the group's `drain_timeout`) before it is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub octavia_pool: Option<String>,
    /// The port the members serve on (default 80).
    #[serde(default = "default_member_port")]
    pub member_port: u16,
    /// What pausing an instance does to its server: `pause` (default), `suspend` or
    /// `shelve` — how much of the hypervisor a paused instance keeps (seed 3). Stamped
    /// on each server when it is created.
    #[serde(default, skip_serializing_if = "PauseMode::is_default")]
    pub pause_mode: PauseMode,
}

/// How an OpenStack instance is paused: which Nova action, and so what the paused
/// server still holds on its hypervisor (docs/openstack.md weighs them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PauseMode {
    /// Nova's `pause`: the guest stops in place, its memory stays in the
    /// hypervisor's RAM; resumed in a moment, nothing is freed but CPU.
    #[default]
    Pause,
    /// Nova's `suspend`: the guest's memory is written to the hypervisor's disk and its
    /// RAM freed; resumed in seconds with its memory as it was.
    Suspend,
    /// Nova's `shelve`: the guest is shut down (its memory is lost), snapshotted and,
    /// once offloaded, holds no CPU, RAM or disk of any hypervisor; `unshelve` boots
    /// it again, possibly on another host, in about a create's time.
    Shelve,
}

impl PauseMode {
    /// Its name in the group document (`pause`, `suspend`, `shelve`).
    pub fn as_str(self) -> &'static str {
        match self {
            PauseMode::Pause => "pause",
            PauseMode::Suspend => "suspend",
            PauseMode::Shelve => "shelve",
        }
    }

    /// The mode of a name, if it is one.
    pub fn parse(name: &str) -> Option<PauseMode> {
        [PauseMode::Pause, PauseMode::Suspend, PauseMode::Shelve]
            .into_iter()
            .find(|m| m.as_str() == name)
    }

    /// Whether it is the default (`pause`), left out when a document is written.
    pub fn is_default(&self) -> bool {
        *self == PauseMode::Pause
    }
}

fn default_member_port() -> u16 {
    80
}

/// One rule of a group's security group, in Neutron's terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroupRule {
    /// `ingress` (default) or `egress`.
    #[serde(default = "default_direction")]
    pub direction: String,
    /// `tcp`, `udp` or `icmp`.
    pub protocol: String,
    /// First port of the range (tcp/udp); absent means every port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_range_min: Option<u16>,
    /// Last port of the range; defaults to `port_range_min`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_range_max: Option<u16>,
    /// Who may connect, as a CIDR (default `0.0.0.0/0`).
    #[serde(default = "default_remote_ip_prefix")]
    pub remote_ip_prefix: String,
}

fn default_direction() -> String {
    "ingress".into()
}
fn default_remote_ip_prefix() -> String {
    "0.0.0.0/0".into()
}

impl OpenStackTemplate {
    /// Checks every rule; the field is relative to `template.openstack`.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.flavor.trim().is_empty() {
            return Err(ValidationError::new(
                "flavor",
                "the openstack provider needs a flavor (e.g. m1.tiny)",
            ));
        }
        if self.member_port == 0 {
            return Err(ValidationError::new("member_port", "must be 1-65535"));
        }
        for (i, r) in self.security_group_rules.iter().enumerate() {
            r.validate()
                .map_err(|e| e.within(&format!("security_group_rules[{i}]")))?;
        }
        Ok(())
    }
}

impl SecurityGroupRule {
    /// Checks every rule of the rule.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if !matches!(self.direction.as_str(), "ingress" | "egress") {
            return Err(ValidationError::new(
                "direction",
                format!("`{}` must be ingress or egress", self.direction),
            ));
        }
        if !matches!(self.protocol.as_str(), "tcp" | "udp" | "icmp") {
            return Err(ValidationError::new(
                "protocol",
                format!("`{}` must be tcp, udp or icmp", self.protocol),
            ));
        }
        if self.protocol == "icmp"
            && (self.port_range_min.is_some() || self.port_range_max.is_some())
        {
            return Err(ValidationError::new(
                "port_range_min",
                "icmp rules have no ports",
            ));
        }
        if self.port_range_min == Some(0) {
            return Err(ValidationError::new("port_range_min", "must be 1-65535"));
        }
        match (self.port_range_min, self.port_range_max) {
            (None, Some(_)) => {
                return Err(ValidationError::new(
                    "port_range_max",
                    "needs port_range_min",
                ));
            }
            (Some(lo), Some(hi)) if hi < lo => {
                return Err(ValidationError::new(
                    "port_range_max",
                    format!("port_range_max ({hi}) must be >= port_range_min ({lo})"),
                ));
            }
            _ => {}
        }
        if !valid_cidr(&self.remote_ip_prefix) {
            return Err(ValidationError::new(
                "remote_ip_prefix",
                format!(
                    "`{}` is not a CIDR (e.g. 10.0.0.0/8)",
                    self.remote_ip_prefix
                ),
            ));
        }
        Ok(())
    }
}

fn valid_cidr(s: &str) -> bool {
    let Some((ip, len)) = s.split_once('/') else {
        return false;
    };
    match (ip.parse::<std::net::IpAddr>(), len.parse::<u8>()) {
        (Ok(std::net::IpAddr::V4(_)), Ok(l)) => l <= 32,
        (Ok(std::net::IpAddr::V6(_)), Ok(l)) => l <= 128,
        _ => false,
    }
}

fn default_vcpus() -> u32 {
    1
}
fn default_memory_mb() -> u32 {
    256
}

/// What a group's load balancer speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LbProtocol {
    /// HTTP/1.1 and HTTP/2 (h2c), proxied per request (L7).
    #[default]
    Http,
    /// Raw TCP: each connection piped to one instance (L4).
    Tcp,
}

/// How the load balancer picks an instance for a request (TCP: a connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LbAlgorithm {
    /// Weighted round robin.
    #[default]
    RoundRobin,
    /// Fewest requests in flight (least connections in TCP mode).
    LeastOutstanding,
}

/// What an active health check probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckType {
    /// `GET path`, healthy on 2xx/3xx.
    #[default]
    Http,
    /// A TCP connect.
    Tcp,
}

/// Active health checks of a group's instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSpec {
    /// `http` or `tcp`.
    #[serde(rename = "type", default)]
    pub kind: HealthCheckType,
    /// The path an `http` check requests.
    #[serde(default = "default_health_path")]
    pub path: String,
    /// Time between probes of one instance.
    #[serde(with = "serde_human", default = "default_health_interval")]
    pub interval: Duration,
    /// A probe slower than this fails.
    #[serde(with = "serde_human", default = "default_health_timeout")]
    pub timeout: Duration,
    /// Passed probes in a row that make an instance healthy (and let it join the pool).
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: u32,
    /// Failed probes in a row that make an instance unhealthy.
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
    /// An instance unhealthy for this long is replaced (seed 1's self-healing).
    #[serde(with = "serde_human", default = "default_replace_after")]
    pub replace_after: Duration,
}

fn default_health_path() -> String {
    "/healthz".into()
}
fn default_health_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_health_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_healthy_threshold() -> u32 {
    2
}
fn default_unhealthy_threshold() -> u32 {
    3
}
fn default_replace_after() -> Duration {
    Duration::from_secs(30)
}

/// Passive ejection of instances that fail real requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveEjectionSpec {
    /// Failed requests in a row that eject an instance.
    #[serde(default = "default_consecutive_failures")]
    pub consecutive_failures: u32,
    /// How long an ejected instance gets no traffic.
    #[serde(with = "serde_human", default = "default_ejection_time")]
    pub ejection_time: Duration,
}

fn default_consecutive_failures() -> u32 {
    5
}
fn default_ejection_time() -> Duration {
    Duration::from_secs(30)
}

/// The group's load balancer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancerSpec {
    /// Address the group's listener binds, e.g. `127.0.0.1:8080` (`:0` picks a port).
    pub listen: String,
    /// `http` (HTTP/1.1 and h2c) or `tcp`.
    #[serde(default)]
    pub protocol: LbProtocol,
    /// `round_robin` or `least_outstanding`.
    #[serde(default)]
    pub algorithm: LbAlgorithm,
    /// Active health checks; without them an instance joins once it accepts connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckSpec>,
    /// Passive ejection on consecutive failures; off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive_ejection: Option<PassiveEjectionSpec>,
    /// Longest wait for an instance's response headers (then `504`).
    #[serde(with = "serde_human", default = "default_lb_timeout")]
    pub request_timeout: Duration,
    /// A client connection idle this long is closed.
    #[serde(with = "serde_human", default = "default_lb_timeout")]
    pub idle_timeout: Duration,
    /// Largest request body accepted (then `413`); unlimited when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// Dedicated threads serving the listener, each with its own socket (`SO_REUSEPORT`)
    /// like nginx's workers; 0 (the default) serves on the server's shared runtime. For
    /// a busy group, the number of cores.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub workers: u32,
    /// Most client connections open at once; a connection above it is closed at
    /// once (and counted). 1 to [`MAX_LB_CONNECTIONS`].
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

/// The largest `load_balancer.max_connections`.
pub const MAX_LB_CONNECTIONS: u32 = 1_000_000;

fn default_max_connections() -> u32 {
    10_000
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn default_lb_timeout() -> Duration {
    Duration::from_secs(60)
}

impl LoadBalancerSpec {
    /// A plain HTTP round-robin load balancer on `listen`.
    pub fn http(listen: impl Into<String>) -> Self {
        LoadBalancerSpec {
            listen: listen.into(),
            protocol: LbProtocol::Http,
            algorithm: LbAlgorithm::RoundRobin,
            health_check: None,
            passive_ejection: None,
            request_timeout: default_lb_timeout(),
            idle_timeout: default_lb_timeout(),
            max_body_bytes: None,
            workers: 0,
            max_connections: default_max_connections(),
        }
    }

    /// Checks the load balancer's rules (fields relative to `load_balancer`).
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ValidationError::new(
                "listen",
                format!("`{}` must be an address like 127.0.0.1:8080", self.listen),
            ));
        }
        let positive = |field: &str, d: Duration| {
            if d.is_zero() {
                Err(ValidationError::new(field, "must be greater than 0"))
            } else {
                Ok(())
            }
        };
        positive("request_timeout", self.request_timeout)?;
        positive("idle_timeout", self.idle_timeout)?;
        if let Some(h) = &self.health_check {
            positive("health_check.interval", h.interval)?;
            positive("health_check.timeout", h.timeout)?;
            if h.healthy_threshold == 0 {
                return Err(ValidationError::new(
                    "health_check.healthy_threshold",
                    "must be at least 1",
                ));
            }
            if h.unhealthy_threshold == 0 {
                return Err(ValidationError::new(
                    "health_check.unhealthy_threshold",
                    "must be at least 1",
                ));
            }
            if h.kind == HealthCheckType::Http && !h.path.starts_with('/') {
                return Err(ValidationError::new(
                    "health_check.path",
                    format!("must start with / (got `{}`)", h.path),
                ));
            }
        }
        if let Some(p) = &self.passive_ejection {
            if p.consecutive_failures == 0 {
                return Err(ValidationError::new(
                    "passive_ejection.consecutive_failures",
                    "must be at least 1",
                ));
            }
            positive("passive_ejection.ejection_time", p.ejection_time)?;
        }
        if self.workers > 256 {
            return Err(ValidationError::new(
                "workers",
                format!("{} must be <= 256", self.workers),
            ));
        }
        if self.max_body_bytes == Some(0) {
            return Err(ValidationError::new(
                "max_body_bytes",
                "must be greater than 0 (omit it for no limit)",
            ));
        }
        if !(1..=MAX_LB_CONNECTIONS).contains(&self.max_connections) {
            return Err(ValidationError::new(
                "max_connections",
                format!(
                    "{} must be between 1 and {MAX_LB_CONNECTIONS}",
                    self.max_connections
                ),
            ));
        }
        Ok(())
    }
}

/// A scaling group's desired configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    /// The group's name, unique in its tenant.
    pub name: String,
    /// The provider that runs its instances (`process` by default).
    #[serde(default = "default_provider")]
    pub provider: String,
    /// Providers to fall back on, by priority, when `provider` keeps failing (three
    /// failed creates in a row) or has no room (DESIGN.md "Placement"); scale-in takes
    /// the least-preferred provider's instances first. The template must suit each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback_providers: Vec<String>,
    /// What each instance runs.
    pub template: Template,
    /// Fewest instances.
    #[serde(default = "default_min")]
    pub min: u32,
    /// Most instances.
    pub max: u32,
    /// Instances wanted now; starts at `min` when absent and then follows the policies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_capacity: Option<u32>,
    /// No scaling action within this long after the previous one (seed 2's buffer time),
    /// except a scale-out after a scale-in or asked for by a load-sized policy.
    #[serde(with = "serde_human", default = "default_cooldown")]
    pub cooldown: Duration,
    /// A new instance's metrics are ignored for this long after it starts.
    #[serde(with = "serde_human", default)]
    pub warmup: Duration,
    /// How long a retiring instance may finish in-flight work before it is stopped.
    #[serde(with = "serde_human", default = "default_drain_timeout")]
    pub drain_timeout: Duration,
    /// How often the group's policies are evaluated.
    #[serde(with = "serde_human", default = "default_evaluation_interval")]
    pub evaluation_interval: Duration,
    /// How often instance metrics are sampled.
    #[serde(with = "serde_human", default = "default_metrics_interval")]
    pub metrics_interval: Duration,
    /// The scaling policies; several combine (largest scale-out wins, scale-in only
    /// when all agree).
    #[serde(default = "crate::policy::default_policies")]
    pub policies: Vec<PolicySpec>,
    /// The group's load balancer, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSpec>,
    /// Where else the worker reads its instances' metrics (an `ssh` source running
    /// `top`); their readings replace the provider's for the metrics they give.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metric_sources: Vec<MetricSourceSpec>,
    /// What an Alertmanager notification posted to `POST /v1/groups/{name}/alerts`
    /// does; absent: the receiver refuses alerts for this group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<crate::alerts::AlertsSpec>,
    /// Which instances a scale-in retires first: the rules in order, each breaking the
    /// previous one's ties (as AWS's termination policies), then the default order
    /// (least-preferred provider, scaled-up before permanent, newest). Protected
    /// instances are never retired by a scale-in, whatever the rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub termination_policy: Vec<TerminationRule>,
}

/// One rule of a group's `termination_policy`: which surplus instance a scale-in
/// retires first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TerminationRule {
    /// The most recently created first (the lowest cost of losing it: it has warmed
    /// the least).
    Newest,
    /// The longest-running first (to roll a group onto a new template by scaling in
    /// and out).
    Oldest,
    /// Those on the host running the most of the group's instances first, so the group
    /// stays spread over its hosts; between hosts with as many, the one whose instances
    /// use the most CPU (their latest readings). Instances whose host is unknown last.
    MostLoadedHost,
    /// Those on the group's least-preferred provider first (the last of
    /// `fallback_providers`), so the group returns to its `provider`.
    LeastPreferredProvider,
}

impl TerminationRule {
    /// Every rule, as the group document spells it.
    pub const ALL: [&'static str; 4] = [
        "newest",
        "oldest",
        "most_loaded_host",
        "least_preferred_provider",
    ];

    /// The rule's name, as in the group document.
    pub fn as_str(self) -> &'static str {
        match self {
            TerminationRule::Newest => "newest",
            TerminationRule::Oldest => "oldest",
            TerminationRule::MostLoadedHost => "most_loaded_host",
            TerminationRule::LeastPreferredProvider => "least_preferred_provider",
        }
    }
}

/// A metric source of a group, besides its provider, its load balancer and pushes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MetricSourceSpec {
    /// Runs a command (`top`) on every running instance over SSH and reads `cpu`
    /// (100 − idle) and `steal` from its output (seeds 0 and 2).
    Ssh(SshSourceSpec),
    /// Asks a Prometheus server for one group-level value of a metric.
    Prometheus(PrometheusSourceSpec),
}

impl MetricSourceSpec {
    /// The source's kind, as in `type:`.
    pub fn kind(&self) -> &'static str {
        match self {
            MetricSourceSpec::Ssh(_) => "ssh",
            MetricSourceSpec::Prometheus(_) => "prometheus",
        }
    }

    /// The metrics the source gives (and speaks for).
    pub fn metrics(&self) -> Vec<Metric> {
        match self {
            MetricSourceSpec::Ssh(_) => vec![Metric::Cpu, Metric::Steal],
            MetricSourceSpec::Prometheus(p) => vec![p.metric],
        }
    }

    /// Checks the source's rules (fields relative to the source).
    pub fn validate(&self) -> Result<(), ValidationError> {
        match self {
            MetricSourceSpec::Ssh(s) => s.validate(),
            MetricSourceSpec::Prometheus(p) => p.validate(),
        }
    }
}

/// The `prometheus` metric source: an instant query through the server's HTTP API
/// (`GET <url>/api/v1/query?query=…`) at each `metrics_interval`, whose value becomes
/// the group's sample of `metric`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusSourceSpec {
    /// The Prometheus server, `http(s)://host:port` (with its path prefix, if any).
    pub url: String,
    /// The PromQL query; `{group}` and `{tenant}` are replaced by the group's name and
    /// tenant. Its answer must be one number (a scalar or a vector; a vector's series
    /// are averaged).
    pub query: String,
    /// The metric the value is.
    pub metric: Metric,
    /// The longest the query may take; a slower one fails.
    #[serde(with = "serde_human", default = "default_ssh_timeout")]
    pub timeout: Duration,
}

impl PrometheusSourceSpec {
    /// Checks the rules (fields relative to the source).
    pub fn validate(&self) -> Result<(), ValidationError> {
        let rest = self
            .url
            .strip_prefix("http://")
            .or_else(|| self.url.strip_prefix("https://"));
        let host_ok = rest.is_some_and(|r| {
            let host = r.split('/').next().unwrap_or("");
            !host.is_empty() && !r.contains(|c: char| c.is_whitespace() || c == '?' || c == '#')
        });
        if !host_ok {
            return Err(ValidationError::new(
                "url",
                format!(
                    "`{}` must be an http:// or https:// URL without query (e.g. http://127.0.0.1:9090)",
                    self.url
                ),
            ));
        }
        if self.query.trim().is_empty() || self.query.len() > 4096 {
            return Err(ValidationError::new(
                "query",
                "must be 1-4096 characters of PromQL",
            ));
        }
        if self.timeout < Duration::from_millis(100) || self.timeout > Duration::from_secs(600) {
            return Err(ValidationError::new(
                "timeout",
                "must be between 100ms and 10m",
            ));
        }
        Ok(())
    }

    /// The query with `{group}` and `{tenant}` replaced.
    pub fn query_for(&self, tenant: &str, group: &str) -> String {
        self.query
            .replace("{group}", group)
            .replace("{tenant}", tenant)
    }
}

/// The `ssh` metric source: `ssh -p PORT -i PRIVATE_KEY_FILE USER@ADDRESS COMMAND` for
/// each running instance, at each `metrics_interval`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshSourceSpec {
    /// The login on the instances (`cirros` for CirrOS, `root`, `ubuntu` …).
    pub user: String,
    /// The SSH port.
    #[serde(default = "default_ssh_port")]
    pub port: u16,
    /// The private key whose public key the instances authorize (e.g. through
    /// `template.openstack.key_name`): a file *name* in the tenant's key directory on the
    /// Swell server (`<data_dir>/ssh-keys/<tenant>/`, where an operator puts it), never
    /// a path — a tenant cannot make the server use a file outside its own directory.
    pub private_key_file: String,
    /// The command run on the instance; its output must hold a `top` CPU summary (the
    /// last one counts).
    #[serde(default = "default_ssh_command")]
    pub command: String,
    /// The longest one read may take, connection included; a slower read fails.
    #[serde(with = "serde_human", default = "default_ssh_timeout")]
    pub timeout: Duration,
}

fn default_ssh_port() -> u16 {
    22
}
fn default_ssh_command() -> String {
    // Two frames a second apart: the last one counts, and procps's first frame is not
    // a measurement (it covers the moments since `top` started).
    "top -bn2 -d1".into()
}
fn default_ssh_timeout() -> Duration {
    Duration::from_secs(10)
}

impl SshSourceSpec {
    /// Checks the rules (fields relative to the source).
    pub fn validate(&self) -> Result<(), ValidationError> {
        let user_ok = !self.user.is_empty()
            && self.user.len() <= 32
            && !self.user.starts_with('-')
            && self
                .user
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !user_ok {
            return Err(ValidationError::new(
                "user",
                format!(
                    "`{}` must be 1-32 letters, digits, '.', '_' or '-', not starting with '-'",
                    self.user
                ),
            ));
        }
        if self.port == 0 {
            return Err(ValidationError::new("port", "must be 1-65535"));
        }
        let name = &self.private_key_file;
        let name_ok = !name.is_empty()
            && name.len() <= 255
            && name != "."
            && name != ".."
            && !name.contains(['/', '\0']);
        if !name_ok {
            return Err(ValidationError::new(
                "private_key_file",
                format!(
                    "`{name}` must be a file name (no '/'), of a key in the tenant's \
                     directory <data_dir>/ssh-keys/<tenant>/ on the Swell server"
                ),
            ));
        }
        if self.command.trim().is_empty()
            || self.command.len() > 1024
            || self.command.contains('\0')
        {
            return Err(ValidationError::new(
                "command",
                "must be 1-1024 characters without NUL (e.g. top -bn1)",
            ));
        }
        if self.timeout < Duration::from_millis(100) || self.timeout > Duration::from_secs(600) {
            return Err(ValidationError::new(
                "timeout",
                "must be between 100ms and 10m",
            ));
        }
        Ok(())
    }
}

fn default_provider() -> String {
    "process".into()
}
fn default_min() -> u32 {
    1
}
fn default_cooldown() -> Duration {
    Duration::from_secs(120)
}
fn default_drain_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_evaluation_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_metrics_interval() -> Duration {
    Duration::from_secs(5)
}

/// Most instances any group may ask for; a guard against typos, not a quota.
pub const MAX_GROUP_SIZE: u32 = 10_000;

impl GroupSpec {
    /// Checks every rule; the first broken one is returned with its field. Provider
    /// names are the built-in definitions' (`process`, `docker`, `openstack`, each
    /// named after its kind); any other name is refused. The server, which knows its
    /// provider definitions, calls [`GroupSpec::validate_with`] instead.
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.validate_inner(&|name: &str| ProviderKind::builtin(name), true)
    }

    /// Checks every rule like [`GroupSpec::validate`], with each provider name's kind
    /// given by `kind_of` (the server's provider definitions). A name `kind_of` does not
    /// know is left to the caller (the server refuses it as not granted, so that a
    /// tenant learns nothing of definitions it cannot use); its template is checked by
    /// no kind.
    pub fn validate_with(
        &self,
        kind_of: &dyn Fn(&str) -> Option<ProviderKind>,
    ) -> Result<(), ValidationError> {
        self.validate_inner(kind_of, false)
    }

    fn validate_inner(
        &self,
        kind_of: &dyn Fn(&str) -> Option<ProviderKind>,
        strict: bool,
    ) -> Result<(), ValidationError> {
        // First the bounds every input has (no control characters, sizes), so that no
        // later rule, and nothing stored, ever sees an unbounded string.
        let document = serde_json::to_value(self)
            .map_err(|e| ValidationError::new("body", format!("cannot be encoded: {e}")))?;
        crate::limits::check(&document, "")?;
        GroupName::new(self.name.clone())?;
        self.check_provider(kind_of(&self.provider), &self.provider, "provider", strict)?;
        for (i, p) in self.fallback_providers.iter().enumerate() {
            let field = format!("fallback_providers[{i}]");
            if self.providers().take(i + 1).any(|q| q == p) {
                return Err(ValidationError::new(
                    field,
                    format!("provider `{p}` is listed twice"),
                ));
            }
            self.check_provider(kind_of(p), p, &field, strict)?;
        }
        // A name of no known kind may be one the tenant cannot see: the caller refuses
        // it (403 on the provider), and the template is not judged by a guess of its kind.
        let all_known = self.providers().all(|p| kind_of(p).is_some());
        let has = |kind: ProviderKind| self.providers().any(|p| kind_of(p) == Some(kind));
        if all_known && !has(ProviderKind::Docker) && self.template.docker.is_some() {
            return Err(ValidationError::new(
                "template.docker",
                format!(
                    "only the docker provider reads it (provider is {})",
                    self.provider
                ),
            ));
        }
        if all_known && !has(ProviderKind::Qemu) && self.template.qemu.is_some() {
            return Err(ValidationError::new(
                "template.qemu",
                format!(
                    "only the qemu provider reads it (provider is {})",
                    self.provider
                ),
            ));
        }
        if all_known && !has(ProviderKind::Openstack) && self.template.openstack.is_some() {
            return Err(ValidationError::new(
                "template.openstack",
                format!(
                    "only the openstack provider reads it (provider is {})",
                    self.provider
                ),
            ));
        }
        self.validate_rest()
    }

    /// The group's providers by priority: `provider`, then `fallback_providers`.
    pub fn providers(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.provider.as_str())
            .chain(self.fallback_providers.iter().map(String::as_str))
    }

    /// Whether the template suits provider `name` of kind `kind` (named `field` in
    /// errors); a name of no known kind is an error only when `strict`.
    fn check_provider(
        &self,
        kind: Option<ProviderKind>,
        name: &str,
        field: &str,
        strict: bool,
    ) -> Result<(), ValidationError> {
        let kind = match kind {
            Some(k) => k.as_str(),
            None if strict => "",
            None => return Ok(()),
        };
        match kind {
            "process" if self.template.command.is_empty() => {
                return Err(ValidationError::new(
                    "template.command",
                    "the process provider needs a command (e.g. [\"./my-app\", \"--port\", \"{port}\"])",
                ));
            }
            "docker" if self.template.image.as_deref().is_none_or(str::is_empty) => {
                return Err(ValidationError::new(
                    "template.image",
                    "the docker provider needs an image (e.g. swell-demo-app:latest)",
                ));
            }
            // A container without limits could take its whole engine, outside every
            // quota: the docker provider always sets both.
            "docker" if self.template.vcpus == 0 => {
                return Err(ValidationError::new(
                    "template.vcpus",
                    "the docker provider needs a CPU limit: at least 1 (0 would mean none)",
                ));
            }
            "docker" if self.template.memory_mb < DOCKER_MIN_MEMORY_MB => {
                return Err(ValidationError::new(
                    "template.memory_mb",
                    format!(
                        "the docker provider needs a memory limit: at least {DOCKER_MIN_MEMORY_MB} \
                         (Docker's smallest; 0 would mean none)"
                    ),
                ));
            }
            "docker" => {
                if let Some(d) = &self.template.docker {
                    d.validate().map_err(|e| e.within("template.docker"))?;
                }
            }
            "openstack" if self.template.image.as_deref().is_none_or(str::is_empty) => {
                return Err(ValidationError::new(
                    "template.image",
                    "the openstack provider needs a Glance image name or id (e.g. cirros)",
                ));
            }
            "openstack" => match &self.template.openstack {
                None => {
                    return Err(ValidationError::new(
                        "template.openstack",
                        "the openstack provider needs template.openstack with at least a flavor",
                    ));
                }
                Some(os) => os.validate().map_err(|e| e.within("template.openstack"))?,
            },
            "qemu" if self.template.image.as_deref().is_none_or(str::is_empty) => {
                return Err(ValidationError::new(
                    "template.image",
                    "the qemu provider needs an image: a directory under the server's \
                     --qemu-images (e.g. busybox-httpd)",
                ));
            }
            "qemu" => {
                if let Some(q) = &self.template.qemu {
                    q.validate().map_err(|e| e.within("template.qemu"))?;
                }
            }
            "process" => {}
            _ => {
                return Err(ValidationError::new(
                    field,
                    format!(
                        "unknown provider `{name}` (available: process, docker, openstack, qemu)"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The rules past the providers and the template.
    fn validate_rest(&self) -> Result<(), ValidationError> {
        for (i, rule) in self.termination_policy.iter().enumerate() {
            if self.termination_policy[..i].contains(rule) {
                return Err(ValidationError::new(
                    format!("termination_policy[{i}]"),
                    format!("`{}` is listed twice", rule.as_str()),
                ));
            }
            if *rule == TerminationRule::Newest
                && self.termination_policy[..i].contains(&TerminationRule::Oldest)
                || *rule == TerminationRule::Oldest
                    && self.termination_policy[..i].contains(&TerminationRule::Newest)
            {
                return Err(ValidationError::new(
                    format!("termination_policy[{i}]"),
                    "`newest` and `oldest` exclude each other (after one, the other never decides)",
                ));
            }
        }
        if self.max > MAX_GROUP_SIZE {
            return Err(ValidationError::new(
                "max",
                format!("max ({}) must be <= {MAX_GROUP_SIZE}", self.max),
            ));
        }
        let capacity = self.capacity()?;
        if let Some(d) = self.desired_capacity
            && (d < capacity.min() || d > capacity.max())
        {
            return Err(ValidationError::new(
                "desired_capacity",
                format!(
                    "desired_capacity ({d}) must be within [min, max] = [{}, {}]",
                    capacity.min(),
                    capacity.max()
                ),
            ));
        }
        for key in self.template.env.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(ValidationError::new(
                    format!("template.env.{key}"),
                    "an environment variable name must be non-empty without '=' or NUL",
                ));
            }
        }
        for (field, d) in [
            ("evaluation_interval", self.evaluation_interval),
            ("metrics_interval", self.metrics_interval),
        ] {
            if d < Duration::from_millis(100) {
                return Err(ValidationError::new(field, "must be at least 100ms"));
            }
        }
        for (i, p) in self.policies.iter().enumerate() {
            p.validate()
                .map_err(|e| e.within(&format!("policies[{i}]")))?;
        }
        if let Some(lb) = &self.load_balancer {
            lb.validate().map_err(|e| e.within("load_balancer"))?;
        }
        for (i, s) in self.metric_sources.iter().enumerate() {
            let field = format!("metric_sources[{i}]");
            if s.kind() == "ssh" && self.metric_sources[..i].iter().any(|t| t.kind() == "ssh") {
                return Err(ValidationError::new(
                    field,
                    "only one `ssh` source per group",
                ));
            }
            s.validate().map_err(|e| e.within(&field))?;
            for metric in s.metrics() {
                if let Some(j) = self.metric_sources[..i]
                    .iter()
                    .position(|t| t.metrics().contains(&metric))
                {
                    return Err(ValidationError::new(
                        field,
                        format!("`{metric}` already comes from metric_sources[{j}]"),
                    ));
                }
            }
        }
        if let Some(alerts) = &self.alerts {
            alerts.validate(self.min, self.max)?;
        }
        Ok(())
    }

    /// The group's size bounds.
    pub fn capacity(&self) -> Result<Capacity, ValidationError> {
        Capacity::new(self.min, self.max)
    }

    /// The desired capacity a new group starts with.
    pub fn initial_desired(&self) -> u32 {
        self.desired_capacity
            .unwrap_or(self.min)
            .clamp(self.min, self.max)
    }
}

impl fmt::Display for Capacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {}]", self.min, self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab() -> GroupSpec {
        serde_json::from_value(serde_json::json!({
            "name": "lab",
            "template": {"command": ["app", "{port}"]},
            "max": 4,
            "policies": [{"type": "threshold", "scale_out_above": 20, "evaluation_period": "40s"}]
        }))
        .unwrap()
    }

    #[test]
    fn defaults_apply() {
        let g = lab();
        assert_eq!(g.min, 1);
        assert_eq!(g.cooldown, Duration::from_secs(120));
        assert_eq!(g.metrics_interval, Duration::from_secs(5));
        assert_eq!(g.initial_desired(), 1);
        g.validate().unwrap();
    }

    #[test]
    fn rules_name_their_field() {
        let check = |edit: &dyn Fn(&mut GroupSpec), field: &str, rule: &str| {
            let mut g = lab();
            edit(&mut g);
            let err = g.validate().unwrap_err();
            assert_eq!(err.field, field);
            assert!(err.rule.contains(rule), "{}", err.rule);
        };
        check(&|g| g.min = 5, "max", "max (4) must be >= min (5)");
        check(&|g| g.name = "Bad Name".into(), "name", "lowercase");
        check(
            &|g| g.desired_capacity = Some(9),
            "desired_capacity",
            "within",
        );
        check(
            &|g| g.template.command.clear(),
            "template.command",
            "needs a command",
        );
        check(
            &|g| g.provider = "ec2".into(),
            "provider",
            "unknown provider",
        );
        check(
            &|g| g.provider = "docker".into(),
            "template.image",
            "needs an image",
        );
        check(
            &|g| g.provider = "qemu".into(),
            "template.image",
            "qemu provider needs an image",
        );
        check(
            &|g| g.load_balancer = Some(LoadBalancerSpec::http("nowhere")),
            "load_balancer.listen",
            "address",
        );
        for (n, ok) in [(0, false), (1, true), (1_000_000, true), (1_000_001, false)] {
            let mut g = lab();
            let mut lb = LoadBalancerSpec::http("127.0.0.1:0");
            lb.max_connections = n;
            g.load_balancer = Some(lb);
            match g.validate() {
                Ok(()) => assert!(ok, "{n} accepted"),
                Err(e) => {
                    assert!(!ok, "{n} refused: {e}");
                    assert_eq!(e.field, "load_balancer.max_connections");
                }
            }
        }
    }

    #[test]
    fn termination_policy_is_read_and_checked() {
        use TerminationRule::*;
        let check = |rules: serde_json::Value,
                     expected: Result<Vec<TerminationRule>, (&str, &str)>| {
            let mut doc = serde_json::to_value(lab()).unwrap();
            doc["termination_policy"] = rules.clone();
            let got = serde_json::from_value::<GroupSpec>(doc)
                .map_err(|e| ("parse".to_string(), e.to_string()))
                .and_then(|g| {
                    g.validate()
                        .map(|()| g.termination_policy.clone())
                        .map_err(|e| (e.field, e.rule))
                });
            match (got, expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{rules}"),
                (Err((field, rule)), Err((want_field, want_rule))) => {
                    assert_eq!(field, want_field, "{rules}: {rule}");
                    assert!(rule.contains(want_rule), "{rules}: {rule}");
                }
                (got, want) => panic!("{rules}: got {got:?}, expected {want:?}"),
            }
        };
        check(serde_json::json!([]), Ok(vec![]));
        check(
            serde_json::json!(["most_loaded_host", "oldest"]),
            Ok(vec![MostLoadedHost, Oldest]),
        );
        check(
            serde_json::json!(["least_preferred_provider", "newest"]),
            Ok(vec![LeastPreferredProvider, Newest]),
        );
        check(
            serde_json::json!(["oldest", "oldest"]),
            Err(("termination_policy[1]", "listed twice")),
        );
        check(
            serde_json::json!(["newest", "most_loaded_host", "oldest"]),
            Err(("termination_policy[2]", "exclude each other")),
        );
        check(
            serde_json::json!(["cheapest"]),
            Err(("parse", "unknown variant `cheapest`")),
        );
        // Absent is empty, and an empty list is not written back.
        assert!(lab().termination_policy.is_empty());
        let doc = serde_json::to_value(lab()).unwrap();
        assert!(doc.get("termination_policy").is_none(), "{doc}");
        for name in TerminationRule::ALL {
            let rule: TerminationRule = serde_json::from_value(serde_json::json!(name)).unwrap();
            assert_eq!(rule.as_str(), name);
        }
    }

    #[test]
    fn load_balancers_cap_connections_by_default() {
        let lb: LoadBalancerSpec =
            serde_json::from_value(serde_json::json!({"listen": "127.0.0.1:8080"})).unwrap();
        assert_eq!(lb.max_connections, 10_000);
        assert_eq!(LoadBalancerSpec::http("127.0.0.1:8080"), lb);
    }

    #[test]
    fn qemu_templates_carry_a_checked_cloud_init_seed() {
        let qemu = |part: serde_json::Value| {
            serde_json::from_value::<GroupSpec>(serde_json::json!({
                "name": "vms", "max": 4, "provider": "qemu",
                "template": {"image": "debian-cloud", "qemu": part},
            }))
            .map_err(|e| e.to_string())?
            .validate()
            .map_err(|e| format!("{}: {}", e.field, e.rule))
        };
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI ops@example";
        let long = "x".repeat(QEMU_MAX_USER_DATA + 1);
        let many = vec![key; QEMU_MAX_SSH_KEYS + 1];
        for (part, expected) in [
            (serde_json::json!({}), Ok(())),
            (
                serde_json::json!({"hostname": "web-a", "ssh_authorized_keys": [key],
                    "user_data": "#cloud-config\n"}),
                Ok(()),
            ),
            (
                serde_json::json!({"hostname": "-a"}),
                Err("template.qemu.hostname"),
            ),
            (
                serde_json::json!({"hostname": "a.b"}),
                Err("template.qemu.hostname"),
            ),
            (
                serde_json::json!({"hostname": ""}),
                Err("template.qemu.hostname"),
            ),
            (
                serde_json::json!({"ssh_authorized_keys": ["not a key"]}),
                Err("template.qemu.ssh_authorized_keys[0]"),
            ),
            (
                serde_json::json!({"ssh_authorized_keys": [key, "ssh-rsa"]}),
                Err("template.qemu.ssh_authorized_keys[1]"),
            ),
            (
                serde_json::json!({"ssh_authorized_keys": [format!("{key}\ninstance-id: x")]}),
                Err("template.qemu.ssh_authorized_keys[0]"),
            ),
            (
                serde_json::json!({"ssh_authorized_keys": many}),
                Err("template.qemu.ssh_authorized_keys"),
            ),
            (
                serde_json::json!({"user_data": long}),
                Err("template.qemu.user_data"),
            ),
            (
                serde_json::json!({"user_data": "a\0b"}),
                Err("template.qemu.user_data"),
            ),
        ] {
            let got = qemu(part.clone());
            match expected {
                Ok(()) => assert_eq!(got, Ok(()), "{part}"),
                Err(field) => {
                    let err = got.expect_err(&part.to_string());
                    assert!(err.starts_with(&format!("{field}: ")), "{part}: {err}");
                }
            }
        }
        assert!(
            qemu(serde_json::json!({"password": "x"}))
                .expect_err("unknown")
                .contains("password")
        );
        // Only the qemu provider reads it.
        let mut g = lab();
        g.template.qemu = Some(QemuTemplate::default());
        assert_eq!(g.validate().unwrap_err().field, "template.qemu");
    }

    #[test]
    fn docker_groups_have_limits_and_checked_relaxations() {
        let docker = |template: serde_json::Value| {
            serde_json::from_value::<GroupSpec>(serde_json::json!({
                "name": "web", "max": 4, "provider": "docker", "template": template,
            }))
            .map_err(|e| e.to_string())?
            .validate()
            .map_err(|e| format!("{}: {}", e.field, e.rule))
        };
        let check = |template: serde_json::Value, expected: Result<(), &str>| {
            let got = docker(template.clone());
            match expected {
                Ok(()) => assert_eq!(got, Ok(()), "{template}"),
                Err(field) => {
                    let err = got.expect_err(&template.to_string());
                    assert!(err.starts_with(&format!("{field}: ")), "{template}: {err}");
                }
            }
        };
        check(serde_json::json!({"image": "app:1"}), Ok(()));
        check(
            serde_json::json!({"image": "app:1", "vcpus": 0}),
            Err("template.vcpus"),
        );
        check(
            serde_json::json!({"image": "app:1", "memory_mb": 0}),
            Err("template.memory_mb"),
        );
        check(
            serde_json::json!({"image": "app:1", "memory_mb": 5}),
            Err("template.memory_mb"),
        );
        check(
            serde_json::json!({"image": "app:1", "memory_mb": 6}),
            Ok(()),
        );
        check(
            serde_json::json!({"image": "app:1", "docker": {"writable_root": true, "user": "1000:1000"}}),
            Ok(()),
        );
        check(
            serde_json::json!({"image": "app:1", "docker": {"user": "65534"}}),
            Ok(()),
        );
        for user in [
            "0",
            "0:0",
            "1000:0",
            "root",
            "1000:",
            ":1000",
            "-1",
            "99999999999",
            "1 2",
        ] {
            check(
                serde_json::json!({"image": "app:1", "docker": {"user": user}}),
                Err("template.docker.user"),
            );
        }
        let unknown = docker(serde_json::json!({"image": "app:1", "docker": {"privileged": true}}));
        assert!(unknown.expect_err("unknown").contains("privileged"));
        // Only the docker provider reads it; the process provider keeps vcpus 0.
        let mut g = lab();
        g.template.docker = Some(DockerTemplate::default());
        assert_eq!(g.validate().unwrap_err().field, "template.docker");
        let mut g = lab();
        g.template.vcpus = 0;
        g.template.memory_mb = 0;
        assert_eq!(g.validate(), Ok(()));
        // A docker fallback needs the limits as much as a docker provider.
        g.fallback_providers = vec!["docker".into()];
        g.template.image = Some("app:1".into());
        assert_eq!(g.validate().unwrap_err().field, "template.vcpus");
    }

    #[test]
    fn pause_mode_is_read_by_name_and_left_out_when_default() {
        let doc = |mode: Option<&str>| {
            let mut os = serde_json::json!({"flavor": "m1.tiny"});
            if let Some(m) = mode {
                os["pause_mode"] = serde_json::json!(m);
            }
            serde_json::from_value::<OpenStackTemplate>(os)
        };
        for (mode, expected) in [
            (None, PauseMode::Pause),
            (Some("pause"), PauseMode::Pause),
            (Some("suspend"), PauseMode::Suspend),
            (Some("shelve"), PauseMode::Shelve),
        ] {
            let t = doc(mode).unwrap();
            assert_eq!(t.pause_mode, expected, "{mode:?}");
            assert_eq!(PauseMode::parse(expected.as_str()), Some(expected));
            let written = serde_json::to_value(&t).unwrap();
            // The default is not written, so documents without it read back the same.
            let shown = written.get("pause_mode").and_then(|v| v.as_str());
            let want = (expected != PauseMode::Pause).then(|| expected.as_str());
            assert_eq!(shown, want, "{mode:?}");
        }
        let err = doc(Some("hibernate")).unwrap_err().to_string();
        assert!(
            err.contains("hibernate") && err.contains("shelve"),
            "names the value and the choices: {err}"
        );
        assert_eq!(PauseMode::parse("Shelve"), None);
    }

    #[test]
    fn openstack_templates_are_checked_field_by_field() {
        let openstack = |edit: &dyn Fn(&mut OpenStackTemplate)| {
            let mut g: GroupSpec = serde_json::from_value(serde_json::json!({
                "name": "lab", "provider": "openstack", "max": 4,
                "template": {"image": "cirros", "openstack": {
                    "flavor": "m1.tiny", "networks": ["private"],
                    "security_group_rules": [{"protocol": "tcp", "port_range_min": 22}],
                    "floating_ip_network": "public"}}
            }))
            .unwrap();
            edit(g.template.openstack.as_mut().unwrap());
            g.validate()
        };
        assert_eq!(openstack(&|_| {}), Ok(()));
        let err = |edit: &dyn Fn(&mut OpenStackTemplate)| openstack(edit).unwrap_err();
        assert_eq!(
            err(&|o| o.flavor.clear()).field,
            "template.openstack.flavor"
        );
        let e = err(&|o| o.security_group_rules[0].protocol = "sctp".into());
        assert_eq!(
            e.field,
            "template.openstack.security_group_rules[0].protocol"
        );
        let e = err(&|o| o.security_group_rules[0].port_range_max = Some(10));
        assert_eq!(
            e.field,
            "template.openstack.security_group_rules[0].port_range_max"
        );
        assert!(
            e.rule
                .contains("port_range_max (10) must be >= port_range_min (22)")
        );
        let e = err(&|o| o.security_group_rules[0].remote_ip_prefix = "10.0.0.0/33".into());
        assert_eq!(
            e.field,
            "template.openstack.security_group_rules[0].remote_ip_prefix"
        );
        let e = err(&|o| {
            o.security_group_rules[0].protocol = "icmp".into();
        });
        assert!(e.rule.contains("icmp rules have no ports"));

        let mut g = lab();
        g.provider = "openstack".into();
        g.template.image = Some("cirros".into());
        let e = g.validate().unwrap_err();
        assert_eq!(e.field, "template.openstack");
        g.provider = "process".into();
        g.template.openstack = Some(OpenStackTemplate {
            flavor: "m1.tiny".into(),
            ..OpenStackTemplate::default()
        });
        assert_eq!(g.validate().unwrap_err().field, "template.openstack");
    }

    /// A name the server does not show the tenant (another tenant's private definition)
    /// leaves the template unjudged, so the server refuses the provider itself (403)
    /// exactly as for a name that exists nowhere; a known kind still judges it.
    #[test]
    fn a_template_is_judged_only_by_known_kinds() {
        let mut g = lab();
        g.provider = "openstack-bee".into();
        g.template.image = Some("tiny".into());
        g.template.openstack = Some(OpenStackTemplate {
            flavor: "m1.tiny".into(),
            ..OpenStackTemplate::default()
        });
        let hidden = |_: &str| None;
        assert_eq!(g.validate_with(&hidden), Ok(()));
        let process = |_: &str| Some(ProviderKind::Process);
        let e = g.validate_with(&process).unwrap_err();
        assert_eq!(e.field, "template.openstack");
        // Judged by the openstack kind's own rules (the default template lacks a port).
        let openstack = |_: &str| Some(ProviderKind::Openstack);
        let e = g.validate_with(&openstack).unwrap_err();
        assert_eq!(e.field, "template.openstack.member_port");
    }

    #[test]
    fn unknown_fields_are_errors() {
        let err = serde_json::from_value::<GroupSpec>(serde_json::json!({
            "name": "x", "template": {"command": ["a"]}, "max": 1, "maxx": 2
        }))
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `maxx`"), "{err}");
    }

    #[test]
    fn fallback_providers_are_checked_like_the_provider() {
        let group = |fallbacks: serde_json::Value, template: serde_json::Value| {
            serde_json::from_value::<GroupSpec>(serde_json::json!({
                "name": "web", "max": 4, "provider": "process",
                "fallback_providers": fallbacks, "template": template,
            }))
            .unwrap()
            .validate()
        };
        let both = serde_json::json!({"command": ["app"], "image": "app:1"});
        assert_eq!(group(serde_json::json!(["docker"]), both.clone()), Ok(()));
        let field = |r: Result<(), ValidationError>| r.unwrap_err().field;
        assert_eq!(
            field(group(serde_json::json!(["docker", "docker"]), both.clone())),
            "fallback_providers[1]"
        );
        assert_eq!(
            field(group(serde_json::json!(["process"]), both.clone())),
            "fallback_providers[0]"
        );
        assert_eq!(
            field(group(serde_json::json!(["cloudy"]), both)),
            "fallback_providers[0]"
        );
        // The template must suit every provider: docker needs an image.
        assert_eq!(
            field(group(
                serde_json::json!(["docker"]),
                serde_json::json!({"command": ["app"]})
            )),
            "template.image"
        );
        // An openstack fallback may read template.openstack.
        let os = serde_json::json!({"command": ["app"], "image": "cirros",
                                    "openstack": {"flavor": "m1.tiny"}});
        assert_eq!(group(serde_json::json!(["openstack"]), os), Ok(()));
    }
}

#[cfg(test)]
mod source_tests {
    use super::*;

    fn with_source(source: serde_json::Value) -> Result<GroupSpec, String> {
        serde_json::from_value::<GroupSpec>(serde_json::json!({
            "name": "lab", "max": 4, "template": {"command": ["app"]},
            "metric_sources": [source]
        }))
        .map_err(|e| e.to_string())
    }

    #[test]
    fn ssh_source_defaults_and_rules() {
        let g = with_source(serde_json::json!({
            "type": "ssh", "user": "cirros", "private_key_file": "id_ed25519"
        }))
        .unwrap();
        let MetricSourceSpec::Ssh(s) = &g.metric_sources[0] else {
            panic!()
        };
        assert_eq!(
            (s.port, s.command.as_str(), s.timeout),
            (22, "top -bn2 -d1", Duration::from_secs(10))
        );
        g.validate().unwrap();
        // Unknown fields and kinds are refused by the parser.
        let unknown = serde_json::json!({"type": "ssh", "user": "u",
            "private_key_file": "k", "password": "gocubsgo"});
        assert!(with_source(unknown).unwrap_err().contains("password"));
        assert!(with_source(serde_json::json!({"type": "snmp"})).is_err());
        let check = |edit: &dyn Fn(&mut SshSourceSpec), field: &str, rule: &str| {
            let mut g = g.clone();
            let MetricSourceSpec::Ssh(s) = &mut g.metric_sources[0] else {
                panic!()
            };
            edit(s);
            let err = g.validate().unwrap_err();
            assert_eq!(err.field, field);
            assert!(err.rule.contains(rule), "{}", err.rule);
        };
        check(
            &|s| s.user = "-oProxyCommand=x".into(),
            "metric_sources[0].user",
            "letters",
        );
        check(&|s| s.user.clear(), "metric_sources[0].user", "1-32");
        check(&|s| s.port = 0, "metric_sources[0].port", "1-65535");
        for path in ["/etc/shadow", "../other-tenant/key", "..", ""] {
            check(
                &|s| s.private_key_file = path.into(),
                "metric_sources[0].private_key_file",
                "must be a file name",
            );
        }
        check(
            &|s| s.command = " ".into(),
            "metric_sources[0].command",
            "1-1024",
        );
        check(
            &|s| s.timeout = Duration::ZERO,
            "metric_sources[0].timeout",
            "100ms",
        );
        // Prometheus: several, one per metric, none on what `ssh` gives.
        let prom = |metric: &str| {
            serde_json::from_value::<MetricSourceSpec>(serde_json::json!({
                "type": "prometheus", "url": "http://127.0.0.1:9090",
                "query": "avg(load{group=\"{group}\"})", "metric": metric}))
            .unwrap()
        };
        let mut p = g.clone();
        p.metric_sources.push(prom("request_rate"));
        p.metric_sources.push(prom("memory"));
        p.validate().unwrap();
        let MetricSourceSpec::Prometheus(q) = &p.metric_sources[1] else {
            panic!()
        };
        assert_eq!(q.query_for("t", "lab"), "avg(load{group=\"lab\"})");
        p.metric_sources.push(prom("steal"));
        let err = p.validate().unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.rule.as_str()),
            (
                "metric_sources[3]",
                "`steal` already comes from metric_sources[0]"
            )
        );
        let mut bad = prom("cpu");
        let MetricSourceSpec::Prometheus(b) = &mut bad else {
            panic!()
        };
        b.url = "ftp://x".into();
        assert_eq!(bad.validate().unwrap_err().field, "url");
        let mut twice = g.clone();
        twice.metric_sources.push(g.metric_sources[0].clone());
        let err = twice.validate().unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.rule.as_str()),
            ("metric_sources[1]", "only one `ssh` source per group")
        );
    }
}
