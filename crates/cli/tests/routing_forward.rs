//! Forwarding with the Sender Rewriting Scheme (issue 13), end to end: an alias with local and external
//! members; the external copy leaves through the queue with an SRS0 sender at the forwarding domain,
//! which Python's `spf` module (Debian python3-spf) evaluates as pass against that domain's SPF record on
//! the loopback DNS server (knotd); a bounce to the SRS address reaches the original sender; a tampered
//! SRS address is refused.
//!
//! Reuses the outbound rig (`outbound/support.rs`: knotd, aiosmtpd receivers on 127.0.0.2...). Run:
//! `cargo test -p mailroom --test routing_forward`. A missing tool fails unless `MAILROOM_SKIP_OUTBOUND=1`.

mod common;

#[allow(dead_code)]
#[path = "outbound/support.rs"]
mod support;

use std::path::Path;
use std::process::Command;

use common::{mailroom, user_add, Opts, Server, Smtp};
use support::{Dns, Got, Receiver, DELIVERY_WAIT, PYTHON, ZONE};

const ALICE: &str = "alice@example.test";
const BOB: &str = "bob@example.test";
/// The original sender: its domain's MX is the receiver on 127.0.0.2, its SPF allows only 192.0.2.1.
const DAVE: &str = "dave@mx.test";
/// The external member of the alias (MX: the receiver on 127.0.0.2).
const FRIEND: &str = "friend@one.test";

/// The outbound test zone plus SPF records: the forwarding domain allows loopback, the sender's does not.
fn zone() -> String {
    format!("{ZONE}example TXT \"v=spf1 ip4:127.0.0.0/8 -all\"\nmx      TXT \"v=spf1 ip4:192.0.2.1 -all\"\n")
}

struct Rig {
    dns: Dns,
    receiver: Receiver,
    server: Server,
    _dir: tempfile::TempDir,
}

/// knotd, a receiver on 127.0.0.2, and mailroom with Alice, Bob, `sales@` -> Alice, Bob, FRIEND and
/// `old@` -> an address the receiver refuses.
/// Loopback may relay (`relay_networks`), for the mixed-sender case.
fn rig() -> Option<Rig> {
    if !support::have(PYTHON, &["-c", "import aiosmtpd, spf, dns.resolver"]) {
        return None;
    }
    let dns = Dns::start_zone(&zone())?;
    let port = support::mx_port();
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(&dir.path().join("rx"), &["127.0.0.2"], port, &[]);
    let config = support::config(&dns, port, "relay_networks = [\"127.0.0.1/32\"]", "");
    let server = Server::start_prepared(Opts::example().with_config(&config), |data| {
        user_add(data, ALICE);
        user_add(data, BOB);
        alias_add(data, "sales@example.test", &[ALICE, BOB, FRIEND]);
        alias_add(data, "old@example.test", &["refuse-me@one.test"]);
    });
    Some(Rig { dns, receiver, server, _dir: dir })
}

fn alias_add(data: &Path, address: &str, targets: &[&str]) {
    let mut args = vec!["alias", "add", address];
    args.extend_from_slice(targets);
    let out = mailroom(data, &args);
    assert!(out.status.success(), "alias add: {}", String::from_utf8_lossy(&out.stderr));
}

fn session(server: &Server) -> Smtp {
    let mut s = server.connect();
    s.ehlo();
    s
}

/// One message from FROM to TO on the port-25 listener; the reply to the end of data.
fn send(server: &Server, from: &str, to: &[&str], subject: &str) -> common::Reply {
    let mut s = session(server);
    s.expect(&format!("MAIL FROM:<{from}>"), 250);
    for t in to {
        s.expect(&format!("RCPT TO:<{t}>"), 250);
    }
    s.data(format!("From: <{from}>\r\nTo: <{}>\r\nSubject: {subject}\r\n\r\nforward me\r\n", to[0]).as_bytes())
}

/// SPF of SENDER for the client address and HELO the receiver saw, through the rig's DNS server.
fn spf(rig: &Rig, got: &Got, sender: &str) -> String {
    let out = Command::new(PYTHON)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/routing/spf_check.py"))
        .args(["127.0.0.1", &rig.dns.port.to_string()])
        .arg(got.env["peer"].as_str().unwrap())
        .arg(sender)
        .arg(got.env["helo"].as_str().unwrap())
        .output()
        .expect("python3");
    assert!(out.status.success(), "spf_check.py: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The forwarded copy at the receiver: sent by DAVE to sales@, it must be there once.
fn forwarded(rig: &Rig) -> Got {
    let reply = send(&rig.server, DAVE, &["sales@example.test"], "to sales");
    assert_eq!(reply.code, 250, "{reply:?}\n{}", rig.server.log_text());
    assert!(reply.text().contains("queued as"), "{reply:?}");
    let got = rig.receiver.wait_messages(1, DELIVERY_WAIT);
    assert_eq!(got[0].rcpts(), [FRIEND], "{got:#?}");
    got[0].clone()
}

#[test]
fn an_alias_to_two_users_and_an_external_address_forwards_with_an_srs_sender() {
    let Some(rig) = rig() else { return };
    let got = forwarded(&rig);
    assert_eq!(rig.server.new_files(ALICE).len(), 1);
    assert_eq!(rig.server.new_files(BOB).len(), 1);
    let sender = got.env["mail_from"].as_str().unwrap().to_string();
    assert!(sender.starts_with("SRS0=") && sender.ends_with("=mx.test=dave@example.test"), "{sender}");
    assert_eq!(got.header("Delivered-To").as_deref(), Some("sales@example.test"), "{}", got.text());
    assert_eq!(got.header("Subject").as_deref(), Some("to sales"));
    // The destination's SPF check passes for the rewritten sender, and would fail for the original.
    let pass = spf(&rig, &got, &sender);
    assert!(pass.starts_with("pass"), "SPF of {sender}: {pass}");
    let fail = spf(&rig, &got, DAVE);
    assert!(fail.starts_with("fail"), "SPF of {DAVE} (the check must be able to fail): {fail}");
}

#[test]
fn a_bounce_to_the_srs_address_reaches_the_original_sender_and_a_tampered_one_is_refused() {
    let Some(rig) = rig() else { return };
    let srs = forwarded(&rig).env["mail_from"].as_str().unwrap().to_string();
    // The destination bounces: to the SRS address, with the null sender.
    let reply = send(&rig.server, "", &[&srs], "Undelivered Mail Returned to Sender");
    assert_eq!(reply.code, 250, "{reply:?}\n{}", rig.server.log_text());
    let got = rig.receiver.wait_messages(2, DELIVERY_WAIT);
    let bounce = got.iter().find(|g| g.rcpts() == [DAVE]).unwrap_or_else(|| panic!("no bounce for {DAVE}: {got:#?}"));
    assert_eq!(bounce.env["mail_from"].as_str(), Some("<>"), "the bounce keeps its null sender");
    assert_eq!(bounce.header("Subject").as_deref(), Some("Undelivered Mail Returned to Sender"));
    // Upper case on the way (a relay may do it) is still our address.
    let mut s = session(&rig.server);
    s.expect("MAIL FROM:<>", 250);
    s.expect(&format!("RCPT TO:<{}>", srs.to_uppercase().replace("@EXAMPLE.TEST", "@example.test")), 250);
    s.expect("RSET", 250);
    // A changed hash, or another original sender under the same hash: 550 5.1.1.
    let mut hash: Vec<char> = srs.chars().collect();
    hash[5] = if hash[5] == 'A' { 'B' } else { 'A' };
    let tampered: String = hash.into_iter().collect();
    let forged = srs.replace("=dave@", "=mallory@");
    for bad in [&tampered, &forged] {
        s.expect("MAIL FROM:<>", 250);
        let r = s.cmd(&format!("RCPT TO:<{bad}>"));
        assert!(r.is(550, "5.1.1"), "{bad}: {r:?}");
        s.expect("RSET", 250);
    }
}

#[test]
fn forwarded_and_relayed_copies_with_different_senders_go_in_separate_transactions() {
    let Some(rig) = rig() else { return };
    // Loopback may relay: FRIEND directly keeps DAVE as sender; sales@ forwards with the SRS sender. One
    // queue entry has one sender, so the second kind waits for a new transaction (452 4.5.3).
    let mut s = session(&rig.server);
    s.expect(&format!("MAIL FROM:<{DAVE}>"), 250);
    s.expect(&format!("RCPT TO:<{FRIEND}>"), 250);
    let r = s.cmd("RCPT TO:<sales@example.test>");
    assert!(r.is(452, "4.5.3"), "{r:?}");
    s.expect(&format!("RCPT TO:<{ALICE}>"), 250);
    let reply = s.data(b"Subject: mixed\r\n\r\nhello\r\n");
    assert_eq!(reply.code, 250, "{reply:?}");
    let got = rig.receiver.wait_messages(1, DELIVERY_WAIT);
    assert_eq!(got[0].env["mail_from"].as_str(), Some(DAVE), "the relayed copy keeps its sender");
    assert_eq!(rig.server.new_files(ALICE).len(), 1);
}

#[test]
fn a_forward_the_destination_refuses_bounces_to_the_original_sender() {
    let Some(rig) = rig() else { return };
    let reply = send(&rig.server, DAVE, &["old@example.test"], "to an old address");
    assert_eq!(reply.code, 250, "{reply:?}");
    // Our relay's own report goes to the sender behind the SRS address, not to our postmaster.
    let got = rig.receiver.wait_messages(1, DELIVERY_WAIT);
    assert_eq!(got[0].rcpts(), [DAVE], "{got:#?}\n{}", rig.server.log_text());
    assert_eq!(got[0].env["mail_from"].as_str(), Some("<>"));
    assert!(got[0].text().contains("refuse-me@one.test"), "the report names the refused address:\n{}", got[0].text());
    assert!(rig.server.new_files("postmaster@example.test").is_empty());
}
