//! The web dashboard in a real headless Chromium, driven over WebDriver (`chromedriver`,
//! with the small client in `browser/`), against the real `swell serve`: log in as a member of tenant
//! `alpha`, see its scaling group and instances, set the desired capacity and see it in
//! the API, see the API's 400 problem, see markup from an event as text; see a
//! threshold group's chart (its metric, thresholds and running instances) drawn point
//! for point as the API's series and following it live, and save its screenshot as
//! `docs/dashboard-chart.png` (only with `SWELL_UPDATE_SCREENSHOTS=1` or when it is
//! missing); a viewer is offered no control; log in (with a pasted token) as tenant
//! `beta`'s owner and see nothing of alpha's. The owner portal is `portal_e2e.rs`.
//!
//! Chromium and chromedriver are required (Debian: `apt-get install chromium
//! chromium-driver`; `scripts/test` installs them): without them this test fails and
//! says so, it does not skip. Every wait polls a condition with a deadline.

mod browser;
mod common;

use browser::{Browser, Driver, save_screenshot, tool};
use common::{Swell, eventually, group_doc, never_scale};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Long enough for a loaded two-core machine; the page refreshes every 3 s.
const WAIT: Duration = Duration::from_secs(60);

/// An API call with a user's token: status and JSON body.
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
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Logs `user` in on `tenant` through the API.
async fn login(s: &Swell, user: &str, tenant: &str) -> String {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/auth/tokens", s.url))
        .json(&json!({"user": user, "password": password(user), "tenant": tenant}))
        .send()
        .await
        .expect("the login answers");
    assert_eq!(r.status(), 201, "login of {user} on {tenant}");
    let v: Value = r.json().await.expect("a login answer");
    v["token"].as_str().expect("a token").to_string()
}

fn password(user: &str) -> String {
    format!("{user}-dashboard-password")
}

/// Creates `user` with `role` in `tenant` through the CLI, as the admin.
async fn user(s: &Swell, user: &str, tenant: &str, role: &str) {
    let pf = s.write(&format!("{user}.pw"), &format!("{}\n", password(user)));
    s.cli_json(&["user", "create", user, "--password-file", &pf])
        .await;
    s.cli_json(&["user", "grant", user, "--tenant", tenant, "--role", role])
        .await;
}

/// Runs `script` (with `args`) in the page and returns its value.
async fn js(c: &Browser<'_>, script: &str, args: Vec<Value>) -> Value {
    c.js(script, args).await
}

/// The text of the first element matching `css` ("" when there is none).
async fn text(c: &Browser<'_>, css: &str) -> String {
    js(
        c,
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';",
        vec![json!(css)],
    )
    .await
    .as_str()
    .unwrap_or_default()
    .to_string()
}

/// The cell texts of every row of the table body `css`.
async fn rows(c: &Browser<'_>, css: &str) -> Vec<Vec<String>> {
    let v = js(
        c,
        "return [...document.querySelectorAll(arguments[0] + ' tr')]
            .map(tr => [...tr.cells].map(td => td.textContent));",
        vec![json!(css)],
    )
    .await;
    serde_json::from_value(v).unwrap_or_default()
}

/// Waits until `#id` is shown.
async fn shown(c: &Browser<'_>, id: &str) {
    eventually(&format!("#{id} to be shown"), WAIT, || async {
        let v = js(
            c,
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

/// Waits until the text of `css` satisfies `ok`; returns it.
async fn text_until(c: &Browser<'_>, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
    eventually(what, WAIT, || async {
        let t = text(c, css).await;
        if ok(&t) {
            Ok(t)
        } else {
            Err(format!("{css}: {t:?}"))
        }
    })
    .await
}

/// Writes six five-minute cpu summaries of alpha's `web`, ending now, into the store of
/// the stopped server; returns how many.
async fn seed_load_history(s: &Swell) -> usize {
    use swell_store::HistoryStore;
    let store = swell_store::SqliteStore::open(&s.data_dir().join("swell.db"))
        .await
        .expect("the server's store");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_millis() as i64;
    let summaries: Vec<swell_core::LoadSummary> = (0..6)
        .map(|i| swell_core::LoadSummary {
            at: swell_core::Timestamp::from_millis(now - (5 - i) * 300_000),
            metric: swell_core::Metric::Cpu,
            mean: 10.0 * (i + 1) as f64,
            max: 15.0 * (i + 1) as f64,
        })
        .collect();
    let tenant = swell_core::TenantId::new("alpha").expect("a tenant id");
    store
        .append_load_history(&tenant, "web", &summaries)
        .await
        .expect("load history written");
    summaries.len()
}

/// Logs in through the form.
async fn form_login(c: &Browser<'_>, tenant: &str, user: &str) {
    shown(c, "login-view").await;
    c.type_into("#login-tenant", tenant).await;
    c.type_into("#login-user", user).await;
    c.type_into("#login-password", &password(user)).await;
    c.click("#login-submit").await;
    shown(c, "groups-view").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_chromium() {
    let started = Instant::now();
    // Fail at once, with the install hint, when the browser is missing.
    tool("chromium", "SWELL_CHROMIUM");
    let driver = Driver::start(WAIT).await;
    let mut s = Swell::start().await;

    // Two tenants: alpha (a member and a viewer), beta (an owner).
    // Granted the local provider and loopback ports, as `default` is (a new tenant is
    // granted nothing).
    for t in ["alpha", "beta"] {
        s.cli_json(&[
            "tenant",
            "create",
            t,
            "--providers",
            "process",
            "--listen",
            "127.0.0.1:1024-65535",
        ])
        .await;
    }
    user(&s, "ann", "alpha", "member").await;
    user(&s, "vic", "alpha", "viewer").await;
    user(&s, "bob", "beta", "owner").await;
    let ann = login(&s, "ann", "alpha").await;
    let bob = login(&s, "bob", "beta").await;

    // alpha's groups: `web` (real demo-app instances) and `markup`, whose program
    // cannot run, so that its events carry the template's markup in their messages.
    let (st, g) = call(
        &s,
        &ann,
        reqwest::Method::POST,
        "/v1/groups",
        Some(group_doc("web", 1, 3, never_scale())),
    )
    .await;
    assert_eq!(st, 201, "{g}");
    let evil = "/nonexistent/<script>window.pwned=1</script><b id=\"pwned\">x</b>";
    let mut doc = group_doc("markup", 1, 1, never_scale());
    doc["template"]["command"] = json!([evil]);
    if let Some(d) = doc.as_object_mut() {
        d.remove("load_balancer");
    }
    let (st, g) = call(&s, &ann, reqwest::Method::POST, "/v1/groups", Some(doc)).await;
    assert_eq!(st, 201, "{g}");

    // Load history is summarised every five minutes: half an hour of it is written into
    // the stopped server's store, as the controller would have (the server adopts its
    // instances again when it restarts).
    s.stop().await;
    let history = seed_load_history(&s).await;
    s.restart().await;

    let c = driver.browser().await;
    c.goto(&s.url).await;

    // ---- ann, member of alpha ----
    form_login(&c, "alpha", "ann").await;
    text_until(&c, "#who", "who am I", |t| {
        t.contains("ann in tenant alpha (member)")
    })
    .await;
    let web = eventually("the group `web` with 1 running", WAIT, || async {
        let all = rows(&c, "#groups-body").await;
        match all.iter().find(|r| r[0] == "web") {
            Some(r) if r[5] == "1" => Ok(r.clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // name, provider, min, desired_capacity, max, running, policies, status
    assert_eq!(web[1..7], ["process", "1", "1", "3", "1", "threshold"]);
    c.click("#groups-body tr[data-group=\"web\"] a").await;
    shown(&c, "group-view").await;
    text_until(&c, "#group-name", "the group's name", |t| t == "web").await;
    let api_instances = call(
        &s,
        &ann,
        reqwest::Method::GET,
        "/v1/groups/web/instances",
        None,
    )
    .await
    .1;
    let first = api_instances["instances"][0]["id"]
        .as_str()
        .expect("an instance")
        .to_string();
    eventually("the running instance in the page", WAIT, || async {
        let r = rows(&c, "#instances-body").await;
        if r.len() == 1
            && r[0][0] == first
            && r[0][1] == "running"
            && r[0][2].starts_with("127.0.0.1:")
        {
            Ok(())
        } else {
            Err(format!("{r:?}"))
        }
    })
    .await;

    // A member is offered pause / resume and the desired capacity, not the bindings of
    // instance owners (an owner's).
    let offered = js(
        &c,
        "return [!document.getElementById('desired-form').hidden,
                 document.querySelectorAll('#instances-body button[data-action=pause]').length,
                 document.getElementById('bind-form').hidden,
                 document.getElementById('instances-owners').hidden];",
        vec![],
    )
    .await;
    assert_eq!(offered, json!([true, 1, true, true]), "a member's controls");

    // Set desired_capacity 2: the page says so, the API agrees, a second instance runs.
    c.type_into("#desired-input", "2").await;
    c.click("#desired-submit").await;
    text_until(&c, "#desired-result", "the new desired capacity", |t| {
        t == "desired_capacity is now 2"
    })
    .await;
    let (_, g) = call(&s, &ann, reqwest::Method::GET, "/v1/groups/web", None).await;
    assert_eq!(g["desired_capacity"], 2, "{g}");
    eventually(
        "two running instances in the page",
        Duration::from_secs(90),
        || async {
            let r = rows(&c, "#instances-body").await;
            let running = r.iter().filter(|r| r[1] == "running").count();
            if running == 2 {
                Ok(())
            } else {
                Err(format!("{r:?}"))
            }
        },
    )
    .await;
    eventually("the manual event with its cause", WAIT, || async {
        let r = rows(&c, "#events-body").await;
        // at, kind, policy, metric, before → after, reason, message
        r.iter()
            .find(|e| e[2] == "manual" && e[4] == "1 → 2" && e[5] == "set by a user")
            .map(|_| ())
            .ok_or(format!("{r:?}"))
    })
    .await;
    // Live: a change made elsewhere (the API, not this page) shows in the event list
    // without a reload. The page no longer polls the events: only the event stream
    // can bring it.
    js(&c, "window.swellNoReload = 1; return null;", vec![]).await;
    for (desired, change) in [(3, "2 → 3"), (2, "3 → 2")] {
        let (st, _) = call(
            &s,
            &ann,
            reqwest::Method::PUT,
            "/v1/groups/web/desired_capacity",
            Some(json!({"desired_capacity": desired})),
        )
        .await;
        assert_eq!(st, 200);
        eventually("the API's change in the live event list", WAIT, || async {
            let r = rows(&c, "#events-body").await;
            r.iter()
                .find(|e| e[2] == "manual" && e[4] == change)
                .map(|_| ())
                .ok_or(format!("{r:?}"))
        })
        .await;
    }
    let kept = js(&c, "return window.swellNoReload === 1;", vec![]).await;
    assert_eq!(kept, true, "the page was not reloaded");
    let chart = js(
        &c,
        "return document.querySelectorAll('#desired-chart polyline').length;",
        vec![],
    )
    .await;
    assert_eq!(chart, 1, "the desired capacity chart");
    // The load chart: one line of the seeded summaries, one point each.
    let load = js(
        &c,
        "return [...document.querySelectorAll('#load-chart polyline')]
            .map(l => [l.dataset.series, l.getAttribute('points').split(' ').length]);",
        vec![],
    )
    .await;
    assert_eq!(load, json!([["cpu (mean)", history]]), "the load chart");

    // Out of bounds: the API's 400 problem, shown as it is; nothing changes.
    c.type_into("#desired-input", "9").await;
    c.click("#desired-submit").await;
    text_until(&c, "#desired-error", "the 400 problem", |t| {
        t == "400 Invalid input: desired_capacity: desired_capacity (9) must be within [min, max] = [1, 3]"
    })
    .await;
    let (_, g) = call(&s, &ann, reqwest::Method::GET, "/v1/groups/web", None).await;
    assert_eq!(g["desired_capacity"], 2, "{g}");

    // ---- the chart of a group's metric, whatever its policy ----
    // `api`: a threshold group (its policy keeps no load history) whose cpu is pushed as
    // a group-level reading, a known ramp up and down, one reading per 400 ms (its
    // metrics interval is 500 ms): the scale-out and -in it causes are real.
    let mut doc = group_doc(
        "api",
        1,
        3,
        json!([{"type": "threshold", "metric": "cpu", "scale_out_above": 70.0, "scale_in_below": 20.0, "evaluation_period": "2s"}]),
    );
    doc["cooldown"] = json!("2s");
    let (st, g) = call(&s, &ann, reqwest::Method::POST, "/v1/groups", Some(doc)).await;
    assert_eq!(st, 201, "{g}");
    c.goto(&format!("{}/#/groups/api", s.url)).await;
    shown(&c, "group-view").await;
    text_until(&c, "#group-name", "the group's name", |t| t == "api").await;
    let ramp = [
        15.0, 25.0, 40.0, 55.0, 70.0, 85.0, 95.0, 95.0, 90.0, 90.0, 85.0, 80.0, 60.0, 45.0, 30.0,
        15.0, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0,
    ];
    let mut tick = tokio::time::interval(Duration::from_millis(400));
    for v in ramp {
        tick.tick().await;
        let (st, a) = call(
            &s,
            &ann,
            reqwest::Method::POST,
            "/v1/groups/api/metrics",
            Some(json!({"samples": [{"metric": "cpu", "value": v}]})),
        )
        .await;
        assert_eq!(st, 202, "{a}");
    }
    /// What the page drew: each series' times and values, and the threshold lines.
    const DRAWN: &str = "const svg = document.getElementById('metric-chart');
        const series = {};
        for (const l of svg.querySelectorAll('polyline')) {
            series[l.dataset.series] = {
                at: l.dataset.at ? l.dataset.at.split(' ') : [],
                values: l.dataset.values ? l.dataset.values.split(' ').map(Number) : [],
            };
        }
        const lines = [...svg.querySelectorAll('line.threshold')]
            .map(l => [l.dataset.kind, Number(l.dataset.value)]);
        return {series, lines, metric: document.getElementById('metric-name').textContent};";
    let drawn = eventually("the pushed ramp drawn", WAIT, || async {
        let d = js(&c, DRAWN, vec![]).await;
        let values = d["series"]["cpu"]["values"].as_array().map_or(0, Vec::len);
        let high = d["series"]["cpu"]["values"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|v| v.as_f64() >= Some(85.0));
        if values >= 12 && high {
            Ok(d)
        } else {
            Err(d.to_string())
        }
    })
    .await;
    let (_, api_doc) = call(
        &s,
        &ann,
        reqwest::Method::GET,
        "/v1/groups/api/metrics",
        None,
    )
    .await;
    let api_points = api_doc["points"].as_array().expect("points");
    assert_eq!(drawn["metric"], "cpu");
    assert_eq!(
        drawn["lines"],
        // Whole numbers come back from the page as integers.
        json!([["scale_out_above", 70], ["scale_in_below", 20]])
    );
    // Every point drawn is the API's point of the same time, with the same value; the
    // running instances likewise (the API has moved on since the page's last refresh).
    for (series, field) in [("cpu", "value"), ("running", "running")] {
        let at = drawn["series"][series]["at"].as_array().expect("times");
        let values = drawn["series"][series]["values"]
            .as_array()
            .expect("values");
        assert_eq!(at.len(), values.len(), "{series}");
        assert!(at.len() >= 12, "{series}: {drawn}");
        for (t, v) in at.iter().zip(values) {
            let p = api_points
                .iter()
                .find(|p| p["at"] == *t)
                .unwrap_or_else(|| panic!("{series}: no API point at {t}: {api_doc}"));
            assert_eq!(p[field].as_f64(), v.as_f64(), "{series} at {t}");
        }
    }
    // The pushed readings are what the cpu line shows: a drawn value is the mean of
    // readings of the ramp (one or two per interval), or the process's own reading
    // (about 0) before the first push and after the last; the peak is drawn.
    let cpu: Vec<f64> = drawn["series"]["cpu"]["values"]
        .as_array()
        .expect("values")
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    assert!(cpu.iter().all(|v| (0.0..=95.0).contains(v)), "{cpu:?}");
    let peak = cpu.iter().copied().fold(0.0, f64::max);
    assert!((85.0..=95.0).contains(&peak), "{cpu:?}");
    // The ramp made the group scale out: the running line shows more than one.
    let running = eventually("a scale-out drawn", WAIT, || async {
        let d = js(&c, DRAWN, vec![]).await;
        let most = d["series"]["running"]["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_f64)
            .fold(0.0, f64::max);
        if most >= 2.0 {
            Ok(d)
        } else {
            Err(d.to_string())
        }
    })
    .await;
    // Live: the page draws newer points without being reloaded.
    let last = |d: &Value| {
        d["series"]["running"]["at"]
            .as_array()
            .and_then(|a| a.last().cloned())
            .unwrap_or(Value::Null)
    };
    let before = last(&running);
    eventually("a newer point drawn", WAIT, || async {
        let d = js(&c, DRAWN, vec![]).await;
        let now = last(&d);
        if now.as_str() > before.as_str() {
            Ok(())
        } else {
            Err(format!("{now} after {before}"))
        }
    })
    .await;
    // The screenshot of docs/dashboard.md: this page, as drawn (rewritten only with
    // SWELL_UPDATE_SCREENSHOTS=1).
    let png = c.screenshot().await;
    save_screenshot("dashboard-chart.png", &png);

    // Markup in an event's message is text: no element made of it, no script run.
    c.goto(&format!("{}/#/groups/markup", s.url)).await;
    shown(&c, "group-view").await;
    eventually("the event with markup, as text", WAIT, || async {
        let r = rows(&c, "#events-body").await;
        r.iter()
            .find(|e| e[6].contains(evil))
            .map(|_| ())
            .ok_or(format!("{r:?}"))
    })
    .await;
    let injected = js(
        &c,
        "return [document.querySelectorAll('#pwned').length, typeof window.pwned];",
        vec![],
    )
    .await;
    assert_eq!(injected, json!([0, "undefined"]), "markup was parsed");

    // Log out: the token is forgotten by the tab and revoked by the server.
    let token = js(&c, "return sessionStorage.getItem('swell.token');", vec![]).await;
    let token = token
        .as_str()
        .expect("a token in sessionStorage")
        .to_string();
    c.click("#logout").await;
    shown(&c, "login-view").await;
    assert_eq!(
        js(&c, "return sessionStorage.getItem('swell.token');", vec![]).await,
        Value::Null
    );
    let (st, _) = call(&s, &token, reqwest::Method::GET, "/v1/auth/whoami", None).await;
    assert_eq!(st, 401, "the dashboard's token outlived its logout");

    // ---- vic, viewer of alpha: may look, is offered no control ----
    form_login(&c, "alpha", "vic").await;
    c.goto(&format!("{}/#/groups/web", s.url)).await;
    shown(&c, "group-view").await;
    text_until(&c, "#group-desired", "the group to load", |t| t == "2").await;
    eventually("vic's instances listed", WAIT, || async {
        let r = rows(&c, "#instances-body").await;
        if r.is_empty() {
            Err("no instance".to_string())
        } else {
            Ok(())
        }
    })
    .await;
    let controls = js(
        &c,
        "return ['desired-form', 'bind-form', 'instances-actions', 'instances-owners']
            .filter(id => !document.getElementById(id).hidden)
            .concat([...document.querySelectorAll('#group-view button')]
                .filter(b => b.offsetParent !== null).map(b => b.textContent));",
        vec![],
    )
    .await;
    assert_eq!(controls, json!([]), "a viewer is offered controls");
    // The API refuses what the page does not offer.
    let vic = login(&s, "vic", "alpha").await;
    let (st, _) = call(
        &s,
        &vic,
        reqwest::Method::PUT,
        "/v1/groups/web/desired_capacity",
        Some(json!({"desired_capacity": 3})),
    )
    .await;
    assert_eq!(st, 403);
    c.click("#logout").await;

    // ---- bob, owner of beta, with a pasted token: no trace of alpha ----
    shown(&c, "login-view").await;
    c.type_into("#login-token", &bob).await;
    c.click("#token-submit").await;
    shown(&c, "groups-view").await;
    text_until(&c, "#who", "who am I", |t| {
        t.contains("bob in tenant beta (owner)")
    })
    .await;
    text_until(&c, "#groups-refreshed", "a refresh", |t| t != "–").await;
    shown(&c, "groups-empty").await;
    assert!(rows(&c, "#groups-body").await.is_empty());
    c.goto(&format!("{}/#/groups/web", s.url)).await;
    text_until(&c, "#group-error", "a 404", |t| {
        t.starts_with("404 Not found:")
    })
    .await;
    assert!(rows(&c, "#instances-body").await.is_empty());
    assert!(rows(&c, "#events-body").await.is_empty());
    let page = js(&c, "return document.body.textContent;", vec![]).await;
    let page = page.as_str().unwrap_or_default();
    for trace in [first.as_str(), "markup", "nonexistent", "127.0.0.1:"] {
        assert!(!page.contains(trace), "beta's page shows `{trace}`");
    }

    // Nothing in the browser's console but the refusals above (logged as failed loads):
    // no script error, no Content-Security-Policy violation in the whole session.
    let console = c.console().await;
    let unexpected: Vec<&String> = console
        .iter()
        .filter(|m| !m.contains("Failed to load resource"))
        .collect();
    assert!(unexpected.is_empty(), "the browser's console: {console:#?}");
    c.close().await;
    eprintln!("dashboard_in_chromium took {:?}", started.elapsed());
}
