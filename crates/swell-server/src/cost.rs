//! Cost: the prices an admin sets per provider (and OpenStack flavor) and what a
//! tenant's groups cost over a period (`GET /v1/cost`), computed by
//! [`swell_core::cost::usage`] from the instance rows the store keeps (each instance
//! from its create to its end; a terminated instance's row is kept as long as its
//! group) and the prices in force at each moment. Who may call each route is in
//! [`crate::auth::rules::RULES`]: prices are the admins'; a cost report is any
//! viewer's, of its own tenant only, and an admin's of any tenant or all.

use crate::auth::Principal;
use crate::clock::rfc3339;
use crate::http::{ApiQuery, parse_body, query_time};
use crate::http_history::{csv_response, wants_csv};
use crate::http_identity::csv_field;
use crate::service::{Service, ServiceError};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use swell_api as api;
use swell_core::cost::{Lifetime, Period, PriceChange, check_price, usage};
use swell_core::{InstanceStatus, ProviderKind, TenantId, Timestamp, ValidationError};
use swell_store::{GroupRecord, PriceRecord};

type ApiResult<T> = Result<T, ServiceError>;
type St = State<Arc<Service>>;

/// The period of a report without `since`: the 30 days before `until`.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(30 * 24 * 3600);

/// The most buckets one group's report may have (`step` against the period).
pub const MAX_BUCKETS: u64 = 2000;

/// The cost routes (the caller adds the authorization layer).
pub fn routes() -> Router<Arc<Service>> {
    Router::new()
        .route("/v1/prices", get(list_prices).post(set_price))
        .route("/v1/prices/{name}", delete(delete_prices))
        .route("/v1/cost", get(cost))
}

/// Query of `DELETE /v1/prices/{name}`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeletePriceQuery {
    /// Only the prices of this size (an OpenStack flavor); omitted: the provider-wide
    /// ones.
    pub(crate) size: Option<String>,
}

/// Query of `GET /v1/cost`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct CostQuery {
    /// This tenant's groups (default: the caller's tenant; another tenant is 404
    /// unless the caller is an admin).
    pub(crate) tenant: Option<String>,
    /// Every tenant's groups (admins only).
    #[serde(default)]
    pub(crate) all: bool,
    /// Only this group.
    pub(crate) group: Option<String>,
    /// The period's start, RFC 3339 (default: 30 days before `until`).
    pub(crate) since: Option<String>,
    /// The period's end, RFC 3339 (default: now; never later than now).
    pub(crate) until: Option<String>,
    /// The buckets' length (`1h`, `1d`; default: `1h` for a period up to 2 days, else
    /// `1d`).
    pub(crate) step: Option<String>,
    /// `json` (default) or `csv` (one row per group, no buckets).
    pub(crate) format: Option<String>,
}

/// Every price, by provider, size and start (admins).
#[utoipa::path(get, path = "/v1/prices", responses((status = 200, body = api::PriceList)))]
pub(crate) async fn list_prices(State(s): St) -> ApiResult<axum::Json<api::PriceList>> {
    let prices = s.list_prices().await?;
    Ok(axum::Json(api::PriceList {
        prices: prices.iter().map(price_view).collect(),
    }))
}

/// Sets the price of one instance-hour of a provider, or of one of its OpenStack
/// flavors, from now or from `from` on (admins). The earlier prices stay in force for
/// the time before, so a change never rewrites what the past cost.
#[utoipa::path(post, path = "/v1/prices", request_body = api::SetPrice,
    responses((status = 201, body = api::Price), (status = 400, body = api::Problem), (status = 422, body = api::Problem)))]
pub(crate) async fn set_price(
    State(s): St,
    body: Bytes,
) -> ApiResult<(StatusCode, axum::Json<api::Price>)> {
    let req: api::SetPrice = parse_body(&body)?;
    let record = s.set_price(&req).await?;
    Ok((StatusCode::CREATED, axum::Json(price_view(&record))))
}

/// Deletes every price (the whole history) of a provider, or of one of its sizes with
/// `size` (admins); its instance-hours are unpriced from then on, the past included.
#[utoipa::path(delete, path = "/v1/prices/{name}", params(("name" = String, Path, description = "the provider's name"), DeletePriceQuery),
    responses((status = 204), (status = 404, body = api::Problem)))]
pub(crate) async fn delete_prices(
    State(s): St,
    Path(provider): Path<String>,
    ApiQuery(q): ApiQuery<DeletePriceQuery>,
) -> ApiResult<StatusCode> {
    s.delete_prices(&provider, q.size.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Instance-hours and cost per group over a period, in buckets over time, with what
/// the same period would have cost at each group's peak size and the saving. JSON, or
/// CSV with `format=csv` (one row per group).
#[utoipa::path(get, path = "/v1/cost", params(CostQuery),
    responses((status = 200, description = "JSON; with format=csv, CSV: one row per group: `tenant,group,provider,size,since,until,instance_hours,cost,unpriced_hours,peak_instances,peak_cost,saving`",
        content((api::CostReport = "application/json"), (String = "text/csv"))),
        (status = 400, body = api::Problem), (status = 403, body = api::Problem), (status = 404, body = api::Problem)))]
pub(crate) async fn cost(
    State(s): St,
    p: Principal,
    ApiQuery(q): ApiQuery<CostQuery>,
) -> ApiResult<Response> {
    let csv = wants_csv(q.format.as_deref())?;
    let report = s.cost_report(&p, &q).await?;
    if csv {
        return Ok(csv_response(cost_csv(&report)));
    }
    Ok(axum::Json(report).into_response())
}

fn price_view(p: &PriceRecord) -> api::Price {
    api::Price {
        provider: p.provider.clone(),
        size: p.size.clone(),
        from: rfc3339(p.from),
        per_hour: p.per_hour,
        set_at: rfc3339(p.set_at),
    }
}

/// The CSV of a report: one row per group.
pub fn cost_csv(report: &api::CostReport) -> String {
    let mut out = String::from(
        "tenant,group,provider,size,since,until,instance_hours,cost,unpriced_hours,\
         peak_instances,peak_cost,saving\n",
    );
    for g in &report.groups {
        let text = [
            &g.tenant,
            &g.group,
            &g.provider,
            g.size.as_deref().unwrap_or_default(),
            &g.since,
            &g.until,
        ];
        let mut row: Vec<String> = text.iter().map(|f| csv_field(f)).collect();
        row.extend([
            g.instance_hours.to_string(),
            g.cost.to_string(),
            g.unpriced_hours.to_string(),
            g.peak_instances.to_string(),
            g.peak_cost.to_string(),
            g.saving.to_string(),
        ]);
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

/// The step of a report: `step` if given (at least a minute, at most
/// [`MAX_BUCKETS`] buckets), else an hour for a period up to two days and a day
/// beyond.
pub fn cost_step(step: Option<&str>, period: Duration) -> Result<Duration, ValidationError> {
    let step = match step {
        None if period <= Duration::from_secs(2 * 24 * 3600) => Duration::from_secs(3600),
        None => Duration::from_secs(24 * 3600),
        Some(text) => {
            let d =
                swell_core::duration::parse(text).map_err(|e| ValidationError::new("step", e))?;
            if d < Duration::from_secs(60) {
                return Err(ValidationError::new(
                    "step",
                    format!("must be at least 1m (got {text})"),
                ));
            }
            d
        }
    };
    let buckets = period.as_secs().div_ceil(step.as_secs().max(1)) + 1;
    if buckets > MAX_BUCKETS {
        return Err(ValidationError::new(
            "step",
            format!(
                "gives {buckets} buckets over the period; at most {MAX_BUCKETS}: choose a longer step or a shorter period"
            ),
        ));
    }
    Ok(step)
}

/// The size an instance of the group is priced at: its OpenStack flavor, if any.
fn group_size(g: &GroupRecord) -> Option<String> {
    g.spec.template.openstack.as_ref().map(|o| o.flavor.clone())
}

impl Service {
    /// Every price, by provider, size and start.
    pub(crate) async fn list_prices(&self) -> ApiResult<Vec<PriceRecord>> {
        Ok(self.store.list_prices().await?)
    }

    /// Checks and stores a price (see [`Service::check_price`]); returns what was stored.
    pub(crate) async fn set_price(&self, req: &api::SetPrice) -> ApiResult<PriceRecord> {
        let record = self.check_price(req)?;
        self.store.set_price(&record).await?;
        Ok(record)
    }

    /// Deletes a provider's provider-wide prices, or one size's: their whole history;
    /// not found when there were none.
    pub(crate) async fn delete_prices(&self, provider: &str, size: Option<&str>) -> ApiResult<()> {
        self.store.delete_prices(provider, size).await?;
        Ok(())
    }

    /// Checks a price to set (its body already met [`swell_core::limits`]): a known
    /// provider, a size only for an OpenStack one, a price >= 0, a valid start.
    fn check_price(&self, req: &api::SetPrice) -> ApiResult<PriceRecord> {
        let entry = self.registry().entry(&req.provider).ok_or_else(|| {
            ServiceError::Unknown(ValidationError::new(
                "provider",
                format!(
                    "unknown provider `{}` (defined: {})",
                    req.provider,
                    self.registry().names().join(", ")
                ),
            ))
        })?;
        if let Some(size) = &req.size {
            if entry.kind != ProviderKind::Openstack {
                return Err(ValidationError::new(
                    "size",
                    format!(
                        "provider `{}` is a {} provider, which has no sizes; only an openstack provider's flavors have prices of their own",
                        req.provider, entry.kind
                    ),
                )
                .into());
            }
            if size.trim().is_empty() {
                return Err(ValidationError::new("size", "must not be empty").into());
            }
        }
        check_price(req.per_hour)?;
        let now = self.now();
        let from = query_time("from", &req.from)?.unwrap_or(now);
        Ok(PriceRecord {
            provider: req.provider.clone(),
            size: req.size.clone(),
            from,
            per_hour: req.per_hour,
            set_at: now,
        })
    }

    /// The tenants a report covers: the caller's, `tenant` (404 for another tenant
    /// unless an admin), or every one with `all` (admins only).
    async fn cost_tenants(&self, p: &Principal, q: &CostQuery) -> ApiResult<Vec<TenantId>> {
        if q.all {
            if !p.admin {
                return Err(ServiceError::Forbidden(
                    "only an admin may see every tenant's cost".into(),
                ));
            }
            if q.tenant.is_some() {
                return Err(
                    ValidationError::new("all", "give either `all` or `tenant`, not both").into(),
                );
            }
            return Ok(self
                .store
                .list_tenants()
                .await?
                .into_iter()
                .map(|t| t.id)
                .collect());
        }
        let Some(name) = &q.tenant else {
            return Ok(vec![p.tenant.clone()]);
        };
        let id = TenantId::new(name).map_err(|e| ValidationError::new("tenant", e.rule))?;
        let missing = || ServiceError::NotFound {
            kind: "tenant",
            name: name.clone(),
        };
        if id != p.tenant && !p.admin {
            return Err(missing());
        }
        if self.store.get_tenant(&id).await?.is_none() {
            return Err(missing());
        }
        Ok(vec![id])
    }

    /// The cost report `q` asks for, as `p` may see it.
    pub(crate) async fn cost_report(
        &self,
        p: &Principal,
        q: &CostQuery,
    ) -> ApiResult<api::CostReport> {
        let now = self.now();
        let until = query_time("until", &q.until)?.unwrap_or(now).min(now);
        let since = query_time("since", &q.since)?.unwrap_or_else(|| until.sub(DEFAULT_PERIOD));
        if since >= until {
            return Err(ValidationError::new(
                "since",
                format!("must be before until ({}) and now", rfc3339(until)),
            )
            .into());
        }
        let step = cost_step(q.step.as_deref(), until.since(since))?;
        let tenants = self.cost_tenants(p, q).await?;
        let prices: Vec<PriceChange> = self
            .store
            .list_prices()
            .await?
            .into_iter()
            .map(|p| PriceChange {
                provider: p.provider,
                size: p.size,
                from: p.from,
                per_hour: p.per_hour,
            })
            .collect();
        let mut groups = Vec::new();
        for tenant in &tenants {
            let records = match &q.group {
                // Across every tenant a group name is a filter, not a lookup.
                Some(name) if q.all => {
                    let mut all = self.list_groups(tenant).await?;
                    all.retain(|g| &g.spec.name == name);
                    all
                }
                Some(name) => vec![self.get_group(tenant, name).await?],
                None => self.list_groups(tenant).await?,
            };
            for g in records {
                groups.push(self.group_cost(&g, &prices, since, until, step).await?);
            }
        }
        let mut total = api::CostTotal::default();
        for g in &groups {
            total.instance_hours += g.instance_hours;
            total.cost += g.cost;
            total.unpriced_hours += g.unpriced_hours;
            total.peak_cost += g.peak_cost;
            total.saving += g.saving;
        }
        Ok(api::CostReport {
            since: rfc3339(since),
            until: rfc3339(until),
            step_seconds: step.as_secs(),
            groups,
            total,
        })
    }

    async fn group_cost(
        &self,
        g: &GroupRecord,
        prices: &[PriceChange],
        since: Timestamp,
        until: Timestamp,
        step: Duration,
    ) -> ApiResult<api::GroupCost> {
        let since = since.max(g.created_at).min(until);
        let size = group_size(g);
        let lifetimes: Vec<Lifetime> = self
            .store
            .instances_between(&g.tenant, &g.spec.name, since, until)
            .await?
            .into_iter()
            .map(|i| Lifetime {
                start: i.created_at,
                end: matches!(
                    i.status,
                    InstanceStatus::Terminated | InstanceStatus::Failed
                )
                .then_some(i.updated_at),
                provider: i.provider,
                size: size.clone(),
            })
            .collect();
        let u = usage(
            &lifetimes,
            prices,
            (&g.spec.provider, size.as_deref()),
            &Period { since, until, step },
        );
        Ok(api::GroupCost {
            tenant: g.tenant.to_string(),
            group: g.spec.name.clone(),
            provider: g.spec.provider.clone(),
            size,
            since: rfc3339(since),
            until: rfc3339(until),
            instance_hours: u.instance_hours,
            cost: u.cost,
            unpriced_hours: u.unpriced_hours,
            peak_instances: u.peak_instances,
            peak_cost: u.peak_cost,
            saving: u.saving,
            buckets: u
                .buckets
                .iter()
                .map(|b| api::CostBucket {
                    start: rfc3339(b.start),
                    instance_hours: b.instance_hours,
                    cost: b.cost,
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps() {
        let h = |n: u64| Duration::from_secs(n * 3600);
        let check = |step: Option<&str>, period: Duration, expected: Result<u64, &str>| {
            let got = cost_step(step, period).map(|d| d.as_secs());
            match (got, expected) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{step:?} over {period:?}"),
                (Err(e), Err(rule)) => {
                    assert_eq!(e.field, "step");
                    assert!(e.rule.contains(rule), "{e}");
                }
                (got, expected) => panic!("{step:?}: got {got:?}, expected {expected:?}"),
            }
        };
        check(None, h(1), Ok(3600));
        check(None, h(48), Ok(3600));
        check(None, h(49), Ok(86_400));
        check(Some("15m"), h(2), Ok(900));
        check(Some("10s"), h(2), Err("at least 1m"));
        check(Some("soon"), h(2), Err(""));
        check(Some("1m"), h(24 * 30), Err("at most 2000"));
    }
}
