//! Started as root (issue 14): `[server] user` drops to that user once port 25 is bound (shown from
//! /proc: uid/gid, no supplementary group, no capability, in every thread), the data directory is handed
//! over and mail is still delivered; root without `user` warns once; admin commands run as root write
//! as the data directory's owner; `[store] group` lets a Dovecot whose mail processes run as another
//! user in that group read a delivered message over IMAP.
//!
//! These need root (and dovecot-imapd for the last one): without them they FAIL, unless
//! `MAILROOM_SKIP_PRIVILEGED=1` is set (CI runs as root and never sets it).

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Smtp, WAIT};

const SKIP_PRIVILEGED_ENV: &str = "MAILROOM_SKIP_PRIVILEGED";
/// The unprivileged user the server drops to (Debian's `nobody`, uid 65534, group `nogroup`).
const TEST_USER: &str = "nobody";
const TEST_UID: u32 = 65534;
const TEST_GID: u32 = 65534;
/// The store group of the Dovecot test (Debian's `mail`, gid 8) and the user Dovecot's mail processes
/// run as (`mail`, uid 8, in that group).
const STORE_GROUP: &str = "mail";
const STORE_GID: u32 = 8;

/// True when the test can run as root; false (after a notice) when skipping is asked for.
fn is_root_or_skip(what: &str) -> bool {
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(1);
    if uid == 0 {
        return true;
    }
    if std::env::var(SKIP_PRIVILEGED_ENV).is_ok_and(|v| v == "1") {
        eprintln!("NOTICE: {what} needs root; skipped because {SKIP_PRIVILEGED_ENV}=1");
        return false;
    }
    panic!("{what} needs root (set {SKIP_PRIVILEGED_ENV}=1 to skip this test where that is expected)");
}

/// A child process killed and reaped on drop (only the one this test started, by its handle).
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A temporary directory the unprivileged users can traverse (whatever mode tempdir gave it).
fn open_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Starts `mailroom serve --config CONFIG` and waits for its "listening" log line.
fn serve(dir: &Path, config: &str) -> (Guard, PathBuf) {
    let cfg = dir.join("mailroom.toml");
    std::fs::write(&cfg, config).unwrap();
    let log = dir.join("serve.log");
    let child = Command::new(common::bin())
        .arg("serve")
        .arg("--config")
        .arg(&cfg)
        .env("MAILROOM_LOG", "info")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut guard = Guard(child);
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("listening") {
            return (guard, log);
        }
        if let Some(st) = guard.0.try_wait().unwrap() {
            panic!("mailroom serve exited ({st}):\n{text}");
        }
        assert!(start.elapsed() < WAIT, "mailroom serve did not listen within {WAIT:?}:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Delivers one message to `to` over SMTP at `addr`.
fn deliver(addr: &str, to: &str, subject: &str) {
    let stream = TcpStream::connect_timeout(&addr.parse().unwrap(), WAIT).expect("connect");
    let mut s = Smtp::from_stream(stream).unwrap();
    assert_eq!(s.read_reply().code, 220);
    s.ehlo();
    s.expect("MAIL FROM:<sender@remote.test>", 250);
    s.expect(&format!("RCPT TO:<{to}>"), 250);
    let r = s.data(format!("From: sender@remote.test\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n").as_bytes());
    assert_eq!(r.code, 250, "{r:?}");
}

/// `Key:` values of every thread's /proc status.
fn thread_statuses(pid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path().join("status");
        if let Ok(text) = std::fs::read_to_string(&path) {
            out.push(text);
        }
    }
    assert!(!out.is_empty(), "no thread status for {pid}");
    out
}

fn field<'a>(status: &'a str, key: &str) -> Vec<&'a str> {
    let line = status.lines().find(|l| l.starts_with(&format!("{key}:"))).unwrap_or_else(|| panic!("no {key}"));
    line[key.len() + 1..].split_whitespace().collect()
}

#[test]
fn serve_as_root_with_user_drops_everything_on_port_25_and_delivers() {
    if !is_root_or_skip("the privilege-drop test") {
        return;
    }
    let dir = open_tempdir();
    let data = dir.path().join("data");
    // Added as root before the start: the server hands the whole data directory over.
    common::user_add(&data, "bob@example.test");
    let addr = "127.0.0.5:25";
    let config = format!(
        "[server]\nlisten = [\"{addr}\"]\ndomains = [\"example.test\"]\nhostname = \"mx.test\"\ndata_dir = \"{}\"\nuser = \"{TEST_USER}\"\n",
        data.display()
    );
    let (server, log) = serve(dir.path(), &config);
    let pid = server.0.id();
    for status in thread_statuses(pid) {
        assert_eq!(field(&status, "Uid"), [TEST_UID.to_string().as_str(); 4], "{status}");
        assert_eq!(field(&status, "Gid"), [TEST_GID.to_string().as_str(); 4], "{status}");
        assert!(field(&status, "Groups").is_empty(), "supplementary groups left:\n{status}");
        for cap in ["CapEff", "CapPrm", "CapAmb"] {
            assert_eq!(field(&status, cap), ["0000000000000000"], "{cap} not empty:\n{status}");
        }
    }
    deliver(addr, "bob@example.test", "dropped");
    common::settle_data(&data);
    let msgs = common::files_in(&common::maildir(&data, "bob@example.test").join("new"));
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    let meta = std::fs::metadata(&msgs[0]).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (TEST_UID, 0o600), "the message's owner and mode");
    for p in ["", "users.toml", "queue/server.pid", "tls", "tmp"] {
        assert_eq!(std::fs::metadata(data.join(p)).unwrap().uid(), TEST_UID, "{p} not handed over");
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("dropped root privileges"), "{text}");
    assert!(!text.contains("running as root"), "warned although it dropped:\n{text}");
}

#[test]
fn serve_as_root_without_user_warns_once() {
    if !is_root_or_skip("the root-warning test") {
        return;
    }
    let dir = open_tempdir();
    let port = common::free_port();
    let config =
        format!("[server]\nlisten = [\"127.0.0.1:{port}\"]\ndata_dir = \"{}\"\n", dir.path().join("data").display());
    let (server, log) = serve(dir.path(), &config);
    // Still serving as root.
    assert_eq!(field(&thread_statuses(server.0.id())[0], "Uid")[0], "0");
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches("running as root").count(), 1, "{text}");
}

/// Mode bits (with set-group-ID) and group of `p`.
fn mode_group(p: &Path) -> (u32, u32) {
    let m = std::fs::metadata(p).unwrap();
    (m.mode() & 0o7777, m.gid())
}

/// Writes a minimal dovecot.conf: IMAP on `port`, one static user whose mail processes run as `mail`,
/// reading the mailroom Maildirs (indexes and control files in `dir`: the mailboxes stay read-only).
fn dovecot_conf(dir: &Path, data: &Path, port: u16) -> PathBuf {
    for sub in ["index", "control", "home"] {
        let p = dir.join(sub);
        std::fs::create_dir_all(&p).unwrap();
        std::os::unix::fs::chown(&p, Some(STORE_GID), Some(STORE_GID)).unwrap();
    }
    let d = dir.display();
    let conf = format!(
        r#"protocols = imap
listen = 127.0.0.1
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:{data}/mailboxes/%d/%n:INDEX={d}/index/%d/%n:CONTROL={d}/control/%d/%n
passdb {{
  driver = static
  args = password=imap-test-password
}}
userdb {{
  driver = static
  args = uid={STORE_GROUP} gid={STORE_GROUP} home={d}/home/%d/%n
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0666
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
"#,
        data = data.display()
    );
    let path = dir.join("dovecot.conf");
    std::fs::write(&path, conf).unwrap();
    path
}

/// Fetches message 1 of INBOX over IMAP (Python's imaplib), read-only.
const IMAP_FETCH: &str = r#"
import imaplib, sys
port = int(sys.argv[1])
m = imaplib.IMAP4("127.0.0.1", port, timeout=10)
m.login("bob@example.test", "imap-test-password")
typ, data = m.select("INBOX", readonly=True)
assert typ == "OK", (typ, data)
typ, data = m.fetch("1", "(RFC822)")
assert typ == "OK", (typ, data)
sys.stdout.write(data[0][1].decode())
m.logout()
"#;

#[test]
fn dovecot_in_the_store_group_reads_a_delivered_message() {
    if !is_root_or_skip("the Dovecot group-read test") {
        return;
    }
    assert!(Path::new("/usr/sbin/dovecot").exists(), "dovecot is not installed (apt-get install dovecot-imapd)");
    let dir = open_tempdir();
    let data = dir.path().join("data");
    common::user_add(&data, "bob@example.test");
    let port = common::free_port();
    let config = format!(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\ndomains = [\"example.test\"]\ndata_dir = \"{}\"\nuser = \"{TEST_USER}\"\n\n[store]\ngroup = \"{STORE_GROUP}\"\n",
        data.display()
    );
    let (_server, _log) = serve(dir.path(), &config);
    deliver(&format!("127.0.0.1:{port}"), "bob@example.test", "for-dovecot");
    let mbox = common::maildir(&data, "bob@example.test");
    for (p, want) in [
        (data.clone(), 0o2710),
        (data.join("mailboxes"), 0o2710),
        (data.join("mailboxes/example.test"), 0o2710),
        (mbox.clone(), 0o2750),
        (mbox.join("new"), 0o2750),
        (mbox.join("cur"), 0o2750),
    ] {
        assert_eq!(mode_group(&p), (want, STORE_GID), "{}", p.display());
    }
    let msg = common::files_in(&mbox.join("new")).remove(0);
    assert_eq!(mode_group(&msg), (0o640, STORE_GID), "the message");
    // Never shared: what is being received, the queue, the keys, the password hashes.
    for p in ["tmp", "queue", "tls", "journal"] {
        assert_eq!(mode_group(&data.join(p)).0 & 0o077, 0, "{p} is open to the group");
    }
    assert_eq!(mode_group(&data.join("users.toml")).0 & 0o077, 0);

    let imap_port = common::free_port();
    let conf = dovecot_conf(dir.path(), &data, imap_port);
    let dovecot = Command::new("/usr/sbin/dovecot")
        .arg("-F")
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _dovecot = Guard(dovecot);
    let up =
        common::poll(WAIT, Duration::from_millis(50), || TcpStream::connect(("127.0.0.1", imap_port)).ok().map(|_| ()));
    let dlog = || std::fs::read_to_string(dir.path().join("dovecot.log")).unwrap_or_default();
    assert!(up.is_some(), "dovecot did not listen:\n{}", dlog());
    let out = Command::new("/usr/bin/python3").arg("-c").arg(IMAP_FETCH).arg(imap_port.to_string()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("Subject: for-dovecot") && text.contains("body of for-dovecot"),
        "IMAP fetch failed: {}\n{text}\ndovecot log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        dlog()
    );
    // The mail process read it as `mail` (a member of the store group, not the owner).
    assert!(dlog().contains("Login: user=<bob@example.test>"), "{}", dlog());
    let _ = std::io::stderr().flush();
}

#[test]
fn a_data_dir_the_user_cannot_reach_is_refused_at_start() {
    if !is_root_or_skip("the unreachable-data-dir test") {
        return;
    }
    // A parent directory closed to the user (root's, 0700): the server must say so and exit.
    let dir = tempfile::tempdir().unwrap();
    let closed = dir.path().join("closed");
    std::fs::create_dir(&closed).unwrap();
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
    let data = closed.join("data");
    let port = common::free_port();
    let cfg = dir.path().join("mailroom.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\ndata_dir = \"{}\"\nuser = \"{TEST_USER}\"\n",
            data.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(common::bin())
        .arg("serve")
        .arg("--config")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > WAIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server kept running on a data directory its user cannot reach");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("cannot reach") && err.contains(TEST_USER), "{err}");
}

/// Every entry at and below `dir` (symlinks not followed), with its owner.
fn owners(dir: &Path, out: &mut Vec<(PathBuf, u32)>) {
    let meta = std::fs::symlink_metadata(dir).unwrap();
    out.push((dir.to_path_buf(), meta.uid()));
    if meta.is_dir() {
        for e in std::fs::read_dir(dir).unwrap() {
            owners(&e.unwrap().path(), out);
        }
    }
}

#[test]
fn admin_commands_run_as_root_write_as_the_data_dir_s_owner() {
    if !is_root_or_skip("the admin-as-root test") {
        return;
    }
    let dir = open_tempdir();
    let data = dir.path().join("data");
    common::user_add(&data, "bob@example.test");
    // The server's data directory, as the package's systemd unit (or `[server] user`) leaves it.
    let st = Command::new("chown").arg("-R").arg(format!("{TEST_UID}:{TEST_GID}")).arg(&data).status().unwrap();
    assert!(st.success());
    // A reply text only root can read: read before the owner is taken on.
    let private = dir.path().join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let body = private.join("reply.txt");
    std::fs::write(&body, "away until Monday\n").unwrap();
    std::fs::set_permissions(&body, std::fs::Permissions::from_mode(0o600)).unwrap();
    let body = body.to_str().unwrap();
    common::user_add_password(&data, "carol@example.test", "a long password");
    for args in [
        &["user", "passwd", "bob@example.test", "--password-stdin", "--allow-weak"][..],
        &["alias", "add", "team@example.test", "bob@example.test", "carol@example.test"],
        &["vacation", "set", "carol@example.test", "--subject", "away", "--body-file", body],
        &["dkim", "keygen", "example.test"],
        &["user", "quota", "bob@example.test", "10M"],
        &["token", "create", "carol@example.test"],
    ] {
        let mut child = Command::new(common::bin())
            .args(args)
            .arg("--data-dir")
            .arg(&data)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"another password\n").unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut all = Vec::new();
    owners(&data, &mut all);
    let foreign: Vec<_> = all.iter().filter(|(_, uid)| *uid != TEST_UID).collect();
    assert!(foreign.is_empty(), "written as another user than the data directory's owner: {foreign:?}");
    for p in ["users.toml", "aliases.toml"] {
        assert!(data.join(p).is_file(), "{p} missing");
    }
    assert!(all.iter().any(|(p, _)| p.starts_with(data.join("dkim"))), "no key written: {all:?}");
    // The owner (the server, as `nobody`) reads what root's commands wrote.
    let out = Command::new("setpriv")
        .args(["--reuid", &TEST_UID.to_string(), "--regid", &TEST_GID.to_string(), "--clear-groups", "cat"])
        .arg(data.join("users.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("carol@example.test"),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
