//! Browser tests of the web interface in headless Chromium over WebDriver (issue 15): a real
//! `mailroom serve` with its HTTP listener; mail arrives over SMTP.
//!
//! - the inbox shows a message sent over SMTP without a reload, it opens, its attachment downloads,
//!   "mark read" moves the file to cur/ with the S flag, delete removes it; the inbox and message pages
//!   are saved as screenshots under docs/screenshots/;
//! - an admin retries a deferred queue entry from the queue page;
//! - a user composes and sends a message; it appears in the recipient's inbox, who replies from the
//!   message page (the reply form comes pre-filled) and the answer reaches the first user;
//! - an HTML message carrying a catalogue of XSS payloads runs no script and fetches nothing from a
//!   loopback canary server until the user clicks "load images".

mod common;
mod web_support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use web_support::{wait_until, Browser};

const PASSWORD: &str = "web test password";

/// A server for example.test with users alice (admin) and bob, HTTP on a free port, relaying from
/// loopback to a relayhost that refuses connections (so relayed mail stays deferred).
fn server() -> (Server, String) {
    let http = free_port();
    let dead = free_port();
    let config = format!(
        "[http]\nlisten = \"127.0.0.1:{http}\"\n\n[delivery]\nrelay_networks = [\"127.0.0.1/32\"]\n\
         relayhost = \"[127.0.0.1]:{dead}\"\nmin_backoff = \"1h\"\nmax_backoff = \"2h\"\n"
    );
    let server = Server::start_prepared(Opts::example().with_config(&config), |data| {
        user_add_password(data, "alice@example.test", PASSWORD);
        user_add_password(data, "bob@example.test", PASSWORD);
        let out = mailroom(data, &["user", "admin", "alice@example.test", "on"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    });
    (server, format!("http://127.0.0.1:{http}"))
}

fn send(server: &Server, from: &str, to: &str, message: &str) {
    let mut s = server.connect();
    s.ehlo();
    s.expect(&format!("MAIL FROM:<{from}>"), 250);
    s.expect(&format!("RCPT TO:<{to}>"), 250);
    let r = s.data(message.as_bytes());
    assert_eq!(r.code, 250, "{r:?}");
    s.expect("QUIT", 221);
}

fn with_attachment(subject: &str) -> String {
    format!(
        "From: Carol <carol@example.org>\r\nTo: alice@example.test\r\nSubject: {subject}\r\n\
         Date: Mon, 30 Nov 2026 12:00:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\n\
         The quarterly numbers are attached.\r\n--b1\r\nContent-Type: text/csv; name=\"report.csv\"\r\n\
         Content-Disposition: attachment; filename=\"report.csv\"\r\nContent-Transfer-Encoding: base64\r\n\r\n\
         {}\r\n--b1--\r\n",
        mailroom_proto::base64::encode(b"quarter,total\nq4,42\n")
    )
}

fn screenshots() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots")
}

fn files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().into_string().unwrap()).collect())
        .unwrap_or_default()
}

#[test]
fn browser_live_inbox_attachment_read_flag_delete() {
    if web_support::skip() {
        return;
    }
    let (server, base) = server();
    let b = Browser::start();
    b.login(&base, "alice@example.test", PASSWORD);
    // A marker that a reload would wipe.
    b.script("window.__noReload = 'still here';");
    send(&server, "carol@example.org", "alice@example.test", &with_attachment("Quarterly report"));
    b.wait_for("#messages tr.unread a");
    assert_eq!(b.script("return window.__noReload;"), "still here", "the row came without a reload");
    assert!(b.text("#messages").contains("Quarterly report"));
    b.screenshot(&screenshots().join("inbox.png"));
    b.click("#messages tr a");
    assert_eq!(b.text("#subject"), "Quarterly report");
    assert!(b.text("#text-part").contains("quarterly numbers"));
    b.screenshot(&screenshots().join("message.png"));
    b.click("a.attachment");
    let downloaded = b.downloads.join("report.csv");
    wait_until("the attachment download", || std::fs::read(&downloaded).is_ok_and(|d| d == b"quarter,total\nq4,42\n"));
    let maildir = server.maildir("alice@example.test");
    assert_eq!(files(&maildir.join("new")).len(), 1);
    b.click("#mark-read");
    b.wait_for("#mark-unread");
    assert!(files(&maildir.join("new")).is_empty(), "moved out of new/");
    let cur = files(&maildir.join("cur"));
    assert!(cur.len() == 1 && cur[0].ends_with(":2,S"), "cur/ holds it with the S flag: {cur:?}");
    b.click("#delete");
    b.wait_for("#messages");
    assert!(files(&maildir.join("cur")).is_empty(), "deleted");
    assert_eq!(b.find_all("#messages tr").len(), 0);
}

/// Attempts made so far for the only queue entry (from `mailroom queue list --json`).
fn attempts(data: &Path) -> Option<u64> {
    let out = mailroom(data, &["queue", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let r = &list.as_array()?.first()?["rcpt"][0];
    (r["state"] == "deferred").then(|| r["attempts"].as_u64()).flatten()
}

#[test]
fn browser_admin_retries_a_deferred_queue_entry() {
    if web_support::skip() {
        return;
    }
    let (server, base) = server();
    send(&server, "alice@example.test", "dave@elsewhere.test", "Subject: out\r\n\r\nto the world\r\n");
    let mut first = None;
    wait_until("the first (failed) attempt", || {
        first = attempts(&server.data).filter(|n| *n >= 1);
        first.is_some()
    });
    let b = Browser::start();
    b.login(&base, "alice@example.test", PASSWORD);
    b.goto(&format!("{base}/admin/queue"));
    assert!(b.text("#queue").contains("dave@elsewhere.test"));
    assert!(b.text("#queue").contains("deferred"));
    b.click("#queue button.retry");
    b.wait_for("#queue");
    assert!(b.url().ends_with("/admin/queue?requested=1"));
    // min_backoff is an hour: only "retry now" makes another attempt this soon.
    wait_until("the retried attempt", || attempts(&server.data).is_some_and(|n| n > first.unwrap()));
    // A user who is not an admin gets no queue page.
    let bob = Browser::start();
    bob.login(&base, "bob@example.test", PASSWORD);
    bob.goto(&format!("{base}/admin/queue"));
    assert!(bob.find_all("#queue").is_empty());
}

#[test]
fn browser_compose_send_and_reply() {
    if web_support::skip() {
        return;
    }
    let (server, base) = server();
    let alice = Browser::start();
    alice.login(&base, "alice@example.test", PASSWORD);
    alice.click("#compose");
    alice.type_into("#compose-to", "Bob <bob@example.test>");
    alice.type_into("#compose-subject", "Dinner on Friday");
    alice.type_into("#compose-text", "Shall we meet at eight?");
    alice.click("#send");
    assert!(alice.text("#sent").contains("Message sent"), "the inbox says it was sent");
    let stored = server.expect_new("bob@example.test", 1);
    let text = std::fs::read_to_string(&stored[0]).unwrap();
    assert!(text.contains("with HTTP (web interface, user alice@example.test)"), "{text}");

    let bob = Browser::start();
    bob.login(&base, "bob@example.test", PASSWORD);
    assert!(bob.text("#messages").contains("Dinner on Friday"), "in bob's inbox");
    bob.click("#messages tr a");
    assert!(bob.text("#text-part").contains("Shall we meet at eight?"));
    bob.click("#reply");
    let to = bob.script("return document.getElementById('compose-to').value;");
    assert!(to.as_str().unwrap().contains("alice@example.test"), "reply goes to the sender: {to}");
    let subject = bob.script("return document.getElementById('compose-subject').value;");
    assert_eq!(subject, "Re: Dinner on Friday");
    bob.type_into("#compose-text", "Eight is fine.");
    bob.click("#send");
    bob.wait_for("#sent");
    // Alice's open inbox shows the answer without a reload.
    alice.wait_for("#messages tr.unread a");
    assert!(alice.text("#messages").contains("Re: Dinner on Friday"));
    let answer = std::fs::read_to_string(&server.expect_new("alice@example.test", 1)[0]).unwrap();
    assert!(answer.contains("In-Reply-To: <") && answer.contains("Eight is fine."), "{answer}");
}

/// A loopback HTTP server that records the request line of every connection it gets.
struct Canary {
    port: u16,
    hits: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Canary {
    fn start() -> Canary {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (hits, stop) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicBool::new(false)));
        let (h, s) = (hits.clone(), stop.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(300);
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 1024];
                let n = conn.read(&mut buf).unwrap_or(0);
                let line = String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or("").to_owned();
                h.lock().unwrap().push(line);
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        });
        Canary { port, hits, stop }
    }

    fn hits(&self) -> Vec<String> {
        self.hits.lock().unwrap().clone()
    }
}

impl Drop for Canary {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// An HTML message with script, event handler, javascript: URL, SVG, CSS, meta refresh, form, frame,
/// object and remote-image payloads, each trying to change the title or reach the canary.
fn xss_message(canary: u16) -> String {
    let c = format!("http://127.0.0.1:{canary}");
    let html = format!(
        r#"<html><head><meta http-equiv="refresh" content="0;url={c}/meta"><base href="{c}/base/">
<link rel="stylesheet" href="{c}/link.css"><style>body {{ background: url({c}/style.png) }}</style>
<script>document.title='pwned-script';fetch('{c}/script')</script></head>
<body onload="document.title='pwned-onload'">
<p id="hello">Hello from the catalogue</p>
<img src="x" onerror="document.title='pwned-onerror';fetch('{c}/onerror')">
<img src="{c}/remote.png" id="remote">
<a id="jslink" href="javascript:document.title='pwned-js';fetch('{c}/js')">click me</a>
<svg onload="document.title='pwned-svg'"><script>fetch('{c}/svg')</script><image href="{c}/svg.png"/></svg>
<div style="background-image:url({c}/inline.png)">styled</div>
<form action="{c}/form" method="post"><input name="q" value="x"><button id="formbtn">Send</button></form>
<iframe src="{c}/iframe"></iframe><object data="{c}/object"></object><embed src="{c}/embed">
<video poster="{c}/poster.png"></video><math><mi xlink:href="javascript:alert(1)">m</mi></math>
<a href="{c}/plain-link">plain link</a>
</body></html>"#
    );
    format!(
        "From: \"<img src=x onerror=alert(1)>\" <mallory@example.org>\r\nTo: alice@example.test\r\n\
         Subject: <script>document.title='pwned-subject'</script>XSS catalogue\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n\
         --alt\r\nContent-Type: text/plain\r\n\r\n<script>document.title='pwned-text'</script>\r\n\
         --alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{}\r\n--alt--\r\n",
        html.replace('\n', "\r\n")
    )
}

#[test]
fn browser_xss_catalogue_runs_nothing_and_fetches_nothing() {
    if web_support::skip() {
        return;
    }
    let canary = Canary::start();
    let (server, base) = server();
    send(&server, "mallory@example.org", "alice@example.test", &xss_message(canary.port));
    let b = Browser::start();
    b.login(&base, "alice@example.test", PASSWORD);
    b.click("#messages tr a");
    b.wait_for("#html-part");
    let title = b.title();
    // Give anything that would load or run time to do it, and try the links and the form.
    std::thread::sleep(Duration::from_secs(2));
    b.frame(Some("#html-part"));
    let shown = b.script("return document.body.innerText;");
    assert!(shown.to_string().contains("Hello from the catalogue"), "the HTML part is shown: {shown}");
    // The javascript: link (its href is gone) and the form's button (the form is gone), clicked anyway.
    b.click_link("click me");
    for button in b.find_all("button") {
        b.click_element(&button);
    }
    let inner_title = b.script("return document.title;");
    b.frame(None);
    std::thread::sleep(Duration::from_secs(1));
    // The subject, shown as text (its <script> included); a payload that ran would have replaced it.
    let expected = "<script>document.title='pwned-subject'</script>XSS catalogue · mailroom";
    assert_eq!(title, expected, "page title");
    assert_eq!(b.title(), expected, "page title after the clicks");
    assert!(!inner_title.as_str().unwrap_or_default().starts_with("pwned"), "frame title: {inner_title}");
    assert!(b.url().starts_with(&base), "no navigation away: {}", b.url());
    assert_eq!(canary.hits(), Vec::<String>::new(), "the canary got requests without consent");
    // With consent the remote image loads (so the canary works and the block above was real).
    b.click("#load-images");
    wait_until("the remote image after consent", || canary.hits().iter().any(|h| h.contains("/remote.png")));
    let hits = canary.hits();
    assert!(hits.iter().all(|h| h.contains(".png")), "only images load with consent: {hits:?}");
}
