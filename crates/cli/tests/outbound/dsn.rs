//! Bounces and delivery status notifications (RFC 3464, RFC 3461): a 5xx, expiry and NXDOMAIN bounce to
//! the local sender's Maildir; NOTIFY=NEVER suppresses the bounce; NOTIFY=SUCCESS gets a "relayed" DSN
//! from a hop without DSN and is passed on to a hop with it.

use std::path::PathBuf;
use std::time::Duration;

use crate::common::{files_in, Server};
use crate::support::{
    mailroom, parse_dsn, send, submission, transaction, wait_mailbox, wait_queue_empty, Rig, ALICE, DELIVERY_WAIT,
};

/// The DSN files in Alice's Maildir, waiting for N; checks the trace (null reverse path) of each.
fn dsns(server: &Server, n: usize) -> Vec<PathBuf> {
    let files = wait_mailbox(server, ALICE, n, DELIVERY_WAIT);
    for f in &files {
        let text = String::from_utf8_lossy(&std::fs::read(f).unwrap()).into_owned();
        assert!(text.starts_with("Return-Path: <>\n"), "a DSN has the null reverse path:\n{text}");
    }
    files
}

fn field(v: &serde_json::Value, name: &str) -> String {
    let obj = v.as_object().unwrap();
    obj.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str().unwrap().to_string())
        .unwrap_or_default()
}

/// Checks the shape every DSN shares and returns its first recipient block.
fn check_report(dsn: &serde_json::Value) -> serde_json::Value {
    assert_eq!(dsn["content_type"], "multipart/report", "{dsn:#}");
    assert_eq!(dsn["report_type"], "delivery-status", "{dsn:#}");
    assert!(
        ["message/delivery-status", "message/global-delivery-status"].contains(&dsn["parts"][1].as_str().unwrap()),
        "{dsn:#}"
    );
    let from = dsn["from"].as_str().unwrap();
    assert!(from.to_ascii_uppercase().contains("MAILER-DAEMON@MX.E2E.TEST"), "From: {from}");
    assert!(field(&dsn["per_message"], "Reporting-MTA").contains("mx.e2e.test"), "{dsn:#}");
    assert!(!field(&dsn["per_message"], "Arrival-Date").is_empty(), "{dsn:#}");
    assert!(!dsn["human"].as_str().unwrap().trim().is_empty(), "a human-readable part: {dsn:#}");
    dsn["recipients"][0].clone()
}

#[test]
fn permanent_failure_bounces_to_the_local_senders_maildir() {
    let Some(rig) = Rig::new() else { return };
    let _rx = rig.receiver("rx", &["127.0.0.2"], &[]);
    let server = mailroom(rig.config("", ""), &[]);
    send(&server, &["refuse-me@one.test"], "bounce me");
    let files = dsns(&server, 1);
    let dsn = parse_dsn(&files[0]);
    let r = check_report(&dsn);
    assert!(field(&r, "Final-Recipient").ends_with("refuse-me@one.test"), "{dsn:#}");
    assert!(field(&r, "Final-Recipient").to_ascii_lowercase().starts_with("rfc822;"), "{dsn:#}");
    assert_eq!(field(&r, "Action"), "failed", "{dsn:#}");
    assert_eq!(field(&r, "Status"), "5.1.1", "{dsn:#}");
    let diag = field(&r, "Diagnostic-Code");
    assert!(diag.to_ascii_lowercase().starts_with("smtp;") && diag.contains("550"), "{diag}");
    assert!(diag.contains("no such user here"), "the remote reply: {diag}");
    assert!(field(&r, "Remote-MTA").contains("mx1.mx.test"), "{dsn:#}");
    assert!(dsn["original"].as_str().unwrap().contains("Subject: bounce me"), "the original headers: {dsn:#}");
    wait_queue_empty(&server, DELIVERY_WAIT);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(server.new_files(ALICE).len(), 1, "one bounce");
}

#[test]
fn nonexistent_domain_bounces_with_5_1_2() {
    let Some(rig) = Rig::new() else { return };
    let server = mailroom(rig.config("", ""), &[]);
    send(&server, &["someone@no-such-domain.test"], "nxdomain");
    let files = dsns(&server, 1);
    let dsn = parse_dsn(&files[0]);
    let r = check_report(&dsn);
    assert_eq!(field(&r, "Action"), "failed", "{dsn:#}");
    assert_eq!(field(&r, "Status"), "5.1.2", "{dsn:#}");
    wait_queue_empty(&server, DELIVERY_WAIT);
}

#[test]
fn expiry_bounces_with_a_dsn() {
    let Some(rig) = Rig::new() else { return };
    // 450 to every attempt; the message expires after 3 s in the queue.
    let _rx = rig.receiver("rx", &["127.0.0.2"], &[]);
    let server = mailroom(rig.config("max_queue_lifetime = \"3s\"", ""), &[]);
    send(&server, &["later-1@one.test"], "expire me");
    let files = dsns(&server, 1);
    let dsn = parse_dsn(&files[0]);
    let r = check_report(&dsn);
    eprintln!("expiry DSN recipient block: {r:#}");
    assert!(field(&r, "Final-Recipient").ends_with("later-1@one.test"), "{dsn:#}");
    assert_eq!(field(&r, "Action"), "failed", "{dsn:#}");
    let status = field(&r, "Status");
    assert!(status.starts_with("4.") || status.starts_with("5."), "{status}");
    assert!(field(&r, "Diagnostic-Code").contains("450"), "the last remote reply: {dsn:#}");
    assert!(!field(&r, "Last-Attempt-Date").is_empty(), "{dsn:#}");
    wait_queue_empty(&server, DELIVERY_WAIT);
}

#[test]
fn notify_never_gets_no_dsn() {
    let Some(rig) = Rig::new() else { return };
    let _rx = rig.receiver("rx", &["127.0.0.2"], &[]);
    let server = mailroom(rig.config("", ""), &[]);
    let mut s = submission(&server, ALICE);
    let a = transaction(&mut s, ALICE, "", &[("refuse-quiet@one.test", "NOTIFY=NEVER")], "never");
    assert_eq!(a.rcpts[0].code, 250, "{a:?}");
    a.id();
    // The control: the same failure without NOTIFY=NEVER bounces.
    let b = transaction(&mut s, ALICE, "", &[("refuse-loud@one.test", "")], "default notify");
    b.id();
    let files = dsns(&server, 1);
    wait_queue_empty(&server, DELIVERY_WAIT);
    std::thread::sleep(Duration::from_secs(1));
    let files_now = files_in(&server.maildir(ALICE).join("new"));
    assert_eq!(files_now.len(), 1, "only the control bounced: {files_now:?}");
    let dsn = parse_dsn(&files[0]);
    assert!(field(&check_report(&dsn), "Final-Recipient").ends_with("refuse-loud@one.test"), "{dsn:#}");
}

#[test]
fn notify_success_to_a_hop_without_dsn_gets_a_relayed_dsn() {
    let Some(rig) = Rig::new() else { return };
    let rx = rig.receiver("rx", &["127.0.0.2"], &[]);
    let server = mailroom(rig.config("", ""), &[]);
    let mut s = submission(&server, ALICE);
    let sent = transaction(&mut s, ALICE, "ENVID=track-1", &[("bob@one.test", "NOTIFY=SUCCESS,FAILURE")], "tell me");
    assert_eq!(sent.rcpts[0].code, 250, "{sent:?}");
    sent.id();
    let got = rx.wait_messages(1, DELIVERY_WAIT);
    assert_eq!(got[0].rcpts(), vec!["bob@one.test"]);
    let files = dsns(&server, 1);
    let dsn = parse_dsn(&files[0]);
    let r = check_report(&dsn);
    assert!(field(&r, "Final-Recipient").ends_with("bob@one.test"), "{dsn:#}");
    assert_eq!(field(&r, "Action"), "relayed", "the next hop does not offer DSN: {dsn:#}");
    assert!(field(&r, "Status").starts_with("2."), "{dsn:#}");
    assert_eq!(field(&dsn["per_message"], "Original-Envelope-Id"), "track-1", "{dsn:#}");
}

/// RFC 3461 §5.2.2 / RFC 3464: a message mailroom delivers itself, to a local mailbox, with NOTIFY=SUCCESS
/// gets a "delivered" DSN; a local recipient without it gets none.
#[test]
fn notify_success_on_local_delivery_gets_a_delivered_dsn() {
    let Some(rig) = Rig::new() else { return };
    let server = mailroom(rig.config("", ""), &["bob@example.test", "carol@example.test"]);
    let mut s = submission(&server, ALICE);
    let sent = transaction(
        &mut s,
        ALICE,
        "ENVID=local-1",
        &[("bob@example.test", "NOTIFY=SUCCESS ORCPT=rfc822;bob@example.test"), ("carol@example.test", "")],
        "local and tracked",
    );
    assert!(sent.rcpts.iter().all(|r| r.code == 250), "{sent:?}");
    wait_mailbox(&server, "bob@example.test", 1, DELIVERY_WAIT);
    let files = dsns(&server, 1);
    let dsn = parse_dsn(&files[0]);
    let r = check_report(&dsn);
    assert!(field(&r, "Final-Recipient").ends_with("bob@example.test"), "{dsn:#}");
    assert_eq!(field(&r, "Action"), "delivered", "{dsn:#}");
    assert!(field(&r, "Status").starts_with("2."), "{dsn:#}");
    assert!(field(&r, "Original-Recipient").ends_with("bob@example.test"), "{dsn:#}");
    assert_eq!(field(&dsn["per_message"], "Original-Envelope-Id"), "local-1", "{dsn:#}");
    assert_eq!(dsn["recipients"].as_array().map(Vec::len), Some(1), "carol asked for nothing: {dsn:#}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(server.new_files(ALICE).len(), 1, "one report, not one per recipient");
}

#[test]
fn dsn_parameters_are_passed_to_a_hop_with_dsn() {
    let Some(rig) = Rig::new() else { return };
    let rx = rig.receiver("rx", &["127.0.0.2"], &["--dsn"]);
    let server = mailroom(rig.config("", ""), &[]);
    let mut s = submission(&server, ALICE);
    let sent = transaction(
        &mut s,
        ALICE,
        "RET=HDRS ENVID=track-2",
        &[("bob@one.test", "NOTIFY=SUCCESS ORCPT=rfc822;bob@one.test")],
        "pass it on",
    );
    sent.id();
    let got = rx.wait_messages(1, DELIVERY_WAIT);
    let mail: Vec<String> =
        got[0].env["mail_options"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    let rcpt = got[0].env["rcpt_options"][0].as_str().unwrap().to_string();
    assert!(mail.iter().any(|o| o == "RET=HDRS"), "{mail:?}");
    assert!(mail.iter().any(|o| o == "ENVID=track-2"), "ENVID passed on as sent: {mail:?}");
    assert!(rcpt.contains("NOTIFY=SUCCESS"), "{rcpt}");
    // The address type is case-insensitive (RFC 3461 §4.2); the address itself travels unchanged.
    assert!(rcpt.to_ascii_lowercase().contains("orcpt=rfc822;bob@one.test"), "{rcpt}");
    wait_queue_empty(&server, DELIVERY_WAIT);
    std::thread::sleep(Duration::from_secs(1));
    assert!(server.new_files(ALICE).is_empty(), "the hop with DSN reports success itself, mailroom does not");
}

#[test]
fn message_larger_than_the_remote_size_bounces_5_3_4_without_sending() {
    let Some(rig) = Rig::new() else { return };
    // The remote advertises SIZE 200; the message (headers + Received) is larger.
    let rx = rig.receiver("rx", &["127.0.0.2"], &["--size", "200"]);
    let server = mailroom(rig.config("", ""), &[]);
    send(&server, &["bob@one.test"], "too big for the remote");
    let files = dsns(&server, 1);
    let dsn = parse_dsn(&files[0]);
    let r = check_report(&dsn);
    assert_eq!(field(&r, "Action"), "failed", "{dsn:#}");
    assert_eq!(field(&r, "Status"), "5.3.4", "{dsn:#}");
    assert!(rx.messages().is_empty(), "nothing was sent to the remote");
}

#[test]
fn delay_warning_is_sent_once_then_the_expiry_bounce() {
    let Some(rig) = Rig::new() else { return };
    let _rx = rig.receiver("rx", &["127.0.0.2"], &[]);
    let server = mailroom(rig.config("delay_warning = \"1s\"\nmax_queue_lifetime = \"5s\"", ""), &[]);
    send(&server, &["later-2@one.test"], "slow road");
    let files = dsns(&server, 2);
    wait_queue_empty(&server, DELIVERY_WAIT);
    std::thread::sleep(Duration::from_secs(1));
    let files_now = files_in(&server.maildir(ALICE).join("new"));
    assert_eq!(files_now.len(), 2, "one delay warning and one bounce: {files_now:?}");
    let mut actions: Vec<String> =
        files.iter().map(|f| field(&check_report(&parse_dsn(f)), "Action")).collect::<Vec<_>>();
    actions.sort();
    assert_eq!(actions, vec!["delayed", "failed"], "RFC 3464 actions");
}

#[test]
fn utf8_address_to_a_server_without_smtputf8_bounces_5_6_7() {
    let Some(rig) = Rig::new() else { return };
    let rx = rig.receiver("rx", &["127.0.0.2"], &["--no-smtputf8"]);
    let server = mailroom(rig.config("", ""), &[]);
    let mut s = submission(&server, ALICE);
    let sent = transaction(&mut s, ALICE, "SMTPUTF8", &[("bøb@one.test", "")], "utf8 rcpt");
    assert_eq!(sent.rcpts[0].code, 250, "{sent:?}");
    sent.id();
    let files = dsns(&server, 1);
    let dsn = parse_dsn(&files[0]);
    let r = check_report(&dsn);
    assert_eq!(field(&r, "Action"), "failed", "{dsn:#}");
    assert_eq!(field(&r, "Status"), "5.6.7", "RFC 6531 §3.2: {dsn:#}");
    // RFC 6533: a UTF-8 address is reported in the UTF-8 form of the report.
    assert_eq!(dsn["status_type"], "message/global-delivery-status", "{dsn:#}");
    assert_eq!(field(&r, "Final-Recipient"), "utf-8; bøb@one.test", "{dsn:#}");
    assert!(rx.messages().is_empty(), "nothing was sent to the remote");
}

/// One message from 127.0.0.1 (inside relay_networks) on the plain SMTP port.
fn relay_from_network(server: &Server, from: &str, to: &str, subject: &str) {
    let mut s = crate::common::Smtp::connect(server.port);
    assert_eq!(s.read_reply().code, 220);
    s.ehlo();
    s.expect(&format!("MAIL FROM:<{from}>"), 250);
    s.expect(&format!("RCPT TO:<{to}>"), 250);
    let r = s.data(format!("Subject: {subject}\r\n\r\nhello\r\n").as_bytes());
    assert_eq!(r.code, 250, "{r:?}");
}

#[test]
fn bounce_to_a_remote_sender_leaves_through_the_queue_with_a_null_sender() {
    let Some(rig) = Rig::new() else { return };
    let rx = rig.receiver("rx", &["127.0.0.2"], &[]);
    let server = mailroom(rig.config("relay_networks = [\"127.0.0.0/8\"]", ""), &[]);
    relay_from_network(&server, "carol@one.test", "refuse-z@one.test", "bounce me back");
    // The bounce goes to carol@one.test, whose MX is the same receiver.
    let got = rx.wait_messages(1, DELIVERY_WAIT);
    let dsn = &got[0];
    assert_eq!(dsn.rcpts(), vec!["carol@one.test"]);
    let from = dsn.env["mail_from"].as_str().unwrap();
    assert!(from.is_empty() || from == "<>", "a DSN has the null reverse path: {from:?}");
    let text = dsn.text();
    assert!(text.starts_with("Received: ") && text.contains("by mx.e2e.test"), "mailroom's Received header:\n{text}");
    assert!(text.contains("multipart/report") && text.contains("refuse-z@one.test"), "{text}");
    wait_queue_empty(&server, DELIVERY_WAIT);
    assert!(server.new_files(ALICE).is_empty());
}

#[test]
fn failing_null_sender_mail_goes_to_the_postmaster_never_bounced() {
    let Some(rig) = Rig::new() else { return };
    let rx = rig.receiver("rx", &["127.0.0.2"], &[]);
    let server = mailroom(rig.config("relay_networks = [\"127.0.0.0/8\"]", ""), &[]);
    relay_from_network(&server, "", "refuse-w@one.test", "a bounce that bounces");
    let files = wait_mailbox(&server, "postmaster@example.test", 1, DELIVERY_WAIT);
    let text = String::from_utf8_lossy(&std::fs::read(&files[0]).unwrap()).into_owned();
    assert!(text.contains("refuse-w@one.test"), "the double bounce names the recipient:\n{text}");
    wait_queue_empty(&server, DELIVERY_WAIT);
    std::thread::sleep(Duration::from_secs(1));
    assert!(rx.messages().is_empty(), "nothing was sent out for a failed null-sender message");
    assert_eq!(server.new_files("postmaster@example.test").len(), 1);
}
