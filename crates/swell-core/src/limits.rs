//! Bounds on every input, checked in one place: every string, map key and list of a
//! JSON document that comes from outside (each API body, the CLI's YAML documents).
//!
//! The rules are structural, so that a field added later is bounded without anyone
//! remembering to: no control characters in any string or key (a NUL byte in a command
//! argument would otherwise fail only at spawn, and an escape sequence would reach the
//! logs and the terminal); strings, keys and lists have a size limit. The few fields
//! that hold multi-line text ([`MULTI_LINE_FIELDS`]) may contain line breaks and tabs,
//! and larger text. docs/configuration.md "Limits" lists them.

use crate::error::ValidationError;
use serde_json::Value;

/// Most bytes in a string (a command argument, an environment value, an image, a URL…).
pub const MAX_STRING_BYTES: usize = 4096;
/// Most bytes in a multi-line text field (cloud-init user data; Nova takes 64 KiB).
pub const MAX_TEXT_BYTES: usize = 65_536;
/// Most bytes in a map key (an environment variable's name).
pub const MAX_KEY_BYTES: usize = 256;
/// Most items in a list (command arguments, policies, metric sources, networks…) and
/// most entries in a map (environment variables).
pub const MAX_ITEMS: usize = 256;
/// Most items in the one list allowed to be longer: a metric push's `samples`.
pub const MAX_SAMPLES: usize = 1000;
/// How deep a document may nest (the group document nests 4 levels).
pub const MAX_DEPTH: usize = 16;

/// Fields (by their last name) whose text may span lines: they may hold `\n`, `\r` and
/// `\t`, and up to [`MAX_TEXT_BYTES`].
pub const MULTI_LINE_FIELDS: &[&str] = &["user_data", "query"];

/// Checks every string, key and list of `value` (named `root` in errors, `""` for the
/// document itself); the first breach is returned with its field (`template.command[2]`,
/// `template.env.PATH`).
pub fn check(value: &Value, root: &str) -> Result<(), ValidationError> {
    walk(value, root, "", 0)
}

fn walk(value: &Value, path: &str, last: &str, depth: usize) -> Result<(), ValidationError> {
    if depth > MAX_DEPTH {
        return Err(ValidationError::new(
            field(path),
            format!("nests deeper than {MAX_DEPTH} levels"),
        ));
    }
    match value {
        Value::String(s) => check_string(s, path, last),
        Value::Array(items) => {
            let most = if last == "samples" {
                MAX_SAMPLES
            } else {
                MAX_ITEMS
            };
            if items.len() > most {
                return Err(ValidationError::new(
                    field(path),
                    format!("at most {most} items (got {})", items.len()),
                ));
            }
            for (i, item) in items.iter().enumerate() {
                walk(item, &format!("{path}[{i}]"), last, depth + 1)?;
            }
            Ok(())
        }
        Value::Object(map) => {
            if map.len() > MAX_ITEMS {
                return Err(ValidationError::new(
                    field(path),
                    format!("at most {MAX_ITEMS} entries (got {})", map.len()),
                ));
            }
            for (key, item) in map {
                let shown = shown_key(key);
                let child = if path.is_empty() {
                    shown
                } else {
                    format!("{path}.{shown}")
                };
                if key.len() > MAX_KEY_BYTES {
                    return Err(ValidationError::new(
                        child,
                        format!("a name of at most {MAX_KEY_BYTES} bytes"),
                    ));
                }
                if let Some(c) = key.chars().find(|c| c.is_control()) {
                    return Err(ValidationError::new(
                        child,
                        format!("a name without control characters (found {c:?})"),
                    ));
                }
                walk(item, &child, key, depth + 1)?;
            }
            Ok(())
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
    }
}

fn check_string(s: &str, path: &str, last: &str) -> Result<(), ValidationError> {
    let multi_line = MULTI_LINE_FIELDS.contains(&last);
    let most = if multi_line {
        MAX_TEXT_BYTES
    } else {
        MAX_STRING_BYTES
    };
    if s.len() > most {
        return Err(ValidationError::new(
            field(path),
            format!("at most {most} bytes (got {})", s.len()),
        ));
    }
    let allowed = |c: char| multi_line && matches!(c, '\n' | '\r' | '\t');
    if let Some(c) = s.chars().find(|&c| c.is_control() && !allowed(c)) {
        return Err(ValidationError::new(
            field(path),
            format!("no control characters allowed (found {c:?})"),
        ));
    }
    Ok(())
}

/// The document itself is named `body`.
fn field(path: &str) -> String {
    if path.is_empty() {
        "body".into()
    } else {
        path.into()
    }
}

/// A key as it appears in a field's path: escaped (no control character reaches an
/// error message) and cut short.
pub(crate) fn shown_key(key: &str) -> String {
    let escaped: String = key.escape_debug().collect();
    match escaped.char_indices().nth(64) {
        Some((i, _)) => format!("{}…", &escaped[..i]),
        None => escaped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `None`: accepted; `Some((field, rule part))`: rejected so.
    fn check_doc(doc: Value, expected: Option<(&str, &str)>) {
        let got = check(&doc, "");
        match (got, expected) {
            (Ok(()), None) => {}
            (Err(e), Some((f, r))) => {
                assert_eq!(e.field, f, "{doc}");
                assert!(e.rule.contains(r), "{}: {doc}", e.rule);
            }
            (got, expected) => panic!("{doc}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn every_string_key_and_list_is_bounded() {
        let long = "x".repeat(MAX_STRING_BYTES + 1);
        let many: Vec<String> = (0..=MAX_ITEMS).map(|i| i.to_string()).collect();
        let env: serde_json::Map<String, Value> = (0..=MAX_ITEMS)
            .map(|i| (format!("K{i}"), json!("v")))
            .collect();
        check_doc(
            json!({"template": {"command": ["app", "--port", "{port}"]}}),
            None,
        );
        check_doc(
            json!({"template": {"command": ["app", "a\u{0}b"]}}),
            Some(("template.command[1]", "control characters")),
        );
        check_doc(
            json!({"template": {"env": {"A": "x\u{1b}[31m"}}}),
            Some(("template.env.A", "control characters")),
        );
        check_doc(
            json!({"template": {"env": {"A\u{0}B": "x"}}}),
            Some(("template.env.A\\0B", "control characters")),
        );
        check_doc(
            json!({"template": {"env": {"A": "line\nbreak"}}}),
            Some(("template.env.A", "'\\n'")),
        );
        check_doc(json!({"name": long}), Some(("name", "at most 4096 bytes")));
        check_doc(
            json!({"template": {"command": many}}),
            Some(("template.command", "at most 256 items")),
        );
        check_doc(
            json!({"template": {"env": env}}),
            Some(("template.env", "at most 256 entries")),
        );
        check_doc(
            json!({"template": {"env": {"K".repeat(MAX_KEY_BYTES + 1): "v"}}}),
            Some((
                &format!("template.env.{}…", "K".repeat(64)),
                "at most 256 bytes",
            )),
        );
        // Multi-line text fields take line breaks and more bytes, but not NUL.
        check_doc(
            json!({"template": {"openstack": {"user_data": format!("#cloud-config\n\t{}", "y".repeat(10_000))}}}),
            None,
        );
        check_doc(
            json!({"metric_sources": [{"query": "sum(rate(x[1m]))\n  by (job)"}]}),
            None,
        );
        check_doc(
            json!({"metric_sources": [{"query": "a\u{0}"}]}),
            Some(("metric_sources[0].query", "control characters")),
        );
        check_doc(
            json!({"template": {"openstack": {"user_data": "y".repeat(MAX_TEXT_BYTES + 1)}}}),
            Some(("template.openstack.user_data", "at most 65536 bytes")),
        );
        // Pushes may carry up to 1000 samples.
        let samples: Vec<Value> = (0..MAX_SAMPLES).map(|_| json!({"metric": "cpu"})).collect();
        check_doc(json!({"samples": samples}), None);
        check_doc(json!("a\u{7f}"), Some(("body", "control characters")));
        let mut deep = json!(1);
        for _ in 0..=MAX_DEPTH {
            deep = json!([deep]);
        }
        check_doc(deep, Some((&"[0]".repeat(MAX_DEPTH + 1), "deeper")));
    }

    #[test]
    fn unicode_text_is_fine() {
        check_doc(json!({"description": "Équipe données — 東京"}), None);
    }
}
