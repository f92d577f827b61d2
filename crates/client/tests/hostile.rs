//! A table of broken and hostile servers: each one ends in a clear error within the configured timeout,
//! and none makes the client panic or wait forever.

mod common;

use std::time::{Duration, Instant};

use common::{serve, Conn};
use mailroom_client::{Client, Envelope, Error, Message};
use mailroom_proto::{Address, ForwardPath, ReversePath};

const TIMEOUT: Duration = Duration::from_millis(800);
/// The timeout plus room for a slow machine; an error later than this is a bug.
const BOUND: Duration = Duration::from_secs(4);

#[derive(Clone)]
enum Act {
    Send(Vec<u8>),
    /// Read a line (a command).
    Expect(&'static str),
    /// Read the message up to the dot.
    Data,
    /// Send this byte again and again, slowly, until the client goes.
    Trickle(u8),
    /// Say nothing until the client goes.
    Hold,
    /// Write without end (a flood of one byte).
    Flood(u8),
}
use Act::*;

fn s(b: &[u8]) -> Act {
    Send(b.to_vec())
}

const GREET: &[u8] = b"220 test.example ESMTP\r\n";
const EHLO: &[u8] = b"250-test.example\r\n250 8BITMIME\r\n";

async fn play(mut c: Conn, script: Vec<Act>) {
    for act in script {
        match act {
            Send(b) => c.send(&b).await,
            Expect(p) => {
                c.expect(p).await;
            }
            Data => {
                c.data().await;
            }
            Trickle(b) => loop {
                use tokio::io::AsyncWriteExt;
                if c.w.write_all(&[b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            },
            Hold => c.drain().await,
            Flood(b) => {
                use tokio::io::AsyncWriteExt;
                let chunk = vec![b; 64 * 1024];
                for _ in 0..1024 {
                    if c.w.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
                return;
            }
        }
    }
    // Then hang up.
}

#[derive(Debug, PartialEq)]
enum Kind {
    Transient,
    Permanent,
}

async fn attempt(script: Vec<Act>) -> Result<(), Error> {
    let (addr, _server) = serve(move |c| play(c, script)).await;
    let mut client = Client::builder(addr.to_string()).timeout(TIMEOUT).helo_name("client.test").connect().await?;
    let from = ReversePath::Mailbox(Address::parse("a@x.example").unwrap());
    let to = vec![ForwardPath::Mailbox(Address::parse("b@y.example").unwrap())];
    let outcome = client.send(&Envelope::new(from, to), Message::from_bytes(b"Subject: s\n\nhi\n")).await?;
    assert!(outcome.is_complete(), "{outcome:?}");
    client.quit().await
}

#[tokio::test]
async fn hostile_servers_end_in_clear_errors() {
    let long = [b"220 ".to_vec(), vec![b'x'; 600], b"\r\n".to_vec()].concat();
    let endless = b"220-more\r\n".repeat(1000);
    let ok_mail = || vec![s(GREET), Expect("EHLO"), s(EHLO), Expect("MAIL"), s(b"250 ok\r\n"), Expect("RCPT")];
    let table: Vec<(&str, Vec<Act>, Kind, &str)> = vec![
        ("never answers", vec![Hold], Kind::Transient, "timed out"),
        ("greeting then silence", vec![s(GREET), Expect("EHLO"), Hold], Kind::Transient, "timed out"),
        ("trickles a reply that never ends", vec![s(b"220 "), Trickle(b'x')], Kind::Transient, "timed out"),
        ("trickles continuation lines", vec![s(b"220-a\r\n"), Trickle(b'\n')], Kind::Transient, "malformed"),
        ("floods without a line end", vec![Flood(b'2')], Kind::Transient, "malformed"),
        ("line too long", vec![Send(long)], Kind::Transient, "longer than 512"),
        ("endless continuation lines", vec![Send(endless)], Kind::Transient, "more than"),
        ("letters for a code", vec![s(b"2x0 hello\r\n"), Hold], Kind::Transient, "three-digit"),
        ("code out of range", vec![s(b"620 hello\r\n"), Hold], Kind::Transient, "three-digit"),
        ("bare LF", vec![s(b"220 hello\n"), Hold], Kind::Transient, "CRLF"),
        ("NUL in a reply", vec![s(b"220 hel\0lo\r\n"), Hold], Kind::Transient, "NUL"),
        ("mixed codes", vec![s(GREET), Expect("EHLO"), s(b"250-a\r\n220 b\r\n"), Hold], Kind::Transient, "mixes codes"),
        ("greeting 554", vec![s(b"554 5.7.1 go away\r\n"), Hold], Kind::Permanent, "554"),
        ("greeting 421", vec![s(b"421 4.3.2 busy\r\n")], Kind::Transient, "421"),
        ("hangs up at once", vec![], Kind::Transient, "closed"),
        ("hangs up mid-reply", vec![s(b"220 half")], Kind::Transient, "closed"),
        (
            "EHLO and HELO refused",
            vec![s(GREET), Expect("EHLO"), s(b"500 no\r\n"), Expect("HELO"), s(b"501 no\r\n")],
            Kind::Permanent,
            "HELO",
        ),
        (
            "silence after MAIL",
            vec![s(GREET), Expect("EHLO"), s(EHLO), Expect("MAIL"), Hold],
            Kind::Transient,
            "MAIL FROM",
        ),
        (
            "MAIL answered 354",
            vec![s(GREET), Expect("EHLO"), s(EHLO), Expect("MAIL"), s(b"354 what\r\n"), Hold],
            Kind::Transient,
            "does not fit",
        ),
        ("RCPT answered 421", [ok_mail(), vec![s(b"421 4.4.2 bye\r\n")]].concat(), Kind::Transient, "421"),
        (
            "silence after the message",
            [ok_mail(), vec![s(b"250 ok\r\n"), Expect("DATA"), s(b"354 go\r\n"), Data, Hold]].concat(),
            Kind::Transient,
            "end of data",
        ),
        (
            "reply nobody asked for",
            [ok_mail(), vec![s(b"250 ok\r\n250 extra\r\n"), Hold]].concat(),
            Kind::Transient,
            "does not fit",
        ),
    ];
    for (name, script, kind, says) in table {
        let start = Instant::now();
        let result = tokio::time::timeout(BOUND * 2, attempt(script)).await.unwrap_or_else(|_| panic!("{name}: hung"));
        let took = start.elapsed();
        let e = result.expect_err(name);
        let msg = e.to_string();
        assert!(took < BOUND, "{name}: took {took:?}");
        assert!(msg.contains(says), "{name}: {msg:?} should say {says:?}");
        let got = if e.is_transient() { Kind::Transient } else { Kind::Permanent };
        assert_eq!(got, kind, "{name}: {msg}");
        assert_eq!(e.is_permanent(), kind == Kind::Permanent, "{name}");
    }
}

#[tokio::test]
async fn errors_carry_the_reply() {
    let e = attempt(vec![s(b"554 5.7.1 go away\r\n"), Hold]).await.unwrap_err();
    let reply = e.reply().expect("a reply");
    assert_eq!(reply.code, 554);
    assert_eq!(reply.lines[0], "go away");
}

#[tokio::test]
async fn nobody_listening_is_transient() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let e = Client::builder(format!("127.0.0.1:{port}")).timeout(TIMEOUT).connect().await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().contains("cannot connect"), "{e}");
}
