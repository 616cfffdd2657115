//! An in-process provider for measuring the controller (`swell bench controller`):
//! instances are rows in memory, their CPU readings synthetic and varying so that the
//! groups' policies really scale out and in. It counts every call, so a benchmark or a
//! test can show how many provider calls the controller makes per minute.
//!
//! It runs nothing: a create is an insert, a delete a removal. It is not a test double
//! standing in for a real provider in a functional test; it is the workload generator of
//! a benchmark whose subject is the controller itself.

use crate::{
    CreateRequest, InstanceMetrics, ObservedState, Provider, ProviderError, ProviderInstance,
};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use swell_core::InstanceId;

/// How many times each provider call was made.
#[derive(Debug, Default)]
pub struct CallCounts {
    /// `create`.
    pub create: AtomicU64,
    /// `delete`.
    pub delete: AtomicU64,
    /// `list`.
    pub list: AtomicU64,
    /// `metrics`.
    pub metrics: AtomicU64,
    /// `capacity` and `instance_size`.
    pub capacity: AtomicU64,
}

impl CallCounts {
    /// Every call so far, of any kind.
    pub fn total(&self) -> u64 {
        [
            &self.create,
            &self.delete,
            &self.list,
            &self.metrics,
            &self.capacity,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }
}

/// The simulated provider (see the [module docs](self)).
pub struct SimulatedProvider {
    name: String,
    instances: Mutex<HashMap<InstanceId, ProviderInstance>>,
    calls: CallCounts,
    started: Instant,
    period: Duration,
    swing: f64,
}

impl SimulatedProvider {
    /// An empty provider called `name` whose CPU readings go round a sine around 50 %,
    /// `swing` percentage points either way (clamped to 0..=50), once every `period`.
    pub fn new(name: impl Into<String>, period: Duration, swing: f64) -> Self {
        SimulatedProvider {
            name: name.into(),
            instances: Mutex::new(HashMap::new()),
            calls: CallCounts::default(),
            started: Instant::now(),
            period: period.max(Duration::from_secs(1)),
            swing: swing.clamp(0.0, 50.0),
        }
    }

    /// The calls made so far.
    pub fn calls(&self) -> &CallCounts {
        &self.calls
    }

    /// The instances it holds now.
    pub fn len(&self) -> usize {
        self.instances.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether it holds no instance.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The CPU reading of an instance of `group` now: the sine, with a phase that
    /// depends on the group, so that groups scale at different moments.
    fn cpu(&self, group: &str) -> f64 {
        let phase = group
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        let turn = self.started.elapsed().as_secs_f64() / self.period.as_secs_f64()
            + (phase % 1000) as f64 / 1000.0;
        50.0 + self.swing * (turn * std::f64::consts::TAU).sin()
    }
}

fn poisoned() -> ProviderError {
    ProviderError::Backend("simulated provider: lock poisoned".into())
}

#[async_trait]
impl Provider for SimulatedProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn create(&self, request: &CreateRequest) -> Result<ProviderInstance, ProviderError> {
        self.calls.create.fetch_add(1, Ordering::Relaxed);
        let mut map = self.instances.lock().map_err(|_| poisoned())?;
        let instance = map
            .entry(request.instance_id.clone())
            .or_insert_with(|| ProviderInstance {
                instance_id: request.instance_id.clone(),
                tenant: request.tenant.to_string(),
                group: request.group.clone(),
                native_id: request.instance_id.to_string(),
                host: "simulated".into(),
                address: None,
                state: ObservedState::Running,
            });
        Ok(instance.clone())
    }

    async fn delete(&self, id: &InstanceId, _grace: Duration) -> Result<(), ProviderError> {
        self.calls.delete.fetch_add(1, Ordering::Relaxed);
        self.instances.lock().map_err(|_| poisoned())?.remove(id);
        Ok(())
    }

    async fn pause(&self, id: &InstanceId) -> Result<(), ProviderError> {
        let mut map = self.instances.lock().map_err(|_| poisoned())?;
        let i = map
            .get_mut(id)
            .ok_or_else(|| ProviderError::NotFound(id.clone()))?;
        i.state = ObservedState::Paused;
        Ok(())
    }

    async fn resume(&self, id: &InstanceId) -> Result<(), ProviderError> {
        let mut map = self.instances.lock().map_err(|_| poisoned())?;
        let i = map
            .get_mut(id)
            .ok_or_else(|| ProviderError::NotFound(id.clone()))?;
        i.state = ObservedState::Running;
        Ok(())
    }

    async fn list(&self) -> Result<Vec<ProviderInstance>, ProviderError> {
        self.calls.list.fetch_add(1, Ordering::Relaxed);
        let map = self.instances.lock().map_err(|_| poisoned())?;
        Ok(map.values().cloned().collect())
    }

    async fn metrics(
        &self,
        ids: &[InstanceId],
    ) -> Result<Vec<(InstanceId, InstanceMetrics)>, ProviderError> {
        self.calls.metrics.fetch_add(1, Ordering::Relaxed);
        let map = self.instances.lock().map_err(|_| poisoned())?;
        Ok(ids
            .iter()
            .filter_map(|id| {
                let i = map.get(id)?;
                Some((
                    id.clone(),
                    InstanceMetrics {
                        cpu_percent: self.cpu(&i.group),
                        memory_mb: 64.0,
                        steal_percent: None,
                    },
                ))
            })
            .collect())
    }

    /// One pass over the instances, counted as the list and the measurement it stands
    /// for (as the default's two calls would be).
    async fn observe(&self) -> Result<crate::Observation, ProviderError> {
        self.calls.list.fetch_add(1, Ordering::Relaxed);
        let map = self.instances.lock().map_err(|_| poisoned())?;
        let measured = map.values().any(|i| i.state != ObservedState::Exited);
        if measured {
            self.calls.metrics.fetch_add(1, Ordering::Relaxed);
        }
        let instances = map
            .values()
            .map(|i| {
                let reading = (i.state != ObservedState::Exited).then(|| InstanceMetrics {
                    cpu_percent: self.cpu(&i.group),
                    memory_mb: 64.0,
                    steal_percent: None,
                });
                (i.clone(), reading)
            })
            .collect();
        Ok(crate::Observation {
            instances,
            measured,
            metrics_error: None,
        })
    }

    async fn capacity(&self) -> Result<Option<crate::ProviderCapacity>, ProviderError> {
        self.calls.capacity.fetch_add(1, Ordering::Relaxed);
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use swell_core::{Template, TenantId};

    #[tokio::test]
    async fn keeps_instances_in_memory_and_counts_calls() {
        let p = SimulatedProvider::new("simulated", Duration::from_secs(60), 40.0);
        let request = CreateRequest {
            instance_id: InstanceId("a".into()),
            tenant: TenantId::default_tenant(),
            group: "g".into(),
            template: Template::default(),
        };
        p.create(&request).await.unwrap();
        // Idempotent on the id.
        p.create(&request).await.unwrap();
        assert_eq!(p.len(), 1);
        let readings = p
            .metrics(&[InstanceId("a".into()), InstanceId("gone".into())])
            .await
            .unwrap();
        assert_eq!(readings.len(), 1);
        let cpu = readings[0].1.cpu_percent;
        assert!((10.0..=90.0).contains(&cpu), "{cpu}");
        assert_eq!(p.list().await.unwrap().len(), 1);
        // One observation: the instance with the same reading, counted as a list and
        // a measurement.
        let seen = p.observe().await.unwrap();
        assert!(seen.measured && seen.metrics_error.is_none());
        assert_eq!(seen.instances.len(), 1);
        assert_eq!(seen.instances[0].0.instance_id.as_str(), "a");
        let observed_cpu = seen.instances[0].1.map(|m| m.cpu_percent);
        assert!(
            observed_cpu.is_some_and(|c| (c - cpu).abs() < 1.0),
            "{observed_cpu:?}"
        );
        p.delete(&InstanceId("a".into()), Duration::ZERO)
            .await
            .unwrap();
        assert!(p.is_empty());
        assert_eq!(p.calls().create.load(Ordering::Relaxed), 2);
        assert_eq!(p.calls().total(), 7);
    }
}
