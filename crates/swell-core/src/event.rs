//! Events: every decision and action, with its cause.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A policy raised the desired capacity.
    ScaleOut,
    /// A policy lowered the desired capacity.
    ScaleIn,
    /// A user set the desired capacity.
    DesiredCapacitySet,
    /// An instance was created (or its create intent resolved).
    InstanceCreated,
    /// An instance left the load balancer to finish its in-flight work.
    InstanceDraining,
    /// An instance was stopped and deleted.
    InstanceTerminated,
    /// An instance was found dead or could not be created.
    InstanceFailed,
    /// A live instance was adopted after a restart.
    InstanceAdopted,
    /// An instance was paused.
    InstancePaused,
    /// An instance was resumed.
    InstanceResumed,
    /// The group was created.
    GroupCreated,
    /// The group's configuration changed.
    GroupUpdated,
    /// The group is being deleted.
    GroupDeleted,
    /// A provider call failed.
    ProviderError,
    /// A scale-out was capped by the tenant's quota.
    QuotaCapped,
    /// A scale-out was capped because the provider reported no room left (an OpenStack
    /// project's instance, core or RAM limits): the message gives what is left.
    ProviderCapped,
    /// The group's load balancer could not start (its address is taken, …); the
    /// group runs without it until it can.
    LoadBalancerError,
    /// A user suspended the group's autoscaling: the policies still evaluate, but
    /// change no desired capacity until it is resumed.
    ScalingSuspended,
    /// A user resumed the group's autoscaling.
    ScalingResumed,
    /// While suspended, the policies would have changed the desired capacity (the
    /// cause says to what); nothing was changed. One per new would-be capacity.
    WouldScale,
    /// A user protected an instance from scale-in.
    InstanceProtected,
    /// A user lifted an instance's scale-in protection.
    InstanceUnprotected,
}

impl EventKind {
    /// The snake_case name used in the store, the API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScaleOut => "scale_out",
            Self::ScaleIn => "scale_in",
            Self::DesiredCapacitySet => "desired_capacity_set",
            Self::InstanceCreated => "instance_created",
            Self::InstanceDraining => "instance_draining",
            Self::InstanceTerminated => "instance_terminated",
            Self::InstanceFailed => "instance_failed",
            Self::InstanceAdopted => "instance_adopted",
            Self::InstancePaused => "instance_paused",
            Self::InstanceResumed => "instance_resumed",
            Self::GroupCreated => "group_created",
            Self::GroupUpdated => "group_updated",
            Self::GroupDeleted => "group_deleted",
            Self::ProviderError => "provider_error",
            Self::QuotaCapped => "quota_capped",
            Self::ProviderCapped => "provider_capped",
            Self::LoadBalancerError => "load_balancer_error",
            Self::ScalingSuspended => "scaling_suspended",
            Self::ScalingResumed => "scaling_resumed",
            Self::WouldScale => "would_scale",
            Self::InstanceProtected => "instance_protected",
            Self::InstanceUnprotected => "instance_unprotected",
        }
    }

    /// Parses the snake_case name.
    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a decision was taken: the numbers a reader needs to check it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Cause {
    /// The policy that decided (`threshold`, `target`, …; `manual`, `cooldown`, `bounds`).
    pub policy: String,
    /// The metric it read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// The value it saw (window average).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The threshold or target it compared against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Desired capacity before.
    pub before: u32,
    /// Desired capacity after.
    pub after: u32,
    /// One sentence for humans.
    pub reason: String,
}
