//! Metric collection: the providers' readings, pushed readings, the metric sources'
//! rounds and the load balancer's traffic, into the group's window.

use super::*;

/// Reads of one `ssh` source round that run at once.
pub(super) const SSH_READS_AT_ONCE: usize = 16;

impl GroupWorker {
    /// Keeps pushed readings: group-level ones go straight into the window, per-instance
    /// ones wait for the next sample tick, where they are averaged like provider readings.
    pub(super) async fn take_pushed(&mut self, readings: Vec<PushedReading>) {
        let running = self
            .instances
            .iter()
            .filter(|i| i.status == InstanceStatus::Running)
            .count() as u32;
        for r in readings {
            match r.instance {
                Some(id) => {
                    if let Ok(mut latest) = self.latest.lock() {
                        let m = latest.entry(id.clone()).or_insert(InstanceMetrics {
                            cpu_percent: 0.0,
                            memory_mb: 0.0,
                            steal_percent: None,
                        });
                        match r.metric {
                            Metric::Cpu => m.cpu_percent = r.value,
                            Metric::Memory => m.memory_mb = r.value,
                            _ => {}
                        }
                    }
                    self.pushed_instance.insert((r.metric, id), (r.value, r.at));
                }
                None => {
                    self.pushed_group.insert(r.metric, r.at);
                    self.observe(MetricSample {
                        at: r.at,
                        metric: r.metric,
                        value: r.value,
                        instances: running,
                    });
                }
            }
        }
        self.save_memory().await;
    }

    /// Samples the running instances and feeds the group's window. Pushed readings
    /// take precedence over the provider's and the load balancer's for their metric
    /// while fresh (received within two metrics intervals).
    pub(super) async fn collect(&mut self) {
        let group = self.group.clone();
        let instances = Arc::clone(&self.instances);
        let readings = self.collect_from(&group, &instances);
        let now = self.controller.clock.now();
        let prune = self
            .points_pruned_at
            .is_none_or(|at| now.since(at) >= crate::metric_history::PRUNE_EVERY);
        if prune {
            self.points_pruned_at = Some(now);
        }
        let interval = crate::metric_history::interval(
            &group,
            self.points_at,
            now,
            &instances,
            &self.window,
            readings,
            prune,
        );
        self.points_at = Some(now);
        // Written with every other group's by the controller's flush, not here.
        self.controller.metric_history.queue(interval);
        self.save_memory().await;
    }

    /// [`GroupWorker::collect`] over the worker's own instance records; returns each
    /// running instance's latest reading.
    fn collect_from(
        &mut self,
        group: &GroupRecord,
        instances: &[InstanceRecord],
    ) -> Vec<(InstanceId, InstanceMetrics)> {
        let c = self.controller.clone();
        let running: Vec<&InstanceRecord> = instances
            .iter()
            .filter(|i| i.status == InstanceStatus::Running)
            .collect();
        let now = c.clock.now();
        let freshness = group.spec.metrics_interval.saturating_mul(2);
        let fresh = |at: Timestamp| now.since(at) <= freshness;
        self.pushed_instance.retain(|_, (_, at)| fresh(*at));
        self.pushed_group.retain(|_, at| fresh(*at));
        // Metrics a fresh push speaks for: the provider's readings of them are ignored.
        let mut pushed: HashSet<Metric> = self.pushed_group.keys().copied().collect();
        let per_instance: HashSet<Metric> = self.pushed_instance.keys().map(|(m, _)| *m).collect();
        for metric in per_instance {
            if pushed.contains(&metric) {
                continue;
            }
            pushed.insert(metric);
            let values = running.iter().map(|i| {
                let value = self.pushed_instance.get(&(metric, i.id.clone()));
                (*i, value.map(|(value, _)| *value))
            });
            let sample = average_sample(values, group.spec.warmup, now, metric);
            if let Some(sample) = sample {
                self.observe(sample);
            }
        }
        // Each provider's observer measured its instances; this group reads its own,
        // one slot per running instance (no map of its own: this runs for every
        // instance of the fleet at every metrics interval).
        let mut provided: Vec<Option<InstanceMetrics>> = vec![None; running.len()];
        for w in &self.observed {
            let (name, snapshot) = (&w.name, w.rx.borrow());
            let Some(observed) = snapshot.groups.get(&self.key) else {
                continue;
            };
            for (slot, i) in provided.iter_mut().zip(&running) {
                if &i.provider == name
                    && let Some(m) = observed.reading(&i.id)
                {
                    *slot = Some(*m);
                }
            }
        }
        let ssh = ssh_source(&group.spec);
        let claimed: HashSet<Metric> = group
            .spec
            .metric_sources
            .iter()
            .flat_map(|s| s.metrics())
            .collect();
        // Each running instance's latest reading, as the history keeps it: the
        // provider's, with an `ssh` source's CPU standing until its next round, or an
        // earlier one (pushed, or an `ssh` round's) where the provider has none.
        let mut shown: Vec<(InstanceId, InstanceMetrics)> = Vec::with_capacity(running.len());
        if let Ok(mut latest) = self.latest.lock() {
            // Made again from the live instances at each collection: the reading of an
            // instance that is gone goes with it.
            let mut was = std::mem::replace(
                &mut *latest,
                foldhash::HashMapExt::with_capacity(instances.len()),
            );
            for (i, m) in running.iter().zip(&provided) {
                let now_shown = match (m, was.remove(&i.id)) {
                    (Some(m), Some(earlier)) if ssh.is_some() => Some(InstanceMetrics {
                        cpu_percent: earlier.cpu_percent,
                        ..*m
                    }),
                    (Some(m), _) => Some(*m),
                    (None, earlier) => earlier,
                };
                if let Some(m) = now_shown {
                    latest.insert(i.id.clone(), m);
                    shown.push((i.id.clone(), m));
                }
            }
            // A pushed reading of an instance not yet running waits for it.
            for i in instances
                .iter()
                .filter(|i| i.status != InstanceStatus::Running)
            {
                if let Some(m) = was.remove(&i.id) {
                    latest.insert(i.id.clone(), m);
                }
            }
        }
        // Steal only where the provider measures it (qemu's host-side reading).
        for (metric, pick) in [
            (
                Metric::Cpu,
                (|m: &InstanceMetrics| Some(m.cpu_percent)) as fn(&InstanceMetrics) -> Option<f64>,
            ),
            (Metric::Memory, |m| Some(m.memory_mb)),
            (Metric::Steal, |m| m.steal_percent),
        ] {
            // A metric source speaks for its metrics (its rounds feed the window).
            if pushed.contains(&metric) || claimed.contains(&metric) {
                continue;
            }
            let values = running
                .iter()
                .zip(&provided)
                .map(|(i, m)| (*i, m.as_ref().and_then(pick)));
            if let Some(sample) = average_sample(values, group.spec.warmup, now, metric) {
                self.observe(sample);
            }
        }
        if group.spec.metric_sources.is_empty() {
            self.source_problem = None;
        } else {
            self.start_source_round(group, ssh, &running);
        }
        // The load balancer's traffic, as scaling metrics.
        if let Some(lb) = self.lb() {
            let t = lb.traffic();
            let per_instance = t.request_rate / running.len().max(1) as f64;
            let mut values = vec![
                (Metric::RequestRate, t.request_rate),
                (Metric::RequestRatePerInstance, per_instance),
                (Metric::InFlight, t.in_flight as f64),
                (Metric::ErrorRate, t.error_ratio * 100.0),
            ];
            if let Some(p99) = t.latency_p99 {
                values.push((Metric::LatencyP99, p99.as_secs_f64() * 1000.0));
            }
            for (metric, value) in values {
                if pushed.contains(&metric) || claimed.contains(&metric) {
                    continue;
                }
                self.observe(MetricSample {
                    at: now,
                    metric,
                    value,
                    instances: running.len() as u32,
                });
            }
        }
        shown
    }

    /// Starts a round of the metric sources, unless the last one is still under way:
    /// the `ssh` source's reads of the running instances (at most
    /// [`SSH_READS_AT_ONCE`] at a time) and the `prometheus` queries, each bounded by
    /// its source's timeout, all off the worker's loop; the round reports back as
    /// [`WorkerInput::SourceRound`].
    pub(super) fn start_source_round(
        &mut self,
        group: &GroupRecord,
        ssh: Option<SshSourceSpec>,
        running: &[&InstanceRecord],
    ) {
        if self.source_round.as_ref().is_some_and(|r| !r.is_finished()) {
            return;
        }
        // The key is a name in the tenant's own key directory (validation refuses a
        // path), so no group can make the server use another tenant's file.
        let ssh = ssh.map(|mut s| {
            let key = self.ssh_keys_dir(group).join(&s.private_key_file);
            s.private_key_file = key.display().to_string();
            s
        });
        let queries: Vec<swell_core::PrometheusSourceSpec> = group
            .spec
            .metric_sources
            .iter()
            .filter_map(|s| match s {
                MetricSourceSpec::Prometheus(p) => Some(p.clone()),
                MetricSourceSpec::Ssh(_) => None,
            })
            .collect();
        let (tenant, name) = (group.tenant.to_string(), group.spec.name.clone());
        let client = self.prometheus.clone();
        let dir = self.known_hosts_dir(group);
        let targets: Vec<(InstanceId, Option<String>)> = match ssh {
            Some(_) => running
                .iter()
                .map(|i| {
                    let host = i.address.as_deref().and_then(swell_providers::ssh::host_of);
                    (i.id.clone(), host)
                })
                .collect(),
            None => Vec::new(),
        };
        if targets.is_empty() && queries.is_empty() {
            return;
        }
        let source = ssh.unwrap_or_else(|| SshSourceSpec {
            user: String::new(),
            port: 22,
            private_key_file: String::new(),
            command: String::new(),
            timeout: Duration::ZERO,
        });
        let tx = self.tx.clone();
        let cancel = self.controller.cancel.clone();
        self.source_round = Some(tokio::spawn(tracing::Instrument::in_current_span(
            async move {
                let source = Arc::new(source);
                let limit = Arc::new(tokio::sync::Semaphore::new(SSH_READS_AT_ONCE));
                let mut reads = JoinSet::new();
                for (id, host) in targets {
                    let (source, limit, dir) = (source.clone(), limit.clone(), dir.clone());
                    reads.spawn(async move {
                        let Some(host) = host else {
                            return (id, Err("the instance has no IP address".to_string()));
                        };
                        let Ok(_permit) = limit.acquire_owned().await else {
                            return (id, Err("stopped".to_string()));
                        };
                        if let Err(e) = std::fs::create_dir_all(&dir) {
                            return (id, Err(format!("{}: {e}", dir.display())));
                        }
                        let known = dir.join(id.as_str());
                        let read = swell_providers::ssh::read_top(&source, &host, &known).await;
                        (id, read.map_err(|e| e.to_string()))
                    });
                }
                let mut values = JoinSet::new();
                for q in queries {
                    let (client, tenant, name) = (client.clone(), tenant.clone(), name.clone());
                    values.spawn(async move {
                        let value = client.query(&q, &tenant, &name).await;
                        (q.metric, value.map_err(|e| e.to_string()))
                    });
                }
                let mut round = SourceRound {
                    reads: Vec::new(),
                    values: Vec::new(),
                };
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        next = values.join_next() => match next {
                            Some(Ok(value)) => round.values.push(value),
                            Some(Err(_)) => {}
                            None => break,
                        },
                    }
                }
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        next = reads.join_next() => match next {
                            Some(Ok(read)) => round.reads.push(read),
                            Some(Err(_)) => {}
                            None => break,
                        },
                    }
                }
                // Waits for room in the queue: a round is one per group at a time.
                let _ = tx.send(WorkerInput::SourceRound(round)).await;
            },
        )));
    }

    /// The tenant's directory of SSH private keys: `<ssh_keys_dir>/<tenant>/`.
    pub(super) fn ssh_keys_dir(&self, group: &GroupRecord) -> std::path::PathBuf {
        self.controller
            .options
            .ssh_keys_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("swell-ssh-keys"))
            .join(group.tenant.as_str())
    }

    /// Where the `ssh` source keeps the group's known_hosts files, one per instance:
    /// `<known_hosts_dir>/<tenant>/<group>/`.
    pub(super) fn known_hosts_dir(&self, group: &GroupRecord) -> std::path::PathBuf {
        self.controller
            .options
            .known_hosts_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("swell-known_hosts"))
            .join(group.tenant.as_str())
            .join(&group.spec.name)
    }

    /// Removes the known_hosts files of the group's instances that are gone.
    pub(super) fn sweep_known_hosts(&self, group: &GroupRecord, live: &[InstanceRecord]) {
        let Ok(entries) = std::fs::read_dir(self.known_hosts_dir(group)) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !live.iter().any(|i| name == i.id.as_str()) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Feeds a finished round into the window: each `prometheus` value as the group's
    /// sample of its metric, and the `ssh` reads' `cpu` and `steal` averaged over the
    /// instances it read that are still running and out of warmup, unless a fresh push
    /// speaks for the metric. Failed reads are shown in the worker's status.
    pub(super) async fn take_source_round(&mut self, round: SourceRound) {
        let group = self.group.clone();
        let failed: Vec<String> = round
            .reads
            .iter()
            .filter_map(|(id, r)| r.as_ref().err().map(|e| format!("{id}: {e}")))
            .collect();
        let mut problems: Vec<String> = Vec::new();
        if !failed.is_empty() {
            problems.push(format!(
                "ssh: {} of {} instances unreadable ({})",
                failed.len(),
                round.reads.len(),
                failed.join("; ")
            ));
        }
        for (metric, value) in &round.values {
            if let Err(e) = value {
                problems.push(format!("prometheus ({metric}): {e}"));
            }
        }
        let problem = (!problems.is_empty()).then(|| problems.join("; "));
        if problem != self.source_problem {
            match &problem {
                Some(p) => tracing::warn!(group = %group.spec.name, "metric source {p}"),
                None => {
                    tracing::info!(group = %group.spec.name, "metric sources: all reads succeed again")
                }
            }
        }
        self.source_problem = problem;
        self.show();
        let ok: HashMap<&InstanceId, TopCpu> = round
            .reads
            .iter()
            .filter_map(|(id, r)| r.as_ref().ok().map(|t| (id, *t)))
            .collect();
        if let Ok(mut latest) = self.latest.lock() {
            for (id, t) in &ok {
                let m = latest.entry((*id).clone()).or_insert(InstanceMetrics {
                    cpu_percent: 0.0,
                    memory_mb: 0.0,
                    steal_percent: None,
                });
                m.cpu_percent = t.cpu;
            }
        }
        let c = self.controller.clone();
        let instances = self.instances.clone();
        if !round.reads.is_empty() {
            self.sweep_known_hosts(&group, &instances);
        }
        let running: Vec<&InstanceRecord> = instances
            .iter()
            .filter(|i| i.status == InstanceStatus::Running)
            .collect();
        let now = c.clock.now();
        let freshness = group.spec.metrics_interval.saturating_mul(2);
        for (metric, pick) in [
            (
                Metric::Cpu,
                (|t: &TopCpu| Some(t.cpu)) as fn(&TopCpu) -> Option<f64>,
            ),
            (Metric::Steal, |t| t.steal),
        ] {
            let pushed_fresh = self
                .pushed_group
                .get(&metric)
                .is_some_and(|at| now.since(*at) <= freshness)
                || self
                    .pushed_instance
                    .iter()
                    .any(|((m, _), (_, at))| *m == metric && now.since(*at) <= freshness);
            if pushed_fresh {
                continue;
            }
            let values = running.iter().map(|i| (*i, ok.get(&i.id).and_then(pick)));
            let sample = average_sample(values, group.spec.warmup, now, metric);
            if let Some(sample) = sample {
                self.observe(sample);
            }
        }
        for (metric, value) in round.values {
            let Ok(value) = value else {
                continue;
            };
            if self
                .pushed_group
                .get(&metric)
                .is_some_and(|at| now.since(*at) <= freshness)
            {
                continue;
            }
            self.observe(MetricSample {
                at: now,
                metric,
                value,
                instances: running.len() as u32,
            });
        }
        self.save_memory().await;
    }
}

/// The group's average of one metric over its running instances (those in warmup left
/// out), as a window sample, from each instance and its value if it has one; `None`
/// when none has.
pub(super) fn average_sample<'a>(
    values: impl Iterator<Item = (&'a InstanceRecord, Option<f64>)>,
    warmup: Duration,
    now: Timestamp,
    metric: Metric,
) -> Option<MetricSample> {
    let readings: Vec<InstanceReading> = values
        .filter_map(|(i, value)| {
            Some(InstanceReading {
                value: value?,
                started_at: i.started_at.unwrap_or(i.created_at),
            })
        })
        .collect();
    group_average(&readings, warmup, now).map(|(value, instances)| MetricSample {
        at: now,
        metric,
        value,
        instances,
    })
}

/// The group's `ssh` metric source, if it has one.
pub(super) fn ssh_source(spec: &swell_core::GroupSpec) -> Option<SshSourceSpec> {
    spec.metric_sources.iter().find_map(|s| match s {
        MetricSourceSpec::Ssh(ssh) => Some(ssh.clone()),
        MetricSourceSpec::Prometheus(_) => None,
    })
}
