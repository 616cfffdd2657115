//! The Prometheus page (`GET /v1/metrics`, and `GET /metrics` on the scrape listener
//! `swell serve --metrics-listen`): the controller's and the load balancers' counters,
//! gauges and histograms, in the OpenMetrics text format written by the
//! `prometheus-client` crate.
//!
//! The page is assembled at each scrape from what the controller counts
//! ([`crate::controller::ControllerStats`]), what the store holds (groups, live
//! instances) and each load balancer's totals, rather than kept in long-lived metric
//! objects: so one page can be cut to one tenant's series ([`Scope::Tenant`]) and a
//! deleted group's series leave with the group (only groups in the store appear).
//! Counters and histograms count since the server started; Prometheus computes the
//! rates (`rate(...)`, `histogram_quantile(...)`).
//!
//! Who sees what (docs/metrics.md): a tenant's credential (viewer or better) sees only
//! its tenant's groups' series, every one labelled `tenant`; an admin and the scrape
//! listener see every tenant's and the controller's own (pass durations, provider
//! calls), which name providers other tenants may have defined.

use crate::controller::Controller;
use crate::service::Service;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use std::collections::HashMap;
use std::sync::Arc;
use swell_core::{InstanceStatus, TenantId};
use swell_store::{Store, StoreError};

/// The content type of the page (OpenMetrics 1.0, which Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whose series a page holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every tenant's groups and the controller's own series (an admin, the scrape
    /// listener).
    All,
    /// One tenant's groups only.
    Tenant(TenantId),
}

/// The states whose instances are counted in `swell_group_instances` (the live ones;
/// terminated and failed rows are history).
const LIVE: [InstanceStatus; 5] = [
    InstanceStatus::Pending,
    InstanceStatus::Running,
    InstanceStatus::Paused,
    InstanceStatus::Draining,
    InstanceStatus::Terminating,
];

/// Renders the page for `scope`.
pub async fn render(
    controller: &Controller,
    store: &dyn Store,
    scope: &Scope,
) -> Result<String, StoreError> {
    let groups = match scope {
        Scope::All => store.list_all_groups().await?,
        Scope::Tenant(t) => store.list_groups(t).await?,
    };
    let mut states: HashMap<(&TenantId, &str), [u64; LIVE.len()]> = HashMap::new();
    let live = store
        .count_live_instances(match scope {
            Scope::All => None,
            Scope::Tenant(t) => Some(t),
        })
        .await?;
    for i in &live {
        if let Some(k) = LIVE.iter().position(|s| *s == i.status) {
            states.entry((&i.tenant, i.group.as_str())).or_default()[k] += i.count;
        }
    }
    let stats = controller.stats();
    let decisions: HashMap<(TenantId, String), u64> = stats
        .group_decisions()
        .into_iter()
        .map(|(t, g, n)| ((t, g), n))
        .collect();
    let queues: HashMap<(TenantId, String), usize> = controller
        .queue_depths()
        .into_iter()
        .map(|(t, g, n)| ((t, g), n))
        .collect();

    let mut page = Page::default();
    let desired = page.family(
        "swell_group_desired_capacity",
        "Instances the group should have (its stored desired capacity).",
        MetricType::Gauge,
    );
    let ready = page.family(
        "swell_group_ready_instances",
        "Instances of the group that are running (created and ready).",
        MetricType::Gauge,
    );
    let instances = page.family(
        "swell_group_instances",
        "Live instances of the group by state.",
        MetricType::Gauge,
    );
    let decided = page.family(
        "swell_scaling_decisions",
        "Scaling decisions (desired capacity changed by a policy) since the worker started.",
        MetricType::Counter,
    );
    let queue = page.family(
        "swell_worker_queue_depth",
        "Inputs (pushed readings, metric-source rounds) waiting in the group worker's queue.",
        MetricType::Gauge,
    );
    let lb_requests = page.family(
        "swell_lb_requests",
        "Requests answered by the group's load balancer (TCP: connections accepted).",
        MetricType::Counter,
    );
    let lb_errors = page.family(
        "swell_lb_errors",
        "Requests answered with a 5xx, by an instance or by the proxy.",
        MetricType::Counter,
    );
    let lb_in_flight = page.family(
        "swell_lb_in_flight",
        "Requests in flight to instances.",
        MetricType::Gauge,
    );
    let lb_open = page.family(
        "swell_lb_connections_open",
        "Client connections open.",
        MetricType::Gauge,
    );
    let lb_refused = page.family(
        "swell_lb_connections_refused",
        "Client connections closed at once because max_connections were open.",
        MetricType::Counter,
    );
    let lb_duration = page.family_with_unit(
        "swell_lb_request_duration",
        "Time from a request's arrival to its response headers.",
        MetricType::Histogram,
        Unit::Seconds,
    );
    let be_requests = page.family(
        "swell_lb_backend_requests",
        "Requests dispatched to an instance, retried attempts included.",
        MetricType::Counter,
    );
    let be_in_flight = page.family(
        "swell_lb_backend_in_flight",
        "Requests in flight to an instance.",
        MetricType::Gauge,
    );
    let be_failures = page.family(
        "swell_lb_backend_failures",
        "Failed attempts to an instance: connect errors, upstream errors, timeouts.",
        MetricType::Counter,
    );
    let be_up = page.family(
        "swell_lb_backend_up",
        "1 when the instance is in the pool, healthy and not ejected.",
        MetricType::Gauge,
    );

    for g in &groups {
        let name = g.spec.name.as_str();
        let labels = || {
            vec![
                ("tenant", g.tenant.to_string()),
                ("group", name.to_string()),
            ]
        };
        let key = (g.tenant.clone(), name.to_string());
        let counts = states.get(&(&g.tenant, name)).copied().unwrap_or_default();
        page.add(
            desired,
            labels(),
            Value::Gauge(i64::from(g.desired_capacity)),
        );
        let running = LIVE.iter().position(|s| *s == InstanceStatus::Running);
        let running = running.map_or(0, |k| counts[k]);
        page.add(ready, labels(), Value::Gauge(running as i64));
        for (state, n) in LIVE.iter().zip(counts) {
            let mut l = labels();
            l.push(("state", state.as_str().to_string()));
            page.add(instances, l, Value::Gauge(n as i64));
        }
        let n = decisions.get(&key).copied().unwrap_or(0);
        page.add(decided, labels(), Value::Counter(n));
        let depth = queues.get(&key).copied().unwrap_or(0);
        page.add(queue, labels(), Value::Gauge(depth as i64));
        let Some(lb) = controller.load_balancer(&g.tenant, name) else {
            continue;
        };
        let t = lb.traffic();
        page.add(lb_requests, labels(), Value::Counter(t.requests_total));
        page.add(lb_errors, labels(), Value::Counter(t.errors_total));
        page.add(lb_in_flight, labels(), Value::Gauge(t.in_flight as i64));
        page.add(lb_open, labels(), Value::Gauge(t.connections_open as i64));
        page.add(
            lb_refused,
            labels(),
            Value::Counter(t.connections_refused_total),
        );
        let h = &t.latency_histogram;
        page.add(
            lb_duration,
            labels(),
            histogram(&h.buckets, h.count, h.sum_seconds),
        );
        for b in &t.backends {
            let l = || {
                let mut l = labels();
                l.push(("instance", b.id.clone()));
                l
            };
            page.add(be_requests, l(), Value::Counter(b.requests_total));
            page.add(be_in_flight, l(), Value::Gauge(b.in_flight as i64));
            page.add(be_failures, l(), Value::Counter(b.failures));
            page.add(be_up, l(), Value::Gauge(i64::from(b.routable)));
        }
    }

    if *scope == Scope::All {
        let passes = page.family_with_unit(
            "swell_worker_pass_duration",
            "How long one pass of a group worker took (a timer tick, a reload, an input).",
            MetricType::Histogram,
            Unit::Seconds,
        );
        let ticks = &stats.ticks;
        page.add(
            passes,
            Vec::new(),
            histogram(
                &ticks.cumulative_buckets(),
                ticks.count(),
                ticks.sum().as_secs_f64(),
            ),
        );
        let calls = page.family(
            "swell_provider_calls",
            "Calls to a provider by the controller, by provider and call.",
            MetricType::Counter,
        );
        let errors = page.family(
            "swell_provider_errors",
            "Calls to a provider that returned an error, by provider and call.",
            MetricType::Counter,
        );
        let failed: HashMap<(String, &str), u64> = stats
            .provider_errors()
            .into_iter()
            .map(|(p, c, n)| ((p, c), n))
            .collect();
        for (provider, call, n) in stats.provider_calls() {
            let labels = vec![("provider", provider.clone()), ("call", call.to_string())];
            let e = failed.get(&(provider, call)).copied().unwrap_or(0);
            page.add(calls, labels.clone(), Value::Counter(n));
            page.add(errors, labels, Value::Counter(e));
        }
    }

    if *scope == Scope::All {
        add_host_series(&mut page, controller).await;
    }

    let mut registry = Registry::default();
    registry.register_collector(Box::new(page));
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    Ok(out)
}

/// The per-host series of every provider with hypervisor hosts (`qemu`), read now:
/// admin and scrape-listener pages only (host names and every tenant's VMs). A
/// provider whose hosts cannot be read is left out of the page (and logged).
async fn add_host_series(page: &mut Page, controller: &Controller) {
    let mut read = Vec::new();
    for entry in controller.registry().all() {
        match entry.provider.hosts().await {
            Ok(Some(hosts)) => read.push((entry.name.clone(), hosts)),
            Ok(None) => {}
            Err(e) => tracing::warn!(provider = %entry.name, "reading its hosts for /metrics: {e}"),
        }
    }
    if read.is_empty() {
        return;
    }
    let gauge = |page: &mut Page, name, help| page.family(name, help, MetricType::Gauge);
    let up = gauge(
        page,
        "swell_provider_host_up",
        "1 when the hypervisor host is up (state directory there; for an SSH host, SSH answers).",
    );
    let vms = gauge(
        page,
        "swell_provider_host_vms",
        "VMs of this server living on the host.",
    );
    let vcpus = gauge(
        page,
        "swell_provider_host_vcpus",
        "The host's physical vCPUs.",
    );
    let vcpus_alloc = gauge(
        page,
        "swell_provider_host_vcpus_allocated",
        "vCPUs the host's VMs were created with.",
    );
    let memory = gauge(
        page,
        "swell_provider_host_memory_mb",
        "The host's physical memory, MiB.",
    );
    let memory_alloc = gauge(
        page,
        "swell_provider_host_memory_mb_allocated",
        "MiB the host's VMs were created with.",
    );
    let cpu_used = gauge(
        page,
        "swell_provider_host_cpu_used",
        "CPU cores the host's QEMU processes used at their last metrics reading.",
    );
    let load = gauge(
        page,
        "swell_provider_host_load_ratio",
        "The host's load as placement compares it (1 = full under the over-commit ratios).",
    );
    for (provider, hosts) in read {
        for h in hosts {
            let v = crate::registry::host_view(&h);
            let labels = || vec![("provider", provider.clone()), ("host", v.name.clone())];
            page.add(up, labels(), Value::Gauge(i64::from(v.up)));
            page.add(vms, labels(), Value::Gauge(i64::from(v.vms)));
            page.add(vcpus, labels(), Value::GaugeF(v.vcpus));
            page.add(vcpus_alloc, labels(), Value::GaugeF(v.vcpus_allocated));
            page.add(memory, labels(), Value::GaugeF(v.memory_mb));
            page.add(memory_alloc, labels(), Value::GaugeF(v.memory_mb_allocated));
            page.add(cpu_used, labels(), Value::GaugeF(v.cpu_used));
            page.add(load, labels(), Value::GaugeF(v.load_percent / 100.0));
        }
    }
}

/// The scrape listener's routes (`swell serve --metrics-listen ADDR`): `GET /metrics`,
/// every tenant's series and the controller's own, without a credential, so that
/// Prometheus' scrape configuration carries no token. Whoever reaches the address sees
/// everything: bind it to loopback or a network only the operator's Prometheus
/// reaches. Nothing else is served there.
pub fn scrape_router(service: Arc<Service>) -> axum::Router {
    axum::Router::new()
        .route("/metrics", axum::routing::get(scrape))
        .with_state(service)
}

async fn scrape(State(s): State<Arc<Service>>) -> Response {
    match s.scrape(&Scope::All).await {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => e.into_response(),
    }
}

/// A histogram's value from cumulative `(bound, count)` pairs (the encoder wants each
/// bucket's own count, and the `+Inf` bucket last as `f64::MAX`).
fn histogram(cumulative: &[(f64, u64)], count: u64, sum: f64) -> Value {
    let mut buckets = Vec::with_capacity(cumulative.len() + 1);
    let mut before = 0;
    for (bound, n) in cumulative {
        buckets.push((*bound, n.saturating_sub(before)));
        before = *n;
    }
    buckets.push((f64::MAX, count.saturating_sub(before)));
    Value::Histogram {
        buckets,
        count,
        sum,
    }
}

type Labels = Vec<(&'static str, String)>;

#[derive(Debug)]
enum Value {
    Counter(u64),
    Gauge(i64),
    GaugeF(f64),
    Histogram {
        buckets: Vec<(f64, u64)>,
        count: u64,
        sum: f64,
    },
}

#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    unit: Option<Unit>,
    series: Vec<(Labels, Value)>,
}

/// The families of one scrape, encoded by `prometheus-client` as a collector.
#[derive(Debug, Default)]
struct Page {
    families: Vec<Family>,
}

impl Page {
    fn family(&mut self, name: &'static str, help: &'static str, kind: MetricType) -> usize {
        self.families.push(Family {
            name,
            help,
            kind,
            unit: None,
            series: Vec::new(),
        });
        self.families.len() - 1
    }

    fn family_with_unit(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: MetricType,
        unit: Unit,
    ) -> usize {
        let i = self.family(name, help, kind);
        self.families[i].unit = Some(unit);
        i
    }

    fn add(&mut self, family: usize, labels: Labels, value: Value) {
        self.families[family].series.push((labels, value));
    }
}

impl Collector for Page {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in self.families.iter().filter(|f| !f.series.is_empty()) {
            let mut metric = encoder.encode_descriptor(f.name, f.help, f.unit.as_ref(), f.kind)?;
            for (labels, value) in &f.series {
                let mut series = metric.encode_family(labels)?;
                match value {
                    Value::Counter(n) => series.encode_counter::<NoLabelSet, _, u64>(n, None)?,
                    Value::Gauge(n) => series.encode_gauge(n)?,
                    Value::GaugeF(x) => series.encode_gauge(x)?,
                    Value::Histogram {
                        buckets,
                        count,
                        sum,
                    } => series.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)?,
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_take_each_buckets_own_count() {
        let Value::Histogram { buckets, count, .. } = histogram(&[(0.1, 2), (1.0, 5)], 7, 3.5)
        else {
            panic!("not a histogram");
        };
        assert_eq!(buckets, vec![(0.1, 2), (1.0, 3), (f64::MAX, 2)]);
        assert_eq!(count, 7);
    }
}
