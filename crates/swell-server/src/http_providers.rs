//! The provider routes of `/v1`: the providers an admin defines by name
//! ([`crate::registry`]). Like `http.rs` they only translate; who may call each is in
//! [`crate::auth::rules::RULES`] (reading: anyone in a tenant, who sees the providers
//! its tenant may use; writing: admins).

use crate::auth::Principal;
use crate::http::parse_body;
use crate::service::{Service, ServiceError};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use std::sync::Arc;
use swell_api as api;

type ApiResult<T> = Result<T, ServiceError>;
type St = State<Arc<Service>>;

/// The provider routes (the caller adds the authorization layer).
pub fn routes() -> Router<Arc<Service>> {
    Router::new()
        .route("/v1/providers", get(list_providers).post(create_provider))
        .route(
            "/v1/providers/{name}",
            get(get_provider)
                .put(update_provider)
                .delete(delete_provider),
        )
        .route("/v1/providers/{name}/hosts", get(provider_hosts))
}

/// The providers the caller may see: an admin every one (built-ins too), anyone else
/// the ones its tenant may use. Credentials are never shown, only whether they are set.
#[utoipa::path(get, path = "/v1/providers", responses((status = 200, body = api::ProviderList)))]
pub(crate) async fn list_providers(
    State(s): St,
    p: Principal,
) -> ApiResult<axum::Json<api::ProviderList>> {
    Ok(axum::Json(api::ProviderList {
        providers: s.list_providers(&p).await?,
    }))
}

/// Defines a provider (admins): `docker` engines, an `openstack` project with its
/// credentials (sealed, never returned), or another `process` provider; operator-wide,
/// or private to one tenant with `tenant`.
#[utoipa::path(post, path = "/v1/providers", request_body = api::CreateProvider,
    responses((status = 201, body = api::Provider), (status = 409, body = api::Problem), (status = 422, body = api::Problem)))]
pub(crate) async fn create_provider(
    State(s): St,
    body: Bytes,
) -> ApiResult<(StatusCode, axum::Json<api::Provider>)> {
    let req: api::CreateProvider = parse_body(&body)?;
    Ok((
        StatusCode::CREATED,
        axum::Json(s.create_provider(req).await?),
    ))
}

/// One provider; 404 when the caller's tenant may not use it.
#[utoipa::path(get, path = "/v1/providers/{name}", params(("name" = String, Path)),
    responses((status = 200, body = api::Provider), (status = 404, body = api::Problem)))]
pub(crate) async fn get_provider(
    State(s): St,
    p: Principal,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<api::Provider>> {
    Ok(axum::Json(s.get_provider(&p, &name).await?))
}

/// Replaces a definition's config and, when given, its credentials (admins); a
/// built-in is 409.
#[utoipa::path(put, path = "/v1/providers/{name}", params(("name" = String, Path)), request_body = api::UpdateProvider,
    responses((status = 200, body = api::Provider), (status = 404, body = api::Problem), (status = 409, body = api::Problem)))]
pub(crate) async fn update_provider(
    State(s): St,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<axum::Json<api::Provider>> {
    let req: api::UpdateProvider = parse_body(&body)?;
    Ok(axum::Json(s.update_provider(&name, req).await?))
}

/// Deletes a definition (admins); 409 while a group names it, or for a built-in.
#[utoipa::path(delete, path = "/v1/providers/{name}", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = api::Problem), (status = 409, body = api::Problem)))]
pub(crate) async fn delete_provider(
    State(s): St,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    s.delete_provider(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The provider's hypervisor hosts (admins): each up or down, its VMs, capacity,
/// allocation and load, read now; 409 for a provider without hosts (not `qemu`).
#[utoipa::path(get, path = "/v1/providers/{name}/hosts", params(("name" = String, Path)),
    responses((status = 200, body = api::ProviderHostList), (status = 404, body = api::Problem), (status = 409, body = api::Problem)))]
pub(crate) async fn provider_hosts(
    State(s): St,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<api::ProviderHostList>> {
    Ok(axum::Json(s.provider_hosts(&name).await?))
}
