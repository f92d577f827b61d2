//! End-to-end over raw TCP: pipelining, BDAT against DATA, relay refusal, size limits and hostile
//! input (over-long lines, SMTP smuggling).

use crate::common::*;

const A: &str = "a@example.test";
const B: &str = "b@example.test";

/// RFC 2920: a batch of commands in one write is answered in order, and the replies are flushed
/// without the client sending anything more.
#[test]
fn pipelined_transaction_replies_in_order() {
    let server = Server::start_with_users(Opts::example(), &[A, B]);
    let mut c = server.connect();
    let ehlo = c.ehlo();
    assert!(ehlo.lines.iter().any(|l| l == "PIPELINING"), "{ehlo:?}");

    c.send(
        b"MAIL FROM:<s@client.e2e.test>\r\nRCPT TO:<a@example.test>\r\nRCPT TO:<b@example.test>\r\n\
          RCPT TO:<nobody@example.test>\r\nDATA\r\n",
    );
    let got: Vec<(u16, String)> = (0..5)
        .map(|_| {
            let r = c.read_reply();
            (r.code, r.text().to_owned())
        })
        .collect();
    let codes: Vec<u16> = got.iter().map(|g| g.0).collect();
    assert_eq!(codes, [250, 250, 250, 550, 354], "{got:?}");
    assert!(got[3].1.starts_with("5.1.1 "), "{got:?}");

    c.send(b"Subject: pipelined\r\n\r\nmsg\r\n.\r\nQUIT\r\n");
    let end = c.read_reply();
    assert!(end.is(250, "2.0.0"), "{end:?}");
    let quit = c.read_reply();
    assert_eq!(quit.code, 221, "{quit:?}");
    assert!(c.wait_eof(), "closed after 221");

    for u in [A, B] {
        let f = server.expect_new(u, 1);
        let stored = std::fs::read(&f[0]).unwrap();
        assert_eq!(strip_trace(&stored), b"Subject: pipelined\n\nmsg\n");
    }
}

/// Done-when: "BDAT and DATA store identical bytes". The BDAT message is split across two chunks in
/// the middle of a CRLF and has a line starting with a dot (no stuffing in BDAT, stuffed in DATA).
#[test]
fn bdat_and_data_store_identical_bytes() {
    let server = Server::start_with_users(Opts::example(), &[A, B]);
    let msg: &[u8] = b"From: s@client.e2e.test\r\nSubject: chunks\r\n\r\nline one\r\n.starts with a dot\r\n..two dots\r\n.\r\nx\r\nlast line\r\n";
    let cut = msg.iter().position(|&b| b == b'\r').unwrap() + 1; // after a CR, before its LF
    let (one, two) = msg.split_at(cut);

    let mut c = server.connect();
    let ehlo = c.ehlo();
    assert!(ehlo.lines.iter().any(|l| l == "CHUNKING"), "{ehlo:?}");
    c.expect("MAIL FROM:<s@client.e2e.test>", 250);
    c.expect(&format!("RCPT TO:<{A}>"), 250);
    c.send(format!("BDAT {}\r\n", one.len()).as_bytes());
    c.send(one);
    let r = c.read_reply();
    assert!(r.is(250, "2.0.0"), "{r:?}");
    c.send(format!("BDAT {} LAST\r\n", two.len()).as_bytes());
    c.send(two);
    let r = c.read_reply();
    assert!(r.is(250, "2.0.0"), "{r:?}");
    // DATA after BDAT in a fresh transaction on the same session.
    c.expect("MAIL FROM:<s@client.e2e.test>", 250);
    c.expect(&format!("RCPT TO:<{B}>"), 250);
    let r = c.data(msg);
    assert!(r.is(250, "2.0.0"), "{r:?}");
    c.expect("QUIT", 221);

    let fa = server.expect_new(A, 1);
    let fb = server.expect_new(B, 1);
    let sa = std::fs::read(&fa[0]).unwrap();
    let sb = std::fs::read(&fb[0]).unwrap();
    assert_eq!(
        String::from_utf8_lossy(strip_trace(&sa)),
        String::from_utf8_lossy(strip_trace(&sb)),
        "BDAT (left) and DATA (right) stored the same bytes"
    );
    assert_eq!(strip_trace(&sa), to_lf(msg).as_slice());
    // The trace blocks differ only in id/date and for-clause; both say ESMTP.
    assert!(trace_block(&sa).contains("with ESMTP id"));
    assert!(trace_block(&sb).contains("with ESMTP id"));
}

/// A domain this server does not serve is refused at RCPT with 550 5.7.1 (no open relay), also as
/// an address literal; the transaction goes on for local recipients.
#[test]
fn unserved_domain_is_refused_at_rcpt() {
    let server = Server::start_with_users(Opts::example(), &[A]);
    let mut c = server.connect();
    c.ehlo();
    c.expect("MAIL FROM:<s@client.e2e.test>", 250);
    for rcpt in ["someone@elsewhere.test", "a@example.test.evil.test", "a@[127.0.0.1]", "postmaster@elsewhere.test"] {
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
        assert!(r.is(550, "5.7.1"), "{rcpt}: {r:?}");
    }
    // Domains compare case-insensitively.
    let r = c.cmd("RCPT TO:<a@EXAMPLE.Test>");
    assert!(r.is(250, "2.1.5"), "{r:?}");
    let r = c.data(b"Subject: relay test\r\n\r\nbody\r\n");
    assert!(r.is(250, "2.0.0"), "{r:?}");
    c.expect("QUIT", 221);
    server.expect_new(A, 1);
    assert!(!server.data.join("mailboxes/elsewhere.test").exists(), "nothing made for an unserved domain");
}

/// No file may be left in the data dir's tmp/ or in any new/ or tmp/ of a mailbox.
fn assert_nothing_stored(server: &Server) {
    let tmp = files_under(&server.data.join("tmp"));
    assert!(tmp.is_empty(), "data-dir tmp/: {tmp:?}");
    let in_mailboxes: Vec<_> = files_under(&server.data.join("mailboxes"));
    assert!(in_mailboxes.is_empty(), "mailboxes: {in_mailboxes:?}");
}

/// `max_message_size`: SIZE= over the limit gets 552 5.3.4 at MAIL; without SIZE= an oversized body
/// is read to its end, refused with 552 5.3.4, and leaves nothing in tmp/ or new/. BDAT too.
#[test]
fn message_size_limit() {
    let server = Server::start_with_users(Opts::example().with_config("[limits]\nmax_message_size = 1000\n"), &[A]);
    let mut c = server.connect();
    let ehlo = c.ehlo();
    assert!(ehlo.lines.iter().any(|l| l == "SIZE 1000"), "{ehlo:?}");

    let r = c.cmd("MAIL FROM:<s@client.e2e.test> SIZE=1001");
    assert!(r.is(552, "5.3.4"), "{r:?}");
    let r = c.cmd("MAIL FROM:<s@client.e2e.test> SIZE=1000");
    assert!(r.is(250, "2.1.0"), "{r:?}");
    c.expect("RSET", 250);

    // No SIZE=: the body runs over; the refusal comes after the end of data, not before.
    c.expect("MAIL FROM:<s@client.e2e.test>", 250);
    c.expect(&format!("RCPT TO:<{A}>"), 250);
    c.expect("DATA", 354);
    let line = format!("{}\r\n", "x".repeat(98));
    for _ in 0..50 {
        c.send(line.as_bytes());
    }
    // Mid-message nothing has been said yet (the client is still sending).
    c.set_read_timeout(std::time::Duration::from_millis(300));
    assert!(c.try_read_reply().is_err(), "no reply before the end of data");
    c.set_read_timeout(WAIT);
    c.send(b".\r\n");
    let r = c.read_reply();
    assert!(r.is(552, "5.3.4"), "{r:?}");
    assert_nothing_stored(&server);

    // BDAT over the limit: the chunk is still read (not taken as commands), then 552 5.3.4.
    c.expect("MAIL FROM:<s@client.e2e.test>", 250);
    c.expect(&format!("RCPT TO:<{A}>"), 250);
    let chunk = "NOOP\r\n".repeat(300);
    c.send(format!("BDAT {} LAST\r\n", chunk.len()).as_bytes());
    c.send(chunk.as_bytes());
    let r = c.read_reply();
    assert!(r.is(552, "5.3.4"), "{r:?}");
    assert_nothing_stored(&server);

    // The session goes on and a message at the limit is taken.
    c.expect("MAIL FROM:<s@client.e2e.test>", 250);
    c.expect(&format!("RCPT TO:<{A}>"), 250);
    let small = format!("Subject: fits\r\n\r\n{}\r\n", "y".repeat(900));
    let r = c.data(small.as_bytes());
    assert!(r.is(250, "2.0.0"), "{r:?}");
    c.expect("QUIT", 221);
    server.expect_new(A, 1);
}

/// Hostile input: a 1 MiB line without CRLF gets one 500 5.5.2 and the session goes on.
#[test]
fn megabyte_line_gets_one_error_and_session_goes_on() {
    let server = Server::start_with_users(Opts::example(), &[A]);
    let mut c = server.connect();
    c.ehlo();
    let junk = vec![b'A'; 1 << 20];
    c.send(&junk);
    c.send(b"\r\nNOOP\r\n");
    let r = c.read_reply();
    assert!(r.is(500, "5.5.2"), "{r:?}");
    let r = c.read_reply();
    assert!(r.is(250, "2.0.0"), "the next reply is NOOP's, not a second error: {r:?}");
    // And a transaction still works.
    c.expect("MAIL FROM:<s@client.e2e.test>", 250);
    c.expect(&format!("RCPT TO:<{A}>"), 250);
    let r = c.data(b"Subject: after junk\r\n\r\nok\r\n");
    assert!(r.is(250, "2.0.0"), "{r:?}");
    c.expect("QUIT", 221);
    server.expect_new(A, 1);
}

/// SMTP smuggling (CVE-2023-51764): a bare-LF "end of data" followed by a second transaction inside
/// the body. Nothing smuggled is stored; the message is refused with 550 5.5.2 after the real
/// CRLF.CRLF; and no reply to the smuggled commands ever comes.
#[test]
fn smuggling_attempts_are_refused_whole() {
    let server = Server::start_with_users(Opts::example(), &[A, B]);
    let mut c = server.connect();
    c.ehlo();
    let smuggled = "MAIL FROM:<evil@client.e2e.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n\
                    Subject: smuggled\r\n\r\nsmuggled body\r\n";
    for fake_end in ["\n.\n", "\r\n.\n", "\n.\r\n", "\r.\r\n", "\r\n.\r"] {
        c.expect("MAIL FROM:<s@client.e2e.test>", 250);
        c.expect(&format!("RCPT TO:<{A}>"), 250);
        c.expect("DATA", 354);
        c.send(format!("Subject: carrier\r\n\r\nhello{fake_end}{smuggled}.\r\n").as_bytes());
        let r = c.read_reply();
        assert!(r.is(550, "5.5.2"), "fake end {fake_end:?}: {r:?}");
        // The next reply belongs to NOOP: the smuggled commands were never executed.
        let r = c.cmd("NOOP");
        assert!(r.is(250, "2.0.0"), "fake end {fake_end:?}: {r:?}");
    }
    // Same idea with BDAT: a chunk holding a bare LF line ending is refused after LAST.
    c.expect("MAIL FROM:<s@client.e2e.test>", 250);
    c.expect(&format!("RCPT TO:<{A}>"), 250);
    let chunk = format!("Subject: carrier\r\n\r\nhello\n.\n{smuggled}");
    c.send(format!("BDAT {} LAST\r\n", chunk.len()).as_bytes());
    c.send(chunk.as_bytes());
    let r = c.read_reply();
    assert!(r.is(550, "5.5.2"), "BDAT: {r:?}");
    let r = c.cmd("NOOP");
    assert!(r.is(250, "2.0.0"), "{r:?}");
    c.expect("QUIT", 221);
    assert_nothing_stored(&server);
}

/// The replies the issue names, over a real socket: every error carries its enhanced code, VRFY
/// reveals nothing, bare `<postmaster>` is accepted, too many recipients is 452 4.5.3, a UTF-8
/// transaction is traced `with UTF8SMTP`, and too many errors end the session with 421 4.7.0.
#[test]
fn replies_for_bad_input_and_limits() {
    let server =
        Server::start_with_users(Opts::example().with_config("[limits]\nmax_recipients = 2\nmax_errors = 6\n"), &[A]);
    let mut c = Smtp::connect(server.port);
    let g = c.read_reply();
    assert_eq!(g.code, 220);
    assert_eq!(g.text(), "mx.e2e.test ESMTP mailroom", "{g:?}");
    let bad = |c: &mut Smtp, line: &str, code: u16, enhanced: &str| {
        let r = c.cmd(line);
        assert!(r.is(code, enhanced), "{line:?} -> {r:?}");
    };
    bad(&mut c, "FOO", 500, "5.5.2");
    bad(&mut c, "MAIL FROM:<s@client.e2e.test>", 503, "5.5.1");
    let ehlo = c.ehlo();
    assert_eq!(ehlo.lines[0], "mx.e2e.test");
    bad(&mut c, "RCPT TO:<a@example.test>", 503, "5.5.1");
    bad(&mut c, "MAIL FROM:<s@client.e2e.test> FOO=BAR", 555, "5.5.4");
    let r = c.cmd("VRFY a");
    assert_eq!(r.code, 252, "{r:?}");
    let r = c.cmd("HELP");
    assert_eq!(r.code, 214, "{r:?}");

    c.expect("MAIL FROM:<s@client.e2e.test> SMTPUTF8", 250);
    let r = c.cmd("RCPT TO:<postmaster>");
    assert!(r.is(250, "2.1.5"), "bare <postmaster>: {r:?}");
    let r = c.cmd("RCPT TO:<ünïcode@example.test>");
    assert!(r.is(550, "5.1.1"), "{r:?}");
    c.expect(&format!("RCPT TO:<{A}>"), 250);
    let r = c.cmd("RCPT TO:<postmaster@example.test>");
    assert!(r.is(452, "4.5.3"), "third recipient with max_recipients = 2: {r:?}");
    let r = c.data("Subject: Grüße\r\n\r\nünïcode body\r\n".as_bytes());
    assert!(r.is(250, "2.0.0"), "{r:?}");
    for who in ["postmaster@example.test", A] {
        let f = server.expect_new(who, 1);
        let stored = std::fs::read(&f[0]).unwrap();
        assert!(trace_block(&stored).contains("with UTF8SMTP id"), "{}", trace_block(&stored));
        assert_eq!(strip_trace(&stored), "Subject: Grüße\n\nünïcode body\n".as_bytes());
    }

    // Errors so far: 4, and the unknown user makes 5 (refused recipients count, as in Postfix). One more
    // reaches max_errors = 6 and closes the session with 421 4.7.0 after the error reply.
    let r = c.cmd("BAD1");
    assert!(r.is(500, "5.5.2"), "{r:?}");
    let r = c.read_reply();
    assert!(r.is(421, "4.7.0"), "{r:?}");
    assert!(c.wait_eof());
}
