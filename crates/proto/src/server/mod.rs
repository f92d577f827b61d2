//! The server side of SMTP as a sans-I/O state machine.
//!
//! Bytes go in with [`Session::handle_input`]; replies come out of [`Session::poll_transmit`] and
//! decisions the session cannot make alone (is this recipient ours? did the store take the message?)
//! come out of [`Session::poll_event`]. While such a decision is pending the session parses nothing
//! further: pipelined commands wait in the input buffer and are answered in order once
//! [`Session::answer`] resumes it (RFC 2920 §3.1). Time is passed in; the shell owns the clock: after an
//! error reply past half of `max_errors` the session stops as well, asks for the tarpit delay with
//! [`Session::poll_delay`], and goes on with [`Session::handle_delay_elapsed`], so every error reply of a
//! pipelined batch waits on its own. The shell's route of each accepted recipient ([`Decision::AcceptRcpt`])
//! stays with the transaction ([`Transaction::routes`]), so the shell keeps no recipient list of its own.
//!
//! One command, one file: `helo.rs`, `mail.rs`, `rcpt.rs`, `data.rs`, `bdat.rs`, `rset.rs`, and the
//! small ones in `misc.rs`.

mod auth;
mod bdat;
mod data;
mod helo;
mod mail;
mod misc;
mod rcpt;
mod rset;
mod starttls;

pub use crate::sasl::{Mechanism, Secret};

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::address::{ForwardPath, ReversePath};
use crate::command::{self, Command, MAX_LINE};
use crate::data::{DotDecoder, LineEndingCheck};
use crate::params::{MailParams, RcptParams};
use crate::reply::{Enhanced, Reply};
use crate::sasl;

/// Default for `[limits] max_message_size`: 25 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 25 * 1024 * 1024;
/// RFC 5321 §4.5.3.1.8 asks for at least 100 recipients per transaction.
pub const DEFAULT_MAX_RECIPIENTS: usize = 100;
/// Errors (replies to bad input, and recipients the shell refuses) before the session is closed with 421
/// (Postfix's smtpd_hard_error_limit).
pub const DEFAULT_MAX_ERRORS: usize = 20;
/// RFC 5321 §4.5.3.2.7: the server waits at least 5 minutes for the next command.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the server waits for further message bytes during DATA/BDAT.
pub const DEFAULT_DATA_TIMEOUT: Duration = Duration::from_secs(300);
/// Failed AUTH attempts per session before 421 4.7.0 and close.
pub const DEFAULT_MAX_AUTH_FAILURES: usize = 3;
/// RFC 5322 §2.1.1 sets no count; Postfix's header_size_limit is 100 KiB for one header. We bound the
/// whole header section.
pub const DEFAULT_MAX_HEADER_LINES: usize = 10_000;
pub const DEFAULT_MAX_HEADER_SIZE: usize = 1024 * 1024;
/// Past half of `max_errors`, each error reply waits this long (Postfix's smtpd_error_sleep_time).
pub const DEFAULT_ERROR_DELAY: Duration = Duration::from_secs(1);
/// Input that may wait unparsed while a decision is pending, before the shell stops reading.
pub const MAX_BUFFERED_INPUT: usize = 64 * 1024;

/// What a server session needs to know; shared by all sessions of a listener.
#[derive(Debug, Clone)]
pub struct Config {
    /// Our name in the greeting, EHLO reply and trace headers.
    pub hostname: String,
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_errors: usize,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    /// Offer STARTTLS (RFC 3207) while the connection is in plaintext.
    pub starttls: bool,
    /// Offer AUTH PLAIN and LOGIN (RFC 4954) on this listener.
    pub auth: bool,
    /// MAIL needs a successful AUTH first (submission, RFC 6409 §4.3): 530 5.7.0 otherwise.
    pub auth_required: bool,
    /// Offer and accept AUTH without TLS (only for development on loopback).
    pub allow_plaintext_auth: bool,
    pub max_auth_failures: usize,
    /// Lines in the header section of a message (continuation lines count).
    pub max_header_lines: usize,
    /// Octets in the header section of a message.
    pub max_header_size: usize,
    /// Bytes per second a client must average once `data_timeout` has passed since DATA began; 0 is off.
    pub min_data_rate: u64,
    /// Delay of each error reply past half of `max_errors`.
    pub error_delay: Duration,
    /// Offer DSN (RFC 3461) and accept its parameters; without it they get 555 5.5.4.
    pub dsn: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hostname: "localhost".into(),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_recipients: DEFAULT_MAX_RECIPIENTS,
            max_errors: DEFAULT_MAX_ERRORS,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            data_timeout: DEFAULT_DATA_TIMEOUT,
            starttls: false,
            auth: false,
            auth_required: false,
            allow_plaintext_auth: false,
            max_auth_failures: DEFAULT_MAX_AUTH_FAILURES,
            max_header_lines: DEFAULT_MAX_HEADER_LINES,
            max_header_size: DEFAULT_MAX_HEADER_SIZE,
            min_data_rate: 0,
            error_delay: DEFAULT_ERROR_DELAY,
            dsn: true,
        }
    }
}

/// Why message data that was being received will not be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortReason {
    /// Larger than `max_message_size`: 552 5.3.4 after the end of data.
    TooBig,
    /// A bare CR or LF in the data: 550 5.5.2 after the end of data (smuggling defence).
    BareLineEnding,
    /// The header section is longer than `max_header_lines` / `max_header_size`: 552 5.3.4.
    HeaderTooLarge,
    /// RSET, a new EHLO, QUIT, a timeout or the connection closing in the middle of BDAT.
    Reset,
}

/// Something the shell must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// MAIL FROM passed syntax checks; answer to accept or refuse the sender.
    Mail { from: ReversePath, params: MailParams },
    /// RCPT TO passed syntax and limit checks; answer whether this recipient is ours. The DSN parameters
    /// stay with the transaction too ([`Transaction::rcpt_params`]).
    Rcpt { to: ForwardPath, params: RcptParams },
    /// The message body is about to arrive (DATA, or the first BDAT chunk): open the store, then answer.
    DataStart,
    /// Body bytes: dot-unstuffed, CRLF line endings as on the wire.
    Data(Vec<u8>),
    /// The whole body arrived and was clean: make it durable, then answer with the final reply.
    DataEnd,
    /// The body being received will not be stored: drop what was written. The session replies itself.
    DataAborted(AbortReason),
    /// 220 to STARTTLS was queued and unread input thrown away: flush, do the TLS handshake, then call
    /// [`Session::handle_tls_established`] (or close if it fails).
    StartTls,
    /// A client authenticates: check the credentials, then answer (235 on Accept, 535 5.7.8 to refuse).
    Auth(Credentials),
    /// The session is over: flush what [`Session::poll_transmit`] still holds, then close.
    Close,
}

/// What a client presented with AUTH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub mechanism: Mechanism,
    pub username: String,
    pub password: Secret,
}

/// Where a server-side SASL exchange stands (the state of [`Mode::Auth`]).
#[derive(Debug)]
enum Exchange {
    Plain,
    LoginUser,
    LoginPassword(String),
}

/// The shell's answer to an event that waits for one. `R` is the shell's routing result for a recipient
/// (where the message goes), which the session keeps with the transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<R = ()> {
    /// Accept with the session's standard reply. For [`Event::Rcpt`] only in a session without routes
    /// ([`Session::new`]); a session made with [`Session::with_routes`] needs [`Decision::AcceptRcpt`], and
    /// answers a plain acceptance 451 4.3.0 so that no recipient is ever accepted without a route.
    Accept,
    /// Accept the recipient of [`Event::Rcpt`] (250 2.1.5) with the shell's route for it.
    AcceptRcpt(R),
    /// Reply with this: a 2xx/3xx accepts, a 4xx/5xx refuses. A positive reply to [`Event::Rcpt`] is an
    /// acceptance without a route, like [`Decision::Accept`].
    Reply(Reply),
}

impl<R> Decision<R> {
    /// The reply this decision sends: the given one, or `standard` for an acceptance. [`Decision::AcceptRcpt`]
    /// answering another event than [`Event::Rcpt`] is an acceptance whose route is dropped.
    pub(crate) fn into_reply(self, standard: impl FnOnce() -> Reply) -> Reply {
        match self {
            Decision::Reply(r) => r,
            Decision::Accept | Decision::AcceptRcpt(_) => standard(),
        }
    }
}

/// The mail transaction under way (RFC 5321 §3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction<R = ()> {
    pub from: ReversePath,
    pub params: MailParams,
    /// Recipients the shell accepted, in order.
    pub rcpts: Vec<ForwardPath>,
    /// The shell's route of each accepted recipient, in the order of `rcpts`.
    routes: Vec<R>,
    /// The RCPT parameters (RFC 3461) of each accepted recipient, in the order of `rcpts`.
    rcpt_params: Vec<RcptParams>,
    /// Body octets seen so far (CRLF form, unstuffed).
    pub size: u64,
    /// BDAT chunks were used (DATA is then out of sequence).
    pub chunking: bool,
}

impl<R> Transaction<R> {
    /// A transaction for this sender, with no recipient yet.
    pub(crate) fn new(from: ReversePath, params: MailParams) -> Transaction<R> {
        Transaction {
            from,
            params,
            rcpts: Vec::new(),
            routes: Vec::new(),
            rcpt_params: Vec::new(),
            size: 0,
            chunking: false,
        }
    }

    /// The routes the shell gave with [`Decision::AcceptRcpt`], one per accepted recipient, in order.
    pub fn routes(&self) -> &[R] {
        &self.routes
    }

    /// Each accepted recipient with its route, in order.
    pub fn recipients(&self) -> impl Iterator<Item = (&ForwardPath, &R)> {
        self.rcpts.iter().zip(self.routes.iter())
    }

    /// The RCPT parameters (NOTIFY, ORCPT) of each accepted recipient, in the order of `rcpts`.
    pub fn rcpt_params(&self) -> &[RcptParams] {
        &self.rcpt_params
    }

    pub(crate) fn push_recipient(&mut self, to: ForwardPath, params: RcptParams, route: R) {
        self.rcpts.push(to);
        self.rcpt_params.push(params);
        self.routes.push(route);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pending {
    Mail { from: ReversePath, params: MailParams },
    Rcpt { to: ForwardPath, params: RcptParams },
    DataStart,
    BdatStart { size: u64, last: bool },
    DataEnd,
    StartTls,
    Auth(String),
}

#[derive(Debug)]
enum Mode {
    Command,
    Data {
        decoder: DotDecoder,
        failed: Option<AbortReason>,
    },
    /// Inside a BDAT chunk: `remaining` octets to go. `refusal` set: the bytes are read and dropped, then
    /// that reply is sent (the client sends the chunk whatever we say, RFC 3030 §2).
    Bdat {
        remaining: u64,
        last: bool,
        refusal: Option<Reply>,
    },
    /// In a SASL exchange: the next line is a base64 response, not a command.
    Auth(Exchange),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Helo {
    pub name: String,
    pub extended: bool,
}

/// One SMTP server session. `R` is the shell's route for an accepted recipient (see [`Decision`]).
pub struct Session<R = ()> {
    /// The route of a recipient accepted with [`Decision::Accept`]: only sessions made with
    /// [`Session::new`] (no routes, `R = ()`) have one.
    unrouted: Option<fn() -> R>,
    config: Arc<Config>,
    input: Vec<u8>,
    pos: usize,
    output: Vec<u8>,
    events: VecDeque<Event>,
    mode: Mode,
    pending: Option<Pending>,
    helo: Option<Helo>,
    tx: Option<Transaction<R>>,
    /// The store holds an open message (DataStart accepted, no DataEnd/DataAborted yet).
    data_open: bool,
    bdat_check: LineEndingCheck,
    bdat_failed: Option<AbortReason>,
    skipping_long_line: bool,
    errors: usize,
    deadline: Option<Instant>,
    /// The time of the latest input (the shell's clock), for when a message began.
    now: Instant,
    /// When the current message body began, and the octets received since (for `min_data_rate`).
    data_started: Instant,
    data_octets: u64,
    header_scan: crate::data::HeaderScan,
    /// A delay the shell applies before sending what is queued (slows down clients that keep erring).
    delay: Option<Duration>,
    /// An error reply past the tarpit threshold was queued: no further input is processed until the shell
    /// calls [`Session::handle_delay_elapsed`], so each error reply of a pipelined batch waits on its own.
    delayed: bool,
    shutting_down: bool,
    closed: bool,
    tls: bool,
    authenticated: Option<String>,
    auth_failures: usize,
}

impl Session<()> {
    /// A new session whose recipients need no route: [`Decision::Accept`] accepts a RCPT. The 220 greeting
    /// is already queued for transmission.
    pub fn new(config: Arc<Config>, now: Instant) -> Session {
        Session::build(config, now, Some(|| ()))
    }

    /// A session refused at connect (too many connections): the reply, then close.
    pub fn refuse(config: Arc<Config>, now: Instant, reply: Reply) -> Session {
        let mut s = Session::new(config, now);
        s.output.clear();
        s.reply(reply);
        s.close();
        s
    }
}

impl<R> Session<R> {
    /// A new session whose shell routes every recipient: it answers [`Event::Rcpt`] with
    /// [`Decision::AcceptRcpt`], and the routes come back with [`Transaction::routes`]. The 220 greeting is
    /// already queued for transmission.
    pub fn with_routes(config: Arc<Config>, now: Instant) -> Session<R> {
        Session::build(config, now, None)
    }

    fn build(config: Arc<Config>, now: Instant, unrouted: Option<fn() -> R>) -> Session<R> {
        let mut s = Session {
            unrouted,
            input: Vec::with_capacity(1024),
            pos: 0,
            output: Vec::with_capacity(512),
            events: VecDeque::new(),
            mode: Mode::Command,
            pending: None,
            helo: None,
            tx: None,
            data_open: false,
            bdat_check: LineEndingCheck::default(),
            bdat_failed: None,
            skipping_long_line: false,
            errors: 0,
            deadline: Some(now + config.command_timeout),
            now,
            data_started: now,
            data_octets: 0,
            header_scan: Default::default(),
            delay: None,
            delayed: false,
            shutting_down: false,
            closed: false,
            tls: false,
            authenticated: None,
            auth_failures: 0,
            config,
        };
        let greeting = Reply::plain(220, format!("{} ESMTP mailroom", s.config.hostname));
        s.reply(greeting);
        s
    }

    // ---- input ----

    /// Takes bytes from the client and runs the session as far as it can.
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) {
        if self.closed {
            return;
        }
        if self.pos > 0 && self.pos == self.input.len() {
            self.input.clear();
            self.pos = 0;
        }
        self.input.extend_from_slice(bytes);
        if self.data_open {
            self.data_octets += bytes.len() as u64;
        }
        self.now = now;
        self.touch(now);
        self.process();
    }

    /// True while the shell should read more from the client. False when closed, or when a decision is
    /// pending and enough input already waits (back-pressure instead of an unbounded buffer).
    pub fn wants_input(&self) -> bool {
        let idle = self.pending.is_none() && !self.delayed;
        !self.closed && (idle || self.input.len() - self.pos < MAX_BUFFERED_INPUT)
    }

    /// When the session times out unless input arrives; `None` while the shell owes an answer or a delay.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed || self.pending.is_some() || self.delayed {
            None
        } else {
            match (self.deadline, self.rate_deadline()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
    }

    /// With `min_data_rate` on, the moment the average rate since the body began would fall below it if
    /// nothing more arrives; never before `data_timeout` has passed.
    fn rate_deadline(&self) -> Option<Instant> {
        let rate = self.config.min_data_rate;
        if !self.data_open || rate == 0 {
            return None;
        }
        let earned = Duration::from_secs_f64(self.data_octets as f64 / rate as f64);
        Some(self.data_started + earned.max(self.config.data_timeout))
    }

    /// A delay to apply before sending what [`Session::poll_transmit`] holds (clients past half of
    /// `max_errors` get each error reply late, as Postfix does). Given once per delayed error reply: the
    /// session then processes no further input until [`Session::handle_delay_elapsed`].
    pub fn poll_delay(&mut self) -> Option<Duration> {
        self.delay.take()
    }

    /// The delay of [`Session::poll_delay`] has passed (and what was queued before it was sent): go on
    /// with the buffered input, which may bring further events, replies and delays.
    pub fn handle_delay_elapsed(&mut self, now: Instant) {
        if !self.delayed {
            return;
        }
        self.delayed = false;
        self.delay = None;
        self.now = now;
        self.process();
    }

    /// The clock passed the deadline: 421 4.4.2 and close (RFC 5321 §4.5.3.2).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed || self.pending.is_some() || self.delayed {
            return;
        }
        if self.rate_deadline().is_some_and(|d| now >= d) {
            self.abort_data(AbortReason::Reset);
            self.reply(Reply::new(
                421,
                Enhanced(4, 4, 2),
                format!("{} Data rate too low, closing connection", self.config.hostname),
            ));
            return self.close();
        }
        if self.deadline.is_none_or(|d| now < d) {
            return;
        }
        self.abort_data(AbortReason::Reset);
        self.reply(Reply::new(421, Enhanced(4, 4, 2), format!("{} Timeout, closing connection", self.config.hostname)));
        self.close();
    }

    /// The server is shutting down: idle sessions get 421 4.3.2 now, a transaction under way may finish.
    pub fn handle_shutdown(&mut self) {
        if self.closed {
            return;
        }
        self.shutting_down = true;
        if self.tx.is_none() && self.pending.is_none() && matches!(self.mode, Mode::Command | Mode::Auth(_)) {
            self.shutdown_now();
        }
    }

    /// The grace period is over: close even in the middle of a transaction.
    pub fn handle_shutdown_deadline(&mut self) {
        if !self.closed {
            self.abort_data(AbortReason::Reset);
            self.pending = None;
            self.shutdown_now();
        }
    }

    /// The client went away: drop any open message.
    pub fn handle_eof(&mut self) {
        if !self.closed {
            self.abort_data(AbortReason::Reset);
            self.pending = None;
            self.close();
        }
    }

    /// The connection is now under TLS (the shell did the handshake).
    pub fn set_tls(&mut self, on: bool) {
        self.tls = on;
    }

    // ---- output ----

    /// The next event for the shell.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Bytes to send to the client, if any. Replies of a pipelined batch accumulate here and leave in one
    /// write.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if self.output.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut self.output))
        }
    }

    /// Answers the pending event and resumes processing of buffered input.
    pub fn answer(&mut self, decision: Decision<R>) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        match pending {
            Pending::Mail { from, params } => self.answer_mail(from, params, decision),
            Pending::Rcpt { to, params } => self.answer_rcpt(to, params, decision),
            Pending::DataStart => self.answer_data_start(decision),
            Pending::BdatStart { size, last } => self.answer_bdat_start(size, last, decision),
            Pending::DataEnd => self.answer_data_end(decision),
            Pending::Auth(user) => self.answer_auth(user, decision),
            // Resumed by handle_tls_established, not by an answer.
            p @ Pending::StartTls => self.pending = Some(p),
        }
        if !self.closed {
            self.process();
        }
    }

    // ---- state the shell reads ----

    /// Input octets received but not yet parsed (bounded: see [`Session::wants_input`]).
    pub fn buffered_input(&self) -> usize {
        self.input.len() - self.pos
    }

    /// Input octets held in memory, parsed or not (the buffer is compacted as it is consumed).
    pub fn held_input(&self) -> usize {
        self.input.len()
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }
    pub fn is_waiting(&self) -> bool {
        self.pending.is_some()
    }
    /// True while the session holds back further input until [`Session::handle_delay_elapsed`].
    pub fn is_delayed(&self) -> bool {
        self.delayed
    }
    pub fn helo(&self) -> Option<&Helo> {
        self.helo.as_ref()
    }
    pub fn transaction(&self) -> Option<&Transaction<R>> {
        self.tx.as_ref()
    }
    pub fn config(&self) -> &Config {
        &self.config
    }
    /// True once the connection is under TLS (implicit, or after STARTTLS).
    pub fn is_tls(&self) -> bool {
        self.tls
    }
    /// The user name that authenticated, if any.
    pub fn authenticated(&self) -> Option<&str> {
        self.authenticated.as_deref()
    }

    /// The `with` keyword of the Received header: RFC 3848 (ESMTP, ESMTPS, ESMTPA, ESMTPSA), RFC 6531 §3.7.3
    /// (UTF8SMTP, UTF8SMTPS, UTF8SMTPA, UTF8SMTPSA) and plain SMTP after HELO.
    pub fn protocol(&self) -> &'static str {
        let utf8 = self.tx.as_ref().is_some_and(|t| t.params.smtputf8);
        let extended = self.helo.as_ref().is_some_and(|h| h.extended);
        match (extended, utf8, self.tls, self.authenticated.is_some()) {
            (false, _, _, _) => "SMTP",
            (true, false, false, false) => "ESMTP",
            (true, false, true, false) => "ESMTPS",
            (true, false, false, true) => "ESMTPA",
            (true, false, true, true) => "ESMTPSA",
            (true, true, false, false) => "UTF8SMTP",
            (true, true, true, false) => "UTF8SMTPS",
            (true, true, false, true) => "UTF8SMTPA",
            (true, true, true, true) => "UTF8SMTPSA",
        }
    }

    // ---- internals ----

    fn touch(&mut self, now: Instant) {
        let timeout = match self.mode {
            Mode::Command | Mode::Auth(_) => self.config.command_timeout,
            _ => self.config.data_timeout,
        };
        self.deadline = Some(now + timeout);
    }

    fn reply(&mut self, r: Reply) {
        r.write_to(&mut self.output);
    }

    /// A reply to bad input: counts towards `max_errors`, and at the limit closes with 421 4.7.0. Past half
    /// of the limit the reply waits `error_delay`, and the session stops there until the shell says the
    /// delay passed, so that every error reply of a pipelined batch is delayed on its own.
    fn error(&mut self, r: Reply) {
        self.reply(r);
        self.errors += 1;
        if self.errors > self.config.max_errors / 2 {
            self.delay = Some(self.config.error_delay);
            self.delayed = true;
        }
        if self.errors >= self.config.max_errors {
            self.abort_data(AbortReason::Reset);
            self.reply(Reply::new(
                421,
                Enhanced(4, 7, 0),
                format!("{} Too many errors, closing connection", self.config.hostname),
            ));
            self.close();
        }
    }

    fn emit(&mut self, e: Event) {
        self.events.push_back(e);
    }

    fn wait(&mut self, p: Pending, e: Event) {
        self.pending = Some(p);
        self.emit(e);
    }

    fn close(&mut self) {
        if !self.closed {
            self.closed = true;
            // Nothing more to hold back; a delay already asked for still applies to the last replies.
            self.delayed = false;
            self.input.clear();
            self.pos = 0;
            self.emit(Event::Close);
        }
    }

    fn shutdown_now(&mut self) {
        self.reply(Reply::new(
            421,
            Enhanced(4, 3, 2),
            format!("{} Service shutting down, closing connection", self.config.hostname),
        ));
        self.close();
    }

    /// Ends the transaction (RSET, EHLO, end of data), dropping an open message.
    fn reset_transaction(&mut self) {
        self.abort_data(AbortReason::Reset);
        self.tx = None;
        self.bdat_failed = None;
        self.bdat_check = LineEndingCheck::default();
    }

    fn abort_data(&mut self, reason: AbortReason) {
        if self.data_open {
            self.data_open = false;
            self.emit(Event::DataAborted(reason));
        }
    }

    /// After a transaction ends: during shutdown the session closes now.
    fn transaction_over(&mut self) {
        if self.shutting_down {
            self.shutdown_now();
        }
    }

    fn process(&mut self) {
        self.process_buffered();
        // The mode may have changed (DATA's 354, a BDAT chunk, the end of data): re-arm the idle timer
        // for what the session now waits for, counted from the last input.
        self.touch(self.now);
    }

    fn process_buffered(&mut self) {
        while !self.closed && self.pending.is_none() && !self.delayed {
            let progressed = match self.mode {
                Mode::Command | Mode::Auth(_) => self.process_line(),
                Mode::Data { .. } => self.process_data(),
                Mode::Bdat { .. } => self.process_bdat(),
            };
            if !progressed {
                break;
            }
        }
        if self.pos == self.input.len() {
            self.input.clear();
            self.pos = 0;
        } else if self.pos > 4096 && self.pos * 2 > self.input.len() {
            self.input.drain(..self.pos);
            self.pos = 0;
        }
    }

    /// Takes one command line from the buffer; false when a whole line has not arrived yet.
    fn process_line(&mut self) -> bool {
        let buf = &self.input[self.pos..];
        let in_auth = matches!(self.mode, Mode::Auth(_));
        let max = if in_auth { sasl::MAX_RESPONSE_LINE } else { MAX_LINE };
        let Some(end) = find_crlf(buf) else {
            if buf.len() > max {
                // No CRLF within any allowed length: refuse once, then drop input until the next CRLF.
                // Keep a trailing CR: it may be the first half of the CRLF that ends the line.
                let keep = usize::from(buf.last() == Some(&b'\r'));
                self.pos = self.input.len() - keep;
                if !self.skipping_long_line {
                    self.skipping_long_line = true;
                    self.line_too_long();
                }
            }
            return false;
        };
        let line_start = self.pos;
        self.pos += end + 2;
        if std::mem::take(&mut self.skipping_long_line) {
            return true;
        }
        if in_auth && end > max {
            // The same refusal as when the CRLF comes in a later read.
            self.line_too_long();
            return true;
        }
        if in_auth {
            let line = self.input[line_start..line_start + end].to_vec();
            self.handle_auth_response(&line);
            return true;
        }
        let line = &self.input[line_start..line_start + end];
        if line.len() + 2 > command::line_limit(line) {
            self.error(Reply::new(500, Enhanced(5, 5, 2), "Line too long"));
            return true;
        }
        match command::parse(line) {
            Ok(cmd) => self.handle_command(cmd),
            Err(r) => self.error(r),
        }
        true
    }

    /// 500 for a line past its limit. In a SASL exchange it also ends the exchange (RFC 4954 §4 lets the
    /// server fail it): the client gets the 500, and its next line is read as a command again, not as a
    /// response.
    fn line_too_long(&mut self) {
        if matches!(self.mode, Mode::Auth(_)) {
            self.mode = Mode::Command;
        }
        self.error(Reply::new(500, Enhanced(5, 5, 2), "Line too long"));
    }

    fn handle_command(&mut self, cmd: Command) {
        match cmd {
            Command::Helo(name) => self.handle_helo(name, false),
            Command::Ehlo(name) => self.handle_helo(name, true),
            Command::Mail { from, params } => self.handle_mail(from, params),
            Command::Rcpt { to, params } => self.handle_rcpt(to, params),
            Command::Data => self.handle_data(),
            Command::Bdat { size, last } => self.handle_bdat(size, last),
            Command::Rset => self.handle_rset(),
            Command::Noop => self.handle_noop(),
            Command::Quit => self.handle_quit(),
            Command::Vrfy => self.handle_vrfy(),
            Command::Expn => self.handle_expn(),
            Command::Help => self.handle_help(),
            Command::StartTls => self.handle_starttls(),
            Command::Auth(args) => self.handle_auth(args),
            Command::NotImplemented => self.error(Reply::new(502, Enhanced(5, 5, 1), "Command not implemented")),
        }
    }

    /// RFC 5321 §4.1.4: MAIL needs a HELO/EHLO first.
    fn need_helo(&mut self) -> bool {
        if self.helo.is_none() {
            self.error(Reply::new(503, Enhanced(5, 5, 1), "Send HELO/EHLO first"));
            return false;
        }
        true
    }
}

/// Shows the state, never the buffers: the input may hold an AUTH exchange (a password in base64).
impl<R> std::fmt::Debug for Session<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("helo", &self.helo)
            .field("tls", &self.tls)
            .field("authenticated", &self.authenticated)
            .field("transaction", &self.tx.as_ref().map(|t| (t.rcpts.len(), t.size)))
            .field("pending", &self.pending.as_ref().map(std::mem::discriminant))
            .field("buffered_input", &self.buffered_input())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = buf[from..].iter().position(|&b| b == b'\n') {
        let at = from + i;
        if at > 0 && buf[at - 1] == b'\r' {
            return Some(at - 1);
        }
        from = at + 1;
    }
    None
}
