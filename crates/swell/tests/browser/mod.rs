//! A minimal W3C WebDriver client (the handful of commands the dashboard test uses)
//! over `reqwest`, and a `chromedriver` child that runs headless Chromium.
//!
//! Hand-written rather than a crate: the browser-driving crates pull in some thirty
//! crates (a second `http`, `time`, ICU) for six HTTP calls that are stable since
//! WebDriver became a W3C recommendation.
//!
//! Shared by the dashboard's browser tests, each of which uses part of it.
#![allow(dead_code)]

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The key of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// `name` from `$var`, else on the PATH, else a panic that says what to install.
pub fn tool(name: &str, var: &str) -> PathBuf {
    let found = match std::env::var_os(var) {
        Some(p) => Some(PathBuf::from(p)).filter(|p| p.is_file()),
        None => std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        }),
    };
    found.unwrap_or_else(|| {
        panic!(
            "the dashboard's browser test needs `{name}`, which is not on the PATH (or not \
             at ${var}): install Chromium and its WebDriver (Debian: `apt-get install -y \
             chromium chromium-driver`; scripts/test does it)"
        )
    })
}

/// Writes a screenshot the docs show, `docs/NAME`, when asked to
/// (`SWELL_UPDATE_SCREENSHOTS=1`) or when it is missing; returns whether it wrote.
/// Not at every run: the committed images would change at every test run (times,
/// ids, the machine's fonts), and a test run must not dirty the work tree.
pub fn save_screenshot(name: &str, png: &[u8]) -> bool {
    assert!(png.starts_with(b"\x89PNG"), "{name}: a PNG");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs")
        .join(name);
    let asked = std::env::var("SWELL_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1");
    if !asked && path.exists() {
        return false;
    }
    std::fs::write(&path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    true
}

/// A `chromedriver` child in its own process group, so that the browsers it starts go
/// with it even when a failed assertion skips closing the session.
pub struct Driver {
    child: Child,
    url: String,
    http: reqwest::Client,
}

impl Driver {
    /// Starts `chromedriver` on a free port and waits (up to `within`) until it is ready.
    pub async fn start(within: Duration) -> Driver {
        let port = super::common::free_port();
        let child = Command::new(tool("chromedriver", "SWELL_CHROMEDRIVER"))
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("starting chromedriver");
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("an HTTP client"),
        };
        super::common::eventually("chromedriver to be ready", within, || async {
            let v = driver.send(reqwest::Method::GET, "/status", None).await?;
            if v["ready"] == true {
                Ok(())
            } else {
                Err(v.to_string())
            }
        })
        .await;
        driver
    }

    /// One command; the answer's `value`, or the WebDriver error as text.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.url));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req
            .send()
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let status = r.status();
        let v: Value = r
            .json()
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        if status.is_success() {
            Ok(v["value"].clone())
        } else {
            Err(format!(
                "{method} {path}: {status} {}: {}",
                v["value"]["error"], v["value"]["message"]
            ))
        }
    }

    /// A new headless Chromium session.
    pub async fn browser(&self) -> Browser<'_> {
        let chromium = tool("chromium", "SWELL_CHROMIUM");
        let caps = json!({"capabilities": {"alwaysMatch": {
            // Keeps the console for `console()`.
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": chromium,
                // Root in a container: no sandbox; no GPU; /dev/shm may be small.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1024"],
            },
        }}});
        let v = self
            .send(reqwest::Method::POST, "/session", Some(caps))
            .await
            .unwrap_or_else(|e| panic!("a Chromium session through chromedriver: {e}"));
        let session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {v}"))
            .to_string();
        Browser {
            driver: self,
            session,
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The group's id is chromedriver's pid (`process_group(0)`).
        let _ = kill(Pid::from_raw(-(self.child.id() as i32)), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// One browser session.
pub struct Browser<'a> {
    driver: &'a Driver,
    session: String,
}

impl Browser<'_> {
    async fn cmd(&self, path: &str, body: Value) -> Result<Value, String> {
        self.driver
            .send(
                reqwest::Method::POST,
                &format!("/session/{}{path}", self.session),
                Some(body),
            )
            .await
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.cmd("/url", json!({"url": url}))
            .await
            .unwrap_or_else(|e| panic!("opening {url}: {e}"));
    }

    /// The first element matching `css`.
    pub async fn find(&self, css: &str) -> Result<String, String> {
        let v = self
            .cmd("/element", json!({"using": "css selector", "value": css}))
            .await?;
        v[ELEMENT]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("no element reference in {v}"))
    }

    /// Clears the input `css` and types `text` into it, as a user would.
    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self
            .find(css)
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"));
        self.cmd(&format!("/element/{e}/clear"), json!({}))
            .await
            .unwrap_or_else(|e| panic!("clearing {css}: {e}"));
        self.cmd(&format!("/element/{e}/value"), json!({"text": text}))
            .await
            .unwrap_or_else(|e| panic!("typing into {css}: {e}"));
    }

    /// Clicks the element `css`.
    pub async fn click(&self, css: &str) {
        let e = self
            .find(css)
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"));
        self.cmd(&format!("/element/{e}/click"), json!({}))
            .await
            .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) in the page.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.cmd("/execute/sync", json!({"script": script, "args": args}))
            .await
            .unwrap_or_else(|e| panic!("running a script in the page: {e}"))
    }

    /// The console messages since the last call (chromedriver's log, not W3C):
    /// uncaught errors and Content-Security-Policy violations show here.
    pub async fn console(&self) -> Vec<String> {
        let v = self
            .cmd("/se/log", json!({"type": "browser"}))
            .await
            .unwrap_or_else(|e| panic!("reading the browser's console: {e}"));
        v.as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| format!("{} {}", e["level"], e["message"]))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A PNG of the browser's viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let v = self
            .driver
            .send(
                reqwest::Method::GET,
                &format!("/session/{}/screenshot", self.session),
                None,
            )
            .await
            .unwrap_or_else(|e| panic!("taking a screenshot: {e}"));
        let text = v.as_str().unwrap_or_else(|| panic!("no screenshot in {v}"));
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap_or_else(|e| panic!("the screenshot is not base64: {e}"))
    }

    /// Ends the session (the browser quits).
    pub async fn close(self) {
        self.driver
            .send(
                reqwest::Method::DELETE,
                &format!("/session/{}", self.session),
                None,
            )
            .await
            .unwrap_or_else(|e| panic!("closing the session: {e}"));
    }
}
