//! Swell's pure core: domain types, scaling policies, placement and the simulator engine.
//!
//! Nothing in this crate does I/O, spawns tasks or reads a clock (DESIGN.md invariant 1):
//! the controller and `swell sim` call the same code with the time passed in, so what the
//! simulator shows is what the product does.
#![warn(missing_docs)]

pub mod alerts;
pub mod cost;
pub mod duration;
pub mod error;
pub mod event;
/// Fuzzing bodies of the core's parsers, for `fuzz/` and the `tests/fuzz_corpus.rs` of
/// every crate only: behind the `testing` feature, so a normal build does not ship them.
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod fuzz_targets;
pub mod grants;
pub mod group;
pub mod ids;
pub mod instance;
pub mod limits;
pub mod metrics;
pub mod placement;
pub mod plan;
pub mod policy;
pub mod provider;
pub mod sim;
pub mod time;
pub mod top;

pub use alerts::{AlertAction, AlertsSpec};
pub use error::ValidationError;
pub use event::{Cause, EventKind};
pub use grants::{Grants, ImagePattern, ListenRange};
pub use group::{
    Capacity, DockerTemplate, GroupSpec, HealthCheckSpec, HealthCheckType, LbAlgorithm, LbProtocol,
    LoadBalancerSpec, MetricSourceSpec, OpenStackTemplate, PassiveEjectionSpec, PauseMode,
    PrometheusSourceSpec, QemuTemplate, SecurityGroupRule, SshSourceSpec, Template,
    TerminationRule,
};
pub use ids::{GroupName, InstanceId, ProviderName, TenantId};
pub use instance::{InstanceStatus, Lifecycle};
pub use metrics::{LoadSummarizer, LoadSummary, Metric, MetricSample, MetricWindow};
pub use policy::{Decision, DecisionKind, GroupState, LearnedState, PolicyEngine, PolicySpec};
pub use provider::ProviderKind;
pub use time::Timestamp;
