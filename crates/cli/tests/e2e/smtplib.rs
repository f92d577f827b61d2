//! End-to-end over TCP with Python's smtplib as the client: delivery to postmaster@localhost with the
//! default domain, several recipients with one unknown, Python's `mailbox.Maildir` reading the result,
//! and `mailroom mailbox list|show`.

use crate::common::*;

/// Writes MESSAGE to a file next to the data dir and sends it with tests/e2e/smtp_send.py.
fn smtplib_send(server: &Server, from: &str, to: &[&str], message: &str) -> Vec<String> {
    let file = server.data.parent().unwrap().join(format!("msg-{}.eml", rand_tag()));
    std::fs::write(&file, message).unwrap();
    let out = python("smtp_send.py", &[&server.port.to_string(), from, &to.join(","), file.to_str().unwrap()]);
    out.lines().map(str::to_owned).collect()
}

fn rand_tag() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

fn message(from: &str, to: &str, subject: &str, body: &str) -> String {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: Sat, 28 Nov 2026 14:31:46 +0000\r\n\
         Message-ID: <{tag}@client.e2e.test>\r\n\r\n{body}",
        tag = rand_tag()
    )
}

/// Done-when #1: no --domain, so the server serves `localhost`; postmaster@localhost is always
/// accepted and the message lands in mailboxes/localhost/postmaster/new/ with its trace headers.
#[test]
fn smtplib_to_postmaster_at_localhost_with_default_domain() {
    let server = Server::start(Opts::default());
    // The host name the server uses in its greeting is the one its Received header must name.
    let mut raw = Smtp::connect(server.port);
    let greeting = raw.read_reply();
    assert_eq!(greeting.code, 220);
    let hostname = greeting.text().split_whitespace().next().unwrap().to_owned();
    assert!(greeting.text().contains("ESMTP"), "greeting {greeting:?} says ESMTP");
    raw.expect("QUIT", 221);

    let body = "Hello postmaster.\r\nSecond line.\r\n";
    let msg = message("Sender <sender@client.e2e.test>", "postmaster@localhost", "e2e default domain", body);
    let out = smtplib_send(&server, "sender@client.e2e.test", &["postmaster@localhost"], &msg);
    assert!(out.iter().any(|l| l == "SENT"), "smtplib: {out:?}");
    assert!(!out.iter().any(|l| l.starts_with("REFUSED") || l.starts_with("ERROR")), "{out:?}");
    // EHLO advertised what the issue lists.
    for ext in ["size", "pipelining", "8bitmime", "smtputf8", "enhancedstatuscodes", "chunking"] {
        assert!(out.iter().any(|l| l.starts_with(&format!("EHLO\t{ext}\t"))), "EHLO lacks {ext}: {out:?}");
    }

    let dir = server.data.join("mailboxes/localhost/postmaster/new");
    let files = files_in(&dir);
    assert_eq!(files.len(), 1, "{dir:?}: {files:?}\n{}", server.log_text());
    let stored = std::fs::read(&files[0]).unwrap();
    let text = String::from_utf8(stored.clone()).unwrap();
    assert!(text.starts_with("Return-Path: <sender@client.e2e.test>\n"), "{text}");
    let trace = trace_block(&stored);
    assert!(trace.contains("Received: from client.e2e.test ([127.0.0.1])"), "{trace}");
    assert!(trace.contains(&format!("\tby {hostname} (mailroom) with ESMTP id ")), "{trace}");
    assert!(trace.contains("\tfor <postmaster@localhost>;"), "{trace}");
    // The rest is what was sent, stored with LF line endings.
    assert_eq!(strip_trace(&stored), to_lf(msg.as_bytes()).as_slice());
    assert!(!stored.contains(&b'\r'), "stored with LF only");
    assert_eq!(size_from_name(&files[0]), Some(stored.len() as u64));
}

/// Done-when #3 (first half): one transaction, three known users and one unknown: the unknown gets
/// 550 5.1.1, the others each get the message exactly once, byte for byte the same, and the
/// Received header names no recipient (no Bcc leak).
#[test]
fn several_recipients_one_unknown() {
    let users = ["alice@example.test", "bob@example.test", "carol@example.test"];
    let server = Server::start_with_users(Opts::example(), &users);
    let msg =
        message("s@client.e2e.test", "undisclosed-recipients:;", "to several", "One message, three mailboxes.\r\n");
    let rcpts = [users[0], "nobody@example.test", users[1], users[2]];
    let out = smtplib_send(&server, "s@client.e2e.test", &rcpts, &msg);
    let refused: Vec<&String> = out.iter().filter(|l| l.starts_with("REFUSED")).collect();
    assert_eq!(refused, ["REFUSED\tnobody@example.test\t550\t5.1.1 No such user here"], "{out:?}");
    assert!(out.iter().any(|l| l == "SENT"), "{out:?}");

    let mut contents = Vec::new();
    for u in users {
        let files = server.expect_new(u, 1);
        contents.push(std::fs::read(&files[0]).unwrap());
        // The same unique name in every mailbox: one file linked, not three deliveries.
        assert_eq!(files[0].file_name(), server.new_files(users[0])[0].file_name());
    }
    assert!(contents.iter().all(|c| c == &contents[0]), "identical bytes in every mailbox");
    let trace = trace_block(&contents[0]);
    assert!(!trace.contains("for <") && !trace.contains("\tfor "), "no for clause with several recipients: {trace}");
    assert!(trace.contains("with ESMTP id "), "{trace}");
    assert_eq!(strip_trace(&contents[0]), to_lf(msg.as_bytes()).as_slice());
    assert!(!server.maildir("nobody@example.test").exists(), "no mailbox is made for an unknown user");

    // All recipients unknown: smtplib raises SMTPRecipientsRefused, nothing is stored.
    let out = smtplib_send(&server, "s@client.e2e.test", &["ghost@example.test"], &msg);
    assert_eq!(
        out.iter().filter(|l| l.starts_with("ERROR")).collect::<Vec<_>>(),
        ["ERROR\tSMTPRecipientsRefused\t550\tghost@example.test 5.1.1 No such user here"],
        "{out:?}"
    );
    for u in users {
        server.expect_new(u, 1);
    }
}

/// Python's `repr()` of an ASCII string without quotes or backslashes.
fn py_repr(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\n', "\\n").replace('\r', "\\r").replace('\t', "\\t"))
}

/// Done-when: "Python's mailbox.Maildir reads the stored messages".
#[test]
fn python_mailbox_maildir_reads_stored_messages() {
    let user = "reader@example.test";
    let server = Server::start_with_users(Opts::example(), &[user]);
    let sent = [
        ("first subject", "Body one.\r\n.leading dot line\r\nend\r\n"),
        ("second subject", "Body two.\r\n\r\nafter a blank line\r\n"),
        ("third subject", "x\r\n"),
    ];
    for (subject, body) in sent {
        let msg = message("Writer <w@client.e2e.test>", user, subject, body);
        let out = smtplib_send(&server, "w@client.e2e.test", &[user], &msg);
        assert!(out.iter().any(|l| l == "SENT"), "{out:?}");
    }
    server.expect_new(user, 3);

    let out = python("maildir_read.py", &[server.maildir(user).to_str().unwrap()]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.last(), Some(&"COUNT\t3"), "{out}");
    let subjects: Vec<&str> = lines.iter().filter_map(|l| l.strip_prefix("HEADER\tSubject\t")).collect();
    let mut want: Vec<String> = sent.iter().map(|(s, _)| py_repr(s)).collect();
    let mut got: Vec<String> = subjects.iter().map(|s| s.to_string()).collect();
    want.sort();
    got.sort();
    assert_eq!(got, want, "{out}");
    let bodies: Vec<String> = lines.iter().filter_map(|l| l.strip_prefix("BODY\t")).map(str::to_owned).collect();
    for (_, body) in sent {
        // The reader sees the body with LF line endings, dot-unstuffed.
        let expect = py_repr(&body.replace("\r\n", "\n"));
        assert!(bodies.contains(&expect), "{expect} not in {bodies:?}");
    }
    for l in &lines {
        if let Some(rest) = l.strip_prefix("MESSAGE\t") {
            assert!(rest.ends_with("\tnew"), "messages are in new/: {l}");
        }
    }
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("HEADER\tReturn-Path\t'<w@client.e2e.test>'")).count(),
        3,
        "{out}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("HEADER\tReceived\t'from client.e2e.test ([127.0.0.1])")).count(),
        3,
        "{out}"
    );
}

/// `mailroom mailbox list ADDR` shows id, date, from, subject and size; `mailbox show ADDR ID`
/// prints the stored bytes.
#[test]
fn mailbox_list_and_show() {
    let user = "lister@example.test";
    let server = Server::start_with_users(Opts::example(), &[user]);
    let msg = message("Alice Example <alice@client.e2e.test>", user, "Listed subject", "Listed body.\r\n");
    let out = smtplib_send(&server, "alice@client.e2e.test", &[user], &msg);
    assert!(out.iter().any(|l| l == "SENT"), "{out:?}");
    let files = server.expect_new(user, 1);
    let stored = std::fs::read(&files[0]).unwrap();
    let name = files[0].file_name().unwrap().to_str().unwrap().to_owned();
    let id = name.split(',').next().unwrap();

    let list = mailroom(&server.data, &["mailbox", "list", user]);
    assert!(list.status.success(), "{list:?}");
    let text = String::from_utf8(list.stdout).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 3, "header, one message, count:\n{text}");
    for col in ["ID", "DATE", "FROM", "SIZE", "SUBJECT"] {
        assert!(rows[0].contains(col), "{text}");
    }
    let row = rows[1];
    assert_eq!(row.split_whitespace().take(2).collect::<Vec<_>>(), ["1", id], "number, then the id:\n{text}");
    assert!(row.contains("Sat, 28 Nov 2026 14:31:46 +0000"), "{text}");
    // The column is cut to its width: the full address is in `mailbox show`.
    assert!(row.contains("Alice Example <alice@client.e"), "{text}");
    assert!(row.contains("Listed subject"), "{text}");
    assert!(row.split_whitespace().any(|f| f == stored.len().to_string()), "size {} in {row}", stored.len());
    assert_eq!(rows[2], "1 message(s)");

    for key in [id, name.as_str()] {
        let show = mailroom(&server.data, &["mailbox", "show", user, key]);
        assert!(show.status.success(), "{show:?}");
        assert_eq!(show.stdout, stored, "mailbox show {key} prints the stored bytes");
    }
    let missing = mailroom(&server.data, &["mailbox", "show", user, "no-such-id"]);
    assert!(!missing.status.success());
    let unknown = mailroom(&server.data, &["mailbox", "list", "nobody@example.test"]);
    assert!(!unknown.status.success(), "{unknown:?}");
}
