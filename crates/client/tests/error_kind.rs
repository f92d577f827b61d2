//! How each client error is classified: transient (try again later), permanent (trying again fails the
//! same way) or local (our own settings or input are wrong; neither, and no server was at fault).

use std::io;
use std::time::Duration;

use mailroom_client::Error;

fn local_errors() -> Vec<Error> {
    vec![
        Error::TlsConfig("CA file /nonexistent.pem: No such file or directory".into()),
        Error::BadServer("host:port".into()),
        Error::Message(io::Error::other("stdin went away")),
    ]
}

#[test]
fn local_errors_are_neither_transient_nor_permanent() {
    for e in local_errors() {
        assert!(!e.is_transient(), "{e} is not worth retrying");
        assert!(!e.is_permanent(), "{e} is not the server's permanent refusal");
    }
}

#[test]
fn network_failures_are_transient_only() {
    let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
    let reset = io::Error::from(io::ErrorKind::ConnectionReset);
    for e in [
        Error::Connect { server: "127.0.0.1:9".into(), source: refused },
        Error::Io(reset),
        Error::Timeout { waiting: "the greeting".into(), after: Duration::from_secs(1) },
        Error::Closed("the reply to MAIL FROM".into()),
    ] {
        assert!(e.is_transient() && !e.is_permanent(), "{e}");
    }
}

#[test]
fn an_untrusted_certificate_is_permanent_only() {
    let e = Error::Certificate { server: "mx".into(), reason: "UnknownIssuer".into() };
    assert!(e.is_permanent() && !e.is_transient(), "{e}");
}

fn reply(wire: &[u8]) -> mailroom_proto::Reply {
    mailroom_proto::client::parse_reply(wire).unwrap().unwrap().0
}

#[test]
fn session_errors_are_sorted_by_whose_they_are() {
    use mailroom_client::ErrorKind::*;
    use mailroom_proto::client::{Error as P, Step};
    let table: Vec<(P, mailroom_client::ErrorKind)> = vec![
        (P::Rejected { step: Step::Rcpt, reply: reply(b"450 4.2.0 busy\r\n") }, Transient),
        (P::Rejected { step: Step::Mail, reply: reply(b"550 5.7.1 no\r\n") }, Permanent),
        (P::TooBig { size: 10, limit: 5 }, Permanent),
        (P::NotReady("a transaction is open"), Local),
        (P::InvalidCredentials("the password holds NUL, CR or LF"), Local),
    ];
    for (p, want) in table {
        let e = Error::from(p);
        assert_eq!(e.kind(), want, "{e}");
        assert_eq!(
            (e.is_transient(), e.is_permanent(), e.is_local()),
            (want == Transient, want == Permanent, want == Local)
        );
    }
}
