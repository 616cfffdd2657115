//! The API's errors as RFC 7807 `application/problem+json` answers, in one place: the
//! shape ([`problem`]), what each [`ServiceError`] becomes, and the rewrite of the plain
//! text errors axum writes itself. Its own module so that the HTTP layer and the
//! authorization middleware both use it without importing each other.

use crate::auth::AuthError;
use crate::service::ServiceError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use swell_api as api;

/// The largest request body the API reads (a tenant document of many groups fits);
/// larger ones are answered 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Every error answer is `application/problem+json`: the ones axum writes itself in plain
/// text (413 for a body over [`MAX_BODY_BYTES`], 405 for a method a route lacks, 415…)
/// are rewritten here, keeping their status and headers (`Allow`).
pub(crate) async fn problem_for_plain_errors(response: Response) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(api::PROBLEM_JSON.as_bytes()));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let (parts, body) = response.into_parts();
    let title = status.canonical_reason().unwrap_or("Error");
    let (detail, field_rule) = if status == StatusCode::PAYLOAD_TOO_LARGE {
        let rule = format!("at most {MAX_BODY_BYTES} bytes");
        (
            format!("the request body is too large: {rule}"),
            Some(("body".to_string(), rule)),
        )
    } else {
        let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
        let text = String::from_utf8_lossy(&text).trim().to_string();
        (
            if text.is_empty() {
                title.to_string()
            } else {
                text
            },
            None,
        )
    };
    let mut answer = problem(status, title, detail, field_rule);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    answer
}

/// An `application/problem+json` answer.
pub fn problem(
    status: StatusCode,
    title: &str,
    detail: String,
    field_rule: Option<(String, String)>,
) -> Response {
    let (field, rule) = field_rule.map_or((None, None), |(f, r)| (Some(f), Some(r)));
    let body = api::Problem {
        kind: "about:blank".into(),
        title: title.into(),
        status: status.as_u16(),
        detail,
        field,
        rule,
    };
    (
        status,
        [(header::CONTENT_TYPE, api::PROBLEM_JSON)],
        serde_json::to_vec(&body).unwrap_or_default(),
    )
        .into_response()
}

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        match self {
            ServiceError::Invalid(e) => {
                let detail = e.to_string();
                problem(
                    StatusCode::BAD_REQUEST,
                    "Invalid input",
                    detail,
                    Some((e.field, e.rule)),
                )
            }
            e @ ServiceError::NotFound { .. } => {
                problem(StatusCode::NOT_FOUND, "Not found", e.to_string(), None)
            }
            ServiceError::Unknown(e) => {
                let detail = e.to_string();
                problem(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Unknown reference",
                    detail,
                    Some((e.field, e.rule)),
                )
            }
            e @ ServiceError::Conflict { .. } => {
                problem(StatusCode::CONFLICT, "Conflict", e.to_string(), None)
            }
            e @ ServiceError::State(_) => {
                problem(StatusCode::CONFLICT, "Conflict", e.to_string(), None)
            }
            e @ ServiceError::Provider(_) => problem(
                StatusCode::BAD_GATEWAY,
                "Provider error",
                e.to_string(),
                None,
            ),
            e @ ServiceError::Forbidden(_) => {
                problem(StatusCode::FORBIDDEN, "Forbidden", e.to_string(), None)
            }
            ServiceError::NotGranted(e) => {
                let detail = e.to_string();
                problem(
                    StatusCode::FORBIDDEN,
                    "Not granted",
                    detail,
                    Some((e.field, e.rule)),
                )
            }
            ServiceError::Taken(e) => {
                let detail = e.to_string();
                problem(
                    StatusCode::CONFLICT,
                    "In use",
                    detail,
                    Some((e.field, e.rule)),
                )
            }
            ServiceError::Busy(why) => {
                let mut r = problem(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many requests",
                    why,
                    None,
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                r
            }
            ServiceError::Auth(AuthError::Unauthorized(why)) => {
                let mut r = problem(StatusCode::UNAUTHORIZED, "Unauthorized", why, None);
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                r
            }
            ServiceError::Auth(AuthError::RateLimited(secs)) => {
                let mut r = problem(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many requests",
                    format!("too many login attempts; retry in {secs} s"),
                    None,
                );
                if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                r
            }
            e @ ServiceError::Auth(AuthError::Busy) => {
                let mut r = problem(StatusCode::SERVICE_UNAVAILABLE, "Busy", e.to_string(), None);
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                r
            }
            e @ (ServiceError::Store(_) | ServiceError::Auth(_) | ServiceError::Secret(_)) => {
                tracing::error!("{e}");
                problem(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal error",
                    "the store failed; see the server log".into(),
                    None,
                )
            }
        }
    }
}
