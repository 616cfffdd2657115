//! The API as a contract: every input bounded (control characters, sizes) with a 400
//! problem naming the field, a too-large body a 413 problem, and nothing stored.

mod common;

use common::{Answer, Swell, group_doc, never_scale};
use serde_json::{Value, json};

fn problem(a: &Answer, status: u16, field: &str, rule: &str) {
    assert_eq!(a.status, status, "{a:?}");
    assert_eq!(a.content_type, "application/problem+json", "{a:?}");
    assert_eq!(a.body["status"], status, "{a:?}");
    assert_eq!(a.body["field"], field, "{a:?}");
    assert!(
        a.body["rule"].as_str().is_some_and(|r| r.contains(rule)),
        "rule `{rule}`: {a:?}"
    );
}

#[tokio::test]
async fn unbounded_inputs_are_refused_naming_the_field_and_nothing_is_stored() {
    let s = Swell::start().await;
    let post = |doc: Value| {
        let s = &s;
        async move {
            s.request(reqwest::Method::POST, "/v1/groups", Some(&doc.to_string()))
                .await
        }
    };
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut doc = group_doc("web", 1, 2, never_scale());
        edit(&mut doc);
        doc
    };

    // Each check: the document, then the status, field and rule expected.
    let nul = with(&|d| d["template"]["command"][2] = json!("--po\u{0}rt"));
    problem(
        &post(nul).await,
        400,
        "template.command[2]",
        "control characters",
    );
    let env = with(&|d| d["template"]["env"] = json!({"MODE": "a\u{1b}[2J"}));
    problem(
        &post(env).await,
        400,
        "template.env.MODE",
        "control characters",
    );
    let name = with(&|d| d["name"] = json!("n".repeat(100 * 1024)));
    problem(&post(name).await, 400, "name", "at most 4096 bytes");
    let args: Vec<String> = (0..300).map(|i| format!("a{i}")).collect();
    let many = with(&|d| d["template"]["command"] = json!(args));
    problem(
        &post(many).await,
        400,
        "template.command",
        "at most 256 items",
    );
    // Another body type meets the same bounds.
    let a = s
        .request(
            reqwest::Method::POST,
            "/v1/tenants",
            Some(&json!({"name": "t1", "description": "x\u{0}"}).to_string()),
        )
        .await;
    problem(&a, 400, "description", "control characters");

    // A 2 MB body: 413, as a problem naming the body.
    let big = json!({"name": "web", "max": 2, "template": {"command": ["a"]}, "pad": "x".repeat(2 * 1024 * 1024)});
    let a = post(big).await;
    problem(&a, 413, "body", "at most 1048576 bytes");

    // A method a route lacks: axum's 405, as a problem, with its `Allow`.
    let a = s.request(reqwest::Method::PATCH, "/v1/groups", None).await;
    assert_eq!(a.status, 405, "{a:?}");
    assert_eq!(a.content_type, "application/problem+json", "{a:?}");

    let list = s.get("/v1/groups").await;
    assert_eq!(list, json!({"groups": []}), "bad input stored something");
    assert!(s.tagged().is_empty(), "bad input started processes");

    // The CLI's YAML meets the same bounds before anything is sent.
    let file = s.write(
        "nul.yaml",
        "name: web\nmax: 2\ntemplate:\n  command: [app, \"a\\0b\"]\n",
    );
    let out = s.cli(&["group", "create", "-f", &file]).await;
    assert!(!out.status.success(), "{out:#?}");
    assert!(
        out.stderr
            .contains("template.command[1]: no control characters"),
        "{out:#?}"
    );
}
