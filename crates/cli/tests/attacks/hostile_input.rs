//! Hostile addresses and parameters: shell metacharacters, path traversal, over-long parts, NUL and
//! control bytes, xtext that decodes to CR/LF, absurd sizes. Each gets its exact 5xx; afterwards the data
//! directory holds only the paths the server is meant to make (no client text reached a file name) and
//! the log has no raw CR, LF or NUL from the input (no client text started a log line).

use std::time::{Duration, Instant};

use crate::common::*;
use crate::support::*;

/// Where a probe line goes.
#[derive(Clone, Copy)]
enum At {
    /// Right after EHLO.
    Ehlo,
    /// After EHLO and a good MAIL FROM.
    Mail,
    /// After EHLO, MAIL FROM and RCPT TO alice.
    Rcpt,
}

/// Each LINE (raw bytes, CRLF added) on a fresh session at AT gets exactly CODE ENHANCED. Then the
/// checks every hostile-input case shares, and the still-serves check.
fn hostile(at: At, cases: &[(&[u8], u16, &str)]) {
    let server = server();
    for &(line, code, enhanced) in cases {
        let mut c = ehlo(&server);
        if matches!(at, At::Mail | At::Rcpt) {
            expect_reply(&mut c, "MAIL FROM:<sender@client.example>", 250, "2.1.0");
        }
        if matches!(at, At::Rcpt) {
            expect_reply(&mut c, &format!("RCPT TO:<{ALICE}>"), 250, "2.1.5");
        }
        let mut wire = line.to_vec();
        wire.extend_from_slice(b"\r\n");
        c.send(&wire);
        let r = c.read_reply();
        let what = String::from_utf8_lossy(line);
        if enhanced.ends_with('.') {
            // A class only (`5.1.`): the exact code is another case's business.
            assert!(
                r.code == code && r.text().starts_with(enhanced),
                "{what:?}: expected {code} {enhanced}*, got {r:?}"
            );
        } else {
            assert_reply(&r, code, enhanced, &format!("{what:?}"));
        }
        // The session is in a sane state: the next command is answered on its own.
        assert_eq!(c.cmd("NOOP").code, 250, "after {:?}", String::from_utf8_lossy(line));
        c.expect("QUIT", 221);
    }
    assert!(all_messages(&server).is_empty());
    assert_no_unexpected_paths(&server, &[ALICE, BOB]);
    assert_log_clean(&server, &["MAIL", "RCPT", "DATA", "X-Injected"]);
    assert_still_serves(&server);
}

/// CVE-2020-7247 (OpenSMTPD 6.6, January 2020): a MAIL FROM local part like `;sleep 66;` went unquoted
/// into the command line of the delivery agent, run by a shell as root. Not an RFC 5321 address: 501.
#[test]
fn cve_2020_7247_opensmtpd_shell_in_mail_from() {
    hostile(
        At::Ehlo,
        &[
            (b"MAIL FROM:<;sleep 66;>", 501, "5.1.7"),
            (b"MAIL FROM:<;sleep 66;@example.test>", 501, "5.1.7"),
            (b"MAIL FROM:<;/bin/sh -c 'id > /tmp/pwned';@example.test>", 501, "5.1.7"),
            (b"MAIL FROM:<$(id)@example.test>", 501, "5.1.7"),
        ],
    );
}

/// The same payload, legally quoted (`<";sleep 66;"@x>` is a valid RFC 5321 address): accepted as a
/// sender, as it must be, and it reaches the stored message only as the properly re-quoted Return-Path.
/// mailroom runs no shell and builds no path from it.
#[test]
fn cve_2020_7247_quoted_shell_sender_is_inert() {
    let server = server();
    let mut c = ehlo(&server);
    expect_reply(&mut c, "MAIL FROM:<\";sleep 66;`id`$(id)|x\"@evil.example>", 250, "2.1.0");
    expect_reply(&mut c, &format!("RCPT TO:<{ALICE}>"), 250, "2.1.5");
    let r = c.data(b"Subject: quoted\r\n\r\nhi\r\n");
    assert_reply(&r, 250, "2.0.0", "message from a quoted shell sender");
    c.expect("QUIT", 221);
    let got = messages(&server, ALICE);
    assert_eq!(got.len(), 1);
    let first = got[0].1.split(|&b| b == b'\n').next().unwrap();
    assert_eq!(first, &b"Return-Path: <\";sleep 66;`id`$(id)|x\"@evil.example>"[..], "re-quoted Return-Path");
    assert_no_unexpected_paths(&server, &[ALICE, BOB]);
    assert_log_clean(&server, &[]);
    assert_still_serves(&server);
}

/// Shell metacharacters in recipients: sendmail's `"|program"` recipients (the 1980s-90s pipe-to-program
/// holes, e.g. CERT CA-1990-01, CA-1995-08) and backticks or `$()` for any MTA that shells out.
/// Legal local parts are simply no user (550 5.1.1); illegal ones are syntax errors.
#[test]
fn shell_metacharacters_in_rcpt() {
    hostile(
        At::Mail,
        &[
            (b"RCPT TO:<\"|/bin/sh -c id\"@example.test>", 550, "5.1.1"),
            (b"RCPT TO:<|/usr/bin/id@example.test>", 550, "5.1.1"),
            (b"RCPT TO:<`id`@example.test>", 550, "5.1.1"),
            (b"RCPT TO:<\"a;rm -rf /\"@example.test>", 550, "5.1.1"),
            (b"RCPT TO:<$(id)@example.test>", 501, "5.1.3"),
            (b"RCPT TO:<a;id@example.test>", 501, "5.1.3"),
            (b"RCPT TO:<a&&id@example.test>", 550, "5.1.1"),
        ],
    );
}

/// Path traversal in the local part: Maildir paths are built from the user directory only, never from
/// what a client sent (docs/architecture.md, "The store and durability"), so `..` can name no file. Unquoted `..` is not even a dot-string.
#[test]
fn path_traversal_in_local_part() {
    hostile(
        At::Mail,
        &[
            (b"RCPT TO:<../../etc/passwd@example.test>", 501, "5.1.3"),
            (b"RCPT TO:<a/../b@example.test>", 501, "5.1.3"),
            (b"RCPT TO:<\"../../etc/passwd\"@example.test>", 550, "5.1.1"),
            (b"RCPT TO:<\"alice/../bob\"@example.test>", 550, "5.1.1"),
            (b"RCPT TO:<\"../bob\"@example.test>", 550, "5.1.1"),
            (b"RCPT TO:<\"/\"@example.test>", 550, "5.1.1"),
            (b"RCPT TO:<alice/..@example.test>", 501, "5.1.3"),
        ],
    );
}

/// Path traversal in the domain: a domain is LDH labels (RFC 5321 §4.1.2), so `..` and `/` are syntax
/// errors; a served domain is matched whole.
#[test]
fn path_traversal_in_domain() {
    hostile(
        At::Mail,
        &[
            (b"RCPT TO:<alice@../../etc>", 501, "5.1.3"),
            (b"RCPT TO:<alice@example.test/../../etc>", 501, "5.1.3"),
            (b"RCPT TO:<alice@..>", 501, "5.1.3"),
            (b"RCPT TO:<alice@example..test>", 501, "5.1.3"),
            (b"RCPT TO:<postmaster@../../tmp>", 501, "5.1.3"),
        ],
    );
}

/// Over-long parts (RFC 5321 §4.5.3.1: local part 64, domain 255, path 256 octets): Exim's 21Nails
/// and many older servers copied them into fixed buffers. 501 5.1.3 (bad destination syntax) at one past
/// each limit, 5.1.7 for the sender; at the limit the address is well-formed and simply no user.
#[test]
fn overlong_local_part_domain_and_path() {
    let local64 = format!("RCPT TO:<{}@example.test>", "a".repeat(64));
    let local65 = format!("RCPT TO:<{}@example.test>", "a".repeat(65));
    let quoted65 = format!("RCPT TO:<\"{}\"@example.test>", "a".repeat(65));
    let label64 = format!("RCPT TO:<a@{}.test>", "b".repeat(64));
    let domain256 = format!("RCPT TO:<a@{}test>", "abcdefghi.".repeat(25) + "abcdef.");
    let path257 = format!("RCPT TO:<{}@{}.test>", "a".repeat(64), vec!["c".repeat(50); 4].join("."));
    let from_long = format!("MAIL FROM:<{}@example.test>", "a".repeat(1000));
    hostile(
        At::Mail,
        &[
            (local64.as_bytes(), 550, "5.1.1"),
            (local65.as_bytes(), 501, "5.1.3"),
            (quoted65.as_bytes(), 501, "5.1.3"),
            (label64.as_bytes(), 501, "5.1.3"),
            (domain256.as_bytes(), 501, "5.1.3"),
            (path257.as_bytes(), 501, "5.1.3"),
        ],
    );
    // A malformed sender is X.1.7 (RFC 3463), a malformed recipient X.1.3.
    hostile(At::Ehlo, &[(from_long.as_bytes(), 501, "5.1.7")]);
}

/// RFC 3463: a malformed RCPT address is "X.1.3 Bad destination mailbox address syntax"; X.1.7 is for the
/// sender. (Seen while writing the cases above: RCPT syntax errors said 5.1.7.)
#[test]
fn rcpt_syntax_error_says_bad_destination_syntax() {
    hostile(At::Mail, &[(b"RCPT TO:<a b@example.test>", 501, "5.1.3"), (b"RCPT TO:<alice>", 501, "5.1.3")]);
    hostile(At::Ehlo, &[(b"MAIL FROM:<a b@example.test>", 501, "5.1.7")]);
}

/// NUL and control bytes in commands: C servers that stop at NUL see a different command than the one
/// logged or checked (sendmail and Exim both had NUL-in-address confusions), and a bare CR or LF inside a
/// line is the command-line form of smuggling. Every such line is refused whole.
#[test]
fn nul_and_control_bytes_in_commands() {
    hostile(
        At::Ehlo,
        &[
            (b"MAIL FROM:<a\0@client.example>", 500, "5.5.2"),
            (b"MAIL FROM:<a@client.example>\0RCPT TO:<bob@example.test>", 500, "5.5.2"),
            (b"MAIL FROM:<a@client.example>\rRCPT TO:<bob@example.test>", 500, "5.5.2"),
            (b"MAIL FROM:<a@client.example>\nRCPT TO:<bob@example.test>", 500, "5.5.2"),
            (b"MAIL FROM:<\x1b[2Ja@client.example>", 500, "5.5.2"),
            (b"MAIL FROM:<a@client.example>\x7f", 500, "5.5.2"),
            (b"MAIL FROM:<\xff\xfe@client.example>", 500, "5.5.2"),
            (b"NOOP\nX-Injected: yes", 500, "5.5.2"),
        ],
    );
    hostile(
        At::Mail,
        &[
            (b"RCPT TO:<bob@example.test>\0", 500, "5.5.2"),
            (b"RCPT TO:<\"a\0b\"@example.test>", 500, "5.5.2"),
            (b"RCPT TO:<\"a\x08b\"@example.test>", 500, "5.5.2"),
        ],
    );
}

/// CVE-2020-28021 (Exim 21Nails, "New-line injection into spool header file"): MAIL FROM's `AUTH=`
/// xtext decoded to CR/LF went raw into the spool header, forging spool lines (and so recipients,
/// and then root). xtext that decodes to any control byte is refused.
#[test]
fn cve_2020_28021_exim_xtext_auth_crlf() {
    hostile(
        At::Ehlo,
        &[
            (b"MAIL FROM:<a@client.example> AUTH=x+0D+0AMAIL", 501, "5.5.4"),
            (b"MAIL FROM:<a@client.example> AUTH=x+0ARCPT+20TO:<bob@example.test>", 501, "5.5.4"),
            (b"MAIL FROM:<a@client.example> AUTH=x+0D", 501, "5.5.4"),
            (b"MAIL FROM:<a@client.example> AUTH=x+00y", 501, "5.5.4"),
            (b"MAIL FROM:<a@client.example> AUTH=x+1B[2J", 501, "5.5.4"),
            (b"MAIL FROM:<a@client.example> AUTH=x+7F", 501, "5.5.4"),
            (b"MAIL FROM:<a@client.example> AUTH=x+0d+0a", 501, "5.5.4"),
            (b"MAIL FROM:<a@client.example> AUTH=x+", 501, "5.5.4"),
            (b"MAIL FROM:<a@client.example> AUTH=x+0", 501, "5.5.4"),
        ],
    );
}

/// CVE-2020-28022 (Exim 21Nails, heap overflow in extract_option() parsing MAIL/RCPT parameters):
/// malformed `keyword=value` shapes. Each is a clean 501/555 here.
#[test]
fn cve_2020_28022_exim_malformed_esmtp_parameters() {
    hostile(
        At::Ehlo,
        &[
            (b"MAIL FROM:<a@client.example> =", 555, "5.5.4"),
            (b"MAIL FROM:<a@client.example> SIZE==1", 501, "5.5.4"),
            (b"MAIL FROM:<a@client.example> SIZE=1 SIZE=2", 501, "5.5.4"),
            (b"MAIL FROM:<a@client.example> AUTH=<> AUTH=<>", 501, "5.5.4"),
            (b"MAIL FROM:<a@client.example> BODY=BINARYMIME", 555, "5.5.4"),
            (b"MAIL FROM:<a@client.example>SIZE=1", 501, "5.5.4"),
        ],
    );
    hostile(At::Mail, &[(b"RCPT TO:<alice@example.test> NOTIFY=NEVER ORCPT=rfc822;x+0D+0A", 555, "5.5.4")]);
}

/// `AUTH=` with an empty value: RFC 4954 §5 makes the value `xtext` (one or more characters) or `<>`.
/// An empty identity must not reach the trace header or a relay's MAIL FROM as `AUTH=`.
#[test]
fn empty_auth_parameter_is_a_syntax_error() {
    hostile(At::Ehlo, &[(b"MAIL FROM:<a@client.example> AUTH=", 501, "5.5.4")]);
}

/// Absurd SIZE values (RFC 1870): above u64, negative, not decimal, more than 20 digits. Integer parsing
/// that wraps would turn a huge declared size into a small one. 501 for each; the largest u64 is a
/// well-formed size that is too big: 552 5.3.4.
#[test]
fn absurd_size_values() {
    hostile(
        At::Ehlo,
        &[
            (b"MAIL FROM:<a@client.example> SIZE=99999999999999999999999", 501, "5.5.4"),
            (b"MAIL FROM:<a@client.example> SIZE=18446744073709551616", 501, "5.5.4"),
            (b"MAIL FROM:<a@client.example> SIZE=-1", 501, "5.5.4"),
            (b"MAIL FROM:<a@client.example> SIZE=+1", 501, "5.5.4"),
            (b"MAIL FROM:<a@client.example> SIZE=0x10", 501, "5.5.4"),
            (b"MAIL FROM:<a@client.example> SIZE=1e9", 501, "5.5.4"),
            (b"MAIL FROM:<a@client.example> SIZE=000000000000000000001", 501, "5.5.4"),
            (b"MAIL FROM:<a@client.example> SIZE=18446744073709551615", 552, "5.3.4"),
            (b"MAIL FROM:<a@client.example> SIZE=26214401", 552, "5.3.4"),
        ],
    );
}

/// Absurd BDAT sizes (RFC 3030): malformed ones are syntax errors, and no chunk is read for them.
/// (CVE-2020-28019, Exim 21Nails, was a BDAT error path that left state behind: the session must be
/// sane after each, which `hostile` checks with a NOOP.)
#[test]
fn absurd_bdat_sizes() {
    hostile(
        At::Rcpt,
        &[
            (b"BDAT 99999999999999999999999 LAST", 501, "5.5.4"),
            (b"BDAT 18446744073709551616 LAST", 501, "5.5.4"),
            (b"BDAT -1 LAST", 501, "5.5.4"),
            (b"BDAT 0x10", 501, "5.5.4"),
            (b"BDAT 1e3 LAST", 501, "5.5.4"),
            (b"BDAT", 501, "5.5.4"),
            (b"BDAT 10 LAST EXTRA", 501, "5.5.4"),
        ],
    );
}

/// The largest well-formed BDAT size (u64::MAX) after a good envelope: the chunk exceeds the size limit
/// at once (nothing is stored), and since its octets can never all arrive the session ends at
/// `data_timeout` with 421 4.4.2: the declared size cannot hold a connection open. `command_timeout` is
/// set longer, to show which of the two applies once the server waits for chunk octets.
#[test]
fn bdat_size_u64_max() {
    let server = server_with(&limits("data_timeout = \"1s\"\ncommand_timeout = \"4s\""));
    let mut c = ehlo(&server);
    expect_reply(&mut c, "MAIL FROM:<a@client.example>", 250, "2.1.0");
    expect_reply(&mut c, &format!("RCPT TO:<{ALICE}>"), 250, "2.1.5");
    let start = Instant::now();
    c.send(b"BDAT 18446744073709551615 LAST\r\nSubject: x\r\n\r\nhello\r\n");
    let r = c.read_reply();
    let took = start.elapsed();
    assert_reply(&r, 421, "4.4.2", "BDAT u64::MAX");
    assert!(took < Duration::from_millis(2500), "closed after {took:?}: command_timeout, not data_timeout, applied");
    assert!(c.wait_eof(), "closed after 421");
    assert!(all_messages(&server).is_empty());
    assert_no_unexpected_paths(&server, &[ALICE, BOB]);
    assert_still_serves(&server);
}

/// A HELO name is copied into the Received header: the most a client can put there is printable text or
/// a tab, never a line of its own (header injection through the trace header).
#[test]
fn header_injection_via_helo_name() {
    let server = server();
    let mut c = server.connect();
    expect_reply(&mut c, "EHLO x\rX-Injected: yes", 500, "5.5.2");
    expect_reply(&mut c, "EHLO evil.example\t(via trusted.example)", 501, "5.5.4");
    c.ehlo();
    expect_reply(&mut c, "MAIL FROM:<a@client.example>", 250, "2.1.0");
    expect_reply(&mut c, &format!("RCPT TO:<{ALICE}>"), 250, "2.1.5");
    assert_reply(&c.data(b"Subject: h\r\n\r\nhi\r\n"), 250, "2.0.0", "message");
    c.expect("QUIT", 221);
    let got = messages(&server, ALICE);
    let trace = trace_block(&got[0].1);
    for line in trace.lines().skip(1) {
        let ours = ["Delivered-To:", "Received:", "\t"];
        assert!(ours.iter().any(|p| line.starts_with(p)), "a header line of its own: {line:?}");
    }
    assert!(!trace.contains("X-Injected"));
    assert_log_clean(&server, &["X-Injected"]);
    assert_still_serves(&server);
}
