//! Destinations per RFC 5321 §5.1 (MX preference, the next MX when one is down, implicit MX, null MX),
//! retries after a 4xx, and connection reuse.

use std::time::{Duration, Instant};

use crate::support::{mailroom, send, submission, transaction, wait_log, wait_queue_empty, Rig, ALICE, DELIVERY_WAIT};

/// What every relayed copy must look like: mailroom's Received header on top, no Return-Path (that is
/// written only at final delivery), CRLF line endings, the body intact.
fn assert_relayed_copy(eml: &[u8], subject: &str) {
    let text = String::from_utf8_lossy(eml);
    assert!(text.starts_with("Received: "), "mailroom's Received header first:\n{text}");
    let block: String = text.lines().take_while(|l| !l.starts_with("From:")).collect::<Vec<_>>().join("\n");
    assert!(block.contains("by mx.e2e.test"), "Received by the sending host:\n{block}");
    assert!(!text.contains("Return-Path:"), "no Return-Path on the wire:\n{text}");
    assert!(text.contains(&format!("Subject: {subject}\r\n")), "{text}");
    assert!(text.contains("Hello from the outbound test.\r\n"), "{text}");
    assert!(!eml.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'), "bare LF on the wire:\n{text}");
}

#[test]
fn lowest_preference_mx_gets_it() {
    let Some(rig) = Rig::new() else { return };
    let rx = rig.receiver("rx", &["127.0.0.2", "127.0.0.3"], &[]);
    let server = mailroom(rig.config("", ""), &[]);
    let id = send(&server, &["bob@mx.test"], "mx preference");
    let got = rx.wait_messages(1, DELIVERY_WAIT);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].local(), "127.0.0.2", "MX 10 (mx1.mx.test, 127.0.0.2) before MX 20");
    assert_eq!(got[0].rcpts(), vec!["bob@mx.test"]);
    assert_eq!(got[0].env["mail_from"], ALICE);
    assert_relayed_copy(&got[0].eml, "mx preference");
    wait_queue_empty(&server, DELIVERY_WAIT);
    // The Postfix-style line, with the queue id of the 250.
    let log = wait_log(&server, "status=sent", DELIVERY_WAIT);
    let line = log.lines().find(|l| l.contains("status=sent")).unwrap();
    for want in [format!("id={id}"), "to=<bob@mx.test>".into(), "relay=mx1.mx.test[127.0.0.2]".into()] {
        assert!(line.contains(&want), "{want} in {line}");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rx.messages().len(), 1, "delivered once");
}

#[test]
fn next_mx_when_the_first_is_down() {
    let Some(rig) = Rig::new() else { return };
    // Nothing listens on 127.0.0.2 (MX 10): connection refused, so the next MX (20, 127.0.0.3) gets it.
    let rx = rig.receiver("rx", &["127.0.0.3"], &[]);
    let server = mailroom(rig.config("", ""), &[]);
    send(&server, &["bob@mx.test"], "second mx");
    let got = rx.wait_messages(1, DELIVERY_WAIT);
    assert_eq!(got[0].local(), "127.0.0.3");
    assert_relayed_copy(&got[0].eml, "second mx");
    wait_queue_empty(&server, DELIVERY_WAIT);
}

#[test]
fn a_domain_with_only_an_a_record_is_delivered_to() {
    let Some(rig) = Rig::new() else { return };
    let rx = rig.receiver("rx", &["127.0.0.4"], &[]);
    let server = mailroom(rig.config("", ""), &[]);
    send(&server, &["carol@a-only.test"], "implicit mx");
    let got = rx.wait_messages(1, DELIVERY_WAIT);
    assert_eq!(got[0].local(), "127.0.0.4");
    assert_eq!(got[0].rcpts(), vec!["carol@a-only.test"]);
    wait_queue_empty(&server, DELIVERY_WAIT);
}

#[test]
fn null_mx_domain_is_refused_at_rcpt() {
    let Some(rig) = Rig::new() else { return };
    let rx = rig.receiver("rx", &["127.0.0.2"], &[]);
    let server = mailroom(rig.config("", ""), &[]);
    let mut s = submission(&server, ALICE);
    let sent = transaction(&mut s, ALICE, "", &[("nobody@nullmx.test", ""), ("bob@one.test", "")], "null mx");
    assert!(sent.rcpts[0].is(556, "5.1.10"), "RFC 7505 null MX at RCPT: {:?}", sent.rcpts[0]);
    assert_eq!(sent.rcpts[1].code, 250, "the other recipient is still taken: {:?}", sent.rcpts[1]);
    assert_eq!(sent.data.as_ref().unwrap().code, 250);
    let got = rx.wait_messages(1, DELIVERY_WAIT);
    assert_eq!(got[0].rcpts(), vec!["bob@one.test"], "only the accepted recipient travels");
    wait_queue_empty(&server, DELIVERY_WAIT);
}

#[test]
fn temporary_failure_is_retried_then_delivered() {
    let Some(rig) = Rig::new() else { return };
    let rx = rig.receiver("rx", &["127.0.0.2"], &[]);
    let server = mailroom(rig.config("", ""), &[]);
    let start = Instant::now();
    // The receiver answers 451 to the first two RCPTs of flaky2@, then 250.
    let id = send(&server, &["flaky2@one.test"], "retry me");
    let got = rx.wait_messages(1, DELIVERY_WAIT);
    let took = start.elapsed();
    assert_eq!(got[0].rcpts(), vec!["flaky2@one.test"]);
    wait_queue_empty(&server, DELIVERY_WAIT);
    let log = server.log_text();
    let deferred = log.lines().filter(|l| l.contains(&format!("id={id}")) && l.contains("status=deferred")).count();
    assert!(deferred >= 2, "two deferred attempts logged:\n{log}");
    assert!(log.contains("451 4.3.2"), "the remote's reply in the log:\n{log}");
    // Backoff: 1 s, then 2 s (min_backoff 1s doubling, max_backoff 2s); not a hot loop.
    assert!(took >= Duration::from_millis(2500), "retried after the backoff, took {took:?}");
    eprintln!("4xx, 4xx, 2xx delivered after {took:?}");
}

#[test]
fn fifty_messages_to_one_domain_reuse_connections() {
    let Some(rig) = Rig::new() else { return };
    let rx = rig.receiver("rx", &["127.0.0.2"], &[]);
    let server = mailroom(rig.config("max_connections_per_destination = 4", ""), &[]);
    let mut s = submission(&server, ALICE);
    for i in 0..50 {
        let sent = transaction(&mut s, ALICE, "", &[(&format!("r{i}@one.test"), "")], &format!("reuse {i}"));
        assert_eq!(sent.data.as_ref().unwrap().code, 250, "{sent:?}");
    }
    let got = rx.wait_messages(50, Duration::from_secs(60));
    wait_queue_empty(&server, DELIVERY_WAIT);
    let conns = rx.connections();
    eprintln!("50 messages arrived over {conns} connection(s)");
    assert_eq!(got.len(), 50, "each message once");
    assert!(conns <= 10, "connections reused: 50 messages used {conns} connections");
}

/// A self-signed certificate and key for the receiver (openssl, as the TLS interop tests make theirs).
fn self_signed(dir: &std::path::Path) -> (String, String) {
    let (cert, key) = (dir.join("rx.crt"), dir.join("rx.key"));
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=mx1.mx.test", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (cert.display().to_string(), key.display().to_string())
}

#[test]
fn opportunistic_starttls_is_used_without_certificate_checks() {
    let Some(rig) = Rig::new() else { return };
    let (cert, key) = self_signed(rig.dir.path());
    let rx = rig.receiver("rx", &["127.0.0.2"], &["--starttls", &cert, &key]);
    let server = mailroom(rig.config("", ""), &[]);
    send(&server, &["bob@one.test"], "over tls");
    let got = rx.wait_messages(1, DELIVERY_WAIT);
    assert_eq!(got[0].env["tls"], true, "RFC 7435: STARTTLS taken though the certificate is self-signed");
    wait_queue_empty(&server, DELIVERY_WAIT);
}

#[test]
fn tls_required_never_sends_in_plaintext() {
    let Some(rig) = Rig::new() else { return };
    let rx = rig.receiver("rx", &["127.0.0.2"], &[]);
    let server = mailroom(rig.config("tls = \"required\"", ""), &[]);
    let id = send(&server, &["bob@one.test"], "tls or nothing");
    crate::support::wait_deferred(&server, &id);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(rx.messages().is_empty(), "nothing sent to a server without STARTTLS");
    assert!(rx.connections() >= 1, "it did connect and look");
    assert!(!crate::support::queued(&server).is_empty(), "still queued");
}

/// A host that greets every connection with `421` and hangs up, until dropped.
struct Busy {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<usize>>,
}

impl Busy {
    fn start(ip: &str, port: u16) -> Busy {
        use std::io::Write;
        use std::sync::atomic::Ordering;
        let l = std::net::TcpListener::bind((ip, port)).expect("bind the busy host");
        l.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut greeted = 0;
            let end = Instant::now() + Duration::from_secs(60);
            while !stopped.load(Ordering::SeqCst) && Instant::now() < end {
                match l.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.write_all(b"421 4.3.2 too busy, try another host\r\n");
                        greeted += 1;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            greeted
        });
        Busy { stop, thread: Some(thread) }
    }

    fn finish(mut self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

#[test]
fn next_mx_after_a_4xx_greeting() {
    let Some(rig) = Rig::new() else { return };
    let busy = Busy::start("127.0.0.2", rig.port);
    let rx = rig.receiver("rx", &["127.0.0.3"], &[]);
    let server = mailroom(rig.config("", ""), &[]);
    send(&server, &["bob@mx.test"], "busy first mx");
    let got = rx.wait_messages(1, DELIVERY_WAIT);
    assert_eq!(got[0].local(), "127.0.0.3");
    wait_queue_empty(&server, DELIVERY_WAIT);
    assert!(busy.finish() >= 1, "MX 10 was tried first and said 421");
}
