//! The group's load balancer slot and everything that touches it: binding, rebinding
//! on a change, its backends, its trouble.

use super::*;

/// Why a group's load balancer could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LbBindError {
    /// Another live load balancer (any group's) holds the address, or one that
    /// overlaps it, or another program does.
    #[error("{0}")]
    AddressInUse(swell_lb::AddressInUse),
    /// Anything else: a malformed address, a bind the system refused, a setting the
    /// load balancer cannot run with.
    #[error("{0}")]
    Other(String),
}

impl From<LbBindError> for String {
    fn from(e: LbBindError) -> String {
        e.to_string()
    }
}

/// Binds a group's load balancer.
pub async fn bind_lb(spec: &LoadBalancerSpec) -> Result<LoadBalancer, LbBindError> {
    let addr: SocketAddr = spec.listen.parse().map_err(|_| {
        LbBindError::Other(format!(
            "`{}` must be an address like 127.0.0.1:8080",
            spec.listen
        ))
    })?;
    LoadBalancer::bind_with(addr, lb_config(spec))
        .await
        .map_err(|e| match swell_lb::AddressInUse::find(&e) {
            Some(in_use) => LbBindError::AddressInUse(in_use.clone()),
            None => LbBindError::Other(format!("cannot listen on {addr}: {e}")),
        })
}

/// The load balancer's configuration from the group document's section.
pub fn lb_config(spec: &LoadBalancerSpec) -> LbConfig {
    LbConfig {
        protocol: match spec.protocol {
            LbProtocol::Http => Protocol::Http,
            LbProtocol::Tcp => Protocol::Tcp,
        },
        algorithm: match spec.algorithm {
            LbAlgorithm::RoundRobin => Algorithm::RoundRobin,
            LbAlgorithm::LeastOutstanding => Algorithm::LeastOutstanding,
        },
        health_check: spec.health_check.as_ref().map(|h| HealthCheck {
            kind: match h.kind {
                HealthCheckType::Http => HealthCheckKind::Http {
                    path: h.path.clone(),
                },
                HealthCheckType::Tcp => HealthCheckKind::Tcp,
            },
            interval: h.interval,
            timeout: h.timeout,
            healthy_threshold: h.healthy_threshold,
            unhealthy_threshold: h.unhealthy_threshold,
        }),
        passive_ejection: spec.passive_ejection.as_ref().map(|p| PassiveEjection {
            consecutive_failures: p.consecutive_failures,
            ejection_time: p.ejection_time,
        }),
        request_timeout: spec.request_timeout,
        idle_timeout: spec.idle_timeout,
        max_body_bytes: spec.max_body_bytes,
        workers: spec.workers as usize,
        max_connections: spec.max_connections as usize,
        ..LbConfig::default()
    }
}

impl GroupWorker {
    /// The group's load balancer, if one runs. The slot is shared with the
    /// controller's handle (for the API's lookups) but only this worker changes it.
    pub(super) fn lb(&self) -> Option<LoadBalancer> {
        self.lb.lock().ok().and_then(|l| l.clone())
    }

    /// Puts `lb` in the slot and returns the one it held.
    pub(super) fn replace_lb(&mut self, lb: Option<LoadBalancer>) -> Option<LoadBalancer> {
        self.lb
            .lock()
            .ok()
            .and_then(|mut l| std::mem::replace(&mut *l, lb))
    }

    /// Brings the load balancer in line with the group's section: `bound` is a new one
    /// the service already bound (a new address); a change of settings on the same
    /// address rebinds here.
    pub(super) async fn refresh_lb(&mut self, bound: Option<LoadBalancer>) {
        let wanted = self.group.spec.load_balancer.clone();
        if let Some(new_lb) = bound {
            if let Some(old) = self.replace_lb(Some(new_lb)) {
                old.shutdown().await;
            }
            self.lb_spec = wanted;
            self.lb_trouble(None).await;
            return;
        }
        if wanted == self.lb_spec {
            if wanted.is_none() {
                self.lb_trouble(None).await;
            }
            return;
        }
        if let Some(old) = self.replace_lb(None) {
            old.shutdown().await;
        }
        self.lb_spec = None;
        match wanted {
            Some(spec) => match bind_lb(&spec).await {
                Ok(lb) => {
                    self.replace_lb(Some(lb));
                    self.lb_spec = Some(spec);
                    self.lb_trouble(None).await;
                    self.update_lb();
                }
                Err(e) => self.lb_trouble(Some(e.to_string())).await,
            },
            None => self.lb_trouble(None).await,
        }
    }

    /// Records why the load balancer is not running (`None`: it runs, or the group has
    /// none): in the status, and as one `load_balancer_error` event per new problem,
    /// so that the group's owner sees it; the worker carries on without it.
    pub(super) async fn lb_trouble(&mut self, problem: Option<String>) {
        if problem == self.lb_problem {
            return;
        }
        let (tenant, name) = self.key.clone();
        match &problem {
            Some(p) => tracing::error!(group = %name, "load balancer: {p}"),
            None if self.lb_problem.is_some() => {
                tracing::info!(group = %name, "load balancer listening again")
            }
            None => {}
        }
        self.lb_problem = problem.clone();
        self.show();
        if let Some(p) = problem {
            let event = self.controller.event(
                &tenant,
                &name,
                EventKind::LoadBalancerError,
                None,
                format!("load balancer not running: {p}"),
            );
            if let Err(e) = self.controller.store.append_event(event).await {
                tracing::warn!(group = %name, "cannot record the event: {e}");
            }
        }
    }

    /// Points the load balancer at exactly the running instances (as the worker last
    /// read them).
    pub(super) fn update_lb(&self) {
        let Some(lb) = self.lb() else { return };
        let backends = self
            .instances
            .iter()
            .filter(|i| i.status == InstanceStatus::Running)
            .filter_map(|i| {
                let addr = i.address.as_ref()?.parse().ok()?;
                Some(Backend {
                    id: i.id.to_string(),
                    addr,
                })
            })
            .collect();
        lb.set_backends(backends);
    }
}
