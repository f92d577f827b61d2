//! SMTP smuggling: an end-of-data look-alike inside the message, followed by a second transaction (to
//! bob, from a forged sender). A server that takes the look-alike for `<CRLF>.<CRLF>` runs the smuggled
//! transaction; one that passes it on lets the next hop do so (SEC Consult, December 2023:
//! CVE-2023-51764 Postfix, CVE-2023-51765 sendmail, CVE-2023-51766 Exim, and Cisco Secure Email).
//!
//! mailroom ends DATA only at `<CRLF>.<CRLF>` and refuses any message holding a bare CR or bare LF with
//! `550 5.5.2` after the real end of data, so nothing another MTA might read differently is ever stored.
//! Each case checks that exact reply, that the next reply belongs to the next command (no smuggled
//! command was answered), that bob's mailbox is empty and that the smuggled text is stored nowhere.
//! The payload goes out in two writes, split inside the look-alike, so a decoder that only looks within
//! one read would be caught too.

use std::time::Duration;

use crate::support::*;

/// The second transaction the attacker hides after the look-alike; its own DATA ends with the real
/// `<CRLF>.<CRLF>` that the outer message ends with.
const SMUGGLED: &str = "MAIL FROM:<ceo@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n\
                        From: ceo@example.test\r\nSubject: smuggled\r\n\r\nSMUGGLED-PAYLOAD wire the money\r\n";

/// What the server must make of the whole thing.
enum Outcome {
    /// The look-alike holds a bare CR or LF: the message is refused with 550 5.5.2.
    Refused,
    /// No bare line ending (NUL, a leading space, a stuffed dot): it is message text. One message is
    /// stored for alice, holding the smuggled lines as inert text; bob still gets nothing.
    StoredAsText,
}

/// Sends one message to alice whose body holds LOOKALIKE then the smuggled transaction, over DATA.
fn smuggle_data(lookalike: &[u8], outcome: Outcome) {
    let server = server();
    let mut c = ehlo(&server);
    expect_reply(&mut c, "MAIL FROM:<sender@client.example>", 250, "2.1.0");
    expect_reply(&mut c, &format!("RCPT TO:<{ALICE}>"), 250, "2.1.5");
    c.expect("DATA", 354);
    let mut first = b"From: sender@client.example\r\nSubject: innocent\r\n\r\nHello alice".to_vec();
    let cut = first.len() + lookalike.len() / 2;
    first.extend_from_slice(lookalike);
    first.extend_from_slice(SMUGGLED.as_bytes());
    first.extend_from_slice(b".\r\n");
    let (a, b) = first.split_at(cut);
    c.send(a);
    std::thread::sleep(Duration::from_millis(20));
    c.send(b);
    let r = c.read_reply();
    match outcome {
        Outcome::Refused => assert_reply(&r, 550, "5.5.2", "end of data after a look-alike"),
        Outcome::StoredAsText => assert_reply(&r, 250, "2.0.0", "end of data after a look-alike"),
    }
    // The very next reply answers HELP: had any smuggled command run, its reply would come first.
    let next = c.cmd("HELP");
    assert_eq!(next.code, 214, "a smuggled command was answered: {next:?}");
    c.expect("QUIT", 221);
    assert_bob_untouched(&server);
    match outcome {
        Outcome::Refused => {
            assert_nowhere(&server, "SMUGGLED-PAYLOAD");
            assert!(messages(&server, ALICE).is_empty(), "the refused message was stored");
        }
        Outcome::StoredAsText => {
            let got = messages(&server, ALICE);
            assert_eq!(got.len(), 1, "exactly one message, for alice");
            assert!(contains(&got[0].1, b"SMUGGLED-PAYLOAD"), "the smuggled lines are part of alice's message");
        }
    }
    assert_no_unexpected_paths(&server, &[ALICE, BOB]);
    assert_still_serves(&server);
}

/// CVE-2023-51764 (Postfix): `<LF>.<LF>` ends data for Postfix when `smtpd_forbid_bare_newline` is off.
#[test]
fn cve_2023_51764_postfix_lf_dot_lf() {
    smuggle_data(b"\n.\n", Outcome::Refused);
}

/// CVE-2023-51765 (sendmail) and CVE-2023-51766 (Exim): `<LF>.<CR><LF>`, a bare LF before the dot.
#[test]
fn cve_2023_51765_51766_sendmail_exim_lf_dot_crlf() {
    smuggle_data(b"\n.\r\n", Outcome::Refused);
}

/// SEC Consult 2023 (Cisco Secure Email, and any MTA treating a lone CR as a line end): `<CR>.<CR>`.
#[test]
fn smuggling_cr_dot_cr() {
    smuggle_data(b"\r.\r", Outcome::Refused);
}

/// SEC Consult 2023: `<CR><LF>.<CR>` (Cisco Secure Email accepted a bare CR after the dot).
#[test]
fn smuggling_crlf_dot_cr() {
    smuggle_data(b"\r\n.\r", Outcome::Refused);
}

/// SEC Consult 2023: `<CR><LF>.<LF>`, a bare LF after the dot.
#[test]
fn smuggling_crlf_dot_lf() {
    smuggle_data(b"\r\n.\n", Outcome::Refused);
}

/// SEC Consult 2023: `<CR>.<CR><LF>`, a bare CR before the dot.
#[test]
fn smuggling_cr_dot_crlf() {
    smuggle_data(b"\r.\r\n", Outcome::Refused);
}

/// SEC Consult 2023: `<LF>.<CR>`, bare endings on both sides of the dot.
#[test]
fn smuggling_lf_dot_cr() {
    smuggle_data(b"\n.\r", Outcome::Refused);
}

/// `<CR><LF>.<CR><CR><LF>`: a stray CR between the dot and the real CRLF (a lenient decoder trims it).
#[test]
fn smuggling_crlf_dot_cr_crlf() {
    smuggle_data(b"\r\n.\r\r\n", Outcome::Refused);
}

/// `<CR><LF><NUL>.<CR><LF>`: a NUL before the dot (C implementations that stop at NUL see `.CRLF`).
/// No bare line ending, so it is text: stored for alice, nothing runs.
#[test]
fn smuggling_nul_before_dot() {
    smuggle_data(b"\r\n\0.\r\n", Outcome::StoredAsText);
}

/// `<CR><LF>.<NUL><CR><LF>`: a NUL after the dot; a C-string comparison with ".\r\n" could stop early.
#[test]
fn smuggling_dot_nul_crlf() {
    smuggle_data(b"\r\n.\0\r\n", Outcome::StoredAsText);
}

/// `<CR><LF><SP>.<CR><LF>`: whitespace before the dot (a decoder that trims lines would end here).
#[test]
fn smuggling_space_before_dot() {
    smuggle_data(b"\r\n .\r\n", Outcome::StoredAsText);
}

/// `<CR><LF>..<CR><LF>`: a dot-stuffed dot line is a line holding ".", never the end (RFC 5321 §4.5.2).
#[test]
fn smuggling_stuffed_dot_line() {
    smuggle_data(b"\r\n..\r\n", Outcome::StoredAsText);
}

/// The same look-alikes inside a BDAT chunk (RFC 3030): no dot has any meaning there, the chunk's size
/// alone ends it. A bare LF or CR still refuses the message (DATA and BDAT refuse the same messages, so a
/// message taken by BDAT can never be re-sent by DATA with a different end); `<CRLF>.<CRLF>` is stored as
/// a line holding a dot. Nothing smuggled runs either way.
#[test]
fn smuggling_via_bdat() {
    let server = server();
    for (lookalike, refused) in [(&b"\n.\n"[..], true), (b"\r\n.\n", true), (b"\r.\r", true), (b"\r\n.\r\n", false)] {
        let mut c = ehlo(&server);
        expect_reply(&mut c, "MAIL FROM:<sender@client.example>", 250, "2.1.0");
        expect_reply(&mut c, &format!("RCPT TO:<{ALICE}>"), 250, "2.1.5");
        let mut chunk = b"Subject: innocent\r\n\r\nHello alice".to_vec();
        chunk.extend_from_slice(lookalike);
        chunk.extend_from_slice(SMUGGLED.as_bytes());
        chunk.extend_from_slice(b".\r\n");
        c.send(format!("BDAT {} LAST\r\n", chunk.len()).as_bytes());
        c.send(&chunk);
        let r = c.read_reply();
        if refused {
            assert_reply(&r, 550, "5.5.2", &format!("BDAT with {lookalike:?}"));
        } else {
            assert_reply(&r, 250, "2.0.0", &format!("BDAT with {lookalike:?}"));
        }
        assert_eq!(c.cmd("HELP").code, 214, "a smuggled command was answered");
        c.expect("QUIT", 221);
    }
    assert_bob_untouched(&server);
    assert_eq!(messages(&server, ALICE).len(), 1, "only the CRLF.CRLF case is stored, as text");
    assert_no_unexpected_paths(&server, &[ALICE, BOB]);
    assert_still_serves(&server);
}

/// A BDAT chunk that the server refuses (no MAIL yet) is still read and dropped whole (RFC 3030 §2):
/// treating its octets as commands would run a transaction hidden inside it.
#[test]
fn smuggling_inside_refused_bdat_chunk() {
    let server = server();
    let mut c = ehlo(&server);
    let chunk = format!("{SMUGGLED}.\r\n");
    c.send(format!("BDAT {} LAST\r\n", chunk.len()).as_bytes());
    c.send(chunk.as_bytes());
    let r = c.read_reply();
    assert_reply(&r, 503, "5.5.1", "BDAT without MAIL");
    assert_eq!(c.cmd("HELP").code, 214, "a command inside the refused chunk was answered");
    c.expect("QUIT", 221);
    assert_bob_untouched(&server);
    assert_nowhere(&server, "SMUGGLED-PAYLOAD");
    assert_still_serves(&server);
}

/// Pipelined commands after a real end of data are the client's own next transaction, not smuggling, and
/// run; but when the message before them held a bare LF (the smuggling shape), the message is refused
/// and only the honest follow-up runs. Guards against "fixing" smuggling by dropping pipelined input.
#[test]
fn smuggling_real_end_then_pipelined_transaction() {
    let server = server();
    let mut c = ehlo(&server);
    let mut wire = format!("MAIL FROM:<s@client.example>\r\nRCPT TO:<{ALICE}>\r\nDATA\r\n").into_bytes();
    c.send(&wire);
    assert_reply(&c.read_reply(), 250, "2.1.0", "MAIL");
    assert_reply(&c.read_reply(), 250, "2.1.5", "RCPT");
    assert_eq!(c.read_reply().code, 354);
    wire = b"Subject: one\r\n\r\nbare\nLF\r\n.\r\n".to_vec();
    wire.extend_from_slice(format!("MAIL FROM:<s@client.example>\r\nRCPT TO:<{BOB}>\r\nDATA\r\n").as_bytes());
    c.send(&wire);
    assert_reply(&c.read_reply(), 550, "5.5.2", "the message with a bare LF");
    assert_reply(&c.read_reply(), 250, "2.1.0", "the next MAIL");
    assert_reply(&c.read_reply(), 250, "2.1.5", "the next RCPT");
    assert_eq!(c.read_reply().code, 354);
    let r = send_body(&mut c, b"Subject: two\r\n\r\nhonest follow-up\r\n");
    assert_reply(&r, 250, "2.0.0", "the honest follow-up");
    c.expect("QUIT", 221);
    assert_eq!(messages(&server, BOB).len(), 1, "the follow-up transaction ran");
    assert!(messages(&server, ALICE).is_empty(), "the bare-LF message was refused");
    assert_still_serves(&server);
}
