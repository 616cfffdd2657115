//! Cost end to end, with the real `swell serve` and CLI: a small history of instances
//! written into the stopped server's store (whole hours two days ago, so that every
//! figure can be computed by hand), prices set with `swell price set` (a change in the
//! middle), then `swell cost -o json` and `-o csv` (parsed back with the `csv` crate)
//! checked against the hand-computed figures; tenancy: a member sees only its tenant's
//! groups, another tenant is 404, `--all` is an admin's; prices are an admin's. And the
//! dashboard's cost page in a real headless Chromium, whose numbers are the API's.
//!
//! The history, in hours after T0 (a whole hour, 48 h ago), all on provider `process`,
//! priced 1 from T0 and 3 from T0 + 4 h; the period is [T0, T0 + 10 h):
//!
//! | tenant/group | instance | life | hours in period | cost |
//! |---|---|---|---|---|
//! | alpha/web | i1 | 0–4 (terminated) | 4 | 4 × 1 = 4 |
//! | alpha/web | i2 | 2–6 (terminated) | 4 | 2 × 1 + 2 × 3 = 8 |
//! | alpha/web | i3 | 5–20 (terminated after the period) | 5 | 5 × 3 = 15 |
//! | alpha/batch | k1 | 1–3 (failed) | 2 | 2 |
//! | beta/secret | j1 | 0–10 (terminated) | 10 | 4 + 18 = 22 |
//!
//! alpha/web peaks at 2 instances (2–4 and 5–6): at peak the period costs
//! 2 × (4 × 1 + 6 × 3) = 44, a saving of 44 − 27 = 17.

mod browser;
mod common;

use browser::{Browser, Driver, tool};
use common::{Swell, eventually};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use swell_core::{InstanceId, InstanceStatus, Lifecycle, TenantId, Timestamp};
use swell_server::clock::rfc3339;
use swell_store::{GroupStore, InstanceRecord, InstanceStore, InstanceUpdate, NewEvent};

const H: i64 = 3_600_000;
const WAIT: Duration = Duration::from_secs(60);

fn password(user: &str) -> String {
    format!("{user}-cost-password")
}

/// Creates `user` with `role` in `tenant` and logs them in; returns the token.
async fn member(s: &Swell, user: &str, tenant: &str, role: &str) -> String {
    let pf = s.write(&format!("{user}.pw"), &format!("{}\n", password(user)));
    s.cli_json(&["user", "create", user, "--password-file", &pf])
        .await;
    s.cli_json(&["user", "grant", user, "--tenant", tenant, "--role", role])
        .await;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/auth/tokens", s.url))
        .json(&json!({"user": user, "password": password(user), "tenant": tenant}))
        .send()
        .await
        .expect("the login answers");
    assert_eq!(r.status(), 201, "login of {user}");
    let v: Value = r.json().await.expect("a login answer");
    v["token"].as_str().expect("a token").to_string()
}

/// An API call with `token`: status and body (JSON, or `Value::String` of the text).
async fn call(
    s: &Swell,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", s.url))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("the API answers");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// T0: a whole hour, 48 hours ago.
fn t0() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_millis() as i64;
    now / H * H - 48 * H
}

/// Writes the history of the module's table into the stopped server's store.
async fn seed_history(s: &Swell, t0: i64) {
    let store = swell_store::SqliteStore::open(&s.data_dir().join("swell.db"))
        .await
        .expect("the server's store");
    let at = |h: i64| Timestamp::from_millis(t0 + h * H);
    let groups = [("alpha", "web"), ("alpha", "batch"), ("beta", "secret")];
    for (tenant, name) in groups {
        let tenant = TenantId::new(tenant).expect("a tenant id");
        let spec: swell_core::GroupSpec = serde_json::from_value(json!({
            "name": name, "provider": "process", "min": 0, "max": 5,
            "template": {"command": ["sleep", "600"]},
        }))
        .expect("a group spec");
        store
            .create_group(
                &tenant,
                &spec,
                at(0),
                NewEvent {
                    tenant: tenant.clone(),
                    group: name.into(),
                    at: at(0),
                    kind: swell_core::EventKind::GroupCreated,
                    instance_id: None,
                    cause: None,
                    message: "seeded".into(),
                },
            )
            .await
            .expect("a seeded group");
    }
    let lives = [
        ("alpha", "web", "i1", 0, 4, InstanceStatus::Terminated),
        ("alpha", "web", "i2", 2, 6, InstanceStatus::Terminated),
        ("alpha", "web", "i3", 5, 20, InstanceStatus::Terminated),
        ("alpha", "batch", "k1", 1, 3, InstanceStatus::Failed),
        ("beta", "secret", "j1", 0, 10, InstanceStatus::Terminated),
    ];
    for (tenant, group, id, start, end, status) in lives {
        let tenant = TenantId::new(tenant).expect("a tenant id");
        let record = InstanceRecord {
            id: InstanceId(id.into()),
            tenant: tenant.clone(),
            group: group.into(),
            status: InstanceStatus::Pending,
            lifecycle: Lifecycle::Permanent,
            created_order: 0,
            provider: "process".into(),
            host: None,
            address: None,
            native_id: None,
            protected: false,
            status_reason: None,
            created_at: at(start),
            started_at: None,
            updated_at: at(start),
        };
        store
            .create_instance(&record, None)
            .await
            .expect("a seeded instance");
        store
            .update_instance(
                &tenant,
                &record.id,
                status,
                InstanceUpdate::default(),
                at(end),
                None,
            )
            .await
            .expect("its end");
    }
    store.close().await;
}

/// A server with tenants alpha and beta, the history above and the two prices.
async fn server() -> (Swell, i64) {
    let mut s = Swell::start().await;
    for t in ["alpha", "beta"] {
        s.cli_json(&["tenant", "create", t, "--providers", "process"])
            .await;
    }
    let t0 = t0();
    s.stop().await;
    seed_history(&s, t0).await;
    s.restart().await;
    let from = |h: i64| rfc3339(Timestamp::from_millis(t0 + h * H));
    for (price, h) in [("1", 0), ("3", 4)] {
        let p = s
            .cli_json(&["price", "set", "process", price, "--from", &from(h)])
            .await;
        assert_eq!(p["provider"], "process", "{p}");
        assert_eq!(p["from"], from(h), "{p}");
    }
    (s, t0)
}

fn close(v: &Value, expected: f64, what: &str) {
    let got = v.as_f64().unwrap_or(f64::NAN);
    assert!(
        (got - expected).abs() < 1e-9,
        "{what}: got {v}, expected {expected}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_from_the_cli_and_the_api() {
    let (s, t0) = server().await;
    let from = |h: i64| rfc3339(Timestamp::from_millis(t0 + h * H));
    let (since, until) = (from(0), from(10));

    // The prices as set, in order.
    let prices = s.cli_json(&["price", "list"]).await;
    let listed: Vec<(String, f64)> = prices["prices"]
        .as_array()
        .expect("prices")
        .iter()
        .map(|p| {
            (
                p["from"].as_str().unwrap_or_default().to_string(),
                p["per_hour"].as_f64().unwrap_or(-1.0),
            )
        })
        .collect();
    assert_eq!(listed, vec![(from(0), 1.0), (from(4), 3.0)]);

    // The admin's own tenant (`default`) has no groups; alpha's, by hand.
    let r = s
        .cli_json(&[
            "cost", "--tenant", "alpha", "--since", &since, "--until", &until,
        ])
        .await;
    assert_eq!(r["since"], since);
    assert_eq!(r["until"], until);
    assert_eq!(r["step_seconds"], 3600);
    let groups: BTreeMap<String, &Value> = r["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| (g["group"].as_str().unwrap_or_default().to_string(), g))
        .collect();
    assert_eq!(groups.keys().collect::<Vec<_>>(), ["batch", "web"], "{r}");
    let web = groups["web"];
    close(&web["instance_hours"], 13.0, "web's instance-hours");
    close(&web["cost"], 27.0, "web's cost");
    assert_eq!(web["peak_instances"], 2, "{web}");
    close(&web["peak_cost"], 44.0, "web's cost at peak");
    close(&web["saving"], 17.0, "web's saving");
    close(&web["unpriced_hours"], 0.0, "web's unpriced hours");
    let buckets = web["buckets"].as_array().expect("buckets");
    assert_eq!(buckets.len(), 10, "one per hour");
    let per_hour: Vec<(f64, f64)> = buckets
        .iter()
        .map(|b| {
            (
                b["instance_hours"].as_f64().unwrap_or(-1.0),
                b["cost"].as_f64().unwrap_or(-1.0),
            )
        })
        .collect();
    assert_eq!(
        per_hour,
        vec![
            (1.0, 1.0),
            (1.0, 1.0),
            (2.0, 2.0),
            (2.0, 2.0),
            (1.0, 3.0),
            (2.0, 6.0),
            (1.0, 3.0),
            (1.0, 3.0),
            (1.0, 3.0),
            (1.0, 3.0)
        ]
    );
    let batch = groups["batch"];
    close(&batch["instance_hours"], 2.0, "batch's instance-hours");
    close(
        &batch["cost"],
        2.0,
        "batch's cost (a failed instance is paid until it failed)",
    );
    close(&batch["peak_cost"], 22.0, "batch's cost at peak");
    close(&r["total"]["cost"], 29.0, "alpha's total");
    close(&r["total"]["saving"], 17.0 + 20.0, "alpha's total saving");

    // CSV: one row per group, read back with a CSV library.
    let out = s
        .cli(&[
            "-o", "csv", "cost", "--tenant", "alpha", "--since", &since, "--until", &until,
        ])
        .await;
    assert!(out.status.success(), "{out:?}");
    let mut reader = csv::Reader::from_reader(out.stdout.as_bytes());
    let headers = reader.headers().expect("a header").clone();
    assert_eq!(
        headers.iter().collect::<Vec<_>>(),
        [
            "tenant",
            "group",
            "provider",
            "size",
            "since",
            "until",
            "instance_hours",
            "cost",
            "unpriced_hours",
            "peak_instances",
            "peak_cost",
            "saving"
        ]
    );
    let rows: Vec<BTreeMap<String, String>> = reader
        .deserialize()
        .collect::<Result<_, _>>()
        .expect("CSV rows");
    assert_eq!(rows.len(), 2, "{}", out.stdout);
    let web_row = rows
        .iter()
        .find(|r| r["group"] == "web")
        .expect("web's row");
    assert_eq!(web_row["tenant"], "alpha");
    assert_eq!(web_row["since"], since);
    assert_eq!(web_row["cost"].parse::<f64>().ok(), Some(27.0));
    assert_eq!(web_row["peak_instances"], "2");
    assert_eq!(web_row["saving"].parse::<f64>().ok(), Some(17.0));

    // The table ends with the total line.
    let out = s
        .cli(&[
            "cost", "--tenant", "alpha", "--since", &since, "--until", &until,
        ])
        .await;
    assert!(out.status.success(), "{out:?}");
    let last = out.stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("TOTAL") && last.contains("29.00") && last.contains("37.00"),
        "{}",
        out.stdout
    );

    // Tenancy: alpha's member sees alpha's groups and never beta's.
    let ann = member(&s, "ann", "alpha", "viewer").await;
    let q = format!(
        "since={}&until={}",
        since.replace('+', "%2B"),
        until.replace('+', "%2B")
    );
    let (st, mine) = call(
        &s,
        &ann,
        reqwest::Method::GET,
        &format!("/v1/cost?{q}"),
        None,
    )
    .await;
    assert_eq!(st, 200, "{mine}");
    let names: Vec<&str> = mine["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| g["group"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, ["batch", "web"]);
    for (path, status) in [
        (format!("/v1/cost?tenant=beta&{q}"), 404),
        (format!("/v1/cost?tenant=nobody&{q}"), 404),
        (format!("/v1/cost?all=true&{q}"), 403),
        (format!("/v1/cost?group=secret&{q}"), 404),
        ("/v1/prices".to_string(), 403),
    ] {
        let (st, body) = call(&s, &ann, reqwest::Method::GET, &path, None).await;
        assert_eq!(st, status, "{path}: {body}");
        assert!(body.get("groups").is_none(), "{path}: {body}");
    }
    let (st, body) = call(
        &s,
        &ann,
        reqwest::Method::POST,
        "/v1/prices",
        Some(json!({"provider": "process", "per_hour": 0})),
    )
    .await;
    assert_eq!(st, 403, "a member sets no price: {body}");

    // The admin sees every tenant with --all.
    let all = s
        .cli_json(&["cost", "--all", "--since", &since, "--until", &until])
        .await;
    let seen: Vec<String> = all["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| {
            format!(
                "{}/{}",
                g["tenant"].as_str().unwrap_or_default(),
                g["group"].as_str().unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(seen, ["alpha/batch", "alpha/web", "beta/secret"]);
    close(&all["total"]["cost"], 29.0 + 22.0, "every tenant's cost");
    close(
        &all["total"]["instance_hours"],
        13.0 + 2.0 + 10.0,
        "every tenant's hours",
    );

    // Bad input names the field and changes nothing.
    for (args, field) in [
        (vec!["price", "set", "process", "-1"], "per_hour"),
        (vec!["price", "set", "nowhere", "1"], "provider"),
        (
            vec!["price", "set", "process", "1", "--size", "m1.tiny"],
            "size",
        ),
        (
            vec!["price", "set", "process", "1", "--from", "yesterday"],
            "from",
        ),
        (vec!["cost", "--since", "2026-13-01T00:00:00Z"], "since"),
        (
            vec!["cost", "--since", until.as_str(), "--until", since.as_str()],
            "since",
        ),
        (vec!["cost", "--step", "1s"], "step"),
    ] {
        let out = s.cli(&args).await;
        assert!(!out.status.success(), "{args:?}: {out:?}");
        assert!(
            out.stderr.contains(field),
            "{args:?} names {field}: {}",
            out.stderr
        );
    }
    let again = s.cli_json(&["price", "list"]).await;
    assert_eq!(again, prices, "refused prices stored nothing");

    // Deleting a provider's prices deletes their history; one price from the start
    // then holds throughout: 13 h × 1.
    s.cli(&["price", "delete", "process"]).await;
    let out = s.cli(&["price", "delete", "process"]).await;
    assert!(
        !out.status.success() && out.stderr.contains("not found"),
        "{out:?}"
    );
    s.cli_json(&["price", "set", "process", "1", "--from", &since])
        .await;
    let r = s
        .cli_json(&[
            "cost", "--tenant", "alpha", "--group", "web", "--since", &since, "--until", &until,
        ])
        .await;
    close(&r["groups"][0]["cost"], 13.0, "web at one price");
}

/// Waits until `#id` is shown.
async fn shown(c: &Browser<'_>, id: &str) {
    eventually(&format!("#{id} to be shown"), WAIT, || async {
        let v = c
            .js(
                "const e = document.getElementById(arguments[0]); return !!e && !e.hidden;",
                vec![json!(id)],
            )
            .await;
        if v == true {
            Ok(())
        } else {
            Err(format!("#{id} hidden"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_page_in_chromium_shows_the_apis_numbers() {
    tool("chromium", "SWELL_CHROMIUM");
    let driver = Driver::start(WAIT).await;
    let (s, _t0) = server().await;
    let ann = member(&s, "ann", "alpha", "viewer").await;
    let c = driver.browser().await;
    c.goto(&s.url).await;
    shown(&c, "login-view").await;
    c.type_into("#login-tenant", "alpha").await;
    c.type_into("#login-user", "ann").await;
    c.type_into("#login-password", &password("ann")).await;
    c.click("#login-submit").await;
    shown(&c, "groups-view").await;
    c.click("#nav-cost").await;
    shown(&c, "cost-view").await;
    // The history is two days old: the last 7 days hold all of it.
    c.js(
        "const s = document.getElementById('cost-period'); s.value = '604800';
         s.dispatchEvent(new Event('change')); return null;",
        vec![],
    )
    .await;
    // What the page shows: per row its cells and exact values, and the period it asked.
    let read = "const t = document.getElementById('cost-table');
        const rows = [...t.querySelectorAll('tbody tr, tfoot tr')].map(tr => ({
          group: tr.dataset.group || (tr.dataset.total ? 'total' : ''),
          text: Object.fromEntries([...tr.querySelectorAll('td[data-key]')].map(td => [td.dataset.key, td.textContent])),
          value: Object.fromEntries([...tr.querySelectorAll('td[data-key]')].map(td => [td.dataset.key, td.dataset.value])),
          peak: tr.cells[5] ? tr.cells[5].textContent : '',
        }));
        return {since: t.dataset.since || '', until: t.dataset.until || '', rows};";
    let page = eventually("the cost page over 7 days", WAIT, || async {
        let v = c.js(read, vec![]).await;
        let since = v["since"].as_str().unwrap_or_default();
        let ok = v["rows"].as_array().is_some_and(|r| r.len() == 3) && !since.is_empty();
        // The period must be the 7-day one (the 24-hour one holds none of the history).
        let wide = v["rows"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["group"] == "web"))
            .is_some_and(|r| r["value"]["instance_hours"] == "23");
        if ok && wide {
            Ok(v)
        } else {
            Err(format!("{v}"))
        }
    })
    .await;
    let q = format!(
        "since={}&until={}",
        page["since"]
            .as_str()
            .unwrap_or_default()
            .replace('+', "%2B"),
        page["until"]
            .as_str()
            .unwrap_or_default()
            .replace('+', "%2B")
    );
    let (st, api) = call(
        &s,
        &ann,
        reqwest::Method::GET,
        &format!("/v1/cost?{q}"),
        None,
    )
    .await;
    assert_eq!(st, 200, "{api}");
    // web over the whole history: i1 4 h × 1, i2 2 × 1 + 2 × 3, i3 15 h × 3 = 57.
    let web_api = api["groups"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["group"] == "web"))
        .expect("web in the API's answer");
    close(&web_api["cost"], 57.0, "web's cost over 7 days");
    let keys = [
        "instance_hours",
        "cost",
        "unpriced_hours",
        "peak_cost",
        "saving",
    ];
    for row in page["rows"].as_array().expect("rows") {
        let group = row["group"].as_str().unwrap_or_default();
        let expected = if group == "total" {
            &api["total"]
        } else {
            api["groups"]
                .as_array()
                .and_then(|g| g.iter().find(|g| g["group"] == group))
                .unwrap_or_else(|| panic!("{group} on the page but not in the API: {api}"))
        };
        for k in keys {
            let v = expected[k].as_f64().expect("a number");
            // Four decimals, the nearest to the API's number; the page rounds the value it
            // parsed, which may sit one unit in the last place from this parse of it, so a
            // number next to a rounding boundary may show either neighbour.
            let text = row["text"][k].as_str().unwrap_or_default();
            let four = text.split_once('.').is_some_and(|(_, d)| d.len() == 4);
            let near = text
                .parse::<f64>()
                .is_ok_and(|t| (t - v).abs() <= 0.00005 * (1.0 + 1e-9));
            assert!(four && near, "{group}.{k} as shown: {text:?}, API {v}");
            // The page parsed the API's JSON exactly; serde_json's default float parsing
            // may land one unit in the last place away, hence the relative tolerance.
            let shown = row["value"][k].as_str().and_then(|t| t.parse::<f64>().ok());
            assert!(
                shown.is_some_and(|x| (x - v).abs() <= 1e-12 * v.abs().max(1.0)),
                "{group}.{k} exactly: page {shown:?}, API {v}"
            );
        }
        if group != "total" {
            assert_eq!(
                row["peak"],
                expected["peak_instances"].to_string(),
                "{group}'s peak"
            );
        }
    }
    let groups: Vec<&str> = page["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["group"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        groups,
        ["batch", "web", "total"],
        "beta's group never shows"
    );
    // The charts draw one line per group.
    let lines = c
        .js(
            "return [...document.querySelectorAll('#cost-chart polyline')].map(p => p.dataset.series);",
            vec![],
        )
        .await;
    assert_eq!(lines, json!(["batch", "web"]));
    c.close().await;
}
