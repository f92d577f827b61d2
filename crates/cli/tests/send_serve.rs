//! `mailroom send` and `mailroom sendmail` delivering to `mailroom serve`: the two halves of mailroom
//! against each other, with pipelining (the server offers it) and per-recipient refusals.

mod common;
mod send_support;

use common::{Opts, Server};
use send_support::run;

#[test]
fn send_to_postmaster_prints_the_transcript_and_delivers() {
    let server = Server::start(Opts::default());
    let addr = server.addr();
    let out = run(
        &[
            "send",
            "--server",
            &addr,
            "--from",
            "a@example.org",
            "--to",
            "postmaster@localhost",
            "--subject",
            "hi",
            "--body",
            "hello",
            "-v",
        ],
        b"",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    // PIPELINING is offered: MAIL, RCPT and DATA go before their replies come.
    let group = stdout.find("C: MAIL FROM:<a@example.org>").expect("MAIL");
    let data = stdout.find("C: DATA").expect("DATA");
    let first_reply = stdout[group..].find("S: 250").map(|i| i + group).expect("reply");
    assert!(data < first_reply, "{stdout}");
    assert!(stdout.contains("S: 221"), "{stdout}");
    let files = server.expect_new("postmaster@localhost", 1);
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(text.contains("Subject: hi") && text.contains("hello"), "{text}");
}

#[test]
fn sendmail_t_with_bcc_and_a_refused_recipient() {
    let server = Server::start_with_users(Opts::example(), &["a@example.test", "b@example.test"]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, format!("[client]\nserver = \"{}\"\n", server.addr())).unwrap();
    let c = cfg.to_str().unwrap();
    let out = run(&["sendmail", "--config", c, "-t"], b"To: a@example.test\nBcc: b@example.test\nSubject: s\n\nbody\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for who in ["a@example.test", "b@example.test"] {
        let f = server.expect_new(who, 1);
        let text = std::fs::read_to_string(&f[0]).unwrap();
        assert!(!text.to_ascii_lowercase().contains("\nbcc:"), "{who}: {text}");
    }
    let out = run(
        &[
            "send",
            "--server",
            &server.addr(),
            "--from",
            "x@example.org",
            "--to",
            "a@example.test",
            "--to",
            "nobody@example.test",
            "--body",
            "b",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(69), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nobody@example.test"));
    server.expect_new("a@example.test", 2);
}
