//! Quotas end to end (issue 13): `mailroom user quota`, the RCPT answers of a running server (452 4.2.2
//! when the mailbox is full, 552 5.2.2 when the declared SIZE would not fit), the usage `mailroom user
//! list` shows, and Dovecot's quota plugin (`quota = maildir`) on the same Maildir reporting the same
//! numbers, run by the test as a non-root user.
//!
//! Run: `cargo test -p mailroom --test quota`. The Dovecot test needs Debian's `dovecot-core` (and, as
//! root, `setpriv` from util-linux to run it as `nobody`); without them it fails unless
//! `MAILROOM_SKIP_DOVECOT=1` is set.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{files_under, mailroom, poll, settle_data, user_add, Opts, Server, Smtp, WAIT};

const ALICE: &str = "alice@example.test";

/// A message of about `size` octets (CRLF form) to alice.
fn message(size: usize) -> Vec<u8> {
    let mut m = format!("From: bob@example.org\r\nTo: {ALICE}\r\nSubject: quota\r\n\r\n").into_bytes();
    while m.len() < size {
        m.extend_from_slice(b"0123456789012345678901234567890123456789012345678901234567890123456789\r\n");
    }
    m
}

/// One whole transaction that must be stored.
fn deliver(s: &mut Smtp, size: usize) {
    s.expect("MAIL FROM:<bob@example.org>", 250);
    s.expect(&format!("RCPT TO:<{ALICE}>"), 250);
    let r = s.data(&message(size));
    assert_eq!(r.code, 250, "{r:?}");
}

fn set_quota(data: &Path, addr: &str, args: &[&str]) {
    let mut all = vec!["user", "quota", addr];
    all.extend_from_slice(args);
    let out = mailroom(data, &all);
    assert!(out.status.success(), "user quota: {}", String::from_utf8_lossy(&out.stderr));
}

/// `(bytes, messages)` of ADDR as `mailroom user list` prints them.
fn listed_usage(data: &Path, addr: &str) -> (u64, u64) {
    let out = mailroom(data, &["user", "list"]);
    assert!(out.status.success(), "user list: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text.lines().find(|l| l.starts_with(addr)).unwrap_or_else(|| panic!("{addr} not listed:\n{text}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = |unit: &str| {
        let i = words.iter().position(|w| w.trim_end_matches(',') == unit).unwrap_or_else(|| panic!("{line}"));
        words[i - 1].parse::<u64>().unwrap_or_else(|_| panic!("{line}"))
    };
    (at("bytes"), at("messages"))
}

/// What the Maildir really holds: every message file's size, and their number.
fn on_disk(maildir: &Path) -> (u64, u64) {
    let files: Vec<PathBuf> = ["new", "cur"].iter().flat_map(|d| files_under(&maildir.join(d))).collect();
    (files.iter().map(|f| std::fs::metadata(f).unwrap().len()).sum(), files.len() as u64)
}

/// Waits for the server to log that it reread users.toml (a quota change is then in force).
fn wait_reload(server: &Server, before: usize) {
    let seen = poll(WAIT, Duration::from_millis(50), || {
        (server.log_text().matches("reloaded users.toml").count() > before).then_some(())
    });
    assert!(seen.is_some(), "the server never reread users.toml:\n{}", server.log_text());
}

#[test]
fn a_full_mailbox_answers_452_and_a_declared_size_that_does_not_fit_552() {
    let server = Server::start_prepared(Opts::example(), |data| {
        user_add(data, ALICE);
        set_quota(data, ALICE, &["3000"]);
    });
    let mut s = server.connect();
    s.ehlo();
    deliver(&mut s, 1000);
    let (used, _) = {
        settle_data(&server.data);
        on_disk(&server.maildir(ALICE))
    };
    assert!(used > 1000 && used < 1500, "one message stored: {used}");

    // The declared size would take usage past 3000 octets: permanent for this message (RFC 3463 X.2.2).
    s.expect(&format!("MAIL FROM:<bob@example.org> SIZE={}", 3000 - used + 1), 250);
    let r = s.cmd(&format!("RCPT TO:<{ALICE}>"));
    assert!(r.is(552, "5.2.2"), "{r:?}");
    s.expect("RSET", 250);
    // One that fits is taken, and so is a message whose real size goes past the limit (see README).
    s.expect(&format!("MAIL FROM:<bob@example.org> SIZE={}", 3000 - used), 250);
    s.expect(&format!("RCPT TO:<{ALICE}>"), 250);
    assert_eq!(s.data(&message(2500)).code, 250);

    // Now the mailbox is full: every RCPT is told so, temporarily.
    s.expect("MAIL FROM:<bob@example.org>", 250);
    let r = s.cmd(&format!("RCPT TO:<{ALICE}>"));
    assert!(r.is(452, "4.2.2"), "{r:?}");
    s.expect("RSET", 250);
    assert_eq!(server.new_files(ALICE).len(), 2);
    // The server kept maildirsize: its totals are the Maildir's.
    let text = std::fs::read_to_string(server.maildir(ALICE).join("maildirsize")).unwrap();
    assert!(text.starts_with("3000S\n"), "{text}");
    let (bytes, count) = {
        settle_data(&server.data);
        on_disk(&server.maildir(ALICE))
    };
    assert_eq!(listed_usage(&server.data, ALICE), (bytes, count));
    assert!(bytes > 3000);

    // A larger quota reaches the running server within a second or two.
    let reloads = server.log_text().matches("reloaded users.toml").count();
    set_quota(&server.data, ALICE, &["1M"]);
    wait_reload(&server, reloads);
    deliver(&mut s, 100);
    assert_eq!(listed_usage(&server.data, ALICE).1, 3);
}

#[test]
fn a_message_count_limit_is_a_quota_too() {
    let server = Server::start_prepared(Opts::example(), |data| {
        user_add(data, ALICE);
        user_add(data, "bob@example.test");
        set_quota(data, ALICE, &["0", "--messages", "2"]);
    });
    let mut s = server.connect();
    s.ehlo();
    deliver(&mut s, 100);
    deliver(&mut s, 100);
    s.expect("MAIL FROM:<carol@example.org>", 250);
    let r = s.cmd(&format!("RCPT TO:<{ALICE}>"));
    assert!(r.is(452, "4.2.2"), "{r:?}");
    // Other recipients of the same transaction are not affected.
    s.expect("RCPT TO:<bob@example.test>", 250);
    assert_eq!(s.data(&message(100)).code, 250);
    assert_eq!(listed_usage(&server.data, ALICE).1, 2);
    assert_eq!(server.new_files("bob@example.test").len(), 1);
}

#[test]
fn user_list_shows_usage_of_users_without_a_quota() {
    let server = Server::start_with_users(Opts::example(), &[ALICE]);
    let mut s = server.connect();
    s.ehlo();
    deliver(&mut s, 500);
    deliver(&mut s, 700);
    assert_eq!(listed_usage(&server.data, ALICE), {
        settle_data(&server.data);
        on_disk(&server.maildir(ALICE))
    });
    // No quota: nothing to keep a maildirsize for.
    assert!(!server.maildir(ALICE).join("maildirsize").exists());
}

/// A private Dovecot (`dovecot -F`, no listeners) whose only user is alice with her Maildir, run as
/// `nobody` when the test is root (the Maildir is handed to that user), as the test's user otherwise.
struct Dovecot {
    child: Child,
    conf: PathBuf,
    /// `setpriv` arguments that run a command as Dovecot's user (empty when not root).
    as_user: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Dovecot {
    fn start(maildir: &Path, quota_rule: &str) -> Option<Dovecot> {
        if std::env::var("MAILROOM_SKIP_DOVECOT").is_ok_and(|v| v == "1") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let probe = dir.path().join("probe");
        std::fs::write(&probe, b"").unwrap();
        let is_root = std::fs::metadata(&probe).unwrap().uid() == 0;
        let (uid, gid) =
            if is_root { (65534, 65534) } else { (probe.metadata().unwrap().uid(), probe.metadata().unwrap().gid()) };
        let as_user: Vec<String> = if is_root {
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"].iter().map(|s| s.to_string()).collect()
        } else {
            Vec::new()
        };
        if is_root {
            hand_over(dir.path(), maildir, uid, gid);
        }
        let d = dir.path().display();
        let conf = dir.path().join("dovecot.conf");
        std::fs::write(
            &conf,
            format!(
                "base_dir = {d}/run\nstate_dir = {d}/state\nlog_path = {d}/dovecot.log\nprotocols =\nssl = no\n\
                 default_internal_user = {user}\ndefault_internal_group = {group}\ndefault_login_user = {user}\n\
                 mail_location = maildir:{md}\nmail_plugins = quota\n\
                 passdb {{\n  driver = static\n  args = password=unused\n}}\n\
                 userdb {{\n  driver = static\n  args = uid={uid} gid={gid} home={d}/home\n}}\n\
                 service anvil {{\n  chroot =\n}}\n\
                 plugin {{\n  quota = maildir:User quota\n  quota_rule = {quota_rule}\n}}\n",
                user = if is_root { "nobody".to_string() } else { whoami() },
                group = if is_root { "nogroup".to_string() } else { whoami_group() },
                md = maildir.display(),
            ),
        )
        .unwrap();
        for sub in ["run", "state", "home"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        if is_root {
            hand_over(dir.path(), dir.path(), uid, gid);
        }
        let mut cmd = command(&as_user, "dovecot");
        cmd.arg("-F").arg("-c").arg(&conf).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        let child = cmd.spawn().expect("run dovecot (Debian: dovecot-core; setpriv from util-linux)");
        let dovecot = Dovecot { child, conf, as_user, _dir: dir };
        let socket = dovecot._dir.path().join("run/auth-userdb");
        assert!(
            poll(WAIT, Duration::from_millis(50), || socket.exists().then_some(())).is_some(),
            "dovecot did not start"
        );
        Some(dovecot)
    }

    fn doveadm(&self, args: &[&str]) -> String {
        let mut cmd = command(&self.as_user, "doveadm");
        let out = cmd.arg("-c").arg(&self.conf).args(args).output().expect("run doveadm");
        assert!(out.status.success(), "doveadm {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `(storage in KiB, messages)` as `doveadm quota get` reports them.
    fn quota_get(&self) -> (u64, u64) {
        let text = self.doveadm(&["-f", "tab", "quota", "get", "-u", "alice"]);
        let value = |kind: &str| {
            let line = text.lines().find(|l| l.split('\t').nth(1) == Some(kind)).unwrap_or_else(|| panic!("{text}"));
            line.split('\t').nth(2).unwrap().parse::<u64>().unwrap()
        };
        (value("STORAGE"), value("MESSAGE"))
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        // The master process we started, by its PID (setpriv execs dovecot in place).
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        if poll(Duration::from_secs(5), Duration::from_millis(50), || self.child.try_wait().ok().flatten()).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn command(as_user: &[String], program: &str) -> Command {
    match as_user.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(program);
            c
        }
        None => Command::new(program),
    }
}

fn whoami() -> String {
    let out = Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn whoami_group() -> String {
    let out = Command::new("id").arg("-gn").output().expect("id -gn");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Gives `target` (recursively) to uid:gid and lets that user reach it: every directory from `base`'s
/// parent down to it gets o+x.
fn hand_over(base: &Path, target: &Path, uid: u32, gid: u32) {
    let st = Command::new("chown").arg("-R").arg(format!("{uid}:{gid}")).arg(target).status().unwrap();
    assert!(st.success(), "chown {}", target.display());
    let _ = base;
    let mut p = target.parent();
    while let Some(dir) = p {
        let mode = std::fs::metadata(dir).unwrap().permissions().mode();
        if mode & 0o001 == 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o001)).unwrap();
        }
        p = dir.parent();
    }
}

#[test]
fn dovecot_quota_plugin_reports_the_usage_user_list_shows() {
    let server = Server::start_prepared(Opts::example(), |data| {
        user_add(data, ALICE);
        set_quota(data, ALICE, &["100K", "--messages", "50"]);
    });
    let mut s = server.connect();
    s.ehlo();
    for size in [1000, 5000, 20_000] {
        deliver(&mut s, size);
    }
    let maildir = server.maildir(ALICE);
    let (bytes, count) = listed_usage(&server.data, ALICE);
    assert_eq!((bytes, count), on_disk(&maildir));
    let Some(dovecot) = Dovecot::start(&maildir, "*:storage=100K:messages=50") else { return };
    // Dovecot reads the maildirsize the server kept (the definition line is the same: 102400S,50C).
    assert_eq!(dovecot.quota_get(), (bytes.div_ceil(1024), count), "Dovecot before its own recalculation");
    // And counts the Maildir itself to the same octet.
    dovecot.doveadm(&["quota", "recalc", "-u", "alice"]);
    let text = std::fs::read_to_string(maildir.join("maildirsize")).unwrap();
    assert_eq!(text, format!("102400S,50C\n{bytes} {count}\n"), "Dovecot's own count");
    assert_eq!(dovecot.quota_get(), (bytes.div_ceil(1024), count));
    // The server goes on appending to Dovecot's file, and both still agree.
    deliver(&mut s, 3000);
    let (bytes, count) = listed_usage(&server.data, ALICE);
    assert_eq!((bytes, count), on_disk(&maildir));
    assert_eq!(dovecot.quota_get(), (bytes.div_ceil(1024), count), "after one more delivery");
}
