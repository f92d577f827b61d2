//! Postfix both ways: mailroom delivers to a private Postfix instance as the remote MX of `pf.test`, and
//! that Postfix (relayhost = mailroom) hands mail for mailroom's local users to mailroom; both checked in
//! the receiving Maildir. Postfix runs from `tests/outbound/postfix.py` with its own config, queue and data
//! directories, smtpd on 127.0.0.5 only; the system's Postfix is never touched. Needs root.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{files_in, poll, user_add, Opts, Server, Smtp, WAIT};
use crate::support::{
    config, may_skip, script, send, wait_mailbox, wait_queue_empty, Rig, ALICE, DELIVERY_WAIT, PASSWORD, PYTHON,
};

/// A private Postfix instance, stopped (by its own pid file) on drop.
struct Postfix {
    dir: tempfile::TempDir,
}

impl Postfix {
    fn start(port: u16, relayhost: &str) -> Postfix {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(PYTHON)
            .arg(script("postfix.py"))
            .args(["start", &dir.path().display().to_string(), "127.0.0.5", &port.to_string(), "pf.test", relayhost])
            .output()
            .expect("run tests/outbound/postfix.py");
        let text = String::from_utf8_lossy(&out.stdout);
        let pf = Postfix { dir };
        assert!(
            out.status.success() && text.starts_with("READY"),
            "Postfix did not start:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        pf
    }

    fn maildir_new(&self) -> PathBuf {
        self.dir.path().join("vmail/pf.test/catchall/new")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postfix.log")).unwrap_or_default()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new(PYTHON).arg(script("postfix.py")).arg("stop").arg(self.dir.path()).status();
    }
}

fn can_run_postfix() -> bool {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let installed = Path::new("/usr/sbin/postfix").exists();
    if root && installed {
        return true;
    }
    let why = if installed { "Postfix's master needs root" } else { "postfix is not installed" };
    assert!(may_skip(), "{why} (scripts/install-test-deps; or set MAILROOM_SKIP_OUTBOUND=1)");
    eprintln!("skipping: {why}");
    false
}

#[test]
fn postfix_both_ways() {
    if !can_run_postfix() {
        return;
    }
    let Some(rig) = Rig::new() else { return };
    let server = Server::start_prepared(
        Opts::example().with_submission().with_config(&config(&rig.dns, rig.port, "", "")),
        |data| {
            crate::common::user_add_password(data, ALICE, PASSWORD);
            user_add(data, "bob@example.test");
        },
    );
    let postfix = Postfix::start(rig.port, &format!("[127.0.0.1]:{}", server.port));

    // Postfix -> mailroom: a message for mailroom's local user, handed in through Postfix's smtpd.
    let sock = TcpStream::connect_timeout(&(std::net::Ipv4Addr::new(127, 0, 0, 5), rig.port).into(), WAIT).unwrap();
    let mut s = Smtp::from_stream(sock).unwrap();
    assert_eq!(s.read_reply().code, 220);
    s.ehlo();
    s.expect("MAIL FROM:<dave@pf.test>", 250);
    s.expect("RCPT TO:<bob@example.test>", 250);
    let r = s.data(b"From: dave@pf.test\r\nTo: bob@example.test\r\nSubject: from postfix\r\n\r\nhello mailroom\r\n");
    assert_eq!(r.code, 250, "{r:?}");
    let files = wait_mailbox(&server, "bob@example.test", 1, DELIVERY_WAIT);
    let text = String::from_utf8_lossy(&std::fs::read(&files[0]).unwrap()).into_owned();
    assert!(text.contains("Subject: from postfix") && text.contains("hello mailroom"), "{text}");
    assert!(text.contains("postfix.pf.test"), "Postfix's Received header:\n{text}");
    assert!(text.starts_with("Return-Path: <dave@pf.test>"), "{text}");

    // mailroom -> Postfix: pf.test's MX is smtp.pf.test = 127.0.0.5, Postfix's smtpd.
    send(&server, &["dave@pf.test"], "to postfix");
    let files = poll(DELIVERY_WAIT, std::time::Duration::from_millis(100), || {
        let f = files_in(&postfix.maildir_new());
        (!f.is_empty()).then_some(f)
    })
    .unwrap_or_else(|| {
        panic!("nothing in Postfix's Maildir\nmailroom:\n{}\npostfix:\n{}", server.log_text(), postfix.log())
    });
    let text = String::from_utf8_lossy(&std::fs::read(&files[0]).unwrap()).into_owned();
    assert!(text.contains("Subject: to postfix"), "{text}");
    assert!(text.contains("by mx.e2e.test"), "mailroom's Received header:\n{text}");
    assert!(text.contains(&format!("Return-Path: <{ALICE}>")), "{text}");
    wait_queue_empty(&server, DELIVERY_WAIT);
    eprintln!("postfix log:\n{}", postfix.log());
}
