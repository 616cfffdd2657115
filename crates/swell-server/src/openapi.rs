//! The OpenAPI document as a contract: what the handlers' annotations say, completed
//! from the one table of routes ([`RULES`]) so that it cannot drift from what the server
//! does: public routes need no token (`security: []`), every other one may answer 401
//! (and 403 when it needs a role), every error answer is `application/problem+json`
//! with the [`swell_api::Problem`] schema, a body may be refused 400 or 413, a path
//! naming an object 400 (not a valid name) or 404; plus `servers` and `tags`.

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
        "providers",
        "provider definitions: what tenants run instances on (admins define them)",
    ),
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
        "providers" => "providers",
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
        // A path value that is no valid name (a tenant, a user) is refused before any
        // lookup: 400 naming the parameter.
        errors.extend(["400", "404"]);
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

/// A group document that uses every field (each policy type, both metric sources, an
/// OpenStack template, a load balancer with its checks). The `GroupDocument` schema is
/// derived from what `GroupSpec` makes of it, so the schema has exactly the fields the
/// server reads and writes; a test fails when `GroupSpec` gains a field this example
/// does not show.
pub(crate) fn full_group_document() -> serde_json::Value {
    serde_json::json!({
        "name": "web",
        "provider": "openstack",
        "fallback_providers": ["process"],
        "template": {
            "command": ["./app", "--port", "{port}"],
            "image": "cirros",
            "env": {"MODE": "prod"},
            "vcpus": 1,
            "memory_mb": 256,
            "docker": {"writable_root": false, "user": "65534:65534"},
            "qemu": {
                "hostname": "web",
                "ssh_authorized_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI lab"],
                "user_data": "#cloud-config\n",
            },
            "openstack": {
                "flavor": "m1.tiny",
                "networks": ["private"],
                "security_groups": ["default"],
                "security_group_rules": [{
                    "direction": "ingress", "protocol": "tcp", "port_range_min": 80,
                    "port_range_max": 80, "remote_ip_prefix": "0.0.0.0/0"
                }],
                "key_name": "lab",
                "user_data": "#cloud-config\n",
                "availability_zone": "nova",
                "floating_ip_network": "public",
                "octavia_pool": "pool",
                "member_port": 80,
                "pause_mode": "suspend"
            }
        },
        "min": 1,
        "max": 4,
        "desired_capacity": 2,
        "cooldown": "2m",
        "warmup": "10s",
        "drain_timeout": "30s",
        "evaluation_interval": "10s",
        "metrics_interval": "5s",
        "policies": [
            {"type": "threshold", "metric": "cpu", "scale_out_above": 70.0, "scale_in_below": 20.0,
             "step": 1, "steps": [{"breach": 20.0, "step": 2}], "evaluation_period": "40s"},
            {"type": "proportional", "metric": "cpu", "target": 50.0, "evaluation_period": "40s"},
            {"type": "target", "metric": "cpu", "target": 50.0, "tolerance": 0.1,
             "scale_out_period": "1m", "scale_in_period": "5m", "scale_in_stabilization": "5m",
             "max_step": 4},
            {"type": "schedule", "cron": "0 8 * * 1-5", "timezone": "Europe/Paris",
             "duration": "10h", "min": 2, "max": 8, "desired": 3},
            {"type": "predictive", "metric": "cpu", "target": 50.0, "provisioning_delay": "1m",
             "min_history": "1d", "max_error": 0.3, "evaluation_period": "1m",
             "trend_window": "1h"},
            {"type": "swell", "metric": "cpu", "target": 60.0, "saturation": 90.0,
             "confidence": 0.95, "provisioning_delay": "1m", "horizon": "5m",
             "scale_in_window": "10m", "trend_window": "30m", "min_scored": 100,
             "tolerance": 0.1}
        ],
        "load_balancer": {
            "listen": "127.0.0.1:8080",
            "protocol": "http",
            "algorithm": "round_robin",
            "health_check": {"type": "http", "path": "/healthz", "interval": "5s",
                "timeout": "2s", "healthy_threshold": 2, "unhealthy_threshold": 3,
                "replace_after": "30s"},
            "passive_ejection": {"consecutive_failures": 5, "ejection_time": "30s"},
            "request_timeout": "60s",
            "idle_timeout": "60s",
            "max_body_bytes": 1048576,
            "max_connections": 10000,
            "workers": 2
        },
        "metric_sources": [
            {"type": "ssh", "user": "cirros", "port": 22, "private_key_file": "lab",
             "command": "top -b -n 1", "timeout": "5s"},
            {"type": "prometheus", "url": "http://127.0.0.1:9090", "query": "sum(rate(x[1m]))",
             "metric": "request_rate", "timeout": "5s"}
        ],
        "termination_policy": ["least_preferred_provider", "most_loaded_host", "oldest"]
    })
}

/// The JSON schema of a value shaped like `example` (named `key` in its parent), with
/// the bounds of [`swell_core::limits`]: every field of the example, no other.
fn schema_of(example: &serde_json::Value, key: &str) -> serde_json::Value {
    use serde_json::{Value, json};
    use swell_core::limits;
    match example {
        Value::String(_) => {
            let most = if limits::MULTI_LINE_FIELDS.contains(&key) {
                limits::MAX_TEXT_BYTES
            } else {
                limits::MAX_STRING_BYTES
            };
            json!({"type": "string", "maxLength": most})
        }
        Value::Bool(_) => json!({"type": "boolean"}),
        Value::Number(n) if n.is_f64() => json!({"type": "number"}),
        Value::Number(_) => json!({"type": "integer", "minimum": 0}),
        Value::Null => json!({"nullable": true}),
        Value::Array(items) => {
            // A list of tagged objects (`type:`) is one of its variants.
            let tagged = items.iter().all(|i| i.get("type").is_some()) && items.len() > 1;
            let item = if tagged {
                let variants: Vec<Value> = items.iter().map(|i| schema_of(i, key)).collect();
                json!({"oneOf": variants})
            } else {
                items.first().map_or(json!({}), |i| schema_of(i, key))
            };
            json!({"type": "array", "items": item, "maxItems": limits::MAX_ITEMS})
        }
        Value::Object(_) if key == "env" => json!({
            "type": "object",
            "additionalProperties": {"type": "string", "maxLength": limits::MAX_STRING_BYTES},
            "maxProperties": limits::MAX_ITEMS,
        }),
        Value::Object(map) => {
            let properties: serde_json::Map<String, Value> = map
                .iter()
                .map(|(k, v)| {
                    let mut s = schema_of(v, k);
                    if k == "type"
                        && let Some(tag) = v.as_str()
                    {
                        s["enum"] = json!([tag]);
                    }
                    (k.clone(), s)
                })
                .collect();
            json!({"type": "object", "properties": properties, "additionalProperties": false})
        }
    }
}

/// The group document's schema: [`full_group_document`] as `GroupSpec` reads and writes it.
pub(crate) fn group_document_schema() -> serde_json::Value {
    let example = serde_json::from_value::<swell_core::GroupSpec>(full_group_document())
        .ok()
        .and_then(|spec| serde_json::to_value(spec).ok())
        .unwrap_or_else(full_group_document);
    let mut schema = schema_of(&example, "");
    schema["properties"]["termination_policy"]["items"]["enum"] =
        serde_json::json!(swell_core::TerminationRule::ALL);
    schema["required"] = serde_json::json!(["name", "max", "template"]);
    schema["description"] =
        "A group document (docs/configuration.md): what POST /v1/groups and PUT /v1/groups/{name} take.".into();
    schema["example"] = example;
    schema
}

/// The document `GET /v1/openapi.json` serves: [`crate::http::ApiDoc`] with the group
/// document's schema in place of the free-form objects the handlers declare (the server
/// reads groups as `GroupSpec`, which has no `ToSchema`: `swell-core` stays free of the
/// HTTP layer's crates).
pub fn document() -> serde_json::Value {
    use utoipa::OpenApi as _;
    let mut doc = serde_json::to_value(crate::http::ApiDoc::openapi()).unwrap_or_default();
    let group_ref = serde_json::json!({"$ref": "#/components/schemas/GroupDocument"});
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(|s| s.as_object_mut())
    {
        schemas.insert("GroupDocument".into(), group_document_schema());
    }
    for pointer in [
        "/paths/~1v1~1groups/post/requestBody/content/application~1json/schema",
        "/paths/~1v1~1groups~1{name}/put/requestBody/content/application~1json/schema",
        "/components/schemas/Group/properties/spec",
        "/components/schemas/TenantDocument/properties/groups/items",
    ] {
        if let Some(slot) = doc.pointer_mut(pointer) {
            *slot = group_ref.clone();
        }
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Every key of `got` (recursively, lists by their items) is in `example`.
    fn covered(got: &Value, example: &Value, path: &str, missing: &mut Vec<String>) {
        match (got, example) {
            (Value::Object(g), Value::Object(e)) => {
                for (k, v) in g {
                    match e.get(k) {
                        Some(ev) => covered(v, ev, &format!("{path}.{k}"), missing),
                        None => missing.push(format!("{path}.{k}")),
                    }
                }
            }
            (Value::Array(g), Value::Array(e)) => {
                for (i, v) in g.iter().enumerate() {
                    if let Some(ev) = e.get(i) {
                        covered(v, ev, &format!("{path}[{i}]"), missing);
                    }
                }
            }
            _ => {}
        }
    }

    /// The drift guard: the example is a valid `GroupSpec`, and every field `GroupSpec`
    /// writes for it (defaults included) is in the example, so in the schema. A field
    /// added to `GroupSpec` (or to a policy, a source, the load balancer…) fails here
    /// until the example shows it.
    #[test]
    fn the_group_schema_has_every_field_of_group_spec() {
        let spec: swell_core::GroupSpec =
            serde_json::from_value(full_group_document()).expect("the example is a GroupSpec");
        let written = serde_json::to_value(&spec).unwrap();
        let mut missing = Vec::new();
        covered(&written, &full_group_document(), "", &mut missing);
        assert!(missing.is_empty(), "not in the example: {missing:?}");
        let schema = group_document_schema();
        let props = schema["properties"].as_object().unwrap();
        for key in written.as_object().unwrap().keys() {
            assert!(props.contains_key(key), "{key}");
        }
        assert_eq!(
            schema["properties"]["template"]["properties"]["command"]["maxItems"],
            256
        );
        assert_eq!(
            schema["properties"]["template"]["properties"]["openstack"]["properties"]["user_data"]
                ["maxLength"],
            65536
        );
        let policies = schema["properties"]["policies"]["items"]["oneOf"]
            .as_array()
            .unwrap();
        assert_eq!(policies.len(), 6);
        let doc = document();
        let group_ref = serde_json::json!({"$ref": "#/components/schemas/GroupDocument"});
        assert_eq!(
            doc["paths"]["/v1/groups"]["post"]["requestBody"]["content"]["application/json"]["schema"],
            group_ref
        );
        assert_eq!(
            doc["components"]["schemas"]["TenantDocument"]["properties"]["groups"]["items"],
            group_ref
        );
        assert_eq!(
            doc["components"]["schemas"]["Group"]["properties"]["spec"],
            group_ref
        );
    }
}
