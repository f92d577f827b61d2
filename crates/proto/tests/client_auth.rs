//! The client session's AUTH (RFC 4954, PLAIN RFC 4616, LOGIN) and its STARTTLS restart, driven by bytes:
//! what leaves, what the caller is told, and that no secret shows in transcripts or `Debug` output.

use mailroom_proto::base64;
use mailroom_proto::client::{Error, Event, Mechanism, Secret, Session, Step};

const PASSWORD: &str = "correct horse";

fn secret() -> Secret {
    Secret::new(PASSWORD.to_string())
}

/// The forms of the password that must never show: itself and the base64 blobs that carry it.
fn leaks(text: &str) -> bool {
    let plain_blob = base64::encode(format!("\0alice@example.test\0{PASSWORD}").as_bytes());
    let login_blob = base64::encode(PASSWORD.as_bytes());
    text.contains(PASSWORD) || text.contains(&plain_blob) || text.contains(&login_blob)
}

/// Greeting and EHLO done with `ehlo` as the EHLO reply.
fn ready(ehlo: &[u8]) -> Session {
    let mut s = Session::new("c.example");
    s.handle_input(b"220 mx ESMTP\r\n").unwrap();
    assert_eq!(s.poll_transmit().unwrap(), b"EHLO c.example\r\n");
    s.handle_input(ehlo).unwrap();
    assert!(s.is_ready());
    while s.poll_event().is_some() {}
    s
}

fn events(s: &mut Session) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// Feeds `bytes` one octet at a time (the split-at-every-byte form of the tables).
fn feed_bytewise(s: &mut Session, bytes: &[u8]) -> Result<(), Error> {
    for b in bytes {
        s.handle_input(std::slice::from_ref(b))?;
    }
    Ok(())
}

#[test]
fn plain_is_preferred_and_sent_as_initial_response() {
    for bytewise in [false, true] {
        let mut s = ready(b"250-mx\r\n250-AUTH LOGIN PLAIN\r\n250 8BITMIME\r\n");
        assert_eq!(s.auth("alice@example.test", &secret()).unwrap(), Mechanism::Plain);
        let wire = s.poll_transmit().unwrap();
        let blob = base64::encode(format!("\0alice@example.test\0{PASSWORD}").as_bytes());
        assert_eq!(wire, format!("AUTH PLAIN {blob}\r\n").as_bytes());
        let reply = b"235 2.7.0 Authentication successful\r\n";
        if bytewise {
            feed_bytewise(&mut s, reply).unwrap();
        } else {
            s.handle_input(reply).unwrap();
        }
        let ev = events(&mut s);
        assert!(ev.contains(&Event::Sent("AUTH PLAIN ********".into())), "{ev:?}");
        assert!(ev.contains(&Event::Authenticated(Mechanism::Plain)), "{ev:?}");
        assert_eq!(s.authenticated(), Some(Mechanism::Plain));
        assert!(s.is_ready());
        assert!(!leaks(&format!("{ev:?}")));
    }
}

#[test]
fn login_answers_each_334() {
    let mut s = ready(b"250-mx\r\n250 AUTH LOGIN CRAM-MD5\r\n");
    assert_eq!(s.auth("alice@example.test", &secret()).unwrap(), Mechanism::Login);
    assert_eq!(s.poll_transmit().unwrap(), b"AUTH LOGIN\r\n");
    // While the exchange runs, nothing else may start.
    assert!(matches!(s.noop(), Err(Error::NotReady(_))));
    s.handle_input(b"334 VXNlcm5hbWU6\r\n").unwrap();
    assert_eq!(s.poll_transmit().unwrap(), format!("{}\r\n", base64::encode(b"alice@example.test")).as_bytes());
    s.handle_input(b"334 UGFzc3dvcmQ6\r\n").unwrap();
    let debug_mid_exchange = format!("{s:?}");
    assert_eq!(s.poll_transmit().unwrap(), format!("{}\r\n", base64::encode(PASSWORD.as_bytes())).as_bytes());
    s.handle_input(b"235 2.7.0 ok\r\n").unwrap();
    let ev = events(&mut s);
    let sent: Vec<_> = ev.iter().filter_map(|e| if let Event::Sent(l) = e { Some(l.as_str()) } else { None }).collect();
    assert_eq!(sent, ["AUTH LOGIN", "********", "********"]);
    assert!(ev.contains(&Event::Authenticated(Mechanism::Login)));
    assert!(!leaks(&format!("{ev:?}")) && !leaks(&debug_mid_exchange), "{debug_mid_exchange}");
}

#[test]
fn the_password_waiting_to_leave_is_not_in_debug_output() {
    let mut s = ready(b"250-mx\r\n250 AUTH PLAIN\r\n");
    s.auth("alice@example.test", &secret()).unwrap();
    // The AUTH line sits in the outbound buffer until taken.
    let d = format!("{s:?}");
    assert!(!leaks(&d), "{d}");
    assert!(!format!("{:?}", secret()).contains(PASSWORD));
}

#[test]
fn refusals_come_back_as_replies_and_the_session_goes_on() {
    for (code, text) in [(535, "535 5.7.8 Authentication credentials invalid\r\n"), (454, "454 4.7.0 try later\r\n")] {
        let mut s = ready(b"250-mx\r\n250 AUTH PLAIN LOGIN\r\n");
        s.auth("alice@example.test", &secret()).unwrap();
        s.poll_transmit().unwrap();
        s.handle_input(text.as_bytes()).unwrap();
        let ev = events(&mut s);
        assert!(
            ev.iter().any(|e| matches!(e, Event::Reply { step: Step::Auth, reply } if reply.code == code)),
            "{ev:?}"
        );
        assert!(!ev.iter().any(|e| matches!(e, Event::Authenticated(_))));
        assert_eq!(s.authenticated(), None);
        // Still usable: QUIT (or another try) may follow.
        s.quit().unwrap();
        assert_eq!(s.poll_transmit().unwrap(), b"QUIT\r\n");
    }
}

#[test]
fn no_auth_offered_tries_plain_without_the_secret_first() {
    // Plain text to a server that keeps AUTH for TLS: the refusal (538) is what the user should see, and
    // the password never left.
    let mut s = ready(b"250-mx\r\n250 STARTTLS\r\n");
    assert_eq!(s.auth("alice@example.test", &secret()).unwrap(), Mechanism::Plain);
    assert_eq!(s.poll_transmit().unwrap(), b"AUTH PLAIN\r\n");
    s.handle_input(b"538 5.7.11 Encryption required for requested authentication mechanism\r\n").unwrap();
    let ev = events(&mut s);
    assert!(ev.iter().any(|e| matches!(e, Event::Reply { step: Step::Auth, reply } if reply.code == 538)));
    // A server that does say 334 gets the PLAIN response then.
    let mut s = ready(b"250 mx\r\n");
    s.auth("alice@example.test", &secret()).unwrap();
    s.poll_transmit().unwrap();
    s.handle_input(b"334 \r\n").unwrap();
    let blob = base64::encode(format!("\0alice@example.test\0{PASSWORD}").as_bytes());
    assert_eq!(s.poll_transmit().unwrap(), format!("{blob}\r\n").as_bytes());
}

#[test]
fn only_other_mechanisms_is_an_error_before_anything_is_sent() {
    let mut s = ready(b"250-mx\r\n250 AUTH CRAM-MD5 XOAUTH2\r\n");
    let e = s.auth("alice@example.test", &secret()).unwrap_err();
    assert!(matches!(e, Error::MissingExtension { .. }), "{e:?}");
    assert!(s.poll_transmit().is_none());
}

#[test]
fn out_of_step_replies_to_auth_are_errors() {
    // A third challenge to LOGIN, a 334 to PLAIN with its initial response, a 250 instead of 235, a 354.
    let cases: [(&[u8], &[&[u8]]); 4] = [
        (b"250 AUTH LOGIN", &[b"334 VXNlcm5hbWU6\r\n", b"334 UGFzc3dvcmQ6\r\n", b"334 again\r\n"]),
        (b"250 AUTH PLAIN", &[b"334 \r\n"]),
        (b"250 AUTH PLAIN", &[b"250 fine\r\n"]),
        (b"250 AUTH PLAIN", &[b"354 go\r\n"]),
    ];
    for (ehlo, replies) in cases {
        let mut ehlo_reply = b"250-mx\r\n".to_vec();
        ehlo_reply.extend_from_slice(ehlo);
        ehlo_reply.extend_from_slice(b"\r\n");
        let mut s = ready(&ehlo_reply);
        s.auth("u@x.example", &secret()).unwrap();
        let mut result = Ok(());
        for r in replies {
            s.poll_transmit();
            result = s.handle_input(r);
        }
        let e = result.unwrap_err();
        assert!(matches!(e, Error::Unexpected { step: Some(Step::Auth), .. }), "{e:?}");
    }
}

#[test]
fn a_421_to_auth_ends_the_session() {
    let mut s = ready(b"250-mx\r\n250 AUTH PLAIN\r\n");
    s.auth("u@x.example", &secret()).unwrap();
    s.poll_transmit().unwrap();
    let e = s.handle_input(b"421 4.7.0 too many failures\r\n").unwrap_err();
    assert!(matches!(e, Error::Rejected { step: Step::Auth, .. }), "{e:?}");
}

#[test]
fn auth_twice_is_refused_locally() {
    let mut s = ready(b"250-mx\r\n250 AUTH PLAIN\r\n");
    s.auth("u@x.example", &secret()).unwrap();
    s.poll_transmit().unwrap();
    s.handle_input(b"235 ok\r\n").unwrap();
    assert!(matches!(s.auth("u@x.example", &secret()), Err(Error::NotReady(_))));
}

/// After STARTTLS the session forgets the plain-text capabilities and uses the ones said over TLS: AUTH
/// appears only there (as mailroom's submission port does it), and STARTTLS is not offered or accepted again.
#[test]
fn after_starttls_the_new_ehlo_capabilities_count() {
    let mut s = ready(b"250-mx\r\n250-PIPELINING\r\n250 STARTTLS\r\n");
    assert!(s.capabilities().auth.is_empty());
    s.starttls().unwrap();
    assert_eq!(s.poll_transmit().unwrap(), b"STARTTLS\r\n");
    s.handle_input(b"220 2.0.0 ready\r\n").unwrap();
    assert!(events(&mut s).contains(&Event::StartTls));
    assert!(!s.is_tls());
    s.handle_tls_established().unwrap();
    assert!(s.is_tls());
    assert_eq!(s.poll_transmit().unwrap(), b"EHLO c.example\r\n");
    s.handle_input(b"250-mx\r\n250-AUTH LOGIN\r\n250 SIZE 1000\r\n").unwrap();
    assert!(events(&mut s).contains(&Event::Ready));
    assert_eq!(s.capabilities().auth, ["LOGIN"]);
    assert!(!s.capabilities().pipelining && !s.capabilities().starttls);
    assert_eq!(s.capabilities().size_limit(), Some(1000));
    assert_eq!(s.auth("u@x.example", &secret()).unwrap(), Mechanism::Login);
    assert_eq!(s.poll_transmit().unwrap(), b"AUTH LOGIN\r\n");

    // A second STARTTLS is refused by the session itself, even if a server offered it again.
    let mut s = ready(b"250-mx\r\n250 STARTTLS\r\n");
    s.starttls().unwrap();
    s.poll_transmit().unwrap();
    s.handle_input(b"220 go\r\n").unwrap();
    s.handle_tls_established().unwrap();
    s.poll_transmit().unwrap();
    s.handle_input(b"250-mx\r\n250 STARTTLS\r\n").unwrap();
    assert!(matches!(s.starttls(), Err(Error::NotReady(_))));
    // So is it on a stream that was TLS from the start.
    let mut s = Session::new("c.example").implicit_tls();
    s.handle_input(b"220 mx\r\n").unwrap();
    s.poll_transmit().unwrap();
    s.handle_input(b"250-mx\r\n250 STARTTLS\r\n").unwrap();
    assert!(s.is_tls() && matches!(s.starttls(), Err(Error::NotReady(_))));
}

/// The mirror of the server's injection test: bytes after the 220 to STARTTLS, however they are split,
/// are refused and never taken as a reply.
#[test]
fn starttls_220_with_trailing_bytes_is_refused_at_every_split() {
    let blob: &[u8] = b"220 ready\r\n250 injected\r\n";
    for cut in 0..=blob.len() {
        let mut s = ready(b"250-mx\r\n250 STARTTLS\r\n");
        s.starttls().unwrap();
        s.poll_transmit().unwrap();
        let (a, b) = blob.split_at(cut);
        let r = s.handle_input(a).and_then(|_| s.handle_input(b));
        let ev = events(&mut s);
        // However it is cut, the conversation fails: with the 220 alone in one read, the session has asked
        // for TLS and takes no further plaintext (the shell would be in the TLS handshake by then).
        assert!(r.is_err(), "cut {cut}");
        assert!(!ev.iter().any(|e| matches!(e, Event::Reply { reply, .. } if reply.code == 250)), "cut {cut}: {ev:?}");
        assert_eq!(ev.contains(&Event::StartTls), cut == "220 ready\r\n".len(), "cut {cut}");
    }
}
