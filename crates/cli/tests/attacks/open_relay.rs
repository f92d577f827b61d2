//! Open relay probes from an unauthenticated client: the classic tests that relay checkers (the 1990s
//! ORBS / MAPS RSS probes, `rlytest`, nmap's smtp-open-relay script) run against port 25. An address that
//! leaves our domains is refused with `550 5.7.1`; an address that only looks like routing inside one of
//! our domains (`%`, `!`, a quoted `@`) names a local part, which is no user here: `550 5.1.1`. mailroom has
//! no percent-hack or bang-path routing at all, so nothing is ever forwarded anywhere.
//!
//! Each probe then tries DATA: `554 5.5.1` shows that no recipient was taken, and nothing is stored or
//! queued.
//!
//! Every probe runs twice: against a server with the default configuration, and against one where
//! relaying is switched on for others (submission listeners for authenticated users, and
//! `[delivery] relay_networks` naming another loopback address, 127.0.0.2, but not the prober's
//! 127.0.0.1). Outbound delivery must change nothing for a client that may not relay.

use std::net::Ipv4Addr;

use crate::common::{files_under, Opts, Server, Smtp};
use crate::support::*;

/// The loopback address that may relay in [`relay_server`]; the probes come from 127.0.0.1.
const RELAY_CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// A server with relaying on for authenticated users and for [`RELAY_CLIENT`] only. DNS goes to a
/// closed loopback port, so no lookup ever leaves the machine.
fn relay_server() -> Server {
    let config = format!(
        "{FAST_ERRORS}[delivery]\nrelay_networks = [\"{RELAY_CLIENT}/32\"]\n[dns]\nservers = [\"127.0.0.1:9\"]\n"
    );
    Server::start_with_users(Opts::example().with_submission().with_config(&config), &[ALICE, BOB])
}

/// Message and envelope files in the outbound queue (`<data>/queue/msg`, `<data>/queue/env`).
fn queued(server: &Server) -> usize {
    ["msg", "env"].iter().map(|d| files_under(&server.data.join("queue").join(d)).len()).sum()
}

/// One probe: MAIL FROM:<FROM>, RCPT TO:<RCPT> gets exactly CODE and an enhanced code starting with
/// ENHANCED (syntax errors are checked as `5.1.`; the exact one is `hostile_input`'s business), and DATA
/// finds no recipient; on the default server and on [`relay_server`].
fn probe(from: &str, rcpt: &str, code: u16, enhanced: &str) {
    probe_on(&server(), from, rcpt, code, enhanced);
    probe_on(&relay_server(), from, rcpt, code, enhanced);
}

fn probe_on(server: &Server, from: &str, rcpt: &str, code: u16, enhanced: &str) {
    let mut c = ehlo(server);
    expect_reply(&mut c, &format!("MAIL FROM:{from}"), 250, "2.1.0");
    let r = c.cmd(&format!("RCPT TO:{rcpt}"));
    assert_ne!(r.code / 100, 2, "relay probe {rcpt} accepted");
    assert!(r.code == code && r.text().starts_with(enhanced), "RCPT TO:{rcpt}: expected {code} {enhanced}, got {r:?}");
    expect_reply(&mut c, "DATA", 554, "5.5.1");
    c.expect("QUIT", 221);
    assert!(all_messages(server).is_empty(), "something was stored for {rcpt}");
    assert_eq!(queued(server), 0, "something was queued for {rcpt}");
    assert_still_serves(server);
}

/// The plain relay test: a stranger's mail to a foreign domain.
#[test]
fn relay_to_foreign_domain() {
    probe("<spammer@elsewhere.example>", "<victim@other.example>", 550, "5.7.1");
}

/// Our own domain as the sender (the probe that caught relays "open for local senders" in the 1990s;
/// sendmail 8.8 and early Exim configs trusted the envelope sender).
#[test]
fn relay_with_our_domain_as_sender() {
    probe("<alice@example.test>", "<victim@other.example>", 550, "5.7.1");
}

/// The null sender (bounces) to a foreign domain: backscatter relaying.
#[test]
fn relay_with_null_sender() {
    probe("<>", "<victim@other.example>", 550, "5.7.1");
}

/// The percent hack (`user%other.example@ourdomain`, RFC 1123 §5.2.16 style routing, sendmail and
/// Postfix's `allow_percent_hack`): no routing here, so it is a local part that is no user.
#[test]
fn relay_percent_hack() {
    probe("<spammer@elsewhere.example>", "<victim%other.example@example.test>", 550, "5.1.1");
}

/// The percent hack naming a real user's local part on the right side: still not alice.
#[test]
fn relay_percent_hack_to_local_user() {
    probe("<spammer@elsewhere.example>", "<alice%example.test@example.test>", 550, "5.1.1");
}

/// UUCP bang path inside our domain (`other.example!user@ourdomain`, Postfix `swap_bangpath`).
#[test]
fn relay_bang_path_in_local_part() {
    probe("<spammer@elsewhere.example>", "<other.example!victim@example.test>", 550, "5.1.1");
}

/// A bare bang path without a domain (`other!user`): not an RFC 5321 mailbox at all.
#[test]
fn relay_bare_bang_path() {
    probe("<spammer@elsewhere.example>", "<other!victim>", 501, "5.1.3");
}

/// A source route through us to a foreign domain (`<@ourdomain:user@other.example>`, RFC 821 §3.6
/// routing, deprecated by RFC 5321 Appendix C): the route is ignored, the mailbox is foreign.
#[test]
fn relay_source_route_to_foreign_domain() {
    probe("<spammer@elsewhere.example>", "<@example.test:victim@other.example>", 550, "5.7.1");
}

/// A source route through a foreign host to our user: the route is ignored (RFC 5321 §4.1.1.3 says
/// servers SHOULD ignore it), so it is plain local delivery to alice, never forwarded to other.example.
#[test]
fn relay_source_route_to_local_user_is_local_delivery() {
    let server = server();
    let mut c = ehlo(&server);
    expect_reply(&mut c, "MAIL FROM:<spammer@elsewhere.example>", 250, "2.1.0");
    expect_reply(&mut c, "RCPT TO:<@other.example,@third.example:alice@example.test>", 250, "2.1.5");
    let r = c.data(b"Subject: routed\r\n\r\nsource routed\r\n");
    assert_reply(&r, 250, "2.0.0", "source-routed local delivery");
    c.expect("QUIT", 221);
    let got = messages(&server, ALICE);
    assert_eq!(got.len(), 1, "delivered to alice");
    let text = String::from_utf8_lossy(&got[0].1);
    assert!(text.contains("for <alice@example.test>"), "the route is gone from the trace:\n{text}");
    assert!(!text.contains("other.example"), "nothing of the route is kept:\n{text}");
    assert_eq!(all_messages(&server).len(), 1, "stored nowhere else");
    assert_still_serves(&server);
}

/// A quoted `@` (`"user@other.example"@ourdomain`): one local part, no user.
#[test]
fn relay_quoted_at_sign() {
    probe("<spammer@elsewhere.example>", "<\"victim@other.example\"@example.test>", 550, "5.1.1");
}

/// An address literal of our own host (`user@[127.0.0.1]`): relay checkers use it because many servers
/// took their own IP as local and then routed the local part. Literals are never ours here.
#[test]
fn relay_address_literal_of_own_host() {
    probe("<spammer@elsewhere.example>", "<alice@[127.0.0.1]>", 550, "5.7.1");
}

/// The IPv6 form of the same probe.
#[test]
fn relay_ipv6_address_literal() {
    probe("<spammer@elsewhere.example>", "<alice@[IPv6:::1]>", 550, "5.7.1");
}

/// A general address literal (RFC 5321 §4.1.3 `tag:content`).
#[test]
fn relay_general_address_literal() {
    probe("<spammer@elsewhere.example>", "<alice@[x-tag:anything]>", 550, "5.7.1");
}

/// `postmaster@` a foreign domain: postmaster is always accepted, but only for our own domains.
#[test]
fn relay_postmaster_of_foreign_domain() {
    probe("<spammer@elsewhere.example>", "<postmaster@other.example>", 550, "5.7.1");
}

/// A subdomain of ours is not ours (suffix matching was a relay hole in early anti-relay rulesets).
#[test]
fn relay_subdomain_of_served_domain() {
    probe("<spammer@elsewhere.example>", "<alice@sub.example.test>", 550, "5.7.1");
}

/// A domain that merely ends with ours (`evilexample.test`).
#[test]
fn relay_domain_with_our_suffix() {
    probe("<spammer@elsewhere.example>", "<alice@evilexample.test>", 550, "5.7.1");
}

/// A trailing-dot FQDN (`user@ourdomain.`): not the RFC 5321 domain syntax.
#[test]
fn relay_trailing_dot_domain() {
    probe("<spammer@elsewhere.example>", "<alice@example.test.>", 501, "5.1.3");
}

/// Two `@` (`user@other.example@ourdomain`, the sendmail-era "double at" probe).
#[test]
fn relay_double_at_sign() {
    probe("<spammer@elsewhere.example>", "<victim@other.example@example.test>", 501, "5.1.3");
}

/// The control for the probes above: on [`relay_server`] relaying really is on — the client in
/// `relay_networks` gets its foreign recipient queued — while the same transaction from 127.0.0.1,
/// outside it, is refused and nothing of it is queued.
#[test]
fn relay_networks_admit_only_their_own_addresses() {
    let server = relay_server();
    let mut outside = ehlo(&server);
    expect_reply(&mut outside, "MAIL FROM:<cron@example.test>", 250, "2.1.0");
    expect_reply(&mut outside, "RCPT TO:<victim@other.example>", 550, "5.7.1");
    expect_reply(&mut outside, "QUIT", 221, "2.0.0");
    assert_eq!(queued(&server), 0, "nothing queued for the client outside relay_networks");

    let mut inside = Smtp::try_connect_from(RELAY_CLIENT, server.port).expect("connect from 127.0.0.2");
    assert_eq!(inside.read_reply().code, 220);
    inside.ehlo();
    expect_reply(&mut inside, "MAIL FROM:<cron@example.test>", 250, "2.1.0");
    let r = inside.cmd("RCPT TO:<victim@other.example>");
    assert!(
        r.is(250, "2.1.5"),
        "a client in relay_networks may relay (is the relay wired into `mailroom serve`?): {r:?}\n{}",
        log_tail(&server)
    );
    let r = inside.data(b"Subject: from cron\r\n\r\nreport\r\n");
    assert!(r.is(250, "2.0.0") && r.text().contains("queued as"), "{r:?}");
    expect_reply(&mut inside, "QUIT", 221, "2.0.0");
    assert!(all_messages(&server).is_empty(), "a foreign recipient is never stored locally");
    assert!(queued(&server) > 0, "the relayed message is in the queue");
    assert_still_serves(&server);
}

/// An authenticated submitter may relay, but a session that did not authenticate on the submission port
/// gets no further than MAIL (AUTH is required there), and relaying from the smtp port needs more than a
/// local sender address.
#[test]
fn submission_without_auth_cannot_relay() {
    let server = relay_server();
    let port = server.submission_port.expect("submission listener");
    let mut c = Smtp::try_connect(port).expect("connect to submission");
    assert_eq!(c.read_reply().code, 220);
    c.ehlo();
    let r = c.cmd("MAIL FROM:<alice@example.test>");
    assert!(r.code == 530 || r.is(538, "5.7.11"), "MAIL without AUTH on submission: {r:?}");
    let r = c.cmd("RCPT TO:<victim@other.example>");
    assert!(r.code / 100 == 5, "RCPT without AUTH: {r:?}");
    assert_eq!(queued(&server), 0);
    assert_still_serves(&server);
}

/// A mistyped relay setting must never pass silently (an open relay is one typo away): `check-config`
/// refuses unknown `[delivery]`/`[dns]` keys, malformed networks, values out of range, AUTH to a
/// relayhost without TLS and a password file it cannot read, each naming the key; a sound setup passes.
#[test]
fn check_config_refuses_bad_relay_settings_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("relay-password");
    std::fs::write(&password, "secret\n").unwrap();
    // Not readable by others: check-config refuses a password file that is.
    std::fs::set_permissions(&password, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let good = format!(
        "[delivery]\nrelay_networks = [\"127.0.0.1/32\", \"::1\"]\nrelayhost = \"[smart.example]:587\"\n\
         relayhost_user = \"me@example.test\"\nrelayhost_password_file = \"{}\"\nmax_queue_lifetime = \"2d\"\n\
         [dns]\nservers = [\"127.0.0.1:5353\"]\n",
        password.display()
    );
    let out = check_config(&good);
    assert!(out.status.success(), "a sound relay setup: {}", String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("secret"), "the password is never printed");
    let missing = dir.path().join("no-such-file");
    for (toml, named) in [
        ("[delivery]\nrelay_network = [\"0.0.0.0/0\"]\n".to_owned(), "relay_network"),
        ("[delivery]\nrelay_networks = [\"0.0.0.0/33\"]\n".to_owned(), "delivery.relay_networks"),
        ("[delivery]\nrelay_networks = [\"everyone\"]\n".to_owned(), "delivery.relay_networks"),
        ("[dns]\nservers = [\"resolver.example\"]\n".to_owned(), "servers"),
        ("[delivery]\nmax_hops = 0\n".to_owned(), "delivery.max_hops"),
        ("[delivery]\ntls = \"maybe\"\n".to_owned(), "tls"),
        (
            "[delivery]\nrelayhost = \"[smart.example]\"\nrelayhost_tls = \"none\"\nrelayhost_user = \"u\"\n\
             relayhost_password_file = \"/p\"\n"
                .to_owned(),
            "relayhost_tls",
        ),
        (
            format!(
                "[delivery]\nrelayhost = \"[smart.example]\"\nrelayhost_user = \"u\"\nrelayhost_password_file = \"{}\"\n",
                missing.display()
            ),
            "delivery.relayhost_password_file",
        ),
    ] {
        let out = check_config(&toml);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "passed check-config:\n{toml}");
        assert!(err.contains(named), "the error names {named}: {err}");
    }
}
