//! The OpenAPI document as a contract: what the handlers' annotations say, completed
//! from the one table of routes ([`RULES`]) so that it cannot drift from what the server
//! does: public routes need no token (`security: []`), every other one may answer 401
//! (and 403 when it needs a role), every error answer is `application/problem+json`
//! with the [`swell_api::Problem`] schema, a body may be refused 400 or 413, a path
//! naming an object 404; plus `servers` and `tags`.

use crate::auth::rules::{Permission, RULES};
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ServerBuilder};

/// Completes the generated document (a `utoipa` modifier of [`crate::http::ApiDoc`]).
pub(crate) struct Contract;

/// The tags, each with what it groups; an operation's tag is its path's first segment
/// after `/v1/`, renamed where a segment belongs to a larger family.
const TAGS: &[(&str, &str)] = &[
    ("service", "health, the document, load balancer metrics"),
    (
        "groups",
        "scaling groups, their instances, events and metrics; apply",
    ),
    ("auth", "login tokens and the caller"),
    (
        "tenants",
        "tenants, their members and quotas (admins, owners)",
    ),
    ("users", "users and passwords"),
    ("api-keys", "a tenant's API keys"),
    ("audit", "the audit log"),
    (
        "instances",
        "instances across a tenant's groups, and their owners",
    ),
];

fn tag_of(path: &str) -> &'static str {
    let first = path
        .strip_prefix("/v1/")
        .and_then(|p| p.split('/').next())
        .unwrap_or_default();
    match first {
        "groups" | "apply" => "groups",
        "auth" => "auth",
        "tenants" | "quota" => "tenants",
        "users" => "users",
        "api-keys" => "api-keys",
        "audit" => "audit",
        "instances" => "instances",
        _ => "service",
    }
}

/// The error statuses and what each means.
fn error_description(status: &str) -> &'static str {
    match status {
        "400" => "invalid input: the problem names the field and the rule",
        "401" => "no valid token or API key",
        "403" => "the credential's role is too weak",
        "404" => "no such object in the caller's tenant",
        "409" => "a name already taken, or a state that forbids it",
        "413" => "the body is larger than 1 MiB",
        "422" => "a reference to an object that does not exist",
        "429" => "too many attempts: see Retry-After",
        "502" => "the provider failed",
        _ => "an error",
    }
}

fn problem_response(status: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(error_description(status))
            .content(
                swell_api::PROBLEM_JSON,
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build(),
    )
}

fn permission(method: &str, path: &str) -> Option<Permission> {
    RULES
        .iter()
        .find(|(m, p, _)| m.as_str().eq_ignore_ascii_case(method) && *p == path)
        .map(|(_, _, perm)| *perm)
}

fn complete(method: &str, path: &str, op: &mut Operation) {
    op.tags = Some(vec![tag_of(path).to_string()]);
    let mut errors: Vec<&str> = Vec::new();
    match permission(method, path) {
        Some(Permission::Public) => op.security = Some(Vec::new()),
        Some(Permission::Authenticated) => errors.push("401"),
        _ => errors.extend(["401", "403"]),
    }
    if op.request_body.is_some() {
        errors.extend(["400", "413"]);
    }
    if op.parameters.as_ref().is_some_and(|p| {
        p.iter()
            .any(|p| matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Query))
    }) {
        errors.push("400");
    }
    if path.contains('{') {
        errors.push("404");
    }
    if path == "/v1/auth/tokens" && method == "post" {
        errors.push("429");
    }
    for status in errors {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| problem_response(status));
    }
    // Every error answer is a problem document, whatever the annotation said.
    for (status, response) in op.responses.responses.iter_mut() {
        if status.starts_with('4') || status.starts_with('5') {
            *response = problem_response(status);
        }
    }
}

impl utoipa::Modify for Contract {
    fn modify(&self, openapi: &mut OpenApi) {
        openapi.servers = Some(vec![
            ServerBuilder::new()
                .url("/")
                .description(Some("the server this document came from"))
                .build(),
        ]);
        openapi.tags = Some(
            TAGS.iter()
                .map(|(name, what)| {
                    TagBuilder::new()
                        .name(*name)
                        .description(Some(*what))
                        .build()
                })
                .collect(),
        );
        for (path, item) in openapi.paths.paths.iter_mut() {
            for (method, op) in [
                ("get", &mut item.get),
                ("put", &mut item.put),
                ("post", &mut item.post),
                ("delete", &mut item.delete),
                ("patch", &mut item.patch),
                ("head", &mut item.head),
            ] {
                if let Some(op) = op {
                    complete(method, path, op);
                }
            }
        }
    }
}
