//! One observer per provider instance (the shape of a kube-rs reflector): it lists and
//! measures *all* of Swell's instances on its provider once per interval — one `/proc`
//! pass, one Docker list, one paged Nova list — and publishes the result as one shared
//! snapshot ([`Observation`]) that every group worker on that provider reads. Workers
//! never call `Provider::list` or `Provider::metrics` themselves, so the provider calls
//! per minute do not grow with the number of groups.
//!
//! The interval is the shortest `metrics_interval` among the groups that read it (a
//! group that wants fresh readings every second gets them; others read the same
//! snapshot). A snapshot says when its list was taken ([`Observation::listed_at`]): the
//! planner only finds an instance dead by a list taken after it started.

use super::*;
use foldhash::HashMapExt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::watch;

/// What a worker reads of one of its providers' observers.
pub(super) struct Watch {
    /// The provider's name, as in the group's spec.
    pub(super) name: String,
    /// Its latest snapshot.
    pub(super) rx: watch::Receiver<Arc<Observation>>,
    /// Its lists started so far.
    pub(super) started: Arc<AtomicU64>,
}

impl Watch {
    /// The number of the last list started: a snapshot numbered above it is taken
    /// after now.
    pub(super) fn lists_started(&self) -> u64 {
        self.started.load(Ordering::Acquire)
    }
}

/// The latest list and readings of one provider.
#[derive(Debug, Default)]
pub(super) struct Observation {
    /// When the list was taken; `None`: not yet, or the last list failed.
    pub(super) listed_at: Option<Timestamp>,
    /// The number of the list (1, 2, …; 0: none yet), counted when it starts: a
    /// snapshot numbered above [`ObserverHandle::started`]'s value at some moment was
    /// taken after that moment, whatever the clock says.
    pub(super) number: u64,
    /// What the provider reports, by group. The observer's maps hash with foldhash, not
    /// the standard library's SipHash: they are made again over the whole fleet at every
    /// interval (SipHash was about 3 % of a run's CPU at 100,000 instances).
    pub(super) groups: foldhash::HashMap<GroupKey, Arc<GroupObservation>>,
}

/// What one provider reports of one group.
#[derive(Debug, Default)]
pub(super) struct GroupObservation {
    /// Its instances, alive or not, in the order of their ids.
    pub(super) instances: Vec<ProviderInstance>,
    /// The reading of each of [`instances`](Self::instances), in the same order: no map
    /// of its own, since it is made again for the whole fleet at every interval.
    pub(super) readings: Vec<Option<InstanceMetrics>>,
    /// Changes when an instance appears, goes or changes state: the worker reconciles
    /// then, and not at every snapshot.
    pub(super) fingerprint: u64,
}

impl GroupObservation {
    /// The reading of the instance `id`, if it is listed and was measured.
    pub(super) fn reading(&self, id: &InstanceId) -> Option<&InstanceMetrics> {
        let at = self
            .instances
            .binary_search_by(|p| p.instance_id.as_str().cmp(id.as_str()))
            .ok()?;
        self.readings.get(at)?.as_ref()
    }
}

/// A running observer: its latest snapshot and the metrics intervals of its readers.
pub(super) struct ObserverHandle {
    pub(super) rx: watch::Receiver<Arc<Observation>>,
    /// Lists started so far.
    pub(super) started: Arc<AtomicU64>,
    /// Asks for a list now ([`Controller::observe_round`]).
    pub(super) poke: Arc<tokio::sync::Notify>,
    /// Each reading group's `metrics_interval`: the observer lists at the shortest.
    pub(super) intervals: Arc<Mutex<HashMap<GroupKey, Duration>>>,
}

/// The key of a provider instance: its address (two names for one provider share an
/// observer; two providers of one name, as a tenant-aware registry may hold, do not).
pub(super) fn provider_key(provider: &Arc<dyn Provider>) -> usize {
    Arc::as_ptr(provider) as *const () as usize
}

/// How long an observer waits when no group reads it any more (it ends then).
const IDLE_INTERVAL: Duration = Duration::from_secs(5);

impl Controller {
    /// The latest snapshot of `provider` for the group `key`, starting its observer if
    /// none runs, and registering the group's `metrics_interval` with it.
    pub(super) fn observe(
        self: &Arc<Self>,
        provider: &Arc<dyn Provider>,
        key: &GroupKey,
        interval: Duration,
        name: &str,
    ) -> Watch {
        let Ok(mut observers) = self.observers.lock() else {
            // A poisoned lock: an empty snapshot that never changes; nothing is found dead.
            return Watch {
                name: name.to_string(),
                rx: watch::channel(Arc::new(Observation::default())).1,
                started: Arc::new(AtomicU64::new(0)),
            };
        };
        let handle = observers.entry(provider_key(provider)).or_insert_with(|| {
            let (tx, rx) = watch::channel(Arc::new(Observation::default()));
            let intervals = Arc::new(Mutex::new(HashMap::new()));
            let started = Arc::new(AtomicU64::new(0));
            let poke = Arc::new(tokio::sync::Notify::new());
            let task = run_observer(
                self.clone(),
                provider.clone(),
                tx,
                intervals.clone(),
                started.clone(),
                poke.clone(),
            );
            tokio::spawn(tracing::Instrument::instrument(
                task,
                tracing::info_span!("observer", provider = %provider.name()),
            ));
            ObserverHandle {
                rx,
                started,
                poke,
                intervals,
            }
        });
        if let Ok(mut intervals) = handle.intervals.lock() {
            intervals.insert(key.clone(), interval);
        }
        Watch {
            name: name.to_string(),
            rx: handle.rx.clone(),
            started: handle.started.clone(),
        }
    }

    /// Has every observer list and measure once now, and waits until each has
    /// published (with [`ControllerOptions::manual_observation`], the only way they
    /// list after their first round).
    pub async fn observe_round(&self) {
        let handles: Vec<(Arc<tokio::sync::Notify>, watch::Receiver<Arc<Observation>>)> =
            match self.observers.lock() {
                Ok(o) => o.values().map(|h| (h.poke.clone(), h.rx.clone())).collect(),
                Err(_) => return,
            };
        for (poke, mut rx) in handles {
            rx.mark_unchanged();
            poke.notify_one();
            let _ = rx.changed().await;
        }
    }

    /// A group stops reading its providers' snapshots (it is gone or moved).
    pub(super) fn unobserve(&self, key: &GroupKey) {
        if let Ok(observers) = self.observers.lock() {
            for h in observers.values() {
                if let Ok(mut intervals) = h.intervals.lock() {
                    intervals.remove(key);
                }
            }
        }
    }
}

/// The observer's loop: list, measure the live instances, publish; then wait for the
/// shortest interval of its readers. A failed list publishes `listed_at: None` with the
/// previous instances, so nothing is found dead on a provider that did not answer.
async fn run_observer(
    controller: Arc<Controller>,
    provider: Arc<dyn Provider>,
    tx: watch::Sender<Arc<Observation>>,
    intervals: Arc<Mutex<HashMap<GroupKey, Duration>>>,
    lists: Arc<AtomicU64>,
    poke: Arc<tokio::sync::Notify>,
) {
    let cancel = controller.cancel.clone();
    let name = provider.name().to_string();
    loop {
        let started = tokio::time::Instant::now();
        let number = lists.fetch_add(1, Ordering::AcqRel) + 1;
        let now = controller.clock.now();
        controller.stats.provider_call(&name, "list");
        let next = match provider.observe().await {
            Ok(observed) => {
                if observed.measured {
                    controller.stats.provider_call(&name, "metrics");
                }
                if let Some(e) = &observed.metrics_error {
                    controller.stats.provider_error(&name, "metrics");
                    tracing::debug!("provider metrics: {e}");
                }
                // Sorting a large fleet into groups is pure CPU (tens of milliseconds at
                // 100,000 instances): off the runtime's threads, so the workers' passes
                // are not held up behind it.
                match tokio::task::spawn_blocking(move || by_group(observed.instances)).await {
                    Ok(groups) => Observation {
                        listed_at: Some(now),
                        number,
                        groups,
                    },
                    // As for a failed list: the last groups, and no list time, so that
                    // nothing is found dead by it.
                    Err(e) => {
                        tracing::warn!("sorting the list into groups: {e}");
                        Observation {
                            listed_at: None,
                            number,
                            groups: tx.borrow().groups.clone(),
                        }
                    }
                }
            }
            Err(e) => {
                controller.stats.provider_error(&name, "list");
                tracing::warn!("cannot list instances: {e}");
                Observation {
                    listed_at: None,
                    number,
                    groups: tx.borrow().groups.clone(),
                }
            }
        };
        tx.send_replace(Arc::new(next));
        let interval = intervals
            .lock()
            .ok()
            .and_then(|i| i.values().min().copied())
            .unwrap_or(IDLE_INTERVAL);
        let timer = async {
            if controller.options.manual_observation {
                std::future::pending::<()>().await
            } else {
                tokio::time::sleep_until(started + interval).await
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = poke.notified() => {}
            _ = timer => {}
        }
    }
}

/// Groups a provider's observation by (tenant, group), each with a fingerprint of its
/// instances and their states (the same instances give the same one, whatever the
/// order).
fn by_group(
    observed: Vec<(ProviderInstance, Option<InstanceMetrics>)>,
) -> foldhash::HashMap<GroupKey, Arc<GroupObservation>> {
    // This runs over the whole fleet at every interval: each instance is placed by
    // borrowed names, and each group's owned key is made once, not once per instance.
    let mut slots: foldhash::HashMap<(&str, &str), usize> = foldhash::HashMap::new();
    let mut keys: Vec<Option<GroupKey>> = Vec::new();
    let placed: Vec<usize> = observed
        .iter()
        .map(|(p, _)| {
            *slots
                .entry((p.tenant.as_str(), p.group.as_str()))
                .or_insert_with(|| {
                    let key = TenantId::new(p.tenant.clone())
                        .ok()
                        .map(|t| (t, p.group.clone()));
                    keys.push(key);
                    keys.len() - 1
                })
        })
        .collect();
    drop(slots);
    let mut groups: Vec<Vec<(ProviderInstance, Option<InstanceMetrics>)>> =
        keys.iter().map(|_| Vec::new()).collect();
    for (seen, slot) in observed.into_iter().zip(placed) {
        groups[slot].push(seen);
    }
    keys.into_iter()
        .zip(groups)
        .filter_map(|(key, mut seen)| {
            let key = key?;
            seen.sort_unstable_by(|(a, _), (b, _)| {
                a.instance_id.as_str().cmp(b.instance_id.as_str())
            });
            let mut h = foldhash::fast::FixedState::default().build_hasher();
            for (p, _) in &seen {
                p.instance_id.as_str().hash(&mut h);
                (p.state as u8).hash(&mut h);
            }
            let (instances, readings) = seen.into_iter().unzip();
            Some((
                key,
                Arc::new(GroupObservation {
                    instances,
                    readings,
                    fingerprint: h.finish(),
                }),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(id: &str, group: &str, state: ObservedState) -> ProviderInstance {
        ProviderInstance {
            instance_id: InstanceId(id.into()),
            tenant: "default".into(),
            group: group.into(),
            native_id: id.into(),
            host: "h".into(),
            address: None,
            state,
        }
    }

    #[test]
    fn groups_a_list_and_fingerprints_what_changes() {
        let reading = InstanceMetrics {
            cpu_percent: 5.0,
            memory_mb: 1.0,
            steal_percent: None,
        };
        let one = by_group(vec![
            (inst("b", "g", ObservedState::Running), None),
            (inst("a", "g", ObservedState::Running), Some(reading)),
            (inst("c", "h", ObservedState::Running), None),
        ]);
        let key = |g: &str| (TenantId::default_tenant(), g.to_string());
        assert_eq!(one.len(), 2);
        let g = &one[&key("g")];
        let ids: Vec<&str> = g.instances.iter().map(|p| p.instance_id.as_str()).collect();
        assert_eq!(ids, ["a", "b"], "in the order of their ids");
        // Each reading stays with its instance.
        assert_eq!(g.reading(&InstanceId("a".into())), Some(&reading));
        assert_eq!(g.reading(&InstanceId("b".into())), None);
        assert_eq!(g.reading(&InstanceId("c".into())), None, "another group's");
        // The same instances in another order: the same fingerprint.
        let two = by_group(vec![
            (inst("a", "g", ObservedState::Running), None),
            (inst("b", "g", ObservedState::Running), None),
        ]);
        assert_eq!(one[&key("g")].fingerprint, two[&key("g")].fingerprint);
        // One exited: another.
        let three = by_group(vec![
            (inst("a", "g", ObservedState::Running), None),
            (inst("b", "g", ObservedState::Exited), None),
        ]);
        assert_ne!(one[&key("g")].fingerprint, three[&key("g")].fingerprint);
    }
}
