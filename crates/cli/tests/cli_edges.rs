//! The rough CLI edges a new user trips over: `user passwd --password-stdin`, weak passwords, `user add`
//! for a domain that is not served, what `user remove` says, commands on a data directory that does not
//! exist, `mailbox list|show|delete`, sendmail's bare local names, envelope sender and sender refusals,
//! `sendmail --help`, and the self-signed certificate (subject, a year, renewal at start and on SIGHUP).
//! Certificates are inspected and made with `openssl` (Debian's `openssl` package).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{bin, maildir, user_add, Opts, Server};

fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .env_remove("MAILROOM_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mailroom");
    // A command that refuses before reading its input closes the pipe: that is no test failure.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn user_passwd_takes_password_stdin_and_short_passwords_need_allow_weak() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let weak = run(&["user", "add", "alice@localhost", "--password-stdin", "--data-dir", d], "short\n");
    assert!(!weak.status.success(), "a 5-character password was taken");
    assert!(err(&weak).contains("shorter than 8") && err(&weak).contains("--allow-weak"), "{}", err(&weak));
    let ok = run(&["user", "add", "alice@localhost", "--password-stdin", "--data-dir", d], "long enough\n");
    assert!(ok.status.success(), "{}", err(&ok));
    let before = std::fs::read_to_string(dir.path().join("users.toml")).unwrap();
    let weak = run(&["user", "passwd", "alice@localhost", "--password-stdin", "--data-dir", d], "1234567\n");
    assert!(!weak.status.success() && err(&weak).contains("shorter than 8"), "{}", err(&weak));
    assert_eq!(std::fs::read_to_string(dir.path().join("users.toml")).unwrap(), before, "nothing changed");
    let set = run(&["user", "passwd", "alice@localhost", "--password-stdin", "--data-dir", d], "another good one\n");
    assert!(set.status.success() && out(&set).contains("password set"), "{}", err(&set));
    assert_ne!(std::fs::read_to_string(dir.path().join("users.toml")).unwrap(), before, "the hash changed");
    let forced =
        run(&["user", "passwd", "alice@localhost", "--password-stdin", "--allow-weak", "--data-dir", d], "pw\n");
    assert!(forced.status.success(), "{}", err(&forced));
    let nobody = run(&["user", "passwd", "bob@localhost", "--password-stdin", "--data-dir", d], "long enough\n");
    assert!(!nobody.status.success() && err(&nobody).contains("no user bob@localhost"), "{}", err(&nobody));
}

#[test]
fn user_add_warns_when_the_domain_is_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data");
    let d = d.to_str().unwrap();
    let o = run(&["user", "add", "alice@example.test", "--data-dir", d], "");
    assert!(o.status.success(), "{}", err(&o));
    assert!(err(&o).contains("example.test is not served") && err(&o).contains("localhost"), "{}", err(&o));
    let cfg = dir.path().join("mailroom.toml");
    std::fs::write(&cfg, "[server]\ndomains = [\"Example.TEST\"]\n").unwrap();
    let o = run(&["user", "add", "bob@example.test", "--config", cfg.to_str().unwrap(), "--data-dir", d], "");
    assert!(o.status.success(), "{}", err(&o));
    assert!(!err(&o).contains("warning"), "a served domain: {}", err(&o));
}

#[test]
fn user_remove_says_what_became_of_the_mailbox() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    user_add(dir.path(), "alice@localhost");
    user_add(dir.path(), "bob@localhost");
    let new = maildir(dir.path(), "alice@localhost").join("new");
    std::fs::create_dir_all(&new).unwrap();
    std::fs::write(new.join("1.M1P1.host,S=10"), "Subject: x\n\nhi\n").unwrap();
    let o = run(&["user", "remove", "alice@localhost", "--data-dir", d], "");
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&o).contains("removed user alice@localhost") && out(&o).contains("kept (1 message(s))"), "{}", out(&o));
    assert!(new.join("1.M1P1.host,S=10").exists(), "the mail is still there");
    let o = run(&["user", "remove", "bob@localhost", "--data-dir", d], "");
    assert!(out(&o).contains("removed user bob@localhost; it had no mailbox"), "{}", out(&o));
    let list = run(&["user", "list", "--data-dir", d], "");
    assert!(!out(&list).contains("alice") && !out(&list).contains("bob"), "{}", out(&list));
}

#[test]
fn commands_on_a_missing_data_directory_say_so_and_fail() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir");
    let m = missing.to_str().unwrap();
    for args in [
        vec!["user", "list"],
        vec!["user", "remove", "a@localhost"],
        vec!["user", "passwd", "a@localhost", "--password-stdin"],
        vec!["mailbox", "list", "a@localhost"],
        vec!["mailbox", "show", "a@localhost", "1"],
        vec!["mailbox", "delete", "a@localhost", "1"],
        vec!["queue", "list"],
    ] {
        let mut full = args.clone();
        full.extend(["--data-dir", m]);
        let o = run(&full, "long enough\n");
        assert!(!o.status.success(), "{args:?} succeeded: {}", out(&o));
        assert!(err(&o).contains("no data directory"), "{args:?}: {}", err(&o));
        assert!(out(&o).is_empty(), "{args:?} printed a list: {}", out(&o));
    }
    assert!(!missing.exists(), "nothing created it");
}

/// A Maildir with three messages: a long one in new/, one without From/Date, one seen in cur/.
fn mailbox_fixture(data: &Path) -> PathBuf {
    user_add(data, "alice@localhost");
    let md = maildir(data, "alice@localhost");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(md.join(sub)).unwrap();
    }
    let long_from = format!("From: {} <someone@example.org>\n", "A Very Long Display Name".repeat(3));
    let long_subject = format!("Subject: {}\n", "words ".repeat(30));
    let first = format!("Date: Mon, 30 Nov 2026 10:00:00 +0000\n{long_from}{long_subject}\nbody\n");
    std::fs::write(md.join("new/1764496800.M1P1.host,S=400"), first).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let bare = "Return-Path: <bounce@lists.example.org>\nReceived: from a by b; Tue, 01 Dec 2026 08:00:00 +0000\n\
                Subject: no from, no date\n\nbody\n";
    std::fs::write(md.join("new/1764576000.M2P1.host,S=100"), bare).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let seen = "From: carol@example.org\nDate: Wed, 02 Dec 2026 09:00:00 +0000\nSubject: seen one\n\nbody\n";
    std::fs::write(md.join("cur/1764666000.M3P1.host,S=80:2,S"), seen).unwrap();
    md
}

#[test]
fn mailbox_list_aligns_columns_and_falls_back_to_the_trace_headers() {
    let dir = tempfile::tempdir().unwrap();
    mailbox_fixture(dir.path());
    let o = run(&["mailbox", "list", "alice@localhost", "--data-dir", dir.path().to_str().unwrap()], "");
    assert!(o.status.success(), "{}", err(&o));
    let text = out(&o);
    let lines: Vec<Vec<char>> = text.lines().map(|l| l.chars().collect()).collect();
    let header: String = lines[0].iter().collect();
    let col = |name: &str| header[..header.find(name).unwrap()].chars().count();
    let (state, size_end) = (col("STATE"), col("SIZE") + 4);
    let rows = &lines[1..4];
    let states: Vec<String> = rows.iter().map(|r| r[state..].iter().take_while(|c| **c != ' ').collect()).collect();
    assert_eq!(states, ["new", "new", "seen"], "states in one column:\n{text}");
    for r in rows {
        assert!(r[size_end - 1].is_ascii_digit() && r[size_end] == ' ', "SIZE right-aligned in one column:\n{text}");
    }
    assert!(text.contains("A Very Long Display NameA Ver…"), "long From cut with a mark:\n{text}");
    assert!(!text.contains(&"words ".repeat(30)), "long subject cut:\n{text}");
    assert!(text.contains("bounce@lists.example.org") && text.contains("Tue, 01 Dec 2026 08:00:00 +0000"), "{text}");
    assert!(text.lines().last().unwrap().contains("3 message(s)"), "{text}");
}

#[test]
fn mailbox_show_and_delete_take_the_number_or_a_unique_id_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let md = mailbox_fixture(dir.path());
    let d = dir.path().to_str().unwrap();
    let o = run(&["mailbox", "show", "alice@localhost", "2", "--data-dir", d], "");
    assert!(o.status.success() && out(&o).contains("no from, no date"), "{}", err(&o));
    let o = run(&["mailbox", "show", "alice@localhost", "1764666", "--data-dir", d], "");
    assert!(o.status.success() && out(&o).contains("seen one"), "{}", err(&o));
    let o = run(&["mailbox", "show", "alice@localhost", "1764", "--data-dir", d], "");
    assert!(!o.status.success() && err(&o).contains("more than one"), "ambiguous prefix: {}", err(&o));
    let o = run(&["mailbox", "show", "alice@localhost", "999", "--data-dir", d], "");
    assert!(!o.status.success() && err(&o).contains("no message"), "{}", err(&o));
    let o = run(&["mailbox", "delete", "alice@localhost", "1764576000", "--data-dir", d], "");
    assert!(o.status.success() && out(&o).contains("deleted message 1764576000.M2P1.host"), "{}", err(&o));
    assert!(!md.join("new/1764576000.M2P1.host,S=100").exists());
    let o = run(&["mailbox", "delete", "alice@localhost", "2", "--data-dir", d], "");
    assert!(o.status.success(), "{}", err(&o));
    assert!(!md.join("cur/1764666000.M3P1.host,S=80:2,S").exists(), "number 2 was the seen one after the delete");
    let o = run(&["mailbox", "list", "alice@localhost", "--data-dir", d], "");
    assert!(out(&o).contains("1 message(s)"), "{}", out(&o));
}

/// A client config for sendmail pointing at `server`.
fn client_config(dir: &Path, server: &str, extra: &str) -> PathBuf {
    let path = dir.join("client.toml");
    std::fs::write(&path, format!("[client]\nserver = \"{server}\"\ntimeout = \"10s\"\n{extra}")).unwrap();
    path
}

#[test]
fn sendmail_takes_bare_local_names_and_the_configured_sender() {
    let server = Server::start_with_users(Opts::example(), &["root@example.test"]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = client_config(dir.path(), &server.addr(), "domain = \"example.test\"\nfrom = \"cron@example.test\"\n");
    let o = run(
        &["sendmail", "--config", cfg.to_str().unwrap(), "root"],
        "From: Someone Else <else@example.org>\nSubject: cron\n\nout\n",
    );
    assert!(o.status.success(), "sendmail root: {}", err(&o));
    let files = server.expect_new("root@example.test", 1);
    let msg = std::fs::read_to_string(&files[0]).unwrap();
    assert!(msg.starts_with("Return-Path: <cron@example.test>"), "[client] from is the envelope sender:\n{msg}");
    let help = run(&["sendmail", "--help"], "");
    assert!(help.status.success(), "{}", err(&help));
    for opt in ["--config", "-t", "-i", "-f", "-F", "-v", "[client] domain"] {
        assert!(out(&help).contains(opt), "sendmail --help lists {opt}:\n{}", out(&help));
    }
}

/// A one-connection SMTP server that refuses MAIL FROM; returns its address and what it was sent.
fn refusing_server() -> (String, std::thread::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let handle = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut w = s.try_clone().unwrap();
        let mut seen = Vec::new();
        w.write_all(b"220 refuser ESMTP\r\n").unwrap();
        for line in BufReader::new(s).lines() {
            let Ok(line) = line else { break };
            seen.push(line.clone());
            let reply: &[u8] = match line.get(..4).map(str::to_ascii_uppercase).as_deref() {
                Some("EHLO") => b"250-refuser\r\n250 PIPELINING\r\n",
                Some("MAIL") => b"553 5.7.1 Sender address rejected: not owned by you\r\n",
                Some("RCPT") => b"503 5.5.1 Error: need MAIL command\r\n",
                Some("DATA") => b"503 5.5.1 Error: need RCPT command\r\n",
                Some("QUIT") => b"221 2.0.0 Bye\r\n",
                _ => b"250 2.0.0 Ok\r\n",
            };
            w.write_all(reply).unwrap();
            if line.eq_ignore_ascii_case("QUIT") {
                break;
            }
        }
        seen
    });
    (addr, handle)
}

#[test]
fn sendmail_reports_a_refused_sender_as_the_senders_refusal() {
    let (addr, handle) = refusing_server();
    let dir = tempfile::tempdir().unwrap();
    let cfg = client_config(dir.path(), &addr, "");
    let o = run(
        &["sendmail", "--config", cfg.to_str().unwrap(), "-f", "me@example.org", "you@example.test"],
        "Subject: x\n\nhi\n",
    );
    let e = err(&o);
    assert_eq!(o.status.code(), Some(69), "a permanent refusal: {e}");
    assert!(e.contains("sender refused") && e.contains("553 5.7.1"), "{e}");
    assert!(!e.contains("recipient"), "the recipient is not blamed: {e}");
    let seen = handle.join().unwrap();
    assert!(seen.iter().any(|l| l.starts_with("MAIL FROM:<me@example.org>")), "{seen:?}");
}

/// `openssl x509 -noout -subject -enddate -checkend N` on a PEM file: (subject line, still valid N s on).
fn inspect_cert(cert: &Path, seconds: u64) -> (String, bool) {
    let o = Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-checkend", &seconds.to_string(), "-in"])
        .arg(cert)
        .output()
        .expect("openssl must be installed (Debian package openssl)");
    (String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_owned(), o.status.success())
}

/// A 10-day self-signed pair (openssl) written over `<data>/tls/`.
fn expiring_pair(data: &Path) {
    let tls = data.join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    let o = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "10"])
        .args(["-subj", "/CN=old.example.test", "-keyout"])
        .arg(tls.join("key.pem"))
        .arg("-out")
        .arg(tls.join("cert.pem"))
        .output()
        .expect("openssl must be installed (Debian package openssl)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

const YEAR_MINUS_A_DAY: u64 = 364 * 86_400;

#[test]
fn the_self_signed_certificate_names_the_host_runs_a_year_and_is_renewed_when_due() {
    // Made at start: subject = the host name, valid for (almost exactly) a year.
    let server = Server::start(Opts::example());
    let cert = server.data.join("tls/cert.pem");
    let (subject, valid) = inspect_cert(&cert, YEAR_MINUS_A_DAY);
    assert!(subject.contains("CN") && subject.contains("mx.e2e.test"), "{subject}");
    assert!(valid, "valid for a year");
    assert!(!inspect_cert(&cert, 366 * 86_400).1, "and not much longer");
    // A certificate with 10 days left is renewed on SIGHUP.
    expiring_pair(&server.data);
    assert!(!inspect_cert(&cert, 30 * 86_400).1, "the fixture expires within 30 days");
    let st = Command::new("kill").arg("-HUP").arg(server.pid().to_string()).status().unwrap();
    assert!(st.success());
    let start = Instant::now();
    while !inspect_cert(&cert, YEAR_MINUS_A_DAY).1 {
        assert!(start.elapsed() < Duration::from_secs(10), "not renewed on SIGHUP:\n{}", server.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(inspect_cert(&cert, 0).0.contains("mx.e2e.test"));
    drop(server);
    // And at start.
    let server = Server::start_prepared(Opts::example(), expiring_pair);
    let cert = server.data.join("tls/cert.pem");
    let (subject, valid) = inspect_cert(&cert, YEAR_MINUS_A_DAY);
    assert!(valid && subject.contains("mx.e2e.test"), "renewed at start: {subject}\n{}", server.log_text());
    assert!(server.log_text().contains("self-signed"), "{}", server.log_text());
}
