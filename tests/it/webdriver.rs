//! A few W3C WebDriver calls to Debian's chromedriver, over the reqwest that object_store
//! already builds: enough to load a page, find elements, type, click, read text and take
//! a screenshot. (fantoccini would add its own HTTP stack; Python selenium would put the
//! browser claims in another language than the rest of the suite.)
//!
//! Chromium runs headless with the flags this machine needs (no sandbox as root, no
//! background networking: the network is closed) and a fresh profile per browser.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::free_port;

/// The key W3C WebDriver uses for an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    base: String,
    session: String,
    driver: Child,
    _profile: tempfile::TempDir,
}

/// Panics (never skips) when the browser is not installed: scripts/test installs it.
fn need(path: &str) {
    assert!(
        std::path::Path::new(path).exists(),
        "{path} is missing: run the suite with scripts/test, which installs Debian's chromium and chromium-driver"
    );
}

impl Browser {
    pub fn start() -> Browser {
        need("/usr/bin/chromium");
        need("/usr/bin/chromedriver");
        let port = free_port();
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let profile = tempfile::tempdir().unwrap();
        let mut b = Browser {
            rt,
            http,
            base,
            session: String::new(),
            driver,
            _profile: profile,
        };
        // Ready within 20 s, or fail.
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = b
                .call("GET", "/status", None)
                .ok()
                .is_some_and(|v| v["ready"] == true);
            if ready {
                break;
            }
            assert!(Instant::now() < until, "chromedriver did not become ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1400,1000",
            &format!("--user-data-dir={}", b._profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
        }}});
        let v = b
            .call("POST", "/session", Some(caps))
            .expect("a chromium session starts");
        b.session = v["sessionId"].as_str().expect("a session id").to_string();
        b
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        self.rt.block_on(async {
            let req = match method {
                "GET" => self.http.get(&url),
                "DELETE" => self.http.delete(&url),
                _ => self
                    .http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(serde_json::to_vec(&body.unwrap_or(json!({}))).unwrap()),
            };
            let resp = req.send().await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
            let v: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
            if !status.is_success() {
                return Err(format!("{method} {path}: {status}: {}", v["value"]));
            }
            Ok(v["value"].clone())
        })
    }

    fn s(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", &self.s("/url"), Some(json!({"url": url})))
            .unwrap();
    }

    pub fn url(&self) -> String {
        self.call("GET", &self.s("/url"), None)
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Every element matching a CSS selector, in document order.
    pub fn all(&self, css: &str) -> Vec<String> {
        let v = self
            .call(
                "POST",
                &self.s("/elements"),
                Some(json!({"using": "css selector", "value": css})),
            )
            .unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e[ELEMENT].as_str().unwrap().to_string())
            .collect()
    }

    pub fn one(&self, css: &str) -> String {
        let all = self.all(css);
        assert!(!all.is_empty(), "no element matches {css:?}");
        all[0].clone()
    }

    pub fn text(&self, el: &str) -> String {
        self.call("GET", &self.s(&format!("/element/{el}/text")), None)
            .unwrap()
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn attr(&self, el: &str, name: &str) -> Option<String> {
        self.call(
            "GET",
            &self.s(&format!("/element/{el}/attribute/{name}")),
            None,
        )
        .unwrap()
        .as_str()
        .map(str::to_string)
    }

    pub fn css(&self, el: &str, prop: &str) -> String {
        self.call("GET", &self.s(&format!("/element/{el}/css/{prop}")), None)
            .unwrap()
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn displayed(&self, el: &str) -> bool {
        self.call("GET", &self.s(&format!("/element/{el}/displayed")), None)
            .unwrap()
            .as_bool()
            .unwrap_or(false)
    }

    pub fn click(&self, el: &str) {
        self.call("POST", &self.s(&format!("/element/{el}/click")), None)
            .unwrap();
    }

    pub fn type_text(&self, el: &str, text: &str) {
        self.call(
            "POST",
            &self.s(&format!("/element/{el}/value")),
            Some(json!({"text": text})),
        )
        .unwrap();
    }

    pub fn clear(&self, el: &str) {
        self.call("POST", &self.s(&format!("/element/{el}/clear")), None)
            .unwrap();
    }

    /// Runs a script in the page and returns its value.
    pub fn script(&self, js: &str) -> Value {
        self.call(
            "POST",
            &self.s("/execute/sync"),
            Some(json!({"script": js, "args": []})),
        )
        .unwrap()
    }

    /// The text of every element matching a CSS selector, read in one step (a page
    /// that replaces its table meanwhile cannot leave a stale element behind).
    pub fn texts(&self, css: &str) -> Vec<String> {
        let js = format!(
            "return Array.from(document.querySelectorAll({})).map(e => e.textContent.trim());",
            serde_json::to_string(css).unwrap()
        );
        self.script(&js)
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Waits (at most 10 s, polling) until `what` holds; panics with `describe` if not.
    pub fn wait_until(&self, describe: &str, mut what: impl FnMut(&Browser) -> bool) {
        let until = Instant::now() + Duration::from_secs(10);
        while !what(self) {
            assert!(Instant::now() < until, "timed out waiting: {describe}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A PNG of the window, written to `path`.
    pub fn screenshot(&self, path: &PathBuf) {
        use base64::Engine;
        let v = self.call("GET", &self.s("/screenshot"), None).unwrap();
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &self.s(""), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
