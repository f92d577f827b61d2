//! Browser tests' tools: a chromedriver (Debian's `chromium-driver`) on a free loopback port driving
//! headless Chromium, and a small W3C WebDriver client over HTTP. The driver is killed (by its PID)
//! when its guard drops. A missing chromium or chromedriver fails the test, unless
//! MAILROOM_SKIP_BROWSER=1 is set.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The W3C name of an element reference in WebDriver replies.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// Longest wait for anything in the browser.
pub const BROWSER_WAIT: Duration = Duration::from_secs(20);

/// True when the browser tests should not run (explicit opt-out only).
pub fn skip() -> bool {
    if std::env::var("MAILROOM_SKIP_BROWSER").is_ok_and(|v| v == "1") {
        eprintln!("MAILROOM_SKIP_BROWSER=1: browser test skipped");
        return true;
    }
    for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            Path::new(tool).exists(),
            "{tool} missing: apt-get install chromium chromium-driver (or MAILROOM_SKIP_BROWSER=1)"
        );
    }
    false
}

/// A running chromedriver and one browser session.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::blocking::Client,
    _profile: tempfile::TempDir,
    pub downloads: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.http.delete(format!("{}/session/{}", self.base, self.session)).send();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile.
    pub fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        let deadline = Instant::now() + BROWSER_WAIT;
        while http.get(format!("{base}/status")).send().is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().unwrap();
        let downloads = profile.path().join("downloads");
        std::fs::create_dir_all(&downloads).unwrap();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1200,900",
            &format!("--user-data-dir={}", profile.path().join("chrome").display()),
        ];
        let caps = json!({ "capabilities": { "alwaysMatch": { "browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium", "args": args,
            "prefs": { "download.default_directory": downloads, "download.prompt_for_download": false }
        }}}});
        let mut b = Browser { driver, base, session: String::new(), http, _profile: profile, downloads };
        let v = b.call("POST", "/session", caps);
        b.session = v["sessionId"].as_str().expect("session id").to_owned();
        b
    }

    /// One WebDriver command; panics with the driver's message on error.
    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = if path == "/session" {
            format!("{}{path}", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body),
        };
        let reply: Value = req.send().expect("WebDriver request").json().expect("WebDriver JSON");
        let value = reply.get("value").cloned().unwrap_or(Value::Null);
        if let Some(err) = value.get("error") {
            panic!("WebDriver {method} {path}: {err} {}", value["message"]);
        }
        value
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", json!({ "url": url }));
    }

    pub fn url(&self) -> String {
        self.call("GET", "/url", Value::Null).as_str().unwrap_or_default().to_owned()
    }

    pub fn title(&self) -> String {
        self.call("GET", "/title", Value::Null).as_str().unwrap_or_default().to_owned()
    }

    /// The elements matching a CSS selector (none is not an error).
    pub fn find_all(&self, css: &str) -> Vec<String> {
        let v = self.call("POST", "/elements", json!({ "using": "css selector", "value": css }));
        v.as_array()
            .map(|a| a.iter().filter_map(|e| e[ELEMENT].as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    }

    /// Waits for the first element matching `css`.
    pub fn wait_for(&self, css: &str) -> String {
        let deadline = Instant::now() + BROWSER_WAIT;
        loop {
            if let Some(e) = self.find_all(css).into_iter().next() {
                return e;
            }
            if Instant::now() >= deadline {
                let text = self.script("return document.body ? document.body.innerText : '';");
                panic!("no {css} on {} after {BROWSER_WAIT:?}; the page says: {text}", self.url());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn click(&self, css: &str) {
        let e = self.wait_for(css);
        self.call("POST", &format!("/element/{e}/click"), json!({}));
    }

    pub fn click_element(&self, element: &str) {
        self.call("POST", &format!("/element/{element}/click"), json!({}));
    }

    /// Clicks the link whose text is `text`.
    pub fn click_link(&self, text: &str) {
        let v = self.call("POST", "/element", json!({ "using": "link text", "value": text }));
        self.click_element(v[ELEMENT].as_str().expect("link element"));
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.wait_for(css);
        self.call("POST", &format!("/element/{e}/value"), json!({ "text": text }));
    }

    pub fn text(&self, css: &str) -> String {
        let e = self.wait_for(css);
        self.call("GET", &format!("/element/{e}/text"), Value::Null).as_str().unwrap_or_default().to_owned()
    }

    /// Runs a script in the page (test instrumentation only; the app's own pages run just app.js).
    pub fn script(&self, js: &str) -> Value {
        self.call("POST", "/execute/sync", json!({ "script": js, "args": [] }))
    }

    /// Switches into the iframe matching `css` (None: back to the top document).
    pub fn frame(&self, css: Option<&str>) {
        let id = match css {
            Some(css) => json!({ ELEMENT: self.wait_for(css) }),
            None => Value::Null,
        };
        self.call("POST", "/frame", json!({ "id": id }));
    }

    /// Saves a PNG screenshot of the page.
    pub fn screenshot(&self, path: &Path) {
        let b64 = self.call("GET", "/screenshot", Value::Null);
        let png = mailroom_proto::base64::decode(b64.as_str().unwrap()).expect("screenshot base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }

    /// Logs in through the login form.
    pub fn login(&self, base: &str, address: &str, password: &str) {
        self.goto(&format!("{base}/login"));
        self.type_into("#address", address);
        self.type_into("#password", password);
        self.click("#login");
        self.wait_for("#messages");
    }
}

/// Waits until `check` is true.
pub fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + BROWSER_WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
