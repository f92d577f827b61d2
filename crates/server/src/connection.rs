//! One client connection: a [`Connection`] moves bytes between the socket and the proto session,
//! carries out the session's events (the policy decides about senders and recipients, the store takes
//! the message, the password check runs off the async threads) and keeps the session's timers. One tokio
//! task per connection: [`Connection::run`] is a short loop, with one method per event.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mailroom_proto::params::MailParams;
use mailroom_proto::server::{AbortReason, Credentials, Decision, Event, Session};
use mailroom_proto::{Enhanced, ForwardPath, Reply, ReversePath};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{debug, info, warn, Instrument};

use crate::delivery::{envelope, storage_failure, success_notice, Origin, Outgoing, Receiving};
use crate::inbound::{targets, Outcome, Spf};
use crate::policy::{Client, Route};
use crate::shared::{Phase, Role, Shared};
use crate::stream::Stream;
use crate::trace::TraceInfo;
use mailroom_store::routing::one_per_maildir;

/// Socket read buffer at its largest; also the largest body chunk handed to the store in one write.
const READ_BUFFER: usize = 64 * 1024;
/// Input given to the session at a time; its replies are written before the next slice.
const FEED_SLICE: usize = 4 * 1024;
/// Socket read buffer of a new session: enough for any command line.
const INITIAL_READ_BUFFER: usize = 2 * 1024;
/// How long closing may take: under TLS it sends close_notify, which a client that never reads could block.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Refusals (of a sender, a recipient or a message) a session logs one line each for. Past it they are
/// only counted and summed up in the disconnect line: a client looping over unknown recipients would
/// otherwise write a line per RCPT (issue 10: ~100 MB of log in seconds).
const MAX_LOGGED_REFUSALS: u64 = 10;

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);
/// The sender of a RCPT outside a transaction (the session never asks for one).
static NO_SENDER: ReversePath = ReversePath::Null;

/// Serves one connection; every log line of it carries the session id and the peer (a tracing span).
pub(crate) async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    role: Role,
    shared: Arc<Shared>,
    phase: watch::Receiver<Phase>,
) {
    let id = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("session", id = %format_args!("{id:08X}"), %peer);
    async move {
        let _active = crate::metrics::record::session_opened(crate::metrics::listener(role));
        info!(%role, "connect");
        if let Some(connection) = Connection::open(tcp, peer, role, shared, phase).await {
            connection.run().await;
        }
    }
    .instrument(span)
    .await
}

/// Bytes read from the socket: `buf[fed..filled]` is not yet given to the session. Input is fed a slice
/// at a time with the replies written in between, so that a burst of cheap commands (HELP is answered
/// with 20 times its size) can never queue more than a slice's worth of replies.
struct Input {
    /// Small while idle (thousands of idle sessions must stay cheap); grows when reads fill it.
    buf: Vec<u8>,
    fed: usize,
    filled: usize,
}

impl Input {
    fn is_pending(&self) -> bool {
        self.fed < self.filled
    }

    /// The next slice to feed, marked as fed.
    fn next_slice(&mut self) -> &[u8] {
        let start = self.fed;
        self.fed = self.filled.min(start + FEED_SLICE);
        &self.buf[start..self.fed]
    }

    /// Drops what was read and not fed (plaintext behind STARTTLS, CVE-2011-0411).
    fn discard(&mut self) {
        self.fed = self.filled;
    }

    fn handle_read(&mut self, n: usize) {
        (self.fed, self.filled) = (0, n);
        if n == self.buf.len() && self.buf.len() < READ_BUFFER {
            self.buf.resize(READ_BUFFER, 0);
        }
    }
}

/// A live client connection and its session.
pub(crate) struct Connection {
    /// The session keeps each accepted recipient with its route: the shell keeps no recipient list.
    session: Session<Route>,
    stream: Stream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    phase: watch::Receiver<Phase>,
    input: Input,
    /// The message being received, between the session's DataStart and DataEnd/DataAborted.
    receiving: Option<Receiving>,
    /// SPF of the current transaction, when its mail is checked (`[inbound]`).
    spf: Option<Spf>,
    role: Role,
    /// Messages stored in this session.
    messages: u64,
    /// Senders, recipients and messages refused in this session.
    refusals: u64,
}

impl Connection {
    /// Sets up the session; on an implicit-TLS listener the handshake comes first (RFC 8314: TLS from
    /// the first byte, before the greeting). None when that handshake fails.
    async fn open(
        tcp: TcpStream,
        peer: SocketAddr,
        role: Role,
        shared: Arc<Shared>,
        mut phase: watch::Receiver<Phase>,
    ) -> Option<Connection> {
        let mut stream = Stream::Plain(tcp);
        if role == Role::Submissions {
            match Box::pin(handshake(stream, &shared, &mut phase)).await {
                Ok(tls) => stream = tls,
                Err(e) => {
                    crate::metrics::record::tls_handshake_failed();
                    info!(error = %e, "TLS handshake failed");
                    return None;
                }
            }
        }
        let mut session = Session::with_routes(shared.proto(role), Instant::now());
        session.set_tls(matches!(stream, Stream::Tls(_)));
        // A session that starts during shutdown is told so at once.
        if *phase.borrow() != Phase::Running {
            session.handle_shutdown();
        }
        let input = Input { buf: vec![0u8; INITIAL_READ_BUFFER], fed: 0, filled: 0 };
        Some(Connection {
            session,
            stream,
            peer,
            shared,
            phase,
            input,
            receiving: None,
            spf: None,
            role,
            messages: 0,
            refusals: 0,
        })
    }

    /// Runs the session to its end: events, then replies, then more input or a wait.
    async fn run(mut self) {
        loop {
            self.handle_events().await;
            // The error tarpit: the delayed reply goes out after the delay, then the session goes on.
            let delayed = self.session.poll_delay();
            if let Some(delay) = delayed {
                tokio::time::sleep(delay).await;
            }
            if !self.flush().await {
                break;
            }
            if delayed.is_some() {
                self.session.handle_delay_elapsed(Instant::now());
                continue;
            }
            if self.session.is_closed() {
                self.close().await;
                break;
            }
            if self.session.is_waiting() {
                // Every event is answered in handle_events; this cannot happen, but never spin.
                warn!("session waiting with no event");
                break;
            }
            if !self.feed() {
                self.wait().await;
            }
        }
        self.log_end();
    }

    /// Carries out every event the session has queued.
    async fn handle_events(&mut self) {
        while let Some(event) = self.session.poll_event() {
            match event {
                Event::Mail { from, params } => self.handle_mail(&from, &params).await,
                Event::Rcpt { to, .. } => self.handle_rcpt(&to).await,
                Event::DataStart => self.handle_data_start(),
                Event::Data(chunk) => self.handle_data(&chunk),
                Event::DataEnd => self.handle_data_end().await,
                Event::DataAborted(reason) => self.handle_data_aborted(reason),
                Event::StartTls => self.handle_starttls().await,
                Event::Auth(creds) => self.handle_auth(creds).await,
                Event::Close => {}
            }
        }
    }

    fn client(&self) -> Client<'_> {
        Client { ip: self.peer.ip(), authenticated: self.session.authenticated() }
    }

    /// Counts a refusal; true while it should get a log line of its own.
    fn note_refusal(&mut self) -> bool {
        self.refusals += 1;
        self.refusals <= MAX_LOGGED_REFUSALS
    }

    async fn handle_mail(&mut self, from: &ReversePath, params: &MailParams) {
        self.spf = None;
        let decision = match self.shared.policy.check_sender(self.client(), from, Instant::now()) {
            Ok(()) => match self.start_spf(from).await {
                Ok(()) => {
                    debug!(%from, size = params.size, "mail");
                    Decision::Accept
                }
                Err(reply) => {
                    crate::metrics::record::refusal(crate::metrics::reason_of_reply(&reply));
                    Decision::Reply(reply)
                }
            },
            Err(refusal) => {
                crate::metrics::refusal(&refusal);
                if self.note_refusal() {
                    info!(%from, reason = refusal.reason, "sender refused");
                }
                Decision::Reply(refusal.reply)
            }
        };
        self.session.answer(decision);
    }

    /// SPF for the new transaction, when this client's mail is checked (`[inbound]`).
    async fn start_spf(&mut self, from: &ReversePath) -> Result<(), Reply> {
        let Some(inbound) = self.shared.inbound.clone() else { return Ok(()) };
        let ip = self.peer.ip();
        let trusted = self.shared.per_ip.is_trusted(ip);
        if !inbound.is_checked(self.role == Role::Smtp, ip, self.session.authenticated().is_some(), trusted) {
            return Ok(());
        }
        let helo = self.session.helo().map_or("", |h| h.name.as_str()).to_string();
        // Boxed: the SPF lookup's future is large and most sessions never build it.
        self.spf = Some(Box::pin(inbound.handle_mail(ip, &helo, from)).await?);
        Ok(())
    }

    async fn handle_rcpt(&mut self, to: &ForwardPath) {
        let shared = self.shared.clone();
        let declared = self.session.transaction().and_then(|t| t.params.size);
        let (from, earlier) = match self.session.transaction() {
            Some(tx) => (&tx.from, tx.routes()),
            None => (&NO_SENDER, &[][..]),
        };
        let routed = match shared.policy.route(self.client(), from, to, earlier).await {
            Ok(route) => shared.policy.check_quota(&route, declared).await.map(|()| route),
            Err(refusal) => Err(refusal),
        };
        let decision = match routed {
            Ok(route) => {
                debug!(%to, ?route, "rcpt accepted");
                Decision::AcceptRcpt(route)
            }
            Err(refusal) => {
                crate::metrics::refusal(&refusal);
                if self.note_refusal() {
                    info!(%to, reply = %refusal.reply, "rcpt refused");
                }
                Decision::Reply(refusal.reply)
            }
        };
        self.session.answer(decision);
    }

    /// Opens the message file with its trace headers.
    fn handle_data_start(&mut self) {
        let s = &self.session;
        let tx = s.transaction().expect("DataStart comes inside a transaction");
        let trace = TraceInfo {
            helo: s.helo().map_or("unknown", |h| h.name.as_str()),
            peer: self.peer.ip(),
            hostname: &s.config().hostname,
            protocol: s.protocol(),
            id: "",
            from: &tx.from,
            rcpts: &tx.rcpts,
            delivered_to: delivered_to(tx.routes()),
            now: SystemTime::now(),
        };
        let filter = self.shared.inbound.as_ref().map(|i| i.filter(self.spf.take()));
        let decision = match Receiving::begin(&self.shared.store, trace, filter) {
            Ok(mut r) => {
                let locals: Vec<_> = tx.routes().iter().flat_map(|r| r.locals()).cloned().collect();
                r.vacation = self.shared.vacation.watch(&tx.from, &locals);
                r.sign_with(self.submission_signer());
                self.receiving = Some(r);
                Decision::Accept
            }
            Err(e) => {
                warn!(error = %e, "cannot open message file");
                Decision::Reply(storage_failure(&e))
            }
        };
        self.session.answer(decision);
    }

    /// A DKIM signer when the client submits mail (authenticated, or in `[delivery] relay_networks`).
    fn submission_signer(&self) -> Option<crate::signing::MessageSigner> {
        let client = self.client();
        let submits = client.authenticated.is_some() || self.shared.policy.is_relay_allowed(client);
        submits.then(|| self.shared.signing.message_signer()).flatten()
    }

    fn handle_data(&mut self, chunk: &[u8]) {
        if let Some(r) = self.receiving.as_mut() {
            r.handle_data(chunk);
        }
    }

    /// Makes the message durable for every accepted recipient (local mailboxes and the queue); the reply
    /// is the store's verdict.
    async fn handle_data_end(&mut self) {
        let reply = match self.receiving.take() {
            Some(mut r) => {
                let shared = self.shared.clone();
                let tx = self.session.transaction();
                let from = tx.map(|t| t.from.to_string()).unwrap_or_default();
                let routes = tx.map_or(&[][..], |t| t.routes());
                let mut locals = one_per_maildir(routes.iter().flat_map(Route::locals));
                // Boxed (the checks' DNS futures are large), and only built when the message is checked.
                let checked = if r.is_checked() { Box::pin(r.finish_checks()).await } else { None };
                match checked {
                    Some(Outcome::Refuse(reply)) => return self.refuse_message(reply),
                    Some(Outcome::Deliver { junk, .. }) => locals = targets(&shared.store, locals, junk),
                    None => {}
                }
                let origin = Origin { auth: self.session.authenticated(), client: self.peer.ip() };
                let outgoing = tx.and_then(|t| envelope(t, origin, SystemTime::now())).map(|envelope| Outgoing {
                    queue: &shared.queue,
                    outbound: shared.outbound.as_ref(),
                    envelope,
                });
                let mailboxes = shared.store.data_dir().join("mailboxes");
                let notice = tx.and_then(|t| success_notice(t, shared.outbound.as_ref(), mailboxes, SystemTime::now()));
                let vacation = r.vacation.take();
                let reply = r.finish(&locals, outgoing, notice, &from, shared.max_hops).await;
                if let (250, Some(watch)) = (reply.code, vacation) {
                    shared.vacation.handle_stored(watch, shared.outbound.clone());
                }
                reply
            }
            None => Reply::new(451, Enhanced(4, 3, 0), "Message lost, try again"),
        };
        if reply.code == 250 {
            self.messages += 1;
        }
        self.session.answer(Decision::Reply(reply));
    }

    /// The checks refused the message (DMARC reject, or deferred): nothing is stored.
    fn refuse_message(&mut self, reply: Reply) {
        crate::metrics::record::refusal(crate::metrics::reason_of_reply(&reply));
        self.note_refusal();
        self.session.answer(Decision::Reply(reply));
    }

    fn handle_data_aborted(&mut self, reason: AbortReason) {
        self.receiving = None; // dropping the Incoming removes its file
        crate::metrics::data_aborted(reason);
        if self.note_refusal() {
            info!(reason = abort_reason(reason), "message refused");
        }
    }

    /// Sends the 220, then does the handshake on the same socket. Plaintext read behind STARTTLS never
    /// reaches the session (CVE-2011-0411).
    async fn handle_starttls(&mut self) {
        self.input.discard();
        if !self.flush().await {
            return;
        }
        let plain = std::mem::replace(&mut self.stream, Stream::Gone);
        match Box::pin(handshake(plain, &self.shared, &mut self.phase)).await {
            Ok(tls) => {
                self.stream = tls;
                self.session.handle_tls_established(Instant::now());
                // The handshake's watch may have taken the news of a shutdown that began meanwhile.
                if *self.phase.borrow() != Phase::Running {
                    self.session.handle_shutdown();
                }
            }
            Err(e) => {
                crate::metrics::record::tls_handshake_failed();
                info!(error = %e, "STARTTLS handshake failed");
                self.session.handle_eof();
            }
        }
    }

    async fn handle_auth(&mut self, creds: Credentials) {
        let decision = Box::pin(crate::auth::authenticate(&self.shared, creds)).await;
        self.session.answer(decision);
    }

    /// Writes what the session has queued; false when the client is gone or does not read its replies
    /// (the session is then closed). A client that never reads fills the socket buffer: it gets
    /// `command_timeout` to drain it, not forever (it would hold a connection slot).
    async fn flush(&mut self) -> bool {
        let Some(out) = self.session.poll_transmit() else { return true };
        crate::metrics::record::replies(&out);
        let limit = self.session.config().command_timeout;
        match tokio::time::timeout(limit, self.stream.write_all(&out)).await {
            Ok(Ok(())) => return true,
            Ok(Err(e)) => info!(error = %e, "write failed"),
            Err(_) => info!("client does not read its replies: closing"),
        }
        self.session.handle_eof();
        false
    }

    /// Ends the connection after the last reply. Under TLS that sends close_notify (bounded by
    /// [`CLOSE_TIMEOUT`]); a plain socket needs no shutdown(2) of its own: dropping it closes it, and its
    /// FIN follows the replies already written (one system call less per connection).
    async fn close(&mut self) {
        if matches!(self.stream, Stream::Tls(_)) {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.stream.shutdown()).await;
        }
    }

    /// Gives the session the next slice of input already read; false when there is none to give.
    fn feed(&mut self) -> bool {
        if !self.input.is_pending() || !self.session.wants_input() {
            return false;
        }
        let slice = self.input.next_slice();
        self.session.handle_input(slice, Instant::now());
        true
    }

    /// Waits for input, the session's deadline or a change of the server's phase.
    async fn wait(&mut self) {
        let deadline = self.session.poll_timeout().map(tokio::time::Instant::from_std);
        let can_read = self.session.wants_input() && !self.input.is_pending();
        let phase_now = *self.phase.borrow();
        tokio::select! {
            r = self.stream.read(&mut self.input.buf), if can_read => match r {
                Ok(0) | Err(_) => self.session.handle_eof(),
                Ok(n) => self.input.handle_read(n),
            },
            () = sleep_until(deadline) => {
                info!("timeout");
                self.session.handle_timeout(Instant::now());
            }
            changed = self.phase.changed(), if phase_now != Phase::Abort => {
                match (changed, *self.phase.borrow()) {
                    (Ok(()), Phase::Draining) => self.session.handle_shutdown(),
                    _ => self.session.handle_shutdown_deadline(),
                }
            }
        }
    }

    fn log_end(&self) {
        let unlogged = self.refusals.saturating_sub(MAX_LOGGED_REFUSALS);
        if unlogged > 0 {
            info!(messages = self.messages, refused = self.refusals, unlogged, "disconnect");
        } else {
            info!(messages = self.messages, refused = self.refusals, "disconnect");
        }
    }
}

/// The `Delivered-To` address of a message (the recipient as given, with its detail): only when the
/// transaction has one recipient, an address of ours. The stored file is one inode linked into every
/// recipient's Maildir, so it cannot carry a different header per mailbox, and naming every recipient
/// would show each the others (Bcc); Dovecot's LMTP likewise writes it only for a single recipient.
pub(crate) fn delivered_to(routes: &[Route]) -> Option<&str> {
    match routes {
        [only] if only.is_served => Some(&only.rcpt),
        _ => None,
    }
}

/// The TLS handshake on a plaintext stream (implicit TLS, or after STARTTLS's 220). Bounded by
/// `tls_handshake_timeout`, and given up at once when shutdown begins: a handshake is not a transaction
/// under way, and a stalled one must not hold up the stop.
async fn handshake(stream: Stream, shared: &Shared, phase: &mut watch::Receiver<Phase>) -> io::Result<Stream> {
    let Stream::Plain(tcp) = stream else {
        return Err(io::Error::other("already under TLS"));
    };
    let accept = tokio::time::timeout(shared.tls_handshake_timeout, crate::tls::accept(tcp, shared.tls.acceptor()));
    let tls = tokio::select! {
        r = accept => r.map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??,
        () = shutdown_begins(phase) => return Err(io::Error::other("server shutting down")),
    };
    let (_, conn) = tls.get_ref();
    crate::metrics::record::tls_handshake(crate::metrics::tls_version(conn.protocol_version()));
    info!(
        version = conn.protocol_version().and_then(|v| v.as_str()),
        cipher = conn.negotiated_cipher_suite().and_then(|c| c.suite().as_str()),
        "TLS established"
    );
    Ok(Stream::Tls(Box::new(tls)))
}

/// Resolves once the server stops running (at once if it already has).
async fn shutdown_begins(phase: &mut watch::Receiver<Phase>) {
    let _ = phase.wait_for(|p| *p != Phase::Running).await;
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// A refused message's reason as a plain word for the log (not the Rust name of the variant).
fn abort_reason(reason: AbortReason) -> &'static str {
    match reason {
        AbortReason::TooBig => "too-big",
        AbortReason::BareLineEnding => "bare-line-ending",
        AbortReason::HeaderTooLarge => "header-too-large",
        AbortReason::Reset => "reset",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the future of a rare event's handler may add to a connection's future. Tokio moves a task's
    /// whole future when it spawns it and as the task starts and ends, and a future is as large as its
    /// largest await: the TLS handshake, SPF, the end-of-data checks and AUTH are boxed, so that a
    /// connection that never uses them (most: greeting, EHLO, mail, QUIT) does not carry their size.
    const MAX_RARE_HANDLER_FUTURE: usize = 512;

    #[tokio::test]
    async fn rare_large_awaits_are_boxed() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = crate::Config::default();
        config.server.data_dir = dir.path().to_path_buf();
        config.server.listen = vec!["127.0.0.1:0".parse().unwrap()];
        let server = crate::Server::bind(config).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (tcp, peer) = listener.accept().await.unwrap();
        let (_phase_tx, phase) = watch::channel(Phase::Running);
        let mut c = Connection::open(tcp, peer, Role::Smtp, server.shared.clone(), phase).await.unwrap();
        let starttls = std::mem::size_of_val(&c.handle_starttls());
        assert!(starttls <= MAX_RARE_HANDLER_FUTURE, "STARTTLS's future takes {starttls} octets");
        let spf = std::mem::size_of_val(&c.start_spf(&NO_SENDER));
        assert!(spf <= MAX_RARE_HANDLER_FUTURE, "SPF's future takes {spf} octets");
        let creds = Credentials {
            username: "u".into(),
            password: mailroom_proto::sasl::Secret::new("p".into()),
            mechanism: mailroom_proto::sasl::Mechanism::Plain,
        };
        let auth = std::mem::size_of_val(&c.handle_auth(creds));
        assert!(auth <= MAX_RARE_HANDLER_FUTURE, "AUTH's future takes {auth} octets");
    }
}
