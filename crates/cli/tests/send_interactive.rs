//! `mailroom send --interactive` driven from a scripted stdin, against aiosmtpd.

mod send_support;

use mail_parser::MessageParser;
use send_support::*;

#[test]
fn guided_session_from_a_script_delivers() {
    let Some(peer) = Aiosmtpd::start() else { return };
    let script = format!(
        "{}\nclient.example\nnot an address\nme@example.org\nrefuse-x@example.net\nyou@example.net\n\nGrüße\nfirst line\n.. dotted\n.\n",
        peer.server()
    );
    let out = run(&["send", "--interactive", "--timeout", "20s"], script.as_bytes());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit {:?}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    for want in [
        "S: 220",
        "C: EHLO client.example",
        "C: MAIL FROM:<me@example.org>",
        "S: 550 5.1.1",
        "refused",
        "S: 354",
        "accepted",
    ] {
        assert!(stdout.contains(want), "output lacks {want:?}:\n{stdout}");
    }
    let (raw, env) = peer.message(1);
    assert_eq!(json_list(&env, "rcpt_tos"), vec!["you@example.net"]);
    assert_eq!(json_str(&env, "helo"), "client.example");
    let msg = MessageParser::default().parse(&raw).unwrap();
    assert_eq!(msg.subject(), Some("Grüße"));
    assert_eq!(msg.body_text(0).unwrap().replace("\r\n", "\n"), "first line\n.. dotted\n");
}

#[test]
fn flags_fill_in_answers_and_end_of_input_gives_up() {
    let Some(peer) = Aiosmtpd::start() else { return };
    let server = peer.server();
    // Server and sender from flags; the script still answers the server question, which is tolerated.
    let script = format!("{server}\nhelo.example\nyou@example.net\n\nsubject\nbody\n.\n");
    let out = run(&["send", "--interactive", "--server", &server, "--from", "me@example.org"], script.as_bytes());
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let (_, env) = peer.message(1);
    assert_eq!(json_str(&env, "helo"), "helo.example");

    // Input ends before any recipient: nothing is sent, exit non-zero, no hang.
    let out = run(&["send", "--interactive", "--server", &server], b"helo.example\nme@example.org\n");
    assert!(!out.status.success());
    assert_eq!(peer.count(), 1);
}
