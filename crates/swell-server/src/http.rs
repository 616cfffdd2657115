//! The REST API at `/v1`: it only translates HTTP to service calls and back; handlers
//! reach the controller and the store only through the service layer
//! ([`crate::service`]). Errors become `application/problem+json` in
//! [`crate::problem`].

use crate::auth::Principal;
use crate::auth::middleware::authorize;
use crate::clock::{parse_rfc3339, rfc3339};
use crate::http_identity;
use crate::openapi::Contract;
use crate::problem::problem;
use crate::service::{Service, ServiceError};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequestParts, OptionalFromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use std::sync::Arc;
use swell_api as api;
use swell_core::{GroupSpec, InstanceStatus};
use swell_store::Role;
use swell_store::{EventFilter, EventRecord, GroupRecord, InstanceRecord};
use utoipa::OpenApi;

/// The OpenAPI document, generated from the handlers and the boundary types.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Swell API",
        description = "Autoscaling for private and hybrid clouds."
    ),
    paths(
        health,
        list_groups,
        create_group,
        get_group,
        update_group,
        delete_group,
        set_desired,
        suspend_group,
        resume_group,
        list_instances,
        pause_instance,
        resume_instance,
        protect_instance,
        unprotect_instance,
        list_events,
        crate::event_stream::stream_events,
        push_metrics,
        load_history,
        crate::http_history::group_metrics,
        crate::http_history::instance_metrics,
        load_balancer,
        metrics,
        apply,
        http_identity::login,
        http_identity::logout,
        http_identity::whoami,
        http_identity::list_visible_instances,
        http_identity::list_instance_owners,
        http_identity::add_instance_owner,
        http_identity::remove_instance_owner,
        http_identity::list_tenants,
        http_identity::create_tenant,
        http_identity::get_tenant,
        http_identity::update_tenant,
        http_identity::delete_tenant,
        http_identity::list_roles,
        http_identity::grant,
        http_identity::revoke,
        http_identity::get_default_quota,
        http_identity::set_default_quota,
        http_identity::list_users,
        http_identity::create_user,
        http_identity::get_user,
        http_identity::delete_user,
        http_identity::set_password,
        http_identity::list_api_keys,
        http_identity::create_api_key,
        http_identity::delete_api_key,
        http_identity::list_audit,
        crate::http_providers::list_providers,
        crate::http_providers::create_provider,
        crate::http_providers::get_provider,
        crate::http_providers::provider_hosts,
        crate::http_providers::update_provider,
        crate::http_providers::delete_provider,
        crate::cost::list_prices,
        crate::cost::set_price,
        crate::cost::delete_prices,
        crate::cost::cost,
        crate::http_notify::list_webhooks,
        crate::http_notify::create_webhook,
        crate::http_notify::get_webhook,
        crate::http_notify::delete_webhook,
        crate::http_notify::list_deliveries,
        crate::http_notify::create_alert_token,
        crate::http_notify::receive_alerts
    ),
    components(schemas(
        api::Problem,
        api::Group,
        api::GroupList,
        api::InstanceCounts,
        api::Instance,
        api::InstanceList,
        api::Event,
        api::EventList,
        api::Cause,
        api::SetDesiredCapacity,
        api::PushMetrics,
        api::PushedSample,
        api::PushedMetrics,
        api::LoadSummary,
        api::LoadHistory,
        api::MetricLine,
        api::GroupMetricPoint,
        api::GroupMetrics,
        api::InstanceMetricPoint,
        api::InstanceMetricHistory,
        api::Health,
        api::WorkerStatus,
        api::LoadBalancerStatus,
        api::LoadBalancerBackend,
        api::LoginRequest,
        api::LoginResponse,
        api::Whoami,
        api::Quota,
        api::Tenant,
        api::TenantList,
        api::CreateTenant,
        api::UpdateTenant,
        api::User,
        api::UserList,
        api::CreateUser,
        api::SetPassword,
        api::Grant,
        api::RoleBinding,
        api::RoleBindingList,
        api::ApiKey,
        api::ApiKeyList,
        api::CreateApiKey,
        api::CreatedApiKey,
        api::AuditEntry,
        api::AuditList,
        api::InstanceOwner,
        api::InstanceOwnerList,
        api::TenantDocument,
        api::ApplyChange,
        api::ApplyResult,
        api::Provider,
        api::ProviderList,
        api::ProviderHost,
        api::ProviderHostList,
        api::CreateProvider,
        api::UpdateProvider,
        api::Price,
        api::PriceList,
        api::SetPrice,
        api::CostBucket,
        api::GroupCost,
        api::CostTotal,
        api::CostReport,
        api::Webhook,
        api::WebhookList,
        api::CreateWebhook,
        api::WebhookDelivery,
        api::WebhookDeliveryList,
        api::WebhookPayload,
        api::AlertToken,
        api::AlertmanagerPayload,
        api::Alert,
        api::AlertResult
    )),
    modifiers(&BearerAuth, &Contract),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// Declares the bearer scheme in the OpenAPI document.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The `/v1` router, with the dashboard's static files ([`crate::dashboard`]). Every
/// route goes through [`authorize`], which checks the route's rule in
/// [`crate::auth::rules::RULES`].
pub fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/groups", get(list_groups).post(create_group))
        .route(
            "/v1/groups/{name}",
            get(get_group).put(update_group).delete(delete_group),
        )
        .route("/v1/groups/{name}/desired_capacity", put(set_desired))
        .route("/v1/groups/{name}/suspend", post(suspend_group))
        .route("/v1/groups/{name}/resume", post(resume_group))
        .route(
            "/v1/groups/{name}/instances/{id}/protect",
            post(protect_instance),
        )
        .route(
            "/v1/groups/{name}/instances/{id}/unprotect",
            post(unprotect_instance),
        )
        .route("/v1/groups/{name}/instances", get(list_instances))
        .route(
            "/v1/groups/{name}/instances/{id}/pause",
            post(pause_instance),
        )
        .route(
            "/v1/groups/{name}/instances/{id}/resume",
            post(resume_instance),
        )
        .route("/v1/groups/{name}/events", get(list_events))
        .route(
            "/v1/groups/{name}/events/stream",
            get(crate::event_stream::stream_events),
        )
        .route(
            "/v1/groups/{name}/metrics",
            get(crate::http_history::group_metrics).post(push_metrics),
        )
        .route(
            "/v1/groups/{name}/instances/{id}/metrics",
            get(crate::http_history::instance_metrics),
        )
        .route("/v1/groups/{name}/metrics/history", get(load_history))
        .route("/v1/groups/{name}/load_balancer", get(load_balancer))
        .route("/v1/metrics", get(metrics))
        .route("/v1/apply", post(apply))
        .merge(http_identity::routes())
        .merge(crate::http_providers::routes())
        .merge(crate::cost::routes())
        .merge(crate::http_notify::routes())
        .merge(crate::dashboard::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            service.clone(),
            authorize,
        ))
        .fallback(|| async {
            problem(
                StatusCode::NOT_FOUND,
                "Not found",
                "no such route; see /v1/openapi.json".into(),
                None,
            )
        })
        .layer(axum::middleware::map_response(
            crate::problem::problem_for_plain_errors,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // Outermost, so that every answer passes it (refusals in middleware, the
        // fallback's 404): a refusal sent before the body was read closes the connection
        // and says so.
        .layer(axum::middleware::from_fn(
            crate::unread_body::close_if_body_unread,
        ))
        .with_state(service)
}

pub use crate::problem::MAX_BODY_BYTES;

/// The caller, as the authorization middleware resolved it from the token: handlers take
/// the tenant from here, never from the body.
impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Principal>().cloned().ok_or_else(|| {
            problem(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "this call needs `Authorization: Bearer TOKEN`".into(),
                None,
            )
        })
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Principal {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Principal>().cloned())
    }
}

/// Parses a JSON body, naming the field on error. Every body first meets the bounds
/// every input has ([`swell_core::limits`]: no control characters, sizes), whatever its
/// type, so that no handler sees an unbounded string.
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ServiceError> {
    // A body that is not JSON at all falls through to the typed parse, which says where.
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        swell_core::limits::check(&value, "")?;
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        // The root (`.`) or no position at all (`?`, a syntax error): the body itself.
        let field = match path.as_str() {
            "." | "?" | "" => "body".to_string(),
            _ => path,
        };
        let rule = e.into_inner().to_string();
        ServiceError::Invalid(swell_core::ValidationError::new(field, rule))
    })
}

/// Parses a query string, naming the parameter on error (`limit`, `since`): like
/// [`parse_body`], an `application/problem+json` answer, where axum's `Query` would
/// answer in plain text.
pub(crate) fn parse_query<T: serde::de::DeserializeOwned>(query: &str) -> Result<T, ServiceError> {
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let field = match path.as_str() {
            "." | "?" | "" => "query".to_string(),
            _ => path,
        };
        let rule = e.into_inner().to_string();
        ServiceError::Invalid(swell_core::ValidationError::new(field, rule))
    })
}

/// A handler's query parameters, parsed by [`parse_query`].
pub(crate) struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ServiceError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parse_query(parts.uri.query().unwrap_or_default()).map(ApiQuery)
    }
}

/// The API view of a group.
pub fn group_view(service: &Service, g: &GroupRecord, instances: &[InstanceRecord]) -> api::Group {
    let mut counts = api::InstanceCounts::default();
    for i in instances {
        match i.status {
            InstanceStatus::Pending => counts.pending += 1,
            InstanceStatus::Running => counts.running += 1,
            InstanceStatus::Draining => counts.draining += 1,
            InstanceStatus::Terminating => counts.terminating += 1,
            InstanceStatus::Paused => counts.paused += 1,
            InstanceStatus::Terminated | InstanceStatus::Failed => {}
        }
    }
    api::Group {
        name: g.spec.name.clone(),
        tenant: g.tenant.to_string(),
        spec: serde_json::to_value(&g.spec).unwrap_or_default(),
        desired_capacity: g.desired_capacity,
        instances: counts,
        last_scaling_at: g.last_scaling_at.map(rfc3339),
        deleting: g.deleting,
        suspended: g.suspended_at.is_some(),
        suspended_at: g.suspended_at.map(rfc3339),
        load_balancer: service
            .load_balancer_addr(&g.tenant, &g.spec.name)
            .map(|a| a.to_string()),
        created_at: rfc3339(g.created_at),
    }
}

/// The API view of an instance.
pub fn instance_view(service: &Service, i: &InstanceRecord) -> api::Instance {
    let m = service
        .latest_reading(i)
        .filter(|_| i.status == InstanceStatus::Running);
    api::Instance {
        id: i.id.to_string(),
        group: i.group.clone(),
        status: i.status.to_string(),
        lifecycle: i.lifecycle.as_str().into(),
        created_order: i.created_order,
        provider: i.provider.clone(),
        host: i.host.clone(),
        address: i.address.clone(),
        native_id: i.native_id.clone(),
        protected: i.protected,
        status_reason: i.status_reason.clone(),
        cpu_percent: m.map(|m| m.cpu_percent),
        memory_mb: m.map(|m| m.memory_mb),
        created_at: rfc3339(i.created_at),
        started_at: i.started_at.map(rfc3339),
    }
}

/// The API view of an event.
pub fn event_view(e: &EventRecord) -> api::Event {
    api::Event {
        id: e.id,
        at: rfc3339(e.event.at),
        group: e.event.group.clone(),
        kind: e.event.kind.to_string(),
        instance_id: e.event.instance_id.as_ref().map(|i| i.to_string()),
        cause: e.event.cause.as_ref().map(|c| api::Cause {
            policy: c.policy.clone(),
            metric: c.metric.clone(),
            value: c.value,
            threshold: c.threshold,
            before: c.before,
            after: c.after,
            reason: c.reason.clone(),
        }),
        message: e.event.message.clone(),
    }
}

type ApiResult<T> = Result<T, ServiceError>;

async fn with_instances(s: &Service, g: GroupRecord) -> ApiResult<api::Group> {
    let instances = s
        .list_instances(&g.tenant, &g.spec.name, false)
        .await
        .unwrap_or_default();
    Ok(group_view(s, &g, &instances))
}

/// Service health and the controller's workers.
#[utoipa::path(get, path = "/v1/health", responses((status = 200, body = api::Health)))]
async fn health(State(s): State<Arc<Service>>, p: Option<Principal>) -> axum::Json<api::Health> {
    // Workers are named `group/TENANT/NAME`: a caller sees its own tenant's (an admin all).
    let workers = s
        .worker_statuses(p.as_ref())
        .into_iter()
        .map(|(name, state)| api::WorkerStatus { name, state })
        .collect();
    axum::Json(api::Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        workers,
    })
}

async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string_pretty(&crate::openapi::document()).unwrap_or_default(),
    )
}

/// Lists the tenant's groups.
#[utoipa::path(get, path = "/v1/groups", responses((status = 200, body = api::GroupList)))]
async fn list_groups(
    State(s): State<Arc<Service>>,
    p: Principal,
) -> ApiResult<axum::Json<api::GroupList>> {
    let mut groups = Vec::new();
    for g in s.list_groups(&p.tenant).await? {
        groups.push(with_instances(&s, g).await?);
    }
    Ok(axum::Json(api::GroupList { groups }))
}

/// Creates a group from a group document.
#[utoipa::path(post, path = "/v1/groups", request_body(content = Object, description = "a group document (docs/configuration.md)"),
    responses((status = 201, body = api::Group), (status = 400, body = api::Problem), (status = 409, body = api::Problem)))]
async fn create_group(
    State(s): State<Arc<Service>>,
    p: Principal,
    body: Bytes,
) -> ApiResult<(StatusCode, axum::Json<api::Group>)> {
    let spec: GroupSpec = parse_body(&body)?;
    let g = s.create_group(&p.tenant, spec).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(with_instances(&s, g).await?),
    ))
}

/// Shows a group.
#[utoipa::path(get, path = "/v1/groups/{name}", params(("name" = String, Path)), responses((status = 200, body = api::Group), (status = 404, body = api::Problem)))]
async fn get_group(
    State(s): State<Arc<Service>>,
    p: Principal,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<api::Group>> {
    let g = s.get_group(&p.tenant, &name).await?;
    Ok(axum::Json(with_instances(&s, g).await?))
}

/// Replaces a group's document.
#[utoipa::path(put, path = "/v1/groups/{name}", params(("name" = String, Path)), request_body(content = Object),
    responses((status = 200, body = api::Group), (status = 400, body = api::Problem), (status = 404, body = api::Problem)))]
async fn update_group(
    State(s): State<Arc<Service>>,
    p: Principal,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<axum::Json<api::Group>> {
    let spec: GroupSpec = parse_body(&body)?;
    let g = s.update_group(&p.tenant, &name, spec).await?;
    Ok(axum::Json(with_instances(&s, g).await?))
}

/// Deletes a group: its instances are drained and deleted first.
#[utoipa::path(delete, path = "/v1/groups/{name}", params(("name" = String, Path)), responses((status = 202, body = api::Group), (status = 404, body = api::Problem)))]
async fn delete_group(
    State(s): State<Arc<Service>>,
    p: Principal,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, axum::Json<api::Group>)> {
    let g = s.delete_group(&p.tenant, &name).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(with_instances(&s, g).await?),
    ))
}

/// Sets the desired capacity by hand.
#[utoipa::path(put, path = "/v1/groups/{name}/desired_capacity", params(("name" = String, Path)), request_body = api::SetDesiredCapacity,
    responses((status = 200, body = api::Group), (status = 400, body = api::Problem), (status = 404, body = api::Problem)))]
async fn set_desired(
    State(s): State<Arc<Service>>,
    p: Principal,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<axum::Json<api::Group>> {
    let req: api::SetDesiredCapacity = parse_body(&body)?;
    let g = s
        .set_desired_capacity(&p.tenant, &name, req.desired_capacity)
        .await?;
    Ok(axum::Json(with_instances(&s, g).await?))
}

/// Suspends the group's autoscaling: the policies still evaluate and record
/// `would_scale` events, but change no desired capacity until it is resumed; a desired
/// capacity set by a user still applies. Suspending a suspended group changes nothing.
#[utoipa::path(post, path = "/v1/groups/{name}/suspend", params(("name" = String, Path)),
    responses((status = 200, body = api::Group), (status = 404, body = api::Problem), (status = 409, body = api::Problem)))]
async fn suspend_group(
    State(s): State<Arc<Service>>,
    p: Principal,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<api::Group>> {
    let g = s.set_suspended(&p.tenant, &name, true).await?;
    Ok(axum::Json(with_instances(&s, g).await?))
}

/// Resumes the group's autoscaling. Resuming a group that is not suspended changes
/// nothing.
#[utoipa::path(post, path = "/v1/groups/{name}/resume", params(("name" = String, Path)),
    responses((status = 200, body = api::Group), (status = 404, body = api::Problem), (status = 409, body = api::Problem)))]
async fn resume_group(
    State(s): State<Arc<Service>>,
    p: Principal,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<api::Group>> {
    let g = s.set_suspended(&p.tenant, &name, false).await?;
    Ok(axum::Json(with_instances(&s, g).await?))
}

/// Shows the group's load balancer: traffic, and each instance's share, health and drain.
#[utoipa::path(get, path = "/v1/groups/{name}/load_balancer", params(("name" = String, Path)),
    responses((status = 200, body = api::LoadBalancerStatus), (status = 404, body = api::Problem)))]
async fn load_balancer(
    State(s): State<Arc<Service>>,
    p: Principal,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<api::LoadBalancerStatus>> {
    let Some(lb) = s.load_balancer(&p.tenant, &name).await? else {
        return Ok(axum::Json(api::LoadBalancerStatus {
            address: None,
            request_rate: 0.0,
            error_ratio: 0.0,
            in_flight: 0,
            latency_p50_ms: None,
            latency_p99_ms: None,
            backends: Vec::new(),
        }));
    };
    let t = lb.traffic();
    let time = |t: Option<std::time::SystemTime>| {
        t.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| rfc3339(swell_core::Timestamp::from_millis(d.as_millis() as i64)))
    };
    let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
    Ok(axum::Json(api::LoadBalancerStatus {
        address: Some(lb.local_addr().to_string()),
        request_rate: t.request_rate,
        error_ratio: t.error_ratio,
        in_flight: t.in_flight,
        latency_p50_ms: ms(t.latency_p50),
        latency_p99_ms: ms(t.latency_p99),
        backends: lb
            .stats()
            .into_iter()
            .map(|b| api::LoadBalancerBackend {
                id: b.id,
                address: b.addr.map(|a| a.to_string()),
                in_pool: b.in_pool,
                health: format!("{:?}", b.health).to_lowercase(),
                ejected: b.ejected,
                requests: b.requests,
                in_flight: b.in_flight,
                failures: b.failures,
                draining_since: time(b.draining_since),
                requests_after_drain: b.requests_after_drain,
            })
            .collect(),
    }))
}

/// The controller's and the load balancers' metrics for Prometheus (OpenMetrics text):
/// a tenant's credential sees its groups' series, an admin's every tenant's and the
/// controller's own (docs/metrics.md).
#[utoipa::path(get, path = "/v1/metrics", responses((status = 200, content_type = "application/openmetrics-text", body = String)))]
async fn metrics(State(s): State<Arc<Service>>, p: Principal) -> ApiResult<Response> {
    let text = s.metrics_page(&p).await?;
    Ok((
        [(header::CONTENT_TYPE, crate::exposition::CONTENT_TYPE)],
        text,
    )
        .into_response())
}

/// Query of the instance list.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct InstanceQuery {
    /// Include terminated and failed instances.
    #[serde(default)]
    pub(crate) all: bool,
}

/// Lists a group's instances.
#[utoipa::path(get, path = "/v1/groups/{name}/instances", params(("name" = String, Path), InstanceQuery),
    responses((status = 200, body = api::InstanceList), (status = 404, body = api::Problem)))]
async fn list_instances(
    State(s): State<Arc<Service>>,
    p: Principal,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<InstanceQuery>,
) -> ApiResult<axum::Json<api::InstanceList>> {
    let list = s.list_instances(&p.tenant, &name, q.all).await?;
    // An instance owner without a role sees only their instances (seed 3).
    let visible = |i: &&InstanceRecord| p.at_least(Role::Viewer) || p.owns(i.id.as_str());
    Ok(axum::Json(api::InstanceList {
        instances: list
            .iter()
            .filter(visible)
            .map(|i| instance_view(&s, i))
            .collect(),
    }))
}

/// Pauses an instance.
#[utoipa::path(post, path = "/v1/groups/{name}/instances/{id}/pause", params(("name" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = api::Instance), (status = 404, body = api::Problem), (status = 409, body = api::Problem)))]
async fn pause_instance(
    State(s): State<Arc<Service>>,
    p: Principal,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult<axum::Json<api::Instance>> {
    let i = s.pause_instance(&p.tenant, &name, &id).await?;
    Ok(axum::Json(instance_view(&s, &i)))
}

/// Resumes a paused instance.
#[utoipa::path(post, path = "/v1/groups/{name}/instances/{id}/resume", params(("name" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = api::Instance), (status = 404, body = api::Problem), (status = 409, body = api::Problem)))]
async fn resume_instance(
    State(s): State<Arc<Service>>,
    p: Principal,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult<axum::Json<api::Instance>> {
    let i = s.resume_instance(&p.tenant, &name, &id).await?;
    Ok(axum::Json(instance_view(&s, &i)))
}

/// Protects an instance from scale-in: a scale-in never chooses it (it is still
/// replaced if it dies or fails its health checks, and retired with its group).
#[utoipa::path(post, path = "/v1/groups/{name}/instances/{id}/protect", params(("name" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = api::Instance), (status = 404, body = api::Problem), (status = 409, body = api::Problem)))]
async fn protect_instance(
    State(s): State<Arc<Service>>,
    p: Principal,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult<axum::Json<api::Instance>> {
    let i = s.set_protected(&p.tenant, &name, &id, true).await?;
    Ok(axum::Json(instance_view(&s, &i)))
}

/// Lifts an instance's scale-in protection.
#[utoipa::path(post, path = "/v1/groups/{name}/instances/{id}/unprotect", params(("name" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = api::Instance), (status = 404, body = api::Problem), (status = 409, body = api::Problem)))]
async fn unprotect_instance(
    State(s): State<Arc<Service>>,
    p: Principal,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult<axum::Json<api::Instance>> {
    let i = s.set_protected(&p.tenant, &name, &id, false).await?;
    Ok(axum::Json(instance_view(&s, &i)))
}

/// Pushes metric readings for a group (an agent, a script): per-instance readings are
/// averaged like provider readings, group-level ones go straight into the group's
/// metric window; while fresh they take precedence over the provider's for their metric.
#[utoipa::path(post, path = "/v1/groups/{name}/metrics", params(("name" = String, Path)), request_body = api::PushMetrics,
    responses((status = 202, body = api::PushedMetrics), (status = 400, body = api::Problem), (status = 404, body = api::Problem), (status = 422, body = api::Problem)))]
async fn push_metrics(
    State(s): State<Arc<Service>>,
    p: Principal,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, axum::Json<api::PushedMetrics>)> {
    let req: api::PushMetrics = parse_body(&body)?;
    let samples: Vec<crate::service::PushSample> = req
        .samples
        .into_iter()
        .map(|x| crate::service::PushSample {
            metric: x.metric,
            value: x.value,
            instance_id: x.instance_id,
        })
        .collect();
    let accepted = s.push_metrics(&p.tenant, &name, &samples).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(api::PushedMetrics { accepted }),
    ))
}

/// Query of the event list.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventQuery {
    /// Only events at or after this RFC 3339 time.
    pub(crate) since: Option<String>,
    /// Only events before this RFC 3339 time.
    pub(crate) until: Option<String>,
    /// Only events with a larger id (to follow).
    pub(crate) after_id: Option<i64>,
    /// At most this many (the newest); default 1000, at most 10000.
    pub(crate) limit: Option<u32>,
    /// `json` (default) or `csv`.
    pub(crate) format: Option<String>,
}

impl EventQuery {
    /// The store's filter; a time that is not RFC 3339 is an error naming its parameter.
    pub(crate) fn filter(&self) -> Result<EventFilter, ServiceError> {
        Ok(EventFilter {
            since: query_time("since", &self.since)?,
            until: query_time("until", &self.until)?,
            after_id: self.after_id,
            limit: self.limit,
        })
    }
}

/// A query parameter's RFC 3339 time; an error names the parameter.
pub(crate) fn query_time(
    field: &str,
    value: &Option<String>,
) -> Result<Option<swell_core::Timestamp>, ServiceError> {
    value
        .as_deref()
        .map(parse_rfc3339)
        .transpose()
        .map_err(|rule| ServiceError::Invalid(swell_core::ValidationError::new(field, rule)))
}

/// Query of the load history.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct LoadHistoryQuery {
    /// Only summaries at or after this RFC 3339 time (default: the last hour).
    pub(crate) since: Option<String>,
    /// Only this metric (`cpu`, `request_rate_per_instance`, …).
    pub(crate) metric: Option<String>,
}

/// A group's load history (five-minute summaries), kept for its forecasting policies,
/// oldest first.
#[utoipa::path(get, path = "/v1/groups/{name}/metrics/history", params(("name" = String, Path), LoadHistoryQuery),
    responses((status = 200, body = api::LoadHistory), (status = 400, body = api::Problem), (status = 404, body = api::Problem)))]
async fn load_history(
    State(s): State<Arc<Service>>,
    p: Principal,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<LoadHistoryQuery>,
) -> ApiResult<axum::Json<api::LoadHistory>> {
    let since = query_time("since", &q.since)?;
    let history = s
        .load_history(&p.tenant, &name, since, q.metric.as_deref())
        .await?;
    Ok(axum::Json(api::LoadHistory {
        summaries: history
            .iter()
            .map(|l| api::LoadSummary {
                at: rfc3339(l.at),
                metric: l.metric.as_str().into(),
                mean: l.mean,
                max: l.max,
            })
            .collect(),
    }))
}

/// Lists a group's events, oldest first: JSON, or CSV with `format=csv` (one row per
/// event, its cause over columns).
#[utoipa::path(get, path = "/v1/groups/{name}/events", params(("name" = String, Path), EventQuery),
    responses((status = 200, description = "JSON; with format=csv, CSV: `id,at,group,kind,instance_id,policy,metric,value,threshold,before,after,reason,message`",
        content((api::EventList = "application/json"), (String = "text/csv"))),
        (status = 400, body = api::Problem), (status = 404, body = api::Problem)))]
async fn list_events(
    State(s): State<Arc<Service>>,
    p: Principal,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> ApiResult<Response> {
    let csv = crate::http_history::wants_csv(q.format.as_deref())?;
    let filter = q.filter()?;
    let events = s.list_events(&p.tenant, &name, &filter).await?;
    if csv {
        return Ok(crate::http_history::csv_response(
            crate::http_history::events_csv(&events),
        ));
    }
    Ok(axum::Json(api::EventList {
        events: events.iter().map(event_view).collect(),
    })
    .into_response())
}

/// Query of `POST /v1/apply`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ApplyQuery {
    /// Check everything and answer the plan, changing nothing.
    #[serde(default)]
    pub(crate) dry_run: bool,
    /// Delete the tenant's groups the document does not list.
    #[serde(default)]
    pub(crate) prune: bool,
}

/// The tenant document as the server reads it: [`api::TenantDocument`] with typed groups.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantDocument {
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    groups: Vec<GroupSpec>,
}

/// Applies a tenant document whole: every group is checked first (the rules of create
/// and update), then its new groups are created, its changed ones updated and, with
/// `prune`, the tenant's groups it does not list deleted, in one transaction: all or
/// nothing. `dry_run` answers the plan and changes nothing.
#[utoipa::path(post, path = "/v1/apply", params(ApplyQuery), request_body = api::TenantDocument,
    responses((status = 200, body = api::ApplyResult), (status = 400, body = api::Problem), (status = 404, body = api::Problem), (status = 409, body = api::Problem)))]
async fn apply(
    State(s): State<Arc<Service>>,
    p: Principal,
    ApiQuery(q): ApiQuery<ApplyQuery>,
    body: Bytes,
) -> ApiResult<axum::Json<api::ApplyResult>> {
    let doc: TenantDocument = parse_body(&body)?;
    let options = crate::apply::ApplyOptions {
        prune: q.prune,
        dry_run: q.dry_run,
    };
    let changes = s
        .apply(&p.tenant, doc.tenant.as_deref(), doc.groups, options)
        .await?;
    let mut groups = Vec::new();
    if !q.dry_run {
        for record in changes.iter().filter_map(|c| c.record.clone()) {
            groups.push(with_instances(&s, record).await?);
        }
    }
    Ok(axum::Json(api::ApplyResult {
        dry_run: q.dry_run,
        changes: changes
            .iter()
            .map(|c| api::ApplyChange {
                group: c.group.clone(),
                action: c.action.as_str().into(),
            })
            .collect(),
        groups,
    }))
}
