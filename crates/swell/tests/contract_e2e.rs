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

/// The groups' names and `max`, by name.
async fn stored(s: &Swell) -> Vec<(String, Value)> {
    let list = s.get("/v1/groups").await;
    let mut all: Vec<(String, Value)> = list["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| {
            (
                g["name"].as_str().unwrap_or_default().to_string(),
                g["spec"]["max"].clone(),
            )
        })
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

#[tokio::test]
async fn apply_is_all_or_nothing_with_a_plan_and_prune() {
    let s = Swell::start().await;
    let doc = |groups: Vec<Value>| json!({"tenant": "default", "groups": groups}).to_string();
    let g = |name: &str, max: u32| group_doc(name, 0, max, never_scale());
    let file = s.write("t.yaml", &doc(vec![g("alpha", 2), g("beta", 2)]));
    let out = s.cli(&["apply", "-f", &file]).await;
    assert!(out.status.success(), "{out:#?}");
    let before = stored(&s).await;
    assert_eq!(before.len(), 2, "{before:?}");

    // The third group is invalid for the server only (a provider the tenant was not
    // granted, and this server lacks): the CLI's own checks pass, the server refuses
    // the whole document.
    let mut third = g("gamma", 2);
    third["provider"] = json!("docker");
    third["template"]["image"] = json!("nginx");
    let file = s.write("bad.yaml", &doc(vec![g("alpha", 5), g("delta", 2), third]));
    let out = s.cli(&["apply", "-f", &file]).await;
    assert!(!out.status.success(), "{out:#?}");
    assert!(
        out.stderr.contains("groups[2].provider") && out.stderr.contains("gamma"),
        "the group and the field: {out:#?}"
    );
    assert_eq!(
        stored(&s).await,
        before,
        "a refused document changed something"
    );
    // The same through the API: a problem naming the field, nothing stored.
    let mut bad_bounds = g("delta", 2);
    bad_bounds["min"] = json!(3);
    let a = s
        .request(
            reqwest::Method::POST,
            "/v1/apply",
            Some(&doc(vec![g("alpha", 5), g("epsilon", 2), bad_bounds])),
        )
        .await;
    problem(
        &a,
        400,
        "groups[2].max",
        "group `delta`: max (2) must be >= min (3)",
    );
    // A taken load balancer port fails the document too.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let mut port_taken = g("zeta", 2);
    port_taken["load_balancer"]["listen"] = json!(taken.local_addr().expect("addr").to_string());
    let a = s
        .request(
            reqwest::Method::POST,
            "/v1/apply",
            Some(&doc(vec![g("eta", 2), port_taken])),
        )
        .await;
    assert_eq!(a.status, 400, "{a:?}");
    assert_eq!(a.body["field"], "groups[1].load_balancer.listen", "{a:?}");
    assert_eq!(stored(&s).await, before);
    let a = s
        .request(
            reqwest::Method::POST,
            "/v1/apply",
            Some(&json!({"tenant": "other", "groups": []}).to_string()),
        )
        .await;
    problem(&a, 400, "tenant", "log in to `other`");

    // --dry-run prints the plan and changes nothing.
    let file = s.write("next.yaml", &doc(vec![g("alpha", 5), g("delta", 2)]));
    let out = s.cli(&["apply", "-f", &file, "--dry-run", "--prune"]).await;
    assert!(out.status.success(), "{out:#?}");
    for line in [
        "alpha",
        "would update",
        "delta",
        "would create",
        "beta",
        "would delete",
    ] {
        assert!(out.stdout.contains(line), "plan line `{line}`: {out:#?}");
    }
    let plan = s
        .cli_json(&["apply", "-f", &file, "--dry-run", "--prune"])
        .await;
    assert_eq!(
        plan,
        json!([
            {"group": "alpha", "action": "update"},
            {"group": "delta", "action": "create"},
            {"group": "beta", "action": "delete"},
        ])
    );
    assert_eq!(stored(&s).await, before, "a dry run changed something");
    assert_eq!(
        s.events("alpha").await.len(),
        1,
        "a dry run recorded events"
    );

    // --prune deletes the groups the document does not list.
    let out = s.cli(&["apply", "-f", &file, "--prune"]).await;
    assert!(out.status.success(), "{out:#?}");
    assert!(out.stderr.contains("group beta deleted"), "{out:#?}");
    // beta has no instance (min 0), so its deletion may already be complete.
    let beta = s
        .request(reqwest::Method::GET, "/v1/groups/beta", None)
        .await;
    let going = beta.status == 404 || beta.body["deleting"] == true;
    assert!(going, "beta is being deleted: {beta:?}");
    let after = stored(&s).await;
    assert!(after.contains(&("alpha".into(), json!(5))), "{after:?}");
    assert!(after.contains(&("delta".into(), json!(2))), "{after:?}");
    // Applying it again: nothing to do.
    let again = s.cli_json(&["apply", "-f", &file, "--dry-run"]).await;
    assert_eq!(
        again,
        json!([
            {"group": "alpha", "action": "unchanged"},
            {"group": "delta", "action": "unchanged"},
        ])
    );
}

/// The published document describes the API a client meets: every documented
/// operation exists on the server (no token: 401 where one is needed, never the
/// unknown-route 404 or a 405), public ones say `security: []`, every error answer is
/// `application/problem+json` with the problem schema, bodies may be refused 400/413.
#[tokio::test]
async fn the_openapi_document_matches_the_server() {
    let s = Swell::start().await;
    let http = reqwest::Client::new();
    let doc: Value = http
        .get(format!("{}/v1/openapi.json", s.url))
        .send()
        .await
        .expect("the document")
        .json()
        .await
        .expect("JSON");
    assert_eq!(doc["servers"][0]["url"], "/", "{}", doc["servers"]);
    let tags: Vec<&str> = doc["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        tags.contains(&"groups") && tags.contains(&"auth"),
        "{tags:?}"
    );
    let problem_ref = json!({"$ref": "#/components/schemas/Problem"});
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("a path item") {
            operations += 1;
            let what = format!("{} {path}", method.to_uppercase());
            let tag = op["tags"][0].as_str().unwrap_or_default();
            assert!(tags.contains(&tag), "{what}: tag `{tag}`");
            let responses = op["responses"].as_object().expect("responses");
            for (status, r) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        r["content"]["application/problem+json"]["schema"], problem_ref,
                        "{what} {status}: {r}"
                    );
                    assert!(r["content"].get("application/json").is_none(), "{what}");
                }
            }
            if op.get("requestBody").is_some() {
                for status in ["400", "413"] {
                    assert!(responses.contains_key(status), "{what} lacks {status}");
                }
            }
            let public = op["security"] == json!([]);
            // The route is real: called without a token it is refused or answered,
            // never the unknown-route fallback.
            let url = format!("{}{}", s.url, path.replace('{', "x").replace('}', ""));
            let method =
                reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("a method");
            let answer = http
                .request(method, &url)
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .expect("an answer");
            let status = answer.status().as_u16();
            let content_type = answer
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let body: Value = answer.json().await.unwrap_or(Value::Null);
            assert_ne!(status, 405, "{what}: {body}");
            assert!(
                body["detail"] != "no such route; see /v1/openapi.json",
                "{what} is documented but not routed"
            );
            if public {
                assert_ne!(status, 401, "{what} is documented public: {body}");
            } else {
                assert_eq!(status, 401, "{what} without a token: {body}");
                assert!(responses.contains_key("401"), "{what} lacks 401");
            }
            if status >= 400 {
                assert_eq!(content_type, "application/problem+json", "{what}");
                assert!(
                    responses.contains_key(&status.to_string()),
                    "{what}: answered {status}, which is not documented"
                );
            }
        }
    }
    assert!(operations >= 40, "{operations} operations");
    for public in [("/v1/health", "get"), ("/v1/auth/tokens", "post")] {
        assert_eq!(
            doc["paths"][public.0][public.1]["security"],
            json!([]),
            "{public:?}"
        );
    }
    assert_ne!(doc["paths"]["/v1/groups"]["get"]["security"], json!([]));
}

/// A small deterministic generator (xorshift), so that a failing case can be replayed
/// from its seed.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// A string that is sometimes hostile: control characters, very long, unicode.
    fn string(&mut self) -> String {
        match self.below(8) {
            0 => "\u{0}".into(),
            1 => "x".repeat(5000),
            2 => "a\u{1b}[2Jb".into(),
            3 => "Équipe 東京".into(),
            4 => String::new(),
            5 => "-1".into(),
            _ => format!("s{}", self.below(1000)),
        }
    }

    /// A JSON value shaped like `schema` when there is one, and anything at times.
    fn value(&mut self, schema: &Value, doc: &Value, depth: u32) -> Value {
        let schema = match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => doc
                .pointer(r.trim_start_matches('#'))
                .unwrap_or(&Value::Null),
            None => schema,
        };
        if depth > 4 || self.below(10) == 0 {
            return match self.below(5) {
                0 => Value::Null,
                1 => json!(self.string()),
                2 => json!(-1),
                3 => json!([]),
                _ => json!({}),
            };
        }
        if let Some(variants) = schema.get("oneOf").and_then(Value::as_array) {
            let i = self.below(variants.len() as u64) as usize;
            return self.value(&variants[i], doc, depth + 1);
        }
        match schema.get("type").and_then(Value::as_str) {
            Some("string") => json!(self.string()),
            Some("integer") => json!(self.below(20)),
            Some("number") => json!(self.below(200) as f64 / 2.0),
            Some("boolean") => json!(self.below(2) == 1),
            Some("array") => {
                let n = self.below(3);
                let item = schema.get("items").cloned().unwrap_or(Value::Null);
                Value::Array((0..n).map(|_| self.value(&item, doc, depth + 1)).collect())
            }
            _ => {
                let mut out = serde_json::Map::new();
                if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                    for (k, v) in props {
                        if self.below(3) > 0 {
                            out.insert(k.clone(), self.value(v, doc, depth + 1));
                        }
                    }
                }
                Value::Object(out)
            }
        }
    }
}

/// A contract fuzz of the real server from its own document: every operation gets
/// bodies, path and query values generated from the schemas (and hostile strings), as
/// the admin. No answer is a 5xx, every error is a problem document, and the server
/// still serves afterwards.
#[tokio::test]
async fn generated_requests_never_get_a_5xx() {
    let s = Swell::start().await;
    let doc = s.get("/v1/openapi.json").await;
    let http = reqwest::Client::new();
    let cases_per_operation = std::env::var("SWELL_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25u64);
    let mut g = Gen(0x5357_454c_4c5f_4655);
    let mut cases = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("a path item") {
            // Logging the admin out or deleting users would end the run, not test it.
            if path == "/v1/auth/tokens/current" || path.starts_with("/v1/users/{user}") {
                continue;
            }
            for _ in 0..cases_per_operation {
                let mut url = path.clone();
                let mut query = Vec::new();
                for p in op["parameters"].as_array().into_iter().flatten() {
                    let name = p["name"].as_str().unwrap_or_default();
                    let v = g.value(&p["schema"], &doc, 3);
                    let text = match v {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    let text: String = text.chars().take(100).collect();
                    let encoded: String = form_urlencoded(&text);
                    if p["in"] == "path" {
                        url = url.replace(&format!("{{{name}}}"), &encoded);
                    } else if g.below(2) == 0 {
                        query.push(format!("{name}={encoded}"));
                    }
                }
                let mut full = format!("{}{url}", s.url);
                if !query.is_empty() {
                    full = format!("{full}?{}", query.join("&"));
                }
                let schema = &op["requestBody"]["content"]["application/json"]["schema"];
                let body = if schema.is_null() {
                    String::new()
                } else {
                    g.value(schema, &doc, 0).to_string()
                };
                let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes())
                    .expect("a method");
                let answer = http
                    .request(m, &full)
                    .bearer_auth(&s.token)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .expect("an answer");
                cases += 1;
                let status = answer.status().as_u16();
                let content_type = answer
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let text = answer.text().await.unwrap_or_default();
                assert!(status < 500, "{method} {full} with {body}: {status} {text}");
                if status >= 400 {
                    assert_eq!(
                        content_type, "application/problem+json",
                        "{method} {full}: {status} {text}"
                    );
                }
            }
        }
    }
    eprintln!("contract fuzz: {cases} generated requests, no 5xx");
    assert!(cases >= 500, "{cases} cases");
    let health = s.get("/v1/health").await;
    assert_eq!(health["status"], "ok", "the server still serves");
}

/// Percent-encodes a path or query value.
fn form_urlencoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
