//! Inbound checks end to end (issue 12): SPF, DKIM, DMARC and ARC of mail arriving on the smtp listener,
//! recorded in an Authentication-Results header, against a real DNS server (Debian's `knotd` serving the
//! zone `test.` on loopback), with Python's implementations as the reference: python3-spf on the same
//! records, python3-authres parsing the header mailroom wrote, python3-dkim signing.
//!
//! Run: `cargo test -p mailroom --test inbound`. Needs `knot`, `python3-spf`, `python3-authres`,
//! `python3-dkim` from Debian. A missing tool fails the test unless `MAILROOM_SKIP_INBOUND=1` is set.

mod common;

#[path = "inbound/support.rs"]
mod support;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use support::*;

/// Sends one message from `from` (MAIL FROM and From) and returns the stored file's bytes.
fn deliver(server: &common::Server, helo: &str, from: &str, subject: &str) -> Vec<u8> {
    let before = stored(server, "").len();
    let (mail, end) =
        send(server, helo, from, &message(if from.is_empty() { "x@helo.test" } else { from }, subject, ""));
    assert_eq!(mail, 250, "{end:?}");
    let end = end.unwrap();
    assert_eq!(end.code, 250, "{end:?}");
    let files = stored(server, "");
    assert_eq!(files.len(), before + 1);
    let newest =
        files.iter().find(|f| std::fs::read(f).unwrap().windows(subject.len()).any(|w| w == subject.as_bytes()));
    std::fs::read(newest.expect("the message is stored")).unwrap()
}

/// The spf result word of a stored message's Authentication-Results field.
fn spf_of(msg: &[u8]) -> String {
    let ar = fields(msg, "Authentication-Results");
    assert_eq!(ar.len(), 1, "one Authentication-Results field: {ar:?}");
    let spf = ar[0].split(';').map(str::trim).find(|r| r.starts_with("spf=")).expect("an spf result");
    spf.split_whitespace().next().unwrap().trim_start_matches("spf=").to_string()
}

#[test]
fn spf_results_are_named_as_rfc_7208_names_them_and_python_spf_agrees() {
    let Some(dns) = Dns::start() else { return };
    if !have(PYTHON, &["-c", "import spf, dns.resolver"]) {
        return;
    }
    let server = mailroom(&dns.server(), "");
    let cases = [
        ("a@pass.test", "pass"),
        ("a@fail.test", "fail"),
        ("a@softfail.test", "softfail"),
        ("a@neutral.test", "neutral"),
        ("a@none.test", "none"),
        ("a@permerror.test", "permerror"),
        ("a@void.test", "permerror"),
        ("a@other.example", "temperror"),
    ];
    for (i, (from, want)) in cases.iter().enumerate() {
        let msg = deliver(&server, "client.e2e.test", from, &format!("spf-case-{i}"));
        assert_eq!(spf_of(&msg), *want, "{from}: {}", String::from_utf8_lossy(&msg));
        let domain = from.split('@').nth(1).unwrap();
        let field = &fields(&msg, "Authentication-Results")[0];
        assert!(field.contains(&format!("smtp.mailfrom={domain}")), "{field}");
        let python = python("spf_check.py", &[&dns.port.to_string(), "127.0.0.1", from, "client.e2e.test"]);
        assert_eq!(python.trim(), *want, "python3-spf on {from}");
    }
    // Again, with the voids of the first round cached (VOID_CACHE_TTL): the same results, the void
    // lookups still counted.
    for (i, (from, want)) in cases.iter().enumerate() {
        let msg = deliver(&server, "client.e2e.test", from, &format!("spf-again-{i}"));
        assert_eq!(spf_of(&msg), *want, "{from}, second time");
    }
    // The null reverse path: the HELO name is checked (RFC 7208 §2.3).
    let msg = deliver(&server, "helo.test", "", "spf-helo");
    assert_eq!(spf_of(&msg), "pass");
    assert!(fields(&msg, "Authentication-Results")[0].contains("smtp.helo=helo.test"));
}

#[test]
fn spf_temperror_when_the_dns_server_does_not_answer_and_later_messages_do_not_wait() {
    // A socket that takes queries and never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let server = mailroom(&addr, "dns_budget = \"500ms\"");
    let start = Instant::now();
    let first = deliver(&server, "client.e2e.test", "a@pass.test", "silent-1");
    let first_took = start.elapsed();
    assert_eq!(spf_of(&first), "temperror");
    assert!(fields(&first, "Authentication-Results")[0].contains("dmarc=temperror"), "{first:?}");
    assert!(first_took >= Duration::from_millis(450), "the first message waits its DNS budget: {first_took:?}");
    // The failures are cached: the next messages from the domain do not wait again.
    for i in 2..=4 {
        let start = Instant::now();
        let msg = deliver(&server, "client.e2e.test", "a@pass.test", &format!("silent-{i}"));
        let took = start.elapsed();
        assert_eq!(spf_of(&msg), "temperror");
        assert!(took < Duration::from_millis(300), "message {i} took {took:?}");
    }
    drop(silent);
}

#[test]
fn temperror_defer_answers_451_and_spf_fail_reject_answers_550_at_mail() {
    let Some(dns) = Dns::start() else { return };
    let server = mailroom(&dns.server(), "temperror = \"defer\"\nspf_fail = \"reject\"");
    let (code, reply) = send(&server, "client.e2e.test", "a@fail.test", &message("a@fail.test", "r1", ""));
    let reply = reply.unwrap();
    assert!(code == 550 && reply.is(550, "5.7.23"), "{reply:?}");
    let (code, reply) = send(&server, "client.e2e.test", "a@other.example", &message("a@other.example", "r2", ""));
    let reply = reply.unwrap();
    assert!(code == 451 && reply.is(451, "4.4.3"), "{reply:?}");
    // softfail is not fail: accepted.
    let msg = deliver(&server, "client.e2e.test", "a@softfail.test", "r3");
    assert_eq!(spf_of(&msg), "softfail");
    assert_eq!(stored(&server, "").len(), 1);
}

#[test]
fn dmarc_reject_is_refused_under_enforce_and_tagged_under_report_only() {
    let Some(dns) = Dns::start() else { return };
    // SPF passes for pass.test, but the From domain is reject.test: not aligned.
    let forged = message("ceo@reject.test", "forged", "");
    let enforce = mailroom(&dns.server(), "");
    let (_, end) = send(&enforce, "client.e2e.test", "a@pass.test", &forged);
    let end = end.unwrap();
    assert!(end.is(550, "5.7.1"), "{end:?}");
    assert!(stored(&enforce, "").is_empty() && stored(&enforce, ".Junk").is_empty(), "nothing stored");
    // Aligned mail of the same p=reject domain passes.
    let msg = deliver(&enforce, "client.e2e.test", "a@pass.test", "aligned");
    assert!(fields(&msg, "Authentication-Results")[0].contains("dmarc=pass header.from=pass.test"), "{msg:?}");

    let report = mailroom(&dns.server(), "dmarc = \"report-only\"");
    let (_, end) = send(&report, "client.e2e.test", "a@pass.test", &forged);
    assert_eq!(end.unwrap().code, 250);
    let files = stored(&report, "");
    assert_eq!(files.len(), 1);
    let field = &fields(&std::fs::read(&files[0]).unwrap(), "Authentication-Results")[0];
    assert!(field.contains("spf=pass") && field.contains("dmarc=fail header.from=reject.test"), "{field}");
}

#[test]
fn dmarc_quarantine_failure_lands_in_junk() {
    let Some(dns) = Dns::start() else { return };
    let server = mailroom(&dns.server(), "");
    let (_, end) = send(&server, "client.e2e.test", "a@pass.test", &message("boss@quarantine.test", "q", ""));
    assert_eq!(end.unwrap().code, 250);
    assert!(stored(&server, "").is_empty(), "not in the inbox");
    let junk = stored(&server, ".Junk");
    assert_eq!(junk.len(), 1, "in .Junk/new/");
    let field = &fields(&std::fs::read(&junk[0]).unwrap(), "Authentication-Results")[0];
    assert!(field.contains("dmarc=fail header.from=quarantine.test"), "{field}");
    assert!(server.maildir(RCPT).join(".Junk/maildirfolder").exists());
}

#[test]
fn a_forged_authentication_results_header_is_removed_and_ours_parses() {
    let Some(dns) = Dns::start() else { return };
    if !have(PYTHON, &["-c", "import authres"]) {
        return;
    }
    let server = mailroom(&dns.server(), "");
    let forged = format!(
        "Authentication-Results: {HOSTNAME}; dkim=pass header.d=reject.test\r\n\
         authentication-results: (x) MX.E2E.TEST;\r\n\tdmarc=pass header.from=reject.test\r\n\
         Authentication-Results: other.example; spf=pass smtp.mailfrom=x.example\r\n"
    );
    let (_, end) = send(&server, "client.e2e.test", "a@pass.test", &message("a@pass.test", "ar", &forged));
    assert_eq!(end.unwrap().code, 250);
    let file = &stored(&server, "")[0];
    let msg = std::fs::read(file).unwrap();
    let ours: Vec<String> = fields(&msg, "Authentication-Results")
        .into_iter()
        .filter(|f| f.to_ascii_lowercase().trim_start_matches("(x)").trim_start().starts_with(HOSTNAME))
        .collect();
    assert_eq!(ours.len(), 1, "only our own field is left: {}", String::from_utf8_lossy(&msg));
    assert!(ours[0].contains("spf=pass") && ours[0].contains("dkim=none"), "{ours:?}");
    assert!(fields(&msg, "Authentication-Results").iter().any(|f| f.starts_with("other.example;")), "others stay");
    // Placement: right below our Return-Path, Delivered-To (one recipient) and Received, above what the
    // message arrived with.
    let names = field_names(&msg);
    assert_eq!(
        &names[..5],
        ["Return-Path", "Delivered-To", "Received", "Authentication-Results", "Authentication-Results"]
    );
    assert!(fields(&msg, "Authentication-Results")[1].starts_with("other.example"));
    // The stored file's size in its name still matches (the insert kept `,S=`).
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.contains(&format!(",S={}", msg.len())), "{name} vs {}", msg.len());

    // python3-authres parses what mailroom wrote (the others removed first: one field).
    let only_ours = msg_with_only_our_field(&msg);
    let path = file.with_extension("ours");
    std::fs::write(&path, only_ours).unwrap();
    let parsed = python("authres_parse.py", &[path.to_str().unwrap()]);
    let mut lines = parsed.lines();
    assert_eq!(lines.next(), Some(HOSTNAME));
    let rest: Vec<&str> = lines.collect();
    assert_eq!(rest[0], "spf=pass smtp.mailfrom=pass.test", "{parsed}");
    assert!(rest.contains(&"dmarc=pass header.from=pass.test"), "{parsed}");
    assert!(rest.iter().any(|l| l.starts_with("arc=none")), "{parsed}");
}

/// The stored message without the Authentication-Results fields other than the first (ours).
fn msg_with_only_our_field(msg: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(msg);
    let (head, body) = text.split_once("\n\n").unwrap();
    let mut out = String::new();
    let mut seen = 0;
    let mut skipping = false;
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if !skipping {
                out.push_str(line);
                out.push('\n');
            }
            continue;
        }
        skipping = line.to_ascii_lowercase().starts_with("authentication-results") && {
            seen += 1;
            seen > 1
        };
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    format!("{out}\n{body}").into_bytes()
}

#[test]
fn trusted_and_unchecked_clients_get_no_header() {
    let Some(dns) = Dns::start() else { return };
    let config = format!("[dns]\nservers = [\"{}\"]\n\n[limits]\ntrusted_networks = [\"127.0.0.0/8\"]\n", dns.server());
    let trusted = common::Server::start_with_users(common::Opts::example().with_config(&config), &[RCPT]);
    let msg = deliver(&trusted, "client.e2e.test", "a@fail.test", "trusted");
    assert!(fields(&msg, "Authentication-Results").is_empty());
    let off = mailroom(&dns.server(), "checks = false");
    let (_, end) = send(&off, "client.e2e.test", "a@pass.test", &message("ceo@reject.test", "off", ""));
    assert_eq!(end.unwrap().code, 250, "no DMARC with checks off");
    assert!(fields(&std::fs::read(&stored(&off, "")[0]).unwrap(), "Authentication-Results").is_empty());
}

#[test]
fn an_aligned_dkim_pass_passes_dmarc_despite_an_spf_fail_and_a_changed_body_is_refused() {
    let Some(dns) = Dns::start() else { return };
    if !have(PYTHON, &["-c", "import dkim, nacl"]) {
        return;
    }
    let server = mailroom(&dns.server(), "");
    // dkim.test: SPF fails for 127.0.0.1, DMARC p=reject with strict DKIM alignment.
    let signed = dkim_sign(&message("news@dkim.test", "signed", ""));
    let (mail, end) = send(&server, "client.e2e.test", "news@dkim.test", &signed);
    assert_eq!((mail, end.as_ref().map(|r| r.code)), (250, Some(250)), "{end:?}");
    let msg = std::fs::read(&stored(&server, "")[0]).unwrap();
    let field = &fields(&msg, "Authentication-Results")[0];
    assert!(field.contains("spf=fail smtp.mailfrom=dkim.test"), "{field}");
    assert!(field.contains("dkim=pass header.d=dkim.test"), "{field}");
    assert!(field.contains("header.s=s1"), "{field}");
    assert!(field.contains("dmarc=pass header.from=dkim.test"), "{field}");

    // One byte of the body changed after signing: dkim=fail, so DMARC fails and p=reject refuses it.
    let tampered = signed.replace("Hello.", "Hello!");
    let (_, end) = send(&server, "client.e2e.test", "news@dkim.test", &tampered);
    let end = end.unwrap();
    assert!(end.is(550, "5.7.1"), "{end:?}");
    let report = mailroom(&dns.server(), "dmarc = \"report-only\"");
    let (_, end) = send(&report, "client.e2e.test", "news@dkim.test", &tampered);
    assert_eq!(end.unwrap().code, 250);
    let field = &fields(&std::fs::read(&stored(&report, "")[0]).unwrap(), "Authentication-Results")[0];
    assert!(field.contains("dkim=fail reason=\"body hash mismatch\" header.d=dkim.test"), "{field}");
    assert!(field.contains("dmarc=fail"), "{field}");
}

#[test]
fn an_arc_chain_from_dkimpy_verifies_and_a_changed_body_breaks_it() {
    let Some(dns) = Dns::start() else { return };
    if !have(PYTHON, &["-c", "import dkim"]) {
        return;
    }
    let server = mailroom(&dns.server(), "dmarc = \"report-only\"");
    let forwarded =
        message("a@pass.test", "arc", "Authentication-Results: fwd.test; spf=pass smtp.mailfrom=pass.test\r\n");
    let sealed = arc_seal(&forwarded);
    let msg = deliver_raw(&server, &sealed, "arc");
    let field = &fields(&msg, "Authentication-Results")[0];
    assert!(field.contains("arc=pass"), "{field}");

    let broken = sealed.replace("Hello.", "Hello!");
    let msg = deliver_raw(&server, &broken, "arc");
    let field = &fields(&msg, "Authentication-Results")[0];
    assert!(field.contains("arc=fail"), "{field}");
}

/// Sends `message` from a@pass.test and returns the newest stored file.
fn deliver_raw(server: &common::Server, message: &str, what: &str) -> Vec<u8> {
    let before = stored(server, "");
    let (_, end) = send(server, "client.e2e.test", "a@pass.test", message);
    assert_eq!(end.as_ref().map(|r| r.code), Some(250), "{what}: {end:?}");
    let after = stored(server, "");
    let new: Vec<_> = after.iter().filter(|f| !before.contains(f)).collect();
    assert_eq!(new.len(), 1, "{what}");
    std::fs::read(new[0]).unwrap()
}

#[test]
fn a_slow_spf_record_does_not_turn_a_forged_from_into_temperror() {
    let Some(dns) = Dns::start() else { return };
    // Queries for names with a `slow` label are held 3 s by a forwarder in front of knotd.
    let port = free_udp_tcp_port();
    let mut proxy = std::process::Command::new(PYTHON)
        .arg(script("slow_dns.py"))
        .args([&port.to_string(), &dns.port.to_string(), "3"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("slow_dns.py");
    let mut ready = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(proxy.stdout.as_mut().unwrap()), &mut ready).unwrap();
    assert_eq!(ready.trim(), "ready");
    let server = mailroom(&format!("127.0.0.1:{port}"), "dns_budget = \"1s\"");
    // SPF of slow.test spends the whole budget; DMARC of reject.test still runs on its reserve.
    let (_, end) = send(&server, "client.e2e.test", "a@slow.test", &message("ceo@reject.test", "slow", ""));
    let end = end.unwrap();
    let _ = proxy.kill();
    let _ = proxy.wait();
    assert!(end.is(550, "5.7.1"), "{end:?}");
    assert!(stored(&server, "").is_empty());
}
