//! The tenant boundary on a group document (DESIGN.md invariant 7): what a group names
//! that lives outside its tenant — a provider, an image, a listen address — must have
//! been granted to the tenant by an admin; the tenant's group limit and the server's
//! interval floor hold. [`Service::check_tenant_boundary`] is the one check every path
//! that stores a group spec goes through (create, update, and so `swell apply`).
//!
//! Errors name the field and the tenant's own grants, never another tenant's resources:
//! a listen address held by another group is "in use", whoever holds it.

use crate::service::{Result, Service, ServiceError};
use std::net::SocketAddr;
use std::time::Duration;
use swell_core::grants::listen_overlaps;
use swell_core::{Grants, GroupSpec, TenantId, ValidationError};

fn not_granted(field: impl Into<String>, rule: impl Into<String>) -> ServiceError {
    ServiceError::NotGranted(ValidationError::new(field, rule))
}

/// A list for an error message: `a, b` or `none`.
fn listed<T: ToString>(items: &[T]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Service {
    /// Checks the group's intervals against the server's floor
    /// ([`crate::service::DEFAULT_MIN_INTERVAL`], `swell serve --min-interval`): 400
    /// naming the field.
    pub(crate) fn check_floors(&self, spec: &GroupSpec) -> Result<()> {
        let floor = self.min_interval();
        let mut intervals = vec![
            ("evaluation_interval", spec.evaluation_interval),
            ("metrics_interval", spec.metrics_interval),
        ];
        if let Some(h) = spec
            .load_balancer
            .as_ref()
            .and_then(|lb| lb.health_check.as_ref())
        {
            intervals.push(("load_balancer.health_check.interval", h.interval));
        }
        for (field, d) in intervals {
            if d < floor {
                return Err(ValidationError::new(
                    field,
                    format!(
                        "must be at least {} on this server (got {})",
                        human(floor),
                        human(d)
                    ),
                )
                .into());
            }
        }
        Ok(())
    }

    /// The tenant boundary on a group about to be stored (`current`: the stored spec, on
    /// an update). Returns the spec to store: a load balancer's `:0` port replaced by a
    /// free port inside the tenant's listen ranges (an update keeps the stored port).
    ///
    /// - every provider (`provider`, `fallback_providers[i]`) granted or private to the
    ///   tenant, else 403;
    /// - with a docker or openstack kind of provider, `template.image` matching a
    ///   granted pattern, else 403;
    /// - `load_balancer.listen` inside a granted range, else 403; not overlapping another
    ///   group's (any tenant's) address, else 409 that names neither;
    /// - on create, fewer groups than the tenant's `max_groups`, else 403 (`name`).
    ///
    /// A tenant that does not exist has been granted nothing.
    pub(crate) async fn check_tenant_boundary(
        &self,
        tenant: &TenantId,
        mut spec: GroupSpec,
        current: Option<&GroupSpec>,
    ) -> Result<GroupSpec> {
        let record = self.store.get_tenant(tenant).await?;
        let grants = record
            .as_ref()
            .map(|t| t.grants.clone())
            .unwrap_or_default();
        let registry = self.registry();
        for (i, name) in spec.providers().enumerate() {
            // A definition private to the tenant is its own; every other provider
            // needs a grant. (One private to another tenant is refused like a name
            // that does not exist: its existence does not leak.)
            let own = registry
                .entry(name)
                .is_some_and(|e| e.tenant.as_ref() == Some(tenant));
            if !own && !grants.allows_provider(name) {
                let field = if i == 0 {
                    "provider".to_string()
                } else {
                    format!("fallback_providers[{}]", i - 1)
                };
                return Err(not_granted(
                    field,
                    format!(
                        "provider `{name}` is not granted to tenant `{tenant}` (granted: {}); an admin grants it with `swell tenant update {tenant} --providers …`",
                        listed(&grants.providers)
                    ),
                ));
            }
        }
        let kind_of = |name: &str| {
            registry
                .kind(tenant, name)
                .or_else(|| swell_core::ProviderKind::builtin(name))
        };
        if spec
            .providers()
            .any(|p| kind_of(p).is_some_and(swell_core::ProviderKind::uses_images))
        {
            let image = spec.template.image.as_deref().unwrap_or_default();
            if !grants.allows_image(image) {
                return Err(not_granted(
                    "template.image",
                    format!(
                        "image `{image}` matches none of the patterns granted to tenant `{tenant}` (granted: {}); an admin grants images with `swell tenant update {tenant} --images …`",
                        listed(&grants.images)
                    ),
                ));
            }
        }
        if current.is_none() {
            self.check_group_limit(tenant, record.is_some(), 1).await?;
        }
        if let Some(lb) = spec.load_balancer.as_mut() {
            let wanted: SocketAddr = lb.listen.parse().map_err(|_| {
                ValidationError::new(
                    "load_balancer.listen",
                    format!("`{}` must be an address like 127.0.0.1:8080", lb.listen),
                )
            })?;
            let taken = self.listen_addresses_of_others(tenant, &spec.name).await?;
            let kept = current
                .and_then(|c| c.load_balancer.as_ref())
                .and_then(|c| c.listen.parse::<SocketAddr>().ok())
                .filter(|c| c.ip() == wanted.ip() && c.port() != 0);
            let addr = match (wanted.port(), kept) {
                // Re-applying a document with `:0` keeps the port the group was given.
                (0, Some(kept)) if grants.allows_listen(&kept) => kept,
                (0, _) => pick_port(tenant, &grants, wanted, &taken, self.now().as_millis())?,
                _ => wanted,
            };
            if !grants.allows_listen(&addr) {
                return Err(not_granted(
                    "load_balancer.listen",
                    format!(
                        "`{addr}` is outside the listen ranges granted to tenant `{tenant}` (granted: {}); an admin grants ranges with `swell tenant update {tenant} --listen …`",
                        listed(&grants.listen)
                    ),
                ));
            }
            if taken.iter().any(|t| listen_overlaps(t, &addr)) {
                return Err(ServiceError::Taken(ValidationError::new(
                    "load_balancer.listen",
                    format!(
                        "`{addr}` is already in use by another load balancer; choose another address in your ranges ({})",
                        listed(&grants.listen)
                    ),
                )));
            }
            lb.listen = addr.to_string();
        }
        Ok(spec)
    }

    /// 403 (field `name`) when `adding` more groups would take the tenant past its
    /// `max_groups` (`exists`: the tenant has a record, hence its own quota).
    pub(crate) async fn check_group_limit(
        &self,
        tenant: &TenantId,
        exists: bool,
        adding: usize,
    ) -> Result<()> {
        let quota = if exists {
            self.store.get_quota(tenant).await?
        } else {
            self.store.get_default_quota().await?
        };
        let Some(max) = quota.max_groups else {
            return Ok(());
        };
        let have = self.store.list_groups(tenant).await?.len();
        if have + adding > max as usize {
            return Err(not_granted(
                "name",
                format!(
                    "tenant `{tenant}` has {have} group(s), its limit (max_groups) is {max}; delete a group or ask an admin to raise the limit"
                ),
            ));
        }
        Ok(())
    }

    /// Every listen address held by a group other than `tenant`'s `name`, of any tenant:
    /// the stored documents' addresses and the load balancers actually bound (a group
    /// stored with `:0` by an older Swell holds the port it was given).
    async fn listen_addresses_of_others(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> Result<Vec<SocketAddr>> {
        let mut taken: Vec<SocketAddr> = self
            .store
            .list_all_groups()
            .await?
            .iter()
            .filter(|g| !(g.tenant == *tenant && g.spec.name == name))
            .filter_map(|g| g.spec.load_balancer.as_ref()?.listen.parse().ok())
            .filter(|a: &SocketAddr| a.port() != 0)
            .collect();
        taken.extend(
            self.controller()
                .bound_listen_addrs()
                .into_iter()
                .filter(|(t, g, _)| !(t == tenant && g == name))
                .map(|(_, _, a)| a),
        );
        Ok(taken)
    }
}

/// A free port for `wanted`'s IP inside the tenant's ranges, not held by another group:
/// first the one the system picks for a port-0 bind (it avoids ports it just gave out),
/// then the ranges scanned from an offset that varies with `seed`, each port tried by
/// binding it. 403 when no granted range has `wanted`'s IP; 409 when every port is taken.
fn pick_port(
    tenant: &TenantId,
    grants: &Grants,
    wanted: SocketAddr,
    taken: &[SocketAddr],
    seed: i64,
) -> Result<SocketAddr> {
    let ranges: Vec<_> = grants
        .listen
        .iter()
        .filter(|r| r.ip == wanted.ip())
        .collect();
    if ranges.is_empty() {
        return Err(not_granted(
            "load_balancer.listen",
            format!(
                "no listen range on {} is granted to tenant `{tenant}` (granted: {}); an admin grants ranges with `swell tenant update {tenant} --listen …`",
                wanted.ip(),
                listed(&grants.listen)
            ),
        ));
    }
    let usable = |a: SocketAddr| {
        grants.allows_listen(&a)
            && !taken.iter().any(|t| listen_overlaps(t, &a))
            && std::net::TcpListener::bind(a).is_ok()
    };
    if let Ok(probe) = std::net::TcpListener::bind(wanted)
        && let Ok(a) = probe.local_addr()
    {
        drop(probe);
        if usable(a) {
            return Ok(a);
        }
    }
    for r in ranges {
        let size = u32::from(r.last - r.first) + 1;
        let offset = (seed.unsigned_abs() % u64::from(size)) as u32;
        for i in 0..size {
            let port = r.first as u32 + (offset + i) % size;
            let a = SocketAddr::new(wanted.ip(), port as u16);
            if usable(a) {
                return Ok(a);
            }
        }
    }
    Err(ServiceError::Taken(ValidationError::new(
        "load_balancer.listen",
        format!(
            "every port of the listen ranges granted to tenant `{tenant}` on {} is in use ({})",
            wanted.ip(),
            listed(&grants.listen)
        ),
    )))
}

/// A duration as group documents write it (`1s`, `250ms`).
fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
