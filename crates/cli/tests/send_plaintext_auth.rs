//! Issue 10, finding 4 ("the client sends passwords in plaintext") and finding 10 ("sendmail --config
//! FILE runs password_command before it reads the message"), against a scripted server that keeps every
//! line and says 334 to any AUTH: credentials never leave without TLS unless plaintext AUTH is allowed
//! for a loopback server, never go to a server that did not offer AUTH, and the password command runs
//! only when a server asks for AUTH.

mod send_support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use send_support::*;

const PASSWORD: &str = "s3cret-pw";
const LIMIT: Duration = Duration::from_secs(60);

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A `[client]` config for `server` with a password command that leaves `marker` behind when it runs.
fn config(dir: &Path, server: &str, extra: &str) -> (String, std::path::PathBuf) {
    let marker = dir.join("password-command-ran");
    let cfg = dir.join("mailroom.toml");
    std::fs::write(
        &cfg,
        format!(
            "[client]\nserver = \"{server}\"\nuser = \"alice@example.test\"\ntimeout = \"10s\"\n\
             password_command = \"touch '{}'; echo {PASSWORD}\"\n{extra}",
            marker.display()
        ),
    )
    .unwrap();
    (cfg.to_str().unwrap().to_string(), marker)
}

const MESSAGE: &[u8] = b"From: alice@example.test\nTo: bob@example.test\nSubject: s\n\nbody\n";

#[test]
fn passwords_in_plaintext_sendmail_with_the_default_tls_none_sends_no_auth() {
    let rec = Recorder::start("AUTH PLAIN LOGIN");
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _) = config(dir.path(), &rec.addr, "");
    let out = run_with(&["sendmail", "--config", &cfg, "-t"], MESSAGE, &[], LIMIT);
    let seen = rec.finish();
    assert!(!seen.saw_auth(PASSWORD), "credentials went out in plain text: {:?}", seen.lines);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(78), "a config error: {t}");
    assert!(t.contains("without TLS") && t.contains("allow_plaintext_auth"), "{t}");
    assert!(seen.messages.is_empty(), "{seen:?}");
}

#[test]
fn passwords_in_plaintext_send_user_without_tls_sends_no_auth() {
    let rec = Recorder::start("AUTH PLAIN LOGIN");
    let args = [
        "send",
        "--server",
        &rec.addr,
        "--from",
        "alice@example.test",
        "--to",
        "bob@example.test",
        "--body",
        "x",
        "--user",
        "alice@example.test",
        "--password-stdin",
        "--timeout",
        "10s",
    ];
    let out = run_with(&args, format!("{PASSWORD}\n").as_bytes(), &[], LIMIT);
    let seen = rec.finish();
    assert!(!seen.saw_auth(PASSWORD), "credentials went out in plain text: {:?}", seen.lines);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(64), "a usage error: {t}");
    assert!(t.contains("without TLS") && t.contains("--allow-plaintext-auth"), "{t}");
}

#[test]
fn passwords_in_plaintext_allowed_for_a_loopback_server_when_asked() {
    let rec = Recorder::start("AUTH PLAIN LOGIN");
    let args = [
        "send",
        "--server",
        &rec.addr,
        "--from",
        "alice@example.test",
        "--to",
        "bob@example.test",
        "--body",
        "x",
        "--user",
        "alice@example.test",
        "--password-stdin",
        "--allow-plaintext-auth",
        "--timeout",
        "10s",
    ];
    let out = run_with(&args, format!("{PASSWORD}\n").as_bytes(), &[], LIMIT);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let dir = tempfile::tempdir().unwrap();
    let (cfg, marker) = config(dir.path(), &rec.addr, "allow_plaintext_auth = true\n");
    let out = run_with(&["sendmail", "--config", &cfg, "-t"], MESSAGE, &[], LIMIT);
    assert!(out.status.success(), "{}", text(&out));
    assert!(marker.exists(), "the server offered AUTH: the password command ran");
    let seen = rec.finish();
    assert_eq!(seen.lines.iter().filter(|l| l.starts_with("AUTH PLAIN ")).count(), 2, "{:?}", seen.lines);
    assert_eq!(seen.messages.len(), 2);
}

#[test]
fn passwords_in_plaintext_no_auth_to_a_server_that_did_not_advertise_it() {
    // Plaintext AUTH allowed for this loopback server, which offers no AUTH but would say 334 to it.
    let rec = Recorder::start("");
    let dir = tempfile::tempdir().unwrap();
    let (cfg, marker) = config(dir.path(), &rec.addr, "allow_plaintext_auth = true\n");
    let out = run_with(&["sendmail", "--config", &cfg, "-t"], MESSAGE, &[], LIMIT);
    let seen = rec.finish();
    assert!(!seen.saw_auth(PASSWORD), "AUTH sent to a server that did not offer it: {:?}", seen.lines);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(69), "{t}");
    assert!(t.contains("does not offer AUTH"), "{t}");
    assert!(!marker.exists(), "no AUTH asked for, so the password command must not run");
    assert!(seen.messages.is_empty());
}

#[test]
fn password_command_is_not_run_before_the_message_is_read() {
    let dir = tempfile::tempdir().unwrap();
    // STARTTLS is asked for and nobody is reached: AUTH never comes into it.
    let (cfg, marker) = config(dir.path(), "127.0.0.1:9", "tls = \"starttls\"\n");
    let mut child = Command::new(bin())
        .args(["sendmail", "--config", &cfg])
        .env_remove("MAILROOM_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The message has not come yet: whatever sendmail does now, it must not run the command.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1500) && !marker.exists() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let ran_early = marker.exists();
    let mut stdin = child.stdin.take().unwrap();
    // No recipients: sendmail stops after reading it, before any connection.
    let _ = stdin.write_all(b"Subject: s\n\nbody\n");
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(!ran_early, "password_command ran before the message was read");
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    assert!(!marker.exists(), "password_command ran without a server asking for AUTH");
}
