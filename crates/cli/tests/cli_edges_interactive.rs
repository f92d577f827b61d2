//! `mailroom send --interactive` against a submission port with no TLS or AUTH flags: it offers
//! STARTTLS when the server has it, asks for a CA file when the self-signed certificate does not verify,
//! and asks for a user and password when the server requires AUTH (530 to MAIL).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{bin, user_add_password, Opts, Server};

const PASSWORD: &str = "a good password";

#[test]
fn interactive_send_to_a_submission_port_offers_starttls_and_asks_for_credentials() {
    let server = Server::start_prepared(Opts::example().with_submission(), |data| {
        user_add_password(data, "alice@example.test", PASSWORD);
    });
    let port = server.submission_port.unwrap();
    let cafile = server.data.join("tls/cert.pem");
    // Answers: use STARTTLS, the CA file, the sender, the user (default: the sender), the password,
    // one recipient and the end of the list, the subject, the body.
    let script = format!(
        "y\n{}\nalice@example.test\n\n{PASSWORD}\nalice@example.test\n\nover submission\nhello\n.\n",
        cafile.display()
    );
    let mut child = Command::new(bin())
        .args(["send", "--interactive", "--server", &format!("127.0.0.1:{port}"), "--helo", "client.test"])
        .args(["--timeout", "20s"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let all = format!("{stdout}\n{}\n{}", String::from_utf8_lossy(&out.stderr), server.log_text());
    assert!(out.status.success(), "exit {:?}\n{all}", out.status);
    for want in [
        "offers STARTTLS",
        "C: STARTTLS",
        "CA file to trust",
        "requires authentication",
        "S: 530",
        "Authenticated as alice@example.test",
        "S: 235",
        "Message accepted",
    ] {
        assert!(stdout.contains(want), "output lacks {want:?}:\n{all}");
    }
    assert!(!stdout.contains(PASSWORD), "the password is not echoed:\n{stdout}");
    let files = server.expect_new("alice@example.test", 1);
    let msg = std::fs::read_to_string(&files[0]).unwrap();
    assert!(msg.contains("Subject: over submission") && msg.contains("ESMTPSA"), "{msg}");
}
