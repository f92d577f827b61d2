//! The outbound test rig: a real DNS server (Debian's `knotd`) serving the zone `test.` on a free port of
//! 127.0.0.1, scripted receiving MTAs (`tests/outbound/receiver.py`, on aiosmtpd) on 127.0.0.2, 127.0.0.3
//! ... on one common port (the `[delivery] port` of the mailroom under test), and the mailroom under test
//! with a submission listener and a user with a password.
//!
//! Every process a test starts is stopped by its own pid when its guard drops. A missing tool fails the
//! test unless `MAILROOM_SKIP_OUTBOUND=1` is set (CI never sets it; `scripts/install-test-deps` installs
//! them).

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::{files_in, poll, user_add_password, Opts, Reply, Server, Smtp};

/// The Python with aiosmtpd (Debian's python3-aiosmtpd): the system one, not a pyenv shim.
pub const PYTHON: &str = "/usr/bin/python3";

/// The password of every test user.
pub const PASSWORD: &str = "outbound-pw";

/// The authenticated sender of the tests, a local user of the mailroom under test.
pub const ALICE: &str = "alice@example.test";

/// Longest wait for a delivery or a DSN (retries with a 1 s backoff included).
pub const DELIVERY_WAIT: Duration = Duration::from_secs(30);

/// True when the tests may skip because a tool is missing (never in CI).
pub fn may_skip() -> bool {
    std::env::var_os("MAILROOM_SKIP_OUTBOUND").is_some()
}

/// `tests/outbound/NAME` in the repository.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/outbound").join(name)
}

/// Fails (or, with the opt-out set, returns false) when TOOL cannot be run.
pub fn have(tool: &str, probe: &[&str]) -> bool {
    let ok =
        Command::new(tool).args(probe).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if !ok {
        assert!(may_skip(), "{tool} is missing: run scripts/install-test-deps (or set MAILROOM_SKIP_OUTBOUND=1)");
        eprintln!("skipping: {tool} missing (MAILROOM_SKIP_OUTBOUND is set)");
    }
    ok
}

/// A port free on 127.0.0.2 ... 127.0.0.6 (the receivers' addresses) at the moment of the call.
pub fn mx_port() -> u16 {
    for _ in 0..50 {
        let l = TcpListener::bind("127.0.0.2:0").expect("bind 127.0.0.2:0");
        let port = l.local_addr().unwrap().port();
        let all_free = (3..=6).all(|last| TcpListener::bind((Ipv4Addr::new(127, 0, 0, last), port)).is_ok());
        if all_free {
            return port;
        }
    }
    panic!("no port free on 127.0.0.2-6");
}

/// The test zone: `mx.test` has two MX hosts (10 -> 127.0.0.2, 20 -> 127.0.0.3), `a-only.test` only an A
/// record (127.0.0.4), `nullmx.test` a null MX (RFC 7505), `pf.test` an MX on 127.0.0.5 (Postfix),
/// `one.test` a single MX on 127.0.0.2; every other name under `test.` does not exist (NXDOMAIN).
pub const ZONE: &str = "$ORIGIN test.
$TTL 5
@       SOA ns.test. hostmaster.test. 1 3600 600 86400 5
@       NS ns.test.
ns      A 127.0.0.1
mx      MX 10 mx1.mx.test.
mx      MX 20 mx2.mx.test.
mx1.mx  A 127.0.0.2
mx2.mx  A 127.0.0.3
a-only  A 127.0.0.4
nullmx  MX 0 .
pf      MX 10 smtp.pf.test.
smtp.pf A 127.0.0.5
one     MX 10 mx1.mx.test.
";

/// knotd lives in /usr/sbin, which an unprivileged user's PATH may lack.
fn knotd() -> &'static str {
    if Path::new("/usr/sbin/knotd").exists() {
        "/usr/sbin/knotd"
    } else {
        "knotd"
    }
}

/// A running `knotd` authoritative for `test.`, killed on drop.
pub struct Dns {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Dns {
    /// Starts knotd with [`ZONE`] and waits until it answers; None only when skipping is allowed.
    pub fn start() -> Option<Dns> {
        Dns::start_zone(ZONE)
    }

    /// Like [`Dns::start`] with another zone file for `test.`.
    pub fn start_zone(zone: &str) -> Option<Dns> {
        if !have(knotd(), &["--version"]) {
            return None;
        }
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("test.zone"), zone).unwrap();
            let port = free_udp_tcp_port();
            let d = dir.path().display();
            let conf = format!(
                "server:\n    rundir: \"{d}\"\n    listen: 127.0.0.1@{port}\n\
                 database:\n    storage: \"{d}/db\"\n\
                 template:\n  - id: default\n    storage: \"{d}\"\n    file: \"%s.zone\"\n    zonefile-sync: -1\n    \
                 zonefile-load: whole\n    journal-content: none\n\
                 zone:\n  - domain: test.\n\
                 log:\n  - target: stderr\n    any: warning\n"
            );
            let path = dir.path().join("knot.conf");
            std::fs::write(&path, conf).unwrap();
            let log = std::fs::File::create(dir.path().join("knot.log")).unwrap();
            let child = Command::new(knotd())
                .arg("-c")
                .arg(&path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn knotd");
            let mut dns = Dns { child, port, dir };
            if dns.wait_answering() {
                return Some(dns);
            }
            let log = std::fs::read_to_string(dns.dir.path().join("knot.log")).unwrap_or_default();
            eprintln!("knotd on port {port} did not answer, retrying:\n{log}");
        }
        panic!("knotd did not start");
    }

    /// `127.0.0.1:PORT`, for `[dns] servers`.
    pub fn server(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Sends an SOA query for `test.` until an answer with the right id and NOERROR comes (bounded).
    fn wait_answering(&mut self) -> bool {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        // Header: id 0x4d52, RD, one question; then "test." SOA IN.
        let query: &[u8] = b"\x4d\x52\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04test\x00\x00\x06\x00\x01";
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            let _ = sock.send_to(query, ("127.0.0.1", self.port));
            let mut buf = [0u8; 512];
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                // Same id, a response, RCODE 0, at least one answer.
                if n > 12 && buf[..2] == query[..2] && buf[2] & 0x80 != 0 && buf[3] & 0x0f == 0 && buf[7] > 0 {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port free for both UDP and TCP on 127.0.0.1 a moment ago.
fn free_udp_tcp_port() -> u16 {
    loop {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// One message a receiver kept: its envelope (JSON) and its bytes.
#[derive(Debug, Clone)]
pub struct Got {
    pub env: serde_json::Value,
    pub eml: Vec<u8>,
}

impl Got {
    pub fn rcpts(&self) -> Vec<String> {
        self.env["rcpt_tos"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
    }
    /// The local address the receiver got it on (which MX host).
    pub fn local(&self) -> String {
        self.env["local"].as_str().unwrap_or_default().to_string()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.eml).into_owned()
    }
    /// The value of the first header NAME (unfolded only to its first line).
    pub fn header(&self, name: &str) -> Option<String> {
        header(&self.eml, name)
    }
}

/// The first line of header NAME in a message (case-insensitive name), before the body.
pub fn header(msg: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(msg);
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case(name) {
                return Some(v.trim().to_string());
            }
        }
    }
    None
}

/// A scripted receiving MTA (`tests/outbound/receiver.py`) on one or more addresses and one port;
/// everything it gets goes to `out` (shared by restarts). Killed (by pid) on drop.
pub struct Receiver {
    child: Option<Child>,
    pub out: PathBuf,
    pub port: u16,
    addrs: Vec<String>,
    flags: Vec<String>,
}

impl Receiver {
    /// Starts a receiver on each of ADDRS (e.g. "127.0.0.2") at PORT with FLAGS (`--dsn`, `--size N`).
    pub fn start(out: &Path, addrs: &[&str], port: u16, flags: &[&str]) -> Receiver {
        let mut r = Receiver {
            child: None,
            out: out.to_path_buf(),
            port,
            addrs: addrs.iter().map(|s| s.to_string()).collect(),
            flags: flags.iter().map(|s| s.to_string()).collect(),
        };
        r.up();
        r
    }

    /// Starts it (again); waits for READY.
    pub fn up(&mut self) {
        assert!(self.child.is_none(), "receiver already running");
        std::fs::create_dir_all(&self.out).unwrap();
        let mut cmd = Command::new(PYTHON);
        cmd.arg(script("receiver.py")).arg(&self.out);
        for a in &self.addrs {
            cmd.arg(format!("{a}:{}", self.port));
        }
        cmd.args(&self.flags).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null());
        // Right after a kill the old process may still hold the port for a moment: retry a few times.
        for attempt in 0..20 {
            let mut child = cmd.spawn().expect("start tests/outbound/receiver.py (python3-aiosmtpd)");
            let stdout = child.stdout.take().unwrap();
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let mut line = String::new();
                let _ = BufReader::new(stdout).read_line(&mut line);
                let _ = tx.send(line);
            });
            match rx.recv_timeout(Duration::from_secs(15)) {
                Ok(l) if l.trim() == "READY" => {
                    self.child = Some(child);
                    return;
                }
                other => {
                    let _ = child.kill();
                    let _ = child.wait();
                    assert!(attempt < 19, "receiver on {:?}:{} did not start: {other:?}", self.addrs, self.port);
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// Kills it (SIGKILL, by pid): the addresses refuse connections until [`Receiver::up`].
    pub fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn is_up(&self) -> bool {
        self.child.is_some()
    }

    /// Every message kept so far (in `out`, from any run of any receiver sharing it), oldest first.
    pub fn messages(&self) -> Vec<Got> {
        messages_in(&self.out)
    }

    /// Waits until at least N messages are there; returns them all.
    pub fn wait_messages(&self, n: usize, limit: Duration) -> Vec<Got> {
        poll(limit, Duration::from_millis(50), || {
            let m = self.messages();
            (m.len() >= n).then_some(m)
        })
        .unwrap_or_else(|| panic!("expected {n} message(s) at the receiver, got {:#?}", self.messages()))
    }

    /// Connections accepted so far (all addresses, all runs sharing `out`).
    pub fn connections(&self) -> usize {
        std::fs::read_to_string(self.out.join("connections.log")).unwrap_or_default().lines().count()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.down();
    }
}

/// The messages in a receiver's output directory, ordered by modification time.
pub fn messages_in(out: &Path) -> Vec<Got> {
    let mut emls: Vec<(std::time::SystemTime, PathBuf)> = files_in(out)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .map(|p| (std::fs::metadata(&p).and_then(|m| m.modified()).unwrap(), p))
        .collect();
    emls.sort();
    emls.into_iter()
        .map(|(_, p)| {
            let json = std::fs::read_to_string(p.with_extension("json")).unwrap();
            Got { env: serde_json::from_str(&json).unwrap(), eml: std::fs::read(&p).unwrap() }
        })
        .collect()
}

/// The config of the mailroom under test: plaintext AUTH on loopback, delivery to PORT with a 1 s
/// backoff, DNS at DNS; `delivery` adds lines to `[delivery]`, `more` whole sections.
/// `delivery` may set its own `min_backoff` and `max_backoff`.
pub fn config(dns: &Dns, port: u16, delivery: &str, more: &str) -> String {
    let backoff = if delivery.contains("min_backoff") { "" } else { "min_backoff = \"1s\"\nmax_backoff = \"2s\"\n" };
    format!(
        "[auth]\nallow_plaintext_auth = true\nfailure_delay = \"100ms\"\n\n\
         [delivery]\nport = {port}\n{backoff}{delivery}\n\n\
         [dns]\nservers = [\"{}\"]\n\n{more}",
        dns.server()
    )
}

/// Waits until the log says ID was deferred.
pub fn wait_deferred(server: &Server, id: &str) {
    poll(DELIVERY_WAIT, Duration::from_millis(50), || {
        server
            .log_text()
            .lines()
            .any(|l| l.contains(&format!("id={id}")) && l.contains("status=deferred"))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("{id} was never deferred:\n{}", server.log_text()));
}

/// The mailroom under test: domain example.test, host name mx.e2e.test, submission listener, user
/// alice@example.test (password [`PASSWORD`]) and the given extra users.
pub fn mailroom(config: String, users: &[&str]) -> Server {
    let users: Vec<String> = users.iter().map(|s| s.to_string()).collect();
    Server::start_prepared(Opts::example().with_submission().with_config(&config), move |data| {
        user_add_password(data, ALICE, PASSWORD);
        for u in &users {
            user_add_password(data, u, PASSWORD);
        }
    })
}

/// Everything a test needs: the DNS server, the delivery port, a receivers' directory.
pub struct Rig {
    pub dns: Dns,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Rig {
    /// None only when a tool is missing and skipping is allowed.
    pub fn new() -> Option<Rig> {
        if !have(PYTHON, &["-c", "import aiosmtpd"]) {
            return None;
        }
        let dns = Dns::start()?;
        Some(Rig { dns, port: mx_port(), dir: tempfile::tempdir().unwrap() })
    }

    /// A receiver on ADDRS at the rig's delivery port, its output in `<dir>/NAME`.
    pub fn receiver(&self, name: &str, addrs: &[&str], flags: &[&str]) -> Receiver {
        Receiver::start(&self.dir.path().join(name), addrs, self.port, flags)
    }

    pub fn config(&self, delivery: &str, more: &str) -> String {
        config(&self.dns, self.port, delivery, more)
    }
}

/// A session on the submission port, authenticated as USER (AUTH PLAIN, allowed without TLS on loopback by
/// the test config).
pub fn submission(server: &Server, user: &str) -> Smtp {
    let mut s = Smtp::connect(server.submission_port.expect("submission listener"));
    let g = s.read_reply();
    assert_eq!(g.code, 220, "{g:?}");
    s.ehlo();
    let blob = mailroom_proto::base64::encode(format!("\0{user}\0{PASSWORD}").as_bytes());
    s.expect(&format!("AUTH PLAIN {blob}"), 235);
    s
}

/// The replies of one transaction.
#[derive(Debug)]
pub struct Sent {
    pub rcpts: Vec<Reply>,
    /// The reply to the end of data (None when no recipient was accepted).
    pub data: Option<Reply>,
}

impl Sent {
    /// The queue id from `250 2.0.0 Ok: queued as <id>` (or `stored as`).
    pub fn id(&self) -> String {
        let d = self.data.as_ref().expect("data sent");
        assert_eq!(d.code, 250, "{d:?}");
        d.text().rsplit(' ').next().unwrap().to_string()
    }
}

/// One transaction on S: MAIL FROM:<FROM> MAIL_PARAMS, one RCPT per (address, params), and DATA with a
/// message whose Subject is SUBJECT, when any recipient was accepted.
pub fn transaction(s: &mut Smtp, from: &str, mail_params: &str, rcpts: &[(&str, &str)], subject: &str) -> Sent {
    let sp = if mail_params.is_empty() { "" } else { " " };
    s.expect(&format!("MAIL FROM:<{from}>{sp}{mail_params}"), 250);
    let mut replies = Vec::new();
    for (to, params) in rcpts {
        let sp = if params.is_empty() { "" } else { " " };
        replies.push(s.cmd(&format!("RCPT TO:<{to}>{sp}{params}")));
    }
    if !replies.iter().any(|r| r.code == 250) {
        s.expect("RSET", 250);
        return Sent { rcpts: replies, data: None };
    }
    let to: Vec<&str> = rcpts.iter().map(|(a, _)| *a).collect();
    let body = format!(
        "From: <{from}>\r\nTo: {}\r\nSubject: {subject}\r\nMessage-ID: <{}@outbound.test>\r\n\r\nHello from the outbound test.\r\n",
        to.join(", "),
        subject.replace(' ', "-")
    );
    let data = s.data(body.as_bytes());
    Sent { rcpts: replies, data: Some(data) }
}

/// Alice sends one message through the submission port to RCPTS (no parameters); asserts every RCPT and
/// the data got 250; returns the queue id.
pub fn send(server: &Server, rcpts: &[&str], subject: &str) -> String {
    let mut s = submission(server, ALICE);
    let list: Vec<(&str, &str)> = rcpts.iter().map(|r| (*r, "")).collect();
    let sent = transaction(&mut s, ALICE, "", &list, subject);
    for (r, reply) in rcpts.iter().zip(&sent.rcpts) {
        assert_eq!(reply.code, 250, "RCPT {r}: {reply:?}\n{}", server.log_text());
    }
    let _ = s.cmd("QUIT");
    sent.id()
}

/// Files in ADDR's Maildir new/ on SERVER, waiting (bounded) until there are at least N.
pub fn wait_mailbox(server: &Server, addr: &str, n: usize, limit: Duration) -> Vec<PathBuf> {
    poll(limit, Duration::from_millis(50), || {
        let f = server.new_files(addr);
        (f.len() >= n).then_some(f)
    })
    .unwrap_or_else(|| {
        panic!(
            "{addr}: expected {n} message(s), found {:?}\nserver log:\n{}",
            server.new_files(addr),
            server.log_text()
        )
    })
}

/// The DSN in FILE, parsed by Python's `email` (`tests/outbound/dsn.py`).
pub fn parse_dsn(file: &Path) -> serde_json::Value {
    let out = Command::new(PYTHON).arg(script("dsn.py")).arg(file).output().expect("python3");
    assert!(
        out.status.success(),
        "dsn.py {}: {}\n--- the file:\n{}",
        file.display(),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&std::fs::read(file).unwrap_or_default())
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Files under `<data>/queue/env` (one per queued message).
pub fn queued(server: &Server) -> Vec<PathBuf> {
    files_in(&server.data.join("queue/env")).into_iter().filter(|p| p.extension().is_none_or(|e| e != "tmp")).collect()
}

/// Waits until the queue is empty (every recipient final).
pub fn wait_queue_empty(server: &Server, limit: Duration) {
    let ok = poll(limit, Duration::from_millis(100), || queued(server).is_empty().then_some(()));
    assert!(ok.is_some(), "queue not empty: {:?}\n{}", queued(server), server.log_text());
}

/// Waits until the server's log holds NEEDLE.
pub fn wait_log(server: &Server, needle: &str, limit: Duration) -> String {
    poll(limit, Duration::from_millis(50), || {
        let t = server.log_text();
        t.contains(needle).then_some(t)
    })
    .unwrap_or_else(|| panic!("{needle:?} never appeared in the log:\n{}", server.log_text()))
}
