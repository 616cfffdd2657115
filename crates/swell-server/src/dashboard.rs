//! The web dashboard: static HTML, CSS and JavaScript compiled into the binary and
//! served on the API's listener (`GET /`, `GET /ui/…`).
//!
//! The assets hold no data and need no token: the page talks only to the `/v1` API
//! with the bearer token the user logs in with, so tenancy and roles are the API's.
//! Their routes are `Public` rows of [`crate::auth::rules::RULES`] like any other
//! route, and every answer carries a strict Content-Security-Policy: no inline script
//! or style, nothing from another origin, no framing.

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// `Content-Security-Policy` of every dashboard answer: scripts, styles, images and
/// API calls only from this origin (so no inline script or style runs, even one that
/// slipped into the page), and no page may frame the dashboard (clickjacking).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; frame-ancestors 'none'";

/// One embedded file of the dashboard.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// The route it is served at.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes, as compiled in.
    pub body: &'static str,
}

/// Every file of the dashboard. The page (`/`) loads the others by these paths.
pub const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_str!("../dashboard/index.html"),
    },
    Asset {
        path: "/ui/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../dashboard/app.js"),
    },
    Asset {
        path: "/ui/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../dashboard/app.css"),
    },
    Asset {
        path: "/ui/favicon.svg",
        content_type: "image/svg+xml",
        body: include_str!("../dashboard/favicon.svg"),
    },
];

/// The dashboard's routes, one per asset. They go through the same authorization
/// middleware as the API (each has a `Public` rule), so merge them before its layer.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS.iter().fold(Router::new(), |router, asset| {
        let asset = *asset;
        router.route(asset.path, get(move || async move { serve(asset) }))
    })
}

/// One asset with the dashboard's security headers.
fn serve(asset: Asset) -> Response {
    let headers: [(HeaderName, HeaderValue); 5] = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        // Browsers must not guess a script out of another content type.
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        // The URL (a group's name in the fragment aside) is not sent on to anyone.
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        // Revalidate, so that a new `swell` binary's page and script never mix with a
        // cached old one.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (headers, asset.body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page refers only to assets that exist, and holds no inline script or style
    /// (the CSP would block them).
    #[test]
    fn page_links_only_served_assets_and_has_nothing_inline() {
        let page = ASSETS[0].body;
        for asset in &ASSETS[1..] {
            assert!(
                page.contains(&format!("\"{}\"", asset.path)),
                "{} is not used by the page",
                asset.path
            );
        }
        assert!(!page.contains("<script>"), "an inline script");
        assert!(!page.contains("<style"), "an inline style");
        assert!(!page.contains("style="), "an inline style attribute");
        for asset in ASSETS {
            for attr in [
                " onclick=",
                " onload=",
                " onerror=",
                " onsubmit=",
                "javascript:",
            ] {
                assert!(!asset.body.contains(attr), "{}: `{attr}`", asset.path);
            }
        }
    }

    /// The script never writes HTML from strings: data is rendered with `textContent`.
    #[test]
    fn script_never_parses_html() {
        let js = ASSETS[1].body;
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ] {
            assert!(!js.contains(sink), "app.js uses `{sink}`");
        }
    }
}
