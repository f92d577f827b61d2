//! The client session driven by byte tables: scripted server replies in, the exact bytes the client writes
//! out, with every reply also fed split at every byte boundary.

use mailroom_proto::client::{
    parse_reply, Envelope, Error, Event, MessageInfo, Outcome, ReplyError, ReplyParser, Session, Step, MAX_REPLY_LINE,
    MAX_REPLY_LINES,
};
use mailroom_proto::params::{AddrType, Notify, Orcpt, RcptParams, Ret};
use mailroom_proto::{Address, Enhanced, ForwardPath, ReversePath};

fn from(s: &str) -> ReversePath {
    ReversePath::Mailbox(Address::parse(s).unwrap())
}
fn to(s: &str) -> ForwardPath {
    ForwardPath::Mailbox(Address::parse(s).unwrap())
}
fn envelope(f: &str, t: &[&str]) -> Envelope {
    Envelope::new(from(f), t.iter().map(|s| to(s)).collect())
}

/// What a scripted conversation produced.
#[derive(Debug, PartialEq)]
struct Run {
    /// Each write the client made, in order.
    writes: Vec<String>,
    outcome: Option<Outcome>,
    closed: bool,
    steps: Vec<Step>,
}

/// Plays `replies` (one blob per client write that awaits an answer) against a session that sends
/// `message` to `env` as soon as it is ready, then quits. `split` cuts every reply blob into the pieces in
/// which the input arrives.
fn converse(
    env: &Envelope,
    message: &[u8],
    replies: &[&[u8]],
    split: &dyn Fn(&[u8]) -> Vec<Vec<u8>>,
) -> Result<Run, Error> {
    let mut s = Session::new("client.example");
    let mut run = Run { writes: vec![], outcome: None, closed: false, steps: vec![] };
    let mut started = false;
    for blob in replies {
        for piece in split(blob) {
            s.handle_input(&piece)?;
            loop {
                let mut progressed = false;
                while let Some(ev) = s.poll_event() {
                    progressed = true;
                    match ev {
                        Event::Ready if !started => {
                            started = true;
                            s.begin_mail(env, &MessageInfo::scan(message))?;
                        }
                        Event::SendBody => {
                            s.handle_body(message)?;
                            s.finish_body()?;
                        }
                        Event::Done(o) => {
                            run.outcome = Some(o);
                            s.quit()?;
                        }
                        Event::Closed => run.closed = true,
                        Event::Reply { step, .. } => run.steps.push(step),
                        _ => {}
                    }
                }
                if let Some(out) = s.poll_transmit() {
                    progressed = true;
                    run.writes.push(String::from_utf8(out).unwrap());
                }
                if !progressed {
                    break;
                }
            }
        }
    }
    Ok(run)
}

fn whole(b: &[u8]) -> Vec<Vec<u8>> {
    vec![b.to_vec()]
}

/// Runs the script whole, byte by byte, and split in two at every position of every blob: all the same.
fn converse_every_split(env: &Envelope, message: &[u8], replies: &[&[u8]]) -> Result<Run, Error> {
    let want = converse(env, message, replies, &whole);
    let bytes = converse(env, message, replies, &|b: &[u8]| b.iter().map(|&x| vec![x]).collect());
    assert_eq!(format!("{want:?}"), format!("{bytes:?}"), "byte by byte");
    let longest = replies.iter().map(|r| r.len()).max().unwrap_or(0);
    for at in 0..=longest {
        let split = move |b: &[u8]| {
            let at = at.min(b.len());
            vec![b[..at].to_vec(), b[at..].to_vec()]
        };
        let got = converse(env, message, replies, &split);
        assert_eq!(format!("{want:?}"), format!("{got:?}"), "split at {at}");
    }
    want
}

const GREETING: &[u8] = b"220 mx.example ESMTP\r\n";
const EHLO_PIPELINING: &[u8] =
    b"250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n";
const EHLO_PLAIN: &[u8] = b"250-mx.example\r\n250 SIZE 1000\r\n";
const MSG: &[u8] = b"Subject: t\n\nline\n.dot\n";

#[test]
fn pipelined_group_leaves_in_one_write() {
    let env = envelope("a@x.example", &["b@y.example", "c@y.example"]);
    let run = converse_every_split(
        &env,
        MSG,
        &[
            GREETING,
            EHLO_PIPELINING,
            b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n250 2.1.5 ok\r\n354 go\r\n",
            b"250 2.0.0 queued\r\n",
            b"221 2.0.0 bye\r\n",
        ],
    )
    .unwrap();
    assert_eq!(
        run.writes,
        vec![
            "EHLO client.example\r\n",
            "MAIL FROM:<a@x.example> SIZE=26\r\nRCPT TO:<b@y.example>\r\nRCPT TO:<c@y.example>\r\nDATA\r\n",
            "Subject: t\r\n\r\nline\r\n..dot\r\n.\r\n",
            "QUIT\r\n",
        ]
    );
    let o = run.outcome.unwrap();
    assert!(o.is_complete());
    assert_eq!(o.message.unwrap().enhanced, Some(Enhanced(2, 0, 0)));
    assert!(run.closed);
}

#[test]
fn without_pipelining_one_command_at_a_time() {
    let env = envelope("a@x.example", &["b@y.example", "c@y.example"]);
    let run = converse_every_split(
        &env,
        MSG,
        &[
            GREETING,
            EHLO_PLAIN,
            b"250 ok\r\n",
            b"250 ok\r\n",
            b"250 ok\r\n",
            b"354 go\r\n",
            b"250 queued\r\n",
            b"221 bye\r\n",
        ],
    )
    .unwrap();
    assert_eq!(
        run.writes,
        vec![
            "EHLO client.example\r\n",
            "MAIL FROM:<a@x.example> SIZE=26\r\n",
            "RCPT TO:<b@y.example>\r\n",
            "RCPT TO:<c@y.example>\r\n",
            "DATA\r\n",
            "Subject: t\r\n\r\nline\r\n..dot\r\n.\r\n",
            "QUIT\r\n",
        ]
    );
    assert!(run.outcome.unwrap().is_complete());
}

#[test]
fn ehlo_refused_falls_back_to_helo() {
    let env = envelope("a@x.example", &["b@y.example"]);
    let run = converse_every_split(
        &env,
        b"hi\n",
        &[
            GREETING,
            b"502 what\r\n",
            b"250 hello\r\n",
            b"250 ok\r\n",
            b"250 ok\r\n",
            b"354 go\r\n",
            b"250 ok\r\n",
            b"221 bye\r\n",
        ],
    )
    .unwrap();
    assert_eq!(&run.writes[..3], ["EHLO client.example\r\n", "HELO client.example\r\n", "MAIL FROM:<a@x.example>\r\n"]);
    assert!(run.outcome.unwrap().is_complete());
}

#[test]
fn some_recipients_refused_the_rest_get_it() {
    let env = envelope("a@x.example", &["b@y.example", "nobody@y.example", "c@y.example"]);
    for (caps, replies) in [
        (EHLO_PIPELINING, vec![&b"250 ok\r\n250 ok\r\n550 5.1.1 no such user\r\n250 ok\r\n354 go\r\n"[..]]),
        (
            EHLO_PLAIN,
            vec![&b"250 ok\r\n"[..], b"250 ok\r\n", b"550 5.1.1 no such user\r\n", b"250 ok\r\n", b"354 go\r\n"],
        ),
    ] {
        let mut script = vec![GREETING, caps];
        script.extend(replies);
        script.extend([&b"250 2.0.0 queued\r\n"[..], b"221 bye\r\n"]);
        let run = converse_every_split(&env, b"hi\n", &script).unwrap();
        let o = run.outcome.unwrap();
        let refused: Vec<_> = o.refused().map(|r| r.recipient.to_string()).collect();
        assert_eq!(refused, vec!["<nobody@y.example>"]);
        assert_eq!(o.refused().next().unwrap().result.as_ref().unwrap_err().code, 550);
        assert_eq!(o.accepted().count(), 2);
        assert!(run.writes.iter().any(|w| w.ends_with("hi\r\n.\r\n")));
    }
}

#[test]
fn all_refused_without_pipelining_sends_rset_not_data() {
    let env = envelope("a@x.example", &["n1@y.example", "n2@y.example"]);
    let run = converse_every_split(
        &env,
        b"hi\n",
        &[GREETING, EHLO_PLAIN, b"250 ok\r\n", b"550 no\r\n", b"450 later\r\n", b"250 reset\r\n", b"221 bye\r\n"],
    )
    .unwrap();
    assert!(run.writes.iter().all(|w| !w.contains("DATA")), "{:?}", run.writes);
    assert_eq!(run.writes[4], "RSET\r\n");
    let o = run.outcome.unwrap();
    assert_eq!(o.accepted().count(), 0);
    let codes: Vec<u16> = o.refused().map(|r| r.result.as_ref().unwrap_err().code).collect();
    assert_eq!(codes, vec![550, 450]);
    assert!(run.closed);
}

#[test]
fn all_refused_with_pipelining() {
    let env = envelope("a@x.example", &["n1@y.example"]);
    // The server refuses DATA, as RFC 2920 §3.1 wants.
    let run = converse_every_split(
        &env,
        b"hi\n",
        &[GREETING, EHLO_PIPELINING, b"250 ok\r\n550 no\r\n554 no valid recipients\r\n", b"221 bye\r\n"],
    )
    .unwrap();
    assert_eq!(run.outcome.unwrap().accepted().count(), 0);
    assert_eq!(run.writes.last().unwrap(), "QUIT\r\n");
    // A server that says 354 anyway gets an empty message, never the real one.
    let run = converse_every_split(
        &env,
        b"secret\n",
        &[GREETING, EHLO_PIPELINING, b"250 ok\r\n550 no\r\n354 go\r\n", b"250 what\r\n", b"221 bye\r\n"],
    )
    .unwrap();
    assert!(run.writes.contains(&".\r\n".to_string()), "{:?}", run.writes);
    assert!(!run.writes.iter().any(|w| w.contains("secret")));
    assert_eq!(run.outcome.unwrap().accepted().count(), 0);
}

#[test]
fn mail_refused_refuses_everyone() {
    let env = envelope("a@x.example", &["b@y.example"]);
    let run =
        converse_every_split(&env, b"hi\n", &[GREETING, EHLO_PLAIN, b"553 5.7.1 not you\r\n", b"221 bye\r\n"]).unwrap();
    let o = run.outcome.unwrap();
    assert_eq!(o.refused().next().unwrap().result.as_ref().unwrap_err().code, 553);
    assert_eq!(run.writes.len(), 3, "{:?}", run.writes);
    // Pipelined: the RCPT and DATA replies (503) still come and are matched; the MAIL reply is the reason.
    let run = converse_every_split(
        &env,
        b"hi\n",
        &[
            GREETING,
            EHLO_PIPELINING,
            b"553 5.7.1 not you\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need RCPT\r\n",
            b"221 bye\r\n",
        ],
    )
    .unwrap();
    assert_eq!(run.outcome.unwrap().refused().next().unwrap().result.as_ref().unwrap_err().code, 553);
}

#[test]
fn data_refused_after_the_dot() {
    let env = envelope("a@x.example", &["b@y.example"]);
    let run = converse_every_split(
        &env,
        b"hi\n",
        &[GREETING, EHLO_PIPELINING, b"250 ok\r\n250 ok\r\n354 go\r\n", b"552 5.3.4 too big\r\n", b"221 bye\r\n"],
    )
    .unwrap();
    let o = run.outcome.unwrap();
    assert_eq!(o.refused().next().unwrap().result.as_ref().unwrap_err().code, 552);
}

fn ready(ehlo: &[u8]) -> Session {
    let mut s = Session::new("c.example");
    s.handle_input(GREETING).unwrap();
    s.poll_transmit().unwrap();
    s.handle_input(ehlo).unwrap();
    assert!(s.is_ready());
    while s.poll_event().is_some() {}
    s
}

#[test]
fn mail_parameters_follow_the_message_and_the_server() {
    let all = b"250-mx\r\n250-SIZE 100\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n";
    let ascii = envelope("a@x.example", &["b@y.example"]);
    let utf8 = envelope("jöran@x.example", &["b@y.example"]);
    let info = |m: &[u8]| MessageInfo::scan(m);
    for (ehlo, env, msg, want) in [
        (&all[..], &ascii, &b"S: a\r\n\r\nb\r\n"[..], Ok(vec!["SIZE=11"])),
        (all, &ascii, "S: a\n\nbö\n".as_bytes(), Ok(vec!["SIZE=13", "BODY=8BITMIME"])),
        (all, &ascii, "S: ä\n\nb\n".as_bytes(), Ok(vec!["SIZE=12", "BODY=8BITMIME", "SMTPUTF8"])),
        (all, &utf8, b"S: a\n\nb\n", Ok(vec!["SIZE=11", "SMTPUTF8"])),
        (EHLO_PLAIN, &utf8, b"S: a\n\nb\n", Err("SMTPUTF8")),
        (EHLO_PLAIN, &ascii, "S: a\n\nbö\n".as_bytes(), Err("8BITMIME")),
        (EHLO_PLAIN, &ascii, "S: ä\n\nb\n".as_bytes(), Err("SMTPUTF8")),
        (b"250 mx\r\n", &ascii, b"S: a\n\nb\n", Ok(vec![])),
    ] {
        let s = ready(ehlo);
        let got = s.mail_params(env, &info(msg));
        match (got, want) {
            (Ok(p), Ok(w)) => assert_eq!(p.to_string(), w.join(" ")),
            (Err(Error::MissingExtension { extension, .. }), Err(w)) => assert_eq!(extension, w),
            (got, want) => panic!("{got:?} vs {want:?}"),
        }
    }
    let s = ready(all);
    let e = s.mail_params(&ascii, &MessageInfo::unknown(Some(101))).unwrap_err();
    assert!(matches!(e, Error::TooBig { size: 101, limit: 100 }) && e.is_permanent());
    // An unknown body under 8BITMIME is declared 8-bit, to be safe.
    assert_eq!(s.mail_params(&ascii, &MessageInfo::unknown(None)).unwrap().to_string(), "BODY=8BITMIME");
}

#[test]
fn reply_to_a_command_not_yet_sent_is_an_error() {
    let mut s = Session::new("c.example");
    let e = s.handle_input(b"220 hi\r\n250 too early\r\n").unwrap_err();
    assert!(matches!(e, Error::Unexpected { step: None, .. }), "{e:?}");
    // The session stays failed.
    assert!(s.handle_input(b"250 more\r\n").is_err());
    assert!(s.begin_mail(&envelope("a@b.example", &["c@d.example"]), &MessageInfo::default()).is_err());
}

#[test]
fn starttls_with_bytes_after_the_220_is_refused() {
    let mut s = ready(b"250-mx\r\n250 STARTTLS\r\n");
    s.starttls().unwrap();
    assert_eq!(s.poll_transmit().unwrap(), b"STARTTLS\r\n");
    let e = s.handle_input(b"220 go ahead\r\n250 injected\r\n").unwrap_err();
    assert!(matches!(e, Error::Unexpected { step: Some(Step::StartTls), .. }), "{e:?}");

    let mut s = ready(b"250-mx\r\n250 STARTTLS\r\n");
    s.starttls().unwrap();
    s.poll_transmit().unwrap();
    s.handle_input(b"220 go ahead\r\n").unwrap();
    assert!(std::iter::from_fn(|| s.poll_event()).any(|e| e == Event::StartTls));
    s.handle_tls_established().unwrap();
    assert_eq!(s.poll_transmit().unwrap(), b"EHLO c.example\r\n");
    assert!(s.capabilities().extensions.is_empty(), "capabilities are forgotten after TLS");
}

/// Hostile or broken replies at each point of the conversation: every one is an error, none a panic.
#[test]
fn hostile_replies_table() {
    let long = format!("220 {}\r\n", "x".repeat(MAX_REPLY_LINE));
    let endless = "220-more\r\n".repeat(MAX_REPLY_LINES + 1);
    let env = envelope("a@x.example", &["b@y.example"]);
    let cases: Vec<(&str, Vec<&[u8]>)> = vec![
        ("greeting 554", vec![b"554 go away\r\n"]),
        ("greeting 421", vec![b"421 busy\r\n"]),
        ("greeting 250", vec![b"250 odd\r\n"]),
        ("line too long", vec![long.as_bytes()]),
        ("endless continuation", vec![endless.as_bytes()]),
        ("letters for a code", vec![b"2x0 hi\r\n"]),
        ("two-digit code", vec![b"22 hi\r\n"]),
        ("code 600", vec![b"600 hi\r\n"]),
        ("code 170", vec![b"170 hi\r\n"]),
        ("no separator", vec![b"220hi\r\n"]),
        ("bare LF", vec![b"220 hi\n"]),
        ("bare CR", vec![b"220 h\ri\r\n"]),
        ("NUL", vec![b"220 h\0i\r\n"]),
        ("empty line", vec![b"\r\n"]),
        ("mixed codes", vec![GREETING, b"250-mx\r\n251 PIPELINING\r\n"]),
        ("EHLO and HELO refused", vec![GREETING, b"500 no\r\n", b"500 no\r\n"]),
        ("EHLO 421", vec![GREETING, b"421 4.3.2 shutting down\r\n"]),
        ("MAIL answered 354", vec![GREETING, EHLO_PLAIN, b"354 what\r\n"]),
        ("DATA answered 250", vec![GREETING, EHLO_PLAIN, b"250 ok\r\n", b"250 ok\r\n", b"250 ok\r\n"]),
        ("RCPT answered 421", vec![GREETING, EHLO_PLAIN, b"250 ok\r\n", b"421 bye\r\n"]),
    ];
    for (name, script) in cases {
        let got = converse(&env, b"hi\n", &script, &whole);
        let e = got.expect_err(name);
        assert!(!e.to_string().is_empty(), "{name}");
        // Byte by byte it fails the same way.
        let e2 = converse(&env, b"hi\n", &script, &|b: &[u8]| b.iter().map(|&x| vec![x]).collect()).expect_err(name);
        assert_eq!(e, e2, "{name}");
    }
}

#[test]
fn transient_and_permanent() {
    let env = envelope("a@x.example", &["b@y.example"]);
    let e = converse(&env, b"", &[b"421 busy\r\n"], &whole).unwrap_err();
    assert!(e.is_transient() && e.reply().unwrap().code == 421);
    let e = converse(&env, b"", &[b"554 no\r\n"], &whole).unwrap_err();
    assert!(e.is_permanent() && e.reply().unwrap().code == 554);
    let e = converse(&env, b"", &[b"22 x\r\n"], &whole).unwrap_err();
    assert!(e.is_transient() && e.reply().is_none());
}

/// The reply parser on its own: a table, each input also fed one byte at a time.
#[test]
fn reply_parser_table() {
    type Want = Result<(u16, Option<Enhanced>, Vec<&'static str>), ReplyError>;
    let cases: Vec<(&[u8], Want)> = vec![
        (b"220 mx ESMTP\r\n", Ok((220, None, vec!["mx ESMTP"]))),
        (b"250\r\n", Ok((250, None, vec![""]))),
        (b"250 \r\n", Ok((250, None, vec![""]))),
        (b"250-a\r\n250-b\r\n250 c\r\n", Ok((250, None, vec!["a", "b", "c"]))),
        (b"550 5.1.1 no such user\r\n", Ok((550, Some(Enhanced(5, 1, 1)), vec!["no such user"]))),
        (b"550-5.1.1 one\r\n550 5.1.1 two\r\n", Ok((550, Some(Enhanced(5, 1, 1)), vec!["one", "two"]))),
        (b"550 2.1.1 wrong class\r\n", Ok((550, None, vec!["2.1.1 wrong class"]))),
        (b"250 2.0.0\r\n", Ok((250, Some(Enhanced(2, 0, 0)), vec![""]))),
        (b"250 \xff\x1b[31m\r\n", Ok((250, None, vec!["\u{fffd}?[31m"]))),
        (b"250-a\r\n251 b\r\n", Err(ReplyError::MixedCodes { first: 250, other: 251 })),
        (b"250 a\n", Err(ReplyError::BareLineEnd)),
        (b"250 a\rb\r\n", Err(ReplyError::BareLineEnd)),
        (b"250 a\0\r\n", Err(ReplyError::Nul)),
        (b"250_a\r\n", Err(ReplyError::BadSeparator("250_a".into()))),
        (b"25\r\n", Err(ReplyError::BadCode("25".into()))),
        (b"160 x\r\n", Err(ReplyError::BadCode("160".into()))),
        (b"260 x\r\n", Err(ReplyError::BadCode("260".into()))),
    ];
    for (input, want) in cases {
        let got = parse_reply(input).map(|r| {
            let (r, n) = r.expect("complete");
            assert_eq!(n, input.len());
            (r.code, r.enhanced, r.lines.iter().map(|l| l.to_string()).collect::<Vec<_>>())
        });
        let want = want.map(|(c, e, l)| (c, e, l.into_iter().map(String::from).collect::<Vec<_>>()));
        assert_eq!(got, want, "{:?}", String::from_utf8_lossy(input));
        // One byte at a time: same reply, or an error no later than the whole input.
        let mut p = ReplyParser::new();
        let mut buf = Vec::new();
        let mut result = None;
        for &b in input {
            buf.push(b);
            match p.parse(&buf) {
                Ok((n, r)) => {
                    buf.drain(..n);
                    if let Some(r) = r {
                        result = Some(Ok((r.code, r.enhanced, r.lines.iter().map(|l| l.to_string()).collect())));
                    }
                }
                Err(e) => {
                    result = Some(Err(e));
                    break;
                }
            }
        }
        assert_eq!(result.expect("decided"), want, "byte by byte {:?}", String::from_utf8_lossy(input));
    }
}

#[test]
fn reply_parser_needs_more_and_bounds() {
    assert_eq!(parse_reply(b"").unwrap(), None);
    assert_eq!(parse_reply(b"250-a\r\n250").unwrap(), None);
    assert_eq!(parse_reply(b"25").unwrap(), None);
    // A line without an end is refused as soon as it passes the bound, not after waiting for more.
    let mut no_end = b"250 ".to_vec();
    no_end.resize(MAX_REPLY_LINE, b'x');
    assert_eq!(parse_reply(&no_end), Err(ReplyError::LineTooLong));
    // Exactly 512 octets with CRLF is fine.
    let mut max = b"250 ".to_vec();
    max.resize(MAX_REPLY_LINE - 2, b'x');
    max.extend_from_slice(b"\r\n");
    assert!(parse_reply(&max).unwrap().is_some());
    // A bad code is refused at its first wrong byte.
    assert_eq!(parse_reply(b"x").unwrap(), None);
    assert_eq!(parse_reply(b"29").unwrap(), None);
    assert_eq!(parse_reply(b"260"), Err(ReplyError::BadCode("260".into())));
    assert_eq!(parse_reply(b"x\r").unwrap(), None);
    assert_eq!(parse_reply(b"xyz"), Err(ReplyError::BadCode("xyz".into())));
}

#[test]
fn every_limit_of_continuations() {
    let ok = "250-x\r\n".repeat(MAX_REPLY_LINES - 1) + "250 x\r\n";
    assert_eq!(parse_reply(ok.as_bytes()).unwrap().unwrap().0.lines.len(), MAX_REPLY_LINES);
    let too_many = "250-x\r\n".repeat(MAX_REPLY_LINES) + "250 x\r\n";
    assert_eq!(parse_reply(too_many.as_bytes()), Err(ReplyError::TooManyLines));
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever a server sends, in whatever pieces, the session answers Ok or Err and never panics or
        /// holds more than one reply line of input.
        #[test]
        fn arbitrary_server_bytes(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8)) {
            let env = envelope("a@x.example", &["b@y.example"]);
            let script: Vec<&[u8]> = chunks.iter().map(|c| c.as_slice()).collect();
            let _ = converse(&env, b"hi\n", &script, &whole);
        }

        /// Valid replies with random codes and texts at every step: no panic either.
        #[test]
        fn random_reply_codes(codes in proptest::collection::vec(200u16..560, 1..10), text in "[ -~]{0,40}") {
            let env = envelope("a@x.example", &["b@y.example", "c@y.example"]);
            let replies: Vec<Vec<u8>> = codes.iter().map(|c| format!("{c} {text}\r\n").into_bytes()).collect();
            let mut script: Vec<&[u8]> = vec![GREETING, EHLO_PIPELINING];
            script.extend(replies.iter().map(|r| r.as_slice()));
            let _ = converse(&env, b"hi\n", &script, &whole);
        }
    }
}

/// An envelope asking for DSNs: RET and ENVID, NOTIFY and ORCPT on the first recipient only.
fn dsn_envelope() -> Envelope {
    envelope("a@x.example", &["b@y.example", "c@y.example"])
        .with_dsn(Some(Ret::Hdrs), Some("env 1".into()))
        .with_rcpt_params(vec![RcptParams {
            notify: Some(Notify { success: true, failure: true, delay: false }),
            orcpt: Some(Orcpt { addr_type: AddrType::Rfc822, address: "b@old.example".into() }),
        }])
}

#[test]
fn dsn_parameters_go_to_a_server_that_offers_dsn() {
    let ehlo: &[u8] = b"250-mx.example\r\n250-PIPELINING\r\n250-DSN\r\n250 SIZE 1000\r\n";
    let run = converse_every_split(
        &dsn_envelope(),
        MSG,
        &[
            GREETING,
            ehlo,
            b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n250 2.1.5 ok\r\n354 go\r\n",
            b"250 2.0.0 queued\r\n",
            b"221 2.0.0 bye\r\n",
        ],
    )
    .unwrap();
    assert_eq!(
        run.writes[1],
        "MAIL FROM:<a@x.example> SIZE=26 RET=HDRS ENVID=env+201\r\n\
         RCPT TO:<b@y.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@old.example\r\n\
         RCPT TO:<c@y.example>\r\nDATA\r\n"
    );
    let o = run.outcome.unwrap();
    assert!(o.is_complete() && !o.dsn_dropped);
}

#[test]
fn dsn_parameters_are_dropped_without_dsn_and_the_caller_is_told() {
    // One command at a time too: the RCPTs sent after MAIL's reply carry no parameters either.
    let run = converse_every_split(
        &dsn_envelope(),
        MSG,
        &[
            GREETING,
            EHLO_PLAIN,
            b"250 ok\r\n",
            b"250 ok\r\n",
            b"250 ok\r\n",
            b"354 go\r\n",
            b"250 queued\r\n",
            b"221 bye\r\n",
        ],
    )
    .unwrap();
    assert_eq!(
        &run.writes[1..4],
        &["MAIL FROM:<a@x.example> SIZE=26\r\n", "RCPT TO:<b@y.example>\r\n", "RCPT TO:<c@y.example>\r\n"]
    );
    let o = run.outcome.unwrap();
    assert!(o.is_complete() && o.dsn_dropped);
    // Without DSN parameters nothing is dropped.
    let plain = envelope("a@x.example", &["b@y.example"]);
    let run = converse(
        &plain,
        MSG,
        &[GREETING, EHLO_PLAIN, b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n", b"250 queued\r\n"],
        &whole,
    )
    .unwrap();
    assert!(!run.outcome.unwrap().dsn_dropped);
}

#[test]
fn dsn_parameters_sent_one_at_a_time_without_pipelining() {
    let ehlo: &[u8] = b"250-mx.example\r\n250 DSN\r\n";
    let run = converse(
        &dsn_envelope(),
        MSG,
        &[GREETING, ehlo, b"250 ok\r\n", b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n", b"250 queued\r\n"],
        &whole,
    )
    .unwrap();
    assert_eq!(run.writes[1], "MAIL FROM:<a@x.example> RET=HDRS ENVID=env+201\r\n");
    assert_eq!(run.writes[2], "RCPT TO:<b@y.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@old.example\r\n");
    assert_eq!(run.writes[3], "RCPT TO:<c@y.example>\r\n");
}
