//! mailroom-client: the tokio shell around [`mailroom_proto::client::Session`].
//!
//! It connects, moves bytes between the socket and the session, and bounds every wait: the connection with
//! the connect timeout, and each reply (and the TLS handshake) with the command timeout, counted from when the
//! command left to when its whole reply is in (a server that trickles one byte a second cannot stretch it).
//! All protocol decisions (pipelining, parameters, fallbacks, per-recipient results, AUTH) are the session's.
//!
//! TLS ([`Tls`], see [`tls`] for whom it trusts): implicit from the first byte, or STARTTLS right
//! after EHLO, which never falls back to plain text: a server that does not offer it is an error
//! ([`Error::StartTlsNotOffered`]). With [`ClientBuilder::credentials`] the client authenticates (RFC 4954,
//! PLAIN or LOGIN) once TLS is up, before [`ClientBuilder::connect`] returns; never without TLS unless
//! [`ClientBuilder::allow_plaintext_auth`] is set and the server is on a loopback address, and never to a
//! server that did not offer AUTH. Errors say whose problem they are ([`ErrorKind`]).
//!
//! [`header`] splits a message's header section as RFC 5322 reads it, for `mailroom sendmail`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mailroom_client::Error> {
//! use mailroom_client::{Client, Envelope, Message};
//! use mailroom_proto::{Address, ForwardPath, ReversePath};
//! let mut client = Client::builder("127.0.0.1:2525").connect().await?;
//! let from = ReversePath::Mailbox(Address::parse("a@example.org").unwrap());
//! let to = vec![ForwardPath::Mailbox(Address::parse("b@example.org").unwrap())];
//! let outcome = client.send(&Envelope::new(from, to), Message::from_bytes(b"Subject: hi\n\nhello\n")).await?;
//! for r in outcome.refused() {
//!     eprintln!("{} refused: {}", r.recipient, r.result.as_ref().unwrap_err());
//! }
//! client.quit().await
//! # }
//! ```
#![forbid(unsafe_code)]

mod error;
pub mod header;
mod message;
mod stream;
pub mod tls;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at, Instant};

pub use mailroom_proto::client::{Capabilities, Envelope, Mechanism, MessageInfo, Outcome, RecipientOutcome, Secret};
use mailroom_proto::client::{Error as ProtoError, Event, Session, Step};
use mailroom_proto::{ForwardPath, Reply, ReversePath};

pub use error::{Error, ErrorKind};
pub use message::Message;
use message::Source;
use stream::Stream;
pub use stream::Tls;
use tls::TlsOptions;

/// RFC 5321 §4.5.3.2: the shortest of the client timeouts it recommends (2 minutes for DATA initiation);
/// the others are longer, but one bound for every step keeps a dead server from holding a sender for ten.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// How long to wait for the TCP connection (and the name lookup before it).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The port when the server is given without one: 25, the port IANA assigns to SMTP.
pub const DEFAULT_PORT: u16 = 25;
/// How much of a streamed message is read and written at a time.
const BODY_CHUNK: usize = 64 * 1024;
/// How long a connection that failed (STARTTLS missing, AUTH refused) is given to say goodbye.
const ABANDON_TIMEOUT: Duration = Duration::from_secs(5);

/// Which way a transcript line went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client: `C:`.
    Client,
    /// From the server: `S:`.
    Server,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Client => "C:",
            Direction::Server => "S:",
        })
    }
}

/// Receives every command line and reply line, for `-v` and logs. The message itself is summarised.
pub type Transcript = Arc<dyn Fn(Direction, &str) + Send + Sync>;

/// Sets up a [`Client`].
#[derive(Clone)]
pub struct ClientBuilder {
    server: String,
    helo_name: Option<String>,
    connect_timeout: Duration,
    command_timeout: Duration,
    tls: Tls,
    tls_options: TlsOptions,
    credentials: Option<(String, Password)>,
    allow_plaintext_auth: bool,
    transcript: Option<Transcript>,
    /// Where to connect instead of resolving the server's host (which stays the name TLS checks).
    address: Option<std::net::SocketAddr>,
}

/// Fetches the AUTH password when the server asks for AUTH (a password file, a password command);
/// `Err` says why it could not. It is called on the connecting task, once per connection, and may block
/// briefly (a command that prints a password).
pub type PasswordSource = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// The password of [`ClientBuilder::credentials`] or [`ClientBuilder::credentials_with`].
#[derive(Clone)]
enum Password {
    Given(Secret),
    Later(PasswordSource),
}

impl Password {
    fn get(&self) -> Result<Secret, Error> {
        match self {
            Password::Given(s) => Ok(s.clone()),
            Password::Later(source) => source().map(Secret::new).map_err(Error::Password),
        }
    }
}

/// Why plaintext AUTH was refused, for [`Error::PlaintextAuth`].
const PLAINTEXT_NOT_ALLOWED: &str =
    "use STARTTLS or implicit TLS (plaintext AUTH can be allowed, for a server on a loopback address only)";
const PLAINTEXT_NOT_LOOPBACK: &str = "plaintext AUTH is allowed only to a server on a loopback address";

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("server", &self.server)
            .field("helo_name", &self.helo_name)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("tls", &self.tls)
            .field("tls_options", &self.tls_options)
            .field("user", &self.credentials.as_ref().map(|c| &c.0))
            .field("allow_plaintext_auth", &self.allow_plaintext_auth)
            .field("address", &self.address)
            .finish()
    }
}

impl ClientBuilder {
    /// The name given in EHLO/HELO; by default this machine's host name.
    pub fn helo_name(mut self, name: impl Into<String>) -> Self {
        self.helo_name = Some(name.into());
        self
    }
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }
    /// The longest wait for any one reply (and for any one write).
    pub fn command_timeout(mut self, d: Duration) -> Self {
        self.command_timeout = d;
        self
    }
    /// Both timeouts at once, as `--timeout` sets them.
    pub fn timeout(self, d: Duration) -> Self {
        self.connect_timeout(d).command_timeout(d)
    }
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = tls;
        self
    }
    pub fn transcript(mut self, t: Transcript) -> Self {
        self.transcript = Some(t);
        self
    }
    /// Trusts the certificates in this PEM file (a private CA, or a self-signed server certificate)
    /// instead of the system's CA store.
    pub fn cafile(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.tls_options.cafile = Some(path.into());
        self
    }
    /// Does not verify the server's certificate at all (encrypted, but to whoever answers). Logs a warning.
    pub fn insecure(mut self, yes: bool) -> Self {
        self.tls_options.insecure = yes;
        self
    }
    /// A rustls configuration of the caller's own (client certificates, pinned roots ...), used as given;
    /// it overrides [`ClientBuilder::cafile`] and [`ClientBuilder::insecure`].
    pub fn tls_config(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls_options.config = Some(config);
        self
    }
    /// Authenticates as `user` (AUTH PLAIN or LOGIN, whichever the server offers; PLAIN first) after TLS is
    /// up. Without TLS [`ClientBuilder::connect`] fails before connecting ([`Error::PlaintextAuth`]) unless
    /// [`ClientBuilder::allow_plaintext_auth`] is set; a server that does not offer AUTH gets none
    /// ([`Error::AuthNotOffered`]).
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some((user.into(), Password::Given(Secret::new(password.into()))));
        self
    }
    /// Like [`ClientBuilder::credentials`], with the password fetched by `source` only when the server
    /// has offered AUTH over a connection it may be sent on (so a password command never runs for a server
    /// that asks for none).
    pub fn credentials_with(mut self, user: impl Into<String>, source: PasswordSource) -> Self {
        self.credentials = Some((user.into(), Password::Later(source)));
        self
    }
    /// Connects to `addr` instead of looking the server's host up: a relay that has chosen the MX host's
    /// address itself. The host of the server address is still the name the certificate is checked
    /// against (and sent as SNI), and the name errors carry.
    pub fn address(mut self, addr: std::net::SocketAddr) -> Self {
        self.address = Some(addr);
        self
    }
    /// Allows AUTH without TLS, to a server on a loopback address (127.0.0.0/8, ::1) only: a test or
    /// development server on this machine, where nobody else is on the path. Off by default.
    pub fn allow_plaintext_auth(mut self, yes: bool) -> Self {
        self.allow_plaintext_auth = yes;
        self
    }

    /// Connects, reads the greeting and says EHLO (or HELO); with TLS asked for, makes it (and says EHLO
    /// again after STARTTLS); with credentials, authenticates.
    ///
    /// Credentials never leave without TLS unless [`ClientBuilder::allow_plaintext_auth`] was set and the
    /// server is on a loopback address ([`Error::PlaintextAuth`], found before connecting when it can
    /// be), and never go to a server that did not offer AUTH ([`Error::AuthNotOffered`]). A password from
    /// [`ClientBuilder::credentials_with`] is fetched only once both checks have passed.
    pub async fn connect(self) -> Result<Client, Error> {
        let (host, port) = split_server(&self.server)?;
        // Settings that cannot work fail before any byte is sent.
        let tls = match self.tls {
            Tls::None => None,
            Tls::StartTls | Tls::Implicit => {
                let config = self.tls_options.client_config()?;
                Some((tokio_rustls::TlsConnector::from(config), tls::server_name(&host)?))
            }
            Tls::Opportunistic => {
                let config = match &self.tls_options.config {
                    Some(c) => c.clone(),
                    None => tls::opportunistic_config()?,
                };
                Some((tokio_rustls::TlsConnector::from(config), tls::server_name(&host)?))
            }
        };
        if self.credentials.is_some() && self.tls == Tls::None && !self.allow_plaintext_auth {
            return Err(Error::PlaintextAuth { server: self.server.clone(), reason: PLAINTEXT_NOT_ALLOWED });
        }
        let tcp = self.open_tcp(&host, port).await?;
        let plaintext_auth = match (self.allow_plaintext_auth, tcp.peer_addr()) {
            (false, _) => Err(PLAINTEXT_NOT_ALLOWED),
            (true, Ok(peer)) if is_loopback(peer.ip()) => Ok(()),
            (true, _) => Err(PLAINTEXT_NOT_LOOPBACK),
        };
        let helo = self.helo_name.clone().unwrap_or_else(default_helo_name);
        let mut session = Session::new(helo);
        if self.tls == Tls::Implicit {
            session = session.implicit_tls();
        }
        let mut client = Client {
            server: self.server.clone(),
            stream: Stream::Plain(tcp),
            session,
            command_timeout: self.command_timeout,
            transcript: self.transcript.clone(),
            deadline: None,
            buf: vec![0; 16 * 1024],
            greeting: None,
            plaintext_auth,
        };
        if let (Tls::Implicit, Some((connector, name))) = (self.tls, &tls) {
            client.handshake(connector, name.clone()).await?;
        }
        client.arm();
        client.wait_ready().await?;
        match (self.tls, &tls) {
            (Tls::StartTls, Some((connector, name))) => client.starttls(connector, name.clone()).await?,
            (Tls::Opportunistic, Some((connector, name))) if client.capabilities().starttls => {
                if let Err(e) = client.starttls(connector, name.clone()).await {
                    return Err(Error::OpportunisticTls { server: self.server.clone(), source: Box::new(e) });
                }
            }
            _ => {}
        }
        if let Some((user, password)) = &self.credentials {
            if let Err(e) = client.login(user, password).await {
                client.abandon().await;
                return Err(e);
            }
        }
        Ok(client)
    }

    /// Resolves the server and opens the TCP connection, all within the connect timeout.
    async fn open_tcp(&self, host: &str, port: u16) -> Result<TcpStream, Error> {
        let deadline = Instant::now() + self.connect_timeout;
        let lookup = async {
            match self.address {
                Some(addr) => Ok(vec![addr]),
                None => tokio::net::lookup_host((host, port)).await.map(|a| a.collect()),
            }
        };
        let addrs: Vec<_> = match timeout_at(deadline, lookup).await {
            Err(_) => return Err(self.connect_timed_out()),
            Ok(Err(source)) => return Err(Error::Resolve { server: self.server.clone(), source }),
            Ok(Ok(a)) => a,
        };
        let mut last = None;
        for addr in addrs {
            match timeout_at(deadline, TcpStream::connect(addr)).await {
                Err(_) => return Err(self.connect_timed_out()),
                Ok(Ok(tcp)) => {
                    let _ = tcp.set_nodelay(true);
                    return Ok(tcp);
                }
                Ok(Err(e)) => last = Some(e),
            }
        }
        let source = last.unwrap_or_else(|| std::io::Error::other("no address found"));
        Err(Error::Connect { server: self.server.clone(), source })
    }

    fn connect_timed_out(&self) -> Error {
        Error::Timeout { waiting: format!("a connection to {}", self.server), after: self.connect_timeout }
    }
}

/// One SMTP connection, ready for mail once [`ClientBuilder::connect`] returns it.
pub struct Client {
    server: String,
    stream: Stream,
    session: Session,
    command_timeout: Duration,
    transcript: Option<Transcript>,
    /// When the reply now awaited must be in.
    deadline: Option<Instant>,
    buf: Vec<u8>,
    greeting: Option<Reply>,
    /// `Ok` when plaintext AUTH was allowed and the peer is on a loopback address; else why not.
    plaintext_auth: Result<(), &'static str>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("session", &self.session).finish()
    }
}

impl Client {
    /// A builder for `server` (`host:port`, `[v6]:port`, or a bare host for port 25).
    pub fn builder(server: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            server: server.into(),
            helo_name: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            tls: Tls::None,
            tls_options: TlsOptions::default(),
            credentials: None,
            allow_plaintext_auth: false,
            transcript: None,
            address: None,
        }
    }

    /// Connects with the default settings.
    pub async fn connect(server: impl Into<String>) -> Result<Client, Error> {
        Client::builder(server).connect().await
    }

    /// What the server offered after EHLO.
    pub fn capabilities(&self) -> &Capabilities {
        self.session.capabilities()
    }

    /// True between transactions: the connection can take another [`Client::send`] (after a
    /// [`Client::rset`], as a relay reusing a connection does).
    pub fn is_ready(&self) -> bool {
        self.session.is_ready()
    }

    /// The server's greeting.
    pub fn greeting(&self) -> Option<&Reply> {
        self.greeting.as_ref()
    }

    /// True when the connection is TLS (implicit, or after STARTTLS).
    pub fn is_tls(&self) -> bool {
        self.stream.is_tls()
    }

    /// The mechanism AUTH succeeded with, if the client has authenticated.
    pub fn authenticated(&self) -> Option<Mechanism> {
        self.session.authenticated()
    }

    /// AUTH as `user` (PLAIN, else LOGIN, from what the server offers). A refusal is
    /// `Error::Protocol(Rejected { step: Auth, reply })` with the server's reply (535, 538, 454 ...); the
    /// connection stays usable for QUIT. Nothing is sent, and [`Error::PlaintextAuth`] or
    /// [`Error::AuthNotOffered`] returned, when the connection is not TLS (and plaintext AUTH was not
    /// allowed for a loopback server) or the server did not offer AUTH.
    pub async fn authenticate(&mut self, user: &str, password: &Secret) -> Result<Mechanism, Error> {
        self.check_auth_allowed()?;
        self.session.auth(user, password)?;
        self.arm();
        loop {
            match self.next_event().await? {
                Event::Authenticated(m) => return Ok(m),
                Event::Reply { step: Step::Auth, reply } if reply.code >= 400 => {
                    return Err(ProtoError::Rejected { step: Step::Auth, reply }.into())
                }
                _ => {}
            }
        }
    }

    /// May credentials be sent on this connection, to this server?
    fn check_auth_allowed(&self) -> Result<(), Error> {
        if let (false, Err(reason)) = (self.is_tls(), self.plaintext_auth) {
            return Err(Error::PlaintextAuth { server: self.server.clone(), reason });
        }
        if self.capabilities().auth.is_empty() {
            return Err(Error::AuthNotOffered(self.server.clone()));
        }
        Ok(())
    }

    /// The AUTH of [`ClientBuilder::connect`]: checks first, then fetches the password, then AUTH.
    async fn login(&mut self, user: &str, password: &Password) -> Result<Mechanism, Error> {
        self.check_auth_allowed()?;
        let secret = password.get()?;
        self.authenticate(user, &secret).await
    }

    /// STARTTLS right after EHLO (RFC 3207), the handshake, and EHLO again. A server that does not offer
    /// it is left at once: there is no fallback to plain text.
    async fn starttls(
        &mut self,
        connector: &tokio_rustls::TlsConnector,
        name: rustls_pki_types::ServerName<'static>,
    ) -> Result<(), Error> {
        if !self.capabilities().starttls {
            let server = self.server.clone();
            self.quit_briefly().await;
            return Err(Error::StartTlsNotOffered(server));
        }
        self.session.starttls()?;
        self.arm();
        loop {
            // A refusal of STARTTLS, or bytes behind its 220, come back as errors here.
            if let Event::StartTls = self.next_event().await? {
                break;
            }
        }
        self.handshake(connector, name).await?;
        // RFC 3207 §4.2: forget what the server said in the clear, and ask again.
        self.session.handle_tls_established()?;
        self.arm();
        self.wait_ready().await
    }

    /// Sends one message: MAIL, every RCPT and DATA (in one write under PIPELINING), then the message if
    /// anyone accepted it. `Ok` tells what each recipient got, refusals included; `Err` means the
    /// connection or the protocol failed and nobody can be assumed to have the message.
    pub async fn send(&mut self, envelope: &Envelope, message: Message<'_>) -> Result<Outcome, Error> {
        let Message { mut source, info } = message;
        self.session.begin_mail(envelope, &info)?;
        self.arm();
        loop {
            match self.next_event().await? {
                Event::SendBody => self.stream_body(&mut source).await?,
                Event::Done(outcome) => return Ok(outcome),
                _ => {}
            }
        }
    }

    /// Step by step: `MAIL FROM` with the parameters `info` calls for. Returns the reply, positive or not.
    pub async fn mail(&mut self, from: &ReversePath, info: &MessageInfo) -> Result<Reply, Error> {
        let params = self.session.mail_params(&Envelope::new(from.clone(), vec![]), info)?;
        self.session.mail(from, &params)?;
        self.reply_to(Step::Mail).await
    }

    /// Step by step: `RCPT TO`.
    pub async fn rcpt(&mut self, to: &ForwardPath) -> Result<Reply, Error> {
        self.session.rcpt(to)?;
        self.reply_to(Step::Rcpt).await
    }

    /// Step by step: `DATA`, then on 354 the message and its end. Returns the refusal of DATA or the reply
    /// after the message.
    pub async fn data(&mut self, message: Message<'_>) -> Result<Reply, Error> {
        self.session.data()?;
        self.arm();
        let Message { mut source, .. } = message;
        loop {
            match self.next_event().await? {
                Event::SendBody => self.stream_body(&mut source).await?,
                Event::Reply { step: Step::Data, reply } if reply.code != 354 => return Ok(reply),
                Event::Reply { step: Step::EndOfData, reply } => return Ok(reply),
                _ => {}
            }
        }
    }

    /// Step by step: `RSET`.
    pub async fn rset(&mut self) -> Result<Reply, Error> {
        self.session.rset()?;
        self.reply_to(Step::Rset).await
    }

    /// `NOOP`.
    pub async fn noop(&mut self) -> Result<Reply, Error> {
        self.session.noop()?;
        self.reply_to(Step::Noop).await
    }

    /// `QUIT`, then closes. A server that hangs up instead of answering is not an error here.
    pub async fn quit(mut self) -> Result<(), Error> {
        self.session.quit()?;
        self.arm();
        loop {
            match self.next_event().await {
                Ok(Event::Closed) | Err(Error::Closed(_)) => break,
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        let _ = self.stream.shutdown().await;
        Ok(())
    }

    /// Reads the greeting (kept) and the EHLO/HELO reply.
    async fn wait_ready(&mut self) -> Result<(), Error> {
        loop {
            match self.next_event().await? {
                Event::Ready => return Ok(()),
                Event::Reply { step: Step::Greeting, reply } => self.greeting = Some(reply),
                _ => {}
            }
        }
    }

    /// The TLS handshake over the TCP stream, within the command timeout.
    async fn handshake(
        &mut self,
        connector: &tokio_rustls::TlsConnector,
        name: rustls_pki_types::ServerName<'static>,
    ) -> Result<(), Error> {
        let Some(tcp) = self.stream.take_plain() else {
            return Err(Error::Tls {
                server: self.server.clone(),
                reason: "not a plain stream".into(),
                permanent: true,
            });
        };
        match timeout(self.command_timeout, connector.connect(name, tcp)).await {
            Err(_) => Err(Error::Timeout { waiting: "the TLS handshake".into(), after: self.command_timeout }),
            Ok(Err(e)) => Err(tls::handshake_error(&self.server, e)),
            Ok(Ok(s)) => {
                self.stream = Stream::Tls(Box::new(s));
                if let Some(summary) = self.stream.tls_summary() {
                    self.log(Direction::Client, &format!("(TLS established: {summary})"));
                }
                Ok(())
            }
        }
    }

    /// Gives up on a connection that cannot be used: QUIT if the session still allows it, briefly, then
    /// close. Errors do not matter any more.
    async fn abandon(mut self) {
        self.quit_briefly().await;
    }

    /// QUIT if the session still allows it, waiting at most [`ABANDON_TIMEOUT`], then close.
    async fn quit_briefly(&mut self) {
        if self.session.quit().is_ok() {
            self.command_timeout = self.command_timeout.min(ABANDON_TIMEOUT);
            self.arm();
            loop {
                match self.next_event().await {
                    Ok(Event::Closed) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
        let _ = timeout(ABANDON_TIMEOUT, self.stream.shutdown()).await;
    }

    async fn reply_to(&mut self, want: Step) -> Result<Reply, Error> {
        self.arm();
        loop {
            if let Event::Reply { step, reply } = self.next_event().await? {
                if step == want {
                    return Ok(reply);
                }
            }
        }
    }

    /// Starts the clock for the next reply.
    fn arm(&mut self) {
        self.deadline = Some(Instant::now() + self.command_timeout);
    }

    fn log(&self, dir: Direction, line: &str) {
        if let Some(t) = &self.transcript {
            t(dir, line);
        }
    }

    async fn flush(&mut self) -> Result<(), Error> {
        while let Some(out) = self.session.poll_transmit() {
            match timeout(self.command_timeout, self.stream.write_all(&out)).await {
                Err(_) => {
                    return Err(Error::Timeout {
                        waiting: "the server to take our data".into(),
                        after: self.command_timeout,
                    })
                }
                Ok(r) => r?,
            }
            // A new command left: its reply gets the full timeout.
            self.arm();
        }
        Ok(())
    }

    /// Writes what is due, then returns the next event, reading (within the deadline) when none is ready.
    async fn next_event(&mut self) -> Result<Event, Error> {
        loop {
            self.flush().await?;
            if let Some(ev) = self.session.poll_event() {
                match &ev {
                    Event::Sent(line) => self.log(Direction::Client, &mask(line)),
                    Event::Reply { reply, .. } => {
                        let wire = reply.to_bytes();
                        for line in String::from_utf8_lossy(&wire).lines() {
                            self.log(Direction::Server, line);
                        }
                        self.arm();
                    }
                    _ => {}
                }
                return Ok(ev);
            }
            let waiting = match self.session.awaiting() {
                Some(step) => step.to_string(),
                None => "a reply".to_string(),
            };
            let deadline = self.deadline.unwrap_or_else(|| Instant::now() + self.command_timeout);
            let n = match timeout_at(deadline, self.stream.read(&mut self.buf)).await {
                Err(_) => {
                    return Err(Error::Timeout {
                        waiting: format!("the reply to {waiting}"),
                        after: self.command_timeout,
                    })
                }
                Ok(r) => r?,
            };
            if n == 0 {
                return Err(Error::Closed(format!("the reply to {waiting}")));
            }
            if let Err(e) = self.session.handle_input(&self.buf[..n]) {
                // Put what came before the failure (often the very reply that explains it) in the transcript.
                while let Some(ev) = self.session.poll_event() {
                    match ev {
                        Event::Sent(line) => self.log(Direction::Client, &mask(&line)),
                        Event::Reply { reply, .. } => {
                            for line in String::from_utf8_lossy(&reply.to_bytes()).lines() {
                                self.log(Direction::Server, line);
                            }
                        }
                        _ => {}
                    }
                }
                return Err(e.into());
            }
        }
    }

    async fn stream_body(&mut self, source: &mut Source<'_>) -> Result<(), Error> {
        let mut total = 0usize;
        match source {
            Source::Bytes(b) => {
                for chunk in b.chunks(BODY_CHUNK) {
                    self.session.handle_body(chunk)?;
                    self.flush().await?;
                }
                total = b.len();
            }
            Source::Reader(r) => {
                let mut chunk = vec![0; BODY_CHUNK];
                loop {
                    let n = r.read(&mut chunk).await.map_err(Error::Message)?;
                    if n == 0 {
                        break;
                    }
                    total += n;
                    self.session.handle_body(&chunk[..n])?;
                    self.flush().await?;
                }
            }
        }
        self.log(Direction::Client, &format!("({total} octets of message)"));
        self.session.finish_body()?;
        self.log(Direction::Client, ".");
        self.flush().await
    }
}

/// Hides what follows `AUTH <mechanism>` (the initial response carries the secret, RFC 4954 §4).
fn mask(line: &str) -> String {
    let mut parts = line.splitn(3, ' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(cmd), Some(mech), Some(_)) if cmd.eq_ignore_ascii_case(mailroom_proto::extension::keyword::AUTH) => {
            format!("{cmd} {mech} ********")
        }
        _ => line.to_string(),
    }
}

/// True for 127.0.0.0/8 and ::1, also written as an IPv4-mapped IPv6 address.
fn is_loopback(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_loopback(),
        std::net::IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

/// Splits `host:port`, `[v6]:port`, a bare `host` or a bare IPv6 address.
fn split_server(s: &str) -> Result<(String, u16), Error> {
    let bad = || Error::BadServer(s.to_string());
    if s.is_empty() {
        return Err(bad());
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if after.is_empty() => DEFAULT_PORT,
            None => return Err(bad()),
        };
        return Ok((host.to_string(), port));
    }
    match s.rsplit_once(':') {
        Some((host, _)) if host.contains(':') => Ok((s.to_string(), DEFAULT_PORT)),
        Some((host, port)) if !host.is_empty() => Ok((host.to_string(), port.parse().map_err(|_| bad())?)),
        Some(_) => Err(bad()),
        None => Ok((s.to_string(), DEFAULT_PORT)),
    }
}

/// This machine's name for EHLO (RFC 5321 §4.1.1.1 wants the FQDN; the kernel's host name is the best
/// guess without a resolver), or `localhost`.
pub fn default_helo_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'))
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_forms() {
        assert_eq!(split_server("127.0.0.1:2525").unwrap(), ("127.0.0.1".into(), 2525));
        assert_eq!(split_server("mx.example").unwrap(), ("mx.example".into(), 25));
        assert_eq!(split_server("[::1]:587").unwrap(), ("::1".into(), 587));
        assert_eq!(split_server("::1").unwrap(), ("::1".into(), 25));
        assert!(split_server("host:port").is_err());
        assert!(split_server(":25").is_err());
        assert!(split_server("").is_err());
    }

    #[test]
    fn loopback_addresses() {
        for ip in ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"] {
            assert!(is_loopback(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["10.0.0.1", "192.0.2.1", "0.0.0.0", "::", "2001:db8::1", "::ffff:192.0.2.1"] {
            assert!(!is_loopback(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn auth_is_masked() {
        assert_eq!(mask("AUTH PLAIN AGFAYg=="), "AUTH PLAIN ********");
        assert_eq!(mask("AUTH LOGIN"), "AUTH LOGIN");
        assert_eq!(mask("MAIL FROM:<a@b>"), "MAIL FROM:<a@b>");
    }
}
