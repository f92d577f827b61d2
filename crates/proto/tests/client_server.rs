//! The client session against the server session, in memory: no sockets, a small shell on each side, and
//! a transport that moves the bytes between them. A whole dialogue (EHLO, AUTH PLAIN or LOGIN, a pipelined
//! transaction with DSN parameters (RFC 3461) and one recipient refused by the server's shell, DATA, QUIT)
//! must come out the same however the bytes are cut: each stream split at every byte position, and both fed
//! in random chunk sizes.
//! (The client does not send BDAT, so CHUNKING is offered but not used here.)

use std::sync::Arc;
use std::time::Instant;

use mailroom_proto::client::{self, Envelope, Mechanism, MessageInfo, Outcome, Secret, Step};
use mailroom_proto::params::{AddrType, Notify, Orcpt, RcptParams, Ret};
use mailroom_proto::server::{self, Config, Decision};
use mailroom_proto::{Address, Enhanced, ForwardPath, Reply, ReversePath};

const MESSAGE: &[u8] =
    "Subject: in memory\r\n\r\n.a line that starts with a dot\r\n..and two\r\nGrüße\r\n.\r\nend\r\n".as_bytes();

/// What the server's shell received, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stored {
    from: String,
    /// The routes the shell gave at RCPT, as the session kept them.
    routes: Vec<String>,
    /// RET and ENVID of MAIL, and the RCPT parameters of each accepted recipient (RFC 3461).
    ret: Option<Ret>,
    envid: Option<String>,
    rcpt_params: Vec<RcptParams>,
    body: Vec<u8>,
}

/// Everything both sides saw; two runs with different cuts must produce equal records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Record {
    /// The client's replies, as (step, code, enhanced code).
    replies: Vec<(Step, u16, Option<Enhanced>)>,
    authenticated: Option<Mechanism>,
    outcomes: Vec<Outcome>,
    client_closed: bool,
    client_error: Option<String>,
    /// (mechanism, user) of each AUTH the server's shell checked.
    server_auth: Vec<(Mechanism, String)>,
    stored: Vec<Stored>,
    server_closed: bool,
}

/// How the transport cuts a stream into the pieces it delivers.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// Everything available at once.
    Whole,
    /// Whole, but with a piece boundary at this stream offset.
    At(usize),
    /// Random pieces of 1..=max octets (xorshift, seeded).
    Random { seed: u64, max: usize },
}

/// One direction of the transport: bytes written but not yet delivered, and how many were delivered.
struct Pipe {
    queue: Vec<u8>,
    delivered: usize,
    cut: Cut,
    rng: u64,
    /// Every write, for the baseline's checks.
    writes: Vec<Vec<u8>>,
}

impl Pipe {
    fn new(cut: Cut) -> Pipe {
        let rng = match cut {
            Cut::Random { seed, .. } => seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            _ => 1,
        };
        Pipe { queue: Vec::new(), delivered: 0, cut, rng, writes: Vec::new() }
    }

    fn write(&mut self, bytes: &[u8]) {
        self.queue.extend_from_slice(bytes);
        self.writes.push(bytes.to_vec());
    }

    /// The next piece to deliver, if any.
    fn piece(&mut self) -> Option<Vec<u8>> {
        if self.queue.is_empty() {
            return None;
        }
        let n = self.queue.len();
        let take = match self.cut {
            Cut::Whole => n,
            Cut::At(at) if self.delivered < at && at < self.delivered + n => at - self.delivered,
            Cut::At(_) => n,
            Cut::Random { max, .. } => {
                self.rng ^= self.rng >> 12;
                self.rng ^= self.rng << 25;
                self.rng ^= self.rng >> 27;
                let r = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
                n.min(1 + (r % max as u64) as usize)
            }
        };
        self.delivered += take;
        Some(self.queue.drain(..take).collect())
    }
}

/// Which AUTH the client uses.
#[derive(Debug, Clone, Copy)]
enum Login {
    /// `Session::auth`: PLAIN, the server offers it first.
    Chosen,
    Login,
}

fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}

/// bob asks for every DSN and gives his original address; jöran's ORCPT is UTF-8 (RFC 6533).
fn bob_params() -> RcptParams {
    RcptParams {
        notify: Some(Notify { success: true, failure: true, delay: true }),
        orcpt: Some(Orcpt { addr_type: AddrType::Rfc822, address: "Bob+x@old.test".into() }),
    }
}

fn joeran_params() -> RcptParams {
    RcptParams {
        notify: Some(Notify::NEVER),
        orcpt: Some(Orcpt { addr_type: AddrType::Utf8, address: "jöran@old.test".into() }),
    }
}

fn envelope() -> Envelope {
    Envelope::new(
        ReversePath::Mailbox(addr("alice@mx.test")),
        vec![
            ForwardPath::Mailbox(addr("bob@mx.test")),
            ForwardPath::Mailbox(addr("nobody@mx.test")),
            ForwardPath::Mailbox(addr("jöran@mx.test")),
            ForwardPath::Postmaster,
        ],
    )
    .with_dsn(Some(Ret::Full), Some("q 1".into()))
    .with_rcpt_params(vec![bob_params(), RcptParams::default(), joeran_params()])
}

/// The server's shell: routes every recipient but `nobody` (to its local part), takes the password
/// "secret" for alice, keeps the bodies.
fn serve(s: &mut server::Session<String>, rec: &mut Record, body: &mut Vec<u8>) {
    while let Some(e) = s.poll_event() {
        match e {
            server::Event::Mail { .. } | server::Event::DataStart => s.answer(Decision::Accept),
            server::Event::Rcpt { to, .. } => {
                let local = match &to {
                    ForwardPath::Postmaster => "postmaster".to_string(),
                    ForwardPath::Mailbox(a) => a.local().to_string(),
                };
                s.answer(if local == "nobody" {
                    Decision::Reply(Reply::new(550, Enhanced(5, 1, 1), "No such user"))
                } else {
                    Decision::AcceptRcpt(local)
                });
            }
            server::Event::Data(d) => body.extend_from_slice(&d),
            server::Event::DataEnd => {
                let tx = s.transaction().expect("a transaction at the end of data");
                rec.stored.push(Stored {
                    from: tx.from.to_string(),
                    routes: tx.routes().to_vec(),
                    ret: tx.params.ret,
                    envid: tx.params.envid.clone(),
                    rcpt_params: tx.rcpt_params().to_vec(),
                    body: std::mem::take(body),
                });
                s.answer(Decision::Accept);
            }
            server::Event::Auth(c) => {
                rec.server_auth.push((c.mechanism, c.username.clone()));
                let ok = c.username == "alice@mx.test" && c.password.expose() == "secret";
                s.answer(if ok {
                    Decision::Accept
                } else {
                    Decision::Reply(Reply::new(535, Enhanced(5, 7, 8), "Authentication credentials invalid"))
                });
            }
            server::Event::Close => rec.server_closed = true,
            server::Event::DataAborted(r) => panic!("message aborted: {r:?}"),
            server::Event::StartTls => panic!("STARTTLS was not asked for"),
        }
    }
}

/// The client's script: AUTH once ready, then the transaction, then QUIT.
fn script(c: &mut client::Session, rec: &mut Record, login: Login) -> Result<(), client::Error> {
    while let Some(e) = c.poll_event() {
        match e {
            client::Event::Ready => {
                let password = Secret::new("secret".into());
                match login {
                    Login::Chosen => c.auth("alice@mx.test", &password)?,
                    Login::Login => c.auth_with(Some(Mechanism::Login), "alice@mx.test", &password)?,
                };
            }
            client::Event::Authenticated(m) => {
                rec.authenticated = Some(m);
                c.begin_mail(&envelope(), &MessageInfo::scan(MESSAGE))?;
            }
            client::Event::SendBody => {
                c.handle_body(MESSAGE)?;
                c.finish_body()?;
            }
            client::Event::Done(outcome) => {
                rec.outcomes.push(outcome);
                c.quit()?;
            }
            client::Event::Reply { step, reply } => rec.replies.push((step, reply.code, reply.enhanced)),
            client::Event::Closed => rec.client_closed = true,
            client::Event::Sent(_) => {}
            client::Event::StartTls => panic!("STARTTLS was not asked for"),
        }
    }
    Ok(())
}

/// Runs one dialogue with the given cuts; returns the record and the writes of each side.
fn run(login: Login, c2s: Cut, s2c: Cut) -> (Record, Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let now = Instant::now();
    let config = Config { hostname: "mx.test".into(), auth: true, allow_plaintext_auth: true, ..Config::default() };
    let mut s: server::Session<String> = server::Session::with_routes(Arc::new(config), now);
    let mut c = client::Session::new("client.test");
    let (mut up, mut down) = (Pipe::new(c2s), Pipe::new(s2c));
    let mut rec = Record::default();
    let mut body = Vec::new();
    for _ in 0..100_000 {
        serve(&mut s, &mut rec, &mut body);
        while s.poll_delay().is_some() {
            s.handle_delay_elapsed(now);
            serve(&mut s, &mut rec, &mut body);
        }
        if let Some(b) = s.poll_transmit() {
            down.write(&b);
        }
        if let Err(e) = script(&mut c, &mut rec, login) {
            rec.client_error = Some(e.to_string());
        }
        if let Some(b) = c.poll_transmit() {
            up.write(&b);
        }
        let (to_server, to_client) = (up.piece(), down.piece());
        if to_server.is_none() && to_client.is_none() {
            break;
        }
        if let Some(p) = to_server {
            s.handle_input(&p, now);
        }
        if let Some(p) = to_client {
            if let Err(e) = c.handle_input(&p) {
                rec.client_error = Some(e.to_string());
            }
        }
    }
    (rec, up.writes, down.writes)
}

/// A recipient's result: the code after the data, or the refusal's code and enhanced code.
type RcptResult = Result<u16, (u16, Option<Enhanced>)>;

/// The baseline, checked for what it means: who got the message, what the server stored, how it went.
fn baseline(login: Login, mechanism: Mechanism) -> (Record, Vec<u8>, Vec<u8>) {
    let (rec, up, down) = run(login, Cut::Whole, Cut::Whole);
    assert_eq!(rec.client_error, None);
    assert_eq!(rec.authenticated, Some(mechanism));
    assert_eq!(rec.server_auth, vec![(mechanism, "alice@mx.test".to_string())]);
    let [outcome] = &rec.outcomes[..] else { panic!("one transaction: {:?}", rec.outcomes) };
    assert_eq!((outcome.mail.code, outcome.mail.enhanced), (250, Some(Enhanced(2, 1, 0))));
    let results: Vec<(String, RcptResult)> = outcome
        .recipients
        .iter()
        .map(|r| (r.recipient.to_string(), r.result.as_ref().map(|m| m.code).map_err(|e| (e.code, e.enhanced))))
        .collect();
    assert_eq!(
        results,
        vec![
            ("<bob@mx.test>".to_string(), Ok(250)),
            ("<nobody@mx.test>".to_string(), Err((550, Some(Enhanced(5, 1, 1))))),
            ("<jöran@mx.test>".to_string(), Ok(250)),
            ("<postmaster>".to_string(), Ok(250)),
        ]
    );
    assert_eq!(outcome.message.as_ref().map(|m| (m.code, m.enhanced)), Some((250, Some(Enhanced(2, 0, 0)))));
    assert!(!outcome.dsn_dropped, "the server offers DSN");
    assert_eq!(
        rec.stored,
        vec![Stored {
            from: "<alice@mx.test>".into(),
            routes: vec!["bob".into(), "jöran".into(), "postmaster".into()],
            ret: Some(Ret::Full),
            envid: Some("q 1".into()),
            rcpt_params: vec![bob_params(), joeran_params(), RcptParams::default()],
            body: MESSAGE.to_vec(),
        }]
    );
    assert!(rec.client_closed && rec.server_closed, "QUIT closed both sides");
    let last = rec.replies.last().copied();
    assert_eq!(last, Some((Step::Quit, 221, Some(Enhanced(2, 0, 0)))));
    // Pipelined (RFC 2920): MAIL, every RCPT and DATA leave in one write.
    let group = format!(
        "MAIL FROM:<alice@mx.test> SIZE={} BODY=8BITMIME SMTPUTF8 RET=FULL ENVID=q+201\r\n\
         RCPT TO:<bob@mx.test> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=rfc822;Bob+2Bx@old.test\r\n\
         RCPT TO:<nobody@mx.test>\r\n\
         RCPT TO:<jöran@mx.test> NOTIFY=NEVER ORCPT=utf-8;j\\x{{F6}}ran@old.test\r\n\
         RCPT TO:<postmaster>\r\nDATA\r\n",
        MESSAGE.len()
    );
    assert!(up.iter().any(|w| w == group.as_bytes()), "no write is the whole group: {up:?}");
    (rec, up.concat(), down.concat())
}

fn check_every_cut(login: Login, mechanism: Mechanism) {
    let (want, up, down) = baseline(login, mechanism);
    for at in 0..=up.len() {
        let (got, ..) = run(login, Cut::At(at), Cut::Whole);
        assert_eq!(got, want, "client bytes cut at {at}");
    }
    for at in 0..=down.len() {
        let (got, ..) = run(login, Cut::Whole, Cut::At(at));
        assert_eq!(got, want, "server bytes cut at {at}");
    }
    for seed in 0..300u64 {
        let max = [1, 2, 3, 7, 64][seed as usize % 5];
        let (got, ..) = run(login, Cut::Random { seed, max }, Cut::Random { seed: seed ^ 0xFFFF, max });
        assert_eq!(got, want, "random pieces, seed {seed}, up to {max} octets");
    }
}

#[test]
fn auth_plain_and_a_pipelined_transaction_at_every_cut() {
    check_every_cut(Login::Chosen, Mechanism::Plain);
}

#[test]
fn auth_login_and_a_pipelined_transaction_at_every_cut() {
    check_every_cut(Login::Login, Mechanism::Login);
}
