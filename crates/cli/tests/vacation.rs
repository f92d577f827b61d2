//! Vacation replies end to end (issue 13, RFC 3834): `mailroom vacation set/off` on a running server,
//! one reply to a sender's first message and none to the second within the interval, none to list,
//! bulk, auto-submitted or null-sender mail nor to a Bcc, and the reply's headers and null envelope
//! sender as a second mailroom receives it. The reply leaves through the queue and the relay (the
//! first server's `[delivery] relayhost` is the second server), as every outbound message does.
//!
//! Run: `cargo test -p mailroom --test vacation`. Needs nothing beyond the binary.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{mailroom, poll, user_add, Opts, Server, Smtp, WAIT};

const ALICE: &str = "alice@example.test";
/// How long a reply may take through the queue and the relay (first attempt within a second).
const REPLY_WAIT: Duration = Duration::from_secs(20);

/// The receiving side: b.test and its users, who write to Alice.
fn receiver() -> Server {
    let opts = Opts { domains: vec!["b.test".into()], hostname: Some("mx.b.test".into()), ..Opts::default() };
    Server::start_prepared(opts, |data| {
        for u in ["bob", "carol", "dave", "erin", "frank", "gina", "owner-list", "hank"] {
            user_add(data, &format!("{u}@b.test"));
        }
    })
}

/// Alice's server, relaying everything to `receiver`.
fn alices_server(receiver: &Server) -> Server {
    let config = format!(
        "[delivery]\nrelayhost = \"[127.0.0.1]:{}\"\nrelayhost_tls = \"none\"\nmin_backoff = \"1s\"\n",
        receiver.port
    );
    Server::start_with_users(Opts::example().with_config(&config), &[ALICE])
}

fn vacation_set(data: &Path, extra: &[&str]) {
    let body = data.parent().unwrap().join("away.txt");
    std::fs::write(&body, "I am away until Monday.\nYour mail will be read then.\n").unwrap();
    let mut args = vec!["vacation", "set", ALICE, "--subject", "Away: back Monday", "--body-file"];
    let body = body.to_str().unwrap().to_string();
    args.push(&body);
    args.extend_from_slice(extra);
    let out = mailroom(data, &args);
    assert!(out.status.success(), "vacation set: {}", String::from_utf8_lossy(&out.stderr));
}

/// Sends one message to Alice: envelope sender `from` (empty: the null sender), with `headers` before
/// the usual ones.
fn send(server: &Server, from: &str, headers: &str, message_id: &str) {
    let mut s: Smtp = server.connect();
    s.ehlo();
    s.expect(&format!("MAIL FROM:<{from}>"), 250);
    s.expect(&format!("RCPT TO:<{ALICE}>"), 250);
    let body = format!(
        "{headers}From: <{from}>\r\nTo: Alice <{ALICE}>\r\nSubject: hello\r\nMessage-ID: <{message_id}>\r\n\r\nHi!\r\n"
    );
    let r = s.data(body.as_bytes());
    assert_eq!(r.code, 250, "{r:?}");
    s.expect("QUIT", 221);
}

fn wait_log(server: &Server, needle: &str, count: usize) {
    let found =
        poll(WAIT, Duration::from_millis(50), || (server.log_text().matches(needle).count() >= count).then_some(()));
    assert!(found.is_some(), "no {count}x {needle:?} in the log:\n{}", server.log_text());
}

fn replies(receiver: &Server, addr: &str) -> Vec<String> {
    receiver.new_files(addr).iter().map(|f| String::from_utf8_lossy(&std::fs::read(f).unwrap()).into_owned()).collect()
}

/// Waits until `addr` at the receiver holds `n` messages.
fn wait_replies(receiver: &Server, addr: &str, n: usize) -> Vec<String> {
    let got = poll(REPLY_WAIT, Duration::from_millis(100), || (receiver.new_files(addr).len() >= n).then_some(()));
    assert!(got.is_some(), "{addr} never got {n} reply(ies)");
    replies(receiver, addr)
}

/// The header section of a stored message, unfolded, as (name, value) pairs.
fn header_fields(text: &str) -> Vec<(String, String)> {
    let head = text.split("\n\n").next().unwrap();
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            fields.last_mut().unwrap().1.push_str(line);
        } else if let Some((name, value)) = line.split_once(':') {
            fields.push((name.to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    fields
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    fields.iter().find(|(n, _)| n == name).map_or("", |(_, v)| v.as_str())
}

#[test]
fn one_reply_per_sender_and_none_to_lists_bulk_or_the_null_sender() {
    let receiver = receiver();
    let server = alices_server(&receiver);
    // Turned on while the server runs: it sees it within a second.
    vacation_set(&server.data, &[]);
    wait_log(&server, "reloaded vacation settings", 1);

    send(&server, "bob@b.test", "References: <earlier@b.test>\r\n", "first@b.test");
    let got = wait_replies(&receiver, "bob@b.test", 1);
    let reply = &got[0];
    let fields = header_fields(reply);
    // The envelope sender was null: the receiver's Return-Path says so.
    assert!(reply.starts_with("Return-Path: <>\n"), "{reply}");
    assert_eq!(field(&fields, "auto-submitted"), "auto-replied", "{reply}");
    assert_eq!(field(&fields, "subject"), "Away: back Monday");
    assert_eq!(field(&fields, "from"), format!("<{ALICE}>"));
    assert_eq!(field(&fields, "to"), "<bob@b.test>");
    assert_eq!(field(&fields, "in-reply-to"), "<first@b.test>");
    assert_eq!(field(&fields, "references"), "<earlier@b.test> <first@b.test>");
    assert!(field(&fields, "message-id").ends_with("@mx.e2e.test>"), "{reply}");
    assert!(reply.contains("\n\nI am away until Monday.\nYour mail will be read then.\n"), "{reply}");

    // Bob again within the interval: no second reply.
    send(&server, "bob@b.test", "", "second@b.test");
    // Lists, bulk, automatic mail, a list owner, the null sender and a Bcc get none either.
    send(&server, "carol@b.test", "List-Id: <team.b.test>\r\n", "list@b.test");
    send(&server, "dave@b.test", "Precedence: bulk\r\n", "bulk@b.test");
    send(&server, "erin@b.test", "Auto-Submitted: auto-generated\r\n", "auto@b.test");
    send(&server, "owner-list@b.test", "", "owner@b.test");
    send(&server, "", "", "null@b.test");
    bcc(&server, "gina@b.test");
    // Frank's message is an ordinary one: its reply shows that the ones above were decided, not late.
    send(&server, "frank@b.test", "", "frank@b.test");
    wait_replies(&receiver, "frank@b.test", 1);
    wait_log(&server, "status=sent", 2);
    for quiet in ["carol", "dave", "erin", "owner-list", "gina"] {
        assert!(receiver.new_files(&format!("{quiet}@b.test")).is_empty(), "{quiet} got a vacation reply");
    }
    assert_eq!(replies(&receiver, "bob@b.test").len(), 1, "Bob got a second reply within the interval");
    assert_eq!(server.log_text().matches("vacation reply queued").count(), 2, "{}", server.log_text());

    // Off: Hank gets nothing.
    let out = mailroom(&server.data, &["vacation", "off", ALICE]);
    assert!(out.status.success());
    wait_log(&server, "reloaded vacation settings", 2);
    send(&server, "hank@b.test", "", "hank@b.test");
    std::thread::sleep(Duration::from_secs(2));
    assert!(receiver.new_files("hank@b.test").is_empty(), "a reply after vacation off");
}

/// A message that reaches Alice without naming her in To/Cc (a Bcc).
fn bcc(server: &Server, from: &str) {
    let mut s = server.connect();
    s.ehlo();
    s.expect(&format!("MAIL FROM:<{from}>"), 250);
    s.expect(&format!("RCPT TO:<{ALICE}>"), 250);
    let body =
        format!("From: <{from}>\r\nTo: <team@b.test>\r\nSubject: bcc\r\nMessage-ID: <bcc@b.test>\r\n\r\nHi!\r\n");
    assert_eq!(s.data(body.as_bytes()).code, 250);
    s.expect("QUIT", 221);
}

#[test]
fn a_vacation_past_its_last_day_sends_nothing() {
    let receiver = receiver();
    let server = alices_server(&receiver);
    vacation_set(&server.data, &["--until", "2001-01-31"]);
    wait_log(&server, "reloaded vacation settings", 1);
    send(&server, "bob@b.test", "", "late@b.test");
    vacation_set(&server.data, &["--until", "2999-12-31"]);
    wait_log(&server, "reloaded vacation settings", 2);
    send(&server, "carol@b.test", "", "early@b.test");
    wait_replies(&receiver, "carol@b.test", 1);
    assert!(receiver.new_files("bob@b.test").is_empty(), "a reply after the last day");
}

#[test]
fn vacation_set_checks_its_input() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    user_add(&data, ALICE);
    let body = dir.path().join("b.txt");
    std::fs::write(&body, "x").unwrap();
    let b = body.to_str().unwrap();
    for (args, why) in [
        (vec!["vacation", "set", "nobody@example.test", "--subject", "s", "--body-file", b], "no such user"),
        (vec!["vacation", "set", ALICE, "--subject", "s", "--body-file", b, "--until", "2024-02-30"], "not a date"),
        (vec!["vacation", "set", ALICE, "--subject", "a\nb", "--body-file", b], "one line"),
    ] {
        let out = mailroom(&data, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(why), "{args:?}: {err}");
    }
    assert!(!data.join("vacation").exists() || common::files_under(&data.join("vacation")).is_empty());
}
