//! The notification routes of `/v1` ([`crate::notify`]): a tenant's webhooks and their
//! delivery log, and a group's Alertmanager receiver with its token. Like `http.rs` they
//! only translate; who may call each is in [`crate::auth::rules::RULES`].

use crate::auth::Principal;
use crate::http::{ApiQuery, parse_body};
use crate::notify::{delivery_view, webhook_view};
use crate::service::{Service, ServiceError};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;
use std::sync::Arc;
use swell_api as api;

type ApiResult<T> = Result<T, ServiceError>;
type St = State<Arc<Service>>;

/// The notification routes (the caller adds the authorization layer).
pub fn routes() -> Router<Arc<Service>> {
    Router::new()
        .route("/v1/webhooks", get(list_webhooks).post(create_webhook))
        .route(
            "/v1/webhooks/{webhook}",
            get(get_webhook).delete(delete_webhook),
        )
        .route("/v1/webhooks/{webhook}/deliveries", get(list_deliveries))
        .route("/v1/groups/{name}/alerts", post(receive_alerts))
        .route("/v1/groups/{name}/alerts/token", post(create_alert_token))
}

/// The tenant's webhooks (never their secrets).
#[utoipa::path(get, path = "/v1/webhooks", responses((status = 200, body = api::WebhookList)))]
pub(crate) async fn list_webhooks(
    State(s): St,
    p: Principal,
) -> ApiResult<axum::Json<api::WebhookList>> {
    let webhooks = s.list_webhooks(&p.tenant).await?;
    Ok(axum::Json(api::WebhookList {
        webhooks: webhooks.iter().map(webhook_view).collect(),
    }))
}

/// Makes a webhook: the tenant's events (of one group or all, of the kinds listed) are
/// `POST`ed to its URL, signed with its secret (docs/api.md, "Webhooks").
#[utoipa::path(post, path = "/v1/webhooks", request_body = api::CreateWebhook,
    responses((status = 201, body = api::Webhook), (status = 400, body = api::Problem),
        (status = 404, body = api::Problem), (status = 409, body = api::Problem)))]
pub(crate) async fn create_webhook(
    State(s): St,
    p: Principal,
    body: Bytes,
) -> ApiResult<(StatusCode, axum::Json<api::Webhook>)> {
    let req: api::CreateWebhook = parse_body(&body)?;
    let w = s.create_webhook(&p.tenant, req).await?;
    Ok((StatusCode::CREATED, axum::Json(webhook_view(&w))))
}

/// Shows a webhook (never its secret).
#[utoipa::path(get, path = "/v1/webhooks/{webhook}", params(("webhook" = String, Path)),
    responses((status = 200, body = api::Webhook), (status = 404, body = api::Problem)))]
pub(crate) async fn get_webhook(
    State(s): St,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<api::Webhook>> {
    Ok(axum::Json(webhook_view(
        &s.get_webhook(&p.tenant, &id).await?,
    )))
}

/// Deletes a webhook with its delivery log; events not yet delivered are not sent.
#[utoipa::path(delete, path = "/v1/webhooks/{webhook}", params(("webhook" = String, Path)),
    responses((status = 204), (status = 404, body = api::Problem)))]
pub(crate) async fn delete_webhook(
    State(s): St,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.delete_webhook(&p.tenant, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/webhooks/{webhook}/deliveries` parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeliveriesQuery {
    /// The newest this many attempts (default 100).
    limit: Option<u32>,
}

/// The webhook's delivery log: every attempt, newest `limit` (default 100), oldest first.
#[utoipa::path(get, path = "/v1/webhooks/{webhook}/deliveries",
    params(("webhook" = String, Path), ("limit" = Option<u32>, Query, description = "the newest this many attempts (default 100)")),
    responses((status = 200, body = api::WebhookDeliveryList), (status = 404, body = api::Problem)))]
pub(crate) async fn list_deliveries(
    State(s): St,
    p: Principal,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<DeliveriesQuery>,
) -> ApiResult<axum::Json<api::WebhookDeliveryList>> {
    let deliveries = s.list_deliveries(&p.tenant, &id, q.limit).await?;
    Ok(axum::Json(api::WebhookDeliveryList {
        deliveries: deliveries.iter().map(delivery_view).collect(),
    }))
}

/// Makes the group's alert token (shown once; the previous one stops working): the
/// bearer token Alertmanager presents to `POST /v1/groups/{name}/alerts`.
#[utoipa::path(post, path = "/v1/groups/{name}/alerts/token", params(("name" = String, Path)),
    responses((status = 201, body = api::AlertToken), (status = 404, body = api::Problem)))]
pub(crate) async fn create_alert_token(
    State(s): St,
    p: Principal,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, axum::Json<api::AlertToken>)> {
    let token = s.create_alert_token(&p.tenant, &name).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(api::AlertToken { group: name, token }),
    ))
}

/// Alertmanager's webhook receiver (payload version 4), with the group's alert token:
/// firing alerts scale the group as its `alerts:` says (a step, or a desired
/// capacity); resolved ones do nothing unless `alerts.resolved` is set. The change is
/// recorded as an event whose cause is the alert.
#[utoipa::path(post, path = "/v1/groups/{name}/alerts", params(("name" = String, Path)),
    request_body = api::AlertmanagerPayload,
    responses((status = 200, body = api::AlertResult), (status = 400, body = api::Problem),
        (status = 404, body = api::Problem), (status = 409, body = api::Problem)))]
pub(crate) async fn receive_alerts(
    State(s): St,
    p: Principal,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<axum::Json<api::AlertResult>> {
    // Not `parse_body`: Alertmanager's annotations hold newlines, which the general
    // bounds refuse; only the alert names and fingerprints reach the store, cleaned.
    let mut de = serde_json::Deserializer::from_slice(&body);
    let payload: api::AlertmanagerPayload =
        serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let field = match path.as_str() {
                "." | "?" | "" => "body".to_string(),
                _ => path,
            };
            ServiceError::Invalid(swell_core::ValidationError::new(
                field,
                e.into_inner().to_string(),
            ))
        })?;
    Ok(axum::Json(
        s.receive_alerts(&p.tenant, &name, &payload).await?,
    ))
}
