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
