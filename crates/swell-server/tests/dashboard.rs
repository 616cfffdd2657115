//! The dashboard's static files over real HTTP: served without a token, with the strict
//! security headers and their content types, while `/v1` still refuses a call without
//! one. (The browser test is `crates/swell/tests/dashboard_e2e.rs`.)

use std::path::Path;
use swell_server::dashboard::{ASSETS, CONTENT_SECURITY_POLICY};
use swell_server::{Server, ServerConfig};

async fn start(dir: &Path) -> Server {
    Server::start(ServerConfig {
        listen: "127.0.0.1:0".parse().expect("an address"),
        data_dir: dir.to_path_buf(),
        stop_instances_on_exit: true,
        admin_password: Some(swell_server::secrets::SecretString::new(
            "dashboard-admin-password",
        )),
        ..ServerConfig::default()
    })
    .await
    .expect("the server starts")
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assets_are_public_with_strict_headers_and_the_api_still_needs_a_token() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = start(dir.path()).await;
    let base = format!("http://{}", server.addr());
    let http = reqwest::Client::new();

    for asset in ASSETS {
        // Without a token, and with a stale one (a page never fails on an old token).
        for token in [None, Some("swt_not-a-token")] {
            let mut req = http.get(format!("{base}{}", asset.path));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let r = req.send().await.expect("an answer");
            assert_eq!(r.status(), 200, "{} ({token:?})", asset.path);
            assert_eq!(header(&r, "content-type"), asset.content_type);
            assert_eq!(
                header(&r, "content-security-policy"),
                CONTENT_SECURITY_POLICY
            );
            assert_eq!(
                CONTENT_SECURITY_POLICY,
                "default-src 'self'; frame-ancestors 'none'"
            );
            assert_eq!(header(&r, "x-content-type-options"), "nosniff");
            assert_eq!(header(&r, "referrer-policy"), "no-referrer");
            assert_eq!(r.text().await.expect("a body"), asset.body);
        }
    }
    assert!(ASSETS.iter().any(|a| a.path == "/"));

    // HEAD has GET's rule (an uptime check of the page); another method is a 405.
    let r = http
        .head(format!("{base}/"))
        .send()
        .await
        .expect("an answer");
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "content-security-policy"),
        CONTENT_SECURITY_POLICY
    );
    let r = http
        .post(format!("{base}/"))
        .send()
        .await
        .expect("an answer");
    assert_eq!(r.status(), 405);
    assert_eq!(header(&r, "allow"), "GET");

    // A file that is not one of the dashboard's is not found.
    let r = http
        .get(format!("{base}/ui/secrets.json"))
        .send()
        .await
        .expect("an answer");
    assert_eq!(r.status(), 404);

    // The API is untouched: no token, no data.
    for path in ["/v1/groups", "/v1/auth/whoami", "/v1/instances"] {
        let r = http
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("an answer");
        assert_eq!(r.status(), 401, "{path}");
        assert_eq!(header(&r, "content-type"), "application/problem+json");
    }
    server.shutdown().await;
}
