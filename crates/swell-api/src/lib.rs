//! The REST API's boundary types: what goes over the wire at `/v1`.
//!
//! These are separate from the domain types in `swell-core` so that the wire format is
//! stated in one place, documented by the OpenAPI document generated from it, and shared
//! by the server and the CLI. A group's configuration travels as the documented group
//! document (`docs/configuration.md`), validated by the server.
#![warn(missing_docs)]

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The media type of error bodies (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error body (RFC 9457 problem details), naming the field and the rule when the input
/// was invalid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (`about:blank` for plain HTTP statuses).
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary (`Invalid input`, `Not found`).
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong and what to do.
    pub detail: String,
    /// The offending field's path, for invalid input (`policies[0].step`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The rule it broke, for invalid input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

/// A scaling group as the API shows it: its configuration and its live status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Group {
    /// The group's name.
    pub name: String,
    /// The tenant it belongs to.
    pub tenant: String,
    /// The group document as stored (see docs/configuration.md).
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
    /// The capacity Swell converges to.
    pub desired_capacity: u32,
    /// Instances by status.
    pub instances: InstanceCounts,
    /// When a scaling action last happened (RFC 3339), if ever.
    pub last_scaling_at: Option<String>,
    /// True while the group is being deleted.
    pub deleting: bool,
    /// True while its autoscaling is suspended (`POST /v1/groups/{name}/suspend`): the
    /// policies record `would_scale` events but change no desired capacity; a desired
    /// capacity set by a user still applies.
    #[serde(default)]
    pub suspended: bool,
    /// Since when it is suspended (RFC 3339), while it is.
    #[serde(default)]
    pub suspended_at: Option<String>,
    /// The load balancer's address, when it has one.
    pub load_balancer: Option<String>,
    /// When the group was created (RFC 3339).
    pub created_at: String,
}

/// How many of a group's instances are in each live status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InstanceCounts {
    /// Being created.
    pub pending: u32,
    /// Serving.
    pub running: u32,
    /// Finishing in-flight work before deletion.
    pub draining: u32,
    /// Being deleted.
    pub terminating: u32,
    /// Paused by a user.
    pub paused: u32,
}

/// One instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Instance {
    /// The instance's id (also stamped on the instance itself).
    pub id: String,
    /// Its group.
    pub group: String,
    /// `pending`, `running`, `draining`, `terminating`, `terminated`, `paused` or `failed`.
    pub status: String,
    /// `permanent` (part of min) or `scaled_up`.
    pub lifecycle: String,
    /// Creation order within the group (1, 2, 3, …).
    pub created_order: i64,
    /// The provider running it.
    pub provider: String,
    /// Host it runs on.
    pub host: Option<String>,
    /// Address traffic goes to.
    pub address: Option<String>,
    /// The provider's own id (pid, container id, server id).
    pub native_id: Option<String>,
    /// Never chosen for scale-in.
    pub protected: bool,
    /// Why it is in its status.
    pub status_reason: Option<String>,
    /// Latest CPU use in percent of one core, when sampled.
    pub cpu_percent: Option<f64>,
    /// Latest resident memory in MiB, when sampled.
    pub memory_mb: Option<f64>,
    /// When its create intent was recorded (RFC 3339).
    pub created_at: String,
    /// When it started serving (RFC 3339).
    pub started_at: Option<String>,
}

/// The cause of a decision: the numbers that justify it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Cause {
    /// The deciding policy (`threshold`, `target`, `manual`, `cooldown`, `bounds`, …).
    pub policy: String,
    /// The metric it read.
    pub metric: Option<String>,
    /// The value it saw.
    pub value: Option<f64>,
    /// The threshold or target.
    pub threshold: Option<f64>,
    /// Desired capacity before.
    pub before: u32,
    /// Desired capacity after.
    pub after: u32,
    /// One sentence for humans.
    pub reason: String,
}

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// Increasing id.
    pub id: i64,
    /// When (RFC 3339).
    pub at: String,
    /// The group.
    pub group: String,
    /// What happened (`scale_out`, `instance_created`, …).
    pub kind: String,
    /// The instance it is about.
    pub instance_id: Option<String>,
    /// Why, for decisions.
    pub cause: Option<Cause>,
    /// One line for humans.
    pub message: String,
}

/// Body of `PUT /v1/groups/{name}/desired_capacity`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetDesiredCapacity {
    /// The new desired capacity, within the group's [min, max].
    pub desired_capacity: u32,
}

/// Body of `POST /v1/groups/{name}/metrics`: readings pushed by an agent or a script
/// (for instances whose provider cannot measure them, such as OpenStack servers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushMetrics {
    /// The readings, at most 1000 per request; all are checked before any is used.
    pub samples: Vec<PushedSample>,
}

/// One pushed reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushedSample {
    /// The metric (`cpu`, `memory`, `request_rate`, `request_rate_per_instance`,
    /// `in_flight`, `latency_p99`, `error_rate`, `steal`).
    pub metric: String,
    /// The value, in the metric's unit (percent for `cpu`); must be finite.
    pub value: f64,
    /// The instance measured: its readings are averaged with the group's other
    /// instances like provider readings (warmup respected, running instances only).
    /// Without it the value is the group's own and goes straight into its window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
}

/// `POST /v1/groups/{name}/metrics` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PushedMetrics {
    /// How many samples were accepted (all of them, or the request failed).
    pub accepted: u32,
}

/// `GET /v1/groups` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GroupList {
    /// The tenant's groups.
    pub groups: Vec<Group>,
}

/// `GET /v1/groups/{name}/instances` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InstanceList {
    /// The group's instances, by creation order.
    pub instances: Vec<Instance>,
}

/// `GET /v1/groups/{name}/events` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventList {
    /// Events, oldest first.
    pub events: Vec<Event>,
}

/// Five minutes of a group's load, as kept for its forecasting policies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LoadSummary {
    /// The period's last sample (RFC 3339).
    pub at: String,
    /// The metric (`cpu`, `request_rate_per_instance`, …).
    pub metric: String,
    /// The mean load over the period: the group average times the instances it was over.
    pub mean: f64,
    /// The largest load in the period.
    pub max: f64,
}

/// `GET /v1/groups/{name}/metrics/history` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LoadHistory {
    /// Summaries, oldest first.
    pub summaries: Vec<LoadSummary>,
}

/// A level a group's policy compares its metric with, drawn across the chart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricLine {
    /// The policy's `type` (`threshold`, `target`, …).
    pub policy: String,
    /// The metric it is about.
    pub metric: String,
    /// `scale_out_above`, `scale_in_below` or `target`.
    pub kind: String,
    /// The level.
    pub value: f64,
}

/// One metrics interval of a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GroupMetricPoint {
    /// The end of the interval (RFC 3339).
    pub at: String,
    /// Instances running then.
    pub running: u32,
    /// The desired capacity then.
    pub desired_capacity: u32,
    /// The mean of the group's metric (`metric` of the answer) over the interval;
    /// `null` when it was not sampled.
    pub value: Option<f64>,
    /// The mean of every metric sampled in the interval, by name.
    #[schema(schema_with = number_map)]
    pub metrics: std::collections::BTreeMap<String, f64>,
}

/// The schema of a map from names to numbers: an object whose every property is a number.
fn number_map() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(ObjectBuilder::new().schema_type(Type::Number)))
        .build()
}

/// `GET /v1/groups/{name}/metrics` answer: the group's short metric history, kept
/// whatever its policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GroupMetrics {
    /// The group.
    pub group: String,
    /// The metric its policies scale on (the first that names one; `cpu` if none does).
    pub metric: String,
    /// The group's `metrics_interval`, seconds: the spacing of the points.
    pub interval_seconds: f64,
    /// The thresholds or targets of its policies.
    pub lines: Vec<MetricLine>,
    /// The points, oldest first.
    pub points: Vec<GroupMetricPoint>,
}

/// One metrics interval of an instance: its reading at the end of the interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InstanceMetricPoint {
    /// When it was read (RFC 3339).
    pub at: String,
    /// CPU use, percent of one core (or of the instance's CPU limit).
    pub cpu_percent: f64,
    /// Resident memory, MiB.
    pub memory_mb: f64,
}

/// `GET /v1/groups/{name}/instances/{id}/metrics` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InstanceMetricHistory {
    /// The group.
    pub group: String,
    /// The instance.
    pub instance_id: String,
    /// The points, oldest first.
    pub points: Vec<InstanceMetricPoint>,
}

/// `GET /v1/health` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
    /// Swell's version.
    pub version: String,
    /// The controller's workers and what each is doing.
    pub workers: Vec<WorkerStatus>,
}

/// A background worker's status (one per group).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerStatus {
    /// Worker name (`group/default/web`).
    pub name: String,
    /// What it is doing or last did.
    pub state: String,
}

// ---- identity, access and accounting ----

/// Body of `POST /v1/auth/tokens`: log in to one tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The user's name.
    pub user: String,
    /// The user's password (sent once; never stored or logged in clear).
    pub password: String,
    /// The tenant the token acts in.
    pub tenant: String,
}

/// Answer of `POST /v1/auth/tokens`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LoginResponse {
    /// The opaque bearer token (`Authorization: Bearer TOKEN`); shown only here.
    pub token: String,
    /// When it stops working (RFC 3339).
    pub expires_at: String,
}

/// Who the caller is (`GET /v1/auth/whoami`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Whoami {
    /// The user, or `key:NAME` for an API key.
    pub principal: String,
    /// The tenant the credential acts in.
    pub tenant: String,
    /// The role in that tenant, if any (`owner`, `member`, `viewer`).
    pub role: Option<String>,
    /// A service-wide administrator.
    pub admin: bool,
    /// Instances the caller owns in the tenant (seed 3).
    pub owned_instances: Vec<String>,
}

/// A tenant's limits; `null` is unlimited (in a tenant: the service-wide default).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Most live instances over all its groups.
    #[serde(default)]
    pub max_instances: Option<u32>,
    /// Most vCPUs over all its live instances.
    #[serde(default)]
    pub max_vcpus: Option<u32>,
    /// Most memory (MiB) over all its live instances.
    #[serde(default)]
    pub max_memory_mb: Option<u64>,
    /// Most groups (a create past it is refused with 403, field `name`).
    #[serde(default)]
    pub max_groups: Option<u32>,
}

/// A tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Tenant {
    /// Its id.
    pub name: String,
    /// A name for humans.
    pub display_name: String,
    /// A description for humans.
    pub description: String,
    /// Its own limits (`null`: the default applies).
    pub quota: Quota,
    /// The limits in force: its own, else the service-wide default.
    pub effective_quota: Quota,
    /// Provider definitions its groups may name (`process`, `docker-rack1`, …).
    pub providers: Vec<String>,
    /// Addresses its load balancers may listen on: an IP and a port or port range
    /// (`127.0.0.1:20000-20099`).
    pub listen: Vec<String>,
    /// Image patterns its docker and openstack templates may name (`*` matches any run
    /// of characters: `acme/*`).
    pub images: Vec<String>,
    /// Its groups.
    pub groups: u32,
    /// True while a forced delete scales its groups to zero.
    pub deleting: bool,
    /// When it was created (RFC 3339).
    pub created_at: String,
}

/// `GET /v1/tenants` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TenantList {
    /// Every tenant.
    pub tenants: Vec<Tenant>,
}

/// Body of `POST /v1/tenants`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Its id: 1 to 63 lowercase letters, digits or '-'.
    pub name: String,
    /// A name for humans (at most 200 characters).
    #[serde(default)]
    pub display_name: Option<String>,
    /// A description (at most 2000 characters).
    #[serde(default)]
    pub description: Option<String>,
    /// Its own limits.
    #[serde(default)]
    pub quota: Option<Quota>,
    /// Provider definitions its groups may name (admins only; nothing until granted);
    /// each must exist and be operator-wide.
    #[serde(default)]
    pub providers: Option<Vec<String>>,
    /// Listen ranges its load balancers may use: `IP:PORT` or `IP:FIRST-LAST`.
    #[serde(default)]
    pub listen: Option<Vec<String>>,
    /// Image patterns (`*` only) its docker and openstack templates may name.
    #[serde(default)]
    pub images: Option<Vec<String>>,
}

/// Body of `PUT /v1/tenants/{tenant}`: the fields given replace the stored ones.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    /// A name for humans.
    #[serde(default)]
    pub display_name: Option<String>,
    /// A description.
    #[serde(default)]
    pub description: Option<String>,
    /// Its own limits (replaced whole).
    #[serde(default)]
    pub quota: Option<Quota>,
    /// Providers its groups may name (replaced whole).
    #[serde(default)]
    pub providers: Option<Vec<String>>,
    /// Listen ranges its load balancers may use (replaced whole).
    #[serde(default)]
    pub listen: Option<Vec<String>>,
    /// Image patterns (`*` only) its docker and openstack templates may name (replaced whole).
    #[serde(default)]
    pub images: Option<Vec<String>>,
}

/// A provider definition as the API shows it: never its credentials, only whether
/// they are set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Provider {
    /// Its name, unique on the server: what a group's `provider` and a tenant's grants
    /// name.
    pub name: String,
    /// `process`, `docker` or `openstack`.
    pub kind: String,
    /// The tenant it is private to; `null`: operator-wide (granted to tenants by name).
    pub tenant: Option<String>,
    /// Configured by `swell serve`'s flags (`process`, `docker`, `openstack`) rather
    /// than defined through the API; it cannot be changed or deleted here.
    pub builtin: bool,
    /// The kind's settings (admins only; `null` for others and for built-ins).
    #[schema(value_type = Option<Object>)]
    pub config: Option<serde_json::Value>,
    /// `set` when credentials are stored (they are never returned); `null` otherwise.
    pub credentials: Option<String>,
    /// When it was defined (RFC 3339; `null` for built-ins).
    pub created_at: Option<String>,
    /// When it last changed (RFC 3339; `null` for built-ins).
    pub updated_at: Option<String>,
}

/// `GET /v1/providers` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProviderList {
    /// The providers the caller may see: an admin every one, anyone else the ones its
    /// tenant may use (granted, or private to it).
    pub providers: Vec<Provider>,
}

/// One hypervisor host of a `qemu` provider, as `GET /v1/providers/{name}/hosts`
/// reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProviderHost {
    /// The host's name (what its instances report as their `host`).
    pub name: String,
    /// Its SSH target (`USER@HOST:PORT`); absent for a host on the server's machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<String>,
    /// Whether it is up: its state directory is there and, for an SSH host, SSH
    /// answers. A host that is down gets no VMs and its VMs are replaced elsewhere.
    pub up: bool,
    /// How many of this server's VMs live on it.
    pub vms: u32,
    /// Its physical vCPUs.
    pub vcpus: f64,
    /// Its physical memory, MiB.
    pub memory_mb: f64,
    /// vCPUs its VMs were created with.
    pub vcpus_allocated: f64,
    /// MiB its VMs were created with.
    pub memory_mb_allocated: f64,
    /// CPU cores its QEMU processes used at their last metrics reading.
    pub cpu_used: f64,
    /// Its load in percent: what placement compares (the larger of its committed
    /// vCPU and memory shares under the over-commit ratios, and its measured CPU).
    pub load_percent: f64,
}

/// `GET /v1/providers/{name}/hosts` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProviderHostList {
    /// The provider.
    pub provider: String,
    /// Its hosts, in configuration order.
    pub hosts: Vec<ProviderHost>,
}

/// Body of `POST /v1/providers`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProvider {
    /// Its name: 1 to 63 lowercase letters, digits or '-'; not `process`, `docker` or
    /// `openstack` (the built-ins').
    pub name: String,
    /// `process`, `docker` or `openstack`.
    pub kind: String,
    /// Make it private to this tenant (e.g. the tenant's own OpenStack project);
    /// omitted: operator-wide, usable by the tenants granted it.
    #[serde(default)]
    pub tenant: Option<String>,
    /// The kind's settings: `docker` `{"engines": [{"name", "endpoint", "tls"?}]}`;
    /// `openstack` `{"auth_url", "application_credential_id" | "user_name" +
    /// "project_name", "region"?, …}`; `process` `{}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub config: Option<serde_json::Value>,
    /// The secret (OpenStack: the application credential's secret or the user's
    /// password); stored sealed, never returned.
    #[serde(default)]
    pub credentials: Option<String>,
}

/// Body of `PUT /v1/providers/{name}`: the fields given replace the stored ones; the
/// kind and the tenant never change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProvider {
    /// The kind's settings (replaced whole).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub config: Option<serde_json::Value>,
    /// A new secret (omitted: the stored one is kept).
    #[serde(default)]
    pub credentials: Option<String>,
}

/// A user as the API shows it (never its password or hash).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct User {
    /// Its name.
    pub name: String,
    /// A service-wide administrator.
    pub admin: bool,
    /// Its role in the caller's tenant, if any.
    pub role: Option<String>,
    /// Instances it owns in the caller's tenant.
    pub owned_instances: Vec<String>,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When its password last changed (RFC 3339).
    pub password_changed_at: String,
}

/// `GET /v1/users` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UserList {
    /// The users.
    pub users: Vec<User>,
}

/// Body of `POST /v1/users`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// Unique name: 1 to 64 letters, digits, '.', '_', '-' or '@'.
    pub name: String,
    /// At least 8 characters.
    pub password: String,
    /// A service-wide administrator (only an admin may set it).
    #[serde(default)]
    pub admin: bool,
}

/// Body of `PUT /v1/users/{user}/password`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPassword {
    /// The new password (at least 8 characters). Every token of the user is revoked.
    pub password: String,
    /// The caller's current password: required when users change their own password
    /// (so a stolen token cannot take the account over); not asked of an administrator
    /// resetting someone else's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_password: Option<String>,
}

/// Body of `PUT /v1/tenants/{tenant}/users/{user}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// `owner`, `member` or `viewer`.
    pub role: String,
}

/// A user's role in a tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RoleBinding {
    /// The user.
    pub user: String,
    /// The tenant.
    pub tenant: String,
    /// The role.
    pub role: String,
}

/// `GET /v1/tenants/{tenant}/users` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RoleBindingList {
    /// The tenant's role bindings.
    pub bindings: Vec<RoleBinding>,
}

/// An API key as listed (never the key itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApiKey {
    /// Its name, unique in the tenant.
    pub name: String,
    /// The role it acts with.
    pub role: String,
    /// Who created it.
    pub created_by: String,
    /// When (RFC 3339).
    pub created_at: String,
}

/// `GET /v1/api-keys` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyList {
    /// The tenant's keys.
    pub keys: Vec<ApiKey>,
}

/// Body of `POST /v1/api-keys`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// Its name: 1 to 63 lowercase letters, digits or '-'.
    pub name: String,
    /// `owner`, `member` or `viewer`.
    pub role: String,
}

/// Answer of `POST /v1/api-keys`: the key, shown only here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreatedApiKey {
    /// The key (`Authorization: Bearer KEY`).
    pub key: String,
    /// Its description.
    pub api_key: ApiKey,
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    /// Increasing id.
    pub id: i64,
    /// When (RFC 3339).
    pub at: String,
    /// Who (`key:NAME` for API keys; `null`: unauthenticated).
    pub user: Option<String>,
    /// In which tenant.
    pub tenant: Option<String>,
    /// What (`POST /v1/groups`).
    pub action: String,
    /// On what (the request path).
    pub target: String,
    /// From where (peer address).
    pub source: Option<String>,
    /// The HTTP status of the answer.
    pub result: u16,
}

/// `GET /v1/audit` answer (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditList {
    /// Records, oldest first.
    pub entries: Vec<AuditEntry>,
}

/// `GET /v1/instances` and `GET .../owners` answers: instance owner bindings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InstanceOwnerList {
    /// (instance, user) pairs.
    pub owners: Vec<InstanceOwner>,
}

/// A user bound to an instance (seed 3: may see, pause and resume it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InstanceOwner {
    /// The instance.
    pub instance: String,
    /// The user.
    pub user: String,
}

/// `GET /v1/groups/{name}/load_balancer`: the group's load balancer and its instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LoadBalancerStatus {
    /// The address it listens on; `None` when the group has no load balancer (then
    /// everything else is empty).
    pub address: Option<String>,
    /// Requests per second over the last minute.
    pub request_rate: f64,
    /// Share of those answered with a 5xx (0 to 1).
    pub error_ratio: f64,
    /// Requests in flight now.
    pub in_flight: u64,
    /// Median latency to response headers, milliseconds.
    pub latency_p50_ms: Option<f64>,
    /// 99th percentile latency, milliseconds.
    pub latency_p99_ms: Option<f64>,
    /// Every instance the load balancer has known.
    pub backends: Vec<LoadBalancerBackend>,
}

/// One instance as the load balancer sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LoadBalancerBackend {
    /// The instance id.
    pub id: String,
    /// Where requests go.
    pub address: Option<String>,
    /// In the pool (not draining, not removed).
    pub in_pool: bool,
    /// `pending`, `healthy` or `unhealthy` (active checks).
    pub health: String,
    /// Ejected by passive health checking.
    pub ejected: bool,
    /// Requests dispatched to it.
    pub requests: u64,
    /// Requests in flight to it.
    pub in_flight: u64,
    /// Failed attempts.
    pub failures: u64,
    /// When its drain began (RFC 3339), if it is draining or drained.
    pub draining_since: Option<String>,
    /// Requests dispatched after its drain began: always 0 (DESIGN.md invariant 4).
    pub requests_after_drain: u64,
}

// ---- apply ----

/// Body of `POST /v1/apply`: a tenant document, the groups one tenant wants (what
/// `swell apply -f` reads; docs/configuration.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantDocument {
    /// The tenant the document is for; when given it must be the credential's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The group documents, each as `POST /v1/groups` takes it.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub groups: Vec<serde_json::Value>,
}

/// One line of an apply's plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApplyChange {
    /// The group.
    pub group: String,
    /// `create`, `update`, `unchanged` or `delete` (with `prune`).
    pub action: String,
}

/// Answer of `POST /v1/apply`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApplyResult {
    /// True when nothing was changed (`?dry_run=true`): `changes` is the plan.
    pub dry_run: bool,
    /// What was (or would be) done, in the document's order, then the deletions.
    pub changes: Vec<ApplyChange>,
    /// The groups of `changes` as stored afterwards (empty in a dry run).
    pub groups: Vec<Group>,
}

/// A price of one instance-hour, as `GET /v1/prices` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Price {
    /// The provider's name (`process`, `openstack-acme`).
    pub provider: String,
    /// The size it is for (an OpenStack flavor); `null`: every size without its own.
    pub size: Option<String>,
    /// When it takes effect (RFC 3339); it holds until the next price of the same
    /// provider and size.
    pub from: String,
    /// The price of one instance-hour, in the operator's currency.
    pub per_hour: f64,
    /// When it was set (RFC 3339).
    pub set_at: String,
}

/// `GET /v1/prices` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PriceList {
    /// Every price, by provider, size (provider-wide first), then `from`.
    pub prices: Vec<Price>,
}

/// Body of `POST /v1/prices`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPrice {
    /// A provider the server knows (built-in or defined).
    pub provider: String,
    /// An OpenStack flavor, for a price of that size only; omitted: every size.
    #[serde(default)]
    pub size: Option<String>,
    /// The price of one instance-hour, a number >= 0.
    pub per_hour: f64,
    /// When it takes effect (RFC 3339); omitted: now. A past time reprices the past.
    #[serde(default)]
    pub from: Option<String>,
}

/// One step of a group's cost over time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CostBucket {
    /// Where the step starts (RFC 3339); it ends where the next starts, or at `until`.
    pub start: String,
    /// Instance-hours in the step.
    pub instance_hours: f64,
    /// What they cost.
    pub cost: f64,
}

/// One group's cost over the period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GroupCost {
    /// The group's tenant.
    pub tenant: String,
    /// The group.
    pub group: String,
    /// The group's provider, whose price the peak is costed at.
    pub provider: String,
    /// The group's size (its OpenStack flavor), if any.
    pub size: Option<String>,
    /// The group's part of the period (RFC 3339): from the later of `since` and the
    /// group's creation.
    pub since: String,
    /// The period's end (RFC 3339).
    pub until: String,
    /// Instance-hours: every instance from its create to its end (booting and draining
    /// included), within the period.
    pub instance_hours: f64,
    /// What they cost at the prices in force at each moment.
    pub cost: f64,
    /// Instance-hours on a provider (and size) without a price: not in `cost`.
    pub unpriced_hours: f64,
    /// The most instances alive at once in the period.
    pub peak_instances: u32,
    /// What the period would have cost with `peak_instances` instances throughout.
    pub peak_cost: f64,
    /// `peak_cost - cost`: what autoscaling saved against holding the peak size.
    pub saving: f64,
    /// The period in steps of `step_seconds`, oldest first.
    pub buckets: Vec<CostBucket>,
}

/// The sums over the groups of a cost report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CostTotal {
    /// Sum of the groups' `instance_hours`.
    pub instance_hours: f64,
    /// Sum of the groups' `cost`.
    pub cost: f64,
    /// Sum of the groups' `unpriced_hours`.
    pub unpriced_hours: f64,
    /// Sum of the groups' `peak_cost`.
    pub peak_cost: f64,
    /// Sum of the groups' `saving`.
    pub saving: f64,
}

/// `GET /v1/cost` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CostReport {
    /// The period's start (RFC 3339).
    pub since: String,
    /// The period's end (RFC 3339).
    pub until: String,
    /// The length of one bucket, in seconds.
    pub step_seconds: u64,
    /// One entry per group, by tenant then name.
    pub groups: Vec<GroupCost>,
    /// The sums over `groups`.
    pub total: CostTotal,
}

/// A webhook as the API shows it: never its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Webhook {
    /// Its id (`wh-…`).
    pub id: String,
    /// The group whose events it is sent; `null`: every group of the tenant.
    pub group: Option<String>,
    /// Where events are `POST`ed.
    pub url: String,
    /// The event kinds sent (`scale_out`, …); empty: every kind.
    pub events: Vec<String>,
    /// Always `set`: the signing secret is stored sealed and never returned.
    pub secret: String,
    /// When it was made (RFC 3339).
    pub created_at: String,
}

/// `GET /v1/webhooks` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookList {
    /// The tenant's webhooks, by id.
    pub webhooks: Vec<Webhook>,
}

/// Body of `POST /v1/webhooks`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// `http://` or `https://` URL the events are `POST`ed to. Loopback, link-local and
    /// private addresses are refused unless the server allows them
    /// (`swell serve --webhook-allow-private`).
    pub url: String,
    /// Only this group's events; omitted: every group of the tenant.
    #[serde(default)]
    pub group: Option<String>,
    /// Only these event kinds (`scale_out`, `instance_failed`, …); omitted or empty:
    /// every kind.
    #[serde(default)]
    pub events: Vec<String>,
    /// The HMAC-SHA256 key of the `X-Swell-Signature` header: 16 to 256 characters;
    /// stored sealed, never returned.
    pub secret: String,
}

/// One delivery attempt of a webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookDelivery {
    /// The event sent (its `id` in the group's event log).
    pub event_id: i64,
    /// The event's group.
    pub group: String,
    /// 1 for the first attempt at this event, 2 for the first retry, …
    pub attempt: u32,
    /// When it was made (RFC 3339).
    pub at: String,
    /// `delivered` (2xx), `failed` (tried again later) or `abandoned` (not tried again).
    pub outcome: String,
    /// The receiver's HTTP status, if it answered.
    pub status_code: Option<u16>,
    /// Why it failed.
    pub error: Option<String>,
}

/// `GET /v1/webhooks/{webhook}/deliveries` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookDeliveryList {
    /// The newest attempts (at most `limit`, default 100), oldest first.
    pub deliveries: Vec<WebhookDelivery>,
}

/// The body of every webhook `POST`: signed with `X-Swell-Signature: sha256=HEX`, the
/// HMAC-SHA256 of the exact body bytes under the webhook's secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookPayload {
    /// The webhook's id.
    pub webhook: String,
    /// The tenant.
    pub tenant: String,
    /// The event, as `GET /v1/groups/{name}/events` shows it.
    pub event: Event,
}

/// `POST /v1/groups/{name}/alerts/token` answer: the group's alert token, shown once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AlertToken {
    /// The group.
    pub group: String,
    /// The bearer token Alertmanager presents (`authorization: {credentials: …}`);
    /// only `POST /v1/groups/{name}/alerts` of this group accepts it. Any previous
    /// token of the group stops working.
    pub token: String,
}

/// An Alertmanager webhook notification (`version` "4"), as Alertmanager sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertmanagerPayload {
    /// The payload's version: "4".
    pub version: String,
    /// The alert group's key.
    #[serde(default)]
    pub group_key: String,
    /// How many alerts Alertmanager left out (`max_alerts`).
    #[serde(default)]
    pub truncated_alerts: u64,
    /// `firing` when at least one alert fires, else `resolved`.
    pub status: String,
    /// The receiver's name in Alertmanager's configuration.
    #[serde(default)]
    pub receiver: String,
    /// The labels the alerts were grouped by.
    #[serde(default)]
    pub group_labels: std::collections::BTreeMap<String, String>,
    /// Labels every alert has.
    #[serde(default)]
    pub common_labels: std::collections::BTreeMap<String, String>,
    /// Annotations every alert has.
    #[serde(default)]
    pub common_annotations: std::collections::BTreeMap<String, String>,
    /// Alertmanager's URL.
    #[serde(default, rename = "externalURL")]
    pub external_url: String,
    /// The alerts.
    pub alerts: Vec<Alert>,
}

/// One alert of an [`AlertmanagerPayload`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// `firing` or `resolved`.
    pub status: String,
    /// Its labels (`alertname`, …).
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Its annotations.
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
    /// When it started firing (RFC 3339).
    #[serde(default)]
    pub starts_at: String,
    /// When it ended (RFC 3339; Go's zero time while firing).
    #[serde(default)]
    pub ends_at: String,
    /// The rule's URL.
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
    /// Its fingerprint.
    #[serde(default)]
    pub fingerprint: String,
}

/// `POST /v1/groups/{name}/alerts` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AlertResult {
    /// `scaled` (the desired capacity changed), `unchanged` (already there, or at a
    /// bound) or `ignored` (resolved alerts, and `alerts.resolved` is not set).
    pub action: String,
    /// The desired capacity before.
    pub before: u32,
    /// The desired capacity after.
    pub after: u32,
}
