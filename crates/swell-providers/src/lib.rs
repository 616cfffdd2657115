//! Where instances run: one small [`Provider`] trait, one implementation per target.
//!
//! Every instance carries its Swell ids (instance, group, tenant, owner) on itself — an
//! environment variable for processes, a label for containers, metadata for servers —
//! so that [`Provider::list`] lets the reconciler match what runs with what the store
//! recorded after a crash (DESIGN.md invariant 2).
#![warn(missing_docs)]

pub mod docker;
/// Fuzzing bodies of the providers' parsers, for `fuzz/` and `tests/fuzz_corpus.rs`
/// only: behind the `testing` feature, so a normal build does not ship them.
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod fuzz_targets;
pub mod openstack;
pub mod process;
pub mod prometheus;
pub mod qemu;
mod records;
pub mod simulated;
pub mod ssh;
/// The qemu provider's test image: behind the `testing` feature.
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod test_image;
/// A private sshd for the `ssh` metric source's tests (this crate's and the server's):
/// behind the `testing` feature.
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod test_sshd;

use async_trait::async_trait;
use std::net::SocketAddr;
use std::time::Duration;
use swell_core::{InstanceId, Template, TenantId};

/// What to create.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateRequest {
    /// The instance's id: also the idempotency key; creating an id that already runs
    /// returns the running one instead of starting a second.
    pub instance_id: InstanceId,
    /// Owning tenant.
    pub tenant: TenantId,
    /// The group's name.
    pub group: String,
    /// What to run.
    pub template: Template,
}

/// What a provider observes about an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObservedState {
    /// Alive.
    Running,
    /// Alive but paused (SIGSTOP, docker pause, nova pause).
    Paused,
    /// Gone or exited.
    Exited,
}

/// One instance as the provider sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderInstance {
    /// Swell's id, read back from the instance's own tag.
    pub instance_id: InstanceId,
    /// Tenant, from the tag.
    pub tenant: String,
    /// Group, from the tag.
    pub group: String,
    /// The provider's id (pid, container id, server id).
    pub native_id: String,
    /// The host it runs on.
    pub host: String,
    /// Where it serves traffic.
    pub address: Option<SocketAddr>,
    /// Alive, paused or gone.
    pub state: ObservedState,
}

/// One instance's resource use at a moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InstanceMetrics {
    /// CPU use in percent of one core (or of the instance's CPU limit), since the
    /// previous sample.
    pub cpu_percent: f64,
    /// Resident memory, MiB.
    pub memory_mb: f64,
    /// Steal time, percent of the instance's vCPU time: how long its vCPUs waited,
    /// runnable, for a host CPU since the previous sample, measured on the host side
    /// (the qemu provider); `None` where the provider cannot see it. The group metric
    /// `steal` averages it.
    pub steal_percent: Option<f64>,
}

/// What can go wrong in a provider.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The instance is not known to the provider.
    #[error("instance {0} not found")]
    NotFound(InstanceId),
    /// The template cannot be run by this provider.
    #[error("invalid template: {0}")]
    InvalidTemplate(String),
    /// The provider has no room.
    #[error("no capacity: {0}")]
    NoCapacity(String),
    /// An operating-system or remote call failed.
    #[error("{action} failed: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The provider's quota (instances, cores, RAM, floating IPs, ports …) is used up:
    /// nothing is created until the quota is raised or instances are removed.
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    /// The backend did not answer usefully (5xx, timeout, connection refused) even after
    /// the provider's own retries; the call may succeed later.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    /// The backend refused the call because of the object's current state (HTTP 409)
    /// even after the provider's own retries.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Anything else the backend reported.
    #[error("{0}")]
    Backend(String),
}

impl ProviderError {
    /// Whether trying the same call again later may succeed (the backend was
    /// unavailable or busy), as opposed to a failure that needs a change first.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProviderError::Unavailable(_) | ProviderError::Conflict(_)
        )
    }
}

/// The room a provider has left for new instances, after over-commit; `None` in a
/// field means unknown or unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ProviderCapacity {
    /// How many more instances may be created.
    pub instances: Option<u32>,
    /// How many more vCPUs may be committed.
    pub vcpus: Option<f64>,
    /// How many more MiB of memory may be committed.
    pub memory_mb: Option<u64>,
}

/// What one instance takes of a provider's room ([`ProviderCapacity`]): the controller
/// divides the vCPUs and memory left by it to know how many more instances fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceSize {
    /// vCPUs one instance commits; 0 leaves the vCPU room out of the count.
    pub vcpus: u32,
    /// MiB of memory one instance commits; 0 leaves the memory room out of the count.
    pub memory_mb: u64,
}

impl InstanceSize {
    /// The template's own `vcpus` and `memory_mb`; `None` when both are 0 (nothing to
    /// divide by).
    pub fn of_template(template: &Template) -> Option<InstanceSize> {
        (template.vcpus > 0 || template.memory_mb > 0).then(|| InstanceSize {
            vcpus: template.vcpus,
            memory_mb: u64::from(template.memory_mb),
        })
    }
}

/// What one look at a provider found ([`Provider::observe`]).
#[derive(Debug, Default)]
pub struct Observation {
    /// Every instance [`Provider::list`] reports, each with its reading when it is alive
    /// and was measured.
    pub instances: Vec<(ProviderInstance, Option<InstanceMetrics>)>,
    /// Whether the live instances were measured (there were some).
    pub measured: bool,
    /// Why there are no readings, when measuring failed: the list stands without them.
    pub metrics_error: Option<ProviderError>,
}

impl Observation {
    /// Each of `list` with its reading taken out of `readings`.
    pub fn joined(
        list: Vec<ProviderInstance>,
        mut readings: std::collections::HashMap<InstanceId, InstanceMetrics>,
        measured: bool,
        metrics_error: Option<ProviderError>,
    ) -> Observation {
        let instances = list
            .into_iter()
            .map(|p| {
                let reading = readings.remove(&p.instance_id);
                (p, reading)
            })
            .collect();
        Observation {
            instances,
            measured,
            metrics_error,
        }
    }
}

/// A place instances run.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// The provider's name (`process`, …), as in a group's `provider` field.
    fn name(&self) -> &str;

    /// Starts an instance. Idempotent on `instance_id`.
    async fn create(&self, request: &CreateRequest) -> Result<ProviderInstance, ProviderError>;

    /// Stops and removes an instance: a graceful stop, then a forced one after `grace`.
    /// Deleting an instance that is already gone succeeds.
    async fn delete(&self, id: &InstanceId, grace: Duration) -> Result<(), ProviderError>;

    /// Pauses an instance (it keeps its memory but gets no CPU).
    async fn pause(&self, id: &InstanceId) -> Result<(), ProviderError>;

    /// Resumes a paused instance.
    async fn resume(&self, id: &InstanceId) -> Result<(), ProviderError>;

    /// Every instance this Swell owns on the provider, alive or not, read from the
    /// instances' own tags.
    async fn list(&self) -> Result<Vec<ProviderInstance>, ProviderError>;

    /// Resource use of the given instances; ones that are gone are left out.
    async fn metrics(
        &self,
        ids: &[InstanceId],
    ) -> Result<Vec<(InstanceId, InstanceMetrics)>, ProviderError>;

    /// Lists every instance and measures the live ones: what the controller's observer
    /// does once per interval. The default calls [`list`](Provider::list), then
    /// [`metrics`](Provider::metrics) for the instances that have not exited; a
    /// provider that can do both in one pass overrides it.
    async fn observe(&self) -> Result<Observation, ProviderError> {
        let list = self.list().await?;
        let live: Vec<InstanceId> = list
            .iter()
            .filter(|p| p.state != ObservedState::Exited)
            .map(|p| p.instance_id.clone())
            .collect();
        let (mut readings, mut metrics_error) = (std::collections::HashMap::new(), None);
        if !live.is_empty() {
            match self.metrics(&live).await {
                Ok(r) => readings.extend(r),
                Err(e) => metrics_error = Some(e),
            }
        }
        Ok(Observation::joined(
            list,
            readings,
            !live.is_empty(),
            metrics_error,
        ))
    }

    /// Takes the instance out of any provider-side load balancer (an Octavia pool) and
    /// waits up to `drain_timeout` for it to finish what it serves; the controller calls
    /// it before [`delete`](Provider::delete). Providers without one do nothing.
    async fn drain(&self, id: &InstanceId, drain_timeout: Duration) -> Result<(), ProviderError> {
        let _ = (id, drain_timeout);
        Ok(())
    }

    /// The room left for new instances; `None` when unknown or unlimited.
    async fn capacity(&self) -> Result<Option<ProviderCapacity>, ProviderError> {
        Ok(None)
    }

    /// The real size of one instance of `template` on this provider, by which the
    /// controller divides [`capacity`](Provider::capacity) to cap a scale-out. The
    /// default is the template's own `vcpus` and `memory_mb`
    /// ([`InstanceSize::of_template`]); a provider whose instances are sized by
    /// something else (an OpenStack flavor) reports that instead, since a template
    /// commonly leaves `vcpus`/`memory_mb` at their defaults. `None`: unknown, and
    /// only the instance count caps.
    async fn instance_size(
        &self,
        template: &Template,
    ) -> Result<Option<InstanceSize>, ProviderError> {
        Ok(InstanceSize::of_template(template))
    }

    /// Removes what the provider keeps for a whole group rather than for one instance
    /// (the OpenStack provider: the group's own security group), once the group is
    /// being deleted and its last instance is gone; the controller calls it on each of
    /// the group's providers before the group's record goes. It must leave alone
    /// anything still in use and be safe to call again. Providers without such things
    /// do nothing.
    async fn group_deleted(&self, tenant: &TenantId, group: &str) -> Result<(), ProviderError> {
        let _ = (tenant, group);
        Ok(())
    }

    /// The provider's hypervisor hosts, each up or down with its VMs and load (the
    /// `qemu` provider); `None` for a provider without hosts of its own.
    async fn hosts(&self) -> Result<Option<Vec<qemu::hosts::HostStatus>>, ProviderError> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lists `a` (running) and `b` (exited); measures what it is asked for, or fails.
    struct TwoInstances {
        metrics_fail: bool,
    }

    #[async_trait]
    impl Provider for TwoInstances {
        fn name(&self) -> &str {
            "two"
        }
        async fn create(&self, _: &CreateRequest) -> Result<ProviderInstance, ProviderError> {
            Err(ProviderError::Backend("not here".into()))
        }
        async fn delete(&self, _: &InstanceId, _: Duration) -> Result<(), ProviderError> {
            Ok(())
        }
        async fn pause(&self, id: &InstanceId) -> Result<(), ProviderError> {
            Err(ProviderError::NotFound(id.clone()))
        }
        async fn resume(&self, id: &InstanceId) -> Result<(), ProviderError> {
            Err(ProviderError::NotFound(id.clone()))
        }
        async fn list(&self) -> Result<Vec<ProviderInstance>, ProviderError> {
            let instance = |id: &str, state| ProviderInstance {
                instance_id: InstanceId(id.into()),
                tenant: "default".into(),
                group: "g".into(),
                native_id: id.into(),
                host: "h".into(),
                address: None,
                state,
            };
            Ok(vec![
                instance("a", ObservedState::Running),
                instance("b", ObservedState::Exited),
            ])
        }
        async fn metrics(
            &self,
            ids: &[InstanceId],
        ) -> Result<Vec<(InstanceId, InstanceMetrics)>, ProviderError> {
            if self.metrics_fail {
                return Err(ProviderError::Backend("stats refused".into()));
            }
            Ok(ids
                .iter()
                .map(|id| {
                    let m = InstanceMetrics {
                        cpu_percent: 7.0,
                        memory_mb: 1.0,
                        steal_percent: None,
                    };
                    (id.clone(), m)
                })
                .collect())
        }
    }

    fn readings(o: &Observation) -> Vec<(&str, Option<f64>)> {
        o.instances
            .iter()
            .map(|(p, m)| (p.instance_id.as_str(), m.map(|m| m.cpu_percent)))
            .collect()
    }

    #[tokio::test]
    async fn the_default_observation_lists_then_measures_the_live_instances() {
        let o = TwoInstances {
            metrics_fail: false,
        }
        .observe()
        .await
        .unwrap();
        assert!(o.measured && o.metrics_error.is_none());
        // The exited instance is listed, and not measured.
        assert_eq!(readings(&o), [("a", Some(7.0)), ("b", None)]);

        // A failed measurement leaves the list standing, with the reason.
        let o = TwoInstances { metrics_fail: true }.observe().await.unwrap();
        assert!(o.measured);
        assert!(
            o.metrics_error
                .as_ref()
                .is_some_and(|e| e.to_string().contains("stats refused"))
        );
        assert_eq!(readings(&o), [("a", None), ("b", None)]);
    }
}
