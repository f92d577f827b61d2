//! Address routing over SMTP (issue 13): aliases, loops, catch-all, subaddress folders, postmaster@ and
//! abuse@, Delivered-To, one copy per mailbox across recipients, alias changes seen by a running server,
//! and `mailroom alias add|list|remove`. Forwarding to external addresses (the queue, SRS) is in
//! `routing_forward.rs`.
//!
//! Run: `cargo test -p mailroom --test routing`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{mailroom, poll, settle_data, user_add, Opts, Server, Smtp};

const ALICE: &str = "alice@example.test";
const BOB: &str = "bob@example.test";

fn alias_add(data: &Path, address: &str, targets: &[&str]) {
    let mut args = vec!["alias", "add", address];
    args.extend_from_slice(targets);
    let out = mailroom(data, &args);
    assert!(out.status.success(), "alias add: {}", String::from_utf8_lossy(&out.stderr));
}

/// A server for example.test with Alice and Bob, aliases added by `prepare`, and `config`.
fn server(config: &str, prepare: impl FnOnce(&Path)) -> Server {
    Server::start_prepared(Opts::example().with_config(config), |data| {
        user_add(data, ALICE);
        user_add(data, BOB);
        prepare(data);
    })
}

fn hello(server: &Server) -> Smtp {
    let mut s = server.connect();
    s.ehlo();
    s
}

/// One message from outside to RCPTS, every RCPT expected to get `250`.
fn deliver(server: &Server, rcpts: &[&str], subject: &str) {
    let mut s = hello(server);
    s.expect("MAIL FROM:<someone@elsewhere.test>", 250);
    for r in rcpts {
        s.expect(&format!("RCPT TO:<{r}>"), 250);
    }
    let msg = format!("From: someone@elsewhere.test\r\nSubject: {subject}\r\n\r\nhello\r\n");
    let reply = s.data(msg.as_bytes());
    assert_eq!(reply.code, 250, "{reply:?}\n{}", server.log_text());
    settle_data(&server.data);
}

fn read(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned()
}

fn header<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    let head = msg.split("\n\n").next().unwrap_or_default();
    head.lines()
        .filter_map(|l| l.split_once(": ").filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
        .collect()
}

#[test]
fn an_alias_delivers_to_each_member_once() {
    let server = server("", |data| {
        alias_add(data, "sales@example.test", &[ALICE, "team@example.test"]);
        alias_add(data, "team@example.test", &[BOB, ALICE]);
    });
    // Alice is reached three ways (directly, through sales, through team): one copy.
    deliver(&server, &["sales@example.test", ALICE, "Team@Example.Test"], "to the sales team");
    assert_eq!(server.new_files(ALICE).len(), 1, "{}", server.log_text());
    assert_eq!(server.new_files(BOB).len(), 1);
    let msg = read(&server.new_files(BOB)[0]);
    assert!(header(&msg, "Delivered-To").is_empty(), "no Delivered-To with several recipients:\n{msg}");
}

#[test]
fn an_alias_loop_is_refused_at_rcpt_with_550_5_4_6_and_logged() {
    let server = server("", |data| {
        alias_add(data, "ping@example.test", &["pong@example.test"]);
        alias_add(data, "pong@example.test", &["ping@example.test", ALICE]);
    });
    let mut s = hello(&server);
    s.expect("MAIL FROM:<someone@elsewhere.test>", 250);
    let r = s.cmd("RCPT TO:<ping@example.test>");
    assert!(r.is(550, "5.4.6"), "{r:?}");
    // The rest of the session goes on.
    s.expect(&format!("RCPT TO:<{ALICE}>"), 250);
    let log = wait_log(&server, "alias loop");
    assert!(log.contains("ping@example.test -> pong@example.test -> ping@example.test"), "{log}");
}

fn wait_log(server: &Server, needle: &str) -> String {
    poll(Duration::from_secs(5), Duration::from_millis(20), || {
        let t = server.log_text();
        t.contains(needle).then_some(t)
    })
    .unwrap_or_else(|| panic!("{needle:?} not in the log:\n{}", server.log_text()))
}

#[test]
fn a_catch_all_takes_every_unknown_local_part_of_its_domain() {
    let server = server("", |data| alias_add(data, "@example.test", &[ALICE]));
    deliver(&server, &["whoever@example.test", "x.y.z@EXAMPLE.test"], "catch me");
    deliver(&server, &[BOB], "for bob");
    assert_eq!(server.new_files(ALICE).len(), 1);
    assert_eq!(server.new_files(BOB).len(), 1, "a user is not caught");
    // Another domain's unknown users are not ours to catch.
    let mut s = hello(&server);
    s.expect("MAIL FROM:<someone@elsewhere.test>", 250);
    let r = s.cmd("RCPT TO:<whoever@other.test>");
    assert!(r.is(550, "5.7.1"), "{r:?}");
}

fn make_folder(data: &Path, addr: &str, name: &str) {
    let dir = common::maildir(data, addr).join(format!(".{name}"));
    for sub in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
}

#[test]
fn a_subaddress_lands_in_its_folder_or_the_inbox_with_delivered_to() {
    let server = server("", |data| make_folder(data, ALICE, "shop"));
    deliver(&server, &["alice+shop@example.test"], "shop order");
    let shop = common::files_in(&server.maildir(ALICE).join(".shop/new"));
    assert_eq!(shop.len(), 1, "{}", server.log_text());
    assert!(server.new_files(ALICE).is_empty(), "not in the inbox");
    let msg = read(&shop[0]);
    assert_eq!(header(&msg, "Delivered-To"), ["alice+shop@example.test"], "{msg}");
    assert!(msg.starts_with("Return-Path: <someone@elsewhere.test>\nDelivered-To: "), "{msg}");
    deliver(&server, &["alice+news@example.test"], "no such folder");
    let inbox = server.new_files(ALICE);
    assert_eq!(inbox.len(), 1, "without a .news folder the inbox");
    assert_eq!(header(&read(&inbox[0]), "Delivered-To"), ["alice+news@example.test"]);
}

#[test]
fn subaddressing_can_be_turned_off() {
    let server = server("[routing]\nrecipient_delimiter = \"\"\n", |_| {});
    let mut s = hello(&server);
    s.expect("MAIL FROM:<someone@elsewhere.test>", 250);
    let r = s.cmd("RCPT TO:<alice+shop@example.test>");
    assert!(r.is(550, "5.1.1"), "{r:?}");
}

#[test]
fn a_subaddress_detail_never_reaches_another_mailbox_or_folder() {
    let server = server("", |data| {
        make_folder(data, ALICE, "shop");
        make_folder(data, BOB, "inbox");
    });
    // Quoted where a dot-string cannot hold them; each is Alice, in her inbox.
    let sneaky = [
        "alice+./bob@example.test",
        "\"alice+../bob\"@example.test",
        "\"alice+.shop\"@example.test",
        "\"alice+shop/..\"@example.test",
    ];
    for (i, to) in sneaky.iter().enumerate() {
        deliver(&server, &[to], &format!("sneaky {i}"));
    }
    assert_eq!(server.new_files(ALICE).len(), sneaky.len(), "all in Alice's inbox:\n{}", server.log_text());
    assert!(common::files_in(&server.maildir(ALICE).join(".shop/new")).is_empty());
    assert!(server.new_files(BOB).is_empty());
    assert!(common::files_under(&server.maildir(BOB)).is_empty(), "nothing reached Bob's Maildir");
}

#[test]
fn postmaster_and_abuse_go_where_routing_postmaster_says() {
    let server = server(&format!("[routing]\npostmaster = [\"{BOB}\"]\n"), |data| {
        alias_add(data, "abuse@example.test", &[ALICE]);
    });
    deliver(&server, &["postmaster@example.test"], "to the postmaster");
    deliver(&server, &["abuse@example.test"], "abuse report");
    assert_eq!(server.new_files(BOB).len(), 1, "postmaster@ goes to [routing] postmaster");
    assert_eq!(server.new_files(ALICE).len(), 1, "an alias for abuse@ says otherwise");
    assert!(server.new_files("postmaster@example.test").is_empty());
    // Without the setting, both reach the postmaster mailbox, as before.
    let plain = server_without_postmaster();
    deliver(&plain, &["abuse@example.test"], "abuse report");
    deliver(&plain, &["PostMaster@example.test"], "postmaster");
    assert_eq!(plain.new_files("postmaster@example.test").len(), 2, "{}", plain.log_text());
}

fn server_without_postmaster() -> Server {
    server("", |_| {})
}

#[test]
fn alias_changes_reach_a_running_server_within_a_second() {
    let server = server("", |_| {});
    let mut s = hello(&server);
    s.expect("MAIL FROM:<someone@elsewhere.test>", 250);
    assert!(s.cmd("RCPT TO:<sales@example.test>").is(550, "5.1.1"));
    let added = Instant::now();
    alias_add(&server.data, "sales@example.test", &[BOB]);
    let seen = poll(Duration::from_secs(5), Duration::from_millis(20), || {
        (s.cmd("RCPT TO:<sales@example.test>").code == 250).then(|| added.elapsed())
    });
    let took = seen.unwrap_or_else(|| panic!("the alias was never seen:\n{}", server.log_text()));
    // One second of reload interval; the rest is slack for a loaded machine.
    assert!(took < Duration::from_millis(1800), "took {took:?}");
    let out = mailroom(&server.data, &["alias", "remove", "sales@example.test"]);
    assert!(out.status.success());
    let gone = poll(Duration::from_secs(5), Duration::from_millis(20), || {
        (s.cmd("RCPT TO:<sales@example.test>").code == 550).then_some(())
    });
    assert!(gone.is_some(), "the removal was never seen");
}

#[test]
fn alias_cli_adds_lists_and_removes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    alias_add(data, "Sales@Example.Test", &[ALICE, "carol@remote.test"]);
    alias_add(data, "sales@example.test", &[BOB]);
    alias_add(data, "@example.test", &[ALICE]);
    let list = mailroom(data, &["alias", "list"]);
    assert!(list.status.success());
    assert_eq!(
        String::from_utf8_lossy(&list.stdout),
        "@example.test -> alice@example.test\nsales@example.test -> alice@example.test, carol@remote.test, bob@example.test\n"
    );
    let out = mailroom(data, &["alias", "remove", "sales@example.test", "carol@remote.test"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = mailroom(data, &["alias", "remove", "nobody@example.test"]);
    assert!(!out.status.success(), "removing a missing alias fails");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such alias"));
    let out = mailroom(data, &["alias", "add", "../x@example.test", ALICE]);
    assert!(!out.status.success(), "a bad address is refused");
    let out = mailroom(data, &["alias", "add", "x@example.test"]);
    assert!(!out.status.success(), "an alias needs a target");
    let list = mailroom(data, &["alias", "list"]);
    assert_eq!(
        String::from_utf8_lossy(&list.stdout),
        "@example.test -> alice@example.test\nsales@example.test -> alice@example.test, bob@example.test\n"
    );
}
