//! Relaying stays closed: with outbound delivery configured, a client that neither authenticated nor comes
//! from `relay_networks` still gets 550 5.7.1 for every foreign destination, including the classic relay
//! probes; a client inside `relay_networks` (the positive control) relays.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::common::{Server, Smtp};
use crate::support::{mailroom, queued, Rig, ALICE, DELIVERY_WAIT};

/// Relay probes (the attack suite's open-relay list, in short) that must all be refused.
const PROBES: &[&str] = &[
    "victim@one.test",
    "victim@mx.test",
    "victim%one.test@example.test",
    "one.test!victim@example.test",
    "@example.test:victim@one.test",
    "\"victim@one.test\"@example.test",
    "victim@one.test.",
    "postmaster@one.test",
    "victim@sub.example.test",
];

fn session(server: &Server, from: Option<Ipv4Addr>) -> Smtp {
    let mut s = match from {
        Some(ip) => Smtp::try_connect_from(ip, server.port).expect("connect"),
        None => Smtp::connect(server.port),
    };
    assert_eq!(s.read_reply().code, 220);
    s.ehlo();
    s
}

#[test]
fn unauthenticated_relaying_is_still_refused() {
    let Some(rig) = Rig::new() else { return };
    let rx = rig.receiver("rx", &["127.0.0.2"], &[]);
    let server = mailroom(rig.config("relay_networks = [\"127.0.0.2/32\"]", ""), &[]);
    for sender in ["stranger@elsewhere.test", ALICE, ""] {
        let mut s = session(&server, None);
        for rcpt in PROBES {
            s.expect(&format!("MAIL FROM:<{sender}>"), 250);
            let r = s.cmd(&format!("RCPT TO:<{rcpt}>"));
            assert_ne!(r.code / 100, 2, "relay probe <{sender}> -> <{rcpt}> accepted: {r:?}");
            if ["victim@one.test", "victim@mx.test", "postmaster@one.test"].contains(rcpt) {
                assert!(r.is(550, "5.7.1"), "<{rcpt}>: {r:?}");
            }
            s.expect("RSET", 250);
        }
    }
    // The submission port without AUTH refuses the transaction itself.
    let mut s = Smtp::connect(server.submission_port.unwrap());
    assert_eq!(s.read_reply().code, 220);
    s.ehlo();
    let r = s.cmd(&format!("MAIL FROM:<{ALICE}>"));
    assert!(r.is(530, "5.7.0"), "AUTH required: {r:?}");
    assert!(queued(&server).is_empty(), "nothing was queued");

    // The positive control: from 127.0.0.2, inside relay_networks, the same relay is taken and delivered.
    let mut s = session(&server, Some(Ipv4Addr::new(127, 0, 0, 2)));
    s.expect("MAIL FROM:<cron@host.example.test>", 250);
    s.expect("RCPT TO:<victim@one.test>", 250);
    let r = s.data(b"Subject: from relay_networks\r\n\r\nhello\r\n");
    assert_eq!(r.code, 250, "{r:?}");
    let got = rx.wait_messages(1, DELIVERY_WAIT);
    assert_eq!(got[0].rcpts(), vec!["victim@one.test"]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rx.messages().len(), 1, "only the control was relayed");
}

/// A message with N Received headers and a subject, CRLF.
fn with_hops(n: usize, subject: &str) -> Vec<u8> {
    let mut m = String::new();
    for i in 0..n {
        m.push_str(&format!("Received: from hop{i}.test by hop{}.test; Mon, 30 Nov 2026 12:00:00 +0000\r\n", i + 1));
    }
    m.push_str(&format!("Subject: {subject}\r\n\r\nloop?\r\n"));
    m.into_bytes()
}

#[test]
fn too_many_hops_is_refused_at_end_of_data() {
    let Some(rig) = Rig::new() else { return };
    let rx = rig.receiver("rx", &["127.0.0.2"], &[]);
    let server = mailroom(rig.config("relay_networks = [\"127.0.0.0/8\"]\nmax_hops = 5", ""), &[]);
    let mut s = session(&server, None);
    s.expect("MAIL FROM:<loop@elsewhere.test>", 250);
    s.expect("RCPT TO:<bob@one.test>", 250);
    let r = s.data(&with_hops(6, "looping"));
    assert!(r.is(554, "5.4.6"), "RFC 5321 §6.3 loop detection: {r:?}");
    // The control: 3 hops (4 with mailroom's own) pass.
    s.expect("MAIL FROM:<loop@elsewhere.test>", 250);
    s.expect("RCPT TO:<bob@one.test>", 250);
    let r = s.data(&with_hops(3, "fine"));
    assert_eq!(r.code, 250, "{r:?}");
    let got = rx.wait_messages(1, DELIVERY_WAIT);
    assert_eq!(got[0].header("Subject").as_deref(), Some("fine"));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rx.messages().len(), 1);
}
