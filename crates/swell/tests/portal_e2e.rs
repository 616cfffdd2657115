//! The owner portal of the web dashboard (seed 3) in a real headless Chromium, driven
//! over WebDriver, against the real `swell serve`: the owner of tenant `acme` binds a
//! customer to one of two instances from the group's page; the customer logs in, sees
//! only that instance (status, address, its CPU and memory chart drawn point for point
//! as the API's series), pauses it and sees the API say `paused`, resumes it; the other
//! customer's instance is nowhere in the page, and the portal calls nothing it may not
//! (the browser's console holds no refused call at all). The screenshots of
//! docs/dashboard.md are taken here (written only with `SWELL_UPDATE_SCREENSHOTS=1` or
//! when missing).
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
async fn call(s: &Swell, token: &str, method: reqwest::Method, path: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .request(method, format!("{}{path}", s.url))
        .bearer_auth(token)
        .send()
        .await
        .expect("the API answers");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn password(user: &str) -> String {
    format!("{user}-portal-password")
}

/// Creates `user` through the CLI, as the admin; with `role` in `acme` if given.
async fn user(s: &Swell, user: &str, role: Option<&str>) {
    let pf = s.write(&format!("{user}.pw"), &format!("{}\n", password(user)));
    s.cli_json(&["user", "create", user, "--password-file", &pf])
        .await;
    if let Some(role) = role {
        s.cli_json(&["user", "grant", user, "--tenant", "acme", "--role", role])
            .await;
    }
}

/// Logs `user` in on `acme` through the API.
async fn login(s: &Swell, user: &str) -> String {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/auth/tokens", s.url))
        .json(&json!({"user": user, "password": password(user), "tenant": "acme"}))
        .send()
        .await
        .expect("the login answers");
    assert_eq!(r.status(), 201, "login of {user}");
    let v: Value = r.json().await.expect("a login answer");
    v["token"].as_str().expect("a token").to_string()
}

/// Runs `script` in the page and returns its value.
async fn js(c: &Browser<'_>, script: &str) -> Value {
    c.js(script, vec![]).await
}

/// Waits until `script`'s value satisfies `ok`; returns it.
async fn until(c: &Browser<'_>, what: &str, script: &str, ok: impl Fn(&Value) -> bool) -> Value {
    eventually(what, WAIT, || async {
        let v = js(c, script).await;
        if ok(&v) { Ok(v) } else { Err(v.to_string()) }
    })
    .await
}

/// Clicks the button `css` in one script: the portal redraws its cards at every
/// refresh, so a button found by one WebDriver call may be gone at the next.
async fn press(c: &Browser<'_>, css: &str) {
    let script = format!(
        "const b = document.querySelector('{css}'); if (!b) return false; b.click(); return true;"
    );
    until(c, &format!("{css} pressed"), &script, |v| *v == true).await;
}

/// Waits until `#id` is shown.
async fn shown(c: &Browser<'_>, id: &str) {
    let script = format!("const e = document.getElementById('{id}'); return !!e && !e.hidden;");
    until(c, &format!("#{id} shown"), &script, |v| *v == true).await;
}

/// Logs in through the form and waits for the view that follows.
async fn form_login(c: &Browser<'_>, user: &str, view: &str) {
    shown(c, "login-view").await;
    c.type_into("#login-tenant", "acme").await;
    c.type_into("#login-user", user).await;
    c.type_into("#login-password", &password(user)).await;
    c.click("#login-submit").await;
    shown(c, view).await;
}

/// The status of `id` in `desk` as the API (the tenant's owner) tells it.
async fn api_status(s: &Swell, token: &str, id: &str) -> String {
    let (_, v) = call(s, token, reqwest::Method::GET, "/v1/groups/desk/instances").await;
    v["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["id"] == id)
        .map(|i| i["status"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

/// The portal's cards: instance id, status, address, and buttons shown.
const CARDS: &str =
    "return [...document.querySelectorAll('#portal-list .instance-card')].map(c => ({
    id: c.dataset.instance, group: c.dataset.group, status: c.dataset.status,
    address: c.querySelector('dd.address').textContent,
    buttons: [...c.querySelectorAll('button')].map(b => b.dataset.action),
}));";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_portal_in_chromium() {
    let started = Instant::now();
    tool("chromium", "SWELL_CHROMIUM");
    let driver = Driver::start(WAIT).await;
    let s = Swell::start().await;
    s.cli_json(&[
        "tenant",
        "create",
        "acme",
        "--providers",
        "process",
        "--listen",
        "127.0.0.1:1024-65535",
    ])
    .await;
    // olga owns the tenant; carl and dana are customers with no role, each to be bound
    // to one instance (seed 3's employees).
    user(&s, "olga", Some("owner")).await;
    user(&s, "carl", None).await;
    user(&s, "dana", None).await;
    let olga = login(&s, "olga").await;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/groups", s.url))
        .bearer_auth(&olga)
        .json(&group_doc("desk", 2, 2, never_scale()))
        .send()
        .await
        .expect("the API answers");
    assert_eq!(r.status(), 201);
    let ids: Vec<String> = eventually("two running instances", WAIT, || async {
        let (_, v) = call(&s, &olga, reqwest::Method::GET, "/v1/groups/desk/instances").await;
        let running: Vec<String> = v["instances"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i["status"] == "running")
            .filter_map(|i| i["id"].as_str().map(String::from))
            .collect();
        if running.len() == 2 {
            Ok(running)
        } else {
            Err(v.to_string())
        }
    })
    .await;
    let (mine, theirs) = (ids[0].clone(), ids[1].clone());

    // ---- olga, the tenant's owner, binds carl to one instance from the group's page ----
    let c = driver.browser().await;
    c.goto(&s.url).await;
    form_login(&c, "olga", "groups-view").await;
    c.goto(&format!("{}/#/groups/desk", s.url)).await;
    shown(&c, "bind-form").await;
    until(
        &c,
        "both instances to bind",
        "return document.querySelectorAll('#bind-instance option').length;",
        |v| *v == 2,
    )
    .await;
    c.js(
        "document.getElementById('bind-instance').value = arguments[0]; return null;",
        vec![json!(mine)],
    )
    .await;
    c.type_into("#bind-user", "carl").await;
    c.click("#bind-submit").await;
    let said = until(
        &c,
        "the binding confirmed",
        "return document.getElementById('bind-result').textContent;",
        |v| v.as_str().is_some_and(|t| !t.is_empty()),
    )
    .await;
    assert_eq!(said, json!(format!("carl is an instance owner of {mine}")));
    let (st, owners) = call(
        &s,
        &olga,
        reqwest::Method::GET,
        &format!("/v1/groups/desk/instances/{mine}/owners"),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        owners["owners"],
        json!([{"instance": mine, "user": "carl"}])
    );
    // dana is bound to the other one through the API.
    let (st, _) = call(
        &s,
        &olga,
        reqwest::Method::PUT,
        &format!("/v1/groups/desk/instances/{theirs}/owners/dana"),
    )
    .await;
    assert_eq!(st, 200);
    // The page shows each instance's owners, with a way to unbind them.
    let bound = until(
        &c,
        "the owners column",
        "return [...document.querySelectorAll('#instances-body tr')].map(tr =>
            [tr.dataset.instance, [...tr.querySelectorAll('.owner')].map(o => o.dataset.user)]);",
        |v| v.to_string().contains("dana"),
    )
    .await;
    let mut bound: Vec<(String, Vec<String>)> = serde_json::from_value(bound).expect("rows");
    bound.sort();
    let mut want = vec![
        (mine.clone(), vec!["carl".to_string()]),
        (theirs.clone(), vec!["dana".to_string()]),
    ];
    want.sort();
    assert_eq!(bound, want);
    save_screenshot("dashboard-owners.png", &c.screenshot().await);
    c.click("#logout").await;
    // Only carl's session is judged by the console below.
    let _ = c.console().await;

    // ---- carl, instance owner: his instance only, with Pause ----
    form_login(&c, "carl", "portal-view").await;
    until(
        &c,
        "who am I",
        "return document.getElementById('who').textContent;",
        |v| v == "carl in tenant acme (instance owner)",
    )
    .await;
    let cards = until(&c, "carl's instance", CARDS, |v| {
        v.as_array().is_some_and(|a| a.len() == 1)
    })
    .await;
    assert_eq!(cards[0]["id"], json!(mine));
    assert_eq!(cards[0]["group"], "desk");
    assert_eq!(cards[0]["status"], "running");
    assert_eq!(cards[0]["buttons"], json!(["pause"]));
    assert!(
        cards[0]["address"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{cards}"
    );
    // Its chart: the API's per-instance history, point for point.
    const DRAWN: &str = "const out = {};
        for (const l of document.querySelectorAll('#portal-list svg polyline')) {
            out[l.dataset.series] = {
                at: l.dataset.at.split(' '), values: l.dataset.values.split(' ').map(Number)
            };
        }
        return out;";
    let drawn = until(&c, "the CPU and memory chart", DRAWN, |v| {
        v["memory_mb"]["at"]
            .as_array()
            .is_some_and(|a| a.len() >= 3)
    })
    .await;
    let carl = login(&s, "carl").await;
    let (st, history) = call(
        &s,
        &carl,
        reqwest::Method::GET,
        &format!("/v1/groups/desk/instances/{mine}/metrics"),
    )
    .await;
    assert_eq!(st, 200);
    let points = history["points"].as_array().expect("points");
    for field in ["cpu_percent", "memory_mb"] {
        let at = drawn[field]["at"].as_array().expect("times");
        let values = drawn[field]["values"].as_array().expect("values");
        assert_eq!(at.len(), values.len(), "{field}");
        for (t, v) in at.iter().zip(values) {
            let p = points
                .iter()
                .find(|p| p["at"] == *t)
                .unwrap_or_else(|| panic!("{field}: no API point at {t}: {history}"));
            assert_eq!(p[field].as_f64(), v.as_f64(), "{field} at {t}");
        }
    }
    assert!(
        drawn["memory_mb"]["values"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|v| v.as_f64() > Some(0.0)),
        "a running process has resident memory: {drawn}"
    );

    // Pause: the page shows it paused with Resume, and the API agrees.
    press(&c, "#portal-list button[data-action=pause]").await;
    let cards = until(&c, "the instance paused", CARDS, |v| {
        v[0]["status"] == "paused" && v[0]["buttons"] == json!(["resume"])
    })
    .await;
    assert_eq!(cards.as_array().map(Vec::len), Some(1));
    assert_eq!(api_status(&s, &olga, &mine).await, "paused");
    assert_eq!(api_status(&s, &olga, &theirs).await, "running");
    save_screenshot("dashboard-portal.png", &c.screenshot().await);

    // An address of the console's pages shows the portal too, never a refused page.
    // (The mark tells the portal drawn again after the navigation from the one before.)
    js(
        &c,
        "document.getElementById('portal-refreshed').textContent = 'before'; return null;",
    )
    .await;
    c.goto(&format!("{}/#/groups/desk", s.url)).await;
    until(
        &c,
        "the portal drawn again",
        "return document.getElementById('portal-refreshed').textContent;",
        |v| v != "before" && v != "–",
    )
    .await;
    assert_eq!(js(&c, "return location.hash;").await, "#/groups/desk");
    let visible = js(
        &c,
        "return ['login-view', 'groups-view', 'portal-view', 'group-view']
            .filter(id => !document.getElementById(id).hidden);",
    )
    .await;
    assert_eq!(visible, json!(["portal-view"]));
    let cards = js(&c, CARDS).await;
    assert_eq!(cards.as_array().map(Vec::len), Some(1), "{cards}");

    // Resume: running again, in the page and in the API.
    press(&c, "#portal-list button[data-action=resume]").await;
    until(&c, "the instance resumed", CARDS, |v| {
        v[0]["status"] == "running" && v[0]["buttons"] == json!(["pause"])
    })
    .await;
    assert_eq!(api_status(&s, &olga, &mine).await, "running");

    // dana's instance is nowhere in carl's page, and the API refuses it to him.
    let page = js(&c, "return document.body.textContent;").await;
    let page = page.as_str().unwrap_or_default();
    for trace in [theirs.as_str(), "dana"] {
        assert!(!page.contains(trace), "carl's page shows `{trace}`");
    }
    let (st, _) = call(
        &s,
        &carl,
        reqwest::Method::POST,
        &format!("/v1/groups/desk/instances/{theirs}/pause"),
    )
    .await;
    assert_eq!(st, 403, "carl paused dana's instance");
    assert_eq!(api_status(&s, &olga, &theirs).await, "running");

    // The portal called nothing carl may not: no refused call, no script error, no
    // Content-Security-Policy violation in his whole session.
    let console = c.console().await;
    assert!(console.is_empty(), "the browser's console: {console:#?}");
    c.close().await;
    eprintln!("owner_portal_in_chromium took {:?}", started.elapsed());
}
