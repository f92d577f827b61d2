//! `mailroom sendmail` as cron and git send-email call it, against aiosmtpd as the capturing server.

mod send_support;

use std::time::Duration;

use mail_parser::MessageParser;
use send_support::*;

fn config_for(peer: &Aiosmtpd, dir: &std::path::Path) -> std::path::PathBuf {
    let cfg = dir.join("mailroom.toml");
    // Server sections sit in the same file; sendmail reads only [client].
    let text = format!(
        "[server]\ndomains = [\"example.test\"]\n[limits]\nmax_message_size = 1048576\n[client]\nserver = \"{}\"\ntimeout = \"20s\"\n",
        peer.server()
    );
    std::fs::write(&cfg, text).unwrap();
    cfg
}

#[test]
fn t_takes_to_cc_bcc_and_drops_bcc() {
    let Some(peer) = Aiosmtpd::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_for(&peer, dir.path());
    let out = run(&["sendmail", "--config", cfg.to_str().unwrap(), "-t"], b"To: a@x\nBcc: b@y\nSubject: s\n\nbody\n");
    assert!(out.status.success(), "exit {:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    let (raw, env) = peer.message(1);
    assert_eq!(json_list(&env, "rcpt_tos"), vec!["a@x", "b@y"]);
    let text = String::from_utf8_lossy(&raw);
    assert!(!text.to_ascii_lowercase().contains("bcc"), "Bcc header left:\n{text}");
    assert!(!text.contains("b@y"), "{text}");
    let msg = MessageParser::default().parse(&raw).unwrap();
    assert_eq!(msg.subject(), Some("s"));
    assert!(msg.date().is_some(), "Date added");
    assert!(msg.message_id().is_some(), "Message-ID added");
    assert!(msg.from().is_some(), "From added");
    assert!(text.ends_with("\r\n\r\nbody\r\n"), "{text:?}");
}

#[test]
fn config_from_the_environment_and_recipients_from_arguments() {
    let Some(peer) = Aiosmtpd::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_for(&peer, dir.path());
    let msg = b"From: Cron Daemon <cron@example.org>\nSubject: cron output\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <fixed@example.org>\n\nline\n.\nafter the dot\n";
    let out = run_with(
        &["sendmail", "-oi", "-f", "bounce@example.org", "-F", "Ignored Name", "x@example.net, y@example.net"],
        msg,
        &[("MAILROOM_CONFIG", cfg.to_str().unwrap())],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (raw, env) = peer.message(1);
    assert_eq!(json_str(&env, "mail_from"), "bounce@example.org");
    assert_eq!(json_list(&env, "rcpt_tos"), vec!["x@example.net", "y@example.net"]);
    // -oi: the lone dot is data; existing Date and Message-ID are kept.
    assert_eq!(raw, String::from_utf8_lossy(msg).replace('\n', "\r\n").into_bytes());

    // Without -i a lone dot ends the message, as in sendmail.
    let out = run_with(
        &["sendmail", "z@example.net"],
        b"Subject: dot\n\nbefore\n.\nafter\n",
        &[("MAILROOM_CONFIG", cfg.to_str().unwrap())],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (raw, _) = peer.message(2);
    let text = String::from_utf8_lossy(&raw);
    assert!(text.contains("before") && !text.contains("after"), "{text}");
}

#[test]
fn failures_have_sysexits_codes() {
    let Some(peer) = Aiosmtpd::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_for(&peer, dir.path());
    let c = cfg.to_str().unwrap();
    let out = run(&["sendmail", "--config", c, "refuse@x"], b"Subject: s\n\nb\n");
    assert_eq!(out.status.code(), Some(69), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refuse@x"));
    let out = run(&["sendmail", "--config", c], b"Subject: s\n\nb\n");
    assert_eq!(out.status.code(), Some(64), "no recipients");
    let out = run(&["sendmail", "--config", "/nonexistent/mailroom.toml", "a@x"], b"x\n");
    assert_eq!(out.status.code(), Some(78), "missing config named explicitly");
    let out = run(&["sendmail", "-bp"], b"");
    assert_eq!(out.status.code(), Some(64));
    // Nobody listening: temporary.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, format!("[client]\nserver = \"127.0.0.1:{port}\"\ntimeout = \"5s\"\n")).unwrap();
    let out = run(&["sendmail", "--config", bad.to_str().unwrap(), "a@x"], b"Subject: s\n\nb\n");
    assert_eq!(out.status.code(), Some(75), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Issue 10, finding 5 ("sendmail -t leaks Bcc written in obsolete syntax"): runs `sendmail -t` against a
/// recording server and returns the exit status, stderr, the RCPT lines and the messages it got.
fn sendmail_t(message: &[u8]) -> (Option<i32>, String, Vec<String>, Vec<String>) {
    let rec = Recorder::start("");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("mailroom.toml");
    std::fs::write(&cfg, format!("[client]\nserver = \"{}\"\ntimeout = \"10s\"\n", rec.addr)).unwrap();
    let out = run(&["sendmail", "--config", cfg.to_str().unwrap(), "-t"], message);
    let seen = rec.finish();
    let rcpts = seen.lines.iter().filter(|l| l.starts_with("RCPT TO:")).cloned().collect();
    let msgs = seen.messages.iter().map(|m| String::from_utf8_lossy(m).into_owned()).collect();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned(), rcpts, msgs)
}

#[test]
fn bcc_in_obsolete_syntax_with_a_space_before_the_colon_is_taken_and_removed() {
    let (code, err, rcpts, msgs) = sendmail_t(b"To: bob@example.test\nBcc : carol@example.test\nSubject: s\n\nbody\n");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(rcpts, ["RCPT TO:<bob@example.test>", "RCPT TO:<carol@example.test>"]);
    let m = &msgs[0];
    assert!(!m.to_ascii_lowercase().contains("bcc") && !m.contains("carol"), "Bcc leaked:\n{m}");
    let (head, body) = m.split_once("\r\n\r\n").expect("a header section");
    assert!(head.contains("Subject: s") && body == "body\r\n", "Subject stays in the header:\n{m}");
}

#[test]
fn bcc_in_obsolete_syntax_with_a_tab_before_the_colon_is_taken_and_removed() {
    let (code, err, rcpts, msgs) =
        sendmail_t(b"To: bob@example.test\nBcc\t:\n carol@example.test\nSubject: s\n\nbody\n");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(rcpts, ["RCPT TO:<bob@example.test>", "RCPT TO:<carol@example.test>"]);
    assert!(!msgs[0].to_ascii_lowercase().contains("bcc") && !msgs[0].contains("carol"), "{}", msgs[0]);
}

#[test]
fn bcc_in_obsolete_syntax_an_mbox_from_line_is_skipped() {
    let patch = b"From 0123abcd Mon Sep 17 00:00:00 2001\nFrom: Me <me@example.test>\nTo: bob@example.test\n\
                  Subject: [PATCH] fix\n\n---\ndiff\n";
    let (code, err, rcpts, msgs) = sendmail_t(patch);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(rcpts, ["RCPT TO:<bob@example.test>"]);
    assert!(msgs[0].starts_with("From: Me <me@example.test>\r\n"), "{}", msgs[0]);
    assert!(!msgs[0].contains("0123abcd") && msgs[0].contains("Subject: [PATCH] fix"), "{}", msgs[0]);
}

#[test]
fn bcc_in_obsolete_syntax_a_first_continuation_line_is_an_error() {
    let (code, err, rcpts, _) = sendmail_t(b" Bcc: carol@example.test\nTo: bob@example.test\n\nbody\n");
    assert_eq!(code, Some(65), "EX_DATAERR: {err}");
    assert!(err.contains("continuation"), "{err}");
    assert!(rcpts.is_empty());
}
