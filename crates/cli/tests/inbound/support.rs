//! The inbound test rig: a real DNS server (Debian's `knotd`) authoritative for `test.` with the SPF,
//! DMARC and DKIM records of [`ZONE`] on a free loopback port, the mailroom under test asking it
//! (`[dns] servers`), and the Python references (python3-spf, python3-authres, python3-dkim).
//!
//! A missing tool fails the test unless `MAILROOM_SKIP_INBOUND=1` is set (CI never sets it).

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Opts, Server, Smtp};

/// The system Python, with Debian's spf, authres and dkim modules.
pub const PYTHON: &str = "/usr/bin/python3";

/// The host name of the mailroom under test: its authserv-id.
pub const HOSTNAME: &str = "mx.e2e.test";

/// The local recipient of every test message.
pub const RCPT: &str = "bob@example.test";

/// The test zone. The tests connect from 127.0.0.1. SPF: `pass.test` allows it; `fail`, `softfail`,
/// `neutral` end in `-all`, `~all`, `?all`; `none.test` exists without SPF; `permerror.test` has 11
/// DNS-querying terms, `void.test` 3 void lookups; `helo.test` is a HELO name that passes. DMARC:
/// `pass.test` and `reject.test` publish p=reject, `quarantine.test` p=quarantine; `dkim.test` publishes
/// p=reject with an SPF record that fails us, and the DKIM key `s1._domainkey.dkim.test` ([`DKIM_KEY`]).
/// Names under other zones are refused by knot (REFUSED: `temperror`).
pub fn zone() -> String {
    let many: String = (1..=11).map(|i| format!("a:h{i}.permerror.test ")).collect();
    let hosts: String = (1..=11).map(|i| format!("h{i}.permerror A 192.0.2.{i}\n")).collect();
    format!(
        "$ORIGIN test.
$TTL 5
@           SOA ns.test. hostmaster.test. 1 3600 600 86400 5
@           NS ns.test.
ns          A 127.0.0.1
pass        TXT \"v=spf1 ip4:127.0.0.1 -all\"
_dmarc.pass TXT \"v=DMARC1; p=reject\"
fail        TXT \"v=spf1 ip4:192.0.2.1 -all\"
softfail    TXT \"v=spf1 ip4:192.0.2.1 ~all\"
neutral     TXT \"v=spf1 ip4:192.0.2.1 ?all\"
none        A 192.0.2.9
permerror   TXT \"v=spf1 {many}-all\"
{hosts}void        TXT \"v=spf1 a:nx1.void.test a:nx2.void.test a:nx3.void.test ip4:127.0.0.1 -all\"
helo        TXT \"v=spf1 ip4:127.0.0.1 -all\"
reject      TXT \"v=spf1 ip4:192.0.2.1 -all\"
_dmarc.reject TXT \"v=DMARC1; p=reject\"
quarantine  TXT \"v=spf1 ip4:192.0.2.1 -all\"
_dmarc.quarantine TXT \"v=DMARC1; p=quarantine\"
dkim        TXT \"v=spf1 ip4:192.0.2.1 -all\"
_dmarc.dkim TXT \"v=DMARC1; p=reject; adkim=s\"
s1._domainkey.dkim TXT ( {} )
arc._domainkey.fwd TXT ( {} )
",
        dkim_record(),
        arc_record()
    )
}

/// The DKIM test key (ed25519, RFC 8463), as dkimpy takes it: the base64 of the 32-byte private seed.
pub const DKIM_KEY: &str = "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=";
/// Its public half (RFC 8463 Appendix A's example key pair).
pub const DKIM_PUBLIC: &str = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";

/// The key record.
fn dkim_record() -> String {
    format!("\"v=DKIM1; k=ed25519; p={DKIM_PUBLIC}\"")
}

/// The ARC sealer's key record (`arc._domainkey.fwd.test`, RSA 2048: `tests/inbound/arc.key`, public half
/// in `arc.pub`), split in quoted strings of at most 255 octets.
fn arc_record() -> String {
    let public = std::fs::read_to_string(script("arc.pub")).unwrap();
    let record = format!("v=DKIM1; k=rsa; p={}", public.trim());
    record.as_bytes().chunks(200).map(|c| format!("\"{}\"", String::from_utf8_lossy(c))).collect::<Vec<_>>().join(" ")
}

/// `message` (CRLF, carrying an Authentication-Results field of `fwd.test`) sealed by dkimpy as the
/// forwarder fwd.test (ARC instance 1).
pub fn arc_seal(message: &str) -> String {
    pipe_python("arc_seal.py", &["fwd.test", "arc", script("arc.key").to_str().unwrap(), "fwd.test"], message)
}

/// True when a missing tool may skip the test (never in CI).
pub fn may_skip() -> bool {
    std::env::var_os("MAILROOM_SKIP_INBOUND").is_some()
}

/// Fails (or, with the opt-out set, returns false) when `tool probe...` does not run.
pub fn have(tool: &str, probe: &[&str]) -> bool {
    let ok =
        Command::new(tool).args(probe).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if !ok {
        assert!(may_skip(), "{tool} {probe:?} failed: install knot, python3-spf, python3-authres, python3-dkim (or set MAILROOM_SKIP_INBOUND=1)");
        eprintln!("skipping: {tool} {probe:?} failed (MAILROOM_SKIP_INBOUND is set)");
    }
    ok
}

/// `tests/inbound/NAME` in the repository.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/inbound").join(name)
}

/// Runs `/usr/bin/python3 tests/inbound/SCRIPT ARGS...` (bounded); its stdout, or a panic with stderr.
pub fn python(name: &str, args: &[&str]) -> String {
    let mut child = Command::new(PYTHON)
        .arg(script(name))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name} timed out");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{name} {args:?}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

fn knotd() -> &'static str {
    if Path::new("/usr/sbin/knotd").exists() {
        "/usr/sbin/knotd"
    } else {
        "knotd"
    }
}

/// A running `knotd` authoritative for `test.`, killed (by its pid) on drop.
pub struct Dns {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Dns {
    /// Starts knotd with [`zone`] and waits until it answers; None only when skipping is allowed.
    pub fn start() -> Option<Dns> {
        if !have(knotd(), &["--version"]) {
            return None;
        }
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("test.zone"), zone()).unwrap();
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

    /// Sends an SOA query for `test.` until a NOERROR answer comes (bounded).
    fn wait_answering(&mut self) -> bool {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let query: &[u8] = b"\x4d\x52\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04test\x00\x00\x06\x00\x01";
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            let _ = sock.send_to(query, ("127.0.0.1", self.port));
            let mut buf = [0u8; 512];
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                if n > 12 && buf[..2] == query[..2] && buf[2] & 0x80 != 0 && buf[3] & 0x0f == 0 && buf[7] > 0 {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free for both UDP and TCP on 127.0.0.1 a moment ago.
pub fn free_udp_tcp_port() -> u16 {
    loop {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The mailroom under test (host name [`HOSTNAME`], domain example.test, user [`RCPT`]) asking `dns`,
/// with `inbound` as the body of its `[inbound]` section.
pub fn mailroom(dns: &str, inbound: &str) -> Server {
    let config = format!("[dns]\nservers = [\"{dns}\"]\n\n[inbound]\n{inbound}\n");
    Server::start_with_users(Opts::example().with_config(&config), &[RCPT])
}

/// One SMTP transaction from 127.0.0.1: EHLO `helo`, MAIL FROM `from` (empty: the null path), RCPT
/// [`RCPT`], DATA `message` (CRLF text); returns the MAIL reply and, when MAIL was accepted, the final one.
pub fn send(server: &Server, helo: &str, from: &str, message: &str) -> (u16, Option<crate::common::Reply>) {
    let mut s = Smtp::connect(server.port);
    assert_eq!(s.read_reply().code, 220);
    s.expect(&format!("EHLO {helo}"), 250);
    let mail = s.cmd(&format!("MAIL FROM:<{from}>"));
    if mail.code != 250 {
        return (mail.code, Some(mail));
    }
    s.expect(&format!("RCPT TO:<{RCPT}>"), 250);
    let end = s.data(message.as_bytes());
    let _ = s.cmd("QUIT");
    (250, Some(end))
}

/// A plain message from `from` (the From header's address).
pub fn message(from: &str, subject: &str, extra_headers: &str) -> String {
    format!(
        "{extra_headers}From: <{from}>\r\nTo: <{RCPT}>\r\nSubject: {subject}\r\nMessage-ID: <{subject}@e2e.test>\r\n\
         Date: Mon, 30 Nov 2026 18:00:00 +0000\r\n\r\nHello.\r\n"
    )
}

/// The files in `<maildir>/<folder>new/` of [`RCPT`] (folder "" or ".Junk/"), once no message is in
/// flight (a 250 means durable in the store's journal and named in new/; durable there a moment later).
pub fn stored(server: &Server, folder: &str) -> Vec<PathBuf> {
    crate::common::settle_data(&server.data);
    crate::common::files_in(&server.maildir(RCPT).join(folder).join("new"))
}

/// The unfolded value of every `name` field in a stored message's header section.
pub fn fields(msg: &[u8], name: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(msg);
    let head = text.split("\n\n").next().unwrap_or("");
    let mut out: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(c) = current.as_mut() {
                c.push(' ');
                c.push_str(line.trim());
            }
            continue;
        }
        if let Some(c) = current.take() {
            out.push(c);
        }
        if let Some((n, v)) = line.split_once(':') {
            if n.trim().eq_ignore_ascii_case(name) {
                current = Some(v.trim().to_string());
            }
        }
    }
    out.extend(current);
    out
}

/// The names of the header fields of a stored message, in order.
pub fn field_names(msg: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(msg);
    let head = text.split("\n\n").next().unwrap_or("").to_string();
    head.lines()
        .filter(|l| !l.starts_with([' ', '\t']))
        .filter_map(|l| l.split_once(':').map(|(n, _)| n.trim().to_string()))
        .collect()
}

/// `message` (CRLF) signed by dkimpy with [`DKIM_KEY`] as `s1._domainkey.dkim.test`.
pub fn dkim_sign(message: &str) -> String {
    pipe_python("dkim_sign.py", &["dkim.test", "s1", DKIM_KEY], message)
}

/// Runs `/usr/bin/python3 tests/inbound/SCRIPT ARGS...` with `input` on stdin; its stdout.
fn pipe_python(name: &str, args: &[&str], input: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(PYTHON)
        .arg(script(name))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}
