//! Session scenarios through an in-memory helper: bytes in, replies and stored bytes out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mailroom_proto::params::{AddrType, Notify, Orcpt, RcptParams, Ret};
use mailroom_proto::server::{AbortReason, Config, Decision, Event, Session, DEFAULT_ERROR_DELAY};
use mailroom_proto::{Enhanced, ForwardPath, Reply};

/// An in-memory server: accepts recipients whose local part is in `users`, "stores" bodies in memory.
struct S {
    s: Session,
    users: Vec<&'static str>,
    now: Instant,
    body: Vec<u8>,
    open: bool,
    stored: Vec<Vec<u8>>,
    aborted: Vec<AbortReason>,
    out: Vec<u8>,
    greeting: String,
    closed: bool,
    /// Every delay the session asked for.
    delays: Vec<Duration>,
}

impl S {
    fn with(config: Config) -> S {
        let now = Instant::now();
        let mut s = S {
            s: Session::new(Arc::new(config), now),
            users: vec!["alice", "bob", "postmaster"],
            now,
            body: Vec::new(),
            open: false,
            stored: Vec::new(),
            aborted: Vec::new(),
            out: Vec::new(),
            greeting: String::new(),
            closed: false,
            delays: Vec::new(),
        };
        s.pump();
        s.greeting = String::from_utf8_lossy(&std::mem::take(&mut s.out)).into_owned();
        s
    }
    fn new() -> S {
        S::with(Config { hostname: "mx.test".into(), ..Config::default() })
    }

    /// Runs events to completion, answering like a small server would.
    fn pump(&mut self) {
        loop {
            while let Some(ev) = self.s.poll_event() {
                match ev {
                    Event::Mail { .. } => self.s.answer(Decision::Accept),
                    Event::Rcpt { to, .. } => {
                        let ok = match &to {
                            ForwardPath::Postmaster => true,
                            ForwardPath::Mailbox(a) => self.users.contains(&a.local()),
                        };
                        self.s.answer(if ok {
                            Decision::Accept
                        } else {
                            Decision::Reply(Reply::new(550, Enhanced(5, 1, 1), "No such user"))
                        });
                    }
                    Event::DataStart => {
                        assert!(!self.open, "DataStart while a message is open");
                        self.open = true;
                        self.body.clear();
                        self.s.answer(Decision::Accept);
                    }
                    Event::Data(d) => {
                        assert!(self.open, "Data outside a message");
                        self.body.extend_from_slice(&d);
                    }
                    Event::DataEnd => {
                        assert!(self.open);
                        self.open = false;
                        self.stored.push(std::mem::take(&mut self.body));
                        self.s.answer(Decision::Accept);
                    }
                    Event::DataAborted(r) => {
                        assert!(self.open, "abort without open message");
                        self.open = false;
                        self.aborted.push(r);
                    }
                    Event::Close => self.closed = true,
                    Event::StartTls => self.s.handle_tls_established(self.now),
                    Event::Auth(c) => self.s.answer(if c.password.expose() == "secret" {
                        Decision::Accept
                    } else {
                        Decision::Reply(Reply::new(535, Enhanced(5, 7, 8), "Authentication credentials invalid"))
                    }),
                }
            }
            if let Some(b) = self.s.poll_transmit() {
                self.out.extend_from_slice(&b);
            }
            // The error tarpit: the time passes at once here.
            if let Some(d) = self.s.poll_delay() {
                self.delays.push(d);
                self.s.handle_delay_elapsed(self.now);
                continue;
            }
            if self.s.poll_event().is_none() {
                break;
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) -> String {
        self.s.handle_input(bytes, self.now);
        self.pump();
        String::from_utf8_lossy(&std::mem::take(&mut self.out)).into_owned()
    }

    /// Sends one command line and checks that the reply starts with `want`.
    #[track_caller]
    fn cmd(&mut self, line: &str, want: &str) -> String {
        let r = self.send(format!("{line}\r\n").as_bytes());
        assert!(r.starts_with(want), "{line:?}: wanted {want:?}, got {r:?}");
        r
    }

    fn greeted() -> S {
        let mut s = S::new();
        assert_eq!(s.greeting, "220 mx.test ESMTP mailroom\r\n");
        s.cmd("EHLO client.test", "250-mx.test");
        s
    }
}

#[test]
fn ehlo_lists_extensions() {
    let mut s = S::new();
    let r = s.cmd("EHLO c.test", "250-");
    for ext in ["SIZE 26214400", "PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING", "DSN"] {
        assert!(r.contains(&format!("250-{ext}\r\n")) || r.contains(&format!("250 {ext}\r\n")), "{ext} in {r}");
    }
    assert!(r.ends_with("250 HELP\r\n"));
    s.cmd("HELO c.test", "250 mx.test\r\n");
}

#[test]
fn a_whole_transaction() {
    let mut s = S::greeted();
    s.cmd("MAIL FROM:<sender@example.org>", "250 2.1.0");
    s.cmd("RCPT TO:<alice@mx.test>", "250 2.1.5");
    s.cmd("DATA", "354 ");
    assert_eq!(s.send(b"Subject: hi\r\n\r\n..dot\r\nbody\r\n.\r\n"), "250 2.0.0 Message accepted\r\n");
    assert_eq!(s.stored, vec![b"Subject: hi\r\n\r\n.dot\r\nbody\r\n".to_vec()]);
    s.cmd("QUIT", "221 2.0.0");
    assert!(s.closed);
}

#[test]
fn sequence_errors() {
    let mut s = S::new();
    s.cmd("MAIL FROM:<a@b>", "503 5.5.1");
    s.cmd("EHLO c", "250");
    s.cmd("RCPT TO:<alice@x>", "503 5.5.1");
    s.cmd("DATA", "503 5.5.1");
    s.cmd("MAIL FROM:<a@b>", "250");
    s.cmd("MAIL FROM:<a@b>", "503 5.5.1");
    s.cmd("DATA", "554 5.5.1");
    s.cmd("RSET", "250 2.0.0");
    s.cmd("RCPT TO:<alice@x>", "503 5.5.1");
}

#[test]
fn unknown_and_malformed() {
    let mut s = S::greeted();
    s.cmd("FOO bar", "500 5.5.2");
    s.cmd("MAIL FROM:<a@b> X=1", "555 5.5.4");
    s.cmd("MAIL FROM:<a b@c>", "501 5.");
    s.cmd("VRFY alice", "252 2.5.0");
    s.cmd("EXPN list", "502 5.5.1");
    s.cmd("HELP", "214-2.0.0");
    s.cmd("NOOP", "250 2.0.0");
    s.cmd("TURN", "502 5.5.1");
}

#[test]
fn long_line_is_refused_and_the_session_goes_on() {
    let mut s = S::greeted();
    let long = format!("NOOP {}", "x".repeat(600));
    s.cmd(&long, "500 5.5.2");
    // A line with no CRLF for far too long: one 500, then resync at the next CRLF.
    let r = s.send(&vec![b'a'; 100_000]);
    assert_eq!(r, "500 5.5.2 Line too long\r\n");
    assert_eq!(s.send(b"aaaa\r\n"), "");
    s.cmd("NOOP", "250");
    // MAIL gets the SIZE and AUTH allowances (RFC 1870, RFC 4954 §5).
    let auth = format!("MAIL FROM:<a@b> SIZE=100 AUTH={}", "x".repeat(700));
    assert!(auth.len() > 512);
    s.cmd(&auth, "250");
}

#[test]
fn unknown_users_refused_others_delivered() {
    let mut s = S::greeted();
    s.cmd("MAIL FROM:<>", "250");
    s.cmd("RCPT TO:<alice@x>", "250");
    s.cmd("RCPT TO:<nobody@x>", "550 5.1.1");
    s.cmd("RCPT TO:<bob@x>", "250");
    s.cmd("RCPT TO:<Postmaster>", "250");
    assert_eq!(s.s.transaction().unwrap().rcpts.len(), 3);
    s.cmd("DATA", "354");
    s.send(b"x\r\n.\r\n");
    assert_eq!(s.stored.len(), 1);
}

#[test]
fn pipelined_replies_come_in_order_in_one_batch() {
    let mut s = S::greeted();
    let r = s.send(b"MAIL FROM:<a@b>\r\nRCPT TO:<alice@x>\r\nRCPT TO:<zed@x>\r\nRCPT TO:<bob@x>\r\nDATA\r\n");
    let codes: Vec<&str> = r.lines().map(|l| &l[..3]).collect();
    assert_eq!(codes, ["250", "250", "550", "250", "354"]);
    let r = s.send(b"hello\r\n.\r\nMAIL FROM:<c@d>\r\nRCPT TO:<bob@x>\r\nDATA\r\nsecond\r\n.\r\nQUIT\r\n");
    let codes: Vec<&str> = r.lines().map(|l| &l[..3]).collect();
    assert_eq!(codes, ["250", "250", "250", "354", "250", "221"]);
    assert_eq!(s.stored, vec![b"hello\r\n".to_vec(), b"second\r\n".to_vec()]);
}

#[test]
fn pending_decision_holds_later_commands() {
    let now = Instant::now();
    let mut s = Session::new(Arc::new(Config::default()), now);
    s.poll_transmit();
    s.handle_input(b"EHLO c\r\nMAIL FROM:<a@b>\r\nNOOP\r\n", now);
    assert!(matches!(s.poll_event(), Some(Event::Mail { .. })));
    assert!(s.poll_event().is_none());
    let before = String::from_utf8(s.poll_transmit().unwrap()).unwrap();
    assert!(before.starts_with("250-") && !before.contains("2.1.0"), "{before}");
    s.answer(Decision::Accept);
    assert_eq!(s.poll_transmit().unwrap(), b"250 2.1.0 Sender OK\r\n250 2.0.0 OK\r\n");
}

#[test]
fn too_many_recipients() {
    let mut s = S::with(Config { hostname: "mx.test".into(), max_recipients: 2, ..Config::default() });
    s.cmd("EHLO c", "250");
    s.cmd("MAIL FROM:<a@b>", "250");
    s.cmd("RCPT TO:<alice@x>", "250");
    s.cmd("RCPT TO:<bob@x>", "250");
    s.cmd("RCPT TO:<postmaster@x>", "452 4.5.3");
    s.cmd("DATA", "354");
}

#[test]
fn size_limits() {
    let mut s = S::with(Config { hostname: "mx.test".into(), max_message_size: 100, ..Config::default() });
    s.cmd("EHLO c", "250");
    s.cmd("MAIL FROM:<a@b> SIZE=101", "552 5.3.4");
    s.cmd("MAIL FROM:<a@b> SIZE=100", "250");
    s.cmd("RCPT TO:<alice@x>", "250");
    s.cmd("DATA", "354");
    let big = format!("{}\r\n.\r\n", "y".repeat(200));
    assert!(s.send(big.as_bytes()).starts_with("552 5.3.4"));
    assert!(s.stored.is_empty());
    assert_eq!(s.aborted, vec![AbortReason::TooBig]);
    // The session goes on, and a small message still gets through.
    s.cmd("MAIL FROM:<a@b>", "250");
    s.cmd("RCPT TO:<alice@x>", "250");
    // No reply before the chunk has arrived (RFC 3030 §2); then the refusal, for the whole message.
    assert_eq!(s.send(b"BDAT 200 LAST\r\n"), "", "a reply before the chunk");
    assert_eq!(s.send(&[b'z'; 200]), "552 5.3.4 Message size exceeds fixed maximum message size\r\n");
    s.cmd("MAIL FROM:<a@b>", "250");
    s.cmd("RCPT TO:<alice@x>", "250");
    s.cmd("DATA", "354");
    assert!(s.send(b"ok\r\n.\r\n").starts_with("250"));
    assert_eq!(s.stored.len(), 1);
}

#[test]
fn bdat_and_data_store_identical_bytes() {
    let msg = b"Subject: x\r\n\r\n.leading dot\r\nline\r\n";
    let mut a = S::greeted();
    a.cmd("MAIL FROM:<a@b>", "250");
    a.cmd("RCPT TO:<alice@x>", "250");
    a.cmd("DATA", "354");
    a.send(b"Subject: x\r\n\r\n..leading dot\r\nline\r\n.\r\n");
    let mut b = S::greeted();
    b.cmd("MAIL FROM:<a@b>", "250");
    b.cmd("RCPT TO:<alice@x>", "250");
    let r = b.send(format!("BDAT 10\r\n{}", std::str::from_utf8(&msg[..10]).unwrap()).as_bytes());
    assert_eq!(r, "250 2.0.0 10 octets received\r\n");
    let rest = &msg[10..];
    let mut input = format!("BDAT {} LAST\r\n", rest.len()).into_bytes();
    input.extend_from_slice(rest);
    assert!(b.send(&input).starts_with("250 2.0.0 Message accepted"));
    assert_eq!(a.stored, vec![msg.to_vec()]);
    assert_eq!(b.stored, a.stored);
}

#[test]
fn bdat_refused_chunk_bytes_are_never_commands() {
    let mut s = S::greeted();
    // BDAT without MAIL: refused, but its 30 octets are read as data, not as a smuggled MAIL.
    let r = s.send(b"BDAT 30\r\nMAIL FROM:<evil@x>\r\nRCPT TO:\r\nNOOP\r\n");
    assert_eq!(r, "503 5.5.1 Need MAIL command\r\n250 2.0.0 OK\r\n");
    assert!(s.s.transaction().is_none());
}

#[test]
fn rset_between_bdat_chunks_drops_the_message() {
    let mut s = S::greeted();
    s.cmd("MAIL FROM:<a@b>", "250");
    s.cmd("RCPT TO:<alice@x>", "250");
    s.send(b"BDAT 3\r\nabc");
    s.cmd("RSET", "250");
    assert_eq!(s.aborted, vec![AbortReason::Reset]);
    // After RSET there is no transaction: the chunk is read and dropped, then refused.
    assert_eq!(s.send(b"BDAT 1 LAST\r\n"), "", "a reply before the chunk");
    assert_eq!(s.send(b"x"), "503 5.5.1 Need MAIL command\r\n");
    assert!(s.stored.is_empty());
}

#[test]
fn smuggling_look_alikes_do_not_end_data() {
    for fake in [&b"\n.\n"[..], b"\n.\r\n", b"\r.\r", b"\r\n.\n", b"\r\n.\r", b"\r.\r\n"] {
        let mut s = S::greeted();
        s.cmd("MAIL FROM:<a@b>", "250");
        s.cmd("RCPT TO:<alice@x>", "250");
        s.cmd("DATA", "354");
        let mut input = b"Subject: s\r\n\r\nhello".to_vec();
        input.extend_from_slice(fake);
        input.extend_from_slice(b"MAIL FROM:<evil@x>\r\nRCPT TO:<bob@x>\r\nDATA\r\nsmuggled\r\n");
        assert_eq!(s.send(&input), "", "{fake:?}: nothing answered before the real end");
        let r = s.send(b".\r\n");
        assert_eq!(r, "550 5.5.2 Bare CR or LF in message data is not allowed; use CRLF line endings\r\n", "{fake:?}");
        assert!(s.stored.is_empty(), "{fake:?}");
        s.cmd("NOOP", "250");
    }
}

#[test]
fn smtputf8_addresses_need_the_parameter() {
    let mut s = S::greeted();
    s.cmd("MAIL FROM:<jöran@x.test>", "553 5.6.7");
    s.cmd("MAIL FROM:<jöran@x.test> SMTPUTF8", "250");
    assert_eq!(s.s.protocol(), "UTF8SMTP");
    s.cmd("RCPT TO:<alice@x>", "250");
}

#[test]
fn helo_clients_get_no_extensions() {
    let mut s = S::new();
    s.cmd("HELO c", "250 mx.test");
    s.cmd("MAIL FROM:<a@b> SIZE=10", "555 5.5.4");
    s.cmd("MAIL FROM:<a@b>", "250");
    assert_eq!(s.s.protocol(), "SMTP");
}

#[test]
fn too_many_errors_close_the_session() {
    let mut s = S::with(Config { hostname: "mx.test".into(), max_errors: 3, ..Config::default() });
    s.cmd("FOO", "500");
    s.cmd("FOO", "500");
    let r = s.cmd("FOO", "500");
    assert!(r.ends_with("421 4.7.0 mx.test Too many errors, closing connection\r\n"), "{r}");
    assert!(s.closed);
}

#[test]
fn timeout_closes_with_421() {
    let now = Instant::now();
    let cfg = Config { command_timeout: Duration::from_secs(10), ..Config::default() };
    let mut s = Session::new(Arc::new(cfg), now);
    s.poll_transmit();
    assert_eq!(s.poll_timeout(), Some(now + Duration::from_secs(10)));
    s.handle_timeout(now + Duration::from_secs(5));
    assert!(!s.is_closed());
    s.handle_timeout(now + Duration::from_secs(10));
    assert!(String::from_utf8(s.poll_transmit().unwrap()).unwrap().starts_with("421 4.4.2"));
    assert!(s.is_closed());
}

#[test]
fn shutdown_lets_a_transaction_finish() {
    let mut s = S::greeted();
    s.cmd("MAIL FROM:<a@b>", "250");
    s.cmd("RCPT TO:<alice@x>", "250");
    s.s.handle_shutdown();
    assert!(!s.s.is_closed());
    s.cmd("DATA", "354");
    let r = s.send(b"x\r\n.\r\n");
    assert!(r.starts_with("250 2.0.0") && r.contains("421 4.3.2"), "{r}");
    assert_eq!(s.stored.len(), 1);
    let mut idle = S::greeted();
    idle.s.handle_shutdown();
    idle.pump();
    assert!(idle.closed);
}

/// The same client input, cut at every byte boundary, gives the same replies and stored bytes.
#[test]
fn whole_session_split_at_every_byte() {
    let input: &[u8] = b"EHLO c\r\nMAIL FROM:<a@b> SIZE=20\r\nRCPT TO:<alice@x>\r\nRCPT TO:<no@x>\r\nDATA\r\n\
a\r\n..b\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<bob@x>\r\nBDAT 5\r\nhe\r\nlBDAT 4 LAST\r\nlo\r\nNOOP\r\nQUIT\r\n";
    let run = |pieces: &[&[u8]]| {
        let mut s = S::new();
        let mut out = s.greeting.clone().into_bytes();
        for p in pieces {
            s.s.handle_input(p, s.now);
            s.pump();
            out.append(&mut s.out);
        }
        (out, s.stored.clone())
    };
    let whole = run(&[input]);
    assert_eq!(whole.1, vec![b"a\r\n.b\r\n".to_vec(), b"he\r\nllo\r\n".to_vec()]);
    assert!(String::from_utf8_lossy(&whole.0).ends_with("250 2.0.0 OK\r\n221 2.0.0 mx.test closing connection\r\n"));
    for cut in 0..=input.len() {
        assert_eq!(run(&[&input[..cut], &input[cut..]]), whole, "cut at {cut}");
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(run(&bytes), whole, "byte by byte");
}

fn tls_config() -> Config {
    Config { hostname: "mx.test".into(), starttls: true, auth: true, auth_required: true, ..Config::default() }
}

#[test]
fn starttls_drops_pipelined_plaintext_and_forgets_the_session() {
    let now = Instant::now();
    let mut s = Session::new(Arc::new(tls_config()), now);
    s.poll_transmit();
    s.handle_input(b"EHLO c\r\n", now);
    let ehlo = String::from_utf8(s.poll_transmit().unwrap()).unwrap();
    assert!(ehlo.contains("250-STARTTLS\r\n"), "{ehlo}");
    assert!(!ehlo.contains("AUTH"), "AUTH is not offered before TLS: {ehlo}");
    // STARTTLS with commands injected behind it in the same write.
    s.handle_input(b"STARTTLS\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<alice@x>\r\n", now);
    assert_eq!(s.poll_event(), Some(Event::StartTls));
    assert_eq!(s.poll_transmit().unwrap(), b"220 2.0.0 Ready to start TLS\r\n");
    s.handle_tls_established(now);
    assert!(s.poll_transmit().is_none(), "nothing injected is answered after the handshake");
    assert!(s.poll_event().is_none());
    assert!(s.is_tls() && s.helo().is_none(), "a new EHLO is needed");
    s.handle_input(b"MAIL FROM:<a@b>\r\n", now);
    assert!(String::from_utf8(s.poll_transmit().unwrap()).unwrap().starts_with("503 5.5.1"));
    s.handle_input(b"EHLO c\r\n", now);
    let ehlo = String::from_utf8(s.poll_transmit().unwrap()).unwrap();
    assert!(!ehlo.contains("STARTTLS") && ehlo.contains("250-AUTH PLAIN LOGIN\r\n"), "{ehlo}");
    s.handle_input(b"STARTTLS\r\n", now);
    assert!(String::from_utf8(s.poll_transmit().unwrap()).unwrap().starts_with("503 5.5.1"));
}

#[test]
fn auth_needs_tls_and_is_required_for_mail() {
    let mut s = S::with(tls_config());
    s.cmd("EHLO c", "250");
    s.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==", "538 5.7.11");
    s.cmd("MAIL FROM:<a@b>", "530 5.7.0");
}

/// Drives a TLS session where the password "secret" is right.
fn authed_session(now: Instant) -> Session {
    let mut s = Session::new(Arc::new(Config { allow_plaintext_auth: true, ..tls_config() }), now);
    s.poll_transmit();
    s.handle_input(b"EHLO c\r\n", now);
    s.poll_transmit();
    s
}

fn check_auth(s: &mut Session) -> Option<String> {
    match s.poll_event() {
        Some(Event::Auth(c)) => {
            assert!(!format!("{c:?}").contains("secret"), "Debug output never shows the password");
            let ok = c.password.expose() == "secret";
            s.answer(if ok {
                Decision::Accept
            } else {
                Decision::Reply(Reply::new(535, Enhanced(5, 7, 8), "Authentication credentials invalid"))
            });
            Some(c.username)
        }
        _ => None,
    }
}

#[test]
fn auth_plain_and_login() {
    let now = Instant::now();
    // PLAIN with an initial response: \0alice\0secret
    let mut s = authed_session(now);
    s.handle_input(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n", now);
    assert_eq!(check_auth(&mut s).as_deref(), Some("alice"));
    assert_eq!(s.poll_transmit().unwrap(), b"235 2.7.0 Authentication successful\r\n");
    assert_eq!(s.authenticated(), Some("alice"));
    assert_eq!(s.protocol(), "ESMTPA");
    s.handle_input(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n", now);
    assert!(String::from_utf8(s.poll_transmit().unwrap()).unwrap().starts_with("503 5.5.1"));
    // LOGIN in steps.
    let mut s = authed_session(now);
    s.handle_input(b"AUTH LOGIN\r\n", now);
    assert_eq!(s.poll_transmit().unwrap(), b"334 VXNlcm5hbWU6\r\n");
    s.handle_input(b"Ym9i\r\n", now);
    assert_eq!(s.poll_transmit().unwrap(), b"334 UGFzc3dvcmQ6\r\n");
    s.handle_input(b"c2VjcmV0\r\n", now);
    assert_eq!(check_auth(&mut s).as_deref(), Some("bob"));
    assert_eq!(s.poll_transmit().unwrap(), b"235 2.7.0 Authentication successful\r\n");
    // PLAIN without an initial response, then a cancel.
    let mut s = authed_session(now);
    s.handle_input(b"AUTH PLAIN\r\n*\r\n", now);
    assert_eq!(s.poll_transmit().unwrap(), b"334 \r\n501 5.0.0 Authentication cancelled\r\n");
    s.handle_input(b"AUTH CRAM-MD5\r\nAUTH PLAIN !!!\r\n", now);
    let r = String::from_utf8(s.poll_transmit().unwrap()).unwrap();
    assert!(r.starts_with("504 5.5.4") && r.contains("501 5.5.2"), "{r}");
}

#[test]
fn wrong_passwords_are_counted_then_the_session_closes() {
    let now = Instant::now();
    let mut s = authed_session(now);
    for i in 0..3 {
        // \0alice\0wrong
        s.handle_input(b"AUTH PLAIN AGFsaWNlAHdyb25n\r\n", now);
        assert!(check_auth(&mut s).is_some());
        let r = String::from_utf8(s.poll_transmit().unwrap()).unwrap();
        assert!(r.starts_with("535 5.7.8"), "{r}");
        assert_eq!(s.is_closed(), i == 2, "closed after the third failure: {r}");
    }
}

#[test]
fn slow_data_is_cut_off_after_data_timeout() {
    let t0 = Instant::now();
    let cfg = Config {
        data_timeout: Duration::from_secs(10),
        command_timeout: Duration::from_secs(300),
        min_data_rate: 100,
        ..Config::default()
    };
    let mut s = Session::new(Arc::new(cfg), t0);
    s.handle_input(b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n", t0);
    while let Some(e) = s.poll_event() {
        if !matches!(e, Event::Data(_)) {
            s.answer(Decision::Accept);
        }
    }
    s.poll_transmit();
    // 500 octets in the first 2 s: enough to be allowed until 5 s, but data_timeout (10 s) comes first.
    s.handle_input(&[b'x'; 500], t0 + Duration::from_secs(2));
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(10)), "no check before data_timeout");
    s.handle_timeout(t0 + Duration::from_secs(9));
    assert!(!s.is_closed());
    // A trickle: by 12 s, 700 octets in 12 s is below 100/s.
    s.handle_input(&[b'x'; 200], t0 + Duration::from_secs(6));
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    s.handle_timeout(t0 + Duration::from_secs(10));
    let out = String::from_utf8(s.poll_transmit().unwrap()).unwrap();
    assert!(out.starts_with("421 4.4.2") && out.contains("rate"), "{out}");
    assert!(s.is_closed());
    assert!(std::iter::from_fn(|| s.poll_event()).any(|e| matches!(e, Event::DataAborted(_))));
}

#[test]
fn fast_data_is_not_cut_off() {
    let t0 = Instant::now();
    let cfg = Config { data_timeout: Duration::from_secs(10), min_data_rate: 100, ..Config::default() };
    let mut s = Session::new(Arc::new(cfg), t0);
    s.handle_input(b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n", t0);
    while let Some(e) = s.poll_event() {
        if !matches!(e, Event::Data(_)) {
            s.answer(Decision::Accept);
        }
    }
    s.handle_input(&[b'x'; 5000], t0 + Duration::from_secs(1));
    // 5000 octets at 100/s would last until 50 s; the idle timeout (10 s after the last input) comes first.
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(11)));
    s.handle_input(&[b'x'; 10], t0 + Duration::from_secs(10));
    s.handle_timeout(t0 + Duration::from_secs(15));
    assert!(!s.is_closed(), "above the minimum rate at 15 s");
}

#[test]
fn endless_headers_are_refused() {
    let mut s = S::with(Config { hostname: "mx.test".into(), max_header_lines: 50, ..Config::default() });
    s.cmd("EHLO c", "250");
    s.cmd("MAIL FROM:<a@b>", "250");
    s.cmd("RCPT TO:<alice@x>", "250");
    s.cmd("DATA", "354");
    let mut msg = b"Subject: x\r\n".to_vec();
    for _ in 0..100 {
        msg.extend_from_slice(b" continued\r\n");
    }
    msg.extend_from_slice(b"\r\nbody\r\n.\r\n");
    assert_eq!(s.send(&msg), "552 5.3.4 Message header section too large\r\n");
    assert!(s.stored.is_empty());
    // The same through BDAT.
    s.cmd("MAIL FROM:<a@b>", "250");
    s.cmd("RCPT TO:<alice@x>", "250");
    let body = &msg[..msg.len() - 3];
    let mut input = format!("BDAT {} LAST\r\n", body.len()).into_bytes();
    input.extend_from_slice(body);
    assert_eq!(s.send(&input), "552 5.3.4 Message header section too large\r\n");
    assert!(s.stored.is_empty());
    // A normal message still gets through.
    s.cmd("MAIL FROM:<a@b>", "250");
    s.cmd("RCPT TO:<alice@x>", "250");
    s.cmd("DATA", "354");
    assert!(s.send(b"Subject: ok\r\n\r\nfine\r\n.\r\n").starts_with("250"));
}

#[test]
fn errors_past_half_the_limit_are_delayed() {
    let now = Instant::now();
    let cfg = Config { max_errors: 4, error_delay: Duration::from_millis(700), ..Config::default() };
    let mut s = Session::new(Arc::new(cfg), now);
    for i in 1..=3 {
        s.handle_input(b"BOGUS\r\n", now);
        let d = s.poll_delay();
        assert_eq!(d.is_some(), i > 2, "error {i}");
    }
    s.handle_input(b"NOOP\r\n", now);
    assert_eq!(s.poll_delay(), None, "good commands are not delayed");
}

#[test]
fn refused_bdat_chunks_count_towards_max_errors() {
    let mut s = S::with(Config { hostname: "mx.test".into(), max_errors: 5, ..Config::default() });
    s.cmd("EHLO c", "250");
    let mut out = String::new();
    for _ in 0..10 {
        out += &s.send(b"BDAT 1\r\nx");
        if s.closed {
            break;
        }
    }
    assert_eq!(out.matches("503 5.5.1").count(), 5, "{out}");
    assert!(out.ends_with("421 4.7.0 mx.test Too many errors, closing connection\r\n"), "{out}");
    assert!(s.closed);
}

#[test]
fn helo_names_with_whitespace_or_controls_are_refused() {
    let mut s = S::new();
    s.cmd("EHLO evil.example\t(via trusted)", "501 5.5.4");
    s.cmd("EHLO a\u{85}b", "500 5.5.2");
    s.cmd("EHLO good.example", "250");
}

#[test]
fn draining_sessions_start_no_new_transaction() {
    // A transaction under way may finish, but EHLO (which ends it) closes the session instead.
    let mut s = S::greeted();
    s.cmd("MAIL FROM:<a@b>", "250");
    s.s.handle_shutdown();
    s.pump();
    assert!(!s.closed);
    s.cmd("EHLO again", "421 4.3.2");
    assert!(s.closed);
    // A session in the middle of an AUTH exchange is idle too.
    let now = Instant::now();
    let mut a = authed_session(now);
    a.handle_input(b"AUTH LOGIN\r\n", now);
    a.poll_transmit();
    a.handle_shutdown();
    assert!(a.is_closed());
}

/// Finding 1 ("refused recipients are free"): a RCPT the shell refuses is an error like any other, so a
/// harvesting client meets `max_errors` and is closed with 421 4.7.0 instead of testing a whole dictionary.
#[test]
fn refused_recipients_count_as_errors_finding_1() {
    let mut s = S::with(Config { hostname: "mx.test".into(), max_errors: 5, ..Config::default() });
    s.cmd("EHLO c", "250");
    s.cmd("MAIL FROM:<a@b>", "250");
    s.cmd("RCPT TO:<alice@x>", "250 2.1.5");
    let out = s.send("RCPT TO:<nobody@x>\r\n".repeat(100).as_bytes());
    assert_eq!(out.matches("550 5.1.1").count(), 5, "{out}");
    assert!(out.ends_with("421 4.7.0 mx.test Too many errors, closing connection\r\n"), "{out}");
    assert!(s.closed);
}

/// Finding 1, second half: past half of `max_errors` each error reply gets its own delay, also when the
/// client pipelined them all in one write. The session stops after such a reply and asks for the delay.
#[test]
fn pipelined_errors_are_delayed_one_by_one_finding_1() {
    let now = Instant::now();
    let cfg = Config { max_errors: 20, error_delay: Duration::from_secs(1), ..Config::default() };
    let mut s = Session::new(Arc::new(cfg), now);
    s.poll_transmit();
    s.handle_input(&b"XYZZY\r\n".repeat(25), now);
    // Errors 1-10 are answered at once; the 11th is the first past half: it waits, and so does the rest.
    let out = String::from_utf8(s.poll_transmit().unwrap()).unwrap();
    assert_eq!(out.matches("500 5.5.2").count(), 11, "{out}");
    assert_eq!(s.poll_delay(), Some(Duration::from_secs(1)));
    assert!(s.is_delayed() && !s.is_closed());
    assert_eq!(s.poll_timeout(), None, "no idle timer while the shell owes the delay");
    assert_eq!(s.poll_delay(), None, "asked once per reply");
    // Input that arrives meanwhile waits too.
    s.handle_input(b"NOOP\r\n", now);
    assert!(s.poll_transmit().is_none());
    // Each elapsed delay releases exactly one further error reply, with its own delay.
    for i in 12..=19 {
        s.handle_delay_elapsed(now);
        let out = String::from_utf8(s.poll_transmit().unwrap()).unwrap();
        assert_eq!(out, "500 5.5.2 Command unrecognized\r\n", "error {i}");
        assert_eq!(s.poll_delay(), Some(Duration::from_secs(1)), "error {i}");
    }
    // The 20th error is delayed too, and closes the session.
    s.handle_delay_elapsed(now);
    let out = String::from_utf8(s.poll_transmit().unwrap()).unwrap();
    assert_eq!(out, "500 5.5.2 Command unrecognized\r\n421 4.7.0 localhost Too many errors, closing connection\r\n");
    assert_eq!(s.poll_delay(), Some(Duration::from_secs(1)));
    assert!(s.is_closed() && !s.is_delayed());
    // A good command after the delay is not delayed.
    let mut s = S::with(Config { max_errors: 4, ..Config::default() });
    s.send(b"EHLO c\r\nX\r\nX\r\nX\r\nNOOP\r\n");
    assert_eq!(s.delays, vec![DEFAULT_ERROR_DELAY], "only the third error (past half of 4) waits");
}

/// The shell's route for each accepted recipient stays with the transaction, and goes with it.
#[test]
fn routes_of_accepted_recipients_are_kept_with_the_transaction() {
    let now = Instant::now();
    let mut s: Session<u32> = Session::with_routes(Arc::new(Config::default()), now);
    let answer = |s: &mut Session<u32>, input: &[u8]| {
        s.handle_input(input, now);
        while let Some(e) = s.poll_event() {
            match e {
                Event::Mail { .. } => s.answer(Decision::Accept),
                Event::Rcpt { to: ForwardPath::Mailbox(a), .. } if a.local() == "nobody" => {
                    s.answer(Decision::Reply(Reply::new(550, Enhanced(5, 1, 1), "No such user")))
                }
                Event::Rcpt { to, .. } => s.answer(Decision::AcceptRcpt(to.to_string().len() as u32)),
                _ => {}
            }
        }
        String::from_utf8(s.poll_transmit().unwrap_or_default()).unwrap()
    };
    answer(&mut s, b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nRCPT TO:<nobody@y>\r\nRCPT TO:<Postmaster>\r\n");
    let tx = s.transaction().unwrap();
    assert_eq!(tx.routes(), &[5, 12]);
    let pairs: Vec<_> = tx.recipients().map(|(to, r)| (to.to_string(), *r)).collect();
    assert_eq!(pairs, vec![("<x@y>".to_string(), 5), ("<postmaster>".to_string(), 12)]);
    // RSET ends the transaction, and its routes with it; a new MAIL starts with none.
    answer(&mut s, b"RSET\r\nMAIL FROM:<a@b>\r\n");
    assert!(s.transaction().unwrap().routes().is_empty());
    answer(&mut s, b"RCPT TO:<z@y>\r\n");
    assert_eq!(s.transaction().unwrap().routes(), &[5]);
    // An acceptance without a route is the shell's bug: refused for now, never accepted unrouted.
    s.handle_input(b"RCPT TO:<w@y>\r\n", now);
    assert!(matches!(s.poll_event(), Some(Event::Rcpt { .. })));
    s.answer(Decision::Accept);
    let r = String::from_utf8(s.poll_transmit().unwrap()).unwrap();
    assert_eq!(r, "451 4.3.0 Recipient not routed, try again later\r\n");
    assert_eq!(s.transaction().unwrap().routes(), &[5]);
}

/// A line longer than the SASL response limit in the middle of an AUTH exchange is refused with 500 and
/// ends the exchange: the next line is a command again, not a response.
#[test]
fn overlong_line_in_auth_exchange_ends_it() {
    let now = Instant::now();
    let long = format!("{}\r\n", "A".repeat(13_000));
    // Whole, and split so that the limit is crossed before the CRLF arrives.
    for split in [long.len(), 12_300] {
        let mut s = authed_session(now);
        s.handle_input(b"AUTH LOGIN\r\n", now);
        assert_eq!(s.poll_transmit().unwrap(), b"334 VXNlcm5hbWU6\r\n");
        s.handle_input(&long.as_bytes()[..split], now);
        s.handle_input(&long.as_bytes()[split..], now);
        assert_eq!(s.poll_transmit().unwrap(), b"500 5.5.2 Line too long\r\n", "split at {split}");
        s.handle_input(b"NOOP\r\n", now);
        assert_eq!(s.poll_transmit().unwrap(), b"250 2.0.0 OK\r\n", "split at {split}");
        assert!(s.poll_event().is_none());
    }
}

#[test]
fn dsn_parameters_reach_the_shell_and_stay_with_the_transaction() {
    let mut s = S::greeted();
    s.cmd("MAIL FROM:<a@b.test> RET=HDRS ENVID=QQ+2B314", "250 2.1.0");
    let tx = s.s.transaction().unwrap();
    assert_eq!((tx.params.ret, tx.params.envid.as_deref()), (Some(Ret::Hdrs), Some("QQ+314")));
    s.cmd("RCPT TO:<alice@mx.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;Alice+40old.test", "250 2.1.5");
    s.cmd("RCPT TO:<bob@mx.test> NOTIFY=never", "250 2.1.5");
    s.cmd("RCPT TO:<nobody@mx.test> NOTIFY=FAILURE", "550");
    s.cmd("RCPT TO:<postmaster>", "250 2.1.5");
    let want = [
        RcptParams {
            notify: Some(Notify { success: true, failure: false, delay: true }),
            orcpt: Some(Orcpt { addr_type: AddrType::Rfc822, address: "Alice@old.test".into() }),
        },
        RcptParams { notify: Some(Notify::NEVER), orcpt: None },
        RcptParams::default(),
    ];
    assert_eq!(s.s.transaction().unwrap().rcpt_params(), &want[..]);
}

#[test]
fn dsn_events_carry_the_rcpt_params() {
    let now = Instant::now();
    let mut s = Session::new(Arc::new(Config::default()), now);
    s.handle_input(b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@y> ORCPT=utf-8;j\\x{F6}ran@y\r\n", now);
    assert!(matches!(s.poll_event(), Some(Event::Mail { .. })));
    s.answer(Decision::Accept);
    let Some(Event::Rcpt { params, .. }) = s.poll_event() else { panic!("no RCPT event") };
    assert_eq!(params.orcpt, Some(Orcpt { addr_type: AddrType::Utf8, address: "jöran@y".into() }));
    assert_eq!(params.notify, None);
}

#[test]
fn dsn_parameters_refused_when_not_offered() {
    let mut s = S::with(Config { hostname: "mx.test".into(), dsn: false, ..Config::default() });
    let r = s.cmd("EHLO c", "250-mx.test");
    assert!(!r.contains("DSN"), "{r}");
    s.cmd("MAIL FROM:<a@b> RET=FULL", "555 5.5.4");
    s.cmd("MAIL FROM:<a@b> ENVID=x", "555 5.5.4");
    s.cmd("MAIL FROM:<a@b>", "250");
    s.cmd("RCPT TO:<alice@x> NOTIFY=NEVER", "555 5.5.4");
    s.cmd("RCPT TO:<alice@x> ORCPT=rfc822;a@b", "555 5.5.4");
    s.cmd("RCPT TO:<alice@x>", "250");
}

#[test]
fn malformed_and_duplicate_dsn_parameters() {
    let mut s = S::greeted();
    for (line, want) in [
        ("MAIL FROM:<a@b> RET=ALL", "555 5.5.4"),
        ("MAIL FROM:<a@b> RET", "555 5.5.4"),
        ("MAIL FROM:<a@b> RET=FULL RET=HDRS", "501 5.5.4"),
        ("MAIL FROM:<a@b> ENVID=a+0Db", "555 5.5.4"),
        ("MAIL FROM:<a@b> ENVID=a ENVID=b", "501 5.5.4"),
    ] {
        s.cmd(line, want);
    }
    let long_envid = format!("MAIL FROM:<a@b> ENVID={}", "x".repeat(101));
    s.cmd(&long_envid, "555 5.5.4");
    s.cmd(&format!("MAIL FROM:<a@b> ENVID={}", "x".repeat(100)), "250");
    for (line, want) in [
        ("RCPT TO:<alice@x> NOTIFY=NEVER,FAILURE", "555 5.5.4"),
        ("RCPT TO:<alice@x> NOTIFY=SUCCESS,SUCCESS", "555 5.5.4"),
        ("RCPT TO:<alice@x> NOTIFY=", "555 5.5.4"),
        ("RCPT TO:<alice@x> NOTIFY=FAILURE,", "555 5.5.4"),
        ("RCPT TO:<alice@x> NOTIFY=NEVER NOTIFY=NEVER", "501 5.5.4"),
        ("RCPT TO:<alice@x> ORCPT=alice@x", "555 5.5.4"),
        ("RCPT TO:<alice@x> ORCPT=rfc822;", "555 5.5.4"),
        ("RCPT TO:<alice@x> ORCPT=rfc822;a+0Ab", "555 5.5.4"),
        ("RCPT TO:<alice@x> ORCPT=utf-8;a\\x{0A}b", "555 5.5.4"),
        ("RCPT TO:<alice@x> ORCPT=rfc822;a ORCPT=rfc822;a", "501 5.5.4"),
    ] {
        s.cmd(line, want);
    }
    // A full-length ORCPT fits the RCPT line allowance of RFC 3461 §5 (512 + 515).
    let orcpt = format!("rfc822;{}@x", "o".repeat(491));
    assert_eq!(orcpt.len(), 500);
    s.cmd(&format!("RCPT TO:<alice@x> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT={orcpt}"), "250 2.1.5");
    s.cmd(&format!("RCPT TO:<alice@x> ORCPT={orcpt}o"), "555 5.5.4");
}

#[test]
fn helo_clients_may_not_use_dsn_parameters() {
    let mut s = S::new();
    s.cmd("HELO c", "250 mx.test");
    s.cmd("MAIL FROM:<a@b> RET=FULL", "555 5.5.4");
    s.cmd("MAIL FROM:<a@b>", "250");
    s.cmd("RCPT TO:<alice@x> NOTIFY=NEVER", "555 5.5.4");
    s.cmd("RCPT TO:<alice@x>", "250");
}
