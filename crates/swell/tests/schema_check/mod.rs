//! A small JSON-Schema checker: the subset the served OpenAPI document uses (`$ref` to
//! its components, `type` with its nullable forms and `nullable`, `properties`,
//! `required`, `additionalProperties`, `items`, `oneOf`/`anyOf`/`allOf`, `enum`,
//! `minimum`, `maxLength`, `maxItems`), so that the contract tests can hold every
//! answer to its documented schema without a heavy dependency.

use serde_json::Value;

/// The ways `value` (at `at`) breaks `schema`, whose `$ref`s point into `doc`; empty
/// when it conforms. A keyword outside the subset is itself reported, so that the
/// checker cannot pass a document it does not understand.
pub fn violations(value: &Value, schema: &Value, doc: &Value, at: &str) -> Vec<String> {
    let mut out = Vec::new();
    check(value, schema, doc, at, &mut out);
    out
}

fn check(value: &Value, schema: &Value, doc: &Value, at: &str, out: &mut Vec<String>) {
    let Some(s) = schema.as_object() else {
        if schema != &Value::Bool(true) {
            out.push(format!("{at}: the schema `{schema}` is not an object"));
        }
        return;
    };
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        match doc.pointer(r.trim_start_matches('#')) {
            Some(target) => check(value, target, doc, at, out),
            None => out.push(format!("{at}: `{r}` points nowhere")),
        }
    }
    if value.is_null() && s.get("nullable") == Some(&Value::Bool(true)) {
        return;
    }
    if let Some(all) = s.get("allOf").and_then(Value::as_array) {
        for sub in all {
            check(value, sub, doc, at, out);
        }
    }
    for (key, exactly_one) in [("oneOf", true), ("anyOf", false)] {
        if let Some(variants) = s.get(key).and_then(Value::as_array) {
            let results: Vec<Vec<String>> = variants
                .iter()
                .map(|v| violations(value, v, doc, at))
                .collect();
            let matched = results.iter().filter(|r| r.is_empty()).count();
            if matched == 0 || (exactly_one && matched > 1) {
                out.push(format!(
                    "{at}: {matched} of the {key} variants match `{}`: {results:?}",
                    short(value)
                ));
            }
        }
    }
    if let Some(t) = s.get("type") {
        let types: Vec<&str> = match t {
            Value::String(one) => vec![one.as_str()],
            Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !types.iter().any(|t| is_type(value, t)) {
            out.push(format!("{at}: `{}` is not of type {t}", short(value)));
            return;
        }
    }
    if let Some(allowed) = s.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        out.push(format!(
            "{at}: `{}` is not one of {allowed:?}",
            short(value)
        ));
    }
    if let (Some(min), Some(n)) = (s.get("minimum").and_then(Value::as_f64), value.as_f64())
        && n < min
    {
        out.push(format!("{at}: {n} is below the minimum {min}"));
    }
    if let (Some(most), Some(text)) = (s.get("maxLength").and_then(Value::as_u64), value.as_str())
        && text.chars().count() as u64 > most
    {
        out.push(format!("{at}: longer than {most} characters"));
    }
    if let Some(items) = value.as_array() {
        if let Some(most) = s.get("maxItems").and_then(Value::as_u64)
            && items.len() as u64 > most
        {
            out.push(format!("{at}: more than {most} items"));
        }
        if let Some(item) = s.get("items") {
            for (i, v) in items.iter().enumerate() {
                check(v, item, doc, &format!("{at}[{i}]"), out);
            }
        }
    }
    if let Some(fields) = value.as_object() {
        let props = s.get("properties").and_then(Value::as_object);
        for name in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !fields.contains_key(name) {
                out.push(format!("{at}: `{name}` is required"));
            }
        }
        for (k, v) in fields {
            let here = format!("{at}.{k}");
            match (props.and_then(|p| p.get(k)), s.get("additionalProperties")) {
                (Some(sub), _) => check(v, sub, doc, &here, out),
                (None, Some(Value::Bool(false))) => {
                    out.push(format!("{here}: not a documented property"))
                }
                (None, Some(extra)) if extra.is_object() => check(v, extra, doc, &here, out),
                _ => {}
            }
        }
    }
    for key in s.keys() {
        if !KNOWN.contains(&key.as_str()) {
            out.push(format!("{at}: the checker does not know `{key}`"));
        }
    }
}

/// The keywords the checker applies, and those that only describe.
const KNOWN: &[&str] = &[
    "$ref",
    "type",
    "nullable",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "oneOf",
    "anyOf",
    "allOf",
    "enum",
    "minimum",
    "maxLength",
    "maxItems",
    "maxProperties",
    "description",
    "format",
    "example",
    "examples",
    "title",
    "default",
];

fn is_type(value: &Value, t: &str) -> bool {
    match t {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => false,
    }
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 120 {
        format!("{}…", text.chars().take(120).collect::<String>())
    } else {
        text
    }
}

#[test]
fn the_checker_refuses_what_breaks_the_schema() {
    let doc = serde_json::json!({"components": {"schemas": {
        "Q": {"type": "object", "required": ["n"], "additionalProperties": false,
              "properties": {"n": {"type": ["integer", "null"], "minimum": 0},
                             "k": {"enum": ["a", "b"]},
                             "l": {"type": "array", "items": {"type": "string"}},
                             "o": {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/Q"}]}}}
    }}});
    let q = serde_json::json!({"$ref": "#/components/schemas/Q"});
    let check = |v: Value, ok: bool| {
        let found = violations(&v, &q, &doc, "$");
        assert_eq!(found.is_empty(), ok, "{v}: {found:?}");
    };
    check(serde_json::json!({"n": 1}), true);
    check(
        serde_json::json!({"n": null, "k": "a", "l": ["x"], "o": {"n": 2}}),
        true,
    );
    check(serde_json::json!({}), false);
    check(serde_json::json!({"n": -1}), false);
    check(serde_json::json!({"n": 1.5}), false);
    check(serde_json::json!({"n": 1, "k": "c"}), false);
    check(serde_json::json!({"n": 1, "l": [1]}), false);
    check(serde_json::json!({"n": 1, "o": {"n": "x"}}), false);
    check(serde_json::json!({"n": 1, "extra": 1}), false);
    check(serde_json::json!([1]), false);
}
