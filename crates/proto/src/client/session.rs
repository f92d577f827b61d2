//! The client session: commands out, replies in, matched in order (RFC 5321 §4.3.2, RFC 2920 §3.1).
//!
//! Commands wait in `queue` until they may leave: at once when nothing is awaiting a reply, or, when the
//! server offers PIPELINING, after other MAIL / RCPT / RSET commands. RFC 2920 §3.1 lets EHLO, DATA, QUIT
//! and the like only end a group, so once one of those has left, nothing follows until the replies are in.
//! Released commands go to `outbound` and to `pending`; a reply is only accepted for a command the caller
//! has actually taken from [`Session::poll_transmit`], so a server that answers what it was never sent is
//! caught at once.

use std::collections::VecDeque;
use std::fmt;

use super::auth::{self, Exchange};
use super::capabilities::Capabilities;
use super::data::DataEncoder;
use super::envelope::{Envelope, MessageInfo};
use super::error::Error;
use super::reply::{ReplyParser, MAX_REPLY_LINE};
use super::step::Step;
use crate::address::{ForwardPath, ReversePath};
use crate::command::Command;
use crate::extension::keyword;
use crate::params::{Body, MailParams, RcptParams};
use crate::reply::Reply;
use crate::sasl::{Mechanism, Secret};

/// What the caller should know or do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A command line left (without its CRLF), for transcripts. SASL responses and AUTH's initial response
    /// are shown as [`super::auth::HIDDEN`]: the secret never appears here.
    Sent(String),
    /// A reply arrived, and which command it answers.
    Reply { step: Step, reply: Reply },
    /// The greeting and EHLO (or HELO) are done: [`Session::capabilities`] holds what the server offers.
    Ready,
    /// The server said go ahead to STARTTLS: upgrade the stream, then call
    /// [`Session::handle_tls_established`].
    StartTls,
    /// AUTH was answered 235 (RFC 4954 §6). A refusal comes as [`Event::Reply`] with `Step::Auth` and a
    /// 4xx/5xx code; the session stays usable (for QUIT, or another try).
    Authenticated(Mechanism),
    /// DATA was answered 354: give the message to [`Session::handle_body`], then [`Session::finish_body`].
    SendBody,
    /// A transaction started with [`Session::begin_mail`] has ended.
    Done(Outcome),
    /// QUIT was answered; close the connection.
    Closed,
}

/// What one recipient got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientOutcome {
    pub recipient: ForwardPath,
    /// `Ok` with the reply after the data when the message was accepted for this recipient; `Err` with
    /// the reply that refused it (to MAIL, to its RCPT, to DATA or to the end of data).
    pub result: Result<Reply, Reply>,
}

/// The end of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The reply to MAIL FROM.
    pub mail: Reply,
    /// One entry per recipient of the envelope, in order.
    pub recipients: Vec<RecipientOutcome>,
    /// The reply after the data, when the message was sent.
    pub message: Option<Reply>,
    /// The envelope carried DSN parameters (RFC 3461) but the server does not offer DSN, so they were not
    /// sent: the caller now owes the sender what was asked for (RFC 3461 §4.1: a "relayed" DSN for
    /// NOTIFY=SUCCESS).
    pub dsn_dropped: bool,
}

impl Outcome {
    pub fn accepted(&self) -> impl Iterator<Item = &RecipientOutcome> {
        self.recipients.iter().filter(|r| r.result.is_ok())
    }
    pub fn refused(&self) -> impl Iterator<Item = &RecipientOutcome> {
        self.recipients.iter().filter(|r| r.result.is_err())
    }
    /// True when every recipient has the message.
    pub fn is_complete(&self) -> bool {
        self.recipients.iter().all(|r| r.result.is_ok())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Greeting and EHLO/HELO (again after STARTTLS).
    Handshake,
    /// STARTTLS answered 220: the caller is upgrading the stream.
    Tls,
    /// Between transactions, or in a step-by-step one.
    Ready,
    /// After 354: the message is being handed in.
    Body,
    /// QUIT has been queued.
    Quitting,
    Closed,
    Failed,
}

#[derive(Debug)]
struct Pending {
    step: Step,
    /// The caller has taken its bytes from `poll_transmit`.
    sent: bool,
    /// Belongs to the transaction of `begin_mail` (rather than a step-by-step command).
    in_txn: bool,
}

#[derive(Debug)]
struct Txn {
    pipelined: bool,
    mail: Option<Reply>,
    rcpts: Vec<(ForwardPath, Option<Reply>)>,
    /// The RCPT parameters that go on the wire (empty ones when the server does not offer DSN).
    rcpt_params: Vec<RcptParams>,
    dsn_dropped: bool,
    answered: usize,
    data: Option<Reply>,
    message: Option<Reply>,
}

/// A command waiting to leave. `line` may carry a secret (AUTH); `shown` is what transcripts and `Debug` see.
struct Queued {
    step: Step,
    line: Secret,
    shown: String,
    in_txn: bool,
}

impl fmt::Debug for Queued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queued").field("step", &self.step).field("line", &self.shown).finish()
    }
}

/// One SMTP client connection, from greeting to QUIT. See the module documentation.
pub struct Session {
    helo_name: String,
    state: State,
    caps: Capabilities,
    parser: ReplyParser,
    input: Vec<u8>,
    queue: VecDeque<Queued>,
    pending: VecDeque<Pending>,
    outbound: Vec<u8>,
    events: VecDeque<Event>,
    txn: Option<Txn>,
    encoder: DataEncoder,
    error: Option<Error>,
    /// Input bytes after the reply being handled (STARTTLS must be the last thing the server said).
    unconsumed: usize,
    /// The AUTH exchange in progress.
    auth: Option<Exchange>,
    authenticated: Option<Mechanism>,
    /// The stream is TLS (after STARTTLS, or from the start).
    tls: bool,
}

/// Hand-written so that nothing that may hold a secret (queued AUTH lines, the bytes not yet taken) is
/// printed: only steps, states and sizes.
impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("helo_name", &self.helo_name)
            .field("state", &self.state)
            .field("caps", &self.caps)
            .field("queue", &self.queue)
            .field("pending", &self.pending)
            .field("outbound_len", &self.outbound.len())
            .field("input_len", &self.input.len())
            .field("txn", &self.txn)
            .field("error", &self.error)
            .field("auth", &self.auth)
            .field("authenticated", &self.authenticated)
            .field("tls", &self.tls)
            .finish()
    }
}

impl Session {
    /// A session that waits for the greeting, then introduces itself as `helo_name` (RFC 5321 §4.1.1.1:
    /// the client's fully qualified domain name, or an address literal).
    pub fn new(helo_name: impl Into<String>) -> Session {
        let mut pending = VecDeque::new();
        pending.push_back(Pending { step: Step::Greeting, sent: true, in_txn: false });
        Session {
            helo_name: helo_name.into(),
            state: State::Handshake,
            caps: Capabilities::default(),
            parser: ReplyParser::new(),
            input: Vec::new(),
            queue: VecDeque::new(),
            pending,
            outbound: Vec::new(),
            events: VecDeque::new(),
            txn: None,
            encoder: DataEncoder::new(),
            error: None,
            unconsumed: 0,
            auth: None,
            authenticated: None,
            tls: false,
        }
    }

    /// Marks the stream as TLS from the first byte (RFC 8314 implicit TLS): STARTTLS is then refused.
    pub fn implicit_tls(mut self) -> Session {
        self.tls = true;
        self
    }

    /// True once the stream is TLS (implicit, or STARTTLS done).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The mechanism that succeeded, once AUTH was answered 235.
    pub fn authenticated(&self) -> Option<Mechanism> {
        self.authenticated
    }

    /// What the server offered in its EHLO reply (empty after HELO or before [`Event::Ready`]).
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// True between transactions: a new one (or a step-by-step command) may start.
    pub fn is_ready(&self) -> bool {
        self.state == State::Ready && self.txn.is_none()
    }

    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The step whose reply is awaited next, if any (for timeouts and messages in the shell).
    pub fn awaiting(&self) -> Option<Step> {
        self.pending.front().filter(|p| p.sent).map(|p| p.step)
    }

    /// Bytes read from the server.
    pub fn handle_input(&mut self, bytes: &[u8]) -> Result<(), Error> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if self.state == State::Closed {
            return Ok(());
        }
        self.input.extend_from_slice(bytes);
        let r = self.process_input();
        if let Err(e) = &r {
            self.fail(e.clone());
        }
        r
    }

    /// The bytes to write next, all that may leave now in one piece (so a pipelined group is one write).
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if self.outbound.is_empty() {
            return None;
        }
        for p in self.pending.iter_mut() {
            p.sent = true;
        }
        Some(std::mem::take(&mut self.outbound))
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Starts a whole transaction: MAIL with the parameters the message needs, every RCPT, then DATA if any
    /// recipient was accepted (all in one group under PIPELINING). Ends in [`Event::SendBody`] and then
    /// [`Event::Done`], or straight in [`Event::Done`] when nobody can get the message.
    pub fn begin_mail(&mut self, envelope: &Envelope, info: &MessageInfo) -> Result<(), Error> {
        self.check_ready()?;
        if envelope.to.is_empty() {
            return Err(Error::NotReady("a transaction needs at least one recipient"));
        }
        let params = self.mail_params(envelope, info)?;
        let pipelined = self.caps.pipelining;
        let dsn = self.caps.dsn;
        let rcpt_params: Vec<RcptParams> =
            (0..envelope.to.len()).map(|i| if dsn { envelope.rcpt_params(i) } else { RcptParams::default() }).collect();
        self.txn = Some(Txn {
            pipelined,
            mail: None,
            rcpts: envelope.to.iter().map(|t| (t.clone(), None)).collect(),
            rcpt_params: rcpt_params.clone(),
            dsn_dropped: !dsn && envelope.has_dsn(),
            answered: 0,
            data: None,
            message: None,
        });
        self.enqueue(Step::Mail, Command::Mail { from: envelope.from.clone(), params }, true);
        if pipelined {
            for (to, params) in envelope.to.iter().zip(rcpt_params) {
                self.enqueue(Step::Rcpt, Command::Rcpt { to: to.clone(), params }, true);
            }
            self.enqueue(Step::Data, Command::Data, true);
        }
        Ok(())
    }

    /// The MAIL FROM parameters this message needs from this server, or why the server cannot take it.
    /// RET and ENVID are included only when the server offers DSN.
    pub fn mail_params(&self, envelope: &Envelope, info: &MessageInfo) -> Result<MailParams, Error> {
        let caps = &self.caps;
        let mut params = MailParams::default();
        if let (Some(offered), Some(size)) = (caps.size, info.size) {
            if offered > 0 && size > offered {
                return Err(Error::TooBig { size, limit: offered });
            }
            params.size = Some(size);
        }
        let mut smtputf8 = false;
        if envelope.needs_smtputf8() {
            if !caps.smtputf8 {
                return Err(Error::MissingExtension {
                    extension: keyword::SMTPUTF8,
                    reason: "an address is not ASCII",
                });
            }
            smtputf8 = true;
        }
        if info.utf8_headers {
            // RFC 6532 headers want SMTPUTF8; a server without it but with 8BITMIME still carries the octets.
            if caps.smtputf8 {
                smtputf8 = true;
            } else if !caps.eight_bit_mime {
                return Err(Error::MissingExtension {
                    extension: keyword::SMTPUTF8,
                    reason: "the header is not ASCII",
                });
            }
        }
        match info.eight_bit {
            Some(true) if !caps.eight_bit_mime => {
                return Err(Error::MissingExtension {
                    extension: keyword::EIGHT_BIT_MIME,
                    reason: "the message has 8-bit octets",
                })
            }
            Some(true) | None if caps.eight_bit_mime => params.body = Some(Body::EightBitMime),
            _ if info.utf8_headers && caps.eight_bit_mime => params.body = Some(Body::EightBitMime),
            _ => {}
        }
        params.smtputf8 = smtputf8;
        if caps.dsn {
            params.ret = envelope.ret;
            params.envid = envelope.envid.clone();
        }
        Ok(params)
    }

    /// Step by step: `MAIL FROM:<from> params`. The reply comes as [`Event::Reply`].
    pub fn mail(&mut self, from: &ReversePath, params: &MailParams) -> Result<(), Error> {
        self.check_ready()?;
        self.enqueue(Step::Mail, Command::Mail { from: from.clone(), params: params.clone() }, false);
        Ok(())
    }

    /// Step by step: `RCPT TO:<to>`.
    pub fn rcpt(&mut self, to: &ForwardPath) -> Result<(), Error> {
        self.rcpt_with(to, &RcptParams::default())
    }

    /// Step by step: `RCPT TO:<to> params`, sent as given (the caller checks [`Capabilities::dsn`]).
    pub fn rcpt_with(&mut self, to: &ForwardPath, params: &RcptParams) -> Result<(), Error> {
        self.check_ready()?;
        self.enqueue(Step::Rcpt, Command::Rcpt { to: to.clone(), params: params.clone() }, false);
        Ok(())
    }

    /// Step by step: `DATA`; a 354 brings [`Event::SendBody`].
    pub fn data(&mut self) -> Result<(), Error> {
        self.check_ready()?;
        self.enqueue(Step::Data, Command::Data, false);
        Ok(())
    }

    /// Step by step: `RSET`.
    pub fn rset(&mut self) -> Result<(), Error> {
        self.check_ready()?;
        self.enqueue(Step::Rset, Command::Rset, false);
        Ok(())
    }

    /// `NOOP`.
    pub fn noop(&mut self) -> Result<(), Error> {
        self.check_ready()?;
        self.enqueue(Step::Noop, Command::Noop, false);
        Ok(())
    }

    /// `STARTTLS` (RFC 3207); a 220 brings [`Event::StartTls`].
    pub fn starttls(&mut self) -> Result<(), Error> {
        self.check_ready()?;
        if self.tls {
            // RFC 3207 §4.2: no second STARTTLS on a TLS stream.
            return Err(Error::NotReady("the connection is already TLS"));
        }
        if !self.caps.starttls {
            return Err(Error::MissingExtension { extension: keyword::STARTTLS, reason: "TLS was asked for" });
        }
        self.enqueue(Step::StartTls, Command::StartTls, false);
        Ok(())
    }

    /// The stream is now TLS: forget what was said in the clear and say EHLO again (RFC 3207 §4.2).
    pub fn handle_tls_established(&mut self) -> Result<(), Error> {
        if self.state != State::Tls {
            return Err(Error::NotReady("no STARTTLS was accepted"));
        }
        self.caps = Capabilities::default();
        self.input.clear();
        self.parser = ReplyParser::new();
        self.tls = true;
        self.state = State::Handshake;
        self.enqueue(Step::Ehlo, Command::Ehlo(self.helo_name.clone()), false);
        Ok(())
    }

    /// `AUTH` (RFC 4954) as `user`, with the mechanism picked from what the server offers: PLAIN, else
    /// LOGIN ([`auth::choose`]). Ends in [`Event::Authenticated`] or in an [`Event::Reply`] for
    /// `Step::Auth` with the refusal (535, 538, 454 ...). Whether the stream is safe enough to send a
    /// password over is the caller's call ([`Session::is_tls`]).
    pub fn auth(&mut self, user: &str, password: &Secret) -> Result<Mechanism, Error> {
        let mechanism = auth::choose(&self.caps.auth)?;
        self.auth_with(mechanism, user, password)
    }

    /// `AUTH` with a given mechanism; `None` tries PLAIN without an initial response (for a server that
    /// offered no AUTH, whose refusal is then reported as it comes).
    pub fn auth_with(
        &mut self,
        mechanism: Option<Mechanism>,
        user: &str,
        password: &Secret,
    ) -> Result<Mechanism, Error> {
        self.check_ready()?;
        if self.authenticated.is_some() {
            // RFC 4954 §4: AUTH is not permitted once authenticated.
            return Err(Error::NotReady("already authenticated"));
        }
        let (line, shown, exchange) = Exchange::start(mechanism, user, password)?;
        let mechanism = exchange.mechanism;
        self.auth = Some(exchange);
        self.enqueue_hidden(Step::Auth, line, shown);
        Ok(mechanism)
    }

    /// `QUIT` (allowed at any point but during the message); [`Event::Closed`] follows its reply.
    pub fn quit(&mut self) -> Result<(), Error> {
        match self.state {
            State::Closed | State::Quitting => return Ok(()),
            State::Body => return Err(Error::NotReady("the message is not finished")),
            State::Failed => return Err(self.error.clone().unwrap_or(Error::NotReady("the session failed"))),
            _ => {}
        }
        self.state = State::Quitting;
        self.enqueue(Step::Quit, Command::Quit, false);
        Ok(())
    }

    /// Part of the message, after [`Event::SendBody`]: line ends made CRLF, leading dots doubled.
    pub fn handle_body(&mut self, chunk: &[u8]) -> Result<(), Error> {
        if self.state != State::Body {
            return Err(Error::NotReady("DATA has not been answered 354"));
        }
        self.encoder.encode(chunk, &mut self.outbound);
        Ok(())
    }

    /// The end of the message: `CRLF . CRLF`.
    pub fn finish_body(&mut self) -> Result<(), Error> {
        if self.state != State::Body {
            return Err(Error::NotReady("DATA has not been answered 354"));
        }
        self.encoder.finish(&mut self.outbound);
        let in_txn = self.txn.is_some();
        self.pending.push_back(Pending { step: Step::EndOfData, sent: false, in_txn });
        self.state = State::Ready;
        Ok(())
    }

    fn check_ready(&self) -> Result<(), Error> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if self.auth.is_some() {
            return Err(Error::NotReady("AUTH is in progress"));
        }
        match self.state {
            State::Ready if self.txn.is_none() => Ok(()),
            State::Ready => Err(Error::NotReady("a transaction is in progress")),
            State::Body => Err(Error::NotReady("the message is being sent")),
            State::Handshake | State::Tls => Err(Error::NotReady("the greeting and EHLO are not done")),
            State::Quitting | State::Closed => Err(Error::NotReady("the session is closing")),
            State::Failed => Err(Error::NotReady("the session failed")),
        }
    }

    fn fail(&mut self, e: Error) {
        self.state = State::Failed;
        self.error = Some(e);
        self.queue.clear();
        self.outbound.clear();
    }

    /// Queues a command; it leaves in its [`Command`] wire form.
    fn enqueue(&mut self, step: Step, cmd: Command, in_txn: bool) {
        let line = cmd.to_string();
        self.queue.push_back(Queued { step, shown: line.clone(), line: Secret::new(line), in_txn });
        self.release();
    }

    /// Queues a line that carries a secret; transcripts get `shown` instead.
    fn enqueue_hidden(&mut self, step: Step, line: Secret, shown: String) {
        self.queue.push_back(Queued { step, line, shown, in_txn: false });
        self.release();
    }

    /// Moves queued commands to `outbound` as far as RFC 2920 §3.1 allows.
    fn release(&mut self) {
        while let Some(Queued { step, .. }) = self.queue.front() {
            let may_go = self.pending.is_empty()
                || (self.caps.pipelining
                    && self.state == State::Ready
                    && !matches!(step, Step::Ehlo | Step::Helo | Step::StartTls | Step::Auth)
                    && self.pending.iter().all(|p| matches!(p.step, Step::Mail | Step::Rcpt | Step::Rset)));
            if !may_go {
                return;
            }
            let Queued { step, line, shown, in_txn } = self.queue.pop_front().expect("front exists");
            self.outbound.extend_from_slice(line.expose().as_bytes());
            self.outbound.extend_from_slice(b"\r\n");
            self.pending.push_back(Pending { step, sent: false, in_txn });
            self.events.push_back(Event::Sent(shown));
        }
    }

    fn process_input(&mut self) -> Result<(), Error> {
        let mut used = 0;
        let result = loop {
            if self.state == State::Closed {
                break Ok(());
            }
            match self.parser.parse(&self.input[used..]) {
                Err(e) => break Err(Error::Malformed(e)),
                Ok((n, None)) => {
                    used += n;
                    break Ok(());
                }
                Ok((n, Some(reply))) => {
                    used += n;
                    self.unconsumed = self.input.len() - used;
                    if let Err(e) = self.handle_reply(reply) {
                        break Err(e);
                    }
                }
            }
        };
        self.input.drain(..used);
        // The parser never leaves more than one partial line behind; this only guards the invariant.
        debug_assert!(result.is_err() || self.input.len() < MAX_REPLY_LINE || self.state == State::Closed);
        result
    }

    fn handle_reply(&mut self, reply: Reply) -> Result<(), Error> {
        let Some(p) = self.pending.front().filter(|p| p.sent) else {
            return Err(Error::Unexpected { step: None, reply });
        };
        let (step, in_txn) = (p.step, p.in_txn);
        self.pending.pop_front();
        self.events.push_back(Event::Reply { step, reply: reply.clone() });
        // RFC 5321 §3.8: 421 to any command means the server is closing the connection.
        if reply.code == 421 && step != Step::Quit {
            return Err(Error::Rejected { step, reply });
        }
        // Only DATA (354) and AUTH (334, RFC 4954 §4) may get a 3xx; anything else is out of step.
        let intermediate = (300..400).contains(&reply.code);
        let bad = match step {
            Step::Data => reply.is_positive() && reply.code != 354,
            Step::Auth => reply.is_positive() && reply.code != 334 && reply.code != 235,
            Step::Quit => false,
            _ => intermediate,
        };
        if bad {
            return Err(Error::Unexpected { step: Some(step), reply });
        }
        if in_txn {
            self.handle_txn_reply(step, reply)?;
        } else {
            self.handle_plain_reply(step, reply)?;
        }
        self.release();
        Ok(())
    }

    fn handle_plain_reply(&mut self, step: Step, reply: Reply) -> Result<(), Error> {
        match step {
            Step::Greeting => {
                if reply.code != 220 {
                    return Err(Error::Rejected { step, reply });
                }
                self.enqueue(Step::Ehlo, Command::Ehlo(self.helo_name.clone()), false);
            }
            Step::Ehlo => {
                if reply.is_positive() {
                    self.caps = Capabilities::from_ehlo(&reply);
                    self.state = State::Ready;
                    self.events.push_back(Event::Ready);
                } else if reply.is_permanent() {
                    // RFC 5321 §3.2: a server that does not know EHLO answers 500/502; try HELO.
                    self.enqueue(Step::Helo, Command::Helo(self.helo_name.clone()), false);
                } else {
                    return Err(Error::Rejected { step, reply });
                }
            }
            Step::Helo => {
                if !reply.is_positive() {
                    return Err(Error::Rejected { step, reply });
                }
                self.caps = Capabilities {
                    server_name: reply.lines.first().map(|l| l.to_string()).unwrap_or_default(),
                    ..Capabilities::default()
                };
                self.state = State::Ready;
                self.events.push_back(Event::Ready);
            }
            Step::StartTls => {
                if reply.code != 220 {
                    return Err(Error::Rejected { step, reply });
                }
                // RFC 3207 §4: nothing may follow STARTTLS in the clear; bytes after it would be injected.
                if !self.input_is_drained() {
                    return Err(Error::Unexpected { step: Some(step), reply });
                }
                self.state = State::Tls;
                self.events.push_back(Event::StartTls);
            }
            Step::Auth => self.handle_auth_reply(reply)?,
            Step::Data if reply.code == 354 => {
                self.state = State::Body;
                self.events.push_back(Event::SendBody);
            }
            Step::Quit => {
                self.state = State::Closed;
                self.pending.clear();
                self.events.push_back(Event::Closed);
            }
            Step::Mail | Step::Rcpt | Step::Data | Step::EndOfData | Step::Rset | Step::Noop => {}
        }
        Ok(())
    }

    fn handle_auth_reply(&mut self, reply: Reply) -> Result<(), Error> {
        let Some(exchange) = self.auth.as_mut() else {
            return Err(Error::Unexpected { step: Some(Step::Auth), reply });
        };
        match reply.code {
            334 => match exchange.next_response() {
                // The challenge text (RFC 4954 §4: base64) is not needed: PLAIN and LOGIN answer in order.
                Some(resp) => self.enqueue_hidden(Step::Auth, resp, super::auth::HIDDEN.to_string()),
                // A challenge the mechanism has no answer to: the server is not speaking PLAIN or LOGIN.
                None => {
                    self.auth = None;
                    return Err(Error::Unexpected { step: Some(Step::Auth), reply });
                }
            },
            235 => {
                let m = exchange.mechanism;
                self.auth = None;
                self.authenticated = Some(m);
                self.events.push_back(Event::Authenticated(m));
            }
            // A refusal: the Event::Reply already carries it; the session goes on.
            _ => self.auth = None,
        }
        Ok(())
    }

    /// True when no byte beyond the reply being handled has arrived (used to refuse data after STARTTLS).
    fn input_is_drained(&self) -> bool {
        !self.parser.is_mid_reply() && self.unconsumed == 0
    }

    fn handle_txn_reply(&mut self, step: Step, reply: Reply) -> Result<(), Error> {
        let txn = self.txn.as_mut().expect("a transaction reply needs a transaction");
        match step {
            Step::Mail => {
                let ok = reply.is_positive();
                txn.mail = Some(reply);
                if !txn.pipelined {
                    if ok {
                        let rcpts: Vec<Command> = txn
                            .rcpts
                            .iter()
                            .zip(&txn.rcpt_params)
                            .map(|((to, _), params)| Command::Rcpt { to: to.clone(), params: params.clone() })
                            .collect();
                        for c in rcpts {
                            self.enqueue(Step::Rcpt, c, true);
                        }
                    } else {
                        self.finish_txn();
                    }
                }
            }
            Step::Rcpt => {
                if let Some(slot) = txn.rcpts.get_mut(txn.answered) {
                    slot.1 = Some(reply);
                }
                txn.answered += 1;
                if !txn.pipelined && txn.answered == txn.rcpts.len() {
                    let any = txn.rcpts.iter().any(|(_, r)| r.as_ref().is_some_and(Reply::is_positive));
                    if any {
                        self.enqueue(Step::Data, Command::Data, true);
                    } else {
                        // Nobody will take it: no DATA, just forget the transaction.
                        self.enqueue(Step::Rset, Command::Rset, true);
                    }
                }
            }
            Step::Data => {
                if reply.code == 354 {
                    let mail_ok = txn.mail.as_ref().is_some_and(Reply::is_positive);
                    let any = txn.rcpts.iter().any(|(_, r)| r.as_ref().is_some_and(Reply::is_positive));
                    self.state = State::Body;
                    if mail_ok && any {
                        self.events.push_back(Event::SendBody);
                    } else {
                        // RFC 2920 §3.1: DATA went in the group although every RCPT failed, and the
                        // server said 354 anyway: end the (empty) message at once.
                        self.finish_body()?;
                    }
                } else {
                    txn.data = Some(reply);
                    self.finish_txn();
                }
            }
            Step::EndOfData => {
                let any = txn.rcpts.iter().any(|(_, r)| r.as_ref().is_some_and(Reply::is_positive));
                if any && txn.mail.as_ref().is_some_and(Reply::is_positive) {
                    txn.message = Some(reply);
                }
                self.finish_txn();
            }
            Step::Rset => self.finish_txn(),
            _ => return Err(Error::Unexpected { step: Some(step), reply }),
        }
        Ok(())
    }

    fn finish_txn(&mut self) {
        let Some(txn) = self.txn.take() else { return };
        let mail = txn.mail.unwrap_or_else(|| Reply::plain(503, "no reply to MAIL"));
        let recipients = txn
            .rcpts
            .into_iter()
            .map(|(recipient, rcpt)| {
                let result = if !mail.is_positive() {
                    Err(mail.clone())
                } else {
                    match rcpt {
                        None => Err(mail.clone()),
                        Some(r) if !r.is_positive() => Err(r),
                        Some(_) => match (&txn.data, &txn.message) {
                            (Some(d), _) => Err(d.clone()),
                            (None, Some(m)) if m.is_positive() => Ok(m.clone()),
                            (None, Some(m)) => Err(m.clone()),
                            (None, None) => Err(Reply::plain(451, "transaction ended without a reply to the data")),
                        },
                    }
                };
                RecipientOutcome { recipient, result }
            })
            .collect();
        if matches!(self.state, State::Ready | State::Body) {
            self.state = State::Ready;
        }
        let dsn_dropped = txn.dsn_dropped;
        self.events.push_back(Event::Done(Outcome { mail, recipients, message: txn.message, dsn_dropped }));
    }
}
