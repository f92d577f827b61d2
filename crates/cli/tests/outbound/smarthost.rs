//! Smarthost: mailroom relays everything through a second mailroom's submission port with STARTTLS
//! (verified against that server's certificate via `relayhost_cafile`) and AUTH.

use std::os::unix::fs::PermissionsExt;

use crate::common::{user_add, user_add_password, Opts, Server};
use crate::support::{mailroom, send, wait_mailbox, wait_queue_empty, Rig, ALICE, DELIVERY_WAIT, PASSWORD};

#[test]
fn relays_through_a_second_mailroom_with_starttls_and_auth() {
    let Some(rig) = Rig::new() else { return };
    // The smarthost: serves b.test; Alice has an account there too (she may send only as herself).
    let opts = Opts { domains: vec!["b.test".into()], hostname: Some("smarthost.test".into()), ..Opts::default() }
        .with_submission()
        .with_config("[auth]\nfailure_delay = \"100ms\"\n");
    let smarthost = Server::start_prepared(opts, |data| {
        user_add_password(data, ALICE, PASSWORD);
        user_add(data, "carol@b.test");
    });
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("relay-password");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cafile = smarthost.data.join("tls/cert.pem");
    // b.test has no record in the test zone: only the relayhost setting can get the message there.
    let delivery = format!(
        "relayhost = \"[127.0.0.1]:{}\"\nrelayhost_tls = \"starttls\"\nrelayhost_cafile = \"{}\"\n\
         relayhost_user = \"{ALICE}\"\nrelayhost_password_file = \"{}\"",
        smarthost.submission_port.unwrap(),
        cafile.display(),
        pw.display()
    );
    let server = mailroom(rig.config(&delivery, ""), &[]);
    // With a relayhost no MX is looked up here, not even the null-MX check at RCPT (nullmx.test publishes
    // `MX 0 .` in the test zone): the smarthost judges the destination.
    send(&server, &["carol@b.test", "someone@nullmx.test"], "via the smarthost");
    let files = wait_mailbox(&smarthost, "carol@b.test", 1, DELIVERY_WAIT);
    let text = String::from_utf8_lossy(&std::fs::read(&files[0]).unwrap()).into_owned();
    assert!(text.contains("Subject: via the smarthost"), "{text}");
    assert!(text.contains("with ESMTPSA"), "the smarthost saw TLS and AUTH (RFC 3848):\n{text}");
    assert!(text.contains("by mx.e2e.test"), "the sender's own Received header travels along:\n{text}");
    assert!(text.starts_with(&format!("Return-Path: <{ALICE}>")), "{text}");
    wait_queue_empty(&server, DELIVERY_WAIT);
    let log = server.log_text();
    assert!(!log.contains(PASSWORD), "no password in the log");
    assert!(log.contains("status=sent"), "{log}");
}
