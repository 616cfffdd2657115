//! The API as a contract: every input bounded (control characters, sizes) with a 400
//! problem naming the field, a too-large body a 413 problem, and nothing stored.

mod common;
mod schema_check;

use common::{Answer, Swell, group_doc, never_scale, wait_running};
use serde_json::{Value, json};
use std::collections::BTreeMap;

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

/// Who sends a request of the contract run.
#[derive(Clone, Copy)]
enum Who {
    /// The bootstrap admin.
    Admin,
    /// A user with the `viewer` role in `default`.
    Viewer,
    /// No credential at all.
    Nobody,
    /// A token the server never issued.
    Forged,
}

/// The contract run against one server: every answer is checked against the document
/// (a documented status, the documented content type, the documented schema) and
/// counted per (family, status).
struct Probe<'a> {
    s: &'a Swell,
    doc: &'a Value,
    http: reqwest::Client,
    viewer: String,
    /// (family, status) → answers seen.
    seen: BTreeMap<(String, u16), u64>,
    /// Every way an answer broke the document: the first case per operation and status.
    broken: BTreeMap<String, String>,
    cases: u64,
    /// Answers whose JSON body was checked against a documented schema.
    validated: u64,
}

/// A family: the first path segment after `/v1/`.
fn family(path: &str) -> String {
    path.trim_start_matches("/v1/")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string()
}

impl Probe<'_> {
    /// Records how an answer broke the document (the first case per operation and status).
    fn broke(&mut self, what: &str, how: String) {
        self.broken.entry(what.to_string()).or_insert(how);
    }

    /// Sends `method path` (`template` is its documented path) and checks the answer
    /// against the document; returns the status and the body.
    async fn send(
        &mut self,
        method: &str,
        template: &str,
        path: &str,
        who: Who,
        body: Option<String>,
    ) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("a method");
        let mut req = self.http.request(m, format!("{}{path}", self.s.url));
        req = match who {
            Who::Admin => req.bearer_auth(&self.s.token),
            Who::Viewer => req.bearer_auth(&self.viewer),
            Who::Nobody => req,
            Who::Forged => req.bearer_auth("swell_forged0000000000000000000000"),
        };
        if let Some(b) = &body {
            req = req
                .header("content-type", "application/json")
                .body(b.clone());
        }
        let answer = req.send().await.expect("an answer");
        self.cases += 1;
        let status = answer.status().as_u16();
        let content_type = answer
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        let text = answer.text().await.unwrap_or_default();
        *self.seen.entry((family(template), status)).or_default() += 1;
        let what = format!("{} {template} → {status}", method.to_uppercase());
        let shown: String = body.as_deref().unwrap_or("").chars().take(200).collect();
        let doc = self.doc;
        let op = &doc["paths"][template][method];
        let Some(response) = op["responses"].get(status.to_string()) else {
            self.broke(
                &what,
                format!("{what}: not a documented status ({path} with {shown}: {text})"),
            );
            return (status, Value::Null);
        };
        let body_json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        match response["content"].as_object() {
            None if !text.is_empty() => {
                self.broke(
                    &what,
                    format!("{what}: documented without a body, sent `{text}`"),
                );
            }
            None => {}
            Some(content) => match content.get(&content_type) {
                None => {
                    self.broke(
                        &what,
                        format!(
                            "{what}: content type `{content_type}` is not one of {:?}",
                            content.keys().collect::<Vec<_>>()
                        ),
                    );
                }
                Some(media) if content_type.ends_with("json") => {
                    if text.is_empty() || (body_json.is_null() && text.trim() != "null") {
                        self.broke(&what, format!("{what}: the body is not JSON: {text}"));
                    }
                    let found = schema_check::violations(&body_json, &media["schema"], doc, "$");
                    self.validated += 1;
                    if !found.is_empty() {
                        self.broke(&what, format!("{what}: {found:?} in {text}"));
                    }
                }
                Some(_) => {}
            },
        }
        assert!(status < 500, "{what}: {path} with {shown}: {text}");
        (status, body_json)
    }
}

/// The operations of the document: (method, path).
fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut all = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            all.push((method.clone(), path.clone()));
        }
    }
    all
}

/// Documented statuses no run of this test reaches, and why.
const UNREACHED: &[(&str, u16, &str)] = &[
    (
        "users",
        503,
        "only while too many password hashes wait (auth's unit tests hold it)",
    ),
    (
        "apply",
        404,
        "only when a listed group finishes its deletion during the apply (a race)",
    ),
];

/// A contract run of the real server from its own document. First, directed requests
/// reach every documented status of every family (no or a forged token: 401; a viewer:
/// 403; unknown names: 404; duplicates and states: 409; bad bodies and queries: 400; a
/// 2 MB body: 413; failed logins: 429; and each operation's success). Then bodies, path
/// and query values generated from the schemas (and hostile strings), as the admin.
/// Every answer has a documented status (never a 5xx), the documented content type, and
/// a body that validates against the documented schema; every documented status of a
/// family is seen; the server still serves afterwards.
#[tokio::test]
async fn generated_requests_never_get_a_5xx() {
    let started = std::time::Instant::now();
    let s = Swell::start().await;
    let doc = s.get("/v1/openapi.json").await;
    let mut p = Probe {
        s: &s,
        doc: &doc,
        // Kept-alive connections: a refusal sent before the server read a request's body
        // closes its connection and says so (`Connection: close`), so a reused one never
        // meets `IncompleteMessage` (swell-server's `tests/early_refusal.rs`).
        http: reqwest::Client::new(),
        viewer: String::new(),
        seen: BTreeMap::new(),
        broken: BTreeMap::new(),
        cases: 0,
        validated: 0,
    };
    directed(&mut p).await;
    let directed_cases = p.cases;

    let cases_per_operation = std::env::var("SWELL_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25u64);
    let mut g = Gen(0x5357_454c_4c5f_4655);
    for (method, path) in operations(&doc) {
        let op = &doc["paths"][&path][&method];
        // Logging the admin out or deleting users would end the run, not test it.
        if path == "/v1/auth/tokens/current" || path.starts_with("/v1/users/{user}") {
            continue;
        }
        for _ in 0..cases_per_operation {
            let mut url = path.clone();
            let mut query = Vec::new();
            for param in op["parameters"].as_array().into_iter().flatten() {
                let name = param["name"].as_str().unwrap_or_default();
                let v = g.value(&param["schema"], &doc, 3);
                let text = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                let text: String = text.chars().take(100).collect();
                let encoded: String = form_urlencoded(&text);
                if param["in"] == "path" {
                    url = url.replace(&format!("{{{name}}}"), &encoded);
                } else if g.below(2) == 0 {
                    query.push(format!("{name}={encoded}"));
                }
            }
            if path.ends_with("/events/stream") {
                // A stream of a group a generated create made would stay open until
                // its timeout: end it at once (a duplicate `max_events` is a 400).
                query.push("max_events=0".into());
            }
            if !query.is_empty() {
                url = format!("{url}?{}", query.join("&"));
            }
            let schema = &op["requestBody"]["content"]["application/json"]["schema"];
            let body = (!schema.is_null()).then(|| g.value(schema, &doc, 0).to_string());
            p.send(&method, &path, &url, Who::Admin, body).await;
        }
    }

    endgame(&mut p).await;

    let mut table = String::new();
    for ((family, status), n) in &p.seen {
        table.push_str(&format!("  {family:<10} {status}  {n}\n"));
    }
    eprintln!(
        "contract run: {} requests ({directed_cases} directed, {} generated at {cases_per_operation} per operation), {} bodies checked against their schema, in {:.1} s\n(family, status) → answers:\n{table}",
        p.cases,
        p.cases - directed_cases,
        p.validated,
        started.elapsed().as_secs_f64()
    );
    assert!(
        p.broken.is_empty(),
        "answers that break the document:\n{}",
        p.broken.values().cloned().collect::<Vec<_>>().join("\n")
    );
    // Every documented status of every family was answered at least once.
    let mut missing = Vec::new();
    let mut documented = BTreeMap::new();
    for (method, path) in operations(&doc) {
        let f = family(&path);
        for status in doc["paths"][&path][&method]["responses"]
            .as_object()
            .expect("responses")
            .keys()
        {
            let status: u16 = status.parse().expect("a status");
            documented.insert((f.clone(), status), ());
            let exempt = UNREACHED
                .iter()
                .any(|(uf, us, _)| *uf == f && *us == status);
            if !exempt && !p.seen.contains_key(&(f.clone(), status)) {
                missing.push(format!("{f} {status} ({} {path})", method.to_uppercase()));
            }
        }
    }
    missing.sort();
    missing.dedup();
    assert!(missing.is_empty(), "never answered: {missing:#?}\n{table}");
    // An exemption lasts only while its status is documented (a race may still reach
    // it: the directed `gone` group can finish its deletion during the apply naming it).
    for (f, status, why) in UNREACHED {
        let key = (f.to_string(), *status);
        assert!(
            documented.contains_key(&key),
            "{f} {status} ({why}) is no longer documented"
        );
    }
    assert!(p.cases >= 500, "{} cases", p.cases);
    assert!(p.validated * 2 > p.cases, "{} bodies checked", p.validated);
    let health = s.get("/v1/health").await;
    assert_eq!(health["status"], "ok", "the server still serves");
}

/// The statuses only an ending reaches: a listen address taken, a password guessed
/// too often, a grant withdrawn under a live token, the tenant itself deleted.
async fn endgame(p: &mut Probe<'_>) {
    let admin = Who::Admin;
    // The generated run may have left a tight default quota: unlimited again, so that
    // what follows meets the rule it is meant to meet.
    let (st, _) = p
        .send(
            "put",
            "/v1/quota/default",
            "/v1/quota/default",
            admin,
            Some("{}".into()),
        )
        .await;
    assert_eq!(st, 200);
    // A listen address another group holds: 409 naming it.
    let port = common::free_port();
    for name in ["lb-one", "lb-two"] {
        let mut g = group_doc(name, 0, 1, never_scale());
        g["load_balancer"]["listen"] = json!(format!("127.0.0.1:{port}"));
        let body = json!({"tenant": "default", "groups": [g]}).to_string();
        p.send("post", "/v1/apply", "/v1/apply", admin, Some(body))
            .await;
    }
    // Users changing their own password must give the current one: guessing it is
    // limited like logins.
    let guess = json!({"current_password": "not-it-at-all", "password": "new-password-3"});
    for _ in 0..30 {
        let (st, _) = p
            .send(
                "put",
                "/v1/users/{user}/password",
                "/v1/users/viewer/password",
                Who::Viewer,
                Some(guess.to_string()),
            )
            .await;
        if st == 429 {
            break;
        }
    }
    // The viewer's grant withdrawn: its live token is refused 403.
    p.send(
        "delete",
        "/v1/tenants/{tenant}/users/{user}",
        "/v1/tenants/default/users/viewer",
        admin,
        None,
    )
    .await;
    for path in ["/v1/instances", "/v1/metrics"] {
        p.send("get", path, path, Who::Viewer, None).await;
    }
    // The tenant deleted with its groups (202; another tenant remains), then applied to.
    let t2 = json!({"name": "t2"}).to_string();
    p.send("post", "/v1/tenants", "/v1/tenants", admin, Some(t2))
        .await;
    p.send(
        "delete",
        "/v1/tenants/{tenant}",
        "/v1/tenants/default?force=true",
        admin,
        None,
    )
    .await;
    // Its tokens die with it: 401, not a 404 or a 5xx.
    let body = json!({"tenant": "default", "groups": []}).to_string();
    let (st, _) = p
        .send("post", "/v1/apply", "/v1/apply", admin, Some(body))
        .await;
    assert_eq!(st, 401, "a token of a deleted tenant");
}

/// The directed part of the contract run: for each family, requests meant to reach
/// each documented status.
async fn directed(p: &mut Probe<'_>) {
    let s = p.s;
    let doc = p.doc;
    let password = "viewer-password-1";
    let user = |name: &str| json!({"name": name, "password": password}).to_string();
    // A viewer of `default`, a second user, a running group with one instance.
    for name in ["viewer", "other"] {
        let (st, _) = p
            .send(
                "post",
                "/v1/users",
                "/v1/users",
                Who::Admin,
                Some(user(name)),
            )
            .await;
        assert_eq!(st, 201);
    }
    let grant = json!({"role": "viewer"}).to_string();
    let (st, _) = p
        .send(
            "put",
            "/v1/tenants/{tenant}/users/{user}",
            "/v1/tenants/default/users/viewer",
            Who::Admin,
            Some(grant.clone()),
        )
        .await;
    assert_eq!(st, 200);
    let login =
        |who: &str, pw: &str| json!({"user": who, "password": pw, "tenant": "default"}).to_string();
    let (st, body) = p
        .send(
            "post",
            "/v1/auth/tokens",
            "/v1/auth/tokens",
            Who::Nobody,
            Some(login("viewer", password)),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    p.viewer = body["token"].as_str().expect("a token").to_string();
    let web = group_doc("web", 1, 2, never_scale());
    let (st, body) = p
        .send(
            "post",
            "/v1/groups",
            "/v1/groups",
            Who::Admin,
            Some(web.to_string()),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    let running = wait_running(s, "web", 1, std::time::Duration::from_secs(30)).await;
    let id = running[0]["id"].as_str().expect("an id").to_string();

    // Known names for each path parameter, and unknown ones.
    let known = |path: &str| {
        path.replace("{name}", "web")
            .replace("{id}", &id)
            .replace("{tenant}", "default")
            .replace("{user}", "other")
            .replace("{key}", "k1")
    };
    let unknown = |path: &str| {
        path.replace("{name}", "nope")
            .replace("{id}", "nope")
            .replace("{tenant}", "nope")
            .replace("{user}", "nope")
            .replace("{key}", "nope")
    };
    let big = json!({"pad": "x".repeat(2 * 1024 * 1024)}).to_string();
    for (method, path) in operations(doc) {
        let op = &doc["paths"][&path][&method];
        let has_body = op.get("requestBody").is_some();
        let example = has_body.then(|| "{}".to_string());
        // 401: no credential, a forged one.
        for who in [Who::Nobody, Who::Forged] {
            if op["security"] != json!([]) {
                p.send(&method, &path, &known(&path), who, example.clone())
                    .await;
            }
        }
        // 403 (or the viewer's 200 on reads), never on the admin's own session.
        if path != "/v1/auth/tokens/current" {
            let mut url = known(&path);
            if path.ends_with("/events/stream") {
                // The viewer may read it: one event, then the end (not its timeout).
                url.push_str("?after_id=0&max_events=1");
            }
            p.send(&method, &path, &url, Who::Viewer, example.clone())
                .await;
        }
        // 404: unknown names.
        if path.contains('{') {
            p.send(&method, &path, &unknown(&path), Who::Admin, example.clone())
                .await;
        }
        // 400: a body that is not JSON, a body of the wrong shape; 413: 2 MB.
        if has_body {
            for bad in ["{", "[]", r#"{"unknown_field": 1}"#] {
                p.send(&method, &path, &known(&path), Who::Admin, Some(bad.into()))
                    .await;
            }
            p.send(&method, &path, &known(&path), Who::Admin, Some(big.clone()))
                .await;
        }
        // 400: a query value of the wrong type.
        for param in op["parameters"].as_array().into_iter().flatten() {
            if param["in"] == "query" {
                let name = param["name"].as_str().unwrap_or_default();
                let url = format!("{}?{name}=%00x", known(&path));
                p.send(&method, &path, &url, Who::Admin, example.clone())
                    .await;
            }
        }
    }

    // Successes and states, family by family.
    let admin = Who::Admin;
    let calls: Vec<(&str, &str, String, Option<Value>)> = vec![
        ("get", "/v1/health", "/v1/health".into(), None),
        ("get", "/v1/metrics", "/v1/metrics".into(), None),
        ("get", "/v1/instances", "/v1/instances".into(), None),
        ("get", "/v1/auth/whoami", "/v1/auth/whoami".into(), None),
        ("get", "/v1/audit", "/v1/audit?limit=5".into(), None),
        ("get", "/v1/quota/default", "/v1/quota/default".into(), None),
        (
            "put",
            "/v1/quota/default",
            "/v1/quota/default".into(),
            Some(json!({"max_groups": 50})),
        ),
        (
            "post",
            "/v1/api-keys",
            "/v1/api-keys".into(),
            Some(json!({"name": "k1", "role": "viewer"})),
        ),
        (
            "post",
            "/v1/api-keys",
            "/v1/api-keys".into(),
            Some(json!({"name": "k1", "role": "viewer"})),
        ),
        ("get", "/v1/api-keys", "/v1/api-keys".into(), None),
        (
            "delete",
            "/v1/api-keys/{key}",
            "/v1/api-keys/k1".into(),
            None,
        ),
        (
            "post",
            "/v1/tenants",
            "/v1/tenants".into(),
            Some(json!({"name": "t1"})),
        ),
        (
            "post",
            "/v1/tenants",
            "/v1/tenants".into(),
            Some(json!({"name": "t1"})),
        ),
        ("get", "/v1/tenants", "/v1/tenants".into(), None),
        ("get", "/v1/tenants/{tenant}", "/v1/tenants/t1".into(), None),
        (
            "put",
            "/v1/tenants/{tenant}",
            "/v1/tenants/t1".into(),
            Some(json!({"display_name": "T one"})),
        ),
        (
            "put",
            "/v1/tenants/{tenant}/users/{user}",
            "/v1/tenants/t1/users/other".into(),
            Some(json!({"role": "member"})),
        ),
        (
            "get",
            "/v1/tenants/{tenant}/users",
            "/v1/tenants/t1/users".into(),
            None,
        ),
        (
            "delete",
            "/v1/tenants/{tenant}/users/{user}",
            "/v1/tenants/t1/users/other".into(),
            None,
        ),
        // A tenant with groups is not deleted without `force`.
        (
            "delete",
            "/v1/tenants/{tenant}",
            "/v1/tenants/default".into(),
            None,
        ),
        (
            "delete",
            "/v1/tenants/{tenant}",
            "/v1/tenants/t1".into(),
            None,
        ),
        ("get", "/v1/users", "/v1/users".into(), None),
        ("get", "/v1/users/{user}", "/v1/users/other".into(), None),
        (
            "post",
            "/v1/users",
            "/v1/users".into(),
            Some(json!({"name": "other", "password": password})),
        ),
        (
            "put",
            "/v1/users/{user}/password",
            "/v1/users/other/password".into(),
            Some(json!({"password": "another-password-2"})),
        ),
        // The admin cannot delete itself.
        ("delete", "/v1/users/{user}", "/v1/users/admin".into(), None),
        ("get", "/v1/groups", "/v1/groups".into(), None),
        ("post", "/v1/groups", "/v1/groups".into(), Some(web.clone())),
        ("get", "/v1/groups/{name}", "/v1/groups/web".into(), None),
        (
            "put",
            "/v1/groups/{name}",
            "/v1/groups/web".into(),
            Some(web.clone()),
        ),
        (
            "put",
            "/v1/groups/{name}/desired_capacity",
            "/v1/groups/web/desired_capacity".into(),
            Some(json!({"desired_capacity": 1})),
        ),
        (
            "get",
            "/v1/groups/{name}/events",
            "/v1/groups/web/events?limit=3".into(),
            None,
        ),
        (
            "get",
            "/v1/groups/{name}/instances",
            "/v1/groups/web/instances?all=true".into(),
            None,
        ),
        (
            "get",
            "/v1/groups/{name}/load_balancer",
            "/v1/groups/web/load_balancer".into(),
            None,
        ),
        (
            "post",
            "/v1/groups/{name}/metrics",
            "/v1/groups/web/metrics".into(),
            Some(json!({"samples": [{"metric": "cpu", "value": 10.0}]})),
        ),
        (
            "post",
            "/v1/groups/{name}/metrics",
            "/v1/groups/web/metrics".into(),
            Some(json!({"samples": [{"metric": "cpu", "value": 10.0, "instance_id": "nope"}]})),
        ),
        (
            "get",
            "/v1/groups/{name}/metrics/history",
            "/v1/groups/web/metrics/history?metric=cpu".into(),
            None,
        ),
        (
            "get",
            "/v1/groups/{name}/metrics",
            "/v1/groups/web/metrics".into(),
            None,
        ),
        (
            "get",
            "/v1/groups/{name}/metrics",
            "/v1/groups/web/metrics?since=2026-01-01T00:00:00Z&format=csv".into(),
            None,
        ),
        (
            "get",
            "/v1/groups/{name}/instances/{id}/metrics",
            format!("/v1/groups/web/instances/{id}/metrics"),
            None,
        ),
        (
            "get",
            "/v1/groups/{name}/instances/{id}/metrics",
            format!("/v1/groups/web/instances/{id}/metrics?format=csv"),
            None,
        ),
        (
            "get",
            "/v1/groups/{name}/events",
            "/v1/groups/web/events?format=csv".into(),
            None,
        ),
        (
            "put",
            "/v1/groups/{name}/instances/{id}/owners/{user}",
            format!("/v1/groups/web/instances/{id}/owners/other"),
            None,
        ),
        (
            "get",
            "/v1/groups/{name}/instances/{id}/owners",
            format!("/v1/groups/web/instances/{id}/owners"),
            None,
        ),
        (
            "delete",
            "/v1/groups/{name}/instances/{id}/owners/{user}",
            format!("/v1/groups/web/instances/{id}/owners/other"),
            None,
        ),
        (
            "post",
            "/v1/groups/{name}/instances/{id}/pause",
            format!("/v1/groups/web/instances/{id}/pause"),
            None,
        ),
        (
            "post",
            "/v1/groups/{name}/instances/{id}/pause",
            format!("/v1/groups/web/instances/{id}/pause"),
            None,
        ),
        (
            "post",
            "/v1/groups/{name}/instances/{id}/resume",
            format!("/v1/groups/web/instances/{id}/resume"),
            None,
        ),
        (
            "post",
            "/v1/groups/{name}/instances/{id}/resume",
            format!("/v1/groups/web/instances/{id}/resume"),
            None,
        ),
        (
            "post",
            "/v1/groups/{name}/instances/{id}/protect",
            format!("/v1/groups/web/instances/{id}/protect"),
            None,
        ),
        (
            "post",
            "/v1/groups/{name}/instances/{id}/unprotect",
            format!("/v1/groups/web/instances/{id}/unprotect"),
            None,
        ),
        (
            "post",
            "/v1/groups/{name}/suspend",
            "/v1/groups/web/suspend".into(),
            None,
        ),
        (
            "post",
            "/v1/groups/{name}/resume",
            "/v1/groups/web/resume".into(),
            None,
        ),
        (
            "post",
            "/v1/apply",
            "/v1/apply?dry_run=true".into(),
            Some(json!({"tenant": "default", "groups": [web.clone()]})),
        ),
        (
            "post",
            "/v1/apply",
            "/v1/apply".into(),
            Some(
                json!({"tenant": "default", "groups": [web.clone(), group_doc("gone", 0, 1, never_scale())]}),
            ),
        ),
        (
            "delete",
            "/v1/groups/{name}",
            "/v1/groups/gone".into(),
            None,
        ),
        // A group whose deletion is under way, applied again: 409 while it is deleting,
        // 404 should it finish during the apply, 200 once it is gone (all documented).
        (
            "post",
            "/v1/apply",
            "/v1/apply".into(),
            Some(json!({"tenant": "default", "groups": [group_doc("gone", 0, 1, never_scale())]})),
        ),
        ("delete", "/v1/users/{user}", "/v1/users/other".into(), None),
        // Provider definitions: defined, taken, an unknown tenant, read, changed, a
        // built-in that cannot change or go, deleted.
        (
            "post",
            "/v1/providers",
            "/v1/providers".into(),
            Some(json!({"name": "web", "kind": "process"})),
        ),
        (
            "post",
            "/v1/providers",
            "/v1/providers".into(),
            Some(json!({"name": "web", "kind": "process"})),
        ),
        (
            "post",
            "/v1/providers",
            "/v1/providers".into(),
            Some(json!({"name": "p2", "kind": "process", "tenant": "nope"})),
        ),
        ("get", "/v1/providers", "/v1/providers".into(), None),
        (
            "get",
            "/v1/providers/{name}",
            "/v1/providers/web".into(),
            None,
        ),
        (
            "put",
            "/v1/providers/{name}",
            "/v1/providers/web".into(),
            Some(json!({"config": {}})),
        ),
        (
            "put",
            "/v1/providers/{name}",
            "/v1/providers/process".into(),
            Some(json!({})),
        ),
        (
            "delete",
            "/v1/providers/{name}",
            "/v1/providers/process".into(),
            None,
        ),
        (
            "delete",
            "/v1/providers/{name}",
            "/v1/providers/web".into(),
            None,
        ),
        // Prices and cost: set, a size where the provider has none, listed, the report
        // as JSON and CSV, a reversed period, deleted, deleted again.
        (
            "post",
            "/v1/prices",
            "/v1/prices".into(),
            Some(json!({"provider": "process", "per_hour": 0.02, "from": "2026-01-01T00:00:00Z"})),
        ),
        (
            "post",
            "/v1/prices",
            "/v1/prices".into(),
            Some(json!({"provider": "process", "per_hour": 1, "size": "m1.tiny"})),
        ),
        ("get", "/v1/prices", "/v1/prices".into(), None),
        ("get", "/v1/cost", "/v1/cost?step=1d".into(), None),
        (
            "get",
            "/v1/cost",
            "/v1/cost?all=true&format=csv".into(),
            None,
        ),
        (
            "get",
            "/v1/cost",
            "/v1/cost?since=2026-12-02T00:00:00Z&until=2026-12-01T00:00:00Z".into(),
            None,
        ),
        (
            "post",
            "/v1/prices",
            "/v1/prices".into(),
            Some(json!({"provider": "nowhere", "per_hour": 1})),
        ),
        (
            "delete",
            "/v1/prices/{name}",
            "/v1/prices/process".into(),
            None,
        ),
        (
            "delete",
            "/v1/prices/{name}",
            "/v1/prices/process".into(),
            None,
        ),
    ];
    for (method, template, path, body) in calls {
        p.send(method, template, &path, admin, body.map(|b| b.to_string()))
            .await;
    }
    // Every tenant's cost is an admin's.
    p.send("get", "/v1/cost", "/v1/cost?all=true", Who::Viewer, None)
        .await;
    // Webhooks: created (a name is not resolved at create, so a public-looking one is
    // accepted), up to the tenant's cap, then one more is a 409; one deleted.
    let hook = json!({"url": "https://hooks.example.com/swell", "secret": "a-secret-of-20-chars"});
    let mut first = None;
    for _ in 0..=swell_server::notify::MAX_WEBHOOKS_PER_TENANT {
        let (_, v) = p
            .send(
                "post",
                "/v1/webhooks",
                "/v1/webhooks",
                admin,
                Some(hook.to_string()),
            )
            .await;
        first = first.or_else(|| v["id"].as_str().map(String::from));
    }
    let first = first.expect("a webhook was created");
    p.send(
        "delete",
        "/v1/webhooks/{webhook}",
        &format!("/v1/webhooks/{first}"),
        admin,
        None,
    )
    .await;
    // The event stream: two events, then the end; a tenant's open streams are capped
    // (`swell_server::event_stream::DEFAULT_MAX_EVENT_STREAMS`): one more is a 429.
    let stream = "/v1/groups/{name}/events/stream";
    p.send(
        "get",
        stream,
        "/v1/groups/web/events/stream?after_id=0&max_events=2",
        admin,
        None,
    )
    .await;
    let mut open = Vec::new();
    for _ in 0..swell_server::event_stream::DEFAULT_MAX_EVENT_STREAMS {
        let resp = p
            .http
            .get(format!("{}/v1/groups/web/events/stream", p.s.url))
            .bearer_auth(&p.s.token)
            .send()
            .await
            .expect("a stream");
        assert_eq!(resp.status(), 200, "a stream under the cap");
        open.push(resp);
    }
    let (st, _) = p
        .send("get", stream, "/v1/groups/web/events/stream", admin, None)
        .await;
    assert_eq!(st, 429, "one stream over the cap");
    drop(open);
    // A group the tenant's providers do not allow: 403 naming `provider`.
    let mut docker = group_doc("boxed", 0, 1, never_scale());
    docker["provider"] = json!("docker");
    docker["template"]["image"] = json!("nginx");
    p.send(
        "post",
        "/v1/groups",
        "/v1/groups",
        admin,
        Some(docker.to_string()),
    )
    .await;
    // Failed logins until the limiter answers 429; a fresh token logged out.
    for _ in 0..30 {
        let (st, _) = p
            .send(
                "post",
                "/v1/auth/tokens",
                "/v1/auth/tokens",
                Who::Nobody,
                Some(login("viewer", "wrong-password")),
            )
            .await;
        if st == 429 {
            break;
        }
    }
    let (st, body) = p
        .send(
            "post",
            "/v1/auth/tokens",
            "/v1/auth/tokens",
            Who::Nobody,
            Some(login("admin", common::ADMIN_PASSWORD)),
        )
        .await;
    if st == 201 {
        let token = body["token"].as_str().unwrap_or_default().to_string();
        let answer = p
            .http
            .delete(format!("{}/v1/auth/tokens/current", s.url))
            .bearer_auth(&token)
            .send()
            .await
            .expect("an answer");
        let status = answer.status().as_u16();
        *p.seen.entry(("auth".into(), status)).or_default() += 1;
        p.cases += 1;
        assert_eq!(status, 204, "logging out");
    }
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
