//! Scaling groups: what to launch, how many, and by which policies.
//!
//! `GroupSpec` is also the documented configuration format (`tenant.yaml`, the API's group
//! body): unknown fields are errors, and [`GroupSpec::validate`] names the field and the
//! rule of the first problem it finds.

use crate::duration::serde_human;
use crate::ids::GroupName;
use crate::policy::PolicySpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// A rejected input: which field, and which rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct ValidationError {
    /// The field's path, e.g. `policies[0].step`.
    pub field: String,
    /// The rule, phrased for a user, e.g. `max (2) must be >= min (3)`.
    pub rule: String,
}

impl ValidationError {
    /// A new error for `field`.
    pub fn new(field: impl Into<String>, rule: impl Into<String>) -> Self {
        ValidationError {
            field: field.into(),
            rule: rule.into(),
        }
    }

    /// The same error with its field nested under `prefix` (`policies[0]` + `step`).
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = if self.field.is_empty() {
            prefix.to_string()
        } else {
            format!("{prefix}.{}", self.field)
        };
        self
    }
}

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
}

fn default_vcpus() -> u32 {
    1
}
fn default_memory_mb() -> u32 {
    256
}

/// The group's load balancer (the basic one: round robin over running instances).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancerSpec {
    /// Address the group's listener binds, e.g. `127.0.0.1:8080`.
    pub listen: String,
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
    /// No scaling action within this long after the previous one (seed 2's buffer time).
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
    /// Checks every rule; the first broken one is returned with its field.
    pub fn validate(&self) -> Result<(), ValidationError> {
        GroupName::new(self.name.clone())?;
        if self.provider != "process" {
            return Err(ValidationError::new(
                "provider",
                format!("unknown provider `{}` (available: process)", self.provider),
            ));
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
        if self.provider == "process" && self.template.command.is_empty() {
            return Err(ValidationError::new(
                "template.command",
                "the process provider needs a command (e.g. [\"./my-app\", \"--port\", \"{port}\"])",
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
        if let Some(lb) = &self.load_balancer
            && lb.listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(ValidationError::new(
                "load_balancer.listen",
                format!("`{}` must be an address like 127.0.0.1:8080", lb.listen),
            ));
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
            &|g| {
                g.load_balancer = Some(LoadBalancerSpec {
                    listen: "nowhere".into(),
                })
            },
            "load_balancer.listen",
            "address",
        );
    }

    #[test]
    fn unknown_fields_are_errors() {
        let err = serde_json::from_value::<GroupSpec>(serde_json::json!({
            "name": "x", "template": {"command": ["a"]}, "max": 1, "maxx": 2
        }))
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `maxx`"), "{err}");
    }
}
