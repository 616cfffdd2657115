//! Instances: their status machine and how they entered the group.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where an instance is in its life (DESIGN.md "Concepts").
///
/// `pending → running → draining → terminating → terminated`, or `paused`, `failed`.
/// A `pending` row is also the durable create intent; `terminating` is the delete intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceStatus {
    /// Create intent recorded; the provider may or may not have started it yet.
    Pending,
    /// Started and in the load balancer.
    Running,
    /// Out of the load balancer, finishing in-flight requests.
    Draining,
    /// Delete intent recorded; the provider is stopping it.
    Terminating,
    /// Gone; kept for history.
    Terminated,
    /// Paused by a user (seed 3); not in the load balancer, not counted by policies.
    Paused,
    /// Died or could not be created; kept for history.
    Failed,
}

impl InstanceStatus {
    /// All statuses, in life order.
    pub const ALL: [InstanceStatus; 7] = [
        Self::Pending,
        Self::Running,
        Self::Draining,
        Self::Terminating,
        Self::Terminated,
        Self::Paused,
        Self::Failed,
    ];

    /// The lowercase name used in the store, the API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Draining => "draining",
            Self::Terminating => "terminating",
            Self::Terminated => "terminated",
            Self::Paused => "paused",
            Self::Failed => "failed",
        }
    }

    /// Whether the instance is finished with (no process, no cost).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Terminated | Self::Failed)
    }

    /// Whether the instance counts toward the group's capacity (desired vs actual).
    pub fn counts_toward_capacity(self) -> bool {
        matches!(self, Self::Pending | Self::Running | Self::Paused)
    }
}

impl fmt::Display for InstanceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for InstanceStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown instance status `{s}`"))
    }
}

/// Whether an instance belongs to the group's permanent floor (`min`) or was added by a
/// scale-out (seed 1's `ScaledUpResource`): scale-in removes scaled-up ones first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    /// Part of the group's minimum.
    Permanent,
    /// Added above the minimum by a scaling decision.
    ScaledUp,
}

impl Lifecycle {
    /// The snake_case name used in the store and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Permanent => "permanent",
            Self::ScaledUp => "scaled_up",
        }
    }
}

impl FromStr for Lifecycle {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "permanent" => Ok(Self::Permanent),
            "scaled_up" => Ok(Self::ScaledUp),
            _ => Err(format!("unknown lifecycle `{s}`")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips() {
        for st in InstanceStatus::ALL {
            assert_eq!(st.as_str().parse::<InstanceStatus>(), Ok(st));
        }
        assert!("bogus".parse::<InstanceStatus>().is_err());
    }
}
