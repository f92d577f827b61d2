//! Prometheus metrics end to end: a server in this process (`Server::bind` on 127.0.0.1:0) with the
//! recorder `mailroom serve` installs, mail sent to it with mailroom's own client, and the rendered
//! text read three ways: parsed here (every family with HELP and TYPE, each counter moved by what was
//! done), linted by `promtool check metrics`, and scraped by a real Prometheus over HTTP (a small test
//! server on 127.0.0.1:0 calling the same render function the web listener calls) whose query API shows
//! `mailroom_messages_received_total` rising after mail is sent.
//!
//! One recorder per process: the tests take [`SERIAL`] so that the deltas each asserts are its own.
//! promtool and prometheus come from Debian's `prometheus` package; without them these tests fail,
//! unless `MAILROOM_SKIP_PROMETHEUS=1` says to skip them (CI never sets it).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mailroom_client::{Client, Envelope, Message, Tls};
use mailroom_proto::{Address, ForwardPath, ReversePath};
use mailroom_server::metrics::names::{self, Kind, FAMILIES};
use mailroom_server::metrics::Handle;
use mailroom_server::{Config, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Mutex};
use tokio::task::JoinHandle;

/// The longest any single step may take.
const WAIT: Duration = Duration::from_secs(20);
/// The longest Prometheus gets to start, scrape and answer (it scrapes every second).
const PROMETHEUS_WAIT: Duration = Duration::from_secs(60);
const ALICE: &str = "alice@example.test";

static SERIAL: Mutex<()> = Mutex::const_new(());

/// A server with an smtp and a submission listener and user alice (who has no password: every AUTH
/// fails).
struct Running {
    smtp: SocketAddr,
    submission: SocketAddr,
    _data: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Running {
    async fn start() -> Running {
        let data = tempfile::tempdir().unwrap();
        mailroom_store::users::UserDirectory::new(data.path()).add(ALICE, None).unwrap();
        let mut c = Config::default();
        c.server.hostname = "mx.test".into();
        c.server.data_dir = data.path().to_owned();
        c.server.listen = vec!["127.0.0.1:0".parse().unwrap()];
        c.server.submission = vec!["127.0.0.1:0".parse().unwrap()];
        c.server.domains = vec!["example.test".into()];
        c.auth.failure_delay = Duration::from_millis(10);
        let server = Server::bind(c).await.expect("bind");
        let (smtp, submission) = (server.local_addrs()[0], server.local_addrs()[1]);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Running { smtp, submission, _data: data, stop: Some(stop), task }
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(WAIT, self.task).await.expect("run returns after shutdown").unwrap();
    }

    /// One message over STARTTLS (opportunistic, certificate not checked) to each of `to`; returns how
    /// many recipients took it.
    async fn send(&self, to: &[&str]) -> usize {
        let mut client = Client::builder(self.smtp.to_string())
            .tls(Tls::Opportunistic)
            .insecure(true)
            .timeout(WAIT)
            .connect()
            .await
            .expect("connect");
        let from = ReversePath::Mailbox(Address::parse("sender@elsewhere.test").unwrap());
        let rcpts = to.iter().map(|a| ForwardPath::Mailbox(Address::parse(a).unwrap())).collect();
        let message = Message::from_bytes(b"Subject: metrics\n\nhello\n");
        let outcome = client.send(&Envelope::new(from, rcpts), message).await.expect("send");
        client.quit().await.expect("quit");
        to.len() - outcome.refused().count()
    }
}

/// The value of the series `series` (name and labels exactly as rendered), 0 when absent.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().expect("a number"))
}

fn assert_every_family_described(text: &str) {
    for f in FAMILIES {
        let kind = match f.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let help = format!("# HELP {} ", f.name);
        assert!(text.lines().any(|l| l.starts_with(&help)), "no HELP for {} in:\n{text}", f.name);
        let type_line = format!("# TYPE {} {kind}", f.name);
        assert!(text.lines().any(|l| l == type_line), "no TYPE for {} in:\n{text}", f.name);
    }
}

/// Waits (bounded) until `series` reads `want`: a session's end is counted when its task ends, a moment
/// after the client saw the 221.
async fn wait_for_value(h: &Handle, series: &str, want: f64) {
    let deadline = Instant::now() + WAIT;
    while value(&h.render(), series) != want {
        assert!(Instant::now() < deadline, "{series} never came to {want}:\n{}", h.render());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_family_is_rendered_and_moves_with_the_mail_sent() {
    let _serial = SERIAL.lock().await;
    let h = mailroom_server::metrics::install();
    let server = Running::start().await;
    let before = h.render();
    for _ in 0..3 {
        assert_eq!(server.send(&[ALICE]).await, 1);
    }
    assert_eq!(server.send(&[ALICE, "nobody@example.test"]).await, 1, "one recipient refused");
    // AUTH on the submission listener (after STARTTLS): alice has no password, so it fails.
    let auth = Client::builder(server.submission.to_string())
        .tls(Tls::StartTls)
        .insecure(true)
        .credentials(ALICE, "not the password")
        .timeout(WAIT)
        .connect()
        .await;
    assert!(auth.is_err(), "AUTH must fail");
    let active_smtp = r#"mailroom_sessions_active{listener="smtp"}"#;
    let active_submission = r#"mailroom_sessions_active{listener="submission"}"#;
    wait_for_value(&h, active_smtp, value(&before, active_smtp)).await;
    wait_for_value(&h, active_submission, value(&before, active_submission)).await;
    let after = h.render();
    server.shutdown().await;

    assert_every_family_described(&after);
    let delta = |s: &str| value(&after, s) - value(&before, s);
    assert_eq!(delta(names::MESSAGES_RECEIVED), 4.0, "four messages stored");
    assert!(delta(names::RECEIVED_BYTES) > 4.0 * 20.0, "bytes: {}", delta(names::RECEIVED_BYTES));
    assert_eq!(delta(r#"mailroom_sessions_total{listener="smtp"}"#), 4.0);
    assert_eq!(delta(r#"mailroom_sessions_total{listener="submission"}"#), 1.0);
    assert_eq!(delta(r#"mailroom_refusals_total{reason="no_such_user"}"#), 1.0);
    assert_eq!(delta(r#"mailroom_tls_handshakes_total{version="1.3"}"#), 5.0, "every session did STARTTLS");
    assert_eq!(delta(names::SMTP_AUTH_FAILURES), 1.0);
    assert_eq!(delta("mailroom_store_commit_duration_seconds_count"), 4.0, "one commit per message");
    assert!(delta("mailroom_store_commit_duration_seconds_sum") > 0.0);
    // Per smtp session at least: greeting, EHLO, STARTTLS's 220, EHLO again, MAIL, RCPT, data, QUIT.
    assert!(delta(r#"mailroom_smtp_replies_total{class="2xx"}"#) >= 4.0 * 7.0, "{after}");
    assert_eq!(delta(r#"mailroom_smtp_replies_total{class="3xx"}"#), 4.0, "one 354 per message");
    assert!(delta(r#"mailroom_smtp_replies_total{class="5xx"}"#) >= 2.0, "550 and 535: {after}");
}

/// Fails unless `tool` runs, or says why the caller should skip (only with the opt-out set).
fn tool_missing(tool: &str) -> bool {
    let found = Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if !found && std::env::var_os("MAILROOM_SKIP_PROMETHEUS").is_some_and(|v| v == "1") {
        eprintln!("{tool} not installed and MAILROOM_SKIP_PROMETHEUS=1: skipped");
        return true;
    }
    assert!(found, "{tool} is not installed (Debian package prometheus); MAILROOM_SKIP_PROMETHEUS=1 skips");
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_finds_nothing_to_lint() {
    if tool_missing("promtool") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let h = mailroom_server::metrics::install();
    let server = Running::start().await;
    server.send(&[ALICE, "nobody@example.test"]).await;
    server.shutdown().await;
    let text = h.render();
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).expect("write to promtool");
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool: {stdout}{stderr}\non:\n{text}");
    assert!(stdout.trim().is_empty() && stderr.trim().is_empty(), "promtool: {stdout}{stderr}\non:\n{text}");
}

/// `/metrics` as the web listener serves it: the same render function, text format 0.0.4. Serves until
/// the task is aborted; each request is read up to its blank line (bounded) and answered once.
async fn serve_metrics(h: Handle) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let h = h.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
                    match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
                        Ok(Ok(n)) if n > 0 => request.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                let body = h.render();
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    mailroom_server::metrics::CONTENT_TYPE,
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(body.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (addr, task)
}

/// A Prometheus we started: killed (by its PID, through its `Child`) and reaped when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus scraping `target` every second, storing in a temporary directory, its web API
    /// on a free loopback port.
    fn start(target: SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  \
                 - job_name: mailroom\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        Prometheus { child, addr, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The value of an instant query's single series; None while Prometheus is not up or has no sample.
    async fn query(&self, promql: &str) -> Option<f64> {
        let body = http_get(self.addr, &format!("/api/v1/query?query={}", percent_encode(promql))).await?;
        let json: serde_json::Value = serde_json::from_str(&body).ok()?;
        let result = json["data"]["result"].as_array()?;
        result.first()?["value"][1].as_str()?.parse().ok()
    }

    /// Waits (bounded by [`PROMETHEUS_WAIT`]) until the query gives a value at least `min`.
    async fn wait_for(&mut self, promql: &str, min: f64) -> f64 {
        let deadline = Instant::now() + PROMETHEUS_WAIT;
        loop {
            if let Some(v) = self.query(promql).await.filter(|v| *v >= min) {
                return v;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("prometheus exited ({status}):\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "{promql} never reached {min}; prometheus log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// `s` as a URL query value: everything but letters, digits and `_` percent-encoded.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b == b'_' { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// A loopback address with a port nobody listened on a moment ago.
fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// The body of a GET, None on any failure (Prometheus not listening yet). Bounded by [`WAIT`].
async fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let get = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        s.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        s.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8(response).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.0 200").then(|| body.to_string())
    };
    tokio::time::timeout(WAIT, get).await.ok().flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_metrics_and_sees_the_message_counter_rise() {
    if tool_missing("prometheus") {
        return;
    }
    let _serial = SERIAL.lock().await;
    let h = mailroom_server::metrics::install();
    let server = Running::start().await;
    let (target, http) = serve_metrics(h.clone()).await;
    let mut prometheus = Prometheus::start(target);
    // The target is up and its counter scraped (whatever earlier tests in this process left in it).
    prometheus.wait_for(r#"up{job="mailroom"}"#, 1.0).await;
    let start = prometheus.wait_for(names::MESSAGES_RECEIVED, 0.0).await;
    for _ in 0..2 {
        assert_eq!(server.send(&[ALICE]).await, 1);
    }
    let risen = prometheus.wait_for(names::MESSAGES_RECEIVED, start + 2.0).await;
    assert_eq!(risen, start + 2.0, "exactly the two messages sent");
    // And a family with labels, through PromQL.
    let tls = r#"sum(mailroom_tls_handshakes_total)"#;
    assert!(prometheus.query(tls).await.is_some_and(|v| v >= 2.0), "{:?}", prometheus.query(tls).await);
    drop(prometheus);
    http.abort();
    server.shutdown().await;
}
