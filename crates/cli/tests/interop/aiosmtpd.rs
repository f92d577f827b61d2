//! `mailroom send` and `mailroom sendmail` against a foreign server, Python's aiosmtpd: what arrives
//! must parse back to what was sent, and refusals must be reported per recipient.

use crate::send_support::*;
use mail_parser::{MessageParser, MimeHeaders};

#[test]
fn non_ascii_subject_and_3_mib_attachment_arrive_intact() {
    let Some(peer) = Aiosmtpd::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let blob = noise(3 * 1024 * 1024, 0x9e3779b97f4a7c15);
    let path = dir.path().join("data.bin");
    std::fs::write(&path, &blob).unwrap();
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "plain\n.leading dot\n").unwrap();
    let subject = "Grüße aus Köln – 日本語 ✓";
    let server = peer.server();
    let out = run(
        &[
            "send",
            "--server",
            &server,
            "--from",
            "Änne Sender <anne@example.org>",
            "--to",
            "bob@example.net",
            "--cc",
            "carol@example.net",
            "--subject",
            subject,
            "--body",
            "Hallo, schöne Welt.\n.\nend",
            "--attach",
            path.to_str().unwrap(),
            "--attach",
            notes.to_str().unwrap(),
            "--timeout",
            "30s",
        ],
        b"",
    );
    assert!(out.status.success(), "exit {:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    let (raw, env) = peer.message(1);
    assert_eq!(json_list(&env, "rcpt_tos"), vec!["bob@example.net", "carol@example.net"]);
    assert_eq!(json_str(&env, "mail_from"), "anne@example.org");
    let msg = MessageParser::default().parse(&raw).expect("parses");
    assert_eq!(msg.subject(), Some(subject));
    assert!(raw.is_ascii(), "headers and body were encoded for transport");
    assert!(msg.date().is_some() && msg.message_id().is_some());
    assert_eq!(msg.from().and_then(|f| f.first()).and_then(|a| a.name()), Some("Änne Sender"));
    assert_eq!(
        msg.body_text(0).as_deref().map(|t| t.replace("\r\n", "\n")),
        Some("Hallo, schöne Welt.\n.\nend".into())
    );
    let att = msg.attachment(0).expect("first attachment");
    assert_eq!(att.attachment_name(), Some("data.bin"));
    assert_eq!(att.contents().len(), blob.len());
    assert!(att.contents() == blob.as_slice(), "attachment bytes differ");
    let txt = msg.attachment(1).expect("second attachment");
    assert_eq!(txt.content_type().map(|c| c.ctype()), Some("text"));
    assert_eq!(txt.contents().to_vec(), b"plain\n.leading dot\n".to_vec());
}

#[test]
fn a_refused_recipient_is_reported_and_the_others_get_it() {
    let Some(peer) = Aiosmtpd::start() else { return };
    let server = peer.server();
    let out = run(
        &[
            "send",
            "--server",
            &server,
            "--from",
            "a@example.org",
            "--to",
            "one@example.net",
            "--to",
            "refuse-me@example.net",
            "--to",
            "two@example.net",
            "--subject",
            "partial",
            "--body",
            "hi",
        ],
        b"",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "5xx for one recipient: {stderr}");
    assert!(stderr.contains("refuse-me@example.net") && stderr.contains("550"), "{stderr}");
    assert!(!stderr.contains("one@example.net"), "accepted recipients are not named as refused: {stderr}");
    let (_, env) = peer.message(1);
    assert_eq!(json_list(&env, "rcpt_tos"), vec!["one@example.net", "two@example.net"]);

    // A temporary refusal alone exits 75.
    let out = run(
        &[
            "send",
            "--server",
            &server,
            "--from",
            "a@example.org",
            "--to",
            "x@example.net",
            "--to",
            "later@example.net",
            "--body",
            "hi",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(75), "{}", String::from_utf8_lossy(&out.stderr));
    // Every recipient refused: nothing is sent.
    let before = peer.count();
    let out = run(
        &["send", "--server", &server, "--from", "a@example.org", "--to", "refuse@example.net", "--body", "hi"],
        b"",
    );
    assert_eq!(out.status.code(), Some(69));
    assert_eq!(peer.count(), before);
}

#[test]
fn verbose_prints_the_transcript() {
    let Some(peer) = Aiosmtpd::start() else { return };
    let server = peer.server();
    let out = run(
        &[
            "send",
            "--server",
            &server,
            "--from",
            "a@example.org",
            "--to",
            "b@example.net",
            "--subject",
            "hi",
            "--body",
            "hello",
            "-v",
        ],
        b"",
    );
    assert!(out.status.success());
    let t = String::from_utf8_lossy(&out.stdout);
    for want in [
        "S: 220 ",
        "C: EHLO ",
        "S: 250-",
        "C: MAIL FROM:<a@example.org>",
        "C: RCPT TO:<b@example.net>",
        "C: DATA",
        "S: 354",
        "C: .",
        "S: 250 2.0.0",
        "C: QUIT",
        "S: 221",
    ] {
        assert!(t.contains(want), "transcript lacks {want:?}:\n{t}");
    }
    peer.message(1);
}

#[test]
fn message_file_is_sent_as_is_and_body_comes_from_stdin() {
    let Some(peer) = Aiosmtpd::start() else { return };
    let server = peer.server();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.eml");
    let original =
        "From: x@example.org\nTo: y@example.net\nSubject: ready made\nX-Keep: yes\n\n.starts with a dot\nbody ä\n";
    std::fs::write(&file, original).unwrap();
    let out = run(
        &[
            "send",
            "--server",
            &server,
            "--from",
            "x@example.org",
            "--to",
            "y@example.net",
            "--message",
            file.to_str().unwrap(),
        ],
        b"",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (raw, env) = peer.message(1);
    assert_eq!(raw, original.replace('\n', "\r\n").into_bytes());
    assert!(json_list(&env, "mail_options").iter().any(|o| o == "BODY=8BITMIME"), "{env}");

    let out = run(
        &["send", "--server", &server, "--from", "x@example.org", "--to", "y@example.net", "--subject", "stdin"],
        b"from stdin\n",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (raw, _) = peer.message(2);
    let msg = MessageParser::default().parse(&raw).unwrap();
    assert_eq!(msg.body_text(0).as_deref().map(|t| t.trim_end().to_string()), Some("from stdin".into()));
}
